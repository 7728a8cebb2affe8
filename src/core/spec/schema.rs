//! The spec's JSON Schema (`rush spec schema`), derived from the Rust types so it cannot drift from the parser;
//! editors use it to check and complete specs (e.g. `# yaml-language-server: $schema=rush-spec.json`).

/// The JSON Schema (draft 2020-12) of a spec file: every field, its type, default and description; unknown fields are
/// not allowed. Range checks beyond types are [`super::Spec::validate`]'s job, so a spec the schema accepts may still
/// be refused with a message naming the field.
pub fn json_schema() -> serde_json::Value {
    let mut schema = schemars::schema_for!(super::Spec).to_value();
    if let Some(root) = schema.as_object_mut() {
        root.insert("title".into(), "rush experiment spec".into());
        root.insert("required".into(), serde_json::json!(["dataset"]));
        if let Some(dataset) = root.get_mut("properties").and_then(|p| p.get_mut("dataset")) {
            dataset.as_object_mut().map(|d| d.remove("default"));
        }
        root.insert(
            "description".into(),
            "A YAML file in experiments/ that rush queues as one training session, or several for a sweep.".into(),
        );
    }
    schema
}

#[cfg(test)]
mod tests {
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
}
