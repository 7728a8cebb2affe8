//! Submissions end to end on the CPU: a real daemon trains two tiny sessions on synthetic data, `rush submit` scores
//! each and their ensemble through `rush infer` children, the board lists them with scores this test recomputes from
//! the `.npy` files and the hidden labels, the daily limit refuses the next, private scores stay hidden until revealed,
//! `ensemble auto` picks from the probability cache, and no route, command or file a session sees holds the labels.
//! `rush infer` reads its images from the decoded-image caches (the test split's, built by the first member; the
//! training one for validation) and predicts exactly what it predicts from the PNGs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rush::core::ensemble::Probs;
use rush::core::score::{BoardSplit, Part};
use rush::core::session::SessionId;
use rush::home::Home;
use rush::submit::Tta;
use rush::submit::probs::{self, CacheKey, CacheSplit};
use rush::submit::report::{ImageOrigin, InferReport, read_report};

use crate::common::{Env, quick_spec, rush_exe, wait_for};

const TRAIN_TIMEOUT: Duration = Duration::from_secs(300);
const TEST_IMAGES: usize = 240;

/// The first tag of each test sticker, from the hidden labels file (read here, independently of the scorer).
fn hidden_labels(path: &Path) -> Vec<i64> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut rows: Vec<(usize, i64)> = text
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (index, tags) = l.split_once(',').unwrap();
            let first = tags.trim_matches('"').split(',').next().unwrap();
            (index.parse().unwrap(), first.trim().parse().unwrap())
        })
        .collect();
    rows.sort();
    rows.into_iter().map(|r| r.1).collect()
}

