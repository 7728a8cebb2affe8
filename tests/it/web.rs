//! The dashboard through its router (`tower::ServiceExt::oneshot`, no socket): every page and route answers, hostile
//! names are escaped everywhere, charts stay within the point limit, file routes stay in the session folder, the
//! token rule holds for every mutating route, and the live streams carry steps, log lines and state changes.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use futures::StreamExt;
use tower::ServiceExt;

use rush::core::event::{Event, EventLine};
use rush::core::queue::Device;
use rush::core::session::{SessionId, SessionState};
use rush::daemon::Daemon;
use rush::daemon::config::{DaemonConfig, Flags};
use rush::daemon::executor::LocalExecutor;
use rush::daemon::live::LiveEvent;
use rush::home::SessionDir;
use rush::store::{CheckpointRow, DatasetRow, MetricRow, NewSession, Store};
use rush::web::auth::Access;
use rush::web::{AppState, router};

const HOSTILE_MEMO: &str = "<script>alert(1)</script>";
const HOSTILE_SPEC: &str = "exp/\"quo'te\"<b>bold</b>.yaml";

struct Fixture {
    state: AppState,
    _dir: tempfile::TempDir,
    running: SessionId,
    queued: SessionId,
}

async fn fixture_with(access: Option<Access>) -> Fixture {
    fixture_revealing(access, &[]).await
}

/// The fixture, with `reveal` as the config's `reveal_private`.
async fn fixture_revealing(access: Option<Access>, reveal: &[&str]) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let flags = Flags {
        experiments: Some(dir.path().join("exp")),
        user: Some("tester".into()),
        cpu_slots: Some(1),
        gpus: Some(vec![]),
        ..Default::default()
    };
    let mut config =
        DaemonConfig::resolve(rush::home::Home::new(dir.path().join("home")), flags, 0).unwrap().prepare().unwrap();
    if let Some(a) = access {
        config.access = Arc::new(a);
    }
    config.reveal_private = reveal.iter().map(|d| d.to_string()).collect();
    let store = Store::open(&config.db).await.unwrap();
    let daemon = Daemon::new(config, store, Arc::new(LocalExecutor { program: "/bin/false".into() }));
    let state = AppState::new(daemon);
    let store = state.store();
    store
        .upsert_dataset(&DatasetRow {
            name: "emoji".into(),
            path: "/x".into(),
            train_images: 300,
            classes: 8,
            test_images: 60,
            registered_at: 1.0,
        })
        .await
        .unwrap();
    let new = |memo: &str| NewSession {
        user: "tester".into(),
        dataset: "emoji".into(),
        memo: memo.into(),
        priority: 0,
        device: Device::Cpu,
        epochs: 5,
        fork_of: None,
    };
    let home = state.home().clone();
    let resolved = move |yaml: String| {
        let home = home.clone();
        move |id: &SessionId, _: usize| {
            let spec = rush::core::spec::Spec::parse("test.yaml", &yaml).unwrap();
            let resolved = rush::core::spec::ResolvedSpec {
                session: id.to_string(),
                dataset_path: home.dataset("emoji"),
                init_from: None,
                runtime: None,
                spec,
            };
            serde_json::to_string(&resolved).unwrap()
        }
    };
    let yaml = |model: &str, lr: f64| {
        format!("dataset: emoji\nmodel: {model}\nepochs: 5\noptimizer: {{name: sgd, lr: {lr}}}\n")
    };
    let running =
        store.enqueue(None, &[new(HOSTILE_MEMO)], resolved(yaml("baseline_cnn", 0.1))).await.unwrap().remove(0);
    let queued = store.enqueue(None, &[new("second")], resolved(yaml("resnet18", 0.01))).await.unwrap().remove(0);
    store.transition(&running, SessionState::Running, Some("cpu0"), None).await.unwrap();
    // Metrics: a long loss series with one spike, and two epochs.
    let rows: Vec<MetricRow> = (0..20_000)
        .map(|step| MetricRow {
            session: running.to_string(),
            step,
            epoch: step / 10_000 + 1,
            name: "loss".into(),
            value: if step == 12_345 { 50.0 } else { 2.0 - step as f64 * 1e-4 },
            t: 0.0,
        })
        .collect();
    state.daemon.metrics.send(rows);
    for epoch in 1..=2i64 {
        let m = |name: &str, value: f64| MetricRow {
            session: running.to_string(),
            step: epoch * 10_000,
            epoch,
            name: name.into(),
            value,
            t: 0.0,
        };
        state.daemon.metrics.send(vec![m("train_acc", 0.3 * epoch as f64), m("val_acc", 0.25 * epoch as f64)]);
        store.set_progress(&running, epoch as u32, 0.25 * epoch as f64).await.unwrap();
    }
    state.daemon.metrics.flush().await;
    // Its folder: a log with a hostile line, a checkpoint, the spec.
    let sdir = SessionDir::new(state.home().session(&running));
    std::fs::create_dir_all(sdir.checkpoints()).unwrap();
    std::fs::write(sdir.log(), "epoch 1 done\n<img src=x onerror=alert(2)>\n").unwrap();
    std::fs::write(sdir.spec(), "model: baseline_cnn\nmemo: \"<script>alert(1)</script>\"\n").unwrap();
    std::fs::write(sdir.checkpoint_weights(2), [7u8; 64]).unwrap();
    store
        .add_checkpoint(&CheckpointRow {
            session: running.to_string(),
            epoch: 2,
            name: "2".into(),
            path: sdir.checkpoint_weights(2).display().to_string(),
            val_acc: 0.5,
            val_loss: Some(1.2),
            train_loss: Some(1.1),
            bytes: 64,
            created_at: rush::store::now(),
            score: None,
            best_by: None,
        })
        .await
        .unwrap();
    // The rejected spec is still there (the specs page lists only files that are).
    let rejected = dir.path().join(HOSTILE_SPEC);
    std::fs::create_dir_all(rejected.parent().unwrap()).unwrap();
    std::fs::write(&rejected, "model: x\n").unwrap();
    let rejected = rejected.display().to_string();
    store.reject_spec(&rejected, "h1", "field `model`: unknown model \"<svg onload=alert(3)>\"").await.unwrap();
    Fixture { state, _dir: dir, running, queued }
}

