//! `swarm-chat conv info CONV`: mode, head, size, title, membership counts, and whether a
//! clone of it is running (`syncing`, only ever true through a running server).

use anyhow::Result;
use serde_json::{json, Value};
use swarm_api::id::CommitId;
use swarm_api::layout;
use swarm_api::repo::Repo;
use swarm_api::ConversationId;

use crate::App;

/// The conversation's title (`FN` of `profile.vcf`) at `head`, if it has one.
pub fn title_of(repo: &Repo<'_>, head: &CommitId) -> Option<String> {
    let vcf = repo.read_file(head, layout::PROFILE).ok()??;
    let text = String::from_utf8_lossy(&vcf);
    let value = text
        .lines()
        .find_map(|l| l.trim_end_matches('\r').strip_prefix("FN:"))?;
    // Undo the vCard escapes `ops::profile` writes.
    let mut out = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some(other) => out.push(other),
            None => {}
        }
    }
    Some(out)
}

/// What `conv info` prints for a stored conversation.
pub fn info_json(repo: &Repo<'_>) -> Result<Value> {
    let head = repo.head()?;
    let st = repo.state(&head)?;
    Ok(json!({
        "conversation": repo.id(),
        "mode": st.mode.name(),
        "head": head,
        "commits": repo.history()?.len(),
        "title": title_of(repo, &head),
        "admins": st.admins.len(),
        "members": st.members.len(),
        "invited": st.invited.len(),
        "devices": st.devices.len(),
        "syncing": false,
    }))
}

/// What `conv info` prints while a conversation is being cloned.
pub fn syncing_json(conv: ConversationId) -> Value {
    json!({"conversation": conv, "syncing": true})
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
