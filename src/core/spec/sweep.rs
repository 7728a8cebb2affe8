//! Sweeps: a spec with `grid:` or `random:` becomes one concrete spec per session, in a deterministic order.
//!
//! - `grid: {model: [resnet18, resnet34], optimizer.lr: [0.001, 0.002]}`: every combination; keys in alphabetical
//!   order, the last key varying fastest.
//! - `random: {count: 8, seed: 1, space: {optimizer.lr: {log_uniform: [0.0001, 0.01]}}}`: `count` points drawn with a
//!   ChaCha8 generator seeded by `seed` (the same spec always gives the same sessions). Floats are rounded to 4
//!   significant digits; a draw for an integer field (`epochs: {uniform: [10, 30]}`) is rounded to an integer.
//!
//! Each point is set through [`Spec::with_field`] (so a key that names no field, or a value of the wrong type, is an
//! error naming the sweep key) and the result is validated. Expanded specs carry no sweep, and their memo says which
//! point they are.
//!
//! In the JSON Schema ([`write_schema`]): a grid key or random key is one of the spec's field paths (every other key
//! is refused), a grid list holds 1 to [`MAX_SWEEP_SESSIONS`] values each valid for that field (its schema by
//! reference), a `choice` likewise, `log_uniform` bounds are > 0, and `random.count` is in range. What is checked only
//! when the sweep expands is in [`beyond_schema`]: the number of grid combinations, and values drawn from `uniform` or
//! `log_uniform` (their bounds' order, and each draw as the field's value).

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};

use super::field::{SWEEP_FIELDS, check_path, relabel};
use super::{Distribution, RandomSweep, Spec, SpecError};
use crate::core::rule::{self, Check, Rule};

/// The most sessions one sweep may queue; a bigger sweep is refused as a likely mistake.
pub const MAX_SWEEP_SESSIONS: usize = 1000;

/// One sweep point: (label as the user wrote it, field path, value).
type Point = Vec<(String, String, Value)>;

/// The rules of a `random:` section that are a field's value (the rest of a sweep is structure, checked below).
const RANDOM_RULES: &[Rule<RandomSweep>] = &[Rule {
    path: "count",
    check: Check::Count { get: |r| Some(r.count.into()), min: 1, max: MAX_SWEEP_SESSIONS as u64 },
    message: "{value} is out of range {range}",
}];

/// What [`validate`] and [`Spec::expand`] refuse in a sweep that the JSON Schema cannot say, as (field, rule). A
/// field `random.space.*` is any key of the space.
pub(crate) fn beyond_schema() -> Vec<(String, String)> {
    vec![
        (
            "grid".into(),
            format!(
                "at most {MAX_SWEEP_SESSIONS} combinations (the product of the lists' lengths; the schema bounds \
                 each list)"
            ),
        ),
        (
            "random.space.*".into(),
            "values drawn from `uniform` or `log_uniform`: low <= high, and each draw is checked as the field's value \
             when the sweep expands"
                .into(),
        ),
    ]
}

/// Writes the sweep's shape into the spec's JSON Schema: grid and random keys are field paths, grid values and
/// choices are valid values of their field, `log_uniform` bounds are > 0, `random.count` is in range.
pub(crate) fn write_schema(schema: &mut Value) -> Vec<String> {
    let fields = rule::field_paths(schema, &SWEEP_FIELDS);
    let mut missing = rule::write(schema, "random", RANDOM_RULES);
    let grid: Map<String, Value> = fields
        .iter()
        .map(|(path, at)| {
            let values = json!({
                "type": "array", "minItems": 1, "maxItems": MAX_SWEEP_SESSIONS, "items": {"$ref": format!("#{at}")}
            });
            (path.clone(), values)
        })
        .collect();
    match schema.pointer_mut("/properties/grid") {
        Some(Value::Object(node)) => {
            node.insert("properties".into(), Value::Object(grid));
            node.insert("additionalProperties".into(), json!(false));
            node.insert("minProperties".into(), json!(1));
        }
        _ => missing.push("grid".into()),
    }
    let space_at = rule::locate(schema, "random.space").map(|(_, at)| at);
    let Some(Value::Object(space)) = space_at.as_deref().and_then(|at| schema.pointer_mut(at)) else {
        missing.push("random.space".into());
        return missing;
    };
    let distribution = space.get("additionalProperties").and_then(|d| d.get("$ref")).cloned().unwrap_or_default();
    let keys: Map<String, Value> = fields
        .iter()
        .map(|(path, at)| {
            let choice = json!({"$ref": distribution, "properties": {"choice": {"items": {"$ref": format!("#{at}")}}}});
            (path.clone(), choice)
        })
        .collect();
    space.insert("properties".into(), Value::Object(keys));
    space.insert("additionalProperties".into(), json!(false));
    space.insert("minProperties".into(), json!(1));
    let kinds = distribution.as_str().and_then(|r| r.strip_prefix('#')).map(|at| format!("{at}/oneOf"));
    let Some(Value::Array(kinds)) = kinds.and_then(|at| schema.pointer_mut(&at)) else {
        missing.push("random.space distributions".into());
        return missing;
    };
    for kind in kinds.iter_mut().filter_map(|k| k.get_mut("properties")).filter_map(Value::as_object_mut) {
        if let Some(Value::Object(bounds)) = kind.get_mut("log_uniform") {
            bounds.insert("items".into(), json!({"type": "number", "exclusiveMinimum": 0}));
        }
        if let Some(Value::Object(choices)) = kind.get_mut("choice") {
            choices.insert("minItems".into(), json!(1));
        }
    }
    missing
}

