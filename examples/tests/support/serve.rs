//! Shared by `tests/net.rs`, `tests/dht.rs` and `benches/dht_serve.rs`: spawning `swarm-chat
//! serve` (with DHT bootstrap nodes), reading the JSON line it prints first, and stopping it
//! with its log shown when a test fails.
#![allow(dead_code)] // each includer uses part of it

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// `swarm-chat --home HOME --json serve --listen 127.0.0.1:0 --dht-bootstrap …` with `stderr`.
pub fn spawn_serve(home: &Path, dht: &[SocketAddr], stderr: Stdio) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_swarm-chat"));
    cmd.env_remove("SWARM_HOME").arg("--home").arg(home).args([
        "--json",
        "serve",
        "--listen",
        "127.0.0.1:0",
    ]);
    for b in dht {
        cmd.args(["--dht-bootstrap", &b.to_string()]);
    }
    cmd.env(
        "SWARM_LOG",
        "info,swarm_api=debug,transport_dht=debug,swarm_chat=debug",
    )
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(stderr)
    .spawn()
    .expect("serve starts")
}

/// The first line `serve` prints (`{"listen", "device", "uri", "control"}`), within `deadline`.
pub fn first_line(child: &mut Child, deadline: Duration) -> Value {
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(deadline).unwrap_or_default();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("serve printed {line:?} ({e})"))
}

/// Kills a `serve` process and waits for it; if the test is failing, prints the last `lines`
/// lines of its log (`HOME/serve.log`).
pub fn stop(child: &mut Child, home: &Path, lines: usize) {
    let _ = child.kill();
    let _ = child.wait();
    if std::thread::panicking() {
        let log = std::fs::read_to_string(home.join("serve.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(lines).collect();
        eprintln!(
            "--- last lines of {}/serve.log ---\n{}",
            home.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
}
