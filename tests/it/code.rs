//! Code sessions end to end (`rush run -d` in a folder with a `main.py`): a real daemon runs the user's Python in the
//! bubblewrap sandbox with the `nsml` module, on the CPU and tiny data. The AI RUSH-style example project
//! (`examples/airush-baseline/`) trains, is listed, charted, submitted, ensembled with a built-in model and forked;
//! a probe script (`code/probe.py`) checks what the sandbox hides, stops, crashes and bad `infer` output.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::common::{Env, quick_spec, rush_exe, wait_for};

/// `rush ARGS` run in `dir` (the code folder), against the env's daemon.
fn cli_in(env: &Env, dir: &Path, args: &[&str]) -> Output {
    Command::new(rush_exe())
        .args(args)
        .env("RUSH_HOME", &env.home)
        .env_remove("RUSH_URL")
        .current_dir(dir)
        .output()
        .expect("run rush")
}

fn ok_in(env: &Env, dir: &Path, args: &[&str]) -> String {
    let out = cli_in(env, dir, args);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "rush {}: {stderr}{stdout}", args.join(" "));
    stdout.trim().to_string()
}

/// Copies a folder of the repository (or a test file) into the env as a code folder.
fn project(env: &Env, name: &str, from: &[(&str, PathBuf)]) -> PathBuf {
    let dir = env.tmp.path().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for (rel, src) in from {
        std::fs::copy(src, dir.join(rel)).unwrap();
    }
    dir
}

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn example(env: &Env) -> PathBuf {
    let files = ["main.py", "model.py", "dataloader.py", "requirements.txt"];
    let from: Vec<(&str, PathBuf)> =
        files.iter().map(|f| (*f, repo(&format!("examples/airush-baseline/{f}")))).collect();
    project(env, "baseline", &from)
}

/// A daemon with a tiny synthetic dataset (`synth`, of `seed`) and the probe script as a code folder's `main.py`.
fn probe_env(seed: u64) -> (Env, PathBuf) {
    let mut env = Env::new();
    env.start();
    env.push_synth("synth", seed);
    let code = project(&env, "probe", &[("main.py", repo("tests/it/code/probe.py"))]);
    (env, code)
}

fn log(env: &Env, id: &str) -> String {
    std::fs::read_to_string(env.session_dir(id).join("train.log")).unwrap_or_default()
}

fn metric(env: &Env, id: &str, name: &str) -> Vec<(i64, f64)> {
    let addr = std::fs::read_to_string(env.home.join("daemon.addr")).unwrap();
    let url = format!("http://{}/api/sessions/{id}/metrics?name={name}", addr.trim());
    let rows: serde_json::Value = reqwest::blocking::get(url).unwrap().json().unwrap();
    rows.as_array().unwrap().iter().map(|r| (r["step"].as_i64().unwrap(), r["value"].as_f64().unwrap())).collect()
}

