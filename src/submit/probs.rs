//! The probability cache: the class probabilities of every checkpoint that was submitted or evaluated, on the test and
//! validation splits, kept as float16 so that ensembles of cached members need no new inference.
//!
//! Layout, one folder per checkpoint:
//! `$RUSH_HOME/cache/probs/<user>/<dataset>/<n>/<epoch>/<split>[.flip].npy` (`<f2`, shape `(rows, classes)`, rows in
//! the split's order) and beside it `<split>[.flip].json`, a [`CacheMeta`] written after the `.npy`: an entry without
//! its sidecar is incomplete and ignored. `split` is `test` or `valid`; `.flip` marks horizontal-flip test-time
//! augmentation. The sidecar carries a digest of the sample order ([`order_digest`]) so probabilities are never mixed
//! with labels or members of another order.
//!
//! The cache lives outside the session folder: the training child owns that folder and never sees this one, and the
//! cache outlives checkpoint retention (a deleted checkpoint's probabilities still ensemble). It never holds labels.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::Digest;

use super::Tta;
use super::npy::{self, F16Matrix, NpyError};
use crate::core::ensemble::{EnsembleError, ProbRows, Probs};
use crate::core::session::SessionId;
use crate::home::Home;

/// The sidecar's format version.
pub const CACHE_VERSION: u32 = 1;

/// Which split the probabilities are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheSplit {
    Test,
    Valid,
}

impl fmt::Display for CacheSplit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CacheSplit::Test => "test",
            CacheSplit::Valid => "valid",
        })
    }
}

/// One cache entry: a checkpoint (its resolved epoch), a split, a test-time augmentation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    pub session: SessionId,
    pub epoch: u32,
    pub split: CacheSplit,
    pub tta: Tta,
}

/// The folder of every cached checkpoint of `session` (removed with the session).
pub fn session_dir(home: &Home, session: &SessionId) -> PathBuf {
    root(home).join(&session.user).join(&session.dataset).join(session.n.to_string())
}

impl CacheKey {
    /// The folder of this checkpoint's entries.
    pub fn dir(&self, home: &Home) -> PathBuf {
        session_dir(home, &self.session).join(self.epoch.to_string())
    }

    fn stem(&self) -> String {
        match self.tta {
            Tta::None => self.split.to_string(),
            Tta::Flip => format!("{}.flip", self.split),
        }
    }

    pub fn probs_path(&self, home: &Home) -> PathBuf {
        self.dir(home).join(format!("{}.npy", self.stem()))
    }

    pub fn meta_path(&self, home: &Home) -> PathBuf {
        self.dir(home).join(format!("{}.json", self.stem()))
    }
}

/// The sidecar of a cache entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheMeta {
    pub v: u32,
    pub session: SessionId,
    pub epoch: u32,
    pub split: CacheSplit,
    pub tta: Tta,
    pub rows: usize,
    pub classes: usize,
    /// [`order_digest`] of the split's samples, in row order.
    pub order: String,
}

impl CacheMeta {
    pub fn key(&self) -> CacheKey {
        CacheKey { session: self.session.clone(), epoch: self.epoch, split: self.split, tta: self.tta }
    }
}

/// What went wrong reading or writing the cache; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ProbsError {
    #[error(transparent)]
    Npy(#[from] NpyError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: bad cache sidecar: {source}")]
    Meta { path: PathBuf, source: serde_json::Error },
    #[error("{path}: {message}")]
    Mismatch { path: PathBuf, message: String },
    #[error("{path}: cached for sample order {found}, but the split's order is now {expected}; evaluate again")]
    StaleOrder { path: PathBuf, expected: String, found: String },
    #[error("{path}: {source}")]
    Probs { path: PathBuf, source: EnsembleError },
}

/// A digest of a split's sample order: sha256 over `key\n` for each sample (e.g. `package_id/sticker_id`), in order.
pub fn order_digest<'a>(keys: impl IntoIterator<Item = &'a str>) -> String {
    let mut hasher = sha2::Sha256::new();
    for key in keys {
        hasher.update(key.as_bytes());
        hasher.update(b"\n");
    }
    hex::encode(hasher.finalize())
}

