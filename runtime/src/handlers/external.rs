//! The `external` kind: the work is done outside the server and arrives as reports through
//! the runtime's API (and over HTTP), so the handler only waits to be told it is over.

use futures_util::future::LocalBoxFuture;
use serde_json::Value;

use super::{StepContext, StepControl, StepError, StepHandler};

/// Waits for an outside worker's reports; the task actor ends the step on a report with a
/// final status.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExternalHandler;

impl StepHandler for ExternalHandler {
    fn validate(&self, params: &Value) -> Result<(), String> {
        match params {
            Value::Null | Value::Object(_) => Ok(()),
            other => Err(format!("params must be an object, got {other}")),
        }
    }

    fn run(&self, ctx: StepContext) -> LocalBoxFuture<'static, Result<Option<String>, StepError>> {
        // Keep only the control channel: an idle external step may wait for days, and there
        // may be many thousands of them.
        let mut control = ctx.control;
        Box::pin(async move {
            // A closed channel means the task actor is gone: the same as a cancel.
            while control.changed().await.is_ok() {
                if *control.borrow_and_update() == StepControl::Cancel {
                    break;
                }
            }
            Err(StepError::Cancelled)
        })
    }
}
