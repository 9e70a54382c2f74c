//! `swarm-chat serve` processes bootstrapped to real `dhtnode` processes on 127.0.0.1, with
//! no `peer add` and no `--peer`: Alice invites Bob and Carol by URI alone, they see the
//! requests and join, they chat; Bob's node is stopped while Alice sends, and on restart it is
//! notified (or finds out at bootstrap) and syncs. `dht status` shows the node.
//!
//! Every wait is on a condition with a deadline; processes are killed by guards on drop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

#[path = "support/serve.rs"]
mod support;
use std::time::{Duration, Instant};

use serde_json::Value;
use transport_dht::testnet::{Testnet, TestnetError};

const DEADLINE: Duration = Duration::from_secs(60);

fn chat(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_swarm-chat"))
        .env_remove("SWARM_HOME")
        .arg("--home")
        .arg(home)
        .arg("--json")
        .args(args)
        .output()
        .expect("swarm-chat runs")
}

fn ok(home: &Path, args: &[&str]) -> Value {
    let out = chat(home, args);
    assert!(
        out.status.success(),
        "swarm-chat {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

fn s(v: &Value) -> String {
    v.as_str().expect("a string").to_owned()
}

fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            eprintln!("waited {:?} for {what}", start.elapsed());
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A running `swarm-chat serve --dht-bootstrap …`, killed when dropped.
struct Server {
    child: Child,
    home: PathBuf,
    addr: SocketAddr,
}

impl Server {
    fn start(home: &Path, dht: &[SocketAddr]) -> Server {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(home.join("serve.log"))
            .expect("log file");
        let mut child = support::spawn_serve(home, dht, Stdio::from(log));
        let v = support::first_line(&mut child, DEADLINE);
        Server {
            child,
            home: home.to_path_buf(),
            addr: s(&v["listen"]).parse().expect("a socket address"),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        support::stop(&mut self.child, &self.home, 40);
    }
}

struct Person {
    home: PathBuf,
    uri: String,
}

fn person(root: &Path, name: &str) -> Person {
    let home = root.join(name.to_lowercase());
    std::fs::create_dir_all(&home).expect("home");
    let id = ok(&home, &["id", "new", "--name", name]);
    Person {
        home,
        uri: s(&id["uri"]),
    }
}

fn bodies(home: &Path, conv: &str) -> Vec<String> {
    ok(home, &["log", conv])["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["body"].as_str().map(str::to_owned))
        .collect()
}

/// Waits for the invitation (through the DHT: nobody knows anybody's address), then joins.
fn accept(who: &Person, conv: &str, from: &Person) {
    let request = wait_for("the invitation through the DHT", || {
        ok(&who.home, &["requests"])["requests"]
            .as_array()
            .expect("requests")
            .iter()
            .find(|r| r["id"] == conv)
            .cloned()
    });
    assert_eq!(
        request["from"],
        from.uri.as_str(),
        "the inviter, as authenticated"
    );
    assert_eq!(request["title"], "Trip");
    let joined = ok(&who.home, &["conv", "join", conv]);
    assert_eq!(joined["type"], "member");
}

fn local_dht(n: usize) -> Option<Testnet> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match rt.block_on(Testnet::start(n, Duration::from_secs(20))) {
        Ok(t) => Some(t),
        Err(TestnetError::Missing) => {
            eprintln!("SKIPPED: dhtnode is not installed (run scripts/deps.sh)");
            None
        }
        Err(e) => panic!("cannot start the local DHT: {e}"),
    }
}

#[test]
fn invite_join_and_chat_by_uri_alone_and_a_restarted_node_catches_up() {
    let Some(net) = local_dht(3) else { return };
    let boot = net.addrs();
    let root = tempfile::tempdir().expect("tempdir");
    let (alice, bob, carol) = (
        person(root.path(), "Alice"),
        person(root.path(), "Bob"),
        person(root.path(), "Carol"),
    );
    let a = Server::start(&alice.home, &boot);
    let b = Server::start(&bob.home, &boot);
    let c = Server::start(&carol.home, &boot);

    let status = ok(&alice.home, &["dht", "status"]);
    assert_eq!(status["enabled"], true);
    assert_eq!(s(&status["node_id"]).len(), 40);
    assert_eq!(status["published"], serde_json::json!([a.addr.to_string()]));
    let answering = status["bootstrap"].as_array().expect("bootstrap");
    assert_eq!(answering.len(), 3);
    assert!(answering.iter().all(|b| b["answering"] == true), "{status}");

    let conv = s(&ok(&alice.home, &["conv", "create", "--mode", "invites-only"])["conversation"]);
    ok(&alice.home, &["conv", "profile", &conv, "--title", "Trip"]);
    for who in [&bob, &carol] {
        ok(&alice.home, &["conv", "invite", &conv, &who.uri]);
        accept(who, &conv, &alice);
    }
    assert!(
        ok(&alice.home, &["peer", "list"])["peers"]
            .as_array()
            .expect("peers")
            .iter()
            .all(|p| p["source"] != "manual"),
        "no address was given by hand"
    );
    ok(&bob.home, &["send", &conv, "hello from bob"]);
    for home in [&alice.home, &carol.home] {
        wait_for("bob's message everywhere", || {
            bodies(home, &conv)
                .contains(&"hello from bob".to_owned())
                .then_some(())
        });
    }

    // Bob's node stops; Alice sends; Bob's node restarts (on another port) and catches up.
    drop(b);
    ok(&alice.home, &["send", &conv, "while you were away"]);
    let b = Server::start(&bob.home, &boot);
    assert_ne!(b.addr, a.addr);
    wait_for("the restarted node to sync", || {
        bodies(&bob.home, &conv)
            .contains(&"while you were away".to_owned())
            .then_some(())
    });
    drop((a, b, c));
}

#[test]
fn without_a_dht_the_status_says_so() {
    let root = tempfile::tempdir().expect("tempdir");
    let alice = person(root.path(), "Alice");
    let out = chat(&alice.home, &["dht", "status"]);
    assert!(!out.status.success(), "no server: nothing to report");
    assert!(String::from_utf8_lossy(&out.stderr).contains("swarm-chat serve"));
}
