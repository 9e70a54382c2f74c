//! Every decoder that reads bytes from a peer or a file gets arbitrary input: it returns a
//! typed error or a value, never panics, and what it encodes it decodes back. Where a
//! signature covers the bytes, a mutated copy of a real signed object never verifies.
//! (The sync state machines are fuzzed in `fuzz_sync.rs`.)

use std::path::Path as FsPath;
use std::process::Command;
use std::sync::OnceLock;

use proptest::prelude::*;
use rand_core::OsRng;
use serde_json::{json, Map, Value};
use swarm_api::body::{canonical_json, Body};
use swarm_api::commit::{sign_commit, Commit, Scheme};
use swarm_api::id::{CommitId, ConversationId};
use swarm_api::identity::{verify_device, Account, AccountCert, Crl, DeviceCert};
use swarm_api::jami::{parse_pem_chain, verify_jami_commit, JamiCertificate, JamiCommit};
use swarm_api::layout::Path;
use swarm_api::object::Object;
use swarm_api::sync::wire::{Decoder, Frame};
use swarm_api::testing::T;
use swarm_api::validate::check_vcard;

fn frame() -> impl Strategy<Value = Frame> {
    let id = any::<[u8; 20]>().prop_map(CommitId::from_bytes);
    prop_oneof![
        (any::<u16>(), id.clone(), proptest::option::of(id.clone())).prop_map(
            |(version, c, head)| Frame::Hello {
                version,
                conv: ConversationId(c),
                head
            }
        ),
        ".{0,40}".prop_map(Frame::Refused),
        Just(Frame::UpToDate),
        proptest::collection::vec(id.clone(), 0..40).prop_map(Frame::Probe),
        proptest::collection::vec(any::<bool>(), 0..8).prop_map(|mut b| {
            b.resize(8, false);
            Frame::Known(b)
        }),
        (id, any::<u32>(), any::<u64>()).prop_map(|(head, objects, bytes)| Frame::BundleStart {
            head,
            objects,
            bytes
        }),
        proptest::collection::vec(any::<u8>(), 0..300).prop_map(|d| Frame::Object(Object::blob(d))),
        Just(Frame::BundleEnd),
    ]
}

proptest! {
    #[test]
    fn wire_frames_round_trip_in_any_chunking(frames in proptest::collection::vec(frame(), 0..12), chunk in 1usize..64) {
        let bytes: Vec<u8> = frames.iter().flat_map(Frame::encode).collect();
        let mut d = Decoder::new();
        let mut out = Vec::new();
        for c in bytes.chunks(chunk) {
            d.push(c);
            while let Some(f) = d.next_frame().unwrap() {
                out.push(f);
            }
        }
        prop_assert_eq!(out, frames);
    }

    #[test]
    fn the_wire_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut d = Decoder::new();
        d.push(&bytes);
        for _ in 0..64 {
            match d.next_frame() {
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => break,
            }
        }
        let _ = Frame::decode(&bytes);
    }

    #[test]
    fn bodies_commits_paths_and_certificates_never_panic(text in ".{0,200}", bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        if let Ok(b) = Body::parse(&text) {
            // What parses re-encodes canonically and parses to the same body.
            prop_assert_eq!(Body::parse(&b.to_message()).unwrap(), b);
        }
        let _ = Commit::parse(CommitId::from_bytes([0; 20]), &bytes);
        let _ = Path::parse(&text);
        let _ = AccountCert::from_pem(&text);
        let _ = DeviceCert::from_pem(&text);
        let _ = Crl::from_pem(&text);
        let pem = format!("-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n", text);
        let _ = DeviceCert::from_pem(&pem);
    }
}

// ------------------------------------------------------------------------------ mutations

#[path = "support/mutation.rs"]
mod mutation;
use mutation::{mutate, mutation};

fn pem_of(tag: &str, der: &[u8]) -> String {
    pem::encode(&pem::Pem::new(tag, der.to_vec()))
}

