//! What every channel that calls out shares: throttling a user's messages into digests,
//! retrying each message's attempts with a timeout each and doubling backoff, and logging
//! every attempt in the `notifications` table. An attempt is whatever the channel does
//! ([`http`] for webhooks and push: one request through the checked client, `429` waiting as
//! `Retry-After` says; SMTP for email), judged as an [`Attempt`].

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hyper::header::RETRY_AFTER;
use hyper::{Body, Request, StatusCode};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::time::Instant;

use super::{endpoint, next_or_idle, Notice, Shared};

/// The longest `Retry-After` honoured; a longer one is cut to this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// The most messages one digest lists; older ones beyond it are only counted.
const MAX_LISTED: usize = 20;

/// Messages one user's worker on one channel may have waiting. Past that, only the newest
/// message that did not fit is kept, and the ones it replaced are counted into the next
/// digest: an endpoint that stalls cannot make a queue grow without limit, and the digest
/// still ends with the newest message (its task, its address).
const CHANNEL_QUEUE: usize = 64;

/// What did not fit in a full queue: the newest such message, and how many it replaced.
struct Overflow<T> {
    newest: Option<T>,
    folded: usize,
}

/// The sending half of one user's queue on one channel.
pub(crate) struct Outbox<T> {
    sender: mpsc::Sender<T>,
    overflow: Arc<Mutex<Overflow<T>>>,
}

/// The worker's half of an [`Outbox`].
pub(crate) struct Inbox<T> {
    receiver: mpsc::Receiver<T>,
    overflow: Arc<Mutex<Overflow<T>>>,
}

/// A new queue for one user's channel worker.
pub(crate) fn queue<T>() -> (Outbox<T>, Inbox<T>) {
    let (sender, receiver) = mpsc::channel(CHANNEL_QUEUE);
    let overflow = Arc::new(Mutex::new(Overflow { newest: None, folded: 0 }));
    (Outbox { sender, overflow: Arc::clone(&overflow) }, Inbox { receiver, overflow })
}

impl<T> Outbox<T> {
    /// Queues `item`, or keeps it as the newest overflow if the queue is full; gives it
    /// back if the worker has ended (it went idle), so a new one can be started.
    pub(crate) fn offer(&self, item: T) -> Result<(), T> {
        match self.sender.try_send(item) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(item)) => {
                let mut overflow = self.overflow.lock().unwrap_or_else(PoisonError::into_inner);
                if overflow.newest.replace(item).is_some() {
                    overflow.folded += 1;
                }
                Ok(())
            }
            Err(TrySendError::Closed(item)) => Err(item),
        }
    }
}

impl<T> Inbox<T> {
    /// Adds what overflowed since the last batch to `batch`: it came after everything queued.
    fn drain_overflow(&self, batch: &mut Batch<T>) {
        let mut overflow = self.overflow.lock().unwrap_or_else(PoisonError::into_inner);
        batch.folded += std::mem::take(&mut overflow.folded);
        if let Some(newest) = overflow.newest.take() {
            batch.push(newest);
        }
    }
}

/// What a worker sends at once: one message, or the messages of a burst (the newest
/// [`MAX_LISTED`]) and how many more were folded in.
pub(crate) struct Batch<T> {
    /// Oldest first; never empty.
    pub(crate) items: Vec<T>,
    /// Messages counted but not listed.
    pub(crate) folded: usize,
}

impl<T> Batch<T> {
    fn push(&mut self, item: T) {
        if self.items.len() == MAX_LISTED {
            self.items.remove(0);
            self.folded += 1;
        }
        self.items.push(item);
    }
}

/// At most `notifications.burst` messages per `notifications.digest_window_s` for one user
/// on one channel.
pub(crate) struct Throttle {
    sent: VecDeque<Instant>,
    window: Duration,
    burst: usize,
}

impl Throttle {
    pub(crate) fn new(shared: &Shared) -> Throttle {
        Throttle {
            sent: VecDeque::new(),
            window: Duration::from_secs(shared.settings().digest_window_s),
            burst: usize::try_from(shared.settings().burst).unwrap_or(usize::MAX),
        }
    }

    /// The next message's worth of the queue: one item while under the rate; over it,
    /// everything that comes until the window frees a slot (the newest [`MAX_LISTED`] listed,
    /// the rest counted). `None` when the worker should end.
    pub(crate) async fn next<T>(&mut self, inbox: &mut Inbox<T>) -> Option<Batch<T>> {
        let first = next_or_idle(&mut inbox.receiver).await?;
        let mut batch = Batch { items: vec![first], folded: 0 };
        self.prune();
        if self.sent.len() >= self.burst {
            let free_at = self.sent[0] + self.window;
            loop {
                tokio::select! {
                    () = tokio::time::sleep_until(free_at) => break,
                    next = inbox.receiver.recv() => match next {
                        Some(item) => batch.push(item),
                        None => break,
                    },
                }
            }
            self.prune();
        }
        inbox.drain_overflow(&mut batch);
        self.sent.push_back(Instant::now());
        Some(batch)
    }

