//! Helpers shared by the integration tests: temporary homes, a real daemon on an ephemeral port, the CLI, waiting.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The rush binary under test.
pub fn rush_exe() -> &'static str {
    env!("CARGO_BIN_EXE_rush")
}

/// `rush-train`, the binary that links libtorch, which `rush` execs for `train`, `infer`, `doctor` and `bench
/// train|epoch`: beside `rush` (the workspace builds both into one folder).
pub fn rush_train_exe() -> PathBuf {
    let path = Path::new(rush_exe()).with_file_name("rush-train");
    assert!(path.is_file(), "{} is missing: build both binaries (cargo build --release --bins)", path.display());
    path
}

/// Polls `check` every 100 ms until it returns `Some`, or panics with `what` after `timeout`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `rush dataset synth` into `out`: a tiny set in the AI RUSH layout (300 train, 60 test, 8 classes, 48 px).
pub fn synth(out: &Path, seed: u64) {
    let output = Command::new(rush_exe())
        .args(["dataset", "synth", "--out"])
        .arg(out)
        .args(["--train", "300", "--test", "60", "--classes", "8", "--width", "48", "--height", "48", "--quiet"])
        .args(["--seed", &seed.to_string()])
        .output()
        .expect("run rush dataset synth");
    assert!(output.status.success(), "synth failed: {}", String::from_utf8_lossy(&output.stderr));
}

/// A temporary rush home with its experiments folder, and the daemon running on it (if started).
pub struct Env {
    pub tmp: tempfile::TempDir,
    pub home: PathBuf,
    pub experiments: PathBuf,
    pub daemon: Option<Child>,
    /// More environment for the daemon (and so its children), set before [`Env::start`].
    pub daemon_env: Vec<(String, String)>,
}

impl Env {
    pub fn new() -> Env {
        let tmp = tempfile::tempdir().expect("temp dir");
        let home = tmp.path().join("home");
        let experiments = tmp.path().join("experiments");
        std::fs::create_dir_all(&experiments).unwrap();
        Env { tmp, home, experiments, daemon: None, daemon_env: Vec::new() }
    }

