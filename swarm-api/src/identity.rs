//! Identity (DESIGN §2): accounts, devices, certificates and revocation lists.
//!
//! An [`Account`] holds an Ed25519 key and a self-signed X.509 CA certificate whose subject
//! carries the account [`AccountUri`] as `UID` and the display name as `CN`. A [`Device`] holds
//! its own Ed25519 key and a certificate issued by the account, whose subject carries the
//! [`DeviceId`] as `UID`. The account publishes an X.509 CRL ([`Account::crl`]) listing the
//! devices it revoked.
//!
//! Everything here is sans-IO: keys and certificates go in and out as PEM strings
//! ([`Account::to_pem`], [`Account::from_pem`], ...), time is passed in, randomness comes from
//! a caller-supplied RNG. Parsing a certificate someone else sent ([`AccountCert`],
//! [`DeviceCert`], [`Crl`]) checks its shape; [`verify_device`] checks the whole chain.

use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, KeypairBytes};
use ed25519_dalek::{Signature, SigningKey, Verifier as _, VerifyingKey};
use rand_core::CryptoRngCore;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, IsCa, Issuer, KeyIdMethod, KeyUsagePurpose, PublicKeyData, RevokedCertParams,
    SerialNumber, SignatureAlgorithm, PKCS_ED25519,
};
use time::{Duration, OffsetDateTime};
use x509_parser::oid_registry::{OID_SIG_ED25519, OID_USERID, OID_X509_COMMON_NAME};
use x509_parser::prelude::{FromDer, X509Certificate, X509Name};
use x509_parser::revocation_list::CertificateRevocationList;

use crate::id::{AccountUri, DeviceId};

/// How long a new account certificate is valid.
pub const ACCOUNT_VALIDITY: Duration = Duration::days(365 * 20);
/// How long a new device certificate is valid.
pub const DEVICE_VALIDITY: Duration = Duration::days(365 * 10);
/// How long a new CRL is valid before the next one is due.
pub const CRL_VALIDITY: Duration = Duration::days(365 * 10);

/// Errors from generating, loading or parsing identity material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The display name cannot be used (empty, too long, or has characters Git or X.509 forbid).
    #[error("invalid display name {0:?}: must be 1-128 characters without '<', '>' or control characters")]
    InvalidName(String),
    /// A PEM block is missing or malformed.
    #[error("malformed PEM ({what}): {reason}")]
    Pem {
        /// What was being read.
        what: &'static str,
        /// Details.
        reason: String,
    },
    /// A private key could not be read.
    #[error("malformed private key: {0}")]
    Key(String),
    /// A certificate or CRL could not be parsed or does not have the required shape.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// What was being read.
        what: &'static str,
        /// Details.
        reason: String,
    },
    /// The private key does not belong to the certificate.
    #[error("the private key does not match the {0} certificate")]
    KeyMismatch(&'static str),
    /// Building a certificate or CRL failed.
    #[error("certificate generation failed: {0}")]
    Generate(String),
}

/// Why a device certificate chain is not acceptable. Each failure has its own variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// The device certificate names a different issuer than this account.
    #[error("device {device} was issued by account {issuer}, not by {account}")]
    WrongIssuer {
        /// The device.
        device: DeviceId,
        /// The issuer the device certificate names.
        issuer: String,
        /// The account it was checked against.
        account: AccountUri,
    },
    /// The signature on the device certificate does not verify with the account key.
    #[error("the certificate of device {0} is not signed by its account's key")]
    BadSignature(DeviceId),
    /// A certificate is outside its validity period at the time of the check.
    #[error("the {what} certificate is not valid at {at} (valid {not_before} to {not_after})")]
    Expired {
        /// `"account"` or `"device"`.
        what: &'static str,
        /// The time of the check.
        at: OffsetDateTime,
        /// Start of validity.
        not_before: OffsetDateTime,
        /// End of validity.
        not_after: OffsetDateTime,
    },
    /// The account's CRL lists this device.
    #[error("device {0} is revoked by its account's CRL")]
    Revoked(DeviceId),
    /// The CRL was not issued by the account that owns the device.
    #[error("the CRL is not signed by account {0}")]
    CrlNotFromAccount(AccountUri),
}

/// The Ed25519 key used with rcgen, without ring: rcgen only needs the public key bytes and
/// a signing function.
struct RcgenKey<'a> {
    key: &'a SigningKey,
    public: [u8; 32],
}

impl<'a> RcgenKey<'a> {
    fn new(key: &'a SigningKey) -> Self {
        Self {
            key,
            public: key.verifying_key().to_bytes(),
        }
    }
}

impl PublicKeyData for RcgenKey<'_> {
    fn der_bytes(&self) -> &[u8] {
        &self.public
    }
    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &PKCS_ED25519
    }
}

impl rcgen::SigningKey for RcgenKey<'_> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        use ed25519_dalek::Signer as _;
        Ok(self.key.sign(msg).to_bytes().to_vec())
    }
}