#[test]
fn the_airush_style_example_trains_is_listed_charted_submitted_ensembled_and_forked() {
    let mut env = Env::new();
    env.start();
    env.push_synth("synth", 3);
    let code = example(&env);
    // What an ignore file names stays home: the upload is the code, not the data beside it.
    std::fs::create_dir_all(code.join("data")).unwrap();
    std::fs::write(code.join("data/cache.bin"), vec![7u8; 4096]).unwrap();
    std::fs::write(code.join(".nsmlignore"), "data/\n").unwrap();
    let id =
        ok_in(&env, &code, &["run", "-d", "synth", "-a", "--epochs 4 --input_size 32 --num_workers 0", "-m", "mine"]);
    assert_eq!(id, "tester/synth/1");
    // Editing the folder after queueing changes nothing of the session's copy.
    std::fs::write(code.join("main.py"), "raise SystemExit('edited after queueing')\n").unwrap();
    let done = env.wait_state(&id, "succeeded", Duration::from_secs(600));
    let session_code = env.session_dir(&id).join("code");
    assert!(session_code.join("model.py").is_file() && !session_code.join("data").exists());
    let text = log(&env, &id);
    assert!(text.contains("(sandboxed by bubblewrap)") && text.contains("epoch 4/4"), "{text}");
    // It learned: 8 classes (chance 0.125).
    let best = done["best_val_acc"].as_f64().unwrap();
    assert!(best >= 0.3, "best validation accuracy {best}:\n{text}");

    // ps: how many epochs the code trains is its own business (no "4/30" from a trainer default); the summary is the
    // latest `nsml.report(summary=True, ...)`.
    let ps = env.ok(&["ps", "-a"]);
    assert!(ps.contains("epoch 4 epoch_total=4 train__Accuracy=") && !ps.contains("epoch 4/"), "{ps}");

    // model ls lists its checkpoints with their validation accuracy.
    let listed = env.json(&["model", "ls", &id, "-j"]);
    let epochs: Vec<i64> = listed.as_array().unwrap().iter().map(|c| c["epoch"].as_i64().unwrap()).collect();
    assert_eq!(epochs.len(), 3, "keep_best 3 of the 4 saved: {listed}");
    assert!(env.session_dir(&id).join("checkpoints").read_dir().unwrap().count() == 3, "retention deleted folders");
    let table = env.ok(&["model", "ls", &id]);
    assert!(table.contains("valid__Accuracy=") && table.contains("(best by valid__Accuracy)"), "{table}");
    assert!(listed[0]["summary"].as_str().unwrap().contains("train__Loss="), "{listed}");

    // The dashboard's series: the names the code reported, and the rush metrics they stand for.
    let loss = metric(&env, &id, "train__Loss");
    assert_eq!(loss.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [1, 2, 3, 4]);
    assert!(loss[3].1 < loss[0].1, "the training loss fell: {loss:?}");
    assert_eq!(metric(&env, &id, "val_acc").len(), 4);
    // The session page draws them under the reported names, NSML's `train__Loss` shown as `train/Loss`, and the
    // other reported metrics in a chart of their own.
    let addr = std::fs::read_to_string(env.home.join("daemon.addr")).unwrap();
    let page = reqwest::blocking::get(format!("http://{}/sessions/{id}", addr.trim())).unwrap().text().unwrap();
    for label in ["train/Loss", "valid/Loss", "train/Accuracy", "valid/Accuracy", "Reported", "epoch_total"] {
        assert!(page.contains(label), "{label} is not on the session page");
    }

    // Submitted: a dry run, then on the board.
    let dry = env.ok(&["submit", "-t", &id, "best"]);
    assert!(dry.contains("dry run") && dry.contains("accuracy"), "{dry}");
    let ranked = env.ok(&["submit", &id, "best"]);
    assert!(ranked.contains("public score"), "{ranked}");
    let score: f64 = ranked.split("public score ").nth(1).unwrap()[..6].parse().unwrap();
    assert!(score > 0.125, "better than chance on the test set: {ranked}");

    // An ensemble with a built-in model's checkpoint.
    let builtin = env.queue("builtin.yaml", &quick_spec("synth", 1, ""));
    env.wait_state(&builtin, "succeeded", Duration::from_secs(600));
    let mixed = env.ok(&["submit", &format!("{id}:best"), &format!("{builtin}:1")]);
    assert!(mixed.contains("public score"), "{mixed}");
    let board = env.ok(&["dataset", "board", "synth"]);
    assert!(board.contains(&format!("{id}, {builtin}")) || board.contains(&builtin), "{board}");

    // A fork starts the copied code with the parent's checkpoint loaded through the bound load.
    let forked = env.ok(&["fork", &id, "-c", "best", "-m", "from best"]);
    let fork_id = forked.split_whitespace().find(|w| w.starts_with("tester/synth/")).unwrap().to_string();
    env.wait_state(&fork_id, "succeeded", Duration::from_secs(600));
    let text = log(&env, &fork_id);
    assert!(text.contains("bound load() gets") && text.contains("model loaded from /init"), "{text}");
}

/// Every process whose command line is `sleep 313.25` (the probe's grandchild).
fn grandchildren() -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if cmdline == b"sleep\x00313.25\x00" && crate::common::alive(pid) {
            out.push(pid);
        }
    }
    out
}

