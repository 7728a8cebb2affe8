//! The pages' test fixture: the whole router over a real daemon state in a temporary folder (store, home, config; no
//! scheduler, no child), seeded with a dataset, a running session with a hostile memo, a checkpoint and a log, a queued
//! session and a rejected spec, and helpers that send it a request and read the whole answer. On demand, the dataset's
//! files (a tiny synthetic set with a hostile tag name) and validation predictions of checkpoints.

use std::collections::BTreeMap;
use std::path::PathBuf;
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
/// The name of the first class's tag in [`Fixture::with_dataset`]'s `tag.tsv`.
pub const HOSTILE_TAG: &str = "<script>alert(4)</script>";

/// What [`Fixture::with_dataset`] wrote.
pub struct DatasetFacts {
    /// Training images.
    pub images: usize,
    /// Images per package, by package id.
    pub per_package: Vec<(String, usize)>,
    /// Images per class (first tag), by tag id; the first class's tag is named [`HOSTILE_TAG`]. Every tag `t` has the
    /// keywords `en{t}`, `한{t}` and `日{t}` (languages en, ko, ja).
    pub per_class: Vec<(u16, usize)>,
    /// One sticker: (package, sticker).
    pub first: (String, String),
    /// `train/train_data/images`.
    pub images_dir: PathBuf,
    /// The validation split (`packages.tsv` marks it): (package, sticker, label), in order.
    pub valid: Vec<(String, String, u16)>,
}

impl DatasetFacts {
    /// The class after `class` among the dataset's classes (the wrong guess of the predictions).
    pub fn next_class(&self, class: u16) -> u16 {
        let at = self.per_class.iter().position(|c| c.0 == class).unwrap_or(0);
        self.per_class[(at + 1) % self.per_class.len()].0
    }
}

/// What [`Fixture::with_predictions`] wrote.
pub struct PredictionFacts {
    pub dataset: DatasetFacts,
    /// The running session's checkpoint 2: the predicted class of each validation row. Every third row (0, 3, ...) is
    /// wrong, taken for the next class (probability 0.6, the true one 0.3); the rest are right (0.7, the next 0.2).
    pub predicted: Vec<u16>,
}

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
                score: None,
                best_by: None,
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

    /// Writes the dataset's files under the home: a synthetic set of 40 training stickers (8 packages of 5, 4 classes,
    /// 2 packages marked for validation) whose `tag.tsv` names tags in en, ko and ja, the first class hostile.
    pub async fn with_dataset(&self) -> DatasetFacts {
        let root = self.state.home().dataset("emoji");
        let opts = crate::data::synth::SynthOptions {
            out: root.clone(),
            train: 40,
            test: 8,
            seed: 5,
            per_package: 5,
            classes: 4,
            width: 16,
            height: 16,
            valid_fraction: 0.25,
            threads: Some(1),
        };
        crate::data::synth::generate(&opts, &indicatif::ProgressBar::hidden()).unwrap();
        let set = crate::data::layout::read_train(&root).unwrap();
        let first_class = set.samples.iter().map(|s| s.label()).min().unwrap();
        let mut tsv = String::from("tag\tkeywords\tlanguages\tname\n");
        for t in 0..crate::data::layout::NUM_TAGS {
            let name = if t == usize::from(first_class) { HOSTILE_TAG.to_string() } else { format!("name{t}") };
            tsv.push_str(&format!("{t}\ten{t}|한{t}|日{t}\ten|ko|ja\t{name}\n"));
        }
        let train = crate::data::layout::train_dir(&root);
        std::fs::write(train.join(crate::data::layout::TAG_TSV), tsv).unwrap();
        let set = crate::data::layout::read_train(&root).unwrap();
        let (mut per_package, mut per_class) = (BTreeMap::new(), BTreeMap::new());
        for s in &set.samples {
            *per_package.entry(s.package_id.clone()).or_insert(0) += 1;
            *per_class.entry(s.label()).or_insert(0) += 1;
        }
        let split = crate::data::split::split_by_package(&set, 0.1, 1);
        assert!(!split.valid.is_empty() && !split.train.is_empty());
        let valid = split
            .valid
            .iter()
            .map(|&i| (set.samples[i].package_id.clone(), set.samples[i].sticker_id.clone(), set.samples[i].label()))
            .collect();
        DatasetFacts {
            images: set.samples.len(),
            per_package: per_package.into_iter().collect(),
            per_class: per_class.into_iter().collect(),
            first: (set.samples[0].package_id.clone(), set.samples[0].sticker_id.clone()),
            images_dir: train.join("images"),
            valid,
        }
    }

    /// [`Self::with_dataset`], plus validation predictions: those of [`PredictionFacts`] for the running session's
    /// checkpoint 2, and for the queued session a checkpoint 1 that gets every sticker right.
    pub async fn with_predictions(&self) -> PredictionFacts {
        let dataset = self.with_dataset().await;
        let classes = crate::data::layout::NUM_TAGS;
        let order = crate::submit::probs::order_digest(
            dataset.valid.iter().map(|v| format!("{}/{}", v.0, v.1)).collect::<Vec<_>>().iter().map(String::as_str),
        );
        let write = |id: &SessionId, epoch: u32, guess: &dyn Fn(usize, u16) -> (u16, f32, f32)| {
            let sdir = SessionDir::new(self.state.home().session(id));
            std::fs::create_dir_all(sdir.checkpoints()).unwrap();
            let mut values = vec![0f32; dataset.valid.len() * classes];
            let mut predicted = Vec::new();
            for (r, v) in dataset.valid.iter().enumerate() {
                let (top, p_top, p_truth) = guess(r, v.2);
                let next = dataset.next_class(v.2);
                values[r * classes + usize::from(top)] = p_top;
                values[r * classes + usize::from(if top == v.2 { next } else { v.2 })] = p_truth;
                predicted.push(top);
            }
            let record =
                crate::submit::valid::write(&sdir, epoch, &order, dataset.valid.len(), classes, &values).unwrap();
            let meta = serde_json::json!({"epoch": epoch, "valid": record});
            std::fs::write(sdir.checkpoint_meta(epoch), serde_json::to_vec(&meta).unwrap()).unwrap();
            predicted
        };
        let predicted = write(&self.running, 2, &|r, label| {
            if r % 3 == 0 { (dataset.next_class(label), 0.6, 0.3) } else { (label, 0.7, 0.2) }
        });
        write(&self.queued, 1, &|_, label| (label, 0.9, 0.05));
        let sdir = SessionDir::new(self.state.home().session(&self.queued));
        std::fs::write(sdir.checkpoint_weights(1), [7u8; 64]).unwrap();
        self.state
            .store()
            .add_checkpoint(&CheckpointRow {
                session: self.queued.to_string(),
                epoch: 1,
                name: "1".into(),
                path: sdir.checkpoint_weights(1).display().to_string(),
                val_acc: 1.0,
                val_loss: Some(0.1),
                train_loss: Some(0.1),
                bytes: 64,
                created_at: crate::store::now(),
                score: None,
                best_by: None,
            })
            .await
            .unwrap();
        PredictionFacts { dataset, predicted }
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
            runtime: None,
            spec,
        };
        serde_json::to_string(&resolved).unwrap()
    };
    state.store().enqueue(None, &[new], resolve).await.unwrap().remove(0)
}
