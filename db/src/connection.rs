//! Opening the database: the backend is chosen from the URL scheme, SQLite gets its
//! pragmas and (for a server, not for admin commands beside it) an exclusive lock file,
//! migrations run, and an r2d2 pool hands out connections.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::r2d2::{self, ManageConnection, PooledConnection};
use diesel::{Connection, PgConnection, SqliteConnection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use crate::DbError;

pub(crate) const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// How long a connection waits for SQLite's write lock before giving up.
const SQLITE_BUSY_TIMEOUT_MS: u32 = 10_000;

/// One connection to either backend; queries are written once against it.
#[derive(diesel::MultiConnection)]
pub enum AnyConnection {
    /// PostgreSQL, the scale-out backend.
    Postgresql(PgConnection),
    /// SQLite, the embedded default.
    Sqlite(SqliteConnection),
}

/// Which backend a URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// `postgres://…` or `postgresql://…`.
    Postgres(String),
    /// `sqlite://PATH`, `sqlite:PATH` or a bare file path.
    Sqlite(PathBuf),
}

impl Backend {
    /// Reads the backend from a database URL.
    pub fn from_url(url: &str) -> Result<Backend, DbError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Backend::Postgres(url.to_owned()));
        }
        let path = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")).unwrap_or(url);
        if path.is_empty() || path == ":memory:" || path.contains("mode=memory") {
            return Err(DbError::Open {
                url: url.to_owned(),
                reason:
                    "an in-memory SQLite database cannot be shared by the pool or survive a restart; give a file path"
                        .into(),
            });
        }
        if let Some((scheme, _)) = path.split_once("://") {
            return Err(DbError::Open {
                url: url.to_owned(),
                reason: format!("unsupported scheme {scheme:?}: use sqlite://PATH or postgres://…"),
            });
        }
        Ok(Backend::Sqlite(PathBuf::from(path)))
    }

    /// A short name for messages and metrics: `sqlite` or `postgres`.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Postgres(_) => "postgres",
            Backend::Sqlite(_) => "sqlite",
        }
    }
}

/// The r2d2 connection manager: establishes the backend the URL names (never guessing by trial, which
/// would hide the real error) and sets SQLite's per-connection pragmas.
#[derive(Debug)]
pub struct Manager {
    backend: Backend,
}

impl ManageConnection for Manager {
    type Connection = AnyConnection;
    type Error = diesel::r2d2::Error;

    fn connect(&self) -> Result<AnyConnection, Self::Error> {
        establish(&self.backend).map_err(diesel::r2d2::Error::ConnectionError)
    }

    fn is_valid(&self, conn: &mut AnyConnection) -> Result<(), Self::Error> {
        conn.batch_execute("SELECT 1").map_err(diesel::r2d2::Error::QueryError)
    }

    fn has_broken(&self, _conn: &mut AnyConnection) -> bool {
        false
    }
}

pub(crate) fn establish(backend: &Backend) -> Result<AnyConnection, diesel::ConnectionError> {
    match backend {
        Backend::Postgres(url) => establish_postgres(url).map(AnyConnection::Postgresql),
        Backend::Sqlite(path) => {
            let mut conn = SqliteConnection::establish(&path.to_string_lossy())?;
            // WAL lets readers run beside the writer; NORMAL sync keeps every committed
            // transaction across a killed process (only an OS crash can lose the last ones).
            conn.batch_execute(&format!(
                "PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS};
                 PRAGMA journal_mode = WAL;
                 PRAGMA synchronous = NORMAL;
                 PRAGMA foreign_keys = ON;"
            ))
            .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
            Ok(AnyConnection::Sqlite(conn))
        }
    }
}

/// A pooled connection.
pub type Conn = PooledConnection<Manager>;

/// How many of the pool's connections are taken and how many wait to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolState {
    /// Handed out now.
    pub in_use: u32,
    /// Open and free.
    pub idle: u32,
    /// Callers waiting for a connection (all are in use).
    pub waiting: u32,
}

/// The opened database: a connection pool, and for SQLite the lock that keeps a second
/// server away from the same file.
pub struct Database {
    pool: r2d2::Pool<Manager>,
    backend: Backend,
    /// Callers inside `conn` or `check` that have no connection yet (r2d2 keeps no count).
    waiting: AtomicU32,
    /// How long `conn` waits for a connection before it fails with [`DbError::Pool`].
    acquire_timeout: Duration,
    // Held for the life of the server; the OS releases it when the process dies.
    _lock: Option<File>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database").field("backend", &self.backend.name()).finish()
    }
}

