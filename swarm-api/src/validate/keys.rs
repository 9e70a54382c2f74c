//! The credentials a [`Scheme`] reads from a conversation's tree: account certificates
//! (`admins/`, `members/`), device certificates (`devices/`), and how a device's signature
//! on a commit and its chain to its account are checked.
//!
//! This is the one place where the two signature schemes differ for validation; every rule
//! above it sees only an [`AccountKey`] (an account URI) and a [`DeviceKey`] (a device id,
//! its claimed account, and a key that checks commit signatures).
//!
//! | | [`Scheme::Native`] | [`Scheme::Jami`] |
//! |---|---|---|
//! | account file | one Ed25519 account cert (self-signed CA) | account cert + its CA cert (RSA) |
//! | device file | Ed25519 device cert issued by the account | RSA device cert, no extensions |
//! | account URI | SHA-1 of the account key's SPKI | same |
//! | device id | SHA-256 of the device key's SPKI | same |
//! | commit signature | sshsig in `gpgsig` | RSA PKCS#1 v1.5 SHA-512 in `signature` |
//! | validity period | checked when a commit is made | checked at the commit's time (as jamid) |

use std::sync::Arc;

use super::Violation;
use crate::commit::{Commit, Scheme, SignatureError};
use crate::id::{AccountUri, DeviceId};
use crate::identity::{verify_device, AccountCert, ChainError, Crl, DeviceCert};
use crate::jami::{parse_pem_chain, verify_device_chain, JamiCertificate, JamiError};

/// An account certificate file, parsed.
#[derive(Debug, Clone)]
pub enum AccountKey {
    /// A native account certificate.
    Native(Arc<AccountCert>),
    /// A jamid account certificate followed by its CA certificate.
    Jami(Arc<[JamiCertificate]>),
}

/// A device certificate file, parsed.
#[derive(Debug, Clone)]
pub enum DeviceKey {
    /// A native device certificate.
    Native(Arc<DeviceCert>),
    /// A jamid device certificate.
    Jami(Arc<JamiCertificate>),
}

fn utf8(pem: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(pem).map_err(|_| "not UTF-8".to_owned())
}

impl AccountKey {
    /// Parses an `admins/`/`members/`/`banned/…` account file of `scheme`.
    pub fn parse(scheme: Scheme, pem: &[u8]) -> Result<Self, String> {
        match scheme {
            Scheme::Native => Ok(AccountKey::Native(Arc::new(
                AccountCert::from_pem(utf8(pem)?).map_err(|e| e.to_string())?,
            ))),
            Scheme::Jami => {
                let chain = parse_pem_chain(pem).map_err(|e| e.to_string())?;
                Ok(AccountKey::Jami(chain.into()))
            }
        }
    }

    /// The account URI: SHA-1 of the account key (in both schemes).
    pub fn uri(&self) -> AccountUri {
        match self {
            AccountKey::Native(a) => a.uri(),
            // `parse_pem_chain` never returns an empty chain; an empty one names nobody
            // real (the SHA-1 of nothing) and fails `verify_chain`.
            AccountKey::Jami(chain) => chain
                .first()
                .map(JamiCertificate::account_uri)
                .unwrap_or_else(|| AccountUri::from_spki_der(&[])),
        }
    }
}

impl DeviceKey {
    /// Parses a `devices/` file of `scheme` (for jamid, its first certificate).
    pub fn parse(scheme: Scheme, pem: &[u8]) -> Result<Self, String> {
        match scheme {
            Scheme::Native => Ok(DeviceKey::Native(Arc::new(
                DeviceCert::from_pem(utf8(pem)?).map_err(|e| e.to_string())?,
            ))),
            Scheme::Jami => {
                let chain = parse_pem_chain(pem).map_err(|e| e.to_string())?;
                match <[JamiCertificate; 1]>::try_from(chain) {
                    Ok([cert]) => Ok(DeviceKey::Jami(Arc::new(cert))),
                    Err(chain) => Err(format!(
                        "a device file holds one certificate, this one {}",
                        chain.len()
                    )),
                }
            }
        }
    }

    /// The device id: SHA-256 of the device key.
    pub fn id(&self) -> DeviceId {
        match self {
            DeviceKey::Native(d) => d.id(),
            DeviceKey::Jami(d) => d.device_id(),
        }
    }

    /// The account the certificate says issued it (checked by [`verify_chain`]).
    pub fn claimed_account(&self) -> Option<AccountUri> {
        match self {
            DeviceKey::Native(d) => d.claimed_account(),
            DeviceKey::Jami(d) => d.issuer_uid().and_then(|u| u.parse().ok()),
        }
    }

    /// The native certificate, if this is one.
    pub fn native(&self) -> Option<&DeviceCert> {
        match self {
            DeviceKey::Native(d) => Some(d),
            DeviceKey::Jami(_) => None,
        }
    }
}

fn jami_chain(e: JamiError) -> Violation {
    Violation::JamiChain(e.to_string())
}

/// Rule `device-chain` (and `device-not-revoked`, `own-crl`): the device certificate was
/// issued by the account certificate, which is well-formed for its scheme. A pure function
/// of the certificates (validity periods are checked by [`check_valid_at`]).
pub(crate) fn verify_chain(
    account: &AccountKey,
    device: &DeviceKey,
    crls: &[Crl],
    crl_dir: &str,
) -> Result<(), Violation> {
    match (account, device) {
        (AccountKey::Native(a), DeviceKey::Native(d)) => {
            verify_device(a, d, crls, None).map_err(|e| match e {
                ChainError::Revoked(d) => Violation::DeviceRevoked(d),
                ChainError::CrlNotFromAccount(_) => Violation::ForeignCrl(crl_dir.to_owned()),
                e => Violation::DeviceChain(e),
            })
        }
        (AccountKey::Jami(chain), DeviceKey::Jami(d)) => {
            verify_device_chain(d, chain, None).map_err(jami_chain)?;
            Ok(())
        }
        _ => Err(Violation::JamiChain(
            "account and device certificates are of different schemes".into(),
        )),
    }
}

/// jamid's `isValidUserAtCommit` time check: the device and account certificates were valid
/// at the commit's time. Native chains are checked for expiry when a commit is made, never
/// against an untrusted commit time, so this is a no-op for them.
pub(crate) fn check_valid_at(
    account: &AccountKey,
    device: &DeviceKey,
    at: i64,
) -> Result<(), Violation> {
    if let (AccountKey::Jami(chain), DeviceKey::Jami(d)) = (account, device) {
        d.check_valid_at(at).map_err(jami_chain)?;
        for c in chain.iter() {
            c.check_valid_at(at).map_err(jami_chain)?;
        }
    }
    Ok(())
}

/// Rule `signature` for a jamid commit: the `signature` header is the device key's RSA
/// PKCS#1 v1.5 SHA-512 signature of the commit without that header.
pub fn verify_jami_signature(c: &Commit, device: &JamiCertificate) -> Result<(), Violation> {
    let text = c.signature.as_deref().ok_or(Violation::Unsigned)?;
    let sig = crate::jami::decode_signature(text.as_bytes())
        .map_err(|e| Violation::BadSignature(format!("`signature` header: {e}")))?;
    device
        .verify_signature(&c.signed_payload, &sig)
        .map_err(|e| match e {
            JamiError::BadCommitSignature => Violation::BadSignature(
                SignatureError::Invalid {
                    id: c.id,
                    device: c.device,
                }
                .to_string(),
            ),
            e => Violation::BadSignature(e.to_string()),
        })
}
