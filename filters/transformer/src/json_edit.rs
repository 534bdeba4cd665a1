//! JSON body edits by path: `set`, `remove`, `rename`, `move`. A path is dot-separated keys;
//! a segment of digits indexes an array (`items.0.price`); `\.` is a literal dot in a key.
//!
//! Documents are [`Json`]: objects keep their members in the order they came (and a renamed
//! key keeps its place), so an edit changes only what it names. Numbers and string escapes are
//! re-serialised (`1.0e2` leaves as `100.0`, `\u00e9` as `é`).
//!
//! ```
//! use tollgate_transformer::json_edit::{Json, Path, get, remove, rename, set};
//! let mut doc: Json = serde_json::from_str(r#"{"user": {"name": "ada", "card": "4111"}, "items": [{"id": 1}]}"#)?;
//! remove(&mut doc, &Path::parse("user.card")?);
//! set(&mut doc, &Path::parse("items.0.qty")?, Json::from(serde_json::json!(2)));
//! rename(&mut doc, &Path::parse("user")?, "customer");
//! assert_eq!(serde_json::to_string(&doc)?, r#"{"customer":{"name":"ada"},"items":[{"id":1,"qty":2}]}"#);
//! assert_eq!(get(&doc, &Path::parse("customer.name")?), Some(&Json::String("ada".into())));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::{Number, Value};

/// A JSON document whose objects keep their members' order (and any repeated key, as sent).
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A number (as `serde_json` reads it).
    Number(Number),
    /// A string.
    String(String),
    /// An array.
    Array(Vec<Json>),
    /// An object: its members in document order.
    Object(Vec<(String, Json)>),
}

impl From<Value> for Json {
    /// A configured value (its objects' keys in `serde_json`'s order: sorted).
    fn from(value: Value) -> Json {
        match value {
            Value::Null => Json::Null,
            Value::Bool(b) => Json::Bool(b),
            Value::Number(n) => Json::Number(n),
            Value::String(s) => Json::String(s),
            Value::Array(items) => Json::Array(items.into_iter().map(Json::from).collect()),
            Value::Object(map) => {
                Json::Object(map.into_iter().map(|(k, v)| (k, Json::from(v))).collect())
            }
        }
    }
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::Null => serializer.serialize_unit(),
            Json::Bool(b) => serializer.serialize_bool(*b),
            Json::Number(n) => n.serialize(serializer),
            Json::String(s) => serializer.serialize_str(s),
            Json::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Json::Object(members) => {
                let mut map = serializer.serialize_map(Some(members.len()))?;
                for (key, value) in members {
                    map.serialize_entry(key, value)?;
                }
                map.end()
            }
        }
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_none<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Json, E> {
        Ok(Json::Bool(b))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Json, E> {
        Ok(Json::Number(n.into()))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Json, E> {
        Ok(Json::Number(n.into()))
    }
    fn visit_f64<E>(self, n: f64) -> Result<Json, E> {
        // serde_json never hands a non-finite number; `null` as serde_json's Value does.
        Ok(Number::from_f64(n).map_or(Json::Null, Json::Number))
    }
    fn visit_str<E>(self, s: &str) -> Result<Json, E> {
        Ok(Json::String(s.to_string()))
    }
    fn visit_string<E>(self, s: String) -> Result<Json, E> {
        Ok(Json::String(s))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(0).min(4096));
        while let Some((key, value)) = map.next_entry::<String, Json>()? {
            members.push((key, value));
        }
        Ok(Json::Object(members))
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Json, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

/// The value of `key` in an object's members: the last one when a key repeats (as
/// `serde_json` and most readers take it).
fn member<'a>(members: &'a [(String, Json)], key: &str) -> Option<&'a Json> {
    members.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v)
}

fn member_mut<'a>(members: &'a mut [(String, Json)], key: &str) -> Option<&'a mut Json> {
    members
        .iter_mut()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

/// Sets `key` to `value`: in the place of its first member when present (later repeats of the
/// key dropped, so every reader sees the new value), else last.
fn insert(members: &mut Vec<(String, Json)>, key: &str, value: Json) {
    let mut value = Some(value);
    let mut seen = false;
    members.retain_mut(|(k, v)| {
        if k != key {
            return true;
        }
        if seen {
            return false;
        }
        seen = true;
        if let Some(new) = value.take() {
            *v = new;
        }
        true
    });
    if let Some(new) = value {
        members.push((key.to_string(), new));
    }
}

/// Removes every member named `key`; returns where the first stood and the value readers saw
/// (the last).
fn take(members: &mut Vec<(String, Json)>, key: &str) -> Option<(usize, Json)> {
    let first = members.iter().position(|(k, _)| k == key)?;
    let mut value = None;
    let mut kept = Vec::with_capacity(members.len());
    for (k, v) in members.drain(..) {
        if k == key {
            value = Some(v);
        } else {
            kept.push((k, v));
        }
    }
    *members = kept;
    value.map(|v| (first, v))
}

