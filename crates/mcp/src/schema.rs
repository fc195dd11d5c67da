//! Makes the generated JSON Schemas as small as what they say: an agent pays for the tool list
//! in every session, so every byte that neither a model nor a client uses goes.
//!
//! Dropped everywhere: `$schema`, the type names schemars puts in `title`, integer `format`s
//! and the `minimum: 0` of unsigned types, `default: null`. Enums of documented constants
//! become one `enum` whose values are explained in the field's description. Definitions used
//! once are inlined. In input schemas an optional field is simply not `required` (a `null`
//! alternative adds nothing a caller needs) and `additionalProperties: false` goes (the server
//! refuses an unknown argument by name); in output schemas nullability stays, since clients
//! validate results against it; descriptions and `required` go: the model reads the result's
//! text, and every result has all its fields.

use serde_json::{Map, Value};

/// Which side of a tool the schema describes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Input,
    Output,
}

/// The schema, compacted.
pub(crate) fn compact(mut schema: Map<String, Value>, side: Side) -> Map<String, Value> {
    inline_single_use_defs(&mut schema);
    compact_schema(&mut schema, side);
    schema
}

fn compact_schema(schema: &mut Map<String, Value>, side: Side) {
    schema.remove("$schema");
    schema.remove("title");
    schema.remove("format");
    if schema.get("default").is_some_and(Value::is_null) {
        schema.remove("default");
    }
    if side == Side::Output {
        schema.remove("description");
        // A result always carries every field (null where it has none): a `required` list
        // would only repeat the property names.
        schema.remove("required");
    }
    if side == Side::Input {
        drop_null_alternative(schema);
        // Unknown arguments are refused by name anyway; models do not invent fields.
        if schema.get("additionalProperties") == Some(&Value::Bool(false)) {
            schema.remove("additionalProperties");
        }
    }
    if is_integer(schema) && schema.get("minimum").and_then(Value::as_f64) == Some(0.0) {
        schema.remove("minimum");
    }
    constants_to_enum(schema, side);
    for key in ["properties", "$defs", "patternProperties"] {
        if let Some(Value::Object(map)) = schema.get_mut(key) {
            for sub in map.values_mut().filter_map(Value::as_object_mut) {
                compact_schema(sub, side);
            }
        }
    }
    for key in ["items", "additionalProperties", "not"] {
        if let Some(Value::Object(sub)) = schema.get_mut(key) {
            compact_schema(sub, side);
        }
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(Value::Array(list)) = schema.get_mut(key) {
            for sub in list.iter_mut().filter_map(Value::as_object_mut) {
                compact_schema(sub, side);
            }
        }
    }
}

fn is_integer(schema: &Map<String, Value>) -> bool {
    match schema.get("type") {
        Some(Value::String(t)) => t == "integer",
        Some(Value::Array(ts)) => ts.iter().any(|t| t == "integer"),
        _ => false,
    }
}

/// `type: [T, "null"]` becomes `type: T`; `anyOf: [S, {type: null}]` becomes S.
fn drop_null_alternative(schema: &mut Map<String, Value>) {
    if let Some(Value::Array(types)) = schema.get_mut("type") {
        types.retain(|t| t != "null");
        if types.len() == 1 {
            let only = types.remove(0);
            schema.insert("type".into(), only);
        }
    }
    let Some(Value::Array(alternatives)) = schema.get("anyOf") else { return };
    let not_null: Vec<&Value> = alternatives.iter().filter(|s| s.get("type") != Some(&Value::from("null"))).collect();
    if let [Value::Object(only)] = not_null.as_slice() {
        let only = only.clone();
        schema.remove("anyOf");
        for (k, v) in only {
            schema.entry(k).or_insert(v);
        }
    }
}

/// `oneOf: [{const: a, description: ..}, ..]` becomes `enum: [a, ..]`, the constants'
/// descriptions appended to the schema's own (input only; output keeps no descriptions).
fn constants_to_enum(schema: &mut Map<String, Value>, side: Side) {
    let Some(Value::Array(variants)) = schema.get("oneOf") else { return };
    let mut values = Vec::new();
    let mut notes = Vec::new();
    for v in variants {
        let Some(c) = v.get("const").and_then(Value::as_str) else { return };
        values.push(Value::from(c));
        if let Some(d) = v.get("description").and_then(Value::as_str) {
            notes.push(format!("`{c}`: {d}"));
        }
    }
    schema.remove("oneOf");
    schema.insert("type".into(), "string".into());
    schema.insert("enum".into(), Value::Array(values));
    if side == Side::Input && !notes.is_empty() {
        let own = schema.get("description").and_then(Value::as_str).map(|d| format!("{d} ")).unwrap_or_default();
        schema.insert("description".into(), format!("{own}{}", notes.join("; ")).into());
    }
}

