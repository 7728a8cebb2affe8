//! The daemon end to end: a real `rush daemon` on an ephemeral port, real `rush train` children on the CPU, the real
//! SQLite file and the CLI, on tiny synthetic datasets in temporary homes.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::common::{Env, alive, quick_spec, rush_exe, wait_for};

const TRAIN_TIMEOUT: Duration = Duration::from_secs(240);

fn ids(stdout: &str) -> Vec<String> {
    stdout.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect()
}

/// Files in a session's checkpoints folder with this suffix, by epoch.
fn epochs_on_disk(env: &Env, id: &str, suffix: &str) -> BTreeSet<i64> {
    let dir = env.session_dir(id).join("checkpoints");
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(suffix)?.parse().ok()))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_dropped_spec_trains_to_success_with_metrics_checkpoints_retention_and_the_cli() {
    let mut env = Env::new();
    env.start();
    // dataset push: copied under the home, test labels moved to the label store.
    let src = env.push_synth("synth", 1);
    let registered = env.home.join("datasets/synth");
    assert!(registered.join("train/train_data/train_with_valid_tags.csv").is_file());
    assert!(!registered.join("test/test_labels.csv").exists(), "labels left in the dataset folder");
    assert!(env.home.join("labels/synth/test_labels.csv").is_file());
    assert!(src.join("test/test_labels.csv").is_file(), "push copies; the source keeps its files");
    let datasets = env.json(&["dataset", "ls", "-j"]);
    assert_eq!(datasets[0]["name"], "synth");
    assert_eq!(datasets[0]["train_images"], 300);
    assert!(env.ok(&["dataset", "ls"]).contains("synth"));

    // Drop a spec: queued, then trained to success.
    let dropped = Instant::now();
    let spec = env.drop_spec("first.yaml", &quick_spec("synth", 3, "checkpoints: {keep_best: 1, keep_last: true}\n"));
    let verdict = env.verdict(&spec);
    println!("figure: spec file to queued session in {:.0} ms", dropped.elapsed().as_secs_f64() * 1e3);
    assert_eq!(verdict["status"], "accepted", "{verdict}");
    let id = verdict["sessions"][0].as_str().unwrap().to_string();
    assert_eq!(id, "tester/synth/1");

    // While it runs: the child's command line and environment name neither the database nor the label store.
    let running = env.wait_state(&id, "running", TRAIN_TIMEOUT);
    assert_eq!(running["device"], "cpu");
    let pid = wait_for(Duration::from_secs(30), "the child's pid", || env.session(&id)?["pid"].as_i64());
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("the child runs");
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("the child runs");
    for (what, bytes) in [("command line", &cmdline), ("environment", &environ)] {
        let text = String::from_utf8_lossy(bytes);
        assert!(!text.contains("rush.db") && !text.contains("labels"), "the child's {what} names them: {text}");
    }
    assert!(!String::from_utf8_lossy(&environ).contains("RUSH_HOME"), "the child inherited RUSH_HOME");
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(cmdline.contains(" train ") && cmdline.contains("--device cpu"), "{cmdline}");

    let done = env.wait_state(&id, "succeeded", TRAIN_TIMEOUT);
    assert_eq!(done["epoch"], 3);
    let refused = env.fails(&["stop", &id]);
    assert!(refused.contains(&format!("session {id} has already ended (succeeded): nothing to stop")), "{refused}");
    let spec_yaml = std::fs::read_to_string(env.session_dir(&id).join("spec.yaml")).unwrap();
    assert!(spec_yaml.contains("session: tester/synth/1"), "{spec_yaml}");
    assert!(!spec_yaml.contains("rush.db") && !spec_yaml.contains("labels"), "{spec_yaml}");

    // Metrics in SQLite: steps and every epoch's validation accuracy.
    let steps: Vec<(i64,)> = env.db("SELECT COUNT(*) FROM metrics WHERE session = 'tester/synth/1' AND name = 'loss'");
    assert!(steps[0].0 > 0, "no step losses stored");
    let val: Vec<(i64, f64)> =
        env.db("SELECT epoch, value FROM metrics WHERE session = 'tester/synth/1' AND name = 'val_acc' ORDER BY epoch");
    assert_eq!(val.iter().map(|v| v.0).collect::<Vec<_>>(), vec![1, 2, 3]);

    // Retention: exactly the best one plus the last, as rows and as files.
    let mut best = val[0];
    for v in &val {
        if v.1 > best.1 {
            best = *v;
        }
    }
    let expected: BTreeSet<i64> = [best.0, 3].into_iter().collect();
    let rows: Vec<(i64, String)> =
        env.db("SELECT epoch, path FROM checkpoints WHERE session = 'tester/synth/1' ORDER BY epoch");
    assert_eq!(rows.iter().map(|r| r.0).collect::<BTreeSet<_>>(), expected);
    assert_eq!(epochs_on_disk(&env, &id, ".safetensors").difference(&expected).count(), 0);
    assert_eq!(epochs_on_disk(&env, &id, ".json"), expected);
    for (_, path) in &rows {
        assert!(std::path::Path::new(path).is_file(), "{path}");
    }

    // model ls and ps show them.
    let models = env.json(&["model", "ls", &id, "-j"]);
    let listed: BTreeSet<i64> = models.as_array().unwrap().iter().map(|m| m["epoch"].as_i64().unwrap()).collect();
    assert_eq!(listed, expected);
    let table = env.ok(&["model", "ls", &id]);
    for column in ["Checkpoint", "Last Modified", "Elapsed", "Summary", "Size", "val_acc="] {
        assert!(table.contains(column), "{table}");
    }
    let ps = env.json(&["ps", "-a", "-j"]);
    let me = ps.as_array().unwrap().iter().find(|s| s["id"] == id.as_str()).unwrap();
    assert_eq!(me["state"], "succeeded");
    assert!((me["best_val_acc"].as_f64().unwrap() - best.1).abs() < 1e-9);
    assert!(env.ok(&["ps", "-a"]).contains("tester/synth/1"));
    assert!(!env.ok(&["ps"]).contains("tester/synth/1"), "plain ps lists only queued and running sessions");
    assert!(env.ok(&["logs", &id]).contains("epoch 3/3"));

    // model rm: the file goes, then the row.
    env.ok(&["model", "rm", "-y", &id, "last"]);
    assert!(!env.session_dir(&id).join("checkpoints/3.safetensors").exists());
    let left: Vec<(i64,)> = env.db("SELECT epoch FROM checkpoints WHERE session = 'tester/synth/1'");
    assert_eq!(left.len(), expected.len() - 1);
    let refused = env.fails(&["model", "rm", "-y", &id, "9"]);
    assert!(refused.contains("no checkpoint 9 (saved: ") && !refused.contains(", 3"), "{refused}");

    // rm: folder and rows gone; the number is not reused.
    env.ok(&["rm", "-y", &id]);
    assert!(!env.session_dir(&id).exists());
    assert!(env.session(&id).is_none());
    let rows: Vec<(i64,)> = env.db("SELECT COUNT(*) FROM checkpoints WHERE session = 'tester/synth/1'");
    assert_eq!(rows[0].0, 0);
    assert!(env.fails(&["rm", &id]).contains("unknown session tester/synth/1"));

    // A clean shutdown leaves a sound database.
    let took = env.stop_daemon();
    println!("figure: daemon shutdown (SIGTERM, idle) in {:.0} ms", took.as_secs_f64() * 1e3);
    let check: Vec<(String,)> = env.db("PRAGMA integrity_check");
    assert_eq!(check[0].0, "ok");
    assert!(!env.home.join("daemon.addr").exists());
    assert!(env.fails(&["ps"]).contains("no rush daemon is running"));
}

