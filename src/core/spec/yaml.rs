//! Hardened YAML reading for specs: a size cap, tight parser budgets against alias bombs, UTF-8 checks, and parser
//! errors rewritten as one readable line (`a.yaml:3:5: field `optimizer.lr`: invalid f64`).
//!
//! Specs come from a folder anyone on the machine may write to, so the reader assumes hostile input: every limit below
//! is far above what a real spec needs (a full spec is about 40 nodes and 1 KiB) and far below what could hurt the
//! daemon.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;

use super::SpecError;

/// The largest spec file rush reads (1 MiB); bigger files are refused before parsing.
pub const MAX_SPEC_BYTES: usize = 1 << 20;

/// Parser budgets: generous for any hand-written spec, tiny next to a billion-laughs expansion.
fn options() -> serde_saphyr::Options {
    let mut alias_limits = serde_saphyr::options::AliasLimits::default();
    alias_limits.max_total_replayed_events = 10_000;
    alias_limits.max_replay_stack_depth = 16;
    alias_limits.max_alias_expansions_per_anchor = 1_000;
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_reader_input_bytes: Some(MAX_SPEC_BYTES),
            max_events: 100_000,
            max_aliases: 1_000,
            max_anchors: 1_000,
            max_recorded_anchor_events: 10_000,
            max_recorded_anchor_bytes: MAX_SPEC_BYTES,
            max_depth: 32,
            max_documents: 1,
            max_nodes: 50_000,
            max_total_scalar_bytes: MAX_SPEC_BYTES,
            max_merge_keys: 100,
        },
        alias_limits: alias_limits,
        reject_unsupported_tags: true,
        with_snippet: false,
    }
}

/// Refuses input over [`MAX_SPEC_BYTES`], naming its size.
pub(crate) fn check_size(file: &str, len: usize) -> Result<(), SpecError> {
    if len > MAX_SPEC_BYTES {
        return Err(SpecError::Parse {
            file: file.to_string(),
            message: format!("the file is {len} bytes; a spec may be at most {MAX_SPEC_BYTES} bytes (1 MiB)"),
        });
    }
    Ok(())
}

/// Checks size and UTF-8; the error for bad bytes gives the line and column of the first one.
pub(crate) fn text<'a>(file: &str, bytes: &'a [u8]) -> Result<&'a str, SpecError> {
    check_size(file, bytes.len())?;
    std::str::from_utf8(bytes).map_err(|e| {
        let good = &bytes[..e.valid_up_to()];
        let line = good.iter().filter(|&&b| b == b'\n').count() as u64 + 1;
        let start = good.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let column = String::from_utf8_lossy(&good[start..]).chars().count() as u64 + 1;
        let byte = bytes.get(e.valid_up_to()).copied().unwrap_or_default();
        SpecError::Syntax {
            file: file.to_string(),
            line,
            column,
            message: format!("not UTF-8 text (byte 0x{byte:02x} at offset {})", e.valid_up_to()),
        }
    })
}

/// Deserializes `text` as one YAML document into `T`, within the budgets above.
pub(crate) fn from_str<T: DeserializeOwned>(file: &str, text: &str) -> Result<T, SpecError> {
    check_size(file, text.len())?;
    let mut track = serde_path_to_error::Track::new();
    let result = serde_saphyr::with_deserializer_from_str_with_options(text, options(), |de| {
        T::deserialize(serde_path_to_error::Deserializer::new(de, &mut track))
    });
    result.map_err(|e| {
        // A type error may only be a symptom: `epochs: [1` (an unclosed bracket) fails as "expected string scalar".
        // When the text is not well-formed YAML at all, that is the news; a pass that builds nothing finds it.
        let mut syntax = serde_path_to_error::Track::new();
        let well_formed = serde_saphyr::with_deserializer_from_str_with_options(text, options(), |de| {
            serde::de::IgnoredAny::deserialize(serde_path_to_error::Deserializer::new(de, &mut syntax))
        });
        match well_formed {
            Err(root) if is_syntax(&root) => {
                // That pass follows any key, not only the spec's fields: a hostile one is left out.
                let field = dotted(&syntax.path());
                describe(file, if field.len() <= 80 { &field } else { "" }, &root)
            }
            _ => describe(file, &dotted(&track.path()), &e),
        }
    })
}