/// DER `SubjectPublicKeyInfo` of an Ed25519 public key.
pub fn ed25519_spki_der(key: &VerifyingKey) -> Vec<u8> {
    // SEQUENCE { SEQUENCE { OID 1.3.101.112 }, BIT STRING { 0x00, key } }
    let mut der = vec![
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    der.extend_from_slice(key.as_bytes());
    der
}

/// The URI of the account owning `key`.
pub fn account_uri_of(key: &VerifyingKey) -> AccountUri {
    AccountUri::from_spki_der(&ed25519_spki_der(key))
}

/// The id of the device owning `key`.
pub fn device_id_of(key: &VerifyingKey) -> DeviceId {
    DeviceId::from_spki_der(&ed25519_spki_der(key))
}

fn check_name(name: &str) -> Result<(), IdentityError> {
    let ok = !name.trim().is_empty()
        && name.chars().count() <= 128
        && !name.chars().any(|c| c == '<' || c == '>' || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(IdentityError::InvalidName(name.to_owned()))
    }
}

/// Key identifier (RFC 7093 method 1: leftmost 160 bits of the SHA-256 of the SPKI).
fn key_id(key: &VerifyingKey) -> KeyIdMethod {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(ed25519_spki_der(key));
    KeyIdMethod::PreSpecified(digest[..20].to_vec())
}

fn uid_type() -> DnType {
    DnType::CustomDnType(vec![0, 9, 2342, 19_200_300, 100, 1, 1])
}

/// The CA parameters of an account. Rebuilt identically whenever the account issues something,
/// so only the subject and key matter (they fix the issuer name and authority key id).
fn account_params(name: &str, key: &VerifyingKey, now: OffsetDateTime) -> CertificateParams {
    let uri = account_uri_of(key);
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn.push(uid_type(), uri.to_string());
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.key_identifier_method = key_id(key);
    params.not_before = now;
    params.not_after = now + ACCOUNT_VALIDITY;
    params.serial_number = Some(serial_from(uri.as_bytes()));
    params
}

/// A positive, non-zero, 16-byte serial number derived from an id.
fn serial_from(id: &[u8]) -> SerialNumber {
    let mut s = [0u8; 16];
    s.copy_from_slice(&id[..16]);
    s[0] = (s[0] & 0x3f) | 0x40;
    SerialNumber::from_slice(&s)
}

fn pem_encode(tag: &str, der: &[u8]) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new(tag, der), config)
}

/// Decodes the first PEM block with label `tag`.
fn pem_decode(what: &'static str, tag: &str, pem: &str) -> Result<Vec<u8>, IdentityError> {
    let (_, block) =
        x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| IdentityError::Pem {
            what,
            reason: e.to_string(),
        })?;
    if block.label != tag {
        return Err(IdentityError::Pem {
            what,
            reason: format!("expected a {tag} block, found {}", block.label),
        });
    }
    Ok(block.contents)
}

/// The private key as a PKCS#8 PEM in the RFC 8410 form: version v1 (encoded as 0), without
/// the public key, which stock tools read (`openssl pkey` of Debian 12 and Python's
/// `cryptography` refuse the RFC 5958 v2 form with the public key that
/// `SigningKey::to_pkcs8_pem` writes).
fn key_to_pem(key: &SigningKey) -> Result<String, IdentityError> {
    KeypairBytes {
        secret_key: key.to_bytes(),
        public_key: None,
    }
    .to_pkcs8_pem(Default::default())
    .map(|z| z.to_string())
    .map_err(|e| IdentityError::Key(e.to_string()))
}

/// Reads both PKCS#8 forms: v1 (what [`key_to_pem`] writes) and v2 with the public key (what
/// homes made before issue #14 hold), whose public key must match the private one.
fn key_from_pem(pem: &str) -> Result<SigningKey, IdentityError> {
    SigningKey::from_pkcs8_pem(pem).map_err(|e| IdentityError::Key(e.to_string()))
}

/// An account with its private key: can issue device certificates and CRLs.
pub struct Account {
    key: SigningKey,
    cert: AccountCert,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("uri", &self.cert.uri)
            .field("name", &self.cert.name)
            .finish_non_exhaustive()
    }
}

