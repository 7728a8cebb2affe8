//! What rush promises when things go wrong, one test per promise (docs/promises.md): hostile spec files,
//! a daemon killed again and again, training children that die or fail, a full disk under a checkpoint, hostile HTTP
//! clients, load, and a database made by an older rush. Small counts here; `RUSH_SOAK=1` runs the big ones.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{Env, alive, block_on, quick_spec, rush_exe, wait_for};

const TRAIN_TIMEOUT: Duration = Duration::from_secs(300);

/// Whether the soak (the `--full` run: 20 kill cycles) was asked for.
fn soak() -> bool {
    std::env::var("RUSH_SOAK").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Starts `rush daemon` with our own bind address, slots and environment (`Env::start` fixes one CPU slot).
fn start_daemon(env: &mut Env, bind: &str, cpu_slots: u32, vars: &[(&str, &str)]) {
    start_daemon_limited(env, bind, cpu_slots, vars, None);
}

/// [`start_daemon`], with an address-space limit (RLIMIT_AS, bytes) that the daemon and its children inherit.
fn start_daemon_limited(env: &mut Env, bind: &str, cpu_slots: u32, vars: &[(&str, &str)], address_space: Option<u64>) {
    assert!(env.daemon.is_none(), "a daemon runs already");
    let addr_file = env.home.join("daemon.addr");
    let _ = std::fs::remove_file(&addr_file);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(env.tmp.path().join("daemon.log"))
        .expect("daemon log");
    let mut cmd = Command::new(rush_exe());
    cmd.args(["daemon", "--bind", bind, "--user", "tester", "--cpu-slots", &cpu_slots.to_string(), "--experiments"])
        .arg(&env.experiments)
        .env("RUSH_HOME", &env.home)
        .env("OMP_NUM_THREADS", "1")
        .env("RUST_LOG", "info,sqlx=warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    if let Some(limit) = address_space {
        use std::os::unix::process::CommandExt;
        // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let rl = libc::rlimit { rlim_cur: limit, rlim_max: limit };
                if libc::setrlimit(libc::RLIMIT_AS, &rl) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    env.daemon = Some(cmd.spawn().expect("start rush daemon"));
    wait_for(Duration::from_secs(60), "daemon.addr", || {
        std::fs::read_to_string(&addr_file).ok().filter(|s| !s.trim().is_empty())
    });
}

/// The daemon's address as a client reaches it (a wildcard bind is reached on 127.0.0.1).
fn base_url(env: &Env) -> String {
    let addr = std::fs::read_to_string(env.home.join("daemon.addr")).unwrap();
    let addr = addr.trim().replace("0.0.0.0:", "127.0.0.1:");
    format!("http://{addr}")
}

/// A number from /proc/PID/status, in kB (`VmHWM`, `VmRSS`).
fn proc_status_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the process runs");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':')?.trim().strip_suffix("kB")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(120)).build().unwrap()
}

fn integrity_ok(env: &Env) {
    let check: Vec<(String,)> = env.db("PRAGMA integrity_check");
    assert_eq!(check[0].0, "ok", "PRAGMA integrity_check: {check:?}");
}

// ---------------------------------------------------------------------------------------------------------------
// 1. Hostile specs
// ---------------------------------------------------------------------------------------------------------------

/// Every spec of the hostile corpus (and unknown datasets) dropped into a running daemon is rejected with a message
/// naming its file, shown by `/api/specs`; the daemon stays up with bounded memory and the good specs dropped in
/// between all run to the end.
#[test]
fn hostile_specs_dropped_into_a_running_daemon_are_rejected_and_good_ones_still_run() {
    /// How far the daemon's peak resident memory may rise over its idle peak (about 350 MiB, most of it libtorch's
    /// mapped libraries) while it reads the corpus: specs are capped at 1 MiB and aliases have budgets.
    const GROWTH_BOUND_MIB: u64 = 100;
    let mut env = Env::new();
    env.start();
    // Registered as `emoji`, so the corpus's specs fail on their own faults, not on the dataset.
    env.push_synth("emoji", 11);
    let pid = env.daemon_pid();
    let idle_kib = proc_status_kb(pid, "VmHWM");

    let mut corpus = crate::spec::hostile_corpus();
    for d in ["nosuch", "Emoji", "emoji2"] {
        corpus.push(("unknown dataset".into(), quick_spec(d, 1, "").into_bytes()));
    }
    corpus.push(("unknown model".into(), quick_spec("emoji", 1, "").replace("baseline_cnn", "vgg19").into_bytes()));
    assert!(corpus.len() >= 1000, "{} specs", corpus.len());
    let started = Instant::now();
    let mut bad = BTreeMap::new();
    let mut good = vec![];
    for (i, (kind, bytes)) in corpus.iter().enumerate() {
        // Written whole and renamed in, as editors save: a half-written file could be a different, valid spec.
        let path = env.experiments.join(format!("bad-{i:04}.yaml"));
        let tmp = env.experiments.join(format!(".bad-{i:04}.yaml.tmp"));
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        bad.insert(path.display().to_string(), kind.clone());
        if i % 300 == 150 {
            good.push(env.drop_spec(&format!("good-{i}.yaml"), &quick_spec("emoji", 1, &format!("memo: good {i}\n"))));
        }
    }
    let written = started.elapsed();

    // Every verdict arrives: one row per file.
    let url = format!("{}/api/specs?limit=10000", base_url(&env));
    let rows = wait_for(Duration::from_secs(240), "a verdict on every file", || {
        let rows: Vec<serde_json::Value> = http().get(&url).send().ok()?.json().ok()?;
        (rows.len() >= bad.len() + good.len()).then_some(rows)
    });
    let verdicts = started.elapsed();
    let mut by_path: BTreeMap<String, Vec<&serde_json::Value>> = BTreeMap::new();
    for r in &rows {
        by_path.entry(r["path"].as_str().unwrap().to_string()).or_default().push(r);
    }
    let mut kinds = BTreeMap::<&str, usize>::new();
    for (path, kind) in &bad {
        let rows = by_path.get(path).unwrap_or_else(|| panic!("no verdict on {path} ({kind})"));
        assert_eq!(rows.len(), 1, "{path}: {rows:?}");
        let v = rows[0];
        assert_eq!(v["status"], "rejected", "{kind} {path} was accepted: {v}");
        let error = v["error"].as_str().unwrap_or_default();
        assert!(error.starts_with(path.as_str()) && error.len() > path.len() + 2, "{kind}: {error:?}");
        assert!(v["sessions"].as_array().unwrap().is_empty());
        *kinds.entry(kind).or_default() += 1;
    }
    // The 50 MB file was refused by its size, unread.
    let (huge, _) = bad.iter().find(|(_, k)| k.as_str() == "50 MB").unwrap();
    assert!(by_path[huge][0]["error"].as_str().unwrap().contains("bytes; a spec may be at most"));

    // Still up, memory bounded; the good specs all ran.
    assert!(alive(pid), "the daemon died; log:\n{}", env.daemon_log());
    let info: serde_json::Value = http().get(format!("{}/api/info", base_url(&env))).send().unwrap().json().unwrap();
    assert_eq!(info["pid"], pid);
    let mut ids = vec![];
    for g in &good {
        let v = env.verdict(g);
        assert_eq!(v["status"], "accepted", "{v}");
        ids.push(v["sessions"][0].as_str().unwrap().to_string());
    }
    for id in &ids {
        env.wait_state(id, "succeeded", TRAIN_TIMEOUT);
    }
    let hwm_kib = proc_status_kb(pid, "VmHWM");
    eprintln!(
        "figure: {} hostile specs ({} kinds) written in {:.1} s, all rejected within {:.1} s; {} good specs ran; \
         daemon VmHWM {} MiB (idle {} MiB; growth bound {GROWTH_BOUND_MIB} MiB)",
        bad.len(),
        kinds.len(),
        written.as_secs_f64(),
        verdicts.as_secs_f64(),
        ids.len(),
        hwm_kib / 1024,
        idle_kib / 1024
    );
    let growth = (hwm_kib - idle_kib) / 1024;
    assert!(growth < GROWTH_BOUND_MIB, "daemon peak RSS grew by {growth} MiB (to {} MiB)", hwm_kib / 1024);
    let sessions: Vec<(i64,)> = env.db("SELECT COUNT(*) FROM sessions");
    assert_eq!(sessions[0].0 as usize, good.len(), "only the good specs became sessions");
}

// ---------------------------------------------------------------------------------------------------------------
// 2. The daemon killed again and again
// ---------------------------------------------------------------------------------------------------------------

type MetricKey = (String, String, i64, i64, String);

fn metric_rows(env: &Env) -> Vec<(String, String, i64, i64, f64)> {
    env.db("SELECT session, name, step, epoch, value FROM metrics")
}

fn key(r: &(String, String, i64, i64, f64)) -> MetricKey {
    (r.0.clone(), r.1.clone(), r.2, r.3, format!("{:.9e}", r.4))
}

/// The step events the session's latest child wrote to its `events.jsonl` (step, t): those after its last `started`.
fn step_events(env: &Env, id: &str) -> Vec<(i64, f64)> {
    let text = std::fs::read_to_string(env.session_dir(id).join("events.jsonl")).unwrap_or_default();
    let lines: Vec<serde_json::Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let from = lines.iter().rposition(|v| v["event"] == "started").unwrap_or(0);
    lines[from..]
        .iter()
        .filter(|v| v["event"] == "step")
        .filter_map(|v| Some((v["step"].as_i64()?, v["t"].as_f64()?)))
        .collect()
}

/// SIGKILL the daemon while two sessions train, 5 times (20 with `RUSH_SOAK=1`): after each restart both sessions
/// are reconciled and resume from their last checkpoint, no committed metric of a checkpointed epoch is lost, at most
/// about a second of step metrics is, and the database passes `PRAGMA integrity_check`.
#[test]
fn sigkill_cycles_of_the_daemon_lose_no_committed_metric_and_sessions_resume() {
    let cycles = if soak() { 20 } else { 5 };
    let epochs = cycles + 3;
    let mut env = Env::new();
    start_daemon(&mut env, "127.0.0.1:0", 2, &[]);
    env.push_synth("kc", 21);
    let extra = "checkpoints: {keep_best: 1, keep_last: true}\n";
    let ids: Vec<String> =
        ["a", "b"].iter().map(|n| env.queue(&format!("{n}.yaml"), &quick_spec("kc", epochs, extra))).collect();
    let last_ckpt = |env: &Env, id: &str| -> i64 {
        let rows: Vec<(Option<i64>,)> = env.db(&format!("SELECT MAX(epoch) FROM checkpoints WHERE session = '{id}'"));
        rows[0].0.unwrap_or(0)
    };
    let mut lost_windows = vec![];
    let mut steps_checked = 0;
    let mut seen_ckpt = 0;
    let mut resumed_from = vec![];
    let started = Instant::now();
    for cycle in 0..cycles {
        // Progress since the last restart: a new checkpoint of the first session, then a kill somewhere in an epoch.
        let now = wait_for(TRAIN_TIMEOUT, &format!("cycle {cycle}: a new checkpoint"), || {
            let c = last_ckpt(&env, &ids[0]);
            (c > seen_ckpt && c < epochs as i64).then_some(c)
        });
        seen_ckpt = now;
        std::thread::sleep(Duration::from_millis(((cycle * 617) % 1500) as u64));
        let before = metric_rows(&env);
        let ckpt_before: Vec<i64> = ids.iter().map(|id| last_ckpt(&env, id)).collect();
        let pids: Vec<u32> = ids.iter().filter_map(|id| env.session(id)?["pid"].as_i64()).map(|p| p as u32).collect();
        let kill_t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        env.kill_daemon();
        for pid in &pids {
            wait_for(Duration::from_secs(10), "the orphaned child to die", || (!alive(*pid)).then_some(()));
        }
        // The step metrics the children reported before the kill that the store had not committed: a short window.
        let committed: Vec<(String, i64)> = env.db("SELECT session, step FROM metrics WHERE name = 'loss'");
        let committed: BTreeSet<(String, i64)> = committed.into_iter().collect();
        for id in &ids {
            let steps = step_events(&env, id);
            steps_checked += steps.len();
            let lost: Vec<f64> = steps
                .into_iter()
                .filter(|(step, t)| *t <= kill_t && !committed.contains(&(id.clone(), *step)))
                .map(|(_, t)| t)
                .collect();
            let window = lost.iter().cloned().fold(f64::INFINITY, f64::min);
            lost_windows.push(if lost.is_empty() { 0.0 } else { kill_t - window });
        }
        integrity_ok(&env);

        start_daemon(&mut env, "127.0.0.1:0", 2, &[]);
        // Reconciled: nothing is left "running" from the dead daemon; both are queued or running again.
        for (i, id) in ids.iter().enumerate() {
            let s = env.session(id).unwrap();
            let state = s["state"].as_str().unwrap();
            assert!(["queued", "running", "succeeded"].contains(&state), "cycle {cycle}: {id} is {state}: {s}");
            if state != "succeeded" {
                let pid = s["pid"].as_i64();
                assert!(pid.is_none_or(|p| !pids.contains(&(p as u32))), "{id} still names the dead child");
            }
            assert!(last_ckpt(&env, id) >= ckpt_before[i], "cycle {cycle}: {id} lost a checkpoint row");
        }
        // No committed metric of an epoch that was checkpointed is lost.
        let after: BTreeSet<MetricKey> = metric_rows(&env).iter().map(key).collect();
        let mut kept = 0;
        for r in &before {
            let i = ids.iter().position(|id| *id == r.0).unwrap();
            if r.3 <= ckpt_before[i] {
                assert!(after.contains(&key(r)), "cycle {cycle}: committed metric lost: {r:?}");
                kept += 1;
            }
        }
        integrity_ok(&env);
        eprintln!("cycle {cycle}: killed after checkpoint {ckpt_before:?}; {kept} committed metric rows kept");
        resumed_from.push(ckpt_before.clone());
    }
    // Both run to the end; each resumed from a checkpoint it had; every epoch's metrics once.
    for id in &ids {
        let done = env.wait_state(id, "succeeded", TRAIN_TIMEOUT);
        assert_eq!(done["epoch"], epochs);
        let starts: Vec<(String,)> =
            env.db(&format!("SELECT body FROM events WHERE session = '{id}' AND kind = 'started' ORDER BY id"));
        let firsts: Vec<i64> = starts
            .iter()
            .map(|(b,)| serde_json::from_str::<serde_json::Value>(b).unwrap()["start_epoch"].as_i64().unwrap())
            .collect();
        assert!(firsts.len() >= 2, "{id} started {} times: {firsts:?}", firsts.len());
        assert!(firsts.iter().filter(|f| **f > 1).count() >= 1, "{id} never resumed: {firsts:?}");
        let val: Vec<(i64, i64)> = env.db(&format!(
            "SELECT epoch, COUNT(*) FROM metrics WHERE session = '{id}' AND name = 'val_acc' GROUP BY epoch ORDER BY \
             epoch"
        ));
        assert_eq!(val, (1..=epochs as i64).map(|e| (e, 1)).collect::<Vec<_>>(), "{id}");
    }
    let rows: Vec<(String,)> = env.db("SELECT path FROM checkpoints");
    for (path,) in rows {
        assert!(Path::new(&path).is_file(), "row points to missing {path}");
    }
    integrity_ok(&env);
    let worst = lost_windows.iter().cloned().fold(0.0, f64::max);
    eprintln!(
        "figure: {cycles} SIGKILL cycles with 2 sessions in {:.0} s; checkpoints at the kills {resumed_from:?}; \
         step metrics lost at a kill: at most {worst:.2} s (of {steps_checked} step events the children wrote)",
        started.elapsed().as_secs_f64()
    );
    assert!(worst <= 2.0, "step metrics lost over {worst:.2} s at a kill: {lost_windows:?}");
}

/// The `rush infer` children of the daemon on `env`'s home: their pids.
fn infer_children(env: &Env) -> Vec<u32> {
    let home = env.home.display().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let args: Vec<String> = cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        let ours =
            args.get(1).map(String::as_str) == Some("infer") && args.get(2).is_some_and(|a| a.starts_with(&home));
        if ours && alive(pid) {
            found.push(pid);
        }
    }
    found
}

