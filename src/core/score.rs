//! Scoring submissions and ranking them: accuracy against the first tag of each test sticker, the fixed public/private
//! split of the test set (Kaggle style), the dry-run sample, board ordering and the daily submission limit.
//!
//! All pure: the scorer's edge reads the hidden labels and the store, then asks these functions.
//!
//! **The public/private split.** Each test index `i` gets the key `splitmix64(seed + i)`, where `seed` is the first 8
//! bytes (little-endian) of `sha256("rush/board-split/v1/" + salt)` and `salt` is the dataset's name. The indices with
//! the `round(n * public_percent / 100)` smallest keys (ties by index) are public, the rest private; with two or more
//! stickers each part holds at least one. So the split is fixed for a dataset, exact in size, independent of the order
//! in which anyone asks, and unrelated to the package or sticker order of `test_order.csv`. The default public share
//! is [`DEFAULT_PUBLIC_PERCENT`] (30 %, as on many Kaggle boards).
//!
//! **The dry run** (`submit -t`) scores [`DRY_RUN_SAMPLES`] stickers of the *public* part, spread evenly over it (the
//! `floor(k * p / 200)`-th public index, ascending, for `k` in `0..200`, of the `p` public ones), all of them when
//! there are fewer. It is free and never ranked, so it must tell nothing of the private part: its labels are only
//! ever read for the private score of a ranked submission, shown once the dataset is revealed.

use sha2::Digest;
use time::{Duration, OffsetDateTime, Time, UtcOffset};

/// Test stickers a dry run scores.
pub const DRY_RUN_SAMPLES: usize = 200;

/// The share of the test set whose score the board shows before the private part is revealed.
pub const DEFAULT_PUBLIC_PERCENT: u8 = 30;

/// Why predictions or a split could not be scored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScoreError {
    #[error("test sticker {index} has no tags: the first tag is the label")]
    NoTags { index: usize },
    #[error("{predictions} predictions for {stickers} test stickers")]
    CountMismatch { predictions: usize, stickers: usize },
    #[error("prediction {value} at index {index} is not a tag id (0..{tags})")]
    NotATag { index: usize, value: i64, tags: usize },
    #[error("a public share of {0}% is refused: give 1 to 99")]
    BadPublicPercent(u8),
    #[error("index {index} is outside the test set of {stickers} stickers")]
    IndexOutOfRange { index: usize, stickers: usize },
}

/// The label of every test sticker, in the order of `test_order.csv`: its first tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestLabels {
    first: Vec<u16>,
}

impl TestLabels {
    /// From each sticker's tags (as `test_labels.csv` lists them, in index order).
    pub fn from_tags(tags: &[Vec<u16>]) -> Result<Self, ScoreError> {
        let first = tags
            .iter()
            .enumerate()
            .map(|(index, t)| t.first().copied().ok_or(ScoreError::NoTags { index }))
            .collect::<Result<_, _>>()?;
        Ok(Self { first })
    }

    pub fn len(&self) -> usize {
        self.first.len()
    }

    pub fn is_empty(&self) -> bool {
        self.first.is_empty()
    }

    pub fn first_tags(&self) -> &[u16] {
        &self.first
    }
}

/// A prediction file is `stickers` tag ids, each in `0..tags`.
pub fn check_predictions(predictions: &[i64], stickers: usize, tags: usize) -> Result<(), ScoreError> {
    if predictions.len() != stickers {
        return Err(ScoreError::CountMismatch { predictions: predictions.len(), stickers });
    }
    match predictions.iter().position(|&p| p < 0 || p as u64 >= tags as u64) {
        Some(index) => Err(ScoreError::NotATag { index, value: predictions[index], tags }),
        None => Ok(()),
    }
}

/// Which part of the test set a sticker belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Public,
    Private,
}

/// The fixed public/private split of a dataset's test set (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoardSplit {
    public: Vec<bool>,
    n_public: usize,
}

