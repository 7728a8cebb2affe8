//! Slurm's side of a session, decided without running anything: job states and exit codes read from the text of
//! `squeue`, `scontrol show job` and `sacct`, what each state means for the session, and the `sbatch` requests
//! (options and batch script): a session's, built from its device, the daemon's [`SlurmConfig`] and a spec's
//! [`SlurmOverrides`], and a submission's member inference ([`infer_sbatch_request`]).
//!
//! The edge that runs the commands is `crate::slurm`; this module only reads and writes their text.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::core::outcome::Exit;
use crate::core::queue::Device;
use crate::core::rule::{Check, Rule};
use crate::core::session::SessionId;

/// Slurm text that rush could not read, or a setting Slurm would refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlurmError {
    #[error("unknown Slurm job state {0:?}")]
    UnknownState(String),
    #[error("invalid Slurm job id {0:?}: expected a positive number")]
    InvalidJobId(String),
    #[error("invalid Slurm exit code {0:?}: expected CODE:SIGNAL, e.g. 3:0")]
    InvalidExitCode(String),
    #[error("{command} output has no job {job}: {text:?}")]
    MissingJob { command: &'static str, job: JobId, text: String },
    #[error("{command} line {line:?}: {message}")]
    BadLine { command: &'static str, line: String, message: String },
    #[error("slurm setting `{field}`: {message}")]
    Invalid { field: String, message: String },
}

/// A Slurm job id, as `sbatch --parsable` prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub u64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for JobId {
    type Err = SlurmError;
    /// Reads `123`, or `123;cluster` as `sbatch --parsable` prints it on a multi-cluster set-up.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let id = s.trim().split(';').next().unwrap_or_default();
        match id.parse::<u64>() {
            Ok(n) if n > 0 => Ok(JobId(n)),
            _ => Err(SlurmError::InvalidJobId(s.trim().to_string())),
        }
    }
}

/// A job state as Slurm names it (`squeue -o %T`, `scontrol`'s `JobState=`, `sacct`'s `State`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobState {
    Pending,
    Configuring,
    Running,
    Completing,
    Suspended,
    Stopped,
    Signaling,
    StageOut,
    Resizing,
    Requeued,
    RequeueHold,
    RequeueFed,
    ResvDelHold,
    Completed,
    Failed,
    Cancelled,
    Timeout,
    NodeFail,
    Preempted,
    BootFail,
    Deadline,
    OutOfMemory,
    SpecialExit,
    Revoked,
}

impl JobState {
    pub const ALL: [JobState; 24] = [
        JobState::Pending,
        JobState::Configuring,
        JobState::Running,
        JobState::Completing,
        JobState::Suspended,
        JobState::Stopped,
        JobState::Signaling,
        JobState::StageOut,
        JobState::Resizing,
        JobState::Requeued,
        JobState::RequeueHold,
        JobState::RequeueFed,
        JobState::ResvDelHold,
        JobState::Completed,
        JobState::Failed,
        JobState::Cancelled,
        JobState::Timeout,
        JobState::NodeFail,
        JobState::Preempted,
        JobState::BootFail,
        JobState::Deadline,
        JobState::OutOfMemory,
        JobState::SpecialExit,
        JobState::Revoked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "PENDING",
            JobState::Configuring => "CONFIGURING",
            JobState::Running => "RUNNING",
            JobState::Completing => "COMPLETING",
            JobState::Suspended => "SUSPENDED",
            JobState::Stopped => "STOPPED",
            JobState::Signaling => "SIGNALING",
            JobState::StageOut => "STAGE_OUT",
            JobState::Resizing => "RESIZING",
            JobState::Requeued => "REQUEUED",
            JobState::RequeueHold => "REQUEUE_HOLD",
            JobState::RequeueFed => "REQUEUE_FED",
            JobState::ResvDelHold => "RESV_DEL_HOLD",
            JobState::Completed => "COMPLETED",
            JobState::Failed => "FAILED",
            JobState::Cancelled => "CANCELLED",
            JobState::Timeout => "TIMEOUT",
            JobState::NodeFail => "NODE_FAIL",
            JobState::Preempted => "PREEMPTED",
            JobState::BootFail => "BOOT_FAIL",
            JobState::Deadline => "DEADLINE",
            JobState::OutOfMemory => "OUT_OF_MEMORY",
            JobState::SpecialExit => "SPECIAL_EXIT",
            JobState::Revoked => "REVOKED",
        }
    }

    /// Whether the job has ended for good (Slurm will not run it again by itself).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Completed
                | JobState::Failed
                | JobState::Cancelled
                | JobState::Timeout
                | JobState::NodeFail
                | JobState::Preempted
                | JobState::BootFail
                | JobState::Deadline
                | JobState::OutOfMemory
                | JobState::SpecialExit
                | JobState::Revoked
        )
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = SlurmError;
    /// Reads the long names; `sacct` adds who cancelled (`CANCELLED by 0`) and squeue may append `+` flags.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let word = s.split_whitespace().next().unwrap_or_default().trim_end_matches('+');
        JobState::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(word))
            .ok_or_else(|| SlurmError::UnknownState(s.trim().to_string()))
    }
}

/// A batch job's exit: the script's exit code and the signal that ended it (Slurm prints `CODE:SIGNAL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitCode {
    pub code: i32,
    pub signal: i32,
}

impl FromStr for ExitCode {
    type Err = SlurmError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || SlurmError::InvalidExitCode(s.to_string());
        let (code, signal) = s.trim().split_once(':').ok_or_else(bad)?;
        Ok(ExitCode { code: code.parse().map_err(|_| bad())?, signal: signal.parse().map_err(|_| bad())? })
    }
}

impl fmt::Display for ExitCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.code, self.signal)
    }
}

/// What Slurm says about one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobStatus {
    pub state: JobState,
    /// Why it waits or why it ended (`Resources`, `Priority`, `NonZeroExitCode`, ...); `None` when Slurm says `None`.
    pub reason: Option<String>,
    /// Known once the job has ended (not from `squeue`).
    pub exit: Option<ExitCode>,
}

/// What a job's state means for its session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobVerdict {
    /// Waiting for Slurm to start it, with Slurm's reason (`Resources`, `Priority`, ...).
    Queued { reason: Option<String> },
    /// It holds its resources (including configuring, completing and suspended jobs).
    Running,
    /// The batch script exited 0.
    Completed,
    /// It failed: its exit code when Slurm knows it, and a reason for the user.
    Failed { exit: Option<ExitCode>, reason: String },
    /// `scancel` (by rush's stop or by an administrator).
    Cancelled,
    /// Ended by the cluster, not by the trainer (time limit, node failure, preemption): resumable from the last
    /// checkpoint, like a crash of the machine.
    Interrupted { reason: String },
}

