//! Running sessions on a Slurm cluster: the client over Slurm's command-line tools and the executor that makes each
//! session one batch job, and each member inference of a submission another. What Slurm's text means and what to
//! submit is decided in `core::slurm`.

pub mod client;
mod cluster;
pub mod executor;
mod inference;

pub use client::{ClientError, SlurmClient};
pub use executor::SlurmExecutor;