impl BoardSplit {
    /// Splits `stickers` test indices for the dataset named `salt`, `public_percent` of them public.
    pub fn new(salt: &str, stickers: usize, public_percent: u8) -> Result<Self, ScoreError> {
        if !(1..=99).contains(&public_percent) {
            return Err(ScoreError::BadPublicPercent(public_percent));
        }
        let digest = sha2::Sha256::digest(format!("rush/board-split/v1/{salt}").as_bytes());
        let mut seed = [0u8; 8];
        seed.copy_from_slice(&digest[..8]);
        let seed = u64::from_le_bytes(seed);
        let mut order: Vec<(u64, usize)> =
            (0..stickers).map(|i| (splitmix64(seed.wrapping_add(i as u64)), i)).collect();
        order.sort_unstable();
        let mut n_public = (stickers * usize::from(public_percent) + 50) / 100;
        if stickers >= 2 {
            n_public = n_public.clamp(1, stickers - 1);
        } else {
            n_public = stickers;
        }
        let mut public = vec![false; stickers];
        for &(_, i) in &order[..n_public] {
            public[i] = true;
        }
        Ok(Self { public, n_public })
    }

    /// The part of test index `index` (private when out of range).
    pub fn part(&self, index: usize) -> Part {
        if self.public.get(index).copied().unwrap_or(false) { Part::Public } else { Part::Private }
    }

    pub fn len(&self) -> usize {
        self.public.len()
    }

    pub fn is_empty(&self) -> bool {
        self.public.is_empty()
    }

    pub fn n_public(&self) -> usize {
        self.n_public
    }

    pub fn n_private(&self) -> usize {
        self.public.len() - self.n_public
    }
}

/// A submission's accuracies. An empty part scores 0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scores {
    pub public: f64,
    pub private: f64,
    /// Over the whole test set.
    pub overall: f64,
    pub n_public: usize,
    pub n_private: usize,
}

/// Scores a full prediction file (one tag id per test sticker, in test order) against the first tags.
pub fn score(predictions: &[i64], labels: &TestLabels, split: &BoardSplit) -> Result<Scores, ScoreError> {
    let stickers = labels.len();
    if predictions.len() != stickers {
        return Err(ScoreError::CountMismatch { predictions: predictions.len(), stickers });
    }
    if split.len() != stickers {
        return Err(ScoreError::CountMismatch { predictions: split.len(), stickers });
    }
    let (mut public, mut private) = (0usize, 0usize);
    for (i, (&p, &l)) in predictions.iter().zip(&labels.first).enumerate() {
        if p == i64::from(l) {
            match split.part(i) {
                Part::Public => public += 1,
                Part::Private => private += 1,
            }
        }
    }
    Ok(Scores {
        public: fraction(public, split.n_public()),
        private: fraction(private, split.n_private()),
        overall: fraction(public + private, stickers),
        n_public: split.n_public(),
        n_private: split.n_private(),
    })
}

/// The test indices a dry run predicts: [`DRY_RUN_SAMPLES`] of the public part spread evenly, ascending, all public
/// ones when fewer. Never a private index.
pub fn dry_run_indices(split: &BoardSplit) -> Vec<usize> {
    let public: Vec<usize> = (0..split.len()).filter(|&i| split.part(i) == Part::Public).collect();
    let k = public.len().min(DRY_RUN_SAMPLES);
    (0..k).map(|j| public[j * public.len() / k]).collect()
}

/// Accuracy of `predictions[j]` for test index `indices[j]` (a dry run's sample).
pub fn score_subset(predictions: &[i64], indices: &[usize], labels: &TestLabels) -> Result<f64, ScoreError> {
    if predictions.len() != indices.len() {
        return Err(ScoreError::CountMismatch { predictions: predictions.len(), stickers: indices.len() });
    }
    let mut correct = 0;
    for (&p, &index) in predictions.iter().zip(indices) {
        let label = labels.first.get(index).ok_or(ScoreError::IndexOutOfRange { index, stickers: labels.len() })?;
        correct += usize::from(p == i64::from(*label));
    }
    Ok(fraction(correct, indices.len()))
}