impl JobStatus {
    pub fn verdict(&self) -> JobVerdict {
        let reason = self.reason.clone();
        match self.state {
            JobState::Pending
            | JobState::Requeued
            | JobState::RequeueHold
            | JobState::RequeueFed
            | JobState::ResvDelHold => JobVerdict::Queued { reason },
            JobState::Configuring
            | JobState::Running
            | JobState::Completing
            | JobState::Suspended
            | JobState::Stopped
            | JobState::Signaling
            | JobState::StageOut
            | JobState::Resizing => JobVerdict::Running,
            JobState::Completed => JobVerdict::Completed,
            JobState::Cancelled => JobVerdict::Cancelled,
            JobState::Timeout => JobVerdict::Interrupted { reason: "the Slurm job reached its time limit".into() },
            JobState::NodeFail => JobVerdict::Interrupted { reason: "the Slurm job's node failed".into() },
            JobState::Preempted => JobVerdict::Interrupted { reason: "the Slurm job was preempted".into() },
            JobState::BootFail => JobVerdict::Interrupted { reason: "the Slurm job's node failed to boot".into() },
            JobState::Failed => JobVerdict::Failed {
                exit: self.exit,
                reason: match self.exit {
                    Some(ExitCode { code, signal: 0 }) => format!("the Slurm job failed with exit code {code}"),
                    Some(ExitCode { signal, .. }) => format!("the Slurm job was killed by signal {signal}"),
                    None => "the Slurm job failed".into(),
                },
            },
            JobState::OutOfMemory => JobVerdict::Failed {
                exit: self.exit,
                reason: "the Slurm job ran out of memory (raise `memory` in the spec's or the daemon's slurm settings)"
                    .into(),
            },
            JobState::Deadline => {
                JobVerdict::Failed { exit: self.exit, reason: "the Slurm job reached its deadline".into() }
            }
            JobState::SpecialExit | JobState::Revoked => {
                JobVerdict::Failed { exit: self.exit, reason: format!("the Slurm job ended as {}", self.state) }
            }
        }
    }
}

impl JobStatus {
    /// How an ended job ended, for people: the reason of a failure or an interruption, else its state and exit code.
    pub fn ending(&self) -> String {
        match (self.verdict(), self.exit) {
            (JobVerdict::Failed { reason, .. }, _) | (JobVerdict::Interrupted { reason }, _) => reason,
            (_, Some(code)) => format!("{} (exit code {code})", self.state),
            (_, None) => self.state.to_string(),
        }
    }
}

impl JobVerdict {
    /// How an ended job reads as the end of a training child, for `core::outcome::decide`: completed is exit 0 (a
    /// success only with the trainer's `finished` event), failed its exit code or signal, cancelled a stop, and
    /// interrupted resumable. `None` while the job waits or runs.
    pub fn exit(&self) -> Option<Exit> {
        match self {
            JobVerdict::Queued { .. } | JobVerdict::Running => None,
            JobVerdict::Completed => Some(Exit::Code(0)),
            JobVerdict::Failed { exit: Some(ExitCode { code, signal: 0 }), .. } => Some(Exit::Code(*code)),
            JobVerdict::Failed { exit: Some(ExitCode { signal, .. }), .. } => Some(Exit::Signal(*signal)),
            JobVerdict::Failed { exit: None, .. } => Some(Exit::Unknown),
            JobVerdict::Cancelled => Some(Exit::Cancelled),
            JobVerdict::Interrupted { .. } => Some(Exit::Interrupted),
        }
    }
}

/// Whether a session launched again keeps the job it recorded (`true`: re-attach, it is still its run, or its end is
/// still to be read) or needs a new one (`false`: the job is unknown to Slurm, or was interrupted and this launch is
/// the resume). This is what keeps a session from being submitted twice.
pub fn keeps_recorded_job(status: Option<&JobStatus>) -> bool {
    match status {
        None => false,
        Some(status) => !matches!(status.verdict(), JobVerdict::Interrupted { .. }),
    }
}

/// The `squeue` output format [`parse_squeue`] reads.
pub const SQUEUE_FORMAT: &str = "%i|%T|%r";

/// Reads `squeue -h -t all -j ID -o '%i|%T|%r'`. `Ok(None)` when the job is not listed (unknown or purged).
pub fn parse_squeue(text: &str, job: JobId) -> Result<Option<JobStatus>, SlurmError> {
    Ok(parse_squeue_all(text)?.into_iter().find(|(id, _)| *id == job).map(|(_, status)| status))
}

/// Reads every line of `squeue -h -o '%i|%T|%r'`. Array and heterogeneous job members (`12_3`, `12+1`) are skipped:
/// rush submits neither.
pub fn parse_squeue_all(text: &str) -> Result<Vec<(JobId, JobStatus)>, SlurmError> {
    let mut jobs = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let bad = |message: &str| SlurmError::BadLine { command: "squeue", line: line.into(), message: message.into() };
        let mut fields = line.splitn(3, '|');
        let (Some(id), Some(state), Some(reason)) = (fields.next(), fields.next(), fields.next()) else {
            return Err(bad("expected JOBID|STATE|REASON"));
        };
        if id.contains(['_', '+']) {
            continue;
        }
        let id = id.parse().map_err(|e: SlurmError| bad(&e.to_string()))?;
        let state = state.parse().map_err(|e: SlurmError| bad(&e.to_string()))?;
        jobs.push((id, JobStatus { state, reason: reason_of(reason), exit: None }));
    }
    Ok(jobs)
}

