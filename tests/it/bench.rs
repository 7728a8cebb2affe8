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
