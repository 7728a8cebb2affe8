//! Running sessions on a Slurm cluster: the edge that talks to Slurm's command-line tools. What their text means and
//! what to submit is decided in `core::slurm`; this module only runs the commands.

pub mod client;

pub use client::{ClientError, SlurmClient};
