//! `rush bench`: the decode benchmark runs end to end against the PIL reference and prints a table whose ratio parses.

use std::process::Command;

#[test]
fn bench_decode_prints_a_table_row_with_a_positive_ratio() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let images = tmp.path().join("stickers");
    let rush = env!("CARGO_BIN_EXE_rush");
    let synth = Command::new(rush)
        .args(["dataset", "synth", "--out"])
        .arg(&images)
        .args(["--train", "50", "--test", "0", "--width", "96", "--height", "80", "--quiet"])
        .output()
        .expect("run rush dataset synth");
    assert!(synth.status.success(), "synth: {}", String::from_utf8_lossy(&synth.stderr));

    let out = Command::new(rush)
        .args(["bench", "decode", "--size", "64", "--images"])
        .arg(&images)
        .output()
        .expect("run rush bench decode");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "bench decode failed: {}{stdout}", String::from_utf8_lossy(&out.stderr));

    let rows: Vec<Vec<String>> = stdout
        .lines()
        .filter(|l| l.starts_with('|'))
        .map(|l| l.trim_matches('|').split('|').map(|c| c.trim().to_string()).collect())
        .collect();
    assert_eq!(rows.len(), 3, "header, rule and one row expected:\n{stdout}");
    assert_eq!(rows[0], ["benchmark", "rush", "reference", "ratio", "goal", "met"], "{stdout}");
    let row = &rows[2];
    assert!(row[0].contains("64px") && row[0].contains("50 PNGs"), "{stdout}");
    let figure: f64 = row[1].strip_suffix(" img/s").and_then(|f| f.parse().ok()).expect("rush figure in img/s");
    assert!(figure > 0.0, "{stdout}");
    assert!(row[2].contains("PIL"), "{stdout}");
    let ratio: f64 = row[3].strip_suffix('x').and_then(|r| r.parse().ok()).expect("ratio like 9.87x");
    assert!(ratio > 0.0 && ratio.is_finite(), "{stdout}");
    assert!(["yes", "NO"].contains(&row[5].as_str()), "{stdout}");
}

/// Re-ensembling: the in-memory mix and the submission worker's cached path (float16 cache read, mix, `.npy`, score)
/// each print a row, and the cached path's predictions equal the in-memory mix's.
#[test]
fn bench_ensemble_prints_the_mix_and_the_cached_submission_path() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rush"))
        .args(["bench", "ensemble", "--members", "3", "--rows", "3000", "--repeats", "2"])
        .output()
        .expect("run rush bench ensemble");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<&str> = stdout.lines().filter(|l| l.starts_with("| re-")).collect();
    assert_eq!(rows.len(), 2, "{stdout}");
    assert!(rows[0].contains("re-ensemble 3 cached members of 3000 x 350"), "{stdout}");
    assert!(rows[1].contains("read float16 cache + mix + predictions.npy + score"), "{stdout}");
    assert!(rows[1].contains("predictions equal the in-memory mix's"), "{stdout}");
    for row in rows {
        let ms: f64 = row.split('|').nth(2).and_then(|f| f.trim().split(' ').next()?.parse().ok()).expect(row);
        assert!(ms.is_finite() && ms >= 0.0, "{row}");
    }
}

/// `rush bench recipe` at a toy size (the real one is half an hour, out of CI): the built-in trainer and the PyTorch
/// twin both train on a small emoji dataset, the table has a row per epoch plus the test accuracy, and asking again
/// is answered from the kept results without training.
#[test]
fn bench_recipe_trains_both_sides_and_keeps_their_results() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("emoji-16");
    let rush = env!("CARGO_BIN_EXE_rush");
    let build = Command::new(rush)
        .args(["dataset", "build", "emoji", "--size", "16", "--styles", "noto,fxemoji,twemoji", "--quiet", "--out"])
        .arg(&data)
        .output()
        .expect("run rush dataset build");
    assert!(build.status.success(), "build: {}", String::from_utf8_lossy(&build.stderr));
    let recipe = || {
        Command::new(rush)
            .args(["bench", "recipe", "--model", "baseline_cnn", "--size", "16", "--epochs", "2", "--seeds", "1"])
            .args(["--batch", "64", "--threads", "1", "--data"])
            .arg(&data)
            .arg("--out")
            .arg(tmp.path().join("results"))
            .output()
            .expect("run rush bench recipe")
    };
    let first = recipe();
    let stdout = String::from_utf8_lossy(&first.stdout).to_string();
    let stderr = String::from_utf8_lossy(&first.stderr).to_string();
    assert!(first.status.success(), "{stdout}\n{stderr}");
    let rows: Vec<Vec<String>> = stdout
        .lines()
        .filter(|l| l.starts_with('|'))
        .map(|l| l.trim_matches('|').split('|').map(|c| c.trim().to_string()).collect())
        .collect();
    assert_eq!(rows[0], ["epoch", "rush s0", "rush mean", "PyTorch twin s0", "PyTorch twin mean"], "{stdout}");
    let names: Vec<&str> = rows.iter().skip(2).map(|r| r[0].as_str()).collect();
    assert_eq!(names, ["val 1", "val 2", "test", "s/epoch"], "{stdout}");
    for row in &rows[2..5] {
        for cell in &row[1..] {
            let acc: f64 = cell.parse().unwrap_or_else(|_| panic!("{cell:?} in {stdout}"));
            assert!((0.0..=1.0).contains(&acc), "{stdout}");
        }
    }
    assert!(stdout.contains("rush: mean over 1 seed(s): validation"), "{stdout}");
    assert!(stderr.contains("rush seed 0: val") && stderr.contains("twin seed 0: val"), "{stderr}");
    // Asked again: both results are kept, nothing trains, the same table comes back.
    let again = recipe();
    let stderr2 = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "{stderr2}");
    assert_eq!(String::from_utf8_lossy(&again.stdout), stdout);
    assert_eq!(stderr2.matches("kept result").count(), 2, "{stderr2}");
    // An unknown ablation is named.
    let bad = Command::new(rush).args(["bench", "recipe", "--ablate", "fp64", "--no-twin"]).output().unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("\"fp64\""), "{}", String::from_utf8_lossy(&bad.stderr));
}
