//! The second half of `swarm-chat demo`: five in-process peers, each with its own Git
//! storage, on the simulated network. The swarm splits 2 / 3, both sides chat, the network
//! heals, and every peer ends with the same history and the same display order.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context as _, Result};
use serde_json::{json, Value};
use swarm_api::body::{Body, Mode};
use swarm_api::id::{CommitId, ConversationId, DeviceId};
use swarm_api::identity::Account;
use swarm_api::node::{LocalIdentity, Node, NodeConfig};
use swarm_api::ops;
use swarm_api::repo::{create_conversation, Repo};
use swarm_api::sim::SimNetwork;
use swarm_api::storage::Storage;
use swarm_api::validate::Engine;
use swarm_git::GitStorage;

struct Peer {
    name: &'static str,
    node: Node,
    storage: Arc<GitStorage>,
    account: Arc<Account>,
}

impl Peer {
    fn dev(&self) -> DeviceId {
        self.node.peer().device
    }
    fn head(&self, conv: ConversationId) -> Result<Option<CommitId>> {
        Ok(self.storage.head(&conv)?)
    }
}

fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

fn peer(net: &SimNetwork, dir: &Path, name: &'static str) -> Result<Peer> {
    let mut rng = rand_core::OsRng;
    let account = Arc::new(Account::generate(name, now(), &mut rng)?);
    let device = account.new_device(now(), &mut rng)?;
    let crl = account.crl(&[], 1, now())?;
    let me = LocalIdentity {
        account: account.cert().clone(),
        device,
        crl,
    };
    let storage = Arc::new(GitStorage::open(dir.join(name.to_lowercase()))?);
    let transport = Arc::new(net.join(me.peer()));
    let node = Node::new(
        me,
        storage.clone(),
        transport,
        Arc::new(Engine::default()),
        NodeConfig::default(),
    );
    let runner = node.clone();
    tokio::spawn(async move { runner.run().await });
    Ok(Peer {
        name,
        node,
        storage,
        account,
    })
}

/// Fetches between neighbours until all heads are equal (what reconnection does).
async fn converge(peers: &[&Peer], conv: ConversationId) -> Result<()> {
    for round in 0..20usize {
        let heads: BTreeSet<_> = peers.iter().map(|p| p.head(conv)).collect::<Result<_>>()?;
        if heads.len() == 1 {
            return Ok(());
        }
        let stride = 1 + round % (peers.len().max(2) - 1);
        for (i, p) in peers.iter().enumerate() {
            let other = peers[(i + stride) % peers.len()];
            let _ = p.node.sync_from(conv, other.dev()).await;
        }
    }
    bail!("the peers did not converge")
}

/// Runs the scenario; prints text or returns the JSON summary.
pub async fn run(dir: &Path, json_out: bool) -> Result<Value> {
    let net = SimNetwork::new(7);
    let names = ["Alice", "Bob", "Carla", "Denys", "Eve"];
    let peers: Vec<Peer> = names
        .iter()
        .map(|n| peer(&net, dir, n))
        .collect::<Result<_>>()?;
    let alice = &peers[0];
    let conv = create_conversation(
        &*alice.storage,
        &alice.node.identity().signer(),
        Mode::InvitesOnly,
        None,
        now().unix_timestamp(),
    )?;
    for p in &peers[1..] {
        let (body, changes) = ops::invite(p.account.uri());
        alice.node.commit(conv, &body, &changes).await?;
    }
    for p in &peers[1..] {
        p.node
            .sync_from(conv, alice.dev())
            .await
            .with_context(|| format!("{} cannot clone the conversation", p.name))?;
        let repo = Repo::open(&*p.storage, conv)?;
        let st = repo.state(&repo.head()?)?;
        let (body, changes) = ops::join(&st, p.account.cert());
        p.node.commit(conv, &body, &changes).await?;
    }
    let all: Vec<&Peer> = peers.iter().collect();
    converge(&all, conv).await?;
    if !json_out {
        println!(
            "\n== A swarm of 5 peers, each with its own Git repository, on a simulated network"
        );
        println!("conversation {conv}: {}", names.join(", "));
    }

    // The split: Alice + Bob | Carla + Denys + Eve.
    let (left, right): (Vec<&Peer>, Vec<&Peer>) =
        (vec![&peers[0], &peers[1]], peers[2..].iter().collect());
    net.partition(&[
        left.iter().map(|p| p.dev()).collect(),
        right.iter().map(|p| p.dev()).collect(),
    ]);
    if !json_out {
        println!("\n-- the network splits: [Alice, Bob] | [Carla, Denys, Eve]");
    }
    let lines = [
        (0, "Is anyone there? The link to the others is down."),
        (
            2,
            "We lost Alice and Bob, but the three of us can still talk.",
        ),
        (1, "Alice, I can hear you on the LAN."),
        (3, "Let's keep going; the histories will merge."),
        (4, "Writing this while split from Alice and Bob."),
        (0, "Bob, let's plan without them for now."),
    ];
    let mut sent = Vec::new();
    for (who, text) in lines {
        let id = peers[who].node.send(conv, text).await?;
        sent.push(id);
        if !json_out {
            println!("{:<6} {text}", peers[who].name);
        }
    }
    converge(&left, conv).await?;
    converge(&right, conv).await?;
    if left[0].head(conv)? == right[0].head(conv)? {
        bail!("the two sides should have diverged");
    }

    net.heal();
    converge(&all, conv).await?;
    let reference = Repo::open(&*peers[0].storage, conv)?;
    let timeline: Vec<_> = reference
        .history()?
        .into_iter()
        .filter(|c| c.parents.len() < 2)
        .collect();
    let order: Vec<CommitId> = timeline.iter().map(|c| c.id).collect();
    for p in &peers {
        let repo = Repo::open(&*p.storage, conv)?;
        let theirs: Vec<CommitId> = repo
            .history()?
            .into_iter()
            .filter(|c| c.parents.len() < 2)
            .map(|c| c.id)
            .collect();
        if theirs != order {
            bail!("{} displays a different order", p.name);
        }
        repo.verify()
            .map_err(|e| anyhow!("{}'s repository does not verify: {e}", p.name))?;
    }
    for id in &sent {
        if !order.contains(id) {
            bail!("message {id} was lost");
        }
    }
    let head = peers[0].head(conv)?.ok_or_else(|| anyhow!("no head"))?;
    let entries: Vec<Value> = timeline
        .iter()
        .map(|c| {
            let body = match Body::parse(&c.message) {
                Ok(Body::Text(t)) => t.body,
                Ok(b) => format!("[{}]", b.kind()),
                Err(_) => c.message.clone(),
            };
            json!({"id": c.id, "name": c.author_name, "body": body})
        })
        .collect();
    if !json_out {
        println!("\n-- the network heals; every peer fetches, validates and merges");
        println!("merged timeline (identical on all 5 peers):");
        for e in &entries {
            println!(
                "  {}  {:<6} {}",
                &e["id"].as_str().unwrap_or_default()[..8],
                e["name"].as_str().unwrap_or_default(),
                e["body"].as_str().unwrap_or_default()
            );
        }
        println!(
            "\nall 5 peers agree: head {}, {} entries in the same order, every repository verifies",
            &head.to_string()[..12],
            entries.len()
        );
    }
    Ok(
        json!({"peers": names, "conversation": conv, "head": head, "timeline": entries, "agree": true}),
    )
}
