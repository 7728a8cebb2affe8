//! Fair share on a shared daemon, pure: which user's queued work takes a freed slot when several users (teams) share
//! the slots, each capped at a number of GPUs.
//!
//! Every free slot, in slot order, goes to one job: among the users with a job that may run on it (its device is the
//! slot's, and for a GPU slot the user holds fewer GPUs than its quota), the user holding the fewest slots of that
//! kind relative to its weight (its GPU quota for GPU slots, else 1) wins; a tie goes to the user whose next job is
//! the most urgent (priority, then queue order). Within one user, its submissions go first (a submission is short and
//! someone waits on it), then its sessions by priority and queue order, as [`super::queue::order`] does. With one user
//! and no quota this is exactly [`super::queue::assign`] with the submissions ahead.

use super::queue::{Device, Slot};

/// A queued job (a session, or a submission waiting for a slot) as fair share sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Job<K> {
    pub key: K,
    /// Index into the `users` slice.
    pub user: usize,
    pub submission: bool,
    pub priority: i32,
    /// Queue order: lower was queued earlier.
    pub seq: i64,
    pub device: Device,
}

/// A user's share: its GPU quota (None: no cap) and the slots its running jobs hold now.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct User {
    pub name: String,
    pub gpus: Option<u32>,
    pub held_gpus: u32,
    pub held_cpus: u32,
}

/// `jobs[...]` with `key` goes to `slots[slot]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant<K> {
    pub key: K,
    pub slot: usize,
}

/// Urgency within one user, lower first: submissions, then priority (higher first), then queue order.
type Urgency = (bool, i32, i64);

/// The candidate for a slot so far: its index among the jobs left, its user's share as (held, weight), its urgency.
type Candidate = (usize, (u64, u64), Urgency);

fn urgency<K>(j: &Job<K>) -> Urgency {
    (!j.submission, -j.priority, j.seq)
}

/// Assigns free slots to queued jobs by fair share (see the module's doc). Jobs whose user index is out of range are
/// never granted.
pub fn assign<K: Copy>(slots: &[Slot], jobs: &[Job<K>], users: &[User]) -> Vec<Grant<K>> {
    let mut held: Vec<(u32, u32)> = users.iter().map(|u| (u.held_gpus, u.held_cpus)).collect();
    let mut left: Vec<Job<K>> = jobs.iter().copied().filter(|j| j.user < users.len()).collect();
    left.sort_by_key(urgency);
    let mut out = Vec::new();
    for (i, slot) in slots.iter().enumerate().filter(|(_, s)| !s.busy) {
        let device = slot.kind.device();
        // each user's most urgent job for this device, if the user may take one more slot of it
        let mut best: Option<Candidate> = None;
        for (at, j) in left.iter().enumerate() {
            if j.device != device {
                continue;
            }
            let u = &users[j.user];
            let (gpus, cpus) = held[j.user];
            if device == Device::Gpu && u.gpus.is_some_and(|q| gpus >= q) {
                continue;
            }
            // held / weight compared without division: (held, weight) as a fraction
            let (h, w) = match device {
                Device::Gpu => (u64::from(gpus), u64::from(u.gpus.unwrap_or(1).max(1))),
                Device::Cpu => (u64::from(cpus), 1),
            };
            let better = match best {
                None => true,
                Some((_, (bh, bw), bu)) => {
                    let (mine, theirs) = (h * bw, bh * w);
                    mine < theirs || (mine == theirs && urgency(j) < bu)
                }
            };
            if better {
                best = Some((at, (h, w), urgency(j)));
            }
        }
        if let Some((at, _, _)) = best {
            let j = left.remove(at);
            match device {
                Device::Gpu => held[j.user].0 += 1,
                Device::Cpu => held[j.user].1 += 1,
            }
            out.push(Grant { key: j.key, slot: i });
        }
    }
    out
}

/// Why a user's GPU jobs wait although a GPU may be free: it holds its whole quota ("team07 holds 2 of its 2 GPUs").
pub fn quota_reason(user: &User) -> Option<String> {
    let quota = user.gpus?;
    (user.held_gpus >= quota).then(|| {
        let unit = if quota == 1 { "GPU" } else { "GPUs" };
        format!("{} holds {} of its {quota} {unit}", user.name, user.held_gpus)
    })
}