#[test]
fn the_sandbox_hides_the_home_a_stop_leaves_no_orphan_and_a_bad_infer_fails_its_submission() {
    let (env, code) = probe_env(4);
    let first = ok_in(&env, &code, &["run", "-d", "synth", "-a", "--epochs 5 --infer bad --no-valid"]);
    env.wait_state(&first, "succeeded", Duration::from_secs(300));
    // No validation metric reported: the latest checkpoints are kept, the latest is best, and model ls says why.
    let listed = env.json(&["model", "ls", &first, "-j"]);
    let epochs: Vec<i64> = listed.as_array().unwrap().iter().map(|c| c["epoch"].as_i64().unwrap()).collect();
    assert_eq!(epochs, [3, 4, 5], "{listed}");
    let table = env.ok(&["model", "ls", &first]);
    assert!(table.contains("no validation metric reported: the latest is best"), "{table}");
    assert!(table.contains("train__Loss=0.2000 ") && !table.contains("val_acc="), "epoch 5's report: {table}");

    // What the code must not reach: the labels, the database, the first session's files, by their host paths and by
    // walking the tree.
    let look = [
        env.home.join("labels").display().to_string(),
        env.home.join("rush.db").display().to_string(),
        env.session_dir(&first).join("checkpoints/5/state.json").display().to_string(),
        env.home.display().to_string(),
    ]
    .join(",");
    // It may load the first session's checkpoint (the same user's), copied in for it, and no other user's.
    let args = format!("--epochs 50 --sleep 1 --grandchild --look {look} --load-from 1:5,someone/synth/1:1");
    let second = ok_in(&env, &code, &["run", "-d", "synth", "-a", &args]);
    env.wait_state(&second, "running", Duration::from_secs(120));
    let visible = env.session_dir(&second).join("visible.json");
    let seen: serde_json::Value = wait_for(Duration::from_secs(120), "visible.json", || {
        serde_json::from_str(&std::fs::read_to_string(&visible).ok()?).ok()
    });
    assert_eq!(seen["visible"], serde_json::json!([]), "the sandbox showed the home: {seen}");
    // The files rush trusts stay as rush wrote them, and a link passed off as a checkpoint is not recorded.
    assert_eq!(seen["tampered"], serde_json::json!([]), "{seen}");
    let spec = std::fs::read_to_string(env.session_dir(&second).join("spec.yaml")).unwrap();
    assert!(!spec.contains("sandbox: false"), "{spec}");
    assert!(env.home.join("rush.db").is_file(), "the probe looked for files that exist");

    let text = log(&env, &second);
    assert!(text.contains("probe: loaded /session/.rush/loaded/tester-synth-1-5"), "{text}");
    assert!(text.contains("load someone/synth/1:1 failed") && text.contains("not one of your sessions"), "{text}");

    // Stop: the script and the grandchild it started in a session of its own are gone.
    wait_for(Duration::from_secs(60), "the grandchild", || (!grandchildren().is_empty()).then_some(()));
    env.ok(&["stop", &second]);
    env.wait_state(&second, "stopped", Duration::from_secs(60));
    let epochs: Vec<i64> = env
        .json(&["model", "ls", &second, "-j"])
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["epoch"].as_i64().unwrap())
        .collect();
    assert!(!epochs.contains(&77), "{epochs:?}");
    assert!(
        log(&env, &second).contains("ignored an event line from the code: checkpoint 77: no folder"),
        "{}",
        log(&env, &second)
    );
    wait_for(Duration::from_secs(20), "no orphan", || grandchildren().is_empty().then_some(()));

    // A bad shape from infer fails the submission, saying what it got.
    let out = env.cli(&["submit", &first, "best"]);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "{text}");
    assert!(text.contains(&format!("{first}:5")), "best is the latest: {text}");
    assert!(text.contains("infer returned shape (60, 7) dtype float64 for 60 test images"), "{text}");
}

