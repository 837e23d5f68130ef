//! Hearing the cluster's doorbell (PostgreSQL only): a thread of its own listens on a
//! dedicated connection and passes each ring on: to the relay, which reads what changed in
//! other servers' tasks for this server's subscribers, and to the queue's claimer. A dropped connection is
//! reopened with backoff, and every (re)connection passes on `Ring::Everything`, since rings
//! may have been missed meanwhile. The thread ends when the runtime shuts down or is gone.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use db::{Listener, Ring};
use tokio::sync::broadcast;

use super::Runtime;

/// How often the listener looks for rings: the delay a ring may add.
const POLL_EVERY: Duration = Duration::from_millis(20);

/// The longest wait between attempts to reconnect.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Rings waiting for a slow follower; one that falls further behind is told `Everything`.
pub(super) const RINGS_QUEUED: usize = 1_024;

impl Runtime {
    /// Starts listening, on PostgreSQL.
    pub(super) fn listen_for_rings(&self) {
        let db::Backend::Postgres(url) = self.shared.db.backend() else { return };
        let (url, rings, stopping) = (url.clone(), self.rings.clone(), Arc::downgrade(&self.stopping));
        let started = std::thread::Builder::new().name("stepwise-doorbell".into()).spawn(move || {
            listen(&url, &rings, &stopping);
        });
        if let Err(error) = started {
            tracing::error!(%error, "cannot start the doorbell listener; other servers' tasks are not followed live");
        }
    }

    /// The rings of the cluster's doorbell: which tasks changed on any server (this one
    /// included). A receiver that lags is told `Lagged`: treat it as `Ring::Everything`.
    pub fn rings(&self) -> broadcast::Receiver<Arc<Ring>> {
        self.rings.subscribe()
    }
}

fn listen(url: &str, rings: &broadcast::Sender<Arc<Ring>>, stopping: &Weak<AtomicBool>) {
    let stopped = || stopping.upgrade().is_none_or(|stopping| stopping.load(Ordering::SeqCst));
    let mut backoff = POLL_EVERY;
    while !stopped() {
        let mut listener = match Listener::connect(url) {
            Ok(listener) => listener,
            Err(error) => {
                tracing::warn!(%error, retry_in = ?backoff, "cannot listen for the cluster's doorbell");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = POLL_EVERY;
        // Nobody may be following yet: a send without receivers is fine.
        let _ = rings.send(Arc::new(Ring::Everything));
        while !stopped() {
            match listener.rings() {
                Ok(heard) => heard.into_iter().for_each(|ring| drop(rings.send(Arc::new(ring)))),
                Err(error) => {
                    tracing::warn!(%error, "lost the doorbell's connection; reconnecting");
                    break;
                }
            }
            std::thread::sleep(POLL_EVERY);
        }
    }
}
