//! Signed commits (DESIGN §3): building, signing, parsing and signature verification.
//!
//! Every commit is signed by the device that made it, exactly as `git commit -S` with
//! `gpg.format=ssh` does: an SSH signature (sshsig, namespace `git`, SHA-512, Ed25519 device
//! key) over the commit object without its `gpgsig` header, stored in that header. So stock
//! `git verify-commit` checks our commits given an allowed-signers file built from `devices/`
//! ([`allowed_signers_line`]). Author and committer are the account's display name and, as
//! email, the device id: that is how validation finds the signing device.

use gix_hash::ObjectId;
use gix_object::WriteTo as _;
use ssh_key::{HashAlg, LineEnding, SshSig};

use crate::id::{CommitId, DeviceId};
use crate::identity::Device;
use crate::object::{Kind, Object};

/// The sshsig namespace Git uses for commits.
pub const NAMESPACE: &str = "git";

/// Errors making a commit.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// The display name cannot appear in a Git signature line.
    #[error("display name {0:?} cannot be used in a commit (contains '<', '>' or a newline)")]
    BadName(String),
    /// The SSH signature could not be produced.
    #[error("signing failed: {0}")]
    Ssh(String),
}

/// Why a commit object cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommitParseError {
    /// Not a Git commit object.
    #[error("commit {id} does not decode: {reason}")]
    Malformed {
        /// The object.
        id: CommitId,
        /// Details.
        reason: String,
    },
    /// The committer email is not a device id.
    #[error("commit {id}: committer email {email:?} is not a device id")]
    NotADevice {
        /// The commit.
        id: CommitId,
        /// The email found.
        email: String,
    },
    /// Author and committer differ.
    #[error("commit {0}: author and committer differ")]
    AuthorMismatch(CommitId),
    /// The message is not UTF-8.
    #[error("commit {0}: message is not UTF-8")]
    NotUtf8(CommitId),
    /// More than one signature header.
    #[error("commit {0} has more than one signature header")]
    DuplicateSignature(CommitId),
}

/// Why a signature does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// The commit has no `gpgsig` header.
    #[error("commit {0} is not signed")]
    Unsigned(CommitId),
    /// The header is not an SSH signature.
    #[error("commit {id}: the gpgsig header is not an SSH signature: {reason}")]
    Malformed {
        /// The commit.
        id: CommitId,
        /// Details.
        reason: String,
    },
    /// The signature does not verify with the device key (changed content, wrong key, wrong
    /// namespace).
    #[error("commit {id}: the signature does not verify with the key of device {device}")]
    Invalid {
        /// The commit.
        id: CommitId,
        /// The device whose key was used.
        device: DeviceId,
    },
}

/// A decoded commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// The commit's id.
    pub id: CommitId,
    /// Its root tree.
    pub tree: ObjectId,
    /// Its parents, in order.
    pub parents: Vec<CommitId>,
    /// The account display name (author name).
    pub author_name: String,
    /// The signing device (author/committer email).
    pub device: DeviceId,
    /// Commit time, seconds since the epoch. For display only: never trusted.
    pub time: i64,
    /// The message (JSON body, or `Merge commit '<id>'` for merges).
    pub message: String,
    /// The signature header's value (without its final newline), if any: the `gpgsig` PEM,
    /// or for [`Scheme::Jami`] the base64 of the `signature` header.
    pub signature: Option<String>,
    /// The exact bytes that were signed: the object without its signature header.
    pub signed_payload: Vec<u8>,
}

fn signature(name: &str, device: &DeviceId, time: i64) -> gix_actor::Signature {
    gix_actor::Signature {
        name: name.into(),
        email: device.to_string().into(),
        time: gix_date::Time {
            seconds: time,
            offset: 0,
        },
    }
}

/// Builds and signs a commit object.
///
/// `time` is seconds since the epoch (passed in: the core reads no clock). The returned
/// object is ready to store; its id is the commit id.
pub fn sign_commit(
    device: &Device,
    author_name: &str,
    tree: ObjectId,
    parents: &[CommitId],
    message: &str,
    time: i64,
) -> Result<Object, SignError> {
    if author_name.contains(['<', '>', '\n', '\r', '\0']) {
        return Err(SignError::BadName(author_name.to_owned()));
    }
    let key =
        ssh_key::PrivateKey::from(ssh_key::private::Ed25519Keypair::from(device.signing_key()));
    build_signed(
        author_name,
        &device.id(),
        tree,
        parents,
        message,
        time,
        "gpgsig",
        |payload| {
            let sshsig = key
                .sign(NAMESPACE, HashAlg::Sha512, payload)
                .map_err(|e| SignError::Ssh(e.to_string()))?;
            let pem = sshsig
                .to_pem(LineEnding::LF)
                .map_err(|e| SignError::Ssh(e.to_string()))?;
            Ok(pem.trim_end_matches('\n').to_owned())
        },
    )
}

