//! ETAs for live tasks. `model` is the bridge to the pure `estimator`: history comes from
//! the persisted step runs (so it survives restarts) and every completed task is learned
//! from, off the actor threads. `EtaTracker` is a task actor's side: when to re-estimate,
//! when an estimate is worth publishing, and the running step's progress samples.

use db::{ProgressMark, StepRecord, TaskStatus};

use crate::event::EventKind;
use crate::machine::TaskState;

mod model;

pub use estimator::Confidence;
pub(crate) use model::EtaModel;

/// How often a live task re-estimates from progress alone.
const ETA_EVERY_MS: i64 = 1_000;

/// Progress samples kept for the running step.
const MAX_SAMPLES: usize = 32;

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
    pub fn record_sample(&mut self, state: &TaskState, percent: u8, at: i64) {
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
            self.record_sample(after, percent, at);
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
            TaskStatus::Running | TaskStatus::Paused | TaskStatus::Approval => {
                model.estimate(&state.stored, work_ms, &self.samples)
            }
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
        assert_eq!(step(&mut state, T0 + 3_000, &tick), [ProgressMark { elapsed_ms: 3_000, percent: 25 }]);
        assert_eq!(step(&mut state, T0 + 4_000, &tick).len(), 1, "a substep done again raises nothing");
        let next = |state: &mut TaskState| state.step_succeeded(1, 1, None, T0 + 5_000).events;
        assert_eq!(step(&mut state, T0 + 5_000, &next), [], "step 2 starts with no samples");
    }

    #[test]
    fn samples_keep_their_shape_in_bounded_memory() {
        let state = started(&[PLAIN]);
        let mut tracker = EtaTracker::default();
        for percent in 0..=MAX_SAMPLES as u8 {
            tracker.record_sample(&state, percent, T0 + i64::from(percent) * 100);
        }
        let kept: Vec<u8> = tracker.samples().iter().map(|s| s.percent).collect();
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
