//! Intake: a spec file in `experiments/` becomes queued sessions or a recorded rejection, once per (path, content).
//!
//! Which files count: `*.yaml` and `*.yml`, not hidden, not an editor's temporary or backup file. A file is read (at
//! most `MAX_SPEC_BYTES`), hashed, skipped if this content at this path was seen, else parsed, validated and expanded
//! (`core::spec`), its dataset checked against the registry, and recorded in one transaction with its sessions.

use std::path::{Path, PathBuf};

use sha2::Digest;

use super::{Daemon, DaemonError};
use crate::core::session::SessionId;
use crate::core::spec::{MAX_SPEC_BYTES, Spec};
use crate::store::SpecStatus;

/// What became of one file.
#[derive(Debug, Clone, PartialEq)]
pub enum Intake {
    /// Not a spec file, or gone.
    Skipped,
    /// This content at this path was read before (a touch, a re-save, the file put back): nothing queued.
    Seen,
    Queued(Vec<SessionId>),
    Rejected(String),
}

/// Whether a path names a spec file the intake reads: `*.yaml`/`*.yml`, not hidden (`.#x.yaml`, `.x.yaml.swp`), not a
/// backup (`x.yaml~`). Vim's `4913` probe and swap files fail the extension test already.
pub fn is_spec_file(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else { return false };
    if name.starts_with('.') || name.starts_with('#') || name.ends_with('~') {
        return false;
    }
    matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
}

/// Reads one file and records what it is.
pub async fn intake_file(daemon: &Daemon, path: &Path) -> Result<Intake, DaemonError> {
    if !is_spec_file(path) {
        return Ok(Intake::Skipped);
    }
    let Ok(meta) = tokio::fs::metadata(path).await else { return Ok(Intake::Skipped) };
    if !meta.is_file() {
        return Ok(Intake::Skipped);
    }
    let key = path.display().to_string();
    let bytes = if meta.len() > MAX_SPEC_BYTES as u64 {
        // Hash the size and time only: reading a huge file to refuse it would be the attack.
        let stamp = format!("too-large:{}:{:?}", meta.len(), meta.modified().ok());
        let hash = hex::encode(sha2::Sha256::digest(stamp.as_bytes()));
        if daemon.store.spec_seen(&key, &hash).await? {
            return Ok(Intake::Seen);
        }
        let error = format!("{key}: the file is {} bytes; a spec may be at most {MAX_SPEC_BYTES} bytes", meta.len());
        write_error_file(path, &error).await;
        daemon.store.reject_spec(&key, &hash, &error).await?;
        tracing::warn!("rejected {error}");
        return Ok(Intake::Rejected(error));
    } else {
        match tokio::fs::read(path).await {
            Ok(b) => b,
            Err(_) => return Ok(Intake::Skipped),
        }
    };
    let hash = hex::encode(sha2::Sha256::digest(&bytes));
    if let Some((status, error)) = daemon.store.spec_verdict(&key, &hash).await? {
        // Content read before (put back, say, after a fix): its error file follows what that content was.
        match (status, error) {
            (SpecStatus::Rejected, Some(error)) => write_error_file(path, &error).await,
            _ => remove_error_file(path).await,
        }
        return Ok(Intake::Seen);
    }
    let checked = match check(daemon, &key, &bytes).await {
        Ok(specs) => stage_file_code(daemon, path, &key, specs).await,
        Err(e) => Err(e),
    };
    let (specs, staged) = match checked {
        Ok(done) => done,
        Err(error) => {
            // Written before the rejection is recorded, so whoever reads the rejection finds the file too.
            write_error_file(path, &error).await;
            daemon.store.reject_spec(&key, &hash, &error).await?;
            tracing::warn!("rejected {error}");
            return Ok(Intake::Rejected(error));
        }
    };
    remove_error_file(path).await;
    // A spec dropped in the experiments folder is the daemon's own user's (its owner, on a shared daemon).
    let sessions: Vec<_> = specs.iter().map(|s| daemon.new_session(&daemon.config.user, s, None)).collect();
    let ids =
        daemon.store.enqueue(Some((&key, &hash)), &sessions, |id, i| daemon.resolved_json(id, &specs[i], None)).await?;
    place(daemon, &ids, staged).await;
    if !ids.is_empty() {
        let names: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
        tracing::info!("{key}: queued {}", names.join(", "));
        daemon.wake();
    }
    Ok(Intake::Queued(ids))
}

