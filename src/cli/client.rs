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
use crate::web::api::{Changed, CheckpointView, DatasetView, ForkRequest, Info, RejectedSpec, SessionView};

pub mod http;
pub mod submit;
pub mod table;

use http::Api;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Queue a session (sent to the daemon, queued as the user your token names).
    Run {
        /// The registered dataset to train on (`rush dataset ls`).
        #[arg(short = 'd', long)]
        dataset: String,
        /// A spec file to start from, or the Python file a code session runs (`-e train.py`; in a folder with a
        /// `main.py`, that file runs without -e, as `nsml run` did).
        #[arg(short = 'e', long)]
        spec: Option<PathBuf>,
        /// Overrides, "key=value key2=value2" (dotted paths, e.g. optimizer.lr=0.01); for a code session, the
        /// program's own arguments ("--epochs 30 --lr 0.001").
        #[arg(short = 'a', long, allow_hyphen_values = true)]
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
        /// Every queued, running or waiting point of the sweep this session belongs to.
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
    /// Log in to a shared daemon: check your token and keep it for every later command.
    Login {
        /// The token `rush user add` printed (read from the standard input when left out).
        token: Option<String>,
    },
    /// Users (teams) of a shared daemon.
    #[command(subcommand)]
    User(UserCommand),
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// List a user in the home's users.yaml and print its new token, once (only its SHA-256 is kept).
    Add {
        /// The user's name, as session ids show it (`team07/airush1/3`).
        name: String,
        /// How many GPU slots its sessions and submissions may hold at once (no cap when left out).
        #[arg(long)]
        gpus: Option<u32>,
        /// An organiser: sees and stops every user's sessions.
        #[arg(long)]
        admin: bool,
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
        Command::Login { token } => login(global, token),
        Command::User(UserCommand::Add { name, gpus, admin }) => user_add(global, &name, gpus, admin),
    }
}

/// `rush login`: checks the token against the daemon, then keeps it (mode 0600) where every later command reads it.
fn login(global: &Global, token: Option<String>) -> anyhow::Result<ExitCode> {
    let token = match token {
        Some(t) => t,
        None => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).context("reading the token from the standard input")?;
            line
        }
    };
    let token = token.trim().to_string();
    if token.is_empty() {
        bail!("no token given: `rush login TOKEN`, or the token on the standard input");
    }
    let checked = Global { token: Some(token.clone()), ..global.clone() };
    let api = Api::connect(&checked)?;
    let info: Info = api.get("/info").context("the daemon refused this token")?;
    let path = super::token_file(|name| std::env::var(name).ok())
        .context("no home folder to keep the token in (HOME is not set); use RUSH_TOKEN instead")?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    write_private(&path, &format!("{token}\n")).with_context(|| format!("writing {}", path.display()))?;
    let role = if info.admin { "admin" } else { "member" };
    println!("logged in to {} as {} ({role}); the token is kept in {}", api.base(), info.user, path.display());
    Ok(ExitCode::SUCCESS)
}

/// Writes a file only its owner may read.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    file.write_all(text.as_bytes())
}

