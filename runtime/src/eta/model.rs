//! The shared ETA model: the pure `estimator` behind a snapshot that estimates read without
//! waiting, and one learner thread that changes it. Learning (training on the stored
//! history at start, and each completed task) never runs on an actor's thread and never
//! makes an estimate wait: the learner applies what it is taught to a copy of the
//! estimator and swaps the copy in, and readers estimate on the snapshot they took (an
//! `Arc`, cloned under a lock that is only ever held to swap a pointer).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{mpsc, Arc, PoisonError, RwLock};

use db::{ProgressMark, StepRecord, StepRunRecord, StepStatus, StoredTask};
use estimator::{CompletedTask, Estimator, Observation, ProgressSample, StepRun, TaskPlan};
use tokio::sync::oneshot;

use super::step_key;
use crate::event::{Eta, StepEta};

/// A finished task's step runs by step order.
type StepsByOrder<'a> = BTreeMap<u32, &'a StepRunRecord>;

/// The estimator in use, replaced whole by the learner.
type Current = RwLock<Arc<Estimator>>;

/// How the learner takes runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Teach {
    /// Forget everything and learn the runs: the stored history, at start.
    Train,
    /// Learn the runs too: a task that just completed.
    Learn,
}

/// Step runs for the learner; `done` hears how many tasks it learned from once estimates
/// use them.
struct Lesson {
    teach: Teach,
    runs: Vec<StepRunRecord>,
    done: oneshot::Sender<usize>,
}

/// The shared estimator and its learner.
pub(crate) struct EtaModel {
    current: Arc<Current>,
    /// Unbounded, yet it cannot grow without limit: it holds the training at start and one
    /// lesson per completing task, whose actor waits for it to be learned.
    lessons: mpsc::Sender<Lesson>,
}

impl EtaModel {
    /// A cold model and its learner thread, which ends when the model is dropped.
    pub fn start() -> EtaModel {
        let current = Arc::new(Current::default());
        let (lessons, inbox) = mpsc::channel();
        let learner = Arc::clone(&current);
        std::thread::Builder::new()
            .name("stepwise-learner".into())
            .spawn(move || learn(&learner, &inbox))
            .expect("the operating system starts the estimator's learner thread");
        EtaModel { current, lessons }
    }

    /// Replaces what is known with what `runs` (oldest first: the step runs of completed
    /// tasks, as stored) teach. Resolves, once estimates use it, to the tasks learned from.
    pub fn train(&self, runs: Vec<StepRunRecord>) -> impl Future<Output = usize> + 'static {
        self.teach(Teach::Train, runs)
    }

    /// Learns from a task that just completed, from its step runs as stored: the same data
    /// training reads after a restart, so a restart does not change what is known.
    /// Resolves once estimates use it.
    pub fn learn(&self, runs: Vec<StepRunRecord>) -> impl Future<Output = ()> + 'static {
        let learned = self.teach(Teach::Learn, runs);
        async move {
            learned.await;
        }
    }

    fn teach(&self, teach: Teach, runs: Vec<StepRunRecord>) -> impl Future<Output = usize> + 'static {
        let (done, learned) = oneshot::channel();
        // Fails only if the learner died (a panic in the estimator): then nothing is learned
        // any more, and the answer below says so at once rather than never.
        let _ = self.lessons.send(Lesson { teach, runs, done });
        async move { learned.await.unwrap_or(0) }
    }

    /// The ETA of a live task whose running step has `running_ms` of work so far and the
    /// given progress samples.
    pub fn estimate(&self, task: &StoredTask, running_ms: i64, samples: &[ProgressMark]) -> Option<Eta> {
        let counted: Vec<&StepRecord> = task.steps.iter().filter(|s| s.status != StepStatus::Skipped).collect();
        let plan = TaskPlan {
            complexity: task.task.complexity,
            steps: counted.iter().map(|s| step_key(s)).collect(),
            hints_s: counted.iter().map(|s| s.estimate_ms.map(|ms| ms as f64 / 1000.0)).collect(),
        };
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
        let estimate = snapshot(&self.current).estimate(&plan, &observation).ok()?;
        // The estimator lists the remaining steps in plan order, so they pair up one to one.
        let steps = remaining
            .iter()
            .zip(&estimate.steps)
            .map(|(step, expected)| StepEta { step: step.order, expected_s: expected.expected_s })
            .collect();
        Some(Eta { seconds: estimate.eta_seconds, range: estimate.eta_range, confidence: estimate.confidence, steps })
    }
}

/// The estimator in use now; later learning does not change it.
fn snapshot(current: &Current) -> Arc<Estimator> {
    Arc::clone(&current.read().unwrap_or_else(PoisonError::into_inner))
}

/// The learner thread: takes every lesson waiting, applies them in order to one copy of the
/// estimator, swaps the copy in and then answers each, so a burst of completions costs one
/// copy.
fn learn(current: &Current, inbox: &mpsc::Receiver<Lesson>) {
    while let Ok(first) = inbox.recv() {
        let lessons: Vec<Lesson> = std::iter::once(first).chain(inbox.try_iter()).collect();
        let mut estimator = Estimator::clone(&snapshot(current));
        let learned: Vec<usize> = lessons.iter().map(|lesson| apply(&mut estimator, lesson)).collect();
        *current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(estimator);
        for (lesson, tasks) in lessons.into_iter().zip(learned) {
            // The asker may have stopped waiting (its actor stopped); the lesson stands.
            let _ = lesson.done.send(tasks);
        }
    }
}

/// Applies one lesson; returns the tasks learned from.
fn apply(estimator: &mut Estimator, lesson: &Lesson) -> usize {
    if lesson.teach == Teach::Train {
        *estimator = Estimator::default();
    }
    // A task of zero-length steps teaches nothing; the estimator refuses it, rightly.
    completed_tasks(&lesson.runs).iter().filter(|task| estimator.record_task(task).is_ok()).count()
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
    use crate::machine::fixtures::{started, PLAIN};

    /// The stored runs of a completed task of two steps that took `durations_ms`.
    fn runs(task: &str, finished_at: i64, durations_ms: [i64; 2]) -> Vec<StepRunRecord> {
        (1..)
            .zip(durations_ms)
            .map(|(step, duration_ms)| StepRunRecord {
                task_id: task.into(),
                step,
                attempt: 1,
                step_key: format!("exec:Step {step}"),
                complexity: 1,
                duration_ms,
                finished_at,
                progress: Vec::new(),
            })
            .collect()
    }

    #[tokio::test]
    async fn what_is_learned_is_in_the_estimates_once_learning_resolves() {
        let model = EtaModel::start();
        let live = started(&[PLAIN, PLAIN]).stored;
        let estimate = |model: &EtaModel| model.estimate(&live, 0, &[]).expect("an estimate").seconds;
        let cold = estimate(&model);
        for n in 0..5 {
            model.learn(runs(&format!("t{n}"), n, [60_000, 120_000])).await;
        }
        let learned = estimate(&model);
        assert!((learned - 180.0).abs() < (cold - 180.0).abs(), "learned {learned:.1} s, cold {cold:.1} s");

        assert_eq!(model.train(Vec::new()).await, 0, "nothing to learn from");
        assert_eq!(estimate(&model), cold, "training replaces what was learned");
        let history: Vec<StepRunRecord> = (0..5).flat_map(|n| runs(&format!("t{n}"), n, [60_000, 120_000])).collect();
        assert_eq!(model.train(history).await, 5, "one per task, not per run");
        assert_eq!(estimate(&model), learned, "the same runs teach the same, learned one by one or trained");
    }
}
