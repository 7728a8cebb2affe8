//! The daemon's client verbs: `run`, `ps`, `specs`, `logs`, `stop`, `rm`, `fork`, `model`, `spec`, `submit`,
//! `ensemble`, `submissions`. They talk to the daemon's HTTP JSON API (`rush daemon` itself is `super::daemon`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use super::Global;
use crate::core::format;
use crate::core::session::{SessionId, SessionRef};
use crate::core::spec::Spec;
use crate::store::{SpecRow, SpecStatus};
use crate::web::api::{Changed, CheckpointView, DatasetView, ForkRequest, Info, RejectedSpec, SessionView};

pub mod http;
pub mod submit;
pub mod table;

use http::Api;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Queue a session (the spec lands in experiments/ under a new name).
    Run {
        /// The registered dataset to train on (`rush dataset ls`).
        #[arg(short = 'd', long)]
        dataset: String,
        /// A spec file to start from.
        #[arg(short = 'e', long)]
        spec: Option<PathBuf>,
        /// Overrides, "key=value key2=value2" (dotted paths, e.g. optimizer.lr=0.01).
        #[arg(short = 'a', long)]
        args: Option<String>,
        /// A memo, shown by `ps` and the dashboard.
        #[arg(short = 'm', long)]
        memo: Option<String>,
    },
    /// List sessions.
    Ps {
        /// All sessions, not only queued and running ones.
        #[arg(short = 'a', long)]
        all: bool,
        /// Only this dataset's sessions.
        #[arg(short = 'd', long)]
        dataset: Option<String>,
        /// JSON, every field.
        #[arg(short = 'j', long)]
        json: bool,
    },
    /// Spec files in experiments/ that were rejected, with why (a fixed file leaves the list).
    Specs {
        /// JSON, every field.
        #[arg(short = 'j', long)]
        json: bool,
    },
    /// Show a session's log.
    Logs {
        /// A session: `user/dataset/n`, or yours as `dataset/n` or `n`.
        session: String,
        /// Follow until the session ends.
        #[arg(short = 'f', long)]
        follow: bool,
    },
    /// Stop queued or running sessions.
    Stop {
        /// Sessions: `user/dataset/n`, or yours as `dataset/n` or `n`.
        #[arg(required_unless_present = "sweep")]
        sessions: Vec<String>,
        /// Every queued or running point of the sweep this session belongs to.
        #[arg(long, value_name = "SESSION")]
        sweep: Option<String>,
    },
    /// Remove a finished session and its files (asks first; -y for scripts).
    Rm {
        /// A session: `user/dataset/n`, or yours as `dataset/n` or `n`.
        session: String,
        /// Do not ask: remove at once.
        #[arg(short = 'y', long)]
        yes: bool,
    },
    /// Start a new session from a checkpoint of another.
    Fork {
        /// The session to fork: `user/dataset/n`, or yours as `dataset/n` or `n`.
        session: String,
        /// The checkpoint to start from: an epoch, `best` or `last`.
        #[arg(short = 'c', long)]
        checkpoint: String,
        /// Overrides of the parent's spec, "key=value key2=value2" (the model stays the parent's).
        #[arg(short = 'a', long)]
        args: Option<String>,
        /// A memo (default: the parent's).
        #[arg(short = 'm', long)]
        memo: Option<String>,
    },
    /// Checkpoints of a session.
    #[command(subcommand)]
    Model(ModelCommand),
    /// The spec format.
    #[command(subcommand)]
    Spec(SpecCommand),
    /// Submit a checkpoint (`SESSION CHECKPOINT`) or an ensemble (`SESSION:CKPT ...`) for scoring.
    Submit(SubmitArgs),
    /// Ensembles picked for you.
    #[command(subcommand)]
    Ensemble(EnsembleCommand),
    /// List submissions, newest first: queued, running, failed and dry runs too (the board shows ranked ones).
    Submissions {
        /// Only this dataset's submissions.
        #[arg(short = 'd', long)]
        dataset: Option<String>,
        /// JSON, every field.
        #[arg(short = 'j', long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// List a session's checkpoints.
    Ls {
        /// A session: `user/dataset/n`, or yours as `dataset/n` or `n`.
        session: String,
        /// JSON, every field.
        #[arg(short = 'j', long)]
        json: bool,
    },
    /// Delete a checkpoint (refused while a queued submission or fork needs it; asks first, -y for scripts).
    Rm {
        /// A session: `user/dataset/n`, or yours as `dataset/n` or `n`.
        session: String,
        /// An epoch, `best` or `last`.
        checkpoint: String,
        /// Do not ask: delete at once.
        #[arg(short = 'y', long)]
        yes: bool,
    },
}

