//! The [`Estimator`]: what it learns from finished tasks and how it turns a live task into
//! an [`Estimate`].

use std::collections::BTreeMap;

use crate::calibration::{band, Calibration};
use crate::combine::{excess_moments, fenton_wilkinson, lognormal_moments};
use crate::combine::{Gauss, Moments};
use crate::live::{observe_step, Running};
use crate::prior::{regressor, KindStats, Prediction, Priors};
use crate::progress::ProgressModel;
use crate::{CompletedTask, Confidence, Config, Estimate, EstimatorError, Observation};
use crate::{StepEstimate, TaskPlan, Tier};

/// ETA readings per finished task fed to the calibration, as in the replay benchmark.
pub const READINGS_PER_TASK: usize = 20;
/// Prior of the task speed factor's variance: a log-sd of 0.3 until history says more.
const TASK_VAR_PRIOR: f64 = 0.09;
/// Estimates saturate here (about 30 million years) rather than overflow.
const MAX_LOG_SECONDS: f64 = 34.5;
/// Relative range widths below which confidence is high (about ±25 %) or medium (±50 %).
const HIGH_WIDTH: f64 = 0.5;
const MEDIUM_WIDTH: f64 = 1.0;

/// A mean under exponential forgetting, started from a prior worth `weight` observations.
#[derive(Debug, Clone, Copy, PartialEq)]
struct FadingMean {
    weight: f64,
    sum: f64,
    prior: f64,
    prior_weight: f64,
}

impl FadingMean {
    fn new(prior: f64, prior_weight: f64) -> FadingMean {
        FadingMean { weight: 0.0, sum: 0.0, prior, prior_weight }
    }

    fn push(&mut self, value: f64) {
        self.weight += 1.0;
        self.sum += value;
    }

    fn fade(&mut self, half_life: f64) {
        let f = 0.5f64.powf(1.0 / half_life);
        self.weight *= f;
        self.sum *= f;
    }

    fn value(&self) -> f64 {
        (self.sum + self.prior * self.prior_weight) / (self.weight + self.prior_weight)
    }
}

/// History-backed ETA estimator for multi-step tasks.
///
/// **Invariant: it does no I/O and reads no clock; an estimate depends only on the tasks
/// recorded before it and on the values passed in.** Feed it every finished task with
/// [`Estimator::record_task`] (in the order they finished, also when rebuilding after a
/// restart) and ask [`Estimator::estimate`] whenever a running task makes progress.
#[derive(Debug, Clone, PartialEq)]
pub struct Estimator {
    config: Config,
    stats: BTreeMap<String, KindStats>,
    priors: Priors,
    /// Recent mean of tasks' log speed factors: follows drift faster than the kind priors.
    level: FadingMean,
    /// Variance of a task's log speed factor around `level`.
    task_var: FadingMean,
    progress: ProgressModel,
    calibration: Calibration,
    tasks: u64,
}

impl Default for Estimator {
    fn default() -> Estimator {
        let config = Config::default();
        Estimator {
            config,
            stats: BTreeMap::new(),
            priors: Priors::cold(&config),
            level: FadingMean::new(0.0, 1.0),
            task_var: FadingMean::new(TASK_VAR_PRIOR, 3.0),
            progress: ProgressModel::default(),
            calibration: Calibration::default(),
            tasks: 0,
        }
    }
}

/// The model's belief about a task's remaining work time, before calibration.
struct Belief {
    log_remaining: Gauss,
    elapsed: f64,
    steps: Vec<StepEstimate>,
    unknown_kinds: bool,
}

impl Estimator {
    /// An estimator without history, with the given assumptions.
    pub fn with_config(config: Config) -> Result<Estimator, EstimatorError> {
        config.validate()?;
        Ok(Estimator { config, priors: Priors::cold(&config), ..Estimator::default() })
    }

    /// Number of tasks recorded so far.
    pub fn tasks_recorded(&self) -> u64 {
        self.tasks
    }

