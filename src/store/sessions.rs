//! Sessions: enqueueing (numbers allocated per user and dataset), listing, and state changes, which all go through
//! [`SessionState::transition`] inside one write transaction.

use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::{Store, StoreError, now};
use crate::core::queue::Device;
use crate::core::session::{SessionId, SessionState};
use crate::core::spec::ResolvedSpec;

/// A session as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRow {
    pub id: SessionId,
    pub spec_id: Option<i64>,
    /// `session:checkpoint` a fork started from.
    pub fork_of: Option<String>,
    /// The resolved spec as JSON, as stored; read it through [`SessionRow::resolved_spec`].
    pub spec: String,
    pub memo: String,
    pub priority: i32,
    pub device: Device,
    pub state: SessionState,
    pub seq: i64,
    pub queued_at: f64,
    pub started_at: Option<f64>,
    pub finished_at: Option<f64>,
    pub slot: Option<String>,
    pub pid: Option<i64>,
    pub pid_start: Option<i64>,
    pub exit_reason: Option<String>,
    pub epochs: i64,
    pub epoch: Option<i64>,
    pub best_val_acc: Option<f64>,
    /// The sweep it is a trial of (the `seq` of the sweep's first session), for a session queued with others.
    #[serde(default)]
    pub sweep: Option<i64>,
}

impl SessionRow {
    /// `k/R` for a trial of a sweep with a searcher: the rung it has reached of its run's rungs (see
    /// [`crate::core::spec::Searcher::rung_label`]); `None` for any other session.
    pub fn rung_label(&self) -> Option<String> {
        self.sweep?;
        self.rung_label_of(&self.resolved_spec().ok()?.spec)
    }

    /// [`SessionRow::rung_label`] with the spec already read.
    pub fn rung_label_of(&self, spec: &crate::core::spec::Spec) -> Option<String> {
        self.sweep?;
        spec.rung_label(u32::try_from(self.epoch.unwrap_or(0)).unwrap_or(0))
    }

    /// The resolved spec stored with this session: the one typed read of its `spec` column.
    pub fn resolved_spec(&self) -> Result<ResolvedSpec, StoreError> {
        serde_json::from_str(&self.spec).map_err(|e| StoreError::Corrupt {
            table: "sessions",
            message: format!("session {}: the stored spec is unreadable: {e}", self.id),
        })
    }
}

/// A queued session as ordering needs it (no spec): see [`Store::queue`].
#[derive(Debug, Clone, PartialEq)]
pub struct Queued {
    pub id: SessionId,
    pub priority: i32,
    pub seq: i64,
    pub device: Device,
    /// See [`SessionRow::sweep`].
    pub sweep: Option<i64>,
}

impl<'r> sqlx::FromRow<'r, SqliteRow> for SessionRow {
    fn from_row(row: &'r SqliteRow) -> Result<Self, sqlx::Error> {
        let decode =
            |column: &str, e: String| sqlx::Error::ColumnDecode { index: column.to_string(), source: e.into() };
        let id: String = row.try_get("id")?;
        let state: String = row.try_get("state")?;
        let device: String = row.try_get("device")?;
        Ok(SessionRow {
            id: id.parse().map_err(|e: crate::core::session::SessionError| decode("id", e.to_string()))?,
            spec_id: row.try_get("spec_id")?,
            fork_of: row.try_get("fork_of")?,
            spec: row.try_get("spec")?,
            memo: row.try_get("memo")?,
            priority: row.try_get("priority")?,
            device: device.parse().map_err(|e| decode("device", e))?,
            state: state.parse().map_err(|e| decode("state", e))?,
            seq: row.try_get("seq")?,
            queued_at: row.try_get("queued_at")?,
            started_at: row.try_get("started_at")?,
            finished_at: row.try_get("finished_at")?,
            slot: row.try_get("slot")?,
            pid: row.try_get("pid")?,
            pid_start: row.try_get("pid_start")?,
            exit_reason: row.try_get("exit_reason")?,
            epochs: row.try_get("epochs")?,
            epoch: row.try_get("epoch")?,
            best_val_acc: row.try_get("best_val_acc")?,
            sweep: row.try_get("sweep")?,
        })
    }
}

/// What a new session needs; its number is allocated by [`Store::enqueue`].
#[derive(Debug, Clone, PartialEq)]
pub struct NewSession {
    pub user: String,
    pub dataset: String,
    pub memo: String,
    pub priority: i32,
    pub device: Device,
    pub epochs: u32,
    pub fork_of: Option<String>,
}

