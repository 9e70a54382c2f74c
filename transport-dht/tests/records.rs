//! Discovery records and sealed signals, without a network: what verifies and what is refused.

mod common;

use swarm_api::traits::Signal;
use transport_dht::record::{self, RecordError};
use transport_dht::seal::{self, SealError, MAX_PAYLOAD};
use transport_dht::unix_now;

fn addrs() -> Vec<std::net::SocketAddr> {
    vec!["127.0.0.1:4433".parse().expect("addr")]
}

#[test]
fn a_signed_record_verifies_and_names_its_device_and_account() {
    let bob = common::identity("Bob");
    let now = unix_now();
    let rec =
        record::verify(&record::sign(&bob, &addrs(), now, 120), now, &no_crls).expect("valid");
    assert_eq!(rec.peer.device, bob.device_cert.id());
    assert_eq!(rec.peer.account, bob.account.uri());
    assert_eq!(rec.addrs, addrs());
    assert_eq!(rec.expires, now + 120);
}

#[test]
fn a_stale_record_is_refused() {
    let bob = common::identity("Bob");
    let now = unix_now();
    let bytes = record::sign(&bob, &addrs(), now - 200, 120);
    assert!(matches!(
        record::verify(&bytes, now, &no_crls),
        Err(RecordError::Stale { .. })
    ));
}

#[test]
fn a_record_from_the_future_is_refused() {
    let bob = common::identity("Bob");
    let now = unix_now();
    let bytes = record::sign(&bob, &addrs(), now + 3600, 120);
    assert!(matches!(
        record::verify(&bytes, now, &no_crls),
        Err(RecordError::Future { .. })
    ));
}

#[test]
fn a_record_with_changed_addresses_is_refused() {
    let bob = common::identity("Bob");
    let now = unix_now();
    let bytes = record::sign(&bob, &addrs(), now, 120);
    let text = String::from_utf8(bytes).expect("json");
    let tampered = text.replace("127.0.0.1:4433", "10.6.6.6:4433");
    assert_ne!(text, tampered);
    assert!(matches!(
        record::verify(tampered.as_bytes(), now, &no_crls),
        Err(RecordError::BadSignature(_))
    ));
}

#[test]
fn a_record_by_a_device_not_issued_by_the_account_is_refused() {
    let bob = common::identity("Bob");
    let forger = common::forger_of(&bob);
    let now = unix_now();
    let bytes = record::sign(&forger, &addrs(), now, 120);
    assert!(matches!(
        record::verify(&bytes, now, &no_crls),
        Err(RecordError::Chain(_))
    ));
    assert!(matches!(
        record::verify(b"{not json", now, &no_crls),
        Err(RecordError::Malformed(_))
    ));
}

fn vcard(len: usize) -> Vec<u8> {
    let mut v = b"BEGIN:VCARD\r\nFN:Alice\r\nPHOTO:".to_vec();
    v.resize(len - 12, b'A');
    v.extend(b"\r\nEND:VCARD\r");
    v
}

#[test]
fn a_sealed_trust_request_with_a_64000_byte_vcard_opens_for_its_recipient_only() {
    let (alice, bob, eve) = (
        common::identity("Alice"),
        common::identity("Bob"),
        common::identity("Eve"),
    );
    let signal = Signal {
        kind: "application/trust-request+json".into(),
        payload: vcard(MAX_PAYLOAD),
    };
    let now = unix_now();
    let sealed = seal::seal(&alice, &bob.device_cert, &signal, now, [7; 16]).expect("seal");
    assert!(
        sealed.len() < 65_536,
        "fits one OpenDHT value: {}",
        sealed.len()
    );
    assert_eq!(seal::recipient(&sealed), Some(bob.device_cert.id()));
    // The ciphertext does not contain the payload in clear.
    assert!(!sealed.windows(16).any(|w| w == &signal.payload[..16]));

    let opened = seal::open(&bob, &sealed, now, &no_crls).expect("bob opens");
    assert_eq!(opened.signal, signal);
    assert_eq!(opened.from.device, alice.device_cert.id());
    assert_eq!(opened.from.account, alice.account.uri());
    assert_eq!(opened.id, [7; 16]);

    // Eve is not the recipient; with Bob's device id in the header re-written to hers, HPKE
    // fails (she lacks Bob's key).
    assert!(matches!(
        seal::open(&eve, &sealed, now, &no_crls),
        Err(SealError::NotForMe)
    ));
    let mut redirected = sealed.clone();
    redirected[4..36].copy_from_slice(eve.device_cert.id().as_bytes());
    assert!(matches!(
        seal::open(&eve, &redirected, now, &no_crls),
        Err(SealError::Decrypt(_))
    ));

    // Any flipped ciphertext byte is refused.
    let mut tampered = sealed.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert!(matches!(
        seal::open(&bob, &tampered, now, &no_crls),
        Err(SealError::Decrypt(_))
    ));

    let too_big = Signal {
        kind: "x".into(),
        payload: vec![0; MAX_PAYLOAD + 1],
    };
    assert!(matches!(
        seal::seal(&alice, &bob.device_cert, &too_big, now, [0; 16]),
        Err(SealError::TooLarge(_))
    ));
}

#[test]
fn a_signal_sealed_by_a_forged_device_of_alice_is_refused() {
    let (alice, bob) = (common::identity("Alice"), common::identity("Bob"));
    let forger = common::forger_of(&alice);
    let signal = Signal {
        kind: "application/invite+json".into(),
        payload: br#"{"conversation":"x"}"#.to_vec(),
    };
    let now = unix_now();
    let sealed = seal::seal(&forger, &bob.device_cert, &signal, now, [1; 16]).expect("seal");
    assert!(matches!(
        seal::open(&bob, &sealed, now, &no_crls),
        Err(SealError::Chain(_))
    ));
}

/// No CRL applies (the transport's own tests of revocation pass some).
fn no_crls(_: &swarm_api::id::AccountUri) -> Vec<swarm_api::identity::Crl> {
    Vec::new()
}

/// #15 item 6: the CRLs given for the signer's account apply to address records and sealed
/// signals: a device revoked by its account is neither resolved nor heard.
#[test]
fn a_revoked_devices_record_and_signals_are_refused() {
    let (mallory, crl) = common::revoked_identity("Mallory");
    let bob = common::identity("Bob");
    let now = unix_now();
    let account = mallory.account.uri();
    let crls = move |a: &swarm_api::id::AccountUri| {
        if *a == account {
            vec![crl.clone()]
        } else {
            Vec::new()
        }
    };
    let rec = record::sign(&mallory, &addrs(), now, 120);
    assert!(
        record::verify(&rec, now, &no_crls).is_ok(),
        "valid without the CRL"
    );
    assert!(
        matches!(
            record::verify(&rec, now, &crls),
            Err(RecordError::Chain(
                swarm_api::identity::ChainError::Revoked(_)
            ))
        ),
        "a revoked device's record verifies"
    );
    // Another account's CRL does not touch Bob.
    assert!(record::verify(&record::sign(&bob, &addrs(), now, 120), now, &crls).is_ok());

    let signal = Signal {
        kind: "k".into(),
        payload: b"hello".to_vec(),
    };
    let sealed = seal::seal(&mallory, &bob.device_cert, &signal, now, [9; 16]).expect("seal");
    assert!(seal::open(&bob, &sealed, now, &no_crls).is_ok());
    assert!(matches!(
        seal::open(&bob, &sealed, now, &crls),
        Err(SealError::Chain(swarm_api::identity::ChainError::Revoked(
            _
        )))
    ));
}
