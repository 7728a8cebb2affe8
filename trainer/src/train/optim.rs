//! The optimizer, ours rather than tch's: every trainable parameter and its gradient is a view into one flat buffer,
//! so an SGD or AdamW step is a handful of element-wise kernels over the whole model (tch's optimizers launch several
//! per tensor), and the optimizer state is plain flat tensors we own, which a checkpoint saves and restores exactly.
//!
//! How the views are made: each parameter tensor (shared with the modules that use it) is re-pointed into the flat
//! buffer with `set_` under no-grad, then one throw-away backward creates the gradients, which are re-pointed into the
//! flat gradient buffer the same way. Autograd then accumulates into them in place, and zeroing is one `zero_()`.
//! On CUDA the 4-D weights get channels-last strides inside the buffer.

use std::collections::HashMap;

use tch::nn::VarStore;
use tch::{Kind, Tensor};

use rush::core::spec::{Optimizer as OptimizerSpec, OptimizerName};

#[derive(Debug, thiserror::Error)]
pub enum OptimError {
    #[error("parameter {name} is {kind:?}; the optimizer needs fp32 parameters")]
    NotFloat { name: String, kind: Kind },
    #[error("the model has no trainable parameters")]
    Empty,
    #[error("gradient of {0} is no longer a view into the flat gradient buffer")]
    ViewLost(String),
    #[error("optimizer state: {0}")]
    State(String),
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

/// Where one parameter lives inside the flat buffers.
#[derive(Debug, Clone, PartialEq)]
pub struct Slot {
    pub name: String,
    pub offset: i64,
    pub size: Vec<i64>,
    pub stride: Vec<i64>,
}

impl Slot {
    fn numel(&self) -> i64 {
        self.size.iter().product()
    }
    /// This slot's view of a flat buffer laid out like the parameters.
    pub fn view(&self, flat: &Tensor) -> Tensor {
        flat.as_strided(self.size.as_slice(), self.stride.as_slice(), self.offset)
    }
}

/// The model's trainable parameters and gradients as views into two flat fp32 buffers.
#[derive(Debug)]
pub struct FlatParams {
    slots: Vec<Slot>,
    params: Vec<Tensor>,
    data: Tensor,
    grad: Tensor,
}

fn contiguous_strides(size: &[i64]) -> Vec<i64> {
    let mut stride = vec![1; size.len()];
    for i in (0..size.len().saturating_sub(1)).rev() {
        stride[i] = stride[i + 1] * size[i + 1].max(1);
    }
    stride
}

/// NHWC strides for an `[N, C, H, W]` tensor.
fn channels_last_strides(size: &[i64]) -> Vec<i64> {
    let (c, h, w) = (size[1].max(1), size[2].max(1), size[3].max(1));
    vec![c * h * w, 1, w * c, c]
}

impl FlatParams {
    /// Moves `vs`'s trainable parameters (sorted by name) into flat buffers on their device.
    pub fn new(vs: &VarStore, channels_last: bool) -> Result<Self, OptimError> {
        let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        if named.is_empty() {
            return Err(OptimError::Empty);
        }
        let mut slots = Vec::with_capacity(named.len());
        let mut offset = 0;
        for (name, t) in &named {
            if t.kind() != Kind::Float {
                return Err(OptimError::NotFloat { name: name.clone(), kind: t.kind() });
            }
            let size = t.size();
            let stride =
                if channels_last && size.len() == 4 { channels_last_strides(&size) } else { contiguous_strides(&size) };
            let slot = Slot { name: name.clone(), offset, size, stride };
            offset += slot.numel();
            slots.push(slot);
        }
        let device = vs.device();
        let data = Tensor::f_zeros([offset], (Kind::Float, device))?;
        let grad = Tensor::f_zeros([offset], (Kind::Float, device))?;
        let params: Vec<Tensor> = named.into_iter().map(|(_, t)| t).collect();
        tch::no_grad(|| -> Result<(), OptimError> {
            for (p, slot) in params.iter().zip(&slots) {
                let values = p.f_detach()?.copy();
                let mut p = p.shallow_clone();
                let _ = p.f_set_source_tensor_storage_offset_(
                    &data,
                    slot.offset,
                    slot.size.as_slice(),
                    slot.stride.as_slice(),
                )?;
                p.f_copy_(&values)?;
            }
            Ok(())
        })?;
        // A throw-away backward creates every gradient; then each is re-pointed into the flat gradient buffer.
        let zero =
            params.iter().map(|p| p.sum(Kind::Float) * 0.0).fold(Tensor::from(0f32).to_device(device), |a, b| a + b);
        zero.f_backward()?;
        tch::no_grad(|| -> Result<(), OptimError> {
            for (p, slot) in params.iter().zip(&slots) {
                let mut g = p.grad();
                let _ = g.f_set_source_tensor_storage_offset_(
                    &grad,
                    slot.offset,
                    slot.size.as_slice(),
                    slot.stride.as_slice(),
                )?;
            }
            Ok(())
        })?;
        let mut flat = Self { slots, params, data, grad };
        flat.zero_grad();
        flat.check_views()?;
        Ok(flat)
    }

