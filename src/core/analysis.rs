//! What a classifier gets wrong on its validation split, from each sticker's true label and predicted class: accuracy,
//! support and the most frequent wrong prediction per class, the most confused (true, predicted) pairs, accuracy per
//! group (per package, that is per art style), the top-k classes of one sticker, the stickers to show for a class or a
//! confusion pair (wrong ones first), and the per-class delta between two checkpoints. Pure: the daemon reads the
//! probabilities and labels, the web layer draws the tables.

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::ensemble::{ProbRows, argmax_of};

/// Why an analysis cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnalysisError {
    #[error("{labels} labels but {predictions} predictions: they must be of the same stickers")]
    Length { labels: usize, predictions: usize },
    #[error("{groups} groups for {rows} stickers")]
    Groups { groups: usize, rows: usize },
}

/// Each sticker's true label and predicted class, row by row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcomes {
    labels: Vec<u16>,
    predicted: Vec<u16>,
}

/// One class of the per-class table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassRow {
    pub class: u16,
    /// Stickers whose label is this class.
    pub support: usize,
    pub correct: usize,
    pub accuracy: f64,
    /// Stickers of any class predicted as this one.
    pub predicted: usize,
    /// The most frequent wrong prediction for this class (the lowest class id on a tie).
    pub top_wrong: Option<Wrong>,
}

/// A wrong prediction and how often it was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wrong {
    pub class: u16,
    pub count: usize,
}

/// A (true, predicted) pair of different classes and how many stickers it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confusion {
    pub truth: u16,
    pub predicted: u16,
    pub count: usize,
}

/// The accuracy of one group of stickers (a package).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupRow {
    pub group: String,
    pub support: usize,
    pub correct: usize,
    pub accuracy: f64,
}

/// A class and its probability.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Ranked {
    pub class: u16,
    pub probability: f32,
}

/// Which stickers to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Selection {
    /// Every sticker of a class, wrong ones first.
    Class { class: u16 },
    /// The stickers of one class predicted as another.
    Pair { truth: u16, predicted: u16 },
}

fn fraction(part: usize, whole: usize) -> f64 {
    if whole == 0 { 0.0 } else { part as f64 / whole as f64 }
}

/// The predicted class of every row of `probs` (the most probable; the lowest id on a tie).
pub fn predictions<P: ProbRows + ?Sized>(probs: &P) -> Vec<u16> {
    argmax_of(probs).into_iter().map(|c| u16::try_from(c).unwrap_or(u16::MAX)).collect()
}

/// The `k` most probable classes of one row, most probable first (the lower id first on a tie).
pub fn top_k(row: &[f32], k: usize) -> Vec<Ranked> {
    let mut ranked: Vec<Ranked> = row
        .iter()
        .enumerate()
        .map(|(c, &p)| Ranked { class: u16::try_from(c).unwrap_or(u16::MAX), probability: p })
        .collect();
    ranked.sort_by(|a, b| b.probability.total_cmp(&a.probability).then(a.class.cmp(&b.class)));
    ranked.truncate(k);
    ranked
}

impl Outcomes {
    pub fn new(labels: Vec<u16>, predicted: Vec<u16>) -> Result<Self, AnalysisError> {
        if labels.len() != predicted.len() {
            return Err(AnalysisError::Length { labels: labels.len(), predictions: predicted.len() });
        }
        Ok(Self { labels, predicted })
    }

