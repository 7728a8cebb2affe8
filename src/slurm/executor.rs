//! The Slurm executor: each session is one batch job running `rush train <session dir>` on a compute node, behind the
//! same seam as a local child, so the runner stores the same rows, serves the same live views and writes the same
//! `train.log`.
//!
//! One task per launched session drives its job: it re-attaches to the job the store recorded (or finds one submitted
//! just before a crash by its name) and submits only when there is none, so a session is never submitted twice. Then
//! it follows `events.jsonl` and the trainer's stderr file from the offsets kept in the store, asks Slurm for the
//! job's state (a job waiting in Slurm's queue shows as a queued session, with Slurm's reason), turns `rush stop` into
//! `scancel`, and reports the job's end as the child's exit. When the daemon shuts down it detaches: the job goes on
//! and the next daemon picks it up where this one stopped reading.
//!
//! A submission's member inference is a job too (`super::inference`), followed with the same client and status poll.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use super::client::{ClientError, SlurmClient};
use super::cluster::{Inner, MAX_STATUS_FAILURES, StatusPoll};
use crate::core::outcome::Exit;
use crate::core::session::{SessionId, SessionState};
use crate::core::slurm::{
    BatchJob, JobId, JobStatus, JobVerdict, home_tag, job_log, job_name, keeps_recorded_job, sbatch_request,
};
use crate::daemon::config::DaemonConfig;
use crate::daemon::executor::{
    ChildControl, ChildId, Executor, ExecutorError, Inference, InferenceEnd, Launch, Launched, StopSignal,
};
use crate::disk::tail::{Line, LineFollower, TailError};
use crate::home::SessionDir;
use crate::store::Store;

/// Lines buffered between a job's files and the runner.
const CHANNEL: usize = 256;

/// Runs sessions (and submissions' inferences, see `super::inference`) as Slurm batch jobs.
pub struct SlurmExecutor {
    inner: Arc<Inner>,
}

impl SlurmExecutor {
    /// An executor for this daemon; `exe` is the daemon's own binary, used on the nodes unless `slurm.rush_exe` says
    /// otherwise. Says in the log whether the cluster answers (jobs wait for it either way).
    pub async fn new(config: &DaemonConfig, store: Store, exe: PathBuf) -> SlurmExecutor {
        let client = SlurmClient::new(None);
        match client.ping().await {
            Ok(nodes) => tracing::info!("Slurm executor: nodes {}", nodes.join(", ")),
            Err(e) => tracing::warn!("Slurm executor: the cluster does not answer yet: {e}"),
        }
        let inner = Inner {
            client,
            rush_exe: config.slurm.rush_exe.clone().unwrap_or(exe),
            home_tag: home_tag(config.home.root()),
            config: config.slurm.clone(),
            store,
        };
        SlurmExecutor { inner: Arc::new(inner) }
    }
}

impl Executor for SlurmExecutor {
    fn launch(&self, launch: &Launch) -> Result<Launched, ExecutorError> {
        let (events_tx, events_rx) = mpsc::channel(CHANNEL);
        let (log_tx, log_rx) = mpsc::channel(CHANNEL);
        let (signal_tx, signal_rx) = mpsc::unbounded_channel();
        let (exit_tx, exit_rx) = watch::channel(None);
        let driver = Driver {
            inner: self.inner.clone(),
            launch: launch.clone(),
            events: events_tx,
            log: log_tx,
            signals: signal_rx,
            stop_sent: false,
        };
        tokio::spawn(async move {
            let exit = driver.run().await;
            let _ = exit_tx.send(Some(exit));
        });
        Ok(Launched {
            // Not a process of this machine: nothing for a restarted daemon to kill.
            id: ChildId { pid: 0, start: None },
            events: ReceiverStream::new(events_rx).boxed(),
            log: ReceiverStream::new(log_rx).boxed(),
            control: Box::new(JobControl { signals: signal_tx, exit: exit_rx }),
        })
    }

