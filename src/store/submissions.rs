//! Submission rows: queued by the API, run by the daemon's submission worker, scored by the scorer. The daily limit is
//! checked and the row inserted in one transaction on the single writer, so two requests can never both take the last
//! submission of the day.

use serde::{Deserialize, Serialize};

use super::{Store, StoreError};
use crate::core::session::SessionId;

/// Where a submission stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubmissionState {
    Queued,
    Running,
    Scored,
    Failed,
}

impl SubmissionState {
    pub fn as_str(self) -> &'static str {
        match self {
            SubmissionState::Queued => "queued",
            SubmissionState::Running => "running",
            SubmissionState::Scored => "scored",
            SubmissionState::Failed => "failed",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, SubmissionState::Scored | SubmissionState::Failed)
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "queued" => SubmissionState::Queued,
            "running" => SubmissionState::Running,
            "scored" => SubmissionState::Scored,
            "failed" => SubmissionState::Failed,
            other => {
                return Err(StoreError::Corrupt { table: "submissions", message: format!("unknown state {other:?}") });
            }
        })
    }
}

impl std::fmt::Display for SubmissionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One member as stored: the checkpoint as asked and the epoch it resolved to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredMember {
    pub session: String,
    pub checkpoint: String,
    pub epoch: u32,
    pub weight: f64,
}

/// A submission to insert.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSubmission {
    pub dataset: String,
    pub user: String,
    pub members: Vec<StoredMember>,
    pub tta: String,
    pub dry_run: bool,
    pub created_at: f64,
}

/// A submission as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct SubmissionRow {
    pub id: i64,
    pub dataset: String,
    pub user: String,
    pub members: Vec<StoredMember>,
    pub tta: String,
    pub dry_run: bool,
    pub state: SubmissionState,
    pub public_score: Option<f64>,
    pub private_score: Option<f64>,
    pub samples: Option<i64>,
    pub npy_path: Option<String>,
    pub error: Option<String>,
    pub slot: Option<String>,
    pub infer_seconds: Option<f64>,
    pub score_seconds: Option<f64>,
    pub created_at: f64,
    pub started_at: Option<f64>,
    pub finished_at: Option<f64>,
}

#[derive(sqlx::FromRow)]
struct RawRow {
    id: i64,
    dataset: String,
    user: String,
    members: String,
    tta: String,
    dry_run: bool,
    state: String,
    public_score: Option<f64>,
    private_score: Option<f64>,
    samples: Option<i64>,
    npy_path: Option<String>,
    error: Option<String>,
    slot: Option<String>,
    infer_seconds: Option<f64>,
    score_seconds: Option<f64>,
    created_at: f64,
    started_at: Option<f64>,
    finished_at: Option<f64>,
}

impl TryFrom<RawRow> for SubmissionRow {
    type Error = StoreError;
    fn try_from(r: RawRow) -> Result<Self, StoreError> {
        let members = serde_json::from_str(&r.members).map_err(|e| StoreError::Corrupt {
            table: "submissions",
            message: format!("submission {}: members: {e}", r.id),
        })?;
        Ok(SubmissionRow {
            id: r.id,
            dataset: r.dataset,
            user: r.user,
            members,
            tta: r.tta,
            dry_run: r.dry_run,
            state: SubmissionState::parse(&r.state)?,
            public_score: r.public_score,
            private_score: r.private_score,
            samples: r.samples,
            npy_path: r.npy_path,
            error: r.error,
            slot: r.slot,
            infer_seconds: r.infer_seconds,
            score_seconds: r.score_seconds,
            created_at: r.created_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
        })
    }
}

fn rows(raw: Vec<RawRow>) -> Result<Vec<SubmissionRow>, StoreError> {
    raw.into_iter().map(SubmissionRow::try_from).collect()
}

/// A finished submission's results.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredSubmission {
    pub public_score: f64,
    /// `None` for a dry run.
    pub private_score: Option<f64>,
    pub samples: i64,
    pub npy_path: String,
    pub infer_seconds: f64,
    pub score_seconds: f64,
}

