//! The emoji recipe (`recipes/emoji.yaml`): which npm tarballs are art styles, which family each belongs to, which split
//! each family goes to, and the knobs of the tag recipe. Parsed strictly (unknown fields are errors), then validated.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Deserialize;

use super::EmojiError;

/// The recipe shipped in the repository; `rush dataset build emoji` uses it.
pub const BUILTIN: &str = include_str!("../../../recipes/emoji.yaml");
/// The name that selects [`BUILTIN`].
pub const BUILTIN_NAME: &str = "emoji";

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// The emojibase-data tarball, `NAME@VERSION`.
    pub emojibase: String,
    /// Locales whose keywords go into `tag.tsv`; `en` first.
    pub languages: Vec<String>,
    pub universe: UniverseRule,
    pub tags: TagRule,
    /// Style family -> split.
    pub splits: BTreeMap<String, Split>,
    pub styles: Vec<Style>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UniverseRule {
    #[serde(default)]
    pub exclude_groups: Vec<String>,
    #[serde(default)]
    pub exclude_subgroups: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagRule {
    /// English keywords never used as tags (too general: face, man, woman, ...).
    pub generic: Vec<String>,
    /// A keyword in more emoji than this is too broad to be a class.
    pub max_emoji_per_keyword: usize,
    /// Classes with fewer emoji are dropped.
    pub min_class_size: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    Train,
    Valid,
    Test,
}

impl Split {
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Valid => "valid",
            Split::Test => "test",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Style {
    /// The package id (a folder name).
    pub name: String,
    pub family: String,
    /// The npm tarball, `NAME@VERSION`.
    pub npm: String,
    /// SPDX licence id of the art.
    pub licence: String,
    /// Read `<svg_dir>/<HEXCODE>.svg` files instead of an iconify `icons.json`.
    #[serde(default)]
    pub svg_dir: Option<String>,
}

impl Recipe {
    /// The built-in recipe.
    pub fn builtin() -> Result<Recipe, EmojiError> {
        Recipe::parse(BUILTIN, "recipes/emoji.yaml")
    }

    /// `emoji` selects the built-in recipe; anything else is a path to a recipe file.
    pub fn load(name_or_path: &str) -> Result<Recipe, EmojiError> {
        if name_or_path == BUILTIN_NAME {
            return Recipe::builtin();
        }
        let path = Path::new(name_or_path);
        let text =
            std::fs::read_to_string(path).map_err(|source| EmojiError::Io { path: path.to_path_buf(), source })?;
        Recipe::parse(&text, name_or_path)
    }

    /// Parses and validates; `file` names the source in errors.
    pub fn parse(text: &str, file: &str) -> Result<Recipe, EmojiError> {
        let recipe: Recipe = serde_saphyr::from_str(text)
            .map_err(|e| EmojiError::Recipe { file: file.into(), message: e.to_string() })?;
        recipe.validate(file)?;
        Ok(recipe)
    }

    fn validate(&self, file: &str) -> Result<(), EmojiError> {
        let bad = |field: &str, message: String| EmojiError::Recipe {
            file: file.into(),
            message: format!("`{field}`: {message}"),
        };
        npm_name_version(&self.emojibase)
            .ok_or_else(|| bad("emojibase", format!("`{}` is not NAME@VERSION", self.emojibase)))?;
        if self.languages.first().map(String::as_str) != Some("en") {
            return Err(bad("languages", "must start with `en` (the tag recipe reads English keywords)".into()));
        }
        let mut seen = BTreeSet::new();
        for lang in &self.languages {
            if !is_safe_name(lang) || !seen.insert(lang) {
                return Err(bad("languages", format!("`{lang}` is repeated or not a locale code")));
            }
        }
        if self.tags.min_class_size == 0 || self.tags.max_emoji_per_keyword < self.tags.min_class_size {
            return Err(bad(
                "tags",
                format!(
                    "need 1 <= min_class_size ({}) <= max_emoji_per_keyword ({})",
                    self.tags.min_class_size, self.tags.max_emoji_per_keyword
                ),
            ));
        }
        if self.styles.is_empty() {
            return Err(bad("styles", "no styles".into()));
        }
        let mut names = BTreeSet::new();
        for (i, style) in self.styles.iter().enumerate() {
            let field = format!("styles[{i}]");
            if !is_safe_name(&style.name) {
                return Err(bad(
                    &field,
                    format!("name `{}` must be lower-case letters, digits, `-`, `_`, `.`", style.name),
                ));
            }
            if !names.insert(style.name.as_str()) {
                return Err(bad(&field, format!("style `{}` appears twice", style.name)));
            }
            if !self.splits.contains_key(&style.family) {
                return Err(bad(&field, format!("family `{}` has no entry in `splits`", style.family)));
            }
            npm_name_version(&style.npm)
                .ok_or_else(|| bad(&field, format!("npm `{}` is not NAME@VERSION", style.npm)))?;
            if style.licence.trim().is_empty() || style.licence.contains(['\t', '\n']) {
                return Err(bad(&field, format!("licence `{}` is empty or has tabs/newlines", style.licence)));
            }
        }
        if !self.styles.iter().any(|s| self.splits[&s.family] == Split::Train) {
            return Err(bad("splits", "no style is in a `train` family".into()));
        }
        Ok(())
    }

    /// The styles to build: all of them, or the named ones (in recipe order).
    pub fn select(&self, names: &[String]) -> Result<Vec<&Style>, EmojiError> {
        if names.is_empty() {
            return Ok(self.styles.iter().collect());
        }
        for name in names {
            if !self.styles.iter().any(|s| &s.name == name) {
                let known = self.styles.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ");
                return Err(EmojiError::UnknownStyle { name: name.clone(), known });
            }
        }
        Ok(self.styles.iter().filter(|s| names.contains(&s.name)).collect())
    }

    pub fn split_of(&self, style: &Style) -> Split {
        self.splits[&style.family]
    }
}

/// `@scope/name@1.2.3` -> (`@scope/name`, `1.2.3`).
pub fn npm_name_version(spec: &str) -> Option<(&str, &str)> {
    let at = spec.rfind('@').filter(|&at| at > 0)?;
    let (name, version) = (&spec[..at], &spec[at + 1..]);
    let ok = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "@/._-+".contains(c));
    (ok(name) && ok(version) && !name[1..].contains('@')).then_some((name, version))
}

fn is_safe_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_recipe_is_valid_and_splits_by_family() {
        let recipe = Recipe::builtin().unwrap();
        assert_eq!(recipe.styles.len(), 10);
        assert_eq!(recipe.languages[..4], ["en", "ko", "ja", "zh"]);
        let split = |name: &str| recipe.split_of(recipe.styles.iter().find(|s| s.name == name).unwrap());
        assert_eq!(split("noto"), Split::Train);
        assert_eq!(split("fxemoji"), Split::Valid);
        assert_eq!(split("twemoji"), Split::Test);
        assert_eq!(
            recipe.styles.iter().find(|s| s.name == "openmoji-black").unwrap().svg_dir.as_deref(),
            Some("black/svg")
        );
    }

    #[test]
    fn unknown_fields_and_bad_values_are_errors_naming_the_field() {
        let text = BUILTIN.replace("min_class_size: 3", "min_class_size: 3\n  colour: red");
        let err = Recipe::parse(&text, "r.yaml").unwrap_err().to_string();
        assert!(err.contains("r.yaml") && err.contains("colour"), "{err}");

        let text = BUILTIN.replace("fxemoji: valid", "fx: valid");
        let err = Recipe::parse(&text, "r.yaml").unwrap_err().to_string();
        assert!(err.contains("family `fxemoji`"), "{err}");

        let text = BUILTIN.replace("{name: noto-v1,", "{name: noto,");
        let err = Recipe::parse(&text, "r.yaml").unwrap_err().to_string();
        assert!(err.contains("appears twice"), "{err}");

        let text = BUILTIN.replace("languages: [en, ko,", "languages: [ko, en,");
        assert!(Recipe::parse(&text, "r.yaml").unwrap_err().to_string().contains("languages"));
    }

    #[test]
    fn select_keeps_recipe_order_and_rejects_unknown_styles() {
        let recipe = Recipe::builtin().unwrap();
        let picked = recipe.select(&["twemoji".into(), "noto".into()]).unwrap();
        assert_eq!(picked.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["noto", "twemoji"]);
        let err = recipe.select(&["apple".into()]).unwrap_err().to_string();
        assert!(err.contains("apple") && err.contains("noto"), "{err}");
    }

    #[test]
    fn npm_specs_split_at_the_last_at() {
        assert_eq!(npm_name_version("@iconify-json/noto@1.2.9"), Some(("@iconify-json/noto", "1.2.9")));
        assert_eq!(npm_name_version("openmoji@17.0.0"), Some(("openmoji", "17.0.0")));
        assert_eq!(npm_name_version("openmoji"), None);
        assert_eq!(npm_name_version("@scope/x"), None);
        assert_eq!(npm_name_version("a@"), None);
    }
}
