//! `conv export` and `conv import`: a conversation as a plain Git repository, whatever the
//! backend. Objects are copied byte for byte, so ids do not change.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{anyhow, bail, Context as _, Result};
use gix_object::tree::EntryKind;
use swarm_api::commit::Commit;
use swarm_api::object::{Kind, Object, ObjectSource};
use swarm_api::storage::{HeadUpdate, Storage, StorageError};
use swarm_api::validate::Engine;
use swarm_api::{CommitId, ConversationId};
use swarm_git::{GitRepoReader, GitStorage};

/// Every object reachable from `head` (commits, trees, blobs), each once.
pub fn reachable_objects(src: &dyn ObjectSource, head: CommitId) -> Result<Vec<Object>> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    let mut commits = vec![head];
    while let Some(id) = commits.pop() {
        if !seen.insert(id.object_id()) {
            continue;
        }
        let obj = src.expect(&id.object_id(), Kind::Commit)?;
        let c = Commit::parse(id, &obj.data)?;
        out.push(obj);
        commits.extend(c.parents);
        let mut trees = vec![c.tree];
        while let Some(t) = trees.pop() {
            if !seen.insert(t) {
                continue;
            }
            let obj = src.expect(&t, Kind::Tree)?;
            let tree = gix_object::TreeRef::from_bytes(&obj.data, gix_hash::Kind::Sha1)
                .map_err(|e| anyhow!("tree {t} is malformed: {e}"))?;
            for e in tree.entries {
                let oid = e.oid.to_owned();
                match e.mode.kind() {
                    EntryKind::Tree => trees.push(oid),
                    EntryKind::Blob => {
                        if seen.insert(oid) {
                            out.push(src.expect(&oid, Kind::Blob)?);
                        }
                    }
                    other => bail!("tree {t} has an entry of unsupported mode {other:?}"),
                }
            }
            out.push(obj);
        }
    }
    Ok(out)
}

/// Writes conversation `conv` of `storage` as a bare Git repository at `dir` (which must not
/// exist or be empty). Returns the number of objects written.
pub fn export(storage: &dyn Storage, conv: ConversationId, dir: &Path) -> Result<usize> {
    let head = storage
        .head(&conv)?
        .ok_or_else(|| anyhow!("unknown conversation {conv} (see `swarm-chat conv list`)"))?;
    if dir.exists() && fs_err(dir.read_dir(), dir)?.next().is_some() {
        bail!("{} exists and is not empty", dir.display());
    }
    let objects = reachable_objects(
        &swarm_api::storage::ConversationObjects { storage, conv },
        head,
    )?;
    // Assemble the repository next to its destination, then move it there in one rename.
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::env::current_dir()?,
    };
    std::fs::create_dir_all(&parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(".swarm-export-")
        .tempdir_in(&parent)
        .with_context(|| format!("cannot create a directory in {}", parent.display()))?;
    let git = GitStorage::open(tmp.path())?;
    git.write(
        &conv,
        &objects,
        HeadUpdate {
            expected: None,
            new: head,
        },
    )?;
    let built = git
        .location(&conv)
        .ok_or_else(|| anyhow!("the exported repository was not created"))?;
    if dir.exists() {
        std::fs::remove_dir(dir).with_context(|| format!("cannot replace {}", dir.display()))?;
    }
    std::fs::rename(&built, dir)
        .with_context(|| format!("cannot move the repository to {}", dir.display()))?;
    Ok(objects.len())
}

fn fs_err<T>(r: std::io::Result<T>, p: &Path) -> Result<T> {
    r.with_context(|| format!("cannot read {}", p.display()))
}

/// What an import did.
pub enum Imported {
    /// The conversation was stored.
    New {
        conv: ConversationId,
        head: CommitId,
        commits: usize,
        objects: usize,
    },
    /// The conversation was already stored with the same head.
    AlreadyThere {
        conv: ConversationId,
        head: CommitId,
    },
}

/// Imports the Git repository at `dir` into `storage`, after validating the whole history
/// from its initial commit. Nothing is stored if one commit is refused.
pub fn import(storage: &dyn Storage, engine: &Engine, dir: &Path) -> Result<Imported> {
    let reader = GitRepoReader::open(dir)
        .with_context(|| format!("cannot open a Git repository at {}", dir.display()))?;
    let head = reader.head()?;
    let conv = ConversationId(reader.root(10_000_000)?);
    let validated = engine.verify(conv, &reader, head).map_err(|r| {
        anyhow!(
            "not imported: commit {} refused by rule {}: {}",
            r.commit,
            r.violation.rule(),
            r.violation
        )
    })?;
    let objects = reachable_objects(&reader, head)?;
    match storage.write(
        &conv,
        &objects,
        HeadUpdate {
            expected: None,
            new: head,
        },
    ) {
        Ok(()) => Ok(Imported::New {
            conv,
            head,
            commits: validated.commits().len(),
            objects: objects.len(),
        }),
        Err(StorageError::AlreadyExists(_)) => {
            let stored = storage.head(&conv)?;
            if stored == Some(head) {
                Ok(Imported::AlreadyThere { conv, head })
            } else {
                bail!(
                    "conversation {conv} is already stored here with another head ({}); \
                     merging two histories is the job of sync, not import",
                    stored.map(|h| h.to_string()).unwrap_or_default()
                )
            }
        }
        Err(e) => Err(e.into()),
    }
}