impl Store {
    /// Inserts a queued submission. Unless it is a dry run, `allow` first sees how many ranked submissions (queued,
    /// running or scored; not dry runs, not failed) the user made to this dataset in `[day_start, day_end)` and may
    /// refuse; the count
    /// and the insert share one transaction.
    pub async fn add_submission<E>(
        &self,
        new: &NewSubmission,
        (day_start, day_end): (f64, f64),
        allow: impl FnOnce(u32) -> Result<(), E>,
    ) -> Result<Result<i64, E>, StoreError> {
        let members = serde_json::to_string(&new.members)
            .map_err(|e| StoreError::Corrupt { table: "submissions", message: e.to_string() })?;
        let mut tx = self.writer.begin().await?;
        if !new.dry_run {
            let (used,): (i64,) = sqlx::query_as(
                "SELECT COUNT(*) FROM submissions WHERE user = ? AND dataset = ? AND dry_run = 0 AND state != 'failed'
                 AND created_at >= ? AND created_at < ?",
            )
            .bind(&new.user)
            .bind(&new.dataset)
            .bind(day_start)
            .bind(day_end)
            .fetch_one(&mut *tx)
            .await?;
            if let Err(e) = allow(used.clamp(0, i64::from(u32::MAX)) as u32) {
                tx.rollback().await?;
                return Ok(Err(e));
            }
        }
        let (id,): (i64,) = sqlx::query_as(
            "INSERT INTO submissions (dataset, user, members, tta, dry_run, state, created_at)
             VALUES (?, ?, ?, ?, ?, 'queued', ?) RETURNING id",
        )
        .bind(&new.dataset)
        .bind(&new.user)
        .bind(members)
        .bind(&new.tta)
        .bind(new.dry_run)
        .bind(new.created_at)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Ok(id))
    }

    /// How many ranked submissions (not dry runs, not failed) `user` made to `dataset` in `[day_start, day_end)`: what
    /// the daily limit counts.
    pub async fn ranked_submissions_made(
        &self,
        user: &str,
        dataset: &str,
        (day_start, day_end): (f64, f64),
    ) -> Result<u32, StoreError> {
        let (used,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM submissions WHERE user = ? AND dataset = ? AND dry_run = 0 AND state != 'failed'
             AND created_at >= ? AND created_at < ?",
        )
        .bind(user)
        .bind(dataset)
        .bind(day_start)
        .bind(day_end)
        .fetch_one(&self.reader)
        .await?;
        Ok(used.clamp(0, i64::from(u32::MAX)) as u32)
    }

    pub async fn submission(&self, id: i64) -> Result<Option<SubmissionRow>, StoreError> {
        let raw: Option<RawRow> =
            sqlx::query_as("SELECT * FROM submissions WHERE id = ?").bind(id).fetch_optional(&self.writer).await?;
        raw.map(SubmissionRow::try_from).transpose()
    }

    /// Submissions, newest first, of one dataset or all.
    /// The submissions with `session` among their members, newest first.
    pub async fn submissions_of(&self, session: &SessionId) -> Result<Vec<SubmissionRow>, StoreError> {
        let raw: Vec<RawRow> = sqlx::query_as(
            "SELECT * FROM submissions s
              WHERE EXISTS (SELECT 1 FROM json_each(s.members) m WHERE json_extract(m.value, '$.session') = ?)
              ORDER BY id DESC",
        )
        .bind(session.to_string())
        .fetch_all(&self.reader)
        .await?;
        rows(raw)
    }

    pub async fn submissions(&self, dataset: Option<&str>) -> Result<Vec<SubmissionRow>, StoreError> {
        let raw: Vec<RawRow> = match dataset {
            Some(d) => {
                sqlx::query_as("SELECT * FROM submissions WHERE dataset = ? ORDER BY id DESC")
                    .bind(d)
                    .fetch_all(&self.reader)
                    .await?
            }
            None => sqlx::query_as("SELECT * FROM submissions ORDER BY id DESC").fetch_all(&self.reader).await?,
        };
        rows(raw)
    }

    /// The ranked (scored, not dry-run) submissions of a dataset: what the board orders.
    pub async fn ranked_submissions(&self, dataset: &str) -> Result<Vec<SubmissionRow>, StoreError> {
        let raw: Vec<RawRow> = sqlx::query_as(
            "SELECT * FROM submissions WHERE dataset = ? AND state = 'scored' AND dry_run = 0 ORDER BY id",
        )
        .bind(dataset)
        .fetch_all(&self.reader)
        .await?;
        rows(raw)
    }

    /// The oldest queued submission.
    pub async fn next_queued_submission(&self) -> Result<Option<SubmissionRow>, StoreError> {
        let raw: Option<RawRow> =
            sqlx::query_as("SELECT * FROM submissions WHERE state = 'queued' ORDER BY id LIMIT 1")
                .fetch_optional(&self.writer)
                .await?;
        raw.map(SubmissionRow::try_from).transpose()
    }

    /// queued -> running, in `slot`.
    pub async fn start_submission(&self, id: i64, slot: &str, at: f64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE submissions SET state = 'running', slot = ?, started_at = ? WHERE id = ? AND state = 'queued'",
        )
        .bind(slot)
        .bind(at)
        .bind(id)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// What a running submission's slot column says (under Slurm: the slot, its job and whether Slurm keeps it
    /// waiting, e.g. `gpu0, Slurm job 42 pending: Resources`).
    pub async fn set_submission_slot(&self, id: i64, slot: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE submissions SET slot = ? WHERE id = ? AND state = 'running'")
            .bind(slot)
            .bind(id)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// running -> scored.
    pub async fn score_submission(&self, id: i64, s: &ScoredSubmission, at: f64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE submissions SET state = 'scored', public_score = ?, private_score = ?, samples = ?, npy_path = ?,
                 infer_seconds = ?, score_seconds = ?, finished_at = ?, error = NULL
             WHERE id = ?",
        )
        .bind(s.public_score)
        .bind(s.private_score)
        .bind(s.samples)
        .bind(&s.npy_path)
        .bind(s.infer_seconds)
        .bind(s.score_seconds)
        .bind(at)
        .bind(id)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// -> failed, with the reason.
    pub async fn fail_submission(&self, id: i64, error: &str, at: f64) -> Result<(), StoreError> {
        sqlx::query("UPDATE submissions SET state = 'failed', error = ?, finished_at = ? WHERE id = ?")
            .bind(error)
            .bind(at)
            .bind(id)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// Back to the queue (a daemon shutdown or restart interrupted it); returns how many were requeued.
    pub async fn requeue_running_submissions(&self) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE submissions SET state = 'queued', slot = NULL, started_at = NULL, pid = NULL, pid_start = NULL
             WHERE state = 'running'",
        )
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected())
    }

    /// Puts one running submission back in the queue.
    pub async fn requeue_submission(&self, id: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE submissions SET state = 'queued', slot = NULL, started_at = NULL, pid = NULL, pid_start = NULL
             WHERE id = ?",
        )
        .bind(id)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Records the local child a running submission's inference runs in (its pid and start time).
    pub async fn set_submission_child(&self, id: i64, pid: u32, start: Option<u64>) -> Result<(), StoreError> {
        sqlx::query("UPDATE submissions SET pid = ?, pid_start = ? WHERE id = ? AND state = 'running'")
            .bind(i64::from(pid))
            .bind(start.and_then(|s| i64::try_from(s).ok()))
            .bind(id)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// The children recorded for running submissions, as (submission, pid, start time).
    pub async fn running_submission_children(&self) -> Result<Vec<(i64, Option<i64>, Option<i64>)>, StoreError> {
        Ok(sqlx::query_as("SELECT id, pid, pid_start FROM submissions WHERE state = 'running' AND pid IS NOT NULL")
            .fetch_all(&self.writer)
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::temp_store;
    use super::*;

    fn new(user: &str, dry_run: bool, at: f64) -> NewSubmission {
        NewSubmission {
            dataset: "emoji".into(),
            user: user.into(),
            members: vec![StoredMember {
                session: format!("{user}/emoji/1"),
                checkpoint: "best".into(),
                epoch: 2,
                weight: 1.0,
            }],
            tta: "none".into(),
            dry_run,
            created_at: at,
        }
    }

    #[tokio::test]
    async fn the_limit_counts_ranked_submissions_of_the_day_in_the_same_transaction() {
        let (store, _dir) = temp_store().await;
        let day = (100.0, 200.0);
        let limit = |used: u32| if used < 2 { Ok(()) } else { Err(used) };
        let a = store.add_submission(&new("ann", false, 150.0), day, limit).await.unwrap().unwrap();
        store.add_submission(&new("ann", false, 50.0), day, limit).await.unwrap().unwrap(); // yesterday
        store.add_submission(&new("ann", true, 151.0), day, limit).await.unwrap().unwrap(); // dry run
        store.add_submission(&new("bob", false, 151.0), day, limit).await.unwrap().unwrap();
        let other_dataset = NewSubmission { dataset: "synth".into(), ..new("ann", false, 151.5) };
        store.add_submission(&other_dataset, day, limit).await.unwrap().unwrap();
        let b = store.add_submission(&new("ann", false, 152.0), day, limit).await.unwrap().unwrap();
        assert_eq!(store.add_submission(&new("ann", false, 153.0), day, limit).await.unwrap(), Err(2));
        // a failed one gives its place back
        store.fail_submission(b, "boom", 160.0).await.unwrap();
        store.add_submission(&new("ann", false, 161.0), day, limit).await.unwrap().unwrap();

        assert_eq!(store.next_queued_submission().await.unwrap().unwrap().id, a);
        store.start_submission(a, "cpu0", 170.0).await.unwrap();
        let row = store.submission(a).await.unwrap().unwrap();
        assert_eq!((row.state, row.slot.as_deref()), (SubmissionState::Running, Some("cpu0")));
        assert_eq!(row.members[0].epoch, 2);
        let scored = ScoredSubmission {
            public_score: 0.5,
            private_score: Some(0.25),
            samples: 10,
            npy_path: "/x/predictions.npy".into(),
            infer_seconds: 1.0,
            score_seconds: 0.1,
        };
        store.score_submission(a, &scored, 180.0).await.unwrap();
        let ranked = store.ranked_submissions("emoji").await.unwrap();
        assert_eq!(ranked.iter().map(|r| r.id).collect::<Vec<_>>(), vec![a]);
        assert_eq!((ranked[0].public_score, ranked[0].private_score), (Some(0.5), Some(0.25)));
        assert_eq!(store.submissions(Some("emoji")).await.unwrap().len(), 6);
        assert_eq!(store.submissions(Some("other")).await.unwrap().len(), 0);

        let c = store.next_queued_submission().await.unwrap().unwrap().id;
        store.set_submission_child(c, 42, Some(7)).await.unwrap();
        assert!(store.running_submission_children().await.unwrap().is_empty(), "only a running one has a child");
        store.start_submission(c, "cpu0", 190.0).await.unwrap();
        store.set_submission_child(c, 42, Some(7)).await.unwrap();
        assert_eq!(store.running_submission_children().await.unwrap(), vec![(c, Some(42), Some(7))]);
        assert_eq!(store.requeue_running_submissions().await.unwrap(), 1);
        assert!(store.running_submission_children().await.unwrap().is_empty());
        assert_eq!(store.submission(c).await.unwrap().unwrap().state, SubmissionState::Queued);
    }
}
