//! Storage benchmarks, git and sled side by side (`cargo bench -p swarm-sled`):
//!
//! - `append 10 000 messages`: validated, signed, durable appends through `Repo::append`,
//!   timed once per backend (printed), and per message by criterion (`append/<backend>`);
//! - `open_last_50/<backend>`: open the storage holding a 100 000-message conversation and
//!   load (read, hash-check, parse) its last 50 messages — target < 20 ms;
//! - `last_50/<backend>`: the same on an already open storage;
//! - `history_walk/<backend>`: `Repo::history` of the 100 000-message conversation (every
//!   commit read and parsed, then put in display order).
//!
//! The 100 000-message conversations are built once (signed commits written directly, skipping
//! validation) and cached under `target/swarm-bench-fixtures/`.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use swarm_api::body::{Body, Mode};
use swarm_api::commit::sign_commit;
use swarm_api::repo::{create_conversation, Repo};
use swarm_api::storage::{HeadUpdate, Storage};
use swarm_api::testing::{Person, T};
use swarm_api::{CommitId, ConversationId};
use swarm_git::GitStorage;
use swarm_sled::SledStorage;

/// Under `cargo bench` (criterion passes `--bench`) the full sizes; under `cargo test` (which
/// runs every bench target once as a smoke test) small ones, so the test suite stays fast.
fn bench_mode() -> bool {
    std::env::args().any(|a| a == "--bench")
}
/// Messages in the "open + last 50" / "full walk" conversation.
fn messages() -> usize {
    if bench_mode() {
        100_000
    } else {
        200
    }
}
/// Messages in the one-shot append run.
fn appends() -> usize {
    if bench_mode() {
        10_000
    } else {
        20
    }
}
const LAST: usize = 50;
const FIXTURE_VERSION: &str = "v1";

