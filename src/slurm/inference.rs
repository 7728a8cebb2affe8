//! A submission's member inference as a Slurm batch job, so a head node without a GPU never scores an ensemble: the
//! job runs the same `rush infer` command line as a local child (`core::slurm::infer_sbatch_request`) and the
//! submission worker reads its files the same way once it has ended.
//!
//! The job is followed like a session's (`squeue`, then `scontrol`/`sacct` once it has left the queue). While Slurm
//! keeps it waiting, the submission's slot column and `infer.log` say so (`[slurm] job 42 pending: Resources`). The
//! daemon's shutdown cancels it, and a job of the same name that a killed daemon left behind is cancelled before a new
//! one is submitted, so no inference job outlives the daemon that wanted it.

use std::time::Duration;

use super::cluster::{Inner, StatusPoll};
use crate::core::slurm::{InferJob, JobId, JobVerdict, infer_job_name, infer_sbatch_request};
use crate::daemon::executor::{Inference, InferenceEnd};

/// Runs `inference` as one batch job to its end.
pub(super) async fn run(inner: &Inner, inference: &Inference) -> Result<(), InferenceEnd> {
    let job = submit(inner, inference).await?;
    let poll = Duration::from_millis(inner.config.poll_ms);
    let who = format!("submission {}", inference.submission);
    let mut polls = StatusPoll::default();
    let mut shown: Option<JobVerdict> = None;
    loop {
        let status = match polls.ask(&inner.client, job, &who).await {
            Ok(Some(status)) => status,
            Ok(None) => {
                pause(inner, inference, job, poll).await?;
                continue;
            }
            Err(message) => {
                inference.note(&format!("[slurm] {message}"));
                return Err(inference.failed(&message));
            }
        };
        let verdict = status.verdict();
        match &verdict {
            JobVerdict::Queued { reason } if shown.as_ref() != Some(&verdict) => {
                let why = reason.as_deref().map(|r| format!(" pending: {r}")).unwrap_or(" pending".into());
                inference.note(&format!("[slurm] job {job}{why}"));
                show(inner, inference, &format!("{}, Slurm job {job}{why}", inference.slot)).await;
            }
            JobVerdict::Running if shown.as_ref() != Some(&verdict) => {
                inference.note(&format!("[slurm] job {job} running"));
                show(inner, inference, &format!("{}, Slurm job {job}", inference.slot)).await;
            }
            JobVerdict::Queued { .. } | JobVerdict::Running => {}
            ended => {
                inference.note(&format!("[slurm] job {job} ended: {}", status.ending()));
                if *ended == JobVerdict::Completed {
                    show(inner, inference, &format!("{}, Slurm job {job}", inference.slot)).await;
                    return Ok(());
                }
                let exit = status.exit.map(|e| format!(", exit code {e}")).unwrap_or_default();
                return Err(inference.failed(&format!("Slurm job {job}: {}{exit}", status.state)));
            }
        }
        shown = Some(verdict);
        pause(inner, inference, job, poll).await?;
    }
}

/// Cancels what a killed daemon left under this inference's job name, then submits the job.
async fn submit(inner: &Inner, inference: &Inference) -> Result<JobId, InferenceEnd> {
    let (session, epoch) = (&inference.session, inference.epoch);
    let name = infer_job_name(inference.submission, session, epoch, &inner.home_tag);
    let failed = |what: &str, e: &dyn std::fmt::Display| {
        inference.note(&format!("[slurm] {what}: {e}"));
        inference.failed(&format!("{what}: {e}"))
    };
    let left = inner.client.find_by_name(&name).await.map_err(|e| failed("squeue", &e))?;
    for (job, _) in left.iter().filter(|(_, status)| !status.state.is_final()) {
        inference.note(&format!("[slurm] scancel {job}, left by an earlier daemon"));
        inner.client.cancel(*job).await.map_err(|e| failed("scancel", &e))?;
    }
    if inference.shutdown.is_cancelled() {
        return Err(InferenceEnd::Interrupted);
    }
    let args = inference.args();
    // The member's session asked for these resources to train (`slurm:` in its spec); its inference gets them too.
    let overrides = match inner.store.session(session).await {
        Ok(Some(row)) => row.resolved_spec().ok().and_then(|resolved| resolved.spec.slurm),
        _ => None,
    };
    let request = infer_sbatch_request(
        &InferJob {
            submission: inference.submission,
            session,
            epoch,
            home_tag: &inner.home_tag,
            submission_dir: inference.submission_dir(),
            out: &inference.out,
            log: &inference.log,
            device: inference.slot.device(),
            rush_exe: &inner.rush_exe,
            args: &args,
        },
        &inner.config,
        overrides.as_ref(),
    );
    let job = inner.client.submit(&request).await.map_err(|e| failed("sbatch", &e))?;
    inference.note(&format!(
        "[slurm] {session}:{epoch} in {}: submitted as Slurm job {job} ({name}): rush {}",
        inference.slot,
        args.join(" ")
    ));
    show(inner, inference, &format!("{}, Slurm job {job}", inference.slot)).await;
    Ok(job)
}

/// Waits one poll interval; on the daemon's shutdown cancels the job and ends the inference as interrupted.
async fn pause(inner: &Inner, inference: &Inference, job: JobId, poll: Duration) -> Result<(), InferenceEnd> {
    tokio::select! {
        _ = tokio::time::sleep(poll) => Ok(()),
        _ = inference.shutdown.cancelled() => {
            inference.note(&format!("[slurm] the daemon is shutting down: scancel {job}"));
            if let Err(e) = inner.client.cancel(job).await {
                inference.note(&format!("[slurm] scancel {job} failed: {e}"));
                tracing::error!("submission {}: scancel {job}: {e}", inference.submission);
            }
            Err(InferenceEnd::Interrupted)
        }
    }
}

/// What the submission's row says about where it runs.
async fn show(inner: &Inner, inference: &Inference, slot: &str) {
    if let Err(e) = inner.store.set_submission_slot(inference.submission, slot).await {
        tracing::warn!("submission {}: {e}", inference.submission);
    }
}
