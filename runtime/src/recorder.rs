//! The `ProgressRecorder`: a hub subscriber that persists what is not a state transition.
//! Percent updates are coalesced (latest per step) and log lines batched, and both are
//! flushed in one transaction per interval, so thousands of updates per second cost a
//! handful of transactions.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use db::{Database, LogLine, ProgressUpdate};

use crate::clock::Clock;
use crate::event::{EventKind, TaskEvent};
use crate::store::blocking;

/// Longest log line kept; longer lines are cut (the rest would only bloat the database).
const MAX_LOG_LINE_BYTES: usize = 8 * 1024;

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
}

/// Writes everything pending now and replies when it is committed.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Flush;

/// Persists coalesced progress and batched logs.
pub struct ProgressRecorder {
    db: Arc<Database>,
    clock: Arc<dyn Clock>,
    interval: Duration,
    stats: Arc<RecorderStats>,
    pending: HashMap<(Arc<str>, u32), ProgressUpdate>,
    logs: Vec<LogLine>,
}

impl ProgressRecorder {
    /// A recorder flushing every `interval`.
    pub fn new(db: Arc<Database>, clock: Arc<dyn Clock>, interval: Duration, stats: Arc<RecorderStats>) -> Self {
        ProgressRecorder { db, clock, interval, stats, pending: HashMap::new(), logs: Vec::new() }
    }

    /// Writes what is pending. Callers hold the actor's mailbox until it is committed, so
    /// events arriving meanwhile queue and coalesce into the next round.
    fn flush(&mut self) -> ResponseActFuture<Self, ()> {
        if self.pending.is_empty() && self.logs.is_empty() {
            return Box::pin(actix::fut::ready(()));
        }
        let updates: Vec<ProgressUpdate> = self.pending.drain().map(|(_, u)| u).collect();
        let logs = std::mem::take(&mut self.logs);
        let at = self.clock.now_ms();
        let work = blocking(&self.db, move |conn| db::record_progress(conn, &updates, &logs, at));
        Box::pin(actix::fut::wrap_future(work).map(|outcome, act: &mut ProgressRecorder, _| match outcome {
            Ok(outcome) => {
                act.stats.flushes.fetch_add(1, Ordering::Relaxed);
                act.stats.rows_written.fetch_add(outcome.rows_written as u64, Ordering::Relaxed);
                for task in outcome.lost {
                    tracing::warn!(task = %task, "progress not recorded: the task's lease moved to another server");
                }
            }
            Err(error) => {
                tracing::error!(%error, "recording progress failed; the next transition rewrites the step state")
            }
        }))
    }
}

impl Actor for ProgressRecorder {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.interval, |act, ctx| {
            let flush = act.flush();
            ctx.wait(flush);
        });
    }
}

impl Handler<TaskEvent> for ProgressRecorder {
    type Result = ();
    fn handle(&mut self, event: TaskEvent, _: &mut Self::Context) {
        match event.kind {
            EventKind::Progress { step, attempt, percent, .. } => {
                self.stats.progress_events.fetch_add(1, Ordering::Relaxed);
                let update = ProgressUpdate {
                    task_id: event.task_id.to_string(),
                    lease_token: event.lease_token,
                    step,
                    attempt,
                    percent,
                };
                self.pending.insert((event.task_id, step), update);
            }
            EventKind::Log { step, stream, line } => {
                self.stats.log_lines.fetch_add(1, Ordering::Relaxed);
                self.logs.push(LogLine {
                    task_id: event.task_id.to_string(),
                    lease_token: event.lease_token,
                    step,
                    stream,
                    line: truncate(&line, MAX_LOG_LINE_BYTES).to_owned(),
                    at: event.at,
                });
            }
            _ => {}
        }
    }
}

impl Handler<Flush> for ProgressRecorder {
    type Result = AtomicResponse<Self, ()>;
    fn handle(&mut self, _: Flush, _: &mut Self::Context) -> Self::Result {
        AtomicResponse::new(self.flush())
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