    pub fn zero_grad(&mut self) {
        let _ = self.grad.zero_();
    }

    pub fn slots(&self) -> &[Slot] {
        &self.slots
    }

    pub fn numel(&self) -> i64 {
        self.data.numel() as i64
    }

    /// The flat parameter buffer (in-place updates reach the model).
    pub fn data(&self) -> &Tensor {
        &self.data
    }

    pub fn grad(&self) -> &Tensor {
        &self.grad
    }

    /// Checks that every gradient still lives in the flat buffer (autograd accumulates in place; this guards the
    /// assumption, once after the first step).
    pub fn check_views(&self) -> Result<(), OptimError> {
        let base = self.grad.data_ptr() as usize;
        for (p, slot) in self.params.iter().zip(&self.slots) {
            let g = p.grad();
            if !g.defined() || g.data_ptr() as usize != base + slot.offset as usize * 4 || g.stride() != slot.stride {
                return Err(OptimError::ViewLost(slot.name.clone()));
            }
        }
        Ok(())
    }

    /// A zero buffer laid out like the parameters (for optimizer state).
    fn zeros_like(&self) -> Tensor {
        self.data.zeros_like()
    }

    /// Per-parameter, contiguous CPU copies of a buffer laid out like the parameters, named `<prefix>.<param name>`.
    fn export(&self, prefix: &str, flat: &Tensor) -> Vec<(String, Tensor)> {
        self.slots
            .iter()
            .map(|s| (format!("{prefix}.{}", s.name), s.view(flat).to_device(tch::Device::Cpu).contiguous()))
            .collect()
    }

