//! The `wait` kind: simulated work for demos and examples. It takes `seconds` of work time,
//! reports its percent as it goes and ticks its substeps off evenly.

use std::time::Duration;

use futures_util::future::LocalBoxFuture;
use serde_json::Value;

use super::{StepContext, StepError, StepHandler};

/// How often the percent is reported and a pause is noticed.
const TICK: Duration = Duration::from_millis(100);

/// Simulated work: params `{"seconds": N}`.
#[derive(Debug, Clone, Copy, Default)]
pub struct WaitHandler;

fn seconds(params: &Value) -> Result<f64, String> {
    let seconds = params
        .get("seconds")
        .ok_or("missing \"seconds\" (the simulated work time)")?
        .as_f64()
        .ok_or_else(|| format!("\"seconds\" must be a number, got {}", params["seconds"]))?;
    if !(seconds > 0.0 && seconds <= 86_400.0) {
        return Err(format!("\"seconds\" must be more than 0 and at most 86400, got {seconds}"));
    }
    Ok(seconds)
}

impl StepHandler for WaitHandler {
    fn validate(&self, params: &Value) -> Result<(), String> {
        seconds(params).map(drop)
    }

    fn expected_seconds(&self, params: &Value) -> Option<f64> {
        seconds(params).ok()
    }

    fn run(&self, mut ctx: StepContext) -> LocalBoxFuture<'static, Result<Option<String>, StepError>> {
        Box::pin(async move {
            let total = Duration::from_secs_f64(seconds(ctx.params()).map_err(StepError::Failed)?);
            // Continue from the checkpoint: the work the done substeps (or percent) stood for.
            let mut done = total.mul_f64(f64::from(ctx.start_percent()) / 100.0);
            let names: Vec<(String, bool)> = ctx.substeps().iter().map(|s| (s.name.clone(), s.done)).collect();
            while done < total {
                ctx.checkpoint().await?;
                let slice = TICK.min(total - done);
                tokio::time::sleep(slice).await;
                done += slice;
                let fraction = done.as_secs_f64() / total.as_secs_f64();
                tick_substeps(&ctx, &names, fraction);
                ctx.progress((fraction * 100.0).floor() as u8);
            }
            Ok(None)
        })
    }
}

/// Ticks off the substeps whose even share of the work is done by `fraction`.
fn tick_substeps(ctx: &StepContext, names: &[(String, bool)], fraction: f64) {
    let reached = (fraction * names.len() as f64 + 1e-9).floor() as usize;
    for (name, already) in names.iter().take(reached) {
        if !already {
            ctx.substep_done(name);
        }
    }
}