#[derive(Clone, Copy)]
enum Backend {
    Git,
    Sled,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Git => "git",
            Backend::Sled => "sled",
        }
    }
    fn open(self, path: &Path) -> Box<dyn Storage> {
        match self {
            Backend::Git => Box::new(GitStorage::open(path).expect("open git")),
            Backend::Sled => Box::new(SledStorage::open(path).expect("open sled")),
        }
    }
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// The cached 100 000-message conversation of `backend`: its storage path and id.
fn fixture(backend: Backend) -> (PathBuf, ConversationId) {
    let dir = target_dir()
        .join("swarm-bench-fixtures")
        .join(FIXTURE_VERSION)
        .join(format!("{}-{}", backend.name(), messages()));
    let done = dir.join("complete");
    let store = dir.join("store");
    if let Ok(id) = std::fs::read_to_string(&done) {
        if let Ok(conv) = id.trim().parse() {
            return (store, conv);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("fixture dir");
    let start = Instant::now();
    let storage = backend.open(&store);
    let alice = Person::new("Alice");
    let conv = create_conversation(
        storage.as_ref(),
        &alice.signer(),
        Mode::InvitesOnly,
        None,
        T,
    )
    .expect("create");
    let repo = Repo::open(storage.as_ref(), conv).expect("open");
    // Text messages do not change the tree: every commit reuses the initial one's.
    let tree = repo.commit(&conv.initial_commit()).expect("initial").tree;
    let mut head = conv.initial_commit();
    let mut batch = Vec::new();
    let mut batch_start = head;
    let total = messages();
    for i in 0..total {
        let msg = Body::text(format!("message {i}")).to_message();
        let obj =
            sign_commit(&alice.device, "Alice", tree, &[head], &msg, T + i as i64).expect("sign");
        head = CommitId::from_object_id(&obj.id()).expect("sha1");
        batch.push(obj);
        if batch.len() == 5_000 || i + 1 == total {
            storage
                .write(
                    &conv,
                    &batch,
                    HeadUpdate {
                        expected: Some(batch_start),
                        new: head,
                    },
                )
                .expect("write");
            batch.clear();
            batch_start = head;
        }
    }
    drop(repo);
    drop(storage);
    std::fs::write(&done, conv.to_string()).expect("mark fixture");
    eprintln!(
        "built the {} fixture ({} messages) in {:.1} s",
        backend.name(),
        messages(),
        start.elapsed().as_secs_f64()
    );
    (store, conv)
}

/// Loads the last `n` messages: first parents from the head (exact for linear histories).
fn last_messages(storage: &dyn Storage, conv: ConversationId, n: usize) -> Vec<Body> {
    let repo = Repo::open(storage, conv).expect("open");
    let mut id = repo.head().expect("head");
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let c = repo.commit(&id).expect("commit");
        out.push(Body::parse(&c.message).expect("body"));
        match c.parents.first() {
            Some(p) => id = *p,
            None => break,
        }
    }
    out
}

fn append_10k_once(backend: Backend) -> Duration {
    let tmp = tempfile::tempdir().expect("tmp");
    let storage = backend.open(&tmp.path().join("store"));
    let alice = Person::new("Alice");
    let conv = create_conversation(
        storage.as_ref(),
        &alice.signer(),
        Mode::InvitesOnly,
        None,
        T,
    )
    .expect("create");
    let repo = Repo::open(storage.as_ref(), conv).expect("open");
    let start = Instant::now();
    for i in 0..appends() {
        repo.append(
            &alice.signer(),
            &Body::text(format!("m{i}")),
            &[],
            T + i as i64,
        )
        .expect("append");
    }
    start.elapsed()
}

fn benches(c: &mut Criterion) {
    let backends = [Backend::Git, Backend::Sled];
    // The one-shot 10 000 appends run unless a criterion filter excludes them.
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let one_shot = filter.is_none_or(|f| "append".contains(f.as_str()));
    for b in backends.into_iter().filter(|_| one_shot) {
        let d = append_10k_once(b);
        eprintln!(
            "append {} messages ({}): {:.2} s ({:.0} µs per message)",
            appends(),
            b.name(),
            d.as_secs_f64(),
            d.as_secs_f64() * 1e6 / appends() as f64
        );
    }

    let mut g = c.benchmark_group("append");
    g.throughput(Throughput::Elements(1));
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(5));
    for b in backends {
        let tmp = tempfile::tempdir().expect("tmp");
        let storage = b.open(&tmp.path().join("store"));
        let alice = Person::new("Alice");
        let conv = create_conversation(
            storage.as_ref(),
            &alice.signer(),
            Mode::InvitesOnly,
            None,
            T,
        )
        .expect("create");
        let repo = Repo::open(storage.as_ref(), conv).expect("open");
        let mut i = 0i64;
        g.bench_function(b.name(), |bench| {
            bench.iter(|| {
                i += 1;
                repo.append(&alice.signer(), &Body::text("hello"), &[], T + i)
                    .expect("append")
            })
        });
    }
    g.finish();

    let fixtures: Vec<(Backend, PathBuf, ConversationId)> = backends
        .iter()
        .map(|b| {
            let (p, c) = fixture(*b);
            (*b, p, c)
        })
        .collect();

    let mut g = c.benchmark_group("open_last_50");
    for (b, path, conv) in &fixtures {
        g.bench_function(b.name(), |bench| {
            // Closing the storage (sled joins its flusher thread) is not part of the figure.
            // (sled allows one open handle at a time, so each is closed before the next.)
            bench.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let storage = b.open(path);
                    let msgs = last_messages(storage.as_ref(), *conv, LAST);
                    total += start.elapsed();
                    assert_eq!(msgs.len(), LAST);
                    black_box(msgs);
                    drop(storage);
                }
                total
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("last_50");
    for (b, path, conv) in &fixtures {
        let storage = b.open(path);
        g.bench_function(b.name(), |bench| {
            bench.iter(|| black_box(last_messages(storage.as_ref(), *conv, LAST)))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("history_walk");
    g.sample_size(10);
    g.throughput(Throughput::Elements(messages() as u64 + 1));
    for (b, path, conv) in &fixtures {
        let storage = b.open(path);
        let repo = Repo::open(storage.as_ref(), *conv).expect("open");
        g.bench_function(b.name(), |bench| {
            bench.iter(|| {
                let h = repo.history().expect("history");
                assert_eq!(h.len(), messages() + 1);
                black_box(h)
            })
        });
    }
    g.finish();
}

criterion_group!(storage, benches);
criterion_main!(storage);
