//! The cluster's membership: one row per server that has run on this database. A server
//! writes its row when it starts, renews its heartbeat with its task leases, and marks the
//! row stopped when it shuts down cleanly; a server whose heartbeat is older than a lease is
//! gone (killed, cut off). Rows of servers stopped or gone for a day are forgotten when
//! another server starts, so a cluster whose servers get new ids on every start (containers
//! without a kept data directory) does not pile them up.

use diesel::prelude::*;

use crate::connection::AnyConnection;
use crate::rows::{to_i32, to_u32};
use crate::schema::servers;
use crate::DbError;

/// How long the row of a stopped or gone server is kept.
const FORGET_AFTER_MS: i64 = 24 * 60 * 60 * 1000;

/// One server of the cluster, as its row says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerRecord {
    /// Its instance id, the one its task leases carry.
    pub id: String,
    /// The URL it serves HTTP on, if it serves any.
    pub address: Option<String>,
    /// When it started, ms since the epoch.
    pub started_at: i64,
    /// Its last heartbeat, ms since the epoch.
    pub heartbeat_at: i64,
    /// How many tasks it ran at its last heartbeat.
    pub running_tasks: u32,
    /// How many it may run at once (`runtime.max_running_tasks`).
    pub max_tasks: u32,
    /// When it shut down cleanly, if it did.
    pub stopped_at: Option<i64>,
}

/// Where a server stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    /// Its heartbeat is fresh.
    Live,
    /// It shut down cleanly.
    Stopped,
    /// Its heartbeat stopped without a clean shutdown: its leases expire and other servers
    /// take its tasks.
    Gone,
}

impl ServerState {
    /// The state's name in the API and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            ServerState::Live => "live",
            ServerState::Stopped => "stopped",
            ServerState::Gone => "gone",
        }
    }
}

impl ServerRecord {
    /// Where the server stands at `now`, when a heartbeat older than `lease_ttl_ms` (the
    /// time its leases last unrenewed) means it is gone.
    pub fn state(&self, now: i64, lease_ttl_ms: i64) -> ServerState {
        match self.stopped_at {
            Some(_) => ServerState::Stopped,
            None if now - self.heartbeat_at > lease_ttl_ms => ServerState::Gone,
            None => ServerState::Live,
        }
    }
}

type ServerRow = (String, Option<String>, i64, i64, i32, i32, Option<i64>);

fn record(
    (id, address, started_at, heartbeat_at, running, max, stopped_at): ServerRow,
) -> Result<ServerRecord, DbError> {
    let running_tasks = to_u32(running, "servers.running_tasks")?;
    let max_tasks = to_u32(max, "servers.max_tasks")?;
    Ok(ServerRecord { id, address, started_at, heartbeat_at, running_tasks, max_tasks, stopped_at })
}

/// Writes the row of server `id`, which may run `max_tasks` at once, starting at `now` (a
/// restarted server keeps its id and gets a fresh row), and forgets servers stopped or gone
/// for a day.
pub fn register_server(
    conn: &mut AnyConnection,
    id: &str,
    address: Option<&str>,
    max_tasks: usize,
    now: i64,
) -> Result<(), DbError> {
    conn.transaction(|conn| {
        diesel::delete(servers::table.filter(servers::heartbeat_at.lt(now - FORGET_AFTER_MS))).execute(conn)?;
        diesel::delete(servers::table.find(id)).execute(conn)?;
        diesel::insert_into(servers::table)
            .values((
                servers::id.eq(id),
                servers::address.eq(address),
                servers::started_at.eq(now),
                servers::heartbeat_at.eq(now),
                servers::running_tasks.eq(0),
                servers::max_tasks.eq(to_i32(u32::try_from(max_tasks).unwrap_or(u32::MAX))),
                servers::stopped_at.eq(None::<i64>),
            ))
            .execute(conn)?;
        Ok(())
    })
}

