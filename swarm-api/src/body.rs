//! Typed commit message bodies (DESIGN §3).
//!
//! A commit message is one JSON object with a top-level `type`. [`Body::parse`] turns it into
//! a typed [`Body`]; fields a type does not know are kept in that type's `extra` map, and a
//! `type` this version does not know becomes [`Body::Other`] with the whole object, so nothing
//! is ever lost on a round trip. [`Body::to_message`] writes the canonical bytes: compact JSON,
//! keys sorted, no trailing newline (as jamid does), so every peer produces the same commit.
//!
//! Parsing checks the JSON shape only (required fields present, ids well-formed); whether a
//! commit is *allowed* is the validator's job.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::id::{AccountUri, CommitId, Target};

/// Extra fields of a known type that this version does not interpret; kept verbatim.
pub type Extra = BTreeMap<String, Value>;

/// Why a commit message is not a well-formed body.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// Not JSON, or not a JSON object.
    #[error("commit message is not a JSON object: {0}")]
    NotJson(String),
    /// The object has no string `type` field.
    #[error("commit message has no string \"type\" field")]
    NoType,
    /// A known type with missing or malformed fields.
    #[error("malformed {kind:?} body: {reason}")]
    Malformed {
        /// The `type` value.
        kind: String,
        /// What is wrong.
        reason: String,
    },
}

/// Conversation mode, fixed forever by the initial commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// 0: a private conversation between two accounts (or with oneself).
    OneToOne,
    /// 1: only administrators invite.
    AdminInvitesOnly,
    /// 2: members invite; nobody joins without an invitation.
    InvitesOnly,
    /// 3: anyone may join.
    Public,
}

impl Mode {
    /// The number used in the `initial` body.
    pub fn as_u8(self) -> u8 {
        match self {
            Mode::OneToOne => 0,
            Mode::AdminInvitesOnly => 1,
            Mode::InvitesOnly => 2,
            Mode::Public => 3,
        }
    }
    /// The mode with this number.
    pub fn from_u8(n: u8) -> Option<Self> {
        Some(match n {
            0 => Mode::OneToOne,
            1 => Mode::AdminInvitesOnly,
            2 => Mode::InvitesOnly,
            3 => Mode::Public,
            _ => return None,
        })
    }
    /// The CLI spelling (`one-to-one`, `admin-invites-only`, `invites-only`, `public`).
    pub fn name(self) -> &'static str {
        match self {
            Mode::OneToOne => "one-to-one",
            Mode::AdminInvitesOnly => "admin-invites-only",
            Mode::InvitesOnly => "invites-only",
            Mode::Public => "public",
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [
            Mode::OneToOne,
            Mode::AdminInvitesOnly,
            Mode::InvitesOnly,
            Mode::Public,
        ]
        .into_iter()
        .find(|m| m.name() == s)
        .ok_or_else(|| {
            format!(
                "unknown mode {s:?}: use one-to-one, admin-invites-only, invites-only or public"
            )
        })
    }
}

impl Serialize for Mode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(self.as_u8())
    }
}

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u8::deserialize(d)?;
        Mode::from_u8(n).ok_or_else(|| serde::de::Error::custom(format!("unknown mode {n}")))
    }
}

/// `{"type":"initial","mode":0..3,"invited":"<uri>"?}`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Initial {
    /// The conversation mode.
    pub mode: Mode,
    /// The other party of a one-to-one conversation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invited: Option<AccountUri>,
    /// Fields this version does not interpret.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `{"type":"text/plain","body":"...","reply-to"?,"react-to"?}`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Text {
    /// The message text.
    pub body: String,
    /// The commit this message replies to.
    #[serde(rename = "reply-to", default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<CommitId>,
    /// The commit this message reacts to.
    #[serde(rename = "react-to", default, skip_serializing_if = "Option::is_none")]
    pub react_to: Option<CommitId>,
    /// Fields this version does not interpret.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `{"type":"application/edited-message","body":"...","edit":"<commit id>"}`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Edit {
    /// The new text (empty: the message is deleted).
    pub body: String,
    /// The edited commit.
    pub edit: CommitId,
    /// Fields this version does not interpret.
    #[serde(flatten)]
    pub extra: Extra,
}

