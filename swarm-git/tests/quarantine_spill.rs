//! A quarantine past its memory budget spills to disk: the memory it holds stays under the
//! budget, its objects read back equal, a promotion streams them into one pack that stock git
//! accepts, and nothing of the spill is left once the area is promoted or dropped.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use swarm_api::body::{Body, Mode};
use swarm_api::layout;
use swarm_api::object::{Object, ObjectError, ObjectSource};
use swarm_api::repo::{create_conversation, FileChange, Repo};
use swarm_api::storage::{
    ConversationObjects, HeadUpdate, MemoryStorage, Promotion, QuarantineId, Storage, StorageError,
};
use swarm_api::testing::{promote_validated, reachable_objects, Person, T};
use swarm_api::{CommitId, ConversationId};
use swarm_git::GitStorage;

const BUDGET: usize = 64 * 1024;
/// Profile updates, each with a photo of [`PHOTO`] bytes: 4 MiB of blobs.
const UPDATES: usize = 8;
const PHOTO: usize = 512 * 1024;

use common::git;

/// A vCard whose photo is `PHOTO` bytes of pseudo-random hex (seeded by `n`).
fn vcard(n: u64) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ (n + 1);
    let mut photo = String::with_capacity(PHOTO);
    while photo.len() < PHOTO {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        photo.push_str(&format!("{x:016x}"));
    }
    format!("BEGIN:VCARD\nVERSION:3.0\nFN:Room {n}\nPHOTO;ENCODING=b:{photo}\nEND:VCARD\n")
        .into_bytes()
}

/// A conversation by `alice` in a scratch storage, then `UPDATES` profile updates (large
/// blobs) on top of it: the scratch storage, the conversation, and the updates' head.
fn history(alice: &Person) -> (MemoryStorage, ConversationId, CommitId) {
    let src = MemoryStorage::new();
    let conv =
        create_conversation(&src, &alice.signer(), Mode::InvitesOnly, None, T).expect("create");
    let repo = Repo::open(&src, conv).expect("open");
    let update = Body::parse(r#"{"type":"application/update-profile"}"#).expect("body");
    let mut head = conv.initial_commit();
    for n in 0..UPDATES {
        head = repo
            .append(
                &alice.signer(),
                &update,
                &[FileChange::Write(layout::PROFILE.into(), vcard(n as u64))],
                T + 1 + n as i64,
            )
            .expect("profile update");
    }
    (src, conv, head)
}

fn objects(src: &MemoryStorage, conv: ConversationId, head: CommitId) -> Vec<Object> {
    reachable_objects(&ConversationObjects { storage: src, conv }, head).expect("walk")
}

/// This process's spill directories under `root`.
fn spills(root: &Path) -> Vec<PathBuf> {
    let dir = root
        .join(".quarantine")
        .join(std::process::id().to_string());
    match std::fs::read_dir(dir) {
        Ok(d) => d.flatten().map(|e| e.path()).collect(),
        Err(_) => Vec::new(),
    }
}

/// Bytes of the files under `dir`.
fn size(dir: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let p = e.path();
        total += if p.is_dir() {
            size(&p)
        } else {
            p.metadata().expect("metadata").len()
        };
    }
    total
}

fn pack_count(repo: &Path) -> usize {
    std::fs::read_dir(repo.join("objects/pack"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "pack"))
                .count()
        })
        .unwrap_or(0)
}

fn loose_count(repo: &Path) -> usize {
    std::fs::read_dir(repo.join("objects"))
        .expect("objects")
        .flatten()
        .filter(|e| e.file_name().len() == 2)
        .map(|e| std::fs::read_dir(e.path()).expect("fan-out").count())
        .sum()
}

fn no_keep_file(repo: &Path) -> bool {
    std::fs::read_dir(repo.join("objects/pack"))
        .map(|d| {
            d.flatten()
                .all(|e| e.path().extension().is_none_or(|x| x != "keep"))
        })
        .unwrap_or(true)
}

