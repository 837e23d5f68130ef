//! Approval links, the signed Approve / Reject links that approval push messages carry: the
//! server's secrets (made on first start, kept here so every server sharing the database
//! verifies what any of them signed) and the record of used links, which lets each link act
//! at most once however many servers and requests race for it.

use diesel::prelude::*;

use crate::connection::AnyConnection;
use crate::rows::to_i32;
use crate::schema::{approval_link_uses, server_secrets};
use crate::DbError;

/// How long a used link's row outlives the link. Each server checks expiry on its own clock
/// before it reads this table, so the row must stay longer than any two servers' clocks
/// differ: then no server can take an expired link for a fresh one whose row is gone.
const KEEP_AFTER_EXPIRY_MS: i64 = 24 * 60 * 60 * 1000;

/// The use of one link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalLinkUse {
    /// The link's own id (from its signed payload).
    pub link_id: String,
    /// The task it decides for.
    pub task_id: String,
    /// The step it decides.
    pub step: u32,
    /// `approve` or `reject`.
    pub decision: String,
    /// The task's owner, whom the link acts as.
    pub user: String,
    /// When the link expires, ms since the epoch.
    pub expires_at: i64,
    /// Now, ms since the epoch.
    pub used_at: i64,
}

/// The secret called `name` (its text as stored): the stored one, or `candidate`, stored now
/// if there was none. Two servers starting at once both end up with the one stored first.
pub fn server_secret(conn: &mut AnyConnection, name: &str, candidate: &str, now: i64) -> Result<String, DbError> {
    let row = (server_secrets::name.eq(name), server_secrets::secret.eq(candidate), server_secrets::created_at.eq(now));
    match &mut *conn {
        AnyConnection::Postgresql(pg) => {
            diesel::insert_into(server_secrets::table).values(row).on_conflict_do_nothing().execute(pg)?
        }
        AnyConnection::Sqlite(sqlite) => {
            diesel::insert_into(server_secrets::table).values(row).on_conflict_do_nothing().execute(sqlite)?
        }
    };
    Ok(server_secrets::table.filter(server_secrets::name.eq(name)).select(server_secrets::secret).first(conn)?)
}

/// Records that the link is used, unless it already was: whether this call used it. Of
/// several calls at once for one link, exactly one answers `true` (the insert is one
/// statement against the primary key). Also forgets links long expired.
pub fn use_approval_link(conn: &mut AnyConnection, link: &ApprovalLinkUse) -> Result<bool, DbError> {
    let row = (
        approval_link_uses::link_id.eq(&link.link_id),
        approval_link_uses::task_id.eq(&link.task_id),
        approval_link_uses::step.eq(to_i32(link.step)),
        approval_link_uses::decision.eq(&link.decision),
        approval_link_uses::user_name.eq(&link.user),
        approval_link_uses::expires_at.eq(link.expires_at),
        approval_link_uses::used_at.eq(link.used_at),
    );
    let stale = approval_link_uses::table
        .filter(approval_link_uses::expires_at.lt(link.used_at.saturating_sub(KEEP_AFTER_EXPIRY_MS)));
    diesel::delete(stale).execute(conn)?;
    let inserted = match &mut *conn {
        AnyConnection::Postgresql(pg) => {
            diesel::insert_into(approval_link_uses::table).values(row).on_conflict_do_nothing().execute(pg)?
        }
        AnyConnection::Sqlite(sqlite) => {
            diesel::insert_into(approval_link_uses::table).values(row).on_conflict_do_nothing().execute(sqlite)?
        }
    };
    Ok(inserted == 1)
}

/// Makes a used link usable again (its decision could not be made); whether it was used.
pub fn release_approval_link(conn: &mut AnyConnection, link_id: &str) -> Result<bool, DbError> {
    let row = approval_link_uses::table.filter(approval_link_uses::link_id.eq(link_id));
    Ok(diesel::delete(row).execute(conn)? > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestDb;

    /// A secret is made once per name; a link is used once, can be released and used again,
    /// and rows of links expired for longer than the grace are forgotten. On SQLite and
    /// PostgreSQL.
    #[test]
    fn secrets_are_made_once_and_links_are_used_once() {
        for test_db in TestDb::all() {
            let backend = test_db.backend;
            let database = test_db.open();
            let mut conn = database.conn().unwrap();
            assert_eq!(server_secret(&mut conn, "links", "first", 1).unwrap(), "first", "{backend:?}");
            assert_eq!(server_secret(&mut conn, "links", "second", 2).unwrap(), "first", "{backend:?}");
            assert_eq!(server_secret(&mut conn, "other", "third", 3).unwrap(), "third", "{backend:?}");

            let link = ApprovalLinkUse {
                link_id: "l1".to_owned(),
                task_id: "t1".to_owned(),
                step: 3,
                decision: "approve".to_owned(),
                user: "ada".to_owned(),
                expires_at: 1_000,
                used_at: 500,
            };
            assert!(use_approval_link(&mut conn, &link).unwrap(), "{backend:?}");
            assert!(!use_approval_link(&mut conn, &link).unwrap(), "{backend:?}: used twice");
            assert!(release_approval_link(&mut conn, "l1").unwrap());
            assert!(!release_approval_link(&mut conn, "l1").unwrap());
            assert!(use_approval_link(&mut conn, &link).unwrap(), "{backend:?}: usable once released");

            // Another use a day and more after l1 expired forgets l1.
            let later = ApprovalLinkUse {
                link_id: "l2".to_owned(),
                expires_at: 1_000 + 2 * KEEP_AFTER_EXPIRY_MS,
                used_at: 1_001 + KEEP_AFTER_EXPIRY_MS,
                ..link.clone()
            };
            assert!(use_approval_link(&mut conn, &later).unwrap());
            assert!(!release_approval_link(&mut conn, "l1").unwrap(), "{backend:?}: l1 was forgotten");
        }
    }
}