impl Account {
    /// Generates a new account key and its self-signed CA certificate, valid from `now` for
    /// [`ACCOUNT_VALIDITY`].
    pub fn generate(
        name: &str,
        now: OffsetDateTime,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Self, IdentityError> {
        Self::generate_with_validity(name, now, now + ACCOUNT_VALIDITY, rng)
    }

    /// Like [`Account::generate`] with an explicit validity period (tests use short ones).
    pub fn generate_with_validity(
        name: &str,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Self, IdentityError> {
        check_name(name)?;
        let key = SigningKey::generate(rng);
        let mut params = account_params(name, &key.verifying_key(), not_before);
        params.not_after = not_after;
        let cert = params
            .self_signed(&RcgenKey::new(&key))
            .map_err(|e| IdentityError::Generate(e.to_string()))?;
        let cert = AccountCert::from_pem(&cert.pem())?;
        Ok(Self { key, cert })
    }

    /// Loads an account from its PKCS#8 private key (v1 or v2) and its certificate (both PEM);
    /// fails if they do not belong together.
    pub fn from_pem(key_pem: &str, cert_pem: &str) -> Result<Self, IdentityError> {
        let key = key_from_pem(key_pem)?;
        let cert = AccountCert::from_pem(cert_pem)?;
        if cert.public_key != key.verifying_key() {
            return Err(IdentityError::KeyMismatch("account"));
        }
        Ok(Self { key, cert })
    }

    /// The private key as PKCS#8 PEM in the RFC 8410 v1 form that stock `openssl` reads, and
    /// the certificate as PEM. Store the key with mode 0600 and never in a repository.
    pub fn to_pem(&self) -> Result<(String, String), IdentityError> {
        Ok((key_to_pem(&self.key)?, self.cert.pem.clone()))
    }

    /// The account URI.
    pub fn uri(&self) -> AccountUri {
        self.cert.uri
    }

    /// The display name.
    pub fn name(&self) -> &str {
        &self.cert.name
    }

    /// The parsed certificate.
    pub fn cert(&self) -> &AccountCert {
        &self.cert
    }

    fn issuer(&self) -> Issuer<'static, RcgenKey<'_>> {
        // The issuer's subject and key are all rcgen takes from these params.
        let params = account_params(
            &self.cert.name,
            &self.cert.public_key,
            OffsetDateTime::UNIX_EPOCH,
        );
        Issuer::new(params, RcgenKey::new(&self.key))
    }

    /// Issues a certificate for a device key, valid from `now` for [`DEVICE_VALIDITY`].
    pub fn issue_device_cert(
        &self,
        device_key: &VerifyingKey,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<DeviceCert, IdentityError> {
        let id = device_id_of(device_key);
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, self.cert.name.as_str());
        dn.push(uid_type(), id.to_string());
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.key_identifier_method = key_id(device_key);
        params.not_before = not_before;
        params.not_after = not_after;
        params.serial_number = Some(serial_from(id.as_bytes()));
        params.use_authority_key_identifier_extension = true;
        let public = PublicOnly(device_key.to_bytes());
        let cert = params
            .signed_by(&public, &self.issuer())
            .map_err(|e| IdentityError::Generate(e.to_string()))?;
        DeviceCert::from_pem(&cert.pem())
    }

    /// Creates a new device of this account with a fresh key.
    pub fn new_device(
        &self,
        now: OffsetDateTime,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Device, IdentityError> {
        let key = SigningKey::generate(rng);
        let cert = self.issue_device_cert(&key.verifying_key(), now, now + DEVICE_VALIDITY)?;
        Ok(Device { key, cert })
    }

    /// Issues a CRL revoking the given device certificates (`number` must grow with each
    /// new CRL of this account).
    pub fn crl(
        &self,
        revoked: &[&DeviceCert],
        number: u64,
        now: OffsetDateTime,
    ) -> Result<Crl, IdentityError> {
        let params = CertificateRevocationListParams {
            this_update: now,
            next_update: now + CRL_VALIDITY,
            crl_number: SerialNumber::from_slice(&number.to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|d| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&d.serial),
                    revocation_time: now,
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: key_id(&self.cert.public_key),
        };
        let crl = params
            .signed_by(&self.issuer())
            .map_err(|e| IdentityError::Generate(e.to_string()))?;
        let pem = crl
            .pem()
            .map_err(|e| IdentityError::Generate(e.to_string()))?;
        Crl::from_pem(&pem)
    }
}

struct PublicOnly([u8; 32]);

impl PublicKeyData for PublicOnly {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }
    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &PKCS_ED25519
    }
}

/// A device with its private key: signs commits and authenticates connections.
pub struct Device {
    key: SigningKey,
    cert: DeviceCert,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("id", &self.cert.id)
            .finish_non_exhaustive()
    }
}

impl Device {
    /// Loads a device from its PKCS#8 private key (v1 or v2) and certificate (both PEM).
    pub fn from_pem(key_pem: &str, cert_pem: &str) -> Result<Self, IdentityError> {
        let key = key_from_pem(key_pem)?;
        let cert = DeviceCert::from_pem(cert_pem)?;
        if cert.public_key != key.verifying_key() {
            return Err(IdentityError::KeyMismatch("device"));
        }
        Ok(Self { key, cert })
    }

    /// Builds a device from an existing key and certificate (e.g. a forged one in tests).
    pub fn from_parts(key: SigningKey, cert: DeviceCert) -> Result<Device, IdentityError> {
        if cert.public_key != key.verifying_key() {
            return Err(IdentityError::KeyMismatch("device"));
        }
        Ok(Device { key, cert })
    }

    /// The private key as PKCS#8 PEM in the RFC 8410 v1 form that stock `openssl` reads, and
    /// the certificate as PEM.
    pub fn to_pem(&self) -> Result<(String, String), IdentityError> {
        Ok((key_to_pem(&self.key)?, self.cert.pem.clone()))
    }

    /// The device id.
    pub fn id(&self) -> DeviceId {
        self.cert.id
    }

