//! The rules, one function each. Every check reads the parent's state and the commit's
//! changes; nothing reads a local checkout or the clock.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use gix_hash::ObjectId;

use super::keys::{self, AccountKey, DeviceKey};
use super::state::{MemberRole, Parsed, State};
use super::{full_state, mode_of, CommitLookup, Engine, Profile, Violation};
use crate::body::{self, Body, MemberAction, Mode};
use crate::commit::{Commit, SignatureError};
use crate::graph::Graph;
use crate::id::{AccountUri, CommitId, ConversationId, DeviceId, Target};
use crate::identity::Crl;
use crate::layout::{self, Kind, Path, VoteDir};
use crate::merge::merge_files;
use crate::object::{
    apply, diff_trees, Delta, Files, Kind as ObjKind, Object, ObjectSource, TreeLimits,
};
use crate::traits::{CommitView, MessageType};

/// The id of the empty blob (invitations and votes are empty files).
fn empty_blob() -> ObjectId {
    Object::blob(Vec::new()).id()
}

/// Per-call validation context: caches commits and generations.
pub(super) struct Ctx<'a> {
    engine: &'a Engine,
    conv: ConversationId,
    src: &'a dyn ObjectSource,
    mode: Option<Mode>,
    commits: HashMap<CommitId, Arc<Commit>>,
    /// Parents and generations (merge bases, ancestry).
    graph: std::cell::RefCell<Graph>,
    /// Devices already found authorized at a state (by the state's address; the entry
    /// keeps the state alive so the address is not reused), for commits that change no
    /// file: every message on the same state has the same signer checks, only the
    /// signature differs.
    authorized: HashMap<(usize, DeviceId, bool), (Arc<State>, Authorized)>,
    /// Commits whose signature was already verified with the key of the device they name
    /// (a native device id is the hash of its key, so any certificate of that id holds that
    /// key): [`super::Engine::validate_branch`] verifies a long branch's signatures together,
    /// in parallel, before any commit is checked.
    pub(super) presigned: std::collections::HashSet<CommitId>,
    /// Tree entries read for path lookups, by tree id (bounded: cleared past
    /// [`LOOKUP_CACHE`] trees).
    lookups: HashMap<ObjectId, Arc<crate::object::DirEntries>>,
    /// [`Ctx::signing_key`] by (tree, device): consecutive messages share their tree.
    keys: HashMap<(ObjectId, DeviceId), Option<ed25519_dalek::VerifyingKey>>,
}

/// Trees kept by [`Ctx::lookup`].
const LOOKUP_CACHE: usize = 1024;

/// A device found authorized at a state: who it is and its certificates.
#[derive(Clone)]
struct Authorized {
    account: AccountUri,
    role: Option<MemberRole>,
    cert: DeviceKey,
    account_cert: AccountKey,
}

/// Who signed a commit.
#[derive(Clone, Copy)]
struct Signer {
    account: AccountUri,
    device: DeviceId,
    role: Option<MemberRole>,
}

impl<'a> Ctx<'a> {
    pub(super) fn new(engine: &'a Engine, conv: ConversationId, src: &'a dyn ObjectSource) -> Self {
        Self {
            engine,
            conv,
            src,
            mode: None,
            commits: HashMap::new(),
            graph: Default::default(),
            authorized: HashMap::new(),
            presigned: Default::default(),
            lookups: HashMap::new(),
            keys: HashMap::new(),
        }
    }

    fn mode(&mut self) -> Result<Mode, Violation> {
        if let Some(m) = self.mode {
            return Ok(m);
        }
        let m = mode_of(self.src, &self.conv, self.engine.profile.scheme())?;
        self.mode = Some(m);
        Ok(m)
    }

    /// Loads and decodes a commit (size-limited).
    pub(super) fn load(&mut self, id: &CommitId) -> Result<Arc<Commit>, Violation> {
        if let Some(c) = self.commits.get(id) {
            return Ok(c.clone());
        }
        let obj = self.src.expect(&id.object_id(), ObjKind::Commit)?;
        if obj.data.len() > self.engine.limits.max_commit_bytes {
            return Err(Violation::Limit(format!(
                "commit of {} bytes (limit {})",
                obj.data.len(),
                self.engine.limits.max_commit_bytes
            )));
        }
        let c = Arc::new(
            Commit::parse_with(*id, &obj.data, self.engine.profile.scheme())
                .map_err(|e| Violation::MalformedCommit(e.to_string()))?,
        );
        self.commits.insert(*id, c.clone());
        Ok(c)
    }

    fn blob(&self, path: &str, id: &ObjectId) -> Result<Vec<u8>, Violation> {
        let obj = self.src.expect(id, ObjKind::Blob)?;
        if obj.data.len() > self.engine.limits.max_blob_bytes {
            return Err(Violation::Limit(format!(
                "{path} is {} bytes (limit {})",
                obj.data.len(),
                self.engine.limits.max_blob_bytes
            )));
        }
        Ok(obj.data)
    }

    fn parsed(&self, path: &str, id: &ObjectId) -> Result<Parsed, Violation> {
        if let Some(p) = self.engine.parsed.lock().ok().and_then(|m| m.get(id)) {
            return Ok(p);
        }
        let data = self.blob(path, id)?;
        let bad = |reason: String| Violation::MalformedCertificate {
            path: path.to_owned(),
            reason,
        };
        let scheme = self.engine.profile.scheme();
        let parsed = match Path::parse(path) {
            Some(Path::Admin(_))
            | Some(Path::Member(_))
            | Some(Path::Banned(Kind::Admins | Kind::Members, _)) => {
                Parsed::Account(AccountKey::parse(scheme, &data).map_err(bad)?)
            }
            Some(Path::Device(_)) | Some(Path::Banned(Kind::Devices, _)) => {
                Parsed::Device(DeviceKey::parse(scheme, &data).map_err(bad)?)
            }
            Some(Path::Crl(..)) => {
                let pem = std::str::from_utf8(&data).map_err(|_| bad("not UTF-8".into()))?;
                Parsed::Crl(Arc::new(
                    Crl::from_pem(pem).map_err(|e| bad(e.to_string()))?,
                ))
            }
            _ => return Err(bad("not a certificate path".into())),
        };
        if let Ok(mut m) = self.engine.parsed.lock() {
            m.insert(*id, parsed.clone());
        }
        Ok(parsed)
    }

    fn account_cert(&self, path: &str, id: &ObjectId) -> Result<AccountKey, Violation> {
        match self.parsed(path, id)? {
            Parsed::Account(a) => Ok(a),
            _ => Err(Violation::MalformedCertificate {
                path: path.into(),
                reason: "not an account certificate".into(),
            }),
        }
    }

    fn device_cert(&self, path: &str, id: &ObjectId) -> Result<DeviceKey, Violation> {
        match self.parsed(path, id)? {
            Parsed::Device(d) => Ok(d),
            _ => Err(Violation::MalformedCertificate {
                path: path.into(),
                reason: "not a device certificate".into(),
            }),
        }
    }

