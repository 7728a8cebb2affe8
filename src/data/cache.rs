//! The decoded-image cache: every image of a list (a dataset's training stickers, a test split) decoded once by
//! `data::image::load_rgb` at one square size and kept as raw uint8 HxWx3 in one memory-mapped file, so later epochs,
//! sessions and submissions copy bytes instead of decoding PNGs.
//!
//! File layout (little endian): a 64-byte header (`RUSHIMG\0`, format version, side, count, a 32-byte fingerprint),
//! one status byte per image (1 decoded, 2 undecodable), padding to a multiple of 64, then `count` images of
//! `side * side * 3` bytes in list order.
//!
//! The fingerprint is a SHA-256 of the side and of each image's path, length and modification time: a changed, added,
//! removed or reordered image gives another fingerprint and the file is rebuilt. A file that is not exactly what its
//! header promises (truncated, foreign, unfinished) is rebuilt too, and the report says why. A build decodes in
//! parallel into a temporary file in the same folder and renames it into place, so readers (other sessions) only ever
//! see complete files; a published file is never written again (a rebuild replaces it by a new inode).
//!
//! A build can hand each run of images to the caller as soon as it is decoded ([`ImageCache::open_or_build_with`]), so
//! `rush infer` predicts while the cache of a test split is being built; [`ImageCache::open_existing`] only reuses a
//! current file and never builds one (a subset of a split, such as the validation images, is not worth a build).

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::{Instant, UNIX_EPOCH};

use memmap2::{Mmap, MmapMut};
use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::disk::WriteError;

const MAGIC: &[u8; 8] = b"RUSHIMG\0";
const VERSION: u32 = 1;
const HEADER: usize = 64;
const OK: u8 = 1;
const BAD: u8 = 2;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("image cache {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("image cache {path}: {count} images of {side}x{side} do not fit in memory addresses")]
    TooLarge { path: PathBuf, count: usize, side: u32 },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CacheError + '_ {
    move |source| CacheError::Io { path: path.to_path_buf(), source }
}

/// What opening the cache did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CacheReport {
    /// The file was (re)built by this call.
    pub built: bool,
    /// Why an existing file was not used (absent when there was none, or it was used).
    pub rebuilt_because: Option<String>,
    /// Images decoded by this call (0 when the file was reused).
    pub decoded: usize,
    /// Images that failed to decode during this build: (list index, error naming the file).
    pub failures: Vec<(usize, String)>,
    pub seconds: f64,
}

/// Images a build decodes between two calls of its `on_decoded` callback (a multiple of `rush infer`'s batch).
pub const BUILD_CHUNK: usize = 1024;

/// A run of images a build has just written, in list order (see [`ImageCache::open_or_build_with`]).
#[derive(Debug, Clone, Copy)]
pub struct Decoded<'a> {
    /// List index of the first image of the run.
    pub first: usize,
    side: u32,
    images: &'a [u8],
    status: &'a [u8],
}

impl<'a> Decoded<'a> {
    /// Images in the run.
    pub fn len(&self) -> usize {
        self.status.len()
    }

    pub fn is_empty(&self) -> bool {
        self.status.is_empty()
    }

    /// Image `k` of the run (list index `first + k`), or `None` when it failed to decode.
    pub fn image(&self, k: usize) -> Option<&'a [u8]> {
        if self.status.get(k) != Some(&OK) {
            return None;
        }
        let n = image_bytes(self.side);
        self.images.get(k * n..(k + 1) * n)
    }
}

/// Why [`ImageCache::open_existing`] did not open a file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Unusable {
    #[error("no cache file yet")]
    Absent,
    #[error("{0}")]
    Because(String),
}

/// A complete, read-only cache file, memory-mapped.
pub struct ImageCache {
    map: Mmap,
    path: PathBuf,
    side: u32,
    count: usize,
    images_offset: usize,
}

impl std::fmt::Debug for ImageCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageCache")
            .field("path", &self.path)
            .field("side", &self.side)
            .field("count", &self.count)
            .finish()
    }
}

/// Bytes of one image.
pub fn image_bytes(side: u32) -> usize {
    side as usize * side as usize * 3
}

fn layout(count: usize, side: u32) -> Option<(usize, usize)> {
    let images_offset = HEADER.checked_add(count.checked_add(63)? / 64 * 64)?;
    let total = images_offset.checked_add(count.checked_mul(image_bytes(side))?)?;
    Some((images_offset, total))
}