    /// The parsed certificate.
    pub fn cert(&self) -> &DeviceCert {
        &self.cert
    }

    /// The signing key (for commit signatures and TLS).
    pub fn signing_key(&self) -> &SigningKey {
        &self.key
    }
}

fn name_attr(name: &X509Name<'_>, oid: &x509_parser::oid_registry::Oid<'_>) -> Option<String> {
    name.iter_by_oid(oid)
        .next()
        .and_then(|a| a.as_str().ok())
        .map(str::to_owned)
}

fn time_of(t: &x509_parser::time::ASN1Time) -> OffsetDateTime {
    t.to_datetime()
}

/// The fields of a certificate that swarm uses, parsed once.
#[derive(Clone)]
struct ParsedCert {
    der: Vec<u8>,
    tbs: Vec<u8>,
    signature: Vec<u8>,
    subject_uid: String,
    subject_cn: Option<String>,
    issuer_uid: Option<String>,
    issuer_raw: Vec<u8>,
    subject_raw: Vec<u8>,
    public_key: VerifyingKey,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    serial: Vec<u8>,
    is_ca: bool,
}

fn parse_cert(what: &'static str, pem: &str) -> Result<ParsedCert, IdentityError> {
    let der = pem_decode(what, "CERTIFICATE", pem)?;
    let malformed = |reason: String| IdentityError::Malformed { what, reason };
    let (rest, cert) = X509Certificate::from_der(&der).map_err(|e| malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(malformed("trailing bytes after the certificate".into()));
    }
    if cert.signature_algorithm.algorithm != OID_SIG_ED25519
        || cert.tbs_certificate.signature.algorithm != OID_SIG_ED25519
        || cert.tbs_certificate.signature.parameters.is_some()
    {
        return Err(malformed(format!(
            "signature algorithm {} is not Ed25519",
            cert.signature_algorithm.algorithm
        )));
    }
    if !canonical_signed(
        &der,
        cert.tbs_certificate.as_ref(),
        &cert.signature_value.data,
    ) {
        return Err(malformed(
            "not canonical DER (Ed25519 signature wrapper)".into(),
        ));
    }
    let spki = cert.public_key();
    if spki.algorithm.algorithm != OID_SIG_ED25519 {
        return Err(malformed("public key is not Ed25519".into()));
    }
    let key_bytes: [u8; 32] = spki
        .subject_public_key
        .data
        .as_ref()
        .try_into()
        .map_err(|_| malformed("Ed25519 public key is not 32 bytes".into()))?;
    let public_key = VerifyingKey::from_bytes(&key_bytes).map_err(|e| malformed(e.to_string()))?;
    let subject_uid = name_attr(cert.subject(), &OID_USERID)
        .ok_or_else(|| malformed("subject has no UID".into()))?;
    Ok(ParsedCert {
        tbs: cert.tbs_certificate.as_ref().to_vec(),
        signature: cert.signature_value.data.to_vec(),
        subject_uid,
        subject_cn: name_attr(cert.subject(), &OID_X509_COMMON_NAME),
        issuer_uid: name_attr(cert.issuer(), &OID_USERID),
        issuer_raw: cert.issuer().as_raw().to_vec(),
        subject_raw: cert.subject().as_raw().to_vec(),
        public_key,
        not_before: time_of(&cert.validity().not_before),
        not_after: time_of(&cert.validity().not_after),
        serial: cert.raw_serial().to_vec(),
        is_ca: cert.is_ca(),
        der: der.clone(),
    })
}

/// DER `AlgorithmIdentifier` of Ed25519 (no parameters).
const ED25519_ALG: [u8; 7] = [0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70];

fn der_seq(content: &[u8]) -> Vec<u8> {
    let n = content.len();
    let mut out = vec![0x30];
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes: Vec<u8> = n
            .to_be_bytes()
            .iter()
            .copied()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend_from_slice(&bytes);
    }
    out.extend_from_slice(content);
    out
}

/// Whether `der` is exactly `SEQUENCE { tbs, Ed25519 AlgorithmIdentifier, BIT STRING sig }`
/// in canonical DER. The outer algorithm and signature wrapper are not covered by the
/// signature: without this check the same signed content could travel in many different
/// encodings (different blobs, same meaning).
fn canonical_signed(der: &[u8], tbs: &[u8], sig: &[u8]) -> bool {
    if sig.len() != 64 {
        return false;
    }
    let mut content = Vec::with_capacity(tbs.len() + 7 + 3 + 64);
    content.extend_from_slice(tbs);
    content.extend_from_slice(&ED25519_ALG);
    content.extend_from_slice(&[0x03, 0x41, 0x00]);
    content.extend_from_slice(sig);
    der_seq(&content) == der
}

fn verify_sig(key: &VerifyingKey, msg: &[u8], sig: &[u8]) -> bool {
    Signature::from_slice(sig)
        .map(|s| key.verify(msg, &s).is_ok())
        .unwrap_or(false)
}

