//! Follows a file that a training child appends lines to — its `events.jsonl`, its log — from a byte offset, for
//! executors whose children are not the daemon's own processes (a Slurm batch job on another node).
//!
//! Each poll returns the complete lines appended since the offset, each with the offset just past it; an unfinished
//! last line stays for the next poll (the child may be writing it). The offset is all the state there is: keep it
//! (with the rows the lines became, or in an [`OffsetFile`]) and a restarted daemon carries on where it stopped,
//! neither losing nor repeating a line.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::core::event::{EventLine, EventParseError};

/// The most one poll reads; the rest waits for the next poll.
const MAX_READ: u64 = 8 << 20;

#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} is {len} bytes, shorter than the {offset} already read: it was truncated or replaced")]
    Truncated { path: PathBuf, len: u64, offset: u64 },
    #[error("{path}: a line at byte {offset} is longer than {MAX_READ} bytes")]
    LineTooLong { path: PathBuf, offset: u64 },
    #[error("offset file {path}: {content:?} is not a byte offset")]
    BadOffset { path: PathBuf, content: String },
}

/// One complete line and where the next one starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowedLine {
    /// The line without its newline (invalid UTF-8 replaced).
    pub text: String,
    /// The byte offset just past this line's newline: where to resume after handling it.
    pub end: u64,
}

/// Reads the lines appended to one file.
#[derive(Debug, Clone)]
pub struct LineFollower {
    path: PathBuf,
    offset: u64,
}

impl LineFollower {
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
    pub fn poll(&mut self) -> Result<Vec<FollowedLine>, FollowError> {
        self.read(false)
    }

    /// Like [`LineFollower::poll`], but an unfinished last line counts too: for when the writer has ended.
    pub fn drain(&mut self) -> Result<Vec<FollowedLine>, FollowError> {
        let mut all = Vec::new();
        loop {
            let lines = self.read(true)?;
            if lines.is_empty() {
                return Ok(all);
            }
            all.extend(lines);
        }
    }

    fn read(&mut self, take_tail: bool) -> Result<Vec<FollowedLine>, FollowError> {
        let io = |source| FollowError::Io { path: self.path.clone(), source };
        let mut file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(e)),
        };
        let len = file.metadata().map_err(io)?.len();
        if len < self.offset {
            return Err(FollowError::Truncated { path: self.path.clone(), len, offset: self.offset });
        }
        if len == self.offset {
            return Ok(Vec::new());
        }
        file.seek(SeekFrom::Start(self.offset)).map_err(io)?;
        let mut buf = Vec::new();
        file.take(MAX_READ).read_to_end(&mut buf).map_err(io)?;
        let (lines, consumed) = split_lines(&buf, self.offset, take_tail);
        if consumed == 0 && buf.len() as u64 >= MAX_READ {
            return Err(FollowError::LineTooLong { path: self.path.clone(), offset: self.offset });
        }
        self.offset += consumed;
        Ok(lines)
    }
}

/// Splits `buf` (read from byte `start`) into complete lines; with `take_tail`, a last line without a newline too.
/// Returns the lines (blank ones skipped) and how many bytes they used up.
fn split_lines(buf: &[u8], start: u64, take_tail: bool) -> (Vec<FollowedLine>, u64) {
    let mut lines = Vec::new();
    let mut pos = 0usize;
    while pos < buf.len() {
        let end = match buf[pos..].iter().position(|&b| b == b'\n') {
            Some(i) => pos + i + 1,
            None if take_tail => buf.len(),
            None => break,
        };
        let text = String::from_utf8_lossy(&buf[pos..end]);
        let text = text.trim_end_matches(['\n', '\r']);
        if !text.trim().is_empty() {
            lines.push(FollowedLine { text: text.to_string(), end: start + end as u64 });
        }
        pos = end;
    }
    (lines, pos as u64)
}

/// One line of `events.jsonl`, parsed.
#[derive(Debug, PartialEq)]
pub struct FollowedEvent {
    /// The event, or why the line is not one (a protocol error to report, never a crash).
    pub event: Result<EventLine, EventParseError>,
    /// The line as the child wrote it.
    pub raw: String,
    /// The byte offset just past this line.
    pub end: u64,
}

/// Follows a session's `events.jsonl`.
#[derive(Debug, Clone)]
pub struct EventFollower {
    lines: LineFollower,
}

impl EventFollower {
    pub fn new(path: impl Into<PathBuf>, offset: u64) -> Self {
        Self { lines: LineFollower::new(path, offset) }
    }

    pub fn offset(&self) -> u64 {
        self.lines.offset()
    }

    pub fn path(&self) -> &Path {
        self.lines.path()
    }

    /// The events appended since the last poll.
    pub fn poll(&mut self) -> Result<Vec<FollowedEvent>, FollowError> {
        Ok(self.lines.poll()?.into_iter().map(parse).collect())
    }