/// Renews server `id`'s heartbeat with the number of tasks it runs.
pub fn server_heartbeat(conn: &mut AnyConnection, id: &str, running_tasks: usize, now: i64) -> Result<(), DbError> {
    let running = to_i32(u32::try_from(running_tasks).unwrap_or(u32::MAX));
    diesel::update(servers::table.find(id))
        .set((servers::heartbeat_at.eq(now), servers::running_tasks.eq(running)))
        .execute(conn)?;
    Ok(())
}

/// Marks server `id` stopped cleanly at `now`.
pub(crate) fn server_stopped(conn: &mut AnyConnection, id: &str, now: i64) -> Result<(), DbError> {
    diesel::update(servers::table.find(id))
        .set((servers::heartbeat_at.eq(now), servers::running_tasks.eq(0), servers::stopped_at.eq(Some(now))))
        .execute(conn)?;
    Ok(())
}

/// Server `id` leaves the cluster at `now`: releases its task leases (its tasks' actors have
/// stopped), marks it stopped and rings the doorbell, in one transaction, so the other
/// servers take its tasks as soon as they hear it. Returns how many leases it released.
pub fn leave_cluster(conn: &mut AnyConnection, id: &str, now: i64) -> Result<usize, DbError> {
    conn.transaction(|conn| {
        let released = crate::lease::release_leases(conn, id)?;
        server_stopped(conn, id, now)?;
        crate::doorbell::send(conn, &crate::Ring::Released)?;
        Ok(released)
    })
}

/// Every server with a row, the longest-running first.
pub fn list_servers(conn: &mut AnyConnection) -> Result<Vec<ServerRecord>, DbError> {
    let rows: Vec<ServerRow> = servers::table
        .select((
            servers::id,
            servers::address,
            servers::started_at,
            servers::heartbeat_at,
            servers::running_tasks,
            servers::max_tasks,
            servers::stopped_at,
        ))
        .order((servers::started_at.asc(), servers::id.asc()))
        .load(conn)?;
    rows.into_iter().map(record).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestDb;

    const TTL: i64 = 30_000;

    #[test]
    fn servers_register_beat_and_stop_and_the_long_gone_are_forgotten() {
        for test_db in TestDb::all() {
            let db = test_db.open();
            let conn = &mut *db.conn().unwrap();
            register_server(conn, "a", Some("http://127.0.0.1:8081"), 4, 1_000).unwrap();
            register_server(conn, "b", None, 1_000, 2_000).unwrap();
            server_heartbeat(conn, "a", 3, 20_000).unwrap();
            let listed = list_servers(conn).unwrap();
            let ids: Vec<&str> = listed.iter().map(|s| s.id.as_str()).collect();
            assert_eq!(ids, ["a", "b"], "{:?}", test_db.backend);
            let a = &listed[0];
            assert_eq!(
                (a.address.as_deref(), a.heartbeat_at, a.running_tasks, a.max_tasks),
                (Some("http://127.0.0.1:8081"), 20_000, 3, 4)
            );
            assert_eq!(a.state(20_000 + TTL, TTL), ServerState::Live);
            assert_eq!(a.state(20_001 + TTL, TTL), ServerState::Gone, "a heartbeat older than a lease");

            server_stopped(conn, "b", 25_000).unwrap();
            let b = list_servers(conn).unwrap().remove(1);
            assert_eq!((b.state(25_000, TTL), b.stopped_at, b.running_tasks), (ServerState::Stopped, Some(25_000), 0));

            // A restart keeps the id and starts afresh; a day later, the silent "b" is forgotten.
            register_server(conn, "a", Some("http://127.0.0.1:9000"), 8, 25_001 + FORGET_AFTER_MS).unwrap();
            let listed = list_servers(conn).unwrap();
            assert_eq!(listed.len(), 1, "{:?}", test_db.backend);
            assert_eq!(
                (listed[0].started_at, listed[0].running_tasks, listed[0].max_tasks),
                (25_001 + FORGET_AFTER_MS, 0, 8)
            );
            assert_eq!(listed[0].address.as_deref(), Some("http://127.0.0.1:9000"));
        }
    }
}
