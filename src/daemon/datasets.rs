//! Registering datasets: a folder under `$RUSH_HOME/datasets/<name>` in the AI RUSH layout becomes a row a spec may
//! name. Test labels found in it are moved to the label store first, so no dataset folder ever holds them.
//!
//! Registration reads every image's entry (at AI RUSH scale, seconds), so the daemon never waits for it before it
//! serves: folders found at start-up are registered in the background ([`start_up`]). Until a registration ends, its
//! dataset is `registering` ([`Registrations`]): a spec may name it (its sessions wait in the queue, and `ps` says
//! why), and when it fails the dataset shows the error and its queued sessions fail with it.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::{Daemon, DaemonError};
use crate::core::session::validate_name;
use crate::data::facts::{self, Facts};
use crate::data::layout::TEST_LABELS_CSV;
use crate::home::Home;
use crate::store::DatasetRow;

/// Reads the dataset folder `name` under the home (blocking: it lists every image), writes its facts
/// (`$RUSH_HOME/facts/<name>.facts`) and returns its row. Test labels left in it move to the label store.
pub fn inspect(home: &Home, name: &str) -> Result<DatasetRow, DaemonError> {
    validate_name(name).map_err(|e| DaemonError::Invalid(e.to_string()))?;
    let root = home.dataset(name);
    if !root.is_dir() {
        return Err(DaemonError::NotFound(format!(
            "no dataset {name}: its folder datasets/{name} is not in the daemon's home (put it there with \
             `rush dataset push {name} PATH`)"
        )));
    }
    move_labels(home, name)?;
    // Messages go to clients: the home's own path is shown as `$RUSH_HOME`.
    let home_path = home.root().display().to_string();
    let bad =
        |e: facts::FactsError| DaemonError::Invalid(format!("dataset {name}: {e}").replace(&home_path, "$RUSH_HOME"));
    // the facts (`data::facts`) are what the daemon reads of the dataset from now on: no request reads its files again
    let bytes = facts::compute(&root).map_err(bad);
    super::facts::trim();
    let path = home.facts(name);
    Facts::write(&path, &bytes?).map_err(bad)?;
    let summary = Facts::open(&path).map_err(bad)?.summary().clone();
    super::facts::trim();
    Ok(DatasetRow {
        name: name.to_string(),
        path: root.display().to_string(),
        train_images: summary.train_images as i64,
        classes: summary.classes as i64,
        test_images: summary.test_images as i64,
        registered_at: crate::store::now(),
    })
}

/// Moves `<dataset>/test/test_labels.csv` to `$RUSH_HOME/labels/<name>/test_labels.csv` if it is there.
pub fn move_labels(home: &Home, name: &str) -> Result<(), DaemonError> {
    let from = home.dataset(name).join("test").join(TEST_LABELS_CSV);
    if !from.exists() {
        return Ok(());
    }
    let to = home.labels(name);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DaemonError::Io { path, source }
    };
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    if std::fs::rename(&from, &to).is_err() {
        std::fs::copy(&from, &to).map_err(io(&to))?;
        std::fs::remove_file(&from).map_err(io(&from))?;
    }
    Ok(())
}

/// Where a registration that has not succeeded stands.
#[derive(Debug, Clone, PartialEq)]
pub enum Registration {
    /// Under way since this time (seconds since the Unix epoch).
    Registering { since: f64 },
    /// It failed, for this reason (a client's message).
    Failed { error: String },
}

/// The registrations under way, and those that failed for a dataset the store does not hold, by dataset name. Only
/// in memory: a daemon started later looks at the folders again.
#[derive(Debug, Default)]
pub struct Registrations(Mutex<BTreeMap<String, Registration>>);

impl Registrations {
    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Registration>> {
        // A panic while holding this lock leaves the map whole (every change is one insert or remove).
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn begin(&self, name: &str) {
        self.map().insert(name.to_string(), Registration::Registering { since: crate::store::now() });
    }

    pub fn succeeded(&self, name: &str) {
        self.map().remove(name);
    }

    pub fn failed(&self, name: &str, error: String) {
        self.map().insert(name.to_string(), Registration::Failed { error });
    }

    pub fn get(&self, name: &str) -> Option<Registration> {
        self.map().get(name).cloned()
    }

    pub fn all(&self) -> Vec<(String, Registration)> {
        self.map().iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

/// A dataset as the daemon knows it: its row once registered; a registration under way or failed for one the store
/// does not hold.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetStatus {
    pub name: String,
    pub row: Option<DatasetRow>,
    pub registration: Option<Registration>,
}

/// What a dataset a session or a submission needs is to it now.
#[derive(Debug, Clone, PartialEq)]
pub enum Readiness {
    /// Registered, or unknown here: let it go on (an unknown one fails with its own error).
    Ready,
    /// Still registering: wait.
    Registering,
    /// Its registration failed: fail with this reason.
    Failed(String),
}

/// The reason a session or submission fails with when its dataset's registration failed.
pub fn failure_reason(dataset: &str, error: &str) -> String {
    format!("dataset {dataset} could not be registered: {error}")
}

/// What `ps` says of a session waiting for its dataset.
pub fn waiting_text(dataset: &str) -> String {
    format!("waiting for dataset {dataset} to register")
}

/// The dataset folders on disk that the store does not hold (pushes made while no daemon ran), by name. Cheap: one
/// directory listing and a lookup each.
pub async fn unregistered_folders(daemon: &Daemon) -> Vec<String> {
    let mut names = Vec::new();
    let Ok(mut entries) = tokio::fs::read_dir(daemon.home().datasets()).await else { return names };
    while let Ok(Some(entry)) = entries.next_entry().await {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with('.') || validate_name(&name).is_err() || !entry.path().is_dir() {
            continue;
        }
        match daemon.store.dataset(&name).await {
            Ok(Some(_)) => {}
            Ok(None) => names.push(name),
            Err(e) => {
                tracing::error!("dataset scan: {e}");
                break;
            }
        }
    }
    names.sort();
    names
}

/// At start-up, before intake starts: marks the unregistered dataset folders as registering (so specs naming them
/// queue sessions that wait), and returns them for [`register_in_background`].
pub async fn start_up(daemon: &Daemon) -> Vec<String> {
    let names = unregistered_folders(daemon).await;
    for name in &names {
        daemon.registrations.begin(name);
    }
    names
}

/// Registers `names` (marked by [`start_up`]) in the background, each on its own, while the daemon serves; the
/// scheduler and the submission worker are woken as each ends.
pub fn register_in_background(daemon: &Arc<Daemon>, names: Vec<String>) {
    for name in names {
        let daemon = daemon.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            match daemon.register_dataset(&name).await {
                Ok(row) => tracing::info!(
                    "registered dataset {name} ({} training images) in {:.2} s",
                    row.train_images,
                    started.elapsed().as_secs_f64()
                ),
                Err(e) => tracing::warn!("dataset folder {name} not registered: {e}"),
            }
        });
    }
}
