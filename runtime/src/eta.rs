//! ETAs for live tasks: the bridge between the runtime's records and the pure `estimator`.
//! History comes from the persisted step runs (so it survives restarts), the live part from
//! the task actor's state, and every completed task is learned from.

use std::collections::BTreeMap;
use std::sync::{PoisonError, RwLock};

use db::{StepRecord, StepRunRecord, StepStatus, StoredTask};
use estimator::{CompletedTask, Estimator, Observation, ProgressSample, StepRun, TaskPlan};

pub use estimator::Confidence;

/// How long a task still needs, in work seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Eta {
    /// Most likely seconds remaining (the median).
    pub seconds: f64,
    /// 80% range of the seconds remaining (p10, p90).
    pub range: (f64, f64),
    /// How far to trust it.
    pub confidence: Confidence,
}

/// A finished task's step runs by step order.
type StepsByOrder<'a> = BTreeMap<u32, &'a StepRunRecord>;

/// The estimator key of a step: its kind and name.
pub fn step_key(step: &StepRecord) -> String {
    format!("{}:{}", step.kind, step.name)
}

/// The shared estimator.
#[derive(Default)]
pub(crate) struct EtaModel {
    estimator: RwLock<Estimator>,
}

impl EtaModel {
    /// Replaces the estimator with one trained on `runs` (oldest first), grouped by task in
    /// the order the tasks finished.
    pub fn train(&self, runs: &[StepRunRecord]) -> usize {
        // Keyed by (when the task finished, its id); each holds its complexity and its runs
        // by step order.
        let mut tasks: BTreeMap<(i64, &str), (u32, StepsByOrder)> = BTreeMap::new();
        let mut finished: BTreeMap<&str, i64> = BTreeMap::new();
        for run in runs {
            let last = finished.entry(&run.task_id).or_insert(run.finished_at);
            *last = (*last).max(run.finished_at);
        }
        for run in runs {
            let entry = tasks
                .entry((finished[run.task_id.as_str()], &run.task_id))
                .or_insert((run.complexity, BTreeMap::new()));
            // A retried step keeps its last attempt.
            entry.1.insert(run.step, run);
        }
        let mut estimator = Estimator::default();
        let mut learned = 0;
        for (complexity, steps) in tasks.into_values() {
            let steps = steps.into_values().map(|r| step_run(&r.step_key, r.duration_ms)).collect();
            if estimator.record_task(&CompletedTask { complexity, steps }).is_ok() {
                learned += 1;
            }
        }
        *self.estimator.write().unwrap_or_else(PoisonError::into_inner) = estimator;
        learned
    }

    /// Learns from a task that completed.
    pub fn learn(&self, task: &StoredTask) {
        let steps: Vec<StepRun> = task
            .steps
            .iter()
            .filter(|s| s.status == StepStatus::Completed)
            .map(|s| step_run(&step_key(s), s.work_ms))
            .collect();
        let completed = CompletedTask { complexity: task.task.complexity, steps };
        // A task of zero-length steps teaches nothing; the estimator refuses it, rightly.
        let _ = self.estimator.write().unwrap_or_else(PoisonError::into_inner).record_task(&completed);
    }

    /// The ETA of a live task whose running step has `running_ms` of work so far and the
    /// given progress samples.
    pub fn estimate(&self, task: &StoredTask, running_ms: i64, samples: &[ProgressSample]) -> Option<Eta> {
        let counted: Vec<&StepRecord> = task.steps.iter().filter(|s| s.status != StepStatus::Skipped).collect();
        let plan = TaskPlan { complexity: task.task.complexity, steps: counted.iter().map(|s| step_key(s)).collect() };
        let completed_s = counted
            .iter()
            .take_while(|s| s.status == StepStatus::Completed)
            .map(|s| (s.work_ms.max(1) as f64) / 1000.0)
            .collect();
        let observation = Observation {
            completed_s,
            running_elapsed_s: running_ms.max(0) as f64 / 1000.0,
            progress: samples.to_vec(),
        };
        let estimate =
            self.estimator.read().unwrap_or_else(PoisonError::into_inner).estimate(&plan, &observation).ok()?;
        Some(Eta { seconds: estimate.eta_seconds, range: estimate.eta_range, confidence: estimate.confidence })
    }
}

fn step_run(key: &str, duration_ms: i64) -> StepRun {
    StepRun { key: key.to_owned(), duration_s: duration_ms.max(1) as f64 / 1000.0, progress: Vec::new() }
}
