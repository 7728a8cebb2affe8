//! NumPy `.npy` files, the format AI RUSH asked submissions in: an int64 vector `(N,)` of predicted tags, and the float16
//! `(N, classes)` matrices of the probability cache. Only what rush writes is read back, and it is checked.
//!
//! Format (numpy's `format.py`, version 1.0): the magic `\x93NUMPY`, the version bytes `1, 0`, a little-endian u16
//! header length, then an ASCII Python dict literal `{'descr': '<i8', 'fortran_order': False, 'shape': (N,), }` padded
//! with spaces and ended by `\n` so that the data starts at a multiple of 64 bytes, then the data, little-endian, C
//! order. Versions 2.0 and 3.0 (a u32 header length) are read too.

use std::fs;
use std::path::{Path, PathBuf};

use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

use crate::core::ensemble::ProbRows;

use crate::core::npy::{MAGIC, header};

/// Values converted per parallel task.
const CHUNK: usize = 1 << 16;

/// Bytes of a mapped matrix checked before its pages are handed back.
const SPAN_BYTES: usize = 4 << 20;

/// What was wrong with a `.npy` file; every variant names it.
#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a .npy file (no \\x93NUMPY magic)")]
    BadMagic { path: PathBuf },
    #[error("{path}: .npy version {major}.{minor} is not supported (1.0, 2.0, 3.0 are)")]
    UnsupportedVersion { path: PathBuf, major: u8, minor: u8 },
    #[error("{path}: bad .npy header: {message}")]
    BadHeader { path: PathBuf, message: String },
    #[error("{path}: dtype {found:?}, expected {expected:?}")]
    WrongDtype { path: PathBuf, expected: &'static str, found: String },
    #[error("{path}: Fortran-order arrays are not accepted; save in C order")]
    FortranOrder { path: PathBuf },
    #[error("{path}: shape {found:?}, expected {expected}")]
    WrongShape { path: PathBuf, expected: &'static str, found: Vec<usize> },
    #[error("{path}: {found} bytes of data, the shape {shape:?} needs {expected}")]
    DataLength { path: PathBuf, shape: Vec<usize>, expected: usize, found: usize },
    #[error("{path}: value {value} at row {row}, column {column} cannot be stored as float16")]
    NotRepresentable { path: PathBuf, row: usize, column: usize, value: f32 },
    #[error("{path}: the value at row {row}, column {column} is not finite")]
    NotFinite { path: PathBuf, row: usize, column: usize },
}

/// Writes predictions as `<i8`, shape `(N,)`.
pub fn write_i64(path: &Path, values: &[i64]) -> Result<(), NpyError> {
    let mut bytes = header("<i8", &[values.len()]);
    bytes.reserve(values.len() * 8);
    for v in values {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    write_atomically(path, &bytes)
}

/// Reads an `<i8` vector of shape `(N,)`.
pub fn read_i64(path: &Path) -> Result<Vec<i64>, NpyError> {
    let bytes = read(path)?;
    let (header, data) = parse(path, &bytes)?;
    header.expect_dtype(path, "<i8")?;
    let [n] = header.shape[..] else {
        return Err(NpyError::WrongShape { path: path.into(), expected: "(N,)", found: header.shape });
    };
    check_length(path, &header.shape, n.checked_mul(8), data.len())?;
    Ok(data.chunks_exact(8).map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])).collect())
}

/// What a code session's `infer` returned, as `nsml.paused` saved it with `numpy.save`: class predictions (a 1-D
/// integer array) or probabilities (a 2-D float array).
#[derive(Debug, Clone, PartialEq)]
pub enum InferOutput {
    Predictions(Vec<i64>),
    Probabilities { rows: usize, columns: usize, values: Vec<f32> },
}

