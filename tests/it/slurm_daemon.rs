//! The daemon with `executor: slurm` end to end, against the real single-node cluster of `scripts/slurm-up.sh` (its
//! `SLURM_CONF` exported by `scripts/test.sh`; without it these tests fail): real `rush train` and `rush infer` batch
//! jobs, real SQLite, the CLI. The cluster's two GPUs are fake, so jobs get them (`--gres=gpu:1`) and run on the CPU.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use rush::core::slurm::{JobId, JobState, home_tag, infer_job_name, job_name};
use rush::slurm::SlurmClient;

use crate::common::{Env, block_on, wait_for};

const TIMEOUT: Duration = Duration::from_secs(300);

/// A daemon on `executor: slurm`, with a tiny synthetic dataset pushed as `synth`.
fn slurm_env() -> Env {
    let conf = std::env::var("SLURM_CONF")
        .expect("SLURM_CONF is not set: start the test cluster with `eval \"$(scripts/slurm-up.sh --env)\"`");
    assert!(PathBuf::from(&conf).is_file(), "SLURM_CONF={conf} does not exist: run scripts/slurm-up.sh");
    let mut env = Env::new();
    start_slurm_daemon(&mut env, &[]);
    env.push_synth("synth", 1);
    env
}

/// Writes the daemon's config (`rush.yaml`: executor slurm, with `extra_args` for every job) and starts the daemon.
fn start_slurm_daemon(env: &mut Env, extra_args: &[&str]) {
    let config = env.tmp.path().join("rush.yaml");
    std::fs::write(
        &config,
        format!(
            "executor: slurm\nslurm:\n  trainer_device: cpu  # the test cluster's GPUs are fake\n  cpus_per_task: 1\n  \
             memory: 1G\n  gpu_jobs: 3\n  cpu_jobs: 2\n  poll_ms: 200\n  extra_args: {extra_args:?}\n"
        ),
    )
    .unwrap();
    env.start_with(&["--config", config.to_str().unwrap()]);
}

/// A small spec (baseline CNN at 32 px); `extra` adds fields.
fn spec(epochs: u32, gpus: u32, extra: &str) -> String {
    format!(
        "dataset: synth\nmodel: baseline_cnn\nimage_size: 32\nbatch_size: 32\nepochs: {epochs}\nprecision: fp32\n\
         optimizer: {{name: adamw, lr: 0.003}}\nschedule: {{name: constant, warmup_epochs: 0}}\n\
         resources: {{gpus: {gpus}}}\nseed: 3\n{extra}"
    )
}

