//! What a step does when nobody acts: try a failed attempt again after a backoff, and stop
//! waiting for an approval at its deadline (with a reminder before). A plan states these
//! rules per step; they are stored with the step (as JSON in its `policy` column) and the
//! state machine applies them, with the step's `due_at` and `remind_at` as its timers.

use db::StepRecord;
use serde::{Deserialize, Serialize};

/// The longest backoff, approval timeout or reminder lead a plan may give: 30 days.
const MAX_SECONDS: f64 = 30.0 * 86_400.0;
/// The most attempts a step may be given, the first included.
const MAX_ATTEMPTS: u32 = 100;

/// A step's rules for acting on its own; both parts are optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepPolicy {
    /// Automatic retries of a failed attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// The deadline of the step's approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalPolicy>,
}

/// `retry: {max_attempts, backoff: {initial_s, factor, max_s}, on: [...]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (3: the first and up to two retries).
    pub max_attempts: u32,
    /// How long to wait before each retry.
    #[serde(default)]
    pub backoff: Backoff,
    /// Which failures are retried; all of them when left out.
    #[serde(default = "FailureKind::all")]
    pub on: Vec<FailureKind>,
}

/// Exponential backoff: `initial_s`, then each wait `factor` times the last, at most `max_s`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(from = "BackoffFields")]
pub struct Backoff {
    /// The wait before the first retry, seconds.
    pub initial_s: f64,
    /// What each later wait is multiplied by (1: the same wait every time).
    pub factor: f64,
    /// The longest wait, seconds.
    pub max_s: f64,
}

/// A backoff as a plan gives it: any field may be left out.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BackoffFields {
    #[serde(default = "Backoff::default_initial_s")]
    initial_s: f64,
    #[serde(default = "Backoff::default_factor")]
    factor: f64,
    max_s: Option<f64>,
}

impl From<BackoffFields> for Backoff {
    fn from(fields: BackoffFields) -> Backoff {
        // Left out, the ceiling never undercuts the first wait the plan asked for.
        let max_s = fields.max_s.unwrap_or_else(|| Backoff::default_max_s().max(fields.initial_s));
        Backoff { initial_s: fields.initial_s, factor: fields.factor, max_s }
    }
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            initial_s: Backoff::default_initial_s(),
            factor: Backoff::default_factor(),
            max_s: Backoff::default_max_s(),
        }
    }
}

impl Backoff {
    fn default_initial_s() -> f64 {
        10.0
    }

    fn default_factor() -> f64 {
        2.0
    }

    fn default_max_s() -> f64 {
        600.0
    }

    /// The wait before attempt `next` (2 for the first retry), ms.
    pub fn before_attempt_ms(&self, next: u32) -> i64 {
        let retries_before = next.saturating_sub(2);
        let seconds = (self.initial_s * self.factor.powi(retries_before.min(1_000) as i32)).min(self.max_s);
        (seconds * 1000.0).round() as i64
    }
}

/// What kind of failure ended an attempt, for `retry.on`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The step ran out of time (`exec`'s `timeout_s`).
    Timeout,
    /// The step's program exited with a status other than 0, or was killed by a signal.
    ExitCode,
    /// Any other failure: a worker reported one, the handler refused, a panic.
    Error,
}

impl FailureKind {
    fn all() -> Vec<FailureKind> {
        vec![FailureKind::Timeout, FailureKind::ExitCode, FailureKind::Error]
    }
}

/// `approval: {timeout_s, on_timeout, remind_before_s?}`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalPolicy {
    /// How long the approval may wait, seconds.
    pub timeout_s: f64,
    /// What happens when nobody decides in time.
    #[serde(default)]
    pub on_timeout: OnTimeout,
    /// When to remind the people who can decide, seconds before the deadline; none if left
    /// out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remind_before_s: Option<f64>,
}

/// What a lapsed approval does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnTimeout {
    /// As a rejection: a skippable step is skipped, any other fails the task.
    #[default]
    Reject,
    /// The step is skipped and the task goes on.
    Skip,
    /// The step and the task fail.
    Fail,
}

impl StepPolicy {
    /// The rules stored with `step` (none if it has none, or if they cannot be read: the
    /// runtime wrote them, so that only happens to a row edited by hand).
    pub fn of(step: &StepRecord) -> StepPolicy {
        step.policy.as_deref().and_then(|text| serde_json::from_str(text).ok()).unwrap_or_default()
    }

    /// The rules as the step's `policy` column stores them; `None` when there are none.
    pub(crate) fn stored(&self) -> Option<String> {
        (*self != StepPolicy::default()).then(|| serde_json::to_string(self).unwrap_or_default())
    }

    /// Checks the numbers; the error names the field and the allowed range.
    pub(crate) fn check(&self) -> Result<(), String> {
        if let Some(retry) = &self.retry {
            if !(1..=MAX_ATTEMPTS).contains(&retry.max_attempts) {
                return Err(format!("retry.max_attempts must be 1 to {MAX_ATTEMPTS}, got {}", retry.max_attempts));
            }
            let backoff = retry.backoff;
            seconds("retry.backoff.initial_s", backoff.initial_s)?;
            seconds("retry.backoff.max_s", backoff.max_s)?;
            if !(1.0..=10.0).contains(&backoff.factor) {
                return Err(format!("retry.backoff.factor must be 1 to 10, got {}", backoff.factor));
            }
            if backoff.max_s < backoff.initial_s {
                return Err(format!(
                    "retry.backoff.max_s ({}) must not be less than retry.backoff.initial_s ({})",
                    seconds_text(backoff.max_s),
                    seconds_text(backoff.initial_s)
                ));
            }
            if retry.on.is_empty() {
                return Err("retry.on must name at least one of timeout, exit_code, error".into());
            }
        }
        if let Some(approval) = &self.approval {
            seconds("approval.timeout_s", approval.timeout_s)?;
            if let Some(before) = approval.remind_before_s {
                seconds("approval.remind_before_s", before)?;
                if before >= approval.timeout_s {
                    return Err(format!(
                        "approval.remind_before_s ({}) must be less than approval.timeout_s ({})",
                        seconds_text(before),
                        seconds_text(approval.timeout_s)
                    ));
                }
            }
        }
        Ok(())
    }
}