/// Which score the board shows and ranks by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reveal {
    /// Before the reveal: public scores only; private scores stay hidden.
    Public,
    /// After it (`--private`, or a dataset setting after a deadline): private scores shown and ranked by.
    Private,
}

/// A scored, ranked (not dry-run) submission as the store hands it to the board; `meta` is what the board shows
/// besides (sessions, checkpoints, user).
#[derive(Debug, Clone, PartialEq)]
pub struct Scored<M> {
    pub id: i64,
    pub submitted_at: OffsetDateTime,
    pub public: f64,
    pub private: f64,
    pub meta: M,
}

/// One line of the board. `private` is `None` until revealed.
#[derive(Debug, Clone, PartialEq)]
pub struct BoardLine<M> {
    /// 1 for the top.
    pub rank: usize,
    pub id: i64,
    pub submitted_at: OffsetDateTime,
    pub public: f64,
    pub private: Option<f64>,
    pub meta: M,
}

/// Orders the board: the shown score descending (public, or private once revealed), then the earlier submission,
/// then the lower id. Ranks are 1, 2, 3, ... in that order; private scores are dropped unless revealed.
pub fn board<M>(mut entries: Vec<Scored<M>>, reveal: Reveal) -> Vec<BoardLine<M>> {
    let key = |e: &Scored<M>| match reveal {
        Reveal::Public => e.public,
        Reveal::Private => e.private,
    };
    entries.sort_by(|a, b| key(b).total_cmp(&key(a)).then(a.submitted_at.cmp(&b.submitted_at)).then(a.id.cmp(&b.id)));
    entries
        .into_iter()
        .enumerate()
        .map(|(i, e)| BoardLine {
            rank: i + 1,
            id: e.id,
            submitted_at: e.submitted_at,
            public: e.public,
            private: (reveal == Reveal::Private).then_some(e.private),
            meta: e.meta,
        })
        .collect()
}

/// The UTC day holding `now`: `[midnight, next midnight)`. Submissions are counted per user and dataset in this window.
pub fn utc_day(now: OffsetDateTime) -> (OffsetDateTime, OffsetDateTime) {
    let start = now.to_offset(UtcOffset::UTC).replace_time(Time::MIDNIGHT);
    (start, start + Duration::DAY)
}

/// Refused: the user has used every submission of the day.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{user} has made {used} of {limit} submissions allowed per day on {dataset}; the limit resets at {resets_at} \
     (in {hours} h {minutes:02} min). Dry runs (-t) are not counted."
)]
pub struct LimitReached {
    pub user: String,
    pub dataset: String,
    pub used: u32,
    pub limit: u32,
    /// The next UTC midnight, as `YYYY-MM-DD 00:00 UTC`.
    pub resets_at: String,
    pub hours: i64,
    pub minutes: i64,
}

/// The daily limit on ranked submissions per user and dataset, as a competition counts them (dry runs are neither
/// counted nor limited).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DailyLimit {
    pub per_day: u32,
}

