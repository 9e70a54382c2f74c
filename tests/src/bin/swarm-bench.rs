//! `swarm-bench`: sync over real sockets against git itself (issue "transport-quic", item 5).
//!
//! ```text
//! cargo run --release -p swarm-tests --bin swarm-bench -- clone --messages 10000 [--runs 5]
//! cargo run --release -p swarm-tests --bin swarm-bench -- latency --messages 1000
//! ```
//!
//! `clone` builds one conversation of N messages in a Git storage, then, `--runs` times, times
//! (a) a fresh peer's full sync of it over QUIC on 127.0.0.1 into its own Git storage, every
//! signature and rule validated, and (b) `git clone --bare` of the very same repository from
//! `git daemon` on 127.0.0.1, and prints the medians and the ratio (a)/(b).
//!
//! `latency` connects two nodes over QUIC (both on Git storage), then sends N messages one
//! at a time and prints p50/p99 of send → received (the receiver's `MessageReceived` event),
//! both from the `send` call (local commit included) and from its return.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use clap::{Parser, Subcommand};
use rand_core::OsRng;
use swarm_api::body::{Body, Mode};
use swarm_api::commit::sign_commit;
use swarm_api::id::{CommitId, ConversationId};
use swarm_api::identity::Account;
use swarm_api::node::{Event, LocalIdentity, Node, NodeConfig};
use swarm_api::ops;
use swarm_api::repo::{create_conversation, Repo};
use swarm_api::storage::{HeadUpdate, Storage};
use swarm_api::traits::Destination;
use swarm_api::validate::Engine;
use swarm_git::GitStorage;
use time::OffsetDateTime;
use transport_quic::{QuicConfig, QuicTransport};

#[derive(Parser)]
#[command(
    name = "swarm-bench",
    about = "swarm sync over QUIC against git clone from git daemon"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Full sync of an N-message conversation vs `git clone` of the same repository.
    Clone {
        /// Messages in the conversation.
        #[arg(long, default_value_t = 10_000)]
        messages: usize,
        /// Timed runs of each (medians are printed).
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// send → received latency between two connected nodes.
    Latency {
        /// Messages sent, one at a time.
        #[arg(long, default_value_t = 1_000)]
        messages: usize,
    },
}

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

fn identity(account: &Account) -> Result<LocalIdentity> {
    let t = OffsetDateTime::now_utc();
    Ok(LocalIdentity {
        account: account.cert().clone(),
        device: account.new_device(t, &mut OsRng)?,
        crl: account.crl(&[], 1, t)?,
    })
}

fn quic_config() -> QuicConfig {
    QuicConfig {
        connect_timeout: Duration::from_secs(10),
        ..QuicConfig::default()
    }
}

struct Peer {
    node: Node,
    transport: QuicTransport,
    addr: SocketAddr,
    storage: Arc<GitStorage>,
}

/// A node on its own Git storage and QUIC socket, serving in the background.
fn peer(me: LocalIdentity, root: &Path) -> Result<Peer> {
    let storage = Arc::new(GitStorage::open(root)?);
    let (transport, addr) = QuicTransport::bind("127.0.0.1:0".parse()?, &me, quic_config())?;
    let node = Node::new(
        me,
        storage.clone(),
        Arc::new(transport.clone()),
        Arc::new(Engine::default()),
        NodeConfig {
            sync_timeout: Duration::from_secs(600),
            ..NodeConfig::default()
        },
    );
    let runner = node.clone();
    tokio::spawn(async move { runner.run().await });
    Ok(Peer {
        node,
        transport,
        addr,
        storage,
    })
}

