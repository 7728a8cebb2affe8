//! Setting one field of a spec by its dotted path (`optimizer.lr`), shared by sweeps and `-a` overrides.
//!
//! The spec goes to JSON, the value is put at the path, and serde reads it back: `deny_unknown_fields` catches a path
//! that names no field and serde's types catch a value of the wrong type, so the path rules can never drift from the
//! struct. Errors name `label` (the sweep key as written, e.g. `grid.optimizer.lr`) rather than the bare path.

use serde_json::Value;

use super::{Spec, SpecError};

/// The top-level fields a sweep or an override may not set: a sweep inside a sweep makes no sense, nor does a
/// searcher that differs between the trials it compares.
pub(crate) const SWEEP_FIELDS: [&str; 3] = ["grid", "random", "searcher"];

/// Checks a dotted path's shape (`name` or `section.name`, letters, digits and `_`), not whether it names a field.
pub(crate) fn check_path(file: &str, label: &str, path: &str) -> Result<(), SpecError> {
    let segments: Vec<&str> = path.split('.').collect();
    if segments.iter().any(|s| s.is_empty() || !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')) {
        return Err(SpecError::invalid(
            file,
            label,
            format!("{path:?} is not a field path (dotted names like `optimizer.lr`)"),
        ));
    }
    if SWEEP_FIELDS.contains(&segments[0]) {
        return Err(SpecError::invalid(file, label, format!("`{}` cannot be set here", segments[0])));
    }
    Ok(())
}

impl Spec {
    /// This spec as JSON (the form sweeps and overrides edit).
    pub(crate) fn to_json(&self, file: &str) -> Result<Value, SpecError> {
        serde_json::to_value(self).map_err(|e| SpecError::Parse { file: file.to_string(), message: e.to_string() })
    }

    /// The current value at a dotted path, if the path exists.
    pub(crate) fn json_at<'a>(json: &'a Value, path: &str) -> Option<&'a Value> {
        path.split('.').try_fold(json, |node, key| node.get(key))
    }

    /// A copy of this spec with the field at `path` set to `value`. Not validated: callers validate once all fields of
    /// a sweep point or an override list are set.
    pub(crate) fn with_field(&self, file: &str, label: &str, path: &str, value: Value) -> Result<Spec, SpecError> {
        check_path(file, label, path)?;
        let mut json = self.to_json(file)?;
        let mut node = &mut json;
        let mut walked = String::new();
        let mut segments = path.split('.').peekable();
        let section = || {
            SpecError::invalid(
                file,
                label,
                format!("`{path}` is a section: give a mapping, or set one of its fields (`{path}.<field>`)"),
            )
        };
        // `null` for a section turns an optional one off (`ema=`); a section that must be there refuses it below.
        let mut section_off = false;
        while let Some(key) = segments.next() {
            let Value::Object(map) = node else {
                return Err(SpecError::invalid(file, label, format!("`{walked}` is a value, not a section")));
            };
            if segments.peek().is_none() {
                // serde would read a list as a struct's fields in order; a section takes a mapping only.
                if map.get(key).is_some_and(Value::is_object) && !value.is_object() {
                    if !value.is_null() {
                        return Err(section());
                    }
                    section_off = true;
                }
                map.insert(key.to_string(), value);
                break;
            }
            if !walked.is_empty() {
                walked.push('.');
            }
            walked.push_str(key);
            node = map.entry(key.to_string()).or_insert_with(|| Value::Object(Default::default()));
        }
        serde_json::from_value(json).map_err(|e| {
            if section_off {
                return section();
            }
            SpecError::invalid(file, label, super::words::did_you_mean(&super::words::plain_types(&e.to_string())))
        })
    }
}

/// Renames a validation error about one of the fields just set to the label it was set under, so
/// `grid: {optimizer.lr: [-1]}` is reported as `grid.optimizer.lr`, not as a field the user never wrote.
pub(crate) fn relabel(error: SpecError, set: &[(String, String)], context: &str) -> SpecError {
    match error {
        SpecError::Invalid { file, field, message } => match set.iter().find(|(_, path)| *path == field) {
            Some((label, _)) => SpecError::Invalid { file, field: label.clone(), message },
            None => SpecError::Invalid { file, field, message: format!("{message} ({context})") },
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::spec::ModelName;

    fn spec() -> Spec {
        Spec { dataset: "emoji".into(), ..Spec::default() }
    }

    #[test]
    fn sets_nested_and_top_level_fields() {
        let s = spec().with_field("a.yaml", "x", "optimizer.lr", Value::from(0.5)).unwrap();
        assert_eq!(s.optimizer.lr, 0.5);
        let s = s.with_field("a.yaml", "x", "model", Value::from("resnet50")).unwrap();
        assert_eq!(s.model, ModelName::Resnet50);
        assert_eq!(s.optimizer.lr, 0.5);
    }

    #[test]
    fn unknown_paths_and_wrong_types_name_the_label() {
        let e = spec().with_field("a.yaml", "grid.optimizer.lrr", "optimizer.lrr", Value::from(1)).unwrap_err();
        let text = e.to_string();
        assert!(text.starts_with("a.yaml: field `grid.optimizer.lrr`: unknown field `lrr`"), "{text}");
        let e = spec().with_field("a.yaml", "k", "nosuch.deep.path", Value::from(1)).unwrap_err().to_string();
        assert!(e.contains("unknown field `nosuch`"), "{e}");
        let e = spec().with_field("a.yaml", "k", "epochs", Value::from("many")).unwrap_err().to_string();
        assert!(e.contains("field `k`") && e.contains("invalid type"), "{e}");
        let e = spec().with_field("a.yaml", "k", "optimizer", serde_json::json!(["sgd"])).unwrap_err().to_string();
        assert!(e.contains("is a section"), "{e}");
        // `null` turns an optional section off, and is refused for one that must be there.
        let e = spec().with_field("a.yaml", "k", "optimizer", Value::Null).unwrap_err().to_string();
        assert!(e.contains("`optimizer` is a section"), "{e}");
        let on = spec().with_field("a.yaml", "k", "ema.decay", Value::from(0.9)).unwrap();
        assert_eq!(on.with_field("a.yaml", "k", "ema", Value::Null).unwrap().ema, None);
        let s = spec().with_field("a.yaml", "k", "optimizer", serde_json::json!({"name": "sgd"})).unwrap();
        assert_eq!((s.optimizer.name, s.optimizer.lr), (crate::core::spec::OptimizerName::Sgd, 0.002));
        let e = spec().with_field("a.yaml", "k", "model.depth", Value::from(3)).unwrap_err().to_string();
        assert!(e.contains("`model` is a value"), "{e}");
        for bad in ["", "a..b", ".a", "a.", "a b", "grid", "random.count", "../x"] {
            assert!(spec().with_field("a.yaml", "k", bad, Value::from(1)).is_err(), "{bad:?}");
        }
    }
}
