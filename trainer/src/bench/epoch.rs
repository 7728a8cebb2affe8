//! End-to-end epoch benchmark: `rush train` (a real child process, started as the daemon starts it: through `rush`,
//! which execs `rush-train`) on synthetic AI RUSH-like sticker PNGs
//! vs a standard PyTorch pipeline (`bench/torch_epoch.py`: DataLoader workers, PIL decode) with the same model, size,
//! batch, precision and optimizer. Reports the first epoch (rush: including building the decoded-image cache and
//! everything before the first step) and the later ones, with the time each side's training loop waited for data.
//!
//! rush's training time per epoch is the sum of its `step` events' windows (images / img_per_s), so validation and
//! checkpoint writing, which the reference does not do, are left out.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::Context;

use crate::train::device;
use rush::cli::bench::Row;
use rush::cli::bench::epoch::Args;
use rush::core::event::{Event, EventLine};
use rush::core::spec::{ModelName, Precision, ResolvedSpec, Spec};

/// Issue 7's goals after the first epoch, on an H200 at 128 px: (model, img/s).
const GOALS: [(ModelName, f64); 2] = [(ModelName::Resnet50, 9_000.0), (ModelName::Resnet18, 25_000.0)];

/// One epoch as measured.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EpochFigure {
    pub images: f64,
    pub seconds: f64,
    pub data_wait: f64,
}

impl EpochFigure {
    pub fn rate(&self) -> f64 {
        if self.seconds > 0.0 { self.images / self.seconds } else { 0.0 }
    }
}

/// rush's epochs from its event stream: training time per epoch from the `step` windows, data wait from `epoch`.
pub fn epochs_from_events(events: &[Event], batch: u32) -> Vec<EpochFigure> {
    let mut out: Vec<EpochFigure> = Vec::new();
    let mut steps_per_epoch = 0u64;
    let mut prev = 0u64;
    for event in events {
        match event {
            Event::Started { steps_per_epoch: s, start_epoch, .. } => {
                steps_per_epoch = *s;
                prev = u64::from(start_epoch.saturating_sub(1)) * s;
            }
            Event::Step { step, epoch, img_per_s, .. } => {
                let index = (*epoch as usize).saturating_sub(1);
                while out.len() <= index {
                    out.push(EpochFigure::default());
                }
                let images = (step.saturating_sub(prev) * u64::from(batch)) as f64;
                out[index].images += images;
                if *img_per_s > 0.0 {
                    out[index].seconds += images / img_per_s;
                }
                prev = *step;
            }
            Event::Epoch { epoch, data_wait_s, .. } => {
                if let Some(e) = out.get_mut((*epoch as usize).saturating_sub(1)) {
                    e.data_wait = data_wait_s.unwrap_or(0.0);
                }
                prev = u64::from(*epoch) * steps_per_epoch;
            }
            _ => {}
        }
    }
    out
}