    fn crl(&self, path: &str, id: &ObjectId) -> Result<Arc<Crl>, Violation> {
        match self.parsed(path, id)? {
            // `CRLs/<uri>/<crl-id>.crl`: the name is the CRL's id, so one CRL has one path.
            Parsed::Crl(c) => match Path::parse(path) {
                Some(Path::Crl(_, name)) if name == c.id() => Ok(c),
                _ => Err(Violation::MalformedCertificate {
                    path: path.into(),
                    reason: format!("a CRL is stored as CRLs/<uri>/{}.crl", c.id()),
                }),
            },
            _ => Err(Violation::MalformedCertificate {
                path: path.into(),
                reason: "not a CRL".into(),
            }),
        }
    }

    /// The account owning a device certificate blob (its verified-at-commit issuer).
    fn device_account(&self, path: &str, id: &ObjectId) -> Result<Option<AccountUri>, Violation> {
        Ok(self.device_cert(path, id)?.claimed_account())
    }

    /// The state at a commit: from the branch's states, or read whole for a stored commit.
    pub(super) fn state_of(
        &mut self,
        id: &CommitId,
        states: &mut HashMap<CommitId, Arc<State>>,
    ) -> Result<Arc<State>, Violation> {
        if let Some(s) = states.get(id) {
            return Ok(s.clone());
        }
        let key = (self.conv, *id);
        if let Some(s) = self.engine.states.lock().ok().and_then(|c| c.get(&key)) {
            states.insert(*id, s.clone());
            return Ok(s);
        }
        let mode = self.mode()?;
        let c = self.load(id)?;
        let s = Arc::new(full_state(self.src, mode, &c.tree, &self.engine.limits)?);
        states.insert(*id, s.clone());
        if let Ok(mut cache) = self.engine.states.lock() {
            cache.insert(key, s.clone());
        }
        Ok(s)
    }

    /// Checks one commit whose parents are validated; returns its state.
    pub(super) fn check(
        &mut self,
        c: &Commit,
        states: &mut HashMap<CommitId, Arc<State>>,
    ) -> Result<Arc<State>, Violation> {
        match c.parents.len() {
            0 => self.check_initial(c),
            1 => {
                let parent = self.state_of(&c.parents[0], states)?;
                let ptree = self.load(&c.parents[0])?.tree;
                // Cheapest check first: who signed, from the parent's state and at most a few
                // path lookups in this commit's tree, before any tree is diffed or a plugin
                // loaded (a forged or unauthorized commit costs a few object reads).
                let joining = matches!(
                    Body::parse(&c.message),
                    Ok(Body::Member(m)) if m.action == MemberAction::Join
                );
                let signer = if c.tree == ptree {
                    // No file changes: the signer checks depend only on the parent state.
                    self.authorize_at(c, &parent, joining)?
                } else {
                    let files = self.signer_files(c, &parent, joining)?;
                    self.authorize(c, &parent, &files, joining)?
                };
                // The walk stops at the first changed path over the limit, not after it.
                let limits = TreeLimits {
                    max_files: self
                        .engine
                        .limits
                        .max_changed_paths
                        .saturating_add(1)
                        .min(self.engine.limits.tree.max_files),
                    ..self.engine.limits.tree
                };
                let deltas = diff_trees(self.src, &ptree, &c.tree, limits)?;
                self.check_limits(&deltas)?;
                let new_files = if deltas.is_empty() {
                    None
                } else {
                    Some(apply(&parent.files, &deltas))
                };
                self.check_ordinary(c, &parent, &deltas, signer)?;
                Ok(match new_files {
                    None => parent,
                    Some(f) => Arc::new(State::from_files(parent.mode, f)),
                })
            }
            2 => self.check_merge(c, states),
            n => Err(Violation::TooManyParents(n)),
        }
    }

    fn check_limits(&self, deltas: &[Delta]) -> Result<(), Violation> {
        if deltas.len() > self.engine.limits.max_changed_paths {
            return Err(Violation::Limit(format!(
                "{} changed paths (limit {})",
                deltas.len(),
                self.engine.limits.max_changed_paths
            )));
        }
        for d in deltas {
            if Path::parse(&d.path).is_none() {
                return Err(Violation::LayoutPath(d.path.clone()));
            }
            if let Some(new) = &d.new {
                self.blob(&d.path, new)?;
            }
        }
        Ok(())
    }

    /// Rule `signature` + device rules: the signing device is authorized and its signature
    /// verifies. The device certificate is the parent's, or one this commit adds; the
    /// account certificate is the parent's admin/member one, or (join) the one it adds.
    fn authorize(
        &mut self,
        c: &Commit,
        parent: &State,
        files: &Files,
        joining: bool,
    ) -> Result<Signer, Violation> {
        let a = self.authorized_device(c, parent, files, joining)?;
        self.verify_signed_by(c, &a)?;
        Ok(Signer {
            account: a.account,
            device: c.device,
            role: a.role,
        })
    }

    /// [`Ctx::authorize`] for a commit that changes no file (its files are the parent's),
    /// remembering the device checks per parent state.
    fn authorize_at(
        &mut self,
        c: &Commit,
        parent: &Arc<State>,
        joining: bool,
    ) -> Result<Signer, Violation> {
        let key = (Arc::as_ptr(parent) as usize, c.device, joining);
        let a = match self.authorized.get(&key) {
            Some((_, a)) => a.clone(),
            None => {
                let a = self.authorized_device(c, parent, &parent.files, joining)?;
                self.authorized.insert(key, (parent.clone(), a.clone()));
                a
            }
        };
        self.verify_signed_by(c, &a)?;
        Ok(Signer {
            account: a.account,
            device: c.device,
            role: a.role,
        })
    }

    /// The entries of a tree, for path lookups (cached by tree id).
    fn entries(&mut self, tree: &ObjectId) -> Result<Arc<crate::object::DirEntries>, Violation> {
        if let Some(e) = self.lookups.get(tree) {
            return Ok(e.clone());
        }
        if self.lookups.len() >= LOOKUP_CACHE {
            self.lookups.clear();
        }
        let e = Arc::new(crate::object::dir_entries(self.src, tree)?);
        self.lookups.insert(*tree, e.clone());
        Ok(e)
    }

    /// One path of a tree, read along the path only: `(is a tree, id)`.
    fn lookup(
        &mut self,
        tree: &ObjectId,
        path: &str,
    ) -> Result<Option<(bool, ObjectId)>, Violation> {
        let mut at = (true, *tree);
        for name in path.split('/') {
            if !at.0 {
                return Ok(None);
            }
            match self.entries(&at.1)?.get(name) {
                Some(e) => at = *e,
                None => return Ok(None),
            }
        }
        Ok(Some(at))
    }

