//! Read queries for the dashboard: a keyset-paginated session list that stays fast at 10,000 sessions, metric series
//! reduced in SQL to min/max buckets (so a million-point series answers in a few hundred rows), and the counts behind
//! `/metrics` and the system page. Reads only; they use the read-only pool.

use sqlx::Row;

use super::metrics::ROLLUP_WIDTHS;
use super::{SessionRow, Store, StoreError};
use crate::core::metric::{self, Point};
use crate::core::session::{SessionId, SessionState};

/// Which page of sessions to show: newest first, filtered, before/after a `seq` (keyset, not OFFSET).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionPageQuery {
    pub dataset: Option<String>,
    /// Only this user's sessions (a member of a shared daemon sees its own only).
    pub user: Option<String>,
    pub state: Option<SessionState>,
    /// Show sessions older than this `seq` (the "next page" link).
    pub before: Option<i64>,
    /// Show sessions newer than this `seq` (the "previous page" link).
    pub after: Option<i64>,
    pub limit: i64,
}

/// One page of sessions, with what the pager needs.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionPage {
    pub rows: Vec<SessionRow>,
    /// Sessions matching the filter, all pages together.
    pub total: i64,
    /// `seq` to pass as `before` for the next (older) page, when there is one.
    pub older: Option<i64>,
    /// `seq` to pass as `after` for the previous (newer) page, when there is one.
    pub newer: Option<i64>,
}

impl Store {
    /// A page of sessions, newest first. Every query walks an index on `seq` (see migration 0002), so the cost does
    /// not grow with the number of sessions.
    pub async fn session_page(&self, q: &SessionPageQuery) -> Result<SessionPage, StoreError> {
        let limit = q.limit.clamp(1, 500);
        let mut filter = String::from("1 = 1");
        if q.dataset.is_some() {
            filter.push_str(" AND dataset = ?");
        }
        if q.state.is_some() {
            filter.push_str(" AND state = ?");
        }
        if q.user.is_some() {
            filter.push_str(" AND user = ?");
        }
        let (cursor, order) = match (q.before, q.after) {
            (Some(_), _) => (" AND seq < ?", "DESC"),
            (None, Some(_)) => (" AND seq > ?", "ASC"),
            (None, None) => ("", "DESC"),
        };
        let sql = format!("SELECT * FROM sessions WHERE {filter}{cursor} ORDER BY seq {order} LIMIT ?");
        let mut query = sqlx::query_as::<_, SessionRow>(&sql);
        if let Some(d) = &q.dataset {
            query = query.bind(d);
        }
        if let Some(s) = q.state {
            query = query.bind(s.as_str());
        }
        if let Some(u) = &q.user {
            query = query.bind(u);
        }
        if let Some(c) = q.before.or(q.after) {
            query = query.bind(c);
        }
        // One extra row tells whether another page follows in this direction.
        let mut rows = query.bind(limit + 1).fetch_all(&self.reader).await?;
        let more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        if order == "ASC" {
            rows.reverse();
        }
        let count_sql = format!("SELECT count(*) FROM sessions WHERE {filter}");
        let mut count = sqlx::query_scalar::<_, i64>(&count_sql);
        if let Some(d) = &q.dataset {
            count = count.bind(d);
        }
        if let Some(s) = q.state {
            count = count.bind(s.as_str());
        }
        if let Some(u) = &q.user {
            count = count.bind(u);
        }
        let total = count.fetch_one(&self.reader).await?;
        let (first, last) = (rows.first().map(|r| r.seq), rows.last().map(|r| r.seq));
        let (older, newer) = match (q.before, q.after) {
            (None, None) => (last.filter(|_| more), None),
            (Some(_), _) => (last.filter(|_| more), first),
            (None, Some(_)) => (last, first.filter(|_| more)),
        };
        Ok(SessionPage { rows, total, older, newer })
    }

