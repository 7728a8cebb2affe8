//! Reading the lines another process appends to a file, from a byte offset: the one reader behind the Slurm follower
//! (`events.jsonl` and the job's log), the log API (`rush logs -f`), the dashboard's live log and the session page's
//! last lines.
//!
//! [`read_lines`] takes a byte offset and gives back the lines found after it, each with the offset just past it, and
//! the offset to read from next. The offset is all the state there is: keep it (with the rows the lines became) and a
//! restarted reader carries on where it stopped, neither losing nor repeating a line.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TailError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} is {len} bytes, shorter than the {offset} already read: it was truncated or replaced")]
    Truncated { path: PathBuf, len: u64, offset: u64 },
    #[error("{path}: a line at byte {offset} is longer than {max} bytes")]
    LineTooLong { path: PathBuf, offset: u64, max: u64 },
}

/// One line and where the next one starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The line without its line break (`\n` or `\r\n`; invalid UTF-8 replaced).
    pub text: String,
    /// The byte offset just past this line: where to resume after handling it.
    pub end: u64,
    /// Whether the line ended with its `\n`. A line is incomplete when it is the file's unterminated last line (asked
    /// for with `partial`) or the first piece of a line longer than a read.
    pub complete: bool,
}

/// What one read found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Lines {
    pub lines: Vec<Line>,
    /// Where the next read starts: just past the last line returned.
    pub next: u64,
}

/// The lines of `path` after byte `offset`, reading at most `max` bytes. Complete lines always; with `partial`, an
/// unterminated last line too (for when the writer has ended, or a reader that shows what is there). A line longer
/// than `max` comes back in pieces of `max` bytes, so a reader never stalls on it. A file that does not exist yet has
/// no lines; one shorter than `offset` was truncated or replaced, which only the caller can judge.
pub fn read_lines(path: &Path, offset: u64, max: u64, partial: bool) -> Result<Lines, TailError> {
    let io = |source| TailError::Io { path: path.to_path_buf(), source };
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Lines { lines: Vec::new(), next: offset }),
        Err(e) => return Err(io(e)),
    };
    let len = file.metadata().map_err(io)?.len();
    if len < offset {
        return Err(TailError::Truncated { path: path.to_path_buf(), len, offset });
    }
    if len == offset {
        return Ok(Lines { lines: Vec::new(), next: offset });
    }
    file.seek(SeekFrom::Start(offset)).map_err(io)?;
    let mut buf = Vec::new();
    file.take(max.max(1)).read_to_end(&mut buf).map_err(io)?;
    let whole_file_read = offset + buf.len() as u64 >= len;
    let (mut lines, mut used) = split_lines(&buf, offset, partial && whole_file_read);
    if used == 0 && buf.len() as u64 >= max {
        // One line longer than a read: hand over this piece.
        let text = String::from_utf8_lossy(&buf).into_owned();
        lines.push(Line { text, end: offset + buf.len() as u64, complete: false });
        used = buf.len() as u64;
    }
    Ok(Lines { lines, next: offset + used })
}

/// The last `n` lines of `path`, read from at most its last `window` bytes, and the file's length (where a reader
/// that goes on from here starts). A window that starts inside a line drops that partial line.
pub fn last_lines(path: &Path, n: usize, window: u64) -> Result<(Vec<String>, u64), TailError> {
    let len = match std::fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(source) => return Err(TailError::Io { path: path.to_path_buf(), source }),
    };
    let start = len.saturating_sub(window);
    let read = read_lines(path, start, len - start, true)?;
    let mut lines = read.lines.into_iter();
    if start > 0 {
        lines.next();
    }
    let all: Vec<String> = lines.map(|l| l.text).collect();
    let keep = all.len().saturating_sub(n);
    Ok((all.into_iter().skip(keep).collect(), read.next))
}

/// Splits `buf` (read from byte `start`) into lines; with `take_tail`, a last line without a newline too. Returns the
/// lines and how many bytes they used up.
fn split_lines(buf: &[u8], start: u64, take_tail: bool) -> (Vec<Line>, u64) {
    let mut lines = Vec::new();
    let mut pos = 0usize;
    while pos < buf.len() {
        let (end, complete) = match buf[pos..].iter().position(|&b| b == b'\n') {
            Some(i) => (pos + i + 1, true),
            None if take_tail => (buf.len(), false),
            None => break,
        };
        let text = String::from_utf8_lossy(&buf[pos..end]);
        let text = text.strip_suffix('\n').unwrap_or(&text);
        let text = text.strip_suffix('\r').unwrap_or(text);
        lines.push(Line { text: text.to_string(), end: start + end as u64, complete });
        pos = end;
    }
    (lines, pos as u64)
}

/// Follows a file a child appends lines to (its `events.jsonl`, its log) for an executor whose children are not the
/// daemon's own processes (a Slurm batch job on another node): each poll returns the non-blank lines appended since
/// the last, an unfinished last line staying for the next poll (the child may be writing it).
#[derive(Debug, Clone)]
pub struct LineFollower {
    path: PathBuf,
    offset: u64,
}

impl LineFollower {
    /// The most one poll reads; the rest waits for the next poll.
    pub const MAX_READ: u64 = 8 << 20;