/// Makes the entry's folder and removes its old sidecar, so that it never vouches for a half-replaced matrix; returns
/// the sidecar's path, written last.
fn begin_entry(home: &Home, key: &CacheKey) -> Result<PathBuf, ProbsError> {
    let dir = key.dir(home);
    fs::create_dir_all(&dir).map_err(|source| ProbsError::Io { path: dir.clone(), source })?;
    let meta_path = key.meta_path(home);
    match fs::remove_file(&meta_path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(ProbsError::Io { path: meta_path, source: e }),
        _ => Ok(meta_path),
    }
}

/// Stores `probs` under `key`: the `.npy` first, then the sidecar that marks the entry complete.
pub fn write(home: &Home, key: &CacheKey, order: &str, probs: &Probs) -> Result<CacheMeta, ProbsError> {
    let meta_path = begin_entry(home, key)?;
    npy::write_f16_matrix(&key.probs_path(home), probs.rows(), probs.classes(), probs.as_slice())?;
    write_meta(key, &meta_path, order, probs.rows(), probs.classes())
}

/// The sidecar of `key`, or `None` when the entry is absent or incomplete.
pub fn meta(home: &Home, key: &CacheKey) -> Result<Option<CacheMeta>, ProbsError> {
    let path = key.meta_path(home);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(ProbsError::Io { path, source }),
    };
    let meta: CacheMeta =
        serde_json::from_slice(&bytes).map_err(|source| ProbsError::Meta { path: path.clone(), source })?;
    if meta.v != CACHE_VERSION || meta.key() != *key {
        let message = format!("the sidecar describes {:?} v{}, not {key:?}", meta.key(), meta.v);
        return Err(ProbsError::Mismatch { path, message });
    }
    Ok(Some(meta))
}

/// Loads the probabilities of `key`, refusing them unless they were computed for the sample order `order`. `None`
/// when the entry is absent or incomplete.
pub fn read(home: &Home, key: &CacheKey, order: &str) -> Result<Option<Probs>, ProbsError> {
    let Some(meta) = meta(home, key)? else {
        return Ok(None);
    };
    let path = key.probs_path(home);
    if meta.order != order {
        return Err(ProbsError::StaleOrder { path, expected: order.to_string(), found: meta.order });
    }
    let (rows, classes, values) = npy::read_f16_matrix(&path)?;
    if (rows, classes) != (meta.rows, meta.classes) {
        let message = format!("shape ({rows}, {classes}), but the sidecar says ({}, {})", meta.rows, meta.classes);
        return Err(ProbsError::Mismatch { path, message });
    }
    Probs::new(rows, classes, values).map(Some).map_err(|source| ProbsError::Probs { path, source })
}

/// Maps the probabilities of `key` ([`F16Matrix`]: read a block of rows at a time, never copied whole), refusing them
/// unless they were computed for the sample order `order`. `None` when the entry is absent or incomplete.
pub fn open(home: &Home, key: &CacheKey, order: &str) -> Result<Option<F16Matrix>, ProbsError> {
    let Some(meta) = meta(home, key)? else {
        return Ok(None);
    };
    let path = key.probs_path(home);
    if meta.order != order {
        return Err(ProbsError::StaleOrder { path, expected: order.to_string(), found: meta.order });
    }
    let matrix = F16Matrix::open(&path)?;
    if (matrix.rows(), matrix.columns()) != (meta.rows, meta.classes) {
        let (rows, classes) = (matrix.rows(), matrix.columns());
        let message = format!("shape ({rows}, {classes}), but the sidecar says ({}, {})", meta.rows, meta.classes);
        return Err(ProbsError::Mismatch { path, message });
    }
    Ok(Some(matrix))
}

