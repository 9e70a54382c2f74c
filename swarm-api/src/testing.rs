//! Test helpers for this crate and for other crates (feature `testing`; never enable it in
//! production builds).
//!
//! # The storage conformance suite
//!
//! One set of generic tests that every [`Storage`] must pass: create, append, read, walk,
//! changed paths, the head compare-and-swap and its errors, creating again with the same
//! arguments at the same time, quarantine promote (onto an existing conversation and as a new
//! one) and drop, concurrent readers during writes, and reopening after close. `swarm-git`,
//! `swarm-sled` and [`MemoryStorage`] run it, and so can any **third-party backend**:
//! implement [`StorageFactory`] for it (or build one with [`factory`]) and expand
//! [`storage_conformance!`](crate::storage_conformance) in an integration test, with
//! `swarm-api = { features = ["testing"] }` as a dev-dependency:
//!
//! ```
//! // tests/conformance.rs of a backend crate
//! use std::sync::Arc;
//! use swarm_api::storage::MemoryStorage;
//! use swarm_api::testing::{factory, Shared};
//!
//! swarm_api::storage_conformance!(factory(
//!     // a fresh, empty place (for an on-disk backend: a temporary directory)
//!     || Arc::new(MemoryStorage::new()),
//!     // open (or reopen) the storage kept at a place
//!     |place: &Arc<MemoryStorage>| Ok(Shared(place.clone())),
//! ));
//! # fn main() {}
//! ```
//!
//! The macro makes one `#[test]` per check (named like the functions in [`checks`]), so a
//! failure names the broken rule and the checks run in parallel. [`conformance`] runs them
//! all in one call instead.
//!
//! The suite commits with real identities ([`Account`]) at a fixed time ([`T`]); it reads no
//! clock.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use gix_hash::ObjectId;
use rand_core::OsRng;

use crate::body::{Body, Mode};
use crate::commit::Commit;
use crate::id::{CommitId, ConversationId};
use crate::identity::{Account, Crl, Device};
use crate::object::{Kind, Object, ObjectError, ObjectSource};
use crate::storage::{HeadUpdate, MemoryStorage, Promotion, QuarantineId, Storage, StorageError};

/// The time (Unix seconds) at which the suite's identities are made and its commits signed.
pub const T: i64 = 1_800_000_000;

/// How the conformance suite gets storages: fresh places and (re)opening them.
///
/// A *place* is whatever identifies where a storage keeps its data (a temporary directory
/// for on-disk backends, kept alive by the place value itself). The suite opens a place,
/// drops the storage and opens the same place again to check that data survives.
pub trait StorageFactory {
    /// The storage under test.
    type Storage: Storage;
    /// Where a storage keeps its data.
    type Place;
    /// A new, empty place.
    fn place(&self) -> Self::Place;
    /// Opens the storage at `place` (created on first open, reopened afterwards).
    fn open(&self, place: &Self::Place) -> Result<Self::Storage, StorageError>;
}

/// A [`StorageFactory`] made of two closures; see [`factory`].
pub struct FnFactory<P, O> {
    place: P,
    open: O,
}

/// Builds a [`StorageFactory`] from `place` (a new empty place) and `open` (opens the storage
/// at a place).
pub fn factory<Pl, S, P, O>(place: P, open: O) -> FnFactory<P, O>
where
    S: Storage,
    P: Fn() -> Pl,
    O: Fn(&Pl) -> Result<S, StorageError>,
{
    FnFactory { place, open }
}

impl<Pl, S, P, O> StorageFactory for FnFactory<P, O>
where
    S: Storage,
    P: Fn() -> Pl,
    O: Fn(&Pl) -> Result<S, StorageError>,
{
    type Storage = S;
    type Place = Pl;
    fn place(&self) -> Pl {
        (self.place)()
    }
    fn open(&self, place: &Pl) -> Result<S, StorageError> {
        (self.open)(place)
    }
}

/// A shared handle to a storage that is itself a [`Storage`]: lets an in-memory storage be
/// "reopened" (a new handle to the same data) by the suite.
#[derive(Debug, Default)]
pub struct Shared<S: ?Sized>(pub Arc<S>);

impl<S: Storage + ?Sized> Storage for Shared<S> {
    fn backend_name(&self) -> &'static str {
        self.0.backend_name()
    }
    fn conversations(&self) -> Result<Vec<ConversationId>, StorageError> {
        self.0.conversations()
    }
    fn object(&self, conv: &ConversationId, id: &ObjectId) -> Result<Option<Object>, StorageError> {
        self.0.object(conv, id)
    }
    fn object_size(
        &self,
        conv: &ConversationId,
        id: &ObjectId,
    ) -> Result<Option<u64>, StorageError> {
        self.0.object_size(conv, id)
    }
    fn head(&self, conv: &ConversationId) -> Result<Option<CommitId>, StorageError> {
        self.0.head(conv)
    }
    fn write(
        &self,
        conv: &ConversationId,
        objects: &[Object],
        update: HeadUpdate,
    ) -> Result<(), StorageError> {
        self.0.write(conv, objects, update)
    }
    fn quarantine_open(&self, conv: &ConversationId) -> Result<QuarantineId, StorageError> {
        self.0.quarantine_open(conv)
    }
    fn quarantine_put(&self, q: &QuarantineId, objects: &[Object]) -> Result<(), StorageError> {
        self.0.quarantine_put(q, objects)
    }
    fn quarantine_object(
        &self,
        q: &QuarantineId,
        id: &ObjectId,
    ) -> Result<Option<Object>, StorageError> {
        self.0.quarantine_object(q, id)
    }
    fn quarantine_promote(
        &self,
        q: QuarantineId,
        promotion: &Promotion,
    ) -> Result<(), StorageError> {
        self.0.quarantine_promote(q, promotion)
    }
    fn quarantine_drop(&self, q: QuarantineId) -> Result<(), StorageError> {
        self.0.quarantine_drop(q)
    }
    fn location(&self, conv: &ConversationId) -> Option<std::path::PathBuf> {
        self.0.location(conv)
    }
}