impl RetryPolicy {
    /// When a step whose attempt `attempt` just failed with `kind` at `now` tries again, if
    /// it does.
    pub(crate) fn next_try(&self, attempt: u32, kind: FailureKind, now: i64) -> Option<i64> {
        (attempt < self.max_attempts && self.on.contains(&kind))
            .then(|| now + self.backoff.before_attempt_ms(attempt + 1))
    }
}

impl ApprovalPolicy {
    /// The deadline and the moment of the reminder of an approval asked for at `now`.
    pub(crate) fn timers(&self, now: i64) -> (i64, Option<i64>) {
        let due = now + ms(self.timeout_s);
        (due, self.remind_before_s.map(|before| due - ms(before)))
    }
}

fn ms(seconds: f64) -> i64 {
    (seconds * 1000.0).round() as i64
}

fn seconds(field: &str, value: f64) -> Result<(), String> {
    if value > 0.0 && value <= MAX_SECONDS {
        return Ok(());
    }
    Err(format!("{field} must be more than 0 and at most {MAX_SECONDS} (30 days), got {}", seconds_text(value)))
}

/// Seconds as people read them: to the millisecond, or in scientific notation below one
/// (an `f64` would otherwise print every digit of, say, 5e-324).
pub(crate) fn seconds_text(seconds: f64) -> String {
    match seconds.abs() {
        tiny if tiny > 0.0 && tiny < 0.001 => format!("{seconds:e}"),
        _ => format!("{}", (seconds * 1000.0).round() / 1000.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_by_its_factor_up_to_its_ceiling() {
        let backoff = Backoff { initial_s: 10.0, factor: 3.0, max_s: 60.0 };
        let waits: Vec<i64> = (2..=5).map(|next| backoff.before_attempt_ms(next)).collect();
        assert_eq!(waits, [10_000, 30_000, 60_000, 60_000]);
        let retry = RetryPolicy { max_attempts: 3, backoff, on: vec![FailureKind::Timeout] };
        assert_eq!(retry.next_try(1, FailureKind::Timeout, 1_000), Some(11_000));
        assert_eq!(retry.next_try(2, FailureKind::Timeout, 1_000), Some(31_000));
        assert_eq!(retry.next_try(3, FailureKind::Timeout, 1_000), None, "three attempts in all");
        assert_eq!(retry.next_try(1, FailureKind::ExitCode, 1_000), None, "only timeouts are retried");
    }

    #[test]
    fn policies_read_with_defaults_and_bad_numbers_are_named() {
        let policy: StepPolicy =
            serde_json::from_str(r#"{"retry": {"max_attempts": 3}, "approval": {"timeout_s": 60}}"#).unwrap();
        let retry = policy.retry.clone().unwrap();
        assert_eq!((retry.backoff, retry.on.len()), (Backoff::default(), 3));
        assert_eq!(policy.approval.unwrap().on_timeout, OnTimeout::Reject);
        assert_eq!(policy.check(), Ok(()));
        let stored = policy.stored().unwrap();
        assert_eq!(serde_json::from_str::<StepPolicy>(&stored).unwrap(), policy, "{stored}");
        assert_eq!(StepPolicy::default().stored(), None);
        let long: StepPolicy =
            serde_json::from_str(r#"{"retry": {"max_attempts": 2, "backoff": {"initial_s": 3600}}}"#).unwrap();
        assert_eq!(long.retry.unwrap().backoff.max_s, 3600.0, "the default ceiling rises to the first wait");

        let cases = [
            (r#"{"retry": {"max_attempts": 0}}"#, "retry.max_attempts must be 1 to 100, got 0"),
            (r#"{"retry": {"max_attempts": 2, "backoff": {"factor": 0.5}}}"#, "retry.backoff.factor must be 1 to 10"),
            (r#"{"retry": {"max_attempts": 2, "backoff": {"initial_s": 0}}}"#, "retry.backoff.initial_s must be more"),
            (r#"{"retry": {"max_attempts": 2, "backoff": {"initial_s": 60, "max_s": 5}}}"#, "must not be less"),
            (r#"{"retry": {"max_attempts": 2, "on": []}}"#, "retry.on must name at least one"),
            (r#"{"approval": {"timeout_s": -1}}"#, "approval.timeout_s must be more than 0"),
            (r#"{"approval": {"timeout_s": 60, "remind_before_s": 60}}"#, "must be less than approval.timeout_s"),
        ];
        for (text, fragment) in cases {
            let error = serde_json::from_str::<StepPolicy>(text).unwrap().check().unwrap_err();
            assert!(error.contains(fragment), "{text}: {error}");
        }
        let unknown = serde_json::from_str::<StepPolicy>(r#"{"retry": {"max_attempts": 2, "on": ["crash"]}}"#);
        assert!(unknown.unwrap_err().to_string().contains("unknown variant `crash`"));
    }
}
