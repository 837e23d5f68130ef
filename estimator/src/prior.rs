//! Per-step-kind log-normal priors: ln d = a + b·(ln c − ln 3) + noise, fitted by weighted
//! least squares on decayed sufficient statistics and shrunk towards a pooled prior.
//!
//! Each kind keeps six running sums, so recording a run is O(1) and old runs fade by a
//! constant factor per recorded task (recency weighting) without being stored.

use std::collections::BTreeMap;

use statrs::distribution::{ContinuousCDF, StudentsT};

use crate::combine::Z90;
use crate::{Config, Tier};

/// Complexity at which the intercept is read: the middle of the medium tier, so the
/// intercept and slope are nearly uncorrelated on typical histories.
const CENTRE_COMPLEXITY: f64 = 3.0;
/// Pseudo-runs of the pooled noise variance added to every kind's variance estimate, so one
/// or two runs never claim a near-zero spread.
const NOISE_PRIOR_RUNS: f64 = 2.0;
/// Pseudo-runs of the kind's whole spread in a tier's own spread: a tier needs a few dozen
/// runs before its spread counts for more than the kind's.
const TIER_NOISE_PRIOR_RUNS: f64 = 10.0;
/// Pseudo-kinds at the cold-start spread added to the between-kind spread.
const SPREAD_PRIOR_KINDS: f64 = 2.0;
/// Weight (in units of Σw·x²) of the cold-start slope in the pooled slope.
const SLOPE_PRIOR_WEIGHT: f64 = 1.0;
/// Prior sd of a kind's own slope around the pooled slope.
const SLOPE_PRIOR_SD: f64 = 0.5;
/// Spread of a kind's log-duration around the pooled regression when nothing is known.
const COLD_NOISE_SD: f64 = 0.5;
/// How far apart the typical durations of different kinds are (log-sd) before any history.
const COLD_KIND_SD: f64 = 1.0;
/// How far a plan's stated duration is taken to be from the step's real one (log-sd 0.2:
/// within about ±25 % four times in five).
const HINT_SD: f64 = 0.2;

/// The regressor: log complexity, centred.
pub(crate) fn regressor(complexity: u32) -> f64 {
    f64::from(complexity).ln() - CENTRE_COMPLEXITY.ln()
}

/// Weighted sums Σw, Σwx, Σwx², Σwy, Σwxy, Σwy² of one kind's runs.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Sums {
    w: f64,
    wx: f64,
    wxx: f64,
    wy: f64,
    wxy: f64,
    wyy: f64,
}

impl Sums {
    /// The sums with one more run of full weight.
    fn plus(self, x: f64, y: f64) -> Sums {
        Sums {
            w: self.w + 1.0,
            wx: self.wx + x,
            wxx: self.wxx + x * x,
            wy: self.wy + y,
            wxy: self.wxy + x * y,
            wyy: self.wyy + y * y,
        }
    }

    fn scaled(self, f: f64) -> Sums {
        Sums {
            w: self.w * f,
            wx: self.wx * f,
            wxx: self.wxx * f,
            wy: self.wy * f,
            wxy: self.wxy * f,
            wyy: self.wyy * f,
        }
    }

    /// Weighted residual sum of squares of the line y = a + b·x.
    fn rss(&self, a: f64, b: f64) -> f64 {
        let cross = a * self.wy + b * self.wxy;
        let fit = a * a * self.w + 2.0 * a * b * self.wx + b * b * self.wxx;
        (self.wyy - 2.0 * cross + fit).max(0.0)
    }

    /// Within-kind centred Σw(x−x̄)(y−ȳ) and Σw(x−x̄)².
    fn centred(&self) -> (f64, f64) {
        (self.wxy - self.wx * self.wy / self.w, self.wxx - self.wx * self.wx / self.w)
    }
}

