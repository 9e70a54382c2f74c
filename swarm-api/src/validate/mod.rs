//! Validation (DESIGN §4): every rule of the swarm, in one place.
//!
//! [`Engine::validate_branch`] checks every new commit of a fetched (quarantined) branch,
//! oldest first, against its **parent's** tree, never a local checkout; one failure rejects
//! the whole branch with a [`Rejection`] naming the commit, the rule and a reason.
//! [`Engine::verify`] checks a whole repository from its initial commit with the same code;
//! local commits go through [`Engine::validate_branch`] too before they are stored.
//!
//! Each rule is a named check with its own [`Violation`] variant; `VALIDATION.md` in this
//! crate lists them with their tests.

pub mod keys;
pub(crate) mod rules;
pub mod state;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use gix_hash::ObjectId;

use crate::body::{Body, Mode};
use crate::commit::{Commit, Scheme};
use crate::id::{AccountUri, CommitId, ConversationId, DeviceId};
use crate::identity::ChainError;
use crate::object::{read_tree, Files, Kind, ObjectError, ObjectSource, TreeLimits};
use crate::order::display_order;
use crate::traits::{MessageType, PluginLoader};

pub use rules::check_vcard;
pub use state::{MemberRole, State};

/// Size limits; over any of them a branch is refused (git-bomb defence).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Maximum bytes of a commit object.
    pub max_commit_bytes: usize,
    /// Maximum changed paths in one commit.
    pub max_changed_paths: usize,
    /// Maximum bytes of one blob a commit adds or modifies.
    pub max_blob_bytes: usize,
    /// Tree depth and size.
    pub tree: TreeLimits,
    /// Maximum new commits in one branch (one fetch).
    pub max_commits: usize,
    /// Maximum bytes of a plugin pinned by `application/plugin-install`.
    pub max_plugin_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_commit_bytes: 64 * 1024,
            max_changed_paths: 1024,
            max_blob_bytes: 8 * 1024 * 1024,
            tree: TreeLimits::default(),
            max_commits: 1_000_000,
            max_plugin_bytes: 2 * 1024 * 1024,
        }
    }
}

