//! The daemon's configuration: a YAML file (`--config`) and flags, flags winning, then defaults; parsed first, then
//! resolved into absolute paths and a concrete list of worker slots.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::core::queue::SlotKind;
use crate::core::session::validate_name;
use crate::core::slurm::SlurmConfig;
use crate::home::Home;

/// The address bound when neither file nor flag names one.
pub const DEFAULT_BIND: &str = "127.0.0.1:8470";

/// Ranked submissions per user per UTC day when the config file does not say.
pub const DEFAULT_SUBMISSIONS_PER_DAY: u32 = 10;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{field}: {message}")]
    Invalid { field: &'static str, message: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// Where sessions run: the local worker pool, or a Slurm cluster (one batch job per session; see docs/slurm.md).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutorKind {
    #[default]
    Local,
    Slurm,
}

/// What a config file may say (every field optional; unknown fields are errors).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// The watched intake folder (relative paths are relative to the config file).
    pub experiments: Option<PathBuf>,
    pub user: Option<String>,
    pub bind: Option<String>,
    /// The database (default `$RUSH_HOME/rush.db`).
    pub db: Option<PathBuf>,
    pub cpu_slots: Option<u32>,
    pub gpus: Option<Vec<u32>>,
    /// Seconds a stopped child gets between SIGTERM and SIGKILL.
    pub stop_grace_secs: Option<u64>,
    pub executor: Option<ExecutorKind>,
    /// How sessions become Slurm jobs (with `executor: slurm`).
    pub slurm: Option<SlurmConfig>,
    /// The API token: needed by mutating routes (and by every route unless `public_read`); never logged.
    pub token: Option<crate::core::access::Token>,
    /// Read-only pages and API routes stay open without the token (default: open on loopback, closed beyond it).
    pub public_read: Option<bool>,
    /// Ranked submissions each user may make per UTC day (dry runs are free); default [`DEFAULT_SUBMISSIONS_PER_DAY`].
    pub submissions_per_day: Option<u32>,
    /// The share of the test set the board's public score covers, 1..99 (default 30).
    pub public_percent: Option<u8>,
    /// Datasets whose boards show (and rank by) private scores to everyone, e.g. after a deadline.
    pub reveal_private: Option<Vec<String>>,
    /// The users of a shared daemon (teams), each with its token's SHA-256, GPU quota and role; those `rush user add`
    /// puts in `$RUSH_HOME/users.yaml` join them. None listed: one user (`user`), today's single-user daemon.
    pub users: Option<Vec<crate::core::access::UserEntry>>,
    /// The Python that code sessions run (default: `$RUSH_PYTHON`, the set-up venv, else `python3` on the PATH).
    pub python: Option<PathBuf>,
    /// `on` (default): code sessions run in the bubblewrap sandbox, and are refused where it cannot run; `off`: they
    /// run unsandboxed (a machine without bubblewrap, trusted code only).
    pub sandbox: Option<SandboxMode>,
}

/// Whether code sessions are sandboxed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SandboxMode {
    #[default]
    On,
    Off,
}

/// Flags given on the command line (`rush daemon ...`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Flags {
    pub config: Option<PathBuf>,
    pub experiments: Option<PathBuf>,
    pub user: Option<String>,
    pub bind: Option<String>,
    pub cpu_slots: Option<u32>,
    pub gpus: Option<Vec<u32>>,
    /// `--token` / `RUSH_TOKEN`: wins over the config file's.
    pub token: Option<crate::core::access::Token>,
}

/// The resolved configuration the daemon runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonConfig {
    pub home: Home,
    pub experiments: PathBuf,
    pub user: String,
    pub bind: SocketAddr,
    pub db: PathBuf,
    pub slots: Vec<SlotKind>,
    pub stop_grace: Duration,
    pub executor: ExecutorKind,
    /// With `executor: slurm`; its `gpu_jobs` and `cpu_jobs` are the slots.
    pub slurm: SlurmConfig,
    /// Who may do what over HTTP (bind address, token, public reads).
    pub access: std::sync::Arc<crate::core::access::Access>,
    /// The per-user daily limit on ranked submissions.
    pub submissions_per_day: u32,
    /// The board's public share of each test set, in percent.
    pub public_percent: u8,
    /// Datasets whose private scores are revealed.
    pub reveal_private: Vec<String>,
    /// The users the config file lists (checked); `daemon::users::Directory` adds `$RUSH_HOME/users.yaml`'s.
    pub users: Vec<crate::core::access::UserEntry>,
    /// The Python code sessions run.
    pub python: PathBuf,
    pub sandbox: SandboxMode,
}