    /// Learns from a finished task: its steps' durations update their kinds' priors, the
    /// spread of its speed factor and progress samples update the live model, and the
    /// estimates the model would have given over its life update the calibration.
    pub fn record_task(&mut self, task: &CompletedTask) -> Result<(), EstimatorError> {
        task.validate()?;
        let plan = TaskPlan {
            complexity: task.complexity,
            steps: task.steps.iter().map(|s| s.key.clone()).collect(),
            hints_s: Vec::new(),
        };
        self.calibrate(task, &plan);
        self.learn_task_effects(task);
        let (x, ln_decay) = (regressor(task.complexity), self.config.ln_decay());
        for step in &task.steps {
            let stats = self.stats.entry(step.key.clone()).or_default();
            stats.add(Tier::of(task.complexity), x, step.duration_s.ln(), self.tasks, ln_decay);
        }
        self.tasks += 1;
        self.priors = Priors::fit(&self.stats, self.tasks, &self.config);
        Ok(())
    }

    /// Estimates the remaining work time of a running task.
    pub fn estimate(&self, plan: &TaskPlan, obs: &Observation) -> Result<Estimate, EstimatorError> {
        plan.validate()?;
        obs.validate(plan)?;
        let Some(belief) = self.belief(plan, obs) else {
            return Ok(Estimate {
                eta_seconds: 0.0,
                eta_range: (0.0, 0.0),
                confidence: Confidence::High,
                steps: Vec::new(),
            });
        };
        let g = belief.log_remaining;
        let band = band(belief.elapsed / (belief.elapsed + g.mean.exp()));
        let kind = &plan.steps[obs.completed_s.len()];
        let q = self.calibration.quantiles(Tier::of(plan.complexity), band, kind, g);
        let [p10, p50, p90] = q.map(|l| l.min(MAX_LOG_SECONDS).exp());
        let width = (p90 - p10) / (belief.elapsed + p50);
        let confidence = match width {
            _ if belief.unknown_kinds => Confidence::Low,
            w if w < HIGH_WIDTH => Confidence::High,
            w if w < MEDIUM_WIDTH => Confidence::Medium,
            _ => Confidence::Low,
        };
        Ok(Estimate { eta_seconds: p50, eta_range: (p10, p90), confidence, steps: belief.steps })
    }

    /// The model's belief, or `None` when every step is done. Inputs are validated.
    fn belief(&self, plan: &TaskPlan, obs: &Observation) -> Option<Belief> {
        let running = obs.completed_s.len();
        if running == plan.steps.len() {
            return None;
        }
        let task_var = self.task_var.value();
        let predict = |i: usize| self.priors.predict(&plan.steps[i], plan.complexity).hinted(plan.hint(i));
        let mut speed = Gauss { mean: self.level.value(), var: task_var + self.cold_level_var(plan) };
        for (i, d) in obs.completed_s.iter().enumerate() {
            let p = predict(i);
            speed = observe_step(speed, d.ln() - p.mean, p.own_var(task_var), self.config.clip_sigmas);
        }
        let elapsed_step = obs.running_elapsed_s;
        let p = predict(running);
        let running_step = Running::start(speed, p.mean, p.own_var(task_var)).with_reading(self.progress.reading(
            &plan.steps[running],
            Tier::of(plan.complexity),
            &obs.progress,
            self.tasks,
            self.config.ln_decay(),
        ));
        let (_, log_d) = running_step.censor(elapsed_step);
        let later: Vec<(&String, Prediction)> =
            (running + 1..plan.steps.len()).map(|i| (&plan.steps[i], predict(i))).collect();
        let own = |p: &Prediction| Gauss { mean: p.mean, var: p.own_var(task_var) };
        let sum_later = later.iter().fold(Moments::default(), |acc, (_, p)| {
            let m = lognormal_moments(own(p));
            Moments { mean: acc.mean + m.mean, var: acc.var + m.var }
        });
        let (total, scale) = running_step.remaining(elapsed_step, sum_later);
        let rest = excess_moments(log_d, elapsed_step);
        let mut steps = vec![StepEstimate { key: plan.steps[running].clone(), expected_s: rest.mean }];
        steps.extend(
            later
                .iter()
                .map(|(k, p)| StepEstimate { key: (*k).clone(), expected_s: scale * lognormal_moments(own(p)).mean }),
        );
        let unknown_kinds = p.runs <= 0.0 || later.iter().any(|(_, p)| p.runs <= 0.0);
        Some(Belief {
            log_remaining: fenton_wilkinson(total),
            elapsed: obs.completed_s.iter().sum::<f64>() + elapsed_step,
            steps,
            unknown_kinds,
        })
    }