/// `rush spec schema --help`: what the schema checks, and the rules only rush checks.
fn schema_about() -> String {
    let beyond: Vec<String> =
        crate::core::spec::beyond_schema().iter().map(|b| format!("  {}: {}", b.field, b.rule)).collect();
    format!(
        "Print the spec's JSON Schema (draft 2020-12) on stdout, for editors (yaml-language-server).\n\n\
         It carries every field's type, default and allowed values from the same rules rush validates with. \
         These rules only rush checks, so a spec the schema accepts may still be refused for them:\n{}",
        beyond.join("\n")
    )
}

#[derive(Debug, Subcommand)]
pub enum SpecCommand {
    /// Print the spec's JSON Schema.
    #[command(long_about = schema_about())]
    Schema,
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// `SESSION CHECKPOINT`, or one or more `SESSION:CHECKPOINT` for an ensemble.
    #[arg(required = true)]
    pub targets: Vec<String>,
    /// Dry run on up to 200 samples of the public part of the test set; not ranked, not counted.
    #[arg(short = 't', long)]
    pub test: bool,
    /// Verbose.
    #[arg(short = 'v', long)]
    pub verbose: bool,
    /// Ensemble weights, one per member (an ensemble of two or more).
    #[arg(long, value_delimiter = ',')]
    pub weights: Option<Vec<f64>>,
    /// Test-time augmentation: `flip`.
    #[arg(long)]
    pub tta: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum EnsembleCommand {
    /// Greedy forward selection over cached checkpoints, maximising validation accuracy.
    Auto {
        /// The dataset whose cached checkpoints to choose from.
        #[arg(short = 'd', long)]
        dataset: String,
        /// The most members, counted with repetition (1 or more).
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..))]
        max_members: u16,
        /// Test-time augmentation of the cached probabilities to select from: `flip`.
        #[arg(long)]
        tta: Option<String>,
        /// Submit the chosen ensemble.
        #[arg(long)]
        submit: bool,
        /// JSON, every field.
        #[arg(short = 'j', long)]
        json: bool,
    },
}

pub fn run(global: &Global, cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Run { dataset, spec, args, memo } => run_session(global, &dataset, spec.as_deref(), args, memo),
        Command::Ps { all, dataset, json } => ps(global, all, dataset, json),
        Command::Specs { json } => specs(global, json),
        Command::Logs { session, follow } => logs(global, &session, follow),
        Command::Stop { sessions, sweep } => stop(global, &sessions, sweep.as_deref()),
        Command::Rm { session, yes } => remove(global, &session, yes),
        Command::Fork { session, checkpoint, args, memo } => fork(global, &session, checkpoint, args, memo),
        Command::Model(ModelCommand::Ls { session, json }) => model_ls(global, &session, json),
        Command::Model(ModelCommand::Rm { session, checkpoint, yes }) => model_rm(global, &session, &checkpoint, yes),
        Command::Spec(SpecCommand::Schema) => super::spec::schema(),
        Command::Submit(a) => {
            submit::submit(global, &a.targets, a.weights.as_deref(), a.tta.as_deref(), a.test, a.verbose)
        }
        Command::Ensemble(EnsembleCommand::Auto { dataset, max_members, tta, submit, json }) => {
            submit::auto(global, &dataset, usize::from(max_members), tta.as_deref(), submit, json)
        }
        Command::Submissions { dataset, json } => submit::list(global, dataset.as_deref(), json),
    }
}

