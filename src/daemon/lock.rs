//! One daemon per home: an exclusive `flock` on `$RUSH_HOME/daemon.lock`, held for the daemon's life and released by
//! the kernel when the process ends in any way (SIGKILL included), so a crashed daemon never blocks its successor.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;

use super::DaemonError;

/// Holds the lock until dropped.
#[derive(Debug)]
pub struct HomeLock {
    _file: File,
}

impl HomeLock {
    pub fn acquire(home: &Path) -> Result<HomeLock, DaemonError> {
        let path = home.join("daemon.lock");
        let io = |source| DaemonError::Io { path: path.clone(), source };
        // Opened close-on-exec (Rust's default), so training children never inherit the lock.
        let mut file =
            std::fs::OpenOptions::new().create(true).truncate(false).write(true).read(true).open(&path).map_err(io)?;
        // SAFETY: flock on a file descriptor we own.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            return Err(DaemonError::Lock(format!(
                "another rush daemon runs on {} (pid {}); stop it first",
                home.display(),
                holder.trim()
            )));
        }
        file.set_len(0).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(HomeLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_home_is_refused_until_the_first_goes() {
        let dir = tempfile::tempdir().unwrap();
        let first = HomeLock::acquire(dir.path()).unwrap();
        let e = HomeLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(e.contains("another rush daemon") && e.contains(&std::process::id().to_string()), "{e}");
        drop(first);
        HomeLock::acquire(dir.path()).unwrap();
    }
}
