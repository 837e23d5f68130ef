//! The `Hub`: every task event passes through it and is fanned out to the subscribers
//! (the progress recorder, WebSocket sessions, notifiers). It holds `Recipient`s and
//! channels only, so it never names a subscriber's type. Subscribers are indexed by topic,
//! so an event costs only the subscribers that want it, however many follow other tasks.
//! What queues here is bounded: committed events by the commits behind them, transient ones
//! by the hub's backlog (dropped when it is full), bounded subscribers by their channels;
//! actor subscribers take each event at once, so their mailboxes hold what came since they
//! last ran.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix::prelude::*;
use tokio::sync::mpsc;

use crate::backlog::Ticket;
use crate::event::TaskEvent;
use crate::metrics::HubMetrics;

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

/// Starts delivering the events of `topic` to `subscriber`, an actor that takes each event
/// at once (its mailbox is not bounded; see [`SubscribeBounded`] for one that may lag).
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
    /// Where to deliver; the event is shared, not copied, between such subscribers (a
    /// consumer may cache work per event by its address).
    pub sender: mpsc::Sender<Arc<TaskEvent>>,
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

/// A transient event (a percent, a log line, an estimate: nothing committed) holding its
/// place in the hub's backlog, so that a hub that falls behind drops such events rather
/// than queueing them without limit.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct Transient {
    pub event: TaskEvent,
    pub ticket: Ticket,
}

/// Events of tasks another server runs, read from the database by this server's relay,
/// in order: delivered to the subscribers of their tasks and owners only. Subscribers of
/// everything (the recorder, the notifiers) serve the tasks this server runs; the server
/// running a task serves it with its own.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct Relayed(pub Vec<TaskEvent>);

/// Asks which tasks and owners have subscribers here.
#[derive(Debug, Message)]
#[rtype(result = "Followers")]
pub(crate) struct WhoFollows;

/// The tasks and the owners someone here subscribed to.
#[derive(Debug, Default, MessageResponse)]
pub(crate) struct Followers {
    pub tasks: HashSet<Arc<str>>,
    pub owners: HashSet<Arc<str>>,
}

/// Where a subscription's events go.
enum Sink {
    Actor(Recipient<TaskEvent>),
    Bounded { sender: mpsc::Sender<Arc<TaskEvent>>, lagged: Arc<AtomicBool> },
}

impl Sink {
    /// Hands the event over, counting it in `lagged_drops` if the subscriber lags; false
    /// once the subscriber is gone.
    fn deliver(&self, event: &Arc<TaskEvent>, lagged_drops: &prometheus::IntCounter) -> bool {
        match self {
            // Never dropped while the subscriber lives. Its mailbox has no bound: an actor
            // subscriber takes each event at once, without waiting on anything (the recorder
            // writes in the background, the notifier hands events on), so it holds only what
            // came since it last ran; one that may fall behind subscribes bounded instead.
            Sink::Actor(recipient) if recipient.connected() => {
                recipient.do_send(TaskEvent::clone(event));
                true
            }
            Sink::Actor(_) => false,
            Sink::Bounded { sender, lagged } => match sender.try_send(Arc::clone(event)) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    lagged.store(true, Ordering::Release);
                    lagged_drops.inc();
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            },
        }
    }
}

/// The subscribers of one topic.
type Subscribers = Vec<(SubscriptionId, Sink)>;

/// Fans task events out to subscribers.
pub struct Hub {
    metrics: HubMetrics,
    next_id: u64,
    everything: Subscribers,
    by_owner: HashMap<Arc<str>, Subscribers>,
    by_task: HashMap<Arc<str>, Subscribers>,
    /// Each subscription's topic, to find it again when it ends.
    topics: HashMap<SubscriptionId, Topic>,
}

impl Hub {
    /// A hub with no subscribers, counting into `metrics`.
    pub(crate) fn new(metrics: HubMetrics) -> Hub {
        Hub {
            metrics,
            next_id: 0,
            everything: Vec::new(),
            by_owner: HashMap::new(),
            by_task: HashMap::new(),
            topics: HashMap::new(),
        }
    }

