//! The intent parser: what a chat message asks for, which task it points at and which
//! step, from keyword patterns that tolerate typos, case, punctuation and filler words.
//! It knows nothing of the person's tasks; [`resolve`](mod@super::resolve) matches the
//! words it leaves.

use std::collections::HashSet;
use std::sync::OnceLock;

use super::text;

/// What a message asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    /// How a task is going: progress, current step, ETA.
    Status,
    /// A task's log lines, optionally of one step.
    Logs,
    /// Pause a running task.
    Pause,
    /// Resume a paused task.
    Resume,
    /// Cancel a task.
    Cancel,
    /// Cancel a task and start a fresh run of it.
    Restart,
    /// Approve the step waiting for approval.
    Approve,
    /// Reject the step waiting for approval.
    Reject,
    /// Run a failed step again.
    Retry,
    /// Skip a failed or pending step.
    Skip,
    /// List the person's tasks.
    List,
    /// "Yes" to a question.
    Confirm,
    /// "No" to a question.
    Deny,
    /// What the bot can do.
    Help,
    /// Nothing recognised.
    Unknown,
}

/// The task a message points at, before it is matched against the person's tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskRef {
    /// Loose words from the title ("my CRM task" → `["crm"]`), lower case.
    Named(Vec<String>),
    /// "The last one", "my latest task": the newest task.
    Last,
    /// "It", "that one", or no task words at all: the task discussed just before.
    It,
    /// The intent is not about one task (list, help, yes, no).
    None,
}

/// A step a message points at.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum StepRef {
    /// "Step 2", "the second step": the step's 1-based order.
    Number(u32),
    /// "The load rows step": words of the step's name, lower case, matched against the
    /// task's steps by [`super::resolve::step_order`].
    Named(String),
}

/// A parsed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// What it asks for.
    pub intent: Intent,
    /// The task it points at.
    pub target: TaskRef,
    /// The step it points at, if it names one.
    pub step: Option<StepRef>,
}

