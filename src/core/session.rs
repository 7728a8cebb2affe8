//! Session ids (`user/dataset/n`, as NSML printed them) and the session state machine, written once.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a session id or a state transition was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SessionError {
    #[error("invalid session id {0:?}: expected USER/DATASET/N, e.g. local/emoji/3")]
    InvalidId(String),
    #[error("invalid name {0:?}: use letters, digits, '-', '_' and '.', starting with a letter or digit")]
    InvalidName(String),
    #[error("session {id}: cannot go from {from} to {to}")]
    IllegalTransition { id: String, from: SessionState, to: SessionState },
    #[error("invalid session {0:?}: expected USER/DATASET/N, DATASET/N or N (yours), e.g. local/emoji/3, emoji/3 or 3")]
    InvalidRef(String),
    #[error("no session {typed} of user {user}{}", looked_in(.datasets))]
    NoSuch { typed: String, user: String, datasets: Vec<String> },
    #[error("session {typed} could be {}: give its dataset (DATASET/N) or the whole id", .matches.join(" or "))]
    Ambiguous { typed: String, matches: Vec<String> },
}

fn looked_in(datasets: &[String]) -> String {
    if datasets.is_empty() { String::new() } else { format!(" (looked in {})", datasets.join(", ")) }
}

/// A user, dataset or similar name that becomes a path component and a URL segment.
pub fn validate_name(name: &str) -> Result<(), SessionError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.contains("..");
    if ok { Ok(()) } else { Err(SessionError::InvalidName(name.to_string())) }
}

/// `user/dataset/n`: the folder under `sessions/` and the path in URLs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SessionId {
    pub user: String,
    pub dataset: String,
    pub n: u32,
}

impl SessionId {
    pub fn new(user: &str, dataset: &str, n: u32) -> Result<Self, SessionError> {
        validate_name(user)?;
        validate_name(dataset)?;
        if n == 0 {
            return Err(SessionError::InvalidId(format!("{user}/{dataset}/0")));
        }
        Ok(Self { user: user.to_string(), dataset: dataset.to_string(), n })
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.user, self.dataset, self.n)
    }
}

impl FromStr for SessionId {
    type Err = SessionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || SessionError::InvalidId(s.to_string());
        let mut parts = s.split('/');
        let (Some(user), Some(dataset), Some(n), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let n: u32 = n.parse().map_err(|_| bad())?;
        Self::new(user, dataset, n).map_err(|_| bad())
    }
}

impl TryFrom<String> for SessionId {
    type Error = SessionError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<SessionId> for String {
    fn from(id: SessionId) -> String {
        id.to_string()
    }
}

/// A session as a user may type it: the whole id, `dataset/n` (the current user's session on that dataset) or `n`
/// (the current user's session with that number, on whichever dataset has one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionRef {
    Full(SessionId),
    OnDataset { dataset: String, n: u32 },
    Number(u32),
}

impl FromStr for SessionRef {
    type Err = SessionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || SessionError::InvalidRef(s.to_string());
        let number = |n: &str| n.parse::<u32>().ok().filter(|n| *n > 0).ok_or_else(bad);
        match s.matches('/').count() {
            0 => Ok(SessionRef::Number(number(s)?)),
            1 => {
                let (dataset, n) = s.split_once('/').ok_or_else(bad)?;
                validate_name(dataset).map_err(|_| bad())?;
                Ok(SessionRef::OnDataset { dataset: dataset.to_string(), n: number(n)? })
            }
            _ => s.parse().map(SessionRef::Full).map_err(|_| bad()),
        }
    }
}

impl SessionRef {
    /// The ids this may name for `user`; a bare number is tried on each of `datasets`.
    pub fn candidates(&self, user: &str, datasets: &[String]) -> Vec<SessionId> {
        match self {
            SessionRef::Full(id) => vec![id.clone()],
            SessionRef::OnDataset { dataset, n } => SessionId::new(user, dataset, *n).into_iter().collect(),
            SessionRef::Number(n) => datasets.iter().filter_map(|d| SessionId::new(user, d, *n).ok()).collect(),
        }
    }

    /// The one session meant, given which of the [`SessionRef::candidates`] exist: a whole id or `dataset/n` needs
    /// no lookup (an unknown one is reported where it is used); a number must match exactly one.
    pub fn pick(
        &self,
        typed: &str,
        user: &str,
        datasets: &[String],
        existing: Vec<SessionId>,
    ) -> Result<SessionId, SessionError> {
        match self {
            SessionRef::Full(id) => Ok(id.clone()),
            SessionRef::OnDataset { dataset, n } => {
                SessionId::new(user, dataset, *n).map_err(|_| SessionError::InvalidRef(typed.to_string()))
            }
            SessionRef::Number(_) => match existing.len() {
                1 => Ok(existing.into_iter().next().ok_or_else(|| SessionError::InvalidRef(typed.to_string()))?),
                0 => Err(SessionError::NoSuch {
                    typed: typed.to_string(),
                    user: user.to_string(),
                    datasets: datasets.to_vec(),
                }),
                _ => Err(SessionError::Ambiguous {
                    typed: typed.to_string(),
                    matches: existing.iter().map(|i| i.to_string()).collect(),
                }),
            },
        }
    }
}

/// Where a session is in its life. `Running` is only ever believed while the daemon that started it lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Stopped,
    Interrupted,
    /// A sweep's trial that reached an ASHA rung (`core::asha`): it holds no slot and waits for the rung's decision,
    /// then goes back to the queue (promoted, resuming from its checkpoint) or ends `pruned`.
    Waiting,
    /// Stopped early by the sweep's searcher at a rung; its checkpoints stay, to submit or fork like any other.
    Pruned,
}

