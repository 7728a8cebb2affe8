//! The users of a shared daemon: those the config file lists plus `$RUSH_HOME/users.yaml`, which `rush user add`
//! writes and the daemon reads again whenever it changes (no restart to add a team). The rule that uses them is pure,
//! in `core::access`; this module is the file's I/O.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::core::access::{Role, UserEntry, Users, new_token};
use crate::core::session::validate_name;

#[derive(Debug, thiserror::Error)]
pub enum UsersFileError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// What `users.yaml` holds.
#[derive(Debug, Default, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    users: Vec<UserEntry>,
}

/// A file's size and modification time: read again when either changes (`None`: no file).
type Stamp = Option<(u64, SystemTime)>;

/// The users in effect: the config's and the file's, read again when the file's size or time changes.
#[derive(Debug)]
pub struct Directory {
    configured: Vec<UserEntry>,
    file: PathBuf,
    cached: Mutex<(Stamp, Arc<Users>)>,
}

impl Directory {
    pub fn new(configured: Vec<UserEntry>, file: PathBuf) -> Directory {
        let users = Users::new(configured.clone()).unwrap_or_default();
        Directory { configured, file, cached: Mutex::new((None, Arc::new(users))) }
    }

    /// The users now. A file that cannot be read or is invalid is logged and the users read before stay in effect,
    /// so a half-edited file never locks every team out.
    pub fn current(&self) -> Arc<Users> {
        let stamp =
            std::fs::metadata(&self.file).ok().map(|m| (m.len(), m.modified().unwrap_or(SystemTime::UNIX_EPOCH)));
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if cached.0 == stamp {
            return cached.1.clone();
        }
        let listed = match stamp {
            None => Ok(Vec::new()),
            Some(_) => read(&self.file),
        };
        let merged = listed.and_then(|listed| {
            let mut all = self.configured.clone();
            all.extend(listed);
            Users::new(all).map_err(|e| UsersFileError::Invalid { path: self.file.clone(), message: e.to_string() })
        });
        match merged {
            Ok(users) => *cached = (stamp, Arc::new(users)),
            Err(e) => {
                tracing::error!("{e}; the users read before stay in effect");
                cached.0 = stamp;
            }
        }
        cached.1.clone()
    }
}

fn read(path: &Path) -> Result<Vec<UserEntry>, UsersFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| UsersFileError::Io { path: path.into(), source })?;
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let file: UsersFile = serde_saphyr::from_str(&text)
        .map_err(|e| UsersFileError::Invalid { path: path.into(), message: e.to_string() })?;
    Ok(file.users)
}

/// `rush user add`: lists `name` in `path` with a new token's digest and returns the token, which is shown once and
/// kept nowhere. A name already listed there is refused.
pub fn add(path: &Path, name: &str, gpus: Option<u32>, role: Role) -> Result<String, UsersFileError> {
    let invalid = |message: String| UsersFileError::Invalid { path: path.into(), message };
    validate_name(name).map_err(|e| invalid(format!("user name {name:?}: {e}")))?;
    let mut users = if path.exists() { read(path)? } else { Vec::new() };
    if users.iter().any(|u| u.name == name) {
        return Err(invalid(format!("{name} is already listed (remove its entry to give it a new token)")));
    }
    let (token, token_sha256) = new_token();
    users.push(UserEntry { name: name.to_string(), token_sha256, gpus, role });
    Users::new(users.clone()).map_err(|e| invalid(e.to_string()))?;
    let text = serde_saphyr::to_string(&UsersFile { users }).map_err(|e| invalid(e.to_string()))?;
    let header = "# Users of this rush daemon, written by `rush user add` (tokens are kept only as SHA-256).\n";
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| UsersFileError::Io { path: dir.into(), source })?;
    }
    crate::disk::write_atomic(path, format!("{header}{text}").as_bytes()).map_err(|e| invalid(e.to_string()))?;
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::access::token_sha256;

    #[test]
    fn added_users_are_read_as_the_file_changes_and_a_broken_file_keeps_the_old_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.yaml");
        let org = UserEntry { name: "org".into(), token_sha256: token_sha256("o"), gpus: None, role: Role::Admin };
        let directory = Directory::new(vec![org], path.clone());
        assert_eq!(directory.current().entries().count(), 1, "the config's users without a file");

        let token = add(&path, "team07", Some(2), Role::Member).unwrap();
        let users = directory.current();
        let team = users.identify(&token).expect("the new token names team07");
        assert_eq!((team.name.as_str(), team.gpus, team.role), ("team07", Some(2), Role::Member));
        assert!(!std::fs::read_to_string(&path).unwrap().contains(&token), "only the digest is written");

        let err = add(&path, "team07", None, Role::Member).unwrap_err().to_string();
        assert!(err.contains("team07 is already listed"), "{err}");
        assert!(add(&path, "../x", None, Role::Member).unwrap_err().to_string().contains("user name \"../x\""));

        std::fs::write(&path, "users: [{name: team08, token_sha256: nothex}]\n").unwrap();
        let kept = directory.current();
        assert!(kept.identify(&token).is_some(), "a broken file keeps the users read before");
    }
}
