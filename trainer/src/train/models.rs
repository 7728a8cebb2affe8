//! The classifiers a spec can name, all with [`NUM_TAGS`] outputs: the AI RUSH baseline CNN and tch's ResNets and
//! EfficientNet-B0. Weight names are the VarStore's (`conv1.weight`, `layer1.0.bn1.running_mean`, ...), which match
//! torchvision's for the ResNets, so a checkpoint reads naturally from Python.

use tch::nn::{self, ModuleT};
use tch::{Kind, Tensor};

use rush::core::spec::ModelName;
use rush::data::layout::NUM_TAGS;

/// Channels of each baseline block.
const BASELINE_CHANNELS: i64 = 256;
/// Stride-2 blocks of the baseline.
const BASELINE_BLOCKS: usize = 5;

/// How a new model's weights start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Init {
    /// As the PyTorch model each one mirrors: torchvision's ResNets and EfficientNet draw convolutions from a normal
    /// with Kaiming's fan_out (std `sqrt(2 / fan_out)`), the baseline CNN is PyTorch's default `nn.Conv2d` (uniform in
    /// `±1/sqrt(fan_in)`, biases too), and every linear layer is PyTorch's default `nn.Linear` (the same bound).
    /// Batch-norm scales 1, shifts 0.
    Pytorch,
    /// tch's defaults (Kaiming-uniform with fan_in and ReLU's gain for every weight, zero conv biases), batch-norm
    /// scales reset to 1: the trainer's init before `rush bench recipe` (`RUSH_RECIPE_ABLATE=tch-init`).
    Tch,
}

/// Builds `model` under `root` (the VarStore's root path) with [`Init::Pytorch`]. Parameters are drawn from the
/// current torch RNG state, so seed it (`tch::manual_seed`) first for a reproducible start.
pub fn build(model: ModelName, vs: &nn::VarStore) -> Box<dyn ModuleT> {
    build_with(model, vs, Init::Pytorch)
}

/// Builds `model` with the given init.
pub fn build_with(model: ModelName, vs: &nn::VarStore, init: Init) -> Box<dyn ModuleT> {
    let root = &vs.root();
    let classes = NUM_TAGS as i64;
    let module: Box<dyn ModuleT> = match model {
        ModelName::BaselineCnn => Box::new(BaselineCnn::new(root, classes)),
        ModelName::Resnet18 => Box::new(tch::vision::resnet::resnet18(root, classes)),
        ModelName::Resnet34 => Box::new(tch::vision::resnet::resnet34(root, classes)),
        ModelName::Resnet50 => Box::new(tch::vision::resnet::resnet50(root, classes)),
        ModelName::EfficientnetB0 => Box::new(tch::vision::efficientnet::b0(root, classes)),
    };
    reset_norm_weights(vs);
    if init == Init::Pytorch {
        pytorch_init(model, vs);
    }
    module
}

