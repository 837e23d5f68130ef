//! The live terminal progress view, drawn as the seed draws it: title, bar, the current
//! step with its substep tree (✓ ◐ ○), when it started and how long remains. On a terminal
//! it redraws in place; into a pipe or file it prints one line per change.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use runtime::{task_percent, Runtime, RuntimeError, StepStatus, StoredTask, TaskStatus, Topic};

const BAR_WIDTH: usize = 30;

/// How long remains, as the view shows it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EtaView {
    /// Most likely seconds remaining.
    pub seconds: f64,
    /// 80% range of the seconds remaining.
    pub range: (f64, f64),
}

/// The seed's symbol for a step or substep status.
pub fn symbol(status: StepStatus) -> &'static str {
    match status {
        StepStatus::Completed => "✓",
        StepStatus::Running => "◐",
        StepStatus::Pending => "○",
        StepStatus::Approval => "⚠",
        StepStatus::Failed => "✗",
        StepStatus::Paused => "⏸",
        StepStatus::Skipped => "⤼",
    }
}

/// "42 s", "3 min", "1 h 5 min".
pub fn human_duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min", (s + 30) / 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

/// The progress bar: `[████░░░░] 65%`.
pub fn bar(percent: u8) -> String {
    let filled = usize::from(percent.min(100)) * BAR_WIDTH / 100;
    format!("[{}{}] {percent}%", "█".repeat(filled), "░".repeat(BAR_WIDTH - filled))
}

/// The whole view of a task at `now_ms`.
pub fn render(task: &StoredTask, now_ms: i64, eta: Option<EtaView>) -> String {
    let mut lines = vec![task.task.title.clone(), String::new(), bar(task_percent(task)), String::new()];
    let total = task.steps.len();
    let current = task.steps.iter().find(|s| !s.status.is_done()).or_else(|| task.steps.last());
    if let Some(step) = current {
        let state = match step.status {
            StepStatus::Running | StepStatus::Completed => String::new(),
            other => format!(" ({other})"),
        };
        lines.push(format!("Step {} of {total}: {}{state}", step.order, step.name));
        let count = step.substeps.len();
        for (i, substep) in step.substeps.iter().enumerate() {
            let branch = if i + 1 == count { "└─" } else { "├─" };
            let first_open = step.substeps.iter().position(|s| !s.done) == Some(i);
            let (mark, note) = match (substep.done, first_open && step.status == StepStatus::Running) {
                (true, _) => ("✓", ""),
                (false, true) => ("◐", " (in progress)"),
                (false, false) => ("○", " (pending)"),
            };
            lines.push(format!("{branch} {} {mark}{note}", substep.name));
        }
        if let Some(error) = &step.error {
            lines.push(format!("{} {error}", symbol(StepStatus::Failed)));
        }
    }
    lines.push(String::new());
    if let Some(started) = task.task.started_at {
        lines.push(format!("Started: {} ago", human_duration((now_ms - started) as f64 / 1000.0)));
    }
    lines.push(status_line(task, eta));
    lines.join("\n")
}

fn status_line(task: &StoredTask, eta: Option<EtaView>) -> String {
    match task.task.status {
        TaskStatus::Completed => match (task.task.started_at, task.task.finished_at) {
            (Some(start), Some(end)) => format!("✓ Completed in {}", human_duration((end - start) as f64 / 1000.0)),
            _ => "✓ Completed".into(),
        },
        TaskStatus::Failed => format!("✗ Failed: {}", task.task.error.as_deref().unwrap_or("unknown error")),
        TaskStatus::Cancelled => "Cancelled".into(),
        TaskStatus::Paused => "⏸ Paused".into(),
        TaskStatus::Approval => "⚠ Waiting for your approval".into(),
        TaskStatus::Pending => "Not started".into(),
        TaskStatus::Running => match eta {
            Some(eta) => format!(
                "ETA: {} remaining ({}–{})",
                human_duration(eta.seconds),
                human_duration(eta.range.0),
                human_duration(eta.range.1)
            ),
            None => "ETA: estimating…".into(),
        },
    }
}

/// A one-line summary, for output that is not a terminal.
pub fn summary(task: &StoredTask, eta: Option<EtaView>) -> String {
    let step = task.steps.iter().find(|s| !s.status.is_done()).or_else(|| task.steps.last());
    let step = step.map(|s| format!(" step {}/{} {} {}", s.order, task.steps.len(), symbol(s.status), s.name));
    let eta = match (task.task.status, eta) {
        (TaskStatus::Running, Some(eta)) => format!(" ETA {}", human_duration(eta.seconds)),
        _ => String::new(),
    };
    format!("{} {}%{} [{}]{eta}", task.task.title, task_percent(task), step.unwrap_or_default(), task.task.status)
}

/// Follows `owner`'s task live until it completes, fails or is cancelled, drawing the view
/// on standard output. Returns the final state.
pub async fn follow(runtime: &Runtime, owner: &str, task_id: &str) -> Result<StoredTask, RuntimeError> {
    let mut events = runtime.events(Topic::Task(task_id.into())).await?;
    let mut out = Screen::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let (task, eta) = runtime.task_view(owner, task_id).await?;
        out.draw(&task, eta.map(|e| EtaView { seconds: e.seconds, range: e.range }));
        if matches!(task.task.status, TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Cancelled) {
            return Ok(task);
        }
        tokio::select! {
            _ = events.recv() => {}
            _ = tick.tick() => {}
        }
    }
}

