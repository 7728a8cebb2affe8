//! `scripts/gpu-accept.sh`, the product's acceptance on a GPU in one command, run on the CPU at toy sizes (`DEVICE=cpu`)
//! so that the script is known to work before a GPU machine runs it: every check's row passes (the GPU-only ones say
//! `skipped (cpu)`), its log lands under `$OUT`, it leaves no temporary folder behind, and a failed check makes it exit
//! non-zero with the table still printed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("gpu-accept").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The script on the CPU at the toy sizes, with `OUT` and `TMPDIR` in `dir`, plus `extra` knobs.
fn accept(dir: &Path, extra: &[(&str, &str)]) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/gpu-accept.sh");
    let python = std::env::var("RUSH_PYTHON").unwrap_or_else(|_| "python3".into());
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    Command::new("bash")
        .arg(&script)
        .arg(env!("CARGO_BIN_EXE_rush"))
        .env("RUSH_PYTHON", python)
        .env("OUT", dir)
        .env("TMPDIR", &tmp)
        .env("CUDA_VISIBLE_DEVICES", "")
        .envs([("DEVICE", "cpu"), ("MODEL", "baseline_cnn"), ("SIZE", "32"), ("EPOCHS", "2"), ("BATCH", "64")])
        .envs([("STYLES", "noto,fxemoji,twemoji"), ("VAL_FLOOR", "0.02"), ("PRECISION_TOLERANCE", "0.02")])
        .envs([("OOM_MODEL", "baseline_cnn"), ("OOM_SIZE", "128"), ("OOM_BATCH", "1024"), ("ADDRESS_SPACE_GIB", "5")])
        // limits for 2 shared cores
        .envs([("BUDGET", "400"), ("TRAIN_RUN", "200"), ("STATS_SAMPLES", "5")])
        .env_remove("RUSH_HOME")
        .env_remove("RUSH_URL")
        .env_remove("RUSH_TOKEN")
        .env_remove("RUSH_IMAGE_CACHE")
        .env_remove("RUSH_DEVICE_DATA")
        .env_remove("TARBALLS")
        .env_remove("KEEP")
        .envs(extra.iter().copied())
        .output()
        .unwrap()
}

/// The table's rows (after its header and rule), as cells.
fn table(stdout: &str) -> Vec<Vec<String>> {
    let lines: Vec<&str> = stdout.lines().filter(|l| l.starts_with('|')).collect();
    assert_eq!(lines.first().copied(), Some("| check | result | figure | pass |"), "{stdout}");
    lines[2..].iter().map(|l| l.trim_matches('|').split('|').map(|c| c.trim().to_string()).collect()).collect()
}

