//! The cluster's doorbell: PostgreSQL `NOTIFY` on one channel, saying which tasks changed
//! (or that a task was queued for a server with room).
//! The database holds the truth (the event log, the latest percents, the log lines); a ring
//! only says where to look, so a lost ring costs latency, never data, and a listener that
//! lost its connection looks everywhere once it is back. A server rings at most once per
//! progress flush (and once per task queued), never once per event: every notifying commit
//! takes a database-wide lock.
//! On SQLite (one server per file) nobody listens and nothing rings.

use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection, RunQueryDsl};

use crate::connection::AnyConnection;
use crate::estimates::{save_estimates, StoredEstimate};
use crate::DbError;

/// The channel servers ring and listen on.
const CHANNEL: &str = "stepwise_tasks";

/// The longest payload sent; PostgreSQL refuses 8,000 bytes and more.
const MAX_PAYLOAD: usize = 7_900;

/// What a ring says changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ring {
    /// These tasks.
    Tasks(Vec<String>),
    /// A task was queued for a server with room.
    Queue,
    /// A stopping server released its tasks' leases: the others take them over.
    Released,
    /// Anything: too many tasks for one payload, or rings may have been missed.
    Everything,
}

impl Ring {
    /// Whether the ring concerns `task_id`.
    pub fn concerns(&self, task_id: &str) -> bool {
        match self {
            Ring::Tasks(ids) => ids.iter().any(|id| id == task_id),
            Ring::Queue | Ring::Released => false,
            Ring::Everything => true,
        }
    }

    fn payload(&self) -> String {
        match self {
            Ring::Tasks(ids) if ids.iter().map(|id| id.len() + 1).sum::<usize>() <= MAX_PAYLOAD => ids.join(","),
            Ring::Queue => "+".to_owned(),
            Ring::Released => "-".to_owned(),
            _ => "*".to_owned(),
        }
    }

    fn parse(payload: &str) -> Ring {
        match payload {
            "*" => Ring::Everything,
            "+" => Ring::Queue,
            "-" => Ring::Released,
            ids => Ring::Tasks(ids.split(',').filter(|id| !id.is_empty()).map(str::to_owned).collect()),
        }
    }
}

/// Rings for `tasks` (PostgreSQL only), delivered to the listeners when the current
/// transaction commits, or at once outside one.
pub(crate) fn ring(conn: &mut AnyConnection, tasks: Vec<String>) -> Result<(), DbError> {
    match tasks.is_empty() {
        true => Ok(()),
        false => send(conn, &Ring::Tasks(tasks)),
    }
}

/// Rings `ring` (a queued task, released leases) as [`ring`] does: at the commit of the
/// transaction it is sent in.
pub(crate) fn send(conn: &mut AnyConnection, ring: &Ring) -> Result<(), DbError> {
    if let AnyConnection::Postgresql(pg) = conn {
        diesel::sql_query("SELECT pg_notify($1, $2)")
            .bind::<diesel::sql_types::Text, _>(CHANNEL)
            .bind::<diesel::sql_types::Text, _>(ring.payload())
            .execute(pg)?;
    }
    Ok(())
}

/// Stores the latest estimates of the tasks that changed and rings for them, in one
/// transaction: a server that hears the ring (at the commit) finds the estimates stored.
pub fn announce(conn: &mut AnyConnection, estimates: &[StoredEstimate], changed: Vec<String>) -> Result<(), DbError> {
    if estimates.is_empty() && changed.is_empty() {
        return Ok(());
    }
    conn.transaction(|conn| {
        save_estimates(conn, estimates)?;
        ring(conn, changed)
    })
}

/// A connection of its own that listens for rings (a pooled one would be handed to other
/// work, and `LISTEN` does not survive transaction pooling either).
pub struct Listener {
    conn: PgConnection,
}

impl Listener {
    /// Connects to the PostgreSQL database at `url` and listens.
    pub fn connect(url: &str) -> Result<Listener, DbError> {
        let mut conn = crate::connection::establish_postgres(url)
            .map_err(|e| DbError::Open { url: crate::redact(url), reason: e.to_string() })?;
        conn.batch_execute(&format!("LISTEN {CHANNEL}"))?;
        Ok(Listener { conn })
    }

    /// The rings that arrived since the last call, without waiting; an error means the
    /// connection is lost.
    pub fn rings(&mut self) -> Result<Vec<Ring>, DbError> {
        let mut rings = Vec::new();
        for notification in self.conn.notifications_iter() {
            rings.push(Ring::parse(&notification?.payload));
        }
        Ok(rings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ring_names_its_tasks_or_everything_when_they_do_not_fit() {
        let few = Ring::Tasks(vec!["a1".into(), "b2".into()]);
        assert_eq!(Ring::parse(&few.payload()), few);
        let many = Ring::Tasks((0..1_000).map(|i| format!("{i:016x}")).collect());
        assert_eq!(Ring::parse(&many.payload()), Ring::Everything);
        assert!(Ring::Everything.concerns("x") && few.concerns("b2") && !few.concerns("c3"));
        assert_eq!(Ring::parse(&Ring::Queue.payload()), Ring::Queue);
        assert_eq!(Ring::parse(&Ring::Released.payload()), Ring::Released);
        assert!(!Ring::Queue.concerns("a1") && !Ring::Released.concerns("a1"));
    }

    #[test]
    fn a_listener_hears_the_rings_of_another_connection() {
        let test_db = crate::testing::TestDb::new(crate::testing::TestBackend::Postgres);
        let database = test_db.open();
        let mut listener = Listener::connect(&test_db.url).unwrap();
        assert_eq!(listener.rings().unwrap(), [], "nothing rang yet");
        ring(&mut database.conn().unwrap(), vec!["t1".into(), "t2".into()]).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let heard = loop {
            let rings = listener.rings().unwrap();
            if !rings.is_empty() || std::time::Instant::now() > deadline {
                break rings;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        assert_eq!(heard, [Ring::Tasks(vec!["t1".into(), "t2".into()])]);
    }
}
