//! Spec files seen in `experiments/`, one row per (path, content hash): accepted (with the sessions they queued) or
//! rejected (with the error naming the file, field and problem).

use serde::{Deserialize, Serialize};

use super::{Store, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpecStatus {
    Accepted,
    Rejected,
}

impl SpecStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SpecStatus::Accepted => "accepted",
            SpecStatus::Rejected => "rejected",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpecRow {
    pub id: i64,
    pub path: String,
    pub hash: String,
    pub status: SpecStatus,
    pub error: Option<String>,
    pub seen_at: f64,
    /// The sessions it queued (several for a sweep).
    pub sessions: Vec<String>,
}

#[derive(sqlx::FromRow)]
struct RawSpec {
    id: i64,
    path: String,
    hash: String,
    status: String,
    error: Option<String>,
    seen_at: f64,
}

impl Store {
    /// Whether this (path, content) was seen before.
    pub async fn spec_seen(&self, path: &str, hash: &str) -> Result<bool, StoreError> {
        let row: Option<(i64,)> = sqlx::query_as("SELECT id FROM specs WHERE path = ? AND hash = ?")
            .bind(path)
            .bind(hash)
            .fetch_optional(&self.writer)
            .await?;
        Ok(row.is_some())
    }

    /// Forgets the rejections whose error contains `needle` and whose file `still_there` says exists, so the next
    /// intake reads those files again (a spec refused for a missing dataset gets another chance once the dataset is
    /// registered). Returns their paths.
    pub async fn forget_rejections(
        &self,
        needle: &str,
        still_there: impl Fn(&str) -> bool,
    ) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(i64, String)> =
            sqlx::query_as("SELECT id, path FROM specs WHERE status = 'rejected' AND instr(error, ?) > 0")
                .bind(needle)
                .fetch_all(&self.writer)
                .await?;
        let mut paths = Vec::new();
        for (id, path) in rows.into_iter().filter(|(_, p)| still_there(p)) {
            sqlx::query("DELETE FROM specs WHERE id = ?").bind(id).execute(&self.writer).await?;
            paths.push(path);
        }
        Ok(paths)
    }

    /// Records a rejected spec file with its error (once per content).
    pub async fn reject_spec(&self, path: &str, hash: &str, error: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO specs (path, hash, status, error, seen_at) VALUES (?, ?, 'rejected', ?, ?)
             ON CONFLICT (path, hash) DO NOTHING",
        )
        .bind(path)
        .bind(hash)
        .bind(error)
        .bind(super::now())
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Spec files seen, newest first; only those at `path` when given.
    pub async fn specs(&self, path: Option<&str>, limit: i64) -> Result<Vec<SpecRow>, StoreError> {
        let raw: Vec<RawSpec> = match path {
            Some(p) => {
                sqlx::query_as("SELECT * FROM specs WHERE path = ? ORDER BY id DESC LIMIT ?")
                    .bind(p)
                    .bind(limit)
                    .fetch_all(&self.reader)
                    .await?
            }
            None => {
                sqlx::query_as("SELECT * FROM specs ORDER BY id DESC LIMIT ?")
                    .bind(limit)
                    .fetch_all(&self.reader)
                    .await?
            }
        };
        let mut out = Vec::with_capacity(raw.len());
        for r in raw {
            let sessions: Vec<(String,)> = sqlx::query_as("SELECT id FROM sessions WHERE spec_id = ? ORDER BY seq")
                .bind(r.id)
                .fetch_all(&self.reader)
                .await?;
            let status = match r.status.as_str() {
                "accepted" => SpecStatus::Accepted,
                _ => SpecStatus::Rejected,
            };
            out.push(SpecRow {
                id: r.id,
                path: r.path,
                hash: r.hash,
                status,
                error: r.error,
                seen_at: r.seen_at,
                sessions: sessions.into_iter().map(|s| s.0).collect(),
            });
        }
        Ok(out)
    }
}
