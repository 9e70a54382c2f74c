//! What a chat client shows: a conversation's commits folded into a transcript.
//!
//! [`transcript`] takes commits in display order ([`crate::order`]) and returns the lines a
//! Jami client would show: edits (`application/edited-message`) applied to the message they
//! edit, reactions (`text/plain` with `react-to`) attached to their target, replies (`reply-to`)
//! placed right after the message they answer, membership and call events as one-line
//! summaries, votes and merge commits hidden. Pure: no storage, no clock.
//!
//! [`read_history`] walks any repository (native or jamid) from a head, for readers that have
//! no [`crate::repo::Repo`] (such as `swarm-chat log --repo`).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use gix_hash::ObjectId;
use serde::Serialize;

use crate::body::{Body, MemberAction};
use crate::commit::{Commit, Scheme};
use crate::id::{AccountUri, CommitId, DeviceId, Target};
use crate::layout::{Kind as LayoutKind, Path};
use crate::object::{read_tree, Kind, ObjectError, ObjectSource, TreeLimits};
use crate::order::display_order;
use crate::validate::keys::DeviceKey;

/// A reaction attached to a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Reaction {
    /// The reaction's commit.
    pub id: CommitId,
    /// Who reacted.
    pub author: Option<AccountUri>,
    /// Their display name (from the commit).
    pub name: String,
    /// The reaction (an emoji, usually).
    pub body: String,
}

/// One line of a transcript.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Entry {
    /// The commit shown.
    pub id: CommitId,
    /// The account of the signing device, when its certificate is known.
    pub author: Option<AccountUri>,
    /// The author's display name (from the commit).
    pub name: String,
    /// The signing device.
    pub device: DeviceId,
    /// The commit time (as the author's clock said).
    pub time: i64,
    /// The commit `type`.
    #[serde(rename = "type")]
    pub kind: String,
    /// What to show: the text (after its last edit), or a summary of the event.
    pub text: String,
    /// The edits applied to this message, oldest first (the last one gave `text`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub edits: Vec<CommitId>,
    /// Whether the last edit deleted the message (an edit with an empty body).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    /// The message this one answers (shown right after it).
    #[serde(default, rename = "reply-to", skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<CommitId>,
    /// How deep in a reply thread (0 for messages that answer nothing).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub depth: usize,
    /// Reactions to this message, in display order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reactions: Vec<Reaction>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// A commit with the account that signed it (when known).
#[derive(Debug, Clone)]
pub struct Authored {
    /// The commit.
    pub commit: Commit,
    /// The signer's account.
    pub author: Option<AccountUri>,
}

fn millis(ms: &str) -> String {
    match ms.parse::<u64>() {
        Ok(ms) => format!("{}.{:01} s", ms / 1000, (ms % 1000) / 100),
        Err(_) => format!("{ms} ms"),
    }
}

/// The one-line summary of a commit that is not a plain message, or `None` for commits a
/// client does not show (votes, merges, reactions and edits, which are folded).
fn summary(body: &Body) -> Option<String> {
    Some(match body {
        Body::Initial(i) => match i.invited {
            Some(u) => format!("created the conversation ({}, with {u})", i.mode.name()),
            None => format!("created the conversation ({})", i.mode.name()),
        },
        Body::Text(t) => t.body.clone(),
        Body::Member(m) => {
            let who = match m.uri {
                Target::Account(a) => a.to_string(),
                Target::Device(d) => format!("device {d}"),
            };
            match m.action {
                MemberAction::Add => format!("invited {who}"),
                MemberAction::Join => "joined".into(),
                MemberAction::Remove => "left".into(),
                MemberAction::Ban => format!("banned {who}"),
                MemberAction::Unban => format!("unbanned {who}"),
                MemberAction::Promote => format!("made {who} an admin"),
            }
        }
        Body::UpdateProfile(_) => "updated the conversation profile".into(),
        Body::DataTransfer(d) => format!("sent file {} ({} bytes)", d.display_name, d.total_size),
        Body::CallHistory(h) => match (&h.to, &h.conf_id, &h.duration) {
            (Some(to), _, Some(d)) => format!("called {to} ({})", millis(d)),
            (_, Some(_), None) => "started a call".into(),
            (_, Some(_), Some(d)) => format!("call ended ({})", millis(d)),
            _ => "call".into(),
        },
        Body::Other { kind, .. } if kind == crate::body::types::PLUGIN_INSTALL => {
            "pinned a plugin".into()
        }
        Body::Other { kind, .. } if kind == crate::body::types::PLUGIN_REMOVE => {
            "unpinned a plugin".into()
        }
        Body::Other { kind, object } => match object.get("body").and_then(|b| b.as_str()) {
            Some(b) => format!("[{kind}] {b}"),
            None => format!("[{kind}]"),
        },
        Body::Edit(_) | Body::Vote(_) => return None,
    })
}

