//! ETAs for live tasks: the bridge between the runtime's records and the pure `estimator`.
//! History comes from the persisted step runs (so it survives restarts), the live part from
//! the task actor's state, and every completed task is learned from.

use std::collections::BTreeMap;
use std::sync::{PoisonError, RwLock};

use db::{ProgressMark, StepRecord, StepRunRecord, StepStatus, StoredTask};
use estimator::{CompletedTask, Estimator, Observation, ProgressSample, StepRun, TaskPlan};

pub use estimator::Confidence;

/// How long a task still needs, in work seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Eta {
    /// Most likely seconds remaining (the median).
    pub seconds: f64,
    /// 80% range of the seconds remaining (p10, p90).
    pub range: (f64, f64),
    /// How far to trust it.
    pub confidence: Confidence,
    /// Each step still to finish, the one the task is at first (running, paused or waiting
    /// for approval), with the work it is expected to need. Skipped steps are not in it.
    pub steps: Vec<StepEta>,
}

impl Eta {
    /// This estimate after `work_s` more seconds of work had it learned nothing: the total,
    /// its range and the first step's rest count down, as clients count them. Work only
    /// grows while that step runs.
    pub(crate) fn counted_down(&self, work_s: f64) -> Eta {
        let less = |seconds: f64| (seconds - work_s).max(0.0);
        let mut steps = self.steps.clone();
        if let Some(running) = steps.first_mut() {
            running.expected_s = less(running.expected_s);
        }
        Eta {
            seconds: less(self.seconds),
            range: (less(self.range.0), less(self.range.1)),
            confidence: self.confidence,
            steps,
        }
    }

    /// Whether a person would see a difference from `old`: another confidence, another set
    /// of steps to go, or a figure (the total, its range, a step) off by a second and by 5%.
    pub(crate) fn moved_from(&self, old: &Eta) -> bool {
        let apart = |a: f64, b: f64| (a - b).abs() >= (0.05 * a.max(b)).max(1.0);
        apart(self.seconds, old.seconds)
            || apart(self.range.0, old.range.0)
            || apart(self.range.1, old.range.1)
            || self.confidence != old.confidence
            || self.steps.len() != old.steps.len()
            || self.steps.iter().zip(&old.steps).any(|(a, b)| a.step != b.step || apart(a.expected_s, b.expected_s))
    }
}

/// How much work one step that is not done yet is expected to need.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepEta {
    /// The step's order in its task.
    pub step: u32,
    /// Expected (mean) work seconds still to go: for a running step its rest, for a step
    /// not started its whole duration.
    pub expected_s: f64,
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
    /// Replaces the estimator with one trained on `runs` (oldest first): the step runs of
    /// completed tasks, as stored.
    pub fn train(&self, runs: &[StepRunRecord]) -> usize {
        let mut estimator = Estimator::default();
        let learned = completed_tasks(runs).iter().filter(|task| estimator.record_task(task).is_ok()).count();
        *self.estimator.write().unwrap_or_else(PoisonError::into_inner) = estimator;
        learned
    }

    /// Learns from a task that just completed, from its step runs as stored: the same data
    /// training reads after a restart, so a restart does not change what is known.
    pub fn learn(&self, runs: &[StepRunRecord]) {
        let mut estimator = self.estimator.write().unwrap_or_else(PoisonError::into_inner);
        for task in completed_tasks(runs) {
            // A task of zero-length steps teaches nothing; the estimator refuses it, rightly.
            let _ = estimator.record_task(&task);
        }
    }

    /// The ETA of a live task whose running step has `running_ms` of work so far and the
    /// given progress samples.
    pub fn estimate(&self, task: &StoredTask, running_ms: i64, samples: &[ProgressMark]) -> Option<Eta> {
        let counted: Vec<&StepRecord> = task.steps.iter().filter(|s| s.status != StepStatus::Skipped).collect();
        let plan = TaskPlan { complexity: task.task.complexity, steps: counted.iter().map(|s| step_key(s)).collect() };
        let completed_s: Vec<f64> = counted
            .iter()
            .take_while(|s| s.status == StepStatus::Completed)
            .map(|s| (s.work_ms.max(1) as f64) / 1000.0)
            .collect();
        let remaining = &counted[completed_s.len()..];
        let observation = Observation {
            completed_s,
            running_elapsed_s: running_ms.max(0) as f64 / 1000.0,
            progress: samples.iter().map(sample).collect(),
        };
        let estimate =
            self.estimator.read().unwrap_or_else(PoisonError::into_inner).estimate(&plan, &observation).ok()?;
        // The estimator lists the remaining steps in plan order, so they pair up one to one.
        let steps = remaining
            .iter()
            .zip(&estimate.steps)
            .map(|(step, expected)| StepEta { step: step.order, expected_s: expected.expected_s })
            .collect();
        Some(Eta { seconds: estimate.eta_seconds, range: estimate.eta_range, confidence: estimate.confidence, steps })
    }
}

