//! Asynchronous successive halving (ASHA, Li et al., 2018), pure: a sweep's rungs and, at each rung, which of the
//! sessions waiting there are promoted (resume training) and which are pruned.
//!
//! Rungs sit at `grace * rf^k` epochs (k = 0, 1, ...), below the run's last epoch (the last epoch is the end, not a
//! decision). A session that reaches a rung records its metric there and waits. As in the paper's `get_job`, whenever
//! a result arrives the rung promotes its best waiting sessions that rank within the top `floor(n / rf)` of the `n`
//! results recorded so far; nothing waits for a rung to fill, so a session that arrives late can outrank, and be
//! promoted before, sessions that are still waiting (those already promoted are never recalled).
//!
//! A sweep is finite, so a rung can only ever hold `capacity` results (the sweep's sessions at the first rung, then
//! `floor(capacity / rf)` of the rung below, at least one). A waiting session ranked beyond `floor(capacity / rf)` can
//! never be promoted: it is pruned at once, which frees its slot for the next session. When nothing of the sweep is
//! left to run (a session failed or was stopped, so fewer results will come), the rung settles with what it has: its
//! top `floor(n / rf)`, at least one, are promoted and the rest pruned.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

/// Whether a higher or a lower metric is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Max,
    Min,
}

/// The searcher's settings (the spec's `searcher: {name: asha, ...}`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Asha {
    /// Epochs before the first rung.
    pub grace_epochs: u32,
    /// The reduction factor `rf` (eta in the paper): a rung promotes its top `1/rf`.
    pub reduction_factor: u32,
    pub mode: Mode,
}

/// Where a session stands at a rung it reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    Waiting,
    Promoted,
    Pruned,
}

/// One result recorded at a rung, in arrival order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RungResult<K> {
    pub key: K,
    pub metric: f64,
    pub standing: Standing,
}

/// A decision for a session waiting at a rung.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision<K> {
    /// It resumes training, towards the next rung or its last epoch.
    Promote { key: K, rank: usize, of: usize },
    /// It ends in the state `pruned`: ranked `rank` of `of`, where at most `kept` are promoted.
    Prune { key: K, rank: usize, of: usize, kept: usize },
}

impl<K> Decision<K> {
    /// The reason a session carries, for `ps` and the session page (`epoch` is the rung's).
    pub fn describe(&self, rung: usize, epoch: u32) -> String {
        match *self {
            Decision::Promote { rank, of, .. } => {
                format!("promoted at rung {} (epoch {epoch}): ranked {rank} of {of}", rung + 1)
            }
            Decision::Prune { rank, of, kept, .. } => format!(
                "pruned at rung {} (epoch {epoch}): ranked {rank} of {of}, at most the top {kept} go on",
                rung + 1
            ),
        }
    }
}

impl Asha {
    fn rf(&self) -> usize {
        self.reduction_factor.max(2) as usize
    }

    /// The rungs, in epochs, for a run of `epochs`: `grace * rf^k` below `epochs`.
    pub fn rungs(&self, epochs: u32) -> Vec<u32> {
        let (grace, rf) = (u64::from(self.grace_epochs.max(1)), self.rf() as u64);
        let mut out = Vec::new();
        let mut at = grace;
        while at < u64::from(epochs) {
            out.push(at as u32);
            at *= rf;
        }
        out
    }

    /// The rung whose epoch is `epoch`, if one is, for a run of `epochs`.
    pub fn rung_at(&self, epoch: u32, epochs: u32) -> Option<usize> {
        self.rungs(epochs).iter().position(|&r| r == epoch)
    }

    /// The most results rung `rung` can ever hold in a sweep of `sessions`.
    pub fn capacity(&self, sessions: usize, rung: usize) -> usize {
        (0..rung).fold(sessions, |cap, _| (cap / self.rf()).max(1))
    }

    /// `a` is better than `b`; a non-finite metric is worse than any finite one.
    fn better(&self, a: f64, b: f64) -> bool {
        match (a.is_finite(), b.is_finite()) {
            (true, false) => true,
            (false, _) => false,
            (true, true) => match self.mode {
                Mode::Max => a.partial_cmp(&b) == Some(Ordering::Greater),
                Mode::Min => a.partial_cmp(&b) == Some(Ordering::Less),
            },
        }
    }

