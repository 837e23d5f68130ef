//! A user's chat transcript (`chat_messages`): their messages to the bot, its replies, and
//! the notifications their chat preferences route there. The bot (`api::ask`) and the
//! notifier both write it, and neither needs the other to.

use std::sync::Arc;

/// Who wrote a line of a transcript.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    /// The user's message.
    User,
    /// The bot's reply.
    Bot,
    /// A notification ("✅ Your CRM is ready!").
    Notice,
}

impl Sender {
    fn as_str(self) -> &'static str {
        match self {
            Sender::User => "user",
            Sender::Bot => "bot",
            Sender::Notice => "notice",
        }
    }
}

/// Why a line could not be added.
#[derive(Debug, thiserror::Error)]
pub enum TranscriptError {
    /// The database refused or could not be reached.
    #[error(transparent)]
    Db(#[from] db::DbError),
    /// The blocking pool is gone: the server is stopping.
    #[error("the server is shutting down")]
    ShuttingDown,
}

/// Adds a line to `user`'s transcript.
pub async fn append(
    db: &Arc<db::Database>,
    user: &str,
    sender: Sender,
    text: &str,
    task_id: Option<&str>,
    now: i64,
) -> Result<(), TranscriptError> {
    let line = db::ChatMessageRecord {
        id: crate::ids::sortable_id(now),
        user: user.to_owned(),
        sender: sender.as_str().to_owned(),
        text: text.to_owned(),
        task_id: task_id.map(str::to_owned),
        created_at: now,
    };
    let db = Arc::clone(db);
    tokio::task::spawn_blocking(move || db::insert_chat_message(&mut *db.conn()?, &line))
        .await
        .map_err(|_| TranscriptError::ShuttingDown)?
        .map_err(TranscriptError::from)
}
