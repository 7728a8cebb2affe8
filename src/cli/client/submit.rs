//! `rush submit`, `rush ensemble auto` and `rush dataset board`: queue a submission and wait for its score, pick an
//! ensemble from the probability cache, show a dataset's board. All through the daemon's API.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::http::Api;
use super::table;
use crate::cli::Global;
use crate::core::checkpoint::CheckpointRef;
use crate::core::format;
use crate::daemon::ensembles::AutoEnsemble;
use crate::store::SubmissionState;
use crate::submit::{MemberRef, NO_SLOT, Submission, Tta};
use crate::web::submissions::{BoardView, SubmissionView};

/// How long `submit` waits for the score before giving up (the submission goes on in the daemon).
const WAIT: Duration = Duration::from_secs(6 * 3600);

/// `rush submit [-t] [-v] SESSION CHECKPOINT` or `rush submit S:C [S:C ...] [--weights ...] [--tta flip]`.
pub fn submit(
    global: &Global,
    targets: &[String],
    weights: Option<&[f64]>,
    tta: Option<&str>,
    dry_run: bool,
    verbose: bool,
) -> anyhow::Result<ExitCode> {
    let tta: Tta = tta.unwrap_or("none").parse()?;
    let api = Api::connect(global)?;
    let targets = resolve_targets(&api, targets)?;
    let request = Submission::from_args(&targets, weights, tta, dry_run)?;
    send(&api, &request, verbose)
}

/// The targets with their session shorthands (`3`, `emoji/3`, in `3 best` or `3:best`) written out as whole ids.
fn resolve_targets(api: &Api, targets: &[String]) -> anyhow::Result<Vec<String>> {
    if let [session, checkpoint] = targets
        && !session.contains(':')
        && !checkpoint.contains(':')
    {
        return Ok(vec![super::resolve(api, session)?.to_string(), checkpoint.clone()]);
    }
    targets
        .iter()
        .map(|t| match t.rsplit_once(':') {
            Some((session, checkpoint)) => Ok(format!("{}:{checkpoint}", super::resolve(api, session)?)),
            None => Ok(t.clone()),
        })
        .collect()
}

