//! Bounded memory and cancel-safe fetches (#15 item 5), attacked over the simulated network
//! by a hostile peer that speaks the sync protocol by hand. Every bound is measured by
//! counting (areas open, objects and bytes held), never by wall-clock time.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gix_hash::ObjectId;
use rand_core::OsRng;
use swarm_api::body::Mode;
use swarm_api::id::{AccountUri, CommitId, ConversationId, DeviceId};
use swarm_api::identity::Account;
use swarm_api::node::{LocalIdentity, Node, NodeConfig, NodeError};
use swarm_api::object::Object;
use swarm_api::ops;
use swarm_api::repo::{create_conversation, Repo};
use swarm_api::sim::{SimNetwork, SimTransport};
use swarm_api::storage::{
    HeadUpdate, MemoryStorage, Promotion, QuarantineId, Storage, StorageError,
};
use swarm_api::sync::{Decoder, Frame, SyncError};
use swarm_api::traits::{Channel, Incoming, Peer, Transport};
use swarm_api::validate::Engine;
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ------------------------------------------------------------------------------ a probe store

/// A [`MemoryStorage`] that records every quarantine batch it is given and can be told to
/// fail one of them (a full disk).
#[derive(Default)]
struct Probe {
    inner: MemoryStorage,
    /// (objects, bytes) of each `quarantine_put`, in order.
    puts: Mutex<Vec<(usize, u64)>>,
    /// Fail the n-th `quarantine_put` (1-based); 0: never.
    fail_put: AtomicUsize,
    /// How many objects of 128 KiB or more `object` handed out (their data).
    handed_big: AtomicUsize,
}

impl Probe {
    fn open_quarantines(&self) -> usize {
        self.inner.open_quarantines()
    }
    fn puts(&self) -> Vec<(usize, u64)> {
        self.puts.lock().unwrap().clone()
    }
}

impl Storage for Probe {
    fn backend_name(&self) -> &'static str {
        "probe"
    }
    fn reads_need_hash_check(&self) -> bool {
        false
    }
    fn conversations(&self) -> Result<Vec<ConversationId>, StorageError> {
        self.inner.conversations()
    }
    fn object(&self, conv: &ConversationId, id: &ObjectId) -> Result<Option<Object>, StorageError> {
        let o = self.inner.object(conv, id)?;
        if o.as_ref().is_some_and(|o| o.data.len() >= 128 * 1024) {
            self.handed_big.fetch_add(1, Ordering::Relaxed);
        }
        Ok(o)
    }
    /// The size alone: no data handed out (as a backend reading an object header).
    fn object_size(
        &self,
        conv: &ConversationId,
        id: &ObjectId,
    ) -> Result<Option<u64>, StorageError> {
        Ok(self.inner.object(conv, id)?.map(|o| o.data.len() as u64))
    }
    fn head(&self, conv: &ConversationId) -> Result<Option<CommitId>, StorageError> {
        self.inner.head(conv)
    }
    fn write(
        &self,
        conv: &ConversationId,
        objects: &[Object],
        update: HeadUpdate,
    ) -> Result<(), StorageError> {
        self.inner.write(conv, objects, update)
    }
    fn quarantine_open(&self, conv: &ConversationId) -> Result<QuarantineId, StorageError> {
        self.inner.quarantine_open(conv)
    }
    fn quarantine_put(&self, q: &QuarantineId, objects: &[Object]) -> Result<(), StorageError> {
        let n = {
            let mut puts = self.puts.lock().unwrap();
            puts.push((
                objects.len(),
                objects.iter().map(|o| o.data.len() as u64).sum(),
            ));
            puts.len()
        };
        if n == self.fail_put.load(Ordering::Relaxed) {
            return Err(StorageError::backend("probe", "disk full"));
        }
        self.inner.quarantine_put(q, objects)
    }
    fn quarantine_object(
        &self,
        q: &QuarantineId,
        id: &ObjectId,
    ) -> Result<Option<Object>, StorageError> {
        self.inner.quarantine_object(q, id)
    }
    fn quarantine_promote(
        &self,
        q: QuarantineId,
        promotion: &Promotion,
    ) -> Result<(), StorageError> {
        self.inner.quarantine_promote(q, promotion)
    }
    fn quarantine_drop(&self, q: QuarantineId) -> Result<(), StorageError> {
        self.inner.quarantine_drop(q)
    }
}

// ------------------------------------------------------------------------------ honest nodes

