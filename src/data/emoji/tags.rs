//! The tag recipe (pure): emoji keywords -> a class per emoji, up to three tags per emoji, a vocabulary of exactly
//! [`NUM_TAGS`] tags with stable ids, and each tag's keywords per language for `tag.tsv`.
//!
//! Primary tag (the class) = the emoji's most frequent non-generic English keyword occurring in at most
//! `max_emoji_per_keyword` emoji; keyword classes with fewer than `min_class_size` emoji are dropped and the choice
//! repeated until stable; emoji left without one fall back to their subgroup, then (if that class is too small) their
//! group. Tag 2 = the subgroup, tag 3 = the next keyword. The vocabulary holds every class and every subgroup used as
//! a second tag; the rest of its [`NUM_TAGS`] places go to the third-tag keywords carried by the most emoji, and an
//! emoji whose next keyword did not make it takes its next one that did. Ids: classes first, then the other tags, each
//! part in name order, so the labels are `0..classes`; a secondary tag is always above its emoji's label (a class
//! name below it as subgroup or keyword is left out), so the label is each emoji's smallest tag id.

use std::collections::{BTreeMap, BTreeSet};

use crate::data::layout::NUM_TAGS;

use super::recipe::TagRule;

/// What the recipe reads of one emoji.
#[derive(Debug, Clone, Copy)]
pub struct TagInput<'a> {
    /// English keywords.
    pub keywords: &'a [String],
    pub subgroup: &'a str,
    pub group: &'a str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TagKind {
    Keyword,
    Subgroup,
    Group,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagDef {
    pub name: String,
    pub kind: TagKind,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TagPlan {
    /// Indexed by tag id.
    pub tags: Vec<TagDef>,
    /// Per emoji (input order): tag ids, the first is the label.
    pub emoji_tags: Vec<Vec<u16>>,
    /// Tags `0..classes` are the labels.
    pub classes: usize,
    /// Tags added with no emoji because the recipe gave fewer than [`NUM_TAGS`] (0 on the real data).
    pub padded: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TagError {
    #[error("the tag recipe gives {classes} classes, more than the {NUM_TAGS} tag ids")]
    TooManyClasses { classes: usize },
}

/// Runs the recipe over the universe (in its order).
pub fn plan(emoji: &[TagInput], rule: &TagRule) -> Result<TagPlan, TagError> {
    let generic: BTreeSet<&str> = rule.generic.iter().map(String::as_str).collect();
    let keywords: Vec<Vec<&str>> = emoji
        .iter()
        .map(|e| {
            let mut seen = BTreeSet::new();
            e.keywords.iter().map(String::as_str).filter(|k| !generic.contains(k) && seen.insert(*k)).collect()
        })
        .collect();
    let mut freq: BTreeMap<&str, usize> = BTreeMap::new();
    for k in keywords.iter().flatten() {
        *freq.entry(k).or_default() += 1;
    }
    let (min, max) = (rule.min_class_size, rule.max_emoji_per_keyword);
    let pool: BTreeSet<&str> = freq.iter().filter(|(_, n)| (min..=max).contains(*n)).map(|(k, _)| *k).collect();

    // Primary keywords, dropping small classes until stable.
    let mut allowed = pool.clone();
    let primary: Vec<Option<String>> = loop {
        let primary: Vec<Option<String>> = keywords
            .iter()
            .map(|ks| ranked(ks, &freq, |k| allowed.contains(k)).first().map(|k| k.to_string()))
            .collect();
        let mut size: BTreeMap<&str, usize> = BTreeMap::new();
        for k in primary.iter().flatten() {
            *size.entry(k.as_str()).or_default() += 1;
        }
        let small: Vec<&str> = allowed.iter().copied().filter(|k| size.get(k).copied().unwrap_or(0) < min).collect();
        if small.is_empty() {
            break primary;
        }
        for k in small {
            allowed.remove(k);
        }
    };

    // Fallback to the subgroup, then the group (a same-named keyword class counts towards the size).
    let mut size: BTreeMap<String, usize> = BTreeMap::new();
    for (p, e) in primary.iter().zip(emoji) {
        *size.entry(p.clone().unwrap_or_else(|| e.subgroup.to_string())).or_default() += 1;
    }
    let mut kinds: BTreeMap<String, TagKind> = BTreeMap::new();
    let labels: Vec<String> = primary
        .iter()
        .zip(emoji)
        .map(|(p, e)| match p {
            Some(k) => {
                kinds.insert(k.clone(), TagKind::Keyword);
                k.clone()
            }
            None if size[e.subgroup] >= min => {
                kinds.entry(e.subgroup.to_string()).or_insert(TagKind::Subgroup);
                e.subgroup.to_string()
            }
            None => {
                kinds.entry(e.group.to_string()).or_insert(TagKind::Group);
                e.group.to_string()
            }
        })
        .collect();
    let classes: BTreeSet<&str> = labels.iter().map(String::as_str).collect();
    if classes.len() > NUM_TAGS {
        return Err(TagError::TooManyClasses { classes: classes.len() });
    }

    // Second tags: subgroups, most used first if they do not all fit.
    let mut second: BTreeMap<&str, usize> = BTreeMap::new();
    for (label, e) in labels.iter().zip(emoji) {
        if label != e.subgroup && !classes.contains(e.subgroup) {
            *second.entry(e.subgroup).or_default() += 1;
        }
    }
    let mut vocabulary: BTreeSet<String> = classes.iter().map(|c| c.to_string()).collect();
    for subgroup in by_count_then_name(&second).into_iter().take(NUM_TAGS - vocabulary.len()) {
        kinds.entry(subgroup.to_string()).or_insert(TagKind::Subgroup);
        vocabulary.insert(subgroup.to_string());
    }

    // Third-tag candidates per emoji, then fill the vocabulary with the keywords that head the most lists.
    let candidates: Vec<Vec<&str>> = keywords
        .iter()
        .zip(&labels)
        .zip(emoji)
        .map(|((ks, label), e)| ranked(ks, &freq, |k| pool.contains(k) && k != label.as_str() && k != e.subgroup))
        .collect();
    let mut heads: BTreeMap<&str, usize> = BTreeMap::new();
    for head in candidates.iter().filter_map(|list| list.first()) {
        if !vocabulary.contains(*head) {
            *heads.entry(head).or_default() += 1;
        }
    }
    let room = NUM_TAGS - vocabulary.len();
    for k in by_count_then_name(&heads).into_iter().take(room) {
        kinds.entry(k.to_string()).or_insert(TagKind::Keyword);
        vocabulary.insert(k.to_string());
    }
    let padded = NUM_TAGS - vocabulary.len();

    // Ids: classes by name, then the rest by name, then padding.
    let mut names: Vec<String> = classes.iter().map(|c| c.to_string()).collect();
    names.extend(vocabulary.iter().filter(|t| !classes.contains(t.as_str())).cloned());
    let mut tags: Vec<TagDef> = names.into_iter().map(|name| TagDef { kind: kinds[&name], name }).collect();
    for _ in 0..padded {
        tags.push(TagDef { name: format!("unused-{}", tags.len()), kind: TagKind::Keyword });
    }
    let id: BTreeMap<&str, u16> = tags.iter().enumerate().map(|(i, t)| (t.name.as_str(), i as u16)).collect();

    let emoji_tags = labels
        .iter()
        .zip(emoji)
        .zip(&candidates)
        .map(|((label, e), list)| {
            // Secondary tags only above the label's id (a class name as a subgroup or keyword can be below it), so
            // the label is the smallest tag and `np.argmax` of the multi-hot row finds it.
            let mut out = vec![id[label.as_str()]];
            if let Some(&sub) = id.get(e.subgroup).filter(|&&s| s > out[0]) {
                out.push(sub);
            }
            if let Some(&next) = list.iter().filter_map(|k| id.get(k)).find(|&&t| t > out[0] && !out.contains(&t)) {
                out.push(next);
            }
            out
        })
        .collect();
    Ok(TagPlan { tags, emoji_tags, classes: classes.len(), padded })
}

/// The keywords of `list` that pass `allowed`, most frequent first, then by name.
fn ranked<'a>(list: &[&'a str], freq: &BTreeMap<&str, usize>, allowed: impl Fn(&str) -> bool) -> Vec<&'a str> {
    let mut out: Vec<&str> = list.iter().copied().filter(|k| allowed(k)).collect();
    out.sort_by(|a, b| freq[b].cmp(&freq[a]).then(a.cmp(b)));
    out
}

