//! Conversation operations over any [`Storage`]: create, append, read, walk.
//!
//! These are the same for every backend because they are computed from Git objects: the
//! backend only stores objects and heads. Validation of what is appended is the
//! `Validator`'s job (see the "Validation" issue); this module builds well-formed, signed
//! commits and reads them back.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use gix_hash::ObjectId;

use crate::body::{Body, Initial, Mode};
use crate::commit::{sign_commit, Commit, CommitParseError, SignError};
use crate::id::{AccountUri, CommitId, ConversationId, DeviceId};
use crate::identity::{verify_device, AccountCert, ChainError, Crl, Device, DeviceCert};
use crate::layout;
use crate::object::{
    build_tree, diff, read_tree, Change, Files, Kind, Object, ObjectError, ObjectSource, TreeLimits,
};
use crate::order::display_order;
use crate::storage::{ConversationObjects, HeadUpdate, Storage, StorageError};
use crate::validate::{Engine, Rejection, State, Validated};

/// Errors of conversation operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RepoError {
    /// The storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// An object is missing or malformed.
    #[error(transparent)]
    Object(#[from] ObjectError),
    /// A commit does not decode.
    #[error(transparent)]
    Parse(#[from] CommitParseError),
    /// A commit could not be signed.
    #[error(transparent)]
    Sign(#[from] SignError),
    /// The conversation is not stored here.
    #[error("unknown conversation {0}")]
    UnknownConversation(ConversationId),
    /// The commit is not part of this conversation.
    #[error("commit {0} is not in this conversation")]
    UnknownCommit(CommitId),
    /// A one-to-one conversation was created without the other party.
    #[error("a one-to-one conversation needs the URI of the other party")]
    MissingInvited,
    /// Another mode was created with an invited party.
    #[error("only one-to-one conversations name an invited party in their initial commit")]
    UnexpectedInvited,
    /// A file change outside the repository layout.
    #[error("path {0:?} is not part of the conversation layout")]
    InvalidPath(String),
    /// Validation refused the commit(s); nothing was stored.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// This device's certificate chain is not valid now (expired, revoked...).
    #[error("this device cannot commit: {0}")]
    Chain(ChainError),
    /// The received branch does not descend from the current head (merging is the sync
    /// layer's job); nothing was stored.
    #[error("commit {0} does not descend from the current head")]
    NotFastForward(CommitId),
}

/// A built, signed commit and the new objects it needs, not yet validated or stored.
#[derive(Debug, Clone)]
pub struct Draft {
    /// The commit id.
    pub id: CommitId,
    /// The commit object and every new tree and blob.
    pub objects: Vec<Object>,
}

/// What a local device needs to make commits: its account certificate, the device (key and
/// certificate) and the account's current CRL.
#[derive(Debug, Clone, Copy)]
pub struct Signer<'a> {
    /// The account certificate (goes to `admins/` or `members/`).
    pub account: &'a AccountCert,
    /// The signing device.
    pub device: &'a Device,
    /// The account's current CRL (goes to `CRLs/<uri>/`).
    pub crl: &'a Crl,
}

/// A change to a file of the conversation tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileChange {
    /// Create or replace the file at a layout path.
    Write(String, Vec<u8>),
    /// Remove the file at a layout path.
    Delete(String),
}

fn crl_path(signer: &Signer<'_>) -> String {
    layout::crl(&signer.account.uri(), &signer.crl.id())
}

