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

/// `45s`, `3m 07s`, `2h 05m`: the dashboard's units, so the two never disagree.
pub fn duration(secs: f64) -> String {
    crate::web::view::duration(secs)
}

/// `812 B`, `1.2 kB`, `44.7 MB`: the dashboard's units.
pub fn bytes(n: i64) -> String {
    crate::web::view::bytes(n)
}

/// Free text (a memo) as one table cell: line breaks and other control characters become spaces, runs of spaces
/// one, and at most `max` characters, the cut marked with `…`.
pub fn one_line(text: &str, max: usize) -> String {
    let words: Vec<&str> =
        text.split(|c: char| c.is_whitespace() || c.is_control()).filter(|w| !w.is_empty()).collect();
    let line = words.join(" ");
    if line.chars().count() <= max {
        return line;
    }
    let mut cut: String = line.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
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
        assert_eq!(duration(4.87), "5s");
    }

    #[test]
    fn a_memo_is_one_line_of_bounded_width() {
        assert_eq!(one_line("lr 1e-3\nsecond line\t\tx", 40), "lr 1e-3 second line x");
        assert_eq!(one_line("abcdefgh", 5), "abcd…");
        assert_eq!(one_line("abcde", 5), "abcde");
        assert_eq!(one_line("", 5), "");
        let t = render(&["Name", "Args"], &[vec!["a".into(), one_line("x\ny", 10)]]);
        assert_eq!(t.lines().count(), 2, "{t}");
    }
}