    /// The files of commit `c` that the signer checks read ([`Ctx::authorized_device`]): its
    /// device certificate if the parent lacks it, the joiner's member certificate, and its
    /// account's CRLs — found by path lookups, without diffing or reading the whole tree.
    fn signer_files(
        &mut self,
        c: &Commit,
        parent: &State,
        joining: bool,
    ) -> Result<Files, Violation> {
        let mut files = Files::new();
        let dpath = layout::device_cert(&c.device);
        let dblob = match parent.devices.get(&c.device) {
            Some(b) => *b,
            None => match self.lookup(&c.tree, &dpath)? {
                Some((false, b)) => {
                    files.insert(dpath.clone(), b);
                    b
                }
                // Not a device of this conversation: `authorized_device` says so.
                _ => return Ok(files),
            },
        };
        // An unreadable certificate: `authorized_device` reports it.
        let Ok(Some(account)) = self.device_account(&dpath, &dblob) else {
            return Ok(files);
        };
        if joining {
            let mpath = layout::member_cert(&account);
            if let Some((false, b)) = self.lookup(&c.tree, &mpath)? {
                files.insert(mpath, b);
            }
        }
        let crls = format!("CRLs/{account}");
        if let Some((true, dir)) = self.lookup(&c.tree, &crls)? {
            for (name, (is_tree, id)) in self.entries(&dir)?.iter() {
                if !is_tree {
                    files.insert(format!("{crls}/{name}"), *id);
                }
            }
        }
        Ok(files)
    }

    /// The key of the device commit `c` names, from the certificate in its own tree, if there
    /// is a native one whose id is that device id (so the key is the device's, whatever
    /// certificate the rules later find for it).
    pub(super) fn signing_key(&mut self, c: &Commit) -> Option<ed25519_dalek::VerifyingKey> {
        if let Some(k) = self.keys.get(&(c.tree, c.device)) {
            return *k;
        }
        let dpath = layout::device_cert(&c.device);
        let key = match self.lookup(&c.tree, &dpath) {
            Ok(Some((false, blob))) => match self.device_cert(&dpath, &blob) {
                Ok(DeviceKey::Native(d)) if d.id() == c.device => Some(*d.public_key()),
                _ => None,
            },
            _ => None,
        };
        if self.keys.len() >= LOOKUP_CACHE {
            self.keys.clear();
        }
        self.keys.insert((c.tree, c.device), key);
        key
    }

    /// Rule `signature` ahead of the others where the key is at hand ([`Ctx::signing_key`]):
    /// a forged commit is refused before anything costly is done for it.
    fn presign(&mut self, c: &Commit) -> Result<(), Violation> {
        if self.presigned.contains(&c.id) {
            return Ok(());
        }
        if let Some(key) = self.signing_key(c) {
            verify_commit_signature(c, &key)?;
            self.presigned.insert(c.id);
        }
        Ok(())
    }

