//! What the DHT hands us is hostile (issue #15, "Fuzzing"): address records and sealed
//! signals, from arbitrary bytes and from mutated valid ones. No `dhtnode` is needed.
//!
//! - [`record::verify`]: arbitrary bytes are a typed error; a mutated record that still
//!   verifies says exactly what the signed one said; a signed record verifies exactly while
//!   it is live.
//! - [`seal::open`] / [`seal::recipient`]: arbitrary bytes are a typed error; every mutation
//!   of a sealed signal is refused; a correctly encrypted but mutated or arbitrary plaintext
//!   (what a sender that knows the recipient's key can make) is refused by the inner
//!   decoder or the signature; what is sealed opens to the same signal.

mod common;

use std::net::SocketAddr;
use std::sync::OnceLock;

use ed25519_dalek::Signer as _;
use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable as _, OpModeS, Serializable as _};
use proptest::prelude::*;
use swarm_api::traits::Signal;
use transport_dht::record::{self, RecordError};
use transport_dht::seal::{self, SealError, MAX_PAYLOAD};
use transport_dht::{unix_now, Identity};

// The wire constants of `seal` (private there; a change there fails the sanity test below).
const MAGIC: &[u8; 4] = b"SWS1";
const INFO: &[u8] = b"swarm/dht/signal/v1";
const DOMAIN: &[u8] = b"swarm/dht/signal-signature/v1\n";

struct People {
    alice: Identity,
    bob: Identity,
    carol: Identity,
    now: u64,
}

fn people() -> &'static People {
    static P: OnceLock<People> = OnceLock::new();
    P.get_or_init(|| People {
        alice: common::identity("Alice"),
        bob: common::identity("Bob"),
        carol: common::identity("Carol"),
        now: unix_now(),
    })
}

// ------------------------------------------------------------------------------ mutations

#[path = "../../swarm-api/tests/support/mutation.rs"]
mod mutation;
use mutation::{mutate, mutation};

// -------------------------------------------------------------------------------- records

fn addrs() -> impl Strategy<Value = Vec<SocketAddr>> {
    // (No IPv6 flow info or scope: their text form, which is signed, does not carry them.)
    let ip = prop_oneof![
        any::<std::net::Ipv4Addr>().prop_map(std::net::IpAddr::V4),
        any::<std::net::Ipv6Addr>().prop_map(std::net::IpAddr::V6),
    ];
    proptest::collection::vec((ip, any::<u16>()).prop_map(SocketAddr::from), 0..4)
}

fn same_record(a: &record::AddressRecord, b: &record::AddressRecord) -> bool {
    a.peer == b.peer && a.addrs == b.addrs && a.issued == b.issued && a.expires == b.expires
}

// -------------------------------------------------------------------------------- signals

/// A deterministic RNG for HPKE (through the rand_core 0.9 traits `hpke` takes).
struct Rng(u64);