/// Structural checks on `grid:` / `random:` (run by [`Spec::validate`]); whether each key names a field of the right
/// type is known only when the points are set, in [`Spec::expand`].
pub(crate) fn validate(spec: &Spec, file: &str) -> Result<(), SpecError> {
    if let Some(grid) = &spec.grid {
        if grid.is_empty() {
            return Err(SpecError::invalid(file, "grid", "has no keys (write `field.path: [values]`)"));
        }
        let mut sessions: usize = 1;
        for (key, values) in grid {
            let label = format!("grid.{key}");
            check_path(file, &label, key)?;
            if values.is_empty() {
                return Err(SpecError::invalid(file, &label, "has no values"));
            }
            sessions = sessions.saturating_mul(values.len());
        }
        if sessions > MAX_SWEEP_SESSIONS {
            return Err(SpecError::invalid(
                file,
                "grid",
                format!("{sessions} combinations; a sweep may queue at most {MAX_SWEEP_SESSIONS} sessions"),
            ));
        }
    }
    if let Some(random) = &spec.random {
        for rule in RANDOM_RULES {
            rule.check(random)
                .map_err(|message| SpecError::invalid(file, &format!("random.{}", rule.path), message))?;
        }
        if random.space.is_empty() {
            return Err(SpecError::invalid(
                file,
                "random.space",
                "has no keys (write `field.path: {uniform: [a, b]}`)",
            ));
        }
        for (key, distribution) in &random.space {
            let label = format!("random.space.{key}");
            check_path(file, &label, key)?;
            let bad = |message: String| Err(SpecError::invalid(file, &label, message));
            match distribution {
                Distribution::Uniform([lo, hi]) if !(lo.is_finite() && hi.is_finite() && lo <= hi) => {
                    return bad(format!("uniform [{lo}, {hi}] needs finite bounds, low <= high"));
                }
                Distribution::LogUniform([lo, hi]) if !(lo.is_finite() && hi.is_finite() && *lo > 0.0 && lo <= hi) => {
                    return bad(format!("log_uniform [{lo}, {hi}] needs finite bounds, 0 < low <= high"));
                }
                Distribution::Choice(values) if values.is_empty() => return bad("choice has no values".into()),
                _ => {}
            }
        }
    }
    Ok(())
}

impl Spec {
    /// The concrete specs this spec queues: itself when it has no sweep, else one per sweep point. Each is validated
    /// and has `grid` and `random` unset.
    pub fn expand(&self, file: &str) -> Result<Vec<Spec>, SpecError> {
        self.validate(file)?;
        if self.searcher.is_some() && self.grid.is_none() && self.random.is_none() {
            return Err(SpecError::invalid(
                file,
                "searcher",
                "needs a sweep (`grid:` or `random:`): it chooses among a sweep's trials",
            ));
        }
        let base = Spec { grid: None, random: None, ..self.clone() };
        let points = match (&self.grid, &self.random) {
            (Some(grid), _) => grid_points(grid),
            (None, Some(random)) => random_points(&base.to_json(file)?, random),
            (None, None) => return Ok(vec![base]),
        };
        points.into_iter().map(|point| apply(&base, file, point)).collect()
    }

