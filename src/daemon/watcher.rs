//! The watcher: notify (debounced, recursive) on `experiments/`, feeding the intake task.
//!
//! notify runs its own threads; its handler only classifies events and forwards them down a channel, and one intake
//! task handles them in order. A rescan happens at start-up, whenever notify reports that events were lost (inotify's
//! queue overflowed) or failed, when a folder appears (files moved in with it raise no events of their own), and once
//! a minute as a safety net. Rescans are cheap: each file is only read and hashed unless its content is new.
//!
//! A spec is read only once it is complete. A file renamed into place (`rush run`, most editors) is complete at once.
//! A file written in place (`cp`, `cat >`, a script's `open`/`write`) is complete when the writer closes it (inotify's
//! `IN_CLOSE_WRITE`); until then it is *being written* and left alone, so a writer that pauses mid-file never has a
//! prefix of its spec queued (a prefix may well be a valid spec of its own). A scan leaves alone a file being written,
//! and looks again a moment later at one modified in the last [`FRESH`] (it may be mid-write with no events seen, e.g.
//! at start-up or after lost events). Before a scan reads a file it asks the kernel whether any process still holds it
//! open for writing ([`open_for_writing`], from `/proc`), so a writer that paused for longer than that when the daemon
//! started (or while events were lost) is waited for too, until its close.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{EventKind, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, new_debouncer};
use tokio::sync::mpsc;

use super::intake::{Intake, intake_file, is_spec_file, orphan_error_files, spec_files};
use super::{Daemon, DaemonError};

/// How long notify gathers events for one file before reporting it.
const DEBOUNCE: Duration = Duration::from_millis(150);
/// The safety-net rescan interval.
const RESCAN_EVERY: Duration = Duration::from_secs(60);
/// A scan looks again later at a file modified this recently instead of reading it.
pub const FRESH: Duration = Duration::from_secs(1);
/// A file written to this long ago with no close seen since (its close event lost) is read by the next scan.
const STALE: Duration = Duration::from_secs(10);

/// What one notify event says about a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Created or written to, and not closed yet.
    Writing,
    /// Complete: closed after writing, or renamed into place.
    Ready,
    /// Something else changed (permissions, times): read it if it is not being written.
    Check,
    /// Nothing to do (removed, opened, read).
    Ignore,
}

/// Classifies one notify event kind.
pub fn signal(kind: &EventKind) -> Signal {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => Signal::Ready,
        EventKind::Modify(ModifyKind::Name(_)) => Signal::Ready,
        EventKind::Create(_) | EventKind::Modify(ModifyKind::Data(_)) => Signal::Writing,
        EventKind::Access(_) | EventKind::Remove(_) => Signal::Ignore,
        EventKind::Modify(_) | EventKind::Any | EventKind::Other => Signal::Check,
    }
}

/// What to do with a file a scan (or a [`Signal::Check`]) found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Read,
    /// Being written: its close will bring it.
    Wait,
    /// Modified too recently to trust: look again after [`FRESH`].
    Later,
}

/// The files being written, as the events told: a pure state machine, so the rules are tested without a filesystem.
#[derive(Debug, Default)]
pub struct Writers {
    /// Path -> when the last write event for it arrived.
    writing: HashMap<PathBuf, Instant>,
}

impl Writers {
    /// Records a signal for `path`; true when the file is complete and should be read now.
    pub fn on_signal(&mut self, path: &Path, signal: Signal, now: Instant) -> bool {
        match signal {
            Signal::Writing => {
                self.writing.insert(path.to_path_buf(), now);
                false
            }
            Signal::Ready => {
                self.writing.remove(path);
                true
            }
            Signal::Check | Signal::Ignore => false,
        }
    }

    /// Whether a file found by a scan, last modified `age` ago (None: unknown), is read now.
    pub fn decide(&mut self, path: &Path, age: Option<Duration>, now: Instant) -> Decision {
        if let Some(&since) = self.writing.get(path) {
            if now.saturating_duration_since(since) < STALE {
                return Decision::Wait;
            }
            self.writing.remove(path);
        }
        match age {
            Some(age) if age < FRESH => Decision::Later,
            _ => Decision::Read,
        }
    }
}