    /// The decisions for the sessions waiting at one rung, given every result recorded there (in arrival order; ties
    /// rank the earlier arrival first), the rung's `capacity`, and whether the sweep is `settled` (nothing of it is
    /// left to run or queued, so no more results will come). Sessions not returned keep waiting.
    pub fn decide<K: Copy>(&self, results: &[RungResult<K>], capacity: usize, settled: bool) -> Vec<Decision<K>> {
        let n = results.len();
        // ranks: 1 + how many are better, or equal and earlier
        let rank = |i: usize| {
            1 + results
                .iter()
                .enumerate()
                .filter(|&(j, r)| {
                    let (a, b) = (r.metric, results[i].metric);
                    self.better(a, b) || (j < i && !self.better(b, a))
                })
                .count()
        };
        let promotable = if settled { (n / self.rf()).max(1) } else { n / self.rf() };
        let kept = if settled { promotable } else { (capacity.max(n) / self.rf()).max(1) };
        let mut out: Vec<(usize, Decision<K>)> = results
            .iter()
            .enumerate()
            .filter(|(_, r)| r.standing == Standing::Waiting)
            .filter_map(|(i, r)| {
                let rank = rank(i);
                if rank <= promotable {
                    Some((rank, Decision::Promote { key: r.key, rank, of: n }))
                } else if rank > kept {
                    Some((rank, Decision::Prune { key: r.key, rank, of: n, kept }))
                } else {
                    None
                }
            })
            .collect();
        out.sort_by_key(|(rank, _)| *rank);
        out.into_iter().map(|(_, d)| d).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asha(grace: u32, rf: u32, mode: Mode) -> Asha {
        Asha { grace_epochs: grace, reduction_factor: rf, mode }
    }

    #[test]
    fn rungs_are_grace_times_powers_of_the_reduction_factor_below_the_last_epoch() {
        assert_eq!(asha(1, 3, Mode::Max).rungs(30), [1, 3, 9, 27]);
        assert_eq!(asha(1, 3, Mode::Max).rungs(27), [1, 3, 9], "the last epoch is the end, not a rung");
        assert_eq!(asha(2, 2, Mode::Max).rungs(16), [2, 4, 8]);
        assert_eq!(asha(5, 3, Mode::Max).rungs(5), Vec::<u32>::new());
        assert_eq!(asha(1, 3, Mode::Max).rung_at(9, 30), Some(2));
        assert_eq!(asha(1, 3, Mode::Max).rung_at(4, 30), None);
        assert_eq!(asha(1_000_000, 1_000_000, Mode::Max).rungs(u32::MAX), [1_000_000], "no overflow");
        let a = asha(1, 3, Mode::Max);
        assert_eq!([0, 1, 2, 3].map(|k| a.capacity(9, k)), [9, 3, 1, 1]);
        assert_eq!([0, 1, 2].map(|k| a.capacity(20, k)), [20, 6, 2]);
    }

    /// Applies `decide` after each arrival, as the daemon does, and returns what it decided after each.
    fn replay(a: &Asha, arrivals: &[f64], capacity: usize) -> (Vec<Vec<Decision<usize>>>, Vec<RungResult<usize>>) {
        let mut rung: Vec<RungResult<usize>> = Vec::new();
        let mut log = Vec::new();
        for (key, &metric) in arrivals.iter().enumerate() {
            rung.push(RungResult { key, metric, standing: Standing::Waiting });
            let decided = a.decide(&rung, capacity, false);
            for d in &decided {
                let (Decision::Promote { key, .. } | Decision::Prune { key, .. }) = *d;
                rung[key].standing =
                    if matches!(d, Decision::Promote { .. }) { Standing::Promoted } else { Standing::Pruned };
            }
            log.push(decided);
        }
        (log, rung)
    }

    /// The paper's rule at the first rung of a 9-session sweep (rf = 3), arrivals in time order: nobody is promoted
    /// before three results are in; then the top floor(n / 3) are; a waiting session is pruned once it ranks beyond
    /// floor(9 / 3) = 3, which no later result can undo; a late session outranks, and is promoted before, one that is
    /// still waiting; a promoted session is never recalled.
    #[test]
    fn a_worked_example_of_the_first_rung_including_a_late_session_that_outranks_waiting_ones() {
        use Decision::*;
        let a = asha(1, 3, Mode::Max);
        let arrivals = [0.30, 0.10, 0.50, 0.40, 0.20, 0.45, 0.05, 0.60, 0.35];
        let (log, rung) = replay(&a, &arrivals, 9);
        let expected: [Vec<Decision<usize>>; 9] = [
            vec![], // one result: floor(1/3) = 0 promoted, nobody beyond rank 3
            vec![],
            vec![Promote { key: 2, rank: 1, of: 3 }], // 0.50 is the best of three
            vec![Prune { key: 1, rank: 4, of: 4, kept: 3 }], // 0.10 can never reach the top 3 of 9
            vec![Prune { key: 4, rank: 4, of: 5, kept: 3 }],
            // six results: the top two go on; 0.45 (late) outranks 0.40 and 0.30, which still wait
            vec![Promote { key: 5, rank: 2, of: 6 }, Prune { key: 0, rank: 4, of: 6, kept: 3 }],
            vec![Prune { key: 6, rank: 7, of: 7, kept: 3 }],
            // 0.60 arrives last but one and is the best: promoted at once; 0.40 drops to rank 4
            vec![Promote { key: 7, rank: 1, of: 8 }, Prune { key: 3, rank: 4, of: 8, kept: 3 }],
            vec![Prune { key: 8, rank: 5, of: 9, kept: 3 }],
        ];
        assert_eq!(log, expected);
        let promoted: Vec<usize> = rung.iter().filter(|r| r.standing == Standing::Promoted).map(|r| r.key).collect();
        assert_eq!(promoted, [2, 5, 7], "floor(9 / 3) promoted, 0.50 included though 0.60 and 0.45 beat it later");
        assert!(rung.iter().all(|r| r.standing != Standing::Waiting), "a full rung leaves nobody waiting");
        assert_eq!(expected[3][0].describe(0, 1), "pruned at rung 1 (epoch 1): ranked 4 of 4, at most the top 3 go on");
        assert_eq!(expected[2][0].describe(0, 1), "promoted at rung 1 (epoch 1): ranked 1 of 3");
    }

    #[test]
    fn a_settled_sweep_promotes_its_best_waiting_session_and_prunes_the_rest() {
        use Decision::*;
        let a = asha(1, 3, Mode::Max);
        let rung = [0.2, 0.7].map(|m| RungResult { key: m, metric: m, standing: Standing::Waiting });
        assert_eq!(a.decide(&rung, 6, false), vec![], "two of six: floor(2/3) = 0 promoted, top 2 still possible");
        assert_eq!(
            a.decide(&rung, 3, false),
            vec![Prune { key: 0.2, rank: 2, of: 2, kept: 1 }],
            "of three at most one goes on, and 0.2 is already beaten"
        );
        assert_eq!(
            a.decide(&rung, 3, true),
            vec![Promote { key: 0.7, rank: 1, of: 2 }, Prune { key: 0.2, rank: 2, of: 2, kept: 1 }],
            "the third will never come"
        );
        let one = [RungResult { key: 1, metric: 0.1, standing: Standing::Waiting }];
        assert_eq!(a.decide(&one, 1, false), vec![], "floor(1/3) = 0 until settled");
        assert_eq!(a.decide(&one, 1, true), vec![Promote { key: 1, rank: 1, of: 1 }]);
    }

    #[test]
    fn lower_is_better_in_min_mode_ties_go_to_the_earlier_and_a_non_finite_metric_ranks_last() {
        use Decision::*;
        let res = |ms: &[f64]| -> Vec<RungResult<usize>> {
            ms.iter()
                .enumerate()
                .map(|(key, &metric)| RungResult { key, metric, standing: Standing::Waiting })
                .collect()
        };
        let min = asha(1, 2, Mode::Min);
        assert_eq!(
            min.decide(&res(&[0.9, 1.2, 0.7, 0.8]), 4, false),
            vec![
                Promote { key: 2, rank: 1, of: 4 },
                Promote { key: 3, rank: 2, of: 4 },
                Prune { key: 0, rank: 3, of: 4, kept: 2 },
                Prune { key: 1, rank: 4, of: 4, kept: 2 }
            ]
        );
        let max = asha(1, 2, Mode::Max);
        assert_eq!(
            max.decide(&res(&[0.4, 0.4]), 2, false),
            vec![Promote { key: 0, rank: 1, of: 2 }, Prune { key: 1, rank: 2, of: 2, kept: 1 }]
        );
        assert_eq!(
            max.decide(&res(&[f64::NAN, 1e-9]), 2, false),
            vec![Promote { key: 1, rank: 1, of: 2 }, Prune { key: 0, rank: 2, of: 2, kept: 1 }]
        );
    }

    /// A 9-session sweep over 9 epochs, two slots, simulated in time: sessions wait at a rung (freeing their slot) until
    /// promoted, then resume. The sessions whose curves never leave chance are pruned at the first rung, the best
    /// trains to its last epoch, and the sweep spends about a quarter of the grid's 81 epochs.
    #[test]
    fn a_simulated_sweep_prunes_the_hopeless_sessions_at_the_first_rung_and_trains_the_best_to_the_end() {
        let a = asha(1, 3, Mode::Max);
        let (epochs, sessions, slots) = (9u32, 9usize, 2usize);
        let rungs = a.rungs(epochs);
        assert_eq!(rungs, [1, 3]);
        // val_acc after epoch e: skill * (1 - 0.7^e); a skill of 0 stays at chance
        let skill = [0.0, 0.5, 0.0, 0.8, 0.3, 0.0, 0.6, 0.0, 0.4];
        let curve = |s: usize, e: u32| if skill[s] == 0.0 { 0.01 } else { skill[s] * (1.0 - 0.7f64.powi(e as i32)) };
        let mut done = [0u32; 9];
        let mut ended: [Option<&str>; 9] = [None; 9];
        let mut rung_results: Vec<Vec<RungResult<usize>>> = vec![Vec::new(); rungs.len()];
        let mut ready: Vec<usize> = (0..sessions).collect(); // queued or promoted, FIFO
        let mut running: Vec<usize> = Vec::new();
        loop {
            while running.len() < slots && !ready.is_empty() {
                running.push(ready.remove(0));
            }
            if running.is_empty() {
                // settle every rung whose sessions still wait (cannot happen here, but is the rule)
                let mut any = false;
                for (k, results) in rung_results.iter_mut().enumerate() {
                    for d in a.decide(results, a.capacity(sessions, k), true) {
                        any = true;
                        let (key, standing) = match d {
                            Decision::Promote { key, .. } => {
                                ready.push(key);
                                (key, Standing::Promoted)
                            }
                            Decision::Prune { key, .. } => {
                                ended[key] = Some("pruned");
                                (key, Standing::Pruned)
                            }
                        };
                        if let Some(r) = results.iter_mut().find(|r| r.key == key) {
                            r.standing = standing;
                        }
                    }
                }
                if !any {
                    break;
                }
                continue;
            }
            // the first running session trains one epoch
            let s = running.remove(0);
            done[s] += 1;
            let e = done[s];
            if e == epochs {
                ended[s] = Some("succeeded");
                continue;
            }
            let Some(k) = a.rung_at(e, epochs) else {
                running.push(s);
                continue;
            };
            rung_results[k].push(RungResult { key: s, metric: curve(s, e), standing: Standing::Waiting });
            for d in a.decide(&rung_results[k], a.capacity(sessions, k), false) {
                let (key, standing) = match d {
                    Decision::Promote { key, .. } => {
                        ready.insert(0, key); // a promoted session resumes before new ones start
                        (key, Standing::Promoted)
                    }
                    Decision::Prune { key, .. } => {
                        ended[key] = Some("pruned");
                        (key, Standing::Pruned)
                    }
                };
                if let Some(r) = rung_results[k].iter_mut().find(|r| r.key == key) {
                    r.standing = standing;
                }
            }
        }
        for s in 0..sessions {
            if skill[s] == 0.0 {
                assert_eq!((ended[s], done[s]), (Some("pruned"), 1), "hopeless session {s} is pruned at rung 1");
            }
        }
        assert_eq!((ended[3], done[3]), (Some("succeeded"), epochs), "the best trains to its last epoch");
        assert!(ended.iter().all(Option::is_some), "every session ends: {ended:?}");
        let spent: u32 = done.iter().sum();
        assert_eq!(spent, 9 + 2 * 3 + 6, "one to the end, two to the second rung, six pruned at the first");
    }
}