/// Reads an [`InferOutput`]: any little-endian (or one-byte) integer dtype of shape `(N,)`, or `<f2`, `<f4`, `<f8` of
/// shape `(N, C)`, in C order.
pub fn read_infer_output(path: &Path) -> Result<InferOutput, NpyError> {
    let bytes = read(path)?;
    let (header, data) = parse(path, &bytes)?;
    if header.fortran_order {
        return Err(NpyError::FortranOrder { path: path.into() });
    }
    let descr = header.descr.as_str();
    let width: usize = descr.get(2..).and_then(|w| w.parse().ok()).unwrap_or(0);
    let little = descr.starts_with('<') || (descr.starts_with('|') && width == 1);
    let kind = descr.chars().nth(1).unwrap_or(' ');
    let wrong =
        || NpyError::WrongDtype { path: path.into(), expected: "an integer or float dtype", found: descr.into() };
    if !little || ![1, 2, 4, 8].contains(&width) {
        return Err(wrong());
    }
    let count: Option<usize> = header.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    check_length(path, &header.shape, count.and_then(|c| c.checked_mul(width)), data.len())?;
    let word = |c: &[u8]| {
        let mut b = [0u8; 8];
        b[..c.len()].copy_from_slice(c);
        u64::from_le_bytes(b)
    };
    match (kind, header.shape.as_slice()) {
        ('i' | 'u', [_]) => {
            let shift = 64 - 8 * width as u32;
            let values = data
                .chunks_exact(width)
                .map(|c| match kind {
                    // sign-extend from the dtype's width
                    'i' => ((word(c) << shift) as i64) >> shift,
                    _ => word(c) as i64,
                })
                .collect();
            Ok(InferOutput::Predictions(values))
        }
        ('f', [rows, columns]) if width >= 2 => {
            let values = data
                .chunks_exact(width)
                .map(|c| match width {
                    2 => half::f16::from_bits(word(c) as u16).to_f32(),
                    4 => f32::from_bits(word(c) as u32),
                    _ => f64::from_bits(word(c)) as f32,
                })
                .collect();
            Ok(InferOutput::Probabilities { rows: *rows, columns: *columns, values })
        }
        _ => Err(NpyError::WrongShape {
            path: path.into(),
            expected: "(N,) of integers or (N, C) of floats",
            found: header.shape.clone(),
        }),
    }
}

/// Writes a `rows x columns` matrix (row-major f32) as `<f2`, shape `(rows, columns)`. Values that are not finite in
/// float16 (NaN, infinities, |x| > 65504) are refused: a cache must never hold them.
pub fn write_f16_matrix(path: &Path, rows: usize, columns: usize, values: &[f32]) -> Result<(), NpyError> {
    if rows.checked_mul(columns) != Some(values.len()) {
        return Err(NpyError::DataLength {
            path: path.into(),
            shape: vec![rows, columns],
            expected: rows.saturating_mul(columns).saturating_mul(2),
            found: values.len() * 2,
        });
    }
    let mut bytes = header("<f2", &[rows, columns]);
    let data_start = bytes.len();
    bytes.resize(data_start + values.len() * 2, 0);
    let bad = bytes[data_start..].par_chunks_mut(2 * CHUNK).zip(values.par_chunks(CHUNK)).enumerate().find_map_first(
        |(chunk_index, (out, chunk))| {
            let mut halves = vec![f16::ZERO; chunk.len()];
            halves.convert_from_f32_slice(chunk);
            if let Some(i) = halves.iter().position(|h| !h.is_finite()) {
                return Some(chunk_index * CHUNK + i);
            }
            for (h, o) in halves.iter().zip(out.chunks_exact_mut(2)) {
                o.copy_from_slice(&h.to_le_bytes());
            }
            None
        },
    );
    if let Some(at) = bad {
        let (row, column) = (at / columns.max(1), at % columns.max(1));
        return Err(NpyError::NotRepresentable { path: path.into(), row, column, value: values[at] });
    }
    write_atomically(path, &bytes)
}

/// Reads an `<f2` matrix of shape `(rows, columns)` as f32: `(rows, columns, values)`.
///
/// The file is memory-mapped rather than read into a buffer: a cached member of the AI RUSH test split is 97 MB, and
/// the float16 -> f32 conversion then reads the page cache directly, on every core, with no copy in between. Files of
/// this format are only ever replaced by a rename (`write_atomically`), never changed in place, so the mapping cannot
/// shrink under the reader.
pub fn read_f16_matrix(path: &Path) -> Result<(usize, usize, Vec<f32>), NpyError> {
    let io = |source| NpyError::Io { path: path.into(), source };
    let file = fs::File::open(path).map_err(io)?;
    // SAFETY: see above: the file is never truncated or written in place while it may be mapped.
    let bytes = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
    let (header, data) = parse(path, &bytes)?;
    header.expect_dtype(path, "<f2")?;
    let [rows, columns] = header.shape[..] else {
        return Err(NpyError::WrongShape { path: path.into(), expected: "(rows, columns)", found: header.shape });
    };
    check_length(path, &header.shape, rows.checked_mul(columns).and_then(|n| n.checked_mul(2)), data.len())?;
    let mut out = vec![0f32; rows * columns];
    data.par_chunks(2 * CHUNK).zip(out.par_chunks_mut(CHUNK)).for_each_init(
        || vec![f16::ZERO; CHUNK],
        |halves, (chunk, out)| {
            let halves = &mut halves[..out.len()];
            for (h, b) in halves.iter_mut().zip(chunk.chunks_exact(2)) {
                *h = f16::from_le_bytes([b[0], b[1]]);
            }
            halves.convert_to_f32_slice(out);
        },
    );
    Ok((rows, columns, out))
}

