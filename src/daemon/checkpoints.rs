//! Acting on checkpoints: record what the child saved, apply the spec's retention policy (the pure
//! `core::checkpoint::RetentionPolicy` decides), delete idempotently (files first, a missing file counts as deleted,
//! the row last), and reconcile rows with the files after a crash.

use std::path::{Path, PathBuf};

use crate::core::checkpoint::RetentionPolicy;
use crate::core::event::{Event, EventLine};
use crate::core::session::SessionId;
use crate::home::SessionDir;
use crate::store::{CheckpointRow, Store, StoreError};

/// The files of one saved epoch: the weights the event named, plus the validation predictions, metadata and optimizer
/// state beside them. The predictions go before the JSON that records them.
pub fn files(dir: &SessionDir, row: &CheckpointRow) -> Vec<PathBuf> {
    let epoch = row.epoch.clamp(0, u32::MAX as i64) as u32;
    let mut out = vec![PathBuf::from(&row.path), dir.checkpoint_weights(epoch)];
    out.push(dir.checkpoint_valid(epoch));
    out.push(dir.checkpoint_meta(epoch));
    out.push(dir.checkpoint_state(epoch));
    out.dedup();
    out
}

/// The absolute path of a checkpoint the child named (relative paths are relative to its session folder).
pub fn absolute(dir: &SessionDir, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() { p.to_path_buf() } else { dir.root().join(p) }
}

/// Deletes a checkpoint: its files, or a code session's checkpoint folder (already missing ones count as deleted),
/// then its row.
pub async fn delete(store: &Store, dir: &SessionDir, row: &CheckpointRow) -> Result<(), StoreError> {
    for f in files(dir, row) {
        // A code session's checkpoint is the folder its bound `save` filled.
        let removed = match tokio::fs::symlink_metadata(&f).await {
            Ok(m) if m.is_dir() => tokio::fs::remove_dir_all(&f).await,
            _ => tokio::fs::remove_file(&f).await,
        };
        match removed {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                // The row stays, pointing at files that still exist; the next retention pass tries again.
                tracing::warn!("cannot delete {}: {e}", f.display());
                return Ok(());
            }
        }
    }
    let id: SessionId = row.session.parse().map_err(|e: crate::core::session::SessionError| StoreError::Corrupt {
        table: "checkpoints",
        message: e.to_string(),
    })?;
    store.delete_checkpoint_row(&id, row.epoch).await
}

/// Applies the retention policy to a session's checkpoints, sparing those a queued or running submission or fork still
/// needs; returns the epochs deleted.
pub async fn retain(
    store: &Store,
    dir: &SessionDir,
    id: &SessionId,
    policy: &RetentionPolicy,
) -> Result<Vec<i64>, StoreError> {
    let rows = store.checkpoints(id).await?;
    let infos: Vec<_> = rows.iter().map(|r| r.info()).collect();
    let pinned: Vec<u32> =
        store.pinned_checkpoints(id).await?.iter().map(|p| p.epoch.clamp(0, u32::MAX as i64) as u32).collect();
    let doomed = policy.to_delete(&infos, &pinned);
    let mut deleted = Vec::new();
    for row in rows.iter().filter(|r| doomed.contains(&(r.epoch.clamp(0, u32::MAX as i64) as u32))) {
        delete(store, dir, row).await?;
        deleted.push(row.epoch);
    }
    Ok(deleted)
}