/// The factory for [`MemoryStorage`]: a place is the shared in-memory data.
pub fn memory_factory() -> impl StorageFactory<Storage = Shared<MemoryStorage>> {
    factory(
        || Arc::new(MemoryStorage::new()),
        |place: &Arc<MemoryStorage>| Ok(Shared(place.clone())),
    )
}

/// A person for tests: an account with one device and its CRL, made at [`T`].
pub struct Person {
    /// The account.
    pub account: Account,
    /// Its device.
    pub device: Device,
    /// The account's CRL (revokes nothing).
    pub crl: Crl,
}

impl Person {
    /// A new account and device named `name`.
    pub fn new(name: &str) -> Self {
        let account = Account::generate(name, at(T), &mut OsRng).expect("a fresh identity");
        let device = account
            .new_device(at(T), &mut OsRng)
            .expect("a device certificate");
        let crl = account.crl(&[], 1, at(T)).expect("an empty CRL");
        Self {
            account,
            device,
            crl,
        }
    }

    /// Another device of the same account.
    pub fn other_device(&self) -> Device {
        self.account
            .new_device(at(T), &mut OsRng)
            .expect("a device certificate")
    }

    /// The signer for commits.
    pub fn signer(&self) -> crate::repo::Signer<'_> {
        crate::repo::Signer {
            account: self.account.cert(),
            device: &self.device,
            crl: &self.crl,
        }
    }
}

fn at(t: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(t).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// Every object reachable from `head` (commits, trees, blobs), each once, commits last-seen
/// first. Fails if one is missing.
pub fn reachable_objects(
    src: &dyn ObjectSource,
    head: CommitId,
) -> Result<Vec<Object>, ObjectError> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    let mut commits = vec![head];
    let mut trees = Vec::new();
    while let Some(id) = commits.pop() {
        if !seen.insert(id.object_id()) {
            continue;
        }
        let obj = src.expect(&id.object_id(), Kind::Commit)?;
        let c = Commit::parse(id, &obj.data).map_err(|e| ObjectError::Malformed {
            id: id.object_id(),
            reason: e.to_string(),
        })?;
        out.push(obj);
        commits.extend(c.parents);
        trees.push(c.tree);
        while let Some(t) = trees.pop() {
            if !seen.insert(t) {
                continue;
            }
            let obj = src.expect(&t, Kind::Tree)?;
            let tree =
                gix_object::TreeRef::from_bytes(&obj.data, gix_hash::Kind::Sha1).map_err(|e| {
                    ObjectError::Malformed {
                        id: t,
                        reason: e.to_string(),
                    }
                })?;
            for e in tree.entries {
                let oid = e.oid.to_owned();
                if e.mode.is_tree() {
                    trees.push(oid);
                } else if seen.insert(oid) {
                    out.push(src.expect(&oid, Kind::Blob)?);
                }
            }
            out.push(obj);
        }
    }
    Ok(out)
}

/// Runs every check of the suite, in order, on storages from `f`. Panics (with the check's
/// name) on the first failure.
pub fn conformance<F: StorageFactory>(f: &F) {
    for (name, check) in checks::all::<F>() {
        tracing::info!(target: "swarm_api::testing", check = name, "storage conformance");
        check(f);
    }
}

/// Expands to one `#[test]` per conformance check, each calling the check of
/// [`checks`](crate::testing::checks) with the factory expression (evaluated per test).
#[macro_export]
macro_rules! storage_conformance {
    ($factory:expr $(,)?) => {
        $crate::storage_conformance!(@each $factory;
            create_and_read,
            append_read_and_walk,
            changed_paths,
            objects_round_trip_byte_exact,
            objects_belong_to_their_conversation,
            storing_an_object_twice_is_a_no_op,
            head_moved_changes_nothing,
            already_exists_changes_nothing,
            creating_again_at_the_same_time_makes_a_new_conversation,
            dangling_head_changes_nothing,
            unknown_conversation,
            quarantine_promote_onto_existing_conversation,
            quarantine_promote_as_new_conversation,
            quarantine_promote_with_a_stale_head_changes_nothing,
            quarantine_promote_stores_only_what_validation_reached,
            quarantine_drop,
            concurrent_readers_during_writes,
            reopen_after_close,
        );
    };
    (@each $factory:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::testing::checks::$name(&$factory);
            }
        )*
    };
}

/// Validates the branch of quarantine `q` ending at `update.new` (over the stored
/// conversation) and promotes what it reaches, as a sync does; panics if it is refused.
pub fn promote_validated(
    storage: &dyn Storage,
    q: QuarantineId,
    update: HeadUpdate,
) -> Result<(), StorageError> {
    let promotion = validated_promotion(storage, &q, update);
    storage.quarantine_promote(q, &promotion)
}

/// The [`Promotion`] of quarantine `q` to `update` after validating its branch.
pub fn validated_promotion(
    storage: &dyn Storage,
    q: &QuarantineId,
    update: HeadUpdate,
) -> Promotion {
    let view = crate::sync::QuarantineView::new(storage, q);
    let head = update.expected;
    let stored = |id: &CommitId| {
        head.is_some() && matches!(storage.object(&q.conv, &id.object_id()), Ok(Some(_)))
    };
    let validated = crate::validate::Engine::default()
        .validate_branch(q.conv, &view, &stored, &[update.new])
        .expect("the quarantined branch validates");
    Promotion::of(&[&validated], storage, q, update).expect("a promotion")
}

