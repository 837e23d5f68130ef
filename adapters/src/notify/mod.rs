//! Telling people how their tasks are going. The [`Notifier`] subscribes to the hub, turns
//! the five events people wait for into messages in the seed's wording, reads each owner's
//! [`prefs::Preferences`] and delivers on the channels they chose: the chat webhook
//! ([`chat`]), web push ([`push`]), whose approval messages carry signed Approve / Reject
//! links ([`links`]) the service worker (`/sw.js`, served by the `web` module) posts back, and
//! email ([`email`]); browser notifications are shown by the progress page itself from its
//! WebSocket, following the same preferences. The chat channel's messages also go into the
//! user's chat transcript, beside their conversation with the bot. Every delivery attempt is
//! logged in the `notifications` table (`GET /api/notifications`).
//!
//! Delivery never blocks the runtime: the hub only hands the notifier an event; each user
//! has a worker that reads their preferences, and each user's deliveries on each channel run
//! on their own worker with a timeout per attempt ([`deliver`]), so a dead endpoint slows
//! only its own user's messages on that channel. A burst beyond `notifications.burst`
//! messages in `notifications.digest_window_s` is held and sent as one digest.
//!
//! Every queue is bounded. A user's events wait for their worker in a queue of
//! [`USER_QUEUE`]; that worker only reads the database, so a full queue means the database
//! is stalled, and an event that finds it full is dropped and logged. Each channel's queue
//! holds 64 messages; past that the newest is kept and the rest are counted into the next
//! digest, which lists the newest 20 messages.
//!
//! Email goes, by default, only to long tasks: those whose estimated duration at start (the
//! ETA the task actor publishes right after `task_started`) was more than
//! `notifications.email.long_task_seconds`. That estimate is kept in the database, so a
//! completion hours later, after a restart, is judged by it; a task with none recorded
//! (started before email was configured, or never estimated) counts as long once it has run
//! longer than the threshold. A `task_started` mail waits for the estimate.

mod chat;
mod deliver;
pub mod email;
pub mod endpoint;
pub mod links;
pub mod prefs;
pub mod push;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use actix::prelude::*;
use config::NotificationSettings;
use db::Database;
use lettre::message::Mailbox;
use runtime::{Clock, EventKind, Runtime, Subscribe, TaskEvent, Topic};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, OnceCell};

use self::deliver::{Inbox, Outbox};
use self::email::{EmailError, Mailer};
use self::links::{LinkKey, SecretError};
use self::prefs::{NotifyEvent, Preferences};
use self::push::{PushError, Vapid};
use crate::mount::MountPath;
use crate::transcript;

/// How long a worker waits for work before it ends (the next event starts a new one).
const IDLE: Duration = Duration::from_secs(300);

/// A message for one user about one task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// The task.
    pub task_id: String,
    /// The event's name, or `digest` for several.
    pub event: &'static str,
    /// The text, e.g. "✅ Your CRM is ready!".
    pub text: String,
    /// For `approval_needed`, the step that waits: push messages offer to decide it.
    pub approval_step: Option<u32>,
}

/// The text of `event` in the seed's wording; `title` is the task's.
pub fn message(event: &EventKind, title: &str) -> Option<String> {
    Some(match event {
        EventKind::TaskStarted => format!("Your {title} task has started"),
        EventKind::StepCompleted { step, name, .. } => format!("Step {step} complete: {name}"),
        EventKind::ApprovalNeeded { step, .. } => format!("⚠️ Approval required for Step {step}"),
        EventKind::ApprovalReminder { step, due_at, .. } => {
            let lapses = crate::api::wire::rfc3339(*due_at);
            format!("⏰ Reminder: approval required for Step {step} before {} UTC", &lapses[11..16])
        }
        EventKind::TaskCompleted => format!("✅ Your {title} is ready!"),
        EventKind::TaskFailed { step, .. } => format!("❌ Task failed at Step {step}"),
        _ => return None,
    })
}

/// The notification event an event of the hub is, if any.
pub fn notify_event(event: &EventKind) -> Option<NotifyEvent> {
    Some(match event {
        EventKind::TaskStarted => NotifyEvent::TaskStarted,
        EventKind::StepCompleted { .. } => NotifyEvent::StepComplete,
        // A reminder goes where the approval request went.
        EventKind::ApprovalNeeded { .. } | EventKind::ApprovalReminder { .. } => NotifyEvent::ApprovalNeeded,
        EventKind::TaskCompleted => NotifyEvent::TaskComplete,
        EventKind::TaskFailed { .. } => NotifyEvent::TaskFailed,
        _ => return None,
    })
}