/// Standard output, redrawn in place on a terminal.
struct Screen {
    interactive: bool,
    drawn_lines: usize,
    last_summary: String,
}

impl Screen {
    fn new() -> Screen {
        Screen { interactive: std::io::stdout().is_terminal(), drawn_lines: 0, last_summary: String::new() }
    }

    fn draw(&mut self, task: &StoredTask, eta: Option<EtaView>) {
        let mut stdout = std::io::stdout().lock();
        if self.interactive {
            let view = render(task, now_ms(), eta);
            if self.drawn_lines > 0 {
                // Up to the first line of the previous drawing, then clear to the end.
                let _ = write!(stdout, "\x1b[{}A\r\x1b[J", self.drawn_lines);
            }
            let _ = writeln!(stdout, "{view}");
            self.drawn_lines = view.lines().count();
        } else {
            let line = summary(task, eta);
            if line != self.last_summary {
                let _ = writeln!(stdout, "{line}");
                self.last_summary = line;
            }
        }
        let _ = stdout.flush();
    }
}

fn now_ms() -> i64 {
    use runtime::Clock;
    runtime::SystemClock.now_ms()
}

#[cfg(test)]
mod tests {
    use super::*;
    use runtime::{StepRecord, SubstepRecord, TaskRecord};

    fn step(order: u32, name: &str, status: StepStatus, progress: u8, substeps: &[(&str, bool)]) -> StepRecord {
        StepRecord {
            order,
            name: name.into(),
            kind: "wait".into(),
            params: "{}".into(),
            requires_approval: false,
            skippable: false,
            approved: false,
            status,
            progress,
            attempts: u32::from(status != StepStatus::Pending),
            started_at: None,
            finished_at: None,
            work_ms: 0,
            error: None,
            output: None,
            estimate_ms: None,
            policy: None,
            due_at: None,
            remind_at: None,
            substeps: substeps.iter().map(|(n, d)| SubstepRecord { name: (*n).into(), done: *d }).collect(),
        }
    }

    fn crm() -> StoredTask {
        StoredTask {
            task: TaskRecord {
                id: "abc123".into(),
                owner: "demo".into(),
                title: "Cellphone Store CRM".into(),
                complexity: 4,
                status: TaskStatus::Running,
                restarted_from: None,
                created_at: 0,
                started_at: Some(0),
                finished_at: None,
                updated_at: 0,
                error: None,
                last_seq: 5,
                lease_token: 1,
            },
            steps: vec![
                step(1, "Create database tables", StepStatus::Completed, 100, &[]),
                step(
                    2,
                    "Generate application UI",
                    StepStatus::Running,
                    60,
                    &[
                        ("Customer list view", true),
                        ("Product list view", true),
                        ("Sales form", false),
                        ("Repair board", false),
                    ],
                ),
                step(3, "Add search and filters", StepStatus::Pending, 0, &[]),
                step(4, "Configure workflows", StepStatus::Pending, 0, &[]),
            ],
        }
    }

    #[test]
    fn renders_the_seeds_progress_view() {
        let view = render(&crm(), 120_000, Some(EtaView { seconds: 180.0, range: (120.0, 240.0) }));
        let expected = "Cellphone Store CRM\n\n[████████████░░░░░░░░░░░░░░░░░░] 40%\n\n\
                        Step 2 of 4: Generate application UI\n\
                        ├─ Customer list view ✓\n├─ Product list view ✓\n\
                        ├─ Sales form ◐ (in progress)\n└─ Repair board ○ (pending)\n\n\
                        Started: 2 min ago\nETA: 3 min remaining (2 min–4 min)";
        assert_eq!(view, expected);
    }

    #[test]
    fn status_lines_say_what_needs_attention() {
        let mut task = crm();
        let cases = [
            (TaskStatus::Paused, "⏸ Paused"),
            (TaskStatus::Approval, "⚠ Waiting for your approval"),
            (TaskStatus::Cancelled, "Cancelled"),
            (TaskStatus::Running, "ETA: estimating…"),
        ];
        for (status, line) in cases {
            task.task.status = status;
            assert!(render(&task, 0, None).ends_with(line), "{status}");
        }
        task.task.status = TaskStatus::Failed;
        task.task.error = Some("step 2 failed: boom".into());
        assert!(render(&task, 0, None).ends_with("✗ Failed: step 2 failed: boom"));
    }

    #[test]
    fn durations_read_like_people_say_them() {
        let cases = [
            (0.0, "0 s"),
            (59.4, "59 s"),
            (60.0, "1 min"),
            (150.0, "3 min"),
            (3600.0, "1 h 0 min"),
            (3900.0, "1 h 5 min"),
            (-5.0, "0 s"),
        ];
        for (seconds, text) in cases {
            assert_eq!(human_duration(seconds), text, "{seconds}");
        }
    }

    #[test]
    fn every_step_status_has_its_own_symbol() {
        let symbols: std::collections::HashSet<&str> = StepStatus::ALL.iter().map(|s| symbol(*s)).collect();
        assert_eq!(symbols.len(), StepStatus::ALL.len());
    }

    #[test]
    fn summary_is_one_line() {
        assert_eq!(summary(&crm(), None), "Cellphone Store CRM 40% step 2/4 ◐ Generate application UI [running]");
        let eta = Some(EtaView { seconds: 180.0, range: (120.0, 240.0) });
        assert_eq!(
            summary(&crm(), eta),
            "Cellphone Store CRM 40% step 2/4 ◐ Generate application UI [running] ETA 3 min"
        );
    }
}