/// A parsed account certificate: self-signed, CA, Ed25519, `UID` = the URI of its key.
#[derive(Clone)]
pub struct AccountCert {
    pem: String,
    uri: AccountUri,
    name: String,
    public_key: VerifyingKey,
    subject_raw: Vec<u8>,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
}

impl std::fmt::Debug for AccountCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AccountCert({}, {:?})", self.uri, self.name)
    }
}

impl AccountCert {
    /// Parses and checks an account certificate: Ed25519, CA, self-signed (signature
    /// verified), subject `UID` equal to the URI derived from its key.
    pub fn from_pem(pem: &str) -> Result<Self, IdentityError> {
        const WHAT: &str = "account certificate";
        let p = parse_cert(WHAT, pem)?;
        let malformed = |reason: String| IdentityError::Malformed { what: WHAT, reason };
        let uri = account_uri_of(&p.public_key);
        if p.subject_uid != uri.to_string() {
            return Err(malformed(format!(
                "subject UID {} is not the URI of its key ({uri})",
                p.subject_uid
            )));
        }
        if !p.is_ca {
            return Err(malformed("not a CA certificate".into()));
        }
        if p.issuer_raw != p.subject_raw || !verify_sig(&p.public_key, &p.tbs, &p.signature) {
            return Err(malformed("not self-signed by its own key".into()));
        }
        Ok(Self {
            pem: pem_encode("CERTIFICATE", &p.der),
            uri,
            name: p.subject_cn.unwrap_or_default(),
            public_key: p.public_key,
            subject_raw: p.subject_raw,
            not_before: p.not_before,
            not_after: p.not_after,
        })
    }

    /// The certificate, PEM-encoded (canonical form: one block, 64-column lines).
    pub fn pem(&self) -> &str {
        &self.pem
    }
    /// The account URI.
    pub fn uri(&self) -> AccountUri {
        self.uri
    }
    /// The display name (`CN`).
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The account's public key.
    pub fn public_key(&self) -> &VerifyingKey {
        &self.public_key
    }
    /// Checks the validity period against `now`.
    pub fn check_time(&self, now: OffsetDateTime) -> Result<(), ChainError> {
        check_time("account", now, self.not_before, self.not_after)
    }
}

fn check_time(
    what: &'static str,
    at: OffsetDateTime,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<(), ChainError> {
    if at < not_before || at > not_after {
        return Err(ChainError::Expired {
            what,
            at,
            not_before,
            not_after,
        });
    }
    Ok(())
}

/// A parsed device certificate: Ed25519, `UID` = the device id of its key. Whether it was
/// really issued by an account is checked by [`verify_device`].
#[derive(Clone)]
pub struct DeviceCert {
    pem: String,
    id: DeviceId,
    public_key: VerifyingKey,
    issuer_uid: Option<String>,
    issuer_raw: Vec<u8>,
    tbs: Vec<u8>,
    signature: Vec<u8>,
    serial: Vec<u8>,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
}

impl std::fmt::Debug for DeviceCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeviceCert({})", self.id)
    }
}

impl DeviceCert {
    /// Parses a device certificate and checks its shape (Ed25519, `UID` matches the key).
    pub fn from_pem(pem: &str) -> Result<Self, IdentityError> {
        const WHAT: &str = "device certificate";
        let p = parse_cert(WHAT, pem)?;
        let id = device_id_of(&p.public_key);
        if p.subject_uid != id.to_string() {
            return Err(IdentityError::Malformed {
                what: WHAT,
                reason: format!(
                    "subject UID {} is not the device id of its key ({id})",
                    p.subject_uid
                ),
            });
        }
        Ok(Self {
            pem: pem_encode("CERTIFICATE", &p.der),
            id,
            public_key: p.public_key,
            issuer_uid: p.issuer_uid,
            issuer_raw: p.issuer_raw,
            tbs: p.tbs,
            signature: p.signature,
            serial: p.serial,
            not_before: p.not_before,
            not_after: p.not_after,
        })
    }
    /// The certificate, PEM-encoded (canonical form).
    pub fn pem(&self) -> &str {
        &self.pem
    }
    /// The device id.
    pub fn id(&self) -> DeviceId {
        self.id
    }
    /// The device's public key (verifies its commit signatures).
    pub fn public_key(&self) -> &VerifyingKey {
        &self.public_key
    }
    /// The account URI the certificate names as issuer (unverified until [`verify_device`]).
    pub fn claimed_account(&self) -> Option<AccountUri> {
        self.issuer_uid.as_deref().and_then(|s| s.parse().ok())
    }
    /// Checks the validity period against `now`.
    pub fn check_time(&self, now: OffsetDateTime) -> Result<(), ChainError> {
        check_time("device", now, self.not_before, self.not_after)
    }
}

/// A parsed certificate revocation list.
#[derive(Clone)]
pub struct Crl {
    pem: String,
    issuer_raw: Vec<u8>,
    tbs: Vec<u8>,
    signature: Vec<u8>,
    revoked_serials: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Crl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Crl({} revoked)", self.revoked_serials.len())
    }
}

