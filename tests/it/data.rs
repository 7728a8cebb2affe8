//! The data layer end to end: `rush dataset synth` writes the AI RUSH layout, the reader reads it back, images decode,
//! the split is by package, and broken files are reported by file and line while the rest still loads.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use rush::data::image::{ImageError, load_rgb};
use rush::data::layout::{self, DataError, NUM_TAGS, SplitName};
use rush::data::split::split_by_package;

fn synth(out: &Path, extra: &[&str]) -> std::process::Output {
    let output = Command::new(env!("CARGO_BIN_EXE_rush"))
        .args(["dataset", "synth", "--out"])
        .arg(out)
        .args(["--width", "64", "--height", "64", "--per-package", "20", "--classes", "10", "--quiet"])
        .args(extra)
        .output()
        .expect("run rush");
    assert!(output.status.success(), "rush dataset synth failed: {}", String::from_utf8_lossy(&output.stderr));
    output
}

fn small_set(out: &Path, seed: &str, threads: &str) {
    synth(out, &["--train", "300", "--test", "60", "--seed", seed, "--threads", threads]);
}

/// Every file under `root`, relative path -> bytes.
fn files(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.insert(path.strip_prefix(root).unwrap().to_path_buf(), std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

#[test]
fn synth_writes_the_layout_and_the_reader_reads_it_back() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("synth");
    let output = synth(&root, &["--train", "300", "--test", "60", "--seed", "7"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("images/s"), "{stdout}");

    let train = layout::read_train(&root).unwrap();
    assert!(train.problems.is_empty(), "{:?}", train.problems);
    assert_eq!(train.samples.len(), 300);
    assert_eq!(train.tags.len(), NUM_TAGS);
    let labels: BTreeSet<u16> = train.samples.iter().map(|s| s.label()).collect();
    assert_eq!(labels.len(), 10, "--classes 10 gives ten labels: {labels:?}");
    for s in &train.samples {
        assert!((1..=3).contains(&s.tags.len()), "{s:?}");
        assert!(s.tags.iter().all(|&t| (t as usize) < NUM_TAGS));
        let distinct: BTreeSet<u16> = s.tags.iter().copied().collect();
        assert_eq!(distinct.len(), s.tags.len(), "tags repeat: {s:?}");
    }
    let tag_counts: BTreeSet<usize> = train.samples.iter().map(|s| s.tags.len()).collect();
    assert_eq!(tag_counts, BTreeSet::from([1, 2, 3]));

    // 15 packages of 20; packages.tsv marks some as validation, and the split follows it, by package.
    assert_eq!(train.packages.len(), 15);
    let named: BTreeSet<&str> =
        train.packages.iter().filter(|p| p.split == Some(SplitName::Valid)).map(|p| p.package_id.as_str()).collect();
    assert!(!named.is_empty());
    let split = split_by_package(&train, 0.5, 1);
    let valid: BTreeSet<&str> = split.valid.iter().map(|&i| train.samples[i].package_id.as_str()).collect();
    let trained: BTreeSet<&str> = split.train.iter().map(|&i| train.samples[i].package_id.as_str()).collect();
    assert_eq!(valid, named);
    assert!(valid.is_disjoint(&trained));
    assert_eq!(split.train.len() + split.valid.len(), 300);

    let test = layout::read_test(&root).unwrap();
    assert!(test.problems.is_empty(), "{:?}", test.problems);
    assert_eq!(test.samples.iter().map(|s| s.index).collect::<Vec<_>>(), (0..60).collect::<Vec<_>>());
    let test_packages: BTreeSet<&str> = test.samples.iter().map(|s| s.package_id.as_str()).collect();
    assert!(test_packages.iter().all(|p| !trained.contains(p) && !valid.contains(p)), "test packages are new");
    let labels = layout::read_test_labels(&root.join("test").join("test_labels.csv")).unwrap();
    assert_eq!(labels.len(), 60);
    assert!(labels.iter().all(|t| (1..=3).contains(&t.len())));
    assert!(!layout::test_dir(&root).join("test_labels.csv").exists(), "labels lie apart from the test images");

    for path in train.samples.iter().map(|s| &s.path).chain(test.samples.iter().map(|s| &s.path)) {
        let rgb = load_rgb(path, 32).unwrap();
        assert_eq!(rgb.len(), 32 * 32 * 3);
        assert_eq!(&rgb[..3], &[255, 255, 255], "{}: the transparent corner composites to white", path.display());
        assert!(rgb.iter().any(|&v| v < 200), "{}: something is drawn", path.display());
    }
}

#[test]
fn synth_is_deterministic_whatever_the_thread_count() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, c) = (tmp.path().join("a"), tmp.path().join("b"), tmp.path().join("c"));
    small_set(&a, "11", "1");
    small_set(&b, "11", "2");
    small_set(&c, "12", "2");
    let (fa, fb, fc) = (files(&a), files(&b), files(&c));
    assert_eq!(fa.len(), 300 + 60 + 6, "images, three CSVs, two TSVs, train/train_label");
    assert_eq!(fa.keys().collect::<Vec<_>>(), fb.keys().collect::<Vec<_>>());
    for (path, bytes) in &fa {
        assert!(bytes == &fb[path], "{} differs between --threads 1 and 2", path.display());
    }
    let csv = Path::new("train/train_data/train_with_valid_tags.csv");
    assert_ne!(fa[csv], fc[csv], "another seed draws another dataset");
}

