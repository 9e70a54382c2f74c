//! Identifiers: accounts, devices, commits and conversations.
//!
//! All ids are small `Copy` types that parse from and print as lowercase hex, and serialize
//! as those strings. Parsing is strict: wrong length, upper case or non-hex characters are
//! refused with an [`IdError`] that says which.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha1::Digest as _;

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The string has the wrong number of characters.
    #[error("{what} must be {expected} lowercase hex characters, got {got} characters")]
    Length {
        /// Which kind of id was being parsed.
        what: &'static str,
        /// The required length.
        expected: usize,
        /// The length received.
        got: usize,
    },
    /// The string contains something other than `0-9a-f`.
    #[error("{what} must be lowercase hex (0-9, a-f), found {found:?}")]
    NotHex {
        /// Which kind of id was being parsed.
        what: &'static str,
        /// The first offending character.
        found: char,
    },
}

fn parse_hex<const N: usize>(what: &'static str, s: &str) -> Result<[u8; N], IdError> {
    if s.len() != 2 * N {
        return Err(IdError::Length {
            what,
            expected: 2 * N,
            got: s.chars().count(),
        });
    }
    if let Some(found) = s.chars().find(|c| !matches!(c, '0'..='9' | 'a'..='f')) {
        return Err(IdError::NotHex { what, found });
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).map_err(|_| IdError::NotHex { what, found: '?' })?;
    Ok(out)
}

macro_rules! hex_id {
    ($(#[$meta:meta])* $name:ident, $len:expr, $what:expr) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name([u8; $len]);

        impl $name {
            /// The id's raw bytes.
            pub fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }
            /// Builds the id from raw bytes.
            pub fn from_bytes(bytes: [u8; $len]) -> Self {
                Self(bytes)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                parse_hex::<$len>($what, s).map(Self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

hex_id!(
    /// An account: 40 lowercase hex characters, the SHA-1 of the DER `SubjectPublicKeyInfo` of
    /// the account's Ed25519 key (so it is also an OpenDHT InfoHash, as in Jami).
    AccountUri,
    20,
    "account URI"
);

hex_id!(
    /// A device: 64 lowercase hex characters, the SHA-256 of the DER `SubjectPublicKeyInfo`
    /// of the device's Ed25519 key (Jami's "long id").
    DeviceId,
    32,
    "device id"
);

hex_id!(
    /// A commit: the Git (SHA-1) object id of a commit object.
    CommitId,
    20,
    "commit id"
);

impl AccountUri {
    /// The URI of the account whose public key has this DER `SubjectPublicKeyInfo`.
    pub fn from_spki_der(spki: &[u8]) -> Self {
        Self(sha1::Sha1::digest(spki).into())
    }
}

impl DeviceId {
    /// The id of the device whose public key has this DER `SubjectPublicKeyInfo`.
    pub fn from_spki_der(spki: &[u8]) -> Self {
        Self(sha2::Sha256::digest(spki).into())
    }
}

impl CommitId {
    /// Converts from a gix object id; fails if it is not SHA-1.
    pub fn from_object_id(id: &gix_hash::oid) -> Option<Self> {
        <[u8; 20]>::try_from(id.as_bytes()).ok().map(Self)
    }
    /// The gix object id of this commit.
    pub fn object_id(&self) -> gix_hash::ObjectId {
        gix_hash::ObjectId::Sha1(self.0)
    }
}

/// A conversation: the [`CommitId`] of its initial commit.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ConversationId(pub CommitId);

impl ConversationId {
    /// The initial commit of this conversation.
    pub fn initial_commit(&self) -> CommitId {
        self.0
    }
}

impl FromStr for ConversationId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        parse_hex::<20>("conversation id", s).map(|b| Self(CommitId(b)))
    }
}

impl fmt::Display for ConversationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for ConversationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConversationId({})", self.0)
    }
}

/// What a `member` or `vote` commit is about: an account, or (for device bans) a device.
/// Written as the 40- or 64-character hex id.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    /// An account URI.
    Account(AccountUri),
    /// A device id.
    Device(DeviceId),
}

impl Target {
    /// The account, if the target is one.
    pub fn account(&self) -> Option<AccountUri> {
        match self {
            Target::Account(a) => Some(*a),
            Target::Device(_) => None,
        }
    }
}

impl From<AccountUri> for Target {
    fn from(a: AccountUri) -> Self {
        Target::Account(a)
    }
}

impl From<DeviceId> for Target {
    fn from(d: DeviceId) -> Self {
        Target::Device(d)
    }
}

impl FromStr for Target {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        if s.len() == 64 {
            s.parse().map(Target::Device)
        } else {
            s.parse().map(Target::Account)
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Account(a) => a.fmt(f),
            Target::Device(d) => d.fmt(f),
        }
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Account(a) => a.fmt(f),
            Target::Device(d) => d.fmt(f),
        }
    }
}

impl Serialize for Target {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Target {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_strictness() {
        let uri: AccountUri = "0123456789abcdef0123456789abcdef01234567".parse().unwrap();
        assert_eq!(uri.to_string(), "0123456789abcdef0123456789abcdef01234567");
        assert_eq!(
            "0123".parse::<AccountUri>(),
            Err(IdError::Length {
                what: "account URI",
                expected: 40,
                got: 4
            })
        );
        assert!(matches!(
            "0123456789ABCDEF0123456789abcdef01234567".parse::<AccountUri>(),
            Err(IdError::NotHex { found: 'A', .. })
        ));
        let json = serde_json::to_string(&uri).unwrap();
        assert_eq!(json, "\"0123456789abcdef0123456789abcdef01234567\"");
        assert_eq!(serde_json::from_str::<AccountUri>(&json).unwrap(), uri);
        assert!(serde_json::from_str::<DeviceId>(&json).is_err());
    }
}
