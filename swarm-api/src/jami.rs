//! The `jami` signature scheme: reading and verifying commits and certificates written by
//! the real Jami daemon (jamid 13.7), for interoperability (issue 8).
//!
//! Our native format (DESIGN §3, [`crate::commit`]) signs commits with sshsig Ed25519 in a
//! `gpgsig` header. jamid instead:
//!
//! * stores the signature in a custom commit header **`signature`**, placed after the
//!   `committer` line, as one line of standard base64 (684 characters for RSA-4096; git-style
//!   continuation lines, which jamid never writes, are accepted too);
//! * signs the commit object **without that header** (the header line and its continuation
//!   lines are cut out, nothing else changes: no newline is added after the message) — what
//!   `git_commit_extract_signature(…, "signature")` returns;
//! * signs with the **device** key: RSA PKCS#1 v1.5 with SHA-512 (OpenDHT
//!   `PrivateKey::sign`). The device is named by the committer e-mail, its id being the
//!   SHA-256 of the device certificate's DER `SubjectPublicKeyInfo`; the certificate is
//!   `devices/<deviceId>.crt` in the commit's tree.
//!
//! Certificates are X.509 v3 RSA-4096, signed with `sha384WithRSAEncryption`: a device cert
//! (`CN=Jami device`, no extensions) issued by the account cert (`CN=Jami, UID=<account URI>`),
//! itself issued by the account's self-signed CA (`CN=Jami CA`). Serial numbers are random
//! 64-bit values, often **negative** in DER; `x509-parser` accepts them (it keeps the raw
//! serial bytes), so no stricter parser is involved here. The account URI is the SHA-1 of the
//! account key's `SubjectPublicKeyInfo` DER ([`AccountUri::from_spki_der`]), a device id the
//! SHA-256 of the device key's ([`DeviceId::from_spki_der`]).
//!
//! Nothing here reads files or the clock: validity checks take the time explicitly.

use base64::Engine as _;
use rsa::{BigUint, Pkcs1v15Sign, RsaPublicKey};
use sha2::{Digest as _, Sha256, Sha384, Sha512};
use x509_parser::oid_registry::{
    Oid, OID_PKCS1_RSAENCRYPTION, OID_PKCS1_SHA256WITHRSA, OID_PKCS1_SHA384WITHRSA,
    OID_PKCS1_SHA512WITHRSA, OID_USERID, OID_X509_COMMON_NAME,
};
use x509_parser::prelude::{FromDer, X509Certificate, X509Name};
use x509_parser::public_key::PublicKey;

use crate::id::{AccountUri, DeviceId};

#[cfg(feature = "testing")]
pub mod testing;

/// The commit header jamid stores its signature in.
pub const SIGNATURE_HEADER: &str = "signature";

/// The largest RSA modulus accepted, in bits (jamid uses 4096).
pub const MAX_RSA_BITS: usize = 8192;

