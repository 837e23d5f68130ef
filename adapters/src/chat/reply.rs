//! The bot's replies, as text in the seed's format. Inputs are plain values ([`TaskView`],
//! titles, log lines) rather than runtime types, so every reply is a pure function a test can
//! hold to an exact string.

use super::intent::StepRef;
use super::resolve::TaskSummary;
use super::Action;

/// The most tasks or candidates a reply lists; more would bury the question.
const LIST_LIMIT: usize = 10;

/// A task as the status reply shows it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TaskView {
    /// The task's title.
    pub title: String,
    /// 0–100.
    pub percent: u8,
    /// The task's status as stored: "pending", "running", "paused", "approval", "completed",
    /// "failed" or "cancelled".
    pub status: String,
    /// The steps, in order.
    pub steps: Vec<StepView>,
    /// The 1-based order of the step the task is at: running, paused, waiting for approval
    /// or failed.
    pub current_step: Option<u32>,
    /// Most likely seconds remaining, if known.
    pub eta_seconds: Option<f64>,
}

/// A step as the status reply shows it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StepView {
    /// The step's name.
    pub name: String,
    /// The step's status as stored: "pending", "running", "completed", "failed", "skipped",
    /// "paused" or "approval".
    pub status: String,
    /// Why the step failed.
    pub error: Option<String>,
    /// Its substeps, in order.
    pub substeps: Vec<SubstepView>,
}

/// A substep as the status reply shows it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SubstepView {
    /// The substep's name.
    pub name: String,
    /// Whether it is done.
    pub done: bool,
}

/// How a task is going, worded for its status: progress, the current step's substeps and the
/// ETA while it runs; plainly where it stopped otherwise.
pub fn status(task: &TaskView) -> String {
    let name = task_name(&task.title);
    let percent = task.percent;
    let current = task.current_step.and_then(|n| Some((n, task.steps.get((n as usize).checked_sub(1)?)?)));
    match task.status.as_str() {
        "running" => {
            let mut lines = vec![format!("📊 Your {name} is {percent}% complete.")];
            if let Some((_, step)) = current {
                lines.push(String::new());
                lines.push(format!("Currently: {}", step.name));
                let in_progress = step.substeps.iter().position(|s| !s.done).filter(|_| step.status == "running");
                for (i, substep) in step.substeps.iter().enumerate() {
                    lines.push(match (substep.done, in_progress == Some(i)) {
                        (true, _) => format!("- ✓ {}", substep.name),
                        (false, true) => format!("- ⏳ {} (in progress)", substep.name),
                        (false, false) => format!("- ⏳ {}", substep.name),
                    });
                }
            }
            lines.push(String::new());
            lines.push(match task.eta_seconds {
                Some(seconds) => format!("ETA: {} remaining.", eta_words(seconds)),
                None => "ETA: Still estimating.".into(),
            });
            lines.join("\n")
        }
        "completed" => format!("✅ Your {name} is complete."),
        "failed" => match current {
            Some((n, step)) => {
                let error = step.error.as_deref().map(|e| format!(": {e}")).unwrap_or_else(|| ".".into());
                format!(
                    "❌ Your {name} failed at Step {n}{error}\n\n\
                     Say \"retry\" to run {} again, or \"skip\" to move past it.",
                    step.name
                )
            }
            None => format!("❌ Your {name} failed."),
        },
        "paused" => match current {
            Some((n, step)) => format!(
                "⏸ Your {name} is paused at Step {n}: {}, {percent}% complete.\n\nSay \"resume\" to carry on.",
                step.name
            ),
            None => format!("⏸ Your {name} is paused, {percent}% complete.\n\nSay \"resume\" to carry on."),
        },
        "approval" => {
            let step = current.map(|(n, step)| format!(" of Step {n}: {}", step.name)).unwrap_or_default();
            format!(
                "⚠️ Your {name} is waiting for your approval{step}.\n\n\
                 Say \"approve\" to go ahead, or \"reject\" to refuse it."
            )
        }
        "cancelled" => format!("🚫 Your {name} was cancelled."),
        "pending" => format!("🕓 Your {name} hasn't started yet."),
        other => format!("Your {name} is {other}."),
    }
}