fn der_of(pem_text: &str) -> Vec<u8> {
    pem::parse(pem_text).expect("our own PEM").into_contents()
}

// ------------------------------------------------------------------- native certificates

struct Certs {
    account: AccountCert,
    account_der: Vec<u8>,
    device: DeviceCert,
    device_der: Vec<u8>,
    crl: Crl,
    crl_der: Vec<u8>,
    /// A real signed commit of the native scheme, and its device's key.
    commit: Object,
    commit_key: ed25519_dalek::VerifyingKey,
}

fn certs() -> &'static Certs {
    static C: OnceLock<Certs> = OnceLock::new();
    C.get_or_init(|| {
        let at = time::OffsetDateTime::from_unix_timestamp(T).expect("time");
        let account = Account::generate("Alice", at, &mut OsRng).expect("account");
        let device = account.new_device(at, &mut OsRng).expect("device");
        let other = account.new_device(at, &mut OsRng).expect("device");
        // A CRL that lists a device (so it has a revoked entry to mutate).
        let crl = account.crl(&[other.cert()], 2, at).expect("crl");
        let tree = gix_hash::ObjectId::empty_tree(gix_hash::Kind::Sha1);
        let msg = Body::text("hello").to_message();
        let commit = sign_commit(
            &device,
            "Alice",
            tree,
            &[CommitId::from_bytes([3; 20])],
            &msg,
            T,
        )
        .expect("commit");
        Certs {
            account_der: der_of(account.cert().pem()),
            account: account.cert().clone(),
            device_der: der_of(device.cert().pem()),
            commit_key: device.cert().public_key().to_owned(),
            device: device.cert().clone(),
            crl_der: der_of(crl.pem()),
            crl,
            commit,
        }
    })
}

// ---------------------------------------------------------------------------- jami fixtures

struct JamiFixtures {
    /// Raw commit objects as jamid wrote them.
    commits: Vec<Vec<u8>>,
    /// Every certificate of the three accounts' chains (device, account, CA).
    chains: Vec<Vec<JamiCertificate>>,
}

fn jami() -> &'static JamiFixtures {
    static J: OnceLock<JamiFixtures> = OnceLock::new();
    J.get_or_init(|| {
        let dir = FsPath::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jami");
        let repo = dir.join("repos/group.alice.git");
        let git = |args: &[&str]| -> Vec<u8> {
            let out = Command::new("git")
                .arg("--git-dir")
                .arg(&repo)
                .args(args)
                .output()
                .expect("run git");
            assert!(out.status.success(), "git {args:?}");
            out.stdout
        };
        let ids = String::from_utf8(git(&["rev-list", "refs/heads/main"])).expect("ids");
        let commits = ids
            .lines()
            .take(8)
            .map(|id| git(&["cat-file", "commit", id]))
            .collect();
        let chains = ["alice", "bob", "carol"]
            .iter()
            .map(|a| {
                let pem = std::fs::read(dir.join(format!("certs/{a}.ring_device.crt")))
                    .expect("cert file");
                parse_pem_chain(&pem).expect("a chain")
            })
            .collect();
        JamiFixtures { commits, chains }
    })
}

/// The device certificate (first of a chain) whose key is `device`.
fn jami_device(device: swarm_api::DeviceId) -> Option<&'static JamiCertificate> {
    jami()
        .chains
        .iter()
        .filter_map(|c| c.first())
        .find(|c| c.device_id() == device)
}

/// The decoded sshsig of a native commit (its signature bytes and key), if it decodes.
fn ssh_sig(c: &Commit) -> Option<(Vec<u8>, Vec<u8>)> {
    let sig = ssh_key::SshSig::from_pem(format!("{}\n", c.signature.as_deref()?)).ok()?;
    let key = sig.public_key().ed25519()?.0.to_vec();
    Some((sig.signature_bytes().to_vec(), key))
}