    /// Extra speed-factor variance while nothing at all is known: the cold-start guess may
    /// be off for every step of the task at once. A plan that states any step's duration
    /// sets the task's pace itself.
    fn cold_level_var(&self, plan: &TaskPlan) -> f64 {
        if self.priors.pooled.kinds == 0 && plan.hints_s.iter().all(Option::is_none) {
            return self.config.cold_level_sd.powi(2);
        }
        0.0
    }

    /// Replays the finished task at the benchmark's reading points and records how far off
    /// the model (before calibration) was, in its own standard deviations.
    fn calibrate(&mut self, task: &CompletedTask, plan: &TaskPlan) {
        let total: f64 = task.steps.iter().map(|s| s.duration_s).sum();
        let tier = Tier::of(task.complexity);
        for k in 0..READINGS_PER_TASK {
            let t = total * k as f64 / READINGS_PER_TASK as f64;
            let obs = observation_at(task, t);
            let Some(belief) = self.belief(plan, &obs) else {
                continue;
            };
            let g = belief.log_remaining;
            let z = ((total - t).ln() - g.mean) / g.var.sqrt();
            let band = band(belief.elapsed / (belief.elapsed + g.mean.exp()));
            if z.is_finite() {
                self.calibration.record(tier, band, &plan.steps[obs.completed_s.len()], z);
            }
        }
        self.calibration.refresh();
    }

    /// Updates the recent pace level, the speed-factor spread and the progress readings from
    /// a finished task's residuals against the current priors.
    fn learn_task_effects(&mut self, task: &CompletedTask) {
        let residuals: Vec<f64> = task
            .steps
            .iter()
            .map(|s| (s, self.priors.predict(&s.key, task.complexity)))
            .filter(|(_, p)| p.runs >= 1.0)
            .map(|(s, p)| s.duration_s.ln() - p.mean)
            .collect();
        let n = residuals.len() as f64;
        self.level.fade(self.config.level_half_life_tasks);
        self.task_var.fade(self.config.half_life_tasks);
        if n >= 2.0 {
            // Products of different steps' residuals estimate the shared (task) variance only.
            let level = self.level.value();
            let sum: f64 = residuals.iter().map(|r| r - level).sum();
            let squares: f64 = residuals.iter().map(|r| (r - level).powi(2)).sum();
            self.task_var.push(((sum * sum - squares) / (n * (n - 1.0))).max(0.0));
        }
        if n >= 1.0 {
            self.level.push(residuals.iter().sum::<f64>() / n);
        }
        let tier = Tier::of(task.complexity);
        for step in &task.steps {
            self.progress.record(&step.key, tier, step.duration_s, &step.progress, self.tasks, self.config.ln_decay());
        }
    }
}

