//! The scheduler's decisions, pure: which queued session takes which free slot, queue positions, and which sessions
//! can never run here (a GPU asked of a daemon without one).
//!
//! Order is priority (higher first), then FIFO by the order sessions were queued. A session that needs a GPU only ever
//! takes a GPU slot; a CPU session only a CPU slot. Kinds do not block each other: a GPU session waiting for a busy GPU
//! does not hold back a CPU session behind it, but within a kind the order is strict.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What a worker slot runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "id")]
pub enum SlotKind {
    /// One GPU, by its CUDA index (`CUDA_VISIBLE_DEVICES` for the child).
    Gpu(u32),
    /// One CPU worker.
    Cpu(u32),
}

impl SlotKind {
    pub fn device(self) -> Device {
        match self {
            SlotKind::Gpu(_) => Device::Gpu,
            SlotKind::Cpu(_) => Device::Cpu,
        }
    }
}

impl fmt::Display for SlotKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SlotKind::Gpu(i) => write!(f, "gpu{i}"),
            SlotKind::Cpu(i) => write!(f, "cpu{i}"),
        }
    }
}

/// What a session runs on, decided when it is queued (`resources.gpus: auto` resolved against the daemon's slots).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Device {
    Gpu,
    Cpu,
}

impl Device {
    pub fn as_str(self) -> &'static str {
        match self {
            Device::Gpu => "gpu",
            Device::Cpu => "cpu",
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "gpu" => Ok(Device::Gpu),
            "cpu" => Ok(Device::Cpu),
            _ => Err(format!("unknown device {s:?} (expected gpu or cpu)")),
        }
    }
}

/// A worker slot as the scheduler sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub kind: SlotKind,
    pub busy: bool,
}

/// A queued session as the scheduler sees it. `key` is the caller's handle (an index or a row id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waiting<K> {
    pub key: K,
    pub priority: i32,
    /// Queue order: lower was queued earlier.
    pub seq: i64,
    pub device: Device,
}

/// `waiting[session]` goes to `slots[slot]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assignment<K> {
    pub key: K,
    pub slot: usize,
}

/// Sorts the queue: priority descending, then FIFO.
pub fn order<K: Copy>(waiting: &[Waiting<K>]) -> Vec<Waiting<K>> {
    let mut sorted = waiting.to_vec();
    sorted.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.seq.cmp(&b.seq)));
    sorted
}

/// Assigns free slots to queued sessions, in queue order; never more sessions than free slots of their kind.
/// Sessions that cannot run here at all ([`refusal`]) are skipped: the caller fails them.
pub fn assign<K: Copy>(slots: &[Slot], waiting: &[Waiting<K>]) -> Vec<Assignment<K>> {
    let mut free: Vec<bool> = slots.iter().map(|s| !s.busy).collect();
    let mut out = Vec::new();
    for w in order(waiting) {
        let found = slots.iter().enumerate().find(|(i, s)| free[*i] && s.kind.device() == w.device).map(|(i, _)| i);
        if let Some(i) = found {
            free[i] = false;
            out.push(Assignment { key: w.key, slot: i });
        }
    }
    out
}

/// 1-based positions in the queue, in queue order (the first to run is 1).
pub fn positions<K: Copy>(waiting: &[Waiting<K>]) -> Vec<(K, usize)> {
    order(waiting).into_iter().enumerate().map(|(i, w)| (w.key, i + 1)).collect()
}

/// [`positions`] with `ahead` jobs before every session (a submission waiting for a slot takes the next free one), so
/// no session is called next while one of them is.
pub fn positions_after<K: Copy>(waiting: &[Waiting<K>], ahead: usize) -> Vec<(K, usize)> {
    positions(waiting).into_iter().map(|(k, p)| (k, p + ahead)).collect()
}