/// Folds commits (in display order) into what a client shows. See the module docs.
pub fn transcript(commits: &[Authored]) -> Vec<Entry> {
    let mut entries: Vec<Entry> = Vec::new();
    let mut index: HashMap<CommitId, usize> = HashMap::new();
    // Edits may target an edit; they resolve to the message edited first.
    let mut edit_root: HashMap<CommitId, CommitId> = HashMap::new();
    for a in commits {
        let c = &a.commit;
        if c.parents.len() > 1 {
            continue; // merges
        }
        let Ok(body) = Body::parse(&c.message) else {
            continue; // not a body a client can show
        };
        match &body {
            Body::Edit(e) => {
                let root = edit_root.get(&e.edit).copied().unwrap_or(e.edit);
                edit_root.insert(c.id, root);
                if let Some(&i) = index.get(&root) {
                    // Only the author edits (validation enforces it; a reader checks too).
                    if entries[i].author.is_some() && entries[i].author == a.author {
                        entries[i].text = e.body.clone();
                        entries[i].deleted = e.body.is_empty();
                        entries[i].edits.push(c.id);
                    }
                }
                continue;
            }
            Body::Text(t) => {
                if let Some(target) = t.react_to {
                    if let Some(&i) = index.get(&target) {
                        entries[i].reactions.push(Reaction {
                            id: c.id,
                            author: a.author,
                            name: c.author_name.clone(),
                            body: t.body.clone(),
                        });
                        continue;
                    }
                }
            }
            _ => {}
        }
        let Some(text) = summary(&body) else {
            continue;
        };
        let reply_to = match &body {
            Body::Text(t) => t.reply_to,
            _ => None,
        };
        index.insert(c.id, entries.len());
        entries.push(Entry {
            id: c.id,
            author: a.author,
            name: c.author_name.clone(),
            device: c.device,
            time: c.time,
            kind: body.kind().to_owned(),
            text,
            edits: Vec::new(),
            deleted: false,
            reply_to,
            depth: 0,
            reactions: Vec::new(),
        });
    }
    thread(entries, &index)
}

/// Places every reply right after the message it answers (after earlier replies to it),
/// depth first; a reply whose target is not shown stays where it is.
fn thread(entries: Vec<Entry>, index: &HashMap<CommitId, usize>) -> Vec<Entry> {
    let mut children: HashMap<usize, Vec<usize>> = HashMap::new();
    let mut roots = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        match e.reply_to.and_then(|t| index.get(&t)) {
            // Display order puts a target before its replies; `j < i` also rules out cycles.
            Some(&j) if j < i => children.entry(j).or_default().push(i),
            _ => roots.push(i),
        }
    }
    let mut order = Vec::with_capacity(entries.len());
    let mut stack: Vec<(usize, usize)> = roots.into_iter().rev().map(|i| (i, 0)).collect();
    while let Some((i, depth)) = stack.pop() {
        order.push((i, depth));
        if let Some(kids) = children.get(&i) {
            stack.extend(kids.iter().rev().map(|k| (*k, depth + 1)));
        }
    }
    let mut slots: Vec<Option<Entry>> = entries.into_iter().map(Some).collect();
    order
        .into_iter()
        .filter_map(|(i, depth)| {
            let mut e = slots[i].take()?;
            e.depth = depth;
            Some(e)
        })
        .collect()
}

