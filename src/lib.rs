//! rush: an NSML-style experiment daemon for image classifiers on the AI RUSH sticker task.
//!
//! The flow a newcomer can follow (docs/architecture.md names the file of each hop): a YAML spec is saved in
//! `experiments/` -> `daemon::watcher` -> `core::spec` (rejected specs are recorded with their error) -> `store`
//! enqueues -> `daemon::scheduler` leases a slot -> `daemon::runner` starts `rush train <session dir>` through the
//! `daemon::launcher` -> `rush` execs `rush-train` (the `rush-trainer` crate in `trainer/`, the only binary that links
//! libtorch), whose `train` module streams `core::event`s -> the runner stores them and fans them out -> `web` and the
//! CLI read the store -> `daemon::submissions` runs `rush infer` children (`rush_trainer::train::infer`) and the scorer
//! (`submit`) puts a score on the board (`daemon::board`). `serve` wires the daemon, the web app and Slurm together.
//!
//! `core` is pure (no I/O); everything else is an edge around it.
//!
//! # Layers
//!
//! A module may name (`crate::...`, or `super::...` up to another top-level module) only itself and the modules its
//! row lists. The test `layering` reads this table and every path in `src/`, and fails on a path that breaks it. It
//! also fails on:
//! - **a cycle between sibling modules** anywhere in the tree (a child naming its parent's items is fine);
//! - **`web` naming a daemon submodule**: it sees the daemon through its facade, the items `daemon` itself declares or
//!   re-exports (`crate::daemon::Daemon`, `crate::daemon::BoardView`, ...);
//! - **`tch` or `torch_sys` named anywhere here, or a `tch`/`torch-sys` dependency in this package's `Cargo.toml`**:
//!   only `rush-train` (the children `rush train`, `rush infer`) links libtorch;
//! - **the trainer crate's `train` module** (`trainer/src/train/`, the row `rush_trainer::train`) **naming a module of
//!   this crate that its row does not list**, or the trainer's own `cli` or `bench`.
//!
//! Test modules (`#[cfg(test)] mod ...`) are outside the rules: they build what they test from any part.
//!
//! | module | may use |
//! |---|---|
//! | `core` | |
//! | `home` | `core` |
//! | `disk` | `core` |
//! | `store` | `core` |
//! | `data` | `core`, `home`, `disk` |
//! | `submit` | `core`, `home`, `disk`, `data` |
//! | `code` | `core`, `home`, `disk`, `data`, `submit` |
//! | `daemon` | `core`, `home`, `disk`, `data`, `submit`, `store`, `code` |
//! | `slurm` | `core`, `home`, `disk`, `store`, `daemon` |
//! | `web` | `core`, `home`, `disk`, `submit`, `store`, `daemon` |
//! | `serve` | `core`, `home`, `disk`, `store`, `daemon`, `slurm`, `web` |
//! | `cli` | `core`, `home`, `disk`, `data`, `submit`, `code`, `store`, `daemon`, `slurm`, `web`, `serve` |
//! | `rush_trainer::train` | `core`, `home`, `disk`, `data`, `submit` |

pub mod cli;
pub mod code;
pub mod core;
pub mod daemon;
pub mod data;
pub mod disk;
pub mod home;
pub mod serve;
pub mod slurm;
pub mod store;
pub mod submit;
pub mod web;

#[cfg(test)]
mod layering;