/// What the notifier and the API's notification routes share: the `[notifications]`
/// settings, the base of links in messages, and the server's VAPID key pair and
/// approval-link key, each loaded (or made) once.
#[derive(Clone)]
pub struct NotifyConfig {
    /// The `[notifications]` settings.
    pub settings: NotificationSettings,
    /// Where people reach Stepwise's pages, the mount path included:
    /// `notifications.public_url`, or else the address the server listens on and the mount
    /// path; no trailing slash.
    pub public_url: String,
    /// Where Stepwise lives on its server: the paths push messages carry start with it.
    pub mount: MountPath,
    vapid: Arc<OnceCell<Vapid>>,
    link_key: Arc<OnceCell<LinkKey>>,
}

impl NotifyConfig {
    /// The configuration with these settings for Stepwise at `mount` on a server listening
    /// on `listening`; the keys are read on first use.
    pub fn new(settings: NotificationSettings, listening: SocketAddr, mount: MountPath) -> NotifyConfig {
        let public_url = match &settings.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("{}{mount}", default_public_url(listening)),
        };
        NotifyConfig {
            settings,
            public_url,
            mount,
            vapid: Arc::new(OnceCell::new()),
            link_key: Arc::new(OnceCell::new()),
        }
    }

    /// The VAPID key pair, from the database, made and stored there if it has none.
    pub async fn vapid(&self, db: &Arc<Database>, now: i64) -> Result<Vapid, PushError> {
        self.vapid.get_or_try_init(|| Vapid::load_or_create(db, now)).await.cloned()
    }

    /// The key approval links are signed with, from the database, made and stored there if
    /// it has none.
    pub async fn link_key(&self, db: &Arc<Database>, now: i64) -> Result<LinkKey, SecretError> {
        self.link_key.get_or_try_init(|| LinkKey::load_or_create(db, now)).await.cloned()
    }
}

/// `http://` and the listening address; an unspecified address (all interfaces) becomes
/// `localhost`, which at least works on the server's own machine.
fn default_public_url(listening: SocketAddr) -> String {
    match listening {
        address if address.ip().is_unspecified() => format!("http://localhost:{}", address.port()),
        address => format!("http://{address}"),
    }
}

/// What the notifier's workers share. The database is held weakly: the notifier must not
/// keep it (and a SQLite file's lock) open once the runtime has let it go.
pub(crate) struct Shared {
    db: Weak<Database>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) config: NotifyConfig,
    pub(crate) client: endpoint::Client,
    /// The SMTP transport, when email is on.
    pub(crate) mailer: Option<Mailer>,
    /// Delivery attempts by channel and outcome, in the runtime's metrics.
    pub(crate) attempts: prometheus::IntCounterVec,
}

impl Shared {
    /// The `[notifications]` settings.
    pub(crate) fn settings(&self) -> &NotificationSettings {
        &self.config.settings
    }

    /// The database, unless the runtime has closed it.
    pub(crate) fn db(&self) -> Option<Arc<Database>> {
        self.db.upgrade()
    }
}

/// Events one user's worker may have waiting. The worker only reads the user's preferences
/// and queues messages for the channels, so a full queue means the database is stalled; an
/// event that finds it full is dropped (and logged) rather than held without limit.
pub const USER_QUEUE: usize = 1024;

/// The hub subscriber that notifies task owners. It holds no runtime handle, and the
/// database only weakly, so it ends with the hub.
pub struct Notifier {
    shared: Arc<Shared>,
    users: HashMap<Arc<str>, mpsc::Sender<TaskEvent>>,
    /// Tasks that started and whose first ETA (their estimate at start) has not come yet;
    /// kept only while email is on, the one channel that needs it.
    starting: HashSet<Arc<str>>,
}

