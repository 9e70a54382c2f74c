//! # swarm-git: conversations as real Git repositories
//!
//! [`GitStorage`] implements [`swarm_api::Storage`] with one bare Git repository per
//! conversation under a root directory (`<root>/<conversation-id>`), through gix. Objects are
//! ordinary loose Git objects and the head is `refs/heads/main`, so stock tools work on them:
//! `git log`, `git fsck --strict`, and `git verify-commit` with an allowed-signers file built
//! from `devices/` (see `swarm_api::commit::allowed_signers_line`).
//!
//! Writes are atomic: objects are written first (content-addressed, so an interrupted write
//! leaves at most unreferenced objects), then the head moves by a compare-and-swap under
//! Git's lock file. A new conversation is assembled in a temporary directory and renamed into
//! place, so a half-created repository is never visible.
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use gix::objs::{Exists as _, Write as _};
use gix::refs::transaction::PreviousValue;
use gix::refs::Target;
use swarm_api::object::Object;
use swarm_api::storage::{HeadUpdate, QuarantineId, Storage, StorageError};
use swarm_api::{CommitId, ConversationId};

/// The branch holding a conversation's head.
pub const HEAD_REF: &str = "refs/heads/main";

const BACKEND: &str = "git";

/// Where quarantine repositories live, under the root (never a valid conversation id).
const QUARANTINE_DIR: &str = ".quarantine";

fn err(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> StorageError {
    StorageError::backend(BACKEND, e)
}

/// [`Storage`] over one Git repository per conversation.
pub struct GitStorage {
    root: PathBuf,
    repos: RwLock<HashMap<ConversationId, gix::ThreadSafeRepository>>,
    quarantines: std::sync::Mutex<HashMap<u64, (PathBuf, gix::ThreadSafeRepository)>>,
    next_quarantine: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for GitStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitStorage")
            .field("root", &self.root)
            .finish()
    }
}

