//! The trainer's recipe choices that `rush bench recipe` measured against its PyTorch twin, and the switch that
//! restores the earlier ones for the ablation: `RUSH_RECIPE_ABLATE` = a comma-separated list of
//!
//! - `tch-init`: tch's default layer init (Kaiming-uniform with fan_in for every weight) instead of the init of the
//!   PyTorch model each one mirrors ([`crate::train::models`]);
//! - `byte-augment`: augmentation on bytes, rounded after each stage, instead of on floats ([`crate::train::augment`]);
//! - `imagenet-norm`: inputs normalised by ImageNet's statistics instead of the training split's ([`InputNorm`]).
//!
//! Unset or empty: today's recipe. The spec never sees these; they exist to show, in BENCHMARKS.md, what each change
//! was worth.

use serde::{Deserialize, Serialize};

/// The environment variable (set by `rush bench recipe --ablate`, which defines it).
pub use rush::cli::bench::recipe::ABLATE_ENV;

/// Which earlier choices are restored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ablate {
    pub tch_init: bool,
    pub byte_augment: bool,
    pub imagenet_norm: bool,
}

impl Ablate {
    /// Parses the list; an unknown name is an error naming it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut out = Self::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "tch-init" => out.tch_init = true,
                "byte-augment" => out.byte_augment = true,
                "imagenet-norm" => out.imagenet_norm = true,
                other => {
                    return Err(format!(
                        "{ABLATE_ENV}: unknown choice {other:?}; one of tch-init, byte-augment, imagenet-norm"
                    ));
                }
            }
        }
        Ok(out)
    }

    /// From the environment; a bad value is reported on stderr and ignored.
    pub fn from_env() -> Self {
        let value = std::env::var(ABLATE_ENV).unwrap_or_default();
        match Self::parse(&value) {
            Ok(a) => a,
            Err(e) => {
                eprintln!("rush train: {e}; ignored");
                Self::default()
            }
        }
    }

    /// A log line naming what is restored (`None` when nothing is).
    pub fn describe(&self) -> Option<String> {
        let names: Vec<&str> =
            [(self.tch_init, "tch-init"), (self.byte_augment, "byte-augment"), (self.imagenet_norm, "imagenet-norm")]
                .into_iter()
                .filter_map(|(on, name)| on.then_some(name))
                .collect();
        (!names.is_empty()).then(|| format!("{ABLATE_ENV}={}: earlier recipe choices restored", names.join(",")))
    }
}

/// Per-channel statistics of the inputs in [0, 1]: `x' = (x / 255 - mean) / std`. Recorded in each checkpoint's JSON,
/// so inference normalises as training did.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct InputNorm {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl InputNorm {
    /// ImageNet's statistics: what checkpoints written before the trainer measured its own used.
    pub const IMAGENET: InputNorm = InputNorm { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] };

    /// The statistics of `images` (each `side * side * 3` RGB bytes, HWC); `None` without any. A channel without
    /// spread gets a std of 1, so a blank dataset cannot divide by zero.
    pub fn of_images<'a>(images: impl Iterator<Item = &'a [u8]>) -> Option<InputNorm> {
        let mut sum = [0f64; 3];
        let mut squares = [0f64; 3];
        let mut pixels = 0u64;
        for img in images {
            for p in img.chunks_exact(3) {
                for c in 0..3 {
                    let v = f64::from(p[c]) / 255.0;
                    sum[c] += v;
                    squares[c] += v * v;
                }
            }
            pixels += (img.len() / 3) as u64;
        }
        if pixels == 0 {
            return None;
        }
        let n = pixels as f64;
        let mean = sum.map(|s| s / n);
        let mut std = [0f32; 3];
        for c in 0..3 {
            let var = (squares[c] / n - mean[c] * mean[c]).max(0.0);
            std[c] = if var > 1e-12 { var.sqrt() as f32 } else { 1.0 };
        }
        Some(InputNorm { mean: mean.map(|m| m as f32), std })
    }
}

/// At most this many training images are read for the statistics (evenly spread over the split).
pub const NORM_SAMPLE: usize = 20_000;

/// Which of `train` (ascending sample indices) the statistics read: all of them up to [`NORM_SAMPLE`], else an even
/// stride through them.
pub fn norm_sample(train: &[usize]) -> Vec<usize> {
    if train.len() <= NORM_SAMPLE {
        return train.to_vec();
    }
    (0..NORM_SAMPLE).map(|k| train[k * train.len() / NORM_SAMPLE]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_parses_and_an_unknown_name_is_named() {
        assert_eq!(Ablate::parse(""), Ok(Ablate::default()));
        let a = Ablate::parse("tch-init, imagenet-norm").unwrap();
        assert!(a.tch_init && a.imagenet_norm && !a.byte_augment);
        assert!(a.describe().unwrap().contains("tch-init,imagenet-norm"));
        assert!(Ablate::default().describe().is_none());
        assert!(Ablate::parse("fp16").unwrap_err().contains("\"fp16\""));
    }

    #[test]
    fn statistics_of_known_images() {
        // Half the pixels black, half white in every channel: mean 0.5, std 0.5.
        let img: Vec<u8> = [0u8, 0, 0, 255, 255, 255].repeat(8);
        let n = InputNorm::of_images([img.as_slice()].into_iter()).unwrap();
        for c in 0..3 {
            assert!((n.mean[c] - 0.5).abs() < 1e-6 && (n.std[c] - 0.5).abs() < 1e-6, "{n:?}");
        }
        let flat = vec![200u8; 12];
        let n = InputNorm::of_images([flat.as_slice()].into_iter()).unwrap();
        assert_eq!(n.std, [1.0; 3]);
        assert!(InputNorm::of_images(std::iter::empty()).is_none());
    }

    #[test]
    fn the_sample_is_all_or_an_even_stride() {
        let small: Vec<usize> = (0..10).collect();
        assert_eq!(norm_sample(&small), small);
        let big: Vec<usize> = (0..NORM_SAMPLE * 3).map(|i| i * 2).collect();
        let s = norm_sample(&big);
        assert_eq!(s.len(), NORM_SAMPLE);
        assert_eq!((s[0], s[1]), (0, 6));
    }
}