impl DailyLimit {
    /// Allows one more submission when `used_today` (the user's ranked submissions to `dataset` in [`utc_day`] of
    /// `now`) is below the limit.
    pub fn check(&self, user: &str, dataset: &str, used_today: u32, now: OffsetDateTime) -> Result<(), LimitReached> {
        if used_today < self.per_day {
            return Ok(());
        }
        let (_, reset) = utc_day(now);
        let left = (reset - now).whole_minutes().max(0);
        let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
        Err(LimitReached {
            user: user.to_string(),
            dataset: dataset.to_string(),
            used: used_today,
            limit: self.per_day,
            resets_at: reset.format(format).unwrap_or_else(|_| reset.to_string()),
            hours: left / 60,
            minutes: left % 60,
        })
    }
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn fraction(correct: usize, total: usize) -> f64 {
    if total == 0 { 0.0 } else { correct as f64 / total as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn labels(tags: &[&[u16]]) -> TestLabels {
        TestLabels::from_tags(&tags.iter().map(|t| t.to_vec()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn accuracy_is_against_the_first_tag_exactly() {
        // first tags: 3, 2, 5, 0, 7, 7
        let labels = labels(&[&[3, 1], &[2], &[5, 3], &[0], &[7, 9, 1], &[7]]);
        assert_eq!(labels.first_tags(), &[3, 2, 5, 0, 7, 7]);
        // right on 0, 3, 5; index 2 names its second tag and index 4 its third: both wrong
        let predictions = [3, 1, 3, 0, 1, 7];
        let split = BoardSplit::new("handmade", 6, 50).unwrap();
        assert_eq!((split.n_public(), split.n_private()), (3, 3));
        let s = score(&predictions, &labels, &split).unwrap();
        assert_eq!(s.overall, 0.5);
        let right = [true, false, false, true, false, true];
        let count = |part| (0..6).filter(|&i| split.part(i) == part && right[i]).count() as f64 / 3.0;
        assert_eq!((s.public, s.private), (count(Part::Public), count(Part::Private)));
        assert_eq!(s.public * 3.0 + s.private * 3.0, 3.0);
    }

    #[test]
    fn the_split_is_pinned_for_a_dataset() {
        // Boards depend on this split never changing: these indices were computed once by this algorithm.
        let split = BoardSplit::new("emoji", 20, 30).unwrap();
        let public: Vec<usize> = (0..20).filter(|&i| split.part(i) == Part::Public).collect();
        assert_eq!(public, PINNED_EMOJI_20);
        assert_eq!(split, BoardSplit::new("emoji", 20, 30).unwrap());
        assert_ne!(split, BoardSplit::new("airush1", 20, 30).unwrap());
    }

    const PINNED_EMOJI_20: [usize; 6] = [8, 9, 11, 12, 15, 16];

    #[test]
    fn the_split_has_exact_sizes_and_no_pattern_in_the_order() {
        let split = BoardSplit::new("airush1", 138_343, DEFAULT_PUBLIC_PERCENT).unwrap();
        assert_eq!(split.n_public(), 41_503);
        assert_eq!(split.n_public() + split.n_private(), 138_343);
        let first_half = (0..69_171).filter(|&i| split.part(i) == Part::Public).count() as f64 / 69_171.0;
        assert!((first_half - 0.3).abs() < 0.01, "{first_half}");
        assert_eq!(split.part(10_000_000), Part::Private);
        for (n, public) in [(0, 0), (1, 1), (2, 1), (3, 1), (10, 3)] {
            assert_eq!(BoardSplit::new("x", n, 30).unwrap().n_public(), public, "{n}");
        }
        assert_eq!(BoardSplit::new("x", 3, 99).unwrap().n_public(), 2);
        assert_eq!(BoardSplit::new("x", 3, 0), Err(ScoreError::BadPublicPercent(0)));
        assert_eq!(BoardSplit::new("x", 3, 100), Err(ScoreError::BadPublicPercent(100)));
    }

    #[test]
    fn a_dry_run_uses_200_public_samples_and_never_a_private_one() {
        let split = BoardSplit::new("airush1", 138_343, DEFAULT_PUBLIC_PERCENT).unwrap();
        let indices = dry_run_indices(&split);
        assert_eq!(indices.len(), 200);
        assert!(indices.windows(2).all(|w| w[0] < w[1]));
        assert!(indices.iter().all(|&i| split.part(i) == Part::Public), "a dry run scores private stickers");
        let public: Vec<usize> = (0..138_343).filter(|&i| split.part(i) == Part::Public).collect();
        assert_eq!(indices[0], public[0]);
        assert!(*indices.last().unwrap() > 137_000, "spread over the whole test order");
        // fewer public stickers than 200: all of them
        let small = BoardSplit::new("emoji", 20, 30).unwrap();
        assert_eq!(dry_run_indices(&small), PINNED_EMOJI_20.to_vec());
        let split = BoardSplit::new("x", 1000, 30).unwrap();
        assert_eq!(dry_run_indices(&split).len(), 200);
        assert!(dry_run_indices(&BoardSplit::new("x", 0, 30).unwrap()).is_empty());

        let labels = labels(&[&[1], &[2], &[3], &[4]]);
        assert_eq!(score_subset(&[2, 9], &[1, 3], &labels), Ok(0.5));
        assert_eq!(score_subset(&[2, 9], &[1, 4], &labels), Err(ScoreError::IndexOutOfRange { index: 4, stickers: 4 }));
        assert_eq!(
            score_subset(&[2], &[1, 2], &labels),
            Err(ScoreError::CountMismatch { predictions: 1, stickers: 2 })
        );
    }

    #[test]
    fn bad_predictions_and_labels_are_named() {
        assert_eq!(check_predictions(&[0, 349, 12], 3, 350), Ok(()));
        assert_eq!(check_predictions(&[0, 350], 2, 350), Err(ScoreError::NotATag { index: 1, value: 350, tags: 350 }));
        assert_eq!(check_predictions(&[-1], 1, 350), Err(ScoreError::NotATag { index: 0, value: -1, tags: 350 }));
        assert_eq!(check_predictions(&[1], 2, 350), Err(ScoreError::CountMismatch { predictions: 1, stickers: 2 }));
        assert_eq!(TestLabels::from_tags(&[vec![1], vec![]]), Err(ScoreError::NoTags { index: 1 }));
        let labels = labels(&[&[1], &[2]]);
        let split = BoardSplit::new("x", 2, 50).unwrap();
        assert_eq!(score(&[1], &labels, &split), Err(ScoreError::CountMismatch { predictions: 1, stickers: 2 }));
    }

    fn entry(id: i64, at: OffsetDateTime, public: f64, private: f64) -> Scored<&'static str> {
        Scored { id, submitted_at: at, public, private, meta: "local/emoji/1 best" }
    }

    #[test]
    fn the_board_ranks_by_public_score_then_the_earlier_submission() {
        let t = datetime!(2026-11-30 12:00 UTC);
        let entries = vec![
            entry(1, t, 0.40, 0.45),
            entry(2, t + Duration::minutes(5), 0.43, 0.41),
            entry(3, t - Duration::minutes(5), 0.40, 0.50),
            entry(4, t + Duration::minutes(9), 0.40, 0.39),
        ];
        let public = board(entries.clone(), Reveal::Public);
        assert_eq!(public.iter().map(|l| (l.rank, l.id)).collect::<Vec<_>>(), vec![(1, 2), (2, 3), (3, 1), (4, 4)]);
        assert!(public.iter().all(|l| l.private.is_none()), "private scores stay hidden until revealed");
        assert_eq!(public[0].public, 0.43);

        let private = board(entries, Reveal::Private);
        assert_eq!(private.iter().map(|l| l.id).collect::<Vec<_>>(), vec![3, 1, 2, 4]);
        assert_eq!(private[0].private, Some(0.50));
        assert_eq!(private[0].meta, "local/emoji/1 best");
    }

    #[test]
    fn the_daily_limit_refuses_the_next_one_and_says_when_it_resets() {
        let limit = DailyLimit { per_day: 3 };
        let now = datetime!(2026-11-30 21:15:30 UTC);
        assert_eq!(limit.check("alice", "emoji", 2, now), Ok(()));
        let refused = limit.check("alice", "emoji", 3, now).unwrap_err();
        assert_eq!((refused.hours, refused.minutes), (2, 44));
        assert_eq!(refused.resets_at, "2026-12-01 00:00 UTC");
        let message = refused.to_string();
        assert!(message.contains("alice has made 3 of 3 submissions allowed per day on emoji"), "{message}");
        assert!(message.contains("resets at 2026-12-01 00:00 UTC (in 2 h 44 min)"), "{message}");
        assert!(DailyLimit { per_day: 0 }.check("bob", "emoji", 0, now).is_err());

        let (start, end) = utc_day(datetime!(2026-11-30 23:59 -05:00));
        assert_eq!((start, end), (datetime!(2026-12-01 0:00 UTC), datetime!(2026-12-02 0:00 UTC)));
    }
}