impl Notifier {
    /// Starts the notifier on the current arbiter, subscribes it to every event, and reads
    /// (on first start, makes) the VAPID key pair in the background. Fails, starting
    /// nothing, if email is configured and its transport cannot be made: an operator who set
    /// up email is told at start, not by mails that silently never go.
    pub fn start(runtime: &Runtime, config: NotifyConfig) -> Result<Addr<Notifier>, EmailError> {
        let settings = &config.settings;
        let client = endpoint::client(settings.allow_private_endpoints, Duration::from_secs(settings.timeout_s));
        let mailer = Mailer::new(settings)?;
        let (db, clock) = (Arc::clone(runtime.db()), Arc::clone(runtime.clock()));
        let attempts = runtime.metrics().register(prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "notification_attempts_total",
                "Notification delivery attempts, by channel and outcome (as GET /api/notifications lists them).",
            ),
            &["channel", "outcome"],
        ));
        let shared = Arc::new(Shared {
            db: Arc::downgrade(&db),
            clock: Arc::clone(&clock),
            config: config.clone(),
            client,
            mailer,
            attempts,
        });
        let notifier = Notifier { shared, users: HashMap::new(), starting: HashSet::new() }.start();
        // Sent once, at start.
        runtime.hub().do_send(Subscribe { topic: Topic::All, subscriber: notifier.clone().recipient() });
        actix::spawn(async move {
            if let Err(error) = config.vapid(&db, clock.now_ms()).await {
                tracing::error!(%error, "cannot read or make the VAPID key pair; web push will fail");
            }
        });
        Ok(notifier)
    }

    /// Whether the notifier acts on `event`; keeps track of the tasks whose estimate at
    /// start is awaited.
    fn wants(&mut self, event: &TaskEvent) -> bool {
        match &event.kind {
            // The task actor estimates right after committing the start, so the first ETA
            // after `task_started` is the estimate at start.
            EventKind::EtaUpdated(_) => self.starting.remove(&event.task_id),
            EventKind::TaskStarted if self.shared.mailer.is_some() => {
                self.starting.insert(Arc::clone(&event.task_id));
                true
            }
            // The task ended and no estimate came (the estimator had none): stop waiting.
            EventKind::TaskCompleted | EventKind::TaskFailed { .. } | EventKind::TaskCancelled => {
                self.starting.remove(&event.task_id);
                notify_event(&event.kind).is_some()
            }
            kind => notify_event(kind).is_some(),
        }
    }
}

impl Actor for Notifier {
    type Context = Context<Self>;
}

impl Handler<TaskEvent> for Notifier {
    type Result = ();

    fn handle(&mut self, event: TaskEvent, _: &mut Context<Self>) {
        if !self.wants(&event) {
            return;
        }
        let owner = Arc::clone(&event.owner);
        let event = match self.users.get(&owner) {
            None => event,
            Some(worker) => match worker.try_send(event) {
                Ok(()) => return,
                Err(TrySendError::Full(event)) => {
                    tracing::warn!(user = %owner, task_id = %event.task_id, "the user's notification queue is full; dropping an event");
                    return;
                }
                // The worker went idle and ended: start another.
                Err(TrySendError::Closed(event)) => event,
            },
        };
        self.start_worker(owner, event);
    }
}

impl Notifier {
    fn start_worker(&mut self, owner: Arc<str>, first: TaskEvent) {
        self.users.retain(|_, worker| !worker.is_closed());
        let (sender, receiver) = mpsc::channel(USER_QUEUE);
        // Cannot fail: the queue is new and its receiver alive.
        let _ = sender.try_send(first);
        self.users.insert(Arc::clone(&owner), sender);
        actix::spawn(user_worker(Arc::clone(&self.shared), owner, receiver));
    }
}

/// The next item of a worker's queue; `None` once it has been idle for [`IDLE`] (then it
/// takes no more, and what was already queued is still handed out) or the sender is gone.
pub(crate) async fn next_or_idle<T>(receiver: &mut mpsc::Receiver<T>) -> Option<T> {
    match tokio::time::timeout(IDLE, receiver.recv()).await {
        Ok(item) => item,
        Err(_) => {
            receiver.close();
            receiver.try_recv().ok()
        }
    }
}

/// Where one event's message goes, by the user's preferences.
struct Route {
    /// The chat channel wants it: it joins the transcript, and goes to the webhook if any.
    chat: bool,
    webhook: Option<String>,
    push: bool,
    mailbox: Option<Mailbox>,
}

