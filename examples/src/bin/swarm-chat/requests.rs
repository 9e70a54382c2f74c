//! Invitations: the signal an inviter sends ([`INVITE`]) and the requests an invitee keeps in
//! its home (`<home>/requests.json`) until it joins (`conv join`) or declines (`conv decline`).
//!
//! A request only says "device D of account A says you are invited to C": nothing in it is
//! trusted. Joining clones C from a member and validates every commit; if the invitation was
//! not real, the `join` commit is refused by the rules.

use std::collections::BTreeSet;
use std::sync::Mutex;

use anyhow::{anyhow, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;
use swarm_api::id::{AccountUri, DeviceId};
use swarm_api::ConversationId;

use crate::home::Home;
use crate::App;

/// The signal kind of invitations.
pub const INVITE: &str = "application/invite+json";
const FILE: &str = "requests.json";
/// At most this many pending requests are kept: any peer may send invitations, so a flood
/// of them must not grow the home without bound (the oldest stay; later ones are dropped).
pub const MAX_PENDING: usize = 256;
static LOCK: Mutex<()> = Mutex::new(());

/// The invitation signal's payload (the sender is the authenticated peer, not in here).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invitation {
    /// The conversation.
    #[serde(rename = "conversationId")]
    pub conversation: ConversationId,
    /// Its title at the inviter's head, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Its mode's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

/// A received invitation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The conversation.
    pub id: ConversationId,
    /// The inviting account (as authenticated by the transport).
    pub from: AccountUri,
    /// The inviting device, where `conv join` clones from by default.
    pub device: DeviceId,
    /// When it arrived (Unix seconds).
    pub received: i64,
    /// The title the inviter announced.
    #[serde(default)]
    pub title: Option<String>,
    /// The mode the inviter announced.
    #[serde(default)]
    pub mode: Option<String>,
}

/// The contents of `requests.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Requests {
    /// Pending invitations, oldest first.
    #[serde(default)]
    pub requests: Vec<Request>,
    /// Declined conversations: invitations to them are not listed again.
    #[serde(default)]
    pub declined: BTreeSet<ConversationId>,
}

impl Requests {
    /// Loads the requests of `home`.
    pub fn load(home: &Home) -> Result<Self> {
        home.read_json(FILE)
    }

    /// Loads, changes and saves under the process-wide lock.
    pub fn update<R>(home: &Home, f: impl FnOnce(&mut Requests) -> R) -> Result<R> {
        home.update_json(FILE, &LOCK, f)
    }

    /// Adds a request unless the conversation was declined or is already listed (then the
    /// newest sender is kept, so a join clones from a device that was just reachable), or
    /// [`MAX_PENDING`] are pending. Returns whether it is new.
    pub fn add(&mut self, req: Request) -> bool {
        if self.declined.contains(&req.id) {
            return false;
        }
        if let Some(old) = self.requests.iter_mut().find(|r| r.id == req.id) {
            old.device = req.device;
            old.from = req.from;
            return false;
        }
        if self.requests.len() >= MAX_PENDING {
            tracing::warn!(target: "swarm_chat::requests", conv = %req.id, from = %req.from, "too many pending invitations: dropped");
            return false;
        }
        self.requests.push(req);
        true
    }

    /// The request for `conv`, if any.
    pub fn get(&self, conv: &ConversationId) -> Option<&Request> {
        self.requests.iter().find(|r| r.id == *conv)
    }

    /// Removes the request for `conv` (joined or declined).
    pub fn remove(&mut self, conv: &ConversationId) -> Option<Request> {
        let i = self.requests.iter().position(|r| r.id == *conv)?;
        Some(self.requests.remove(i))
    }
}

impl App {
    /// `swarm-chat requests`.
    pub(crate) fn requests(&self) -> Result<()> {
        let r = Requests::load(&self.home)?;
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
        let removed = Requests::update(&self.home, |r| {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn req(conv: u8) -> Request {
        Request {
            id: format!("{:040x}", conv).parse().expect("conversation id"),
            from: format!("{:040x}", 1).parse().expect("uri"),
            device: format!("{:064x}", 2).parse().expect("device"),
            received: 10,
            title: Some("t".into()),
            mode: None,
        }
    }

    #[test]
    fn a_request_is_listed_once_and_a_declined_one_never_again() {
        let mut r = Requests::default();
        assert!(r.add(req(1)));
        assert!(!r.add(req(1)), "listed once");
        assert_eq!(r.requests.len(), 1);
        r.declined.insert(req(1).id);
        r.remove(&req(1).id);
        assert!(!r.add(req(1)), "declined stays declined");
        assert!(r.requests.is_empty());
    }

    #[test]
    fn a_flood_of_invitations_is_capped() {
        let mut r = Requests::default();
        for i in 0..=MAX_PENDING {
            let mut q = req(0);
            q.id = format!("{:040x}", i + 1).parse().expect("conversation id");
            r.add(q);
        }
        assert_eq!(r.requests.len(), MAX_PENDING);
    }

    #[test]
    fn the_invitation_payload_is_strict_json() {
        let inv = Invitation {
            conversation: req(3).id,
            title: None,
            mode: Some("invites-only".into()),
        };
        let bytes = serde_json::to_vec(&inv).expect("encode");
        assert_eq!(
            serde_json::from_slice::<Invitation>(&bytes).expect("decode"),
            inv
        );
        assert!(serde_json::from_slice::<Invitation>(b"{\"conversationId\":\"zz\"}").is_err());
        assert!(serde_json::from_slice::<Invitation>(b"\xff").is_err());
    }
}