impl Crl {
    /// Parses a CRL (Ed25519-signed). Its issuer is checked by [`Crl::verify`].
    pub fn from_pem(pem: &str) -> Result<Self, IdentityError> {
        const WHAT: &str = "CRL";
        let der = pem_decode(WHAT, "X509 CRL", pem)?;
        let malformed = |reason: String| IdentityError::Malformed { what: WHAT, reason };
        let (rest, crl) =
            CertificateRevocationList::from_der(&der).map_err(|e| malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(malformed("trailing bytes after the CRL".into()));
        }
        if crl.signature_algorithm.algorithm != OID_SIG_ED25519
            || crl.tbs_cert_list.signature.algorithm != OID_SIG_ED25519
            || crl.tbs_cert_list.signature.parameters.is_some()
        {
            return Err(malformed("signature algorithm is not Ed25519".into()));
        }
        if !canonical_signed(&der, crl.tbs_cert_list.as_ref(), &crl.signature_value.data) {
            return Err(malformed(
                "not canonical DER (Ed25519 signature wrapper)".into(),
            ));
        }
        Ok(Self {
            pem: pem_encode("X509 CRL", &der),
            issuer_raw: crl.tbs_cert_list.issuer.as_raw().to_vec(),
            tbs: crl.tbs_cert_list.as_ref().to_vec(),
            signature: crl.signature_value.data.to_vec(),
            revoked_serials: crl
                .iter_revoked_certificates()
                .map(|r| r.raw_serial().to_vec())
                .collect(),
        })
    }
    /// The CRL, PEM-encoded (canonical form).
    pub fn pem(&self) -> &str {
        &self.pem
    }
    /// A stable id for the CRL file name (`CRLs/<uri>/<crl-id>.crl`): hex SHA-256 of its DER.
    pub fn id(&self) -> String {
        use sha2::Digest as _;
        let der = pem_decode("CRL", "X509 CRL", &self.pem).unwrap_or_default();
        hex::encode(sha2::Sha256::digest(der))
    }
    /// Checks that `account` issued and signed this CRL.
    pub fn verify(&self, account: &AccountCert) -> Result<(), ChainError> {
        if self.issuer_raw != account.subject_raw
            || !verify_sig(&account.public_key, &self.tbs, &self.signature)
        {
            return Err(ChainError::CrlNotFromAccount(account.uri));
        }
        Ok(())
    }
    /// Whether the CRL lists this device certificate (by serial number).
    pub fn revokes(&self, device: &DeviceCert) -> bool {
        self.revoked_serials.contains(&device.serial)
    }
}

/// Verifies that `device` was issued by `account`, and is not revoked by any of `crls`
/// (CRLs not signed by `account` are an error, not ignored).
///
/// `now` is `Some` when a connection is made or this device commits: then both certificates
/// must be within their validity period. History validation passes `None`: expiry is never
/// judged against a commit's author-controlled timestamp (DESIGN §2).
pub fn verify_device(
    account: &AccountCert,
    device: &DeviceCert,
    crls: &[Crl],
    now: Option<OffsetDateTime>,
) -> Result<(), ChainError> {
    if device.issuer_raw != account.subject_raw {
        return Err(ChainError::WrongIssuer {
            device: device.id,
            issuer: device
                .issuer_uid
                .clone()
                .unwrap_or_else(|| "(no UID)".into()),
            account: account.uri,
        });
    }
    if !verify_sig(&account.public_key, &device.tbs, &device.signature) {
        return Err(ChainError::BadSignature(device.id));
    }
    for crl in crls {
        crl.verify(account)?;
        if crl.revokes(device) {
            return Err(ChainError::Revoked(device.id));
        }
    }
    if let Some(now) = now {
        account.check_time(now)?;
        device.check_time(now)?;
    }
    Ok(())
}