/// Why a history could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ViewError {
    /// An object is missing or malformed.
    #[error(transparent)]
    Objects(#[from] ObjectError),
    /// A commit does not decode.
    #[error("{0}")]
    Commit(#[from] crate::commit::CommitParseError),
    /// More commits than the caller allows.
    #[error("more than {0} commits")]
    TooMany(usize),
}

/// Every commit reachable from `head`, in display order, each with the account of its
/// signing device, read from the device certificate in the commit's own tree (as jamid's
/// `isValidUserAtCommit` does; `devices/` or, once banned, `banned/devices/`). Reads at most
/// `max_commits` commits. Nothing is validated: use [`crate::validate::Engine::verify`]
/// first to show only what is valid.
pub fn read_history(
    src: &dyn ObjectSource,
    head: CommitId,
    scheme: Scheme,
    max_commits: usize,
    tree_limits: TreeLimits,
) -> Result<Vec<Authored>, ViewError> {
    let mut commits: BTreeMap<CommitId, Commit> = BTreeMap::new();
    let mut queue = VecDeque::from([head]);
    let mut seen = HashSet::from([head]);
    while let Some(id) = queue.pop_front() {
        if commits.len() >= max_commits {
            return Err(ViewError::TooMany(max_commits));
        }
        let obj = src.expect(&id.object_id(), Kind::Commit)?;
        let c = Commit::parse_with(id, &obj.data, scheme)?;
        for p in &c.parents {
            if seen.insert(*p) {
                queue.push_back(*p);
            }
        }
        commits.insert(id, c);
    }
    let order = display_order(commits.values().map(|c| (c.id, c.parents.as_slice())));
    let mut by_tree: HashMap<ObjectId, HashMap<DeviceId, ObjectId>> = HashMap::new();
    let mut by_blob: HashMap<ObjectId, Option<AccountUri>> = HashMap::new();
    let mut out = Vec::with_capacity(order.len());
    for id in order {
        let Some(commit) = commits.remove(&id) else {
            continue;
        };
        if let std::collections::hash_map::Entry::Vacant(slot) = by_tree.entry(commit.tree) {
            let mut devices = HashMap::new();
            for (path, blob) in read_tree(src, &commit.tree, tree_limits)? {
                let dev = match Path::parse(&path) {
                    Some(Path::Device(d)) => d,
                    Some(Path::Banned(LayoutKind::Devices, d)) => match d.parse() {
                        Ok(d) => d,
                        Err(_) => continue,
                    },
                    _ => continue,
                };
                devices.insert(dev, blob);
            }
            slot.insert(devices);
        }
        let blob = by_tree
            .get(&commit.tree)
            .and_then(|d| d.get(&commit.device))
            .copied();
        let author = match blob {
            None => None,
            Some(blob) => *by_blob.entry(blob).or_insert_with(|| {
                let data = src.expect(&blob, Kind::Blob).ok()?.data;
                let key = DeviceKey::parse(scheme, &data).ok()?;
                (key.id() == commit.device)
                    .then(|| key.claimed_account())
                    .flatten()
            }),
        };
        out.push(Authored { commit, author });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(n: u8, parents: &[u8], msg: &str, author: u8) -> Authored {
        let dev = DeviceId::from_bytes([author; 32]);
        Authored {
            commit: Commit {
                id: CommitId::from_bytes([n; 20]),
                tree: ObjectId::null(gix_hash::Kind::Sha1),
                parents: parents
                    .iter()
                    .map(|p| CommitId::from_bytes([*p; 20]))
                    .collect(),
                author_name: format!("user{author}"),
                device: dev,
                time: n as i64,
                message: msg.to_owned(),
                signature: None,
                signed_payload: Vec::new(),
            },
            author: Some(AccountUri::from_bytes([author; 20])),
        }
    }

    fn id(n: u8) -> String {
        CommitId::from_bytes([n; 20]).to_string()
    }

    #[test]
    fn edits_reactions_and_replies_fold_into_their_targets() {
        let commits = vec![
            commit(1, &[], r#"{"mode":2,"type":"initial"}"#, 1),
            commit(2, &[1], r#"{"body":"first","type":"text/plain"}"#, 1),
            commit(3, &[2], r#"{"body":"second","type":"text/plain"}"#, 2),
            commit(
                4,
                &[3],
                &format!(
                    r#"{{"body":"re first","reply-to":"{}","type":"text/plain"}}"#,
                    id(2)
                ),
                2,
            ),
            commit(
                5,
                &[4],
                &format!(
                    r#"{{"body":"first!","edit":"{}","type":"application/edited-message"}}"#,
                    id(2)
                ),
                1,
            ),
            // An edit by someone else is not applied.
            commit(
                6,
                &[5],
                &format!(
                    r#"{{"body":"hijack","edit":"{}","type":"application/edited-message"}}"#,
                    id(2)
                ),
                2,
            ),
            commit(
                7,
                &[6],
                &format!(
                    r#"{{"body":"+1","react-to":"{}","type":"text/plain"}}"#,
                    id(3)
                ),
                1,
            ),
            commit(
                8,
                &[7],
                &format!(
                    r#"{{"type":"vote","uri":"{}","action":"ban"}}"#,
                    AccountUri::from_bytes([2; 20])
                ),
                1,
            ),
            commit(9, &[8], &format!("Merge commit '{}'", id(7)), 1),
        ];
        let t = transcript(&commits);
        let ids: Vec<CommitId> = t.iter().map(|e| e.id).collect();
        let c = |n: u8| CommitId::from_bytes([n; 20]);
        assert_eq!(
            ids,
            vec![c(1), c(2), c(4), c(3)],
            "reply after its target; folded and hidden commits gone"
        );
        assert_eq!(t[1].text, "first!");
        assert_eq!(t[1].edits, vec![c(5)]);
        assert_eq!((t[2].depth, t[2].reply_to), (1, Some(c(2))));
        assert_eq!(t[3].reactions.len(), 1);
        assert_eq!(t[3].reactions[0].body, "+1");
    }

    #[test]
    fn an_empty_edit_deletes_and_replies_to_unknown_targets_stay_in_place() {
        let commits = vec![
            commit(1, &[], r#"{"body":"oops","type":"text/plain"}"#, 1),
            commit(
                2,
                &[1],
                &format!(
                    r#"{{"body":"","edit":"{}","type":"application/edited-message"}}"#,
                    id(1)
                ),
                1,
            ),
            commit(
                3,
                &[2],
                &format!(
                    r#"{{"body":"to nowhere","reply-to":"{}","type":"text/plain"}}"#,
                    id(9)
                ),
                1,
            ),
        ];
        let t = transcript(&commits);
        assert!(t[0].deleted);
        assert_eq!(t[1].depth, 0);
        assert_eq!(t.len(), 2);
    }
}