/// A broken rule. The variant is the rule; [`Violation::rule`] is its stable name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Violation {
    /// The commit object does not decode (bad header, author ≠ committer, email not a
    /// device id, non-UTF-8 message...).
    #[error("malformed commit: {0}")]
    MalformedCommit(String),
    /// An object the commit refers to is missing or malformed.
    #[error("missing or malformed object: {0}")]
    Objects(String),
    /// The message is not a well-formed body of its type.
    #[error("malformed message body: {0}")]
    MalformedBody(String),
    /// No `gpgsig` header.
    #[error("the commit is not signed")]
    Unsigned,
    /// The signature does not verify with the device certificate.
    #[error("bad signature: {0}")]
    BadSignature(String),
    /// No certificate for the signing device (at the parent, or added by this commit).
    #[error("device {0} has no certificate in devices/")]
    UnknownDevice(DeviceId),
    /// The device's account is not an admin or member.
    #[error("device {device} belongs to {account}, which is not an admin or member")]
    DeviceNotFromMember {
        /// The device.
        device: DeviceId,
        /// Its (claimed) account.
        account: String,
    },
    /// The device certificate does not chain to its account.
    #[error("device certificate chain: {0}")]
    DeviceChain(ChainError),
    /// A jamid device certificate does not chain to its account, or was not valid at the
    /// commit's time.
    #[error("device certificate chain: {0}")]
    JamiChain(String),
    /// The device is listed in its account's CRL.
    #[error("device {0} is revoked by its account's CRL")]
    DeviceRevoked(DeviceId),
    /// The device is under `banned/devices/`.
    #[error("device {0} is banned")]
    DeviceBanned(DeviceId),
    /// The account is under `banned/`.
    #[error("account {0} is banned")]
    AccountBanned(AccountUri),
    /// A certificate or CRL in the tree does not parse or has the wrong name.
    #[error("malformed certificate {path}: {reason}")]
    MalformedCertificate {
        /// The file.
        path: String,
        /// Details.
        reason: String,
    },
    /// A second commit without parents.
    #[error("only the conversation's initial commit may have no parent")]
    SecondRoot,
    /// More than two parents.
    #[error("a commit has at most 2 parents, this one has {0}")]
    TooManyParents(usize),
    /// The initial commit's body is wrong.
    #[error("initial commit body: {0}")]
    InitialBody(String),
    /// The initial commit's files are wrong.
    #[error("initial commit files: {0}")]
    InitialFiles(String),
    /// A merge commit's tree is not the deterministic merge of its parents.
    #[error("merge tree {found} is not the deterministic merge of its parents ({expected})")]
    MergeTree {
        /// The tree the merge must have.
        expected: String,
        /// The tree it has.
        found: String,
    },
    /// A path outside the repository layout.
    #[error("path {0:?} is not part of the conversation layout")]
    LayoutPath(String),
    /// A commit of a type that changes no files changed some.
    #[error("a {kind} commit may not change {paths:?} (only add its author's own device certificate or CRL)")]
    UnexpectedFiles {
        /// The commit type.
        kind: String,
        /// The offending paths.
        paths: Vec<String>,
    },
    /// A CRL added by a commit is not its author's account's.
    #[error("CRL {0} is not signed by the commit author's account")]
    ForeignCrl(String),
    /// A vote by a non-admin.
    #[error("only admins vote; {0} is not an admin")]
    VoteByNonAdmin(AccountUri),
    /// The vote's files do not match the vote.
    #[error("vote files: {0}")]
    VoteFiles(String),
    /// The vote's target is not something that can be voted on.
    #[error("vote target: {0}")]
    VoteTarget(String),
    /// The mode does not allow this account to invite.
    #[error("in a {mode} conversation, {who} may not invite")]
    AddNotAllowed {
        /// The mode.
        mode: &'static str,
        /// Who tried.
        who: String,
    },
    /// An invitation's files are wrong.
    #[error("invitation files: {0}")]
    AddFiles(String),
    /// The invited account is already in the conversation or banned.
    #[error("cannot invite {0}: already invited, a member, an admin or banned")]
    AddTarget(String),
    /// A join signed by someone else than the joining account.
    #[error("a join must be signed by a device of the joining account")]
    JoinSigner,
    /// A join without invitation outside PUBLIC.
    #[error("{0} joined without an invitation (only PUBLIC conversations allow that)")]
    JoinNotInvited(AccountUri),
    /// A join's files are wrong.
    #[error("join files: {0}")]
    JoinFiles(String),
    /// A `remove` of someone else.
    #[error("a member can only remove itself")]
    RemoveNotSelf,
    /// A `remove` touching files that are not the leaver's own.
    #[error("remove files: {0}")]
    RemoveFiles(String),
    /// A ban/unban commit by a non-admin.
    #[error("only admins ban or unban; {0} is not an admin")]
    BanByNonAdmin(AccountUri),
    /// The vote has not passed (strictly more than half of the admins at the parent).
    #[error("the vote has not passed: {votes} of {admins} admins voted, more than half is needed")]
    VoteNotPassed {
        /// Admin votes present.
        votes: usize,
        /// Admins at the parent.
        admins: usize,
    },
    /// A ban/unban's files are wrong.
    #[error("ban/unban files: {0}")]
    BanFiles(String),
    /// The ban/unban target is wrong.
    #[error("ban/unban target: {0}")]
    BanTarget(String),
    /// A profile update by a non-admin.
    #[error("only admins update the profile; {0} is not an admin")]
    ProfileByNonAdmin(AccountUri),
    /// A profile update changing other files.
    #[error("a profile update changes profile.vcf only: {0}")]
    ProfileFiles(String),
    /// The profile is not a vCard.
    #[error("profile.vcf is not a vCard: {0}")]
    ProfileVcard(String),
    /// An edit of something that is not the author's own earlier message.
    #[error("edit target: {0}")]
    EditTarget(String),
    /// A data-transfer body with missing or malformed fields.
    #[error("data transfer: {0}")]
    DataTransferFields(String),
    /// A call-history body of neither shape.
    #[error("call history: {0}")]
    CallHistoryShape(String),
    /// A text body that replies and reacts at once.
    #[error("text message: {0}")]
    TextShape(String),
    /// No built-in rule or registered message type for this `type`.
    #[error("unknown commit type {0:?}: the peer may run a newer version, or be attempting an unauthorized change")]
    UnknownType(String),
    /// A registered message type (plugin) refused the commit.
    #[error("{plugin} refused the commit: {reason}")]
    Plugin {
        /// The message type's name.
        plugin: String,
        /// Its reason.
        reason: String,
    },
    /// A limit was exceeded.
    #[error("limit exceeded: {0}")]
    Limit(String),
    /// A plugin install or removal by a non-admin.
    #[error("only admins install or remove plugins; {0} is not an admin")]
    PluginByNonAdmin(AccountUri),
    /// A plugin install or removal whose files or component are wrong.
    #[error("plugin install/remove: {0}")]
    PluginFiles(String),
    /// An app's own policy ([`Engine::add_validator`]) refused the commit.
    #[error("policy {policy} refused the commit: {reason}")]
    Policy {
        /// The policy's name.
        policy: String,
        /// Its reason.
        reason: String,
    },
}