#[derive(Debug)]
enum Job {
    /// A path and what its event said.
    Event(PathBuf, Signal),
    /// Files a scan found too fresh, to be looked at again.
    Recheck(Vec<PathBuf>),
    Rescan,
}

/// Starts watching the experiments folder; the first job is a full scan.
pub fn start(daemon: Arc<Daemon>) -> Result<(), DaemonError> {
    let (tx, rx) = mpsc::unbounded_channel::<Job>();
    let _ = tx.send(Job::Rescan);
    let handler_tx = tx.clone();
    let mut debouncer = new_debouncer(DEBOUNCE, None, move |result: DebounceEventResult| match result {
        Ok(events) => {
            for event in events {
                if event.need_rescan() {
                    let _ = handler_tx.send(Job::Rescan);
                    continue;
                }
                let signal = signal(&event.kind);
                if signal == Signal::Ignore {
                    continue;
                }
                for path in &event.paths {
                    if path.is_dir() {
                        let _ = handler_tx.send(Job::Rescan);
                    } else if is_spec_file(path) {
                        let _ = handler_tx.send(Job::Event(path.clone(), signal));
                    }
                }
            }
        }
        Err(errors) => {
            for e in errors {
                tracing::warn!("watcher: {e}; rescanning");
            }
            let _ = handler_tx.send(Job::Rescan);
        }
    })
    .map_err(|e| DaemonError::Invalid(format!("cannot start the file watcher: {e}")))?;
    debouncer
        .watch(&daemon.config.experiments, RecursiveMode::Recursive)
        .map_err(|e| DaemonError::Invalid(format!("cannot watch {}: {e}", daemon.config.experiments.display())))?;
    tokio::spawn(run(daemon, rx, tx, debouncer));
    Ok(())
}

