//! The trainer's step timed on one fixed random batch already on the device, for `rush bench train-step`: the
//! trainer's own pieces (`models`, `optim`'s flat-buffer SGD, `device`'s autocast and channels-last), with each of its
//! speed changes able to be turned off alone ([`Variant`]) for the ablation.

use std::time::Instant;

use tch::nn;
use tch::{Device, Kind, Tensor};

use super::{device, models, optim};
use rush::core::spec::{ModelName, Optimizer as OptimizerSpec, OptimizerName};
use rush::data::layout::NUM_TAGS;

/// Why a timed step failed.
#[derive(Debug, thiserror::Error)]
pub enum TimingError {
    #[error(transparent)]
    Optim(#[from] optim::OptimError),
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    #[error("the training loss went non-finite ({0})")]
    NonFinite(f64),
}

/// What is stepped: the model, the input side and the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workload {
    pub model: ModelName,
    pub size: i64,
    pub batch: i64,
    /// Untimed steps first.
    pub warmup: u32,
}

/// SGD with momentum, as the reference script uses.
pub fn sgd() -> OptimizerSpec {
    OptimizerSpec { name: OptimizerName::Sgd, lr: 0.1, weight_decay: 5e-4, momentum: 0.9, nesterov: false }
}

/// How the step runs: the trainer's way is every field true (channels-last where the device takes it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Variant {
    /// Parameters and gradients in one flat buffer, one fused update; else tch's `nn::Sgd`, tensor by tensor.
    pub flat_update: bool,
    /// The loss stays on the device until the end of the window; else it is read (a host sync) every step.
    pub deferred_loss: bool,
    /// NHWC inputs and 4-D weights (CUDA only).
    pub channels_last: bool,
}

impl Variant {
    pub const FULL: Variant = Variant { flat_update: true, deferred_loss: true, channels_last: true };
}

/// A model, its update and one fixed batch on the device, stepped the trainer's way or with one change turned off.
pub struct Stepper {
    ex: device::Execution,
    variant: Variant,
    model: Box<dyn nn::ModuleT>,
    update: Update,
    x: Tensor,
    labels: Tensor,
    /// Keeps the parameters alive.
    _vs: nn::VarStore,
}

impl Stepper {
    /// Builds the model and runs `work.warmup` steps.
    pub fn new(work: Workload, ex: device::Execution, variant: Variant) -> Result<Stepper, TimingError> {
        let ex = device::Execution { channels_last: ex.channels_last && variant.channels_last, ..ex };
        tch::manual_seed(0);
        let vs = nn::VarStore::new(ex.device);
        let model = models::build(work.model, &vs);
        let update = if variant.flat_update {
            let flat = optim::FlatParams::new(&vs, ex.channels_last)?;
            let optimizer = optim::Optimizer::new(&sgd(), &flat);
            Update::Flat(flat, optimizer)
        } else {
            if ex.channels_last {
                tch::no_grad(|| {
                    for mut t in vs.trainable_variables().into_iter().filter(|t| t.dim() == 4) {
                        let nhwc = t.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2]);
                        t.set_data(&nhwc);
                    }
                });
            }
            let spec = sgd();
            let sgd =
                nn::Sgd { momentum: spec.momentum, dampening: 0.0, wd: spec.weight_decay, nesterov: spec.nesterov };
            Update::PerTensor(nn::OptimizerConfig::build(sgd, &vs, spec.lr)?)
        };
        let opts = (Kind::Float, ex.device);
        let (n, s) = (work.batch, work.size);
        // Channels-last on CUDA: an NHWC buffer seen as NCHW, as the trainer's input normalisation makes it.
        let x = if ex.channels_last {
            Tensor::randn([n, s, s, 3], opts).permute([0, 3, 1, 2])
        } else {
            Tensor::randn([n, 3, s, s], opts)
        };
        let labels = Tensor::randint(NUM_TAGS as i64, [n], (Kind::Int64, ex.device));
        let mut stepper = Stepper { ex, variant, model, update, x, labels, _vs: vs };
        for _ in 0..work.warmup {
            let _ = stepper.step()?;
        }
        sync(ex.device);
        Ok(stepper)
    }

    /// One training step; returns the loss, still on the device unless the variant reads it every step.
    fn step(&mut self) -> Result<Tensor, TimingError> {
        self.update.zero_grad();
        let logits = self.ex.forward(|| self.model.forward_t(&self.x, true)).to_kind(Kind::Float);
        let loss = logits.cross_entropy_for_logits(&self.labels);
        loss.backward();
        self.update.step();
        if !self.variant.deferred_loss {
            let value = loss.double_value(&[]);
            if !value.is_finite() {
                return Err(TimingError::NonFinite(value));
            }
        }
        Ok(loss.detach())
    }

    /// Times `steps` steps (the device synchronised at both ends).
    pub fn images_per_sec(&mut self, steps: u32) -> Result<f64, TimingError> {
        sync(self.ex.device);
        let started = Instant::now();
        let mut last = Tensor::from(0f32);
        for _ in 0..steps {
            last = self.step()?;
        }
        let loss = last.double_value(&[]);
        sync(self.ex.device);
        let secs = started.elapsed().as_secs_f64();
        if !loss.is_finite() {
            return Err(TimingError::NonFinite(loss));
        }
        Ok((steps as f64 * self.x.size()[0] as f64) / secs)
    }
}

/// The parameter update under test.
enum Update {
    Flat(optim::FlatParams, optim::Optimizer),
    PerTensor(nn::Optimizer),
}

impl Update {
    fn zero_grad(&mut self) {
        match self {
            Update::Flat(flat, _) => flat.zero_grad(),
            Update::PerTensor(opt) => opt.zero_grad(),
        }
    }

    fn step(&mut self) {
        match self {
            Update::Flat(flat, optimizer) => optimizer.step(flat, 0.1),
            Update::PerTensor(opt) => opt.step(),
        }
    }
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}