    /// Whether `device`, known in `state` (its certificate is there), is revoked by a CRL of
    /// its account in `state`. A device the state does not know is not judged here.
    pub(super) fn revoked(&self, state: &State, device: &DeviceId) -> Result<bool, Violation> {
        let Some(blob) = state.devices.get(device) else {
            return Ok(false);
        };
        let DeviceKey::Native(cert) = self.device_cert(&layout::device_cert(device), blob)? else {
            return Ok(false);
        };
        let Some(account) = cert.claimed_account() else {
            return Ok(false);
        };
        let prefix = format!("CRLs/{account}/");
        for (path, blob) in state.files.range(prefix.clone()..) {
            if !path.starts_with(&prefix) {
                break;
            }
            if self.crl(path, blob)?.revokes(&cert) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The CRLs of `account` in `state`.
    pub(super) fn crls_of(&self, state: &State, account: &AccountUri) -> Vec<Arc<Crl>> {
        let prefix = format!("CRLs/{account}/");
        state
            .files
            .range(prefix.clone()..)
            .take_while(|(path, _)| path.starts_with(&prefix))
            .filter_map(|(path, blob)| self.crl(path, blob).ok())
            .collect()
    }

    /// The device rules of [`Ctx::authorize`] (everything but the signature itself).
    fn authorized_device(
        &self,
        c: &Commit,
        parent: &State,
        files: &Files,
        joining: bool,
    ) -> Result<Authorized, Violation> {
        let dev = c.device;
        let dpath = layout::device_cert(&dev);
        let dblob = parent
            .devices
            .get(&dev)
            .or_else(|| files.get(&dpath))
            .ok_or(Violation::UnknownDevice(dev))?;
        let dcert = self.device_cert(&dpath, dblob)?;
        if dcert.id() != dev {
            return Err(Violation::MalformedCertificate {
                path: dpath,
                reason: format!("holds the certificate of device {}", dcert.id()),
            });
        }
        if parent.is_banned_device(&dev) {
            return Err(Violation::DeviceBanned(dev));
        }
        let account = dcert
            .claimed_account()
            .ok_or_else(|| Violation::DeviceNotFromMember {
                device: dev,
                account: "(none)".into(),
            })?;
        if parent.is_banned_account(&account) {
            return Err(Violation::AccountBanned(account));
        }
        let apath_admin = layout::admin_cert(&account);
        let apath_member = layout::member_cert(&account);
        let (apath, ablob) = if let Some(b) = parent.files.get(&apath_admin) {
            (apath_admin, b)
        } else if let Some(b) = parent.files.get(&apath_member) {
            (apath_member, b)
        } else if let (true, Some(b)) = (joining, files.get(&apath_member)) {
            (apath_member, b)
        } else {
            return Err(Violation::DeviceNotFromMember {
                device: dev,
                account: account.to_string(),
            });
        };
        let acert = self.account_cert(&apath, ablob)?;
        if acert.uri() != account {
            return Err(Violation::MalformedCertificate {
                path: apath,
                reason: format!("holds the certificate of {}", acert.uri()),
            });
        }
        // The account's CRLs: those at the parent and those this commit adds.
        let prefix = format!("CRLs/{account}/");
        let mut crls: Vec<(&String, &ObjectId)> = Vec::new();
        for (path, blob) in files.range(prefix.clone()..) {
            if !path.starts_with(&prefix) {
                break;
            }
            crls.push((path, blob));
        }
        // The chain is a pure function of these blobs: verified once per engine, not per
        // commit (a history signed by a few devices has a few chains).
        let key = ChainKey {
            device: *dblob,
            account: *ablob,
            crls: crls.iter().map(|(_, b)| **b).collect(),
        };
        if !self.engine.chain_verified(&key) {
            let mut parsed = Vec::with_capacity(crls.len());
            for (path, blob) in &crls {
                parsed.push(Crl::clone(&*self.crl(path, blob)?));
            }
            keys::verify_chain(&acert, &dcert, &parsed, &prefix)?;
            self.engine.chain_ok(key);
        }
        Ok(Authorized {
            account,
            role: parent.role(&account),
            cert: dcert,
            account_cert: acert,
        })
    }

    /// Rule `initial-body` / `initial-files`.
    fn check_initial(&mut self, c: &Commit) -> Result<Arc<State>, Violation> {
        if c.id != self.conv.initial_commit() {
            return Err(Violation::SecondRoot);
        }
        let body = match Body::parse(&c.message) {
            Ok(Body::Initial(i)) => i,
            Ok(b) => {
                return Err(Violation::InitialBody(format!(
                    "type is {:?}, not \"initial\"",
                    b.kind()
                )))
            }
            Err(e) => return Err(Violation::InitialBody(e.to_string())),
        };
        match (body.mode, body.invited) {
            (Mode::OneToOne, None) => {
                return Err(Violation::InitialBody(
                    "a one-to-one conversation must name \"invited\"".into(),
                ))
            }
            (Mode::OneToOne, Some(_)) | (_, None) => {}
            (_, Some(_)) => {
                return Err(Violation::InitialBody(
                    "only one-to-one conversations name \"invited\"".into(),
                ))
            }
        }
        self.mode = Some(body.mode);
        let files = crate::object::read_tree(self.src, &c.tree, self.engine.limits.tree)?;
        let deltas: Vec<Delta> = files
            .iter()
            .map(|(p, id)| Delta {
                path: p.clone(),
                old: None,
                new: Some(*id),
            })
            .collect();
        self.check_limits(&deltas)?;
        // Find the admin: the account of the signing device.
        let dpath = layout::device_cert(&c.device);
        let dblob = files
            .get(&dpath)
            .ok_or(Violation::UnknownDevice(c.device))?;
        let admin = self.device_account(&dpath, dblob)?.ok_or_else(|| {
            Violation::InitialFiles("the device certificate names no account".into())
        })?;
        let mut expected: BTreeSet<String> = [layout::admin_cert(&admin), dpath.clone()].into();
        if let Some(inv) = body.invited {
            expected.insert(layout::invited(&inv));
        }
        for (path, blob) in &files {
            match Path::parse(path) {
                Some(Path::Crl(u, _)) if u == admin => {
                    self.crl(path, blob)?;
                }
                Some(Path::Invited(_)) if expected.contains(path) => {
                    if *blob != empty_blob() {
                        return Err(Violation::InitialFiles(format!("{path} must be empty")));
                    }
                }
                _ if expected.contains(path) => {}
                _ => return Err(Violation::InitialFiles(format!("unexpected file {path}"))),
            }
        }
        for p in &expected {
            if !files.contains_key(p) {
                return Err(Violation::InitialFiles(format!("missing {p}")));
            }
        }
        // Authorization against the commit's own tree (there is no parent).
        let own = State::from_files(body.mode, files.clone());
        self.authorize(c, &own, &files, false)?;
        Ok(Arc::new(own))
    }

    /// Rule `merge-tree`: the tree is the deterministic merge; the signer is authorized in it.
    fn check_merge(
        &mut self,
        c: &Commit,
        states: &mut HashMap<CommitId, Arc<State>>,
    ) -> Result<Arc<State>, Violation> {
        // Cheapest check first: the signature, before the merge is recomputed.
        self.presign(c)?;
        let (p1, p2) = (c.parents[0], c.parents[1]);
        let s1 = self.state_of(&p1, states)?;
        let s2 = self.state_of(&p2, states)?;
        let merge_base = self.graph.borrow_mut().merge_base(self.src, &p1, &p2)?;
        let base = match merge_base {
            Some(b) => self.state_of(&b, states)?.files.clone(),
            None => Files::new(),
        };
        let merged = merge_files(&base, &s1.files, &p1, &s2.files, &p2);
        let tree = crate::object::build_tree(&merged).0;
        if tree != c.tree {
            return Err(Violation::MergeTree {
                expected: tree.to_string(),
                found: c.tree.to_string(),
            });
        }
        let state = State::from_files(s1.mode, merged);
        self.authorize(c, &state, &state.files, false)?;
        Ok(Arc::new(state))
    }

    fn check_ordinary(
        &mut self,
        c: &Commit,
        parent: &Arc<State>,
        deltas: &[Delta],
        signer: Signer,
    ) -> Result<(), Violation> {
        let body = self.parse_body(c, deltas)?;
        let parent: &State = parent;
        // The author's own credentials may be added by any commit.
        let mut rest: Vec<&Delta> = Vec::new();
        for d in deltas {
            if self.is_own_credential(d, &signer)? {
                continue;
            }
            rest.push(d);
        }
        self.check_kind(c, &body, &signer, parent, &rest)?;
        self.check_validators(c, &body, &signer, parent, &rest)
    }

    /// The rule of the commit's `type` (built-in, pinned plugin or registered message type).
    fn check_kind(
        &mut self,
        c: &Commit,
        body: &Body,
        signer: &Signer,
        parent: &State,
        rest: &[&Delta],
    ) -> Result<(), Violation> {
        match body.kind() {
            body::types::PLUGIN_INSTALL => return self.check_plugin_install(parent, signer, rest),
            body::types::PLUGIN_REMOVE => return self.check_plugin_remove(signer, rest),
            _ => {}
        }
        // Edits, call history and other types go to the plugin pinned in the conversation
        // for that type if any, else to a registered message type if any.
        let registered = match &body {
            Body::Edit(_) | Body::CallHistory(_) | Body::Other { .. } => {
                match self.pinned_for(parent, body.kind())? {
                    Some(t) => Some(t),
                    None => self.engine.types.get(body.kind()).cloned(),
                }
            }
            _ => None,
        };
        if let Some(t) = registered {
            return self.check_registered(t.as_ref(), c, body, signer, parent, rest);
        }
        match &body {
            Body::Initial(_) => Err(Violation::InitialBody(
                "an \"initial\" body on a commit with a parent".into(),
            )),
            Body::Text(t) => {
                if t.reply_to.is_some() && t.react_to.is_some() {
                    return Err(Violation::TextShape(
                        "both \"reply-to\" and \"react-to\"".into(),
                    ));
                }
                no_files(body, rest)
            }
            Body::Edit(e) => {
                self.check_edit(c, signer, e)?;
                no_files(body, rest)
            }
            Body::DataTransfer(d) => {
                check_data_transfer(d)?;
                no_files(body, rest)
            }
            Body::CallHistory(h) => {
                check_call_history(h)?;
                no_files(body, rest)
            }
            Body::Vote(v) => self.check_vote(parent, signer, v, rest),
            Body::Member(m) => match m.action {
                MemberAction::Add => self.check_add(parent, signer, m, rest),
                MemberAction::Join => self.check_join(parent, signer, m, rest),
                MemberAction::Remove => self.check_remove(parent, signer, m, rest),
                MemberAction::Ban => self.check_ban(parent, signer, m.uri, VoteDir::Ban, rest),
                MemberAction::Unban => self.check_ban(parent, signer, m.uri, VoteDir::Unban, rest),
                MemberAction::Promote => {
                    self.check_ban(parent, signer, m.uri, VoteDir::Promote, rest)
                }
            },
            Body::UpdateProfile(_) => self.check_profile(signer, rest),
            Body::Other { kind, .. } => Err(Violation::UnknownType(kind.clone())),
        }
    }

    /// The app's own policies ([`Engine::add_validator`]), after every built-in rule passed.
    fn check_validators(
        &self,
        c: &Commit,
        body: &Body,
        signer: &Signer,
        parent: &State,
        rest: &[&Delta],
    ) -> Result<(), Violation> {
        if self.engine.validators.is_empty() {
            return Ok(());
        }
        let changes: Vec<Delta> = rest.iter().map(|d| (*d).clone()).collect();
        let view = self.view(c, body, signer, parent, &changes);
        for v in &self.engine.validators {
            v.validate(&view)?;
        }
        Ok(())
    }

    /// A type validated by a registered message type (a plugin): its rules, then "no
    /// unexpected files".
    fn check_registered(
        &self,
        t: &dyn MessageType,
        c: &Commit,
        body: &Body,
        signer: &Signer,
        parent: &State,
        rest: &[&Delta],
    ) -> Result<(), Violation> {
        let changes: Vec<Delta> = rest.iter().map(|d| (*d).clone()).collect();
        t.validate(&self.view(c, body, signer, parent, &changes))?;
        no_files(body, rest)
    }

    /// What a message type or an app's validator sees of a commit.
    fn view<'v>(
        &'v self,
        c: &'v Commit,
        body: &'v Body,
        signer: &Signer,
        parent: &'v State,
        changes: &'v [Delta],
    ) -> CommitView<'v> {
        CommitView {
            conversation: self.conv,
            mode: parent.mode,
            commit: c,
            body,
            signer: signer.account,
            device: signer.device,
            role: signer.role,
            changes,
            parent,
            lookup: self,
        }
    }