/// What a finished task looked like `t` work seconds into its life.
fn observation_at(task: &CompletedTask, t: f64) -> Observation {
    let mut start = 0.0;
    let mut completed_s = Vec::new();
    for step in &task.steps {
        if start + step.duration_s > t {
            let elapsed = t - start;
            let progress = step.progress.iter().filter(|p| p.elapsed_s <= elapsed).copied();
            return Observation { completed_s, running_elapsed_s: elapsed, progress: progress.collect() };
        }
        completed_s.push(step.duration_s);
        start += step.duration_s;
    }
    Observation { completed_s, ..Observation::default() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ProgressSample, StepRun};
    use proptest::prelude::*;

    /// SplitMix64 and Box–Muller: deterministic noise for synthetic histories.
    struct Rng(u64);

    impl Rng {
        fn unit(&mut self) -> f64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
        }

        fn normal(&mut self) -> f64 {
            let u = 1.0 - self.unit();
            (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * self.unit()).cos()
        }
    }

    const KEYS: [&str; 3] = ["fetch", "transform", "load"];
    /// Median seconds per key at complexity 3, and growth exponent.
    const SHAPES: [(f64, f64); 3] = [(20.0, 0.0), (300.0, 1.0), (60.0, 0.5)];

    fn plan(complexity: u32) -> TaskPlan {
        TaskPlan { complexity, steps: KEYS.iter().map(|k| k.to_string()).collect(), hints_s: Vec::new() }
    }

    fn run(key: &str, duration_s: f64) -> StepRun {
        StepRun { key: key.into(), duration_s, progress: vec![] }
    }

    /// A task drawn from SHAPES with a speed factor (log-sd 0.2) and step noise (0.2).
    fn synthetic_task(rng: &mut Rng, complexity: u32) -> CompletedTask {
        let speed = 0.2 * rng.normal();
        let steps = KEYS
            .iter()
            .zip(SHAPES)
            .map(|(k, (median, slope))| {
                let d = median * (f64::from(complexity) / 3.0).powf(slope) * (speed + 0.2 * rng.normal()).exp();
                run(k, d)
            })
            .collect();
        CompletedTask { complexity, steps }
    }

    fn trained(tasks: usize, seed: u64) -> Estimator {
        let mut rng = Rng(seed);
        let mut est = Estimator::default();
        for i in 0..tasks {
            let c = 1 + (i % 10) as u32;
            est.record_task(&synthetic_task(&mut rng, c)).unwrap();
        }
        est
    }

    fn at(completed_s: &[f64], running_elapsed_s: f64) -> Observation {
        Observation { completed_s: completed_s.to_vec(), running_elapsed_s, progress: vec![] }
    }

    fn sane(e: &Estimate) -> bool {
        let (lo, hi) = e.eta_range;
        [lo, e.eta_seconds, hi].iter().all(|v| v.is_finite() && *v >= 0.0) && lo <= e.eta_seconds && e.eta_seconds <= hi
    }

    #[test]
    fn cold_start_gives_a_positive_low_confidence_estimate() {
        let est = Estimator::default();
        // (complexity, completed steps): the estimate is never zero while work remains.
        for (c, completed) in [(1, vec![]), (9, vec![]), (3, vec![5.0]), (3, vec![5.0, 500.0])] {
            let e = est.estimate(&plan(c), &at(&completed, 0.0)).unwrap();
            assert!(sane(&e) && e.eta_seconds > 0.0, "{c} {completed:?}: {e:?}");
            assert_eq!(e.confidence, Confidence::Low);
            assert_eq!(e.steps.len(), KEYS.len() - completed.len());
        }
    }

    #[test]
    fn cold_start_learns_the_pace_from_the_first_step() {
        let est = Estimator::default();
        let quick = est.estimate(&plan(3), &at(&[1.0], 0.0)).unwrap();
        let slow = est.estimate(&plan(3), &at(&[1000.0], 0.0)).unwrap();
        assert!(slow.eta_seconds > 50.0 * quick.eta_seconds, "{quick:?} {slow:?}");
    }

    fn hinted(complexity: u32, hints_s: &[Option<f64>]) -> TaskPlan {
        TaskPlan { hints_s: hints_s.to_vec(), ..plan(complexity) }
    }

    #[test]
    fn a_plan_that_states_its_durations_is_believed_from_the_first_second() {
        let est = Estimator::default();
        let e = est.estimate(&hinted(4, &[Some(12.0), Some(24.0), Some(24.0)]), &at(&[], 0.0)).unwrap();
        assert!((e.eta_seconds - 60.0).abs() < 6.0, "cold, hinted 60 s in all: {e:?}");
        assert!(e.eta_range.0 < 60.0 && 60.0 < e.eta_range.1, "{e:?}");
        assert!(e.confidence > Confidence::Low, "every step's length is known: {e:?}");
        let steps: Vec<f64> = e.steps.iter().map(|s| s.expected_s).collect();
        assert!((steps[1] - 24.0).abs() < 3.0, "each step its own hint: {steps:?}");
        // A step without a hint still counts, at the cold-start guess.
        let partly = est.estimate(&hinted(4, &[Some(12.0), None, Some(24.0)]), &at(&[], 0.0)).unwrap();
        assert!(partly.eta_seconds > e.eta_seconds && partly.confidence == Confidence::Low, "{partly:?}");
    }

    #[test]
    fn a_hint_weighs_against_long_history_and_wins_over_none() {
        let est = trained(300, 7);
        let history = est.estimate(&plan(3), &at(&[], 0.0)).unwrap().eta_seconds;
        // "fetch" usually takes 20 s; the plan says 200 s.
        let hinted = est.estimate(&hinted(3, &[Some(200.0), None, None]), &at(&[], 0.0)).unwrap().eta_seconds;
        let moved = hinted - history;
        assert!(moved > 0.0 && moved < 180.0, "history {history:.0} s, hinted {hinted:.0} s");
    }

    #[test]
    fn hints_that_do_not_fit_the_plan_are_refused() {
        let est = Estimator::default();
        let count = est.estimate(&hinted(3, &[Some(1.0)]), &at(&[], 0.0)).unwrap_err();
        assert_eq!(count, EstimatorError::HintCount { hints: 1, steps: 3 });
        let negative = est.estimate(&hinted(3, &[None, Some(-1.0), None]), &at(&[], 0.0)).unwrap_err();
        assert!(matches!(negative, EstimatorError::InvalidDuration { index: 1, .. }), "{negative}");
    }

    #[test]
    fn history_sets_the_estimate_at_the_start() {
        let est = trained(300, 7);
        // (complexity, expected total of medians)
        for c in [1u32, 3, 6, 10] {
            let expect: f64 = SHAPES.iter().map(|(m, b)| m * (f64::from(c) / 3.0).powf(*b)).sum();
            let e = est.estimate(&plan(c), &at(&[], 0.0)).unwrap();
            let ratio = e.eta_seconds / expect;
            assert!((0.85..1.15).contains(&ratio), "complexity {c}: {ratio}");
            assert!(e.confidence > Confidence::Low, "{e:?}");
            let (lo, hi) = e.eta_range;
            assert!(lo < expect && expect < hi);
        }
    }

    #[test]
    fn a_slow_first_step_slows_the_rest() {
        let est = trained(300, 11);
        let on_pace = est.estimate(&plan(3), &at(&[20.0], 0.0)).unwrap().eta_seconds;
        // (first step's duration, lower and upper bound of the ETA relative to on-pace)
        for (first, lo, hi) in [(10.0, 0.5, 0.95), (20.0, 1.0, 1.0), (40.0, 1.1, 2.0), (2000.0, 1.1, 3.0)] {
            let eta = est.estimate(&plan(3), &at(&[first], 0.0)).unwrap().eta_seconds;
            let ratio = eta / on_pace;
            assert!(ratio >= lo - 1e-9 && ratio <= hi + 1e-9, "first {first}: {ratio}");
        }
    }

    #[test]
    fn an_overrunning_step_raises_the_eta_instead_of_pinning_it_at_zero() {
        let est = trained(300, 13);
        // Once the step runs past its usual length (about 300 s here), every further second
        // pushes the predicted end out; the ETA never reaches zero.
        let mut last_total = 0.0;
        for elapsed in [400.0, 600.0, 1200.0, 5000.0, 1e5] {
            let e = est.estimate(&plan(3), &at(&[20.0], elapsed)).unwrap();
            let total = 20.0 + elapsed + e.eta_seconds;
            assert!(sane(&e) && e.eta_seconds > 0.0, "at {elapsed}: {e:?}");
            assert!(total > last_total, "at {elapsed}: {total} after {last_total}");
            last_total = total;
        }
        // Well past its history the running step's own rest is small but the next step grows.
        let fresh = est.estimate(&plan(3), &at(&[20.0], 0.0)).unwrap();
        let late = est.estimate(&plan(3), &at(&[20.0], 3000.0)).unwrap();
        assert!(late.steps[1].expected_s > fresh.steps[1].expected_s);
    }

    #[test]
    fn in_step_progress_acts_as_a_rate() {
        let est = trained(300, 17);
        let with = |elapsed_s: f64, fraction| Observation {
            completed_s: vec![20.0],
            running_elapsed_s: elapsed_s,
            progress: vec![ProgressSample { elapsed_s, fraction }],
        };
        let step = |obs: &Observation| est.estimate(&plan(3), obs).unwrap().steps[0].expected_s;
        // Half done after 50 s (fast), 150 s (on pace), 600 s (slow): the step's predicted end
        // moves with the rate, the on-pace rest is near t / f − t.
        let end = |t: f64| t + step(&with(t, 0.5));
        let (fast, on, slow) = (end(50.0), end(150.0), end(600.0));
        assert!(fast < on && on < slow, "{fast} {on} {slow}");
        assert!((250.0..400.0).contains(&on), "{on}");
    }

    #[test]
    fn extreme_progress_samples_give_a_finite_estimate() {
        let sample = |elapsed_s, fraction| ProgressSample { elapsed_s, fraction };
        // (sample in history and in the running step): a fraction so small that t / f
        // overflows, a huge elapsed time, a sample at the very start.
        let cases = [sample(1.0, 5e-324), sample(1e300, 0.5), sample(1e-300, 0.9), sample(0.0, 0.5)];
        for p in cases {
            let mut est = trained(50, 29);
            let mut task = synthetic_task(&mut Rng(31), 3);
            task.steps[1].progress = vec![p];
            est.record_task(&task).unwrap();
            let obs = Observation { completed_s: vec![20.0], running_elapsed_s: 100.0, progress: vec![p] };
            let e = est.estimate(&plan(3), &obs).unwrap();
            assert!(sane(&e) && e.eta_seconds > 0.0, "{p:?}: {e:?}");
            assert!(e.steps.iter().all(|s| s.expected_s.is_finite()), "{p:?}: {e:?}");
        }
    }

    #[test]
    fn a_finished_task_has_nothing_left() {
        let e = trained(5, 1).estimate(&plan(3), &at(&[1.0, 2.0, 3.0], 0.0)).unwrap();
        assert_eq!((e.eta_seconds, e.eta_range, e.steps.len()), (0.0, (0.0, 0.0), 0));
    }

    #[test]
    fn calibrated_ranges_hold_about_eighty_percent_of_new_tasks() {
        let mut rng = Rng(23);
        let mut est = trained(200, 19);
        let (mut covered, mut readings) = (0, 0);
        for i in 0..150 {
            let task = synthetic_task(&mut rng, 1 + (i % 10) as u32);
            let total: f64 = task.steps.iter().map(|s| s.duration_s).sum();
            let plan = plan(task.complexity);
            for k in 0..READINGS_PER_TASK {
                let t = total * k as f64 / READINGS_PER_TASK as f64;
                let (lo, hi) = est.estimate(&plan, &observation_at(&task, t)).unwrap().eta_range;
                covered += usize::from(lo <= total - t && total - t <= hi);
                readings += 1;
            }
            est.record_task(&task).unwrap();
        }
        let coverage = covered as f64 / readings as f64;
        assert!((0.72..0.88).contains(&coverage), "coverage {coverage}");
    }

    #[test]
    fn bad_history_is_rejected_and_leaves_the_estimator_unchanged() {
        let ok = || run("fetch", 1.0);
        let bad_sample = StepRun { progress: vec![ProgressSample { elapsed_s: 1.0, fraction: 1.5 }], ..ok() };
        let cases = [
            (0, vec![ok()], EstimatorError::ZeroComplexity(0)),
            (1, vec![], EstimatorError::NoSteps),
            (1, vec![ok(), run("", 1.0)], EstimatorError::EmptyKey { index: 1 }),
            (1, vec![run("fetch", 0.0)], invalid(0, 0.0)),
            (
                1,
                vec![ok(), run("fetch", -3.0)],
                EstimatorError::InvalidDuration { index: 1, key: "fetch".into(), value: -3.0 },
            ),
            (1, vec![run("fetch", f64::INFINITY)], invalid(0, f64::INFINITY)),
            (1, vec![bad_sample], EstimatorError::InvalidProgress { index: 0, fraction: 1.5, elapsed_s: 1.0 }),
        ];
        for (complexity, steps, expected) in cases {
            let mut est = Estimator::default();
            let got = est.record_task(&CompletedTask { complexity, steps });
            assert_eq!(got, Err(expected));
            assert_eq!(est, Estimator::default());
        }
        let nan =
            Estimator::default().record_task(&CompletedTask { complexity: 1, steps: vec![run("fetch", f64::NAN)] });
        assert!(matches!(nan, Err(EstimatorError::InvalidDuration { .. })));
    }

    fn invalid(index: usize, value: f64) -> EstimatorError {
        EstimatorError::InvalidDuration { index, key: "fetch".into(), value }
    }

    #[test]
    fn bad_observations_are_rejected() {
        let est = trained(3, 5);
        let sample = |elapsed_s, fraction| vec![ProgressSample { elapsed_s, fraction }];
        let cases = [
            (plan(3), at(&[1.0, 1.0, 1.0, 1.0], 0.0), EstimatorError::TooManyCompleted { completed: 4, planned: 3 }),
            (
                plan(3),
                at(&[1.0, 0.0], 0.0),
                EstimatorError::InvalidDuration { index: 1, key: "transform".into(), value: 0.0 },
            ),
            (plan(3), at(&[], -1.0), EstimatorError::InvalidElapsed(-1.0)),
            (
                plan(3),
                Observation { progress: sample(-1.0, 0.5), ..at(&[], 1.0) },
                EstimatorError::InvalidProgress { index: 0, fraction: 0.5, elapsed_s: -1.0 },
            ),
            (plan(0), at(&[], 0.0), EstimatorError::ZeroComplexity(0)),
            (TaskPlan { complexity: 1, steps: vec![], hints_s: Vec::new() }, at(&[], 0.0), EstimatorError::NoSteps),
        ];
        for (plan, obs, expected) in cases {
            assert_eq!(est.estimate(&plan, &obs), Err(expected));
        }
    }

    #[test]
    fn config_out_of_range_is_rejected() {
        let cases = [
            (Config { cold_step_s: 0.0, ..Config::default() }, "cold_step_s"),
            (Config { half_life_tasks: f64::NAN, ..Config::default() }, "half_life_tasks"),
            (Config { clip_sigmas: -1.0, ..Config::default() }, "clip_sigmas"),
            (Config { cold_slope: f64::INFINITY, ..Config::default() }, "cold_slope"),
        ];
        for (config, field) in cases {
            let err = Estimator::with_config(config).unwrap_err();
            assert!(matches!(err, EstimatorError::InvalidConfig { field: f, .. } if f == field), "{err}");
        }
        assert!(Estimator::with_config(Config::default()).is_ok());
    }

    fn arb_run() -> impl Strategy<Value = StepRun> {
        let sample =
            (0.0..1e6f64, 0.0..=1.0f64).prop_map(|(elapsed_s, fraction)| ProgressSample { elapsed_s, fraction });
        (0..4usize, 1e-3..1e6f64, prop::collection::vec(sample, 0..3)).prop_map(|(k, duration_s, progress)| StepRun {
            key: ["a", "b", "c", "d"][k].into(),
            duration_s,
            progress,
        })
    }

    fn arb_task() -> impl Strategy<Value = CompletedTask> {
        (1..20u32, prop::collection::vec(arb_run(), 1..6))
            .prop_map(|(complexity, steps)| CompletedTask { complexity, steps })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn any_valid_input_gives_a_finite_ordered_estimate(
            history in prop::collection::vec(arb_task(), 0..5),
            task in arb_task(),
            done in 0..6usize,
            elapsed in prop_oneof![Just(0.0), 0.0..1e7f64],
            fraction in 0.0..=1.0f64,
            at_s in 0.0..1e7f64,
        ) {
            let mut est = Estimator::default();
            for h in &history {
                est.record_task(h).unwrap();
            }
            let done = done.min(task.steps.len());
            let plan = TaskPlan {
                complexity: task.complexity,
                steps: task.steps.iter().map(|s| s.key.clone()).collect(),
                hints_s: Vec::new(),
            };
            let obs = Observation {
                completed_s: task.steps[..done].iter().map(|s| s.duration_s).collect(),
                running_elapsed_s: elapsed,
                progress: vec![ProgressSample { elapsed_s: at_s, fraction }],
            };
            let e = est.estimate(&plan, &obs).unwrap();
            prop_assert!(sane(&e), "{:?}", e);
            prop_assert_eq!(e.steps.len(), task.steps.len() - done);
            prop_assert!(e.steps.iter().all(|s| s.expected_s.is_finite() && s.expected_s >= 0.0));
            if done < task.steps.len() {
                prop_assert!(e.eta_seconds > 0.0);
            }
        }

        #[test]
        fn non_positive_durations_are_errors_not_panics(d in prop_oneof![Just(f64::NAN), Just(f64::NEG_INFINITY), -1e9..=0.0f64]) {
            let mut est = Estimator::default();
            let task = CompletedTask { complexity: 2, steps: vec![run("a", d)] };
            let rejected = matches!(est.record_task(&task), Err(EstimatorError::InvalidDuration { .. }));
            prop_assert!(rejected);
            let obs = at(&[d], 0.0);
            let rejected = matches!(est.estimate(&plan(2), &obs), Err(EstimatorError::InvalidDuration { .. }));
            prop_assert!(rejected);
        }
    }
}
