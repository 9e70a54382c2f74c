//! The `Storage` trait: where a device keeps its conversations.
//!
//! A backend is a content-addressed store of Git objects per conversation plus one head per
//! conversation. Everything else (commits, trees, history, files at a commit) is computed by
//! the core from objects ([`crate::repo`]), so every backend gives the same answers and the
//! same ids. `swarm-git` keeps one Git repository per conversation; `swarm-sled` one sled
//! database for all. A new backend implements this trait and nothing else.

use std::path::PathBuf;

use gix_hash::ObjectId;

use crate::id::{CommitId, ConversationId};
use crate::object::{Object, ObjectError, ObjectSource};

/// Errors a storage backend reports.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The conversation is not stored here.
    #[error("unknown conversation {0}")]
    UnknownConversation(ConversationId),
    /// Creating a conversation that already exists.
    #[error("conversation {0} already exists")]
    AlreadyExists(ConversationId),
    /// The head moved since the caller read it (another writer won); nothing was changed.
    #[error("the head of {conversation} moved: expected {expected:?}, found {found:?}; nothing was written")]
    HeadMoved {
        /// The conversation.
        conversation: ConversationId,
        /// The head the caller expected.
        expected: Option<CommitId>,
        /// The head actually stored.
        found: Option<CommitId>,
    },
    /// The new head is not among the stored or written objects.
    #[error("the new head {0} is not a stored commit")]
    DanglingHead(CommitId),
    /// A promotion whose new head is neither validated nor stored ([`Promotion::of`]).
    #[error("the new head {0} was not validated")]
    Unvalidated(CommitId),
    /// A backend failure (I/O, corruption, ...).
    #[error("{backend} storage failed: {source}")]
    Backend {
        /// The backend's name.
        backend: &'static str,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl StorageError {
    /// Wraps a backend error.
    pub fn backend(
        backend: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        StorageError::Backend {
            backend,
            source: source.into(),
        }
    }
}

/// A quarantine area: objects received for a conversation, held apart until validated.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct QuarantineId {
    /// The conversation the objects are for.
    pub conv: ConversationId,
    /// The area's number, unique within the storage.
    pub id: u64,
}

impl QuarantineId {
    /// A second handle to the same area (for retrying a promotion).
    pub fn clone_id(&self) -> Self {
        Self {
            conv: self.conv,
            id: self.id,
        }
    }
}

/// What validation lets a quarantine promote: the head update and the ids of the objects the
/// validated commits reach ([`crate::validate::Validated::reachable`]). Made only from
/// [`Validated`](crate::validate::Validated) values, which only the validation engine makes,
/// so a backend given one knows the branch passed; objects of the area outside it are dropped
/// with the area, never stored.
#[derive(Debug)]
pub struct Promotion {
    update: HeadUpdate,
    objects: std::collections::HashSet<ObjectId>,
}

impl Promotion {
    /// The promotion of quarantine `q` after `validated` passed: its reachable objects, and
    /// `update`, whose new head must be one of the validated commits, or a commit stored
    /// already (keeping or moving back to a validated head).
    pub fn of(
        validated: &[&crate::validate::Validated],
        storage: &dyn Storage,
        q: &QuarantineId,
        update: HeadUpdate,
    ) -> Result<Self, StorageError> {
        let in_area = QuarantineObjects { storage, q };
        let mut objects = std::collections::HashSet::new();
        for v in validated {
            objects.extend(v.reachable(&in_area).map_err(|e| match e {
                ObjectError::Storage(e) => e,
                e => StorageError::backend(storage.backend_name(), e),
            })?);
        }
        let new = update.new.object_id();
        if !objects.contains(&new)
            && Some(update.new) != update.expected
            && !matches!(storage.object(&q.conv, &new), Ok(Some(_)))
        {
            return Err(StorageError::Unvalidated(update.new));
        }
        Ok(Self { update, objects })
    }

    /// The head update.
    pub fn update(&self) -> HeadUpdate {
        self.update
    }

    /// Whether the object `id` of the area is promoted.
    pub fn contains(&self, id: &ObjectId) -> bool {
        self.objects.contains(id)
    }

    /// How many object ids are promoted (some may be stored already).
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// Whether nothing is promoted (the head update only).
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }
}

/// The objects of one quarantine area only, as an [`ObjectSource`].
struct QuarantineObjects<'a> {
    storage: &'a dyn Storage,
    q: &'a QuarantineId,
}

impl ObjectSource for QuarantineObjects<'_> {
    fn object(&self, id: &ObjectId) -> Result<Option<Object>, ObjectError> {
        Ok(self.storage.quarantine_object(self.q, id)?)
    }
}

/// Moves a conversation's head from `expected` to `new` (compare-and-swap).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadUpdate {
    /// The head the writer based its work on; `None` creates the conversation.
    pub expected: Option<CommitId>,
    /// The new head.
    pub new: CommitId,
}