/// Why a jamid commit or certificate is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JamiError {
    /// The bytes are not a commit object jamid could have written.
    #[error("malformed commit: {0}")]
    MalformedCommit(String),
    /// The commit has no `signature` header.
    #[error("commit has no `signature` header")]
    NoSignature,
    /// The commit has more than one `signature` header.
    #[error("commit has more than one `signature` header")]
    DuplicateSignature,
    /// The `signature` header is not standard base64.
    #[error("`signature` header is not base64: {0}")]
    SignatureNotBase64(String),
    /// The committer e-mail is not a device id (64 lowercase hex digits).
    #[error("committer e-mail {0:?} is not a device id")]
    NotADevice(String),
    /// No PEM `CERTIFICATE` block could be read.
    #[error("PEM: {0}")]
    Pem(String),
    /// A certificate does not parse as X.509.
    #[error("certificate does not parse: {0}")]
    Certificate(String),
    /// The key is not an RSA key jamid would use.
    #[error("unsupported public key: {0}")]
    UnsupportedKey(String),
    /// The certificate is signed with an algorithm jamid does not use.
    #[error("unsupported signature algorithm {0}")]
    UnsupportedAlgorithm(String),
    /// The certificate given is not the committer's device.
    #[error("certificate is device {found}, but the commit is signed by device {expected}")]
    WrongDevice {
        /// The committer e-mail.
        expected: DeviceId,
        /// The id of the certificate's key.
        found: DeviceId,
    },
    /// The RSA signature of the commit does not verify.
    #[error("commit signature does not verify")]
    BadCommitSignature,
    /// A certificate's issuer name is not its issuer's subject name.
    #[error("certificate {subject:?} is not issued by {issuer:?}")]
    IssuerMismatch {
        /// The subject of the certificate checked.
        subject: String,
        /// The subject of the candidate issuer.
        issuer: String,
    },
    /// A certificate's RSA signature does not verify against its issuer's key.
    #[error("signature of certificate {0:?} does not verify")]
    BadCertificateSignature(String),
    /// The account certificate's UID is not the SHA-1 of its key.
    #[error("account certificate UID {uid:?} is not its key's id {computed}")]
    AccountUidMismatch {
        /// The UID in the subject.
        uid: Option<String>,
        /// SHA-1 of the key.
        computed: AccountUri,
    },
    /// An issuer certificate is not a CA.
    #[error("certificate {0:?} is not a CA and cannot issue certificates")]
    NotACa(String),
    /// A certificate is not valid at the time given.
    #[error("certificate {subject:?} is not valid at {at} (valid {not_before}..={not_after})")]
    NotValidAt {
        /// Its subject.
        subject: String,
        /// The time checked (Unix seconds).
        at: i64,
        /// Start of validity (Unix seconds).
        not_before: i64,
        /// End of validity (Unix seconds).
        not_after: i64,
    },
    /// The account chain is empty.
    #[error("no account certificate")]
    NoAccountCertificate,
}

/// A commit object as jamid writes it, with its `signature` header split off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JamiCommit {
    /// The tree id (40 hex digits, as written).
    pub tree: String,
    /// Parent ids, in order (0 to 2 for jamid).
    pub parents: Vec<String>,
    /// The author e-mail (a device id for jamid; checked by validation, not here).
    pub author_email: String,
    /// The committer's device (the committer e-mail).
    pub device: DeviceId,
    /// The committer time (Unix seconds).
    pub time: i64,
    /// The message bytes: JSON, or plain text for merges; no trailing newline.
    pub message: Vec<u8>,
    /// The decoded signature.
    pub signature: Vec<u8>,
    /// The signed bytes: the commit object without the `signature` header.
    pub signed_payload: Vec<u8>,
}

/// Splits `raw` into its lines, each with the offset where it starts; the last element is
/// whatever follows the last `\n`.
fn header_lines(header: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    let mut start = 0;
    header.split(|b| *b == b'\n').map(move |line| {
        let at = start;
        start += line.len() + 1;
        (at, line)
    })
}

/// The e-mail between `<` and `>` of an author/committer line value, and the time after it.
fn ident(value: &[u8], what: &str) -> Result<(String, i64), JamiError> {
    let bad = |why: &str| JamiError::MalformedCommit(format!("{what} line: {why}"));
    let lt = value
        .iter()
        .position(|b| *b == b'<')
        .ok_or_else(|| bad("no '<'"))?;
    let gt = value[lt..]
        .iter()
        .position(|b| *b == b'>')
        .map(|p| lt + p)
        .ok_or_else(|| bad("no '>'"))?;
    let email = std::str::from_utf8(&value[lt + 1..gt])
        .map_err(|_| bad("e-mail is not UTF-8"))?
        .to_owned();
    let rest = std::str::from_utf8(&value[gt + 1..]).map_err(|_| bad("date is not UTF-8"))?;
    let mut parts = rest.split_ascii_whitespace();
    let time = parts
        .next()
        .and_then(|t| t.parse::<i64>().ok())
        .ok_or_else(|| bad("no time"))?;
    Ok((email, time))
}

