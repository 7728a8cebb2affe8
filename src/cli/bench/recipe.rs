//! `rush bench recipe`: the built-in trainer against its PyTorch twin (`bench/torch_recipe.py`, torchvision's model)
//! on the emoji dataset, with the same recipe and seeds: validation accuracy per epoch (the style `packages.tsv`
//! marks `valid`, fxemoji) and test accuracy at the end (the test style, twemoji), per seed and as the mean over seeds.
//!
//! Each run's results are kept in the results folder under a key made of everything that decides them (the resolved
//! spec and the trainer binary for rush; the script and its arguments for the twin), so asking again, or for one more
//! ablation, trains only what is new. rush trains through `rush train` (the real child, on a session folder of its
//! own) and is scored on the test split through `rush infer`, as a submission would be.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};

use super::train_step::parse_model;
use crate::core::event::{Event, EventLine};
use crate::core::recipe::{ABLATE_ENV, Ablate};
use crate::core::spec::{
    Augment, Loss, LossName, ModelName, Optimizer, OptimizerName, Precision, ResolvedSpec, Schedule, ScheduleName, Spec,
};

/// The twin, compiled in so the binary runs it from anywhere.
pub const TORCH_RECIPE_PY: &str = include_str!("../../../bench/torch_recipe.py");

#[derive(Debug, clap::Args)]
pub struct Args {
    /// An emoji dataset folder built at --size (default: `rush dataset build emoji --size SIZE`, made once in the
    /// results folder).
    #[arg(long)]
    pub data: Option<PathBuf>,
    #[arg(long, default_value = "resnet18", value_parser = parse_model)]
    pub model: ModelName,
    /// Image side in pixels.
    #[arg(long, default_value_t = 32)]
    pub size: u32,
    #[arg(long, default_value_t = 15)]
    pub epochs: u32,
    #[arg(long, default_value_t = 128)]
    pub batch: u32,
    /// Seeds 0..N.
    #[arg(long, default_value_t = 2)]
    pub seeds: u64,
    /// Spec overrides of rush's side, as `rush run -a` takes them (`"augment.rotate=15 ema={decay: 0.999}"`). The
    /// twin keeps the base recipe.
    #[arg(long, short = 'a', default_value = "", allow_hyphen_values = true)]
    pub set: String,
    /// The trainer's earlier choices to restore, comma-separated (`tch-init`, `byte-augment`, `imagenet-norm`): the
    /// ablation of what made rush match the twin.
    #[arg(long, default_value = "")]
    pub ablate: String,
    /// Train rush on this device (`cpu`, `cuda`; default: the trainer's choice).
    #[arg(long)]
    pub device: Option<String>,
    /// Skip the PyTorch twin.
    #[arg(long)]
    pub no_twin: bool,
    /// Skip rush.
    #[arg(long)]
    pub no_rush: bool,
    /// Intra-op threads of both sides (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// The Python with torch and torchvision for the twin (default: $RUSH_PYTHON, else python3).
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// Where results are kept and reused (default: $RUSH_CACHE/bench/recipe).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Train again even when results with the same key are kept.
    #[arg(long)]
    pub fresh: bool,
}

/// One run's figures.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunResult {
    /// Validation accuracy after each epoch.
    pub val_acc: Vec<f64>,
    /// Training accuracy of each epoch.
    pub train_acc: Vec<f64>,
    /// Test accuracy of the last epoch's weights.
    pub test_acc: f64,
    /// Training seconds of each epoch.
    pub seconds: Vec<f64>,
}

