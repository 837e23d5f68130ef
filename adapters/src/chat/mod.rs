//! Ask the bot: plain-English questions and commands about a person's tasks ("How's my CRM
//! task going?", "cancel it and start over"), answered without a language model. The
//! [`intent`] parser reads what a message asks for and which task and step it points at,
//! [`resolve`](mod@resolve) finds that task among the person's from loose words, [`reply`]
//! words the answers in the seed's format, and [`Conversation`] holds the short memory
//! between messages: the task discussed last (what "it" means) and a question awaiting an
//! answer. All of it is pure — no I/O, no clock — so the HTTP endpoint does the fetching
//! and the acting that a [`Decision`] asks for.

pub mod intent;
pub mod reply;
pub mod resolve;
mod text;

use intent::{parse, Intent, Request, StepRef, TaskRef};
use resolve::{resolve, Resolution, TaskSummary};
use serde::{Deserialize, Serialize};

/// A command for the caller to apply to a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// Pause it.
    Pause,
    /// Resume it.
    Resume,
    /// Cancel it.
    Cancel,
    /// Cancel it and start a fresh run of the same plan.
    Restart,
    /// Approve the step waiting for approval.
    Approve,
    /// Reject the step waiting for approval.
    Reject,
    /// Run a failed step again: the one named, or else the failed one.
    Retry {
        /// The step named in the message (resolve a name with [`resolve::step_order`]).
        step: Option<StepRef>,
    },
    /// Skip a step: the one named, or else the failed or current one.
    Skip {
        /// The step named in the message (resolve a name with [`resolve::step_order`]).
        step: Option<StepRef>,
    },
}

impl Action {
    /// The verb, for the endpoint's `action` field: "pause", "resume", "cancel", "restart",
    /// "approve", "reject", "retry" or "skip".
    pub fn verb(&self) -> &'static str {
        match self {
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Cancel => "cancel",
            Action::Restart => "restart",
            Action::Approve => "approve",
            Action::Reject => "reject",
            Action::Retry { .. } => "retry",
            Action::Skip { .. } => "skip",
        }
    }

    /// Whether the action throws work away, and so waits for a "yes".
    fn destroys_work(&self) -> bool {
        matches!(self, Action::Cancel | Action::Restart | Action::Reject | Action::Skip { .. })
    }
}

/// What the caller should show of a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum View {
    /// Its progress: format with [`reply::status`].
    Status,
    /// Its log lines, of one step if named: format with [`reply::logs`].
    Logs {
        /// The step named in the message (resolve a name with [`resolve::step_order`]).
        step: Option<StepRef>,
    },
}

/// What the caller should do with a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Send this text back; nothing else to do.
    Reply(String),
    /// Fetch the task and reply with it as `view` says.
    Show {
        /// The task.
        task_id: String,
        /// What to show of it.
        view: View,
    },
    /// Apply `action` to the task, then reply with [`reply::acted`] (or [`reply::refused`]).
    Act {
        /// The task.
        task_id: String,
        /// The command.
        action: Action,
    },
    /// Send this question back: an action that destroys work waits for a "yes".
    Ask(String),
}

/// What the bot would do once it knows the task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum Goal {
    Show(View),
    Act(Action),
}

/// A question the bot asked, awaiting the next message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum Pending {
    /// "Cancel X? Reply yes to confirm."
    Confirm { task_id: String, title: String, action: Action },
    /// "Which one do you mean?" among `candidates` (ids, in the order listed).
    Choose { goal: Goal, candidates: Vec<String> },
}

/// One person's conversation with the bot: the task discussed last and the question open, if
/// any. Start with `Conversation::default()`; keep one per person (it serializes, so it can
/// be stored between messages), and drop it after a while of silence so that an old
/// question cannot be answered by a much later "yes".
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Conversation {
    last_task: Option<String>,
    pending: Option<Pending>,
}

impl Conversation {
    /// Decides what to do with `message`, given the person's `tasks` (newest first). A "yes"
    /// to an open question does what it asked, a "no" drops it, and anything else drops it
    /// and is handled as a message of its own.
    pub fn handle(&mut self, message: &str, tasks: &[TaskSummary]) -> Decision {
        let request = parse(message);
        match self.pending.take() {
            Some(Pending::Confirm { task_id, title, action }) => match request.intent {
                Intent::Confirm => return Decision::Act { task_id, action },
                Intent::Deny => return Decision::Reply(reply::declined(&title)),
                _ => {}
            },
            Some(Pending::Choose { goal, candidates }) => {
                if request.intent == Intent::Deny {
                    return Decision::Reply(reply::never_mind());
                }
                if let Some(task_id) = choose(&request, &candidates, tasks) {
                    return self.proceed(goal, task_id, tasks);
                }
            }
            None => {}
        }
        self.fresh(request, tasks)
    }

