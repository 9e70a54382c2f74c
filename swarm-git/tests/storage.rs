//! GitStorage through the core's conversation operations, checked against the repository
//! layout of DESIGN §3 and against stock `git`.

mod common;

use rand_core::OsRng;
use swarm_api::body::{Body, Mode};
use swarm_api::identity::{Account, Crl, Device};
use swarm_api::layout;
use swarm_api::object::{ChangeKind, Object};
use swarm_api::repo::{create_conversation, FileChange, Repo, RepoError, Signer};
use swarm_api::storage::{HeadUpdate, Storage, StorageError};
use swarm_api::AccountUri;
use swarm_git::GitStorage;
use time::OffsetDateTime;

struct Id {
    account: Account,
    device: Device,
    crl: Crl,
}

impl Id {
    fn new(name: &str) -> Self {
        let now = OffsetDateTime::now_utc();
        let account = Account::generate(name, now, &mut OsRng).unwrap();
        let device = account.new_device(now, &mut OsRng).unwrap();
        let crl = account.crl(&[], 1, now).unwrap();
        Self {
            account,
            device,
            crl,
        }
    }
    fn signer(&self) -> Signer<'_> {
        Signer {
            account: self.account.cert(),
            device: &self.device,
            crl: &self.crl,
        }
    }
}

/// A commit time `n` seconds from now (certificates are checked against it).
fn t(n: i64) -> i64 {
    OffsetDateTime::now_utc().unix_timestamp() + n
}

fn git(dir: &std::path::Path, args: &[&str]) -> String {
    String::from_utf8(common::git(dir, args)).unwrap()
}

#[test]
fn initial_commit_tree_is_exactly_the_layout_for_every_mode() {
    let dir = tempfile::tempdir().unwrap();
    let storage = GitStorage::open(dir.path()).unwrap();
    let alice = Id::new("Alice");
    let bob = Id::new("Bob");
    for mode in [
        Mode::OneToOne,
        Mode::AdminInvitesOnly,
        Mode::InvitesOnly,
        Mode::Public,
    ] {
        let invited = (mode == Mode::OneToOne).then(|| bob.account.uri());
        let conv =
            create_conversation(&storage, &alice.signer(), mode, invited, 1_800_000_000).unwrap();
        let repo = Repo::open(&storage, conv).unwrap();
        assert_eq!(
            repo.head().unwrap(),
            conv.initial_commit(),
            "the id is the initial commit"
        );
        let files: Vec<String> = repo
            .files(&conv.initial_commit())
            .unwrap()
            .into_keys()
            .collect();
        let mut expected = vec![
            layout::admin_cert(&alice.account.uri()),
            layout::crl(&alice.account.uri(), &alice.crl.id()),
            layout::device_cert(&alice.device.id()),
        ];
        if let Some(uri) = invited {
            expected.push(layout::invited(&uri));
            assert_eq!(
                repo.read_file(&conv.initial_commit(), &layout::invited(&uri))
                    .unwrap(),
                Some(vec![])
            );
        }
        expected.sort();
        assert_eq!(files, expected, "{mode:?}");
        let c = repo.commit(&conv.initial_commit()).unwrap();
        let body = Body::parse(&c.message).unwrap();
        let Body::Initial(init) = body else {
            panic!("not initial")
        };
        assert_eq!(init.mode, mode);
        assert_eq!(init.invited, invited);
        c.verify_signature(alice.device.cert().public_key())
            .unwrap();
        // Stock git reads the same tree.
        let path = storage.location(&conv).unwrap();
        let mut listed: Vec<String> = git(&path, &["ls-tree", "-r", "--name-only", "HEAD"])
            .lines()
            .map(str::to_owned)
            .collect();
        listed.sort();
        assert_eq!(listed, expected);
        assert_eq!(
            repo.read_file(
                &conv.initial_commit(),
                &layout::admin_cert(&alice.account.uri())
            )
            .unwrap()
            .unwrap(),
            alice.account.cert().pem().as_bytes()
        );
    }
    assert_eq!(storage.conversations().unwrap().len(), 4);
}