/// One kind's decayed sums, in all and per tier, stamped with the task count at which they
/// were last decayed.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct KindStats {
    sums: Sums,
    /// The same runs split by tier: the line is fitted to all of them, the spread per tier.
    tiers: [Sums; 3],
    stamp: u64,
}

impl KindStats {
    /// The sums as seen after `now` recorded tasks.
    pub(crate) fn at(&self, now: u64, ln_decay: f64) -> Sums {
        self.sums.scaled(self.decay(now, ln_decay))
    }

    /// The per-tier sums as seen after `now` recorded tasks.
    fn tiers_at(&self, now: u64, ln_decay: f64) -> [Sums; 3] {
        let f = self.decay(now, ln_decay);
        self.tiers.map(|t| t.scaled(f))
    }

    fn decay(&self, now: u64, ln_decay: f64) -> f64 {
        (ln_decay * now.saturating_sub(self.stamp) as f64).exp()
    }

    /// Adds one run of a task of tier `tier` with full weight.
    pub(crate) fn add(&mut self, tier: Tier, x: f64, y: f64, now: u64, ln_decay: f64) {
        self.sums = self.at(now, ln_decay).plus(x, y);
        self.tiers = self.tiers_at(now, ln_decay);
        self.tiers[tier.index()] = self.tiers[tier.index()].plus(x, y);
        self.stamp = now;
    }
}

/// What all kinds together say about a kind: used alone for a kind never seen and as the
/// shrinkage target for kinds with few runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Pooled {
    slope: f64,
    intercept: f64,
    /// Variance of a new kind's intercept around `intercept`.
    kind_var: f64,
    /// Within-kind residual variance.
    noise_var: f64,
    /// Kinds with history.
    pub(crate) kinds: usize,
}

impl Pooled {
    /// The pooled prior before any history: the configured cold-start guess.
    pub(crate) fn cold(config: &Config) -> Pooled {
        Pooled {
            slope: config.cold_slope,
            intercept: config.cold_step_s.ln(),
            kind_var: COLD_KIND_SD * COLD_KIND_SD,
            noise_var: COLD_NOISE_SD * COLD_NOISE_SD,
            kinds: 0,
        }
    }

    /// Pools the kinds: a within-kind slope, the mean and spread of the kinds' intercepts,
    /// and the mean residual variance, each blended with the cold-start guess.
    pub(crate) fn fit(kinds: &[Sums], config: &Config) -> Pooled {
        let cold = Pooled::cold(config);
        let kinds: Vec<Sums> = kinds.iter().copied().filter(|s| s.w > 1e-9).collect();
        if kinds.is_empty() {
            return cold;
        }
        let (sxy, sxx) = kinds.iter().map(Sums::centred).fold((0.0, 0.0), |acc, c| (acc.0 + c.0, acc.1 + c.1));
        let slope = (sxy + SLOPE_PRIOR_WEIGHT * cold.slope) / (sxx + SLOPE_PRIOR_WEIGHT);
        let intercepts: Vec<f64> = kinds.iter().map(|s| (s.wy - slope * s.wx) / s.w).collect();
        let n = intercepts.len() as f64;
        let intercept = intercepts.iter().sum::<f64>() / n;
        let spread: f64 = intercepts.iter().map(|a| (a - intercept).powi(2)).sum();
        let kind_var = (spread + SPREAD_PRIOR_KINDS * cold.kind_var) / (n - 1.0 + SPREAD_PRIOR_KINDS) * (1.0 + 1.0 / n);
        let rss: f64 = kinds.iter().zip(&intercepts).map(|(s, &a)| s.rss(a, slope)).sum();
        let runs: f64 = kinds.iter().map(|s| s.w).sum();
        let noise_var = (rss + NOISE_PRIOR_RUNS * cold.noise_var) / (runs + NOISE_PRIOR_RUNS);
        Pooled { slope, intercept, kind_var, noise_var, kinds: kinds.len() }
    }