/// What validation does for a `Scheme::Jami` commit (the `signature` rule).
/// The validation rule `signature` for a jamid commit (the engine's own function).
fn jami_signature_ok(c: &Commit, device: &JamiCertificate) -> bool {
    swarm_api::validate::keys::verify_jami_signature(c, device).is_ok()
}

// -------------------------------------------------------------------------------- JSON-like

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        (-1e9f64..1e9).prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::String),
        "[0-9a-f]{40}".prop_map(Value::String),
        "[0-9a-f]{64}".prop_map(Value::String),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(field(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Field names of the known bodies, and others.
fn field() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "type", "body", "reply-to", "react-to", "edit", "action", "uri", "mode",
            "invited", "title", "description", "tid", "displayName", "totalSize", "sha3sum",
            "to", "duration", "confId", "device", "id", "avatar", "rdvUri", "rdvDevice",
        ])
        .prop_map(str::to_owned),
        1 => "[a-zA-Z-]{1,8}",
    ]
}

/// A JSON object shaped like a commit body: a known or unknown `type` and plausible fields.
fn body_like() -> impl Strategy<Value = Map<String, Value>> {
    (
        prop::sample::select(vec![
            "initial",
            "text/plain",
            "application/edited-message",
            "member",
            "vote",
            "application/update-profile",
            "application/data-transfer+json",
            "application/call-history+json",
            "application/x-custom",
            "",
        ]),
        proptest::collection::btree_map(field(), json_value(), 0..6),
        any::<bool>(),
    )
        .prop_map(|(kind, fields, typed)| {
            let mut m: Map<String, Value> = fields.into_iter().collect();
            if typed {
                m.insert("type".into(), Value::String(kind.into()));
            }
            m
        })
}