#[test]
fn append_walk_changed_paths_and_read_file() {
    let dir = tempfile::tempdir().unwrap();
    let storage = GitStorage::open(dir.path()).unwrap();
    let alice = Id::new("Alice");
    let conv =
        create_conversation(&storage, &alice.signer(), Mode::InvitesOnly, None, t(1)).unwrap();
    let repo = Repo::open(&storage, conv).unwrap();
    let m1 = repo
        .append(&alice.signer(), &Body::text("one"), &[], t(2))
        .unwrap();
    assert!(
        repo.changed_paths(&m1).unwrap().is_empty(),
        "a text commit changes no files"
    );
    let carol: AccountUri = "0123456789abcdef0123456789abcdef01234567".parse().unwrap();
    let add = Body::parse(&format!(
        r#"{{"action":"add","type":"member","uri":"{carol}"}}"#
    ))
    .unwrap();
    let m2 = repo
        .append(
            &alice.signer(),
            &add,
            &[FileChange::Write(layout::invited(&carol), vec![])],
            t(3),
        )
        .unwrap();
    let changes = repo.changed_paths(&m2).unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].path, layout::invited(&carol));
    assert_eq!(changes[0].kind, ChangeKind::Added);
    assert_eq!(repo.read_file(&m1, &layout::invited(&carol)).unwrap(), None);
    assert_eq!(
        repo.read_file(&m2, &layout::invited(&carol)).unwrap(),
        Some(vec![])
    );
    let history: Vec<_> = repo.history().unwrap().iter().map(|c| c.id).collect();
    assert_eq!(history, vec![conv.initial_commit(), m1, m2]);
    // Paths outside the layout are refused before anything is written.
    let err = repo
        .append(
            &alice.signer(),
            &Body::text("x"),
            &[FileChange::Write("evil/x".into(), vec![1])],
            t(4),
        )
        .unwrap_err();
    assert!(matches!(err, RepoError::InvalidPath(_)));
    assert_eq!(repo.head().unwrap(), m2);
    // git sees the same history.
    let path = storage.location(&conv).unwrap();
    let revs: Vec<String> = git(&path, &["rev-list", "--reverse", "HEAD"])
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        revs,
        history.iter().map(ToString::to_string).collect::<Vec<_>>()
    );
    git(&path, &["fsck", "--strict"]);
}

#[test]
fn head_compare_and_swap_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let storage = GitStorage::open(dir.path()).unwrap();
    let alice = Id::new("Alice");
    let created = t(1);
    let conv = create_conversation(&storage, &alice.signer(), Mode::Public, None, created).unwrap();
    let repo = Repo::open(&storage, conv).unwrap();
    let m1 = repo
        .append(&alice.signer(), &Body::text("one"), &[], t(2))
        .unwrap();
    // A writer that still believes the head is the initial commit loses, and changes nothing.
    let blob = Object::blob(b"x".to_vec());
    let err = storage
        .write(
            &conv,
            &[blob],
            HeadUpdate {
                expected: Some(conv.initial_commit()),
                new: conv.initial_commit(),
            },
        )
        .unwrap_err();
    assert!(matches!(err, StorageError::HeadMoved { found: Some(f), .. } if f == m1));
    assert_eq!(storage.head(&conv).unwrap(), Some(m1));
    // Creating it again (same device, same time) makes another conversation, dated a second
    // later (issue #14); this one is unchanged.
    let again =
        create_conversation(&storage, &alice.signer(), Mode::Public, None, created).unwrap();
    assert_ne!(again, conv);
    let initial = Repo::open(&storage, again)
        .unwrap()
        .commit(&again.initial_commit())
        .unwrap();
    assert_eq!(initial.time, created + 1);
    assert_eq!(storage.head(&conv).unwrap(), Some(m1));
    // Creating the same conversation directly in storage fails.
    let initial = storage
        .object(&conv, &conv.initial_commit().object_id())
        .unwrap()
        .unwrap();
    let err = storage
        .write(
            &conv,
            &[initial],
            HeadUpdate {
                expected: None,
                new: conv.initial_commit(),
            },
        )
        .unwrap_err();
    assert!(
        matches!(err, StorageError::AlreadyExists(c) if c == conv),
        "{err}"
    );
    // A head that points nowhere is refused.
    let ghost = swarm_api::CommitId::from_bytes([9; 20]);
    let err = storage
        .write(
            &conv,
            &[],
            HeadUpdate {
                expected: Some(m1),
                new: ghost,
            },
        )
        .unwrap_err();
    assert!(matches!(err, StorageError::DanglingHead(_)));
    assert_eq!(storage.head(&conv).unwrap(), Some(m1));
    // Unknown conversations.
    let unknown: swarm_api::ConversationId =
        "00000000000000000000000000000000000000aa".parse().unwrap();
    assert!(matches!(
        Repo::open(&storage, unknown),
        Err(RepoError::UnknownConversation(_))
    ));
    assert!(matches!(
        storage.object(&unknown, &ghost.object_id()),
        Err(StorageError::UnknownConversation(_))
    ));
}

