//! Ensemble math on cached class probabilities: the weighted mean of members, its argmax, and greedy forward selection
//! with replacement (Caruana et al., 2004), so that mixing cached checkpoints needs no new inference.
//!
//! Everything is pure and deterministic: ties in an argmax go to the lowest class id, ties between candidates to the
//! lowest candidate index. The loops run over blocks of rows (a block of the running sum stays in cache while every
//! candidate is added to it), in parallel with rayon, and the inner loops are plain slices the compiler vectorises.
//!
//! Members are anything that hands out its rows a block at a time ([`ProbRows`]): a matrix in memory ([`Probs`]), or a
//! float16 file mapped into memory (`submit::npy::F16Matrix`), whose blocks are converted as they are mixed and whose
//! pages are handed back span by span, so a mix never holds a whole float32 copy of a member.

use rayon::prelude::*;

/// Rows per parallel block: 64 rows of 350 classes are 90 KB of f32, so a block of the running sum stays in L2 while
/// every candidate is evaluated against it.
const BLOCK_ROWS: usize = 64;

/// Blocks per span: the rows between two [`ProbRows::release`] calls (4,096 rows of 350 float16 classes are 2.8 MB a
/// member).
const SPAN_BLOCKS: usize = 64;

/// Class probabilities read a block of rows at a time: a matrix in memory ([`Probs`]) or a float16 file mapped into
/// memory, converted block by block.
pub trait ProbRows: Sync {
    fn rows(&self) -> usize;
    fn classes(&self) -> usize;
    /// Rows `first..first + out.len() / classes()` as f32: the rows themselves when they are f32 in memory, else
    /// converted into `out` (whose length is a multiple of `classes()`). Panics when they are out of range.
    fn read<'s>(&'s self, first: usize, out: &'s mut [f32]) -> &'s [f32];
    /// Rows `first..end` will not be read again soon: a file-backed source may hand their pages back.
    fn release(&self, _first: usize, _end: usize) {}
}

impl ProbRows for Probs {
    fn rows(&self) -> usize {
        self.rows
    }

    fn classes(&self) -> usize {
        self.classes
    }

    fn read<'s>(&'s self, first: usize, out: &'s mut [f32]) -> &'s [f32] {
        &self.data[first * self.classes..first * self.classes + out.len()]
    }
}

/// The predicted class of every row of `probs` (the most probable, the lowest class id on a tie), read a block at a
/// time and released span by span.
pub fn argmax_of<P: ProbRows + ?Sized>(probs: &P) -> Vec<i64> {
    let classes = probs.classes();
    let mut out = vec![0i64; probs.rows()];
    for_spans(&mut out, BLOCK_ROWS, |first, span| {
        span.par_chunks_mut(BLOCK_ROWS).enumerate().for_each_init(
            || vec![0f32; BLOCK_ROWS * classes],
            |buf, (b, out)| {
                let rows = probs.read(first + b * BLOCK_ROWS, &mut buf[..out.len() * classes]);
                for (o, row) in out.iter_mut().zip(rows.chunks_exact(classes)) {
                    *o = argmax_row(row) as i64;
                }
            },
        );
        probs.release(first, first + span.len());
    });
    out
}

/// The fraction of rows of `probs` whose argmax is the label.
pub fn accuracy_of<P: ProbRows + ?Sized>(probs: &P, labels: &[u16]) -> Result<f64, EnsembleError> {
    check_labels(labels, probs.rows(), probs.classes())?;
    let correct = argmax_of(probs).iter().zip(labels).filter(|(p, l)| **p == i64::from(**l)).count();
    Ok(fraction(correct, probs.rows()))
}

/// Runs `f(first row, span)` over `out` in spans of [`SPAN_BLOCKS`] blocks of `block_rows`, in order.
fn for_spans<T>(out: &mut [T], block_rows: usize, mut f: impl FnMut(usize, &mut [T])) {
    let span_rows = block_rows * SPAN_BLOCKS;
    for (s, span) in out.chunks_mut(span_rows).enumerate() {
        f(s * span_rows, span);
    }
}

/// Why probabilities, weights, labels or options were refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EnsembleError {
    #[error("a probability matrix needs at least one class")]
    NoClasses,
    #[error("a {rows} x {classes} probability matrix needs {expected} values, got {got}")]
    BadLength { rows: usize, classes: usize, expected: usize, got: usize },
    #[error("probability at row {row}, class {class} is {value}: values must be finite")]
    NotFinite { row: usize, class: usize, value: f32 },
    #[error("an ensemble needs at least one member")]
    NoMembers,
    /// `member` counts from 0; the message counts from 1.
    #[error("member {} is {rows} x {classes}, but member 1 is {expected_rows} x {expected_classes}", .member + 1)]
    ShapeMismatch { member: usize, rows: usize, classes: usize, expected_rows: usize, expected_classes: usize },
    #[error("{members} members but {weights} weights: give one weight per member")]
    WeightCount { members: usize, weights: usize },
    /// `index` counts from 0; the message counts members from 1.
    #[error("the weight of member {} is {value}: weights must be finite and not negative", .index + 1)]
    BadWeight { index: usize, value: f64 },
    #[error("the weights sum to zero: at least one weight must be positive")]
    ZeroWeights,
    #[error("{labels} labels for {rows} rows")]
    LabelCount { labels: usize, rows: usize },
    #[error("label {label} at row {row} is not a class id (0..{classes})")]
    LabelOutOfRange { row: usize, label: u16, classes: usize },
    #[error("max_members is 0: an ensemble needs at least one member")]
    MaxMembersZero,
    #[error("init_best is {init_best} but max_members is {max_members}")]
    InitExceedsMax { init_best: usize, max_members: usize },
    #[error("init_best is {init_best} but there are only {candidates} candidates")]
    InitExceedsCandidates { init_best: usize, candidates: usize },
    #[error("{folds} fold ids for {rows} rows")]
    FoldCount { folds: usize, rows: usize },
    #[error("cross-fitting needs at least two folds with rows, got {folds}")]
    TooFewFolds { folds: usize },
    #[error("row {row} is out of range: the matrix has {rows} rows")]
    RowOutOfRange { row: usize, rows: usize },
}

