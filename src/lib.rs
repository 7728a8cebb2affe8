//! rush: an NSML-style experiment daemon for image classifiers on the AI RUSH sticker task.
//!
//! The flow a newcomer can follow: a YAML spec is saved in `experiments/` -> `daemon::watcher` -> `core::spec` (rejected
//! specs are recorded with their error) -> `store` enqueues -> `daemon::scheduler` leases a slot -> `daemon::runner`
//! starts `rush train <session dir>` -> the child (`train`) streams `core::event`s -> the runner stores them and fans
//! them out -> `web` and the CLI read the store -> `submit` runs inference on the test split and scores it.
//!
//! `core` is pure (no I/O); everything else is an edge around it.

pub mod bench;
pub mod cli;
pub mod core;
pub mod daemon;
pub mod data;
pub mod disk;
pub mod home;
pub mod slurm;
pub mod store;
pub mod submit;
pub mod train;
pub mod web;