    fn add(&mut self, topic: Topic, sink: Sink) -> SubscriptionId {
        self.next_id += 1;
        let id = SubscriptionId(self.next_id);
        match &topic {
            Topic::All => self.everything.push((id, sink)),
            Topic::Owner(owner) => self.by_owner.entry(Arc::clone(owner)).or_default().push((id, sink)),
            Topic::Task(task) => self.by_task.entry(Arc::clone(task)).or_default().push((id, sink)),
        }
        self.topics.insert(id, topic);
        self.metrics.subscribers.set(self.topics.len() as i64);
        id
    }

    fn remove(&mut self, id: SubscriptionId) {
        let Some(topic) = self.topics.remove(&id) else { return };
        self.metrics.subscribers.set(self.topics.len() as i64);
        let (map, key) = match &topic {
            Topic::All => return self.everything.retain(|(i, _)| *i != id),
            Topic::Owner(owner) => (&mut self.by_owner, owner),
            Topic::Task(task) => (&mut self.by_task, task),
        };
        if let Some(list) = map.get_mut(key) {
            list.retain(|(i, _)| *i != id);
            if list.is_empty() {
                map.remove(key);
            }
        }
    }
}

/// Delivers `event` to each of `list`, forgetting (into `gone`) those that have stopped.
fn fan_out(list: &mut Subscribers, event: &Arc<TaskEvent>, gone: &mut Vec<SubscriptionId>, metrics: &HubMetrics) {
    list.retain(|(id, sink)| {
        let alive = sink.deliver(event, &metrics.lagged_drops);
        if !alive {
            gone.push(*id);
        }
        alive
    });
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
        self.remove(msg.0);
    }
}

impl Handler<Barrier> for Hub {
    type Result = ();
    fn handle(&mut self, _: Barrier, _: &mut Self::Context) {}
}

impl Handler<TaskEvent> for Hub {
    type Result = ();
    fn handle(&mut self, event: TaskEvent, _: &mut Self::Context) {
        self.publish(event, Audience::Everyone);
    }
}

impl Handler<Relayed> for Hub {
    type Result = ();
    fn handle(&mut self, Relayed(events): Relayed, _: &mut Self::Context) {
        for event in events {
            self.publish(event, Audience::Followers);
        }
    }
}

impl Handler<WhoFollows> for Hub {
    type Result = Followers;
    fn handle(&mut self, _: WhoFollows, _: &mut Self::Context) -> Followers {
        Followers { tasks: self.by_task.keys().cloned().collect(), owners: self.by_owner.keys().cloned().collect() }
    }
}

impl Handler<Transient> for Hub {
    type Result = ();
    fn handle(&mut self, Transient { event, ticket }: Transient, _: &mut Self::Context) {
        let dropped = ticket.backlog().take_dropped();
        if dropped > 0 {
            self.metrics.transient_drops.inc_by(dropped);
            tracing::warn!(dropped, "percents, log lines or estimates dropped: the hub fell behind their publishers");
        }
        self.publish(event, Audience::Everyone);
    }
}

/// Who hears an event.
#[derive(Clone, Copy, PartialEq)]
enum Audience {
    /// The subscribers of its task, of its owner and of everything: an event of a task
    /// this server runs.
    Everyone,
    /// The subscribers of its task and of its owner: an event relayed from another server.
    Followers,
}

impl Hub {
    /// Hands `event` to the subscribers of its task and its owner, and to those of
    /// everything if `audience` says so.
    fn publish(&mut self, event: TaskEvent, audience: Audience) {
        let event = Arc::new(event);
        let mut gone = Vec::new();
        if audience == Audience::Everyone {
            fan_out(&mut self.everything, &event, &mut gone, &self.metrics);
        }
        if let Some(list) = self.by_owner.get_mut(&event.owner) {
            fan_out(list, &event, &mut gone, &self.metrics);
        }
        if let Some(list) = self.by_task.get_mut(&event.task_id) {
            fan_out(list, &event, &mut gone, &self.metrics);
        }
        // Subscribers that have stopped are forgotten here.
        for id in gone {
            self.remove(id);
        }
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
