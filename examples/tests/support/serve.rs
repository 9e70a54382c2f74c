//! Shared by `tests/net.rs`, `tests/dht.rs`, `tests/cli.rs`, `tests/readme.rs` and
//! `benches/dht_serve.rs`: spawning `swarm-chat serve` (with DHT bootstrap nodes), reading the
//! line it prints first, and stopping it with its log shown when a test fails.
#![allow(dead_code)] // each includer uses part of it

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// `swarm-chat --home HOME --json serve --listen 127.0.0.1:0 --dht-bootstrap …` with `stderr`.
pub fn spawn_serve(home: &Path, dht: &[SocketAddr], stderr: Stdio) -> Child {
    serve_command(Some(home), dht)
        .stderr(stderr)
        .spawn()
        .expect("serve starts")
}

/// The command [`spawn_serve`] runs (stdin closed, stdout piped), to adjust before spawning
/// (e.g. a working directory for a relative `home`). Without `home`, the caller sets
/// `SWARM_HOME`.
pub fn serve_command(home: Option<&Path>, dht: &[SocketAddr]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_swarm-chat"));
    if let Some(home) = home {
        cmd.env_remove("SWARM_HOME").arg("--home").arg(home);
    }
    cmd.args(["--json", "serve", "--listen", "127.0.0.1:0"]);
    for b in dht {
        cmd.args(["--dht-bootstrap", &b.to_string()]);
    }
    cmd.env(
        "SWARM_LOG",
        "info,swarm_api=debug,transport_dht=debug,swarm_chat=debug",
    )
    .stdin(Stdio::null())
    .stdout(Stdio::piped());
    cmd
}

/// The first line `serve` prints (`{"listen", "device", "uri", "control"}`), within `deadline`.
pub fn first_line(child: &mut Child, deadline: Duration) -> Value {
    let line = first_line_text(child, deadline);
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("serve printed {line:?} ({e})"))
}

/// The first line a child prints on its piped stdout (with its newline), or what it printed
/// before closing stdout or before `deadline` passed.
pub fn first_line_text(child: &mut Child, deadline: Duration) -> String {
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    rx.recv_timeout(deadline).unwrap_or_default()
}

/// A child process killed (and waited for) when dropped: a failing test leaves no process
/// behind.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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

/// `swarm-chat --home HOME --json ARGS…`: its one JSON object; panics with its stderr if it
/// fails.
pub fn chat_json(home: &Path, args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_swarm-chat"))
        .env_remove("SWARM_HOME")
        .arg("--home")
        .arg(home)
        .arg("--json")
        .args(args)
        .output()
        .expect("swarm-chat runs");
    assert!(
        out.status.success(),
        "swarm-chat {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}
