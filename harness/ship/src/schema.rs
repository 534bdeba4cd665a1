//! Filter configuration schemas: the JSON Schema a filter's configuration type derives
//! (`tollgate_sdk::schema`), stored by `cargo xtask build` in the module's custom section
//! [`SECTION`]; read back here from a module or an image layout, and used to check a manifest's
//! `pluginConfig` before the proxy refuses it at start-up ([`check`]).
//!
//! [`check`] implements the part of JSON Schema (draft 2020-12) that `schemars` emits for serde
//! types: `$ref` into `$defs`, `type` (one or several), `properties`, `required`,
//! `additionalProperties`, `items`, `enum`, `const`, `oneOf`/`anyOf`/`allOf`, numeric bounds
//! and `format`s `uint*`/`int*`, string lengths and `pattern`. Each error starts with the path
//! of the field it is about.

use serde_json::Value;

use super::ShipError;
use super::validate::FieldError;

/// The custom section that holds a module's configuration schema (UTF-8 JSON); the same name
/// as `tollgate_sdk::schema::SECTION`.
pub const SECTION: &str = "tollgate.config_schema";

/// The configuration schema stored in a module, `None` when it has none.
pub fn from_module(name: &str, wasm: &[u8]) -> Result<Option<Value>, ShipError> {
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        let payload =
            payload.map_err(|e| ShipError::invalid(name, format!("not a wasm module: {e}")))?;
        if let wasmparser::Payload::CustomSection(section) = payload
            && section.name() == SECTION
        {
            let schema = serde_json::from_slice(section.data()).map_err(|e| {
                ShipError::invalid(name, format!("custom section {SECTION} is not JSON: {e}"))
            })?;
            return Ok(Some(schema));
        }
    }
    Ok(None)
}

/// Every way `value` (at `path`, e.g. `spec.pluginConfig`) breaks `schema`; empty when it fits.
pub fn check(schema: &Value, value: &Value, path: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    Checker { root: schema }.check(schema, value, path, &mut errors, 0);
    errors
}

struct Checker<'a> {
    root: &'a Value,
}

/// Deeper than this, `$ref`s are taken to loop.
const MAX_DEPTH: usize = 128;

