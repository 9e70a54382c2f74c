//! `swarm-chat serve` over a local DHT of 20 real `dhtnode` processes:
//! - **serve → resolvable**: from spawning Bob's `serve --dht-bootstrap …` until an observer
//!   resolves his device id and his account URI in the DHT;
//! - **invite → request shown**: from Alice's `conv invite CONV BOB_URI` until Bob's
//!   `swarm-chat requests` lists it (nobody knows anybody's address: it goes through the DHT).
//!
//! `cargo bench -p swarm-examples --bench dht_serve` runs 10 samples and prints p50 / p95;
//! under `cargo test` (no `--bench`) one sample on 3 nodes, as a smoke test.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Stdio};

#[path = "../tests/support/serve.rs"]
mod support;
use std::time::{Duration, Instant};

use serde_json::Value;
use swarm_api::traits::Destination;
use transport_dht::testnet::{Testnet, TestnetError};
use transport_dht::{Dht, DhtConfig, Identity};

const DEADLINE: Duration = Duration::from_secs(60);

fn chat(home: &Path, args: &[&str]) -> Value {
    support::chat_json(home, args)
}

struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns `serve`; returns it and the device id it prints.
fn serve(home: &Path, boot: &[SocketAddr]) -> (Serve, String) {
    let mut child = support::spawn_serve(home, boot, Stdio::null());
    let v = support::first_line(&mut child, DEADLINE);
    (
        Serve(child),
        v["device"].as_str().expect("device").to_owned(),
    )
}

fn observer() -> Identity {
    let now = time::OffsetDateTime::now_utc();
    let account = swarm_api::identity::Account::generate("Observer", now, &mut rand_core::OsRng)
        .expect("account");
    let device = account
        .new_device(now, &mut rand_core::OsRng)
        .expect("device");
    Identity {
        account: account.cert().clone(),
        device_cert: device.cert().clone(),
        key: device.signing_key().clone(),
    }
}

fn report(what: &str, mut v: Vec<Duration>) {
    v.sort();
    let at = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "{what}: n={} p50={:?} p95={:?} max={:?}",
        v.len(),
        at(0.5),
        at(0.95),
        at(1.0)
    );
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let (nodes, samples) = if bench { (20, 10) } else { (3, 1) };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let net = match rt.block_on(Testnet::start(nodes, Duration::from_secs(30))) {
        Ok(n) => n,
        Err(TestnetError::Missing) => return println!("SKIPPED: dhtnode is not installed"),
        Err(e) => panic!("local DHT: {e}"),
    };
    let boot = net.addrs();
    let root = tempfile::tempdir().expect("tempdir");
    let alice = root.path().join("alice");
    std::fs::create_dir_all(&alice).expect("home");
    chat(&alice, &["id", "new", "--name", "Alice"]);
    let _a = serve(&alice, &boot[..1]);
    let observer = rt
        .block_on(async {
            Dht::start(
                observer(),
                DhtConfig {
                    bootstrap: vec![boot[boot.len() - 1].to_string()],
                    ..DhtConfig::default()
                },
            )
        })
        .expect("observer");
    // One conversation, each sample invites a new account (two `conv create` within the same
    // second by the same device would make the same initial commit).
    let conv = chat(&alice, &["conv", "create", "--mode", "invites-only"])["conversation"]
        .as_str()
        .expect("conv")
        .to_owned();
    let (mut resolvable, mut shown) = (Vec::new(), Vec::new());
    for i in 0..samples {
        let bob = root.path().join(format!("bob{i}"));
        std::fs::create_dir_all(&bob).expect("home");
        let uri = chat(&bob, &["id", "new", "--name", "Bob"])["uri"]
            .as_str()
            .expect("uri")
            .to_owned();
        let start = Instant::now();
        let (b, device) = serve(&bob, &boot[(i % boot.len())..=(i % boot.len())]);
        let device = device.parse().expect("device id");
        let account = uri.parse().expect("uri");
        let resolved = |of| !rt.block_on(observer.resolve_all(of)).is_empty();
        // Resolvable by device id and by account URI (what `conv invite` looks up).
        while !(resolved(Destination::Device(device)) && resolved(Destination::Account(account))) {
            assert!(start.elapsed() < DEADLINE, "never resolvable");
            std::thread::sleep(Duration::from_millis(20));
        }
        resolvable.push(start.elapsed());

        let start = Instant::now();
        chat(&alice, &["conv", "invite", &conv, &uri]);
        loop {
            let listed = chat(&bob, &["requests"])["requests"]
                .as_array()
                .is_some_and(|r| r.iter().any(|r| r["id"] == conv.as_str()));
            if listed {
                break;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "the request to sample {i} never showed"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        shown.push(start.elapsed());
        drop(b);
    }
    println!("swarm-chat serve over a local DHT of {nodes} dhtnode processes");
    report("serve -> resolvable", resolvable);
    report("invite -> request shown", shown);
}