    /// Fills a buffer laid out like the parameters from `export`ed tensors.
    fn import(&self, prefix: &str, flat: &Tensor, tensors: &HashMap<String, Tensor>) -> Result<(), OptimError> {
        tch::no_grad(|| {
            for s in &self.slots {
                let key = format!("{prefix}.{}", s.name);
                let t = tensors.get(&key).ok_or_else(|| OptimError::State(format!("missing tensor {key}")))?;
                if t.size() != s.size {
                    return Err(OptimError::State(format!("{key} has shape {:?}, expected {:?}", t.size(), s.size)));
                }
                s.view(flat).f_copy_(t)?;
            }
            Ok(())
        })
    }
}

/// Elements per chunk of a CPU update: three fp32 chunks (parameters, gradients, momentum) are 12 MiB, within a
/// server CPU's L3, so the four passes read memory about once.
const CPU_CHUNK: i64 = 1 << 20;

/// SGD on one stretch of the flat buffers, in place, no temporaries: g += wd * p; buf = m * buf + g;
/// p += -lr * (buf, or g + m * buf with Nesterov).
fn sgd_update(data: &mut Tensor, g: &mut Tensor, buf: &mut Tensor, spec: &OptimizerSpec, wd: &Tensor, neg_lr: &Tensor) {
    if spec.weight_decay != 0.0 {
        let _ = g.addcmul_(data, wd);
    }
    let m = spec.momentum;
    let update = if m != 0.0 {
        let _ = buf.g_mul_scalar_(m).g_add_(g);
        if spec.nesterov {
            let _ = g.g_add_(&(&*buf * m));
            g.shallow_clone()
        } else {
            buf.shallow_clone()
        }
    } else {
        g.shallow_clone()
    };
    let _ = data.addcmul_(&update, neg_lr);
}

const ADAM_BETA1: f64 = 0.9;
const ADAM_BETA2: f64 = 0.999;
const ADAM_EPS: f64 = 1e-8;

#[derive(Debug)]
enum State {
    Sgd { momentum: Tensor },
    AdamW { exp_avg: Tensor, exp_avg_sq: Tensor },
}

/// SGD (momentum, Nesterov, L2 weight decay, as PyTorch's `SGD`) or AdamW (decoupled weight decay, as PyTorch's
/// `AdamW`, betas 0.9/0.999, eps 1e-8) over [`FlatParams`].
#[derive(Debug)]
pub struct Optimizer {
    spec: OptimizerSpec,
    state: State,
    /// Updates taken so far (AdamW's bias correction).
    steps: i64,
    /// 0-d tensors on the parameters' device holding the weight decay and the step's `-lr`: tch's `addcmul_` takes no
    /// scalar factor, and these make `x += a * y` one pass over the flat buffer with no temporary. `-lr` is set with
    /// `fill_` (a kernel, no host sync) each step.
    weight_decay: Tensor,
    neg_lr: Tensor,
}

impl Optimizer {
    pub fn new(spec: &OptimizerSpec, flat: &FlatParams) -> Self {
        let state = match spec.name {
            OptimizerName::Sgd => State::Sgd { momentum: flat.zeros_like() },
            OptimizerName::Adamw => State::AdamW { exp_avg: flat.zeros_like(), exp_avg_sq: flat.zeros_like() },
        };
        let device = flat.data.device();
        let weight_decay = Tensor::full([], spec.weight_decay, (Kind::Float, device));
        let neg_lr = Tensor::zeros([], (Kind::Float, device));
        Self { spec: spec.clone(), state, steps: 0, weight_decay, neg_lr }
    }

    pub fn steps(&self) -> i64 {
        self.steps
    }

    /// One update of every parameter at learning rate `lr` from the accumulated gradients.
    pub fn step(&mut self, flat: &mut FlatParams, lr: f64) {
        let wd = self.spec.weight_decay;
        self.steps += 1;
        let (weight_decay, mut neg_lr) = (&self.weight_decay, self.neg_lr.shallow_clone());
        tch::no_grad(|| match &mut self.state {
            State::Sgd { momentum } => {
                let _ = neg_lr.fill_(-lr);
                // On the CPU the buffers go by chunks that stay in cache across the four passes; on a GPU in one go
                // (one kernel per pass is the point of the flat buffer).
                let total = flat.data.numel() as i64;
                let chunk = if flat.data.device() == tch::Device::Cpu { CPU_CHUNK.min(total.max(1)) } else { total };
                let mut start = 0;
                while start < total {
                    let len = chunk.min(total - start);
                    let part = |t: &Tensor| if len == total { t.shallow_clone() } else { t.narrow(0, start, len) };
                    let (mut data, mut g, mut buf) = (part(&flat.data), part(&flat.grad), part(momentum));
                    sgd_update(&mut data, &mut g, &mut buf, &self.spec, weight_decay, &neg_lr);
                    start += len;
                }
            }
            State::AdamW { exp_avg, exp_avg_sq } => {
                let g = &flat.grad;
                if wd != 0.0 {
                    let _ = flat.data.g_mul_scalar_(1.0 - lr * wd);
                }
                let _ = exp_avg.lerp_(g, 1.0 - ADAM_BETA1);
                let _ = exp_avg_sq.g_mul_scalar_(ADAM_BETA2).addcmul_(g, &(g * (1.0 - ADAM_BETA2)));
                let t = self.steps as i32;
                let bias1 = 1.0 - ADAM_BETA1.powi(t);
                let bias2 = 1.0 - ADAM_BETA2.powi(t);
                let denom = (exp_avg_sq.sqrt() / bias2.sqrt()) + ADAM_EPS;
                let _ = flat.data.addcdiv_(&(&*exp_avg * (-lr / bias1)), &denom);
            }
        });
    }

