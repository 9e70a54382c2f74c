//! Crash safety of both backends: a child process appends messages in a loop and prints each
//! commit id once `append` has returned; the parent SIGKILLs it at random points and checks,
//! after reopening the storage, that every printed message is there, that the conversation
//! verifies from its initial commit, and that no partial commit is visible (at most one
//! commit that was never acknowledged, and only as the head).
//!
//! The test binary re-executes itself as the child (environment variable
//! `SWARM_CRASH_CHILD`), so it has its own `main` (`harness = false`).

use std::collections::BTreeSet;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand_core::{OsRng, RngCore as _};
use swarm_api::body::Body;
use swarm_api::identity::{Account, Crl, Device};
use swarm_api::repo::{create_conversation, Repo, Signer};
use swarm_api::storage::Storage;
use swarm_api::testing::{Person, T};
use swarm_api::{CommitId, ConversationId};
use swarm_git::GitStorage;
use swarm_sled::SledStorage;

const CHILD: &str = "SWARM_CRASH_CHILD";
const RUNS_PER_BACKEND: usize = 20;
/// The most appends a child makes before the parent kills it.
const MAX_ACKED_BEFORE_KILL: u64 = 8;

fn open(backend: &str, dir: &Path) -> Box<dyn Storage> {
    let path = dir.join("store");
    match backend {
        "git" => Box::new(GitStorage::open(path).expect("open git storage")),
        "sled" => Box::new(SledStorage::open(path).expect("open sled storage")),
        other => panic!("unknown backend {other}"),
    }
}

fn main() {
    if let Ok(spec) = std::env::var(CHILD) {
        child(&spec);
        return;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        println!("sigkill_during_appends_loses_no_acknowledged_message_git: test");
        println!("sigkill_during_appends_loses_no_acknowledged_message_sled: test");
        return;
    }
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let mut passed = 0;
    let mut filtered = 0;
    for backend in ["git", "sled"] {
        let name = format!("sigkill_during_appends_loses_no_acknowledged_message_{backend}");
        if !filters.is_empty() && !filters.iter().any(|f| name.contains(f.as_str())) {
            filtered += 1;
            continue;
        }
        let start = Instant::now();
        let kills = crash_runs(backend);
        println!(
            "test {name} ... ok ({kills} kills, {:.1} s)",
            start.elapsed().as_secs_f64()
        );
        passed += 1;
    }
    println!("\ntest result: ok. {passed} passed; 0 failed; 0 ignored; 0 measured; {filtered} filtered out");
}

/// The child: appends messages until killed, printing each id after `append` returned.
fn child(spec: &str) {
    let mut parts = spec.split('\t');
    let (Some(backend), Some(dir), Some(conv), Some(run)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        panic!("bad {CHILD} value {spec:?}");
    };
    let dir = PathBuf::from(dir);
    let conv: ConversationId = conv.parse().expect("conversation id");
    let run: i64 = run.parse().expect("run number");
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).expect("identity file");
    let account = Account::from_pem(&read("account.key"), &read("account.crt")).expect("account");
    let device = Device::from_pem(&read("device.key"), &read("device.crt")).expect("device");
    let crl = Crl::from_pem(&read("account.crl")).expect("crl");
    let signer = Signer {
        account: account.cert(),
        device: &device,
        crl: &crl,
    };
    let storage = open(backend, &dir);
    let repo = Repo::open(storage.as_ref(), conv).expect("open conversation");
    let mut out = std::io::stdout().lock();
    writeln!(out, "open").expect("stdout");
    out.flush().expect("stdout");
    // Bounded, in case the parent never kills (it always does well before).
    for i in 0..10_000 {
        let body = Body::text(format!("run {run} message {i}"));
        let id = repo
            .append(&signer, &body, &[], T + run * 10_000 + i)
            .expect("append");
        writeln!(out, "{id}").expect("stdout");
        out.flush().expect("stdout");
    }
}

