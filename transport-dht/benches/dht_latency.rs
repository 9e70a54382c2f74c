//! Latency over a local DHT of 20 real `dhtnode` processes on 127.0.0.1:
//! - **publish → resolvable**: a device's [`Dht`] starts and publishes its address; how long
//!   until another device resolves it by device id;
//! - **invitation → received**: an invitation sealed to a device's account; how long until
//!   that device's service delivers it.
//!
//! `cargo bench -p transport-dht --bench dht_latency` runs 20 samples and prints p50 / p95;
//! under `cargo test` (no `--bench`) it runs one sample on 3 nodes as a smoke test.

use std::time::{Duration, Instant};

use rand_core::OsRng;
use swarm_api::identity::Account;
use swarm_api::traits::{Destination, Incoming, Signal, Transport};
use transport_dht::testnet::{Testnet, TestnetError};
use transport_dht::{Dht, DhtConfig, Identity};

fn identity(name: &str) -> Identity {
    let now = time::OffsetDateTime::now_utc();
    let account = Account::generate(name, now, &mut OsRng).expect("account");
    let device = account.new_device(now, &mut OsRng).expect("device");
    Identity {
        account: account.cert().clone(),
        device_cert: device.cert().clone(),
        key: device.signing_key().clone(),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{what}: n={} p50={:?} p95={:?} max={:?}",
        samples.len(),
        percentile(&samples, 0.5),
        percentile(&samples, 0.95),
        samples.last().copied().unwrap_or_default()
    );
}

async fn run(nodes: usize, samples: usize) {
    let net = match Testnet::start(nodes, Duration::from_secs(30)).await {
        Ok(n) => n,
        Err(TestnetError::Missing) => {
            println!("SKIPPED: dhtnode is not installed");
            return;
        }
        Err(e) => panic!("local DHT: {e}"),
    };
    let addrs = net.addrs();
    let config = |i: usize| DhtConfig {
        // Each device bootstraps from a different node, as real devices would.
        bootstrap: vec![addrs[i % addrs.len()].to_string()],
        ..DhtConfig::default()
    };
    let alice = Dht::start(identity("Alice"), config(0)).expect("alice");
    let mut resolvable = Vec::new();
    let mut invited = Vec::new();
    for i in 0..samples {
        let b = identity("Bob");
        let start = Instant::now();
        let bob = Dht::start(b.clone(), config(i + 1)).expect("bob");
        bob.publish(vec!["127.0.0.1:4433".parse().expect("addr")]);
        loop {
            if !alice
                .resolve_all(Destination::Device(b.device_cert.id()))
                .await
                .is_empty()
            {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "never resolvable"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        resolvable.push(start.elapsed());

        let start = Instant::now();
        let invite = Signal {
            kind: "application/invite+json".into(),
            payload: format!(r#"{{"conversation":"{i}"}}"#).into_bytes(),
        };
        alice
            .send(Destination::Account(b.account.uri()), invite.clone())
            .await
            .expect("send");
        match tokio::time::timeout(Duration::from_secs(60), bob.next_incoming()).await {
            Ok(Some(Incoming::Signal { signal, .. })) => assert_eq!(signal, invite),
            _ => panic!("the invitation never arrived"),
        }
        invited.push(start.elapsed());
        bob.shutdown().await;
    }
    println!("local DHT of {nodes} dhtnode processes");
    report("publish -> resolvable", resolvable);
    report("invitation -> received", invited);
    alice.shutdown().await;
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let (nodes, samples) = if bench { (20, 20) } else { (3, 1) };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(run(nodes, samples));
}