/// An `<f2` matrix of shape `(rows, columns)` mapped into memory and read a block of rows at a time
/// ([`ProbRows`]): each block is converted to f32 as it is used, and the pages of rows already used are handed back
/// ([`ProbRows::release`]), so a member of the AI RUSH test split (97 MB) costs a mix a few blocks of memory, not a
/// 194 MB float32 copy. Files of this format are only ever replaced by a rename (`write_atomically`), never changed in
/// place, so the mapping cannot shrink or change under the reader.
pub struct F16Matrix {
    path: PathBuf,
    version: FileVersion,
    map: memmap2::Mmap,
    /// Where the data starts in the file.
    start: usize,
    rows: usize,
    columns: usize,
}

impl std::fmt::Debug for F16Matrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "F16Matrix({}, {} x {})", self.path.display(), self.rows, self.columns)
    }
}

impl F16Matrix {
    /// Maps `path` and checks its header, its length and that every value is finite (a NaN would make every argmax
    /// meaningless); the check reads the file once, handing its pages back as it goes.
    pub fn open(path: &Path) -> Result<Self, NpyError> {
        let matrix = Self::open_unchecked(path)?;
        // a version of a file checked before (the builder asks for the same members on every weight change) is not
        // read again: files of this format are replaced by a rename, never written in place
        if !checked(matrix.version) {
            matrix.check_finite()?;
            remember_checked(matrix.version);
        }
        Ok(matrix)
    }

    /// Maps `path` and checks its header and length, not its values.
    pub fn open_unchecked(path: &Path) -> Result<Self, NpyError> {
        let io = |source| NpyError::Io { path: path.into(), source };
        let file = fs::File::open(path).map_err(io)?;
        let version = FileVersion::of(&file.metadata().map_err(io)?);
        // SAFETY: see the type's documentation: the file is never truncated or written in place while it may be mapped.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        let (header, data) = parse(path, &map)?;
        header.expect_dtype(path, "<f2")?;
        let [rows, columns] = header.shape[..] else {
            return Err(NpyError::WrongShape { path: path.into(), expected: "(rows, columns)", found: header.shape });
        };
        check_length(path, &header.shape, rows.checked_mul(columns).and_then(|n| n.checked_mul(2)), data.len())?;
        let start = map.len() - data.len();
        Ok(Self { path: path.to_path_buf(), version, map, start, rows, columns })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Which version of its file this is: a file replaced since (by a rename) is another version.
    pub fn version(&self) -> FileVersion {
        self.version
    }

    pub fn columns(&self) -> usize {
        self.columns
    }

    /// The raw little-endian float16 bytes of rows `first..end`.
    fn bytes(&self, first: usize, end: usize) -> &[u8] {
        &self.map[self.start + first * self.columns * 2..self.start + end * self.columns * 2]
    }

    /// Errors with the first value that is a NaN or an infinity.
    pub fn check_finite(&self) -> Result<(), NpyError> {
        // float16: exponent bits all ones
        let bad = |b: &[u8]| b.chunks_exact(2).fold(false, |bad, h| bad | (h[1] & 0x7c == 0x7c));
        let span = (SPAN_BYTES / (2 * self.columns.max(1))).max(1);
        let mut first = 0;
        while first < self.rows {
            let end = (first + span).min(self.rows);
            let bytes = self.bytes(first, end);
            let found = bytes.par_chunks(2 * 4096).position_first(bad);
            self.release_rows(first, end);
            if let Some(chunk) = found {
                let at = bytes[chunk * 2 * 4096..].chunks_exact(2).position(|h| h[1] & 0x7c == 0x7c).unwrap_or(0);
                let i = first * self.columns + chunk * 4096 + at;
                let (row, column) = (i / self.columns.max(1), i % self.columns.max(1));
                return Err(NpyError::NotFinite { path: self.path.clone(), row, column });
            }
            first = end;
        }
        // and whatever the pages at the spans' edges (or the kernel's larger folios) left mapped
        self.release_rows(0, self.rows);
        Ok(())
    }

    /// The whole matrix as f32 (small matrices: a dry run's sample).
    pub fn to_vec(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.columns];
        if !out.is_empty() {
            self.read(0, &mut out);
        }
        out
    }

