//! What the Slurm executor's session jobs (`super::executor`) and inference jobs (`super::inference`) share: the
//! cluster client with this daemon's settings, store and names ([`Inner`]), and the status poll that bears with a
//! controller that does not answer for a while ([`StatusPoll`]).

use std::path::PathBuf;

use super::client::SlurmClient;
use crate::core::slurm::{JobId, JobStatus, SlurmConfig};
use crate::store::Store;

/// Consecutive failed status queries after which a job counts as lost.
pub(super) const MAX_STATUS_FAILURES: u32 = 120;

/// What every job of this daemon needs: the cluster, the settings, the store and the names.
pub(super) struct Inner {
    pub(super) client: SlurmClient,
    pub(super) config: SlurmConfig,
    pub(super) store: Store,
    pub(super) rush_exe: PathBuf,
    pub(super) home_tag: String,
}

/// Asks Slurm about one job, poll after poll, bearing with a controller that does not answer for a while.
#[derive(Debug, Default)]
pub(super) struct StatusPoll {
    failures: u32,
}

impl StatusPoll {
    /// The job's status; `Ok(None)` when Slurm did not answer this time (the daemon's log says so now and then), an
    /// error naming the job once it has not answered [`MAX_STATUS_FAILURES`] times in a row. `who`: whose job it is.
    pub(super) async fn ask(
        &mut self,
        client: &SlurmClient,
        job: JobId,
        who: &(dyn std::fmt::Display + Sync),
    ) -> Result<Option<JobStatus>, String> {
        match client.status(job).await {
            Ok(status) => {
                self.failures = 0;
                Ok(Some(status))
            }
            Err(e) => {
                self.failures += 1;
                if self.failures == 1 || self.failures % 20 == 0 {
                    tracing::warn!("{who}: asking Slurm about job {job}: {e}");
                }
                if self.failures >= MAX_STATUS_FAILURES {
                    return Err(format!("lost track of Slurm job {job}: {e}"));
                }
                Ok(None)
            }
        }
    }
}