/// One user's queues to their channel workers, each started when first needed.
#[derive(Default)]
struct Channels {
    chat: Option<Outbox<(Notice, hyper::Uri)>>,
    push: Option<Outbox<Notice>>,
    email: Option<Outbox<(Notice, Mailbox)>>,
}

/// One user's events in order: reads their preferences and hands each message to the
/// channels that want it.
async fn user_worker(shared: Arc<Shared>, owner: Arc<str>, mut events: mpsc::Receiver<TaskEvent>) {
    let mut channels = Channels::default();
    while let Some(event) = next_or_idle(&mut events).await {
        let Some(db) = shared.db() else { return };
        // The estimate at start stands for `task_started` on the email channel, which needs
        // it to judge the task; the other channels had their message with the event itself.
        let (wanted, start_estimate) = match &event.kind {
            EventKind::EtaUpdated(eta) => {
                let seconds = eta.seconds.max(0.0).round() as i64;
                remember_estimate(&db, &event, seconds).await;
                (NotifyEvent::TaskStarted, Some(seconds))
            }
            kind => match notify_event(kind) {
                Some(wanted) => (wanted, None),
                None => continue,
            },
        };
        let Some(route) = route(&shared, &db, &owner, &event, wanted, start_estimate).await else { continue };
        let Some(text) = text_of(&db, &owner, &event.task_id, wanted, &event.kind).await else { continue };
        let approval_step = match event.kind {
            EventKind::ApprovalNeeded { step, .. } | EventKind::ApprovalReminder { step, .. } => Some(step),
            _ => None,
        };
        let notice = Notice { task_id: event.task_id.to_string(), event: wanted.name(), text, approval_step };
        channels.dispatch(&shared, &db, &owner, notice, route).await;
    }
}

/// Which channels want the event, by the user's preferences; `None` if none does.
async fn route(
    shared: &Shared,
    db: &Arc<Database>,
    owner: &str,
    event: &TaskEvent,
    wanted: NotifyEvent,
    start_estimate: Option<i64>,
) -> Option<Route> {
    let preferences = match prefs::load(db, owner).await {
        Ok(preferences) => preferences,
        Err(error) => {
            tracing::warn!(%error, user = %owner, task_id = %event.task_id, "cannot read notification preferences; not notifying");
            return None;
        }
    };
    let on_event = start_estimate.is_none();
    let chat = on_event && preferences.channels.chat.contains(&wanted);
    let webhook = preferences.chat_webhook_url.clone().filter(|_| chat);
    let push = on_event && preferences.channels.push.contains(&wanted);
    let mut mailbox = mailbox_for(shared, &preferences, wanted, start_estimate);
    if mailbox.is_some() && preferences.email_long_tasks_only && !is_long(shared, db, event, start_estimate).await {
        mailbox = None;
    }
    (chat || push || mailbox.is_some()).then_some(Route { chat, webhook, push, mailbox })
}

impl Channels {
    /// Hands `notice` to each channel of `route`; a chat notice also joins the transcript.
    async fn dispatch(
        &mut self,
        shared: &Arc<Shared>,
        db: &Arc<Database>,
        owner: &Arc<str>,
        notice: Notice,
        route: Route,
    ) {
        if route.chat {
            into_transcript(shared, db, owner, &notice).await;
        }
        if let Some(mailbox) = route.mailbox {
            let item = (notice.clone(), mailbox);
            hand_over(&mut self.email, item, |queue| email::worker(Arc::clone(shared), Arc::clone(owner), queue));
        }
        if let Some(webhook) = route.webhook {
            match endpoint::check_url(&webhook, shared.settings().allow_private_endpoints) {
                Ok(uri) => {
                    let item = (notice.clone(), uri);
                    hand_over(&mut self.chat, item, |queue| chat::worker(Arc::clone(shared), Arc::clone(owner), queue));
                }
                Err(refused) => {
                    // Saved under laxer settings than the server now has.
                    let shown =
                        webhook.parse().map_or_else(|_| "an invalid URL".to_owned(), |uri| endpoint::origin(&uri));
                    let target = deliver::Target { owner, channel: "chat", shown: &shown };
                    deliver::record(shared, &target, &notice, 1, "refused", Some(refused.0)).await;
                }
            }
        }
        if route.push {
            match shared.config.vapid(db, shared.clock.now_ms()).await {
                Ok(vapid) => hand_over(&mut self.push, notice, |queue| {
                    push::worker(Arc::clone(shared), vapid, Arc::clone(owner), queue)
                }),
                Err(error) => tracing::warn!(%error, user = %owner, "no VAPID key pair; not pushing"),
            }
        }
    }
}

