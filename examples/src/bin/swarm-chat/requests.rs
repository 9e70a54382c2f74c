//! `swarm-chat requests` and `conv decline`: the invitations this home received
//! (`<home>/requests.json`, the library's [`swarm_api::host::Requests`]) until it joins
//! (`conv join`) or declines.
//!
//! A request only says "device D of account A says you are invited to C": nothing in it is
//! trusted. Joining clones C from a member and validates every commit; if the invitation was
//! not real, the `join` commit is refused by the rules.

use anyhow::{anyhow, Result};
use serde_json::json;
use swarm_api::host::Requests;

use crate::App;

impl App {
    /// `swarm-chat requests`.
    pub(crate) fn requests(&self) -> Result<()> {
        let r = Requests::load(&self.home.lib())?;
        self.out(json!({"requests": r.requests}), || {
            r.requests
                .iter()
                .map(|q| {
                    format!(
                        "{} from {} received {} {}",
                        q.id,
                        q.from,
                        q.received,
                        q.title.as_deref().unwrap_or("")
                    )
                    .trim_end()
                    .to_owned()
                })
                .collect::<Vec<_>>()
                .join("\n")
        });
        Ok(())
    }

    /// `swarm-chat conv decline CONV`.
    pub(crate) fn decline(&self, conv: &str) -> Result<()> {
        let conv = crate::parse_conv(conv)?;
        let removed = Requests::update(&self.home.lib(), |r| {
            r.declined.insert(conv);
            r.remove(&conv)
        })?;
        if removed.is_none() {
            return Err(anyhow!(
                "no invitation to {conv} (see `swarm-chat requests`)"
            ));
        }
        self.out(json!({"declined": conv}), || format!("declined {conv}"));
        Ok(())
    }
}
