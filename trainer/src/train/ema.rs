//! An exponential moving average of the weights (`ema: {decay}`), as timm's `ModelEma`: a shadow copy of every
//! trainable parameter and of the batch-norm running statistics, moved towards the live weights after each optimizer
//! step, `ema = d * ema + (1 - d) * weights` with the warm-up `d = min(decay, (1 + n) / (10 + n))` after n updates
//! (so the first steps do not drag the random initialisation along). Integer buffers, if a model has any, are copied.
//!
//! The shadow is laid out like the live weights: the parameters' flat buffer (`optim::FlatParams`), and one flat
//! buffer that the model's float buffers are re-pointed into here (the way `FlatParams` does it for parameters; the
//! batch-norm kernels update them in place, so they stay views). An update is then one `lerp_` over each buffer: two
//! kernels per step whatever the model, and no host sync (the factor is computed on the host from the count).
//!
//! Validation and the checkpoint's weights file use the average: [`Ema::swap`] exchanges live and shadow values
//! (exact copies), and swaps back afterwards. So `rush infer`, ensembles and forks read the EMA weights with no change
//! on their side. The raw weights and the update count go into the checkpoint's state file ([`Ema::state_tensors`]),
//! and the shadow is the weights file itself, so a resumed run continues bit for bit ([`Ema::resume`]).

use std::collections::HashMap;

use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use crate::train::optim::{FlatParams, Slot};

/// The prefix of the raw (live) weights in a state file: `raw.<variable name>`.
pub const RAW_PREFIX: &str = "raw";
/// The state file's update count.
pub const UPDATES: &str = "ema.updates";

#[derive(Debug, thiserror::Error)]
pub enum EmaError {
    #[error("buffer {0} is no longer a view into the EMA's flat buffer")]
    ViewLost(String),
    #[error("state: {0}")]
    State(String),
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

/// The decay of update `n` (0-based): `min(decay, (1 + n) / (10 + n))`.
pub fn decay_at(decay: f64, n: i64) -> f64 {
    let n = n.max(0) as f64;
    decay.min((1.0 + n) / (10.0 + n))
}

/// Weights laid out in one flat buffer (`slots` name each view), and their shadow laid out the same.
#[derive(Debug)]
struct Region {
    slots: Vec<Slot>,
    live: Tensor,
    shadow: Tensor,
}

impl Region {
    fn new(slots: Vec<Slot>, live: &Tensor) -> Self {
        let shadow = tch::no_grad(|| live.detach().copy());
        Self { slots, live: live.shallow_clone(), shadow }
    }
}

/// The moving average of a model's weights.
#[derive(Debug)]
pub struct Ema {
    decay: f64,
    /// Updates so far (the warm-up's n).
    updates: i64,
    params: Region,
    /// The float buffers (batch-norm running mean and variance), re-pointed into one flat buffer; `None` without any.
    buffers: Option<Region>,
    /// The model's buffer tensors, as `buffers`' slots list them (to check they stay views).
    buffer_vars: Vec<Tensor>,
    /// Other buffers (integer counters): (name, live, shadow), copied rather than averaged.
    others: Vec<(String, Tensor, Tensor)>,
    /// Whether the live weights hold the average now (and the shadow the raw weights).
    swapped: bool,
}

fn contiguous_strides(size: &[i64]) -> Vec<i64> {
    let mut stride = vec![1; size.len()];
    for i in (0..size.len().saturating_sub(1)).rev() {
        stride[i] = stride[i + 1] * size[i + 1].max(1);
    }
    stride
}

impl Ema {
    /// Starts the average at the model's current weights: `flat` holds its parameters, `vs` its buffers (the
    /// non-trainable variables), whose float ones are moved into one flat buffer here.
    pub fn new(decay: f64, vs: &VarStore, flat: &FlatParams) -> Result<Self, EmaError> {
        let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().filter(|(_, t)| !t.requires_grad()).collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let (floats, others): (Vec<_>, Vec<_>) = named.into_iter().partition(|(_, t)| t.kind() == Kind::Float);
        let mut slots = Vec::with_capacity(floats.len());
        let mut offset = 0;
        for (name, t) in &floats {
            let size = t.size();
            let slot = Slot { name: name.clone(), offset, stride: contiguous_strides(&size), size };
            offset += slot.size.iter().product::<i64>();
            slots.push(slot);
        }
        let buffers = if floats.is_empty() {
            None
        } else {
            let data = Tensor::f_zeros([offset], (Kind::Float, vs.device()))?;
            tch::no_grad(|| -> Result<(), EmaError> {
                for ((_, t), slot) in floats.iter().zip(&slots) {
                    let values = t.f_detach()?.copy();
                    let mut t = t.shallow_clone();
                    let _ = t.f_set_source_tensor_storage_offset_(
                        &data,
                        slot.offset,
                        slot.size.as_slice(),
                        slot.stride.as_slice(),
                    )?;
                    t.f_copy_(&values)?;
                }
                Ok(())
            })?;
            Some(Region::new(slots, &data))
        };
        let others = others
            .into_iter()
            .map(|(name, live)| {
                let shadow = live.detach().copy();
                (name, live, shadow)
            })
            .collect();
        let ema = Self {
            decay,
            updates: 0,
            params: Region::new(flat.slots().to_vec(), flat.data()),
            buffers,
            buffer_vars: floats.into_iter().map(|(_, t)| t).collect(),
            others,
            swapped: false,
        };
        ema.check_views()?;
        Ok(ema)
    }

