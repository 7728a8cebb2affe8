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
}

impl CheckpointRow {
    pub fn info(&self) -> CheckpointInfo {
        CheckpointInfo { epoch: self.epoch.clamp(0, u32::MAX as i64) as u32, val_acc: self.val_acc }
    }
}

impl Store {
    /// Records a checkpoint (replacing the row of the same epoch, which a resumed child may save again).
    pub async fn add_checkpoint(&self, c: &CheckpointRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT OR REPLACE INTO checkpoints
                 (session, epoch, name, path, val_acc, val_loss, train_loss, bytes, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
}