impl JamiCommit {
    /// Parses a raw commit object (the content `git cat-file commit` prints).
    ///
    /// The signed payload is cut out of `raw` byte for byte: everything except the
    /// `signature` header line (and any continuation lines of it).
    pub fn parse(raw: &[u8]) -> Result<Self, JamiError> {
        let split = raw
            .windows(2)
            .position(|w| w == b"\n\n")
            .ok_or_else(|| JamiError::MalformedCommit("no blank line after the headers".into()))?;
        // Header section including its final '\n'.
        let header = &raw[..split + 1];
        let message = raw[split + 2..].to_vec();

        let mut tree = None;
        let mut parents = Vec::new();
        let mut author_email = None;
        let mut committer = None;
        // (start, end) byte ranges of the signature header, and its value lines.
        let mut sig_range: Option<(usize, usize)> = None;
        let mut sig_text: Vec<u8> = Vec::new();
        let mut in_signature = false;
        let mut seen_headers = 0usize;

        for (at, line) in header_lines(header) {
            if at >= header.len() {
                break; // the empty remainder after the final '\n'
            }
            let end = at + line.len() + 1;
            if let Some(cont) = line.strip_prefix(b" ") {
                if seen_headers == 0 {
                    return Err(JamiError::MalformedCommit(
                        "continuation line before any header".into(),
                    ));
                }
                if in_signature {
                    sig_text.push(b'\n');
                    sig_text.extend_from_slice(cont);
                    if let Some(r) = sig_range.as_mut() {
                        r.1 = end;
                    }
                }
                continue;
            }
            seen_headers += 1;
            in_signature = false;
            let (key, value) = match line.iter().position(|b| *b == b' ') {
                Some(p) => (&line[..p], &line[p + 1..]),
                None => (line, &b""[..]),
            };
            match key {
                b"tree" => {
                    if seen_headers != 1 {
                        return Err(JamiError::MalformedCommit("tree is not first".into()));
                    }
                    tree = Some(hex_value(value, "tree")?);
                }
                b"parent" => {
                    if tree.is_none() || author_email.is_some() {
                        return Err(JamiError::MalformedCommit("parent out of place".into()));
                    }
                    parents.push(hex_value(value, "parent")?);
                }
                b"author" => {
                    if author_email.is_some() {
                        return Err(JamiError::MalformedCommit("two author lines".into()));
                    }
                    author_email = Some(ident(value, "author")?.0);
                }
                b"committer" => {
                    if committer.is_some() {
                        return Err(JamiError::MalformedCommit("two committer lines".into()));
                    }
                    committer = Some(ident(value, "committer")?);
                }
                b"signature" => {
                    if sig_range.is_some() {
                        return Err(JamiError::DuplicateSignature);
                    }
                    sig_range = Some((at, end));
                    sig_text = value.to_vec();
                    in_signature = true;
                }
                _ => {}
            }
        }

        let tree = tree.ok_or_else(|| JamiError::MalformedCommit("no tree".into()))?;
        let author_email =
            author_email.ok_or_else(|| JamiError::MalformedCommit("no author".into()))?;
        let (committer_email, time) =
            committer.ok_or_else(|| JamiError::MalformedCommit("no committer".into()))?;
        let device: DeviceId = committer_email
            .parse()
            .map_err(|_| JamiError::NotADevice(committer_email.clone()))?;
        let (start, end) = sig_range.ok_or(JamiError::NoSignature)?;
        let signature = decode_signature(&sig_text)?;
        let mut signed_payload = Vec::with_capacity(raw.len() - (end - start));
        signed_payload.extend_from_slice(&raw[..start]);
        signed_payload.extend_from_slice(&raw[end..]);

        Ok(Self {
            tree,
            parents,
            author_email,
            device,
            time,
            message,
            signature,
            signed_payload,
        })
    }

