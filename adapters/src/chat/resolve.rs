//! Finding the task (or step) a message means from loose words: token overlap between the
//! words and each title, with stemming, prefixes and typo tolerance, ignoring stop words.
//! The best-scoring title wins; a tie is an honest "which one?".

use super::intent::{StepRef, TaskRef};
use super::text;

/// What the matcher needs to know of one of the person's tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskSummary {
    /// The task's id.
    pub id: String,
    /// The task's title.
    pub title: String,
    /// When it was created, ms since the epoch: "the last one" is the newest.
    pub created_at: i64,
    /// Its status as stored: "running", "paused", "approval", "completed", "failed"…
    pub status: String,
}

/// Which task a [`TaskRef`] means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Exactly this task.
    One(String),
    /// These tasks match equally well, in the order given (newest first).
    Ambiguous(Vec<String>),
    /// The words match no task.
    NoMatch,
    /// The message names no task and nothing said before points at one.
    NeedTask,
}

/// Matches `target` against `tasks` (newest first). `last_discussed` is the task the
/// conversation was about just before, which "it" means.
pub fn resolve(target: &TaskRef, tasks: &[TaskSummary], last_discussed: Option<&str>) -> Resolution {
    match target {
        TaskRef::Named(words) => {
            let titles: Vec<&str> = tasks.iter().map(|t| t.title.as_str()).collect();
            match best_matches(words, &titles).as_slice() {
                [] => Resolution::NoMatch,
                [one] => Resolution::One(tasks[*one].id.clone()),
                many => Resolution::Ambiguous(many.iter().map(|&i| tasks[i].id.clone()).collect()),
            }
        }
        // Reversed so that, of tasks created in the same millisecond, the first listed wins.
        TaskRef::Last => match tasks.iter().rev().max_by_key(|t| t.created_at) {
            Some(task) => Resolution::One(task.id.clone()),
            None => Resolution::NeedTask,
        },
        TaskRef::It => match (last_discussed, tasks) {
            (Some(id), _) => Resolution::One(id.to_owned()),
            (None, [only]) => Resolution::One(only.id.clone()),
            (None, _) => Resolution::NeedTask,
        },
        TaskRef::None => Resolution::NeedTask,
    }
}

/// The 1-based order of the step `step` means among a task's `step_names` (in order), if
/// exactly one fits: a number in range, or the one name matching the words best.
pub fn step_order(step: &StepRef, step_names: &[&str]) -> Option<u32> {
    let order = match step {
        StepRef::Number(n) => (*n as usize).checked_sub(1).filter(|i| *i < step_names.len())?,
        StepRef::Named(name) => match best_matches(&text::tokens(name), step_names).as_slice() {
            [one] => *one,
            _ => return None,
        },
    };
    u32::try_from(order + 1).ok()
}

/// The positions of the names that match `words` best, or none if nothing matches at all.
/// A name scores, for each query word, its best word match; the scores add up.
fn best_matches(words: &[String], names: &[&str]) -> Vec<usize> {
    let query = significant(words.iter().map(String::as_str));
    let scores: Vec<f64> = names
        .iter()
        .map(|name| {
            let name = significant(text::tokens(name).iter().map(String::as_str));
            query.iter().map(|q| name.iter().map(|w| word_score(q, w)).fold(0.0, f64::max)).sum()
        })
        .collect();
    let top = scores.iter().copied().fold(0.0, f64::max);
    if top <= 0.0 {
        return Vec::new();
    }
    // Scores are sums of a few fixed weights, so equal matches are equal up to rounding.
    scores.iter().enumerate().filter(|(_, s)| top - **s < 1e-9).map(|(i, _)| i).collect()
}

/// Stemmed words without stop words.
fn significant<'a>(words: impl Iterator<Item = &'a str>) -> Vec<String> {
    words.filter(|w| !text::is_stop(w)).map(text::stem).collect()
}

