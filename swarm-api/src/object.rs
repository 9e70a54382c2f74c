//! Git objects: the unit every storage backend stores and every peer exchanges.
//!
//! Objects are encoded with gix-object, so ids are Git's (SHA-1) whatever the backend: a
//! sled peer and a Git peer compute the same ids. A conversation tree is handled here as a
//! flat map `path -> blob id` ([`Files`]); [`build_tree`] turns it into nested Git trees and
//! [`read_tree`] back.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;

use gix_hash::ObjectId;
use gix_object::{tree, WriteTo as _};

pub use gix_object::Kind;

/// Limits on what one walk of a tree ([`read_tree`], [`diff_trees`]) reads (git-bomb defence).
///
/// A walk counts what it does, not only what it finds: a tree made only of subtrees (24
/// entries per level pointing at the same subtree, 6 levels: seven objects) holds no file but
/// has 24⁶ paths. Every tree visited, revisits of the same tree id at another path included,
/// counts against `max_visits`, and every entry of it against `max_entries`; tree objects are
/// decoded once per walk (memoised by id), so a refused bomb costs at most a few objects read.
#[derive(Debug, Clone, Copy)]
pub struct TreeLimits {
    /// Maximum directory depth (the layout needs 5: `votes/ban/admins/<t>/<voter>`).
    pub max_depth: usize,
    /// Maximum number of files in one tree ([`read_tree`]) or changed files ([`diff_trees`]).
    pub max_files: usize,
    /// Maximum tree visits in one walk, each visit of a directory path counted (a valid tree
    /// has fewer directories than files: no directory is empty).
    pub max_visits: usize,
    /// Maximum tree entries read in one walk, summed over every visit (a diff reads both
    /// sides of a changed directory).
    pub max_entries: usize,
}

impl Default for TreeLimits {
    fn default() -> Self {
        Self {
            max_depth: 8,
            max_files: 100_000,
            max_visits: 200_000,
            max_entries: 400_000,
        }
    }
}

/// Which of the [`TreeLimits`] a walk exceeded, with its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TreeLimit {
    /// [`TreeLimits::max_depth`].
    #[error("deeper than {0} levels")]
    Depth(usize),
    /// [`TreeLimits::max_files`] in [`read_tree`].
    #[error("more than {0} files")]
    Files(usize),
    /// [`TreeLimits::max_files`] in [`diff_trees`].
    #[error("more than {0} changed files")]
    ChangedFiles(usize),
    /// [`TreeLimits::max_visits`].
    #[error("more than {0} tree visits")]
    Visits(usize),
    /// [`TreeLimits::max_entries`].
    #[error("more than {0} tree entries")]
    Entries(usize),
}

/// Errors reading objects.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ObjectError {
    /// An object the history refers to is not stored.
    #[error("object {0} is missing")]
    Missing(ObjectId),
    /// An object is not of the kind expected.
    #[error("object {id} is a {found}, expected a {expected}")]
    WrongKind {
        /// The object.
        id: ObjectId,
        /// Its kind.
        found: Kind,
        /// The kind required.
        expected: Kind,
    },
    /// An object does not decode.
    #[error("object {id} is malformed: {reason}")]
    Malformed {
        /// The object.
        id: ObjectId,
        /// Details.
        reason: String,
    },
    /// A tree exceeds [`TreeLimits`].
    #[error("tree {id} exceeds the limit: {limit}")]
    TooLarge {
        /// The root tree.
        id: ObjectId,
        /// Which limit.
        limit: TreeLimit,
    },
    /// A directory of the tree is an empty tree. A conversation tree holds files; Git never
    /// writes an empty directory and [`build_tree`] cannot, so an empty subtree is a path
    /// smuggled into the tree (a change no file diff would show).
    #[error("tree {id} has an empty directory {path:?}")]
    EmptyDirectory {
        /// The root tree.
        id: ObjectId,
        /// The directory, ending in `/`.
        path: String,
    },
    /// The storage backend failed.
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
}

