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

/// Builds `model` under `root` (the VarStore's root path). Parameters are created with the current torch RNG state,
/// so seed it (`tch::manual_seed`) first for a reproducible start.
pub fn build(model: ModelName, vs: &nn::VarStore) -> Box<dyn ModuleT> {
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
    module
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