/// How well a query word matches a title word: the same word beats a typo, which beats a
/// part of a word ("cell" of "cellphone", "phone" in "cellphone").
fn word_score(query: &str, word: &str) -> f64 {
    let len = |s: &str| s.chars().count();
    if query == word {
        1.0
    } else if text::typo_of(query, word) {
        0.8
    } else if len(query) >= 3 && len(word) >= 3 && (word.starts_with(query) || query.starts_with(word)) {
        0.6
    } else if len(query) >= 4 && word.contains(query) {
        0.5
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tasks(titles: &[&str]) -> Vec<TaskSummary> {
        let count = titles.len() as i64;
        titles
            .iter()
            .enumerate()
            .map(|(i, title)| TaskSummary {
                id: format!("t{}", i + 1),
                title: (*title).into(),
                created_at: (count - i as i64) * 1000,
                status: "running".into(),
            })
            .collect()
    }

    fn named(words: &str) -> TaskRef {
        TaskRef::Named(words.split(' ').map(str::to_owned).collect())
    }

    #[test]
    fn loose_words_find_the_seed_task() {
        let tasks = tasks(&["Cellphone Store CRM", "Nightly import", "Website redesign"]);
        let one = |id: &str| Resolution::One(id.into());
        assert_eq!(resolve(&named("crm"), &tasks, None), one("t1"));
        assert_eq!(resolve(&named("store"), &tasks, None), one("t1"));
        assert_eq!(resolve(&named("phone"), &tasks, None), one("t1"));
        assert_eq!(resolve(&named("cell"), &tasks, None), one("t1"));
        assert_eq!(resolve(&named("cellphne"), &tasks, None), one("t1"));
        assert_eq!(resolve(&named("imports"), &tasks, None), one("t2"));
        assert_eq!(resolve(&named("web"), &tasks, None), one("t3"));
        assert_eq!(resolve(&named("redesing"), &tasks, None), one("t3"));
        assert_eq!(resolve(&named("banana"), &tasks, None), Resolution::NoMatch);
    }

    #[test]
    fn ties_are_ambiguous_and_more_words_break_them() {
        let tasks = tasks(&["Cellphone Store CRM", "CRM data cleanup", "Nightly import"]);
        assert_eq!(resolve(&named("crm"), &tasks, None), Resolution::Ambiguous(vec!["t1".into(), "t2".into()]));
        assert_eq!(resolve(&named("crm cleanup"), &tasks, None), Resolution::One("t2".into()));
        assert_eq!(resolve(&named("crm store"), &tasks, None), Resolution::One("t1".into()));
    }

    #[test]
    fn it_last_and_none() {
        let two = tasks(&["Newer", "Older"]);
        assert_eq!(resolve(&TaskRef::It, &two, Some("t2")), Resolution::One("t2".into()));
        assert_eq!(resolve(&TaskRef::It, &two, None), Resolution::NeedTask);
        assert_eq!(resolve(&TaskRef::It, &two[1..], None), Resolution::One("t2".into()));
        assert_eq!(resolve(&TaskRef::Last, &two, None), Resolution::One("t1".into()));
        assert_eq!(resolve(&TaskRef::Last, &[], None), Resolution::NeedTask);
        assert_eq!(resolve(&TaskRef::None, &two, Some("t1")), Resolution::NeedTask);
        assert_eq!(resolve(&named("newer"), &[], None), Resolution::NoMatch);
    }

    #[test]
    fn last_is_the_newest_even_out_of_order() {
        let mut tasks = tasks(&["A", "B", "C"]);
        tasks[2].created_at = 10_000;
        assert_eq!(resolve(&TaskRef::Last, &tasks, None), Resolution::One("t3".into()));
    }

    #[test]
    fn steps_by_number_or_name() {
        let steps = ["Fetch sources", "Load rows", "Build index", "Load search index"];
        assert_eq!(step_order(&StepRef::Number(2), &steps), Some(2));
        assert_eq!(step_order(&StepRef::Number(5), &steps), None);
        assert_eq!(step_order(&StepRef::Number(0), &steps), None);
        assert_eq!(step_order(&StepRef::Named("load rows".into()), &steps), Some(2));
        assert_eq!(step_order(&StepRef::Named("fetching".into()), &steps), Some(1));
        assert_eq!(step_order(&StepRef::Named("load".into()), &steps), None);
        assert_eq!(step_order(&StepRef::Named("deploy".into()), &steps), None);
    }
}