/// One Git object: its kind and its encoded content (without the `kind size\0` header).
#[derive(Clone, PartialEq, Eq)]
pub struct Object {
    /// Blob, tree, commit or tag.
    pub kind: Kind,
    /// The encoded content.
    pub data: Vec<u8>,
}

impl std::fmt::Debug for Object {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Object({} {}, {} bytes)",
            self.kind,
            self.id(),
            self.data.len()
        )
    }
}

impl Object {
    /// A blob.
    pub fn blob(data: impl Into<Vec<u8>>) -> Self {
        Self {
            kind: Kind::Blob,
            data: data.into(),
        }
    }

    /// The object's Git id (SHA-1 of `kind size\0data`).
    pub fn id(&self) -> ObjectId {
        gix_object::compute_hash(gix_hash::Kind::Sha1, self.kind, &self.data)
            .unwrap_or_else(|_| gix_hash::ObjectId::null(gix_hash::Kind::Sha1))
    }
}

/// A conversation tree as a flat map from path (`admins/<uri>.crt`, ...) to blob id.
pub type Files = BTreeMap<String, ObjectId>;

/// Something that returns objects by id (a storage backend for one conversation, a
/// quarantine, an in-memory map in tests).
pub trait ObjectSource {
    /// The object, or `None` when it is not stored.
    fn object(&self, id: &ObjectId) -> Result<Option<Object>, ObjectError>;

    /// The object, which must exist and be of `kind`.
    fn expect(&self, id: &ObjectId, kind: Kind) -> Result<Object, ObjectError> {
        let obj = self.object(id)?.ok_or(ObjectError::Missing(*id))?;
        if obj.kind != kind {
            return Err(ObjectError::WrongKind {
                id: *id,
                found: obj.kind,
                expected: kind,
            });
        }
        Ok(obj)
    }
}

impl ObjectSource for BTreeMap<ObjectId, Object> {
    fn object(&self, id: &ObjectId) -> Result<Option<Object>, ObjectError> {
        Ok(self.get(id).cloned())
    }
}

/// Encodes `files` as nested Git trees. Returns the root tree id and the tree objects (blobs
/// are not included: the caller has them). Empty directories cannot exist.
pub fn build_tree(files: &Files) -> (ObjectId, Vec<Object>) {
    let mut out = Vec::new();
    let entries: Vec<(&str, &ObjectId)> = files.iter().map(|(p, id)| (p.as_str(), id)).collect();
    let root = build_dir(&entries, &mut out);
    (root, out)
}

fn build_dir(entries: &[(&str, &ObjectId)], out: &mut Vec<Object>) -> ObjectId {
    let mut tree = gix_object::Tree::empty();
    let mut i = 0;
    while i < entries.len() {
        let (path, id) = entries[i];
        match path.split_once('/') {
            None => {
                tree.entries.push(tree::Entry {
                    mode: tree::EntryKind::Blob.into(),
                    filename: path.into(),
                    oid: *id,
                });
                i += 1;
            }
            Some((dir, _)) => {
                // Strings sharing a prefix are contiguous in sorted order.
                let prefix = format!("{dir}/");
                let mut sub: Vec<(&str, &ObjectId)> = Vec::new();
                let mut j = i;
                while j < entries.len() && entries[j].0.starts_with(&prefix) {
                    sub.push((&entries[j].0[prefix.len()..], entries[j].1));
                    j += 1;
                }
                let sub_id = build_dir(&sub, out);
                tree.entries.push(tree::Entry {
                    mode: tree::EntryKind::Tree.into(),
                    filename: dir.into(),
                    oid: sub_id,
                });
                i = j;
            }
        }
    }
    tree.entries.sort();
    let mut data = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = tree.write_to(&mut data);
    let obj = Object {
        kind: Kind::Tree,
        data,
    };
    let id = obj.id();
    out.push(obj);
    id
}

