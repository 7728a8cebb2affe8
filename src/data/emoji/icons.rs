//! Finding each emoji's drawing in a style: an iconify-json set (`icons.json` bodies + `aliases`, `chars.json`
//! codepoint -> name where the set has one, else names matched to the emoji's label, Unicode name or GitHub shortcode
//! after slugging) or a folder of `<HEXCODE>.svg` files. Matching is pure; each drawing goes to one emoji at most.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

/// What identifies an emoji when looking for its drawing.
#[derive(Debug, Clone, Copy)]
pub struct EmojiKeys<'a> {
    pub hexcode: &'a str,
    pub label: &'a str,
    pub unicode_name: Option<&'a str>,
    pub shortcodes: &'a [String],
}

/// One icon of an iconify set: an SVG body and its view box.
#[derive(Debug, Clone, PartialEq)]
pub struct Icon {
    pub body: String,
    pub left: f64,
    pub top: f64,
    pub width: f64,
    pub height: f64,
}

impl Icon {
    /// A standalone SVG document.
    pub fn svg(&self) -> String {
        let (l, t, w, h) = (self.left, self.top, self.width, self.height);
        format!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="{w}" height="{h}" viewBox="{l} {t} {w} {h}">{}</svg>"#,
            self.body
        )
    }
}

/// An iconify-json icon set.
#[derive(Debug, Clone, Default)]
pub struct IconSet {
    pub icons: BTreeMap<String, Icon>,
    /// Alias -> parent (aliases that transform their parent are left out).
    pub aliases: BTreeMap<String, String>,
    /// Lower-case codepoints joined by `-` -> icon or alias name.
    pub chars: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct IconsJson {
    icons: BTreeMap<String, serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    aliases: BTreeMap<String, serde_json::Map<String, serde_json::Value>>,
    left: Option<f64>,
    top: Option<f64>,
    width: Option<f64>,
    height: Option<f64>,
}

impl IconSet {
    /// Parses `icons.json` (and `chars.json` where the set has one). Icons or aliases that rotate or flip are skipped:
    /// none of the pinned sets has any, and drawing them unchanged would be wrong.
    pub fn parse(icons_json: &[u8], chars_json: Option<&[u8]>) -> Result<IconSet, serde_json::Error> {
        let raw: IconsJson = serde_json::from_slice(icons_json)?;
        let plain = |fields: &serde_json::Map<String, serde_json::Value>, allowed: &[&str]| {
            fields.keys().all(|k| allowed.contains(&k.as_str()))
        };
        let number =
            |fields: &serde_json::Map<String, serde_json::Value>, key: &str, default: Option<f64>, fallback| {
                fields.get(key).and_then(serde_json::Value::as_f64).or(default).unwrap_or(fallback)
            };
        let mut set = IconSet::default();
        for (name, fields) in &raw.icons {
            let Some(body) = fields.get("body").and_then(serde_json::Value::as_str) else { continue };
            if !plain(fields, &["body", "left", "top", "width", "height", "hidden"]) {
                continue;
            }
            let icon = Icon {
                body: body.to_string(),
                left: number(fields, "left", raw.left, 0.0),
                top: number(fields, "top", raw.top, 0.0),
                width: number(fields, "width", raw.width, 16.0),
                height: number(fields, "height", raw.height, 16.0),
            };
            if icon.width > 0.0 && icon.height > 0.0 {
                set.icons.insert(name.clone(), icon);
            }
        }
        for (name, fields) in &raw.aliases {
            if let Some(parent) = fields.get("parent").and_then(serde_json::Value::as_str) {
                if plain(fields, &["parent", "hidden"]) {
                    set.aliases.insert(name.clone(), parent.to_string());
                }
            }
        }
        if let Some(chars) = chars_json {
            set.chars = serde_json::from_slice(chars)?;
        }
        Ok(set)
    }

    /// Follows aliases to an icon.
    pub fn resolve<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        let mut name = name;
        for _ in 0..8 {
            if self.icons.contains_key(name) {
                return Some(name);
            }
            name = self.aliases.get(name)?;
        }
        None
    }

