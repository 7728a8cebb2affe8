//! What the dashboard shows, formatted: times ("5 min ago"), durations, sizes, accuracies, progress with an ETA, and
//! the spec fields that differ between sessions. Pure functions of their inputs (the clock is passed in).

use std::collections::BTreeMap;

use serde_json::Value;

/// "12 s ago", "5 min ago", "3 h ago", "2 d ago"; "" for no time.
pub fn ago(now: f64, t: Option<f64>) -> String {
    let Some(t) = t else { return String::new() };
    let s = (now - t).max(0.0);
    if s < 60.0 {
        format!("{} s ago", s as u64)
    } else if s < 3600.0 {
        format!("{} min ago", (s / 60.0) as u64)
    } else if s < 86_400.0 {
        format!("{} h ago", (s / 3600.0) as u64)
    } else {
        format!("{} d ago", (s / 86_400.0) as u64)
    }
}

/// "45s", "4m 10s", "1h 02m", "3d 4h".
pub fn duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return String::new();
    }
    let s = secs.round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// UTC date and time, "2025-11-30 14:02:07".
pub fn datetime(t: f64) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    time::OffsetDateTime::from_unix_timestamp(t as i64).ok().and_then(|d| d.format(&fmt).ok()).unwrap_or_default()
}

/// "512 B", "43.1 kB", "97.8 MB", "1.2 GB" (decimal units, as `ls -h --si` and NSML printed).
pub fn bytes(n: i64) -> String {
    let n = n.max(0) as f64;
    if n < 1000.0 {
        return format!("{n} B");
    }
    let units = ["kB", "MB", "GB", "TB"];
    let mut v = n / 1000.0;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < units.len() {
        v /= 1000.0;
        i += 1;
    }
    format!("{v:.1} {}", units[i])
}

/// "87.34%" for an accuracy in 0..1; "" for none.
pub fn percent(acc: Option<f64>) -> String {
    match acc {
        Some(a) if a.is_finite() => format!("{:.2}%", a * 100.0),
        _ => String::new(),
    }
}

/// A number for a table cell: 4 significant decimals at most.
pub fn number(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    let s = format!("{v:.4}");
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s }
}

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
    fn times_and_sizes_read_naturally() {
        assert_eq!(ago(1000.0, Some(990.0)), "10 s ago");
        assert_eq!(ago(10_000.0, Some(9_700.0)), "5 min ago");
        assert_eq!(ago(100_000.0, Some(100_000.0 - 7300.0)), "2 h ago");
        assert_eq!(ago(1.0, None), "");
        assert_eq!(duration(45.0), "45s");
        assert_eq!(duration(250.0), "4m 10s");
        assert_eq!(duration(3720.0), "1h 02m");
        assert_eq!(duration(90_000.0), "1d 1h");
        assert_eq!(datetime(0.0), "1970-01-01 00:00:00");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(43_100), "43.1 kB");
        assert_eq!(bytes(97_800_000), "97.8 MB");
        assert_eq!(percent(Some(0.87346)), "87.35%");
        assert_eq!(percent(None), "");
        assert_eq!(number(0.25), "0.25");
        assert_eq!(number(1.0 / 3.0), "0.3333");
        assert_eq!(number(2.0), "2");
    }

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