/// `runs` (oldest first) grouped into tasks, in the order the tasks finished.
fn completed_tasks(runs: &[StepRunRecord]) -> Vec<CompletedTask> {
    // Keyed by (when the task finished, its id); each holds its complexity and its runs by
    // step order.
    let mut tasks: BTreeMap<(i64, &str), (u32, StepsByOrder)> = BTreeMap::new();
    let mut finished: BTreeMap<&str, i64> = BTreeMap::new();
    for run in runs {
        let last = finished.entry(&run.task_id).or_insert(run.finished_at);
        *last = (*last).max(run.finished_at);
    }
    for run in runs {
        let entry =
            tasks.entry((finished[run.task_id.as_str()], &run.task_id)).or_insert((run.complexity, BTreeMap::new()));
        // A retried step keeps its last attempt.
        entry.1.insert(run.step, run);
    }
    tasks
        .into_values()
        .map(|(complexity, steps)| CompletedTask {
            complexity,
            steps: steps.into_values().map(|r| step_run(&r.step_key, r.duration_ms, &r.progress)).collect(),
        })
        .collect()
}

fn step_run(key: &str, duration_ms: i64, progress: &[ProgressMark]) -> StepRun {
    let progress = progress.iter().map(sample).collect();
    StepRun { key: key.to_owned(), duration_s: duration_ms.max(1) as f64 / 1000.0, progress }
}

fn sample(mark: &ProgressMark) -> ProgressSample {
    ProgressSample {
        elapsed_s: mark.elapsed_ms.max(0) as f64 / 1000.0,
        fraction: f64::from(mark.percent.min(100)) / 100.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eta(seconds: f64, confidence: Confidence, steps: &[(u32, f64)]) -> Eta {
        let steps = steps.iter().map(|&(step, expected_s)| StepEta { step, expected_s }).collect();
        Eta { seconds, range: (seconds / 2.0, seconds * 2.0), confidence, steps }
    }

    #[test]
    fn an_eta_moved_when_a_person_would_see_it() {
        use Confidence::{High, Low};
        let old = eta(100.0, Low, &[(2, 40.0), (3, 60.0)]);
        let with_range = |low: f64, high: f64| Eta { range: (low, high), ..old.clone() };
        let cases = [
            ("the same", eta(100.0, Low, &[(2, 40.0), (3, 60.0)]), false),
            ("under 5% anywhere", eta(104.0, Low, &[(2, 41.5), (3, 62.5)]), false),
            ("the total alone under 5%", Eta { seconds: 104.0, ..old.clone() }, false),
            ("the total by 5%", Eta { seconds: 106.0, ..old.clone() }, true),
            ("the low end by 5%", with_range(47.0, 200.0), true),
            ("the high end by 5%", with_range(50.0, 211.0), true),
            ("the confidence", eta(100.0, High, &[(2, 40.0), (3, 60.0)]), true),
            ("one step by 5%", eta(100.0, Low, &[(2, 37.9), (3, 60.0)]), true),
            ("a step fewer", eta(100.0, Low, &[(3, 60.0)]), true),
            ("another step", eta(100.0, Low, &[(2, 40.0), (4, 60.0)]), true),
        ];
        for (what, new, moved) in cases {
            assert_eq!(new.moved_from(&old), moved, "{what}");
        }
        // Short figures need a whole second.
        let short = eta(10.0, Low, &[(1, 10.0)]);
        let step_one = |expected_s| vec![StepEta { step: 1, expected_s }];
        assert!(!Eta { seconds: 10.9, steps: step_one(10.9), ..short.clone() }.moved_from(&short));
        assert!(Eta { seconds: 11.0, ..short.clone() }.moved_from(&short));
        assert!(Eta { steps: step_one(9.0), ..short.clone() }.moved_from(&short));
    }

    #[test]
    fn counting_down_takes_work_off_the_total_its_range_and_the_running_step_only() {
        let counted = eta(100.0, Confidence::Medium, &[(2, 30.0), (3, 60.0)]).counted_down(40.0);
        assert_eq!(counted.seconds, 60.0);
        assert_eq!(counted.range, (10.0, 160.0));
        assert_eq!(counted.steps, [StepEta { step: 2, expected_s: 0.0 }, StepEta { step: 3, expected_s: 60.0 }]);
        assert_eq!(counted.confidence, Confidence::Medium);
        assert_eq!(eta(5.0, Confidence::Low, &[]).counted_down(9.0).seconds, 0.0, "never below zero");
    }
}
