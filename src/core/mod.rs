//! The pure domain core: specs, sessions, checkpoints, events, schedules. No I/O, no tokio, no tch, no SQL.
//!
//! Everything here is decided with plain data and tested with plain asserts; the edges (daemon, trainer, store, web,
//! CLI) act on what the core decides.

pub mod access;
pub mod analysis;
pub mod asha;
pub mod checkpoint;
pub mod ensemble;
pub mod event;
pub mod format;
pub mod metric;
pub mod npy;
pub mod outcome;
pub mod progress;
pub mod queue;
pub mod recipe;
pub mod rule;
pub mod schedule;
pub mod score;
pub mod session;
pub mod share;
pub mod slurm;
pub mod spec;
pub mod tags;
