//! swarm-chat on both backends: `--backend git|sled` remembered per home, switching refused,
//! and conversations moved between backends with `conv export` / `conv import` without a
//! single id changing, checked with stock git.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn chat(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_swarm-chat"))
        .arg("--home")
        .arg(home)
        .args(args)
        .env_remove("SWARM_HOME")
        .output()
        .expect("swarm-chat runs")
}

fn ok_json(home: &Path, args: &[&str]) -> Value {
    let mut full = vec!["--json"];
    full.extend_from_slice(args);
    let out = chat(home, &full);
    assert!(
        out.status.success(),
        "swarm-chat {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

/// Runs swarm-chat expecting failure; returns its one-line error.
fn fails(home: &Path, args: &[&str]) -> String {
    let out = chat(home, args);
    assert!(!out.status.success(), "swarm-chat {args:?} should fail");
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    err
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn s(v: &Value) -> String {
    v.as_str().expect("a string").to_owned()
}

/// Creates an identity and a conversation with `texts` in `home`; returns the conversation
/// id and the log's ids (oldest first).
fn conversation_with(home: &Path, backend: &str, texts: &[&str]) -> (String, Vec<String>) {
    ok_json(
        home,
        &["--backend", backend, "id", "new", "--name", "Alice"],
    );
    let conv = s(&ok_json(home, &["conv", "create", "--mode", "invites-only"])["conversation"]);
    for t in texts {
        ok_json(home, &["send", &conv, t]);
    }
    (conv.clone(), log_ids(home, &conv))
}

fn log_ids(home: &Path, conv: &str) -> Vec<String> {
    ok_json(home, &["log", conv])["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| s(&m["id"]))
        .collect()
}

fn log_bodies(home: &Path, conv: &str) -> Vec<String> {
    ok_json(home, &["log", conv])["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| s(&m["body"]))
        .collect()
}

#[test]
fn the_backend_is_remembered_per_home_and_switching_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let (conv, ids) = conversation_with(&home, "sled", &["kept in sled"]);
    assert_eq!(ids.len(), 2);
    // Later commands without --backend use sled: the conversation is there...
    assert_eq!(
        ok_json(&home, &["conv", "list"])["conversations"],
        serde_json::json!([conv])
    );
    assert!(home.join("sled").is_dir());
    assert!(!home.join("conversations").join(&conv).exists());
    // ...and so with an explicit, matching --backend.
    assert_eq!(
        ok_json(&home, &["--backend", "sled", "log", &conv])["messages"][1]["body"],
        "kept in sled"
    );
    // Switching an existing home is refused with a message that says what to do.
    let err = fails(&home, &["--backend", "git", "conv", "list"]);
    assert!(
        err.contains("sled") && err.contains("refusing") && err.contains("conv export"),
        "{err}"
    );
    // A sled conversation has no Git repository to show.
    let err = fails(&home, &["conv", "repo", &conv]);
    assert!(err.contains("conv export"), "{err}");

    // A new home defaults to git, remembered too.
    let other = tmp.path().join("other");
    let (gconv, _) = conversation_with(&other, "git", &["kept in git"]);
    assert!(other
        .join("conversations")
        .join(&gconv)
        .join("HEAD")
        .is_file());
    let err = fails(&other, &["--backend", "sled", "conv", "list"]);
    assert!(err.contains("git") && err.contains("refusing"), "{err}");
    let third = tmp.path().join("third");
    ok_json(&third, &["id", "new", "--name", "Carol"]);
    let c = s(&ok_json(&third, &["conv", "create", "--mode", "public"])["conversation"]);
    assert!(third.join("conversations").join(&c).join("HEAD").is_file());
    let err = fails(&third, &["--backend", "sled", "send", &c, "x"]);
    assert!(err.contains("refusing"), "{err}");
}

#[test]
fn a_sled_conversation_exports_to_a_repository_stock_git_reads_with_the_same_ids() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let texts = ["one", "two ✓", "three\nlines"];
    let (conv, ids) = conversation_with(&home, "sled", &texts);
    let dir = tmp.path().join("exported.git");
    let out = ok_json(&home, &["conv", "export", &conv, dir.to_str().unwrap()]);
    assert_eq!(out["conversation"], conv.as_str());
    assert_eq!(out["head"], ids.last().unwrap().as_str());

    git(&dir, &["fsck", "--strict", "--no-dangling"]);
    let mut revs: Vec<String> = git(&dir, &["rev-list", "HEAD"])
        .lines()
        .map(str::to_owned)
        .collect();
    revs.reverse();
    assert_eq!(revs, ids, "stock git sees the same commits, same ids");
    assert_eq!(git(&dir, &["rev-parse", "HEAD"]).trim(), ids[3]);
    assert!(git(&dir, &["log", "--format=%B"]).contains(r#"{"body":"two ✓","type":"text/plain"}"#));
    // Stock git checks the signatures against the exported devices/.
    let signers = ok_json(&home, &["conv", "allowed-signers", &conv]);
    let lines: Vec<String> = signers["allowed_signers"]
        .as_array()
        .unwrap()
        .iter()
        .map(s)
        .collect();
    let signers_file = tmp.path().join("signers");
    std::fs::write(&signers_file, lines.join("\n") + "\n").unwrap();
    for c in &ids {
        git(
            &dir,
            &[
                "-c",
                "gpg.format=ssh",
                "-c",
                &format!("gpg.ssh.allowedSignersFile={}", signers_file.display()),
                "verify-commit",
                c,
            ],
        );
    }
    // swarm-chat's own validator agrees.
    let v = ok_json(&home, &["verify", dir.to_str().unwrap()]);
    assert_eq!(v["ok"], true);
    assert_eq!(v["commits"], 4);
    assert_eq!(v["conversation"], conv.as_str());

    // A non-empty target is refused; an unknown conversation too.
    let err = fails(&home, &["conv", "export", &conv, dir.to_str().unwrap()]);
    assert!(err.contains("not empty"), "{err}");
    let err = fails(
        &home,
        &[
            "conv",
            "export",
            "0123456789abcdef0123456789abcdef01234567",
            tmp.path().join("none").to_str().unwrap(),
        ],
    );
    assert!(err.contains("unknown conversation"), "{err}");
}

#[test]
fn a_git_conversation_imports_into_sled_and_back_with_the_same_ids() {
    let tmp = tempfile::tempdir().unwrap();
    let git_home = tmp.path().join("git-home");
    let (conv, ids) = conversation_with(&git_home, "git", &["from git", "second"]);
    let repo = s(&ok_json(&git_home, &["conv", "repo", &conv])["path"]);

    // Import needs no identity: a home that only reads.
    let sled_home = tmp.path().join("sled-home");
    let out = ok_json(&sled_home, &["--backend", "sled", "conv", "import", &repo]);
    assert_eq!(out["conversation"], conv.as_str());
    assert_eq!(out["head"], ids.last().unwrap().as_str());
    assert_eq!(out["commits"], 3);
    assert_eq!(out["backend"], "sled");
    assert_eq!(log_ids(&sled_home, &conv), ids);
    assert_eq!(log_bodies(&sled_home, &conv), log_bodies(&git_home, &conv));
    // Importing again is a no-op.
    let again = ok_json(&sled_home, &["conv", "import", &repo]);
    assert_eq!(again["already_stored"], true);

    // The sled home can go on with the conversation (as Alice's second home here: same
    // identity files), and the result exports back to git.
    std::fs::create_dir_all(sled_home.join("identity")).unwrap();
    for f in [
        "account.key",
        "account.crt",
        "device.key",
        "device.crt",
        "account.crl",
    ] {
        std::fs::copy(
            git_home.join("identity").join(f),
            sled_home.join("identity").join(f),
        )
        .unwrap();
    }
    let third = s(&ok_json(&sled_home, &["send", &conv, "from sled"])["commit"]);
    let back = tmp.path().join("back.git");
    ok_json(
        &sled_home,
        &["conv", "export", &conv, back.to_str().unwrap()],
    );
    git(&back, &["fsck", "--strict", "--no-dangling"]);
    let mut revs: Vec<String> = git(&back, &["rev-list", "HEAD"])
        .lines()
        .map(str::to_owned)
        .collect();
    revs.reverse();
    let mut expected = ids.clone();
    expected.push(third);
    assert_eq!(revs, expected);

    // And a git home imports it: the ids made in sled are the ids in git.
    let git2 = tmp.path().join("git-home-2");
    let out = ok_json(&git2, &["conv", "import", back.to_str().unwrap()]);
    assert_eq!(out["backend"], "git");
    assert_eq!(log_ids(&git2, &conv), expected);
    let path = s(&ok_json(&git2, &["conv", "repo", &conv])["path"]);
    assert_eq!(
        git(Path::new(&path), &["rev-parse", "HEAD"]).trim(),
        expected.last().unwrap()
    );
}

#[test]
fn import_refuses_a_forged_history_and_stores_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let (conv, _) = conversation_with(&home, "git", &["genuine"]);
    let repo = s(&ok_json(&home, &["conv", "repo", &conv])["path"]);
    let forged = tmp.path().join("forged.git");
    let status = Command::new("git")
        .args(["clone", "-q", "--bare", &repo])
        .arg(&forged)
        .status()
        .unwrap();
    assert!(status.success());
    let tree = git(&forged, &["rev-parse", "HEAD^{tree}"]);
    let head = git(&forged, &["rev-parse", "HEAD"]);
    let dev = s(&ok_json(&home, &["id", "show"])["device"]);
    // An unsigned commit that claims Alice's device.
    let out = Command::new("git")
        .arg("-C")
        .arg(&forged)
        .args([
            "commit-tree",
            tree.trim(),
            "-p",
            head.trim(),
            "-m",
            r#"{"body":"forged","type":"text/plain"}"#,
        ])
        .env("GIT_AUTHOR_NAME", "Alice")
        .env("GIT_AUTHOR_EMAIL", &dev)
        .env("GIT_COMMITTER_NAME", "Alice")
        .env("GIT_COMMITTER_EMAIL", &dev)
        .output()
        .unwrap();
    assert!(out.status.success());
    let commit = String::from_utf8(out.stdout).unwrap();
    git(&forged, &["update-ref", "HEAD", commit.trim()]);

    for backend in ["sled", "git"] {
        let target = tmp.path().join(format!("target-{backend}"));
        let err = fails(
            &target,
            &[
                "--backend",
                backend,
                "conv",
                "import",
                forged.to_str().unwrap(),
            ],
        );
        assert!(
            err.contains("not imported")
                && err.contains(commit.trim())
                && err.contains("signature"),
            "{err}"
        );
        assert_eq!(
            ok_json(&target, &["conv", "list"])["conversations"],
            serde_json::json!([]),
            "nothing stored"
        );
    }
    let err = fails(
        &home,
        &["conv", "import", tmp.path().join("nope").to_str().unwrap()],
    );
    assert!(err.contains("cannot open"), "{err}");
}

#[test]
fn the_demo_runs_on_sled() {
    let tmp = tempfile::tempdir().unwrap();
    let v = ok_json(tmp.path(), &["--backend", "sled", "demo"]);
    assert_eq!(v["signatures_verified"], 4);
    assert_eq!(v["repository"], Value::Null, "sled keeps no Git repository");
    assert_eq!(v["messages"].as_array().unwrap().len(), 4);
}