    /// Records that the conversation is now about `task_id`: after a restart, pass the new
    /// task's id, so that "it" means the run that is going on.
    pub fn discussed(&mut self, task_id: &str) {
        self.last_task = Some(task_id.to_owned());
    }

    /// A message with no question open.
    fn fresh(&mut self, request: Request, tasks: &[TaskSummary]) -> Decision {
        let step = request.step;
        let goal = match request.intent {
            Intent::Status => Goal::Show(View::Status),
            Intent::Logs => Goal::Show(View::Logs { step }),
            Intent::Pause => Goal::Act(Action::Pause),
            Intent::Resume => Goal::Act(Action::Resume),
            Intent::Cancel => Goal::Act(Action::Cancel),
            Intent::Restart => Goal::Act(Action::Restart),
            Intent::Approve => Goal::Act(Action::Approve),
            Intent::Reject => Goal::Act(Action::Reject),
            Intent::Retry => Goal::Act(Action::Retry { step }),
            Intent::Skip => Goal::Act(Action::Skip { step }),
            Intent::List => return Decision::Reply(reply::list(tasks)),
            Intent::Help => return Decision::Reply(reply::help()),
            Intent::Confirm | Intent::Deny => return Decision::Reply(reply::nothing_pending()),
            Intent::Unknown => return Decision::Reply(reply::not_understood()),
        };
        if tasks.is_empty() {
            return Decision::Reply(reply::no_tasks());
        }
        match resolve(&request.target, tasks, self.last_task.as_deref()) {
            Resolution::One(task_id) => self.proceed(goal, task_id, tasks),
            Resolution::Ambiguous(candidates) => self.ask_which(goal, candidates, tasks),
            Resolution::NeedTask => self.ask_which(goal, tasks.iter().map(|t| t.id.clone()).collect(), tasks),
            Resolution::NoMatch => {
                let query = match &request.target {
                    TaskRef::Named(words) => words.join(" "),
                    _ => String::new(),
                };
                Decision::Reply(reply::no_match(&query, &titles(tasks)))
            }
        }
    }

    /// The task is known: show, act, or ask first if the action destroys work.
    fn proceed(&mut self, goal: Goal, task_id: String, tasks: &[TaskSummary]) -> Decision {
        self.last_task = Some(task_id.clone());
        match goal {
            Goal::Show(view) => Decision::Show { task_id, view },
            Goal::Act(action) if action.destroys_work() => {
                let title = tasks.iter().find(|t| t.id == task_id).map_or_else(|| task_id.clone(), |t| t.title.clone());
                let question = reply::confirm(&action, &title);
                self.pending = Some(Pending::Confirm { task_id, title, action });
                Decision::Ask(question)
            }
            Goal::Act(action) => Decision::Act { task_id, action },
        }
    }

    fn ask_which(&mut self, goal: Goal, candidates: Vec<String>, tasks: &[TaskSummary]) -> Decision {
        let titles: Vec<&str> =
            candidates.iter().filter_map(|id| tasks.iter().find(|t| &t.id == id)).map(|t| t.title.as_str()).collect();
        let question = reply::which_one(&titles);
        self.pending = Some(Pending::Choose { goal, candidates });
        Decision::Reply(question)
    }
}

/// The candidate an answer to "which one?" picks: by its number in the list ("2", "the
/// second one") or by name among the candidates only ("the store one"). A message that asks
/// for something itself is not an answer.
fn choose(request: &Request, candidates: &[String], tasks: &[TaskSummary]) -> Option<String> {
    if request.intent != Intent::Unknown {
        return None;
    }
    if let TaskRef::Named(words) = &request.target {
        if let [word] = words.as_slice() {
            if let Some(n) = text::number(word) {
                return candidates.get(n as usize - 1).cloned();
            }
        }
    }
    let pool: Vec<TaskSummary> = tasks.iter().filter(|t| candidates.contains(&t.id)).cloned().collect();
    match resolve(&request.target, &pool, None) {
        Resolution::One(task_id) => Some(task_id),
        _ => None,
    }
}

fn titles(tasks: &[TaskSummary]) -> Vec<&str> {
    tasks.iter().map(|t| t.title.as_str()).collect()
}

