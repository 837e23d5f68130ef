//! Conformal calibration: the model's log-normal for the remaining time is re-centred and
//! re-scaled per tier and progress band, and per running step's kind within those, by the
//! quantiles of its past standardised errors.

use std::collections::{BTreeMap, VecDeque};

use crate::combine::{Gauss, Z90};
use crate::Tier;

/// Progress bands: the estimated share of the task done, in quarters.
const BANDS: usize = 4;
/// Scores kept per cell: enough for stable 10 % quantiles, few enough to follow drift.
const WINDOW: usize = 400;
/// Pseudo-scores of the coarser level mixed into a cell's quantiles.
const SHRINK: f64 = 30.0;
/// Pseudo-scores of the tier's cell mixed into a running kind's quantiles.
const KIND_SHRINK: f64 = 1000.0;
/// The probability levels calibrated.
const LEVELS: [f64; 3] = [0.1, 0.5, 0.9];

/// Standardised p10, p50, p90 of one cell.
type Table = [[[f64; 3]; BANDS]; 3];

/// The quantiles of a perfect model, for every cell.
const NORMAL_TABLE: Table = [[LEVELS_NORMAL; BANDS]; 3];
const LEVELS_NORMAL: [f64; 3] = [-Z90, 0.0, Z90];

/// Past standardised errors z = (ln actual − μ) / σ, per tier and progress band (and per
/// running kind, tier and band), and the shrunk quantiles they give (recomputed by [`Calibration::refresh`], so an estimate
/// only looks them up).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Calibration {
    cells: [[VecDeque<f64>; BANDS]; 3],
    table: Table,
    /// The same scores per running step's kind, tier and band, with their raw quantiles: a
    /// kind's duration shape (a makespan of parallel work is not log-normal, and its tail
    /// once it overruns is its own) biases the model in its own way, which the tier's cell
    /// averages away. Mixed into the tier's cell at query time, as KIND_SHRINK scores.
    kinds: BTreeMap<String, [[KindCell; BANDS]; 3]>,
}

#[derive(Debug, Clone, Default, PartialEq)]
struct KindCell {
    scores: VecDeque<f64>,
    quantiles: [f64; 3],
}

impl Default for Calibration {
    fn default() -> Calibration {
        Calibration { cells: Default::default(), table: NORMAL_TABLE, kinds: BTreeMap::new() }
    }
}

/// The band of a reading whose task is an estimated `done` share through.
pub(crate) fn band(done: f64) -> usize {
    ((done * BANDS as f64) as usize).min(BANDS - 1)
}

/// Calibrated p10, p50 and p90 in log space.
pub(crate) type LogQuantiles = [f64; 3];

impl Calibration {
    /// Records the standardised error of one reading; call [`Calibration::refresh`] after a
    /// batch.
    pub(crate) fn record(&mut self, tier: Tier, band: usize, kind: &str, z: f64) {
        let z = z.clamp(-20.0, 20.0);
        push(&mut self.cells[tier.index()][band], z);
        let cells = self.kinds.entry(kind.to_owned()).or_default();
        push(&mut cells[tier.index()][band].scores, z);
    }

    /// Recomputes every cell's quantiles: each cell is shrunk towards its whole tier, and
    /// the tier towards a perfect model's quantiles.
    pub(crate) fn refresh(&mut self) {
        for (tier_cells, tier_table) in self.cells.iter().zip(self.table.iter_mut()) {
            let mut whole: Vec<f64> = tier_cells.iter().flatten().copied().collect();
            let tier_q = shrunk(&mut whole, LEVELS_NORMAL);
            for (cell, q) in tier_cells.iter().zip(tier_table.iter_mut()) {
                let mut scores: Vec<f64> = cell.iter().copied().collect();
                *q = shrunk(&mut scores, tier_q);
            }
        }
        for cell in self.kinds.values_mut().flatten().flatten().filter(|c| !c.scores.is_empty()) {
            let mut scores: Vec<f64> = cell.scores.iter().copied().collect();
            scores.sort_by(f64::total_cmp);
            cell.quantiles = LEVELS.map(|p| quantile(&scores, p));
        }
    }

    /// The calibrated log quantiles of the remaining time for a model belief `g`.
    pub(crate) fn quantiles(&self, tier: Tier, band: usize, kind: &str, g: Gauss) -> LogQuantiles {
        let sd = g.var.sqrt();
        let table = self.table[tier.index()][band];
        let q = match self.kinds.get(kind).map(|cells| &cells[tier.index()][band]) {
            Some(cell) => mix(cell.quantiles, cell.scores.len(), table, KIND_SHRINK),
            None => table,
        };
        q.map(|z| g.mean + sd * z)
    }
}

fn push(cell: &mut VecDeque<f64>, z: f64) {
    if cell.len() == WINDOW {
        cell.pop_front();
    }
    cell.push_back(z);
}

