//! The CLI's frictions a new user hit, each with its fix: rejected specs seen from the CLI (`ps`, `specs`, the
//! `.error` file, "did you mean"), refusals that name what was typed, session shorthands, `stop` of several sessions
//! and of a sweep, confirmation before deleting, the progress line and ETA, a submission that says what it waits for
//! and where it ranks, quiet broken pipes, tidy help and the "no daemon" message. A real daemon, the real binary.

use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::common::{Env, quick_spec, rush_exe, wait_for};

const TRAIN_TIMEOUT: Duration = Duration::from_secs(240);

/// A spec that is accepted but never trains on this daemon (it asks for a GPU the daemon does not have, so the
/// scheduler fails it at once).
fn gpu_spec(dataset: &str) -> String {
    quick_spec(dataset, 1, "").replace("gpus: auto", "gpus: 1")
}

/// The CLI with its stdin on a terminal (a pseudo-terminal) that answers `input`.
fn on_terminal(env: &Env, args: &[&str], input: &str) -> Output {
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two fresh descriptors into the two integers; the rest may be null.
    let ok =
        unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), std::ptr::null()) };
    assert_eq!(ok, 0, "openpty failed");
    // SAFETY: both descriptors were just opened for us and are owned from here on.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let mut terminal = std::fs::File::from(master);
    terminal.write_all(input.as_bytes()).unwrap();
    let out = Command::new(rush_exe())
        .args(args)
        .env("RUSH_HOME", &env.home)
        .env_remove("RUSH_URL")
        .current_dir(env.tmp.path())
        .stdin(Stdio::from(slave))
        .output()
        .expect("run rush");
    drop(terminal);
    out
}

