//! How far an in-step progress sample is from the step's real length, learned per step kind.
//!
//! A sample "f done after t s" reads the step's duration as t / f. How biased and how noisy
//! that reading is depends on the kind's work pattern far more than on f alone: work spread
//! over parallel slots completes in waves (nothing is done until the first wave ends, so
//! early readings overshoot), equal substeps of uneven length undershoot or overshoot at
//! random, and uniform items read true. The pattern also changes with the task's size (a
//! small task's parallel step is one wave). So the error ln(t / f) − ln d is learned per
//! kind, tier and fraction band, shrunk towards the kind's band over all tiers, that towards
//! all kinds' band, and that towards an unbiased reading with variance ρ²(1 − f) / f.

use std::collections::BTreeMap;

use crate::combine::Gauss;
use crate::{ProgressSample, Tier};

/// Upper edges of the fraction bands. Narrow at the start, where the error changes fastest
/// with f and where a reading matters most (nothing else is known of the step yet).
const EDGES: [f64; 7] = [0.05, 0.1, 0.2, 0.35, 0.5, 0.7, 0.85];
const BANDS: usize = EDGES.len() + 1;
/// Variance of an unbiased reading per unit of (1 − f) / f before any history.
const PRIOR_NOISE: f64 = 0.15;
/// Pseudo-steps of the unbiased prior in all kinds' band.
const POOL_PRIOR_STEPS: f64 = 10.0;
/// Pseudo-steps of the coarser level in a kind's band and in a kind and tier's band: a
/// kind's own pattern needs a few dozen steps before it outweighs the pool.
const KIND_PRIOR_STEPS: f64 = 10.0;
/// Fractions this close to 1 are read as "almost done", not as an exact duration.
const MAX_FRACTION: f64 = 0.999;
/// Smallest variance of a reading, whatever the fraction.
const MIN_VAR: f64 = 0.003;

fn band(f: f64) -> usize {
    EDGES.partition_point(|&edge| edge <= f)
}

/// Variance of an unbiased reading in band `b`, at the band's middle fraction.
fn prior_var(b: usize) -> f64 {
    let lo = if b == 0 { 0.0 } else { EDGES[b - 1] };
    let hi = EDGES.get(b).copied().unwrap_or(1.0);
    let f = 0.5 * (lo + hi);
    PRIOR_NOISE * (1.0 - f) / f
}

/// Faded Σw, Σw·e, Σw·e² of the reading errors e in one band.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct ErrorSums {
    w: f64,
    e: f64,
    ee: f64,
}

impl ErrorSums {
    fn scaled(self, f: f64) -> ErrorSums {
        ErrorSums { w: self.w * f, e: self.e * f, ee: self.ee * f }
    }

    /// Bias and variance of the errors, shrunk towards `prior` as if it were `k` more steps.
    fn shrunk(&self, prior: Gauss, k: f64) -> Gauss {
        let w = self.w + k;
        let bias = (self.e + k * prior.mean) / w;
        let spread = self.ee - 2.0 * bias * self.e + self.w * bias * bias;
        Gauss { mean: bias, var: (spread.max(0.0) + k * prior.var) / w }
    }
}

/// One kind's (or all kinds') band sums, stamped with the task count at their last decay.
#[derive(Debug, Clone, Default, PartialEq)]
struct Bands {
    sums: [ErrorSums; BANDS],
    stamp: u64,
}

impl Bands {
    fn at(&self, band: usize, now: u64, ln_decay: f64) -> ErrorSums {
        self.sums[band].scaled((ln_decay * now.saturating_sub(self.stamp) as f64).exp())
    }

    /// Adds one step's mean error and mean squared error in each band it has samples in.
    fn add(&mut self, step: &[Option<(f64, f64)>; BANDS], now: u64, ln_decay: f64) {
        for (b, sums) in self.sums.iter_mut().enumerate() {
            *sums = sums.scaled((ln_decay * now.saturating_sub(self.stamp) as f64).exp());
            if let Some((e, ee)) = step[b] {
                *sums = ErrorSums { w: sums.w + 1.0, e: sums.e + e, ee: sums.ee + ee };
            }
        }
        self.stamp = now;
    }
}