#[test]
fn sweeps_queue_one_session_per_point_and_one_slot_runs_them_one_after_another() {
    let mut env = Env::new();
    env.start();
    env.push_synth("sw", 2);
    let grid = env.drop_spec("grid.yaml", &quick_spec("sw", 1, "grid: {seed: [1, 2], optimizer.lr: [0.001, 0.002]}\n"));
    let random = env.drop_spec(
        "random.yaml",
        &quick_spec("sw", 1, "random: {count: 2, seed: 7, space: {optimizer.lr: {log_uniform: [0.0005, 0.005]}}}\n"),
    );
    let grid_ids: Vec<String> =
        env.verdict(&grid)["sessions"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().into()).collect();
    let random_ids: Vec<String> =
        env.verdict(&random)["sessions"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().into()).collect();
    assert_eq!(grid_ids.len(), 4, "2 x 2 grid");
    assert_eq!(random_ids.len(), 2);
    // The grid's points differ as asked.
    let ps = env.json(&["ps", "-a", "-j"]);
    let points: BTreeSet<String> = ps
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| grid_ids.contains(&s["id"].as_str().unwrap().to_string()))
        .map(|s| format!("{}/{}", s["spec"]["seed"], s["spec"]["optimizer"]["lr"]))
        .collect();
    assert_eq!(points.len(), 4, "{points:?}");
    // Queue positions are shown for waiting sessions.
    let queued: Vec<i64> = ps.as_array().unwrap().iter().filter_map(|s| s["position"].as_i64()).collect();
    assert!(!queued.is_empty() && queued.iter().all(|p| *p >= 1));

    let all: Vec<String> = grid_ids.iter().chain(&random_ids).cloned().collect();
    let mut spans = Vec::new();
    for id in &all {
        let s = env.wait_state(id, "succeeded", TRAIN_TIMEOUT);
        spans.push((s["started"].as_f64().unwrap(), s["finished"].as_f64().unwrap(), id.clone()));
    }
    // One slot: no two sessions overlapped.
    spans.sort_by(|a, b| a.0.total_cmp(&b.0));
    for w in spans.windows(2) {
        assert!(w[0].1 <= w[1].0, "{} and {} overlapped: {:?}", w[0].2, w[1].2, spans);
    }
    // And each ran with its own point.
    let lrs: BTreeSet<String> = random_ids
        .iter()
        .map(|id| {
            let yaml = std::fs::read_to_string(env.session_dir(id).join("spec.yaml")).unwrap();
            yaml.lines().find(|l| l.trim_start().starts_with("lr:")).unwrap().to_string()
        })
        .collect();
    assert_eq!(lrs.len(), 2, "{lrs:?}");
}

