//! The Slurm client against a real single-node cluster (`scripts/slurm-up.sh`, which `scripts/test.sh` runs and
//! whose `SLURM_CONF` it exports). Without a cluster these tests fail: they do not skip.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rush::core::queue::Device;
use rush::core::slurm::{
    BatchJob, ExitCode, JobId, JobState, JobStatus, JobVerdict, SbatchRequest, SlurmConfig, job_name, sbatch_request,
};
use rush::slurm::{ClientError, SlurmClient};

fn client() -> SlurmClient {
    let conf = std::env::var_os("SLURM_CONF")
        .expect("SLURM_CONF is not set: start the test cluster with `eval \"$(scripts/slurm-up.sh --env)\"`");
    SlurmClient::new(Some(PathBuf::from(conf)))
}

/// A batch job running `body` in `dir`, its output in `dir/out`.
fn job(dir: &Path, extra: &[&str], body: &str) -> SbatchRequest {
    let mut args = vec![
        "--parsable".to_string(),
        "--job-name=rush-it".to_string(),
        format!("--chdir={}", dir.display()),
        format!("--output={}", dir.join("out").display()),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    SbatchRequest { args, script: format!("#!/bin/sh\n{body}\n") }
}

async fn wait_until(client: &SlurmClient, job: JobId, done: impl Fn(&JobStatus) -> bool, limit: Duration) -> JobStatus {
    let start = Instant::now();
    loop {
        let status = client.status(job).await.unwrap_or_else(|e| panic!("status of job {job}: {e}"));
        if done(&status) {
            return status;
        }
        assert!(start.elapsed() < limit, "job {job} still {status:?} after {limit:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_final(client: &SlurmClient, job: JobId, limit: Duration) -> JobStatus {
    wait_until(client, job, |s| s.state.is_final(), limit).await
}

#[tokio::test]
async fn slurm_a_batch_job_completes_and_its_end_is_remembered() {
    let c = client();
    let dir = tempfile::tempdir().unwrap();
    let id = c.submit(&job(dir.path(), &[], "echo \"ran as $SLURM_JOB_ID\" > done")).await.unwrap();
    let status = wait_final(&c, id, Duration::from_secs(60)).await;
    assert_eq!(status.state, JobState::Completed, "{status:?}");
    assert_eq!(status.exit, Some(ExitCode { code: 0, signal: 0 }));
    assert_eq!(status.verdict(), JobVerdict::Completed);
    let written = std::fs::read_to_string(dir.path().join("done")).unwrap();
    assert_eq!(written.trim(), format!("ran as {id}"));
    // What a daemon reads once the controller has forgotten the job: the accounting records.
    let recorded = c.accounting(id).await.unwrap().expect("the job is in the completion records");
    assert_eq!((recorded.state, recorded.exit), (JobState::Completed, Some(ExitCode { code: 0, signal: 0 })));
}

#[tokio::test]
async fn slurm_exit_3_is_failed_with_its_exit_code() {
    let c = client();
    let dir = tempfile::tempdir().unwrap();
    let id = c.submit(&job(dir.path(), &[], "echo failing >&2; exit 3")).await.unwrap();
    let status = wait_final(&c, id, Duration::from_secs(60)).await;
    assert_eq!(status.state, JobState::Failed, "{status:?}");
    assert_eq!(status.exit, Some(ExitCode { code: 3, signal: 0 }));
    let JobVerdict::Failed { exit, reason } = status.verdict() else { panic!("{status:?}") };
    assert_eq!(exit, Some(ExitCode { code: 3, signal: 0 }));
    assert!(reason.contains("exit code 3"), "{reason}");
    assert_eq!(std::fs::read_to_string(dir.path().join("out")).unwrap().trim(), "failing");
    let recorded = c.accounting(id).await.unwrap().unwrap();
    assert_eq!((recorded.state, recorded.exit), (JobState::Failed, Some(ExitCode { code: 3, signal: 0 })));
}

#[tokio::test]
async fn slurm_two_gpu_jobs_get_different_devices() {
    let c = client();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let flags = |d: &Path| d.join("started");
    let mut ids = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let other = flags(dirs[1 - i].path());
        // Each job records its GPU, then waits (up to a minute) until the other has started too, so the two hold
        // their GPUs at the same time even if one had to queue behind another test's job.
        let body = format!(
            "echo \"$CUDA_VISIBLE_DEVICES $SLURM_JOB_GPUS\" > gpu; touch started\n\
             for _ in $(seq 600); do [ -e '{}' ] && exit 0; sleep 0.1; done; exit 1",
            other.display()
        );
        ids.push(c.submit(&job(dir.path(), &["--gres=gpu:1"], &body)).await.unwrap());
    }
    let mut gpus = Vec::new();
    for (id, dir) in ids.iter().zip(&dirs) {
        let status = wait_final(&c, *id, Duration::from_secs(90)).await;
        assert_eq!(status.state, JobState::Completed, "job {id} did not meet the other: {status:?}");
        let line = std::fs::read_to_string(dir.path().join("gpu")).unwrap();
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(words.len(), 2, "CUDA_VISIBLE_DEVICES and SLURM_JOB_GPUS: {line:?}");
        assert_eq!(words[0], words[1], "{line:?}");
        gpus.push(words[0].to_string());
    }
    gpus.sort();
    assert_eq!(gpus, ["0", "1"], "two jobs running at once hold the two GPUs");
}

#[tokio::test]
async fn slurm_pending_shows_its_reason_and_scancel_cancels() {
    let c = client();
    let dir = tempfile::tempdir().unwrap();
    let later = c.submit(&job(dir.path(), &["--begin=now+1hour"], "true")).await.unwrap();
    let status = c.status(later).await.unwrap();
    assert_eq!(status.state, JobState::Pending);
    assert_eq!(status.verdict(), JobVerdict::Queued { reason: Some("BeginTime".into()) });
    c.cancel(later).await.unwrap();
    assert_eq!(wait_final(&c, later, Duration::from_secs(30)).await.state, JobState::Cancelled);

    let dir = tempfile::tempdir().unwrap();
    let id = c.submit(&job(dir.path(), &[], "touch running; exec sleep 120")).await.unwrap();
    wait_until(&c, id, |_| dir.path().join("running").exists(), Duration::from_secs(60)).await;
    assert_eq!(c.status(id).await.unwrap().verdict(), JobVerdict::Running);
    c.cancel(id).await.unwrap();
    let status = wait_final(&c, id, Duration::from_secs(30)).await;
    assert_eq!(status.state, JobState::Cancelled, "{status:?}");
    assert_eq!(status.verdict(), JobVerdict::Cancelled);
    c.cancel(id).await.expect("cancelling an ended job is a no-op");
}

#[tokio::test]
async fn slurm_session_request_runs_the_trainer_command_with_its_gpu() {
    let c = client();
    let home = tempfile::tempdir().unwrap();
    let session_dir = home.path().join("sessions/local/emoji/1");
    std::fs::create_dir_all(&session_dir).unwrap();
    // A stand-in for the rush binary that records how the batch script called it (the plumbing only; the daemon's
    // tests run the real trainer through Slurm).
    let exe = home.path().join("fake rush");
    std::fs::write(
        &exe,
        "#!/bin/sh\necho \"args=$* cuda=$CUDA_VISIBLE_DEVICES\" > \"$2/called\"\n\
         echo trainer-stderr >&2\necho trainer-stdout\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let session = "local/emoji/1".parse().unwrap();
    let log = session_dir.join("slurm.log");
    let tag = rush::core::slurm::home_tag(home.path());
    let batch = BatchJob {
        session: &session,
        attempt: 1,
        home_tag: &tag,
        session_dir: &session_dir,
        log: &log,
        device: Device::Gpu,
        rush_exe: &exe,
    };
    let config = SlurmConfig { cpus_per_task: 1, memory: Some("256M".into()), ..Default::default() };
    let request = sbatch_request(&batch, &config, None);
    let id = c.submit(&request).await.unwrap();
    let found = c.find_by_name(&job_name(&session, 1, &tag)).await.unwrap();
    assert_eq!(found.iter().map(|(j, _)| *j).collect::<Vec<_>>(), [id], "the job is found by its name");
    let status = wait_final(&c, id, Duration::from_secs(60)).await;
    assert_eq!(status.state, JobState::Completed, "{status:?}");
    let called = std::fs::read_to_string(session_dir.join("called")).unwrap();
    let cuda = called.split("cuda=").nth(1).and_then(|r| r.split_whitespace().next()).unwrap_or("");
    assert!(cuda == "0" || cuda == "1", "{called}");
    assert!(called.starts_with(&format!("args=train {}", session_dir.display())), "{called}");
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(log_text.contains(&format!("Slurm job {id}")) && log_text.contains("trainer-stderr"), "{log_text}");
    assert!(!log_text.contains("trainer-stdout"), "events go to events.jsonl, not the log: {log_text}");
}

#[tokio::test]
async fn slurm_unknown_jobs_are_an_error_not_a_state() {
    let c = client();
    match c.status(JobId(987_654_321)).await {
        Err(ClientError::UnknownJob(JobId(987_654_321))) => {}
        other => panic!("{other:?}"),
    }
}