    /// Rule `body-wellformed`. In the jami profile a `vote` without `"action"` (jamid writes
    /// `{"type":"vote","uri":…}`) takes its action from the one vote file it adds; any
    /// other change set is refused by `vote-files` in [`Ctx::check_vote`].
    fn parse_body(&self, c: &Commit, deltas: &[Delta]) -> Result<Body, Violation> {
        let err = match Body::parse(&c.message) {
            Ok(b) => return Ok(b),
            Err(e) => Violation::MalformedBody(e.to_string()),
        };
        if self.engine.profile != Profile::Jami {
            return Err(err);
        }
        let Ok(serde_json::Value::Object(mut obj)) = serde_json::from_str(&c.message) else {
            return Err(err);
        };
        if obj.get("type").and_then(|t| t.as_str()) != Some(body::types::VOTE)
            || obj.contains_key("action")
        {
            return Err(err);
        }
        // Without exactly one added vote file there is no action to take: check it as a ban
        // vote, which `vote-files` then refuses (after the signature, like every rule).
        let action = match deltas {
            [d] if d.old.is_none() => match Path::parse(&d.path) {
                Some(Path::Vote { action, .. }) => action,
                _ => VoteDir::Ban,
            },
            _ => VoteDir::Ban,
        };
        obj.insert("action".into(), action.dir().into());
        Body::from_object(obj).map_err(|e| Violation::MalformedBody(e.to_string()))
    }

