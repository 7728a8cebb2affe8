//! `rush train` and `rush infer` of a code session: the process the daemon (or a Slurm job) starts, which runs the
//! user's `python ENTRY ARGS` in the session's copy of the code and stands between it and rush.
//!
//! Training: the child gets the `nsml` module on its `PYTHONPATH` and a pipe on fd 3 (`RUSH_EVENTS_FD`) for its event
//! lines; its stdout and stderr are this process's stderr (the session's `train.log`). Each line the module writes is
//! checked (a code session may report metrics and checkpoints, or fail; a checkpoint must be a folder under
//! `checkpoints/` that exists) and passed on to this process's stdout and the session's `events.jsonl`, the same
//! stream a built-in session writes. When the code exits 0 the session finished; a signal or another code is passed
//! on. A fork's checkpoint, or with `resume: true` the session's own last one, is handed to the code's bound `load`
//! (`RUSH_INIT_CHECKPOINT`).
//!
//! Inference (a submission): the code runs with `--mode test --pause 1 --iteration CKPT`; `nsml.paused` loads the
//! checkpoint, calls the bound `infer` on the test split (and the validation split, unless a dry run) and saves what
//! it returns; this process turns that into the member's `test.npy`/`valid.npy` probabilities and `infer.json`, as
//! `rush infer` of a built-in session writes them. The test labels are never in the child's reach.

use std::ffi::OsString;
use std::io::{BufRead, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::sandbox::{self, Binds, Bwrap};
use super::{CodeError, NSML_PY, python};
use crate::core::event::{Event, EventLine};
use crate::core::spec::{BestMetric, CodeRuntime, MetricMode, ResolvedSpec};
use crate::data::layout::NUM_TAGS;
use crate::home::SessionDir;
use crate::submit::npy::{self, InferOutput};
use crate::submit::report::{InferReport, REPORT};

/// The session's copy of the code.
pub const CODE_DIR: &str = "code";
/// Where the `nsml` module is written in the session folder (put on the child's `PYTHONPATH`).
const MODULE_DIR: &str = ".rush/py";
/// The child's end of the event pipe.
const EVENTS_FD: i32 = 3;
/// The most metrics one report may carry, and the longest metric name.
const MAX_METRICS: usize = 64;
const MAX_NAME: usize = 64;

/// Reads a session's `spec.yaml`.
pub fn resolved(session_dir: &Path) -> Result<ResolvedSpec, CodeError> {
    let path = SessionDir::new(session_dir).spec();
    let text = std::fs::read_to_string(&path).map_err(|source| CodeError::Io { path: path.clone(), source })?;
    ResolvedSpec::from_yaml(&path.display().to_string(), &text).map_err(|e| CodeError::Invalid(e.to_string()))
}

/// How a child ended, for the caller to pass on as its own exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Code(i32),
    Signal(i32),
}

/// Ends this process the way the child ended: the same exit code, or the same signal.
pub fn pass_on(ended: Ended) -> ! {
    if let Ended::Signal(sig) = ended {
        // SAFETY: restoring the default action and raising the signal at ourselves.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
        }
    }
    std::process::exit(match ended {
        Ended::Code(c) => c,
        Ended::Signal(s) => 128 + s,
    })
}

/// Everything both runs need: the spec, where things are, the interpreter and the sandbox.
struct Prepared {
    resolved: ResolvedSpec,
    dir: PathBuf,
    entry: String,
    runtime: CodeRuntime,
    python: PathBuf,
    env_dir: Option<PathBuf>,
    bwrap: Option<Bwrap>,
}

fn prepare(session_dir: &Path, log: &mut dyn Write) -> Result<Prepared, CodeError> {
    let resolved = resolved(session_dir)?;
    let entry = resolved.spec.entry.clone().ok_or_else(|| CodeError::Invalid("not a code session".into()))?;
    let dir =
        std::fs::canonicalize(session_dir).map_err(|source| CodeError::Io { path: session_dir.into(), source })?;
    let code = dir.join(CODE_DIR);
    if !code.join(&entry).is_file() {
        return Err(CodeError::NoEntry { entry, dir: code });
    }
    let runtime = resolved.runtime.clone().unwrap_or_else(|| CodeRuntime {
        python: PathBuf::from("python3"),
        sandbox: true,
        envs: dir.join(".rush/envs"),
    });
    let module = dir.join(MODULE_DIR).join("nsml");
    std::fs::create_dir_all(&module).map_err(|source| CodeError::Io { path: module.clone(), source })?;
    crate::disk::write_atomic(&module.join("__init__.py"), NSML_PY.as_bytes())
        .map_err(|e| CodeError::Io { path: module.clone(), source: std::io::Error::other(e.to_string()) })?;
    let (python, env_dir) = python::interpreter(&runtime.python, &code, &runtime.envs, log)?;
    let bwrap = if runtime.sandbox { Some(Bwrap::probe().map_err(CodeError::Sandbox)?) } else { None };
    Ok(Prepared { resolved, dir, entry, runtime, python, env_dir, bwrap })
}

