//! Submission jobs: queue a request (checked, checkpoints resolved, the daily limit applied), then the submission
//! worker runs each in a worker slot like a session: `rush infer` for the members whose probabilities are not cached
//! yet, where the daemon's executor runs children (a local child, or one Slurm job at a time), their output going into
//! the probability cache, the weighted mix (`core::ensemble::Mix`), the `predictions.npy` beside the submission, and
//! the scorer, which alone reads the hidden labels. A submission whose members are all cached holds no slot at all:
//! mixing and scoring take the daemon well under a second, and it never waits behind the sessions that hold them all.
//!
//! One submission runs at a time. While it waits for a slot the scheduler starts no new session, so a short
//! submission never starves behind a long queue of sessions. Under the Slurm executor a slot is one of the jobs the
//! daemon may have submitted at once (`gpu_jobs`, `cpu_jobs`), so an inference job counts against those caps like a
//! session's, and asks for the slot's device. A daemon shutdown puts a running submission back in the queue (its
//! child killed, its Slurm job cancelled); so does a restart (`requeue_running_submissions`).

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;

use super::datasets::Readiness;
use super::executor::{Inference, InferenceEnd, OnStart};
use super::slots::Lease;
use super::{Daemon, DaemonError, Task};
use crate::core::checkpoint::CheckpointRef;
use crate::core::ensemble::{Mix, ProbRows, Probs};
use crate::core::queue::SlotKind;
use crate::core::score::{self, DailyLimit};
use crate::core::session::SessionId;
use crate::data::facts::Facts;
use crate::home::Home;
use crate::store::{NewSubmission, ScoredSubmission, StoredMember, SubmissionRow};
use crate::submit::npy::{self, F16Matrix};
use crate::submit::probs::{self, CacheKey, CacheSplit};
use crate::submit::report::{InferReport, read_report};
use crate::submit::scorer::{self, Scored};
use crate::submit::{NO_SLOT, Submission, Tta};

/// How often a waiting submission looks for a free slot, and the worker for queued submissions.
const POLL: Duration = Duration::from_millis(250);

impl Daemon {
    /// Checks and queues `user`'s submission; returns its row. Refused: unknown (or removed) sessions or checkpoints,
    /// a dataset without hidden labels, or a user who has used the day's submissions (dry runs are never limited).
    pub async fn queue_submission(&self, user: &str, request: &Submission) -> Result<SubmissionRow, DaemonError> {
        request.validate().map_err(|e| DaemonError::Invalid(e.to_string()))?;
        let dataset = request.dataset().to_string();
        self.accept_dataset("the submission", &dataset).await?;
        if !scorer::has_labels(self.home(), &dataset) {
            return Err(DaemonError::Invalid(format!(
                "dataset {dataset} has no hidden test labels, so nothing can be scored (push it from a folder holding \
                 test/test_labels.csv)"
            )));
        }
        let mut members = Vec::with_capacity(request.members.len());
        for m in &request.members {
            // a removed (or never created) session is refused even where probabilities of it are still cached
            if self.store.session(&m.session).await?.is_none() {
                return Err(DaemonError::NotFound(format!("unknown session {}", m.session)));
            }
            let epoch = match (self.resolve_checkpoint(&m.session, m.checkpoint).await, m.checkpoint) {
                (Ok(epoch), _) => epoch,
                // a checkpoint whose probabilities are cached needs no weights: retention may have deleted them
                (Err(_), CheckpointRef::Epoch(e)) if cached(self.home(), &m.session, e, request.tta) => e,
                (Err(e), _) => return Err(e),
            };
            members.push(StoredMember {
                session: m.session.to_string(),
                checkpoint: m.checkpoint.to_string(),
                epoch,
                weight: m.weight,
            });
        }
        let user = user.to_string();
        let now = time::OffsetDateTime::now_utc();
        let (start, end) = score::utc_day(now);
        let day = (start.unix_timestamp() as f64, end.unix_timestamp() as f64);
        let new = NewSubmission {
            dataset,
            user: user.clone(),
            members,
            tta: request.tta.to_string(),
            dry_run: request.dry_run,
            created_at: crate::store::now(),
        };
        let limit = DailyLimit { per_day: self.config.submissions_per_day };
        let id = self
            .store
            .add_submission(&new, day, |used| limit.check(&user, &new.dataset, used, now))
            .await?
            .map_err(|e| DaemonError::Limit(e.to_string()))?;
        self.submission_wake.notify_one();
        self.store.submission(id).await?.ok_or_else(|| DaemonError::NotFound(format!("submission {id} vanished")))
    }

