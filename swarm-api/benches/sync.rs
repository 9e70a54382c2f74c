//! Sync benchmarks (issue "Sync, merge and order"): two in-memory peers driven through the
//! sans-IO protocol (no sockets), validation included.
//!
//! - full sync (clone) of a 10 000-message conversation;
//! - incremental sync of 1 new message onto 1 000 / 10 000 / 100 000 messages (warm graph
//!   caches, as in a running node): must not grow with history length;
//! - negotiation cost: round trips and bytes (everything but the bundle) for (a) one missing
//!   commit on a 100 000-commit history and (b) two sides that diverged by 1 000 commits each.
//!
//! `cargo bench -p swarm-api --bench sync` (set `SWARM_BENCH_QUICK=1` for a short run).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use rand_core::OsRng;
use swarm_api::body::{Body, Mode};
use swarm_api::commit::sign_commit;
use swarm_api::graph::Graph;
use swarm_api::id::{CommitId, ConversationId};
use swarm_api::identity::Account;
use swarm_api::node::LocalIdentity;
use swarm_api::object::Object;
use swarm_api::repo::{create_conversation, Repo};
use swarm_api::storage::{HeadUpdate, MemoryStorage, Storage};
use swarm_api::sync::{self, BundleLimits, Client, ClientStep, Frame, Outcome, Peer, Server};
use swarm_api::validate::Engine;
use time::OffsetDateTime;

fn identity(name: &str) -> LocalIdentity {
    let now = OffsetDateTime::now_utc();
    let account = Account::generate(name, now, &mut OsRng).unwrap();
    let device = account.new_device(now, &mut OsRng).unwrap();
    let crl = account.crl(&[], 1, now).unwrap();
    LocalIdentity {
        account: account.cert().clone(),
        device,
        crl,
    }
}

/// Appends `n` signed text messages on top of `head` (written directly: the benchmark
/// measures sync, not local commits). Returns the new head.
fn grow(
    storage: &MemoryStorage,
    conv: ConversationId,
    me: &LocalIdentity,
    n: usize,
    tag: &str,
) -> CommitId {
    let repo = Repo::open(storage, conv).unwrap();
    let mut head = storage.head(&conv).unwrap().unwrap();
    let tree = repo.commit(&head).unwrap().tree;
    let mut batch = Vec::new();
    let start = head;
    for i in 0..n {
        let msg = Body::text(format!("{tag} message {i}")).to_message();
        let c = sign_commit(
            &me.device,
            me.account.name(),
            tree,
            &[head],
            &msg,
            1_800_000_000 + i as i64,
        )
        .unwrap();
        head = CommitId::from_object_id(&c.id()).unwrap();
        batch.push(c);
        if batch.len() == 5000 || i + 1 == n {
            let expected = storage.head(&conv).unwrap();
            storage
                .write(
                    &conv,
                    &batch,
                    HeadUpdate {
                        expected,
                        new: head,
                    },
                )
                .unwrap();
            batch.clear();
        }
    }
    let _ = start;
    head
}

/// Copies every object of `conv` from one storage to another (setup only).
fn copy(from: &MemoryStorage, to: &MemoryStorage, conv: ConversationId) {
    let repo = Repo::open(from, conv).unwrap();
    let head = repo.head().unwrap();
    let mut objects: BTreeMap<_, Object> = BTreeMap::new();
    let mut graph = Graph::new();
    let src = swarm_api::storage::ConversationObjects {
        storage: from,
        conv,
    };
    for o in sync::bundle(&src, &mut graph, head, &[]).unwrap() {
        objects.insert(o.id(), o);
    }
    let objects: Vec<Object> = objects.into_values().collect();
    to.write(
        &conv,
        &objects,
        HeadUpdate {
            expected: to.head(&conv).unwrap(),
            new: head,
        },
    )
    .unwrap();
}

#[derive(Debug, Default, Clone, Copy)]
struct Cost {
    round_trips: u32,
    negotiation_bytes: usize,
    objects: usize,
}

