//! Checkpoint rows: one per saved epoch the child reported. The file goes first, the row after, so a row never
//! outlives a deletion that succeeded; start-up reconciliation drops rows whose files are gone.

use serde::{Deserialize, Serialize};

use super::{Store, StoreError};
use crate::core::checkpoint::CheckpointInfo;
use crate::core::session::SessionId;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct CheckpointRow {
    pub session: String,
    pub epoch: i64,
    pub name: String,
    /// Absolute path of the weights (`checkpoints/<epoch>.safetensors` in the session folder).
    pub path: String,
    pub val_acc: f64,
    pub val_loss: Option<f64>,
    pub train_loss: Option<f64>,
    pub bytes: i64,
    pub created_at: f64,
    /// A code session's ranking (`core::event::Event::Checkpoint`'s `score`); `None`: it ranks by `val_acc`.
    #[sqlx(default)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// The metric `score` is; `None` with a score: no validation metric was reported (the latest is best).
    #[sqlx(default)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_by: Option<String>,
}

impl CheckpointRow {
    /// What `best` and retention rank it by: its score where it has one (a code session's), else `val_acc`.
    pub fn info(&self) -> CheckpointInfo {
        CheckpointInfo {
            epoch: self.epoch.clamp(0, u32::MAX as i64) as u32,
            val_acc: self.score.unwrap_or(self.val_acc),
        }
    }

    /// How its summary names what ranks it: `None` for a checkpoint that ranks by `val_acc`.
    pub fn ranking_note(&self) -> Option<String> {
        self.score.map(|_| match &self.best_by {
            Some(name) => format!("best by {name}"),
            None => "no validation metric reported: the latest is best".to_string(),
        })
    }
}

/// A checkpoint something unfinished still needs (see [`Store::pinned_checkpoints`]).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CheckpointPin {
    pub epoch: i64,
    /// `submission <id>` or `fork <session>`.
    pub needed_by: String,
}

impl Store {
    /// Records a checkpoint (replacing the row of the same epoch, which a resumed child may save again).
    pub async fn add_checkpoint(&self, c: &CheckpointRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT OR REPLACE INTO checkpoints
                 (session, epoch, name, path, val_acc, val_loss, train_loss, bytes, created_at, score, best_by)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&c.session)
        .bind(c.epoch)
        .bind(&c.name)
        .bind(&c.path)
        .bind(c.val_acc)
        .bind(c.val_loss)
        .bind(c.train_loss)
        .bind(c.bytes)
        .bind(c.created_at)
        .bind(c.score)
        .bind(&c.best_by)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// A session's checkpoints by epoch.
    pub async fn checkpoints(&self, id: &SessionId) -> Result<Vec<CheckpointRow>, StoreError> {
        Ok(sqlx::query_as("SELECT * FROM checkpoints WHERE session = ? ORDER BY epoch")
            .bind(id.to_string())
            .fetch_all(&self.writer)
            .await?)
    }

    /// The checkpoints of a session that something not yet finished still needs, and what: a queued or running
    /// submission naming it as a member (`submission 12`), or a queued or running fork starting from it (`fork
    /// u/d/9`). Retention and `model rm` leave these alone.
    pub async fn pinned_checkpoints(&self, id: &SessionId) -> Result<Vec<CheckpointPin>, StoreError> {
        let id = id.to_string();
        Ok(sqlx::query_as(
            "SELECT CAST(json_extract(m.value, '$.epoch') AS INTEGER) AS epoch, 'submission ' || s.id AS needed_by
               FROM submissions s, json_each(s.members) m
              WHERE s.state IN ('queued', 'running') AND json_extract(m.value, '$.session') = ?1
             UNION ALL
             SELECT CAST(substr(fork_of, length(?1) + 2) AS INTEGER), 'fork ' || id
               FROM sessions
              WHERE state IN ('queued', 'running') AND substr(fork_of, 1, length(?1) + 1) = ?1 || ':'
             ORDER BY 1, 2",
        )
        .bind(id)
        .fetch_all(&self.writer)
        .await?)
    }

    /// Deletes a checkpoint's row; call only after its files are gone.
    pub async fn delete_checkpoint_row(&self, id: &SessionId, epoch: i64) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM checkpoints WHERE session = ? AND epoch = ?")
            .bind(id.to_string())
            .bind(epoch)
            .execute(&self.writer)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::temp_store;
    use super::*;

