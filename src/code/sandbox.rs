//! The bubblewrap sandbox of a code session and of its submissions: participants' code is untrusted and the hidden
//! labels are the whole point of the board.
//!
//! The child sees what is bound and nothing else: the system's programs and libraries (`/usr`, `/lib*`, `/bin`,
//! `/etc`), the Python it runs (read-only), its session folder at `/session` (read-write while training, read-only for
//! a submission, whose output folder is `/out`), the dataset at `/dataset` (read-only) and, on a GPU slot, the
//! `/dev/nvidia*` devices. It has its own PID namespace (it is PID 1's child there, so every process it starts dies
//! with it), no network, a private `/tmp`, and dies with its parent. The home (labels, database, other sessions) is
//! never bound. Facts measured: shared/SANDBOX.md.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the sandbox mounts the session folder, the dataset, a submission's output and a checkpoint to start from.
pub const SESSION: &str = "/session";
pub const DATASET: &str = "/dataset";
pub const OUT: &str = "/out";
pub const INIT: &str = "/init";

/// bubblewrap, found and known to work here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bwrap {
    pub program: PathBuf,
}

impl Bwrap {
    /// Finds `bwrap` on the `PATH` and runs `true` in a sandbox of the kind code sessions get; the error says why
    /// code sessions cannot be sandboxed here.
    pub fn probe() -> Result<Bwrap, String> {
        let program = find_on_path("bwrap").ok_or_else(|| {
            "bubblewrap (`bwrap`) is not installed: `apt-get install bubblewrap`, or set `sandbox: off` in the \
             daemon's config to run code sessions unsandboxed"
                .to_string()
        })?;
        let bwrap = Bwrap { program };
        let mut cmd = bwrap.command(&Binds::default(), Path::new("/bin/true"), &[]);
        match cmd.output() {
            Ok(out) if out.status.success() => Ok(bwrap),
            Ok(out) => Err(format!(
                "bubblewrap cannot make a sandbox here ({}: {}); set `sandbox: off` in the daemon's config to run code \
                 sessions unsandboxed",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Err(e) => Err(format!("running {}: {e}", bwrap.program.display())),
        }
    }

    /// `bwrap ... program args`: the binds of `binds` over the system folders, in a new PID and network namespace.
    pub fn command(&self, binds: &Binds, program: &Path, args: &[OsString]) -> Command {
        let mut cmd = Command::new(&self.program);
        for system in ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/etc"] {
            let path = Path::new(system);
            match std::fs::symlink_metadata(path) {
                Ok(m) if m.file_type().is_symlink() => {
                    if let Ok(target) = std::fs::read_link(path) {
                        cmd.arg("--symlink").arg(target).arg(path);
                    }
                }
                Ok(_) => {
                    cmd.arg("--ro-bind").arg(path).arg(path);
                }
                Err(_) => {}
            }
        }
        cmd.args(["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]);
        for path in &binds.python {
            cmd.arg("--ro-bind").arg(path).arg(path);
        }
        for (host, inside) in &binds.read_only {
            cmd.arg("--ro-bind").arg(host).arg(inside);
        }
        for (host, inside) in &binds.writable {
            cmd.arg("--bind").arg(host).arg(inside);
        }
        for (host, inside) in &binds.protected {
            cmd.arg("--ro-bind").arg(host).arg(inside);
        }
        if binds.gpu {
            for dev in nvidia_devices() {
                cmd.arg("--dev-bind").arg(&dev).arg(&dev);
            }
        }
        cmd.args(["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--die-with-parent"]);
        if let Some(dir) = &binds.chdir {
            cmd.arg("--chdir").arg(dir);
        }
        cmd.arg("--").arg(program).args(args);
        cmd
    }
}

/// What a sandbox sees beyond the system folders.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Binds {
    /// Bound read-only at the same path: the interpreter's prefix, the venv, a cached environment.
    pub python: Vec<PathBuf>,
    /// (host path, path inside), read-only.
    pub read_only: Vec<(PathBuf, PathBuf)>,
    /// (host path, path inside), writable.
    pub writable: Vec<(PathBuf, PathBuf)>,
    /// (host path, path inside), read-only over a writable folder: the files in it the code must not change (a
    /// session's `spec.yaml`, which says how its submissions run, and `events.jsonl`, which the daemon trusts).
    pub protected: Vec<(PathBuf, PathBuf)>,
    /// The slot is a GPU: bind the NVIDIA devices.
    pub gpu: bool,
    /// The working folder inside.
    pub chdir: Option<PathBuf>,
}

/// The folders a Python interpreter needs at the same path: a venv's root (the folder holding `pyvenv.cfg`) and the
/// prefix of the real interpreter its `bin/python` links to (pyenv, `/usr/local`).
pub fn python_roots(python: &Path) -> Vec<PathBuf> {
    let mut roots = Vec::new();
    if let Some(venv) = python.parent().and_then(Path::parent)
        && venv.join("pyvenv.cfg").is_file()
    {
        roots.push(venv.to_path_buf());
        // A venv names its base interpreter's folder in `pyvenv.cfg` (`home = /root/.pyenv/versions/3.11.7/bin`).
        if let Ok(cfg) = std::fs::read_to_string(venv.join("pyvenv.cfg"))
            && let Some(home) =
                cfg.lines().find_map(|l| l.strip_prefix("home").map(|r| r.trim_start_matches([' ', '='])))
            && let Some(prefix) = Path::new(home.trim()).parent()
        {
            roots.push(prefix.to_path_buf());
        }
    }
    if let Ok(real) = std::fs::canonicalize(python)
        && let Some(prefix) = real.parent().and_then(Path::parent)
    {
        roots.push(prefix.to_path_buf());
    }
    // The system folders are bound anyway; nested roots are bound once.
    roots.retain(|r| !["/", "/usr", "/bin"].iter().any(|s| r == Path::new(s)));
    roots.sort();
    roots.dedup();
    let all = roots.clone();
    roots.retain(|r| !all.iter().any(|o| o != r && r.starts_with(o)));
    roots
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

/// `/dev/nvidia*` (and `/dev/nvidia-caps`), for a GPU slot.
fn nvidia_devices() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir("/dev") else { return vec![] };
    let mut out: Vec<PathBuf> =
        entries.flatten().filter(|e| e.file_name().to_string_lossy().starts_with("nvidia")).map(|e| e.path()).collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_venvs_roots_are_its_folder_and_its_base_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let venv = dir.path().join("venv");
        std::fs::create_dir_all(venv.join("bin")).unwrap();
        std::fs::create_dir_all(dir.path().join("pyenv/3.11/bin")).unwrap();
        std::fs::write(dir.path().join("pyenv/3.11/bin/python3.11"), "").unwrap();
        std::os::unix::fs::symlink(dir.path().join("pyenv/3.11/bin/python3.11"), venv.join("bin/python")).unwrap();
        std::fs::write(venv.join("pyvenv.cfg"), format!("home = {}\n", dir.path().join("pyenv/3.11/bin").display()))
            .unwrap();
        assert_eq!(python_roots(&venv.join("bin/python")), vec![dir.path().join("pyenv/3.11"), venv.clone()]);
        assert!(python_roots(Path::new("/usr/bin/python3")).is_empty(), "the system's Python is bound anyway");
    }
}