/// Why a session can never run on this daemon's slots, if it cannot: a GPU session with no GPU slot, or a CPU session
/// with no CPU slot.
pub fn refusal(device: Device, slots: &[Slot]) -> Option<String> {
    if slots.iter().any(|s| s.kind.device() == device) {
        return None;
    }
    Some(match device {
        Device::Gpu => "needs a GPU (resources.gpus: 1) but this daemon has no GPU slot; \
                       use `resources: {gpus: auto}` or `0` to train on the CPU"
            .to_string(),
        Device::Cpu => "needs the CPU (resources.gpus: 0) but this daemon has no CPU slot; \
                       start it with --cpu-slots N or use `resources: {gpus: auto}`"
            .to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(kinds: &[SlotKind]) -> Vec<Slot> {
        kinds.iter().map(|&kind| Slot { kind, busy: false }).collect()
    }

    fn w(key: u32, priority: i32, seq: i64, device: Device) -> Waiting<u32> {
        Waiting { key, priority, seq, device }
    }

    #[test]
    fn fifo_within_priority_and_priority_first() {
        let q = [w(1, 0, 1, Device::Cpu), w(2, 5, 2, Device::Cpu), w(3, 0, 0, Device::Cpu), w(4, 5, 3, Device::Cpu)];
        let keys: Vec<u32> = order(&q).iter().map(|w| w.key).collect();
        assert_eq!(keys, vec![2, 4, 3, 1]);
        assert_eq!(positions(&q), vec![(2, 1), (4, 2), (3, 3), (1, 4)]);
        // A submission waiting for a slot comes first: no session is next meanwhile.
        assert_eq!(positions_after(&q, 1), vec![(2, 2), (4, 3), (3, 4), (1, 5)]);
    }

    #[test]
    fn one_session_per_gpu_slot_never_more_than_slots() {
        let s = slots(&[SlotKind::Gpu(0), SlotKind::Gpu(1), SlotKind::Gpu(2)]);
        let q: Vec<_> = (0..5).map(|i| w(i, 0, i as i64, Device::Gpu)).collect();
        let a = assign(&s, &q);
        assert_eq!(
            a,
            vec![Assignment { key: 0, slot: 0 }, Assignment { key: 1, slot: 1 }, Assignment { key: 2, slot: 2 }]
        );
    }

    #[test]
    fn busy_slots_are_skipped() {
        let mut s = slots(&[SlotKind::Gpu(0), SlotKind::Gpu(1), SlotKind::Gpu(2), SlotKind::Gpu(3)]);
        s[0].busy = true;
        s[2].busy = true;
        let q = [w(7, 0, 2, Device::Gpu), w(8, 1, 9, Device::Gpu), w(9, 0, 3, Device::Gpu)];
        let a = assign(&s, &q);
        // priority 1 first, then FIFO; only the two free GPUs (1 and 3) are used.
        assert_eq!(a, vec![Assignment { key: 8, slot: 1 }, Assignment { key: 7, slot: 3 }]);
        s[1].busy = true;
        s[3].busy = true;
        assert!(assign(&s, &q).is_empty());
    }

    #[test]
    fn gpu_sessions_never_take_cpu_slots_and_kinds_do_not_block_each_other() {
        let mut s = slots(&[SlotKind::Gpu(0), SlotKind::Gpu(1), SlotKind::Cpu(0)]);
        s[0].busy = true;
        s[1].busy = true;
        let q = [w(1, 9, 0, Device::Gpu), w(2, 0, 1, Device::Cpu), w(3, 0, 2, Device::Cpu)];
        // The GPU session waits (both GPUs busy) and does not run on the free CPU slot; the first CPU session runs.
        assert_eq!(assign(&s, &q), vec![Assignment { key: 2, slot: 2 }]);
        s[1].busy = false;
        assert_eq!(assign(&s, &q), vec![Assignment { key: 1, slot: 1 }, Assignment { key: 2, slot: 2 }]);
    }

    #[test]
    fn gpu_ids_need_not_be_contiguous() {
        let s = slots(&[SlotKind::Gpu(3), SlotKind::Gpu(5)]);
        let a = assign(&s, &[w(1, 0, 0, Device::Gpu), w(2, 0, 1, Device::Gpu)]);
        assert_eq!(s[a[0].slot].kind, SlotKind::Gpu(3));
        assert_eq!(s[a[1].slot].kind, SlotKind::Gpu(5));
        assert_eq!(s[a[1].slot].kind.to_string(), "gpu5");
    }

    #[test]
    fn auto_resolves_against_the_daemon_and_gpu_without_gpus_is_refused() {
        use crate::core::spec::Gpus;
        assert_eq!(Gpus::Auto.device(true), Device::Gpu);
        assert_eq!(Gpus::Auto.device(false), Device::Cpu);
        assert_eq!(Gpus::Count(0).device(true), Device::Cpu);
        assert_eq!(Gpus::Count(1).device(false), Device::Gpu);
        let cpu_only = slots(&[SlotKind::Cpu(0), SlotKind::Cpu(1)]);
        let msg = refusal(Device::Gpu, &cpu_only).unwrap();
        assert!(msg.contains("needs a GPU") && msg.contains("no GPU slot"), "{msg}");
        assert_eq!(refusal(Device::Cpu, &cpu_only), None);
        assert!(assign(&cpu_only, &[w(1, 0, 0, Device::Gpu)]).is_empty());
        let gpu_only = slots(&[SlotKind::Gpu(0)]);
        assert!(refusal(Device::Cpu, &gpu_only).unwrap().contains("--cpu-slots"));
    }
}