    /// The state as named CPU tensors (per parameter, so it is readable and device-independent):
    /// `sgd.momentum.<param>` or `adamw.exp_avg.<param>` + `adamw.exp_avg_sq.<param>`, and `optimizer.steps`.
    pub fn state_tensors(&self, flat: &FlatParams) -> Vec<(String, Tensor)> {
        let mut out = match &self.state {
            State::Sgd { momentum } => flat.export("sgd.momentum", momentum),
            State::AdamW { exp_avg, exp_avg_sq } => {
                let mut v = flat.export("adamw.exp_avg", exp_avg);
                v.extend(flat.export("adamw.exp_avg_sq", exp_avg_sq));
                v
            }
        };
        out.push(("optimizer.steps".into(), Tensor::from_slice(&[self.steps])));
        out
    }

    /// Restores what [`Optimizer::state_tensors`] saved.
    pub fn load_state(&mut self, flat: &FlatParams, tensors: &HashMap<String, Tensor>) -> Result<(), OptimError> {
        let steps = tensors
            .get("optimizer.steps")
            .ok_or_else(|| OptimError::State("missing tensor optimizer.steps".into()))?
            .f_int64_value(&[0])?;
        match &self.state {
            State::Sgd { momentum } => flat.import("sgd.momentum", momentum, tensors)?,
            State::AdamW { exp_avg, exp_avg_sq } => {
                flat.import("adamw.exp_avg", exp_avg, tensors)?;
                flat.import("adamw.exp_avg_sq", exp_avg_sq, tensors)?;
            }
        }
        self.steps = steps;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;
    use tch::nn::{self, Module};

    fn spec(name: OptimizerName, lr: f64, wd: f64, momentum: f64, nesterov: bool) -> OptimizerSpec {
        OptimizerSpec { name, lr, weight_decay: wd, momentum, nesterov }
    }

    fn model() -> (VarStore, nn::Sequential) {
        tch::manual_seed(3);
        let vs = VarStore::new(Device::Cpu);
        let root = vs.root();
        let net = nn::seq()
            .add(nn::conv2d(&root / "conv", 3, 4, 3, Default::default()))
            .add_fn(|x| x.flatten(1, -1))
            .add(nn::linear(&root / "fc", 4 * 4 * 4, 5, Default::default()));
        (vs, net)
    }

    #[test]
    fn parameters_and_gradients_are_views_into_the_flat_buffers() {
        let (vs, net) = model();
        let before = vs.variables()["fc.weight"].copy();
        let mut flat = FlatParams::new(&vs, true).unwrap();
        let names: Vec<&str> = flat.slots().iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["conv.bias", "conv.weight", "fc.bias", "fc.weight"]);
        assert_eq!(flat.numel(), 4 + 4 * 3 * 9 + 5 + 5 * 64);
        // Values survived the move, and the conv weight got NHWC strides.
        assert!(vs.variables()["fc.weight"].equal(&before));
        assert_eq!(vs.variables()["conv.weight"].stride(), vec![27, 1, 9, 3]);
        // Two backwards accumulate into the flat gradient buffer in place.
        let x = Tensor::randn([2, 3, 6, 6], (Kind::Float, Device::Cpu));
        net.forward(&x).sum(Kind::Float).backward();
        let once = flat.grad().copy();
        net.forward(&x).sum(Kind::Float).backward();
        flat.check_views().unwrap();
        assert!(flat.grad().allclose(&(&once * 2.0), 1e-5, 1e-6, false));
        assert!(once.abs().sum(Kind::Float).double_value(&[]) > 0.0);
        flat.zero_grad();
        assert_eq!(vs.variables()["fc.weight"].grad().abs().sum(Kind::Float).double_value(&[]), 0.0);
        // An in-place change of the flat buffer is a change of the model.
        let _ = tch::no_grad(|| flat.data.fill_(0.5));
        assert_eq!(vs.variables()["conv.bias"].mean(Kind::Float).double_value(&[]), 0.5);
    }

