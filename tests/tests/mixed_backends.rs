//! Peers on different storage backends (sled, Git, memory) in one conversation on the
//! simulated network: partitioned, both sides chat, healed. They must converge to the same
//! commit ids and display order, every repository must verify, and stock `git fsck --strict`
//! must be clean on the Git peer's repository.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rand_core::OsRng;
use swarm_api::body::Mode;
use swarm_api::id::{CommitId, ConversationId};
use swarm_api::identity::Account;
use swarm_api::node::{LocalIdentity, Node, NodeConfig};
use swarm_api::ops;
use swarm_api::repo::{create_conversation, Repo};
use swarm_api::sim::SimNetwork;
use swarm_api::storage::{MemoryStorage, Storage};
use swarm_api::validate::Engine;
use swarm_api::DeviceId;
use swarm_git::GitStorage;
use swarm_sled::SledStorage;
use time::OffsetDateTime;

struct Peer {
    node: Node,
    storage: Arc<dyn Storage>,
    account: Arc<Account>,
}

impl Peer {
    fn dev(&self) -> DeviceId {
        self.node.peer().device
    }
    fn head(&self, conv: ConversationId) -> Option<CommitId> {
        self.storage.head(&conv).expect("head")
    }
    /// Non-merge commits in display order.
    fn timeline(&self, conv: ConversationId) -> Vec<CommitId> {
        let repo = Repo::open(&*self.storage, conv).expect("open conversation");
        repo.history()
            .expect("history")
            .into_iter()
            .filter(|c| c.parents.len() < 2)
            .map(|c| c.id)
            .collect()
    }
}

fn config() -> NodeConfig {
    NodeConfig {
        sync_timeout: Duration::from_secs(10),
        backoff_initial: Duration::from_secs(1),
        backoff_max: Duration::from_secs(64),
        ..NodeConfig::default()
    }
}

fn peer(net: &SimNetwork, name: &str, storage: Arc<dyn Storage>) -> Peer {
    let now = OffsetDateTime::now_utc();
    let account = Arc::new(Account::generate(name, now, &mut OsRng).expect("account"));
    let device = account.new_device(now, &mut OsRng).expect("device");
    let crl = account.crl(&[], 1, now).expect("crl");
    let me = LocalIdentity {
        account: account.cert().clone(),
        device,
        crl,
    };
    let transport = Arc::new(net.join(me.peer()));
    let node = Node::new(
        me,
        storage.clone(),
        transport,
        Arc::new(Engine::default()),
        config(),
    );
    let runner = node.clone();
    tokio::spawn(async move { runner.run().await });
    Peer {
        node,
        storage,
        account,
    }
}

/// Waits (in virtual time) until `cond` holds; panics after `deadline`.
async fn wait_for(deadline: Duration, mut cond: impl FnMut() -> bool) {
    let start = tokio::time::Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < deadline,
            "condition not reached within {deadline:?}"
        );
        tokio::time::advance(Duration::from_millis(50)).await;
        tokio::task::yield_now().await;
    }
}

/// The first peer creates a conversation; every other peer is invited, clones it from the
/// first and joins.
async fn group(peers: &[Peer]) -> ConversationId {
    let first = &peers[0];
    let conv = create_conversation(
        &*first.storage,
        &first.node.identity().signer(),
        Mode::InvitesOnly,
        None,
        OffsetDateTime::now_utc().unix_timestamp(),
    )
    .expect("create conversation");
    for p in &peers[1..] {
        let (body, changes) = ops::invite(p.account.uri());
        first
            .node
            .commit(conv, &body, &changes)
            .await
            .expect("invite");
    }
    for p in &peers[1..] {
        p.node
            .sync_from(conv, first.dev())
            .await
            .expect("clone from the creator");
        let st = {
            let repo = Repo::open(&*p.storage, conv).expect("open clone");
            repo.state(&repo.head().expect("head")).expect("state")
        };
        let (body, changes) = ops::join(&st, p.account.cert());
        p.node.commit(conv, &body, &changes).await.expect("join");
    }
    converge(peers, conv).await;
    conv
}