impl GitStorage {
    /// Opens (creating the directory if needed) a storage rooted at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StorageError> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(err)?;
        // Quarantines left by processes that died are garbage: nothing refers to them.
        if let Ok(entries) = std::fs::read_dir(root.join(QUARANTINE_DIR)) {
            for e in entries.flatten() {
                let pid = e.file_name().to_string_lossy().into_owned();
                let alive = pid != std::process::id().to_string()
                    && std::path::Path::new("/proc").join(&pid).exists();
                if !alive {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        Ok(Self {
            root,
            repos: RwLock::new(HashMap::new()),
            quarantines: std::sync::Mutex::new(HashMap::new()),
            next_quarantine: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn repo_path(&self, conv: &ConversationId) -> PathBuf {
        self.root.join(conv.to_string())
    }

    fn open_options() -> gix::open::Options {
        // Do not let the user's or system's git configuration change how we read or write.
        gix::open::Options::isolated()
    }

    /// The repository of `conv`, or `None` if it is not stored.
    fn repo(&self, conv: &ConversationId) -> Result<Option<gix::Repository>, StorageError> {
        if let Some(r) = self
            .repos
            .read()
            .map_err(|_| err("lock poisoned"))?
            .get(conv)
        {
            return Ok(Some(r.to_thread_local()));
        }
        let path = self.repo_path(conv);
        if !path.join("HEAD").is_file() {
            return Ok(None);
        }
        let local = gix::open_opts(&path, Self::open_options()).map_err(err)?;
        let repo = local.clone().into_sync();
        self.repos
            .write()
            .map_err(|_| err("lock poisoned"))?
            .insert(*conv, repo);
        Ok(Some(local))
    }

    fn write_objects(repo: &gix::Repository, objects: &[Object]) -> Result<(), StorageError> {
        for obj in objects {
            let id = obj.id();
            if repo.objects.exists(&id) {
                continue;
            }
            let written = repo.objects.write_buf(obj.kind, &obj.data).map_err(err)?;
            if written != id {
                return Err(err(format!("object {id} was stored as {written}")));
            }
        }
        Ok(())
    }

    fn read_head(repo: &gix::Repository) -> Result<Option<CommitId>, StorageError> {
        let Some(r) = repo.try_find_reference(HEAD_REF).map_err(err)? else {
            return Ok(None);
        };
        match r.target() {
            gix::refs::TargetRef::Object(id) => CommitId::from_object_id(id)
                .map(Some)
                .ok_or_else(|| err("head is not a SHA-1 id")),
            gix::refs::TargetRef::Symbolic(_) => Err(err("head is a symbolic reference")),
        }
    }

    fn create(
        &self,
        conv: &ConversationId,
        objects: &[Object],
        new: CommitId,
    ) -> Result<(), StorageError> {
        let path = self.repo_path(conv);
        if path.exists() {
            return Err(StorageError::AlreadyExists(*conv));
        }
        let tmp = self
            .root
            .join(format!(".tmp-{conv}-{}", std::process::id()));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(err)?;
        }
        let result = (|| {
            gix::init_bare(&tmp).map_err(err)?;
            std::fs::write(tmp.join("HEAD"), format!("ref: {HEAD_REF}\n")).map_err(err)?;
            let repo = gix::open_opts(&tmp, Self::open_options()).map_err(err)?;
            Self::write_objects(&repo, objects)?;
            if !repo.objects.exists(&new.object_id()) {
                return Err(StorageError::DanglingHead(new));
            }
            repo.reference(
                HEAD_REF,
                new.object_id(),
                PreviousValue::MustNotExist,
                "create conversation",
            )
            .map_err(err)?;
            Ok(())
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        // rename(2) is atomic; it fails if another process created the repository meanwhile.
        if let Err(e) = std::fs::rename(&tmp, &path) {
            let _ = std::fs::remove_dir_all(&tmp);
            return if path.exists() {
                Err(StorageError::AlreadyExists(*conv))
            } else {
                Err(err(e))
            };
        }
        Ok(())
    }
}

impl Storage for GitStorage {
    fn backend_name(&self) -> &'static str {
        BACKEND
    }

    fn conversations(&self) -> Result<Vec<ConversationId>, StorageError> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.root).map_err(err)? {
            let entry = entry.map_err(err)?;
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(|n| n.parse::<ConversationId>().ok()) else {
                continue;
            };
            if entry.path().join("HEAD").is_file() {
                out.push(id);
            }
        }
        out.sort();
        Ok(out)
    }

    fn object(
        &self,
        conv: &ConversationId,
        id: &gix::ObjectId,
    ) -> Result<Option<Object>, StorageError> {
        let repo = self
            .repo(conv)?
            .ok_or(StorageError::UnknownConversation(*conv))?;
        let found = repo.try_find_object(*id).map_err(err)?;
        Ok(found.map(|o| Object {
            kind: o.kind,
            data: o.data.clone(),
        }))
    }

    fn head(&self, conv: &ConversationId) -> Result<Option<CommitId>, StorageError> {
        match self.repo(conv)? {
            None => Ok(None),
            Some(repo) => Self::read_head(&repo),
        }
    }

    fn write(
        &self,
        conv: &ConversationId,
        objects: &[Object],
        update: HeadUpdate,
    ) -> Result<(), StorageError> {
        let Some(expected) = update.expected else {
            return self.create(conv, objects, update.new);
        };
        let repo = self
            .repo(conv)?
            .ok_or(StorageError::UnknownConversation(*conv))?;
        let found = Self::read_head(&repo)?;
        if found != Some(expected) {
            return Err(StorageError::HeadMoved {
                conversation: *conv,
                expected: Some(expected),
                found,
            });
        }
        Self::write_objects(&repo, objects)?;
        if !repo.objects.exists(&update.new.object_id()) {
            return Err(StorageError::DanglingHead(update.new));
        }
        // The compare-and-swap is done again under the ref lock.
        repo.reference(
            HEAD_REF,
            update.new.object_id(),
            PreviousValue::MustExistAndMatch(Target::Object(expected.object_id())),
            "commit",
        )
        .map_err(|e| {
            let found = Self::read_head(&repo).ok().flatten();
            if found != Some(expected) {
                StorageError::HeadMoved {
                    conversation: *conv,
                    expected: Some(expected),
                    found,
                }
            } else {
                err(e)
            }
        })?;
        Ok(())
    }

    fn location(&self, conv: &ConversationId) -> Option<PathBuf> {
        let p = self.repo_path(conv);
        p.join("HEAD").is_file().then_some(p)
    }

    fn quarantine_open(&self, conv: &ConversationId) -> Result<QuarantineId, StorageError> {
        let id = self
            .next_quarantine
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = self
            .root
            .join(QUARANTINE_DIR)
            .join(std::process::id().to_string())
            .join(format!("{conv}-{id}"));
        if path.exists() {
            std::fs::remove_dir_all(&path).map_err(err)?;
        }
        std::fs::create_dir_all(&path).map_err(err)?;
        gix::init_bare(&path).map_err(err)?;
        std::fs::write(path.join("HEAD"), format!("ref: {HEAD_REF}\n")).map_err(err)?;
        let repo = gix::open_opts(&path, Self::open_options()).map_err(err)?;
        self.quarantines
            .lock()
            .map_err(|_| err("lock poisoned"))?
            .insert(id, (path, repo.into_sync()));
        Ok(QuarantineId { conv: *conv, id })
    }

    fn quarantine_put(&self, q: &QuarantineId, objects: &[Object]) -> Result<(), StorageError> {
        let repo = self.quarantine_repo(q)?;
        Self::write_objects(&repo, objects)
    }

    fn quarantine_object(
        &self,
        q: &QuarantineId,
        id: &gix::ObjectId,
    ) -> Result<Option<Object>, StorageError> {
        let repo = self.quarantine_repo(q)?;
        let found = repo.try_find_object(*id).map_err(err)?;
        Ok(found.map(|o| Object {
            kind: o.kind,
            data: o.data.clone(),
        }))
    }

    fn quarantine_promote(&self, q: QuarantineId, update: HeadUpdate) -> Result<(), StorageError> {
        let (path, repo) = self
            .quarantines
            .lock()
            .map_err(|_| err("lock poisoned"))?
            .get(&q.id)
            .map(|(p, r)| (p.clone(), r.clone()))
            .ok_or_else(|| err("no such quarantine"))?;
        let repo = repo.to_thread_local();
        if update.expected.is_none() {
            // A new conversation: the quarantine repository becomes it, by one rename.
            if self.repo_path(&q.conv).exists() {
                return Err(StorageError::AlreadyExists(q.conv));
            }
            if !repo.objects.exists(&update.new.object_id()) {
                return Err(StorageError::DanglingHead(update.new));
            }
            repo.reference(
                HEAD_REF,
                update.new.object_id(),
                PreviousValue::MustNotExist,
                "clone",
            )
            .map_err(err)?;
            std::fs::rename(&path, self.repo_path(&q.conv)).map_err(err)?;
        } else {
            // Copy every quarantined object, then move the head (the atomic step).
            let mut objects = Vec::new();
            for id in repo.objects.iter().map_err(err)? {
                let id = id.map_err(err)?;
                if let Some(o) = repo.try_find_object(id).map_err(err)? {
                    objects.push(Object {
                        kind: o.kind,
                        data: o.data.clone(),
                    });
                }
            }
            self.write(&q.conv, &objects, update)?;
            std::fs::remove_dir_all(&path).map_err(err)?;
        }
        self.quarantines
            .lock()
            .map_err(|_| err("lock poisoned"))?
            .remove(&q.id);
        Ok(())
    }

    fn quarantine_drop(&self, q: QuarantineId) -> Result<(), StorageError> {
        if let Some((path, _)) = self
            .quarantines
            .lock()
            .map_err(|_| err("lock poisoned"))?
            .remove(&q.id)
        {
            std::fs::remove_dir_all(&path).map_err(err)?;
        }
        Ok(())
    }
}

impl GitStorage {
    fn quarantine_repo(&self, q: &QuarantineId) -> Result<gix::Repository, StorageError> {
        self.quarantines
            .lock()
            .map_err(|_| err("lock poisoned"))?
            .get(&q.id)
            .map(|(_, r)| r.to_thread_local())
            .ok_or_else(|| err("no such quarantine"))
    }
}

/// Read access to one Git repository anywhere on disk, e.g. a conversation someone sent
/// (`swarm-chat verify PATH`). Nothing is written.
pub struct GitRepoReader {
    repo: gix::ThreadSafeRepository,
}

impl std::fmt::Debug for GitRepoReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitRepoReader").finish_non_exhaustive()
    }
}

impl GitRepoReader {
    /// Opens the repository at `path` (bare or not).
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, StorageError> {
        let repo = gix::open_opts(path.into(), GitStorage::open_options()).map_err(err)?;
        Ok(Self {
            repo: repo.into_sync(),
        })
    }