#[test]
fn a_killed_daemon_resumes_a_code_session_from_its_last_checkpoint_through_load() {
    let (mut env, code) = probe_env(5);
    let id = ok_in(&env, &code, &["run", "-d", "synth", "-a", "--epochs 6 --sleep 1"]);
    let events = env.session_dir(&id).join("events.jsonl");
    wait_for(Duration::from_secs(120), "a checkpoint", || {
        std::fs::read_to_string(&events).ok().filter(|t| t.contains("\"checkpoint\"")).map(|_| ())
    });
    env.kill_daemon();
    env.start();
    env.wait_state(&id, "succeeded", Duration::from_secs(300));
    let text = log(&env, &id);
    assert!(text.contains("bound load() gets /session/checkpoints/"), "resumed through load: {text}");
    assert!(text.contains("probe: loaded /session/checkpoints/"), "{text}");

    // `resume: false` in a spec file reruns from the start instead.
    let spec = format!(
        "dataset: synth\nentry: main.py\ncode: {}\nargs: --epochs 6 --sleep 1\nresume: false\n",
        code.display()
    );
    let again = env.queue("fresh.yaml", &spec);
    let events = env.session_dir(&again).join("events.jsonl");
    wait_for(Duration::from_secs(120), "a checkpoint", || {
        std::fs::read_to_string(&events).ok().filter(|t| t.contains("\"checkpoint\"")).map(|_| ())
    });
    env.kill_daemon();
    env.start();
    let state = wait_for(Duration::from_secs(120), "the rerun's end", || {
        let s = env.session(&again)?;
        let state = s["state"].as_str()?.to_string();
        ["succeeded", "failed", "interrupted"].contains(&state.as_str()).then_some(state)
    });
    let text = log(&env, &again);
    assert!(!text.contains("bound load() gets"), "no resume with resume: false: {state}\n{text}");
}

