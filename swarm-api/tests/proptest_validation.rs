//! Property tests of validation (issue 3): random *valid* conversations (several people,
//! every mode but one-to-one, invitations and joins, votes, bans, unbans, promotions,
//! profile edits, messages, replies, reactions, edits, leaves, a second device) always
//! verify; a random *single-point corruption* of such a history (one byte of a commit, of a
//! signature, of a certificate; a parent line; a dropped object; a file moved to a path it
//! does not belong to; a commit re-signed by another member's device) is always refused
//! when received, with the failing commit identified and storage unchanged.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use common::*;
use gix_hash::ObjectId;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use ssh_key::{HashAlg, LineEnding, SshSig};
use swarm_api::body::{Body, Mode, VoteAction};
use swarm_api::commit::{sign_commit, NAMESPACE};
use swarm_api::id::{CommitId, ConversationId, DeviceId, Target};
use swarm_api::layout::{self, VoteDir};
use swarm_api::object::{build_tree, Files, Kind, Object};
use swarm_api::ops;
use swarm_api::repo::{Repo, RepoError};
use swarm_api::storage::{ConversationObjects, HeadUpdate, MemoryStorage, Storage};
use swarm_api::validate::{Engine, MemberRole, State};

/// People shared by every case (identities are the expensive part): the creator, five
/// others, and a second device of person 1.
struct Pool {
    people: Vec<P>,
    phone: P,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let people: Vec<P> = ["Ada", "Bob", "Cy", "Dee", "Eve", "Fay"]
            .iter()
            .map(|n| P::new(n))
            .collect();
        let phone = people[1].other_device();
        Pool { people, phone }
    })
}

impl Pool {
    /// The person (any device) whose device is `dev`.
    fn by_device(&self, dev: &DeviceId) -> &P {
        self.people
            .iter()
            .chain(std::iter::once(&self.phone))
            .find(|p| p.device.id() == *dev)
            .expect("a device of the pool")
    }
}

/// One step of a random conversation; the numbers pick among the people (or messages) the
/// step applies to at that point, so every generated sequence is valid.
#[derive(Debug, Clone)]
enum Step {
    Text(u8),
    Reply(u8, u16),
    React(u8, u16),
    Edit(u8, u16),
    Invite(u8, u8),
    Join(u8),
    Vote(u8, u8),
    Ban(u8),
    Unban(u8),
    Promote(u8),
    Profile(u8, u16),
    Leave(u8),
    Phone(u16),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => any::<u8>().prop_map(Step::Text),
        1 => (any::<u8>(), any::<u16>()).prop_map(|(a, b)| Step::Reply(a, b)),
        1 => (any::<u8>(), any::<u16>()).prop_map(|(a, b)| Step::React(a, b)),
        1 => (any::<u8>(), any::<u16>()).prop_map(|(a, b)| Step::Edit(a, b)),
        3 => (any::<u8>(), any::<u8>()).prop_map(|(a, b)| Step::Invite(a, b)),
        3 => any::<u8>().prop_map(Step::Join),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(a, b)| Step::Vote(a, b)),
        1 => any::<u8>().prop_map(Step::Ban),
        1 => any::<u8>().prop_map(Step::Unban),
        1 => any::<u8>().prop_map(Step::Promote),
        1 => (any::<u8>(), any::<u16>()).prop_map(|(a, b)| Step::Profile(a, b)),
        1 => any::<u8>().prop_map(Step::Leave),
        1 => any::<u16>().prop_map(Step::Phone),
    ]
}

fn mode() -> impl Strategy<Value = Mode> {
    prop_oneof![
        Just(Mode::AdminInvitesOnly),
        Just(Mode::InvitesOnly),
        Just(Mode::Public)
    ]
}

fn pick<T: Copy>(items: &[T], n: usize) -> Option<T> {
    (!items.is_empty()).then(|| items[n % items.len()])
}

