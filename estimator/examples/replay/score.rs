//! Replays traced tasks through the estimator and three baselines, and scores their readings.

use estimator::{CompletedTask, Estimator, Observation, StepRun, TaskPlan, Tier, READINGS_PER_TASK};

use crate::trace::TaskTrace;

/// tqdm's default smoothing factor for its rate EMA.
const TQDM_SMOOTHING: f64 = 0.3;

/// The methods scored, the estimator first.
pub const METHODS: [&str; 4] = ["estimator", "naive", "ema", "history_mean"];

/// One method's reading: its remaining-time estimate and 80 % range, if it had any.
struct Reading {
    eta: Option<f64>,
    range: Option<(f64, f64)>,
}

/// How far off one reading was.
#[derive(Clone, Copy)]
struct Score {
    ape_completion: f64,
    ape_remaining: f64,
    /// Whether the range held the actual end, and its width relative to the total duration.
    range: Option<(bool, f64)>,
}

/// Scores per method, per tier (the last slot is all tiers together).
#[derive(Default)]
pub struct Report {
    scores: [[Vec<Score>; 4]; METHODS.len()],
    tasks: [usize; 4],
}

/// The figures printed for one method and tier.
pub struct Metrics {
    pub tasks: usize,
    pub readings: usize,
    pub within: [f64; 3],
    pub median_ape_completion: f64,
    pub median_ape_remaining: f64,
    pub coverage_80: Option<f64>,
    pub width_80: Option<f64>,
    pub answered: f64,
}

/// Tier names in report order; the index of "all" is 3.
pub const TIER_NAMES: [&str; 4] = ["simple", "medium", "complex", "all"];

/// Replays `tasks` in order: each is estimated with the history of the tasks before it.
pub fn replay(tasks: &[TaskTrace]) -> Result<Report, String> {
    let mut est = Estimator::default();
    let mut history = HistoryMean::default();
    let mut report = Report::default();
    for task in tasks {
        let tier = Tier::of(task.complexity) as usize;
        report.tasks[tier] += 1;
        report.tasks[3] += 1;
        let plan = TaskPlan {
            complexity: task.complexity,
            steps: task.steps.iter().map(|s| s.kind.clone()).collect(),
            hints_s: Vec::new(),
        };
        let total = task.total();
        for k in 0..READINGS_PER_TASK {
            let t = total * k as f64 / READINGS_PER_TASK as f64;
            let obs = observation_at(task, t);
            let ours = est.estimate(&plan, &obs).map_err(|e| format!("task {}: {e}", task.id))?;
            let readings = [
                Reading { eta: Some(ours.eta_seconds), range: Some(ours.eta_range) },
                naive(task, &obs, t),
                ema(task, t),
                history.reading(task, &obs),
            ];
            for (m, r) in readings.iter().enumerate() {
                let s = score(r, t, total);
                report.scores[m][tier].push(s);
                report.scores[m][3].push(s);
            }
        }
        est.record_task(&completed(task)).map_err(|e| format!("task {}: {e}", task.id))?;
        history.record(task);
    }
    Ok(report)
}

impl Report {
    /// The figures of one method (index into [`METHODS`]) and tier (index into [`TIER_NAMES`]).
    pub fn metrics(&self, method: usize, tier: usize) -> Metrics {
        let scores = &self.scores[method][tier];
        // An empty tier has no shares: NaN prints as "-" and as JSON null.
        let n = if scores.is_empty() { f64::NAN } else { scores.len() as f64 };
        let share = |pred: &dyn Fn(&Score) -> bool| scores.iter().filter(|s| pred(s)).count() as f64 / n;
        let ranged: Vec<(bool, f64)> = scores.iter().filter_map(|s| s.range).collect();
        let m = ranged.len() as f64;
        let has_ranges = !ranged.is_empty();
        Metrics {
            tasks: self.tasks[tier],
            readings: scores.len(),
            within: [0.2, 0.3, 0.5].map(|x| share(&|s| s.ape_completion <= x)),
            median_ape_completion: median(scores.iter().map(|s| s.ape_completion).collect()),
            median_ape_remaining: median(scores.iter().map(|s| s.ape_remaining).collect()),
            coverage_80: has_ranges.then(|| ranged.iter().filter(|r| r.0).count() as f64 / n),
            width_80: has_ranges.then(|| ranged.iter().map(|r| r.1).sum::<f64>() / m),
            answered: share(&|s| s.ape_completion.is_finite()),
        }
    }
}

fn score(r: &Reading, t: f64, total: f64) -> Score {
    let remaining = total - t;
    let Some(eta) = r.eta else {
        return Score { ape_completion: f64::INFINITY, ape_remaining: f64::INFINITY, range: None };
    };
    Score {
        ape_completion: (t + eta - total).abs() / total,
        ape_remaining: (eta - remaining).abs() / remaining,
        range: r.range.map(|(lo, hi)| (lo <= remaining && remaining <= hi, (hi - lo) / total)),
    }
}