/// Measured before the launcher: a `kill -9` of the daemon during a submission left its `rush infer` child running,
/// and the restarted daemon started a second one for the same member beside it. Now the child dies with the daemon
/// (and would be killed by pid and start time at the restart if it had not), so there is only ever one inference of
/// the member at a time, and the submission ends with one score.
#[test]
fn a_daemon_killed_mid_inference_leaves_no_child_and_the_restart_scores_once() {
    let mut env = Env::new();
    start_daemon(&mut env, "127.0.0.1:0", 1, &[]);
    env.push_synth("ki", 51);
    let id = env.queue("a.yaml", &quick_spec("ki", 1, ""));
    env.wait_state(&id, "succeeded", TRAIN_TIMEOUT);
    let submitted: serde_json::Value = http()
        .post(format!("{}/api/submissions", base_url(&env)))
        .json(&serde_json::json!({"members": [{"session": id, "checkpoint": "best", "weight": 1.0}]}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let submission = submitted["id"].as_i64().unwrap_or_else(|| panic!("{submitted}"));
    let child = wait_for(Duration::from_secs(60), "the rush infer child", || infer_children(&env).first().copied());
    env.kill_daemon();
    wait_for(Duration::from_secs(10), "the infer child to die with its daemon", || (!alive(child)).then_some(()));
    let recorded: Vec<(String, Option<i64>)> =
        env.db(&format!("SELECT state, pid FROM submissions WHERE id = {submission}"));
    assert_eq!(recorded[0].0, "running", "the killed daemon left it running: {recorded:?}");

    start_daemon(&mut env, "127.0.0.1:0", 1, &[]);
    let mut most = 0;
    let scored = wait_for(Duration::from_secs(120), "the submission's score", || {
        most = most.max(infer_children(&env).len());
        let rows: Vec<(String, Option<f64>)> =
            env.db(&format!("SELECT state, public_score FROM submissions WHERE id = {submission}"));
        (rows[0].0 == "scored").then(|| rows[0].1)
    });
    assert!(scored.is_some_and(|s| (0.0..=1.0).contains(&s)), "{scored:?}");
    assert!(most <= 1, "{most} inference children of one submission ran side by side");
    let rows: Vec<(i64,)> = env.db("SELECT id FROM submissions");
    assert_eq!(rows, vec![(submission,)], "one submission, scored once");
    let log = std::fs::read_to_string(env.home.join("submissions").join(submission.to_string()).join("infer.log"));
    let starts = log.unwrap_or_default().matches("[rush] ").count();
    assert!(starts <= 2, "one start before the kill and one after: {starts}");
    assert!(infer_children(&env).is_empty(), "no inference child is left once it is scored");
}

// ---------------------------------------------------------------------------------------------------------------
// 3. Training children that die or fail
// ---------------------------------------------------------------------------------------------------------------

/// With two slots, one session trains throughout while, on the other slot, a child is SIGKILLed, a run diverges to
/// NaN, a run runs out of memory, and a dataset loses its images mid-run: each fails with its reason, the slot is
/// freed for the next, and the first session is unaffected (same child, still running, then stopped by us).
#[test]
fn a_child_killed_diverging_out_of_memory_or_losing_its_dataset_fails_alone_and_frees_its_slot() {
    /// The daemon and its children live under this address-space limit (each maps about 3.2 GiB, mostly libtorch),
    /// so a batch too big for it fails to allocate instead of swapping the machine.
    const ADDRESS_SPACE: u64 = 5 << 30;
    let mut env = Env::new();
    // Without the decoded-image cache, so the children read the PNGs every epoch: with it (the default) a run whose
    // images vanish mid-run goes on from the decoded copy, and the failure below could not happen.
    start_daemon_limited(&mut env, "127.0.0.1:0", 2, &[("RUSH_IMAGE_CACHE", "off")], Some(ADDRESS_SPACE));
    env.push_synth("cf", 31);
    env.push_synth("gone", 32);
    let steady = env.queue("steady.yaml", &quick_spec("cf", 200, ""));
    env.wait_state(&steady, "running", TRAIN_TIMEOUT);
    let steady_pid = wait_for(Duration::from_secs(30), "a pid", || env.session(&steady)?["pid"].as_i64());

    // A child SIGKILLed (as the OOM killer would).
    let victim = env.queue("victim.yaml", &quick_spec("cf", 200, ""));
    env.wait_state(&victim, "running", TRAIN_TIMEOUT);
    let pid = wait_for(Duration::from_secs(30), "a pid", || env.session(&victim)?["pid"].as_i64()) as u32;
    // SAFETY: signalling the training child this test's daemon started.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    let failed = env.wait_state(&victim, "failed", Duration::from_secs(60));
    let reason = failed["exit_reason"].as_str().unwrap();
    assert!(reason.contains("signal 9") && reason.contains("SIGKILL"), "{reason}");

    // A diverging run: NaN.
    let nan = env.queue(
        "nan.yaml",
        &quick_spec("cf", 20, "")
            .replace("{name: adamw, lr: 0.003}", "{name: sgd, lr: 10, momentum: 0.9, weight_decay: 0}"),
    );
    let failed = env.wait_state(&nan, "failed", TRAIN_TIMEOUT);
    let reason = failed["exit_reason"].as_str().unwrap();
    assert!(reason.contains("NaN") && reason.contains("optimizer.lr"), "{reason}");

    // Out of memory: the first convolution's output at this size (260 x 256 x 128 x 128 floats, 4.4 GB) cannot be allocated.
    let oom = env.queue(
        "oom.yaml",
        &quick_spec("cf", 1, "")
            .replace("image_size: 32", "image_size: 256")
            .replace("batch_size: 32", "batch_size: 512"),
    );
    let failed = env.wait_state(&oom, "failed", TRAIN_TIMEOUT);
    let reason = failed["exit_reason"].as_str().unwrap();
    assert!(
        reason.starts_with("out of memory with batch_size 512") && reason.contains("can't allocate memory"),
        "{reason}"
    );
    // Its first line (the trainer's own; the runner appends the stderr tail below it) carries no C++ stack.
    let first = reason.lines().next().unwrap();
    assert!(!first.contains("frame #"), "{first}");
    eprintln!("figure: out of memory reason: {first}");

    // A dataset whose images disappear after the first epoch.
    let orphan = env.queue("orphan.yaml", &quick_spec("gone", 200, ""));
    wait_for(TRAIN_TIMEOUT, "the first epoch", || {
        let m: Vec<(i64,)> =
            env.db(&format!("SELECT COUNT(*) FROM metrics WHERE session = '{orphan}' AND name = 'val_acc'"));
        (m[0].0 >= 1).then_some(())
    });
    std::fs::remove_dir_all(env.home.join("datasets/gone/train/train_data/images")).unwrap();
    let failed = env.wait_state(&orphan, "failed", TRAIN_TIMEOUT);
    let reason = failed["exit_reason"].as_str().unwrap();
    assert!(reason.contains("could be decoded"), "{reason}");
    let log = std::fs::read_to_string(env.session_dir(&orphan).join("train.log")).unwrap();
    assert!(log.contains("cannot be decoded"), "{log}");

    // The slot is free again: the next session starts on it.
    let next = env.queue("next.yaml", &quick_spec("cf", 1, ""));
    env.wait_state(&next, "succeeded", TRAIN_TIMEOUT);
    // The steady session never noticed: same child, still running, its epochs counting up.
    let s = env.session(&steady).unwrap();
    assert_eq!((s["state"].as_str(), s["pid"].as_i64()), (Some("running"), Some(steady_pid)), "{s}");
    assert!(alive(steady_pid as u32));
    let info: serde_json::Value = http().get(format!("{}/api/info", base_url(&env))).send().unwrap().json().unwrap();
    let busy: Vec<&str> =
        info["slots"].as_array().unwrap().iter().filter_map(|s| s["session"].as_str()).collect::<Vec<_>>();
    assert_eq!(busy, vec![steady.as_str()], "{info}");
    env.ok(&["stop", &steady]);
    assert_eq!(env.session(&steady).unwrap()["state"], "stopped");
}

// ---------------------------------------------------------------------------------------------------------------
// 4. Disk full under a checkpoint
// ---------------------------------------------------------------------------------------------------------------

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The child gets a real file-size limit (RLIMIT_FSIZE, set on it with prlimit) after its first checkpoint: the next
/// checkpoint cannot be written (EFBIG, as a full quota gives). The session fails naming the checkpoint file and the
/// error, no partial file is left, and checkpoint 1 is intact: its files load and a fork from it trains.
#[test]
fn a_full_disk_under_a_checkpoint_fails_clearly_and_keeps_the_previous_one() {
    let mut env = Env::new();
    env.start();
    env.push_synth("df", 41);
    let id = env.queue("full.yaml", &quick_spec("df", 50, "checkpoints: {keep_best: 5, keep_last: true}\n"));
    env.wait_state(&id, "running", TRAIN_TIMEOUT);
    let pid = wait_for(Duration::from_secs(30), "a pid", || env.session(&id)?["pid"].as_i64()) as libc::pid_t;
    let dir = env.session_dir(&id);
    let ckpt = dir.join("checkpoints");
    wait_for(TRAIN_TIMEOUT, "checkpoint 1", || ckpt.join("1.json").is_file().then_some(()));
    let weights = file_len(&ckpt.join("1.safetensors"));
    let state = file_len(&ckpt.join("1.state.safetensors"));
    let limit = weights.min(state) / 2;
    let events = file_len(&dir.join("events.jsonl"));
    assert!(events + 64 * 1024 < limit, "events.jsonl ({events} B) would hit the limit ({limit} B) first");
    let rl = libc::rlimit { rlim_cur: limit, rlim_max: limit };
    // SAFETY: prlimit on the training child this test's daemon started, with a valid rlimit.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_FSIZE, &rl, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    let before: BTreeMap<String, Vec<u8>> = ["1.safetensors", "1.state.safetensors", "1.json"]
        .iter()
        .map(|n| (n.to_string(), std::fs::read(ckpt.join(n)).unwrap()))
        .collect();

    let failed = env.wait_state(&id, "failed", TRAIN_TIMEOUT);
    let reason = failed["exit_reason"].as_str().unwrap();
    assert!(reason.contains("checkpoint") && reason.contains("File too large"), "{reason}");
    assert!(reason.contains(&ckpt.display().to_string()), "the reason names the file: {reason}");
    // No partial file, checkpoint 1 byte for byte as it was, and only complete checkpoints listed.
    let names: Vec<String> =
        std::fs::read_dir(&ckpt).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    assert!(!names.iter().any(|n| n.contains(".tmp")), "partial file left: {names:?}");
    for (n, bytes) in &before {
        assert!(std::fs::read(ckpt.join(n)).unwrap() == *bytes, "{n} changed");
    }
    let meta = rush_trainer::train::checkpoint::load_meta(&ckpt.join("1.json")).expect("checkpoint 1's JSON loads");
    assert_eq!(meta.epoch, 1);
    let tensors =
        rush_trainer::tch::Tensor::read_safetensors(ckpt.join("1.safetensors")).expect("checkpoint 1's weights load");
    assert!(!tensors.is_empty());
    rush_trainer::train::checkpoint::load_state(&ckpt.join("1.state.safetensors")).expect("checkpoint 1's state loads");
    let rows: Vec<(i64, String)> = env.db(&format!("SELECT epoch, path FROM checkpoints WHERE session = '{id}'"));
    assert!(rows.iter().any(|r| r.0 == 1), "{rows:?}");
    for (_, path) in &rows {
        assert!(Path::new(path).is_file(), "a listed checkpoint is missing: {path}");
    }
    // And it is usable: a fork from checkpoint 1 trains.
    let fork = env.ok(&["fork", &id, "-c", "1", "-a", "epochs=1"]);
    let fork = fork.lines().next().unwrap().trim().to_string();
    env.wait_state(&fork, "succeeded", TRAIN_TIMEOUT);
    eprintln!("figure: checkpoint limit {limit} B (weights {weights} B, state {state} B); reason: {reason}");
}

// ---------------------------------------------------------------------------------------------------------------
// 5. Access
// ---------------------------------------------------------------------------------------------------------------

/// Every mutating route the web layer declares (method, path pattern), read from the source so that a new route
/// without a test here fails `every_mutating_route_is_listed`.
const MUTATING_ROUTES: &[(&str, &str)] = &[
    ("DELETE", "/api/sessions/{user}/{dataset}/{n}"),
    ("POST", "/api/sessions/{user}/{dataset}/{n}/stop"),
    ("POST", "/api/sessions/{user}/{dataset}/{n}/fork"),
    ("DELETE", "/api/sessions/{user}/{dataset}/{n}/checkpoints/{checkpoint}"),
    ("POST", "/api/datasets/{name}"),
    ("POST", "/api/submissions"),
    // `rush run` (queues a spec; accepted with the token in tests/it/daemon.rs and tests/it/users.rs)
    ("POST", "/api/runs"),
    ("POST", "/sessions/{user}/{dataset}/{n}/stop"),
    ("POST", "/sessions/{user}/{dataset}/{n}/fork"),
    // Where the browser presents the token; its handler checks it (tested below).
    ("POST", "/login"),
    ("POST", "/logout"),
];

/// The routes of `src/web/**/*.rs` with a method other than GET, as (METHOD, full path).
fn declared_mutating_routes() -> BTreeSet<(String, String)> {
    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().and_then(|e| e.to_str()) == Some("rs") {
                out.push(path);
            }
        }
    }
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/web");
    let mut files = Vec::new();
    rust_files(&web, &mut files);
    let mut out = BTreeSet::new();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        // Without the test module at the end (a `#[cfg(test)] mod fixture;` declaration higher up stays).
        let text = text.split("#[cfg(test)]\nmod tests").next().unwrap();
        // api.rs and submissions.rs (not pages/submissions.rs) are nested under /api (see src/web/mod.rs).
        let api = ["api.rs", "submissions.rs"].iter().any(|f| path == web.join(f));
        let prefix = if api { "/api" } else { "" };
        for chunk in text.split(".route(").skip(1) {
            let Some(route) = chunk.trim_start().strip_prefix('"').and_then(|r| r.split('"').next()) else { continue };
            let end = chunk.find("\n        .").unwrap_or(chunk.len()).min(chunk.find(";\n").unwrap_or(chunk.len()));
            let handlers = &chunk[..end];
            for (method, needle) in [("POST", "post("), ("DELETE", "delete("), ("PUT", "put("), ("PATCH", "patch(")] {
                if handlers.contains(needle) {
                    out.insert((method.to_string(), format!("{prefix}{route}")));
                }
            }
        }
    }
    out
}