/// One way of saying an intent: word slots that must appear in this order (other words may
/// sit between them), each slot listing the words that fill it.
type Pattern = &'static [&'static [&'static str]];

/// The patterns, in priority order: the first that matches wins. Specific phrases come before
/// the words inside them ("cancel … and start over" is a restart, "try … again" a retry),
/// actions before questions, and the broad status words last. A `bare` pattern only counts
/// when the message names no task ("what's running?" lists, "what's running in X?" does not).
const RULES: &[(Intent, bool, Pattern)] = &[
    (Intent::Retry, false, &[&["retry", "retrying", "reattempt"]]),
    (Intent::Retry, false, &[&["try"], &["again"]]),
    (Intent::Restart, false, &[&["restart", "restarting", "rerun", "redo", "reboot"]]),
    (Intent::Restart, false, &[&["start", "begin"], &["over", "again", "afresh", "fresh"]]),
    (Intent::Restart, false, &[&["from"], &["scratch"]]),
    (Intent::Restart, false, &[&["run"], &["again"]]),
    (Intent::Cancel, false, &[&["cancel", "abort", "kill", "terminate", "stop", "halt"]]),
    (Intent::Pause, false, &[&["pause", "hold", "suspend", "freeze"]]),
    (Intent::Resume, false, &[&["resume", "unpause", "continue", "proceed", "unfreeze"]]),
    (Intent::Resume, false, &[&["carry", "keep"], &["on", "going"]]),
    (Intent::Approve, false, &[&["approve", "accept", "allow", "lgtm"]]),
    (Intent::Approve, false, &[&["sign"], &["off"]]),
    (Intent::Reject, false, &[&["reject", "decline", "deny", "refuse", "disapprove", "veto"]]),
    (Intent::Skip, false, &[&["skip", "bypass"]]),
    (Intent::Logs, false, &[&["log", "logs", "output", "history", "transcript"]]),
    (Intent::Logs, false, &[&["what", "whats"], &["happened", "went"]]),
    (Intent::Logs, false, &[&["why"], &["fail", "fails", "wrong", "broke", "error", "crash", "crashed"]]),
    (Intent::Help, false, &[&["help", "commands", "examples", "usage"]]),
    (Intent::Help, true, &[&["what"], &["can"], &["you", "i"], &["do", "say", "ask"]]),
    (Intent::Help, true, &[&["how"], &["does"], &["this", "it"], &["work"]]),
    (Intent::Help, true, &[&["how"], &["do"], &["i"]]),
    (Intent::Help, false, &[&["how"], &["do", "does", "can"], &["i", "you", "this", "it"], &["use", "work", "works"]]),
    (Intent::Help, true, &[&["hi", "hello", "hey", "greetings"]]),
    (Intent::List, true, &[&["list", "tasks", "jobs", "everything"]]),
    (Intent::List, true, &[&["what", "whats", "anything", "which"], &["running", "active", "going", "happening"]]),
    (
        Intent::Status,
        false,
        &[&[
            "status", "progress", "eta", "update", "updates", "state", "doing", "going", "along", "far", "when",
            "done", "finished", "finish", "complete", "ready", "how", "hows", "check", "where", "percent", "long",
            "left", "show", "tell", "info", "details", "running", "stuck", "fail", "failed", "paused", "resumed",
            "canceled", "stopped", "skipped", "approved", "rejected", "retried",
        ]],
    ),
    // More status words, kept apart because rustfmt gives a list holding any word this long one
    // line per word.
    (Intent::Status, false, &[&["completed", "happening", "remaining", "cancelled", "restarted"]]),
];

/// Answers that start with a yes: "yes", "sure, cancel it".
const YES: &[&str] =
    &["yes", "y", "yeah", "yep", "yup", "sure", "ok", "okay", "confirm", "confirmed", "absolutely", "definitely"];
/// Answers that start with a no: "no", "nope, don't".
const NO: &[&str] = &["no", "n", "nope", "nah", "nevermind"];
/// Words that may follow a yes or a no without turning it into a new request: "yes, cancel
/// it", "no, don't do that". Anything else ("ok, show the logs") is a request of its own.
const ANSWER_TAIL: &[&str] = &[
    "ahead", "cancel", "restart", "start", "over", "reject", "skip", "stop", "abort", "kill", "dont", "not", "wait",
    "sure", "confirm",
];
/// Whole answers, once filler words are gone.
const YES_PHRASES: &[&[&str]] = &[&["do", "it"], &["go", "ahead"], &["go", "for", "it"], &["of", "course"]];
const NO_PHRASES: &[&[&str]] = &[
    &["cancel", "that"],
    &["never", "mind"],
    &["forget", "it"],
    &["forget", "that"],
    &["dont"],
    &["do", "not"],
    &["not", "now"],
    &["dont", "do", "it"],
];
/// Words dropped before comparing whole answers.
const FILLERS: &[&str] = &["please", "just", "then", "thanks", "thank", "you", "oh", "well", "actually", "um"];

/// Words that name a step.
const STEP_WORDS: &[&str] = &["step", "steps", "stage", "phase"];
/// Words before "step" that point at a step without naming it ("the failed step"): the
/// caller picks that step from the task's state.
const STEP_POINTERS: &[&str] =
    &["failed", "failing", "current", "waiting", "broken", "stuck", "last", "next", "pending"];
/// Words that point at the newest task.
const LAST_WORDS: &[&str] = &["last", "latest", "newest", "recent", "new"];

/// Parses one chat message.
pub fn parse(message: &str) -> Request {
    let words = text::tokens(message);
    if let Some(intent) = answer(&words) {
        return Request { intent, target: TaskRef::None, step: None };
    }
    let mut used = vec![false; words.len()];
    let (mut step, step_mentioned) = find_step(&words, &mut used);
    let mut intent = Intent::Unknown;
    for (candidate, bare, pattern) in RULES {
        if let Some(hits) = find(&words, &used, pattern) {
            if *bare && names_something(&words, &used, &hits) {
                continue;
            }
            intent = *candidate;
            for hit in hits {
                used[hit] = true;
            }
            break;
        }
    }
    // "Restart the failed step", "run step 2 again": starting a step over is a retry.
    if intent == Intent::Restart && (step_mentioned || words.iter().any(|w| w == "failed")) {
        intent = Intent::Retry;
    }
    // "What step is the import on?", "step 2 of the import": about where a task is.
    if intent == Intent::Unknown && step_mentioned {
        intent = Intent::Status;
    }
    let unused = || words.iter().zip(&used).filter(|(_, used)| !**used).map(|(w, _)| w);
    let content: Vec<String> = unused().filter(|w| is_content(w)).cloned().collect();
    let last = unused().any(|w| LAST_WORDS.contains(&w.as_str()));
    let target = match intent {
        Intent::List | Intent::Help | Intent::Confirm | Intent::Deny => TaskRef::None,
        _ if !content.is_empty() => TaskRef::Named(content),
        _ if last => TaskRef::Last,
        // An unrecognised message with no task words points at nothing; it is not about "it".
        Intent::Unknown => TaskRef::None,
        _ => TaskRef::It,
    };
    if matches!(target, TaskRef::None) {
        step = None;
    }
    Request { intent, target, step }
}

/// A yes or a no: a whole answer ("do it", "never mind"), or a yes or no word followed only by
/// words that repeat the question ("yes, cancel it").
fn answer(words: &[String]) -> Option<Intent> {
    let plain: Vec<&str> = words.iter().map(String::as_str).filter(|w| !FILLERS.contains(w)).collect();
    if YES_PHRASES.contains(&plain.as_slice()) {
        return Some(Intent::Confirm);
    }
    if NO_PHRASES.contains(&plain.as_slice()) {
        return Some(Intent::Deny);
    }
    let (first, rest) = words.split_first()?;
    if !rest.iter().all(|w| text::is_stop(w) || FILLERS.contains(&w.as_str()) || ANSWER_TAIL.contains(&w.as_str())) {
        return None;
    }
    if YES.iter().any(|k| is(first, k)) {
        Some(Intent::Confirm)
    } else if NO.iter().any(|k| is(first, k)) {
        Some(Intent::Deny)
    } else {
        None
    }
}

/// Finds a step reference and marks its words used. Returns it and whether a step word
/// appeared at all (with or without saying which step).
fn find_step(words: &[String], used: &mut [bool]) -> (Option<StepRef>, bool) {
    let Some(at) = words.iter().position(|w| STEP_WORDS.iter().any(|k| is(w, k))) else {
        return (None, false);
    };
    used[at] = true;
    // "step 2", "step number 2" ("step #2" loses its "#" in tokens)
    let after = if words.get(at + 1).is_some_and(|w| w == "number") { at + 2 } else { at + 1 };
    if let Some(n) = words.get(after).and_then(|w| text::number(w)) {
        used[at + 1..=after].fill(true);
        return (Some(StepRef::Number(n)), true);
    }
    if let Some(before) = at.checked_sub(1) {
        if let Some(n) = text::number(&words[before]) {
            used[before] = true;
            return (Some(StepRef::Number(n)), true);
        }
        if STEP_POINTERS.contains(&words[before].as_str()) {
            used[before] = true;
            return (None, true);
        }
    }
    // A name: the plain words just before "step" ("the load rows step of …") or else just
    // after it ("step load rows of …"); stop words and keywords end it.
    let is_name = |w: &String| is_content(w) && text::number(w).is_none();
    let start = words[..at].iter().rposition(|w| !is_name(w)).map_or(0, |i| i + 1);
    let range = if start < at {
        start..at
    } else {
        let end = words[at + 1..].iter().position(|w| !is_name(w)).map_or(words.len(), |i| at + 1 + i);
        at + 1..end
    };
    if range.is_empty() {
        return (None, true);
    }
    used[range.clone()].fill(true);
    (Some(StepRef::Named(words[range].join(" "))), true)
}

/// The word positions that fill `pattern`'s slots in order, among words not yet used.
fn find(words: &[String], used: &[bool], pattern: Pattern) -> Option<Vec<usize>> {
    let mut hits = Vec::with_capacity(pattern.len());
    let mut from = 0;
    for slot in pattern {
        let i = (from..words.len()).find(|&i| !used[i] && slot.iter().any(|k| is(&words[i], k)))?;
        hits.push(i);
        from = i + 1;
    }
    Some(hits)
}

/// Whether any word outside `hits` could name a task.
fn names_something(words: &[String], used: &[bool], hits: &[usize]) -> bool {
    words.iter().enumerate().any(|(i, w)| !used[i] && !hits.contains(&i) && is_content(w))
}

/// Whether `word` is `keyword`, or a typo of it. A word that is itself a known word is never
/// read as a typo of another ("step" is not "stop", "will" is not "kill"), and nothing is read
/// as a typo of a stop word ("form" is not "from").
fn is(word: &str, keyword: &str) -> bool {
    word == keyword || (!is_known(word) && !text::is_stop(keyword) && text::typo_of(word, keyword))
}

/// The parser's own words: keywords of every kind, stop words and numbers.
fn is_known(word: &str) -> bool {
    text::is_stop(word) || text::number(word).is_some() || known_words().contains(word)
}

/// Every keyword, gathered once: [`is`] asks for each word of a message against each
/// keyword of each rule, so a scan of the whole list there made parsing quadratic in it
/// (a 400-character message took seconds).
fn known_words() -> &'static HashSet<&'static str> {
    static KNOWN: OnceLock<HashSet<&'static str>> = OnceLock::new();
    KNOWN.get_or_init(|| keywords().collect())
}

fn keywords() -> impl Iterator<Item = &'static str> {
    let rules = RULES.iter().flat_map(|(_, _, pattern)| pattern.iter().flat_map(|slot| slot.iter()));
    let phrases = YES_PHRASES.iter().chain(NO_PHRASES).flat_map(|phrase| phrase.iter());
    let lists = [YES, NO, ANSWER_TAIL, FILLERS, STEP_WORDS, STEP_POINTERS];
    rules.chain(phrases).chain(lists.into_iter().flatten()).copied()
}

