//! Validating `WasmPlugin`, `TrafficExtension` and `EnvoyExtensionPolicy` manifests the way a Kubernetes API server does:
//! against the CRD's OpenAPI v3 structural schema (types, enums, required
//! fields, patterns, lengths, item and property counts, formats, list-map
//! keys, unknown fields as `kubectl --validate=strict` reports them) and its
//! `x-kubernetes-validations` CEL rules, evaluated with the `cel` crate plus
//! the Kubernetes URL library functions the rules use (`isURL`, `url`,
//! `getScheme`). Messages follow the API server's wording and start with the
//! field path, e.g. `spec.sha256 in body should match '...'`.
//!
//! The CRD is read at run time ([`Crd::load`]), never compiled in; a [`CrdSet`] holds
//! several and checks each document against the CRD of its `kind`.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

use super::ShipError;

/// One problem in a manifest, at a field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field, e.g. `spec.selector.matchLabels` (empty for the document itself).
    pub path: String,
    /// The whole message, in the API server's words (it names the field).
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// One YAML document of a manifest file and what is wrong with it.
#[derive(Debug, Clone)]
pub struct DocumentReport {
    /// 0-based index of the document in its file (empty documents count).
    pub index: usize,
    /// `metadata.name`, when there is one.
    pub name: Option<String>,
    /// `kind`, when there is one.
    pub kind: Option<String>,
    /// The problems; empty when the API server would accept it.
    pub errors: Vec<FieldError>,
}

/// A loaded CustomResourceDefinition: the schema of one version and its compiled CEL rules.
pub struct Crd {
    group: String,
    version: String,
    kind: String,
    schema: Value,
    rules: HashMap<String, cel::Program>,
}

impl fmt::Debug for Crd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Crd")
            .field("group", &self.group)
            .field("version", &self.version)
            .field("kind", &self.kind)
            .field("rules", &self.rules.len())
            .finish()
    }
}

impl Crd {
    /// Reads a CRD file (YAML) and takes its served storage version (or the first one).
    pub fn load(path: &Path) -> Result<Crd, ShipError> {
        let text = read_yaml(path)?;
        Crd::from_yaml(&path.display().to_string(), &text)
    }