    /// How many sessions [`Spec::expand`] gives, without expanding (a valid spec's sweep is at most
    /// [`MAX_SWEEP_SESSIONS`]).
    pub fn session_count(&self) -> usize {
        match (&self.grid, &self.random) {
            (Some(grid), _) => grid.values().fold(1usize, |n, v| n.saturating_mul(v.len())),
            (None, Some(random)) => random.count as usize,
            (None, None) => 1,
        }
    }
}

/// Every combination, keys in order, the last varying fastest.
fn grid_points(grid: &BTreeMap<String, Vec<Value>>) -> Vec<Point> {
    let mut points: Vec<Point> = vec![vec![]];
    for (key, values) in grid {
        points = points
            .into_iter()
            .flat_map(|point| {
                values.iter().map(move |v| {
                    let mut next = point.clone();
                    next.push((format!("grid.{key}"), key.clone(), v.clone()));
                    next
                })
            })
            .collect();
    }
    points
}

/// `count` points; for each, one draw per key in key order.
fn random_points(base: &Value, random: &RandomSweep) -> Vec<Point> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(random.seed);
    (0..random.count)
        .map(|_| {
            random
                .space
                .iter()
                .map(|(key, distribution)| {
                    let integer = Spec::json_at(base, key).is_some_and(|v| v.is_u64() || v.is_i64());
                    (format!("random.space.{key}"), key.clone(), draw(&mut rng, distribution, integer))
                })
                .collect()
        })
        .collect()
}

fn draw(rng: &mut rand_chacha::ChaCha8Rng, distribution: &Distribution, integer: bool) -> Value {
    let x = match distribution {
        Distribution::Choice(values) => return values[rng.random_range(0..values.len())].clone(),
        Distribution::Uniform([lo, hi]) => lo + rng.random::<f64>() * (hi - lo),
        Distribution::LogUniform([lo, hi]) => (lo.ln() + rng.random::<f64>() * (hi.ln() - lo.ln())).exp(),
    };
    if integer {
        Value::from(x.round() as i64)
    } else {
        let rounded = format!("{x:.3e}").parse::<f64>().unwrap_or(x);
        serde_json::Number::from_f64(rounded).map_or(Value::Null, Value::Number)
    }
}