fn queue(env: &Env, name: &str, yaml: &str) -> Vec<String> {
    let verdict = env.verdict(&env.drop_spec(name, yaml));
    assert_eq!(verdict["status"], "accepted", "{verdict}");
    verdict["sessions"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
}

/// The session's Slurm job id and attempt count, as the store keeps them.
fn job_of(env: &Env, id: &str) -> (Option<JobId>, i64) {
    let rows: Vec<(Option<i64>, i64)> =
        env.db(&format!("SELECT slurm_job, slurm_attempt FROM sessions WHERE id = '{id}'"));
    (rows[0].0.map(|j| JobId(j as u64)), rows[0].1)
}

fn train_log(env: &Env, id: &str) -> String {
    std::fs::read_to_string(env.session_dir(id).join("train.log")).unwrap_or_default()
}

fn client() -> SlurmClient {
    SlurmClient::new(None)
}

/// Epoch-level rows of a session: (metric, epoch, value) for the epoch metrics, checkpoint epochs and event kinds.
type Rows = (Vec<(String, i64, f64)>, Vec<(String, i64)>, Vec<(i64, String)>, Vec<String>);

fn rows(env: &Env, id: &str) -> Rows {
    let epoch_metrics = env.db(&format!(
        "SELECT name, epoch, value FROM metrics WHERE session = '{id}' AND name IN ('val_acc', 'val_loss', \
         'train_loss', 'train_acc') ORDER BY name, epoch"
    ));
    let step_counts = env.db(&format!(
        "SELECT name, COUNT(*) FROM metrics WHERE session = '{id}' AND name IN ('loss', 'lr') GROUP BY name ORDER BY name"
    ));
    let checkpoints = env.db(&format!("SELECT epoch, name FROM checkpoints WHERE session = '{id}' ORDER BY epoch"));
    let kinds: Vec<(String,)> = env.db(&format!("SELECT kind FROM events WHERE session = '{id}' ORDER BY id"));
    (epoch_metrics, step_counts, checkpoints, kinds.into_iter().map(|k| k.0).collect())
}

#[test]
fn slurm_daemon_runs_a_spec_to_success_with_the_rows_of_a_local_run() {
    let mut local = Env::new();
    local.start();
    local.push_synth("synth", 1);
    let slurm = slurm_env();
    let yaml = spec(3, 0, "");
    let on_slurm = queue(&slurm, "same.yaml", &yaml).remove(0);
    let on_local = queue(&local, "same.yaml", &yaml).remove(0);
    let done = slurm.wait_state(&on_slurm, "succeeded", TIMEOUT);
    let done_local = local.wait_state(&on_local, "succeeded", TIMEOUT);
    for field in ["state", "epoch", "best_val_acc", "device", "epochs"] {
        assert_eq!(done[field], done_local[field], "{field}: slurm {done} vs local {done_local}");
    }
    let (job, attempt) = job_of(&slurm, &on_slurm);
    let job = job.expect("the session recorded its job");
    assert_eq!(attempt, 1);
    let status = block_on(client().status(job)).unwrap();
    assert_eq!(status.state, JobState::Completed);
    let log = train_log(&slurm, &on_slurm);
    assert!(log.contains(&format!("submitted as Slurm job {job}")) && log.contains("epoch 3/3"), "{log}");
    // The same store rows as the local run: every epoch's metrics (same seed, same CPU: the same values), step
    // counts, checkpoints kept, and the events in order.
    let (a, b) = (rows(&slurm, &on_slurm), rows(&local, &on_local));
    assert_eq!(a.0.len(), 12, "four epoch metrics for three epochs: {:?}", a.0);
    assert_eq!(a, b, "slurm rows differ from local rows");
    assert_eq!(a.3.first().map(String::as_str), Some("started"));
    assert_eq!(a.3.last().map(String::as_str), Some("finished"));
    // The same live view: `rush logs` shows what the trainer wrote.
    let logs = slurm.ok(&["logs", &on_slurm]);
    assert!(logs.contains("epoch 3/3"), "{logs}");
}

#[test]
fn slurm_daemon_gives_gpu_sessions_their_own_gpu_shows_pending_as_queued_and_stop_cancels() {
    let slurm = slurm_env();
    // Three sessions asking for one GPU each on a node with two: two run, one waits in Slurm's queue.
    let ids = queue(&slurm, "gpus.yaml", &spec(500, 1, "grid: {seed: [1, 2, 3]}\n"));
    assert_eq!(ids.len(), 3);
    let marker = "CUDA_VISIBLE_DEVICES=";
    let (gpus, waiting) = wait_for(TIMEOUT, "two sessions on GPUs and one waiting in Slurm", || {
        let mut gpus = Vec::new();
        let mut waiting = Vec::new();
        for id in &ids {
            let log = train_log(&slurm, id);
            if let Some(line) = log.lines().find(|l| l.contains(marker)) {
                gpus.push(line.split(marker).nth(1)?.trim().to_string());
            }
            let row = slurm.session(id)?;
            let reason = row["exit_reason"].as_str().unwrap_or_default().to_string();
            if row["state"] == "queued" && reason.contains("Resources") {
                waiting.push((id.clone(), reason));
            }
        }
        (gpus.len() == 2 && waiting.len() == 1).then_some((gpus, waiting))
    });
    let mut gpus = gpus;
    gpus.sort();
    assert_eq!(gpus, ["0", "1"], "each running session has its own GPU");
    let (pending, reason) = &waiting[0];
    let (job, _) = job_of(&slurm, pending);
    let job = job.expect("the waiting session was submitted");
    assert!(reason.contains(&format!("waiting in Slurm's queue as job {job}")), "{reason}");
    assert_eq!(block_on(client().status(job)).unwrap().state, JobState::Pending);

    // `rush stop` is scancel, for running and waiting sessions alike.
    for id in &ids {
        slurm.ok(&["stop", id]);
    }
    for id in &ids {
        let row = slurm.wait_state(id, "stopped", Duration::from_secs(60));
        assert_eq!(row["exit_reason"], "stopped by the user");
        let (job, attempt) = job_of(&slurm, id);
        assert_eq!(attempt, 1);
        let status = block_on(client().status(job.unwrap())).unwrap();
        assert_eq!(status.state, JobState::Cancelled, "{id}");
    }
}

#[test]
fn slurm_daemon_resumes_a_session_that_reached_its_time_limit() {
    let slurm = slurm_env();
    // Slurm's shortest limit is a minute; the session needs longer, so its first job times out.
    let id = queue(&slurm, "limit.yaml", &spec(1000, 0, "slurm: {time_limit: \"1\"}\ncheckpoints: {keep_best: 1}\n"))
        .remove(0);
    let (first, _) = wait_for(TIMEOUT, "the first job", || Some(job_of(&slurm, &id)).filter(|j| j.0.is_some()));
    let first = first.unwrap();
    // After the time limit: a second job (attempt 2) that resumes from the last checkpoint.
    let second = wait_for(TIMEOUT, "a second job after the time limit", || {
        let (job, attempt) = job_of(&slurm, &id);
        (attempt == 2).then_some(job).flatten()
    });
    assert_ne!(second, first);
    assert_eq!(block_on(client().status(first)).unwrap().state, JobState::Timeout);
    let log = train_log(&slurm, &id);
    assert!(log.contains(&format!("job {first} ended: the Slurm job reached its time limit")), "{log}");
    let started: Vec<String> = wait_for(TIMEOUT, "the resumed run's started event", || {
        let rows: Vec<(String,)> =
            slurm.db(&format!("SELECT body FROM events WHERE session = '{id}' AND kind = 'started' ORDER BY id"));
        (rows.len() == 2).then(|| rows.into_iter().map(|r| r.0).collect())
    });
    let resumed: serde_json::Value = serde_json::from_str(&started[1]).unwrap();
    assert!(resumed["start_epoch"].as_u64().unwrap() > 1, "the second job resumes from a checkpoint: {resumed}");
    // The epochs the first job trained are stored once each.
    let epochs: Vec<(i64, i64)> = slurm
        .db(&format!("SELECT epoch, COUNT(*) FROM metrics WHERE session = '{id}' AND name = 'val_acc' GROUP BY epoch"));
    assert!(epochs.iter().all(|e| e.1 == 1), "{epochs:?}");
    slurm.ok(&["stop", &id]);
    slurm.wait_state(&id, "stopped", Duration::from_secs(60));
}

#[test]
fn slurm_daemon_killed_and_restarted_reattaches_without_submitting_again() {
    let mut slurm = slurm_env();
    let epochs = 8;
    let id = queue(&slurm, "long.yaml", &spec(epochs, 0, "")).remove(0);
    wait_for(TIMEOUT, "two epochs", || train_log(&slurm, &id).contains("epoch 2/").then_some(()));
    let (job, _) = job_of(&slurm, &id);
    let job = job.unwrap();
    slurm.kill_daemon();
    // The job goes on without the daemon.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(block_on(client().status(job)).unwrap().state, JobState::Running);
    let config = slurm.tmp.path().join("rush.yaml");
    slurm.start_with(&["--config", config.to_str().unwrap()]);
    let done = slurm.wait_state(&id, "succeeded", TIMEOUT);
    assert_eq!(done["epoch"], epochs);
    assert_eq!(job_of(&slurm, &id), (Some(job), 1), "the same job, one attempt");
    let tag = home_tag(&slurm.home.canonicalize().unwrap());
    let session = id.parse().unwrap();
    let named = block_on(client().find_by_name(&job_name(&session, 1, &tag))).unwrap();
    assert_eq!(named.iter().map(|j| j.0).collect::<Vec<_>>(), [job], "one job carries the session's name");
    assert!(block_on(client().find_by_name(&job_name(&session, 2, &tag))).unwrap().is_empty(), "no second job");
    assert!(train_log(&slurm, &id).contains(&format!("re-attached to Slurm job {job}")));
    // Caught up: every epoch's metrics once, one start and one finish.
    let val: Vec<(i64, i64)> = slurm.db(&format!(
        "SELECT epoch, COUNT(*) FROM metrics WHERE session = '{id}' AND name = 'val_acc' GROUP BY epoch ORDER BY epoch"
    ));
    let expected: Vec<(i64, i64)> = (1..=epochs as i64).map(|e| (e, 1)).collect();
    assert_eq!(val, expected);
    let kinds: Vec<(String, i64)> =
        slurm.db(&format!("SELECT kind, COUNT(*) FROM events WHERE session = '{id}' GROUP BY kind ORDER BY kind"));
    let kinds: BTreeSet<(String, i64)> = kinds.into_iter().collect();
    assert!(kinds.contains(&("started".into(), 1)) && kinds.contains(&("finished".into(), 1)), "{kinds:?}");
    assert!(kinds.contains(&("epoch".into(), epochs as i64)), "{kinds:?}");
}

/// A submission's row, as the store keeps it: (state, slot, error, public score).
type SubmissionRow = (String, Option<String>, Option<String>, Option<f64>);

fn submission_row(env: &Env, id: i64) -> Option<SubmissionRow> {
    let rows: Vec<SubmissionRow> =
        env.db(&format!("SELECT state, slot, error, public_score FROM submissions WHERE id = {id}"));
    rows.into_iter().next()
}

/// The Slurm jobs (ids ascending) of a submission's member inference, by the name rush gives them.
fn infer_jobs(env: &Env, submission: i64, session: &str, epoch: u32) -> Vec<(JobId, JobState)> {
    let tag = home_tag(&env.home.canonicalize().unwrap());
    let name = infer_job_name(submission, &session.parse().unwrap(), epoch, &tag);
    let mut jobs: Vec<(JobId, JobState)> =
        block_on(client().find_by_name(&name)).unwrap().into_iter().map(|(job, s)| (job, s.state)).collect();
    jobs.sort_by_key(|j| j.0);
    jobs
}

/// `rush submit` as a user runs it, in the background, its stderr into `stderr`.
fn submit_in_background(env: &Env, args: &[&str], stderr: &std::path::Path) -> std::process::Child {
    std::process::Command::new(crate::common::rush_exe())
        .arg("submit")
        .args(args)
        .env("RUSH_HOME", &env.home)
        .env_remove("RUSH_URL")
        .current_dir(env.tmp.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(stderr).unwrap())
        .spawn()
        .expect("run rush submit")
}

/// Cancels, when dropped (also when a test fails), the jobs it holds and every job of a home still in Slurm's queue.
struct Cancels {
    jobs: Vec<JobId>,
    home_tag: String,
}

impl Drop for Cancels {
    fn drop(&mut self) {
        let listed = std::process::Command::new("squeue").args(["-h", "-o", "%i %j"]).output();
        let text = listed.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
        let suffix = format!("@{}", self.home_tag);
        let of_home = text.lines().filter_map(|l| l.split_once(' ')).filter(|(_, name)| name.ends_with(&suffix));
        let mut ids: Vec<String> = of_home.map(|(id, _)| id.to_string()).collect();
        ids.extend(self.jobs.iter().map(JobId::to_string));
        if !ids.is_empty() {
            let _ = std::process::Command::new("scancel").args(&ids).status();
        }
    }
}

/// A held batch job (it never runs, so it takes nothing from other tests): a dependency on it keeps a job waiting.
fn held_job() -> JobId {
    let out = std::process::Command::new("sbatch")
        .args(["--parsable", "--hold", "--job-name=rush-test-held", "--output=/dev/null", "--wrap=true"])
        .output()
        .expect("run sbatch");
    assert!(out.status.success(), "sbatch: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).parse().unwrap()
}

#[test]
fn slurm_daemon_runs_a_submissions_inference_as_a_slurm_job() {
    let mut slurm = slurm_env();
    let mut cancels = Cancels { jobs: vec![], home_tag: home_tag(&slurm.home.canonicalize().unwrap()) };
    let id = queue(&slurm, "scored.yaml", &spec(2, 0, "")).remove(0);
    slurm.wait_state(&id, "succeeded", TIMEOUT);
    // A daemon whose jobs depend on a held job: the submission's job has to wait in Slurm's queue.
    cancels.jobs.push(held_job());
    slurm.stop_daemon();
    start_slurm_daemon(&mut slurm, &[&format!("--dependency=afterany:{}", cancels.jobs[0])]);
    let said = slurm.tmp.path().join("submit.stderr");
    let mut waiting = submit_in_background(&slurm, &["-v", &id, "last"], &said);
    let log_path = slurm.home.join("submissions/1/infer.log");
    let first = wait_for(TIMEOUT, "the inference job waiting in Slurm's queue", || {
        let (state, slot, _, _) = submission_row(&slurm, 1)?;
        let log = std::fs::read_to_string(&log_path).ok()?;
        let jobs = infer_jobs(&slurm, 1, &id, 2);
        let (job, _) = *jobs.first()?;
        let pending = format!("[slurm] job {job} pending: Dependency");
        let slot = slot?;
        let shown = slot.starts_with("gpu") && slot.ends_with(&format!(", Slurm job {job} pending: Dependency"));
        (state == "running" && shown && log.contains(&pending)).then_some(job)
    });
    assert_eq!(block_on(client().status(first)).unwrap().state, JobState::Pending);
    let pending = "submission 1: running in gpu";
    wait_for(TIMEOUT, "`rush submit -v` saying so", || {
        let text = std::fs::read_to_string(&said).ok()?;
        text.lines()
            .any(|l| l.starts_with(pending) && l.ends_with(&format!("Slurm job {first} pending: Dependency")))
            .then_some(())
    });

    // A daemon shutdown cancels the job and puts the submission back in the queue.
    slurm.stop_daemon();
    let _ = waiting.kill();
    let _ = waiting.wait();
    assert_eq!(block_on(client().status(first)).unwrap().state, JobState::Cancelled);
    assert_eq!(submission_row(&slurm, 1).unwrap().0, "queued");
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains(&format!("the daemon is shutting down: scancel {first}")), "{log}");

    // The next daemon (without the dependency) runs it again, as a new job.
    start_slurm_daemon(&mut slurm, &[]);
    let (state, _, error, score) = wait_for(TIMEOUT, "the submission scored", || {
        submission_row(&slurm, 1).filter(|row| row.0 == "scored" || row.0 == "failed")
    });
    assert_eq!((state.as_str(), error), ("scored", None));
    let jobs = infer_jobs(&slurm, 1, &id, 2);
    assert_eq!(jobs.len(), 2, "one job per run of the submission: {jobs:?}");
    let (second, second_state) = jobs[1];
    assert_eq!((jobs[0].0, jobs[0].1, second_state), (first, JobState::Cancelled, JobState::Completed));
    let sacct = std::process::Command::new("sacct")
        .args(["-c", "-n", "-P", "-o", "jobid,jobname,state", "-j", &second.to_string()])
        .output()
        .expect("run sacct");
    let sacct = String::from_utf8_lossy(&sacct.stdout);
    assert!(sacct.contains(&format!("{second}|rush:submission/1/{id}:2@")) && sacct.contains("COMPLETED"), "{sacct}");
    assert!(slurm.home.join(format!("submissions/1/slurm-{second}.out")).is_file());
    let log = std::fs::read_to_string(&log_path).unwrap();
    for line in [
        format!("[slurm] {id}:2 in gpu"),
        format!("submitted as Slurm job {second}"),
        format!("rush: submission 1, {id}:2, Slurm job {second} on "),
        format!("[slurm] job {second} ended: COMPLETED (exit code 0:0)"),
    ] {
        assert!(log.contains(&line), "{line:?} missing from infer.log:\n{log}");
    }
    let banner = log.lines().find(|l| l.contains(&format!("Slurm job {second} on "))).unwrap();
    let gpu = banner.split("CUDA_VISIBLE_DEVICES=").nth(1).unwrap_or_default();
    assert!(gpu == "0" || gpu == "1", "the job got a GPU (--gres=gpu:1): {banner}");

    // The predictions are what `rush infer` of the checkpoint predicts here, and the board shows their score.
    let local = slurm.tmp.path().join("local-infer");
    let out = std::process::Command::new(crate::common::rush_exe())
        .arg("infer")
        .arg(slurm.session_dir(&id))
        .args(["--epoch", "2", "--device", "cpu", "--out"])
        .arg(&local)
        .env("OMP_NUM_THREADS", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "rush infer: {}", String::from_utf8_lossy(&out.stderr));
    let (rows, classes, values) = rush::submit::npy::read_f16_matrix(&local.join("test.npy")).unwrap();
    let probs = rush::core::ensemble::Probs::new(rows, classes, values).unwrap();
    let expected = rush::core::ensemble::Mix::new(&[&probs], &[1.0]).unwrap().predict();
    let predictions = rush::submit::npy::read_i64(&slurm.home.join("submissions/1/predictions.npy")).unwrap();
    assert_eq!(predictions, expected);
    let home = rush::home::Home::new(&slurm.home);
    let percent = rush::core::score::DEFAULT_PUBLIC_PERCENT;
    rush::submit::npy::write_i64(&slurm.tmp.path().join("local.npy"), &expected).unwrap();
    let rescored =
        rush::submit::scorer::score_file(&home, "synth", &slurm.tmp.path().join("local.npy"), false, percent);
    let rush::submit::scorer::Scored::Full(scores) = rescored.unwrap() else { panic!("a full score") };
    assert_eq!(score, Some(scores.public));
    let board = slurm.json(&["dataset", "board", "synth", "-j"]);
    assert_eq!(board["lines"][0]["id"], 1, "{board}");
    assert_eq!(board["lines"][0]["public_score"].as_f64(), Some(scores.public), "{board}");

    // An inference that fails (its checkpoint damaged; with flip TTA nothing is cached) fails the submission with a
    // message naming the Slurm job, its state and exit code, and the child's last lines.
    let paths: Vec<(String,)> = slurm.db(&format!("SELECT path FROM checkpoints WHERE session = '{id}' AND epoch = 2"));
    std::fs::write(&paths[0].0, b"not a checkpoint").unwrap();
    let err = slurm.fails(&["submit", &format!("{id}:2"), "--tta", "flip"]);
    let jobs = infer_jobs(&slurm, 2, &id, 2);
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let (failed, failed_state) = jobs[0];
    assert_eq!(failed_state, JobState::Failed);
    let (state, _, error, _) = submission_row(&slurm, 2).unwrap();
    let error = error.unwrap_or_default();
    assert_eq!(state, "failed");
    assert!(
        error.contains(&format!("inference of {id}:2 failed (Slurm job {failed}: FAILED, exit code 1:0)")),
        "{error}"
    );
    assert!(error.contains("rush infer: checkpoint") && error.contains("2.safetensors"), "the child's words: {error}");
    assert!(err.contains(&error), "rush submit says why: {err}");
}

#[test]
fn slurm_daemon_holds_a_team_to_its_gpu_quota_before_sbatch() {
    let conf = std::env::var("SLURM_CONF").expect("SLURM_CONF is not set: run scripts/slurm-up.sh");
    assert!(PathBuf::from(&conf).is_file(), "SLURM_CONF={conf} does not exist");
    let mut env = Env::new();
    let org = env.add_user(&["org", "--admin"]);
    let team = env.add_user(&["team07", "--gpus", "1"]);
    start_slurm_daemon(&mut env, &[]);
    let src = env.tmp.path().join("src-synth");
    crate::common::synth(&src, 1);
    env.ok_as(&org, &["dataset", "push", "synth", src.to_str().unwrap()]);
    // Three one-GPU sessions of a team with one GPU, on a daemon with three GPU job slots.
    let spec_file = env.tmp.path().join("three.yaml");
    std::fs::write(&spec_file, spec(2, 1, "grid: {seed: [1, 2, 3]}\n")).unwrap();
    let queued = env.ok_as(&team, &["run", "-d", "synth", "-e", spec_file.to_str().unwrap()]);
    assert_eq!(queued.lines().count(), 3, "{queued}");
    // Until all three end, Slurm never holds more than one job of the team (running, or submitted and pending), and
    // `ps` says why the others wait.
    let mut said_why = false;
    wait_for(TIMEOUT, "the team's three sessions to succeed", || {
        let held: Vec<(i64,)> = env
            .db("SELECT count(*) FROM sessions WHERE user = 'team07' AND (state = 'running' OR (state = 'queued' AND \
             slurm_attempt > 0))");
        assert!(held[0].0 <= 1, "team07 holds {} Slurm jobs with a quota of 1 GPU", held[0].0);
        let list: serde_json::Value = serde_json::from_str(&env.ok_as(&team, &["ps", "-a", "-j"])).unwrap();
        let list = list.as_array().unwrap().clone();
        said_why |= list.iter().any(|s| s["waiting"].as_str() == Some("team07 holds 1 of its 1 GPU"));
        let failed = list.iter().find(|s| s["state"] == "failed");
        assert!(failed.is_none(), "{failed:?}");
        (list.len() == 3 && list.iter().all(|s| s["state"] == "succeeded")).then_some(())
    });
    assert!(said_why, "no queued session said it waits for the team's quota");
    // Each ran as its own Slurm job, once.
    let jobs: Vec<(Option<i64>, i64)> =
        env.db("SELECT slurm_job, slurm_attempt FROM sessions WHERE user = 'team07' ORDER BY seq");
    assert!(jobs.iter().all(|(job, attempt)| job.is_some() && *attempt == 1), "{jobs:?}");
}

#[test]
fn slurm_daemon_runs_a_code_session_and_its_submission_as_batch_jobs() {
    // A code session (tests/it/code/probe.py as main.py) under `executor: slurm`: its `rush train` and its
    // submission's `rush infer` are batch jobs that start the code in the sandbox on the node.
    let env = slurm_env();
    let code = env.tmp.path().join("probe");
    std::fs::create_dir_all(&code).unwrap();
    std::fs::copy(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/it/code/probe.py"), code.join("main.py"))
        .unwrap();
    let yaml =
        format!("dataset: synth\nentry: main.py\ncode: {}\nargs: --epochs 2\nresources: {{gpus: 0}}\n", code.display());
    let id = queue(&env, "code.yaml", &yaml).remove(0);
    env.wait_state(&id, "succeeded", TIMEOUT);
    let (job, _) = job_of(&env, &id);
    assert!(job.is_some(), "it ran as a Slurm job");
    let log = train_log(&env, &id);
    assert!(log.contains("(sandboxed by bubblewrap)") && log.contains("probe: done"), "{log}");
    let listed = env.json(&["model", "ls", &id, "-j"]);
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    let dry = env.ok(&["submit", "-t", &id, "best"]);
    assert!(dry.contains("dry run") && dry.contains("accuracy"), "{dry}");
    let jobs = infer_jobs(&env, 1, &id, 2);
    assert_eq!(jobs.len(), 1, "the inference of checkpoint 2 (the best) ran as one Slurm job: {jobs:?}");
}
