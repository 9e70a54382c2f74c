//! Test identities and commits in jamid's format (feature `testing`): an RSA device of an
//! RSA account with its CA, certificates shaped as jamid writes them, and commits signed with
//! a `signature` header. The fixtures hold no private keys, so this is how tests build
//! jamid-format histories that break one rule at a time. Never use outside tests.

use base64::Engine as _;
use gix_hash::ObjectId;
use rand_core::CryptoRngCore;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyIdMethod,
    PublicKeyData, SerialNumber, SignatureAlgorithm, PKCS_RSA_SHA384,
};
use rsa::pkcs1::EncodeRsaPublicKey as _;
use rsa::{Pkcs1v15Sign, RsaPrivateKey};
use sha2::{Digest as _, Sha384, Sha512};
use time::OffsetDateTime;

use crate::id::{AccountUri, CommitId, DeviceId};
use crate::object::Object;

/// An RSA key as rcgen needs it: the PKCS#1 public key and a SHA-384 signer.
struct RsaSigner<'a> {
    key: &'a RsaPrivateKey,
    public: Vec<u8>,
}

impl<'a> RsaSigner<'a> {
    fn new(key: &'a RsaPrivateKey) -> Result<Self, String> {
        let public = key
            .to_public_key()
            .to_pkcs1_der()
            .map_err(|e| e.to_string())?
            .as_bytes()
            .to_vec();
        Ok(Self { key, public })
    }
}

impl PublicKeyData for RsaSigner<'_> {
    fn der_bytes(&self) -> &[u8] {
        &self.public
    }
    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &PKCS_RSA_SHA384
    }
}

impl rcgen::SigningKey for RsaSigner<'_> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.key
            .sign(Pkcs1v15Sign::new::<Sha384>(), &Sha384::digest(msg))
            .map_err(|_| rcgen::Error::RemoteKeyError)
    }
}

fn uid() -> DnType {
    DnType::CustomDnType(vec![0, 9, 2342, 19_200_300, 100, 1, 1])
}

fn dn(cn: &str, uid_value: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn.push(uid(), uid_value);
    dn
}

fn params(
    dn: DistinguishedName,
    ca: bool,
    serial: u64,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = dn;
    p.is_ca = if ca {
        IsCa::Ca(BasicConstraints::Unconstrained)
    } else {
        IsCa::NoCa
    };
    p.serial_number = Some(SerialNumber::from_slice(&serial.to_be_bytes()));
    p.not_before = not_before;
    p.not_after = not_after;
    p.key_identifier_method = KeyIdMethod::PreSpecified(serial.to_be_bytes().to_vec());
    p
}

/// A device of a jamid-style account: RSA keys, a CA, an account and a device certificate.
pub struct JamiTestDevice {
    device_key: RsaPrivateKey,
    /// The display name written in commits.
    pub name: String,
    /// The account URI (SHA-1 of the account key).
    pub uri: AccountUri,
    /// The device id (SHA-256 of the device key).
    pub device: DeviceId,
    /// `admins/<uri>.crt` / `members/<uri>.crt`: the account cert, then its CA cert.
    pub account_pem: String,
    /// `devices/<id>.crt`: the device cert.
    pub device_pem: String,
}

impl std::fmt::Debug for JamiTestDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JamiTestDevice")
            .field("uri", &self.uri)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

impl JamiTestDevice {
    /// Generates the keys (RSA of `bits`) and certificates, all valid in
    /// `[not_before, not_after]` (Unix seconds).
    pub fn generate(
        name: &str,
        bits: usize,
        not_before: i64,
        not_after: i64,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Self, String> {
        let t = |s: i64| OffsetDateTime::from_unix_timestamp(s).map_err(|e| e.to_string());
        let (nb, na) = (t(not_before)?, t(not_after)?);
        let mut key = || RsaPrivateKey::new(rng, bits).map_err(|e| e.to_string());
        let (ca_key, account_key, device_key) = (key()?, key()?, key()?);
        let (ca, account, device) = (
            RsaSigner::new(&ca_key)?,
            RsaSigner::new(&account_key)?,
            RsaSigner::new(&device_key)?,
        );
        let sha1_hex = |spki: &[u8]| AccountUri::from_spki_der(spki).to_string();
        let gen = |e: rcgen::Error| e.to_string();

        let ca_params = params(
            dn("Jami CA", &sha1_hex(&ca.subject_public_key_info())),
            true,
            1,
            nb,
            na,
        );
        let ca_cert = ca_params.clone().self_signed(&ca).map_err(gen)?;
        let ca_issuer = Issuer::new(ca_params, &ca);

        let uri = AccountUri::from_spki_der(&account.subject_public_key_info());
        let account_params = params(dn("Jami", &uri.to_string()), true, 2, nb, na);
        let account_cert = account_params
            .clone()
            .signed_by(&account, &ca_issuer)
            .map_err(gen)?;
        let account_issuer = Issuer::new(account_params, &account);

        let device_id = DeviceId::from_spki_der(&device.subject_public_key_info());
        let device_params = params(
            dn("Jami device", &sha1_hex(&device.subject_public_key_info())),
            false,
            3,
            nb,
            na,
        );
        let device_cert = device_params
            .signed_by(&device, &account_issuer)
            .map_err(gen)?;
        drop((ca, account, device));
        Ok(Self {
            device_key,
            name: name.to_owned(),
            uri,
            device: device_id,
            account_pem: format!("{}{}", account_cert.pem(), ca_cert.pem()),
            device_pem: device_cert.pem(),
        })
    }

    /// A commit as jamid writes it: author = committer = `name <device id>`, `+0000`, the
    /// message without a trailing newline, and a `signature` header with the RSA PKCS#1 v1.5
    /// SHA-512 signature of the commit without that header.
    pub fn sign_commit(
        &self,
        tree: ObjectId,
        parents: &[CommitId],
        message: &str,
        time: i64,
    ) -> Result<Object, String> {
        crate::commit::build_signed(
            &self.name,
            &self.device,
            tree,
            parents,
            message,
            time,
            super::SIGNATURE_HEADER,
            |payload| {
                let signature = self
                    .device_key
                    .sign(Pkcs1v15Sign::new::<Sha512>(), &Sha512::digest(payload))
                    .map_err(|e| e.to_string())?;
                Ok(base64::engine::general_purpose::STANDARD.encode(signature))
            },
        )
    }
}