    /// The prediction for a kind without history.
    pub(crate) fn predict(&self, x: f64) -> Prediction {
        Prediction {
            mean: self.intercept + self.slope * x,
            noise_var: self.noise_var,
            param_var: self.kind_var,
            heavy_tail: 1.0,
            runs: 0.0,
        }
    }
}

/// A kind's fitted line with what is needed for its Student-t predictive.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct KindFit {
    intercept: f64,
    slope: f64,
    /// Upper triangle (11, 12, 22) of the inverse of the regularised normal matrix.
    inverse: [f64; 3],
    noise_var: f64,
    /// Residual variance around the line per tier: spread often grows with complexity.
    tier_noise: [f64; 3],
    heavy_tail: f64,
    runs: f64,
}

impl KindFit {
    /// Bayesian line fit: the pooled intercept and slope act as pseudo-observations whose
    /// weight is the noise-to-prior variance ratio, so a kind with few runs stays near the
    /// pool and one with many follows its own data. The spread around the line is then
    /// estimated per tier from `tiers`, shrunk towards the kind's whole spread.
    pub(crate) fn fit(s: &Sums, tiers: &[Sums; 3], pooled: &Pooled) -> KindFit {
        let k_a = pooled.noise_var / pooled.kind_var;
        let k_b = pooled.noise_var / (SLOPE_PRIOR_SD * SLOPE_PRIOR_SD);
        let (a11, a12, a22) = (s.w + k_a, s.wx, s.wxx + k_b);
        let det = a11 * a22 - a12 * a12;
        let inverse = [a22 / det, -a12 / det, a11 / det];
        let r1 = s.wy + k_a * pooled.intercept;
        let r2 = s.wxy + k_b * pooled.slope;
        let intercept = inverse[0] * r1 + inverse[1] * r2;
        let slope = inverse[1] * r1 + inverse[2] * r2;
        let rss = s.rss(intercept, slope);
        let noise_var = (rss + NOISE_PRIOR_RUNS * pooled.noise_var) / (s.w + NOISE_PRIOR_RUNS);
        let dof = (s.w + NOISE_PRIOR_RUNS - 1.0).max(1.0);
        let k = TIER_NOISE_PRIOR_RUNS;
        let tier_noise = tiers.map(|t| (t.rss(intercept, slope) + k * noise_var) / (t.w + k));
        KindFit { intercept, slope, inverse, noise_var, tier_noise, heavy_tail: heavy_tail_factor(dof), runs: s.w }
    }

    /// The predictive for log duration at regressor `x` of a task of tier `tier`.
    pub(crate) fn predict(&self, tier: Tier, x: f64) -> Prediction {
        let [i11, i12, i22] = self.inverse;
        let leverage = i11 + 2.0 * i12 * x + i22 * x * x;
        Prediction {
            mean: self.intercept + self.slope * x,
            noise_var: self.tier_noise[tier.index()],
            param_var: self.noise_var * leverage,
            heavy_tail: self.heavy_tail,
            runs: self.runs,
        }
    }
}

/// How much wider a Student-t with `dof` degrees of freedom is than a normal at its 10 % and
/// 90 % points, squared: the variance factor that lets the normal maths below carry the
/// small-sample uncertainty of a kind with few runs.
fn heavy_tail_factor(dof: f64) -> f64 {
    StudentsT::new(0.0, 1.0, dof).map(|t| (t.inverse_cdf(0.9) / Z90).powi(2)).unwrap_or(1.0).max(1.0)
}

/// A predictive for one step's log duration, split into the parts the live update needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Prediction {
    /// Predicted mean of ln(duration).
    pub(crate) mean: f64,
    /// Run-to-run residual variance of the kind (task speed included).
    pub(crate) noise_var: f64,
    /// Uncertainty of the fitted mean itself.
    pub(crate) param_var: f64,
    /// Student-t variance factor for small samples (1 for many runs).
    pub(crate) heavy_tail: f64,
    /// Effective (decayed) number of runs behind the prediction.
    pub(crate) runs: f64,
}

