//! `rush dataset ls` and `rush dataset push`: the daemon's dataset registry.
//!
//! `push` puts the folder under `$RUSH_HOME/datasets/<name>` (copied, or moved with `--move`), through a hidden
//! staging folder so the daemon never sees half a dataset, moves `test/test_labels.csv` to the label store first, and
//! then asks the daemon to register it (a daemon started later registers it at start-up).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use rayon::prelude::*;

use crate::cli::Global;
use crate::cli::client::http::Api;
use crate::cli::client::table;
use crate::core::format;
use crate::core::session::validate_name;
use crate::data::layout;
use crate::store::DatasetRow;
use crate::web::api::{DatasetState, DatasetView, Info};

pub fn ls(global: &Global, json: bool) -> anyhow::Result<ExitCode> {
    let api = Api::connect(global)?;
    let list: Vec<DatasetView> = api.get("/datasets")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", ls_table(&list, crate::store::now()));
    Ok(ExitCode::SUCCESS)
}

/// `dataset ls`'s table: a registered dataset's sizes and when it was registered; one still registering says so
/// (and since when), one that failed says why.
fn ls_table(list: &[DatasetView], now: f64) -> String {
    let count = |n: Option<i64>| n.map_or_else(|| "-".to_string(), |n| n.to_string());
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|d| {
            let registered = match d.state {
                DatasetState::Registered => format::ago(now, d.registered_at),
                DatasetState::Registering => format!("registering (since {})", format::ago(now, d.since)),
                DatasetState::Failed => format!("failed: {}", d.error.as_deref().unwrap_or("unknown error")),
            };
            vec![d.name.clone(), count(d.train_images), count(d.classes), count(d.test_images), registered]
        })
        .collect();
    table::render(&["Name", "Train", "Classes", "Test", "Registered"], &rows)
}

pub fn push(global: &Global, name: &str, source: &Path, move_it: bool) -> anyhow::Result<ExitCode> {
    validate_name(name)?;
    // Everything the daemon checks when it registers the dataset is checked here, before anything is copied or moved.
    let train = layout::read_train(source)
        .with_context(|| format!("{} is not a dataset in the AI RUSH layout", source.display()))?;
    if layout::test_dir(source).is_dir() {
        layout::read_test(source).with_context(|| {
            format!(
                "{}: its test split is unusable (remove the `test` folder to push it without one)",
                source.display()
            )
        })?;
    }
    let home = &global.home;
    let dest = home.dataset(name);
    if dest.exists() {
        bail!("dataset {name} exists already at {}; pick another name or remove that folder", dest.display());
    }
    std::fs::create_dir_all(home.datasets()).with_context(|| format!("creating {}", home.datasets().display()))?;
    let staging = home.datasets().join(format!(".incoming-{name}-{}", std::process::id()));
    if staging.exists() {
        std::fs::remove_dir_all(&staging).with_context(|| format!("removing {}", staging.display()))?;
    }
    if move_it {
        if std::fs::rename(source, &staging).is_err() {
            copy_tree(source, &staging)?;
            std::fs::remove_dir_all(source).with_context(|| format!("removing {}", source.display()))?;
        }
    } else {
        copy_tree(source, &staging)?;
    }
    // AI RUSH's multi-hot `train/train_label`, for code that reads it, when the dataset came without one.
    if !layout::train_label_path(&staging).exists() {
        layout::write_train_label(&staging).context("writing train/train_label")?;
    }
    let labels = staging.join("test").join(layout::TEST_LABELS_CSV);
    if labels.exists() {
        let to = home.labels(name);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::rename(&labels, &to).with_context(|| format!("moving test labels to {}", to.display()))?;
    }
    std::fs::rename(&staging, &dest).with_context(|| format!("moving {} into place", dest.display()))?;
    let registered = Api::connect(global).and_then(|api| api.get::<Info>("/info").map(|_| api));
    match registered {
        Ok(api) => {
            let row: DatasetRow = api.post(&format!("/datasets/{name}"), &serde_json::json!({}))?;
            println!(
                "dataset {name} registered: {} training images, {} classes, {} test images",
                row.train_images, row.classes, row.test_images
            );
        }
        Err(_) => println!(
            "dataset {name} is in place ({} training images); a daemon registers it when it starts",
            train.samples.len()
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// Copies a folder tree (files in parallel).
fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    let mut files: Vec<(PathBuf, PathBuf)> = Vec::new();
    let mut stack = vec![(from.to_path_buf(), to.to_path_buf())];
    while let Some((src, dst)) = stack.pop() {
        std::fs::create_dir_all(&dst).with_context(|| format!("creating {}", dst.display()))?;
        for entry in std::fs::read_dir(&src).with_context(|| format!("reading {}", src.display()))? {
            let entry = entry.with_context(|| format!("reading {}", src.display()))?;
            let target = dst.join(entry.file_name());
            if entry.path().is_dir() {
                stack.push((entry.path(), target));
            } else {
                files.push((entry.path(), target));
            }
        }
    }
    files.par_iter().try_for_each(|(src, dst)| {
        std::fs::copy(src, dst).map(|_| ()).with_context(|| format!("copying {} to {}", src.display(), dst.display()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ls_says_which_datasets_are_still_registering_and_why_one_failed() {
        let registered = DatasetView {
            name: "emoji".into(),
            state: DatasetState::Registered,
            error: None,
            since: None,
            path: Some("/h/datasets/emoji".into()),
            train_images: Some(300),
            classes: Some(8),
            test_images: Some(60),
            registered_at: Some(990.0),
        };
        let registering = DatasetView {
            name: "big".into(),
            state: DatasetState::Registering,
            since: Some(997.0),
            path: None,
            train_images: None,
            classes: None,
            test_images: None,
            registered_at: None,
            ..registered.clone()
        };
        let failed = DatasetView {
            name: "bad".into(),
            state: DatasetState::Failed,
            error: Some("dataset bad: train.csv:1: no column tags".into()),
            since: None,
            ..registering.clone()
        };
        let table = ls_table(&[failed, registering, registered], 1000.0);
        let line = |name: &str| table.lines().find(|l| l.starts_with(name)).unwrap_or_default().to_string();
        assert!(line("emoji").contains("300") && line("emoji").contains("10 s ago"), "{table}");
        assert!(line("big").contains("registering (since 3 s ago)"), "{table}");
        assert!(line("big").contains(" - "), "no sizes while registering: {table}");
        assert!(line("bad").contains("failed: dataset bad: train.csv:1: no column tags"), "{table}");
    }
}