/// A conversation built from steps, with the messages it holds (commit, author index).
struct Conv {
    w: W,
    messages: Vec<(CommitId, usize)>,
}

impl Conv {
    fn people(&self) -> &'static [P] {
        &pool().people
    }
    fn role(&self, st: &State, i: usize) -> Option<MemberRole> {
        st.role(&self.people()[i].uri())
    }
    /// Indices of people with one of `roles` (person 0, the creator, is never banned and
    /// never leaves, so someone can always speak).
    fn with_role(&self, st: &State, roles: &[Option<MemberRole>]) -> Vec<usize> {
        (0..self.people().len())
            .filter(|i| roles.contains(&self.role(st, *i)))
            .collect()
    }
    fn speakers(&self, st: &State) -> Vec<usize> {
        self.with_role(st, &[Some(MemberRole::Admin), Some(MemberRole::Member)])
    }
    fn say(&mut self, i: usize, body: Body) {
        let who = &self.people()[i];
        let id = self.w.ok(who, (body, vec![]));
        self.messages.push((id, i));
    }
    /// Every admin votes (those that have not yet), then the first admin applies the vote.
    fn decide(&self, target: Target, action: VoteAction) {
        let st = self.w.state();
        let admins = self.with_role(&st, &[Some(MemberRole::Admin)]);
        let dir = VoteDir::from(action);
        let kind = st.vote_kind(dir, &target).expect("vote applies");
        let voted = st
            .votes
            .get(&(dir, kind, target.to_string()))
            .cloned()
            .unwrap_or_default();
        for a in &admins {
            let p = &self.people()[*a];
            if !voted.contains(&p.uri()) {
                let st = self.w.state();
                self.w
                    .ok(p, ops::vote(&st, &p.uri(), target, action).expect("vote"));
            }
        }
        let st = self.w.state();
        let repo = self.w.repo();
        let op = ops::apply_vote(&repo, &st, target, action).expect("apply");
        self.w.ok(&self.people()[admins[0]], op);
    }

    fn apply(&mut self, step: &Step) {
        let st = self.w.state();
        let speakers = self.speakers(&st);
        let speaker = |n: u8| pick(&speakers, n as usize).expect("the creator speaks");
        let account = |i: usize| Target::Account(self.people()[i].uri());
        match *step {
            Step::Text(a) => {
                let i = speaker(a);
                self.say(i, Body::text(format!("hello from {i}")));
            }
            Step::Reply(a, m) | Step::React(a, m) => {
                let i = speaker(a);
                let Some((target, _)) = pick(&self.messages, m as usize) else {
                    return self.say(i, Body::text("first"));
                };
                let key = if matches!(step, Step::Reply(..)) {
                    "reply-to"
                } else {
                    "react-to"
                };
                let json = format!(r#"{{"body":"re","{key}":"{target}","type":"text/plain"}}"#);
                self.say(i, Body::parse(&json).expect("body"));
            }
            Step::Edit(a, m) => {
                let i = speaker(a);
                let own: Vec<CommitId> = self
                    .messages
                    .iter()
                    .filter(|(_, who)| *who == i)
                    .map(|(c, _)| *c)
                    .collect();
                match pick(&own, m as usize) {
                    Some(target) => {
                        let json = format!(
                            r#"{{"body":"edited","edit":"{target}","type":"application/edited-message"}}"#
                        );
                        self.say(i, Body::parse(&json).expect("body"));
                    }
                    None => self.say(i, Body::text("nothing to edit")),
                }
            }
            Step::Invite(a, b) => {
                let inviters = match st.mode {
                    Mode::AdminInvitesOnly => self.with_role(&st, &[Some(MemberRole::Admin)]),
                    _ => speakers.clone(),
                };
                let outsiders = self.with_role(&st, &[None]);
                if let (Some(by), Some(who)) =
                    (pick(&inviters, a as usize), pick(&outsiders, b as usize))
                {
                    self.w
                        .ok(&self.people()[by], ops::invite(self.people()[who].uri()));
                }
            }
            Step::Join(a) => {
                let mut joiners = self.with_role(&st, &[Some(MemberRole::Invited)]);
                if st.mode == Mode::Public {
                    joiners.extend(self.with_role(&st, &[None]));
                }
                if let Some(j) = pick(&joiners, a as usize) {
                    let p = &self.people()[j];
                    self.w.ok(p, ops::join(&st, p.account.cert()));
                }
            }
            Step::Vote(a, b) => {
                // One admin's vote to ban someone, left open.
                let admins = self.with_role(&st, &[Some(MemberRole::Admin)]);
                let targets: Vec<usize> = self
                    .with_role(&st, &[Some(MemberRole::Member), Some(MemberRole::Invited)])
                    .into_iter()
                    .filter(|t| *t != 0)
                    .collect();
                if let (Some(v), Some(t)) = (pick(&admins, a as usize), pick(&targets, b as usize))
                {
                    let voter = &self.people()[v];
                    let dir = VoteDir::Ban;
                    let kind = st.vote_kind(dir, &account(t)).expect("kind");
                    let already = st
                        .votes
                        .get(&(dir, kind, account(t).to_string()))
                        .is_some_and(|s| s.contains(&voter.uri()));
                    if !already {
                        let op = ops::vote(&st, &voter.uri(), account(t), VoteAction::Ban)
                            .expect("vote");
                        self.w.ok(voter, op);
                    }
                }
            }
            Step::Ban(a) => {
                let targets: Vec<usize> = self
                    .with_role(
                        &st,
                        &[
                            Some(MemberRole::Member),
                            Some(MemberRole::Invited),
                            Some(MemberRole::Admin),
                        ],
                    )
                    .into_iter()
                    .filter(|t| *t != 0)
                    .collect();
                if let Some(t) = pick(&targets, a as usize) {
                    self.decide(account(t), VoteAction::Ban);
                }
            }
            Step::Unban(a) => {
                let banned = self.with_role(&st, &[Some(MemberRole::Banned)]);
                if let Some(t) = pick(&banned, a as usize) {
                    self.decide(account(t), VoteAction::Unban);
                }
            }
            Step::Promote(a) => {
                let members = self.with_role(&st, &[Some(MemberRole::Member)]);
                if let Some(t) = pick(&members, a as usize) {
                    self.decide(account(t), VoteAction::Promote);
                }
            }
            Step::Profile(a, n) => {
                let admins = self.with_role(&st, &[Some(MemberRole::Admin)]);
                if let Some(i) = pick(&admins, a as usize) {
                    self.w.ok(
                        &self.people()[i],
                        ops::profile(Some(&format!("Room {n}")), Some("random")),
                    );
                }
            }
            Step::Leave(a) => {
                let leavers: Vec<usize> = speakers.iter().copied().filter(|i| *i != 0).collect();
                if let Some(i) = pick(&leavers, a as usize) {
                    let repo = self.w.repo();
                    let op =
                        ops::leave(&repo, &self.w.head(), self.people()[i].uri()).expect("leave");
                    self.w.ok(&self.people()[i], op);
                }
            }
            Step::Phone(n) => {
                // Bob's second device speaks (adding its certificate the first time).
                if speakers.contains(&1) {
                    let id = self.w.ok(
                        &pool().phone,
                        (Body::text(format!("from my phone {n}")), vec![]),
                    );
                    self.messages.push((id, 1));
                }
            }
        }
    }
}