    /// `devices/<own>.crt` or `CRLs/<own account>/*.crl` newly added, and well-formed.
    fn is_own_credential(&self, d: &Delta, signer: &Signer) -> Result<bool, Violation> {
        let (None, Some(new)) = (d.old, d.new) else {
            return Ok(false);
        };
        match Path::parse(&d.path) {
            Some(Path::Device(dev)) if dev == signer.device => {
                self.device_cert(&d.path, &new)?;
                Ok(true)
            }
            Some(Path::Crl(u, _)) if u == signer.account => {
                self.crl(&d.path, &new)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Rule `edit-target`: only the author edits, only an earlier text message.
    fn check_edit(&mut self, c: &Commit, signer: &Signer, e: &body::Edit) -> Result<(), Violation> {
        let target = e.edit;
        if self.load(&target).is_err() {
            return Err(Violation::EditTarget(format!(
                "{target} is not in this conversation"
            )));
        }
        if !self.is_ancestor(&target, &c.parents[0]) {
            return Err(Violation::EditTarget(format!(
                "{target} is not an earlier commit"
            )));
        }
        match self.author(&target) {
            Some(a) if a == signer.account => {}
            _ => {
                return Err(Violation::EditTarget(format!(
                    "{target} was not written by {}",
                    signer.account
                )))
            }
        }
        let tc = self.load(&target)?;
        match Body::parse(&tc.message) {
            Ok(Body::Text(_)) | Ok(Body::Edit(_)) => Ok(()),
            _ => Err(Violation::EditTarget(format!(
                "{target} is not a text message"
            ))),
        }
    }

    /// Rules `vote-by-admin`, `vote-target`, `vote-files`.
    fn check_vote(
        &self,
        parent: &State,
        signer: &Signer,
        v: &body::Vote,
        rest: &[&Delta],
    ) -> Result<(), Violation> {
        if signer.role != Some(MemberRole::Admin) {
            return Err(Violation::VoteByNonAdmin(signer.account));
        }
        let action = VoteDir::from(v.action);
        let kind = parent.vote_kind(action, &v.uri).ok_or_else(|| {
            Violation::VoteTarget(format!(
                "{} is not in a state a {} vote applies to",
                v.uri,
                action.dir()
            ))
        })?;
        let path = layout::vote(action, kind, &v.uri.to_string(), &signer.account);
        only_empty_file_added(rest, &path).map_err(Violation::VoteFiles)
    }

    /// Rules `add-mode`, `add-target`, `add-files`.
    fn check_add(
        &self,
        parent: &State,
        signer: &Signer,
        m: &body::Member,
        rest: &[&Delta],
    ) -> Result<(), Violation> {
        let who = match signer.role {
            Some(MemberRole::Admin) => "an admin",
            Some(MemberRole::Member) => "a member",
            _ => "a non-member",
        };
        let allowed = match parent.mode {
            Mode::OneToOne => false,
            Mode::AdminInvitesOnly => signer.role == Some(MemberRole::Admin),
            Mode::InvitesOnly | Mode::Public => {
                matches!(signer.role, Some(MemberRole::Admin | MemberRole::Member))
            }
        };
        if !allowed {
            return Err(Violation::AddNotAllowed {
                mode: parent.mode.name(),
                who: who.into(),
            });
        }
        let Target::Account(uri) = m.uri else {
            return Err(Violation::AddTarget(format!(
                "{} is a device, not an account",
                m.uri
            )));
        };
        if parent.role(&uri).is_some() {
            return Err(Violation::AddTarget(uri.to_string()));
        }
        let path = layout::invited(&uri);
        only_empty_file_added(rest, &path).map_err(Violation::AddFiles)
    }

    /// Rules `join-signer`, `join-invited`, `join-files`.
    fn check_join(
        &self,
        parent: &State,
        signer: &Signer,
        m: &body::Member,
        rest: &[&Delta],
    ) -> Result<(), Violation> {
        if m.uri != Target::Account(signer.account) {
            return Err(Violation::JoinSigner);
        }
        let uri = signer.account;
        match parent.role(&uri) {
            Some(MemberRole::Admin | MemberRole::Member) => {
                return Err(Violation::JoinFiles(format!("{uri} is already a member")))
            }
            Some(MemberRole::Invited) => {}
            _ if parent.mode == Mode::Public => {}
            _ => return Err(Violation::JoinNotInvited(uri)),
        }
        let mpath = layout::member_cert(&uri);
        let ipath = layout::invited(&uri);
        let mut saw_member = false;
        let mut saw_invite = !parent.invited.contains(&uri);
        for d in rest {
            if d.path == mpath && d.old.is_none() {
                if let Some(new) = &d.new {
                    let cert = self.account_cert(&d.path, new)?;
                    if cert.uri() != uri {
                        return Err(Violation::JoinFiles(format!(
                            "{mpath} is the certificate of {}",
                            cert.uri()
                        )));
                    }
                    saw_member = true;
                    continue;
                }
            }
            if d.path == ipath && d.new.is_none() && !saw_invite {
                saw_invite = true;
                continue;
            }
            return Err(Violation::JoinFiles(format!(
                "unexpected change of {}",
                d.path
            )));
        }
        if !saw_member {
            return Err(Violation::JoinFiles(format!("{mpath} must be added")));
        }
        if !saw_invite {
            return Err(Violation::JoinFiles(format!("{ipath} must be removed")));
        }
        Ok(())
    }

    /// Rules `remove-self`, `remove-files`: a member leaving removes only its own files.
    fn check_remove(
        &self,
        parent: &State,
        signer: &Signer,
        m: &body::Member,
        rest: &[&Delta],
    ) -> Result<(), Violation> {
        if m.uri != Target::Account(signer.account) {
            return Err(Violation::RemoveNotSelf);
        }
        let uri = signer.account;
        let mut removed_role = false;
        for d in rest {
            if d.new.is_some() {
                return Err(Violation::RemoveFiles(format!(
                    "{} is added or changed",
                    d.path
                )));
            }
            let own = match Path::parse(&d.path) {
                Some(Path::Admin(u)) | Some(Path::Member(u)) if u == uri => {
                    removed_role = true;
                    true
                }
                Some(Path::Crl(u, _)) => u == uri,
                Some(Path::Device(dev)) => match parent.devices.get(&dev) {
                    Some(blob) => self.device_account(&d.path, blob)? == Some(uri),
                    None => false,
                },
                _ => false,
            };
            if !own {
                return Err(Violation::RemoveFiles(format!(
                    "{} is not {uri}'s own file",
                    d.path
                )));
            }
        }
        if !removed_role {
            return Err(Violation::RemoveFiles(format!(
                "{uri}'s certificate must be removed"
            )));
        }
        Ok(())
    }

    /// Rules `ban-by-admin`, `ban-target`, `ban-majority`, `ban-files`.
    fn check_ban(
        &self,
        parent: &State,
        signer: &Signer,
        target: Target,
        action: VoteDir,
        rest: &[&Delta],
    ) -> Result<(), Violation> {
        if signer.role != Some(MemberRole::Admin) {
            return Err(Violation::BanByNonAdmin(signer.account));
        }
        let kind = parent.vote_kind(action, &target).ok_or_else(|| {
            Violation::BanTarget(format!(
                "{target} is not in a state a {} applies to",
                action.dir()
            ))
        })?;
        let t = target.to_string();
        let votes = parent.admin_votes(action, kind, &t);
        let admins = parent.admin_count();
        if 2 * votes <= admins {
            return Err(Violation::VoteNotPassed { votes, admins });
        }
        // jamid leaves a banned account's device certificates in `devices/`.
        let devices_follow = self.engine.profile != Profile::Jami;
        let moves = vote_moves(
            parent,
            action,
            kind,
            &target,
            devices_follow,
            &|path, blob| self.device_account(path, blob),
        )?;
        let mut expected: BTreeSet<(String, Option<ObjectId>, Option<ObjectId>)> = BTreeSet::new();
        for (from, to, blob) in moves {
            expected.insert((from, Some(blob), None));
            expected.insert((to, None, Some(blob)));
        }
        if let Some(voters) = parent.votes.get(&(action, kind, t.clone())) {
            for v in voters {
                let p = layout::vote(action, kind, &t, v);
                let blob = parent.files.get(&p).copied();
                expected.insert((p, blob, None));
            }
        }
        let got: BTreeSet<(String, Option<ObjectId>, Option<ObjectId>)> = rest
            .iter()
            .map(|d| (d.path.clone(), d.old, d.new))
            .collect();
        if got != expected {
            let missing: Vec<&String> = expected.difference(&got).map(|x| &x.0).collect();
            let extra: Vec<&String> = got.difference(&expected).map(|x| &x.0).collect();
            return Err(Violation::BanFiles(format!(
                "missing changes {missing:?}, unexpected changes {extra:?}"
            )));
        }
        Ok(())
    }

    /// Rules `profile-by-admin`, `profile-files`, `profile-vcard`.
    fn check_profile(&self, signer: &Signer, rest: &[&Delta]) -> Result<(), Violation> {
        if signer.role != Some(MemberRole::Admin) {
            return Err(Violation::ProfileByNonAdmin(signer.account));
        }
        let [d] = rest else {
            return Err(Violation::ProfileFiles(format!(
                "changed {:?}",
                paths(rest)
            )));
        };
        let (layout::PROFILE, Some(new)) = (d.path.as_str(), d.new) else {
            return Err(Violation::ProfileFiles(format!("changed {}", d.path)));
        };
        let data = self.blob(&d.path, &new)?;
        check_vcard(&data, self.engine.profile == Profile::Jami)
    }
}

/// A pinned plugin: its path and the message type it loaded as.
type Pinned = (String, Arc<dyn MessageType>);

impl Ctx<'_> {
    /// The plugins pinned at `parent` (`plugins/<sha256>.wasm`), loaded.
    fn pinned(&self, parent: &State) -> Result<Vec<Pinned>, Violation> {
        parent
            .files
            .range::<String, _>("plugins/".to_owned().."plugins0".to_owned())
            .map(|(path, id)| {
                let t = self.engine.pinned_plugin(id, || self.blob(path, id))?;
                Ok((path.clone(), t))
            })
            .collect()
    }

    /// The plugin pinned at `parent` that owns `kind`, if any.
    fn pinned_for(
        &self,
        parent: &State,
        kind: &str,
    ) -> Result<Option<Arc<dyn MessageType>>, Violation> {
        if !parent.files.keys().any(|p| p.starts_with("plugins/")) {
            return Ok(None);
        }
        Ok(self
            .pinned(parent)?
            .into_iter()
            .find(|(_, t)| t.types().iter().any(|k| k == kind))
            .map(|(_, t)| t))
    }

    /// Rules `plugin-by-admin`, `plugin-files`: an admin adds exactly one
    /// `plugins/<sha256>.wasm`, named by its SHA-256, within the size limit, that the plugin
    /// loader accepts (a component of the right world), owning no type another pinned plugin
    /// owns.
    fn check_plugin_install(
        &self,
        parent: &State,
        signer: &Signer,
        rest: &[&Delta],
    ) -> Result<(), Violation> {
        use sha2::Digest;
        if signer.role != Some(MemberRole::Admin) {
            return Err(Violation::PluginByNonAdmin(signer.account));
        }
        let [d] = rest else {
            return Err(Violation::PluginFiles(format!(
                "an install adds exactly one plugins/<sha256>.wasm, not {:?}",
                paths(rest)
            )));
        };
        let (Some(Path::Plugin(sha)), None, Some(new)) = (Path::parse(&d.path), d.old, d.new)
        else {
            return Err(Violation::PluginFiles(format!(
                "an install adds exactly one plugins/<sha256>.wasm, not {}",
                d.path
            )));
        };
        let max = self.engine.limits.max_plugin_bytes;
        let size = self.src.expect(&new, ObjKind::Blob)?.data.len();
        if size > max {
            return Err(Violation::Limit(format!(
                "plugin {} is {size} bytes (limit {max})",
                d.path
            )));
        }
        let wasm = self.blob(&d.path, &new)?;
        let digest = hex::encode(sha2::Sha256::digest(&wasm));
        if digest != sha {
            return Err(Violation::PluginFiles(format!(
                "{} has SHA-256 {digest}",
                d.path
            )));
        }
        let plugin = self.engine.pinned_plugin(&new, || Ok(wasm))?;
        let owned = plugin.types();
        for (path, other) in self.pinned(parent)? {
            if let Some(k) = other.types().iter().find(|k| owned.contains(k)) {
                return Err(Violation::PluginFiles(format!(
                    "type {k:?} is already owned by the pinned plugin {path}"
                )));
            }
        }
        Ok(())
    }

    /// Rules `plugin-by-admin`, `plugin-files`: an admin deletes exactly one pinned plugin.
    fn check_plugin_remove(&self, signer: &Signer, rest: &[&Delta]) -> Result<(), Violation> {
        if signer.role != Some(MemberRole::Admin) {
            return Err(Violation::PluginByNonAdmin(signer.account));
        }
        match rest {
            [d] if d.new.is_none() && matches!(Path::parse(&d.path), Some(Path::Plugin(_))) => {
                Ok(())
            }
            _ => Err(Violation::PluginFiles(format!(
                "a removal deletes exactly one plugins/<sha256>.wasm, not {:?}",
                paths(rest)
            ))),
        }
    }
}

/// Identifies a device certificate chain by the blobs it is made of: the device
/// certificate, the account certificate and the account's CRLs (sorted by path).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct ChainKey {
    device: ObjectId,
    account: ObjectId,
    crls: Vec<ObjectId>,
}

impl Ctx<'_> {
    /// Rule `signature` (and, for jamid chains, the validity period at the commit's time):
    /// the commit is signed by the authorized device's key, in the profile's scheme (native
    /// signatures verified once: see [`Ctx::presigned`]).
    fn verify_signed_by(&mut self, c: &Commit, a: &Authorized) -> Result<(), Violation> {
        match &a.cert {
            DeviceKey::Native(d) => {
                // Verified with the key of the device id it names, which is `d`'s key.
                if self.presigned.contains(&c.id) && d.id() == c.device {
                    return Ok(());
                }
                verify_commit_signature(c, d.public_key())?;
                self.presigned.insert(c.id);
                Ok(())
            }
            DeviceKey::Jami(d) => {
                keys::verify_jami_signature(c, d)?;
                keys::check_valid_at(&a.account_cert, &a.cert, c.time)
            }
        }
    }
}