    /// The same update written out per element, as PyTorch's SGD and AdamW documentation gives it.
    fn reference(spec: &OptimizerSpec, p: f64, grads: &[f64], lr: f64) -> f64 {
        let (mut p, mut buf, mut m, mut v) = (p, 0.0, 0.0, 0.0);
        for (t, &g0) in grads.iter().enumerate() {
            match spec.name {
                OptimizerName::Sgd => {
                    let g = g0 + spec.weight_decay * p;
                    buf = if t == 0 { g } else { spec.momentum * buf + g };
                    let d = if spec.nesterov { g + spec.momentum * buf } else { buf };
                    p -= lr * d;
                }
                OptimizerName::Adamw => {
                    p *= 1.0 - lr * spec.weight_decay;
                    m = ADAM_BETA1 * m + (1.0 - ADAM_BETA1) * g0;
                    v = ADAM_BETA2 * v + (1.0 - ADAM_BETA2) * g0 * g0;
                    let t = t as i32 + 1;
                    let mhat = m / (1.0 - ADAM_BETA1.powi(t));
                    let vhat = v / (1.0 - ADAM_BETA2.powi(t));
                    p -= lr * mhat / (vhat.sqrt() + ADAM_EPS);
                }
            }
        }
        p
    }

    #[test]
    fn updates_match_the_textbook_formulas() {
        let cases = [
            spec(OptimizerName::Sgd, 0.1, 0.0, 0.0, false),
            spec(OptimizerName::Sgd, 0.1, 0.01, 0.9, false),
            spec(OptimizerName::Sgd, 0.1, 0.01, 0.9, true),
            spec(OptimizerName::Adamw, 0.01, 0.05, 0.0, false),
        ];
        let grads = [0.5, -0.25, 1.0];
        for s in cases {
            let vs = VarStore::new(Device::Cpu);
            let w = vs.root().var("w", &[1], nn::Init::Const(2.0));
            let mut flat = FlatParams::new(&vs, false).unwrap();
            let mut opt = Optimizer::new(&s, &flat);
            for &g in &grads {
                flat.zero_grad();
                (&w * g).sum(Kind::Float).backward();
                opt.step(&mut flat, s.lr);
            }
            let got = w.double_value(&[0]);
            let want = reference(&s, 2.0, &grads, s.lr);
            assert!((got - want).abs() < 1e-6, "{s:?}: {got} vs {want}");
        }
    }

    /// A model bigger than one CPU chunk of the update (2.5 chunks), so the chunked path is the one tested.
    fn big_model() -> (VarStore, nn::Sequential) {
        tch::manual_seed(5);
        let vs = VarStore::new(Device::Cpu);
        let root = vs.root();
        let wide = (CPU_CHUNK * 5 / 2) / 108;
        let net = nn::seq()
            .add(nn::conv2d(&root / "conv", 3, 4, 3, Default::default()))
            .add_fn(|x| x.flatten(1, -1))
            .add(nn::linear(&root / "fc", 4 * 4 * 4, 108, Default::default()))
            .add(nn::linear(&root / "wide", 108, wide, Default::default()))
            .add(nn::linear(&root / "out", wide, 3, Default::default()));
        (vs, net)
    }

