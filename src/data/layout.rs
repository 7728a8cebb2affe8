//! Reads a dataset in the AI RUSH layout (docs/dataset-layout.md): `train/train_data/{images/, train_with_valid_tags.csv,
//! tag.tsv, packages.tsv}`, `test/test_data/{images/, test_order.csv}` and, apart from them, `test_labels.csv`.
//!
//! Bad rows and missing images are problems: counted, reported with file and line, skipped. A dataset with no usable
//! image is an error.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

/// Tag ids are 0..NUM_TAGS.
pub const NUM_TAGS: usize = 350;

/// One training sticker. `tags[0]` is the label.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub package_id: String,
    pub sticker_id: String,
    pub tags: Vec<u16>,
    /// Absolute path of the PNG.
    pub path: PathBuf,
}

impl Sample {
    pub fn label(&self) -> u16 {
        self.tags[0]
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tag {
    pub id: u16,
    pub keywords: String,
    pub languages: String,
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitName {
    Train,
    Valid,
}

/// A row of the optional `packages.tsv`.
#[derive(Debug, Clone, PartialEq)]
pub struct Package {
    pub package_id: String,
    pub style: String,
    pub family: String,
    pub source: String,
    pub licence: String,
    pub split: Option<SplitName>,
}

/// Something wrong with one row or one file that was skipped.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub file: PathBuf,
    pub line: Option<u64>,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file.display(), line, self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{file}:{line}: {message}")]
    Malformed { file: PathBuf, line: u64, message: String },
    #[error("{root}: no usable images ({})", no_usable_why(*.problems, .first))]
    NoUsableImages { root: PathBuf, problems: usize, first: String },
}

/// `3 problems; first: ...`, or just the reason when no row had a problem (an empty CSV).
fn no_usable_why(problems: usize, first: &str) -> String {
    match problems {
        0 => first.to_string(),
        1 => format!("1 problem: {first}"),
        n => format!("{n} problems; first: {first}"),
    }
}

#[derive(Debug, Clone)]
pub struct TrainSet {
    /// The dataset folder (holding `train/` and `test/`).
    pub root: PathBuf,
    pub samples: Vec<Sample>,
    pub tags: Vec<Tag>,
    pub packages: Vec<Package>,
    pub problems: Vec<Problem>,
}

/// One test sticker, in submission order.
#[derive(Debug, Clone, PartialEq)]
pub struct TestSample {
    pub index: u64,
    pub package_id: String,
    pub sticker_id: String,
    pub path: PathBuf,
}

#[derive(Debug, Clone)]
pub struct TestSet {
    pub root: PathBuf,
    pub samples: Vec<TestSample>,
    pub problems: Vec<Problem>,
}

pub fn train_dir(dataset: &Path) -> PathBuf {
    dataset.join("train").join("train_data")
}

/// Where AI RUSH's [`TRAIN_LABEL`] matrix is: `train/train_label`.
pub fn train_label_path(dataset: &Path) -> PathBuf {
    dataset.join("train").join(TRAIN_LABEL)
}

pub fn test_dir(dataset: &Path) -> PathBuf {
    dataset.join("test").join("test_data")
}

/// The training CSV's file name in `train/train_data/`.
pub const TRAIN_CSV: &str = "train_with_valid_tags.csv";
pub const TAG_TSV: &str = "tag.tsv";
pub const PACKAGES_TSV: &str = "packages.tsv";
pub const TEST_ORDER_CSV: &str = "test_order.csv";
pub const TEST_LABELS_CSV: &str = "test_labels.csv";
/// AI RUSH's multi-hot label matrix, `train/train_label` (beside `train/train_data/`): a `.npy` (numpy's format, under
/// exactly this name, no extension) of `uint8`, one row of [`NUM_TAGS`] columns per row of the training CSV, 1 where the row has the tag. With tag ids
/// numbered so that a sticker's label is its smallest tag, `np.argmax` of a row is the label, as AI RUSH's baseline
/// takes it.
pub const TRAIN_LABEL: &str = "train_label";

/// Where a sticker's PNG lives under a `train_data` or `test_data` folder.
pub fn image_path(split_dir: &Path, package_id: &str, sticker_id: &str) -> PathBuf {
    split_dir.join("images").join(package_id).join(format!("{sticker_id}.png"))
}

/// Reads the training part of a dataset.
pub fn read_train(dataset: &Path) -> Result<TrainSet, DataError> {
    let dir = train_dir(dataset);
    let mut problems = Vec::new();
    let tags = read_tags(&dir.join(TAG_TSV), &mut problems)?;
    let packages_path = dir.join(PACKAGES_TSV);
    let packages = if packages_path.exists() { read_packages(&packages_path, &mut problems)? } else { Vec::new() };

    let mut known = [false; NUM_TAGS];
    for tag in &tags {
        known[tag.id as usize] = true;
    }
    let csv_path = dir.join(TRAIN_CSV);
    let mut table = Table::open(&csv_path, b',', true)?;
    let columns = table.columns(&["package_id", "sticker_id", "tags"])?;
    let mut candidates: Vec<(u64, Sample)> = Vec::new();
    let mut seen: HashMap<(String, String), u64> = HashMap::new();
    while let Some(row) = table.next_row(&mut problems) {
        let (line, record) = row;
        let problem = |message: String| Problem { file: csv_path.clone(), line: Some(line), message };
        let [package_id, sticker_id, tags_field] = columns.map(|c| record.get(c).unwrap_or("").trim());
        if package_id.is_empty() || sticker_id.is_empty() {
            problems.push(problem("empty package_id or sticker_id".into()));
            continue;
        }
        let tags = match parse_tags(tags_field) {
            Ok(tags) => tags,
            Err(message) => {
                problems.push(problem(message));
                continue;
            }
        };
        if let Some(&bad) = tags.iter().find(|&&t| !known[t as usize]) {
            problems.push(problem(format!("unknown tag id {bad} (not in {TAG_TSV})")));
            continue;
        }
        match seen.entry((package_id.to_string(), sticker_id.to_string())) {
            std::collections::hash_map::Entry::Occupied(first) => {
                let first = *first.get();
                problems.push(problem(format!("duplicate sticker {package_id}/{sticker_id} (first on line {first})")));
                continue;
            }
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(line);
            }
        }
        let path = image_path(&dir, package_id, sticker_id);
        candidates.push((
            line,
            Sample { package_id: package_id.to_string(), sticker_id: sticker_id.to_string(), tags, path },
        ));
    }

    let samples = keep_existing(candidates, |s| &s.path, &csv_path, &mut problems);
    problems.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    if samples.is_empty() {
        return Err(no_usable_images(dataset, &csv_path, &problems));
    }
    Ok(TrainSet { root: dataset.to_path_buf(), samples, tags, packages, problems })
}

/// Keeps the rows whose image exists (checked in parallel); a missing image is a problem on its CSV line.
fn keep_existing<T: Sync>(
    candidates: Vec<(u64, T)>,
    path: impl Fn(&T) -> &Path + Sync,
    csv_path: &Path,
    problems: &mut Vec<Problem>,
) -> Vec<T> {
    let exists: Vec<bool> = candidates.par_iter().map(|(_, row)| path(row).is_file()).collect();
    let mut kept = Vec::with_capacity(candidates.len());
    for ((line, row), exists) in candidates.into_iter().zip(exists) {
        if exists {
            kept.push(row);
        } else {
            let message = format!("image {} is missing", path(&row).display());
            problems.push(Problem { file: csv_path.to_path_buf(), line: Some(line), message });
        }
    }
    kept
}

/// Reads the test part (order and images, never labels), sorted by index.
pub fn read_test(dataset: &Path) -> Result<TestSet, DataError> {
    let dir = test_dir(dataset);
    let csv_path = dir.join(TEST_ORDER_CSV);
    let mut problems = Vec::new();
    let mut table = Table::open(&csv_path, b',', true)?;
    let columns = table.columns(&["index", "package_id", "sticker_id"])?;
    let mut candidates: Vec<(u64, TestSample)> = Vec::new();
    let mut seen: HashMap<u64, u64> = HashMap::new();
    while let Some((line, record)) = table.next_row(&mut problems) {
        let problem = |message: String| Problem { file: csv_path.clone(), line: Some(line), message };
        let [index, package_id, sticker_id] = columns.map(|c| record.get(c).unwrap_or("").trim());
        let Ok(index) = index.parse::<u64>() else {
            problems.push(problem(format!("index `{index}` is not a non-negative integer")));
            continue;
        };
        if package_id.is_empty() || sticker_id.is_empty() {
            problems.push(problem("empty package_id or sticker_id".into()));
            continue;
        }
        if let Some(&first) = seen.get(&index) {
            problems.push(problem(format!("duplicate index {index} (first on line {first})")));
            continue;
        }
        seen.insert(index, line);
        let path = image_path(&dir, package_id, sticker_id);
        candidates.push((
            line,
            TestSample { index, package_id: package_id.to_string(), sticker_id: sticker_id.to_string(), path },
        ));
    }
    let mut samples = keep_existing(candidates, |s| &s.path, &csv_path, &mut problems);
    problems.sort_by_key(|p| p.line);
    samples.sort_by_key(|s| s.index);
    if samples.is_empty() {
        return Err(no_usable_images(dataset, &csv_path, &problems));
    }
    Ok(TestSet { root: dataset.to_path_buf(), samples, problems })
}

/// Reads a `test_labels.csv` (`index,tags`): the scorer's alone. Element `i` holds the tags of index `i`; the indices
/// must run 0..n without gaps. Any bad row is an error here: a score over partial labels would be wrong.
pub fn read_test_labels(path: &Path) -> Result<Vec<Vec<u16>>, DataError> {
    let mut table = Table::open(path, b',', true)?;
    let [index_col, tags_col] = table.columns(&["index", "tags"])?;
    let mut rows: Vec<(u64, u64, Vec<u16>)> = Vec::new();
    let mut problems = Vec::new();
    while let Some((line, record)) = table.next_row(&mut problems) {
        let malformed = |message: String| DataError::Malformed { file: path.to_path_buf(), line, message };
        let index = record.get(index_col).unwrap_or("").trim();
        let index = index.parse::<u64>().map_err(|_| malformed(format!("index `{index}` is not an integer")))?;
        let tags = parse_tags(record.get(tags_col).unwrap_or("")).map_err(malformed)?;
        rows.push((index, line, tags));
    }
    if let Some(problem) = problems.into_iter().next() {
        return Err(DataError::Malformed {
            file: problem.file,
            line: problem.line.unwrap_or(0),
            message: problem.message,
        });
    }
    rows.sort_by_key(|r| r.0);
    let mut labels = Vec::with_capacity(rows.len());
    for (expected, (index, line, tags)) in rows.into_iter().enumerate() {
        if index != expected as u64 {
            let message = if index < expected as u64 {
                format!("duplicate index {index}")
            } else {
                format!("index {expected} is missing (indices must run 0..n without gaps; this row has {index})")
            };
            return Err(DataError::Malformed { file: path.to_path_buf(), line, message });
        }
        labels.push(tags);
    }
    Ok(labels)
}

/// The bytes of `train/train_label` for the training CSV's tag lists, in its row order (an empty list: a row of
/// zeros).
fn train_label_bytes(rows: &[Vec<u16>]) -> Vec<u8> {
    let mut bytes = crate::core::npy::header("|u1", &[rows.len(), NUM_TAGS]);
    let start = bytes.len();
    bytes.resize(start + rows.len() * NUM_TAGS, 0);
    for (i, tags) in rows.iter().enumerate() {
        for &t in tags.iter().filter(|&&t| (t as usize) < NUM_TAGS) {
            bytes[start + i * NUM_TAGS + t as usize] = 1;
        }
    }
    bytes
}

/// Writes `train/train_label` of the dataset at `dataset` from its training CSV, row for row (a row whose tags do not
/// parse gets zeros), through a temporary file renamed into place: what the builders and `rush dataset push` call.
pub fn write_train_label(dataset: &Path) -> Result<(), DataError> {
    let dir = train_dir(dataset);
    let csv_path = dir.join(TRAIN_CSV);
    let mut table = Table::open(&csv_path, b',', true)?;
    let [tags_column] = table.columns(&["tags"])?;
    let mut problems = Vec::new();
    let mut rows = Vec::new();
    while let Some((_, record)) = table.next_row(&mut problems) {
        rows.push(parse_tags(record.get(tags_column).unwrap_or("")).unwrap_or_default());
    }
    let path = train_label_path(dataset);
    let tmp = path.with_file_name(format!(".{TRAIN_LABEL}.tmp"));
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DataError::Io { path, source }
    };
    std::fs::write(&tmp, train_label_bytes(&rows)).map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))
}

