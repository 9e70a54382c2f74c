//! # swarm-sled: many conversations in one sled database
//!
//! [`SledStorage`] implements [`swarm_api::Storage`] over one [sled](https://docs.rs/sled/0.34)
//! database. It stores the same Git objects as `swarm-git` (encoded by the core with
//! gix-object), so commit and conversation ids are identical whichever backend a peer runs,
//! and a conversation can be exported to a Git repository byte for byte.
//!
//! ## Layout
//! Four sled trees, all keys fixed-width binary:
//!
//! | tree | key | value |
//! |---|---|---|
//! | `heads` | conversation id (20 bytes) | head commit id (20 bytes) |
//! | `objects` | conversation id (20) ‖ object id (20) | kind byte ‖ encoded object |
//! | `quarantine-areas` | area number (8, big-endian) | conversation id (20) |
//! | `quarantine` | area number (8) ‖ object id (20) | kind byte ‖ encoded object |
//!
//! Objects are keyed per conversation: [`Storage::object`] answers only for objects the
//! conversation stores, as the trait requires, and a conversation's objects are one
//! contiguous key range.
//!
//! ## Atomicity and durability
//! [`Storage::write`] and [`Storage::quarantine_promote`] are one sled transaction across the
//! trees (compare-and-swap of the head, the objects, the removal of the quarantine area),
//! followed by [`sled::Db::flush`] before they return: an acknowledged write survives a
//! crash, and a crash before the flush leaves either the old or the new state, never a head
//! without its objects. Quarantine areas are scratch space: they are not flushed, and
//! [`SledStorage::open`] deletes whatever a previous process left (sled's file lock makes
//! the opening process the only user of the database).
//!
//! ## Reading the last messages
//! Loading the last N messages of a long linear conversation needs N object reads from the
//! head (each a point lookup here). An index of the display order would make this exact for
//! DAGs with merges too, but the `Storage` trait has no way to ask a backend for one (yet).
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

use std::path::{Path, PathBuf};

use gix_hash::ObjectId;
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional as _};
use swarm_api::object::{Kind, Object};
use swarm_api::storage::{HeadUpdate, Promotion, QuarantineId, Storage, StorageError};
use swarm_api::{CommitId, ConversationId};

const BACKEND: &str = "sled";
const LOG: &str = "swarm_sled";

const HEADS: &str = "heads";
const OBJECTS: &str = "objects";
const AREAS: &str = "quarantine-areas";
const QUARANTINE: &str = "quarantine";

/// What can be wrong with the stored data itself (reported as [`StorageError::Backend`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CorruptionError {
    /// A stored value has no valid object kind byte.
    #[error("stored object {key} has an unknown kind byte {byte:?}")]
    Kind {
        /// The key, hex-encoded.
        key: String,
        /// The first byte of the value, if any.
        byte: Option<u8>,
    },
    /// A key or id has the wrong length.
    #[error("stored {what} has {len} bytes, expected {expected}")]
    Length {
        /// What was being read.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The length it must have.
        expected: usize,
    },
    /// A quarantine area does not exist (never opened, promoted or dropped).
    #[error("no quarantine area {0}")]
    NoQuarantine(u64),
    /// A quarantine area belongs to another conversation than the id claims.
    #[error("quarantine area {0} belongs to another conversation")]
    QuarantineMismatch(u64),
}