impl Prediction {
    /// The prediction once the plan states the step's duration (`hint_s` work seconds). For
    /// a kind without history the hint is the prediction; otherwise it is one more reading
    /// of the kind's typical duration, weighed against the fit's own uncertainty, so a kind
    /// with long history moves little and a timer set to a new length is believed.
    pub(crate) fn hinted(self, hint_s: Option<f64>) -> Prediction {
        let Some(hint_s) = hint_s else {
            return self;
        };
        let hint_var = HINT_SD * HINT_SD;
        if self.runs <= 0.0 {
            return Prediction { mean: hint_s.ln(), noise_var: hint_var, param_var: 0.0, heavy_tail: 1.0, runs: 1.0 };
        }
        let precision = 1.0 / self.param_var + 1.0 / hint_var;
        Prediction {
            mean: (self.mean / self.param_var + hint_s.ln() / hint_var) / precision,
            param_var: 1.0 / precision,
            ..self
        }
    }

    /// Variance of the part of the step's log duration that is not shared with the task's
    /// other steps, once the task's speed factor (variance `task_var`) is taken out.
    pub(crate) fn own_var(&self, task_var: f64) -> f64 {
        // A kind tighter than the average task effect still keeps a fifth of its spread.
        let own_noise = (self.noise_var - task_var).max(0.2 * self.noise_var);
        self.heavy_tail * (own_noise + self.param_var)
    }
}

/// Every kind's fit, plus the pool for kinds not seen yet.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Priors {
    pub(crate) pooled: Pooled,
    fits: BTreeMap<String, KindFit>,
}

impl Priors {
    /// Priors before any history.
    pub(crate) fn cold(config: &Config) -> Priors {
        Priors { pooled: Pooled::cold(config), fits: BTreeMap::new() }
    }

    /// Fits all kinds from their sums as of `now`.
    pub(crate) fn fit(stats: &BTreeMap<String, KindStats>, now: u64, config: &Config) -> Priors {
        let ln_decay = config.ln_decay();
        let sums: Vec<(&String, Sums)> = stats.iter().map(|(k, s)| (k, s.at(now, ln_decay))).collect();
        let all: Vec<Sums> = sums.iter().map(|(_, s)| *s).collect();
        let pooled = Pooled::fit(&all, config);
        let fits = sums
            .into_iter()
            .map(|(k, s)| (k.clone(), KindFit::fit(&s, &stats[k].tiers_at(now, ln_decay), &pooled)))
            .collect();
        Priors { pooled, fits }
    }