impl ConfigFile {
    pub fn read(path: &Path) -> Result<ConfigFile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io { path: path.into(), source })?;
        let mut file: ConfigFile = serde_saphyr::from_str(&text)
            .map_err(|e| ConfigError::File { path: path.into(), message: e.to_string() })?;
        let base = path.parent().unwrap_or(Path::new("."));
        file.experiments = file.experiments.map(|p| base.join(p));
        file.db = file.db.map(|p| base.join(p));
        Ok(file)
    }
}

impl DaemonConfig {
    /// Merges flags over the file over defaults. `detected_gpus` is how many CUDA devices this machine has (used
    /// when neither flag nor file lists GPU ids). Paths stay as given; [`DaemonConfig::prepare`] makes them absolute.
    pub fn resolve(home: Home, flags: Flags, detected_gpus: u32) -> Result<DaemonConfig, ConfigError> {
        let file = match &flags.config {
            Some(path) => ConfigFile::read(path)?,
            None => ConfigFile::default(),
        };
        let user = flags.user.or(file.user).unwrap_or_else(default_user);
        validate_name(&user).map_err(|e| ConfigError::Invalid { field: "user", message: e.to_string() })?;
        let bind_text = flags.bind.or(file.bind).unwrap_or_else(|| DEFAULT_BIND.to_string());
        let bind: SocketAddr = bind_text.parse().map_err(|e| ConfigError::Invalid {
            field: "bind",
            message: format!("{bind_text:?} is not an address like 127.0.0.1:8470 ({e})"),
        })?;
        let gpus = flags.gpus.or(file.gpus).unwrap_or_else(|| (0..detected_gpus).collect());
        let mut seen = std::collections::BTreeSet::new();
        if let Some(dup) = gpus.iter().find(|g| !seen.insert(**g)) {
            return Err(ConfigError::Invalid { field: "gpus", message: format!("GPU {dup} is listed twice") });
        }
        let cpu_slots = flags.cpu_slots.or(file.cpu_slots).unwrap_or(if gpus.is_empty() { 1 } else { 0 });
        if gpus.is_empty() && cpu_slots == 0 {
            return Err(ConfigError::Invalid {
                field: "cpu_slots",
                message: "0 CPU slots and no GPU: nothing could ever run (use --cpu-slots 1 or more)".into(),
            });
        }
        if cpu_slots > 256 {
            return Err(ConfigError::Invalid { field: "cpu_slots", message: format!("{cpu_slots} is more than 256") });
        }
        let executor = file.executor.unwrap_or_default();
        if let (Some(first), 0, ExecutorKind::Local) = (gpus.first(), detected_gpus, executor) {
            return Err(ConfigError::Invalid {
                field: "gpus",
                message: format!(
                    "GPU {first} is listed, but no CUDA device is visible on this machine (NVML): every session given \
                     it would fail (leave `gpus` out to use what is detected, or use --cpu-slots)"
                ),
            });
        }
        let mut slots: Vec<SlotKind> = gpus.into_iter().map(SlotKind::Gpu).collect();
        slots.extend((0..cpu_slots).map(SlotKind::Cpu));
        let slurm = file.slurm.unwrap_or_default();
        if executor == ExecutorKind::Slurm {
            slurm.validate().map_err(|e| ConfigError::Invalid { field: "slurm", message: e.to_string() })?;
            // Slurm places the jobs; a slot here is a session the daemon may have submitted at once.
            slots = (0..slurm.gpu_jobs).map(SlotKind::Gpu).chain((0..slurm.cpu_jobs).map(SlotKind::Cpu)).collect();
        }
        let public_percent = file.public_percent.unwrap_or(crate::core::score::DEFAULT_PUBLIC_PERCENT);
        if !(1..=99).contains(&public_percent) {
            return Err(ConfigError::Invalid {
                field: "public_percent",
                message: format!("{public_percent} is outside 1..99"),
            });
        }
        let users = file.users.unwrap_or_default();
        crate::core::access::Users::new(users.clone())
            .map_err(|e| ConfigError::Invalid { field: "users", message: e.to_string() })?;
        let python = file
            .python
            .or_else(|| std::env::var_os("RUSH_PYTHON").filter(|p| !p.is_empty()).map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("python3"));
        Ok(DaemonConfig {
            python,
            sandbox: file.sandbox.unwrap_or_default(),
            users,
            submissions_per_day: file.submissions_per_day.unwrap_or(DEFAULT_SUBMISSIONS_PER_DAY),
            public_percent,
            reveal_private: file.reveal_private.unwrap_or_default(),
            db: file.db.unwrap_or_else(|| home.db()),
            experiments: flags.experiments.or(file.experiments).unwrap_or_else(|| PathBuf::from("experiments")),
            home,
            user,
            bind,
            slots,
            stop_grace: Duration::from_secs(file.stop_grace_secs.unwrap_or(10)),
            executor,
            slurm,
            access: std::sync::Arc::new(crate::core::access::Access::new(
                bind,
                flags.token.or(file.token).as_ref().map(|t| t.expose()),
                file.public_read.unwrap_or(bind.ip().is_loopback()),
            )),
        })
    }