    /// Hands back the pages that hold only rows `first..end`: they leave this process's resident memory and stay in
    /// the page cache (a later read maps them again).
    fn release_rows(&self, first: usize, end: usize) {
        let page = page_size();
        let from = (self.start + first * self.columns * 2).next_multiple_of(page);
        let to = (self.start + end.min(self.rows) * self.columns * 2) / page * page;
        if to > from {
            // SAFETY: a read-only shared file mapping: dropped pages are read again from the (unchanged) file on the
            // next access, so no reader ever sees other values.
            let _ = unsafe { self.map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, from, to - from) };
        }
    }
}

impl ProbRows for F16Matrix {
    fn rows(&self) -> usize {
        self.rows
    }

    fn classes(&self) -> usize {
        self.columns
    }

    fn read<'s>(&'s self, first: usize, out: &'s mut [f32]) -> &'s [f32] {
        let end = first + out.len() / self.columns.max(1);
        let bytes = self.bytes(first, end);
        match halves(bytes) {
            Some(halves) => halves.convert_to_f32_slice(out),
            None => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = f16::from_le_bytes([b[0], b[1]]).to_f32();
                }
            }
        }
        out
    }

    fn release(&self, first: usize, end: usize) {
        self.release_rows(first, end);
    }
}

/// A file as it was opened: its device, inode, length and modification time. Files that are only ever replaced by
/// a rename, never written in place, keep their contents while these stay the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileVersion {
    device: u64,
    inode: u64,
    bytes: u64,
    modified: (i64, i64),
}

impl FileVersion {
    fn of(meta: &fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self { device: meta.dev(), inode: meta.ino(), bytes: meta.len(), modified: (meta.mtime(), meta.mtime_nsec()) }
    }
}

/// `bytes` as float16 values in place, where the machine is little-endian and they are aligned.
fn halves(bytes: &[u8]) -> Option<&[f16]> {
    if cfg!(target_endian = "little") && (bytes.as_ptr() as usize) % std::mem::align_of::<f16>() == 0 {
        // SAFETY: f16 is a plain 2-byte value (repr(transparent) over u16) with no invalid bit patterns; the pointer
        // is aligned, the length is whole values, and on a little-endian machine the bytes are its representation.
        Some(unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<f16>(), bytes.len() / 2) })
    } else {
        None
    }
}

/// File versions whose values were all found finite, kept for the process (at most [`CHECKED_KEPT`]).
static CHECKED: std::sync::Mutex<Option<std::collections::HashSet<FileVersion>>> = std::sync::Mutex::new(None);
const CHECKED_KEPT: usize = 1 << 16;

fn checked(version: FileVersion) -> bool {
    CHECKED.lock().ok().and_then(|c| c.as_ref().map(|c| c.contains(&version))).unwrap_or(false)
}

fn remember_checked(version: FileVersion) {
    if let Ok(mut c) = CHECKED.lock() {
        let c = c.get_or_insert_with(Default::default);
        if c.len() >= CHECKED_KEPT {
            c.clear();
        }
        c.insert(version);
    }
}

fn page_size() -> usize {
    static PAGE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    // SAFETY: sysconf has no preconditions.
    *PAGE.get_or_init(|| usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096).max(1))
}

#[derive(Debug, PartialEq)]
struct Header {
    descr: String,
    fortran_order: bool,
    shape: Vec<usize>,
}

impl Header {
    fn expect_dtype(&self, path: &Path, expected: &'static str) -> Result<(), NpyError> {
        if self.descr != expected {
            return Err(NpyError::WrongDtype { path: path.into(), expected, found: self.descr.clone() });
        }
        if self.fortran_order {
            return Err(NpyError::FortranOrder { path: path.into() });
        }
        Ok(())
    }
}