#[test]
fn a_quarantine_past_its_budget_spills_and_promotes_as_a_streamed_pack() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = GitStorage::open(dir.path())
        .expect("open")
        .with_quarantine_memory(BUDGET);
    let alice = Person::new("Alice");
    let (src, conv, head) = history(&alice);
    let all = objects(&src, conv, head);
    let data: usize = all.iter().map(|o| o.data.len()).sum();
    assert!(data >= UPDATES * PHOTO, "{data} bytes of objects");

    let q = storage.quarantine_open(&conv).expect("open quarantine");
    let area = q.clone_id();
    for chunk in all.chunks(5) {
        storage.quarantine_put(&q, chunk).expect("put");
        assert!(storage.quarantine_memory_bytes() <= BUDGET);
    }
    // Putting the same objects again holds nothing more.
    storage.quarantine_put(&q, &all).expect("put again");
    let held = storage.quarantine_memory_bytes();
    assert!(held <= BUDGET, "{held} bytes in memory");
    assert!(held > 0, "small objects stay in memory");
    let spilled = spills(dir.path());
    assert_eq!(spilled.len(), 1, "one spill directory for the area");
    let on_disk = size(&spilled[0]);
    assert!(
        on_disk as usize >= data - BUDGET,
        "{on_disk} bytes spilled of {data}"
    );
    for o in &all {
        assert_eq!(
            storage
                .quarantine_object(&area, &o.id())
                .expect("read back"),
            Some(o.clone())
        );
    }

    promote_validated(
        &storage,
        q,
        HeadUpdate {
            expected: None,
            new: head,
        },
    )
    .expect("promote");
    assert_eq!(storage.head(&conv).expect("head"), Some(head));
    let path = storage.location(&conv).expect("stored");
    // Fewer objects than PACK_THRESHOLD, yet one pack: streamed from the spill.
    assert!(all.len() < swarm_git::PACK_THRESHOLD);
    assert_eq!(pack_count(&path), 1);
    assert_eq!(loose_count(&path), 0);
    assert!(no_keep_file(&path));
    git(&path, &["fsck", "--strict", "--no-dangling"]);
    let photo = all
        .iter()
        .find(|o| o.data.len() > BUDGET)
        .expect("a spilled blob");
    let hex = photo.id().to_string();
    assert_eq!(git(&path, &["cat-file", "blob", &hex]), photo.data);
    for o in &all {
        assert_eq!(
            storage.object(&conv, &o.id()).expect("read").as_ref(),
            Some(o)
        );
    }
    Repo::open(&storage, conv)
        .expect("open")
        .verify()
        .expect("the promoted history validates");
    assert!(
        spills(dir.path()).is_empty(),
        "the spill went with the area"
    );
    assert_eq!(storage.quarantine_memory_bytes(), 0);
    assert_eq!(storage.open_quarantines(), 0);

    // A spilled area whose file is corrupted reads as an error, never as another object;
    // dropping it removes its spill.
    let q = storage.quarantine_open(&conv).expect("open quarantine");
    let area = q.clone_id();
    storage.quarantine_put(&q, &all).expect("put");
    assert!(storage.quarantine_memory_bytes() <= BUDGET);
    let spilled = spills(dir.path());
    assert_eq!(spilled.len(), 1);
    let file = std::fs::read_dir(&spilled[0])
        .expect("spill")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_file())
        .expect("the spill file");
    let mut bytes = std::fs::read(&file).expect("read spill");
    let needle = &photo.data[..64];
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the photo is in the spill file");
    bytes[at] ^= 1;
    std::fs::write(&file, bytes).expect("corrupt spill");
    assert!(storage.quarantine_object(&area, &photo.id()).is_err());
    storage.quarantine_drop(q).expect("drop");
    assert!(
        spills(dir.path()).is_empty(),
        "the spill went with the area"
    );
    assert_eq!(storage.quarantine_memory_bytes(), 0);
}

/// The objects of a quarantine area over those of its conversation, as a sync validates them.
struct View<'a> {
    storage: &'a GitStorage,
    q: &'a QuarantineId,
}

impl ObjectSource for View<'_> {
    fn object(&self, id: &gix::ObjectId) -> Result<Option<Object>, ObjectError> {
        match self.storage.quarantine_object(self.q, id)? {
            Some(o) => Ok(Some(o)),
            None => Ok(self.storage.object(&self.q.conv, id)?),
        }
    }
}