    /// What a queued submission waits for, in words: the slots and what holds them (`a slot: cpu0 runs
    /// local/emoji/2`), or the submission before it (one runs at a time). `None` when it waits for nothing (it is
    /// about to start, or runs, or has ended).
    pub fn submission_waits_for(&self, row: &SubmissionRow) -> Option<String> {
        if row.state != crate::store::SubmissionState::Queued {
            return None;
        }
        if self.dataset_wait(&row.dataset).is_some() {
            return Some(format!("dataset {} to register", row.dataset));
        }
        let views = self.slots.views();
        match self.slots.waiting_submission() {
            Some(w) if w == row.id => {
                let held: Vec<String> =
                    views.iter().filter_map(|v| v.session.as_ref().map(|s| format!("{} runs {s}", v.slot))).collect();
                Some(format!("a slot: {}", if held.is_empty() { "none is free".to_string() } else { held.join(", ") }))
            }
            Some(w) => Some(format!("submission {w}, which waits for a slot (one submission runs at a time)")),
            None => views
                .iter()
                .filter_map(|v| v.session.as_deref()?.strip_prefix("submission "))
                .find(|n| *n != row.id.to_string())
                .map(|n| format!("submission {n} to finish (one submission runs at a time)")),
        }
    }

    /// The ranked submissions `user` has left today on `dataset` (the daily limit less those made since 00:00 UTC
    /// that did not fail), and the limit.
    pub async fn submissions_left(&self, user: &str, dataset: &str) -> Result<(u32, u32), DaemonError> {
        let (start, end) = score::utc_day(time::OffsetDateTime::now_utc());
        let day = (start.unix_timestamp() as f64, end.unix_timestamp() as f64);
        let used = self.store.ranked_submissions_made(user, dataset, day).await?;
        let per_day = self.config.submissions_per_day;
        Ok((per_day.saturating_sub(used), per_day))
    }

    /// The epoch a checkpoint name (`7`, `best`, `last`) of a session means now.
    pub async fn resolve_checkpoint(&self, id: &SessionId, checkpoint: CheckpointRef) -> Result<u32, DaemonError> {
        Ok(self.checkpoint_row(id, checkpoint).await?.epoch as u32)
    }
}

/// The submission worker: takes the oldest queued submission, waits for a slot, runs it, records the outcome. A
/// panic while running one fails that submission (with the panic's message), is counted
/// (`rush_task_panics_total{task="submissions"}`), and the loop goes on.
pub async fn run(daemon: Arc<Daemon>) {
    loop {
        if daemon.shutdown.is_cancelled() {
            break;
        }
        match daemon.store.next_queued_submission().await {
            Ok(Some(row)) => match daemon.dataset_readiness(&row.dataset) {
                // Its dataset is still registering: it waits (woken when the registration ends).
                Readiness::Registering => {}
                Readiness::Failed(reason) => {
                    if let Err(e) = daemon.store.fail_submission(row.id, &reason, crate::store::now()).await {
                        tracing::error!("submission {}: recording the failure: {e}", row.id);
                    }
                }
                Readiness::Ready => {
                    let id = row.id;
                    if let Err(payload) = AssertUnwindSafe(run_one(&daemon, row)).catch_unwind().await {
                        let message = daemon.panics.caught(Task::Submissions, payload.as_ref());
                        let reason = format!("the daemon's submission worker failed: {message}");
                        if let Err(e) = daemon.store.fail_submission(id, &reason, crate::store::now()).await {
                            tracing::error!("submission {id}: recording the failure: {e}");
                        }
                    }
                }
            },
            Ok(None) => {}
            Err(e) => tracing::error!("submissions: {e}"),
        }
        tokio::select! {
            _ = daemon.shutdown.cancelled() => break,
            _ = daemon.submission_wake.notified() => {}
            _ = tokio::time::sleep(POLL * 8) => {}
        }
    }
}

