//! Validation predictions with every checkpoint, end to end on the CPU: a real daemon trains two tiny sessions on
//! synthetic data and nothing is submitted. Every kept checkpoint holds its validation probabilities
//! (`checkpoints/<epoch>.valid.npy`, recorded in `<epoch>.json`), equal to what `rush infer` writes for that checkpoint
//! within float16 rounding. `rush ensemble auto` chooses among all the kept checkpoints of both sessions (with flip
//! too, saying which were judged without it), and submitting its choice runs `rush infer` for the chosen members only.
//! The analysis and dataset pages and their JSON answer on the real daemon.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use rush::core::ensemble::Probs;
use rush::home::SessionDir;
use rush::submit::npy;

use crate::common::{Env, quick_spec, rush_exe, wait_for};

const TRAIN_TIMEOUT: Duration = Duration::from_secs(300);

fn get(env: &Env, path: &str) -> reqwest::blocking::Response {
    let addr = std::fs::read_to_string(env.home.join("daemon.addr")).unwrap();
    reqwest::blocking::get(format!("http://{}{path}", addr.trim())).unwrap()
}

fn get_json(env: &Env, path: &str) -> serde_json::Value {
    let resp = get(env, path);
    assert!(resp.status().is_success(), "GET {path}: {}", resp.status());
    resp.json().unwrap()
}

/// The `valid` record of a checkpoint's JSON.
fn record(dir: &SessionDir, epoch: u32) -> serde_json::Value {
    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.checkpoint_meta(epoch)).unwrap()).unwrap();
    meta["valid"].clone()
}