#[test]
fn bad_specs_are_rejected_with_their_message_and_a_good_one_still_runs() {
    let mut env = Env::new();
    env.start();
    env.push_synth("ok", 3);
    let cases = [
        ("malformed.yaml", "dataset: ok\nmodel: [baseline_cnn\n", "malformed.yaml"),
        ("unknown.yaml", "dataset: ok\nmodle: baseline_cnn\n", "modle"),
        ("wrongtype.yaml", "dataset: ok\nepochs: many\n", "epochs"),
        ("missing.yaml", "dataset: nosuch\n", "\"nosuch\" is not a registered dataset"),
    ];
    for (name, yaml, needle) in cases {
        let path = env.drop_spec(name, yaml);
        let v = env.verdict(&path);
        assert_eq!(v["status"], "rejected", "{name}: {v}");
        let error = v["error"].as_str().unwrap();
        assert!(error.contains(name) && error.contains(needle), "{name}: {error}");
        assert!(v["sessions"].as_array().unwrap().is_empty());
    }
    // `rush run` reports a rejection as an error, non-zero; so do `ps -d` of an unknown dataset and a bad --url.
    let e = env.fails(&["run", "-d", "nosuch"]);
    assert!(e.contains("not a registered dataset"), "{e}");
    let e = env.fails(&["ps", "-d", "nosuch"]);
    assert!(e.contains("-d nosuch: not a registered dataset (registered: ok)"), "{e}");
    let e = env.fails(&["--url", "garbage", "ps"]);
    assert!(e.contains("--url \"garbage\" is not an address like http://127.0.0.1:8470"), "{e}");
    let left: Vec<_> = std::fs::read_dir(&env.experiments)
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().into_string().ok())
        .filter(|n| n.starts_with("run-"))
        .collect();
    assert!(left.is_empty(), "`rush run` left its refused spec behind: {left:?}");

    // Editor temp files, a touch and a re-save of the same content queue nothing.
    std::fs::write(env.experiments.join(".good.yaml.swp"), "dataset: ok\n").unwrap();
    std::fs::write(env.experiments.join("good.yaml~"), "dataset: ok\n").unwrap();
    std::fs::write(env.experiments.join("4913"), "").unwrap();
    let good = env.drop_spec("good.yaml", &quick_spec("ok", 1, "memo: the good one\n"));
    let v = env.verdict(&good);
    assert_eq!(v["status"], "accepted", "{v}");
    let id = v["sessions"][0].as_str().unwrap().to_string();
    let text = std::fs::read_to_string(&good).unwrap();
    std::fs::write(&good, &text).unwrap();
    let f = std::fs::File::options().append(true).open(&good).unwrap();
    f.set_modified(std::time::SystemTime::now()).unwrap();
    drop(f);

    // A GPU asked of a daemon without one: refused with a clear reason, never run on the CPU.
    let gpu_id = env.queue("gpu.yaml", &quick_spec("ok", 1, "").replace("gpus: auto", "gpus: 1"));
    let refused = env.wait_state(&gpu_id, "failed", Duration::from_secs(30));
    assert!(refused["exit_reason"].as_str().unwrap().contains("needs a GPU"), "{refused}");

    // The daemon stayed up and the good spec runs to the end.
    let done = env.wait_state(&id, "succeeded", TRAIN_TIMEOUT);
    assert_eq!(done["memo"], "the good one");
    let rows = env.spec_rows(&good);
    assert_eq!(rows.len(), 1, "a re-save or touch queued again: {rows:?}");
    let log = env.daemon_log();
    assert!(log.contains("good.yaml: the same content as when it was read before; nothing queued"), "{log}");
    let sessions: Vec<(i64,)> = env.db("SELECT COUNT(*) FROM sessions");
    assert_eq!(sessions[0].0, 2, "only the good spec and the GPU one became sessions");

    // A changed spec queues anew; `rush run` writes its own file and queues one session each time.
    std::fs::write(&good, quick_spec("ok", 50, "seed: 5\n")).unwrap();
    let changed = wait_for(Duration::from_secs(30), "the changed spec", || {
        let rows = env.spec_rows(&good);
        (rows.len() == 2).then_some(rows)
    });
    assert_eq!(changed[0]["status"], "accepted");
    let out = env.ok(&["run", "-d", "ok", "-a", "model=baseline_cnn image_size=32 epochs=50", "-m", "from run"]);
    let run_ids = ids(&out);
    assert_eq!(run_ids.len(), 1, "{out}");
    let s = env.session(&run_ids[0]).unwrap();
    assert_eq!((s["memo"].as_str(), s["spec"]["image_size"].as_i64()), (Some("from run"), Some(32)));
    // the run's session waits behind the changed spec's (one slot): stopped before it started, and it says so
    for id in [run_ids[0].as_str(), changed[0]["sessions"][0].as_str().unwrap()] {
        env.ok(&["stop", id]);
    }
    let stopped = env.session(&run_ids[0]).unwrap();
    assert_eq!(stopped["exit_reason"], "stopped by the user before it started", "{stopped}");

    // The spec refused for a dataset not yet registered is read again once it is: nothing the user dropped is lost.
    let missing = env.experiments.join("missing.yaml");
    env.push_synth("nosuch", 4);
    let rows = wait_for(Duration::from_secs(30), "missing.yaml read again", || {
        let rows = env.spec_rows(&missing);
        (rows.len() == 1 && rows[0]["status"] == "accepted").then_some(rows)
    });
    let late = rows[0]["sessions"][0].as_str().unwrap();
    assert!(late.contains("/nosuch/") && env.session(late).is_some(), "{late}");
    env.ok(&["stop", late]);
}

