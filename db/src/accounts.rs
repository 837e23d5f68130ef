//! Users and their API tokens. Only a hash of each token's secret is stored: the caller
//! (the HTTP layer) hashes a presented secret the same way and looks the hash up, so the
//! database never holds a usable secret.

use diesel::prelude::*;

use crate::connection::AnyConnection;
use crate::rows::{to_i32, to_u32};
use crate::schema::{api_tokens, users};
use crate::DbError;

/// An API token's public record (never the secret, nor its hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    /// The token's id: what people name it by to list or revoke it.
    pub id: String,
    /// The user the token acts as.
    pub user: String,
    /// When it was created, ms since the epoch.
    pub created_at: i64,
    /// When it was revoked, ms since the epoch; `None` while it is valid.
    pub revoked_at: Option<i64>,
    /// Its own request rate, if it has one (else the server's).
    pub requests_per_second: Option<u32>,
}

/// Who an unrevoked token acts as, and at what rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenUser {
    /// The token's id (the rate limit's key).
    pub token_id: String,
    /// The user it acts as.
    pub user: String,
    /// Its own request rate, if it has one (else the server's).
    pub requests_per_second: Option<u32>,
}

/// Which tokens to revoke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSelector<'a> {
    /// The token with this id.
    Id(&'a str),
    /// Every token of this user.
    User(&'a str),
}

/// Stores a token for `user`, creating the user on first use, in one transaction.
/// `secret_hash` is the hash of the token's secret (the caller hashes); it must be unique,
/// like `id`: a duplicate is refused with [`DbError::Query`].
pub fn insert_token(
    conn: &mut AnyConnection,
    id: &str,
    user: &str,
    secret_hash: &str,
    now: i64,
) -> Result<ApiToken, DbError> {
    conn.transaction(|conn| {
        ensure_user(conn, user, now)?;
        diesel::insert_into(api_tokens::table)
            .values((
                api_tokens::id.eq(id),
                api_tokens::user_name.eq(user),
                api_tokens::secret_hash.eq(secret_hash),
                api_tokens::created_at.eq(now),
            ))
            .execute(conn)?;
        Ok(ApiToken {
            id: id.to_owned(),
            user: user.to_owned(),
            created_at: now,
            revoked_at: None,
            requests_per_second: None,
        })
    })
}

/// Creates the user `name` at `now` unless there is one: an application that signs its users
/// in itself names them on their first request.
pub fn ensure_user(conn: &mut AnyConnection, name: &str, now: i64) -> Result<(), DbError> {
    // INSERT … ON CONFLICT DO NOTHING rather than a select first: two first requests of a
    // new user at once would both find it missing, and on SQLite a transaction that reads
    // before it writes can fail to upgrade its WAL snapshot. `MultiConnection` has no ON
    // CONFLICT, but both concrete backends do.
    let new_user = (users::name.eq(name), users::created_at.eq(now));
    match conn {
        AnyConnection::Postgresql(pg) => {
            diesel::insert_into(users::table).values(new_user).on_conflict_do_nothing().execute(pg)?
        }
        AnyConnection::Sqlite(sqlite) => {
            diesel::insert_into(users::table).values(new_user).on_conflict_do_nothing().execute(sqlite)?
        }
    };
    Ok(())
}

/// Who the unrevoked token with this secret hash acts as; `None` for an unknown or revoked
/// token.
pub fn token_user(conn: &mut AnyConnection, secret_hash: &str) -> Result<Option<TokenUser>, DbError> {
    let found: Option<(String, String, Option<i32>)> = api_tokens::table
        .filter(api_tokens::secret_hash.eq(secret_hash))
        .filter(api_tokens::revoked_at.is_null())
        .select((api_tokens::id, api_tokens::user_name, api_tokens::requests_per_second))
        .first(conn)
        .optional()?;
    found
        .map(|(token_id, user, rate)| {
            let requests_per_second = rate.map(|r| to_u32(r, "api_tokens.requests_per_second")).transpose()?;
            Ok(TokenUser { token_id, user, requests_per_second })
        })
        .transpose()
}

/// Gives token `id` its own request rate; returns whether there is such a token.
pub fn set_token_rate(conn: &mut AnyConnection, id: &str, requests_per_second: u32) -> Result<bool, DbError> {
    let rate = to_i32(requests_per_second);
    Ok(diesel::update(api_tokens::table.find(id)).set(api_tokens::requests_per_second.eq(rate)).execute(conn)? > 0)
}

/// Revokes the selected tokens at `now`; returns how many were newly revoked (tokens
/// revoked before keep their original time and are not counted).
pub fn revoke_tokens(conn: &mut AnyConnection, which: TokenSelector<'_>, now: i64) -> Result<usize, DbError> {
    let unrevoked = api_tokens::table.filter(api_tokens::revoked_at.is_null());
    let revoke = api_tokens::revoked_at.eq(now);
    Ok(match which {
        TokenSelector::Id(id) => diesel::update(unrevoked.filter(api_tokens::id.eq(id))).set(revoke).execute(conn)?,
        TokenSelector::User(user) => {
            diesel::update(unrevoked.filter(api_tokens::user_name.eq(user))).set(revoke).execute(conn)?
        }
    })
}

/// Tokens, of one user or of all users, revoked ones included, oldest first (ties by id).
pub fn list_tokens(conn: &mut AnyConnection, user: Option<&str>) -> Result<Vec<ApiToken>, DbError> {
    let mut query = api_tokens::table.into_boxed();
    if let Some(user) = user {
        query = query.filter(api_tokens::user_name.eq(user));
    }
    let rows = query
        .order((api_tokens::created_at.asc(), api_tokens::id.asc()))
        .select((
            api_tokens::id,
            api_tokens::user_name,
            api_tokens::created_at,
            api_tokens::revoked_at,
            api_tokens::requests_per_second,
        ))
        .load::<(String, String, i64, Option<i64>, Option<i32>)>(conn)?;
    rows.into_iter()
        .map(|(id, user, created_at, revoked_at, rate)| {
            let requests_per_second = rate.map(|r| to_u32(r, "api_tokens.requests_per_second")).transpose()?;
            Ok(ApiToken { id, user, created_at, revoked_at, requests_per_second })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestDb;

    /// Insert, look up, list, and revoke by id and by user, on SQLite and PostgreSQL.
    fn holder(id: &str, user: &str, rate: Option<u32>) -> Option<TokenUser> {
        Some(TokenUser { token_id: id.into(), user: user.into(), requests_per_second: rate })
    }

    #[test]
    fn tokens_are_stored_found_listed_and_revoked() {
        for test_db in TestDb::all() {
            let backend = test_db.backend;
            let database = test_db.open();
            let conn = &mut *database.conn().unwrap();

            let first = insert_token(conn, "tok1", "alice", "hash1", 10).unwrap();
            let expected = ApiToken {
                id: "tok1".into(),
                user: "alice".into(),
                created_at: 10,
                revoked_at: None,
                requests_per_second: None,
            };
            assert_eq!(first, expected);
            // A second token of an existing user must not trip over the user row.
            insert_token(conn, "tok2", "alice", "hash2", 20).unwrap();
            insert_token(conn, "tok3", "bob", "hash3", 15).unwrap();

            assert_eq!(token_user(conn, "hash2").unwrap(), holder("tok2", "alice", None), "{backend:?}");
            assert!(set_token_rate(conn, "tok3", 500).unwrap() && !set_token_rate(conn, "missing", 5).unwrap());
            assert_eq!(token_user(conn, "hash3").unwrap(), holder("tok3", "bob", Some(500)), "{backend:?}");
            assert_eq!(list_tokens(conn, Some("bob")).unwrap()[0].requests_per_second, Some(500), "{backend:?}");
            assert_eq!(token_user(conn, "nope").unwrap(), None, "{backend:?}");
            let ids = |tokens: Vec<ApiToken>| tokens.into_iter().map(|t| t.id).collect::<Vec<_>>();
            assert_eq!(ids(list_tokens(conn, None).unwrap()), ["tok1", "tok3", "tok2"], "{backend:?}: oldest first");
            assert_eq!(ids(list_tokens(conn, Some("alice")).unwrap()), ["tok1", "tok2"], "{backend:?}");
            assert!(list_tokens(conn, Some("carol")).unwrap().is_empty(), "{backend:?}");

            assert_eq!(revoke_tokens(conn, TokenSelector::Id("tok1"), 30).unwrap(), 1, "{backend:?}");
            assert_eq!(token_user(conn, "hash1").unwrap(), None, "{backend:?}: a revoked token is not found");
            assert_eq!(revoke_tokens(conn, TokenSelector::Id("tok1"), 40).unwrap(), 0, "{backend:?}: already revoked");
            assert_eq!(revoke_tokens(conn, TokenSelector::Id("missing"), 40).unwrap(), 0, "{backend:?}");
            assert_eq!(revoke_tokens(conn, TokenSelector::User("alice"), 50).unwrap(), 1, "{backend:?}: tok2 only");
            assert_eq!(token_user(conn, "hash2").unwrap(), None, "{backend:?}");
            assert_eq!(token_user(conn, "hash3").unwrap(), holder("tok3", "bob", Some(500)), "{backend:?}");

            let alice: Vec<Option<i64>> =
                list_tokens(conn, Some("alice")).unwrap().into_iter().map(|t| t.revoked_at).collect();
            assert_eq!(alice, [Some(30), Some(50)], "{backend:?}: revocation times are kept, not overwritten");
        }
    }

    /// A user is made once, whoever names it first; on SQLite and PostgreSQL.
    #[test]
    fn ensure_user_makes_a_user_once() {
        for test_db in TestDb::all() {
            let backend = test_db.backend;
            let database = test_db.open();
            let conn = &mut *database.conn().unwrap();
            ensure_user(conn, "ada", 10).unwrap();
            ensure_user(conn, "ada", 20).unwrap();
            insert_token(conn, "tok1", "ada", "hash1", 30).unwrap();
            let users: Vec<(String, i64)> = users::table.select((users::name, users::created_at)).load(conn).unwrap();
            assert_eq!(users, [("ada".to_owned(), 10)], "{backend:?}");
        }
    }

    /// A duplicate secret hash or id is refused and leaves nothing behind, on SQLite and
    /// PostgreSQL.
    #[test]
    fn duplicate_tokens_are_refused_whole() {
        for test_db in TestDb::all() {
            let backend = test_db.backend;
            let database = test_db.open();
            let conn = &mut *database.conn().unwrap();
            insert_token(conn, "tok1", "alice", "hash1", 10).unwrap();
            assert!(matches!(insert_token(conn, "tok2", "bob", "hash1", 20), Err(DbError::Query(_))), "{backend:?}");
            assert!(matches!(insert_token(conn, "tok1", "bob", "hash2", 20), Err(DbError::Query(_))), "{backend:?}");
            let users: Vec<String> = users::table.select(users::name).load(conn).unwrap();
            assert_eq!(users, ["alice"], "{backend:?}: the failed inserts' user rows were rolled back");
            assert_eq!(list_tokens(conn, None).unwrap().len(), 1, "{backend:?}");
        }
    }

    /// An admin command can open a SQLite file that a server holds.
    #[test]
    fn admin_commands_open_beside_a_server() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("data/stepwise.db").display());
        let server = crate::Database::open(&url, 2).unwrap();
        assert!(matches!(crate::Database::open(&url, 2), Err(DbError::InUse { .. })), "a second server is refused");
        let admin = crate::Database::open_beside_server(&url, 1).unwrap();
        insert_token(&mut admin.conn().unwrap(), "tok1", "alice", "hash1", 10).unwrap();
        assert_eq!(token_user(&mut server.conn().unwrap(), "hash1").unwrap(), holder("tok1", "alice", None));

        let fresh = format!("sqlite://{}", dir.path().join("new/dir/stepwise.db").display());
        crate::Database::open_beside_server(&fresh, 1).expect("creates the directory, as open does");
    }
}
