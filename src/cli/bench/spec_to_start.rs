//! Spec-to-start benchmark: a real `rush daemon` (this binary) on a temporary home with a tiny synthetic dataset and
//! one free CPU slot; a spec file is saved into its experiments folder and the clock runs until `/api/sessions` shows
//! that session running with a child pid. Repeated (each session stopped before the next spec), median reported.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::Row;
use super::daemon::{Daemon, rush};
use crate::cli::Global;
use crate::cli::client::http::Api;
use crate::core::session::SessionState;
use crate::web::api::SessionView;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Specs to time.
    #[arg(long, default_value_t = 5)]
    pub repeats: u32,
    /// Keep the temporary home (printed) instead of removing it.
    #[arg(long)]
    pub keep: bool,
}

/// Goal of issue 7: spec saved -> child started within a second.
const GOAL_SECS: f64 = 1.0;
/// Give up on one session after this long.
const PATIENCE: Duration = Duration::from_secs(60);
/// How often `/api/sessions` is asked while waiting.
const POLL: Duration = Duration::from_millis(5);

pub fn run(global: &Global, args: &Args) -> anyhow::Result<Row> {
    anyhow::ensure!(args.repeats > 0, "--repeats must be at least 1");
    super::daemon::in_scratch("start", args.keep, |tmp| measure(global, args, tmp))
}

fn measure(global: &Global, args: &Args, tmp: &Path) -> anyhow::Result<Row> {
    let exe = std::env::current_exe().context("finding the rush binary")?;
    let home = tmp.join("home");
    let experiments = tmp.join("experiments");
    let source = tmp.join("synth");
    std::fs::create_dir_all(&experiments).with_context(|| format!("creating {}", experiments.display()))?;
    rush(&exe, &home, &["dataset", "synth", "--out"], Some(&source), &tiny_synth())?;
    let daemon = Daemon::start(
        &exe,
        &home,
        &experiments,
        tmp,
        &["--cpu-slots".into(), "1".into()],
        &[("OMP_NUM_THREADS", "1")],
    )?;
    rush(&exe, &home, &["dataset", "push", "bench"], Some(&source), &[])?;
    let api = Api::connect(&Global {
        home: crate::home::Home::new(&home),
        url: Some(daemon.url.clone()),
        token: global.token.clone(),
    })?;
    let mut times = Vec::new();
    for i in 0..args.repeats {
        let memo = format!("rush bench spec-to-start {i}");
        let name = format!("bench-{i}.yaml");
        let staged = experiments.join(format!(".{name}.tmp"));
        std::fs::write(&staged, spec(&memo)).with_context(|| format!("writing {}", staged.display()))?;
        let saved = Instant::now();
        std::fs::rename(&staged, experiments.join(&name)).context("saving the spec")?;
        let session = loop {
            let sessions: Vec<SessionView> = api.get("/sessions?all=true")?;
            if let Some(s) = sessions.iter().find(|s| s.memo == memo) {
                if s.state == SessionState::Running && s.pid.is_some() {
                    break s.clone();
                }
                anyhow::ensure!(
                    matches!(s.state, SessionState::Queued | SessionState::Running),
                    "{} ended {:?} before it was seen running: {:?} (daemon log: {})",
                    s.id,
                    s.state,
                    s.exit_reason,
                    daemon.log.display()
                );
            }
            anyhow::ensure!(saved.elapsed() < PATIENCE, "no session running {PATIENCE:?} after saving {name}");
            std::thread::sleep(POLL);
        };
        let secs = saved.elapsed().as_secs_f64();
        eprintln!("rush bench: {} running {:.0} ms after its spec was saved", session.id, secs * 1e3);
        times.push(secs);
        let _: serde_json::Value = api.post(&format!("/sessions/{}/stop", session.id), &serde_json::json!({}))?;
        let stopped = Instant::now();
        loop {
            let s: SessionView = api.get(&format!("/sessions/{}", session.id))?;
            if !matches!(s.state, SessionState::Queued | SessionState::Running) {
                break;
            }
            anyhow::ensure!(stopped.elapsed() < PATIENCE, "{} did not stop within {PATIENCE:?}", session.id);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    daemon.stop()?;
    let worst = times.iter().copied().fold(0.0, f64::max);
    let median = super::median(&mut times).context("no timings")?;
    Ok(Row {
        name: format!("spec saved -> child started (median of {}, worst {:.0} ms)", args.repeats, worst * 1e3),
        figure: format!("{:.0} ms", median * 1e3),
        reference: format!("{:.0} ms goal", GOAL_SECS * 1e3),
        ratio: Some(GOAL_SECS / median),
        goal: format!("<= {GOAL_SECS} s"),
        met: Some(median <= GOAL_SECS),
    })
}

fn tiny_synth() -> Vec<String> {
    let args = ["--train", "300", "--test", "60", "--classes", "8", "--width", "48", "--height", "48", "--quiet"];
    args.iter().map(|s| s.to_string()).collect()
}

/// A long CPU run (it is stopped once it is seen running).
fn spec(memo: &str) -> String {
    format!(
        "dataset: bench\nmemo: {memo:?}\nmodel: baseline_cnn\nimage_size: 32\nbatch_size: 32\nepochs: 1000\n\
         precision: fp32\noptimizer: {{name: adamw, lr: 0.003}}\nschedule: {{name: constant, warmup_epochs: 0}}\n\
         resources: {{gpus: 0}}\n"
    )
}