/// Re-draws the weights as [`Init::Pytorch`] says. A tensor's role is read from its shape: 4-D `*.weight` is a
/// convolution, 2-D a linear layer, and a 1-D `*.bias` belongs to whichever its sibling `*.weight` is (batch-norm
/// shifts, beside 1-D scales, stay at 0).
fn pytorch_init(model: ModelName, vs: &nn::VarStore) {
    let _guard = tch::no_grad_guard();
    let vars = vs.variables();
    let mut names: Vec<&String> = vars.keys().collect();
    // A fixed order, so the draws (and the run) depend only on the seed.
    names.sort();
    let bound = |fan_in: i64| 1.0 / (fan_in.max(1) as f64).sqrt();
    for name in names {
        let mut t = vars[name].shallow_clone();
        let size = t.size();
        if name.ends_with(".weight") {
            match size.len() {
                4 if model == ModelName::BaselineCnn => {
                    let b = bound(size[1] * size[2] * size[3]);
                    let _ = t.uniform_(-b, b);
                }
                4 => {
                    // torch's fan_out: output channels times the kernel's area (also for grouped convolutions).
                    let fan_out = size[0] * size[2] * size[3];
                    let _ = t.normal_(0.0, (2.0 / fan_out.max(1) as f64).sqrt());
                }
                2 => {
                    let b = bound(size[1]);
                    let _ = t.uniform_(-b, b);
                }
                _ => {}
            }
        } else if let Some(prefix) = name.strip_suffix(".bias") {
            let Some(weight) = vars.get(&format!("{prefix}.weight")) else { continue };
            let w = weight.size();
            let fan_in = match w.len() {
                4 if model == ModelName::BaselineCnn => Some(w[1] * w[2] * w[3]),
                4 => None, // torchvision zeroes conv biases
                2 => Some(w[1]),
                _ => None,
            };
            match fan_in {
                Some(f) => {
                    let b = bound(f);
                    let _ = t.uniform_(-b, b);
                }
                None if w.len() == 4 => {
                    let _ = t.zero_();
                }
                None => {}
            }
        }
    }
}

/// tch initialises batch-norm scales uniformly in [0, 1); torchvision (and the PyTorch references we compare with)
/// start them at 1. Batch-norm scales are the only 1-D tensors named `weight` in these models.
fn reset_norm_weights(vs: &nn::VarStore) {
    let _guard = tch::no_grad_guard();
    for (name, mut tensor) in vs.variables() {
        if tensor.dim() == 1 && tensor.kind() == Kind::Float && name.ends_with(".weight") {
            let _ = tensor.fill_(1.0);
        }
    }
}

/// The AI RUSH 2019 baseline: five blocks of (3x3 stride-2 conv, 256 channels, ReLU, BatchNorm), then a 1x1 conv to
/// the logits and a global average pool.
#[derive(Debug)]
pub struct BaselineCnn {
    blocks: Vec<(nn::Conv2D, nn::BatchNorm)>,
    head: nn::Conv2D,
}

impl BaselineCnn {
    pub fn new(root: &nn::Path, classes: i64) -> Self {
        let conv = nn::ConvConfig { stride: 2, padding: 1, ..Default::default() };
        let mut blocks = Vec::with_capacity(BASELINE_BLOCKS);
        let mut channels_in = 3;
        for i in 0..BASELINE_BLOCKS {
            let p = root / "blocks" / i;
            let c = nn::conv2d(&p / "conv", channels_in, BASELINE_CHANNELS, 3, conv);
            let bn = nn::batch_norm2d(&p / "bn", BASELINE_CHANNELS, Default::default());
            blocks.push((c, bn));
            channels_in = BASELINE_CHANNELS;
        }
        let head = nn::conv2d(root / "head", BASELINE_CHANNELS, classes, 1, Default::default());
        Self { blocks, head }
    }
}

impl ModuleT for BaselineCnn {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut ys = xs.shallow_clone();
        for (conv, bn) in &self.blocks {
            ys = ys.apply(conv).relu().apply_t(bn, train);
        }
        ys.apply(&self.head).adaptive_avg_pool2d([1, 1]).flatten(1, -1)
    }
}

