//! The `Hub`: every task event passes through it and is fanned out to the subscribers
//! (the progress recorder now; WebSocket sessions, notifiers and the estimator later). It
//! holds `Recipient`s only, so it never names a subscriber's type.

use std::sync::Arc;

use actix::prelude::*;

use crate::event::TaskEvent;

/// Identifies a subscription, to end it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubscriptionId(u64);

/// Which events a subscriber wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topic {
    /// Every event (persistence, metrics).
    All,
    /// The events of one owner's tasks.
    Owner(Arc<str>),
    /// The events of one task.
    Task(Arc<str>),
}

impl Topic {
    fn matches(&self, event: &TaskEvent) -> bool {
        match self {
            Topic::All => true,
            Topic::Owner(owner) => *owner == event.owner,
            Topic::Task(task) => *task == event.task_id,
        }
    }
}

/// Starts delivering the events of `topic` to `subscriber`.
#[derive(Message)]
#[rtype(result = "SubscriptionId")]
pub struct Subscribe {
    /// What to deliver.
    pub topic: Topic,
    /// Where to deliver.
    pub subscriber: Recipient<TaskEvent>,
}

/// Ends a subscription.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Unsubscribe(pub SubscriptionId);

/// Answered once every event published before it has been handed to the subscribers'
/// mailboxes: what a flush waits for, so it never overtakes events still in the hub.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Barrier;

/// Fans task events out to subscribers.
#[derive(Default)]
pub struct Hub {
    next_id: u64,
    subscribers: Vec<(SubscriptionId, Topic, Recipient<TaskEvent>)>,
}

impl Actor for Hub {
    type Context = Context<Self>;
}

impl Handler<Subscribe> for Hub {
    type Result = MessageResult<Subscribe>;
    fn handle(&mut self, msg: Subscribe, _: &mut Self::Context) -> Self::Result {
        self.next_id += 1;
        let id = SubscriptionId(self.next_id);
        self.subscribers.push((id, msg.topic, msg.subscriber));
        MessageResult(id)
    }
}

impl Handler<Unsubscribe> for Hub {
    type Result = ();
    fn handle(&mut self, msg: Unsubscribe, _: &mut Self::Context) {
        self.subscribers.retain(|(id, _, _)| *id != msg.0);
    }
}

impl Handler<Barrier> for Hub {
    type Result = ();
    fn handle(&mut self, _: Barrier, _: &mut Self::Context) {}
}

impl Handler<TaskEvent> for Hub {
    type Result = ();
    fn handle(&mut self, event: TaskEvent, _: &mut Self::Context) {
        // do_send never drops while the subscriber lives (actix mailboxes grow); a subscriber
        // that must bound its memory (a slow WebSocket) does so in its own queue. Subscribers
        // that have stopped are forgotten here.
        self.subscribers.retain(|(_, topic, subscriber)| {
            if !subscriber.connected() {
                return false;
            }
            if topic.matches(&event) {
                subscriber.do_send(event.clone());
            }
            true
        });
    }
}

/// A subscriber that hands events to a channel, for code outside the actor world (the
/// terminal view, tests).
pub(crate) struct ChannelSubscriber(pub tokio::sync::mpsc::UnboundedSender<TaskEvent>);

impl Actor for ChannelSubscriber {
    type Context = Context<Self>;
}

impl Handler<TaskEvent> for ChannelSubscriber {
    type Result = ();
    fn handle(&mut self, event: TaskEvent, ctx: &mut Self::Context) {
        if self.0.send(event).is_err() {
            // The receiver is gone: stop, and the hub forgets this subscriber.
            ctx.stop();
        }
    }
}