/// Reads `scontrol show job ID` (one or many lines of `Key=Value` words): the state, reason and exit code.
pub fn parse_scontrol_job(text: &str, job: JobId) -> Result<JobStatus, SlurmError> {
    let missing = || SlurmError::MissingJob { command: "scontrol", job, text: text.chars().take(200).collect() };
    let value = |key: &str| {
        text.split_whitespace().find_map(|word| word.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
    };
    if value("JobId") != Some(job.to_string().as_str()) {
        return Err(missing());
    }
    let state = value("JobState").ok_or_else(missing)?.parse()?;
    let exit = value("ExitCode").map(str::parse).transpose()?;
    Ok(JobStatus { state, reason: value("Reason").and_then(reason_of), exit })
}

/// Reads `sacct [-c] -j ID -n -P -o jobid,state,exitcode`: the line of the job itself (not of its steps, `ID.batch`);
/// the last one when the job was requeued. `Ok(None)` when the job is not listed.
pub fn parse_sacct(text: &str, job: JobId) -> Result<Option<JobStatus>, SlurmError> {
    let mut found = None;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let bad = |message: &str| SlurmError::BadLine { command: "sacct", line: line.into(), message: message.into() };
        let fields: Vec<&str> = line.split('|').collect();
        let [id, state, exit] = fields[..] else {
            return Err(bad("expected JOBID|STATE|EXITCODE"));
        };
        if id.trim() != job.to_string() {
            continue;
        }
        let state = state.parse().map_err(|e: SlurmError| bad(&e.to_string()))?;
        let exit = exit.parse().map_err(|e: SlurmError| bad(&e.to_string()))?;
        found = Some(JobStatus { state, reason: None, exit: Some(exit) });
    }
    Ok(found)
}

fn reason_of(text: &str) -> Option<String> {
    let text = text.trim();
    (!text.is_empty() && text != "None" && text != "(null)").then(|| text.to_string())
}

/// The daemon config's `slurm:` section: how sessions become batch jobs. Every field may be overridden per spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SlurmConfig {
    /// `--partition` (default: the cluster's default partition).
    pub partition: Option<String>,
    /// `--account`.
    pub account: Option<String>,
    /// `--time`: minutes, `MM:SS`, `HH:MM:SS`, `D-HH`, `D-HH:MM` or `D-HH:MM:SS` (default: the partition's).
    pub time_limit: Option<String>,
    /// `--cpus-per-task`: CPUs for the trainer and its data loaders.
    pub cpus_per_task: u32,
    /// `--mem`: memory per node, e.g. `16G` (default: the cluster's `DefMemPerCPU`).
    pub memory: Option<String>,
    /// How many GPU sessions may be submitted at once (running or waiting in Slurm); 0 = the cluster has no GPUs
    /// (then `resources.gpus: auto` means the CPU, and `1` is refused).
    pub gpu_jobs: u32,
    /// How many CPU sessions may be submitted at once.
    pub cpu_jobs: u32,
    /// `rush train --device` for every job, e.g. `cpu` on a test cluster whose GPUs are fake (default: the GPU Slurm
    /// gives the job, else the CPU).
    pub trainer_device: Option<String>,
    /// More `sbatch` options, each one word as on the command line (`--qos=high`, `--constraint=a100`).
    pub extra_args: Vec<String>,
    /// The rush binary as the compute nodes see it (default: the daemon's own binary, which must then be on a
    /// shared file system at the same path).
    pub rush_exe: Option<PathBuf>,
    /// How often the daemon asks Slurm about its jobs and reads their events, in milliseconds.
    pub poll_ms: u64,
}

impl Default for SlurmConfig {
    fn default() -> Self {
        Self {
            partition: None,
            account: None,
            time_limit: None,
            cpus_per_task: 2,
            memory: None,
            gpu_jobs: 4,
            cpu_jobs: 4,
            trainer_device: None,
            extra_args: vec![],
            rush_exe: None,
            poll_ms: 500,
        }
    }
}

/// A spec's `slurm:` overrides of the daemon's [`SlurmConfig`] (absent fields keep the daemon's value).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SlurmOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_limit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpus_per_task: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// Added after the daemon's `extra_args`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extra_args: Vec<String>,
}

impl SlurmConfig {
    /// Checks the values Slurm would otherwise refuse at submission, naming the field.
    pub fn validate(&self) -> Result<(), SlurmError> {
        let overrides = SlurmOverrides {
            partition: self.partition.clone(),
            account: self.account.clone(),
            time_limit: self.time_limit.clone(),
            cpus_per_task: Some(self.cpus_per_task),
            memory: self.memory.clone(),
            extra_args: self.extra_args.clone(),
        };
        overrides.validate("slurm")?;
        if self.poll_ms == 0 || self.poll_ms > 60_000 {
            return Err(invalid("slurm.poll_ms", format!("{} must be in 1..=60000", self.poll_ms)));
        }
        if self.gpu_jobs == 0 && self.cpu_jobs == 0 {
            return Err(invalid("slurm.cpu_jobs", "0 CPU and 0 GPU jobs: nothing could ever run".into()));
        }
        if self.gpu_jobs > 1024 || self.cpu_jobs > 1024 {
            return Err(invalid("slurm.gpu_jobs", "more than 1024 jobs at once".into()));
        }
        if let Some(d) = &self.trainer_device {
            let ok = d == "cpu" || d == "cuda" || d.strip_prefix("cuda:").is_some_and(|i| i.parse::<u32>().is_ok());
            if !ok {
                return Err(invalid("slurm.trainer_device", format!("{d:?}: expected cpu, cuda or cuda:N")));
            }
        }
        Ok(())
    }
}

impl SlurmOverrides {
    /// Checks the values against [`OVERRIDE_RULES`]; `prefix` names the section in errors (`slurm` in the daemon
    /// config and in a spec).
    pub fn validate(&self, prefix: &str) -> Result<(), SlurmError> {
        for rule in OVERRIDE_RULES {
            rule.check(self).map_err(|message| invalid(&format!("{prefix}.{}", rule.path), message))?;
        }
        Ok(())
    }
}

/// A partition or account name: letters, digits, `-`, `_`, `.`.
const SLURM_NAME_PATTERN: &str = r"^[A-Za-z0-9._-]+$";

fn slurm_name(v: &str) -> Result<(), String> {
    let ok = !v.is_empty() && v.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok { Ok(()) } else { Err("not a Slurm name".into()) }
}

/// What [`time_limit_minutes`] reads: `UNLIMITED` or `INFINITE` in any case, else minutes, `MM:SS`, `HH:MM:SS`,
/// `D-HH`, `D-HH:MM` or `D-HH:MM:SS` (numbers as Rust reads them, so a leading `+` is allowed), not all zero.
const TIME_LIMIT_PATTERN: &str = concat!(
    r"^(?:[Uu][Nn][Ll][Ii][Mm][Ii][Tt][Ee][Dd]|[Ii][Nn][Ff][Ii][Nn][Ii][Tt][Ee]",
    r"|(?=[^1-9]*[1-9])(?:\+?[0-9]+-)?\+?[0-9]+(?::\+?[0-9]+){0,2})$"
);

/// A memory size: digits and at most one unit letter (`16G`, `512M`, `2048`).
const MEMORY_PATTERN: &str = r"^[0-9]+[KMGT]?$";

