//! A typed client over Slurm's command-line tools (`sbatch`, `squeue`, `scontrol`, `sacct`, `scancel`), the same
//! on a test cluster and a real one: it needs only the tools on `PATH` and, optionally, a `SLURM_CONF`.
//!
//! A job's state comes from `squeue -t all` while the controller remembers the job (`MinJobAge`), with the exit
//! code from `scontrol show job` once it has ended; after that from `sacct` (the accounting database, or with `-c`
//! the job-completion file on clusters without one).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::AsyncWriteExt;

use crate::core::slurm::{
    JobId, JobStatus, SQUEUE_FORMAT, SbatchRequest, SlurmError, parse_sacct, parse_scontrol_job, parse_squeue,
    parse_squeue_all,
};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("could not run {program} (is Slurm's client installed and on PATH?): {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed { command: String, status: String, stderr: String },
    #[error(transparent)]
    Parse(#[from] SlurmError),
    #[error("Slurm knows no job {0} (neither the controller nor the accounting records)")]
    UnknownJob(JobId),
}

/// Runs Slurm's tools against one cluster.
#[derive(Debug, Clone, Default)]
pub struct SlurmClient {
    /// `SLURM_CONF` for the tools; `None` keeps the environment's (or Slurm's default).
    conf: Option<PathBuf>,
}

/// Variables a job must not inherit from the daemon through `sbatch` (it exports the caller's environment): a
/// training child knows its session folder and its dataset folder, nothing else of the home.
const WITHHELD_FROM_JOBS: [&str; 3] = ["RUSH_HOME", "RUSH_URL", "RUSH_TOKEN"];

impl SlurmClient {
    pub fn new(conf: Option<PathBuf>) -> Self {
        Self { conf }
    }

    pub fn conf(&self) -> Option<&Path> {
        self.conf.as_deref()
    }

    /// Submits a batch job (the script on stdin) and returns its id.
    pub async fn submit(&self, request: &SbatchRequest) -> Result<JobId, ClientError> {
        let out = self.run("sbatch", &request.args, Some(&request.script)).await?;
        Ok(out.trim().parse()?)
    }

    /// The job's state, reason and (once it has ended) exit code.
    pub async fn status(&self, job: JobId) -> Result<JobStatus, ClientError> {
        let args = ["-h", "-t", "all", "-j", &job.to_string(), "-o", SQUEUE_FORMAT];
        let listed = match self.run("squeue", &args, None).await {
            Ok(text) => parse_squeue(&text, job)?,
            // The controller has forgotten the job (older than MinJobAge, or never known).
            Err(ClientError::Failed { stderr, .. }) if stderr.contains("Invalid job id") => None,
            Err(e) => return Err(e),
        };
        match listed {
            Some(status) if status.state.is_final() => Ok(self.with_exit_code(job, status).await),
            Some(status) => Ok(status),
            None => self.accounting(job).await?.ok_or(ClientError::UnknownJob(job)),
        }
    }

    /// Adds the exit code `squeue` cannot show, from `scontrol show job`; without it when that fails.
    async fn with_exit_code(&self, job: JobId, status: JobStatus) -> JobStatus {
        match self.run("scontrol", &["show", "job", "-o", &job.to_string()], None).await {
            Ok(text) => match parse_scontrol_job(&text, job) {
                Ok(shown) if shown.state == status.state => JobStatus { exit: shown.exit, ..status },
                _ => status,
            },
            Err(e) => {
                tracing::debug!("scontrol show job {job}: {e}");
                status
            }
        }
    }

    /// The job's end state from `sacct`: the accounting database, else the job-completion file (`-c`).
    pub async fn accounting(&self, job: JobId) -> Result<Option<JobStatus>, ClientError> {
        let id = job.to_string();
        let fields = ["-j", &id, "-n", "-P", "-o", "jobid,state,exitcode"];
        match self.run("sacct", &fields, None).await {
            Ok(text) => {
                if let Some(status) = parse_sacct(&text, job)? {
                    return Ok(Some(status));
                }
            }
            Err(e) => tracing::debug!("sacct -j {job}: {e}"),
        }
        let with_c: Vec<&str> = std::iter::once("-c").chain(fields).collect();
        Ok(parse_sacct(&self.run("sacct", &with_c, None).await?, job)?)
    }

    /// Jobs the controller still knows by this exact name, any state: how a restarted daemon finds a job it
    /// submitted but did not get to record.
    pub async fn find_by_name(&self, name: &str) -> Result<Vec<(JobId, JobStatus)>, ClientError> {
        let text = self.run("squeue", &["-h", "-t", "all", "-n", name, "-o", SQUEUE_FORMAT], None).await?;
        Ok(parse_squeue_all(&text)?)
    }

    /// Cancels the job (`scancel`: SIGTERM to the batch script, then CANCELLED). Cancelling an ended job is a no-op.
    pub async fn cancel(&self, job: JobId) -> Result<(), ClientError> {
        self.run("scancel", &[job.to_string()], None).await.map(drop)
    }

    /// Whether the controller answers and has a node that can run jobs (for start-up checks and `doctor`).
    pub async fn ping(&self) -> Result<Vec<String>, ClientError> {
        let text = self.run("sinfo", &["-h", "-N", "-o", "%N %t"], None).await?;
        Ok(text.lines().map(str::to_string).collect())
    }

    async fn run<S: AsRef<str>>(&self, program: &str, args: &[S], stdin: Option<&str>) -> Result<String, ClientError> {
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args.iter().map(AsRef::as_ref));
        if let Some(conf) = &self.conf {
            cmd.env("SLURM_CONF", conf);
        }
        for var in WITHHELD_FROM_JOBS {
            cmd.env_remove(var);
        }
        // A job's trainer reports its progress as events too: the daemon follows its events.jsonl (sbatch exports this).
        cmd.env(crate::core::event::PROGRESS_EVENTS_ENV, "1");
        cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        let spawn_error = |source| ClientError::Spawn { program: program.to_string(), source };
        let mut child = cmd.spawn().map_err(spawn_error)?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes()).await.map_err(spawn_error)?;
        }
        let out = child.wait_with_output().await.map_err(spawn_error)?;
        if !out.status.success() {
            let words: Vec<&str> = std::iter::once(program).chain(args.iter().map(AsRef::as_ref)).collect();
            return Err(ClientError::Failed {
                command: words.join(" "),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}