fn vcard_like() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        "(FN|N|TEL|EMAIL|PHOTO|X-[A-Z]{1,4})(;[A-Z]{1,6}=[A-Z0-9]{1,6}){0,2}:[ -~]{0,16}",
        "PHOTO;ENCODING=BASE64",
        " [ -~]{0,16}",
        "VERSION:(2.1|3.0|4.0)",
        "[ -~]{0,16}",
        Just(String::new()),
    ];
    (
        prop::sample::select(vec!["BEGIN:VCARD", "begin:vcard", "BEGIN:VCAR", ""]),
        proptest::collection::vec(line, 0..8),
        prop::sample::select(vec!["END:VCARD", "end:VCARD", "END", ""]),
        prop::sample::select(vec!["\n", "\r\n"]),
    )
        .prop_map(|(b, lines, e, nl)| {
            let mut all = vec![b.to_owned()];
            all.extend(lines);
            all.push(e.to_owned());
            all.join(nl)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    /// Arbitrary DER in the right PEM blocks: typed errors, and what parses re-encodes to the
    /// same canonical PEM.
    #[test]
    fn certificates_and_crls_from_arbitrary_der_never_panic(der in proptest::collection::vec(any::<u8>(), 0..600)) {
        let cert = pem_of("CERTIFICATE", &der);
        if let Ok(a) = AccountCert::from_pem(&cert) {
            prop_assert_eq!(a.pem(), cert.as_str());
        }
        if let Ok(d) = DeviceCert::from_pem(&cert) {
            prop_assert_eq!(d.pem(), cert.as_str());
        }
        if let Ok(c) = Crl::from_pem(&pem_of("X509 CRL", &der)) {
            prop_assert_eq!(Crl::from_pem(c.pem()).map(|c| c.id()).ok(), Some(c.id()));
        }
        let _ = JamiCertificate::from_der(&der);
        let _ = parse_pem_chain(cert.as_bytes());
        let _ = parse_pem_chain(&der);
        let _ = verify_jami_commit(&der, cert.as_bytes());
    }

    /// A mutated copy of a real certificate or CRL never passes for the original: the
    /// account certificate is refused, a device certificate or CRL that still parses fails
    /// its signature check.
    #[test]
    fn mutated_certificates_and_crls_never_verify(
        which in 0usize..3,
        edits in proptest::collection::vec(mutation(), 1..4),
    ) {
        let c = certs();
        let original = [&c.account_der, &c.device_der, &c.crl_der][which];
        let der = mutate(original, &edits);
        prop_assume!(&der != original);
        match which {
            0 => {
                let parsed = AccountCert::from_pem(&pem_of("CERTIFICATE", &der));
                prop_assert!(parsed.is_err(), "a mutated account certificate parsed");
            }
            1 => {
                if let Ok(d) = DeviceCert::from_pem(&pem_of("CERTIFICATE", &der)) {
                    prop_assert!(
                        verify_device(&c.account, &d, &[], None).is_err(),
                        "a mutated device certificate verified"
                    );
                }
            }
            _ => {
                if let Ok(crl) = Crl::from_pem(&pem_of("X509 CRL", &der)) {
                    prop_assert!(crl.verify(&c.account).is_err(), "a mutated CRL verified");
                }
            }
        }
        // The originals still verify (the fixture is sound).
        prop_assert!(verify_device(&c.account, &c.device, std::slice::from_ref(&c.crl), None).is_ok());
    }

    /// jamid certificates, mutated: parsing never panics, and a mutated device certificate
    /// that still verifies against its account is the same key and subject.
    #[test]
    fn mutated_jami_certificates_never_pass_for_another(
        account in 0usize..3,
        which in 0usize..3,
        edits in proptest::collection::vec(mutation(), 1..4),
    ) {
        let chain = &jami().chains[account];
        let original = &chain[which];
        let der = mutate(original.der(), &edits);
        prop_assume!(der != original.der());
        if let Ok(m) = JamiCertificate::from_der(&der) {
            if let Some(issuer) = chain.get(which + 1) {
                if m.verify_issued_by(issuer).is_ok() {
                    prop_assert_eq!(m.spki_der(), original.spki_der());
                    prop_assert_eq!(m.subject(), original.subject());
                    prop_assert_eq!(m.issuer(), original.issuer());
                }
            }
        }
        let _ = parse_pem_chain(pem_of("CERTIFICATE", &der).as_bytes());
    }

    /// Real commits (native and jamid), mutated: the parsers never panic and agree with
    /// each other, and a mutated commit that still verifies with its device's key signs the
    /// very same bytes with the very same signature: only the encoding of the signature
    /// header may differ (see the ignored `*_signature_has_one_encoding` tests for that).
    #[test]
    fn mutated_commits_never_verify_other_content(
        pick in 0usize..12,
        edits in proptest::collection::vec(mutation(), 1..4),
    ) {
        let c = certs();
        let j = jami();
        let original: &[u8] = if pick >= j.commits.len() { &c.commit.data } else { &j.commits[pick] };
        let raw = mutate(original, &edits);
        prop_assume!(raw != original);
        let id = CommitId::from_bytes([0; 20]);
        // Native: what verifies is the original's content.
        if let Ok(n) = Commit::parse(id, &raw) {
            if n.verify_signature(&c.commit_key).is_ok() {
                let o = Commit::parse(id, original).expect("the original parses");
                prop_assert_eq!(&n.signed_payload, &o.signed_payload, "a mutated native commit verified");
                prop_assert_eq!(ssh_sig(&n), ssh_sig(&o));
            }
        }
        // Jami, both parsers: the same, with the committer's device certificate.
        let strict = JamiCommit::parse(&raw);
        let lenient = Commit::parse_with(id, &raw, Scheme::Jami);
        if let Ok(s) = &strict {
            if let Some(dev) = jami_device(s.device) {
                if s.verify(dev).is_ok() {
                    let o = JamiCommit::parse(original).expect("the original parses");
                    prop_assert_eq!(&s.signed_payload, &o.signed_payload, "a mutated jamid commit verified (JamiCommit)");
                    prop_assert_eq!(&s.signature, &o.signature);
                }
            }
        }
        if let Ok(l) = &lenient {
            if let Some(dev) = jami_device(l.device) {
                if jami_signature_ok(l, dev) {
                    let o = Commit::parse_with(id, original, Scheme::Jami).expect("the original parses");
                    prop_assert_eq!(&l.signed_payload, &o.signed_payload, "a mutated jamid commit verified (validation)");
                }
            }
            if let Ok(s) = &strict {
                prop_assert_eq!(&s.signed_payload, &l.signed_payload);
            }
        }
        let _ = Scheme::detect(&raw);
    }

    /// Arbitrary bytes: every commit parser returns a value or a typed error.
    #[test]
    fn commit_parsers_never_panic_on_arbitrary_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..400),
        headers in proptest::collection::vec(
            prop::sample::select(vec![
                "tree 0123456789abcdef0123456789abcdef01234567\n",
                "parent 0123456789abcdef0123456789abcdef01234567\n",
                "author a <c7b3e704335fa3a7d6c4ed64cf2b1b8e11ca9d071c912e7c3a0cf1eeff2c5ac9> 1 +0000\n",
                "committer a <c7b3e704335fa3a7d6c4ed64cf2b1b8e11ca9d071c912e7c3a0cf1eeff2c5ac9> 1 +0000\n",
                "signature AAAA\n", " AAAA\n", "gpgsig -----BEGIN SSH SIGNATURE-----\n", "\n",
            ]),
            0..8,
        ),
    ) {
        let mut raw: Vec<u8> = headers.concat().into_bytes();
        raw.extend(&bytes);
        for data in [&bytes, &raw] {
            let id = CommitId::from_bytes([0; 20]);
            let _ = Commit::parse(id, data);
            let _ = Commit::parse_with(id, data, Scheme::Jami);
            let _ = JamiCommit::parse(data);
            let _ = Scheme::detect(data);
        }
    }

    /// Bodies from JSON-shaped objects: parse or a typed error; what parses re-encodes to a
    /// canonical message that parses back to the same body.
    #[test]
    fn bodies_from_json_like_objects_round_trip(obj in body_like(), noise in ".{0,3}") {
        let message = Value::Object(obj.clone()).to_string();
        for text in [message.clone(), format!("{message}{noise}"), canonical_json(&Value::Object(obj.clone()))] {
            if let Ok(b) = Body::parse(&text) {
                let canonical = b.to_message();
                let back = Body::parse(&canonical).expect("a canonical body parses");
                prop_assert_eq!(back.to_message(), canonical.clone());
                prop_assert_eq!(back, b);
            }
        }
        // An in-memory object (not read from text): its message parses, to the same kind.
        // (Floats need not survive exactly: serde_json's parser rounds some of them.)
        if let Ok(b) = Body::from_object(obj) {
            let back = Body::parse(&b.to_message()).expect("a body's message parses");
            prop_assert_eq!(back.kind(), b.kind());
        }
    }

    /// Bodies from arbitrary bytes (as a peer's commit message may be).
    #[test]
    fn bodies_from_arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let text = String::from_utf8_lossy(&bytes);
        if let Ok(b) = Body::parse(&text) {
            prop_assert_eq!(Body::parse(&b.to_message()).ok(), Some(b));
        }
    }

    /// vCards (profiles, trust requests): the check never panics; what it accepts has the
    /// required frame; the jami profile (value-less lines) accepts everything the native does.
    #[test]
    fn vcards_are_checked_without_panicking(card in vcard_like(), bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        for data in [card.as_bytes(), &bytes[..]] {
            let native = check_vcard(data, false);
            let jami = check_vcard(data, true);
            if native.is_ok() {
                prop_assert!(jami.is_ok(), "the jami profile refused a native vCard");
            }
            if jami.is_ok() {
                let text = std::str::from_utf8(data).expect("accepted as UTF-8");
                let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
                prop_assert!(lines.first().is_some_and(|l| l.eq_ignore_ascii_case("BEGIN:VCARD")));
                prop_assert!(lines.last().is_some_and(|l| l.eq_ignore_ascii_case("END:VCARD")));
                prop_assert!(lines.iter().any(|l| l.to_ascii_uppercase().starts_with("VERSION")));
            }
        }
    }
}