/// Reads a tree recursively into a flat [`Files`] map, within `limits`. Only blobs and trees
/// are accepted (no symlinks, submodules or executables in a conversation), and no directory
/// may be empty ([`ObjectError::EmptyDirectory`]).
pub fn read_tree(
    src: &dyn ObjectSource,
    root: &ObjectId,
    limits: TreeLimits,
) -> Result<Files, ObjectError> {
    let mut files = Files::new();
    let mut walk = Walk::new(src, root, limits);
    walk.read_dir(root, "", 0, &mut files)?;
    Ok(files)
}

/// One walk of a tree: tree objects decoded once (memoised by id), every visit and every
/// entry counted against [`TreeLimits`].
struct Walk<'a> {
    src: &'a dyn ObjectSource,
    root: ObjectId,
    limits: TreeLimits,
    trees: HashMap<ObjectId, Rc<DirEntries>>,
    visits: usize,
    entries: usize,
}

impl<'a> Walk<'a> {
    fn new(src: &'a dyn ObjectSource, root: &ObjectId, limits: TreeLimits) -> Self {
        Self {
            src,
            root: *root,
            limits,
            trees: HashMap::new(),
            visits: 0,
            entries: 0,
        }
    }

    fn too_large(&self, limit: TreeLimit) -> ObjectError {
        ObjectError::TooLarge {
            id: self.root,
            limit,
        }
    }

    /// Visits the directory `prefix` (`""` for the root, else ending in `/`), tree `id`.
    fn visit(
        &mut self,
        id: &ObjectId,
        prefix: &str,
        depth: usize,
    ) -> Result<Rc<DirEntries>, ObjectError> {
        if depth >= self.limits.max_depth {
            return Err(self.too_large(TreeLimit::Depth(self.limits.max_depth)));
        }
        self.visits += 1;
        if self.visits > self.limits.max_visits {
            return Err(self.too_large(TreeLimit::Visits(self.limits.max_visits)));
        }
        let entries = match self.trees.get(id) {
            Some(e) => e.clone(),
            None => {
                let e = Rc::new(dir_entries(self.src, id)?);
                self.trees.insert(*id, e.clone());
                e
            }
        };
        self.entries += entries.len();
        if self.entries > self.limits.max_entries {
            return Err(self.too_large(TreeLimit::Entries(self.limits.max_entries)));
        }
        if entries.is_empty() && depth > 0 {
            return Err(ObjectError::EmptyDirectory {
                id: self.root,
                path: prefix.to_owned(),
            });
        }
        Ok(entries)
    }

    fn read_dir(
        &mut self,
        id: &ObjectId,
        prefix: &str,
        depth: usize,
        files: &mut Files,
    ) -> Result<(), ObjectError> {
        for (name, (is_tree, oid)) in self.visit(id, prefix, depth)?.iter() {
            let path = format!("{prefix}{name}");
            if *is_tree {
                self.read_dir(oid, &format!("{path}/"), depth + 1, files)?;
            } else {
                if files.len() >= self.limits.max_files {
                    return Err(self.too_large(TreeLimit::Files(self.limits.max_files)));
                }
                files.insert(path, *oid);
            }
        }
        Ok(())
    }

    fn diff_dir(
        &mut self,
        old: Option<&ObjectId>,
        new: Option<&ObjectId>,
        prefix: &str,
        depth: usize,
        out: &mut Vec<Delta>,
    ) -> Result<(), ObjectError> {
        let none = Rc::new(DirEntries::new());
        let old = match old {
            Some(id) => self.visit(id, prefix, depth)?,
            None => none.clone(),
        };
        let new = match new {
            Some(id) => self.visit(id, prefix, depth)?,
            None => none,
        };
        let names: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
        for name in names {
            let path = format!("{prefix}{name}");
            let (o, n) = (old.get(name), new.get(name));
            if o == n {
                continue;
            }
            let o_tree = o.filter(|(t, _)| *t).map(|(_, id)| id);
            let n_tree = n.filter(|(t, _)| *t).map(|(_, id)| id);
            let o_blob = o.filter(|(t, _)| !*t).map(|(_, id)| *id);
            let n_blob = n.filter(|(t, _)| !*t).map(|(_, id)| *id);
            if o_tree.is_some() || n_tree.is_some() {
                self.diff_dir(o_tree, n_tree, &format!("{path}/"), depth + 1, out)?;
            }
            if o_blob.is_some() || n_blob.is_some() {
                if out.len() >= self.limits.max_files {
                    return Err(self.too_large(TreeLimit::ChangedFiles(self.limits.max_files)));
                }
                out.push(Delta {
                    path,
                    old: o_blob,
                    new: n_blob,
                });
            }
        }
        Ok(())
    }
}

