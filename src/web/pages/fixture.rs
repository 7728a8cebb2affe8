//! The pages' test fixture: the whole router over a real daemon state in a temporary folder (store, home, config; no
//! scheduler, no child), seeded with a dataset, a running session with a hostile memo, a checkpoint and a log, a queued
//! session and a rejected spec, and helpers that send it a request and read the whole answer.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use tower::ServiceExt;

use crate::core::queue::Device;
use crate::core::session::{SessionId, SessionState};
use crate::daemon::Daemon;
use crate::daemon::config::{DaemonConfig, Flags};
use crate::daemon::executor::LocalExecutor;
use crate::home::{Home, SessionDir};
use crate::store::{CheckpointRow, DatasetRow, NewSession, NewSubmission, ScoredSubmission, Store, StoredMember};
use crate::web::AppState;
use crate::web::auth::Access;

/// The running session's memo: every page that shows it must escape it.
pub const HOSTILE_MEMO: &str = "<script>alert(1)</script>";
/// The running session's memo as an escaped page shows it.
pub const ESCAPED_MEMO: &str = "&#60;script&#62;alert(1)&#60;/script&#62;";
/// A line of the running session's log.
pub const HOSTILE_LOG_LINE: &str = "<img src=x onerror=alert(2)>";
/// The path of the rejected spec in the experiments folder (`</b>` makes it a file in a folder).
pub const HOSTILE_SPEC: &str = "<b>bold</b>.yaml";

pub struct Fixture {
    pub state: AppState,
    /// `tester/emoji/1`: running on `cpu0` at epoch 2 of 5 (model `baseline_cnn`), memo [`HOSTILE_MEMO`], checkpoint
    /// `2` saved (50% val acc), a log and a `spec.yaml` in its folder.
    pub running: SessionId,
    /// `tester/emoji/2`: queued (model `resnet18`), memo `second`, no folder.
    pub queued: SessionId,
    _dir: tempfile::TempDir,
}

/// A whole answer: status, headers, body as text.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Answer {
    /// A header's value ("" when absent).
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }
}

impl Fixture {
    /// Open access (loopback, no token).
    pub async fn new() -> Self {
        Self::with_access(None).await
    }