/// Checks an ensemble's weights: one per member, each finite and not negative, not all zero. Returns their sum.
pub fn check_weights(members: usize, weights: &[f64]) -> Result<f64, EnsembleError> {
    if weights.len() != members {
        return Err(EnsembleError::WeightCount { members, weights: weights.len() });
    }
    if let Some((index, &value)) = weights.iter().enumerate().find(|(_, w)| !w.is_finite() || **w < 0.0) {
        return Err(EnsembleError::BadWeight { index, value });
    }
    let total: f64 = weights.iter().sum();
    if total <= 0.0 {
        return Err(EnsembleError::ZeroWeights);
    }
    Ok(total)
}

/// Class probabilities of one checkpoint on one split: `rows` samples x `classes` classes, row-major f32.
#[derive(Debug, Clone, PartialEq)]
pub struct Probs {
    rows: usize,
    classes: usize,
    data: Vec<f32>,
}

impl Probs {
    /// Checks the length and that every value is finite (a NaN would make every argmax meaningless).
    pub fn new(rows: usize, classes: usize, data: Vec<f32>) -> Result<Self, EnsembleError> {
        if classes == 0 {
            return Err(EnsembleError::NoClasses);
        }
        let expected = rows.checked_mul(classes);
        if expected != Some(data.len()) {
            let expected = expected.unwrap_or(usize::MAX);
            return Err(EnsembleError::BadLength { rows, classes, expected, got: data.len() });
        }
        // whole chunks first (a branch-free fold that vectorises), then the culprit within the first bad chunk
        const CHUNK: usize = 1 << 16;
        let bad = data.par_chunks(CHUNK).position_first(|c| !c.iter().fold(true, |ok, v| ok & v.is_finite()));
        if let Some(chunk) = bad {
            let i = chunk * CHUNK + data[chunk * CHUNK..].iter().position(|v| !v.is_finite()).unwrap_or(0);
            return Err(EnsembleError::NotFinite { row: i / classes, class: i % classes, value: data[i] });
        }
        Ok(Self { rows, classes, data })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn classes(&self) -> usize {
        self.classes
    }

    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }

    pub fn into_vec(self) -> Vec<f32> {
        self.data
    }

    /// The probabilities of sample `row`. Panics when `row >= rows()`, like slice indexing.
    pub fn row(&self, row: usize) -> &[f32] {
        &self.data[row * self.classes..(row + 1) * self.classes]
    }

    /// The predicted class of every row: the most probable, the lowest class id on a tie.
    pub fn argmax(&self) -> Vec<i64> {
        argmax_of(self)
    }

    /// The fraction of rows whose argmax is the label.
    pub fn accuracy(&self, labels: &[u16]) -> Result<f64, EnsembleError> {
        accuracy_of(self, labels)
    }

    /// Rows `rows` of `probs` (any order, repeats allowed) as a matrix in memory: a small sample of a large source.
    pub fn select<P: ProbRows + ?Sized>(probs: &P, rows: &[usize]) -> Result<Self, EnsembleError> {
        let classes = probs.classes();
        let mut data = vec![0f32; rows.len() * classes];
        let mut buf = vec![0f32; classes];
        for (out, &row) in data.chunks_exact_mut(classes).zip(rows) {
            if row >= probs.rows() {
                return Err(EnsembleError::RowOutOfRange { row, rows: probs.rows() });
            }
            out.copy_from_slice(probs.read(row, &mut buf));
        }
        Self::new(rows.len(), classes, data)
    }
}

/// A validated weighted mix of members of the same shape; weights are normalised to sum to 1. Members are read a
/// block of rows at a time and released span by span ([`ProbRows`]), so mixing holds a few blocks per thread, never a
/// member or the mean in full (unless [`Mix::mean`] is asked for).
#[derive(Debug, Clone)]
pub struct Mix<'a, P: ?Sized = Probs> {
    members: Vec<&'a P>,
    weights: Vec<f32>,
    /// Rows read and mixed at once.
    block_rows: usize,
}

