//! Metric rows and their batched writer: runners send rows down a channel and never wait; one task drains whatever
//! has arrived and commits it in one transaction per batch, so at most the batch in flight is lost if the daemon dies.

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::{Store, StoreError};
use crate::core::session::SessionId;

/// The most rows one transaction takes.
const MAX_BATCH: usize = 20_000;

/// Rows per INSERT statement (at most 7 bound values each: under SQLite's limit of 32,766).
const ROWS_PER_INSERT: usize = 4_000;

/// The bucket widths (in steps) of the min/max rollups that charts of long series read (migration 0005).
pub const ROLLUP_WIDTHS: [i64; 2] = [32, 1024];

/// One rollup bucket: the extremes of the values that fell in it and how many there were.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Bucket {
    lo: f64,
    hi: f64,
    n: i64,
}

type BucketKey<'a> = (&'a str, &'a str, i64, i64);

/// The rows' contribution to every rollup bucket, in a stable order. Non-finite values stay out of the extremes (a
/// NaN would poison every later min/max); a bucket of nothing but them is not written.
fn rollup(rows: &[MetricRow]) -> Vec<(BucketKey<'_>, Bucket)> {
    let mut buckets: std::collections::BTreeMap<BucketKey<'_>, Bucket> = std::collections::BTreeMap::new();
    for r in rows.iter().filter(|r| r.value.is_finite()) {
        for width in ROLLUP_WIDTHS {
            let key = (r.session.as_str(), r.name.as_str(), width, r.step.div_euclid(width));
            let b = buckets.entry(key).or_insert(Bucket { lo: r.value, hi: r.value, n: 0 });
            b.lo = b.lo.min(r.value);
            b.hi = b.hi.max(r.value);
            b.n += 1;
        }
    }
    buckets.into_iter().collect()
}

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

    /// Inserts rows in one transaction, now (the sink is for the hot path; this is for recovery), with their rollups.
    pub async fn insert_metrics(&self, rows: &[MetricRow]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut tx = self.writer.begin().await?;
        // Many rows per statement: one round trip through sqlx per row was the ingest's cost. OR IGNORE: a replayed
        // (session, name, step) keeps its first row (migration 0006).
        for chunk in rows.chunks(ROWS_PER_INSERT) {
            let mut insert =
                sqlx::QueryBuilder::new("INSERT OR IGNORE INTO metrics (session, step, epoch, name, value, t) ");
            insert.push_values(chunk, |mut b, r| {
                b.push_bind(&r.session).push_bind(r.step).push_bind(r.epoch).push_bind(&r.name).push_bind(r.value);
                b.push_bind(r.t);
            });
            insert.build().execute(&mut *tx).await?;
        }
        let rollups = rollup(rows);
        for chunk in rollups.chunks(ROWS_PER_INSERT) {
            let mut upsert =
                sqlx::QueryBuilder::new("INSERT INTO metric_rollups (session, name, width, bucket, lo, hi, n) ");
            upsert.push_values(chunk, |mut b, ((session, name, width, bucket), r)| {
                b.push_bind(*session).push_bind(*name).push_bind(*width).push_bind(*bucket);
                b.push_bind(r.lo).push_bind(r.hi).push_bind(r.n);
            });
            upsert.push(
                " ON CONFLICT (session, name, width, bucket) DO UPDATE SET lo = min(lo, excluded.lo), \
                 hi = max(hi, excluded.hi), n = n + excluded.n",
            );
            upsert.build().execute(&mut *tx).await?;
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

    /// Deletes the metrics of epochs after `epoch` (a resumed session redoes them) and rebuilds the rollup buckets
    /// those rows touched. Returns the number of metric rows deleted.
    pub async fn delete_metrics_after(&self, id: &SessionId, epoch: i64) -> Result<u64, StoreError> {
        let session = id.to_string();
        let mut tx = self.writer.begin().await?;
        let firsts: Vec<(String, i64)> =
            sqlx::query_as("SELECT name, min(step) FROM metrics WHERE session = ? AND epoch > ? GROUP BY name")
                .bind(&session)
                .bind(epoch)
                .fetch_all(&mut *tx)
                .await?;
        let done = sqlx::query("DELETE FROM metrics WHERE session = ? AND epoch > ?")
            .bind(&session)
            .bind(epoch)
            .execute(&mut *tx)
            .await?;
        for (name, first) in firsts {
            for width in ROLLUP_WIDTHS {
                let bucket = first.div_euclid(width);
                sqlx::query("DELETE FROM metric_rollups WHERE session = ? AND name = ? AND width = ? AND bucket >= ?")
                    .bind(&session)
                    .bind(&name)
                    .bind(width)
                    .bind(bucket)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(
                    "INSERT INTO metric_rollups (session, name, width, bucket, lo, hi, n)
                     SELECT session, name, ?3, step / ?3, min(value), max(value), count(*) FROM metrics
                      WHERE session = ?1 AND name = ?2 AND step >= ?4 GROUP BY step / ?3",
                )
                .bind(&session)
                .bind(&name)
                .bind(width)
                .bind(bucket * width)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
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
        // A row sent again (a line replayed after a crash) is stored once (migration 0006).
        sink.send(vec![row(3, 1, "loss"), row(3, 1, "loss")]);
        sink.flush().await;
        assert_eq!(store.metrics(&id, Some("loss")).await.unwrap().iter().filter(|r| r.step == 3).count(), 1);
        drop(sink);
        task.await.unwrap();
    }
}