/// The checks of the conformance suite, one function each (see the module documentation).
pub mod checks {
    use super::*;
    use crate::object::ChangeKind;
    use crate::repo::{create_conversation, Draft, Repo, Signer};

    /// A check of the suite.
    pub type Check<F> = fn(&F);

    /// Every check with its name, in suite order.
    pub fn all<F: StorageFactory>() -> Vec<(&'static str, Check<F>)> {
        vec![
            ("create_and_read", create_and_read::<F>),
            ("append_read_and_walk", append_read_and_walk::<F>),
            ("changed_paths", changed_paths::<F>),
            (
                "objects_round_trip_byte_exact",
                objects_round_trip_byte_exact::<F>,
            ),
            (
                "objects_belong_to_their_conversation",
                objects_belong_to_their_conversation::<F>,
            ),
            (
                "storing_an_object_twice_is_a_no_op",
                storing_an_object_twice_is_a_no_op::<F>,
            ),
            (
                "head_moved_changes_nothing",
                head_moved_changes_nothing::<F>,
            ),
            (
                "already_exists_changes_nothing",
                already_exists_changes_nothing::<F>,
            ),
            (
                "creating_again_at_the_same_time_makes_a_new_conversation",
                creating_again_at_the_same_time_makes_a_new_conversation::<F>,
            ),
            (
                "dangling_head_changes_nothing",
                dangling_head_changes_nothing::<F>,
            ),
            ("unknown_conversation", unknown_conversation::<F>),
            (
                "quarantine_promote_onto_existing_conversation",
                quarantine_promote_onto_existing_conversation::<F>,
            ),
            (
                "quarantine_promote_as_new_conversation",
                quarantine_promote_as_new_conversation::<F>,
            ),
            (
                "quarantine_promote_with_a_stale_head_changes_nothing",
                quarantine_promote_with_a_stale_head_changes_nothing::<F>,
            ),
            (
                "quarantine_promote_stores_only_what_validation_reached",
                quarantine_promote_stores_only_what_validation_reached::<F>,
            ),
            ("quarantine_drop", quarantine_drop::<F>),
            (
                "concurrent_readers_during_writes",
                concurrent_readers_during_writes::<F>,
            ),
            ("reopen_after_close", reopen_after_close::<F>),
        ]
    }

    fn open<F: StorageFactory>(f: &F, place: &F::Place) -> F::Storage {
        match f.open(place) {
            Ok(s) => s,
            Err(e) => panic!("the factory cannot open its storage: {e}"),
        }
    }

    fn create(storage: &dyn Storage, signer: &Signer<'_>) -> ConversationId {
        create_conversation(storage, signer, Mode::InvitesOnly, None, T).expect("create")
    }

    fn append(repo: &Repo<'_>, p: &Person, text: &str, n: i64) -> CommitId {
        repo.append(&p.signer(), &Body::text(text), &[], T + n)
            .expect("append")
    }

    /// A text commit by `p` on `parent`, signed at `T + n`, not stored.
    fn draft(repo: &Repo<'_>, p: &Person, parent: CommitId, text: &str, n: i64) -> Draft {
        repo.draft(
            &p.signer(),
            &[parent],
            &Body::text(text).to_message(),
            &[],
            true,
            T + n,
        )
        .expect("draft")
    }

    fn texts(repo: &Repo<'_>) -> Vec<String> {
        repo.history()
            .expect("history")
            .into_iter()
            .skip(1)
            .map(|c| match Body::parse(&c.message) {
                Ok(Body::Text(t)) => t.body,
                _ => c.message,
            })
            .collect()
    }

    fn commit_obj(storage: &dyn Storage, conv: &ConversationId, id: &CommitId) -> Option<Object> {
        storage.object(conv, &id.object_id()).expect("object")
    }

    fn not_readable(r: Result<Option<Object>, StorageError>) -> bool {
        !matches!(r, Ok(Some(_)))
    }

    /// A new conversation: its id is its initial commit and its head; it is listed; its
    /// initial commit is readable, hashes to its id and verifies.
    pub fn create_and_read<F: StorageFactory>(f: &F) {
        let place = f.place();
        let storage = open(f, &place);
        assert!(!storage.backend_name().is_empty());
        assert_eq!(storage.conversations().expect("list"), vec![]);
        let alice = Person::new("Alice");
        let a = create(&storage, &alice.signer());
        let b = create_conversation(&storage, &alice.signer(), Mode::Public, None, T + 1)
            .expect("create");
        assert_ne!(a, b);
        let mut expected = vec![a, b];
        expected.sort();
        assert_eq!(
            storage.conversations().expect("list"),
            expected,
            "sorted by id"
        );
        assert_eq!(storage.head(&a).expect("head"), Some(a.initial_commit()));
        let obj = commit_obj(&storage, &a, &a.initial_commit()).expect("initial commit stored");
        assert_eq!(obj.kind, Kind::Commit);
        assert_eq!(obj.id(), a.initial_commit().object_id());
        let repo = Repo::open(&storage, a).expect("open");
        assert_eq!(repo.head().expect("head"), a.initial_commit());
        assert_eq!(repo.history().expect("history").len(), 1);
        repo.verify().expect("the new conversation verifies");
        let missing = Object::blob(b"never stored".to_vec()).id();
        assert_eq!(storage.object(&a, &missing).expect("read"), None);
    }