/// Runs one sync from `server` into `client` through the state machines.
#[allow(clippy::too_many_arguments)] // a bench fixture: each argument is one dimension measured
fn sync_once(
    server_st: &MemoryStorage,
    client_st: &MemoryStorage,
    conv: ConversationId,
    engine: &Engine,
    server_graph: &mut Graph,
    client_graph: &mut Graph,
    client_peer: Peer,
    signer: &LocalIdentity,
) -> Cost {
    let head = client_st.head(&conv).unwrap();
    let mut client = Client::new(conv, head, BundleLimits::default());
    let mut server = Server::new(client_peer);
    let mut cost = Cost::default();
    let has = |id: &CommitId| {
        head.is_some() && client_st.object(&conv, &id.object_id()).unwrap().is_some()
    };
    let mut to_server = vec![client.hello()];
    let mut q = None;
    let mut tip = None;
    'outer: loop {
        let mut to_client = Vec::new();
        for f in to_server.drain(..) {
            cost.negotiation_bytes += f.encode().len();
            to_client.extend(server.handle(f, server_st, engine, server_graph).unwrap());
        }
        for f in to_client {
            if !matches!(
                f,
                Frame::Object(_) | Frame::BundleStart { .. } | Frame::BundleEnd
            ) {
                cost.negotiation_bytes += f.encode().len();
            }
            for step in client.handle(f, &has).unwrap() {
                match step {
                    ClientStep::Send(f) => to_server.push(f),
                    ClientStep::Objects(objs) => {
                        cost.objects += objs.len();
                        let qid =
                            q.get_or_insert_with(|| client_st.quarantine_open(&conv).unwrap());
                        client_st.quarantine_put(qid, &objs).unwrap();
                    }
                    ClientStep::Done(Outcome::UpToDate) => break 'outer,
                    ClientStep::Done(Outcome::Received { head }) => {
                        tip = Some(head);
                        break 'outer;
                    }
                }
            }
        }
    }
    cost.round_trips = client.round_trips;
    if let (Some(qid), Some(tip)) = (q, tip) {
        sync::integrate(
            client_st,
            engine,
            client_graph,
            qid,
            tip,
            sync::MergePolicy::Always(&signer.signer()),
            1_900_000_000,
        )
        .unwrap();
    }
    cost
}

fn quick() -> bool {
    std::env::var("SWARM_BENCH_QUICK").is_ok()
}

/// `cargo test` runs bench targets once as a smoke test (criterion gets no `--bench`): then
/// every size is divided by 100 so the test suite stays fast.
fn scale(n: usize) -> usize {
    if std::env::args().any(|a| a == "--bench") {
        n
    } else {
        (n / 100).max(2)
    }
}

