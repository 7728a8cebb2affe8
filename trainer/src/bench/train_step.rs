//! Training-step benchmark: the trainer's own pieces (`train::timing`: `train::models`, `train::optim`'s flat-buffer
//! SGD, `train::device`'s autocast and channels-last) on a batch already on the device, vs the same model, size, batch,
//! precision and optimizer in PyTorch eager (`bench/torch_train_step.py`). Both report images per second.
//!
//! `--ablation` measures each of the trainer's speed changes by turning it off alone: the flat-buffer update (against
//! tch's `nn::Sgd`, which updates one tensor at a time), reading the loss once per window (against a host sync every
//! step) and channels-last (CUDA only; the CPU always runs NCHW). Each row's ratio is the full trainer's speed over
//! the speed without that change: what the change gives.

use anyhow::Context;

use crate::train::device;
use crate::train::timing::{Stepper, Variant, Workload};
use rush::cli::bench::Row;
use rush::cli::bench::train_step::Args;

fn workload(args: &Args) -> Workload {
    Workload { model: args.model, size: args.size, batch: args.batch, warmup: args.warmup }
}

pub fn run(args: &Args) -> anyhow::Result<Vec<Row>> {
    // With --ablation --no-reference the ablation rows alone (they carry the full trainer's figure).
    let mut rows = Vec::new();
    if !(args.ablation && args.no_reference) {
        rows.push(run_against_reference(args)?);
    }
    if args.ablation {
        rows.extend(ablation(args)?);
    }
    Ok(rows)
}

/// Rounds of the ablation: each variant is timed once per round, in turn, and its best round counts, so a burst of
/// load from elsewhere or a warm-up effect does not land on one variant only.
const ABLATION_ROUNDS: usize = 3;

/// One row per speed change: the trainer without it, against the full trainer measured in the same process.
fn ablation(args: &Args) -> anyhow::Result<Vec<Row>> {
    let cvd = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    let dev = device::choose(args.device.as_deref(), cvd.as_deref(), device::CudaView::probe())?;
    let ex = device::prepare(dev, args.precision);
    let mut changes = vec![
        (
            "flat-buffer update (without: tch nn::Sgd, one tensor at a time)",
            Variant { flat_update: false, ..Variant::FULL },
        ),
        (
            "loss read once per window (without: a host sync every step)",
            Variant { deferred_loss: false, ..Variant::FULL },
        ),
    ];
    if ex.channels_last {
        changes.push(("channels-last (without: NCHW)", Variant { channels_last: false, ..Variant::FULL }));
    }
    let mut steppers = vec![Stepper::new(workload(args), ex, Variant::FULL)?];
    for (_, variant) in &changes {
        steppers.push(Stepper::new(workload(args), ex, *variant)?);
    }
    let mut best = vec![0.0f64; steppers.len()];
    for _ in 0..ABLATION_ROUNDS {
        for (stepper, best) in steppers.iter_mut().zip(&mut best) {
            *best = best.max(stepper.images_per_sec(args.steps)?);
        }
    }
    let full = best[0];
    let precision = if ex.autocast_bf16 { "bf16" } else { "fp32" };
    Ok(changes
        .iter()
        .zip(&best[1..])
        .map(|((what, _), &without)| Row {
            name: format!(
                "trainer change: {what}, {} {}px batch {} {precision} on {}, best of {ABLATION_ROUNDS}",
                args.model.as_str(),
                args.size,
                args.batch,
                device::name(dev)
            ),
            figure: format!("{without:.1} img/s without it"),
            reference: format!("{full:.1} img/s with every change"),
            ratio: Some(full / without),
            goal: "informative: the change's gain (> 1 helps)".into(),
            met: None,
        })
        .collect())
}

fn run_against_reference(args: &Args) -> anyhow::Result<Row> {
    anyhow::ensure!(args.steps > 0 && args.batch > 0 && args.size >= 32, "steps, batch > 0 and size >= 32 please");
    let cvd = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    let dev = device::choose(args.device.as_deref(), cvd.as_deref(), device::CudaView::probe())?;
    let ex = device::prepare(dev, args.precision);
    let bf16 = ex.autocast_bf16;
    // The trainer's step (as `train::run` does it) on one fixed random batch already on the device.
    let rush = Stepper::new(workload(args), ex, Variant::FULL)?.images_per_sec(args.steps)?;
    let precision = if bf16 { "bf16" } else { "fp32" };
    let name = format!(
        "train step {} {}px batch {} {} on {}",
        args.model.as_str(),
        args.size,
        args.batch,
        precision,
        device::name(dev)
    );
    let on_gpu = dev.is_cuda();
    let goal = if on_gpu { ">= 1.0x".to_string() } else { "(GPU goal >= 1.0x; CPU informative)".to_string() };
    if args.no_reference {
        return Ok(Row {
            name,
            figure: format!("{rush:.1} img/s"),
            reference: "not run".into(),
            ratio: None,
            goal,
            met: None,
        });
    }
    let mut ref_args = vec![
        "--model".to_string(),
        args.model.as_str().to_string(),
        "--size".into(),
        args.size.to_string(),
        "--batch".into(),
        args.batch.to_string(),
        "--steps".into(),
        args.steps.to_string(),
        "--warmup".into(),
        args.warmup.to_string(),
        "--precision".into(),
        precision.into(),
        "--device".into(),
        device::name(dev),
    ];
    if args.compile {
        ref_args.push("--compile".into());
    }
    let python = rush::cli::bench::python(args.python.as_ref());
    let answer = rush::cli::bench::run_reference(&python, rush::cli::bench::TORCH_TRAIN_STEP_PY, &ref_args)?;
    let torch = answer["images_per_sec"].as_f64().context("the PyTorch reference gave no images_per_sec")?;
    anyhow::ensure!(torch > 0.0, "the PyTorch reference answered {answer}");
    let ratio = rush / torch;
    Ok(Row {
        name,
        figure: format!("{rush:.1} img/s"),
        reference: format!(
            "{torch:.1} img/s (PyTorch {} eager{})",
            answer["torch"].as_str().unwrap_or("?"),
            if args.compile { " + compile" } else { "" }
        ),
        ratio: Some(ratio),
        goal,
        met: on_gpu.then_some(ratio >= 1.0),
    })
}
