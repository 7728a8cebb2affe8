//! The spec's JSON Schema (`rush spec schema`): the shape from the Rust types (schemars: fields, types, enums,
//! defaults, descriptions, no unknown fields), and every value rule from the same tables `Spec::validate` checks
//! (`rules::RULES`, the Slurm overrides' `OVERRIDE_RULES`, the sweep's): ranges, lengths, patterns, required fields,
//! `grid` xor `random`. Editors use it to check and complete specs (`# yaml-language-server: $schema=rush-spec.json`).
//!
//! Sweeps: a `grid:` or `random.space` key must be a field path, and each grid value or `choice` must be a valid value
//! of that field (by reference to the field's schema).
//!
//! What the schema cannot say, so a spec it accepts may still be refused (listed by [`beyond_schema`], which is also
//! in the schema's description and `rush spec schema --help`):
//! - `augment.random_resized_crop`: min <= max
//! - `schedule.min_lr`: at most `optimizer.lr`
//! - `schedule.milestones`: in increasing order (the schema says: distinct)
//! - `memo`: at most 4096 bytes of UTF-8 (the schema's maxLength counts characters)
//! - `slurm.time_limit`: each number fits in 64 bits
//! - `grid`: at most 1000 combinations (the schema bounds each list)
//! - `random.space.*`: values drawn from `uniform` or `log_uniform` (low <= high; each draw)
//!
//! These apply at a sweep point too (`grid.schedule.min_lr`).

use serde_json::{Value, json};

use crate::core::rule;

/// A rule the JSON Schema cannot express: rush refuses a spec that breaks it although the schema accepts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BeyondSchema {
    /// The field the refusal names (`random.space.*`: any key of the space).
    pub field: String,
    /// What is checked.
    pub rule: String,
}

/// Every rule beyond the schema, from the rule tables themselves.
pub fn beyond_schema() -> Vec<BeyondSchema> {
    let fields = super::rules::RULES.iter().filter_map(|r| Some((r.path.to_string(), r.check.beyond_schema()?)));
    let slurm = crate::core::slurm::OVERRIDE_RULES
        .iter()
        .filter_map(|r| Some((format!("slurm.{}", r.path), r.check.beyond_schema()?)));
    let searcher =
        super::SEARCHER_RULES.iter().filter_map(|r| Some((format!("searcher.{}", r.path), r.check.beyond_schema()?)));
    let needs = [(
        "searcher".to_string(),
        "only with a sweep (`grid:` or `random:`), `resume: true` and `checkpoints.keep_last: true`".to_string(),
    )];
    fields
        .chain(slurm)
        .chain(searcher)
        .chain(needs)
        .chain(super::sweep::beyond_schema())
        .map(|(field, rule)| BeyondSchema { field, rule })
        .collect()
}

/// The JSON Schema (draft 2020-12) of a spec file: every field, its type, default, description and allowed values;
/// unknown fields are not allowed. The description lists what only rush checks ([`beyond_schema`]).
pub fn json_schema() -> Value {
    let (schema, _) = build();
    schema
}

/// The schema, and the rule paths that named no field (empty; a unit test keeps it so).
fn build() -> (Value, Vec<String>) {
    let mut schema = schemars::schema_for!(super::Spec).to_value();
    integer_limits(&mut schema);
    let mut missing = rule::write(&mut schema, "", super::rules::RULES);
    missing.extend(rule::write(&mut schema, "slurm", crate::core::slurm::OVERRIDE_RULES));
    missing.extend(rule::write(&mut schema, "searcher", super::SEARCHER_RULES));
    missing.extend(super::sweep::write_schema(&mut schema));
    if let Some(root) = schema.as_object_mut() {
        root.insert("title".into(), "rush experiment spec".into());
        root.insert("description".into(), description().into());
    }
    (schema, missing)
}

