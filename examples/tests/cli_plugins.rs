//! `swarm-chat plugin list|add|pin` and `send --type`: plugin types validated by default,
//! refusals naming the plugin, a pinned plugin listed with the conversation.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn run(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_swarm-chat"))
        .arg("--home")
        .arg(home)
        .arg("--json")
        .args(args)
        .env_remove("SWARM_HOME")
        .output()
        .expect("swarm-chat runs")
}

fn ok(home: &Path, args: &[&str]) -> Value {
    let out = run(home, args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "swarm-chat {args:?} failed: {err}");
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

#[test]
fn plugin_types_are_sent_validated_listed_and_pinned() {
    let home = tempfile::tempdir().expect("tempdir");
    let h = home.path();
    ok(h, &["id", "new", "--name", "Alice"]);
    let conv = ok(h, &["conv", "create", "--mode", "invites-only"])["conversation"]
        .as_str()
        .expect("an id")
        .to_owned();
    // The built-in polls plugin validates polls by default.
    let poll = r#"{"action":"open","question":"Lunch?","options":["pizza","sushi"]}"#;
    let sent = ok(h, &["send", &conv, "--type", "application/poll+json", poll]);
    assert_eq!(sent["commit"].as_str().map(str::len), Some(40));
    // `log` shows the plugin's one-line summary next to the body.
    let log = ok(h, &["log", &conv]);
    let entry = log["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .find(|m| m["id"] == sent["commit"])
        .cloned()
        .expect("the poll is in the log");
    assert_eq!(entry["type"], "application/poll+json");
    assert_eq!(entry["summary"], "poll: Lunch?", "{entry}");
    let bad = run(
        h,
        &[
            "send",
            &conv,
            "--type",
            "application/poll+json",
            r#"{"action":"open","question":"?","options":["one"]}"#,
        ],
    );
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("polls") && err.contains("2 to 32 options"),
        "{err}"
    );
    let unknown = run(h, &["send", &conv, "--type", "application/x-unknown", "{}"]);
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown commit type"));

    // Add a plugin to the home, pin one in the conversation; both are listed.
    let file = h.join("polls-copy.wasm");
    std::fs::write(&file, swarm_plugins::builtin::POLLS).expect("write");
    let added = ok(h, &["plugin", "add", file.to_str().expect("utf-8")]);
    assert_eq!(added["types"][0], "application/poll+json");
    let pinned = ok(h, &["plugin", "pin", &conv, file.to_str().expect("utf-8")]);
    assert_eq!(pinned["type"], "application/plugin-install");
    let list = ok(h, &["plugin", "list", "--conv", &conv]);
    let origins: Vec<&str> = list["plugins"]
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|p| p["origin"].as_str())
        .collect();
    assert_eq!(
        origins.iter().filter(|o| **o == "built-in").count(),
        4,
        "{list}"
    );
    assert!(
        origins.contains(&"added") && origins.contains(&"pinned"),
        "{list}"
    );
    // The pinned polls plugin now validates polls in this conversation.
    ok(h, &["send", &conv, "--type", "application/poll+json", poll]);
}
