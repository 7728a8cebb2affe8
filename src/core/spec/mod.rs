//! The experiment spec: YAML in, a validated [`Spec`] out, with every default filled in.
//!
//! Parsing is two-staged, as ripgrep does with arguments: serde reads what was written (unknown fields are errors that
//! name the field, with line and column), then [`Spec::validate`] checks values and ranges. Sweeps (`grid:` or
//! `random:`) expand into one concrete spec per session. The field names are the contract (docs/spec.md).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::core::checkpoint::RetentionPolicy;

mod field;
mod overrides;
mod rules;
mod schema;
mod searcher;
mod sweep;
mod words;
mod yaml;

pub use overrides::apply_overrides;
pub use schema::{BeyondSchema, beyond_schema, json_schema};
pub use searcher::{SEARCHER_RULES, SearchMetric, Searcher, SearcherName};
pub use sweep::MAX_SWEEP_SESSIONS;
pub use yaml::MAX_SPEC_BYTES;

/// A spec file was unreadable or invalid. The message names the file, the field and the problem.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum SpecError {
    /// YAML syntax, an unknown field or a wrong type (the parser's message carries line and column).
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    /// The same, where the parser knows the position (1-based line and column).
    #[error("{file}:{line}:{column}: {message}")]
    Syntax { file: String, line: u64, column: u64, message: String },
    /// A value out of range or inconsistent with another.
    #[error("{file}: field `{field}`: {message}")]
    Invalid { file: String, field: String, message: String },
}

