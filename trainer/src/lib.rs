//! rush-trainer: the half of rush that links libtorch, as the `rush-train` binary. `rush` (the CLI and the daemon, the
//! `rush` crate at the repository root) parses every command line; for `train`, `infer`, `doctor` and `bench
//! train|epoch` it execs `rush-train` beside it with the same arguments, so only these processes load libtorch (and,
//! on a GPU machine, CUDA's libraries).
//!
//! - [`train`]: the training child (`rush train <session dir>`), inference (`rush infer`), `rush doctor`; the only
//!   module of the workspace that names `tch` (checked by the `rush` crate's layering test);
//! - [`cli`]: `rush-train`'s command line: the commands above, read with `rush::cli`'s own definitions;
//! - [`bench`]: `rush bench train` and `rush bench epoch`, which time libtorch in this process.
//!
//! `tch` is re-exported for the integration tests that look inside a trained model.

pub mod bench;
pub mod cli;
pub mod train;

pub use tch;