impl hpke::rand_core::RngCore for Rng {
    fn next_u32(&mut self) -> u32 {
        self.next_u64() as u32
    }
    fn next_u64(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        for chunk in dst.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

impl hpke::rand_core::CryptoRng for Rng {}

fn der(pem_text: &str) -> Vec<u8> {
    pem::parse(pem_text).expect("our own PEM").into_contents()
}

fn put16(out: &mut Vec<u8>, data: &[u8]) {
    out.extend((data.len() as u16).to_be_bytes());
    out.extend(data);
}

/// The plaintext `seal` builds, signed by `from` for `to`.
fn plaintext(from: &Identity, to: &Identity, signal: &Signal, sent: u64, id: [u8; 16]) -> Vec<u8> {
    let mut plain = Vec::new();
    put16(&mut plain, &der(from.device_cert.pem()));
    put16(&mut plain, &der(from.account.pem()));
    put16(&mut plain, signal.kind.as_bytes());
    plain.extend(sent.to_be_bytes());
    plain.extend(id);
    plain.extend((signal.payload.len() as u32).to_be_bytes());
    plain.extend(&signal.payload);
    let mut signed = DOMAIN.to_vec();
    signed.extend(to.device_cert.id().as_bytes());
    signed.extend(&plain);
    plain.extend(from.key.sign(&signed).to_bytes());
    plain
}

/// Encrypts any plaintext to `to` as `seal` does: what a sender that knows the recipient's
/// public key (anyone) can make.
fn encrypt_to(to: &Identity, plain: &[u8], seed: u64) -> Vec<u8> {
    let id = to.device_cert.id();
    let pk = <X25519HkdfSha256 as hpke::Kem>::PublicKey::from_bytes(
        &to.device_cert.public_key().to_montgomery().to_bytes(),
    )
    .expect("an X25519 key");
    let (enc, ct) = hpke::single_shot_seal::<ChaCha20Poly1305, HkdfSha256, X25519HkdfSha256, _>(
        &OpModeS::Base,
        &pk,
        INFO,
        plain,
        id.as_bytes(),
        &mut Rng(seed),
    )
    .expect("seal");
    let mut out = MAGIC.to_vec();
    out.extend(id.as_bytes());
    out.extend(enc.to_bytes());
    out.extend(ct);
    out
}

fn signal() -> impl Strategy<Value = Signal> {
    (
        prop_oneof![
            Just("application/invite+json".to_owned()),
            Just("application/im-gitmessage-id".to_owned()),
            ".{0,12}",
        ],
        proptest::collection::vec(any::<u8>(), 0..200),
    )
        .prop_map(|(kind, payload)| Signal { kind, payload })
}

fn typed_seal_error(e: &SealError) -> bool {
    matches!(
        e,
        SealError::Malformed(_)
            | SealError::NotForMe
            | SealError::Decrypt(_)
            | SealError::Chain(_)
            | SealError::BadSignature(_)
            | SealError::TooLarge(_)
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Arbitrary bytes (and JSON-shaped garbage) are never a record.
    #[test]
    fn arbitrary_bytes_are_not_a_record(
        bytes in proptest::collection::vec(any::<u8>(), 0..400),
        text in r#"\{("(body|sig|device_cert|account_cert|addrs|issued|expires)":("[ -~]{0,12}"|[0-9]{1,20}|\[\]|\{\}|null),?){0,7}\}"#,
        now in any::<u64>(),
    ) {
        for b in [&bytes[..], text.as_bytes()] {
            for at in [now, people().now] {
                prop_assert!(matches!(record::verify(b, at, &no_crls), Err(RecordError::Malformed(_))));
            }
        }
    }

    /// A mutated record that verifies says what the signed one said (only the JSON's
    /// spelling may differ); nothing else verifies.
    #[test]
    fn a_mutated_record_never_says_anything_else(
        addrs in addrs(),
        edits in proptest::collection::vec(mutation(), 1..4),
    ) {
        let p = people();
        let bytes = record::sign(&p.bob, &addrs, p.now, 300);
        let original = record::verify(&bytes, p.now, &no_crls).expect("the signed record verifies");
        let m = mutate(&bytes, &edits);
        prop_assume!(m != bytes);
        match record::verify(&m, p.now, &no_crls) {
            Ok(r) => prop_assert!(same_record(&r, &original), "a mutated record verified: {r:?}"),
            Err(e) => prop_assert!(matches!(
                e,
                RecordError::Malformed(_) | RecordError::Chain(_) | RecordError::BadSignature(_)
            ), "{e:?}"),
        }
    }

    /// A signed record verifies exactly while it is live, and names its signer and addresses.
    #[test]
    fn a_signed_record_verifies_exactly_while_live(
        addrs in addrs(),
        issued_delta in -1000i64..1000,
        lifetime in 0u64..2000,
    ) {
        let p = people();
        let issued = p.now.saturating_add_signed(issued_delta);
        let bytes = record::sign(&p.alice, &addrs, issued, lifetime);
        let live = issued + lifetime > p.now && issued <= p.now + 60;
        match record::verify(&bytes, p.now, &no_crls) {
            Ok(r) => {
                prop_assert!(live);
                prop_assert_eq!(r.peer.device, p.alice.device_cert.id());
                prop_assert_eq!(r.peer.account, p.alice.account.uri());
                prop_assert_eq!(r.addrs, addrs);
                prop_assert_eq!((r.issued, r.expires), (issued, issued + lifetime));
            }
            Err(RecordError::Stale { .. }) => prop_assert!(issued + lifetime <= p.now),
            Err(RecordError::Future { .. }) => prop_assert!(issued > p.now + 60),
            Err(e) => return Err(TestCaseError::fail(format!("a live record refused: {e}"))),
        }
    }

    /// Arbitrary bytes are never a signal; `recipient` reads exactly the header.
    #[test]
    fn arbitrary_bytes_are_not_a_signal(
        bytes in proptest::collection::vec(any::<u8>(), 0..300),
        header in any::<bool>(),
    ) {
        let p = people();
        let mut b = bytes;
        if header {
            // Addressed to bob, so that decryption is attempted.
            let mut h = MAGIC.to_vec();
            h.extend(p.bob.device_cert.id().as_bytes());
            h.extend(b);
            b = h;
        }
        let want = (b.len() >= 36 && b[..4] == MAGIC[..])
            .then(|| swarm_api::DeviceId::from_bytes(b[4..36].try_into().expect("32 bytes")));
        prop_assert_eq!(seal::recipient(&b), want);
        match seal::open(&p.bob, &b, p.now, &no_crls) {
            Ok(o) => return Err(TestCaseError::fail(format!("arbitrary bytes opened: {o:?}"))),
            Err(e) => prop_assert!(typed_seal_error(&e), "{e:?}"),
        }
    }

    /// Every mutation of a sealed signal is refused.
    #[test]
    fn a_mutated_sealed_signal_never_opens(
        s in signal(),
        edits in proptest::collection::vec(mutation(), 1..4),
    ) {
        let p = people();
        let sealed = seal::seal(&p.alice, &p.bob.device_cert, &s, p.now, [7; 16]).expect("seal");
        let m = mutate(&sealed, &edits);
        prop_assume!(m != sealed);
        match seal::open(&p.bob, &m, p.now, &no_crls) {
            Ok(o) => return Err(TestCaseError::fail(format!("a mutated signal opened: {o:?}"))),
            Err(e) => {
                prop_assert!(typed_seal_error(&e), "{e:?}");
                if seal::recipient(&m).is_some_and(|r| r != p.bob.device_cert.id()) {
                    prop_assert!(matches!(e, SealError::NotForMe), "{e:?}");
                }
            }
        }
        // Nobody else opens the original either.
        prop_assert!(matches!(seal::open(&p.carol, &sealed, p.now, &no_crls), Err(SealError::NotForMe)));
    }

    /// A sender that knows the recipient's key encrypts a mutated or arbitrary plaintext: the
    /// inner decoder and the signature refuse it (typed), never panic.
    #[test]
    fn a_well_encrypted_but_forged_plaintext_never_opens(
        s in signal(),
        edits in proptest::collection::vec(mutation(), 1..4),
        arbitrary in proptest::collection::vec(any::<u8>(), 0..200),
        seed in any::<u64>(),
    ) {
        let p = people();
        let plain = plaintext(&p.alice, &p.bob, &s, p.now, [1; 16]);
        let forged = mutate(&plain, &edits);
        prop_assume!(forged != plain);
        for bad in [forged, arbitrary] {
            match seal::open(&p.bob, &encrypt_to(&p.bob, &bad, seed), p.now, &no_crls) {
                Ok(o) => return Err(TestCaseError::fail(format!("a forged plaintext opened: {o:?}"))),
                Err(e) => prop_assert!(
                    matches!(e, SealError::Malformed(_) | SealError::Chain(_) | SealError::BadSignature(_) | SealError::TooLarge(_)),
                    "{e:?}"
                ),
            }
        }
    }

    /// What is sealed opens to the same signal, from the same sender; over the payload limit,
    /// sealing refuses.
    #[test]
    fn sealed_signals_round_trip(s in signal(), sent in any::<u64>(), id in any::<[u8; 16]>()) {
        let p = people();
        let sealed = seal::seal(&p.alice, &p.bob.device_cert, &s, sent, id).expect("seal");
        prop_assert_eq!(seal::recipient(&sealed), Some(p.bob.device_cert.id()));
        let o = seal::open(&p.bob, &sealed, p.now, &no_crls).expect("opens");
        prop_assert_eq!(o.signal, s);
        prop_assert_eq!((o.sent, o.id), (sent, id));
        prop_assert_eq!(o.from.device, p.alice.device_cert.id());
        prop_assert_eq!(o.from.account, p.alice.account.uri());
    }
}

/// The test's own encryption matches `seal`'s format (else the forged-plaintext property
/// would test nothing): a correct plaintext encrypted by the test opens.
#[test]
fn the_test_encryption_matches_seal() {
    let p = people();
    let s = Signal {
        kind: "application/invite+json".into(),
        payload: b"{}".to_vec(),
    };
    let plain = plaintext(&p.alice, &p.bob, &s, 5, [2; 16]);
    let o = seal::open(&p.bob, &encrypt_to(&p.bob, &plain, 1), p.now, &no_crls).expect("opens");
    assert_eq!(o.signal, s);
    assert_eq!((o.sent, o.id), (5, [2; 16]));
    // A payload length over the limit is refused before anything is read.
    let big = Signal {
        kind: "k".into(),
        payload: vec![0; MAX_PAYLOAD + 1],
    };
    assert!(matches!(
        seal::seal(&p.alice, &p.bob.device_cert, &big, 5, [2; 16]),
        Err(SealError::TooLarge(_))
    ));
    let plain = plaintext(&p.alice, &p.bob, &big, 5, [2; 16]);
    assert!(matches!(
        seal::open(&p.bob, &encrypt_to(&p.bob, &plain, 2), p.now, &no_crls),
        Err(SealError::TooLarge(_))
    ));
}

/// No CRL applies (the transport's own tests of revocation pass some).
fn no_crls(_: &swarm_api::id::AccountUri) -> Vec<swarm_api::identity::Crl> {
    Vec::new()
}