/// What the script left in `tmp` (its work folder, with the daemon's home, must be gone).
fn left_behind(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir.join("tmp"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn the_gpu_acceptance_script_passes_on_the_cpu_at_toy_sizes() {
    let dir = scratch("pass");
    let started = Instant::now();
    let out = accept(&dir, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("scripts/gpu-accept.sh on the CPU took {:.0} s:\n{stdout}", started.elapsed().as_secs_f64());
    let log = std::fs::read_to_string(dir.join("gpu-accept/gpu-accept.log")).unwrap_or_default();
    assert!(out.status.success(), "gpu-accept.sh failed:\n{stdout}\n--- stderr ---\n{stderr}\n--- log ---\n{log}");
    let rows = table(&stdout);
    let checks: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(
        checks,
        [
            "doctor",
            "daemon",
            "GPU statistics",
            "training",
            "out of memory",
            "bf16 vs fp32",
            "submit best checkpoint",
            "submit ensemble of 2",
            "ensemble auto --submit"
        ],
        "{stdout}"
    );
    for row in &rows {
        assert_eq!(row.len(), 4, "{row:?}");
        let gpu_only = row[0] == "doctor" || row[0] == "GPU statistics";
        if gpu_only {
            assert!(row[3] == "SKIP" && row[1].starts_with("skipped (cpu)"), "{row:?}");
        } else {
            assert_eq!(row[3], "PASS", "{row:?}\n{log}");
        }
        // Each row was printed on stderr as its check ended, before the table.
        assert!(stderr.contains(&format!("[gpu-accept] | {} |", row[0])), "{row:?} not on stderr:\n{stderr}");
    }
    let cell = |check: &str, col: usize| rows.iter().find(|r| r[0] == check).map(|r| r[col].clone()).unwrap();
    assert!(cell("doctor", 2).starts_with("libtorch 2.11.0"), "{stdout}");
    assert!(cell("daemon", 1).starts_with("slot cpu0; emoji: 2154 train images, 187 classes, 1558 test"), "{stdout}");
    assert!(cell("GPU statistics", 1).contains("/system and /metrics answered"), "{stdout}");
    let training = cell("training", 1);
    assert!(training.contains("best val_acc") && training.contains("'on cpu ('"), "{training}");
    let figure = cell("training", 2);
    let rate: f64 = figure.split_whitespace().next().and_then(|f| f.parse().ok()).unwrap_or(0.0);
    assert!(rate > 0.0 && figure.contains("img/s, data_wait_s "), "{figure}");
    assert!(cell("out of memory", 1).contains(": out of memory with batch_size 1024 at image_size 128"), "{stdout}");
    assert!(cell("out of memory", 2).contains("started on cpu0"), "{stdout}");
    assert!(cell("bf16 vs fp32", 1).starts_with("final val_acc fp32 "), "{stdout}");
    for (n, check) in ["submit best checkpoint", "submit ensemble of 2", "ensemble auto --submit"].iter().enumerate() {
        let result = cell(check, 1);
        assert!(result.starts_with(&format!("submission {}: public score ", n + 1)), "{result}");
        assert!(cell(check, 2).ends_with(" s from submit to the board"), "{stdout}");
    }
    // The log under $OUT: every command, the rows and the table; the daemon's log and each session's train.log.
    assert!(log.contains("$ rush submit ") && log.contains("| check | result | figure | pass |"), "{log}");
    let table_file = std::fs::read_to_string(dir.join("gpu-accept/table.md")).unwrap();
    assert!(table_file.contains("| training |") && table_file.contains("0 failed"), "{table_file}");
    assert!(std::fs::read_to_string(dir.join("gpu-accept/daemon.log")).unwrap().contains("rush daemon stopped"));
    for n in 1..=3 {
        let train_log = std::fs::read_to_string(dir.join(format!("gpu-accept/train-emoji-{n}.log"))).unwrap();
        assert!(train_log.contains(&format!("[rush] accept/emoji/{n} ended")), "{train_log}");
    }
    assert!(left_behind(&dir).is_empty(), "left behind: {:?}", left_behind(&dir));
}

#[test]
fn a_failed_check_still_prints_the_table_and_exits_non_zero() {
    let dir = scratch("fail");
    let empty = dir.join("no-tarballs");
    std::fs::create_dir_all(&empty).unwrap();
    let out = accept(&dir, &[("TARBALLS", empty.to_str().unwrap())]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let rows = table(&stdout);
    assert_eq!(rows.len(), 2, "{stdout}");
    assert_eq!((rows[0][0].as_str(), rows[0][3].as_str()), ("doctor", "SKIP"), "{stdout}");
    assert_eq!((rows[1][0].as_str(), rows[1][3].as_str()), ("daemon", "FAIL"), "{stdout}");
    assert!(rows[1][1].contains("rush dataset build emoji failed"), "{stdout}");
    assert!(stdout.contains("1 failed"), "{stdout}");
    let log = std::fs::read_to_string(dir.join("gpu-accept/gpu-accept.log")).unwrap();
    assert!(log.contains("emojibase-data-17.0.0.tgz"), "the builder's reason is in the log: {log}");
    assert!(left_behind(&dir).is_empty(), "left behind: {:?}", left_behind(&dir));
}