#[test]
fn every_mutating_route_is_listed() {
    let declared = declared_mutating_routes();
    let listed: BTreeSet<(String, String)> =
        MUTATING_ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    assert!(!declared.is_empty());
    let missing: Vec<_> = declared.difference(&listed).collect();
    assert!(missing.is_empty(), "mutating routes not covered by the access test: {missing:?}");
    let stale: Vec<_> = listed.difference(&declared).collect();
    assert!(stale.is_empty(), "listed routes the web layer no longer declares: {stale:?}");
}

/// A dry-run submission of a session's last checkpoint, as `POST /api/submissions` takes it.
fn dry_run(session: &str) -> serde_json::Value {
    serde_json::json!({"members": [{"session": session, "checkpoint": "last", "weight": 1.0}], "tta": "none", "dry_run": true})
}

/// Sends one raw HTTP/1.1 request (the path exactly as given, no client normalising `..`); returns status and body.
fn raw_get(base: &str, path: &str, token: &str) -> (u16, String) {
    let addr = base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    let mut bytes = vec![];
    s.read_to_end(&mut bytes).unwrap();
    out.push_str(&String::from_utf8_lossy(&bytes));
    let status = out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, out)
}

/// A daemon bound to 0.0.0.0 with a token: every mutating route refuses without it and works with it, reads need it
/// too, the token is in no log, hostile memos and spec names are escaped on every page, file routes stay inside the
/// session folder, and test labels are out of reach of the API, the session folder and the child.
#[test]
fn a_daemon_beyond_loopback_guards_every_route_escapes_names_and_hides_labels() {
    const TOKEN: &str = "tok-reliab-7f3a9c41d2e8b605";
    const HOSTILE: &str = "<script>alert(1)</script> \"q\" 'a' <b>x</b> &amp;";
    let mut env = Env::new();
    start_daemon(&mut env, "0.0.0.0:0", 1, &[("RUSH_TOKEN", TOKEN), ("RUST_LOG", "debug,sqlx=warn,hyper=debug")]);
    let base = base_url(&env);
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let with = |rb: reqwest::blocking::RequestBuilder| rb.bearer_auth(TOKEN);
    // The API with the token (the common helpers go without one).
    let get = |path: &str| -> serde_json::Value {
        let r = with(client.get(format!("{base}{path}"))).send().unwrap();
        assert_eq!(r.status().as_u16(), 200, "GET {path}");
        r.json().unwrap()
    };
    let session = |id: &str| get(&format!("/api/sessions/{id}"));
    let verdict = |path: &Path| -> serde_json::Value {
        wait_for(Duration::from_secs(30), "a verdict", || {
            let rows = get(&format!("/api/specs?path={}", path.display()));
            rows.as_array().unwrap().first().cloned()
        })
    };
    let wait_state = |id: &str, state: &str| {
        wait_for(TRAIN_TIMEOUT, &format!("{id} {state}"), || {
            let s = session(id);
            assert!(!["failed", "stopped"].contains(&s["state"].as_str().unwrap()), "{s}");
            (s["state"] == state).then_some(s)
        })
    };
    // The CLI, with the token from its environment.
    let cli = |args: &[&str]| {
        let out = Command::new(rush_exe())
            .args(args)
            .env("RUSH_HOME", &env.home)
            .env("RUSH_TOKEN", TOKEN)
            .env_remove("RUSH_URL")
            .current_dir(env.tmp.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "rush {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let src = env.tmp.path().join("src-acc");
    crate::common::synth(&src, 51);
    let labels_text = std::fs::read_to_string(src.join("test/test_labels.csv")).unwrap();
    cli(&["dataset", "push", "acc", src.to_str().unwrap()]);
    let label_file = env.home.join("labels/acc/test_labels.csv");
    assert!(label_file.is_file() && !env.home.join("datasets/acc/test/test_labels.csv").exists());

    // A finished session (with a hostile memo) and a hostile spec file name, rejected.
    let spec = env.drop_spec("memo.yaml", &quick_spec("acc", 1, &format!("memo: {}\n", serde_json::json!(HOSTILE))));
    let done_id = verdict(&spec)["sessions"][0].as_str().unwrap().to_string();
    let hostile_file = env.drop_spec("<img src=x onerror=alert(1)>.yaml", "dataset: [\n");
    assert_eq!(verdict(&hostile_file)["status"], "rejected");
    wait_state(&done_id, "succeeded");
    assert_eq!(session(&done_id)["memo"], HOSTILE);
    let long = env.drop_spec("long.yaml", &quick_spec("acc", 200, ""));
    let run_id = verdict(&long)["sessions"][0].as_str().unwrap().to_string();
    wait_state(&run_id, "running");
    let child = wait_for(Duration::from_secs(30), "a pid", || session(&run_id)["pid"].as_i64()) as u32;

    // Reads need the token beyond loopback.
    for path in ["/api/info", "/api/sessions", "/sessions", "/specs"] {
        let r = client.get(format!("{base}{path}")).send().unwrap();
        assert_eq!(r.status().as_u16(), 401, "GET {path} without the token");
    }

    // Every mutating route: refused without the token and with a wrong one, accepted with it.
    let fill = |p: &str, id: &str| {
        let mut it = id.split('/');
        let (u, d, n) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
        p.replace("{user}", u)
            .replace("{dataset}", d)
            .replace("{n}", n)
            .replace("{checkpoint}", "1")
            .replace("{name}", "acc")
    };
    for (method, pattern) in MUTATING_ROUTES {
        let url = format!("{base}{}", fill(pattern, &done_id));
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let body_json = pattern.starts_with("/api") && pattern.ends_with("/fork");
        for token in [None, Some("wrong-token")] {
            if *pattern == "/login" {
                // The login form answers itself; a missing or wrong token sets no cookie.
                let r = client.post(&url).form(&[("token", token.unwrap_or(""))]).send().unwrap();
                assert_eq!(r.status().as_u16(), 401, "login with {token:?}");
                assert!(r.headers().get("set-cookie").is_none(), "login with {token:?} set a cookie");
                continue;
            }
            let mut rb = client.request(m.clone(), &url);
            if let Some(t) = token {
                rb = rb.bearer_auth(t);
            }
            if pattern.ends_with("/submissions") {
                rb = rb.json(&dry_run(&done_id));
            } else if pattern.ends_with("/runs") {
                rb = rb.json(&serde_json::json!({"source": "rush run -d acc", "spec": "dataset: acc\n"}));
            } else if body_json {
                rb = rb.json(&serde_json::json!({"checkpoint": "1"}));
            } else if pattern.ends_with("/fork") {
                rb = rb.form(&[("checkpoint", "1")]);
            }
            let status = rb.send().unwrap().status().as_u16();
            assert!(matches!(status, 401 | 403), "{method} {url} with {token:?}: {status}");
        }
    }
    // A forged cross-site form post (no token) is refused too.
    let r = client
        .post(format!("{base}{}", fill("/sessions/{user}/{dataset}/{n}/stop", &run_id)))
        .header("Origin", "http://evil.example")
        .send()
        .unwrap();
    assert!(matches!(r.status().as_u16(), 401 | 403), "{}", r.status());
    assert_eq!(session(&run_id)["state"], "running", "a refused request changed something");
    assert!(session(&done_id)["state"] == "succeeded");

    // With the token each one works (in an order where each has something to act on).
    let ok = |r: reqwest::blocking::Response| {
        let status = r.status().as_u16();
        assert!(status < 400, "{status}: {}", r.text().unwrap_or_default());
    };
    ok(with(client.post(format!("{base}/api/datasets/acc"))).send().unwrap());
    ok(with(client.post(format!("{base}/api/submissions"))).json(&dry_run(&done_id)).send().unwrap());
    ok(with(client.post(format!("{base}{}", fill("/api/sessions/{user}/{dataset}/{n}/fork", &done_id))))
        .json(&serde_json::json!({"checkpoint": "1", "args": "epochs=100"}))
        .send()
        .unwrap());
    let page_fork = with(client.post(format!("{base}{}", fill("/sessions/{user}/{dataset}/{n}/fork", &done_id))))
        .form(&[("checkpoint", "1"), ("args", "epochs=100"), ("memo", HOSTILE)])
        .send()
        .unwrap();
    ok(page_fork);
    let forks: Vec<(String,)> = env.db(&format!("SELECT id FROM sessions WHERE fork_of = '{done_id}:1' ORDER BY seq"));
    assert_eq!(forks.len(), 2, "{forks:?}");
    ok(with(client.post(format!("{base}{}", fill("/api/sessions/{user}/{dataset}/{n}/stop", &forks[0].0))))
        .send()
        .unwrap());
    ok(with(client.post(format!("{base}{}", fill("/sessions/{user}/{dataset}/{n}/stop", &forks[1].0))))
        .send()
        .unwrap());
    assert_eq!(session(&forks[1].0)["state"], "stopped");
    ok(with(client.delete(format!("{base}{}", fill("/api/sessions/{user}/{dataset}/{n}", &forks[0].0))))
        .send()
        .unwrap());
    let gone = with(client.get(format!("{base}/api/sessions/{}", forks[0].0))).send().unwrap();
    assert_eq!(gone.status().as_u16(), 404);
    // The guard lets the checkpoint's deletion through; the daemon refuses it, since the queued dry run needs it.
    let pinned = with(
        client
            .delete(format!("{base}{}", fill("/api/sessions/{user}/{dataset}/{n}/checkpoints/{checkpoint}", &done_id))),
    )
    .send()
    .unwrap();
    assert_eq!(pinned.status().as_u16(), 409);
    let text = pinned.text().unwrap_or_default();
    assert!(text.contains(&format!("checkpoint 1 of {done_id} is still needed by submission")), "{text}");
    let login = client.post(format!("{base}/login")).form(&[("token", TOKEN)]).send().unwrap();
    assert!(
        login.headers().get_all("set-cookie").iter().any(|c| c.to_str().unwrap_or_default().contains("rush_token")),
        "login with the right token sets the cookie"
    );

    // Hostile names are escaped on every page.
    let pages = [
        "/sessions".to_string(),
        format!("/sessions/{done_id}"),
        format!("/sessions/{}", forks[1].0),
        format!("/compare?s={done_id}&s={}", forks[1].0),
        "/ensemble".into(),
        "/specs".into(),
        "/datasets".into(),
        "/system".into(),
    ];
    for page in &pages {
        let r = with(client.get(format!("{base}{page}"))).send().unwrap();
        assert_eq!(r.status().as_u16(), 200, "{page}");
        let html = r.text().unwrap();
        for raw in ["<script>alert(1)</script>", "<b>x</b>", "<img src=x onerror"] {
            assert!(!html.contains(raw), "{page} shows {raw:?} unescaped");
        }
    }
    let specs = with(client.get(format!("{base}/specs"))).send().unwrap().text().unwrap();
    // Escaped as `&lt;` or `&#60;`: either way shown as text.
    let shown = |html: &str, inner: &str| ["&lt;", "&#60;"].iter().any(|lt| html.contains(&format!("{lt}{inner}")));
    assert!(shown(&specs, "img src=x onerror=alert(1)"), "the hostile spec name is listed, escaped");
    let page = with(client.get(format!("{base}/sessions/{done_id}"))).send().unwrap().text().unwrap();
    assert!(shown(&page, "script") && shown(&page, "/script"), "the memo is shown, escaped");

    // File routes stay inside the session folder: `..`, absolute paths and symlinks out are refused.
    let sdir = env.session_dir(&done_id);
    std::os::unix::fs::symlink(&label_file, sdir.join("labels-link.csv")).unwrap();
    std::os::unix::fs::symlink(env.home.join("rush.db"), sdir.join("db-link")).unwrap();
    std::os::unix::fs::symlink("/etc", sdir.join("etc-link")).unwrap();
    let files = format!("/sessions/{done_id}/files");
    let (status, body) = raw_get(&base, &format!("{files}/spec.yaml"), TOKEN);
    assert_eq!(status, 200, "{body}");
    for bad in [
        "../../../../rush.db",
        "..%2F..%2F..%2F..%2Frush.db",
        "%2e%2e/%2e%2e/%2e%2e/%2e%2e/labels/acc/test_labels.csv",
        "%2Fetc%2Fpasswd",
        "/etc/passwd",
        "labels-link.csv",
        "db-link",
        "etc-link/passwd",
        "checkpoints/..%2F..%2F..%2F..%2F..%2Frush.db",
    ] {
        let (status, body) = raw_get(&base, &format!("{files}/{bad}"), TOKEN);
        assert!(matches!(status, 400 | 404), "{bad}: {status}\n{body}");
        assert!(!body.contains("SQLite format") && !body.contains("root:") && !body.contains(&labels_text), "{bad}");
    }
    // Names in paths are validated: no dataset or session outside its folder, even with the token.
    for (method, path) in [
        ("POST", "/api/datasets/%2E%2E"),
        ("POST", "/api/datasets/..%2Flabels"),
        ("GET", "/api/sessions/..%2F..%2F/x/1"),
        ("DELETE", "/api/sessions/tester/..%2F..%2Flabels/1"),
        ("GET", "/sessions/tester/%2E%2E/1/files/rush.db"),
    ] {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let r = with(client.request(m, format!("{base}{path}"))).send().unwrap();
        let status = r.status().as_u16();
        assert!((400..500).contains(&status), "{method} {path}: {status}");
    }
    assert!(env.home.join("labels/acc/test_labels.csv").is_file() && env.home.join("rush.db").is_file());
    for link in ["labels-link.csv", "db-link", "etc-link"] {
        std::fs::remove_file(sdir.join(link)).unwrap();
    }

    // Test labels are out of reach: no API answer, no file of a session folder, no child's command line or
    // environment names them; and neither they nor the token are in the logs.
    let label_words = ["test_labels", &env.home.join("labels").display().to_string()];
    let api = [
        "/api/info".to_string(),
        "/api/sessions?all=true".into(),
        format!("/api/sessions/{run_id}"),
        format!("/api/sessions/{run_id}/logs"),
        format!("/api/sessions/{run_id}/metrics"),
        format!("/api/sessions/{run_id}/checkpoints"),
        format!("/api/sessions/{done_id}/events"),
        "/api/specs?limit=10000".into(),
        "/api/datasets".into(),
        "/metrics".into(),
    ];
    for path in &api {
        let r = with(client.get(format!("{base}{path}"))).send().unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
        let body = r.text().unwrap();
        for w in label_words {
            assert!(!body.contains(w), "{path} names {w}");
        }
        assert!(!body.contains(labels_text.trim()), "{path} holds the labels");
        assert!(!body.contains(TOKEN), "{path} shows the token");
    }
    let mut stack = vec![env.home.join("sessions")];
    let mut seen_files = 0;
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let t = e.file_type().unwrap();
            assert!(!t.is_symlink(), "a symlink in a session folder: {}", e.path().display());
            if t.is_dir() {
                stack.push(e.path());
            } else {
                let bytes = std::fs::read(e.path()).unwrap();
                let text = String::from_utf8_lossy(&bytes);
                for w in label_words {
                    assert!(!text.contains(w), "{} names {w}", e.path().display());
                }
                assert!(!text.contains(TOKEN), "{} holds the token", e.path().display());
                seen_files += 1;
            }
        }
    }
    assert!(seen_files >= 5, "{seen_files} files in the session folders");
    let cmdline = String::from_utf8_lossy(&std::fs::read(format!("/proc/{child}/cmdline")).unwrap()).to_string();
    let environ = String::from_utf8_lossy(&std::fs::read(format!("/proc/{child}/environ")).unwrap()).to_string();
    for (what, text) in [("command line", &cmdline), ("environment", &environ)] {
        for w in label_words.iter().chain(&["labels", "rush.db", TOKEN, "RUSH_TOKEN", "RUSH_HOME"]) {
            assert!(!text.contains(w), "the child's {what} names {w}: {text:?}");
        }
    }
    let daemon_pid = env.daemon_pid();
    let daemon_cmdline = std::fs::read(format!("/proc/{daemon_pid}/cmdline")).unwrap();
    assert!(!String::from_utf8_lossy(&daemon_cmdline).contains(TOKEN), "the token came from the environment");
    env.stop_daemon();
    let log = env.daemon_log();
    assert!(log.contains("rush daemon on http://0.0.0.0:"), "{log}");
    assert!(!log.contains(TOKEN), "the daemon log holds the token");
    for id in [&done_id, &run_id] {
        let train_log = std::fs::read_to_string(env.session_dir(id).join("train.log")).unwrap_or_default();
        assert!(!train_log.contains(TOKEN));
    }
}