impl Violation {
    /// The rule's stable name (as in `VALIDATION.md`).
    pub fn rule(&self) -> &'static str {
        use Violation::*;
        match self {
            MalformedCommit(_) => "commit-wellformed",
            Objects(_) => "objects-present",
            MalformedBody(_) => "body-wellformed",
            Unsigned | BadSignature(_) => "signature",
            UnknownDevice(_) => "device-known",
            DeviceNotFromMember { .. } => "device-of-member",
            DeviceChain(_) | JamiChain(_) => "device-chain",
            DeviceRevoked(_) => "device-not-revoked",
            DeviceBanned(_) => "device-not-banned",
            AccountBanned(_) => "account-not-banned",
            MalformedCertificate { .. } => "certificate-wellformed",
            SecondRoot => "single-root",
            TooManyParents(_) => "at-most-two-parents",
            InitialBody(_) => "initial-body",
            InitialFiles(_) => "initial-files",
            MergeTree { .. } => "merge-tree",
            LayoutPath(_) => "layout-path",
            UnexpectedFiles { .. } => "no-unexpected-files",
            ForeignCrl(_) => "own-crl",
            VoteByNonAdmin(_) => "vote-by-admin",
            VoteFiles(_) => "vote-files",
            VoteTarget(_) => "vote-target",
            AddNotAllowed { .. } => "add-mode",
            AddFiles(_) => "add-files",
            AddTarget(_) => "add-target",
            JoinSigner => "join-signer",
            JoinNotInvited(_) => "join-invited",
            JoinFiles(_) => "join-files",
            RemoveNotSelf => "remove-self",
            RemoveFiles(_) => "remove-files",
            BanByNonAdmin(_) => "ban-by-admin",
            VoteNotPassed { .. } => "ban-majority",
            BanFiles(_) => "ban-files",
            BanTarget(_) => "ban-target",
            ProfileByNonAdmin(_) => "profile-by-admin",
            ProfileFiles(_) => "profile-files",
            ProfileVcard(_) => "profile-vcard",
            EditTarget(_) => "edit-target",
            DataTransferFields(_) => "data-transfer-fields",
            CallHistoryShape(_) => "call-history-shape",
            TextShape(_) => "text-shape",
            UnknownType(_) => "unknown-type",
            Plugin { .. } => "plugin",
            Limit(_) => "limits",
            PluginByNonAdmin(_) => "plugin-by-admin",
            PluginFiles(_) => "plugin-files",
            Policy { .. } => "policy",
        }
    }
}

impl From<ObjectError> for Violation {
    fn from(e: ObjectError) -> Self {
        match e {
            ObjectError::TooLarge { .. } => Violation::Limit(e.to_string()),
            // The layout holds files only: an empty directory is a path outside it.
            ObjectError::EmptyDirectory { path, .. } => Violation::LayoutPath(path),
            e => Violation::Objects(e.to_string()),
        }
    }
}

/// A refused branch: the first failing commit, its rule and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("commit {commit} refused by rule {rule}: {violation}", rule = violation.rule())]
pub struct Rejection {
    /// The failing commit.
    pub commit: CommitId,
    /// What it broke.
    pub violation: Violation,
}

/// Read access to the history a commit sits on, for rules that look back (edits) and for
/// message types.
pub trait CommitLookup {
    /// The commit, if it is in the conversation (stored or in the branch being validated).
    fn commit(&self, id: &CommitId) -> Option<Arc<Commit>>;
    /// The account that signed `id` (the issuer of its device certificate).
    fn author(&self, id: &CommitId) -> Option<AccountUri>;
    /// Whether `ancestor` is `of` or one of its ancestors.
    fn is_ancestor(&self, ancestor: &CommitId, of: &CommitId) -> bool;
    /// The bytes of a blob of the conversation (a file of the parent's tree, say), if stored
    /// and at most `max` bytes.
    fn read_blob(&self, id: &ObjectId, max: usize) -> Option<Vec<u8>>;
}