/// Creates a conversation: the signed initial commit whose tree is exactly the admin
/// certificate, the device certificate and the CRL (plus the empty `invited/<uri>` of the
/// other party for one-to-one). Returns its id, which is the initial commit's id.
///
/// The initial commit is a function of the signer, the mode, `invited` and `time` (Ed25519
/// signatures are deterministic), so a second conversation created by the same device with
/// the same arguments in the same second would be the same commit. Commit timestamps are
/// display-only (DESIGN §3), so the commit is dated `time` or, if that conversation is
/// already stored here, the first later second whose initial commit is not: every call
/// creates a new conversation.
pub fn create_conversation(
    storage: &dyn Storage,
    signer: &Signer<'_>,
    mode: Mode,
    invited: Option<AccountUri>,
    time: i64,
) -> Result<ConversationId, RepoError> {
    match (mode, invited) {
        (Mode::OneToOne, None) => return Err(RepoError::MissingInvited),
        (Mode::OneToOne, Some(_)) | (_, None) => {}
        (_, Some(_)) => return Err(RepoError::UnexpectedInvited),
    }
    let mut blobs = vec![
        (
            layout::admin_cert(&signer.account.uri()),
            Object::blob(signer.account.pem()),
        ),
        (
            layout::device_cert(&signer.device.id()),
            Object::blob(signer.device.cert().pem()),
        ),
        (crl_path(signer), Object::blob(signer.crl.pem())),
    ];
    if let Some(uri) = invited {
        blobs.push((layout::invited(&uri), Object::blob(Vec::new())));
    }
    let files: Files = blobs.iter().map(|(p, o)| (p.clone(), o.id())).collect();
    let (tree, mut objects) = build_tree(&files);
    objects.extend(blobs.into_iter().map(|(_, o)| o));
    let message = Body::Initial(Initial {
        mode,
        invited,
        extra: Default::default(),
    })
    .to_message();
    let mut time = time;
    loop {
        let commit = sign_commit(
            signer.device,
            signer.account.name(),
            tree,
            &[],
            &message,
            time,
        )?;
        let id = commit_id(&commit);
        let conv = ConversationId(id);
        if storage.head(&conv)?.is_some() {
            time = next_second(conv, time)?;
            continue;
        }
        let mut all = objects.clone();
        all.push(commit);
        // The initial commit goes through the same rules as every other commit.
        let quarantine: BTreeMap<_, _> = all.iter().map(|o| (o.id(), o.clone())).collect();
        Engine::default().verify(conv, &quarantine, id)?;
        let update = HeadUpdate {
            expected: None,
            new: id,
        };
        match storage.write(&conv, &all, update) {
            Ok(()) => {
                tracing::debug!(target: "swarm_api::repo", %conv, ?mode, "created conversation");
                return Ok(conv);
            }
            // Another writer stored the same commit between the check and the write.
            Err(StorageError::AlreadyExists(_)) => time = next_second(conv, time)?,
            Err(e) => return Err(e.into()),
        }
    }
}

/// The time for the next try of an initial commit whose conversation `conv` is stored already
/// (the same device made the same commit in the same second).
fn next_second(conv: ConversationId, time: i64) -> Result<i64, RepoError> {
    tracing::debug!(
        target: "swarm_api::repo",
        %conv,
        time,
        "initial commit stored already, trying the next second"
    );
    time.checked_add(1)
        .ok_or(RepoError::Storage(StorageError::AlreadyExists(conv)))
}

fn commit_id(obj: &Object) -> CommitId {
    // Object ids are SHA-1 here by construction.
    CommitId::from_object_id(&obj.id()).unwrap_or(CommitId::from_bytes([0; 20]))
}

/// One conversation of a storage.
pub struct Repo<'a> {
    storage: &'a dyn Storage,
    conv: ConversationId,
    limits: TreeLimits,
    engine: Arc<Engine>,
}

impl<'a> Repo<'a> {
    /// Opens a stored conversation.
    pub fn open(storage: &'a dyn Storage, conv: ConversationId) -> Result<Self, RepoError> {
        if storage.head(&conv)?.is_none() {
            return Err(RepoError::UnknownConversation(conv));
        }
        Ok(Self {
            storage,
            conv,
            limits: TreeLimits::default(),
            engine: Arc::new(Engine::default()),
        })
    }

    /// Uses `engine` (with registered message types or other limits) for validation.
    pub fn with_engine(mut self, engine: Arc<Engine>) -> Self {
        self.engine = engine;
        self
    }

    /// The conversation id.
    pub fn id(&self) -> ConversationId {
        self.conv
    }

    fn objects(&self) -> ConversationObjects<'a, dyn Storage + 'a> {
        ConversationObjects {
            storage: self.storage,
            conv: self.conv,
        }
    }

    /// The current head.
    pub fn head(&self) -> Result<CommitId, RepoError> {
        self.storage
            .head(&self.conv)?
            .ok_or(RepoError::UnknownConversation(self.conv))
    }

    /// Reads and decodes a commit.
    pub fn commit(&self, id: &CommitId) -> Result<Commit, RepoError> {
        let obj = match self.objects().expect(&id.object_id(), Kind::Commit) {
            Err(ObjectError::Missing(_)) => return Err(RepoError::UnknownCommit(*id)),
            other => other?,
        };
        Ok(Commit::parse(*id, &obj.data)?)
    }

    /// The files of the tree at `commit` (path → blob id).
    pub fn files(&self, commit: &CommitId) -> Result<Files, RepoError> {
        let c = self.commit(commit)?;
        Ok(read_tree(&self.objects(), &c.tree, self.limits)?)
    }

    /// The content of a blob of this conversation.
    pub fn blob(&self, id: &ObjectId) -> Result<Vec<u8>, RepoError> {
        Ok(self.objects().expect(id, Kind::Blob)?.data)
    }