async fn run<D: Send + 'static>(
    daemon: Arc<Daemon>,
    mut rx: mpsc::UnboundedReceiver<Job>,
    tx: mpsc::UnboundedSender<Job>,
    debouncer: D,
) {
    let mut tick = tokio::time::interval(RESCAN_EVERY);
    tick.tick().await;
    let mut writers = Writers::default();
    loop {
        let job = tokio::select! {
            _ = daemon.shutdown.cancelled() => break,
            _ = tick.tick() => Job::Rescan,
            job = rx.recv() => match job {
                Some(job) => job,
                None => break,
            },
        };
        let result = match job {
            Job::Rescan => {
                // Coalesce: a burst of overflow reports needs one scan. Events taken here still update who is
                // writing; the files they name are covered by the scan.
                while let Ok(job) = rx.try_recv() {
                    if let Job::Event(path, signal) = job {
                        writers.on_signal(&path, signal, Instant::now());
                    }
                }
                let root = daemon.config.experiments.clone();
                let files = tokio::task::spawn_blocking(move || {
                    // The error files of specs deleted since: nothing is wrong with a file that is not there.
                    for orphan in orphan_error_files(&root) {
                        if std::fs::remove_file(&orphan).is_ok() {
                            tracing::info!("{}: its spec is gone; removed", orphan.display());
                        }
                    }
                    spec_files(&root)
                })
                .await
                .unwrap_or_default();
                look_at(&daemon, &mut writers, files, &tx).await
            }
            Job::Recheck(files) => look_at(&daemon, &mut writers, files, &tx).await,
            Job::Event(path, Signal::Check) => look_at(&daemon, &mut writers, vec![path], &tx).await,
            Job::Event(path, signal) => {
                if writers.on_signal(&path, signal, Instant::now()) {
                    match intake_file(&daemon, &path).await {
                        // Written, but nothing new: say so, since the user may have expected a session. (Scans see
                        // every seen file again, so they stay quiet.)
                        Ok(Intake::Seen) => {
                            tracing::info!(
                                "{}: the same content as when it was read before; nothing queued (change it, or save \
                                 it under a new name, to queue it again)",
                                path.display()
                            );
                            Ok(())
                        }
                        Ok(_) => Ok(()),
                        Err(e) => Err((path, e)),
                    }
                } else {
                    Ok(())
                }
            }
        };
        if let Err((path, e)) = result {
            tracing::error!("{}: {e}; rescanning later", path.display());
            let _ = tx.send(Job::Rescan);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    drop(debouncer);
}

/// Reads each file that is complete; the fresh ones are sent back as one [`Job::Recheck`] after [`FRESH`].
async fn look_at(
    daemon: &Daemon,
    writers: &mut Writers,
    files: Vec<PathBuf>,
    tx: &mpsc::UnboundedSender<Job>,
) -> Result<(), (PathBuf, DaemonError)> {
    let mut later = Vec::new();
    let mut read = Vec::new();
    for path in files {
        let age = tokio::fs::metadata(&path)
            .await
            .ok()
            .and_then(|m| m.modified().ok())
            .map(|modified| SystemTime::now().duration_since(modified).unwrap_or_default());
        match writers.decide(&path, age, Instant::now()) {
            Decision::Read => read.push(path),
            Decision::Wait => {}
            Decision::Later => later.push(path),
        }
    }
    // A file no event has called complete may still be open in a writer that paused: its close will bring it.
    let open = if read.is_empty() {
        HashSet::new()
    } else {
        let root = daemon.config.experiments.clone();
        tokio::task::spawn_blocking(move || open_for_writing(&root)).await.unwrap_or_default()
    };
    let mut first_error = None;
    for path in read {
        if daemon.shutdown.is_cancelled() {
            break;
        }
        if !open.is_empty() && tokio::fs::metadata(&path).await.is_ok_and(|m| open.contains(&(m.dev(), m.ino()))) {
            tracing::info!("{}: still open for writing; read when its writer closes it", path.display());
            writers.on_signal(&path, Signal::Writing, Instant::now());
            continue;
        }
        if let Err(e) = intake_file(daemon, &path).await {
            tracing::error!("{}: {e}", path.display());
            first_error.get_or_insert((path, e));
        }
    }
    if !later.is_empty() {
        let tx = tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(FRESH).await;
            let _ = tx.send(Job::Recheck(later));
        });
    }
    first_error.map_or(Ok(()), Err)
}

/// The files under `root` that some process holds open for writing, as (device, inode): every `/proc/<pid>/fd` link
/// that points under `root` and whose `/proc/<pid>/fdinfo` access mode is not read-only. Only processes this daemon may
/// inspect are seen (its own user's, or all for root); a writer it cannot see counts as closed, as without this check.
pub fn open_for_writing(root: &Path) -> HashSet<(u64, u64)> {
    let mut open = HashSet::new();
    let Ok(root) = root.canonicalize() else { return open };
    let Ok(processes) = std::fs::read_dir("/proc") else { return open };
    for process in processes.flatten() {
        if !process.file_name().to_str().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(process.path().join("fd")) else { continue };
        for fd in fds.flatten() {
            // The link names the open file's path; only files under the experiments folder are looked at further.
            if !std::fs::read_link(fd.path()).is_ok_and(|target| target.starts_with(&root)) {
                continue;
            }
            let info = process.path().join("fdinfo").join(fd.file_name());
            let flags = std::fs::read_to_string(info).ok().and_then(|text| {
                let octal = text.lines().find_map(|line| line.strip_prefix("flags:"))?.trim().to_string();
                u32::from_str_radix(&octal, 8).ok()
            });
            let writes = |flags: u32| flags & libc::O_ACCMODE as u32 != libc::O_RDONLY as u32;
            if flags.is_some_and(writes)
                && let Ok(meta) = std::fs::metadata(fd.path())
                && meta.is_file()
            {
                open.insert((meta.dev(), meta.ino()));
            }
        }
    }
    open
}