    /// The outcomes of `probs`' argmax against `labels`.
    pub fn from_probs<P: ProbRows + ?Sized>(labels: Vec<u16>, probs: &P) -> Result<Self, AnalysisError> {
        Self::new(labels, predictions(probs))
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn labels(&self) -> &[u16] {
        &self.labels
    }

    pub fn predicted(&self) -> &[u16] {
        &self.predicted
    }

    /// Whether row `row` was predicted right.
    pub fn is_right(&self, row: usize) -> bool {
        self.labels.get(row).is_some_and(|l| self.predicted.get(row) == Some(l))
    }

    pub fn correct(&self) -> usize {
        (0..self.len()).filter(|&r| self.is_right(r)).count()
    }

    pub fn accuracy(&self) -> f64 {
        fraction(self.correct(), self.len())
    }

    /// One row per class with support, by class id.
    pub fn per_class(&self) -> Vec<ClassRow> {
        let mut support: HashMap<u16, usize> = HashMap::new();
        let mut correct: HashMap<u16, usize> = HashMap::new();
        let mut predicted: HashMap<u16, usize> = HashMap::new();
        let mut wrong: HashMap<(u16, u16), usize> = HashMap::new();
        for (&l, &p) in self.labels.iter().zip(&self.predicted) {
            *support.entry(l).or_default() += 1;
            *predicted.entry(p).or_default() += 1;
            if l == p {
                *correct.entry(l).or_default() += 1;
            } else {
                *wrong.entry((l, p)).or_default() += 1;
            }
        }
        let mut top: HashMap<u16, Wrong> = HashMap::new();
        for (&(l, p), &count) in &wrong {
            let better = |w: &Wrong| count > w.count || (count == w.count && p < w.class);
            if top.get(&l).is_none_or(better) {
                top.insert(l, Wrong { class: p, count });
            }
        }
        let mut rows: Vec<ClassRow> = support
            .iter()
            .map(|(&class, &support)| {
                let correct = correct.get(&class).copied().unwrap_or(0);
                ClassRow {
                    class,
                    support,
                    correct,
                    accuracy: fraction(correct, support),
                    predicted: predicted.get(&class).copied().unwrap_or(0),
                    top_wrong: top.get(&class).copied(),
                }
            })
            .collect();
        rows.sort_by_key(|r| r.class);
        rows
    }

    /// The `limit` most frequent (true, predicted) pairs of different classes: the most stickers first, then by true
    /// and predicted class id.
    pub fn confusions(&self, limit: usize) -> Vec<Confusion> {
        let mut counts: HashMap<(u16, u16), usize> = HashMap::new();
        for (&l, &p) in self.labels.iter().zip(&self.predicted) {
            if l != p {
                *counts.entry((l, p)).or_default() += 1;
            }
        }
        let mut pairs: Vec<Confusion> =
            counts.into_iter().map(|((truth, predicted), count)| Confusion { truth, predicted, count }).collect();
        pairs.sort_by(|a, b| b.count.cmp(&a.count).then(a.truth.cmp(&b.truth)).then(a.predicted.cmp(&b.predicted)));
        pairs.truncate(limit);
        pairs
    }

    /// Accuracy per group, `groups[row]` naming each row's: the least accurate first (then by name), so the group that
    /// lags leads.
    pub fn per_group<S: AsRef<str>>(&self, groups: &[S]) -> Result<Vec<GroupRow>, AnalysisError> {
        if groups.len() != self.len() {
            return Err(AnalysisError::Groups { groups: groups.len(), rows: self.len() });
        }
        let mut totals: HashMap<&str, (usize, usize)> = HashMap::new();
        for (row, group) in groups.iter().enumerate() {
            let t = totals.entry(group.as_ref()).or_default();
            t.0 += 1;
            t.1 += usize::from(self.is_right(row));
        }
        let mut rows: Vec<GroupRow> = totals
            .into_iter()
            .map(|(group, (support, correct))| GroupRow {
                group: group.to_string(),
                support,
                correct,
                accuracy: fraction(correct, support),
            })
            .collect();
        rows.sort_by(|a, b| a.accuracy.total_cmp(&b.accuracy).then_with(|| a.group.cmp(&b.group)));
        Ok(rows)
    }

    /// The rows `selection` names, wrong ones first, each part in row order.
    pub fn select(&self, selection: Selection) -> Vec<usize> {
        let rows = 0..self.len();
        match selection {
            Selection::Class { class } => {
                let of_class: Vec<usize> = rows.filter(|&r| self.labels[r] == class).collect();
                let (right, wrong): (Vec<usize>, Vec<usize>) = of_class.into_iter().partition(|&r| self.is_right(r));
                wrong.into_iter().chain(right).collect()
            }
            Selection::Pair { truth, predicted } => {
                rows.filter(|&r| self.labels[r] == truth && self.predicted[r] == predicted).collect()
            }
        }
    }
}

/// A column of the per-class table to sort by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClassColumn {
    Class,
    Name,
    Support,
    Accuracy,
    Predicted,
    /// How often the most frequent wrong prediction was made.
    Confused,
}

