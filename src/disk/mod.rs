//! File primitives every edge shares: the one atomic, durable write ([`write_atomic`], [`write_atomic_with`]) and
//! reading lines that another process appends to a file, from a byte offset ([`tail`]).
//!
//! An atomic write goes to a temporary file in the same folder (`.<name>.<pid>-<n>.tmp`, hidden and never `*.yaml`,
//! so the spec watcher ignores it), which is fsynced, renamed over the target, and then the folder is fsynced: after a
//! power cut a reader finds the old file or the whole new one, never a renamed but empty file. On any error the
//! temporary file is removed and the target is untouched.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

pub mod tail;

/// An I/O error and the file it happened to.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct DiskError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

impl DiskError {
    fn at(path: &Path) -> impl FnOnce(io::Error) -> DiskError + '_ {
        move |source| DiskError { path: path.to_path_buf(), source }
    }
}

/// Why [`write_atomic_with`] failed: the caller's fill, or the file system around it.
#[derive(Debug, thiserror::Error)]
pub enum WriteError<E> {
    #[error(transparent)]
    Fill(E),
    #[error(transparent)]
    Disk(#[from] DiskError),
}

/// Writes `bytes` to `path` atomically and durably (see the module's doc).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), DiskError> {
    match write_atomic_with(path, |tmp| {
        let mut file = File::create(tmp).map_err(DiskError::at(tmp))?;
        file.write_all(bytes).map_err(DiskError::at(tmp))
    }) {
        Ok(_) => Ok(()),
        Err(WriteError::Fill(e) | WriteError::Disk(e)) => Err(e),
    }
}

/// Like [`write_atomic`], for writers that need a path rather than bytes (a library that saves to a file, a memory
/// map): `fill` creates and writes the temporary path it is given. Returns the size of the file now at `path`.
pub fn write_atomic_with<E>(path: &Path, fill: impl FnOnce(&Path) -> Result<(), E>) -> Result<u64, WriteError<E>> {
    let tmp = temporary(path);
    let result = fill(&tmp).map_err(WriteError::Fill).and_then(|()| {
        let file = File::open(&tmp).map_err(DiskError::at(&tmp))?;
        file.sync_all().map_err(DiskError::at(&tmp))?;
        let bytes = file.metadata().map_err(DiskError::at(&tmp))?.len();
        std::fs::rename(&tmp, path).map_err(DiskError::at(path))?;
        Ok(bytes)
    });
    match result {
        Ok(bytes) => {
            sync_dir(folder(path))?;
            Ok(bytes)
        }
        Err(e) => {
            // A full disk or a size limit: leave no partial file behind.
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Fsyncs a folder, so that a rename or a new file in it survives a power cut.
pub fn sync_dir(dir: &Path) -> Result<(), DiskError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(DiskError::at(dir))
}

/// The folder `path` is in (`.` for a bare file name).
fn folder(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// A temporary sibling of `path`, unique to this process and call.
fn temporary(path: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    folder(path).join(format!(".{name}.{}-{n}.tmp", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }

    #[test]
    fn writes_replace_the_whole_file_and_leave_nothing_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("daemon.addr");
        write_atomic(&path, b"127.0.0.1:1\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"127.0.0.1:1\n");
        write_atomic(&path, b"x").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"x");
        // The extension is kept whole: `a.b.json` and `a.b.yaml` never share a temporary file.
        write_atomic(&dir.path().join("a.b.json"), b"{}").unwrap();
        assert_eq!(names(dir.path()), ["a.b.json", "daemon.addr"]);
    }

    #[test]
    fn temporary_files_are_hidden_siblings_unique_per_call() {
        let a = temporary(Path::new("/x/spec.yaml"));
        let b = temporary(Path::new("/x/spec.yaml"));
        assert_ne!(a, b);
        assert_eq!(a.parent(), Some(Path::new("/x")));
        let name = a.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with(".spec.yaml.") && name.ends_with(".tmp"), "{name}");
        assert_eq!(temporary(Path::new("bare")).parent(), Some(Path::new(".")));
    }

    #[test]
    fn a_failed_fill_leaves_the_old_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1.safetensors");
        write_atomic(&path, b"old").unwrap();
        let err = write_atomic_with(&path, |tmp| {
            std::fs::write(tmp, b"half").unwrap();
            Err::<(), _>("disk full")
        })
        .unwrap_err();
        assert!(matches!(err, WriteError::Fill("disk full")));
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(names(dir.path()), ["1.safetensors"]);
        // A fill that says it wrote but did not: the error names the temporary file.
        let err = write_atomic_with(&path, |_| Ok::<(), ()>(())).unwrap_err();
        assert!(matches!(&err, WriteError::Disk(DiskError { path, .. }) if path.to_string_lossy().ends_with(".tmp")));
        assert_eq!(names(dir.path()), ["1.safetensors"]);
    }

    #[test]
    fn a_write_into_a_missing_folder_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope").join("f");
        let err = write_atomic(&path, b"x").unwrap_err();
        assert!(err.path.starts_with(dir.path().join("nope")), "{err}");
        assert_eq!(err.source.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn the_size_written_is_returned() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.rgb");
        let n = write_atomic_with(&path, |tmp| std::fs::write(tmp, [7u8; 4096])).unwrap();
        assert_eq!(n, 4096);
    }
}
