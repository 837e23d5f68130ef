//! Runs blocking database work on tokio's blocking pool, never on an actor's event loop.

use std::future::Future;
use std::sync::Arc;

use db::{AnyConnection, Database, DbError};

use crate::RuntimeError;

/// Runs `work` with a pooled connection on the blocking pool; the future owns everything
/// it needs, so actors can hold it across their own state changes.
pub(crate) fn blocking<T, F>(db: &Arc<Database>, work: F) -> impl Future<Output = Result<T, RuntimeError>> + 'static
where
    T: Send + 'static,
    F: FnOnce(&mut AnyConnection) -> Result<T, DbError> + Send + 'static,
{
    let job = tokio::task::spawn_blocking({
        let db = Arc::clone(db);
        move || {
            let mut conn = db.conn()?;
            work(&mut conn)
        }
    });
    async move { job.await.map_err(|_| RuntimeError::ShuttingDown)?.map_err(RuntimeError::from) }
}