/// After a crash: drops rows whose weights are gone (a deletion that removed the files but not yet the row), and adds
/// rows for checkpoints the child reported in `events.jsonl` whose files exist but which the store never recorded.
pub async fn reconcile(store: &Store, dir: &SessionDir, id: &SessionId) -> Result<(), StoreError> {
    for row in store.checkpoints(id).await? {
        if !Path::new(&row.path).exists() {
            delete(store, dir, &row).await?;
        }
    }
    let Ok(text) = tokio::fs::read_to_string(dir.events()).await else {
        return Ok(());
    };
    let known: Vec<i64> = store.checkpoints(id).await?.iter().map(|r| r.epoch).collect();
    let mut losses = std::collections::HashMap::new();
    for line in text.lines() {
        let Ok(parsed) = EventLine::parse(line) else { continue };
        match parsed.event {
            Event::Epoch { epoch, train_loss, val_loss, .. } => {
                losses.insert(epoch, (train_loss, val_loss));
            }
            Event::Checkpoint { name, path, epoch, val_acc, bytes, score, best_by }
                if !known.contains(&(epoch as i64)) =>
            {
                let path = absolute(dir, &path);
                // Only the session's own files: what a log names outside its folder is never recorded (and so
                // never deleted by retention).
                if path.starts_with(dir.root()) && path.exists() {
                    let (train_loss, val_loss) = losses.get(&epoch).copied().unzip();
                    let row = CheckpointRow {
                        session: id.to_string(),
                        epoch: epoch as i64,
                        name,
                        path: path.display().to_string(),
                        val_acc,
                        val_loss,
                        train_loss,
                        bytes: bytes as i64,
                        created_at: parsed.t,
                        score,
                        best_by,
                    };
                    store.add_checkpoint(&row).await?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::temp_store;

    fn row(dir: &SessionDir, epoch: i64, acc: f64) -> CheckpointRow {
        CheckpointRow {
            session: "local/emoji/1".into(),
            epoch,
            name: epoch.to_string(),
            path: dir.checkpoint_weights(epoch as u32).display().to_string(),
            val_acc: acc,
            val_loss: None,
            train_loss: None,
            bytes: 3,
            created_at: 0.0,
            score: None,
            best_by: None,
        }
    }

    fn save(dir: &SessionDir, epoch: u32) {
        std::fs::create_dir_all(dir.checkpoints()).unwrap();
        for f in [
            dir.checkpoint_weights(epoch),
            dir.checkpoint_valid(epoch),
            dir.checkpoint_meta(epoch),
            dir.checkpoint_state(epoch),
        ] {
            std::fs::write(f, b"abc").unwrap();
        }
    }

    #[tokio::test]
    async fn retention_deletes_files_then_rows_and_tolerates_missing_files() {
        let (store, tmp) = temp_store().await;
        let dir = SessionDir::new(tmp.path().join("s"));
        let id: SessionId = "local/emoji/1".parse().unwrap();
        let accs = [0.1, 0.9, 0.3, 0.8, 0.2];
        for (i, acc) in accs.iter().enumerate() {
            let epoch = i as u32 + 1;
            save(&dir, epoch);
            store.add_checkpoint(&row(&dir, epoch as i64, *acc)).await.unwrap();
        }
        // Epoch 3's files vanished already: deleting it must still drop the row.
        std::fs::remove_file(dir.checkpoint_weights(3)).unwrap();
        let deleted = retain(&store, &dir, &id, &RetentionPolicy { keep_best: 2, keep_last: true }).await.unwrap();
        assert_eq!(deleted, vec![1, 3]);
        let kept: Vec<i64> = store.checkpoints(&id).await.unwrap().iter().map(|r| r.epoch).collect();
        assert_eq!(kept, vec![2, 4, 5]);
        for epoch in [1, 3] {
            assert!(!dir.checkpoint_weights(epoch).exists() && !dir.checkpoint_state(epoch).exists());
            assert!(!dir.checkpoint_valid(epoch).exists(), "the validation predictions go with the checkpoint");
        }
        assert!(
            dir.checkpoint_meta(2).exists() && dir.checkpoint_state(5).exists() && dir.checkpoint_valid(4).exists()
        );
    }

    #[tokio::test]
    async fn reconcile_drops_rows_without_files_and_adds_reported_ones() {
        let (store, tmp) = temp_store().await;
        let dir = SessionDir::new(tmp.path().join("s"));
        let id: SessionId = "local/emoji/1".parse().unwrap();
        save(&dir, 1);
        save(&dir, 2);
        store.add_checkpoint(&row(&dir, 1, 0.5)).await.unwrap();
        store.add_checkpoint(&row(&dir, 3, 0.5)).await.unwrap(); // its files never existed
        let events = [
            EventLine::new(
                Event::Epoch {
                    epoch: 2,
                    train_loss: 1.5,
                    train_acc: 0.2,
                    val_loss: 1.7,
                    val_acc: 0.4,
                    seconds: 1.0,
                    data_wait: 0.0,
                    data_wait_s: None,
                },
                9.0,
            ),
            EventLine::new(
                Event::Checkpoint {
                    name: "2".into(),
                    path: "checkpoints/2.safetensors".into(),
                    epoch: 2,
                    val_acc: 0.4,
                    bytes: 3,
                    score: None,
                    best_by: None,
                },
                10.0,
            ),
        ];
        let text: String = events.iter().map(|e| e.to_json() + "\n").collect();
        std::fs::write(dir.events(), format!("{text}not json\n")).unwrap();
        reconcile(&store, &dir, &id).await.unwrap();
        let rows = store.checkpoints(&id).await.unwrap();
        assert_eq!(rows.iter().map(|r| r.epoch).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!((rows[1].val_loss, rows[1].train_loss, rows[1].created_at), (Some(1.7), Some(1.5), 10.0));
        assert_eq!(rows[1].path, dir.checkpoint_weights(2).display().to_string());
    }
}