    /// Checks the signature against `device`, which must be the committer's device.
    pub fn verify(&self, device: &JamiCertificate) -> Result<(), JamiError> {
        let found = device.device_id();
        if found != self.device {
            return Err(JamiError::WrongDevice {
                expected: self.device,
                found,
            });
        }
        device.verify_signature(&self.signed_payload, &self.signature)
    }
}

fn hex_value(value: &[u8], what: &str) -> Result<String, JamiError> {
    match std::str::from_utf8(value) {
        Ok(s) if s.len() == 40 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) => {
            Ok(s.to_owned())
        }
        _ => Err(JamiError::MalformedCommit(format!(
            "{what} is not a SHA-1 object id"
        ))),
    }
}

/// Verifies a raw jamid commit against the PEM certificate of its device
/// (`devices/<deviceId>.crt`; only the first certificate of the PEM is used).
///
/// Checks that the certificate's key is the committer's device and that the `signature`
/// header is its RSA PKCS#1 v1.5 SHA-512 signature of the commit without that header. It does
/// not check the certificate chain ([`verify_device_chain`]) or any validation rule.
pub fn verify_jami_commit(raw_commit: &[u8], device_cert_pem: &[u8]) -> Result<(), JamiError> {
    let commit = JamiCommit::parse(raw_commit)?;
    let device = parse_pem_chain(device_cert_pem)?
        .into_iter()
        .next()
        .ok_or_else(|| JamiError::Pem("no certificate".into()))?;
    commit.verify(&device)
}

/// One X.509 certificate as jamid writes it, parsed leniently (negative serials, no
/// extensions) with everything needed to check it kept as owned data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JamiCertificate {
    der: Vec<u8>,
    tbs: Vec<u8>,
    signature_algorithm: String,
    signature: Vec<u8>,
    spki: Vec<u8>,
    rsa_modulus: Option<Vec<u8>>,
    rsa_exponent: Option<Vec<u8>>,
    subject: String,
    issuer: String,
    subject_raw: Vec<u8>,
    issuer_raw: Vec<u8>,
    subject_uid: Option<String>,
    subject_cn: Option<String>,
    issuer_uid: Option<String>,
    serial: Vec<u8>,
    not_before: i64,
    not_after: i64,
    is_ca: bool,
}

fn name_attr(name: &X509Name<'_>, oid: &Oid<'_>) -> Option<String> {
    name.iter_by_oid(oid)
        .next()
        .and_then(|a| a.as_str().ok())
        .map(str::to_owned)
}