    /// The CLI with this home, as a user would run it.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(rush_exe())
            .args(args)
            .env("RUSH_HOME", &self.home)
            .env_remove("RUSH_URL")
            .current_dir(self.tmp.path())
            .output()
            .expect("run rush")
    }

    /// The CLI as the user holding `token` (RUSH_TOKEN) on a shared daemon, with no kept token of its own.
    pub fn cli_as(&self, token: &str, args: &[&str]) -> Output {
        Command::new(rush_exe())
            .args(args)
            .env("RUSH_HOME", &self.home)
            .env("RUSH_TOKEN", token)
            .env("XDG_CONFIG_HOME", self.tmp.path().join("no-config"))
            .env_remove("RUSH_URL")
            .current_dir(self.tmp.path())
            .output()
            .expect("run rush")
    }

    /// [`Env::cli_as`], which must succeed; returns stdout.
    pub fn ok_as(&self, token: &str, args: &[&str]) -> String {
        let out = self.cli_as(token, args);
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "rush {}: {stderr}{stdout}", args.join(" "));
        stdout.to_string()
    }

    /// `rush user add ARGS` on this home: the token it prints (alone on stdout).
    pub fn add_user(&self, args: &[&str]) -> String {
        let out = self.cli(&[&["user", "add"], args].concat());
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert_eq!(token.len(), 64, "the token alone on stdout: {token:?}");
        token
    }

    /// The CLI, which must succeed; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "rush {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// The CLI, which must fail; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(!out.status.success(), "rush {} should have failed", args.join(" "));
        String::from_utf8_lossy(&out.stderr).to_string()
    }

    /// The CLI with `-j`, parsed.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        serde_json::from_str(&self.ok(args)).expect("JSON output")
    }

    /// Starts `rush daemon` on an ephemeral port with one CPU slot and waits for its address file.
    pub fn start(&mut self) {
        self.start_with(&[]);
    }

    /// [`Env::start`] with more `rush daemon` arguments (e.g. `--config FILE`).
    pub fn start_with(&mut self, extra: &[&str]) {
        assert!(self.daemon.is_none(), "a daemon runs already");
        let addr_file = self.home.join("daemon.addr");
        let _ = std::fs::remove_file(&addr_file);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.tmp.path().join("daemon.log"))
            .expect("daemon log");
        let child = Command::new(rush_exe())
            .args(["daemon", "--bind", "127.0.0.1:0", "--user", "tester", "--cpu-slots", "1", "--experiments"])
            .arg(&self.experiments)
            .args(extra)
            .env("RUSH_HOME", &self.home)
            // Two cores for the whole suite: one intra-op thread per trainer.
            .env("OMP_NUM_THREADS", "1")
            .env("RUST_LOG", "info,sqlx=warn")
            .envs(self.daemon_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start rush daemon");
        self.daemon = Some(child);
        wait_for(Duration::from_secs(60), "daemon.addr", || {
            std::fs::read_to_string(&addr_file).ok().filter(|s| !s.trim().is_empty())
        });
    }

    pub fn daemon_pid(&self) -> u32 {
        self.daemon.as_ref().expect("daemon running").id()
    }

    /// SIGKILLs the daemon, as a crash would.
    pub fn kill_daemon(&mut self) {
        let mut child = self.daemon.take().expect("daemon running");
        child.kill().expect("kill daemon");
        child.wait().expect("reap daemon");
    }

    /// SIGTERMs the daemon and waits for it to exit; returns how long that took.
    pub fn stop_daemon(&mut self) -> Duration {
        let mut child = self.daemon.take().expect("daemon running");
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let started = Instant::now();
        let status = child.wait().expect("reap daemon");
        assert!(status.success(), "daemon exited with {status}; log:\n{}", self.daemon_log());
        started.elapsed()
    }

    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.tmp.path().join("daemon.log")).unwrap_or_default()
    }

    /// Pushes a tiny synthetic dataset as `name`.
    pub fn push_synth(&self, name: &str, seed: u64) -> PathBuf {
        let src = self.tmp.path().join(format!("src-{name}"));
        synth(&src, seed);
        self.ok(&["dataset", "push", name, src.to_str().unwrap()]);
        src
    }

    /// Writes a spec file into the experiments folder (atomically, as an editor's save would end).
    pub fn drop_spec(&self, name: &str, yaml: &str) -> PathBuf {
        let path = self.experiments.join(name);
        let tmp = self.experiments.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, yaml).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        path
    }

    /// Drops a spec file and returns the id of the (first) session it queued; panics with the daemon's message when
    /// the spec was rejected.
    pub fn queue(&self, name: &str, yaml: &str) -> String {
        let verdict = self.verdict(&self.drop_spec(name, yaml));
        match verdict["sessions"][0].as_str() {
            Some(id) => id.to_string(),
            None => panic!("{name} queued nothing: {verdict}"),
        }
    }

    /// The session as `ps -a -j` shows it.
    pub fn session(&self, id: &str) -> Option<serde_json::Value> {
        let list = self.json(&["ps", "-a", "-j"]);
        list.as_array().unwrap().iter().find(|s| s["id"] == id).cloned()
    }

    /// Waits until the session reaches `state` (panics on another terminal state, with the reason and log).
    pub fn wait_state(&self, id: &str, state: &str, timeout: Duration) -> serde_json::Value {
        wait_for(timeout, &format!("{id} to be {state}"), || {
            let s = self.session(id)?;
            let now = s["state"].as_str().unwrap_or_default().to_string();
            let terminal = ["succeeded", "failed", "stopped", "interrupted"];
            if now != state && terminal.contains(&now.as_str()) {
                panic!(
                    "{id} ended {now} instead of {state}: {}\n--- train.log ---\n{}\n--- daemon log ---\n{}",
                    s["exit_reason"],
                    std::fs::read_to_string(self.session_dir(id).join("train.log")).unwrap_or_default(),
                    self.daemon_log()
                );
            }
            (now == state).then_some(s)
        })
    }

    /// The spec rows the daemon recorded for a file.
    pub fn spec_rows(&self, path: &Path) -> Vec<serde_json::Value> {
        let addr = std::fs::read_to_string(self.home.join("daemon.addr")).unwrap();
        let url = format!("http://{}/api/specs?path={}", addr.trim(), path.display());
        let rows: serde_json::Value = reqwest::blocking::get(url).unwrap().json().unwrap();
        rows.as_array().unwrap().clone()
    }

    /// Waits for the daemon's verdict on a spec file: its row.
    pub fn verdict(&self, path: &Path) -> serde_json::Value {
        wait_for(Duration::from_secs(30), &format!("a verdict on {}", path.display()), || {
            self.spec_rows(path).into_iter().next()
        })
    }

    pub fn session_dir(&self, id: &str) -> PathBuf {
        self.home.join("sessions").join(id)
    }

    /// Runs a read-only query against the daemon's database (a fresh read-only connection each time).
    pub fn db<T>(&self, sql: &str) -> Vec<T>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow> + Send + Unpin,
    {
        let path = self.home.join("rush.db");
        block_on(async move {
            use sqlx::ConnectOptions;
            let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(&path)
                .read_only(true)
                .connect()
                .await
                .expect("open rush.db");
            let rows = sqlx::query_as(sql).fetch_all(&mut conn).await.expect("query");
            let _ = sqlx::Connection::close(conn).await;
            rows
        })
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs a future to completion on a small runtime (the tests are synchronous).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(f)
}

