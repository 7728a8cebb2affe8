//! Scale, the CI slice: 20,000 synthetic training stickers (and 4,000 test ones) pushed and registered, a session of
//! two checkpoints trained and one of them submitted. Then the dataset's training CSV is deleted, and every cache and
//! ensemble endpoint (the cache list, the builder page, the mix of two and of five members, `ensemble auto`), the
//! analysis views and a re-submission of the cached member answer exactly as before: after registration the daemon
//! knows a dataset by its facts (`$RUSH_HOME/facts/<name>.facts`), never by reading its CSV or listing its images.
//! The endpoints' times are printed as figures; `bench/scale.sh N` measures the same at any N, with the daemon's memory.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{Env, rush_exe, wait_for};

/// Training stickers; the test split has a fifth as many.
const N: usize = 20_000;
const TRAIN_TIMEOUT: Duration = Duration::from_secs(400);

/// `GET path` on the daemon: the status, the body, and how long it took.
fn get(env: &Env, path: &str) -> (u16, String, f64) {
    let addr = std::fs::read_to_string(env.home.join("daemon.addr")).unwrap();
    let started = Instant::now();
    let resp = reqwest::blocking::get(format!("http://{}{path}", addr.trim())).unwrap();
    let status = resp.status().as_u16();
    let body = resp.text().unwrap();
    (status, body, started.elapsed().as_secs_f64())
}

fn json(env: &Env, path: &str) -> (serde_json::Value, f64) {
    let (status, body, seconds) = get(env, path);
    assert_eq!(status, 200, "GET {path}: {body}");
    (serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}")), seconds)
}

#[test]
fn every_ensemble_and_cache_endpoint_answers_the_same_once_the_training_csv_is_gone() {
    let test_started = Instant::now();
    let mut env = Env::new();
    env.start();
    let src = env.tmp.path().join("src-big");
    let started = Instant::now();
    let out = Command::new(rush_exe())
        .args(["dataset", "synth", "--out"])
        .arg(&src)
        .args(["--train", &N.to_string(), "--test", &(N / 5).to_string(), "--width", "16", "--height", "16"])
        .args(["--quiet", "--seed", "5", "--threads", "2"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let synth_seconds = started.elapsed().as_secs_f64();
    let started = Instant::now();
    env.ok(&["dataset", "push", "big", src.to_str().unwrap()]);
    let push_seconds = started.elapsed().as_secs_f64();
    assert!(env.home.join("facts/big.facts").is_file(), "registration writes the dataset's facts");

    // One session, two checkpoints (both kept); checkpoint 1 submitted (inference), checkpoint 2 never.
    let spec = "dataset: big\nmodel: baseline_cnn\nimage_size: 8\nbatch_size: 256\nepochs: 2\nprecision: fp32\n\
                optimizer: {name: adamw, lr: 0.003}\nschedule: {name: constant, warmup_epochs: 0}\n\
                resources: {gpus: auto}\nseed: 1\n";
    env.drop_spec("big.yaml", spec);
    let id = "tester/big/1";
    wait_for(Duration::from_secs(30), "the session", || env.session(id));
    let started = Instant::now();
    env.wait_state(id, "succeeded", TRAIN_TIMEOUT);
    let train_seconds = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let submitted = env.ok(&["submit", id, "1"]);
    assert!(submitted.contains("public score"), "{submitted}");
    let submit_seconds = started.elapsed().as_secs_f64();

    let two = format!("{id}:1:1,{id}:2:1");
    let five = format!("{id}:1:1,{id}:2:1,{id}:1:0.5,{id}:2:2,{id}:1:1");
    let analysis = json(&env, &format!("/api/sessions/{id}/checkpoints/best/analysis")).0;
    let class = analysis["classes"][0]["class"].as_u64().unwrap_or_else(|| panic!("{analysis}"));
    let routes = [
        "/api/datasets/big/cache".to_string(),
        format!("/api/datasets/big/ensemble?members={two}"),
        format!("/api/datasets/big/ensemble?members={five}"),
        "/api/datasets/big/ensemble/auto?max_members=4".to_string(),
        format!("/api/sessions/{id}/checkpoints/best/analysis"),
        format!("/api/sessions/{id}/checkpoints/2/gallery?class={class}"),
        "/api/datasets/big/overview".to_string(),
        format!("/api/datasets/big/tags/{class}"),
    ];
    let before: Vec<(serde_json::Value, f64)> = routes.iter().map(|r| json(&env, r)).collect();
    let cache = &before[0].0;
    assert_eq!(cache.as_array().map(Vec::len), Some(1), "{cache}");
    assert!(cache[0]["val_acc"].as_f64().is_some(), "{cache}");
    assert_eq!(before[1].0["singles"].as_array().map(Vec::len), Some(2), "{}", before[1].0);
    assert_eq!(before[2].0["singles"].as_array().map(Vec::len), Some(5), "{}", before[2].0);
    assert_eq!(before[3].0["candidates"], 2, "{}", before[3].0);
    assert!(!before[5].0["items"].as_array().unwrap().is_empty(), "{}", before[5].0);
    assert_eq!(before[6].0["images"], N, "{}", before[6].0);
    let (status, page, page_seconds) = get(&env, "/ensemble?d=big");
    assert!(status == 200 && page.contains("Cached checkpoints of") && page.contains(&format!("{id}:1")), "{page}");

    // The training CSV goes: nothing a request answers changes.
    let csv = env.home.join("datasets/big/train/train_data/train_with_valid_tags.csv");
    std::fs::remove_file(&csv).unwrap();
    for (route, (expected, seconds)) in routes.iter().zip(&before) {
        let (after, again) = json(&env, route);
        assert_eq!(&after, expected, "GET {route} changed once the training CSV was gone");
        eprintln!(
            "figure: GET {route} at N = {N}: {:.1} ms, again without the CSV {:.1} ms",
            seconds * 1e3,
            again * 1e3
        );
    }
    let (status, again, _) = get(&env, "/ensemble?d=big");
    assert_eq!(status, 200);
    assert_eq!(again, page, "the builder page changed once the training CSV was gone");
    // A submission of the cached member needs no inference (and no CSV): scored from the facts and the cache.
    let dry = env.ok(&["submit", "-t", id, "1"]);
    assert!(dry.contains("dry run"), "{dry}");
    let log = env.daemon_log();
    assert!(!log.contains("facts computed"), "the facts were never computed again: {log}");
    eprintln!(
        "figure: N = {N}: synth {synth_seconds:.1} s, push + registration {push_seconds:.1} s, two epochs at 8 px \
         {train_seconds:.1} s, first submission {submit_seconds:.1} s, builder page {:.1} ms; {:.0} s in all",
        page_seconds * 1e3,
        test_started.elapsed().as_secs_f64()
    );
}