    /// Parses a CRD; `name` is used in error messages.
    pub fn from_yaml(name: &str, text: &str) -> Result<Crd, ShipError> {
        // The first CustomResourceDefinition of the file (generated CRD files may hold several
        // documents, some empty).
        let crd: Value = documents(name, text)?
            .into_iter()
            .flatten()
            .find(|doc| doc.get("kind").and_then(Value::as_str) == Some("CustomResourceDefinition"))
            .ok_or_else(|| ShipError::invalid(name, "no CustomResourceDefinition document"))?;
        let field = |pointer: &str| {
            crd.pointer(pointer)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| ShipError::invalid(name, format!("no {pointer} string")))
        };
        let group = field("/spec/group")?;
        let kind = field("/spec/names/kind")?;
        let versions = crd
            .pointer("/spec/versions")
            .and_then(Value::as_array)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| ShipError::invalid(name, "no spec.versions list"))?;
        let chosen = versions
            .iter()
            .find(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
            .unwrap_or(&versions[0]);
        let version = chosen
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| ShipError::invalid(name, "spec.versions[].name missing"))?
            .to_string();
        let schema = chosen
            .pointer("/schema/openAPIV3Schema")
            .cloned()
            .ok_or_else(|| {
                ShipError::invalid(
                    name,
                    format!("version {version} has no schema.openAPIV3Schema"),
                )
            })?;
        let mut sources = Vec::new();
        collect_rules(&schema, &mut sources);
        let mut rules = HashMap::new();
        for rule in sources {
            let program = cel::Program::compile(&rule).map_err(|e| {
                ShipError::invalid(name, format!("CEL rule {rule:?} does not compile: {e}"))
            })?;
            rules.insert(rule, program);
        }
        Ok(Crd {
            group,
            version,
            kind,
            schema,
            rules,
        })
    }

    /// `group/version`, e.g. `extensions.istio.io/v1alpha1`.
    pub fn api_version(&self) -> String {
        format!("{}/{}", self.group, self.version)
    }

    /// The kind, e.g. `WasmPlugin`.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// How many distinct CEL rules the schema carries.
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// Every problem the API server would report for one manifest; empty when it is accepted.
    pub fn validate(&self, doc: &Value) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let Some(object) = doc.as_object() else {
            push(
                &mut errors,
                "",
                format!(
                    "the document must be a mapping (a {}), not {}",
                    self.kind,
                    type_name(doc)
                ),
            );
            return errors;
        };
        let api_version = self.api_version();
        match object.get("apiVersion") {
            Some(Value::String(v)) if *v == api_version => {}
            Some(v) => push(
                &mut errors,
                "apiVersion",
                format!(
                    "apiVersion: Unsupported value: {}: supported values: \"{api_version}\"",
                    short(v)
                ),
            ),
            None => push(
                &mut errors,
                "apiVersion",
                "apiVersion: Required value".into(),
            ),
        }
        match object.get("kind") {
            Some(Value::String(v)) if *v == self.kind => {}
            Some(v) => push(
                &mut errors,
                "kind",
                format!(
                    "kind: Unsupported value: {}: supported values: \"{}\"",
                    short(v),
                    self.kind
                ),
            ),
            None => push(&mut errors, "kind", "kind: Required value".into()),
        }
        check_metadata(object.get("metadata"), &mut errors);
        let mut body = object.clone();
        body.remove("apiVersion");
        body.remove("kind");
        body.remove("metadata");
        self.check(&self.schema, &Value::Object(body), "", &mut errors);
        errors
    }

    /// Validates every document of a (multi-document) YAML manifest file.
    pub fn validate_file(&self, path: &Path) -> Result<Vec<DocumentReport>, ShipError> {
        let text = read_yaml(path)?;
        self.validate_text(&path.display().to_string(), &text)
    }

    /// Validates every document of YAML text; `name` is used in error messages.
    pub fn validate_text(&self, name: &str, text: &str) -> Result<Vec<DocumentReport>, ShipError> {
        reports(name, text, |doc| self.validate(doc))
    }

    /// Checks `value` at `path` against `schema`; returns whether the subtree is free of errors.
    fn check(
        &self,
        schema: &Value,
        value: &Value,
        path: &str,
        errors: &mut Vec<FieldError>,
    ) -> bool {
        let before = errors.len();
        let shown = if path.is_empty() { "<root>" } else { path };
        // The API server fills in a missing property's `default` before it validates
        // (so rules can read it, e.g. a secret reference's defaulted `kind`).
        let defaulted = with_defaults(schema, value);
        let value = defaulted.as_ref().unwrap_or(value);
        if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
            for sub in all {
                self.check(sub, value, path, errors);
            }
            if errors.len() > before {
                return false;
            }
        }
        if value.is_null() {
            if schema.get("nullable").and_then(Value::as_bool) == Some(true) {
                return true;
            }
            let expected = expected_type(schema);
            push(
                errors,
                path,
                format!("{shown} in body must be of type {expected}: \"null\""),
            );
            return false;
        }
        if schema
            .get("x-kubernetes-int-or-string")
            .and_then(Value::as_bool)
            == Some(true)
        {
            if !(value.is_string() || is_integer(value)) {
                push(
                    errors,
                    path,
                    format!(
                        "{shown} in body must be of type integer,string: \"{}\"",
                        type_name(value)
                    ),
                );
                return false;
            }
        } else if let Some(expected) = schema.get("type").and_then(Value::as_str) {
            let matches = match expected {
                "object" => value.is_object(),
                "array" => value.is_array(),
                "string" => value.is_string(),
                "integer" => is_integer(value),
                "number" => value.is_number(),
                "boolean" => value.is_boolean(),
                _ => true,
            };
            if !matches {
                push(
                    errors,
                    path,
                    format!(
                        "{shown} in body must be of type {expected}: \"{}\"",
                        type_name(value)
                    ),
                );
                return false;
            }
        }
        if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
            && !allowed.contains(value)
        {
            let list: Vec<String> = allowed.iter().map(short).collect();
            push(
                errors,
                path,
                format!(
                    "{shown}: Unsupported value: {}: supported values: {}",
                    short(value),
                    list.join(", ")
                ),
            );
        }
        match value {
            Value::String(s) => check_string(schema, s, path, shown, errors),
            Value::Number(_) => check_number(schema, value, path, shown, errors),
            Value::Array(items) => self.check_array(schema, items, path, shown, errors),
            Value::Object(map) => self.check_object(schema, map, path, shown, errors),
            _ => {}
        }
        if errors.len() == before {
            self.check_rules(schema, value, path, shown, errors);
        }
        errors.len() == before
    }

    fn check_array(
        &self,
        schema: &Value,
        items: &[Value],
        path: &str,
        shown: &str,
        errors: &mut Vec<FieldError>,
    ) {
        if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
            && items.len() as u64 > max
        {
            push(
                errors,
                path,
                format!(
                    "{shown}: Too many: {}: must have at most {max} items",
                    items.len()
                ),
            );
        }
        if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
            && (items.len() as u64) < min
        {
            push(
                errors,
                path,
                format!("{shown} in body should have at least {min} items"),
            );
        }
        if let Some(item_schema) = schema.get("items") {
            for (i, item) in items.iter().enumerate() {
                self.check(item_schema, item, &format!("{path}[{i}]"), errors);
            }
        }
        match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("map") => {
                let keys: Vec<&str> = schema
                    .get("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .map(|k| k.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let mut seen: Vec<Vec<&Value>> = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    let key: Vec<&Value> = keys
                        .iter()
                        .map(|k| item.get(*k).unwrap_or(&Value::Null))
                        .collect();
                    if seen.contains(&key) {
                        let shown_key: Vec<String> = keys
                            .iter()
                            .zip(&key)
                            .map(|(k, v)| format!("\"{k}\":{}", go_value(v)))
                            .collect();
                        push(
                            errors,
                            &format!("{path}[{i}]"),
                            format!(
                                "{path}[{i}]: Duplicate value: map[string]interface {{}}{{{}}}",
                                shown_key.join(", ")
                            ),
                        );
                    } else {
                        seen.push(key);
                    }
                }
            }
            Some("set") => {
                for (i, item) in items.iter().enumerate() {
                    if items[..i].contains(item) {
                        push(
                            errors,
                            &format!("{path}[{i}]"),
                            format!("{path}[{i}]: Duplicate value: {}", short(item)),
                        );
                    }
                }
            }
            _ => {}
        }
    }

    fn check_object(
        &self,
        schema: &Value,
        map: &serde_json::Map<String, Value>,
        path: &str,
        shown: &str,
        errors: &mut Vec<FieldError>,
    ) {
        let properties = schema.get("properties").and_then(Value::as_object);
        let additional = schema.get("additionalProperties").filter(|a| a.is_object());
        let preserve = schema
            .get("x-kubernetes-preserve-unknown-fields")
            .and_then(Value::as_bool)
            == Some(true);
        if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64)
            && map.len() as u64 > max
        {
            push(
                errors,
                path,
                format!(
                    "{shown}: Too many: {}: must have at most {max} items",
                    map.len()
                ),
            );
        }
        if let Some(min) = schema.get("minProperties").and_then(Value::as_u64)
            && (map.len() as u64) < min
        {
            push(
                errors,
                path,
                format!("{shown} in body should have at least {min} properties"),
            );
        }
        for required in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !map.contains_key(required) {
                let child = child_path(path, required);
                push(errors, &child, format!("{child}: Required value"));
            }
        }
        for (key, child_value) in map {
            let child = child_path(path, key);
            if let Some(child_schema) = properties.and_then(|p| p.get(key)) {
                self.check(child_schema, child_value, &child, errors);
            } else if let Some(child_schema) = additional {
                self.check(child_schema, child_value, &child, errors);
            } else if !preserve {
                push(errors, &child, format!("unknown field \"{child}\""));
            }
        }
    }

    fn check_rules(
        &self,
        schema: &Value,
        value: &Value,
        path: &str,
        shown: &str,
        errors: &mut Vec<FieldError>,
    ) {
        let Some(rules) = schema
            .get("x-kubernetes-validations")
            .and_then(Value::as_array)
        else {
            return;
        };
        for rule in rules {
            let Some(source) = rule.get("rule").and_then(Value::as_str) else {
                continue;
            };
            let message = rule
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| format!("failed rule: {source}"));
            let outcome = match self.rules.get(source) {
                Some(program) => evaluate(program, value),
                None => Err(format!("rule {source:?} was not compiled")),
            };
            match outcome {
                Ok(true) => {}
                Ok(false) => push(
                    errors,
                    path,
                    format!(
                        "{shown}: Invalid value: \"{}\": {message}",
                        type_name(value)
                    ),
                ),
                Err(e) => push(
                    errors,
                    path,
                    format!("{shown}: Internal error: rule {source:?} could not be evaluated: {e}"),
                ),
            }
        }
    }
}

