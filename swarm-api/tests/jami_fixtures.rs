//! The `jami` signature scheme against the repositories written by the real jamid 13.7
//! (`tests/fixtures/jami`, a verbatim copy of the project's shared fixtures; see its README). Objects are read with the `git` CLI, read-only.
//! Set `SWARM_JAMI_FIXTURES` to use another copy of the fixtures.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use swarm_api::jami::{
    parse_pem_chain, verify_device_chain, verify_jami_commit, JamiCertificate, JamiCommit,
    JamiError,
};

const REPOS: [(&str, usize); 3] = [
    ("group.alice.git", 21),
    ("one-to-one.alice.git", 6),
    ("leave.alice.git", 5),
];
const ALIASES: [&str; 3] = ["alice", "bob", "carol"];
/// Near the fixtures' commit times (their clock started 2026-11-26).
const FIXTURE_TIME: i64 = 1_795_694_771;

fn fixtures() -> PathBuf {
    let dir = std::env::var_os("SWARM_JAMI_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jami"));
    assert!(
        dir.join("repos").is_dir(),
        "Jami fixtures not found at {} (set SWARM_JAMI_FIXTURES)",
        dir.display()
    );
    dir
}

fn git_opt(repo: &Path, args: &[&str]) -> Option<Vec<u8>> {
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(repo)
        .args(args)
        .output()
        .expect("run git");
    out.status.success().then_some(out.stdout)
}

fn git(repo: &Path, args: &[&str]) -> Vec<u8> {
    git_opt(repo, args).unwrap_or_else(|| panic!("git {args:?} failed in {}", repo.display()))
}

struct Fixture {
    repo: String,
    id: String,
    raw: Vec<u8>,
    commit: JamiCommit,
    device_pem: Vec<u8>,
}

/// Every commit of every fixture repository, with its device cert from its own tree (as
/// `verify_signatures.py` and jamid's `isValidUserAtCommit` look it up: a join commit adds the
/// joiner's device cert itself, so it is not in the parent tree).
fn all_commits() -> Vec<Fixture> {
    let dir = fixtures();
    let mut out = Vec::new();
    for (name, expected) in REPOS {
        let repo = dir.join("repos").join(name);
        let list = String::from_utf8(git(&repo, &["rev-list", "--all"])).expect("utf8");
        let ids: Vec<&str> = list.split_whitespace().collect();
        assert_eq!(ids.len(), expected, "{name}: commit count");
        for id in ids {
            let raw = git(&repo, &["cat-file", "commit", id]);
            let commit = JamiCommit::parse(&raw)
                .unwrap_or_else(|e| panic!("{name} {id}: does not parse: {e}"));
            let device_pem = git(
                &repo,
                &["show", &format!("{id}:devices/{}.crt", commit.device)],
            );
            out.push(Fixture {
                repo: name.to_owned(),
                id: id.to_owned(),
                raw,
                commit,
                device_pem,
            });
        }
    }
    out
}

#[test]
fn every_fixture_commit_signature_verifies() {
    let all = all_commits();
    assert_eq!(all.len(), 32);
    for f in &all {
        verify_jami_commit(&f.raw, &f.device_pem)
            .unwrap_or_else(|e| panic!("{} {}: {e}", f.repo, f.id));
        assert_eq!(f.commit.signature.len(), 512, "RSA-4096");
        assert!(f.commit.parents.len() <= 2);
        // The signed payload is the object minus exactly one line.
        let sig_line_len = f.raw.len() - f.commit.signed_payload.len();
        assert_eq!(sig_line_len, "signature ".len() + 684 + 1);
    }
    let merges = all.iter().filter(|f| f.commit.parents.len() == 2).count();
    assert_eq!(merges, 1, "the 1:1 merge is signed and verifies too");
}

/// Our verdict equals the openssl oracle's on every commit (needs python3 and openssl).
#[test]
fn verdicts_equal_the_openssl_oracle() {
    let dir = fixtures();
    // python3 and openssl are installed by scripts/deps.sh (the test command).
    let out = Command::new("python3")
        .arg(dir.join("verify_signatures.py"))
        .output()
        .expect("python3 runs the oracle (scripts/deps.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    let oracle: BTreeSet<(String, String, bool)> = text
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let verdict = w.next()?;
            if verdict != "OK" && verdict != "BAD" {
                return None;
            }
            Some((w.next()?.to_owned(), w.next()?.to_owned(), verdict == "OK"))
        })
        .collect();
    assert!(
        !oracle.is_empty(),
        "the oracle printed no verdict (is openssl installed?): {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ours: BTreeSet<(String, String, bool)> = all_commits()
        .into_iter()
        .map(|f| {
            let ok = verify_jami_commit(&f.raw, &f.device_pem).is_ok();
            (f.repo, f.id, ok)
        })
        .collect();
    assert_eq!(ours, oracle);
}

fn replace_once(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let at = hay
        .windows(from.len())
        .position(|w| w == from)
        .expect("pattern present");
    [&hay[..at], to, &hay[at + from.len()..]].concat()
}