    /// Sessions by id, in the order asked (unknown ids are skipped): the compare page.
    pub async fn sessions_by_id(&self, ids: &[SessionId]) -> Result<Vec<SessionRow>, StoreError> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(row) = sqlx::query_as::<_, SessionRow>("SELECT * FROM sessions WHERE id = ?")
                .bind(id.to_string())
                .fetch_optional(&self.reader)
                .await?
            {
                out.push(row);
            }
        }
        Ok(out)
    }

    /// For each of `ids` (spec rows), its file's path and how many sessions it queued: a sweep queued several.
    pub async fn spec_sessions(
        &self,
        ids: &[i64],
    ) -> Result<std::collections::HashMap<i64, (String, i64)>, StoreError> {
        let mut out = std::collections::HashMap::new();
        if ids.is_empty() {
            return Ok(out);
        }
        // One pass over the sessions for all of them (a page shows at most a few hundred).
        let marks = vec!["?"; ids.len()].join(", ");
        let sql = format!(
            "SELECT specs.id, specs.path, count(sessions.id) FROM specs JOIN sessions ON sessions.spec_id = specs.id
             WHERE specs.id IN ({marks}) GROUP BY specs.id"
        );
        let mut query = sqlx::query_as::<_, (i64, String, i64)>(&sql);
        for id in ids {
            query = query.bind(id);
        }
        for (id, path, n) in query.fetch_all(&self.reader).await? {
            out.insert(id, (path, n));
        }
        Ok(out)
    }

    /// The dataset names sessions were queued on (the filter's choices), sorted.
    pub async fn session_datasets(&self) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT DISTINCT dataset FROM sessions ORDER BY dataset").fetch_all(&self.reader).await?)
    }

    /// How many sessions are in each state (every state listed, zeros included).
    pub async fn session_counts(&self) -> Result<Vec<(SessionState, i64)>, StoreError> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT state, count(*) FROM sessions GROUP BY state").fetch_all(&self.reader).await?;
        Ok(SessionState::ALL
            .into_iter()
            .map(|s| (s, rows.iter().find(|(name, _)| name == s.as_str()).map(|r| r.1).unwrap_or(0)))
            .collect())
    }

    /// Metric rows written so far (the table's largest rowid: O(log n), unlike `count(*)`).
    pub async fn metric_rows_written(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar::<_, Option<i64>>("SELECT max(rowid) FROM metrics")
            .fetch_one(&self.reader)
            .await?
            .unwrap_or(0))
    }

    /// One metric of a session as chart points (x = step), at most `limit` of them: short series come whole; long
    /// ones are reduced in SQL to the minimum and the maximum of each step bucket, so spikes stay visible. With
    /// `per_epoch`, x is the epoch instead (the epoch metrics: `train_acc`, `val_acc`, ...).
    /// The names of a session's metrics, sorted (a code session's reported ones among them).
    pub async fn metric_names(&self, id: &SessionId) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT DISTINCT name FROM metrics WHERE session = ? ORDER BY name")
            .bind(id.to_string())
            .fetch_all(&self.reader)
            .await?)
    }

    pub async fn metric_series(
        &self,
        id: &SessionId,
        name: &str,
        per_epoch: bool,
        limit: usize,
    ) -> Result<Vec<Point>, StoreError> {
        let session = id.to_string();
        let x = if per_epoch { "epoch" } else { "step" };
        // Each alone so SQLite answers from the (session, name, step) index without a scan.
        let lo: Option<i64> = sqlx::query_scalar("SELECT min(step) FROM metrics WHERE session = ? AND name = ?")
            .bind(&session)
            .bind(name)
            .fetch_one(&self.reader)
            .await?;
        let hi: Option<i64> = sqlx::query_scalar("SELECT max(step) FROM metrics WHERE session = ? AND name = ?")
            .bind(&session)
            .bind(name)
            .fetch_one(&self.reader)
            .await?;
        let (Some(lo), Some(hi)) = (lo, hi) else { return Ok(Vec::new()) };
        let width = metric::bucket_width(lo as f64, hi as f64, limit);
        if !per_epoch && width > ROLLUP_WIDTHS[0] {
            return self.rolled_up_series(&session, name, lo, width, limit).await;
        }
        let rows = if per_epoch || ((hi - lo) as usize) < limit {
            sqlx::query(&format!(
                "SELECT {x} AS x, value FROM metrics WHERE session = ? AND name = ? ORDER BY step, rowid"
            ))
            .bind(&session)
            .bind(name)
            .fetch_all(&self.reader)
            .await?
        } else {
            // At most 32 x limit/2 rows (longer series read the rollups). SQLite takes a bare column from the row
            // that holds a lone min() or max(): the step of each extreme.
            sqlx::query(
                "SELECT x, value FROM (
                     SELECT (step - ?3) / ?4 AS b, step AS x, min(value) AS value
                       FROM metrics WHERE session = ?1 AND name = ?2 GROUP BY b
                     UNION ALL
                     SELECT (step - ?3) / ?4 AS b, step AS x, max(value) AS value
                       FROM metrics WHERE session = ?1 AND name = ?2 GROUP BY b
                 ) ORDER BY x",
            )
            .bind(&session)
            .bind(name)
            .bind(lo)
            .bind(width)
            .fetch_all(&self.reader)
            .await?
        };
        let mut points = Vec::with_capacity(rows.len());
        for r in rows {
            let x: i64 = r.try_get("x")?;
            let y: f64 = r.try_get("value")?;
            // A bucket whose min and max are the same row comes twice; keep it once.
            if points.last() != Some(&Point::new(x as f64, y)) {
                points.push(Point::new(x as f64, y));
            }
        }
        // The SQL already kept within `limit`; this keeps the promise whatever the data (repeated steps, say).
        Ok(metric::downsample(&points, limit))
    }

    /// A long series from the widest rollup whose buckets still give `limit / 2` groups of `width` steps: each group
    /// becomes its minimum and maximum, drawn at the group's first step (one pixel wide at chart scale).
    async fn rolled_up_series(
        &self,
        session: &str,
        name: &str,
        lo: i64,
        width: i64,
        limit: usize,
    ) -> Result<Vec<Point>, StoreError> {
        let level = ROLLUP_WIDTHS.iter().copied().filter(|w| *w <= width).max().unwrap_or(ROLLUP_WIDTHS[0]);
        // Groups are whole buckets of the level, so no bucket is split between two groups.
        let group = width.div_euclid(level).max(1) * level;
        let buckets: Vec<(i64, f64, f64)> = sqlx::query_as(
            "SELECT bucket, lo, hi FROM metric_rollups WHERE session = ? AND name = ? AND width = ? ORDER BY bucket",
        )
        .bind(session)
        .bind(name)
        .bind(level)
        .fetch_all(&self.reader)
        .await?;
        let origin = lo.div_euclid(level) * level;
        // (group, its first step, lowest, highest) of the group being filled.
        let mut groups: Vec<(i64, i64, f64, f64)> = Vec::new();
        for (bucket, b_lo, b_hi) in buckets {
            let start = bucket * level;
            let g = (start - origin).div_euclid(group);
            match groups.last_mut() {
                Some((last, _, lo, hi)) if *last == g => {
                    *lo = lo.min(b_lo);
                    *hi = hi.max(b_hi);
                }
                _ => groups.push((g, start.max(lo), b_lo, b_hi)),
            }
        }
        let mut points = Vec::with_capacity(groups.len() * 2);
        for (_, x, lo, hi) in groups {
            points.push(Point::new(x as f64, lo));
            if hi != lo {
                points.push(Point::new(x as f64, hi));
            }
        }
        Ok(metric::downsample(&points, limit))
    }

    /// The latest value of a metric of a session, with its step and epoch (progress within an epoch).
    pub async fn last_metric(&self, id: &SessionId, name: &str) -> Result<Option<(i64, i64, f64)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT step, epoch, value FROM metrics WHERE session = ? AND name = ? ORDER BY step DESC, rowid DESC LIMIT 1",
        )
        .bind(id.to_string())
        .bind(name)
        .fetch_optional(&self.reader)
        .await?)
    }

    /// The newest step of a session that has a training loss, and when the child wrote it: (step, t).
    pub async fn last_step(&self, id: &SessionId) -> Result<Option<(i64, f64)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT step, t FROM metrics WHERE session = ? AND name = 'loss' ORDER BY step DESC, rowid DESC LIMIT 1",
        )
        .bind(id.to_string())
        .fetch_optional(&self.reader)
        .await?)
    }

    /// A short text that changes whenever the sessions list would: sessions added or removed, started, finished,
    /// progressing. Polled by the list's live stream.
    pub async fn activity_fingerprint(&self) -> Result<String, StoreError> {
        let (count, seq, started, finished): (i64, Option<i64>, Option<f64>, Option<f64>) =
            sqlx::query_as("SELECT count(*), max(seq), max(started_at), max(finished_at) FROM sessions")
                .fetch_one(&self.reader)
                .await?;
        let active: Option<String> = sqlx::query_scalar(
            "SELECT group_concat(id || ':' || state || ':' || COALESCE(epoch, 0), ',') FROM sessions
             WHERE state IN ('queued', 'running', 'waiting')",
        )
        .fetch_one(&self.reader)
        .await?;
        Ok(format!("{count}|{seq:?}|{started:?}|{finished:?}|{}", active.unwrap_or_default()))
    }

    /// Rejected spec files, newest first: (path, error, seen at).
    pub async fn rejected_specs(&self, limit: i64) -> Result<Vec<(String, String, f64)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT path, COALESCE(error, ''), seen_at FROM specs AS s WHERE status = 'rejected'
               AND id = (SELECT MAX(id) FROM specs WHERE path = s.path)
             ORDER BY seen_at DESC, id DESC LIMIT ?",
        )
        .bind(limit)
        .fetch_all(&self.reader)
        .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::temp_store;
    use super::*;
    use crate::core::queue::Device;
    use crate::store::{MetricRow, NewSession};

    async fn queue(store: &Store, dataset: &str, n: usize) -> Vec<SessionId> {
        let new = NewSession {
            user: "local".into(),
            dataset: dataset.into(),
            memo: String::new(),
            priority: 0,
            device: Device::Cpu,
            epochs: 3,
            fork_of: None,
        };
        store.enqueue(None, &vec![new; n], |_, _| "{}".into()).await.unwrap()
    }

    #[tokio::test]
    async fn pages_walk_every_session_once_in_both_directions() {
        let (store, _dir) = temp_store().await;
        queue(&store, "emoji", 23).await;
        queue(&store, "synth", 5).await;
        let mut q = SessionPageQuery { limit: 10, ..Default::default() };
        let mut seen = Vec::new();
        let mut pages = Vec::new();
        loop {
            let page = store.session_page(&q).await.unwrap();
            assert_eq!(page.total, 28);
            assert!(page.rows.windows(2).all(|w| w[0].seq > w[1].seq), "newest first");
            seen.extend(page.rows.iter().map(|r| r.id.to_string()));
            pages.push(page.clone());
            match page.older {
                Some(s) => q.before = Some(s),
                None => break,
            }
        }
        assert_eq!(pages.len(), 3);
        assert_eq!(seen.len(), 28);
        assert_eq!(seen.iter().collect::<std::collections::HashSet<_>>().len(), 28);
        assert_eq!(pages[0].newer, None);
        // Back from the last page to the first.
        let back = store
            .session_page(&SessionPageQuery { after: pages[2].newer, limit: 10, ..Default::default() })
            .await
            .unwrap();
        assert_eq!(back.rows, pages[1].rows);
        let first =
            store.session_page(&SessionPageQuery { after: back.newer, limit: 10, ..Default::default() }).await.unwrap();
        assert_eq!(first.rows, pages[0].rows);
        assert_eq!(first.newer, None);

        let emoji = SessionPageQuery { dataset: Some("emoji".into()), limit: 100, ..Default::default() };
        let page = store.session_page(&emoji).await.unwrap();
        assert_eq!((page.total, page.rows.len()), (23, 23));
        let running = SessionPageQuery { state: Some(SessionState::Running), limit: 100, ..Default::default() };
        assert_eq!(store.session_page(&running).await.unwrap().total, 0);
        assert_eq!(store.session_datasets().await.unwrap(), vec!["emoji", "synth"]);
        let counts = store.session_counts().await.unwrap();
        assert_eq!(counts.iter().find(|c| c.0 == SessionState::Queued).unwrap().1, 28);
        assert_eq!(counts.len(), SessionState::ALL.len());
    }

    #[tokio::test]
    async fn long_series_are_reduced_in_sql_and_keep_spikes() {
        let (store, _dir) = temp_store().await;
        let id = queue(&store, "emoji", 1).await.remove(0);
        let (sink, _task) = store.metric_writer();
        let rows: Vec<MetricRow> = (0..50_000)
            .map(|step| MetricRow {
                session: id.to_string(),
                step,
                epoch: step / 10_000 + 1,
                name: "loss".into(),
                value: if step == 31_337 { 99.0 } else { 1.0 + (step % 7) as f64 * 0.01 },
                t: 0.0,
            })
            .collect();
        sink.send(rows);
        for epoch in 1..=5 {
            sink.send(vec![MetricRow {
                session: id.to_string(),
                step: epoch * 10_000,
                epoch,
                name: "val_acc".into(),
                value: epoch as f64 / 10.0,
                t: 0.0,
            }]);
        }
        sink.flush().await;
        let loss = store.metric_series(&id, "loss", false, 1000).await.unwrap();
        assert!(loss.len() <= 1000 && loss.len() > 500, "{}", loss.len());
        assert!(loss.windows(2).all(|w| w[0].x <= w[1].x));
        // Read from the 32-step rollups: the spike keeps its value and lands within one group of its step.
        assert!(loss.iter().any(|p| p.y == 99.0 && (p.x - 31_337.0).abs() <= 128.0), "the spike must survive");
        assert_eq!(loss.iter().filter(|p| p.y > 2.0).count(), 1);
        let lowest = loss.iter().map(|p| p.y).fold(f64::MAX, f64::min);
        assert_eq!(lowest, 1.0);
        assert_eq!(loss.first().map(|p| p.x), Some(0.0));
        assert!(loss.last().is_some_and(|p| p.x > 49_000.0));
        let acc = store.metric_series(&id, "val_acc", true, 1000).await.unwrap();
        assert_eq!(
            acc.iter().map(|p| (p.x, p.y)).collect::<Vec<_>>(),
            (1..=5).map(|e| (e as f64, e as f64 / 10.0)).collect::<Vec<_>>()
        );
        assert!(store.metric_series(&id, "nothing", false, 1000).await.unwrap().is_empty());
        assert_eq!(store.metric_rows_written().await.unwrap(), 50_005);
        assert_eq!(store.last_metric(&id, "loss").await.unwrap().map(|r| r.0), Some(49_999));

        // A resume drops epochs 4 and 5 (the spike with them); the rollups follow the rows.
        assert_eq!(store.delete_metrics_after(&id, 3).await.unwrap(), 20_002);
        let loss = store.metric_series(&id, "loss", false, 1000).await.unwrap();
        assert!(loss.iter().all(|p| p.y < 2.0 && p.x < 30_000.0), "{:?}", loss.last());
        assert!(loss.last().is_some_and(|p| p.x > 29_000.0));
        // Steps written again after the resume are rolled up afresh, not on top of the dropped ones.
        sink.send(vec![MetricRow {
            session: id.to_string(),
            step: 30_010,
            epoch: 4,
            name: "loss".into(),
            value: 7.0,
            t: 0.0,
        }]);
        sink.flush().await;
        let loss = store.metric_series(&id, "loss", false, 1000).await.unwrap();
        assert_eq!(loss.iter().filter(|p| p.y > 2.0).map(|p| p.y).collect::<Vec<_>>(), vec![7.0]);
    }

    #[tokio::test]
    async fn a_million_point_series_reads_the_1024_step_rollups() {
        let (store, _dir) = temp_store().await;
        let id = queue(&store, "emoji", 1).await.remove(0);
        let rows: Vec<MetricRow> = (0..1_000_000)
            .map(|step| MetricRow {
                session: id.to_string(),
                step,
                epoch: 1,
                name: "loss".into(),
                value: if step == 777_777 { -5.0 } else { (step % 1000) as f64 },
                t: 0.0,
            })
            .collect();
        store.insert_metrics(&rows).await.unwrap();
        let loss = store.metric_series(&id, "loss", false, 1000).await.unwrap();
        assert!(loss.len() <= 1000 && loss.len() > 500, "{}", loss.len());
        assert!(loss.iter().any(|p| p.y == -5.0 && (p.x - 777_777.0).abs() <= 4096.0), "the dip must survive");
        assert_eq!(loss.iter().map(|p| p.y).fold(f64::MIN, f64::max), 999.0);
    }
}
