//! This server's place in a cluster of servers sharing one PostgreSQL database (on SQLite,
//! a cluster of one). The server registers in the `servers` table at start; every third of
//! a lease it renews its task leases and its heartbeat together and takes over the live
//! tasks whose lease lapsed (their server is gone); at a clean shutdown it releases its
//! leases, marks itself stopped and rings the doorbell, so the others take its tasks at once
//! rather than after the lease would have expired.

use std::sync::atomic::Ordering;
use std::time::Duration;

use db::{ServerRecord, ServerState};

use super::Runtime;
use crate::store::blocking;
use crate::RuntimeError;

/// The other server that runs a task, as its lease and the membership say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Its instance id.
    pub server_id: String,
    /// The URL it serves HTTP on, if it serves any.
    pub address: Option<String>,
}

/// A server of the cluster as this one sees it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its row.
    pub server: ServerRecord,
    /// Where it stands, by this server's clock.
    pub state: ServerState,
    /// Whether it is this server.
    pub is_self: bool,
}

impl Runtime {
    /// Writes this server's row in the membership table.
    pub(super) async fn register(&self, address: Option<String>) -> Result<(), RuntimeError> {
        let (id, now, max) = (self.shared.instance_id.clone(), self.shared.clock.now_ms(), self.shared.capacity.max());
        blocking(&self.shared.db, move |conn| db::register_server(conn, &id, address.as_deref(), max, now)).await
    }

    /// Every `every`: renews the leases and the heartbeat, then takes over orphaned tasks.
    /// Stops when the runtime shuts down; shutdown waits for a beat in progress.
    pub(super) fn keep_membership(&self, every: Duration) {
        let runtime = self.clone();
        actix::spawn(async move {
            let mut interval = tokio::time::interval(every.max(Duration::from_millis(100)));
            loop {
                interval.tick().await;
                let _beat = runtime.beat.lock().await;
                if runtime.stopping.load(Ordering::SeqCst) {
                    return;
                }
                if let Err(error) = runtime.heartbeat().await {
                    tracing::error!(%error, "could not renew task leases and the heartbeat");
                }
                if let Err(error) = runtime.sweep().await {
                    tracing::error!(%error, "could not take over the tasks of servers that are gone");
                }
            }
        });
    }

    async fn heartbeat(&self) -> Result<(), RuntimeError> {
        let (owner, ttl, now) = (self.shared.instance_id.clone(), self.shared.lease_ttl_ms, self.shared.clock.now_ms());
        let running = self.shared.capacity.running();
        blocking(&self.shared.db, move |conn| {
            db::renew_leases(conn, &owner, ttl, now)?;
            db::server_heartbeat(conn, &owner, running, now)?;
            // Any server may: an ended task's estimate is of no use to anyone, nor a key
            // past its window.
            db::forget_idempotency_keys(conn, now - super::IDEMPOTENCY_WINDOW_MS)?;
            db::forget_ended_estimates(conn).map(drop)
        })
        .await
    }

    /// Takes over every live task whose lease is free or lapsed and not this server's (its
    /// server stopped or is gone), resuming each as a restart would. The heartbeat does it
    /// every third of a lease; call it to take them over at once. Returns how many this call
    /// took: a heartbeat in progress finishes first, so whatever either took has its actor.
    pub async fn take_over_orphans(&self) -> Result<usize, RuntimeError> {
        let _beat = self.beat.lock().await;
        self.sweep().await
    }

    async fn sweep(&self) -> Result<usize, RuntimeError> {
        let (owner, ttl, now) = (self.shared.instance_id.clone(), self.shared.lease_ttl_ms, self.shared.clock.now_ms());
        let taken = blocking(&self.shared.db, move |conn| db::acquire_orphaned_tasks(conn, &owner, ttl, now)).await?;
        let count = self.resume(taken, now);
        if count > 0 {
            tracing::info!(count, "took over the tasks of servers that are gone");
        }
        Ok(count)
    }

    /// Leaves the cluster: releases this server's leases (its tasks' actors have stopped),
    /// marks it stopped and rings, so the other servers take its tasks at once.
    pub(super) async fn leave(&self) -> Result<(), RuntimeError> {
        let (id, now) = (self.shared.instance_id.clone(), self.shared.clock.now_ms());
        let released = blocking(&self.shared.db, move |conn| db::leave_cluster(conn, &id, now)).await?;
        tracing::debug!(released, "left the cluster; any other server takes the released tasks");
        Ok(())
    }

    /// The other server whose lease on `task_id` is live now, if one is: where a request
    /// this server could not apply belongs.
    pub async fn holder_elsewhere(&self, task_id: &str) -> Result<Option<Holder>, RuntimeError> {
        let (task_id, now) = (task_id.to_owned(), self.shared.clock.now_ms());
        let lease = blocking(&self.shared.db, move |conn| db::lease_holder(conn, &task_id)).await?;
        Ok(lease
            .filter(|lease| lease.server_id != self.shared.instance_id && lease.expires_at > now)
            .map(|lease| Holder { server_id: lease.server_id, address: lease.address }))
    }

    /// Whether this server has an actor for `task_id` (it runs the task, or was asked about
    /// it a moment ago).
    pub fn runs_here(&self, task_id: &str) -> bool {
        self.registry.entries().contains_key(task_id)
    }

    /// The servers of the cluster, the longest-running first.
    pub async fn cluster(&self) -> Result<Vec<Member>, RuntimeError> {
        let servers = blocking(&self.shared.db, db::list_servers).await?;
        let now = self.shared.clock.now_ms();
        Ok(servers
            .into_iter()
            .map(|server| Member {
                state: server.state(now, self.shared.lease_ttl_ms),
                is_self: server.id == self.shared.instance_id,
                server,
            })
            .collect())
    }
}