#[test]
fn stop_ends_a_running_child_and_fork_starts_from_the_named_checkpoint() {
    let mut env = Env::new();
    env.start();
    env.push_synth("st", 4);
    let id = env.queue("long.yaml", &quick_spec("st", 50, ""));
    env.wait_state(&id, "running", TRAIN_TIMEOUT);
    wait_for(TRAIN_TIMEOUT, "the first checkpoint", || {
        let m = env.json(&["model", "ls", &id, "-j"]);
        (!m.as_array().unwrap().is_empty()).then_some(())
    });
    let pid = env.session(&id).unwrap()["pid"].as_i64().unwrap() as u32;
    assert!(alive(pid));
    // `logs -f` follows the log while the session runs and ends by itself when it ends.
    let follower = std::process::Command::new(rush_exe())
        .args(["logs", "-f", &id])
        .env("RUSH_HOME", &env.home)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, followed) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(follower.wait_with_output()));
    std::thread::sleep(Duration::from_millis(500));
    let out = env.ok(&["stop", &id]);
    assert!(out.contains("stopped"), "{out}");
    let s = env.session(&id).unwrap();
    assert_eq!(s["state"], "stopped");
    assert!(s["exit_reason"].as_str().unwrap().contains("stopped by the user"));
    wait_for(Duration::from_secs(10), "the child to be gone", || (!alive(pid)).then_some(()));
    assert!(env.fails(&["stop", &id]).contains("already stopped"));
    assert!(env.ok(&["logs", &id]).contains("stop requested"));
    let followed = followed.recv_timeout(Duration::from_secs(30)).expect("logs -f ended with the session").unwrap();
    assert!(followed.status.success());
    let (stdout, stderr) = (String::from_utf8_lossy(&followed.stdout), String::from_utf8_lossy(&followed.stderr));
    assert!(stdout.contains("epoch 1/50") && stdout.contains("ended"), "{stdout}");
    assert!(stderr.contains(&format!("[rush] {id} ended stopped: stopped by the user")), "{stderr}");

    // Fork from checkpoint 1 with overrides: the new session starts from those weights.
    let out = env.ok(&["fork", &id, "-c", "1", "-a", "epochs=1", "-m", "forked"]);
    let fork_id = ids(&out).remove(0);
    assert_eq!(fork_id, "tester/st/2");
    let done = env.wait_state(&fork_id, "succeeded", TRAIN_TIMEOUT);
    assert_eq!((done["memo"].as_str(), done["epochs"].as_i64()), (Some("forked"), Some(1)));
    assert_eq!(done["fork_of"], "tester/st/1:1");
    let yaml = std::fs::read_to_string(env.session_dir(&fork_id).join("spec.yaml")).unwrap();
    let init = env.session_dir(&id).join("checkpoints/1.safetensors");
    assert!(yaml.contains(&format!("init_from: {}", init.display())), "{yaml}");
    let refused = env.fails(&["fork", &id, "-c", "1", "-a", "model=resnet18"]);
    assert!(refused.contains("field `model`") && refused.contains("is a baseline_cnn"), "{refused}");
    let refused = env.fails(&["fork", &id, "-c", "40"]);
    assert!(refused.contains("no checkpoint 40 (saved: 1"), "{refused}");
    assert!(env.fails(&["fork", "tester/st/99", "-c", "1"]).contains("unknown session"));
}