fn by_count_then_name<'a>(counts: &BTreeMap<&'a str, usize>) -> Vec<&'a str> {
    let mut keys: Vec<(&str, usize)> = counts.iter().map(|(k, n)| (*k, *n)).collect();
    keys.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    keys.into_iter().map(|(k, _)| k).collect()
}

/// The keywords of each tag per language for `tag.tsv`: up to `per_language` words chosen from the keywords of the emoji
/// carrying the tag, ranked by how well the emoji having the word match the emoji carrying the tag (Jaccard index:
/// common in the tag, rare elsewhere). `fixed[t][l]` comes first (the English name of a keyword tag, a subgroup's
/// localized name).
pub fn tag_keywords(
    emoji_tags: &[Vec<u16>],
    keywords: &[Vec<Vec<String>>],
    languages: usize,
    fixed: &[Vec<Option<String>>],
    per_language: usize,
) -> Vec<Vec<Vec<String>>> {
    let mut out = Vec::with_capacity(fixed.len());
    let mut df: Vec<BTreeMap<&str, u64>> = vec![BTreeMap::new(); languages];
    for per_lang in keywords {
        for (l, words) in per_lang.iter().enumerate().take(languages) {
            for w in words.iter().collect::<BTreeSet<_>>() {
                *df[l].entry(w.as_str()).or_default() += 1;
            }
        }
    }
    for (tag, fixed) in fixed.iter().enumerate() {
        let members: Vec<usize> =
            emoji_tags.iter().enumerate().filter(|(_, t)| t.contains(&(tag as u16))).map(|(i, _)| i).collect();
        let mut per_lang = Vec::with_capacity(languages);
        for (l, df) in df.iter().enumerate() {
            let mut count: BTreeMap<&str, u64> = BTreeMap::new();
            for &i in &members {
                for w in keywords[i].get(l).into_iter().flatten().collect::<BTreeSet<_>>() {
                    *count.entry(w.as_str()).or_default() += 1;
                }
            }
            let mut words: Vec<(&str, u64)> = count.into_iter().collect();
            // Jaccard c/(m+d-c): c1/(m+d1-c1) > c2/(m+d2-c2)  <=>  c1·(m+d2-c2) > c2·(m+d1-c1); ties: precision c/d.
            let m = members.len() as u64;
            words.sort_by(|(w1, c1), (w2, c2)| {
                let (u1, u2) = (m + df[w1] - c1, m + df[w2] - c2);
                (c2 * u1).cmp(&(c1 * u2)).then((c2 * df[w1]).cmp(&(c1 * df[w2]))).then(c2.cmp(c1)).then(w1.cmp(w2))
            });
            let mut chosen: Vec<String> = Vec::new();
            for w in fixed.get(l).cloned().flatten().into_iter().chain(words.into_iter().map(|(w, _)| w.to_string())) {
                if chosen.len() < per_language && !chosen.contains(&w) {
                    chosen.push(w);
                }
            }
            per_lang.push(chosen);
        }
        out.push(per_lang);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(min: usize, max: usize) -> TagRule {
        TagRule { generic: vec!["face".into()], max_emoji_per_keyword: max, min_class_size: min }
    }

    fn inputs(rows: &[(&[&str], &str, &str)]) -> (Vec<Vec<String>>, Vec<(String, String)>) {
        let kw = rows.iter().map(|r| r.0.iter().map(|s| s.to_string()).collect()).collect();
        let groups = rows.iter().map(|r| (r.1.to_string(), r.2.to_string())).collect();
        (kw, groups)
    }

    fn run(rows: &[(&[&str], &str, &str)], rule: &TagRule) -> TagPlan {
        let (kw, groups) = inputs(rows);
        let tags: Vec<TagInput> =
            kw.iter().zip(&groups).map(|(k, (s, g))| TagInput { keywords: k, subgroup: s, group: g }).collect();
        plan(&tags, rule).unwrap()
    }

    fn names(plan: &TagPlan, e: usize) -> Vec<&str> {
        plan.emoji_tags[e].iter().map(|&t| plan.tags[t as usize].name.as_str()).collect()
    }

    #[test]
    fn primary_is_the_most_frequent_allowed_keyword_and_small_classes_fall_back() {
        let rows: &[(&[&str], &str, &str)] = &[
            (&["face", "smile", "happy"], "face-smiling", "smileys"),
            (&["face", "smile", "happy"], "face-smiling", "smileys"),
            (&["face", "smile", "grin"], "face-smiling", "smileys"),
            (&["face", "happy", "joy"], "face-smiling", "smileys"),
            // `sad` and `cry` occur twice only: no class; all three fall back to their subgroup (3 emoji there).
            (&["face", "sad"], "face-sad", "smileys"),
            (&["face", "sad", "cry"], "face-sad", "smileys"),
            (&["face", "cry"], "face-sad", "smileys"),
            // A lone subgroup falls back to its group, which is too small too but has nowhere else to go.
            (&["rocket"], "transport-air", "travel"),
        ];
        let plan = run(rows, &rule(3, 3));
        // `smile` and `happy` both occur 3 times: ties go by name, so `happy` wins where both are present...
        assert_eq!(names(&plan, 0), ["happy", "face-smiling", "smile"]);
        // ...which leaves `smile` with 1 emoji: dropped, so emoji 2 falls back to its subgroup, which has no other
        // fallback emoji, so to its group.
        assert_eq!(names(&plan, 2), ["smileys", "face-smiling", "smile"]);
        assert_eq!(names(&plan, 3), ["happy", "face-smiling"]);
        assert_eq!(names(&plan, 4), ["face-sad"]);
        assert_eq!(names(&plan, 7), ["travel", "transport-air"]);
        // `face` is generic, never a tag.
        assert!(plan.tags.iter().all(|t| t.name != "face"));
        // Exactly NUM_TAGS tags, classes first.
        assert_eq!(plan.tags.len(), NUM_TAGS);
        assert_eq!(plan.classes, 4);
        let labels: BTreeSet<u16> = plan.emoji_tags.iter().map(|t| t[0]).collect();
        assert_eq!(labels, (0..4).collect());
        assert!(plan.padded > 0 && plan.tags.last().unwrap().name.starts_with("unused-"));
        let distinct: BTreeSet<&str> = plan.tags.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(distinct.len(), NUM_TAGS);
    }

    #[test]
    fn keywords_over_the_cap_are_not_classes() {
        let rows: Vec<(&[&str], &str, &str)> = (0..6)
            .map(|i| (if i < 3 { &["animal", "bird"][..] } else { &["animal"][..] }, "animal-bird", "animals"))
            .collect();
        // `animal` is in 6 emoji, over the cap of 5: never a tag.
        let plan = run(&rows, &rule(3, 5));
        // `animal-bird` is a class too (the fallback of emoji 3 to 5), with a smaller id than `bird`: as the second
        // tag of a `bird` it would undercut the label, so it is left out.
        assert_eq!(names(&plan, 0), ["bird"]);
        assert_eq!(names(&plan, 5), ["animal-bird"]);
        assert!(plan.tags.iter().all(|t| t.name != "animal"));
    }

    #[test]
    fn the_plan_is_deterministic_and_ids_are_in_range() {
        let rows: Vec<(&[&str], &str, &str)> = (0..60)
            .map(|i| {
                let kw: &[&str] = match i % 4 {
                    0 => &["a", "b", "c"],
                    1 => &["a", "c", "d"],
                    2 => &["b", "d", "e"],
                    _ => &["e", "f"],
                };
                (kw, if i % 2 == 0 { "s1" } else { "s2" }, "g")
            })
            .collect();
        let a = run(&rows, &rule(3, 40));
        let b = run(&rows, &rule(3, 40));
        assert_eq!(a, b);
        assert!(a.emoji_tags.iter().all(|t| (1..=3).contains(&t.len()) && t.iter().all(|&x| (x as usize) < NUM_TAGS)));
    }

    #[test]
    fn tag_keywords_prefer_words_specific_to_the_tag() {
        // Tag 0 = the sad emoji, tag 1 = the others; Korean: `얼굴` (face) is everywhere, `슬픔` only in sad ones.
        let kw = |ko: &[&str]| vec![vec!["x".to_string()], ko.iter().map(|s| s.to_string()).collect()];
        let keywords =
            vec![kw(&["얼굴", "슬픔"]), kw(&["얼굴", "슬픔", "눈물"]), kw(&["얼굴", "웃음"]), kw(&["얼굴", "웃음"])];
        let emoji_tags = vec![vec![0], vec![0], vec![1], vec![1]];
        let fixed = vec![vec![Some("sad".to_string()), None], vec![None, Some("웃는".to_string())]];
        let out = tag_keywords(&emoji_tags, &keywords, 2, &fixed, 2);
        assert_eq!(out[0], [vec!["sad", "x"], vec!["슬픔", "눈물"]]);
        assert_eq!(out[1][1], ["웃는", "웃음"]);
    }
}
