//! Plain-text tables for the CLI's listings, as NSML printed them (units are `core::format`'s, as on the dashboard).

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
    fn columns_align() {
        let t = render(&["Name", "Status"], &[vec!["local/emoji/1".into(), "running".into()]]);
        assert_eq!(t, "Name           Status\nlocal/emoji/1  running\n");
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