    fn infer<'a>(&'a self, inference: &'a Inference) -> BoxFuture<'a, Result<(), InferenceEnd>> {
        Box::pin(super::inference::run(&self.inner, inference))
    }
}

/// The runner's handle on a job: signals go to its driver, the exit comes from it.
struct JobControl {
    signals: mpsc::UnboundedSender<StopSignal>,
    exit: watch::Receiver<Option<Exit>>,
}

impl ChildControl for JobControl {
    fn signal(&self, signal: StopSignal) {
        let _ = self.signals.send(signal);
    }

    fn wait(&mut self) -> BoxFuture<'_, Exit> {
        Box::pin(async move {
            loop {
                if let Some(exit) = *self.exit.borrow_and_update() {
                    return exit;
                }
                if self.exit.changed().await.is_err() {
                    return (*self.exit.borrow()).unwrap_or(Exit::Unknown);
                }
            }
        })
    }
}

/// One session's job, from submission (or re-attachment) to its end.
struct Driver {
    inner: Arc<Inner>,
    launch: Launch,
    events: mpsc::Sender<io::Result<String>>,
    log: mpsc::Sender<io::Result<String>>,
    signals: mpsc::UnboundedReceiver<StopSignal>,
    /// `scancel` went out (a stop was asked).
    stop_sent: bool,
}

/// Why a job's driver ended before the job did.
enum Halt {
    Stopped,
    Detached,
    Lost(String),
}

impl Driver {
    async fn run(mut self) -> Exit {
        match self.drive().await {
            Ok(exit) => exit,
            Err(Halt::Stopped) => Exit::Cancelled,
            Err(Halt::Detached) => Exit::Detached,
            Err(Halt::Lost(message)) => {
                self.say(&message).await;
                tracing::error!("{}: {message}", self.launch.session);
                Exit::Unknown
            }
        }
    }

    fn id(&self) -> &SessionId {
        &self.launch.session
    }

    /// A line for `train.log`, as the trainer's own stderr lines go there.
    async fn say(&self, line: &str) {
        let _ = self.log.send(Ok(format!("[slurm] {line}"))).await;
    }

    async fn drive(&mut self) -> Result<Exit, Halt> {
        let store = self.inner.store.clone();
        let lost = |e: &dyn std::fmt::Display| Halt::Lost(e.to_string());
        let record = store.slurm_record(self.id()).await.map_err(|e| lost(&e))?;
        let dir = SessionDir::new(&self.launch.dir);
        let mut files = Files {
            events: LineFollower::new(dir.events(), record.events_offset),
            log: LineFollower::new(job_log(dir.root()), record.log_offset),
        };
        let job = self.attach_or_submit(&record).await?;
        let poll = Duration::from_millis(self.inner.config.poll_ms);
        let slot = self.launch.slot.to_string();
        // Whether this driver put the session back in the queue while Slurm keeps its job waiting, and why.
        let mut waiting = false;
        let mut shown: Option<String> = None;
        let mut polls = StatusPoll::default();
        loop {
            self.forward(&mut files, false).await?;
            let status = match polls.ask(&self.inner.client, job, self.id()).await {
                Ok(Some(status)) => status,
                Ok(None) => {
                    self.pause(job, poll).await?;
                    continue;
                }
                Err(message) => return Err(Halt::Lost(message)),
            };
            match status.verdict() {
                JobVerdict::Queued { reason } if !self.stop_sent => {
                    let why = format!(
                        "waiting in Slurm's queue as job {job}{}",
                        reason.map(|r| format!(": {r}")).unwrap_or_default()
                    );
                    if !waiting {
                        waiting = store.transition(self.id(), SessionState::Queued, None, Some(&why)).await.is_ok();
                    } else if shown.as_ref() != Some(&why) {
                        let _ = store.set_waiting_reason(self.id(), &why).await;
                    }
                    shown = Some(why);
                }
                JobVerdict::Queued { .. } => {}
                JobVerdict::Running => {
                    if waiting {
                        self.mark_running(&slot).await;
                        waiting = false;
                    }
                }
                verdict => return Ok(self.finish(job, &status, verdict, &mut files, waiting, &slot).await),
            }
            self.pause(job, poll).await?;
        }
    }