fn build(mode: Mode, steps: &[Step]) -> Conv {
    let mut c = Conv {
        w: W::new(&pool().people[0], mode),
        messages: Vec::new(),
    };
    for s in steps {
        c.apply(s);
    }
    c
}

/// The commit, every tree and every blob of `commit` (trees are rebuilt from the files:
/// `build_tree` is how every tree of these conversations was made).
fn objects_of(w: &W, commit: &CommitId) -> BTreeMap<ObjectId, Object> {
    let repo = w.repo();
    let files = repo.files(commit).expect("files");
    let (_, trees) = build_tree(&files);
    let mut out: BTreeMap<ObjectId, Object> = trees.into_iter().map(|o| (o.id(), o)).collect();
    for blob in files.values() {
        out.insert(*blob, Object::blob(repo.blob(blob).expect("blob")));
    }
    let c =
        w.st.object(&w.conv, &commit.object_id())
            .expect("storage")
            .expect("commit");
    out.insert(commit.object_id(), c);
    out
}

/// A single-point corruption of the tip of a received branch. The numbers pick positions,
/// bytes, commits and paths.
#[derive(Debug, Clone)]
enum Corruption {
    /// XOR one byte of the commit object outside its signature header (a header line: tree,
    /// parent, author, committer; or the message).
    CommitByte(u16, u8),
    /// XOR one byte of the raw Ed25519 signature inside the sshsig.
    SignatureByte(u8, u8),
    /// Point the commit at another (existing) parent.
    Parent(u16),
    /// Sign with another member's device, still claiming the author's device.
    Resign(u8),
    /// Leave one object of the branch out.
    Drop(u16),
    /// XOR one byte of the signed part of a certificate or CRL the commit adds, re-signed
    /// by the author.
    CertByte(u16, u8),
    /// Move one file of the tree to a path of another directory, re-signed by the author.
    MoveFile(u16, u16),
}

