//! Starting tasks within this server's limit (`runtime.max_running_tasks`). A task asked to
//! start starts here if this server has room; otherwise it is queued in the database and
//! waits for any server of the cluster with room, oldest first: each claims when one of its
//! tasks stops running, when the doorbell says a task was queued somewhere, and every third
//! of a lease in case a ring was missed.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use db::{Ring, TaskStatus};

use super::Runtime;
use crate::machine::Control;
use crate::store::blocking;
use crate::task::Command;
use crate::RuntimeError;

impl Runtime {
    /// Starts `owner`'s pending task here if this server has room, and otherwise queues it
    /// for the first server that has. A task that is not pending is refused as before.
    pub(super) async fn start_or_queue(&self, owner: &str, task_id: &str) -> Result<(), RuntimeError> {
        {
            // Starts are taken one at a time (with claims), so two cannot both take the last
            // place; a task started here is never queued, so no other server can claim it.
            // The actor refuses a task that is not pending, as before the limit existed.
            let _beat = self.beat.lock().await;
            if !self.stopping.load(Ordering::SeqCst) && self.shared.capacity.room() > 0 {
                return self.ask(owner, task_id, || Command(Control::Start)).await;
            }
        }
        // No room: only a pending task of the caller's is queued; any other gets the
        // actor's answer (not found, or not startable).
        let stored = self.task(owner, task_id).await?;
        if stored.task.status != TaskStatus::Pending {
            return self.ask(owner, task_id, || Command(Control::Start)).await;
        }
        let (id, server, now) = (task_id.to_owned(), self.shared.instance_id.clone(), self.shared.clock.now_ms());
        blocking(&self.shared.db, move |conn| db::enqueue(conn, &id, &server, now)).await?;
        self.claim().await?;
        Ok(())
    }

    /// Claims as many queued tasks as this server has room for, oldest first, and starts
    /// them. Returns how many started. One claim at a time, and none once shutdown began.
    pub(super) async fn claim(&self) -> Result<usize, RuntimeError> {
        let _beat = self.beat.lock().await;
        if self.stopping.load(Ordering::SeqCst) {
            return Ok(0);
        }
        let room = self.shared.capacity.room();
        if room == 0 {
            return Ok(0);
        }
        let (server, ttl, now) =
            (self.shared.instance_id.clone(), self.shared.lease_ttl_ms, self.shared.clock.now_ms());
        let claimed = blocking(&self.shared.db, move |conn| db::claim_queued(conn, &server, ttl, now, room)).await?;
        let mut started = 0;
        for task in claimed {
            // Awaited one by one, so the count of running tasks is current for the next claim.
            match self.ask(&task.owner, &task.task_id, || Command(Control::Start)).await {
                Ok(()) => started += 1,
                // Cancelled while it waited, say: nothing to start.
                Err(RuntimeError::InvalidTransition { .. }) => {}
                Err(error) => {
                    tracing::warn!(%error, task_id = task.task_id, "could not start a claimed task; it is claimed again when the claim lapses");
                }
            }
        }
        Ok(started)
    }

    /// Claims whenever room frees here, a task is queued anywhere, or `every` passes; when
    /// the doorbell says a stopping server released its tasks (or rings may have been
    /// missed), first takes over the tasks no live server holds.
    pub(super) fn keep_claiming(&self, every: Duration) {
        let runtime = self.clone();
        let mut rings = self.rings();
        actix::spawn(async move {
            let mut interval = tokio::time::interval(every.max(Duration::from_millis(100)));
            loop {
                let released = tokio::select! {
                    _ = runtime.shared.capacity.freed() => false,
                    _ = interval.tick() => false,
                    ring = rings.recv() => match ring.as_deref() {
                        Ok(Ring::Queue) => false,
                        Ok(Ring::Released | Ring::Everything) | Err(_) => true,
                        Ok(Ring::Tasks(_)) => continue,
                    },
                };
                if runtime.stopping.load(Ordering::SeqCst) {
                    return;
                }
                if released {
                    if let Err(error) = runtime.take_over_orphans().await {
                        tracing::error!(%error, "could not take over the tasks of servers that stopped");
                    }
                }
                if let Err(error) = runtime.claim().await {
                    tracing::error!(%error, "could not claim queued tasks");
                }
            }
        });
    }

    /// The place in the queue (1 = next to start) of each of these tasks that waits there.
    pub async fn queue_places(&self, task_ids: &[String]) -> Result<HashMap<String, u32>, RuntimeError> {
        let ids = task_ids.to_vec();
        blocking(&self.shared.db, move |conn| db::queue_places(conn, &ids)).await
    }

    /// How many tasks run here now, against the limit.
    pub fn running_tasks(&self) -> (usize, usize) {
        (self.shared.capacity.running(), self.shared.capacity.max())
    }
}
