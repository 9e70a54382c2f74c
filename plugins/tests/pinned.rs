//! Plugins that travel with the conversation: an admin pins one (`application/plugin-install`
//! adding `plugins/<sha256>.wasm`), every member validates its types with it.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{engine_with, hostile, HOSTILE, W};
use rand_core::OsRng;
use sha2::Digest;
use swarm_api::body::{Body, Mode};
use swarm_api::id::ConversationId;
use swarm_api::identity::Account;
use swarm_api::layout;
use swarm_api::node::{LocalIdentity, Node, NodeConfig};
use swarm_api::repo::{create_conversation, FileChange, Repo};
use swarm_api::sim::SimNetwork;
use swarm_api::storage::{HeadUpdate, MemoryStorage, Storage};
use swarm_api::testing::Person;
use swarm_api::validate::{Engine, Limits, Violation};
use swarm_plugins::{builtin, Host};

fn sha(wasm: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(wasm))
}

fn install_body() -> Body {
    Body::parse(r#"{"type":"application/plugin-install"}"#).expect("body")
}

/// An engine that loads pinned plugins and has none of its own.
fn loader_engine() -> Arc<Engine> {
    let mut e = Engine::new(Limits::default());
    e.set_plugin_loader(Arc::new(Host::new().expect("host")));
    Arc::new(e)
}

fn install(w: &W, who: &Person, path: String, wasm: &[u8]) -> Result<(), Violation> {
    let d = w
        .repo()
        .draft(
            &who.signer(),
            &[w.head()],
            &install_body().to_message(),
            &[FileChange::Write(path, wasm.to_vec())],
            false,
            common::T,
        )
        .expect("draft");
    w.receive(d).map(|_| ())
}

fn rule(r: Result<(), Violation>) -> &'static str {
    r.expect_err("refused").rule()
}

const POLL_OPEN: &str =
    r#"{"action":"open","options":["a","b"],"question":"?","type":"application/poll+json"}"#;

#[test]
fn an_admin_pins_a_plugin_and_its_type_is_validated_by_it() {
    let (alice, bob) = (Person::new("alice"), Person::new("bob"));
    let w = W::new(&alice, Mode::InvitesOnly, loader_engine());
    w.add_member(&alice, &bob);
    // Before: an unknown type.
    assert_eq!(
        rule(w.receive(w.draft(&bob, POLL_OPEN)).map(|_| ())),
        "unknown-type"
    );
    install(
        &w,
        &alice,
        layout::plugin(&sha(builtin::POLLS)),
        builtin::POLLS,
    )
    .expect("an admin pins polls");
    w.receive(w.draft(&bob, POLL_OPEN))
        .expect("a poll is now valid");
    let bad = r#"{"action":"open","options":["a"],"question":"?","type":"application/poll+json"}"#;
    let v = w.receive(w.draft(&bob, bad)).expect_err("one option");
    assert!(
        matches!(&v, Violation::Plugin { plugin, .. } if plugin.contains("pinned")),
        "{v}"
    );
    // Unpinned: unknown again.
    let rm = w
        .repo()
        .draft(
            &alice.signer(),
            &[w.head()],
            r#"{"type":"application/plugin-remove"}"#,
            &[FileChange::Delete(layout::plugin(&sha(builtin::POLLS)))],
            false,
            common::T,
        )
        .expect("draft");
    w.receive(rm).expect("an admin unpins");
    assert_eq!(
        rule(w.receive(w.draft(&bob, POLL_OPEN)).map(|_| ())),
        "unknown-type"
    );
}

#[test]
fn plugin_installs_are_validated() {
    let (alice, bob) = (Person::new("alice"), Person::new("bob"));
    let w = W::new(&alice, Mode::InvitesOnly, loader_engine());
    w.add_member(&alice, &bob);
    let polls = builtin::POLLS;
    assert_eq!(
        rule(install(&w, &bob, layout::plugin(&sha(polls)), polls)),
        "plugin-by-admin"
    );
    assert_eq!(
        rule(install(&w, &alice, layout::plugin(&"ab".repeat(32)), polls)),
        "plugin-files",
        "misnamed"
    );
    let garbage = b"not a component".to_vec();
    assert_eq!(
        rule(install(
            &w,
            &alice,
            layout::plugin(&sha(&garbage)),
            &garbage
        )),
        "plugin-files"
    );
    let usurper = hostile("member", "i32.const 1024");
    assert_eq!(
        rule(install(
            &w,
            &alice,
            layout::plugin(&sha(&usurper)),
            &usurper
        )),
        "plugin-files"
    );
    let big = vec![0u8; Limits::default().max_plugin_bytes + 1];
    assert_eq!(
        rule(install(&w, &alice, layout::plugin(&sha(&big)), &big)),
        "limits"
    );
    // Two pinned plugins may not own the same type.
    let a = hostile(HOSTILE, "i32.const 1024");
    let b = hostile(HOSTILE, "i32.const 1032");
    install(&w, &alice, layout::plugin(&sha(&a)), &a).expect("first");
    assert_ne!(sha(&a), sha(&b));
    assert_eq!(
        rule(install(&w, &alice, layout::plugin(&sha(&b)), &b)),
        "plugin-files"
    );
    // A node that cannot run plugins refuses installs instead of guessing.
    let plain = W::new(&alice, Mode::InvitesOnly, engine_with(vec![]));
    assert_eq!(
        rule(install(&plain, &alice, layout::plugin(&sha(polls)), polls)),
        "plugin-files"
    );
}