impl Daemon {
    /// `rush run`: a spec sent over the API, not dropped as a file, queued as `user`'s sessions (a team's own, on a
    /// shared daemon). `source` is what the user typed (`rush run -d emoji -a "lr=0.1"`); a refusal names it, as a
    /// file's rejection names the file.
    pub async fn queue_spec(
        &self,
        user: &str,
        source: &str,
        bytes: &[u8],
        code: Option<Vec<u8>>,
    ) -> Result<Vec<SessionId>, DaemonError> {
        if bytes.len() > MAX_SPEC_BYTES {
            return Err(DaemonError::Invalid(format!(
                "{source}: the spec is {} bytes; a spec may be at most {MAX_SPEC_BYTES} bytes",
                bytes.len()
            )));
        }
        let specs = check(self, source, bytes).await.map_err(DaemonError::Invalid)?;
        let staged = match (specs.first().filter(|s| s.is_code()), code) {
            (Some(spec), Some(archive)) => Some(self.stage_code(source, spec, archive).await?),
            (Some(_), None) => {
                return Err(DaemonError::Invalid(format!(
                    "{source}: a code session needs its code (`rush run` in the code folder uploads it)"
                )));
            }
            (None, Some(_)) => {
                return Err(DaemonError::Invalid(format!("{source}: code was sent, but the spec has no `entry:`")));
            }
            (None, None) => None,
        };
        let sessions: Vec<_> = specs.iter().map(|s| self.new_session(user, s, None)).collect();
        let ids = self.store.enqueue(None, &sessions, |id, i| self.resolved_json(id, &specs[i], None)).await?;
        place(self, &ids, staged).await;
        let names: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
        tracing::info!("{source}: queued {}", names.join(", "));
        self.wake();
        Ok(ids)
    }
}

/// A code spec's folder, packed and staged before its session is queued: a folder that is missing or too big
/// rejects the file like any other error in it.
async fn stage_file_code(
    daemon: &Daemon,
    path: &Path,
    key: &str,
    specs: Vec<Spec>,
) -> Result<(Vec<Spec>, Option<super::code::StagedCode>), String> {
    let Some(spec) = specs.first().filter(|s| s.is_code()) else { return Ok((specs, None)) };
    let archive = daemon.pack_code_of_file(path, spec).await?;
    let staged = daemon.stage_code(key, spec, archive).await.map_err(|e| e.to_string())?;
    Ok((specs, Some(staged)))
}

/// Moves a staged upload into the (one) queued code session's folder; a failure fails that session with the reason.
async fn place(daemon: &Daemon, ids: &[SessionId], staged: Option<super::code::StagedCode>) {
    let (Some(staged), Some(id)) = (staged, ids.first()) else { return };
    if let Err(e) = daemon.place_code(id, staged).await {
        tracing::error!("{id}: placing its code: {e}");
        let reason = format!("its code could not be placed in its folder: {e}");
        let _ = daemon.store.transition(id, crate::core::session::SessionState::Failed, None, Some(&reason)).await;
    }
}

/// The file beside a rejected spec that holds why it was rejected: `bad.yaml` -> `bad.yaml.error`.
pub fn error_file(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".error");
    path.with_file_name(name)
}

/// Writes `error` (one line) beside the spec at `path`; a failure is logged, never the spec's verdict.
async fn write_error_file(path: &Path, error: &str) {
    let file = error_file(path);
    let text = format!("{error}\n");
    // A rescan reads every rejected file again each minute: write only what changed.
    if tokio::fs::read_to_string(&file).await.is_ok_and(|old| old == text) {
        return;
    }
    let written = tokio::task::spawn_blocking(move || crate::disk::write_atomic(&file, text.as_bytes())).await;
    match written {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("{}: writing its error file: {e}", path.display()),
        Err(e) => tracing::warn!("{}: writing its error file: {e}", path.display()),
    }
}