/// Adds `notice` to the user's chat transcript, where the bot's chat box shows it beside the
/// conversation. A database write, not a call out: it needs no worker of its own, no digest,
/// and no entry in the delivery log (the transcript is its own record).
async fn into_transcript(shared: &Shared, db: &Arc<Database>, owner: &str, notice: &Notice) {
    let (sender, now) = (transcript::Sender::Notice, shared.clock.now_ms());
    if let Err(error) = transcript::append(db, owner, sender, &notice.text, Some(&notice.task_id), now).await {
        tracing::warn!(%error, user = owner, task_id = %notice.task_id, "cannot add a notification to the chat transcript");
    }
}

/// Queues `item` for a channel's worker, starting one if there is none or the last went
/// idle.
fn hand_over<T, F: std::future::Future<Output = ()> + 'static>(
    worker: &mut Option<Outbox<T>>,
    item: T,
    start: impl FnOnce(Inbox<T>) -> F,
) {
    let item = match worker.as_ref() {
        None => item,
        Some(outbox) => match outbox.offer(item) {
            Ok(()) => return,
            Err(returned) => returned,
        },
    };
    let (outbox, inbox) = deliver::queue();
    // Cannot fail: the queue is new and its worker not yet started.
    let _ = outbox.offer(item);
    *worker = Some(outbox);
    actix::spawn(start(inbox));
}

/// Where `wanted` is mailed, if email is on, the user gave an address and wants mail for
/// it. `task_started` is mailed only once its estimate is known.
fn mailbox_for(
    shared: &Shared,
    preferences: &Preferences,
    wanted: NotifyEvent,
    start_estimate: Option<i64>,
) -> Option<Mailbox> {
    shared.mailer.as_ref()?;
    let address = preferences.email.as_deref()?;
    let ready = (wanted == NotifyEvent::TaskStarted) == start_estimate.is_some();
    if !ready || !preferences.channels.email.contains(&wanted) {
        return None;
    }
    match address.parse::<lettre::Address>() {
        Ok(address) => Some(Mailbox::new(None, address)),
        Err(error) => {
            // Saved before addresses were checked as they are now.
            tracing::warn!(%error, address, "the stored email address does not parse; not mailing");
            None
        }
    }
}

/// Keeps the task's estimate at start for its later events (the first one stays).
async fn remember_estimate(db: &Arc<Database>, event: &TaskEvent, seconds: i64) {
    let (db, id, at) = (Arc::clone(db), event.task_id.to_string(), event.at);
    let stored = tokio::task::spawn_blocking(move || {
        let mut conn = db.conn()?;
        db::record_start_estimate(&mut conn, &id, seconds, at)
    })
    .await;
    if let Ok(Err(error)) = stored {
        tracing::warn!(%error, task_id = %event.task_id, "cannot keep the task's estimate at start");
    }
}

/// Whether the event's task is long: its estimate at start (`known`, else as kept) is over
/// `notifications.email.long_task_seconds`; without one, whether it has run longer than that
/// by the event.
async fn is_long(shared: &Shared, db: &Arc<Database>, event: &TaskEvent, known: Option<i64>) -> bool {
    let threshold = i64::try_from(shared.settings().email.long_task_seconds).unwrap_or(i64::MAX);
    if let Some(seconds) = known {
        return seconds > threshold;
    }
    /// What is known of a task's length.
    enum Length {
        Estimated(i64),
        StartedAt(i64),
        Unknown,
    }
    let (db, id) = (Arc::clone(db), event.task_id.to_string());
    let looked_up = tokio::task::spawn_blocking(move || {
        let mut conn = db.conn()?;
        if let Some(seconds) = db::start_estimate(&mut conn, &id)? {
            return Ok(Length::Estimated(seconds));
        }
        let started_at = db::load_task(&mut conn, &id)?.and_then(|task| task.task.started_at);
        Ok::<_, db::DbError>(started_at.map_or(Length::Unknown, Length::StartedAt))
    })
    .await;
    match looked_up {
        Ok(Ok(Length::Estimated(seconds))) => seconds > threshold,
        Ok(Ok(Length::StartedAt(started_at))) => (event.at - started_at) / 1000 > threshold,
        Ok(Ok(Length::Unknown)) | Err(_) => false,
        Ok(Err(error)) => {
            tracing::warn!(%error, task_id = %event.task_id, "cannot tell whether the task is long; not mailing");
            false
        }
    }
}