impl NewSession {
    /// A one-epoch session of `user` on `dataset` at priority 0, no memo, not a fork (what scheduling tests queue).
    pub fn plain(user: &str, dataset: &str, device: Device) -> NewSession {
        NewSession {
            user: user.to_string(),
            dataset: dataset.to_string(),
            memo: String::new(),
            priority: 0,
            device,
            epochs: 1,
            fork_of: None,
        }
    }
}

/// Which sessions `ps` lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionFilter {
    /// Finished ones too, not only queued and running.
    pub all: bool,
    pub dataset: Option<String>,
    /// Only this user's sessions (a member of a shared daemon sees its own only).
    pub user: Option<String>,
}

impl Store {
    /// Queues sessions in one transaction: the spec file's row (when they come from one) and one session per entry;
    /// sessions queued together are one sweep (they share [`SessionRow::sweep`]). `resolve` gives the resolved spec
    /// JSON of each allocated id (entry index alongside). Returns the new ids; an empty list when this (path, hash) was
    /// recorded already.
    pub async fn enqueue(
        &self,
        spec_file: Option<(&str, &str)>,
        sessions: &[NewSession],
        resolve: impl Fn(&SessionId, usize) -> String,
    ) -> Result<Vec<SessionId>, StoreError> {
        let mut tx = self.writer.begin().await?;
        let t = now();
        let spec_id = match spec_file {
            Some((path, hash)) => {
                let id: Option<(i64,)> = sqlx::query_as(
                    "INSERT INTO specs (path, hash, status, seen_at) VALUES (?, ?, 'accepted', ?)
                     ON CONFLICT (path, hash) DO NOTHING RETURNING id",
                )
                .bind(path)
                .bind(hash)
                .bind(t)
                .fetch_optional(&mut *tx)
                .await?;
                match id {
                    Some((id,)) => Some(id),
                    None => return Ok(vec![]),
                }
            }
            None => None,
        };
        let (mut seq,): (i64,) =
            sqlx::query_as("SELECT COALESCE(MAX(seq), 0) FROM sessions").fetch_one(&mut *tx).await?;
        let mut ids = Vec::with_capacity(sessions.len());
        let sweep = (sessions.len() > 1).then_some(seq + 1);
        for (i, s) in sessions.iter().enumerate() {
            let (n,): (i64,) = sqlx::query_as(
                "INSERT INTO session_counters (user, dataset, last_n) VALUES (?, ?, 1)
                 ON CONFLICT (user, dataset) DO UPDATE SET last_n = last_n + 1 RETURNING last_n",
            )
            .bind(&s.user)
            .bind(&s.dataset)
            .fetch_one(&mut *tx)
            .await?;
            let n = u32::try_from(n)
                .map_err(|_| StoreError::Corrupt { table: "session_counters", message: format!("counter {n}") })?;
            let id = SessionId::new(&s.user, &s.dataset, n)?;
            seq += 1;
            sqlx::query(
                "INSERT INTO sessions (id, user, dataset, n, spec_id, fork_of, spec, memo, priority, device, state, seq,
                                       queued_at, epochs, sweep)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?)",
            )
            .bind(id.to_string())
            .bind(&s.user)
            .bind(&s.dataset)
            .bind(n)
            .bind(spec_id)
            .bind(&s.fork_of)
            .bind(resolve(&id, i))
            .bind(&s.memo)
            .bind(s.priority)
            .bind(s.device.as_str())
            .bind(seq)
            .bind(t)
            .bind(s.epochs)
            .bind(sweep)
            .execute(&mut *tx)
            .await?;
            ids.push(id);
        }
        tx.commit().await?;
        Ok(ids)
    }

    /// Sessions for `ps`, newest first.
    pub async fn sessions(&self, filter: &SessionFilter) -> Result<Vec<SessionRow>, StoreError> {
        let mut sql = String::from("SELECT * FROM sessions WHERE 1 = 1");
        if !filter.all {
            sql.push_str(" AND state IN ('queued', 'running', 'waiting')");
        }
        if filter.dataset.is_some() {
            sql.push_str(" AND dataset = ?");
        }
        if filter.user.is_some() {
            sql.push_str(" AND user = ?");
        }
        sql.push_str(" ORDER BY seq DESC");
        let mut q = sqlx::query_as(&sql);
        if let Some(d) = &filter.dataset {
            q = q.bind(d);
        }
        if let Some(u) = &filter.user {
            q = q.bind(u);
        }
        Ok(q.fetch_all(&self.reader).await?)
    }

    /// Sessions in a state, in queue order.
    /// The queue in FIFO order, without the specs, read from the reader pool: the scheduler ticks and every queue
    /// position shown read it, so with thousands queued it must neither hold the writer nor copy every spec.
    pub async fn queue(&self) -> Result<Vec<Queued>, StoreError> {
        let rows: Vec<(String, i32, i64, String, Option<i64>)> =
            sqlx::query_as("SELECT id, priority, seq, device, sweep FROM sessions WHERE state = 'queued' ORDER BY seq")
                .fetch_all(&self.reader)
                .await?;
        let decode =
            |column: &str, e: String| sqlx::Error::ColumnDecode { index: column.to_string(), source: e.into() };
        let mut out = Vec::with_capacity(rows.len());
        for (id, priority, seq, device, sweep) in rows {
            out.push(Queued {
                id: id.parse().map_err(|e: crate::core::session::SessionError| decode("id", e.to_string()))?,
                priority,
                seq,
                device: device.parse().map_err(|e| decode("device", e))?,
                sweep,
            });
        }
        Ok(out)
    }

    pub async fn sessions_in(&self, state: SessionState) -> Result<Vec<SessionRow>, StoreError> {
        Ok(sqlx::query_as("SELECT * FROM sessions WHERE state = ? ORDER BY seq")
            .bind(state.as_str())
            .fetch_all(&self.writer)
            .await?)
    }

    /// The sessions forked from a checkpoint of `parent`, oldest first.
    pub async fn forks_of(&self, parent: &SessionId) -> Result<Vec<SessionRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT * FROM sessions WHERE dataset = ?1 AND substr(fork_of, 1, length(?2) + 1) = ?2 || ':' ORDER BY seq",
        )
        .bind(&parent.dataset)
        .bind(parent.to_string())
        .fetch_all(&self.reader)
        .await?)
    }

    pub async fn session(&self, id: &SessionId) -> Result<Option<SessionRow>, StoreError> {
        Ok(sqlx::query_as("SELECT * FROM sessions WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.reader)
            .await?)
    }

    /// The session, or [`StoreError::UnknownSession`].
    pub async fn session_required(&self, id: &SessionId) -> Result<SessionRow, StoreError> {
        self.session(id).await?.ok_or_else(|| StoreError::UnknownSession(id.to_string()))
    }

    /// Moves a session to `to` if [`SessionState::transition`] allows it from its current state; returns the state it
    /// left. Going to `running` records the slot and start time; going back to `queued` clears slot and pid; a
    /// terminal state records the finish time; `reason` becomes the exit reason (cleared when `None`).
    pub async fn transition(
        &self,
        id: &SessionId,
        to: SessionState,
        slot: Option<&str>,
        reason: Option<&str>,
    ) -> Result<SessionState, StoreError> {
        let mut tx = self.writer.begin().await?;
        let row: Option<(String,)> = sqlx::query_as("SELECT state FROM sessions WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await?;
        let Some((from,)) = row else {
            return Err(StoreError::UnknownSession(id.to_string()));
        };
        let from: SessionState = from.parse().map_err(|message| StoreError::Corrupt { table: "sessions", message })?;
        from.transition(id, to)?;
        let sql = match to {
            SessionState::Running => {
                "UPDATE sessions SET state = ?, slot = ?, exit_reason = ?, started_at = ?, finished_at = NULL,
                 pid = NULL, pid_start = NULL WHERE id = ?"
            }
            // Back in the queue: finished_at is bound to NULL.
            _ => {
                "UPDATE sessions SET state = ?, slot = ?, exit_reason = ?, finished_at = ?, pid = NULL, pid_start = NULL
                 WHERE id = ?"
            }
        };
        let slot = if to == SessionState::Running { slot } else { None };
        let t = if to == SessionState::Queued { None } else { Some(now()) };
        sqlx::query(sql)
            .bind(to.as_str())
            .bind(slot)
            .bind(reason)
            .bind(t)
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(from)
    }

    /// Records the running child's pid and start time (to recognise it after a restart).
    pub async fn set_child(&self, id: &SessionId, pid: u32, start: Option<u64>) -> Result<(), StoreError> {
        sqlx::query("UPDATE sessions SET pid = ?, pid_start = ? WHERE id = ? AND state = 'running'")
            .bind(pid)
            .bind(start.map(|s| s as i64))
            .bind(id.to_string())
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// Records an ended epoch: progress and the best validation accuracy so far.
    pub async fn set_progress(&self, id: &SessionId, epoch: u32, val_acc: f64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE sessions SET epoch = ?,
                 best_val_acc = CASE WHEN best_val_acc IS NULL OR ? > best_val_acc THEN ? ELSE best_val_acc END
             WHERE id = ?",
        )
        .bind(epoch)
        .bind(val_acc)
        .bind(val_acc)
        .bind(id.to_string())
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Deletes a session's rows (metrics, checkpoints, events, its rung results, the session). Its number is never
    /// reused.
    pub async fn remove_session(&self, id: &SessionId) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        let key = id.to_string();
        for sql in [
            "DELETE FROM metrics WHERE session = ?",
            "DELETE FROM metric_rollups WHERE session = ?",
            "DELETE FROM checkpoints WHERE session = ?",
            "DELETE FROM events WHERE session = ?",
            "DELETE FROM rungs WHERE session = ?",
        ] {
            sqlx::query(sql).bind(&key).execute(&mut *tx).await?;
        }
        let done = sqlx::query("DELETE FROM sessions WHERE id = ?").bind(&key).execute(&mut *tx).await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::UnknownSession(key));
        }
        tx.commit().await?;
        Ok(())
    }

    /// Stores a non-step event line of a session, once: the same line again (every line carries its own time) is a
    /// replay, as when a restarted daemon re-reads a Slurm job's `events.jsonl` from the last offset it recorded, and
    /// is skipped.
    pub async fn add_event(&self, id: &SessionId, t: f64, kind: &str, body: &str) -> Result<(), StoreError> {
        let key = id.to_string();
        sqlx::query(
            "INSERT INTO events (session, t, kind, body) SELECT ?, ?, ?, ? \
             WHERE NOT EXISTS (SELECT 1 FROM events WHERE session = ? AND body = ?)",
        )
        .bind(&key)
        .bind(t)
        .bind(kind)
        .bind(body)
        .bind(&key)
        .bind(body)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// The newest stored event of `kind` of a session, as (t, JSON line).
    pub async fn last_event(&self, id: &SessionId, kind: &str) -> Result<Option<(f64, String)>, StoreError> {
        Ok(sqlx::query_as("SELECT t, body FROM events WHERE session = ? AND kind = ? ORDER BY id DESC LIMIT 1")
            .bind(id.to_string())
            .bind(kind)
            .fetch_optional(&self.reader)
            .await?)
    }

    /// A session's stored events (oldest first) as (t, kind, JSON line).
    pub async fn events(&self, id: &SessionId) -> Result<Vec<(f64, String, String)>, StoreError> {
        Ok(sqlx::query_as("SELECT t, kind, body FROM events WHERE session = ? ORDER BY id")
            .bind(id.to_string())
            .fetch_all(&self.reader)
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::temp_store;
    use super::*;

    #[tokio::test]
    async fn an_event_line_replayed_is_stored_once() {
        let (store, _dir) = temp_store().await;
        let id: SessionId = "local/emoji/1".parse().unwrap();
        let line = |epoch: u32, t: f64| format!(r#"{{"event":"epoch","t":{t},"epoch":{epoch}}}"#);
        store.add_event(&id, 1.0, "epoch", &line(1, 1.0)).await.unwrap();
        store.add_event(&id, 2.0, "epoch", &line(2, 2.0)).await.unwrap();
        // a restarted daemon re-reads the last line
        store.add_event(&id, 2.0, "epoch", &line(2, 2.0)).await.unwrap();
        // the same content from another session, or at another time, is another event
        let other: SessionId = "local/emoji/2".parse().unwrap();
        store.add_event(&other, 2.0, "epoch", &line(2, 2.0)).await.unwrap();
        store.add_event(&id, 3.0, "epoch", &line(2, 3.0)).await.unwrap();
        let kept: Vec<String> = store.events(&id).await.unwrap().into_iter().map(|(_, _, body)| body).collect();
        assert_eq!(kept, vec![line(1, 1.0), line(2, 2.0), line(2, 3.0)]);
        assert_eq!(store.events(&other).await.unwrap().len(), 1);
    }

    fn new(dataset: &str) -> NewSession {
        NewSession {
            user: "local".into(),
            dataset: dataset.into(),
            memo: String::new(),
            priority: 0,
            device: Device::Cpu,
            epochs: 2,
            fork_of: None,
        }
    }

    #[tokio::test]
    async fn enqueue_numbers_per_dataset_once_per_spec_content() {
        let (store, _dir) = temp_store().await;
        let ids = store.enqueue(Some(("/e/a.yaml", "h1")), &[new("emoji"), new("emoji")], |id, _| id.to_string()).await;
        let ids = ids.unwrap();
        assert_eq!(ids.iter().map(|i| i.to_string()).collect::<Vec<_>>(), vec!["local/emoji/1", "local/emoji/2"]);
        assert!(store.spec_seen("/e/a.yaml", "h1").await.unwrap());
        // The same content again queues nothing.
        assert!(
            store.enqueue(Some(("/e/a.yaml", "h1")), &[new("emoji")], |_, _| "{}".into()).await.unwrap().is_empty()
        );
        let other = store.enqueue(Some(("/e/b.yaml", "h2")), &[new("synth")], |_, _| "{}".into()).await.unwrap();
        assert_eq!(other[0].to_string(), "local/synth/1");
        let row = store.session_required(&ids[1]).await.unwrap();
        assert_eq!((row.state, row.spec.as_str(), row.seq), (SessionState::Queued, "local/emoji/2", 2));
        let specs = store.specs(Some("/e/a.yaml"), 10).await.unwrap();
        assert_eq!(specs[0].sessions, vec!["local/emoji/1", "local/emoji/2"]);
        // Numbers are never reused, even after rm.
        store.remove_session(&ids[1]).await.unwrap();
        let again = store.enqueue(None, &[new("emoji")], |_, _| "{}".into()).await.unwrap();
        assert_eq!(again[0].to_string(), "local/emoji/3");
    }

    #[tokio::test]
    async fn transitions_follow_the_state_machine_and_record_times() {
        let (store, _dir) = temp_store().await;
        let id = store.enqueue(None, &[new("emoji")], |_, _| "{}".into()).await.unwrap().remove(0);
        assert!(store.transition(&id, SessionState::Succeeded, None, None).await.is_err());
        store.transition(&id, SessionState::Running, Some("cpu0"), None).await.unwrap();
        store.set_child(&id, 1234, Some(99)).await.unwrap();
        let row = store.session_required(&id).await.unwrap();
        assert_eq!((row.slot.as_deref(), row.pid, row.pid_start), (Some("cpu0"), Some(1234), Some(99)));
        assert!(row.started_at.is_some() && row.finished_at.is_none());
        store.transition(&id, SessionState::Queued, None, Some("daemon restarted")).await.unwrap();
        let row = store.session_required(&id).await.unwrap();
        assert_eq!((row.state, row.slot, row.pid), (SessionState::Queued, None, None));
        store.transition(&id, SessionState::Running, Some("cpu0"), None).await.unwrap();
        store.transition(&id, SessionState::Failed, None, Some("boom")).await.unwrap();
        let row = store.session_required(&id).await.unwrap();
        assert_eq!((row.state, row.exit_reason.as_deref()), (SessionState::Failed, Some("boom")));
        assert!(row.finished_at.is_some());
        let err = store.transition(&id, SessionState::Running, None, None).await.unwrap_err().to_string();
        assert!(err.contains("cannot go from failed to running"), "{err}");
        let unknown: SessionId = "local/emoji/9".parse().unwrap();
        assert!(matches!(
            store.transition(&unknown, SessionState::Running, None, None).await,
            Err(StoreError::UnknownSession(_))
        ));
        assert_eq!(store.integrity_check().await.unwrap(), "ok");
    }

    #[tokio::test]
    async fn filters_and_progress() {
        let (store, _dir) = temp_store().await;
        let a = store.enqueue(None, &[new("emoji")], |_, _| "{}".into()).await.unwrap().remove(0);
        let b = store.enqueue(None, &[new("synth")], |_, _| "{}".into()).await.unwrap().remove(0);
        store.transition(&a, SessionState::Stopped, None, None).await.unwrap();
        store.set_progress(&b, 1, 0.5).await.unwrap();
        store.set_progress(&b, 2, 0.4).await.unwrap();
        let row = store.session_required(&b).await.unwrap();
        assert_eq!((row.epoch, row.best_val_acc), (Some(2), Some(0.5)));
        let active = store.sessions(&SessionFilter::default()).await.unwrap();
        assert_eq!(active.iter().map(|s| s.id.clone()).collect::<Vec<_>>(), vec![b.clone()]);
        let all = store.sessions(&SessionFilter { all: true, ..Default::default() }).await.unwrap();
        assert_eq!(all.len(), 2);
        let emoji = store
            .sessions(&SessionFilter { all: true, dataset: Some("emoji".into()), ..Default::default() })
            .await
            .unwrap();
        assert_eq!(emoji.iter().map(|s| s.id.clone()).collect::<Vec<_>>(), vec![a]);
    }
}