impl Checker<'_> {
    fn resolve<'s>(&'s self, schema: &'s Value) -> &'s Value {
        let mut schema = schema;
        for _ in 0..16 {
            let Some(reference) = schema.get("$ref").and_then(Value::as_str) else {
                break;
            };
            let target = reference
                .strip_prefix('#')
                .and_then(|pointer| self.root.pointer(pointer));
            match target {
                Some(target) => schema = target,
                None => break,
            }
        }
        schema
    }

    fn check(
        &self,
        schema: &Value,
        value: &Value,
        path: &str,
        errors: &mut Vec<FieldError>,
        depth: usize,
    ) {
        if depth > MAX_DEPTH {
            push(errors, path, format!("{path}: the schema nests too deeply"));
            return;
        }
        let schema = self.resolve(schema);
        match schema {
            Value::Bool(true) => return,
            Value::Bool(false) => {
                push(errors, path, format!("{path}: no value is allowed here"));
                return;
            }
            _ => {}
        }
        if let Some(types) = schema.get("type") {
            let allowed: Vec<&str> = match types {
                Value::String(t) => vec![t.as_str()],
                Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            if !allowed.is_empty() && !allowed.iter().any(|t| has_type(value, t)) {
                push(
                    errors,
                    path,
                    format!(
                        "{path}: expected {}, found {}",
                        allowed.join(" or "),
                        describe(value)
                    ),
                );
                return;
            }
        }
        if let Some(constant) = schema.get("const")
            && constant != value
        {
            push(
                errors,
                path,
                format!("{path}: must be {constant}, found {value}"),
            );
            return;
        }
        if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
            && !allowed.contains(value)
        {
            let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
            push(
                errors,
                path,
                format!("{path}: {value} is not one of {}", list.join(", ")),
            );
            return;
        }
        for sub in schema
            .get("allOf")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            self.check(sub, value, path, errors, depth + 1);
        }
        for key in ["oneOf", "anyOf"] {
            if let Some(options) = schema.get(key).and_then(Value::as_array) {
                self.check_alternatives(key, options, value, path, errors, depth);
            }
        }
        match value {
            Value::Object(map) => self.check_object(schema, map, path, errors, depth),
            Value::Array(items) => {
                if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
                    && (items.len() as u64) < min
                {
                    push(
                        errors,
                        path,
                        format!("{path}: needs at least {min} item(s)"),
                    );
                }
                if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
                    && items.len() as u64 > max
                {
                    push(errors, path, format!("{path}: at most {max} item(s)"));
                }
                if let Some(item_schema) = schema.get("items") {
                    for (i, item) in items.iter().enumerate() {
                        self.check(
                            item_schema,
                            item,
                            &format!("{path}[{i}]"),
                            errors,
                            depth + 1,
                        );
                    }
                }
            }
            Value::String(s) => check_string(schema, s, path, errors),
            Value::Number(_) => check_number(schema, value, path, errors),
            _ => {}
        }
    }

    /// `oneOf`/`anyOf`: the value must fit one of the options; when none fits, the errors of
    /// the closest option (an object option whose keys the value uses) are reported.
    fn check_alternatives(
        &self,
        key: &str,
        options: &[Value],
        value: &Value,
        path: &str,
        errors: &mut Vec<FieldError>,
        depth: usize,
    ) {
        let mut attempts = Vec::new();
        for option in options {
            let mut option_errors = Vec::new();
            self.check(option, value, path, &mut option_errors, depth + 1);
            if option_errors.is_empty() {
                if key == "anyOf" {
                    return;
                }
                attempts.push(None);
            } else {
                attempts.push(Some(option_errors));
            }
        }
        let fits = attempts.iter().filter(|a| a.is_none()).count();
        if fits == 1 || (key == "anyOf" && fits > 0) {
            return;
        }
        if fits > 1 {
            push(
                errors,
                path,
                format!("{path}: matches more than one of the allowed forms"),
            );
            return;
        }
        // The closest option: for an object, one whose properties the object uses (fewest
        // errors first); otherwise none is close and the forms are listed.
        let closest = options
            .iter()
            .zip(attempts)
            .filter_map(|(option, attempt)| {
                let option = self.resolve(option);
                let props = option.get("properties").and_then(Value::as_object)?;
                let uses = value
                    .as_object()
                    .is_some_and(|map| map.keys().any(|k| props.contains_key(k)));
                if uses { attempt } else { None }
            })
            .min_by_key(Vec::len);
        match closest {
            Some(best) => errors.extend(best),
            None => push(
                errors,
                path,
                format!(
                    "{path}: {} fits none of the allowed forms ({})",
                    describe(value),
                    forms(options, self)
                ),
            ),
        }
    }

    fn check_object(
        &self,
        schema: &Value,
        map: &serde_json::Map<String, Value>,
        path: &str,
        errors: &mut Vec<FieldError>,
        depth: usize,
    ) {
        let properties = schema.get("properties").and_then(Value::as_object);
        for required in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !map.contains_key(required) {
                let child = child_path(path, required);
                push(errors, &child, format!("{child}: missing (required)"));
            }
        }
        let additional = schema.get("additionalProperties");
        for (key, child_value) in map {
            let child = child_path(path, key);
            if let Some(child_schema) = properties.and_then(|p| p.get(key)) {
                self.check(child_schema, child_value, &child, errors, depth + 1);
            } else if let Some(additional) = additional {
                if additional == &Value::Bool(false) {
                    let known: Vec<&str> = properties
                        .map(|p| p.keys().map(String::as_str).collect())
                        .unwrap_or_default();
                    let hint = if known.is_empty() {
                        String::new()
                    } else {
                        format!(" (known: {})", known.join(", "))
                    };
                    push(errors, &child, format!("{child}: unknown field{hint}"));
                } else {
                    self.check(additional, child_value, &child, errors, depth + 1);
                }
            }
        }
    }
}

/// A short list of the forms of a `oneOf`: the keys of object forms, the values of enums.
fn forms(options: &[Value], checker: &Checker<'_>) -> String {
    let shown: Vec<String> = options
        .iter()
        .map(|o| {
            let o = checker.resolve(o);
            if let Some(props) = o.get("properties").and_then(Value::as_object) {
                let keys: Vec<&str> = props.keys().map(String::as_str).collect();
                format!("{{{}}}", keys.join(", "))
            } else if let Some(values) = o.get("enum").and_then(Value::as_array) {
                values
                    .iter()
                    .map(Value::to_string)
                    .collect::<Vec<_>>()
                    .join(" | ")
            } else if let Some(c) = o.get("const") {
                c.to_string()
            } else {
                o.get("type")
                    .map(Value::to_string)
                    .unwrap_or_else(|| "any".into())
            }
        })
        .collect();
    shown.join(" | ")
}