    #[test]
    fn sgd_matches_tch_per_tensor_sgd_on_a_model() {
        use tch::nn::OptimizerConfig;
        const LR: f64 = 1e-2;
        let s = spec(OptimizerName::Sgd, LR, 5e-4, 0.9, false);
        let (ours, net) = big_model();
        let (mut theirs, twin) = big_model();
        // A fixed start for both (tests run in parallel and share libtorch's random generator, so a seed is not enough).
        let mut named: Vec<(String, Tensor)> = ours.variables().into_iter().collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        tch::no_grad(|| {
            for (i, (_, v)) in named.iter_mut().enumerate() {
                let n = v.numel() as i64;
                let values = ((Tensor::arange(n, (Kind::Float, Device::Cpu)) * 0.7 + i as f64).sin() * 0.3)
                    .view(v.size().as_slice());
                v.copy_(&values);
            }
        });
        theirs.copy(&ours).unwrap();
        let start = ours.variables()["wide.weight"].copy();
        assert!(ours.trainable_variables().iter().map(|t| t.numel()).sum::<usize>() > 2 * CPU_CHUNK as usize);
        let mut flat = FlatParams::new(&ours, false).unwrap();
        let mut opt = Optimizer::new(&s, &flat);
        let mut reference =
            nn::Sgd { momentum: 0.9, dampening: 0.0, wd: 5e-4, nesterov: false }.build(&theirs, LR).unwrap();
        // A fixed input too, and a loss whose gradient moves the weights far beyond the comparison's tolerance.
        let x = Tensor::linspace(-2.0, 2.0, 2 * 3 * 6 * 6, (Kind::Float, Device::Cpu)).view([2, 3, 6, 6]);
        for _ in 0..3 {
            flat.zero_grad();
            net.forward(&x).mean(Kind::Float).backward();
            opt.step(&mut flat, LR);
            reference.zero_grad();
            twin.forward(&x).mean(Kind::Float).backward();
            reference.step();
        }
        // The weights moved (the comparison is not of two untouched models).
        let moved = (&ours.variables()["wide.weight"] - &start).abs().max().double_value(&[]);
        assert!(moved > 1e-2, "{moved}");
        let theirs = theirs.variables();
        for (name, ours) in ours.variables() {
            let diff = (&ours - &theirs[&name]).abs().max().double_value(&[]);
            assert!(diff.is_finite() && ours.allclose(&theirs[&name], 1e-5, 1e-6, false), "{name}: off by {diff}");
        }
    }

    #[test]
    fn state_round_trips_exactly() {
        let (vs, net) = model();
        let s = spec(OptimizerName::Adamw, 0.01, 0.05, 0.0, false);
        let mut flat = FlatParams::new(&vs, false).unwrap();
        let mut opt = Optimizer::new(&s, &flat);
        let x = Tensor::randn([2, 3, 6, 6], (Kind::Float, Device::Cpu));
        for _ in 0..2 {
            flat.zero_grad();
            net.forward(&x).sum(Kind::Float).backward();
            opt.step(&mut flat, 0.01);
        }
        let saved: HashMap<String, Tensor> = opt.state_tensors(&flat).into_iter().collect();
        assert!(saved.contains_key("adamw.exp_avg_sq.fc.weight"));
        let mut fresh = Optimizer::new(&s, &flat);
        fresh.load_state(&flat, &saved).unwrap();
        assert_eq!(fresh.steps(), 2);
        let again: HashMap<String, Tensor> = fresh.state_tensors(&flat).into_iter().collect();
        for (k, v) in &saved {
            assert!(again[k].equal(v), "{k}");
        }
        let mut sgd = Optimizer::new(&spec(OptimizerName::Sgd, 0.1, 0.0, 0.9, false), &flat);
        let e = sgd.load_state(&flat, &saved).unwrap_err().to_string();
        assert!(e.contains("sgd.momentum"), "{e}");
    }
}
