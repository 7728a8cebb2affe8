//! A real `rush daemon` (this binary) on a temporary home, for the benchmarks that measure the product's own paths
//! (`spec-to-start`, `score`): start it, find its address, run CLI commands against that home, stop it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

/// How long the daemon may take to write its address file, and to stop.
const PATIENCE: Duration = Duration::from_secs(60);

/// Runs `measure` in a fresh scratch folder named after the benchmark, then removes the folder unless `keep`.
pub fn in_scratch<T>(name: &str, keep: bool, measure: impl FnOnce(&Path) -> anyhow::Result<T>) -> anyhow::Result<T> {
    let tmp = std::env::temp_dir().join(format!("rush-bench-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let result = measure(&tmp);
    if keep {
        eprintln!("rush bench: kept {}", tmp.display());
    } else {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

/// Runs `rush --home HOME ARGS [PATH] EXTRA` to completion; returns its stdout.
pub fn rush(exe: &Path, home: &Path, args: &[&str], path: Option<&Path>, extra: &[String]) -> anyhow::Result<String> {
    let mut cmd = Command::new(exe);
    cmd.arg("--home").arg(home).args(args);
    if let Some(p) = path {
        cmd.arg(p);
    }
    let out = cmd.args(extra).env_remove("RUSH_URL").stdin(Stdio::null()).output().context("running rush")?;
    anyhow::ensure!(
        out.status.success(),
        "rush {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The daemon under test; stopped (SIGTERM, then killed) when dropped.
pub struct Daemon {
    child: Option<Child>,
    pub url: String,
    /// Its stdout and stderr.
    pub log: PathBuf,
}

impl Daemon {
    /// Starts `rush --home HOME daemon --bind 127.0.0.1:0 --user bench --experiments EXPERIMENTS ARGS` with `env` set,
    /// logging to `<dir>/daemon.log`, and waits for its address.
    pub fn start(
        exe: &Path,
        home: &Path,
        experiments: &Path,
        dir: &Path,
        args: &[OsString],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let log = dir.join("daemon.log");
        let file = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new(exe)
            .arg("--home")
            .arg(home)
            .args(["daemon", "--bind", "127.0.0.1:0", "--user", "bench", "--experiments"])
            .arg(experiments)
            .args(args)
            .envs(env.iter().copied())
            .env_remove("RUSH_URL")
            .stdin(Stdio::null())
            .stdout(file.try_clone().context("daemon log")?)
            .stderr(file)
            .spawn()
            .context("starting rush daemon")?;
        let mut daemon = Daemon { child: Some(child), url: String::new(), log };
        let addr_file = crate::home::Home::new(home).daemon_addr_file();
        let started = Instant::now();
        loop {
            if let Ok(addr) = std::fs::read_to_string(&addr_file)
                && !addr.trim().is_empty()
            {
                daemon.url = format!("http://{}", addr.trim());
                return Ok(daemon);
            }
            if let Some(c) = daemon.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                anyhow::bail!("rush daemon exited with {status}; see {}", daemon.log.display());
            }
            anyhow::ensure!(started.elapsed() < PATIENCE, "rush daemon did not write {}", addr_file.display());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(mut self) -> anyhow::Result<()> {
        self.terminate()
    }

    fn terminate(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else { return Ok(()) };
        // SAFETY: plain kill(2) on the pid of a child we started and have not reaped.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let asked = Instant::now();
        while asked.elapsed() < Duration::from_secs(30) {
            if child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.kill()?;
        child.wait()?;
        anyhow::bail!("rush daemon ignored SIGTERM for 30 s; killed it")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.terminate();
    }
}