/// Sets one point's values, validates, and notes the point in the memo.
fn apply(base: &Spec, file: &str, point: Point) -> Result<Spec, SpecError> {
    let mut spec = base.clone();
    for (label, path, value) in &point {
        spec = spec.with_field(file, label, path, value.clone())?;
    }
    let described: Vec<String> = point
        .iter()
        .map(|(_, path, value)| match value {
            Value::String(s) => format!("{path}={s}"),
            other => format!("{path}={other}"),
        })
        .collect();
    let described = described.join(" ");
    let set: Vec<(String, String)> = point.into_iter().map(|(label, path, _)| (label, path)).collect();
    spec.validate(file).map_err(|e| relabel(e, &set, &format!("at sweep point {described}")))?;
    let mut memo = if spec.memo.is_empty() { described } else { format!("{} [{described}]", spec.memo) };
    while memo.len() > super::MAX_MEMO_BYTES {
        memo.pop();
    }
    spec.memo = memo;
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::spec::ModelName;

    #[test]
    fn grid_gives_every_combination_in_order() {
        let text = "dataset: emoji\nmemo: lr sweep\ngrid:\n  optimizer.lr: [0.001, 0.002, 0.004]\n  \
                    model: [resnet18, resnet34]\n";
        let spec = Spec::parse("g.yaml", text).unwrap();
        assert_eq!(spec.session_count(), 6);
        let specs = spec.expand("g.yaml").unwrap();
        let got: Vec<(ModelName, f64)> = specs.iter().map(|s| (s.model, s.optimizer.lr)).collect();
        use ModelName::{Resnet18 as R18, Resnet34 as R34};
        let want = vec![(R18, 0.001), (R18, 0.002), (R18, 0.004), (R34, 0.001), (R34, 0.002), (R34, 0.004)];
        assert_eq!(got, want);
        assert!(specs.iter().all(|s| s.grid.is_none() && s.random.is_none()));
        assert_eq!(specs[1].memo, "lr sweep [model=resnet18 optimizer.lr=0.002]");
        assert_eq!(spec.expand("g.yaml").unwrap(), specs, "deterministic");
    }

    #[test]
    fn random_is_deterministic_from_its_seed_and_in_range() {
        let text = "dataset: emoji\nrandom:\n  count: 20\n  seed: 7\n  space:\n    \
                    optimizer.lr: {log_uniform: [0.0001, 0.01]}\n    epochs: {uniform: [5, 10]}\n    \
                    model: {choice: [resnet18, baseline_cnn]}\n    augment.color_jitter: {uniform: [0, 0.5]}\n";
        let spec = Spec::parse("r.yaml", text).unwrap();
        let a = spec.expand("r.yaml").unwrap();
        assert_eq!(a.len(), 20);
        assert_eq!(a, spec.expand("r.yaml").unwrap());
        for s in &a {
            assert!((0.0001..=0.01).contains(&s.optimizer.lr), "{}", s.optimizer.lr);
            assert!((5..=10).contains(&s.epochs), "{}", s.epochs);
            assert!((0.0..=0.5).contains(&s.augment.color_jitter));
            assert!(s.random.is_none());
        }
        assert!(
            a.iter().any(|s| s.model == ModelName::Resnet18) && a.iter().any(|s| s.model == ModelName::BaselineCnn)
        );
        let distinct: std::collections::BTreeSet<u64> = a.iter().map(|s| s.optimizer.lr.to_bits()).collect();
        assert!(distinct.len() > 15, "draws vary: {distinct:?}");
        let mut other = spec.clone();
        other.random.as_mut().unwrap().seed = 8;
        assert_ne!(other.expand("r.yaml").unwrap(), a, "another seed, other sessions");
    }

    #[test]
    fn bad_sweep_keys_and_values_name_the_key() {
        let cases = [
            ("grid: {optimizer.lrr: [0.1]}", "`grid.optimizer.lrr`", "unknown field `lrr`"),
            ("grid: {epochs: [ten]}", "`grid.epochs`", "invalid type"),
            ("grid: {optimizer.lr: [-1]}", "`grid.optimizer.lr`", "must be a number"),
            ("grid: {model: [resnet18, vgg]}", "`grid.model`", "unknown variant `vgg`"),
            ("grid: {epochs: []}", "`grid.epochs`", "no values"),
            ("grid: {}", "`grid`", "no keys"),
            ("grid: {grid.x: [1]}", "`grid.grid.x`", "cannot be set"),
            ("random: {count: 2, space: {optimizer.lrr: {uniform: [0, 1]}}}", "`random.space.optimizer.lrr`", "lrr"),
            ("random: {count: 0, space: {seed: {uniform: [0, 1]}}}", "`random.count`", "out of range"),
            ("random: {count: 2, space: {optimizer.lr: {log_uniform: [0, 1]}}}", "`random.space.optimizer.lr`", "0 <"),
            ("random: {count: 2, space: {optimizer.lr: {uniform: [1, 0]}}}", "`random.space.optimizer.lr`", "low <="),
            ("random: {count: 2, space: {model: {choice: []}}}", "`random.space.model`", "no values"),
            ("random: {count: 2, space: {}}", "`random.space`", "no keys"),
            ("random: {count: 1001, space: {seed: {uniform: [0, 9]}}}", "`random.count`", "1..=1000"),
        ];
        for (sweep, field, problem) in cases {
            let text = format!("dataset: emoji\n{sweep}\n");
            let e = Spec::parse("exp.yaml", &text).and_then(|s| s.expand("exp.yaml")).unwrap_err().to_string();
            assert!(e.starts_with("exp.yaml: field "), "{sweep}: {e}");
            assert!(e.contains(field) && e.contains(problem), "{sweep}: {e}");
        }
    }

    #[test]
    fn huge_sweeps_are_refused() {
        let values: Vec<String> = (1..=40).map(|i| i.to_string()).collect();
        let list = values.join(", ");
        let text = format!("dataset: emoji\ngrid: {{epochs: [{list}], seed: [{list}]}}\n");
        let e = Spec::parse("big.yaml", &text).unwrap_err().to_string();
        assert!(e.contains("1600 combinations"), "{e}");
        let ok = format!("dataset: emoji\ngrid: {{epochs: [{list}], seed: [1, 2]}}\n");
        assert_eq!(Spec::parse("ok.yaml", &ok).unwrap().expand("ok.yaml").unwrap().len(), 80);
    }

    #[test]
    fn a_spec_without_sweep_expands_to_itself() {
        let spec = Spec::parse("a.yaml", "dataset: emoji\nmemo: one\n").unwrap();
        assert_eq!(spec.expand("a.yaml").unwrap(), vec![spec]);
    }
}