/// The message of `wanted` (of an event of `kind`), with the task's title read from the
/// database when it needs one.
async fn text_of(
    db: &Arc<Database>,
    owner: &str,
    task_id: &str,
    wanted: NotifyEvent,
    kind: &EventKind,
) -> Option<String> {
    let needs_title = matches!(wanted, NotifyEvent::TaskStarted | NotifyEvent::TaskComplete);
    let title = if needs_title {
        let (db, id) = (Arc::clone(db), task_id.to_owned());
        let loaded = tokio::task::spawn_blocking(move || {
            let mut conn = db.conn()?;
            db::load_task(&mut conn, &id)
        })
        .await;
        match loaded {
            Ok(Ok(Some(task))) if task.task.owner == owner => task.task.title,
            Ok(Ok(_)) => return None,
            Ok(Err(error)) => {
                tracing::warn!(%error, task_id = task_id, "cannot read the task to notify about it");
                return None;
            }
            Err(_) => return None,
        }
    } else {
        String::new()
    };
    match kind {
        // The estimate that stands for the start.
        EventKind::EtaUpdated(_) => message(&EventKind::TaskStarted, &title),
        kind => message(kind, &title),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_default_to_the_listening_address() {
        assert_eq!(default_public_url("127.0.0.1:8080".parse().unwrap()), "http://127.0.0.1:8080");
        assert_eq!(default_public_url("0.0.0.0:80".parse().unwrap()), "http://localhost:80");
        assert_eq!(default_public_url("[::]:8080".parse().unwrap()), "http://localhost:8080");
        assert_eq!(default_public_url("[::1]:8080".parse().unwrap()), "http://[::1]:8080");
        let settings = NotificationSettings {
            public_url: Some("https://x.example/sw/".to_owned()),
            ..NotificationSettings::default()
        };
        let mount = MountPath::new("/steps").unwrap();
        assert_eq!(
            NotifyConfig::new(settings.clone(), "127.0.0.1:1".parse().unwrap(), mount.clone()).public_url,
            "https://x.example/sw"
        );
        let unset = NotificationSettings::default();
        assert_eq!(
            NotifyConfig::new(unset.clone(), "127.0.0.1:1".parse().unwrap(), mount).public_url,
            "http://127.0.0.1:1/steps"
        );
        assert_eq!(
            NotifyConfig::new(unset, "127.0.0.1:1".parse().unwrap(), MountPath::root()).public_url,
            "http://127.0.0.1:1"
        );
    }

    #[test]
    fn messages_use_the_seeds_wording() {
        let name: Arc<str> = "Database created".into();
        let cases = [
            (EventKind::TaskStarted, "Your CRM task has started"),
            (
                EventKind::StepCompleted { step: 1, name: Arc::clone(&name), duration_ms: 5 },
                "Step 1 complete: Database created",
            ),
            (
                EventKind::ApprovalNeeded { step: 3, name: Arc::clone(&name), due_at: None },
                "⚠️ Approval required for Step 3",
            ),
            (
                // 2025-11-26T09:30:00Z
                EventKind::ApprovalReminder { step: 3, name, due_at: 1_764_149_400_000 },
                "⏰ Reminder: approval required for Step 3 before 09:30 UTC",
            ),
            (EventKind::TaskCompleted, "✅ Your CRM is ready!"),
            (EventKind::TaskFailed { step: 2, error: "boom".into() }, "❌ Task failed at Step 2"),
        ];
        for (event, text) in cases {
            assert_eq!(message(&event, "CRM").as_deref(), Some(text));
            assert!(notify_event(&event).is_some());
        }
        assert_eq!(message(&EventKind::TaskPaused, "CRM"), None);
        assert_eq!(notify_event(&EventKind::TaskPaused), None);
    }
}
