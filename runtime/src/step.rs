//! The `StepActor`: runs one attempt of one step's handler, turns a panic into a failed
//! step, and tells its task actor how the attempt ended. Stopping it drops the handler's
//! future, which is how a step is cancelled.

use std::panic::AssertUnwindSafe;

use actix::prelude::*;
use actix::WeakRecipient;
use futures_util::future::LocalBoxFuture;
use futures_util::FutureExt;

use crate::handlers::StepError;

/// The result a handler's future resolves to.
pub(crate) type StepResult = Result<Option<String>, StepError>;

/// Sent to the task actor when an attempt ends.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub(crate) struct StepFinished {
    pub step: u32,
    pub attempt: u32,
    pub result: StepResult,
}

/// Stops the step now (its handler's future is dropped).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct StopStep;

/// Runs one attempt of a step.
pub(crate) struct StepActor {
    pub step: u32,
    pub attempt: u32,
    pub work: Option<LocalBoxFuture<'static, StepResult>>,
    /// Weak, so an idle step costs its task no extra sender and never keeps a stopped task
    /// actor's mailbox open.
    pub done: WeakRecipient<StepFinished>,
}

impl Actor for StepActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let Some(work) = self.work.take() else { return };
        let guarded = AssertUnwindSafe(work).catch_unwind();
        ctx.spawn(actix::fut::wrap_future(guarded).map(|outcome, act: &mut StepActor, ctx| {
            let result = outcome.unwrap_or_else(|panic| Err(StepError::Failed(panic_message(&panic))));
            if let Some(done) = act.done.upgrade() {
                // Once per attempt: this actor stops right after.
                done.do_send(StepFinished { step: act.step, attempt: act.attempt, result });
            }
            ctx.stop();
        }));
    }
}

impl Handler<StopStep> for StepActor {
    type Result = ();
    fn handle(&mut self, _: StopStep, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// A readable message from a panic's payload.
pub(crate) fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown cause".to_owned());
    format!("step handler panicked: {text}")
}
