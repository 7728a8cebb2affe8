//! Field rules as data: which field (a dotted path), which values it takes, and the words of its refusal. One table
//! is both checked (by `Spec::validate`, `SlurmOverrides::validate`) and written into the JSON Schema of
//! `rush spec schema`, so what an editor flags and what rush refuses come from one place.
//!
//! Each [`Check`] writes what JSON Schema can say (`minimum`, `exclusiveMaximum`, `maxLength`, `pattern`, `items`,
//! `required`, ...) and names, in [`Check::beyond_schema`], the part it cannot (an order between two values, a limit
//! set by another field, a length in bytes).

use std::fmt::Display;

use serde_json::{Map, Value, json};

/// One end of a number range.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bound {
    Unbounded,
    /// The end itself is allowed.
    Closed(f64),
    /// The end itself is not allowed.
    Open(f64),
}

/// A range of finite numbers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    pub low: Bound,
    pub high: Bound,
}

impl Interval {
    /// Whether `x` is finite and inside.
    pub fn contains(&self, x: f64) -> bool {
        let above = match self.low {
            Bound::Unbounded => true,
            Bound::Closed(l) => x >= l,
            Bound::Open(l) => x > l,
        };
        let below = match self.high {
            Bound::Unbounded => true,
            Bound::Closed(h) => x <= h,
            Bound::Open(h) => x < h,
        };
        x.is_finite() && above && below
    }

    /// How refusals name the range: `in [0, 1)`, `in (0, 10]`, `>= 0`.
    pub fn describe(&self) -> String {
        let end = |b: Bound, open: &'static str, closed: &'static str| match b {
            Bound::Unbounded => None,
            Bound::Closed(x) => Some((closed, x)),
            Bound::Open(x) => Some((open, x)),
        };
        match (end(self.low, "(", "["), end(self.high, ")", "]")) {
            (Some((o, l)), Some((c, h))) => format!("in {o}{l}, {h}{c}"),
            (Some((o, l)), None) => format!("{} {l}", if o == "[" { ">=" } else { ">" }),
            (None, Some((c, h))) => format!("{} {h}", if c == "]" { "<=" } else { "<" }),
            (None, None) => "a finite number".into(),
        }
    }

    /// `minimum` / `exclusiveMinimum` / `maximum` / `exclusiveMaximum` for `node`.
    fn write(&self, node: &mut Map<String, Value>) {
        for (bound, closed, open) in
            [(self.low, "minimum", "exclusiveMinimum"), (self.high, "maximum", "exclusiveMaximum")]
        {
            let (key, x) = match bound {
                Bound::Unbounded => continue,
                Bound::Closed(x) => (closed, x),
                Bound::Open(x) => (open, x),
            };
            node.insert(key.into(), json!(x));
        }
    }
}