/// Runs `row` and records its outcome. A slot is leased only when a member needs inference: an ensemble of cached
/// members is mixed and scored by the daemon at once, never waiting behind the sessions that hold every slot. The
/// lease, if any, is handed back when this returns (or unwinds).
async fn run_one(daemon: &Arc<Daemon>, row: SubmissionRow) {
    let id = row.id;
    #[cfg(test)]
    if daemon
        .fail_submissions
        .fetch_update(std::sync::atomic::Ordering::SeqCst, std::sync::atomic::Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        panic!("a failure point in the submission worker");
    }
    // Read once, from the dataset's facts: it decides whether the members are cached, then orders the run.
    let (name, percent) = (row.dataset.clone(), daemon.config.public_percent);
    let order = match daemon.dataset_facts(&row.dataset).await {
        Ok(facts) => blocking(move || test_order(&facts.facts, &name, percent)).await.and_then(|order| order),
        Err(e) => Err(format!("reading the test split: {e}")),
    };
    let mut leased: Option<Lease> = None;
    if !matches!(&order, Ok(order) if all_cached(daemon, &row, order).await) {
        let Some(lease) = lease(daemon, id, &row.user).await else { return };
        leased = Some(lease);
    }
    let slot = leased.as_ref().map_or_else(|| NO_SLOT.to_string(), |lease| lease.kind().to_string());
    let outcome = match daemon.store.start_submission(id, &slot, crate::store::now()).await {
        Ok(()) => {
            let mut outcome = execute(daemon, &row, leased.as_ref().map(Lease::kind), &order).await;
            // A member found cached could not be read after all (damaged, or replaced meanwhile): it needs inference.
            if matches!(outcome, Err(JobEnd::NeedsSlot)) {
                outcome = match lease(daemon, id, &row.user).await {
                    Some(lease) => {
                        let kind = lease.kind();
                        leased = Some(lease);
                        if let Err(e) = daemon.store.set_submission_slot(id, &kind.to_string()).await {
                            tracing::warn!("submission {id}: {e}");
                        }
                        execute(daemon, &row, Some(kind), &order).await
                    }
                    None => Err(JobEnd::Interrupted),
                };
            }
            Some(outcome)
        }
        Err(e) => {
            tracing::error!("submission {id}: {e}");
            None
        }
    };
    let now = crate::store::now();
    let recorded = match outcome {
        Some(Ok(scored)) => {
            tracing::info!("submission {id} scored: public {:.4}", scored.public_score);
            daemon.store.score_submission(id, &scored, now).await
        }
        Some(Err(JobEnd::Interrupted | JobEnd::NeedsSlot)) => daemon.store.requeue_submission(id).await,
        Some(Err(JobEnd::Failed(reason))) => {
            tracing::warn!("submission {id} failed: {reason}");
            daemon.store.fail_submission(id, &reason, now).await
        }
        None => Ok(()),
    };
    if let Err(e) = recorded {
        tracing::error!("submission {id}: recording the outcome: {e}");
    }
    drop(leased);
    daemon.wake.notify_one();
}

/// Whether every member's probabilities are in the cache for this test order (both splits), so the submission needs
/// no inference and no slot. Any doubt (an unreadable dataset, a bad member) says no: the slot path reports it.
async fn all_cached(daemon: &Daemon, row: &SubmissionRow, order: &TestOrder) -> bool {
    let home = daemon.home().clone();
    let (tta, members, digest) = (row.tta.clone(), row.members.clone(), order.digest.clone());
    blocking(move || -> Option<()> {
        let tta: Tta = tta.parse().ok()?;
        for m in &members {
            let session: SessionId = m.session.parse().ok()?;
            let key = |split| CacheKey { session: session.clone(), epoch: m.epoch, split, tta };
            let test = probs::meta(&home, &key(CacheSplit::Test)).ok()??;
            probs::meta(&home, &key(CacheSplit::Valid)).ok()??;
            (test.order == digest).then_some(())?;
        }
        Some(())
    })
    .await
    .is_ok_and(|cached| cached.is_some())
}