async fn fixture() -> Fixture {
    fixture_with(None).await
}

async fn request(state: &AppState, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, String) {
    let resp = router(state.clone()).oneshot(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, 64 << 20).await.unwrap();
    (parts.status, parts.headers, String::from_utf8_lossy(&bytes).into_owned())
}

async fn get(state: &AppState, uri: &str) -> (StatusCode, String) {
    let (status, _, body) = request(state, Request::get(uri).body(Body::empty()).unwrap()).await;
    (status, body)
}

async fn get_with(state: &AppState, uri: &str, cookie: &str) -> (StatusCode, String) {
    let (status, _, body) =
        request(state, Request::get(uri).header("cookie", cookie).body(Body::empty()).unwrap()).await;
    (status, body)
}

fn form_post(uri: &str, form: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut req = Request::post(uri).header("content-type", "application/x-www-form-urlencoded");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.body(Body::from(form.to_string())).unwrap()
}

fn assert_escaped(page: &str, body: &str) {
    for raw in [HOSTILE_MEMO, "<img src=x", "<svg onload", "<b>bold</b>"] {
        assert!(!body.contains(raw), "{page}: raw {raw:?} in the page");
    }
}

#[tokio::test]
async fn every_page_answers_and_escapes_hostile_input() {
    let f = fixture().await;
    let s = &f.state;
    let id = f.running.to_string();
    let q = f.queued.to_string();
    let pages = [
        "/sessions".to_string(),
        "/sessions?fragment=rows".into(),
        "/sessions?dataset=emoji&state=running".into(),
        format!("/sessions/{id}"),
        format!("/sessions/{id}?fragment=checkpoints"),
        format!("/sessions/{q}"),
        format!("/compare?s={id}&s={q}"),
        format!("/ensemble?m={id}:2"),
        "/specs".into(),
        "/datasets".into(),
        "/datasets/emoji/board".into(),
        "/system".into(),
        "/login".into(),
    ];
    for page in &pages {
        let (status, body) = get(s, page).await;
        assert_eq!(status, StatusCode::OK, "{page}: {body}");
        assert_escaped(page, &body);
    }
    let (_, list) = get(s, "/sessions").await;
    assert!(list.contains("&#60;script&#62;alert(1)&#60;/script&#62;"), "the memo is shown, escaped");
    assert!(list.contains(&id) && list.contains(&q) && list.contains("badge running") && list.contains("queue #1"));
    assert!(list.contains("2/5"), "progress: epoch 2 of 5");
    let (_, one) = get(s, &format!("/sessions/{id}")).await;
    assert!(one.contains("&#60;img src=x onerror=alert(2)&#62;"), "log lines are escaped");
    assert!(one.contains("<svg class=\"chart\""), "charts are inline SVG");
    assert!(one.contains("50.00%") && one.contains("val acc 50.00%"), "best val acc and the checkpoint summary");
    assert!(one.contains(&format!("value=\"{id}:2\"")), "a choice box per checkpoint for the ensemble builder");
    assert!(one.contains(&format!("/sessions/{id}/live?log_offset=")), "live updates are wired");
    let (_, specs) = get(s, "/specs").await;
    assert!(specs.contains("exp/&#34;quo&#39;te&#34;&#60;b&#62;bold&#60;/b&#62;.yaml"), "{specs}");
    assert!(specs.contains("&#60;svg onload=alert(3)&#62;"));
    let (_, cmp) = get(s, &format!("/compare?s={id}&s={q}")).await;
    assert!(cmp.contains("optimizer.lr") && cmp.contains("resnet18"), "the differing spec fields");
    let (_, ens) = get(s, &format!("/ensemble?m={id}:2&m=tester/emoji/99:1")).await;
    assert!(ens.contains(&format!("rush submit {id}:2")) && ens.contains("unknown session tester/emoji/99"));
    let (_, ds) = get(s, "/datasets").await;
    assert!(ds.contains(">emoji<") && ds.contains(">300<"));
    let (_, sys) = get(s, "/system").await;
    // No scheduler runs in this fixture, so the slot is idle (the browser test sees a session on it).
    assert!(sys.contains("cpu0") && sys.contains("idle"), "the slots");
    assert!(sys.contains("NVML") || sys.contains("gpu0"), "the GPU probe says something either way");

    for (uri, ctype) in [("/static/rush.css", "text/css"), ("/static/rush.js", "text/javascript")] {
        let (status, headers, body) = request(s, Request::get(uri).body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::OK);
        assert!(headers["content-type"].to_str().unwrap().starts_with(ctype) && body.len() > 500);
    }
    // The icon: linked from every page, and `/favicon.ico` answers too.
    assert!(list.contains("rel=\"icon\" type=\"image/svg+xml\" href=\"/static/favicon.svg\""));
    for uri in ["/favicon.ico", "/static/favicon.svg"] {
        let (status, headers, body) = request(s, Request::get(uri).body(Body::empty()).unwrap()).await;
        assert_eq!((status, headers["content-type"].to_str().unwrap()), (StatusCode::OK, "image/svg+xml"), "{uri}");
        assert!(body.starts_with("<svg") && body.trim_end().ends_with("</svg>"), "{uri}: {body}");
    }
    let (status, headers, _) = request(s, Request::get("/").body(Body::empty()).unwrap()).await;
    assert_eq!((status, headers["location"].to_str().unwrap()), (StatusCode::SEE_OTHER, "/sessions"));
    assert_eq!(get(s, "/sessions/tester/emoji/77").await.0, StatusCode::NOT_FOUND);
    let (status, body) = get(s, "/sessions/%3Cb%3E/emoji/1").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(!body.contains("<b>"), "error pages escape too: {body}");
    assert_eq!(get(s, "/sessions?state=bogus").await.0, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn unknown_things_are_404_everywhere_and_errors_name_what_is_wrong() {
    let f = fixture().await;
    let s = &f.state;
    let id = f.running.to_string();
    let error =
        |body: &str| serde_json::from_str::<serde_json::Value>(body).unwrap()["error"].as_str().unwrap().to_string();
    // An unknown dataset is not found, on the page and in the API.
    assert_eq!(get(s, "/datasets/nope/board").await.0, StatusCode::NOT_FOUND);
    let (status, body) = get(s, "/api/datasets/nope/board").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(error(&body).contains("nope"), "{body}");
    // An unknown session in a mix is named as such (not as a cache miss); weights are named by member.
    let (status, body) = get(s, "/api/datasets/emoji/ensemble?members=tester/emoji/9:1:1").await;
    assert_eq!((status, error(&body)), (StatusCode::NOT_FOUND, "unknown session tester/emoji/9".to_string()));
    let (status, body) = get(s, &format!("/api/datasets/emoji/ensemble?members={id}:2:1,{id}:2:-1")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(error(&body).starts_with(&format!("the weight of {id}:2 is -1")), "{body}");
    let submission = format!(
        r#"{{"members":[{{"session":"{id}","checkpoint":"2","weight":1}},{{"session":"{id}","checkpoint":"best","weight":-1}}]}}"#
    );
    let req = Request::post("/api/submissions").header("content-type", "application/json").body(Body::from(submission));
    let (status, _, body) = request(s, req.unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(error(&body).contains(&format!("{id}:best")) && error(&body).contains("weight -1"), "{body}");
    // `best` and `last` work in the builder as everywhere else.
    for alias in ["best", "last"] {
        let (status, page) = get(s, &format!("/ensemble?m={id}:{alias}")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(!page.contains("has no checkpoint"), "{alias}: {page}");
        assert!(page.contains(&format!("data-session=\"{id}\" data-epoch=\"2\"")), "{alias}: {page}");
    }
    let (_, page) = get(s, &format!("/ensemble?m={id}:7")).await;
    assert!(page.contains(&format!("session {id} has no checkpoint 7 (saved: 2)")), "{page}");
    // The builder reached from the menu offers the registered datasets; an unknown one is named.
    let (_, page) = get(s, "/ensemble").await;
    assert!(page.contains("Choose a dataset") && page.contains("href=\"/ensemble?d=emoji\""), "{page}");
    let (_, page) = get(s, "/ensemble?d=nope").await;
    assert!(
        page.contains("unknown dataset &#34;nope&#34;") || page.contains("unknown dataset &quot;nope&quot;"),
        "{page}"
    );
    // Registering a dataset that is not there names it, not the daemon's home folder.
    let (status, _, body) = request(s, Request::post("/api/datasets/nope").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let home = s.home().root().display().to_string();
    assert!(error(&body).contains("nope") && !body.contains(&home), "{body}");
}

/// Two ranked submissions (public 0.75 / private 0.5 with both fixture sessions, then a dry run of the queued one) and
/// a failed one; their ids.
async fn ranked_and_dry_submissions(f: &Fixture) -> Vec<i64> {
    use rush::store::{NewSubmission, ScoredSubmission, StoredMember};
    let (s, store) = (&f.state, f.state.store());
    let (kept, gone) = (f.running.to_string(), f.queued.to_string());
    // hidden labels, so submissions get past that check
    let labels = s.home().labels("emoji");
    std::fs::create_dir_all(labels.parent().unwrap()).unwrap();
    std::fs::write(&labels, "index,tags\n0,1\n").unwrap();
    let member =
        |session: &str, weight: f64| StoredMember { session: session.into(), checkpoint: "2".into(), epoch: 2, weight };
    let mut ids = Vec::new();
    for (members, dry_run) in [(vec![member(&kept, 1.0), member(&gone, 2.0)], false), (vec![member(&gone, 1.0)], true)]
    {
        let new = NewSubmission {
            dataset: "emoji".into(),
            user: "tester".into(),
            members,
            tta: "none".into(),
            dry_run,
            created_at: rush::store::now(),
        };
        ids.push(store.add_submission(&new, (0.0, f64::MAX), |_| Ok::<(), String>(())).await.unwrap().unwrap());
    }
    let scored = |public: f64, samples: i64| ScoredSubmission {
        public_score: public,
        private_score: (samples > 1).then_some(0.5),
        samples,
        npy_path: "predictions.npy".into(),
        infer_seconds: 0.1,
        score_seconds: 0.1,
    };
    store.score_submission(ids[0], &scored(0.75, 60), 1.0).await.unwrap();
    store.score_submission(ids[1], &scored(0.625, 1), 1.0).await.unwrap();
    let new = NewSubmission {
        dataset: "emoji".into(),
        user: "tester".into(),
        members: vec![member(&kept, 1.0)],
        tta: "flip".into(),
        dry_run: false,
        created_at: rush::store::now(),
    };
    let failed = store.add_submission(&new, (0.0, f64::MAX), |_| Ok::<(), String>(())).await.unwrap().unwrap();
    store.fail_submission(failed, "rush infer: <b>out of memory</b>", 2.0).await.unwrap();
    ids.push(failed);
    ids
}

#[tokio::test]
async fn private_scores_show_only_for_datasets_the_config_reveals() {
    let f = fixture().await;
    let ids = ranked_and_dry_submissions(&f).await;
    let s = &f.state;
    let (_, board) = get(s, "/datasets/emoji/board").await;
    assert!(!board.contains("private=true") && !board.contains(">Private<"), "no reveal link before the deadline");
    for uri in [
        "/api/datasets/emoji/board?private=true".to_string(),
        format!("/api/submissions/{}?private=true", ids[0]),
        "/api/submissions?dataset=emoji&private=true".into(),
        "/datasets/emoji/board?private=true".into(),
    ] {
        let (status, body) = get(s, &uri).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{uri}: {body}");
        assert!(body.contains("revealed after the deadline") && !body.contains("0.5"), "{uri}: {body}");
    }
    let (_, body) = get(s, "/api/submissions").await;
    assert!(body.contains("\"private_score\":null") && !body.contains("\"private_score\":0.5"), "{body}");

    let f = fixture_revealing(None, &["emoji"]).await;
    let ids = ranked_and_dry_submissions(&f).await;
    let s = &f.state;
    for uri in ["/api/datasets/emoji/board?private=true", "/api/datasets/emoji/board"] {
        let (status, body) = get(s, uri).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {body}");
        let board: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!((board["revealed"].as_bool(), board["lines"][0]["private_score"].as_f64()), (Some(true), Some(0.5)));
    }
    let (_, one) = get(s, &format!("/api/submissions/{}", ids[0])).await;
    assert!(one.contains("\"private_score\":0.5"), "{one}");
    let (_, page) = get(s, "/datasets/emoji/board").await;
    assert!(page.contains(">Private<") && page.contains("0.5000"), "{page}");
}

#[tokio::test]
async fn a_removed_session_keeps_its_board_lines_unlinked_and_cannot_be_submitted() {
    use rush::submit::probs::{self, CacheKey, CacheSplit};
    let f = fixture().await;
    let ids = ranked_and_dry_submissions(&f).await;
    let (s, store) = (&f.state, f.state.store());
    let failed = ids[2];
    let (kept, gone) = (f.running.to_string(), f.queued.to_string());
    // A member's session page links its submissions, the dry run marked as such.
    let (_, page) = get(s, &format!("/sessions/{gone}")).await;
    for id in [ids[0], ids[1]] {
        assert!(page.contains(&format!("/submissions?dataset=emoji#submission-{id}")), "{id}: {page}");
    }
    assert!(page.contains(&format!("#{} ", ids[1])) && page.contains("(dry run)"), "{page}");
    // The queued session ends, is cached, then removed: its cache goes with it.
    store.transition(&f.queued, SessionState::Stopped, None, None).await.unwrap();
    let key = CacheKey { session: f.queued.clone(), epoch: 2, split: CacheSplit::Valid, tta: rush::submit::Tta::None };
    let cached = rush::core::ensemble::Probs::new(1, 350, vec![1.0 / 350.0; 350]).unwrap();
    probs::write(s.home(), &key, "order", &cached).unwrap();
    assert!(probs::meta(s.home(), &key).unwrap().is_some());
    s.daemon.remove_session(&f.queued).await.unwrap();
    assert!(probs::meta(s.home(), &key).unwrap().is_none(), "rm leaves the session's cached probabilities");
    assert!(!probs::session_dir(s.home(), &f.queued).exists());

    // Submitting it is refused with its name, even from a cached checkpoint (an epoch number).
    let body = format!(r#"{{"members":[{{"session":"{gone}","checkpoint":"2","weight":1}}],"dry_run":true}}"#);
    let req = Request::post("/api/submissions").header("content-type", "application/json").body(Body::from(body));
    let (status, _, answer) = request(s, req.unwrap()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    assert!(answer.contains(&format!("unknown session {gone}")), "{answer}");

    // The board keeps the line; the removed session is shown without a link, the kept one with its link.
    let (status, board) = get(s, "/datasets/emoji/board").await;
    assert_eq!(status, StatusCode::OK);
    assert!(board.contains(&format!("href=\"/sessions/{kept}\"")), "{board}");
    assert!(!board.contains(&format!("href=\"/sessions/{gone}\"")) && board.contains(&format!("{gone} (removed)")));
    assert!(board.contains(&format!("href=\"/submissions?dataset=emoji#submission-{}\"", ids[0])), "{board}");
    assert!(!board.contains("predictions.npy\">"), "the board's id opens the submissions page, not a download");

    // The submissions page lists them all, the dry run and the failed one too, newest first.
    let (status, page) = get(s, "/submissions").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("href=\"/submissions\" class=\"on\""), "in the menu");
    let at = |id: i64| page.find(&format!("id=\"submission-{id}\"")).unwrap_or_else(|| panic!("{id}: {page}"));
    assert!(at(failed) < at(ids[1]) && at(ids[1]) < at(ids[0]), "newest first");
    let row = |id: i64| {
        let start = at(id);
        page[start..start + page[start..].find("</tr>").unwrap()].to_string()
    };
    let dry = row(ids[1]);
    assert!(dry.contains("<td>yes</td>") && dry.contains("0.6250 (1 samples)") && dry.contains("scored"), "{dry}");
    assert!(dry.contains(&format!("/api/submissions/{}/predictions.npy", ids[1])), "{dry}");
    let fail = row(failed);
    assert!(fail.contains("failed") && fail.contains("out of memory") && !fail.contains("<b>"), "{fail}");
    assert!(!fail.contains("predictions.npy"), "{fail}");
    let ranked = row(ids[0]);
    assert!(ranked.contains("0.7500") && !ranked.contains("0.5000"), "no private score here: {ranked}");
    assert!(ranked.contains(&format!("{gone}:2 (removed)")) && ranked.contains("×2"), "{ranked}");
    let (_, other) = get(s, "/submissions?dataset=other").await;
    assert!(other.contains("No submissions yet."), "{other}");
}

fn polyline_counts(svg: &str) -> Vec<usize> {
    svg.split("points=\"").skip(1).map(|rest| rest.split('"').next().unwrap_or("").split(' ').count()).collect()
}

#[tokio::test]
async fn charts_are_downsampled_to_the_limit_and_keep_spikes() {
    let f = fixture().await;
    let base = format!("/sessions/{}", f.running);
    let (status, headers, svg) =
        request(&f.state, Request::get(format!("{base}/charts/loss.svg")).body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "image/svg+xml");
    let counts = polyline_counts(&svg);
    assert!(counts[0] <= 1000 && counts[0] >= 500, "20,000 steps drawn as {counts:?}");
    // The spike (50 against values near 1) must still be drawn: the highest point sits near the plot's top (y = 34
    // of a 222 px plot), far above all others.
    let ys: Vec<f64> = svg
        .split("points=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .split(' ')
        .map(|p| p.split_once(',').unwrap().1.parse().unwrap())
        .collect();
    let top = ys.iter().cloned().fold(f64::MAX, f64::min);
    assert!(top < 50.0, "the spike survived downsampling (highest point at y = {top})");
    assert_eq!(ys.iter().filter(|y| **y < 150.0).count(), 1, "one spike, one point up there");
    let (_, svg) = get(&f.state, &format!("{base}/charts/loss.svg?points=40")).await;
    assert!(polyline_counts(&svg)[0] <= 40);
    let (_, svg) = get(&f.state, &format!("{base}/charts/loss.svg?points=1000000")).await;
    assert!(polyline_counts(&svg)[0] <= 1000, "the cap cannot be lifted");
    let (_, acc) = get(&f.state, &format!("{base}/charts/accuracy.svg")).await;
    assert_eq!(polyline_counts(&acc), vec![2, 2], "train and val accuracy per epoch");
    assert_eq!(get(&f.state, &format!("{base}/charts/other.svg")).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn file_routes_stay_in_the_session_folder() {
    let f = fixture().await;
    let base = format!("/sessions/{}", f.running);
    let (status, log) = get(&f.state, &format!("{base}/files/train.log")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(log.contains("epoch 1 done"));
    let (status, headers, body) =
        request(&f.state, Request::get(format!("{base}/files/checkpoints/2.safetensors")).body(Body::empty()).unwrap())
            .await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers["content-disposition"].to_str().unwrap().starts_with("attachment"));
    assert_eq!(body.len(), 64);
    let dir = f.state.home().session(&f.running);
    std::os::unix::fs::symlink(f.state.home().db(), dir.join("db.log")).unwrap();
    for bad in
        ["../../../../rush.db", "..%2F..%2F..%2F..%2Frush.db", "%2Fetc%2Fpasswd", "db.log", "checkpoints/../../x"]
    {
        let (status, body) = get(&f.state, &format!("{base}/files/{bad}")).await;
        assert!(
            status == StatusCode::BAD_REQUEST || status == StatusCode::NOT_FOUND,
            "{bad}: {status} {}",
            &body[..body.len().min(100)]
        );
        assert!(!body.contains("SQLite format"), "{bad} leaked the database");
    }
}

#[tokio::test]
async fn stop_and_fork_buttons_go_through_the_daemon() {
    let f = fixture().await;
    let q = f.queued.to_string();
    let (status, headers, _) = request(&f.state, form_post(&format!("/sessions/{q}/stop"), "", &[])).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers["location"], format!("/sessions/{q}").as_str());
    assert_eq!(f.state.store().session_required(&f.queued).await.unwrap().state, SessionState::Stopped);
    // Stopping again is refused, and the reason comes back to the page, escaped.
    let (_, headers, _) = request(&f.state, form_post(&format!("/sessions/{q}/stop"), "", &[])).await;
    let back = headers["location"].to_str().unwrap().to_string();
    assert!(back.starts_with(&format!("/sessions/{q}?error=")), "{back}");
    let (_, page) = get(&f.state, &back).await;
    assert!(page.contains("already stopped"), "the error is shown");
    // A fork from a checkpoint that does not exist says so.
    let id = f.running.to_string();
    let (_, headers, _) =
        request(&f.state, form_post(&format!("/sessions/{id}/fork"), "checkpoint=9&args=&memo=%3Cb%3E", &[])).await;
    let back = headers["location"].to_str().unwrap().to_string();
    let (_, page) = get(&f.state, &back).await;
    assert!(page.contains("has no checkpoint 9"), "{back}");
    // The fork box's default is `best` (then `last`, then the epochs): it names no checkpoint retention can delete
    // while the page is open, and it forks.
    let (_, page) = get(&f.state, &format!("/sessions/{id}")).await;
    let select = page.split("id=\"fork-checkpoint\"").nth(1).unwrap().split("</select>").next().unwrap();
    let values: Vec<&str> = select.split("<option value=\"").skip(1).map(|o| o.split('"').next().unwrap()).collect();
    assert_eq!(values, ["best", "last", "2"], "{select}");
    let (status, headers, _) =
        request(&f.state, form_post(&format!("/sessions/{id}/fork"), "checkpoint=best&args=&memo=", &[])).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers["location"], "/sessions/tester/emoji/3", "the fork's page");
    // The parent's page links its fork; the fork's page links its parent.
    let (_, page) = get(&f.state, &format!("/sessions/{id}")).await;
    assert!(page.contains("href=\"/sessions/tester/emoji/3\">tester/emoji/3 from checkpoint 2</a>"), "{page}");
    let (_, page) = get(&f.state, "/sessions/tester/emoji/3").await;
    assert!(page.contains(&format!("{id}:2")), "{page}");
}

#[tokio::test]
async fn the_best_badge_is_the_checkpoint_best_names() {
    let f = fixture().await;
    let id = f.running.clone();
    let sdir = SessionDir::new(f.state.home().session(&id));
    // Epochs 2, 4 and 5 tie at 50%: `best` is the earliest (the core rule `submit ... best` and fork use).
    for (epoch, acc) in [(3, 0.25), (4, 0.5), (5, 0.5)] {
        std::fs::write(sdir.checkpoint_weights(epoch), [1u8; 8]).unwrap();
        f.state
            .store()
            .add_checkpoint(&CheckpointRow {
                session: id.to_string(),
                epoch: epoch as i64,
                name: epoch.to_string(),
                path: sdir.checkpoint_weights(epoch).display().to_string(),
                val_acc: acc,
                val_loss: None,
                train_loss: None,
                bytes: 8,
                created_at: rush::store::now(),
                score: None,
                best_by: None,
            })
            .await
            .unwrap();
    }
    let resolved = f.state.daemon.checkpoint_row(&id, rush::core::checkpoint::CheckpointRef::Best).await.unwrap();
    assert_eq!(resolved.epoch, 2);
    let (_, rows) = get(&f.state, &format!("/sessions/{id}?fragment=checkpoints")).await;
    let badged: Vec<&str> = rows
        .split("<td class=\"mono\">")
        .skip(1)
        .filter(|cell| cell.split("</td>").next().unwrap().contains(">best<"))
        .map(|cell| cell.split(' ').next().unwrap())
        .collect();
    assert_eq!(badged, ["2"], "{rows}");
}

#[tokio::test]
async fn a_session_that_never_started_links_no_missing_files() {
    let f = fixture().await;
    let q = f.queued.to_string();
    f.state.daemon.stop_session(&f.queued).await.unwrap();
    let (status, page) = get(&f.state, &format!("/sessions/{q}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!page.contains("/files/"), "no links to files it never wrote: {page}");
    let spec = page.split("<pre class=\"spec\">").nth(1).unwrap().split("</pre>").next().unwrap();
    assert!(spec.contains("model: resnet18") && !spec.contains("\"model\""), "the spec as YAML: {spec}");
    assert!(page.contains("No checkpoints.") && !page.contains("No checkpoints yet"), "it has ended");
    // The sessions list says why it ended, under its memo.
    let (_, list) = get(&f.state, "/sessions").await;
    let row = list.split(&format!("data-id=\"{q}\"")).nth(1).unwrap().split("</tr>").next().unwrap();
    assert!(row.contains("stopped by the user before it started"), "{row}");
    for file in ["train.log", "spec.yaml"] {
        assert_eq!(get(&f.state, &format!("/sessions/{q}/files/{file}")).await.0, StatusCode::NOT_FOUND);
    }
    // A session with its folder links both, and they answer.
    let id = f.running.to_string();
    let (_, page) = get(&f.state, &format!("/sessions/{id}")).await;
    for file in ["train.log", "spec.yaml"] {
        let link = format!("/sessions/{id}/files/{file}");
        assert!(page.contains(&format!("href=\"{link}\"")), "{file} is linked");
        assert_eq!(get(&f.state, &link).await.0, StatusCode::OK);
    }
}

#[tokio::test]
async fn mutating_routes_need_the_token_beyond_loopback() {
    let bind: std::net::SocketAddr = "0.0.0.0:8470".parse().unwrap();
    let f = fixture_with(Some(Access::new(bind, Some("s3cret-token"), false))).await;
    let id = f.queued.to_string();
    let mutating = [
        ("POST", format!("/api/sessions/{id}/stop")),
        ("POST", format!("/api/sessions/{id}/fork")),
        ("DELETE", format!("/api/sessions/{id}")),
        ("DELETE", format!("/api/sessions/{id}/checkpoints/1")),
        ("POST", "/api/datasets/emoji".to_string()),
        ("POST", "/api/submissions".to_string()),
        ("POST", format!("/sessions/{id}/stop")),
        ("POST", format!("/sessions/{id}/fork")),
    ];
    for (method, uri) in &mutating {
        for auth in [None, Some("Bearer wrong"), Some("Bearer s3cret-tokenX"), Some("Basic s3cret-token")] {
            let mut req = Request::builder().method(*method).uri(uri).header("content-type", "application/json");
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            let (status, _, body) = request(&f.state, req.body(Body::from("{}")).unwrap()).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri} with {auth:?}");
            assert!(!body.contains("s3cret"), "the token is never echoed");
        }
    }
    assert_eq!(f.state.store().session_required(&f.queued).await.unwrap().state, SessionState::Queued);
    // Reads are closed too (public_read is off): the API says 401, a browser is sent to the form.
    let (status, _, _) = request(&f.state, Request::get("/api/sessions").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let page = format!("/sessions/{id}?tab=log");
    let (status, headers, _) =
        request(&f.state, Request::get(&page).header("accept", "text/html").body(Body::empty()).unwrap()).await;
    let next = format!("/login?next={}", page.replace('/', "%2F").replace('?', "%3F").replace('=', "%3D"));
    assert_eq!((status, headers["location"].to_str().unwrap()), (StatusCode::SEE_OTHER, next.as_str()));
    // The form and its style sheet need no token; the form carries where to go back to.
    let (status, headers, _) = request(&f.state, Request::get("/static/rush.css").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/css"));
    let (status, login) = get(&f.state, &next).await;
    assert_eq!(status, StatusCode::OK);
    assert!(login.contains(&format!("name=\"next\" value=\"/sessions/{id}?tab=log\"")), "{login}");
    // The right token works, by header ...
    let req = Request::get("/api/sessions").header("authorization", "Bearer s3cret-token").body(Body::empty()).unwrap();
    assert_eq!(request(&f.state, req).await.0, StatusCode::OK);
    // ... and through the login form's cookie, which then lets the stop button work.
    let (status, _, _) = request(&f.state, form_post("/login", "token=nope", &[])).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, headers, _) = request(&f.state, form_post("/login", "token=s3cret-token", &[])).await;
    assert_eq!((status, headers["location"].to_str().unwrap()), (StatusCode::SEE_OTHER, "/sessions"));
    let cookie = headers["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
    assert!(headers["set-cookie"].to_str().unwrap().contains("HttpOnly"));
    // Back to the page asked for, but only a page of this site.
    for (next, to) in [
        ("%2Fdatasets%2Femoji%2Fboard%3Fprivate%3Dtrue", "/datasets/emoji/board?private=true"),
        ("%2F%2Fevil.example%2F", "/sessions"),
        ("https%3A%2F%2Fevil.example%2F", "/sessions"),
    ] {
        let (status, headers, _) =
            request(&f.state, form_post("/login", &format!("token=s3cret-token&next={next}"), &[])).await;
        assert_eq!((status, headers["location"].to_str().unwrap()), (StatusCode::SEE_OTHER, to), "{next}");
    }
    let (_, sessions) = get_with(&f.state, "/sessions", &cookie).await;
    assert!(sessions.contains("action=\"/logout\""), "a logged-in page offers to log out");
    let (status, headers, _) = request(&f.state, form_post("/logout", "", &[("cookie", &cookie)])).await;
    assert_eq!((status, headers["location"].to_str().unwrap()), (StatusCode::SEE_OTHER, "/login"));
    let cleared = headers["set-cookie"].to_str().unwrap();
    assert!(cleared.starts_with("rush_token=;") && cleared.contains("Max-Age=0"), "{cleared}");
    let (status, _, _) =
        request(&f.state, form_post(&format!("/sessions/{id}/stop"), "", &[("cookie", &cookie)])).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(f.state.store().session_required(&f.queued).await.unwrap().state, SessionState::Stopped);

    // Beyond loopback without a token, nothing mutates; public reads stay open when configured.
    let f = fixture_with(Some(Access::new(bind, None, true))).await;
    assert_eq!(get(&f.state, "/sessions").await.0, StatusCode::OK);
    for (method, uri) in &mutating {
        let uri = uri.replace(&id, &f.queued.to_string());
        let req = Request::builder().method(*method).uri(&uri).body(Body::empty()).unwrap();
        assert_eq!(request(&f.state, req).await.0, StatusCode::FORBIDDEN, "{method} {uri}");
    }
    // On loopback (the default) a cross-site form post is refused, a same-site one accepted.
    let f = fixture().await;
    let uri = format!("/sessions/{}/stop", f.queued);
    let evil = [("origin", "http://evil.example"), ("host", "127.0.0.1:8470")];
    assert_eq!(request(&f.state, form_post(&uri, "", &evil)).await.0, StatusCode::FORBIDDEN);
    let same = [("origin", "http://127.0.0.1:8470"), ("host", "127.0.0.1:8470")];
    assert_eq!(request(&f.state, form_post(&uri, "", &same)).await.0, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn prometheus_metrics() {
    let f = fixture().await;
    let (status, headers, body) = request(&f.state, Request::get("/metrics").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    assert!(body.contains("rush_sessions{state=\"running\"} 1"), "{body}");
    assert!(body.contains("rush_sessions{state=\"queued\"} 1"));
    assert!(body.contains("rush_queue_depth 1"));
    assert!(body.contains("rush_metric_rows_written_total 20004"), "{body}");
    assert!(body.contains("rush_slot_busy{slot=\"cpu0\"} 0"));
    assert!(body.contains("# TYPE rush_metric_rows_written_total counter"));
}

#[tokio::test]
async fn the_sessions_list_pages_through_many_sessions() {
    let f = fixture().await;
    let new = NewSession {
        user: "tester".into(),
        dataset: "synth".into(),
        memo: String::new(),
        priority: 0,
        device: Device::Cpu,
        epochs: 1,
        fork_of: None,
    };
    f.state.store().enqueue(None, &vec![new; 120], |_, _| "{}".into()).await.unwrap();
    let mut url = "/sessions?dataset=synth".to_string();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..5 {
        let (status, body) = get(&f.state, &url).await;
        assert_eq!(status, StatusCode::OK);
        for row in body.split("<tr data-id=\"").skip(1) {
            assert!(seen.insert(row.split('"').next().unwrap().to_string()), "a session shown twice");
        }
        match body.split("href=\"").find_map(|h| h.split_once("\">Older").map(|(u, _)| u.replace("&#38;", "&"))) {
            Some(next) => url = next,
            None => break,
        }
    }
    assert_eq!(seen.len(), 120, "every synth session once, 50 a page");
    assert!(seen.iter().all(|s| s.starts_with("tester/synth/")));
}

/// Reads SSE frames from a streaming body until `want` has been seen (or the time is up); returns all text read.
async fn read_until(
    body: &mut (impl futures::Stream<Item = Result<axum::body::Bytes, axum::Error>> + Unpin),
    want: &str,
) -> String {
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !text.contains(want) {
        match tokio::time::timeout_at(deadline, body.next()).await {
            Ok(Some(Ok(chunk))) => text.push_str(&String::from_utf8_lossy(&chunk)),
            _ => panic!("{want:?} never came; got {text:?}"),
        }
    }
    text
}

#[tokio::test]
async fn the_session_stream_carries_steps_log_lines_and_the_end() {
    let f = fixture().await;
    let id = f.running.clone();
    let log = SessionDir::new(f.state.home().session(&id)).log();
    let offset = std::fs::metadata(&log).unwrap().len();
    let resp = router(f.state.clone())
        .oneshot(Request::get(format!("/sessions/{id}/live?log_offset={offset}")).body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body().into_data_stream();
    let first = read_until(&mut body, "event: state").await;
    assert!(first.contains("\"state\":\"running\""), "{first}");
    assert!(!first.contains("epoch 1 done"), "lines before the offset are not sent again");
    let step = EventLine::new(
        Event::Step { step: 20_001, epoch: 3, loss: 0.75, lr: 0.1, img_per_s: 10.0, data_wait: 0.0 },
        rush::store::now(),
    );
    f.state.daemon.live.publish(&id, LiveEvent::Line(step.to_json().into()));
    let got = read_until(&mut body, "event: step").await;
    assert!(got.contains("\"step\":20001"), "{got}");
    use std::io::Write;
    std::fs::OpenOptions::new().append(true).open(&log).unwrap().write_all(b"epoch 3 <started>\n").unwrap();
    let got = read_until(&mut body, "epoch 3 <started>").await;
    assert!(got.contains("event: log"));
    f.state.store().transition(&id, SessionState::Stopped, None, Some("stopped by the test")).await.unwrap();
    f.state.daemon.live.end(&id, SessionState::Stopped);
    let got = read_until(&mut body, "event: end").await;
    assert!(got.contains("\"state\":\"stopped\"") && got.contains("stopped by the test"), "{got}");
}

#[tokio::test]
async fn the_sessions_stream_says_when_the_list_changes() {
    let f = fixture().await;
    let resp =
        router(f.state.clone()).oneshot(Request::get("/sessions/live").body(Body::empty()).unwrap()).await.unwrap();
    let mut body = resp.into_body().into_data_stream();
    // Let the stream take its first fingerprint, then change the list.
    tokio::time::sleep(Duration::from_millis(300)).await;
    f.state.store().transition(&f.queued, SessionState::Stopped, None, None).await.unwrap();
    // With a data line: a browser's EventSource drops an event that has none.
    read_until(&mut body, "event: changed\ndata: ").await;
}

/// The measurement for the dashboard's speed: the sessions page with 10,000 sessions and a chart over a million
/// points. Prints figures; asserts no timings. Run with
/// `cargo test --release --test it web::bench_ -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn bench_sessions_page_and_million_point_chart() {
    let f = fixture().await;
    let new = NewSession {
        user: "tester".into(),
        dataset: "bench".into(),
        memo: "a memo of ordinary length for the table".into(),
        priority: 0,
        device: Device::Cpu,
        epochs: 30,
        fork_of: None,
    };
    let spec = f.state.store().session_required(&f.running).await.unwrap().spec;
    let t = std::time::Instant::now();
    let ids = f.state.store().enqueue(None, &vec![new; 10_000], |_, _| spec.clone()).await.unwrap();
    for id in &ids {
        f.state.store().transition(id, SessionState::Running, Some("cpu0"), None).await.unwrap();
        f.state.store().transition(id, SessionState::Succeeded, None, None).await.unwrap();
    }
    println!("10,000 sessions stored in {:.1} s", t.elapsed().as_secs_f64());
    let target = ids[0].clone();
    let t = std::time::Instant::now();
    for chunk in 0..50i64 {
        let rows: Vec<MetricRow> = (chunk * 20_000..(chunk + 1) * 20_000)
            .map(|step| MetricRow {
                session: target.to_string(),
                step,
                epoch: step / 33_334 + 1,
                name: "loss".into(),
                value: (step as f64 * 0.001).sin() + if step == 777_777 { 40.0 } else { 2.0 },
                t: 0.0,
            })
            .collect();
        f.state.daemon.metrics.send(rows);
    }
    f.state.daemon.metrics.flush().await;
    println!("1,000,000 metric rows written in {:.1} s", t.elapsed().as_secs_f64());
    let time = |uri: String| {
        let state = f.state.clone();
        async move {
            let mut best = f64::MAX;
            let mut body = String::new();
            for _ in 0..5 {
                let t = std::time::Instant::now();
                let (status, b) = get(&state, &uri).await;
                best = best.min(t.elapsed().as_secs_f64() * 1000.0);
                assert_eq!(status, StatusCode::OK, "{uri}");
                body = b;
            }
            (best, body)
        }
    };
    let (ms, _) = time("/sessions".into()).await;
    println!("GET /sessions (first page of 10,002): {ms:.1} ms");
    let (ms, _) = time("/sessions?dataset=bench&state=succeeded".into()).await;
    println!("GET /sessions?dataset=bench&state=succeeded: {ms:.1} ms");
    let seq = f.state.store().session_required(&ids[5000]).await.unwrap().seq;
    let (ms, body) = time(format!("/sessions?before={seq}")).await;
    println!("GET /sessions?before=... (page 100): {ms:.1} ms ({} rows)", body.matches("<tr data-id").count());
    let (ms, svg) = time(format!("/sessions/{target}/charts/loss.svg")).await;
    println!("GET loss.svg over 1,000,000 points: {ms:.1} ms, {} points drawn", polyline_counts(&svg)[0]);
    let (ms, _) = time(format!("/sessions/{target}")).await;
    println!("GET the session page (both charts, log, checkpoints): {ms:.1} ms");
}
