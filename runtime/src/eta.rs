//! ETAs for live tasks. `model` is the bridge to the pure `estimator`: history comes from
//! the persisted step runs (so it survives restarts) and every completed task is learned
//! from, off the actor threads. `EtaTracker` is a task actor's side: when to re-estimate,
//! when an estimate is worth publishing, and the running step's progress samples.

use db::{ProgressMark, StepRecord, StoredEstimate, TaskStatus};

use crate::event::{confidence_name, confidence_named, Eta, EventKind, StepEta};
use crate::machine::TaskState;

mod model;

pub(crate) use model::EtaModel;

/// How often a live task re-estimates from progress alone.
const ETA_EVERY_MS: i64 = 1_000;

/// Progress samples kept for the running step.
const MAX_SAMPLES: usize = 32;

/// `eta` as stored for the other servers of a cluster, made at `made_at`.
pub(crate) fn stored(task_id: &str, eta: &Eta, made_at: i64) -> StoredEstimate {
    let ms = |seconds: f64| (seconds * 1000.0).round() as i64;
    StoredEstimate {
        task_id: task_id.to_owned(),
        remaining_ms: ms(eta.seconds),
        range_ms: (ms(eta.range.0), ms(eta.range.1)),
        confidence: confidence_name(eta.confidence).to_owned(),
        steps: eta.steps.iter().map(|s| (s.step, ms(s.expected_s))).collect(),
        made_at,
    }
}

/// A stored estimate as of `now`: while the task runs, counted down by the time since it
/// was made, as clients count; `None` if it does not read back.
pub(crate) fn from_stored(stored: &StoredEstimate, running: bool, now: i64) -> Option<Eta> {
    let seconds = |ms: i64| ms as f64 / 1000.0;
    let eta = Eta {
        seconds: seconds(stored.remaining_ms),
        range: (seconds(stored.range_ms.0), seconds(stored.range_ms.1)),
        confidence: confidence_named(&stored.confidence)?,
        steps: stored.steps.iter().map(|&(step, ms)| StepEta { step, expected_s: seconds(ms) }).collect(),
    };
    Some(match running {
        true => eta.counted_down(seconds((now - stored.made_at).max(0))),
        false => eta,
    })
}

/// The estimator key of a step: its kind and name.
pub fn step_key(step: &StepRecord) -> String {
    format!("{}:{}", step.kind, step.name)
}

/// A live task's estimate as its actor keeps it: the latest one and when it was made, the
/// last one published with the step's work time then, and the running step's progress
/// samples (from which the estimator learns what a kind's percent says).
#[derive(Debug, Default)]
pub(crate) struct EtaTracker {
    latest: Option<Eta>,
    made_at: Option<i64>,
    published: Option<(Eta, i64)>,
    samples: Vec<ProgressMark>,
}

impl EtaTracker {
    /// The latest estimate.
    pub fn latest(&self) -> Option<&Eta> {
        self.latest.as_ref()
    }

    /// The running step's progress samples.
    pub fn samples(&self) -> &[ProgressMark] {
        &self.samples
    }

    /// Keeps the running step's `percent` at `at`.
    pub fn record_sample(&mut self, state: &TaskState, percent: f64, at: i64) {
        if self.samples.len() == MAX_SAMPLES {
            // Keep the shape of the curve in bounded memory: drop every other old sample.
            let mut index = 0;
            self.samples.retain(|_| {
                index += 1;
                index % 2 == 0
            });
        }
        self.samples.push(ProgressMark { elapsed_ms: state.work_ms(at), percent });
    }

    /// Takes in a transition from `before` to `after` with `events`, committed at `at`: a
    /// substep done that raised its step's percent is a sample like a report, and a step
    /// that starts starts with none.
    pub fn committed(&mut self, before: &TaskState, after: &TaskState, events: &[EventKind], at: i64) {
        if let Some(percent) = raised_by_substep(before, after, events) {
            self.record_sample(after, f64::from(percent), at);
        }
        if events.iter().any(|e| matches!(e, EventKind::StepStarted { .. })) {
            self.samples.clear();
        }
    }