/// Queues `request`, waits for it and prints the score.
fn send(api: &Api, request: &Submission, verbose: bool) -> anyhow::Result<ExitCode> {
    let queued: SubmissionView = api.post("/submissions", request)?;
    let id = queued.id;
    if verbose {
        eprintln!("submission {id} queued on {}:", queued.dataset);
        for m in &queued.members {
            eprintln!("  {}:{} (epoch {}) weight {}", m.session, m.checkpoint, m.epoch, m.weight);
        }
    }
    let started = Instant::now();
    let mut last = (queued.state, queued.slot.clone());
    let mut waiting: Option<String> = None;
    let done = loop {
        let s: SubmissionView = api.get(&format!("/submissions/{id}"))?;
        // Say what it waits for, each time that changes (not only with -v: a wait can be long).
        if s.waiting_for.is_some() && s.waiting_for != waiting {
            eprintln!("submission {id}: waiting for {}", s.waiting_for.as_deref().unwrap_or_default());
        }
        waiting = s.waiting_for.clone();
        // The slot says more as the submission runs (under Slurm: its job, and whether Slurm keeps it waiting).
        if verbose && (s.state, s.slot.clone()) != last {
            eprintln!(
                "submission {id}: {}{}",
                s.state,
                match s.slot.as_deref() {
                    Some(NO_SLOT) => " with no slot: its members were cached".to_string(),
                    Some(slot) => format!(" in {slot}"),
                    None => String::new(),
                }
            );
            last = (s.state, s.slot.clone());
        }
        if s.state.is_terminal() {
            break s;
        }
        if started.elapsed() > WAIT {
            bail!("submission {id} is still {} after {:?}; see `rush dataset board {}`", s.state, WAIT, s.dataset);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    if done.state == SubmissionState::Failed {
        bail!("submission {id} failed: {}", done.error.as_deref().unwrap_or("no reason recorded"));
    }
    let score = done.public_score.unwrap_or(0.0);
    let samples = done.samples.unwrap_or(0);
    if done.dry_run {
        println!("submission {id} (dry run, not ranked): accuracy {score:.4} on {samples} public test samples");
    } else {
        // The public part is a fixed share of the test set: say how many stickers the score is on.
        let board: BoardView = api.get(&format!("/datasets/{}/board", done.dataset))?;
        let public = crate::core::score::BoardSplit::new(&done.dataset, samples.max(0) as usize, board.public_percent)
            .map(|split| split.n_public().to_string())
            .unwrap_or_else(|_| "?".into());
        println!("submission {id}: public score {score:.4} (on the public {public} of {samples} test stickers)");
        if let Some(line) = standing(&board, id) {
            println!("{line}");
        }
        if let (Some(left), Some(per_day)) = (done.left_today, done.per_day) {
            println!("{}", left_today(left, per_day, &done.dataset));
        }
    }
    if verbose {
        eprintln!(
            "inference {:.2} s, mixing and scoring {:.2} s; predictions: {}",
            done.infer_seconds.unwrap_or(0.0),
            done.score_seconds.unwrap_or(0.0),
            done.download.as_deref().unwrap_or("-")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Where a scored submission stands: its rank on the board and the best public score so far.
fn standing(board: &BoardView, id: i64) -> Option<String> {
    let line = board.lines.iter().find(|l| l.id == id)?;
    let best = board.lines.first()?;
    let score = if board.revealed { "score" } else { "public score" };
    Some(if best.id == id {
        format!(
            "rank {} of {} on the board of {}: the best {score} so far",
            line.rank,
            board.lines.len(),
            board.dataset
        )
    } else {
        format!(
            "rank {} of {} on the board of {}; the best {score} so far is {:.4} (submission {} by {})",
            line.rank,
            board.lines.len(),
            board.dataset,
            best.private_score.filter(|_| board.revealed).unwrap_or(best.public_score),
            best.id,
            best.user
        )
    })
}

/// How many ranked submissions are left today.
fn left_today(left: u32, per_day: u32, dataset: &str) -> String {
    format!(
        "{left} of {per_day} ranked submission{} left today on {dataset} (the count starts again at 00:00 UTC; dry runs \
         with -t are free)",
        if per_day == 1 { "" } else { "s" }
    )
}

/// `rush submissions [-d DATASET] [-j]`: every submission, newest first, whatever became of it.
pub fn list(global: &Global, dataset: Option<&str>, json: bool) -> anyhow::Result<ExitCode> {
    let api = Api::connect(global)?;
    let path = match dataset {
        Some(d) => format!("/submissions?dataset={d}"),
        None => "/submissions".to_string(),
    };
    let mut all: Vec<SubmissionView> = api.get(&path)?;
    all.sort_by_key(|s| std::cmp::Reverse(s.id));
    if json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(ExitCode::SUCCESS);
    }
    let now = crate::store::now();
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|s| {
            let ensemble = s.members.len() > 1;
            let members: Vec<String> = s
                .members
                .iter()
                .map(|m| {
                    let weight = if ensemble { format!(" x{}", m.weight) } else { String::new() };
                    format!("{}:{}{weight}", m.session, m.epoch)
                })
                .collect();
            let kind = if s.dry_run { "dry run" } else { "ranked" };
            let result = match (s.state, s.public_score) {
                (SubmissionState::Scored, Some(score)) => format!("{score:.4}"),
                (SubmissionState::Failed, _) => table::one_line(s.error.as_deref().unwrap_or("failed"), 60),
                (state, _) => state.to_string(),
            };
            vec![
                s.id.to_string(),
                s.dataset.clone(),
                members.join(" "),
                s.tta.clone(),
                kind.to_string(),
                result,
                format::ago(now, Some(s.created)),
                s.user.clone(),
            ]
        })
        .collect();
    let header = ["Id", "Dataset", "Members", "TTA", "Kind", "Public score / state", "Submitted", "Who"];
    print!("{}", table::render(&header, &rows));
    Ok(ExitCode::SUCCESS)
}

/// `rush ensemble auto -d DATASET [--max-members N] [--tta flip] [--submit]`.
pub fn auto(
    global: &Global,
    dataset: &str,
    max_members: usize,
    tta: Option<&str>,
    submit: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let tta: Tta = tta.unwrap_or("none").parse()?;
    let api = Api::connect(global)?;
    let chosen: AutoEnsemble =
        api.get(&format!("/datasets/{dataset}/ensemble/auto?max_members={max_members}&tta={tta}"))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&chosen)?);
    } else {
        let cached = chosen.candidates - chosen.from_checkpoints;
        println!(
            "greedy selection over {} checkpoints of {dataset} ({cached} cached, {} never submitted, with the \
             validation predictions saved with them; {} validation samples):",
            chosen.candidates, chosen.from_checkpoints, chosen.valid_rows
        );
        if chosen.without_flip > 0 {
            println!(
                "{} of them were never submitted with flip: they compete with their validation predictions without \
                 flip",
                chosen.without_flip
            );
        }
        let rows: Vec<Vec<String>> = chosen
            .members
            .iter()
            .map(|m| {
                vec![
                    format!("{}:{}", m.session, m.epoch),
                    m.count.to_string(),
                    format!("{:.4}", m.weight),
                    format!("{:.4}", m.val_acc),
                ]
            })
            .collect();
        print!("{}", table::render(&["Member", "Count", "Weight", "Val acc alone"], &rows));
        println!(
            "ensemble val_acc {:.4}; best single {} {:.4}; gain {:+.4}",
            chosen.val_acc, chosen.best_single, chosen.best_single_acc, chosen.gain
        );
        match &chosen.held_out {
            Some(h) => {
                println!(
                    "on stickers it was not chosen on ({}-fold cross-fit): ensemble {:.4}; best single {:.4}; gain {:+.4}",
                    h.folds, h.val_acc, h.best_single_acc, h.gain
                );
                if h.gain <= 0.0 && chosen.members.len() > 1 {
                    println!(
                        "the gain does not hold on unseen stickers: selection fits this validation split's noise; the \
                         best single checkpoint is as good a submission"
                    );
                }
            }
            None => println!("no held-out estimate: the validation split is too small to cut in two"),
        }
    }
    if !submit {
        return Ok(ExitCode::SUCCESS);
    }
    let members = chosen
        .members
        .iter()
        .map(|m| {
            Ok(MemberRef {
                session: m.session.parse().with_context(|| format!("member {}", m.session))?,
                checkpoint: CheckpointRef::Epoch(m.epoch),
                weight: m.weight,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let request = Submission { members, tta, dry_run: false };
    request.validate()?;
    send(&api, &request, false)
}

/// `rush dataset board DATASET [-j] [--private]`.
pub fn board(global: &Global, dataset: &str, private: bool, json: bool) -> anyhow::Result<ExitCode> {
    let api = Api::connect(global)?;
    let board: BoardView = api.get(&format!("/datasets/{dataset}/board?private={private}"))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&board)?);
        return Ok(ExitCode::SUCCESS);
    }
    let now = crate::store::now();
    let mut header = vec!["Rank", "Id", "Session(s)", "Checkpoint(s)", "Public"];
    if board.revealed {
        header.push("Private");
    }
    header.extend(["Submitted", "User"]);
    let rows: Vec<Vec<String>> = board
        .lines
        .iter()
        .map(|l| {
            let mut row = vec![
                l.rank.to_string(),
                l.id.to_string(),
                l.sessions.join(" "),
                l.checkpoints.join(" "),
                format!("{:.4}", l.public_score),
            ];
            if board.revealed {
                row.push(l.private_score.map(|p| format!("{p:.4}")).unwrap_or_default());
            }
            row.extend([format::ago(now, Some(l.submitted_at)), l.user.clone()]);
            row
        })
        .collect();
    print!("{}", table::render(&header, &rows));
    if !board.revealed {
        println!("(public scores on {}% of the test set; private scores hidden)", board.public_percent);
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::BoardLineView;

    fn line(rank: usize, id: i64, public: f64) -> BoardLineView {
        BoardLineView {
            rank,
            id,
            sessions: vec!["u/emoji/1".into()],
            checkpoints: vec!["3".into()],
            weights: vec![1.0],
            tta: "none".into(),
            public_score: public,
            private_score: None,
            submitted_at: 0.0,
            user: "u".into(),
        }
    }

    #[test]
    fn a_scored_submission_says_its_rank_the_best_and_what_is_left() {
        let board = BoardView {
            dataset: "emoji".into(),
            revealed: false,
            public_percent: 30,
            lines: vec![line(1, 9, 0.875), line(2, 12, 0.8), line(3, 4, 0.5)],
        };
        assert_eq!(
            standing(&board, 12).unwrap(),
            "rank 2 of 3 on the board of emoji; the best public score so far is 0.8750 (submission 9 by u)"
        );
        assert_eq!(standing(&board, 9).unwrap(), "rank 1 of 3 on the board of emoji: the best public score so far");
        assert_eq!(standing(&board, 77), None);
        assert!(left_today(3, 10, "emoji").starts_with("3 of 10 ranked submissions left today on emoji"));
    }
}