impl SessionState {
    pub const ALL: [SessionState; 8] = [
        SessionState::Queued,
        SessionState::Running,
        SessionState::Succeeded,
        SessionState::Failed,
        SessionState::Stopped,
        SessionState::Interrupted,
        SessionState::Waiting,
        SessionState::Pruned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Queued => "queued",
            SessionState::Running => "running",
            SessionState::Succeeded => "succeeded",
            SessionState::Failed => "failed",
            SessionState::Stopped => "stopped",
            SessionState::Interrupted => "interrupted",
            SessionState::Waiting => "waiting",
            SessionState::Pruned => "pruned",
        }
    }

    pub fn is_terminal(self) -> bool {
        !matches!(self, SessionState::Queued | SessionState::Running | SessionState::Waiting)
    }

    /// The legal transitions, in one place.
    ///
    /// - queued -> running (a slot took it), stopped (stopped while waiting), failed (refused, e.g. needs a GPU)
    /// - running -> succeeded | failed | stopped; -> queued (daemon restart with resume) | interrupted (without);
    ///   -> waiting (a sweep's trial paused at an ASHA rung)
    /// - waiting -> queued (promoted: it resumes) | pruned | stopped | failed (it can no longer resume)
    /// - a terminal session may be queued again only by resume (interrupted -> queued).
    pub fn can_become(self, to: SessionState) -> bool {
        use SessionState::*;
        matches!(
            (self, to),
            (Queued, Running | Stopped | Failed)
                | (Running, Succeeded | Failed | Stopped | Queued | Interrupted | Waiting)
                | (Waiting, Queued | Pruned | Stopped | Failed)
                | (Interrupted, Queued)
        )
    }

    pub fn transition(self, id: &SessionId, to: SessionState) -> Result<SessionState, SessionError> {
        if self.can_become(to) {
            Ok(to)
        } else {
            Err(SessionError::IllegalTransition { id: id.to_string(), from: self, to })
        }
    }
}

impl fmt::Display for SessionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SessionState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SessionState::ALL.into_iter().find(|st| st.as_str() == s).ok_or_else(|| format!("unknown session state {s:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_reject_paths() {
        let id: SessionId = "nsmlteam/airush1/1".parse().unwrap();
        assert_eq!(id.to_string(), "nsmlteam/airush1/1");
        for bad in ["a/b", "a/b/c/d", "a/b/x", "../b/1", "a/../1", "a/b/0", "/b/1", "a b/c/1", ""] {
            assert!(bad.parse::<SessionId>().is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn shorthands_name_the_current_user_s_sessions() {
        let datasets = vec!["emoji".to_string(), "synth".to_string()];
        let id = |s: &str| s.parse::<SessionId>().unwrap();
        let full: SessionRef = "bob/emoji/3".parse().unwrap();
        assert_eq!(full.pick("bob/emoji/3", "tester", &datasets, vec![]), Ok(id("bob/emoji/3")));
        let on: SessionRef = "emoji/3".parse().unwrap();
        assert_eq!(on, SessionRef::OnDataset { dataset: "emoji".into(), n: 3 });
        assert_eq!(on.candidates("tester", &datasets), [id("tester/emoji/3")]);
        assert_eq!(on.pick("emoji/3", "tester", &datasets, vec![]), Ok(id("tester/emoji/3")));
        let n: SessionRef = "3".parse().unwrap();
        assert_eq!(n.candidates("tester", &datasets), [id("tester/emoji/3"), id("tester/synth/3")]);
        assert_eq!(n.pick("3", "tester", &datasets, vec![id("tester/synth/3")]), Ok(id("tester/synth/3")));
        let both = n.pick("3", "tester", &datasets, vec![id("tester/emoji/3"), id("tester/synth/3")]).unwrap_err();
        assert_eq!(
            both.to_string(),
            "session 3 could be tester/emoji/3 or tester/synth/3: give its dataset (DATASET/N) or the whole id"
        );
        let none = n.pick("3", "tester", &datasets, vec![]).unwrap_err().to_string();
        assert_eq!(none, "no session 3 of user tester (looked in emoji, synth)");
        for bad in ["0", "x", "emoji/x", "../3", "a/b/c/d", "", "emoji/0", "-1"] {
            let e = bad.parse::<SessionRef>().unwrap_err();
            assert!(e.to_string().contains("DATASET/N or N"), "{bad}: {e}");
        }
    }

    #[test]
    fn transitions_are_explicit() {
        use SessionState::*;
        let id: SessionId = "local/emoji/1".parse().unwrap();
        assert_eq!(Queued.transition(&id, Running), Ok(Running));
        assert_eq!(Running.transition(&id, Queued), Ok(Queued));
        assert!(Succeeded.transition(&id, Running).is_err());
        assert!(Stopped.transition(&id, Queued).is_err());
        assert!(Queued.transition(&id, Succeeded).is_err());
        let msg = Failed.transition(&id, Running).unwrap_err().to_string();
        assert_eq!(msg, "session local/emoji/1: cannot go from failed to running");
        // A sweep's trial pauses at a rung, then resumes or is pruned; it never runs again straight from waiting.
        assert_eq!(Running.transition(&id, Waiting), Ok(Waiting));
        assert_eq!(Waiting.transition(&id, Queued), Ok(Queued));
        assert_eq!(Waiting.transition(&id, Pruned), Ok(Pruned));
        assert_eq!(Waiting.transition(&id, Stopped), Ok(Stopped));
        assert!(Waiting.transition(&id, Running).is_err());
        assert!(Queued.transition(&id, Waiting).is_err());
        assert!(Pruned.transition(&id, Queued).is_err());
        assert!(Pruned.is_terminal() && !Waiting.is_terminal());
    }
}