/// The default bind is loopback.
#[test]
fn the_default_bind_is_loopback() {
    assert!(rush::daemon::config::DEFAULT_BIND.parse::<std::net::SocketAddr>().unwrap().ip().is_loopback());
}

/// Starts a spec in place at `path`: a valid spec of its own, written and flushed, the file left open.
fn start_writing(env: &Env, path: &Path, dataset: &str) -> std::fs::File {
    env.push_synth(dataset, 5);
    let mut file = std::fs::File::create(path).unwrap();
    file.write_all(quick_spec(dataset, 1, "").as_bytes()).unwrap();
    file.flush().unwrap();
    file
}

/// Checks nothing of `file` was read while it stayed open, then finishes and closes it: the whole file is queued, once.
fn finish_writing(env: &Env, path: &Path, mut file: std::fs::File) {
    assert!(env.spec_rows(path).is_empty(), "a file still open for writing was read: {:?}", env.spec_rows(path));
    file.write_all(b"memo: the whole file\n").unwrap();
    drop(file);
    let verdict = env.verdict(path);
    assert_eq!(verdict["status"], "accepted", "{verdict}");
    // Nothing more arrives later (a second read of the same content is skipped).
    std::thread::sleep(Duration::from_millis(1500));
    let rows = env.spec_rows(path);
    assert_eq!(rows.len(), 1, "{rows:?}");
    let id = rows[0]["sessions"][0].as_str().unwrap();
    assert_eq!(env.session(id).unwrap()["memo"], "the whole file");
}