    /// Follows `path` from `offset` (0 for a new file, or a stored offset after a restart).
    pub fn new(path: impl Into<PathBuf>, offset: u64) -> Self {
        Self { path: path.into(), offset }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the next poll starts: just past the last line returned.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The complete lines appended since the last poll. A file that does not exist yet has no lines.
    pub fn poll(&mut self) -> Result<Vec<Line>, TailError> {
        self.read(false)
    }

    /// Like [`LineFollower::poll`], but an unfinished last line counts too: for when the writer has ended.
    pub fn drain(&mut self) -> Result<Vec<Line>, TailError> {
        let mut all = Vec::new();
        loop {
            let before = self.offset;
            all.extend(self.read(true)?);
            if self.offset == before {
                return Ok(all);
            }
        }
    }

    fn read(&mut self, take_tail: bool) -> Result<Vec<Line>, TailError> {
        let read = read_lines(&self.path, self.offset, Self::MAX_READ, take_tail)?;
        if read.lines.iter().any(|l| !l.complete && !take_tail) {
            // An event line never gets that long: the file is not what it should be.
            return Err(TailError::LineTooLong { path: self.path.clone(), offset: self.offset, max: Self::MAX_READ });
        }
        self.offset = read.next;
        Ok(read.lines.into_iter().filter(|l| !l.text.trim().is_empty()).collect())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn append(path: &Path, text: &str) {
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    fn line(text: &str, end: u64) -> Line {
        Line { text: text.into(), end, complete: true }
    }

    #[test]
    fn lines_split_with_offsets_and_hold_back_a_partial_tail() {
        let (lines, used) = split_lines(b"a\n\nbc\r\nde", 10, false);
        assert_eq!(lines, vec![line("a", 12), line("", 13), line("bc", 17)]);
        assert_eq!(used, 7);
        let (lines, used) = split_lines(b"a\n\nbc\r\nde", 10, true);
        assert_eq!(lines.last(), Some(&Line { text: "de".into(), end: 19, complete: false }));
        assert_eq!(used, 9);
        assert_eq!(split_lines(b"", 0, true), (vec![], 0));
    }

    #[test]
    fn reads_from_an_offset_and_returns_where_to_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train.log");
        assert_eq!(read_lines(&path, 0, 100, true).unwrap(), Lines::default(), "no file yet: no lines");
        append(&path, "one\ntwo\nthr");
        let read = read_lines(&path, 0, 100, false).unwrap();
        assert_eq!(read.lines, vec![line("one", 4), line("two", 8)]);
        assert_eq!(read.next, 8);
        assert!(read_lines(&path, 8, 100, false).unwrap().lines.is_empty(), "a partial line waits");
        let shown = read_lines(&path, 8, 100, true).unwrap();
        assert_eq!(shown.lines, vec![Line { text: "thr".into(), end: 11, complete: false }]);
        append(&path, "ee\n");
        assert_eq!(read_lines(&path, 8, 100, false).unwrap().lines, vec![line("three", 14)]);
        // A read that stops before the end of the file never takes its cut-off last line as the file's tail.
        let read = read_lines(&path, 0, 6, true).unwrap();
        assert_eq!((read.lines, read.next), (vec![line("one", 4)], 4));
        assert!(matches!(read_lines(&path, 100, 10, true), Err(TailError::Truncated { len: 14, offset: 100, .. })));
    }

    #[test]
    fn a_line_longer_than_a_read_comes_in_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        append(&path, "abcdefgh\nxy\n");
        let first = read_lines(&path, 0, 5, false).unwrap();
        assert_eq!(first.lines, vec![Line { text: "abcde".into(), end: 5, complete: false }]);
        let rest = read_lines(&path, first.next, 5, false).unwrap();
        assert_eq!(rest.lines, vec![line("fgh", 9)]);
        let mut follower = LineFollower { path: path.clone(), offset: 0 };
        follower.poll().unwrap();
        assert_eq!(follower.offset(), 12);
    }

    #[test]
    fn the_last_lines_of_a_file_skip_a_partial_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        assert_eq!(last_lines(&path, 3, 100).unwrap(), (vec![], 0));
        append(&path, "first line\nsecond\nthird\nfourth");
        let (lines, len) = last_lines(&path, 2, 1000).unwrap();
        assert_eq!((lines, len), (vec!["third".to_string(), "fourth".to_string()], 30));
        // A 12-byte window starts inside "third": only whole lines are shown.
        assert_eq!(last_lines(&path, 10, 12).unwrap().0, vec!["fourth".to_string()]);
        assert_eq!(last_lines(&path, 10, 1000).unwrap().0.len(), 4);
    }

    #[test]
    fn follows_a_growing_file_and_resumes_from_a_kept_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let mut f = LineFollower::new(&path, 0);
        assert!(f.poll().unwrap().is_empty(), "no file yet: no lines");
        append(&path, "{\"a\":1}\n\n{\"b\"");
        assert_eq!(f.poll().unwrap(), vec![line("{\"a\":1}", 8)], "blank lines are skipped, the partial line waits");
        assert_eq!(f.offset(), 9);
        // A new follower from the kept offset sees the rest once it is written.
        append(&path, ":2}\n{\"c\":3}");
        let mut again = LineFollower::new(&path, f.offset());
        assert_eq!(again.poll().unwrap(), vec![line("{\"b\":2}", 17)]);
        assert!(again.poll().unwrap().is_empty());
        // An unterminated last line counts once the writer has ended.
        assert_eq!(again.drain().unwrap(), vec![Line { text: "{\"c\":3}".into(), end: 24, complete: false }]);
        assert!(again.drain().unwrap().is_empty());
        let mut f = LineFollower::new(&path, 100);
        assert!(matches!(f.poll(), Err(TailError::Truncated { len: 24, offset: 100, .. })));
    }
}
