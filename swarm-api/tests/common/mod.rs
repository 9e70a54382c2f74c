//! Shared fixtures for the validation tests: real identities, a conversation in memory, and
//! ways to build validly signed commits that break exactly one rule.
#![allow(dead_code)]

use std::sync::Arc;

use rand_core::OsRng;
use swarm_api::body::{Body, Mode, VoteAction};
use swarm_api::commit::sign_commit;
use swarm_api::id::{AccountUri, CommitId, ConversationId, Target};
use swarm_api::identity::{Account, Crl, Device};
use swarm_api::object::{build_tree, Files, Kind, Object};
use swarm_api::ops;
use swarm_api::repo::{create_conversation, Draft, FileChange, Repo, RepoError, Signer};
use swarm_api::storage::{MemoryStorage, Storage};
use swarm_api::validate::State;
use time::OffsetDateTime;

pub const T: i64 = 1_800_000_000;

pub fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(T).unwrap()
}

/// A person: an account with one device.
pub struct P {
    pub account: Arc<Account>,
    pub device: Device,
    pub crl: Crl,
}

impl P {
    pub fn new(name: &str) -> Self {
        let account = Arc::new(Account::generate(name, now(), &mut OsRng).unwrap());
        let device = account.new_device(now(), &mut OsRng).unwrap();
        let crl = account.crl(&[], 1, now()).unwrap();
        Self {
            account,
            device,
            crl,
        }
    }
    /// Another device of the same account.
    pub fn other_device(&self) -> Self {
        Self {
            account: self.account.clone(),
            device: self.account.new_device(now(), &mut OsRng).unwrap(),
            crl: self.crl.clone(),
        }
    }
    pub fn s(&self) -> Signer<'_> {
        Signer {
            account: self.account.cert(),
            device: &self.device,
            crl: &self.crl,
        }
    }
    pub fn uri(&self) -> AccountUri {
        self.account.uri()
    }
}

/// A conversation in memory.
pub struct W {
    pub st: MemoryStorage,
    pub conv: ConversationId,
}

impl W {
    pub fn new(admin: &P, mode: Mode) -> Self {
        let st = MemoryStorage::new();
        let conv = create_conversation(&st, &admin.s(), mode, None, T).unwrap();
        Self { st, conv }
    }
    pub fn one_to_one(admin: &P, other: &P) -> Self {
        let st = MemoryStorage::new();
        let conv =
            create_conversation(&st, &admin.s(), Mode::OneToOne, Some(other.uri()), T).unwrap();
        Self { st, conv }
    }
    pub fn repo(&self) -> Repo<'_> {
        Repo::open(&self.st, self.conv).unwrap()
    }
    pub fn head(&self) -> CommitId {
        self.st.head(&self.conv).unwrap().unwrap()
    }
    pub fn state(&self) -> Arc<State> {
        self.repo().state(&self.head()).unwrap()
    }
    /// Appends through the normal (validated) path; panics if refused.
    pub fn ok(&self, who: &P, op: (Body, Vec<FileChange>)) -> CommitId {
        self.repo()
            .append(&who.s(), &op.0, &op.1, T)
            .unwrap_or_else(|e| panic!("{} refused: {e}", op.0.kind()))
    }
    pub fn text(&self, who: &P, text: &str) -> CommitId {
        self.ok(who, (Body::text(text), vec![]))
    }
    /// A signed commit on the head, not validated.
    pub fn draft(&self, who: &P, msg: &str, changes: &[FileChange], own: bool) -> Draft {
        self.draft_on(who, &[self.head()], msg, changes, own)
    }
    pub fn draft_on(
        &self,
        who: &P,
        parents: &[CommitId],
        msg: &str,
        changes: &[FileChange],
        own: bool,
    ) -> Draft {
        self.repo()
            .draft(&who.s(), parents, msg, changes, own, T)
            .unwrap()
    }
    /// A signed commit whose tree is exactly `files` (plus blobs), bypassing layout checks.
    pub fn raw(
        &self,
        who: &P,
        parents: &[CommitId],
        msg: &str,
        files: Files,
        blobs: Vec<Object>,
    ) -> Draft {
        let (tree, mut objects) = build_tree(&files);
        objects.extend(blobs);
        let c = sign_commit(&who.device, who.account.name(), tree, parents, msg, T).unwrap();
        let id = CommitId::from_object_id(&c.id()).unwrap();
        objects.push(c);
        Draft { id, objects }
    }
    pub fn files(&self) -> Files {
        self.repo().files(&self.head()).unwrap()
    }
    /// Receives `d` and asserts it is refused by `rule`, with nothing stored.
    pub fn refuse(&self, d: Draft, rule: &str) {
        let before = self.head();
        let err = self.repo().receive(d.objects.clone(), d.id).unwrap_err();
        match &err {
            RepoError::Rejected(r) => {
                assert_eq!(r.violation.rule(), rule, "wrong rule: {err}");
                assert!(!r.to_string().is_empty());
            }
            other => panic!("expected rule {rule}, got {other}"),
        }
        assert_eq!(self.head(), before, "head moved after a refusal");
        assert!(
            self.st
                .object(&self.conv, &d.id.object_id())
                .unwrap()
                .is_none(),
            "refused commit was stored"
        );
    }
    pub fn accept(&self, d: Draft) {
        self.repo()
            .receive(d.objects, d.id)
            .unwrap_or_else(|e| panic!("refused: {e}"));
    }
    pub fn invite_and_join(&self, by: &P, who: &P) {
        self.ok(by, ops::invite(who.uri()));
        let st = self.state();
        self.ok(who, ops::join(&st, who.account.cert()));
    }
    /// Votes by each of `voters`, then applies the passed vote (signed by the first voter).
    pub fn decide(&self, voters: &[&P], target: Target, action: VoteAction) -> CommitId {
        for v in voters {
            let st = self.state();
            self.ok(v, ops::vote(&st, &v.uri(), target, action).unwrap());
        }
        let st = self.state();
        let repo = self.repo();
        let op = ops::apply_vote(&repo, &st, target, action).unwrap();
        self.ok(voters[0], op)
    }
    pub fn verify(&self) -> usize {
        self.repo().verify().unwrap().commits().len()
    }
}

/// Rewrites the commit object of a draft (its id changes accordingly).
pub fn rewrite(d: &Draft, f: impl FnOnce(String) -> String) -> Draft {
    let mut objects = d.objects.clone();
    let pos = objects.iter().position(|o| o.kind == Kind::Commit).unwrap();
    let text = String::from_utf8(objects[pos].data.clone()).unwrap();
    let new = Object {
        kind: Kind::Commit,
        data: f(text).into_bytes(),
    };
    let id = CommitId::from_object_id(&new.id()).unwrap();
    objects[pos] = new;
    Draft { id, objects }
}

/// Removes the gpgsig header.
pub fn unsign(text: String) -> String {
    let mut out = String::new();
    let mut in_sig = false;
    let (header, msg) = text.split_once("\n\n").unwrap();
    for line in header.lines() {
        if line.starts_with("gpgsig ") {
            in_sig = true;
            continue;
        }
        if in_sig && line.starts_with(' ') {
            continue;
        }
        in_sig = false;
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    out.push_str(msg);
    out
}