/// The schema's description: what a spec is, and what only rush checks.
pub fn description() -> String {
    let beyond: Vec<String> = beyond_schema().iter().map(|b| format!("`{}`: {}", b.field, b.rule)).collect();
    format!(
        "A YAML file in experiments/ that rush queues as one training session, or several for a sweep. Checked by \
         rush but not by this schema: {}.",
        beyond.join("; ")
    )
}

/// Bounds of the Rust integer types (schemars writes only the format, which validators need not check), so a number
/// the parser would refuse as too big is refused here too.
fn integer_limits(node: &mut Value) {
    match node {
        Value::Object(map) => {
            let limits = match map.get("format").and_then(Value::as_str) {
                Some("uint32") => Some((json!(0), json!(u32::MAX))),
                Some("int32") => Some((json!(i32::MIN), json!(i32::MAX))),
                Some("uint64") => Some((json!(0), json!(u64::MAX))),
                Some("int64") => Some((json!(i64::MIN), json!(i64::MAX))),
                _ => None,
            };
            if let Some((min, max)) = limits {
                map.entry("minimum").or_insert(min);
                map.entry("maximum").or_insert(max);
            }
            map.values_mut().for_each(integer_limits);
        }
        Value::Array(list) => list.iter_mut().for_each(integer_limits),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::{Spec, rules::RULES};
    use crate::core::rule::Check;

    fn validator() -> jsonschema::Validator {
        jsonschema::validator_for(&super::json_schema()).expect("a valid JSON Schema")
    }

    #[test]
    fn schema_names_every_field_and_forbids_others() {
        let schema = super::json_schema();
        let props = schema["properties"].as_object().expect("properties");
        for field in ["dataset", "model", "optimizer", "grid", "random", "resources", "checkpoints"] {
            assert!(props.contains_key(field), "{field}");
        }
        assert_eq!(schema["additionalProperties"], false);
        assert_eq!(props["epochs"]["default"], 30);
        assert_eq!(schema["required"], serde_json::json!(["dataset"]));
    }

    #[test]
    fn every_rule_lands_on_a_field() {
        let (_, missing) = super::build();
        assert!(missing.is_empty(), "rules naming no field of the schema: {missing:?}");
    }

    #[test]
    fn a_negative_learning_rate_is_refused_by_the_schema_as_by_validate() {
        let v = validator();
        assert!(!v.is_valid(&json!({"dataset": "emoji", "optimizer": {"lr": -1}})));
        assert!(!v.is_valid(&json!({"dataset": "emoji", "optimizer": {"lr": 0}})));
        assert!(v.is_valid(&json!({"dataset": "emoji", "optimizer": {"lr": 10}})));
        let e = Spec::parse("a.yaml", "dataset: emoji\noptimizer: {lr: -1}\n").unwrap_err().to_string();
        assert_eq!(e, "a.yaml: field `optimizer.lr`: -1 must be a number in (0, 10]");
    }

    /// `{"dataset": "emoji"}` with the field at `path` set to `value`.
    fn spec_with(path: &str, value: serde_json::Value) -> serde_json::Value {
        let mut spec = json!({"dataset": "emoji"});
        let (sections, name) = path.rsplit_once('.').map_or((None, path), |(s, n)| (Some(s), n));
        let mut node = &mut spec;
        for key in sections.into_iter().flat_map(|s| s.split('.')) {
            node = node.as_object_mut().unwrap().entry(key.to_string()).or_insert(json!({}));
        }
        node.as_object_mut().unwrap().insert(name.to_string(), value);
        spec
    }

    /// For every range rule, values just inside and just outside: the schema and `validate` agree on each.
    #[test]
    fn schema_and_validate_agree_at_every_bound() {
        let v = validator();
        let mut checked = 0;
        for rule in RULES {
            let (inside, outside): (Vec<serde_json::Value>, Vec<serde_json::Value>) = match &rule.check {
                Check::Count { min, max, .. } => {
                    let mut out = vec![json!(max + 1)];
                    if *min > 0 {
                        out.push(json!(min - 1));
                    }
                    (vec![json!(min), json!(max)], out)
                }
                Check::Number { range, .. } | Check::NumberAtMost { range, .. } | Check::NumberBelow { range, .. } => {
                    use crate::core::rule::Bound;
                    let mut inside = vec![];
                    let mut outside = vec![];
                    for (bound, step) in [(range.low, -1e-6), (range.high, 1e-6)] {
                        match bound {
                            Bound::Closed(x) => {
                                inside.push(json!(x));
                                outside.push(json!(x + step));
                            }
                            Bound::Open(x) => {
                                inside.push(json!(x - step));
                                outside.push(json!(x));
                            }
                            Bound::Unbounded => {}
                        }
                    }
                    if let Check::NumberAtMost { .. } = rule.check {
                        inside.retain(|x| x.as_f64().is_some_and(|x| x <= 0.002));
                    }
                    if let Check::NumberBelow { .. } = rule.check {
                        // below the default of the other field (`epochs: 30`)
                        inside.retain(|x| x.as_f64().is_some_and(|x| x < 30.0));
                    }
                    (inside, outside)
                }
                Check::Pair { .. } => (vec![json!([0.5, 1.0])], vec![json!([0, 1]), json!([0.5, 1.5]), json!([0.5])]),
                Check::Increasing { .. } => (vec![json!([1, 5])], vec![json!([0, 5]), json!([5, 5])]),
                Check::Bytes { max, .. } => {
                    let n = *max as usize;
                    (vec![json!("x".repeat(n))], vec![json!("x".repeat(n + 1))])
                }
                Check::Text { .. } => (
                    vec![json!("emoji"), json!("a.b-c_d"), json!("x".repeat(64))],
                    ["", "../x", "a/b", ".h", "-x", "a..b", "a b", "emoji\n", "é"]
                        .iter()
                        .map(|s| json!(s))
                        .chain([json!("x".repeat(65))])
                        .collect(),
                ),
                Check::Required { .. } | Check::EachText { .. } | Check::NotBoth { .. } => continue,
            };
            for value in inside {
                let spec = spec_with(rule.path, value.clone());
                let yaml = spec.to_string();
                assert!(v.is_valid(&spec), "schema refused {}: {value}", rule.path);
                assert!(Spec::parse("s", &yaml).is_ok(), "validate refused {}: {value}", rule.path);
                checked += 1;
            }
            for value in outside {
                let spec = spec_with(rule.path, value.clone());
                let yaml = spec.to_string();
                assert!(!v.is_valid(&spec), "schema accepted {}: {value}", rule.path);
                assert!(Spec::parse("s", &yaml).is_err(), "validate accepted {}: {value}", rule.path);
                checked += 1;
            }
        }
        assert!(checked > 50, "{checked}");
        assert!(!v.is_valid(&json!({"dataset": "emoji", "grid": {"seed": [1]}, "random": {"count": 1, "space": {}}})));
        assert!(v.is_valid(&json!({"dataset": "emoji", "grid": {"seed": [1]}, "random": null})));
    }

    #[test]
    fn sweep_keys_and_values_follow_the_fields() {
        let v = validator();
        let ok = json!({"dataset": "emoji", "grid": {"optimizer.lr": [0.001, 0.01], "model": ["resnet18"]}});
        assert!(v.is_valid(&ok));
        for bad in [
            json!({"optimizer.lr": [-1]}),
            json!({"optimizer.lrr": [0.1]}),
            json!({"model": ["vgg"]}),
            json!({"epochs": []}),
            json!({}),
            json!({"grid.x": [1]}),
            json!({"optimizer": [{"lr": 0}]}),
            json!({"resources.gpus": [2]}),
        ] {
            assert!(!v.is_valid(&json!({"dataset": "emoji", "grid": bad})), "grid {bad}");
        }
        let random = |space| json!({"dataset": "emoji", "random": {"count": 2, "space": space}});
        assert!(v.is_valid(&random(json!({"optimizer.lr": {"log_uniform": [0.0001, 0.01]}}))));
        for bad in [
            json!({"optimizer.lr": {"log_uniform": [0, 1]}}),
            json!({"model": {"choice": ["vgg"]}}),
            json!({"model": {"choice": []}}),
            json!({"x.y": {"uniform": [0, 1]}}),
            json!({}),
        ] {
            assert!(!v.is_valid(&random(bad.clone())), "random {bad}");
        }
        assert!(
            !v.is_valid(&json!({"dataset": "emoji", "random": {"count": 0, "space": {"seed": {"uniform": [0, 9]}}}}))
        );
    }

    #[test]
    fn slurm_patterns_say_what_validate_does() {
        let v = validator();
        let cases = [
            ("partition", vec!["gpu", "a.b-c_d"], vec!["", "a b", "gpu\n", "x/y"]),
            ("memory", vec!["16G", "512M", "2048"], vec!["16GB", "G", "", "1.5G", "16G\n"]),
            (
                "time_limit",
                vec!["1", "30:00", "1:00:00", "2-12", "1-0:30", "0-0:0:1", "UNLIMITED", "Infinite", "+5"],
                vec!["0", "00:00", "0-0", "soon", "1-2-3", "1:2:3:4", "-5", "", "5\n", ":5"],
            ),
        ];
        for (field, good, bad) in cases {
            for value in good {
                let spec = json!({"dataset": "emoji", "slurm": {field: value}});
                assert!(v.is_valid(&spec), "schema refused slurm.{field}: {value:?}");
                assert!(Spec::parse("s", &spec.to_string()).is_ok(), "validate refused slurm.{field}: {value:?}");
            }
            for value in bad {
                let spec = json!({"dataset": "emoji", "slurm": {field: value}});
                assert!(!v.is_valid(&spec), "schema accepted slurm.{field}: {value:?}");
                assert!(Spec::parse("s", &spec.to_string()).is_err(), "validate accepted slurm.{field}: {value:?}");
            }
        }
        for (args, ok) in [(json!(["--qos=high"]), true), (json!(["qos"]), false), (json!(["--a\nb"]), false)] {
            let spec = json!({"dataset": "emoji", "slurm": {"extra_args": args, "cpus_per_task": 4}});
            assert_eq!(v.is_valid(&spec), ok, "{args}");
            assert_eq!(Spec::parse("s", &spec.to_string()).is_ok(), ok, "{args}");
        }
        assert!(!v.is_valid(&json!({"dataset": "emoji", "slurm": {"cpus_per_task": 0}})));
        // The searcher's ranges too, as `validate` has them.
        let asha = |searcher| json!({"dataset": "emoji", "grid": {"seed": [1, 2]}, "searcher": searcher});
        for (searcher, ok) in [
            (
                json!({"name": "asha", "metric": "val_loss", "mode": "min", "grace_epochs": 2, "reduction_factor": 4}),
                true,
            ),
            (json!({"max_concurrent": 4}), true),
            (json!({"reduction_factor": 1}), false),
            (json!({"grace_epochs": 0}), false),
            (json!({"max_concurrent": 0}), false),
            (json!({"name": "hyperband"}), false),
            (json!({"metric": "f1"}), false),
        ] {
            assert_eq!(v.is_valid(&asha(searcher.clone())), ok, "schema: {searcher}");
            assert_eq!(Spec::load("s", asha(searcher.clone()).to_string().as_bytes()).is_ok(), ok, "rush: {searcher}");
        }
    }

    #[test]
    fn the_rules_beyond_the_schema_are_named_in_its_description() {
        let beyond = super::beyond_schema();
        let fields: Vec<&str> = beyond.iter().map(|b| b.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "schedule.warmup_epochs",
                "augment.random_resized_crop",
                "schedule.min_lr",
                "schedule.milestones",
                "memo",
                "slurm.time_limit",
                "searcher",
                "grid",
                "random.space.*"
            ]
        );
        let description = super::json_schema()["description"].as_str().unwrap_or_default().to_string();
        for b in &beyond {
            assert!(description.contains(&format!("`{}`: {}", b.field, b.rule)), "{description}");
        }
    }
}
