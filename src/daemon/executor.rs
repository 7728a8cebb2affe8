//! Where the daemon's children run, a session's training and a submission's member inference: the seam between the
//! runner (or the submission worker) and the machine.
//!
//! The runner only needs the child's event lines, its log lines, a way to ask it to stop and its exit. The
//! [`LocalExecutor`] starts `rush train <session dir>` as a child process of the daemon, with a parent-death signal
//! so it never outlives the daemon, in its own process group, its stdout (events) and stderr (log) piped back. The
//! Slurm executor (`crate::slurm`) submits a batch job instead and follows the session's `events.jsonl`; the runner
//! stays the same. The submission worker only needs an [`Inference`] run to its end: a `rush infer` child here, a
//! batch job there; it reads the files either writes the same way.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::future::BoxFuture;
use futures::stream::{BoxStream, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use crate::core::outcome::Exit;
use crate::core::queue::SlotKind;
use crate::core::session::SessionId;
use crate::submit::Tta;

#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    #[error("could not start {program}: {source}")]
    Spawn { program: PathBuf, source: io::Error },
}

/// One session to start.
#[derive(Debug, Clone)]
pub struct Launch {
    pub session: SessionId,
    /// The session folder (holds `spec.yaml`).
    pub dir: PathBuf,
    pub slot: SlotKind,
    /// The daemon's shutdown: a child that outlives the daemon (a Slurm job) detaches instead of stopping.
    pub shutdown: tokio_util::sync::CancellationToken,
}

/// How to recognise a child process later: its pid and its start time in clock ticks after boot
/// (`/proc/<pid>/stat` field 22), so a recycled pid is never mistaken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildId {
    pub pid: u32,
    pub start: Option<u64>,
}

/// How the runner asks a child to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    /// Please stop (SIGTERM).
    Term,
    /// Now (SIGKILL).
    Kill,
}

/// Control over a started child.
pub trait ChildControl: Send {
    fn signal(&self, signal: StopSignal);
    /// Resolves when the child has ended. Cancel-safe: it may be polled again after being dropped unfinished.
    fn wait(&mut self) -> BoxFuture<'_, Exit>;
}

/// A started child: who it is, what it says, and its control.
pub struct Launched {
    pub id: ChildId,
    /// Raw lines of the event stream (one JSON object each).
    pub events: BoxStream<'static, io::Result<String>>,
    /// Human-readable log lines (the child's stderr).
    pub log: BoxStream<'static, io::Result<String>>,
    pub control: Box<dyn ChildControl>,
}

/// One member inference of a submission: `rush infer <session dir> --epoch E --out DIR --tta T [--dry-run]`, its
/// stderr appended to the submission's `infer.log`.
#[derive(Debug, Clone)]
pub struct Inference {
    pub submission: i64,
    pub session: SessionId,
    pub session_dir: PathBuf,
    pub epoch: u32,
    pub tta: Tta,
    pub dry_run: bool,
    /// The board's public share (`public_percent`): a dry run predicts public stickers only.
    pub public_percent: u8,
    /// The member's output folder (it exists): `test.npy`, `valid.npy` and `infer.json` go there.
    pub out: PathBuf,
    /// `infer.log` in the submission folder.
    pub log: PathBuf,
    /// The slot the submission holds: its device.
    pub slot: SlotKind,
    /// The daemon's shutdown: the inference stops and the submission goes back to the queue.
    pub shutdown: tokio_util::sync::CancellationToken,
}

/// How an inference ended without its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InferenceEnd {
    /// The daemon is shutting down; the child is gone.
    Interrupted,
    /// Why it failed, for the submission's error.
    Failed(String),
}

