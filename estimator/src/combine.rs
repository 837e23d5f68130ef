//! Distribution maths: normal tails, truncation (censoring) and Fenton–Wilkinson sums.
//!
//! Everything here is closed form, so an estimate is deterministic and cheap enough to
//! recompute on every progress event (no Monte Carlo).

use statrs::function::erf::erfc;

/// z of the 90th percentile of the standard normal.
pub(crate) const Z90: f64 = 1.281_551_565_544_600_5;

/// Above this z the tail is taken from its asymptotic series, where `erfc` underflows.
const ASYMPTOTIC_TAIL_Z: f64 = 8.0;

/// ln Q(x), the log of the standard normal upper tail, accurate far into the tail.
pub(crate) fn ln_upper_tail(x: f64) -> f64 {
    if x < ASYMPTOTIC_TAIL_Z {
        return (0.5 * erfc(x / std::f64::consts::SQRT_2)).ln();
    }
    let x2 = x * x;
    let series = 1.0 - 1.0 / x2 + 3.0 / (x2 * x2);
    -0.5 * x2 - x.ln() - 0.5 * (2.0 * std::f64::consts::PI).ln() + series.ln()
}

/// φ(x) / Q(x), the inverse Mills ratio: how far a normal truncated below at x moves up.
fn inverse_mills(x: f64) -> f64 {
    let ln_pdf = -0.5 * x * x - 0.5 * (2.0 * std::f64::consts::PI).ln();
    (ln_pdf - ln_upper_tail(x)).exp()
}

/// A normal belief held as mean and variance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Gauss {
    pub(crate) mean: f64,
    pub(crate) var: f64,
}

/// Moment-matches N(mean, var) truncated below at `lower`: what remains known of a
/// quantity once we learn it exceeds `lower`.
pub(crate) fn truncate_below(g: Gauss, lower: f64) -> Gauss {
    let sd = g.var.sqrt();
    let a = (lower - g.mean) / sd;
    let lambda = inverse_mills(a);
    // The shrink factor is in (0, 1) mathematically; the floor guards rounding far in the tail.
    let shrink = (1.0 + a * lambda - lambda * lambda).clamp(1e-4, 1.0);
    Gauss { mean: g.mean + sd * lambda, var: g.var * shrink }
}

/// Mean and variance of a non-negative quantity.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct Moments {
    pub(crate) mean: f64,
    pub(crate) var: f64,
}

/// Moments of D − e given D > e, for ln D ~ N(mu, var): the rest of a step that has
/// already run `elapsed` seconds.
pub(crate) fn excess_moments(log_d: Gauss, elapsed: f64) -> Moments {
    let (mu, var) = (log_d.mean, log_d.var);
    if elapsed <= 0.0 {
        return lognormal_moments(log_d);
    }
    let sd = var.sqrt();
    let le = elapsed.ln();
    let base = ln_upper_tail((le - mu) / sd);
    let m1 = (mu + 0.5 * var + ln_upper_tail((le - mu - var) / sd) - base).exp();
    let m2 = (2.0 * mu + 2.0 * var + ln_upper_tail((le - mu - 2.0 * var) / sd) - base).exp();
    // Far in the tail the difference loses digits; floor it at a small share of the elapsed time.
    let mean = (m1 - elapsed).max(1e-3 * elapsed);
    let var = (m2 - m1 * m1).max(mean * mean * 1e-4);
    Moments { mean, var }
}

/// Moments of D for ln D ~ N(mu, var).
pub(crate) fn lognormal_moments(log_d: Gauss) -> Moments {
    let mean = (log_d.mean + 0.5 * log_d.var).exp();
    let var = (log_d.var.exp() - 1.0) * mean * mean;
    Moments { mean, var }
}

/// Fenton–Wilkinson: the log-normal with the given mean and variance, as N(mu, var) of its log.
pub(crate) fn fenton_wilkinson(m: Moments) -> Gauss {
    let var = (1.0 + m.var / (m.mean * m.mean)).ln();
    Gauss { mean: m.mean.ln() - 0.5 * var, var }
}

/// Moments of e^s · L for independent s ~ N(mean, var) and L with moments `l`: the later
/// steps all scaled by the task's shared speed factor.
pub(crate) fn scale_by_lognormal(l: Moments, s: Gauss) -> Moments {
    let mean = (s.mean + 0.5 * s.var).exp() * l.mean;
    let second = (2.0 * s.mean + 2.0 * s.var).exp() * (l.var + l.mean * l.mean);
    Moments { mean, var: (second - mean * mean).max(0.0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * b.abs().max(1.0)
    }

    #[test]
    fn upper_tail_matches_known_values_and_stays_finite() {
        let cases = [(0.0, 0.5), (1.0, 0.158_655_25), (Z90, 0.1), (-2.0, 0.977_249_87)];
        for (x, q) in cases {
            assert!(close(ln_upper_tail(x).exp(), q, 1e-6), "Q({x})");
        }
        // Both sides of the switch to the series agree, and far tails stay finite.
        assert!(close(ln_upper_tail(7.999), ln_upper_tail(8.0), 1e-3));
        assert!(ln_upper_tail(100.0).is_finite());
    }

    #[test]
    fn truncation_moves_mean_up_and_shrinks_variance() {
        let g = Gauss { mean: 0.0, var: 1.0 };
        let cases = [(-10.0, 0.0, 1.0), (0.0, 0.797_884_56, 0.363_380_23), (3.0, 3.283_16, 0.070_3)];
        for (lower, mean, var) in cases {
            let t = truncate_below(g, lower);
            assert!(close(t.mean, mean, 1e-3), "mean at {lower}: {}", t.mean);
            assert!(close(t.var, var, 1e-2), "var at {lower}: {}", t.var);
        }
        let far = truncate_below(g, 50.0);
        assert!(far.mean >= 50.0 && far.var > 0.0);
    }

    #[test]
    fn excess_grows_with_overrun_but_stays_positive() {
        let log_d = Gauss { mean: 100f64.ln(), var: 0.09 };
        let fresh = excess_moments(log_d, 0.0);
        assert!(close(fresh.mean, 100.0 * 0.045f64.exp(), 1e-9));
        let mut last_total = 0.0;
        for elapsed in [10.0, 50.0, 100.0, 200.0, 1000.0, 1e6] {
            let m = excess_moments(log_d, elapsed);
            assert!(m.mean > 0.0 && m.var > 0.0, "at {elapsed}");
            // The expected total (elapsed + rest) never drops as time passes.
            assert!(elapsed + m.mean >= last_total, "at {elapsed}");
            last_total = elapsed + m.mean;
        }
    }

    #[test]
    fn fenton_wilkinson_round_trips_lognormal_moments() {
        for (mean, var) in [(0.0, 0.01), (3.0, 0.25), (-2.0, 1.5)] {
            let g = Gauss { mean, var };
            let back = fenton_wilkinson(lognormal_moments(g));
            assert!(close(back.mean, mean, 1e-9) && close(back.var, var, 1e-9));
        }
    }

    #[test]
    fn scaling_by_a_point_mass_multiplies() {
        let l = Moments { mean: 10.0, var: 4.0 };
        let s = Gauss { mean: 2f64.ln(), var: 0.0 };
        let m = scale_by_lognormal(l, s);
        assert!(close(m.mean, 20.0, 1e-12) && close(m.var, 16.0, 1e-9));
    }
}