#[cfg(test)]
mod tests {
    use super::super::queue::{self, SlotKind, Waiting};
    use super::*;
    use rand::{Rng, SeedableRng};

    fn slots(kinds: &[SlotKind], busy: &[usize]) -> Vec<Slot> {
        kinds.iter().enumerate().map(|(i, &kind)| Slot { kind, busy: busy.contains(&i) }).collect()
    }

    fn user(name: &str, gpus: Option<u32>, held_gpus: u32) -> User {
        User { name: name.into(), gpus, held_gpus, held_cpus: 0 }
    }

    fn job(key: u32, user: usize, seq: i64) -> Job<u32> {
        Job { key, user, submission: false, priority: 0, seq, device: Device::Gpu }
    }

    const G: fn(u32) -> SlotKind = SlotKind::Gpu;
    const C: fn(u32) -> SlotKind = SlotKind::Cpu;

    fn grants(g: &[Grant<u32>]) -> Vec<(u32, usize)> {
        g.iter().map(|g| (g.key, g.slot)).collect()
    }

    #[test]
    fn a_table_of_users_quotas_priorities_devices_and_submissions() {
        struct Case {
            name: &'static str,
            slots: Vec<Slot>,
            users: Vec<User>,
            jobs: Vec<Job<u32>>,
            want: Vec<(u32, usize)>,
        }
        let cases = vec![
            Case {
                name: "one user, no quota: queue order",
                slots: slots(&[G(0), G(1)], &[]),
                users: vec![user("a", None, 0)],
                jobs: vec![job(1, 0, 3), job(2, 0, 1), job(3, 0, 2)],
                want: vec![(2, 0), (3, 1)],
            },
            Case {
                name: "a quota caps a burst: team a holds 1 of 2, so it gets one more; b gets the rest",
                slots: slots(&[G(0), G(1), G(2), G(3)], &[0]),
                users: vec![user("a", Some(2), 1), user("b", Some(2), 0)],
                jobs: (0..10).map(|k| job(k, 0, k as i64)).chain([job(20, 1, 50), job(21, 1, 51)]).collect(),
                want: vec![(20, 1), (0, 2), (21, 3)],
            },
            Case {
                name: "fair share: the user holding the least relative to its quota goes first, whatever the FIFO",
                slots: slots(&[G(0), G(1), G(2), G(3)], &[0, 1, 2]),
                users: vec![user("a", Some(4), 2), user("b", Some(2), 0), user("c", Some(1), 1)],
                jobs: vec![job(1, 0, 1), job(2, 1, 2), job(3, 2, 0)],
                want: vec![(2, 3)],
            },
            Case {
                name: "equal shares: the more urgent job (priority, then FIFO) breaks the tie",
                slots: slots(&[G(0)], &[]),
                users: vec![user("a", Some(1), 0), user("b", Some(1), 0)],
                jobs: vec![job(1, 0, 1), Job { priority: 5, ..job(2, 1, 9) }],
                want: vec![(2, 0)],
            },
            Case {
                name: "a user's submission goes before its sessions, and counts against its quota",
                slots: slots(&[G(0), G(1)], &[]),
                users: vec![user("a", Some(1), 0), user("b", None, 1)],
                jobs: vec![job(1, 0, 1), Job { submission: true, ..job(2, 0, 9) }, job(3, 1, 5)],
                want: vec![(2, 0), (3, 1)],
            },
            Case {
                name: "CPU slots share by count; a GPU quota does not limit CPU jobs",
                slots: slots(&[G(0), C(0), C(1), C(2)], &[]),
                users: vec![
                    User { held_cpus: 1, ..user("a", Some(0), 0) },
                    User { held_cpus: 0, ..user("b", Some(0), 0) },
                ],
                jobs: vec![
                    Job { device: Device::Cpu, ..job(1, 0, 1) },
                    Job { device: Device::Cpu, ..job(2, 0, 2) },
                    Job { device: Device::Cpu, ..job(3, 1, 3) },
                    job(4, 1, 0),
                ],
                want: vec![(3, 1), (1, 2), (2, 3)],
            },
            Case {
                name: "a quota of 0 GPUs never runs on a GPU; nothing lost for the others",
                slots: slots(&[G(0), G(1)], &[]),
                users: vec![user("a", Some(0), 0), user("b", Some(1), 0)],
                jobs: vec![job(1, 0, 0), job(2, 1, 1), job(3, 1, 2)],
                want: vec![(2, 0)],
            },
        ];
        for c in cases {
            assert_eq!(grants(&assign(&c.slots, &c.jobs, &c.users)), c.want, "{}", c.name);
        }
    }