    pub fn decay(&self) -> f64 {
        self.decay
    }

    pub fn updates(&self) -> i64 {
        self.updates
    }

    fn regions(&mut self) -> impl Iterator<Item = &mut Region> {
        std::iter::once(&mut self.params).chain(self.buffers.as_mut())
    }

    /// Moves the average towards the live weights (after an optimizer step): one `lerp_` per flat buffer.
    pub fn update(&mut self) {
        debug_assert!(!self.swapped, "an EMA update while the average is swapped in");
        let weight = 1.0 - decay_at(self.decay, self.updates);
        self.updates += 1;
        tch::no_grad(|| {
            for region in self.regions() {
                let _ = region.shadow.lerp_(&region.live, weight);
            }
            for (_, live, shadow) in &mut self.others {
                shadow.copy_(live);
            }
        });
    }

    /// Exchanges the live weights and the average (exact copies): call once to validate and save the average, and
    /// again to go on training the raw weights.
    pub fn swap(&mut self) {
        let exchange = |live: &Tensor, shadow: &Tensor| {
            let held = live.copy();
            let (mut live, mut shadow) = (live.shallow_clone(), shadow.shallow_clone());
            live.copy_(&shadow);
            shadow.copy_(&held);
        };
        tch::no_grad(|| {
            for region in self.regions() {
                exchange(&region.live, &region.shadow);
            }
            for (_, live, shadow) in &self.others {
                exchange(live, shadow);
            }
        });
        self.swapped = !self.swapped;
    }

    /// Whether the live weights hold the average now.
    pub fn is_swapped(&self) -> bool {
        self.swapped
    }

    /// Checks that every float buffer of the model still lives in the flat buffer (the batch-norm kernels update
    /// them in place; this guards the assumption, as `FlatParams::check_views` does for gradients).
    pub fn check_views(&self) -> Result<(), EmaError> {
        let Some(region) = &self.buffers else { return Ok(()) };
        let base = region.live.data_ptr() as usize;
        for (t, slot) in self.buffer_vars.iter().zip(&region.slots) {
            if t.data_ptr() as usize != base + slot.offset as usize * 4 || t.stride() != slot.stride {
                return Err(EmaError::ViewLost(slot.name.clone()));
            }
        }
        Ok(())
    }

    /// What a state file keeps for an exact resume: the raw weights (every variable, as `raw.<name>`: the live ones,
    /// or the shadow while the average is swapped in) and the update count (`ema.updates`). Contiguous CPU tensors.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let raw = |r: &Region| if self.swapped { r.shadow.shallow_clone() } else { r.live.shallow_clone() };
        let mut out: Vec<(String, Tensor)> = Vec::new();
        for region in std::iter::once(&self.params).chain(self.buffers.as_ref()) {
            let flat = raw(region);
            let name = |s: &Slot| format!("{RAW_PREFIX}.{}", s.name);
            out.extend(region.slots.iter().map(|s| (name(s), host_copy(&s.view(&flat)))));
        }
        for (name, live, shadow) in &self.others {
            out.push((format!("{RAW_PREFIX}.{name}"), host_copy(if self.swapped { shadow } else { live })));
        }
        out.push((UPDATES.into(), Tensor::from_slice(&[self.updates])));
        out
    }