#[test]
fn the_fixtures_verify_unmutated() {
    let c = certs();
    let parsed = Commit::parse(CommitId::from_bytes([0; 20]), &c.commit.data).expect("parses");
    parsed.verify_signature(&c.commit_key).expect("verifies");
    let j = jami();
    assert!(!j.commits.is_empty());
    for raw in &j.commits {
        let s = JamiCommit::parse(raw).expect("jamid commit parses");
        let dev = jami_device(s.device).expect("a known device");
        s.verify(dev).expect("verifies");
        let l =
            Commit::parse_with(CommitId::from_bytes([0; 20]), raw, Scheme::Jami).expect("parses");
        assert!(jami_signature_ok(&l, dev));
        assert_eq!(s.signed_payload, l.signed_payload);
    }
    for chain in &j.chains {
        for w in chain.windows(2) {
            w[0].verify_issued_by(&w[1]).expect("chain verifies");
        }
    }
}

/// Inserts `what` into the value of the first line starting with `header`, `at` bytes in.
fn edit_header(raw: &[u8], header: &str, at: usize, what: &[u8]) -> Vec<u8> {
    let start = raw
        .windows(header.len())
        .position(|w| w == header.as_bytes())
        .expect("the header");
    let mut out = raw.to_vec();
    let i = start + header.len() + at;
    out.splice(i..i, what.iter().copied());
    out
}

