//! Code sessions: the user's own training code (AI RUSH's `main.py`) run as a session, as `nsml run` did.
//!
//! - [`upload`]: the code folder packed at queue time (ignore files, a size limit) and unpacked into the session.
//! - [`python`]: the interpreter, and the environment a `requirements.txt` asks for, built once and cached.
//! - [`sandbox`]: bubblewrap, so the code sees its session, the dataset and Python, never the hidden labels.
//! - [`child`]: `rush train` and `rush infer` for a code session: they start `python ENTRY ARGS` in the sandbox, with
//!   the `nsml` module (`nsml.py`) importable, relay its events, and turn what its `infer` returns into a member's
//!   probabilities.

pub mod child;
pub mod python;
pub mod sandbox;
pub mod upload;

use std::path::PathBuf;

/// The `nsml` module, written into each code session as `nsml/__init__.py`.
pub const NSML_PY: &str = include_str!("nsml.py");

/// Why a code session could not be packed, prepared or run; each variant names the file or folder.
#[derive(Debug, thiserror::Error)]
pub enum CodeError {
    #[error("{0}: not a folder")]
    NotAFolder(PathBuf),
    #[error("{dir}: {message}")]
    Walk { dir: PathBuf, message: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(
        "{dir}: the code folder holds {total_text} of files, over the limit of {limit}; the biggest: {biggest} (leave \
         data and weights out with a .nsmlignore or .rushignore file, gitignore syntax)",
        total_text = crate::core::format::bytes(*total as i64),
        limit = crate::core::format::bytes(upload::MAX_CODE_BYTES as i64)
    )]
    TooBig { dir: PathBuf, total: u64, biggest: String },
    #[error("the uploaded code is not a valid archive: {message}")]
    BadArchive { message: String },
    #[error("{entry}: no such file in the code folder {dir} (`-e FILE.py` names another entry file)")]
    NoEntry { entry: String, dir: PathBuf },
    #[error("installing {file} failed: {message}")]
    Install { file: PathBuf, message: String },
    #[error("{0}")]
    Sandbox(String),
    #[error("{0}")]
    Invalid(String),
}