#[test]
fn code_specs_refuse_built_in_fields_and_bad_code_folders() {
    let (env, code) = probe_env(6);
    let refused = |name: &str, yaml: String| {
        let verdict = env.verdict(&env.drop_spec(name, &yaml));
        verdict["error"].as_str().unwrap_or_default().to_string()
    };
    let e =
        refused("model.yaml", format!("dataset: synth\nentry: main.py\ncode: {}\nmodel: resnet18\n", code.display()));
    assert!(e.contains("field `model`: only the built-in trainer uses `model`"), "{e}");
    let e = refused("missing.yaml", "dataset: synth\nentry: main.py\ncode: nowhere\n".into());
    assert!(e.contains("field `code`") && e.contains("nowhere"), "{e}");
    let e = refused("noentry.yaml", format!("dataset: synth\nentry: train.py\ncode: {}\n", code.display()));
    assert!(e.contains("train.py is not in the uploaded code folder"), "{e}");
    let e = refused("stray.yaml", "dataset: synth\nargs: --epochs 3\n".into());
    assert!(e.contains("field `args`: belongs to a code session"), "{e}");
    // -e names another entry file; one that is not there is refused before anything is sent.
    let out = cli_in(&env, &code, &["run", "-d", "synth", "-e", "train.py"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("-e train.py: no such file"), "{out:?}");
    // Without sandbox: off, a daemon where bubblewrap cannot run refuses code sessions (here it can: doctor says so).
    let doctor = env.ok(&["doctor"]);
    assert!(doctor.contains("code sessions: sandboxed by bubblewrap"), "{doctor}");
}

#[test]
fn the_nsml_module_passes_its_own_self_test() {
    // The module's contract as the supervisor uses it (events on a pipe, atomic saves, test mode's shapes):
    // src/code/test_nsml.py, run by the Python code sessions get.
    let python = std::env::var("RUSH_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(python).arg(repo("src/code/test_nsml.py")).output().expect("run python");
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

/// A wheel of one pure-Python module, `rushprobe` (its `VALUE` is 41), written with Python's zipfile as pip would
/// build it: the environment test installs it from a path, with no index needed.
fn probe_wheel(dir: &Path) -> PathBuf {
    let path = dir.join("rushprobe-0.1-py3-none-any.whl");
    let script = r#"
import sys, zipfile
files = {
    "rushprobe/__init__.py": "VALUE = 41\n",
    "rushprobe-0.1.dist-info/METADATA": "Metadata-Version: 2.1\nName: rushprobe\nVersion: 0.1\n",
    "rushprobe-0.1.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: rush-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}
record = "".join(f"{name},,\n" for name in files) + "rushprobe-0.1.dist-info/RECORD,,\n"
with zipfile.ZipFile(sys.argv[1], "w") as z:
    for name, text in files.items():
        z.writestr(name, text)
    z.writestr("rushprobe-0.1.dist-info/RECORD", record)
"#;
    let python = std::env::var("RUSH_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(python).args(["-c", script]).arg(&path).output().expect("run python");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    path
}

#[test]
fn a_requirements_file_builds_an_environment_once_and_a_failed_install_fails_the_session() {
    let (env, code) = probe_env(7);
    std::fs::create_dir_all(code.join("wheels")).unwrap();
    probe_wheel(&code.join("wheels"));
    std::fs::write(
        code.join("requirements.txt"),
        "# what the probe imports beyond the daemon's venv\n./wheels/rushprobe-0.1-py3-none-any.whl\n",
    )
    .unwrap();
    let main = std::fs::read_to_string(code.join("main.py")).unwrap();
    std::fs::write(
        code.join("main.py"),
        format!("import rushprobe\nprint('probe: rushprobe', rushprobe.VALUE)\n{main}"),
    )
    .unwrap();
    let first = ok_in(&env, &code, &["run", "-d", "synth", "-a", "--epochs 1"]);
    env.wait_state(&first, "succeeded", Duration::from_secs(300));
    let text = log(&env, &first);
    assert!(
        text.contains("[rush] building the environment for requirements.txt")
            && text.contains("installing ./wheels/rushprobe-0.1"),
        "{text}"
    );
    assert!(text.contains("probe: rushprobe 41"), "{text}");
    // The same requirements: the environment is reused.
    let second = ok_in(&env, &code, &["run", "-d", "synth", "-a", "--epochs 1"]);
    env.wait_state(&second, "succeeded", Duration::from_secs(300));
    let text = log(&env, &second);
    assert!(text.contains("(cached)") && text.contains("probe: rushprobe 41"), "{text}");

    // A requirement that cannot be installed fails the session with the installer's message.
    std::fs::write(code.join("requirements.txt"), "./wheels/missing-0.1-py3-none-any.whl\n").unwrap();
    let third = ok_in(&env, &code, &["run", "-d", "synth", "-a", "--epochs 1"]);
    let failed = wait_for(Duration::from_secs(300), "the failed install", || {
        env.session(&third).filter(|s| s["state"] == "failed")
    });
    let reason = failed["exit_reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("installing") && reason.contains("requirements.txt failed") && reason.contains("missing-0.1"),
        "{reason}"
    );
}

#[test]
fn without_bubblewrap_code_sessions_are_refused_unless_the_config_says_sandbox_off() {
    // A daemon whose PATH has no bwrap: code sessions cannot be sandboxed there.
    let mut env = Env::new();
    env.daemon_env.push(("PATH".into(), "/nonexistent".into()));
    env.start();
    env.push_synth("synth", 8);
    let code = project(&env, "probe", &[("main.py", repo("tests/it/code/probe.py"))]);
    let out = cli_in(&env, &code, &["run", "-d", "synth", "-a", "--epochs 1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("code sessions are refused here") && stderr.contains("sandbox: off"), "{stderr}");

    // `sandbox: off` runs it, unsandboxed, and says so.
    let mut env = Env::new();
    env.daemon_env.push(("PATH".into(), "/nonexistent".into()));
    let config = env.tmp.path().join("rush.yaml");
    std::fs::write(&config, "sandbox: off\n").unwrap();
    env.start_with(&["--config", config.to_str().unwrap()]);
    env.push_synth("synth", 8);
    let code = project(&env, "probe", &[("main.py", repo("tests/it/code/probe.py"))]);
    let id = ok_in(&env, &code, &["run", "-d", "synth", "-a", "--epochs 1"]);
    env.wait_state(&id, "succeeded", Duration::from_secs(300));
    assert!(log(&env, &id).contains("(sandbox: off)"), "{}", log(&env, &id));
}
