//! Signals as they travel through the DHT: **signed** by the sender's device (Ed25519, with
//! its certificate chain inside) and then **encrypted to the recipient device** with HPKE
//! (RFC 9180: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305, base mode). The
//! recipient's X25519 key is its Ed25519 device key converted (birational map), so no extra key
//! needs publishing. A DHT node on the path sees only the recipient device id and ciphertext.
//!
//! Wire form (binary, so that a 64 000-byte vCard fits in one OpenDHT value):
//! `MAGIC | to (32) | enc (32) | ciphertext`. The plaintext is
//! `len16 device-cert DER | len16 account-cert DER | len16 kind | u64 sent | id (16) |
//! len32 payload | signature (64)`, the signature covering the domain, `to` and everything
//! before it.

use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, OpModeR, OpModeS, Serializable};
use swarm_api::id::AccountUri;
use swarm_api::identity::{verify_device, AccountCert, Crl, DeviceCert};
use swarm_api::traits::{Peer, Signal};
use swarm_api::DeviceId;

use crate::Identity;

const MAGIC: &[u8; 4] = b"SWS1";
const INFO: &[u8] = b"swarm/dht/signal/v1";
const DOMAIN: &[u8] = b"swarm/dht/signal-signature/v1\n";
/// The largest payload a sealed signal carries (a trust request's vCard is at most 64 000).
pub const MAX_PAYLOAD: usize = 64_000;

type Kem = X25519HkdfSha256;

/// Why a sealed signal was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// Not a sealed signal, or truncated.
    #[error("malformed sealed signal: {0}")]
    Malformed(&'static str),
    /// Addressed to another device.
    #[error("sealed for another device")]
    NotForMe,
    /// HPKE failed (wrong key, tampered ciphertext).
    #[error("cannot decrypt: {0}")]
    Decrypt(String),
    /// The sender's certificates do not chain.
    #[error("sender's certificate chain refused: {0}")]
    Chain(#[from] swarm_api::identity::ChainError),
    /// The signature does not verify with the sender's device key.
    #[error("bad signature from device {0}")]
    BadSignature(DeviceId),
    /// The payload is over [`MAX_PAYLOAD`].
    #[error("payload of {0} bytes is over the limit")]
    TooLarge(usize),
}

/// A signal opened and authenticated.
#[derive(Debug, Clone)]
pub struct Opened {
    /// The sender, proved by its certificate chain and signature.
    pub from: Peer,
    /// The signal.
    pub signal: Signal,
    /// The sender's clock when it sent (Unix seconds; only for staleness).
    pub sent: u64,
    /// A random id (replays of the same sealed value are recognised by it).
    pub id: [u8; 16],
    /// The sender's device certificate.
    pub device_cert: DeviceCert,
    /// The sender's account certificate.
    pub account_cert: AccountCert,
}

/// The X25519 public key of a device (its Ed25519 key, converted).
fn x25519_public(key: &VerifyingKey) -> Result<<Kem as hpke::Kem>::PublicKey, SealError> {
    <Kem as hpke::Kem>::PublicKey::from_bytes(&key.to_montgomery().to_bytes())
        .map_err(|e| SealError::Decrypt(format!("{e:?}")))
}

fn x25519_secret(key: &SigningKey) -> Result<<Kem as hpke::Kem>::PrivateKey, SealError> {
    <Kem as hpke::Kem>::PrivateKey::from_bytes(&key.to_scalar_bytes())
        .map_err(|e| SealError::Decrypt(format!("{e:?}")))
}

/// The OS RNG (rand_core 0.6) seen through the rand_core 0.9 traits that `hpke` takes.
struct OsRng09;

impl hpke::rand_core::RngCore for OsRng09 {
    fn next_u32(&mut self) -> u32 {
        rand_core::RngCore::next_u32(&mut rand_core::OsRng)
    }
    fn next_u64(&mut self) -> u64 {
        rand_core::RngCore::next_u64(&mut rand_core::OsRng)
    }
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, dst)
    }
}

impl hpke::rand_core::CryptoRng for OsRng09 {}

fn der(pem_text: &str) -> Vec<u8> {
    pem::parse(pem_text)
        .map(|p| p.into_contents())
        .unwrap_or_default()
}

fn put16(out: &mut Vec<u8>, data: &[u8]) {
    out.extend((data.len() as u16).to_be_bytes());
    out.extend(data);
}

