//! swarm-chat end to end: the commands of the Foundation issue, stock git agreeing with what
//! the CLI wrote, and bad input answered with one line and a non-zero exit.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

#[path = "support/serve.rs"]
mod support;

/// `swarm-chat --home HOME` (`SWARM_HOME` unset), to add arguments to.
fn chat_command(home: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_swarm-chat"));
    cmd.arg("--home").arg(home).env_remove("SWARM_HOME");
    cmd
}

fn chat(home: &Path, args: &[&str]) -> Output {
    chat_command(home)
        .args(args)
        .output()
        .expect("swarm-chat runs")
}

fn ok_json(home: &Path, args: &[&str]) -> Value {
    json_of(chat_command(home), args)
}

/// Runs `cmd --json ARGS`, which must succeed and print one JSON object; that object.
fn json_of(mut cmd: Command, args: &[&str]) -> Value {
    let out = cmd
        .arg("--json")
        .args(args)
        .output()
        .expect("swarm-chat runs");
    assert!(
        out.status.success(),
        "swarm-chat {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        stdout.lines().count(),
        1,
        "--json prints one object: {stdout}"
    );
    serde_json::from_str(&stdout).expect("valid JSON")
}

fn git(dir: &Path, args: &[&str]) -> Output {
    Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .expect("git runs")
}

