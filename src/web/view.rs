//! What the dashboard shows, formatted: progress with an ETA and the spec fields that differ between sessions (times,
//! sizes and accuracies are `core::format`'s, shared with the CLI). Pure functions of their inputs.

use std::collections::BTreeMap;

use serde_json::Value;

pub use crate::core::format::{ago, bytes, datetime, datetime_utc, duration, number, percent};

/// A session's progress: epochs done of all, as a percentage, and the time left when it can be told.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub done: i64,
    pub total: i64,
    /// 0..=100.
    pub percent: u32,
    /// "ETA 4m 10s", or "" when unknown.
    pub eta: String,
}

/// Progress of a session that asks for `total` epochs, has finished `done` (None before the first), and runs since
/// `started_at` with `first_epoch` the first epoch of this run (after a resume, epochs before it took no time now).
pub fn progress(done: Option<i64>, total: i64, running_since: Option<f64>, first_epoch: i64, now: f64) -> Progress {
    if total <= 0 {
        // A code session: how many epochs its code trains is its own business.
        return Progress { done: done.unwrap_or(0).max(0), total: 0, percent: 0, eta: String::new() };
    }
    let d = done.unwrap_or(0).clamp(0, total.max(0));
    let percent = if total > 0 { ((d * 100) / total) as u32 } else { 0 };
    let eta = match running_since {
        Some(start) if d >= first_epoch && d < total => {
            let epochs_this_run = (d - first_epoch + 1) as f64;
            let per_epoch = (now - start).max(0.0) / epochs_this_run;
            format!("ETA {}", duration(per_epoch * (total - d) as f64))
        }
        _ => String::new(),
    };
    Progress { done: d, total, percent, eta }
}

/// The live summary the session page shows (also sent as the SSE `state` event).
pub fn progress_text(p: &Progress) -> String {
    let mut s = match p.total {
        0 => format!("epoch {}", p.done),
        total => format!("epoch {} of {total}", p.done),
    };
    if !p.eta.is_empty() {
        s.push_str(" · ");
        s.push_str(&p.eta);
    }
    s
}

/// What a session's "Exit" says: why it ended or, for a session that finished every epoch and has no other word, that
/// it did; nothing while it is queued or running.
pub fn exit_text(state: crate::core::session::SessionState, reason: Option<&str>) -> String {
    let reason = reason.map(str::trim).unwrap_or("");
    match state {
        crate::core::session::SessionState::Succeeded if reason.is_empty() => {
            "succeeded: every epoch trained (exit code 0)".to_string()
        }
        _ => reason.to_string(),
    }
}

/// Flattens a JSON object to dotted paths and short display values (`optimizer.lr` -> `0.002`).
pub fn flatten(value: &Value) -> BTreeMap<String, String> {
    fn walk(prefix: &str, v: &Value, out: &mut BTreeMap<String, String>) {
        match v {
            Value::Object(map) if !map.is_empty() => {
                for (k, v) in map {
                    let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                    walk(&key, v, out);
                }
            }
            Value::String(s) => {
                out.insert(prefix.to_string(), s.clone());
            }
            other => {
                out.insert(prefix.to_string(), other.to_string());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk("", value, &mut out);
    out
}

/// The fields whose values are not all equal across `specs` (a field missing from one counts as different), each
/// with one value per spec ("" where missing). Fields that always differ and say nothing (`session`) are skipped.
pub fn differing(specs: &[BTreeMap<String, String>]) -> Vec<(String, Vec<String>)> {
    let mut keys: Vec<&String> = specs.iter().flat_map(|s| s.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| !matches!(k.as_str(), "session" | "dataset_path"))
        .filter_map(|k| {
            let values: Vec<String> = specs.iter().map(|s| s.get(k).cloned().unwrap_or_default()).collect();
            let same = values.windows(2).all(|w| w[0] == w[1]) && specs.iter().all(|s| s.contains_key(k));
            (!same).then(|| (k.clone(), values))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_and_eta() {
        // 3 of 10 epochs in 30 s: 10 s per epoch, 70 s left.
        let p = progress(Some(3), 10, Some(0.0), 1, 30.0);
        assert_eq!((p.done, p.total, p.percent, p.eta.as_str()), (3, 10, 30, "ETA 1m 10s"));
        assert_eq!(progress(None, 10, Some(0.0), 1, 5.0).eta, "", "no epoch ended yet: no estimate");
        assert_eq!(progress(Some(10), 10, Some(0.0), 1, 5.0).percent, 100);
        assert_eq!(progress(Some(3), 10, None, 1, 5.0).eta, "", "not running: no estimate");
        // Resumed at epoch 6: two epochs (6, 7) in 20 s.
        assert_eq!(progress(Some(7), 10, Some(0.0), 6, 20.0).eta, "ETA 30s");
        assert_eq!(progress(Some(99), 10, None, 1, 0.0).done, 10);
    }

    #[test]
    fn a_succeeded_session_says_so_where_others_say_why() {
        use crate::core::session::SessionState;
        assert_eq!(exit_text(SessionState::Succeeded, None), "succeeded: every epoch trained (exit code 0)");
        assert_eq!(exit_text(SessionState::Failed, Some("CUDA out of memory")), "CUDA out of memory");
        assert_eq!(exit_text(SessionState::Running, None), "");
    }

    #[test]
    fn spec_differences() {
        let a = flatten(
            &serde_json::json!({"model": "resnet18", "optimizer": {"lr": 0.002, "name": "adamw"}, "epochs": 3, "session": "a"}),
        );
        let b = flatten(
            &serde_json::json!({"model": "resnet34", "optimizer": {"lr": 0.002, "name": "adamw"}, "epochs": 3, "session": "b", "seed": 1}),
        );
        assert_eq!(a.get("optimizer.lr").map(String::as_str), Some("0.002"));
        let d = differing(&[a, b]);
        assert_eq!(
            d,
            vec![
                ("model".to_string(), vec!["resnet18".to_string(), "resnet34".to_string()]),
                ("seed".to_string(), vec![String::new(), "1".to_string()]),
            ]
        );
    }
}