/// Trainable parameter count.
pub fn parameter_count(vs: &nn::VarStore) -> u64 {
    vs.trainable_variables().iter().map(|t| t.numel() as u64).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn every_model_maps_a_batch_to_350_logits() {
        tch::manual_seed(0);
        for model in ModelName::ALL {
            let vs = nn::VarStore::new(Device::Cpu);
            let net = build(model, &vs);
            let xs = Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu));
            for train in [true, false] {
                let ys = tch::no_grad(|| net.forward_t(&xs, train));
                assert_eq!(ys.size(), vec![2, NUM_TAGS as i64], "{model:?} train={train}");
                assert!(ys.isfinite().all().int64_value(&[]) == 1, "{model:?} gave non-finite logits");
            }
            assert!(parameter_count(&vs) > 100_000, "{model:?}");
        }
    }

    #[test]
    fn resnet_names_match_torchvision_and_norm_scales_start_at_one() {
        let vs = nn::VarStore::new(Device::Cpu);
        let _net = build(ModelName::Resnet18, &vs);
        let vars = vs.variables();
        assert_eq!(vars["conv1.weight"].size(), vec![64, 3, 7, 7]);
        assert_eq!(vars["fc.weight"].size(), vec![350, 512]);
        assert_eq!(vars["layer4.1.bn2.running_var"].size(), vec![512]);
        assert_eq!(vars["bn1.weight"].min().double_value(&[]), 1.0);
        // Linear biases are 1-D too but not named `weight`: they keep their init.
        assert!(vars["fc.bias"].abs().sum(Kind::Float).double_value(&[]) > 0.0);
    }

    #[test]
    fn the_pytorch_init_draws_as_torchvision_and_tch_init_as_tch() {
        let std = |t: &Tensor| t.std(true).double_value(&[]);
        let max = |t: &Tensor| t.abs().max().double_value(&[]);
        tch::manual_seed(1);
        let vs = nn::VarStore::new(Device::Cpu);
        let _net = build(ModelName::Resnet18, &vs);
        let v = vs.variables();
        // conv1 is 64x3x7x7: fan_out = 64 * 49, so std sqrt(2 / 3136) = 0.0253 (tch's fan_in would give 0.117).
        let conv1 = std(&v["conv1.weight"]);
        assert!((conv1 - 0.0253).abs() < 0.002, "conv1 std {conv1}");
        // fc is 350x512: nn.Linear's uniform bound 1/sqrt(512) = 0.0442, for the weight and the bias.
        assert!(max(&v["fc.weight"]) <= 0.0442 + 1e-6 && max(&v["fc.weight"]) > 0.04);
        assert!(max(&v["fc.bias"]) <= 0.0442 + 1e-6);
        assert_eq!(v["layer1.0.bn1.bias"].abs().sum(Kind::Float).double_value(&[]), 0.0);
        // tch's init is the earlier one. (That a seed gives one start is the resume test's, in a process of its own:
        // torch's RNG is global, shared by the tests running beside this one.)
        let old = nn::VarStore::new(Device::Cpu);
        let _ = build_with(ModelName::Resnet18, &old, Init::Tch);
        let conv1_tch = std(&old.variables()["conv1.weight"]);
        assert!((conv1_tch - (2.0f64 / 147.0).sqrt()).abs() < 0.01, "tch conv1 std {conv1_tch}");
        // The baseline's convolutions are nn.Conv2d's: uniform within 1/sqrt(fan_in), biases too.
        let base = nn::VarStore::new(Device::Cpu);
        let _ = build(ModelName::BaselineCnn, &base);
        let b = base.variables();
        let bound = 1.0 / (256.0f64 * 9.0).sqrt();
        assert!(max(&b["blocks.1.conv.weight"]) <= bound + 1e-6 && max(&b["blocks.1.conv.bias"]) > 0.0);
    }

    #[test]
    fn baseline_has_five_stride_two_blocks() {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = build(ModelName::BaselineCnn, &vs);
        let vars = vs.variables();
        assert_eq!(vars["blocks.0.conv.weight"].size(), vec![256, 3, 3, 3]);
        assert_eq!(vars["blocks.4.bn.running_mean"].size(), vec![256]);
        assert_eq!(vars["head.weight"].size(), vec![350, 256, 1, 1]);
        assert!(!vars.contains_key("blocks.5.conv.weight"));
        // 64 px halves five times to 2x2 before the head; any size works thanks to the global pool.
        let ys = tch::no_grad(|| net.forward_t(&Tensor::zeros([3, 3, 64, 48], (Kind::Float, Device::Cpu)), false));
        assert_eq!(ys.size(), vec![3, 350]);
    }
}
