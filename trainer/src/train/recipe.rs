//! The trainer's recipe choices that `rush bench recipe` measured against its PyTorch twin: the input statistics
//! ([`InputNorm`]), and the switch that restores the earlier choices for the ablation (`RUSH_RECIPE_ABLATE`, whose
//! names [`rush::core::recipe`] defines for both processes):
//!
//! - `tch-init`: tch's default layer init instead of the PyTorch model's each mirrors ([`crate::train::models`]);
//! - `byte-augment`: augmentation on bytes, rounded after each stage ([`crate::train::augment`]);
//! - `imagenet-norm`: ImageNet's statistics instead of the training split's ([`InputNorm`]).

use serde::{Deserialize, Serialize};

use rush::core::recipe::ABLATE_ENV;
pub use rush::core::recipe::Ablate;

/// The ablation asked for in the environment; a bad value is reported on stderr and ignored.
pub fn ablate_from_env() -> Ablate {
    let value = std::env::var(ABLATE_ENV).unwrap_or_default();
    Ablate::parse(&value).unwrap_or_else(|e| {
        eprintln!("rush train: {ABLATE_ENV}: {e}; ignored");
        Ablate::default()
    })
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