fn benches(c: &mut Criterion) {
    let alice = identity("Alice");
    let bob = identity("Bob");
    let bob_peer = bob.peer();
    let engine = Engine::default();

    // One conversation, grown in stages: 1k, 10k, 100k (100k only in full runs).
    let server = MemoryStorage::new();
    let conv = create_conversation(
        &server,
        &alice.signer(),
        Mode::Public,
        None,
        OffsetDateTime::now_utc().unix_timestamp(),
    )
    .unwrap();
    // Bob is a member so the server serves him (PUBLIC serves anyone anyway).
    let sizes: Vec<usize> = if quick() {
        vec![1_000, 10_000]
    } else {
        vec![1_000, 10_000, 100_000]
    }
    .into_iter()
    .map(scale)
    .collect();

    // Full sync of 10 000.
    let full = scale(10_000);
    grow(&server, conv, &alice, full, "a");
    let mut group = c.benchmark_group("sync");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(if quick() { 5 } else { 20 }));
    group.bench_function(format!("full sync (clone) of {full} messages"), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let client = MemoryStorage::new();
                let mut sg = Graph::new();
                let mut cg = Graph::new();
                let start = Instant::now();
                let cost = sync_once(
                    &server, &client, conv, &engine, &mut sg, &mut cg, bob_peer, &bob,
                );
                total += start.elapsed();
                assert!(cost.objects > full);
            }
            total
        })
    });

    // Incremental syncs at growing history sizes.
    let mut built = 10_001; // initial + 10 000
    let mut report = Vec::new();
    for &n in &sizes {
        let src = MemoryStorage::new();
        let conv_n = create_conversation(
            &src,
            &alice.signer(),
            Mode::Public,
            None,
            OffsetDateTime::now_utc().unix_timestamp(),
        )
        .unwrap();
        grow(&src, conv_n, &alice, n, "b");
        let client = MemoryStorage::new();
        copy(&src, &client, conv_n);
        let mut sg = Graph::new();
        let mut cg = Graph::new();
        // Warm the graphs like a running node.
        let h = src.head(&conv_n).unwrap().unwrap();
        let s = swarm_api::storage::ConversationObjects {
            storage: &src,
            conv: conv_n,
        };
        sg.generation(&s, &h).unwrap();
        let cs = swarm_api::storage::ConversationObjects {
            storage: &client,
            conv: conv_n,
        };
        cg.generation(&cs, &h).unwrap();
        let mut i = 0usize;
        group.bench_function(format!("incremental sync of 1 message onto {n}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    grow(&src, conv_n, &alice, 1, &format!("inc{i}"));
                    i += 1;
                    let start = Instant::now();
                    let cost = sync_once(
                        &src, &client, conv_n, &engine, &mut sg, &mut cg, bob_peer, &bob,
                    );
                    total += start.elapsed();
                    assert_eq!(cost.round_trips, 1);
                }
                total
            })
        });
        // (a) one missing commit on this history: negotiation cost.
        grow(&src, conv_n, &alice, 1, "probe");
        let cost = sync_once(
            &src, &client, conv_n, &engine, &mut sg, &mut cg, bob_peer, &bob,
        );
        report.push(format!(
            "(a) 1 missing commit on {n}: {} round trip(s), {} negotiation bytes, {} objects",
            cost.round_trips, cost.negotiation_bytes, cost.objects
        ));
        built += n;
    }
    group.finish();
    let _ = built;

    // (b) two sides diverged by 1 000 commits each on a 10 000 base.
    let base = MemoryStorage::new();
    let conv_b = create_conversation(
        &base,
        &alice.signer(),
        Mode::Public,
        None,
        OffsetDateTime::now_utc().unix_timestamp(),
    )
    .unwrap();
    let (base_n, diverge) = (scale(10_000), scale(1_000));
    grow(&base, conv_b, &alice, base_n, "base");
    let other = MemoryStorage::new();
    copy(&base, &other, conv_b);
    grow(&base, conv_b, &alice, diverge, "left");
    // Bob writes on his side: his device must be known to validate; he joins PUBLIC first.
    let repo = Repo::open(&other, conv_b).unwrap();
    let st = repo.state(&repo.head().unwrap()).unwrap();
    let (body, changes) = swarm_api::ops::join(&st, &bob.account);
    repo.append(
        &bob.signer(),
        &body,
        &changes,
        OffsetDateTime::now_utc().unix_timestamp(),
    )
    .unwrap();
    grow(&other, conv_b, &bob, diverge - 1, "right");
    let (mut sg, mut cg) = (Graph::new(), Graph::new());
    let cost = sync_once(
        &base, &other, conv_b, &engine, &mut sg, &mut cg, bob_peer, &bob,
    );
    report.push(format!(
        "(b) diverged by {diverge} each on {base_n}: {} round trips, {} negotiation bytes, {} objects sent ({diverge} commits + their trees)",
        cost.round_trips, cost.negotiation_bytes, cost.objects
    ));
    for line in report {
        println!("{line}");
    }
}

criterion_group!(sync_benches, benches);
criterion_main!(sync_benches);