/// Appends `n` signed text messages, written in batches (the setup is not what is measured).
fn grow(
    storage: &dyn Storage,
    conv: ConversationId,
    me: &LocalIdentity,
    n: usize,
) -> Result<CommitId> {
    let repo = Repo::open(storage, conv)?;
    let mut head = repo.head()?;
    let tree = repo.commit(&head)?.tree;
    let mut batch = Vec::new();
    for i in 0..n {
        let msg = Body::text(format!(
            "message {i}: the quick brown fox jumps over the lazy dog"
        ))
        .to_message();
        let c = sign_commit(&me.device, me.account.name(), tree, &[head], &msg, now())?;
        head = CommitId::from_object_id(&c.id()).ok_or_else(|| anyhow!("not SHA-1"))?;
        batch.push(c);
        if batch.len() == 2000 || i + 1 == n {
            let expected = storage.head(&conv)?;
            storage.write(
                &conv,
                &batch,
                HeadUpdate {
                    expected,
                    new: head,
                },
            )?;
            batch.clear();
        }
    }
    Ok(head)
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// `git daemon` on 127.0.0.1, killed on drop.
struct GitDaemon {
    child: Child,
    port: u16,
}

impl GitDaemon {
    fn start(base: &Path) -> Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new("git")
            .arg("daemon")
            .arg("--reuseaddr")
            .arg("--export-all")
            .arg(format!("--base-path={}", base.display()))
            .arg("--listen=127.0.0.1")
            .arg(format!("--port={port}"))
            .arg(base)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start `git daemon` (is git installed?)")?;
        let daemon = GitDaemon { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("git daemon did not listen on port {port}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(daemon)
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn git_head(repo: &Path) -> Result<String> {
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(repo)
        .args(["rev-parse", "HEAD"])
        .output()?;
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

/// Alice's node on a Git storage at `root`, her conversation, and Bob's account, invited
/// (an invited account may fetch the conversation to join it).
async fn alice_invites_bob(root: &Path) -> Result<(Peer, Account, ConversationId)> {
    let (alice_acc, bob_acc) = (
        Account::generate("Alice", OffsetDateTime::now_utc(), &mut OsRng)?,
        Account::generate("Bob", OffsetDateTime::now_utc(), &mut OsRng)?,
    );
    let alice = peer(identity(&alice_acc)?, root)?;
    let conv = create_conversation(
        &*alice.storage,
        &alice.node.identity().signer(),
        Mode::InvitesOnly,
        None,
        now(),
    )?;
    let (body, changes) = ops::invite(bob_acc.uri());
    alice.node.commit(conv, &body, &changes).await?;
    Ok((alice, bob_acc, conv))
}

async fn clone_bench(messages: usize, runs: usize) -> Result<()> {
    if runs == 0 {
        bail!("--runs must be at least 1");
    }
    let dir = tempfile::tempdir()?;
    let (alice, bob_acc, conv) = alice_invites_bob(&dir.path().join("server")).await?;
    let t = Instant::now();
    let head = grow(&*alice.storage, conv, alice.node.identity(), messages)?;
    eprintln!("built {messages} messages in {:.1?}", t.elapsed());
    let repo_path: PathBuf = alice
        .storage
        .location(&conv)
        .ok_or_else(|| anyhow!("no repository path"))?;
    let server_root = dir.path().join("server");
    let relative = repo_path.strip_prefix(&server_root)?.to_owned();
    let daemon = GitDaemon::start(&server_root)?;

    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for run in 0..runs {
        // (a) A fresh peer (new device, socket and storage) syncs over QUIC.
        let bob = peer(
            identity(&bob_acc)?,
            &dir.path().join(format!("client-{run}")),
        )?;
        bob.transport
            .add_peer(Destination::Device(alice.node.peer().device), alice.addr);
        let t = Instant::now();
        bob.node
            .sync_from(conv, alice.node.peer().device)
            .await
            .context("sync over QUIC")?;
        let took = t.elapsed();
        if bob.storage.head(&conv)? != Some(head) {
            bail!("run {run}: the QUIC clone did not reach the head");
        }
        bob.transport.close();
        ours.push(took);

        // (b) git clone of the same repository from git daemon.
        let target = dir.path().join(format!("git-{run}.git"));
        let url = format!("git://127.0.0.1:{}/{}", daemon.port, relative.display());
        let t = Instant::now();
        let st = Command::new("git")
            .args(["clone", "--bare", "--quiet", &url])
            .arg(&target)
            .status()?;
        let took_git = t.elapsed();
        if !st.success() || git_head(&target)? != head.to_string() {
            bail!("run {run}: git clone failed or reached another head");
        }
        theirs.push(took_git);
        eprintln!("run {run}: quic {took:.1?}, git clone {took_git:.1?}");
    }
    let (a, b) = (median(&mut ours), median(&mut theirs));
    println!("clone of {messages} messages, median of {runs} runs:");
    println!(
        "  (a) swarm sync over QUIC, validated: {:.3} s",
        a.as_secs_f64()
    );
    println!(
        "  (b) git clone from git daemon:       {:.3} s",
        b.as_secs_f64()
    );
    println!("  ratio (a)/(b): {:.2}", a.as_secs_f64() / b.as_secs_f64());
    Ok(())
}

async fn latency_bench(messages: usize) -> Result<()> {
    if messages == 0 {
        bail!("--messages must be at least 1");
    }
    let dir = tempfile::tempdir()?;
    let (alice, bob_acc, conv) = alice_invites_bob(&dir.path().join("alice")).await?;
    let bob = peer(identity(&bob_acc)?, &dir.path().join("bob"))?;
    let (a_dev, b_dev) = (alice.node.peer().device, bob.node.peer().device);
    alice
        .transport
        .add_peer(Destination::Device(b_dev), bob.addr);
    bob.transport
        .add_peer(Destination::Device(a_dev), alice.addr);
    bob.node.sync_from(conv, a_dev).await?;
    let st = {
        let repo = Repo::open(&*bob.storage, conv)?;
        repo.state(&repo.head()?)?
    };
    let (body, changes) = ops::join(&st, bob_acc.cert());
    let mut alice_events = alice.node.events();
    let join = bob.node.commit(conv, &body, &changes).await?;
    // Wait until alice has bob's join (so she announces to his device).
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if Repo::open(&*alice.storage, conv)
                .and_then(|r| r.history())
                .map(|h| h.iter().any(|c| c.id == join))
                .unwrap_or(false)
            {
                break;
            }
            let _ = alice_events.recv().await;
        }
    })
    .await
    .context("alice never received bob's join")?;

    let mut events = bob.node.events();
    let (mut total, mut after) = (Vec::with_capacity(messages), Vec::with_capacity(messages));
    for i in 0..messages {
        let t0 = Instant::now();
        let id = alice.node.send(conv, &format!("ping {i}")).await?;
        let t1 = Instant::now();
        tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match events.recv().await {
                    Ok(Event::MessageReceived { commit, .. }) if commit == id => break,
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(e) => return Err(anyhow!("event stream closed: {e}")),
                }
            }
            Ok(())
        })
        .await
        .with_context(|| format!("message {i} never arrived"))??;
        let t2 = Instant::now();
        total.push(t2 - t0);
        after.push(t2 - t1);
    }
    total.sort();
    after.sort();
    println!("send → received over QUIC on 127.0.0.1, {messages} messages, Git storage on both:");
    for (what, v) in [
        ("from the send call (commit included)", &total),
        ("from send's return", &after),
    ] {
        println!(
            "  {what}: p50 {:.2} ms, p99 {:.2} ms",
            percentile(v, 0.50).as_secs_f64() * 1e3,
            percentile(v, 0.99).as_secs_f64() * 1e3
        );
    }
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        match cli.command {
            Cmd::Clone { messages, runs } => clone_bench(messages, runs).await,
            Cmd::Latency { messages } => latency_bench(messages).await,
        }
    })
}
