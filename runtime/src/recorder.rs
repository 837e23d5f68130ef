//! The `ProgressRecorder`: a hub subscriber that persists what is not a state transition.
//! Percent updates are coalesced (latest per step) and log lines batched, and both are
//! flushed in one transaction per interval, so thousands of updates per second cost a
//! handful of transactions. A write runs in the background, one at a time, so the
//! recorder keeps taking events while the database works; what waits is bounded: a
//! percent per step, and up to `MAX_PENDING_LOG_LINES` lines (more are dropped and counted).
//! After each write the recorder rings the cluster's doorbell once for every task that
//! changed since the last one (committed events included), so servers following those tasks
//! read them from the database; on PostgreSQL, where such servers may be, the tasks' latest
//! estimates are written with the flush too, since only the server running a task can
//! estimate it.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use db::{Database, LogLine, ProgressUpdate, StoredEstimate};
use futures_util::future::{LocalBoxFuture, Shared};
use futures_util::FutureExt;

use crate::clock::Clock;
use crate::eta;
use crate::event::{EventKind, TaskEvent};
use crate::store::blocking;

/// Longest log line kept; longer lines are cut (the rest would only bloat the database).
const MAX_LOG_LINE_BYTES: usize = 8 * 1024;

/// Log lines waiting for a write (at most 80 MiB of them); later ones are dropped until the
/// database has taken these.
const MAX_PENDING_LOG_LINES: usize = 10_000;

/// Counters of what the recorder did, for benchmarks and health checks.
#[derive(Debug, Default)]
pub struct RecorderStats {
    /// Progress events received.
    pub progress_events: AtomicU64,
    /// Log lines received.
    pub log_lines: AtomicU64,
    /// Flush transactions committed.
    pub flushes: AtomicU64,
    /// Rows inserted or updated by flushes.
    pub rows_written: AtomicU64,
    /// Log lines dropped because too many were waiting for the database.
    pub log_lines_dropped: AtomicU64,
}

/// Writes everything pending now and replies when it is committed.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Flush;

/// What the recorder has taken and not yet handed to a write.
#[derive(Debug, Default)]
struct Pending {
    progress: HashMap<(Arc<str>, u32), ProgressUpdate>,
    logs: Vec<LogLine>,
    /// The latest estimate per task, for the other servers of a cluster.
    estimates: HashMap<Arc<str>, StoredEstimate>,
}

impl Pending {
    /// Keeps what `event` says that is not a transition: the step's latest percent, or a log
    /// line unless `max_logs` are waiting already. Returns whether a line was dropped.
    fn take(&mut self, event: TaskEvent, max_logs: usize) -> bool {
        match event.kind {
            EventKind::Progress { step, attempt, percent, .. } => {
                let update = ProgressUpdate {
                    task_id: event.task_id.to_string(),
                    lease_token: event.lease_token,
                    step,
                    attempt,
                    percent,
                };
                self.progress.insert((event.task_id, step), update);
            }
            EventKind::Log { .. } if self.logs.len() >= max_logs => return true,
            EventKind::Log { step, stream, line } => self.logs.push(LogLine {
                task_id: event.task_id.to_string(),
                lease_token: event.lease_token,
                step,
                stream,
                line: truncate(&line, MAX_LOG_LINE_BYTES).to_owned(),
                at: event.at,
            }),
            _ => {}
        }
        false
    }

    /// Keeps a published estimate, the latest per task.
    fn take_estimate(&mut self, event: &TaskEvent) {
        if let EventKind::EtaUpdated(eta) = &event.kind {
            self.estimates.insert(Arc::clone(&event.task_id), eta::stored(&event.task_id, eta, event.at));
        }
    }

    /// Everything pending, leaving nothing.
    fn drain(&mut self) -> (Vec<ProgressUpdate>, Vec<LogLine>, Vec<StoredEstimate>) {
        let progress = self.progress.drain().map(|(_, u)| u).collect();
        (progress, std::mem::take(&mut self.logs), self.estimates.drain().map(|(_, e)| e).collect())
    }

    fn is_empty(&self) -> bool {
        self.progress.is_empty() && self.logs.is_empty() && self.estimates.is_empty()
    }
}

/// Persists coalesced progress and batched logs.
pub struct ProgressRecorder {
    db: Arc<Database>,
    clock: Arc<dyn Clock>,
    interval: Duration,
    stats: Arc<RecorderStats>,
    pending: Pending,
    /// The tasks that changed since the last ring (bounded by the live tasks); kept only on
    /// PostgreSQL, where other servers may listen.
    changed: HashSet<Arc<str>>,
    rings: bool,
    /// The newest write, if any; each waits for the one before, so writes land one at a
    /// time and in the order their batches were taken.
    last_write: Option<Shared<LocalBoxFuture<'static, ()>>>,
}

impl ProgressRecorder {
    /// A recorder flushing every `interval`.
    pub fn new(db: Arc<Database>, clock: Arc<dyn Clock>, interval: Duration, stats: Arc<RecorderStats>) -> Self {
        let (pending, changed) = (Pending::default(), HashSet::new());
        let rings = matches!(db.backend(), db::Backend::Postgres(_));
        ProgressRecorder { db, clock, interval, stats, pending, changed, rings, last_write: None }
    }