    #[tokio::test]
    async fn add_replace_list_delete() {
        let (store, _dir) = temp_store().await;
        let id: SessionId = "local/emoji/1".parse().unwrap();
        let row = |epoch: i64, acc: f64| CheckpointRow {
            session: id.to_string(),
            epoch,
            name: epoch.to_string(),
            path: format!("/s/checkpoints/{epoch}.safetensors"),
            val_acc: acc,
            val_loss: Some(1.0),
            train_loss: None,
            bytes: 10,
            created_at: 5.0,
            score: None,
            best_by: None,
        };
        store.add_checkpoint(&row(2, 0.5)).await.unwrap();
        store.add_checkpoint(&row(1, 0.2)).await.unwrap();
        store.add_checkpoint(&row(2, 0.6)).await.unwrap();
        let rows = store.checkpoints(&id).await.unwrap();
        assert_eq!(rows, vec![row(1, 0.2), row(2, 0.6)]);
        assert_eq!(rows[1].info(), CheckpointInfo { epoch: 2, val_acc: 0.6 });
        store.delete_checkpoint_row(&id, 1).await.unwrap();
        assert_eq!(store.checkpoints(&id).await.unwrap(), vec![row(2, 0.6)]);
    }

    #[tokio::test]
    async fn unfinished_submissions_and_forks_pin_the_checkpoints_they_name() {
        use crate::core::queue::Device;
        use crate::core::session::SessionState;
        use crate::store::{NewSession, NewSubmission, StoredMember};
        let (store, _dir) = temp_store().await;
        let id: SessionId = "local/emoji/1".parse().unwrap();
        let member = |session: &str, epoch: u32| StoredMember {
            session: session.into(),
            checkpoint: epoch.to_string(),
            epoch,
            weight: 1.0,
        };
        let submit = |members: Vec<StoredMember>| NewSubmission {
            dataset: "emoji".into(),
            user: "local".into(),
            members,
            tta: "none".into(),
            dry_run: true,
            created_at: 1.0,
        };
        let ok = |_: u32| Ok::<(), ()>(());
        let day = (0.0, 10.0);
        let a = store.add_submission(&submit(vec![member("local/emoji/1", 3)]), day, ok).await.unwrap().unwrap();
        // another session's member, and a prefix of this id ("local/emoji/10") pin nothing here
        let members = vec![member("local/emoji/2", 4), member("local/emoji/1", 5), member("local/emoji/10", 6)];
        let b = store.add_submission(&submit(members), day, ok).await.unwrap().unwrap();
        let fork = |of: &str| NewSession {
            user: "local".into(),
            dataset: "emoji".into(),
            memo: String::new(),
            priority: 0,
            device: Device::Cpu,
            epochs: 2,
            fork_of: Some(of.into()),
        };
        let forks = store
            .enqueue(None, &[fork("local/emoji/1:7"), fork("local/emoji/10:8")], |id, _| id.to_string())
            .await
            .unwrap();
        let pins = |v: Vec<CheckpointPin>| v.into_iter().map(|p| (p.epoch, p.needed_by)).collect::<Vec<_>>();
        let fork_name = format!("fork {}", forks[0]);
        assert_eq!(
            pins(store.pinned_checkpoints(&id).await.unwrap()),
            vec![(3, format!("submission {a}")), (5, format!("submission {b}")), (7, fork_name.clone())]
        );
        // the same links, as the session page lists them (a prefix of the id is another session)
        let ids: Vec<i64> = store.submissions_of(&id).await.unwrap().iter().map(|s| s.id).collect();
        assert_eq!(ids, vec![b, a]);
        let fork_ids: Vec<SessionId> = store.forks_of(&id).await.unwrap().into_iter().map(|s| s.id).collect();
        assert_eq!(fork_ids, vec![forks[0].clone()]);
        // finished ones release their pins
        store.fail_submission(a, "boom", 2.0).await.unwrap();
        store.transition(&forks[0], SessionState::Stopped, None, None).await.unwrap();
        assert_eq!(pins(store.pinned_checkpoints(&id).await.unwrap()), vec![(5, format!("submission {b}"))]);
    }
}
