//! Real UDP sockets on 127.0.0.1: handshake policy (chains, revocation, TLS 1.2), malformed
//! input, and two `Node`s converging over QUIC.

use std::sync::Arc;
use std::time::Duration;

use rand_core::OsRng;
use swarm_api::body::Mode;
use swarm_api::id::ConversationId;
use swarm_api::identity::{forge_device_cert, Account, Crl, Device};
use swarm_api::node::{LocalIdentity, Node, NodeConfig};
use swarm_api::ops;
use swarm_api::repo::{create_conversation, Repo};
use swarm_api::storage::{MemoryStorage, Storage};
use swarm_api::traits::{Destination, Incoming, Signal, Transport, TransportError};
use swarm_api::validate::Engine;
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use transport_quic::{QuicConfig, QuicTransport};

fn localhost() -> std::net::SocketAddr {
    "127.0.0.1:0".parse().expect("address")
}

fn config() -> QuicConfig {
    QuicConfig {
        connect_timeout: Duration::from_secs(5),
        ..QuicConfig::default()
    }
}

fn account(name: &str) -> Account {
    Account::generate(name, OffsetDateTime::now_utc(), &mut OsRng).expect("account")
}

fn identity_of(account: &Account) -> LocalIdentity {
    let now = OffsetDateTime::now_utc();
    LocalIdentity {
        account: account.cert().clone(),
        device: account.new_device(now, &mut OsRng).expect("device"),
        crl: account.crl(&[], 1, now).expect("crl"),
    }
}

fn bind(me: &LocalIdentity) -> (QuicTransport, std::net::SocketAddr) {
    QuicTransport::bind(localhost(), me, config()).expect("bind")
}

async fn next(t: &QuicTransport, within: Duration) -> Option<Incoming> {
    tokio::time::timeout(within, t.next_incoming())
        .await
        .ok()
        .flatten()
}

