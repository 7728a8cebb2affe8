//! rush-train's own integration tests, on the real binary. This target is named `it` like the root package's, so
//! `cargo test --test it` at the root builds the `rush-train` binary (which the root's tests reach through `rush`)
//! along with `rush`, before any test runs.

use std::process::Command;

fn rush_train() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rush-train"))
}

#[test]
fn rush_train_runs_the_commands_that_need_libtorch_and_refuses_the_others() {
    let doctor = rush_train().args(["doctor", "-j"]).output().unwrap();
    assert!(doctor.status.success(), "{}", String::from_utf8_lossy(&doctor.stderr));
    let report: serde_json::Value = serde_json::from_slice(&doctor.stdout).expect("doctor -j prints JSON");
    assert!(report["libtorch_version"].as_str().is_some_and(|v| v.starts_with("2.")), "{report}");

    for args in [&["ps"][..], &["daemon"], &["bench", "decode", "--images", "/nowhere"]] {
        let out = rush_train().args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "rush-train {args:?} ran");
        assert!(
            stderr.contains("rush-train runs only the commands that need libtorch") && stderr.contains("with rush")
        );
    }
    // The command line is `rush`'s: help and bad arguments read the same as there.
    let bad = rush_train().args(["train"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2), "clap's usage error");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("<SESSION_DIR>"));
}