/// A branch that passed validation, oldest first. Only [`Engine::validate_branch`] makes
/// one, so a value of this type proves the commits were checked.
#[derive(Debug, Clone)]
pub struct Validated {
    commits: Vec<CommitId>,
    head_state: BTreeMap<CommitId, Arc<State>>,
}

impl Validated {
    /// The new commits, parents first.
    pub fn commits(&self) -> &[CommitId] {
        &self.commits
    }
    /// The membership state at one of the branch's tips.
    pub fn state(&self, tip: &CommitId) -> Option<&Arc<State>> {
        self.head_state.get(tip)
    }

    /// The ids of the objects the validated commits add, given `new`, the objects that arrived
    /// with them (a quarantine, a received bundle): each commit, and every tree and blob under
    /// its tree that `new` holds, down to the trees `new` lacks (stored before, with all
    /// below them). Blobs are listed without being read (some may be stored already). What a
    /// peer sent beyond these reaches nothing validated: it is never stored.
    pub fn reachable(&self, new: &dyn ObjectSource) -> Result<HashSet<ObjectId>, ObjectError> {
        let mut ids = HashSet::new();
        let mut trees: Vec<ObjectId> = Vec::new();
        for c in &self.commits {
            let Some(obj) = new.object(&c.object_id())? else {
                continue;
            };
            ids.insert(c.object_id());
            let tree = gix_object::CommitRefIter::from_bytes(&obj.data, gix_hash::Kind::Sha1)
                .tree_id()
                .map_err(|e| ObjectError::Malformed {
                    id: c.object_id(),
                    reason: e.to_string(),
                })?;
            trees.push(tree);
        }
        while let Some(tree) = trees.pop() {
            if ids.contains(&tree) || new.object(&tree)?.is_none() {
                continue;
            }
            ids.insert(tree);
            for (is_tree, id) in crate::object::dir_entries(new, &tree)?.into_values() {
                if is_tree {
                    trees.push(id);
                } else {
                    ids.insert(id);
                }
            }
        }
        Ok(ids)
    }
}

/// Which rule set an [`Engine`] applies.
///
/// [`Profile::Jami`] validates repositories written by jamid 13.7: the [`Scheme::Jami`]
/// signatures and certificates, and the rules adapted only where jamid's legitimate output
/// requires it (`VALIDATION.md`, "The jami profile"). Every other rule, including the checks
/// jamid lacks, stays on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Our format (DESIGN §3, §4).
    #[default]
    Native,
    /// jamid 13.7's format.
    Jami,
}

impl Profile {
    /// The signature scheme of this profile.
    pub fn scheme(self) -> Scheme {
        match self {
            Profile::Native => Scheme::Native,
            Profile::Jami => Scheme::Jami,
        }
    }

    /// The profile for repositories signed with `scheme`.
    pub fn of(scheme: Scheme) -> Self {
        match scheme {
            Scheme::Native => Profile::Native,
            Scheme::Jami => Profile::Jami,
        }
    }
}

/// A plugin blob loaded, or why it does not load.
type Loaded = Result<Arc<dyn MessageType>, String>;

/// The validation engine: the built-in rules plus registered message types.
pub struct Engine {
    limits: Limits,
    profile: Profile,
    types: BTreeMap<String, Arc<dyn MessageType>>,
    /// The app's own policies, applied after the built-in rules.
    validators: Vec<Arc<dyn crate::traits::Validator>>,
    loader: Option<Arc<dyn PluginLoader>>,
    /// Pinned plugins loaded, by blob id (loading is a pure function of the blob).
    pinned: Mutex<Memo<ObjectId, Loaded>>,
    /// Certificates and CRLs parsed, by blob id.
    parsed: Mutex<Memo<ObjectId, state::Parsed>>,
    /// Device certificate chains already verified (they depend only on their blobs).
    chains: Mutex<Memo<rules::ChainKey, ()>>,
    /// Membership states of recent commits (a pure function of the commit): the heads a node
    /// serves and syncs onto are looked up again and again.
    states: Mutex<Memo<(ConversationId, CommitId), Arc<State>>>,
}