/// Verifies deferred native signatures, spread over the available cores. Returns the
/// failing jobs' indices with their violation (what [`verify_commit_signature`] says).
pub(super) fn verify_deferred(
    jobs: &[(CommitId, ed25519_dalek::VerifyingKey)],
    commits: &HashMap<CommitId, Arc<Commit>>,
) -> Vec<(usize, Violation)> {
    let check = |range: std::ops::Range<usize>| -> Vec<(usize, Violation)> {
        let mut bad = Vec::new();
        for i in range {
            let (id, key) = &jobs[i];
            let res = match commits.get(id) {
                Some(c) => verify_commit_signature(c, key),
                None => Err(Violation::Objects(format!("commit {id} vanished"))),
            };
            if let Err(v) = res {
                bad.push((i, v));
            }
        }
        bad
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    if threads < 2 || jobs.len() < 512 {
        return check(0..jobs.len());
    }
    let chunk = jobs.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let range = t * chunk..((t + 1) * chunk).min(jobs.len());
                s.spawn(move || check(range))
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                // A panicking verifier is a bug; count its whole chunk as failed.
                h.join().unwrap_or_else(|_| {
                    vec![(
                        0,
                        Violation::BadSignature("signature verifier panicked".into()),
                    )]
                })
            })
            .collect()
    })
}

/// Rule `signature`: [`Commit::verify_signature`] with the device key, without re-decoding
/// the key for every commit. The fast path accepts exactly what `verify_signature` accepts
/// (same public key and namespace check, same signed data, same Ed25519 `verify`); on any
/// doubt or failure `verify_signature` itself decides, so errors are unchanged.
fn verify_commit_signature(c: &Commit, key: &ed25519_dalek::VerifyingKey) -> Result<(), Violation> {
    if fast_signature_ok(c, key) {
        return Ok(());
    }
    c.verify_signature(key).map_err(|e| match e {
        SignatureError::Unsigned(_) => Violation::Unsigned,
        e => Violation::BadSignature(e.to_string()),
    })
}

fn fast_signature_ok(c: &Commit, key: &ed25519_dalek::VerifyingKey) -> bool {
    use ed25519_dalek::Verifier as _;
    let Some(pem) = c.signature.as_deref() else {
        return false;
    };
    let Ok(sig) = crate::commit::parse_sshsig(pem) else {
        return false;
    };
    let ssh_key::public::KeyData::Ed25519(pk) = sig.public_key() else {
        return false;
    };
    if pk.0 != key.to_bytes()
        || sig.namespace() != crate::commit::NAMESPACE
        || !sig.reserved().is_empty()
        || sig.signature().algorithm() != ssh_key::Algorithm::Ed25519
    {
        return false;
    }
    let Ok(raw) = ed25519_dalek::Signature::from_slice(sig.signature_bytes()) else {
        return false;
    };
    let Ok(signed) =
        ssh_key::SshSig::signed_data(sig.namespace(), sig.hash_alg(), &c.signed_payload)
    else {
        return false;
    };
    key.verify(&signed, &raw).is_ok()
}

/// `Ok` if the only change is the empty file `path` being added; else the reason.
fn only_empty_file_added(rest: &[&Delta], path: &str) -> Result<(), String> {
    match rest {
        [d] if d.path == path && d.old.is_none() && d.new == Some(empty_blob()) => Ok(()),
        _ => Err(format!(
            "expected exactly the empty file {path} to be added, got {:?}",
            paths(rest)
        )),
    }
}

fn paths(rest: &[&Delta]) -> Vec<String> {
    rest.iter().map(|d| d.path.clone()).collect()
}

/// Rule `no-unexpected-files`.
fn no_files(body: &Body, rest: &[&Delta]) -> Result<(), Violation> {
    if rest.is_empty() {
        Ok(())
    } else {
        Err(Violation::UnexpectedFiles {
            kind: body.kind().to_owned(),
            paths: paths(rest),
        })
    }
}