impl Inference {
    /// `rush infer`'s arguments from `infer` on, without the device.
    pub fn args(&self) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "infer".into(),
            self.session_dir.display().to_string(),
            "--epoch".into(),
            self.epoch.to_string(),
            "--out".into(),
            self.out.display().to_string(),
            "--tta".into(),
            self.tta.to_string(),
        ];
        if self.dry_run {
            args.push("--dry-run".into());
            args.push("--public-percent".into());
            args.push(self.public_percent.to_string());
        }
        args
    }

    /// The submission folder (`infer.log`'s).
    pub fn submission_dir(&self) -> &Path {
        self.log.parent().unwrap_or(&self.out)
    }

    /// Appends a line to `infer.log` (best effort: the log is for people).
    pub fn note(&self, line: &str) {
        use std::io::Write;
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&self.log);
        if let Ok(mut file) = file {
            let _ = writeln!(file, "{line}");
        }
    }

    /// A failure of this inference: `how` it ended, then the last lines of `infer.log`.
    pub fn failed(&self, how: &str) -> InferenceEnd {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(5).collect::<Vec<_>>().into_iter().rev().collect();
        InferenceEnd::Failed(format!(
            "inference of {}:{} failed ({how}): {}",
            self.session,
            self.epoch,
            tail.join(" | ")
        ))
    }
}

/// Starts training children and runs inferences.
pub trait Executor: Send + Sync + 'static {
    fn launch(&self, launch: &Launch) -> Result<Launched, ExecutorError>;

    /// Runs one inference to its end; `Ok` once it has written its files.
    fn infer<'a>(&'a self, inference: &'a Inference) -> BoxFuture<'a, Result<(), InferenceEnd>>;
}

/// Runs children on this machine: `<program> train <session dir>`, `CUDA_VISIBLE_DEVICES` set to the slot's GPU (or
/// empty plus `--device cpu` for a CPU slot). The environment loses `RUSH_HOME`, `RUSH_URL` and `RUSH_TOKEN`: a child
/// knows its session folder and its dataset folder, nothing else of the home.
#[derive(Debug, Clone)]
pub struct LocalExecutor {
    pub program: PathBuf,
}

impl LocalExecutor {
    /// Runs this very binary as the trainer.
    pub fn current_exe() -> io::Result<Self> {
        Ok(Self { program: std::env::current_exe()? })
    }
}

impl Executor for LocalExecutor {
    fn launch(&self, launch: &Launch) -> Result<Launched, ExecutorError> {
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.arg("train").arg(&launch.dir);
        match launch.slot {
            SlotKind::Gpu(i) => {
                cmd.env("CUDA_VISIBLE_DEVICES", i.to_string());
            }
            SlotKind::Cpu(_) => {
                cmd.env("CUDA_VISIBLE_DEVICES", "").arg("--device").arg("cpu");
            }
        }
        cmd.env_remove("RUSH_HOME").env_remove("RUSH_URL").env_remove("RUSH_TOKEN");
        cmd.current_dir(&launch.dir).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.kill_on_drop(true);
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: only async-signal-safe calls (prctl, getppid, setpgid, _exit) run between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                // Die with the daemon (the signal fires when the spawning thread ends; tokio's worker threads live
                // as long as the runtime, which is as long as the daemon).
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The daemon may have died between fork and prctl: then no signal would ever come.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                // Its own process group: a Ctrl-C in the daemon's terminal reaches the daemon, which stops children
                // cleanly, and a stop reaches the whole group.
                libc::setpgid(0, 0);
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|source| ExecutorError::Spawn { program: self.program.clone(), source })?;
        let pid = child.id().unwrap_or(0);
        let id = ChildId { pid, start: process_start(pid) };
        let events = match child.stdout.take() {
            Some(out) => lines(out),
            None => futures::stream::empty().boxed(),
        };
        let log = match child.stderr.take() {
            Some(err) => lines(err),
            None => futures::stream::empty().boxed(),
        };
        let control = LocalChild { child, pid, reaped: Arc::new(AtomicBool::new(false)) };
        Ok(Launched { id, events, log, control: Box::new(control) })
    }

    /// `<program> infer ...` as a child in the submission's slot (as a training child's device is chosen), killed on
    /// shutdown.
    fn infer<'a>(&'a self, inference: &'a Inference) -> BoxFuture<'a, Result<(), InferenceEnd>> {
        Box::pin(async move {
            let failed = |e: &dyn std::fmt::Display| InferenceEnd::Failed(e.to_string());
            let mut args = inference.args();
            let mut cmd = tokio::process::Command::new(&self.program);
            match inference.slot {
                SlotKind::Gpu(i) => {
                    cmd.env("CUDA_VISIBLE_DEVICES", i.to_string());
                }
                SlotKind::Cpu(_) => {
                    cmd.env("CUDA_VISIBLE_DEVICES", "");
                    args.extend(["--device".into(), "cpu".into()]);
                }
            }
            let log_path = &inference.log;
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log_path)
                .map_err(|e| failed(&format!("{}: {e}", log_path.display())))?;
            inference.note(&format!("[rush] {} in {}: rush {}", inference.session, inference.slot, args.join(" ")));
            cmd.args(&args)
                .env_remove("RUSH_HOME")
                .env_remove("RUSH_URL")
                .env_remove("RUSH_TOKEN")
                .current_dir(&inference.out)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .kill_on_drop(true);
            let mut child = cmd.spawn().map_err(|e| failed(&format!("starting {}: {e}", self.program.display())))?;
            let status = tokio::select! {
                status = child.wait() => status.map_err(|e| failed(&format!("waiting for rush infer: {e}")))?,
                _ = inference.shutdown.cancelled() => {
                    let _ = child.kill().await;
                    return Err(InferenceEnd::Interrupted);
                }
            };
            if !status.success() {
                return Err(inference.failed(&status.to_string()));
            }
            Ok(())
        })
    }
}