    /// The commit `HEAD` points to.
    pub fn head(&self) -> Result<CommitId, StorageError> {
        let repo = self.repo.to_thread_local();
        let id = repo.head_id().map_err(err)?;
        CommitId::from_object_id(&id).ok_or_else(|| err("HEAD is not a SHA-1 commit"))
    }

    /// The root commit reached by following first parents from `HEAD` (at most `limit`
    /// steps): the conversation id if the history is well-formed.
    pub fn root(&self, limit: usize) -> Result<CommitId, StorageError> {
        let repo = self.repo.to_thread_local();
        let mut id = self.head()?;
        for _ in 0..limit {
            let obj = repo
                .try_find_object(id.object_id())
                .map_err(err)?
                .ok_or_else(|| err(format!("commit {id} is missing")))?;
            let data = obj.data.clone();
            let first = {
                let commit =
                    gix::objs::CommitRef::from_bytes(&data, gix::hash::Kind::Sha1).map_err(err)?;
                let first = commit.parents().next();
                first
            };
            match first {
                None => return Ok(id),
                Some(p) => {
                    id = CommitId::from_object_id(&p).ok_or_else(|| err("non-SHA-1 parent"))?
                }
            }
        }
        Err(err(format!("no root commit within {limit} commits")))
    }
}

impl swarm_api::object::ObjectSource for GitRepoReader {
    fn object(&self, id: &gix::ObjectId) -> Result<Option<Object>, swarm_api::object::ObjectError> {
        let repo = self.repo.to_thread_local();
        let found = repo.try_find_object(*id).map_err(err)?;
        let obj = found.map(|o| Object {
            kind: o.kind,
            data: o.data.clone(),
        });
        if let Some(o) = &obj {
            if o.id() != *id {
                return Err(swarm_api::object::ObjectError::Malformed {
                    id: *id,
                    reason: "stored content does not hash to its id".into(),
                });
            }
        }
        Ok(obj)
    }
}