/// Whether a process exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next()) != Some("Z"),
        Err(_) => false,
    }
}

/// A small, quick spec: baseline CNN at 32 px on the CPU.
pub fn quick_spec(dataset: &str, epochs: u32, extra: &str) -> String {
    format!(
        "dataset: {dataset}\nmodel: baseline_cnn\nimage_size: 32\nbatch_size: 32\nepochs: {epochs}\nprecision: fp32\n\
         optimizer: {{name: adamw, lr: 0.003}}\nschedule: {{name: constant, warmup_epochs: 0}}\n\
         resources: {{gpus: auto}}\n{extra}"
    )
}

/// AI RUSH's `train/train_label` of a dataset matches its training CSV: a `uint8` `.npy` of one 350-column multi-hot
/// row per sticker, whose argmax (the first 1) is the sticker's label, its first tag, which is also its smallest.
pub fn assert_train_label_is_argmax_of_the_first_tag(dataset: &Path) {
    use rush::data::layout::{self, NUM_TAGS};
    let set = layout::read_train(dataset).expect("a dataset");
    assert!(set.problems.is_empty(), "{:?}", set.problems.first());
    let bytes = std::fs::read(layout::train_label_path(dataset)).expect("train/train_label");
    let header = rush::core::npy::header("|u1", &[set.samples.len(), NUM_TAGS]);
    assert!(bytes.starts_with(&header), "{}", String::from_utf8_lossy(&bytes[..header.len().min(bytes.len())]));
    assert_eq!(bytes.len(), header.len() + set.samples.len() * NUM_TAGS);
    for (i, sample) in set.samples.iter().enumerate() {
        let row = &bytes[header.len() + i * NUM_TAGS..][..NUM_TAGS];
        assert_eq!(row.iter().position(|&b| b == 1), Some(sample.label() as usize), "{sample:?}");
        assert_eq!(sample.tags.iter().min(), Some(&sample.label()), "the label is the smallest tag: {sample:?}");
        assert_eq!(row.iter().filter(|&&b| b == 1).count(), sample.tags.len(), "{sample:?}");
    }
}