    /// For each emoji, the name of its icon (an icon is given to one emoji only: the best-matched, then the first).
    pub fn match_emoji(&self, emoji: &[EmojiKeys]) -> Vec<Option<String>> {
        // Name indexes: exact; normalized (trailing `-1`/`-default` dropped, `flag-for-` -> `flag-`); without dashes.
        let names: BTreeSet<&str> = self.icons.keys().chain(self.aliases.keys()).map(String::as_str).collect();
        let mut normalized: BTreeMap<String, &str> = BTreeMap::new();
        let mut dashless: BTreeMap<String, &str> = BTreeMap::new();
        for &name in &names {
            let norm = normalize_icon_name(name);
            dashless.entry(norm.replace('-', "")).or_insert(name);
            normalized.entry(norm).or_insert(name);
        }
        let find = |e: &EmojiKeys| -> Option<(u8, &str)> {
            let hex = e.hexcode.to_ascii_lowercase();
            let without_fe0f = hex.split('-').filter(|p| *p != "fe0f").collect::<Vec<_>>().join("-");
            for key in [&hex, &without_fe0f] {
                if let Some(name) = self.chars.get(key.as_str()) {
                    return Some((0, name.as_str()));
                }
            }
            let label = slug(e.label);
            let others: Vec<String> =
                e.unicode_name.into_iter().map(slug).chain(e.shortcodes.iter().map(|s| slug(s))).collect();
            if let Some(&name) = names.get(label.as_str()) {
                return Some((1, name));
            }
            if let Some(&name) = others.iter().find_map(|k| names.get(k.as_str())) {
                return Some((2, name));
            }
            let keys: Vec<&String> = std::iter::once(&label).chain(&others).collect();
            if let Some(&name) = keys.iter().find_map(|k| normalized.get(k.as_str())) {
                return Some((3, name));
            }
            keys.iter().find_map(|k| dashless.get(&k.replace('-', ""))).map(|&name| (4, name))
        };
        // Rank: the tier, and within it a name that is an icon before one that is an alias.
        let mut found: Vec<(u8, usize, &str)> = emoji
            .iter()
            .enumerate()
            .filter_map(|(i, e)| {
                let (tier, name) = find(e)?;
                let rank = 2 * tier + u8::from(!self.icons.contains_key(name));
                Some((rank, i, self.resolve(name)?))
            })
            .collect();
        found.sort();
        let mut taken = BTreeSet::new();
        let mut out = vec![None; emoji.len()];
        for (_, i, icon) in found {
            if taken.insert(icon) {
                out[i] = Some(icon.to_string());
            }
        }
        out
    }
}

/// For each emoji, the key of its file among `<HEXCODE>` keys (exact, else without `FE0F`).
pub fn match_hexcode_files(files: &BTreeSet<String>, emoji: &[EmojiKeys]) -> Vec<Option<String>> {
    emoji
        .iter()
        .map(|e| {
            let hex = e.hexcode.to_ascii_uppercase();
            let without_fe0f = hex.split('-').filter(|p| *p != "FE0F").collect::<Vec<_>>().join("-");
            [hex, without_fe0f].into_iter().find(|k| files.contains(k))
        })
        .collect()
}

