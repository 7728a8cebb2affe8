//! Metric rows and their batched writer: runners send rows down a channel and never wait; one task drains whatever
//! has arrived and commits it in one transaction per batch, so at most the batch in flight is lost if the daemon dies.

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::{Store, StoreError};
use crate::core::session::SessionId;

/// The most rows one transaction takes.
const MAX_BATCH: usize = 20_000;
/// Rows per INSERT statement: 6 bound values each stays far below SQLite's limit of 32,766 variables.
const ROWS_PER_INSERT: usize = 500;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct MetricRow {
    pub session: String,
    pub step: i64,
    pub epoch: i64,
    pub name: String,
    pub value: f64,
    pub t: f64,
}

enum Message {
    Rows(Vec<MetricRow>),
    Flush(oneshot::Sender<()>),
}

/// The sending side of the metric writer. Cheap to clone; sending never blocks.
#[derive(Debug, Clone)]
pub struct MetricSink {
    tx: mpsc::UnboundedSender<Message>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Message::Rows(rows) => write!(f, "Rows({})", rows.len()),
            Message::Flush(_) => f.write_str("Flush"),
        }
    }
}

impl MetricSink {
    /// Queues rows for the next batch. Rows sent after the writer stopped are dropped (the daemon is going away).
    pub fn send(&self, rows: Vec<MetricRow>) {
        if !rows.is_empty() {
            let _ = self.tx.send(Message::Rows(rows));
        }
    }

    /// Waits until every row sent before this call is committed.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Message::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

impl Store {
    /// Starts the metric writer task. It ends when every sink is dropped, after committing what it holds.
    pub fn metric_writer(&self) -> (MetricSink, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
        let store = self.clone();
        let task = tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut rows = Vec::new();
                let mut acks = Vec::new();
                let mut next = Some(first);
                while let Some(msg) = next.take() {
                    match msg {
                        Message::Rows(r) => rows.extend(r),
                        Message::Flush(ack) => acks.push(ack),
                    }
                    if rows.len() < MAX_BATCH {
                        next = rx.try_recv().ok();
                    }
                }
                if let Err(e) = store.insert_metrics(&rows).await {
                    tracing::error!("metric batch of {} rows lost: {e}", rows.len());
                }
                for ack in acks {
                    let _ = ack.send(());
                }
            }
        });
        (MetricSink { tx }, task)
    }

    /// Inserts rows in one transaction, now (the sink is for the hot path; this is for recovery).
    pub async fn insert_metrics(&self, rows: &[MetricRow]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut tx = self.writer.begin().await?;
        // Multi-row statements: one statement per ROWS_PER_INSERT rows instead of one per row (about 10x faster).
        for chunk in rows.chunks(ROWS_PER_INSERT) {
            let mut query = sqlx::QueryBuilder::new("INSERT INTO metrics (session, step, epoch, name, value, t) ");
            query.push_values(chunk, |mut b, r| {
                b.push_bind(&r.session)
                    .push_bind(r.step)
                    .push_bind(r.epoch)
                    .push_bind(&r.name)
                    .push_bind(r.value)
                    .push_bind(r.t);
            });
            query.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A session's metric rows by step, all names or one.
    pub async fn metrics(&self, id: &SessionId, name: Option<&str>) -> Result<Vec<MetricRow>, StoreError> {
        let rows = match name {
            Some(n) => {
                sqlx::query_as("SELECT * FROM metrics WHERE session = ? AND name = ? ORDER BY step, rowid")
                    .bind(id.to_string())
                    .bind(n)
                    .fetch_all(&self.reader)
                    .await?
            }
            None => {
                sqlx::query_as("SELECT * FROM metrics WHERE session = ? ORDER BY step, rowid")
                    .bind(id.to_string())
                    .fetch_all(&self.reader)
                    .await?
            }
        };
        Ok(rows)
    }

    /// Drops metrics of epochs after `epoch`: a resumed session trains them again.
    pub async fn delete_metrics_after(&self, id: &SessionId, epoch: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM metrics WHERE session = ? AND epoch > ?")
            .bind(id.to_string())
            .bind(epoch)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::temp_store;
    use super::*;

    fn row(step: i64, epoch: i64, name: &str) -> MetricRow {
        MetricRow { session: "local/emoji/1".into(), step, epoch, name: name.into(), value: step as f64, t: 0.0 }
    }

    #[tokio::test]
    async fn batched_rows_are_all_committed_by_flush() {
        let (store, _dir) = temp_store().await;
        let (sink, task) = store.metric_writer();
        for step in 0..1000 {
            sink.send(vec![row(step, step / 500 + 1, "loss"), row(step, step / 500 + 1, "lr")]);
        }
        sink.flush().await;
        let id: SessionId = "local/emoji/1".parse().unwrap();
        assert_eq!(store.metrics(&id, Some("loss")).await.unwrap().len(), 1000);
        assert_eq!(store.metrics(&id, None).await.unwrap().len(), 2000);
        assert_eq!(store.delete_metrics_after(&id, 1).await.unwrap(), 1000);
        assert!(store.metrics(&id, Some("lr")).await.unwrap().iter().all(|r| r.epoch == 1));
        drop(sink);
        task.await.unwrap();
    }
}