/// One kind's band sums over all tiers and per tier.
#[derive(Debug, Clone, Default, PartialEq)]
struct KindBands {
    all: Bands,
    tiers: [Bands; 3],
}

/// The learned reading errors, per kind and tier, per kind and for all kinds.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ProgressModel {
    pooled: Bands,
    kinds: BTreeMap<String, KindBands>,
}

/// ln(t / f), the step's log duration as the sample reads it, with f capped just below 1;
/// `None` where that is not a finite number (nothing done, no time spent, or a fraction so
/// small that t / f overflows).
fn read(p: &ProgressSample) -> Option<f64> {
    let ln_d = (p.elapsed_s / p.fraction.min(MAX_FRACTION)).ln();
    (p.fraction > 0.0 && p.elapsed_s > 0.0 && ln_d.is_finite()).then_some(ln_d)
}

impl ProgressModel {
    /// Learns from a finished step of `duration` seconds. Each step weighs one per band
    /// however many samples it sent, since one step's samples share its work pattern.
    pub(crate) fn record(
        &mut self,
        key: &str,
        tier: Tier,
        duration: f64,
        samples: &[ProgressSample],
        now: u64,
        ln_decay: f64,
    ) {
        let mut acc = [(0.0, 0.0, 0.0); BANDS];
        // The last sample (f = 1) is the step's end, not a reading of it.
        for (p, ln_d) in samples.iter().filter(|p| p.fraction < 1.0).filter_map(|p| Some((p, read(p)?))) {
            let e = ln_d - duration.ln();
            let a = &mut acc[band(p.fraction)];
            *a = (a.0 + 1.0, a.1 + e, a.2 + e * e);
        }
        if acc.iter().all(|a| a.0 == 0.0) {
            return;
        }
        let step = acc.map(|(n, e, ee)| (n > 0.0).then(|| (e / n, ee / n)));
        self.pooled.add(&step, now, ln_decay);
        let kind = self.kinds.entry(key.to_owned()).or_default();
        kind.all.add(&step, now, ln_decay);
        kind.tiers[tier.index()].add(&step, now, ln_decay);
    }

