//! The emoji universe from `emojibase-data`: which emoji take part (base emoji minus the excluded groups and
//! subgroups), their English label, Unicode name and GitHub shortcodes (to find each style's icon), their group and
//! subgroup, and their CLDR keywords in every recipe language (for the tags and `tag.tsv`).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::EmojiError;
use super::npm;
use super::recipe::UniverseRule;

/// One emoji of the universe.
#[derive(Debug, Clone, PartialEq)]
pub struct Emoji {
    /// emojibase's hexcode, e.g. `1F9D1-200D-1F3A8`.
    pub hexcode: String,
    /// The sticker id in every style: the hexcode in lower case (`1f9d1-200d-1f3a8`).
    pub sticker_id: String,
    pub label: String,
    /// Group and subgroup keys (`smileys-emotion`, `face-smiling`).
    pub group: String,
    pub subgroup: String,
    pub unicode_name: Option<String>,
    pub shortcodes: Vec<String>,
    /// CLDR keywords, one list per recipe language (same order as `Emojibase::languages`).
    pub keywords: Vec<Vec<String>>,
}

#[derive(Debug, Clone)]
pub struct Emojibase {
    pub languages: Vec<String>,
    /// The universe in emojibase order.
    pub emoji: Vec<Emoji>,
    /// Localized names of groups and subgroups, keyed by key, one map per language.
    pub names: Vec<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
struct Entry {
    hexcode: String,
    label: String,
    #[serde(default)]
    tags: Vec<String>,
    group: Option<u32>,
    subgroup: Option<u32>,
    order: Option<u32>,
}

#[derive(Deserialize)]
struct Messages {
    groups: Vec<Message>,
    subgroups: Vec<Message>,
}

#[derive(Deserialize)]
struct Message {
    key: String,
    message: String,
    order: u32,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Shortcodes {
    One(String),
    Many(Vec<String>),
}

/// Reads the universe from the emojibase-data tarball.
pub fn load(tarball: &Path, languages: &[String], rule: &UniverseRule) -> Result<Emojibase, EmojiError> {
    let wanted = |p: &str| {
        p == "meta/unicode-names.json"
            || p == "en/shortcodes/github.json"
            || languages
                .iter()
                .any(|l| p.strip_prefix(l.as_str()).is_some_and(|r| r == "/data.json" || r == "/messages.json"))
    };
    let entries = npm::read_entries(tarball, wanted)?;
    let json = |name: &str| {
        let bytes = entries
            .get(name)
            .ok_or_else(|| EmojiError::MissingEntry { tarball: tarball.to_path_buf(), entry: name.to_string() })?;
        Ok::<_, EmojiError>((name.to_string(), bytes))
    };

    let (name, bytes) = json("en/messages.json")?;
    let messages: Messages = npm::parse_json(bytes, tarball, &name)?;
    let group_keys: BTreeMap<u32, String> = messages.groups.iter().map(|m| (m.order, m.key.clone())).collect();
    let subgroup_keys: BTreeMap<u32, String> = messages.subgroups.iter().map(|m| (m.order, m.key.clone())).collect();
    for (field, wanted, known) in [
        ("universe.exclude_groups", &rule.exclude_groups, &group_keys),
        ("universe.exclude_subgroups", &rule.exclude_subgroups, &subgroup_keys),
    ] {
        if let Some(key) = wanted.iter().find(|k| !known.values().any(|v| v == *k)) {
            return Err(EmojiError::Recipe {
                file: "recipe".into(),
                message: format!("`{field}`: `{key}` is not a key in {}'s en/messages.json", tarball.display()),
            });
        }
    }

    let (name, bytes) = json("en/data.json")?;
    let english: Vec<Entry> = npm::parse_json(bytes, tarball, &name)?;
    let (name, bytes) = json("meta/unicode-names.json")?;
    let unicode_names: BTreeMap<String, String> = npm::parse_json(bytes, tarball, &name)?;
    let (name, bytes) = json("en/shortcodes/github.json")?;
    let github: BTreeMap<String, Shortcodes> = npm::parse_json(bytes, tarball, &name)?;

    let mut universe: Vec<(u32, Entry, String, String)> = Vec::new();
    for entry in english {
        let (Some(group), Some(subgroup)) = (entry.group, entry.subgroup) else { continue };
        let (Some(group), Some(subgroup)) = (group_keys.get(&group), subgroup_keys.get(&subgroup)) else { continue };
        if rule.exclude_groups.contains(group) || rule.exclude_subgroups.contains(subgroup) {
            continue;
        }
        let (group, subgroup) = (group.clone(), subgroup.clone());
        universe.push((entry.order.unwrap_or(u32::MAX), entry, group, subgroup));
    }
    universe.sort_by(|a, b| (a.0, &a.1.hexcode).cmp(&(b.0, &b.1.hexcode)));

    let mut keywords_by_lang: Vec<BTreeMap<String, Vec<String>>> = Vec::new();
    let mut names = Vec::new();
    for lang in languages {
        let (name, bytes) = json(&format!("{lang}/data.json"))?;
        let data: Vec<Entry> = npm::parse_json(bytes, tarball, &name)?;
        keywords_by_lang.push(data.into_iter().map(|e| (e.hexcode, e.tags)).collect());
        let (name, bytes) = json(&format!("{lang}/messages.json"))?;
        let messages: Messages = npm::parse_json(bytes, tarball, &name)?;
        names.push(
            messages
                .groups
                .into_iter()
                .chain(messages.subgroups)
                .map(|m| (m.key, m.message))
                .collect::<BTreeMap<_, _>>(),
        );
    }

    let emoji = universe
        .into_iter()
        .map(|(_, entry, group, subgroup)| {
            let keywords =
                keywords_by_lang.iter().map(|k| k.get(&entry.hexcode).cloned().unwrap_or_default()).collect();
            let shortcodes = match github.get(&entry.hexcode) {
                Some(Shortcodes::One(code)) => vec![code.clone()],
                Some(Shortcodes::Many(codes)) => codes.clone(),
                None => Vec::new(),
            };
            Emoji {
                sticker_id: entry.hexcode.to_ascii_lowercase(),
                unicode_name: unicode_names.get(&entry.hexcode).cloned(),
                hexcode: entry.hexcode,
                label: entry.label,
                group,
                subgroup,
                shortcodes,
                keywords,
            }
        })
        .collect();
    Ok(Emojibase { languages: languages.to_vec(), emoji, names })
}
