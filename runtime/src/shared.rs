//! What the runtime's actors share: the database, the hub, the step kinds, the clock, the
//! lease settings, the ETA model, the hub's backlog of transient events, and a way for a
//! stopping task actor to leave the registry without knowing the `Runtime` that keeps it.

use std::sync::Arc;

use actix::Addr;
use db::Database;

use crate::backlog::Backlog;
use crate::clock::Clock;
use crate::eta::EtaModel;
use crate::handlers::Handlers;
use crate::hub::Hub;

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
}