/// `value` with the `default`s of its schema's missing properties filled in, when there are any.
fn with_defaults(schema: &Value, value: &Value) -> Option<Value> {
    let map = value.as_object()?;
    let properties = schema.get("properties").and_then(Value::as_object)?;
    let mut filled: Option<serde_json::Map<String, Value>> = None;
    for (key, property) in properties {
        if let Some(default) = property.get("default")
            && !map.contains_key(key)
        {
            filled
                .get_or_insert_with(|| map.clone())
                .insert(key.clone(), default.clone());
        }
    }
    filled.map(Value::Object)
}

/// Several CRDs: each document is checked against the one its `kind` names, so one
/// `tollgate validate` run takes WasmPlugins, TrafficExtensions and EnvoyExtensionPolicies.
#[derive(Debug)]
pub struct CrdSet {
    crds: Vec<Crd>,
}

impl CrdSet {
    /// Loads every CRD file.
    pub fn load<P: AsRef<Path>>(paths: &[P]) -> Result<CrdSet, ShipError> {
        let crds = paths
            .iter()
            .map(|p| Crd::load(p.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CrdSet { crds })
    }

    /// A set of already loaded CRDs.
    pub fn new(crds: Vec<Crd>) -> CrdSet {
        CrdSet { crds }
    }

    /// The CRD of `kind`, when loaded.
    pub fn get(&self, kind: &str) -> Option<&Crd> {
        self.crds.iter().find(|c| c.kind == kind)
    }

    /// The kinds this set checks.
    pub fn kinds(&self) -> Vec<&str> {
        self.crds.iter().map(|c| c.kind.as_str()).collect()
    }

    /// Every problem with one document, checked against the CRD of its `kind`; a document
    /// of no known kind is refused naming the kinds this set knows.
    pub fn validate(&self, doc: &Value) -> Vec<FieldError> {
        let kind = doc.get("kind");
        if let Some(crd) = kind.and_then(Value::as_str).and_then(|k| self.get(k)) {
            return crd.validate(doc);
        }
        let supported: Vec<String> = self.kinds().iter().map(|k| format!("{k:?}")).collect();
        let message = match kind {
            Some(v) => format!(
                "kind: Unsupported value: {}: supported values: {}",
                short(v),
                supported.join(", ")
            ),
            None => format!("kind: Required value (one of {})", supported.join(", ")),
        };
        vec![FieldError {
            path: "kind".into(),
            message,
        }]
    }

    /// Validates every document of a (multi-document) YAML manifest file.
    pub fn validate_file(&self, path: &Path) -> Result<Vec<DocumentReport>, ShipError> {
        let text = read_yaml(path)?;
        self.validate_text(&path.display().to_string(), &text)
    }

    /// Validates every document of YAML text; `name` is used in error messages.
    pub fn validate_text(&self, name: &str, text: &str) -> Result<Vec<DocumentReport>, ShipError> {
        reports(name, text, |doc| self.validate(doc))
    }
}

fn reports(
    name: &str,
    text: &str,
    validate: impl Fn(&Value) -> Vec<FieldError>,
) -> Result<Vec<DocumentReport>, ShipError> {
    let docs = documents(name, text)?;
    if docs.iter().all(Option::is_none) {
        return Err(ShipError::invalid(name, "no YAML document in the file"));
    }
    Ok(docs
        .into_iter()
        .enumerate()
        .filter_map(|(index, doc)| {
            let doc = doc?;
            Some(DocumentReport {
                index,
                name: doc
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                kind: doc.get("kind").and_then(Value::as_str).map(str::to_string),
                errors: validate(&doc),
            })
        })
        .collect())
}

/// Reads a YAML file as every input is read (`tollgate_files::input`: a
/// regular file, under the input cap) and refuses nesting past
/// [`MAX_YAML_DEPTH`](tollgate_files::input::MAX_YAML_DEPTH) before any parser
/// sees it, naming the line.
pub fn read_yaml(path: &Path) -> Result<String, ShipError> {
    use tollgate_files::input;
    let text = input::read_to_string(path).map_err(|e| ShipError::read(path, e))?;
    input::check_yaml_depth(&text, input::MAX_YAML_DEPTH)
        .map_err(|message| ShipError::invalid(path.display().to_string(), message))?;
    Ok(text)
}

/// The YAML documents of a file, `None` for empty ones (`---` with nothing after it).
pub fn documents(name: &str, text: &str) -> Result<Vec<Option<Value>>, ShipError> {
    use serde::Deserialize;
    let mut docs = Vec::new();
    for (index, de) in yaml_serde::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(de).map_err(|e| {
            ShipError::invalid(name, format!("YAML document {index} is not valid: {e}"))
        })?;
        docs.push(if value.is_null() { None } else { Some(value) });
    }
    Ok(docs)
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

fn is_integer(value: &Value) -> bool {
    value.is_i64()
        || value.is_u64()
        || value
            .as_f64()
            .is_some_and(|f| f.is_finite() && f.fract() == 0.0)
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) if is_integer(value) => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn expected_type(schema: &Value) -> String {
    if schema
        .get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        == Some(true)
    {
        return "integer,string".into();
    }
    schema
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("any")
        .to_string()
}

/// A value as the API server quotes it: strings in double quotes, others as JSON.
fn short(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

/// A value the way Go's `%#v` prints it inside a map literal.
fn go_value(value: &Value) -> String {
    match value {
        Value::Null => "interface {}(nil)".into(),
        other => short(other),
    }
}

fn check_string(schema: &Value, s: &str, path: &str, shown: &str, errors: &mut Vec<FieldError>) {
    let chars = s.chars().count() as u64;
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
        && chars < min
    {
        push(
            errors,
            path,
            format!("{shown} in body should be at least {min} chars long"),
        );
    }
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
        && chars > max
    {
        push(
            errors,
            path,
            format!("{shown} in body should be at most {max} chars long"),
        );
    }
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
        match regex::Regex::new(pattern) {
            Ok(re) if re.is_match(s) => {}
            Ok(_) => push(
                errors,
                path,
                format!("{shown} in body should match '{pattern}'"),
            ),
            Err(e) => push(
                errors,
                path,
                format!(
                    "{shown}: the schema's pattern '{pattern}' is not a valid regular expression: {e}"
                ),
            ),
        }
    }
    if let Some(format) = schema.get("format").and_then(Value::as_str) {
        let ok = match format {
            "date-time" => chrono::DateTime::parse_from_rfc3339(s).is_ok(),
            "byte" => {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD.decode(s).is_ok()
            }
            _ => true,
        };
        if !ok {
            push(
                errors,
                path,
                format!("{shown} in body must be of type {format}: {s:?}"),
            );
        }
    }
}

fn check_number(
    schema: &Value,
    value: &Value,
    path: &str,
    shown: &str,
    errors: &mut Vec<FieldError>,
) {
    let Some(n) = value.as_f64() else { return };
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
        && n < min
    {
        push(
            errors,
            path,
            format!("{shown} in body should be greater than or equal to {min}"),
        );
    }
    if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
        && n > max
    {
        push(
            errors,
            path,
            format!("{shown} in body should be less than or equal to {max}"),
        );
    }
    let out_of_range = match schema.get("format").and_then(Value::as_str) {
        Some("int32") => n < f64::from(i32::MIN) || n > f64::from(i32::MAX),
        Some("int64") => value.is_u64() && value.as_i64().is_none(),
        _ => false,
    };
    if out_of_range {
        let format = schema.get("format").and_then(Value::as_str).unwrap_or("");
        push(
            errors,
            path,
            format!("{shown} in body must be of type {format}: \"{value}\""),
        );
    }
}

/// `metadata`: the parts of ObjectMeta the API server checks on create.
fn check_metadata(metadata: Option<&Value>, errors: &mut Vec<FieldError>) {
    let Some(metadata) = metadata else {
        push(errors, "metadata", "metadata: Required value".into());
        return;
    };
    let Some(map) = metadata.as_object() else {
        push(
            errors,
            "metadata",
            format!(
                "metadata in body must be of type object: \"{}\"",
                type_name(metadata)
            ),
        );
        return;
    };
    match map.get("name").and_then(Value::as_str) {
        Some(name) if !name.is_empty() => {
            if !is_dns_subdomain(name) {
                push(
                    errors,
                    "metadata.name",
                    format!(
                        "metadata.name: Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
                    ),
                );
            }
        }
        _ if map.get("generateName").and_then(Value::as_str).is_some() => {}
        _ => push(
            errors,
            "metadata.name",
            "metadata.name: Required value: name or generateName is required".into(),
        ),
    }
    for key in ["labels", "annotations"] {
        if let Some(v) = map.get(key) {
            let ok = v
                .as_object()
                .is_some_and(|m| m.values().all(Value::is_string));
            if !ok {
                push(
                    errors,
                    &format!("metadata.{key}"),
                    format!("metadata.{key} in body must be a map of strings"),
                );
            }
        }
    }
}

fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn collect_rules(schema: &Value, out: &mut Vec<String>) {
    match schema {
        Value::Object(map) => {
            if let Some(rules) = map
                .get("x-kubernetes-validations")
                .and_then(Value::as_array)
            {
                for rule in rules {
                    if let Some(source) = rule.get("rule").and_then(Value::as_str)
                        && !out.iter().any(|r| r == source)
                    {
                        out.push(source.to_string());
                    }
                }
            }
            map.values().for_each(|v| collect_rules(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_rules(v, out)),
        _ => {}
    }
}

/// Runs one rule with `self` bound to `value`.
fn evaluate(program: &cel::Program, value: &Value) -> Result<bool, String> {
    let mut context = cel::Context::default();
    let this = cel::to_value(value).map_err(|e| format!("cannot convert the value: {e}"))?;
    context.add_variable_from_value("self", this);
    add_url_library(&mut context)?;
    match program.execute(&context) {
        Ok(cel::Value::Bool(b)) => Ok(b),
        Ok(other) => Err(format!("the rule returned {other:?}, not a bool")),
        Err(e) => Err(e.to_string()),
    }
}

/// The Kubernetes CEL URL library functions the WasmPlugin rules use.
fn add_url_library(context: &mut cel::Context<'_, '_>) -> Result<(), String> {
    context
        .add_function("isURL", |s: Arc<String>| parse_request_uri(&s).is_ok())
        .map_err(|e| e.to_string())?;
    context
        .add_function(
            "url",
            |s: Arc<String>| -> Result<Arc<String>, cel::ExecutionError> {
                parse_request_uri(&s).map(|_| s.clone()).map_err(|e| {
                    cel::ExecutionError::function_error(
                        "url",
                        format!("URL parse error during conversion from string: {e}"),
                    )
                })
            },
        )
        .map_err(|e| e.to_string())?;
    context
        .add_function(
            "getScheme",
            |cel::extractors::This(s): cel::extractors::This<Arc<String>>| -> Result<Arc<String>, cel::ExecutionError> {
                parse_request_uri(&s)
                    .map(|u| Arc::new(u.scheme))
                    .map_err(|e| cel::ExecutionError::function_error("getScheme", e))
            },
        )
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// The parts of a URL the rules read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedUrl {
    /// Lower-cased scheme, empty when there is none.
    pub scheme: String,
    /// Host (with port), empty when there is none.
    pub host: String,
}

/// Parses a URL the way Go's `net/url.ParseRequestURI` does (which the
/// Kubernetes `isURL` and `url` CEL functions use): an absolute URL or an
/// absolute path, valid userinfo, host, port and percent-escapes.
pub fn parse_request_uri(raw: &str) -> Result<ParsedUrl, String> {
    if raw.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err("net/url: invalid control character in URL".into());
    }
    if raw.is_empty() {
        return Err("empty url".into());
    }
    if raw == "*" {
        return Ok(ParsedUrl {
            scheme: String::new(),
            host: String::new(),
        });
    }
    let (scheme, rest) = split_scheme(raw)?;
    let scheme = scheme.to_ascii_lowercase();
    let rest = if rest.ends_with('?') && rest.matches('?').count() == 1 {
        &rest[..rest.len() - 1]
    } else {
        rest.split_once('?').map_or(rest, |(before, _)| before)
    };
    if !rest.starts_with('/') {
        if !scheme.is_empty() {
            return Ok(ParsedUrl {
                scheme,
                host: String::new(),
            });
        }
        return Err("invalid URI for request".into());
    }
    let mut host = String::new();
    let mut path = rest;
    if !scheme.is_empty() && rest.starts_with("//") {
        let after = &rest[2..];
        let (authority, tail) = match after.find('/') {
            Some(i) => (&after[..i], &after[i..]),
            None => (after, ""),
        };
        host = parse_authority(authority)?;
        path = tail;
    }
    unescape(path, false)?;
    Ok(ParsedUrl { scheme, host })
}

fn split_scheme(raw: &str) -> Result<(&str, &str), String> {
    for (i, c) in raw.char_indices() {
        if c.is_ascii_alphabetic() {
            continue;
        }
        if c.is_ascii_digit() || c == '+' || c == '-' || c == '.' {
            if i == 0 {
                return Ok(("", raw));
            }
            continue;
        }
        if c == ':' {
            if i == 0 {
                return Err("missing protocol scheme".into());
            }
            return Ok((&raw[..i], &raw[i + 1..]));
        }
        return Ok(("", raw));
    }
    Ok(("", raw))
}

fn parse_authority(authority: &str) -> Result<String, String> {
    let (userinfo, host) = match authority.rfind('@') {
        Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
        None => (None, authority),
    };
    let host = parse_host(host)?;
    if let Some(userinfo) = userinfo {
        let valid = userinfo
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._:~!$&'()*+,;=%@".contains(c));
        if !valid {
            return Err("net/url: invalid userinfo".into());
        }
        unescape(userinfo, false)?;
    }
    Ok(host)
}

fn parse_host(host: &str) -> Result<String, String> {
    if let Some(inner) = host.strip_prefix('[') {
        let Some(close) = inner.rfind(']') else {
            return Err("missing ']' in host".into());
        };
        let port = &inner[close + 1..];
        if !valid_optional_port(port) {
            return Err(format!("invalid port {port:?} after host"));
        }
        return Ok(host.to_string());
    }
    if let Some(i) = host.rfind(':') {
        let port = &host[i..];
        if !valid_optional_port(port) {
            return Err(format!("invalid port {port:?} after host"));
        }
    }
    unescape(host, true)?;
    Ok(host.to_string())
}

fn valid_optional_port(port: &str) -> bool {
    match port.strip_prefix(':') {
        None => port.is_empty(),
        Some(digits) => digits.bytes().all(|b| b.is_ascii_digit()),
    }
}

/// Go's `unescape` checks: `%` followed by two hex digits, and in a host only the characters a host may hold.
fn unescape(s: &str, host: bool) -> Result<(), String> {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .filter(|h| h.iter().all(u8::is_ascii_hexdigit));
            let Some(hex) = hex else {
                let end = (i + 3).min(bytes.len());
                return Err(format!(
                    "invalid URL escape {:?}",
                    String::from_utf8_lossy(&bytes[i..end])
                ));
            };
            if host && hex[0] < b'8' && &bytes[i..i + 3] != b"%25" {
                return Err(format!(
                    "invalid URL escape {:?}",
                    String::from_utf8_lossy(&bytes[i..i + 3])
                ));
            }
            i += 3;
            continue;
        }
        if host && b < 0x80 && !(b.is_ascii_alphanumeric() || b"-_.~$&'()*+,;=:[]<>\"".contains(&b))
        {
            return Err(format!("invalid character {:?} in host name", b as char));
        }
        i += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_request_uri;

    #[test]
    fn request_uris_parse_like_go() {
        let scheme = |s: &str| parse_request_uri(s).map(|u| u.scheme);
        assert_eq!(scheme("http://test"), Ok("http".into()));
        assert_eq!(
            scheme("HTTPS://Example.com:8443/a%20b?x"),
            Ok("https".into())
        );
        assert_eq!(scheme("file:///opt/filters/openid.wasm"), Ok("file".into()));
        assert_eq!(scheme("oci://ghcr.io/a/b:0.1.0"), Ok("oci".into()));
        assert_eq!(scheme("fake://example.com"), Ok("fake".into()));
        assert_eq!(scheme("/just/a/path"), Ok(String::new()));
        assert_eq!(scheme("mailto:someone"), Ok("mailto".into()));
        // Not request URIs: relative, bad escapes, bad ports, bad userinfo, control bytes.
        for bad in [
            "test",
            "",
            "#%blah$#@",
            "http://#%blah$#@",
            "http://host:port/x",
            "http://a b/",
            "http://%zz",
            "http://ex%41mple.com",
            ":nothing",
            "http://x/\u{7f}",
            "http://[::1/",
        ] {
            assert!(parse_request_uri(bad).is_err(), "{bad:?} parsed");
        }
        assert!(parse_request_uri("http://[::1]:80/x").is_ok());
        assert!(parse_request_uri("http://user:p%40ss@host/x").is_ok());
        assert!(parse_request_uri("http://us#er@host/x").is_err());
    }
}