    /// The events left once the child has ended, an unfinished last line included.
    pub fn drain(&mut self) -> Result<Vec<FollowedEvent>, FollowError> {
        Ok(self.lines.drain()?.into_iter().map(parse).collect())
    }
}

fn parse(line: FollowedLine) -> FollowedEvent {
    FollowedEvent { event: EventLine::parse(&line.text), raw: line.text, end: line.end }
}

/// A follower's offset kept in a small file, replaced atomically, for a follower whose position is not kept with
/// the rows its lines became.
#[derive(Debug, Clone)]
pub struct OffsetFile {
    path: PathBuf,
}

impl OffsetFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The stored offset; 0 when nothing was stored yet.
    pub fn load(&self) -> Result<u64, FollowError> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => text.trim().parse().map_err(|_| FollowError::BadOffset {
                path: self.path.clone(),
                content: text.chars().take(40).collect(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(source) => Err(FollowError::Io { path: self.path.clone(), source }),
        }
    }

    /// Stores `offset` (write a temporary file, sync, rename): a crash leaves the old offset or the new one.
    pub fn store(&self, offset: u64) -> Result<(), FollowError> {
        let tmp = self.path.with_extension("tmp");
        let io = |source| FollowError::Io { path: tmp.clone(), source };
        let mut f = File::create(&tmp).map_err(io)?;
        writeln!(f, "{offset}").map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &self.path).map_err(|source| FollowError::Io { path: self.path.clone(), source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::event::Event;

    fn append(path: &Path, text: &str) {
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    fn line(event: Event) -> String {
        EventLine::new(event, 1.0).to_json() + "\n"
    }

    #[test]
    fn lines_split_with_offsets_and_hold_back_a_partial_tail() {
        let (lines, used) = split_lines(b"a\n\nbc\r\nde", 10, false);
        assert_eq!(
            lines,
            vec![FollowedLine { text: "a".into(), end: 12 }, FollowedLine { text: "bc".into(), end: 17 }]
        );
        assert_eq!(used, 7);
        let (lines, used) = split_lines(b"a\n\nbc\r\nde", 10, true);
        assert_eq!(lines.last(), Some(&FollowedLine { text: "de".into(), end: 19 }));
        assert_eq!(used, 9);
        assert_eq!(split_lines(b"", 0, true), (vec![], 0));
    }

    #[test]
    fn follows_a_growing_events_file_and_resumes_from_a_stored_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let mut f = EventFollower::new(&path, 0);
        assert!(f.poll().unwrap().is_empty(), "no file yet: no events");

        let first = line(Event::Failed { reason: "one".into() });
        let second = line(Event::Finished { epochs: 2, best_val_acc: 0.5 });
        // The child has written one line and half of the next.
        append(&path, &first);
        append(&path, &second[..10]);
        let got = f.poll().unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].event.as_ref().unwrap().event, Event::Failed { reason: "one".into() });
        assert_eq!(got[0].end, first.len() as u64);
        assert_eq!(f.offset(), first.len() as u64);
        assert!(f.poll().unwrap().is_empty(), "the partial line waits");

        // The daemon stops here, keeping its offset; the child finishes the line and writes a bad one.
        let offsets = OffsetFile::new(dir.path().join("events.offset"));
        assert_eq!(offsets.load().unwrap(), 0);
        offsets.store(f.offset()).unwrap();
        append(&path, &second[10..]);
        append(&path, "not json\n");

        let mut again = EventFollower::new(&path, offsets.load().unwrap());
        let got = again.poll().unwrap();
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].event.as_ref().unwrap().event, Event::Finished { epochs: 2, best_val_acc: 0.5 });
        assert_eq!(got[0].raw, second.trim_end());
        assert!(matches!(got[1].event, Err(EventParseError::Malformed { .. })), "a bad line is reported, not fatal");
        assert_eq!(again.offset(), std::fs::metadata(&path).unwrap().len());

        // An unterminated last line counts once the writer has ended.
        append(&path, second.trim_end());
        assert!(again.poll().unwrap().is_empty());
        let tail = again.drain().unwrap();
        assert_eq!(tail.len(), 1);
        assert!(tail[0].event.is_ok());
        assert!(again.drain().unwrap().is_empty());
    }

    #[test]
    fn truncation_and_bad_offsets_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train.log");
        append(&path, "one\ntwo\n");
        let mut f = LineFollower::new(&path, 100);
        assert!(matches!(f.poll(), Err(FollowError::Truncated { len: 8, offset: 100, .. })));
        let offsets = OffsetFile::new(dir.path().join("o"));
        std::fs::write(dir.path().join("o"), "twelve").unwrap();
        let e = offsets.load().unwrap_err().to_string();
        assert!(e.contains("twelve"), "{e}");
        let mut f = LineFollower::new(&path, 4);
        assert_eq!(f.poll().unwrap(), vec![FollowedLine { text: "two".into(), end: 8 }]);
    }
}
