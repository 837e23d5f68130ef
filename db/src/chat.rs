//! The chat bot's transcript: each user's messages, the bot's replies and the notifications
//! routed to their chat, kept in the order they were written (ids sort by time) and capped
//! per user so a chatty user's history cannot grow without bound; and each user's
//! conversation (the bot's short memory, opaque here), so any server of a cluster can
//! answer the next message.

use diesel::prelude::*;

use crate::connection::AnyConnection;
use crate::schema::{chat_conversations, chat_messages};
use crate::DbError;

/// Messages kept per user; older ones are dropped as new ones arrive.
pub const TRANSCRIPT_CAP: usize = 1000;

/// One line of a transcript.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessageRecord {
    /// Sorts like the transcript: the time first, so later messages have greater ids.
    pub id: String,
    /// Whose transcript it is in.
    pub user: String,
    /// `user`, `bot` or `notice`.
    pub sender: String,
    /// The text.
    pub text: String,
    /// The task the message is about, if any.
    pub task_id: Option<String>,
    /// When, ms since the epoch.
    pub created_at: i64,
}

/// Appends `message` to its user's transcript, dropping what falls beyond [`TRANSCRIPT_CAP`].
pub fn insert_chat_message(conn: &mut AnyConnection, message: &ChatMessageRecord) -> Result<(), DbError> {
    conn.transaction(|conn| {
        diesel::insert_into(chat_messages::table)
            .values((
                chat_messages::id.eq(&message.id),
                chat_messages::user_name.eq(&message.user),
                chat_messages::sender.eq(&message.sender),
                chat_messages::text.eq(&message.text),
                chat_messages::task_id.eq(&message.task_id),
                chat_messages::created_at.eq(message.created_at),
            ))
            .execute(conn)?;
        let oldest_kept = chat_messages::table
            .filter(chat_messages::user_name.eq(&message.user))
            .order(chat_messages::id.desc())
            .offset(i64::try_from(TRANSCRIPT_CAP - 1).unwrap_or(i64::MAX))
            .select(chat_messages::id)
            .first::<String>(conn)
            .optional()?;
        if let Some(oldest_kept) = oldest_kept {
            let older = chat_messages::table
                .filter(chat_messages::user_name.eq(&message.user))
                .filter(chat_messages::id.lt(oldest_kept));
            diesel::delete(older).execute(conn)?;
        }
        Ok(())
    })
}