    /// Writes what is pending, after any write in flight; resolves once it is committed.
    /// Events arriving meanwhile are taken and wait for the next round.
    fn flush(&mut self) -> impl Future<Output = ()> + 'static {
        let batch = (!self.pending.is_empty()).then(|| self.pending.drain());
        let changed: Vec<String> = self.changed.drain().map(|id| id.to_string()).collect();
        let (db, stats, at, previous) =
            (Arc::clone(&self.db), Arc::clone(&self.stats), self.clock.now_ms(), self.last_write.clone());
        let write = async move {
            if let Some(previous) = previous {
                previous.await;
            }
            if batch.is_none() && changed.is_empty() {
                return;
            }
            let (updates, logs, estimates) = batch.unwrap_or_default();
            let wrote = !updates.is_empty() || !logs.is_empty();
            let written = blocking(&db, move |conn| {
                let outcome = match wrote {
                    true => db::record_progress(conn, &updates, &logs, at)?,
                    false => db::FlushOutcome::default(),
                };
                // After the progress commit: a server that hears the ring reads all of it.
                db::announce(conn, &estimates, changed)?;
                Ok(outcome)
            });
            match written.await {
                Ok(outcome) => {
                    if wrote {
                        stats.flushes.fetch_add(1, Ordering::Relaxed);
                    }
                    stats.rows_written.fetch_add(outcome.rows_written as u64, Ordering::Relaxed);
                    for task in outcome.lost {
                        tracing::warn!(task_id = %task, "progress not recorded: the task's lease moved to another server");
                    }
                }
                Err(error) => {
                    tracing::error!(%error, "recording progress failed; the next transition rewrites the step state")
                }
            }
        };
        let write = write.boxed_local().shared();
        self.last_write = Some(write.clone());
        write
    }
}

impl Actor for ProgressRecorder {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.interval, |act, ctx| {
            // A round finds the last one still writing only when the database is slow:
            // then it waits, and what arrives meanwhile goes into one batch.
            if act.last_write.as_ref().is_none_or(|write| write.peek().is_some()) {
                ctx.spawn(actix::fut::wrap_future(act.flush()));
            }
        });
    }
}

impl Handler<TaskEvent> for ProgressRecorder {
    type Result = ();
    fn handle(&mut self, event: TaskEvent, _: &mut Self::Context) {
        if self.rings && !self.changed.contains(&event.task_id) {
            self.changed.insert(Arc::clone(&event.task_id));
        }
        if self.rings {
            self.pending.take_estimate(&event);
        }
        let counter = match event.kind {
            EventKind::Progress { .. } => &self.stats.progress_events,
            EventKind::Log { .. } => &self.stats.log_lines,
            _ => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if self.pending.take(event, MAX_PENDING_LOG_LINES) {
            self.stats.log_lines_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Handler<Flush> for ProgressRecorder {
    type Result = ResponseFuture<()>;
    fn handle(&mut self, _: Flush, _: &mut Self::Context) -> Self::Result {
        Box::pin(self.flush())
    }
}

fn truncate(line: &str, max: usize) -> &str {
    if line.len() <= max {
        return line;
    }
    let mut end = max;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    &line[..end]
}

#[cfg(test)]
mod tests {
    use db::LogStream;

    use super::*;

    fn event(kind: EventKind) -> TaskEvent {
        TaskEvent { task_id: "t1".into(), owner: "ann".into(), seq: 3, lease_token: 1, at: 5, kind }
    }

    fn progress(step: u32, percent: u8) -> TaskEvent {
        event(EventKind::Progress { step, attempt: 1, percent, task_percent: percent / 2 })
    }

    fn log(line: &str) -> TaskEvent {
        event(EventKind::Log { step: 1, stream: LogStream::Stdout, line: line.into() })
    }

    #[test]
    fn pending_keeps_the_latest_percent_per_step_and_lines_up_to_the_cap() {
        let mut pending = Pending::default();
        let dropped: Vec<bool> =
            [progress(1, 10), progress(1, 30), progress(2, 5), log("one"), log("two"), log("three")]
                .into_iter()
                .map(|event| pending.take(event, 2))
                .collect();
        assert_eq!(dropped, [false, false, false, false, false, true], "the third line is over the cap");
        assert!(!pending.take(event(EventKind::TaskStarted), 2), "a transition is not the recorder's");
        let (mut updates, logs, _) = pending.drain();
        updates.sort_by_key(|u| u.step);
        assert_eq!(updates.iter().map(|u| (u.step, u.percent)).collect::<Vec<_>>(), [(1, 30), (2, 5)]);
        assert_eq!(logs.iter().map(|l| l.line.as_str()).collect::<Vec<_>>(), ["one", "two"]);
        assert!(pending.is_empty(), "drained");
        assert!(!pending.take(log("four"), 2), "room again once drained");
    }
}