/// Splits a file into its parsed header and its data bytes.
fn parse<'a>(path: &Path, bytes: &'a [u8]) -> Result<(Header, &'a [u8]), NpyError> {
    let bad = |message: &str| NpyError::BadHeader { path: path.into(), message: message.to_string() };
    if !bytes.starts_with(MAGIC) {
        return Err(NpyError::BadMagic { path: path.into() });
    }
    let (major, minor) = match bytes.get(6..8) {
        Some(&[major, minor]) => (major, minor),
        _ => return Err(bad("the file ends inside the version bytes")),
    };
    let (len, start) = match (major, minor) {
        (1, 0) => (bytes.get(8..10).map(|b| usize::from(u16::from_le_bytes([b[0], b[1]]))), 10),
        (2, 0) | (3, 0) => (bytes.get(8..12).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize), 12),
        _ => return Err(NpyError::UnsupportedVersion { path: path.into(), major, minor }),
    };
    let len = len.ok_or_else(|| bad("the file ends inside the header length"))?;
    let text = bytes.get(start..start + len).ok_or_else(|| bad("the file ends inside the header"))?;
    let text = std::str::from_utf8(text).map_err(|_| bad("the header is not text"))?;
    let header = parse_dict(text).map_err(|m| bad(&m))?;
    Ok((header, &bytes[start + len..]))
}

/// Parses `{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }` (any key order, either quote).
fn parse_dict(text: &str) -> Result<Header, String> {
    let mut rest = text.trim_end_matches(['\n', ' ', '\0']).trim();
    rest = rest.strip_prefix('{').and_then(|r| r.strip_suffix('}')).ok_or("the header is not a {...} dict")?;
    let (mut descr, mut fortran_order, mut shape) = (None, None, None);
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            break;
        }
        let (key, after) = quoted(rest).ok_or_else(|| format!("expected a quoted key at {rest:?}"))?;
        rest = after.trim_start().strip_prefix(':').ok_or_else(|| format!("expected ':' after {key:?}"))?.trim_start();
        match key {
            "descr" => {
                let (value, after) = quoted(rest).ok_or("descr is not a quoted string")?;
                descr = Some(value.to_string());
                rest = after;
            }
            "fortran_order" => {
                let (value, after) = if let Some(a) = rest.strip_prefix("False") {
                    (false, a)
                } else if let Some(a) = rest.strip_prefix("True") {
                    (true, a)
                } else {
                    return Err("fortran_order is not True or False".into());
                };
                fortran_order = Some(value);
                rest = after;
            }
            "shape" => {
                let inner = rest.strip_prefix('(').ok_or("shape is not a tuple")?;
                let close = inner.find(')').ok_or("shape has no closing ')'")?;
                let dims = inner[..close]
                    .split(',')
                    .map(str::trim)
                    .filter(|d| !d.is_empty())
                    .map(|d| d.trim_end_matches('L').parse::<usize>().map_err(|_| format!("bad dimension {d:?}")))
                    .collect::<Result<Vec<_>, _>>()?;
                shape = Some(dims);
                rest = &inner[close + 1..];
            }
            other => return Err(format!("unknown key {other:?}")),
        }
        rest = rest.trim_start();
        match rest.strip_prefix(',') {
            Some(after) => rest = after,
            None if rest.is_empty() => break,
            None => return Err(format!("expected ',' at {rest:?}")),
        }
    }
    Ok(Header {
        descr: descr.ok_or("no 'descr'")?,
        fortran_order: fortran_order.ok_or("no 'fortran_order'")?,
        shape: shape.ok_or("no 'shape'")?,
    })
}

/// A leading `'...'` or `"..."`: its content and what follows.
fn quoted(s: &str) -> Option<(&str, &str)> {
    let quote = s.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    let end = s[1..].find(quote)? + 1;
    Some((&s[1..end], &s[end + 1..]))
}

fn check_length(path: &Path, shape: &[usize], expected: Option<usize>, found: usize) -> Result<(), NpyError> {
    if expected == Some(found) {
        return Ok(());
    }
    Err(NpyError::DataLength {
        path: path.into(),
        shape: shape.to_vec(),
        expected: expected.unwrap_or(usize::MAX),
        found,
    })
}

fn read(path: &Path) -> Result<Vec<u8>, NpyError> {
    fs::read(path).map_err(|source| NpyError::Io { path: path.into(), source })
}