/// What a `member` commit does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberAction {
    /// Invite an account (adds `invited/<uri>`).
    Add,
    /// An invited account (or anyone, in PUBLIC) joins.
    Join,
    /// A member leaves.
    Remove,
    /// A passed ban vote is applied.
    Ban,
    /// A passed unban vote is applied.
    Unban,
    /// A passed promotion vote is applied: a member becomes an admin (swarm extension).
    Promote,
}

/// `{"type":"member","uri":"<uri>","action":"add|join|remove|ban|unban"}`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// The account concerned (a device, for device bans).
    pub uri: Target,
    /// What happens to it.
    pub action: MemberAction,
    /// Fields this version does not interpret.
    #[serde(flatten)]
    pub extra: Extra,
}

/// What a vote is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VoteAction {
    /// Vote to ban.
    Ban,
    /// Vote to unban.
    Unban,
    /// Vote to promote a member to admin (swarm extension, see `VALIDATION.md`).
    Promote,
}

/// `{"type":"vote","uri":"<uri>","action":"ban|unban"}`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Vote {
    /// The target: an account URI, or a device id when the vote is about a device.
    pub uri: Target,
    /// Ban or unban.
    pub action: VoteAction,
    /// Fields this version does not interpret.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `{"type":"application/update-profile"}`: the commit changes `profile.vcf` only.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct UpdateProfile {
    /// Fields this version does not interpret.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `{"type":"application/data-transfer+json","tid":..,"displayName":..,"totalSize":..,"sha3sum":..}`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataTransfer {
    /// Transfer id.
    pub tid: String,
    /// File name shown to users.
    #[serde(rename = "displayName")]
    pub display_name: String,
    /// Size in bytes, as a decimal string (as jamid writes it).
    #[serde(rename = "totalSize")]
    pub total_size: String,
    /// SHA3-512 of the file, hex.
    pub sha3sum: String,
    /// Fields this version does not interpret.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `{"type":"application/call-history+json", ...}`: either `to` + `duration` (a finished
/// 1:1 call) or `uri` + `device` + `confId` [+ `duration`] (a hosted conference).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallHistory {
    /// Callee of a 1:1 call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Duration in milliseconds, as a decimal string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// Host account of a conference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Host device of a conference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Conference id.
    #[serde(rename = "confId", default, skip_serializing_if = "Option::is_none")]
    pub conf_id: Option<String>,
    /// Fields this version does not interpret.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A commit message body.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Body {
    /// `initial`
    Initial(Initial),
    /// `text/plain`
    Text(Text),
    /// `application/edited-message`
    Edit(Edit),
    /// `member`
    Member(Member),
    /// `vote`
    Vote(Vote),
    /// `application/update-profile`
    UpdateProfile(UpdateProfile),
    /// `application/data-transfer+json`
    DataTransfer(DataTransfer),
    /// `application/call-history+json`
    CallHistory(CallHistory),
    /// Any other `type`, kept whole (a plugin's, or a newer version's).
    Other {
        /// The `type` value.
        kind: String,
        /// The whole JSON object, `type` included.
        object: Map<String, Value>,
    },
}

/// The `type` strings of the built-in bodies.
pub mod types {
    /// `initial`
    pub const INITIAL: &str = "initial";
    /// `text/plain`
    pub const TEXT: &str = "text/plain";
    /// `application/edited-message`
    pub const EDIT: &str = "application/edited-message";
    /// `member`
    pub const MEMBER: &str = "member";
    /// `vote`
    pub const VOTE: &str = "vote";
    /// `application/update-profile`
    pub const UPDATE_PROFILE: &str = "application/update-profile";
    /// `application/data-transfer+json`
    pub const DATA_TRANSFER: &str = "application/data-transfer+json";
    /// `application/call-history+json`
    pub const CALL_HISTORY: &str = "application/call-history+json";
    /// `application/plugin-install`: an admin pins a plugin (`plugins/<sha256>.wasm`).
    pub const PLUGIN_INSTALL: &str = "application/plugin-install";
    /// `application/plugin-remove`: an admin unpins a plugin.
    pub const PLUGIN_REMOVE: &str = "application/plugin-remove";
    /// Built-in types whose rules a registered message type (a plugin) takes over when one is
    /// registered: the seed's extensions, not membership. The built-in rules stay the
    /// reference.
    pub const PLUGGABLE: &[&str] = &[EDIT, CALL_HISTORY];
    /// Types no registered message type may own.
    pub const RESERVED: &[&str] = &[
        INITIAL,
        TEXT,
        MEMBER,
        VOTE,
        UPDATE_PROFILE,
        DATA_TRANSFER,
        PLUGIN_INSTALL,
        PLUGIN_REMOVE,
    ];
}

