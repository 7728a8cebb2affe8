//! The daemon: watches `experiments/`, queues sessions, runs them in a worker pool and scores submissions. Its public
//! methods are the facade the HTTP layer calls.
//!
//! # Threading model
//!
//! One tokio runtime (multi-threaded) runs everything; nothing here blocks a worker thread for long (dataset
//! inspection and copies go to `spawn_blocking`).
//!
//! - **Intake** (one task, [`watcher`] + [`intake`]): notify's debouncer thread sends changed paths down a channel; the
//!   intake task reads each `*.yaml`, skips a (path, content hash) it has seen, parses and validates it
//!   (`core::spec`), and records it: rejected with its error, or accepted with one queued session per sweep point.
//!   It then wakes the scheduler. At start-up and whenever notify reports lost events it rescans the whole folder.
//! - **Scheduler** (one task, [`scheduler`]): on every wake-up (and every few seconds) it `tick`s: reads the queue from
//!   the store, asks the pure `core::queue::assign` which session takes which free slot, leases those slots from the
//!   [`slots::SlotPool`], moves the sessions to `running` and spawns a runner for each, which holds its [`slots::Lease`]
//!   until it ends. An error is logged and the loop goes on; so does a panic, counted in `/metrics`.
//! - **Runners** (one task per running session, [`runner`]): start the child through the [`executor::Executor`]
//!   (local children through the one [`launcher`]),
//!   read its event lines, store them (metrics through the batched [`crate::store::MetricSink`], checkpoints and other
//!   events directly), append its stderr to `train.log`, fan events out to live subscribers ([`live::Hub`]), apply
//!   checkpoint retention, and record the final state when the child ends. Then the lease is dropped, which frees the
//!   slot and wakes the scheduler.
//! - **Submission worker** (one task, [`submissions`]): takes the oldest queued submission, leases a free slot (while
//!   it waits the scheduler starts no session), runs `rush infer` children for uncached members, mixes, writes the
//!   `.npy` and has the scorer score it; a panic fails that submission and the loop goes on. [`ensembles`] answers the
//!   builder and `ensemble auto` from the cache and the checkpoints' validation predictions; [`board`] is the board as
//!   everyone may see it; [`analysis`] reads what the views of a checkpoint's mistakes and of a dataset show. All of
//!   them know a dataset by its [`facts`], computed when it is registered, never by reading its files per request.
//! - **Metric writer** (one task): commits metric rows in one transaction per batch; steps never wait on it.
//! - **HTTP** (the web layer, wired in by `serve`, the composition root): reads the store; mutations (stop, rm, fork,
//!   model rm, dataset register, submit) call methods of [`Daemon`], so the daemon stays the database's only writer.
//!   The daemon never names the web layer, Slurm, the trainer or the CLI.
//!
//! Shutdown is one cancellation tree: SIGTERM or SIGINT cancels [`Daemon::shutdown`]; intake and scheduler stop, each
//! runner sends its child SIGTERM and, after the grace period, SIGKILL, and records the session as queued again
//! (`resume: true`, it continues from its last checkpoint) or interrupted; then the metric writer is flushed and the
//! database closed.
//!
//! A "running" row is never trusted after a restart ([`recovery`]): a child left by a killed daemon is found by pid
//! and start time and killed (children also get a parent-death signal), checkpoint rows are reconciled with the files,
//! and the session is queued again or marked interrupted. A lock file keeps a second daemon off the same home.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::core::checkpoint::{CheckpointRef, resolve};
use crate::core::progress::DecodeProgress;
use crate::core::queue::{self, Waiting};
use crate::core::session::{SessionId, SessionState};
use crate::core::spec::{ResolvedSpec, Spec, SpecError};
use crate::home::{Home, SessionDir};
use crate::store::{DatasetRow, MetricSink, NewSession, Store, StoreError};

pub mod analysis;
pub mod board;
pub mod code;

/// The most bytes of files a code session's folder may hold (`code::upload`), for the API's request limit.
pub const MAX_CODE_BYTES: u64 = crate::code::upload::MAX_CODE_BYTES;
pub mod checkpoints;
pub mod config;
pub mod datasets;
pub mod ensembles;
pub mod executor;
pub mod facts;
pub mod intake;
pub mod launcher;
pub mod live;
pub mod lock;
pub mod recovery;
pub mod runner;
pub mod scheduler;
pub mod slots;
pub mod submissions;
pub mod sweeps;
pub mod users;
pub mod watcher;

