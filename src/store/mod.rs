//! The store: all SQL lives here (SQLite through sqlx, WAL, numbered append-only migrations in `migrations/`).
//!
//! The daemon is the database's only writer, and within the daemon every write goes through one connection (the
//! `writer` pool has exactly one), so a read-check-write such as a session state transition can never interleave with
//! another write. Reads use their own pool of read-only connections, which WAL lets run beside the writer. Metric rows
//! go through [`metrics::MetricSink`], which batches them into one transaction per batch, so a training step never
//! waits on an fsync. Queries are checked at run time (no compile-time `DATABASE_URL`).

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

use crate::core::session::SessionError;

pub mod checkpoints;
pub mod dashboard;
pub mod datasets;
pub mod metrics;
pub mod rungs;
pub mod sessions;
pub mod slurm;
pub mod specs;
pub mod submissions;

pub use checkpoints::{CheckpointPin, CheckpointRow};
pub use datasets::DatasetRow;
pub use metrics::{MetricRow, MetricSink};
pub use rungs::RungRow;
pub use sessions::{NewSession, Queued, SessionFilter, SessionRow};
pub use specs::{SpecRow, SpecStatus};
pub use submissions::{NewSubmission, ScoredSubmission, StoredMember, SubmissionRow, SubmissionState};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path}: {source}")]
    Open { path: String, source: sqlx::Error },
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("unknown session {0}")]
    UnknownSession(String),
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error("corrupt row in {table}: {message}")]
    Corrupt { table: &'static str, message: String },
}

const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The daemon's database.
#[derive(Debug, Clone)]
pub struct Store {
    writer: SqlitePool,
    reader: SqlitePool,
}

impl Store {
    /// Opens (creating if needed) the database at `path`, switches it to WAL and applies pending migrations.
    pub async fn open(path: &Path) -> Result<Store, StoreError> {
        let open_err = |source| StoreError::Open { path: path.display().to_string(), source };
        let base =
            SqliteConnectOptions::from_str("sqlite://").map_err(open_err)?.filename(path).busy_timeout(BUSY_TIMEOUT);
        let writer_options = base
            .clone()
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL in WAL mode loses nothing when the process dies, only (at most the last commits) on power loss.
            .synchronous(SqliteSynchronous::Normal);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(Duration::from_secs(60))
            .connect_with(writer_options)
            .await
            .map_err(open_err)?;
        sqlx::migrate!().run(&writer).await?;
        let reader =
            SqlitePoolOptions::new().max_connections(8).connect_with(base.read_only(true)).await.map_err(open_err)?;
        Ok(Store { writer, reader })
    }

    /// Closes both pools; the last connection to close checkpoints the WAL into the main file.
    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }

    /// `PRAGMA integrity_check`: `ok` when the file is sound.
    pub async fn integrity_check(&self) -> Result<String, StoreError> {
        let rows: Vec<(String,)> = sqlx::query_as("PRAGMA integrity_check").fetch_all(&self.reader).await?;
        Ok(rows.into_iter().map(|r| r.0).collect::<Vec<_>>().join("; "))
    }
}

/// Seconds since the Unix epoch, the store's clock.
pub fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// A fresh store in a temporary folder (kept alive by the returned guard).
    pub async fn temp_store() -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(&dir.path().join("rush.db")).await.expect("open store");
        (store, dir)
    }
}