    /// Creates the home and experiments folders and makes every path absolute.
    pub fn prepare(mut self) -> Result<DaemonConfig, ConfigError> {
        for dir in [self.home.root().to_path_buf(), self.home.datasets(), self.experiments.clone()] {
            std::fs::create_dir_all(&dir).map_err(|source| ConfigError::Io { path: dir.clone(), source })?;
        }
        let abs = |p: &Path| p.canonicalize().map_err(|source| ConfigError::Io { path: p.into(), source });
        self.home = Home::new(abs(self.home.root())?);
        // A bare `python3` is looked up on the PATH now, so a session's child runs the same interpreter anywhere.
        if self.python.components().count() == 1
            && let Some(found) = std::env::var_os("PATH")
                .and_then(|p| std::env::split_paths(&p).map(|d| d.join(&self.python)).find(|p| p.is_file()))
        {
            self.python = found;
        }
        self.experiments = abs(&self.experiments)?;
        if let Some(parent) = self.db.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| ConfigError::Io { path: parent.into(), source })?;
            self.db = abs(parent)?.join(self.db.file_name().unwrap_or_default());
        }
        Ok(self)
    }

    pub fn has_gpu(&self) -> bool {
        self.slots.iter().any(|s| matches!(s, SlotKind::Gpu(_)))
    }
}