/// A pipe as a stream of lines.
fn lines<R: AsyncRead + Unpin + Send + 'static>(pipe: R) -> BoxStream<'static, io::Result<String>> {
    futures::stream::unfold(BufReader::new(pipe).lines(), |mut lines| async move {
        lines.next_line().await.transpose().map(|line| (line, lines))
    })
    .boxed()
}

struct LocalChild {
    child: tokio::process::Child,
    pid: u32,
    reaped: Arc<AtomicBool>,
}

impl ChildControl for LocalChild {
    fn signal(&self, signal: StopSignal) {
        if self.reaped.load(Ordering::Acquire) || self.pid == 0 {
            return;
        }
        let sig = match signal {
            StopSignal::Term => libc::SIGTERM,
            StopSignal::Kill => libc::SIGKILL,
        };
        // The group first (the child leads it), then the child itself in case it left the group.
        // SAFETY: plain syscalls on a pid we have not reaped yet, so it cannot have been recycled.
        unsafe {
            libc::kill(-(self.pid as libc::pid_t), sig);
            libc::kill(self.pid as libc::pid_t, sig);
        }
    }

    fn wait(&mut self) -> BoxFuture<'_, Exit> {
        Box::pin(async move {
            let status = self.child.wait().await;
            self.reaped.store(true, Ordering::Release);
            match status {
                Ok(s) => exit_of(s),
                Err(e) => {
                    tracing::warn!("waiting for child {}: {e}", self.pid);
                    Exit::Unknown
                }
            }
        })
    }
}

fn exit_of(status: std::process::ExitStatus) -> Exit {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => Exit::Code(code),
        (None, Some(sig)) => Exit::Signal(sig),
        (None, None) => Exit::Unknown,
    }
}

/// A process's start time in clock ticks after boot (`/proc/<pid>/stat` field 22), if it exists.
pub fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start(&stat)
}