/// Builds the commit object of `author_name <device>` (author = committer, `+0000`), signs
/// the object as it is without a signature header with `sign`, and stores what `sign`
/// returns in the `header` header (after the committer line). Shared by every scheme's
/// signer, so what is signed is always exactly what verification strips back out.
#[allow(clippy::too_many_arguments)]
pub(crate) fn build_signed<E>(
    author_name: &str,
    device: &DeviceId,
    tree: ObjectId,
    parents: &[CommitId],
    message: &str,
    time: i64,
    header: &str,
    sign: impl FnOnce(&[u8]) -> Result<String, E>,
) -> Result<Object, E> {
    let sig = signature(author_name, device, time);
    let mut commit = gix_object::Commit {
        tree,
        parents: parents.iter().map(CommitId::object_id).collect(),
        author: sig.clone(),
        committer: sig,
        encoding: None,
        message: message.into(),
        extra_headers: Vec::new(),
    };
    let mut payload = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = commit.write_to(&mut payload);
    let value = sign(&payload)?;
    commit.extra_headers.push((header.into(), value.into()));
    let mut data = Vec::new();
    let _ = commit.write_to(&mut data);
    Ok(Object {
        kind: Kind::Commit,
        data,
    })
}

/// Removes the headers named `names` (and their continuation lines) from a raw commit, as git
/// does with `gpgsig` before verifying. Returns the payload and how many headers were removed.
fn strip_headers(raw: &[u8], names: &[&str]) -> (Vec<u8>, usize) {
    let header_end = raw
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|p| p + 1)
        .unwrap_or(raw.len());
    let (header, rest) = raw.split_at(header_end);
    let mut out = Vec::with_capacity(raw.len());
    let mut removed = 0;
    let mut in_sig = false;
    for line in header.split_inclusive(|b| *b == b'\n') {
        if in_sig && line.first() == Some(&b' ') {
            continue;
        }
        in_sig = names.iter().any(|n| {
            line.len() > n.len() && line.starts_with(n.as_bytes()) && line[n.len()] == b' '
        });
        if in_sig {
            removed += 1;
            continue;
        }
        out.extend_from_slice(line);
    }
    out.extend_from_slice(rest);
    (out, removed)
}

/// How commits are signed: which header holds the signature and what it signs.
///
/// * [`Scheme::Native`] (DESIGN §3): an sshsig (Ed25519, namespace `git`) in `gpgsig`, as
///   `git commit -S` with `gpg.format=ssh` writes it.
/// * [`Scheme::Jami`]: what jamid writes: RSA PKCS#1 v1.5 SHA-512 of the commit without its
///   `signature` header, base64 in that header (see [`crate::jami`]).
///
/// In both, the signed payload is the commit object with the signature header (and its
/// continuation lines) cut out, byte for byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// sshsig Ed25519 in `gpgsig`.
    #[default]
    Native,
    /// RSA PKCS#1 v1.5 SHA-512 in `signature` (jamid).
    Jami,
}

impl Scheme {
    /// The header names holding a signature of this scheme.
    pub fn headers(self) -> &'static [&'static str] {
        match self {
            Scheme::Native => &["gpgsig", "gpgsig-sha256"],
            Scheme::Jami => &[crate::jami::SIGNATURE_HEADER],
        }
    }

    /// The scheme's name: `native` or `jami`.
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Native => "native",
            Scheme::Jami => "jami",
        }
    }

    /// Which scheme signed a raw commit object, from its headers (`None`: neither header).
    pub fn detect(raw: &[u8]) -> Option<Scheme> {
        let header_end = raw
            .windows(2)
            .position(|w| w == b"\n\n")
            .unwrap_or(raw.len());
        let header = &raw[..header_end];
        [Scheme::Native, Scheme::Jami].into_iter().find(|s| {
            header.split(|b| *b == b'\n').any(|line| {
                s.headers().iter().any(|n| {
                    line.len() > n.len() && line.starts_with(n.as_bytes()) && line[n.len()] == b' '
                })
            })
        })
    }
}