impl JamiCertificate {
    /// Parses one DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Self, JamiError> {
        let (rest, cert) =
            X509Certificate::from_der(der).map_err(|e| JamiError::Certificate(e.to_string()))?;
        if !rest.is_empty() {
            return Err(JamiError::Certificate(format!(
                "{} trailing bytes after the certificate",
                rest.len()
            )));
        }
        let tbs = &cert.tbs_certificate;
        if tbs.signature.algorithm != cert.signature_algorithm.algorithm {
            return Err(JamiError::Certificate(
                "inner and outer signature algorithms differ".into(),
            ));
        }
        let spki = tbs.subject_pki.raw.to_vec();
        let (rsa_modulus, rsa_exponent) = match tbs.subject_pki.parsed() {
            Ok(PublicKey::RSA(k))
                if tbs.subject_pki.algorithm.algorithm == OID_PKCS1_RSAENCRYPTION =>
            {
                (Some(k.modulus.to_vec()), Some(k.exponent.to_vec()))
            }
            _ => (None, None),
        };
        Ok(Self {
            der: der.to_vec(),
            tbs: tbs.as_ref().to_vec(),
            signature_algorithm: cert.signature_algorithm.algorithm.to_id_string(),
            signature: cert.signature_value.data.to_vec(),
            spki,
            rsa_modulus,
            rsa_exponent,
            subject: tbs.subject.to_string(),
            issuer: tbs.issuer.to_string(),
            subject_raw: tbs.subject.as_raw().to_vec(),
            issuer_raw: tbs.issuer.as_raw().to_vec(),
            subject_uid: name_attr(&tbs.subject, &OID_USERID),
            subject_cn: name_attr(&tbs.subject, &OID_X509_COMMON_NAME),
            issuer_uid: name_attr(&tbs.issuer, &OID_USERID),
            serial: tbs.raw_serial().to_vec(),
            not_before: tbs.validity.not_before.timestamp(),
            not_after: tbs.validity.not_after.timestamp(),
            is_ca: tbs.is_ca(),
        })
    }

    /// The DER encoding.
    pub fn der(&self) -> &[u8] {
        &self.der
    }
    /// The DER `SubjectPublicKeyInfo`.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki
    }
    /// The subject, as text.
    pub fn subject(&self) -> &str {
        &self.subject
    }
    /// The issuer, as text.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }
    /// The subject's `UID` attribute.
    pub fn subject_uid(&self) -> Option<&str> {
        self.subject_uid.as_deref()
    }
    /// The subject's common name (`Jami device`, `Jami`, `Jami CA`).
    pub fn subject_cn(&self) -> Option<&str> {
        self.subject_cn.as_deref()
    }
    /// The issuer's `UID` attribute: for a device cert, its account URI.
    pub fn issuer_uid(&self) -> Option<&str> {
        self.issuer_uid.as_deref()
    }
    /// The serial number's DER content bytes, two's complement (may be negative).
    pub fn raw_serial(&self) -> &[u8] {
        &self.serial
    }
    /// Whether the DER serial is negative (top bit set), which RFC 5280 forbids and jamid
    /// writes anyway.
    pub fn serial_is_negative(&self) -> bool {
        self.serial.first().is_some_and(|b| b & 0x80 != 0)
    }
    /// Start of validity, Unix seconds.
    pub fn not_before(&self) -> i64 {
        self.not_before
    }
    /// End of validity, Unix seconds.
    pub fn not_after(&self) -> i64 {
        self.not_after
    }
    /// Whether basicConstraints says CA (device certs have no extensions: false).
    pub fn is_ca(&self) -> bool {
        self.is_ca
    }
    /// The signature algorithm OID, dotted.
    pub fn signature_algorithm(&self) -> &str {
        &self.signature_algorithm
    }

    /// The device id of this key: SHA-256 of its `SubjectPublicKeyInfo` DER.
    pub fn device_id(&self) -> DeviceId {
        DeviceId::from_spki_der(&self.spki)
    }

    /// The account URI of this key (OpenDHT `InfoHash`): SHA-1 of its `SubjectPublicKeyInfo`
    /// DER. For a device cert this is its own `UID`, not its account.
    pub fn account_uri(&self) -> AccountUri {
        AccountUri::from_spki_der(&self.spki)
    }

    /// The RSA public key.
    pub fn rsa_public_key(&self) -> Result<RsaPublicKey, JamiError> {
        let (Some(n), Some(e)) = (&self.rsa_modulus, &self.rsa_exponent) else {
            return Err(JamiError::UnsupportedKey("not an RSA key".into()));
        };
        RsaPublicKey::new_with_max_size(
            BigUint::from_bytes_be(n),
            BigUint::from_bytes_be(e),
            MAX_RSA_BITS,
        )
        .map_err(|e| JamiError::UnsupportedKey(e.to_string()))
    }

    /// Checks an RSA PKCS#1 v1.5 SHA-512 signature by this certificate's key (how jamid signs
    /// commits with a device key).
    pub fn verify_signature(&self, payload: &[u8], signature: &[u8]) -> Result<(), JamiError> {
        let key = self.rsa_public_key()?;
        let digest = Sha512::digest(payload);
        key.verify(Pkcs1v15Sign::new::<Sha512>(), &digest, signature)
            .map_err(|_| JamiError::BadCommitSignature)
    }

    /// Whether `at` (Unix seconds) is within the validity period.
    pub fn check_valid_at(&self, at: i64) -> Result<(), JamiError> {
        if at < self.not_before || at > self.not_after {
            return Err(JamiError::NotValidAt {
                subject: self.subject.clone(),
                at,
                not_before: self.not_before,
                not_after: self.not_after,
            });
        }
        Ok(())
    }

    /// Checks that `issuer` issued this certificate: issuer name equals the issuer's subject
    /// name, and the RSA signature of the TBS verifies against the issuer's key. Does not
    /// check validity periods or CA flags.
    pub fn verify_issued_by(&self, issuer: &JamiCertificate) -> Result<(), JamiError> {
        if self.issuer_raw != issuer.subject_raw {
            return Err(JamiError::IssuerMismatch {
                subject: self.subject.clone(),
                issuer: issuer.subject.clone(),
            });
        }
        let key = issuer.rsa_public_key()?;
        let (scheme, digest) = match self.signature_algorithm.as_str() {
            s if s == OID_PKCS1_SHA256WITHRSA.to_id_string() => (
                Pkcs1v15Sign::new::<Sha256>(),
                Sha256::digest(&self.tbs).to_vec(),
            ),
            s if s == OID_PKCS1_SHA384WITHRSA.to_id_string() => (
                Pkcs1v15Sign::new::<Sha384>(),
                Sha384::digest(&self.tbs).to_vec(),
            ),
            s if s == OID_PKCS1_SHA512WITHRSA.to_id_string() => (
                Pkcs1v15Sign::new::<Sha512>(),
                Sha512::digest(&self.tbs).to_vec(),
            ),
            other => return Err(JamiError::UnsupportedAlgorithm(other.to_owned())),
        };
        key.verify(scheme, &digest, &self.signature)
            .map_err(|_| JamiError::BadCertificateSignature(self.subject.clone()))
    }
}