impl<'a> Mix<'a, Probs> {
    /// `weights` has one finite, non-negative weight per member, not all zero.
    pub fn new(members: &[&'a Probs], weights: &[f64]) -> Result<Self, EnsembleError> {
        Mix::weighted(members, weights)
    }

    /// Every member with the same weight.
    pub fn equal(members: &[&'a Probs]) -> Result<Self, EnsembleError> {
        Mix::weighted(members, &vec![1.0; members.len()])
    }
}

impl<'a, P: ProbRows + ?Sized> Mix<'a, P> {
    /// A mix of any kind of members ([`Mix::new`] for matrices in memory): `weights` has one finite, non-negative
    /// weight per member, not all zero.
    pub fn weighted(members: &[&'a P], weights: &[f64]) -> Result<Self, EnsembleError> {
        let first = members.first().ok_or(EnsembleError::NoMembers)?;
        for (member, m) in members.iter().enumerate() {
            if m.rows() != first.rows() || m.classes() != first.classes() {
                return Err(EnsembleError::ShapeMismatch {
                    member,
                    rows: m.rows(),
                    classes: m.classes(),
                    expected_rows: first.rows(),
                    expected_classes: first.classes(),
                });
            }
        }
        let total = check_weights(members.len(), weights)?;
        Ok(Self {
            members: members.to_vec(),
            weights: weights.iter().map(|w| (w / total) as f32).collect(),
            block_rows: BLOCK_ROWS,
        })
    }

    /// The same mix read `rows` rows at a time (at least 1; 64 by default): the results do not depend on it.
    pub fn in_blocks_of(mut self, rows: usize) -> Self {
        self.block_rows = rows.max(1);
        self
    }

    /// The normalised weights, one per member.
    pub fn weights(&self) -> &[f32] {
        &self.weights
    }

    fn rows(&self) -> usize {
        self.members[0].rows()
    }

    fn classes(&self) -> usize {
        self.members[0].classes()
    }

    /// The weighted mean of the members' probabilities, as a matrix in memory.
    pub fn mean(&self) -> Probs {
        let (rows, classes, block) = (self.rows(), self.classes(), self.block_rows);
        let mut data = vec![0f32; rows * classes];
        for_spans(&mut data, block * classes, |first, span| {
            let first = first / classes;
            span.par_chunks_mut(block * classes).enumerate().for_each_init(
                || vec![0f32; block * classes],
                |scratch, (b, out)| self.mix_rows(first + b * block, out, scratch),
            );
            self.release(first, first + span.len() / classes);
        });
        Probs { rows, classes, data }
    }

    /// The argmax of the weighted mean, without materialising the mean: exactly `self.mean().argmax()`.
    pub fn predict(&self) -> Vec<i64> {
        let (classes, block) = (self.classes(), self.block_rows);
        let mut out = vec![0i64; self.rows()];
        for_spans(&mut out, block, |first, span| {
            span.par_chunks_mut(block).enumerate().for_each_init(
                || (vec![0f32; block * classes], vec![0f32; block * classes]),
                |(buf, scratch), (b, out)| {
                    let buf = &mut buf[..out.len() * classes];
                    self.mix_rows(first + b * block, buf, scratch);
                    for (o, row) in out.iter_mut().zip(buf.chunks_exact(classes)) {
                        *o = argmax_row(row) as i64;
                    }
                },
            );
            self.release(first, first + span.len());
        });
        out
    }

    /// The accuracy of the mix's predictions against `labels`.
    pub fn accuracy(&self, labels: &[u16]) -> Result<f64, EnsembleError> {
        check_labels(labels, self.rows(), self.classes())?;
        let correct = self.predict().iter().zip(labels).filter(|(p, l)| **p == i64::from(**l)).count();
        Ok(fraction(correct, self.rows()))
    }

    /// Writes the weighted mean of rows `first..` into `out` (whole rows), reading the members through `scratch`. The
    /// one place the mean is computed, so `mean` and `predict` agree bit for bit, whatever the blocks.
    fn mix_rows(&self, first: usize, out: &mut [f32], scratch: &mut [f32]) {
        let scratch = &mut scratch[..out.len()];
        let (first_member, w0) = (self.members[0].read(first, scratch), self.weights[0]);
        for (o, &x) in out.iter_mut().zip(first_member) {
            *o = w0 * x;
        }
        for (member, &w) in self.members.iter().zip(&self.weights).skip(1) {
            for (o, &x) in out.iter_mut().zip(member.read(first, scratch)) {
                *o += w * x;
            }
        }
    }

    fn release(&self, first: usize, end: usize) {
        for m in &self.members {
            m.release(first, end);
        }
    }
}

/// When greedy selection stops adding members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Stop {
    /// Stop as soon as no candidate improves validation accuracy.
    #[default]
    NoImprovement,
    /// Keep adding the best candidate up to `max_members`, then keep the prefix with the best accuracy (the shortest
    /// on a tie): Caruana's variant, which can cross a plateau.
    BestSoFar,
}

/// How greedy forward selection runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GreedyOptions {
    /// The most members (counted with repetition) the ensemble may hold.
    pub max_members: usize,
    /// Start from the best `init_best` single models, each once (Caruana's "sorted ensemble initialisation").
    pub init_best: usize,
    pub stop: Stop,
}

impl Default for GreedyOptions {
    fn default() -> Self {
        Self { max_members: 10, init_best: 0, stop: Stop::NoImprovement }
    }
}

/// A candidate chosen by greedy selection, how often, and its normalised weight.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Member {
    /// The index into the candidate pool.
    pub candidate: usize,
    pub count: u32,
    /// `count` over the total count.
    pub weight: f64,
}

/// One addition to the ensemble, in order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    pub candidate: usize,
    /// The validation accuracy of the running average after this addition.
    pub val_acc: f64,
}

/// What greedy selection chose and how much it gained.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    /// The chosen candidates, by ascending candidate index.
    pub members: Vec<Member>,
    /// The additions that were kept, in order.
    pub steps: Vec<Step>,
    /// The validation accuracy of the mix of `members` with their weights (computed as a submission would be).
    pub val_acc: f64,
    /// The best single candidate (the lowest index on a tie) and its validation accuracy.
    pub best_single: usize,
    pub best_single_acc: f64,
    /// `val_acc - best_single_acc`.
    pub gain: f64,
}

impl Selection {
    /// The normalised weights, one per member, in the order of `members`.
    pub fn weights(&self) -> Vec<f64> {
        self.members.iter().map(|m| m.weight).collect()
    }
}

/// Greedy forward selection with replacement (Caruana et al., 2004) over a pool of candidates' validation
/// probabilities: start empty (or from the best `init_best` single candidates), repeatedly add the candidate that
/// maximises the validation accuracy of the running average, up to `max_members`. Deterministic: ties go to the
/// lowest index.
pub fn greedy_select<P: ProbRows + ?Sized>(
    candidates: &[&P],
    labels: &[u16],
    options: GreedyOptions,
) -> Result<Selection, EnsembleError> {
    let (rows, _) = check_pool(candidates, labels, options)?;
    let all: Vec<u32> = (0..rows as u32).collect();
    let picked = select_on(candidates, labels, &all, options);
    let members = picked.members();
    let chosen: Vec<&P> = members.iter().map(|m| candidates[m.candidate]).collect();
    let weights: Vec<f64> = members.iter().map(|m| m.weight).collect();
    let val_acc = Mix::weighted(&chosen, &weights)?.accuracy(labels)?;
    let best_single_acc = fraction(picked.singles[picked.best_single], rows);
    Ok(Selection {
        members,
        steps: picked
            .steps
            .iter()
            .map(|&(candidate, correct)| Step { candidate, val_acc: fraction(correct, rows) })
            .collect(),
        val_acc,
        best_single: picked.best_single,
        best_single_acc,
        gain: val_acc - best_single_acc,
    })
}