/// A minimal vCard check: UTF-8, `BEGIN:VCARD` first, `END:VCARD` last, `VERSION` present,
/// every content line `NAME[;params]:value`. With `valueless` (the jami profile), a line
/// `NAME;params` without `:` is a property with no value: jamid writes an empty avatar as
/// `PHOTO;ENCODING=BASE64` followed by blank lines.
pub fn check_vcard(data: &[u8], valueless: bool) -> Result<(), Violation> {
    let text =
        std::str::from_utf8(data).map_err(|_| Violation::ProfileVcard("not UTF-8".into()))?;
    let lines: Vec<&str> = text
        .split('\n')
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.is_empty())
        .collect();
    if lines.first().map(|l| l.eq_ignore_ascii_case("BEGIN:VCARD")) != Some(true) {
        return Err(Violation::ProfileVcard(
            "does not start with BEGIN:VCARD".into(),
        ));
    }
    if lines.last().map(|l| l.eq_ignore_ascii_case("END:VCARD")) != Some(true) {
        return Err(Violation::ProfileVcard(
            "does not end with END:VCARD".into(),
        ));
    }
    let mut version = false;
    for l in &lines[1..lines.len() - 1] {
        if l.starts_with(' ') || l.starts_with('\t') {
            continue; // folded continuation
        }
        let name = match l.split_once(':') {
            Some((name, _)) => name,
            None if valueless => l,
            None => {
                return Err(Violation::ProfileVcard(format!(
                    "line without ':' ({l:.40})"
                )))
            }
        };
        let prop = name.split(';').next().unwrap_or_default();
        if prop.is_empty()
            || !prop
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            return Err(Violation::ProfileVcard(format!(
                "bad property name {prop:?}"
            )));
        }
        if prop.eq_ignore_ascii_case("VERSION") {
            version = true;
        }
    }
    if !version {
        return Err(Violation::ProfileVcard("no VERSION".into()));
    }
    Ok(())
}

fn is_decimal(s: &str) -> bool {
    !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit())
}

/// Rule `data-transfer-fields`.
fn check_data_transfer(d: &body::DataTransfer) -> Result<(), Violation> {
    let bad = |m: &str| Err(Violation::DataTransferFields(m.into()));
    if d.tid.is_empty() || d.tid.len() > 64 {
        return bad("\"tid\" must be 1-64 characters");
    }
    if d.display_name.is_empty()
        || d.display_name.contains(['/', '\\', '\0'])
        || d.display_name.len() > 255
    {
        return bad("\"displayName\" must be a file name (1-255 bytes, no path separators)");
    }
    if !is_decimal(&d.total_size) {
        return bad("\"totalSize\" must be a decimal number");
    }
    if d.sha3sum.len() != 128 || !d.sha3sum.bytes().all(|b| b.is_ascii_hexdigit()) {
        return bad("\"sha3sum\" must be 128 hex characters (SHA3-512)");
    }
    Ok(())
}

/// Rule `call-history-shape`: `to` + `duration`, or `uri` + `device` + `confId` [+ `duration`].
fn check_call_history(h: &body::CallHistory) -> Result<(), Violation> {
    if let Some(d) = &h.duration {
        if !is_decimal(d) {
            return Err(Violation::CallHistoryShape(
                "\"duration\" must be a decimal number".into(),
            ));
        }
    }
    let one_to_one =
        h.to.is_some() && h.duration.is_some() && h.uri.is_none() && h.conf_id.is_none();
    let conference = h.to.is_none() && h.uri.is_some() && h.device.is_some() && h.conf_id.is_some();
    if one_to_one || conference {
        Ok(())
    } else {
        Err(Violation::CallHistoryShape(
            "expected \"to\"+\"duration\", or \"uri\"+\"device\"+\"confId\" [+\"duration\"]".into(),
        ))
    }
}

impl CommitLookup for Ctx<'_> {
    fn commit(&self, id: &CommitId) -> Option<Arc<Commit>> {
        if let Some(c) = self.commits.get(id) {
            return Some(c.clone());
        }
        let obj = self.src.expect(&id.object_id(), ObjKind::Commit).ok()?;
        Commit::parse_with(*id, &obj.data, self.engine.profile.scheme())
            .ok()
            .map(Arc::new)
    }

    fn author(&self, id: &CommitId) -> Option<AccountUri> {
        let c = self.commit(id)?;
        let files = crate::object::read_tree(self.src, &c.tree, self.engine.limits.tree).ok()?;
        let path = layout::device_cert(&c.device);
        let blob = files.get(&path)?;
        self.device_account(&path, blob).ok().flatten()
    }

    fn is_ancestor(&self, ancestor: &CommitId, of: &CommitId) -> bool {
        self.graph
            .borrow_mut()
            .is_ancestor(self.src, ancestor, of)
            .unwrap_or(false)
    }

    fn read_blob(&self, id: &ObjectId, max: usize) -> Option<Vec<u8>> {
        let obj = self.src.expect(id, ObjKind::Blob).ok()?;
        (obj.data.len() <= max).then_some(obj.data)
    }
}

/// Reads the account a device certificate blob (at a path) belongs to.
pub type DeviceAccount<'a> = dyn Fn(&str, &ObjectId) -> Result<Option<AccountUri>, Violation> + 'a;

/// The file moves a passed vote makes: `(from, to, blob)`. Ban moves the target's file (and,
/// for an account when `devices_follow`, its devices' certificates) under `banned/`; unban
/// moves them back; promote moves `members/<uri>.crt` to `admins/<uri>.crt`. Used by the
/// validator and by [`crate::ops::apply_vote`], so both always agree. (`devices_follow` is
/// false only in the jami profile: jamid 13.7 leaves the devices in place.)
pub fn vote_moves(
    state: &State,
    action: VoteDir,
    kind: Kind,
    target: &Target,
    devices_follow: bool,
    device_account: &DeviceAccount<'_>,
) -> Result<Vec<(String, String, ObjectId)>, Violation> {
    let live = |k: Kind, t: &str| match k {
        Kind::Admins => layout::admin_cert_path(t),
        Kind::Members => format!("members/{t}.crt"),
        Kind::Invited => format!("invited/{t}"),
        Kind::Devices => format!("devices/{t}.crt"),
    };
    let t = target.to_string();
    let mut pairs: Vec<(String, String)> = match action {
        VoteDir::Ban => vec![(live(kind, &t), layout::banned(kind, &t))],
        VoteDir::Unban => vec![(layout::banned(kind, &t), live(kind, &t))],
        VoteDir::Promote => vec![(live(Kind::Members, &t), live(Kind::Admins, &t))],
    };
    if let (Target::Account(a), VoteDir::Ban | VoteDir::Unban, true) =
        (target, action, devices_follow)
    {
        // The account's devices move with it.
        for (path, blob) in &state.files {
            let dev = match (action, Path::parse(path)) {
                (VoteDir::Ban, Some(Path::Device(d))) => d.to_string(),
                (VoteDir::Unban, Some(Path::Banned(Kind::Devices, d))) => d,
                _ => continue,
            };
            if device_account(path, blob)? == Some(*a) {
                pairs.push(match action {
                    VoteDir::Ban => (
                        live(Kind::Devices, &dev),
                        layout::banned(Kind::Devices, &dev),
                    ),
                    _ => (
                        layout::banned(Kind::Devices, &dev),
                        live(Kind::Devices, &dev),
                    ),
                });
            }
        }
    }
    pairs
        .into_iter()
        .map(|(from, to)| {
            let blob = state
                .files
                .get(&from)
                .copied()
                .ok_or_else(|| Violation::BanTarget(format!("{from} is missing")))?;
            Ok((from, to, blob))
        })
        .collect()
}
