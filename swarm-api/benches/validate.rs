//! Validation throughput (issue 3): `Engine::verify` over a 10 000-commit conversation,
//! next to the bare Ed25519-verify rate over payloads of the same size (the physical floor:
//! every commit carries one signature that must be checked). The goal is a total
//! validation cost within 1.5× of the floor.
//!
//! `cargo bench -p swarm-api --bench validate` prints criterion's figures for both, then a
//! summary line with commits/s, verifies/s and the ratio.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput};
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use rand_core::OsRng;
use swarm_api::body::{Body, Mode, VoteAction};
use swarm_api::commit::Commit;
use swarm_api::id::{CommitId, ConversationId, Target};
use swarm_api::identity::{Account, Crl, Device};
use swarm_api::object::{Kind, ObjectSource};
use swarm_api::ops;
use swarm_api::repo::{create_conversation, Repo, Signer};
use swarm_api::storage::{ConversationObjects, MemoryStorage};
use swarm_api::validate::Engine;
use time::OffsetDateTime;

/// Commits in the benchmarked history (`cargo bench`); `cargo test --benches` runs each
/// benchmark once, on a smaller history, to check that it works.
const COMMITS: usize = 10_000;
const TEST_COMMITS: usize = 500;
const T: i64 = 1_800_000_000;

struct Person {
    account: Account,
    device: Device,
    crl: Crl,
}

impl Person {
    fn new(name: &str) -> Self {
        let now = OffsetDateTime::from_unix_timestamp(T).expect("time");
        let account = Account::generate(name, now, &mut OsRng).expect("account");
        let device = account.new_device(now, &mut OsRng).expect("device");
        let crl = account.crl(&[], 1, now).expect("crl");
        Self {
            account,
            device,
            crl,
        }
    }
    fn s(&self) -> Signer<'_> {
        Signer {
            account: self.account.cert(),
            device: &self.device,
            crl: &self.crl,
        }
    }
}

/// The benchmarked history: `COMMITS` commits (or fewer), mostly text messages from a few members, with
/// seven membership commits (votes, ban, unban, invite, join, promote, profile) every
/// ~100 commits.
struct History {
    st: MemoryStorage,
    conv: ConversationId,
    head: CommitId,
    /// Number of commits.
    commits: usize,
    /// Mean size of the signed payloads (commit object without its signature header).
    mean_payload: usize,
}

fn build_history(commits: usize) -> History {
    let people: Vec<Person> = ["Alice", "Bob", "Carol", "Dave", "Erin"]
        .iter()
        .map(|n| Person::new(n))
        .collect();
    let st = MemoryStorage::new();
    let conv =
        create_conversation(&st, &people[0].s(), Mode::InvitesOnly, None, T).expect("create");
    let repo = Repo::open(&st, conv).expect("open");
    // Commits so far (the initial one included); every `ok` adds exactly one.
    let n = std::cell::Cell::new(1usize);
    let ok = |who: &Person, op: (Body, Vec<swarm_api::repo::FileChange>)| {
        repo.append(&who.s(), &op.0, &op.1, T)
            .unwrap_or_else(|e| panic!("{} refused: {e}", op.0.kind()));
        n.set(n.get() + 1);
    };
    let state = || repo.state(&repo.head().expect("head")).expect("state");
    // Bob, Carol and Dave join; Bob is promoted, so bans need two admins' votes.
    for p in &people[1..4] {
        ok(&people[0], ops::invite(p.account.uri()));
        ok(p, ops::join(&state(), p.account.cert()));
    }
    let decide = |voters: &[&Person], target: Target, action: VoteAction| {
        for v in voters {
            ok(
                v,
                ops::vote(&state(), &v.account.uri(), target, action).expect("vote"),
            );
        }
        let op = ops::apply_vote(&repo, &state(), target, action).expect("apply");
        ok(voters[0], op);
    };
    decide(
        &[&people[0]],
        Target::Account(people[1].account.uri()),
        VoteAction::Promote,
    );
    let dave = Target::Account(people[3].account.uri());
    let mut round = 0usize;
    let mut speakers: Vec<&Person> = people[..4].iter().collect();
    while n.get() < commits {
        // Up to 93 messages from the present members, round robin...
        let messages = (commits - n.get()).min(93);
        for _ in 0..messages {
            let i = n.get();
            let who = speakers[i % speakers.len()];
            ok(
                who,
                (Body::text(format!("message {i} of round {round}")), vec![]),
            );
        }
        // ...then seven membership commits: Dave banned and unbanned with two votes each,
        // and Erin's invitation and join (first round), or a profile update.
        if commits - n.get() >= 8 {
            decide(&[&people[0], &people[1]], dave, VoteAction::Ban);
            decide(&[&people[1], &people[0]], dave, VoteAction::Unban);
            if round == 0 {
                ok(&people[0], ops::invite(people[4].account.uri()));
                ok(&people[4], ops::join(&state(), people[4].account.cert()));
                speakers.push(&people[4]);
            } else {
                ok(
                    &people[round % 2],
                    ops::profile(Some(&format!("Room {round}")), Some("bench")),
                );
            }
        }
        round += 1;
    }
    let head = repo.head().expect("head");
    let src = ConversationObjects { storage: &st, conv };
    let history = repo.history().expect("history");
    assert_eq!(history.len(), commits, "history size");
    let total: usize = history.iter().map(|c| c.signed_payload.len()).sum();
    // Sanity: the objects are really there and decode.
    let obj = src.expect(&head.object_id(), Kind::Commit).expect("head");
    Commit::parse(head, &obj.data).expect("parse");
    History {
        mean_payload: total / history.len(),
        commits,
        st,
        conv,
        head,
    }
}