#[test]
fn corrupted_object_is_detected_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let storage = GitStorage::open(dir.path()).unwrap();
    let alice = Id::new("Alice");
    let conv = create_conversation(&storage, &alice.signer(), Mode::Public, None, t(1)).unwrap();
    let path = storage.location(&conv).unwrap();
    // Overwrite the loose commit object with a valid object of other content.
    let id = conv.initial_commit().to_string();
    let loose = path.join("objects").join(&id[..2]).join(&id[2..]);
    let replacement = walk(&path.join("objects"))
        .into_iter()
        .find(|p| *p != loose)
        .unwrap();
    std::fs::set_permissions(&loose, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    std::fs::copy(&replacement, &loose).unwrap();
    let fresh = GitStorage::open(dir.path()).unwrap();
    let repo = Repo::open(&fresh, conv).unwrap();
    assert!(
        repo.commit(&conv.initial_commit()).is_err(),
        "content that does not hash to its id is refused"
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p
            .parent()
            .map(|d| d.file_name().unwrap().len() == 2)
            .unwrap_or(false)
        {
            out.push(p);
        }
    }
    out
}

/// Many signed messages on top of `head` (not yet stored), and the new head.
fn messages(
    id: &Id,
    repo: &Repo<'_>,
    head: swarm_api::CommitId,
    n: usize,
) -> (Vec<Object>, swarm_api::CommitId) {
    let tree = repo.commit(&head).unwrap().tree;
    let mut head = head;
    let mut out = Vec::new();
    for i in 0..n {
        let c = swarm_api::commit::sign_commit(
            &id.device,
            "Alice",
            tree,
            &[head],
            &Body::text(format!("message {i}")).to_message(),
            t(i as i64),
        )
        .unwrap();
        head = swarm_api::CommitId::from_object_id(&c.id()).unwrap();
        out.push(c);
    }
    (out, head)
}

fn pack_count(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("objects/pack"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "pack"))
                .count()
        })
        .unwrap_or(0)
}

/// Large writes (a clone, a big fetch) are stored as one pack with its index, which stock
/// git reads and `git fsck --strict` accepts; small ones stay loose; a clone through the
/// quarantine becomes a repository in one step.
#[test]
fn large_writes_are_one_pack_that_stock_git_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let st = GitStorage::open(dir.path().join("a")).unwrap();
    let alice = Id::new("Alice");
    let conv = create_conversation(&st, &alice.signer(), Mode::InvitesOnly, None, t(0)).unwrap();
    let repo = Repo::open(&st, conv).unwrap();
    let path = st.location(&conv).unwrap();
    assert_eq!(pack_count(&path), 0, "a small write is loose");

    let head = repo.head().unwrap();
    let n = swarm_git::PACK_THRESHOLD * 3;
    let (objects, new) = messages(&alice, &repo, head, n);
    st.write(
        &conv,
        &objects,
        HeadUpdate {
            expected: Some(head),
            new,
        },
    )
    .unwrap();
    assert_eq!(pack_count(&path), 1);
    assert!(
        std::fs::read_dir(path.join("objects/pack"))
            .unwrap()
            .flatten()
            .all(|e| e.path().extension().is_none_or(|x| x != "keep")),
        "no .keep file is left once the head points at the pack"
    );
    assert_eq!(st.head(&conv).unwrap(), Some(new));
    for o in &objects {
        assert_eq!(st.object(&conv, &o.id()).unwrap().as_ref(), Some(o));
    }
    git(&path, &["fsck", "--strict", "--no-dangling"]);
    assert_eq!(
        git(&path, &["rev-list", "--count", "HEAD"]).trim(),
        (n + 1).to_string()
    );
    Repo::open(&st, conv)
        .unwrap()
        .verify()
        .expect("the packed history validates");

    // The same history cloned into another storage through a quarantine.
    let other = GitStorage::open(dir.path().join("b")).unwrap();
    let q = other.quarantine_open(&conv).unwrap();
    let mut all = vec![];
    let src = swarm_api::storage::ConversationObjects { storage: &st, conv };
    let mut graph = swarm_api::graph::Graph::new();
    all.extend(swarm_api::sync::bundle(&src, &mut graph, new, &[]).unwrap());
    for chunk in all.chunks(50) {
        other.quarantine_put(&q, chunk).unwrap();
    }
    assert_eq!(
        other.conversations().unwrap(),
        vec![],
        "nothing visible before promotion"
    );
    swarm_api::testing::promote_validated(
        &other,
        q,
        HeadUpdate {
            expected: None,
            new,
        },
    )
    .unwrap();
    let cloned = other.location(&conv).unwrap();
    assert_eq!(pack_count(&cloned), 1);
    git(&cloned, &["fsck", "--strict", "--no-dangling"]);
    assert_eq!(other.head(&conv).unwrap(), Some(new));

    // A dropped quarantine leaves nothing.
    let q = other.quarantine_open(&conv).unwrap();
    other.quarantine_put(&q, &all[..10]).unwrap();
    other.quarantine_drop(q).unwrap();
    assert_eq!(other.head(&conv).unwrap(), Some(new));
}