#[test]
fn a_killed_daemon_restarts_and_the_session_resumes_from_its_last_checkpoint() {
    let mut env = Env::new();
    env.start();
    env.push_synth("cr", 5);
    let id = env.queue("crash.yaml", &quick_spec("cr", 4, "checkpoints: {keep_best: 1, keep_last: true}\n"));
    let last = wait_for(TRAIN_TIMEOUT, "checkpoint 2", || {
        let m = env.json(&["model", "ls", &id, "-j"]);
        let top = m.as_array().unwrap().iter().filter_map(|c| c["epoch"].as_i64()).max()?;
        (top >= 2).then_some(top)
    });
    let pid = env.session(&id).unwrap()["pid"].as_i64().unwrap() as u32;
    env.kill_daemon();
    // The child dies with the daemon (parent-death signal): never two writers for one session folder.
    wait_for(Duration::from_secs(10), "the orphaned child to die", || (!alive(pid)).then_some(()));

    env.start();
    let done = env.wait_state(&id, "succeeded", TRAIN_TIMEOUT);
    assert_eq!(done["epoch"], 4);
    // The child resumed: its second `started` event begins after a checkpoint it found on disk.
    let starts: Vec<(String,)> =
        env.db(&format!("SELECT body FROM events WHERE session = '{id}' AND kind = 'started' ORDER BY id"));
    let firsts: Vec<i64> = starts
        .iter()
        .map(|(b,)| serde_json::from_str::<serde_json::Value>(b).unwrap()["start_epoch"].as_i64().unwrap())
        .collect();
    assert_eq!(firsts.first(), Some(&1), "{firsts:?}");
    let resumed_at = *firsts.last().unwrap();
    assert!(firsts.len() >= 2 && resumed_at > last && resumed_at > 1, "{firsts:?} (checkpoint {last} seen)");
    let log = std::fs::read_to_string(env.session_dir(&id).join("train.log")).unwrap();
    assert!(log.contains("resuming after checkpoint"), "{log}");
    // Every epoch's metrics once, none lost and none doubled by the re-run.
    let val: Vec<(i64, i64)> = env.db(&format!(
        "SELECT epoch, COUNT(*) FROM metrics WHERE session = '{id}' AND name = 'val_acc' GROUP BY epoch ORDER BY epoch"
    ));
    assert_eq!(val, vec![(1, 1), (2, 1), (3, 1), (4, 1)]);
    // A checkpoint's elapsed time counts the training before the crash: the sum of its epochs' durations.
    let seconds: Vec<(f64,)> =
        env.db(&format!("SELECT value FROM metrics WHERE session = '{id}' AND name = 'epoch_seconds' ORDER BY epoch"));
    let listed = env.json(&["model", "ls", &id, "-j"]);
    for c in listed.as_array().unwrap() {
        let epoch = c["epoch"].as_u64().unwrap() as usize;
        let expected: f64 = seconds[..epoch].iter().map(|s| s.0).sum();
        assert!((c["elapsed"].as_f64().unwrap() - expected).abs() < 1e-6, "{c} (epoch durations {seconds:?})");
    }
    // No checkpoint row points to a missing file, and the database is sound.
    let rows: Vec<(String,)> = env.db("SELECT path FROM checkpoints");
    assert!(!rows.is_empty());
    for (path,) in rows {
        assert!(std::path::Path::new(&path).is_file(), "row points to missing {path}");
    }
    let check: Vec<(String,)> = env.db("PRAGMA integrity_check");
    assert_eq!(check[0].0, "ok");

    // SIGTERM while a session runs: the child is stopped cleanly and the session is queued again to resume.
    let id = env.queue("term.yaml", &quick_spec("cr", 50, ""));
    env.wait_state(&id, "running", TRAIN_TIMEOUT);
    let pid = wait_for(Duration::from_secs(30), "a pid", || env.session(&id)?["pid"].as_i64()) as u32;
    let took = env.stop_daemon();
    println!("figure: daemon shutdown (SIGTERM, one session running) in {:.0} ms", took.as_secs_f64() * 1e3);
    assert!(!alive(pid));
    let state: Vec<(String, Option<String>)> =
        env.db(&format!("SELECT state, exit_reason FROM sessions WHERE id = '{id}'"));
    assert_eq!(state[0].0, "queued", "{state:?}");
    assert!(state[0].1.as_deref().unwrap_or_default().contains("shut down"), "{state:?}");
    let check: Vec<(String,)> = env.db("PRAGMA integrity_check");
    assert_eq!(check[0].0, "ok");
}