impl Prepared {
    /// The command for `python ENTRY ARGS extra`, sandboxed or not, with a clean environment; `binds` adds to the
    /// session's (writable when `session_rw`) and the dataset's.
    fn command(&self, extra: &[String], mut binds: Binds, session_rw: bool, env: &[(&str, String)]) -> Command {
        let (session, dataset) = match self.bwrap {
            Some(_) => (PathBuf::from(sandbox::SESSION), PathBuf::from(sandbox::DATASET)),
            None => (self.dir.clone(), self.resolved.dataset_path.clone()),
        };
        let mut args: Vec<OsString> = vec![self.entry.clone().into()];
        args.extend(self.resolved.spec.arg_list().unwrap_or_default().into_iter().map(OsString::from));
        args.extend(extra.iter().map(OsString::from));
        let gpu = std::env::var("CUDA_VISIBLE_DEVICES").is_ok_and(|v| !v.trim().is_empty());
        let mut cmd = match &self.bwrap {
            Some(bwrap) => {
                binds.python.extend(sandbox::python_roots(&self.runtime.python));
                binds.python.extend(self.env_dir.iter().cloned());
                let (ro, rw) = (&mut binds.read_only, &mut binds.writable);
                if session_rw { rw } else { ro }.insert(0, (self.dir.clone(), session.clone()));
                if session_rw {
                    let files = SessionDir::new(&self.dir);
                    for file in [files.spec(), files.events()] {
                        // Bound over the writable session folder, so the file must exist first.
                        let _ = std::fs::OpenOptions::new().create(true).append(true).open(&file);
                        let name = file.file_name().map(PathBuf::from).unwrap_or_default();
                        binds.protected.push((file, session.join(name)));
                    }
                }
                binds.read_only.push((self.resolved.dataset_path.clone(), dataset.clone()));
                binds.gpu = gpu;
                binds.chdir = Some(session.join(CODE_DIR));
                bwrap.command(&binds, &self.python, &args)
            }
            None => {
                let mut cmd = Command::new(&self.python);
                cmd.args(&args).current_dir(self.dir.join(CODE_DIR));
                cmd
            }
        };
        // A clean environment: the daemon's own variables stay out of users' code.
        cmd.env_clear();
        let keep = ["PATH", "LANG", "LC_ALL", "TZ", "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "MKL_NUM_THREADS"];
        for name in keep {
            if let Some(v) = std::env::var_os(name) {
                cmd.env(name, v);
            }
        }
        if self.bwrap.is_some() {
            cmd.env("HOME", "/tmp");
        } else if let Some(home) = std::env::var_os("HOME") {
            cmd.env("HOME", home);
        }
        cmd.env("PYTHONUNBUFFERED", "1")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PYTHONPATH", session.join(MODULE_DIR))
            .env("NSML_DATASET_PATH", &dataset)
            .env("NSML_DATASET_NAME", &self.resolved.spec.dataset)
            .env("NSML_SESSION", &self.resolved.session)
            .env("RUSH_SESSION_DIR", &session)
            .env("RUSH_GPU_NUM", if gpu { "1" } else { "0" });
        if let Some(best) = &self.resolved.spec.best_metric {
            cmd.env("RUSH_BEST_METRIC", &best.name);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null());
        cmd
    }
}

/// Where another session's checkpoints are copied for `nsml.load(session=...)`, under the session folder (training)
/// or the output folder (a submission).
const LOADED_DIR: &str = ".rush/loaded";
/// The child's end of the reply pipe.
const REPLY_FD: i32 = 4;

/// The session folder as the code sees it.
fn session_inside(p: &Prepared) -> PathBuf {
    if p.bwrap.is_some() { PathBuf::from(sandbox::SESSION) } else { p.dir.clone() }
}

impl Prepared {
    /// Starts `cmd` with the event pipe on fd 3 and the reply pipe on fd 4, its stdout on this process's stderr, and
    /// this process deaf to the stop signals its group gets (the child handles them; this process waits for its
    /// end). Copies for `nsml.load(session=...)` go to `host` (seen as `inside`).
    fn spawn(
        &self,
        mut cmd: Command,
        host: PathBuf,
        inside: PathBuf,
    ) -> Result<(std::process::Child, std::fs::File, Loads), CodeError> {
        let io = |what: &str, source| CodeError::Io { path: what.into(), source };
        let (events_read, events_write) = pipe().map_err(|e| io("event pipe", e))?;
        let (reply_read, reply_write) = pipe().map_err(|e| io("reply pipe", e))?;
        let (events_fd, reply_fd) = (events_write.as_raw_fd(), reply_read.as_raw_fd());
        let stdout = std::io::stderr().as_fd_owned().map_err(|e| io("stderr", e))?;
        cmd.stdout(Stdio::from(stdout))
            .env("RUSH_EVENTS_FD", EVENTS_FD.to_string())
            .env("RUSH_REPLY_FD", REPLY_FD.to_string());
        use std::os::unix::process::CommandExt;
        // SAFETY: only async-signal-safe calls between fork and exec: the pipes' ends become fds 3 and 4 (dup2 clears
        // close-on-exec), and the signals this process ignores are reset for the child.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(events_fd, EVENTS_FD) < 0 || libc::dup2(reply_fd, REPLY_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::signal(libc::SIGTERM, libc::SIG_DFL);
                libc::signal(libc::SIGINT, libc::SIG_DFL);
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|source| CodeError::Io { path: self.python.clone(), source })?;
        drop((events_write, reply_read));
        // SAFETY: ignoring signals in this single-purpose process.
        unsafe {
            libc::signal(libc::SIGTERM, libc::SIG_IGN);
            libc::signal(libc::SIGINT, libc::SIG_IGN);
        }
        let own = self.resolved.session.parse().map_err(|e: crate::core::session::SessionError| {
            CodeError::Invalid(format!("spec.yaml: session {:?}: {e}", self.resolved.session))
        })?;
        // `<home>/sessions/<user>/<dataset>/<n>`: three folders up are the home's sessions.
        let sessions = self.dir.ancestors().nth(3).map(Path::to_path_buf).unwrap_or_default();
        std::fs::create_dir_all(&host).map_err(|e| CodeError::Io { path: host.clone(), source: e })?;
        let loads = Loads { reply: std::fs::File::from(reply_write), own, sessions, host, inside };
        Ok((child, std::fs::File::from(events_read), loads))
    }
}