/// A bounded memo, oldest evicted first: every cache of the engine is one, so what peers
/// make a node remember (certificates, plugins, states) never grows without bound.
pub(crate) struct Memo<K, V> {
    map: HashMap<K, V>,
    order: std::collections::VecDeque<K>,
    capacity: usize,
}

impl<K: std::hash::Hash + Eq + Clone, V: Clone> Memo<K, V> {
    /// Memoised plugins (compiled modules are large).
    pub(crate) const PLUGINS: usize = 64;
    /// Memoised certificates, CRLs and verified chains.
    pub(crate) const CERTIFICATES: usize = 4096;
    /// Memoised membership states.
    pub(crate) const STATES: usize = 256;

    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            map: HashMap::new(),
            order: std::collections::VecDeque::new(),
            capacity,
        }
    }

    pub(crate) fn get(&self, key: &K) -> Option<V> {
        self.map.get(key).cloned()
    }

    pub(crate) fn contains(&self, key: &K) -> bool {
        self.map.contains_key(key)
    }

    pub(crate) fn insert(&mut self, key: K, value: V) {
        if self.map.insert(key.clone(), value).is_none() {
            self.order.push_back(key);
            while self.order.len() > self.capacity {
                if let Some(old) = self.order.pop_front() {
                    self.map.remove(&old);
                }
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("limits", &self.limits)
            .field("profile", &self.profile)
            .field("types", &self.types.keys().collect::<Vec<_>>())
            .field("validators", &self.validators.len())
            .finish()
    }
}

impl Default for Engine {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

impl Engine {
    /// From this many new commits, signatures are verified in parallel (see
    /// [`Engine::validate_branch`]).
    const PARALLEL_SIGNATURES: usize = 512;

    /// An engine with the built-in rules of the native profile and these limits.
    pub fn new(limits: Limits) -> Self {
        Self::with_profile(Profile::Native, limits)
    }

    /// An engine applying `profile`'s rules with these limits.
    pub fn with_profile(profile: Profile, limits: Limits) -> Self {
        Self {
            limits,
            profile,
            types: BTreeMap::new(),
            validators: Vec::new(),
            loader: None,
            pinned: Mutex::new(Memo::new(Memo::<ObjectId, Loaded>::PLUGINS)),
            parsed: Mutex::new(Memo::new(Memo::<ObjectId, state::Parsed>::CERTIFICATES)),
            chains: Mutex::new(Memo::new(Memo::<rules::ChainKey, ()>::CERTIFICATES)),
            states: Mutex::new(Memo::new(
                Memo::<(ConversationId, CommitId), Arc<State>>::STATES,
            )),
        }
    }

    /// Registers a message type for the `type` strings it owns. The types of
    /// [`crate::body::types::PLUGGABLE`] (edits, call history) are then validated by it
    /// instead of the built-in rule; a [`crate::body::types::RESERVED`] type cannot be
    /// taken over (it is skipped, with a warning).
    pub fn register(&mut self, t: Arc<dyn MessageType>) {
        for name in t.types() {
            if crate::body::types::RESERVED.contains(&name.as_str()) {
                tracing::warn!(target: "swarm_api", kind = %name, "a message type may not own a built-in type");
                continue;
            }
            self.types.insert(name, t.clone());
        }
    }

    /// Stacks an app's own policy (e.g. a moderation rule) on the built-in rules: it sees every
    /// commit that has one parent, after the built-in rules and the commit type's rule passed,
    /// and its [`Violation`] refuses the commit (and the branch bringing it) like any rule's.
    /// Validators run in the order added. The initial commit and merges are structural and
    /// not shown to them.
    ///
    /// Like every rule, a validator must be deterministic; and it is a policy of *this* node:
    /// a member whose app does not apply it accepts what this node refuses, and the two then
    /// no longer sync that branch. Use it for what every app of a deployment applies.
    pub fn add_validator(&mut self, v: Arc<dyn crate::traits::Validator>) {
        self.validators.push(v);
    }

    /// Lets this engine run plugins pinned in conversations (`plugins/<sha256>.wasm`).
    /// Without a loader, `application/plugin-install` commits are refused: the node cannot
    /// check them.
    pub fn set_plugin_loader(&mut self, loader: Arc<dyn PluginLoader>) {
        self.loader = Some(loader);
    }

    /// The pinned plugin in blob `id` (`bytes` reads it), loaded once.
    fn pinned_plugin(
        &self,
        id: &ObjectId,
        bytes: impl FnOnce() -> Result<Vec<u8>, Violation>,
    ) -> Result<Arc<dyn MessageType>, Violation> {
        let Some(loader) = &self.loader else {
            return Err(Violation::PluginFiles(
                "this node cannot run plugins (no plugin loader)".into(),
            ));
        };
        if let Some(r) = self.pinned.lock().ok().and_then(|m| m.get(id)) {
            return r.map_err(Violation::PluginFiles);
        }
        let loaded = loader.load(&bytes()?);
        if let Ok(mut m) = self.pinned.lock() {
            m.insert(*id, loaded.clone());
        }
        loaded.map_err(Violation::PluginFiles)
    }

    fn chain_verified(&self, key: &rules::ChainKey) -> bool {
        self.chains.lock().map(|c| c.contains(key)).unwrap_or(false)
    }

    fn chain_ok(&self, key: rules::ChainKey) {
        if let Ok(mut c) = self.chains.lock() {
            c.insert(key, ());
        }
    }

    /// A one-line text for a commit of a registered type (a plugin's `summary`), for
    /// clients that do not know the type; `None` for built-in types and when the owner has
    /// none.
    pub fn summary(&self, body: &Body) -> Option<String> {
        self.types.get(body.kind())?.summary(body)
    }

    /// The rule profile.
    pub fn profile(&self) -> Profile {
        self.profile
    }

    /// The limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Validates a whole conversation from its initial commit up to `head`.
    pub fn verify(
        &self,
        conv: ConversationId,
        src: &dyn ObjectSource,
        head: CommitId,
    ) -> Result<Validated, Rejection> {
        self.validate_branch(conv, src, &|_| false, &[head])
    }

    /// Validates the commits reachable from `tips` that `known` does not already contain
    /// (`known` answers for commits already validated and stored), parents first. `src`
    /// gives access to both stored and quarantined objects. The first failure rejects the
    /// whole branch.
    pub fn validate_branch(
        &self,
        conv: ConversationId,
        src: &dyn ObjectSource,
        known: &dyn Fn(&CommitId) -> bool,
        tips: &[CommitId],
    ) -> Result<Validated, Rejection> {
        let mut ctx = rules::Ctx::new(self, conv, src);
        // 1. Collect the new commits, bounded before anything else is read.
        // (Hash maps: the order of `new` does not matter, `display_order` sorts.)
        let mut new: HashMap<CommitId, Arc<Commit>> = HashMap::new();
        let mut stack: Vec<CommitId> = tips.iter().filter(|t| !known(t)).copied().collect();
        let mut seen: HashSet<CommitId> = stack.iter().copied().collect();
        while let Some(id) = stack.pop() {
            if new.len() >= self.limits.max_commits {
                return Err(Rejection {
                    commit: tips.first().copied().unwrap_or(id),
                    violation: Violation::Limit(format!(
                        "more than {} new commits in one branch",
                        self.limits.max_commits
                    )),
                });
            }
            let c = ctx.load(&id).map_err(|violation| Rejection {
                commit: id,
                violation,
            })?;
            for p in &c.parents {
                if !known(p) && seen.insert(*p) {
                    stack.push(*p);
                }
            }
            new.insert(id, c);
        }
        // 2. Oldest first. Cheapest check first: a long branch's native signatures are
        // verified together, on every core, before any commit is checked, so no forged commit
        // reaches a tree diff or a plugin; the verdict stays the one a commit-by-commit check
        // gives: the first commit (in this order) whose signature or rule fails. (Each commit
        // is also authorized before its tree is diffed: `rules::Ctx::check`.)
        let order = display_order(new.values().map(|c| (c.id, c.parents.as_slice())));
        let mut failure: Option<(usize, Violation)> = None;
        let mut end = order.len();
        if order.len() >= Self::PARALLEL_SIGNATURES {
            let jobs: Vec<(CommitId, ed25519_dalek::VerifyingKey)> = order
                .iter()
                .filter_map(|id| ctx.signing_key(&new[id]).map(|k| (*id, k)))
                .collect();
            let bad = rules::verify_deferred(&jobs, &new);
            let position: HashMap<CommitId, usize> =
                order.iter().enumerate().map(|(k, id)| (*id, k)).collect();
            let bad_ids: HashSet<CommitId> = bad
                .iter()
                .filter_map(|(j, _)| jobs.get(*j).map(|(id, _)| *id))
                .collect();
            ctx.presigned.extend(
                jobs.iter()
                    .map(|(id, _)| *id)
                    .filter(|id| !bad_ids.contains(id)),
            );
            failure = bad
                .into_iter()
                .filter_map(|(j, v)| {
                    jobs.get(j)
                        .and_then(|(id, _)| position.get(id))
                        .map(|k| (*k, v))
                })
                .min_by_key(|(k, _)| *k);
            if let Some((k, _)) = &failure {
                end = *k;
            }
        }
        let mut states: HashMap<CommitId, Arc<State>> = HashMap::new();
        for (k, id) in order[..end].iter().enumerate() {
            let c = &new[id];
            match ctx.check(c, &mut states) {
                Ok(state) => {
                    states.insert(*id, state);
                }
                Err(v) => {
                    failure = Some((k, v));
                    break;
                }
            }
        }
        if let Some((k, violation)) = failure {
            return Err(Rejection {
                commit: order[k],
                violation,
            });
        }
        let head_state: BTreeMap<CommitId, Arc<State>> = tips
            .iter()
            .filter_map(|t| states.get(t).map(|s| (*t, s.clone())))
            .collect();
        if let Ok(mut cache) = self.states.lock() {
            for (t, s) in &head_state {
                cache.insert((conv, *t), s.clone());
            }
        }
        Ok(Validated {
            commits: order,
            head_state,
        })
    }

    /// The membership state at a stored commit (reads its whole tree once).
    pub fn state_at(
        &self,
        conv: ConversationId,
        src: &dyn ObjectSource,
        commit: &CommitId,
    ) -> Result<Arc<State>, Violation> {
        let mut ctx = rules::Ctx::new(self, conv, src);
        ctx.state_of(commit, &mut HashMap::new())
    }

    /// Whether `device` is revoked by a CRL of its account in `state` (the state of `conv`
    /// read from `src`). Only a device whose certificate the state holds (it committed there)
    /// can be judged; others answer `false` (the transport checks them at the handshake).
    pub fn is_revoked(
        &self,
        conv: ConversationId,
        src: &dyn ObjectSource,
        state: &State,
        device: &DeviceId,
    ) -> Result<bool, Violation> {
        rules::Ctx::new(self, conv, src).revoked(state, device)
    }

    /// The CRLs `account` published in `state` (unreadable ones skipped: they were checked
    /// when they were committed).
    pub fn crls_of(
        &self,
        conv: ConversationId,
        src: &dyn ObjectSource,
        state: &State,
        account: &AccountUri,
    ) -> Vec<Arc<crate::identity::Crl>> {
        rules::Ctx::new(self, conv, src).crls_of(state, account)
    }
}

fn mode_of(
    src: &dyn ObjectSource,
    conv: &ConversationId,
    scheme: Scheme,
) -> Result<Mode, Violation> {
    let obj = src.expect(&conv.initial_commit().object_id(), Kind::Commit)?;
    let c = Commit::parse_with(conv.initial_commit(), &obj.data, scheme)
        .map_err(|e| Violation::MalformedCommit(e.to_string()))?;
    match Body::parse(&c.message) {
        Ok(Body::Initial(i)) => Ok(i.mode),
        Ok(_) => Err(Violation::InitialBody("not an initial body".into())),
        Err(e) => Err(Violation::InitialBody(e.to_string())),
    }
}

fn full_state(
    src: &dyn ObjectSource,
    mode: Mode,
    tree: &ObjectId,
    limits: &Limits,
) -> Result<State, Violation> {
    let files: Files = read_tree(src, tree, limits.tree)?;
    Ok(State::from_files(mode, files))
}

#[cfg(test)]
mod memo_tests {
    use super::Memo;

    #[test]
    fn a_memo_keeps_its_newest_entries_up_to_its_capacity() {
        let mut m: Memo<u32, u32> = Memo::new(3);
        for i in 0..1000 {
            m.insert(i, i * 2);
            assert!(m.len() <= 3);
        }
        assert_eq!(m.get(&999), Some(1998));
        assert_eq!(m.get(&997), Some(1994));
        assert!(!m.contains(&996), "the oldest went first");
        m.insert(999, 0);
        assert_eq!(m.len(), 3, "inserting a known key adds nothing");
    }
}