fn signal(kind: &str, payload: &[u8]) -> Signal {
    Signal {
        kind: kind.into(),
        payload: payload.to_vec(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_and_signal_between_authenticated_devices() {
    let (a_acc, b_acc) = (account("Alice"), account("Bob"));
    let (alice, bob) = (identity_of(&a_acc), identity_of(&b_acc));
    let (ta, _) = bind(&alice);
    let (tb, b_addr) = bind(&bob);
    ta.add_peer(Destination::Device(bob.device.id()), b_addr);

    let mut ch = ta
        .open_channel(bob.device.id(), "sync/test")
        .await
        .expect("open channel");
    ch.write_all(b"ping").await.expect("write");
    let Some(Incoming::Channel {
        from,
        name,
        mut stream,
    }) = next(&tb, Duration::from_secs(5)).await
    else {
        panic!("no channel arrived");
    };
    assert_eq!(from, alice.peer(), "peer derived from the certificate");
    assert_eq!(name, "sync/test");
    let mut buf = [0u8; 4];
    stream.read_exact(&mut buf).await.expect("read");
    assert_eq!(&buf, b"ping");
    stream.write_all(b"pong").await.expect("answer");
    stream.shutdown().await.expect("finish");
    ch.read_exact(&mut buf).await.expect("read answer");
    assert_eq!(&buf, b"pong");

    // Bob learned Alice's address from the connection and reuses it for a signal back.
    assert!(tb.address_of(&alice.device.id()).is_some());
    tb.send_signal(Destination::Device(alice.device.id()), signal("k", b"hi"))
        .await
        .expect("signal");
    match next(&ta, Duration::from_secs(5)).await {
        Some(Incoming::Signal { from, signal: s }) => {
            assert_eq!(from, bob.peer());
            assert_eq!(s, signal("k", b"hi"));
        }
        _ => panic!("no signal arrived"),
    }
    // By account, too.
    ta.send_signal(Destination::Account(b_acc.uri()), signal("k", b"all"))
        .await
        .expect("signal to an account");
    assert!(matches!(
        next(&tb, Duration::from_secs(5)).await,
        Some(Incoming::Signal { .. })
    ));
    // An unknown device is unreachable, not a hang.
    let stranger = identity_of(&account("Stranger"));
    assert!(matches!(
        ta.open_channel(stranger.device.id(), "x").await,
        Err(TransportError::Unreachable(_))
    ));
    ta.close();
    assert!(ta.next_incoming().await.is_none());
}

/// Asserts that `client` gets no working channel `name` to `server_me`: the open fails, or the
/// server closes the connection at once.
async fn assert_no_working_channel(client: &QuicTransport, server_me: &LocalIdentity, name: &str) {
    match client.open_channel(server_me.device.id(), name).await {
        Err(_) => {}
        Ok(mut ch) => {
            let _ = ch.write_all(b"hello").await;
            let mut buf = [0u8; 1];
            let r = tokio::time::timeout(Duration::from_secs(5), ch.read(&mut buf))
                .await
                .expect("the refused connection is closed promptly");
            assert!(r.is_err(), "the server must close the connection: {r:?}");
        }
    }
}

/// Asserts that `client` gets no working channel to `server` and that the server got
/// nothing. (In TLS 1.3 the client finishes its side of the handshake before the server has
/// checked the client's certificate, so a refused client may see its connection open and
/// then be closed by the server's alert.)
async fn assert_refused(client: &QuicTransport, server: &QuicTransport, server_me: &LocalIdentity) {
    assert_no_working_channel(client, server_me, "sync/x").await;
    assert!(
        next(server, Duration::from_millis(300)).await.is_none(),
        "nothing may reach the server"
    );
    assert!(
        server.connected().is_empty(),
        "the server keeps no connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_or_mismatched_chains_are_refused_at_the_handshake() {
    let now = OffsetDateTime::now_utc();
    let (a_acc, b_acc, m_acc) = (account("Alice"), account("Bob"), account("Mallory"));
    let bob = identity_of(&b_acc);
    let (tb, b_addr) = bind(&bob);

    // A device cert naming Alice's account as issuer, signed by Mallory's key.
    let mallory_key = ed25519_dalek::SigningKey::generate(&mut OsRng);
    let device_key = ed25519_dalek::SigningKey::generate(&mut OsRng);
    let forged = forge_device_cert(a_acc.cert(), &mallory_key, &device_key.verifying_key(), now)
        .expect("forge");
    let forger = LocalIdentity {
        account: a_acc.cert().clone(),
        device: Device::from_parts(device_key, forged).expect("device"),
        crl: a_acc.crl(&[], 1, now).expect("crl"),
    };
    let (tf, f_addr) = bind(&forger);
    tf.add_peer(Destination::Device(bob.device.id()), b_addr);
    assert_refused(&tf, &tb, &bob).await;

    // A genuine Mallory device presented with Alice's account certificate.
    let mallory = identity_of(&m_acc);
    let mismatched = LocalIdentity {
        account: a_acc.cert().clone(),
        device: mallory.device,
        crl: a_acc.crl(&[], 1, now).expect("crl"),
    };
    let (tm, _) = bind(&mismatched);
    tm.add_peer(Destination::Device(bob.device.id()), b_addr);
    assert_refused(&tm, &tb, &bob).await;

    // The other direction: Bob connecting to the forger refuses its server certificate.
    tb.add_peer(Destination::Device(forger.device.id()), f_addr);
    assert_refused(&tb, &tf, &forger).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_devices_are_refused() {
    let now = OffsetDateTime::now_utc();
    let (a_acc, b_acc) = (account("Alice"), account("Bob"));
    let alice = identity_of(&a_acc);
    let bob = identity_of(&b_acc);
    let crl: Crl = a_acc.crl(&[alice.device.cert()], 2, now).expect("crl");
    let mut cfg = config();
    let uri = a_acc.uri();
    cfg.crls = Some(Arc::new(move |a: &swarm_api::id::AccountUri| {
        if *a == uri {
            vec![crl.clone()]
        } else {
            Vec::new()
        }
    }));
    let (tb, b_addr) = QuicTransport::bind(localhost(), &bob, cfg).expect("bind");
    let (ta, _) = bind(&alice);
    ta.add_peer(Destination::Device(bob.device.id()), b_addr);
    assert_refused(&ta, &tb, &bob).await;

    // A device of the same account that is not revoked gets through.
    let alice2 = identity_of(&a_acc);
    let (ta2, _) = bind(&alice2);
    ta2.add_peer(Destination::Device(bob.device.id()), b_addr);
    ta2.open_channel(bob.device.id(), "sync/x")
        .await
        .expect("a non-revoked device connects");
}

#[derive(Debug)]
struct AcceptAnything;

impl rustls::client::danger::ServerCertVerifier for AcceptAnything {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn tls12_only_client() -> rustls::ClientConfig {
    let mut c = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS12])
    .expect("TLS 1.2 config")
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(AcceptAnything))
    .with_no_client_auth();
    c.alpn_protocols = vec![transport_quic::ALPN.to_vec()];
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls12_only_client_is_refused() {
    let bob = identity_of(&account("Bob"));

    // quinn itself will not start a QUIC handshake from a TLS 1.2-only configuration (it
    // panics in `quinn-proto`), so a TLS 1.2-only ClientHello is fed to the very server
    // configuration the transport uses, and the refusal must be the server's.
    let server_cfg = transport_quic::tls::server_config(&bob, None).expect("server config");
    let mut server = rustls::ServerConnection::new(Arc::new(server_cfg)).expect("server");
    let mut client = rustls::ClientConnection::new(
        Arc::new(tls12_only_client()),
        "swarm".try_into().expect("name"),
    )
    .expect("client");
    let mut hello = Vec::new();
    client.write_tls(&mut hello).expect("ClientHello");
    server.read_tls(&mut &hello[..]).expect("read ClientHello");
    let err = server
        .process_new_packets()
        .expect_err("the server must refuse TLS 1.2");
    assert!(
        matches!(err, rustls::Error::PeerIncompatible(_)),
        "unexpected error: {err:?}"
    );
    // The server answers with a fatal alert, not a ServerHello.
    let mut answer = Vec::new();
    server.write_tls(&mut answer).expect("alert");
    assert_eq!(answer.first(), Some(&0x15), "a TLS alert record");
    client.read_tls(&mut &answer[..]).expect("read alert");
    assert!(client.process_new_packets().is_err());
    assert!(!client.is_handshaking() || client.process_new_packets().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_signals_and_oversized_headers_are_refused_without_panic() {
    let (alice, bob) = (identity_of(&account("Alice")), identity_of(&account("Bob")));
    let (ta, _) = bind(&alice);
    let (tb, b_addr) = bind(&bob);
    ta.add_peer(Destination::Device(bob.device.id()), b_addr);

    // Refused locally.
    assert!(ta
        .open_channel(bob.device.id(), &"n".repeat(5000))
        .await
        .is_err());
    assert!(ta
        .send_signal(
            Destination::Device(bob.device.id()),
            signal("k", &vec![0u8; 70_000])
        )
        .await
        .is_err());

    // Raw bytes on the wire.
    let conn = ta.connection(bob.device.id()).await.expect("connection");
    let garbage: Vec<Vec<u8>> = vec![
        vec![],
        vec![0xff],
        vec![0xff, 0xff, b'a'],
        vec![0, 0],
        vec![0, 1, 0xff],
        {
            let mut v = vec![0, 1, b'k'];
            v.extend(std::iter::repeat_n(0u8, 100_000));
            v
        },
    ];
    for g in &garbage {
        let mut s = conn.open_uni().await.expect("uni");
        let _ = s.write_all(g).await;
        let _ = s.finish();
    }
    // Oversized and non-UTF-8 channel headers.
    for h in [vec![0xff, 0xff, 1, 2, 3], vec![0, 2, 0xff, 0xfe]] {
        let (mut s, _r) = conn.open_bi().await.expect("bi");
        let _ = s.write_all(&h).await;
        let _ = s.finish();
    }
    // The connection still works, and only the valid signal comes through (whatever order
    // the streams are processed in, no malformed one may ever surface).
    ta.send_signal(Destination::Device(bob.device.id()), signal("ok", b"1"))
        .await
        .expect("valid signal");
    match next(&tb, Duration::from_secs(5)).await {
        Some(Incoming::Signal { signal: s, .. }) => assert_eq!(s, signal("ok", b"1")),
        Some(Incoming::Channel { name, .. }) => panic!("a malformed channel got through: {name}"),
        None => panic!("the valid signal did not arrive"),
    }
    assert!(next(&tb, Duration::from_millis(300)).await.is_none());
}

struct TestNode {
    node: Node,
    storage: Arc<MemoryStorage>,
    account: Account,
    transport: QuicTransport,
    addr: std::net::SocketAddr,
}

fn node(name: &str) -> TestNode {
    let account = account(name);
    let me = identity_of(&account);
    let (transport, addr) = bind(&me);
    let storage = Arc::new(MemoryStorage::new());
    let node = Node::new(
        me,
        storage.clone(),
        Arc::new(transport.clone()),
        Arc::new(Engine::default()),
        NodeConfig {
            sync_timeout: Duration::from_secs(10),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            ..NodeConfig::default()
        },
    );
    let runner = node.clone();
    tokio::spawn(async move { runner.run().await });
    TestNode {
        node,
        storage,
        account,
        transport,
        addr,
    }
}

impl TestNode {
    fn dev(&self) -> swarm_api::DeviceId {
        self.node.peer().device
    }
    fn head(&self, conv: ConversationId) -> Option<swarm_api::id::CommitId> {
        self.storage.head(&conv).expect("head")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_converge_over_quic_and_non_members_are_refused() {
    let alice = node("Alice");
    let bob = node("Bob");
    alice
        .transport
        .add_peer(Destination::Device(bob.dev()), bob.addr);
    bob.transport
        .add_peer(Destination::Device(alice.dev()), alice.addr);

    let conv = create_conversation(
        &*alice.storage,
        &alice.node.identity().signer(),
        Mode::InvitesOnly,
        None,
        OffsetDateTime::now_utc().unix_timestamp(),
    )
    .expect("create conversation");
    let (body, changes) = ops::invite(bob.account.uri());
    alice
        .node
        .commit(conv, &body, &changes)
        .await
        .expect("invite");

    bob.node
        .sync_from(conv, alice.dev())
        .await
        .expect("clone over QUIC");
    let st = {
        let repo = Repo::open(&*bob.storage, conv).expect("open clone");
        repo.state(&repo.head().expect("head")).expect("state")
    };
    let (body, changes) = ops::join(&st, bob.account.cert());
    bob.node.commit(conv, &body, &changes).await.expect("join");

    // Every head change a fetch makes is an event: wait on those, not on a timer.
    let (mut ea, mut eb) = (alice.node.events(), bob.node.events());
    alice.node.send(conv, "hello Bob").await.expect("send");
    bob.node.send(conv, "hello Alice").await.expect("send");

    // Announcements flow over QUIC signals; fetches over QUIC channels.
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let (a, b) = (alice.head(conv), bob.head(conv));
            if a.is_some() && a == b {
                let repo = Repo::open(&*alice.storage, conv).expect("open");
                let texts: Vec<String> = repo
                    .history()
                    .expect("history")
                    .iter()
                    .map(|c| c.message.clone())
                    .collect();
                if texts.iter().any(|t| t.contains("hello Bob"))
                    && texts.iter().any(|t| t.contains("hello Alice"))
                {
                    break;
                }
            }
            tokio::select! {
                _ = ea.recv() => {}
                _ = eb.recv() => {}
            }
        }
    })
    .await
    .expect("both nodes converge to the same head");

    // A device of an account that is not a member cannot fetch the conversation.
    let carol = node("Carol");
    carol
        .transport
        .add_peer(Destination::Device(alice.dev()), alice.addr);
    let err = carol
        .node
        .sync_from(conv, alice.dev())
        .await
        .expect_err("a non-member is refused");
    assert!(err.to_string().contains("not a member"), "{err}");
    assert_eq!(carol.head(conv), None, "nothing stored");
}

/// Bob listens with the CRLs of the conversations his storage holds (`KnownCrls`); his
/// storage holds one of Alice's, and Alice has a second device, her phone.
struct Revocable {
    a_acc: Account,
    alice: LocalIdentity,
    phone: LocalIdentity,
    bob: LocalIdentity,
    storage: Arc<MemoryStorage>,
    conv: ConversationId,
    tb: QuicTransport,
    b_addr: std::net::SocketAddr,
}

impl Revocable {
    fn new() -> Self {
        let (a_acc, b_acc) = (account("Alice"), account("Bob"));
        let (alice, phone, bob) = (
            identity_of(&a_acc),
            identity_of(&a_acc),
            identity_of(&b_acc),
        );
        let storage = Arc::new(MemoryStorage::new());
        let conv = create_conversation(
            &*storage,
            &alice.signer(),
            Mode::InvitesOnly,
            None,
            OffsetDateTime::now_utc().unix_timestamp(),
        )
        .expect("create");
        let engine = Arc::new(Engine::default());
        let crls = Arc::new(swarm_api::host::KnownCrls::new(storage.clone(), engine)).lookup();
        let cfg = QuicConfig {
            crls: Some(crls),
            ..config()
        };
        let (tb, b_addr) = QuicTransport::bind(localhost(), &bob, cfg).expect("bind");
        Self {
            a_acc,
            alice,
            phone,
            bob,
            storage,
            conv,
            tb,
            b_addr,
        }
    }

    /// A transport of `me` that knows Bob's address.
    fn connect(&self, me: &LocalIdentity) -> QuicTransport {
        let (t, _) = bind(me);
        t.add_peer(Destination::Device(self.bob.device.id()), self.b_addr);
        t
    }

    /// Alice revokes her phone in the conversation Bob stores.
    fn revoke_phone(&self) {
        use swarm_api::body::Body;
        use swarm_api::repo::FileChange;
        let now = OffsetDateTime::now_utc();
        let crl = self
            .a_acc
            .crl(&[self.phone.device.cert()], 2, now)
            .expect("crl");
        Repo::open(&*self.storage, self.conv)
            .expect("open")
            .append(
                &self.alice.signer(),
                &Body::text("revoking my phone"),
                &[FileChange::Write(
                    swarm_api::layout::crl(&self.a_acc.uri(), &crl.id()),
                    crl.pem().as_bytes().to_vec(),
                )],
                now.unix_timestamp(),
            )
            .expect("the CRL commit");
    }
}

/// #15 item 6, end to end: a node's QUIC transport refuses a device that its account revoked
/// in a conversation the node stores (`KnownCrls`, read at each handshake): before the CRL
/// arrives the device connects; after, a new connection from it is refused while its
/// account's other device still connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_revoked_in_a_stored_conversation_is_refused_at_the_handshake() {
    let r = Revocable::new();
    let bob_id = r.bob.device.id();
    r.connect(&r.phone)
        .open_channel(bob_id, "sync/x")
        .await
        .expect("not revoked yet");
    r.revoke_phone();

    // A new connection from the phone gets no working channel, and no channel of that name
    // reaches Bob (the channel opened before the CRL may still be queued at Bob: it is not
    // this one).
    assert_no_working_channel(&r.connect(&r.phone), &r.bob, "sync/after-crl").await;
    while let Some(incoming) = next(&r.tb, Duration::from_millis(300)).await {
        if let Incoming::Channel { name, .. } = incoming {
            assert_ne!(
                name, "sync/after-crl",
                "a revoked device's channel reached Bob"
            );
        }
    }
    r.connect(&r.alice)
        .open_channel(bob_id, "sync/x")
        .await
        .expect("the account's other device connects");
}

/// A device revoked *after* it connected loses that connection at its next stream: the chain
/// is checked again against the CRLs known now before any stream of the connection is taken
/// (before, the CRL applied only to the next handshake, and the phone kept syncing over the
/// connection it had).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_revoked_after_it_connected_loses_its_connection() {
    let r = Revocable::new();
    let bob_id = r.bob.device.id();
    let tp = r.connect(&r.phone);
    tp.open_channel(bob_id, "sync/before")
        .await
        .expect("not revoked yet");
    match next(&r.tb, Duration::from_secs(5)).await {
        Some(Incoming::Channel { name, .. }) => assert_eq!(name, "sync/before"),
        Some(Incoming::Signal { signal, .. }) => panic!("expected a channel, got {signal:?}"),
        None => panic!("the phone's channel never arrived"),
    }
    assert_eq!(r.tb.connected().len(), 1, "one connection, kept open");
    r.revoke_phone();

    // The same transport, the same connection: its next channel is refused and nothing of it
    // reaches Bob, and Bob's side of the connection is gone.
    assert_no_working_channel(&tp, &r.bob, "sync/after-crl").await;
    let _ = tp
        .send_signal(
            Destination::Device(bob_id),
            Signal {
                kind: "x".into(),
                payload: b"after".to_vec(),
            },
        )
        .await;
    if let Some(incoming) = next(&r.tb, Duration::from_millis(500)).await {
        let what = match incoming {
            Incoming::Channel { name, .. } => format!("channel {name}"),
            Incoming::Signal { signal, .. } => format!("signal {}", signal.kind),
        };
        panic!("a revoked device's {what} reached Bob");
    }
    assert!(
        r.tb.connected().is_empty(),
        "Bob keeps no connection to the revoked phone"
    );
}

/// Keep-alive and idle timeout: an idle but live connection stays open past the idle timeout
/// (PINGs keep it busy), one without keep-alive closes, and a peer that vanishes without a
/// word (its process gone: here its runtime is dropped, so no CONNECTION_CLOSE is ever sent)
/// is noticed: its connection closes with a timeout instead of hanging every stream to it.
#[test]
fn a_live_idle_connection_is_kept_and_a_vanished_peer_is_noticed() {
    let quick = |keep_alive| QuicConfig {
        idle_timeout: Duration::from_secs(2),
        keep_alive,
        ..config()
    };
    let (alice_me, bob_me, carol_me, dave_me, erin_me) = (
        identity_of(&account("Alice")),
        identity_of(&account("Bob")),
        identity_of(&account("Carol")),
        identity_of(&account("Dave")),
        identity_of(&account("Erin")),
    );
    let ours = tokio::runtime::Runtime::new().expect("runtime");
    let theirs = tokio::runtime::Runtime::new().expect("runtime");
    let keep = Some(Duration::from_millis(250));
    let (alice, carol, dave, erin) = ours.block_on(async {
        (
            QuicTransport::bind(localhost(), &alice_me, quick(keep)).expect("bind"),
            QuicTransport::bind(localhost(), &carol_me, quick(keep)).expect("bind"),
            QuicTransport::bind(localhost(), &dave_me, quick(None)).expect("bind"),
            QuicTransport::bind(localhost(), &erin_me, quick(None)).expect("bind"),
        )
    });
    let (bob, bob_addr) = theirs
        .block_on(async { QuicTransport::bind(localhost(), &bob_me, quick(keep)).expect("bind") });
    ours.block_on(async {
        let (_, to_carol) = alice.0.connect_addr(carol.1).await.expect("to carol");
        // Neither side sends keep-alives (one side's PINGs would keep it open for both).
        let (_, dave_to_erin) = dave.0.connect_addr(erin.1).await.expect("dave to erin");
        let (_, to_bob) = alice.0.connect_addr(bob_addr).await.expect("to bob");
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(
            to_carol.close_reason().is_none(),
            "an idle live connection with keep-alive stays open: {:?}",
            to_carol.close_reason()
        );
        assert!(
            matches!(
                dave_to_erin.close_reason(),
                Some(quinn::ConnectionError::TimedOut)
            ),
            "without keep-alive an idle connection times out: {:?}",
            dave_to_erin.close_reason()
        );
        assert!(to_bob.close_reason().is_none(), "bob is still there");
        // Bob vanishes: his runtime (endpoint, connections) is gone without a close.
        theirs.shutdown_background();
        let closed = tokio::time::timeout(Duration::from_secs(60), to_bob.closed())
            .await
            .expect("the connection to a vanished peer ends");
        assert!(
            matches!(closed, quinn::ConnectionError::TimedOut),
            "noticed by the idle timeout: {closed:?}"
        );
        assert!(to_carol.close_reason().is_none(), "carol is unaffected");
    });
    drop(bob);
}