/// Stores the float16 `.npy` at `file` (as `rush infer` wrote it, in the sample order `order`) under `key` by moving
/// it into the cache, without reading it into memory: checked first (shape, finite values), then the sidecar that
/// marks the entry complete.
pub fn adopt(home: &Home, key: &CacheKey, order: &str, file: &Path) -> Result<CacheMeta, ProbsError> {
    let (rows, classes) = {
        let matrix = F16Matrix::open(file)?;
        (matrix.rows(), matrix.columns())
    };
    let meta_path = begin_entry(home, key)?;
    let to = key.probs_path(home);
    if fs::rename(file, &to).is_err() {
        // another file system: copy (durably, then renamed into place), then drop the original
        let bytes = fs::read(file).map_err(|source| ProbsError::Io { path: file.to_path_buf(), source })?;
        crate::disk::write_atomic(&to, &bytes).map_err(|e| ProbsError::Io { path: e.path, source: e.source })?;
        let _ = fs::remove_file(file);
    }
    write_meta(key, &meta_path, order, rows, classes)
}

fn write_meta(
    key: &CacheKey,
    meta_path: &Path,
    order: &str,
    rows: usize,
    classes: usize,
) -> Result<CacheMeta, ProbsError> {
    let meta = CacheMeta {
        v: CACHE_VERSION,
        session: key.session.clone(),
        epoch: key.epoch,
        split: key.split,
        tta: key.tta,
        rows,
        classes,
        order: order.to_string(),
    };
    let json = serde_json::to_vec_pretty(&meta)
        .map_err(|source| ProbsError::Meta { path: meta_path.to_path_buf(), source })?;
    crate::disk::write_atomic(meta_path, &json).map_err(|e| ProbsError::Io { path: e.path, source: e.source })?;
    Ok(meta)
}

/// Every complete entry of a dataset, by session, epoch, split and augmentation.
pub fn list(home: &Home, dataset: &str) -> Result<Vec<CacheMeta>, ProbsError> {
    let mut found = Vec::new();
    for user in subdirs(&root(home))? {
        for session in subdirs(&user.join(dataset))? {
            for checkpoint in subdirs(&session)? {
                for entry in read_dir(&checkpoint)? {
                    if entry.extension().is_some_and(|e| e == "json") {
                        let bytes =
                            fs::read(&entry).map_err(|source| ProbsError::Io { path: entry.clone(), source })?;
                        let meta: CacheMeta = serde_json::from_slice(&bytes)
                            .map_err(|source| ProbsError::Meta { path: entry, source })?;
                        found.push(meta);
                    }
                }
            }
        }
    }
    found.retain(|m| m.session.dataset == dataset);
    found.sort_by(|a, b| {
        (&a.session, a.epoch, a.split as u8, a.tta as u8).cmp(&(&b.session, b.epoch, b.split as u8, b.tta as u8))
    });
    Ok(found)
}

fn root(home: &Home) -> PathBuf {
    home.cache().join("probs")
}