impl ClassColumn {
    pub const ALL: [ClassColumn; 6] = [
        ClassColumn::Class,
        ClassColumn::Name,
        ClassColumn::Support,
        ClassColumn::Accuracy,
        ClassColumn::Predicted,
        ClassColumn::Confused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ClassColumn::Class => "class",
            ClassColumn::Name => "name",
            ClassColumn::Support => "support",
            ClassColumn::Accuracy => "accuracy",
            ClassColumn::Predicted => "predicted",
            ClassColumn::Confused => "confused",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == text)
    }
}

impl fmt::Display for ClassColumn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Sorts per-class rows by `column` (names from `name`), ascending or descending; ties keep class id order.
pub fn sort_classes(rows: &mut [ClassRow], column: ClassColumn, descending: bool, name: impl Fn(u16) -> String) {
    rows.sort_by(|a, b| {
        let order = match column {
            ClassColumn::Class => a.class.cmp(&b.class),
            ClassColumn::Name => name(a.class).to_lowercase().cmp(&name(b.class).to_lowercase()),
            ClassColumn::Support => a.support.cmp(&b.support),
            ClassColumn::Accuracy => a.accuracy.total_cmp(&b.accuracy),
            ClassColumn::Predicted => a.predicted.cmp(&b.predicted),
            ClassColumn::Confused => a.top_wrong.map_or(0, |w| w.count).cmp(&b.top_wrong.map_or(0, |w| w.count)),
        };
        let order = if descending { order.reverse() } else { order };
        order.then(a.class.cmp(&b.class))
    });
}

/// One class of a comparison of two checkpoints (A and B).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassDelta {
    pub class: u16,
    /// (support, accuracy) of each side; `None` where the class has no validation sticker.
    pub a: Option<(usize, f64)>,
    pub b: Option<(usize, f64)>,
    /// A's accuracy minus B's, where both have the class.
    pub delta: Option<f64>,
    /// On the same validation stickers: how many of the class A gets right and B misses, and the reverse.
    pub only_a: Option<usize>,
    pub only_b: Option<usize>,
}