#[test]
fn tampered_commits_are_refused() {
    let all = all_commits();
    let bob_pem = std::fs::read(fixtures().join("certs/bob.ring_device.crt")).expect("bob cert");
    for (i, f) in all.iter().enumerate() {
        let ctx = format!("{} {}", f.repo, f.id);
        // One byte changed, in the message, the tree line, and the committer time.
        let msg_at = f.raw.len() - 1;
        for at in [msg_at, "tree ".len(), f.raw.len() / 3] {
            let mut t = f.raw.clone();
            if t[at..].starts_with(b"signature") || t[at] == b'\n' || t[at] == b' ' {
                continue;
            }
            t[at] = if t[at] == b'0' { b'1' } else { b'0' };
            match verify_jami_commit(&t, &f.device_pem) {
                Err(JamiError::BadCommitSignature) | Err(JamiError::MalformedCommit(_)) => {}
                other => panic!("{ctx}: byte {at} changed: {other:?}"),
            }
        }
        // Message changed under the old signature.
        let mut t = f.raw.clone();
        t.extend_from_slice(b" ");
        assert_eq!(
            verify_jami_commit(&t, &f.device_pem),
            Err(JamiError::BadCommitSignature),
            "{ctx}"
        );
        // A newline added after the message (what `grep -v` would sign) does not verify.
        let mut t = f.raw.clone();
        t.push(b'\n');
        assert_eq!(
            verify_jami_commit(&t, &f.device_pem),
            Err(JamiError::BadCommitSignature),
            "{ctx}"
        );
        // Signature header removed.
        let sig_line = [
            b"signature ".as_slice(),
            &base64_of(&f.commit.signature),
            b"\n",
        ]
        .concat();
        let stripped = replace_once(&f.raw, &sig_line, b"");
        assert_eq!(
            verify_jami_commit(&stripped, &f.device_pem),
            Err(JamiError::NoSignature),
            "{ctx}"
        );
        // Signature moved from another commit by the same device.
        if let Some(other) = all
            .iter()
            .skip(i + 1)
            .chain(all.iter().take(i))
            .find(|o| o.commit.device == f.commit.device && o.id != f.id)
        {
            let other_line = [
                b"signature ".as_slice(),
                &base64_of(&other.commit.signature),
                b"\n",
            ]
            .concat();
            let moved = replace_once(&f.raw, &sig_line, &other_line);
            assert_eq!(
                verify_jami_commit(&moved, &f.device_pem),
                Err(JamiError::BadCommitSignature),
                "{ctx}"
            );
        }
        // Signature byte flipped.
        let mut sig = f.commit.signature.clone();
        sig[100] ^= 1;
        let flipped_line = [b"signature ".as_slice(), &base64_of(&sig), b"\n"].concat();
        let flipped = replace_once(&f.raw, &sig_line, &flipped_line);
        assert_eq!(
            verify_jami_commit(&flipped, &f.device_pem),
            Err(JamiError::BadCommitSignature),
            "{ctx}"
        );
        // Another device's certificate.
        let bob = parse_pem_chain(&bob_pem).expect("bob chain");
        if bob[0].device_id() != f.commit.device {
            assert!(
                matches!(
                    verify_jami_commit(&f.raw, &bob_pem),
                    Err(JamiError::WrongDevice { .. })
                ),
                "{ctx}"
            );
        }
        // Two signature headers.
        let doubled = replace_once(&f.raw, &sig_line, &[&sig_line[..], &sig_line[..]].concat());
        assert_eq!(
            verify_jami_commit(&doubled, &f.device_pem),
            Err(JamiError::DuplicateSignature),
            "{ctx}"
        );
    }
}

fn base64_of(bytes: &[u8]) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .encode(bytes)
        .into_bytes()
}

fn manifest() -> serde_json::Value {
    let text = std::fs::read_to_string(fixtures().join("manifest.json")).expect("manifest");
    serde_json::from_str(&text).expect("manifest json")
}

