//! Tag names and their keywords by language, from the columns of a dataset's `tag.tsv` (`keywords`, `languages`,
//! `name`). Two spellings are read:
//!
//! - the emoji builder's: `languages` is `en|ko|ja|...` and `keywords` one comma-separated list per language, the
//!   lists separated by `|` (`143,emotion,ily|사랑해,하트,감정|...`);
//! - `rush dataset synth`'s (and a flat list in general): `languages` is `en,ko,ja,fr` and `keywords` one
//!   comma-separated list, the same number of words per language, in the languages' order.
//!
//! A flat list that does not divide evenly, or a single language, keeps every word under the first language.

use serde::{Deserialize, Serialize};

/// One tag as the dashboard names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagText {
    pub id: u16,
    /// The `name` column (English in both builders).
    pub name: String,
    /// The keywords of each language, in `tag.tsv`'s order.
    pub keywords: Vec<LanguageWords>,
}

/// The keywords of one language.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LanguageWords {
    pub language: String,
    pub words: Vec<String>,
}

/// The language a tag's name is in, and the one assumed when `tag.tsv` names none.
pub const NAME_LANGUAGE: &str = "en";

fn words(list: &str) -> Vec<String> {
    list.split(',').map(str::trim).filter(|w| !w.is_empty()).map(str::to_string).collect()
}

impl TagText {
    /// Reads one row's `name`, `keywords` and `languages` columns.
    pub fn new(id: u16, name: &str, keywords: &str, languages: &str) -> Self {
        let separator = if languages.contains('|') { '|' } else { ',' };
        let mut langs: Vec<String> =
            languages.split(separator).map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect();
        if langs.is_empty() {
            langs.push(NAME_LANGUAGE.to_string());
        }
        let lists: Vec<Vec<String>> = if keywords.contains('|') {
            keywords.split('|').map(words).collect()
        } else {
            let flat = words(keywords);
            let n = langs.len();
            if n > 1 && !flat.is_empty() && flat.len() % n == 0 {
                flat.chunks(flat.len() / n).map(<[String]>::to_vec).collect()
            } else {
                vec![flat]
            }
        };
        let mut keywords: Vec<LanguageWords> =
            langs.iter().map(|l| LanguageWords { language: l.clone(), words: Vec::new() }).collect();
        for (k, list) in lists.into_iter().enumerate() {
            // more lists than languages: the extra words stay with the last language
            let at = k.min(keywords.len() - 1);
            keywords[at].words.extend(list);
        }
        TagText { id, name: name.trim().to_string(), keywords }
    }

    /// A tag with no row in `tag.tsv`: named by its id.
    pub fn unnamed(id: u16) -> Self {
        TagText { id, name: String::new(), keywords: Vec::new() }
    }

    /// The keywords of `language` (empty when it has none).
    pub fn words(&self, language: &str) -> &[String] {
        self.keywords.iter().find(|k| k.language == language).map_or(&[], |k| &k.words[..])
    }

    /// The tag's label in `language`: the name in English, else that language's keywords; whatever there is when
    /// the language has nothing, and `tag N` at the very least.
    pub fn label(&self, language: &str) -> String {
        let own = self.words(language).join(", ");
        let first = || self.keywords.iter().find(|k| !k.words.is_empty()).map(|k| k.words.join(", "));
        let chosen = if language == NAME_LANGUAGE || own.is_empty() {
            Some(self.name.clone()).filter(|n| !n.is_empty()).or_else(|| Some(own).filter(|o| !o.is_empty()))
        } else {
            Some(own)
        };
        chosen.or_else(first).unwrap_or_else(|| format!("tag {}", self.id))
    }
}

/// Every language of `tags`, in the order first seen.
pub fn languages(tags: &[TagText]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for k in tags.iter().flat_map(|t| &t.keywords) {
        if !out.contains(&k.language) {
            out.push(k.language.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_emoji_builders_lists_per_language() {
        let t = TagText::new(0, "143", "143,emotion,ily|사랑해,하트,감정|ハート,愛,ラブ", "en|ko|ja");
        assert_eq!(t.words("ko"), ["사랑해", "하트", "감정"]);
        assert_eq!(t.words("ja"), ["ハート", "愛", "ラブ"]);
        assert_eq!(t.label("en"), "143");
        assert_eq!(t.label("ko"), "사랑해, 하트, 감정");
        assert_eq!(t.label("fr"), "143", "a language the tag lacks: its name");
        assert!(t.words("fr").is_empty());
        assert_eq!(languages(&[t]), ["en", "ko", "ja"]);
    }

    #[test]
    fn synths_flat_list_splits_evenly_by_language() {
        let t = TagText::new(
            5,
            "red solid circle",
            "circle,red,solid,원,빨강,단색,丸,赤,無地,cercle,rouge,uni",
            "en,ko,ja,fr",
        );
        assert_eq!(t.words("en"), ["circle", "red", "solid"]);
        assert_eq!(t.words("ja"), ["丸", "赤", "無地"]);
        assert_eq!(t.label("ja"), "丸, 赤, 無地");
        assert_eq!(t.label("en"), "red solid circle");
    }

    #[test]
    fn odd_rows_keep_every_word_and_always_have_a_label() {
        let t = TagText::new(7, "", "a,b,c", "en,ko");
        assert_eq!(t.words("en"), ["a", "b", "c"], "3 words do not split over 2 languages");
        assert_eq!(t.label("ko"), "a, b, c");
        let t = TagText::new(8, "x", "a|b|c", "en|ko");
        assert_eq!((t.words("en"), t.words("ko")), (&["a".to_string()][..], &["b".to_string(), "c".to_string()][..]));
        let t = TagText::new(9, "", "", "");
        assert_eq!((t.label("en"), t.keywords.len()), ("tag 9".to_string(), 1));
        assert_eq!(TagText::unnamed(3).label("ko"), "tag 3");
        assert!(languages(&[TagText::unnamed(3)]).is_empty());
    }
}