    /// The job's end: the rest of its files, then its exit.
    async fn finish(
        &mut self,
        job: JobId,
        status: &JobStatus,
        verdict: JobVerdict,
        files: &mut Files,
        waiting: bool,
        slot: &str,
    ) -> Exit {
        if let Err(Halt::Lost(message)) = self.forward(files, true).await {
            self.say(&message).await;
        }
        // A job can start and end between two looks; the session must have run to end as anything but stopped.
        if waiting && verdict != JobVerdict::Cancelled {
            self.mark_running(slot).await;
        }
        self.say(&format!("job {job} ended: {}", status.ending())).await;
        verdict.exit().unwrap_or(Exit::Unknown)
    }

    async fn mark_running(&self, slot: &str) {
        let store = &self.inner.store;
        if let Err(e) = store.transition(self.id(), SessionState::Running, Some(slot), None).await {
            tracing::warn!("{}: back to running: {e}", self.id());
        }
    }

    /// The job this launch runs: the recorded one unless it is gone or was interrupted (this launch is then the
    /// resume), one submitted just before a crash (found by name), or a new submission.
    async fn attach_or_submit(&mut self, record: &crate::store::slurm::SlurmRecord) -> Result<JobId, Halt> {
        let (client, store) = (self.inner.client.clone(), self.inner.store.clone());
        let id = self.id().clone();
        let lost = |e: &dyn std::fmt::Display| Halt::Lost(e.to_string());
        if let Some(job) = record.job {
            let status = self.status_of_recorded(job).await?;
            if keeps_recorded_job(status.as_ref()) {
                self.say(&format!("re-attached to Slurm job {job}")).await;
                return Ok(job);
            }
            match status {
                Some(_) => {
                    // Interrupted: the next attempt resumes from the last checkpoint; metrics past it come again.
                    let last = store.checkpoints(&id).await.map_err(|e| lost(&e))?;
                    let last = last.iter().map(|c| c.epoch).max().unwrap_or(0);
                    store.delete_metrics_after(&id, last).await.map_err(|e| lost(&e))?;
                }
                None => self.say(&format!("Slurm no longer knows job {job}; submitting the session again")).await,
            }
        } else if record.attempt > 0 {
            let name = job_name(&id, record.attempt, &self.inner.home_tag);
            let found = client.find_by_name(&name).await.map_err(|e| lost(&e))?;
            if let Some(job) = found.iter().map(|(job, _)| *job).max() {
                store.set_slurm_job(&id, job).await.map_err(|e| lost(&e))?;
                self.say(&format!("found Slurm job {job} ({name}), submitted before the daemon restarted")).await;
                return Ok(job);
            }
        }
        if self.signals.try_recv().is_ok() {
            return Err(Halt::Stopped);
        }
        if self.launch.shutdown.is_cancelled() {
            return Err(Halt::Detached);
        }
        let row = store.session_required(&id).await.map_err(|e| lost(&e))?;
        let resolved = row.resolved_spec().map_err(|e| lost(&e))?;
        let attempt = store.begin_slurm_attempt(&id).await.map_err(|e| lost(&e))?;
        let log = job_log(&self.launch.dir);
        let device = self.launch.slot.device();
        let batch = BatchJob {
            session: &id,
            attempt,
            home_tag: &self.inner.home_tag,
            session_dir: &self.launch.dir,
            log: &log,
            device,
            rush_exe: &self.inner.rush_exe,
        };
        let request = sbatch_request(&batch, &self.inner.config, resolved.spec.slurm.as_ref());
        let job = client.submit(&request).await.map_err(|e| Halt::Lost(format!("sbatch: {e}")))?;
        store.set_slurm_job(&id, job).await.map_err(|e| lost(&e))?;
        self.say(&format!("submitted as Slurm job {job} (attempt {attempt})")).await;
        Ok(job)
    }

