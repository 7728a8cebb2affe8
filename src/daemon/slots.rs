//! The worker slots and who holds each: the one place the pool is locked. The scheduler leases a slot to a session,
//! the submission worker leases one to a submission, and a [`Lease`] hands its slot back when it is dropped, whatever
//! ended the work (its end, an error, a panic unwinding through it), waking both so the slot is used at once.
//!
//! A session's lease also registers how to stop it: `rush stop` finds the session's cancellation token here for as
//! long as its runner holds the slot.
//!
//! Submissions are short, so they go first: while one waits for a slot, the scheduler leaves the next free slot to
//! it ([`Snapshot::submission_waiting`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::core::queue::{Slot, SlotKind};
use crate::core::session::SessionId;

/// A slot and what holds it, for `/api/info` and the dashboard.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SlotView {
    pub slot: String,
    /// The session (or `submission N`) on it.
    pub session: Option<String>,
}

/// What holds a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Holder {
    Session(SessionId),
    /// A submission and its user.
    Submission(i64, String),
}

impl Holder {
    /// The user whose work holds the slot.
    fn owner(&self) -> &str {
        match self {
            Holder::Session(id) => &id.user,
            Holder::Submission(_, user) => user,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    holders: Vec<Option<Holder>>,
    /// How to stop each session that holds a slot.
    stops: HashMap<SessionId, CancellationToken>,
    /// The submission that waits for a slot.
    waiting: Option<i64>,
}

/// The slots of one daemon.
#[derive(Debug)]
pub struct SlotPool {
    kinds: Vec<SlotKind>,
    state: Mutex<State>,
    /// Woken when a slot is handed back: the scheduler's and the submission worker's.
    wakes: Vec<Arc<Notify>>,
}

/// The pool as the scheduler decides on it.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub slots: Vec<Slot>,
    /// The user whose work holds each slot (fair share counts them).
    pub owners: Vec<Option<String>>,
    /// A submission waits for a slot: no session may take one now.
    pub submission_waiting: bool,
}

/// One slot, held until dropped.
#[derive(Debug)]
pub struct Lease {
    pool: Arc<SlotPool>,
    index: usize,
}

impl Lease {
    pub fn kind(&self) -> SlotKind {
        self.pool.kinds[self.index]
    }

    pub fn index(&self) -> usize {
        self.index
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.pool.release(self.index);
    }
}

impl SlotPool {
    /// A pool of `kinds`, waking each of `wakes` whenever a slot is handed back.
    pub fn new(kinds: Vec<SlotKind>, wakes: Vec<Arc<Notify>>) -> Arc<SlotPool> {
        let state = State { holders: vec![None; kinds.len()], ..State::default() };
        Arc::new(SlotPool { kinds, state: Mutex::new(state), wakes })
    }

    /// The lock; a panic elsewhere while it was held left nothing half-done that matters here, so poisoning is ignored.
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn len(&self) -> usize {
        self.kinds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty()
    }

    /// Each slot and what holds it.
    pub fn views(&self) -> Vec<SlotView> {
        let state = self.state();
        self.kinds
            .iter()
            .zip(&state.holders)
            .map(|(kind, holder)| SlotView {
                slot: kind.to_string(),
                session: holder.as_ref().map(|h| match h {
                    Holder::Session(id) => id.to_string(),
                    Holder::Submission(n, _) => format!("submission {n}"),
                }),
            })
            .collect()
    }

    /// The slots, busy or free, and whether a submission waits.
    pub fn snapshot(&self) -> Snapshot {
        let state = self.state();
        let slots = self.kinds.iter().zip(&state.holders).map(|(&kind, h)| Slot { kind, busy: h.is_some() }).collect();
        let owners = state.holders.iter().map(|h| h.as_ref().map(|h| h.owner().to_string())).collect();
        Snapshot { slots, owners, submission_waiting: state.waiting.is_some() }
    }

    /// How many GPU slots `user`'s work holds now.
    pub fn gpus_held_by(&self, user: &str) -> u32 {
        self.gpus_held(&self.state(), user)
    }