#[test]
fn fixture_certificates_parse_with_negative_serials_and_chains_verify() {
    let dir = fixtures();
    let manifest = manifest();
    let mut negative = 0;
    let mut certs_seen = 0;
    for alias in ALIASES {
        let pem = std::fs::read(dir.join(format!("certs/{alias}.ring_device.crt"))).expect("cert");
        let chain = parse_pem_chain(&pem).expect("chain parses");
        assert_eq!(chain.len(), 3, "{alias}: device, account, CA");
        let (device, account, ca) = (&chain[0], &chain[1], &chain[2]);
        for c in &chain {
            certs_seen += 1;
            negative += usize::from(c.serial_is_negative());
            assert_eq!(
                c.signature_algorithm(),
                "1.2.840.113549.1.1.12",
                "sha384WithRSA"
            );
        }
        assert_eq!(device.subject_cn(), Some("Jami device"));
        assert_eq!(account.subject_cn(), Some("Jami"));
        assert_eq!(ca.subject_cn(), Some("Jami CA"));
        assert!(!device.is_ca() && account.is_ca() && ca.is_ca());
        // The README's id table, from manifest.json.
        let acc = &manifest["accounts"][alias];
        let uri = acc["uri"].as_str().expect("uri");
        let device_ids: Vec<&String> = acc["devices"]
            .as_object()
            .expect("devices")
            .keys()
            .collect();
        assert_eq!(
            account.account_uri().to_string(),
            uri,
            "{alias}: URI = SHA-1 of account SPKI"
        );
        assert_eq!(account.subject_uid(), Some(uri));
        assert_eq!(
            device.issuer_uid(),
            Some(uri),
            "{alias}: device issuer UID = account URI"
        );
        assert_eq!(
            device_ids,
            vec![&device.device_id().to_string()],
            "{alias}: device id = SHA-256 of device SPKI"
        );
        // The device cert's own UID is the SHA-1 of its key.
        assert_eq!(
            device.subject_uid(),
            Some(device.account_uri().to_string().as_str())
        );

        let identity = verify_device_chain(device, &chain[1..], Some(FIXTURE_TIME))
            .unwrap_or_else(|e| panic!("{alias}: chain: {e}"));
        assert_eq!(identity.account.to_string(), uri);
        assert_eq!(identity.device, device.device_id());
        // Not yet valid long before the run; and a device is not its own account.
        assert!(matches!(
            verify_device_chain(device, &chain[1..], Some(0)),
            Err(JamiError::NotValidAt { .. })
        ));
        assert!(verify_device_chain(device, &chain[..1], None).is_err());
    }
    assert_eq!(certs_seen, 9);
    assert!(negative > 0, "the fixtures carry negative serial numbers");
    eprintln!("{negative} of {certs_seen} fixture certificates have a negative serial");
}

#[test]
fn chains_across_accounts_and_tampered_certificates_are_refused() {
    let dir = fixtures();
    let read = |alias: &str| {
        parse_pem_chain(
            &std::fs::read(dir.join(format!("certs/{alias}.ring_device.crt"))).expect("cert"),
        )
        .expect("chain")
    };
    let (alice, bob) = (read("alice"), read("bob"));
    assert!(matches!(
        verify_device_chain(&alice[0], &bob[1..], None),
        Err(JamiError::IssuerMismatch { .. })
    ));
    // Account cert issued by another account's CA.
    let mixed = [alice[1].clone(), bob[2].clone()];
    assert!(matches!(
        verify_device_chain(&alice[0], &mixed, None),
        Err(JamiError::IssuerMismatch { .. })
    ));
    // One byte of the device cert's TBS changed (inside the validity dates, so it still parses).
    let der = alice[0].der();
    let at = der
        .windows(4)
        .position(|w| w == b"2026" || w == b"2036" || w.starts_with(b"26") || w.starts_with(b"36"))
        .expect("a date");
    let mut bad = der.to_vec();
    bad[at + 3] = if bad[at + 3] == b'1' { b'2' } else { b'1' };
    match JamiCertificate::from_der(&bad) {
        Ok(c) => assert!(matches!(
            verify_device_chain(&c, &alice[1..], None),
            Err(JamiError::BadCertificateSignature(_))
        )),
        Err(JamiError::Certificate(_)) => {}
        Err(e) => panic!("unexpected {e}"),
    }
    // Truncated and garbage DER never panic.
    for n in [0, 1, 10, der.len() / 2, der.len() - 1] {
        assert!(JamiCertificate::from_der(&der[..n]).is_err());
    }
}

/// Every commit's device chains to an account cert present in the repository (`admins/`,
/// `members/` or, after a ban, `banned/members/`; a leave deletes the member cert, so the
/// parent tree is consulted when the commit's own tree lacks it), valid at the commit time.
#[test]
fn every_commit_device_chains_to_an_account_in_the_repository() {
    let dir = fixtures();
    for f in all_commits() {
        let repo = dir.join("repos").join(&f.repo);
        let device = parse_pem_chain(&f.device_pem)
            .expect("device cert")
            .remove(0);
        let uri = device.issuer_uid().expect("issuer UID").to_owned();
        let mut trees = vec![f.id.clone()];
        trees.extend(f.commit.parents.iter().cloned());
        let account_pem = trees
            .iter()
            .flat_map(|t| {
                ["admins", "members", "banned/members"].map(|d| format!("{t}:{d}/{uri}.crt"))
            })
            .find_map(|spec| git_opt(&repo, &["show", &spec]))
            .unwrap_or_else(|| panic!("{} {}: no account cert for {uri}", f.repo, f.id));
        let chain = parse_pem_chain(&account_pem).expect("account chain");
        assert_eq!(chain.len(), 2, "account cert + CA cert");
        let id = verify_device_chain(&device, &chain, Some(f.commit.time))
            .unwrap_or_else(|e| panic!("{} {}: {e}", f.repo, f.id));
        assert_eq!(id.device, f.commit.device);
        assert_eq!(id.account.to_string(), uri);
    }
}

#[test]
fn conversation_id_is_the_initial_commit() {
    let manifest = manifest();
    let all = all_commits();
    for key in ["group_conversation", "leave_conversation"] {
        let conv = manifest[key].as_str().expect("conversation id");
        let initial = all
            .iter()
            .find(|f| f.id == conv)
            .expect("initial commit present");
        assert!(initial.commit.parents.is_empty(), "{key}");
    }
}
