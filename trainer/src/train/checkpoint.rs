//! Checkpoint files of a session, one set per epoch (NSML's `nsml.save(epoch)`):
//! `checkpoints/<epoch>.safetensors` (the model's weights under their VarStore names, readable by Python's
//! `safetensors.torch.load_file`; with `ema:` the moving average), `<epoch>.state.safetensors` (optimizer state, step,
//! epoch, seed, and with `ema:` the raw weights and the average's count: what resume needs), `<epoch>.valid.npy` (the epoch's validation probabilities, `submit::valid`) and `<epoch>.json`
//! ([`CheckpointMeta`]: metrics, spec hash, sizes, the record of the validation predictions). Each file is written
//! atomically (temp file, fsync, rename, fsync of the folder); the JSON comes last, so a checkpoint with its JSON is
//! complete.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::{Device, Tensor};

use rush::disk::WriteError;
use rush::home::SessionDir;
use rush::submit::valid::ValidRecord;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointIoError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Torch { path: PathBuf, message: String },
    #[error("{path}: the checkpoint was deleted (by retention or `rush model rm`) before it could be read")]
    Gone { path: PathBuf },
    #[error("{path}: {message}")]
    Mismatch { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Meta { path: PathBuf, message: String },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointIoError + '_ {
    move |source| CheckpointIoError::Io { path: path.to_path_buf(), source }
}

fn torch_err(path: &Path) -> impl FnOnce(tch::TchError) -> CheckpointIoError + '_ {
    move |e| CheckpointIoError::Torch { path: path.to_path_buf(), message: e.to_string() }
}

/// `<epoch>.json`: what a checkpoint is, without opening the tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    pub epoch: u32,
    /// Optimizer steps taken up to the end of this epoch.
    pub step: u64,
    pub train_loss: f64,
    pub train_acc: f64,
    pub val_loss: f64,
    pub val_acc: f64,
    /// `Spec::hash` of the session's spec.
    pub spec_hash: String,
    pub model: String,
    pub image_size: u32,
    /// Size of `<epoch>.safetensors`.
    pub bytes: u64,
    /// Size of `<epoch>.state.safetensors`.
    pub state_bytes: u64,
    /// What `<epoch>.valid.npy` holds (absent in checkpoints saved before it was written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid: Option<ValidRecord>,
    /// The input statistics the model was trained with (absent in checkpoints written before the trainer measured
    /// them: those used ImageNet's, [`crate::train::recipe::InputNorm::IMAGENET`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_norm: Option<crate::train::recipe::InputNorm>,
}

/// Writes through a temp file beside `path` (`disk::write_atomic_with`: `write` fills the temp path, which is
/// fsynced and renamed over `path`, then the folder is fsynced), so a reader sees the old file or the whole new one.
fn write_atomic(
    path: &Path,
    write: impl FnOnce(&Path) -> Result<(), CheckpointIoError>,
) -> Result<u64, CheckpointIoError> {
    rush::disk::write_atomic_with(path, write).map_err(|e| match e {
        WriteError::Fill(e) => e,
        WriteError::Disk(e) => CheckpointIoError::Io { path: e.path, source: e.source },
    })
}

fn write_tensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<u64, CheckpointIoError> {
    write_atomic(path, |tmp| Tensor::write_safetensors(tensors, tmp).map_err(torch_err(tmp)))
}

/// All of `vs`'s variables (parameters and batch-norm statistics), sorted by name, as contiguous CPU tensors.
pub fn weight_tensors(vs: &VarStore) -> Vec<(String, Tensor)> {
    let mut named: Vec<(String, Tensor)> =
        vs.variables().into_iter().map(|(name, t)| (name, t.detach().to_device(Device::Cpu).contiguous())).collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
}

/// Writes the model's weights; returns the file's size.
pub fn save_weights(vs: &VarStore, path: &Path) -> Result<u64, CheckpointIoError> {
    write_tensors(path, &weight_tensors(vs))
}

