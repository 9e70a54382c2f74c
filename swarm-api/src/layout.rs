//! The repository layout (DESIGN §3): every path a conversation tree may contain.
//!
//! Writers use the constructors ([`admin_cert`], [`device_cert`], ...); readers and the
//! validator use [`Path::parse`], which recognises exactly the paths of the layout and nothing
//! else.

use crate::id::{AccountUri, DeviceId};

/// The conversation profile (vCard: `FN` = title, `DESCRIPTION`, `PHOTO` = avatar).
pub const PROFILE: &str = "profile.vcf";

/// `plugins/<sha256>.wasm`: a plugin pinned in the conversation (64 lowercase hex, the
/// SHA-256 of the component).
pub fn plugin(sha256: &str) -> String {
    format!("plugins/{sha256}.wasm")
}

/// `admins/<uri>.crt`
pub fn admin_cert(uri: &AccountUri) -> String {
    format!("admins/{uri}.crt")
}
/// `admins/<t>.crt` for a target given as text.
pub(crate) fn admin_cert_path(t: &str) -> String {
    format!("admins/{t}.crt")
}
/// `members/<uri>.crt`
pub fn member_cert(uri: &AccountUri) -> String {
    format!("members/{uri}.crt")
}
/// `devices/<dev>.crt`
pub fn device_cert(dev: &DeviceId) -> String {
    format!("devices/{dev}.crt")
}
/// `invited/<uri>` (an empty file)
pub fn invited(uri: &AccountUri) -> String {
    format!("invited/{uri}")
}
/// `CRLs/<uri>/<crl-id>.crl`
pub fn crl(uri: &AccountUri, crl_id: &str) -> String {
    format!("CRLs/{uri}/{crl_id}.crl")
}
/// `banned/<kind>/<target>.crt` (`banned/invited/<uri>` has no extension, like `invited/`).
pub fn banned(kind: Kind, target: &str) -> String {
    match kind {
        Kind::Invited => format!("banned/invited/{target}"),
        _ => format!("banned/{}/{target}.crt", kind.dir()),
    }
}
/// `votes/<action>/<kind>/<target>/<voter-uri>`
pub fn vote(action: VoteDir, kind: Kind, target: &str, voter: &AccountUri) -> String {
    format!("votes/{}/{}/{target}/{voter}", action.dir(), kind.dir())
}

/// The role directories that ban/vote paths refer to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `admins`
    Admins,
    /// `members`
    Members,
    /// `invited`
    Invited,
    /// `devices`
    Devices,
}

impl Kind {
    /// The directory name.
    pub fn dir(self) -> &'static str {
        match self {
            Kind::Admins => "admins",
            Kind::Members => "members",
            Kind::Invited => "invited",
            Kind::Devices => "devices",
        }
    }
    fn from_dir(s: &str) -> Option<Self> {
        Some(match s {
            "admins" => Kind::Admins,
            "members" => Kind::Members,
            "invited" => Kind::Invited,
            "devices" => Kind::Devices,
            _ => return None,
        })
    }
}

/// `votes/ban` or `votes/unban`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum VoteDir {
    /// `ban`
    Ban,
    /// `unban`
    Unban,
    /// `promote` (swarm extension: a member becomes an admin)
    Promote,
}

impl From<crate::body::VoteAction> for VoteDir {
    fn from(a: crate::body::VoteAction) -> Self {
        match a {
            crate::body::VoteAction::Ban => VoteDir::Ban,
            crate::body::VoteAction::Unban => VoteDir::Unban,
            crate::body::VoteAction::Promote => VoteDir::Promote,
        }
    }
}

impl VoteDir {
    /// The directory name.
    pub fn dir(self) -> &'static str {
        match self {
            VoteDir::Ban => "ban",
            VoteDir::Unban => "unban",
            VoteDir::Promote => "promote",
        }
    }
}

/// A recognised path of the layout.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Path {
    /// `admins/<uri>.crt`
    Admin(AccountUri),
    /// `members/<uri>.crt`
    Member(AccountUri),
    /// `devices/<dev>.crt`
    Device(DeviceId),
    /// `invited/<uri>`
    Invited(AccountUri),
    /// `CRLs/<uri>/<crl-id>.crl`
    Crl(AccountUri, String),
    /// `banned/<kind>/<target>[.crt]`
    Banned(Kind, String),
    /// `votes/<action>/<kind>/<target>/<voter>`
    Vote {
        /// ban or unban
        action: VoteDir,
        /// the target's role directory
        kind: Kind,
        /// the target (URI or device id)
        target: String,
        /// the voting admin
        voter: AccountUri,
    },
    /// `profile.vcf`
    Profile,
    /// `plugins/<sha256>.wasm`
    Plugin(String),
}

