//! The `ProgressRecorder`: a hub subscriber that persists what is not a state transition.
//! Percent updates are coalesced (latest per step) and log lines batched, and both are
//! flushed in one transaction per interval, so thousands of updates per second cost a
//! handful of transactions. A write runs in the background, one at a time, so the
//! recorder keeps taking events while the database works; what waits is bounded: a
//! percent per step, and up to `MAX_PENDING_LOG_LINES` lines (more are dropped and counted).
//! A write that fails (the database is away) keeps its batch for the next, which stores it
//! first, within the same bound.
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
    fn drain(&mut self) -> Batch {
        Batch {
            updates: self.progress.drain().map(|(_, u)| u).collect(),
            logs: std::mem::take(&mut self.logs),
            estimates: self.estimates.drain().map(|(_, e)| e).collect(),
        }
    }
}

/// What one write stores.
#[derive(Debug, Default)]
struct Batch {
    updates: Vec<ProgressUpdate>,
    logs: Vec<LogLine>,
    estimates: Vec<StoredEstimate>,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.updates.is_empty() && self.logs.is_empty() && self.estimates.is_empty()
    }

    /// `self`, a batch a write could not store, put before `newer`: its lines first, and its
    /// percents and estimates where `newer` has none for the same step or task. At most
    /// `max_logs` lines are kept, the newest dropped; returns how many were.
    fn before(self, newer: Batch, max_logs: usize) -> (Batch, usize) {
        let mut logs = self.logs;
        logs.extend(newer.logs);
        let dropped = logs.len().saturating_sub(max_logs);
        logs.truncate(max_logs);
        let mut updates = newer.updates;
        let older = self
            .updates
            .into_iter()
            .filter(|old| !updates.iter().any(|new| new.task_id == old.task_id && new.step == old.step));
        let older: Vec<ProgressUpdate> = older.collect();
        updates.extend(older);
        let mut estimates = newer.estimates;
        let older: Vec<StoredEstimate> =
            self.estimates.into_iter().filter(|old| !estimates.iter().any(|new| new.task_id == old.task_id)).collect();
        estimates.extend(older);
        (Batch { updates, logs, estimates }, dropped)
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
    /// What the last write could not store (the database was away): the next write stores
    /// it first. Held to the same bound as pending lines.
    unwritten: Arc<std::sync::Mutex<Batch>>,
}

impl ProgressRecorder {
    /// A recorder flushing every `interval`.
    pub fn new(db: Arc<Database>, clock: Arc<dyn Clock>, interval: Duration, stats: Arc<RecorderStats>) -> Self {
        let (pending, changed) = (Pending::default(), HashSet::new());
        let rings = matches!(db.backend(), db::Backend::Postgres(_));
        let unwritten = Arc::default();
        ProgressRecorder { db, clock, interval, stats, pending, changed, rings, last_write: None, unwritten }
    }

    /// Writes what is pending, after any write in flight; resolves once it is committed.
    /// Events arriving meanwhile are taken and wait for the next round.
    fn flush(&mut self) -> impl Future<Output = ()> + 'static {
        let batch = self.pending.drain();
        let changed: Vec<String> = self.changed.drain().map(|id| id.to_string()).collect();
        let (db, stats, at, previous) =
            (Arc::clone(&self.db), Arc::clone(&self.stats), self.clock.now_ms(), self.last_write.clone());
        let unwritten = Arc::clone(&self.unwritten);
        let write = async move {
            if let Some(previous) = previous {
                previous.await;
            }
            let leftover = std::mem::take(&mut *unwritten.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
            let (batch, dropped) = leftover.before(batch, MAX_PENDING_LOG_LINES);
            stats.log_lines_dropped.fetch_add(dropped as u64, Ordering::Relaxed);
            if batch.is_empty() && changed.is_empty() {
                return;
            }
            let wrote = !batch.updates.is_empty() || !batch.logs.is_empty();
            // The batch stays here unless the write stores it, so a failed one is kept for the
            // next (a lost connection must not lose acknowledged lines).
            let held = Arc::new(std::sync::Mutex::new(Some(batch)));
            let writing = Arc::clone(&held);
            let written = blocking(&db, move |conn| {
                let mut slot = writing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let Some(batch) = slot.as_ref() else { return Ok(db::FlushOutcome::default()) };
                let outcome = match wrote {
                    true => db::record_progress(conn, &batch.updates, &batch.logs, at)?,
                    false => db::FlushOutcome::default(),
                };
                // Stored: nothing of it is to be written again. The estimates and the ring go
                // after the progress commit (a server that hears the ring reads all of it);
                // if they fail, the next estimate and ring only come later.
                let estimates = slot.take().map(|batch| batch.estimates).unwrap_or_default();
                db::announce(conn, &estimates, changed)?;
                Ok(outcome)
            });
            let result = written.await;
            if let Some(failed) = held.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
                *unwritten.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = failed;
            }
            match result {
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
                    tracing::error!(%error, "recording progress failed; the next write tries it again")
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
        let Batch { mut updates, logs, .. } = pending.drain();
        updates.sort_by_key(|u| u.step);
        assert_eq!(updates.iter().map(|u| (u.step, u.percent)).collect::<Vec<_>>(), [(1, 30), (2, 5)]);
        assert_eq!(logs.iter().map(|l| l.line.as_str()).collect::<Vec<_>>(), ["one", "two"]);
        assert!(pending.drain().is_empty(), "drained");
        assert!(!pending.take(log("four"), 2), "room again once drained");
    }

    #[test]
    fn a_batch_that_was_not_stored_goes_before_the_next_within_the_bound() {
        let line = |task: &str, text: &str| LogLine {
            task_id: task.into(),
            lease_token: 1,
            step: 1,
            stream: db::LogStream::Stdout,
            line: text.into(),
            at: 0,
        };
        let percent = |task: &str, percent: u8| ProgressUpdate {
            task_id: task.into(),
            lease_token: 1,
            step: 1,
            attempt: 1,
            percent,
        };
        let failed = Batch {
            updates: vec![percent("a", 10), percent("b", 20)],
            logs: vec![line("a", "1"), line("a", "2")],
            estimates: vec![],
        };
        let newer =
            Batch { updates: vec![percent("a", 30)], logs: vec![line("a", "3"), line("a", "4")], estimates: vec![] };
        let (merged, dropped) = failed.before(newer, 3);
        let texts: Vec<&str> = merged.logs.iter().map(|l| l.line.as_str()).collect();
        assert_eq!((texts, dropped), (vec!["1", "2", "3"], 1), "older lines first; the newest over the bound dropped");
        let percents: Vec<(&str, u8)> = merged.updates.iter().map(|u| (u.task_id.as_str(), u.percent)).collect();
        assert_eq!(percents, [("a", 30), ("b", 20)], "a newer percent of the same step wins");
    }
}