#[test]
fn broken_files_are_reported_by_file_and_line_and_the_rest_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("broken");
    small_set(&root, "3", "2");
    let train_dir = layout::train_dir(&root);
    let csv_path = train_dir.join(layout::TRAIN_CSV);
    let before = layout::read_train(&root).unwrap();

    // Line n+2 of the CSV holds sample n (line 1 is the header).
    let corrupt = before.samples[10].path.clone();
    let bytes = std::fs::read(&corrupt).unwrap();
    std::fs::write(&corrupt, &bytes[..bytes.len() / 3]).unwrap();
    let deleted = before.samples[20].path.clone();
    std::fs::remove_file(&deleted).unwrap();
    let text = std::fs::read_to_string(&csv_path).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    lines[31] = format!("{},{}", before.samples[30].package_id, before.samples[30].sticker_id); // sample 30: no tags
    lines[41] = format!("{},999", lines[41]); // sample 40: a fourth field
    let tags_of_50 = before.samples[50].tags.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(",");
    lines[51] = format!("{},{},\"400,{tags_of_50}\"", before.samples[50].package_id, before.samples[50].sticker_id);
    std::fs::write(&csv_path, lines.join("\n") + "\n").unwrap();

    let after = layout::read_train(&root).unwrap();
    assert_eq!(after.samples.len(), 300 - 4);
    let problems: Vec<String> = after.problems.iter().map(|p| p.to_string()).collect();
    assert_eq!(problems.len(), 4, "{problems:?}");
    let csv = csv_path.display().to_string();
    assert!(problems[0].starts_with(&format!("{csv}:22: image ")), "{problems:?}");
    assert!(problems[0].contains(&deleted.display().to_string()) && problems[0].ends_with("is missing"));
    assert!(problems[1].starts_with(&format!("{csv}:32: malformed row: expected 3 fields")), "{problems:?}");
    assert!(problems[2].starts_with(&format!("{csv}:42: malformed row: expected 3 fields")), "{problems:?}");
    assert!(problems[3].starts_with(&format!("{csv}:52: unknown tag id 400")), "{problems:?}");

    // The corrupt PNG is found when decoded, naming the file; every other image still decodes.
    let mut failures = Vec::new();
    for sample in &after.samples {
        if let Err(e) = load_rgb(&sample.path, 32) {
            failures.push(e);
        }
    }
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(matches!(&failures[0], ImageError::Decode { path, .. } if *path == corrupt), "{:?}", failures[0]);
    assert!(failures[0].to_string().contains(&corrupt.display().to_string()));

    // Nothing usable at all is an error with a reason.
    for sample in &after.samples {
        std::fs::remove_file(&sample.path).unwrap();
    }
    let err = layout::read_train(&root).unwrap_err();
    assert!(matches!(err, DataError::NoUsableImages { .. }), "{err:?}");
    assert!(err.to_string().contains("no usable images"), "{err}");
}

#[test]
fn synth_refuses_bad_arguments_and_a_non_empty_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_rush")).args(["dataset", "synth", "--quiet"]).args(args).output().unwrap()
    };
    let out = tmp.path().join("x").display().to_string();
    let bad = run(&["--out", &out, "--classes", "351"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--classes 351"), "{}", String::from_utf8_lossy(&bad.stderr));
    std::fs::create_dir_all(tmp.path().join("x")).unwrap();
    std::fs::write(tmp.path().join("x").join("keep.txt"), "mine").unwrap();
    let refused = run(&["--out", &out, "--train", "5", "--test", "1"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not empty"));
    assert_eq!(std::fs::read_to_string(tmp.path().join("x").join("keep.txt")).unwrap(), "mine");
}

#[test]
fn push_checks_the_whole_dataset_before_it_copies_or_moves_anything() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    synth(&src, &["--train", "40", "--test", "0"]);
    let home = tmp.path().join("home");
    let push = || {
        Command::new(env!("CARGO_BIN_EXE_rush"))
            .arg("--home")
            .arg(&home)
            .args(["dataset", "push", "notest"])
            .arg(&src)
            .arg("--move")
            .env_remove("RUSH_URL")
            .output()
            .unwrap()
    };
    let out = push();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("test split is unusable") && stderr.contains("test_order.csv has no rows"), "{stderr}");
    assert!(!stderr.contains("0 problems"), "{stderr}");
    // nothing moved: the source is whole, and nothing is half in the home
    assert!(src.join("train/train_data/train_with_valid_tags.csv").is_file());
    assert!(!home.join("datasets/notest").exists() && !home.join("labels/notest").exists());
    // without the test folder it goes in, as a dataset to train on only; one without AI RUSH's `train/train_label`
    // gets it written from its CSV
    std::fs::remove_dir_all(src.join("test")).unwrap();
    std::fs::remove_file(src.join("train/train_label")).unwrap();
    let out = push();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(home.join("datasets/notest/train/train_data/train_with_valid_tags.csv").is_file() && !src.exists());
    crate::common::assert_train_label_is_argmax_of_the_first_tag(&home.join("datasets/notest"));
}

/// Figures, not assertions: `cargo test --release --test it bench_ -- --ignored --nocapture`.
#[test]
#[ignore]
fn bench_synth_and_load_rgb() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("bench");
    let n: u64 = std::env::var("RUSH_BENCH_IMAGES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let output = Command::new(env!("CARGO_BIN_EXE_rush"))
        .args(["dataset", "synth", "--quiet", "--test", "0", "--seed", "1", "--out"])
        .arg(&root)
        .args(["--train", &n.to_string()])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    println!("synth 370x320: {}", String::from_utf8_lossy(&output.stdout).trim());
    assert!(layout::read_test(&root).is_err(), "--test 0 writes an empty test_order.csv");
    let set = layout::read_train(&root).unwrap();
    let started = std::time::Instant::now();
    let mut out = Vec::new();
    for s in &set.samples {
        rush::data::image::load_rgb_into(&s.path, 128, &mut out).unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    println!("load_rgb 370x320 -> 128: {:.0} images/s on one core", set.samples.len() as f64 / secs);
}