/// `rush user add`: lists the user in the home's `users.yaml` (a running daemon reads it again at once).
fn user_add(global: &Global, name: &str, gpus: Option<u32>, admin: bool) -> anyhow::Result<ExitCode> {
    let role = if admin { crate::core::access::Role::Admin } else { crate::core::access::Role::Member };
    let path = global.home.users_file();
    let token = crate::daemon::users::add(&path, name, gpus, role)?;
    let quota = gpus.map_or_else(|| "no GPU cap".to_string(), |g| format!("at most {g} GPUs at once"));
    eprintln!(
        "added {name} ({}, {quota}) to {}. Its token, shown only now (give it to {name}; `rush login TOKEN`):",
        if admin { "admin" } else { "member" },
        path.display()
    );
    println!("{token}");
    Ok(ExitCode::SUCCESS)
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

/// `rush run`: sends the spec to the daemon, which queues it as the user the token names or says why not.
fn run_session(
    global: &Global,
    dataset: &str,
    spec_file: Option<&Path>,
    args: Option<String>,
    memo: Option<String>,
) -> anyhow::Result<ExitCode> {
    let api = Api::connect(global)?;
    // NSML's `nsml run`: in a folder with a `main.py` (or with `-e FILE.py`), the folder's own code is the session.
    let entry = match spec_file {
        Some(path) if path.extension().is_some_and(|e| e == "py") => Some(path.to_path_buf()),
        Some(_) => None,
        None => Some(PathBuf::from("main.py")).filter(|p| p.is_file()),
    };
    if let Some(entry) = entry {
        return run_code(&api, dataset, &entry, args, memo);
    }
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
    // What the user typed, for the daemon to name in a refusal.
    let mut typed = format!("rush run -d {dataset}");
    if let Some(p) = spec_file {
        typed.push_str(&format!(" -e {}", p.display()));
    }
    if let Some(a) = args.as_deref().filter(|a| !a.trim().is_empty()) {
        typed.push_str(&format!(" -a {a:?}"));
    }
    spec.validate(&spec_file.map_or_else(|| typed.clone(), |p| p.display().to_string()))?;
    let yaml = serde_saphyr::to_string(&spec).context("writing the spec as YAML")?;
    // Sent, not written into the daemon's folder: a daemon on another machine (a shared cluster) takes it the same
    // way, and queues it as the user its token names.
    let request = crate::web::api::RunRequest { source: typed, spec: yaml, code: None };
    let queued: crate::web::api::Queued = api.post("/runs", &request)?;
    for s in &queued.sessions {
        println!("{s}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `rush run` of a code session: the current folder is packed (what `.nsmlignore`/`.rushignore` names left out) and
/// sent with a spec of `entry`, the program's own arguments (`-a`) and the memo.
fn run_code(
    api: &Api,
    dataset: &str,
    entry: &Path,
    args: Option<String>,
    memo: Option<String>,
) -> anyhow::Result<ExitCode> {
    use base64::Engine;
    let folder = std::env::current_dir().context("finding the current folder")?;
    let inside = entry.is_relative() && entry.components().all(|c| matches!(c, std::path::Component::Normal(_)));
    anyhow::ensure!(
        inside,
        "-e {}: the entry file must be inside the current folder (the code folder that is uploaded)",
        entry.display()
    );
    anyhow::ensure!(
        folder.join(entry).is_file(),
        "-e {}: no such file in {} (NSML runs main.py; -e names another entry file)",
        entry.display(),
        folder.display()
    );
    let spec = Spec {
        dataset: dataset.to_string(),
        entry: Some(entry.display().to_string()),
        args: args.clone().unwrap_or_default(),
        memo: memo.unwrap_or_default(),
        ..Spec::default()
    };
    let mut typed = format!("rush run -d {dataset} -e {}", entry.display());
    if let Some(a) = args.as_deref().filter(|a| !a.trim().is_empty()) {
        typed.push_str(&format!(" -a {a:?}"));
    }
    spec.validate(&typed)?;
    let archive = crate::code::upload::pack(&folder)?;
    eprintln!("uploading {} ({} packed)", folder.display(), format::bytes(archive.len() as i64));
    // Only a code spec's own fields: the built-in trainer's defaults would be refused in it.
    let mut fields = std::collections::BTreeMap::new();
    fields.insert("dataset", spec.dataset.clone());
    fields.insert("entry", entry.display().to_string());
    fields.insert("args", spec.args.clone());
    fields.insert("memo", spec.memo.clone());
    let yaml = serde_saphyr::to_string(&fields).context("writing the spec as YAML")?;
    let code = Some(base64::engine::general_purpose::STANDARD.encode(&archive));
    let request = crate::web::api::RunRequest { source: typed, spec: yaml, code };
    let queued: crate::web::api::Queued = api.post("/runs", &request)?;
    for s in &queued.sessions {
        println!("{s}");
    }
    Ok(ExitCode::SUCCESS)
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
                Some(e) if s.epochs == 0 => format!("epoch {e}"),
                Some(e) => format!("epoch {e}/{}", s.epochs),
                None => String::new(),
            };
            if let Some(rung) = &s.rung {
                summary.push_str(&format!(" rung {rung}"));
            }
            // What it waits for (its dataset's registration), or what it does before its first step (a cache build).
            for note in [&s.waiting, &s.progress].into_iter().flatten() {
                summary.push_str(&format!(" {note}"));
            }
            match (&s.summary, s.best_val_acc) {
                // A code session's latest summary report, as NSML's Summary column showed it.
                (Some(reported), _) => summary.push_str(&format!(" {reported}")),
                (None, Some(acc)) => summary.push_str(&format!(" best val_acc={acc:.4}")),
                (None, None) => {}
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
            out.push_str(&format!("  {} ({})\n", table::one_line(&r.error, 400), format::ago(now, Some(r.seen_at))));
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
            println!("nothing to stop: no point of {t}'s sweep is queued, running or waiting");
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

/// The queued, running and waiting sessions of the sweep `typed` is a point of (queued together, from a spec file or
/// by `rush run`), or queued from the same spec file, in queue order.
fn sweep_points(api: &Api, typed: &str) -> anyhow::Result<Vec<SessionId>> {
    let id = resolve(api, typed)?;
    let one: SessionView = api.get(&format!("/sessions/{id}"))?;
    if one.sweep.is_none() && one.spec_id.is_none() {
        bail!("--sweep {typed}: {id} is a single session (a fork, or one `rush run`), no point of a sweep");
    }
    let active: Vec<SessionView> = api.get("/sessions")?;
    active
        .into_iter()
        .filter(|s| match one.sweep {
            Some(sweep) => s.sweep == Some(sweep),
            None => s.spec_id == one.spec_id,
        })
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
            let mut summary = match (&c.summary, &c.ranking) {
                // A code session: what it reported (NSML's summary).
                (Some(reported), _) => reported.clone(),
                // A code session without a validation metric: no val_acc to show.
                (None, Some(note)) if note.starts_with("no validation") => String::new(),
                _ => format!("val_acc={:.4}", c.val_acc),
            };
            if let (None, Some(loss)) = (&c.summary, c.val_loss.or(c.train_loss)) {
                summary.push_str(&format!(" loss={loss:.4}"));
            }
            if let Some(note) = &c.ranking {
                summary.push_str(&format!(" ({note})"));
            }
            let summary = summary.trim().to_string();
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