/// Parses a tags field: comma-separated integer tag ids in 0..NUM_TAGS, the first being the label.
pub fn parse_tags(field: &str) -> Result<Vec<u16>, String> {
    let field = field.trim();
    if field.is_empty() {
        return Err("empty tag list".into());
    }
    field
        .split(',')
        .map(|t| {
            let t = t.trim();
            match t.parse::<u32>() {
                Ok(id) if (id as usize) < NUM_TAGS => Ok(id as u16),
                Ok(id) => Err(format!("unknown tag id {id} (tag ids are 0..{})", NUM_TAGS - 1)),
                Err(_) => Err(format!("tag `{t}` is not an integer tag id")),
            }
        })
        .collect()
}

fn no_usable_images(dataset: &Path, csv_path: &Path, problems: &[Problem]) -> DataError {
    DataError::NoUsableImages {
        root: dataset.to_path_buf(),
        problems: problems.len(),
        first: match problems.first() {
            Some(problem) => problem.to_string(),
            None => format!("{} has no rows", csv_path.display()),
        },
    }
}

fn read_tags(path: &Path, problems: &mut Vec<Problem>) -> Result<Vec<Tag>, DataError> {
    let mut table = Table::open(path, b'\t', false)?;
    let [id_col] = table.columns(&["tag"])?;
    let [keywords, languages, name] = table.optional_columns(&["keywords", "languages", "name"]);
    let mut tags: Vec<Tag> = Vec::new();
    let mut seen = [None; NUM_TAGS];
    while let Some((line, record)) = table.next_row(problems) {
        let problem = |message: String| Problem { file: path.to_path_buf(), line: Some(line), message };
        let field = |col: Option<usize>| col.and_then(|c| record.get(c)).unwrap_or("").trim().to_string();
        let id = field(Some(id_col));
        let id = match id.parse::<u32>() {
            Ok(id) if (id as usize) < NUM_TAGS => id as u16,
            Ok(id) => {
                problems.push(problem(format!("tag id {id} is out of range (tag ids are 0..{})", NUM_TAGS - 1)));
                continue;
            }
            Err(_) => {
                problems.push(problem(format!("tag `{id}` is not an integer tag id")));
                continue;
            }
        };
        if let Some(first) = seen[id as usize] {
            problems.push(problem(format!("duplicate tag id {id} (first on line {first})")));
            continue;
        }
        seen[id as usize] = Some(line);
        tags.push(Tag { id, keywords: field(keywords), languages: field(languages), name: field(name) });
    }
    tags.sort_by_key(|t| t.id);
    Ok(tags)
}

