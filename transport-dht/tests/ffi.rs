//! The C wrapper against real `dhtnode` processes: bootstrap, put / get / listen / cancel.

mod common;

use std::time::Duration;

use transport_dht::{GetEvent, InfoHash, Runner};

async fn get_all(runner: &Runner, key: InfoHash) -> (Vec<Vec<u8>>, bool) {
    let mut rx = runner.get(key);
    let mut values = Vec::new();
    while let Some(event) = rx.recv().await {
        match event {
            GetEvent::Value(v) => values.push(v),
            GetEvent::Done(ok) => return (values, ok),
        }
    }
    (values, false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runners_bootstrapped_to_dhtnodes_put_get_listen_and_cancel() {
    let Some(net) = common::testnet(3).await else {
        return;
    };
    let a = Runner::start(0).expect("runner a");
    let b = Runner::start(0).expect("runner b");
    assert!(a.is_running() && b.is_running());
    assert_ne!(a.port(), 0, "bound to a real port");
    for r in [&a, &b] {
        let addr = net.addrs()[0];
        r.bootstrap(&addr.ip().to_string(), addr.port())
            .expect("bootstrap");
    }
    let key = InfoHash::of(b"ffi test key");
    let mut listen = a.listen(key);

    let put = b.put(key, b"hello dht");
    assert!(
        tokio::time::timeout(Duration::from_secs(10), put)
            .await
            .expect("put finishes")
            .expect("put answers"),
        "the put reached the DHT"
    );
    let (seen, expired) = tokio::time::timeout(Duration::from_secs(10), listen.next())
        .await
        .expect("the listener sees the value in time")
        .expect("the listen is live");
    assert_eq!((seen.as_slice(), expired), (&b"hello dht"[..], false));

    let got = common::eventually(
        Duration::from_secs(10),
        "a get finding the value",
        || async {
            let (values, _) = get_all(&a, key).await;
            values.contains(&b"hello dht".to_vec()).then_some(values)
        },
    )
    .await;
    assert_eq!(got, vec![b"hello dht".to_vec()]);

    // After cancelling (drop), the runner keeps working and a new listen sees both values.
    drop(listen);
    assert!(b.put(key, b"second").await.expect("put answers"));
    let mut again = a.listen(key);
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let (v, _) = tokio::time::timeout(Duration::from_secs(10), again.next())
            .await
            .expect("values in time")
            .expect("live");
        seen.push(v);
    }
    seen.sort();
    assert_eq!(seen, vec![b"hello dht".to_vec(), b"second".to_vec()]);

    // A 64 000-byte value (the largest vCard of a trust request, sealed) goes through whole.
    let big: Vec<u8> = (0..65_200u32).map(|i| (i % 251) as u8).collect();
    let big_key = InfoHash::of(b"big value");
    assert!(
        b.put(big_key, &big).await.expect("put answers"),
        "a 65 200-byte put is accepted"
    );
    let (values, _) = get_all(&a, big_key).await;
    assert_eq!(values, vec![big]);

    assert!(
        tokio::time::timeout(Duration::from_secs(5), a.shutdown())
            .await
            .is_ok(),
        "shutdown completes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_pings_a_dhtnode_and_not_a_dead_port() {
    let Some(net) = common::testnet(1).await else {
        return;
    };
    let r = Runner::start(0).expect("runner");
    assert!(
        r.ping(net.addrs()[0]).await.expect("answer"),
        "a live dhtnode answers"
    );
    let dead = transport_dht::testnet::free_udp_port().expect("port");
    let answered = tokio::time::timeout(
        Duration::from_secs(30),
        r.ping(([127, 0, 0, 1], dead).into()),
    )
    .await
    .expect("a ping to nobody ends")
    .expect("answer");
    assert!(!answered, "nobody listens on {dead}");
}
