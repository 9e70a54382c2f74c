//! # swarm-git: conversations as real Git repositories
//!
//! [`GitStorage`] implements [`swarm_api::Storage`] with one bare Git repository per
//! conversation under a root directory (`<root>/<conversation-id>`), through gix. Objects are
//! ordinary Git objects (loose for small writes, one pack for writes of
//! [`PACK_THRESHOLD`] objects or more, such as a clone or a large fetch) and the head is
//! `refs/heads/main`, so stock tools work on them:
//! `git log`, `git fsck --strict`, and `git verify-commit` with an allowed-signers file built
//! from `devices/` (see `swarm_api::commit::allowed_signers_line`).
//!
//! Writes are atomic: objects are written first (content-addressed, so an interrupted write
//! leaves at most unreferenced objects), then the head moves by a compare-and-swap under
//! Git's lock file. A new conversation is assembled in a temporary directory and renamed into
//! place, so a half-created repository is never visible.
//!
//! Writes are durable before they are acknowledged: gix never calls fsync, so this crate
//! does (see [`durable`]): every object file a write stores (loose object or pack and index),
//! its directory and `objects/`, then the new ref's lock file *before* it is renamed over `refs/heads/main`,
//! then `refs/heads/`. A new conversation is fsynced as a whole tree before its rename, and
//! the root directory after it.
//!
//! Writers of one repository are serialized by [`WriterLock`] (a PID lock file), which also
//! lets a writer recover from a `refs/heads/main.lock` left by a process killed mid-update.
//!
//! Received objects wait in a quarantine area until validated. The areas of a storage hold at
//! most [`QUARANTINE_MEMORY`] bytes of object data in memory (see
//! [`GitStorage::with_quarantine_memory`]); the rest spills to an append-only file per area
//! under `<root>/.quarantine/<pid>/`, indexed in memory (kind, offset, length per object).
//! A promotion of a spilled area streams its pack from that file, one object at a time, so
//! a clone never holds the received history in memory.
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use gix::objs::{Exists as _, Write as _};
use gix::refs::transaction::{Change, LogChange, PreviousValue, RefEdit, RefLog};
use gix::refs::Target;
use swarm_api::object::Object;
use swarm_api::storage::{HeadUpdate, Promotion, QuarantineId, Storage, StorageError};
use swarm_api::{CommitId, ConversationId};

/// The branch holding a conversation's head.
pub const HEAD_REF: &str = "refs/heads/main";

const BACKEND: &str = "git";

/// Where quarantine areas spill (`<root>/.quarantine/<pid>/<n>/`); the directories of dead
/// processes are removed at open.
const QUARANTINE_DIR: &str = ".quarantine";

/// The default budget of [`GitStorage::with_quarantine_memory`]: bytes of received object
/// data all the quarantine areas of one storage hold in memory; past it, objects spill to disk.
pub const QUARANTINE_MEMORY: usize = 32 * 1024 * 1024;

/// The quarantine directories (`<root>/.quarantine/<pid>`, canonical) this process uses: the
/// one of a root a storage of this process opened is live, not left by an earlier process
/// that had the same PID.
static OWN_QUARANTINE_DIRS: Mutex<std::collections::BTreeSet<PathBuf>> =
    Mutex::new(std::collections::BTreeSet::new());

/// Numbers the spill directories of this process (unique across the storages it opens, even
/// on the same root).
static NEXT_SPILL: AtomicU64 = AtomicU64::new(0);

/// From this many objects, a write stores one pack (and its index) instead of loose objects:
/// a clone of 10 000 messages is then two files to write and fsync, not 10 000.
pub const PACK_THRESHOLD: usize = 64;

/// The writer lock file inside each conversation repository (see [`WriterLock`]).
const WRITER_LOCK: &str = "swarm-writer.lock";

/// How long a writer waits for another live writer of the same repository.
const WRITER_LOCK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