    /// With `access` instead of the default rule.
    pub async fn with_access(access: Option<Access>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let flags = Flags {
            experiments: Some(dir.path().join("exp")),
            user: Some("tester".into()),
            cpu_slots: Some(1),
            gpus: Some(vec![]),
            ..Default::default()
        };
        let mut config =
            DaemonConfig::resolve(Home::new(dir.path().join("home")), flags, 0).unwrap().prepare().unwrap();
        if let Some(a) = access {
            config.access = Arc::new(a);
        }
        let store = Store::open(&config.db).await.unwrap();
        let state = AppState::new(Daemon::new(config, store, Arc::new(LocalExecutor { program: "/bin/false".into() })));
        let store = state.store();
        let dataset = DatasetRow {
            name: "emoji".into(),
            path: "/x".into(),
            train_images: 300,
            classes: 8,
            test_images: 60,
            registered_at: 1.0,
        };
        store.upsert_dataset(&dataset).await.unwrap();
        let running = enqueue(&state, HOSTILE_MEMO, "baseline_cnn", 0.1).await;
        let queued = enqueue(&state, "second", "resnet18", 0.01).await;
        store.transition(&running, SessionState::Running, Some("cpu0"), None).await.unwrap();
        store.set_progress(&running, 2, 0.5).await.unwrap();
        let sdir = SessionDir::new(state.home().session(&running));
        std::fs::create_dir_all(sdir.checkpoints()).unwrap();
        std::fs::write(sdir.log(), format!("epoch 1 done\n{HOSTILE_LOG_LINE}\n")).unwrap();
        std::fs::write(sdir.spec(), "model: baseline_cnn\n").unwrap();
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
                created_at: crate::store::now(),
            })
            .await
            .unwrap();
        // The rejected spec is still in the experiments folder (the specs page lists only files that are).
        let rejected = state.daemon.config.experiments.join(HOSTILE_SPEC);
        std::fs::create_dir_all(rejected.parent().unwrap()).unwrap();
        std::fs::write(&rejected, "model: x\n").unwrap();
        let error = "field `model`: unknown model \"<svg onload=alert(3)>\"";
        store.reject_spec(&rejected.display().to_string(), "h1", error).await.unwrap();
        Fixture { state, running, queued, _dir: dir }
    }

    /// Sends `req` through the whole router (the access guard included).
    pub async fn send(&self, req: Request<Body>) -> Answer {
        let resp = crate::web::router(self.state.clone()).oneshot(req).await.unwrap();
        let (parts, body) = resp.into_parts();
        let bytes = axum::body::to_bytes(body, 16 << 20).await.unwrap();
        Answer { status: parts.status, headers: parts.headers, body: String::from_utf8_lossy(&bytes).into_owned() }
    }

    pub async fn get(&self, uri: &str) -> Answer {
        self.send(Request::get(uri).body(Body::empty()).unwrap()).await
    }

    /// A form post (`application/x-www-form-urlencoded`) with extra `headers`.
    pub async fn post_form(&self, uri: &str, form: &str, headers: &[(&str, &str)]) -> Answer {
        let mut req = Request::post(uri).header("content-type", "application/x-www-form-urlencoded");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.send(req.body(Body::from(form.to_string())).unwrap()).await
    }

    /// A ranked (or, with `dry_run`, a dry) submission to `emoji` of the running session's checkpoint 2, scored
    /// `public` (private 0.5; a dry run on 4 samples). Its id.
    pub async fn scored_submission(&self, dry_run: bool, public: f64) -> i64 {
        let id = self.add_submission(dry_run).await;
        let scored = ScoredSubmission {
            public_score: public,
            private_score: (!dry_run).then_some(0.5),
            samples: if dry_run { 4 } else { 60 },
            npy_path: "predictions.npy".into(),
            infer_seconds: 0.1,
            score_seconds: 0.1,
        };
        self.state.store().score_submission(id, &scored, 1.0).await.unwrap();
        id
    }

    /// A submission like [`Self::scored_submission`]'s that failed with `error`. Its id.
    pub async fn failed_submission(&self, error: &str) -> i64 {
        let id = self.add_submission(false).await;
        self.state.store().fail_submission(id, error, 1.0).await.unwrap();
        id
    }

    async fn add_submission(&self, dry_run: bool) -> i64 {
        let member = StoredMember { session: self.running.to_string(), checkpoint: "2".into(), epoch: 2, weight: 1.0 };
        let new = NewSubmission {
            dataset: "emoji".into(),
            user: "tester".into(),
            members: vec![member],
            tta: "none".into(),
            dry_run,
            created_at: crate::store::now(),
        };
        self.state.store().add_submission(&new, (0.0, f64::MAX), |_| Ok::<(), String>(())).await.unwrap().unwrap()
    }
}

/// Queues one `emoji` session of `model` with its resolved spec, as the intake stores it.
async fn enqueue(state: &AppState, memo: &str, model: &str, lr: f64) -> SessionId {
    let new = NewSession {
        user: "tester".into(),
        dataset: "emoji".into(),
        memo: memo.into(),
        priority: 0,
        device: Device::Cpu,
        epochs: 5,
        fork_of: None,
    };
    let yaml = format!("dataset: emoji\nmodel: {model}\nepochs: 5\noptimizer: {{name: sgd, lr: {lr}}}\n");
    let home = state.home().clone();
    let resolve = |id: &SessionId, _: usize| {
        let spec = crate::core::spec::Spec::parse("test.yaml", &yaml).unwrap();
        let resolved = crate::core::spec::ResolvedSpec {
            session: id.to_string(),
            dataset_path: home.dataset("emoji"),
            init_from: None,
            spec,
        };
        serde_json::to_string(&resolved).unwrap()
    };
    state.store().enqueue(None, &[new], resolve).await.unwrap().remove(0)
}