/// The per-class accuracy of A against B: the largest differences first (then by class id), classes only one side has
/// last. When both were validated on the same stickers in the same order (equal labels), each class also counts the
/// stickers one gets right and the other misses.
pub fn class_delta(a: &Outcomes, b: &Outcomes) -> Vec<ClassDelta> {
    let (rows_a, rows_b) = (a.per_class(), b.per_class());
    let side = |rows: &[ClassRow], class: u16| rows.iter().find(|r| r.class == class).map(|r| (r.support, r.accuracy));
    let paired = a.labels == b.labels;
    let mut only: HashMap<u16, (usize, usize)> = HashMap::new();
    if paired {
        for (row, &label) in a.labels.iter().enumerate() {
            let o = only.entry(label).or_default();
            match (a.is_right(row), b.is_right(row)) {
                (true, false) => o.0 += 1,
                (false, true) => o.1 += 1,
                _ => {}
            }
        }
    }
    let mut classes: Vec<u16> = rows_a.iter().chain(&rows_b).map(|r| r.class).collect();
    classes.sort_unstable();
    classes.dedup();
    let mut out: Vec<ClassDelta> = classes
        .into_iter()
        .map(|class| {
            let (sa, sb) = (side(&rows_a, class), side(&rows_b, class));
            let counts = paired.then(|| only.get(&class).copied().unwrap_or_default());
            ClassDelta {
                class,
                a: sa,
                b: sb,
                delta: sa.zip(sb).map(|(x, y)| x.1 - y.1),
                only_a: counts.map(|c| c.0),
                only_b: counts.map(|c| c.1),
            }
        })
        .collect();
    out.sort_by(|x, y| match (x.delta, y.delta) {
        (Some(dx), Some(dy)) => dy.abs().total_cmp(&dx.abs()).then(x.class.cmp(&y.class)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => x.class.cmp(&y.class),
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ensemble::Probs;

    /// 10 stickers of classes 1, 2, 3: class 1 all right (3), class 2 twice taken for 3 and once for 1 (4 stickers),
    /// class 3 once taken for 2 (3 stickers).
    fn outcomes() -> Outcomes {
        let labels = vec![1, 1, 1, 2, 2, 2, 2, 3, 3, 3];
        let predicted = vec![1, 1, 1, 3, 2, 3, 1, 3, 2, 3];
        Outcomes::new(labels, predicted).unwrap()
    }

    #[test]
    fn the_per_class_table_counts_support_accuracy_and_the_top_wrong_prediction() {
        let o = outcomes();
        assert_eq!((o.correct(), o.len()), (6, 10));
        assert!((o.accuracy() - 0.6).abs() < 1e-12);
        let rows = o.per_class();
        assert_eq!(rows.iter().map(|r| r.class).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!((rows[0].support, rows[0].correct, rows[0].accuracy, rows[0].top_wrong), (3, 3, 1.0, None));
        assert_eq!((rows[0].predicted, rows[1].predicted, rows[2].predicted), (4, 2, 4));
        assert_eq!((rows[1].support, rows[1].correct), (4, 1));
        assert_eq!(rows[1].top_wrong, Some(Wrong { class: 3, count: 2 }));
        assert_eq!(rows[2].top_wrong, Some(Wrong { class: 2, count: 1 }));
        // a tie between wrong predictions names the lower class
        let tie = Outcomes::new(vec![5, 5, 5], vec![9, 7, 5]).unwrap().per_class();
        assert_eq!(tie[0].top_wrong, Some(Wrong { class: 7, count: 1 }));
        assert_eq!(Outcomes::new(vec![1], vec![]), Err(AnalysisError::Length { labels: 1, predictions: 0 }));
        assert!(Outcomes::new(vec![], vec![]).unwrap().per_class().is_empty());
    }

    #[test]
    fn confusions_come_most_frequent_first_and_are_cut_at_the_limit() {
        let o = outcomes();
        let pairs = o.confusions(30);
        assert_eq!(
            pairs,
            [
                Confusion { truth: 2, predicted: 3, count: 2 },
                Confusion { truth: 2, predicted: 1, count: 1 },
                Confusion { truth: 3, predicted: 2, count: 1 },
            ]
        );
        assert_eq!(o.confusions(1).len(), 1);
        assert!(Outcomes::new(vec![4, 4], vec![4, 4]).unwrap().confusions(30).is_empty(), "no pair of one class");
    }

    #[test]
    fn groups_are_ranked_least_accurate_first() {
        let o = outcomes();
        let groups = ["a", "a", "b", "b", "b", "b", "a", "c", "c", "c"];
        let rows = o.per_group(&groups).unwrap();
        let seen: Vec<(&str, usize, usize)> = rows.iter().map(|r| (r.group.as_str(), r.support, r.correct)).collect();
        assert_eq!(seen, [("b", 4, 2), ("a", 3, 2), ("c", 3, 2)], "b 50%, then a and c at 2/3 by name");
        assert!(matches!(o.per_group(&["a"]), Err(AnalysisError::Groups { groups: 1, rows: 10 })));
    }

    #[test]
    fn a_selection_shows_wrong_stickers_first() {
        let o = outcomes();
        assert_eq!(o.select(Selection::Class { class: 2 }), [3, 5, 6, 4]);
        assert_eq!(o.select(Selection::Class { class: 1 }), [0, 1, 2]);
        assert_eq!(o.select(Selection::Pair { truth: 2, predicted: 3 }), [3, 5]);
        assert!(o.select(Selection::Pair { truth: 1, predicted: 2 }).is_empty());
        assert!(o.select(Selection::Class { class: 99 }).is_empty());
    }

    #[test]
    fn top_k_ranks_by_probability_then_class() {
        let row = [0.1, 0.4, 0.1, 0.4, 0.0];
        let top = top_k(&row, 3);
        assert_eq!(top.iter().map(|r| r.class).collect::<Vec<_>>(), [1, 3, 0]);
        assert_eq!(top[0].probability, 0.4);
        assert_eq!(top_k(&row, 9).len(), 5);
        let probs = Probs::new(2, 3, vec![0.2, 0.5, 0.3, 0.6, 0.2, 0.2]).unwrap();
        assert_eq!(predictions(&probs), [1, 0]);
        let o = Outcomes::from_probs(vec![1, 2], &probs).unwrap();
        assert_eq!((o.is_right(0), o.is_right(1), o.is_right(7)), (true, false, false));
    }

    #[test]
    fn classes_sort_by_any_column_either_way() {
        let mut rows = outcomes().per_class();
        let names = |c: u16| ["", "zebra", "Apple", "mango"][c as usize].to_string();
        sort_classes(&mut rows, ClassColumn::Accuracy, false, names);
        assert_eq!(rows.iter().map(|r| r.class).collect::<Vec<_>>(), [2, 3, 1]);
        sort_classes(&mut rows, ClassColumn::Accuracy, true, names);
        assert_eq!(rows.iter().map(|r| r.class).collect::<Vec<_>>(), [1, 3, 2]);
        sort_classes(&mut rows, ClassColumn::Name, false, names);
        assert_eq!(rows.iter().map(|r| r.class).collect::<Vec<_>>(), [2, 3, 1], "case-insensitive");
        sort_classes(&mut rows, ClassColumn::Support, true, names);
        assert_eq!(rows.iter().map(|r| r.class).collect::<Vec<_>>(), [2, 1, 3], "ties by class id");
        sort_classes(&mut rows, ClassColumn::Confused, true, names);
        assert_eq!(rows.iter().map(|r| r.class).collect::<Vec<_>>(), [2, 3, 1]);
        sort_classes(&mut rows, ClassColumn::Class, false, names);
        assert_eq!(rows.iter().map(|r| r.class).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(ClassColumn::parse("accuracy"), Some(ClassColumn::Accuracy));
        assert_eq!(ClassColumn::parse("<script>"), None);
        assert!(ClassColumn::ALL.iter().all(|c| ClassColumn::parse(c.as_str()) == Some(*c)));
    }

    #[test]
    fn the_class_delta_names_what_one_gets_and_the_other_misses() {
        let a = outcomes();
        // B: class 2 all right, class 1 all wrong, class 3 as A
        let b = Outcomes::new(a.labels().to_vec(), vec![2, 2, 2, 2, 2, 2, 2, 3, 2, 3]).unwrap();
        let d = class_delta(&a, &b);
        assert_eq!(d.iter().map(|x| x.class).collect::<Vec<_>>(), [1, 2, 3], "|1.0| then |-0.75| then 0");
        assert_eq!((d[0].delta, d[0].only_a, d[0].only_b), (Some(1.0), Some(3), Some(0)));
        assert_eq!((d[1].delta, d[1].only_a, d[1].only_b), (Some(-0.75), Some(0), Some(3)));
        assert_eq!((d[2].delta, d[2].only_a, d[2].only_b), (Some(0.0), Some(0), Some(0)));
        assert_eq!((d[0].a, d[0].b), (Some((3, 1.0)), Some((3, 0.0))));
        // another split: per-class accuracies only, and classes one side lacks come last
        let c = Outcomes::new(vec![3, 4], vec![3, 3]).unwrap();
        let d = class_delta(&a, &c);
        assert_eq!(d.iter().map(|x| x.class).collect::<Vec<_>>(), [3, 1, 2, 4]);
        assert!(d.iter().all(|x| x.only_a.is_none() && x.only_b.is_none()));
        assert_eq!((d[3].a, d[3].b, d[3].delta), (None, Some((1, 0.0)), None));
    }
}
