//! Where the daemon's children run, a session's training and a submission's member inference: the seam between the
//! runner (or the submission worker) and the machine.
//!
//! The runner only needs the child's event lines, its log lines, a way to ask it to stop and its exit. The
//! [`LocalExecutor`] starts `rush train <session dir>` as a child process of the daemon through the one launcher
//! ([`super::launcher`]: parent-death signal, own process group, the slot's device), its stdout (events) and stderr
//! (log) piped back. Another executor (the Slurm one, wired in by `serve`) submits a batch job instead and follows the
//! session's `events.jsonl`; the runner stays the same. The submission worker only needs an [`Inference`] run to its
//! end: a `rush infer` child here (started through the same launcher), a batch job there; it reads the files either
//! writes the same way.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::future::BoxFuture;
use futures::stream::{BoxStream, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

pub use super::launcher::ChildId;
use super::launcher::{self, ChildSpec, Spawned};
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
    /// Told of the child process, once started and before it is waited for.
    pub on_start: OnStart,
}

/// Told of each local child an inference starts, before it is waited for: the submission worker records its pid and
/// start time, so that a restarted daemon kills a child that outlived the daemon that started it.
#[derive(Clone)]
pub struct OnStart(Arc<dyn Fn(ChildId) -> BoxFuture<'static, ()> + Send + Sync>);

impl OnStart {
    pub fn new(f: impl Fn(ChildId) -> BoxFuture<'static, ()> + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    /// Nobody to tell.
    pub fn ignore() -> Self {
        Self::new(|_| Box::pin(async {}))
    }

    pub async fn started(&self, id: ChildId) {
        (self.0)(id).await
    }
}

impl std::fmt::Debug for OnStart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnStart")
    }
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

/// Runs children on this machine through the launcher: `<program> train <session dir>` and `<program> infer ...`, in
/// the slot's device (a CPU slot adds `--device cpu`).
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
        let mut args: Vec<OsString> = vec!["train".into(), launch.dir.clone().into()];
        if matches!(launch.slot, SlotKind::Cpu(_)) {
            args.extend(["--device".into(), "cpu".into()]);
        }
        let spec = ChildSpec {
            program: self.program.clone(),
            args,
            slot: launch.slot,
            dir: launch.dir.clone(),
            stdout: Stdio::piped(),
            stderr: Stdio::piped(),
        };
        let Spawned { mut child, id } =
            launcher::spawn(spec).map_err(|source| ExecutorError::Spawn { program: self.program.clone(), source })?;
        let events = match child.stdout.take() {
            Some(out) => lines(out),
            None => futures::stream::empty().boxed(),
        };
        let log = match child.stderr.take() {
            Some(err) => lines(err),
            None => futures::stream::empty().boxed(),
        };
        let control = LocalChild { child, pid: id.pid, reaped: Arc::new(AtomicBool::new(false)) };
        Ok(Launched { id, events, log, control: Box::new(control) })
    }

    /// `<program> infer ...` as a child in the submission's slot (as a training child's device is chosen), killed on
    /// shutdown.
    fn infer<'a>(&'a self, inference: &'a Inference) -> BoxFuture<'a, Result<(), InferenceEnd>> {
        Box::pin(async move {
            let failed = |e: &dyn std::fmt::Display| InferenceEnd::Failed(e.to_string());
            let mut args = inference.args();
            if matches!(inference.slot, SlotKind::Cpu(_)) {
                args.extend(["--device".into(), "cpu".into()]);
            }
            let log_path = &inference.log;
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log_path)
                .map_err(|e| failed(&format!("{}: {e}", log_path.display())))?;
            inference.note(&format!("[rush] {} in {}: rush {}", inference.session, inference.slot, args.join(" ")));
            let spec = ChildSpec {
                program: self.program.clone(),
                args: args.into_iter().map(OsString::from).collect(),
                slot: inference.slot,
                dir: inference.out.clone(),
                stdout: Stdio::null(),
                stderr: Stdio::from(log),
            };
            let Spawned { mut child, id } =
                launcher::spawn(spec).map_err(|e| failed(&format!("starting {}: {e}", self.program.display())))?;
            inference.on_start.started(id).await;
            let status = tokio::select! {
                status = child.wait() => status.map_err(|e| failed(&format!("waiting for rush infer: {e}")))?,
                _ = inference.shutdown.cancelled() => {
                    launcher::signal_group(id.pid, libc::SIGKILL);
                    let _ = child.wait().await;
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
        // Not reaped yet, so the pid cannot have been recycled.
        launcher::signal_group(self.pid, sig);
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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(!launcher::is_same_process(child.id));
        child.control.signal(StopSignal::Kill); // after reaping: a no-op
    }

    #[tokio::test]
    async fn an_inference_child_is_recorded_and_its_whole_group_killed_on_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("infer-0");
        std::fs::create_dir_all(&out).unwrap();
        // A stand-in `rush infer` that starts a grandchild (as a data loader would) and waits.
        let script = dir.path().join("fake-rush");
        std::fs::write(&script, "#!/bin/sh\necho \"got $*\" >&2\nsleep 30 &\necho $! > grandchild\nwait\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let recorded = Arc::new(std::sync::Mutex::new(None));
        let shutdown = tokio_util::sync::CancellationToken::new();
        let inference = Inference {
            submission: 7,
            session: "local/emoji/1".parse().unwrap(),
            session_dir: dir.path().join("session"),
            epoch: 3,
            tta: Tta::None,
            dry_run: false,
            public_percent: 30,
            out: out.clone(),
            log: dir.path().join("infer.log"),
            slot: SlotKind::Cpu(0),
            shutdown: shutdown.clone(),
            on_start: {
                let recorded = recorded.clone();
                OnStart::new(move |id| {
                    *recorded.lock().unwrap() = Some(id);
                    Box::pin(async {})
                })
            },
        };
        let exec = LocalExecutor { program: script };
        let run = exec.infer(&inference);
        let cancel = async {
            let grandchild = loop {
                if let Ok(text) = std::fs::read_to_string(out.join("grandchild"))
                    && let Ok(pid) = text.trim().parse::<u32>()
                {
                    break pid;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            };
            shutdown.cancel();
            grandchild
        };
        let (ended, grandchild) = tokio::join!(run, cancel);
        assert_eq!(ended, Err(InferenceEnd::Interrupted));
        let child = recorded.lock().unwrap().expect("the child was reported before it was waited for");
        assert!(child.start.is_some());
        assert!(!launcher::is_same_process(child));
        let grandchild = ChildId { pid: grandchild, start: launcher::process_start(grandchild) };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while grandchild.start.is_some() && launcher::is_same_process(grandchild) {
            assert!(std::time::Instant::now() < deadline, "the grandchild outlived the stopped inference");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let log = std::fs::read_to_string(dir.path().join("infer.log")).unwrap();
        assert!(log.contains("got infer") && log.contains("--epoch 3") && log.contains("--device cpu"), "{log}");
    }
}