#[test]
fn a_conversation_made_with_the_cli_satisfies_stock_git() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let me = ok_json(h, &["id", "new", "--name", "Alice"]);
    let uri = me["uri"].as_str().unwrap().to_owned();
    let device = me["device"].as_str().unwrap().to_owned();
    assert_eq!(uri.len(), 40);
    assert_eq!(device.len(), 64);
    let shown = ok_json(h, &["id", "show"]);
    assert_eq!(shown["uri"], me["uri"]);
    assert_eq!(shown["name"], "Alice");

    // Private keys are owner-only and outside every repository.
    for key in ["account.key", "device.key"] {
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(h.join("identity").join(key))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }

    let other = "0123456789abcdef0123456789abcdef01234567";
    let mut convs = Vec::new();
    for mode in ["one-to-one", "admin-invites-only", "invites-only", "public"] {
        let mut args = vec!["conv", "create", "--mode", mode];
        if mode == "one-to-one" {
            args.extend(["--invite", other]);
        }
        convs.push(
            ok_json(h, &args)["conversation"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let listed = ok_json(h, &["conv", "list"]);
    let mut sorted = convs.clone();
    sorted.sort();
    assert_eq!(listed["conversations"], serde_json::json!(sorted));

    let conv = &convs[2];
    let mut sent = Vec::new();
    for text in ["hello", "héllo wörld ✓", "third\nline"] {
        sent.push(
            ok_json(h, &["send", conv, text])["commit"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let log = ok_json(h, &["log", conv]);
    let msgs = log["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 4, "initial + 3 messages");
    assert_eq!(msgs[0]["id"], conv.as_str());
    assert_eq!(msgs[0]["type"], "initial");
    for (m, text) in msgs[1..]
        .iter()
        .zip(["hello", "héllo wörld ✓", "third\nline"])
    {
        assert_eq!(m["body"], text);
        assert_eq!(m["type"], "text/plain");
        assert_eq!(m["author"], uri.as_str());
        assert_eq!(m["device"], device.as_str());
    }
    let last = ok_json(h, &["log", conv, "--limit", "1"]);
    assert_eq!(last["messages"].as_array().unwrap().len(), 1);
    assert_eq!(last["messages"][0]["id"], sent[2].as_str());

    // Stock git on every conversation: log, fsck --strict, verify-commit of every commit.
    for conv in &convs {
        let repo = ok_json(h, &["conv", "repo", conv])["path"]
            .as_str()
            .unwrap()
            .to_owned();
        let repo = Path::new(&repo);
        let signers = ok_json(h, &["conv", "allowed-signers", conv]);
        let lines: Vec<&str> = signers["allowed_signers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap())
            .collect();
        assert_eq!(lines.len(), 1, "one device certificate");
        assert!(lines[0].starts_with(&format!("{device} namespaces=\"git\" ssh-ed25519 ")));
        let signers_file = home.path().join(format!("signers-{conv}"));
        std::fs::write(&signers_file, lines.join("\n") + "\n").unwrap();

        let out = git(repo, &["log", "--format=%H %s"]);
        assert!(out.status.success());
        let log = String::from_utf8(out.stdout).unwrap();
        assert!(log.contains(conv.as_str()));
        let fsck = git(repo, &["fsck", "--strict"]);
        assert!(
            fsck.status.success(),
            "fsck: {}",
            String::from_utf8_lossy(&fsck.stderr)
        );
        let revs = String::from_utf8(git(repo, &["rev-list", "HEAD"]).stdout).unwrap();
        let mut n = 0;
        for c in revs.lines() {
            let v = git(
                repo,
                &[
                    "-c",
                    "gpg.format=ssh",
                    "-c",
                    &format!("gpg.ssh.allowedSignersFile={}", signers_file.display()),
                    "verify-commit",
                    c,
                ],
            );
            assert!(
                v.status.success(),
                "git verify-commit {c}: {}",
                String::from_utf8_lossy(&v.stderr)
            );
            n += 1;
        }
        assert!(n >= 1);
    }
    assert!(String::from_utf8(
        git(
            Path::new(
                &ok_json(h, &["conv", "repo", conv])["path"]
                    .as_str()
                    .unwrap()
            ),
            &["log", "--format=%s"]
        )
        .stdout
    )
    .unwrap()
    .contains(r#"{"body":"hello","type":"text/plain"}"#));

    // A signature from a device that is not in the allowed-signers file is refused by git.
    let stranger = tempfile::tempdir().unwrap();
    ok_json(stranger.path(), &["id", "new", "--name", "Mallory"]);
    let mc = ok_json(stranger.path(), &["conv", "create", "--mode", "public"])["conversation"]
        .as_str()
        .unwrap()
        .to_owned();
    let mrepo = ok_json(stranger.path(), &["conv", "repo", &mc])["path"]
        .as_str()
        .unwrap()
        .to_owned();
    let v = git(
        Path::new(&mrepo),
        &[
            "-c",
            "gpg.format=ssh",
            "-c",
            &format!(
                "gpg.ssh.allowedSignersFile={}",
                home.path().join(format!("signers-{}", convs[0])).display()
            ),
            "verify-commit",
            &mc,
        ],
    );
    assert!(
        !v.status.success(),
        "git must refuse a signer not in the allowed-signers file"
    );
}

fn fails_with_one_line(home: &Path, args: &[&str], needle: &str) {
    let out = chat(home, args);
    assert!(!out.status.success(), "{args:?} should fail");
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err:?}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.contains(needle),
        "{args:?}: {err:?} should mention {needle:?}"
    );
}

#[test]
fn bad_input_is_one_line_and_non_zero() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    fails_with_one_line(h, &["id", "show"], "no identity");
    fails_with_one_line(h, &["conv", "create", "--mode", "public"], "no identity");
    ok_json(h, &["id", "new", "--name", "Alice"]);
    fails_with_one_line(h, &["id", "new", "--name", "Again"], "already exists");
    fails_with_one_line(
        h,
        &["log", "0000000000000000000000000000000000000000"],
        "unknown conversation",
    );
    fails_with_one_line(
        h,
        &["send", "0000000000000000000000000000000000000000", "x"],
        "unknown conversation",
    );
    fails_with_one_line(h, &["log", "not-an-id"], "invalid conversation id");
    fails_with_one_line(
        h,
        &["conv", "create", "--mode", "one-to-one", "--invite", "ZZZ"],
        "invalid URI",
    );
    fails_with_one_line(
        h,
        &["conv", "create", "--mode", "one-to-one"],
        "needs the URI",
    );
    fails_with_one_line(
        h,
        &[
            "conv",
            "create",
            "--mode",
            "public",
            "--invite",
            "0123456789abcdef0123456789abcdef01234567",
        ],
        "only one-to-one",
    );
    let other = tempfile::tempdir().unwrap();
    fails_with_one_line(
        other.path(),
        &["id", "new", "--name", "a<b"],
        "invalid display name",
    );
    // Damaged identity files are an error, not a panic.
    std::fs::write(h.join("identity").join("device.key"), "garbage").unwrap();
    fails_with_one_line(h, &["id", "show"], "damaged");
}

#[test]
fn demo_runs_and_verifies_its_signatures() {
    let home = tempfile::tempdir().unwrap();
    let v = ok_json(home.path(), &["demo"]);
    assert_eq!(v["messages"].as_array().unwrap().len(), 4);
    assert_eq!(v["signatures_verified"], 4);
    // The five simulated peers split, chat, heal and agree.
    assert_eq!(v["swarm"]["agree"], true);
    assert_eq!(v["swarm"]["peers"].as_array().unwrap().len(), 5);
    let timeline = v["swarm"]["timeline"].as_array().unwrap();
    for text in [
        "Is anyone there? The link to the others is down.",
        "Writing this while split from Alice and Bob.",
    ] {
        assert!(
            timeline.iter().any(|e| e["body"] == text),
            "{text} missing from the merged timeline"
        );
    }
}

fn chat_ok(home: &Path, args: &[&str]) -> String {
    let out = chat(home, args);
    assert!(
        out.status.success(),
        "swarm-chat {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn member_commands_refuse_locally_what_validation_refuses_and_verify_agrees() {
    let root = tempfile::tempdir().unwrap();
    let (alice, bob) = (root.path().join("alice"), root.path().join("bob"));
    let a = ok_json(&alice, &["id", "new", "--name", "Alice"]);
    let b = ok_json(&bob, &["id", "new", "--name", "Bob"]);
    let (auri, buri) = (a["uri"].as_str().unwrap(), b["uri"].as_str().unwrap());
    // Both devices see the same storage (as if synced).
    std::fs::create_dir_all(alice.join("conversations")).unwrap();
    std::os::unix::fs::symlink(alice.join("conversations"), bob.join("conversations")).unwrap();
    let conv = ok_json(&alice, &["conv", "create", "--mode", "invites-only"])["conversation"]
        .as_str()
        .unwrap()
        .to_owned();
    fails_with_one_line(&bob, &["conv", "join", &conv], "join-invited");
    ok_json(&alice, &["conv", "invite", &conv, buri]);
    ok_json(&bob, &["conv", "join", &conv]);
    ok_json(&bob, &["send", &conv, "hi Alice"]);
    let members = ok_json(&alice, &["conv", "members", &conv]);
    let roles: Vec<(String, String)> = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["uri"].as_str().unwrap().to_owned(),
                m["role"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(roles.contains(&(auri.to_owned(), "admin".into())));
    assert!(roles.contains(&(buri.to_owned(), "member".into())));

    // A member cannot ban, nor edit the profile: refused locally with the rule's name.
    fails_with_one_line(&bob, &["conv", "ban", &conv, auri], "vote-by-admin");
    fails_with_one_line(
        &bob,
        &["conv", "profile", &conv, "--title", "mine"],
        "profile-by-admin",
    );
    ok_json(
        &alice,
        &[
            "conv",
            "profile",
            &conv,
            "--title",
            "Team",
            "--description",
            "Our room",
        ],
    );

    // The only admin's vote is a majority: Bob is banned at once, then unbanned.
    let ban = ok_json(&alice, &["conv", "ban", &conv, buri]);
    assert!(ban["applied"].is_string(), "{ban}");
    fails_with_one_line(&bob, &["send", &conv, "still here?"], "banned");
    let unban = ok_json(&alice, &["conv", "unban", &conv, buri]);
    assert!(unban["applied"].is_string());
    ok_json(&bob, &["send", &conv, "back"]);
    ok_json(&bob, &["conv", "leave", &conv]);

    // verify accepts what the CLI made...
    let repo = ok_json(&alice, &["conv", "repo", &conv])["path"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = chat_ok(&alice, &["verify", &repo]);
    assert!(out.starts_with("ok "), "{out}");
    let n: usize = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert_eq!(
        n,
        String::from_utf8(git(Path::new(&repo), &["rev-list", "--count", "HEAD"]).stdout)
            .unwrap()
            .trim()
            .parse::<usize>()
            .unwrap()
    );

    // ...and refuses forged histories made with stock git.
    let forged = root.path().join("forged");
    assert!(Command::new("git")
        .args(["clone", "-q", "--bare", &repo])
        .arg(&forged)
        .status()
        .unwrap()
        .success());
    let fp = forged.as_path();
    let tree = String::from_utf8(git(fp, &["rev-parse", "HEAD^{tree}"]).stdout).unwrap();
    let head = String::from_utf8(git(fp, &["rev-parse", "HEAD"]).stdout).unwrap();
    let dev = a["device"].as_str().unwrap();
    // An unsigned commit claiming Alice's device.
    let c = Command::new("git")
        .arg("-C")
        .arg(fp)
        .args([
            "commit-tree",
            tree.trim(),
            "-p",
            head.trim(),
            "-m",
            r#"{"body":"forged","type":"text/plain"}"#,
        ])
        .env("GIT_AUTHOR_NAME", "Alice")
        .env("GIT_AUTHOR_EMAIL", dev)
        .env("GIT_COMMITTER_NAME", "Alice")
        .env("GIT_COMMITTER_EMAIL", dev)
        .output()
        .unwrap();
    assert!(c.status.success());
    let forged_commit = String::from_utf8(c.stdout).unwrap();
    assert!(git(fp, &["update-ref", "HEAD", forged_commit.trim()])
        .status
        .success());
    let out = chat(&alice, &["verify", forged.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains(forged_commit.trim()) && err.contains("rule signature"),
        "{err}"
    );
    let out = chat(&alice, &["--json", "verify", forged.to_str().unwrap()]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["rule"], "signature");
    fails_with_one_line(&alice, &["verify", "/nonexistent/repo"], "cannot open");
}

/// How a test names a home relative to the working directory.
#[derive(Clone, Copy)]
enum RelativeHome<'a> {
    /// `--home DIR`.
    Flag(&'a str),
    /// `SWARM_HOME=DIR`.
    Env(&'a str),
}

impl<'a> RelativeHome<'a> {
    fn apply<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        match *self {
            RelativeHome::Flag(dir) => cmd.env_remove("SWARM_HOME").args(["--home", dir]),
            RelativeHome::Env(dir) => cmd.env("SWARM_HOME", dir),
        }
    }

    fn dir(self) -> &'a str {
        match self {
            RelativeHome::Flag(dir) | RelativeHome::Env(dir) => dir,
        }
    }
}

/// `swarm-chat --json ARGS` in `cwd` with a relative home; its JSON output.
fn ok_relative(cwd: &Path, home: RelativeHome<'_>, args: &[&str]) -> Value {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_swarm-chat"));
    home.apply(cmd.current_dir(cwd));
    json_of(cmd, args)
}

/// The bodies of `log CONV`, in display order.
fn bodies(log: &Value) -> Vec<String> {
    log["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter(|m| m["type"] == "text/plain")
        .filter_map(|m| m["body"].as_str().map(str::to_owned))
        .collect()
}

/// Issue #22: a home given relative to the working directory (`--home relhome` or
/// `SWARM_HOME=relhome`) works for every command, those that load plugins (`log`, `plugin
/// list`, `serve`) included, with and without a running server.
#[test]
fn a_relative_home_works_with_and_without_a_server() {
    let cwd = tempfile::tempdir().expect("tempdir");
    let cwd = cwd.path();
    for home in [RelativeHome::Flag("relhome"), RelativeHome::Env("relenv")] {
        ok_relative(cwd, home, &["id", "new", "--name", "Alice"]);
        let conv = ok_relative(cwd, home, &["conv", "create", "--mode", "invites-only"])
            ["conversation"]
            .as_str()
            .expect("an id")
            .to_owned();
        // Without a server: the commands that load the plugins.
        ok_relative(cwd, home, &["send", &conv, "on storage"]);
        let log = ok_relative(cwd, home, &["log", &conv]);
        assert_eq!(bodies(&log), ["on storage"]);
        let plugins = ok_relative(cwd, home, &["plugin", "list"]);
        assert_eq!(
            plugins["plugins"].as_array().map(Vec::len),
            Some(4),
            "{plugins}"
        );

        // With a server: it answers on the home's socket, given as an absolute path.
        let home_dir = cwd.join(home.dir());
        let log_file = std::fs::File::create(home_dir.join("serve.log")).expect("log file");
        let mut serve = support::serve_command(None, &[]);
        let mut server = support::KillOnDrop(
            home.apply(&mut serve)
                .current_dir(cwd)
                .stderr(Stdio::from(log_file))
                .spawn()
                .expect("serve starts"),
        );
        let first = support::first_line(&mut server.0, Duration::from_secs(60));
        assert_eq!(
            first["control"].as_str().map(Path::new),
            Some(home_dir.join("control.sock").as_path()),
            "{first}"
        );
        // `dht status` runs only through a server: the client found it.
        let dht = ok_relative(cwd, home, &["dht", "status"]);
        assert_eq!(dht["enabled"], true, "{dht}");
        ok_relative(cwd, home, &["send", &conv, "through the server"]);
        let log = ok_relative(cwd, home, &["log", &conv]);
        assert_eq!(bodies(&log), ["on storage", "through the server"]);
        let plugins = ok_relative(cwd, home, &["plugin", "list"]);
        assert_eq!(
            plugins["plugins"].as_array().map(Vec::len),
            Some(4),
            "{plugins}"
        );
        support::stop(&mut server.0, &home_dir, 40);
    }
}

/// The `conversation` of `conv create --mode invites-only` in `home`.
fn create_invites_only(home: &Path) -> String {
    ok_json(home, &["conv", "create", "--mode", "invites-only"])["conversation"]
        .as_str()
        .expect("an id")
        .to_owned()
}

/// Issue #14: `conv create` twice back to back by one device (in the same second, as a script
/// does) gives two conversations, with and without a running server; each verifies.
#[test]
fn conv_create_back_to_back_gives_new_conversations_with_and_without_a_server() {
    let home = tempfile::tempdir().expect("tempdir");
    let h = home.path();
    ok_json(h, &["id", "new", "--name", "Alice"]);
    let mut convs = vec![create_invites_only(h), create_invites_only(h)];

    let log_file = std::fs::File::create(h.join("serve.log")).expect("log file");
    let mut server = support::KillOnDrop(support::spawn_serve(h, &[], Stdio::from(log_file)));
    let first = support::first_line(&mut server.0, Duration::from_secs(60));
    assert!(first["control"].is_string(), "{first}");
    convs.push(create_invites_only(h));
    convs.push(create_invites_only(h));
    support::stop(&mut server.0, h, 40);

    let distinct: std::collections::BTreeSet<&String> = convs.iter().collect();
    assert_eq!(distinct.len(), convs.len(), "{convs:?}");
    let listed = ok_json(h, &["conv", "list"]);
    let mut sorted = convs.clone();
    sorted.sort();
    assert_eq!(listed["conversations"], serde_json::json!(sorted));
    for conv in &convs {
        let path = ok_json(h, &["conv", "repo", conv])["path"]
            .as_str()
            .expect("a path")
            .to_owned();
        let verified = ok_json(h, &["verify", &path]);
        assert_eq!(verified["ok"], true, "{verified}");
        assert_eq!(verified["conversation"], conv.as_str(), "{verified}");
        assert_eq!(verified["commits"], 1, "{verified}");
    }
}

/// `openssl ARGS`, which must succeed; its stdout.
fn openssl(args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl runs (scripts/deps.sh installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// Issue #14: the private keys `id new` writes are PKCS#8 in the RFC 8410 v1 form that stock
/// `openssl pkey` reads, and they are the keys of the certificates next to them.
#[test]
fn private_keys_written_by_id_new_are_read_by_stock_openssl() {
    let home = tempfile::tempdir().expect("tempdir");
    let h = home.path();
    ok_json(h, &["id", "new", "--name", "Alice"]);
    let dir = h.join("identity");
    for (key, cert) in [("account.key", "account.crt"), ("device.key", "device.crt")] {
        let key = dir.join(key);
        let key = key.to_str().expect("UTF-8 path");
        let cert = dir.join(cert);
        let cert = cert.to_str().expect("UTF-8 path");
        openssl(&["pkey", "-in", key, "-noout"]);
        let from_key = openssl(&["pkey", "-in", key, "-pubout"]);
        let from_cert = openssl(&["x509", "-in", cert, "-pubkey", "-noout"]);
        assert_eq!(from_key, from_cert, "{key}");
        let text = openssl(&["pkey", "-in", key, "-noout", "-text"]);
        assert!(text.starts_with("ED25519 Private-Key:"), "{text}");
    }
}