pub fn run(args: &Args) -> anyhow::Result<Vec<Row>> {
    anyhow::ensure!(args.epochs >= 2, "--epochs must be at least 2 (the first, then the later ones)");
    let cvd = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    let dev = device::choose(args.device.as_deref(), cvd.as_deref(), device::CudaView::probe())?;
    let gpu = dev.is_cuda();
    let model = args.model.unwrap_or(if gpu { ModelName::Resnet50 } else { ModelName::BaselineCnn });
    let size = args.size.unwrap_or(if gpu { 128 } else { 32 });
    let batch = args.batch.unwrap_or(if gpu { 256 } else { 64 });
    let images = args.images.unwrap_or(if gpu { 100_000 } else { 800 });
    let tmp = std::env::temp_dir().join(format!("rush-bench-epoch-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let result = measure(args, &tmp, dev, model, size, batch, images);
    if args.keep {
        eprintln!("rush bench: kept {}", tmp.display());
    } else {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

fn measure(
    args: &Args,
    tmp: &Path,
    dev: crate::train::device::Device,
    model: ModelName,
    size: u32,
    batch: u32,
    images: u64,
) -> anyhow::Result<Vec<Row>> {
    // `rush` beside this `rush-train`: it runs `dataset synth` and hands `train` back to rush-train.
    let exe = rush::cli::trainer::sibling(rush::cli::trainer::RUSH_BIN)?;
    let dataset = match &args.dataset {
        Some(d) => d.clone(),
        None => {
            let out = tmp.join("stickers");
            let started = Instant::now();
            let status = Command::new(&exe)
                .args(["dataset", "synth", "--quiet", "--test", "0", "--valid-fraction", "0.02", "--train"])
                .arg(images.to_string())
                .arg("--out")
                .arg(&out)
                .status()
                .context("running rush dataset synth")?;
            anyhow::ensure!(status.success(), "rush dataset synth failed: {status}");
            eprintln!("rush bench: synthesised {images} stickers in {:.1} s", started.elapsed().as_secs_f64());
            out
        }
    };
    let gpu = dev.is_cuda();
    // bf16 on the GPU, and on a CPU with native bf16 (`device::CpuBf16`); otherwise fp32, on both sides.
    let precision = match args.precision {
        Precision::Bf16 if gpu || matches!(device::CpuBf16::here(), device::CpuBf16::Autocast(_)) => "bf16",
        _ => "fp32",
    };
    let yaml = format!(
        "dataset: bench\nmodel: {}\nimage_size: {size}\nbatch_size: {batch}\nepochs: {}\nprecision: {precision}\n\
         valid_fraction: 0.02\noptimizer: {{name: sgd, lr: 0.1, momentum: 0.9, weight_decay: 0.0005}}\n\
         schedule: {{name: constant, warmup_epochs: 0}}\n\
         augment: {{random_resized_crop: [0.6, 1.0], hflip: true, color_jitter: 0}}\n",
        model.as_str(),
        args.epochs
    );
    let spec = Spec::parse("bench.yaml", &yaml)?;
    let session = tmp.join("session");
    std::fs::create_dir_all(&session).with_context(|| format!("creating {}", session.display()))?;
    let resolved = ResolvedSpec {
        session: "bench/bench/1".into(),
        dataset_path: dataset.clone(),
        init_from: None,
        runtime: None,
        spec,
    };
    std::fs::write(session.join("spec.yaml"), resolved.to_yaml()?).context("writing the session's spec")?;

    let log = tmp.join("train.log");
    let started = Instant::now();
    let mut child = Command::new(&exe)
        .arg("train")
        .arg(&session)
        .arg("--device")
        .arg(device::name(dev))
        .env("RUSH_IMAGE_CACHE", tmp.join("cache"))
        .env("RUSH_DEVICE_DATA", &args.resident)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?)
        .spawn()
        .context("starting rush train")?;
    let stdout = child.stdout.take().context("the child's stdout")?;
    let mut events = Vec::new();
    let mut setup = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading the child's events")?;
        let Ok(parsed) = EventLine::parse(&line) else { continue };
        if matches!(parsed.event, Event::Started { .. }) {
            setup = Some(started.elapsed().as_secs_f64());
        }
        events.push(parsed.event);
    }
    let status = child.wait().context("waiting for rush train")?;
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    anyhow::ensure!(status.success(), "rush train failed ({status}):\n{log_text}");
    let setup = setup.context("rush train never started")?;
    let path = log_text.lines().find(|l| l.contains("rush train: data:")).unwrap_or("").to_string();
    eprintln!("rush bench: {}", path.trim_start_matches("rush train: "));
    let rush = epochs_from_events(&events, batch);
    anyhow::ensure!(rush.len() == args.epochs as usize, "rush train reported {} epochs", rush.len());

    let reference = if args.no_reference {
        None
    } else {
        let workers = args.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let python = rush::cli::bench::python(args.python.as_ref());
        let mut ref_args = vec!["--dataset".to_string(), dataset.display().to_string()];
        for (k, v) in [
            ("--model", model.as_str().to_string()),
            ("--size", size.to_string()),
            ("--batch", batch.to_string()),
            ("--epochs", args.epochs.to_string()),
            ("--workers", workers.to_string()),
            ("--precision", precision.to_string()),
            ("--device", if gpu { "cuda".to_string() } else { "cpu".to_string() }),
            ("--limit", args.reference_images.unwrap_or(if gpu { 0 } else { 400 }).to_string()),
        ] {
            ref_args.push(k.to_string());
            ref_args.push(v);
        }
        let answer = rush::cli::bench::run_reference_files(
            &python,
            ("torch_epoch.py", rush::cli::bench::TORCH_EPOCH_PY),
            &[("torch_train_step.py", rush::cli::bench::TORCH_TRAIN_STEP_PY)],
            &ref_args,
        )?;
        let epochs: Vec<EpochFigure> = answer["epochs"]
            .as_array()
            .context("the reference gave no epochs")?
            .iter()
            .map(|e| EpochFigure {
                images: e["images"].as_f64().unwrap_or(0.0),
                seconds: e["seconds"].as_f64().unwrap_or(0.0),
                data_wait: e["data_wait"].as_f64().unwrap_or(0.0),
            })
            .collect();
        anyhow::ensure!(epochs.len() == args.epochs as usize, "the reference answered {answer}");
        Some((epochs, workers, answer["torch"].as_str().unwrap_or("?").to_string()))
    };

    let first = EpochFigure { seconds: setup + rush[0].seconds, ..rush[0] };
    let later = mean(&rush[1..]);
    let where_ = format!(
        "{} {size}px batch {batch} {precision} on {}, {:.0} images/epoch{}",
        model.as_str(),
        device::name(dev),
        rush[0].images,
        if gpu { "" } else { " (CPU: small N on the 2-core box)" }
    );
    let goal = GOALS.iter().find(|(m, _)| *m == model).filter(|_| size == 128).map(|&(_, g)| g);
    let describe = |e: &EpochFigure| format!("{:.0} img/s, data wait {:.1} s", e.rate(), e.data_wait);
    let row =
        |name: String, ours: &EpochFigure, theirs: Option<&EpochFigure>, goal_text: String, met: Option<bool>| Row {
            name,
            figure: describe(ours),
            reference: match (&reference, theirs) {
                (Some((_, workers, torch)), Some(t)) => {
                    format!("{} (PyTorch {torch} DataLoader, {workers} workers, PIL)", describe(t))
                }
                _ => "not run".into(),
            },
            ratio: theirs.filter(|t| t.rate() > 0.0).map(|t| ours.rate() / t.rate()),
            goal: goal_text,
            met,
        };
    let ref_first = reference.as_ref().map(|(e, _, _)| e[0]);
    let ref_later = reference.as_ref().map(|(e, _, _)| mean(&e[1..]));
    Ok(vec![
        row(
            format!("epoch 1 incl. cache build + start-up ({setup:.1} s), {where_}"),
            &first,
            ref_first.as_ref(),
            "informative".into(),
            None,
        ),
        row(
            format!("epochs 2..{}, {where_}", args.epochs),
            &later,
            ref_later.as_ref(),
            match goal {
                Some(g) => format!(">= {g:.0} img/s on an H200"),
                None => "informative (goals: resnet50/resnet18 at 128 px)".into(),
            },
            goal.filter(|_| gpu).map(|g| later.rate() >= g),
        ),
    ])
}

fn mean(epochs: &[EpochFigure]) -> EpochFigure {
    let n = epochs.len().max(1) as f64;
    EpochFigure {
        images: epochs.iter().map(|e| e.images).sum::<f64>() / n,
        seconds: epochs.iter().map(|e| e.seconds).sum::<f64>() / n,
        data_wait: epochs.iter().map(|e| e.data_wait).sum::<f64>() / n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_add_up_the_step_windows() {
        let started = Event::Started {
            device: "cpu".into(),
            params: 1,
            train_size: 40,
            valid_size: 4,
            classes: 2,
            epochs: 2,
            steps_per_epoch: 4,
            start_epoch: 1,
        };
        let step = |step, epoch, img_per_s| Event::Step { step, epoch, loss: 1.0, lr: 0.1, img_per_s, data_wait: 0.0 };
        let epoch = |epoch, w| Event::Epoch {
            epoch,
            train_loss: 1.0,
            train_acc: 0.5,
            val_loss: 1.0,
            val_acc: 0.5,
            seconds: 9.0,
            data_wait: 0.1,
            data_wait_s: Some(w),
        };
        let events = [started, step(2, 1, 20.0), step(4, 1, 10.0), epoch(1, 0.5), step(8, 2, 40.0), epoch(2, 0.25)];
        let got = epochs_from_events(&events, 10);
        assert_eq!(got.len(), 2);
        // Epoch 1: 20 images at 20/s + 20 at 10/s = 3 s.
        assert_eq!(got[0], EpochFigure { images: 40.0, seconds: 3.0, data_wait: 0.5 });
        assert_eq!(got[1], EpochFigure { images: 40.0, seconds: 1.0, data_wait: 0.25 });
        assert_eq!(got[1].rate(), 40.0);
    }
}