fn corruption() -> impl Strategy<Value = Corruption> {
    prop_oneof![
        (any::<u16>(), 1..=255u8).prop_map(|(a, b)| Corruption::CommitByte(a, b)),
        (any::<u8>(), 1..=255u8).prop_map(|(a, b)| Corruption::SignatureByte(a, b)),
        any::<u16>().prop_map(Corruption::Parent),
        any::<u8>().prop_map(Corruption::Resign),
        any::<u16>().prop_map(Corruption::Drop),
        (any::<u16>(), 1..=255u8).prop_map(|(a, b)| Corruption::CertByte(a, b)),
        (any::<u16>(), any::<u16>()).prop_map(|(a, b)| Corruption::MoveFile(a, b)),
    ]
}

/// A commit object as text, split into (header without signature, signature header,
/// message) byte ranges.
struct CommitText {
    text: String,
    /// Start of the `gpgsig` header line.
    sig_start: usize,
    /// Start of the blank line ending the header.
    header_end: usize,
}

impl CommitText {
    fn new(obj: &Object) -> Self {
        let text = String::from_utf8(obj.data.clone()).expect("UTF-8 commit");
        let header_end = text.find("\n\n").expect("header");
        let sig_start = text.find("\ngpgsig ").expect("signed") + 1;
        Self {
            text,
            sig_start,
            header_end,
        }
    }
}

fn commit_obj(data: Vec<u8>) -> (CommitId, Object) {
    let o = Object {
        kind: Kind::Commit,
        data,
    };
    (CommitId::from_object_id(&o.id()).expect("sha1"), o)
}

/// Re-signs `orig` by `who` with `tree`, same parents, message and time.
fn resign(orig: &swarm_api::commit::Commit, who: &P, tree: ObjectId) -> Object {
    sign_commit(
        &who.device,
        &orig.author_name,
        tree,
        &orig.parents,
        &orig.message,
        orig.time,
    )
    .expect("sign")
}