/// A spec written in place (not renamed into place) by a writer that pauses mid-file: its first part is a valid spec
/// of its own, yet only the whole file, read after the writer closes it, is queued.
#[test]
fn a_spec_written_in_place_is_read_once_the_writer_closes_it() {
    let mut env = Env::new();
    env.start();
    let path = env.experiments.join("in-place.yaml");
    let file = start_writing(&env, &path, "ip");
    // Longer than the watcher's debounce and than a scan's freshness window.
    std::thread::sleep(Duration::from_millis(2500));
    finish_writing(&env, &path, file);
}

/// The same writer, already paused mid-file when the daemon starts (so no event ever said it was writing, and the
/// file is older than a scan's freshness window): the start-up scan sees it is still open for writing and waits for
/// its close.
#[test]
fn a_spec_half_written_when_the_daemon_starts_is_read_once_the_writer_closes_it() {
    let mut env = Env::new();
    let path = env.experiments.join("half-written.yaml");
    let file = start_writing(&env, &path, "hw");
    std::thread::sleep(Duration::from_millis(1500));
    env.start();
    // The start-up scan has run, and the file's freshness window is long past.
    std::thread::sleep(Duration::from_millis(2500));
    finish_writing(&env, &path, file);
}

// ---------------------------------------------------------------------------------------------------------------
// 6. Load
// ---------------------------------------------------------------------------------------------------------------

