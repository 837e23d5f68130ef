//! Telling people how their tasks are going. The [`Notifier`] subscribes to the hub, turns
//! the five events people wait for into messages in the seed's wording, reads each owner's
//! [`prefs::Preferences`] and delivers on the channels they chose: the chat webhook
//! ([`chat`]) and web push ([`push`]), whose approval messages carry signed Approve / Reject
//! links ([`links`]) the service worker (`/sw.js`, served by [`crate::web`]) posts back;
//! browser notifications are shown by the progress page
//! itself from its WebSocket, following the same preferences. Every delivery attempt is
//! logged in the `notifications` table (`GET /api/notifications`, in [`api`]).
//!
//! Delivery never blocks the runtime: the hub only hands the notifier an event; each user
//! has a worker that reads their preferences, and each user's deliveries on each channel run
//! on their own worker with a timeout per attempt ([`deliver`]), so a dead endpoint slows
//! only its own user's messages on that channel. A burst beyond `notifications.burst`
//! messages in `notifications.digest_window_s` is held and sent as one digest.

pub mod api;
mod chat;
mod deliver;
pub mod endpoint;
pub mod links;
pub mod prefs;
pub mod push;

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use actix::prelude::*;
use config::NotificationSettings;
use db::Database;
use runtime::{Clock, EventKind, Runtime, Subscribe, TaskEvent, Topic};
use tokio::sync::{mpsc, OnceCell};

use self::links::{LinkKey, SecretError};
use self::prefs::NotifyEvent;
use self::push::{PushError, Vapid};

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
        EventKind::ApprovalNeeded { .. } => NotifyEvent::ApprovalNeeded,
        EventKind::TaskCompleted => NotifyEvent::TaskComplete,
        EventKind::TaskFailed { .. } => NotifyEvent::TaskFailed,
        _ => return None,
    })
}

/// What the notifier and the API's notification routes share: the `[notifications]`
/// settings, the server's VAPID key pair and its approval-link key, each loaded (or made)
/// once.
#[derive(Clone)]
pub struct NotifyConfig {
    /// The `[notifications]` settings.
    pub settings: NotificationSettings,
    vapid: Arc<OnceCell<Vapid>>,
    link_key: Arc<OnceCell<LinkKey>>,
}