/// The checkpoint folder a training run starts from: a fork's parent checkpoint, or with `resume: true` the
/// session's own newest checkpoint that still exists (by its events).
fn start_from(p: &Prepared) -> Result<Option<PathBuf>, CodeError> {
    if let Some(init) = &p.resolved.init_from {
        // The parent's checkpoint folder is bound into this sandbox as it resolves on the host: its code may have
        // left a symbolic link there (to the labels); only a real folder in a real `checkpoints/` is bound.
        if !(is_real_dir(init) && init.parent().is_some_and(is_real_dir)) {
            return Err(CodeError::Invalid(format!(
                "the checkpoint to start from, {}, is not a folder of its session (a symbolic link?)",
                init.display()
            )));
        }
        return Ok(Some(init.clone()));
    }
    if !p.resolved.spec.resume {
        return Ok(None);
    }
    let dir = SessionDir::new(&p.dir);
    let Ok(text) = std::fs::read_to_string(dir.events()) else { return Ok(None) };
    Ok(text
        .lines()
        .rev()
        .filter_map(|l| EventLine::parse(l).ok())
        .filter_map(|l| match l.event {
            Event::Checkpoint { path, .. } => Some(p.dir.join(path)),
            _ => None,
        })
        .find(|path| is_real_dir(path)))
}

/// `rush train SESSION_DIR` of a code session. Errors before the child starts are returned (the caller prints them
/// and fails); after, the child's end is.
pub fn train(session_dir: &Path) -> Result<Ended, CodeError> {
    let mut log = std::io::stderr();
    let p = prepare(session_dir, &mut log)?;
    let mut binds = Binds::default();
    let mut env: Vec<(&str, String)> = vec![];
    if let Some(init) = start_from(&p)? {
        let inside = match p.bwrap {
            Some(_) if init.starts_with(&p.dir) => {
                PathBuf::from(sandbox::SESSION).join(init.strip_prefix(&p.dir).unwrap_or(&init))
            }
            Some(_) => {
                binds.read_only.push((init.clone(), PathBuf::from(sandbox::INIT)));
                PathBuf::from(sandbox::INIT)
            }
            None => init.clone(),
        };
        let _ = writeln!(log, "[rush] the code's bound load() gets {} first", inside.display());
        env.push(("RUSH_INIT_CHECKPOINT", inside.display().to_string()));
    }
    let cmd = p.command(&[], binds, true, &env);
    let _ = writeln!(
        log,
        "[rush] code session: python {} {}{}",
        p.entry,
        p.resolved.spec.args,
        if p.bwrap.is_some() { " (sandboxed by bubblewrap)" } else { " (sandbox: off)" }
    );
    let (mut child, events, mut loads) = p.spawn(cmd, p.dir.join(LOADED_DIR), session_inside(&p).join(LOADED_DIR))?;
    let summary = relay(events, &p.dir, p.resolved.spec.best_metric.as_ref(), &mut loads, true, &mut log);
    let status = child.wait().map_err(|source| CodeError::Io { path: p.python.clone(), source })?;
    use std::os::unix::process::ExitStatusExt;
    let ended = match (status.code(), status.signal()) {
        (Some(c), _) => Ended::Code(c),
        (None, Some(s)) => Ended::Signal(s),
        (None, None) => Ended::Code(1),
    };
    if ended == Ended::Code(0) {
        let finished = Event::Finished { epochs: summary.epochs, best_val_acc: summary.best_val_acc };
        emit(&EventLine::new(finished, now()), &p.dir);
    } else {
        let _ = writeln!(log, "[rush] python {} ended: {}", p.entry, status);
    }
    Ok(ended)
}

