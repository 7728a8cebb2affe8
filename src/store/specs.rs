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
    /// The newest row of its path: the file's current outcome (older rows are its history).
    #[serde(default)]
    pub latest: bool,
}

#[derive(sqlx::FromRow)]
struct RawSpec {
    id: i64,
    path: String,
    hash: String,
    status: String,
    error: Option<String>,
    seen_at: f64,
    latest: bool,
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

    /// What became of this (path, content) when it was read before: its status and error; `None` if never read.
    pub async fn spec_verdict(
        &self,
        path: &str,
        hash: &str,
    ) -> Result<Option<(SpecStatus, Option<String>)>, StoreError> {
        let row: Option<(String, Option<String>)> =
            sqlx::query_as("SELECT status, error FROM specs WHERE path = ? AND hash = ?")
                .bind(path)
                .bind(hash)
                .fetch_optional(&self.writer)
                .await?;
        Ok(row.map(|(status, error)| {
            (if status == "accepted" { SpecStatus::Accepted } else { SpecStatus::Rejected }, error)
        }))
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

    /// Spec files seen, newest first; only those at `path` when given (its history, the current outcome first).
    pub async fn specs(&self, path: Option<&str>, limit: i64) -> Result<Vec<SpecRow>, StoreError> {
        const COLUMNS: &str = "SELECT id, path, hash, status, error, seen_at, \
             id = (SELECT MAX(id) FROM specs WHERE path = s.path) AS latest FROM specs AS s";
        let raw: Vec<RawSpec> = match path {
            Some(p) => {
                sqlx::query_as(&format!("{COLUMNS} WHERE path = ? ORDER BY id DESC LIMIT ?"))
                    .bind(p)
                    .bind(limit)
                    .fetch_all(&self.reader)
                    .await?
            }
            None => {
                sqlx::query_as(&format!("{COLUMNS} ORDER BY id DESC LIMIT ?"))
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
                latest: r.latest,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::temp_store;
    use super::*;
    use crate::core::queue::Device;
    use crate::store::NewSession;

    #[tokio::test]
    async fn a_fixed_spec_leaves_the_rejected_list_and_keeps_its_history() {
        let (store, _dir) = temp_store().await;
        store.reject_spec("exp/bad.yaml", "h1", "exp/bad.yaml: line 2: unknown field `lrr`").await.unwrap();
        store.reject_spec("exp/other.yaml", "h9", "exp/other.yaml: bad").await.unwrap();
        assert_eq!(store.rejected_specs(10).await.unwrap().len(), 2);
        let new = NewSession {
            user: "local".into(),
            dataset: "emoji".into(),
            memo: String::new(),
            priority: 0,
            device: Device::Cpu,
            epochs: 1,
            fork_of: None,
        };
        let queued = store.enqueue(Some(("exp/bad.yaml", "h2")), &[new], |_, _| "{}".into()).await.unwrap();
        assert_eq!(queued.len(), 1);
        let rejected = store.rejected_specs(10).await.unwrap();
        assert_eq!(rejected.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(), vec!["exp/other.yaml"]);
        let history = store.specs(Some("exp/bad.yaml"), 10).await.unwrap();
        let outcomes: Vec<(SpecStatus, bool)> = history.iter().map(|r| (r.status, r.latest)).collect();
        assert_eq!(outcomes, vec![(SpecStatus::Accepted, true), (SpecStatus::Rejected, false)]);
        assert_eq!(history[0].sessions, vec![queued[0].to_string()]);
        // broken again: rejected once more, and listed again
        store.reject_spec("exp/bad.yaml", "h3", "exp/bad.yaml: line 1: empty").await.unwrap();
        let rejected = store.rejected_specs(10).await.unwrap();
        assert!(rejected.iter().any(|r| r.0 == "exp/bad.yaml" && r.1.contains("empty")), "{rejected:?}");
        assert_eq!(rejected.len(), 2);
    }
}
