//! Training-step benchmark: the trainer's own pieces (`train::models`, `train::optim`'s flat-buffer SGD,
//! `train::device`'s autocast and channels-last) on a batch already on the device, vs the same model, size, batch,
//! precision and optimizer in PyTorch eager (`bench/torch_train_step.py`). Both report images per second.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use tch::nn;
use tch::{Device, Kind, Tensor};

use super::Row;
use crate::core::spec::{ModelName, Optimizer as OptimizerSpec, OptimizerName, Precision};
use crate::data::layout::NUM_TAGS;
use crate::train::{device, models, optim};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// resnet18, resnet34, resnet50, baseline_cnn or efficientnet_b0.
    #[arg(long, default_value = "resnet18", value_parser = parse_model)]
    pub model: ModelName,
    /// Input side in pixels.
    #[arg(long, default_value_t = 64)]
    pub size: i64,
    #[arg(long, default_value_t = 32)]
    pub batch: i64,
    /// Timed steps (after the warm-up steps).
    #[arg(long, default_value_t = 10)]
    pub steps: u32,
    #[arg(long, default_value_t = 3)]
    pub warmup: u32,
    /// fp32 or bf16 (bf16 autocast applies on CUDA only).
    #[arg(long, default_value = "fp32", value_parser = parse_precision)]
    pub precision: Precision,
    /// `cpu`, `cuda` or `cuda:N` (default: the GPU if any, else the CPU).
    #[arg(long)]
    pub device: Option<String>,
    /// Also time the reference under torch.compile (GPU runs; slow to compile).
    #[arg(long)]
    pub compile: bool,
    /// Skip the PyTorch reference (rush's figure only).
    #[arg(long)]
    pub no_reference: bool,
    /// The Python with torch for the reference (default: $RUSH_PYTHON, else python3).
    #[arg(long)]
    pub python: Option<PathBuf>,
}

pub(super) fn parse_model(s: &str) -> Result<ModelName, String> {
    ModelName::ALL.into_iter().find(|m| m.as_str() == s).ok_or_else(|| {
        let names: Vec<&str> = ModelName::ALL.iter().map(|m| m.as_str()).collect();
        format!("unknown model {s:?}; one of {}", names.join(", "))
    })
}

pub(super) fn parse_precision(s: &str) -> Result<Precision, String> {
    match s {
        "fp32" => Ok(Precision::Fp32),
        "bf16" => Ok(Precision::Bf16),
        _ => Err(format!("unknown precision {s:?}; fp32 or bf16")),
    }
}

/// SGD with momentum, as the reference script uses.
fn sgd() -> OptimizerSpec {
    OptimizerSpec { name: OptimizerName::Sgd, lr: 0.1, weight_decay: 5e-4, momentum: 0.9, nesterov: false }
}

pub fn run(args: &Args) -> anyhow::Result<Row> {
    anyhow::ensure!(args.steps > 0 && args.batch > 0 && args.size >= 32, "steps, batch > 0 and size >= 32 please");
    let cvd = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    let dev = device::choose(args.device.as_deref(), cvd.as_deref(), device::CudaView::probe())?;
    let ex = device::prepare(dev, args.precision);
    let bf16 = ex.autocast_bf16;
    let rush = rush_images_per_sec(args, ex)?;
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
    let python = super::python(args.python.as_ref());
    let answer = super::run_reference(&python, super::TORCH_TRAIN_STEP_PY, &ref_args)?;
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

/// The trainer's step (as `train::run` does it) on one fixed random batch already on the device.
fn rush_images_per_sec(args: &Args, ex: device::Execution) -> anyhow::Result<f64> {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(ex.device);
    let model = models::build(args.model, &vs);
    let mut flat = optim::FlatParams::new(&vs, ex.channels_last)?;
    let mut optimizer = optim::Optimizer::new(&sgd(), &flat);
    let opts = (Kind::Float, ex.device);
    let (n, s) = (args.batch, args.size);
    // Channels-last on CUDA: an NHWC buffer seen as NCHW, as the trainer's input normalisation makes it.
    let x = if ex.channels_last {
        Tensor::randn([n, s, s, 3], opts).permute([0, 3, 1, 2])
    } else {
        Tensor::randn([n, 3, s, s], opts)
    };
    let labels = Tensor::randint(NUM_TAGS as i64, [n], (Kind::Int64, ex.device));
    let mut step = || -> Tensor {
        flat.zero_grad();
        let logits = ex.forward(|| model.forward_t(&x, true)).to_kind(Kind::Float);
        let loss = logits.cross_entropy_for_logits(&labels);
        loss.backward();
        optimizer.step(&mut flat, 0.1);
        loss.detach()
    };
    for _ in 0..args.warmup {
        let _ = step();
    }
    sync(ex.device);
    let started = Instant::now();
    let mut last = Tensor::from(0f32);
    for _ in 0..args.steps {
        last = step();
    }
    let loss = last.double_value(&[]);
    sync(ex.device);
    let secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(loss.is_finite(), "the training loss went non-finite ({loss})");
    Ok((args.steps as f64 * args.batch as f64) / secs)
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}