/// Removes the error file beside the spec at `path`, if there is one.
async fn remove_error_file(path: &Path) {
    let file = error_file(path);
    match tokio::fs::remove_file(&file).await {
        Ok(()) => tracing::info!("{}: fixed; removed {}", path.display(), file.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!("{}: {e}", file.display()),
    }
}

/// The error files under `root` whose spec file is gone (deleted or renamed): the rescan removes them.
pub fn orphan_error_files(root: &Path) -> Vec<PathBuf> {
    files_under(root, |path| {
        let spec = path.to_str().and_then(|p| p.strip_suffix(".error")).map(PathBuf::from);
        spec.is_some_and(|s| is_spec_file(&s) && !s.exists())
    })
}

/// The files under `root` (recursively, hidden folders skipped) that `keep` accepts, sorted.
fn files_under(root: &Path, keep: impl Fn(&Path) -> bool) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            let hidden = entry.file_name().to_string_lossy().starts_with('.');
            match entry.file_type() {
                Ok(t) if t.is_dir() && !hidden => stack.push(path),
                Ok(t) if t.is_file() && keep(&path) => out.push(path),
                _ => {}
            }
        }
    }
    out.sort();
    out
}

/// Parses, validates and expands a spec, and checks its dataset is registered (or registering: its sessions wait);
/// the error is the user's message.
async fn check(daemon: &Daemon, key: &str, bytes: &[u8]) -> Result<Vec<Spec>, String> {
    let specs = Spec::load(key, bytes).map_err(|e| e.to_string())?;
    if specs.is_empty() {
        return Err(format!("{key}: the sweep has no points, so nothing would run"));
    }
    let datasets: std::collections::BTreeSet<&str> = specs.iter().map(|s| s.dataset.as_str()).collect();
    for dataset in datasets {
        daemon.accept_dataset(key, dataset).await.map_err(|e| e.to_string())?;
    }
    Ok(specs)
}

/// Every spec file under `root` (recursively, hidden folders skipped), sorted for a deterministic order.
pub fn spec_files(root: &Path) -> Vec<PathBuf> {
    files_under(root, is_spec_file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_spec_files_count() {
        for ok in ["a.yaml", "dir/b.yml", "run-20260101-x.yaml"] {
            assert!(is_spec_file(Path::new(ok)), "{ok}");
        }
        for no in
            [".a.yaml.swp", "a.yaml.swp", "a.yaml~", ".#a.yaml", "#a.yaml#", "4913", "a.json", ".hidden.yaml", "x"]
        {
            assert!(!is_spec_file(Path::new(no)), "{no}");
        }
    }

    #[test]
    fn error_files_sit_beside_their_spec_and_orphans_are_found() {
        assert_eq!(error_file(Path::new("/e/sub/bad.yaml")), PathBuf::from("/e/sub/bad.yaml.error"));
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("sub")).unwrap();
        for f in ["kept.yaml", "kept.yaml.error", "sub/gone.yml.error", "notes.error", "x.txt.error"] {
            std::fs::write(root.join(f), "x").unwrap();
        }
        assert_eq!(orphan_error_files(root), vec![root.join("sub/gone.yml.error")]);
    }

    #[test]
    fn scan_finds_nested_files_and_skips_hidden_folders() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
        std::fs::create_dir_all(root.join(".git")).unwrap();
        for f in ["a.yaml", "sub/b.yml", "sub/deeper/c.yaml", ".git/d.yaml", "README.md", "sub/e.yaml~"] {
            std::fs::write(root.join(f), "x").unwrap();
        }
        let found: Vec<PathBuf> = spec_files(root).into_iter().map(|p| p.strip_prefix(root).unwrap().into()).collect();
        assert_eq!(found, vec![PathBuf::from("a.yaml"), "sub/b.yml".into(), "sub/deeper/c.yaml".into()]);
    }
}