/// Signs and seals `signal` for `to` (whose device certificate is `to_cert`).
pub fn seal(
    me: &Identity,
    to_cert: &DeviceCert,
    signal: &Signal,
    sent: u64,
    id: [u8; 16],
) -> Result<Vec<u8>, SealError> {
    if signal.payload.len() > MAX_PAYLOAD {
        return Err(SealError::TooLarge(signal.payload.len()));
    }
    let to = to_cert.id();
    let mut plain = Vec::with_capacity(signal.payload.len() + 1200);
    put16(&mut plain, &der(me.device_cert.pem()));
    put16(&mut plain, &der(me.account.pem()));
    put16(&mut plain, signal.kind.as_bytes());
    plain.extend(sent.to_be_bytes());
    plain.extend(id);
    plain.extend((signal.payload.len() as u32).to_be_bytes());
    plain.extend(&signal.payload);
    let mut signed = DOMAIN.to_vec();
    signed.extend(to.as_bytes());
    signed.extend(&plain);
    plain.extend(me.key.sign(&signed).to_bytes());
    let pk = x25519_public(to_cert.public_key())?;
    let mut rng = OsRng09;
    let (enc, ct) = hpke::single_shot_seal::<ChaCha20Poly1305, HkdfSha256, Kem, _>(
        &OpModeS::Base,
        &pk,
        INFO,
        &plain,
        to.as_bytes(),
        &mut rng,
    )
    .map_err(|e| SealError::Decrypt(format!("{e:?}")))?;
    let mut out = MAGIC.to_vec();
    out.extend(to.as_bytes());
    out.extend(enc.to_bytes());
    out.extend(ct);
    Ok(out)
}

/// The recipient device named in a sealed signal (readable by anyone; no authentication).
pub fn recipient(sealed: &[u8]) -> Option<DeviceId> {
    let to: [u8; 32] = sealed.get(4..36)?.try_into().ok()?;
    (sealed.get(..4) == Some(MAGIC)).then(|| DeviceId::from_bytes(to))
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SealError> {
        if self.0.len() < n {
            return Err(SealError::Malformed("truncated"));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn len16(&mut self) -> Result<&'a [u8], SealError> {
        let n = u16::from_be_bytes(
            self.take(2)?
                .try_into()
                .map_err(|_| SealError::Malformed("len"))?,
        );
        self.take(n as usize)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], SealError> {
        self.take(N)?
            .try_into()
            .map_err(|_| SealError::Malformed("length"))
    }
}

/// Opens a sealed signal addressed to this device, checks the sender's chain (at `now`, Unix
/// seconds; not revoked by any CRL `crls` gives for its account) and signature.
pub fn open(
    me: &Identity,
    sealed: &[u8],
    now: u64,
    crls: &dyn Fn(&AccountUri) -> Vec<Crl>,
) -> Result<Opened, SealError> {
    let mine = me.device_cert.id();
    let to = recipient(sealed).ok_or(SealError::Malformed("header"))?;
    if to != mine {
        return Err(SealError::NotForMe);
    }
    let enc_bytes = sealed
        .get(36..68)
        .ok_or(SealError::Malformed("truncated"))?;
    let ct = &sealed[68..];
    let enc = <Kem as hpke::Kem>::EncappedKey::from_bytes(enc_bytes)
        .map_err(|e| SealError::Decrypt(format!("{e:?}")))?;
    let sk = x25519_secret(&me.key)?;
    let plain = hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, Kem>(
        &OpModeR::Base,
        &sk,
        &enc,
        INFO,
        ct,
        mine.as_bytes(),
    )
    .map_err(|e| SealError::Decrypt(format!("{e:?}")))?;
    if plain.len() < 64 {
        return Err(SealError::Malformed("truncated"));
    }
    let (body, sig) = plain.split_at(plain.len() - 64);
    let mut r = Reader(body);
    let device_der = r.len16()?;
    let account_der = r.len16()?;
    let kind = std::str::from_utf8(r.len16()?).map_err(|_| SealError::Malformed("kind"))?;
    let sent = u64::from_be_bytes(r.array()?);
    let id: [u8; 16] = r.array()?;
    let len = u32::from_be_bytes(r.array()?) as usize;
    if len > MAX_PAYLOAD {
        return Err(SealError::TooLarge(len));
    }
    let payload = r.take(len)?;
    if !r.0.is_empty() {
        return Err(SealError::Malformed("trailing bytes"));
    }
    let device_cert = DeviceCert::from_pem(&pem::encode(&pem::Pem::new("CERTIFICATE", device_der)))
        .map_err(|_| SealError::Malformed("device certificate"))?;
    let account_cert =
        AccountCert::from_pem(&pem::encode(&pem::Pem::new("CERTIFICATE", account_der)))
            .map_err(|_| SealError::Malformed("account certificate"))?;
    let at = time::OffsetDateTime::from_unix_timestamp(now as i64)
        .map_err(|_| SealError::Malformed("time"))?;
    verify_device(
        &account_cert,
        &device_cert,
        &crls(&account_cert.uri()),
        Some(at),
    )?;
    let mut signed = DOMAIN.to_vec();
    signed.extend(mine.as_bytes());
    signed.extend(body);
    let sig: [u8; 64] = sig
        .try_into()
        .map_err(|_| SealError::Malformed("signature"))?;
    device_cert
        .public_key()
        .verify(&signed, &Signature::from_bytes(&sig))
        .map_err(|_| SealError::BadSignature(device_cert.id()))?;
    Ok(Opened {
        from: Peer {
            device: device_cert.id(),
            account: account_cert.uri(),
        },
        signal: Signal {
            kind: kind.to_owned(),
            payload: payload.to_vec(),
        },
        sent,
        id,
        device_cert,
        account_cert,
    })
}
