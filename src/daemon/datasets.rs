//! Registering datasets: a folder under `$RUSH_HOME/datasets/<name>` in the AI RUSH layout becomes a row a spec may
//! name. Test labels found in it are moved to the label store first, so no dataset folder ever holds them.

use std::path::Path;

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

/// At start-up: registers dataset folders that are on disk but not in the store (a push made while no daemon ran).
pub async fn scan(daemon: &Daemon) {
    let Ok(mut entries) = tokio::fs::read_dir(daemon.home().datasets()).await else { return };
    while let Ok(Some(entry)) = entries.next_entry().await {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with('.') || validate_name(&name).is_err() || !entry.path().is_dir() {
            continue;
        }
        match daemon.store.dataset(&name).await {
            Ok(Some(_)) => continue,
            Ok(None) => {}
            Err(e) => {
                tracing::error!("dataset scan: {e}");
                return;
            }
        }
        match daemon.register_dataset(&name).await {
            Ok(row) => tracing::info!("registered dataset {name} ({} training images)", row.train_images),
            Err(e) => tracing::warn!("dataset folder {name} not registered: {e}"),
        }
    }
}