/// How well the selection *procedure* does on samples it did not select on: the validation rows are cut into folds
/// (`fold_of`, one fold id per row); for each fold, greedy selection and the choice of the best single candidate run
/// on the other folds, and both are scored on the held-out fold. Selection's own `val_acc` is measured on the rows it
/// was chosen on, so it is biased upwards; this is the honest estimate of the gain over submitting the best single.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CrossFit {
    /// Folds that held rows (each was held out once).
    pub folds: usize,
    /// Rows scored: every row, once, while its fold was held out.
    pub rows: usize,
    /// Accuracy on held-out rows of the ensembles chosen without them.
    pub val_acc: f64,
    /// Accuracy on held-out rows of the single candidates that were best without them.
    pub best_single_acc: f64,
    /// `val_acc - best_single_acc`.
    pub gain: f64,
}

/// Cross-fits greedy selection over the folds in `fold_of` (see [`CrossFit`]). Needs at least two non-empty folds.
pub fn cross_fit<P: ProbRows + ?Sized>(
    candidates: &[&P],
    labels: &[u16],
    fold_of: &[u8],
    options: GreedyOptions,
) -> Result<CrossFit, EnsembleError> {
    let (rows, _) = check_pool(candidates, labels, options)?;
    if fold_of.len() != rows {
        return Err(EnsembleError::FoldCount { folds: fold_of.len(), rows });
    }
    let mut by_fold: std::collections::BTreeMap<u8, Vec<u32>> = std::collections::BTreeMap::new();
    for (row, &fold) in fold_of.iter().enumerate() {
        by_fold.entry(fold).or_default().push(row as u32);
    }
    if by_fold.len() < 2 {
        return Err(EnsembleError::TooFewFolds { folds: by_fold.len() });
    }
    let (mut ensemble_correct, mut single_correct) = (0usize, 0usize);
    for (&fold, held_out) in &by_fold {
        let fit: Vec<u32> = (0..rows as u32).filter(|&r| fold_of[r as usize] != fold).collect();
        let picked = select_on(candidates, labels, &fit, options);
        let members = picked.members();
        let chosen: Vec<&P> = members.iter().map(|m| candidates[m.candidate]).collect();
        let weights: Vec<f64> = members.iter().map(|m| m.weight).collect();
        let predicted = Mix::weighted(&chosen, &weights)?.predict();
        let single = argmax_of(candidates[picked.best_single]);
        for &row in held_out {
            let row = row as usize;
            let label = usize::from(labels[row]);
            ensemble_correct += usize::from(usize::try_from(predicted[row]).is_ok_and(|p| p == label));
            single_correct += usize::from(usize::try_from(single[row]).is_ok_and(|p| p == label));
        }
    }
    let val_acc = fraction(ensemble_correct, rows);
    let best_single_acc = fraction(single_correct, rows);
    Ok(CrossFit { folds: by_fold.len(), rows, val_acc, best_single_acc, gain: val_acc - best_single_acc })
}

/// Checks a pool, its labels and the options; returns (rows, classes).
fn check_pool<P: ProbRows + ?Sized>(
    candidates: &[&P],
    labels: &[u16],
    options: GreedyOptions,
) -> Result<(usize, usize), EnsembleError> {
    let pool = Mix::weighted(candidates, &vec![1.0; candidates.len()])?; // validates shapes
    let (rows, classes) = (pool.rows(), pool.classes());
    check_labels(labels, rows, classes)?;
    if options.max_members == 0 {
        return Err(EnsembleError::MaxMembersZero);
    }
    if options.init_best > options.max_members {
        return Err(EnsembleError::InitExceedsMax { init_best: options.init_best, max_members: options.max_members });
    }
    if options.init_best > candidates.len() {
        return Err(EnsembleError::InitExceedsCandidates {
            init_best: options.init_best,
            candidates: candidates.len(),
        });
    }
    Ok((rows, classes))
}

/// What selection on a subset of rows picked, in counts of correct rows of that subset.
struct Picked {
    /// Times each candidate was added.
    counts: Vec<u32>,
    /// (candidate, correct rows after adding it), the additions kept, in order.
    steps: Vec<(usize, usize)>,
    /// Correct rows of each candidate alone.
    singles: Vec<usize>,
    best_single: usize,
}

impl Picked {
    fn members(&self) -> Vec<Member> {
        let total: u32 = self.counts.iter().sum();
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(candidate, &count)| Member { candidate, count, weight: f64::from(count) / f64::from(total) })
            .collect()
    }
}

/// Greedy selection measured on `rows` (indices into the candidates' rows and `labels`) alone. The pool and options
/// are checked by the caller.
fn select_on<P: ProbRows + ?Sized>(candidates: &[&P], labels: &[u16], rows: &[u32], options: GreedyOptions) -> Picked {
    let classes = candidates.first().map_or(1, |c| c.classes());
    let singles = count_correct(None, candidates, labels, rows, classes);
    let best_single = best_index(&singles);
    if candidates.len() == 1 {
        // one candidate: every step mixes it with itself, so no step improves on the first
        return Picked { counts: vec![1], steps: vec![(0, singles[0])], singles, best_single };
    }
    let mut sum = vec![0f32; rows.len() * classes];
    let mut counts = vec![0u32; candidates.len()];
    // (candidate, correct rows after adding it)
    let mut steps: Vec<(usize, usize)> = Vec::new();

    let mut ranked: Vec<usize> = (0..candidates.len()).collect();
    ranked.sort_by(|&a, &b| singles[b].cmp(&singles[a]).then(a.cmp(&b)));
    for &c in ranked.iter().take(options.init_best) {
        add_into(&mut sum, candidates[c], rows);
        counts[c] += 1;
        steps.push((c, 0));
    }
    if let Some(last) = steps.last_mut() {
        // an empty candidate slice counts the running sum alone
        last.1 = count_correct::<P>(Some(&sum), &[], labels, rows, classes)[0];
    }

    while steps.len() < options.max_members {
        let correct = if steps.is_empty() {
            singles.clone()
        } else {
            count_correct(Some(&sum), candidates, labels, rows, classes)
        };
        let best = best_index(&correct);
        let improves = steps.last().is_none_or(|&(_, now)| correct[best] > now);
        if !improves && options.stop == Stop::NoImprovement {
            break;
        }
        add_into(&mut sum, candidates[best], rows);
        counts[best] += 1;
        steps.push((best, correct[best]));
    }

    if options.stop == Stop::BestSoFar {
        // keep the shortest prefix with the best accuracy, never dropping the initial members
        let from = options.init_best.max(1) - 1;
        let keep = (from..steps.len()).max_by(|&a, &b| steps[a].1.cmp(&steps[b].1).then(b.cmp(&a))).unwrap_or(from);
        for &(c, _) in &steps[keep + 1..] {
            counts[c] -= 1;
        }
        steps.truncate(keep + 1);
    }
    Picked { counts, steps, singles, best_single }
}