/// Forges a device certificate that names `claimed` as its issuer (same subject bytes) but is
/// signed by `forger`: what an attacker without the account key can make. For tests of the
/// chain rules only.
#[cfg(feature = "testing")]
pub fn forge_device_cert(
    claimed: &AccountCert,
    forger: &SigningKey,
    device_key: &VerifyingKey,
    now: OffsetDateTime,
) -> Result<DeviceCert, IdentityError> {
    let mut params = account_params(claimed.name(), &forger.verifying_key(), now);
    params.distinguished_name =
        account_params(claimed.name(), claimed.public_key(), now).distinguished_name;
    let issuer = Issuer::new(params, RcgenKey::new(forger));
    let id = device_id_of(device_key);
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, claimed.name());
    dn.push(uid_type(), id.to_string());
    p.distinguished_name = dn;
    p.serial_number = Some(serial_from(id.as_bytes()));
    p.not_before = now;
    p.not_after = now + DEVICE_VALIDITY;
    let cert = p
        .signed_by(&PublicOnly(device_key.to_bytes()), &issuer)
        .map_err(|e| IdentityError::Generate(e.to_string()))?;
    DeviceCert::from_pem(&cert.pem())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
    }

    #[test]
    fn good_chain_verifies_and_ids_match_keys() {
        let acc = Account::generate("Alice", now(), &mut OsRng).unwrap();
        let dev = acc.new_device(now(), &mut OsRng).unwrap();
        assert_eq!(acc.cert().name(), "Alice");
        assert_eq!(dev.id(), device_id_of(&dev.signing_key().verifying_key()));
        assert_eq!(dev.cert().claimed_account(), Some(acc.uri()));
        verify_device(acc.cert(), dev.cert(), &[], Some(now())).unwrap();
        let empty = acc.crl(&[], 1, now()).unwrap();
        verify_device(acc.cert(), dev.cert(), &[empty], Some(now())).unwrap();
    }

    #[test]
    fn device_of_another_account_is_refused() {
        let alice = Account::generate("Alice", now(), &mut OsRng).unwrap();
        let mallory = Account::generate("Mallory", now(), &mut OsRng).unwrap();
        let dev = mallory.new_device(now(), &mut OsRng).unwrap();
        let err = verify_device(alice.cert(), dev.cert(), &[], None).unwrap_err();
        assert!(matches!(err, ChainError::WrongIssuer { .. }), "{err}");
    }

    #[test]
    fn forged_issuer_name_is_refused_by_signature() {
        // Mallory names herself "Alice" with Alice's URI: same subject bytes, wrong key.
        let alice = Account::generate("Alice", now(), &mut OsRng).unwrap();
        let key = SigningKey::generate(&mut OsRng);
        let mut params = account_params("Alice", &key.verifying_key(), now());
        params.distinguished_name =
            account_params("Alice", alice.cert().public_key(), now()).distinguished_name;
        let issuer = Issuer::new(params, RcgenKey::new(&key));
        let dkey = SigningKey::generate(&mut OsRng);
        let id = device_id_of(&dkey.verifying_key());
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "Alice");
        dn.push(uid_type(), id.to_string());
        p.distinguished_name = dn;
        p.serial_number = Some(serial_from(id.as_bytes()));
        let cert = p
            .signed_by(&PublicOnly(dkey.verifying_key().to_bytes()), &issuer)
            .unwrap();
        let dev = DeviceCert::from_pem(&cert.pem()).unwrap();
        let err = verify_device(alice.cert(), &dev, &[], None).unwrap_err();
        assert_eq!(err, ChainError::BadSignature(id));
    }

    #[test]
    fn expired_device_is_refused_only_when_time_is_checked() {
        let acc = Account::generate("Alice", now(), &mut OsRng).unwrap();
        let key = SigningKey::generate(&mut OsRng);
        let dev = acc
            .issue_device_cert(&key.verifying_key(), now(), now() + Duration::days(1))
            .unwrap();
        let later = now() + Duration::days(2);
        let err = verify_device(acc.cert(), &dev, &[], Some(later)).unwrap_err();
        assert!(
            matches!(err, ChainError::Expired { what: "device", .. }),
            "{err}"
        );
        // History validation does not judge expiry.
        verify_device(acc.cert(), &dev, &[], None).unwrap();
    }

    #[test]
    fn revoked_device_is_refused() {
        let acc = Account::generate("Alice", now(), &mut OsRng).unwrap();
        let d1 = acc.new_device(now(), &mut OsRng).unwrap();
        let d2 = acc.new_device(now(), &mut OsRng).unwrap();
        let crl = acc.crl(&[d1.cert()], 2, now()).unwrap();
        let crl = Crl::from_pem(crl.pem()).unwrap();
        assert_eq!(
            verify_device(acc.cert(), d1.cert(), std::slice::from_ref(&crl), None),
            Err(ChainError::Revoked(d1.id()))
        );
        verify_device(acc.cert(), d2.cert(), &[crl], None).unwrap();
    }

    #[test]
    fn crl_from_another_account_is_refused() {
        let acc = Account::generate("Alice", now(), &mut OsRng).unwrap();
        let other = Account::generate("Bob", now(), &mut OsRng).unwrap();
        let dev = acc.new_device(now(), &mut OsRng).unwrap();
        let crl = other.crl(&[], 1, now()).unwrap();
        assert_eq!(
            verify_device(acc.cert(), dev.cert(), &[crl], None),
            Err(ChainError::CrlNotFromAccount(acc.uri()))
        );
    }

    #[test]
    fn pem_round_trip_and_key_mismatch() {
        let acc = Account::generate("Alice", now(), &mut OsRng).unwrap();
        let (k, c) = acc.to_pem().unwrap();
        let back = Account::from_pem(&k, &c).unwrap();
        assert_eq!(back.uri(), acc.uri());
        let other = Account::generate("Bob", now(), &mut OsRng).unwrap();
        let (k2, _) = other.to_pem().unwrap();
        assert!(matches!(
            Account::from_pem(&k2, &c),
            Err(IdentityError::KeyMismatch("account"))
        ));
        let dev = acc.new_device(now(), &mut OsRng).unwrap();
        let (dk, dc) = dev.to_pem().unwrap();
        assert_eq!(Device::from_pem(&dk, &dc).unwrap().id(), dev.id());
        assert!(
            AccountCert::from_pem(&dc).is_err(),
            "a device cert is not a CA"
        );
        assert!(AccountCert::from_pem("garbage").is_err());
    }

    /// The DER prefix of an RFC 8410 v1 Ed25519 private key (§7, example in §10.3):
    /// `SEQUENCE { INTEGER 0, SEQUENCE { OID 1.3.101.112 }, OCTET STRING { OCTET STRING (32) } }`;
    /// the 32 key bytes follow, nothing else (no public key, no attributes).
    const V1_PREFIX: [u8; 16] = [
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];

    #[test]
    fn private_keys_are_written_in_the_rfc_8410_v1_form_and_read_back() {
        let acc = Account::generate("Alice", now(), &mut OsRng).unwrap();
        let dev = acc.new_device(now(), &mut OsRng).unwrap();
        let (ak, ac) = acc.to_pem().unwrap();
        let (dk, dc) = dev.to_pem().unwrap();
        for (pem, key) in [(&ak, &acc.key), (&dk, &dev.key)] {
            assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{pem}");
            let der = pem_decode("key", "PRIVATE KEY", pem).unwrap();
            assert_eq!(der.len(), V1_PREFIX.len() + 32);
            assert_eq!(der[..V1_PREFIX.len()], V1_PREFIX);
            assert_eq!(der[V1_PREFIX.len()..], key.to_bytes());
        }
        let acc_back = Account::from_pem(&ak, &ac).unwrap();
        assert_eq!(acc_back.uri(), acc.uri());
        assert_eq!(acc_back.key.to_bytes(), acc.key.to_bytes());
        let dev_back = Device::from_pem(&dk, &dc).unwrap();
        assert_eq!(dev_back.id(), dev.id());
        assert_eq!(dev_back.signing_key().to_bytes(), dev.key.to_bytes());
    }

    #[test]
    fn private_keys_in_the_v2_form_of_older_homes_still_load() {
        let acc = Account::generate("Alice", now(), &mut OsRng).unwrap();
        let dev = acc.new_device(now(), &mut OsRng).unwrap();
        let (_, ac) = acc.to_pem().unwrap();
        let (_, dc) = dev.to_pem().unwrap();
        // What the code before issue #14 wrote: RFC 5958 v2, the public key included.
        let v2 = |key: &SigningKey| key.to_pkcs8_pem(Default::default()).unwrap().to_string();
        let (ak, dk) = (v2(&acc.key), v2(&dev.key));
        for (pem, key) in [(&ak, &acc.key), (&dk, &dev.key)] {
            let der = pem_decode("key", "PRIVATE KEY", pem).unwrap();
            assert_eq!(der[2..5], [0x02, 0x01, 0x01], "version v2");
            assert!(der.ends_with(key.verifying_key().as_bytes()), "public key");
        }
        assert_eq!(Account::from_pem(&ak, &ac).unwrap().uri(), acc.uri());
        assert_eq!(Device::from_pem(&dk, &dc).unwrap().id(), dev.id());
        // A v2 key whose public key is not its own is refused.
        let lying = KeypairBytes {
            secret_key: dev.key.to_bytes(),
            public_key: Some(ed25519_dalek::pkcs8::PublicKeyBytes(
                acc.key.verifying_key().to_bytes(),
            )),
        }
        .to_pkcs8_pem(Default::default())
        .unwrap();
        assert!(matches!(
            Device::from_pem(&lying, &dc),
            Err(IdentityError::Key(_))
        ));
    }

    #[test]
    fn re_encoded_outer_signature_wrappers_are_refused() {
        let acc = Account::generate("Alice", now(), &mut OsRng).unwrap();
        let dev = acc.new_device(now(), &mut OsRng).unwrap();
        let crl = acc.crl(&[], 1, now()).unwrap();
        let cert_der = pem_decode("x", "CERTIFICATE", dev.cert().pem()).unwrap();
        let crl_der = pem_decode("x", "X509 CRL", crl.pem()).unwrap();
        // The bytes outside the signed part: the outer AlgorithmIdentifier's OID tag and the
        // BIT STRING's tag and unused-bits byte.
        for (der, tag, is_crl) in [
            (cert_der, "CERTIFICATE", false),
            (crl_der, "X509 CRL", true),
        ] {
            let tail = der.len() - 64 - 3 - 7;
            for (offset, value) in [
                (tail + 2, 0x02u8),
                (tail + 2, 0x86),
                (tail + 7, 0x43),
                (tail + 9, 0x01),
            ] {
                let mut bad = der.clone();
                bad[offset] = value;
                let pem = pem_encode(tag, &bad);
                let refused = if is_crl {
                    Crl::from_pem(&pem).is_err()
                } else {
                    DeviceCert::from_pem(&pem).is_err()
                };
                assert!(refused, "{tag}: byte {offset} set to {value:#x} accepted");
            }
        }
    }

    #[test]
    fn bad_names_are_refused() {
        for name in ["", "  ", "a<b", "x\ny"] {
            assert!(matches!(
                Account::generate(name, now(), &mut OsRng),
                Err(IdentityError::InvalidName(_))
            ));
        }
    }
}
