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
use crate::policy::StepPolicy;

/// A finished task's step runs by step order.
type StepsByOrder<'a> = BTreeMap<u32, &'a StepRunRecord>;

/// What is known, replaced whole by the learner.
type Current = RwLock<Arc<Learned>>;

/// What the history teaches: the estimator's durations, and how often each step's attempts
/// fail (for the retries a step with a retry policy is expected to make).
#[derive(Debug, Clone, Default)]
struct Learned {
    estimator: Estimator,
    /// By step key: (attempts that failed, attempts in all) of the steps that completed.
    attempts: BTreeMap<String, (u64, u64)>,
}

/// The failure rate assumed of a step with no history, and how many attempts of evidence it
/// weighs: a plan that asks for retries expects some failures, and a few clean runs of the
/// step soon outweigh the guess.
const PRIOR_FAILURE_RATE: f64 = 0.1;
const PRIOR_ATTEMPTS: f64 = 2.0;
/// The highest failure rate counted: a step that nearly always fails would otherwise make
/// every retry look certain.
const MAX_FAILURE_RATE: f64 = 0.9;

impl Learned {
    /// The chance that one attempt of the step `key` fails.
    fn failure_rate(&self, key: &str) -> f64 {
        let (failed, all) = self.attempts.get(key).copied().unwrap_or((0, 0));
        let rate = (failed as f64 + PRIOR_FAILURE_RATE * PRIOR_ATTEMPTS) / (all as f64 + PRIOR_ATTEMPTS);
        rate.min(MAX_FAILURE_RATE)
    }
}

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
        let learned = snapshot(&self.current);
        let estimate = learned.estimator.estimate(&plan, &observation).ok()?;
        let mut eta = Eta {
            seconds: estimate.eta_seconds,
            range: estimate.eta_range,
            confidence: estimate.confidence,
            steps: Vec::with_capacity(remaining.len()),
        };
        // The estimator lists the remaining steps in plan order, so they pair up one to one.
        for (step, expected) in remaining.iter().zip(&estimate.steps) {
            // The step's own run counts its first try only; a retry policy adds the tries
            // its failures are expected to need.
            let whole_s = expected.expected_s + if in_progress(step) { running_ms.max(0) as f64 / 1000.0 } else { 0.0 };
            let retries_s = expected_retries_s(step, whole_s, learned.failure_rate(&step_key(step)));
            eta.seconds += retries_s;
            eta.range.1 += retries_s;
            eta.steps.push(StepEta { step: step.order, expected_s: expected.expected_s + retries_s });
        }
        Some(eta)
    }
}

/// Whether the step is the one in progress (its run so far is part of its duration).
fn in_progress(step: &StepRecord) -> bool {
    matches!(step.status, StepStatus::Running | StepStatus::Paused)
}

/// The seconds a step's retry policy is expected to add to its next try, each try of
/// `whole_s` failing with chance `failure_rate`: the later tries and their backoffs, each
/// weighed by the chance that every try before it failed.
fn expected_retries_s(step: &StepRecord, whole_s: f64, failure_rate: f64) -> f64 {
    let Some(retry) = StepPolicy::of(step).retry else { return 0.0 };
    // The try the estimate already counts: the one running, or the next to start.
    let counted = if in_progress(step) { step.attempts } else { step.attempts + 1 };
    let mut all_failed = 1.0;
    let mut expected = 0.0;
    for attempt in counted + 1..=retry.max_attempts {
        all_failed *= failure_rate;
        expected += all_failed * (whole_s + retry.backoff.before_attempt_ms(attempt) as f64 / 1000.0);
    }
    expected
}

/// What is known now; later learning does not change it.
fn snapshot(current: &Current) -> Arc<Learned> {
    Arc::clone(&current.read().unwrap_or_else(PoisonError::into_inner))
}

/// The learner thread: takes every lesson waiting, applies them in order to one copy of the
/// estimator, swaps the copy in and then answers each, so a burst of completions costs one
/// copy.
fn learn(current: &Current, inbox: &mpsc::Receiver<Lesson>) {
    while let Ok(first) = inbox.recv() {
        let lessons: Vec<Lesson> = std::iter::once(first).chain(inbox.try_iter()).collect();
        let mut known = Learned::clone(&snapshot(current));
        let learned: Vec<usize> = lessons.iter().map(|lesson| apply(&mut known, lesson)).collect();
        *current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(known);
        for (lesson, tasks) in lessons.into_iter().zip(learned) {
            // The asker may have stopped waiting (its actor stopped); the lesson stands.
            let _ = lesson.done.send(tasks);
        }
    }
}

/// Applies one lesson; returns the tasks learned from.
fn apply(known: &mut Learned, lesson: &Lesson) -> usize {
    if lesson.teach == Teach::Train {
        *known = Learned::default();
    }
    for run in &lesson.runs {
        // A step completes once per task run, in its `attempt`-th try.
        let (failed, all) = known.attempts.entry(run.step_key.clone()).or_default();
        *failed += u64::from(run.attempt.saturating_sub(1));
        *all += u64::from(run.attempt.max(1));
    }
    // A task of zero-length steps teaches nothing; the estimator refuses it, rightly.
    completed_tasks(&lesson.runs).iter().filter(|task| known.estimator.record_task(task).is_ok()).count()
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
        fraction: mark.percent.clamp(0.0, 100.0) / 100.0,
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
    async fn a_retry_policy_adds_the_tries_the_steps_history_of_failures_expects() {
        let model = EtaModel::start();
        let plain = started(&[PLAIN, PLAIN]).stored;
        let mut retrying = plain.clone();
        let retry = crate::policy::RetryPolicy {
            max_attempts: 3,
            backoff: crate::policy::Backoff { initial_s: 10.0, factor: 2.0, max_s: 600.0 },
            on: vec![crate::policy::FailureKind::Error],
        };
        retrying.steps[1].policy = StepPolicy { retry: Some(retry), approval: None }.stored();
        // Step 2 not started yet: its first try is counted; the second comes with chance p
        // (after 10 s), the third with p² (after 20 s more).
        let added = |model: &EtaModel, p: f64| {
            let without = model.estimate(&plain, 0, &[]).unwrap();
            let with = model.estimate(&retrying, 0, &[]).unwrap();
            let whole = without.steps[1].expected_s;
            let expected = p * (whole + 10.0) + p * p * (whole + 20.0);
            assert!((with.steps[1].expected_s - whole - expected).abs() < 1e-9, "{with:?} against {without:?}");
            assert_eq!(with.range.0, without.range.0, "the likeliest case is no failure");
            with.seconds - without.seconds
        };
        let clean: Vec<StepRunRecord> = (0..5).flat_map(|n| runs(&format!("t{n}"), n, [60_000, 120_000])).collect();
        model.train(clean.clone()).await;
        let after_clean = added(&model, 0.2 / 7.0);
        let mut flaky = clean;
        for n in 5..10 {
            let mut task = runs(&format!("t{n}"), n, [60_000, 120_000]);
            task[1].attempt = 3;
            flaky.extend(task);
        }
        model.train(flaky).await;
        let after_flaky = added(&model, 10.2 / 22.0);
        assert!(
            after_flaky > 5.0 * after_clean,
            "a flaky step's retries count: {after_clean:.1} s, then {after_flaky:.1} s"
        );
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
