//! Plain words in the parser's messages: the closest name for an unknown field or value ("did you mean `model`?"),
//! and the types a spec's author knows (`a whole number`, not `u32`). Both rewrite serde's message text, which is the
//! same whether it came from the YAML parser or from an `-a` override.

/// The unsigned and signed integer types serde names, with what they take.
const WHOLE: [(&str, &str); 12] = [
    ("u8", "a whole number from 0 to 255"),
    ("u16", "a whole number from 0 to 65535"),
    ("u32", "a whole number from 0 to 4294967295"),
    ("u64", "a whole number, 0 or more"),
    ("u128", "a whole number, 0 or more"),
    ("usize", "a whole number, 0 or more"),
    ("i8", "a whole number"),
    ("i16", "a whole number"),
    ("i32", "a whole number"),
    ("i64", "a whole number"),
    ("i128", "a whole number"),
    ("isize", "a whole number"),
];

const DECIMAL: [(&str, &str); 2] = [("f32", "a number"), ("f64", "a number")];

/// `message` with Rust's type names put in words: `expected u32` reads `expected a whole number from 0 to
/// 4294967295`, and `invalid u32` (a value out of range) says what would fit after it.
pub fn plain_types(message: &str) -> String {
    let mut out = message.to_string();
    for (ty, words) in WHOLE.iter().chain(DECIMAL.iter()) {
        out = replace_word(&out, &format!("expected {ty}"), &format!("expected {words}"));
        out = replace_word(&out, &format!("invalid {ty}"), &format!("invalid {ty} (expected {words})"));
    }
    out
}

/// Replaces each `from` in `text` that ends a word (followed by nothing, a space or punctuation).
fn replace_word(text: &str, from: &str, to: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(from) {
        let after = &rest[i + from.len()..];
        let ends_word = after.chars().next().is_none_or(|c| !c.is_ascii_alphanumeric() && c != '(' && c != '_');
        // `invalid u32 (expected ...)` must not grow again when the text is put in words twice.
        let already = after.starts_with(" (expected");
        out.push_str(&rest[..i]);
        out.push_str(if ends_word && !already { to } else { from });
        rest = after;
    }
    out.push_str(rest);
    out
}

/// `message` with "; did you mean `model`?" added when it names an unknown field or variant (serde's `unknown field
/// `modle`, expected one of ...`) and one of the names it lists is close to it.
pub fn did_you_mean(message: &str) -> String {
    let Some(suggestion) = suggestion(message) else { return message.to_string() };
    format!("{message}; did you mean `{suggestion}`?")
}

/// The listed name closest to the unknown one, if any is close enough to be a slip of the keyboard.
fn suggestion(message: &str) -> Option<String> {
    let (unknown, rest) = ["unknown field `", "unknown variant `"].iter().find_map(|lead| {
        let at = message.find(lead)? + lead.len();
        let end = message[at..].find('`')?;
        Some((&message[at..at + end], &message[at + end + 1..]))
    })?;
    let listed =
        rest.split_once("expected one of ").map(|(_, l)| l).or_else(|| rest.split_once("expected ").map(|x| x.1))?;
    let names: Vec<&str> = listed
        .split(',')
        .map(|n| n.trim().trim_matches('`').trim_end_matches(|c: char| !c.is_ascii_alphanumeric() && c != '_'))
        .map(|n| n.trim_matches('`'))
        .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .collect();
    let typed = unknown.to_ascii_lowercase();
    names
        .iter()
        .map(|n| (distance(&typed, &n.to_ascii_lowercase()), *n))
        .filter(|(d, n)| *d > 0 && *d <= 2 && *d * 3 <= n.chars().count().max(typed.chars().count()))
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n.to_string())
}

/// The edit distance between `a` and `b` counting a swap of two neighbours as one edit (optimal string alignment).
pub fn distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::super::{Spec, apply_overrides};
    use super::*;

    #[test]
    fn distances_count_a_swap_as_one() {
        assert_eq!(distance("modle", "model"), 1);
        assert_eq!(distance("lrr", "lr"), 1);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("epochs", "epochs"), 0);
        assert_eq!(distance("kitten", "sitting"), 3);
    }

    #[test]
    fn an_unknown_field_close_to_a_known_one_gets_a_suggestion() {
        let e = Spec::parse("a.yaml", "dataset: emoji\nmodle: x\n").unwrap_err().to_string();
        assert!(e.ends_with("; did you mean `model`?"), "{e}");
        let e = Spec::parse("a.yaml", "dataset: emoji\noptimizer:\n  lrr: 1\n").unwrap_err().to_string();
        assert!(e.ends_with("did you mean `lr`?"), "{e}");
        let e = Spec::parse("a.yaml", "dataset: emoji\nmodel: resnet5\n").unwrap_err().to_string();
        assert!(e.ends_with("did you mean `resnet50`?"), "{e}");
        let e = apply_overrides(&Spec { dataset: "emoji".into(), ..Spec::default() }, "optimzer.lr=0.1")
            .unwrap_err()
            .to_string();
        assert!(e.ends_with("did you mean `optimizer`?"), "{e}");
        // Nothing close: no guess.
        let e = Spec::parse("a.yaml", "dataset: emoji\nzzzzzz: x\n").unwrap_err().to_string();
        assert!(e.contains("unknown field `zzzzzz`") && !e.contains("did you mean"), "{e}");
        assert_eq!(did_you_mean("unknown field `ab`, expected `xy`"), "unknown field `ab`, expected `xy`");
        assert_eq!(did_you_mean("nothing unknown here"), "nothing unknown here");
    }

    #[test]
    fn type_names_are_put_in_words() {
        let spec = Spec { dataset: "emoji".into(), ..Spec::default() };
        for args in ["epochs=two", "epochs=1.5", "batch_size=-3"] {
            let e = apply_overrides(&spec, args).unwrap_err().to_string();
            assert!(!e.contains("u32") && e.contains("a whole number"), "{args}: {e}");
        }
        let e = Spec::parse("a.yaml", "dataset: emoji\nepochs: two\n").unwrap_err().to_string();
        assert!(e.contains("a whole number"), "{e}");
        let e = apply_overrides(&spec, "optimizer.lr=fast").unwrap_err().to_string();
        assert!(!e.contains("f64"), "{e}");
        assert_eq!(plain_types("invalid u32"), "invalid u32 (expected a whole number from 0 to 4294967295)");
        assert_eq!(plain_types(&plain_types("invalid u32")), plain_types("invalid u32"), "once only");
        assert_eq!(plain_types("expected u32s"), "expected u32s");
    }
}
