//! Plain-text tables and human units for the CLI's listings, as NSML printed them.

/// Left-aligned columns, two spaces apart, header first.
pub fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        padded.join("  ").trim_end().to_string()
    };
    let mut out = line(header.to_vec());
    out.push('\n');
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

/// `12s ago`, `5m ago`, `3h ago`, `2d ago`.
pub fn ago(then: f64, now: f64) -> String {
    let s = (now - then).max(0.0);
    match s {
        s if s < 60.0 => format!("{}s ago", s as u64),
        s if s < 3600.0 => format!("{}m ago", (s / 60.0) as u64),
        s if s < 86400.0 => format!("{}h ago", (s / 3600.0) as u64),
        s => format!("{}d ago", (s / 86400.0) as u64),
    }
}

/// `45s`, `3m 07s`, `2h 05m`.
pub fn duration(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    match s {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {:02}s", s / 60, s % 60),
        s => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// `812 B`, `1.2 KB`, `44.7 MB`.
pub fn bytes(n: i64) -> String {
    let n = n.max(0) as f64;
    match n {
        n if n < 1e3 => format!("{n} B"),
        n if n < 1e6 => format!("{:.1} KB", n / 1e3),
        n if n < 1e9 => format!("{:.1} MB", n / 1e6),
        n => format!("{:.2} GB", n / 1e9),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_units_read_well() {
        let t = render(&["Name", "Status"], &[vec!["local/emoji/1".into(), "running".into()]]);
        assert_eq!(t, "Name           Status\nlocal/emoji/1  running\n");
        assert_eq!(ago(0.0, 30.0), "30s ago");
        assert_eq!(ago(0.0, 7200.0), "2h ago");
        assert_eq!(duration(187.0), "3m 07s");
        assert_eq!(bytes(1_234_567), "1.2 MB");
        assert_eq!(bytes(12), "12 B");
    }
}