/// What the relay saw: the last epoch reported or saved, the best validation accuracy.
#[derive(Debug, Default)]
struct Summary {
    epochs: u32,
    best_val_acc: f64,
}

/// What the code reported so far: each metric's latest value, and the names in the order first reported.
#[derive(Debug, Default)]
struct Reported {
    order: Vec<String>,
    latest: std::collections::HashMap<String, f64>,
}

impl Reported {
    fn add(&mut self, metrics: &std::collections::BTreeMap<String, f64>) {
        for (name, value) in metrics {
            if self.latest.insert(name.clone(), *value).is_none() {
                self.order.push(name.clone());
            }
        }
    }

    /// A checkpoint's `val_acc` (the latest value of a metric that stands for it), and its ranking: the spec's
    /// `best_metric`, else the first reported metric whose name says validation and accuracy; with none, the epoch
    /// (the latest is best).
    fn rank(&self, best: Option<&BestMetric>, epoch: u32) -> (f64, f64, Option<String>) {
        let val_acc = self
            .order
            .iter()
            .find(|n| crate::core::event::standard_metric(n) == Some("val_acc"))
            .and_then(|n| self.latest.get(n).copied())
            .unwrap_or(0.0);
        let (name, mode) = match best {
            Some(b) => (Some(b.name.clone()), b.mode),
            None => {
                let auto = self.order.iter().find(|n| {
                    let lower = n.to_ascii_lowercase();
                    lower.contains("val") && lower.contains("acc")
                });
                (auto.cloned(), MetricMode::Max)
            }
        };
        match name.and_then(|n| self.latest.get(&n).map(|v| (n, *v))) {
            Some((n, v)) => (val_acc, if mode == MetricMode::Min { -v } else { v }, Some(n)),
            None => (val_acc, f64::from(epoch), None),
        }
    }
}

/// Passes the child's event lines on (stdout and `events.jsonl`), each checked first; a bad line is logged and
/// dropped, never fatal. Checkpoints get their `val_acc` and ranking from what was reported before them.
fn relay(
    pipe: std::fs::File,
    dir: &Path,
    best: Option<&BestMetric>,
    loads: &mut Loads,
    record: bool,
    log: &mut dyn Write,
) -> Summary {
    let mut summary = Summary::default();
    let mut reported = Reported::default();
    let reader = std::io::BufReader::new(pipe);
    for line in reader.split(b'\n') {
        let Ok(line) = line else { break };
        let text = String::from_utf8_lossy(&line);
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        if text.starts_with(r#"{"request""#) {
            loads.answer(text, log);
            continue;
        }
        if !record {
            continue; // a submission's run: its events are no training's
        }
        match check(text, dir) {
            Ok(mut event) => {
                match &mut event.event {
                    Event::Checkpoint { epoch, val_acc, score, best_by, .. } => {
                        let (acc, rank, by) = reported.rank(best, *epoch);
                        (*val_acc, *score, *best_by) = (acc, Some(rank), by);
                        summary.epochs = summary.epochs.max(*epoch);
                        summary.best_val_acc = summary.best_val_acc.max(*val_acc);
                    }
                    Event::Report { step, metrics, .. } => {
                        reported.add(metrics);
                        summary.epochs = summary.epochs.max(u32::try_from(*step).unwrap_or(0));
                    }
                    _ => {}
                }
                emit(&event, dir);
            }
            Err(reason) => {
                let _ = writeln!(log, "[rush] ignored an event line from the code: {reason}");
            }
        }
    }
    summary
}