/// For each candidate, how many of `rows` `argmax(sum + candidate)` gets right (`sum` absent: the candidate alone).
/// With no candidates, one count: the rows `argmax(sum)` gets right. `sum` holds one row per entry of `rows`, in
/// that order; `labels` and the candidates are indexed by the row numbers themselves. The candidates are read a row at
/// a time and released span by span.
fn count_correct<P: ProbRows + ?Sized>(
    sum: Option<&[f32]>,
    candidates: &[&P],
    labels: &[u16],
    rows: &[u32],
    classes: usize,
) -> Vec<usize> {
    let n = candidates.len().max(1);
    let mut total = vec![0usize; n];
    for (s, span) in rows.chunks(BLOCK_ROWS * SPAN_BLOCKS).enumerate() {
        let offset = s * BLOCK_ROWS * SPAN_BLOCKS;
        let counts = span
            .par_chunks(BLOCK_ROWS)
            .enumerate()
            .fold(
                || (vec![0usize; n], vec![0f32; classes]),
                |(mut acc, mut buf), (block, block_rows)| {
                    let first = offset + block * BLOCK_ROWS;
                    for (at, &row) in (first..).zip(block_rows) {
                        let row = row as usize;
                        let label = usize::from(labels[row]);
                        let s = sum.map(|s| &s[at * classes..(at + 1) * classes]);
                        if candidates.is_empty() {
                            acc[0] += usize::from(s.is_some_and(|s| label_wins(s, None, label)));
                        }
                        for (a, c) in acc.iter_mut().zip(candidates) {
                            let p = c.read(row, &mut buf);
                            let wins = match s {
                                Some(s) => label_wins(s, Some(p), label),
                                None => label_wins(p, None, label),
                            };
                            *a += usize::from(wins);
                        }
                    }
                    (acc, buf)
                },
            )
            .map(|(acc, _)| acc)
            .reduce(|| vec![0usize; n], |a, b| a.iter().zip(&b).map(|(x, y)| x + y).collect());
        for (t, c) in total.iter_mut().zip(counts) {
            *t += c;
        }
        release_rows(candidates, span);
    }
    total
}

/// Lets the candidates hand back the rows of `span` (ascending row numbers).
fn release_rows<P: ProbRows + ?Sized>(candidates: &[&P], span: &[u32]) {
    if let (Some(&first), Some(&last)) = (span.first(), span.last()) {
        for c in candidates {
            c.release(first as usize, last as usize + 1);
        }
    }
}

/// Whether `label` is the argmax (lowest id on a tie) of `a + b` (or of `a` alone): it must beat every class before
/// it and tie or beat every class after it. Two max-reductions, no branch per element, so it vectorises.
fn label_wins(a: &[f32], b: Option<&[f32]>, label: usize) -> bool {
    match b {
        None => {
            let v = a[label];
            max_of(&a[..label]) < v && max_of(&a[label + 1..]) <= v
        }
        Some(b) => {
            let v = a[label] + b[label];
            max_of_sum(&a[..label], &b[..label]) < v && max_of_sum(&a[label + 1..], &b[label + 1..]) <= v
        }
    }
}

fn max_of(xs: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let chunks = xs.chunks_exact(8);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (m, &x) in lanes.iter_mut().zip(chunk) {
            *m = if x > *m { x } else { *m };
        }
    }
    tail.iter().chain(&lanes).fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m })
}

fn max_of_sum(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x + y);
    for (xa, xb) in ca.zip(cb) {
        for ((m, &x), &y) in lanes.iter_mut().zip(xa).zip(xb) {
            let v = x + y;
            *m = if v > *m { v } else { *m };
        }
    }
    tail.chain(lanes).fold(f32::NEG_INFINITY, |m, x| if x > m { x } else { m })
}

/// The first index of the largest value of a finite row.
fn argmax_row(row: &[f32]) -> usize {
    let max = max_of(row);
    row.iter().position(|&x| x == max).unwrap_or(0)
}

/// The index of the largest count, the lowest on a tie.
fn best_index(counts: &[usize]) -> usize {
    let mut best = 0;
    for (i, &c) in counts.iter().enumerate() {
        if c > counts[best] {
            best = i;
        }
    }
    best
}

/// Adds `probs`' rows `rows` to `sum`, which holds one row per entry of `rows`.
fn add_into<P: ProbRows + ?Sized>(sum: &mut [f32], probs: &P, rows: &[u32]) {
    let classes = probs.classes();
    let span_rows = BLOCK_ROWS * SPAN_BLOCKS;
    for (sum, span) in sum.chunks_mut(span_rows * classes).zip(rows.chunks(span_rows)) {
        sum.par_chunks_mut(BLOCK_ROWS * classes).zip(span.par_chunks(BLOCK_ROWS)).for_each_init(
            || vec![0f32; classes],
            |buf, (s, rows)| {
                for (s, &row) in s.chunks_exact_mut(classes).zip(rows) {
                    for (s, &p) in s.iter_mut().zip(probs.read(row as usize, buf)) {
                        *s += p;
                    }
                }
            },
        );
        release_rows(&[probs], span);
    }
}

fn check_labels(labels: &[u16], rows: usize, classes: usize) -> Result<(), EnsembleError> {
    if labels.len() != rows {
        return Err(EnsembleError::LabelCount { labels: labels.len(), rows });
    }
    match labels.iter().position(|&l| usize::from(l) >= classes) {
        Some(row) => Err(EnsembleError::LabelOutOfRange { row, label: labels[row], classes }),
        None => Ok(()),
    }
}