fn memory_size(m: &str) -> Result<(), String> {
    let digits = m.trim_end_matches(['K', 'M', 'G', 'T']);
    let ok = !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit()) && m.len() - digits.len() <= 1;
    if ok { Ok(()) } else { Err("not a size".into()) }
}

/// The rules of a `slurm:` section, in the order they are checked; a spec's JSON Schema carries them under `slurm`.
pub const OVERRIDE_RULES: &[Rule<SlurmOverrides>] = &[
    Rule {
        path: "partition",
        check: Check::Text {
            get: |o| o.partition.as_deref(),
            valid: slurm_name,
            pattern: SLURM_NAME_PATTERN,
            max_chars: None,
            beyond: None,
        },
        message: "{value} is not a Slurm name",
    },
    Rule {
        path: "account",
        check: Check::Text {
            get: |o| o.account.as_deref(),
            valid: slurm_name,
            pattern: SLURM_NAME_PATTERN,
            max_chars: None,
            beyond: None,
        },
        message: "{value} is not a Slurm name",
    },
    Rule {
        path: "time_limit",
        check: Check::Text {
            get: |o| o.time_limit.as_deref(),
            valid: |t| time_limit_minutes(t).map(drop),
            pattern: TIME_LIMIT_PATTERN,
            max_chars: None,
            beyond: Some("each number fits in 64 bits"),
        },
        message: "{problem}",
    },
    Rule {
        path: "cpus_per_task",
        check: Check::Count { get: |o| o.cpus_per_task.map(u64::from), min: 1, max: 1024 },
        message: "{value} is out of range {range}",
    },
    Rule {
        path: "memory",
        check: Check::Text {
            get: |o| o.memory.as_deref(),
            valid: memory_size,
            pattern: MEMORY_PATTERN,
            max_chars: None,
            beyond: None,
        },
        message: "{value} is not a size like 16G, 512M or 2048",
    },
    Rule {
        path: "extra_args",
        check: Check::EachText {
            get: |o| o.extra_args.as_slice(),
            valid: |a| if a.starts_with('-') && !a.contains('\n') { Ok(()) } else { Err("not an option".into()) },
            pattern: "^-",
        },
        message: "{value} is not an sbatch option (like --qos=high)",
    },
];

fn invalid(field: &str, message: String) -> SlurmError {
    SlurmError::Invalid { field: field.to_string(), message }
}

/// A Slurm time limit in minutes, rounded up (`None` for `UNLIMITED`/`INFINITE`). The message says what was wrong.
pub fn time_limit_minutes(text: &str) -> Result<Option<u64>, String> {
    let bad = || format!("{text:?} is not a time limit (minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS)");
    if text.eq_ignore_ascii_case("unlimited") || text.eq_ignore_ascii_case("infinite") {
        return Ok(None);
    }
    let num = |s: &str| if s.is_empty() { Err(bad()) } else { s.parse::<u64>().map_err(|_| bad()) };
    let (days, rest) = match text.split_once('-') {
        Some((d, rest)) => (Some(num(d)?), rest),
        None => (None, text),
    };
    let parts = rest.split(':').map(num).collect::<Result<Vec<u64>, String>>()?;
    let seconds = match (days, &parts[..]) {
        (None, &[m]) => m * 60,
        (None, &[m, s]) => m * 60 + s,
        (None, &[h, m, s]) => h * 3600 + m * 60 + s,
        (Some(d), &[h]) => d * 86400 + h * 3600,
        (Some(d), &[h, m]) => d * 86400 + h * 3600 + m * 60,
        (Some(d), &[h, m, s]) => d * 86400 + h * 3600 + m * 60 + s,
        _ => return Err(bad()),
    };
    if seconds == 0 {
        return Err(format!("{text:?} is zero: a job needs at least a minute"));
    }
    Ok(Some(seconds.div_ceil(60)))
}

/// What goes to `sbatch`: its options (the batch script comes on stdin) and the script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SbatchRequest {
    pub args: Vec<String>,
    pub script: String,
}

/// The files of a session's batch job, inside its session folder.
pub fn job_output_pattern(session_dir: &Path) -> PathBuf {
    session_dir.join("slurm-%j.out")
}

/// One session's batch job, before the daemon's settings apply.
#[derive(Debug, Clone, Copy)]
pub struct BatchJob<'a> {
    pub session: &'a SessionId,
    /// Counts the session's submissions from 1 (a resume after a time limit is the next attempt).
    pub attempt: u32,
    /// Tells this daemon's jobs from another's with the same session ids on the same cluster (see [`job_name`]).
    pub home_tag: &'a str,
    /// The session folder, on a file system the compute nodes share.
    pub session_dir: &'a Path,
    /// Where the trainer's stderr goes.
    pub log: &'a Path,
    pub device: Device,
    /// The rush binary as the compute nodes see it.
    pub rush_exe: &'a Path,
}

/// The Slurm job name of a session's attempt: `rush:<session id>#<attempt>@<home tag>`, what `squeue` shows and how a
/// restarted daemon finds a job it submitted but had not recorded yet.
pub fn job_name(session: &SessionId, attempt: u32, home_tag: &str) -> String {
    format!("rush:{session}#{attempt}@{home_tag}")
}

/// The trainer's stderr in a Slurm job (the daemon follows it into `train.log`, as it pipes a local child's).
pub fn job_log(session_dir: &Path) -> PathBuf {
    session_dir.join("slurm-train.log")
}

/// A short tag for a home folder (the first 8 hex digits of the sha256 of its path).
pub fn home_tag(home: &Path) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(home.as_os_str().as_encoded_bytes())[..4])
}

/// Builds the `sbatch` request for one session: a batch job that runs `<rush exe> train <session dir>` with the
/// trainer's stderr appended to the job's log. Options come from the daemon's config, then the spec's overrides;
/// rush asks Slurm never to requeue the job by itself (rush resumes interrupted sessions with a new job, so one
/// authority decides).
pub fn sbatch_request(job: &BatchJob<'_>, config: &SlurmConfig, overrides: Option<&SlurmOverrides>) -> SbatchRequest {
    let empty = SlurmOverrides::default();
    let name = job_name(job.session, job.attempt, job.home_tag);
    let args = job_args(&name, job.session_dir, job.session_dir, job.device, config, overrides.unwrap_or(&empty));
    let dir = job.session_dir.display().to_string();
    let mut words = vec![job.rush_exe.display().to_string(), "train".into(), dir];
    words.extend(device_args(job.device, config));
    let script = batch_script(&format!("session {}", job.session), "one training run", job.log, &words);
    SbatchRequest { args, script }
}