    /// Re-estimates the time remaining (at most once per `ETA_EVERY_MS` unless `force`).
    /// Returns the estimate to publish when it moved away from what subscribers show: the
    /// last published estimate, counted down by the work done since (as the page counts).
    pub fn update(&mut self, model: &EtaModel, state: &TaskState, now: i64, force: bool) -> Option<Eta> {
        if !force && self.made_at.is_some_and(|at| now.saturating_sub(at) < ETA_EVERY_MS) {
            return None;
        }
        let work_ms = state.work_ms(now);
        let eta = match state.status() {
            TaskStatus::Running | TaskStatus::Paused | TaskStatus::Approval => model
                .estimate(&state.stored, work_ms, &self.samples)
                .map(|eta| eta.after_wait(retry_wait_s(state, now))),
            _ => None,
        };
        self.made_at = Some(now);
        let moved = match (&self.published, &eta) {
            (Some((old, old_ms)), Some(new)) => {
                new.moved_from(&old.counted_down(work_ms.saturating_sub(*old_ms).max(0) as f64 / 1000.0))
            }
            (None, None) => false,
            _ => true,
        };
        if moved {
            self.published = eta.clone().map(|eta| (eta, work_ms));
        }
        self.latest = eta;
        self.latest.clone().filter(|_| moved)
    }
}

/// How long a retry waiting out its backoff still waits, seconds (0 with none).
fn retry_wait_s(state: &TaskState, now: i64) -> f64 {
    let waiting = state.stored.steps.iter().find(|s| !s.status.is_done()).and_then(|s| s.due_at);
    match state.status() {
        TaskStatus::Running => waiting.map_or(0.0, |due| (due - now).max(0) as f64 / 1000.0),
        _ => 0.0,
    }
}

/// The percent of the step in progress that a substep done among `events` raised.
fn raised_by_substep(before: &TaskState, after: &TaskState, events: &[EventKind]) -> Option<u8> {
    let order = events.iter().find_map(|e| match e {
        EventKind::SubstepDone { step, .. } => Some(*step),
        _ => None,
    })?;
    let percent = |state: &TaskState| state.stored.steps.iter().find(|s| s.order == order).map(|s| s.progress);
    let step = after.step_in_progress().filter(|s| s.order == order)?;
    (percent(after) > percent(before)).then_some(step.progress)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::fixtures::{started, FOUR_SUBSTEPS, PLAIN, T0};

    #[test]
    fn a_substep_that_raises_the_percent_is_a_sample_and_a_new_step_starts_with_none() {
        let mut tracker = EtaTracker::default();
        let mut state = started(&[FOUR_SUBSTEPS, PLAIN]);
        let mut step = |state: &mut TaskState, at: i64, change: &dyn Fn(&mut TaskState) -> Vec<EventKind>| {
            let before = state.clone();
            let events = change(state);
            tracker.committed(&before, state, &events, at);
            tracker.samples().to_vec()
        };
        let tick = |state: &mut TaskState| state.substep_done(1, 1, "a").unwrap().events;
        assert_eq!(step(&mut state, T0 + 3_000, &tick), [ProgressMark { elapsed_ms: 3_000, percent: 25.0 }]);
        assert_eq!(step(&mut state, T0 + 4_000, &tick).len(), 1, "a substep done again raises nothing");
        let next = |state: &mut TaskState| state.step_succeeded(1, 1, None, T0 + 5_000).events;
        assert_eq!(step(&mut state, T0 + 5_000, &next), [], "step 2 starts with no samples");
    }

    #[test]
    fn samples_keep_their_shape_in_bounded_memory() {
        let state = started(&[PLAIN]);
        let mut tracker = EtaTracker::default();
        for percent in 0..=MAX_SAMPLES as u8 {
            tracker.record_sample(&state, f64::from(percent), T0 + i64::from(percent) * 100);
        }
        let kept: Vec<u8> = tracker.samples().iter().map(|s| s.percent as u8).collect();
        let expected: Vec<u8> = (1..MAX_SAMPLES as u8).step_by(2).chain([MAX_SAMPLES as u8]).collect();
        assert_eq!(kept, expected, "every other old sample goes, the newest stays");
        assert_eq!(tracker.samples().last().map(|s| s.elapsed_ms), Some(i64::from(MAX_SAMPLES as u8) * 100));
    }

    #[test]
    fn an_estimate_is_made_at_most_once_a_second_and_published_only_when_it_moved() {
        let model = EtaModel::start();
        let mut tracker = EtaTracker::default();
        let mut state = started(&[PLAIN]);
        let first = tracker.update(&model, &state, T0, false).expect("the first estimate is news");
        assert_eq!(tracker.latest(), Some(&first));
        assert_eq!(tracker.update(&model, &state, T0, true), None, "the same estimate again is not");
        state.step_succeeded(1, 1, None, T0 + 10);
        assert_eq!(tracker.update(&model, &state, T0 + 500, false), None);
        assert_eq!(tracker.latest(), Some(&first), "not re-estimated within a second");
        assert_eq!(tracker.update(&model, &state, T0 + 500, true), None, "a completed task has none to publish");
        assert_eq!(tracker.latest(), None, "forced, it re-estimates at once");
    }
}