/// Checks one line from the code: the events it may send, within bounds. A checkpoint's path is rewritten from its
/// name and its size measured here: the code never names a path the daemon deletes.
fn check(line: &str, dir: &Path) -> Result<EventLine, String> {
    let mut parsed = EventLine::parse(line).map_err(|e| e.to_string())?;
    match &mut parsed.event {
        Event::Report { metrics, .. } => {
            if metrics.len() > MAX_METRICS {
                return Err(format!("a report of {} metrics (at most {MAX_METRICS})", metrics.len()));
            }
            if let Some(bad) = metrics.keys().find(|n| !metric_name(n)) {
                return Err(format!("metric name {bad:?} (letters, digits, `_`, `.`, `/`, `-`; at most {MAX_NAME})"));
            }
            metrics.retain(|_, v| v.is_finite());
        }
        Event::Checkpoint { name, path, bytes, val_acc, .. } => {
            if !checkpoint_name(name) {
                return Err(format!("checkpoint name {name:?}"));
            }
            let folder = dir.join("checkpoints").join(&*name);
            // A real folder: a symbolic link would point the daemon (which follows it) anywhere the code likes.
            if !is_real_dir(&folder) || !is_real_dir(&dir.join("checkpoints")) {
                return Err(format!("checkpoint {name}: no folder {}", folder.display()));
            }
            *path = format!("checkpoints/{name}");
            *bytes = folder_bytes(&folder);
            if !val_acc.is_finite() {
                *val_acc = 0.0;
            }
        }
        Event::Failed { .. } => {}
        other => return Err(format!("a code session does not send `{}` events", other.name())),
    }
    Ok(parsed)
}

/// Answers `nsml.load(checkpoint, session=...)`: the code asks (a `{"request": "load", ...}` line on its events fd),
/// rush checks that the session is the same user's and copies that checkpoint folder in (the sandbox shows no other
/// session), and answers on the reply fd with the path the code sees.
struct Loads {
    reply: std::fs::File,
    /// This session: its user and dataset name the others.
    own: crate::core::session::SessionId,
    /// The home's `sessions/`.
    sessions: PathBuf,
    /// Where copies go: (on the host, as the code sees it).
    host: PathBuf,
    inside: PathBuf,
}

impl Loads {
    fn answer(&mut self, line: &str, log: &mut dyn Write) {
        let reply = match self.load(line) {
            Ok(path) => {
                let _ = writeln!(log, "[rush] nsml.load: copied in as {path}");
                serde_json::json!({"ok": true, "path": path})
            }
            Err(e) => serde_json::json!({"ok": false, "error": e}),
        };
        let _ = writeln!(self.reply, "{reply}");
    }

    fn load(&self, line: &str) -> Result<String, String> {
        use crate::core::session::SessionRef;
        let request: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("a bad request: {e}"))?;
        let (Some(session), Some(checkpoint)) = (request["session"].as_str(), request["checkpoint"].as_str()) else {
            return Err("a load request names a session and a checkpoint".into());
        };
        let reference: SessionRef = session.parse().map_err(|e: crate::core::session::SessionError| e.to_string())?;
        let own = &self.own;
        let id = reference.candidates(&own.user, std::slice::from_ref(&own.dataset)).into_iter().next();
        let id = id.ok_or_else(|| format!("{session}: not a session"))?;
        if id.user != own.user {
            return Err(format!("{id} is not one of your sessions ({})", own.user));
        }
        let dir = self.sessions.join(&id.user).join(&id.dataset).join(id.n.to_string());
        let events = std::fs::read_to_string(SessionDir::new(&dir).events()).map_err(|_| format!("no session {id}"))?;
        let wanted = checkpoint.parse::<u32>().ok();
        let name = events
            .lines()
            .rev()
            .filter_map(|l| EventLine::parse(l).ok())
            .find_map(|l| match l.event {
                Event::Checkpoint { name, epoch, .. } if name == checkpoint || Some(epoch) == wanted => Some(name),
                _ => None,
            })
            .ok_or_else(|| format!("{id} has no checkpoint {checkpoint}"))?;
        let src = dir.join("checkpoints").join(&name);
        if !checkpoint_name(&name) || !is_real_dir(&src) || !is_real_dir(&dir.join("checkpoints")) {
            return Err(format!("checkpoint {name} of {id} is not a code session's checkpoint folder"));
        }
        let folder = format!("{}-{}-{}-{name}", id.user, id.dataset, id.n);
        let dest = self.host.join(&folder);
        if !dest.is_dir() {
            let tmp = self.host.join(format!(".{folder}.tmp"));
            let _ = std::fs::remove_dir_all(&tmp);
            copy_tree(&src, &tmp).map_err(|e| format!("copying {}: {e}", src.display()))?;
            std::fs::rename(&tmp, &dest).map_err(|e| format!("{}: {e}", dest.display()))?;
        }
        Ok(self.inside.join(folder).display().to_string())
    }
}

/// Copies a folder's regular files and folders (links are left out).
fn copy_tree(src: &Path, dest: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dest)?;
    for entry in std::fs::read_dir(src)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let to = dest.join(entry.file_name());
        if kind.is_dir() {
            copy_tree(&entry.path(), &to)?;
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &to)?;
        }
    }
    Ok(())
}

