//! Discovery records: where a device listens (its QUIC addresses), signed by the device key,
//! with the certificate chain that ties the device to its account, and a short lifetime.
//!
//! A record is published under the device's key and under its account's key
//! ([`address_key`]); resolvers keep only records whose chain verifies, whose signature
//! verifies, and that are neither expired nor issued in the future ([`verify`]).

use std::net::SocketAddr;

use ed25519_dalek::{Signature, Signer as _, Verifier as _};
use serde::{Deserialize, Serialize};
use swarm_api::id::AccountUri;
use swarm_api::identity::{verify_device, AccountCert, Crl, DeviceCert};
use swarm_api::traits::{Destination, Peer};

use crate::ffi::InfoHash;
use crate::Identity;

/// Domain separation of record signatures.
const DOMAIN: &[u8] = b"swarm/dht/address-record/v1\n";
/// Tolerated clock skew for `issued` in the future, in seconds.
const SKEW: u64 = 60;

/// Why a record was ignored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// Not a record (bad JSON, bad certificate, bad hex).
    #[error("malformed record: {0}")]
    Malformed(String),
    /// The device certificate is not issued by the account (or is revoked / out of validity).
    #[error("certificate chain refused: {0}")]
    Chain(#[from] swarm_api::identity::ChainError),
    /// The record's signature does not verify with the device key.
    #[error("bad signature on the record of device {0}")]
    BadSignature(swarm_api::DeviceId),
    /// The record's lifetime is over.
    #[error("stale record (expired at {expires}, now {now})")]
    Stale {
        /// When it expired (Unix seconds).
        expires: u64,
        /// Now (Unix seconds).
        now: u64,
    },
    /// The record claims to be issued in the future.
    #[error("record issued in the future ({issued}, now {now})")]
    Future {
        /// Its issue time.
        issued: u64,
        /// Now.
        now: u64,
    },
}

/// The signed part of a record (field order is the signed byte order).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Body {
    device_cert: String,
    account_cert: String,
    addrs: Vec<SocketAddr>,
    issued: u64,
    expires: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Signed {
    body: Body,
    sig: String,
}

/// A verified record.
#[derive(Debug, Clone)]
pub struct AddressRecord {
    /// The device and its account, proved by the certificate chain and the signature.
    pub peer: Peer,
    /// Where the device listens.
    pub addrs: Vec<SocketAddr>,
    /// When the device signed it (Unix seconds, sender's clock).
    pub issued: u64,
    /// When it stops being valid (Unix seconds).
    pub expires: u64,
    /// The device certificate.
    pub device_cert: DeviceCert,
    /// The account certificate.
    pub account_cert: AccountCert,
}

/// The DHT key where the records of a device, or of all devices of an account, are put.
pub fn address_key(of: Destination) -> InfoHash {
    match of {
        Destination::Device(d) => InfoHash::of(format!("swarm/addr/device/{d}").as_bytes()),
        Destination::Account(u) => InfoHash::of(format!("swarm/addr/account/{u}").as_bytes()),
    }
}

fn signed_bytes(body: &Body) -> Vec<u8> {
    let mut v = DOMAIN.to_vec();
    // Serialising a struct of strings, numbers and addresses cannot fail.
    v.extend(serde_json::to_vec(body).unwrap_or_default());
    v
}

/// Signs a record of `addrs` valid from `now` for `lifetime` seconds.
pub fn sign(me: &Identity, addrs: &[SocketAddr], now: u64, lifetime: u64) -> Vec<u8> {
    let body = Body {
        device_cert: me.device_cert.pem().to_owned(),
        account_cert: me.account.pem().to_owned(),
        addrs: addrs.to_vec(),
        issued: now,
        expires: now + lifetime,
    };
    let sig = me.key.sign(&signed_bytes(&body));
    serde_json::to_vec(&Signed {
        body,
        sig: hex::encode(sig.to_bytes()),
    })
    .unwrap_or_default()
}

/// Verifies a record at time `now` (Unix seconds): its device chain (not revoked by any CRL
/// `crls` gives for its account) and its signature.
pub fn verify(
    bytes: &[u8],
    now: u64,
    crls: &dyn Fn(&AccountUri) -> Vec<Crl>,
) -> Result<AddressRecord, RecordError> {
    let signed: Signed =
        serde_json::from_slice(bytes).map_err(|e| RecordError::Malformed(e.to_string()))?;
    let body = signed.body;
    let device_cert = DeviceCert::from_pem(&body.device_cert)
        .map_err(|e| RecordError::Malformed(e.to_string()))?;
    let account_cert = AccountCert::from_pem(&body.account_cert)
        .map_err(|e| RecordError::Malformed(e.to_string()))?;
    let at = time::OffsetDateTime::from_unix_timestamp(now as i64)
        .map_err(|e| RecordError::Malformed(e.to_string()))?;
    verify_device(
        &account_cert,
        &device_cert,
        &crls(&account_cert.uri()),
        Some(at),
    )?;
    let sig: [u8; 64] = hex::decode(&signed.sig)
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| RecordError::Malformed("signature is not 64 hex bytes".into()))?;
    device_cert
        .public_key()
        .verify(&signed_bytes(&body), &Signature::from_bytes(&sig))
        .map_err(|_| RecordError::BadSignature(device_cert.id()))?;
    if body.expires <= now {
        return Err(RecordError::Stale {
            expires: body.expires,
            now,
        });
    }
    if body.issued > now + SKEW {
        return Err(RecordError::Future {
            issued: body.issued,
            now,
        });
    }
    Ok(AddressRecord {
        peer: Peer {
            device: device_cert.id(),
            account: account_cert.uri(),
        },
        addrs: body.addrs,
        issued: body.issued,
        expires: body.expires,
        device_cert,
        account_cert,
    })
}