    /// The running step's log duration as read from its latest usable sample, with the
    /// reading's variance, or `None` without such a sample.
    pub(crate) fn reading(
        &self,
        key: &str,
        tier: Tier,
        samples: &[ProgressSample],
        now: u64,
        ln_decay: f64,
    ) -> Option<Gauss> {
        let (latest, ln_d) = samples
            .iter()
            .filter_map(|p| Some((p, read(p)?)))
            .max_by(|a, b| a.0.elapsed_s.total_cmp(&b.0.elapsed_s))?;
        let b = band(latest.fraction.min(MAX_FRACTION));
        let unbiased = Gauss { mean: 0.0, var: prior_var(b) };
        let pooled = self.pooled.at(b, now, ln_decay).shrunk(unbiased, POOL_PRIOR_STEPS);
        let error = self.kinds.get(key).map_or(pooled, |kind| {
            let all = kind.all.at(b, now, ln_decay).shrunk(pooled, KIND_PRIOR_STEPS);
            kind.tiers[tier.index()].at(b, now, ln_decay).shrunk(all, KIND_PRIOR_STEPS)
        });
        Some(Gauss { mean: ln_d - error.mean, var: error.var.max(MIN_VAR) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(elapsed_s: f64, fraction: f64) -> ProgressSample {
        ProgressSample { elapsed_s, fraction }
    }

    #[test]
    fn bands_split_the_fractions() {
        for (f, b) in [(0.0, 0), (0.04, 0), (0.05, 1), (0.15, 2), (0.5, 5), (0.9, 7), (0.999, 7)] {
            assert_eq!(band(f), b, "{f}");
        }
    }

    #[test]
    fn without_history_a_reading_is_unbiased_and_surer_late_in_the_step() {
        let m = ProgressModel::default();
        // (elapsed, fraction, expected log duration)
        let cases = [(10.0, 0.1, 100f64.ln()), (50.0, 0.5, 100f64.ln()), (99.0, 0.99, 100f64.ln())];
        let mut last_var = f64::INFINITY;
        for (t, f, mean) in cases {
            let r = m.reading("a", Tier::Simple, &[sample(t, f)], 0, 0.0).unwrap();
            assert!((r.mean - mean).abs() < 1e-9, "{t} {f}: {r:?}");
            assert!(r.var < last_var && r.var >= MIN_VAR);
            last_var = r.var;
        }
        assert_eq!(m.reading("a", Tier::Simple, &[sample(0.0, 0.0), sample(0.0, 0.3)], 0, 0.0), None);
    }

    #[test]
    fn a_kind_that_overshoots_early_is_read_shorter() {
        let mut m = ProgressModel::default();
        // Kind "waves": a fifth done at 60 % of its 100 s (t / f = 300 s, three times too long).
        // Kind "even": a fifth done at 20 s, a true reading.
        for i in 0..200 {
            m.record("waves", Tier::Simple, 100.0, &[sample(60.0, 0.2)], i, 0.0);
            m.record("even", Tier::Simple, 100.0, &[sample(20.0, 0.2)], i, 0.0);
        }
        // (kind, expected duration read from the same sample: 30 s for a fifth)
        let cases = [("waves", 50.0), ("even", 150.0)];
        for (key, d) in cases {
            let r = m.reading(key, Tier::Simple, &[sample(30.0, 0.2)], 200, 0.0).unwrap();
            assert!((r.mean.exp() / d - 1.0).abs() < 0.1, "{key}: {}", r.mean.exp());
            assert!(r.var < 0.05, "{key}: {r:?}");
        }
        // A kind never seen borrows all kinds' band: halfway between the two.
        let unseen = m.reading("new", Tier::Simple, &[sample(30.0, 0.2)], 200, 0.0).unwrap().mean.exp();
        assert!((80.0..100.0).contains(&unseen), "{unseen}");
    }

    #[test]
    fn each_tier_keeps_its_own_pattern() {
        let mut m = ProgressModel::default();
        // One kind: simple tasks read three times too long at a fifth, complex ones true.
        for i in 0..200 {
            m.record("a", Tier::Simple, 100.0, &[sample(60.0, 0.2)], i, 0.0);
            m.record("a", Tier::Complex, 100.0, &[sample(20.0, 0.2)], i, 0.0);
        }
        // (tier, expected duration read from "a fifth after 30 s")
        let cases = [(Tier::Simple, 50.0), (Tier::Complex, 150.0), (Tier::Medium, 86.6)];
        for (tier, d) in cases {
            let read = m.reading("a", tier, &[sample(30.0, 0.2)], 200, 0.0).unwrap().mean.exp();
            assert!((read / d - 1.0).abs() < 0.1, "{tier:?}: {read}");
        }
    }

    #[test]
    fn samples_at_the_ends_teach_nothing() {
        let mut m = ProgressModel::default();
        m.record("a", Tier::Simple, 100.0, &[sample(0.0, 0.0), sample(100.0, 1.0)], 0, 0.0);
        assert_eq!(m, ProgressModel::default());
    }

    #[test]
    fn old_steps_fade() {
        let ln_decay = 0.5f64.ln();
        let mut m = ProgressModel::default();
        m.record("a", Tier::Simple, 100.0, &[sample(60.0, 0.2)], 0, ln_decay);
        assert!((m.pooled.at(band(0.2), 2, ln_decay).w - 0.25).abs() < 1e-12);
    }
}