/// A dataset's training CSV held back: a named pipe stands in its place, so the daemon's registration, which reads
/// that very file, blocks until the test feeds it. Nothing in rush knows about it: this is only a slow disk the test
/// controls, so "the daemon answered before the registration ended" is certain, not a race.
struct HeldCsv {
    path: std::path::PathBuf,
    content: Vec<u8>,
}

impl HeldCsv {
    fn new(dataset: &std::path::Path) -> HeldCsv {
        use std::os::unix::ffi::OsStrExt;
        let path = dataset.join("train/train_data/train_with_valid_tags.csv");
        let content = std::fs::read(&path).expect("the training CSV");
        std::fs::remove_file(&path).unwrap();
        let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0, "mkfifo {}", path.display());
        HeldCsv { path, content }
    }

    /// Lets the registration read `content`: once the daemon has the pipe open, a regular file with `content` takes
    /// its place (every later reader, such as the trainer, reads that), and `content` goes down the pipe.
    fn release(&self, content: &[u8]) {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        use std::os::unix::io::AsRawFd;
        // Non-blocking: opening fails until a reader has the pipe open, so a dead daemon cannot hang the test.
        let mut pipe = wait_for(Duration::from_secs(60), "the daemon to open the held CSV", || {
            std::fs::OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(&self.path).ok()
        });
        // SAFETY: fcntl on a descriptor we own; blocking writes from here on.
        unsafe {
            let fd = pipe.as_raw_fd();
            libc::fcntl(fd, libc::F_SETFL, libc::fcntl(fd, libc::F_GETFL) & !libc::O_NONBLOCK);
        }
        let file = self.path.with_extension("csv.new");
        std::fs::write(&file, content).unwrap();
        std::fs::rename(&file, &self.path).unwrap();
        pipe.write_all(content).unwrap();
    }
}

