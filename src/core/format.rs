//! Numbers for people, the same in the CLI, the dashboard and the logs: times ("5 min ago", UTC date-times), durations,
//! sizes, accuracies, table numbers, and a panic's message. Pure functions of their inputs (the clock is passed in).

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

/// UTC date and time with its zone, "2025-11-30 14:02:07 UTC": what the dashboard shows, so no reader takes it for
/// their local time.
pub fn datetime_utc(t: f64) -> String {
    let text = datetime(t);
    if text.is_empty() { text } else { format!("{text} UTC") }
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

/// A count with its thousands grouped: "412,000".
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A number for a table cell: 4 significant decimals at most.
pub fn number(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    let s = format!("{v:.4}");
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s }
}

/// The message a panic carried (`panic!("...")` gives a `&str` or a `String`), for a log line or a failure reason.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
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
        assert_eq!(datetime_utc(0.0), "1970-01-01 00:00:00 UTC");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(43_100), "43.1 kB");
        assert_eq!(bytes(97_800_000), "97.8 MB");
        assert_eq!(percent(Some(0.87346)), "87.35%");
        assert_eq!(percent(None), "");
        assert_eq!(number(0.25), "0.25");
        assert_eq!(number(1.0 / 3.0), "0.3333");
        assert_eq!(number(2.0), "2");
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(412_000), "412,000");
        assert_eq!(count(1_234_567), "1,234,567");
    }

    #[test]
    fn panics_say_what_they_carried() {
        let caught = std::panic::catch_unwind(|| panic!("tick {}", 3)).unwrap_err();
        assert_eq!(panic_message(caught.as_ref()), "tick 3");
        let caught = std::panic::catch_unwind(|| panic!("plain")).unwrap_err();
        assert_eq!(panic_message(caught.as_ref()), "plain");
        let caught = std::panic::catch_unwind(|| std::panic::panic_any(7u8)).unwrap_err();
        assert_eq!(panic_message(caught.as_ref()), "unknown panic");
    }
}
