//! The DHT service of three devices bootstrapped to real `dhtnode` processes: resolving by
//! device id and account URI, invitations sealed to the recipient, and an eavesdropper
//! listening on Bob's keys that can neither read nor forge.

mod common;

use std::time::Duration;

use swarm_api::traits::{Destination, Incoming, Signal, Transport};
use transport_dht::{seal, signal_key, unix_now, Dht, DhtConfig, Runner};

fn config(net: &transport_dht::testnet::Testnet) -> DhtConfig {
    DhtConfig {
        bootstrap: net.addrs().iter().map(|a| a.to_string()).collect(),
        ..DhtConfig::default()
    }
}

async fn next_signal(dht: &Dht, within: Duration) -> Option<(swarm_api::traits::Peer, Signal)> {
    match tokio::time::timeout(within, dht.next_incoming()).await {
        Ok(Some(Incoming::Signal { from, signal })) => Some((from, signal)),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_are_resolved_and_invitations_reach_only_their_recipient() {
    let Some(net) = common::testnet(3).await else {
        return;
    };
    let (a, b) = (common::identity("Alice"), common::identity("Bob"));
    let alice = Dht::start(a.clone(), config(&net)).expect("alice");
    let bob = Dht::start(b.clone(), config(&net)).expect("bob");
    let bob_addr: std::net::SocketAddr = "127.0.0.1:40001".parse().expect("addr");
    bob.publish(vec![bob_addr]);

    // Found by device id and by account URI.
    let by_device = common::eventually(
        Duration::from_secs(15),
        "bob resolvable by device",
        || async {
            let recs = alice
                .resolve_all(Destination::Device(b.device_cert.id()))
                .await;
            (!recs.is_empty()).then_some(recs)
        },
    )
    .await;
    assert_eq!(by_device.len(), 1);
    assert_eq!(by_device[0].addrs, vec![bob_addr]);
    let by_account = alice
        .resolve_all(Destination::Account(b.account.uri()))
        .await;
    assert_eq!(by_account.len(), 1);
    assert_eq!(by_account[0].peer.device, b.device_cert.id());

    // An eavesdropper listening on Bob's signal keys with its own runner.
    let eve_runner = Runner::start(0).expect("eve");
    eve_runner
        .bootstrap("127.0.0.1", net.addrs()[0].port())
        .expect("bootstrap");
    let mut eve_listen = eve_runner.listen(signal_key(Destination::Account(b.account.uri())));

    let invite = Signal {
        kind: "application/invite+json".into(),
        payload: br#"{"conversation":"secret-title-0123456789"}"#.to_vec(),
    };
    let sent = alice
        .send(Destination::Account(b.account.uri()), invite.clone())
        .await
        .expect("send");
    assert_eq!(sent, 1, "sealed to bob's one device");
    let (from, got) = next_signal(&bob, Duration::from_secs(15))
        .await
        .expect("bob gets the invitation");
    assert_eq!(got, invite);
    assert_eq!(from.device, a.device_cert.id());
    assert_eq!(from.account, a.account.uri());

    let (seen, _) = tokio::time::timeout(Duration::from_secs(15), eve_listen.next())
        .await
        .expect("eve sees the value")
        .expect("live");
    assert!(
        !seen.windows(12).any(|w| w == b"secret-title"),
        "the invitation's content is not readable on the DHT"
    );
    let eve = common::identity("Eve");
    assert!(
        seal::open(&eve, &seen, unix_now(), &|_| Vec::new()).is_err(),
        "eve cannot open it"
    );

    // Eve forges an invitation "from Alice" (a device cert claiming Alice's account) and
    // puts it where Bob listens: Bob never delivers it.
    let forger = common::forger_of(&a);
    let forged = seal::seal(&forger, &b.device_cert, &invite, unix_now(), [9; 16]).expect("seal");
    assert!(eve_runner
        .put(signal_key(Destination::Account(b.account.uri())), &forged)
        .await
        .expect("put"));
    // A genuine signal sent after the forged one arrives; the forged one never does.
    let marker = Signal {
        kind: "application/im-gitmessage-id".into(),
        payload: b"{}".to_vec(),
    };
    alice
        .send(Destination::Device(b.device_cert.id()), marker.clone())
        .await
        .expect("send");
    let (_, next) = next_signal(&bob, Duration::from_secs(15))
        .await
        .expect("the marker arrives");
    assert_eq!(next, marker, "the forged invitation was not delivered");

    alice.shutdown().await;
    bob.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_put_while_the_recipient_is_offline_is_delivered_when_it_starts() {
    let Some(net) = common::testnet(3).await else {
        return;
    };
    let (a, b) = (common::identity("Alice"), common::identity("Bob"));
    let alice = Dht::start(a.clone(), config(&net)).expect("alice");
    // Alice knows Bob's device (e.g. from the conversation's devices/), Bob is not running.
    alice.learn(&b.device_cert, &b.account);
    let note = Signal {
        kind: "application/im-gitmessage-id".into(),
        payload: br#"{"id":"c","commit":"d","deviceId":"e"}"#.to_vec(),
    };
    assert_eq!(
        alice
            .send(Destination::Device(b.device_cert.id()), note.clone())
            .await
            .expect("send"),
        1
    );
    let bob = Dht::start(b, config(&net)).expect("bob");
    let (from, got) = next_signal(&bob, Duration::from_secs(15))
        .await
        .expect("delivered at start");
    assert_eq!((from.device, got), (a.device_cert.id(), note));
    alice.shutdown().await;
    bob.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_devices_and_bad_bootstrap_addresses_are_errors() {
    let Some(net) = common::testnet(1).await else {
        return;
    };
    let a = common::identity("Alice");
    let nobody = common::identity("Nobody");
    let alice = Dht::start(
        a,
        DhtConfig {
            resolve_timeout: Duration::from_secs(2),
            ..config(&net)
        },
    )
    .expect("alice");
    let err = alice
        .send(
            Destination::Account(nobody.account.uri()),
            Signal {
                kind: "x".into(),
                payload: vec![],
            },
        )
        .await
        .expect_err("nobody published");
    assert!(matches!(err, transport_dht::DhtError::Unknown(_)), "{err}");
    let status = alice.status().await;
    assert_eq!(status.bootstrap, vec![(net.addrs()[0].to_string(), true)]);
    assert!(status.running);
    assert!(Dht::start(
        common::identity("C"),
        DhtConfig {
            bootstrap: vec!["no-port".into()],
            ..DhtConfig::default()
        }
    )
    .is_err());
    alice.shutdown().await;
}

/// A signal still in the DHT when its recipient restarts is not delivered again (the replay
/// set is kept in the state directory), and a genuine signal dated in the future is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_are_not_delivered_again_after_a_restart_nor_from_the_future() {
    let Some(net) = common::testnet(3).await else {
        return;
    };
    let state = tempfile::tempdir().expect("tempdir");
    let (a, b) = (common::identity("Alice"), common::identity("Bob"));
    let bob_config = || DhtConfig {
        state_dir: Some(state.path().to_path_buf()),
        ..config(&net)
    };
    let alice = Dht::start(a.clone(), config(&net)).expect("alice");
    alice.learn(&b.device_cert, &b.account);
    let bob = Dht::start(b.clone(), bob_config()).expect("bob");
    let to_bob = Destination::Device(b.device_cert.id());
    let signal = |payload: &str| Signal {
        kind: "application/im-gitmessage-id".into(),
        payload: payload.as_bytes().to_vec(),
    };
    alice.send(to_bob, signal("first")).await.expect("send");
    let (_, got) = next_signal(&bob, Duration::from_secs(15))
        .await
        .expect("delivered");
    assert_eq!(got, signal("first"));
    bob.shutdown().await;

    // Bob restarts: the DHT still holds "first" and hands it to Bob's new listen.
    let bob = Dht::start(b.clone(), bob_config()).expect("bob again");
    // Alice's genuine signal, dated an hour ahead (her clock, or a value made to stay
    // acceptable for a day longer).
    let future = seal::seal(
        &a,
        &b.device_cert,
        &signal("from the future"),
        unix_now() + 3600,
        [7; 16],
    )
    .expect("seal");
    assert!(alice
        .runner()
        .put(signal_key(to_bob), &future)
        .await
        .expect("put"));
    alice.send(to_bob, signal("marker")).await.expect("send");
    let (_, next) = next_signal(&bob, Duration::from_secs(15))
        .await
        .expect("the marker arrives");
    assert_eq!(
        next,
        signal("marker"),
        "neither the replay nor the future-dated signal is delivered"
    );
    alice.shutdown().await;
    bob.shutdown().await;
}