/// How a path changed between two trees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// The path is new.
    Added,
    /// The path's content changed.
    Modified,
    /// The path was removed.
    Deleted,
}

/// One changed path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Change {
    /// The path (layout form).
    pub path: String,
    /// What happened to it.
    pub kind: ChangeKind,
}

/// The paths that differ between `old` and `new`, sorted by path.
pub fn diff(old: &Files, new: &Files) -> Vec<Change> {
    let mut out = Vec::new();
    for (path, id) in new {
        match old.get(path) {
            None => out.push(Change {
                path: path.clone(),
                kind: ChangeKind::Added,
            }),
            Some(o) if o != id => out.push(Change {
                path: path.clone(),
                kind: ChangeKind::Modified,
            }),
            Some(_) => {}
        }
    }
    for path in old.keys() {
        if !new.contains_key(path) {
            out.push(Change {
                path: path.clone(),
                kind: ChangeKind::Deleted,
            });
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// One changed file between two trees, with both blob ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delta {
    /// The path.
    pub path: String,
    /// The blob before (`None`: added).
    pub old: Option<ObjectId>,
    /// The blob after (`None`: deleted).
    pub new: Option<ObjectId>,
}

impl Delta {
    /// Added, modified or deleted.
    pub fn kind(&self) -> ChangeKind {
        match (self.old, self.new) {
            (None, _) => ChangeKind::Added,
            (Some(_), Some(_)) => ChangeKind::Modified,
            (Some(_), None) => ChangeKind::Deleted,
        }
    }
}

/// Compares two trees recursively, skipping identical subtrees (so the cost is proportional
/// to what changed, not to the size of the tree), within `limits` (`max_files` counts the
/// changed files). An empty directory on either side is refused
/// ([`ObjectError::EmptyDirectory`]): it is a change that no file delta would show.
pub fn diff_trees(
    src: &dyn ObjectSource,
    old: &ObjectId,
    new: &ObjectId,
    limits: TreeLimits,
) -> Result<Vec<Delta>, ObjectError> {
    let mut out = Vec::new();
    if old != new {
        Walk::new(src, new, limits).diff_dir(Some(old), Some(new), "", 0, &mut out)?;
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// The entries of one tree: name → (is a tree, id). Only trees and plain blobs are
/// accepted (no symlinks, submodules or executables in a conversation); names are UTF-8,
/// non-empty, without `/`, never `.` or `..`, and unique.
pub type DirEntries = BTreeMap<String, (bool, ObjectId)>;

/// Reads one tree object into [`DirEntries`].
pub fn dir_entries(src: &dyn ObjectSource, id: &ObjectId) -> Result<DirEntries, ObjectError> {
    let obj = src.expect(id, Kind::Tree)?;
    let tree = gix_object::TreeRef::from_bytes(&obj.data, gix_hash::Kind::Sha1).map_err(|e| {
        ObjectError::Malformed {
            id: *id,
            reason: e.to_string(),
        }
    })?;
    let mut out = DirEntries::new();
    for entry in tree.entries {
        let name = std::str::from_utf8(entry.filename).map_err(|_| ObjectError::Malformed {
            id: *id,
            reason: "file name is not UTF-8".into(),
        })?;
        if name.is_empty() || name == "." || name == ".." || name.contains('/') {
            return Err(ObjectError::Malformed {
                id: *id,
                reason: format!("invalid file name {name:?}"),
            });
        }
        let is_tree = match entry.mode.kind() {
            tree::EntryKind::Tree => true,
            tree::EntryKind::Blob => false,
            other => {
                return Err(ObjectError::Malformed {
                    id: *id,
                    reason: format!("{name:?} has unsupported mode {other:?}"),
                })
            }
        };
        if out
            .insert(name.to_owned(), (is_tree, entry.oid.to_owned()))
            .is_some()
        {
            return Err(ObjectError::Malformed {
                id: *id,
                reason: format!("duplicate entry {name:?}"),
            });
        }
    }
    Ok(out)
}

/// Applies deltas to a file map.
pub fn apply(files: &Files, deltas: &[Delta]) -> Files {
    let mut out = files.clone();
    for d in deltas {
        match d.new {
            Some(id) => {
                out.insert(d.path.clone(), id);
            }
            None => {
                out.remove(&d.path);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_round_trip_and_git_ids() {
        let empty = Object::blob(Vec::new());
        // The well-known id of the empty blob.
        assert_eq!(
            empty.id().to_string(),
            "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
        );
        let a = Object::blob(b"a".to_vec());
        let mut files = Files::new();
        files.insert("admins/x.crt".into(), a.id());
        files.insert("admins-b".into(), empty.id());
        files.insert("votes/ban/members/t/v".into(), empty.id());
        files.insert("profile.vcf".into(), a.id());
        let (root, trees) = build_tree(&files);
        let (a_id, empty_id) = (a.id(), empty.id());
        let mut store: BTreeMap<ObjectId, Object> =
            trees.into_iter().map(|o| (o.id(), o)).collect();
        store.insert(a.id(), a);
        store.insert(empty.id(), empty);
        assert_eq!(
            read_tree(&store, &root, TreeLimits::default()).unwrap(),
            files
        );
        let shallow = TreeLimits {
            max_depth: 3,
            max_files: 10,
            ..TreeLimits::default()
        };
        assert!(matches!(
            read_tree(&store, &root, shallow),
            Err(ObjectError::TooLarge { .. })
        ));
        assert!(matches!(
            read_tree(&BTreeMap::new(), &root, TreeLimits::default()),
            Err(ObjectError::Missing(_))
        ));

        // diff_trees agrees with diff of the flattened maps, and apply() inverts it.
        let mut files2 = files.clone();
        files2.remove("admins/x.crt");
        files2.insert("votes/ban/members/t/w".into(), a_id);
        files2.insert("profile.vcf".into(), empty_id);
        let (root2, trees2) = build_tree(&files2);
        store.extend(trees2.into_iter().map(|o| (o.id(), o)));
        let deltas = diff_trees(&store, &root, &root2, TreeLimits::default()).unwrap();
        let kinds: Vec<(String, ChangeKind)> =
            deltas.iter().map(|d| (d.path.clone(), d.kind())).collect();
        let expected: Vec<(String, ChangeKind)> = diff(&files, &files2)
            .into_iter()
            .map(|c| (c.path, c.kind))
            .collect();
        assert_eq!(kinds, expected);
        assert_eq!(apply(&files, &deltas), files2);
        assert!(diff_trees(&store, &root, &root, TreeLimits::default())
            .unwrap()
            .is_empty());
    }

    #[test]
    fn diff_lists_changes() {
        let x = Object::blob(b"x".to_vec()).id();
        let y = Object::blob(b"y".to_vec()).id();
        let old: Files = [("a".to_string(), x), ("b".to_string(), x)].into();
        let new: Files = [("b".to_string(), y), ("c".to_string(), x)].into();
        let d = diff(&old, &new);
        assert_eq!(
            d,
            vec![
                Change {
                    path: "a".into(),
                    kind: ChangeKind::Deleted
                },
                Change {
                    path: "b".into(),
                    kind: ChangeKind::Modified
                },
                Change {
                    path: "c".into(),
                    kind: ChangeKind::Added
                },
            ]
        );
    }
}
