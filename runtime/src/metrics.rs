//! The runtime's metrics, in a Prometheus registry of its own: one per [`Runtime`], so
//! several servers in one process (the tests, an application that embeds two) keep their
//! figures apart, which a process-wide recorder would mix. The server around the runtime
//! adds its own series to the same registry and exposes it (the `stepwise` binary:
//! `GET /metrics`). Every series is named `stepwise_…` by the registry itself. Counting is
//! an atomic add; a series by kind is found by its label, which only step events (not
//! percents) pay.
//!
//! [`Runtime`]: crate::Runtime

use std::time::Duration;

use db::StepRecord;
use prometheus::core::Collector;
use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use crate::event::EventKind;

/// What every series' name starts with (then `_`).
pub const PREFIX: &str = "stepwise";

/// Work time of steps, seconds: a second to a day.
const STEP_SECONDS: &[f64] =
    &[1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0];

/// A transition's commit, seconds: half a millisecond (SQLite) to seconds (a stalled database).
const COMMIT_SECONDS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

/// A task's real work time over its estimate at start: 1 is exact, 2 took twice as long.
/// Chosen over the absolute error because it reads the same for a minute's task and a
/// day's.
const ETA_RATIO: &[f64] = &[0.25, 0.5, 0.67, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0, 4.0];

/// The runtime's series, registered in [`Metrics::registry`].
pub struct Metrics {
    registry: Registry,
    steps_started: IntCounterVec,
    steps_completed: IntCounterVec,
    steps_failed: IntCounterVec,
    step_seconds: HistogramVec,
    progress_events: IntCounter,
    commit_seconds: Histogram,
    eta_ratio: Histogram,
    pub(crate) hub: HubMetrics,
}

/// The hub's series, which the hub actor keeps.
#[derive(Clone)]
pub(crate) struct HubMetrics {
    /// Subscriptions now.
    pub subscribers: IntGauge,
    /// Events a bounded subscriber (a WebSocket session) lost because it lagged.
    pub lagged_drops: IntCounter,
    /// Percents, log lines and estimates dropped because the hub itself fell behind.
    pub transient_drops: IntCounter,
}

impl Metrics {
    /// A fresh registry with the runtime's series in it.
    pub(crate) fn new() -> Metrics {
        let registry = Registry::new_custom(Some(PREFIX.to_owned()), None).expect("a valid prefix");
        let counter = |name: &str, help: &str| register(&registry, IntCounter::new(name, help));
        let by_kind =
            |name: &str, help: &str| register(&registry, IntCounterVec::new(Opts::new(name, help), &["kind"]));
        let histogram = |name: &str, help: &str, buckets: &[f64]| {
            register(&registry, Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec())))
        };
        Metrics {
            steps_started: by_kind("steps_started_total", "Step attempts started, by step kind."),
            steps_completed: by_kind("steps_completed_total", "Steps completed, by step kind."),
            steps_failed: by_kind("steps_failed_total", "Step attempts failed, by step kind."),
            step_seconds: register(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new("step_duration_seconds", "Work time of completed steps, by step kind.")
                        .buckets(STEP_SECONDS.to_vec()),
                    &["kind"],
                ),
            ),
            progress_events: counter(
                "progress_events_total",
                "Percents raised by the steps of tasks running here (rate() gives events per second).",
            ),
            commit_seconds: histogram(
                "commit_duration_seconds",
                "Time to commit one state transition to the database.",
                COMMIT_SECONDS,
            ),
            eta_ratio: histogram(
                "eta_ratio",
                "Completed tasks' real work time over the estimate made when they started (1 is exact).",
                ETA_RATIO,
            ),
            hub: HubMetrics {
                subscribers: register(&registry, IntGauge::new("hub_subscribers", "Subscriptions to the event hub.")),
                lagged_drops: counter(
                    "hub_lagged_drops_total",
                    "Events dropped for subscribers that fell behind (each resynchronises from the database).",
                ),
                transient_drops: counter(
                    "hub_transient_drops_total",
                    "Percents, log lines and estimates dropped because the hub fell behind their publishers.",
                ),
            },
            registry,
        }
    }

    /// The registry: the runtime's series, and those its server adds.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Adds a series of the server's (made with a name without the `stepwise_` prefix,
    /// which the registry adds) and hands it back to count with.
    pub fn register<C: Collector + Clone + 'static>(&self, collector: prometheus::Result<C>) -> C {
        register(&self.registry, collector)
    }

    /// Counts the steps that a committed transition (`events`, with the task's `steps`
    /// after it) started, completed or failed.
    pub(crate) fn committed(&self, steps: &[StepRecord], events: &[EventKind]) {
        for event in events {
            let (series, order) = match event {
                EventKind::StepStarted { step, .. } => (&self.steps_started, *step),
                EventKind::StepCompleted { step, .. } => (&self.steps_completed, *step),
                EventKind::StepFailed { step, .. } => (&self.steps_failed, *step),
                _ => continue,
            };
            let Some(step) = steps.iter().find(|s| s.order == order) else { continue };
            series.with_label_values(&[step.kind.as_str()]).inc();
            if let EventKind::StepCompleted { duration_ms, .. } = event {
                let seconds = *duration_ms as f64 / 1000.0;
                self.step_seconds.with_label_values(&[step.kind.as_str()]).observe(seconds);
            }
        }
    }

    /// A running step's percent rose.
    pub(crate) fn progress_event(&self) {
        self.progress_events.inc();
    }

    /// A transition's commit took `took`.
    pub(crate) fn commit_took(&self, took: Duration) {
        self.commit_seconds.observe(took.as_secs_f64());
    }

    /// A task completed after `work_s` seconds of work; it was estimated at `estimated_s`
    /// when it started.
    pub(crate) fn task_completed(&self, estimated_s: f64, work_s: f64) {
        if estimated_s > 0.0 {
            self.eta_ratio.observe(work_s / estimated_s);
        }
    }
}