    /// Appended messages are read back in display order, the head follows, and the whole
    /// conversation verifies.
    pub fn append_read_and_walk<F: StorageFactory>(f: &F) {
        let place = f.place();
        let storage = open(f, &place);
        let alice = Person::new("Alice");
        let conv = create(&storage, &alice.signer());
        let repo = Repo::open(&storage, conv).expect("open");
        let mut ids = vec![conv.initial_commit()];
        for i in 0..5 {
            let id = append(&repo, &alice, &format!("message {i}"), i);
            assert_eq!(storage.head(&conv).expect("head"), Some(id));
            ids.push(id);
        }
        let history = repo.history().expect("history");
        let walked: Vec<CommitId> = history.iter().map(|c| c.id).collect();
        assert_eq!(walked, ids, "parents first, oldest first");
        for (c, parent) in history[1..].iter().zip(&ids) {
            assert_eq!(c.parents, vec![*parent]);
            assert_eq!(c.device, alice.device.id());
            c.verify_signature(alice.device.cert().public_key())
                .expect("signature");
        }
        assert_eq!(
            texts(&repo),
            (0..5).map(|i| format!("message {i}")).collect::<Vec<_>>()
        );
        let v = repo.verify().expect("verify");
        assert_eq!(v.commits().len(), 6);
    }

    /// Changed paths of the initial commit, a text message, an invite, a profile update and
    /// a message from a second device of the same account.
    pub fn changed_paths<F: StorageFactory>(f: &F) {
        let place = f.place();
        let storage = open(f, &place);
        let alice = Person::new("Alice");
        let bob = Person::new("Bob");
        let conv = create(&storage, &alice.signer());
        let repo = Repo::open(&storage, conv).expect("open");
        let uri = alice.account.uri();
        let paths = |id: &CommitId| -> Vec<(String, ChangeKind)> {
            repo.changed_paths(id)
                .expect("changed paths")
                .into_iter()
                .map(|c| (c.path, c.kind))
                .collect()
        };
        let mut initial = vec![
            (crate::layout::admin_cert(&uri), ChangeKind::Added),
            (crate::layout::crl(&uri, &alice.crl.id()), ChangeKind::Added),
            (
                crate::layout::device_cert(&alice.device.id()),
                ChangeKind::Added,
            ),
        ];
        initial.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(paths(&conv.initial_commit()), initial);
        let text = append(&repo, &alice, "hello", 1);
        assert_eq!(paths(&text), vec![]);
        let (body, changes) = crate::ops::invite(bob.account.uri());
        let invite = repo
            .append(&alice.signer(), &body, &changes, T + 2)
            .expect("invite");
        assert_eq!(
            paths(&invite),
            vec![(
                crate::layout::invited(&bob.account.uri()),
                ChangeKind::Added
            )]
        );
        let (body, changes) = crate::ops::profile(Some("Title"), None);
        let profile = repo
            .append(&alice.signer(), &body, &changes, T + 3)
            .expect("profile");
        assert_eq!(
            paths(&profile),
            vec![(crate::layout::PROFILE.to_owned(), ChangeKind::Added)]
        );
        let (body, changes) = crate::ops::profile(Some("Other"), None);
        let profile2 = repo
            .append(&alice.signer(), &body, &changes, T + 4)
            .expect("profile");
        assert_eq!(
            paths(&profile2),
            vec![(crate::layout::PROFILE.to_owned(), ChangeKind::Modified)]
        );
        let laptop = alice.other_device();
        let signer = Signer {
            account: alice.account.cert(),
            device: &laptop,
            crl: &alice.crl,
        };
        let from_laptop = repo
            .append(&signer, &Body::text("from my laptop"), &[], T + 5)
            .expect("second device");
        assert_eq!(
            paths(&from_laptop),
            vec![(crate::layout::device_cert(&laptop.id()), ChangeKind::Added)]
        );
        repo.verify().expect("verify");
    }

    /// Objects of every kind and any bytes (empty, binary) come back exactly and hash to
    /// their ids.
    pub fn objects_round_trip_byte_exact<F: StorageFactory>(f: &F) {
        let place = f.place();
        let storage = open(f, &place);
        let alice = Person::new("Alice");
        let conv = create(&storage, &alice.signer());
        let head = storage.head(&conv).expect("head").expect("stored");
        let extra = vec![
            Object::blob(Vec::new()),
            Object::blob((0..=255u8).cycle().take(70_000).collect::<Vec<u8>>()),
            Object {
                kind: Kind::Tag,
                data: format!(
                    "object {}\ntype commit\ntag v1\ntagger A <a> 0 +0000\n\nv1\n",
                    head
                )
                .into_bytes(),
            },
        ];
        storage
            .write(
                &conv,
                &extra,
                HeadUpdate {
                    expected: Some(head),
                    new: head,
                },
            )
            .expect("write");
        for o in &extra {
            let back = storage.object(&conv, &o.id()).expect("read");
            assert_eq!(back.as_ref(), Some(o), "{o:?}");
        }
        let all = reachable_objects(
            &crate::storage::ConversationObjects {
                storage: &storage,
                conv,
            },
            head,
        )
        .expect("walk");
        assert!(all.len() >= 6, "commit, trees, blobs");
        for o in all {
            let back = storage
                .object(&conv, &o.id())
                .expect("read")
                .expect("stored");
            assert_eq!(back.id(), o.id());
        }
    }

    /// A conversation answers only for the objects it stores.
    pub fn objects_belong_to_their_conversation<F: StorageFactory>(f: &F) {
        let place = f.place();
        let storage = open(f, &place);
        let alice = Person::new("Alice");
        let a = create(&storage, &alice.signer());
        let b =
            create_conversation(&storage, &alice.signer(), Mode::Public, None, T).expect("create");
        let repo = Repo::open(&storage, a).expect("open");
        let only_in_a = append(&repo, &alice, "only in a", 1);
        assert!(commit_obj(&storage, &a, &only_in_a).is_some());
        assert_eq!(commit_obj(&storage, &b, &only_in_a), None);
        assert_eq!(commit_obj(&storage, &b, &a.initial_commit()), None);
    }