/// 10,000 spec files written in a tight loop (half into a folder made after the daemon started: past inotify's
/// queue) are each enqueued exactly once, while one session trains and 100 concurrent API clients all get answers.
#[test]
fn ten_thousand_specs_at_once_are_each_queued_once_and_a_hundred_clients_get_answers() {
    let files = 10_000;
    let mut env = Env::new();
    env.start();
    env.push_synth("ld", 61);
    let trainer = env.queue("trainer.yaml", &quick_spec("ld", 500, ""));
    env.wait_state(&trainer, "running", TRAIN_TIMEOUT);
    let base = base_url(&env);

    // 100 clients at once, while the session trains and the burst below is taken in.
    let clients = {
        let base = base.clone();
        let trainer = trainer.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(500));
            let paths = [
                "/api/info".to_string(),
                format!("/api/sessions/{trainer}"),
                format!("/api/sessions/{trainer}/metrics"),
                "/sessions".into(),
                format!("/sessions/{trainer}"),
                "/api/specs?limit=20".into(),
                "/metrics".into(),
            ];
            let handles: Vec<_> = (0..100)
                .map(|i| {
                    let url = format!("{base}{}", paths[i % paths.len()]);
                    std::thread::spawn(move || {
                        let client =
                            reqwest::blocking::Client::builder().timeout(Duration::from_secs(120)).build().unwrap();
                        let t = Instant::now();
                        let r = client.get(&url).send().map(|r| (r.status().as_u16(), r.bytes().map(|b| b.len())));
                        (url, r.map_err(|e| e.to_string()), t.elapsed())
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect::<Vec<_>>()
        })
    };

    let started = Instant::now();
    let sub = env.experiments.join("burst");
    std::fs::create_dir(&sub).unwrap();
    let mut paths = Vec::with_capacity(files);
    for i in 0..files {
        let dir = if i % 2 == 0 { &env.experiments } else { &sub };
        let path = dir.join(format!("load-{i:05}.yaml"));
        std::fs::write(&path, quick_spec("ld", 1, &format!("memo: load {i}\n"))).unwrap();
        paths.push(path);
    }
    let written = started.elapsed();

    let answers = clients.join().unwrap();
    let mut latencies: Vec<Duration> = answers.iter().map(|a| a.2).collect();
    for (url, r, _) in &answers {
        match r {
            Ok((status, Ok(len))) => assert!(*status == 200 && *len > 0, "{url}: {status}"),
            other => panic!("{url}: no answer: {other:?}"),
        }
    }
    latencies.sort();

    let count = |sql: &str| -> i64 { env.db::<(i64,)>(sql)[0].0 };
    let queued = wait_for(Duration::from_secs(600), "every file enqueued", || {
        let n = count("SELECT COUNT(*) FROM sessions s JOIN specs p ON s.spec_id = p.id WHERE p.path LIKE '%load-%'");
        (n >= files as i64).then_some(n)
    });
    let took = started.elapsed();
    // Let any late duplicate arrive (the safety-net rescan runs every minute; the watcher's debounce is 150 ms).
    std::thread::sleep(Duration::from_secs(3));
    let per_path: Vec<(String, i64)> = env
        .db("SELECT p.path, COUNT(s.id) FROM specs p LEFT JOIN sessions s ON s.spec_id = p.id WHERE p.path LIKE \
         '%load-%' GROUP BY p.path");
    let by_path: BTreeMap<String, i64> = per_path.into_iter().collect();
    for p in &paths {
        let n = by_path.get(&p.display().to_string()).copied().unwrap_or(0);
        assert_eq!(n, 1, "{} queued {n} times", p.display());
    }
    assert_eq!(count("SELECT COUNT(*) FROM sessions"), files as i64 + 1, "sessions in all");
    let rejected = count("SELECT COUNT(*) FROM specs WHERE status = 'rejected'");
    assert_eq!(queued, files as i64);
    // The trainer kept running through it all.
    let s: serde_json::Value = http().get(format!("{base}/api/sessions/{trainer}")).send().unwrap().json().unwrap();
    assert_eq!(s["state"], "running", "{s}");
    eprintln!(
        "figure: {files} spec files written in {:.1} s, all queued once after {:.1} s ({rejected} transient \
         rejections of half-written files); 100 concurrent clients: median {:.0} ms, max {:.0} ms",
        written.as_secs_f64(),
        took.as_secs_f64(),
        latencies[latencies.len() / 2].as_secs_f64() * 1e3,
        latencies.last().unwrap().as_secs_f64() * 1e3
    );
}

// ---------------------------------------------------------------------------------------------------------------
// 7. An old database
// ---------------------------------------------------------------------------------------------------------------

/// For every earlier schema (the first k migrations, as an older rush left them): rows written then are all there after
/// the current store opens the file, and the later tables and columns exist.
#[test]
fn migrations_upgrade_an_old_database_without_loss() {
    let all = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&all).unwrap().flatten().map(|e| e.path()).collect();
    files.retain(|p| p.extension().and_then(|e| e.to_str()) == Some("sql"));
    files.sort();
    assert!(files.len() >= 2);
    for k in 1..files.len() {
        let tmp = tempfile::tempdir().unwrap();
        let old = tmp.path().join("old-migrations");
        std::fs::create_dir(&old).unwrap();
        for f in &files[..k] {
            std::fs::copy(f, old.join(f.file_name().unwrap())).unwrap();
        }
        let db = tmp.path().join("rush.db");
        block_on(async {
            use sqlx::ConnectOptions;
            let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(&db)
                .create_if_missing(true)
                .connect()
                .await
                .unwrap();
            sqlx::migrate::Migrator::new(old.as_path()).await.unwrap().run(&mut conn).await.unwrap();
            let spec = serde_json::json!({"session": "old/emoji/1", "dataset_path": "/x", "dataset": "emoji"});
            for sql in [
                "INSERT INTO datasets VALUES ('emoji', '/h/datasets/emoji', 300, 8, 60, 1.0)".to_string(),
                "INSERT INTO specs (id, path, hash, status, error, seen_at) VALUES (1, '/e/a.yaml', 'h1', 'accepted', \
                 NULL, 2.0), (2, '/e/b.yaml', 'h2', 'rejected', '/e/b.yaml: bad', 3.0)"
                    .into(),
                "INSERT INTO session_counters VALUES ('old', 'emoji', 1)".into(),
                format!(
                    "INSERT INTO sessions (id, user, dataset, n, spec_id, spec, memo, priority, device, state, seq, \
                     queued_at, started_at, finished_at, exit_reason, epochs, epoch, best_val_acc) VALUES \
                     ('old/emoji/1', 'old', 'emoji', 1, 1, '{spec}', 'from the old days', 0, 'cpu', 'succeeded', 1, \
                     4.0, 5.0, 6.0, NULL, 2, 2, 0.5)"
                ),
                "INSERT INTO metrics VALUES ('old/emoji/1', 1, 1, 'loss', 2.5, 5.1), ('old/emoji/1', 7, 1, 'val_acc', \
                 0.4, 5.2), ('old/emoji/1', 14, 2, 'val_acc', 0.5, 5.3)"
                    .into(),
                "INSERT INTO checkpoints VALUES ('old/emoji/1', 2, '2', '/h/c/2.safetensors', 0.5, 1.0, 1.1, 123, \
                 5.4)"
                    .into(),
                "INSERT INTO events (session, t, kind, body) VALUES ('old/emoji/1', 5.0, 'started', '{}')".into(),
            ] {
                sqlx::query(&sql).execute(&mut conn).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
            }
            sqlx::Connection::close(conn).await.unwrap();

            let store = rush::store::Store::open(&db).await.expect("the current store opens an old database");
            let id: rush::core::session::SessionId = "old/emoji/1".parse().unwrap();
            let s = store.session(&id).await.unwrap().expect("the old session");
            assert_eq!((s.memo.as_str(), s.epochs, s.best_val_acc), ("from the old days", 2, Some(0.5)));
            assert_eq!(store.datasets().await.unwrap().len(), 1);
            assert_eq!(store.metrics(&id, None).await.unwrap().len(), 3);
            assert_eq!(store.checkpoints(&id).await.unwrap().len(), 1);
            let specs = store.specs(None, 10).await.unwrap();
            assert_eq!(specs.len(), 2);
            assert_eq!(store.integrity_check().await.unwrap(), "ok");
            store.close().await;
        });
        // Every migration is now applied, and their tables and columns are there.
        block_on(async {
            use sqlx::ConnectOptions;
            let mut conn = sqlx::sqlite::SqliteConnectOptions::new().filename(&db).connect().await.unwrap();
            let applied: Vec<(i64,)> =
                sqlx::query_as("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
                    .fetch_all(&mut conn)
                    .await
                    .unwrap();
            assert_eq!(applied.len(), files.len(), "after starting from {k} migration(s)");
            let columns: Vec<(String,)> =
                sqlx::query_as("SELECT name FROM pragma_table_info('sessions')").fetch_all(&mut conn).await.unwrap();
            let columns: BTreeSet<String> = columns.into_iter().map(|c| c.0).collect();
            assert!(columns.contains("slurm_job") && columns.contains("events_offset"), "{columns:?}");
            let indexes: Vec<(String,)> = sqlx::query_as("SELECT name FROM sqlite_master WHERE type = 'index'")
                .fetch_all(&mut conn)
                .await
                .unwrap();
            assert!(indexes.iter().any(|i| i.0 == "sessions_by_seq"), "{indexes:?}");
            sqlx::Connection::close(conn).await.unwrap();
        });
    }
}