/// What a rule checks about its field of a `T`. `get` reads the field; `None` means absent (nothing to check).
pub enum Check<T: 'static> {
    /// A text that must not be empty. Schema: listed in its section's `required`, `minLength: 1`, no `default`.
    Required { get: fn(&T) -> &str },
    /// A text that `valid` accepts (`Err` holds the problem, for the `{problem}` of the message). Schema: `pattern`,
    /// `maxLength` when given; `pattern` must say exactly what `valid` does (a unit test compares them per rule).
    Text {
        get: fn(&T) -> Option<&str>,
        valid: fn(&str) -> Result<(), String>,
        pattern: &'static str,
        max_chars: Option<u64>,
        /// What `valid` refuses that `pattern` cannot say, if anything.
        beyond: Option<&'static str>,
    },
    /// Each text of a list, as [`Check::Text`]. Schema: the same under `items`.
    EachText { get: fn(&T) -> &[String], valid: fn(&str) -> Result<(), String>, pattern: &'static str },
    /// A text of at most `max` bytes. Schema: `maxLength` (characters, so multi-byte text can pass it).
    Bytes { get: fn(&T) -> &str, max: u64 },
    /// A whole number in `min..=max`. Schema: `minimum`, `maximum`.
    Count { get: fn(&T) -> Option<u64>, min: u64, max: u64 },
    /// A finite number in `range`. Schema: its bounds.
    Number { get: fn(&T) -> f64, range: Interval },
    /// A finite number in `range` and at most the field `limit` (read by `limit_of`). Schema: `range`, and `limit`'s
    /// own upper bound (from its rule in the same table); the comparison with the other field is beyond it.
    NumberAtMost { get: fn(&T) -> f64, range: Interval, limit: &'static str, limit_of: fn(&T) -> f64 },
    /// A finite number in `range` and below the field `limit` (strictly). Schema: `range`; the comparison with the
    /// other field is beyond it.
    NumberBelow { get: fn(&T) -> f64, range: Interval, limit: &'static str, limit_of: fn(&T) -> f64 },
    /// A pair `[min, max]`, each in `range`, `min <= max`. Schema: `items` in `range`; the order is beyond it.
    Pair { get: fn(&T) -> Option<[f64; 2]>, range: Interval },
    /// Whole numbers, each `>= min`, in increasing order. Schema: `items` `>= min`, `uniqueItems`; the order is
    /// beyond it.
    Increasing { get: fn(&T) -> &[u32], min: u32 },
    /// This field and the sibling `other` may not both be set. Schema: `not` both present and non-null.
    NotBoth { other: &'static str, both: fn(&T) -> bool },
}

/// One field's rule: its dotted path (relative to the table's root), the check, and the refusal's words. The message
/// is a template: `{value}` is the field's value, `{range}` the allowed range, `{max}` a length limit, `{limit}` the
/// other field and its value (`optimizer.lr = 0.002`), `{problem}` what `valid` said.
pub struct Rule<T: 'static> {
    pub path: &'static str,
    pub check: Check<T>,
    pub message: &'static str,
}

impl<T> Rule<T> {
    /// `Err(message)` when `item` breaks the rule.
    pub fn check(&self, item: &T) -> Result<(), String> {
        let say = |value: &dyn Display, more: &[(&str, String)]| {
            let mut fields = vec![("value", value.to_string())];
            fields.extend_from_slice(more);
            Err(render(self.message, &fields))
        };
        match &self.check {
            Check::Required { get } if get(item).is_empty() => say(&"", &[]),
            Check::Text { get, valid, .. } => match get(item).map(|s| (s, valid(s))) {
                Some((s, Err(problem))) => say(&format!("{s:?}"), &[("problem", problem)]),
                _ => Ok(()),
            },
            Check::EachText { get, valid, .. } => match get(item).iter().find_map(|s| valid(s).err().map(|p| (s, p))) {
                Some((s, problem)) => say(&format!("{s:?}"), &[("problem", problem)]),
                None => Ok(()),
            },
            Check::Bytes { get, max } if get(item).len() as u64 > *max => {
                say(&get(item).len(), &[("max", max.to_string())])
            }
            Check::Count { get, min, max } => match get(item) {
                Some(n) if !(*min..=*max).contains(&n) => say(&n, &[("range", format!("{min}..={max}"))]),
                _ => Ok(()),
            },
            Check::Number { get, range } if !range.contains(get(item)) => {
                say(&get(item), &[("range", range.describe())])
            }
            Check::NumberAtMost { get, range, limit, limit_of } => {
                let (x, most) = (get(item), limit_of(item));
                if range.contains(x) && x <= most {
                    Ok(())
                } else {
                    say(&x, &[("range", range.describe()), ("limit", format!("{limit} = {most}"))])
                }
            }
            Check::NumberBelow { get, range, limit, limit_of } => {
                let (x, below) = (get(item), limit_of(item));
                if range.contains(x) && x < below {
                    Ok(())
                } else {
                    say(&x, &[("range", range.describe()), ("limit", format!("{limit} = {below}"))])
                }
            }
            Check::Pair { get, range } => match get(item) {
                Some([lo, hi]) if !(range.contains(lo) && range.contains(hi) && lo <= hi) => {
                    say(&format!("[{lo}, {hi}]"), &[("range", range.describe())])
                }
                _ => Ok(()),
            },
            Check::Increasing { get, min } => {
                let list = get(item);
                if list.iter().any(|n| n < min) || list.windows(2).any(|w| w[0] >= w[1]) {
                    say(&format!("{list:?}"), &[])
                } else {
                    Ok(())
                }
            }
            Check::NotBoth { both, .. } if both(item) => say(&"", &[]),
            _ => Ok(()),
        }
    }
}

/// `template` with each `{name}` of `fields` replaced, in one pass (a value that looks like a placeholder stays).
fn render(template: &str, fields: &[(&str, String)]) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let field = after.find('}').and_then(|close| {
            let name = &after[..close];
            fields.iter().find(|(n, _)| *n == name).map(|(_, text)| (text, close))
        });
        match field {
            Some((text, close)) => {
                out.push_str(text);
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

impl<T> Check<T> {
    /// What of this check JSON Schema cannot say (the schema may accept a value this check refuses for it).
    pub fn beyond_schema(&self) -> Option<String> {
        match self {
            Check::Text { beyond, .. } => beyond.map(String::from),
            Check::Bytes { max, .. } => {
                Some(format!("at most {max} bytes of UTF-8 (the schema's maxLength counts characters)"))
            }
            Check::NumberAtMost { limit, .. } => Some(format!("at most `{limit}`")),
            Check::NumberBelow { limit, .. } => Some(format!("below `{limit}`")),
            Check::Pair { .. } => Some("min <= max".into()),
            Check::Increasing { .. } => Some("in increasing order (the schema says: distinct)".into()),
            _ => None,
        }
    }
}

/// The JSON pointers (without `#`) of the object schema holding the field at `path`, and of the field's own schema,
/// following `$ref`s and the `anyOf`/`oneOf` of optional sections.
pub fn locate(schema: &Value, path: &str) -> Option<(String, String)> {
    let mut object = String::new();
    let mut field: Option<String> = None;
    for segment in path.split('.') {
        if let Some(previous) = &field {
            object = section(schema, previous, 0)?;
        }
        let at = format!("{object}/properties/{segment}");
        schema.pointer(&at)?;
        field = Some(at);
    }
    field.map(|f| (object, f))
}

/// The pointer of the object schema (one with `properties`) that the schema at `at` stands for.
fn section(schema: &Value, at: &str, depth: usize) -> Option<String> {
    let node = schema.pointer(at)?;
    if depth > 8 {
        return None;
    }
    if node.get("properties").is_some() {
        return Some(at.to_string());
    }
    if let Some(target) = node.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix('#')) {
        return section(schema, target, depth + 1);
    }
    ["anyOf", "oneOf"].iter().find_map(|key| {
        let n = node.get(key)?.as_array()?.len();
        (0..n).find_map(|i| section(schema, &format!("{at}/{key}/{i}"), depth + 1))
    })
}

/// Every field path under the schema's root (sections and their fields, depth first, in property order) with its
/// pointer, leaving out the top-level fields in `skip`.
pub fn field_paths(schema: &Value, skip: &[&str]) -> Vec<(String, String)> {
    fn walk(schema: &Value, object: &str, prefix: &str, skip: &[&str], out: &mut Vec<(String, String)>) {
        let Some(props) = schema.pointer(&format!("{object}/properties")).and_then(Value::as_object) else { return };
        for name in props.keys() {
            if prefix.is_empty() && skip.contains(&name.as_str()) {
                continue;
            }
            let path = if prefix.is_empty() { name.clone() } else { format!("{prefix}.{name}") };
            let at = format!("{object}/properties/{name}");
            out.push((path.clone(), at.clone()));
            if let Some(inner) = section(schema, &at, 0) {
                walk(schema, &inner, &path, skip, out);
            }
        }
    }
    let mut out = vec![];
    walk(schema, "", "", skip, &mut out);
    out
}

/// Writes each rule of `rules` (paths relative to `prefix`, e.g. `slurm`) into `schema`. Returns the rules' paths
/// that name no field of the schema (none, unless a table and the types disagree: a unit test keeps it empty).
pub fn write<T>(schema: &mut Value, prefix: &str, rules: &[Rule<T>]) -> Vec<String> {
    let mut missing = vec![];
    for rule in rules {
        let path = if prefix.is_empty() { rule.path.to_string() } else { format!("{prefix}.{}", rule.path) };
        let Some((object, field)) = locate(schema, &path) else {
            missing.push(path);
            continue;
        };
        let name = rule.path.rsplit('.').next().unwrap_or(rule.path);
        if let Some(Value::Object(node)) = schema.pointer_mut(&object) {
            write_section(node, name, &rule.check);
        }
        if let Some(Value::Object(node)) = schema.pointer_mut(&field) {
            write_field(node, &rule.check, rules);
        }
    }
    missing
}

/// The keywords a rule puts on its section (the object holding the field).
fn write_section<T>(section: &mut Map<String, Value>, name: &str, check: &Check<T>) {
    match check {
        Check::Required { .. } => {
            let required = section.entry("required").or_insert_with(|| json!([]));
            if let Some(list) = required.as_array_mut().filter(|l| !l.iter().any(|v| v == name)) {
                list.push(json!(name));
            }
        }
        Check::NotBoth { other, .. } => {
            let not_null = json!({"not": {"type": "null"}});
            let both = json!({"not": {"required": [name, other], "properties": {name: not_null, *other: not_null}}});
            let all = section.entry("allOf").or_insert_with(|| json!([]));
            if let Some(list) = all.as_array_mut() {
                list.push(both);
            }
        }
        _ => {}
    }
}

/// The keywords a rule puts on its field. Numeric, string and array keywords apply only to values of that kind, so
/// they sit beside a `$ref` or a `type` list (`["array", "null"]`) without changing what else is allowed.
fn write_field<T>(node: &mut Map<String, Value>, check: &Check<T>, rules: &[Rule<T>]) {
    match check {
        Check::Required { .. } => {
            node.remove("default");
            node.insert("minLength".into(), json!(1));
        }
        Check::Text { pattern, max_chars, .. } => {
            write_pattern(node, pattern);
            if let Some(n) = max_chars {
                node.insert("maxLength".into(), json!(n));
            }
        }
        Check::EachText { pattern, .. } => write_pattern(items(node), pattern),
        Check::Bytes { max, .. } => {
            node.insert("maxLength".into(), json!(max));
        }
        Check::Count { min, max, .. } => {
            node.insert("minimum".into(), json!(min));
            node.insert("maximum".into(), json!(max));
        }
        Check::Number { range, .. } | Check::NumberBelow { range, .. } => range.write(node),
        Check::NumberAtMost { range, limit, .. } => {
            let limit_high = rules.iter().find_map(|r| match &r.check {
                Check::Number { range, .. } if r.path == *limit => Some(range.high),
                _ => None,
            });
            let high = match (range.high, limit_high) {
                (Bound::Unbounded, Some(h)) => h,
                (h, _) => h,
            };
            Interval { low: range.low, high }.write(node);
        }
        Check::Pair { range, .. } => range.write(items(node)),
        Check::Increasing { min, .. } => {
            items(node).insert("minimum".into(), json!(min));
            node.insert("uniqueItems".into(), json!(true));
        }
        Check::NotBoth { .. } => {}
    }
}

/// A `pattern`, and no line break anywhere: Python's `re.search` (what Python validators run) lets `$` match before a
/// final newline, so `^[a-z]+$` alone would pass `"emoji\n"`. Every pattern here allows no line break.
fn write_pattern(node: &mut Map<String, Value>, pattern: &str) {
    node.insert("pattern".into(), json!(pattern));
    node.insert("not".into(), json!({"type": "string", "pattern": "\n"}));
}

/// The `items` schema of an array field, made an object if it was `true` or absent.
fn items(node: &mut Map<String, Value>) -> &mut Map<String, Value> {
    let entry = node.entry("items").or_insert_with(|| json!({}));
    if !entry.is_object() {
        *entry = json!({});
    }
    entry.as_object_mut().expect("made an object just above")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_contain_and_describe() {
        let lr = Interval { low: Bound::Open(0.0), high: Bound::Closed(10.0) };
        assert!(lr.contains(10.0) && lr.contains(1e-9));
        assert!(!lr.contains(0.0) && !lr.contains(10.5) && !lr.contains(f64::NAN) && !lr.contains(f64::INFINITY));
        assert_eq!(lr.describe(), "in (0, 10]");
        assert_eq!(Interval { low: Bound::Closed(0.0), high: Bound::Open(1.0) }.describe(), "in [0, 1)");
        let warmup = Interval { low: Bound::Closed(0.0), high: Bound::Unbounded };
        assert_eq!(warmup.describe(), ">= 0");
        assert!(warmup.contains(1e300) && !warmup.contains(f64::INFINITY) && !warmup.contains(-0.5));
        let mut node = Map::new();
        lr.write(&mut node);
        assert_eq!(Value::Object(node), json!({"exclusiveMinimum": 0.0, "maximum": 10.0}));
    }

    #[test]
    fn messages_fill_their_placeholders_once() {
        let fields = [("value", "\"{range}\"".to_string()), ("range", "1..=2".to_string())];
        assert_eq!(
            render("{value} is out of range {range} {other}", &fields),
            "\"{range}\" is out of range 1..=2 {other}"
        );
    }

    #[test]
    fn locate_follows_refs_and_optional_sections() {
        let schema = json!({
            "properties": {"a": {"$ref": "#/$defs/A"}, "b": {"anyOf": [{"$ref": "#/$defs/A"}, {"type": "null"}]}},
            "$defs": {"A": {"properties": {"x": {"type": "number"}}}}
        });
        assert_eq!(locate(&schema, "a.x"), Some(("/$defs/A".into(), "/$defs/A/properties/x".into())));
        assert_eq!(locate(&schema, "b.x"), Some(("/$defs/A".into(), "/$defs/A/properties/x".into())));
        assert_eq!(locate(&schema, "a"), Some((String::new(), "/properties/a".into())));
        assert_eq!(locate(&schema, "a.y"), None);
        assert_eq!(locate(&schema, "a.x.z"), None);
        let paths: Vec<String> = field_paths(&schema, &["b"]).into_iter().map(|(p, _)| p).collect();
        assert_eq!(paths, ["a", "a.x"]);
    }
}