/// The fingerprint of `paths` at `side`: each file's path, length and modification time (a file that cannot be
/// read counts as "missing", so it appearing later changes the fingerprint).
pub fn fingerprint(paths: &[PathBuf], side: u32) -> [u8; 32] {
    let stats: Vec<(u64, u128)> = paths
        .par_iter()
        .map(|p| match std::fs::metadata(p) {
            Ok(m) => {
                let mtime =
                    m.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
                (m.len(), mtime)
            }
            Err(_) => (u64::MAX, 0),
        })
        .collect();
    let mut h = Sha256::new();
    h.update(VERSION.to_le_bytes());
    h.update(side.to_le_bytes());
    h.update((paths.len() as u64).to_le_bytes());
    for (path, (len, mtime)) in paths.iter().zip(stats) {
        h.update(path.as_os_str().as_encoded_bytes());
        h.update([0]);
        h.update(len.to_le_bytes());
        h.update(mtime.to_le_bytes());
    }
    h.finalize().into()
}

/// The cache folder of a dataset: `$RUSH_IMAGE_CACHE` when set; `<home>/cache/images/<name>` for a dataset registered
/// in a rush home (`<home>/datasets/<name>`); else `${RUSH_CACHE:-$HOME/.cache/rush}/images/<name>-<hash of its
/// path>`. `None` when `RUSH_IMAGE_CACHE=off`.
pub fn dataset_cache_dir(dataset: &Path) -> Option<PathBuf> {
    let name = dataset.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "dataset".into());
    match std::env::var_os("RUSH_IMAGE_CACHE") {
        Some(v) if v == "off" => return None,
        Some(v) if !v.is_empty() => return Some(PathBuf::from(v)),
        _ => {}
    }
    let absolute = std::fs::canonicalize(dataset).unwrap_or_else(|_| dataset.to_path_buf());
    if let Some(datasets) = absolute.parent().filter(|p| p.file_name().is_some_and(|n| n == "datasets")) {
        if let Some(home) = datasets.parent() {
            return Some(home.join("cache").join("images").join(name));
        }
    }
    let base = crate::home::machine_cache();
    let digest = Sha256::digest(absolute.as_os_str().as_encoded_bytes());
    Some(base.join("images").join(format!("{name}-{}", &hex::encode(digest)[..12])))
}

/// The cache file of one split of a dataset at `side`: `<dataset_cache_dir>/<split>-<side>.rgb` (`train` for the
/// training stickers in CSV order, as `rush train` uses it; `test` for the test stickers in `test_order.csv` order, for
/// inference). `None` when caching is off.
pub fn cache_file(dataset: &Path, split: &str, side: u32) -> Option<PathBuf> {
    dataset_cache_dir(dataset).map(|dir| dir.join(format!("{split}-{side}.rgb")))
}

impl ImageCache {
    /// Opens `file` when it holds exactly `paths` at `side`; otherwise decodes them all (on `pool`) into a new file that
    /// replaces it atomically.
    pub fn open_or_build(
        file: &Path,
        paths: &[PathBuf],
        side: u32,
        pool: &rayon::ThreadPool,
    ) -> Result<(Self, CacheReport), CacheError> {
        Self::open_or_build_inner(file, paths, side, pool, paths.len().max(1), &mut |_| {})
    }