/// The median, counting a reading without an estimate as an infinite error.
fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        return v[mid];
    }
    (v[mid - 1] + v[mid]) / 2.0
}

/// What the runtime would have passed the estimator `t` seconds into the task.
fn observation_at(task: &TaskTrace, t: f64) -> Observation {
    let done = task.steps.iter().take_while(|s| s.end <= t).count();
    let completed_s = task.steps[..done].iter().map(|s| s.end - s.start).collect();
    let Some(step) = task.steps.get(done) else {
        return Observation { completed_s, ..Observation::default() };
    };
    let elapsed = (t - step.start).max(0.0);
    let progress = step.progress.iter().filter(|p| p.elapsed_s <= elapsed).copied().collect();
    Observation { completed_s, running_elapsed_s: elapsed, progress }
}

/// The finished task as the runtime would record it.
fn completed(task: &TaskTrace) -> CompletedTask {
    let steps = task
        .steps
        .iter()
        .map(|s| StepRun { key: s.kind.clone(), duration_s: s.end - s.start, progress: s.progress.clone() })
        .collect();
    CompletedTask { complexity: task.complexity, steps }
}

/// Share of the task done as a progress bar over its steps would show it.
fn fraction_done(task: &TaskTrace, obs: &Observation) -> f64 {
    let in_step = obs.progress.last().map_or(0.0, |p| p.fraction);
    (obs.completed_s.len() as f64 + in_step) / task.steps.len() as f64
}

/// Naive extrapolation: elapsed ÷ fraction done; nothing before the first progress.
fn naive(task: &TaskTrace, obs: &Observation, t: f64) -> Reading {
    let f = fraction_done(task, obs);
    let eta = (f > 0.0).then(|| t / f - t);
    Reading { eta, range: None }
}

/// tqdm's estimate: exponential moving averages of the progress and time between updates
/// (bias-corrected as tqdm does), remaining = (1 − done) / (smoothed rate). An update is a
/// step completion or an in-step progress sample.
fn ema(task: &TaskTrace, t: f64) -> Reading {
    let n = task.steps.len() as f64;
    let mut updates = Vec::new();
    for (i, s) in task.steps.iter().enumerate() {
        let inner = s.progress.iter().filter(|p| p.fraction < 1.0);
        updates.extend(inner.map(|p| (s.start + p.elapsed_s, (i as f64 + p.fraction) / n)));
        updates.push((s.end, (i + 1) as f64 / n));
    }
    let (mut last_t, mut last_n, mut dn, mut dt, mut calls) = (0.0, 0.0, 0.0, 0.0, 0);
    for &(te, ne) in updates.iter().take_while(|u| u.0 <= t) {
        dn = TQDM_SMOOTHING * (ne - last_n) + (1.0 - TQDM_SMOOTHING) * dn;
        dt = TQDM_SMOOTHING * (te - last_t) + (1.0 - TQDM_SMOOTHING) * dt;
        (last_t, last_n, calls) = (te, ne, calls + 1);
    }
    // The bias correction divides dn and dt alike, so it cancels in the rate.
    let eta = (calls > 0 && dn > 0.0).then(|| (1.0 - last_n) * dt / dn);
    Reading { eta, range: None }
}

/// Past durations per step kind, sorted, for the history-mean baseline.
#[derive(Default)]
struct HistoryMean {
    kinds: std::collections::HashMap<String, Vec<f64>>,
    all: Vec<f64>,
}

impl HistoryMean {
    fn record(&mut self, task: &TaskTrace) {
        for s in &task.steps {
            let d = s.end - s.start;
            insert_sorted(self.kinds.entry(s.kind.clone()).or_default(), d);
            insert_sorted(&mut self.all, d);
        }
    }

    /// Per remaining step: the mean past duration of its kind (of all steps for a new kind),
    /// less the running step's elapsed time; the range sums the kinds' 10th and 90th percentiles.
    fn reading(&self, task: &TaskTrace, obs: &Observation) -> Reading {
        if self.all.is_empty() {
            return Reading { eta: None, range: None };
        }
        let (mut eta, mut lo, mut hi) = (0.0, 0.0, 0.0);
        let running = obs.completed_s.len();
        for (i, s) in task.steps.iter().enumerate().skip(running) {
            let past = self.kinds.get(&s.kind).unwrap_or(&self.all);
            let elapsed = if i == running { obs.running_elapsed_s } else { 0.0 };
            let mean = past.iter().sum::<f64>() / past.len() as f64;
            eta += (mean - elapsed).max(0.0);
            lo += (percentile(past, 0.1) - elapsed).max(0.0);
            hi += (percentile(past, 0.9) - elapsed).max(0.0);
        }
        Reading { eta: Some(eta), range: Some((lo, hi)) }
    }
}

fn insert_sorted(v: &mut Vec<f64>, x: f64) {
    let at = v.partition_point(|&y| y < x);
    v.insert(at, x);
}

/// Nearest-rank percentile of a sorted non-empty slice.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = (p * (sorted.len() - 1) as f64).round() as usize;
    sorted[i]
}
