//! The `jami` rule profile against the repositories written by the real jamid 13.7
//! (`tests/fixtures/jami`): each verifies from its initial commit with the same engine our
//! own conversations go through, and tampered copies are refused by the right rule.
//! Objects are read with the `git` CLI, read-only.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use gix_hash::ObjectId;
use swarm_api::commit::{Commit, Scheme};
use swarm_api::id::{CommitId, ConversationId};
use swarm_api::object::{Kind, Object};
use swarm_api::validate::{Engine, Limits, Profile, Rejection};

const REPOS: [&str; 3] = ["group.alice.git", "one-to-one.alice.git", "leave.alice.git"];

fn fixtures() -> PathBuf {
    std::env::var_os("SWARM_JAMI_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jami"))
}

fn git(repo: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(repo)
        .args(args)
        .output()
        .expect("run git");
    assert!(out.status.success(), "git {args:?} in {}", repo.display());
    out.stdout
}

/// Every object of a repository (`git cat-file --batch-all-objects --batch`).
fn objects(repo: &Path) -> BTreeMap<ObjectId, Object> {
    let child = Command::new("git")
        .arg("--git-dir")
        .arg(repo)
        .args(["cat-file", "--batch-all-objects", "--batch"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("git cat-file");
    let out = child.wait_with_output().expect("cat-file output").stdout;
    let mut map = BTreeMap::new();
    let mut at = 0;
    while at < out.len() {
        let nl = at + out[at..].iter().position(|b| *b == b'\n').expect("header");
        let header = std::str::from_utf8(&out[at..nl]).expect("utf8");
        let mut w = header.split(' ');
        let (id, kind, size) = (w.next().unwrap(), w.next().unwrap(), w.next().unwrap());
        let size: usize = size.parse().unwrap();
        let data = out[nl + 1..nl + 1 + size].to_vec();
        at = nl + 1 + size + 1;
        let kind = match kind {
            "commit" => Kind::Commit,
            "tree" => Kind::Tree,
            "blob" => Kind::Blob,
            other => panic!("unexpected object kind {other}"),
        };
        let obj = Object { kind, data };
        assert_eq!(obj.id().to_string(), id, "object id");
        map.insert(obj.id(), obj);
    }
    map
}

struct Repo {
    objects: BTreeMap<ObjectId, Object>,
    conv: ConversationId,
    head: CommitId,
    /// Every commit, oldest first.
    commits: Vec<CommitId>,
}

fn cid(s: &str) -> CommitId {
    s.trim().parse().expect("commit id")
}

fn load(name: &'static str) -> Repo {
    let path = fixtures().join("repos").join(name);
    let head = cid(std::str::from_utf8(&git(&path, &["rev-parse", "HEAD"])).unwrap());
    let list = String::from_utf8(git(
        &path,
        &["rev-list", "--all", "--reverse", "--topo-order"],
    ))
    .unwrap();
    let commits: Vec<CommitId> = list.lines().map(cid).collect();
    let conv = ConversationId(commits[0]);
    Repo {
        objects: objects(&path),
        conv,
        head,
        commits,
    }
}

fn jami() -> Engine {
    Engine::with_profile(Profile::Jami, Limits::default())
}

#[test]
fn the_three_fixture_repositories_verify_under_the_jami_profile() {
    for name in REPOS {
        let r = load(name);
        let v = jami()
            .verify(r.conv, &r.objects, r.head)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            v.commits().len(),
            r.commits.len(),
            "{name}: every commit checked"
        );
        // Every commit is a valid tip on its own too (each prefix of the history verifies).
        for c in &r.commits {
            jami()
                .verify(r.conv, &r.objects, *c)
                .unwrap_or_else(|e| panic!("{name} at {c}: {e}"));
        }
    }
}

#[test]
fn the_scheme_is_detected_from_the_commits() {
    for name in REPOS {
        let r = load(name);
        for c in &r.commits {
            let raw = &r.objects[&c.object_id()].data;
            assert_eq!(Scheme::detect(raw), Some(Scheme::Jami), "{name} {c}");
        }
    }
}

#[test]
fn the_native_profile_refuses_jami_repositories() {
    for name in REPOS {
        let r = load(name);
        let err = Engine::default()
            .verify(r.conv, &r.objects, r.head)
            .expect_err("native rules on a jamid repository");
        assert_eq!(
            err.commit, r.commits[0],
            "{name}: refused at the initial commit"
        );
    }
}

/// The fixture's objects plus `extra`, validated up to `tip` (the conversation is `conv`).
fn verify_with(
    r: &Repo,
    conv: ConversationId,
    extra: &[Object],
    tip: CommitId,
) -> Result<(), Rejection> {
    let mut objects = r.objects.clone();
    for o in extra {
        objects.insert(o.id(), o.clone());
    }
    let before = objects.len();
    let res = jami().verify(conv, &objects, tip).map(|_| ());
    assert_eq!(objects.len(), before, "validation stores nothing");
    res
}

fn commit_obj(data: Vec<u8>) -> (Object, CommitId) {
    let o = Object {
        kind: Kind::Commit,
        data,
    };
    let id = CommitId::from_object_id(&o.id()).unwrap();
    (o, id)
}

fn split_signature(raw: &[u8]) -> (Vec<u8>, Vec<u8>) {
    // (commit without the signature line, the signature line itself with its newline)
    let text = raw;
    let at = text
        .windows(b"\nsignature ".len())
        .position(|w| w == b"\nsignature ")
        .expect("signature header")
        + 1;
    let end = at + text[at..].iter().position(|b| *b == b'\n').unwrap() + 1;
    ([&text[..at], &text[end..]].concat(), text[at..end].to_vec())
}

/// Commit `i` with a space added at the start of its message (under the old signature).
fn body_changed(raw: &[u8]) -> Vec<u8> {
    let mut t = raw.to_vec();
    let msg_start = raw.windows(2).position(|w| w == b"\n\n").unwrap() + 2;
    t.splice(msg_start..msg_start, b" ".iter().copied());
    t
}

/// Commit `i` with the signature line of the next commit of the repository.
fn signature_moved(r: &Repo, i: usize) -> Vec<u8> {
    let raw = &r.objects[&r.commits[i].object_id()].data;
    let (_, sig_line) = split_signature(raw);
    let other = r.commits[(i + 1) % r.commits.len()];
    let (_, other_sig) = split_signature(&r.objects[&other.object_id()].data);
    let at = raw
        .windows(sig_line.len())
        .position(|w| w == sig_line.as_slice())
        .unwrap();
    let mut t = raw.clone();
    t.splice(at..at + sig_line.len(), other_sig.iter().copied());
    t
}

/// Tampered copies of every commit: each is refused by rule `signature`, nothing panics, and
/// the untampered history stays valid.
#[test]
fn tampered_copies_are_refused_by_the_signature_rule() {
    let mut checked = 0;
    for name in REPOS {
        let r = load(name);
        let empty_blob = Object::blob(b"x".to_vec());
        for (i, c) in r.commits.iter().enumerate() {
            let raw = r.objects[&c.object_id()].data.clone();
            let parsed = Commit::parse_with(*c, &raw, Scheme::Jami).unwrap();
            let (unsigned, _) = split_signature(&raw);
            let mut cases: Vec<(&str, Vec<u8>, Vec<Object>)> = Vec::new();

            // 1. The body changed under the old signature.
            cases.push(("body changed", body_changed(&raw), vec![]));

            // 2. A file added: the same commit over a tree with one more file.
            let files =
                swarm_api::object::read_tree(&r.objects, &parsed.tree, Default::default()).unwrap();
            let mut more = files.clone();
            more.insert(
                "invited/0123456789abcdef0123456789abcdef01234567".into(),
                empty_blob.id(),
            );
            let (tree, trees) = swarm_api::object::build_tree(&more);
            let t = String::from_utf8(raw.clone())
                .unwrap()
                .replacen(&parsed.tree.to_string(), &tree.to_string(), 1)
                .into_bytes();
            let mut extra = trees;
            extra.push(empty_blob.clone());
            cases.push(("file added", t, extra));

            // 3. The signature header removed.
            cases.push(("signature removed", unsigned.clone(), vec![]));

            // 4. A signature moved from another commit of the repository.
            cases.push(("signature moved", signature_moved(&r, i), vec![]));

            for (what, data, mut extra) in cases {
                let (obj, id) = commit_obj(data);
                assert_ne!(id, *c, "{name} {c} {what}: the copy differs");
                extra.push(obj);
                // The initial commit is the conversation: a tampered one is its own conversation.
                let conv = if i == 0 { ConversationId(id) } else { r.conv };
                let err = verify_with(&r, conv, &extra, id)
                    .expect_err(&format!("{name} {c}: {what} accepted"));
                assert_eq!(err.commit, id, "{name} {c} {what}: {err}");
                // The initial commit's file list is checked before its signature (the
                // device certificate is in that tree), a merge's tree before its signature
                // (the signer is authorized in the merged tree).
                let rule = match (what, i, parsed.parents.len()) {
                    ("file added", 0, _) => "initial-files",
                    ("file added", _, 2) => "merge-tree",
                    _ => "signature",
                };
                assert_eq!(err.violation.rule(), rule, "{name} {c} {what}: {err}");
                checked += 1;
            }
        }
        verify_with(&r, r.conv, &[], r.head).expect("the original still verifies");
    }
    assert_eq!(checked, 4 * 32);
}

/// The engine's signature verdict equals the openssl oracle's (`verify_signatures.py`, run
/// by python3 and openssl, which `scripts/deps.sh` installs) on every genuine commit and on
/// tampered copies (a body changed under its signature, a signature moved from another
/// commit) added to a copy of each repository.
#[test]
fn signature_verdicts_equal_the_openssl_oracle_on_genuine_and_tampered_commits() {
    let tmp = tempfile::tempdir().unwrap();
    for name in REPOS {
        let copy = tmp.path().join(name);
        let st = Command::new("git")
            .args(["clone", "--quiet", "--mirror", "--no-local"])
            .arg(fixtures().join("repos").join(name))
            .arg(&copy)
            .status()
            .unwrap();
        assert!(st.success());
        let r = load(name);
        for (i, c) in r.commits.iter().enumerate().skip(1) {
            let raw = &r.objects[&c.object_id()].data;
            for (kind, data) in [
                ("body", body_changed(raw)),
                ("moved", signature_moved(&r, i)),
            ] {
                let mut child = Command::new("git")
                    .arg("--git-dir")
                    .arg(&copy)
                    .args(["hash-object", "-t", "commit", "-w", "--stdin"])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap();
                std::io::Write::write_all(&mut child.stdin.take().unwrap(), &data).unwrap();
                let id = String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap();
                git(
                    &copy,
                    &[
                        "update-ref",
                        &format!("refs/tampered/{i}-{kind}"),
                        id.trim(),
                    ],
                );
            }
        }
        let out = Command::new("python3")
            .arg(fixtures().join("verify_signatures.py"))
            .arg(&copy)
            .output()
            .expect("python3 runs the oracle (scripts/deps.sh installs it)");
        let text = String::from_utf8_lossy(&out.stdout);
        let oracle: BTreeMap<String, bool> = text
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                let verdict = w.next()?;
                (verdict == "OK" || verdict == "BAD").then_some(())?;
                let _repo = w.next()?;
                Some((w.next()?.to_owned(), verdict == "OK"))
            })
            .collect();
        let tampered = 2 * (r.commits.len() - 1);
        assert_eq!(oracle.len(), r.commits.len() + tampered, "{name}: {text}");
        assert_eq!(
            oracle.values().filter(|ok| !**ok).count(),
            tampered,
            "{name}"
        );
        let objects = objects(&copy);
        for (sha, oracle_ok) in &oracle {
            let id = cid(sha);
            let ours = match jami().verify(r.conv, &objects, id) {
                Ok(_) => true,
                Err(e) => !(e.commit == id && e.violation.rule() == "signature"),
            };
            assert_eq!(ours, *oracle_ok, "{name} {sha}");
        }
    }
}