fn strip_crt(s: &str) -> Option<&str> {
    s.strip_suffix(".crt")
}

fn is_hex_id(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl Path {
    /// Recognises a path of the layout; anything else (unknown directories, malformed ids,
    /// extra components) is `None`.
    pub fn parse(path: &str) -> Option<Self> {
        let parts: Vec<&str> = path.split('/').collect();
        Some(match parts.as_slice() {
            ["profile.vcf"] => Path::Profile,
            ["plugins", f] => {
                let sha = f.strip_suffix(".wasm")?;
                if sha.len() != 64 || !is_hex_id(sha) {
                    return None;
                }
                Path::Plugin(sha.to_owned())
            }
            ["admins", f] => Path::Admin(strip_crt(f)?.parse().ok()?),
            ["members", f] => Path::Member(strip_crt(f)?.parse().ok()?),
            ["devices", f] => Path::Device(strip_crt(f)?.parse().ok()?),
            ["invited", f] => Path::Invited(f.parse().ok()?),
            ["CRLs", uri, f] => {
                let id = f.strip_suffix(".crl")?;
                if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                    return None;
                }
                Path::Crl(uri.parse().ok()?, id.to_owned())
            }
            ["banned", "invited", t] if is_hex_id(t) => {
                Path::Banned(Kind::Invited, (*t).to_owned())
            }
            ["banned", k, f] => {
                let kind = Kind::from_dir(k)?;
                let t = strip_crt(f)?;
                if !is_hex_id(t) {
                    return None;
                }
                Path::Banned(kind, t.to_owned())
            }
            ["votes", a, k, t, v] => {
                let action = match *a {
                    "ban" => VoteDir::Ban,
                    "unban" => VoteDir::Unban,
                    "promote" => VoteDir::Promote,
                    _ => return None,
                };
                if !is_hex_id(t) {
                    return None;
                }
                Path::Vote {
                    action,
                    kind: Kind::from_dir(k)?,
                    target: (*t).to_owned(),
                    voter: v.parse().ok()?,
                }
            }
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_parse_back() {
        let uri: AccountUri = "0123456789abcdef0123456789abcdef01234567".parse().unwrap();
        let dev: DeviceId = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
            .parse()
            .unwrap();
        assert_eq!(Path::parse(&admin_cert(&uri)), Some(Path::Admin(uri)));
        assert_eq!(Path::parse(&member_cert(&uri)), Some(Path::Member(uri)));
        assert_eq!(Path::parse(&device_cert(&dev)), Some(Path::Device(dev)));
        assert_eq!(Path::parse(&invited(&uri)), Some(Path::Invited(uri)));
        assert_eq!(
            Path::parse(&crl(&uri, "ab12")),
            Some(Path::Crl(uri, "ab12".into()))
        );
        assert_eq!(
            Path::parse(&banned(Kind::Devices, &dev.to_string())),
            Some(Path::Banned(Kind::Devices, dev.to_string()))
        );
        assert_eq!(
            Path::parse(&banned(Kind::Invited, &uri.to_string())),
            Some(Path::Banned(Kind::Invited, uri.to_string()))
        );
        assert_eq!(
            Path::parse(&vote(VoteDir::Ban, Kind::Members, &uri.to_string(), &uri)),
            Some(Path::Vote {
                action: VoteDir::Ban,
                kind: Kind::Members,
                target: uri.to_string(),
                voter: uri
            })
        );
        assert_eq!(Path::parse(PROFILE), Some(Path::Profile));
        let sha = "ab".repeat(32);
        assert_eq!(Path::parse(&plugin(&sha)), Some(Path::Plugin(sha.clone())));
        for bad in [
            "x",
            "admins/zz.crt",
            "admins/a/b",
            "devices/../x",
            "CRLs/x/y.crl",
            "votes/kick/admins/a/b",
            "plugins/abc.wasm",
            "plugins/0123456789abcdef0123456789abcdef01234567.wasm",
            "",
        ] {
            assert_eq!(Path::parse(bad), None, "{bad}");
        }
    }
}