    /// Three users with a quota of 2 GPUs each and 30 queued sessions between them, on 4 GPUs, run to the end one
    /// finished session at a time: no user ever holds more than 2, and every user holds its turn (no one waits while
    /// another runs a third).
    #[test]
    fn quotas_hold_and_every_user_gets_its_turn_under_a_burst_of_30() {
        let all = slots(&[G(0), G(1), G(2), G(3)], &[]);
        let mut users: Vec<User> = ["a", "b", "c"].iter().map(|n| user(n, Some(2), 0)).collect();
        // user a queued 20 first, then b 6, then c 4
        let mut queued: Vec<Job<u32>> = (0..30)
            .map(|k| {
                job(
                    k,
                    if k < 20 {
                        0
                    } else if k < 26 {
                        1
                    } else {
                        2
                    },
                    k as i64,
                )
            })
            .collect();
        let mut running: Vec<(Job<u32>, usize)> = Vec::new();
        let mut first_start: [Option<usize>; 3] = [None; 3];
        let mut step = 0;
        while !(queued.is_empty() && running.is_empty()) {
            let mut view = all.clone();
            for (_, s) in &running {
                view[*s].busy = true;
            }
            for g in assign(&view, &queued, &users) {
                let at = queued.iter().position(|j| j.key == g.key).unwrap();
                let j = queued.remove(at);
                users[j.user].held_gpus += 1;
                first_start[j.user].get_or_insert(step);
                running.push((j, g.slot));
            }
            for u in &users {
                assert!(u.held_gpus <= 2, "{} holds {}", u.name, u.held_gpus);
            }
            if running.len() < 4 {
                // a free GPU with work queued: only because of the quotas
                assert!(queued.iter().all(|j| users[j.user].held_gpus >= 2), "a free GPU idles: {queued:?}");
            }
            // the oldest running session ends
            let (j, _) = running.remove(0);
            users[j.user].held_gpus -= 1;
            step += 1;
        }
        assert_eq!(first_start, [Some(0); 3], "b and c start at once beside a, which queued first");
        assert!(
            quota_reason(&User { held_gpus: 2, ..user("team07", Some(2), 0) }).as_deref()
                == Some("team07 holds 2 of its 2 GPUs")
        );
        assert_eq!(quota_reason(&user("team07", Some(2), 1)), None);
        assert_eq!(quota_reason(&user("team07", None, 9)), None);
    }

    /// With one user and no quota, fair share is the scheduler's queue order with the submissions ahead.
    #[test]
    fn one_user_without_a_quota_is_the_plain_queue() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for _ in 0..500 {
            let kinds: Vec<SlotKind> =
                (0..rng.random_range(1..6)).map(|i| if rng.random_bool(0.5) { G(i) } else { C(i) }).collect();
            let busy: Vec<usize> = (0..kinds.len()).filter(|_| rng.random_bool(0.3)).collect();
            let s = slots(&kinds, &busy);
            let jobs: Vec<Job<u32>> = (0..rng.random_range(0..8))
                .map(|k| Job {
                    key: k,
                    user: 0,
                    submission: false,
                    priority: rng.random_range(-1..2),
                    seq: rng.random_range(0..100),
                    device: if rng.random_bool(0.5) { Device::Gpu } else { Device::Cpu },
                })
                .collect();
            let waiting: Vec<Waiting<u32>> = jobs
                .iter()
                .map(|j| Waiting { key: j.key, priority: j.priority, seq: j.seq, device: j.device })
                .collect();
            let mut fair: Vec<(u32, usize)> = grants(&assign(&s, &jobs, &[user("local", None, 0)]));
            let mut plain: Vec<(u32, usize)> = queue::assign(&s, &waiting).iter().map(|a| (a.key, a.slot)).collect();
            // the same jobs on the same slots (ties in seq may pair differently: compare as sets of keys per device)
            fair.sort();
            plain.sort();
            let keys = |v: &[(u32, usize)]| v.iter().map(|p| p.0).collect::<Vec<_>>();
            assert_eq!(keys(&fair), keys(&plain), "{kinds:?} busy {busy:?} {jobs:?}");
        }
    }
}