impl SpecError {
    pub fn invalid(file: &str, field: &str, message: impl Into<String>) -> Self {
        SpecError::Invalid { file: file.to_string(), field: field.to_string(), message: message.into() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ModelName {
    BaselineCnn,
    Resnet18,
    Resnet34,
    Resnet50,
    EfficientnetB0,
}

impl ModelName {
    pub const ALL: [ModelName; 5] = [
        ModelName::BaselineCnn,
        ModelName::Resnet18,
        ModelName::Resnet34,
        ModelName::Resnet50,
        ModelName::EfficientnetB0,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ModelName::BaselineCnn => "baseline_cnn",
            ModelName::Resnet18 => "resnet18",
            ModelName::Resnet34 => "resnet34",
            ModelName::Resnet50 => "resnet50",
            ModelName::EfficientnetB0 => "efficientnet_b0",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerName {
    Sgd,
    Adamw,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Optimizer {
    pub name: OptimizerName,
    pub lr: f64,
    pub weight_decay: f64,
    /// SGD only.
    pub momentum: f64,
    /// SGD only.
    pub nesterov: bool,
}

impl Default for Optimizer {
    fn default() -> Self {
        Self { name: OptimizerName::Adamw, lr: 0.002, weight_decay: 0.05, momentum: 0.9, nesterov: false }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleName {
    Cosine,
    Step,
    Constant,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Schedule {
    pub name: ScheduleName,
    /// Linear warm-up length in epochs (fractions allowed), below `epochs`. Left out (`null`): a tenth of the run, at
    /// most one epoch ([`Schedule::warmup_for`]).
    pub warmup_epochs: Option<f64>,
    /// `step` only: epochs after which the rate is multiplied by `gamma`.
    pub milestones: Vec<u32>,
    /// `step` only.
    pub gamma: f64,
    /// `cosine` only: the rate at the end.
    pub min_lr: f64,
}

impl Default for Schedule {
    fn default() -> Self {
        Self { name: ScheduleName::Cosine, warmup_epochs: None, milestones: vec![], gamma: 0.1, min_lr: 0.0 }
    }
}

impl Schedule {
    /// The warm-up of a run of `epochs`: the spec's `warmup_epochs`, or a tenth of the run and at most one epoch. (A
    /// fixed default of one epoch made a one-epoch run warm up for the whole run and reach its rate at the last step.)
    pub fn warmup_for(&self, epochs: f64) -> f64 {
        self.warmup_epochs.unwrap_or_else(|| (epochs / 10.0).min(1.0))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LossName {
    /// Softmax cross-entropy on the first tag (the label).
    CrossEntropy,
    /// Multi-label binary cross-entropy on all tags.
    Bce,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Loss {
    pub name: LossName,
    pub label_smoothing: f64,
}

impl Default for Loss {
    fn default() -> Self {
        Self { name: LossName::CrossEntropy, label_smoothing: 0.1 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Augment {
    /// Scale range of the random resized crop, e.g. `[0.6, 1.0]`; absent = no crop.
    pub random_resized_crop: Option<[f64; 2]>,
    pub hflip: bool,
    /// Strength of brightness/contrast/saturation jitter, 0 = off.
    pub color_jitter: f64,
    /// Rotation by an angle drawn uniformly in `[-rotate, rotate]` degrees, about the crop's centre (borders
    /// repeat the edge pixels); 0 = off.
    #[serde(skip_serializing_if = "is_zero")]
    pub rotate: f64,
    /// Probability of turning an image to grey (luma, in all three channels); 0 = off.
    #[serde(skip_serializing_if = "is_zero")]
    pub grayscale: f64,
    /// Probability of painting one random box (2% to 33% of the image, aspect 0.3 to 3.3) a random solid colour;
    /// 0 = off.
    #[serde(skip_serializing_if = "is_zero")]
    pub random_erasing: f64,
    /// Mixup (per batch): images blended with the batch reversed, `λ x + (1 - λ) x_rev`, and the loss likewise;
    /// absent = off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mixup: Option<Mix>,
    /// CutMix (per batch): a box of the reversed batch pasted into each image, the loss weighted by the areas; tried
    /// before mixup. Absent = off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cutmix: Option<Mix>,
}

/// Options that are off (0) are left out when a spec is written, so specs (and their hashes) from before the option
/// existed read and hash as they did.
fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

impl Default for Augment {
    fn default() -> Self {
        Self {
            random_resized_crop: Some([0.6, 1.0]),
            hflip: true,
            color_jitter: 0.0,
            rotate: 0.0,
            grayscale: 0.0,
            random_erasing: 0.0,
            mixup: None,
            cutmix: None,
        }
    }
}

/// A batch-mixing augmentation (`augment.mixup`, `augment.cutmix`): how often and how strongly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Mix {
    /// λ ~ Beta(alpha, alpha), the share of each image (and of its label) kept; > 0.
    pub alpha: f64,
    /// Share of batches it applies to, [0, 1].
    pub prob: f64,
}

impl Default for Mix {
    fn default() -> Self {
        Self { alpha: 1.0, prob: 1.0 }
    }
}

/// An exponential moving average of the weights (`ema:`), which validation, checkpoints and so inference use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Ema {
    /// After each step `ema = d * ema + (1 - d) * weights`, `d = min(decay, (1 + n) / (10 + n))` after n updates;
    /// in (0, 1).
    pub decay: f64,
}

impl Default for Ema {
    fn default() -> Self {
        Self { decay: 0.999 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    Fp32,
    Bf16,
}

/// `auto` (a GPU when the daemon has any, else the CPU, shown), `0` (CPU) or `1` (wait for a GPU).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Gpus {
    #[default]
    Auto,
    Count(u32),
}

impl Gpus {
    /// The device a session of this spec waits for: `auto` becomes a GPU when the daemon has any GPU slot, else the
    /// CPU; `1` is a GPU, `0` the CPU. (Counts above one are refused by validation; they are treated as a GPU request
    /// here and refused by `queue::refusal` if need be.)
    pub fn device(self, daemon_has_gpu: bool) -> crate::core::queue::Device {
        use crate::core::queue::Device;
        match self {
            Gpus::Auto if daemon_has_gpu => Device::Gpu,
            Gpus::Auto | Gpus::Count(0) => Device::Cpu,
            Gpus::Count(_) => Device::Gpu,
        }
    }
}

impl Serialize for Gpus {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Gpus::Auto => s.serialize_str("auto"),
            Gpus::Count(n) => s.serialize_u32(*n),
        }
    }
}

impl<'de> Deserialize<'de> for Gpus {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u32),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(Gpus::Count(n)),
            Raw::S(s) if s == "auto" => Ok(Gpus::Auto),
            Raw::S(s) => Err(serde::de::Error::custom(format!("expected `auto`, 0 or 1, found {s:?}"))),
        }
    }
}

impl JsonSchema for Gpus {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Gpus".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "`auto`, 0 (CPU) or 1 (wait for a GPU)",
            "oneOf": [{"type": "string", "enum": ["auto"]}, {"type": "integer", "minimum": 0}]
        })
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Resources {
    pub gpus: Gpus,
}

/// A random sweep: `count` sessions, values drawn from `space` with `seed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RandomSweep {
    pub count: u32,
    #[serde(default)]
    pub seed: u64,
    /// Dotted field path -> distribution.
    pub space: BTreeMap<String, Distribution>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Distribution {
    Uniform([f64; 2]),
    LogUniform([f64; 2]),
    Choice(Vec<serde_json::Value>),
}

/// The longest memo a spec may carry.
pub const MAX_MEMO_BYTES: usize = 4096;

/// A validated experiment spec with every default filled in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Spec {
    /// A registered dataset name (`rush dataset ls`). Required.
    pub dataset: String,
    /// Free text shown by `rush ps` and the dashboard.
    pub memo: String,
    pub model: ModelName,
    /// Side of the square input in pixels.
    pub image_size: u32,
    pub batch_size: u32,
    pub epochs: u32,
    pub optimizer: Optimizer,
    pub schedule: Schedule,
    pub loss: Loss,
    pub augment: Augment,
    /// An exponential moving average of the weights, used for validation and saved as the checkpoints' weights;
    /// absent = off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ema: Option<Ema>,
    /// `bf16` runs bf16 autocast on CUDA; the CPU runs fp32.
    pub precision: Precision,
    pub resources: Resources,
    pub seed: u64,
    /// Share of packages held out for validation when the dataset does not name validation packages.
    pub valid_fraction: f64,
    pub checkpoints: RetentionPolicy,
    /// After a crash, continue from the last checkpoint.
    pub resume: bool,
    /// Higher runs first; FIFO among equals.
    pub priority: i32,
    /// One session per combination of these dotted field paths' values.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grid: Option<BTreeMap<String, Vec<serde_json::Value>>>,
    /// `count` sessions with values drawn from `space`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub random: Option<RandomSweep>,
    /// A sweep's searcher: `asha` stops its losing trials early (only with `grid:` or `random:`). The sweep's
    /// sessions keep it, so each knows its rungs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub searcher: Option<Searcher>,
    /// With the daemon's Slurm executor: this spec's overrides of the daemon's `slurm:` settings (partition,
    /// account, time limit, CPUs, memory, more sbatch options). Ignored by the local worker pool.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slurm: Option<crate::core::slurm::SlurmOverrides>,
    /// A code session (NSML's `nsml run`): the Python file it runs, relative to the code folder (`main.py`). With it
    /// the spec takes only the fields in [`CODE_FIELDS`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entry: Option<String>,
    /// A code session's folder, relative to the spec file (`../baseline`); copied into the session folder when the
    /// session is queued. Left out: the spec file's own folder. (`rush run` uploads the current folder instead.)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// A code session's own command-line arguments (`--epochs 30 --lr 0.001`), split as a POSIX shell would.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub args: String,
    /// A code session's metric that names its `best` checkpoint (default: the first reported metric whose name says
    /// both validation and accuracy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub best_metric: Option<BestMetric>,
}

/// Which reported metric decides a code session's `best` checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BestMetric {
    /// A name as the code reports it (`valid__Accuracy`).
    pub name: String,
    /// `max` (accuracies) or `min` (losses).
    #[serde(default = "BestMetric::default_mode")]
    pub mode: MetricMode,
}

impl BestMetric {
    fn default_mode() -> MetricMode {
        MetricMode::Max
    }
}

/// Whether more (`max`) or less (`min`) of a metric is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MetricMode {
    Max,
    Min,
}

/// The fields a code spec (one with `entry:`) may have: the rest configure the built-in trainer only.
pub const CODE_FIELDS: [&str; 11] = [
    "dataset",
    "memo",
    "entry",
    "code",
    "args",
    "best_metric",
    "priority",
    "resources",
    "checkpoints",
    "resume",
    "slurm",
];

impl Default for Spec {
    fn default() -> Self {
        Self {
            dataset: String::new(),
            memo: String::new(),
            model: ModelName::Resnet18,
            image_size: 128,
            batch_size: 256,
            epochs: 30,
            optimizer: Optimizer::default(),
            schedule: Schedule::default(),
            loss: Loss::default(),
            augment: Augment::default(),
            ema: None,
            precision: Precision::Bf16,
            resources: Resources::default(),
            seed: 0,
            valid_fraction: 0.1,
            checkpoints: RetentionPolicy::default(),
            resume: true,
            priority: 0,
            grid: None,
            random: None,
            searcher: None,
            slurm: None,
            entry: None,
            code: None,
            args: String::new(),
            best_metric: None,
        }
    }
}

impl Spec {
    /// Parses YAML text and validates it (sweeps included, but not expanded); `file` names the source in errors.
    /// Input over [`MAX_SPEC_BYTES`] and alias bombs are refused.
    pub fn parse(file: &str, text: &str) -> Result<Spec, SpecError> {
        let spec: Spec = yaml::from_str(file, text)?;
        if spec.entry.is_some() {
            // A code spec names only what a code session uses: a built-in trainer's field would be silently ignored.
            let written: BTreeMap<String, serde::de::IgnoredAny> = yaml::from_str(file, text)?;
            let foreign: Vec<&str> = written.keys().map(String::as_str).filter(|k| !CODE_FIELDS.contains(k)).collect();
            if let Some(first) = foreign.first() {
                return Err(SpecError::invalid(
                    file,
                    first,
                    format!(
                        "only the built-in trainer uses {}; a code session (`entry:`) takes {}",
                        foreign.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", "),
                        CODE_FIELDS.join(", ")
                    ),
                ));
            }
        }
        spec.validate(file)?;
        Ok(spec)
    }

    /// Whether this is a code session's spec (it runs the user's `entry`, not the built-in trainer).
    pub fn is_code(&self) -> bool {
        self.entry.is_some()
    }

    /// A code session's arguments as a list (`args` split as a POSIX shell would).
    pub fn arg_list(&self) -> Result<Vec<String>, SpecError> {
        shlex::split(&self.args)
            .ok_or_else(|| SpecError::invalid("spec", "args", format!("{:?}: unbalanced quotes", self.args)))
    }

    /// [`Spec::parse`] for a file's raw bytes: the size is checked before anything else, and non-UTF-8 input is an
    /// error naming the first bad byte's line and column.
    pub fn parse_bytes(file: &str, bytes: &[u8]) -> Result<Spec, SpecError> {
        Spec::parse(file, yaml::text(file, bytes)?)
    }

    /// What the watcher needs: a file's bytes to the concrete specs it queues (one, or one per sweep point).
    pub fn load(file: &str, bytes: &[u8]) -> Result<Vec<Spec>, SpecError> {
        Spec::parse_bytes(file, bytes)?.expand(file)
    }

    /// Checks values and ranges that serde cannot: the rules of `rules::RULES` in order (the same table the JSON
    /// Schema is written from), then the Slurm overrides' and the sweep's.
    pub fn validate(&self, file: &str) -> Result<(), SpecError> {
        for rule in rules::RULES {
            rule.check(self).map_err(|message| SpecError::invalid(file, rule.path, message))?;
        }
        if let Some(Err(crate::core::slurm::SlurmError::Invalid { field, message })) =
            self.slurm.as_ref().map(|o| o.validate("slurm"))
        {
            return Err(SpecError::invalid(file, &field, message));
        }
        if let Some(searcher) = &self.searcher {
            for rule in SEARCHER_RULES {
                rule.check(searcher)
                    .map_err(|message| SpecError::invalid(file, &format!("searcher.{}", rule.path), message))?;
            }
            if !self.resume || !self.checkpoints.keep_last {
                return Err(SpecError::invalid(
                    file,
                    "searcher",
                    "needs `resume: true` and `checkpoints.keep_last: true`: a trial paused at a rung resumes from its \
                     last checkpoint when promoted",
                ));
            }
        }
        self.validate_code(file)?;
        sweep::validate(self, file)
    }

    /// A code spec's own rules: a relative `.py` entry inside its folder, arguments a shell could split, the code
    /// fields only with `entry:`.
    fn validate_code(&self, file: &str) -> Result<(), SpecError> {
        let Some(entry) = &self.entry else {
            let stray = [
                ("code", self.code.is_some()),
                ("args", !self.args.is_empty()),
                ("best_metric", self.best_metric.is_some()),
            ];
            return match stray.iter().find(|(_, set)| *set) {
                Some((field, _)) => Err(SpecError::invalid(
                    file,
                    field,
                    "belongs to a code session: add `entry: main.py` (the file it runs), or leave it out",
                )),
                None => Ok(()),
            };
        };
        let inside = |p: &str| {
            let path = std::path::Path::new(p);
            !p.is_empty()
                && path.is_relative()
                && path.components().all(|c| matches!(c, std::path::Component::Normal(_)))
        };
        if !inside(entry) || !entry.ends_with(".py") {
            return Err(SpecError::invalid(
                file,
                "entry",
                format!("{entry:?} must be a `.py` file inside the code folder (a relative path without `..`)"),
            ));
        }
        if self.code.as_deref().is_some_and(str::is_empty) {
            return Err(SpecError::invalid(
                file,
                "code",
                "is empty: name a folder, or leave it out for the spec's own",
            ));
        }
        if self.args.len() > MAX_MEMO_BYTES {
            return Err(SpecError::invalid(
                file,
                "args",
                format!("is {} bytes; at most {MAX_MEMO_BYTES}", self.args.len()),
            ));
        }
        if shlex::split(&self.args).is_none() {
            return Err(SpecError::invalid(file, "args", format!("{:?}: unbalanced quotes", self.args)));
        }
        if let Some(m) = &self.best_metric
            && (m.name.is_empty() || m.name.len() > 128)
        {
            return Err(SpecError::invalid(file, "best_metric.name", "must be a metric name of 1 to 128 bytes"));
        }
        for (field, set) in [("grid", self.grid.is_some()), ("random", self.random.is_some())] {
            if set {
                return Err(SpecError::invalid(file, field, "a code session takes no sweep: pass values in `args`"));
            }
        }
        Ok(())
    }

    /// The spec's content hash (sha256 of its canonical JSON), stored with checkpoints.
    pub fn hash(&self) -> String {
        use sha2::Digest;
        let json = serde_json::to_vec(self).unwrap_or_default();
        hex::encode(sha2::Sha256::digest(&json))
    }
}

/// The spec as a session runs it: the user's spec plus what rush resolved. Written as `spec.yaml` in the session
/// folder, flat (the same field names as the user's spec, plus these).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResolvedSpec {
    /// `user/dataset/n`.
    pub session: String,
    /// Absolute path of the dataset folder (holds `train/` and `test/`).
    pub dataset_path: std::path::PathBuf,
    /// Start from these weights (a fork): path of a checkpoint's `.safetensors`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_from: Option<std::path::PathBuf>,
    /// A code session's runtime, from the daemon's config when it was queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<CodeRuntime>,
    #[serde(flatten)]
    pub spec: Spec,
}

/// How a code session's child runs: the daemon's settings when it was queued.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeRuntime {
    /// The Python interpreter (the daemon's config `python:`).
    pub python: std::path::PathBuf,
    /// Run it in the bubblewrap sandbox (`false`: the config says `sandbox: off`).
    pub sandbox: bool,
    /// Where environments built from a `requirements.txt` are cached (keyed by content).
    pub envs: std::path::PathBuf,
}

impl ResolvedSpec {
    pub fn to_yaml(&self) -> Result<String, SpecError> {
        serde_saphyr::to_string(self).map_err(|e| SpecError::Parse { file: "spec.yaml".into(), message: e.to_string() })
    }

    /// Reads a session's `spec.yaml` with the same limits and messages as [`Spec::parse`].
    pub fn from_yaml(file: &str, text: &str) -> Result<Self, SpecError> {
        let r: ResolvedSpec = yaml::from_str(file, text)?;
        r.spec.validate(file)?;
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_spec_gets_defaults() {
        let s = Spec::parse("a.yaml", "dataset: emoji\n").unwrap();
        assert_eq!(s.model, ModelName::Resnet18);
        assert_eq!(s.checkpoints.keep_best, 3);
        assert_eq!(s.resources.gpus, Gpus::Auto);
    }

    #[test]
    fn unknown_field_is_named() {
        let e = Spec::parse("exp/a.yaml", "dataset: emoji\nmodle: resnet18\n").unwrap_err().to_string();
        assert!(e.contains("exp/a.yaml") && e.contains("modle"), "{e}");
    }

    #[test]
    fn range_errors_name_the_field() {
        let e = Spec::parse("a.yaml", "dataset: emoji\noptimizer: {lr: -1}\n").unwrap_err().to_string();
        assert!(e.contains("optimizer.lr"), "{e}");
        let e = Spec::parse("a.yaml", "dataset: ../etc\n").unwrap_err().to_string();
        assert!(e.contains("`dataset`"), "{e}");
    }

    #[test]
    fn ema_mixup_and_cutmix_parse_default_and_refuse_bad_values_naming_the_field() {
        let s = Spec::parse(
            "a.yaml",
            "dataset: emoji\nema: {decay: 0.99}\naugment: {mixup: {alpha: 0.2, prob: 0.5}, cutmix: {alpha: 1.0}}\n",
        )
        .unwrap();
        assert_eq!(s.ema, Some(Ema { decay: 0.99 }));
        assert_eq!(s.augment.mixup, Some(Mix { alpha: 0.2, prob: 0.5 }));
        assert_eq!(s.augment.cutmix, Some(Mix { alpha: 1.0, prob: 1.0 }), "prob defaults to every batch");
        let s = Spec::parse("a.yaml", "dataset: emoji\nema: {}\naugment: {mixup: {}, cutmix: null}\n").unwrap();
        assert_eq!((s.ema, s.augment.mixup, s.augment.cutmix), (Some(Ema::default()), Some(Mix::default()), None));
        assert_eq!(Ema::default().decay, 0.999);
        // Off by default, and absent from the canonical JSON (so the hash of a spec without them is unchanged).
        let plain = Spec::parse("a.yaml", "dataset: emoji\n").unwrap();
        assert_eq!(
            (plain.ema.as_ref(), plain.augment.mixup.as_ref(), plain.augment.cutmix.as_ref()),
            (None, None, None)
        );
        let json = serde_json::to_string(&plain).unwrap();
        assert!(!json.contains("ema") && !json.contains("mixup") && !json.contains("cutmix"), "{json}");
        // The edges: decay in (0, 1), alpha > 0, prob in [0, 1].
        for ok in ["ema: {decay: 0.000001}", "ema: {decay: 0.999999}", "augment: {mixup: {alpha: 0.0001, prob: 0}}"] {
            assert!(Spec::parse("a.yaml", &format!("dataset: emoji\n{ok}\n")).is_ok(), "{ok}");
        }
        let cases = [
            ("ema: {decay: 1}", "a.yaml: field `ema.decay`: 1 must be in (0, 1)"),
            ("ema: {decay: 0}", "a.yaml: field `ema.decay`: 0 must be in (0, 1)"),
            ("ema: {decay: -0.5}", "a.yaml: field `ema.decay`: -0.5 must be in (0, 1)"),
            ("augment: {mixup: {alpha: 0}}", "a.yaml: field `augment.mixup.alpha`: 0 must be > 0"),
            ("augment: {mixup: {prob: 1.5}}", "a.yaml: field `augment.mixup.prob`: 1.5 must be in [0, 1]"),
            ("augment: {cutmix: {alpha: -1}}", "a.yaml: field `augment.cutmix.alpha`: -1 must be > 0"),
            ("augment: {cutmix: {prob: -0.1}}", "a.yaml: field `augment.cutmix.prob`: -0.1 must be in [0, 1]"),
            ("ema: {decay: .nan}", "a.yaml: field `ema.decay`: NaN must be in (0, 1)"),
            ("ema: {beta: 0.9}", "a.yaml:2:7: in `ema`: unknown field `beta`, expected one of decay"),
            ("ema: 0.999", "a.yaml:2:6: field `ema`: is a section, expected a mapping of its fields"),
            ("augment: {mixup: {alpha: 0.2, p: 1}}", "a.yaml:2:31: in `augment.mixup`: unknown field `p`"),
        ];
        for (text, want) in cases {
            let e = Spec::parse("a.yaml", &format!("dataset: emoji\n{text}\n")).unwrap_err().to_string();
            assert!(e.starts_with(want), "{text}: {e}");
        }
        // Built-in trainer fields: a code session refuses them.
        let e = Spec::parse("c.yaml", "dataset: emoji\nentry: main.py\nema: {decay: 0.99}\n").unwrap_err();
        assert!(e.to_string().contains("field `ema`: only the built-in trainer uses `ema`"), "{e}");
    }

    #[test]
    fn slurm_overrides_are_parsed_and_checked() {
        let s = Spec::parse("a.yaml", "dataset: emoji\nslurm: {time_limit: \"1\", memory: 2G, cpus_per_task: 1}\n")
            .unwrap();
        let o = s.slurm.unwrap();
        assert_eq!((o.time_limit.as_deref(), o.memory.as_deref(), o.cpus_per_task), (Some("1"), Some("2G"), Some(1)));
        let e = Spec::parse("a.yaml", "dataset: emoji\nslurm: {time_limit: soon}\n").unwrap_err().to_string();
        assert!(e.contains("`slurm.time_limit`") && e.contains("soon"), "{e}");
        assert!(Spec::parse("a.yaml", "dataset: emoji\nslurm: {qos: high}\n").is_err(), "unknown fields are errors");
        let plain = Spec::parse("a.yaml", "dataset: emoji\n").unwrap();
        assert!(!serde_json::to_string(&plain).unwrap().contains("slurm"), "absent overrides leave the hash alone");
    }

    #[test]
    fn parse_errors_are_one_line_with_file_line_column_and_field() {
        let cases = [
            ("dataset: emoji\nmodle: x\n", "a.yaml:2:1: unknown field `modle`, expected one of dataset, memo, model"),
            ("dataset: emoji\noptimizer:\n  lrr: 1\n", "a.yaml:3:3: in `optimizer`: unknown field `lrr`"),
            ("dataset: emoji\noptimizer:\n  lr: abc\n", "a.yaml:3:7: field `optimizer.lr`: invalid floating point"),
            ("dataset: emoji\nepochs: 99999999999\n", "a.yaml:2:9: field `epochs`: invalid u32"),
            ("dataset: emoji\nmodel: vgg\n", "a.yaml:2:8: field `model`: unknown variant `vgg`"),
            ("dataset: emoji\nresources: {gpus: x}\n", "a.yaml:2:19: field `resources.gpus`: expected `auto`, 0 or 1"),
            ("dataset: [1\n", "a.yaml:1:10: field `dataset`"),
            ("- 1\n", "a.yaml:1:1: expected a mapping of spec fields"),
            ("dataset: emoji\ndataset: x\n", "a.yaml:2:1: duplicate mapping key: dataset"),
            ("dataset: a\n---\ndataset: b\n", "a.yaml:2:1: a spec file holds one YAML document"),
            ("dataset: !!python/object:os.system emoji\n", "a.yaml:1:36: unsupported tag `!!python/object:os.system`"),
        ];
        for (text, want) in cases {
            let e = Spec::parse("a.yaml", text).unwrap_err().to_string();
            assert!(e.starts_with(want), "{text:?}: {e}");
            assert!(!e.contains("DuplicateKeyPolicy"), "{e}");
            assert!(!e.contains('\n'), "one line: {e}");
        }
    }

    #[test]
    fn hostile_input_is_refused_within_limits() {
        let big = format!("dataset: emoji\nmemo: {}\n", "x".repeat(MAX_SPEC_BYTES));
        let e = Spec::parse("big.yaml", &big).unwrap_err().to_string();
        assert!(e.starts_with(&format!("big.yaml: the file is {} bytes", big.len())), "{e}");
        assert!(Spec::parse_bytes("big.yaml", big.as_bytes()).is_err());

        let mut laughs = String::from(
            "dataset: emoji\ngrid:\n  seed: [1]\n  l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n",
        );
        for i in 1..10 {
            let p = i - 1;
            laughs += &format!("  l{i}: &l{i} [*l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}]\n");
        }
        let e = Spec::parse("bomb.yaml", &laughs).unwrap_err().to_string();
        assert!(e.starts_with("bomb.yaml:") && e.contains("parser limits"), "{e}");

        let deep = format!("dataset: emoji\ngrid: {{seed: {}1{}}}\n", "[".repeat(500), "]".repeat(500));
        let e = Spec::parse("deep.yaml", &deep).unwrap_err().to_string();
        assert!(e.contains("parser limits"), "{e}");

        let e = Spec::parse_bytes("b.yaml", b"dataset: emoji\nmemo: ab\xffcd\n").unwrap_err().to_string();
        assert_eq!(e, "b.yaml:2:9: not UTF-8 text (byte 0xff at offset 23)");
        assert!(Spec::parse_bytes("z.yaml", &[0, 159, 146, 150, 0xc3, 0x28]).is_err());
        let e = Spec::parse("m.yaml", &format!("dataset: emoji\nmemo: {}\n", "m".repeat(5000))).unwrap_err();
        assert!(e.to_string().contains("field `memo`"), "{e}");
    }

    #[test]
    fn load_parses_and_expands() {
        let specs = Spec::load("s.yaml", b"dataset: emoji\ngrid: {seed: [1, 2, 3]}\n").unwrap();
        assert_eq!(specs.iter().map(|s| s.seed).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert!(Spec::load("s.yaml", b"dataset: emoji\ngrid: {seed: [-1]}\n").is_err());
    }

    #[test]
    fn a_searcher_needs_a_sweep_that_resumes_and_every_trial_keeps_it() {
        let sweep = "dataset: emoji\nepochs: 9\ngrid: {optimizer.lr: [0.1, 0.01, 0.001]}\n";
        let asha = "searcher: {name: asha, metric: val_acc, mode: max, grace_epochs: 1, reduction_factor: 3, \
                    max_concurrent: 2}\n";
        let specs = Spec::load("s.yaml", format!("{sweep}{asha}").as_bytes()).unwrap();
        assert_eq!(specs.len(), 3);
        assert!(specs.iter().all(|s| s.searcher.as_ref().is_some_and(|x| x.max_concurrent == Some(2))));
        assert_eq!(specs[0].searcher.as_ref().unwrap().asha().rungs(9), vec![1, 3]);
        let defaults = Spec::load("s.yaml", format!("{sweep}searcher: {{}}\n").as_bytes()).unwrap();
        assert_eq!(defaults[0].searcher, Some(Searcher::default()));
        let refused = |text: String| Spec::load("s.yaml", text.as_bytes()).unwrap_err().to_string();
        let e = refused(format!("dataset: emoji\n{asha}"));
        assert!(e.contains("field `searcher`: needs a sweep"), "{e}");
        let e = refused(format!("{sweep}resume: false\n{asha}"));
        assert!(e.contains("field `searcher`: needs `resume: true`"), "{e}");
        let e = refused(format!("{sweep}searcher: {{reduction_factor: 1}}\n"));
        assert!(e.contains("field `searcher.reduction_factor`: 1 is out of range 2..=100"), "{e}");
        let e = refused(format!("{sweep}searcher: {{name: hyperband}}\n"));
        assert!(e.contains("hyperband"), "{e}");
        let e = refused(format!("{sweep}searcher: {{metric: f1}}\n"));
        assert!(e.contains("f1"), "{e}");
        let e = refused("dataset: emoji\ngrid: {searcher.grace_epochs: [1, 2]}\n".into());
        assert!(e.contains("`searcher` cannot be set here"), "{e}");
    }

    #[test]
    fn resolved_spec_round_trips_flat() {
        let spec = Spec::parse("a.yaml", "dataset: emoji\nmodel: baseline_cnn\ngrid: {seed: [1, 2]}\n").unwrap();
        let r = ResolvedSpec {
            session: "local/emoji/1".into(),
            dataset_path: "/d".into(),
            init_from: None,
            runtime: None,
            spec,
        };
        let yaml = r.to_yaml().unwrap();
        assert!(yaml.contains("session: local/emoji/1") && yaml.contains("model: baseline_cnn"), "{yaml}");
        assert_eq!(ResolvedSpec::from_yaml("spec.yaml", &yaml).unwrap(), r);
    }
}
