//! `swarm-chat conv info CONV`: mode, head, size, title, membership counts, and whether a
//! clone of it is running (`syncing`, only ever true through a running server).

use serde_json::Value;

/// The text form: one `key value` line per field.
pub fn info_text(v: &Value) -> String {
    v.as_object()
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| match v {
                    Value::Null => None,
                    Value::String(s) => Some(format!("{k}: {s}")),
                    other => Some(format!("{k}: {other}")),
                })
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}
