//! JSON body edits by path: `set`, `remove`, `rename`, `move`. A path is dot-separated keys;
//! a segment of digits indexes an array (`items.0.price`); `\.` is a literal dot in a key.
//!
//! ```
//! use serde_json::json;
//! use tollgate_transformer::json_edit::{Path, get, remove, set};
//! let mut doc = json!({"user": {"name": "ada", "card": "4111"}, "items": [{"id": 1}]});
//! remove(&mut doc, &Path::parse("user.card")?);
//! set(&mut doc, &Path::parse("items.0.qty")?, json!(2));
//! assert_eq!(doc, json!({"user": {"name": "ada"}, "items": [{"id": 1, "qty": 2}]}));
//! assert_eq!(get(&doc, &Path::parse("user.name")?), Some(&json!("ada")));
//! # Ok::<(), String>(())
//! ```

use serde_json::{Map, Value};

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

fn child<'a>(value: &'a Value, segment: &str) -> Option<&'a Value> {
    match value {
        Value::Object(map) => map.get(segment),
        Value::Array(items) => items.get(index(segment)?),
        _ => None,
    }
}

fn child_mut<'a>(value: &'a mut Value, segment: &str) -> Option<&'a mut Value> {
    match value {
        Value::Object(map) => map.get_mut(segment),
        Value::Array(items) => items.get_mut(index(segment)?),
        _ => None,
    }
}

/// The value at `path`.
pub fn get<'a>(doc: &'a Value, path: &Path) -> Option<&'a Value> {
    path.0.iter().try_fold(doc, |v, s| child(v, s))
}

fn walk_mut<'a>(doc: &'a mut Value, segments: &[String]) -> Option<&'a mut Value> {
    segments.iter().try_fold(doc, |v, s| child_mut(v, s))
}

/// Sets the value at `path`, creating missing objects on the way (an array index must exist,
/// or be the array's length, which appends); false when the path crosses a scalar.
pub fn set(doc: &mut Value, path: &Path, value: Value) -> bool {
    let mut node = doc;
    let Some((last, parents)) = path.0.split_last() else {
        return false;
    };
    for segment in parents {
        if node.is_null() {
            *node = Value::Object(Map::new());
        }
        let next = match node {
            Value::Object(map) => Some(
                map.entry(segment.clone())
                    .or_insert_with(|| Value::Object(Map::new())),
            ),
            Value::Array(items) => index(segment).and_then(|i| items.get_mut(i)),
            _ => None,
        };
        match next {
            Some(n) => node = n,
            None => return false,
        }
    }
    if node.is_null() {
        *node = Value::Object(Map::new());
    }
    match node {
        Value::Object(map) => {
            map.insert(last.clone(), value);
            true
        }
        Value::Array(items) => match index(last) {
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

/// Removes and returns the value at `path`.
pub fn remove(doc: &mut Value, path: &Path) -> Option<Value> {
    let parent = walk_mut(doc, path.parent())?;
    match parent {
        Value::Object(map) => map.remove(path.last()),
        Value::Array(items) => {
            let i = index(path.last())?;
            (i < items.len()).then(|| items.remove(i))
        }
        _ => None,
    }
}

/// Renames the key at `path` to `new_key` (replacing a value already there); false when there
/// is nothing at `path` or it is an array element.
pub fn rename(doc: &mut Value, path: &Path, new_key: &str) -> bool {
    let Some(Value::Object(map)) = walk_mut(doc, path.parent()) else {
        return false;
    };
    match map.remove(path.last()) {
        Some(v) => {
            map.insert(new_key.to_string(), v);
            true
        }
        None => false,
    }
}

/// Moves the value at `from` to `to` (created as [`set`] does); false when nothing moved.
pub fn move_value(doc: &mut Value, from: &Path, to: &Path) -> bool {
    let Some(value) = remove(doc, from) else {
        return false;
    };
    set(doc, to, value)
}