impl NotifyConfig {
    /// The configuration with these settings; the keys are read on first use.
    pub fn new(settings: NotificationSettings) -> NotifyConfig {
        NotifyConfig { settings, vapid: Arc::new(OnceCell::new()), link_key: Arc::new(OnceCell::new()) }
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

/// What the notifier's workers share. The database is held weakly: the notifier must not
/// keep it (and a SQLite file's lock) open once the runtime has let it go.
pub(crate) struct Shared {
    db: Weak<Database>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) config: NotifyConfig,
    pub(crate) client: endpoint::Client,
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

/// The hub subscriber that notifies task owners. It holds no runtime handle, and the
/// database only weakly, so it ends with the hub.
pub struct Notifier {
    shared: Arc<Shared>,
    users: HashMap<Arc<str>, mpsc::UnboundedSender<TaskEvent>>,
}

impl Notifier {
    /// Starts the notifier on the current arbiter, subscribes it to every event, and reads
    /// (on first start, makes) the VAPID key pair in the background.
    pub fn start(runtime: &Runtime, config: NotifyConfig) -> Addr<Notifier> {
        let settings = &config.settings;
        let client = endpoint::client(settings.allow_private_endpoints, Duration::from_secs(settings.timeout_s));
        let (db, clock) = (Arc::clone(runtime.db()), Arc::clone(runtime.clock()));
        let shared =
            Arc::new(Shared { db: Arc::downgrade(&db), clock: Arc::clone(&clock), config: config.clone(), client });
        let notifier = Notifier { shared, users: HashMap::new() }.start();
        runtime.hub().do_send(Subscribe { topic: Topic::All, subscriber: notifier.clone().recipient() });
        actix::spawn(async move {
            if let Err(error) = config.vapid(&db, clock.now_ms()).await {
                tracing::error!(%error, "cannot read or make the VAPID key pair; web push will fail");
            }
        });
        notifier
    }
}

impl Actor for Notifier {
    type Context = Context<Self>;
}

impl Handler<TaskEvent> for Notifier {
    type Result = ();

    fn handle(&mut self, event: TaskEvent, _: &mut Context<Self>) {
        if notify_event(&event.kind).is_none() {
            return;
        }
        let owner = Arc::clone(&event.owner);
        let event = match self.users.get(&owner) {
            Some(worker) => match worker.send(event) {
                Ok(()) => return,
                // The worker went idle and ended: start another.
                Err(returned) => returned.0,
            },
            None => event,
        };
        self.users.retain(|_, worker| !worker.is_closed());
        let (sender, receiver) = mpsc::unbounded_channel();
        // Cannot fail: the receiver is alive.
        let _ = sender.send(event);
        self.users.insert(Arc::clone(&owner), sender);
        actix::spawn(user_worker(Arc::clone(&self.shared), owner, receiver));
    }
}

/// The next item of a worker's queue; `None` once it has been idle for [`IDLE`] (then it
/// takes no more, and what was already queued is still handed out) or the sender is gone.
pub(crate) async fn next_or_idle<T>(receiver: &mut mpsc::UnboundedReceiver<T>) -> Option<T> {
    match tokio::time::timeout(IDLE, receiver.recv()).await {
        Ok(item) => item,
        Err(_) => {
            receiver.close();
            receiver.try_recv().ok()
        }
    }
}

/// One user's events in order: reads their preferences and hands each message to the
/// channels that want it.
async fn user_worker(shared: Arc<Shared>, owner: Arc<str>, mut events: mpsc::UnboundedReceiver<TaskEvent>) {
    let mut chat: Option<mpsc::UnboundedSender<(Notice, hyper::Uri)>> = None;
    let mut push: Option<mpsc::UnboundedSender<Notice>> = None;
    while let Some(event) = next_or_idle(&mut events).await {
        let Some(wanted) = notify_event(&event.kind) else { continue };
        let Some(db) = shared.db() else { return };
        let preferences = match prefs::load(&db, &owner).await {
            Ok(preferences) => preferences,
            Err(error) => {
                tracing::warn!(%error, user = %owner, task = %event.task_id, "cannot read notification preferences; not notifying");
                continue;
            }
        };
        let webhook = preferences.chat_webhook_url.as_deref().filter(|_| preferences.channels.chat.contains(&wanted));
        let wants_push = preferences.channels.push.contains(&wanted);
        if webhook.is_none() && !wants_push {
            continue;
        }
        let Some(text) = text_of(&db, &event).await else { continue };
        let approval_step = match event.kind {
            EventKind::ApprovalNeeded { step, .. } => Some(step),
            _ => None,
        };
        let notice = Notice { task_id: event.task_id.to_string(), event: wanted.name(), text, approval_step };
        if let Some(webhook) = webhook {
            match endpoint::check_url(webhook, shared.settings().allow_private_endpoints) {
                Ok(uri) => {
                    let item = (notice.clone(), uri);
                    hand_over(&mut chat, item, |queue| chat::worker(Arc::clone(&shared), Arc::clone(&owner), queue));
                }
                Err(refused) => {
                    // Saved under laxer settings than the server now has.
                    let shown =
                        webhook.parse().map_or_else(|_| "an invalid URL".to_owned(), |uri| endpoint::origin(&uri));
                    let target = deliver::Target { owner: &owner, channel: "chat", shown: &shown };
                    deliver::record(&shared, &target, &notice, 1, "refused", Some(refused.0)).await;
                }
            }
        }
        if wants_push {
            match shared.config.vapid(&db, shared.clock.now_ms()).await {
                Ok(vapid) => hand_over(&mut push, notice, |queue| {
                    push::worker(Arc::clone(&shared), vapid, Arc::clone(&owner), queue)
                }),
                Err(error) => tracing::warn!(%error, user = %owner, "no VAPID key pair; not pushing"),
            }
        }
    }
}

/// Queues `item` for a channel's worker, starting one if there is none or the last went
/// idle.
fn hand_over<T, F: std::future::Future<Output = ()> + 'static>(
    worker: &mut Option<mpsc::UnboundedSender<T>>,
    item: T,
    start: impl FnOnce(mpsc::UnboundedReceiver<T>) -> F,
) {
    let item = match worker.as_ref() {
        Some(sender) => match sender.send(item) {
            Ok(()) => return,
            Err(returned) => returned.0,
        },
        None => item,
    };
    let (sender, receiver) = mpsc::unbounded_channel();
    // Cannot fail: the receiver is alive.
    let _ = sender.send(item);
    *worker = Some(sender);
    actix::spawn(start(receiver));
}

/// The event's message, with the task's title read from the database when it needs one.
async fn text_of(db: &Arc<Database>, event: &TaskEvent) -> Option<String> {
    let needs_title = matches!(event.kind, EventKind::TaskStarted | EventKind::TaskCompleted);
    let title = if needs_title {
        let (db, id) = (Arc::clone(db), event.task_id.to_string());
        let loaded = tokio::task::spawn_blocking(move || {
            let mut conn = db.conn()?;
            db::load_task(&mut conn, &id)
        })
        .await;
        match loaded {
            Ok(Ok(Some(task))) => task.task.title,
            Ok(Ok(None)) => return None,
            Ok(Err(error)) => {
                tracing::warn!(%error, task = %event.task_id, "cannot read the task to notify about it");
                return None;
            }
            Err(_) => return None,
        }
    } else {
        String::new()
    };
    message(&event.kind, &title)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_use_the_seeds_wording() {
        let name: Arc<str> = "Database created".into();
        let cases = [
            (EventKind::TaskStarted, "Your CRM task has started"),
            (
                EventKind::StepCompleted { step: 1, name: Arc::clone(&name), duration_ms: 5 },
                "Step 1 complete: Database created",
            ),
            (EventKind::ApprovalNeeded { step: 3, name }, "⚠️ Approval required for Step 3"),
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