fn err(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> StorageError {
    StorageError::backend(BACKEND, e)
}

thread_local! {
    /// This thread's handles of the repositories it used (by path). Making a thread-local
    /// gix handle costs more than reading a small object, and reads come one object at a
    /// time; a handle sees new packs and refs by itself.
    static LOCAL_REPOS: std::cell::RefCell<HashMap<PathBuf, gix::Repository>> =
        std::cell::RefCell::new(HashMap::new());
}

/// Caches `repo` for this thread (bounded: the cache is emptied when it grows large).
fn remember_local(path: PathBuf, repo: &gix::Repository) {
    LOCAL_REPOS.with(|m| {
        let mut m = m.borrow_mut();
        if m.len() >= 64 {
            m.clear();
        }
        m.insert(path, repo.clone());
    });
}

/// [`Storage`] over one Git repository per conversation.
pub struct GitStorage {
    root: PathBuf,
    repos: RwLock<HashMap<ConversationId, gix::ThreadSafeRepository>>,
    /// Received objects not yet validated, by area; written to the repository only when
    /// promoted. The map's lock is held briefly: an area has its own (its disk I/O does not
    /// block the others).
    quarantines: Mutex<HashMap<u64, Arc<Mutex<Area>>>>,
    next_quarantine: AtomicU64,
    /// Where areas spill: `<root>/.quarantine/<pid>`.
    spill_root: PathBuf,
    /// Bytes of object data all areas may hold in memory.
    quarantine_budget: usize,
    /// Bytes of object data the areas hold in memory.
    quarantine_held: Arc<AtomicUsize>,
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
        let me = std::process::id().to_string();
        let spill_root = root.join(QUARANTINE_DIR).join(&me);
        let own = std::fs::canonicalize(&root)
            .map_err(err)?
            .join(QUARANTINE_DIR)
            .join(&me);
        // Quarantines left by processes that died are garbage: nothing refers to them. Ours
        // is live if a storage of this process opened this root before (it may be spilling
        // now); else it was left by an earlier process that had our PID.
        let mut opened = OWN_QUARANTINE_DIRS
            .lock()
            .map_err(|_| err("lock poisoned"))?;
        if let Ok(entries) = std::fs::read_dir(root.join(QUARANTINE_DIR)) {
            for e in entries.flatten() {
                let pid = e.file_name().to_string_lossy().into_owned();
                let alive = if pid == me {
                    opened.contains(&own)
                } else {
                    Path::new("/proc").join(&pid).exists()
                };
                if !alive {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        opened.insert(own);
        drop(opened);
        Ok(Self {
            root,
            repos: RwLock::new(HashMap::new()),
            quarantines: Mutex::new(HashMap::new()),
            next_quarantine: AtomicU64::new(0),
            spill_root,
            quarantine_budget: QUARANTINE_MEMORY,
            quarantine_held: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// Sets how many bytes of received object data the quarantine areas of this storage hold
    /// in memory, together (default [`QUARANTINE_MEMORY`]); past it, objects spill to disk.
    /// With 0, every object spills.
    pub fn with_quarantine_memory(mut self, bytes: usize) -> Self {
        self.quarantine_budget = bytes;
        self
    }

    /// Bytes of object data the open quarantine areas hold in memory (at most the budget of
    /// [`GitStorage::with_quarantine_memory`]). Spilled objects cost an index entry each.
    pub fn quarantine_memory_bytes(&self) -> usize {
        self.quarantine_held.load(Ordering::SeqCst)
    }

    /// The area `id` (the map's lock is held only to find it).
    fn area(&self, id: u64) -> Result<Arc<Mutex<Area>>, StorageError> {
        self.quarantines
            .lock()
            .map_err(|_| err("lock poisoned"))?
            .get(&id)
            .cloned()
            .ok_or_else(|| err("no such quarantine"))
    }

    /// Promotes what `promotion` selects of `area`: through [`Storage::write`] if none of it
    /// spilled, else as a pack streamed from the spill file.
    fn promote_area(
        &self,
        conv: &ConversationId,
        area: &Mutex<Area>,
        promotion: &Promotion,
    ) -> Result<(), StorageError> {
        let mut area = area.lock().map_err(|_| err("lock poisoned"))?;
        let area = &mut *area;
        let spilled: Vec<(gix::ObjectId, Spilled)> = match &area.spill {
            Some(spill) => spill
                .index
                .iter()
                .filter(|(id, _)| promotion.contains(id))
                .map(|(id, at)| (*id, *at))
                .collect(),
            None => Vec::new(),
        };
        let chosen: Vec<gix::ObjectId> = area
            .mem
            .keys()
            .filter(|id| promotion.contains(id))
            .copied()
            .collect();
        let spill = match &area.spill {
            Some(spill) if !spilled.is_empty() => spill,
            _ => {
                // All in memory: moved out for the write (not copied), put back if it fails.
                let objects: Vec<Object> =
                    chosen.iter().filter_map(|id| area.mem.remove(id)).collect();
                let written = self.write(conv, &objects, promotion.update());
                if written.is_err() {
                    area.mem.extend(chosen.into_iter().zip(objects));
                }
                return written;
            }
        };
        let stream = spill.dir.join(SPILL_PACK);
        let count = chosen.len() + spilled.len();
        let written = pack::stream_to_file(&stream, count, |pack| {
            for id in &chosen {
                if let Some(o) = area.mem.get(id) {
                    pack.entry(o.kind, &o.data)?;
                }
            }
            for (id, at) in &spilled {
                let o = spill.read_at(id, at)?;
                pack.entry(o.kind, &o.data)?;
            }
            Ok(())
        })
        .and_then(|()| self.write_payload(conv, Payload::Pack(&stream), promotion.update()));
        // Indexed into the repository (or to be made again by a retry): not needed any more.
        let _ = std::fs::remove_file(&stream);
        written
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// How many quarantine areas are open (neither promoted nor dropped).
    pub fn open_quarantines(&self) -> usize {
        self.quarantines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
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
        let path = self.repo_path(conv);
        if let Some(r) = LOCAL_REPOS.with(|m| m.borrow().get(&path).cloned()) {
            return Ok(Some(r));
        }
        if let Some(r) = self
            .repos
            .read()
            .map_err(|_| err("lock poisoned"))?
            .get(conv)
        {
            let local = r.to_thread_local();
            remember_local(path, &local);
            return Ok(Some(local));
        }
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

    /// Writes the objects not stored yet: loose, or as one pack from [`PACK_THRESHOLD`]
    /// objects; a prepared pack stream is indexed as one pack. Returns the pack's files (pack,
    /// index, keep file), which the caller syncs and whose keep file it removes once a ref
    /// points at the objects.
    fn write_objects(
        repo: &gix::Repository,
        payload: Payload<'_>,
    ) -> Result<Option<pack::Written>, StorageError> {
        let pack_dir = repo.git_dir().join("objects").join("pack");
        let objects = match payload {
            Payload::Pack(stream) => return pack::write_stream(&pack_dir, stream).map(Some),
            Payload::Objects(objects) => objects,
        };
        if objects.len() >= PACK_THRESHOLD {
            // No per-object existence check here: each miss makes gix rescan the pack
            // directory. An object stored twice (loose and packed) is harmless to git.
            let all: Vec<&Object> = objects.iter().collect();
            return pack::write(&pack_dir, &all).map(Some);
        }
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
        Ok(None)
    }

    /// Writes `payload` and makes it durable: a pack, its index and their directories, or
    /// each loose object file, each fan-out directory holding one, and `objects/` (which may
    /// have gained a fan-out directory). Loose objects already stored are synced too: a write
    /// that crashed earlier may have left them in the page cache only, and this write is
    /// about to make a ref point at them.
    ///
    /// Loose objects are written so that a process killed at any point leaves every stored
    /// commit whole: first everything that is not a commit, then the commits parents first.
    /// A fetch decides what it has by the commits it finds stored; a commit stored without
    /// its parent would make it tell peers it has a history it lacks, and every later fetch
    /// would miss that parent. (A pack is all or nothing: its index is renamed into place
    /// last.) The files are synced once, after all are written, before the head moves: a
    /// power loss in between may keep a later file and lose an earlier one (the page cache
    /// writes back in no set order), which syncing each commit apart would prevent at the
    /// price of an fsync per commit, inside the conversation's lock.
    fn write_objects_durably(
        repo: &gix::Repository,
        payload: Payload<'_>,
    ) -> Result<Option<pack::Written>, StorageError> {
        let objects_dir = repo.git_dir().join("objects");
        match payload {
            Payload::Objects(objects) if objects.len() < PACK_THRESHOLD => {
                let (commits, others): (Vec<&Object>, Vec<&Object>) = objects
                    .iter()
                    .partition(|o| o.kind == gix::object::Kind::Commit);
                let mut ordered = others;
                ordered.extend(commits_parents_first(&commits));
                Self::write_loose_durably(repo, &objects_dir, &ordered)?;
                Ok(None)
            }
            payload => {
                let pack = Self::write_objects(repo, payload)?
                    .ok_or_else(|| err("a pack write wrote no pack"))?;
                pack.sync(&objects_dir)?;
                Ok(Some(pack))
            }
        }
    }

    /// Writes `objects` loose (those not stored yet), in this order, then syncs them, their
    /// fan-out directories and `objects/`.
    fn write_loose_durably(
        repo: &gix::Repository,
        objects_dir: &Path,
        objects: &[&Object],
    ) -> Result<(), StorageError> {
        for obj in objects {
            let id = obj.id();
            if !repo.objects.exists(&id) {
                let written = repo.objects.write_buf(obj.kind, &obj.data).map_err(err)?;
                if written != id {
                    return Err(err(format!("object {id} was stored as {written}")));
                }
            }
        }
        let mut dirs = std::collections::BTreeSet::new();
        for obj in objects {
            let hex = obj.id().to_hex().to_string();
            let dir = objects_dir.join(&hex[..2]);
            let file = dir.join(&hex[2..]);
            // Not loose (e.g. packed by a `git gc`): nothing of ours to sync.
            if durable::sync_file_if_exists(&file).map_err(err)? {
                dirs.insert(dir);
            }
        }
        for dir in &dirs {
            durable::sync_dir(dir).map_err(err)?;
        }
        if !dirs.is_empty() {
            durable::sync_dir(objects_dir).map_err(err)?;
        }
        Ok(())
    }

    /// Moves [`HEAD_REF`] to `new` if it is `expected` (compare-and-swap under Git's ref
    /// lock), durably: the lock file holding the new value is fsynced before gix renames it
    /// over the ref, and `refs/heads/` after, so the new head survives a power loss once this
    /// returns and a crash at any point leaves either the old or the new head.
    fn update_head_durably(
        repo: &gix::Repository,
        expected: PreviousValue,
        new: CommitId,
        message: &str,
    ) -> Result<(), StorageError> {
        let edit = RefEdit {
            change: Change::Update {
                log: LogChange {
                    mode: RefLog::AndReference,
                    force_create_reflog: false,
                    message: message.into(),
                },
                expected,
                new: Target::Object(new.object_id()),
            },
            name: HEAD_REF.try_into().map_err(err)?,
            deref: false,
        };
        let prepared = repo
            .refs
            .transaction()
            .prepare(
                [edit],
                gix::lock::acquire::Fail::Immediately,
                gix::lock::acquire::Fail::Immediately,
            )
            .map_err(err)?;
        let refs_heads = repo.git_dir().join("refs").join("heads");
        durable::sync_file(&refs_heads.join("main.lock")).map_err(err)?;
        // No reflog is written (bare repository, isolated configuration), so no committer.
        prepared.commit(None).map_err(err)?;
        durable::sync_dir(&refs_heads).map_err(err)?;
        Ok(())
    }

    /// [`Storage::write`] of a payload: a new conversation is created whole (one rename), an
    /// existing one gets the objects then its head moved by a compare-and-swap under the
    /// writer lock.
    fn write_payload(
        &self,
        conv: &ConversationId,
        payload: Payload<'_>,
        update: HeadUpdate,
    ) -> Result<(), StorageError> {
        let Some(expected) = update.expected else {
            return self.create(conv, payload, update.new);
        };
        let repo = self
            .repo(conv)?
            .ok_or(StorageError::UnknownConversation(*conv))?;
        let _writer = WriterLock::acquire(repo.git_dir())?;
        // Only our writers take Git's ref lock, and they are serialized by the writer lock we
        // now hold, so a `refs/heads/main.lock` here was left by a writer that died during
        // its ref update (before the rename that publishes it). The ref itself still holds
        // the old head; the lock file only blocks every later update, so it goes.
        let stale = repo.git_dir().join("refs").join("heads").join("main.lock");
        match std::fs::remove_file(&stale) {
            Ok(()) => tracing::warn!(
                conversation = %conv,
                "removed refs/heads/main.lock left by a writer that died mid-update"
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(e)),
        }
        let found = Self::read_head(&repo)?;
        if found != Some(expected) {
            return Err(StorageError::HeadMoved {
                conversation: *conv,
                expected: Some(expected),
                found,
            });
        }
        let pack = Self::write_objects_durably(&repo, payload)?;
        if !repo.objects.exists(&update.new.object_id()) {
            return Err(StorageError::DanglingHead(update.new));
        }
        if update.new == expected {
            // The head stays; gix would not touch the ref (nor create its lock file).
            if let Some(pack) = pack {
                pack.release()?;
            }
            return Ok(());
        }
        // The compare-and-swap is done again under the ref lock.
        Self::update_head_durably(
            &repo,
            PreviousValue::MustExistAndMatch(Target::Object(expected.object_id())),
            update.new,
            "commit",
        )
        .map_err(|e| {
            let found = Self::read_head(&repo).ok().flatten();
            if found != Some(expected) && found != Some(update.new) {
                StorageError::HeadMoved {
                    conversation: *conv,
                    expected: Some(expected),
                    found,
                }
            } else {
                e
            }
        })?;
        if let Some(pack) = pack {
            pack.release()?;
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
        payload: Payload<'_>,
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
            let pack = Self::write_objects(&repo, payload)?;
            if !repo.objects.exists(&new.object_id()) {
                return Err(StorageError::DanglingHead(new));
            }
            Self::update_head_durably(
                &repo,
                PreviousValue::MustNotExist,
                new,
                "create conversation",
            )?;
            if let Some(pack) = pack {
                pack.release()?;
            }
            // Everything in the new repository (objects, HEAD, config, ...) reaches the disk
            // before the rename publishes it.
            durable::sync_tree(&tmp).map_err(err)?;
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
        durable::sync_dir(&self.root).map_err(err)?;
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

    fn object_size(
        &self,
        conv: &ConversationId,
        id: &gix::ObjectId,
    ) -> Result<Option<u64>, StorageError> {
        // From the object's header: a server sizes a bundle without reading its blobs.
        let repo = self
            .repo(conv)?
            .ok_or(StorageError::UnknownConversation(*conv))?;
        Ok(repo.try_find_header(*id).map_err(err)?.map(|h| h.size()))
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
        self.write_payload(conv, Payload::Objects(objects), update)
    }

    fn location(&self, conv: &ConversationId) -> Option<PathBuf> {
        let p = self.repo_path(conv);
        p.join("HEAD").is_file().then_some(p)
    }

    fn quarantine_open(&self, conv: &ConversationId) -> Result<QuarantineId, StorageError> {
        let id = self.next_quarantine.fetch_add(1, Ordering::Relaxed);
        let area = Area {
            mem: HashMap::new(),
            mem_bytes: 0,
            held: self.quarantine_held.clone(),
            spill: None,
        };
        self.quarantines
            .lock()
            .map_err(|_| err("lock poisoned"))?
            .insert(id, Arc::new(Mutex::new(area)));
        Ok(QuarantineId { conv: *conv, id })
    }

    fn quarantine_put(&self, q: &QuarantineId, objects: &[Object]) -> Result<(), StorageError> {
        let area = self.area(q.id)?;
        let mut area = area.lock().map_err(|_| err("lock poisoned"))?;
        for o in objects {
            area.put(o, self.quarantine_budget, &self.spill_root)?;
        }
        Ok(())
    }

    fn quarantine_object(
        &self,
        q: &QuarantineId,
        id: &gix::ObjectId,
    ) -> Result<Option<Object>, StorageError> {
        let area = self.area(q.id)?;
        let area = area.lock().map_err(|_| err("lock poisoned"))?;
        if let Some(o) = area.mem.get(id) {
            return Ok(Some(o.clone()));
        }
        match &area.spill {
            Some(spill) => spill.read(id),
            None => Ok(None),
        }
    }

    fn quarantine_promote(
        &self,
        q: QuarantineId,
        promotion: &Promotion,
    ) -> Result<(), StorageError> {
        // Out of the map while it is written: the area is promoted once.
        let area = self
            .quarantines
            .lock()
            .map_err(|_| err("lock poisoned"))?
            .remove(&q.id)
            .ok_or_else(|| err("no such quarantine"))?;
        // A new conversation is created whole (one rename), an existing one gets the objects
        // then its head moved: the same atomic, durable paths as every write.
        let written = self.promote_area(&q.conv, &area, promotion);
        if written.is_err() {
            // The area stays for a retry (a local commit moved the head meanwhile: the caller
            // decides again and promotes again), whole.
            self.quarantines
                .lock()
                .map_err(|_| err("lock poisoned"))?
                .insert(q.id, area);
        }
        // Else dropping the area frees its memory and removes its spill directory.
        written
    }

    fn quarantine_drop(&self, q: QuarantineId) -> Result<(), StorageError> {
        let area = self
            .quarantines
            .lock()
            .map_err(|_| err("lock poisoned"))?
            .remove(&q.id);
        // Dropped outside the map's lock (removing a spill directory takes a while).
        drop(area);
        Ok(())
    }
}

/// What [`GitStorage::write_payload`] stores: objects, or a pack stream prepared in a file
/// (a spilled quarantine's promotion), indexed as one pack whatever its object count.
#[derive(Clone, Copy)]
enum Payload<'a> {
    Objects(&'a [Object]),
    Pack(&'a Path),
}

/// One quarantine area: objects in memory while the storage's budget allows, the rest
/// spilled to disk.
struct Area {
    mem: HashMap<gix::ObjectId, Object>,
    /// Bytes of object data in `mem`, counted in `held` too (released when the area drops).
    mem_bytes: usize,
    /// The storage's count of bytes held in memory by all its areas.
    held: Arc<AtomicUsize>,
    spill: Option<Spill>,
}

impl Area {
    /// Holds `o` (keyed by the hash of its content, computed here: what is read back is what
    /// the key names): in memory if it fits under `budget` (bytes all areas hold), else
    /// appended to the spill file, made in a new directory under `spill_root` if needed. An
    /// object held already is skipped.
    fn put(&mut self, o: &Object, budget: usize, spill_root: &Path) -> Result<(), StorageError> {
        let id = o.id();
        let spilled = self
            .spill
            .as_ref()
            .is_some_and(|s| s.index.contains_key(&id));
        if spilled || self.mem.contains_key(&id) {
            return Ok(());
        }
        let len = o.data.len();
        let fits = budget > 0
            && self
                .held
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |held| {
                    held.checked_add(len).filter(|total| *total <= budget)
                })
                .is_ok();
        if fits {
            self.mem.insert(id, o.clone());
            self.mem_bytes += len;
            return Ok(());
        }
        let spill = match &mut self.spill {
            Some(spill) => spill,
            None => self.spill.insert(Spill::create(spill_root)?),
        };
        spill.append(id, o)
    }
}

impl Drop for Area {
    fn drop(&mut self) {
        self.held.fetch_sub(self.mem_bytes, Ordering::SeqCst);
    }
}

/// The name of a spill directory's object file.
const SPILL_OBJECTS: &str = "objects";
/// The name of the pack stream a promotion prepares in a spill directory.
const SPILL_PACK: &str = "promote.pack";

/// Where a spilled object is in its area's spill file.
#[derive(Clone, Copy)]
struct Spilled {
    kind: gix::object::Kind,
    offset: u64,
    len: u64,
}

/// The spilled objects of an area: `<dir>/objects`, their data one after the other
/// (append-only), and the index of where each is. Removed with its directory when dropped.
struct Spill {
    dir: PathBuf,
    file: std::fs::File,
    len: u64,
    index: HashMap<gix::ObjectId, Spilled>,
}

impl Spill {
    /// A new, empty spill in a new directory under `root`.
    fn create(root: &Path) -> Result<Self, StorageError> {
        let dir = root.join(NEXT_SPILL.fetch_add(1, Ordering::Relaxed).to_string());
        std::fs::create_dir_all(&dir).map_err(err)?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(dir.join(SPILL_OBJECTS));
        match file {
            Ok(file) => Ok(Self {
                dir,
                file,
                len: 0,
                index: HashMap::new(),
            }),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(err(e))
            }
        }
    }

    /// Appends `o` (whose id is `id`). A failed write is overwritten by the next one.
    fn append(&mut self, id: gix::ObjectId, o: &Object) -> Result<(), StorageError> {
        use std::os::unix::fs::FileExt as _;
        self.file.write_all_at(&o.data, self.len).map_err(err)?;
        let len = o.data.len() as u64;
        self.index.insert(
            id,
            Spilled {
                kind: o.kind,
                offset: self.len,
                len,
            },
        );
        self.len += len;
        Ok(())
    }

    /// The spilled object `id`, if held.
    fn read(&self, id: &gix::ObjectId) -> Result<Option<Object>, StorageError> {
        match self.index.get(id) {
            Some(at) => self.read_at(id, at).map(Some),
            None => Ok(None),
        }
    }

    /// Reads object `id` from where `at` says, checking that the bytes hash to `id` (a
    /// corrupted file is an error, never another object).
    fn read_at(&self, id: &gix::ObjectId, at: &Spilled) -> Result<Object, StorageError> {
        use std::os::unix::fs::FileExt as _;
        let len = usize::try_from(at.len).map_err(err)?;
        let mut data = vec![0; len];
        self.file.read_exact_at(&mut data, at.offset).map_err(err)?;
        let o = Object {
            kind: at.kind,
            data,
        };
        if o.id() != *id {
            return Err(err(format!(
                "quarantined object {id} read back from {} does not hash to its id",
                self.dir.display()
            )));
        }
        Ok(o)
    }
}

impl Drop for Spill {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %self.dir.display(), error = %e, "could not remove a quarantine spill");
            }
        }
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

/// `commits` ordered so that each comes after those of its parents that are among them.
/// (A commit gix cannot read is written where it comes: validation, not storage, judges
/// commits, and storage must not refuse what it passed.)
fn commits_parents_first<'a>(commits: &[&'a Object]) -> Vec<&'a Object> {
    let mut parents: HashMap<gix::ObjectId, Vec<gix::ObjectId>> = HashMap::new();
    for c in commits {
        if let Ok(parsed) = gix::objs::CommitRef::from_bytes(&c.data, gix::hash::Kind::Sha1) {
            parents.insert(c.id(), parsed.parents().collect());
        }
    }
    let by_id: HashMap<gix::ObjectId, &'a Object> = commits.iter().map(|c| (c.id(), *c)).collect();
    let mut out = Vec::with_capacity(commits.len());
    let mut done = std::collections::HashSet::new();
    let mut opened = std::collections::HashSet::new();
    // Depth first, iteratively (a chain of commits is as deep as it is long).
    for c in commits {
        let mut stack = vec![(c.id(), false)];
        while let Some((id, expanded)) = stack.pop() {
            if done.contains(&id) || (!expanded && !opened.insert(id)) {
                continue;
            }
            if expanded {
                done.insert(id);
                if let Some(o) = by_id.get(&id) {
                    out.push(*o);
                }
                continue;
            }
            stack.push((id, true));
            for p in parents.get(&id).into_iter().flatten() {
                if by_id.contains_key(p) && !done.contains(p) {
                    stack.push((*p, false));
                }
            }
        }
    }
    out
}

/// Serializes the writers of one repository, across threads and processes, and survives
/// writers that die holding it.
///
/// Why a lock of our own: gix's `refs/heads/main.lock` is created with `O_EXCL` and removed
/// when the update ends; a process killed in between leaves it behind and every later update
/// fails, forever, with no way to tell a dead holder from a live one. Our lock records the
/// holder's PID, so a stale one can be told apart and taken over, and while holding it any
/// `refs/heads/main.lock` is necessarily stale (only our writers take it) and can be removed.
///
/// How:
/// - Inside one process, writers of a repository wait on a process-wide table ([`HELD`]), so
///   at most one thread per process ever touches the lock file of a repository. Hence a lock
///   file naming our own PID is stale: it was left by a dead process that had the same PID
///   (PIDs are reused, e.g. in containers).
/// - Across processes, the lock file `<repo>/swarm-writer.lock` holds the holder's PID. It
///   is created atomically *with* its content: the PID is written to a private file that is
///   then hard-linked to the lock name (`link(2)` fails if the name exists, like `O_EXCL`), so
///   no reader ever sees an empty lock.
/// - A lock whose holder is dead (no `/proc/<pid>`, or that PID now belongs to another process:
///   its start time or the boot id differ, see [`stamp`]) or is ours (see above) is stale,
///   and so is content that does not parse (see [`holder_alive`]). It is taken
///   over by renaming it to a private name, which only one contender can do; the renamed file
///   is checked to still be the stale one we judged (if another contender had meanwhile taken
///   over and locked, we put its lock back with `link(2)`). Then acquisition starts over.
/// - A live holder is waited for (writes take milliseconds), up to [`WRITER_LOCK_TIMEOUT`].
///
/// Residual risk, accepted: three processes racing for the same stale lock within
/// microseconds could let two of them in. Even then Git's own ref lock keeps the ref
/// update itself a compare-and-swap unless the stale-`main.lock` removal interleaves too.
struct WriterLock {
    repo: PathBuf,
    file: PathBuf,
}

/// Repositories (by git dir) whose writer lock a thread of this process holds or is taking.
static HELD: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
static HELD_CHANGED: std::sync::Condvar = std::sync::Condvar::new();

impl WriterLock {
    fn acquire(git_dir: &Path) -> Result<Self, StorageError> {
        let repo = git_dir.to_path_buf();
        let deadline = std::time::Instant::now() + WRITER_LOCK_TIMEOUT;
        {
            let mut held = HELD.lock().map_err(|_| err("lock poisoned"))?;
            while held.contains(&repo) {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    return Err(err(format!(
                        "another thread kept the writer lock of {} for {WRITER_LOCK_TIMEOUT:?}",
                        repo.display()
                    )));
                }
                held = HELD_CHANGED
                    .wait_timeout(held, left)
                    .map_err(|_| err("lock poisoned"))?
                    .0;
            }
            held.push(repo.clone());
        }
        // From here on, dropping `lock` releases the in-process claim (and the file, if ours).
        let mut lock = WriterLock {
            file: repo.join(WRITER_LOCK),
            repo,
        };
        lock.acquire_file(deadline)?;
        Ok(lock)
    }

    fn acquire_file(&mut self, deadline: std::time::Instant) -> Result<(), StorageError> {
        let me = stamp(std::process::id());
        let mine = self
            .repo
            .join(format!("{WRITER_LOCK}.{}", std::process::id()));
        std::fs::write(&mine, &me).map_err(err)?;
        let result = self.acquire_file_with(&mine, &me, deadline);
        let _ = std::fs::remove_file(&mine);
        result
    }

    fn acquire_file_with(
        &mut self,
        mine: &Path,
        me: &str,
        deadline: std::time::Instant,
    ) -> Result<(), StorageError> {
        let mut pause = std::time::Duration::from_millis(1);
        loop {
            match std::fs::hard_link(mine, &self.file) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(err(e)),
            }
            let content = match std::fs::read(&self.file) {
                Ok(c) => String::from_utf8_lossy(&c).into_owned(),
                // Released meanwhile: try again at once.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(err(e)),
            };
            let stale = content.split_whitespace().next() == me.split_whitespace().next()
                || !holder_alive(&content);
            if stale {
                self.take_over(&content)?;
                continue;
            }
            if std::time::Instant::now() >= deadline {
                return Err(err(format!(
                    "the writer lock {} is held by process {} for more than {WRITER_LOCK_TIMEOUT:?}",
                    self.file.display(),
                    content.trim()
                )));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(std::time::Duration::from_millis(50));
        }
    }

    /// Removes the lock file judged stale (content `stale`), without ever removing a live
    /// one that replaced it meanwhile.
    fn take_over(&self, stale: &str) -> Result<(), StorageError> {
        let grave = self
            .repo
            .join(format!("{WRITER_LOCK}.{}.stale", std::process::id()));
        match std::fs::rename(&self.file, &grave) {
            Ok(()) => {}
            // Another contender took it over first.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(err(e)),
        }
        let moved = std::fs::read(&grave).map_err(err)?;
        if moved == stale.as_bytes() {
            tracing::warn!(
                lock = %self.file.display(),
                holder = stale.trim(),
                "took over the writer lock of a dead process"
            );
        } else if let Err(e) = std::fs::hard_link(&grave, &self.file) {
            // We moved a live lock aside and someone else locked meanwhile (see the
            // residual risk above).
            tracing::error!(lock = %self.file.display(), error = %e, "could not restore a live writer lock");
        }
        std::fs::remove_file(&grave).map_err(err)
    }
}

impl Drop for WriterLock {
    fn drop(&mut self) {
        // Only remove the file if it is ours (acquisition may have failed).
        let me = stamp(std::process::id());
        if std::fs::read(&self.file).is_ok_and(|c| c == me.as_bytes()) {
            if let Err(e) = std::fs::remove_file(&self.file) {
                tracing::warn!(lock = %self.file.display(), error = %e, "could not release the writer lock");
            }
        }
        if let Ok(mut held) = HELD.lock() {
            held.retain(|p| p != &self.repo);
        }
        HELD_CHANGED.notify_all();
    }
}

/// What a writer lock records about its holder: `<pid> <start time> <boot id>`. The start
/// time (field 22 of `/proc/<pid>/stat`) and the boot id tell a live holder from an unrelated
/// process that got the same PID later, e.g. after a reboot. Fields `/proc` cannot give are
/// left out (then only the PID is compared).
fn stamp(pid: u32) -> String {
    let mut s = pid.to_string();
    if let Some(start) = start_time(pid) {
        s.push(' ');
        s.push_str(&start);
        if let Ok(boot) = std::fs::read_to_string("/proc/sys/kernel/random/boot_id") {
            s.push(' ');
            s.push_str(boot.trim());
        }
    }
    s.push('\n');
    s
}

/// Field 22 of `/proc/<pid>/stat` (after the parenthesised command name, which may contain
/// spaces), or `None` if the process does not exist.
fn start_time(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().nth(19).map(str::to_owned)
}

/// Whether the holder a lock's content names is a live process. Our writers write the content
/// before the lock appears, so content that does not parse is what a power loss left (data
/// not flushed): no live holder.
fn holder_alive(content: &str) -> bool {
    let mut fields = content.split_whitespace();
    let Some(pid) = fields.next().and_then(|p| p.parse::<u32>().ok()) else {
        return false;
    };
    let recorded_start = fields.next();
    let recorded_boot = fields.next();
    let current = stamp(pid);
    let mut now = current.split_whitespace().skip(1);
    let (now_start, now_boot) = (now.next(), now.next());
    if !Path::new("/proc").join(pid.to_string()).exists() {
        return false;
    }
    // Compare what both sides recorded.
    let same = |a: Option<&str>, b: Option<&str>| match (a, b) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    };
    same(recorded_start, now_start) && same(recorded_boot, now_boot)
}

/// Writing many objects as one pack: an undeltified version-2 pack stream (in memory, or
/// streamed to a file for a spilled quarantine), indexed by gix
/// (`gix_pack::Bundle::write_to_directory`, which checks every object and the trailer).
mod pack {
    use std::fs::File;
    use std::io::{BufRead, BufReader, BufWriter, Write};
    use std::path::{Path, PathBuf};
    use std::sync::atomic::AtomicBool;

    use gix::zlib::stream::deflate::{Compress, FlushCompress};
    use gix::zlib::{Compression, Status};
    use gix_pack::bundle::write::Options;
    use gix_pack::Bundle;
    use swarm_api::object::Object;
    use swarm_api::storage::StorageError;

    use super::{durable, err};

    /// The files of a pack just written.
    pub(crate) struct Written {
        data: PathBuf,
        index: PathBuf,
        keep: Option<PathBuf>,
    }

    impl Written {
        /// fsyncs the pack, its index and their directories.
        pub(crate) fn sync(&self, objects_dir: &Path) -> Result<(), StorageError> {
            durable::sync_file(&self.data).map_err(err)?;
            durable::sync_file(&self.index).map_err(err)?;
            if let Some(dir) = self.data.parent() {
                durable::sync_dir(dir).map_err(err)?;
            }
            durable::sync_dir(objects_dir).map_err(err)
        }

        /// Removes the `.keep` file once a ref points at the pack's objects.
        pub(crate) fn release(self) -> Result<(), StorageError> {
            match self.keep {
                Some(keep) => match std::fs::remove_file(keep) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(err(e)),
                },
                None => Ok(()),
            }
        }
    }

    fn kind_code(kind: gix::object::Kind) -> u8 {
        match kind {
            gix::object::Kind::Commit => 1,
            gix::object::Kind::Tree => 2,
            gix::object::Kind::Blob => 3,
            gix::object::Kind::Tag => 4,
        }
    }

    /// Writes `data` zlib-compressed (one complete stream) to `out`.
    fn deflate(c: &mut Compress, data: &[u8], out: &mut impl Write) -> Result<(), StorageError> {
        c.reset();
        let mut buf = [0u8; 16 * 1024];
        let (start_in, start_out) = (c.total_in(), c.total_out());
        loop {
            let consumed = (c.total_in() - start_in) as usize;
            let before = c.total_out();
            let status = c
                .compress(&data[consumed..], &mut buf, FlushCompress::Finish)
                .map_err(err)?;
            out.write_all(&buf[..(c.total_out() - before) as usize])
                .map_err(err)?;
            match status {
                Status::StreamEnd => return Ok(()),
                Status::Ok | Status::BufError => {}
            }
            if c.total_out() - start_out > (data.len() as u64) * 2 + 1024 {
                return Err(err("zlib produced more than twice its input"));
            }
        }
    }

    /// A writer that hashes (SHA-1) what passes through it: the pack trailer.
    struct Hashing<W> {
        inner: W,
        hasher: gix::hash::Hasher,
    }

    impl<W: Write> Write for Hashing<W> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let n = self.inner.write(buf)?;
            self.hasher.update(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> std::io::Result<()> {
            self.inner.flush()
        }
    }

    /// Writes an undeltified version-2 pack stream to any writer, one object at a time: the
    /// header (with the object count given up front), the entries, the SHA-1 trailer.
    pub(crate) struct Encoder<W: Write> {
        out: Hashing<W>,
        compress: Compress,
        left: u32,
    }

    impl<W: Write> Encoder<W> {
        /// Starts a pack of `count` objects.
        pub(crate) fn new(out: W, count: usize) -> Result<Self, StorageError> {
            let count = u32::try_from(count).map_err(|_| err("too many objects for a pack"))?;
            let mut out = Hashing {
                inner: out,
                hasher: gix::hash::hasher(gix::hash::Kind::Sha1),
            };
            out.write_all(b"PACK").map_err(err)?;
            out.write_all(&2u32.to_be_bytes()).map_err(err)?;
            out.write_all(&count.to_be_bytes()).map_err(err)?;
            Ok(Self {
                out,
                compress: Compress::new(Compression::BEST_SPEED),
                left: count,
            })
        }

        /// Appends one object.
        pub(crate) fn entry(
            &mut self,
            kind: gix::object::Kind,
            data: &[u8],
        ) -> Result<(), StorageError> {
            self.left = self
                .left
                .checked_sub(1)
                .ok_or_else(|| err("more objects than the pack header announced"))?;
            // Type and size: 3 bits of type, then the size 4 + 7·n bits, little-endian.
            let mut header = Vec::with_capacity(10);
            let mut size = data.len() as u64;
            let mut byte = (kind_code(kind) << 4) | (size & 0x0f) as u8;
            size >>= 4;
            while size > 0 {
                header.push(byte | 0x80);
                byte = (size & 0x7f) as u8;
                size >>= 7;
            }
            header.push(byte);
            self.out.write_all(&header).map_err(err)?;
            deflate(&mut self.compress, data, &mut self.out)
        }

        /// Writes the trailer; returns the writer.
        pub(crate) fn finish(self) -> Result<W, StorageError> {
            if self.left != 0 {
                return Err(err("fewer objects than the pack header announced"));
            }
            let Hashing { mut inner, hasher } = self.out;
            let trailer = hasher.try_finalize().map_err(err)?;
            inner.write_all(trailer.as_bytes()).map_err(err)?;
            Ok(inner)
        }
    }

    /// The pack stream of `objects`, without deltas.
    fn encode(objects: &[&Object]) -> Result<Vec<u8>, StorageError> {
        let out = Vec::with_capacity(objects.iter().map(|o| o.data.len() / 2 + 16).sum());
        let mut pack = Encoder::new(out, objects.len())?;
        for o in objects {
            pack.entry(o.kind, &o.data)?;
        }
        pack.finish()
    }

    /// Writes the pack stream of `count` objects, which `fill` gives to the encoder one at a
    /// time, to the file `path` (replaced if it exists).
    pub(crate) fn stream_to_file(
        path: &Path,
        count: usize,
        fill: impl FnOnce(&mut Encoder<BufWriter<File>>) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        let file = File::create(path).map_err(err)?;
        let mut pack = Encoder::new(BufWriter::new(file), count)?;
        fill(&mut pack)?;
        pack.finish()?
            .into_inner()
            .map_err(|e| err(e.into_error()))?;
        Ok(())
    }

    /// Writes `objects` as one pack and its index into `dir` (`objects/pack`).
    pub(crate) fn write(dir: &Path, objects: &[&Object]) -> Result<Written, StorageError> {
        let stream = encode(objects)?;
        index(dir, &mut stream.as_slice())
    }

    /// Writes the pack stream in the file `stream` as one pack and its index into `dir`
    /// (`objects/pack`), reading it as it goes.
    pub(crate) fn write_stream(dir: &Path, stream: &Path) -> Result<Written, StorageError> {
        let file = File::open(stream).map_err(err)?;
        index(dir, &mut BufReader::with_capacity(64 * 1024, file))
    }

    /// Copies the pack stream `pack` into `dir` and indexes it.
    fn index(dir: &Path, pack: &mut dyn BufRead) -> Result<Written, StorageError> {
        std::fs::create_dir_all(dir).map_err(err)?;
        let outcome = Bundle::write_to_directory(
            pack,
            Some(dir),
            &mut gix::progress::Discard,
            &AtomicBool::new(false),
            None::<gix::objs::find::Never>,
            gix::hash::Kind::Sha1,
            Options {
                thread_limit: Some(1),
                ..Options::default()
            },
        )
        .map_err(|e| err(e.to_string()))?;
        match (outcome.data_path, outcome.index_path) {
            (Some(data), Some(index)) => Ok(Written {
                data,
                index,
                keep: outcome.keep_path,
            }),
            _ => Err(err("the pack was not written to disk")),
        }
    }
}

/// fsync helpers: gix writes files and renames them into place but never fsyncs.
mod durable {
    use std::fs::File;
    use std::io;
    use std::path::Path;

    /// Flushes a file's data and metadata to disk.
    pub(crate) fn sync_file(path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }

    /// Like [`sync_file`]; `Ok(false)` if the file does not exist.
    pub(crate) fn sync_file_if_exists(path: &Path) -> io::Result<bool> {
        match File::open(path) {
            Ok(f) => f.sync_all().map(|()| true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Flushes a directory's entries (names created, renamed or removed in it) to disk.
    pub(crate) fn sync_dir(path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }

    /// Syncs every file and directory under `path`, children before parents.
    pub(crate) fn sync_tree(path: &Path) -> io::Result<()> {
        for entry in std::fs::read_dir(path)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                sync_tree(&entry.path())?;
            } else if kind.is_file() {
                sync_file(&entry.path())?;
            }
        }
        sync_dir(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use swarm_api::body::{Body, Mode};
    use swarm_api::repo::{create_conversation, Repo};
    use swarm_api::testing::{Person, T};

    /// A commit object with these parents (its tree need not exist for ordering).
    fn raw_commit(parents: &[gix::ObjectId], msg: &str) -> Object {
        let mut text = format!(
            "tree {}\n",
            gix::ObjectId::empty_tree(gix::hash::Kind::Sha1)
        );
        for p in parents {
            text.push_str(&format!("parent {p}\n"));
        }
        text.push_str("author A <a> 0 +0000\ncommitter A <a> 0 +0000\n\n");
        text.push_str(msg);
        Object {
            kind: gix::object::Kind::Commit,
            data: text.into_bytes(),
        }
    }

    /// Loose commits are written parents first, whatever order a batch comes in, so a write
    /// cut short (a kill) never leaves a stored commit whose parent is missing (seen in the
    /// soak: a node killed mid-fetch kept a child without its parent, told peers it had it,
    /// and could never fetch that parent again).
    #[test]
    fn commits_are_ordered_parents_first() {
        let outside = raw_commit(&[], "stored before");
        let c1 = raw_commit(&[outside.id()], "1");
        let c2 = raw_commit(&[c1.id()], "2");
        let c3 = raw_commit(&[c2.id()], "3");
        let x = raw_commit(&[c1.id()], "x");
        let m = raw_commit(&[c3.id(), x.id()], "merge");
        let all = [&c1, &c2, &c3, &x, &m];
        let orders: [Vec<&Object>; 3] = [
            vec![&m, &c3, &x, &c2, &c1],
            vec![&c2, &m, &c1, &x, &c3],
            all.to_vec(),
        ];
        for input in orders {
            let out = commits_parents_first(&input);
            assert_eq!(out.len(), all.len(), "each commit once");
            let pos = |o: &Object| out.iter().position(|c| c.id() == o.id()).expect("present");
            for (child, parent) in [(&c2, &c1), (&c3, &c2), (&x, &c1), (&m, &c3), (&m, &x)] {
                assert!(
                    pos(parent) < pos(child),
                    "a parent is written before its child"
                );
            }
        }
        let junk = Object {
            kind: gix::object::Kind::Commit,
            data: b"not a commit".to_vec(),
        };
        let out = commits_parents_first(&[&c2, &junk, &c1]);
        assert_eq!(out.len(), 3, "a commit gix cannot read is still written");
    }

    /// The PID of a process that has exited (and was reaped).
    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().expect("spawn");
        let pid = child.id();
        child.wait().expect("wait");
        pid
    }

    #[test]
    fn a_write_recovers_from_locks_left_by_a_dead_writer() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let storage = GitStorage::open(tmp.path()).expect("open");
        let alice = Person::new("Alice");
        let conv = create_conversation(&storage, &alice.signer(), Mode::InvitesOnly, None, T)
            .expect("create");
        let git_dir = storage.repo_path(&conv);
        let ref_lock = git_dir.join("refs/heads/main.lock");
        let writer_lock = git_dir.join(WRITER_LOCK);
        let repo = Repo::open(&storage, conv).expect("open conversation");
        // What a writer killed during its ref update leaves: both lock files, ours naming
        // a dead process (then one naming this process's PID, as after PID reuse).
        for holder in [stamp(dead_pid()), stamp(std::process::id()), "".into()] {
            std::fs::write(&ref_lock, "garbage").expect("plant ref lock");
            std::fs::write(&writer_lock, &holder).expect("plant writer lock");
            let before = repo.head().expect("head");
            let id = repo
                .append(&alice.signer(), &Body::text("after the crash"), &[], T + 1)
                .unwrap_or_else(|e| panic!("write with a stale lock {holder:?}: {e}"));
            assert_ne!(id, before);
            assert_eq!(storage.head(&conv).expect("head"), Some(id));
            assert!(!ref_lock.exists(), "stale ref lock removed");
            assert!(!writer_lock.exists(), "writer lock released");
        }
        repo.verify().expect("verify");
    }

    #[test]
    fn a_lock_holder_is_alive_only_while_its_process_runs() {
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .expect("spawn");
        let held = stamp(child.id());
        assert!(holder_alive(&held), "a running process holds the lock");
        // Same PID, different start time: another process that reused the PID.
        let mut fields: Vec<&str> = held.split_whitespace().collect();
        if fields.len() > 1 {
            fields[1] = "1";
            assert!(
                !holder_alive(&fields.join(" ")),
                "a reused PID is not the holder"
            );
        }
        child.kill().expect("kill");
        child.wait().expect("wait");
        assert!(!holder_alive(&held), "a dead process holds nothing");
        assert!(!holder_alive("not a pid\n"), "unparseable content is stale");
    }

    #[test]
    fn a_second_writer_in_the_same_process_gets_the_lock_once_the_first_releases_it() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let first = WriterLock::acquire(tmp.path()).expect("first");
        let (tx, rx) = std::sync::mpsc::channel();
        let path = tmp.path().to_path_buf();
        let waiter = std::thread::spawn(move || {
            let second = WriterLock::acquire(&path).expect("second");
            tx.send(()).expect("send");
            drop(second);
        });
        assert!(
            rx.try_recv().is_err(),
            "the second writer waits while the first holds the lock"
        );
        assert!(tmp.path().join(WRITER_LOCK).exists());
        drop(first);
        rx.recv()
            .expect("the second writer gets the lock once released");
        waiter.join().expect("join");
        assert!(!tmp.path().join(WRITER_LOCK).exists());
    }
}