    /// Writing objects that are already stored changes nothing.
    pub fn storing_an_object_twice_is_a_no_op<F: StorageFactory>(f: &F) {
        let place = f.place();
        let storage = open(f, &place);
        let alice = Person::new("Alice");
        let conv = create(&storage, &alice.signer());
        let repo = Repo::open(&storage, conv).expect("open");
        let head = append(&repo, &alice, "once", 1);
        let objects = reachable_objects(
            &crate::storage::ConversationObjects {
                storage: &storage,
                conv,
            },
            head,
        )
        .expect("walk");
        for _ in 0..2 {
            storage
                .write(
                    &conv,
                    &objects,
                    HeadUpdate {
                        expected: Some(head),
                        new: head,
                    },
                )
                .expect("write again");
        }
        assert_eq!(storage.head(&conv).expect("head"), Some(head));
        assert_eq!(texts(&repo), vec!["once".to_owned()]);
        repo.verify().expect("verify");
    }

    /// A write based on a stale head fails with `HeadMoved` naming both heads, and none of
    /// its objects become visible.
    pub fn head_moved_changes_nothing<F: StorageFactory>(f: &F) {
        let place = f.place();
        let storage = open(f, &place);
        let alice = Person::new("Alice");
        let conv = create(&storage, &alice.signer());
        let repo = Repo::open(&storage, conv).expect("open");
        let base = repo.head().expect("head");
        // Two writers draft on the same head; the first one wins.
        let first = draft(&repo, &alice, base, "first", 1);
        let second = draft(&repo, &alice, base, "second", 2);
        storage
            .write(
                &conv,
                &first.objects,
                HeadUpdate {
                    expected: Some(base),
                    new: first.id,
                },
            )
            .expect("first writer");
        match storage.write(
            &conv,
            &second.objects,
            HeadUpdate {
                expected: Some(base),
                new: second.id,
            },
        ) {
            Err(StorageError::HeadMoved {
                conversation,
                expected,
                found,
            }) => {
                assert_eq!(conversation, conv);
                assert_eq!(expected, Some(base));
                assert_eq!(found, Some(first.id));
            }
            other => panic!("expected HeadMoved, got {other:?}"),
        }
        assert_eq!(storage.head(&conv).expect("head"), Some(first.id));
        assert_eq!(commit_obj(&storage, &conv, &second.id), None);
        // Through the repository API the loser is told the same.
        let third = draft(&repo, &alice, base, "third", 3);
        assert!(storage
            .write(
                &conv,
                &third.objects,
                HeadUpdate {
                    expected: Some(second.id),
                    new: third.id,
                },
            )
            .is_err());
        assert_eq!(texts(&repo), vec!["first".to_owned()]);
    }

    /// Creating a conversation that exists fails with `AlreadyExists`; the stored one is
    /// unchanged.
    pub fn already_exists_changes_nothing<F: StorageFactory>(f: &F) {
        let place = f.place();
        let storage = open(f, &place);
        let alice = Person::new("Alice");
        let conv = create(&storage, &alice.signer());
        let repo = Repo::open(&storage, conv).expect("open");
        let head = append(&repo, &alice, "kept", 1);
        let initial = reachable_objects(
            &crate::storage::ConversationObjects {
                storage: &storage,
                conv,
            },
            conv.initial_commit(),
        )
        .expect("walk");
        match storage.write(
            &conv,
            &initial,
            HeadUpdate {
                expected: None,
                new: conv.initial_commit(),
            },
        ) {
            Err(StorageError::AlreadyExists(c)) => assert_eq!(c, conv),
            other => panic!("expected AlreadyExists, got {other:?}"),
        }
        assert_eq!(storage.head(&conv).expect("head"), Some(head));
        assert_eq!(storage.conversations().expect("list"), vec![conv]);
    }