fn read_packages(path: &Path, problems: &mut Vec<Problem>) -> Result<Vec<Package>, DataError> {
    let mut table = Table::open(path, b'\t', false)?;
    let [id_col] = table.columns(&["package_id"])?;
    let [style, family, source, licence, license, split] =
        table.optional_columns(&["style", "family", "source", "licence", "license", "split"]);
    let licence = licence.or(license);
    let mut packages = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    while let Some((line, record)) = table.next_row(problems) {
        let problem = |message: String| Problem { file: path.to_path_buf(), line: Some(line), message };
        let field = |col: Option<usize>| col.and_then(|c| record.get(c)).unwrap_or("").trim().to_string();
        let package_id = field(Some(id_col));
        if package_id.is_empty() {
            problems.push(problem("empty package_id".into()));
            continue;
        }
        if !seen.insert(package_id.clone()) {
            problems.push(problem(format!("duplicate package {package_id}")));
            continue;
        }
        let split = match field(split).to_ascii_lowercase().as_str() {
            "" => None,
            "train" => Some(SplitName::Train),
            "valid" | "validation" | "val" => Some(SplitName::Valid),
            other => {
                problems.push(problem(format!("split `{other}` is neither `train` nor `valid`; left unassigned")));
                None
            }
        };
        packages.push(Package {
            package_id,
            style: field(style),
            family: field(family),
            source: field(source),
            licence: field(licence),
            split,
        });
    }
    Ok(packages)
}