/// The recipe's spec for rush: the issue's recipe (AdamW 0.002, weight decay 0.05, one warm-up epoch (the default
/// tenth of the run when there is only one) then cosine,
/// label smoothing 0.1, random resized crop 0.6..1, flip, colour jitter 0.2, fp32) at the given size.
pub fn base_spec(a: &Args, seed: u64) -> Spec {
    Spec {
        dataset: "emoji".into(),
        memo: "rush bench recipe".into(),
        model: a.model,
        image_size: a.size,
        batch_size: a.batch,
        epochs: a.epochs,
        optimizer: Optimizer { name: OptimizerName::Adamw, lr: 0.002, weight_decay: 0.05, ..Optimizer::default() },
        schedule: Schedule {
            name: ScheduleName::Cosine,
            warmup_epochs: (a.epochs > 1).then_some(1.0),
            ..Schedule::default()
        },
        loss: Loss { name: LossName::CrossEntropy, label_smoothing: 0.1 },
        augment: Augment {
            random_resized_crop: Some([0.6, 1.0]),
            hflip: true,
            color_jitter: 0.2,
            ..Augment::default()
        },
        precision: Precision::Fp32,
        seed,
        resume: false,
        ..Spec::default()
    }
}

fn digest(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// What identifies a binary's build: its size and modification time.
fn binary_stamp(path: &Path) -> String {
    std::fs::metadata(path).map(|m| format!("{}:{:?}", m.len(), m.modified().ok())).unwrap_or_else(|_| "unknown".into())
}

pub fn run(a: &Args) -> anyhow::Result<()> {
    let out = a.out.clone().unwrap_or_else(|| crate::home::machine_cache().join("bench").join("recipe"));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let ablate = Ablate::parse(&a.ablate).context("--ablate")?;
    let data = match &a.data {
        Some(d) => d.clone(),
        None => build_emoji(&out, a.size)?,
    };
    let data = data.canonicalize().with_context(|| format!("dataset {}", data.display()))?;
    let threads = a.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    eprintln!(
        "rush bench recipe: {} at {} px, batch {}, {} epochs, seeds 0..{} on {} (results in {})",
        a.model.as_str(),
        a.size,
        a.batch,
        a.epochs,
        a.seeds,
        data.display(),
        out.display()
    );
    let mut sides: Vec<(String, Vec<RunResult>)> = Vec::new();
    if !a.no_rush {
        let mut label = String::from("rush");
        if !a.set.trim().is_empty() {
            label += &format!(" ({})", a.set.trim());
        }
        if ablate != Ablate::default() {
            label += &format!(" [ablate {}]", ablate.to_env());
        }
        let mut runs = Vec::new();
        for seed in 0..a.seeds {
            runs.push(rush_run(a, &out, &data, seed, ablate, threads)?);
        }
        sides.push((label, runs));
    }
    if !a.no_twin {
        let mut runs = Vec::new();
        for seed in 0..a.seeds {
            runs.push(twin_run(a, &out, &data, seed, threads)?);
        }
        sides.push(("PyTorch twin".into(), runs));
    }
    print!("{}", report(&sides, a.epochs));
    Ok(())
}

/// Builds the emoji dataset at `size` into `out` once.
fn build_emoji(out: &Path, size: u32) -> anyhow::Result<PathBuf> {
    let dir = out.join(format!("emoji-{size}"));
    if dir.join("train").join("train_data").join("train_with_valid_tags.csv").is_file() {
        return Ok(dir);
    }
    let exe = std::env::current_exe().context("finding the running binary")?;
    let status = Command::new(exe)
        .args(["dataset", "build", "emoji", "--quiet", "--size", &size.to_string(), "--force", "--out"])
        .arg(&dir)
        .status()
        .context("running rush dataset build emoji")?;
    if !status.success() {
        bail!("rush dataset build emoji --size {size} failed ({status})");
    }
    Ok(dir)
}

/// A kept result when there is one under `name` (and not --fresh).
fn kept(a: &Args, file: &Path) -> Option<RunResult> {
    if a.fresh {
        return None;
    }
    serde_json::from_str(&std::fs::read_to_string(file).ok()?).ok()
}

fn keep(file: &Path, result: &RunResult) -> anyhow::Result<()> {
    let text = serde_json::to_string(result)?;
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, file).with_context(|| format!("writing {}", file.display()))?;
    Ok(())
}