/// Writes `bytes` over `path` atomically and durably (`disk::write_atomic`), so a reader never sees half a file.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), NpyError> {
    crate::disk::write_atomic(path, bytes).map_err(|e| NpyError::Io { path: e.path, source: e.source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_padded_to_64_bytes_with_a_newline() {
        for shape in [vec![0], vec![3], vec![138_343], vec![138_343, 350], vec![1, 1]] {
            let h = header("<i8", &shape);
            assert_eq!(h.len() % 64, 0, "{shape:?}");
            assert_eq!(h.last(), Some(&b'\n'));
            assert_eq!(usize::from(u16::from_le_bytes([h[8], h[9]])), h.len() - 10);
        }
        let h = header("<i8", &[3]);
        assert_eq!(&h[..10], b"\x93NUMPY\x01\x00\x76\x00");
        assert!(
            String::from_utf8_lossy(&h[10..]).starts_with("{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }")
        );
    }

    #[test]
    fn predictions_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("predictions.npy");
        let values = vec![65, 121, 56, 0, 349, 15, -3, i64::MAX];
        write_i64(&path, &values).unwrap();
        assert_eq!(read_i64(&path).unwrap(), values);
        write_i64(&path, &[]).unwrap();
        assert_eq!(read_i64(&path).unwrap(), Vec::<i64>::new());
        assert!(!dir.path().join("predictions.npy.tmp").exists());
    }

    #[test]
    fn float16_matrices_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("probs.npy");
        let (rows, columns) = (70_001, 3); // more than one conversion chunk
        let values: Vec<f32> = (0..rows * columns).map(|i| (i % 1024) as f32 / 1024.0).collect();
        write_f16_matrix(&path, rows, columns, &values).unwrap();
        let (r, c, back) = read_f16_matrix(&path).unwrap();
        assert_eq!((r, c), (rows, columns));
        assert_eq!(back, values, "multiples of 1/1024 below 1 are exact in float16");
        assert!(matches!(read_i64(&path), Err(NpyError::WrongDtype { expected: "<i8", .. })));
        let too_big = write_f16_matrix(&path, 1, 2, &[0.5, 1e6]).unwrap_err();
        assert!(matches!(too_big, NpyError::NotRepresentable { row: 0, column: 1, .. }), "{too_big}");
        assert!(matches!(write_f16_matrix(&path, 2, 2, &[0.0; 3]), Err(NpyError::DataLength { .. })));
    }

    /// Values exact in float16 (multiples of 1/1024 below 2), varied per member.
    fn exact_values(rows: usize, columns: usize, seed: usize) -> Vec<f32> {
        (0..rows * columns).map(|i| ((i * 7919 + seed * 104_729) % 2048) as f32 / 1024.0).collect()
    }

    /// A mix of mapped float16 files, read a block of rows at a time and released span by span, equals the mix of the
    /// same values as whole float32 matrices in memory: the same predictions, and the mean within float rounding (here
    /// bit for bit), whatever the block size: odd sizes put block, span and page boundaries inside rows.
    #[test]
    fn a_chunked_mix_of_mapped_files_equals_the_whole_matrix_mix() {
        use crate::core::ensemble::{Mix, Probs, accuracy_of, argmax_of};
        let dir = tempfile::tempdir().unwrap();
        let (rows, columns) = (1_003, 37);
        let mut whole = Vec::new();
        let mut mapped = Vec::new();
        for m in 0..3 {
            let values = exact_values(rows, columns, m);
            let path = dir.path().join(format!("m{m}.npy"));
            write_f16_matrix(&path, rows, columns, &values).unwrap();
            whole.push(Probs::new(rows, columns, values).unwrap());
            mapped.push(F16Matrix::open(&path).unwrap());
        }
        let weights = [0.5, 1.25, 2.0];
        let labels: Vec<u16> = (0..rows).map(|r| ((r * 5) % columns) as u16).collect();
        let in_memory = Mix::new(&whole.iter().collect::<Vec<_>>(), &weights).unwrap();
        let (mean, predicted) = (in_memory.mean(), in_memory.predict());
        let accuracy = in_memory.accuracy(&labels).unwrap();
        assert!(predicted.iter().any(|&p| p != predicted[0]), "the predictions vary");
        let refs: Vec<&F16Matrix> = mapped.iter().collect();
        for block in [1, 7, 64, 333, 5_000] {
            let mix = Mix::weighted(&refs, &weights).unwrap().in_blocks_of(block);
            assert_eq!(mix.predict(), predicted, "blocks of {block}");
            let chunked = mix.mean();
            let worst = chunked.as_slice().iter().zip(mean.as_slice()).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(worst <= 1e-6, "blocks of {block}: the means differ by {worst}");
            assert_eq!(mix.accuracy(&labels).unwrap(), accuracy);
        }
        // members of both kinds in one mix
        let mixed: Vec<&dyn ProbRows> = vec![&mapped[0], &whole[1], &mapped[2]];
        assert_eq!(Mix::weighted(&mixed, &weights).unwrap().in_blocks_of(13).predict(), predicted);
        // one member alone, and rows picked out of a mapped file
        assert_eq!(argmax_of(&mapped[1]), whole[1].argmax());
        assert_eq!(accuracy_of(&mapped[1], &labels).unwrap(), whole[1].accuracy(&labels).unwrap());
        let picked = Probs::select(&mapped[2], &[1_002, 0, 500]).unwrap();
        assert_eq!(picked.row(0), whole[2].row(1_002));
        assert_eq!(picked.row(2), whole[2].row(500));
        assert!(Probs::select(&mapped[2], &[1_003]).is_err());
        assert_eq!(mapped[0].to_vec(), whole[0].as_slice());
    }

    #[test]
    fn a_mapped_matrix_with_a_value_that_is_not_finite_is_refused_where_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nan.npy");
        let (rows, columns) = (9_000, 350);
        let mut bytes = header("<f2", &[rows, columns]);
        let start = bytes.len();
        bytes.resize(start + rows * columns * 2, 0);
        let at = 8_765 * columns + 123;
        bytes[start + 2 * at..start + 2 * at + 2].copy_from_slice(&f16::INFINITY.to_le_bytes());
        fs::write(&path, &bytes).unwrap();
        let err = F16Matrix::open(&path).unwrap_err();
        assert!(matches!(err, NpyError::NotFinite { row: 8_765, column: 123, .. }), "{err}");
        bytes[start + 2 * at..start + 2 * at + 2].copy_from_slice(&f16::NAN.to_le_bytes());
        fs::write(&path, &bytes).unwrap();
        assert!(matches!(F16Matrix::open(&path), Err(NpyError::NotFinite { row: 8_765, column: 123, .. })));
        let unchecked = F16Matrix::open_unchecked(&path).unwrap();
        assert_eq!((unchecked.rows(), unchecked.columns()), (rows, columns));
        assert!(matches!(F16Matrix::open(&dir.path().join("missing.npy")), Err(NpyError::Io { .. })));
        npy_i64_is_not_a_matrix(&dir.path().join("p.npy"));
    }

    fn npy_i64_is_not_a_matrix(path: &Path) {
        write_i64(path, &[1, 2, 3]).unwrap();
        assert!(matches!(F16Matrix::open(path), Err(NpyError::WrongDtype { .. })));
    }

    /// `cargo test --release --lib bench_mapped_mix -- --ignored --nocapture`: AI RUSH scale from mapped float16
    /// files, as the daemon mixes: 5 validation members of 70,000 x 350 (the builder's mix, on a warm page cache), and
    /// 5 test members of 138,343 x 350 (a submission's), with this process's resident memory around each.
    #[test]
    #[ignore]
    fn bench_mapped_mix_at_airush_scale() {
        use crate::core::ensemble::{Mix, accuracy_of};
        let status = |key: &str| -> u64 {
            let text = fs::read_to_string("/proc/self/status").unwrap();
            let line = text.lines().find(|l| l.starts_with(key)).unwrap();
            line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() / 1024
        };
        let dir = tempfile::tempdir().unwrap();
        for (what, rows) in [("validation", 70_000), ("test", 138_343)] {
            let paths: Vec<PathBuf> = (0..5).map(|m| dir.path().join(format!("{what}{m}.npy"))).collect();
            for (m, path) in paths.iter().enumerate() {
                write_f16_matrix(path, rows, 350, &exact_values(rows, 350, m)).unwrap();
            }
            let labels: Vec<u16> = (0..rows).map(|r| (r % 350) as u16).collect();
            let _ = fs::write("/proc/self/clear_refs", "5");
            let before = status("VmRSS");
            let started = std::time::Instant::now();
            let mapped: Vec<F16Matrix> = paths.iter().map(|p| F16Matrix::open(p).unwrap()).collect();
            let opened = started.elapsed().as_secs_f64();
            let opened_peak = status("VmHWM").saturating_sub(before);
            drop(mapped);
            let started = std::time::Instant::now();
            let mapped: Vec<F16Matrix> = paths.iter().map(|p| F16Matrix::open(p).unwrap()).collect();
            let again = started.elapsed().as_secs_f64();
            let refs: Vec<&F16Matrix> = mapped.iter().collect();
            let started = std::time::Instant::now();
            let accuracy = Mix::weighted(&refs, &[1.0, 2.0, 1.0, 1.0, 0.5]).unwrap().accuracy(&labels).unwrap();
            let mixed = started.elapsed().as_secs_f64();
            let started = std::time::Instant::now();
            let single = accuracy_of(&mapped[0], &labels).unwrap();
            let alone = started.elapsed().as_secs_f64();
            println!(
                "5 {what} members of {rows} x 350, mapped: open + finite check {:.0} ms (peak +{opened_peak} MB), \
                 open again (checked before) {:.1} ms, mix -> accuracy {:.0} ms ({accuracy:.3}), one member's \
                 accuracy {:.0} ms ({single:.3}); VmRSS {before} MB before, peak +{} MB, {} MB after",
                opened * 1e3,
                again * 1e3,
                mixed * 1e3,
                alone * 1e3,
                status("VmHWM").saturating_sub(before),
                status("VmRSS")
            );
        }
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.npy");
        let write = |bytes: &[u8]| fs::write(&path, bytes).unwrap();

        write(b"PK\x03\x04 a zip file");
        assert!(matches!(read_i64(&path), Err(NpyError::BadMagic { .. })));

        let mut good = header("<i8", &[2]);
        good.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0]);
        write(&good[..good.len() - 1]);
        let err = read_i64(&path).unwrap_err();
        assert!(matches!(err, NpyError::DataLength { expected: 16, found: 15, .. }), "{err}");
        assert!(err.to_string().contains("bad.npy"), "{err}");
        write(&good);
        assert_eq!(read_i64(&path).unwrap(), vec![1, 2]);

        let mut v2 = good.clone();
        v2[6] = 4;
        write(&v2);
        assert!(matches!(read_i64(&path), Err(NpyError::UnsupportedVersion { major: 4, minor: 0, .. })));

        write(&header("<i4", &[2]));
        assert!(matches!(read_i64(&path), Err(NpyError::WrongDtype { .. })));
        write(&header("<i8", &[1, 2]));
        assert!(matches!(read_i64(&path), Err(NpyError::WrongShape { .. })));
        write(&header("<f2", &[4]));
        assert!(matches!(read_f16_matrix(&path), Err(NpyError::WrongShape { .. })));
        let edited = |from: &str, to: &str| {
            let h = header("<i8", &[0]);
            let at = h.windows(from.len()).position(|w| w == from.as_bytes()).unwrap();
            [&h[..at], to.as_bytes(), &h[at + from.len()..]].concat()
        };
        write(&edited("False", "True "));
        assert!(matches!(read_i64(&path), Err(NpyError::FortranOrder { .. })));
        write(&edited("'shape'", "'shope'"));
        assert!(matches!(read_i64(&path), Err(NpyError::BadHeader { .. })));
        assert!(matches!(read_i64(&dir.path().join("missing.npy")), Err(NpyError::Io { .. })));
    }

    #[test]
    fn dicts_in_other_spellings_parse() {
        let h = parse_dict("{\"shape\": (2, 350), \"fortran_order\": False, \"descr\": \"<f2\"}   \n").unwrap();
        assert_eq!(h, Header { descr: "<f2".into(), fortran_order: false, shape: vec![2, 350] });
        assert_eq!(
            parse_dict("{'descr': '<i8', 'fortran_order': False, 'shape': (), }").unwrap().shape,
            Vec::<usize>::new()
        );
        assert!(parse_dict("{'descr': '<i8', 'shape': (3,)}").is_err());
        assert!(parse_dict("{'descr': '<i8' 'fortran_order': False, 'shape': (3,)}").is_err());
        assert!(parse_dict("{'descr': '<i8', 'fortran_order': False, 'shape': (-3,)}").is_err());
    }
}
