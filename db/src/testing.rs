//! Databases for the crate's tests: a SQLite file in a temporary directory always, and a
//! throwaway PostgreSQL database when `STEPWISE_TEST_PG_URL` names a server (unset, the
//! PostgreSQL half of every test is skipped silently, so `cargo test` needs no server).

use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};

use crate::Database;

/// One test's database, removed when dropped.
pub(crate) struct TestDb {
    /// The database URL.
    pub(crate) url: String,
    /// Which backend, for assertion messages.
    pub(crate) backend: &'static str,
    // Holds the SQLite file; for PostgreSQL it only needs to outlive the test.
    _dir: tempfile::TempDir,
    /// The PostgreSQL server URL and the database created on it.
    postgres: Option<(String, String)>,
}

impl TestDb {
    /// A SQLite database, and a PostgreSQL one if a server is configured.
    pub(crate) fn all() -> Vec<TestDb> {
        let mut all = vec![TestDb::sqlite()];
        all.extend(TestDb::postgres());
        all
    }

    fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!("sqlite://{}", dir.path().join("stepwise.db").display());
        TestDb { url, backend: "sqlite", _dir: dir, postgres: None }
    }

    fn postgres() -> Option<TestDb> {
        let server = std::env::var("STEPWISE_TEST_PG_URL").ok()?;
        let name = format!("stepwise_db_test_{:016x}", random_u64());
        admin(&server, &format!("CREATE DATABASE {name}"));
        let (base, _) = server.rsplit_once('/').expect("STEPWISE_TEST_PG_URL names a database");
        let url = format!("{base}/{name}");
        let dir = tempfile::tempdir().expect("temporary directory");
        Some(TestDb { url, backend: "postgres", _dir: dir, postgres: Some((server, name)) })
    }

    /// Opens the database (migrating it) with a small pool.
    pub(crate) fn open(&self) -> Database {
        Database::open(&self.url, 2).unwrap_or_else(|e| panic!("open the {} test database: {e}", self.backend))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((server, name)) = &self.postgres {
            admin(server, &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        }
    }
}

fn admin(server: &str, sql: &str) {
    let mut conn = PgConnection::establish(server).unwrap_or_else(|e| panic!("connect to {server}: {e}"));
    conn.batch_execute(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
}

fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new().build_hasher().finish()
}