fn read_dir(dir: &Path) -> Result<Vec<PathBuf>, ProbsError> {
    match fs::read_dir(dir) {
        Ok(entries) => {
            entries.map(|e| e.map(|e| e.path()).map_err(|source| ProbsError::Io { path: dir.into(), source })).collect()
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(ProbsError::Io { path: dir.into(), source }),
    }
}

fn subdirs(dir: &Path) -> Result<Vec<PathBuf>, ProbsError> {
    Ok(read_dir(dir)?.into_iter().filter(|p| p.is_dir()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u32, epoch: u32, split: CacheSplit, tta: Tta) -> CacheKey {
        CacheKey { session: SessionId::new("local", "emoji", n).unwrap(), epoch, split, tta }
    }

    fn probs(rows: usize, classes: usize, shift: usize) -> Probs {
        let data = (0..rows * classes).map(|i| ((i + shift) % 64) as f32 / 64.0).collect();
        Probs::new(rows, classes, data).unwrap()
    }

    #[test]
    fn entries_round_trip_and_are_listed() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path());
        let order = order_digest(["p1/s1", "p1/s2", "p2/s3"]);
        let k = key(3, 7, CacheSplit::Valid, Tta::None);
        assert_eq!(read(&home, &k, &order).unwrap(), None);
        let p = probs(3, 350, 0);
        let meta = write(&home, &k, &order, &p).unwrap();
        assert_eq!((meta.rows, meta.classes), (3, 350));
        assert_eq!(read(&home, &k, &order).unwrap(), Some(p.clone()));
        assert!(k.probs_path(&home).ends_with("cache/probs/local/emoji/3/7/valid.npy"));

        let flip = key(3, 7, CacheSplit::Test, Tta::Flip);
        write(&home, &flip, &order, &probs(3, 350, 5)).unwrap();
        assert!(flip.probs_path(&home).ends_with("7/test.flip.npy"));
        write(&home, &key(1, 2, CacheSplit::Valid, Tta::None), &order, &p).unwrap();
        // an entry whose sidecar is missing is incomplete: not listed, not read
        let partial = key(2, 1, CacheSplit::Valid, Tta::None);
        write(&home, &partial, &order, &p).unwrap();
        fs::remove_file(partial.meta_path(&home)).unwrap();
        assert_eq!(read(&home, &partial, &order).unwrap(), None);

        let listed: Vec<CacheKey> = list(&home, "emoji").unwrap().iter().map(CacheMeta::key).collect();
        assert_eq!(listed, vec![key(1, 2, CacheSplit::Valid, Tta::None), flip, k]);
        assert!(list(&home, "other").unwrap().is_empty());
    }

    #[test]
    fn another_order_or_a_tampered_entry_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path());
        let order = order_digest(["a", "b"]);
        let k = key(1, 1, CacheSplit::Test, Tta::None);
        write(&home, &k, &order, &probs(2, 4, 0)).unwrap();
        let other = order_digest(["b", "a"]);
        assert_ne!(order, other);
        assert!(matches!(read(&home, &k, &other), Err(ProbsError::StaleOrder { .. })));

        npy::write_f16_matrix(&k.probs_path(&home), 1, 8, &[0.0; 8]).unwrap();
        let err = read(&home, &k, &order).unwrap_err();
        assert!(matches!(err, ProbsError::Mismatch { .. }), "{err}");
        assert!(err.to_string().contains("test.npy"), "{err}");

        let moved = key(1, 2, CacheSplit::Test, Tta::None);
        fs::create_dir_all(moved.dir(&home)).unwrap();
        fs::copy(k.meta_path(&home), moved.meta_path(&home)).unwrap();
        assert!(matches!(meta(&home, &moved), Err(ProbsError::Mismatch { .. })));
        fs::write(k.meta_path(&home), b"{\"v\": 1}").unwrap();
        assert!(matches!(read(&home, &k, &order), Err(ProbsError::Meta { .. })));
    }

    /// `cargo test --release --lib bench_cache -- --ignored --nocapture`: write and load 5 cached members of
    /// 138,343 x 350 (warm page cache), then mix them.
    #[test]
    #[ignore]
    fn bench_cache_at_airush_scale() {
        use crate::core::ensemble::Mix;
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path());
        let (rows, classes) = (138_343, 350);
        let order = order_digest(["x"]);
        let keys: Vec<CacheKey> = (1..=5).map(|n| key(n, 1, CacheSplit::Test, Tta::None)).collect();
        let start = std::time::Instant::now();
        for (i, k) in keys.iter().enumerate() {
            write(&home, k, &order, &probs(rows, classes, i)).unwrap();
        }
        println!("write 5 cache entries: {:.3} s", start.elapsed().as_secs_f64());
        let start = std::time::Instant::now();
        let loaded: Vec<Probs> = keys.iter().map(|k| read(&home, k, &order).unwrap().unwrap()).collect();
        println!("load 5 cache entries: {:.3} s", start.elapsed().as_secs_f64());
        let start = std::time::Instant::now();
        let members: Vec<&Probs> = loaded.iter().collect();
        let predictions = Mix::equal(&members).unwrap().predict();
        println!("mix 5 loaded members -> predictions: {:.3} s", start.elapsed().as_secs_f64());
        assert_eq!(predictions.len(), rows);
    }
}