fn typed<T: serde::de::DeserializeOwned>(
    kind: &str,
    mut obj: Map<String, Value>,
) -> Result<T, BodyError> {
    obj.remove("type");
    serde_json::from_value(Value::Object(obj)).map_err(|e| BodyError::Malformed {
        kind: kind.to_owned(),
        reason: e.to_string(),
    })
}

fn untyped<T: Serialize>(kind: &str, v: &T) -> Map<String, Value> {
    let mut obj = match serde_json::to_value(v) {
        Ok(Value::Object(obj)) => obj,
        // Every body struct serializes to an object; nothing else can reach here.
        _ => Map::new(),
    };
    obj.insert("type".into(), Value::String(kind.to_owned()));
    obj
}

impl Body {
    /// Parses a commit message.
    pub fn parse(message: &str) -> Result<Self, BodyError> {
        let value: Value =
            serde_json::from_str(message).map_err(|e| BodyError::NotJson(e.to_string()))?;
        let Value::Object(obj) = value else {
            return Err(BodyError::NotJson("not an object".into()));
        };
        Self::from_object(obj)
    }

    /// Builds a body from a JSON object.
    pub fn from_object(obj: Map<String, Value>) -> Result<Self, BodyError> {
        let kind = match obj.get("type") {
            Some(Value::String(s)) => s.clone(),
            _ => return Err(BodyError::NoType),
        };
        Ok(match kind.as_str() {
            types::INITIAL => Body::Initial(typed(&kind, obj)?),
            types::TEXT => Body::Text(typed(&kind, obj)?),
            types::EDIT => Body::Edit(typed(&kind, obj)?),
            types::MEMBER => Body::Member(typed(&kind, obj)?),
            types::VOTE => Body::Vote(typed(&kind, obj)?),
            types::UPDATE_PROFILE => Body::UpdateProfile(typed(&kind, obj)?),
            types::DATA_TRANSFER => Body::DataTransfer(typed(&kind, obj)?),
            types::CALL_HISTORY => Body::CallHistory(typed(&kind, obj)?),
            _ => Body::Other { kind, object: obj },
        })
    }

    /// The `type` string.
    pub fn kind(&self) -> &str {
        match self {
            Body::Initial(_) => types::INITIAL,
            Body::Text(_) => types::TEXT,
            Body::Edit(_) => types::EDIT,
            Body::Member(_) => types::MEMBER,
            Body::Vote(_) => types::VOTE,
            Body::UpdateProfile(_) => types::UPDATE_PROFILE,
            Body::DataTransfer(_) => types::DATA_TRANSFER,
            Body::CallHistory(_) => types::CALL_HISTORY,
            Body::Other { kind, .. } => kind,
        }
    }

    /// The body as a JSON object, `type` included.
    pub fn to_object(&self) -> Map<String, Value> {
        let kind = self.kind();
        match self {
            Body::Initial(b) => untyped(kind, b),
            Body::Text(b) => untyped(kind, b),
            Body::Edit(b) => untyped(kind, b),
            Body::Member(b) => untyped(kind, b),
            Body::Vote(b) => untyped(kind, b),
            Body::UpdateProfile(b) => untyped(kind, b),
            Body::DataTransfer(b) => untyped(kind, b),
            Body::CallHistory(b) => untyped(kind, b),
            Body::Other { object, .. } => object.clone(),
        }
    }

    /// The canonical commit message: compact JSON, keys sorted at every level, no trailing
    /// newline.
    pub fn to_message(&self) -> String {
        canonical_json(&Value::Object(self.to_object()))
    }

    /// A plain-text message.
    pub fn text(body: impl Into<String>) -> Self {
        Body::Text(Text {
            body: body.into(),
            reply_to: None,
            react_to: None,
            extra: Extra::new(),
        })
    }
}

