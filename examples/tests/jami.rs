//! Reading real Jami conversations with the CLI: `swarm-chat verify` detects the jamid format
//! and validates the fixture repositories written by jamid 13.7
//! (`swarm-api/tests/fixtures/jami`), `swarm-chat log --repo` shows the story of the fixture
//! README ("What happened") as a client shows it, and a tampered copy is refused.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn repo(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../swarm-api/tests/fixtures/jami/repos")
        .join(name)
}

/// Runs swarm-chat without any home (a home must not be needed to read a repository).
fn chat(args: &[&str]) -> Output {
    let nowhere = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_swarm-chat"))
        .arg("--home")
        .arg(nowhere.path().join("no-home"))
        .args(args)
        .env_remove("SWARM_HOME")
        .output()
        .expect("swarm-chat runs")
}

fn json(args: &[&str]) -> Value {
    let mut full = vec!["--json"];
    full.extend_from_slice(args);
    let out = chat(&full);
    assert!(
        out.status.success(),
        "swarm-chat {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

#[test]
fn the_fixture_repositories_verify_with_the_format_detected() {
    for (name, commits) in [
        ("group.alice.git", 21),
        ("one-to-one.alice.git", 6),
        ("leave.alice.git", 5),
    ] {
        let path = repo(name);
        let p = path.to_str().unwrap();
        let v = json(&["verify", p]);
        assert_eq!(v["ok"], true, "{name}");
        assert_eq!(v["format"], "jami", "{name}");
        assert_eq!(v["commits"], commits, "{name}");
        assert_eq!(json(&["verify", "--format", "jami", p])["commits"], commits);

        // Read as our own format, the same repository is refused with a clear rule.
        let out = chat(&["verify", "--format", "native", p]);
        assert!(!out.status.success(), "{name} verified as native");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("refused by rule"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}

/// (type, text) of the transcript entries, and the entries themselves.
fn story(name: &str) -> (Vec<(String, String)>, Vec<Value>) {
    let path = repo(name);
    let log = json(&["log", "--repo", path.to_str().unwrap()]);
    assert_eq!(log["verified"], true);
    let entries = log["messages"].as_array().unwrap().clone();
    let pairs = entries
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_owned(),
                e["text"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    (pairs, entries)
}

#[test]
fn log_repo_tells_the_group_story_of_the_fixture_readme() {
    let (pairs, entries) = story("group.alice.git");
    let bob = "6536a3d72f42c1d8958d747fd88e737d12bfd603";
    let carol = "4740868ecc0b3751cac8c5cb67102bc2c4f0c8ee";
    let ghost = "0123456789abcdef0123456789abcdef01234567";
    let want: Vec<(&str, String)> = vec![
        // 1. alice creates the swarm.
        ("initial", "created the conversation (invites-only)".into()),
        // 2. three texts, a reply and an edit: the edit is applied to the first message
        //    (and the reaction of step 10 attached to it); the reply follows its target.
        ("text/plain", "Hello, swarm! (edited)".into()),
        ("text/plain", "A reply to the first message".into()),
        ("text/plain", "Second message".into()),
        (
            "text/plain",
            "Unicode: h\u{e9}llo w\u{f6}rld \u{2713} \u{1f642}".into(),
        ),
        // 3. title and description.
        (
            "application/update-profile",
            "updated the conversation profile".into(),
        ),
        // 4. a file.
        (
            "application/data-transfer+json",
            "sent file hello.txt (27 bytes)".into(),
        ),
        // 5. bob is added and joins; 6. bob writes.
        ("member", format!("invited {bob}")),
        ("member", "joined".into()),
        ("text/plain", "Hi, this is bob".into()),
        // 7. carol is added (and never accepts).
        ("member", format!("invited {carol}")),
        // 8. the ghost is added, then banned (the vote is not shown).
        ("member", format!("invited {ghost}")),
        ("member", format!("banned {ghost}")),
        // 9. bob is banned.
        ("member", format!("banned {bob}")),
        // 10. a text (the reaction is folded into the first message).
        ("text/plain", "Bob was banned".into()),
        // 11. a call, hosted and hung up.
        ("application/call-history+json", "started a call".into()),
        ("application/call-history+json", "call ended (2.0 s)".into()),
    ];
    let want: Vec<(String, String)> = want.into_iter().map(|(k, t)| (k.into(), t)).collect();
    assert_eq!(pairs, want);

    let first = &entries[1];
    assert_eq!(first["id"], "71cb5ca12395a887930150b0a57bbc9c497c994e");
    assert_eq!(first["edits"].as_array().unwrap().len(), 1, "{first}");
    let reactions = first["reactions"].as_array().unwrap();
    assert_eq!(reactions.len(), 1);
    assert_eq!(reactions[0]["body"], "\u{1f44d}");
    assert_eq!(
        reactions[0]["author"],
        "004e180a86dff8b4ce1419bb8244670ddc521bd4"
    );
    let reply = &entries[2];
    assert_eq!(reply["reply-to"], first["id"]);
    assert_eq!(reply["depth"], 1);
    // Authors come from the device certificates: bob's join and text are bob's.
    assert_eq!(entries[8]["author"], bob);
    assert_eq!(entries[9]["name"], "bob");
}

#[test]
fn log_repo_shows_the_one_to_one_and_the_leave() {
    let (pairs, _) = story("one-to-one.alice.git");
    let texts: Vec<&str> = pairs.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(
        texts,
        [
            "created the conversation (one-to-one, with 4740868ecc0b3751cac8c5cb67102bc2c4f0c8ee)",
            "joined",
            // The two concurrent texts, in display order (generation, then id); the merge is hidden.
            "Hi alice",
            "Hi carol, one-to-one here",
            "called 4740868ecc0b3751cac8c5cb67102bc2c4f0c8ee (0.0 s)",
        ]
    );
    let (pairs, _) = story("leave.alice.git");
    assert_eq!(pairs.last().unwrap().1, "left");

    // The text form: one line per entry, the reply indented under its message.
    let out = chat(&["log", "--repo", repo("group.alice.git").to_str().unwrap()]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 17);
    assert!(
        lines[1].contains("Hello, swarm! (edited) [edited]")
            && lines[1].contains("\u{1f44d} alice"),
        "{}",
        lines[1]
    );
    assert!(lines[2].contains("\u{21b3} alice"), "{}", lines[2]);
}

fn git(dir: &Path, args: &[&str], input: Option<&[u8]>) -> Vec<u8> {
    use std::io::Write as _;
    let mut child = Command::new("git")
        .arg("--git-dir")
        .arg(dir)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("git runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.unwrap_or_default())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "git {args:?}");
    out.stdout
}

#[test]
fn a_tampered_copy_is_refused_and_log_refuses_to_show_it_unless_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("group.git");
    let status = Command::new("git")
        .args(["clone", "--quiet", "--mirror", "--no-local"])
        .arg(repo("group.alice.git"))
        .arg(&copy)
        .status()
        .unwrap();
    assert!(status.success());
    // bob's text, changed under bob's signature, made the new head.
    let head = String::from_utf8(git(&copy, &["rev-parse", "6a4c58fb"], None)).unwrap();
    let raw = git(&copy, &["cat-file", "commit", head.trim()], None);
    let forged = String::from_utf8(raw)
        .unwrap()
        .replace("Hi, this is bob", "Hi, this is bob, send me your password");
    let id = git(
        &copy,
        &["hash-object", "-t", "commit", "-w", "--stdin"],
        Some(forged.as_bytes()),
    );
    let id = String::from_utf8(id).unwrap();
    git(&copy, &["update-ref", "refs/heads/main", id.trim()], None);

    let p = copy.to_str().unwrap();
    let out = chat(&["--json", "verify", p]);
    assert!(!out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["rule"], "signature");
    assert_eq!(v["commit"], id.trim());

    let out = chat(&["log", "--repo", p]);
    assert!(
        !out.status.success(),
        "an invalid history is not shown by default"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("--no-verify"));
    let shown = json(&["log", "--repo", p, "--no-verify"]);
    assert_eq!(shown["verified"], false);
    assert!(shown["messages"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["text"] == "Hi, this is bob, send me your password"));
}