    /// One device creating conversations with the same arguments at the same time (the same
    /// initial commit, since signatures are deterministic) gets a new conversation each time:
    /// its initial commit is dated the first later second that is free. Every one is listed
    /// and verifies; the first is unchanged.
    pub fn creating_again_at_the_same_time_makes_a_new_conversation<F: StorageFactory>(f: &F) {
        let place = f.place();
        let storage = open(f, &place);
        let alice = Person::new("Alice");
        let first = create(&storage, &alice.signer());
        let repo = Repo::open(&storage, first).expect("open");
        let head = append(&repo, &alice, "kept", 1);
        let second = create(&storage, &alice.signer());
        let third = create(&storage, &alice.signer());
        // T + 1 and T + 2 are taken now: the next free second is T + 3.
        let fourth = create_conversation(&storage, &alice.signer(), Mode::InvitesOnly, None, T + 1)
            .expect("create");
        let all = [first, second, third, fourth];
        assert_eq!(all.iter().collect::<BTreeSet<_>>().len(), 4, "{all:?}");
        let mut listed = all.to_vec();
        listed.sort();
        assert_eq!(storage.conversations().expect("list"), listed);
        for (conv, time) in all.into_iter().zip([T, T + 1, T + 2, T + 3]) {
            let repo = Repo::open(&storage, conv).expect("open");
            let initial = repo.commit(&conv.initial_commit()).expect("initial commit");
            assert_eq!(initial.time, time, "{conv}");
            assert_eq!(initial.message, r#"{"mode":2,"type":"initial"}"#, "{conv}");
            repo.verify().expect("every conversation verifies");
        }
        assert_eq!(storage.head(&first).expect("head"), Some(head));
    }

    /// A head that is neither written nor stored fails with `DanglingHead`: nothing moves and
    /// no conversation is created.
    pub fn dangling_head_changes_nothing<F: StorageFactory>(f: &F) {
        let place = f.place();
        let storage = open(f, &place);
        let alice = Person::new("Alice");
        let conv = create(&storage, &alice.signer());
        let repo = Repo::open(&storage, conv).expect("open");
        let head = repo.head().expect("head");
        let draft = draft(&repo, &alice, head, "lost", 1);
        // Every object but the commit itself.
        let without_commit: Vec<Object> = draft
            .objects
            .iter()
            .filter(|o| o.id() != draft.id.object_id())
            .cloned()
            .collect();
        match storage.write(
            &conv,
            &without_commit,
            HeadUpdate {
                expected: Some(head),
                new: draft.id,
            },
        ) {
            Err(StorageError::DanglingHead(id)) => assert_eq!(id, draft.id),
            other => panic!("expected DanglingHead, got {other:?}"),
        }
        assert_eq!(storage.head(&conv).expect("head"), Some(head));
        // Creating a conversation whose head is missing creates nothing.
        let other = Person::new("Other");
        let scratch = MemoryStorage::new();
        let new_conv = create(&scratch, &other.signer());
        match storage.write(
            &new_conv,
            &[Object::blob(b"unrelated".to_vec())],
            HeadUpdate {
                expected: None,
                new: new_conv.initial_commit(),
            },
        ) {
            Err(StorageError::DanglingHead(id)) => assert_eq!(id, new_conv.initial_commit()),
            other => panic!("expected DanglingHead, got {other:?}"),
        }
        assert_eq!(storage.head(&new_conv).expect("head"), None);
        assert_eq!(storage.conversations().expect("list"), vec![conv]);
    }

    /// A conversation that is not stored: no head, objects refused with
    /// `UnknownConversation`, `Repo::open` refused, and a write that expects a head fails
    /// (`UnknownConversation`, or `HeadMoved` with `found: None`) without creating it.
    pub fn unknown_conversation<F: StorageFactory>(f: &F) {
        let place = f.place();
        let storage = open(f, &place);
        let alice = Person::new("Alice");
        let scratch = MemoryStorage::new();
        let conv = create(&scratch, &alice.signer());
        assert_eq!(storage.head(&conv).expect("head"), None);
        match storage.object(&conv, &conv.initial_commit().object_id()) {
            Err(StorageError::UnknownConversation(c)) => assert_eq!(c, conv),
            other => panic!("expected UnknownConversation, got {other:?}"),
        }
        assert!(matches!(
            Repo::open(&storage, conv),
            Err(crate::repo::RepoError::UnknownConversation(c)) if c == conv
        ));
        let repo = Repo::open(&scratch, conv).expect("open");
        let next = draft(&repo, &alice, conv.initial_commit(), "x", 1);
        let mut objects = reachable_objects(
            &crate::storage::ConversationObjects {
                storage: &scratch,
                conv,
            },
            conv.initial_commit(),
        )
        .expect("walk");
        objects.extend(next.objects);
        match storage.write(
            &conv,
            &objects,
            HeadUpdate {
                expected: Some(conv.initial_commit()),
                new: next.id,
            },
        ) {
            Err(StorageError::UnknownConversation(c)) => assert_eq!(c, conv),
            Err(StorageError::HeadMoved {
                conversation,
                found: None,
                ..
            }) => assert_eq!(conversation, conv),
            other => panic!("expected UnknownConversation, got {other:?}"),
        }
        assert_eq!(storage.head(&conv).expect("head"), None);
        assert_eq!(storage.conversations().expect("list"), vec![]);
    }

    /// Objects received for a stored conversation stay invisible in quarantine, readable
    /// through the area, and become visible with the new head in one promotion; the area is
    /// gone afterwards.
    pub fn quarantine_promote_onto_existing_conversation<F: StorageFactory>(f: &F) {
        let place = f.place();
        let storage = open(f, &place);
        let alice = Person::new("Alice");
        let conv = create(&storage, &alice.signer());
        let repo = Repo::open(&storage, conv).expect("open");
        let head = append(&repo, &alice, "before", 1);
        let d1 = draft(&repo, &alice, head, "received 1", 2);
        let q = storage.quarantine_open(&conv).expect("open quarantine");
        assert_eq!(q.conv, conv);
        storage.quarantine_put(&q, &d1.objects).expect("put");
        for o in &d1.objects {
            assert_eq!(
                storage
                    .quarantine_object(&q, &o.id())
                    .expect("read quarantine"),
                Some(o.clone())
            );
        }
        assert_eq!(
            commit_obj(&storage, &conv, &d1.id),
            None,
            "invisible before promote"
        );
        assert_eq!(storage.head(&conv).expect("head"), Some(head));
        let area = QuarantineId { conv, id: q.id };
        promote_validated(
            &storage,
            q,
            HeadUpdate {
                expected: Some(head),
                new: d1.id,
            },
        )
        .expect("promote");
        assert_eq!(storage.head(&conv).expect("head"), Some(d1.id));
        for o in &d1.objects {
            assert_eq!(
                storage.object(&conv, &o.id()).expect("read"),
                Some(o.clone())
            );
        }
        assert!(
            not_readable(storage.quarantine_object(&area, &d1.id.object_id())),
            "the area is gone after promotion"
        );
        assert_eq!(
            texts(&repo),
            vec!["before".to_owned(), "received 1".to_owned()]
        );
        repo.verify().expect("verify");
    }

    /// A whole conversation received into a quarantine becomes a stored conversation by a
    /// promotion with `expected: None`; before that it does not exist. Promoting it again
    /// fails with `AlreadyExists`.
    pub fn quarantine_promote_as_new_conversation<F: StorageFactory>(f: &F) {
        let place = f.place();
        let storage = open(f, &place);
        let alice = Person::new("Alice");
        let scratch = MemoryStorage::new();
        let conv = create(&scratch, &alice.signer());
        let remote = Repo::open(&scratch, conv).expect("open");
        for i in 0..3 {
            append(&remote, &alice, &format!("m{i}"), i);
        }
        let head = remote.head().expect("head");
        let objects = reachable_objects(
            &crate::storage::ConversationObjects {
                storage: &scratch,
                conv,
            },
            head,
        )
        .expect("walk");
        let q = storage.quarantine_open(&conv).expect("open quarantine");
        // Put in two batches, as a sync would.
        let (a, b) = objects.split_at(objects.len() / 2);
        storage.quarantine_put(&q, a).expect("put");
        storage.quarantine_put(&q, b).expect("put");
        assert_eq!(storage.head(&conv).expect("head"), None);
        assert_eq!(storage.conversations().expect("list"), vec![]);
        assert!(not_readable(
            storage.object(&conv, &conv.initial_commit().object_id())
        ));
        promote_validated(
            &storage,
            q,
            HeadUpdate {
                expected: None,
                new: head,
            },
        )
        .expect("promote");
        assert_eq!(storage.conversations().expect("list"), vec![conv]);
        assert_eq!(storage.head(&conv).expect("head"), Some(head));
        let repo = Repo::open(&storage, conv).expect("open");
        assert_eq!(texts(&repo), texts(&remote));
        repo.verify().expect("verify");
        // A second clone of the same conversation is refused.
        let q = storage.quarantine_open(&conv).expect("open quarantine");
        storage.quarantine_put(&q, &objects).expect("put");
        match promote_validated(
            &storage,
            q,
            HeadUpdate {
                expected: None,
                new: head,
            },
        ) {
            Err(StorageError::AlreadyExists(c)) => assert_eq!(c, conv),
            other => panic!("expected AlreadyExists, got {other:?}"),
        }
    }

    /// Promotion on a stale head fails with `HeadMoved` and its objects stay invisible.
    pub fn quarantine_promote_with_a_stale_head_changes_nothing<F: StorageFactory>(f: &F) {
        let place = f.place();
        let storage = open(f, &place);
        let alice = Person::new("Alice");
        let conv = create(&storage, &alice.signer());
        let repo = Repo::open(&storage, conv).expect("open");
        let base = repo.head().expect("head");
        let received = draft(&repo, &alice, base, "received", 1);
        let q = storage.quarantine_open(&conv).expect("open quarantine");
        let area = QuarantineId { conv, id: q.id };
        storage.quarantine_put(&q, &received.objects).expect("put");
        // Meanwhile the local device commits.
        let local = append(&repo, &alice, "local", 2);
        match promote_validated(
            &storage,
            q,
            HeadUpdate {
                expected: Some(base),
                new: received.id,
            },
        ) {
            Err(StorageError::HeadMoved { found, .. }) => assert_eq!(found, Some(local)),
            other => panic!("expected HeadMoved, got {other:?}"),
        }
        assert_eq!(storage.head(&conv).expect("head"), Some(local));
        assert_eq!(commit_obj(&storage, &conv, &received.id), None);
        // The area survives the failed promotion: a sync decides again and retries.
        assert!(
            storage
                .quarantine_object(&area, &received.id.object_id())
                .expect("the area is still there")
                .is_some(),
            "the received commit is still quarantined"
        );
        storage.quarantine_drop(area).expect("drop");
        assert_eq!(texts(&repo), vec!["local".to_owned()]);
    }

    /// A quarantine holding, beside a valid commit, objects that no validated commit reaches
    /// (a peer's junk: a blob, a tree, a commit on no branch) promotes the commit and drops
    /// the junk: it is never readable from the conversation.
    pub fn quarantine_promote_stores_only_what_validation_reached<F: StorageFactory>(f: &F) {
        let place = f.place();
        let storage = open(f, &place);
        let alice = Person::new("Alice");
        let conv = create(&storage, &alice.signer());
        let repo = Repo::open(&storage, conv).expect("open");
        let head = repo.head().expect("head");
        let good = draft(&repo, &alice, head, "good", 1);
        let stray = draft(&repo, &alice, head, "on no branch", 2);
        let blob = Object::blob(b"junk".to_vec());
        let (tree, _) =
            crate::object::build_tree(&[("junk/x".to_owned(), blob.id())].into_iter().collect());
        let tree =
            crate::object::build_tree(&[("junk/x".to_owned(), blob.id())].into_iter().collect())
                .1
                .into_iter()
                .find(|o| o.id() == tree)
                .expect("root tree");
        let junk = vec![
            blob,
            tree,
            stray.objects.last().cloned().expect("stray commit"),
        ];
        let q = storage.quarantine_open(&conv).expect("open quarantine");
        storage.quarantine_put(&q, &good.objects).expect("put");
        storage.quarantine_put(&q, &junk).expect("put");
        promote_validated(
            &storage,
            q,
            HeadUpdate {
                expected: Some(head),
                new: good.id,
            },
        )
        .expect("promote");
        assert_eq!(storage.head(&conv).expect("head"), Some(good.id));
        for o in &good.objects {
            assert_eq!(
                storage.object(&conv, &o.id()).expect("read"),
                Some(o.clone())
            );
        }
        for o in &junk {
            assert_eq!(
                storage.object(&conv, &o.id()).expect("read"),
                None,
                "unreachable {} {} was stored",
                o.kind,
                o.id()
            );
        }
        repo.verify().expect("verify");
    }

    /// A dropped quarantine leaves no trace: its objects are never visible, the head does not
    /// move, a conversation received whole is not created.
    pub fn quarantine_drop<F: StorageFactory>(f: &F) {
        let place = f.place();
        let storage = open(f, &place);
        let alice = Person::new("Alice");
        let conv = create(&storage, &alice.signer());
        let repo = Repo::open(&storage, conv).expect("open");
        let head = repo.head().expect("head");
        let rejected = draft(&repo, &alice, head, "rejected", 1);
        let q = storage.quarantine_open(&conv).expect("open quarantine");
        let area = QuarantineId { conv, id: q.id };
        storage.quarantine_put(&q, &rejected.objects).expect("put");
        assert_eq!(commit_obj(&storage, &conv, &rejected.id), None);
        storage.quarantine_drop(q).expect("drop");
        assert_eq!(commit_obj(&storage, &conv, &rejected.id), None);
        assert!(not_readable(
            storage.quarantine_object(&area, &rejected.id.object_id())
        ));
        assert_eq!(storage.head(&conv).expect("head"), Some(head));
        // A whole conversation dropped before promotion is never created.
        let bob = Person::new("Bob");
        let scratch = MemoryStorage::new();
        let other = create(&scratch, &bob.signer());
        let objects = reachable_objects(
            &crate::storage::ConversationObjects {
                storage: &scratch,
                conv: other,
            },
            other.initial_commit(),
        )
        .expect("walk");
        let q = storage.quarantine_open(&other).expect("open quarantine");
        storage.quarantine_put(&q, &objects).expect("put");
        storage.quarantine_drop(q).expect("drop");
        assert_eq!(storage.head(&other).expect("head"), None);
        assert_eq!(storage.conversations().expect("list"), vec![conv]);
        // Areas are independent: dropping one keeps another.
        let keep = storage.quarantine_open(&conv).expect("open quarantine");
        let gone = storage.quarantine_open(&conv).expect("open quarantine");
        assert_ne!(keep.id, gone.id);
        storage
            .quarantine_put(&keep, &rejected.objects)
            .expect("put");
        storage
            .quarantine_put(&gone, &rejected.objects)
            .expect("put");
        storage.quarantine_drop(gone).expect("drop");
        assert_eq!(
            storage
                .quarantine_object(&keep, &rejected.id.object_id())
                .expect("read quarantine"),
            Some(
                rejected
                    .objects
                    .iter()
                    .find(|o| o.id() == rejected.id.object_id())
                    .cloned()
                    .expect("commit in draft")
            )
        );
        promote_validated(
            &storage,
            keep,
            HeadUpdate {
                expected: Some(head),
                new: rejected.id,
            },
        )
        .expect("promote the kept area");
        assert_eq!(storage.head(&conv).expect("head"), Some(rejected.id));
    }

    /// Readers in other threads, while one thread appends, always see a complete history
    /// ending at a head they can read (the old or the new one, never a partial commit).
    pub fn concurrent_readers_during_writes<F: StorageFactory>(f: &F) {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        const WRITES: usize = 20;
        let place = f.place();
        let storage = open(f, &place);
        let alice = Person::new("Alice");
        let conv = create(&storage, &alice.signer());
        let done = AtomicBool::new(false);
        let reads = AtomicUsize::new(0);
        let storage_ref: &dyn Storage = &storage;
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    let repo = Repo::open(storage_ref, conv).expect("open");
                    let mut last_len = 0;
                    loop {
                        // Read `done` first: the read after the last write sees it all.
                        let finished = done.load(Ordering::SeqCst);
                        let history = repo.history().expect("a reader sees a whole history");
                        assert!(history.len() >= last_len, "history never shrinks");
                        assert_eq!(history[0].id, conv.initial_commit());
                        for pair in history.windows(2) {
                            assert_eq!(pair[1].parents, vec![pair[0].id]);
                        }
                        last_len = history.len();
                        reads.fetch_add(1, Ordering::SeqCst);
                        if finished {
                            assert_eq!(last_len, WRITES + 1, "the last read sees every write");
                            break;
                        }
                    }
                });
            }
            let repo = Repo::open(storage_ref, conv).expect("open");
            for i in 0..WRITES {
                append(&repo, &alice, &format!("w{i}"), i as i64);
            }
            done.store(true, Ordering::SeqCst);
        });
        assert!(reads.load(Ordering::SeqCst) >= 2);
        let repo = Repo::open(&storage, conv).expect("open");
        assert_eq!(repo.history().expect("history").len(), WRITES + 1);
        repo.verify().expect("verify");
    }

    /// Everything written survives closing and reopening the storage, and writing goes on
    /// after the reopen.
    pub fn reopen_after_close<F: StorageFactory>(f: &F) {
        let place = f.place();
        let alice = Person::new("Alice");
        let (conv, other, head) = {
            let storage = open(f, &place);
            let conv = create(&storage, &alice.signer());
            let other = create_conversation(&storage, &alice.signer(), Mode::Public, None, T)
                .expect("create");
            let repo = Repo::open(&storage, conv).expect("open");
            let mut head = conv.initial_commit();
            for i in 0..3 {
                head = append(&repo, &alice, &format!("before close {i}"), i);
            }
            (conv, other, head)
        };
        let expected: Vec<String> = (0..3).map(|i| format!("before close {i}")).collect();
        {
            let storage = open(f, &place);
            let mut convs = vec![conv, other];
            convs.sort();
            assert_eq!(storage.conversations().expect("list"), convs);
            assert_eq!(storage.head(&conv).expect("head"), Some(head));
            let repo = Repo::open(&storage, conv).expect("open");
            assert_eq!(texts(&repo), expected);
            repo.verify().expect("verify");
            append(&repo, &alice, "after reopen", 10);
        }
        let storage = open(f, &place);
        let repo = Repo::open(&storage, conv).expect("open");
        let mut all = expected;
        all.push("after reopen".into());
        assert_eq!(texts(&repo), all);
        repo.verify().expect("verify");
        let by_id: BTreeMap<CommitId, Commit> = repo
            .history()
            .expect("history")
            .into_iter()
            .map(|c| (c.id, c))
            .collect();
        assert!(by_id.contains_key(&head));
    }
}