/// One member inference of a submission as a batch job: `rush infer` of one checkpoint.
#[derive(Debug, Clone, Copy)]
pub struct InferJob<'a> {
    pub submission: i64,
    pub session: &'a SessionId,
    pub epoch: u32,
    /// As in [`BatchJob::home_tag`].
    pub home_tag: &'a str,
    /// The submission folder, on a file system the compute nodes share: the job's output file goes there.
    pub submission_dir: &'a Path,
    /// The member's output folder (`rush infer --out`), the job's working folder.
    pub out: &'a Path,
    /// Where the child's stderr goes (the submission's `infer.log`).
    pub log: &'a Path,
    pub device: Device,
    /// The rush binary as the compute nodes see it.
    pub rush_exe: &'a Path,
    /// `rush infer`'s arguments from `infer` on, without `--device` (the device decides that here).
    pub args: &'a [String],
}

/// The Slurm job name of a submission's member inference: `rush:submission/<id>/<session>:<epoch>@<home tag>`, what
/// `squeue` shows and how a restarted daemon finds a job a killed one left behind.
pub fn infer_job_name(submission: i64, session: &SessionId, epoch: u32, home_tag: &str) -> String {
    format!("rush:submission/{submission}/{session}:{epoch}@{home_tag}")
}

/// Builds the `sbatch` request for one member inference: the same resources, options and device choice as a session
/// on that device, `overrides` being the member session's own (`slurm:` in its spec: the partition, memory, ... its
/// model needed to train), output into the submission folder, the child's stderr appended to its log.
pub fn infer_sbatch_request(
    job: &InferJob<'_>,
    config: &SlurmConfig,
    overrides: Option<&SlurmOverrides>,
) -> SbatchRequest {
    let name = infer_job_name(job.submission, job.session, job.epoch, job.home_tag);
    let empty = SlurmOverrides::default();
    let args = job_args(&name, job.out, job.submission_dir, job.device, config, overrides.unwrap_or(&empty));
    let mut words = vec![job.rush_exe.display().to_string()];
    words.extend(job.args.iter().cloned());
    words.extend(device_args(job.device, config));
    let what = format!("submission {}, {}:{}", job.submission, job.session, job.epoch);
    let script = batch_script(&what, "inference of one checkpoint", job.log, &words);
    SbatchRequest { args, script }
}

/// The `sbatch` options of every rush job: its name, working folder, output file (`slurm-%j.out` in `output_dir`),
/// no requeue, one task, then the resources from the daemon's config with `o` over it, and the extra options last.
fn job_args(
    name: &str,
    chdir: &Path,
    output_dir: &Path,
    device: Device,
    config: &SlurmConfig,
    o: &SlurmOverrides,
) -> Vec<String> {
    let mut args = vec![
        "--parsable".to_string(),
        format!("--job-name={name}"),
        format!("--chdir={}", chdir.display()),
        format!("--output={}", job_output_pattern(output_dir).display()),
        "--no-requeue".to_string(),
        "--nodes=1".to_string(),
        "--ntasks=1".to_string(),
        format!("--cpus-per-task={}", o.cpus_per_task.unwrap_or(config.cpus_per_task)),
    ];
    if device == Device::Gpu {
        args.push("--gres=gpu:1".into());
    }
    let pairs = [
        ("--mem", o.memory.as_ref().or(config.memory.as_ref())),
        ("--partition", o.partition.as_ref().or(config.partition.as_ref())),
        ("--account", o.account.as_ref().or(config.account.as_ref())),
        ("--time", o.time_limit.as_ref().or(config.time_limit.as_ref())),
    ];
    args.extend(pairs.into_iter().filter_map(|(flag, value)| value.map(|v| format!("{flag}={v}"))));
    args.extend(config.extra_args.iter().chain(&o.extra_args).cloned());
    args
}

/// The child's `--device` in a job: the CPU for a CPU job; on a GPU job the configured `trainer_device`, else none
/// (the child takes the GPU Slurm gave it).
fn device_args(device: Device, config: &SlurmConfig) -> Vec<String> {
    match (device, &config.trainer_device) {
        (Device::Cpu, _) => vec!["--device".into(), "cpu".into()],
        (Device::Gpu, Some(d)) => vec!["--device".into(), d.clone()],
        (Device::Gpu, None) => vec![],
    }
}

/// A batch script that notes the job, its node and its `CUDA_VISIBLE_DEVICES` in `log`, then runs `words` (each
/// quoted) with stdout discarded and stderr appended to `log`. `who` and `what` go into comments and the note.
fn batch_script(who: &str, what: &str, log: &Path, words: &[String]) -> String {
    let command: Vec<String> = words.iter().map(|w| shell_quote(w)).collect();
    format!(
        "#!/bin/sh\n\
         # rush {who}: {what} as a Slurm batch job (written by the rush daemon).\n\
         echo \"rush: {who}, Slurm job $SLURM_JOB_ID on $(hostname), \
         CUDA_VISIBLE_DEVICES=${{CUDA_VISIBLE_DEVICES:-}}\" >>{log}\n\
         exec {command} >/dev/null 2>>{log}\n",
        log = shell_quote(&log.display().to_string()),
        command = command.join(" "),
    )
}