/// Time remaining in words: "Less than a minute", "About 1 minute", "About 3 minutes",
/// "About 1 hour 20 minutes". Rounded to the minute, as an estimate is no more precise.
pub fn eta_words(seconds: f64) -> String {
    // NaN, too, reads as "less than a minute".
    if seconds.is_nan() || seconds < 60.0 {
        return "Less than a minute".into();
    }
    let minutes = (seconds / 60.0).round() as u64;
    let plural = |n: u64, unit: &str| if n == 1 { format!("1 {unit}") } else { format!("{n} {unit}s") };
    match (minutes / 60, minutes % 60) {
        (0, m) => format!("About {}", plural(m, "minute")),
        (h, 0) => format!("About {}", plural(h, "hour")),
        (h, m) => format!("About {} {}", plural(h, "hour"), plural(m, "minute")),
    }
}

/// The person's tasks, newest first, with their statuses.
pub fn list(tasks: &[TaskSummary]) -> String {
    if tasks.is_empty() {
        return no_tasks();
    }
    let mut lines = vec!["📋 Your tasks:".to_owned()];
    for task in tasks.iter().take(LIST_LIMIT) {
        lines.push(format!("- {} {} ({})", status_symbol(&task.status), task.title, task.status));
    }
    if tasks.len() > LIST_LIMIT {
        lines.push(format!("…and {} more.", tasks.len() - LIST_LIMIT));
    }
    lines.join("\n")
}

/// What the bot can do, by example.
pub fn help() -> String {
    "Here's what I can do:\n\
     - \"How's my CRM task going?\" — progress and time remaining\n\
     - \"Show logs for the nightly import\" — what happened (add \"step 2\" for one step)\n\
     - \"Pause it\" / \"Resume it\"\n\
     - \"Cancel my CRM task\" / \"Cancel it and start over\"\n\
     - \"Approve it\" / \"Reject it\" — for a step waiting for your approval\n\
     - \"Retry the failed step\" / \"Skip step 2\"\n\
     - \"What's running?\" — your tasks"
        .into()
}

/// The reply to a message the parser did not understand: that, plainly, and the examples.
pub fn not_understood() -> String {
    format!("Sorry, I didn't understand that.\n\n{}", help())
}

/// "Which one?" with the candidates numbered, so "2" or "the second one" can answer.
pub fn which_one(titles: &[&str]) -> String {
    let mut lines = vec!["Which one do you mean?".to_owned()];
    lines.extend(titles.iter().take(LIST_LIMIT).enumerate().map(|(i, title)| format!("{}. {title}", i + 1)));
    if titles.len() > LIST_LIMIT {
        lines.push("…or tell me its name.".into());
    }
    lines.join("\n")
}

/// No task matches `query`; names the ones there are.
pub fn no_match(query: &str, titles: &[&str]) -> String {
    let mut lines = vec![format!("I couldn't find a task matching \"{query}\"."), String::new(), "Your tasks:".into()];
    lines.extend(titles.iter().take(LIST_LIMIT).map(|title| format!("- {title}")));
    lines.join("\n")
}

/// The person has no tasks at all.
pub fn no_tasks() -> String {
    "You don't have any tasks yet.".into()
}

/// The question before an action that destroys work: "Cancel Cellphone Store CRM? Reply yes
/// to confirm."
pub fn confirm(action: &Action, title: &str) -> String {
    format!("{}? Reply yes to confirm.", capitalise(&describe(action, title)))
}

/// After a "no" to [`confirm`].
pub fn declined(title: &str) -> String {
    format!("OK, I'll leave {title} as it is.")
}

/// After a "no" to [`which_one`].
pub fn never_mind() -> String {
    "OK, never mind.".into()
}

/// A "yes" or "no" with no question open.
pub fn nothing_pending() -> String {
    "There's nothing waiting for your answer right now.".into()
}