/// Lets announcements flow and, as on reconnection, gossips: each peer fetches from its
/// neighbours on a ring of growing stride, until all heads are equal.
async fn converge(peers: &[Peer], conv: ConversationId) {
    let n = peers.len();
    for round in 0..40usize {
        tokio::time::advance(Duration::from_millis(200)).await;
        tokio::task::yield_now().await;
        let heads: BTreeSet<_> = peers.iter().map(|p| p.head(conv)).collect();
        if heads.len() == 1 {
            return;
        }
        let stride = 1 + round % n.max(2).saturating_sub(1);
        for (i, p) in peers.iter().enumerate() {
            let other = &peers[(i + stride) % n];
            if other.head(conv) != p.head(conv) {
                let _ = Box::pin(p.node.sync_from(conv, other.dev())).await;
            }
        }
    }
    let heads: Vec<_> = peers.iter().map(|p| p.head(conv)).collect();
    panic!("peers did not converge: {heads:?}");
}

fn git_fsck_strict(repo: &Path) {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["fsck", "--strict", "--no-dangling"])
        .output()
        .expect("stock git runs");
    assert!(
        out.status.success(),
        "git fsck --strict on the Git peer's repository: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(start_paused = true)]
async fn sled_git_and_memory_peers_converge_to_identical_ids_and_order_after_a_partition() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let sled: Arc<dyn Storage> =
        Arc::new(SledStorage::open(dir.path().join("sled")).expect("open sled storage"));
    let git_storage = Arc::new(GitStorage::open(dir.path().join("git")).expect("open git"));
    let git: Arc<dyn Storage> = git_storage.clone();
    let memory: Arc<dyn Storage> = Arc::new(MemoryStorage::new());

    let net = SimNetwork::new(7);
    net.set_latency(Duration::from_millis(30));
    let peers = vec![
        peer(&net, "Sled", sled),
        peer(&net, "Git", git),
        peer(&net, "Memory", memory),
    ];
    assert_eq!(
        peers
            .iter()
            .map(|p| p.storage.backend_name())
            .collect::<Vec<_>>(),
        ["sled", "git", "memory"]
    );
    let conv = group(&peers).await;

    // Sled alone on one side; Git and memory on the other.
    net.partition(&[vec![peers[0].dev()], vec![peers[1].dev(), peers[2].dev()]]);
    let mut sent = vec![];
    for round in 0..3 {
        for (i, p) in peers.iter().enumerate() {
            sent.push(
                p.node
                    .send(conv, &format!("round {round} from {i}"))
                    .await
                    .expect("send"),
            );
        }
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    wait_for(Duration::from_secs(60), || {
        peers[1].head(conv) == peers[2].head(conv)
    })
    .await;
    assert_ne!(
        peers[0].head(conv),
        peers[1].head(conv),
        "the sides diverged while partitioned"
    );

    net.heal();
    converge(&peers, conv).await;

    let head = peers[0].head(conv).expect("a head");
    let order = peers[0].timeline(conv);
    let set: BTreeSet<_> = order.iter().collect();
    assert_eq!(set.len(), order.len(), "a message is displayed twice");
    for s in &sent {
        assert!(set.contains(s), "message {s} lost");
    }
    for p in &peers {
        let name = p.storage.backend_name();
        assert_eq!(p.head(conv), Some(head), "{name} peer's head");
        assert_eq!(p.timeline(conv), order, "{name} peer's display order");
        Repo::open(&*p.storage, conv)
            .expect("open conversation")
            .verify()
            .unwrap_or_else(|e| panic!("{name} peer's repository does not verify: {e}"));
    }
    // The ids are the same objects: every commit is readable, byte-identical, on every peer.
    for id in &order {
        let on_sled = peers[0]
            .storage
            .object(&conv, &id.object_id())
            .expect("read")
            .expect("stored on sled");
        for p in &peers[1..] {
            let other = p.storage.object(&conv, &id.object_id()).expect("read");
            assert_eq!(
                other.as_ref(),
                Some(&on_sled),
                "commit {id} on {}",
                p.storage.backend_name()
            );
        }
    }

    let location = git_storage
        .location(&conv)
        .expect("the Git peer has a repository");
    git_fsck_strict(&location);
}