#[cfg(test)]
mod tests {
    use notify::event::{CreateKind, DataChange, MetadataKind, RemoveKind, RenameMode};

    use super::*;

    #[test]
    fn events_say_writing_ready_check_or_nothing() {
        let cases = [
            (EventKind::Create(CreateKind::File), Signal::Writing),
            (EventKind::Modify(ModifyKind::Data(DataChange::Any)), Signal::Writing),
            (EventKind::Access(AccessKind::Close(AccessMode::Write)), Signal::Ready),
            (EventKind::Modify(ModifyKind::Name(RenameMode::To)), Signal::Ready),
            (EventKind::Modify(ModifyKind::Name(RenameMode::Both)), Signal::Ready),
            (EventKind::Modify(ModifyKind::Metadata(MetadataKind::Permissions)), Signal::Check),
            (EventKind::Access(AccessKind::Close(AccessMode::Read)), Signal::Ignore),
            (EventKind::Access(AccessKind::Open(AccessMode::Any)), Signal::Ignore),
            (EventKind::Remove(RemoveKind::File), Signal::Ignore),
        ];
        for (kind, want) in cases {
            assert_eq!(signal(&kind), want, "{kind:?}");
        }
    }

    #[test]
    fn a_file_written_in_place_is_read_only_when_closed() {
        let mut w = Writers::default();
        let p = Path::new("experiments/a.yaml");
        let t0 = Instant::now();
        assert!(!w.on_signal(p, Signal::Writing, t0));
        // A scan meanwhile (even one that sees an old mtime: the writer paused) leaves it for the close.
        assert_eq!(w.decide(p, Some(Duration::from_secs(5)), t0 + Duration::from_secs(5)), Decision::Wait);
        assert!(!w.on_signal(p, Signal::Writing, t0 + Duration::from_secs(6)));
        assert!(w.on_signal(p, Signal::Ready, t0 + Duration::from_secs(7)));
        // Closed: a later scan reads it.
        assert_eq!(w.decide(p, Some(Duration::from_secs(2)), t0 + Duration::from_secs(9)), Decision::Read);
    }

    #[test]
    fn a_scan_defers_fresh_files_and_forgets_writers_whose_close_was_lost() {
        let mut w = Writers::default();
        let p = Path::new("experiments/b.yaml");
        let t0 = Instant::now();
        assert_eq!(w.decide(p, Some(Duration::from_millis(200)), t0), Decision::Later);
        assert_eq!(w.decide(p, Some(FRESH), t0), Decision::Read);
        assert_eq!(w.decide(p, None, t0), Decision::Read);
        w.on_signal(p, Signal::Writing, t0);
        assert_eq!(w.decide(p, Some(STALE), t0 + STALE - Duration::from_millis(1)), Decision::Wait);
        assert_eq!(w.decide(p, Some(STALE), t0 + STALE), Decision::Read);
        // Check and Ignore change nothing.
        assert!(!w.on_signal(p, Signal::Check, t0));
        assert!(!w.on_signal(p, Signal::Ignore, t0));
    }

    #[test]
    fn a_file_held_open_for_writing_is_seen_until_it_is_closed() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let (writing, reading) = (dir.path().join("w.yaml"), dir.path().join("r.yaml"));
        std::fs::write(&reading, "dataset: x\n").unwrap();
        let id = |p: &Path| {
            let m = std::fs::metadata(p).unwrap();
            (m.dev(), m.ino())
        };
        let mut writer = std::fs::File::create(&writing).unwrap();
        writer.write_all(b"dataset: x\n").unwrap();
        let reader = std::fs::File::open(&reading).unwrap();
        let open = open_for_writing(dir.path());
        assert!(open.contains(&id(&writing)), "{open:?}");
        assert!(!open.contains(&id(&reading)), "a file open only for reading counts as written: {open:?}");
        // the other folder's writers are not this folder's business
        assert!(open_for_writing(&dir.path().join("missing")).is_empty());
        drop((writer, reader));
        assert!(open_for_writing(dir.path()).is_empty());
    }
}