/// Runs the kill loop on one backend; returns the number of kills.
fn crash_runs(backend: &str) -> usize {
    let tmp = tempfile::tempdir().expect("temporary directory");
    let dir = tmp.path();
    let alice = Person::new("Alice");
    let (akey, acrt) = alice.account.to_pem().expect("pem");
    let (dkey, dcrt) = alice.device.to_pem().expect("pem");
    for (f, content) in [
        ("account.key", akey),
        ("account.crt", acrt),
        ("device.key", dkey),
        ("device.crt", dcrt),
        ("account.crl", alice.crl.pem().to_owned()),
    ] {
        std::fs::write(dir.join(f), content).expect("write identity");
    }
    let conv = {
        let storage = open(backend, dir);
        create_conversation(
            storage.as_ref(),
            &alice.signer(),
            swarm_api::body::Mode::InvitesOnly,
            None,
            T,
        )
        .expect("create")
    };
    let mut acked: BTreeSet<CommitId> = BTreeSet::new();
    // A running estimate of how long one append takes, to land kills anywhere in one.
    let mut append_time = Duration::from_millis(5);
    for run in 0..RUNS_PER_BACKEND {
        let kill_after = OsRng.next_u64() % (MAX_ACKED_BEFORE_KILL + 1);
        let mut child = Command::new(std::env::current_exe().expect("test binary"))
            .env(
                CHILD,
                format!("{backend}\t{}\t{conv}\t{run}", dir.display()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn child");
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let first = lines.next().expect("child output").expect("read");
        assert_eq!(first, "open", "the child opened the storage");
        let mut printed = Vec::new();
        let mut last = Instant::now();
        while (printed.len() as u64) < kill_after {
            let line = lines
                .next()
                .expect("the child appends until killed")
                .expect("read");
            printed.push(line.parse::<CommitId>().expect("a commit id"));
            let now = Instant::now();
            append_time = (append_time + (now - last)) / 2;
            last = now;
        }
        // Kill at a random point of the next append: the delay is the random variable of
        // this test, not a wait for something to happen.
        let delay = append_time.mul_f64((OsRng.next_u32() % 1000) as f64 / 1000.0);
        let deadline = Instant::now() + delay;
        while Instant::now() < deadline {
            std::hint::spin_loop();
        }
        child.kill().expect("SIGKILL");
        // Lines the child printed before it died are acknowledged too.
        for line in lines {
            let Ok(line) = line else { break };
            if let Ok(id) = line.parse::<CommitId>() {
                printed.push(id);
            }
        }
        let status = child.wait().expect("wait");
        assert!(!status.success(), "the child was killed, run {run}");
        acked.extend(printed.iter().copied());
        check_after_crash(backend, dir, conv, &mut acked, run);
    }
    if backend == "git" {
        let repo = dir.join("store").join(conv.to_string());
        let out = Command::new("git")
            .arg("-C")
            .arg(&repo)
            .args(["fsck", "--strict", "--no-dangling"])
            .output()
            .expect("git runs");
        assert!(
            out.status.success(),
            "git fsck after {RUNS_PER_BACKEND} kills: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    RUNS_PER_BACKEND
}

/// Reopens the storage after a kill: every acknowledged commit is there, the conversation
/// verifies, and at most one commit that was never acknowledged is visible, as the head
/// (its `append` finished storing but the child died before printing its id).
fn check_after_crash(
    backend: &str,
    dir: &Path,
    conv: ConversationId,
    acked: &mut BTreeSet<CommitId>,
    run: usize,
) {
    let storage = open(backend, dir);
    let repo = Repo::open(storage.as_ref(), conv).expect("reopen after the kill");
    let history = repo.history().expect("history after the kill");
    let ids: Vec<CommitId> = history.iter().map(|c| c.id).collect();
    let present: BTreeSet<CommitId> = ids.iter().copied().collect();
    let missing: Vec<&CommitId> = acked.difference(&present).collect();
    assert!(
        missing.is_empty(),
        "{backend} run {run}: acknowledged commits lost: {missing:?}"
    );
    let unacked: Vec<CommitId> = ids[1..]
        .iter()
        .filter(|id| !acked.contains(id))
        .copied()
        .collect();
    assert!(
        unacked.len() <= 1,
        "{backend} run {run}: more than one unacknowledged commit: {unacked:?}"
    );
    if let Some(id) = unacked.first() {
        assert_eq!(
            Some(id),
            ids.last(),
            "{backend} run {run}: only the last append may be unacknowledged"
        );
        acked.insert(*id);
    }
    repo.verify()
        .unwrap_or_else(|e| panic!("{backend} run {run}: verify after the kill: {e}"));
    assert_eq!(repo.head().expect("head"), *ids.last().expect("non-empty"));
}
