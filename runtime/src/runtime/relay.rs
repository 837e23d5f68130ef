//! Following the tasks other servers run (PostgreSQL). A task's events go to the hub of the
//! server that runs it; a subscriber here to such a task (a WebSocket on this server) hears
//! of them through the cluster's doorbell. One reader per server, not one per subscriber,
//! reads what changed at each ring and publishes it to this server's hub, to the
//! subscribers of those tasks and their owners only (the recorder and the notifiers of the
//! server running a task serve it). So a subscriber handles a task another server runs as
//! one this server runs: its logged events with their seqs, in order, then its new log
//! lines, and its running steps' percents and the estimate its server stored, each when it
//! moved. At most one read is in flight; rings that come meanwhile are read together next.
//!
//! The reader takes a task up when someone subscribes to it here (its log lines from the
//! moment they subscribed), or when a ring names it and its owner has subscribers here (its
//! lines from then); it lets the task go once nobody here follows it or this server runs
//! it. Taking a task up, it publishes the newest logged event again (not the older ones,
//! which could be thousands): a subscriber whose snapshot is older sees the gap and reads
//! the missing events from the database itself.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use db::{Ring, StoredTask};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::mpsc;

use super::Runtime;
use crate::event::{Eta, EventKind};
use crate::hub::{Followers, Relayed, WhoFollows};
use crate::machine::task_percent;
use crate::store::blocking;
use crate::{RuntimeError, StepStatus, TaskEvent};

/// Logged events, or log lines, of one task per query; a task with more is read on at once.
const ROWS_PER_READ: usize = 5_000;

/// The tasks of one owner looked at when rings may have been missed: as many as the
/// newest a WebSocket following all of an owner's tasks starts with.
const NEWEST_PER_OWNER: usize = 50;

/// How long after a failed read the reader tries again, if no ring comes first.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Owners remembered per task (an owner never changes); forgotten all at once past this.
const OWNERS_REMEMBERED: usize = 100_000;

/// A task another server runs that someone here follows: what was published of it.
struct Followed {
    /// The newest logged event published.
    seq: i64,
    /// The newest log line published (or the newest when the task was taken up).
    log_seq: i64,
    /// Per running step, the percent published.
    percents: HashMap<u32, u8>,
    /// The estimate published.
    eta: Option<Eta>,
}

/// What to read on the next pass.
#[derive(Default, Clone)]
struct Wanted {
    ids: HashSet<Arc<str>>,
    /// Tasks subscribed to here, each with where its log lines stood when someone
    /// subscribed: the lines after that are theirs, whenever the reader gets to it.
    asked: HashMap<Arc<str>, i64>,
    /// Rings may have been missed: every followed task, and each followed owner's newest.
    everything: bool,
}

impl Wanted {
    fn ring(&mut self, ring: &Ring) {
        match ring {
            Ring::Tasks(ids) => self.ids.extend(ids.iter().map(|id| Arc::from(id.as_str()))),
            Ring::Everything => self.everything = true,
            // Neither logs anything: a task's start does, and rings for it.
            Ring::Queue | Ring::Released => {}
        }
    }

    fn ask(&mut self, id: Arc<str>, log_seq: i64) {
        let from = self.asked.entry(Arc::clone(&id)).or_insert(log_seq);
        *from = (*from).min(log_seq);
        self.ids.insert(id);
    }

    fn heard(&mut self, heard: Result<Arc<Ring>, RecvError>) -> bool {
        match heard {
            Ok(ring) => self.ring(&ring),
            Err(RecvError::Lagged(_)) => self.everything = true,
            Err(RecvError::Closed) => return false,
        }
        true
    }
}

/// The reader's memory.
#[derive(Default)]
struct Relay {
    followed: HashMap<Arc<str>, Followed>,
    owners: HashMap<Arc<str>, Arc<str>>,
}

impl Runtime {
    /// Starts the reader, on PostgreSQL: `asked` brings the tasks subscribed to here.
    pub(super) fn relay(&self, mut asked: mpsc::UnboundedReceiver<(Arc<str>, i64)>) {
        if !matches!(self.shared.db.backend(), db::Backend::Postgres(_)) {
            return;
        }
        let runtime = self.clone();
        let mut rings = self.rings();
        actix::spawn(async move {
            let mut relay = Relay::default();
            // What a failed pass did not read, tried again with the next.
            let mut unread: Option<Wanted> = None;
            loop {
                let mut wanted = unread.take().unwrap_or_default();
                let retrying = !wanted.ids.is_empty() || !wanted.asked.is_empty() || wanted.everything;
                tokio::select! {
                    heard = rings.recv() => if !wanted.heard(heard) { return },
                    subscribed = asked.recv() => match subscribed {
                        Some((id, log_seq)) => wanted.ask(id, log_seq),
                        None => return,
                    },
                    () = tokio::time::sleep(RETRY_AFTER), if retrying => {}
                }
                // Whatever else came meanwhile is read in the same pass.
                loop {
                    match rings.try_recv() {
                        Ok(ring) => wanted.ring(&ring),
                        Err(TryRecvError::Lagged(_)) => wanted.everything = true,
                        Err(TryRecvError::Empty | TryRecvError::Closed) => break,
                    }
                }
                while let Ok((id, log_seq)) = asked.try_recv() {
                    wanted.ask(id, log_seq);
                }
                if let Err(error) = relay.pass(&runtime, wanted.clone()).await {
                    // Nothing was marked published: all of it is read again.
                    tracing::warn!(%error, retry_in = ?RETRY_AFTER, "could not read other servers' tasks for this server's subscribers");
                    unread = Some(wanted);
                }
            }
        });
    }