fn text(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_rejected_spec_is_seen_from_the_cli_with_its_error_file_and_a_guess_and_leaves_when_fixed() {
    let mut env = Env::new();
    env.start();
    env.push_synth("synth", 1);

    // A typo: rejected, with a guess at the field meant.
    let bad = env.drop_spec("bad.yaml", "dataset: synth\nmodle: baseline_cnn\n");
    let verdict = env.verdict(&bad);
    let error = verdict["error"].as_str().unwrap().to_string();
    assert!(error.contains("unknown field `modle`") && error.ends_with("did you mean `model`?"), "{error}");
    // ... written beside the file,
    let error_file = env.experiments.join("bad.yaml.error");
    let written = wait_for(Duration::from_secs(10), "bad.yaml.error", || std::fs::read_to_string(&error_file).ok());
    assert_eq!(written.trim(), error);
    // ... shown by `ps` (rejected since the daemon started) and listed by `rush specs`.
    let ps = env.ok(&["ps"]);
    assert!(ps.contains("1 spec file rejected since the daemon started") && ps.contains(&error), "{ps}");
    let specs = env.ok(&["specs"]);
    assert!(specs.contains(&bad.display().to_string()) && specs.contains("did you mean `model`?"), "{specs}");
    let listed = env.json(&["specs", "-j"]);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");

    // A rejected file deleted since needs no fixing: gone from the list.
    let gone = env.drop_spec("gone.yaml", "dataset: synth\nepochs: -1\n");
    assert_eq!(env.verdict(&gone)["status"], "rejected");
    assert!(env.ok(&["specs"]).contains("gone.yaml"));
    std::fs::remove_file(&gone).unwrap();
    assert!(!env.ok(&["specs"]).contains("gone.yaml"), "the deleted file is still listed");
    let addr = std::fs::read_to_string(env.home.join("daemon.addr")).unwrap();
    let page = reqwest::blocking::get(format!("http://{}/specs", addr.trim())).unwrap().text().unwrap();
    assert!(page.contains("bad.yaml") && !page.contains("gone.yaml"), "/specs lists only files still there");

    // Fixed: accepted, its error file removed, no longer listed.
    std::fs::write(&bad, gpu_spec("synth")).unwrap();
    wait_for(Duration::from_secs(30), "the fixed spec to be accepted", || {
        (env.spec_rows(&bad).first()?["status"] == "accepted").then_some(())
    });
    wait_for(Duration::from_secs(10), "bad.yaml.error to go", || (!error_file.exists()).then_some(()));
    assert!(!env.ok(&["specs"]).contains("bad.yaml"));
    assert!(!env.ok(&["ps"]).contains("rejected since"), "nothing left rejected");

    // `rush run` names what was typed, not the file it wrote; its file and error file do not stay behind.
    let e = env.fails(&["run", "-d", "nosuch", "-a", "seed=3"]);
    assert!(e.contains("rush run -d nosuch -a \"seed=3\": field `dataset`") && !e.contains("run-"), "{e}");
    let left: Vec<String> = std::fs::read_dir(&env.experiments)
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().into_string().ok())
        .filter(|n| n.starts_with("run-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // Plain words, and a guess, for overrides too.
    let e = env.fails(&["run", "-d", "synth", "-a", "epochs=two"]);
    assert!(e.contains("a whole number") && !e.contains("u32"), "{e}");
    let e = env.fails(&["run", "-d", "synth", "-a", "modle=resnet18"]);
    assert!(e.contains("did you mean `model`?"), "{e}");

    // `rush ps -a -j | head`: a listing whose reader left ends quietly, not with a panic.
    let mut ps = Command::new(rush_exe())
        .args(["ps", "-a", "-j"])
        .env("RUSH_HOME", &env.home)
        .env_remove("RUSH_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(ps.stdout.take());
    let out = ps.wait_with_output().unwrap();
    let (_, err) = text(&out);
    assert!(out.status.code() != Some(101) && !err.contains("panicked") && !err.contains("Broken pipe"), "{err}");

    // No daemon for this home: the message says where one runs and how to name it.
    let elsewhere = env.tmp.path().join("elsewhere");
    let out = Command::new(rush_exe()).arg("ps").env("RUSH_HOME", &elsewhere).env_remove("RUSH_URL").output().unwrap();
    let (_, err) = text(&out);
    assert!(!out.status.success());
    assert!(err.contains("no rush daemon is running for home") && err.contains("--home"), "{err}");
    assert!(err.contains(&env.home.display().to_string()) && err.contains("RUSH_HOME"), "{err}");
    // An empty RUSH_HOME is unset, not a missing value.
    let out = Command::new(rush_exe()).arg("ps").env("RUSH_HOME", "").current_dir(env.tmp.path()).output().unwrap();
    let (_, err) = text(&out);
    assert!(!err.contains("a value is required") && err.contains("no rush daemon is running for home .rush"), "{err}");
}

#[test]
fn shorthands_stop_several_and_a_sweep_confirm_before_deleting_and_show_progress() {
    let mut env = Env::new();
    env.daemon_env.push(("RUSH_PROGRESS_SECS".into(), "0".into()));
    env.start();
    env.push_synth("synth", 2);
    // A sweep of three points; the first runs, the others wait for the one slot.
    let sweep = quick_spec("synth", 60, "grid: {seed: [1, 2, 3]}\n");
    let first = env.queue("sweep.yaml", &sweep);
    assert_eq!(first, "tester/synth/1");
    env.wait_state(&first, "running", TRAIN_TIMEOUT);

    // The progress line, in the log while the first epoch runs, and the ETA in `ps`.
    let log = wait_for(TRAIN_TIMEOUT, "a progress line", || {
        let log = env.ok(&["logs", "1"]);
        log.lines().any(|l| l.contains(" · step ") && l.contains("img/s") && l.contains("ETA")).then_some(log)
    });
    let line = log.lines().find(|l| l.contains(" · step ")).unwrap();
    assert!(line.starts_with("rush train: epoch 1/60 · step "), "{line}");
    let ps = wait_for(Duration::from_secs(60), "an ETA in ps", || {
        let ps = env.ok(&["ps"]);
        ps.lines().any(|l| l.starts_with(&first) && l.contains(" ETA ")).then_some(ps)
    });
    assert!(ps.lines().next().unwrap().contains("Memo") && !ps.contains("Args"), "one name for the memo: {ps}");
    assert!(env.session(&first).unwrap()["eta"].as_f64().is_some(), "ps -j carries it too");
    wait_for(TRAIN_TIMEOUT, "a checkpoint", || {
        (!env.json(&["model", "ls", "1", "-j"]).as_array()?.is_empty()).then_some(())
    });

    // Shorthands: `N` and `dataset/N` are the daemon's user's.
    assert!(env.ok(&["model", "ls", "synth/1"]).contains("Checkpoint"));
    // A second dataset with a session 1: a bare `1` is now ambiguous and says so.
    env.push_synth("other", 3);
    let other = env.queue("other.yaml", &gpu_spec("other"));
    assert_eq!(other, "tester/other/1");
    let e = env.fails(&["logs", "1"]);
    assert!(e.contains("could be") && e.contains("tester/other/1") && e.contains("tester/synth/1"), "{e}");
    let e = env.fails(&["logs", "9"]);
    assert!(e.contains("no session 9 of user tester"), "{e}");

    // `stop` takes several sessions, and `--sweep` every queued or running point of one.
    let out = env.ok(&["stop", "synth/2", "tester/synth/3"]);
    assert!(out.contains("tester/synth/2 stopped") && out.contains("tester/synth/3 stopped"), "{out}");
    env.queue("late.yaml", &quick_spec("synth", 60, "seed: 9\n"));
    let out = env.ok(&["stop", "--sweep", "synth/2"]);
    assert_eq!(out.trim(), "tester/synth/1 stopped", "only the sweep's point still active: {out}");
    let late = env.session("tester/synth/4").unwrap();
    assert!(late["state"] == "queued" || late["state"] == "running", "another spec's session stays: {late}");
    env.ok(&["stop", "synth/4"]);
    // A sweep sent by `rush run` is a sweep too: `--sweep` stops its points.
    let pair = env.tmp.path().join("pair.yaml");
    std::fs::write(&pair, quick_spec("synth", 60, "grid: {seed: [1, 2]}\n")).unwrap();
    let queued = env.ok(&["run", "-d", "synth", "-e", pair.to_str().unwrap()]);
    assert_eq!(queued.split_whitespace().collect::<Vec<_>>(), ["tester/synth/5", "tester/synth/6"]);
    let out = env.ok(&["stop", "--sweep", "synth/6"]);
    assert!(out.contains("tester/synth/5 stopped") && out.contains("tester/synth/6 stopped"), "{out}");

    // Deleting asks first: refused without a terminal or -y, nothing deleted; "n" keeps, "y" removes.
    let e = env.fails(&["rm", "synth/2"]);
    assert!(e.contains("pass -y to confirm") && env.session("tester/synth/2").is_some(), "{e}");
    let e = env.fails(&["model", "rm", "synth/1", "last"]);
    assert!(e.contains("pass -y to confirm"), "{e}");
    assert!(!env.json(&["model", "ls", "synth/1", "-j"]).as_array().unwrap().is_empty(), "nothing deleted");
    let out = on_terminal(&env, &["rm", "synth/2"], "n\n");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success() && stderr.contains("Remove tester/synth/2") && stdout.contains("kept"), "{stderr}");
    assert!(env.session("tester/synth/2").is_some());
    let out = on_terminal(&env, &["rm", "synth/2"], "y\n");
    assert!(out.status.success() && text(&out).0.contains("tester/synth/2 removed"), "{:?}", text(&out));
    assert!(env.session("tester/synth/2").is_none());
    assert!(env.ok(&["rm", "-y", "synth/3"]).contains("tester/synth/3 removed"));
}

#[test]
fn a_submission_says_what_it_waits_for_ps_never_calls_a_session_next_and_it_ranks() {
    let mut env = Env::new();
    env.start();
    env.push_synth("synth", 4);
    let long = env.queue("long.yaml", &quick_spec("synth", 500, "checkpoints: {keep_best: 1, keep_last: true}\n"));
    env.wait_state(&long, "running", TRAIN_TIMEOUT);
    wait_for(TRAIN_TIMEOUT, "a checkpoint", || {
        (!env.json(&["model", "ls", "1", "-j"]).as_array()?.is_empty()).then_some(())
    });
    // Its inference needs the slot the session holds: it waits, and says for what.
    let mut submit = Command::new(rush_exe())
        .args(["submit", "1", "last"])
        .env("RUSH_HOME", &env.home)
        .env_remove("RUSH_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let waiting = wait_for(Duration::from_secs(60), "the submission to wait for the slot", || {
        let info = env.json(&["submissions", "-j"]);
        let id = info[0]["id"].as_i64()?;
        let addr = std::fs::read_to_string(env.home.join("daemon.addr")).ok()?;
        let one: serde_json::Value =
            reqwest::blocking::get(format!("http://{}/api/submissions/{id}", addr.trim())).ok()?.json().ok()?;
        one["waiting_for"].as_str().map(str::to_string)
    });
    assert_eq!(waiting, format!("a slot: cpu0 runs {long}"));
    // A session queued now is not next: the submission is.
    let next = env.queue("next.yaml", &quick_spec("synth", 60, "seed: 7\n"));
    let ps = env.ok(&["ps"]);
    let row = ps.lines().find(|l| l.starts_with(&next)).unwrap_or_default().to_string();
    assert!(row.contains("queued #2") && !ps.contains("queued #1"), "{ps}");
    assert!(ps.contains("waits for a slot"), "{ps}");
    // The slot frees: the submission runs before the queued session, and says where it ranks.
    env.ok(&["stop", &long]);
    wait_for(Duration::from_secs(180), "the submission's score", || submit.try_wait().ok().flatten());
    let out = submit.wait_with_output().unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("waiting for a slot: cpu0 runs {long}")), "{stderr}");
    assert!(stdout.contains("rank 1 of 1 on the board of synth: the best public score so far"), "{stdout}");
    assert!(stdout.contains("9 of 10 ranked submissions left today on synth"), "{stdout}");
    env.wait_state(&next, "running", TRAIN_TIMEOUT);
    env.ok(&["stop", &next]);
}

#[test]
fn a_listing_piped_into_a_reader_that_left_ends_quietly() {
    let mut child = Command::new(rush_exe())
        .args(["spec", "schema"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The reader goes away before a byte is written, as `| head -c0` would.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "{stderr}");
    assert_ne!(out.status.code(), Some(101), "a panic's exit status");
}

#[test]
fn help_is_tidy_and_hidden_commands_stay_hidden() {
    let run = |args: &[&str]| {
        let out = Command::new(rush_exe()).args(args).env_remove("RUSH_HOME").output().unwrap();
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    };
    let top = run(&["--help"]);
    assert!(top.contains("--home <DIR>") && !top.contains("infer"), "{top}");
    let bare = run(&[]);
    assert!(!bare.contains("infer"), "{bare}");
    let sub = run(&["run", "--help"]);
    assert!(!sub.contains("--home <") && !sub.contains("--url <") && sub.contains("rush --help"), "{sub}");
    let typo = run(&["inf"]);
    assert!(!typo.contains("infer"), "a hidden command suggested: {typo}");
    assert!(run(&["infer", "--help"]).contains("--epoch"), "rush infer itself still parses");
}
