//! The emoji-art stand-in dataset: npm tarballs of open emoji styles rendered with resvg into the AI RUSH layout.
//! Each art style is a package, each emoji a sticker, CLDR keywords become tags (docs/emoji-dataset.md).
//!
//! `recipe` says which styles and splits; `npm` reads tarballs in place; `emojibase` gives the universe and keywords;
//! `tags` plans the classes and the 350-tag vocabulary (pure); `icons` finds each emoji's drawing (pure); `render`
//! draws it; `build` runs it all in parallel and writes the layout.

pub mod build;
pub mod emojibase;
pub mod icons;
pub mod npm;
pub mod recipe;
pub mod render;
pub mod tags;

use std::path::PathBuf;

pub use build::{BuildOptions, BuildReport, StyleReport, build};
pub use recipe::{Recipe, Split, Style};

#[derive(Debug, thiserror::Error)]
pub enum EmojiError {
    /// Writing what is derived from the written tables (`train/train_label`).
    #[error(transparent)]
    Data(#[from] crate::data::layout::DataError),
    #[error("{file}: {message}")]
    Recipe { file: String, message: String },
    #[error("missing npm tarball {path} for `{spec}`: run scripts/fetch-npm.sh (scripts/setup.sh runs it)")]
    MissingTarball { spec: String, path: PathBuf },
    #[error("{path}: not a readable npm tarball: {message}")]
    Tarball { path: PathBuf, message: String },
    #[error("{tarball}: no `{entry}` in the package")]
    MissingEntry { tarball: PathBuf, entry: String },
    #[error("{tarball}: {entry}: {message}")]
    Json { tarball: PathBuf, entry: String, message: String },
    #[error("unknown style `{name}`; the recipe has: {known}")]
    UnknownStyle { name: String, known: String },
    #[error("image size {size} is out of range (8 to 4096 pixels)")]
    Size { size: u32 },
    #[error("{path} already exists; pass --force to replace it")]
    OutputExists { path: PathBuf },
    #[error("{path} is neither empty nor a dataset (no train/train_data); not replacing it")]
    NotADataset { path: PathBuf },
    #[error("tag recipe: {0}")]
    Tags(String),
    #[error("cannot start the worker threads: {0}")]
    Threads(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}
