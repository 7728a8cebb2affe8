//! The board as everyone may see it, and the reveal policy: a dataset's ranked submissions, ordered as
//! `core::score::board` decides, with private scores shown (and ranked by) only for the datasets the daemon's config
//! lists in `reveal_private` (after the deadline). Asking for them earlier is refused, so no one sees them early.
//! Nothing here reads test labels: only stored scores.

use serde::{Deserialize, Serialize};

use super::{Daemon, DaemonError};
use crate::core::score::{self, Reveal};

/// One line of the board.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BoardLineView {
    pub rank: usize,
    pub id: i64,
    pub sessions: Vec<String>,
    pub checkpoints: Vec<String>,
    pub weights: Vec<f64>,
    pub tta: String,
    pub public_score: f64,
    /// Only when revealed.
    pub private_score: Option<f64>,
    pub submitted_at: f64,
    pub user: String,
}

/// A dataset's board (the API's JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BoardView {
    pub dataset: String,
    /// Private scores shown and ranked by.
    pub revealed: bool,
    pub public_percent: u8,
    pub lines: Vec<BoardLineView>,
}

impl Daemon {
    /// Whether `dataset`'s private scores are revealed: only by the daemon's configuration (`reveal_private`).
    pub fn reveals(&self, dataset: &str) -> bool {
        self.config.reveal_private.iter().any(|d| d == dataset)
    }

    /// Refuses asking for private scores (`private=true`) of a dataset that is not revealed.
    pub fn check_private_asked(&self, dataset: &str, asked: bool) -> Result<(), DaemonError> {
        if asked && !self.reveals(dataset) {
            return Err(DaemonError::Forbidden(format!(
                "private scores of {dataset} are revealed after the deadline, by the daemon's config \
                 (`reveal_private: [{dataset}]`); until then the board shows public scores"
            )));
        }
        Ok(())
    }

    /// The board of a registered dataset. `asked`: private scores were asked for (`private=true`), refused unless the
    /// dataset is revealed.
    pub async fn board(&self, dataset: &str, asked: bool) -> Result<BoardView, DaemonError> {
        self.require_dataset("the board", dataset).await?;
        self.check_private_asked(dataset, asked)?;
        let rows = self.store.ranked_submissions(dataset).await?;
        let shown = self.reveals(dataset);
        let entries = rows
            .into_iter()
            .map(|r| score::Scored {
                id: r.id,
                submitted_at: time::OffsetDateTime::from_unix_timestamp_nanos((r.created_at * 1e9) as i128)
                    .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
                public: r.public_score.unwrap_or(0.0),
                private: r.private_score.unwrap_or(0.0),
                meta: r,
            })
            .collect();
        let lines = score::board(entries, if shown { Reveal::Private } else { Reveal::Public })
            .into_iter()
            .map(|l| BoardLineView {
                rank: l.rank,
                id: l.id,
                sessions: l.meta.members.iter().map(|m| m.session.clone()).collect(),
                checkpoints: l.meta.members.iter().map(|m| m.epoch.to_string()).collect(),
                weights: l.meta.members.iter().map(|m| m.weight).collect(),
                tta: l.meta.tta.clone(),
                public_score: l.public,
                private_score: l.private,
                submitted_at: l.meta.created_at,
                user: l.meta.user.clone(),
            })
            .collect();
        Ok(BoardView {
            dataset: dataset.to_string(),
            revealed: shown,
            public_percent: self.config.public_percent,
            lines,
        })
    }
}