#[test]
fn ensemble_auto_chooses_among_every_kept_checkpoint_without_submissions() {
    let mut env = Env::new();
    env.start();
    let src = env.tmp.path().join("src-synth");
    let out = Command::new(rush_exe())
        .args(["dataset", "synth", "--out"])
        .arg(&src)
        .args(["--train", "300", "--test", "60", "--classes", "6", "--width", "40", "--height", "40"])
        .args(["--quiet", "--seed", "3", "--threads", "2"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    env.ok(&["dataset", "push", "synth", src.to_str().unwrap()]);

    // The validation split and its labels, computed here as the trainer does.
    let set = rush::data::layout::read_train(&env.home.join("datasets/synth")).unwrap();
    let split = rush::data::split::split_by_package(&set, 0.1, 1);
    let keys: Vec<String> =
        split.valid.iter().map(|&i| format!("{}/{}", set.samples[i].package_id, set.samples[i].sticker_id)).collect();
    let order = rush::submit::probs::order_digest(keys.iter().map(String::as_str));
    let labels: Vec<u16> = split.valid.iter().map(|&i| set.samples[i].label()).collect();
    // One validation sticker cannot be decoded: the trainer skips it, and its row is predicted from a blank image, as
    // `rush infer` predicts it, so the rows still line up.
    let broken = &set.samples[split.valid[1]];
    std::fs::write(&broken.path, b"not a png").unwrap();
    let broken_src = format!("/{}/{}", broken.package_id, broken.sticker_id);

    // Two sessions, three epochs each; every checkpoint is kept (keep_best 3 and the last).
    env.drop_spec("a.yaml", &quick_spec("synth", 3, "seed: 1\n"));
    env.drop_spec("b.yaml", &quick_spec("synth", 3, "seed: 2\n"));
    let (a, b) = ("tester/synth/1", "tester/synth/2");
    wait_for(Duration::from_secs(30), "two sessions", || env.session(b));
    env.wait_state(a, "succeeded", TRAIN_TIMEOUT);
    env.wait_state(b, "succeeded", TRAIN_TIMEOUT);

    // Every kept checkpoint has its predictions, recorded in its JSON; their accuracy is the val_acc it reported.
    let mut kept: Vec<(String, u32, f64)> = Vec::new();
    for id in [a, b] {
        let dir = SessionDir::new(env.session_dir(id));
        for c in env.json(&["model", "ls", id, "-j"]).as_array().unwrap() {
            let epoch = c["epoch"].as_u64().unwrap() as u32;
            let (rows, classes, values) = npy::read_f16_matrix(&dir.checkpoint_valid(epoch)).unwrap();
            assert_eq!((rows, classes), (labels.len(), 350));
            let r = record(&dir, epoch);
            assert_eq!((r["rows"].as_u64(), r["order"].as_str()), (Some(rows as u64), Some(order.as_str())), "{r}");
            let accuracy = Probs::new(rows, classes, values).unwrap().accuracy(&labels).unwrap();
            let reported = c["val_acc"].as_f64().unwrap();
            assert!((accuracy - reported).abs() <= 2.5 / rows as f64, "{id}:{epoch}: {accuracy} vs {reported}");
            kept.push((id.to_string(), epoch, accuracy));
        }
    }
    assert_eq!(kept.len(), 6, "{kept:?}");
    assert!(!env.home.join("cache/probs").exists(), "nothing was submitted, so nothing is cached");

    // They are what `rush infer` predicts for the same checkpoint, within float16 rounding.
    let (id, epoch, _) = &kept[1];
    let infer_out = env.tmp.path().join("infer-out");
    let out = Command::new(rush_exe())
        .arg("infer")
        .arg(env.session_dir(id))
        .args(["--epoch", &epoch.to_string(), "--device", "cpu", "--out"])
        .arg(&infer_out)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(infer_out.join("infer.json")).unwrap()).unwrap();
    assert_eq!(report["valid_order"], order.as_str());
    assert_eq!(report["bad_images"], 1, "the undecodable sticker, predicted from a blank image: {report}");
    let (_, _, inferred) = npy::read_f16_matrix(&infer_out.join("valid.npy")).unwrap();
    let (_, _, saved) = npy::read_f16_matrix(&SessionDir::new(env.session_dir(id)).checkpoint_valid(*epoch)).unwrap();
    assert_eq!(inferred.len(), saved.len());
    let worst =
        inferred.iter().zip(&saved).map(|(x, y)| (x - y).abs() - 2e-3 * x.abs().max(y.abs())).fold(0f32, f32::max);
    assert!(worst <= 1e-3, "the trainer's and rush infer's validation probabilities differ by {worst} beyond rounding");
    let blank = &saved[350..700];
    assert!((blank.iter().sum::<f32>() - 1.0).abs() < 0.02, "the blank row holds probabilities too");
    eprintln!(
        "figure: the trainer's validation probabilities against rush infer's: {worst:+.2e} beyond rounding at worst"
    );

    // ensemble auto: every kept checkpoint of both sessions competes, none of them ever submitted.
    let auto = env.json(&["ensemble", "auto", "-d", "synth", "--max-members", "4", "-j"]);
    assert_eq!((auto["candidates"].as_u64(), auto["from_checkpoints"].as_u64()), (Some(6), Some(6)), "{auto}");
    assert_eq!(auto["valid_rows"], labels.len());
    let names: BTreeSet<String> = kept.iter().map(|(s, e, _)| format!("{s}:{e}")).collect();
    let best = kept.iter().map(|k| k.2).fold(0.0, f64::max);
    assert!((auto["best_single_acc"].as_f64().unwrap() - best).abs() < 1e-12, "{auto} vs {kept:?}");
    assert!(names.contains(auto["best_single"].as_str().unwrap()), "{auto}");
    let members: Vec<(String, u64)> = auto["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["session"].as_str().unwrap().to_string(), m["epoch"].as_u64().unwrap()))
        .collect();
    assert!(!members.is_empty() && members.iter().all(|(s, e)| names.contains(&format!("{s}:{e}"))), "{auto}");
    assert!(auto["val_acc"].as_f64().unwrap() >= best, "{auto}");
    // Asked again with nothing changed: the same answer (the daemon's memo of it).
    assert_eq!(env.json(&["ensemble", "auto", "-d", "synth", "--max-members", "4", "-j"]), auto);
    // asked for flip, never-submitted checkpoints compete with their predictions without flip, and it says so
    let flip = env.json(&["ensemble", "auto", "-d", "synth", "--tta", "flip", "-j"]);
    assert_eq!((flip["candidates"].as_u64(), flip["without_flip"].as_u64()), (Some(6), Some(6)), "{flip}");
    let said = env.ok(&["ensemble", "auto", "-d", "synth", "--tta", "flip"]);
    assert!(said.contains("6 never submitted") && said.contains("without flip"), "{said}");

    // Submitting the choice runs inference for its members only.
    let printed = env.ok(&["ensemble", "auto", "-d", "synth", "--max-members", "4", "--submit"]);
    assert!(printed.contains("public score"), "{printed}");
    let submissions = get_json(&env, "/api/submissions?dataset=synth");
    let submission = &submissions.as_array().unwrap()[0];
    assert_eq!(submission["state"], "scored", "{submission}");
    let submitted: BTreeSet<(String, u64)> = submission["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["session"].as_str().unwrap().to_string(), m["epoch"].as_u64().unwrap()))
        .collect();
    assert_eq!(submitted, members.iter().cloned().collect(), "{submission}");
    let dir = env.home.join(format!("submissions/{}", submission["id"]));
    let inferred = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("infer-"))
        .count();
    assert_eq!(inferred, submitted.len(), "one rush infer per chosen member");
    let cached = get_json(&env, "/api/datasets/synth/cache");
    assert_eq!(cached.as_array().unwrap().len(), submitted.len(), "only the chosen members are cached: {cached}");
    // What auto chose from changed (those members are read from the cache now): a new answer, not the memo's.
    let after = env.json(&["ensemble", "auto", "-d", "synth", "--max-members", "4", "-j"]);
    assert_eq!(after["from_checkpoints"].as_u64(), Some(6 - submitted.len() as u64), "{after}");

    // The views on the real daemon: what a checkpoint gets wrong, its stickers, the dataset's page and an image.
    let analysis = get_json(&env, &format!("/api/sessions/{a}/checkpoints/best/analysis"));
    assert_eq!(analysis["rows"], labels.len());
    assert_eq!(analysis["source"], "checkpoint");
    let support: u64 = analysis["classes"].as_array().unwrap().iter().map(|c| c["support"].as_u64().unwrap()).sum();
    assert_eq!(support as usize, labels.len());
    let page = get(&env, &format!("/sessions/{a}/analysis")).text().unwrap();
    assert!(page.contains("<table id=\"classes\">") && page.contains("<tr data-class=\""), "{page}");
    let class = analysis["classes"][0]["class"].as_u64().unwrap();
    let gallery = get(&env, &format!("/sessions/{a}/gallery?class={class}")).text().unwrap();
    // The first image that is not the undecodable sticker (served as it is on disk).
    let src = gallery
        .split("<img src=\"")
        .skip(1)
        .map(|s| s.split('"').next().unwrap().to_string())
        .find(|s| !s.ends_with(&broken_src))
        .unwrap_or_else(|| panic!("a decodable sticker in the gallery: {gallery}"));
    let image = get(&env, &src);
    assert_eq!(image.headers()["content-type"], "image/png");
    assert!(image.bytes().unwrap().starts_with(b"\x89PNG"));
    let dataset = get(&env, "/datasets/synth").text().unwrap();
    assert!(dataset.contains("300 training images"), "{dataset}");
}