/// Storage of conversations: Git objects and one head per conversation.
///
/// Contract for every implementation (checked by the conformance suite):
/// - Objects are immutable and addressed by their Git id; storing one twice is a no-op.
/// - [`Storage::write`] is atomic: after it returns `Ok`, all `objects` are readable and the
///   head is `update.new`, durably (flushed before returning); if it returns `Err` or the
///   process dies during it, the head is unchanged and readers never see a partial commit.
/// - Reads may run concurrently with a write and see either the old or the new head.
/// - Methods never panic on stored data; corruption is a [`StorageError::Backend`].
pub trait Storage: Send + Sync {
    /// A short name for messages and logs (`"git"`, `"sled"`).
    fn backend_name(&self) -> &'static str;

    /// All conversations stored, sorted by id.
    fn conversations(&self) -> Result<Vec<ConversationId>, StorageError>;

    /// One object of a conversation, or `None` if that conversation does not store it.
    /// Fails with [`StorageError::UnknownConversation`] if the conversation is not stored.
    fn object(&self, conv: &ConversationId, id: &ObjectId) -> Result<Option<Object>, StorageError>;

    /// The size in bytes of one object of a conversation, or `None` if it does not store it
    /// (errors as [`Storage::object`]). The default reads the object; a backend that can
    /// tell the size from a header overrides it (a server sizes a bundle before sending it).
    fn object_size(
        &self,
        conv: &ConversationId,
        id: &ObjectId,
    ) -> Result<Option<u64>, StorageError> {
        Ok(self.object(conv, id)?.map(|o| o.data.len() as u64))
    }

    /// The conversation's head, or `None` if the conversation is not stored.
    fn head(&self, conv: &ConversationId) -> Result<Option<CommitId>, StorageError>;

    /// Stores `objects` and moves the head, atomically (see the trait contract).
    ///
    /// With `update.expected == None` this creates the conversation and fails with
    /// [`StorageError::AlreadyExists`] if it exists. Otherwise the stored head must equal
    /// `update.expected`, else [`StorageError::HeadMoved`] and nothing changes.
    fn write(
        &self,
        conv: &ConversationId,
        objects: &[Object],
        update: HeadUpdate,
    ) -> Result<(), StorageError>;

    /// Opens a new, empty quarantine area for objects received for `conv` (which need not
    /// be stored yet: a clone quarantines a whole conversation). Quarantined objects are
    /// invisible to [`Storage::object`] until promoted.
    fn quarantine_open(&self, conv: &ConversationId) -> Result<QuarantineId, StorageError>;

    /// Adds objects to a quarantine area.
    fn quarantine_put(&self, q: &QuarantineId, objects: &[Object]) -> Result<(), StorageError>;

    /// One object of a quarantine area (not of the main store).
    fn quarantine_object(
        &self,
        q: &QuarantineId,
        id: &ObjectId,
    ) -> Result<Option<Object>, StorageError>;

    /// Moves the objects of the quarantine that `promotion` names into the conversation and
    /// moves the head to `promotion.update()`, as one atomic [`Storage::write`] (same head
    /// rules); the area, with whatever else it held, is gone afterwards (on success).
    fn quarantine_promote(
        &self,
        q: QuarantineId,
        promotion: &Promotion,
    ) -> Result<(), StorageError>;

    /// Deletes a quarantine area and everything in it.
    fn quarantine_drop(&self, q: QuarantineId) -> Result<(), StorageError>;

    /// Whether [`Storage::object`] may return content that does not hash to its id (disk
    /// corruption, a file changed behind our back): then readers re-hash every object they
    /// read ([`ConversationObjects`]). Only a store that cannot be changed from outside and
    /// keys objects by the hash it computed itself (like [`MemoryStorage`]) says `false`.
    fn reads_need_hash_check(&self) -> bool {
        true
    }

    /// A directory where stock tools can read the conversation (the Git repository for
    /// `swarm-git`), if the backend has one.
    fn location(&self, conv: &ConversationId) -> Option<PathBuf> {
        let _ = conv;
        None
    }
}

/// The objects of one conversation of a storage, as an [`ObjectSource`].
pub struct ConversationObjects<'a, S: Storage + ?Sized> {
    /// The storage.
    pub storage: &'a S,
    /// The conversation.
    pub conv: ConversationId,
}

impl<S: Storage + ?Sized> ObjectSource for ConversationObjects<'_, S> {
    fn object(&self, id: &ObjectId) -> Result<Option<Object>, ObjectError> {
        let obj = self.storage.object(&self.conv, id)?;
        if !self.storage.reads_need_hash_check() {
            return Ok(obj);
        }
        if let Some(o) = &obj {
            // Content addressing is what makes history tamper-evident: never trust a backend
            // (or a corrupted disk) to return the object that was asked for.
            if o.id() != *id {
                return Err(ObjectError::Malformed {
                    id: *id,
                    reason: "stored content does not hash to its id".into(),
                });
            }
        }
        Ok(obj)
    }
}

/// Objects by id.
type ObjectMap = std::collections::BTreeMap<ObjectId, Object>;