/// Whether `e` comes from the YAML scanner: the text is not well-formed YAML.
fn is_syntax(e: &serde_saphyr::Error) -> bool {
    matches!(
        e.without_snippet(),
        serde_saphyr::Error::ExternalMessage { source, .. }
            if matches!(**source, serde_saphyr::ExternalMessageSource::Parser(_))
    )
}

/// `optimizer.lr`, `grid.model[1]`; empty at the top level.
fn dotted(path: &serde_path_to_error::Path) -> String {
    let mut out = String::new();
    for segment in path {
        match segment {
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Unknown => {}
        }
    }
    out
}

/// One line: the location, the field (when serde knows it) and the parser's message without its own location suffix.
fn describe(file: &str, field: &str, e: &serde_saphyr::Error) -> SpecError {
    let plain = e.without_snippet().to_string();
    let plain = plain.split_whitespace().collect::<Vec<_>>().join(" ");
    let location = e.location().filter(|l| l.line() > 0);
    let mut message = match location {
        Some(l) => {
            let suffix = format!(" at line {}, column {}", l.line(), l.column());
            plain.strip_suffix(&suffix).unwrap_or(&plain).to_string()
        }
        None => plain,
    };
    // Advice meant for the programmer, not for whoever wrote the spec.
    if let Some(cut) = message.find(", set DuplicateKeyPolicy") {
        message.truncate(cut);
    }
    if message.contains("budget breached: Documents") {
        message = "a spec file holds one YAML document (found another after `---`)".into();
    } else if message.starts_with("budget breached") || message.starts_with("recursion limit") {
        // An alias bomb or absurd nesting: where it tripped is noise, the limit is the news.
        message = format!("refused: the YAML goes past rush's parser limits (aliases, anchors, nesting): {message}");
    } else if message == "expected string scalar" {
        // saphyr's words when a number, string or name was expected and a list or a mapping came.
        message = "expected a single value, found a list or a mapping".into();
        if !field.is_empty() {
            message = format!("field `{field}`: {message}");
        }
    } else if message == "expected mapping start" && !field.is_empty() {
        // A section (`ema: 0.999`): its fields go in a mapping.
        message = format!("field `{field}`: is a section, expected a mapping of its fields (`{field}: {{...}}`)");
    } else if message == "expected mapping start" {
        message = "expected a mapping of spec fields (`dataset: emoji`, ...)".into();
    } else if message.starts_with("unknown field") {
        // serde's path ends with the unknown key, which the message names already.
        if let Some((parent, _)) = field.rsplit_once('.') {
            message = format!("in `{parent}`: {message}");
        }
    } else if !field.is_empty() {
        message = format!("field `{field}`: {message}");
    }
    let message = super::words::did_you_mean(&super::words::plain_types(&message));
    match location {
        Some(l) => SpecError::Syntax { file: file.to_string(), line: l.line(), column: l.column(), message },
        None => SpecError::Parse { file: file.to_string(), message },
    }
}

#[cfg(test)]
mod tests {
    use super::super::Spec;

    fn error(text: &str) -> String {
        Spec::parse("s.yaml", text).expect_err(text).to_string()
    }

    #[test]
    fn malformed_yaml_is_reported_as_such_not_as_the_type_error_it_causes() {
        // Each of these failed as a type error on a well-formed looking field ("expected string scalar", "invalid u32").
        assert_eq!(error("dataset: toy\nepochs: [1\n"), "s.yaml:2:9: field `epochs`: unclosed bracket '['");
        assert_eq!(error("dataset: toy\nepochs: {a\n"), "s.yaml:2:9: field `epochs`: unclosed bracket '{'");
        assert_eq!(
            error("dataset: toy\nepochs: 3\n optimizer: x\n"),
            "s.yaml:3:11: mapping values are not allowed in this context"
        );
        // Well-formed YAML of the wrong type keeps the type error.
        assert_eq!(
            error("dataset: toy\nepochs: [1]\n"),
            "s.yaml:2:9: field `epochs`: expected a single value, found a list or a mapping"
        );
        assert_eq!(
            error("dataset: toy\noptimizer: 0.1\n"),
            "s.yaml:2:12: field `optimizer`: is a section, expected a mapping of its fields (`optimizer: {...}`)"
        );
        assert_eq!(
            error("dataset: toy\noptimizer:\n  lr: {a: 1}\n"),
            "s.yaml:3:7: field `optimizer.lr`: expected a single value, found a list or a mapping"
        );
    }
}