    /// The content of `path` at `commit`, or `None` if the file does not exist there.
    pub fn read_file(&self, commit: &CommitId, path: &str) -> Result<Option<Vec<u8>>, RepoError> {
        let files = self.files(commit)?;
        match files.get(path) {
            None => Ok(None),
            Some(id) => Ok(Some(self.objects().expect(id, Kind::Blob)?.data)),
        }
    }

    /// The device certificates in `devices/` at `commit`. Files that do not parse, or whose
    /// name is not the id of the key inside, are skipped with a warning (validation refuses
    /// commits that add them).
    pub fn device_certs(
        &self,
        commit: &CommitId,
    ) -> Result<BTreeMap<DeviceId, DeviceCert>, RepoError> {
        let mut out = BTreeMap::new();
        for (path, blob) in self.files(commit)? {
            let Some(layout::Path::Device(id)) = layout::Path::parse(&path) else {
                continue;
            };
            let data = self.objects().expect(&blob, Kind::Blob)?.data;
            match std::str::from_utf8(&data)
                .map_err(|e| e.to_string())
                .and_then(|pem| DeviceCert::from_pem(pem).map_err(|e| e.to_string()))
            {
                Ok(cert) if cert.id() == id => {
                    out.insert(id, cert);
                }
                Ok(cert) => {
                    tracing::warn!(target: "swarm_api::repo", %path, actual = %cert.id(), "device certificate stored under another id")
                }
                Err(e) => {
                    tracing::warn!(target: "swarm_api::repo", %path, error = %e, "unreadable device certificate")
                }
            }
        }
        Ok(out)
    }

    /// The paths `commit` changed relative to its first parent (all files for the initial
    /// commit).
    pub fn changed_paths(&self, commit: &CommitId) -> Result<Vec<Change>, RepoError> {
        let c = self.commit(commit)?;
        let new = read_tree(&self.objects(), &c.tree, self.limits)?;
        let old = match c.parents.first() {
            Some(p) => self.files(p)?,
            None => Files::new(),
        };
        Ok(diff(&old, &new))
    }