/// Twins of a signed native commit: other bytes (so another commit id), same signed content,
/// and the signature still verifies. `ssh-key` 0.6 decodes an sshsig with version 0, with
/// length prefixes larger than their content, and `\r\n` line ends; any relay can mint such
/// twins of anyone's commits without a key.
#[test]
fn a_native_signature_has_one_encoding() {
    let c = certs();
    let raw = &c.commit.data;
    let id = CommitId::from_bytes([0; 20]);
    let version0 = {
        // "SSHSIG" then version u32 1: base64 "U1NIU0lHAAAAAQ"; "...AAAAAA" is version 0.
        let at = raw
            .windows(14)
            .position(|w| w == b"U1NIU0lHAAAAAQ")
            .expect("an sshsig");
        let mut m = raw.clone();
        m[at + 13] = b'A';
        m
    };
    let crlf = edit_header(raw, "gpgsig -----BEGIN SSH SIGNATURE-----", 0, b"\r");
    for twin in [version0, crlf] {
        assert_ne!(&twin, raw);
        let t = Commit::parse(id, &twin).expect("parses");
        assert!(
            t.verify_signature(&c.commit_key).is_err(),
            "a twin verifies: {}",
            String::from_utf8_lossy(&twin)
        );
    }
}

/// Twins of a jamid commit: whitespace inserted into the base64 of the `signature` header
/// is skipped by both the parser and the signature rule, so the twin (another id) verifies.
#[test]
fn a_jamid_signature_has_one_encoding() {
    let raw = &jami().commits[3];
    for ws in [&b" "[..], b"\t", b"\r", b"\x0c"] {
        let twin = edit_header(raw, "\nsignature ", 4, ws);
        assert_ne!(&twin, raw);
        // Refused by the parser or by the signature check, never accepted.
        if let Ok(s) = JamiCommit::parse(&twin) {
            let dev = jami_device(s.device).expect("a known device");
            assert!(
                s.verify(dev).is_err(),
                "a twin verifies (JamiCommit) with {ws:?}"
            );
        }
        let l =
            Commit::parse_with(CommitId::from_bytes([0; 20]), &twin, Scheme::Jami).expect("parses");
        let dev = jami_device(l.device).expect("a known device");
        assert!(
            !jami_signature_ok(&l, dev),
            "a twin verifies (validation) with {ws:?}"
        );
    }
}