#[test]
fn a_spilled_area_survives_a_failed_promotion_and_promotes_on_retry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = GitStorage::open(dir.path())
        .expect("open")
        .with_quarantine_memory(BUDGET);
    let alice = Person::new("Alice");
    let (src, conv, received) = history(&alice);
    let base = conv.initial_commit();
    storage
        .write(
            &conv,
            &objects(&src, conv, base),
            HeadUpdate {
                expected: None,
                new: base,
            },
        )
        .expect("the conversation as it was");
    let all = objects(&src, conv, received);
    let q = storage.quarantine_open(&conv).expect("open quarantine");
    let area = q.clone_id();
    storage.quarantine_put(&q, &all).expect("put");
    assert!(storage.quarantine_memory_bytes() <= BUDGET);
    assert_eq!(spills(dir.path()).len(), 1, "the area spilled");

    // Meanwhile the local device commits.
    let repo = Repo::open(&storage, conv).expect("open");
    let local = repo
        .append(&alice.signer(), &Body::text("local"), &[], T + 100)
        .expect("local commit");
    match promote_validated(
        &storage,
        q,
        HeadUpdate {
            expected: Some(base),
            new: received,
        },
    ) {
        Err(StorageError::HeadMoved { found, .. }) => assert_eq!(found, Some(local)),
        other => panic!("expected HeadMoved, got {other:?}"),
    }
    assert_eq!(storage.head(&conv).expect("head"), Some(local));
    assert_eq!(
        storage.object(&conv, &received.object_id()).expect("read"),
        None
    );
    // The area is whole, spill included.
    assert_eq!(spills(dir.path()).len(), 1);
    for o in &all {
        assert_eq!(
            storage
                .quarantine_object(&area, &o.id())
                .expect("read back"),
            Some(o.clone())
        );
    }

    // The retry stores the received branch beside the local commit (a merge would follow).
    let view = View {
        storage: &storage,
        q: &area,
    };
    let stored = |id: &CommitId| matches!(storage.object(&conv, &id.object_id()), Ok(Some(_)));
    let validated = swarm_api::validate::Engine::default()
        .validate_branch(conv, &view, &stored, &[received])
        .expect("the received branch validates");
    let promotion = Promotion::of(
        &[&validated],
        &storage,
        &area,
        HeadUpdate {
            expected: Some(local),
            new: local,
        },
    )
    .expect("promotion");
    storage
        .quarantine_promote(area, &promotion)
        .expect("the retry promotes");
    assert_eq!(storage.head(&conv).expect("head"), Some(local));
    for o in &all {
        assert_eq!(
            storage.object(&conv, &o.id()).expect("read").as_ref(),
            Some(o)
        );
    }
    let path = storage.location(&conv).expect("stored");
    assert_eq!(pack_count(&path), 1);
    assert!(no_keep_file(&path));
    git(&path, &["fsck", "--strict"]);
    assert!(
        spills(dir.path()).is_empty(),
        "the spill went with the area"
    );
    assert_eq!(storage.quarantine_memory_bytes(), 0);
    assert_eq!(storage.open_quarantines(), 0);
}

/// Opening a storage removes the spills of dead processes (and of an earlier process that had
/// this PID), never those of a storage of this process open on the same root.
#[test]
fn open_removes_dead_spills_but_not_live_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let quarantine = dir.path().join(".quarantine");
    let mut child = Command::new("true").spawn().expect("spawn");
    let dead = child.id();
    child.wait().expect("wait");
    let left = [
        quarantine.join(dead.to_string()).join("0"),
        quarantine.join(std::process::id().to_string()).join("0"),
    ];
    for d in &left {
        std::fs::create_dir_all(d).expect("a spill left behind");
    }
    let first = GitStorage::open(dir.path())
        .expect("open")
        .with_quarantine_memory(0);
    for d in &left {
        assert!(!d.exists(), "{} is removed", d.display());
    }
    let alice = Person::new("Alice");
    let (src, conv, head) = history(&alice);
    let all = objects(&src, conv, head);
    let q = first.quarantine_open(&conv).expect("open quarantine");
    first.quarantine_put(&q, &all).expect("put");
    let live = spills(dir.path());
    assert_eq!(live.len(), 1);
    let second = GitStorage::open(dir.path()).expect("open the same root again");
    assert!(live[0].exists(), "a live spill is kept");
    for o in &all {
        assert_eq!(
            first.quarantine_object(&q, &o.id()).expect("read back"),
            Some(o.clone())
        );
    }
    drop(second);
    drop(first);
    assert!(!live[0].exists(), "the storage's spills go with it");
}
