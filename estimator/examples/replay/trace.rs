//! Reading `runs.csv` and `progress.csv` into tasks, with errors that name file, line and field.

use std::collections::HashMap;
use std::fs;

use estimator::ProgressSample;

/// One step run of a traced task, in seconds from the task's start.
pub struct StepTrace {
    pub kind: String,
    pub start: f64,
    pub end: f64,
    /// Samples inside the step, by time since the step started.
    pub progress: Vec<ProgressSample>,
}

/// One traced task, its steps in order.
pub struct TaskTrace {
    pub id: String,
    pub complexity: u32,
    pub steps: Vec<StepTrace>,
}

impl TaskTrace {
    /// Wall seconds from the task's start to its last step's end.
    pub fn total(&self) -> f64 {
        self.steps.last().map_or(0.0, |s| s.end)
    }
}

const RUNS_COLUMNS: [&str; 6] = ["task_id", "complexity", "step_order", "step_kind", "start_s", "end_s"];
const PROGRESS_COLUMNS: [&str; 4] = ["task_id", "step_order", "t_s", "fraction"];

/// One data row: its fields by column name, and where it came from for error messages.
struct Row<'a> {
    file: &'a str,
    line: usize,
    fields: Vec<&'a str>,
    columns: &'a HashMap<&'a str, usize>,
}

impl Row<'_> {
    fn text(&self, name: &str) -> Result<&str, String> {
        let field = self.columns.get(name).and_then(|&i| self.fields.get(i));
        match field {
            Some(v) if !v.trim().is_empty() => Ok(v.trim()),
            _ => Err(self.error(name, "is missing")),
        }
    }

    fn number<T: std::str::FromStr>(&self, name: &str) -> Result<T, String> {
        let v = self.text(name)?;
        v.parse().map_err(|_| self.error(name, &format!("is not a valid number: `{v}`")))
    }

    fn seconds(&self, name: &str) -> Result<f64, String> {
        let v: f64 = self.number(name)?;
        if !(v.is_finite() && v >= 0.0) {
            return Err(self.error(name, &format!("must be finite and non-negative, got {v}")));
        }
        Ok(v)
    }

    fn error(&self, field: &str, what: &str) -> String {
        format!("{}:{}: field `{field}` {what}", self.file, self.line)
    }
}

/// Reads a CSV file and calls `each` with every data row; the header must name `required`.
fn for_each_row(path: &str, required: &[&str], mut each: impl FnMut(&Row) -> Result<(), String>) -> Result<(), String> {
    let text = fs::read_to_string(path).map_err(|e| format!("{path}: cannot read: {e}"))?;
    let mut lines = text.lines().enumerate();
    let header = lines.next().map(|(_, h)| h).unwrap_or_default();
    let columns: HashMap<&str, usize> = header.split(',').map(str::trim).enumerate().map(|(i, c)| (c, i)).collect();
    if let Some(missing) = required.iter().find(|c| !columns.contains_key(*c)) {
        return Err(format!("{path}:1: field `{missing}` is missing from the header"));
    }
    for (i, line) in lines.filter(|(_, l)| !l.trim().is_empty()) {
        let fields = line.split(',').collect();
        each(&Row { file: path, line: i + 1, fields, columns: &columns })?;
    }
    Ok(())
}

/// Reads `runs.csv`: rows grouped by task, steps numbered 1..n in order.
pub fn read_runs(path: &str) -> Result<Vec<TaskTrace>, String> {
    let mut tasks: Vec<TaskTrace> = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for_each_row(path, &RUNS_COLUMNS, |row| {
        let id = row.text("task_id")?;
        let complexity: u32 = row.number("complexity")?;
        if complexity == 0 {
            return Err(row.error("complexity", "must be at least 1"));
        }
        let order: usize = row.number("step_order")?;
        let kind = row.text("step_kind")?.to_owned();
        let (start, end) = (row.seconds("start_s")?, row.seconds("end_s")?);
        if end <= start {
            return Err(row.error("end_s", &format!("{end} is not after start_s {start}")));
        }
        if tasks.last().is_none_or(|t| t.id != id) {
            if seen.insert(id.to_owned(), tasks.len()).is_some() {
                return Err(row.error("task_id", &format!("`{id}` appears again after other tasks")));
            }
            tasks.push(TaskTrace { id: id.to_owned(), complexity, steps: Vec::new() });
        }
        // Never empty here: the task was matched or pushed just above.
        let last = tasks.len() - 1;
        let task = &mut tasks[last];
        if complexity != task.complexity {
            return Err(row.error("complexity", &format!("{complexity} differs from the task's {}", task.complexity)));
        }
        if order != task.steps.len() + 1 {
            return Err(row.error("step_order", &format!("expected {}, got {order}", task.steps.len() + 1)));
        }
        if let Some(prev) = task.steps.last().filter(|p| start < p.end) {
            return Err(row.error("start_s", &format!("{start} is before the previous step's end {}", prev.end)));
        }
        task.steps.push(StepTrace { kind, start, end, progress: Vec::new() });
        Ok(())
    })?;
    Ok(tasks)
}

/// Reads `progress.csv` into the steps of `tasks` it refers to.
pub fn read_progress(path: &str, tasks: &mut [TaskTrace]) -> Result<(), String> {
    let index: HashMap<String, usize> = tasks.iter().enumerate().map(|(i, t)| (t.id.clone(), i)).collect();
    for_each_row(path, &PROGRESS_COLUMNS, |row| {
        let id = row.text("task_id")?;
        let task = index.get(id).ok_or_else(|| row.error("task_id", &format!("`{id}` is not in the runs file")))?;
        let order: usize = row.number("step_order")?;
        let step = order
            .checked_sub(1)
            .and_then(|i| tasks[*task].steps.get_mut(i))
            .ok_or_else(|| row.error("step_order", &format!("task `{id}` has no step {order}")))?;
        let elapsed_s = row.seconds("t_s")?;
        let fraction: f64 = row.number("fraction")?;
        if !(0.0..=1.0).contains(&fraction) {
            return Err(row.error("fraction", &format!("must be within 0..=1, got {fraction}")));
        }
        step.progress.push(ProgressSample { elapsed_s, fraction });
        Ok(())
    })
}