fn api_get(env: &Env, path: &str) -> serde_json::Value {
    let addr = std::fs::read_to_string(env.home.join("daemon.addr")).unwrap();
    let response = reqwest::blocking::get(format!("http://{}/api{path}", addr.trim())).expect("the daemon answers");
    assert!(response.status().is_success(), "GET /api{path}: {}", response.status());
    response.json().unwrap()
}

fn dataset_named(env: &Env, name: &str) -> serde_json::Value {
    let list = api_get(env, "/datasets");
    list.as_array().unwrap().iter().find(|d| d["name"] == name).cloned().unwrap_or_default()
}

#[test]
fn the_daemon_serves_before_its_datasets_register_and_sessions_wait_for_them() {
    let mut env = Env::new();
    // Pushed while no daemon runs: the daemon registers them when it starts.
    env.push_synth("slow", 7);
    env.push_synth("bad", 8);
    let slow = HeldCsv::new(&env.home.join("datasets/slow"));
    let bad = HeldCsv::new(&env.home.join("datasets/bad"));

    let started = Instant::now();
    env.start();
    let info = api_get(&env, "/info");
    println!("figure: daemon start until /api/info answers, two registrations under way: {:.0} ms", {
        started.elapsed().as_secs_f64() * 1e3
    });
    assert_eq!(info["user"], "tester");
    // Both registrations are still blocked on their CSV: the daemon answered before either ended.
    for name in ["slow", "bad"] {
        let d = dataset_named(&env, name);
        assert_eq!(d["state"], "registering", "{d}");
        assert!(d["train_images"].is_null(), "{d}");
    }
    let ls = env.ok(&["dataset", "ls"]);
    assert!(ls.lines().any(|l| l.starts_with("slow") && l.contains("registering")), "{ls}");

    // A spec naming a dataset still registering queues a session that waits, and ps says why.
    let slow_id = env.queue("slow.yaml", &quick_spec("slow", 1, ""));
    let bad_id = env.queue("bad.yaml", &quick_spec("bad", 1, ""));
    std::thread::sleep(Duration::from_millis(2500)); // a scheduler tick or more
    let waiting = env.session(&slow_id).unwrap();
    assert_eq!(waiting["state"], "queued", "{waiting}");
    assert_eq!(waiting["waiting"], "waiting for dataset slow to register", "{waiting}");
    assert!(waiting["position"].is_null(), "{waiting}");
    let ps = env.ok(&["ps"]);
    let line = ps.lines().find(|l| l.starts_with(&slow_id)).unwrap_or_default();
    assert!(line.contains("queued (cpu)") && line.contains("waiting for dataset slow to register"), "{ps}");

    // A registration that fails: the dataset shows the error, the session queued meanwhile fails with it, and a
    // spec naming it now is refused with it.
    bad.release(b"no,columns,here\n1,2,3\n");
    let failed = wait_for(Duration::from_secs(30), "bad to fail", || {
        let d = dataset_named(&env, "bad");
        (d["state"] == "failed").then_some(d)
    });
    let error = failed["error"].as_str().unwrap_or_default().to_string();
    assert!(error.contains("train_with_valid_tags.csv"), "{failed}");
    assert!(!error.contains(env.home.to_str().unwrap()), "the home's path is not shown: {failed}");
    let gone = env.wait_state(&bad_id, "failed", Duration::from_secs(30));
    let reason = gone["exit_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("dataset bad could not be registered") && reason.contains(&error), "{gone}");
    let refused = env.verdict(&env.drop_spec("bad-again.yaml", &quick_spec("bad", 1, "")));
    assert_eq!(refused["status"], "rejected", "{refused}");
    assert!(refused["error"].as_str().unwrap_or_default().contains("could not be registered"), "{refused}");
    assert!(env.ok(&["dataset", "ls"]).contains("failed: "));

    // The other registers, and the session that waited for it runs.
    assert_eq!(env.session(&slow_id).unwrap()["state"], "queued");
    slow.release(&slow.content);
    let registered = wait_for(Duration::from_secs(30), "slow to register", || {
        let d = dataset_named(&env, "slow");
        (d["state"] == "registered").then_some(d)
    });
    assert_eq!(registered["train_images"], 300, "{registered}");
    let done = env.wait_state(&slow_id, "succeeded", TRAIN_TIMEOUT);
    assert_eq!(done["epoch"], 1);
}

#[test]
fn a_session_building_the_image_cache_reports_its_progress_before_it_starts_training() {
    use std::io::BufRead;
    let mut env = Env::new();
    // Held back as it registers at start-up, so the session waits and its live events can be followed from the start.
    env.push_synth("fresh", 9);
    let held = HeldCsv::new(&env.home.join("datasets/fresh"));
    env.start();
    let id = env.queue("fresh.yaml", &quick_spec("fresh", 1, ""));
    let addr = std::fs::read_to_string(env.home.join("daemon.addr")).unwrap().trim().to_string();
    let client = reqwest::blocking::Client::builder().timeout(TRAIN_TIMEOUT).build().unwrap();
    // The answer's head comes once the stream has subscribed: nothing the child sends from now on is missed.
    let live = client.get(format!("http://{addr}/api/sessions/{id}/events")).send().unwrap();
    assert!(live.status().is_success());
    let follower = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in std::io::BufReader::new(live).lines() {
            let Some(data) = line.unwrap().strip_prefix("data: ").map(str::to_string) else { continue };
            let step = data.contains("\"event\":\"step\"");
            lines.push(data);
            if step {
                break;
            }
        }
        lines
    });
    held.release(&held.content);
    let live = follower.join().unwrap();
    let kinds: Vec<String> = live
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["event"].as_str().unwrap_or("").to_string())
        .collect();
    let first = |kind: &str| kinds.iter().position(|k| k == kind);
    let decoding = first("decoding").unwrap_or_else(|| panic!("no decoding event live: {kinds:?}"));
    assert!(decoding < first("started").unwrap() && decoding < first("step").unwrap(), "{kinds:?}");
    env.wait_state(&id, "succeeded", TRAIN_TIMEOUT);
    assert!(env.home.join("cache/images/fresh/train-32.rgb").is_file(), "the build wrote the cache");

    // The child's record has it too, before `started`: the last says every image is decoded.
    let text = std::fs::read_to_string(env.session_dir(&id).join("events.jsonl")).unwrap();
    let events: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let at = |kind: &str| events.iter().position(|e| e["event"] == kind);
    assert!(at("decoding").unwrap() < at("started").unwrap(), "{text}");
    let last = events.iter().rfind(|e| e["event"] == "decoding").unwrap();
    assert_eq!((last["done"].as_u64(), last["total"].as_u64()), (Some(300), Some(300)), "{last}");
    assert!(last["seconds"].as_f64().unwrap() >= 0.0);
    // The daemon forgot it once training started; the log has it.
    assert!(env.session(&id).unwrap()["progress"].is_null());
    let log = env.ok(&["logs", &id]);
    assert!(log.contains("image cache: decoded 300 of 300 images ("), "{log}");

    // A session that finds the cache built reports no build.
    let again = env.queue("again.yaml", &quick_spec("fresh", 1, "seed: 2\n"));
    env.wait_state(&again, "succeeded", TRAIN_TIMEOUT);
    let text = std::fs::read_to_string(env.session_dir(&again).join("events.jsonl")).unwrap();
    assert!(!text.contains("\"event\":\"decoding\""), "{text}");
}
