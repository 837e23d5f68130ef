//! A bound on the messages queued to an actor whose mailbox has none (`do_send` never
//! refuses). A sender takes a `Ticket` before sending a message it may drop; the ticket
//! travels inside the message and frees its place when the message is handled or dropped.
//! While the backlog is full, such messages are dropped and counted.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// How many droppable messages are queued, at most `limit`, and how many were dropped.
#[derive(Debug)]
pub(crate) struct Backlog {
    queued: AtomicUsize,
    limit: usize,
    dropped: AtomicU64,
}

/// A place in a backlog, held by a queued message.
#[derive(Debug)]
pub(crate) struct Ticket(Arc<Backlog>);

impl Backlog {
    /// A backlog of at most `limit` queued messages.
    pub fn new(limit: usize) -> Arc<Backlog> {
        Arc::new(Backlog { queued: AtomicUsize::new(0), limit, dropped: AtomicU64::new(0) })
    }

    /// A place for one more message, or `None` (and one more dropped) when it is full.
    pub fn admit(self: &Arc<Self>) -> Option<Ticket> {
        let taken = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| (queued < self.limit).then_some(queued + 1));
        match taken {
            Ok(_) => Some(Ticket(Arc::clone(self))),
            Err(_) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// The messages dropped since the last call.
    pub fn take_dropped(&self) -> u64 {
        self.dropped.swap(0, Ordering::Relaxed)
    }
}

impl Ticket {
    /// The backlog this place is in.
    pub fn backlog(&self) -> &Backlog {
        &self.0
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_backlog_drops_and_counts_until_a_message_is_handled() {
        let backlog = Backlog::new(2);
        let (first, second) = (backlog.admit(), backlog.admit());
        assert!(first.is_some() && second.is_some());
        assert!(backlog.admit().is_none() && backlog.admit().is_none(), "full");
        assert_eq!(backlog.take_dropped(), 2);
        assert_eq!(backlog.take_dropped(), 0, "counted once");
        drop(first);
        assert!(backlog.admit().is_some(), "a handled message frees its place");
    }
}