/// Loads weights into `vs`. The names and shapes must match exactly: a missing or extra tensor is an error naming it.
pub fn load_weights(vs: &VarStore, path: &Path) -> Result<(), CheckpointIoError> {
    if let Err(e) = std::fs::metadata(path) {
        return Err(if e.kind() == std::io::ErrorKind::NotFound {
            CheckpointIoError::Gone { path: path.to_path_buf() }
        } else {
            CheckpointIoError::Io { path: path.to_path_buf(), source: e }
        });
    }
    let loaded: HashMap<String, Tensor> =
        Tensor::read_safetensors(path).map_err(torch_err(path))?.into_iter().collect();
    let mismatch = |message: String| CheckpointIoError::Mismatch { path: path.to_path_buf(), message };
    let vars = vs.variables();
    let mut missing: Vec<&String> = vars.keys().filter(|k| !loaded.contains_key(*k)).collect();
    missing.sort();
    if let Some(name) = missing.first() {
        return Err(mismatch(format!("has no tensor {name} ({} missing in all)", missing.len())));
    }
    let mut extra: Vec<&String> = loaded.keys().filter(|k| !vars.contains_key(*k)).collect();
    extra.sort();
    if let Some(name) = extra.first() {
        return Err(mismatch(format!("has tensor {name}, which this model does not ({} extra in all)", extra.len())));
    }
    tch::no_grad(|| {
        for (name, var) in &vars {
            let src = &loaded[name];
            if src.size() != var.size() {
                return Err(mismatch(format!("{name} has shape {:?}, the model {:?}", src.size(), var.size())));
            }
            var.shallow_clone().f_copy_(src).map_err(torch_err(path))?;
        }
        Ok(())
    })
}

/// Where training stands at the end of an epoch, saved with the optimizer state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub epoch: u32,
    pub step: u64,
    /// The run's seed; every epoch's randomness derives from (seed, epoch).
    pub seed: u64,
}

/// Writes `<epoch>.state.safetensors`: the optimizer's tensors plus `progress.epoch`, `progress.step` and
/// `progress.seed` (int64 scalars; the seed's bits reinterpreted).
pub fn save_state(path: &Path, progress: Progress, optimizer: Vec<(String, Tensor)>) -> Result<u64, CheckpointIoError> {
    let mut tensors = optimizer;
    tensors.push(("progress.epoch".into(), Tensor::from_slice(&[i64::from(progress.epoch)])));
    tensors.push(("progress.step".into(), Tensor::from_slice(&[progress.step as i64])));
    tensors.push(("progress.seed".into(), Tensor::from_slice(&[progress.seed as i64])));
    write_tensors(path, &tensors)
}

/// Reads a state file: the progress and every tensor by name (for `Optimizer::load_state`).
pub fn load_state(path: &Path) -> Result<(Progress, HashMap<String, Tensor>), CheckpointIoError> {
    let tensors: HashMap<String, Tensor> =
        Tensor::read_safetensors(path).map_err(torch_err(path))?.into_iter().collect();
    let scalar = |name: &str| -> Result<i64, CheckpointIoError> {
        let t = tensors.get(name).ok_or_else(|| CheckpointIoError::Mismatch {
            path: path.to_path_buf(),
            message: format!("has no tensor {name}"),
        })?;
        t.f_int64_value(&[0]).map_err(torch_err(path))
    };
    let progress = Progress {
        epoch: scalar("progress.epoch")? as u32,
        step: scalar("progress.step")? as u64,
        seed: scalar("progress.seed")? as u64,
    };
    Ok((progress, tensors))
}

pub fn save_meta(path: &Path, meta: &CheckpointMeta) -> Result<u64, CheckpointIoError> {
    let json = serde_json::to_vec_pretty(meta)
        .map_err(|e| CheckpointIoError::Meta { path: path.to_path_buf(), message: e.to_string() })?;
    write_atomic(path, |tmp| {
        let mut f = File::create(tmp).map_err(io_err(tmp))?;
        f.write_all(&json).map_err(io_err(tmp))
    })
}

pub fn load_meta(path: &Path) -> Result<CheckpointMeta, CheckpointIoError> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    serde_json::from_str(&text)
        .map_err(|e| CheckpointIoError::Meta { path: path.to_path_buf(), message: e.to_string() })
}