/// A [`Storage`] in memory: the reference implementation of the contract, for tests,
/// simulations and as a model for new backends. Nothing survives the process.
#[derive(Debug, Default)]
pub struct MemoryStorage {
    /// Each conversation's head and objects.
    inner: std::sync::RwLock<std::collections::BTreeMap<ConversationId, (CommitId, ObjectMap)>>,
    quarantines: std::sync::Mutex<std::collections::BTreeMap<u64, ObjectMap>>,
    next_quarantine: std::sync::atomic::AtomicU64,
}

impl MemoryStorage {
    /// An empty storage.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many quarantine areas are open (neither promoted nor dropped).
    pub fn open_quarantines(&self) -> usize {
        self.quarantines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}

fn poisoned() -> StorageError {
    StorageError::backend("memory", "lock poisoned by a panicking writer")
}

impl Storage for MemoryStorage {
    fn backend_name(&self) -> &'static str {
        "memory"
    }

    fn reads_need_hash_check(&self) -> bool {
        // Objects are only ever inserted under the id computed from their content.
        false
    }

    fn conversations(&self) -> Result<Vec<ConversationId>, StorageError> {
        Ok(self
            .inner
            .read()
            .map_err(|_| poisoned())?
            .keys()
            .copied()
            .collect())
    }

    fn object(&self, conv: &ConversationId, id: &ObjectId) -> Result<Option<Object>, StorageError> {
        let inner = self.inner.read().map_err(|_| poisoned())?;
        let (_, objects) = inner
            .get(conv)
            .ok_or(StorageError::UnknownConversation(*conv))?;
        Ok(objects.get(id).cloned())
    }

    fn head(&self, conv: &ConversationId) -> Result<Option<CommitId>, StorageError> {
        Ok(self
            .inner
            .read()
            .map_err(|_| poisoned())?
            .get(conv)
            .map(|(h, _)| *h))
    }

    fn write(
        &self,
        conv: &ConversationId,
        objects: &[Object],
        update: HeadUpdate,
    ) -> Result<(), StorageError> {
        let mut inner = self.inner.write().map_err(|_| poisoned())?;
        let found = inner.get(conv).map(|(h, _)| *h);
        match (update.expected, found) {
            (None, Some(_)) => return Err(StorageError::AlreadyExists(*conv)),
            (Some(e), f) if f != Some(e) => {
                return Err(StorageError::HeadMoved {
                    conversation: *conv,
                    expected: Some(e),
                    found: f,
                })
            }
            _ => {}
        }
        let known = inner
            .get(conv)
            .is_some_and(|(_, o)| o.contains_key(&update.new.object_id()));
        if !known && !objects.iter().any(|o| o.id() == update.new.object_id()) {
            return Err(StorageError::DanglingHead(update.new));
        }
        let entry = inner
            .entry(*conv)
            .or_insert_with(|| (update.new, Default::default()));
        for o in objects {
            entry.1.insert(o.id(), o.clone());
        }
        entry.0 = update.new;
        Ok(())
    }

    fn quarantine_open(&self, conv: &ConversationId) -> Result<QuarantineId, StorageError> {
        let id = self
            .next_quarantine
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.quarantines
            .lock()
            .map_err(|_| poisoned())?
            .insert(id, Default::default());
        Ok(QuarantineId { conv: *conv, id })
    }

    fn quarantine_put(&self, q: &QuarantineId, objects: &[Object]) -> Result<(), StorageError> {
        let mut qs = self.quarantines.lock().map_err(|_| poisoned())?;
        let area = qs
            .get_mut(&q.id)
            .ok_or_else(|| StorageError::backend("memory", "no such quarantine"))?;
        for o in objects {
            area.insert(o.id(), o.clone());
        }
        Ok(())
    }

    fn quarantine_object(
        &self,
        q: &QuarantineId,
        id: &ObjectId,
    ) -> Result<Option<Object>, StorageError> {
        let qs = self.quarantines.lock().map_err(|_| poisoned())?;
        let area = qs
            .get(&q.id)
            .ok_or_else(|| StorageError::backend("memory", "no such quarantine"))?;
        Ok(area.get(id).cloned())
    }

    fn quarantine_promote(
        &self,
        q: QuarantineId,
        promotion: &Promotion,
    ) -> Result<(), StorageError> {
        let objects: Vec<Object> = self
            .quarantines
            .lock()
            .map_err(|_| poisoned())?
            .get(&q.id)
            .ok_or_else(|| StorageError::backend("memory", "no such quarantine"))?
            .iter()
            .filter(|(id, _)| promotion.contains(id))
            .map(|(_, o)| o.clone())
            .collect();
        self.write(&q.conv, &objects, promotion.update())?;
        self.quarantines
            .lock()
            .map_err(|_| poisoned())?
            .remove(&q.id);
        Ok(())
    }

    fn quarantine_drop(&self, q: QuarantineId) -> Result<(), StorageError> {
        self.quarantines
            .lock()
            .map_err(|_| poisoned())?
            .remove(&q.id);
        Ok(())
    }
}