    /// [`SlotPool::gpus_held_by`] under a lock already held.
    fn gpus_held(&self, state: &State, user: &str) -> u32 {
        let held = self.kinds.iter().zip(&state.holders);
        held.filter(|(k, h)| matches!(k, SlotKind::Gpu(_)) && h.as_ref().is_some_and(|h| h.owner() == user)).count()
            as u32
    }

    /// Leases slot `index` to session `id`, registering `stop` as the way to stop it; `None` when the slot is taken
    /// (or does not exist) or the session already holds one.
    pub fn lease_session(self: &Arc<Self>, index: usize, id: SessionId, stop: CancellationToken) -> Option<Lease> {
        let mut state = self.state();
        if state.holders.get(index)?.is_some() || state.stops.contains_key(&id) {
            return None;
        }
        state.holders[index] = Some(Holder::Session(id.clone()));
        state.stops.insert(id, stop);
        Some(Lease { pool: self.clone(), index })
    }

    /// Leases a free slot (a GPU first, unless `user` holds its `gpu_quota` of them) to submission `id` of `user`.
    /// With none free, marks a submission as waiting, so the scheduler starts no session until
    /// [`SlotPool::stop_waiting`] or a lease, and returns `None`.
    pub fn lease_submission(self: &Arc<Self>, id: i64, user: &str, gpu_quota: Option<u32>) -> Option<Lease> {
        let mut state = self.state();
        let held_gpus = self.gpus_held(&state, user);
        let gpu_ok = gpu_quota.is_none_or(|q| held_gpus < q);
        let free = |i: &usize| state.holders[*i].is_none();
        let is_gpu = |i: usize| matches!(self.kinds[i], SlotKind::Gpu(_));
        let gpu = (0..self.kinds.len()).filter(free).find(|&i| gpu_ok && is_gpu(i));
        match gpu.or_else(|| (0..self.kinds.len()).filter(free).find(|&i| !is_gpu(i))) {
            Some(index) => {
                state.holders[index] = Some(Holder::Submission(id, user.to_string()));
                state.waiting = None;
                Some(Lease { pool: self.clone(), index })
            }
            None => {
                state.waiting = Some(id);
                None
            }
        }
    }

    /// The waiting submission gave up (the daemon is shutting down).
    pub fn stop_waiting(&self) {
        self.state().waiting = None;
    }

    /// The submission that waits for a slot now, if one does: it takes the next free slot, before any session.
    pub fn waiting_submission(&self) -> Option<i64> {
        self.state().waiting
    }

    /// How to stop session `id`, while it holds a slot.
    pub fn stop_token(&self, id: &SessionId) -> Option<CancellationToken> {
        self.state().stops.get(id).cloned()
    }

    /// Whether session `id` holds a slot (its runner is on it; a Slurm job waiting in Slurm's queue holds one while
    /// the session shows as queued).
    pub fn holds(&self, id: &SessionId) -> bool {
        self.state().stops.contains_key(id)
    }