/// Whether `word` may be part of a task's name: not a stop word, not a keyword or a typo of
/// one ("cancle" left over in "cancle it and start over" names nothing), not "last".
fn is_content(word: &str) -> bool {
    if text::is_stop(word) || LAST_WORDS.contains(&word) {
        return false;
    }
    // A number can pick from a list ("the second one"), so it stays.
    if text::number(word).is_some() {
        return true;
    }
    !is_known(word) && !keywords().any(|k| is(word, k))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, RngSeed};

    use super::super::resolve::{resolve, Resolution, TaskSummary};
    use super::*;

    proptest! {
        #![proptest_config(Config { cases: 512, rng_seed: RngSeed::Fixed(37), failure_persistence: None, ..Config::default() })]

        /// Whatever a person types, it is understood as some request, never a panic, and the
        /// tasks it names resolve (or not) without one either.
        #[test]
        fn any_message_parses_and_resolves(
            message in prop_oneof![any::<String>(), "(how|what|cancel|pause|resume|approve|status)[ a-zA-Z'?!.]{0,40}"]
        ) {
            let request = parse(&message);
            let _ = format!("{request:?}");
            let _ = resolve(&request.target, &tasks(), Some("web"));
        }
    }

    /// What a phrasing must resolve to against [`tasks`], with "Website redesign" the task
    /// discussed just before.
    #[derive(Debug)]
    enum To {
        One(&'static str),
        Ambiguous(&'static [&'static str]),
        NoMatch,
        /// Not about a task: [`TaskRef::None`].
        Nothing,
    }

    fn tasks() -> Vec<TaskSummary> {
        crate::chat::sample_tasks()
    }

    const BOTH_CRM: &[&str] = &["crm", "cleanup"];

    const TABLE: &[(&str, Intent, To)] = &[
        // status
        ("How's my CRM task going?", Intent::Status, To::Ambiguous(BOTH_CRM)),
        ("how's my crm store task going?", Intent::Status, To::One("crm")),
        ("Status of my CRM task", Intent::Status, To::Ambiguous(BOTH_CRM)),
        ("status of the nightly import", Intent::Status, To::One("import")),
        ("STATUS OF NIGHTLY IMPORT!!!", Intent::Status, To::One("import")),
        ("staus of the website redesign", Intent::Status, To::One("web")),
        ("How far along is the website redesign?", Intent::Status, To::One("web")),
        ("When will the CRM cleanup be done?", Intent::Status, To::One("cleanup")),
        ("is the nightly import finished?", Intent::Status, To::One("import")),
        ("Is the website redesign paused?", Intent::Status, To::One("web")),
        ("how's it going?", Intent::Status, To::One("web")),
        ("how is the last one doing", Intent::Status, To::One("crm")),
        ("what's the progress on my latest task", Intent::Status, To::One("crm")),
        ("Hows the store one going", Intent::Status, To::One("crm")),
        ("progres of cellphone store", Intent::Status, To::One("crm")),
        ("eta for websit redesign?", Intent::Status, To::One("web")),
        ("is it done yet", Intent::Status, To::One("web")),
        ("what's going on with the data cleanup", Intent::Status, To::One("cleanup")),
        ("how's my banana task going", Intent::Status, To::NoMatch),
        ("how's the CRM one going?", Intent::Status, To::Ambiguous(BOTH_CRM)),
        ("status", Intent::Status, To::One("web")),
        ("Can you please tell me how the nigthly import is doing?", Intent::Status, To::One("import")),
        ("how's the gold import going", Intent::Status, To::One("import")),
        // logs
        ("Show logs for my CRM store task", Intent::Logs, To::One("crm")),
        ("show me the logs", Intent::Logs, To::One("web")),
        ("what happened in the nightly import", Intent::Logs, To::One("import")),
        ("logs for step 2 of the nightly import", Intent::Logs, To::One("import")),
        ("What went wrong with the import?", Intent::Logs, To::One("import")),
        ("why did the nightly import fail", Intent::Logs, To::One("import")),
        ("SHOW LGOS FOR WEBSITE REDESIGN", Intent::Logs, To::One("web")),
        ("show the output of the cellphone crm task", Intent::Logs, To::One("crm")),
        // pause and resume
        ("pause my nightly import", Intent::Pause, To::One("import")),
        ("Pasue it", Intent::Pause, To::One("web")),
        ("please put the website redesign on hold", Intent::Pause, To::One("web")),
        ("can you pause the CRM one", Intent::Pause, To::Ambiguous(BOTH_CRM)),
        ("resume the website redesign", Intent::Resume, To::One("web")),
        ("Continue it please", Intent::Resume, To::One("web")),
        ("resme the store task", Intent::Resume, To::One("crm")),
        ("keep going with the latest one", Intent::Resume, To::One("crm")),
        // cancel
        ("Cancel my CRM store task", Intent::Cancel, To::One("crm")),
        ("cancle the nightly import", Intent::Cancel, To::One("import")),
        ("stop the website redesign", Intent::Cancel, To::One("web")),
        ("abort it", Intent::Cancel, To::One("web")),
        ("please cancel the last one", Intent::Cancel, To::One("crm")),
        // restart
        ("Cancel my CRM task and start over", Intent::Restart, To::Ambiguous(BOTH_CRM)),
        ("cancel the cellphone crm and start over", Intent::Restart, To::One("crm")),
        ("start the nightly import over", Intent::Restart, To::One("import")),
        ("restart it", Intent::Restart, To::One("web")),
        ("Restrat the website redesign from scratch", Intent::Restart, To::One("web")),
        ("run the nightly import again", Intent::Restart, To::One("import")),
        // approve and reject
        ("approve the CRM data cleanup", Intent::Approve, To::One("cleanup")),
        ("Aprove it", Intent::Approve, To::One("web")),
        ("looks good, sign off on the cleanup", Intent::Approve, To::One("cleanup")),
        ("reject the crm data cleanup", Intent::Reject, To::One("cleanup")),
        ("Rejcet it", Intent::Reject, To::One("web")),
        ("decline the cleanup", Intent::Reject, To::One("cleanup")),
        // retry and skip
        ("retry the failed step of the nightly import", Intent::Retry, To::One("import")),
        ("Retyr step 2 of nightly import", Intent::Retry, To::One("import")),
        ("try the import again", Intent::Retry, To::One("import")),
        ("restart the failed step", Intent::Retry, To::One("web")),
        ("skip step 2 of the nightly import", Intent::Skip, To::One("import")),
        ("Skpi the failed step", Intent::Skip, To::One("web")),
        ("skip it", Intent::Skip, To::One("web")),
        // list
        ("What's running?", Intent::List, To::Nothing),
        ("show my tasks", Intent::List, To::Nothing),
        ("list tasks", Intent::List, To::Nothing),
        ("LIST MY TASKS PLEASE", Intent::List, To::Nothing),
        ("how are my tasks going", Intent::List, To::Nothing),
        ("anything running?", Intent::List, To::Nothing),
        // yes and no
        ("yes", Intent::Confirm, To::Nothing),
        ("Y", Intent::Confirm, To::Nothing),
        ("sure", Intent::Confirm, To::Nothing),
        ("do it", Intent::Confirm, To::Nothing),
        ("confirm", Intent::Confirm, To::Nothing),
        ("Yes, cancel it", Intent::Confirm, To::Nothing),
        ("confrim", Intent::Confirm, To::Nothing),
        ("no", Intent::Deny, To::Nothing),
        ("cancel that", Intent::Deny, To::Nothing),
        ("Never mind", Intent::Deny, To::Nothing),
        ("nope, don't do it", Intent::Deny, To::Nothing),
        // help and the rest
        ("help", Intent::Help, To::Nothing),
        ("what can you do?", Intent::Help, To::Nothing),
        ("HELP!", Intent::Help, To::Nothing),
        ("hello there", Intent::Help, To::Nothing),
        ("how do I use this?", Intent::Help, To::Nothing),
        ("what step is the nightly import on?", Intent::Status, To::One("import")),
        ("how long until the import finishes", Intent::Status, To::One("import")),
        ("thanks", Intent::Unknown, To::Nothing),
        ("make me a sandwich", Intent::Unknown, To::NoMatch),
        ("", Intent::Unknown, To::Nothing),
    ];

    #[test]
    fn table_of_phrasings_parses_and_resolves() {
        let tasks = tasks();
        let mut failures = Vec::new();
        for (message, intent, to) in TABLE {
            let request = parse(message);
            let resolved = match to {
                To::Nothing => request.target == TaskRef::None,
                To::One(id) => resolve(&request.target, &tasks, Some("web")) == Resolution::One((*id).into()),
                To::Ambiguous(ids) => {
                    let ids = ids.iter().map(|id| (*id).to_owned()).collect();
                    resolve(&request.target, &tasks, Some("web")) == Resolution::Ambiguous(ids)
                }
                To::NoMatch => resolve(&request.target, &tasks, Some("web")) == Resolution::NoMatch,
            };
            if request.intent != *intent || !resolved {
                failures.push(format!("{message:?}: want {intent:?} {to:?}, got {request:?}"));
            }
        }
        assert!(TABLE.len() >= 60);
        assert!(
            failures.is_empty(),
            "{} of {} phrasings failed:\n{}",
            failures.len(),
            TABLE.len(),
            failures.join("\n")
        );
    }

    #[test]
    fn steps_by_number_ordinal_or_name() {
        let cases: &[(&str, Option<StepRef>, TaskRef)] = &[
            ("logs for step 2 of the nightly import", Some(StepRef::Number(2)), named(&["nightly", "import"])),
            ("show logs for the second step", Some(StepRef::Number(2)), TaskRef::It),
            ("what happened in step three of my store task", Some(StepRef::Number(3)), named(&["store"])),
            ("retry step #4", Some(StepRef::Number(4)), TaskRef::It),
            ("retry the 3rd step", Some(StepRef::Number(3)), TaskRef::It),
            (
                "show logs for the load rows step of the nightly import",
                Some(StepRef::Named("load rows".into())),
                named(&["nightly", "import"]),
            ),
            (
                "retry step load rows in nightly import",
                Some(StepRef::Named("load rows".into())),
                named(&["nightly", "import"]),
            ),
            ("skip the failed step", None, TaskRef::It),
            (
                "show logs for the sales form step of the store task",
                Some(StepRef::Named("sales form".into())),
                named(&["store"]),
            ),
            ("show logs for the last step", None, TaskRef::It),
        ];
        for (message, step, target) in cases {
            let request = parse(message);
            assert_eq!((&request.step, &request.target), (step, target), "{message:?}");
        }
    }

    #[test]
    fn last_and_it_and_nothing() {
        assert_eq!(parse("pause my latest task").target, TaskRef::Last);
        assert_eq!(parse("pause the most recent one").target, TaskRef::Last);
        assert_eq!(parse("pause that one").target, TaskRef::It);
        assert_eq!(parse("pause").target, TaskRef::It);
        assert_eq!(parse("2").target, named(&["2"]));
        assert_eq!(parse("the first one"), Request { intent: Intent::Unknown, target: named(&["first"]), step: None });
    }

    #[test]
    fn a_yes_with_a_new_request_is_the_request() {
        assert_eq!(parse("ok, show me the logs").intent, Intent::Logs);
        assert_eq!(parse("no, show the nightly import instead").intent, Intent::Status);
        assert_eq!(parse("yes cancel the nightly import").intent, Intent::Cancel);
    }

    fn named(words: &[&str]) -> TaskRef {
        TaskRef::Named(words.iter().map(|w| (*w).to_owned()).collect())
    }
}