    /// Resumes from a checkpoint whose weights file was just loaded into the model (those are the average): the
    /// shadow takes them, the live weights take the state file's raw ones, the count its `ema.updates`. A state file
    /// without EMA state (the checkpoint was written with `ema:` off) starts the average over from the loaded weights;
    /// returns whether the state was there.
    pub fn resume(&mut self, vs: &VarStore, tensors: &HashMap<String, Tensor>) -> Result<bool, EmaError> {
        if self.swapped {
            self.swap();
        }
        tch::no_grad(|| -> Result<(), EmaError> {
            for region in self.regions() {
                region.shadow.f_copy_(&region.live)?;
            }
            for (_, live, shadow) in &mut self.others {
                shadow.f_copy_(live)?;
            }
            Ok(())
        })?;
        let Some(updates) = tensors.get(UPDATES) else {
            self.updates = 0;
            return Ok(false);
        };
        if !load_raw(vs, tensors)? {
            return Err(EmaError::State(format!("has {UPDATES} but no raw weights ({RAW_PREFIX}.*)")));
        }
        self.updates = updates.f_int64_value(&[0])?;
        Ok(true)
    }
}

/// A contiguous copy of `t` on the host that shares nothing with it (on the CPU, `to_device` and `contiguous` may
/// return `t` itself, which the next swap would change under the caller).
fn host_copy(t: &Tensor) -> Tensor {
    let mut out = Tensor::empty(t.size(), (t.kind(), Device::Cpu));
    tch::no_grad(|| out.copy_(t));
    out
}