    fn prune(&mut self) {
        while self.sent.front().is_some_and(|at| at.elapsed() >= self.window) {
            self.sent.pop_front();
        }
    }
}

/// One message for `batch`: its message if alone, else a digest of their texts about the
/// newest one's task. A digest offers no decision: it may speak of several approvals, and a
/// button must say which it decides.
pub(crate) fn digest(mut batch: Batch<Notice>) -> Notice {
    if batch.items.len() == 1 && batch.folded == 0 {
        return batch.items.remove(0);
    }
    let mut lines: Vec<String> = batch.items.iter().map(|notice| format!("• {}", notice.text)).collect();
    if batch.folded > 0 {
        lines.push(format!("• and {} more", batch.folded));
    }
    let count = batch.items.len() + batch.folded;
    let task_id = batch.items.pop().map(|last| last.task_id).unwrap_or_default();
    Notice { task_id, event: "digest", text: format!("{count} updates:\n{}", lines.join("\n")), approval_step: None }
}

/// [`digest`] for a channel whose items carry where they go: the digest goes to the newest.
pub(crate) fn digest_to<A>(batch: Batch<(Notice, A)>) -> Option<(Notice, A)> {
    let folded = batch.folded;
    let mut notices = Vec::with_capacity(batch.items.len());
    let mut newest = None;
    for (notice, address) in batch.items {
        notices.push(notice);
        newest = Some(address);
    }
    Some((digest(Batch { items: notices, folded }), newest?))
}

/// How a delivery ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// The endpoint took it.
    Delivered,
    /// The endpoint says it no longer exists (`404` or `410`).
    Gone,
    /// Refused, given up, or out of attempts.
    Failed,
}

/// How one attempt went; each carries the detail the log shows (the peer's answer or the
/// error).
pub(crate) enum Attempt {
    /// The peer took it.
    Delivered(String),
    /// The peer says the target no longer exists.
    Gone(String),
    /// Worth trying again after the given wait (or the backoff).
    Retry { detail: String, after: Option<Duration> },
    /// Not worth trying again.
    GiveUp { outcome: &'static str, detail: String },
}

/// Where a message goes, for the log.
pub(crate) struct Target<'a> {
    /// Who it is for.
    pub(crate) owner: &'a str,
    /// The channel's name.
    pub(crate) channel: &'static str,
    /// What the log shows of the endpoint (its origin).
    pub(crate) shown: &'a str,
}

/// Delivers `notice` by running `attempt_once` (a fresh future each time, given at most
/// `notifications.timeout_s`) until it is delivered, gone or given up on, or
/// `notifications.max_attempts` have failed, waiting the backoff (doubling) between tries;
/// logs every attempt.
pub(crate) async fn with_retries<F: Future<Output = Attempt>>(
    shared: &Shared,
    target: &Target<'_>,
    notice: &Notice,
    mut attempt_once: impl FnMut() -> F,
) -> Delivery {
    let settings = shared.settings();
    let timeout = Duration::from_secs(settings.timeout_s);
    let mut backoff = Duration::from_millis(settings.retry_backoff_ms);
    for attempt in 1..=settings.max_attempts {
        let outcome = tokio::time::timeout(timeout, attempt_once())
            .await
            .unwrap_or_else(|_| Attempt::Retry { detail: format!("no answer within {timeout:?}"), after: None });
        let (detail, wait) = match outcome {
            Attempt::Delivered(detail) => {
                record(shared, target, notice, attempt, "delivered", Some(detail)).await;
                return Delivery::Delivered;
            }
            Attempt::Gone(detail) => {
                record(shared, target, notice, attempt, "failed", Some(detail)).await;
                return Delivery::Gone;
            }
            Attempt::GiveUp { outcome, detail } => {
                tracing::warn!(
                    user = target.owner,
                    channel = target.channel,
                    target = target.shown,
                    detail,
                    "notification refused; not retrying"
                );
                record(shared, target, notice, attempt, outcome, Some(detail)).await;
                return Delivery::Failed;
            }
            Attempt::Retry { detail, after } => (detail, after.unwrap_or(backoff)),
        };
        record(shared, target, notice, attempt, "failed", Some(detail.clone())).await;
        if attempt == settings.max_attempts {
            tracing::warn!(
                user = target.owner,
                channel = target.channel,
                target = target.shown,
                attempts = attempt,
                last_error = detail,
                "giving up on a notification"
            );
            break;
        }
        tokio::time::sleep(wait).await;
        backoff = backoff.saturating_mul(2);
    }
    Delivery::Failed
}

