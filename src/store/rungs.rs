//! Sweeps and their ASHA rungs: each trial's result at each rung it reached (arrival order), where it stands there,
//! and the sweep queries the searcher and the scheduler need.

use std::collections::HashMap;

use serde::Serialize;

use super::{SessionRow, Store, StoreError, now};
use crate::core::asha::Standing;
use crate::core::session::SessionId;

/// One trial's result at one rung.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct RungRow {
    pub session: String,
    pub sweep: i64,
    /// 0 = the first rung.
    pub rung: i64,
    pub epoch: i64,
    /// `None`: not a finite number (ranks last).
    pub metric: Option<f64>,
    /// `waiting`, `promoted` or `pruned`.
    pub standing: String,
    /// The decision with its rank, once decided.
    pub reason: Option<String>,
    pub t: f64,
}

impl RungRow {
    pub fn standing(&self) -> Standing {
        match self.standing.as_str() {
            "promoted" => Standing::Promoted,
            "pruned" => Standing::Pruned,
            _ => Standing::Waiting,
        }
    }
}

fn standing_str(s: Standing) -> &'static str {
    match s {
        Standing::Waiting => "waiting",
        Standing::Promoted => "promoted",
        Standing::Pruned => "pruned",
    }
}

impl Store {
    /// Records a trial's arrival at a rung, waiting for the decision (the same arrival again changes nothing).
    pub async fn add_rung(
        &self,
        id: &SessionId,
        sweep: i64,
        rung: usize,
        epoch: u32,
        metric: Option<f64>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO rungs (session, sweep, rung, epoch, metric, standing, t) VALUES (?, ?, ?, ?, ?, 'waiting', ?)
             ON CONFLICT (session, rung) DO NOTHING",
        )
        .bind(id.to_string())
        .bind(sweep)
        .bind(rung as i64)
        .bind(epoch)
        .bind(metric.filter(|m| m.is_finite()))
        .bind(now())
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Sets where a trial stands at a rung, with the decision's reason.
    pub async fn set_rung_standing(
        &self,
        id: &SessionId,
        rung: usize,
        standing: Standing,
        reason: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE rungs SET standing = ?, reason = ? WHERE session = ? AND rung = ?")
            .bind(standing_str(standing))
            .bind(reason)
            .bind(id.to_string())
            .bind(rung as i64)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// Every result of a sweep, by rung, in arrival order.
    pub async fn sweep_rungs(&self, sweep: i64) -> Result<Vec<RungRow>, StoreError> {
        Ok(sqlx::query_as("SELECT * FROM rungs WHERE sweep = ? ORDER BY rung, t, rowid")
            .bind(sweep)
            .fetch_all(&self.writer)
            .await?)
    }

    /// The results of one session, by rung.
    pub async fn session_rungs(&self, id: &SessionId) -> Result<Vec<RungRow>, StoreError> {
        Ok(sqlx::query_as("SELECT * FROM rungs WHERE session = ? ORDER BY rung")
            .bind(id.to_string())
            .fetch_all(&self.reader)
            .await?)
    }

    /// The sessions of a sweep, in queue order.
    pub async fn sweep_sessions(&self, sweep: i64) -> Result<Vec<SessionRow>, StoreError> {
        Ok(sqlx::query_as("SELECT * FROM sessions WHERE sweep = ? ORDER BY seq")
            .bind(sweep)
            .fetch_all(&self.writer)
            .await?)
    }

    /// How many sessions of each sweep are running now (read off the writer, as the scheduler's queue is).
    pub async fn running_per_sweep(&self) -> Result<HashMap<i64, usize>, StoreError> {
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT sweep, count(*) FROM sessions WHERE state = 'running' AND sweep IS NOT NULL GROUP BY sweep",
        )
        .fetch_all(&self.reader)
        .await?;
        Ok(rows.into_iter().map(|(s, n)| (s, n.max(0) as usize)).collect())
    }

    /// The sweeps that have a trial waiting at a rung (off the writer: every scheduler tick asks).
    pub async fn sweeps_waiting(&self) -> Result<Vec<i64>, StoreError> {
        let rows: Vec<(i64,)> = sqlx::query_as(
            "SELECT DISTINCT sweep FROM sessions WHERE state = 'waiting' AND sweep IS NOT NULL ORDER BY sweep",
        )
        .fetch_all(&self.reader)
        .await?;
        Ok(rows.into_iter().map(|(s,)| s).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::temp_store;
    use super::*;
    use crate::core::queue::Device;
    use crate::store::NewSession;

    #[tokio::test]
    async fn sessions_queued_together_are_one_sweep_whose_rung_results_keep_arrival_order() {
        let (store, _dir) = temp_store().await;
        let one = NewSession::plain("local", "emoji", Device::Cpu);
        let single = store.enqueue(None, std::slice::from_ref(&one), |_, _| "{}".into()).await.unwrap();
        let trials = store.enqueue(None, &[one.clone(), one.clone(), one], |_, _| "{}".into()).await.unwrap();
        assert_eq!(store.session_required(&single[0]).await.unwrap().sweep, None, "one session is no sweep");
        let sweep = store.session_required(&trials[0]).await.unwrap().sweep.expect("a sweep");
        assert_eq!(sweep, store.session_required(&trials[0]).await.unwrap().seq);
        let members: Vec<SessionId> = store.sweep_sessions(sweep).await.unwrap().into_iter().map(|r| r.id).collect();
        assert_eq!(members, trials);
        assert!(store.queue().await.unwrap().iter().filter(|q| q.sweep == Some(sweep)).count() == 3);

        store.add_rung(&trials[2], sweep, 0, 1, Some(0.5)).await.unwrap();
        store.add_rung(&trials[0], sweep, 0, 1, Some(f64::NAN)).await.unwrap();
        store.add_rung(&trials[2], sweep, 0, 1, Some(0.9)).await.unwrap(); // a replay changes nothing
        store.set_rung_standing(&trials[2], 0, Standing::Promoted, "ranked 1 of 2").await.unwrap();
        let rows = store.sweep_rungs(sweep).await.unwrap();
        let seen: Vec<(String, Option<f64>, Standing)> =
            rows.iter().map(|r| (r.session.clone(), r.metric, r.standing())).collect();
        assert_eq!(
            seen,
            vec![
                (trials[2].to_string(), Some(0.5), Standing::Promoted),
                (trials[0].to_string(), None, Standing::Waiting)
            ]
        );
    }
}
