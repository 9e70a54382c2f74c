//! The commits a member makes to change the conversation: invite, join, leave, vote,
//! ban/unban, profile. Each function returns the body and the exact file changes that the
//! validator's rule for that commit expects, computed from the state at the head; the
//! caller appends them with [`Repo::append`], which validates before storing (so an action
//! the rules forbid is refused locally with the rule's error).

use gix_hash::ObjectId;

use crate::body::{Body, Member, MemberAction, Vote, VoteAction};
use crate::id::{AccountUri, CommitId, Target};
use crate::identity::{AccountCert, DeviceCert};
use crate::layout::{self, VoteDir};
use crate::repo::{FileChange, Repo, RepoError};
use crate::validate::rules::vote_moves;
use crate::validate::{State, Violation};

/// Errors preparing an operation (before any rule is checked).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpError {
    /// Reading the conversation failed.
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// The target is not in a state this operation applies to.
    #[error("{0}")]
    Target(String),
}

fn member(uri: Target, action: MemberAction) -> Body {
    Body::Member(Member {
        uri,
        action,
        extra: Default::default(),
    })
}

/// Invite `uri`: adds the empty `invited/<uri>`.
pub fn invite(uri: AccountUri) -> (Body, Vec<FileChange>) {
    (
        member(uri.into(), MemberAction::Add),
        vec![FileChange::Write(layout::invited(&uri), Vec::new())],
    )
}

/// Join as `account`: adds `members/<uri>.crt`, removes `invited/<uri>` if present (the
/// device certificate and CRL are added by [`Repo::append`]).
pub fn join(state: &State, account: &AccountCert) -> (Body, Vec<FileChange>) {
    let uri = account.uri();
    let mut changes = vec![FileChange::Write(
        layout::member_cert(&uri),
        account.pem().as_bytes().to_vec(),
    )];
    if state.invited.contains(&uri) {
        changes.push(FileChange::Delete(layout::invited(&uri)));
    }
    (member(uri.into(), MemberAction::Join), changes)
}

/// Leave: removes the leaver's account certificate, device certificates and CRLs.
pub fn leave(
    repo: &Repo<'_>,
    head: &CommitId,
    uri: AccountUri,
) -> Result<(Body, Vec<FileChange>), OpError> {
    let mut changes = Vec::new();
    let files = repo.files(head)?;
    for p in [layout::admin_cert(&uri), layout::member_cert(&uri)] {
        if files.contains_key(&p) {
            changes.push(FileChange::Delete(p));
        }
    }
    if changes.is_empty() {
        return Err(OpError::Target(format!("{uri} is not a member")));
    }
    for (dev, cert) in repo.device_certs(head)? {
        if cert.claimed_account() == Some(uri) {
            changes.push(FileChange::Delete(layout::device_cert(&dev)));
        }
    }
    let prefix = format!("CRLs/{uri}/");
    changes.extend(
        files
            .keys()
            .filter(|p| p.starts_with(&prefix))
            .map(|p| FileChange::Delete(p.clone())),
    );
    Ok((member(uri.into(), MemberAction::Remove), changes))
}

/// Cast `voter`'s vote to ban, unban or promote `target`.
pub fn vote(
    state: &State,
    voter: &AccountUri,
    target: Target,
    action: VoteAction,
) -> Result<(Body, Vec<FileChange>), OpError> {
    let dir = VoteDir::from(action);
    let kind = state.vote_kind(dir, &target).ok_or_else(|| {
        OpError::Target(format!(
            "{target} is not in a state a {} vote applies to",
            dir.dir()
        ))
    })?;
    let body = Body::Vote(Vote {
        uri: target,
        action,
        extra: Default::default(),
    });
    Ok((
        body,
        vec![FileChange::Write(
            layout::vote(dir, kind, &target.to_string(), voter),
            Vec::new(),
        )],
    ))
}

/// Apply a passed vote: the file moves of [`crate::validate::rules::vote_moves`] and the
/// deletion of the vote files, as a `member` ban/unban/promote commit.
pub fn apply_vote(
    repo: &Repo<'_>,
    state: &State,
    target: Target,
    action: VoteAction,
) -> Result<(Body, Vec<FileChange>), OpError> {
    let dir = VoteDir::from(action);
    let kind = state.vote_kind(dir, &target).ok_or_else(|| {
        OpError::Target(format!(
            "{target} is not in a state a {} applies to",
            dir.dir()
        ))
    })?;
    let device_account = |_: &str, blob: &ObjectId| -> Result<Option<AccountUri>, Violation> {
        let data = repo
            .blob(blob)
            .map_err(|e| Violation::Objects(e.to_string()))?;
        Ok(std::str::from_utf8(&data)
            .ok()
            .and_then(|pem| DeviceCert::from_pem(pem).ok())
            .and_then(|c| c.claimed_account()))
    };
    let moves = vote_moves(state, dir, kind, &target, true, &device_account)
        .map_err(|v| OpError::Target(v.to_string()))?;
    let mut changes = Vec::new();
    for (from, to, blob) in moves {
        changes.push(FileChange::Delete(from));
        changes.push(FileChange::Write(to, repo.blob(&blob)?));
    }
    let t = target.to_string();
    if let Some(voters) = state.votes.get(&(dir, kind, t.clone())) {
        for v in voters {
            changes.push(FileChange::Delete(layout::vote(dir, kind, &t, v)));
        }
    }
    let action = match action {
        VoteAction::Ban => MemberAction::Ban,
        VoteAction::Unban => MemberAction::Unban,
        VoteAction::Promote => MemberAction::Promote,
    };
    Ok((member(target, action), changes))
}

/// Update the profile: a vCard with the title (`FN`) and description.
pub fn profile(title: Option<&str>, description: Option<&str>) -> (Body, Vec<FileChange>) {
    let esc = |s: &str| {
        s.replace('\\', "\\\\")
            .replace('\n', "\\n")
            .replace(',', "\\,")
            .replace(';', "\\;")
    };
    let mut v = String::from("BEGIN:VCARD\r\nVERSION:2.1\r\n");
    if let Some(t) = title {
        v.push_str(&format!("FN:{}\r\n", esc(t)));
    }
    if let Some(d) = description {
        v.push_str(&format!("DESCRIPTION:{}\r\n", esc(d)));
    }
    v.push_str("END:VCARD\r\n");
    (
        Body::UpdateProfile(Default::default()),
        vec![FileChange::Write(layout::PROFILE.into(), v.into_bytes())],
    )
}