/// Waits for a free slot (a GPU first, within its user's GPU quota) and holds it for submission `id`; `None` on
/// shutdown.
async fn lease(daemon: &Daemon, id: i64, user: &str) -> Option<Lease> {
    loop {
        let quota = daemon.users().get(user).and_then(|u| u.gpus);
        if let Some(lease) = daemon.slots.lease_submission(id, user, quota) {
            return Some(lease);
        }
        tokio::select! {
            _ = daemon.shutdown.cancelled() => {
                daemon.slots.stop_waiting();
                return None;
            }
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

/// How a job ended without a score.
#[derive(Debug)]
enum JobEnd {
    /// The daemon is shutting down: queue it again.
    Interrupted,
    /// A member needs inference, and the job runs without a slot: run it again in one.
    NeedsSlot,
    Failed(String),
}

impl<E: std::fmt::Display> From<E> for JobEnd {
    fn from(e: E) -> Self {
        JobEnd::Failed(e.to_string())
    }
}

/// The test split's sample keys (`package_id/sticker_id`) in `test_order.csv` order, and the order digests of all of
/// them and of the dry-run sample.
struct TestOrder {
    digest: String,
    /// The dry-run sample's test indices (public stickers only, `core::score::dry_run_indices`).
    dry_rows: Vec<usize>,
    dry_digest: String,
}

fn test_order(facts: &Facts, name: &str, public_percent: u8) -> Result<TestOrder, String> {
    let summary = facts.summary();
    if summary.test_order.is_empty() {
        return Err(format!("reading the test split: dataset {name} has no test split (test/test_data)"));
    }
    let split = score::BoardSplit::new(name, summary.test_images, public_percent).map_err(|e| e.to_string())?;
    let dry_rows = score::dry_run_indices(&split);
    Ok(TestOrder {
        digest: summary.test_order.clone(),
        dry_digest: probs::order_digest(dry_rows.iter().map(|&i| facts.test_key(i))),
        dry_rows,
    })
}

/// Runs one submission: inference where needed (in `slot`; without one, a member that needs it ends the run with
/// [`JobEnd::NeedsSlot`]), the mix, the `.npy`, the score.
async fn execute(
    daemon: &Arc<Daemon>,
    row: &SubmissionRow,
    slot: Option<SlotKind>,
    order: &Result<TestOrder, String>,
) -> Result<ScoredSubmission, JobEnd> {
    let order = order.as_ref().map_err(|e| JobEnd::Failed(e.clone()))?;
    let home = daemon.home().clone();
    let dir = home.submission(row.id);
    tokio::fs::create_dir_all(&dir).await.map_err(|e| format!("{}: {e}", dir.display()))?;
    let tta: Tta = row.tta.parse()?;

    // distinct checkpoints, their weights summed
    let mut weights: BTreeMap<(SessionId, u32), f64> = BTreeMap::new();
    for m in &row.members {
        let session: SessionId = m.session.parse()?;
        *weights.entry((session, m.epoch)).or_default() += m.weight;
    }
    let infer_started = Instant::now();
    let mut members: Vec<Member> = Vec::with_capacity(weights.len());
    for (k, (session, epoch)) in weights.keys().enumerate() {
        let job = MemberJob { daemon, row, slot, tta, session, epoch: *epoch, out: dir.join(format!("infer-{k}")) };
        members.push(job.probs(order).await?);
    }
    let infer_seconds = infer_started.elapsed().as_secs_f64();

    let score_started = Instant::now();
    let weights: Vec<f64> = weights.into_values().collect();
    let predictions_path = dir.join("predictions.npy");
    let (dataset, dry_run, percent, path) =
        (row.dataset.clone(), row.dry_run, daemon.config.public_percent, predictions_path.clone());
    let scored = blocking(move || -> Result<Scored, String> {
        let refs: Vec<&dyn ProbRows> = members.iter().map(Member::rows).collect();
        // a block of rows at a time from each member's mapped file: no member is ever copied whole
        let predictions = Mix::weighted(&refs, &weights).map_err(|e| e.to_string())?.predict();
        drop(members);
        npy::write_i64(&path, &predictions).map_err(|e| e.to_string())?;
        scorer::score_file(&home, &dataset, &path, dry_run, percent).map_err(|e| e.to_string())
    })
    .await??;
    let score_seconds = score_started.elapsed().as_secs_f64();
    let (public_score, private_score, samples) = match scored {
        Scored::Full(s) => (s.public, Some(s.private), (s.n_public + s.n_private) as i64),
        Scored::DryRun { accuracy, samples } => (accuracy, None, samples as i64),
    };
    Ok(ScoredSubmission {
        public_score,
        private_score,
        samples,
        npy_path: predictions_path.display().to_string(),
        infer_seconds,
        score_seconds,
    })
}

/// One member's test probabilities for a submission: from the cache, or from a `rush infer` child.
struct MemberJob<'a> {
    daemon: &'a Arc<Daemon>,
    row: &'a SubmissionRow,
    /// None: the submission holds no slot, since every member was found cached.
    slot: Option<SlotKind>,
    tta: Tta,
    session: &'a SessionId,
    epoch: u32,
    out: PathBuf,
}

impl MemberJob<'_> {
    fn key(&self, split: CacheSplit) -> CacheKey {
        CacheKey { session: self.session.clone(), epoch: self.epoch, split, tta: self.tta }
    }

    async fn probs(&self, order: &TestOrder) -> Result<Member, JobEnd> {
        let home = self.daemon.home().clone();
        let (test_key, valid_key) = (self.key(CacheSplit::Test), self.key(CacheSplit::Valid));
        let cached = {
            let (home, key, digest) = (home.clone(), test_key.clone(), order.digest.clone());
            let valid = valid_key.clone();
            blocking(move || -> Option<F16Matrix> {
                // a stale or damaged entry is computed again
                let has_valid = matches!(probs::meta(&home, &valid), Ok(Some(_)));
                probs::open(&home, &key, &digest).ok().flatten().filter(|_| has_valid)
            })
            .await?
        };
        if let Some(p) = cached {
            if !self.row.dry_run {
                return Ok(Member::Mapped(p));
            }
            let rows = order.dry_rows.clone();
            return Ok(Member::InMemory(blocking(move || Probs::select(&p, &rows)).await??));
        }
        let report = self.infer().await?;
        let expected = if self.row.dry_run { &order.dry_digest } else { &order.digest };
        if report.test_order != *expected {
            return Err(JobEnd::Failed(format!(
                "{}:{}: inference saw another test order than the daemon ({} rows; the dataset changed?)",
                self.session, self.epoch, report.test_rows
            )));
        }
        let out = self.out.clone();
        let dry_run = self.row.dry_run;
        let test = blocking(move || -> Result<Member, String> {
            if dry_run {
                let test = F16Matrix::open(&out.join("test.npy")).map_err(|e| e.to_string())?;
                return Probs::select(&test, &(0..test.rows()).collect::<Vec<_>>())
                    .map(Member::InMemory)
                    .map_err(|e| format!("{}: {e}", test.path().display()));
            }
            // moved into the cache as written, never read whole: validation first, so a test entry always has its
            // validation beside it
            probs::adopt(&home, &valid_key, &report.valid_order, &out.join("valid.npy")).map_err(|e| e.to_string())?;
            probs::adopt(&home, &test_key, &report.test_order, &out.join("test.npy")).map_err(|e| e.to_string())?;
            let test = probs::open(&home, &test_key, &report.test_order).map_err(|e| e.to_string())?;
            test.map(Member::Mapped).ok_or_else(|| format!("{test_key:?}: the cache entry vanished"))
        })
        .await??;
        Ok(test)
    }

    /// Runs `rush infer` for this member in the job's slot, where the daemon's executor runs children (a local child,
    /// or a Slurm job); its stderr goes to `infer.log` in the submission folder.
    async fn infer(&self) -> Result<InferReport, JobEnd> {
        let Some(slot) = self.slot else { return Err(JobEnd::NeedsSlot) };
        tokio::fs::create_dir_all(&self.out).await.map_err(|e| format!("{}: {e}", self.out.display()))?;
        let inference = Inference {
            submission: self.row.id,
            session: self.session.clone(),
            session_dir: self.daemon.home().session(self.session),
            epoch: self.epoch,
            tta: self.tta,
            dry_run: self.row.dry_run,
            public_percent: self.daemon.config.public_percent,
            out: self.out.clone(),
            log: self.out.parent().unwrap_or(&self.out).join("infer.log"),
            slot,
            shutdown: self.daemon.shutdown.clone(),
            on_start: {
                // Recorded before the child is waited for: a restarted daemon kills a child that outlived this one.
                let (store, submission) = (self.daemon.store.clone(), self.row.id);
                OnStart::new(move |child| {
                    let store = store.clone();
                    Box::pin(async move {
                        if let Err(e) = store.set_submission_child(submission, child.pid, child.start).await {
                            tracing::warn!("submission {submission}: recording its child {}: {e}", child.pid);
                        }
                    })
                })
            },
        };
        match self.daemon.executor.infer(&inference).await {
            Ok(()) => Ok(read_report(&self.out)?),
            Err(InferenceEnd::Interrupted) => Err(JobEnd::Interrupted),
            Err(InferenceEnd::Failed(reason)) => Err(JobEnd::Failed(reason)),
        }
    }
}

/// A member's test probabilities: its cached float16 file, mapped; or, for a dry run, its sample rows in memory.
enum Member {
    Mapped(F16Matrix),
    InMemory(Probs),
}

impl Member {
    fn rows(&self) -> &dyn ProbRows {
        match self {
            Member::Mapped(m) => m,
            Member::InMemory(p) => p,
        }
    }
}

/// Runs blocking work (file reads, mixing) off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    tokio::task::spawn_blocking(f).await.map_err(|e| format!("a submission task crashed: {e}"))
}