    /// The predictive of a step with this key at this complexity.
    pub(crate) fn predict(&self, key: &str, complexity: u32) -> Prediction {
        let x = regressor(complexity);
        match self.fits.get(key) {
            Some(fit) => fit.predict(Tier::of(complexity), x),
            None => self.pooled.predict(x),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats_of(runs: &[(u32, f64)]) -> KindStats {
        let mut k = KindStats::default();
        for &(c, d) in runs {
            k.add(Tier::of(c), regressor(c), d.ln(), 0, 0.0);
        }
        k
    }

    fn prior_from(kinds: &[(&str, &[(u32, f64)])]) -> Priors {
        let stats = kinds.iter().map(|(k, runs)| (k.to_string(), stats_of(runs))).collect();
        Priors::fit(&stats, 0, &Config::default())
    }

    /// A kind's runs as (complexity, seconds).
    type Runs<'a> = &'a [(u32, f64)];

    #[test]
    fn fitted_median_follows_the_kinds_runs() {
        // (runs of kind "a", complexity asked, expected median, tolerance in log units)
        let linear: Vec<(u32, f64)> = (1..=10).flat_map(|c| [(c, 10.0 * c as f64); 5]).collect();
        let flat: Vec<(u32, f64)> = (1..=10).map(|c| (c, 30.0)).collect();
        let cases: [(Runs, u32, f64, f64); 4] = [
            (&linear, 1, 10.0, 0.05),
            (&linear, 8, 80.0, 0.05),
            (&flat, 7, 30.0, 0.05),
            (&[(3, 100.0)], 3, 100.0, 0.05),
        ];
        for (runs, c, median, tol) in cases {
            let p = prior_from(&[("a", runs)]).predict("a", c);
            assert!((p.mean - median.ln()).abs() < tol, "{c}: {}", p.mean.exp());
        }
    }

    #[test]
    fn few_runs_get_heavier_tails_and_wider_spread_than_many() {
        let few = prior_from(&[("a", &[(3, 100.0), (3, 120.0)])]).predict("a", 3);
        let many_runs: Vec<(u32, f64)> = (0..200).map(|i| (3, 100.0 + 20.0 * (i % 2) as f64)).collect();
        let many = prior_from(&[("a", &many_runs)]).predict("a", 3);
        assert!(few.heavy_tail > 1.5 && many.heavy_tail < 1.05);
        assert!(few.own_var(0.0) > many.own_var(0.0));
    }

    #[test]
    fn spread_is_estimated_per_tier() {
        // Kind "a": simple runs alternate ±0.1 around the line, complex runs ±0.5.
        let wobble =
            |c: u32, sd: f64| (0..40).map(move |i| (c, 100.0 * (sd * if i % 2 == 0 { 1.0 } else { -1.0 }).exp()));
        let runs: Vec<(u32, f64)> = wobble(1, 0.1).chain(wobble(8, 0.5)).collect();
        let priors = prior_from(&[("a", &runs)]);
        // (complexity asked, lower and upper bound of the predicted noise variance)
        let cases = [(1, 0.005, 0.06), (2, 0.005, 0.06), (4, 0.09, 0.2), (8, 0.2, 0.3)];
        for (c, lo, hi) in cases {
            let v = priors.predict("a", c).noise_var;
            assert!((lo..hi).contains(&v), "complexity {c}: {v}");
        }
    }

    #[test]
    fn unknown_kind_uses_the_pool_with_wide_spread() {
        let priors = prior_from(&[("a", &[(3, 10.0); 20]), ("b", &[(3, 1000.0); 20])]);
        let p = priors.predict("c", 3);
        assert!((p.mean - 100f64.ln()).abs() < 1e-6, "geometric mean of kinds");
        assert!(p.param_var > 4.0, "kinds two orders apart: {}", p.param_var);
        assert_eq!(p.runs, 0.0);
    }

    #[test]
    fn cold_prior_is_the_configured_guess() {
        let p = Priors::cold(&Config::default()).predict("x", 3);
        assert!((p.mean.exp() - Config::default().cold_step_s).abs() < 1e-9);
    }

    #[test]
    fn decay_fades_old_runs() {
        let mut k = KindStats::default();
        let ln_decay = 0.5f64.ln();
        k.add(Tier::Medium, 0.0, 1.0, 0, ln_decay);
        k.add(Tier::Medium, 0.0, 3.0, 1, ln_decay);
        let s = k.at(1, ln_decay);
        // Weights 0.5 and 1: the weighted mean is (0.5·1 + 3) / 1.5.
        assert!((s.wy / s.w - 3.5 / 1.5).abs() < 1e-12);
        assert!((k.at(3, ln_decay).w - 1.5 / 4.0).abs() < 1e-12);
    }

    #[test]
    fn shrinkage_pulls_a_one_run_kind_towards_the_pool_slope() {
        // Kind "b" seen once at complexity 1; the pool says durations double per doubling.
        let pool: Vec<(u32, f64)> = [1, 2, 4, 8].iter().flat_map(|&c| [(c, 10.0 * c as f64); 10]).collect();
        let priors = prior_from(&[("a", &pool), ("b", &[(1, 50.0)])]);
        let at_8 = priors.predict("b", 8).mean.exp();
        assert!(at_8 > 200.0 && at_8 < 500.0, "b at 8: {at_8}");
    }
}
