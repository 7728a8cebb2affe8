//! The light CLI (issue 22): `rush`, the CLI and the daemon, never loads libtorch; `rush-train`, which `rush` execs for
//! `train`, `infer`, `doctor` and `bench train|epoch`, does. Checked on the binaries' NEEDED entries (readelf), on a
//! running daemon's and its training child's memory maps, and on a `rush` without `rush-train` beside it.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::{Env, quick_spec, rush_exe, rush_train_exe, wait_for};

/// The shared libraries a binary names (its dynamic section's NEEDED entries).
fn needed(binary: &Path) -> Vec<String> {
    let out = Command::new("readelf").arg("-d").arg(binary).output().expect("run readelf (binutils)");
    assert!(out.status.success(), "readelf -d {}: {}", binary.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| Some(l.split('[').nth(1)?.trim_end_matches(']').to_string()))
        .collect()
}

fn is_libtorch(library: &str) -> bool {
    library.starts_with("libtorch") || library.starts_with("libc10")
}

/// The libtorch and libc10 libraries mapped into a running process.
fn libtorch_mapped(pid: u32) -> Vec<String> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("the process runs");
    let mut found: Vec<String> = maps
        .lines()
        .filter_map(|l| l.split('/').next_back())
        .filter(|name| is_libtorch(name) && name.contains(".so"))
        .map(String::from)
        .collect();
    found.sort();
    found.dedup();
    found
}

#[test]
fn rush_names_no_libtorch_and_rush_train_does() {
    let light = needed(Path::new(rush_exe()));
    assert!(light.iter().any(|l| l.starts_with("libc.so")), "readelf read no NEEDED entry: {light:?}");
    assert!(!light.iter().any(|l| is_libtorch(l)), "rush links libtorch: {light:?}");
    let trainer = needed(&rush_train_exe());
    for library in ["libtorch_cpu.so", "libc10.so"] {
        assert!(trainer.iter().any(|l| l == library), "rush-train does not link {library}: {trainer:?}");
    }
}

#[test]
fn the_daemon_runs_without_libtorch_and_its_training_child_becomes_rush_train_under_the_same_pid() {
    let mut env = Env::new();
    env.start();
    let daemon = env.daemon_pid();
    assert_eq!(libtorch_mapped(daemon), Vec::<String>::new(), "the idle daemon loaded libtorch");
    env.push_synth("synth", 1);
    let spec = env.drop_spec("light.yaml", &quick_spec("synth", 3, ""));
    let verdict = env.verdict(&spec);
    let id = verdict["sessions"][0].as_str().expect("a session").to_string();
    env.wait_state(&id, "running", Duration::from_secs(240));
    // The pid the daemon recorded (and signals, and kills at a restart) is the process that runs rush-train: `rush
    // train DIR` exec'd it, keeping the pid and the command line.
    let pid = wait_for(Duration::from_secs(30), "the child's pid", || env.session(&id)?["pid"].as_i64()) as u32;
    let exe = wait_for(Duration::from_secs(30), "the child to exec rush-train", || {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
        exe.ends_with("rush-train").then_some(exe)
    });
    assert_eq!(exe, rush_train_exe().canonicalize().unwrap());
    let cmdline = String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap()).into_owned();
    let args: Vec<&str> = cmdline.split('\0').collect();
    assert!(args[0].ends_with("/rush") && args[1] == "train", "{args:?}");
    assert!(!libtorch_mapped(pid).is_empty(), "the training child has no libtorch mapped");
    env.wait_state(&id, "succeeded", Duration::from_secs(240));
    assert_eq!(libtorch_mapped(daemon), Vec::<String>::new(), "the daemon loaded libtorch while a session trained");
    assert!(env.ok(&["ps", "-a"]).contains(&id));
}

#[test]
fn without_rush_train_beside_it_rush_says_where_it_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let alone = dir.path().join("rush");
    std::fs::copy(rush_exe(), &alone).unwrap();
    let version = Command::new(&alone).arg("--version").output().unwrap();
    assert!(version.status.success() && String::from_utf8_lossy(&version.stdout).starts_with("rush "));
    for args in [&["train", "/nowhere"][..], &["doctor"], &["infer", "/nowhere", "--epoch", "1", "--out", "/x"]] {
        let out = Command::new(&alone).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "rush {args:?} ran without rush-train");
        let missing =
            format!("`rush {}` runs in {}, which is missing", args[0], dir.path().join("rush-train").display());
        assert!(stderr.contains(&missing), "{stderr}");
    }
}
