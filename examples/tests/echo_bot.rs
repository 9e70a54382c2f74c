//! The echo bot (`examples/echo_bot.rs`, an app built only on `swarm_api::host`) against a
//! `swarm-chat serve`, over real QUIC on 127.0.0.1: invite → the bot joins → `hi` →
//! `echo: hi` appears in the inviter's `log`. Every wait is on a condition with a deadline.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

#[path = "support/serve.rs"]
mod support;
use support::KillOnDrop;

const DEADLINE: Duration = Duration::from_secs(90);

fn chat(home: &Path, args: &[&str]) -> Value {
    let out: Output = Command::new(env!("CARGO_BIN_EXE_swarm-chat"))
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

#[test]
fn the_echo_bot_joins_when_invited_and_answers_over_quic() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let alice = tmp.path().join("alice");
    std::fs::create_dir_all(&alice).expect("home");
    chat(&alice, &["id", "new", "--name", "Alice"]);
    let log = std::fs::File::create(alice.join("serve.log")).expect("log");
    let mut server = KillOnDrop(support::spawn_serve(&alice, &[], Stdio::from(log)));
    let v = support::first_line(&mut server.0, DEADLINE);
    let listen = v["listen"].as_str().expect("listen").to_owned();

    let bot_home = tmp.path().join("bot");
    let bot_log = std::fs::File::create(tmp.path().join("bot.log")).expect("log");
    let mut bot = KillOnDrop(
        Command::new(echo_bot())
            .arg("--home")
            .arg(&bot_home)
            .args(["--listen", "127.0.0.1:0", "--peer", &listen])
            .env("SWARM_LOG", "info,swarm_api=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(bot_log)
            .spawn()
            .expect("the bot starts"),
    );
    let b = support::first_line(&mut bot.0, DEADLINE);
    let bot_uri = b["uri"].as_str().expect("uri").to_owned();

    let conv = chat(&alice, &["conv", "create", "--mode", "invites-only"])["conversation"]
        .as_str()
        .expect("id")
        .to_owned();
    chat(&alice, &["conv", "invite", &conv, &bot_uri]);
    let bot_role = |home: &Path| {
        chat(home, &["conv", "members", &conv])["members"]
            .as_array()
            .expect("members")
            .iter()
            .find(|m| m["uri"] == bot_uri.as_str())
            .map(|m| m["role"].as_str().unwrap_or_default().to_owned())
    };
    let bot_log = || std::fs::read_to_string(tmp.path().join("bot.log")).unwrap_or_default();
    assert!(
        wait_for(|| bot_role(&alice).as_deref() == Some("member")),
        "the bot did not join; its log:\n{}",
        bot_log()
    );

    chat(&alice, &["send", &conv, "hi"]);
    let echoed = wait_for(|| {
        chat(&alice, &["log", &conv])["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .any(|m| m["body"] == "echo: hi" && m["author"] == bot_uri.as_str())
    });
    assert!(
        echoed,
        "no `echo: hi` from the bot; its log:\n{}",
        bot_log()
    );
    support::stop(&mut server.0, &alice, 40);
}