/// The task list the chat tests resolve against: two CRM tasks, so "my CRM task" is
/// ambiguous among them.
#[cfg(test)]
pub(crate) fn sample_tasks() -> Vec<TaskSummary> {
    let task = |id: &str, title: &str, created_at, status: &str| TaskSummary {
        id: id.into(),
        title: title.into(),
        created_at,
        status: status.into(),
    };
    vec![
        task("crm", "Cellphone Store CRM", 400, "running"),
        task("import", "Nightly import", 300, "failed"),
        task("web", "Website redesign", 200, "paused"),
        task("cleanup", "CRM data cleanup", 100, "approval"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tasks() -> Vec<TaskSummary> {
        sample_tasks()
    }

    fn show(task_id: &str) -> Decision {
        Decision::Show { task_id: task_id.into(), view: View::Status }
    }

    fn act(task_id: &str, action: Action) -> Decision {
        Decision::Act { task_id: task_id.into(), action }
    }

    #[test]
    fn a_confirmed_cancel_acts() {
        let (mut chat, tasks) = (Conversation::default(), tasks());
        assert_eq!(
            chat.handle("Cancel the nightly import", &tasks),
            Decision::Ask("Cancel Nightly import? Reply yes to confirm.".into())
        );
        assert_eq!(chat.handle("yes", &tasks), act("import", Action::Cancel));
        // The question is answered: another yes has nothing to confirm.
        assert_eq!(chat.handle("yes", &tasks), Decision::Reply(reply::nothing_pending()));
    }

    #[test]
    fn a_denied_cancel_does_nothing() {
        let (mut chat, tasks) = (Conversation::default(), tasks());
        assert!(matches!(chat.handle("cancle my crm store task", &tasks), Decision::Ask(_)));
        assert_eq!(chat.handle("no", &tasks), Decision::Reply(reply::declined("Cellphone Store CRM")));
        assert_eq!(chat.handle("yes", &tasks), Decision::Reply(reply::nothing_pending()));
    }

    #[test]
    fn another_message_drops_the_question_and_is_handled() {
        let (mut chat, tasks) = (Conversation::default(), tasks());
        assert!(matches!(chat.handle("skip step 2 of the nightly import", &tasks), Decision::Ask(_)));
        assert_eq!(chat.handle("how's the website redesign going?", &tasks), show("web"));
        assert_eq!(chat.handle("yes", &tasks), Decision::Reply(reply::nothing_pending()));
    }

    #[test]
    fn every_destructive_action_asks_and_the_others_act_at_once() {
        let tasks = tasks();
        for (message, question) in [
            ("cancel the import", "Cancel Nightly import? Reply yes to confirm."),
            ("cancel the import and start over", "Cancel Nightly import and start it over? Reply yes to confirm."),
            ("reject the import", "Reject the waiting step of Nightly import? Reply yes to confirm."),
            ("skip the failed step of the import", "Skip the current step of Nightly import? Reply yes to confirm."),
        ] {
            let mut chat = Conversation::default();
            assert_eq!(chat.handle(message, &tasks), Decision::Ask(question.into()), "{message}");
            assert!(matches!(chat.handle("Yes, do it", &tasks), Decision::Act { .. }), "{message}");
        }
        for (message, action) in [
            ("pause the import", Action::Pause),
            ("resume the import", Action::Resume),
            ("approve the import", Action::Approve),
            ("retry step 2 of the import", Action::Retry { step: Some(StepRef::Number(2)) }),
        ] {
            assert_eq!(Conversation::default().handle(message, &tasks), act("import", action), "{message}");
        }
    }

    #[test]
    fn it_follows_the_task_discussed_last() {
        let (mut chat, tasks) = (Conversation::default(), tasks());
        assert_eq!(chat.handle("status of the nightly import", &tasks), show("import"));
        assert_eq!(chat.handle("pause it", &tasks), act("import", Action::Pause));
        assert_eq!(
            chat.handle("show logs for step 2", &tasks),
            Decision::Show { task_id: "import".into(), view: View::Logs { step: Some(StepRef::Number(2)) } }
        );
        assert_eq!(chat.handle("how's the store one going", &tasks), show("crm"));
        assert_eq!(chat.handle("and when will it be done?", &tasks), show("crm"));
    }

    #[test]
    fn after_a_restart_it_is_the_new_run() {
        let (mut chat, mut tasks) = (Conversation::default(), tasks());
        assert!(matches!(chat.handle("Cancel my CRM store task and start over", &tasks), Decision::Ask(_)));
        assert_eq!(chat.handle("sure", &tasks), act("crm", Action::Restart));
        tasks.insert(0, TaskSummary { id: "crm2".into(), ..tasks[0].clone() });
        chat.discussed("crm2");
        assert_eq!(chat.handle("how's it going", &tasks), show("crm2"));
    }

    #[test]
    fn which_one_is_answered_by_number_or_name() {
        let tasks = tasks();
        let which = Decision::Reply("Which one do you mean?\n1. Cellphone Store CRM\n2. CRM data cleanup".into());
        for (answer, task_id) in [("2", "cleanup"), ("the first one", "crm"), ("the cellphone one", "crm")] {
            let mut chat = Conversation::default();
            assert_eq!(chat.handle("How's my CRM task going?", &tasks), which);
            assert_eq!(chat.handle(answer, &tasks), show(task_id), "{answer}");
        }
        // A destructive action still asks for a yes once the task is known.
        let mut chat = Conversation::default();
        assert_eq!(chat.handle("cancel the CRM one", &tasks), which);
        assert_eq!(
            chat.handle("data cleanup", &tasks),
            Decision::Ask("Cancel CRM data cleanup? Reply yes to confirm.".into())
        );
        assert_eq!(chat.handle("yes", &tasks), act("cleanup", Action::Cancel));
        // "Never mind" drops the question.
        let mut chat = Conversation::default();
        assert_eq!(chat.handle("pause the crm one", &tasks), which);
        assert_eq!(chat.handle("never mind", &tasks), Decision::Reply(reply::never_mind()));
        assert_eq!(chat.handle("2", &tasks), Decision::Reply(reply::not_understood()));
    }

    #[test]
    fn with_nothing_said_before_it_asks_which_task() {
        let tasks = tasks();
        let mut chat = Conversation::default();
        assert_eq!(
            chat.handle("pause it", &tasks),
            Decision::Reply(reply::which_one(&[
                "Cellphone Store CRM",
                "Nightly import",
                "Website redesign",
                "CRM data cleanup"
            ]))
        );
        assert_eq!(chat.handle("the nightly one", &tasks), act("import", Action::Pause));
        // With a single task, "it" can only be that one.
        assert_eq!(Conversation::default().handle("pause it", &tasks[1..2]), act("import", Action::Pause));
    }

    #[test]
    fn unknown_says_so_with_examples() {
        let (mut chat, tasks) = (Conversation::default(), tasks());
        let Decision::Reply(text) = chat.handle("make me a sandwich", &tasks) else { panic!("not a reply") };
        assert!(text.starts_with("Sorry, I didn't understand that."), "{text}");
        assert!(text.contains("\"How's my CRM task going?\""), "{text}");
        assert_eq!(chat.handle("help", &tasks), Decision::Reply(reply::help()));
    }

    #[test]
    fn lists_no_match_and_no_tasks() {
        let (mut chat, tasks) = (Conversation::default(), tasks());
        assert_eq!(chat.handle("what's running?", &tasks), Decision::Reply(reply::list(&tasks)));
        assert_eq!(
            chat.handle("how's my banana task going", &tasks),
            Decision::Reply(reply::no_match("banana", &titles(&tasks)))
        );
        assert_eq!(chat.handle("how's my CRM task going?", &[]), Decision::Reply(reply::no_tasks()));
    }

    #[test]
    fn the_seed_phrasings_with_one_crm_task() {
        let tasks: Vec<TaskSummary> = tasks().into_iter().filter(|t| t.id != "cleanup").collect();
        let mut chat = Conversation::default();
        assert_eq!(chat.handle("How's my CRM task going?", &tasks), show("crm"));
        assert_eq!(chat.handle("Status of my CRM task", &tasks), show("crm"));
        assert_eq!(
            chat.handle("Show logs for my CRM task", &tasks),
            Decision::Show { task_id: "crm".into(), view: View::Logs { step: None } }
        );
        assert_eq!(
            chat.handle("Cancel my CRM task and start over", &tasks),
            Decision::Ask("Cancel Cellphone Store CRM and start it over? Reply yes to confirm.".into())
        );
        assert_eq!(chat.handle("y", &tasks), act("crm", Action::Restart));
    }

    #[test]
    fn verbs_for_the_endpoint() {
        let verbs: Vec<_> = [
            Action::Pause,
            Action::Resume,
            Action::Cancel,
            Action::Restart,
            Action::Approve,
            Action::Reject,
            Action::Retry { step: None },
            Action::Skip { step: None },
        ]
        .iter()
        .map(Action::verb)
        .collect();
        assert_eq!(verbs, ["pause", "resume", "cancel", "restart", "approve", "reject", "retry", "skip"]);
    }
}