/// Parses every `CERTIFICATE` block of a PEM file, in order (a `devices/` file has one; an
/// `admins/`/`members/` file has the account cert then its CA cert).
pub fn parse_pem_chain(pem: &[u8]) -> Result<Vec<JamiCertificate>, JamiError> {
    let blocks = pem::parse_many(pem).map_err(|e| JamiError::Pem(e.to_string()))?;
    let certs = blocks
        .iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(|b| JamiCertificate::from_der(b.contents()))
        .collect::<Result<Vec<_>, _>>()?;
    if certs.is_empty() {
        return Err(JamiError::Pem("no CERTIFICATE block".into()));
    }
    Ok(certs)
}

/// What a verified device → account chain establishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JamiDeviceIdentity {
    /// The device (SHA-256 of the device key).
    pub device: DeviceId,
    /// The account the device belongs to (SHA-1 of the account key).
    pub account: AccountUri,
}

/// Verifies the chain jamid writes: the device cert is signed by the account cert (the first
/// certificate of `account_chain`, as in `admins/<uri>.crt` / `members/<uri>.crt`), which is
/// signed by the next one (the account CA) when present, the CA being self-signed.
///
/// Also checks that the account cert's `UID` is the SHA-1 of its key (the account URI), that
/// the issuers are CAs, and, if `at` is given (Unix seconds), that every certificate is valid
/// then. The device cert has no extensions and is not required to say anything about itself.
pub fn verify_device_chain(
    device: &JamiCertificate,
    account_chain: &[JamiCertificate],
    at: Option<i64>,
) -> Result<JamiDeviceIdentity, JamiError> {
    let account = account_chain
        .first()
        .ok_or(JamiError::NoAccountCertificate)?;
    let uri = account.account_uri();
    if account.subject_uid() != Some(uri.to_string().as_str()) {
        return Err(JamiError::AccountUidMismatch {
            uid: account.subject_uid.clone(),
            computed: uri,
        });
    }
    if !account.is_ca() {
        return Err(JamiError::NotACa(account.subject.clone()));
    }
    device.verify_issued_by(account)?;
    for pair in account_chain.windows(2) {
        if !pair[1].is_ca() {
            return Err(JamiError::NotACa(pair[1].subject.clone()));
        }
        pair[0].verify_issued_by(&pair[1])?;
    }
    if let Some(root) = account_chain.last() {
        if account_chain.len() > 1 {
            root.verify_issued_by(root)?;
        }
    }
    if let Some(at) = at {
        device.check_valid_at(at)?;
        for c in account_chain {
            c.check_valid_at(at)?;
        }
    }
    Ok(JamiDeviceIdentity {
        device: device.device_id(),
        account: uri,
    })
}