fn rush_run(a: &Args, out: &Path, data: &Path, seed: u64, ablate: Ablate, threads: usize) -> anyhow::Result<RunResult> {
    let spec = crate::core::spec::apply_overrides(&base_spec(a, seed), &a.set).context("--set")?;
    spec.validate("--set").context("--set")?;
    let resolved = ResolvedSpec {
        session: format!("bench/recipe/{seed}"),
        dataset_path: data.to_path_buf(),
        init_from: None,
        runtime: None,
        spec,
    };
    let yaml = resolved.to_yaml()?;
    let exe = std::env::current_exe().context("finding the running binary")?;
    let trainer = exe.with_file_name(crate::cli::trainer::TRAINER_BIN);
    let key = digest(&[
        b"rush",
        yaml.as_bytes(),
        ablate.to_env().as_bytes(),
        a.device.as_deref().unwrap_or("").as_bytes(),
        binary_stamp(&trainer).as_bytes(),
    ]);
    let file = out.join(format!("rush-{key}.json"));
    if let Some(r) = kept(a, &file) {
        eprintln!("rush seed {seed}: kept result {} (val {:.3})", file.display(), r.val_acc.last().unwrap_or(&0.0));
        return Ok(r);
    }
    let dir = out.join("sessions").join(format!("rush-{key}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join("spec.yaml"), &yaml).with_context(|| format!("writing {}", dir.display()))?;
    eprintln!("rush seed {seed}: training in {} (train.log there)", dir.display());
    let log = std::fs::File::create(dir.join("train.log")).context("creating train.log")?;
    let mut train = Command::new(&exe);
    train.arg("train").arg(&dir).stdout(Stdio::null()).stderr(log);
    if let Some(d) = &a.device {
        train.args(["--device", d]);
    }
    let status = with_env(&mut train, ablate, threads).status().context("running rush train")?;
    let events = read_events(&dir.join("events.jsonl"))?;
    if !status.success() {
        bail!("rush train failed ({status}); see {}", dir.join("train.log").display());
    }
    let (mut val_acc, mut train_acc, mut seconds) = (Vec::new(), Vec::new(), Vec::new());
    for e in &events {
        if let Event::Epoch { val_acc: v, train_acc: t, seconds: s, .. } = e {
            val_acc.push(*v);
            train_acc.push(*t);
            seconds.push(*s);
        }
    }
    let last = val_acc.len() as u32;
    if last == 0 {
        bail!("rush train reported no epoch; see {}", dir.join("train.log").display());
    }
    let infer_out = dir.join("infer");
    let mut infer = Command::new(&exe);
    infer.arg("infer").arg(&dir).args(["--epoch", &last.to_string(), "--out"]).arg(&infer_out);
    if let Some(d) = &a.device {
        infer.args(["--device", d]);
    }
    let status = with_env(&mut infer, ablate, threads).stdout(Stdio::null()).status().context("running rush infer")?;
    if !status.success() {
        bail!("rush infer failed ({status})");
    }
    let test_acc = test_accuracy(data, &infer_out.join("test.npy"))?;
    let result = RunResult { val_acc, train_acc, test_acc, seconds };
    keep(&file, &result)?;
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("rush seed {seed}: val {:.3}, test {:.3}", result.val_acc.last().unwrap_or(&0.0), test_acc);
    Ok(result)
}

fn with_env(cmd: &mut Command, ablate: Ablate, threads: usize) -> &mut Command {
    cmd.env(ABLATE_ENV, ablate.to_env()).env("OMP_NUM_THREADS", threads.to_string())
}

fn read_events(path: &Path) -> anyhow::Result<Vec<Event>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text.lines().filter_map(|l| serde_json::from_str::<EventLine>(l).ok()).map(|l| l.event).collect())
}

/// Accuracy of the argmax of `test.npy` (rows in test order) against the first tag of each test label.
fn test_accuracy(data: &Path, npy: &Path) -> anyhow::Result<f64> {
    let labels = crate::data::layout::read_test_labels(&data.join("test").join(crate::data::layout::TEST_LABELS_CSV))?;
    let (rows, columns, values) = crate::submit::npy::read_f16_matrix(npy)?;
    if rows != labels.len() || columns == 0 {
        bail!("{}: {rows} rows for {} test labels", npy.display(), labels.len());
    }
    let correct = values
        .chunks_exact(columns)
        .zip(&labels)
        .filter(|(row, tags)| {
            let best = row.iter().enumerate().max_by(|x, y| x.1.total_cmp(y.1)).map(|(i, _)| i);
            best.is_some() && best == tags.first().map(|&t| usize::from(t))
        })
        .count();
    Ok(correct as f64 / rows as f64)
}