/// Compact JSON with object keys sorted (byte order) at every level, independent of
/// serde_json's `preserve_order` feature.
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String((*k).clone()).to_string());
                out.push(':');
                write_canonical(&map[k.as_str()], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: &str = "0123456789abcdef0123456789abcdef01234567";

    fn round_trip(msg: &str) -> Body {
        let body = Body::parse(msg).unwrap();
        assert_eq!(body.to_message(), msg, "canonical bytes must round-trip");
        assert_eq!(Body::parse(&body.to_message()).unwrap(), body);
        body
    }

    #[test]
    fn every_type_round_trips() {
        let cases = [
            format!(r#"{{"invited":"{C}","mode":0,"type":"initial"}}"#),
            r#"{"mode":3,"type":"initial"}"#.to_string(),
            r#"{"body":"hello","type":"text/plain"}"#.to_string(),
            format!(r#"{{"body":"hi","reply-to":"{C}","type":"text/plain"}}"#),
            format!(r#"{{"body":"👍","react-to":"{C}","type":"text/plain"}}"#),
            format!(r#"{{"body":"fixed","edit":"{C}","type":"application/edited-message"}}"#),
            format!(r#"{{"action":"add","type":"member","uri":"{C}"}}"#),
            format!(r#"{{"action":"join","type":"member","uri":"{C}"}}"#),
            format!(r#"{{"action":"remove","type":"member","uri":"{C}"}}"#),
            format!(r#"{{"action":"ban","type":"member","uri":"{C}"}}"#),
            format!(r#"{{"action":"unban","type":"member","uri":"{C}"}}"#),
            format!(r#"{{"action":"ban","type":"vote","uri":"{C}"}}"#),
            format!(r#"{{"action":"unban","type":"vote","uri":"{C}"}}"#),
            r#"{"type":"application/update-profile"}"#.to_string(),
            r#"{"displayName":"a.png","sha3sum":"00ff","tid":"42","totalSize":"12","type":"application/data-transfer+json"}"#.to_string(),
            r#"{"duration":"1200","to":"x","type":"application/call-history+json"}"#.to_string(),
            r#"{"confId":"c","device":"d","type":"application/call-history+json","uri":"u"}"#.to_string(),
        ];
        let kinds: Vec<String> = cases
            .iter()
            .map(|c| round_trip(c).kind().to_owned())
            .collect();
        for k in [
            types::INITIAL,
            types::TEXT,
            types::EDIT,
            types::MEMBER,
            types::VOTE,
            types::UPDATE_PROFILE,
            types::DATA_TRANSFER,
            types::CALL_HISTORY,
        ] {
            assert!(kinds.iter().any(|x| x == k), "{k} not covered");
        }
        assert!(
            matches!(round_trip(&cases[2]), Body::Text(Text { ref body, .. }) if body == "hello")
        );
    }

    #[test]
    fn unknown_types_and_fields_survive() {
        let msg = r#"{"nested":{"z":1,"a":[true,null]},"type":"application/poll+json"}"#;
        let body = Body::parse(msg).unwrap();
        assert!(matches!(&body, Body::Other { kind, .. } if kind == "application/poll+json"));
        assert_eq!(
            body.to_message(),
            r#"{"nested":{"a":[true,null],"z":1},"type":"application/poll+json"}"#
        );
        let msg = r#"{"body":"x","future":{"k":2},"type":"text/plain"}"#;
        let body = round_trip(msg);
        let Body::Text(t) = body else { panic!() };
        assert_eq!(t.extra.get("future"), Some(&serde_json::json!({"k":2})));
    }

    #[test]
    fn malformed_bodies_are_refused() {
        assert!(matches!(Body::parse("nope"), Err(BodyError::NotJson(_))));
        assert!(matches!(Body::parse("[1]"), Err(BodyError::NotJson(_))));
        assert!(matches!(
            Body::parse(r#"{"body":"x"}"#),
            Err(BodyError::NoType)
        ));
        assert!(matches!(
            Body::parse(r#"{"type":7}"#),
            Err(BodyError::NoType)
        ));
        for bad in [
            r#"{"type":"text/plain"}"#,
            r#"{"type":"member","uri":"xyz","action":"add"}"#,
            r#"{"type":"member","uri":"0123456789abcdef0123456789abcdef01234567","action":"fly"}"#,
            r#"{"type":"initial","mode":9}"#,
            r#"{"type":"application/edited-message","body":"x","edit":"short"}"#,
        ] {
            assert!(
                matches!(Body::parse(bad), Err(BodyError::Malformed { .. })),
                "{bad}"
            );
        }
    }
}
