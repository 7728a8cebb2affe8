//! `-a "key=value key2=value2"` overrides for `rush run` and `rush fork`, NSML's `-a` made typed.
//!
//! Keys are the same dotted field paths as sweeps (`optimizer.lr=0.01`); values are YAML (`0.01`, `true`, `resnet34`,
//! `[0.5, 1.0]`, `"two words"`). Pairs are separated by whitespace outside brackets and quotes. Errors name the key
//! and read `-a: field `optimizer.lrr`: unknown field ...`.

use serde_json::Value;

use super::field::relabel;
use super::{Spec, SpecError, yaml};

/// How errors name the source of overrides.
const SOURCE: &str = "-a";

/// `spec` with each `key=value` of `args` applied in order (a later key wins), then validated.
pub fn apply_overrides(spec: &Spec, args: &str) -> Result<Spec, SpecError> {
    let mut out = spec.clone();
    let mut set = Vec::new();
    for pair in split_pairs(args)? {
        let Some((key, text)) = pair.split_once('=') else {
            return Err(SpecError::Parse {
                file: SOURCE.into(),
                message: format!("{pair:?} is not key=value (e.g. optimizer.lr=0.01)"),
            });
        };
        let value: Value = if text.is_empty() {
            Value::Null
        } else {
            yaml::from_str(SOURCE, text).map_err(|e| {
                SpecError::invalid(SOURCE, key, format!("{text:?} is not a YAML value: {}", message_of(&e)))
            })?
        };
        out = out.with_field(SOURCE, key, key, value)?;
        set.push((key.to_string(), key.to_string()));
    }
    out.validate(SOURCE).map_err(|e| relabel(e, &set, "after the overrides"))?;
    Ok(out)
}

fn message_of(e: &SpecError) -> &str {
    match e {
        SpecError::Parse { message, .. } | SpecError::Syntax { message, .. } | SpecError::Invalid { message, .. } => {
            message
        }
    }
}

/// Splits on whitespace outside `[...]`, `{...}` and quotes.
fn split_pairs(args: &str) -> Result<Vec<&str>, SpecError> {
    let mut pairs = Vec::new();
    let mut depth: Vec<char> = Vec::new();
    let mut quote: Option<char> = None;
    let mut start: Option<usize> = None;
    for (i, c) in args.char_indices() {
        if let Some(q) = quote {
            if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            c if c.is_whitespace() && depth.is_empty() => {
                if let Some(s) = start.take() {
                    pairs.push(&args[s..i]);
                }
                continue;
            }
            '"' | '\'' => quote = Some(c),
            '[' => depth.push(']'),
            '{' => depth.push('}'),
            // A closer must match the innermost opener (the guard pops it).
            ']' | '}' if depth.pop() != Some(c) => {
                return Err(unbalanced(args, &format!("unexpected `{c}`")));
            }
            _ => {}
        }
        start.get_or_insert(i);
    }
    if let Some(q) = quote {
        return Err(unbalanced(args, &format!("unclosed {q}")));
    }
    if let Some(close) = depth.last() {
        return Err(unbalanced(args, &format!("missing `{close}`")));
    }
    pairs.extend(start.map(|s| &args[s..]));
    Ok(pairs)
}

fn unbalanced(args: &str, problem: &str) -> SpecError {
    SpecError::Parse { file: SOURCE.into(), message: format!("{problem} in {args:?}") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::spec::{Gpus, ModelName};

    fn spec() -> Spec {
        Spec { dataset: "emoji".into(), ..Spec::default() }
    }

    #[test]
    fn splits_outside_brackets_and_quotes() {
        let got = split_pairs("  a=1 b=[1, 2]\tc='x y' d={k: v, z: [1]} e=\"q\" ").unwrap();
        assert_eq!(got, vec!["a=1", "b=[1, 2]", "c='x y'", "d={k: v, z: [1]}", "e=\"q\""]);
        assert!(split_pairs("").unwrap().is_empty());
        for bad in ["a=[1", "a=1]", "a='x", "a={b: [1}]"] {
            assert!(split_pairs(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn values_are_typed_yaml() {
        let s = apply_overrides(
            &spec(),
            "optimizer.lr=1e-3 model=resnet34 augment.hflip=false augment.random_resized_crop=[0.5, 1.0] \
             memo='two words' epochs=3 resources.gpus=0 optimizer.name=sgd epochs=4",
        )
        .unwrap();
        assert_eq!(s.optimizer.lr, 0.001);
        assert_eq!(s.model, ModelName::Resnet34);
        assert!(!s.augment.hflip);
        assert_eq!(s.augment.random_resized_crop, Some([0.5, 1.0]));
        assert_eq!(s.memo, "two words");
        assert_eq!(s.epochs, 4, "a later key wins");
        assert_eq!(s.resources.gpus, Gpus::Count(0));
        let s = apply_overrides(&s, "augment.random_resized_crop= resources.gpus=auto").unwrap();
        assert_eq!(s.augment.random_resized_crop, None);
        assert_eq!(s.resources.gpus, Gpus::Auto);
        assert_eq!(apply_overrides(&spec(), "").unwrap(), spec());
    }

    #[test]
    fn optional_sections_are_created_by_their_fields() {
        use crate::core::spec::{Ema, Mix};
        let s = apply_overrides(&spec(), "ema.decay=0.99 augment.mixup.alpha=0.2 augment.cutmix={alpha: 1, prob: 0.5}")
            .unwrap();
        assert_eq!(s.ema, Some(Ema { decay: 0.99 }));
        assert_eq!(s.augment.mixup, Some(Mix { alpha: 0.2, prob: 1.0 }), "the rest of a new section: its defaults");
        assert_eq!(s.augment.cutmix, Some(Mix { alpha: 1.0, prob: 0.5 }));
        let s = apply_overrides(&s, "ema= augment.mixup.prob=0.25").unwrap();
        assert_eq!((s.ema, s.augment.mixup), (None, Some(Mix { alpha: 0.2, prob: 0.25 })));
        let e = apply_overrides(&spec(), "ema.decay=1").unwrap_err().to_string();
        assert!(e.starts_with("-a: field `ema.decay`: 1 must be in (0, 1)"), "{e}");
        let e = apply_overrides(&spec(), "augment.cutmix.alpha=0").unwrap_err().to_string();
        assert!(e.starts_with("-a: field `augment.cutmix.alpha`: 0 must be > 0"), "{e}");
    }

    #[test]
    fn errors_name_the_key_and_problem() {
        let cases = [
            ("optimizer.lrr=0.1", "-a: field `optimizer.lrr`: unknown field `lrr`"),
            ("epochs=many", "-a: field `epochs`: invalid type"),
            ("epochs=1.5", "-a: field `epochs`: invalid type"),
            ("optimizer.lr=-1", "-a: field `optimizer.lr`: -1 must be"),
            ("model=vgg", "-a: field `model`: unknown variant `vgg`"),
            ("dataset=../etc", "-a: field `dataset`"),
            ("lr", "-a: \"lr\" is not key=value"),
            ("=3", "-a: field ``"),
            ("grid.model=[resnet18]", "-a: field `grid.model`: `grid` cannot be set"),
            ("epochs=[1", "-a: missing `]`"),
            ("epochs={a: 1, a: 2}", "-a: field `epochs`: \"{a: 1, a: 2}\" is not a YAML value"),
            ("resources.gpus=2", "-a: field `resources.gpus`: 2: multi-GPU"),
        ];
        for (args, want) in cases {
            let e = apply_overrides(&spec(), args).unwrap_err().to_string();
            assert!(e.starts_with(want), "{args}: {e}");
        }
    }
}