/// XORs one byte of the *signed* part of a certificate or CRL (its TBS or its signature
/// value) and re-encodes the PEM: the DER always changes, and what it says is no longer
/// what its issuer signed. (Bytes of the unsigned envelope, such as the outer algorithm
/// identifier's tag, are not chosen: the parser tolerates some changes there, which yield a
/// certificate with the same signed content; see the report of issue 3.)
fn corrupt_signed_part(pem_text: &str, pos: usize, mask: u8) -> String {
    use x509_parser::prelude::FromDer;
    let block = pem::parse(pem_text).expect("PEM");
    let mut der = block.contents().to_vec();
    let offset = |part: &[u8]| part.as_ptr() as usize - der.as_ptr() as usize;
    let ranges: Vec<std::ops::Range<usize>> = if block.tag() == "X509 CRL" {
        let (_, crl) =
            x509_parser::revocation_list::CertificateRevocationList::from_der(&der).expect("CRL");
        let tbs: &[u8] = crl.tbs_cert_list.as_ref();
        let sig: &[u8] = crl.signature_value.data.as_ref();
        vec![
            offset(tbs)..offset(tbs) + tbs.len(),
            offset(sig)..offset(sig) + sig.len(),
        ]
    } else {
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&der).expect("cert");
        let tbs: &[u8] = cert.tbs_certificate.as_ref();
        let sig: &[u8] = cert.signature_value.data.as_ref();
        vec![
            offset(tbs)..offset(tbs) + tbs.len(),
            offset(sig)..offset(sig) + sig.len(),
        ]
    };
    let positions: Vec<usize> = ranges.into_iter().flatten().collect();
    der[positions[pos % positions.len()]] ^= mask;
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new(block.tag(), der), config)
}