impl Database {
    /// Opens (and for SQLite creates) the database at `url`, refuses a SQLite file that
    /// another server holds, and runs the embedded migrations.
    pub fn open(url: &str, pool_size: u32) -> Result<Database, DbError> {
        let backend = Backend::from_url(url)?;
        let lock = match &backend {
            Backend::Sqlite(path) => Some(lock_sqlite_file(url, path)?),
            Backend::Postgres(_) => None,
        };
        Database::connect(url, backend, pool_size, lock)
    }

    /// Opens the database at `url` like [`Database::open`], but beside a server that may be
    /// running on it: the SQLite lock file is not taken. The lock keeps a second *server* away
    /// (two would both resume the same tasks); a short-lived admin command such as
    /// `stepwise token create` touches no task and must work while the server runs, which
    /// SQLite's WAL mode and busy timeout allow across processes. Never run tasks on a
    /// database opened this way.
    pub fn open_beside_server(url: &str, pool_size: u32) -> Result<Database, DbError> {
        let backend = Backend::from_url(url)?;
        if let Backend::Sqlite(path) = &backend {
            create_parent_dir(url, path)?;
        }
        Database::connect(url, backend, pool_size, None)
    }

    /// Runs the migrations and builds the pool: what both ways of opening share.
    fn connect(url: &str, backend: Backend, pool_size: u32, lock: Option<File>) -> Result<Database, DbError> {
        // Fail fast with the backend's own message rather than r2d2's timeout.
        let mut first = establish(&backend).map_err(|e| DbError::Open { url: redact(url), reason: e.to_string() })?;
        migrate(&mut first)?;
        let pool = r2d2::Pool::builder()
            .max_size(pool_size)
            .connection_timeout(DEFAULT_ACQUIRE_TIMEOUT)
            .build(Manager { backend: backend.clone() })
            .map_err(|e| DbError::Open { url: redact(url), reason: e.to_string() })?;
        Ok(Database {
            pool,
            backend,
            waiting: AtomicU32::new(0),
            acquire_timeout: DEFAULT_ACQUIRE_TIMEOUT,
            _lock: lock,
        })
    }

    /// This database with `conn` waiting at most `timeout` for a connection. When the
    /// database is gone, that is how long a request takes to be told so.
    pub fn with_acquire_timeout(mut self, timeout: Duration) -> Database {
        self.acquire_timeout = timeout;
        self
    }

    /// A connection from the pool.
    pub fn conn(&self) -> Result<Conn, DbError> {
        let _waiting = Waiting::on(&self.waiting);
        Ok(self.pool.get_timeout(self.acquire_timeout)?)
    }

    /// Checks that the database answers, waiting at most `within` for a connection (a
    /// health check must answer quickly, not after the pool's 30 s timeout).
    pub fn check(&self, within: Duration) -> Result<(), DbError> {
        let waiting = Waiting::on(&self.waiting);
        let mut conn = self.pool.get_timeout(within)?;
        drop(waiting);
        Ok(conn.batch_execute("SELECT 1")?)
    }

    /// The pool's connections now: in use, and open but idle.
    pub fn pool_state(&self) -> PoolState {
        let state = self.pool.state();
        PoolState {
            in_use: state.connections - state.idle_connections,
            idle: state.idle_connections,
            waiting: self.waiting.load(Ordering::Relaxed),
        }
    }

    /// The backend in use.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }
}

/// How long `conn` waits for a connection unless told otherwise.
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// One caller counted as waiting for a connection until it is dropped.
struct Waiting<'a>(&'a AtomicU32);

