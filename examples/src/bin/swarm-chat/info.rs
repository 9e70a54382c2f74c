//! `swarm-chat conv info CONV`: mode, head, size, title, membership counts, and whether a
//! clone of it is running (`syncing`, only ever true through a running server).

use anyhow::Result;
use serde_json::Value;
use swarm_api::host::Info;
use swarm_api::repo::Repo;

use crate::App;

/// What `conv info` prints for a stored conversation.
pub fn info_json(repo: &Repo<'_>) -> Result<Value> {
    Ok(serde_json::to_value(Info::of(repo)?)?)
}

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

impl App {
    /// `swarm-chat conv info CONV` on storage.
    pub(crate) fn info(&self, conv: &str) -> Result<()> {
        let storage = self.storage()?;
        let repo = self.repo(storage.as_ref(), conv)?;
        let v = info_json(&repo)?;
        self.out(v.clone(), || info_text(&v));
        Ok(())
    }
}