    /// [`ImageCache::open_or_build`], calling `on_decoded` with each run of [`BUILD_CHUNK`] images (in list order, on
    /// the calling thread) as a build writes them. Not called when the file is reused: read it then. When the build
    /// fails part way, the runs already handed over were decoded correctly; the error says why the file is missing.
    pub fn open_or_build_with(
        file: &Path,
        paths: &[PathBuf],
        side: u32,
        pool: &rayon::ThreadPool,
        on_decoded: &mut dyn FnMut(Decoded<'_>),
    ) -> Result<(Self, CacheReport), CacheError> {
        Self::open_or_build_inner(file, paths, side, pool, BUILD_CHUNK, on_decoded)
    }

    /// Opens `file` only when it is complete and holds exactly `paths` at `side`; never builds.
    pub fn open_existing(
        file: &Path,
        paths: &[PathBuf],
        side: u32,
        pool: &rayon::ThreadPool,
    ) -> Result<Self, Unusable> {
        let expected = pool.install(|| fingerprint(paths, side));
        Self::open(file, paths.len(), side, &expected)
    }

    fn open_or_build_inner(
        file: &Path,
        paths: &[PathBuf],
        side: u32,
        pool: &rayon::ThreadPool,
        chunk: usize,
        on_decoded: &mut dyn FnMut(Decoded<'_>),
    ) -> Result<(Self, CacheReport), CacheError> {
        let started = Instant::now();
        let expected = pool.install(|| fingerprint(paths, side));
        let rebuilt_because = match Self::open(file, paths.len(), side, &expected) {
            Ok(cache) => {
                let report = CacheReport { seconds: started.elapsed().as_secs_f64(), ..Default::default() };
                return Ok((cache, report));
            }
            Err(Unusable::Absent) => None,
            Err(Unusable::Because(reason)) => Some(reason),
        };
        let failures = build(file, paths, side, &expected, pool, chunk, on_decoded)?;
        let cache = match Self::open(file, paths.len(), side, &expected) {
            Ok(cache) => cache,
            Err(Unusable::Absent) => {
                return Err(CacheError::Io { path: file.to_path_buf(), source: std::io::ErrorKind::NotFound.into() });
            }
            Err(Unusable::Because(reason)) => {
                return Err(CacheError::Io { path: file.to_path_buf(), source: std::io::Error::other(reason) });
            }
        };
        let report = CacheReport {
            built: true,
            rebuilt_because,
            decoded: paths.len(),
            failures,
            seconds: started.elapsed().as_secs_f64(),
        };
        Ok((cache, report))
    }

    fn open(file: &Path, count: usize, side: u32, fingerprint: &[u8; 32]) -> Result<Self, Unusable> {
        let f = match File::open(file) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Unusable::Absent),
            Err(e) => return Err(Unusable::Because(format!("cannot open it: {e}"))),
        };
        // SAFETY: published cache files are never written or truncated in place (a rebuild renames a new file over
        // the name), so the mapping stays valid and unchanged while we hold it.
        let map = unsafe { Mmap::map(&f) }.map_err(|e| Unusable::Because(format!("cannot map it: {e}")))?;
        let because = |s: String| Err(Unusable::Because(s));
        if map.len() < HEADER {
            return because(format!("{} bytes, shorter than its header", map.len()));
        }
        if &map[..8] != MAGIC {
            return because("not an image cache (bad magic)".into());
        }
        let u32_at = |o: usize| u32::from_le_bytes([map[o], map[o + 1], map[o + 2], map[o + 3]]);
        let version = u32_at(8);
        if version != VERSION {
            return because(format!("format version {version}, this rush writes {VERSION}"));
        }
        let (file_side, file_count) = (u32_at(12), u64::from_le_bytes(map[16..24].try_into().unwrap_or([0; 8])));
        if file_side != side || file_count != count as u64 || &map[24..56] != fingerprint {
            return because("the dataset changed since it was built (fingerprint differs)".into());
        }
        let Some((images_offset, total)) = layout(count, side) else {
            return because("impossible size".into());
        };
        if map.len() != total {
            return because(format!("{} bytes where {total} were expected (truncated or damaged)", map.len()));
        }
        if let Some(i) = map[HEADER..HEADER + count].iter().position(|&s| s != OK && s != BAD) {
            return because(format!("image {i} was never written (unfinished build)"));
        }
        Ok(Self { map, path: file.to_path_buf(), side, count, images_offset })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn side(&self) -> u32 {
        self.side
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Whether image `index` decoded.
    pub fn is_ok(&self, index: usize) -> bool {
        index < self.count && self.map[HEADER + index] == OK
    }

    /// Image `index` (HWC RGB), or `None` when it failed to decode (or is out of range).
    pub fn image(&self, index: usize) -> Option<&[u8]> {
        if !self.is_ok(index) {
            return None;
        }
        let n = image_bytes(self.side);
        let start = self.images_offset + index * n;
        self.map.get(start..start + n)
    }

    /// All images, back to back (undecodable ones are zeros).
    pub fn all_images(&self) -> &[u8] {
        &self.map[self.images_offset..]
    }
}

/// Decodes `paths` into a temporary file beside `file`, `chunk` images at a time (each run handed to `on_decoded`),
/// then renames it into place (`disk::write_atomic_with`). Returns the failures.
fn build(
    file: &Path,
    paths: &[PathBuf],
    side: u32,
    fingerprint: &[u8; 32],
    pool: &rayon::ThreadPool,
    chunk: usize,
    on_decoded: &mut dyn FnMut(Decoded<'_>),
) -> Result<Vec<(usize, String)>, CacheError> {
    let dir = file.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let count = paths.len();
    let (images_offset, total) =
        layout(count, side).ok_or_else(|| CacheError::TooLarge { path: file.to_path_buf(), count, side })?;
    let mut failures: Vec<(usize, String)> = Vec::new();
    crate::disk::write_atomic_with(file, |tmp| {
        let f = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(tmp).map_err(io(tmp))?;
        f.set_len(total as u64).map_err(io(tmp))?;
        // SAFETY: the temporary file is ours alone (a unique name) and sized above; nothing else maps it.
        let mut map = unsafe { MmapMut::map_mut(&f) }.map_err(io(tmp))?;
        let (head, images) = map.split_at_mut(images_offset);
        let status = &mut head[HEADER..HEADER + count];
        let n = image_bytes(side);
        let chunk = chunk.max(1);
        let mut first = 0;
        while first < count {
            let last = (first + chunk).min(count);
            let (run_images, run_status) = (&mut images[first * n..last * n], &mut status[first..last]);
            failures.extend(pool.install(|| {
                run_images
                    .par_chunks_mut(n.max(1))
                    .zip(run_status.par_iter_mut())
                    .zip(paths[first..last].par_iter())
                    .enumerate()
                    .map_init(Vec::new, |buf, (k, ((dst, st), path))| {
                        let i = first + k;
                        match crate::data::image::load_rgb_into(path, side, buf) {
                            Ok(()) if buf.len() == dst.len() => {
                                dst.copy_from_slice(buf);
                                *st = OK;
                                None
                            }
                            Ok(()) => {
                                *st = BAD;
                                let message =
                                    format!("{}: decoded to {} bytes, not {}", path.display(), buf.len(), dst.len());
                                Some((i, message))
                            }
                            Err(e) => {
                                *st = BAD;
                                Some((i, e.to_string()))
                            }
                        }
                    })
                    .flatten()
                    .collect::<Vec<_>>()
            }));
            on_decoded(Decoded { first, side, images: &images[first * n..last * n], status: &status[first..last] });
            first = last;
        }
        failures.sort_by_key(|f| f.0);
        head[..8].copy_from_slice(MAGIC);
        head[8..12].copy_from_slice(&VERSION.to_le_bytes());
        head[12..16].copy_from_slice(&side.to_le_bytes());
        head[16..24].copy_from_slice(&(count as u64).to_le_bytes());
        head[24..56].copy_from_slice(fingerprint);
        map.flush().map_err(io(tmp))?;
        Ok(())
    })
    .map_err(|e| match e {
        WriteError::Fill(e) => e,
        WriteError::Disk(e) => CacheError::Io { path: e.path, source: e.source },
    })?;
    Ok(failures)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap()
    }

    fn write_png(path: &Path, side: u32, seed: u8) {
        let data: Vec<u8> = (0..side * side * 4).map(|i| (i as u8).wrapping_mul(seed).wrapping_add(seed)).collect();
        let file = std::fs::File::create(path).unwrap();
        let mut enc = png::Encoder::new(std::io::BufWriter::new(file), side, side);
        enc.set_color(png::ColorType::Rgba);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().unwrap();
        w.write_image_data(&data).unwrap();
    }

    fn images(dir: &Path, n: u8) -> Vec<PathBuf> {
        (0..n)
            .map(|i| {
                let p = dir.join(format!("{i}.png"));
                write_png(&p, 20, i + 1);
                p
            })
            .collect()
    }

    #[test]
    fn holds_what_load_rgb_returns_and_is_reused() {
        let dir = tempfile::tempdir().unwrap();
        let paths = images(dir.path(), 5);
        let file = dir.path().join("cache/train-8.rgb");
        let (cache, report) = ImageCache::open_or_build(&file, &paths, 8, &pool()).unwrap();
        assert!(report.built && report.decoded == 5 && report.failures.is_empty() && report.rebuilt_because.is_none());
        for (i, p) in paths.iter().enumerate() {
            assert_eq!(cache.image(i).unwrap(), crate::data::image::load_rgb(p, 8).unwrap().as_slice(), "image {i}");
        }
        assert_eq!(cache.all_images().len(), 5 * 8 * 8 * 3);
        let (again, report) = ImageCache::open_or_build(&file, &paths, 8, &pool()).unwrap();
        assert_eq!((report.built, report.decoded), (false, 0));
        assert_eq!(again.image(3), cache.image(3));
        // Another size is another file.
        assert!(ImageCache::open_or_build(&dir.path().join("cache/train-4.rgb"), &paths, 4, &pool()).unwrap().1.built);
    }

    #[test]
    fn a_changed_image_list_or_file_invalidates() {
        let dir = tempfile::tempdir().unwrap();
        let paths = images(dir.path(), 4);
        let file = dir.path().join("c.rgb");
        ImageCache::open_or_build(&file, &paths, 6, &pool()).unwrap();
        let (_, report) = ImageCache::open_or_build(&file, &paths[..3], 6, &pool()).unwrap();
        assert!(report.built && report.rebuilt_because.unwrap().contains("changed"));
        // Rewrite one image with other pixels: the cache follows.
        std::thread::sleep(std::time::Duration::from_millis(20));
        write_png(&paths[1], 24, 99);
        let (cache, report) = ImageCache::open_or_build(&file, &paths[..3], 6, &pool()).unwrap();
        assert!(report.built, "{report:?}");
        assert_eq!(cache.image(1).unwrap(), crate::data::image::load_rgb(&paths[1], 6).unwrap().as_slice());
    }

    #[test]
    fn a_truncated_or_foreign_file_is_rebuilt_and_bad_images_are_marked() {
        let dir = tempfile::tempdir().unwrap();
        let mut paths = images(dir.path(), 3);
        let broken = dir.path().join("broken.png");
        std::fs::write(&broken, b"not a png").unwrap();
        paths.push(broken.clone());
        let file = dir.path().join("c.rgb");
        let (cache, report) = ImageCache::open_or_build(&file, &paths, 5, &pool()).unwrap();
        assert_eq!(report.failures.len(), 1);
        assert!(report.failures[0].0 == 3 && report.failures[0].1.contains("broken.png"), "{report:?}");
        assert!(cache.image(3).is_none() && !cache.is_ok(3) && cache.is_ok(2));
        drop(cache);
        let len = std::fs::metadata(&file).unwrap().len();
        let f = OpenOptions::new().write(true).open(&file).unwrap();
        f.set_len(len - 10).unwrap();
        drop(f);
        let (cache, report) = ImageCache::open_or_build(&file, &paths, 5, &pool()).unwrap();
        assert!(report.built && report.rebuilt_because.as_deref().unwrap_or("").contains("truncated"), "{report:?}");
        assert_eq!(cache.image(0).unwrap(), crate::data::image::load_rgb(&paths[0], 5).unwrap().as_slice());
        std::fs::write(&file, vec![7u8; 200]).unwrap();
        let (_, report) = ImageCache::open_or_build(&file, &paths, 5, &pool()).unwrap();
        assert!(report.rebuilt_because.unwrap().contains("magic"));
        // No temporary file is left behind.
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn a_build_hands_over_each_run_in_order_and_a_reuse_hands_over_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut paths = images(dir.path(), 4);
        let broken = dir.path().join("broken.png");
        std::fs::write(&broken, b"not a png").unwrap();
        paths.insert(2, broken);
        let file = dir.path().join("c.rgb");
        assert_eq!(ImageCache::open_existing(&file, &paths, 6, &pool()).unwrap_err(), Unusable::Absent);
        let mut runs: Vec<(usize, usize)> = Vec::new();
        let mut seen: Vec<Option<Vec<u8>>> = Vec::new();
        let (cache, report) = ImageCache::open_or_build_inner(&file, &paths, 6, &pool(), 2, &mut |d| {
            runs.push((d.first, d.len()));
            seen.extend((0..d.len()).map(|k| d.image(k).map(<[u8]>::to_vec)));
        })
        .unwrap();
        assert!(report.built && report.failures.len() == 1 && report.failures[0].0 == 2, "{report:?}");
        assert_eq!(runs, vec![(0, 2), (2, 2), (4, 1)]);
        assert_eq!(seen.len(), 5);
        for (i, got) in seen.iter().enumerate() {
            assert_eq!(got.as_deref(), cache.image(i), "image {i}");
        }
        assert!(seen[2].is_none() && seen[3].is_some());
        drop(cache);
        let mut called = false;
        let (_, report) = ImageCache::open_or_build_with(&file, &paths, 6, &pool(), &mut |_| called = true).unwrap();
        assert!(!report.built && !called);
        let reused = ImageCache::open_existing(&file, &paths, 6, &pool()).unwrap();
        assert_eq!(reused.image(4).map(<[u8]>::to_vec), seen[4]);
        let changed = ImageCache::open_existing(&file, &paths[..4], 6, &pool()).unwrap_err();
        assert!(changed.to_string().contains("changed"), "{changed}");
    }

    #[test]
    fn a_dataset_in_a_home_caches_under_the_home() {
        let dir = tempfile::tempdir().unwrap();
        let ds = dir.path().join("home/datasets/emoji");
        std::fs::create_dir_all(&ds).unwrap();
        if std::env::var_os("RUSH_IMAGE_CACHE").is_none() {
            let got = dataset_cache_dir(&ds).unwrap();
            assert!(got.ends_with("home/cache/images/emoji"), "{}", got.display());
            assert_eq!(cache_file(&ds, "test", 128).unwrap(), got.join("test-128.rgb"));
        }
    }
}