/// `Man’s Shoe: Piñata` -> `mans-shoe-pinata`: lower case ASCII, apostrophes dropped, other runs -> `-`.
pub fn slug(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars().flat_map(char::to_lowercase) {
        let c = match c {
            'á' | 'à' | 'â' | 'ä' | 'ã' | 'å' => 'a',
            'é' | 'è' | 'ê' | 'ë' => 'e',
            'í' | 'ì' | 'î' | 'ï' => 'i',
            'ó' | 'ò' | 'ô' | 'ö' | 'õ' => 'o',
            'ú' | 'ù' | 'û' | 'ü' => 'u',
            'ñ' => 'n',
            'ç' => 'c',
            '\'' | '’' => continue,
            c => c,
        };
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    while out.ends_with('-') {
        out.pop();
    }
    out
}

/// Icon names as the sets spell them -> the form labels slug to.
pub fn normalize_icon_name(name: &str) -> String {
    let mut name = name.strip_suffix("-1").or_else(|| name.strip_suffix("-default")).unwrap_or(name).to_string();
    if let Some(rest) = name.strip_prefix("flag-for-") {
        name = format!("flag-{rest}");
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys<'a>(hexcode: &'a str, label: &'a str, shortcodes: &'a [String]) -> EmojiKeys<'a> {
        EmojiKeys { hexcode, label, unicode_name: None, shortcodes }
    }

    #[test]
    fn slugs_follow_icon_naming() {
        assert_eq!(slug("Man’s Shoe"), "mans-shoe");
        assert_eq!(slug("piñata"), "pinata");
        assert_eq!(slug("man: beard"), "man-beard");
        assert_eq!(slug("  A  button (blood type) "), "a-button-blood-type");
        assert_eq!(normalize_icon_name("baby-1"), "baby");
        assert_eq!(normalize_icon_name("thumbs-up-default"), "thumbs-up");
        assert_eq!(normalize_icon_name("flag-for-france"), "flag-france");
    }

    #[test]
    fn parses_view_boxes_with_set_defaults_and_skips_transformed_aliases() {
        let json = br#"{"prefix":"t","width":36,"height":36,"icons":{
            "a":{"body":"<path d='M0 0h36v36z'/>"},
            "b":{"body":"<g/>","left":2,"width":40},
            "c":{"body":"<g/>","rotate":1}},
            "aliases":{"a2":{"parent":"a"},"a3":{"parent":"a","hFlip":true}}}"#;
        let set = IconSet::parse(json, Some(br#"{"1f600":"a"}"#)).unwrap();
        assert_eq!(set.icons["a"].width, 36.0);
        assert_eq!((set.icons["b"].left, set.icons["b"].width, set.icons["b"].height), (2.0, 40.0, 36.0));
        assert!(!set.icons.contains_key("c"));
        assert_eq!(set.resolve("a2"), Some("a"));
        assert_eq!(set.resolve("a3"), None);
        assert!(set.icons["b"].svg().contains(r#"viewBox="2 0 40 36""#));
    }

    #[test]
    fn matching_prefers_codepoints_then_labels_and_gives_each_icon_once() {
        let json = br#"{"width":16,"height":16,"icons":{
            "grinning":{"body":"1"},"mans-shoe-1":{"body":"2"},"cricket-game":{"body":"3"},"alarmclock":{"body":"4"},
            "thumbsup":{"body":"5"}},
            "aliases":{"cricket":{"parent":"cricket-game"}}}"#;
        let set = IconSet::parse(json, Some(br#"{"1f600":"grinning"}"#)).unwrap();
        let thumbs = vec!["+1".to_string(), "thumbsup".to_string()];
        let emoji = [
            keys("1F600", "grinning face", &[]),
            keys("1F45E", "man’s shoe", &[]),
            keys("1F997", "cricket", &[]),
            keys("1F3CF", "cricket game", &[]),
            keys("23F0", "alarm clock", &[]),
            keys("1F44D", "thumbs up", &thumbs),
            keys("1F680", "rocket", &[]),
        ];
        let got = set.match_emoji(&emoji);
        let want = [
            Some("grinning"),
            Some("mans-shoe-1"),
            None,
            Some("cricket-game"),
            Some("alarmclock"),
            Some("thumbsup"),
            None,
        ];
        assert_eq!(got.iter().map(Option::as_deref).collect::<Vec<_>>(), want);
    }

    #[test]
    fn hexcode_files_match_with_or_without_fe0f() {
        let files: BTreeSet<String> = ["1F600".to_string(), "2764".to_string()].into();
        let emoji = [keys("1F600", "", &[]), keys("2764-FE0F", "", &[]), keys("1F680", "", &[])];
        assert_eq!(match_hexcode_files(&files, &emoji), [Some("1F600".into()), Some("2764".into()), None]);
    }
}