/// Epochs with a complete checkpoint (weights, state and JSON all present), ascending.
pub fn complete_epochs(session: &SessionDir) -> Result<Vec<u32>, CheckpointIoError> {
    let dir = session.checkpoints();
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(CheckpointIoError::Io { path: dir, source: e }),
    };
    let mut epochs = Vec::new();
    for entry in entries {
        let name = entry.map_err(io_err(&dir))?.file_name();
        let Some(epoch) = name.to_str().and_then(|n| n.strip_suffix(".json")).and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if session.checkpoint_weights(epoch).is_file() && session.checkpoint_state(epoch).is_file() {
            epochs.push(epoch);
        }
    }
    epochs.sort_unstable();
    Ok(epochs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rush::core::spec::ModelName;
    use tch::Kind;

    #[test]
    fn weights_round_trip_gives_identical_logits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1.safetensors");
        tch::manual_seed(1);
        let a = VarStore::new(Device::Cpu);
        let net_a = crate::train::models::build(ModelName::Resnet18, &a);
        let x = Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu));
        // Move the batch-norm statistics away from their init so they are checked too.
        let _ = tch::no_grad(|| net_a.forward_t(&x, true));
        let bytes = save_weights(&a, &path).unwrap();
        assert_eq!(bytes, std::fs::metadata(&path).unwrap().len());
        tch::manual_seed(2);
        let b = VarStore::new(Device::Cpu);
        let net_b = crate::train::models::build(ModelName::Resnet18, &b);
        let before = tch::no_grad(|| net_b.forward_t(&x, false));
        load_weights(&b, &path).unwrap();
        let want = tch::no_grad(|| net_a.forward_t(&x, false));
        let got = tch::no_grad(|| net_b.forward_t(&x, false));
        assert!(!before.equal(&want));
        assert!(got.equal(&want), "logits differ after a round trip");
        // No temp file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("1.safetensors")]);
    }

    #[test]
    fn loading_the_wrong_model_names_the_tensor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1.safetensors");
        let a = VarStore::new(Device::Cpu);
        let _ = crate::train::models::build(ModelName::BaselineCnn, &a);
        save_weights(&a, &path).unwrap();
        let b = VarStore::new(Device::Cpu);
        let _ = crate::train::models::build(ModelName::Resnet18, &b);
        let e = load_weights(&b, &path).unwrap_err().to_string();
        assert!(e.contains("1.safetensors") && e.contains("has no tensor"), "{e}");
    }

    #[test]
    fn state_and_meta_round_trip_and_complete_epochs_need_all_three_files() {
        let dir = tempfile::tempdir().unwrap();
        let session = SessionDir::new(dir.path());
        std::fs::create_dir_all(session.checkpoints()).unwrap();
        let progress = Progress { epoch: 2, step: 40, seed: u64::MAX - 5 };
        let opt = vec![("sgd.momentum.w".to_string(), Tensor::from_slice(&[1.5f32, -2.0]))];
        save_state(&session.checkpoint_state(2), progress, opt).unwrap();
        let (p, tensors) = load_state(&session.checkpoint_state(2)).unwrap();
        assert_eq!(p, progress);
        assert!(tensors["sgd.momentum.w"].equal(&Tensor::from_slice(&[1.5f32, -2.0])));
        let meta = CheckpointMeta {
            epoch: 2,
            step: 40,
            train_loss: 1.0,
            train_acc: 0.5,
            val_loss: 1.2,
            val_acc: 0.4,
            spec_hash: "abc".into(),
            model: "resnet18".into(),
            image_size: 32,
            bytes: 10,
            state_bytes: 20,
            valid: Some(ValidRecord { rows: 3, classes: 350, order: "abc".into() }),
            input_norm: Some(crate::train::recipe::InputNorm::IMAGENET),
        };
        assert_eq!(complete_epochs(&session).unwrap(), Vec::<u32>::new());
        save_meta(&session.checkpoint_meta(2), &meta).unwrap();
        assert_eq!(complete_epochs(&session).unwrap(), Vec::<u32>::new(), "weights are missing");
        std::fs::write(session.checkpoint_weights(2), b"x").unwrap();
        assert_eq!(complete_epochs(&session).unwrap(), vec![2]);
        assert_eq!(load_meta(&session.checkpoint_meta(2)).unwrap(), meta);
        // a checkpoint saved before the validation predictions reads without their record
        let old = CheckpointMeta { valid: None, input_norm: None, ..meta.clone() };
        save_meta(&session.checkpoint_meta(2), &old).unwrap();
        let text = std::fs::read_to_string(session.checkpoint_meta(2)).unwrap();
        assert!(!text.contains("valid\""), "{text}");
        assert_eq!(load_meta(&session.checkpoint_meta(2)).unwrap(), old);
    }
}