impl<'a> Waiting<'a> {
    fn on(count: &'a AtomicU32) -> Waiting<'a> {
        count.fetch_add(1, Ordering::Relaxed);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The key of the PostgreSQL advisory lock held around migrations (any constant the
/// application owns; this one spells "stepwise" in ASCII).
const MIGRATION_LOCK_KEY: i64 = 0x7374_6570_7769_7365;

/// Runs the pending migrations. On PostgreSQL several servers may start at once on one
/// database, and Diesel's migration harness takes no lock of its own (each would create the
/// same tables and all but one fail), so the whole run holds a session advisory lock on this
/// connection: the others wait, then find nothing left to run. SQLite needs none — one
/// server per file, and its write lock serialises the rest.
fn migrate(conn: &mut AnyConnection) -> Result<(), DbError> {
    let failed = |e: &dyn std::fmt::Display| DbError::Migration(e.to_string());
    if !matches!(conn, AnyConnection::Postgresql(_)) {
        return conn.run_pending_migrations(MIGRATIONS).map(drop).map_err(|e| failed(&e));
    }
    conn.batch_execute(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})")).map_err(|e| failed(&e))?;
    let ran = conn.run_pending_migrations(MIGRATIONS).map(drop).map_err(|e| failed(&e));
    // The lock also ends with the session; unlocking here lets waiting servers go on at once.
    let unlocked = conn.batch_execute(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})"));
    ran?;
    unlocked.map_err(|e| failed(&e))
}

/// Creates the directory a SQLite file goes in: SQLite creates the file, not its directory.
fn create_parent_dir(url: &str, path: &Path) -> Result<(), DbError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| DbError::Open {
            url: url.to_owned(),
            reason: format!("cannot create directory {}: {e}", dir.display()),
        })?;
    }
    Ok(())
}

fn lock_sqlite_file(url: &str, path: &Path) -> Result<File, DbError> {
    create_parent_dir(url, path)?;
    let lock_path = PathBuf::from(format!("{}.lock", path.display()));
    let file = OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path).map_err(|e| {
        DbError::Open { url: url.to_owned(), reason: format!("cannot open lock file {}: {e}", lock_path.display()) }
    })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(DbError::InUse { path: path.to_owned() }),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(DbError::Open { url: url.to_owned(), reason: format!("cannot lock {}: {e}", lock_path.display()) })
        }
    }
}

/// Every PostgreSQL connection is opened here. libpq talks TLS through OpenSSL, and
/// OpenSSL left to initialise itself registers an exit handler that frees its state while
/// other threads may still be connecting (the doorbell's listener reconnects at any moment):
/// a process could crash with SIGSEGV on its way out. Initialising it first, as the
/// `openssl` crate does, without that handler, makes leaving safe.
pub(crate) fn establish_postgres(url: &str) -> Result<PgConnection, diesel::ConnectionError> {
    openssl_sys::init();
    PgConnection::establish(url)
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let Some((userinfo, host)) = rest.split_once('@') else { return url.to_owned() };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Barrier;

    use diesel::RunQueryDsl;

    use super::*;
    use crate::testing::{TestBackend, TestDb};

    #[test]
    fn the_pool_counts_callers_waiting_for_a_connection() {
        for test_db in TestDb::all() {
            let database = Database::open(&test_db.url, 1).unwrap();
            let held = database.conn().unwrap();
            let state = database.pool_state();
            assert_eq!((state.in_use, state.idle, state.waiting), (1, 0, 0), "{:?}", test_db.backend);
            std::thread::scope(|scope| {
                let waiter = scope.spawn(|| database.conn().map(drop));
                while database.pool_state().waiting == 0 {
                    std::thread::yield_now();
                }
                assert_eq!(database.pool_state().waiting, 1);
                drop(held);
                waiter.join().expect("no panic").expect("the connection, once given back");
            });
            assert_eq!(database.pool_state().waiting, 0);
        }
    }

    #[test]
    fn servers_started_together_on_an_empty_postgres_database_all_come_up() {
        let db = TestDb::new(TestBackend::Postgres);
        let servers = 8;
        let start = Barrier::new(servers);
        let opened: Vec<Result<Database, DbError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..servers)
                .map(|_| {
                    scope.spawn(|| {
                        start.wait();
                        Database::open(&db.url, 1)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("no panic")).collect()
        });
        for (server, result) in opened.iter().enumerate() {
            assert!(result.is_ok(), "server {server}: {:?}", result.as_ref().err());
        }
        let mut conn = opened[0].as_ref().unwrap().conn().unwrap();
        assert!(!conn.has_pending_migration(MIGRATIONS).unwrap(), "every migration ran");
        let applied: i64 =
            diesel::dsl::sql::<diesel::sql_types::BigInt>("SELECT count(*) FROM __diesel_schema_migrations")
                .get_result(&mut *conn)
                .unwrap();
        let written = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations")).unwrap().count();
        assert_eq!(applied, written as i64, "each migration ran once");
    }
}