/// A parsed path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path(Vec<String>);

impl Path {
    /// Parses `a.b.0.c` (`\.` for a dot inside a key); empty segments are refused.
    pub fn parse(text: &str) -> Result<Path, String> {
        let mut segments = Vec::new();
        let mut current = String::new();
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some(next) => current.push(next),
                    None => return Err(format!("{text:?} ends with a lone \\")),
                },
                '.' => segments.push(std::mem::take(&mut current)),
                _ => current.push(c),
            }
        }
        segments.push(current);
        if segments.iter().any(String::is_empty) {
            return Err(format!(
                "{text:?} has an empty segment (paths look like a.b.0.c)"
            ));
        }
        Ok(Path(segments))
    }

    /// The last segment.
    pub fn last(&self) -> &str {
        self.0.last().map_or("", String::as_str)
    }

    fn parent(&self) -> &[String] {
        self.0.split_last().map_or(&[], |(_, rest)| rest)
    }
}

fn index(segment: &str) -> Option<usize> {
    if segment.bytes().all(|b| b.is_ascii_digit()) {
        segment.parse().ok()
    } else {
        None
    }
}

fn child<'a>(value: &'a Json, segment: &str) -> Option<&'a Json> {
    match value {
        Json::Object(members) => member(members, segment),
        Json::Array(items) => items.get(index(segment)?),
        _ => None,
    }
}

fn child_mut<'a>(value: &'a mut Json, segment: &str) -> Option<&'a mut Json> {
    match value {
        Json::Object(members) => member_mut(members, segment),
        Json::Array(items) => items.get_mut(index(segment)?),
        _ => None,
    }
}

/// The value at `path`.
pub fn get<'a>(doc: &'a Json, path: &Path) -> Option<&'a Json> {
    path.0.iter().try_fold(doc, |v, s| child(v, s))
}

fn walk_mut<'a>(doc: &'a mut Json, segments: &[String]) -> Option<&'a mut Json> {
    segments.iter().try_fold(doc, |v, s| child_mut(v, s))
}

/// Sets the value at `path`, creating missing objects on the way (an array index must exist,
/// or be the array's length, which appends); false when the path crosses a scalar. A key
/// already there keeps its place; a new one goes last.
pub fn set(doc: &mut Json, path: &Path, value: Json) -> bool {
    let mut node = doc;
    let Some((last, parents)) = path.0.split_last() else {
        return false;
    };
    for segment in parents {
        if *node == Json::Null {
            *node = Json::Object(Vec::new());
        }
        let next = match node {
            Json::Object(members) => {
                if member(members, segment).is_none() {
                    members.push((segment.clone(), Json::Object(Vec::new())));
                }
                member_mut(members, segment)
            }
            Json::Array(items) => index(segment).and_then(|i| items.get_mut(i)),
            _ => None,
        };
        match next {
            Some(n) => node = n,
            None => return false,
        }
    }
    if *node == Json::Null {
        *node = Json::Object(Vec::new());
    }
    match node {
        Json::Object(members) => {
            insert(members, last, value);
            true
        }
        Json::Array(items) => match index(last) {
            Some(i) if i < items.len() => {
                items[i] = value;
                true
            }
            Some(i) if i == items.len() => {
                items.push(value);
                true
            }
            _ => false,
        },
        _ => false,
    }
}

/// Removes and returns the value at `path` (every member of that name, when a key repeats).
pub fn remove(doc: &mut Json, path: &Path) -> Option<Json> {
    let parent = walk_mut(doc, path.parent())?;
    match parent {
        Json::Object(members) => take(members, path.last()).map(|(_, v)| v),
        Json::Array(items) => {
            let i = index(path.last())?;
            (i < items.len()).then(|| items.remove(i))
        }
        _ => None,
    }
}

/// Renames the key at `path` to `new_key`, in its place (replacing a member already named
/// `new_key`); false when there is nothing at `path` or it is an array element.
pub fn rename(doc: &mut Json, path: &Path, new_key: &str) -> bool {
    let Some(Json::Object(members)) = walk_mut(doc, path.parent()) else {
        return false;
    };
    let old = path.last();
    if !members.iter().any(|(k, _)| k == old) {
        return false;
    }
    if new_key == old {
        return true;
    }
    take(members, new_key);
    match take(members, old) {
        Some((at, value)) => {
            members.insert(at, (new_key.to_string(), value));
            true
        }
        None => false,
    }
}

/// Moves the value at `from` to `to` (created as [`set`] does); false when nothing moved.
pub fn move_value(doc: &mut Json, from: &Path, to: &Path) -> bool {
    let Some(value) = remove(doc, from) else {
        return false;
    };
    set(doc, to, value)
}