/// A CSV or TSV file with a header, read row by row; rows that cannot be read or have the wrong number of fields
/// become problems.
struct Table {
    path: PathBuf,
    reader: csv::Reader<std::io::BufReader<std::fs::File>>,
    header: Vec<String>,
    record: csv::StringRecord,
}

impl Table {
    fn open(path: &Path, delimiter: u8, quoting: bool) -> Result<Table, DataError> {
        let file = std::fs::File::open(path).map_err(|source| DataError::Io { path: path.to_path_buf(), source })?;
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .quoting(quoting)
            .flexible(true)
            .has_headers(true)
            .from_reader(std::io::BufReader::new(file));
        let header = reader
            .headers()
            .map_err(|e| DataError::Malformed { file: path.to_path_buf(), line: 1, message: e.to_string() })?
            .iter()
            .map(|h| h.trim().trim_start_matches('\u{feff}').to_ascii_lowercase())
            .collect();
        Ok(Table { path: path.to_path_buf(), reader, header, record: csv::StringRecord::new() })
    }

    /// The positions of required columns, or an error naming the missing one.
    fn columns<const N: usize>(&self, names: &[&str; N]) -> Result<[usize; N], DataError> {
        let mut out = [0; N];
        for (slot, name) in out.iter_mut().zip(names) {
            *slot = self.header.iter().position(|h| h == name).ok_or_else(|| DataError::Malformed {
                file: self.path.clone(),
                line: 1,
                message: format!("the header has no `{name}` column (found: {})", self.header.join(", ")),
            })?;
        }
        Ok(out)
    }