fn has_type(value: &Value, t: &str) -> bool {
    match t {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        "number" => value.is_number(),
        "integer" => {
            value.is_i64()
                || value.is_u64()
                || value
                    .as_f64()
                    .is_some_and(|f| f.is_finite() && f.fract() == 0.0)
        }
        _ => true,
    }
}

fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) if has_type(value, "integer") => format!("integer {n}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) if s.chars().count() > 40 => "a string".into(),
        Value::String(s) => format!("string {s:?}"),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

fn check_string(schema: &Value, s: &str, path: &str, errors: &mut Vec<FieldError>) {
    let chars = s.chars().count() as u64;
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
        && chars < min
    {
        push(errors, path, format!("{path}: at least {min} character(s)"));
    }
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
        && chars > max
    {
        push(errors, path, format!("{path}: at most {max} character(s)"));
    }
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str)
        && let Ok(re) = regex::Regex::new(pattern)
        && !re.is_match(s)
    {
        push(
            errors,
            path,
            format!("{path}: {s:?} does not match {pattern}"),
        );
    }
}

fn check_number(schema: &Value, value: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let Some(n) = value.as_f64() else { return };
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
        && n < min
    {
        push(
            errors,
            path,
            format!("{path}: {value} is below the minimum {min}"),
        );
    }
    if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
        && n > max
    {
        push(
            errors,
            path,
            format!("{path}: {value} is above the maximum {max}"),
        );
    }
    // schemars names integer widths in `format`; the bounds follow from them.
    let range = match schema.get("format").and_then(Value::as_str) {
        Some("uint8") => Some((0.0, f64::from(u8::MAX))),
        Some("uint16") => Some((0.0, f64::from(u16::MAX))),
        Some("uint32") => Some((0.0, f64::from(u32::MAX))),
        Some("uint64" | "uint") => Some((0.0, u64::MAX as f64)),
        Some("int8") => Some((f64::from(i8::MIN), f64::from(i8::MAX))),
        Some("int16") => Some((f64::from(i16::MIN), f64::from(i16::MAX))),
        Some("int32") => Some((f64::from(i32::MIN), f64::from(i32::MAX))),
        _ => None,
    };
    let bounded = schema.get("minimum").is_some() && schema.get("maximum").is_some();
    if let Some((lo, hi)) = range
        && !bounded
        && (n < lo || n > hi)
    {
        let format = schema.get("format").and_then(Value::as_str).unwrap_or("");
        push(
            errors,
            path,
            format!("{path}: {value} is out of range for {format}"),
        );
    }
}

fn push(errors: &mut Vec<FieldError>, path: &str, message: String) {
    errors.push(FieldError {
        path: path.to_string(),
        message,
    });
}

fn child_path(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::check;

    fn messages(schema: &serde_json::Value, value: serde_json::Value) -> Vec<String> {
        check(schema, &value, "spec.pluginConfig")
            .into_iter()
            .map(|e| e.message)
            .collect()
    }

    #[test]
    fn errors_name_the_field() {
        let schema = json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["sources"],
            "properties": {
                "realm": {"type": "string"},
                "status": {"type": "integer", "format": "uint16", "minimum": 0},
                "sources": {"type": "array", "items": {"$ref": "#/$defs/Source"}}
            },
            "$defs": {"Source": {"oneOf": [
                {"type": "object", "properties": {"header": {"type": "string"}}, "required": ["header"], "additionalProperties": false},
                {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"], "additionalProperties": false}
            ]}}
        });
        assert!(
            messages(
                &schema,
                json!({"sources": [{"header": "x"}, {"query": "k"}]})
            )
            .is_empty()
        );
        assert_eq!(
            messages(&schema, json!({"sources": [], "realm": 5})),
            ["spec.pluginConfig.realm: expected string, found integer 5"]
        );
        assert_eq!(
            messages(&schema, json!({"sources": [], "status": 70000})),
            ["spec.pluginConfig.status: 70000 is out of range for uint16"]
        );
        assert_eq!(
            messages(&schema, json!({})),
            ["spec.pluginConfig.sources: missing (required)"]
        );
        assert_eq!(
            messages(&schema, json!({"sources": [], "relm": "x"})),
            ["spec.pluginConfig.relm: unknown field (known: realm, sources, status)"]
        );
        assert_eq!(
            messages(&schema, json!({"sources": [{"query": 3}]})),
            ["spec.pluginConfig.sources[0].query: expected string, found integer 3"]
        );
        assert_eq!(
            messages(&schema, json!({"sources": [{"cookie": "c"}]})),
            [
                "spec.pluginConfig.sources[0]: an object fits none of the allowed forms ({header} | {query})"
            ]
        );
    }
}