// The facade: what the web layer may name.
pub use analysis::{
    CheckpointAnalysis, ClassComparison, DatasetClass, DatasetOverview, DatasetPackage, Gallery, GalleryItem,
    PackageAccuracy, PackageSamples, Sticker, TagSamples,
};
pub use board::{BoardLineView, BoardView};
pub use config::DaemonConfig;
pub use datasets::{DatasetStatus, Registration};
pub use ensembles::{AutoEnsemble, CachedCheckpoint, MixEval, MixMember};
pub use live::LiveEvent;
pub use slots::SlotView;

/// What a daemon operation refused or failed at. The web layer maps each to an HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Lock(String),
    /// The user has used every submission of the day.
    #[error("{0}")]
    Limit(String),
    /// Not for this requester now (private scores before they are revealed).
    #[error("{0}")]
    Forbidden(String),
}

impl From<SpecError> for DaemonError {
    fn from(e: SpecError) -> Self {
        DaemonError::Invalid(e.to_string())
    }
}

/// The daemon's long-lived loops, whose panics are caught, logged and counted instead of ending them silently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    Scheduler,
    Submissions,
}

impl Task {
    pub const ALL: [Task; 2] = [Task::Scheduler, Task::Submissions];

    pub fn as_str(self) -> &'static str {
        match self {
            Task::Scheduler => "scheduler",
            Task::Submissions => "submissions",
        }
    }
}

/// How many times each loop caught a panic (`/metrics`: `rush_task_panics_total`).
#[derive(Debug, Default)]
pub struct Panics {
    scheduler: AtomicU64,
    submissions: AtomicU64,
}

impl Panics {
    fn counter(&self, task: Task) -> &AtomicU64 {
        match task {
            Task::Scheduler => &self.scheduler,
            Task::Submissions => &self.submissions,
        }
    }

    /// Logs a caught panic of `task` with its message and counts it; returns the message.
    pub fn caught(&self, task: Task, payload: &(dyn std::any::Any + Send)) -> String {
        let message = crate::core::format::panic_message(payload);
        self.counter(task).fetch_add(1, Ordering::Relaxed);
        tracing::error!("{}: caught a panic, the loop goes on: {message}", task.as_str());
        message
    }

    pub fn count(&self, task: Task) -> u64 {
        self.counter(task).load(Ordering::Relaxed)
    }
}

