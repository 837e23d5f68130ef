//! The `Hub`: every task event passes through it and is fanned out to the subscribers
//! (the progress recorder now; WebSocket sessions, notifiers and the estimator later). It
//! holds `Recipient`s only, so it never names a subscriber's type.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix::prelude::*;
use tokio::sync::mpsc;

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

/// Starts delivering the events of `topic` into a bounded channel. When the channel is
/// full the event is dropped for this subscriber and `lagged` is set, so a consumer that
/// falls behind (a slow WebSocket client) never slows the hub or grows its memory; it
/// resynchronises from the database when it sees the flag.
#[derive(Message)]
#[rtype(result = "SubscriptionId")]
pub struct SubscribeBounded {
    /// What to deliver.
    pub topic: Topic,
    /// Where to deliver.
    pub sender: mpsc::Sender<TaskEvent>,
    /// Set when an event was dropped because the channel was full.
    pub lagged: Arc<AtomicBool>,
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

/// Where a subscription's events go.
enum Sink {
    Actor(Recipient<TaskEvent>),
    Bounded { sender: mpsc::Sender<TaskEvent>, lagged: Arc<AtomicBool> },
}

impl Sink {
    /// Hands the event over; false once the subscriber is gone.
    fn deliver(&self, event: &TaskEvent) -> bool {
        match self {
            // do_send never drops while the subscriber lives (actix mailboxes grow).
            Sink::Actor(recipient) => {
                recipient.do_send(event.clone());
                true
            }
            Sink::Bounded { sender, lagged } => match sender.try_send(event.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    lagged.store(true, Ordering::Release);
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            },
        }
    }

    fn connected(&self) -> bool {
        match self {
            Sink::Actor(recipient) => recipient.connected(),
            Sink::Bounded { sender, .. } => !sender.is_closed(),
        }
    }
}

/// Fans task events out to subscribers.
#[derive(Default)]
pub struct Hub {
    next_id: u64,
    subscribers: Vec<(SubscriptionId, Topic, Sink)>,
}

impl Hub {
    fn add(&mut self, topic: Topic, sink: Sink) -> SubscriptionId {
        self.next_id += 1;
        let id = SubscriptionId(self.next_id);
        self.subscribers.push((id, topic, sink));
        id
    }
}

impl Actor for Hub {
    type Context = Context<Self>;
}

impl Handler<Subscribe> for Hub {
    type Result = MessageResult<Subscribe>;
    fn handle(&mut self, msg: Subscribe, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.add(msg.topic, Sink::Actor(msg.subscriber)))
    }
}

impl Handler<SubscribeBounded> for Hub {
    type Result = MessageResult<SubscribeBounded>;
    fn handle(&mut self, msg: SubscribeBounded, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.add(msg.topic, Sink::Bounded { sender: msg.sender, lagged: msg.lagged }))
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
        // Subscribers that have stopped are forgotten here.
        self.subscribers.retain(|(_, topic, sink)| {
            if !sink.connected() {
                return false;
            }
            !topic.matches(&event) || sink.deliver(&event)
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