fn twin_run(a: &Args, out: &Path, data: &Path, seed: u64, threads: usize) -> anyhow::Result<RunResult> {
    let args: Vec<String> = [
        "--data".to_string(),
        data.display().to_string(),
        "--model".into(),
        a.model.as_str().into(),
        "--size".into(),
        a.size.to_string(),
        "--epochs".into(),
        a.epochs.to_string(),
        "--batch".into(),
        a.batch.to_string(),
        "--seed".into(),
        seed.to_string(),
        "--warmup-epochs".into(),
        base_spec(a, seed).schedule.warmup_for(f64::from(a.epochs)).to_string(),
        "--threads".into(),
        threads.to_string(),
    ]
    .into();
    let key = digest(&[b"twin", TORCH_RECIPE_PY.as_bytes(), args.join(" ").as_bytes()]);
    let file = out.join(format!("twin-{key}.json"));
    if let Some(r) = kept(a, &file) {
        eprintln!("twin seed {seed}: kept result {} (val {:.3})", file.display(), r.val_acc.last().unwrap_or(&0.0));
        return Ok(r);
    }
    let python = super::python(a.python.as_ref());
    let dir = out.join("sessions").join(format!("twin-{key}"));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let script = dir.join("torch_recipe.py");
    std::fs::write(&script, TORCH_RECIPE_PY).with_context(|| format!("writing {}", script.display()))?;
    std::fs::write(dir.join("torch_train_step.py"), super::TORCH_TRAIN_STEP_PY)?;
    eprintln!("twin seed {seed}: training ({} {})", python.display(), script.display());
    let output = Command::new(&python)
        .arg(&script)
        .args(&args)
        .env("OMP_NUM_THREADS", threads.to_string())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running the twin with {}", python.display()))?;
    if !output.status.success() {
        bail!("the twin ({}) failed: {}", python.display(), output.status);
    }
    let result = parse_twin(&String::from_utf8_lossy(&output.stdout))?;
    keep(&file, &result)?;
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("twin seed {seed}: val {:.3}, test {:.3}", result.val_acc.last().unwrap_or(&0.0), result.test_acc);
    Ok(result)
}

/// The twin's JSON lines: one per epoch, then one with `test_acc`.
pub fn parse_twin(stdout: &str) -> anyhow::Result<RunResult> {
    let mut r = RunResult { val_acc: vec![], train_acc: vec![], test_acc: f64::NAN, seconds: vec![] };
    for line in stdout.lines().filter(|l| l.trim_start().starts_with('{')) {
        let v: serde_json::Value = serde_json::from_str(line).with_context(|| format!("twin printed {line:?}"))?;
        if let Some(t) = v.get("test_acc").and_then(serde_json::Value::as_f64) {
            r.test_acc = t;
        } else if let (Some(val), Some(train)) = (v["val_acc"].as_f64(), v["train_acc"].as_f64()) {
            r.val_acc.push(val);
            r.train_acc.push(train);
            r.seconds.push(v["seconds"].as_f64().unwrap_or(0.0));
        }
    }
    if r.val_acc.is_empty() || r.test_acc.is_nan() {
        bail!("the twin printed no epoch or no test accuracy");
    }
    Ok(r)
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 { f64::NAN } else { sum / n as f64 }
}

