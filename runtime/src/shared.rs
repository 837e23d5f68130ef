//! What the runtime's actors share: the database, the hub, the step kinds, the clock, the
//! lease settings, the ETA model, the hub's backlog of transient events, the count of tasks
//! running against the server's limit, the metrics, and a way for a stopping task actor to leave the
//! registry without knowing the `Runtime` that keeps it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use actix::Addr;
use db::Database;

use crate::backlog::Backlog;
use crate::clock::Clock;
use crate::eta::EtaModel;
use crate::handlers::Handlers;
use crate::hub::Hub;
use crate::metrics::Metrics;

/// Where live task actors are registered. The runtime implements it; a task actor only
/// takes itself off when it stops, so it depends on this and not on the runtime.
pub(crate) trait TaskRegistry: Send + Sync {
    /// Removes a stopped actor's entry, unless a newer actor (`generation`) replaced it.
    fn forget(&self, task_id: &str, generation: u64);
}

/// What the runtime's actors share.
pub(crate) struct Shared {
    pub db: Arc<Database>,
    pub hub: Addr<Hub>,
    pub handlers: Handlers,
    pub clock: Arc<dyn Clock>,
    pub instance_id: String,
    pub lease_ttl_ms: i64,
    pub eta: EtaModel,
    pub registry: Arc<dyn TaskRegistry>,
    /// Bounds the transient events (percents, log lines, estimates) queued to the hub.
    pub transient: Arc<Backlog>,
    /// The tasks running here, against `runtime.max_running_tasks`.
    pub capacity: Capacity,
    /// What the actors count.
    pub metrics: Metrics,
}

/// How many tasks run on this server, against its limit. A task actor counts its task while
/// the task is `running` under this server's lease (a paused task, or one waiting for
/// approval, frees its place), and wakes the queue's claimer when it stops counting.
pub(crate) struct Capacity {
    max: usize,
    running: AtomicUsize,
    freed: tokio::sync::Notify,
}

impl Capacity {
    pub fn new(max: usize) -> Capacity {
        Capacity { max: max.max(1), running: AtomicUsize::new(0), freed: tokio::sync::Notify::new() }
    }

    /// The limit.
    pub fn max(&self) -> usize {
        self.max
    }

    /// How many tasks run here now.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }

    /// How many more may start here now.
    pub fn room(&self) -> usize {
        self.max.saturating_sub(self.running())
    }

    /// A task starts running here.
    pub fn take(&self) {
        self.running.fetch_add(1, Ordering::SeqCst);
    }

    /// A task counted by [`Capacity::take`] stops running here.
    pub fn free(&self) {
        self.running.fetch_sub(1, Ordering::SeqCst);
        self.freed.notify_one();
    }

    /// Resolves when a place was freed since the last call (at once if one was).
    pub async fn freed(&self) {
        self.freed.notified().await;
    }
}