/// Whether a checkpoint's probabilities are cached for both splits.
pub fn cached(home: &Home, session: &SessionId, epoch: u32, tta: Tta) -> bool {
    [CacheSplit::Test, CacheSplit::Valid].into_iter().all(|split| {
        let key = CacheKey { session: session.clone(), epoch, split, tta };
        matches!(probs::meta(home, &key), Ok(Some(_)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::config::{DaemonConfig, Flags};
    use crate::daemon::executor::LocalExecutor;
    use crate::store::{NewSubmission, Store, SubmissionState};

    /// A failure point makes the worker panic on the first submission: that one fails with the panic's message, the
    /// panic is counted, and the next submission is still taken.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panic_fails_that_submission_and_the_worker_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let flags = Flags { experiments: Some(dir.path().join("exp")), cpu_slots: Some(1), ..Default::default() };
        let config = DaemonConfig::resolve(Home::new(dir.path().join("home")), flags, 0).unwrap().prepare().unwrap();
        let store = Store::open(&config.db).await.unwrap();
        let daemon = Daemon::new(config, store, Arc::new(LocalExecutor { program: "/bin/false".into() }));
        daemon.fail_submissions.store(1, std::sync::atomic::Ordering::SeqCst);
        let new = NewSubmission {
            dataset: "emoji".into(),
            user: "local".into(),
            members: vec![StoredMember {
                session: "local/emoji/1".into(),
                checkpoint: "1".into(),
                epoch: 1,
                weight: 1.0,
            }],
            tta: "none".into(),
            dry_run: true,
            created_at: crate::store::now(),
        };
        let allow = |_| Ok::<(), ()>(());
        let first = daemon.store.add_submission(&new, (0.0, 0.0), allow).await.unwrap().unwrap();
        let second = daemon.store.add_submission(&new, (0.0, 0.0), allow).await.unwrap().unwrap();
        let worker = tokio::spawn(run(daemon.clone()));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let (a, b) = loop {
            let a = daemon.store.submission(first).await.unwrap().unwrap();
            let b = daemon.store.submission(second).await.unwrap().unwrap();
            if a.state.is_terminal() && b.state.is_terminal() {
                break (a, b);
            }
            assert!(tokio::time::Instant::now() < deadline, "the worker stopped after a panic: {a:?} {b:?}");
            daemon.submission_wake.notify_one();
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(a.state, SubmissionState::Failed);
        let reason = a.error.unwrap_or_default();
        assert!(reason.contains("a failure point in the submission worker"), "{reason}");
        // The second ran for real, and failed for its own reason (this daemon has no dataset).
        assert_eq!(b.state, SubmissionState::Failed);
        assert!(!b.error.unwrap_or_default().contains("failure point"));
        assert_eq!(daemon.panics.count(Task::Submissions), 1);
        assert!(daemon.slots().iter().all(|s| s.session.is_none()), "no slot is left held");
        daemon.shut_down().await;
        worker.await.unwrap();
    }
}
