//! ASHA for sweeps, the daemon's side: a trial that paused at a rung has its result recorded there, and its sweep's
//! rungs are decided by the pure `core::asha`: a promoted trial goes back to the queue and resumes from its rung's
//! checkpoint through the usual resume path; a pruned one ends `pruned`, with the rung and its rank as the reason.
//!
//! A sweep is decided when one of its trials pauses or ends, when one is stopped, and on every scheduler tick that
//! finds a trial waiting (the first at start-up; so nothing waits forever, whatever ended the others). Decisions are made
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
    /// The caller moves it to `waiting`, then decides the sweep. A pause that no rung decision could ever end (no
    /// sweep with a searcher, or an epoch that is no rung) is an error: the session fails with it, rather than wait.
    pub(crate) async fn record_rung(
        &self,
        row: &SessionRow,
        epoch: u32,
        metric: Option<f64>,
    ) -> Result<(), DaemonError> {
        let Some((sweep, searcher)) = Self::searcher_of(row) else {
            return Err(DaemonError::Invalid(
                "the trainer paused, but this session is no trial of a sweep with a searcher".into(),
            ));
        };
        let epochs = u32::try_from(row.epochs).unwrap_or(u32::MAX);
        let Some(rung) = searcher.asha().rung_at(epoch, epochs) else {
            return Err(DaemonError::Invalid(format!(
                "the trainer paused after epoch {epoch}, which is no rung of its searcher"
            )));
        };
        self.store.add_rung(&row.id, sweep, rung, epoch, metric).await?;
        Ok(())
    }

    /// After a restart, for a trial that was running: when its last checkpoint is at a rung where it has no result, it
    /// paused there (or was about to) as the daemon died. Its result is recorded from the stored epoch metrics and
    /// `true` says it waits there rather than resume past the rung.
    pub(crate) async fn rung_missed(&self, row: &SessionRow, last: i64) -> Result<bool, DaemonError> {
        let Some((sweep, searcher)) = Self::searcher_of(row) else {
            return Ok(false);
        };
        let (epoch, epochs) = (u32::try_from(last).unwrap_or(0), u32::try_from(row.epochs).unwrap_or(u32::MAX));
        let Some(rung) = searcher.asha().rung_at(epoch, epochs) else {
            return Ok(false);
        };
        if self.store.session_rungs(&row.id).await?.iter().any(|r| r.rung == rung as i64) {
            return Ok(false);
        }
        let name = searcher.metric.as_str();
        let metric =
            self.store.metrics(&row.id, Some(name)).await?.into_iter().rfind(|m| m.epoch == last).map(|m| m.value);
        self.store.add_rung(&row.id, sweep, rung, epoch, metric).await?;
        Ok(true)
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

    /// Decides every sweep with a trial waiting at a rung (on scheduler ticks).
    pub async fn decide_waiting_sweeps(&self) -> Result<(), DaemonError> {
        for sweep in self.store.sweeps_waiting().await? {
            self.decide_sweep(sweep).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::core::queue::Device;
    use crate::core::spec::{ResolvedSpec, Spec};
    use crate::daemon::config::{DaemonConfig, Flags};
    use crate::daemon::executor::LocalExecutor;
    use crate::home::Home;
    use crate::store::{MetricRow, NewSession, Store};

    /// A daemon (nothing scheduled; children are `/bin/true`) with `cpu_slots` and a sweep of three 9-epoch trials
    /// under `searcher` (by default rf 3: rungs at epochs 1 and 3). Shared with the scheduler's tests.
    pub(crate) async fn sweep_of_three(
        cpu_slots: u32,
        searcher: Searcher,
    ) -> (Arc<Daemon>, Vec<SessionId>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let flags =
            Flags { experiments: Some(dir.path().join("exp")), cpu_slots: Some(cpu_slots), ..Default::default() };
        let config = DaemonConfig::resolve(Home::new(dir.path().join("home")), flags, 0).unwrap().prepare().unwrap();
        let store = Store::open(&config.db).await.unwrap();
        let daemon = Daemon::new(config, store, Arc::new(LocalExecutor { program: "/bin/true".into() }));
        let spec = Spec { dataset: "emoji".into(), epochs: 9, searcher: Some(searcher), ..Spec::default() };
        let resolved = |id: &SessionId| {
            let r = ResolvedSpec {
                session: id.to_string(),
                dataset_path: "/d".into(),
                init_from: None,
                runtime: None,
                spec: spec.clone(),
            };
            serde_json::to_string(&r).unwrap()
        };
        let new = NewSession { epochs: 9, ..NewSession::plain("local", "emoji", Device::Cpu) };
        let ids = daemon.store.enqueue(None, &[new.clone(), new.clone(), new], |id, _| resolved(id)).await.unwrap();
        (daemon, ids, dir)
    }

    /// What the runner does when a trial pauses at the rung at `epoch` with `metric`.
    async fn pauses(daemon: &Daemon, id: &SessionId, epoch: u32, metric: f64) -> Decided {
        let store = &daemon.store;
        if store.session_required(id).await.unwrap().state == SessionState::Queued {
            store.transition(id, SessionState::Running, Some("cpu0"), None).await.unwrap();
        }
        let row = store.session_required(id).await.unwrap();
        daemon.record_rung(&row, epoch, Some(metric)).await.unwrap();
        store.transition(id, SessionState::Waiting, None, Some("reached a rung")).await.unwrap();
        daemon.decide_sweep(row.sweep.unwrap()).await.unwrap()
    }

    async fn state(daemon: &Daemon, id: &SessionId) -> (SessionState, String) {
        let row = daemon.store.session_required(id).await.unwrap();
        (row.state, row.exit_reason.unwrap_or_default())
    }

    #[tokio::test]
    async fn a_sweep_decides_as_results_arrive_and_settles_when_nothing_is_left_to_run() {
        let (daemon, ids, _dir) = sweep_of_three(1, Searcher::default()).await;
        // The first result waits: nothing to compare it with yet, and it is within the top third of three.
        assert_eq!(pauses(&daemon, &ids[0], 1, 0.2).await, Decided::default());
        assert_eq!(state(&daemon, &ids[0]).await.0, SessionState::Waiting);
        // A better second result: the first can no longer be in the top third of three, so it is pruned at once.
        let decided = pauses(&daemon, &ids[1], 1, 0.5).await;
        assert_eq!(decided, Decided { promoted: vec![], pruned: vec![ids[0].clone()] });
        assert_eq!(
            state(&daemon, &ids[0]).await,
            (SessionState::Pruned, "pruned at rung 1 (epoch 1): ranked 2 of 2, at most the top 1 go on".into())
        );
        assert_eq!(state(&daemon, &ids[1]).await.0, SessionState::Waiting, "one of three results is not enough");
        // The third trial is stopped before it ran: nothing is left to come, so the rung settles with what it has.
        daemon.stop_session(&ids[2]).await.unwrap();
        assert_eq!(
            state(&daemon, &ids[1]).await,
            (SessionState::Queued, "promoted at rung 1 (epoch 1): ranked 1 of 2".into())
        );
        let rungs = daemon.store.sweep_rungs(daemon.store.session_required(&ids[1]).await.unwrap().sweep.unwrap());
        let standings: Vec<Standing> = rungs.await.unwrap().iter().map(|r| r.standing()).collect();
        assert_eq!(standings, [Standing::Pruned, Standing::Promoted]);

        // The promoted trial resumes; the daemon dies as it pauses at the second rung, before recording its result.
        let store = &daemon.store;
        store.transition(&ids[1], SessionState::Running, Some("cpu0"), None).await.unwrap();
        let metric =
            MetricRow { session: ids[1].to_string(), step: 30, epoch: 3, name: "val_acc".into(), value: 0.7, t: 1.0 };
        store.insert_metrics(&[metric]).await.unwrap();
        let row = store.session_required(&ids[1]).await.unwrap();
        assert!(!daemon.rung_missed(&row, 2).await.unwrap(), "epoch 2 is no rung");
        assert!(daemon.rung_missed(&row, 3).await.unwrap(), "its result at the second rung was missing");
        assert!(!daemon.rung_missed(&row, 3).await.unwrap(), "and is recorded now");
        let results = store.session_rungs(&ids[1]).await.unwrap();
        assert_eq!(
            results.iter().map(|r| (r.rung, r.epoch, r.metric)).collect::<Vec<_>>(),
            [(0, 1, Some(0.5)), (1, 3, Some(0.7))]
        );
    }
}