    /// Asks the reader to take `topic` up, when it is a task another server runs (an
    /// owner's tasks are taken up as rings name them), from where its log lines stand now.
    pub(super) async fn follow(&self, topic: &crate::Topic) {
        let crate::Topic::Task(task_id) = topic else { return };
        if !matches!(self.shared.db.backend(), db::Backend::Postgres(_)) || self.runs_here(task_id) {
            return;
        }
        let ids = vec![task_id.to_string()];
        match blocking(&self.shared.db, move |conn| db::log_positions(conn, &ids)).await {
            // A missing task has nothing to follow; the subscriber finds that out itself.
            // The reader is gone only when the runtime is.
            Ok(positions) => {
                if let Some(&log_seq) = positions.get(&**task_id) {
                    let _ = self.follow.send((Arc::clone(task_id), log_seq));
                }
            }
            // The task is still taken up when a ring names it, its lines from then on.
            Err(error) => {
                tracing::warn!(%error, task_id = %task_id, "could not note where a followed task's log stands")
            }
        }
    }
}

impl Relay {
    /// Reads what changed in the tasks `wanted` names that someone here follows and another
    /// server runs, and publishes it.
    async fn pass(&mut self, runtime: &Runtime, wanted: Wanted) -> Result<(), RuntimeError> {
        let followers = runtime.shared.hub.send(WhoFollows).await.map_err(|_| RuntimeError::ShuttingDown)?;
        let owners = &self.owners;
        let follows = |id: &Arc<str>| {
            followers.tasks.contains(id) || owners.get(id).is_some_and(|owner| followers.owners.contains(owner))
        };
        self.followed.retain(|id, _| follows(id) && !runtime.runs_here(id));
        let mut ids: HashSet<Arc<str>> = wanted
            .ids
            .into_iter()
            // A task whose owner is not known yet is read if anyone here follows an owner.
            .filter(|id| follows(id) || (!owners.contains_key(id) && !followers.owners.is_empty()))
            .collect();
        if wanted.everything {
            ids.extend(self.followed.keys().cloned());
            ids.extend(newest_of(runtime, &followers).await?);
        }
        let ids: Vec<String> = ids.into_iter().filter(|id| !runtime.runs_here(id)).map(|id| id.to_string()).collect();
        if ids.is_empty() {
            return Ok(());
        }
        let (tasks, log_positions) = blocking(&runtime.shared.db, move |conn| {
            let tasks = db::load_tasks(conn, &ids)?;
            let positions = db::log_positions(conn, &ids)?;
            Ok((tasks, positions))
        })
        .await?;
        if self.owners.len() > OWNERS_REMEMBERED {
            self.owners.clear();
        }
        for task in &tasks {
            self.owners.insert(task.task.id.as_str().into(), task.task.owner.as_str().into());
        }
        let tasks: Vec<StoredTask> = tasks
            .into_iter()
            .filter(|task| {
                followers.tasks.contains(task.task.id.as_str()) || followers.owners.contains(task.task.owner.as_str())
            })
            .collect();
        for task in &tasks {
            let log_seq = match wanted.asked.get(task.task.id.as_str()) {
                Some(&asked) => asked,
                None => log_positions.get(&task.task.id).copied().unwrap_or(0),
            };
            self.followed.entry(task.task.id.as_str().into()).or_insert_with(|| Followed {
                seq: (task.task.last_seq - 1).max(0),
                log_seq,
                percents: HashMap::new(),
                eta: None,
            });
        }
        let (mut logged, mut lines) = self.read_news(runtime, &tasks, &log_positions).await?;
        let mut estimates = runtime.stored_estimates(&tasks).await?;
        let now = runtime.shared.clock.now_ms();
        let mut events = Vec::new();
        for task in &tasks {
            let id: Arc<str> = task.task.id.as_str().into();
            let Some(followed) = self.followed.get_mut(&id) else { continue };
            let event = |seq: i64, at: i64, kind: EventKind| TaskEvent {
                task_id: Arc::clone(&id),
                owner: task.task.owner.as_str().into(),
                seq,
                lease_token: task.task.lease_token,
                at,
                kind,
            };
            for record in logged.remove(&task.task.id).unwrap_or_default() {
                // A row that cannot be read is left out: a subscriber sees the gap and
                // reads the rows from the database.
                if let Some(kind) = EventKind::from_stored(&record.kind, record.step, record.detail.as_deref()) {
                    events.push(event(record.seq, record.created_at, kind));
                }
                followed.seq = record.seq;
            }
            // Transient events carry the seq of the newest logged event, as live ones do.
            let seq = followed.seq.max(task.task.last_seq);
            for line in lines.remove(&task.task.id).unwrap_or_default() {
                followed.log_seq = line.seq;
                let kind = EventKind::Log { step: line.step, stream: line.stream, line: line.line.into() };
                events.push(event(seq, line.created_at, kind));
            }
            let task_percent = task_percent(task);
            for step in task.steps.iter().filter(|step| step.status == StepStatus::Running) {
                if followed.percents.insert(step.order, step.progress) != Some(step.progress) {
                    let kind = EventKind::Progress {
                        step: step.order,
                        attempt: step.attempts,
                        percent: step.progress,
                        task_percent,
                    };
                    events.push(event(seq, now, kind));
                }
            }
            if let Some(eta) = estimates.remove(&task.task.id) {
                if followed.eta.as_ref().is_none_or(|sent| eta.moved_from(sent)) {
                    followed.eta = Some(eta.clone());
                    events.push(event(seq, now, EventKind::EtaUpdated(eta)));
                }
            }
        }
        if !events.is_empty() {
            runtime.shared.hub.send(Relayed(events)).await.map_err(|_| RuntimeError::ShuttingDown)?;
        }
        Ok(())
    }