/// The running daemon's shared state.
pub struct Daemon {
    pub config: DaemonConfig,
    pub store: Store,
    pub metrics: MetricSink,
    pub live: live::Hub,
    /// Cancelled on SIGTERM/SIGINT: the root of every task's cancellation.
    pub shutdown: CancellationToken,
    /// Panics caught in the scheduler and the submission worker.
    pub panics: Panics,
    /// When this daemon started (seconds since the Unix epoch): `rush ps` lists the specs rejected since.
    pub started_at: f64,
    executor: Arc<dyn executor::Executor>,
    slots: Arc<slots::SlotPool>,
    /// Wakes the scheduler (a session was queued or a slot freed).
    wake: Arc<Notify>,
    /// Wakes the submission worker (a submission was queued or a slot freed).
    submission_wake: Arc<Notify>,
    runners: TaskTracker,
    /// The registered datasets' facts, for the analysis views, the ensembles and the submissions.
    facts: Arc<facts::FactsRegistry>,
    /// Dataset registrations under way, and failed ones.
    registrations: datasets::Registrations,
    /// The newest cache-build progress of each running session that has not started training yet (its `decoding`
    /// events), and how many times that changed (the sessions list's live stream watches the count).
    decoding: std::sync::Mutex<HashMap<SessionId, DecodeProgress>>,
    decoding_changes: AtomicU64,
    /// The users of a shared daemon (config and `$RUSH_HOME/users.yaml`); none on a single-user one.
    users: users::Directory,
    /// The latest answers of `ensemble auto`, by the files they were computed from.
    auto_memo: Arc<ensembles::AutoMemo>,
    /// Held while a sweep's rungs are decided ([`sweeps`]).
    sweep_lock: tokio::sync::Mutex<()>,
    /// Whether bubblewrap works here, probed at the first code session (`code_refusal`).
    sandbox_probe: std::sync::OnceLock<Result<(), String>>,
    /// Test-only failure points: the next this-many scheduler ticks, or submissions run, panic.
    #[cfg(test)]
    pub(crate) fail_ticks: std::sync::atomic::AtomicU32,
    #[cfg(test)]
    pub(crate) fail_submissions: std::sync::atomic::AtomicU32,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Daemon {
    /// Builds the daemon's state around an open store (starts the metric writer; must run inside a tokio runtime).
    /// Nothing is watched or scheduled until [`Daemon::start`].
    pub fn new(config: DaemonConfig, store: Store, executor: Arc<dyn executor::Executor>) -> Arc<Daemon> {
        let (metrics, _writer) = store.metric_writer();
        let (wake, submission_wake) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let slots = slots::SlotPool::new(config.slots.clone(), vec![wake.clone(), submission_wake.clone()]);
        let users = users::Directory::new(config.users.clone(), config.home.users_file());
        Arc::new(Daemon {
            users,
            auto_memo: Arc::default(),
            sweep_lock: tokio::sync::Mutex::new(()),
            sandbox_probe: std::sync::OnceLock::new(),
            config,
            store,
            metrics,
            live: live::Hub::default(),
            shutdown: CancellationToken::new(),
            panics: Panics::default(),
            started_at: crate::store::now(),
            executor,
            slots,
            wake,
            submission_wake,
            runners: TaskTracker::new(),
            facts: Arc::default(),
            registrations: Default::default(),
            decoding: Default::default(),
            decoding_changes: AtomicU64::new(0),
            #[cfg(test)]
            fail_ticks: Default::default(),
            #[cfg(test)]
            fail_submissions: Default::default(),
        })
    }

    pub fn home(&self) -> &Home {
        &self.config.home
    }

    /// The users now (empty on a single-user daemon): who a token names, their roles and GPU quotas.
    pub fn users(&self) -> Arc<crate::core::access::Users> {
        self.users.current()
    }

    /// Starts intake (with a full scan), the scheduler loop and the submission worker.
    pub fn start(self: &Arc<Self>) -> Result<(), DaemonError> {
        watcher::start(self.clone())?;
        self.runners.spawn(scheduler::run(self.clone()));
        self.runners.spawn(submissions::run(self.clone()));
        Ok(())
    }

    /// Wakes the scheduler (after a session was queued or a slot freed).
    pub fn wake(&self) {
        self.wake.notify_one();
        self.submission_wake.notify_one();
    }

    /// Cancels everything and waits for every runner to record its session's state, then flushes metrics.
    pub async fn shut_down(&self) {
        self.shutdown.cancel();
        self.runners.close();
        self.runners.wait().await;
        self.metrics.flush().await;
    }

    /// How far a running session's build of the decoded-image cache is, until it starts training (from its newest
    /// `decoding` event; only in memory, it matters only while it lasts).
    pub fn decoding(&self, id: &SessionId) -> Option<DecodeProgress> {
        self.decoding.lock().unwrap_or_else(|p| p.into_inner()).get(id).copied()
    }

    /// Records a session's cache-build progress, or forgets it (`None`: it started training, or ended). The runner
    /// calls it as the child's events arrive.
    pub fn record_decoding(&self, id: &SessionId, progress: Option<DecodeProgress>) {
        let mut map = self.decoding.lock().unwrap_or_else(|p| p.into_inner());
        let changed = match progress {
            Some(p) => map.insert(id.clone(), p) != Some(p),
            None => map.remove(id).is_some(),
        };
        if changed {
            self.decoding_changes.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// How many times any session's cache-build progress changed since the daemon started.
    pub fn decoding_changes(&self) -> u64 {
        self.decoding_changes.load(Ordering::Relaxed)
    }

    /// The slots and who holds them.
    pub fn slots(&self) -> Vec<SlotView> {
        self.slots.views()
    }

    /// Queue positions (1 = next to run) of the queued sessions, computed over the whole queue. A submission that
    /// waits for a slot takes the next free one, so while one waits no session is next.
    /// A session waiting for its dataset to register has none ([`Daemon::dataset_wait`] says why).
    pub async fn queue_positions(&self) -> Result<HashMap<SessionId, usize>, DaemonError> {
        let mut queued = self.store.queue().await?;
        queued.retain(|r| self.dataset_readiness(&r.id.dataset) == datasets::Readiness::Ready);
        let waiting: Vec<Waiting<usize>> = queued
            .iter()
            .enumerate()
            .map(|(i, r)| Waiting { key: i, priority: r.priority, seq: r.seq, device: r.device })
            .collect();
        let ahead = usize::from(self.slots.waiting_submission().is_some());
        Ok(queue::positions_after(&waiting, ahead).into_iter().map(|(i, pos)| (queued[i].id.clone(), pos)).collect())
    }

    /// The submission waiting for a slot now, if one is: it goes before every queued session.
    pub fn waiting_submission(&self) -> Option<i64> {
        self.slots.waiting_submission()
    }

    /// Stops a queued or running session; returns its state afterwards. A running child gets SIGTERM, then SIGKILL
    /// after the grace period; this waits until the runner has recorded `stopped`.
    pub async fn stop_session(&self, id: &SessionId) -> Result<SessionState, DaemonError> {
        for _ in 0..3 {
            if let Some(token) = self.slots.stop_token(id) {
                token.cancel();
                let deadline = tokio::time::Instant::now() + self.config.stop_grace + Duration::from_secs(10);
                loop {
                    let row = self.store.session_required(id).await?;
                    // A Slurm job waiting in Slurm's queue shows as queued while its runner cancels it.
                    let ended = row.state.is_terminal() || (row.state == SessionState::Queued && !self.slots.holds(id));
                    if ended || tokio::time::Instant::now() > deadline {
                        return Ok(row.state);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            let row = self.store.session_required(id).await?;
            match row.state {
                // Holding no slot: stopped here, not by a runner.
                waiting @ (SessionState::Queued | SessionState::Waiting) => {
                    let reason = if waiting == SessionState::Queued {
                        "stopped by the user before it started"
                    } else {
                        "stopped by the user while it waited at a rung"
                    };
                    match self.store.transition(id, SessionState::Stopped, None, Some(reason)).await {
                        Ok(_) => {
                            // One trial fewer: its sweep's rungs may settle now.
                            if let Some(sweep) = row.sweep {
                                self.decide_sweep(sweep).await?;
                            }
                            return Ok(SessionState::Stopped);
                        }
                        // The scheduler took it meanwhile (stop the runner instead), or it was promoted or pruned:
                        // look again.
                        Err(StoreError::Session(_)) => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
                // Running but no runner yet (the scheduler is launching it): look again shortly.
                SessionState::Running => tokio::time::sleep(Duration::from_millis(100)).await,
                SessionState::Stopped => {
                    return Err(DaemonError::Conflict(format!("session {id} is already stopped")));
                }
                ended => {
                    return Err(DaemonError::Conflict(format!(
                        "session {id} has already ended ({ended}): nothing to stop"
                    )));
                }
            }
        }
        Err(DaemonError::Conflict(format!("session {id} is changing state; try again")))
    }

    /// Deletes a finished session: its files and cached probabilities, then its rows (the board keeps its lines).
    pub async fn remove_session(&self, id: &SessionId) -> Result<(), DaemonError> {
        let row = self.store.session(id).await?.ok_or_else(|| unknown(id))?;
        if !row.state.is_terminal() {
            return Err(DaemonError::Conflict(format!(
                "session {id} is {}: stop it first (`rush stop {id}`)",
                row.state
            )));
        }
        // its folder and its cached probabilities: nothing may offer or submit a removed session's checkpoints
        for dir in [self.home().session(id), crate::submit::probs::session_dir(self.home(), id)] {
            match tokio::fs::remove_dir_all(&dir).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(DaemonError::Io { path: dir, source }),
            }
        }
        self.store.remove_session(id).await?;
        Ok(())
    }

    /// Deletes one checkpoint of a session (files first, then the row).
    pub async fn remove_checkpoint(&self, id: &SessionId, name: &str) -> Result<u32, DaemonError> {
        self.store.session(id).await?.ok_or_else(|| unknown(id))?;
        let reference: CheckpointRef =
            name.parse().map_err(|e: crate::core::checkpoint::CheckpointError| DaemonError::Invalid(e.to_string()))?;
        let row = self.checkpoint_row(id, reference).await?;
        let needed: Vec<String> = self
            .store
            .pinned_checkpoints(id)
            .await?
            .into_iter()
            .filter(|p| p.epoch == row.epoch)
            .map(|p| p.needed_by)
            .collect();
        if !needed.is_empty() {
            return Err(DaemonError::Conflict(format!(
                "checkpoint {} of {id} is still needed by {}: remove it once they have run",
                row.epoch,
                needed.join(", ")
            )));
        }
        checkpoints::delete(&self.store, &SessionDir::new(self.home().session(id)), &row).await?;
        Ok(row.epoch as u32)
    }

    /// Each epoch's duration as the child reported it, `(epoch, seconds)` in the order recorded.
    pub async fn epoch_seconds(&self, id: &SessionId) -> Result<Vec<(u32, f64)>, DaemonError> {
        let rows = self.store.metrics(id, Some("epoch_seconds")).await?;
        Ok(rows.into_iter().map(|m| (m.epoch.clamp(0, u32::MAX as i64) as u32, m.value)).collect())
    }

    /// The stored checkpoint a name (`7`, `best`, `last`) of a session means now; not found names the saved ones.
    pub async fn checkpoint_row(
        &self,
        id: &SessionId,
        reference: CheckpointRef,
    ) -> Result<crate::store::CheckpointRow, DaemonError> {
        self.store.session(id).await?.ok_or_else(|| unknown(id))?;
        let rows = self.store.checkpoints(id).await?;
        let infos: Vec<_> = rows.iter().map(|r| r.info()).collect();
        let epoch = resolve(reference, &infos).ok();
        match rows.into_iter().find(|r| epoch.is_some_and(|e| r.epoch == i64::from(e))) {
            Some(row) => Ok(row),
            None => {
                let saved: Vec<String> = infos.iter().map(|i| i.epoch.to_string()).collect();
                let saved = if saved.is_empty() { "none".to_string() } else { saved.join(", ") };
                Err(DaemonError::NotFound(format!("session {id} has no checkpoint {reference} (saved: {saved})")))
            }
        }
    }

    /// Queues a new session of `user` that starts from a checkpoint of another (`init_from`), with overrides and a memo.
    pub async fn fork(
        &self,
        user: &str,
        id: &SessionId,
        checkpoint: &str,
        args: Option<&str>,
        memo: Option<&str>,
    ) -> Result<SessionId, DaemonError> {
        let row = self.store.session(id).await?.ok_or_else(|| unknown(id))?;
        let resolved = row.resolved_spec()?;
        let reference: CheckpointRef = checkpoint
            .parse()
            .map_err(|e: crate::core::checkpoint::CheckpointError| DaemonError::Invalid(e.to_string()))?;
        let ckpt = self.checkpoint_row(id, reference).await?;
        let epoch = ckpt.epoch;
        // A code session's checkpoint is the folder its bound `save` wrote.
        let there = if resolved.spec.is_code() {
            std::path::Path::new(&ckpt.path).is_dir()
        } else {
            std::path::Path::new(&ckpt.path).is_file()
        };
        if !there {
            return Err(DaemonError::NotFound(format!("checkpoint {epoch} of {id}: {} is missing", ckpt.path)));
        }
        let source = format!("fork of {id}");
        if resolved.spec.is_code() && args.is_some_and(|a| !a.trim().is_empty()) {
            return Err(DaemonError::Invalid(format!(
                "{source}: a code session's fork runs its parent's code and arguments, and takes no overrides (-a)"
            )));
        }
        let mut spec = match args.filter(|a| !a.trim().is_empty()) {
            Some(a) => crate::core::spec::apply_overrides(&resolved.spec, a)?,
            None => resolved.spec.clone(),
        };
        if let Some(m) = memo {
            spec.memo = m.to_string();
        }
        spec.grid = None;
        spec.random = None;
        // A fork is one session, not a sweep's trial: it trains to its last epoch without pausing at rungs.
        spec.searcher = None;
        spec.validate(&source)?;
        if spec.is_code()
            && let Some(why) = self.code_refusal()
        {
            return Err(DaemonError::Invalid(format!("{source}: {why}")));
        }
        if spec.model != resolved.spec.model {
            return Err(DaemonError::Invalid(format!(
                "{source}: field `model`: a fork starts from its parent's weights, and {id} is a {}; {} has none of \
                 them (start a new session with `rush run` instead)",
                resolved.spec.model.as_str(),
                spec.model.as_str()
            )));
        }
        self.accept_dataset(&source, &spec.dataset).await?;
        let new = self.new_session(user, &spec, Some(format!("{id}:{epoch}")));
        let init_from = PathBuf::from(&ckpt.path);
        let staged = match spec.is_code() {
            true => Some(self.stage_code_of_session(&source, id, &spec).await?),
            false => None,
        };
        let ids = self
            .store
            .enqueue(None, std::slice::from_ref(&new), |new_id, _| {
                self.resolved_json(new_id, &spec, Some(init_from.clone()))
            })
            .await?;
        let new_id = ids.into_iter().next().ok_or_else(|| DaemonError::Conflict("nothing was queued".into()))?;
        if let Some(staged) = staged
            && let Err(e) = self.place_code(&new_id, staged).await
        {
            let _ = self.store.transition(&new_id, SessionState::Failed, None, Some(&e.to_string())).await;
            return Err(e);
        }
        self.wake();
        Ok(new_id)
    }

    /// The facts of the registered dataset `name` (`data::facts`), read once (computed at registration, or at this
    /// first use when the dataset was registered before they existed or its files changed since).
    pub async fn dataset_facts(&self, name: &str) -> Result<Arc<facts::DatasetFacts>, DaemonError> {
        let (registry, home, name) = (self.facts.clone(), self.home().clone(), name.to_string());
        tokio::task::spawn_blocking(move || registry.get(&home, &name))
            .await
            .map_err(|e| DaemonError::Invalid(format!("reading a dataset's facts crashed: {e}")))?
    }

    /// Registers the dataset folder `$RUSH_HOME/datasets/<name>` (after `rush dataset push` put it there). Until it
    /// ends, a folder the store does not hold yet is `registering`; when it fails, the dataset shows the error and the
    /// sessions queued for it meanwhile fail with it.
    pub async fn register_dataset(&self, name: &str) -> Result<DatasetRow, DaemonError> {
        let home = self.home().clone();
        let tracked = crate::core::session::validate_name(name).is_ok()
            && home.dataset(name).is_dir()
            && self.store.dataset(name).await?.is_none();
        if tracked {
            self.registrations.begin(name);
        }
        let owned = name.to_string();
        let result = match tokio::task::spawn_blocking(move || datasets::inspect(&home, &owned)).await {
            Ok(Ok(row)) => {
                // inspection wrote the facts anew
                self.facts.forget(name);
                self.store.upsert_dataset(&row).await.map(|_| row).map_err(DaemonError::from)
            }
            Ok(Err(e)) => Err(e),
            Err(e) => Err(DaemonError::Invalid(format!("dataset inspection crashed: {e}"))),
        };
        if tracked {
            match &result {
                Ok(_) => self.registrations.succeeded(name),
                Err(e) => self.registrations.failed(name, e.to_string()),
            }
            // Sessions and submissions waiting for it may go on (or fail) now.
            self.wake();
        }
        let row = result?;
        // Specs dropped before their dataset existed were refused; read the ones still on disk again.
        for path in self.store.forget_rejections(&unregistered(name), |p| std::path::Path::new(p).is_file()).await? {
            let path = PathBuf::from(path);
            match intake::intake_file(self, &path).await {
                Ok(intake::Intake::Queued(ids)) if !ids.is_empty() => {
                    tracing::info!("{}: dataset {name} registered, spec queued again", path.display())
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("{}: reading again after registering {name}: {e}", path.display()),
            }
        }
        Ok(row)
    }

    /// Errors (not found) unless `dataset` is registered; `source` names the spec in the message. A dataset still
    /// registering is not yet: the message says so.
    pub async fn require_dataset(&self, source: &str, dataset: &str) -> Result<DatasetRow, DaemonError> {
        if let Some(row) = self.store.dataset(dataset).await? {
            return Ok(row);
        }
        match self.registrations.get(dataset) {
            Some(datasets::Registration::Registering { .. }) => {
                return Err(DaemonError::Conflict(format!(
                    "{source}: dataset {dataset} is still registering; try again once `rush dataset ls` lists it \
                     as registered"
                )));
            }
            Some(datasets::Registration::Failed { error }) => {
                return Err(DaemonError::NotFound(format!(
                    "{source}: {}: its folder could not be registered: {error}",
                    unregistered(dataset)
                )));
            }
            None => {}
        }
        let known: Vec<String> = self.store.datasets().await?.into_iter().map(|d| d.name).collect();
        let known = if known.is_empty() { "none yet".to_string() } else { known.join(", ") };
        Err(DaemonError::NotFound(format!(
            "{source}: {} (registered: {known}; add one with `rush dataset push NAME PATH`)",
            unregistered(dataset)
        )))
    }

    /// Errors unless sessions (or submissions) of `dataset` may be queued: it is registered, or still registering
    /// (they then wait in the queue until it is). The message is [`Daemon::require_dataset`]'s.
    pub async fn accept_dataset(&self, source: &str, dataset: &str) -> Result<(), DaemonError> {
        if self.store.dataset(dataset).await?.is_none()
            && matches!(self.registrations.get(dataset), Some(datasets::Registration::Registering { .. }))
        {
            return Ok(());
        }
        self.require_dataset(source, dataset).await.map(|_| ())
    }

    /// Whether what needs `dataset` may run now, must wait for its registration, or fails with its registration.
    pub fn dataset_readiness(&self, dataset: &str) -> datasets::Readiness {
        match self.registrations.get(dataset) {
            None => datasets::Readiness::Ready,
            Some(datasets::Registration::Registering { .. }) => datasets::Readiness::Registering,
            Some(datasets::Registration::Failed { error }) => {
                datasets::Readiness::Failed(datasets::failure_reason(dataset, &error))
            }
        }
    }

    /// What a queued session (or submission) of `dataset` waits for besides a slot: its dataset's registration.
    pub fn dataset_wait(&self, dataset: &str) -> Option<String> {
        (self.dataset_readiness(dataset) == datasets::Readiness::Registering).then(|| datasets::waiting_text(dataset))
    }

    /// Every dataset the daemon knows, by name: the registered ones with their rows, and those registering or whose
    /// registration failed.
    pub async fn dataset_statuses(&self) -> Result<Vec<DatasetStatus>, DaemonError> {
        let mut out: Vec<DatasetStatus> = self
            .store
            .datasets()
            .await?
            .into_iter()
            .map(|row| DatasetStatus { name: row.name.clone(), row: Some(row), registration: None })
            .collect();
        for (name, registration) in self.registrations.all() {
            if !out.iter().any(|d| d.name == name) {
                out.push(DatasetStatus { name, row: None, registration: Some(registration) });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The row for a new session of `spec` by `user` on this daemon (`auto` resolved against its slots).
    fn new_session(&self, user: &str, spec: &Spec, fork_of: Option<String>) -> NewSession {
        NewSession {
            user: user.to_string(),
            dataset: spec.dataset.clone(),
            memo: spec.memo.clone(),
            priority: spec.priority,
            device: spec.resources.gpus.device(self.config.has_gpu()),
            // A code session's own arguments say how long it trains: unknown here (0).
            epochs: if spec.is_code() { 0 } else { spec.epochs },
            fork_of,
        }
    }
}

/// The part of a spec's rejection that says its dataset is not registered (found again when it is).
fn unregistered(dataset: &str) -> String {
    format!("field `dataset`: {dataset:?} is not a registered dataset")
}

fn unknown(id: &SessionId) -> DaemonError {
    DaemonError::NotFound(format!("unknown session {id}"))
}

/// The resolved spec of a new session as stored (JSON): dataset folder under the home, optional fork weights.
#[cfg(test)]
fn resolved_json(home: &Home, id: &SessionId, spec: &Spec, init_from: Option<PathBuf>) -> String {
    resolved_json_with(home, id, spec, init_from, None)
}

fn resolved_json_with(
    home: &Home,
    id: &SessionId,
    spec: &Spec,
    init_from: Option<PathBuf>,
    runtime: Option<crate::core::spec::CodeRuntime>,
) -> String {
    let resolved = ResolvedSpec {
        session: id.to_string(),
        dataset_path: home.dataset(&spec.dataset),
        init_from,
        runtime,
        spec: spec.clone(),
    };
    serde_json::to_string(&resolved).unwrap_or_default()
}