/// The quantiles of `scores`, mixed with `fallback` as if it were SHRINK extra scores.
fn shrunk(scores: &mut [f64], fallback: [f64; 3]) -> [f64; 3] {
    if scores.is_empty() {
        return fallback;
    }
    scores.sort_by(f64::total_cmp);
    mix(LEVELS.map(|p| quantile(scores, p)), scores.len(), fallback, SHRINK)
}

/// Quantiles from `n` scores blended with `fallback` weighted as `weight` scores.
fn mix(own: [f64; 3], n: usize, fallback: [f64; 3], weight: f64) -> [f64; 3] {
    let n = n as f64;
    let mut out = fallback;
    for (q, o) in out.iter_mut().zip(own) {
        *q = (n * o + weight * *q) / (n + weight);
    }
    out
}

/// Linear-interpolated p-quantile of a sorted non-empty slice.
fn quantile(sorted: &[f64], p: f64) -> f64 {
    let pos = p * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNIT: Gauss = Gauss { mean: 0.0, var: 1.0 };

    #[test]
    fn quantile_interpolates() {
        let cases: [(&[f64], f64, f64); 4] = [
            (&[1.0], 0.9, 1.0),
            (&[1.0, 2.0, 3.0], 0.5, 2.0),
            (&[0.0, 10.0], 0.1, 1.0),
            (&[0.0, 1.0, 2.0, 3.0, 4.0], 0.9, 3.6),
        ];
        for (scores, p, q) in cases {
            assert!((quantile(scores, p) - q).abs() < 1e-12, "{scores:?} at {p}");
        }
    }

    #[test]
    fn empty_calibration_keeps_the_model_interval() {
        let q = Calibration::default().quantiles(Tier::Simple, 0, "a", Gauss { mean: 2.0, var: 0.25 });
        assert!((q[0] - (2.0 - 0.5 * Z90)).abs() < 1e-12);
        assert!((q[1] - 2.0).abs() < 1e-12 && (q[2] - (2.0 + 0.5 * Z90)).abs() < 1e-12);
    }

    #[test]
    fn overconfident_model_gets_wider_and_biased_model_recentred() {
        let mut c = Calibration::default();
        // Errors uniform on 1..=3 sds: the model is too low and too narrow.
        for i in 0..WINDOW {
            c.record(Tier::Medium, 2, "a", 1.0 + 2.0 * i as f64 / (WINDOW - 1) as f64);
        }
        c.refresh();
        let [p10, p50, p90] = c.quantiles(Tier::Medium, 2, "a", UNIT);
        assert!(p50 > 1.5 && p10 > 0.5 && p90 > 2.5, "{p10} {p50} {p90}");
        // Other tiers are untouched; other bands of the tier borrow from it.
        assert_eq!(c.quantiles(Tier::Simple, 2, "a", UNIT), [-Z90, 0.0, Z90]);
        assert!(c.quantiles(Tier::Medium, 0, "a", UNIT)[1] > 1.0);
    }

    #[test]
    fn a_running_kind_with_its_own_bias_is_recentred_within_its_tier() {
        let mut c = Calibration::default();
        // In the medium tier, kind "late" always ends one sd later than modelled, kind
        // "true" as modelled; in the simple tier "late" is as modelled.
        for i in 0..WINDOW {
            let noise = (i % 5) as f64 * 0.1 - 0.2;
            c.record(Tier::Medium, 1, "late", 1.0 + noise);
            c.record(Tier::Medium, 1, "true", noise);
            c.record(Tier::Simple, 1, "late", noise);
        }
        c.refresh();
        // (tier, kind, lower and upper bound of the calibrated median in sds): the tier's
        // cell says 0.5, each kind pulls it towards its own 1 or 0 by its share of the weight.
        let cases = [
            (Tier::Medium, "late", 0.6, 0.7),
            (Tier::Medium, "true", 0.3, 0.4),
            (Tier::Medium, "never ran", 0.45, 0.55),
            (Tier::Simple, "late", -0.05, 0.05),
        ];
        for (tier, kind, lo, hi) in cases {
            let p50 = c.quantiles(tier, 1, kind, UNIT)[1];
            assert!((lo..=hi).contains(&p50), "{tier:?} {kind}: {p50}");
        }
    }

    #[test]
    fn window_forgets_the_oldest_scores() {
        let mut c = Calibration::default();
        for _ in 0..WINDOW {
            c.record(Tier::Complex, 3, "a", 5.0);
        }
        for _ in 0..WINDOW {
            c.record(Tier::Complex, 3, "a", 0.0);
        }
        c.refresh();
        assert!(c.quantiles(Tier::Complex, 3, "a", UNIT)[1].abs() < 1e-12);
    }

    #[test]
    fn bands_cover_zero_to_one() {
        for (done, b) in [(0.0, 0), (0.24, 0), (0.25, 1), (0.6, 2), (0.99, 3), (1.0, 3), (7.0, 3)] {
            assert_eq!(band(done), b, "{done}");
        }
    }
}