/// The bytes of a jamid `signature` header: standard base64 in its one encoding (jamid writes
/// it on one line, padded, no whitespace). Anything else — whitespace, continuation lines,
/// non-canonical padding bits — is refused: a second encoding of the same signature would
/// give anyone a byte-different twin of the commit (another id) that still verifies.
pub(crate) fn decode_signature(text: &[u8]) -> Result<Vec<u8>, JamiError> {
    let sig = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| JamiError::SignatureNotBase64(e.to_string()))?;
    if base64::engine::general_purpose::STANDARD
        .encode(&sig)
        .as_bytes()
        != text
    {
        return Err(JamiError::SignatureNotBase64(
            "not in its canonical encoding (one line, padded)".into(),
        ));
    }
    Ok(sig)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_commits_are_errors_not_panics() {
        for raw in [
            &b""[..],
            b"\n\n",
            b"tree x\n\n",
            b"signature \n\n",
            b" cont\n\nmsg",
            b"tree 0123456789012345678901234567890123456789\nauthor a <b> 1 +0000\ncommitter a <b> 1 +0000\nsignature AAAA\n\nm",
            b"tree 0123456789012345678901234567890123456789\nauthor a <b 1 +0000\n\nm",
        ] {
            assert!(JamiCommit::parse(raw).is_err(), "{raw:?}");
        }
    }

    #[test]
    fn payload_is_the_commit_without_the_signature_header() {
        let dev = "c7b3e704335fa3a7d6c4ed64cf2b1b8e11ca9d071c912e7c3a0cf1eeff2c5ac9";
        let raw = format!(
            "tree 0123456789012345678901234567890123456789\nauthor a <{dev}> 1 +0000\ncommitter a <{dev}> 2 +0000\nsignature QUJDRA==\n\n{{\"x\":1}}"
        );
        let c = JamiCommit::parse(raw.as_bytes()).expect("parses");
        // The same signature on two lines (or with any whitespace) is a second encoding of
        // it, hence another commit id for the same signed content: refused.
        let folded = raw.replace("QUJDRA==", "QUJD\n RA==");
        assert!(matches!(
            JamiCommit::parse(folded.as_bytes()),
            Err(JamiError::SignatureNotBase64(_))
        ));
        assert_eq!(c.signature, b"ABCD");
        assert_eq!(c.time, 2);
        assert_eq!(
            c.signed_payload,
            format!(
                "tree 0123456789012345678901234567890123456789\nauthor a <{dev}> 1 +0000\ncommitter a <{dev}> 2 +0000\n\n{{\"x\":1}}"
            )
            .as_bytes()
        );
        assert_eq!(c.message, b"{\"x\":1}");
    }

    #[test]
    fn garbage_pem_is_an_error() {
        assert!(parse_pem_chain(b"").is_err());
        assert!(
            parse_pem_chain(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
                .is_err()
        );
    }
}