    /// What Slurm says about a recorded job (`None`: it does not know it), retrying while the controller is away.
    async fn status_of_recorded(&mut self, job: JobId) -> Result<Option<JobStatus>, Halt> {
        let poll = Duration::from_millis(self.inner.config.poll_ms);
        for _ in 0..MAX_STATUS_FAILURES {
            match self.inner.client.status(job).await {
                Ok(status) => return Ok(Some(status)),
                Err(ClientError::UnknownJob(_)) => return Ok(None),
                Err(e) => tracing::warn!("{}: asking Slurm about job {job}: {e}", self.id()),
            }
            self.pause(job, poll).await?;
        }
        Err(Halt::Lost(format!("Slurm did not answer about job {job}")))
    }

    /// Waits one poll interval, acting on a stop (`scancel`) or the daemon's shutdown (detach) meanwhile.
    async fn pause(&mut self, job: JobId, poll: Duration) -> Result<(), Halt> {
        let shutdown = self.launch.shutdown.clone();
        tokio::select! {
            _ = tokio::time::sleep(poll) => Ok(()),
            _ = shutdown.cancelled() => {
                self.say(&format!("the daemon is shutting down; Slurm job {job} goes on")).await;
                Err(Halt::Detached)
            }
            signal = self.signals.recv() => {
                match signal {
                    // A stop during the daemon's shutdown is the shutdown: the job outlives the daemon.
                    Some(_) if shutdown.is_cancelled() => return Err(Halt::Detached),
                    Some(StopSignal::Term) if !self.stop_sent => self.say(&format!("scancel {job}")).await,
                    Some(_) => {}
                    None => return Err(Halt::Detached),
                }
                self.stop_sent = true;
                if let Err(e) = self.inner.client.cancel(job).await {
                    self.say(&format!("scancel {job} failed: {e}")).await;
                }
                Ok(())
            }
        }
    }

    /// Passes the lines the job appended to the runner, then records how far they were read once the runner has
    /// taken them. `last`: the job has ended, so an unfinished last line counts too.
    async fn forward(&mut self, files: &mut Files, last: bool) -> Result<(), Halt> {
        let events = read(&mut files.events, last).await?;
        let log = read(&mut files.log, last).await?;
        if events.is_empty() && log.is_empty() {
            return Ok(());
        }
        for line in log {
            let _ = self.log.send(Ok(line.text)).await;
        }
        for line in events {
            let _ = self.events.send(Ok(line.text)).await;
        }
        // The runner handles a line before it takes the next: once both channels are empty, everything before the
        // last line is stored, so the offsets may move (a crash now repeats at most that line).
        for _ in 0..500 {
            let taken = |tx: &mpsc::Sender<io::Result<String>>| tx.is_closed() || tx.capacity() == tx.max_capacity();
            if taken(&self.events) && taken(&self.log) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (events, log) = (files.events.offset(), files.log.offset());
        if let Err(e) = self.inner.store.set_follow_offsets(self.id(), events, log).await {
            tracing::warn!("{}: recording how far its files were read: {e}", self.id());
        }
        Ok(())
    }
}

/// The files a job writes in its session folder.
struct Files {
    events: LineFollower,
    log: LineFollower,
}

/// New lines of one file, off the async threads. A file the trainer started over is read again from its start.
async fn read(follower: &mut LineFollower, last: bool) -> Result<Vec<Line>, Halt> {
    let mut owned = follower.clone();
    let (owned, result) = tokio::task::spawn_blocking(move || {
        let result = if last { owned.drain() } else { owned.poll() };
        (owned, result)
    })
    .await
    .map_err(|e| Halt::Lost(format!("reading the job's files: {e}")))?;
    *follower = owned;
    match result {
        Ok(lines) => Ok(lines),
        Err(TailError::Truncated { path, .. }) => {
            tracing::warn!("{} was truncated; reading it from the start", path.display());
            *follower = LineFollower::new(path, 0);
            Ok(Vec::new())
        }
        Err(e) => Err(Halt::Lost(e.to_string())),
    }
}
