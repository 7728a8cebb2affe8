//! The rush home folder (`RUSH_HOME`, default `./.rush`): where every file of a daemon lives; and the machine-wide
//! cache (`RUSH_CACHE`). Paths only, no I/O.

use std::path::{Path, PathBuf};

use crate::core::session::SessionId;

/// The machine-wide cache shared by every home and clone: `${RUSH_CACHE:-$HOME/.cache/rush}` (the set-up script's
/// torch venv and npm tarballs, and decoded images of datasets outside a home).
pub fn machine_cache() -> PathBuf {
    match std::env::var_os("RUSH_CACHE") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."))
            .join(".cache")
            .join("rush"),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// `RUSH_HOME` or `./.rush`.
    pub fn from_env() -> Self {
        Self::new(std::env::var_os("RUSH_HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(".rush")))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn db(&self) -> PathBuf {
        self.root.join("rush.db")
    }

    /// The users `rush user add` listed (name, token digest, GPU quota, role), read by the daemon as they change.
    pub fn users_file(&self) -> PathBuf {
        self.root.join("users.yaml")
    }

    /// Written by a running daemon: the address its HTTP API listens on.
    pub fn daemon_addr_file(&self) -> PathBuf {
        self.root.join("daemon.addr")
    }

    pub fn datasets(&self) -> PathBuf {
        self.root.join("datasets")
    }

    pub fn dataset(&self, name: &str) -> PathBuf {
        self.datasets().join(name)
    }

    /// Where `dataset push` puts a dataset's `test_labels.csv`; read by the scorer alone.
    pub fn labels(&self, dataset: &str) -> PathBuf {
        self.root.join("labels").join(dataset).join("test_labels.csv")
    }

    pub fn session(&self, id: &SessionId) -> PathBuf {
        self.root.join("sessions").join(&id.user).join(&id.dataset).join(id.n.to_string())
    }

    pub fn submission(&self, id: i64) -> PathBuf {
        self.root.join("submissions").join(id.to_string())
    }

    /// A registered dataset's facts (`data::facts`): what the daemon reads instead of the dataset's files.
    pub fn facts(&self, dataset: &str) -> PathBuf {
        self.root.join("facts").join(format!("{dataset}.facts"))
    }

    /// Decoded-image caches.
    pub fn cache(&self) -> PathBuf {
        self.root.join("cache")
    }
}

/// The files of one session folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDir {
    root: PathBuf,
}

impl SessionDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn spec(&self) -> PathBuf {
        self.root.join("spec.yaml")
    }
    pub fn events(&self) -> PathBuf {
        self.root.join("events.jsonl")
    }
    pub fn log(&self) -> PathBuf {
        self.root.join("train.log")
    }
    pub fn checkpoints(&self) -> PathBuf {
        self.root.join("checkpoints")
    }
    /// `checkpoints/<epoch>.safetensors`: the model weights.
    pub fn checkpoint_weights(&self, epoch: u32) -> PathBuf {
        self.checkpoints().join(format!("{epoch}.safetensors"))
    }
    /// `checkpoints/<epoch>.json`: epoch, metrics, spec hash.
    pub fn checkpoint_meta(&self, epoch: u32) -> PathBuf {
        self.checkpoints().join(format!("{epoch}.json"))
    }
    /// `checkpoints/<epoch>.state.safetensors`: optimizer state and what resume needs.
    pub fn checkpoint_state(&self, epoch: u32) -> PathBuf {
        self.checkpoints().join(format!("{epoch}.state.safetensors"))
    }
    /// `checkpoints/<epoch>.valid.npy`: the epoch's class probabilities on the validation split (`submit::valid`).
    pub fn checkpoint_valid(&self, epoch: u32) -> PathBuf {
        self.checkpoints().join(format!("{epoch}.valid.npy"))
    }
}
