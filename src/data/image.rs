//! Decodes a sticker PNG to RGB u8 (HWC) at a square size: resize first, then composite the alpha on white.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: cannot decode PNG: {message}")]
    Decode { path: PathBuf, message: String },
}

/// Returns `size * size * 3` bytes, row-major RGB, alpha composited on white.
pub fn load_rgb(path: &Path, size: u32) -> Result<Vec<u8>, ImageError> {
    let _ = (path, size);
    todo!("data layer")
}