    fn optional_columns<const N: usize>(&self, names: &[&str; N]) -> [Option<usize>; N] {
        names.map(|name| self.header.iter().position(|h| h == name))
    }

    /// The next row with the header's number of fields, with its line number; bad rows go to `problems`.
    fn next_row(&mut self, problems: &mut Vec<Problem>) -> Option<(u64, &csv::StringRecord)> {
        loop {
            match self.reader.read_record(&mut self.record) {
                Ok(false) => return None,
                Ok(true) => {
                    let line = self.record.position().map_or(0, |p| p.line());
                    if self.record.len() == 1 && self.record.get(0).is_some_and(|f| f.trim().is_empty()) {
                        continue; // a blank line
                    }
                    if self.record.len() != self.header.len() {
                        problems.push(Problem {
                            file: self.path.clone(),
                            line: Some(line),
                            message: format!(
                                "malformed row: expected {} fields ({}), found {}",
                                self.header.len(),
                                self.header.join(","),
                                self.record.len()
                            ),
                        });
                        continue;
                    }
                    return Some((line, &self.record));
                }
                Err(e) => {
                    let line = e.position().map(|p| p.line());
                    let fatal =
                        !matches!(e.kind(), csv::ErrorKind::Utf8 { .. } | csv::ErrorKind::UnequalLengths { .. });
                    problems.push(Problem { file: self.path.clone(), line, message: format!("malformed row: {e}") });
                    if fatal {
                        return None;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny dataset: tags 0..5 in tag.tsv, and the given CSV body; every `images/p/s.png` named in `images` exists.
    fn dataset(csv_body: &str, images: &[(&str, &str)]) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let dir = train_dir(root.path());
        std::fs::create_dir_all(&dir).unwrap();
        let mut tags = String::from("tag\tkeywords\tlanguages\tname\n");
        for id in 0..5 {
            tags.push_str(&format!("{id}\tk{id},키{id}\ten,ko\tname {id}\n"));
        }
        std::fs::write(dir.join(TAG_TSV), tags).unwrap();
        std::fs::write(dir.join(TRAIN_CSV), format!("package_id,sticker_id,tags\n{csv_body}")).unwrap();
        for (p, s) in images {
            let path = image_path(&dir, p, s);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, b"png bytes are not checked here").unwrap();
        }
        root
    }

    fn problem_at(set: &TrainSet, line: u64) -> &Problem {
        set.problems.iter().find(|p| p.line == Some(line)).unwrap_or_else(|| panic!("no problem on line {line}"))
    }

    #[test]
    fn reads_rows_tags_and_packages() {
        let root = dataset("p1,s1,\"2,0,4\"\np1,s2,3\np2,s3,\"1, 2\"\n", &[("p1", "s1"), ("p1", "s2"), ("p2", "s3")]);
        let dir = train_dir(root.path());
        std::fs::write(
            dir.join(PACKAGES_TSV),
            "package_id\tstyle\tfamily\tsource\tlicence\tsplit\np1\tflat\tf\tsynth\tMIT\ttrain\np2\tflat\tf\tsynth\tMIT\tvalid\n",
        )
        .unwrap();
        let set = read_train(root.path()).unwrap();
        assert!(set.problems.is_empty(), "{:?}", set.problems);
        assert_eq!(set.samples.len(), 3);
        assert_eq!(set.samples[0].tags, vec![2, 0, 4]);
        assert_eq!(set.samples[0].label(), 2);
        assert_eq!(set.samples[2].tags, vec![1, 2]);
        assert_eq!(set.samples[1].path, dir.join("images/p1/s2.png"));
        assert_eq!(set.tags.len(), 5);
        assert_eq!(set.tags[3].keywords, "k3,키3");
        assert_eq!(set.packages[1].split, Some(SplitName::Valid));
        assert_eq!(set.packages[1].licence, "MIT");
    }

    #[test]
    fn each_bad_row_is_a_problem_naming_file_and_line() {
        let body = "p1,s1,0\n\
                    p1,s2,\"1,7\"\n\
                    p1,s3,\"\"\n\
                    p1,s4\n\
                    p1,s1,2\n\
                    p1,s5,1\n\
                    p1,s6,x\n\
                    p1,s7,400\n";
        let images = [("p1", "s1"), ("p1", "s2"), ("p1", "s3"), ("p1", "s4"), ("p1", "s6"), ("p1", "s7")];
        let root = dataset(body, &images);
        let set = read_train(root.path()).unwrap();
        assert_eq!(set.samples.len(), 1, "only p1/s1 is usable: {:?}", set.problems);
        assert_eq!(set.problems.len(), 7, "{:?}", set.problems);
        let csv = train_dir(root.path()).join(TRAIN_CSV);
        for p in &set.problems {
            assert_eq!(p.file, csv);
            assert!(p.to_string().starts_with(&format!("{}:{}: ", csv.display(), p.line.unwrap())), "{p}");
        }
        assert!(problem_at(&set, 3).message.contains("unknown tag id 7"), "{}", problem_at(&set, 3));
        assert!(problem_at(&set, 4).message.contains("empty tag list"));
        assert!(problem_at(&set, 5).message.contains("malformed row: expected 3 fields"));
        assert!(problem_at(&set, 6).message.contains("duplicate sticker p1/s1 (first on line 2)"));
        let missing = problem_at(&set, 7).to_string();
        assert!(missing.contains("image") && missing.contains("p1/s5.png") && missing.contains("missing"), "{missing}");
        assert!(problem_at(&set, 8).message.contains("tag `x` is not an integer"));
        assert!(problem_at(&set, 9).message.contains("unknown tag id 400"));
    }

    #[test]
    fn no_usable_images_is_an_error_with_a_reason() {
        let root = dataset("p1,s1,0\np1,s2,1\n", &[]);
        let err = read_train(root.path()).unwrap_err();
        assert!(matches!(err, DataError::NoUsableImages { problems: 2, .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains("no usable images") && text.contains("train_with_valid_tags.csv:2"), "{text}");

        let empty = dataset("", &[]);
        let text = read_train(empty.path()).unwrap_err().to_string();
        assert!(text.contains("has no rows"), "{text}");
    }

    #[test]
    fn missing_files_and_headers_are_errors_naming_the_path() {
        let root = dataset("p1,s1,0\n", &[("p1", "s1")]);
        std::fs::remove_file(train_dir(root.path()).join(TAG_TSV)).unwrap();
        let err = read_train(root.path()).unwrap_err();
        assert!(matches!(err, DataError::Io { .. }) && err.to_string().contains("tag.tsv"), "{err}");

        let err = read_test(root.path()).unwrap_err();
        assert!(matches!(err, DataError::Io { .. }) && err.to_string().contains("test_order.csv"), "{err}");

        let root = dataset("p1,s1,0\n", &[("p1", "s1")]);
        std::fs::write(train_dir(root.path()).join(TRAIN_CSV), "package,sticker_id,tags\np1,s1,0\n").unwrap();
        let err = read_train(root.path()).unwrap_err().to_string();
        assert!(err.contains("train_with_valid_tags.csv:1: the header has no `package_id` column"), "{err}");
    }

    #[test]
    fn bad_tag_rows_are_problems() {
        let root = dataset("p1,s1,0\n", &[("p1", "s1")]);
        let tsv = train_dir(root.path()).join(TAG_TSV);
        std::fs::write(&tsv, "tag\tkeywords\tlanguages\tname\n0\ta\ten\tzero\nzero\ta\ten\tz\n350\ta\ten\tbig\n")
            .unwrap();
        let set = read_train(root.path()).unwrap();
        assert_eq!(set.tags.len(), 1);
        let text: Vec<String> = set.problems.iter().map(|p| p.to_string()).collect();
        assert!(text[0].contains("tag.tsv:3: tag `zero` is not an integer"), "{text:?}");
        assert!(text[1].contains("tag.tsv:4: tag id 350 is out of range"), "{text:?}");
    }

    #[test]
    fn reads_test_order_sorted_by_index_with_problems() {
        let root = tempfile::tempdir().unwrap();
        let dir = test_dir(root.path());
        for (p, s) in [("a", "1"), ("a", "2"), ("b", "3")] {
            let path = image_path(&dir, p, s);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, b"x").unwrap();
        }
        std::fs::write(
            dir.join(TEST_ORDER_CSV),
            "index,package_id,sticker_id\n2,b,3\n0,a,1\n1,a,2\n1,a,2\nx,a,1\n3,c,9\n",
        )
        .unwrap();
        let set = read_test(root.path()).unwrap();
        let order: Vec<(u64, &str)> = set.samples.iter().map(|s| (s.index, s.sticker_id.as_str())).collect();
        assert_eq!(order, vec![(0, "1"), (1, "2"), (2, "3")]);
        let text: Vec<String> = set.problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(text.len(), 3, "{text:?}");
        assert!(text[0].contains("test_order.csv:5: duplicate index 1 (first on line 4)"), "{text:?}");
        assert!(text[1].contains("test_order.csv:6: index `x`"), "{text:?}");
        assert!(text[2].contains("test_order.csv:7: image") && text[2].contains("c/9.png"), "{text:?}");
    }

    #[test]
    fn test_labels_are_strict() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TEST_LABELS_CSV);
        std::fs::write(&path, "index,tags\n1,\"5,6\"\n0,3\n").unwrap();
        assert_eq!(read_test_labels(&path).unwrap(), vec![vec![3], vec![5, 6]]);

        std::fs::write(&path, "index,tags\n0,3\n2,4\n").unwrap();
        let err = read_test_labels(&path).unwrap_err().to_string();
        assert!(err.contains("test_labels.csv:3: index 1 is missing"), "{err}");

        std::fs::write(&path, "index,tags\n0,3\n1,\n").unwrap();
        let err = read_test_labels(&path).unwrap_err().to_string();
        assert!(err.contains("test_labels.csv:3: empty tag list"), "{err}");

        std::fs::write(&path, "index,tags\n0,999\n").unwrap();
        let err = read_test_labels(&path).unwrap_err().to_string();
        assert!(err.contains("test_labels.csv:2: unknown tag id 999"), "{err}");
    }
}