/// `$USER` when it is a valid name, else `local`.
pub fn default_user() -> String {
    std::env::var("USER").ok().filter(|u| validate_name(u).is_ok()).unwrap_or_else(|| "local".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_without_gpu_give_one_cpu_slot() {
        let c = DaemonConfig::resolve(Home::new("/h"), Flags { user: Some("ann".into()), ..Default::default() }, 0)
            .unwrap();
        assert_eq!(c.slots, vec![SlotKind::Cpu(0)]);
        assert_eq!(c.bind.to_string(), DEFAULT_BIND);
        assert_eq!(c.db, PathBuf::from("/h/rush.db"));
        assert_eq!(c.user, "ann");
        assert!(!c.has_gpu());
    }

    #[test]
    fn detected_gpus_become_slots_and_flags_win() {
        let c = DaemonConfig::resolve(Home::new("/h"), Flags::default(), 3).unwrap();
        assert_eq!(c.slots, vec![SlotKind::Gpu(0), SlotKind::Gpu(1), SlotKind::Gpu(2)]);
        let flags = Flags { gpus: Some(vec![2, 5]), cpu_slots: Some(1), ..Default::default() };
        let c = DaemonConfig::resolve(Home::new("/h"), flags, 8).unwrap();
        assert_eq!(c.slots, vec![SlotKind::Gpu(2), SlotKind::Gpu(5), SlotKind::Cpu(0)]);
        assert!(c.has_gpu());
    }

    #[test]
    fn config_file_is_read_relative_and_strict() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rush.yaml");
        std::fs::write(&path, "experiments: exp\nuser: bob\ncpu_slots: 2\nstop_grace_secs: 3\n").unwrap();
        let flags = Flags { config: Some(path.clone()), bind: Some("127.0.0.1:0".into()), ..Default::default() };
        let c = DaemonConfig::resolve(Home::new("/h"), flags, 0).unwrap();
        assert_eq!(c.experiments, dir.path().join("exp"));
        assert_eq!((c.user.as_str(), c.slots.len(), c.stop_grace.as_secs()), ("bob", 2, 3));
        assert_eq!(c.bind.port(), 0);
        std::fs::write(&path, "experimnets: exp\n").unwrap();
        let e = DaemonConfig::resolve(Home::new("/h"), Flags { config: Some(path), ..Default::default() }, 0);
        let e = e.unwrap_err().to_string();
        assert!(e.contains("rush.yaml") && e.contains("experimnets"), "{e}");
    }

    #[test]
    fn slurm_executor_takes_its_slots_and_settings_from_its_section() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rush.yaml");
        let yaml = "executor: slurm\nslurm: {partition: gpu, gpu_jobs: 2, cpu_jobs: 1, time_limit: \"30\"}\n";
        std::fs::write(&path, yaml).unwrap();
        let c = DaemonConfig::resolve(Home::new("/h"), Flags { config: Some(path.clone()), ..Default::default() }, 0)
            .unwrap();
        assert_eq!(c.executor, ExecutorKind::Slurm);
        assert_eq!(c.slots, vec![SlotKind::Gpu(0), SlotKind::Gpu(1), SlotKind::Cpu(0)]);
        assert_eq!((c.slurm.partition.as_deref(), c.slurm.time_limit.as_deref()), (Some("gpu"), Some("30")));
        std::fs::write(&path, "executor: slurm\nslurm: {time_limit: soon}\n").unwrap();
        let e = DaemonConfig::resolve(Home::new("/h"), Flags { config: Some(path), ..Default::default() }, 0);
        let e = e.unwrap_err().to_string();
        assert!(e.contains("slurm.time_limit") && e.contains("soon"), "{e}");
    }

    #[test]
    fn submission_settings_have_defaults_and_are_checked() {
        let c = DaemonConfig::resolve(Home::new("/h"), Flags::default(), 0).unwrap();
        assert_eq!((c.submissions_per_day, c.public_percent), (DEFAULT_SUBMISSIONS_PER_DAY, 30));
        assert!(c.reveal_private.is_empty());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rush.yaml");
        std::fs::write(&path, "submissions_per_day: 2\npublic_percent: 25\nreveal_private: [emoji]\n").unwrap();
        let c = DaemonConfig::resolve(Home::new("/h"), Flags { config: Some(path.clone()), ..Default::default() }, 0)
            .unwrap();
        assert_eq!((c.submissions_per_day, c.public_percent), (2, 25));
        assert_eq!(c.reveal_private, vec!["emoji".to_string()]);
        std::fs::write(&path, "public_percent: 100\n").unwrap();
        let e = DaemonConfig::resolve(Home::new("/h"), Flags { config: Some(path), ..Default::default() }, 0);
        assert!(e.unwrap_err().to_string().starts_with("public_percent:"));
    }

    #[test]
    fn bad_values_are_named() {
        let bad = |flags: Flags| DaemonConfig::resolve(Home::new("/h"), flags, 0).unwrap_err().to_string();
        assert!(bad(Flags { bind: Some("nowhere".into()), ..Default::default() }).starts_with("bind:"));
        assert!(bad(Flags { user: Some("../x".into()), ..Default::default() }).starts_with("user:"));
        assert!(bad(Flags { cpu_slots: Some(0), ..Default::default() }).starts_with("cpu_slots:"));
        assert!(bad(Flags { gpus: Some(vec![1, 1]), ..Default::default() }).starts_with("gpus:"));
        let no_device = bad(Flags { gpus: Some(vec![0]), ..Default::default() });
        assert!(no_device.starts_with("gpus:") && no_device.contains("no CUDA device"), "{no_device}");
    }
}