fn err(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> StorageError {
    StorageError::backend(BACKEND, e)
}

fn kind_byte(kind: Kind) -> u8 {
    match kind {
        Kind::Blob => b'b',
        Kind::Tree => b't',
        Kind::Commit => b'c',
        Kind::Tag => b'g',
    }
}

fn encode(obj: &Object) -> Vec<u8> {
    let mut v = Vec::with_capacity(obj.data.len() + 1);
    v.push(kind_byte(obj.kind));
    v.extend_from_slice(&obj.data);
    v
}

fn decode(key: &[u8], value: &[u8]) -> Result<Object, StorageError> {
    let kind = match value.first() {
        Some(b'b') => Kind::Blob,
        Some(b't') => Kind::Tree,
        Some(b'c') => Kind::Commit,
        Some(b'g') => Kind::Tag,
        byte => {
            return Err(err(CorruptionError::Kind {
                key: hex(key),
                byte: byte.copied(),
            }))
        }
    };
    Ok(Object {
        kind,
        data: value[1..].to_vec(),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn commit_from(bytes: &[u8], what: &'static str) -> Result<CommitId, StorageError> {
    <[u8; 20]>::try_from(bytes)
        .map(CommitId::from_bytes)
        .map_err(|_| {
            err(CorruptionError::Length {
                what,
                len: bytes.len(),
                expected: 20,
            })
        })
}

fn object_key(conv: &ConversationId, id: &gix_hash::oid) -> Vec<u8> {
    let mut k = Vec::with_capacity(40);
    k.extend_from_slice(conv.0.as_bytes());
    k.extend_from_slice(id.as_bytes());
    k
}

fn quarantine_key(area: u64, id: &gix_hash::oid) -> Vec<u8> {
    let mut k = Vec::with_capacity(28);
    k.extend_from_slice(&area.to_be_bytes());
    k.extend_from_slice(id.as_bytes());
    k
}

/// Errors inside a transaction: either the caller's (head moved, ...) or sled's.
fn tx_result<T>(r: Result<T, TransactionError<StorageError>>) -> Result<T, StorageError> {
    r.map_err(|e| match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => err(e),
    })
}

/// [`Storage`] over one sled database holding many conversations.
pub struct SledStorage {
    path: PathBuf,
    db: sled::Db,
    heads: sled::Tree,
    objects: sled::Tree,
    areas: sled::Tree,
    quarantine: sled::Tree,
}

impl std::fmt::Debug for SledStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStorage")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SledStorage {
    /// Opens (creating it if needed) the database at `path`, a directory.
    ///
    /// One process at a time: sled locks the database, and a second `open` of the same path
    /// (in this or another process) fails until the first storage is dropped.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, StorageError> {
        let path = path.into();
        let db = sled::Config::new().path(&path).open().map_err(|e| {
            err(format!(
                "cannot open the database at {}: {e}",
                path.display()
            ))
        })?;
        let tree = |name: &str| db.open_tree(name).map_err(err);
        let storage = Self {
            heads: tree(HEADS)?,
            objects: tree(OBJECTS)?,
            areas: tree(AREAS)?,
            quarantine: tree(QUARANTINE)?,
            db,
            path,
        };
        // Quarantine areas of a previous process are garbage: nothing refers to them, and
        // sled's lock guarantees that process is gone.
        if !storage.areas.is_empty() || !storage.quarantine.is_empty() {
            tracing::info!(target: LOG, areas = storage.areas.len(), "deleting quarantine areas left by a previous process");
            storage.areas.clear().map_err(err)?;
            storage.quarantine.clear().map_err(err)?;
            storage.flush()?;
        }
        tracing::debug!(target: LOG, path = %storage.path.display(), "opened");
        Ok(storage)
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many quarantine areas are open (neither promoted nor dropped).
    pub fn open_quarantines(&self) -> usize {
        self.areas.len()
    }

    /// The number of objects a conversation stores (a scan of its key range).
    pub fn object_count(&self, conv: &ConversationId) -> Result<usize, StorageError> {
        self.require(conv)?;
        let mut n = 0;
        for kv in self.objects.scan_prefix(conv.0.as_bytes()) {
            kv.map_err(err)?;
            n += 1;
        }
        Ok(n)
    }

    fn flush(&self) -> Result<(), StorageError> {
        self.db.flush().map(|_| ()).map_err(err)
    }

    fn require(&self, conv: &ConversationId) -> Result<(), StorageError> {
        if self.heads.contains_key(conv.0.as_bytes()).map_err(err)? {
            Ok(())
        } else {
            Err(StorageError::UnknownConversation(*conv))
        }
    }

    /// Checks that a quarantine area exists and belongs to `q.conv`.
    fn area(&self, q: &QuarantineId) -> Result<(), StorageError> {
        match self.areas.get(q.id.to_be_bytes()).map_err(err)? {
            None => Err(err(CorruptionError::NoQuarantine(q.id))),
            Some(c) if c.as_ref() == q.conv.0.as_bytes() => Ok(()),
            Some(_) => Err(err(CorruptionError::QuarantineMismatch(q.id))),
        }
    }

    /// The compare-and-swap of every head update, inside a transaction.
    fn check_head(
        heads: &sled::transaction::TransactionalTree,
        objects: &sled::transaction::TransactionalTree,
        conv: &ConversationId,
        update: HeadUpdate,
        new_is_written: bool,
    ) -> Result<(), ConflictableTransactionError<StorageError>> {
        let found = match heads.get(conv.0.as_bytes())? {
            Some(h) => Some(commit_from(&h, "head").map_err(ConflictableTransactionError::Abort)?),
            None => None,
        };
        match (update.expected, found) {
            (None, Some(_)) => {
                return Err(ConflictableTransactionError::Abort(
                    StorageError::AlreadyExists(*conv),
                ))
            }
            (Some(_), None) => {
                return Err(ConflictableTransactionError::Abort(
                    StorageError::UnknownConversation(*conv),
                ))
            }
            (Some(e), f) if f != Some(e) => {
                return Err(ConflictableTransactionError::Abort(
                    StorageError::HeadMoved {
                        conversation: *conv,
                        expected: Some(e),
                        found: f,
                    },
                ))
            }
            _ => {}
        }
        if !new_is_written
            && objects
                .get(object_key(conv, &update.new.object_id()))?
                .is_none()
        {
            return Err(ConflictableTransactionError::Abort(
                StorageError::DanglingHead(update.new),
            ));
        }
        Ok(())
    }
}

impl Storage for SledStorage {
    fn backend_name(&self) -> &'static str {
        BACKEND
    }

    fn conversations(&self) -> Result<Vec<ConversationId>, StorageError> {
        // Keys are raw ids, so sled's byte order is the id order.
        self.heads
            .iter()
            .keys()
            .map(|k| {
                let k = k.map_err(err)?;
                Ok(ConversationId(commit_from(&k, "conversation id")?))
            })
            .collect()
    }

    fn object(&self, conv: &ConversationId, id: &ObjectId) -> Result<Option<Object>, StorageError> {
        self.require(conv)?;
        let key = object_key(conv, id);
        match self.objects.get(&key).map_err(err)? {
            None => Ok(None),
            Some(v) => decode(&key, &v).map(Some),
        }
    }

    fn head(&self, conv: &ConversationId) -> Result<Option<CommitId>, StorageError> {
        match self.heads.get(conv.0.as_bytes()).map_err(err)? {
            None => Ok(None),
            Some(h) => commit_from(&h, "head").map(Some),
        }
    }

    fn write(
        &self,
        conv: &ConversationId,
        objects: &[Object],
        update: HeadUpdate,
    ) -> Result<(), StorageError> {
        let new = update.new.object_id();
        let mut encoded = Vec::with_capacity(objects.len());
        let mut new_is_written = false;
        for o in objects {
            let id = o.id();
            new_is_written |= id == new;
            encoded.push((object_key(conv, &id), encode(o)));
        }
        tx_result((&self.heads, &self.objects).transaction(|(heads, objs)| {
            Self::check_head(heads, objs, conv, update, new_is_written)?;
            for (k, v) in &encoded {
                // Objects are immutable: one already stored is left alone.
                if objs.get(k.as_slice())?.is_none() {
                    objs.insert(k.as_slice(), v.as_slice())?;
                }
            }
            heads.insert(conv.0.as_bytes(), update.new.as_bytes())?;
            Ok(())
        }))?;
        self.flush()?;
        tracing::debug!(target: LOG, %conv, head = %update.new, objects = objects.len(), "write");
        Ok(())
    }

    fn quarantine_open(&self, conv: &ConversationId) -> Result<QuarantineId, StorageError> {
        let id = self.db.generate_id().map_err(err)?;
        self.areas
            .insert(id.to_be_bytes(), conv.0.as_bytes())
            .map_err(err)?;
        tracing::debug!(target: LOG, %conv, area = id, "quarantine opened");
        Ok(QuarantineId { conv: *conv, id })
    }

    fn quarantine_put(&self, q: &QuarantineId, objects: &[Object]) -> Result<(), StorageError> {
        self.area(q)?;
        let mut batch = sled::Batch::default();
        for o in objects {
            batch.insert(quarantine_key(q.id, &o.id()), encode(o));
        }
        self.quarantine.apply_batch(batch).map_err(err)
    }

    fn quarantine_object(
        &self,
        q: &QuarantineId,
        id: &ObjectId,
    ) -> Result<Option<Object>, StorageError> {
        self.area(q)?;
        let key = quarantine_key(q.id, id);
        match self.quarantine.get(&key).map_err(err)? {
            None => Ok(None),
            Some(v) => decode(&key, &v).map(Some),
        }
    }

    fn quarantine_promote(
        &self,
        q: QuarantineId,
        promotion: &Promotion,
    ) -> Result<(), StorageError> {
        let update = promotion.update();
        self.area(&q)?;
        let prefix = q.id.to_be_bytes();
        let mut moved = Vec::new();
        let mut new_is_written = false;
        for kv in self.quarantine.scan_prefix(prefix) {
            let (k, v) = kv.map_err(err)?;
            let oid = gix_hash::oid::try_from_bytes(&k[prefix.len()..]).map_err(|_| {
                err(CorruptionError::Length {
                    what: "quarantine key",
                    len: k.len(),
                    expected: prefix.len() + 20,
                })
            })?;
            // Everything leaves the area; only what validation reached is stored.
            let key = promotion
                .contains(&oid.to_owned())
                .then(|| object_key(&q.conv, oid));
            new_is_written |= key.is_some() && oid == update.new.object_id();
            moved.push((k, key, v));
        }
        let count = moved.len();
        tx_result(
            (&self.heads, &self.objects, &self.quarantine, &self.areas).transaction(
                |(heads, objs, quarantine, areas)| {
                    Self::check_head(heads, objs, &q.conv, update, new_is_written)?;
                    for (qkey, key, value) in &moved {
                        if let Some(key) = key {
                            if objs.get(key.as_slice())?.is_none() {
                                objs.insert(key.as_slice(), value.clone())?;
                            }
                        }
                        quarantine.remove(qkey.clone())?;
                    }
                    areas.remove(&prefix)?;
                    heads.insert(q.conv.0.as_bytes(), update.new.as_bytes())?;
                    Ok(())
                },
            ),
        )?;
        self.flush()?;
        tracing::debug!(target: LOG, conv = %q.conv, area = q.id, head = %update.new, objects = count, "quarantine promoted");
        Ok(())
    }

    fn quarantine_drop(&self, q: QuarantineId) -> Result<(), StorageError> {
        let prefix = q.id.to_be_bytes();
        let mut batch = sled::Batch::default();
        for k in self.quarantine.scan_prefix(prefix).keys() {
            batch.remove(k.map_err(err)?);
        }
        self.quarantine.apply_batch(batch).map_err(err)?;
        self.areas.remove(prefix).map_err(err)?;
        tracing::debug!(target: LOG, conv = %q.conv, area = q.id, "quarantine dropped");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_with_an_unknown_kind_byte_is_an_error_not_a_panic() {
        assert!(decode(b"k", b"").is_err());
        assert!(decode(b"k", b"xdata").is_err());
        let o = decode(b"k", b"bdata").unwrap();
        assert_eq!(o, Object::blob(b"data".to_vec()));
    }

    #[test]
    fn a_head_of_the_wrong_length_is_an_error_not_a_panic() {
        assert!(commit_from(&[0; 19], "head").is_err());
        assert!(commit_from(&[0; 20], "head").is_ok());
    }

    #[test]
    fn every_kind_round_trips() {
        for kind in [Kind::Blob, Kind::Tree, Kind::Commit, Kind::Tag] {
            let o = Object {
                kind,
                data: vec![1, 2, 3],
            };
            assert_eq!(decode(b"k", &encode(&o)).unwrap(), o);
        }
    }
}