/// One HTTP attempt through the checked client (`request` is what the channel built, or why
/// it could not). `404` and `410` are [`Attempt::Gone`] when `gone_on_404` (push services say
/// so of dead subscriptions); any other `4xx` but `408` and `429` is not retried: asking
/// again would not help.
pub(crate) async fn http(shared: &Shared, request: Result<Request<Body>, String>, gone_on_404: bool) -> Attempt {
    let request = match request {
        Ok(request) => request,
        Err(detail) => return Attempt::GiveUp { outcome: "failed", detail },
    };
    let response = match shared.client.request(request).await {
        Err(error) => {
            if let Some(refused) = endpoint::refusal(&error) {
                return Attempt::GiveUp { outcome: "refused", detail: refused };
            }
            return Attempt::Retry { detail: format!("cannot reach the endpoint: {error}"), after: None };
        }
        Ok(response) => response,
    };
    let status = response.status();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER));
    // The answer's body is not needed; dropping the response closes the connection.
    drop(response);
    if status.is_success() {
        Attempt::Delivered(status.to_string())
    } else if gone_on_404 && matches!(status, StatusCode::NOT_FOUND | StatusCode::GONE) {
        Attempt::Gone(format!("{status}; the subscription is removed"))
    } else if status == StatusCode::TOO_MANY_REQUESTS {
        Attempt::Retry { detail: status.to_string(), after: retry_after }
    } else if status.is_client_error() && status != StatusCode::REQUEST_TIMEOUT {
        Attempt::GiveUp { outcome: "failed", detail: status.to_string() }
    } else {
        Attempt::Retry { detail: status.to_string(), after: None }
    }
}

/// Logs one attempt in the `notifications` table (and, if that fails, in the server log).
pub(crate) async fn record(
    shared: &Shared,
    target: &Target<'_>,
    notice: &Notice,
    attempt: u32,
    outcome: &'static str,
    detail: Option<String>,
) {
    shared.attempts.with_label_values(&[target.channel, outcome]).inc();
    let now = shared.clock.now_ms();
    let record = db::NotificationRecord {
        id: crate::ids::sortable_id(now),
        user: target.owner.to_owned(),
        task_id: notice.task_id.clone(),
        event: notice.event.to_owned(),
        channel: target.channel.to_owned(),
        target: target.shown.to_owned(),
        message: notice.text.clone(),
        attempt: i32::try_from(attempt).unwrap_or(i32::MAX),
        outcome: outcome.to_owned(),
        detail,
        created_at: now,
    };
    let Some(db) = shared.db() else {
        tracing::warn!(user = target.owner, "cannot log a notification attempt: the database is closed");
        return;
    };
    let written = tokio::task::spawn_blocking(move || {
        let mut conn = db.conn()?;
        db::insert_notification(&mut conn, &record)
    })
    .await;
    match written {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(%error, user = target.owner, "cannot log a notification attempt"),
        Err(_) => tracing::warn!(user = target.owner, "cannot log a notification attempt: the server is stopping"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(n: usize) -> Notice {
        Notice {
            task_id: format!("task-{n}"),
            event: "step_complete",
            text: format!("Step {n} complete"),
            approval_step: None,
        }
    }

    #[test]
    fn a_full_queue_keeps_the_newest_of_what_does_not_fit_and_a_closed_one_gives_it_back() {
        let (outbox, mut inbox) = queue::<Notice>();
        for n in 0..CHANNEL_QUEUE + 5 {
            assert!(outbox.offer(notice(n)).is_ok());
        }
        let mut batch = Batch { items: Vec::new(), folded: 0 };
        while let Ok(queued) = inbox.receiver.try_recv() {
            batch.push(queued);
        }
        assert_eq!(batch.items.len() + batch.folded, CHANNEL_QUEUE, "the queue holds no more than its bound");
        inbox.drain_overflow(&mut batch);
        assert_eq!(batch.items.last(), Some(&notice(CHANNEL_QUEUE + 4)), "the newest message comes last");
        assert_eq!(batch.items.len() + batch.folded, CHANNEL_QUEUE + 5, "the four it replaced are counted");
        drop(inbox);
        assert_eq!(outbox.offer(notice(99)).err(), Some(notice(99)), "a closed queue hands the message back");
    }

    #[test]
    fn a_batch_lists_the_newest_and_counts_the_rest() {
        let mut batch = Batch { items: vec![notice(0)], folded: 3 };
        for n in 1..MAX_LISTED + 10 {
            batch.push(notice(n));
        }
        assert_eq!(batch.items.len(), MAX_LISTED);
        assert_eq!(batch.folded, 3 + 10);
        let digest = digest(batch);
        assert_eq!(digest.event, "digest");
        assert_eq!(digest.task_id, format!("task-{}", MAX_LISTED + 9), "about the newest message's task");
        let lines: Vec<&str> = digest.text.lines().collect();
        assert_eq!(lines[0], format!("{} updates:", MAX_LISTED + 13));
        assert_eq!(lines[1], "• Step 10 complete", "the oldest listed is the first not folded");
        assert_eq!(lines.last(), Some(&"• and 13 more"));
    }

    #[test]
    fn a_lone_message_goes_as_itself_unless_others_were_folded() {
        assert_eq!(digest(Batch { items: vec![notice(1)], folded: 0 }), notice(1));
        let folded = digest(Batch { items: vec![notice(1)], folded: 2 });
        assert_eq!(folded.text, "3 updates:\n• Step 1 complete\n• and 2 more");
        let to = digest_to(Batch { items: vec![(notice(1), "a"), (notice(2), "b")], folded: 0 });
        assert_eq!(to.map(|(notice, address)| (notice.event, address)), Some(("digest", "b")), "to the newest address");
    }
}
