//! The echo bot (`examples/echo_bot.rs`, an app built only on `swarm_api::host`) against a
//! `swarm-chat serve`, over real QUIC on 127.0.0.1: invite → the bot joins → `hi` →
//! `echo: hi` appears in the inviter's `log`. Every wait is on a condition with a deadline.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

#[path = "support/serve.rs"]
mod support;
use support::KillOnDrop;

const DEADLINE: Duration = Duration::from_secs(90);

fn chat(home: &Path, args: &[&str]) -> Value {
    support::chat_json(home, args)
}

/// Polls `check` until it holds (`true`) or [`DEADLINE`] passes (`false`).
fn wait_for(mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while !check() {
        if start.elapsed() > DEADLINE {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    true
}

/// The example's executable: `cargo test --all-targets` builds it next to this test's
/// directory (`target/debug/examples/`); otherwise it is built now.
fn echo_bot() -> PathBuf {
    let exe = std::env::current_exe().expect("test path");
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let bot = profile.join("examples").join("echo_bot");
    if !bot.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "swarm-examples", "--example", "echo_bot"])
            .status()
            .expect("cargo runs");
        assert!(status.success(), "the echo bot builds");
    }
    bot
}

/// Alice's `swarm-chat serve` and the echo bot (dialling her), in `tmp`.
struct Pair {
    alice: PathBuf,
    server: KillOnDrop,
    _bot: KillOnDrop,
    bot_uri: String,
    bot_log: PathBuf,
}

fn start(tmp: &Path) -> Pair {
    let alice = tmp.join("alice");
    std::fs::create_dir_all(&alice).expect("home");
    chat(&alice, &["id", "new", "--name", "Alice"]);
    let log = std::fs::File::create(alice.join("serve.log")).expect("log");
    let mut server = KillOnDrop(support::spawn_serve(&alice, &[], Stdio::from(log)));
    let v = support::first_line(&mut server.0, DEADLINE);
    let listen = v["listen"].as_str().expect("listen").to_owned();
    let bot_log = tmp.join("bot.log");
    let mut bot = KillOnDrop(
        Command::new(echo_bot())
            .arg("--home")
            .arg(tmp.join("bot"))
            .args(["--listen", "127.0.0.1:0", "--peer", &listen])
            .env("SWARM_LOG", "info,swarm_api=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&bot_log).expect("log"))
            .spawn()
            .expect("the bot starts"),
    );
    let b = support::first_line(&mut bot.0, DEADLINE);
    Pair {
        alice,
        server,
        _bot: bot,
        bot_uri: b["uri"].as_str().expect("uri").to_owned(),
        bot_log,
    }
}

impl Pair {
    fn bot_log(&self) -> String {
        std::fs::read_to_string(&self.bot_log).unwrap_or_default()
    }

    /// A conversation of Alice's that the bot was invited to and joined.
    fn joined_conversation(&self) -> String {
        let alice = &self.alice;
        let conv = chat(alice, &["conv", "create", "--mode", "invites-only"])["conversation"]
            .as_str()
            .expect("id")
            .to_owned();
        chat(alice, &["conv", "invite", &conv, &self.bot_uri]);
        let bot_role = || {
            chat(alice, &["conv", "members", &conv])["members"]
                .as_array()
                .expect("members")
                .iter()
                .find(|m| m["uri"] == self.bot_uri.as_str())
                .map(|m| m["role"].as_str().unwrap_or_default().to_owned())
        };
        assert!(
            wait_for(|| bot_role().as_deref() == Some("member")),
            "the bot did not join; its log:\n{}",
            self.bot_log()
        );
        conv
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        support::stop(&mut self.server.0, &self.alice, 40);
    }
}

#[test]
fn the_echo_bot_joins_when_invited_and_answers_over_quic() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pair = start(tmp.path());
    let conv = pair.joined_conversation();
    chat(&pair.alice, &["send", &conv, "hi"]);
    let echoed = wait_for(|| {
        chat(&pair.alice, &["log", &conv])["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .any(|m| m["body"] == "echo: hi" && m["author"] == pair.bot_uri.as_str())
    });
    assert!(
        echoed,
        "no `echo: hi` from the bot; its log:\n{}",
        pair.bot_log()
    );
}

/// Lines a child prints, collected by a thread.
fn lines_of(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(out)) {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Waits (up to [`DEADLINE`]) for a line that `matches`; every line seen, for the failure.
fn wait_line(
    rx: &std::sync::mpsc::Receiver<String>,
    matches: impl Fn(&str) -> bool,
) -> Result<String, Vec<String>> {
    let start = Instant::now();
    let mut seen = Vec::new();
    while let Some(left) = DEADLINE.checked_sub(start.elapsed()) {
        match rx.recv_timeout(left) {
            Ok(line) if matches(&line) => return Ok(line),
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    Err(seen)
}

#[test]
fn watch_prints_a_message_from_another_node_as_it_arrives() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pair = start(tmp.path());
    let conv = pair.joined_conversation();
    let watch = |json: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_swarm-chat"));
        cmd.env_remove("SWARM_HOME").arg("--home").arg(&pair.alice);
        if json {
            cmd.arg("--json");
        }
        let mut child = KillOnDrop(
            cmd.args(["watch", &conv])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("watch starts"),
        );
        let rx = lines_of(&mut child.0);
        // It says on stderr when it is subscribed: from then on nothing is missed.
        let mut err = std::io::BufReader::new(child.0.stderr.take().expect("stderr"));
        let mut first = String::new();
        std::io::BufRead::read_line(&mut err, &mut first).expect("stderr");
        assert!(first.contains("watching"), "{first}");
        (child, rx)
    };
    let (_json_watch, json_lines) = watch(true);
    let (_text_watch, text_lines) = watch(false);
    chat(&pair.alice, &["send", &conv, "hi"]);
    let json = wait_line(&json_lines, |l| l.contains("echo: hi")).unwrap_or_else(|seen| {
        panic!(
            "no echo in `watch --json`; saw {seen:?}; bot log:\n{}",
            pair.bot_log()
        )
    });
    let event: Value = serde_json::from_str(&json).expect("each --json line is one JSON object");
    assert_eq!(event["event"], "message_received");
    assert_eq!(event["conv"], conv.as_str());
    assert_eq!(event["body"]["body"], "echo: hi");
    let text = wait_line(&text_lines, |l| l.contains("echo: hi"))
        .unwrap_or_else(|seen| panic!("no echo in `watch`; saw {seen:?}"));
    assert!(text.starts_with(&conv[..8]), "{text}");
}