    /// The logged events and log lines of `tasks` after those published, up to what each
    /// task's row says it has (its percents, read with it, come after them), by task.
    async fn read_news(
        &self,
        runtime: &Runtime,
        tasks: &[StoredTask],
        log_positions: &HashMap<String, i64>,
    ) -> Result<(HashMap<String, Vec<db::EventRecord>>, HashMap<String, Vec<db::LogRecord>>), RuntimeError> {
        // (task, events after, events up to, lines after, lines up to) of each task with news.
        let ranges: Vec<(String, i64, i64, i64, i64)> = tasks
            .iter()
            .filter_map(|task| {
                let followed = self.followed.get(task.task.id.as_str())?;
                let log_seq = log_positions.get(&task.task.id).copied().unwrap_or(0);
                (task.task.last_seq > followed.seq || log_seq > followed.log_seq)
                    .then(|| (task.task.id.clone(), followed.seq, task.task.last_seq, followed.log_seq, log_seq))
            })
            .collect();
        if ranges.is_empty() {
            return Ok((HashMap::new(), HashMap::new()));
        }
        blocking(&runtime.shared.db, move |conn| {
            let (mut events, mut lines) = (HashMap::new(), HashMap::new());
            for (task_id, events_after, events_upto, lines_after, lines_upto) in ranges {
                let read = pages(events_after, events_upto, |after| {
                    let page = db::task_events_between(conn, &task_id, after, events_upto, ROWS_PER_READ)?;
                    Ok((page.last().map(|event| event.seq), page))
                })?;
                events.insert(task_id.clone(), read);
                let read = pages(lines_after, lines_upto, |after| {
                    let page = db::task_logs_between(conn, &task_id, after, lines_upto, ROWS_PER_READ)?;
                    Ok((page.last().map(|line| line.seq), page))
                })?;
                lines.insert(task_id, read);
            }
            Ok((events, lines))
        })
        .await
    }
}

/// The rows after `after` up to `upto`, read a page at a time by `read` (which answers a
/// page and the seq of its last row) until a page is short or reaches `upto`.
fn pages<R>(
    after: i64,
    upto: i64,
    mut read: impl FnMut(i64) -> Result<(Option<i64>, Vec<R>), db::DbError>,
) -> Result<Vec<R>, db::DbError> {
    let (mut rows, mut from) = (Vec::new(), after);
    while from < upto {
        let (last, page) = read(from)?;
        let full = page.len() == ROWS_PER_READ;
        rows.extend(page);
        match last {
            Some(last) if full => from = last,
            _ => break,
        }
    }
    Ok(rows)
}

/// The newest tasks of each owner followed here, for when rings may have been missed.
async fn newest_of(runtime: &Runtime, followers: &Followers) -> Result<Vec<Arc<str>>, RuntimeError> {
    let owners: Vec<String> = followers.owners.iter().map(|owner| owner.to_string()).collect();
    if owners.is_empty() {
        return Ok(Vec::new());
    }
    blocking(&runtime.shared.db, move |conn| {
        let mut ids = Vec::new();
        for owner in &owners {
            let page = db::list_tasks(conn, owner, None, None, NEWEST_PER_OWNER)?;
            ids.extend(page.tasks.into_iter().map(|task| Arc::from(task.id.as_str())));
        }
        Ok(ids)
    })
    .await
}