/// `n` Ed25519 signatures by a few keys over distinct payloads of `len` bytes.
fn signatures(n: usize, len: usize) -> Vec<(VerifyingKey, Vec<u8>, Signature)> {
    let keys: Vec<SigningKey> = (0..6).map(|_| SigningKey::generate(&mut OsRng)).collect();
    (0..n)
        .map(|i| {
            let key = &keys[i % keys.len()];
            let mut msg = format!("payload {i} ").into_bytes();
            msg.resize(len, b'x');
            let sig = key.sign(&msg);
            (key.verifying_key(), msg, sig)
        })
        .collect()
}

fn verify_all(h: &History) -> usize {
    // A fresh engine each time: no certificate or chain cached from a previous run.
    let engine = Engine::default();
    let src = ConversationObjects {
        storage: &h.st,
        conv: h.conv,
    };
    let v = engine
        .verify(h.conv, &src, h.head)
        .expect("history verifies");
    v.commits().len()
}

fn floor(sigs: &[(VerifyingKey, Vec<u8>, Signature)]) {
    for (k, m, s) in sigs {
        k.verify(black_box(m), black_box(s)).expect("signature");
    }
}

fn bench(c: &mut Criterion, h: &Arc<History>, sigs: &Arc<Vec<(VerifyingKey, Vec<u8>, Signature)>>) {
    let mut g = c.benchmark_group("validate");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8))
        .throughput(Throughput::Elements(h.commits as u64));
    g.bench_function("engine_verify", |b| {
        b.iter(|| assert_eq!(verify_all(h), h.commits))
    });
    g.bench_function("ed25519_verify_floor", |b| b.iter(|| floor(sigs)));
    g.finish();
}

/// Wall-clock time of `f`.
fn timed(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

fn main() {
    let bench_mode = std::env::args().any(|a| a == "--bench");
    let t = Instant::now();
    let n = if bench_mode { COMMITS } else { TEST_COMMITS };
    let h = Arc::new(build_history(n));
    eprintln!(
        "built a {n}-commit history in {:.1?} (mean signed payload {} bytes)",
        t.elapsed(),
        h.mean_payload
    );
    let sigs = Arc::new(signatures(n, h.mean_payload));
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c, &h, &sigs);
    c.final_summary();
    if bench_mode {
        // Interleaved runs, so both figures see the same machine load (others may be
        // compiling): the best of each, and the median of the per-round ratios.
        let mut rounds: Vec<(Duration, Duration)> = (0..7)
            .map(|_| {
                let v = timed(|| assert_eq!(verify_all(&h), h.commits));
                let f = timed(|| floor(&sigs));
                (v, f)
            })
            .collect();
        let v = rounds.iter().map(|r| r.0).min().unwrap_or_default();
        let f = rounds.iter().map(|r| r.1).min().unwrap_or_default();
        rounds.sort_by(|a, b| {
            (a.0.as_secs_f64() / a.1.as_secs_f64())
                .total_cmp(&(b.0.as_secs_f64() / b.1.as_secs_f64()))
        });
        let median = rounds[rounds.len() / 2];
        let per = |d: Duration| d.as_secs_f64() * 1e6 / h.commits as f64;
        let rate = |d: Duration| h.commits as f64 / d.as_secs_f64();
        println!(
            "summary: validation {:.0} commits/s ({:.1} µs/commit); Ed25519 floor {:.0} verifies/s ({:.1} µs/verify); validation costs {:.2}× the floor (best runs), {:.2}× (median of 7 interleaved rounds); goal ≤ 1.5×",
            rate(v),
            per(v),
            rate(f),
            per(f),
            v.as_secs_f64() / f.as_secs_f64(),
            median.0.as_secs_f64() / median.1.as_secs_f64()
        );
    }
}