/// Loads a state file's raw weights (`raw.<name>`) into the model, if it has them: they, not the weights file's
/// average, are what training goes on from. `Ok(false)` when it has none; an error names a missing or misshapen one.
pub fn load_raw(vs: &VarStore, tensors: &HashMap<String, Tensor>) -> Result<bool, EmaError> {
    let prefix = format!("{RAW_PREFIX}.");
    if !tensors.keys().any(|k| k.starts_with(&prefix)) {
        return Ok(false);
    }
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    tch::no_grad(|| {
        for (name, var) in vars {
            let key = format!("{prefix}{name}");
            let t = tensors.get(&key).ok_or_else(|| EmaError::State(format!("missing tensor {key}")))?;
            if t.size() != var.size() {
                return Err(EmaError::State(format!("{key} has shape {:?}, expected {:?}", t.size(), var.size())));
            }
            var.shallow_clone().f_copy_(t)?;
        }
        Ok(true)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::optim::Optimizer;
    use rush::core::spec::{Optimizer as OptimizerSpec, OptimizerName};
    use tch::nn::{self, ModuleT};

    fn model() -> (VarStore, nn::SequentialT) {
        tch::manual_seed(5);
        let vs = VarStore::new(Device::Cpu);
        let root = vs.root();
        let net = nn::seq_t()
            .add(nn::conv2d(&root / "conv", 3, 4, 3, Default::default()))
            .add(nn::batch_norm2d(&root / "bn", 4, Default::default()))
            .add_fn(|x| x.flatten(1, -1))
            .add(nn::linear(&root / "fc", 4 * 4 * 4, 5, Default::default()));
        (vs, net)
    }

    fn snapshot(vs: &VarStore) -> HashMap<String, Tensor> {
        vs.variables().into_iter().map(|(k, v)| (k, v.detach().copy())).collect()
    }

    fn sgd() -> OptimizerSpec {
        OptimizerSpec { name: OptimizerName::Sgd, lr: 0.1, weight_decay: 0.0, momentum: 0.9, nesterov: false }
    }

    /// Trains `steps` SGD steps on random inputs, the EMA updated after each.
    fn train(net: &nn::SequentialT, flat: &mut FlatParams, ema: &mut Ema, steps: usize) {
        let mut opt = Optimizer::new(&sgd(), flat);
        for _ in 0..steps {
            let x = Tensor::randn([4, 3, 6, 6], (Kind::Float, Device::Cpu));
            flat.zero_grad();
            net.forward_t(&x, true).mean(Kind::Float).backward();
            opt.step(flat, 0.1);
            ema.update();
        }
    }

    #[test]
    fn the_warm_up_starts_low_and_reaches_the_decay() {
        assert_eq!(decay_at(0.999, 0), 0.1);
        assert_eq!(decay_at(0.999, 1), 2.0 / 11.0);
        assert_eq!(decay_at(0.5, 100), 0.5);
        assert!((decay_at(0.999, 1_000_000) - 0.999).abs() < 1e-12);
    }

    #[test]
    fn the_average_follows_the_formula_for_parameters_and_batch_norm_statistics() {
        let (vs, net) = model();
        let mut flat = FlatParams::new(&vs, false).unwrap();
        let mut ema = Ema::new(0.9, &vs, &flat).unwrap();
        let mut opt = Optimizer::new(&sgd(), &flat);
        let mut expected = snapshot(&vs);
        for n in 0..5 {
            let x = Tensor::randn([4, 3, 6, 6], (Kind::Float, Device::Cpu));
            flat.zero_grad();
            net.forward_t(&x, true).mean(Kind::Float).backward();
            opt.step(&mut flat, 0.1);
            ema.update();
            let d = decay_at(0.9, n);
            for (name, live) in vs.variables() {
                let e = expected.get_mut(&name).unwrap();
                *e = &*e * d + live.detach() * (1.0 - d);
            }
        }
        ema.check_views().unwrap();
        assert_eq!(ema.updates(), 5);
        let raw = snapshot(&vs);
        ema.swap();
        assert!(ema.is_swapped());
        for (name, averaged) in vs.variables() {
            assert!(averaged.allclose(&expected[&name], 1e-6, 1e-7, false), "{name}");
            assert!(!averaged.equal(&raw[&name]), "{name}: the average is not the raw weights");
        }
        assert!(vs.variables()["bn.running_mean"].abs().sum(Kind::Float).double_value(&[]) > 0.0);
        // The model computes with the average while swapped in, and exactly the raw weights after swapping back.
        ema.swap();
        for (name, live) in vs.variables() {
            assert!(live.equal(&raw[&name]), "{name}");
        }
    }

    #[test]
    fn the_state_and_the_weights_file_resume_exactly() {
        let (vs, net) = model();
        let mut flat = FlatParams::new(&vs, false).unwrap();
        let mut ema = Ema::new(0.99, &vs, &flat).unwrap();
        train(&net, &mut flat, &mut ema, 3);
        // As a checkpoint: the weights file holds the average, the state the raw weights and the count.
        ema.swap();
        let weights = snapshot(&vs);
        let state: HashMap<String, Tensor> = ema.state_tensors().into_iter().collect();
        ema.swap(); // (the state is a copy: swapping back leaves it alone)
        let raw = snapshot(&vs);
        for (name, t) in &raw {
            assert!(
                state[&format!("raw.{name}")].equal(t),
                "{name}: {:?} vs {:?} (avg {:?})",
                Vec::<f32>::try_from(&state[&format!("raw.{name}")].flatten(0, -1)),
                Vec::<f32>::try_from(&t.flatten(0, -1)),
                Vec::<f32>::try_from(&weights[name].flatten(0, -1))
            );
        }
        assert_eq!(state[UPDATES].int64_value(&[0]), 3);
        // A fresh model resumed from those two.
        let (vs2, _net2) = model();
        let flat2 = FlatParams::new(&vs2, false).unwrap();
        let mut ema2 = Ema::new(0.99, &vs2, &flat2).unwrap();
        tch::no_grad(|| {
            for (name, var) in vs2.variables() {
                var.shallow_clone().copy_(&weights[&name]);
            }
        });
        assert!(ema2.resume(&vs2, &state).unwrap());
        assert_eq!(ema2.updates(), 3);
        for (name, live) in vs2.variables() {
            assert!(live.equal(&raw[&name]), "raw {name}");
        }
        ema2.swap();
        for (name, averaged) in vs2.variables() {
            assert!(averaged.equal(&weights[&name]), "average {name}");
        }
        // A state file without EMA state: the average starts over from the loaded weights.
        let mut ema3 = Ema::new(0.99, &vs2, &flat2).unwrap();
        assert!(!ema3.resume(&vs2, &HashMap::new()).unwrap());
        assert_eq!(ema3.updates(), 0);
        // Raw weights of another model are refused, naming the tensor.
        let partial: HashMap<String, Tensor> =
            state.iter().filter(|(k, _)| !k.contains("fc.weight")).map(|(k, v)| (k.clone(), v.copy())).collect();
        let e = load_raw(&vs2, &partial).unwrap_err().to_string();
        assert!(e.contains("raw.fc.weight"), "{e}");
        assert!(!load_raw(&vs2, &HashMap::new()).unwrap());
    }
}
