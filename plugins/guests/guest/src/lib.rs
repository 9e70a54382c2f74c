//! Helpers shared by swarm's example plugins: reading a commit body, checking commit ids.
//! Plain Rust over strings and JSON, so each plugin keeps its own generated bindings.

use serde_json::{Map, Value};

/// A commit body: one JSON object.
pub type Object = Map<String, Value>;

/// Parses a commit message as a JSON object.
pub fn object(body: &str) -> Result<Object, String> {
    match serde_json::from_str::<Value>(body) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err("the body is not a JSON object".to_string()),
        Err(e) => Err(format!("the body is not JSON: {e}")),
    }
}

/// The string field `name`, required.
pub fn string<'a>(o: &'a Object, name: &str) -> Result<&'a str, String> {
    match o.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(format!("\"{name}\" must be a string")),
        None => Err(format!("\"{name}\" is missing")),
    }
}

/// The string field `name`, if present; an error if present and not a string.
pub fn opt_string<'a>(o: &'a Object, name: &str) -> Result<Option<&'a str>, String> {
    match o.get(name) {
        None => Ok(None),
        Some(_) => string(o, name).map(Some),
    }
}

/// A commit id: 40 lowercase hex characters.
pub fn is_commit_id(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The string field `name`, required to be a commit id.
pub fn commit_id<'a>(o: &'a Object, name: &str) -> Result<&'a str, String> {
    let s = string(o, name)?;
    if is_commit_id(s) {
        Ok(s)
    } else {
        Err(format!("\"{name}\" is not a commit id: {s:?}"))
    }
}

/// The `type` of a commit message, if it is a JSON object with one.
pub fn type_of(body: &str) -> Option<String> {
    let o = object(body).ok()?;
    o.get("type").and_then(Value::as_str).map(ToString::to_string)
}

/// A decimal number written as a string (`"1200"`).
pub fn is_decimal(s: &str) -> bool {
    !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit())
}