    fn release(&self, index: usize) {
        {
            let mut state = self.state();
            if let Some(Holder::Session(id)) = state.holders.get_mut(index).and_then(Option::take) {
                state.stops.remove(&id);
            }
        }
        for wake in &self.wakes {
            wake.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> SessionId {
        format!("local/emoji/{n}").parse().unwrap()
    }

    fn pool() -> (Arc<SlotPool>, Arc<Notify>) {
        let wake = Arc::new(Notify::new());
        (SlotPool::new(vec![SlotKind::Cpu(0), SlotKind::Gpu(1), SlotKind::Cpu(1)], vec![wake.clone()]), wake)
    }

    fn holders(pool: &SlotPool) -> Vec<Option<String>> {
        pool.views().into_iter().map(|v| v.session).collect()
    }

    #[tokio::test]
    async fn a_lease_holds_its_slot_until_dropped_and_wakes_on_release() {
        let (pool, wake) = pool();
        let stop = CancellationToken::new();
        let lease = pool.lease_session(0, id(1), stop.clone()).expect("slot 0 is free");
        assert_eq!(lease.kind(), SlotKind::Cpu(0));
        assert!(pool.lease_session(0, id(2), CancellationToken::new()).is_none(), "slot 0 is taken");
        assert!(pool.lease_session(2, id(1), CancellationToken::new()).is_none(), "a session holds one slot");
        assert!(pool.lease_session(9, id(3), CancellationToken::new()).is_none(), "no such slot");
        assert!(pool.holds(&id(1)));
        pool.stop_token(&id(1)).unwrap().cancel();
        assert!(stop.is_cancelled(), "stop reaches the runner's token");
        assert_eq!(holders(&pool), [Some("local/emoji/1".into()), None, None]);
        assert_eq!(pool.snapshot().slots.iter().map(|s| s.busy).collect::<Vec<_>>(), [true, false, false]);
        drop(lease);
        assert_eq!(holders(&pool), [None, None, None]);
        assert!(!pool.holds(&id(1)) && pool.stop_token(&id(1)).is_none());
        tokio::time::timeout(std::time::Duration::from_secs(1), wake.notified()).await.expect("a release wakes");
    }

    #[test]
    fn a_panic_while_holding_a_lease_still_frees_the_slot() {
        let (pool, _wake) = pool();
        let p = pool.clone();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _lease = p.lease_session(1, id(1), CancellationToken::new()).unwrap();
            panic!("a runner bug");
        }));
        assert!(result.is_err());
        assert_eq!(holders(&pool), [None, None, None]);
        assert!(pool.lease_session(1, id(2), CancellationToken::new()).is_some(), "the pool is usable after a panic");
    }

    #[test]
    fn submissions_take_a_gpu_first_and_block_sessions_while_they_wait() {
        let (pool, _wake) = pool();
        let first = pool.lease_submission(5, "local", None).unwrap();
        assert_eq!(first.kind(), SlotKind::Gpu(1), "a GPU first");
        let second = pool.lease_submission(6, "local", None).unwrap();
        assert_eq!(second.kind(), SlotKind::Cpu(0));
        let _third = pool.lease_session(2, id(1), CancellationToken::new()).unwrap();
        assert_eq!(
            holders(&pool),
            [Some("submission 6".into()), Some("submission 5".into()), Some("local/emoji/1".into())]
        );
        assert!(!pool.snapshot().submission_waiting);
        assert!(pool.lease_submission(7, "local", None).is_none(), "all slots held");
        assert!(pool.snapshot().submission_waiting, "sessions now leave the next free slot to it");
        assert_eq!(pool.waiting_submission(), Some(7), "and the pool says which submission waits");
        drop(second);
        let got = pool.lease_submission(7, "local", None).unwrap();
        assert_eq!(got.kind(), SlotKind::Cpu(0));
        assert!(!pool.snapshot().submission_waiting);
        assert!(pool.lease_submission(8, "local", None).is_none());
        pool.stop_waiting();
        assert!(!pool.snapshot().submission_waiting);
    }

    #[test]
    fn a_submission_of_a_user_at_its_gpu_quota_takes_a_cpu_slot_or_waits() {
        let (pool, _wake) = pool();
        let team: SessionId = "team07/emoji/1".parse().unwrap();
        let _gpu = pool.lease_session(1, team, CancellationToken::new()).unwrap();
        assert_eq!(pool.gpus_held_by("team07"), 1);
        assert_eq!(pool.snapshot().owners, [None, Some("team07".to_string()), None]);
        let cpu = pool.lease_submission(5, "team07", Some(1)).unwrap();
        assert_eq!(cpu.kind(), SlotKind::Cpu(0), "its one GPU is held: a CPU slot");
        let _other = pool.lease_submission(6, "team07", Some(1)).unwrap();
        assert!(pool.lease_submission(7, "team07", Some(1)).is_none(), "no CPU slot left and no GPU allowed");
        drop(cpu);
        assert_eq!(pool.lease_submission(7, "team07", Some(1)).unwrap().kind(), SlotKind::Cpu(0));
        assert_eq!(pool.gpus_held_by("team07"), 1, "submissions on CPU slots hold no GPU");
    }
}
