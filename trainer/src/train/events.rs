//! Where the child's events go: one JSON line each on stdout (read live by the daemon) and appended to the session's
//! `events.jsonl` (the record that survives the child), both flushed per line.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rush::core::event::{Event, EventLine};

pub struct EventSink {
    file: File,
    path: PathBuf,
    /// Set once writing to stdout failed (the reader went away); the file still gets every line.
    stdout_closed: bool,
}

impl EventSink {
    /// Opens (appending) `events.jsonl`.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self { file, path: path.to_path_buf(), stdout_closed: false })
    }

    /// Writes one event line to stdout and to the file. A failed write is reported on stderr, never fatal: the
    /// training goes on and its checkpoints are still written.
    pub fn emit(&mut self, event: Event) {
        let t = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
        let mut line = EventLine::new(event, t).to_json();
        line.push('\n');
        if !self.stdout_closed {
            let mut out = std::io::stdout().lock();
            if out.write_all(line.as_bytes()).and_then(|_| out.flush()).is_err() {
                self.stdout_closed = true;
                eprintln!("rush train: stdout is closed; events go to {} only", self.path.display());
            }
        }
        if let Err(e) = self.file.write_all(line.as_bytes()).and_then(|_| self.file.flush()) {
            eprintln!("rush train: cannot append to {}: {e}", self.path.display());
        }
    }
}

/// A JSON number for an event field: serde_json writes NaN and infinities as `null`, which readers cannot parse back
/// into a number, so they become 0 (the `failed` event says what went wrong).
pub fn finite(x: f64) -> f64 {
    if x.is_finite() { x } else { 0.0 }
}