/// The Markdown table: validation accuracy per epoch (each seed, and the mean), then the test accuracy, then the
/// seconds per epoch; and a summary line per side.
pub fn report(sides: &[(String, Vec<RunResult>)], epochs: u32) -> String {
    let mut header = vec!["epoch".to_string()];
    for (label, runs) in sides {
        for seed in 0..runs.len() {
            header.push(format!("{label} s{seed}"));
        }
        header.push(format!("{label} mean"));
    }
    let mut rows: Vec<Vec<String>> = Vec::new();
    let cell = |v: Option<f64>| v.filter(|v| v.is_finite()).map_or("-".to_string(), |v| format!("{v:.3}"));
    for e in 0..epochs as usize {
        let mut row = vec![format!("val {}", e + 1)];
        for (_, runs) in sides {
            for r in runs {
                row.push(cell(r.val_acc.get(e).copied()));
            }
            row.push(cell(Some(mean(runs.iter().filter_map(|r| r.val_acc.get(e).copied())))));
        }
        rows.push(row);
    }
    let mut test = vec!["test".to_string()];
    let mut secs = vec!["s/epoch".to_string()];
    for (_, runs) in sides {
        for r in runs {
            test.push(cell(Some(r.test_acc)));
            secs.push(format!("{:.1}", mean(r.seconds.iter().copied())));
        }
        test.push(cell(Some(mean(runs.iter().map(|r| r.test_acc)))));
        secs.push(format!("{:.1}", mean(runs.iter().flat_map(|r| r.seconds.iter().copied()))));
    }
    rows.push(test);
    rows.push(secs);
    let mut out = super::markdown(&header, &rows);
    for (label, runs) in sides {
        let val = mean(runs.iter().filter_map(|r| r.val_acc.last().copied()));
        let test = mean(runs.iter().map(|r| r.test_acc));
        out += &format!("{label}: mean over {} seed(s): validation {val:.3}, test {test:.3}\n", runs.len());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_twin_output_parses_and_bad_output_is_refused() {
        let r = parse_twin(
            "noise\n{\"epoch\": 1, \"train_acc\": 0.1, \"val_acc\": 0.2, \"seconds\": 3.0}\n\
             {\"epoch\": 2, \"train_acc\": 0.3, \"val_acc\": 0.4, \"seconds\": 3.0}\n{\"test_acc\": 0.5}\n",
        )
        .unwrap();
        assert_eq!(r.val_acc, vec![0.2, 0.4]);
        assert_eq!(r.test_acc, 0.5);
        assert!(parse_twin("{\"test_acc\": 0.5}\n").is_err());
        assert!(parse_twin("{\"epoch\": 1, \"train_acc\": 0.1, \"val_acc\": 0.2}\n").is_err());
    }

    #[test]
    fn the_report_has_a_row_per_epoch_and_the_means() {
        let run = |v: [f64; 2], t: f64| RunResult {
            val_acc: v.to_vec(),
            train_acc: vec![0.0; 2],
            test_acc: t,
            seconds: vec![2.0; 2],
        };
        let sides = vec![("rush".to_string(), vec![run([0.1, 0.3], 0.2), run([0.2, 0.5], 0.4)])];
        let text = report(&sides, 2);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].contains("rush s0") && lines[0].contains("rush mean"), "{text}");
        assert!(lines[3].starts_with("| val 2") && lines[3].contains("0.400"), "{text}");
        assert!(lines[4].contains("0.300"), "test mean: {text}");
        assert!(text.contains("rush: mean over 2 seed(s): validation 0.400, test 0.300"), "{text}");
    }

    #[test]
    fn the_base_spec_is_the_issue_recipe_and_valid() {
        let a = Args {
            data: None,
            model: ModelName::Resnet18,
            size: 32,
            epochs: 15,
            batch: 128,
            seeds: 2,
            set: String::new(),
            ablate: String::new(),
            device: None,
            no_twin: false,
            no_rush: false,
            threads: None,
            python: None,
            out: None,
            fresh: false,
        };
        let s = base_spec(&a, 1);
        s.validate("recipe").unwrap();
        assert_eq!((s.optimizer.lr, s.optimizer.weight_decay, s.loss.label_smoothing), (0.002, 0.05, 0.1));
        assert_eq!((s.precision, s.seed, s.augment.color_jitter), (Precision::Fp32, 1, 0.2));
    }
}