/// What a refusal must name.
enum Expect {
    /// Exactly this commit, with any rule, or with this rule.
    Commit(CommitId, Option<&'static str>),
    /// This commit, or the (missing) parent its corrupted parent line names.
    CommitOrParent(CommitId, Option<CommitId>),
}

struct Case {
    /// The history, oldest first.
    history: Vec<CommitId>,
    /// Index of the stored head the branch is received on.
    base: usize,
    /// Index of the branch tip (the corrupted commit).
    tip: usize,
}

/// Stores the history up to `base` in a fresh storage.
fn prefix_storage(w: &W, case: &Case) -> (MemoryStorage, BTreeSet<ObjectId>) {
    let mut objects = BTreeMap::new();
    for c in &case.history[..=case.base] {
        objects.extend(objects_of(w, c));
    }
    let st = MemoryStorage::new();
    let list: Vec<Object> = objects.values().cloned().collect();
    st.write(
        &w.conv,
        &list,
        HeadUpdate {
            expected: None,
            new: case.history[case.base],
        },
    )
    .expect("prefix stored");
    (st, objects.keys().copied().collect())
}

/// Receives `objects` with tip `tip` on `st` and checks the refusal.
fn assert_refused(
    st: &MemoryStorage,
    conv: ConversationId,
    objects: Vec<Object>,
    tip: CommitId,
    expect: &Expect,
    what: &str,
) -> Result<(), TestCaseError> {
    let head = st.head(&conv).expect("head");
    let absent: Vec<ObjectId> = objects
        .iter()
        .map(Object::id)
        .filter(|id| st.object(&conv, id).expect("object").is_none())
        .collect();
    let repo = Repo::open(st, conv).expect("open");
    let res = repo.receive(objects, tip);
    let r = match res {
        Err(RepoError::Rejected(r)) => r,
        Err(e) => return Err(TestCaseError::fail(format!("{what}: not a rejection: {e}"))),
        Ok(_) => return Err(TestCaseError::fail(format!("{what}: accepted"))),
    };
    match expect {
        Expect::Commit(c, rule) => {
            prop_assert_eq!(r.commit, *c, "{}: wrong commit named: {}", what, r);
            if let Some(rule) = rule {
                prop_assert_eq!(r.violation.rule(), *rule, "{}: {}", what, r);
            }
        }
        Expect::CommitOrParent(c, parent) => {
            prop_assert!(
                r.commit == *c || Some(r.commit) == *parent,
                "{}: wrong commit named: {}",
                what,
                r
            );
        }
    }
    prop_assert_eq!(st.head(&conv).expect("head"), head, "{}: head moved", what);
    for id in absent {
        prop_assert!(
            st.object(&conv, &id).expect("object").is_none(),
            "{}: object {} of a refused branch was stored",
            what,
            id
        );
    }
    Ok(())
}

/// Candidate destinations for a moved file, by directory.
fn destinations() -> Vec<String> {
    let pool = pool();
    let (a, b) = (pool.people[0].uri(), pool.people[4].uri());
    let d = pool.people[5].device.id();
    vec![
        layout::admin_cert(&b),
        layout::member_cert(&b),
        layout::device_cert(&d),
        layout::invited(&b),
        layout::crl(&b, &"ab".repeat(32)),
        format!("banned/members/{b}.crt"),
        format!("votes/ban/members/{b}/{a}"),
        layout::PROFILE.to_owned(),
    ]
}

fn top_dir(path: &str) -> &str {
    path.split('/').next().unwrap_or(path)
}

/// Runs one corruption on the branch (history[base+1..=tip]); returns a description.
fn corrupt_and_check(w: &W, mut case: Case, how: &Corruption) -> Result<(), TestCaseError> {
    let fallback: Corruption;
    let mut how = how;
    let conv = w.conv;
    let repo = w.repo();
    let pool = pool();
    // Commits adding a certificate or CRL, for `CertByte`.
    let cert_adders: Vec<usize> = (1..case.history.len())
        .filter(|k| {
            let id = case.history[*k];
            let parent = repo.commit(&id).expect("commit").parents[0];
            let before = repo.files(&parent).expect("files");
            repo.files(&id).expect("files").iter().any(|(p, b)| {
                (p.ends_with(".crt") || p.ends_with(".crl")) && before.get(p) != Some(b)
            })
        })
        .collect();
    // Corruptions that do not apply to this history become a flipped commit byte.
    let unfit = match how {
        Corruption::CertByte(pos, mask) if cert_adders.is_empty() => Some((*pos, *mask)),
        Corruption::Parent(n) if case.history.len() < 3 => Some((*n, 1)),
        _ => None,
    };
    if let Some((pos, mask)) = unfit {
        fallback = Corruption::CommitByte(pos, mask);
        how = &fallback;
    }
    if let Corruption::CertByte(..) = how {
        // The corrupted commit must add a certificate; choose the tip accordingly.
        case.tip = cert_adders[case.tip % cert_adders.len()];
        case.base %= case.tip;
    }
    if let (Corruption::Parent(_), true) = (how, case.tip < 2) {
        // Needs another earlier commit than the parent.
        case.tip = 2;
    }
    let (base, tip) = (case.base, case.tip);
    let (st, stored) = prefix_storage(w, &case);
    // The branch's objects, each with the index of the first commit reaching it.
    let mut branch: BTreeMap<ObjectId, (Object, usize)> = BTreeMap::new();
    for k in base + 1..=tip {
        for (id, o) in objects_of(w, &case.history[k]) {
            if !stored.contains(&id) {
                branch.entry(id).or_insert((o, k));
            }
        }
    }
    let t = case.history[tip];
    let t_obj = branch[&t.object_id()].0.clone();
    let t_commit = repo.commit(&t).expect("commit");
    let author = pool.by_device(&t_commit.device);
    let mut objects: Vec<Object> = branch
        .iter()
        .filter(|(id, _)| **id != t.object_id())
        .map(|(_, (o, _))| o.clone())
        .collect();
    let what = format!("{how:?} of commit {tip} ({t}) on {base}");
    let (new_tip, expect) = match how {
        Corruption::CommitByte(pos, mask) => {
            let ct = CommitText::new(&t_obj);
            let outside_sig: Vec<usize> = (0..ct.sig_start)
                .chain(ct.header_end..ct.text.len())
                .collect();
            let at = outside_sig[*pos as usize % outside_sig.len()];
            let mut data = ct.text.clone().into_bytes();
            data[at] ^= mask;
            let line_start = ct.text[..at].rfind('\n').map_or(0, |p| p + 1);
            let in_parent = at < ct.header_end && ct.text[line_start..].starts_with("parent ");
            // The parent the corrupted line names, if it still parses.
            let named_parent = std::str::from_utf8(&data[line_start..])
                .ok()
                .and_then(|t| t.lines().next())
                .and_then(|l| l.strip_prefix("parent "))
                .and_then(|h| h.parse::<CommitId>().ok());
            let (id, o) = commit_obj(data);
            objects.push(o);
            (
                id,
                if in_parent {
                    Expect::CommitOrParent(id, named_parent)
                } else {
                    Expect::Commit(id, None)
                },
            )
        }
        Corruption::SignatureByte(pos, mask) => {
            let ct = CommitText::new(&t_obj);
            let old_pem = t_commit.signature.clone().expect("signed");
            let sig = SshSig::from_pem(format!("{old_pem}\n")).expect("sshsig");
            let mut raw = sig.signature_bytes().to_vec();
            let at = *pos as usize % raw.len();
            raw[at] ^= mask;
            let forged = SshSig::new(
                sig.public_key().clone(),
                NAMESPACE,
                HashAlg::Sha512,
                ssh_key::Signature::new(ssh_key::Algorithm::Ed25519, raw).expect("sig"),
            )
            .expect("sshsig");
            let new_pem = forged.to_pem(LineEnding::LF).expect("pem");
            let text = ct.text.replace(
                &old_pem.replace('\n', "\n "),
                &new_pem.trim_end().replace('\n', "\n "),
            );
            prop_assert_ne!(&text, &ct.text);
            let (id, o) = commit_obj(text.into_bytes());
            objects.push(o);
            (id, Expect::Commit(id, Some("signature")))
        }
        Corruption::Parent(n) => {
            let parent = t_commit.parents[0];
            let others: Vec<CommitId> = case.history[..tip]
                .iter()
                .copied()
                .filter(|c| *c != parent)
                .collect();
            let other = others[*n as usize % others.len()];
            let ct = CommitText::new(&t_obj);
            let text = ct.text.replacen(
                &format!("parent {parent}\n"),
                &format!("parent {other}\n"),
                1,
            );
            prop_assert_ne!(&text, &ct.text);
            let (id, o) = commit_obj(text.into_bytes());
            // The other parent's objects, if it is not stored.
            for k in base + 1..tip {
                if case.history[k] == other {
                    objects.extend(objects_of(w, &other).into_values());
                }
            }
            objects.push(o);
            (id, Expect::Commit(id, None))
        }
        Corruption::Resign(n) => {
            let others: Vec<&P> = pool
                .people
                .iter()
                .filter(|p| p.uri() != author.uri())
                .collect();
            let signer = others[*n as usize % others.len()];
            let signed = resign(&t_commit, signer, t_commit.tree);
            let text = String::from_utf8(signed.data).expect("UTF-8").replace(
                &signer.device.id().to_string(),
                &t_commit.device.to_string(),
            );
            let (id, o) = commit_obj(text.into_bytes());
            objects.push(o);
            (id, Expect::Commit(id, Some("signature")))
        }
        Corruption::Drop(n) => {
            let ids: Vec<&ObjectId> = branch.keys().collect();
            let dropped = *ids[*n as usize % ids.len()];
            objects.push(t_obj.clone());
            objects.retain(|o| o.id() != dropped);
            let k = branch[&dropped].1;
            (t, Expect::Commit(case.history[k], Some("objects-present")))
        }
        Corruption::CertByte(pos, mask) => {
            let before = repo.files(&t_commit.parents[0]).expect("files");
            let mut files: Files = repo.files(&t).expect("files");
            let added: Vec<String> = files
                .iter()
                .filter(|(p, b)| {
                    (p.ends_with(".crt") || p.ends_with(".crl")) && before.get(*p) != Some(*b)
                })
                .map(|(p, _)| p.clone())
                .collect();
            let path = &added[*pos as usize % added.len()];
            let pem = String::from_utf8(repo.blob(&files[path]).expect("blob")).expect("PEM");
            let bad = corrupt_signed_part(&pem, *pos as usize / added.len(), *mask);
            // The DER really changed (so the certificate is not the same one re-encoded).
            let der = |s: &str| pem::parse(s).map(|p| p.contents().to_vec());
            prop_assert!(
                der(&bad).ok() != der(&pem).ok(),
                "the corruption left the DER unchanged"
            );
            let blob = Object::blob(bad.into_bytes());
            files.insert(path.clone(), blob.id());
            let (tree, trees) = build_tree(&files);
            let signed = resign(&t_commit, author, tree);
            let (id, o) = commit_obj(signed.data);
            objects.extend(trees);
            objects.push(blob);
            objects.push(o);
            (id, Expect::Commit(id, None))
        }
        Corruption::MoveFile(src, dst) => {
            let mut files: Files = repo.files(&t).expect("files");
            let paths: Vec<String> = files.keys().cloned().collect();
            let from = &paths[*src as usize % paths.len()];
            let dests: Vec<String> = destinations()
                .into_iter()
                .filter(|d| top_dir(d) != top_dir(from) && !files.contains_key(d))
                .collect();
            let to = dests[*dst as usize % dests.len()].clone();
            let blob = files.remove(from).expect("file");
            files.insert(to, blob);
            let (tree, trees) = build_tree(&files);
            let signed = resign(&t_commit, author, tree);
            let (id, o) = commit_obj(signed.data);
            objects.extend(trees);
            objects.push(Object::blob(repo.blob(&blob).expect("blob")));
            objects.push(o);
            (id, Expect::Commit(id, None))
        }
    };
    assert_refused(&st, conv, objects, new_tip, &expect, &what)?;
    // The intact branch is still accepted on the same storage afterwards.
    let intact: Vec<Object> = branch.into_values().map(|(o, _)| o).collect();
    Repo::open(&st, conv)
        .expect("open")
        .receive(intact, t)
        .map_err(|e| TestCaseError::fail(format!("{what}: intact branch refused: {e}")))?;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        max_shrink_iters: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Random valid conversations verify (through `Repo::verify` and a fresh
    /// `Engine::verify`), and each commit was accepted when appended.
    #[test]
    fn random_valid_histories_verify(
        mode in mode(),
        steps in prop::collection::vec(step(), 1..32),
    ) {
        let c = build(mode, &steps);
        let history = c.w.repo().history().expect("history");
        let v = c.w.repo().verify().map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(v.commits().len(), history.len());
        let src = ConversationObjects { storage: &c.w.st, conv: c.w.conv };
        let v = Engine::default()
            .verify(c.w.conv, &src, c.w.head())
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(v.commits().len(), history.len());
    }

    /// One corruption of a valid branch, received on a prefix of the history: refused,
    /// naming the corrupted commit (or the one reaching a dropped object), with storage
    /// unchanged; the intact branch is then accepted.
    #[test]
    fn single_point_corruptions_are_refused(
        mode in mode(),
        steps in prop::collection::vec(step(), 1..16),
        tip in any::<u16>(),
        base in any::<u16>(),
        how in corruption(),
    ) {
        let mut c = build(mode, &steps);
        // At least one message after the initial commit.
        c.say(0, Body::text("last"));
        let history: Vec<CommitId> =
            c.w.repo().history().expect("history").iter().map(|c| c.id).collect();
        let tip = 1 + tip as usize % (history.len() - 1);
        let base = base as usize % tip;
        corrupt_and_check(&c.w, Case { history, base, tip }, &how)?;
    }
}