impl std::str::FromStr for Scheme {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "native" => Ok(Scheme::Native),
            "jami" => Ok(Scheme::Jami),
            _ => Err(format!("unknown format {s:?} (native or jami)")),
        }
    }
}

impl Commit {
    /// Decodes a commit object of the native scheme (kind already checked by the caller).
    pub fn parse(id: CommitId, data: &[u8]) -> Result<Self, CommitParseError> {
        Self::parse_with(id, data, Scheme::Native)
    }

    /// Decodes a commit object whose signature is in `scheme`'s header: [`Commit::signature`]
    /// is that header's value and [`Commit::signed_payload`] the object without it.
    pub fn parse_with(id: CommitId, data: &[u8], scheme: Scheme) -> Result<Self, CommitParseError> {
        let malformed = |reason: String| CommitParseError::Malformed { id, reason };
        let c = gix_object::CommitRef::from_bytes(data, gix_hash::Kind::Sha1)
            .map_err(|e| malformed(e.to_string()))?;
        let author = c.author().map_err(|e| malformed(e.to_string()))?;
        let committer = c.committer().map_err(|e| malformed(e.to_string()))?;
        if author.name != committer.name || author.email != committer.email {
            return Err(CommitParseError::AuthorMismatch(id));
        }
        let email = author.email.to_string();
        let device: DeviceId = email
            .parse()
            .map_err(|_| CommitParseError::NotADevice { id, email })?;
        let tree = c.tree();
        let parents = c
            .parents()
            .map(|p| {
                CommitId::from_object_id(&p).ok_or_else(|| malformed("non-SHA-1 parent".into()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let message = std::str::from_utf8(c.message)
            .map_err(|_| CommitParseError::NotUtf8(id))?
            .to_owned();
        let names = scheme.headers();
        let mut sigs = c
            .extra_headers
            .iter()
            .filter(|(k, _)| names.iter().any(|n| *k == *n));
        let signature = sigs.next().map(|(_, v)| {
            String::from_utf8_lossy(v.as_ref())
                .trim_end_matches('\n')
                .to_owned()
        });
        if sigs.next().is_some() {
            return Err(CommitParseError::DuplicateSignature(id));
        }
        let time = author.time().map(|t| t.seconds).unwrap_or(0);
        let (signed_payload, _) = strip_headers(data, names);
        Ok(Self {
            id,
            tree,
            parents,
            author_name: author.name.to_string(),
            device,
            time,
            message,
            signature,
            signed_payload,
        })
    }

    /// Verifies the commit's signature with `key` (the device's public key, taken from the
    /// certificate in `devices/` at the parent, never from the commit itself).
    pub fn verify_signature(
        &self,
        key: &ed25519_dalek::VerifyingKey,
    ) -> Result<(), SignatureError> {
        let id = self.id;
        let pem = self
            .signature
            .as_deref()
            .ok_or(SignatureError::Unsigned(id))?;
        let sig = parse_sshsig(pem).map_err(|reason| SignatureError::Malformed { id, reason })?;
        let public = ssh_key::PublicKey::from(ssh_key::public::Ed25519PublicKey::from(key));
        public
            .verify(NAMESPACE, &self.signed_payload, &sig)
            .map_err(|_| SignatureError::Invalid {
                id,
                device: crate::identity::device_id_of(key),
            })
    }

    /// Whether this is a merge (two or more parents).
    pub fn is_merge(&self) -> bool {
        self.parents.len() > 1
    }
}

/// One line of an OpenSSH allowed-signers file (for `gpg.ssh.allowedSignersFile`): the device
/// id as principal, limited to the `git` namespace.
pub fn allowed_signers_line(device: &DeviceId, key: &ed25519_dalek::VerifyingKey) -> String {
    let public = ssh_key::PublicKey::from(ssh_key::public::Ed25519PublicKey::from(key));
    let openssh = public.to_openssh().unwrap_or_default();
    format!("{device} namespaces=\"{NAMESPACE}\" {openssh}")
}

/// The message of a merge commit: `Merge commit '<id>'`.
pub fn merge_message(merged: &CommitId) -> String {
    format!("Merge commit '{merged}'")
}

/// The sshsig of a `gpgsig` header (without its final newline), in its one encoding: what
/// [`sign_commit`] writes (`SshSig::to_pem` with LF line ends). The parser alone accepts other
/// encodings of the same signature (version 0, oversized length prefixes, CRLF armour), each
/// of which would give anyone a byte-different twin of the commit (another id) that still
/// verifies; re-encoding and comparing refuses them all.
pub(crate) fn parse_sshsig(pem: &str) -> Result<SshSig, String> {
    let text = format!("{pem}\n");
    let sig = SshSig::from_pem(&text).map_err(|e| e.to_string())?;
    if sig.version() != SshSig::VERSION {
        return Err(format!(
            "sshsig version {} (not {})",
            sig.version(),
            SshSig::VERSION
        ));
    }
    match sig.to_pem(LineEnding::LF) {
        Ok(canonical) if canonical == text => Ok(sig),
        Ok(_) => Err("the signature is not in its canonical encoding".into()),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Account;
    use rand_core::OsRng;

    fn device() -> Device {
        let now = time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let acc = Account::generate("Alice", now, &mut OsRng).unwrap();
        acc.new_device(now, &mut OsRng).unwrap()
    }

    fn parse(obj: &Object) -> Commit {
        Commit::parse(CommitId::from_object_id(&obj.id()).unwrap(), &obj.data).unwrap()
    }

    fn tree_id(n: u8) -> ObjectId {
        Object::blob(vec![n]).id()
    }

    #[test]
    fn signed_commit_verifies_and_every_byte_matters() {
        let dev = device();
        let parent = CommitId::from_bytes([7; 20]);
        let obj = sign_commit(
            &dev,
            "Alice",
            tree_id(1),
            &[parent],
            r#"{"body":"hi","type":"text/plain"}"#,
            1_800_000_000,
        )
        .unwrap();
        let c = parse(&obj);
        assert_eq!(c.device, dev.id());
        assert_eq!(c.parents, vec![parent]);
        c.verify_signature(dev.cert().public_key()).unwrap();

        // Wrong key.
        let other = device();
        assert!(matches!(
            c.verify_signature(other.cert().public_key()),
            Err(SignatureError::Invalid { .. })
        ));

        let text = String::from_utf8(obj.data.clone()).unwrap();
        let tampered = [
            // message
            text.replace("\"hi\"", "\"ho\""),
            // tree
            text.replacen(&tree_id(1).to_string(), &tree_id(2).to_string(), 1),
            // parent
            text.replacen(
                &parent.to_string(),
                &CommitId::from_bytes([8; 20]).to_string(),
                1,
            ),
        ];
        for t in &tampered {
            assert_ne!(t, &text);
            let obj = Object {
                kind: Kind::Commit,
                data: t.clone().into_bytes(),
            };
            let c = parse(&obj);
            assert!(
                matches!(
                    c.verify_signature(dev.cert().public_key()),
                    Err(SignatureError::Invalid { .. })
                ),
                "tampered commit verified"
            );
        }

        // One byte of the Ed25519 signature inside the sshsig changed.
        let old_pem = c.signature.clone().unwrap();
        let sig = SshSig::from_pem(format!("{old_pem}\n")).unwrap();
        let mut raw = sig.signature_bytes().to_vec();
        raw[10] ^= 1;
        let forged = SshSig::new(
            sig.public_key().clone(),
            NAMESPACE,
            HashAlg::Sha512,
            ssh_key::Signature::new(ssh_key::Algorithm::Ed25519, raw).unwrap(),
        )
        .unwrap();
        let new_pem = forged.to_pem(LineEnding::LF).unwrap();
        let forged_text = text.replace(
            &old_pem.replace('\n', "\n "),
            &new_pem.trim_end().replace('\n', "\n "),
        );
        assert_ne!(forged_text, text);
        let c = parse(&Object {
            kind: Kind::Commit,
            data: forged_text.into_bytes(),
        });
        assert!(matches!(
            c.verify_signature(dev.cert().public_key()),
            Err(SignatureError::Invalid { .. })
        ));
    }

    #[test]
    fn unsigned_commit_is_refused() {
        let dev = device();
        let obj = sign_commit(&dev, "Alice", tree_id(1), &[], "{}", 0).unwrap();
        let (payload, removed) = strip_headers(&obj.data, Scheme::Native.headers());
        assert_eq!(removed, 1);
        let c = parse(&Object {
            kind: Kind::Commit,
            data: payload,
        });
        assert!(matches!(
            c.verify_signature(dev.cert().public_key()),
            Err(SignatureError::Unsigned(_))
        ));
    }

    #[test]
    fn bad_author_names_are_refused() {
        let dev = device();
        assert!(matches!(
            sign_commit(&dev, "a>b", tree_id(1), &[], "{}", 0),
            Err(SignError::BadName(_))
        ));
    }
}