/// Loads predictions with Python and numpy (a real client), checking dtype, shape and range; returns them.
fn numpy_load(path: &Path, n: usize) -> Vec<i64> {
    let python = std::env::var("RUSH_PYTHON").expect("RUSH_PYTHON must name a Python with numpy");
    let script = r#"
import sys
import numpy as np
a = np.load(sys.argv[1])
n = int(sys.argv[2])
assert a.dtype == np.int64, a.dtype
assert a.shape == (n,), a.shape
assert ((a >= 0) & (a < 350)).all(), (a.min(), a.max())
print(" ".join(str(int(x)) for x in a))
"#;
    let out = Command::new(python).arg("-c").arg(script).arg(path).arg(n.to_string()).output().unwrap();
    assert!(out.status.success(), "numpy: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).split_whitespace().map(|x| x.parse().unwrap()).collect()
}

fn accuracy(predictions: &[i64], labels: &[i64], keep: impl Fn(usize) -> bool) -> f64 {
    let (mut right, mut total) = (0, 0);
    for (i, (p, l)) in predictions.iter().zip(labels).enumerate() {
        if keep(i) {
            total += 1;
            right += usize::from(p == l);
        }
    }
    right as f64 / total as f64
}

fn api(env: &Env, path: &str) -> reqwest::blocking::Response {
    let addr = std::fs::read_to_string(env.home.join("daemon.addr")).unwrap();
    reqwest::blocking::get(format!("http://{}/api{path}", addr.trim())).unwrap()
}

fn api_json(env: &Env, path: &str) -> serde_json::Value {
    let resp = api(env, path);
    assert!(resp.status().is_success(), "GET {path}: {}", resp.status());
    resp.json().unwrap()
}

/// `submission N: public score X` / `submission N (dry run...)`: the id.
fn submission_id(stdout: &str) -> i64 {
    let rest = stdout.trim().strip_prefix("submission ").unwrap_or_else(|| panic!("{stdout}"));
    rest.split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn two_sessions_their_ensemble_and_the_board_on_the_cpu() {
    let mut env = Env::new();
    let config = env.tmp.path().join("rush.yaml");
    std::fs::write(&config, "submissions_per_day: 4\n").unwrap();
    env.start_with(&["--config", config.to_str().unwrap()]);

    let src = env.tmp.path().join("src-synth");
    let out = Command::new(rush_exe())
        .args(["dataset", "synth", "--out"])
        .arg(&src)
        .args(["--train", "300", "--test", &TEST_IMAGES.to_string(), "--classes", "6", "--width", "40"])
        .args(["--height", "40", "--quiet", "--seed", "3", "--threads", "2"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    env.ok(&["dataset", "push", "synth", src.to_str().unwrap()]);
    let labels_path = env.home.join("labels/synth/test_labels.csv");
    let labels = hidden_labels(&labels_path);
    assert_eq!(labels.len(), TEST_IMAGES);

    // Nothing to submit before training: an unknown session is refused with its name.
    assert!(env.fails(&["submit", "tester/synth/1", "best"]).contains("tester/synth/1"));

    env.drop_spec("a.yaml", &quick_spec("synth", 2, "seed: 1\n"));
    env.drop_spec("b.yaml", &quick_spec("synth", 2, "seed: 2\n"));
    let (a, b) = ("tester/synth/1", "tester/synth/2");
    wait_for(Duration::from_secs(30), "two sessions", || env.session(b));
    env.wait_state(a, "succeeded", TRAIN_TIMEOUT);
    env.wait_state(b, "succeeded", TRAIN_TIMEOUT);

    // A dry run: up to 200 samples of the public part only (here all 72 public ones), not ranked.
    let split = BoardSplit::new("synth", TEST_IMAGES, 30).unwrap();
    let dry_indices = rush::core::score::dry_run_indices(&split);
    let dry_n = dry_indices.len();
    assert!(dry_n == split.n_public() && dry_indices.iter().all(|&i| split.part(i) == Part::Public));
    let dry = env.ok(&["submit", "-t", a, "best"]);
    assert!(dry.contains("dry run") && dry.contains(&format!("on {dry_n} public test samples")), "{dry}");
    let dry_id = submission_id(&dry);
    let dry_npy = env.home.join(format!("submissions/{dry_id}/predictions.npy"));
    let dry_predictions = numpy_load(&dry_npy, dry_n);
    let dry_score = api_json(&env, &format!("/submissions/{dry_id}"))["public_score"].as_f64().unwrap();
    let dry_labels: Vec<i64> = dry_indices.iter().map(|&i| labels[i]).collect();
    assert!((dry_score - accuracy(&dry_predictions, &dry_labels, |_| true)).abs() < 1e-12, "scored on its sample");

    // Flip test-time augmentation runs the whole path too.
    let flip = env.ok(&["submit", "-t", b, "last", "--tta", "flip"]);
    assert!(flip.contains(&format!("on {dry_n} public test samples")), "{flip}");
    assert_eq!(api_json(&env, &format!("/submissions/{}", submission_id(&flip)))["tta"], "flip");

    // Each session, then their ensemble (verbose shows the members and timings).
    // While the first one runs, its `rush infer` child is caught: its command line and environment name neither the
    // labels, the database nor the home.
    let submitting = Command::new(rush_exe())
        .args(["submit", a, "best"])
        .env("RUSH_HOME", &env.home)
        .env_remove("RUSH_URL")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let daemon_pid = env.daemon_pid().to_string();
    let (cmdline, environ) = wait_for(Duration::from_secs(120), "the rush infer child", || {
        std::fs::read_dir("/proc").ok()?.flatten().find_map(|p| {
            let stat = std::fs::read_to_string(p.path().join("stat")).ok()?;
            let parent = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.to_string();
            let cmdline = String::from_utf8_lossy(&std::fs::read(p.path().join("cmdline")).ok()?).replace('\0', " ");
            let environ = String::from_utf8_lossy(&std::fs::read(p.path().join("environ")).ok()?).to_string();
            (parent == daemon_pid && cmdline.contains(" infer ")).then_some((cmdline, environ))
        })
    });
    for (what, text) in [("command line", &cmdline), ("environment", &environ)] {
        assert!(!text.contains("labels") && !text.contains("rush.db"), "the infer child's {what} names them: {text}");
    }
    assert!(!environ.contains("RUSH_HOME") && cmdline.contains("--device cpu"), "{cmdline}");
    let out = submitting.wait_with_output().unwrap();
    assert!(out.status.success());
    let one = String::from_utf8_lossy(&out.stdout).to_string();
    let out = env.cli(&["submit", "-v", b, "last"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let two = String::from_utf8_lossy(&out.stdout).to_string();
    let verbose = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(verbose.contains("tester/synth/2:last (epoch 2)") && verbose.contains("inference"), "{verbose}");
    let ensemble_target = [format!("{a}:best"), format!("{b}:last")];
    let three = env.ok(&["submit", &ensemble_target[0], &ensemble_target[1], "--weights", "1,2"]);
    let ids: Vec<i64> = [&one, &two, &three].iter().map(|s| submission_id(s)).collect();

    // The dry run predicted the dry-run rows of the full prediction of the same checkpoint.
    let single = numpy_load(&env.home.join(format!("submissions/{}/predictions.npy", ids[0])), TEST_IMAGES);
    let dry_rows: Vec<i64> = dry_indices.iter().map(|&i| single[i]).collect();
    assert_eq!(dry_predictions, dry_rows);

    // An ensemble of a checkpoint with itself is that checkpoint (a dry run from the cache, no inference). Its members
    // are all cached, so it needs no slot: it is scored while a long session holds the daemon's only one.
    // It keeps only its last checkpoint, so retention would delete checkpoint 1 at once without the pin below.
    env.drop_spec("long.yaml", &quick_spec("synth", 500, "seed: 3\ncheckpoints: {keep_best: 0, keep_last: true}\n"));
    let long = "tester/synth/3";
    env.wait_state(long, "running", TRAIN_TIMEOUT);
    let out = env.cli(&["submit", "-v", "-t", &format!("{a}:best"), &format!("{a}:best"), "--weights", "0.3,0.7"]);
    let (itself, verbose) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{verbose}");
    assert!(verbose.contains("scored with no slot: its members were cached"), "{verbose}");
    let itself_id = submission_id(&itself);
    assert_eq!(api_json(&env, &format!("/submissions/{itself_id}"))["slot"], "none (members cached)");
    assert_eq!(env.session(long).unwrap()["state"], "running", "the long session ended before the submission");
    // A submission of the long session's last checkpoint waits for the slot the session holds. Meanwhile the session
    // saves more checkpoints, and retention (keep the last only) must spare the one the queued submission names;
    // `model rm` refuses it, naming the submission.
    let epochs = |env: &Env| -> Vec<u64> {
        env.json(&["model", "ls", long, "-j"])
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["epoch"].as_u64().unwrap())
            .collect()
    };
    wait_for(TRAIN_TIMEOUT, "the long session's first checkpoint", || (!epochs(&env).is_empty()).then_some(()));
    let addr = std::fs::read_to_string(env.home.join("daemon.addr")).unwrap();
    let body = serde_json::json!({
        "members": [{"session": long, "checkpoint": "last", "weight": 1.0}], "tta": "none", "dry_run": true
    });
    let queued: serde_json::Value = reqwest::blocking::Client::new()
        .post(format!("http://{}/api/submissions", addr.trim()))
        .json(&body)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let pinned_id = queued["id"].as_i64().unwrap_or_else(|| panic!("{queued}"));
    let pinned_epoch = queued["members"][0]["epoch"].as_u64().unwrap_or_else(|| panic!("{queued}"));
    let saved = wait_for(TRAIN_TIMEOUT, "two more checkpoints of the long session, and retention after them", || {
        let saved = epochs(&env);
        // Retention runs just after a checkpoint's row is added: a list read in between still holds the one it
        // deletes next, so wait for the list to settle (a retention that never deletes times out here).
        (saved.last().is_some_and(|&e| e >= pinned_epoch + 2) && saved.len() <= 2).then_some(saved)
    });
    assert_eq!(saved.first(), Some(&pinned_epoch), "retention deleted a checkpoint a queued submission needs");
    assert_eq!(saved.len(), 2, "only the pinned and the last checkpoint are kept: {saved:?}");
    assert_eq!(api_json(&env, &format!("/submissions/{pinned_id}"))["state"], "queued");
    let refused = env.fails(&["model", "rm", "-y", long, &pinned_epoch.to_string()]);
    assert!(refused.contains(&format!("still needed by submission {pinned_id}")), "{refused}");
    env.ok(&["stop", long]);
    let pinned = wait_for(Duration::from_secs(120), "the pinned submission to be scored", || {
        let s = api_json(&env, &format!("/submissions/{pinned_id}"));
        (s["state"] != "queued" && s["state"] != "running").then_some(s)
    });
    assert_eq!(pinned["state"], "scored", "{pinned}");
    let itself = numpy_load(&env.home.join(format!("submissions/{itself_id}/predictions.npy")), dry_n);
    assert_eq!(itself, dry_predictions);

    // The board: three entries, each score recomputed here from its .npy and the hidden labels.
    let public = |i: usize| split.part(i) == Part::Public;
    let mut expected = std::collections::HashMap::new();
    for (id, stdout) in ids.iter().zip([&one, &two, &three]) {
        let predictions = numpy_load(&env.home.join(format!("submissions/{id}/predictions.npy")), TEST_IMAGES);
        let (p, q) = (accuracy(&predictions, &labels, public), accuracy(&predictions, &labels, |i| !public(i)));
        assert!(stdout.contains(&format!("public score {p:.4}")), "{stdout} (expected {p:.4})");
        let public = format!("on the public {} of {TEST_IMAGES} test stickers", split.n_public());
        assert!(stdout.contains(&public), "{stdout} (expected {public})");
        expected.insert(*id, (p, q));
    }
    let board = env.json(&["dataset", "board", "synth", "-j"]);
    let lines = board["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 3, "{board}");
    assert_eq!(board["revealed"], false);
    let mut last = f64::INFINITY;
    for (rank, line) in lines.iter().enumerate() {
        let id = line["id"].as_i64().unwrap();
        let (p, _) = expected[&id];
        assert_eq!(line["rank"], rank + 1);
        assert!((line["public_score"].as_f64().unwrap() - p).abs() < 1e-12, "{line}");
        assert!(line["private_score"].is_null(), "private score shown before the reveal: {line}");
        assert!(line["public_score"].as_f64().unwrap() <= last);
        last = line["public_score"].as_f64().unwrap();
        assert_eq!(line["user"], "tester");
    }
    let ensemble_line = lines.iter().find(|l| l["id"] == ids[2]).unwrap();
    assert_eq!(ensemble_line["sessions"], serde_json::json!([a, b]));
    let table = env.ok(&["dataset", "board", "synth"]);
    assert!(table.contains("Rank") && table.contains("Public") && !table.contains("Private"), "{table}");
    assert!(api_json(&env, &format!("/submissions/{}", ids[0]))["private_score"].is_null());
    // `rush submissions` lists every one, newest first: ranked, dry runs, the ensemble with its weights.
    let listed = env.json(&["submissions", "-d", "synth", "-j"]);
    let listed_ids: Vec<i64> = listed.as_array().unwrap().iter().map(|s| s["id"].as_i64().unwrap()).collect();
    assert!(listed_ids.windows(2).all(|w| w[0] > w[1]) && ids.iter().all(|i| listed_ids.contains(i)), "{listed}");
    let text = env.ok(&["submissions", "-d", "synth"]);
    assert!(text.contains("dry run") && text.contains("ranked") && text.contains(" x2"), "{text}");
    assert_eq!(text.lines().count(), listed_ids.len() + 1, "{text}");

    // Private scores stay hidden until the daemon's config reveals them (after the deadline): asking is refused.
    let refused = env.fails(&["dataset", "board", "synth", "--private"]);
    assert!(refused.contains("revealed after the deadline") && refused.contains("reveal_private"), "{refused}");

    // The board page and the builder (members from the cache, a weight each), escaped by askama.
    let addr = std::fs::read_to_string(env.home.join("daemon.addr")).unwrap();
    let page = |path: &str| reqwest::blocking::get(format!("http://{}{path}", addr.trim())).unwrap().text().unwrap();
    let board_page = page("/datasets/synth/board");
    assert!(
        board_page.contains(&format!("{:.4}", expected[&ids[0]].0))
            && !board_page.contains("<th class=\"num\">Private")
    );
    assert!(page("/datasets/synth/board?private=true").contains("revealed after the deadline"));
    let builder = page(&format!(
        "/ensemble?m={a}:{}",
        api_json(&env, &format!("/submissions/{}", ids[0]))["members"][0]["epoch"]
    ));
    assert!(
        builder.contains("class=\"weight\"") && builder.contains("Cached checkpoints of") && builder.contains(b),
        "{builder}"
    );

    // The .npy downloads as written.
    let bytes = api(&env, &format!("/submissions/{}/predictions.npy", ids[2])).bytes().unwrap();
    assert_eq!(
        &bytes[..],
        &std::fs::read(env.home.join(format!("submissions/{}/predictions.npy", ids[2]))).unwrap()[..]
    );

    // ensemble auto on a constructed cache: a's and b's cached validation probabilities replaced by two members that
    // err on different samples (a right on the even rows, b on the odd ones), so the pair beats either alone.
    let home = Home::new(&env.home);
    let cached = api_json(&env, "/datasets/synth/cache");
    assert_eq!(cached.as_array().unwrap().len(), 2, "{cached}");
    let valid_labels = {
        let set = rush::data::layout::read_train(&env.home.join("datasets/synth")).unwrap();
        let split = rush::data::split::split_by_package(&set, 0.1, 1);
        split.valid.iter().map(|&i| set.samples[i].label() as usize).collect::<Vec<_>>()
    };
    for (k, entry) in cached.as_array().unwrap().iter().enumerate() {
        let key = CacheKey {
            session: entry["session"].as_str().unwrap().parse::<SessionId>().unwrap(),
            epoch: entry["epoch"].as_u64().unwrap() as u32,
            split: CacheSplit::Valid,
            tta: Tta::None,
        };
        let meta = probs::meta(&home, &key).unwrap().unwrap();
        assert_eq!(meta.rows, valid_labels.len());
        let mut values = vec![0.0f32; meta.rows * 350];
        for (row, &label) in valid_labels.iter().enumerate() {
            let wrong = (label + 1) % 350;
            let right_here = row % 2 == k;
            values[row * 350 + label] = if right_here { 0.9 } else { 0.4 };
            values[row * 350 + wrong] = if right_here { 0.1 } else { 0.6 };
        }
        probs::write(&home, &key, &meta.order, &Probs::new(meta.rows, 350, values).unwrap()).unwrap();
    }
    // (auto also weighs every kept checkpoint by the validation predictions saved with it; here it must choose from
    // the constructed cache alone, so those files go, as if the checkpoints had been saved by an older rush)
    for file in files_under(&env.home.join("sessions")) {
        if file.to_string_lossy().ends_with(".valid.npy") {
            std::fs::remove_file(&file).unwrap();
        }
    }
    let auto = env.json(&["ensemble", "auto", "-d", "synth", "--max-members", "4", "-j"]);
    assert_eq!(auto["candidates"], 2);
    assert_eq!(auto["val_acc"], 1.0, "{auto}");
    assert!(auto["gain"].as_f64().unwrap() > 0.4, "{auto}");
    let members = auto["members"].as_array().unwrap();
    assert_eq!(members.len(), 2, "{auto}");
    assert!(members.iter().all(|m| m["weight"] == 0.5), "{auto}");
    // cross-fitted over two folds of the validation stickers, the pair still beats the best single by about half
    let held_out = &auto["held_out"];
    assert_eq!((held_out["folds"].as_u64(), held_out["val_acc"].as_f64()), (Some(2), Some(1.0)), "{auto}");
    assert!(held_out["gain"].as_f64().unwrap() > 0.3, "{auto}");
    let printed = env.ok(&["ensemble", "auto", "-d", "synth", "--submit"]);
    assert!(
        printed.contains("gain +0.")
            && printed.contains("Weight")
            && printed.contains("public score")
            && printed.contains("not chosen on (2-fold cross-fit): ensemble 1.0000"),
        "{printed}"
    );
    assert_eq!(api_json(&env, "/datasets/synth/board")["lines"].as_array().unwrap().len(), 4);
    // The builder's live number: the same mix evaluated from the cache.
    let mix = api_json(
        &env,
        &format!(
            "/datasets/synth/ensemble?members={}:{}:1,{}:{}:1",
            cached[0]["session"].as_str().unwrap(),
            cached[0]["epoch"],
            cached[1]["session"].as_str().unwrap(),
            cached[1]["epoch"]
        ),
    );
    assert_eq!(mix["val_acc"], 1.0, "{mix}");
    assert!(mix["singles"].as_array().unwrap().iter().all(|s| s.as_f64().unwrap() < 0.6), "{mix}");
    // The same builder in a real browser: its live number, a weight change, and its Submit button.
    let chosen: Vec<(String, u64)> = (0..2)
        .map(|k| (cached[k]["session"].as_str().unwrap().to_string(), cached[k]["epoch"].as_u64().unwrap()))
        .collect();
    let alone = mix["singles"][1].as_f64().unwrap();
    let from_page = builder_in_a_browser(&env, &chosen, alone);
    let submitted = wait_for(Duration::from_secs(120), "the builder's dry run to be scored", || {
        let s = api_json(&env, &format!("/submissions/{from_page}"));
        (s["state"] == "scored").then_some(s)
    });
    assert_eq!(submitted["dry_run"], true, "{submitted}");
    assert_eq!(submitted["samples"], dry_n, "{submitted}");
    let weights: Vec<f64> =
        submitted["members"].as_array().unwrap().iter().map(|m| m["weight"].as_f64().unwrap()).collect();
    assert_eq!(weights, vec![0.0, 1.0], "{submitted}");

    // The daily limit: the fifth ranked submission of the day is refused, with why and when it resets.
    let refused = env.fails(&["submit", a, "last"]);
    assert!(refused.contains("4 of 4 submissions allowed per day") && refused.contains("resets"), "{refused}");
    // dry runs are not limited
    env.ok(&["submit", "-t", a, "last"]);
    // a cached checkpoint still submits after retention (here `model rm`) deleted its weights
    let epoch = api_json(&env, &format!("/submissions/{}", ids[0]))["members"][0]["epoch"].as_u64().unwrap();
    env.ok(&["model", "rm", "-y", a, &epoch.to_string()]);
    let after = env.ok(&["submit", "-t", &format!("{a}:{epoch}")]);
    let after = numpy_load(&env.home.join(format!("submissions/{}/predictions.npy", submission_id(&after))), dry_n);
    assert_eq!(after, dry_predictions);

    // No test labels where a session or a client can see them: not in any session file, not in the arguments of the
    // inference children, not in the probability cache, not in any API answer.
    let needles = ["test_labels", "/labels/"];
    let sessions = files_under(&env.home.join("sessions"));
    assert!(!sessions.is_empty());
    for file in
        sessions.iter().chain(&files_under(&env.home.join("cache"))).chain(&files_under(&env.home.join("submissions")))
    {
        if file.extension().is_some_and(|e| e == "npy" || e == "safetensors") {
            continue;
        }
        let text = String::from_utf8_lossy(&std::fs::read(file).unwrap()).to_string();
        for needle in &needles {
            assert!(!text.contains(needle), "{} names the labels: {needle}", file.display());
        }
    }
    let infer_log = std::fs::read_to_string(env.home.join(format!("submissions/{}/infer.log", ids[0]))).unwrap();
    assert!(infer_log.contains("rush infer") && infer_log.contains("--device cpu"), "{infer_log}");
    let mut routes = vec![
        "/info".to_string(),
        "/sessions?all=true".into(),
        "/datasets".into(),
        "/submissions".into(),
        "/submissions".into(),
        "/datasets/synth/board".into(),
        "/datasets/synth/cache".into(),
        "/datasets/synth/ensemble/auto".into(),
    ];
    for id in [a, b] {
        routes.push(format!("/sessions/{id}"));
        routes.push(format!("/sessions/{id}/checkpoints"));
        routes.push(format!("/sessions/{id}/logs"));
    }
    for id in &ids {
        routes.push(format!("/submissions/{id}"));
    }
    for route in &routes {
        let text = api(&env, route).text().unwrap();
        for needle in &needles {
            assert!(!text.contains(needle), "GET /api{route} names the labels: {text}");
        }
    }

    // The figure: inference and scoring time per 1,000 test images on the CPU (one uncached checkpoint).
    let s = api_json(&env, &format!("/submissions/{}", ids[1]));
    let (infer, score) = (s["infer_seconds"].as_f64().unwrap(), s["score_seconds"].as_f64().unwrap());
    println!(
        "figure: submission of one uncached checkpoint on the CPU: inference {infer:.2} s ({TEST_IMAGES} test + \
         validation images), mixing + .npy + scoring {score:.3} s; {:.2} s per 1,000 test images",
        (infer + score) * 1000.0 / TEST_IMAGES as f64
    );
}

/// Opens the ensemble builder on `members` (session, epoch) in headless Chromium: the mix's validation accuracy
/// appears (1.0 for the constructed pair), follows the first weight set to 0 (then it is the second member's, `alone`),
/// and "dry run" + Submit queues a submission, whose id the page prints and this returns.
fn builder_in_a_browser(env: &Env, members: &[(String, u64)], alone: f64) -> i64 {
    use crate::browser::{Browser, js_string, screenshot, wait_for};
    let addr = std::fs::read_to_string(env.home.join("daemon.addr")).unwrap();
    let query: Vec<String> = members.iter().map(|(s, e)| format!("m={s}:{e}")).collect();
    let url = format!("http://{}/ensemble?{}", addr.trim(), query.join("&"));
    let members = members.to_vec();
    let profile = env.tmp.path().join("chromium-profile");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async move {
        let browser = Browser::start(&profile).await;
        let c = &browser.client;
        c.goto(&url).await.unwrap();
        let accuracy = "var a = document.getElementById('mix-acc'); return a ? a.textContent : ''";
        let percent = |text: String| text.strip_suffix('%').and_then(|p| p.parse::<f64>().ok());
        let shown = wait_for("the mix's accuracy on the page", Duration::from_secs(30), || async {
            js_string(c, accuracy).await.and_then(percent)
        })
        .await;
        assert!((shown - 100.0).abs() < 1e-9, "the page shows {shown}% for a mix the API scores 1.0");
        let note = js_string(c, "return document.getElementById('mix-note').textContent").await.unwrap();
        assert!(note.contains("validation samples") && note.contains("members alone"), "{note}");
        screenshot(c, "dashboard-ensemble-builder.png").await;

        c.execute(
            "var w = document.querySelectorAll('input.weight')[0]; w.value = '0'; \
             w.dispatchEvent(new Event('input', {bubbles: true})); return 1",
            vec![],
        )
        .await
        .unwrap();
        let want = 100.0 * alone;
        let changed = wait_for("the accuracy to follow the weight", Duration::from_secs(30), || async {
            js_string(c, accuracy).await.and_then(percent).filter(|p| (p - want).abs() < 0.006)
        })
        .await;
        eprintln!("builder: mix 100.00%, second member alone {changed:.2}%");

        // The command line shown follows the weights and the boxes.
        let command = "return document.getElementById('mix-command').textContent";
        c.execute("document.getElementById('mix-dry').click(); return 1", vec![]).await.unwrap();
        let targets: Vec<String> = members.iter().map(|(s, e)| format!("{s}:{e}")).collect();
        let want = format!("rush submit {} --weights 0,1 -t", targets.join(" "));
        assert_eq!(js_string(c, command).await.as_deref(), Some(want.as_str()));

        c.execute("document.getElementById('mix-submit').click(); return 1", vec![]).await.unwrap();
        let result = wait_for("the submit button's answer", Duration::from_secs(30), || async {
            js_string(c, "return document.getElementById('mix-result').textContent").await.filter(|t| !t.is_empty())
        })
        .await;
        c.clone().close().await.unwrap();
        result
            .strip_prefix("submission ")
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| panic!("the page said {result:?}"))
    })
}

/// `rush infer` on a session folder (no daemon), with `RUSH_IMAGE_CACHE` as given (`None`: unset, the default folders).
fn infer(session: &Path, out: &Path, cache: Option<&str>, dry_run: bool) -> InferReport {
    let mut cmd = Command::new(rush_exe());
    cmd.arg("infer").arg(session).args(["--epoch", "1", "--device", "cpu", "--out"]).arg(out);
    if dry_run {
        cmd.arg("--dry-run");
    }
    cmd.env("OMP_NUM_THREADS", "1").env("CUDA_VISIBLE_DEVICES", "").env_remove("RUSH_HOME");
    match cache {
        Some(v) => cmd.env("RUSH_IMAGE_CACHE", v),
        None => cmd.env_remove("RUSH_IMAGE_CACHE"),
    };
    let done = cmd.output().unwrap();
    let log = String::from_utf8_lossy(&done.stderr).to_string();
    assert!(done.status.success(), "rush infer failed: {log}");
    eprintln!("{log}");
    read_report(out).unwrap()
}

/// The first image source of a report, which must be there.
fn origin(source: &Option<rush::submit::report::ImageSource>) -> (ImageOrigin, Option<PathBuf>, usize) {
    let s = source.as_ref().expect("an image source in infer.json");
    (s.origin, s.file.clone(), s.decoded)
}

#[test]
fn infer_reads_the_image_caches_and_predicts_exactly_what_it_predicts_from_the_pngs() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let dataset = home.join("datasets/synth");
    // 1,100 test stickers: more than one run of a cache build (1,024) and a last, partial batch
    let out = Command::new(rush_exe())
        .args(["dataset", "synth", "--out"])
        .arg(&dataset)
        .args(["--train", "160", "--test", "1100", "--classes", "4", "--per-package", "10", "--width", "40"])
        .args(["--height", "40", "--quiet", "--seed", "5", "--threads", "2"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // one undecodable test image: a blank prediction, counted, from either source
    let test = rush::data::layout::read_test(&dataset).unwrap();
    std::fs::write(&test.samples[700].path, b"not a png").unwrap();

    let sessions: Vec<PathBuf> = (1..=2)
        .map(|n| {
            let dir = home.join(format!("sessions/tester/synth/{n}"));
            std::fs::create_dir_all(&dir).unwrap();
            let yaml = format!(
                "dataset: synth\nmodel: baseline_cnn\nimage_size: 16\nbatch_size: 32\nepochs: 1\nseed: {n}\n\
                 valid_fraction: 0.25\nprecision: fp32\n"
            );
            let resolved = rush::core::spec::ResolvedSpec {
                session: format!("tester/synth/{n}"),
                dataset_path: dataset.clone(),
                init_from: None,
                runtime: None,
                spec: rush::core::spec::Spec::parse("test.yaml", &yaml).unwrap(),
            };
            std::fs::write(dir.join("spec.yaml"), resolved.to_yaml().unwrap()).unwrap();
            let trained = Command::new(rush_exe())
                .arg("train")
                .arg(&dir)
                .args(["--device", "cpu"])
                .env("OMP_NUM_THREADS", "1")
                .env_remove("RUSH_IMAGE_CACHE")
                .env_remove("RUSH_HOME")
                .output()
                .unwrap();
            assert!(trained.status.success(), "{}", String::from_utf8_lossy(&trained.stderr));
            dir
        })
        .collect();
    let caches = home.join("cache/images/synth");
    assert!(caches.join("train-16.rgb").is_file(), "training builds its cache under the home");

    // From the PNGs (cache off), then from the caches: the same bytes.
    let off = infer(&sessions[0], &tmp.path().join("a-off"), Some("off"), false);
    assert_eq!(origin(&off.test_images), (ImageOrigin::Decoded, None, 1100));
    assert_eq!(origin(&off.valid_images).0, ImageOrigin::Decoded);
    assert!(!caches.join("test-16.rgb").exists(), "RUSH_IMAGE_CACHE=off writes no cache");
    let first = infer(&sessions[0], &tmp.path().join("a"), None, false);
    assert_eq!(origin(&first.test_images), (ImageOrigin::Built, Some(caches.join("test-16.rgb")), 1100));
    assert_eq!(origin(&first.valid_images), (ImageOrigin::Reused, Some(caches.join("train-16.rgb")), 0));
    assert_eq!((off.bad_images, first.bad_images), (1, 1));
    assert_eq!((off.test_rows, off.valid_rows), (first.test_rows, first.valid_rows));
    assert_eq!((&off.test_order, &off.valid_order), (&first.test_order, &first.valid_order));
    assert!(first.valid_rows > 0);
    for name in ["test.npy", "valid.npy"] {
        let a = std::fs::read(tmp.path().join("a-off").join(name)).unwrap();
        let b = std::fs::read(tmp.path().join("a").join(name)).unwrap();
        assert!(a == b, "{name}: the probabilities from the cache differ from those decoded from the PNGs");
    }
    let built = std::fs::metadata(caches.join("test-16.rgb")).unwrap().modified().unwrap();

    // The next member opens the test cache the first one built: nothing decoded, the file untouched.
    let second = infer(&sessions[1], &tmp.path().join("b"), None, false);
    assert_eq!(origin(&second.test_images), (ImageOrigin::Reused, Some(caches.join("test-16.rgb")), 0));
    assert_eq!(origin(&second.valid_images).0, ImageOrigin::Reused);
    assert_eq!(second.bad_images, 1);
    assert_eq!(std::fs::metadata(caches.join("test-16.rgb")).unwrap().modified().unwrap(), built);
    assert!(
        std::fs::read(tmp.path().join("b/test.npy")).unwrap() != std::fs::read(tmp.path().join("a/test.npy")).unwrap(),
        "two differently seeded members predicted the same"
    );

    // A dry run reads its sample from the same cache; its rows are the full run's (other batches: f16 rounding).
    let dry = infer(&sessions[1], &tmp.path().join("b-dry"), None, true);
    assert_eq!(origin(&dry.test_images), (ImageOrigin::Reused, Some(caches.join("test-16.rgb")), 0));
    let (rows, classes, sample) = rush::submit::npy::read_f16_matrix(&tmp.path().join("b-dry/test.npy")).unwrap();
    let (_, _, full) = rush::submit::npy::read_f16_matrix(&tmp.path().join("b/test.npy")).unwrap();
    let split = BoardSplit::new("synth", 1100, rush::core::score::DEFAULT_PUBLIC_PERCENT).unwrap();
    let indices = rush::core::score::dry_run_indices(&split);
    assert!(indices.iter().all(|&i| split.part(i) == Part::Public), "a dry run predicts public stickers only");
    assert_eq!((rows, classes), (indices.len(), 350));
    for (k, &i) in indices.iter().enumerate() {
        for c in 0..classes {
            let (x, y) = (sample[k * classes + c], full[i * classes + c]);
            assert!((x - y).abs() <= 2e-3, "row {i} class {c}: dry run {x}, full run {y}");
        }
    }
}
