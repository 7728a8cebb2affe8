//! What the store keeps about a session's Slurm job: its id, the attempt count and how far its files were read.
//!
//! The attempt is counted up before `sbatch` runs and the job id recorded after, so after a crash in between a
//! restarted daemon looks the job up by its name (which carries the attempt) instead of submitting it again.

use super::{Store, StoreError};
use crate::core::session::SessionId;
use crate::core::slurm::JobId;

/// A session's Slurm bookkeeping.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlurmRecord {
    /// The current attempt's job, once `sbatch` returned it.
    pub job: Option<JobId>,
    /// Submissions so far; the current attempt's number.
    pub attempt: u32,
    /// Bytes of `events.jsonl` whose events are stored.
    pub events_offset: u64,
    /// Bytes of the job's stderr file already appended to `train.log`.
    pub log_offset: u64,
}

impl Store {
    pub async fn slurm_record(&self, id: &SessionId) -> Result<SlurmRecord, StoreError> {
        let row: Option<(Option<i64>, i64, i64, i64)> =
            sqlx::query_as("SELECT slurm_job, slurm_attempt, events_offset, log_offset FROM sessions WHERE id = ?")
                .bind(id.to_string())
                .fetch_optional(&self.writer)
                .await?;
        let (job, attempt, events, log) = row.ok_or_else(|| StoreError::UnknownSession(id.to_string()))?;
        let corrupt = |what: &str, v: i64| StoreError::Corrupt { table: "sessions", message: format!("{what} {v}") };
        Ok(SlurmRecord {
            job: job.map(|j| u64::try_from(j).map(JobId).map_err(|_| corrupt("slurm_job", j))).transpose()?,
            attempt: u32::try_from(attempt).map_err(|_| corrupt("slurm_attempt", attempt))?,
            events_offset: u64::try_from(events).map_err(|_| corrupt("events_offset", events))?,
            log_offset: u64::try_from(log).map_err(|_| corrupt("log_offset", log))?,
        })
    }

    /// Starts the next attempt: counts it and forgets the previous job. Returns the attempt's number.
    pub async fn begin_slurm_attempt(&self, id: &SessionId) -> Result<u32, StoreError> {
        let row: Option<(i64,)> = sqlx::query_as(
            "UPDATE sessions SET slurm_attempt = slurm_attempt + 1, slurm_job = NULL WHERE id = ? RETURNING slurm_attempt",
        )
        .bind(id.to_string())
        .fetch_optional(&self.writer)
        .await?;
        let (attempt,) = row.ok_or_else(|| StoreError::UnknownSession(id.to_string()))?;
        u32::try_from(attempt)
            .map_err(|_| StoreError::Corrupt { table: "sessions", message: format!("slurm_attempt {attempt}") })
    }

    /// Records the job `sbatch` returned for the current attempt.
    pub async fn set_slurm_job(&self, id: &SessionId, job: JobId) -> Result<(), StoreError> {
        sqlx::query("UPDATE sessions SET slurm_job = ? WHERE id = ?")
            .bind(i64::try_from(job.0).unwrap_or(i64::MAX))
            .bind(id.to_string())
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// Updates why a queued session waits (Slurm's reason changes while its job pends); only while it is queued.
    pub async fn set_waiting_reason(&self, id: &SessionId, reason: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE sessions SET exit_reason = ? WHERE id = ? AND state = 'queued'")
            .bind(reason)
            .bind(id.to_string())
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// Records how far the job's files were read.
    pub async fn set_follow_offsets(&self, id: &SessionId, events: u64, log: u64) -> Result<(), StoreError> {
        sqlx::query("UPDATE sessions SET events_offset = ?, log_offset = ? WHERE id = ?")
            .bind(i64::try_from(events).unwrap_or(i64::MAX))
            .bind(i64::try_from(log).unwrap_or(i64::MAX))
            .bind(id.to_string())
            .execute(&self.writer)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::queue::Device;
    use crate::store::NewSession;
    use crate::store::test_support::temp_store;

    #[tokio::test]
    async fn attempts_jobs_and_offsets_round_trip() {
        let (store, _dir) = temp_store().await;
        let new = NewSession::plain("ann", "emoji", Device::Gpu);
        let ids = store.enqueue(None, &[new], |_, _| "{}".into()).await.unwrap();
        let id = &ids[0];
        assert_eq!(store.slurm_record(id).await.unwrap(), SlurmRecord::default());
        assert_eq!(store.begin_slurm_attempt(id).await.unwrap(), 1);
        store.set_slurm_job(id, JobId(41)).await.unwrap();
        store.set_follow_offsets(id, 1200, 80).await.unwrap();
        let r = store.slurm_record(id).await.unwrap();
        assert_eq!(r, SlurmRecord { job: Some(JobId(41)), attempt: 1, events_offset: 1200, log_offset: 80 });
        // The next attempt forgets the old job but keeps the offsets: the files go on growing.
        assert_eq!(store.begin_slurm_attempt(id).await.unwrap(), 2);
        let r = store.slurm_record(id).await.unwrap();
        assert_eq!((r.job, r.attempt, r.events_offset), (None, 2, 1200));
        let unknown: SessionId = "ann/emoji/9".parse().unwrap();
        assert!(matches!(store.slurm_record(&unknown).await, Err(StoreError::UnknownSession(_))));
    }
}