fn fraction(correct: usize, rows: usize) -> f64 {
    if rows == 0 { 0.0 } else { correct as f64 / rows as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probs(rows: &[&[f32]]) -> Probs {
        let classes = rows[0].len();
        Probs::new(rows.len(), classes, rows.concat()).unwrap()
    }

    /// Deterministic pseudo-random values in [0, 1), quantised to `levels` steps so that ties occur.
    fn random(rows: usize, classes: usize, seed: u64, levels: u32) -> Probs {
        let mut state = seed;
        let data = (0..rows * classes)
            .map(|_| {
                state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                ((z ^ (z >> 31)) % u64::from(levels)) as f32 / levels as f32
            })
            .collect();
        Probs::new(rows, classes, data).unwrap()
    }

    #[test]
    fn argmax_takes_the_lowest_class_on_a_tie() {
        let p =
            probs(&[&[0.1, 0.4, 0.4, 0.1], &[0.7, 0.1, 0.1, 0.1], &[0.25, 0.25, 0.25, 0.25], &[0.0, 0.0, 0.1, 0.9]]);
        assert_eq!(p.argmax(), vec![1, 0, 0, 3]);
        assert_eq!(p.accuracy(&[1, 0, 1, 3]).unwrap(), 0.75);
    }

    #[test]
    fn an_ensemble_of_a_checkpoint_with_itself_is_that_checkpoint() {
        let p = random(300, 350, 7, 1000);
        for weights in [[1.0, 1.0], [2.5, 2.5]] {
            let mix = Mix::new(&[&p, &p], &weights).unwrap();
            assert_eq!(mix.mean(), p);
            assert_eq!(mix.predict(), p.argmax());
        }
        let labels: Vec<u16> = p.argmax().iter().map(|&c| ((c + 1) % 350) as u16).collect();
        let selection = greedy_select(&[&p, &p], &labels, GreedyOptions::default()).unwrap();
        assert_eq!(selection.val_acc, p.accuracy(&labels).unwrap());
        assert_eq!(selection.gain, 0.0);
    }

    #[test]
    fn predict_matches_the_argmax_of_the_mean_across_blocks() {
        let (a, b, c) = (random(200, 37, 1, 8), random(200, 37, 2, 8), random(200, 37, 3, 8));
        let mix = Mix::new(&[&a, &b, &c], &[0.5, 0.3, 0.2]).unwrap();
        assert_eq!(mix.predict(), mix.mean().argmax());
        assert_eq!(mix.weights().len(), 3);
        assert!((mix.weights().iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn the_selection_kernel_agrees_with_argmax_including_ties() {
        // values on 4 levels over 9 classes: many ties, which the kernel must break like argmax (lowest id)
        let (a, b) = (random(500, 9, 11, 4), random(500, 9, 12, 4));
        let labels: Vec<u16> = (0..500).map(|i| (i % 9) as u16).collect();
        let all: Vec<u32> = (0..500).collect();
        let singles = count_correct(None, &[&a, &b], &labels, &all, 9);
        for (count, p) in singles.iter().zip([&a, &b]) {
            assert_eq!(*count as f64 / 500.0, p.accuracy(&labels).unwrap());
        }
        let mut sum = vec![0f32; 500 * 9];
        add_into(&mut sum, &a, &all);
        let pair = count_correct(Some(&sum), &[&b], &labels, &all, 9)[0];
        assert_eq!(pair as f64 / 500.0, Mix::equal(&[&a, &b]).unwrap().accuracy(&labels).unwrap());
        assert!(singles.iter().any(|&c| c > 0) && pair > 0);
    }

    /// Selection on a subset of rows equals selection on a copy of those rows: the row indexing of the kernel.
    #[test]
    fn selection_on_a_subset_of_rows_equals_selection_on_a_copy_of_them() {
        let pool: Vec<Probs> = (0..6).map(|s| random(300, 11, 40 + s, 6)).collect();
        let labels: Vec<u16> = (0..300).map(|i| ((i * 7) % 11) as u16).collect();
        let subset: Vec<u32> = (0..300).filter(|r| r % 3 != 1).collect();
        let copy = |p: &Probs| {
            let data = subset.iter().flat_map(|&r| p.row(r as usize).to_vec()).collect();
            Probs::new(subset.len(), 11, data).unwrap()
        };
        let copies: Vec<Probs> = pool.iter().map(copy).collect();
        let copied_labels: Vec<u16> = subset.iter().map(|&r| labels[r as usize]).collect();
        let options = GreedyOptions { max_members: 8, init_best: 2, stop: Stop::BestSoFar };
        let refs: Vec<&Probs> = pool.iter().collect();
        let picked = select_on(&refs, &labels, &subset, options);
        let expected = greedy_select(&copies.iter().collect::<Vec<_>>(), &copied_labels, options).unwrap();
        assert_eq!(picked.members(), expected.members);
        assert_eq!(picked.best_single, expected.best_single);
        let steps: Vec<usize> = picked.steps.iter().map(|s| s.0).collect();
        assert_eq!(steps, expected.steps.iter().map(|s| s.candidate).collect::<Vec<_>>());
        assert!(expected.members.len() > 1, "a pool of noise should still pick several members in-sample");
    }

    /// Members that are the label plus independent noise: each errs on its own samples, so averaging helps on samples
    /// selection never saw too.
    fn noisy_members(members: u64, rows: usize, classes: usize) -> (Vec<Probs>, Vec<u16>) {
        let labels: Vec<u16> = (0..rows).map(|i| ((i * 13 + i / 7) % classes) as u16).collect();
        let pool = (0..members)
            .map(|m| {
                let noise = random(rows, classes, 100 + m, 1000);
                let data = (0..rows)
                    .flat_map(|r| {
                        let label = usize::from(labels[r]);
                        noise.row(r).iter().enumerate().map(move |(c, &x)| x + if c == label { 0.45 } else { 0.0 })
                    })
                    .collect();
                Probs::new(rows, classes, data).unwrap()
            })
            .collect();
        (pool, labels)
    }

    #[test]
    fn cross_fitting_confirms_a_real_gain_on_held_out_rows() {
        let (pool, labels) = noisy_members(5, 600, 10);
        let refs: Vec<&Probs> = pool.iter().collect();
        let options = GreedyOptions { max_members: 10, init_best: 0, stop: Stop::BestSoFar };
        let in_sample = greedy_select(&refs, &labels, options).unwrap();
        let folds: Vec<u8> = (0..600).map(|r| (r % 2) as u8).collect();
        let cf = cross_fit(&refs, &labels, &folds, options).unwrap();
        assert_eq!((cf.folds, cf.rows), (2, 600));
        assert!(in_sample.gain > 0.05, "in-sample gain {}", in_sample.gain);
        assert!(cf.gain > 0.05, "averaging independent errors must help on unseen rows too: {cf:?}");
        assert!((cf.gain - (cf.val_acc - cf.best_single_acc)).abs() < 1e-12);
    }

    #[test]
    fn cross_fitting_exposes_a_gain_that_is_only_selection_noise() {
        // 30 candidates of pure noise: selection finds an in-sample "gain" that does not carry to unseen rows
        let pool: Vec<Probs> = (0..30).map(|s| random(400, 10, 200 + s, 1000)).collect();
        let labels: Vec<u16> = (0..400).map(|i| ((i * 7 + i / 3) % 10) as u16).collect();
        let refs: Vec<&Probs> = pool.iter().collect();
        let options = GreedyOptions { max_members: 10, init_best: 0, stop: Stop::BestSoFar };
        let in_sample = greedy_select(&refs, &labels, options).unwrap();
        let folds: Vec<u8> = (0..400).map(|r| (r * 31 % 3) as u8).collect();
        let cf = cross_fit(&refs, &labels, &folds, options).unwrap();
        assert_eq!(cf.folds, 3);
        assert!(in_sample.gain > 0.03, "selection overfits its rows: {in_sample:?}");
        assert!(cf.val_acc < in_sample.val_acc - 0.05, "held out {} vs in-sample {}", cf.val_acc, in_sample.val_acc);
        assert!((cf.val_acc - 0.1).abs() < 0.06, "noise is at chance on unseen rows: {}", cf.val_acc);
        assert!(cf.gain < in_sample.gain - 0.03, "held-out gain {} vs in-sample {}", cf.gain, in_sample.gain);
    }

    #[test]
    fn cross_fitting_needs_one_fold_id_per_row_and_two_folds() {
        let (pool, labels) = noisy_members(2, 20, 4);
        let refs: Vec<&Probs> = pool.iter().collect();
        let options = GreedyOptions::default();
        assert_eq!(cross_fit(&refs, &labels, &[0; 19], options), Err(EnsembleError::FoldCount { folds: 19, rows: 20 }));
        assert_eq!(cross_fit(&refs, &labels, &[3; 20], options), Err(EnsembleError::TooFewFolds { folds: 1 }));
    }

    /// Three members over 9 samples of 3 classes; each is wrong (not confidently) on its own third of the samples.
    fn complementary() -> (Vec<Probs>, Vec<u16>) {
        let labels: Vec<u16> = (0..9).map(|i| (i % 3) as u16).collect();
        let members = (0..3)
            .map(|m| {
                let rows: Vec<Vec<f32>> = labels
                    .iter()
                    .enumerate()
                    .map(|(i, &l)| {
                        let l = usize::from(l);
                        let mut row = vec![0.0; 3];
                        if i / 3 == m {
                            row[l] = 0.35;
                            row[(l + 1) % 3] = 0.65;
                        } else {
                            row[l] = 0.7;
                            row[(l + 2) % 3] = 0.3;
                        }
                        row
                    })
                    .collect();
                Probs::new(9, 3, rows.concat()).unwrap()
            })
            .collect();
        (members, labels)
    }

    #[test]
    fn greedy_selection_beats_the_best_single_member_when_members_err_apart() {
        let (members, labels) = complementary();
        let pool: Vec<&Probs> = members.iter().collect();
        for m in &pool {
            assert_eq!(m.accuracy(&labels).unwrap(), 6.0 / 9.0);
        }
        let s = greedy_select(&pool, &labels, GreedyOptions::default()).unwrap();
        assert_eq!(s.best_single, 0);
        assert_eq!(s.best_single_acc, 6.0 / 9.0);
        assert_eq!(s.val_acc, 1.0);
        assert!(s.val_acc > s.best_single_acc);
        assert!((s.gain - 3.0 / 9.0).abs() < 1e-12);
        assert_eq!(
            s.members,
            vec![Member { candidate: 0, count: 1, weight: 0.5 }, Member { candidate: 1, count: 1, weight: 0.5 }]
        );
        assert_eq!(s.weights(), vec![0.5, 0.5]);
        assert_eq!(s.steps, vec![Step { candidate: 0, val_acc: 6.0 / 9.0 }, Step { candidate: 1, val_acc: 1.0 }]);
        // deterministic
        assert_eq!(greedy_select(&pool, &labels, GreedyOptions::default()).unwrap(), s);
    }

    /// Two members of 2 classes where only the 2:1 mix of A and B gets every sample right (see the test below).
    fn plateau() -> (Probs, Probs, Vec<u16>) {
        // (A's probability of the label, B's probability of the label, how many samples)
        let kinds = [(0.7f32, 0.2f32, 2), (0.45, 0.8, 2), (0.9, 0.9, 6)];
        let (mut a, mut b, mut labels) = (vec![], vec![], vec![]);
        for (i, &(pa, pb, _)) in kinds.iter().flat_map(|k| std::iter::repeat_n(k, k.2)).enumerate() {
            let label = (i % 2) as u16;
            let row = |p: f32| if label == 0 { [p, 1.0 - p] } else { [1.0 - p, p] };
            a.extend(row(pa));
            b.extend(row(pb));
            labels.push(label);
        }
        (Probs::new(10, 2, a).unwrap(), Probs::new(10, 2, b).unwrap(), labels)
    }

    #[test]
    fn best_so_far_crosses_a_plateau_and_repeats_a_member() {
        let (a, b, labels) = plateau();
        assert_eq!(a.accuracy(&labels).unwrap(), 0.8);
        assert_eq!(b.accuracy(&labels).unwrap(), 0.8);
        assert_eq!(Mix::equal(&[&a, &b]).unwrap().accuracy(&labels).unwrap(), 0.8);

        let stop_early = greedy_select(&[&a, &b], &labels, GreedyOptions::default()).unwrap();
        assert_eq!(stop_early.members, vec![Member { candidate: 0, count: 1, weight: 1.0 }]);
        assert_eq!(stop_early.gain, 0.0);

        let options = GreedyOptions { max_members: 6, init_best: 0, stop: Stop::BestSoFar };
        let s = greedy_select(&[&a, &b], &labels, options).unwrap();
        assert_eq!(s.members.iter().map(|m| (m.candidate, m.count)).collect::<Vec<_>>(), vec![(0, 2), (1, 1)]);
        assert!((s.members[0].weight - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(s.val_acc, 1.0);
        assert!((s.gain - 0.2).abs() < 1e-12);
        assert_eq!(s.steps.iter().map(|s| s.candidate).collect::<Vec<_>>(), vec![0, 0, 1]);
    }

    #[test]
    fn initialisation_starts_from_the_best_singles() {
        let (members, labels) = complementary();
        let mut pool: Vec<&Probs> = members.iter().collect();
        let weak = Probs::new(9, 3, vec![1.0 / 3.0; 27]).unwrap(); // always predicts class 0: 3 of 9
        pool.insert(0, &weak);
        let options = GreedyOptions { max_members: 2, init_best: 2, stop: Stop::NoImprovement };
        let s = greedy_select(&pool, &labels, options).unwrap();
        assert_eq!(s.members.iter().map(|m| m.candidate).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(s.best_single, 1);
        assert_eq!(s.val_acc, 1.0);
        assert_eq!(s.steps.len(), 2);
    }

    #[test]
    fn bad_input_is_refused_with_its_reason() {
        use EnsembleError as E;
        assert_eq!(Probs::new(2, 3, vec![0.0; 5]), Err(E::BadLength { rows: 2, classes: 3, expected: 6, got: 5 }));
        assert_eq!(Probs::new(0, 0, vec![]), Err(E::NoClasses));
        assert!(matches!(Probs::new(2, 2, vec![0.0, 0.0, f32::NAN, 0.0]), Err(E::NotFinite { row: 1, class: 0, .. })));
        let (a, b) = (random(4, 3, 1, 10), random(5, 3, 2, 10));
        assert!(matches!(Mix::equal(&[]), Err(E::NoMembers)));
        assert!(matches!(Mix::equal(&[&a, &b]), Err(E::ShapeMismatch { member: 1, rows: 5, .. })));
        assert_eq!(Mix::new(&[&a, &a], &[1.0]).unwrap_err(), E::WeightCount { members: 2, weights: 1 });
        assert_eq!(Mix::new(&[&a, &a], &[1.0, -0.5]).unwrap_err(), E::BadWeight { index: 1, value: -0.5 });
        assert!(matches!(Mix::new(&[&a], &[f64::INFINITY]), Err(E::BadWeight { index: 0, .. })));
        let message = Mix::new(&[&a, &a], &[1.0, -0.5]).unwrap_err().to_string();
        assert!(message.starts_with("the weight of member 2 is -0.5"), "members count from 1: {message}");
        assert_eq!(Mix::new(&[&a, &a], &[0.0, 0.0]).unwrap_err(), E::ZeroWeights);
        assert_eq!(a.accuracy(&[0, 1, 2]).unwrap_err(), E::LabelCount { labels: 3, rows: 4 });
        assert_eq!(a.accuracy(&[0, 1, 3, 0]).unwrap_err(), E::LabelOutOfRange { row: 2, label: 3, classes: 3 });
        let labels = [0, 1, 2, 0];
        let greedy = |max_members, init_best| {
            greedy_select(&[&a], &labels, GreedyOptions { max_members, init_best, stop: Stop::NoImprovement })
        };
        assert_eq!(greedy(0, 0).unwrap_err(), E::MaxMembersZero);
        assert_eq!(greedy(1, 2).unwrap_err(), E::InitExceedsMax { init_best: 2, max_members: 1 });
        assert_eq!(greedy(3, 2).unwrap_err(), E::InitExceedsCandidates { init_best: 2, candidates: 1 });
    }

    /// `cargo test --release --lib bench_reensemble -- --ignored --nocapture`: AI RUSH scale, 5 cached members of
    /// 138,343 x 350.
    #[test]
    #[ignore]
    fn bench_reensemble_at_airush_scale() {
        let (rows, classes) = (138_343, 350);
        let members: Vec<Probs> = (0..5).map(|m| random(rows, classes, m, 1 << 16)).collect();
        let pool: Vec<&Probs> = members.iter().collect();
        let labels: Vec<u16> = (0..rows).map(|i| (i * 7 % classes) as u16).collect();
        let time = |what: &str, f: &mut dyn FnMut()| {
            let start = std::time::Instant::now();
            f();
            println!("{what}: {:.3} s", start.elapsed().as_secs_f64());
        };
        time("mix of 5 members -> predictions", &mut || {
            let p = Mix::new(&pool, &[1.0, 2.0, 1.0, 1.0, 0.5]).unwrap().predict();
            assert_eq!(p.len(), rows);
        });
        time("mix of 5 members -> validation accuracy", &mut || {
            Mix::equal(&pool).unwrap().accuracy(&labels).unwrap();
        });
        time("mix of 5 members -> mean matrix", &mut || {
            assert_eq!(Mix::equal(&pool).unwrap().mean().rows(), rows);
        });
        time("greedy selection, 5 candidates, up to 10 members (best so far)", &mut || {
            let options = GreedyOptions { max_members: 10, init_best: 0, stop: Stop::BestSoFar };
            greedy_select(&pool, &labels, options).unwrap();
        });
    }
}