/// `user`'s transcript in order: the newest `limit` messages, or with `after` the first
/// `limit` messages written after that id.
pub fn chat_messages(
    conn: &mut AnyConnection,
    user: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<ChatMessageRecord>, DbError> {
    type Row = (String, String, String, String, Option<String>, i64);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mine = chat_messages::table.filter(chat_messages::user_name.eq(user)).select((
        chat_messages::id,
        chat_messages::user_name,
        chat_messages::sender,
        chat_messages::text,
        chat_messages::task_id,
        chat_messages::created_at,
    ));
    let rows = match after {
        Some(after) => {
            mine.filter(chat_messages::id.gt(after)).order(chat_messages::id.asc()).limit(limit).load::<Row>(conn)?
        }
        None => {
            let mut newest = mine.order(chat_messages::id.desc()).limit(limit).load::<Row>(conn)?;
            newest.reverse();
            newest
        }
    };
    Ok(rows
        .into_iter()
        .map(|(id, user, sender, text, task_id, created_at)| ChatMessageRecord {
            id,
            user,
            sender,
            text,
            task_id,
            created_at,
        })
        .collect())
}

/// `user`'s stored conversation and when they last wrote, if any.
pub fn load_conversation(conn: &mut AnyConnection, user: &str) -> Result<Option<(String, i64)>, DbError> {
    Ok(chat_conversations::table
        .find(user)
        .select((chat_conversations::state, chat_conversations::heard_at))
        .first(conn)
        .optional()?)
}

/// Stores `user`'s conversation as of `heard_at`, replacing the one stored. Two messages of
/// one user answered at once by two servers: the later write wins.
pub fn save_conversation(conn: &mut AnyConnection, user: &str, state: &str, heard_at: i64) -> Result<(), DbError> {
    let row = (
        chat_conversations::user_name.eq(user),
        chat_conversations::state.eq(state),
        chat_conversations::heard_at.eq(heard_at),
    );
    let update = (chat_conversations::state.eq(state), chat_conversations::heard_at.eq(heard_at));
    // `MultiConnection` has no ON CONFLICT, but both concrete backends do.
    match conn {
        AnyConnection::Postgresql(pg) => diesel::insert_into(chat_conversations::table)
            .values(row)
            .on_conflict(chat_conversations::user_name)
            .do_update()
            .set(update)
            .execute(pg)?,
        AnyConnection::Sqlite(sqlite) => diesel::insert_into(chat_conversations::table)
            .values(row)
            .on_conflict(chat_conversations::user_name)
            .do_update()
            .set(update)
            .execute(sqlite)?,
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestDb;

    fn line(id: usize, user: &str) -> ChatMessageRecord {
        ChatMessageRecord {
            id: format!("{id:06}"),
            user: user.to_owned(),
            sender: if id.is_multiple_of(2) { "user" } else { "bot" }.to_owned(),
            text: format!("message {id}"),
            task_id: id.is_multiple_of(3).then(|| "t1".to_owned()),
            created_at: i64::try_from(id).unwrap(),
        }
    }

    /// A transcript lists in order, newest page or after an id, only the user's own lines,
    /// and keeps at most the cap; on SQLite and PostgreSQL.
    #[test]
    fn transcripts_list_in_order_and_stay_capped() {
        for test_db in TestDb::all() {
            let backend = test_db.backend;
            let database = test_db.open();
            let mut conn = database.conn().unwrap();
            for id in 1..=TRANSCRIPT_CAP + 5 {
                insert_chat_message(&mut conn, &line(id, "ada")).unwrap();
            }
            insert_chat_message(&mut conn, &line(TRANSCRIPT_CAP + 6, "bob")).unwrap();

            let newest = chat_messages(&mut conn, "ada", None, 3).unwrap();
            let ids: Vec<&str> = newest.iter().map(|m| m.id.as_str()).collect();
            assert_eq!(ids, ["001003", "001004", "001005"], "{backend:?}");
            assert_eq!(newest[2], line(TRANSCRIPT_CAP + 5, "ada"));

            let all = chat_messages(&mut conn, "ada", None, 10_000).unwrap();
            assert_eq!(all.len(), TRANSCRIPT_CAP, "{backend:?}");
            assert_eq!(all[0].id, "000006", "the oldest lines were dropped ({backend:?})");

            let after = chat_messages(&mut conn, "ada", Some("001002"), 2).unwrap();
            let ids: Vec<&str> = after.iter().map(|m| m.id.as_str()).collect();
            assert_eq!(ids, ["001003", "001004"], "{backend:?}");
            assert!(chat_messages(&mut conn, "ada", Some("001005"), 10).unwrap().is_empty());
            assert_eq!(chat_messages(&mut conn, "bob", None, 10).unwrap().len(), 1);
        }
    }

    /// A conversation is stored per user and replaced by the next one; on both backends.
    #[test]
    fn conversations_are_kept_per_user_and_replaced() {
        for test_db in TestDb::all() {
            let backend = test_db.backend;
            let database = test_db.open();
            let mut conn = database.conn().unwrap();
            assert_eq!(load_conversation(&mut conn, "ada").unwrap(), None, "{backend:?}");
            save_conversation(&mut conn, "ada", "{\"a\":1}", 10).unwrap();
            save_conversation(&mut conn, "bob", "{\"b\":1}", 11).unwrap();
            save_conversation(&mut conn, "ada", "{\"a\":2}", 12).unwrap();
            assert_eq!(load_conversation(&mut conn, "ada").unwrap(), Some(("{\"a\":2}".to_owned(), 12)), "{backend:?}");
            assert_eq!(load_conversation(&mut conn, "bob").unwrap(), Some(("{\"b\":1}".to_owned(), 11)), "{backend:?}");
        }
    }
}