/// Quotes a word for `sh` (single quotes, with `'` written as `'\''`).
pub fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> JobId {
        JobId(n)
    }

    #[test]
    fn job_ids_and_states_parse_as_slurm_prints_them() {
        assert_eq!("42\n".parse::<JobId>(), Ok(JobId(42)));
        assert_eq!("42;rush".parse::<JobId>(), Ok(JobId(42)));
        for bad in ["", "0", "x", "-3", "Submitted batch job 4"] {
            assert!(bad.parse::<JobId>().is_err(), "{bad}");
        }
        for st in JobState::ALL {
            assert_eq!(st.as_str().parse::<JobState>(), Ok(st));
        }
        assert_eq!("CANCELLED by 0".parse::<JobState>(), Ok(JobState::Cancelled));
        assert_eq!("COMPLETING+".parse::<JobState>(), Ok(JobState::Completing));
        assert_eq!("WEIRD".parse::<JobState>(), Err(SlurmError::UnknownState("WEIRD".into())));
        assert_eq!("3:0".parse::<ExitCode>(), Ok(ExitCode { code: 3, signal: 0 }));
        assert_eq!("0:15".parse::<ExitCode>(), Ok(ExitCode { code: 0, signal: 15 }));
        assert!("3".parse::<ExitCode>().is_err() && "a:b".parse::<ExitCode>().is_err());
    }

    #[test]
    fn squeue_lines_give_state_and_reason_of_the_right_job() {
        let text = "12|PENDING|Resources\n4|RUNNING|None\n";
        let st = parse_squeue(text, id(12)).unwrap().unwrap();
        assert_eq!((st.state, st.reason.as_deref()), (JobState::Pending, Some("Resources")));
        assert_eq!(st.verdict(), JobVerdict::Queued { reason: Some("Resources".into()) });
        let st = parse_squeue(text, id(4)).unwrap().unwrap();
        assert_eq!((st.state, st.reason), (JobState::Running, None));
        assert_eq!(parse_squeue(text, id(1)), Ok(None), "job 1 is not job 12's prefix");
        assert_eq!(parse_squeue("", id(1)), Ok(None));
        assert!(matches!(parse_squeue("7 RUNNING", id(7)), Err(SlurmError::BadLine { .. })));
        assert!(matches!(parse_squeue("7|NAPPING|None", id(7)), Err(SlurmError::BadLine { .. })));
        let all = parse_squeue_all("12_1|RUNNING|None\n12|PENDING|Priority\n").unwrap();
        assert_eq!(all.len(), 1, "array members are not rush's jobs");
        assert_eq!(all[0].0, id(12));
    }

    #[test]
    fn scontrol_gives_the_exit_code() {
        let text = "JobId=3 JobName=rush:local/emoji/1\n   UserId=root(0) GroupId=root(0)\n   \
                    JobState=FAILED Reason=NonZeroExitCode Dependency=(null)\n   \
                    Requeue=0 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=3:0\n";
        let st = parse_scontrol_job(text, id(3)).unwrap();
        assert_eq!(st.state, JobState::Failed);
        assert_eq!(st.exit, Some(ExitCode { code: 3, signal: 0 }));
        assert_eq!(st.reason.as_deref(), Some("NonZeroExitCode"));
        let JobVerdict::Failed { exit, reason } = st.verdict() else { panic!("{st:?}") };
        assert_eq!(exit, Some(ExitCode { code: 3, signal: 0 }));
        assert!(reason.contains("exit code 3"), "{reason}");
        assert!(matches!(parse_scontrol_job(text, id(30)), Err(SlurmError::MissingJob { .. })));
        let no_state = "JobId=3 JobName=x";
        assert!(matches!(parse_scontrol_job(no_state, id(3)), Err(SlurmError::MissingJob { .. })));
    }

    #[test]
    fn sacct_reads_the_job_line_not_its_steps() {
        let text = "5|CANCELLED by 0|0:15\n5.batch|CANCELLED|0:15\n6|TIMEOUT|0:0\n";
        let st = parse_sacct(text, id(5)).unwrap().unwrap();
        assert_eq!((st.state, st.exit), (JobState::Cancelled, Some(ExitCode { code: 0, signal: 15 })));
        assert_eq!(parse_sacct(text, id(6)).unwrap().unwrap().state, JobState::Timeout);
        let requeued = "7|NODE_FAIL|0:0\n7|COMPLETED|0:0\n";
        assert_eq!(parse_sacct(requeued, id(7)).unwrap().unwrap().state, JobState::Completed);
        assert_eq!(parse_sacct(text, id(8)), Ok(None));
        assert!(matches!(parse_sacct("5|FAILED", id(5)), Err(SlurmError::BadLine { .. })));
        assert!(matches!(parse_sacct("5|FAILED|x", id(5)), Err(SlurmError::BadLine { .. })));
    }

    #[test]
    fn verdicts_map_to_session_states_through_the_outcome() {
        use crate::core::outcome::{Observed, decide};
        use crate::core::session::SessionState as S;
        let status = |state| JobStatus { state, reason: None, exit: None };
        let v = |state| status(state).verdict();
        // What a session becomes when its job ends so, with and without the trainer's `finished` event and resume.
        let ends = |verdict: JobVerdict, finished: bool, resume: bool| {
            let seen = Observed { finished, ..Default::default() };
            decide(verdict.exit().expect("an ended job"), &seen, resume).state
        };
        assert_eq!(v(JobState::Pending), JobVerdict::Queued { reason: None });
        assert_eq!(v(JobState::Pending).exit(), None);
        for st in [JobState::Running, JobState::Configuring, JobState::Completing, JobState::Suspended] {
            assert_eq!(v(st), JobVerdict::Running, "{st}");
            assert_eq!(v(st).exit(), None);
            assert!(!st.is_final());
        }
        assert_eq!(ends(v(JobState::Completed), true, true), S::Succeeded);
        assert_eq!(ends(v(JobState::Completed), false, true), S::Failed, "no `finished` event");
        let failed = JobStatus { state: JobState::Failed, reason: None, exit: Some(ExitCode { code: 3, signal: 0 }) };
        assert_eq!(failed.verdict().exit(), Some(Exit::Code(3)));
        assert_eq!(ends(failed.verdict(), false, true), S::Failed);
        assert_eq!(ends(v(JobState::OutOfMemory), false, true), S::Failed);
        assert_eq!(ends(v(JobState::Cancelled), false, true), S::Stopped);
        for st in [JobState::Timeout, JobState::NodeFail, JobState::Preempted, JobState::BootFail] {
            assert!(matches!(v(st), JobVerdict::Interrupted { .. }), "{st}");
            assert_eq!(ends(v(st), false, true), S::Queued, "{st} resumes");
            assert_eq!(ends(v(st), false, false), S::Interrupted, "{st} without resume");
            assert!(st.is_final());
        }
        let JobVerdict::Interrupted { reason } = v(JobState::Timeout) else { unreachable!() };
        assert!(reason.contains("time limit"), "{reason}");
        assert_eq!(failed.ending(), "the Slurm job failed with exit code 3");
        assert_eq!(v(JobState::Timeout), status(JobState::Timeout).verdict());
        assert_eq!(status(JobState::Timeout).ending(), "the Slurm job reached its time limit");
        let done = JobStatus { state: JobState::Completed, reason: None, exit: Some(ExitCode { code: 0, signal: 0 }) };
        assert_eq!(done.ending(), "COMPLETED (exit code 0:0)");
        assert_eq!(status(JobState::Cancelled).ending(), "CANCELLED");
        let killed = JobStatus { state: JobState::Failed, reason: None, exit: Some(ExitCode { code: 0, signal: 9 }) };
        assert_eq!(killed.verdict().exit(), Some(Exit::Signal(9)));
        let JobVerdict::Failed { reason, .. } = killed.verdict() else { unreachable!() };
        assert!(reason.contains("signal 9"), "{reason}");
    }

    #[test]
    fn a_recorded_job_is_kept_unless_gone_or_interrupted() {
        let status = |state| JobStatus { state, reason: None, exit: None };
        for st in [JobState::Pending, JobState::Running, JobState::Completed, JobState::Failed, JobState::Cancelled] {
            assert!(keeps_recorded_job(Some(&status(st))), "{st}: re-attach, never submit again");
        }
        assert!(!keeps_recorded_job(Some(&status(JobState::Timeout))), "a timed-out job is resumed by a new one");
        assert!(!keeps_recorded_job(Some(&status(JobState::NodeFail))));
        assert!(!keeps_recorded_job(None), "Slurm forgot it");
    }

    #[test]
    fn time_limits_read_like_slurm() {
        assert_eq!(time_limit_minutes("1"), Ok(Some(1)));
        assert_eq!(time_limit_minutes("90:30"), Ok(Some(91)));
        assert_eq!(time_limit_minutes("2:00:00"), Ok(Some(120)));
        assert_eq!(time_limit_minutes("1-2"), Ok(Some(24 * 60 + 120)));
        assert_eq!(time_limit_minutes("1-0:30"), Ok(Some(24 * 60 + 30)));
        assert_eq!(time_limit_minutes("0-0:0:1"), Ok(Some(1)));
        assert_eq!(time_limit_minutes("UNLIMITED"), Ok(None));
        for bad in ["", "0", "1h", "1:2:3:4", "-1", "1-", "a-1", "1-2:3:4:5"] {
            assert!(time_limit_minutes(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn settings_are_validated_with_their_field() {
        assert_eq!(SlurmConfig::default().validate(), Ok(()));
        let err = |c: SlurmConfig| c.validate().unwrap_err().to_string();
        let e = err(SlurmConfig { time_limit: Some("1h".into()), ..Default::default() });
        assert!(e.contains("slurm.time_limit") && e.contains("\"1h\""), "{e}");
        let e = err(SlurmConfig { memory: Some("16GB".into()), ..Default::default() });
        assert!(e.contains("slurm.memory"), "{e}");
        let e = err(SlurmConfig { partition: Some("gpu; rm -rf /".into()), ..Default::default() });
        assert!(e.contains("slurm.partition"), "{e}");
        let e = err(SlurmConfig { cpus_per_task: 0, ..Default::default() });
        assert!(e.contains("slurm.cpus_per_task"), "{e}");
        let e = err(SlurmConfig { extra_args: vec!["qos=high".into()], ..Default::default() });
        assert!(e.contains("slurm.extra_args"), "{e}");
        assert!(err(SlurmConfig { poll_ms: 0, ..Default::default() }).contains("slurm.poll_ms"));
        assert!(err(SlurmConfig { gpu_jobs: 0, cpu_jobs: 0, ..Default::default() }).contains("slurm.cpu_jobs"));
        let e = err(SlurmConfig { trainer_device: Some("gpu".into()), ..Default::default() });
        assert!(e.contains("slurm.trainer_device"), "{e}");
        let ok = SlurmConfig { trainer_device: Some("cuda:1".into()), ..Default::default() };
        assert_eq!(ok.validate(), Ok(()));
        let ok = SlurmOverrides { memory: Some("512M".into()), time_limit: Some("1".into()), ..Default::default() };
        assert_eq!(ok.validate("slurm"), Ok(()));
        let yaml = "partition: gpu\ntime_limit: \"2:00:00\"\nextra_args: [--qos=high]\n";
        let c: SlurmConfig = serde_saphyr::from_str(yaml).unwrap();
        assert_eq!((c.partition.as_deref(), c.cpus_per_task), (Some("gpu"), 2));
        assert!(serde_saphyr::from_str::<SlurmConfig>("partion: gpu\n").is_err(), "unknown fields are errors");
    }

    /// A daemon's settings for a GPU cluster.
    fn cluster_config() -> SlurmConfig {
        SlurmConfig {
            partition: Some("gpu".into()),
            account: Some("vision".into()),
            time_limit: Some("4:00:00".into()),
            memory: Some("16G".into()),
            extra_args: vec!["--qos=normal".into()],
            ..Default::default()
        }
    }

    #[test]
    fn sbatch_request_maps_resources_and_overrides() {
        let session: SessionId = "ann/emoji/3".parse().unwrap();
        let dir = Path::new("/shared/rush/sessions/ann/emoji/3");
        let log = dir.join("slurm-train.log");
        let exe = Path::new("/shared/bin/rush");
        let config = cluster_config();
        let job = BatchJob {
            session: &session,
            attempt: 2,
            home_tag: "0a1b2c3d",
            session_dir: dir,
            log: &log,
            device: Device::Gpu,
            rush_exe: exe,
        };
        let r = sbatch_request(&job, &config, None);
        for want in [
            "--parsable",
            "--job-name=rush:ann/emoji/3#2@0a1b2c3d",
            "--chdir=/shared/rush/sessions/ann/emoji/3",
            "--output=/shared/rush/sessions/ann/emoji/3/slurm-%j.out",
            "--no-requeue",
            "--gres=gpu:1",
            "--cpus-per-task=2",
            "--mem=16G",
            "--partition=gpu",
            "--account=vision",
            "--time=4:00:00",
            "--qos=normal",
        ] {
            assert!(r.args.iter().any(|a| a == want), "{want} missing from {:?}", r.args);
        }
        assert!(r.script.starts_with("#!/bin/sh\n"), "{}", r.script);
        assert!(
            r.script.contains("exec '/shared/bin/rush' 'train' '/shared/rush/sessions/ann/emoji/3' >/dev/null"),
            "{}",
            r.script
        );
        assert!(!r.script.contains("--device cpu"));

        let overrides = SlurmOverrides {
            partition: Some("cpu".into()),
            time_limit: Some("1".into()),
            cpus_per_task: Some(1),
            extra_args: vec!["--constraint=big".into()],
            ..Default::default()
        };
        let cpu = BatchJob { device: Device::Cpu, ..job };
        let r = sbatch_request(&cpu, &config, Some(&overrides));
        assert!(!r.args.iter().any(|a| a.starts_with("--gres")), "{:?}", r.args);
        for want in ["--partition=cpu", "--time=1", "--cpus-per-task=1", "--mem=16G", "--account=vision"] {
            assert!(r.args.iter().any(|a| a == want), "{want} missing from {:?}", r.args);
        }
        let extra: Vec<&String> = r.args.iter().filter(|a| a.starts_with("--qos") || a.starts_with("--con")).collect();
        assert_eq!(extra, ["--qos=normal", "--constraint=big"], "the spec's options come last");
        assert!(r.script.contains(" '--device' 'cpu' >/dev/null"), "{}", r.script);
        let bare = sbatch_request(&cpu, &SlurmConfig::default(), None);
        assert!(!bare.args.iter().any(|a| a.starts_with("--partition") || a.starts_with("--time")));
        let fake_gpus = SlurmConfig { trainer_device: Some("cpu".into()), ..Default::default() };
        let r = sbatch_request(&job, &fake_gpus, None);
        assert!(r.args.iter().any(|a| a == "--gres=gpu:1"), "the GPU is still asked for: {:?}", r.args);
        assert!(r.script.contains(" '--device' 'cpu' >/dev/null"), "{}", r.script);
    }

    #[test]
    fn infer_request_runs_rush_infer_like_a_session_on_its_device() {
        let session: SessionId = "ann/emoji/3".parse().unwrap();
        let sub = Path::new("/shared/rush/submissions/7");
        let (out, log) = (sub.join("infer-0"), sub.join("infer.log"));
        let args: Vec<String> =
            ["infer", "/shared/rush/sessions/ann/emoji/3", "--epoch", "5", "--out", "/o", "--tta", "flip"]
                .map(String::from)
                .to_vec();
        let config = cluster_config();
        let job = InferJob {
            submission: 7,
            session: &session,
            epoch: 5,
            home_tag: "0a1b2c3d",
            submission_dir: sub,
            out: &out,
            log: &log,
            device: Device::Gpu,
            rush_exe: Path::new("/shared/bin/rush"),
            args: &args,
        };
        let r = infer_sbatch_request(&job, &config, None);
        assert_eq!(infer_job_name(7, &session, 5, "0a1b2c3d"), "rush:submission/7/ann/emoji/3:5@0a1b2c3d");
        for want in [
            "--job-name=rush:submission/7/ann/emoji/3:5@0a1b2c3d",
            "--chdir=/shared/rush/submissions/7/infer-0",
            "--output=/shared/rush/submissions/7/slurm-%j.out",
            "--no-requeue",
            "--gres=gpu:1",
        ] {
            assert!(r.args.iter().any(|a| a == want), "{want} missing from {:?}", r.args);
        }
        // Apart from its name and folders, the job asks for what a session on a GPU asks for, in the same order.
        let dir = Path::new("/shared/rush/sessions/ann/emoji/3");
        let training = BatchJob {
            session: &session,
            attempt: 1,
            home_tag: "0a1b2c3d",
            session_dir: dir,
            log: &dir.join("slurm-train.log"),
            device: Device::Gpu,
            rush_exe: Path::new("/shared/bin/rush"),
        };
        let own = |a: &&String| ["--job-name=", "--chdir=", "--output="].iter().any(|p| a.starts_with(p));
        let rest = |args: &[String]| args.iter().filter(|a| !own(a)).cloned().collect::<Vec<_>>();
        assert_eq!(rest(&r.args), rest(&sbatch_request(&training, &config, None).args));
        assert_eq!(rest(&r.args).len(), 11, "{:?}", r.args);
        let log_q = "'/shared/rush/submissions/7/infer.log'";
        let exec = format!(
            "exec '/shared/bin/rush' 'infer' '/shared/rush/sessions/ann/emoji/3' '--epoch' '5' '--out' '/o' '--tta' \
             'flip' >/dev/null 2>>{log_q}\n"
        );
        assert!(r.script.starts_with("#!/bin/sh\n") && r.script.ends_with(&exec), "{}", r.script);
        assert!(r.script.contains("Slurm job $SLURM_JOB_ID on $(hostname)"), "{}", r.script);
        assert!(r.script.contains(&format!(">>{log_q}\n")), "the job's own line goes to the log too: {}", r.script);

        // The member session's own `slurm:` settings apply, as they did to its training job.
        let own = SlurmOverrides { memory: Some("64G".into()), partition: Some("big".into()), ..Default::default() };
        let r = infer_sbatch_request(&job, &config, Some(&own));
        assert_eq!(rest(&r.args), rest(&sbatch_request(&training, &config, Some(&own)).args));
        assert!(
            r.args.iter().any(|a| a == "--mem=64G") && r.args.iter().any(|a| a == "--partition=big"),
            "{:?}",
            r.args
        );

        // A CPU job: no GPU asked, the CPU named; fake GPUs: the GPU asked, the configured device named.
        let r = infer_sbatch_request(&InferJob { device: Device::Cpu, ..job }, &config, None);
        assert!(!r.args.iter().any(|a| a.starts_with("--gres")), "{:?}", r.args);
        assert!(r.script.contains("'flip' '--device' 'cpu' >/dev/null"), "{}", r.script);
        let fake_gpus = SlurmConfig { trainer_device: Some("cpu".into()), ..Default::default() };
        let r = infer_sbatch_request(&job, &fake_gpus, None);
        assert!(r.args.iter().any(|a| a == "--gres=gpu:1"), "{:?}", r.args);
        assert!(r.script.contains("'flip' '--device' 'cpu' >/dev/null"), "{}", r.script);
        assert!(!r.args.iter().any(|a| a.starts_with("--partition") || a.starts_with("--time")), "{:?}", r.args);

        // Quotes in a path survive the shell.
        let odd = Path::new("/home/o'neil/rush/submissions/7");
        let r =
            infer_sbatch_request(&InferJob { submission_dir: odd, log: &odd.join("infer.log"), ..job }, &config, None);
        assert!(r.script.contains(r"2>>'/home/o'\''neil/rush/submissions/7/infer.log'"), "{}", r.script);
        assert!(r.args.iter().any(|a| a == "--output=/home/o'neil/rush/submissions/7/slurm-%j.out"), "{:?}", r.args);
    }

    #[test]
    fn job_names_tell_homes_apart() {
        let session: SessionId = "local/emoji/1".parse().unwrap();
        let (a, b) = (home_tag(Path::new("/tmp/a/.rush")), home_tag(Path::new("/tmp/b/.rush")));
        assert_eq!(a.len(), 8);
        assert_ne!(a, b);
        assert_eq!(a, home_tag(Path::new("/tmp/a/.rush")));
        assert_eq!(job_name(&session, 1, &a), format!("rush:local/emoji/1#1@{a}"));
    }

    #[test]
    fn shell_quoting_survives_quotes_and_spaces() {
        assert_eq!(shell_quote("/a b/c"), "'/a b/c'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