/// Registers `collector` in `registry` and hands it back. Names and labels are constants,
/// so making one fails only by a mistake in the code, which every start (so every test)
/// shows at once. A registry that has the series already (a second server built on one
/// runtime) keeps the first, and this one counts unseen.
fn register<C: Collector + Clone + 'static>(registry: &Registry, collector: prometheus::Result<C>) -> C {
    let collector = collector.expect("a valid metric");
    if let Err(error) = registry.register(Box::new(collector.clone())) {
        tracing::warn!(%error, "a metric is registered already; these figures of it are not exposed");
    }
    collector
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::machine::fixtures::{step_record, PLAIN};

    /// The text the registry exposes, without its `# HELP` and `# TYPE` lines.
    fn samples(metrics: &Metrics) -> Vec<String> {
        let text = prometheus::TextEncoder::new().encode_to_string(&metrics.registry().gather()).unwrap();
        text.lines().filter(|line| !line.starts_with('#')).map(str::to_owned).collect()
    }

    #[test]
    fn step_events_are_counted_by_kind_and_every_series_is_prefixed() {
        let metrics = Metrics::new();
        let steps = &[step_record(1, PLAIN), step_record(2, PLAIN)];
        let name: Arc<str> = "a".into();
        metrics.committed(
            steps,
            &[
                EventKind::StepStarted { step: 1, name: Arc::clone(&name), attempt: 1 },
                EventKind::StepCompleted { step: 1, name: Arc::clone(&name), duration_ms: 2_500 },
                EventKind::StepStarted { step: 2, name, attempt: 1 },
                EventKind::StepFailed { step: 2, error: "no".into() },
                // No such step: nothing to count it under.
                EventKind::StepFailed { step: 9, error: "no".into() },
            ],
        );
        metrics.task_completed(10.0, 15.0);
        metrics.task_completed(0.0, 15.0);
        let samples = samples(&metrics);
        for expected in [
            r#"stepwise_steps_started_total{kind="exec"} 2"#,
            r#"stepwise_steps_completed_total{kind="exec"} 1"#,
            r#"stepwise_steps_failed_total{kind="exec"} 1"#,
            r#"stepwise_step_duration_seconds_sum{kind="exec"} 2.5"#,
            r#"stepwise_step_duration_seconds_bucket{kind="exec",le="5"} 1"#,
            r#"stepwise_step_duration_seconds_bucket{kind="exec",le="1"} 0"#,
            "stepwise_eta_ratio_sum 1.5",
            "stepwise_eta_ratio_count 1",
        ] {
            assert!(samples.iter().any(|line| line == expected), "{expected} not in {samples:#?}");
        }
        assert!(samples.iter().all(|line| line.starts_with("stepwise_")), "{samples:#?}");
    }
}
