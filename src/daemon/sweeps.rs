//! ASHA for sweeps, the daemon's side: a trial that paused at a rung has its result recorded there, and its sweep's
//! rungs are decided by the pure `core::asha`: a promoted trial goes back to the queue and resumes from its rung's
//! checkpoint through the usual resume path; a pruned one ends `pruned`, with the rung and its rank as the reason.
//!
//! A sweep is decided when one of its trials pauses or ends, when one is stopped, on every scheduler tick that finds
//! a trial waiting (so nothing waits forever, whatever ended the others), and once at start-up. Decisions are made
//! one sweep at a time under one lock, so two trials pausing together never both promote the same rank.

use std::collections::HashMap;

use crate::core::asha::{Decision, RungResult, Standing};
use crate::core::session::{SessionId, SessionState};
use crate::core::spec::Searcher;
use crate::store::SessionRow;

use super::{Daemon, DaemonError};

/// The decisions of one pass over a sweep, for the log and the tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Decided {
    pub promoted: Vec<SessionId>,
    pub pruned: Vec<SessionId>,
}

impl Daemon {
    /// The searcher of the sweep `row` is a trial of, if it has one.
    pub(crate) fn searcher_of(row: &SessionRow) -> Option<(i64, Searcher)> {
        let sweep = row.sweep?;
        let searcher = row.resolved_spec().ok()?.spec.searcher?;
        Some((sweep, searcher))
    }

    /// A trial paused after `epoch` (a rung of its searcher) with `metric` there: records its arrival at the rung.
    /// The caller moves it to `waiting`, then decides the sweep.
    pub(crate) async fn record_rung(
        &self,
        row: &SessionRow,
        epoch: u32,
        metric: Option<f64>,
    ) -> Result<Option<i64>, DaemonError> {
        let Some((sweep, searcher)) = Self::searcher_of(row) else {
            return Ok(None);
        };
        let epochs = u32::try_from(row.epochs).unwrap_or(u32::MAX);
        let Some(rung) = searcher.asha().rung_at(epoch, epochs) else {
            tracing::warn!("{}: paused after epoch {epoch}, which is no rung of its searcher", row.id);
            return Ok(Some(sweep));
        };
        self.store.add_rung(&row.id, sweep, rung, epoch, metric).await?;
        Ok(Some(sweep))
    }

    /// Applies the searcher's decisions to every rung of `sweep` (lowest first): promoted trials are queued again to
    /// resume, pruned ones end. A no-op for a sweep without a searcher.
    pub async fn decide_sweep(&self, sweep: i64) -> Result<Decided, DaemonError> {
        let _one_at_a_time = self.sweep_lock.lock().await;
        let sessions = self.store.sweep_sessions(sweep).await?;
        let Some((_, searcher)) = sessions.iter().find_map(Self::searcher_of) else {
            return Ok(Decided::default());
        };
        let asha = searcher.asha();
        let state: HashMap<String, SessionState> = sessions.iter().map(|s| (s.id.to_string(), s.state)).collect();
        // Nothing of the sweep is left to run: no more results will come to any rung.
        let mut settled = !sessions.iter().any(|s| matches!(s.state, SessionState::Queued | SessionState::Running));
        let rungs = self.store.sweep_rungs(sweep).await?;
        let top = rungs.iter().map(|r| r.rung).max().unwrap_or(-1);
        let mut decided = Decided::default();
        for k in 0..=top {
            let at: Vec<_> = rungs.iter().filter(|r| r.rung == k).collect();
            let results: Vec<RungResult<usize>> = at
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let mut standing = r.standing();
                    // Stopped or failed while it waited: it keeps its rank, but there is nothing to promote.
                    if standing == Standing::Waiting && state.get(&r.session) != Some(&SessionState::Waiting) {
                        standing = Standing::Pruned;
                    }
                    RungResult { key: i, metric: r.metric.unwrap_or(f64::NAN), standing }
                })
                .collect();
            let rung = usize::try_from(k).unwrap_or(0);
            let capacity = asha.capacity(sessions.len(), rung);
            for decision in asha.decide(&results, capacity, settled) {
                let (Decision::Promote { key, .. } | Decision::Prune { key, .. }) = decision;
                let row = at[key];
                let id: SessionId = match row.session.parse() {
                    Ok(id) => id,
                    Err(e) => {
                        tracing::error!("sweep {sweep}: rung row of {}: {e}", row.session);
                        continue;
                    }
                };
                let epoch = u32::try_from(row.epoch).unwrap_or(0);
                let reason = decision.describe(rung, epoch);
                let (standing, to) = match decision {
                    Decision::Promote { .. } => (Standing::Promoted, SessionState::Queued),
                    Decision::Prune { .. } => (Standing::Pruned, SessionState::Pruned),
                };
                // The state first: a trial stopped meanwhile stays stopped, and its rung row keeps waiting.
                if let Err(e) = self.store.transition(&id, to, None, Some(&reason)).await {
                    tracing::info!(
                        "sweep {sweep}: {id} not {}: {e}",
                        if to == SessionState::Queued { "promoted" } else { "pruned" }
                    );
                    continue;
                }
                self.store.set_rung_standing(&id, rung, standing, &reason).await?;
                tracing::info!("session {id} {reason}");
                if to == SessionState::Queued {
                    settled = false;
                    decided.promoted.push(id);
                } else {
                    self.live.end(&id, SessionState::Pruned);
                    decided.pruned.push(id);
                }
            }
        }
        if !decided.promoted.is_empty() {
            self.wake();
        }
        Ok(decided)
    }

    /// The `max_concurrent` of the searcher of the sweep that queued session `id` is a trial of.
    pub(crate) async fn sweep_limit(&self, id: &SessionId) -> Result<Option<u32>, DaemonError> {
        let row = self.store.session(id).await?;
        Ok(row.as_ref().and_then(Self::searcher_of).and_then(|(_, s)| s.max_concurrent))
    }

    /// Decides every sweep with a trial waiting at a rung (at start-up, and on scheduler ticks).
    pub async fn decide_waiting_sweeps(&self) -> Result<(), DaemonError> {
        for sweep in self.store.sweeps_waiting().await? {
            self.decide_sweep(sweep).await?;
        }
        Ok(())
    }
}
