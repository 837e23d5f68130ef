//! Stepwise's persistence, and the only crate that speaks SQL. [`Database::open`] picks
//! SQLite (the embedded default, WAL mode, one server per file) or PostgreSQL from the URL,
//! runs the embedded migrations (one portable set for both) and pools connections with
//! r2d2; [`Database::open_beside_server`] does the same for admin commands while a server
//! runs. Queries are plain functions taking the connection first: [`insert_task`] and
//! [`load_task`] for plans, [`commit`] for a state transition (every write is fenced by the
//! task's lease token; the transition's events, and only transitions, go to the per-task
//! event log), [`record_progress`] for the coalesced percent and log batches (percents are
//! checkpointed in `task_progress`, not in the event log), the `lease` functions for
//! ownership, [`count_tasks_by_status`] and [`Database::pool_state`] for the metrics, the history readers for the API (each takes the task's owner and filters on
//! it in SQL: another user's task is [`DbError::NotFound`], exactly like a missing one) and
//! the estimator, the `accounts` functions for users and their API tokens, the
//! `notifications` functions for each user's notification preferences, the log of delivery
//! attempts, push subscriptions, the server's VAPID key and tasks' estimated durations at
//! start, the `approval_links` functions for the server's named secrets and the record of
//! used approval links, the `chat` functions for each user's chat transcript, the `servers`
//! functions for the cluster's membership, the `doorbell` by which servers tell each other
//! which tasks changed, the `estimates` they share, and the `queue` of tasks waiting for a
//! server with room. All functions are blocking: call
//! them off the actor event loops. The `testing` feature adds the `testing` module:
//! throwaway databases on both backends for this crate's tests and the integration tests.

mod accounts;
mod approval_links;
mod chat;
mod connection;
mod doorbell;
mod estimates;
#[cfg(test)]
mod fixtures;
mod history;
mod idempotency;
mod lease;
mod model;
mod notifications;
mod progress;
mod queue;
mod rows;
mod schema;
mod servers;
mod tasks;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod transition;

pub use accounts::{
    ensure_user, insert_token, list_tokens, revoke_tokens, set_token_rate, token_user, ApiToken, TokenSelector,
    TokenUser,
};
pub use approval_links::{release_approval_link, server_secret, use_approval_link, ApprovalLinkUse};
pub use chat::{
    chat_messages, insert_chat_message, load_conversation, save_conversation, ChatMessageRecord, TRANSCRIPT_CAP,
};
pub use connection::{redact, AnyConnection, Backend, Conn, Database, PoolState};
pub use doorbell::{announce, Listener, Ring};
pub use estimates::{forget_ended_estimates, load_estimates, StoredEstimate};
pub use history::{
    events_after, log_positions, logs_after, progress_history, recent_logs, recent_step_runs, task_events_between,
    task_logs_between, task_step_runs,
};
pub use idempotency::{forget_idempotency_keys, keyed_task, IdempotencyKey, KeyedTask};
pub use lease::{acquire_lease, acquire_live_tasks, acquire_orphaned_tasks, lease_holder, renew_leases, LeaseHolder};
pub use model::{
    EventRecord, LogRecord, LogStream, ProgressMark, ProgressRecord, StepRecord, StepRunRecord, StepStatus, StoredTask,
    SubstepRecord, TaskRecord, TaskStatus,
};
pub use notifications::{
    delete_push_subscription, insert_notification, list_notifications, notification_preferences, push_subscriptions,
    record_start_estimate, save_notification_preferences, save_push_subscription, start_estimate, vapid_private_key,
    NotificationRecord, PushSubscriptionRecord,
};
pub use progress::{record_progress, FlushOutcome, LogLine, ProgressUpdate};
pub use queue::{claim_queued, enqueue, queue_places, queued_tasks, release_own_claims, ClaimedTask};
pub use servers::{leave_cluster, list_servers, register_server, server_heartbeat, ServerRecord, ServerState};
pub use tasks::{
    count_tasks_by_status, insert_task, list_tasks, load_task, load_tasks, NewStep, NewTask, StartClaim, TaskPage,
};
pub use transition::{commit, record_recovered, Commit, NewEvent};

use std::path::PathBuf;

/// What can go wrong in the database layer.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The database could not be opened.
    #[error("cannot open database {url}: {reason}")]
    Open {
        /// The URL, password redacted.
        url: String,
        /// The backend's own explanation.
        reason: String,
    },
    /// Another server holds the SQLite file.
    #[error("database file {} is in use by another Stepwise server; stop it or set database.url to another file", path.display())]
    InUse {
        /// The database file.
        path: PathBuf,
    },
    /// A migration failed.
    #[error("database migration failed: {0}")]
    Migration(String),
    /// No connection could be had from the pool.
    #[error("database connection unavailable: {0}")]
    Pool(#[from] diesel::r2d2::PoolError),
    /// A query failed.
    #[error("database query failed: {0}")]
    Query(#[from] diesel::result::Error),
    /// The task's lease is held by another server (or was taken over): the write was refused.
    #[error("task {task_id} is no longer owned by this server (lease token {token} is stale)")]
    LeaseLost {
        /// The task.
        task_id: String,
        /// The token the refused write carried.
        token: i64,
    },
    /// No such task, or not the owner's: the two read alike. Only for tasks: the API answers
    /// it as a missing task (404 "no task …").
    #[error("no task {0}")]
    NotFound(String),
    /// A stored value could not be read back.
    #[error("corrupt database value: {0}")]
    Corrupt(String),
    /// Another request stored this idempotency key first (see [`crate::keyed_task`]).
    #[error("idempotency key {0:?} is being used by another request")]
    KeyTaken(String),
}

impl DbError {
    /// Whether the database could not be reached (no connection, or the one in hand was
    /// lost): a passing condition, to try again after, rather than a failed query.
    pub fn is_unavailable(&self) -> bool {
        use diesel::result::{DatabaseErrorKind, Error};
        match self {
            DbError::Pool(_) => true,
            DbError::Query(Error::DatabaseError(kind, _)) => {
                matches!(kind, DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand)
            }
            _ => false,
        }
    }
}
