//! A generator of realistic synthetic traces: heavy-tailed log-normal step durations, a
//! per-task speed factor, drift over the trace, stalled and retried steps, and in-step
//! progress for some tasks. Seeded, so one seed always gives the same files.

/// Workflow templates (fixed step lists) drawn per task.
const TEMPLATES: usize = 6;
/// Log-sd of the per-task speed factor.
const SPEED_SD: f64 = 0.3;
/// Chance that a step stalls once (nothing completes for 10–80 % of its duration).
const STALL_PROB: f64 = 0.05;
/// Chance that a step fails part-way and is run again (both attempts in its row).
const RETRY_PROB: f64 = 0.03;
/// Share of tasks that report progress inside their steps.
const PROGRESS_SHARE: f64 = 0.2;
/// At most this many progress samples per step (evenly thinned, last kept).
const MAX_SAMPLES: usize = 30;

/// SplitMix64: tiny, seedable and good enough for test data.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// Uniform integer in lo..=hi.
    fn int(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.unit() * (hi - lo + 1) as f64) as usize
    }

    /// Standard normal (Box–Muller).
    fn normal(&mut self) -> f64 {
        let u = 1.0 - self.unit();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * self.unit()).cos()
    }

    fn exponential(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.unit()).ln()
    }
}

/// A step kind: median duration at complexity 3, growth exponent, log-sd.
struct Kind {
    name: String,
    median_s: f64,
    slope: f64,
    sd: f64,
}

fn templates(rng: &mut Rng) -> Vec<Vec<Kind>> {
    (0..TEMPLATES)
        .map(|t| {
            let steps = rng.int(3, 12);
            (0..steps)
                .map(|s| Kind {
                    name: format!("t{t}_step{s}"),
                    median_s: (rng.uniform(10f64.ln(), 1200f64.ln())).exp(),
                    slope: rng.uniform(0.0, 1.2),
                    sd: rng.uniform(0.3, 0.6),
                })
                .collect()
        })
        .collect()
}

/// A third of the tasks per tier, uniform within the tier.
fn complexity(rng: &mut Rng) -> u32 {
    match rng.int(0, 2) {
        0 => rng.int(1, 2) as u32,
        1 => rng.int(3, 5) as u32,
        _ => rng.int(6, 10) as u32,
    }
}

/// Progress samples of one attempt of `d` seconds starting at `offset`, cut at `until`:
/// items of uneven size complete one by one.
fn attempt_samples(rng: &mut Rng, offset: f64, d: f64, until: f64) -> Vec<(f64, f64)> {
    let items = rng.int(3, 40);
    let weights: Vec<f64> = (0..items).map(|_| (0.7 * rng.normal()).exp()).collect();
    let sum: f64 = weights.iter().sum();
    let mut acc = 0.0;
    let mut out = Vec::new();
    for (j, w) in weights.iter().enumerate() {
        acc += w / sum;
        let t = offset + acc * d;
        if t > until {
            break;
        }
        out.push((t, (j + 1) as f64 / items as f64));
    }
    out
}

/// Keeps at most MAX_SAMPLES, evenly spaced, the last one always.
fn thin(samples: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    let n = samples.len();
    if n <= MAX_SAMPLES {
        return samples;
    }
    (1..=MAX_SAMPLES).map(|i| samples[i * n / MAX_SAMPLES - 1]).collect()
}

/// Writes `n` tasks as `runs.csv` text, and their in-step samples as `progress.csv` text.
pub fn generate(n: usize, seed: u64) -> (String, String) {
    let mut rng = Rng(seed);
    let templates = templates(&mut rng);
    let mut runs = String::from("task_id,complexity,step_order,step_kind,start_s,end_s\n");
    let mut progress = String::from("task_id,step_order,t_s,fraction\n");
    for i in 0..n {
        let p = i as f64 / (n.max(2) - 1) as f64;
        let drift = (0.15 * p + 0.10 * (4.0 * std::f64::consts::PI * p).sin()).exp();
        let template = &templates[rng.int(0, TEMPLATES - 1)];
        let c = complexity(&mut rng);
        let speed = (SPEED_SD * rng.normal()).exp();
        let reports = rng.unit() < PROGRESS_SHARE;
        let id = format!("gen{:05}", i + 1);
        let mut clock = 0.0;
        for (order, kind) in template.iter().enumerate() {
            let work =
                kind.median_s * (f64::from(c) / 3.0).powf(kind.slope) * speed * drift * (kind.sd * rng.normal()).exp();
            let failed = if rng.unit() < RETRY_PROB { rng.uniform(0.1, 0.9) * work } else { 0.0 };
            let mut samples = Vec::new();
            if reports && failed > 0.0 {
                samples = attempt_samples(&mut rng, 0.0, work, failed);
            }
            if reports {
                samples.extend(attempt_samples(&mut rng, failed, work, f64::INFINITY));
            }
            let mut d = failed + work;
            if rng.unit() < STALL_PROB {
                let at = rng.uniform(0.0, d);
                let stall = rng.uniform(0.1, 0.8) * d;
                samples.iter_mut().filter(|s| s.0 > at).for_each(|s| s.0 += stall);
                d += stall;
            }
            clock += 0.2 + rng.exponential(1.0);
            let (start, end) = (clock, clock + d);
            runs.push_str(&format!("{id},{c},{},{},{start:.3},{end:.3}\n", order + 1, kind.name));
            for (t, f) in thin(samples) {
                let t = if f >= 1.0 { end - start } else { t.min(end - start) };
                progress.push_str(&format!("{id},{},{t:.3},{f:.4}\n", order + 1));
            }
            clock = end;
        }
    }
    (runs, progress)
}
