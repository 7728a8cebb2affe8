//! A session's `train.log` as the web layer reads it: `disk::tail`'s one line reader, run off the async threads. A log
//! that shrank (replaced) is read again from its start; one that cannot be read reads as empty, since a log is for
//! people and a page or stream must not fail for it.

use std::path::{Path, PathBuf};

use crate::disk::tail::{self, Line, TailError};

/// The lines after byte `offset` (at most `max` bytes of them; with `partial`, an unterminated last line too), and
/// where to read next.
pub async fn lines_from(path: &Path, offset: u64, max: u64, partial: bool) -> (Vec<Line>, u64) {
    let path: PathBuf = path.to_path_buf();
    let read = tokio::task::spawn_blocking(move || match tail::read_lines(&path, offset, max, partial) {
        Err(TailError::Truncated { .. }) => tail::read_lines(&path, 0, max, partial),
        other => other,
    })
    .await;
    match read {
        Ok(Ok(read)) => (read.lines, read.next),
        Ok(Err(e)) => {
            tracing::warn!("reading a log: {e}");
            (Vec::new(), offset)
        }
        Err(_) => (Vec::new(), offset),
    }
}

/// The last `n` lines (from the last 64 KiB at most), each ending in a newline, and the log's length: where a live
/// tail goes on from.
pub async fn last(path: &Path, n: usize) -> (String, u64) {
    const WINDOW: u64 = 64 * 1024;
    let path: PathBuf = path.to_path_buf();
    match tokio::task::spawn_blocking(move || tail::last_lines(&path, n, WINDOW)).await {
        Ok(Ok((lines, len))) => (lines.iter().map(|l| format!("{l}\n")).collect(), len),
        _ => (String::new(), 0),
    }
}