/// Field 22 of a `/proc/<pid>/stat` line. The command name (field 2) may hold spaces and parentheses, so fields are
/// counted after its last `)`.
fn parse_start(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether `pid` is still the process recorded as `id` (same start time) and not a zombie.
pub fn is_same_process(id: ChildId) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", id.pid)) else {
        return false;
    };
    let state = stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next().map(str::to_string));
    if state.as_deref() == Some("Z") {
        return false;
    }
    match (id.start, parse_start(&stat)) {
        (Some(want), Some(got)) => want == got,
        // Without a recorded start time we cannot be sure it is ours: leave it alone.
        _ => false,
    }
}

/// Kills a child left by an earlier daemon (found by pid and start time), and waits up to `patience` for it to go.
/// Returns whether such a process was found.
pub async fn kill_stale(id: ChildId, patience: std::time::Duration) -> bool {
    if id.pid == 0 || !is_same_process(id) {
        return false;
    }
    // SAFETY: plain syscalls; the start time matched, so the pid is the stale child (or its group).
    unsafe {
        libc::kill(-(id.pid as libc::pid_t), libc::SIGKILL);
        libc::kill(id.pid as libc::pid_t, libc::SIGKILL);
    }
    let deadline = tokio::time::Instant::now() + patience;
    while is_same_process(id) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_is_field_22_even_with_odd_command_names() {
        let line = "4242 (rush (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 12 0 987654 1000 200";
        assert_eq!(parse_start(line), Some(987654));
        assert_eq!(parse_start("garbage"), None);
        let me = process_start(std::process::id());
        assert!(me.is_some());
        assert!(is_same_process(ChildId { pid: std::process::id(), start: me }));
        assert!(!is_same_process(ChildId { pid: std::process::id(), start: me.map(|s| s + 1) }));
        assert!(!is_same_process(ChildId { pid: std::process::id(), start: None }));
    }

    #[tokio::test]
    async fn a_stale_child_is_found_by_pid_and_start_time_and_killed() {
        let mut sleeper = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let id = ChildId { pid: sleeper.id(), start: process_start(sleeper.id()) };
        // A recycled pid (another start time) is left alone.
        let other = ChildId { pid: id.pid, start: id.start.map(|s| s + 7) };
        assert!(!kill_stale(other, std::time::Duration::from_secs(1)).await);
        assert!(is_same_process(id));
        assert!(kill_stale(id, std::time::Duration::from_secs(5)).await);
        assert!(!is_same_process(id));
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(sleeper.wait().unwrap().signal(), Some(libc::SIGKILL));
        assert!(!kill_stale(id, std::time::Duration::from_secs(1)).await, "gone: nothing to kill");
    }

    #[tokio::test]
    async fn local_child_gets_its_environment_and_stops_on_term() {
        let dir = tempfile::tempdir().unwrap();
        // A stand-in program that prints its arguments and environment, then sleeps: exercises the plumbing only.
        let script = dir.path().join("fake-rush");
        std::fs::write(
            &script,
            "#!/bin/sh\necho \"{\\\"args\\\":\\\"$*\\\",\\\"cuda\\\":\\\"$CUDA_VISIBLE_DEVICES\\\"}\"\n\
             echo to-stderr >&2\nexec sleep 30\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let exec = LocalExecutor { program: script };
        let launch = Launch {
            session: "local/emoji/1".parse().unwrap(),
            dir: dir.path().into(),
            slot: SlotKind::Cpu(0),
            shutdown: Default::default(),
        };
        let mut child = exec.launch(&launch).unwrap();
        assert!(child.id.start.is_some());
        let line = child.events.next().await.unwrap().unwrap();
        assert!(line.contains(&format!("train {} --device cpu", dir.path().display())), "{line}");
        assert!(line.contains("\"cuda\":\"\""), "{line}");
        assert_eq!(child.log.next().await.unwrap().unwrap(), "to-stderr");
        child.control.signal(StopSignal::Term);
        assert_eq!(child.control.wait().await, Exit::Signal(libc::SIGTERM));
        assert!(!is_same_process(child.id));
        child.control.signal(StopSignal::Kill); // after reaping: a no-op
    }
}