    /// The conversation's title at `commit`: the `FN` of `profile.vcf` (vCard escapes undone),
    /// if there is one.
    pub fn title(&self, commit: &CommitId) -> Option<String> {
        let vcf = self.read_file(commit, layout::PROFILE).ok()??;
        let text = String::from_utf8_lossy(&vcf);
        let value = text
            .lines()
            .find_map(|l| l.trim_end_matches('\r').strip_prefix("FN:"))?;
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

    /// Every commit reachable from the head, in display order (parents first; see
    /// [`crate::order`]).
    pub fn history(&self) -> Result<Vec<Commit>, RepoError> {
        let head = self.head()?;
        let mut seen = BTreeSet::from([head]);
        let mut queue = VecDeque::from([head]);
        let mut commits = BTreeMap::new();
        while let Some(id) = queue.pop_front() {
            let c = self.commit(&id)?;
            for p in &c.parents {
                if seen.insert(*p) {
                    queue.push_back(*p);
                }
            }
            commits.insert(id, c);
        }
        let order = display_order(commits.values().map(|c| (c.id, c.parents.as_slice())));
        Ok(order
            .into_iter()
            .filter_map(|id| commits.remove(&id))
            .collect())
    }

    /// Builds and signs a commit with `message` and `changes` on top of `parents` (the
    /// first parent's tree is the base), without validating or storing it. With
    /// `own_credentials`, the signer's device certificate and CRL are added if missing.
    pub fn draft(
        &self,
        signer: &Signer<'_>,
        parents: &[CommitId],
        message: &str,
        changes: &[FileChange],
        own_credentials: bool,
        time: i64,
    ) -> Result<Draft, RepoError> {
        let mut files = match parents.first() {
            Some(p) => self.files(p)?,
            None => Files::new(),
        };
        let mut blobs = Vec::new();
        if own_credentials {
            let own = [
                (
                    layout::device_cert(&signer.device.id()),
                    signer.device.cert().pem().as_bytes().to_vec(),
                ),
                (crl_path(signer), signer.crl.pem().as_bytes().to_vec()),
            ];
            for (path, data) in own {
                if let std::collections::btree_map::Entry::Vacant(e) = files.entry(path) {
                    let blob = Object::blob(data);
                    e.insert(blob.id());
                    blobs.push(blob);
                }
            }
        }
        for change in changes {
            let path = match change {
                FileChange::Write(p, _) | FileChange::Delete(p) => p,
            };
            if layout::Path::parse(path).is_none() {
                return Err(RepoError::InvalidPath(path.clone()));
            }
            match change {
                FileChange::Write(p, data) => {
                    let blob = Object::blob(data.clone());
                    files.insert(p.clone(), blob.id());
                    blobs.push(blob);
                }
                FileChange::Delete(p) => {
                    files.remove(p);
                }
            }
        }
        let (tree, mut objects) = build_tree(&files);
        objects.extend(blobs);
        let commit = sign_commit(
            signer.device,
            signer.account.name(),
            tree,
            parents,
            message,
            time,
        )?;
        let id = commit_id(&commit);
        objects.push(commit);
        Ok(Draft { id, objects })
    }

    /// Receives a branch: `objects` (held in memory, never stored before validation) whose
    /// tip is `tip`. Every new commit is validated oldest first; if one fails, nothing is
    /// stored and the [`Rejection`] says which commit broke which rule. On success the head
    /// fast-forwards to `tip` atomically.
    pub fn receive(&self, objects: Vec<Object>, tip: CommitId) -> Result<Validated, RepoError> {
        let head = self.head()?;
        let quarantine = Overlay {
            new: objects.into_iter().map(|o| (o.id(), o)).collect(),
            base: self.objects(),
        };
        let stored = |id: &CommitId| -> bool {
            !quarantine.new.contains_key(&id.object_id())
                && matches!(
                    self.storage.object(&self.conv, &id.object_id()),
                    Ok(Some(_))
                )
        };
        let validated = self
            .engine
            .validate_branch(self.conv, &quarantine, &stored, &[tip])?;
        if tip != head && !validated.commits().is_empty() {
            // Fast-forward only: the head must be an ancestor of the tip.
            let descends = validated.commits().iter().any(|c| {
                quarantine
                    .new
                    .get(&c.object_id())
                    .and_then(|o| Commit::parse(*c, &o.data).ok())
                    .is_some_and(|c| c.parents.contains(&head))
            });
            if !descends {
                return Err(RepoError::NotFastForward(tip));
            }
        } else if tip != head {
            return Err(RepoError::NotFastForward(tip));
        }
        // Only what the validated commits reach: the rest of `objects` is dropped.
        let reachable = validated.reachable(&quarantine.new)?;
        let objects: Vec<Object> = quarantine
            .new
            .into_iter()
            .filter(|(id, _)| reachable.contains(id))
            .map(|(_, o)| o)
            .collect();
        self.storage.write(
            &self.conv,
            &objects,
            HeadUpdate {
                expected: Some(head),
                new: tip,
            },
        )?;
        Ok(validated)
    }

    /// Appends a signed commit with `body` and `changes` on top of the head, adding the
    /// signer's device certificate and CRL if the tree lacks them. The commit is validated
    /// like any received commit before it is stored. Returns the new commit id.
    pub fn append(
        &self,
        signer: &Signer<'_>,
        body: &Body,
        changes: &[FileChange],
        time: i64,
    ) -> Result<CommitId, RepoError> {
        // Certificate expiry is judged now, when this device commits (DESIGN §2), never
        // against a commit's timestamp.
        // An out-of-range time becomes the epoch, which every certificate postdates.
        let now = time::OffsetDateTime::from_unix_timestamp(time)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        verify_device(
            signer.account,
            signer.device.cert(),
            std::slice::from_ref(signer.crl),
            Some(now),
        )
        .map_err(RepoError::Chain)?;
        let head = self.head()?;
        let draft = self.draft(signer, &[head], &body.to_message(), changes, true, time)?;
        self.receive(draft.objects, draft.id)?;
        Ok(draft.id)
    }

    /// The membership state at `commit`.
    pub fn state(&self, commit: &CommitId) -> Result<Arc<State>, RepoError> {
        self.engine
            .state_at(self.conv, &self.objects(), commit)
            .map_err(|violation| {
                RepoError::Rejected(Rejection {
                    commit: *commit,
                    violation,
                })
            })
    }

    /// Validates the whole conversation from its initial commit (what `swarm-chat verify`
    /// does).
    pub fn verify(&self) -> Result<Validated, RepoError> {
        Ok(self
            .engine
            .verify(self.conv, &self.objects(), self.head()?)?)
    }
}

/// New objects over stored ones: what validation reads while a branch is quarantined.
struct Overlay<B> {
    new: BTreeMap<ObjectId, Object>,
    base: B,
}

impl<B: ObjectSource> ObjectSource for Overlay<B> {
    fn object(&self, id: &ObjectId) -> Result<Option<Object>, ObjectError> {
        match self.new.get(id) {
            Some(o) => Ok(Some(o.clone())),
            None => self.base.object(id),
        }
    }
}