/// What was done, once the caller has done `action` to the task `title`. For a retry or a
/// skip, pass the step the caller chose (`StepRef::Number`) so the reply can name it.
pub fn acted(action: &Action, title: &str) -> String {
    match action {
        Action::Pause => format!("⏸ Paused {title}."),
        Action::Resume => format!("▶️ Resumed {title}."),
        Action::Cancel => format!("🚫 Cancelled {title}."),
        Action::Restart => format!("🔁 Cancelled {title} and started it over."),
        Action::Approve => format!("✅ Approved the waiting step of {title}."),
        Action::Reject => format!("❌ Rejected the waiting step of {title}."),
        Action::Retry { step } => format!("🔁 Retrying {} of {title}.", step_words(step.as_ref(), "the failed step")),
        Action::Skip { step } => format!("⏭ Skipped {} of {title}.", step_words(step.as_ref(), "the current step")),
    }
}

/// `action` could not be done to the task `title`, for `reason` (e.g. the runtime's error
/// message: "the task is already completed").
pub fn refused(action: &Action, title: &str, reason: &str) -> String {
    format!("Couldn't {}: {reason}.", describe(action, title))
}

/// Log lines of the task `title`, or of one of its steps (`(order, name)`), oldest first.
pub fn logs(title: &str, step: Option<(u32, &str)>, lines: &[String]) -> String {
    let of = match step {
        Some((n, name)) => format!("{title}, Step {n} ({name})"),
        None => title.to_owned(),
    };
    if lines.is_empty() {
        return format!("📜 No logs yet for {of}.");
    }
    format!("📜 Logs for {of}:\n{}", lines.join("\n"))
}

/// "Cellphone Store CRM task", without doubling a title that already ends in "task".
fn task_name(title: &str) -> String {
    if title.to_lowercase().ends_with(" task") || title.eq_ignore_ascii_case("task") {
        title.to_owned()
    } else {
        format!("{title} task")
    }
}

/// The action in words, lower case: "cancel Nightly import and start it over".
fn describe(action: &Action, title: &str) -> String {
    match action {
        Action::Pause => format!("pause {title}"),
        Action::Resume => format!("resume {title}"),
        Action::Cancel => format!("cancel {title}"),
        Action::Restart => format!("cancel {title} and start it over"),
        Action::Approve => format!("approve the waiting step of {title}"),
        Action::Reject => format!("reject the waiting step of {title}"),
        Action::Retry { step } => format!("retry {} of {title}", step_words(step.as_ref(), "the failed step")),
        Action::Skip { step } => format!("skip {} of {title}", step_words(step.as_ref(), "the current step")),
    }
}

fn step_words(step: Option<&StepRef>, otherwise: &str) -> String {
    match step {
        Some(StepRef::Number(n)) => format!("Step {n}"),
        Some(StepRef::Named(name)) => format!("the \"{name}\" step"),
        None => otherwise.to_owned(),
    }
}

fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map(|first| first.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

fn status_symbol(status: &str) -> &'static str {
    match status {
        "running" => "▶️",
        "paused" => "⏸",
        "approval" => "⚠️",
        "completed" => "✅",
        "failed" => "❌",
        "cancelled" => "🚫",
        _ => "🕓",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn substep(name: &str, done: bool) -> SubstepView {
        SubstepView { name: name.into(), done }
    }

    fn step(name: &str, status: &str) -> StepView {
        StepView { name: name.into(), status: status.into(), ..StepView::default() }
    }

    /// The seed's task: step 3 of 4 running, two of its four substeps done.
    fn seed() -> TaskView {
        let mut ui = step("Generating application UI", "running");
        ui.substeps = vec![
            substep("Customer list view", true),
            substep("Product list view", true),
            substep("Sales form", false),
            substep("Repair board", false),
        ];
        TaskView {
            title: "Cellphone Store CRM".into(),
            percent: 65,
            status: "running".into(),
            steps: vec![
                step("Plan data model", "completed"),
                step("Generate API", "completed"),
                ui,
                step("Deploy", "pending"),
            ],
            current_step: Some(3),
            eta_seconds: Some(170.0),
        }
    }

    #[test]
    fn running_task_in_the_seed_format() {
        assert_eq!(
            status(&seed()),
            "📊 Your Cellphone Store CRM task is 65% complete.\n\
             \n\
             Currently: Generating application UI\n\
             - ✓ Customer list view\n\
             - ✓ Product list view\n\
             - ⏳ Sales form (in progress)\n\
             - ⏳ Repair board\n\
             \n\
             ETA: About 3 minutes remaining."
        );
    }

    #[test]
    fn running_without_substeps_or_eta() {
        let task = TaskView {
            title: "Nightly import task".into(),
            percent: 5,
            status: "running".into(),
            steps: vec![step("Load rows", "running")],
            current_step: Some(1),
            eta_seconds: None,
        };
        assert_eq!(
            status(&task),
            "📊 Your Nightly import task is 5% complete.\n\nCurrently: Load rows\n\nETA: Still estimating."
        );
    }

    #[test]
    fn other_states_worded_plainly() {
        let mut task = seed();
        task.status = "completed".into();
        assert_eq!(status(&task), "✅ Your Cellphone Store CRM task is complete.");

        task.status = "failed".into();
        task.steps[2].status = "failed".into();
        task.steps[2].error = Some("npm exited with status 1".into());
        assert_eq!(
            status(&task),
            "❌ Your Cellphone Store CRM task failed at Step 3: npm exited with status 1\n\n\
             Say \"retry\" to run Generating application UI again, or \"skip\" to move past it."
        );
        task.steps[2].error = None;
        assert!(status(&task).starts_with("❌ Your Cellphone Store CRM task failed at Step 3.\n\n"));

        task.status = "paused".into();
        assert_eq!(
            status(&task),
            "⏸ Your Cellphone Store CRM task is paused at Step 3: Generating application UI, 65% complete.\n\n\
             Say \"resume\" to carry on."
        );

        task.status = "approval".into();
        task.current_step = Some(4);
        assert_eq!(
            status(&task),
            "⚠️ Your Cellphone Store CRM task is waiting for your approval of Step 4: Deploy.\n\n\
             Say \"approve\" to go ahead, or \"reject\" to refuse it."
        );

        task.status = "cancelled".into();
        assert_eq!(status(&task), "🚫 Your Cellphone Store CRM task was cancelled.");
        task.status = "pending".into();
        assert_eq!(status(&task), "🕓 Your Cellphone Store CRM task hasn't started yet.");
        task.current_step = Some(9);
        task.status = "failed".into();
        assert_eq!(status(&task), "❌ Your Cellphone Store CRM task failed.");
    }

    #[test]
    fn eta_in_words() {
        let cases = [
            (0.0, "Less than a minute"),
            (59.4, "Less than a minute"),
            (f64::NAN, "Less than a minute"),
            (60.0, "About 1 minute"),
            (89.0, "About 1 minute"),
            (170.0, "About 3 minutes"),
            (3599.0, "About 1 hour"),
            (3660.0, "About 1 hour 1 minute"),
            (4800.0, "About 1 hour 20 minutes"),
            (7200.0, "About 2 hours"),
            (9000.0, "About 2 hours 30 minutes"),
        ];
        for (seconds, words) in cases {
            assert_eq!(eta_words(seconds), words, "{seconds}");
        }
    }

    #[test]
    fn list_of_tasks() {
        let task = |title: &str, status: &str| TaskSummary {
            id: title.into(),
            title: title.into(),
            created_at: 0,
            status: status.into(),
        };
        assert_eq!(
            list(&[task("Cellphone Store CRM", "running"), task("Nightly import", "failed")]),
            "📋 Your tasks:\n- ▶️ Cellphone Store CRM (running)\n- ❌ Nightly import (failed)"
        );
        assert_eq!(list(&[]), "You don't have any tasks yet.");
        let many: Vec<_> = (1..=12).map(|i| task(&format!("T{i}"), "completed")).collect();
        let text = list(&many);
        assert!(text.contains("- ✅ T10 (completed)\n…and 2 more."), "{text}");
    }

    #[test]
    fn questions_and_lists_of_candidates() {
        assert_eq!(
            which_one(&["Cellphone Store CRM", "CRM data cleanup"]),
            "Which one do you mean?\n1. Cellphone Store CRM\n2. CRM data cleanup"
        );
        assert_eq!(
            no_match("banana", &["Cellphone Store CRM", "Nightly import"]),
            "I couldn't find a task matching \"banana\".\n\nYour tasks:\n- Cellphone Store CRM\n- Nightly import"
        );
        let title = "Cellphone Store CRM";
        assert_eq!(confirm(&Action::Cancel, title), "Cancel Cellphone Store CRM? Reply yes to confirm.");
        assert_eq!(
            confirm(&Action::Restart, title),
            "Cancel Cellphone Store CRM and start it over? Reply yes to confirm."
        );
        assert_eq!(
            confirm(&Action::Reject, title),
            "Reject the waiting step of Cellphone Store CRM? Reply yes to confirm."
        );
        assert_eq!(
            confirm(&Action::Skip { step: Some(StepRef::Number(2)) }, title),
            "Skip Step 2 of Cellphone Store CRM? Reply yes to confirm."
        );
        assert_eq!(
            confirm(&Action::Skip { step: Some(StepRef::Named("sales form".into())) }, title),
            "Skip the \"sales form\" step of Cellphone Store CRM? Reply yes to confirm."
        );
        assert_eq!(
            confirm(&Action::Skip { step: None }, title),
            "Skip the current step of Cellphone Store CRM? Reply yes to confirm."
        );
    }

    #[test]
    fn help_shows_examples() {
        let text = not_understood();
        assert!(text.starts_with("Sorry, I didn't understand that.\n\nHere's what I can do:\n"), "{text}");
        for example in ["How's my CRM task going?", "Show logs", "Pause it", "start over", "Approve it", "Skip step 2"]
        {
            assert!(text.contains(example), "{example}");
        }
    }

    #[test]
    fn after_acting() {
        let title = "Nightly import";
        assert_eq!(acted(&Action::Pause, title), "⏸ Paused Nightly import.");
        assert_eq!(acted(&Action::Resume, title), "▶️ Resumed Nightly import.");
        assert_eq!(acted(&Action::Cancel, title), "🚫 Cancelled Nightly import.");
        assert_eq!(acted(&Action::Restart, title), "🔁 Cancelled Nightly import and started it over.");
        assert_eq!(acted(&Action::Approve, title), "✅ Approved the waiting step of Nightly import.");
        assert_eq!(acted(&Action::Reject, title), "❌ Rejected the waiting step of Nightly import.");
        assert_eq!(
            acted(&Action::Retry { step: Some(StepRef::Number(2)) }, title),
            "🔁 Retrying Step 2 of Nightly import."
        );
        assert_eq!(acted(&Action::Retry { step: None }, title), "🔁 Retrying the failed step of Nightly import.");
        assert_eq!(
            acted(&Action::Skip { step: Some(StepRef::Number(2)) }, title),
            "⏭ Skipped Step 2 of Nightly import."
        );
        assert_eq!(
            refused(&Action::Pause, title, "the task is already completed"),
            "Couldn't pause Nightly import: the task is already completed."
        );
        assert_eq!(declined(title), "OK, I'll leave Nightly import as it is.");
    }

    #[test]
    fn log_lines() {
        let lines = vec!["fetching 3 files".to_owned(), "loaded 1200 rows".to_owned()];
        assert_eq!(
            logs("Nightly import", Some((2, "Load rows")), &lines),
            "📜 Logs for Nightly import, Step 2 (Load rows):\nfetching 3 files\nloaded 1200 rows"
        );
        assert_eq!(logs("Nightly import", None, &lines[..1]), "📜 Logs for Nightly import:\nfetching 3 files");
        assert_eq!(logs("Nightly import", None, &[]), "📜 No logs yet for Nightly import.");
    }
}