struct Dev {
    node: Node,
    storage: Arc<Probe>,
}

impl Dev {
    fn dev(&self) -> DeviceId {
        self.node.peer().device
    }
    fn head(&self, conv: ConversationId) -> Option<CommitId> {
        self.storage.head(&conv).unwrap()
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

fn dev(net: &SimNetwork, name: &str, config: NodeConfig) -> Dev {
    let now = OffsetDateTime::now_utc();
    let account = Account::generate(name, now, &mut OsRng).unwrap();
    let device = account.new_device(now, &mut OsRng).unwrap();
    let crl = account.crl(&[], 1, now).unwrap();
    let me = LocalIdentity {
        account: account.cert().clone(),
        device,
        crl,
    };
    let storage = Arc::new(Probe::default());
    let transport = Arc::new(net.join(me.peer()));
    let node = Node::new(
        me,
        storage.clone(),
        transport,
        Arc::new(Engine::default()),
        config,
    );
    let runner = node.clone();
    tokio::spawn(async move { runner.run().await });
    Dev { node, storage }
}

/// Alice's conversation, which Bob (an honest member) cloned and joined.
async fn alice_and_bob(net: &SimNetwork, config: NodeConfig) -> (Dev, Dev, ConversationId) {
    let (alice, bob) = (dev(net, "Alice", config.clone()), dev(net, "Bob", config));
    let conv = create_conversation(
        &*alice.storage,
        &alice.node.identity().signer(),
        Mode::InvitesOnly,
        None,
        OffsetDateTime::now_utc().unix_timestamp(),
    )
    .unwrap();
    let bob_uri = bob.node.identity().account.uri();
    let (body, changes) = ops::invite(bob_uri);
    alice.node.commit(conv, &body, &changes).await.unwrap();
    bob.node.sync_from(conv, alice.dev()).await.unwrap();
    let st = {
        let repo = Repo::open(&*bob.storage, conv).unwrap();
        repo.state(&repo.head().unwrap()).unwrap()
    };
    let (body, changes) = ops::join(&st, &bob.node.identity().account);
    bob.node.commit(conv, &body, &changes).await.unwrap();
    alice.node.sync_from(conv, bob.dev()).await.unwrap();
    assert_eq!(alice.head(conv), bob.head(conv));
    alice.storage.puts.lock().unwrap().clear();
    (alice, bob, conv)
}

/// Alice still serves Bob and still fetches from him after an attack.
async fn honest_peers_still_served(alice: &Dev, bob: &Dev, conv: ConversationId) {
    let id = alice.node.send(conv, "still here").await.unwrap();
    bob.node.sync_from(conv, alice.dev()).await.unwrap();
    assert_eq!(bob.head(conv), Some(id));
    let id = bob.node.send(conv, "me too").await.unwrap();
    alice.node.sync_from(conv, bob.dev()).await.unwrap();
    assert_eq!(alice.head(conv), Some(id));
}

// ------------------------------------------------------------------------------ the attacker

/// A device on the network that speaks the sync protocol by hand.
struct Mallory {
    peer: Peer,
    transport: SimTransport,
}

impl Mallory {
    fn new(net: &SimNetwork) -> Self {
        let peer = Peer {
            device: DeviceId::from_bytes([0xee; 32]),
            account: AccountUri::from_bytes([0xee; 20]),
        };
        Self {
            peer,
            transport: net.join(peer),
        }
    }

    /// The next sync channel opened to Mallory, after the client's hello.
    async fn accept(&self) -> Box<dyn Channel> {
        self.accept_with_hello().await.0
    }

    /// The next sync channel opened to Mallory and the client's hello read from it.
    async fn accept_with_hello(&self) -> (Box<dyn Channel>, Frame) {
        loop {
            match self.transport.next_incoming().await {
                Some(Incoming::Channel { mut stream, .. }) => {
                    let hello = read_frame(&mut stream).await;
                    assert!(matches!(hello, Frame::Hello { .. }), "{hello:?}");
                    return (stream, hello);
                }
                Some(_) => continue,
                None => panic!("the network closed"),
            }
        }
    }
}

async fn read_frame(stream: &mut Box<dyn Channel>) -> Frame {
    let mut dec = Decoder::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(f) = dec.next_frame().unwrap() {
            return f;
        }
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed");
        dec.push(&buf[..n]);
    }
}

/// Sends `frames` (a hostile peer does not care whether the other side closed).
async fn send(stream: &mut Box<dyn Channel>, frames: impl IntoIterator<Item = Frame>) {
    for f in frames {
        if stream.write_all(&f.encode()).await.is_err() {
            return;
        }
    }
    let _ = stream.flush().await;
}

/// `n` distinct blobs of `size` bytes.
fn blobs(n: usize, size: usize, seed: u8) -> Vec<Object> {
    (0..n)
        .map(|i| {
            let mut data = vec![seed; size];
            data[..8].copy_from_slice(&(i as u64).to_be_bytes());
            Object::blob(data)
        })
        .collect()
}

fn start(objects: usize, bytes: u64) -> Frame {
    Frame::BundleStart {
        head: CommitId::from_bytes([7; 20]),
        objects: objects as u32,
        bytes,
    }
}

fn size(objects: &[Object]) -> u64 {
    objects.iter().map(|o| o.data.len() as u64).sum()
}

/// `MAX_SERVES_PER_ACCOUNT` sync channels to Alice from each of `accounts` accounts (bytes
/// `0..accounts` as ids), none of which sends a byte.
async fn silent_channels(
    net: &SimNetwork,
    alice: &Dev,
    conv: ConversationId,
    accounts: u8,
) -> Vec<Box<dyn Channel>> {
    let mut channels = Vec::new();
    for i in 0..accounts {
        let t = net.join(Peer {
            device: DeviceId::from_bytes([i; 32]),
            account: AccountUri::from_bytes([i; 20]),
        });
        for _ in 0..swarm_api::node::MAX_SERVES_PER_ACCOUNT {
            channels.push(
                t.open_channel(alice.dev(), &format!("sync/{conv}"))
                    .await
                    .unwrap(),
            );
        }
    }
    channels
}

/// Runs the scheduler (virtual time) until `cond` holds.
async fn until(mut cond: impl FnMut() -> bool) {
    for _ in 0..10_000 {
        if cond() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("condition never reached");
}

fn assert_none_stored(dev: &Dev, conv: ConversationId, objects: &[Object]) {
    for o in objects {
        assert_eq!(dev.storage.object(&conv, &o.id()).unwrap(), None);
    }
}

// ------------------------------------------------------------------------------ 1. the guard

/// A hostile peer sends half a bundle and stalls; the fetch is dropped in the middle (a task
/// aborted, a node shut down): its quarantine area is released, nothing is stored, the head
/// stays, the same peer can be fetched from again, and honest peers are still served.
#[tokio::test(start_paused = true)]
async fn a_fetch_cancelled_mid_bundle_releases_its_quarantine() {
    let net = SimNetwork::new(1);
    let (alice, bob, conv) = alice_and_bob(&net, config()).await;
    let mallory = Mallory::new(&net);
    let head = alice.head(conv);
    let node = alice.node.clone();
    let device = mallory.peer.device;
    let fetch = tokio::spawn(async move { node.sync_from(conv, device).await });
    let mut stream = mallory.accept().await;
    let objects = blobs(600, 1024, 1);
    send(&mut stream, [start(600, size(&objects))]).await;
    send(
        &mut stream,
        objects[..300].iter().cloned().map(Frame::Object),
    )
    .await;
    // The first batch is in quarantine: one area open, 256 objects in it.
    until(|| alice.storage.open_quarantines() == 1).await;
    assert_eq!(alice.storage.puts(), vec![(256, 256 * 1024)]);
    fetch.abort();
    assert!(fetch.await.unwrap_err().is_cancelled());
    assert_eq!(alice.storage.open_quarantines(), 0, "the area leaked");
    assert_eq!(alice.head(conv), head);
    assert_none_stored(&alice, conv, &objects);
    // The cancelled fetch does not keep the peer marked as being fetched from.
    let attempts = alice.node.fetch_attempts();
    let node = alice.node.clone();
    let again = tokio::spawn(async move { node.sync_from(conv, device).await });
    let mut stream = mallory.accept().await;
    send(&mut stream, [Frame::UpToDate]).await;
    assert!(again.await.unwrap().unwrap().is_none());
    assert_eq!(alice.node.fetch_attempts(), attempts + 1);
    honest_peers_still_served(&alice, &bob, conv).await;
    assert_eq!(alice.storage.open_quarantines(), 0);
}

/// The same stall, ended by the node's timeout: the area is released, the peer backed off.
#[tokio::test(start_paused = true)]
async fn a_stalled_bundle_times_out_and_releases_its_quarantine() {
    let net = SimNetwork::new(2);
    let (alice, bob, conv) = alice_and_bob(&net, config()).await;
    let mallory = Mallory::new(&net);
    let head = alice.head(conv);
    let node = alice.node.clone();
    let device = mallory.peer.device;
    let fetch = tokio::spawn(async move { node.sync_from(conv, device).await });
    let mut stream = mallory.accept().await;
    let objects = blobs(600, 1024, 2);
    send(&mut stream, [start(600, size(&objects))]).await;
    send(
        &mut stream,
        objects[..300].iter().cloned().map(Frame::Object),
    )
    .await;
    until(|| alice.storage.open_quarantines() == 1).await;
    let err = fetch.await.unwrap().unwrap_err();
    assert!(matches!(err, NodeError::Sync(SyncError::Io(_))), "{err}");
    assert_eq!(alice.storage.open_quarantines(), 0, "the area leaked");
    assert_eq!(alice.head(conv), head);
    assert_none_stored(&alice, conv, &objects);
    assert!(alice.node.backoff_of(&device).is_some());
    drop(stream);
    honest_peers_still_served(&alice, &bob, conv).await;
}

/// A peer sending more objects than it announced is refused; the area is released.
#[tokio::test(start_paused = true)]
async fn more_objects_than_announced_release_the_quarantine() {
    let net = SimNetwork::new(3);
    let (alice, bob, conv) = alice_and_bob(&net, config()).await;
    let mallory = Mallory::new(&net);
    let head = alice.head(conv);
    let node = alice.node.clone();
    let device = mallory.peer.device;
    let fetch = tokio::spawn(async move { node.sync_from(conv, device).await });
    let mut stream = mallory.accept().await;
    let objects = blobs(301, 1024, 3);
    send(&mut stream, [start(300, size(&objects))]).await;
    send(&mut stream, objects.iter().cloned().map(Frame::Object)).await;
    let err = fetch.await.unwrap().unwrap_err();
    assert!(matches!(err, NodeError::Sync(SyncError::Limit(_))), "{err}");
    assert_eq!(alice.storage.puts().len(), 1, "an area was opened");
    assert_eq!(alice.storage.open_quarantines(), 0, "the area leaked");
    assert_eq!(alice.head(conv), head);
    assert_none_stored(&alice, conv, &objects);
    honest_peers_still_served(&alice, &bob, conv).await;
}

/// The storage fails while a bundle is quarantined (a full disk): the area is released.
#[tokio::test(start_paused = true)]
async fn a_storage_failure_mid_bundle_releases_the_quarantine() {
    let net = SimNetwork::new(4);
    let (alice, bob, conv) = alice_and_bob(&net, config()).await;
    let mallory = Mallory::new(&net);
    let head = alice.head(conv);
    alice.storage.fail_put.store(2, Ordering::Relaxed);
    let node = alice.node.clone();
    let device = mallory.peer.device;
    let fetch = tokio::spawn(async move { node.sync_from(conv, device).await });
    let mut stream = mallory.accept().await;
    let objects = blobs(600, 1024, 4);
    send(&mut stream, [start(600, size(&objects))]).await;
    send(&mut stream, objects.iter().cloned().map(Frame::Object)).await;
    let err = fetch.await.unwrap().unwrap_err();
    assert!(
        matches!(err, NodeError::Sync(SyncError::Storage(_))),
        "{err}"
    );
    assert_eq!(alice.storage.puts().len(), 2);
    assert_eq!(alice.storage.open_quarantines(), 0, "the area leaked");
    assert_eq!(alice.head(conv), head);
    assert_none_stored(&alice, conv, &objects);
    alice.storage.fail_put.store(0, Ordering::Relaxed);
    honest_peers_still_served(&alice, &bob, conv).await;
}

// ------------------------------------------------------------------------------ 2. idle time

/// Bob writes `n` messages Alice does not have (cut off from her, so nothing is announced).
async fn bob_writes_alone(
    net: &SimNetwork,
    alice: &Dev,
    bob: &Dev,
    conv: ConversationId,
    n: usize,
) {
    net.partition(&[vec![alice.dev()], vec![bob.dev()]]);
    for i in 0..n {
        bob.node.send(conv, &format!("offline {i}")).await.unwrap();
    }
    // The announcements go out from their own tasks: let them fail while still cut off.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    net.heal();
}

/// The frames an honest server holding Bob's history sends to Alice's hello.
fn bundle_for(alice: &Dev, bob: &Dev, hello: Frame) -> Vec<Frame> {
    let mut server = swarm_api::sync::Server::new(alice.node.peer());
    let mut graph = swarm_api::graph::Graph::new();
    server
        .handle(hello, &*bob.storage, &Engine::default(), &mut graph)
        .unwrap()
}

/// A peer that sends a valid bundle slowly but steadily — one frame every 4 s, minutes in
/// all, far beyond the 10 s idle timeout (and the old whole-fetch deadline) — is fetched
/// from completely (virtual time).
#[tokio::test(start_paused = true)]
async fn a_slow_but_steady_bundle_completes() {
    let net = SimNetwork::new(5);
    let (alice, bob, conv) = alice_and_bob(&net, config()).await;
    bob_writes_alone(&net, &alice, &bob, conv, 40).await;
    let mallory = Mallory::new(&net);
    let node = alice.node.clone();
    let device = mallory.peer.device;
    let fetch = tokio::spawn(async move { node.sync_from(conv, device).await });
    let (mut stream, hello) = mallory.accept_with_hello().await;
    let frames = bundle_for(&alice, &bob, hello);
    let gap = Duration::from_secs(4);
    // Minutes of transfer: twice the old default deadline of a whole fetch (60 s), twelve
    // times the idle timeout (10 s).
    assert!(gap * frames.len() as u32 > Duration::from_secs(120));
    for f in frames {
        tokio::time::sleep(gap).await;
        send(&mut stream, [f]).await;
    }
    let i = fetch.await.unwrap().unwrap().expect("new commits");
    assert_eq!(i.new_commits.len(), 40);
    assert_eq!(alice.head(conv), bob.head(conv));
    assert_eq!(alice.storage.open_quarantines(), 0);
}

/// A peer that trickles part of a bundle, then goes silent, fails the fetch once nothing has
/// arrived for the idle timeout (virtual time): not before, however long it ran.
#[tokio::test(start_paused = true)]
async fn a_peer_that_goes_silent_fails_after_the_idle_time() {
    let net = SimNetwork::new(6);
    let (alice, bob, conv) = alice_and_bob(&net, config()).await;
    bob_writes_alone(&net, &alice, &bob, conv, 20).await;
    let head = alice.head(conv);
    let mallory = Mallory::new(&net);
    let node = alice.node.clone();
    let device = mallory.peer.device;
    let fetch = tokio::spawn(async move { node.sync_from(conv, device).await });
    let (mut stream, hello) = mallory.accept_with_hello().await;
    let frames = bundle_for(&alice, &bob, hello);
    let half = frames.len() / 2;
    for f in frames.into_iter().take(half) {
        tokio::time::sleep(Duration::from_secs(4)).await;
        send(&mut stream, [f]).await;
        assert!(!fetch.is_finished(), "a steady peer was cut off");
    }
    // Silence, the stream left open.
    let silent = tokio::time::Instant::now();
    let err = fetch.await.unwrap().unwrap_err();
    let waited = silent.elapsed();
    assert!(err.to_string().contains("no byte received"), "{err}");
    let idle = config().sync_timeout;
    assert!(
        waited >= idle && waited < idle + Duration::from_secs(1),
        "{waited:?}"
    );
    assert_eq!(alice.head(conv), head);
    assert_eq!(alice.storage.open_quarantines(), 0);
    assert!(alice.node.backoff_of(&device).is_some());
    drop(stream);
}

/// A member who trickles a bundle (a frame every 8 s, under the 10 s idle timeout: minutes in
/// all) holds up only its own fetch: an announcement from Bob that queued behind it is
/// fetched once the queue has waited the idle time, while Mallory's fetch goes on. Before,
/// the conversation's announcement queue waited for Mallory to finish (up to the 2 h cap).
#[tokio::test(start_paused = true)]
async fn a_trickling_member_holds_up_no_other_members_fetch() {
    let net = SimNetwork::new(7);
    let (alice, bob, conv) = alice_and_bob(&net, config()).await;
    // Mallory is an invited member: her announcements are taken.
    let now = OffsetDateTime::now_utc();
    let account = Account::generate("Mallory", now, &mut OsRng).unwrap();
    let device = account.new_device(now, &mut OsRng).unwrap();
    let (body, changes) = ops::invite(account.uri());
    alice.node.commit(conv, &body, &changes).await.unwrap();
    bob.node.sync_from(conv, alice.dev()).await.unwrap();
    let peer = Peer {
        device: device.id(),
        account: account.uri(),
    };
    let mallory = Mallory {
        peer,
        transport: net.join(peer),
    };
    bob_writes_alone(&net, &alice, &bob, conv, 45).await;
    let announce = swarm_api::traits::Signal {
        kind: swarm_api::node::ANNOUNCE.into(),
        payload: format!(
            r#"{{"deviceId":"{}","conversationId":"{conv}","commit":"{}"}}"#,
            peer.device,
            CommitId::from_bytes([9; 20])
        )
        .into_bytes(),
    };
    mallory
        .transport
        .send_signal(
            swarm_api::traits::Destination::Device(alice.dev()),
            announce,
        )
        .await
        .unwrap();
    let (mut stream, hello) = mallory.accept_with_hello().await;
    let frames = bundle_for(&alice, &bob, hello);
    let gap = Duration::from_secs(8);
    assert!(gap * frames.len() as u32 > Duration::from_secs(300));
    let trickle = tokio::spawn(async move {
        for f in frames {
            tokio::time::sleep(gap).await;
            send(&mut stream, [f]).await;
        }
        stream
    });
    // Bob's live message: announced to Alice while her queue is busy with Mallory.
    tokio::time::advance(Duration::from_secs(1)).await;
    let live = bob.node.send(conv, "live").await.unwrap();
    let asked = tokio::time::Instant::now();
    while alice.head(conv) != Some(live) {
        assert!(
            asked.elapsed() < Duration::from_secs(60),
            "Bob's message waited for Mallory's trickle"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!trickle.is_finished(), "Mallory was still trickling");
    trickle.abort();
}

// ------------------------------------------------------------------------------ 3. serve caps

/// A peer opening 50 sync channels at once (and sending nothing on them) is served on at most
/// `MAX_SERVES_PER_ACCOUNT` of them; the others are answered `busy` and closed at once. An
/// honest member is served meanwhile, and the silent serves end after the idle timeout.
#[tokio::test(start_paused = true)]
async fn a_peer_opening_fifty_syncs_is_served_four_at_a_time() {
    use swarm_api::node::MAX_SERVES_PER_ACCOUNT;
    let net = SimNetwork::new(7);
    let (alice, bob, conv) = alice_and_bob(&net, config()).await;
    let mallory = Mallory::new(&net);
    let mut channels = Vec::new();
    for _ in 0..50 {
        let c = mallory
            .transport
            .open_channel(alice.dev(), &format!("sync/{conv}"))
            .await
            .unwrap();
        channels.push(c);
    }
    // Let Alice take every channel in.
    until(|| alice.node.busy_refusals() + alice.node.serving() as u64 == 50).await;
    assert_eq!(alice.node.serving(), MAX_SERVES_PER_ACCOUNT);
    assert_eq!(
        alice.node.busy_refusals(),
        50 - MAX_SERVES_PER_ACCOUNT as u64
    );
    // The refused ones read `busy` then the end of the stream, without waiting.
    let mut busy = 0;
    for c in &mut channels {
        let mut buf = Vec::new();
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::ZERO, c.read_to_end(&mut buf)).await {
            let mut dec = Decoder::new();
            dec.push(&buf);
            assert_eq!(
                dec.next_frame().unwrap(),
                Some(Frame::Refused("busy".into()))
            );
            busy += 1;
        }
    }
    assert_eq!(busy, 50 - MAX_SERVES_PER_ACCOUNT);
    // An honest member is served while Mallory holds her four slots.
    let id = alice.node.send(conv, "for Bob").await.unwrap();
    bob.node.sync_from(conv, alice.dev()).await.unwrap();
    assert_eq!(bob.head(conv), Some(id));
    assert_eq!(alice.node.serving(), MAX_SERVES_PER_ACCOUNT);
    // Silent serves end after the idle timeout.
    tokio::time::sleep(config().sync_timeout + Duration::from_secs(1)).await;
    until(|| alice.node.serving() == 0).await;
    drop(channels);
    honest_peers_still_served(&alice, &bob, conv).await;
}

/// Seventeen devices opening four silent syncs each: at most `MAX_SERVES` (64) are served at
/// once in all; the rest are refused `busy`.
#[tokio::test(start_paused = true)]
async fn many_devices_are_served_at_most_sixty_four_at_a_time() {
    use swarm_api::node::MAX_SERVES;
    let net = SimNetwork::new(8);
    let (alice, bob, conv) = alice_and_bob(&net, config()).await;
    // 17 invited accounts (members' pool), 4 channels each: 68 > 64.
    for i in 0..17u8 {
        let (body, changes) = ops::invite(AccountUri::from_bytes([i; 20]));
        alice.node.commit(conv, &body, &changes).await.unwrap();
    }
    // Bob's fetches of the invitations are over before the channels are opened.
    until(|| bob.head(conv) == alice.head(conv) && alice.node.serving() == 0).await;
    let channels = silent_channels(&net, &alice, conv, 17).await;
    let opened = channels.len() as u64;
    until(|| alice.node.busy_refusals() + alice.node.serving() as u64 == opened).await;
    assert_eq!(alice.node.serving(), MAX_SERVES);
    assert_eq!(alice.node.busy_refusals(), opened - MAX_SERVES as u64);
    tokio::time::sleep(config().sync_timeout + Duration::from_secs(1)).await;
    until(|| alice.node.serving() == 0).await;
    drop(channels);
    honest_peers_still_served(&alice, &bob, conv).await;
}

/// Accounts are free to mint: 17 strangers holding 4 silent channels each get only the
/// strangers' pool (8 slots), and a member is served meanwhile. Before, they took all 64
/// slots and Bob got `busy` until their idle timeouts.
#[tokio::test(start_paused = true)]
async fn minted_strangers_cannot_fill_the_members_serve_slots() {
    use swarm_api::node::MAX_STRANGER_SERVES;
    let net = SimNetwork::new(9);
    let (alice, bob, conv) = alice_and_bob(&net, config()).await;
    let channels = silent_channels(&net, &alice, conv, 17).await;
    let opened = channels.len() as u64;
    until(|| alice.node.busy_refusals() + alice.node.serving() as u64 == opened).await;
    assert_eq!(alice.node.serving(), MAX_STRANGER_SERVES);
    // Bob, a member, is served while the strangers hold theirs.
    let id = alice.node.send(conv, "for Bob").await.unwrap();
    bob.node.sync_from(conv, alice.dev()).await.unwrap();
    assert_eq!(bob.head(conv), Some(id));
    drop(channels);
    honest_peers_still_served(&alice, &bob, conv).await;
}

// ------------------------------------------------------------------------------ 4. batches

/// A bundle of 40 blobs of 1 MiB (and 300 small ones) reaches the quarantine in batches of at
/// most `BATCH_BYTES` (8 MiB) and `BATCH_OBJECTS` (256): what a fetch holds in memory before a
/// flush, counted by the storage that receives each batch. Before, the 40 MiB came in one.
#[tokio::test(start_paused = true)]
async fn a_fetch_holds_at_most_eight_mebibytes_before_a_flush() {
    use swarm_api::sync::{BATCH_BYTES, BATCH_OBJECTS};
    let net = SimNetwork::new(9);
    let (alice, bob, conv) = alice_and_bob(&net, config()).await;
    let mallory = Mallory::new(&net);
    let head = alice.head(conv);
    let node = alice.node.clone();
    let device = mallory.peer.device;
    let fetch = tokio::spawn(async move { node.sync_from(conv, device).await });
    let mut stream = mallory.accept().await;
    let mut objects = blobs(40, 1 << 20, 9);
    objects.extend(blobs(300, 100, 10));
    send(&mut stream, [start(objects.len(), size(&objects))]).await;
    send(&mut stream, objects.iter().cloned().map(Frame::Object)).await;
    send(&mut stream, [Frame::BundleEnd]).await;
    // The tip is nowhere: refused after everything was quarantined.
    assert!(fetch.await.unwrap().is_err());
    let puts = alice.storage.puts();
    assert_eq!(
        puts.iter().map(|p| p.0).sum::<usize>(),
        objects.len(),
        "{puts:?}"
    );
    // The stated bound: 256 objects, 8 MiB (each object here is smaller than 8 MiB).
    assert_eq!((BATCH_OBJECTS, BATCH_BYTES), (256, 8 << 20));
    for (n, bytes) in &puts {
        assert!(*n <= 256 && *bytes <= 8 << 20, "{puts:?}");
    }
    assert!(puts.len() >= 5, "{puts:?}");
    assert_eq!(alice.storage.open_quarantines(), 0);
    assert_eq!(alice.head(conv), head);
    assert_none_stored(&alice, conv, &objects);
    honest_peers_still_served(&alice, &bob, conv).await;
}

// ------------------------------------------------------------------------------ 5. streaming

/// A history of 60 profile updates of 256 KiB each (15 MiB) is served to a client that reads
/// one frame at a time through a 64 KiB pipe: the server never holds more than 2 of those
/// blobs it has not delivered yet (counted by the storage, which hands out each object's
/// data), where it used to read the whole bundle before writing its first byte.
#[tokio::test(start_paused = true)]
async fn a_server_streams_a_large_history_one_object_at_a_time() {
    let net = SimNetwork::new(10);
    let alice = dev(&net, "Alice", config());
    let conv = create_conversation(
        &*alice.storage,
        &alice.node.identity().signer(),
        Mode::InvitesOnly,
        None,
        OffsetDateTime::now_utc().unix_timestamp(),
    )
    .unwrap();
    const BIG: usize = 256 * 1024;
    for i in 0..60 {
        let mut description = format!("{i} ");
        description.push_str(&"x".repeat(BIG));
        let (body, changes) = ops::profile(Some("big"), Some(&description));
        alice.node.commit(conv, &body, &changes).await.unwrap();
    }
    let storage: Arc<dyn Storage> = alice.storage.clone();
    let me = alice.node.peer();
    let (mut client, mut server_end) = tokio::io::duplex(64 * 1024);
    let server = tokio::spawn(async move {
        let graph = tokio::sync::Mutex::new(swarm_api::graph::Graph::new());
        swarm_api::sync::serve(&mut server_end, me, &*storage, &Engine::default(), &graph).await
    });
    alice.storage.handed_big.store(0, Ordering::Relaxed);
    let hello = Frame::Hello {
        version: swarm_api::sync::wire::VERSION,
        conv,
        head: None,
    };
    client.write_all(&hello.encode()).await.unwrap();
    let mut dec = Decoder::new();
    let mut buf = [0u8; 4096];
    let (mut delivered_big, mut frames, mut announced) = (0usize, 0usize, None);
    let mut most_held = 0;
    loop {
        // Let the server run as far as the pipe lets it.
        for _ in 0..200 {
            tokio::task::yield_now().await;
        }
        let held = alice.storage.handed_big.load(Ordering::Relaxed) - delivered_big;
        most_held = most_held.max(held);
        assert!(
            held <= 2,
            "the server holds {held} large blobs not delivered"
        );
        let frame = loop {
            if let Some(f) = dec.next_frame().unwrap() {
                break f;
            }
            let n = client.read(&mut buf).await.unwrap();
            assert!(n > 0);
            dec.push(&buf[..n]);
        };
        frames += 1;
        match frame {
            Frame::BundleStart { objects, bytes, .. } => {
                assert!(bytes > 60 * BIG as u64);
                announced = Some(objects as usize);
            }
            Frame::Object(o) => {
                if o.data.len() >= BIG {
                    delivered_big += 1;
                }
            }
            Frame::BundleEnd => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(announced, Some(frames - 2));
    assert_eq!(delivered_big, 60);
    assert!(most_held >= 1, "the measure saw nothing");
    server.await.unwrap().unwrap();
}

/// Devices are free to mint: ten devices of one account opening four syncs each are served
/// `MAX_SERVES_PER_ACCOUNT` at a time in all, not four per device.
#[tokio::test(start_paused = true)]
async fn devices_of_one_account_share_its_serve_slots() {
    use swarm_api::node::MAX_SERVES_PER_ACCOUNT;
    let net = SimNetwork::new(10);
    let (alice, bob, conv) = alice_and_bob(&net, config()).await;
    let mut channels = Vec::new();
    for i in 0..10u8 {
        let t = net.join(Peer {
            device: DeviceId::from_bytes([0x40 + i; 32]),
            account: AccountUri::from_bytes([0x40; 20]),
        });
        for _ in 0..4 {
            channels.push(
                t.open_channel(alice.dev(), &format!("sync/{conv}"))
                    .await
                    .unwrap(),
            );
        }
    }
    until(|| alice.node.busy_refusals() + alice.node.serving() as u64 == 40).await;
    assert_eq!(alice.node.serving(), MAX_SERVES_PER_ACCOUNT);
    tokio::time::sleep(config().sync_timeout + Duration::from_secs(1)).await;
    until(|| alice.node.serving() == 0).await;
    drop(channels);
    honest_peers_still_served(&alice, &bob, conv).await;
}