/// Replaces each `$ref` to a definition used only once by the definition itself (its siblings,
/// such as a description, kept), and drops `$defs` when nothing refers to it any more.
fn inline_single_use_defs(schema: &mut Map<String, Value>) {
    let Some(Value::Object(defs)) = schema.remove("$defs") else { return };
    let mut uses = std::collections::HashMap::new();
    count_refs(&Value::Object(schema.clone()), &mut uses);
    for def in defs.values() {
        count_refs(def, &mut uses);
    }
    let inline: Map<String, Value> = defs
        .iter()
        .filter(|(name, _)| uses.get(&reference(name)) == Some(&1))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut kept: Map<String, Value> = defs.into_iter().filter(|(name, _)| !inline.contains_key(name)).collect();
    let mut root = Value::Object(std::mem::take(schema));
    replace_refs(&mut root, &inline);
    for def in kept.values_mut() {
        replace_refs(def, &inline);
    }
    let Value::Object(root) = root else { unreachable!("the root stays an object") };
    *schema = root;
    if !kept.is_empty() {
        schema.insert("$defs".into(), Value::Object(kept));
    }
}

fn reference(name: &str) -> String {
    format!("#/$defs/{name}")
}

fn count_refs(value: &Value, uses: &mut std::collections::HashMap<String, usize>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref") {
                *uses.entry(r.clone()).or_default() += 1;
            }
            map.values().for_each(|v| count_refs(v, uses));
        }
        Value::Array(list) => list.iter().for_each(|v| count_refs(v, uses)),
        _ => {}
    }
}

fn replace_refs(value: &mut Value, inline: &Map<String, Value>) {
    match value {
        Value::Object(map) => {
            let target = map.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix("#/$defs/"));
            if let Some(Value::Object(def)) = target.and_then(|name| inline.get(name)) {
                let def = def.clone();
                map.remove("$ref");
                for (k, v) in def {
                    map.entry(k).or_insert(v);
                }
                // A definition inlined here may itself refer to another used once.
                replace_refs(value, inline);
                return;
            }
            map.values_mut().for_each(|v| replace_refs(v, inline));
        }
        Value::Array(list) => list.iter_mut().for_each(|v| replace_refs(v, inline)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(v: Value, side: Side) -> Value {
        let Value::Object(m) = v else { panic!("an object") };
        Value::Object(compact(m, side))
    }

    #[test]
    fn input_drops_noise_and_keeps_meaning() {
        let got = run(
            json!({
                "$schema": "x", "title": "P", "type": "object", "additionalProperties": false,
                "$defs": {"Mode": {"description": "The mode.", "oneOf": [
                    {"const": "a", "description": "First.", "type": "string"},
                    {"const": "b", "type": "string"}]}},
                "properties": {
                    "n": {"type": ["integer", "null"], "format": "uint64", "minimum": 0, "default": null, "description": "N."},
                    "t": {"type": ["number", "null"], "format": "double", "minimum": 0.001},
                    "title": {"type": "string", "description": "A field named title stays."},
                    "mode": {"$ref": "#/$defs/Mode"}
                },
                "required": ["title"]
            }),
            Side::Input,
        );
        assert_eq!(
            got,
            json!({
                "type": "object",
                "properties": {
                    "n": {"type": "integer", "description": "N."},
                    "t": {"type": "number", "minimum": 0.001},
                    "title": {"type": "string", "description": "A field named title stays."},
                    "mode": {"type": "string", "enum": ["a", "b"], "description": "The mode. `a`: First."}
                },
                "required": ["title"]
            })
        );
    }

    #[test]
    fn output_keeps_nullability_and_shared_definitions() {
        let got = run(
            json!({
                "type": "object",
                "$defs": {"G": {"type": "object", "description": "A group.", "properties": {"c": {"type": "integer", "format": "uint64", "minimum": 0}}}},
                "properties": {
                    "code": {"type": ["integer", "null"], "format": "int32", "description": "Exit."},
                    "a": {"type": "array", "items": {"$ref": "#/$defs/G"}},
                    "b": {"$ref": "#/$defs/G"}
                }
            }),
            Side::Output,
        );
        assert_eq!(
            got,
            json!({
                "type": "object",
                "$defs": {"G": {"type": "object", "properties": {"c": {"type": "integer"}}}},
                "properties": {
                    "code": {"type": ["integer", "null"]},
                    "a": {"type": "array", "items": {"$ref": "#/$defs/G"}},
                    "b": {"$ref": "#/$defs/G"}
                }
            })
        );
    }
}