/// A folder that is no symbolic link.
fn is_real_dir(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
}

fn metric_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-'))
}

/// `nsml.save`'s names: a letter or digit, then letters, digits, `.`, `_`, `-` (no paths).
fn checkpoint_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && !name.contains("..")
}

fn folder_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => folder_bytes(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

/// Writes an event line to stdout (the daemon's stream) and `events.jsonl` (the record a Slurm job is followed by).
fn emit(line: &EventLine, dir: &Path) {
    let json = line.to_json();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{json}");
    let _ = out.flush();
    let events = SessionDir::new(dir).events();
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(events) {
        let _ = writeln!(f, "{json}");
    }
}

fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// A pipe whose both ends close on exec (the child gets the write end as fd 3 by `dup2`).
fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds this function then owns.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both were just opened and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

trait StderrFd {
    fn as_fd_owned(&self) -> std::io::Result<OwnedFd>;
}

impl StderrFd for std::io::Stderr {
    fn as_fd_owned(&self) -> std::io::Result<OwnedFd> {
        use std::os::fd::AsFd;
        self.as_fd().try_clone_to_owned()
    }
}

/// What a submission asks of a code session's `rush infer`.
#[derive(Debug, Clone)]
pub struct InferRequest {
    pub session_dir: PathBuf,
    pub epoch: u32,
    pub out: PathBuf,
    pub dry_run: bool,
    pub public_percent: u8,
    /// `none` only: test-time augmentation is the code's own business.
    pub flip: bool,
}

/// The name of the checkpoint saved at `epoch` (the newest with that epoch, by the session's events).
fn checkpoint_at(dir: &Path, epoch: u32) -> Result<String, CodeError> {
    let events = SessionDir::new(dir).events();
    let text = std::fs::read_to_string(&events).map_err(|source| CodeError::Io { path: events.clone(), source })?;
    text.lines()
        .rev()
        .filter_map(|l| EventLine::parse(l).ok())
        .find_map(|l| match l.event {
            Event::Checkpoint { name, epoch: e, .. } if e == epoch => Some(name),
            _ => None,
        })
        .filter(|name| dir.join("checkpoints").join(name).is_dir())
        .ok_or_else(|| CodeError::Invalid(format!("{}: no checkpoint of epoch {epoch}", dir.display())))
}

/// `rush infer` of a code session: writes `test.npy`, `valid.npy` (unless a dry run) and `infer.json` in `out`.
pub fn infer(req: &InferRequest) -> Result<InferReport, CodeError> {
    let started = std::time::Instant::now();
    if req.flip {
        return Err(CodeError::Invalid(
            "a code session's submission runs its own infer: test-time augmentation (--tta flip) is the code's \
             business; submit without it"
                .into(),
        ));
    }
    let mut log = std::io::stderr();
    let p = prepare(&req.session_dir, &mut log)?;
    let name = checkpoint_at(&p.dir, req.epoch)?;
    let io = |path: &Path, source| CodeError::Io { path: path.into(), source };
    std::fs::create_dir_all(&req.out).map_err(|e| io(&req.out, e))?;
    let out = std::fs::canonicalize(&req.out).map_err(|e| io(&req.out, e))?;
    let data = |e: crate::data::layout::DataError| CodeError::Invalid(format!("dataset unreadable: {e}"));
    let dataset = &p.resolved.dataset_path;

    // The test rows (all, or a dry run's sample) and the validation rows, as CSVs the code's infer reads.
    let test = crate::data::layout::read_test(dataset).map_err(data)?;
    let mut rows: Vec<(String, String)> =
        test.samples.iter().map(|s| (s.package_id.clone(), s.sticker_id.clone())).collect();
    if req.dry_run {
        let split = crate::core::score::BoardSplit::new(&p.resolved.spec.dataset, rows.len(), req.public_percent)
            .map_err(|e| CodeError::Invalid(format!("the dry-run sample: {e}")))?;
        rows = crate::core::score::dry_run_indices(&split).into_iter().map(|i| rows[i].clone()).collect();
    }
    write_meta(&out.join("test_meta.csv"), &rows)?;
    let valid_rows: Vec<(String, String)> = if req.dry_run {
        vec![]
    } else {
        let set = crate::data::layout::read_train(dataset).map_err(data)?;
        let split = crate::data::split::split_by_package(&set, p.resolved.spec.valid_fraction, p.resolved.spec.seed);
        split.valid.iter().map(|&i| (set.samples[i].package_id.clone(), set.samples[i].sticker_id.clone())).collect()
    };
    if !req.dry_run {
        write_meta(&out.join("valid_meta.csv"), &valid_rows)?;
    }

    let (inside_out, inside_data) = match p.bwrap {
        Some(_) => (PathBuf::from(sandbox::OUT), PathBuf::from(sandbox::DATASET)),
        None => (out.clone(), dataset.clone()),
    };
    let test_images = crate::data::layout::test_dir(&inside_data).join("images");
    let mut env: Vec<(&str, String)> = vec![
        ("RUSH_INFER_OUT", inside_out.display().to_string()),
        ("RUSH_TEST_IMAGES", test_images.display().to_string()),
        ("RUSH_TEST_META", inside_out.join("test_meta.csv").display().to_string()),
    ];
    if !req.dry_run {
        let train_images = crate::data::layout::train_dir(&inside_data).join("images");
        env.push(("RUSH_VALID_IMAGES", train_images.display().to_string()));
        env.push(("RUSH_VALID_META", inside_out.join("valid_meta.csv").display().to_string()));
    }
    let mut binds = Binds::default();
    binds.writable.push((out.clone(), PathBuf::from(sandbox::OUT)));
    let extra = ["--mode", "test", "--pause", "1", "--iteration", &name].map(String::from);
    let cmd = p.command(&extra, binds, false, &env);
    let _ = writeln!(
        log,
        "[rush] submission of {} checkpoint {name}: python {} ... {}",
        p.resolved.session,
        p.entry,
        extra.join(" ")
    );
    let (mut child, events, mut loads) = p.spawn(cmd, out.join("loaded"), inside_out.join("loaded"))?;
    relay(events, &p.dir, None, &mut loads, false, &mut log);
    let status = child.wait().map_err(|source| io(&p.python, source))?;
    if !status.success() {
        return Err(CodeError::Invalid(format!("python {} --mode test ended: {status}", p.entry)));
    }
    let test_probs = probabilities(&out.join("test.raw.npy"), rows.len(), "test")?;
    npy::write_f16_matrix(&out.join("test.npy"), rows.len(), NUM_TAGS, &test_probs)
        .map_err(|e| CodeError::Invalid(e.to_string()))?;
    let key = |(p, s): &(String, String)| format!("{p}/{s}");
    let (mut valid_order, mut valid_count) = (String::new(), 0);
    if !req.dry_run {
        let probs = probabilities(&out.join("valid.raw.npy"), valid_rows.len(), "validation")?;
        npy::write_f16_matrix(&out.join("valid.npy"), valid_rows.len(), NUM_TAGS, &probs)
            .map_err(|e| CodeError::Invalid(e.to_string()))?;
        let keys: Vec<String> = valid_rows.iter().map(key).collect();
        valid_order = crate::submit::probs::order_digest(keys.iter().map(String::as_str));
        valid_count = valid_rows.len();
    }
    let test_keys: Vec<String> = rows.iter().map(key).collect();
    let report = InferReport {
        epoch: req.epoch,
        tta: crate::submit::Tta::None,
        dry_run: req.dry_run,
        classes: NUM_TAGS,
        test_rows: rows.len(),
        test_order: crate::submit::probs::order_digest(test_keys.iter().map(String::as_str)),
        valid_rows: valid_count,
        valid_order,
        bad_images: 0,
        device: if std::env::var("CUDA_VISIBLE_DEVICES").is_ok_and(|v| !v.is_empty()) { "cuda" } else { "cpu" }.into(),
        seconds: started.elapsed().as_secs_f64(),
        test_images: None,
        valid_images: None,
    };
    let json = serde_json::to_vec_pretty(&report).map_err(|e| CodeError::Invalid(e.to_string()))?;
    crate::disk::write_atomic(&out.join(REPORT), &json)
        .map_err(|e| CodeError::Io { path: out.join(REPORT), source: std::io::Error::other(e.to_string()) })?;
    Ok(report)
}

fn write_meta(path: &Path, rows: &[(String, String)]) -> Result<(), CodeError> {
    let mut text = String::from("package_id,sticker_id\n");
    for (p, s) in rows {
        text.push_str(&format!("{p},{s}\n"));
    }
    std::fs::write(path, text).map_err(|source| CodeError::Io { path: path.into(), source })
}

/// What `infer` returned for `rows` images of a split, as probabilities: a prediction becomes a one-hot row (a hard
/// vote in an ensemble), probabilities are taken as they are. Anything else is an error naming shape and dtype.
fn probabilities(path: &Path, rows: usize, split: &str) -> Result<Vec<f32>, CodeError> {
    let output =
        npy::read_infer_output(path).map_err(|e| CodeError::Invalid(format!("infer on the {split} split: {e}")))?;
    match output {
        InferOutput::Predictions(p) if p.len() == rows => {
            let mut out = vec![0f32; rows * NUM_TAGS];
            for (i, &c) in p.iter().enumerate() {
                let class = usize::try_from(c).ok().filter(|&c| c < NUM_TAGS).ok_or_else(|| {
                    CodeError::Invalid(format!(
                        "infer on the {split} split predicted class {c} for row {i}; classes are 0 to {}",
                        NUM_TAGS - 1
                    ))
                })?;
                out[i * NUM_TAGS + class] = 1.0;
            }
            Ok(out)
        }
        InferOutput::Probabilities { rows: r, columns, values } if r == rows && columns == NUM_TAGS => {
            if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                return Err(CodeError::Invalid(format!(
                    "infer on the {split} split returned a value that is not finite at row {}",
                    i / NUM_TAGS
                )));
            }
            Ok(values)
        }
        InferOutput::Predictions(p) => Err(CodeError::Invalid(format!(
            "infer on the {split} split returned {} predictions for {rows} images",
            p.len()
        ))),
        InferOutput::Probabilities { rows: r, columns, .. } => Err(CodeError::Invalid(format!(
            "infer on the {split} split returned shape ({r}, {columns}) for {rows} images; expected ({rows}, {NUM_TAGS})"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_code_may_send_reports_checkpoints_and_failures_only_within_bounds() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("checkpoints/3")).unwrap();
        std::fs::write(dir.path().join("checkpoints/3/model.pt"), vec![0u8; 1234]).unwrap();
        let line = r#"{"v":1,"t":1,"event":"checkpoint","name":"3","path":"/etc","epoch":3,"val_acc":0.5,"bytes":1}"#;
        let Event::Checkpoint { path, bytes, .. } = check(line, dir.path()).unwrap().event else { panic!() };
        assert_eq!((path.as_str(), bytes), ("checkpoints/3", 1234), "the path and size are rush's own");
        for (bad, why) in [
            (r#"{"v":1,"t":1,"event":"checkpoint","name":"../x","path":"x","epoch":1,"val_acc":0,"bytes":1}"#, "name"),
            (
                r#"{"v":1,"t":1,"event":"checkpoint","name":"9","path":"x","epoch":9,"val_acc":0,"bytes":1}"#,
                "no folder",
            ),
            (r#"{"v":1,"t":1,"event":"finished","epochs":1,"best_val_acc":1}"#, "does not send `finished`"),
            (r#"{"v":1,"t":1,"event":"report","step":1,"metrics":{"a b":1}}"#, "metric name"),
            ("garbage", "malformed"),
        ] {
            let e = check(bad, dir.path()).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let ok = r#"{"v":1,"t":1,"event":"report","step":2,"summary":true,"metrics":{"train__Loss":0.5}}"#;
        assert!(check(ok, dir.path()).is_ok());
    }

    #[test]
    fn checkpoints_rank_by_the_best_metric_else_the_latest_is_best() {
        let mut r = Reported::default();
        assert_eq!(r.rank(None, 3), (0.0, 3.0, None), "nothing reported: the epoch ranks");
        let m = |pairs: &[(&str, f64)]| pairs.iter().map(|(n, v)| (n.to_string(), *v)).collect();
        r.add(&m(&[("train__Loss", 0.9), ("train__Accuracy", 0.4)]));
        assert_eq!(r.rank(None, 4), (0.0, 4.0, None), "AI RUSH's baseline reports no validation metric");
        r.add(&m(&[("valid__Loss", 0.7), ("valid__Accuracy", 0.55)]));
        assert_eq!(r.rank(None, 5), (0.55, 0.55, Some("valid__Accuracy".into())));
        let loss = BestMetric { name: "valid__Loss".into(), mode: MetricMode::Min };
        assert_eq!(r.rank(Some(&loss), 5), (0.55, -0.7, Some("valid__Loss".into())));
        let missing = BestMetric { name: "f1".into(), mode: MetricMode::Max };
        assert_eq!(r.rank(Some(&missing), 6), (0.55, 6.0, None));
    }

    #[test]
    fn infer_outputs_become_probabilities_or_errors_naming_the_shape() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("test.raw.npy");
        npy::write_i64(&path, &[3, 0]).unwrap();
        let probs = probabilities(&path, 2, "test").unwrap();
        assert_eq!((probs[3], probs[NUM_TAGS], probs.iter().sum::<f32>()), (1.0, 1.0, 2.0));
        let e = probabilities(&path, 5, "test").unwrap_err().to_string();
        assert!(e.contains("2 predictions for 5 images"), "{e}");
        npy::write_i64(&path, &[350]).unwrap();
        assert!(probabilities(&path, 1, "test").unwrap_err().to_string().contains("class 350"));
        npy::write_f16_matrix(&path, 2, 7, &[0.1; 14]).unwrap();
        let e = probabilities(&path, 2, "validation").unwrap_err().to_string();
        assert!(e.contains("shape (2, 7) for 2 images; expected (2, 350)"), "{e}");
    }
}
