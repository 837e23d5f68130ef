//! Throwaway databases for tests, this crate's and the integration tests' (the `testing`
//! feature): a SQLite file in a temporary directory, or a PostgreSQL database created on the
//! server `STEPWISE_TEST_PG_URL` names and dropped after. Every test runs on both backends,
//! so an unset variable fails the test rather than skipping half of it.

use diesel::connection::SimpleConnection;

use crate::{Database, NewStep};

/// An `external` step at `order` with nothing else set, as the runtime would store it.
pub fn external_step(order: u32) -> NewStep {
    NewStep {
        order,
        name: format!("Step {order}"),
        kind: "external".into(),
        params: "{}".into(),
        requires_approval: false,
        skippable: false,
        substeps: vec![],
        estimate_ms: None,
        policy: None,
    }
}

/// The variable naming the PostgreSQL server tests create their databases on.
const PG_URL_VAR: &str = "STEPWISE_TEST_PG_URL";

/// The backend a test database is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestBackend {
    /// A SQLite file.
    Sqlite,
    /// A database on the PostgreSQL server `STEPWISE_TEST_PG_URL` names.
    Postgres,
}

/// A database that exists for one test, removed when dropped.
pub struct TestDb {
    /// The database URL.
    pub url: String,
    /// Its backend.
    pub backend: TestBackend,
    /// A temporary directory for the test: the SQLite file lives here, and the test may put
    /// its own files beside it.
    pub dir: tempfile::TempDir,
    /// The PostgreSQL server URL and the database created on it.
    postgres: Option<(String, String)>,
}

impl TestDb {
    /// A fresh database on `backend`. Panics if PostgreSQL is asked for and not configured.
    pub fn new(backend: TestBackend) -> TestDb {
        let dir = tempfile::tempdir().expect("temporary directory");
        match backend {
            TestBackend::Sqlite => {
                let url = format!("sqlite://{}", dir.path().join("stepwise.db").display());
                TestDb { url, backend, dir, postgres: None }
            }
            TestBackend::Postgres => {
                let server = pg_server();
                let name = format!("stepwise_test_{:016x}", rand::random::<u64>());
                admin(&server, &format!("CREATE DATABASE {name}"));
                let url = match server.rsplit_once('/') {
                    Some((base, _)) => format!("{base}/{name}"),
                    None => panic!("{PG_URL_VAR} needs a database path: {server}"),
                };
                TestDb { url, backend, dir, postgres: Some((server, name)) }
            }
        }
    }

    /// A fresh database on each backend.
    pub fn all() -> [TestDb; 2] {
        [TestDb::new(TestBackend::Sqlite), TestDb::new(TestBackend::Postgres)]
    }

    /// Opens the database (migrating it) with a small pool.
    pub fn open(&self) -> Database {
        Database::open(&self.url, 2).unwrap_or_else(|e| panic!("open the {:?} test database: {e}", self.backend))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((server, name)) = &self.postgres {
            admin(server, &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        }
    }
}

fn pg_server() -> String {
    std::env::var(PG_URL_VAR).unwrap_or_else(|_| {
        panic!(
            "{PG_URL_VAR} is not set: run the tests with scripts/test, which starts PostgreSQL, or set it to a \
             server whose user may CREATE DATABASE (e.g. postgres://postgres@127.0.0.1:5432/postgres)"
        )
    })
}

fn admin(server: &str, sql: &str) {
    let mut conn = crate::connection::establish_postgres(server).unwrap_or_else(|e| panic!("connect to {server}: {e}"));
    conn.batch_execute(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
}