struct SimPeer {
    node: Node,
    storage: Arc<MemoryStorage>,
    account: Arc<Account>,
}

fn sim_peer(net: &SimNetwork, name: &str, engine: Arc<Engine>) -> SimPeer {
    let now = time::OffsetDateTime::now_utc();
    let account = Arc::new(Account::generate(name, now, &mut OsRng).expect("account"));
    let me = LocalIdentity {
        account: account.cert().clone(),
        device: account.new_device(now, &mut OsRng).expect("device"),
        crl: account.crl(&[], 1, now).expect("crl"),
    };
    let storage = Arc::new(MemoryStorage::new());
    let transport = Arc::new(net.join(me.peer()));
    let config = NodeConfig {
        sync_timeout: Duration::from_secs(10),
        ..NodeConfig::default()
    };
    let node = Node::new(me, storage.clone(), transport, engine, config);
    let runner = node.clone();
    tokio::spawn(async move { runner.run().await });
    SimPeer {
        node,
        storage,
        account,
    }
}

impl SimPeer {
    fn head(&self, conv: ConversationId) -> swarm_api::id::CommitId {
        self.storage.head(&conv).expect("head").expect("a head")
    }
    fn repo(&self, conv: ConversationId) -> Repo<'_> {
        Repo::open(&*self.storage, conv).expect("open")
    }
}

#[tokio::test(start_paused = true)]
async fn a_pinned_plugin_is_enforced_by_a_peer_that_never_installed_it() {
    let net = SimNetwork::new(7);
    // Alice's app ships the polls plugin; Bob's app has no plugin at all, only a host able to
    // run the plugins pinned in his conversations.
    let host = Arc::new(Host::new().expect("host"));
    let alice = sim_peer(
        &net,
        "alice",
        Arc::new(swarm_plugins::engine(host, Limits::default(), vec![]).expect("engine")),
    );
    let bob = sim_peer(&net, "bob", loader_engine());
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let conv = create_conversation(
        &*alice.storage,
        &alice.node.identity().signer(),
        Mode::InvitesOnly,
        None,
        now,
    )
    .expect("conv");
    let (b, ch) = swarm_api::ops::invite(bob.account.uri());
    alice.node.commit(conv, &b, &ch).await.expect("invite");
    bob.node
        .sync_from(conv, alice.node.peer().device)
        .await
        .expect("clone");
    let st = bob.repo(conv).state(&bob.head(conv)).expect("state");
    let (b, ch) = swarm_api::ops::join(&st, bob.account.cert());
    bob.node.commit(conv, &b, &ch).await.expect("join");
    alice
        .node
        .sync_from(conv, bob.node.peer().device)
        .await
        .expect("join synced");
    // Alice pins polls; Bob receives the install and can now send polls himself.
    let pin = [FileChange::Write(
        layout::plugin(&sha(builtin::POLLS)),
        builtin::POLLS.to_vec(),
    )];
    alice
        .node
        .commit(conv, &install_body(), &pin)
        .await
        .expect("pinned");
    bob.node
        .sync_from(conv, alice.node.peer().device)
        .await
        .expect("install synced");
    let open = bob
        .node
        .commit(conv, &Body::parse(POLL_OPEN).expect("body"), &[])
        .await
        .expect("bob opens a poll");
    alice
        .node
        .sync_from(conv, bob.node.peer().device)
        .await
        .expect("poll synced");
    assert_eq!(alice.head(conv), open);
    // Alice writes an out-of-range vote straight into her storage (no validation there);
    // Bob, who never installed polls, refuses it on sync with the pinned plugin's rule.
    let vote =
        format!(r#"{{"action":"vote","option":5,"poll":"{open}","type":"application/poll+json"}}"#);
    let d = alice
        .repo(conv)
        .draft(
            &alice.node.identity().signer(),
            &[open],
            &vote,
            &[],
            false,
            now,
        )
        .expect("draft");
    alice
        .storage
        .write(
            &conv,
            &d.objects,
            HeadUpdate {
                expected: Some(open),
                new: d.id,
            },
        )
        .expect("forced");
    let r = bob.node.sync_from(conv, alice.node.peer().device).await;
    assert!(r.is_err(), "the bad vote was accepted: {r:?}");
    let msg = format!("{:?}", r.err());
    assert!(
        msg.contains("out of range") && msg.contains("plugin"),
        "{msg}"
    );
    assert_eq!(bob.head(conv), open, "bob's head moved");
    assert!(
        bob.storage
            .object(&conv, &d.id.object_id())
            .expect("read")
            .is_none(),
        "the refused vote was stored"
    );
}