/// The session a user typed: a whole id as it is; `dataset/n` and `n` are the daemon's user's (`rush ps` shows them
/// so), and `n` must name one session among the registered datasets.
pub fn resolve(api: &Api, typed: &str) -> anyhow::Result<SessionId> {
    let reference: SessionRef = typed.parse()?;
    if let SessionRef::Full(id) = &reference {
        return Ok(id.clone());
    }
    let info: Info = api.get("/info")?;
    let datasets: Vec<String> = match reference {
        SessionRef::Number(_) => api.get::<Vec<DatasetView>>("/datasets")?.into_iter().map(|d| d.name).collect(),
        _ => Vec::new(),
    };
    let mut existing = Vec::new();
    if matches!(reference, SessionRef::Number(_)) {
        for id in reference.candidates(&info.user, &datasets) {
            if api.get_optional::<SessionView>(&format!("/sessions/{id}"))?.is_some() {
                existing.push(id);
            }
        }
    }
    Ok(reference.pick(typed, &info.user, &datasets, existing)?)
}

/// Asks `question` on the terminal and says whether the answer was yes; `yes` (`-y`) answers for scripts. Without a
/// terminal to ask on and without `-y`, nothing is deleted: the error says to pass `-y`.
fn confirm(question: &str, yes: bool) -> anyhow::Result<bool> {
    use std::io::{BufRead, IsTerminal, Write};
    if yes {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        bail!("{question} Nothing was deleted: there is no terminal to ask on; pass -y to confirm");
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer).context("reading the answer")?;
    Ok(matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes"))
}

/// `rush run`: write a new, uniquely named spec into the daemon's experiments folder, then wait for its verdict.
fn run_session(
    global: &Global,
    dataset: &str,
    spec_file: Option<&Path>,
    args: Option<String>,
    memo: Option<String>,
) -> anyhow::Result<ExitCode> {
    let api = Api::connect(global)?;
    let info: Info = api.get("/info")?;
    let mut spec = match spec_file {
        Some(path) => {
            let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            Spec::parse_bytes(&path.display().to_string(), &bytes)?
        }
        None => Spec { dataset: dataset.to_string(), ..Spec::default() },
    };
    spec.dataset = dataset.to_string();
    if let Some(a) = args.as_deref().filter(|a| !a.trim().is_empty()) {
        spec = crate::core::spec::apply_overrides(&spec, a)?;
    }
    if let Some(m) = memo {
        spec.memo = m;
    }
    // What the user typed, to name in a refusal instead of the file written for them.
    let mut typed = format!("rush run -d {dataset}");
    if let Some(p) = spec_file {
        typed.push_str(&format!(" -e {}", p.display()));
    }
    if let Some(a) = args.as_deref().filter(|a| !a.trim().is_empty()) {
        typed.push_str(&format!(" -a {a:?}"));
    }
    spec.validate(&spec_file.map_or_else(|| typed.clone(), |p| p.display().to_string()))?;
    let yaml = serde_saphyr::to_string(&spec).context("writing the spec as YAML")?;
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let name = format!("run-{}-{}-{}.yaml", stamp.as_secs(), stamp.subsec_nanos(), std::process::id());
    let dir = PathBuf::from(&info.experiments);
    let path = dir.join(&name);
    let header = format!("# written by `rush run -d {dataset}`\n");
    crate::disk::write_atomic(&path, format!("{header}{yaml}").as_bytes()).context("writing the spec")?;
    let key = path.display().to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let rows: Vec<SpecRow> = api.get(&format!("/specs?path={}", encode(&key)))?;
        if let Some(row) = rows.first() {
            match row.status {
                SpecStatus::Accepted => {
                    for s in &row.sessions {
                        println!("{s}");
                    }
                    return Ok(ExitCode::SUCCESS);
                }
                SpecStatus::Rejected => {
                    // The file was ours, not the user's: leave no refused spec (nor its error file) behind.
                    let _ = std::fs::remove_file(&path);
                    let _ = std::fs::remove_file(crate::daemon::intake::error_file(&path));
                    let error = row.error.as_deref().unwrap_or("the spec was rejected");
                    bail!("{}", error.replace(&key, &typed))
                }
            }
        }
        if std::time::Instant::now() > deadline {
            bail!("the daemon did not pick up {key} within 60 s (is it watching {}?)", info.experiments);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Percent-encodes a query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<ExitCode> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(ExitCode::SUCCESS)
}

/// `rush ps`: NSML's columns.
fn ps(global: &Global, all: bool, dataset: Option<String>, json: bool) -> anyhow::Result<ExitCode> {
    let api = Api::connect(global)?;
    let mut path = format!("/sessions?all={all}");
    if let Some(d) = &dataset {
        path.push_str(&format!("&dataset={}", encode(d)));
    }
    let sessions: Vec<SessionView> = api.get(&path)?;
    if let (Some(d), true) = (dataset.as_deref(), sessions.is_empty()) {
        let known: Vec<DatasetView> = api.get("/datasets")?;
        if !known.iter().any(|k| k.name == d) {
            let names: Vec<&str> = known.iter().map(|k| k.name.as_str()).collect();
            bail!(
                "-d {d}: not a registered dataset (registered: {})",
                if names.is_empty() { "none".to_string() } else { names.join(", ") }
            );
        }
    }
    if json {
        return print_json(&sessions);
    }
    let info: Info = api.get("/info")?;
    let rejected: Vec<RejectedSpec> = api.get("/specs/rejected")?;
    let now = crate::store::now();
    let rows: Vec<Vec<String>> = sessions
        .iter()
        .map(|s| {
            let status = match (&s.state, &s.slot, s.position) {
                (crate::core::session::SessionState::Running, Some(slot), _) => format!("running ({slot})"),
                (crate::core::session::SessionState::Queued, _, Some(p)) => format!("queued #{p} ({})", s.device),
                (crate::core::session::SessionState::Queued, _, None) => format!("queued ({})", s.device),
                (state, _, _) => state.to_string(),
            };
            let mut summary = match s.epoch {
                Some(e) => format!("epoch {e}/{}", s.epochs),
                None => String::new(),
            };
            // What it waits for (its dataset's registration), or what it does before its first step (a cache build).
            for note in [&s.waiting, &s.progress].into_iter().flatten() {
                summary.push_str(&format!(" {note}"));
            }
            if let Some(acc) = s.best_val_acc {
                summary.push_str(&format!(" best val_acc={acc:.4}"));
            }
            if let Some(eta) = s.eta {
                summary.push_str(&format!(" ETA {}", format::duration(eta)));
            }
            let description = s.exit_reason.as_deref().and_then(|r| r.lines().next()).unwrap_or("").to_string();
            vec![
                s.id.clone(),
                format::ago(now, Some(s.created)),
                table::one_line(&s.memo, MEMO_WIDTH),
                status,
                summary.trim().to_string(),
                description,
            ]
        })
        .collect();
    print!("{}", table::render(&["Name", "Created", "Memo", "Status", "Summary", "Description"], &rows));
    if let Some(n) = info.waiting_submission {
        println!("submission {n} waits for a slot: it takes the next one free, before the queued sessions");
    }
    print!("{}", rejected_since(&rejected, info.started_at, now));
    Ok(ExitCode::SUCCESS)
}

/// The lines `ps` adds under its table: the spec files rejected since the daemon started, one line each with why.
fn rejected_since(rejected: &[RejectedSpec], started_at: f64, now: f64) -> String {
    let recent: Vec<&RejectedSpec> = rejected.iter().filter(|r| r.seen_at >= started_at).collect();
    let older = rejected.len() - recent.len();
    let mut out = String::new();
    if !recent.is_empty() {
        out.push_str(&format!(
            "\n{} spec file{} rejected since the daemon started (fix and save to queue; `rush specs` lists them):\n",
            recent.len(),
            if recent.len() == 1 { "" } else { "s" }
        ));
        for r in &recent {
            out.push_str(&format!("  {} ({})\n", table::one_line(&r.error, 300), format::ago(now, Some(r.seen_at))));
        }
    } else if older > 0 {
        out.push_str(&format!(
            "\n{older} spec file{} rejected before the daemon started: `rush specs`\n",
            if older == 1 { " is still" } else { "s are still" }
        ));
    }
    out
}

/// `rush specs`: the spec files in experiments/ whose current content was rejected, with why.
fn specs(global: &Global, json: bool) -> anyhow::Result<ExitCode> {
    let api = Api::connect(global)?;
    let rejected: Vec<RejectedSpec> = api.get("/specs/rejected")?;
    if json {
        return print_json(&rejected);
    }
    if rejected.is_empty() {
        println!("no rejected spec files: every spec in experiments/ was read");
        return Ok(ExitCode::SUCCESS);
    }
    let now = crate::store::now();
    for r in &rejected {
        let error_file = crate::daemon::intake::error_file(Path::new(&r.path));
        println!("{}  (rejected {}; why also in {})", r.path, format::ago(now, Some(r.seen_at)), error_file.display());
        println!("  {}", table::one_line(&r.error, 2000));
    }
    Ok(ExitCode::SUCCESS)
}

/// The memo column of `ps`: at most this many characters (`-j` has the whole memo).
const MEMO_WIDTH: usize = 48;

/// `rush logs [-f]`: the session's `train.log`, followed until the session ends with `-f`, then how it ended.
fn logs(global: &Global, session: &str, follow: bool) -> anyhow::Result<ExitCode> {
    let api = Api::connect(global)?;
    let id = resolve(&api, session)?;
    let mut resp = api.stream(&format!("/sessions/{id}/logs?follow={follow}"))?;
    let mut out = std::io::stdout().lock();
    if std::io::copy(&mut resp, &mut out).is_err() {
        bail!(
            "the daemon went away while following {id}'s log (stopped or killed); `rush logs -f {id}` once it is back"
        );
    }
    if follow {
        std::io::Write::flush(&mut out).ok();
        let s: SessionView = api.get(&format!("/sessions/{id}"))?;
        let why = s.exit_reason.as_deref().and_then(|r| r.lines().next()).map(|r| format!(": {r}")).unwrap_or_default();
        if s.state.is_terminal() {
            eprintln!("[rush] {id} ended {}{why}", s.state);
        } else {
            eprintln!("[rush] {id} is {} again{why}; it continues when the daemon runs it", s.state);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `rush stop SESSION... [--sweep SESSION]`: stops each, printing each outcome; one that cannot be stopped is said on
/// stderr and the others are still stopped (the exit status says whether all were).
fn stop(global: &Global, typed: &[String], sweep: Option<&str>) -> anyhow::Result<ExitCode> {
    let api = Api::connect(global)?;
    let mut ids = Vec::new();
    let mut failed = false;
    for t in typed {
        match resolve(&api, t) {
            Ok(id) => ids.push(id),
            Err(e) => {
                eprintln!("rush: {}", super::error_line(&e));
                failed = true;
            }
        }
    }
    if let Some(t) = sweep {
        let points = sweep_points(&api, t)?;
        if points.is_empty() {
            println!("nothing to stop: no point of {t}'s sweep is queued or running");
        }
        ids.extend(points.into_iter().filter(|p| !ids.contains(p)).collect::<Vec<_>>());
    }
    for id in ids {
        match api.post::<_, Changed>(&format!("/sessions/{id}/stop"), &serde_json::json!({})) {
            Ok(done) => println!("{}", done.message),
            Err(e) => {
                eprintln!("rush: {}", super::error_line(&e));
                failed = true;
            }
        }
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// The queued and running sessions queued from the same spec file as `typed` (a sweep's points), in queue order.
fn sweep_points(api: &Api, typed: &str) -> anyhow::Result<Vec<SessionId>> {
    let id = resolve(api, typed)?;
    let one: SessionView = api.get(&format!("/sessions/{id}"))?;
    let Some(spec) = one.spec_id else {
        bail!("--sweep {typed}: {id} is a fork, queued from no spec file, so it belongs to no sweep");
    };
    let active: Vec<SessionView> = api.get("/sessions")?;
    active
        .into_iter()
        .filter(|s| s.spec_id == Some(spec))
        .map(|s| s.id.parse().with_context(|| format!("session id {}", s.id)))
        .collect()
}

/// `rush rm SESSION [-y]`: asks first on a terminal.
fn remove(global: &Global, typed: &str, yes: bool) -> anyhow::Result<ExitCode> {
    let api = Api::connect(global)?;
    let id = resolve(&api, typed)?;
    let s: SessionView = api.get(&format!("/sessions/{id}"))?;
    let checkpoints: Vec<CheckpointView> = api.get(&format!("/sessions/{id}/checkpoints"))?;
    let question = format!(
        "Remove {id} ({}, {} checkpoint{}) with its folder, logs and checkpoints?",
        s.state,
        checkpoints.len(),
        if checkpoints.len() == 1 { "" } else { "s" }
    );
    if !confirm(&question, yes)? {
        println!("kept {id}");
        return Ok(ExitCode::SUCCESS);
    }
    let done: Changed = api.delete(&format!("/sessions/{id}"))?;
    println!("{}", done.message);
    Ok(ExitCode::SUCCESS)
}

/// `rush model rm SESSION CKPT [-y]`: asks first on a terminal.
fn model_rm(global: &Global, typed: &str, checkpoint: &str, yes: bool) -> anyhow::Result<ExitCode> {
    let api = Api::connect(global)?;
    let id = resolve(&api, typed)?;
    // An unknown session is said before anything is asked.
    api.get::<SessionView>(&format!("/sessions/{id}"))?;
    if !confirm(&format!("Delete checkpoint {checkpoint} of {id} (its weights and state)?"), yes)? {
        println!("kept checkpoint {checkpoint} of {id}");
        return Ok(ExitCode::SUCCESS);
    }
    let done: Changed = api.delete(&format!("/sessions/{id}/checkpoints/{checkpoint}"))?;
    println!("{}", done.message);
    Ok(ExitCode::SUCCESS)
}

/// `rush fork SESSION -c CHECKPOINT`: prints the new session's id.
fn fork(
    global: &Global,
    session: &str,
    checkpoint: String,
    args: Option<String>,
    memo: Option<String>,
) -> anyhow::Result<ExitCode> {
    let api = Api::connect(global)?;
    let id = resolve(&api, session)?;
    let done: Changed = api.post(&format!("/sessions/{id}/fork"), &ForkRequest { checkpoint, args, memo })?;
    println!("{}", done.session);
    Ok(ExitCode::SUCCESS)
}

/// `rush model ls`: NSML's columns (Checkpoint, Last Modified, Elapsed, Summary, Size).
fn model_ls(global: &Global, session: &str, json: bool) -> anyhow::Result<ExitCode> {
    let api = Api::connect(global)?;
    let id = resolve(&api, session)?;
    let list: Vec<CheckpointView> = api.get(&format!("/sessions/{id}/checkpoints"))?;
    if json {
        return print_json(&list);
    }
    let now = crate::store::now();
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|c| {
            let mut summary = format!("val_acc={:.4}", c.val_acc);
            if let Some(loss) = c.val_loss.or(c.train_loss) {
                summary.push_str(&format!(" loss={loss:.4}"));
            }
            vec![
                c.checkpoint.clone(),
                format::ago(now, Some(c.last_modified)),
                c.elapsed.map(format::duration).unwrap_or_default(),
                summary,
                format::bytes(c.bytes),
            ]
        })
        .collect();
    print!("{}", table::render(&["Checkpoint", "Last Modified", "Elapsed", "Summary", "Size"], &rows));
    Ok(ExitCode::SUCCESS)
}
