//! JSON-RPC 2.0 over a [`Host`]: one method per host method, plus `subscribe`, which streams
//! the host's [`Event`]s. Line-delimited: one request object per line, one response per line
//! (none for a notification, a request without `id`).
//!
//! ```text
//! → {"jsonrpc":"2.0","id":1,"method":"send","params":{"conv":"…","text":"hello"}}
//! ← {"jsonrpc":"2.0","id":1,"result":{"commit":"…"}}
//! → {"jsonrpc":"2.0","id":2,"method":"launch"}
//! ← {"jsonrpc":"2.0","id":2,"error":{"code":-32601,"message":"unknown method \"launch\""}}
//! → {"jsonrpc":"2.0","id":3,"method":"subscribe"}
//! ← {"jsonrpc":"2.0","id":3,"result":{"subscribed":true}}
//! ← {"jsonrpc":"2.0","method":"event","params":{"event":"message_received","conv":"…",…}}
//! ```
//!
//! Every failure is a typed error object ([`RpcError`], codes in [`codes`]): a line that is
//! not JSON, not a request, longer than [`MAX_LINE`] (its rest is skipped, the connection
//! goes on), an unknown method, parameters of the wrong shape, or the host's own error
//! (a rule's refusal carries the rule and the commit in `data`). A connection that
//! subscribed receives events until it hangs up; it answers further requests with an error.
//! Transport security is the caller's: `swarm-chat serve` serves a `0600` Unix socket and
//! checks the client's uid.

use std::net::SocketAddr;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::io::{AsyncBufRead, AsyncBufReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::broadcast::error::RecvError;

use super::{Host, HostError, Reader};
use crate::body::{Body, Mode, VoteAction};
use crate::id::{AccountUri, ConversationId, DeviceId, Target};
use crate::node::{Event, NodeError};
use crate::repo::RepoError;
use crate::sync::SyncError;
use crate::traits::BoxFuture;

/// The longest request line read; a longer one is refused (and skipped).
pub const MAX_LINE: usize = 1 << 20;

/// Error codes: JSON-RPC's own, then the host's (`-32000` and below).
pub mod codes {
    /// The line is not JSON (or is longer than [`super::MAX_LINE`]).
    pub const PARSE_ERROR: i64 = -32700;
    /// The JSON is not a request object.
    pub const INVALID_REQUEST: i64 = -32600;
    /// No such method.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// The parameters do not fit the method.
    pub const INVALID_PARAMS: i64 = -32602;
    /// The server failed (a bug).
    pub const INTERNAL_ERROR: i64 = -32603;
    /// The operation failed (storage, home, network...).
    pub const FAILED: i64 = -32000;
    /// A rule refused the commit; `data` is `{"rule", "commit", "reason"}`.
    pub const REFUSED: i64 = -32001;
    /// The conversation or invitation is not known here.
    pub const NOT_FOUND: i64 = -32002;
    /// Nobody could be reached to clone from.
    pub const UNREACHABLE: i64 = -32003;
}

/// A JSON-RPC error object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct RpcError {
    /// One of [`codes`].
    pub code: i64,
    /// What went wrong, in one line.
    pub message: String,
    /// Details for programs (e.g. the rule that refused a commit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl RpcError {
    /// An error without data.
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            data: None,
        }
    }
}

impl From<HostError> for RpcError {
    fn from(e: HostError) -> Self {
        let message = e.to_string();
        let rejection = match &e {
            HostError::Repo(RepoError::Rejected(r))
            | HostError::Node(NodeError::Repo(RepoError::Rejected(r)))
            | HostError::Node(NodeError::Sync(SyncError::Rejected(r))) => Some(r),
            _ => None,
        };
        if let Some(r) = rejection {
            return RpcError {
                code: codes::REFUSED,
                message,
                data: Some(json!({"rule": r.violation.rule(), "commit": r.commit,
                                  "reason": r.violation.to_string()})),
            };
        }
        let code = match &e {
            HostError::Repo(RepoError::UnknownConversation(_)) | HostError::NoInvitation(_) => {
                codes::NOT_FOUND
            }
            HostError::Dial { .. } | HostError::CloneFailed { .. } => codes::UNREACHABLE,
            HostError::Invalid(_) => codes::INVALID_PARAMS,
            HostError::Task(_) => codes::INTERNAL_ERROR,
            _ => codes::FAILED,
        };
        RpcError::new(code, message)
    }
}

/// One parsed request.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// Its id; `None` for a notification (no response).
    pub id: Option<Value>,
    /// The method.
    pub method: String,
    /// The parameters (`null` when absent).
    pub params: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequest {
    jsonrpc: String,
    /// Accepted here, read from the object itself (`null` is an id, absence is not).
    #[serde(default, rename = "id")]
    _id: Option<Value>,
    method: String,
    #[serde(default)]
    params: Value,
}

/// Parses one request line. On error, the id to answer with (`null` when unknown).
pub fn parse(line: &[u8]) -> Result<Call, (Value, RpcError)> {
    if line.len() > MAX_LINE {
        return Err((
            Value::Null,
            RpcError::new(
                codes::PARSE_ERROR,
                format!("request longer than {MAX_LINE} bytes"),
            ),
        ));
    }
    let value: Value = serde_json::from_slice(line).map_err(|e| {
        (
            Value::Null,
            RpcError::new(codes::PARSE_ERROR, e.to_string()),
        )
    })?;
    // A member `"id": null` is an id (answered); only a request without the member is a
    // notification (JSON-RPC 2.0 §4.1). serde reads both as `None`: look at the object.
    let has_id = value.get("id").is_some();
    let id = value.get("id").cloned().unwrap_or(Value::Null);
    let raw: RawRequest = serde_json::from_value(value).map_err(|e| {
        (
            id.clone(),
            RpcError::new(codes::INVALID_REQUEST, e.to_string()),
        )
    })?;
    if raw.jsonrpc != "2.0" {
        return Err((
            id,
            RpcError::new(codes::INVALID_REQUEST, "\"jsonrpc\" must be \"2.0\""),
        ));
    }
    if !matches!(raw.params, Value::Null | Value::Object(_)) {
        return Err((
            id,
            RpcError::new(codes::INVALID_PARAMS, "params must be an object"),
        ));
    }
    Ok(Call {
        id: if has_id { Some(id) } else { None },
        method: raw.method,
        params: raw.params,
    })
}

/// A response line (with its newline).
pub fn response(id: &Value, result: Result<Value, RpcError>) -> Vec<u8> {
    let v = match result {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err(error) => json!({"jsonrpc": "2.0", "id": id, "error": error}),
    };
    let mut line = v.to_string().into_bytes();
    line.push(b'\n');
    line
}

/// A request line (with its newline), for clients.
pub fn request(id: u64, method: &str, params: Value) -> Vec<u8> {
    let mut line = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
        .to_string()
        .into_bytes();
    line.push(b'\n');
    line
}

/// A method's parameters as `T` (absent parameters are `{}`); a mismatch is
/// [`codes::INVALID_PARAMS`]. For [`Extension`]s too.
pub fn params<T: DeserializeOwned>(p: Value) -> Result<T, RpcError> {
    let p = if p.is_null() { json!({}) } else { p };
    serde_json::from_value(p).map_err(|e| RpcError::new(codes::INVALID_PARAMS, e.to_string()))
}

fn to_value<T: Serialize>(v: T) -> Result<Value, RpcError> {
    serde_json::to_value(v).map_err(|e| RpcError::new(codes::INTERNAL_ERROR, e.to_string()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

/// The parameters `{"conv": ID}` (for [`Extension`]s too).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conv {
    /// The conversation.
    pub conv: ConversationId,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConvLimit {
    conv: ConversationId,
    #[serde(default)]
    limit: Option<usize>,
}

fn mode<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Mode, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(serde::de::Error::custom)
}

fn vote_action<'de, D: serde::Deserializer<'de>>(d: D) -> Result<VoteAction, D::Error> {
    match String::deserialize(d)?.as_str() {
        "ban" => Ok(VoteAction::Ban),
        "unban" => Ok(VoteAction::Unban),
        "promote" => Ok(VoteAction::Promote),
        other => Err(serde::de::Error::custom(format!(
            "unknown action {other:?} (ban, unban or promote)"
        ))),
    }
}

/// The methods [`call`] knows, for `swarm-chat` and other clients' help.
pub const METHODS: &[&str] = &[
    "ping",
    "conversations",
    "create",
    "send",
    "send_body",
    "invite",
    "join",
    "decline",
    "requests",
    "timeline",
    "log",
    "members",
    "info",
    "profile",
    "vote",
    "leave",
    "peers",
    "add_peer",
    "block",
    "discovery_status",
    "subscribe",
];

/// Runs one method on `host`. `subscribe` is not a call (see [`serve`]).
pub async fn call(host: &Host, method: &str, p: Value) -> Result<Value, RpcError> {
    if method == "info" {
        if let Ok(Conv { conv }) = params::<Conv>(p.clone()) {
            if host.is_syncing(&conv) {
                return to_value(super::Info::syncing(conv));
            }
        }
    }
    if let Some(r) = read(&host.reader(), method, p.clone()).await {
        return r;
    }
    let commit = |c: crate::id::CommitId, kind: &str| json!({"commit": c, "type": kind});
    match method {
        "ping" => {
            params::<Empty>(p)?;
            let me = host.peer();
            Ok(json!({"device": me.device, "account": me.account}))
        }
        "create" => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct P {
                #[serde(deserialize_with = "mode")]
                mode: Mode,
                #[serde(default)]
                invite: Option<AccountUri>,
            }
            let p: P = params(p)?;
            let conv = host.create(p.mode, p.invite).await?;
            Ok(json!({"conversation": conv, "mode": p.mode.name()}))
        }
        "send" => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct P {
                conv: ConversationId,
                text: String,
            }
            let p: P = params(p)?;
            Ok(commit(
                host.send(p.conv, &p.text).await?,
                crate::body::types::TEXT,
            ))
        }
        "send_body" => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct P {
                conv: ConversationId,
                body: serde_json::Map<String, Value>,
            }
            let p: P = params(p)?;
            let body = Body::from_object(p.body)
                .map_err(|e| RpcError::new(codes::INVALID_PARAMS, format!("body: {e}")))?;
            let kind = body.kind().to_owned();
            Ok(commit(
                host.send_body(p.conv, body, Vec::new()).await?,
                &kind,
            ))
        }
        "invite" => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct P {
                conv: ConversationId,
                uri: AccountUri,
            }
            let p: P = params(p)?;
            let i = host.invite(p.conv, p.uri).await?;
            let mut v = commit(i.commit, crate::body::types::MEMBER);
            v["sent"] = json!(i.not_sent.is_none());
            if let Some(why) = i.not_sent {
                v["not_sent"] = json!(why);
            }
            Ok(v)
        }
        "join" => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct P {
                conv: ConversationId,
                #[serde(default)]
                peer: Option<SocketAddr>,
            }
            let p: P = params(p)?;
            Ok(commit(
                host.join(p.conv, p.peer).await?,
                crate::body::types::MEMBER,
            ))
        }
        "decline" => {
            let p: Conv = params(p)?;
            host.decline(p.conv).await?;
            Ok(json!({"declined": p.conv}))
        }
        "profile" => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct P {
                conv: ConversationId,
                #[serde(default)]
                title: Option<String>,
                #[serde(default)]
                description: Option<String>,
            }
            let p: P = params(p)?;
            Ok(commit(
                host.profile(p.conv, p.title, p.description).await?,
                crate::body::types::UPDATE_PROFILE,
            ))
        }
        "vote" => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct P {
                conv: ConversationId,
                target: Target,
                #[serde(deserialize_with = "vote_action")]
                action: VoteAction,
            }
            let p: P = params(p)?;
            let v = host.vote(p.conv, p.target, p.action).await?;
            Ok(json!({"vote": v.vote, "applied": v.applied}))
        }
        "leave" => {
            let p: Conv = params(p)?;
            Ok(commit(
                host.leave(p.conv).await?,
                crate::body::types::MEMBER,
            ))
        }
        "add_peer" => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct P {
                who: Target,
                addr: SocketAddr,
            }
            let p: P = params(p)?;
            let changed = host.add_peer(p.who, p.addr)?;
            Ok(json!({"peer": p.who, "addr": p.addr, "changed": changed}))
        }
        "block" => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct P {
                device: DeviceId,
                blocked: bool,
            }
            let p: P = params(p)?;
            let changed = host.block(p.device, p.blocked).await?;
            Ok(json!({"device": p.device, "blocked": p.blocked, "changed": changed}))
        }
        "discovery_status" => {
            params::<Empty>(p)?;
            Ok(host
                .discovery_status()
                .await
                .unwrap_or_else(|| json!({"enabled": false})))
        }
        "subscribe" => Err(RpcError::new(
            codes::INVALID_REQUEST,
            "subscribe streams events on a connection: use it through `serve`",
        )),
        other => Err(RpcError::new(
            codes::METHOD_NOT_FOUND,
            format!("unknown method {other:?}"),
        )),
    }
}

/// Runs one of the methods that only read ([`Reader`]: no identity needed); `None` for the
/// other methods.
pub async fn read(reader: &Reader, method: &str, p: Value) -> Option<Result<Value, RpcError>> {
    if !matches!(
        method,
        "conversations" | "requests" | "timeline" | "log" | "members" | "info" | "peers"
    ) {
        return None;
    }
    let reader = reader.clone();
    let method = method.to_owned();
    Some(
        tokio::task::spawn_blocking(move || read_blocking(&reader, &method, p))
            .await
            .unwrap_or_else(|e| Err(RpcError::new(codes::INTERNAL_ERROR, e.to_string()))),
    )
}

fn read_blocking(reader: &Reader, method: &str, p: Value) -> Result<Value, RpcError> {
    let host = reader;
    match method {
        "conversations" => {
            params::<Empty>(p)?;
            Ok(json!({"conversations": host.conversations()?}))
        }
        "requests" => {
            params::<Empty>(p)?;
            Ok(json!({"requests": host.requests()?}))
        }
        "timeline" => {
            let p: ConvLimit = params(p)?;
            Ok(json!({"messages": host.timeline(p.conv, p.limit)?}))
        }
        "log" => {
            let p: ConvLimit = params(p)?;
            Ok(json!({"messages": host.log(p.conv, p.limit)?}))
        }
        "members" => {
            let p: Conv = params(p)?;
            Ok(json!({"members": host.members(p.conv)?}))
        }
        "info" => {
            let p: Conv = params(p)?;
            to_value(host.info(p.conv)?)
        }
        "peers" => {
            params::<Empty>(p)?;
            let b = host.peers()?;
            Ok(json!({"peers": b.peers, "blocked": b.blocked}))
        }
        other => Err(RpcError::new(
            codes::METHOD_NOT_FOUND,
            format!("unknown method {other:?}"),
        )),
    }
}

/// An event as JSON (`{"event": "<snake_case kind>", …fields}`); `None` for kinds added
/// later that this version does not describe.
pub fn event_json(e: &Event) -> Option<Value> {
    Some(match e {
        Event::MessageReceived {
            conv,
            commit,
            device,
            author,
            name,
            time,
            body,
        } => json!({"event": "message_received", "conv": conv, "commit": commit,
                    "device": device, "author": author, "name": name, "time": time,
                    "type": body.kind(), "body": body.to_object()}),
        Event::ConversationReady { conv } => json!({"event": "conversation_ready", "conv": conv}),
        Event::MemberEvent {
            conv,
            commit,
            uri,
            action,
        } => json!({"event": "member", "conv": conv, "commit": commit, "uri": uri,
                    "action": action}),
        Event::Synced {
            conv,
            peer,
            head,
            merge,
        } => json!({"event": "sync_finished", "conv": conv, "peer": peer, "head": head,
                    "merge": merge}),
        Event::SyncRejected {
            peer,
            conv,
            commit,
            rule,
            reason,
        } => json!({"event": "commit_refused", "conv": conv, "peer": peer, "commit": commit,
                    "rule": rule, "reason": reason}),
        Event::SyncFailed { peer, conv, reason } => {
            json!({"event": "sync_failed", "conv": conv, "peer": peer, "reason": reason})
        }
        Event::SyncStarted { peer, conv } => {
            json!({"event": "sync_started", "conv": conv, "peer": peer})
        }
        Event::SyncProgress {
            peer,
            conv,
            objects,
        } => json!({"event": "sync_progress", "conv": conv, "peer": peer, "objects": objects}),
        Event::InvitationReceived { conv, from, title } => json!({"event": "invitation_received",
            "conv": conv, "from": from.account, "device": from.device, "title": title}),
        Event::PeerConnected { peer } => {
            json!({"event": "peer_connected", "device": peer.device, "account": peer.account})
        }
        Event::PeerDisconnected { peer } => {
            json!({"event": "peer_disconnected", "device": peer.device, "account": peer.account})
        }
        #[allow(unreachable_patterns)]
        _ => return None,
    })
}

/// What [`serve`] asks before the host: methods of the application (e.g. `swarm-chat`'s
/// export and import). `None` when the method is not one of them.
pub trait Extension: Send + Sync {
    /// Runs `method`, if it is the extension's.
    fn call<'a>(
        &'a self,
        method: &'a str,
        params: Value,
    ) -> BoxFuture<'a, Option<Result<Value, RpcError>>>;
}

/// No extension.
pub struct NoExtension;

impl Extension for NoExtension {
    fn call<'a>(&'a self, _: &'a str, _: Value) -> BoxFuture<'a, Option<Result<Value, RpcError>>> {
        Box::pin(async { None })
    }
}

/// Reads one line of at most [`MAX_LINE`] bytes into `line`; a longer one is read to its end
/// and dropped (`Ok(Some(false))`). `Ok(None)` at the end of the stream.
async fn read_line<R: AsyncBufRead + Unpin>(
    read: &mut R,
    line: &mut Vec<u8>,
) -> std::io::Result<Option<bool>> {
    line.clear();
    let mut too_long = false;
    loop {
        let buf = read.fill_buf().await?;
        if buf.is_empty() {
            return Ok((!line.is_empty() || too_long).then_some(!too_long));
        }
        let (chunk, done) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (&buf[..i], Some(i + 1)),
            None => (buf, None),
        };
        if !too_long {
            if line.len() + chunk.len() > MAX_LINE {
                too_long = true;
                line.clear();
            } else {
                line.extend_from_slice(chunk);
            }
        }
        let used = done.unwrap_or(buf.len());
        read.consume(used);
        if done.is_some() {
            return Ok(Some(!too_long));
        }
    }
}

/// Serves one connection: requests answered in order, `subscribe` turning it into an event
/// stream, until the client hangs up or writing fails.
pub async fn serve<R, W>(mut read: R, mut write: W, host: Host, extension: &dyn Extension)
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut line = Vec::new();
    loop {
        let ok = match read_line(&mut read, &mut line).await {
            Ok(Some(ok)) => ok,
            Ok(None) | Err(_) => return,
        };
        let req = if ok {
            parse(line.trim_ascii())
        } else {
            Err((
                Value::Null,
                RpcError::new(
                    codes::PARSE_ERROR,
                    format!("request longer than {MAX_LINE} bytes"),
                ),
            ))
        };
        let req = match req {
            Ok(c) => c,
            Err((id, e)) => {
                if write.write_all(&response(&id, Err(e))).await.is_err() {
                    return;
                }
                continue;
            }
        };
        if req.method == "subscribe" {
            let Some(id) = req.id else { continue };
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct P {
                #[serde(default)]
                conv: Option<ConversationId>,
            }
            let filter = match params::<P>(req.params) {
                Ok(p) => p.conv,
                Err(e) => {
                    if write.write_all(&response(&id, Err(e))).await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            let events = host.events();
            if write
                .write_all(&response(&id, Ok(json!({"subscribed": true}))))
                .await
                .is_err()
            {
                return;
            }
            stream_events(read, write, events, filter).await;
            return;
        }
        let result = match extension.call(&req.method, req.params.clone()).await {
            Some(r) => r,
            None => call(&host, &req.method, req.params).await,
        };
        if let Some(id) = req.id {
            if write.write_all(&response(&id, result)).await.is_err() {
                return;
            }
        }
    }
}

async fn stream_events<R, W>(
    mut read: R,
    mut write: W,
    mut events: tokio::sync::broadcast::Receiver<Event>,
    filter: Option<ConversationId>,
) where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut line = Vec::new();
    loop {
        let note = tokio::select! {
            e = events.recv() => match e {
                Ok(e) => match event_json(&e) {
                    Some(v) if filter.is_none() || v["conv"] == json!(filter) => {
                        json!({"jsonrpc": "2.0", "method": "event", "params": v})
                    }
                    _ => continue,
                },
                Err(RecvError::Lagged(n)) => {
                    json!({"jsonrpc": "2.0", "method": "lagged", "params": {"missed": n}})
                }
                Err(RecvError::Closed) => return,
            },
            r = read_line(&mut read, &mut line) => match r {
                Ok(Some(_)) => json!({"jsonrpc": "2.0", "id": null, "error": RpcError::new(
                    codes::INVALID_REQUEST,
                    "this connection subscribed: it only streams events")}),
                Ok(None) | Err(_) => {
                    // The client stopped sending: it still gets what happened before.
                    while let Ok(e) = events.try_recv() {
                        let Some(v) = event_json(&e) else { continue };
                        if filter.is_some() && v["conv"] != json!(filter) {
                            continue;
                        }
                        let note = json!({"jsonrpc": "2.0", "method": "event", "params": v});
                        let mut bytes = note.to_string().into_bytes();
                        bytes.push(b'\n');
                        if write.write_all(&bytes).await.is_err() {
                            return;
                        }
                    }
                    return;
                }
            },
        };
        let mut bytes = note.to_string().into_bytes();
        bytes.push(b'\n');
        if write.write_all(&bytes).await.is_err() {
            return;
        }
    }
}

#[cfg(all(test, feature = "sim"))]
mod tests {
    use super::*;
    use crate::host::Home;
    use crate::sim::SimNetwork;
    use crate::storage::MemoryStorage;
    use std::sync::Arc;
    use tokio::io::BufReader;

    fn host(net: &SimNetwork, dir: &std::path::Path, name: &str) -> Host {
        let home = Home::new(dir.join(name));
        let me = home.create_identity(name).expect("identity").into_local();
        let t = Arc::new(net.join(me.peer()));
        let h = Host::builder(home, me)
            .storage(Arc::new(MemoryStorage::new()))
            .transport(t)
            .build()
            .expect("host");
        h.start();
        h
    }

    /// A client connection to `serve` over an in-memory pipe.
    struct Client {
        write: tokio::io::WriteHalf<tokio::io::DuplexStream>,
        read: BufReader<tokio::io::ReadHalf<tokio::io::DuplexStream>>,
    }

    impl Client {
        fn connect(host: &Host) -> Client {
            let (client, server) = tokio::io::duplex(1 << 16);
            let (sr, sw) = tokio::io::split(server);
            let host = host.clone();
            tokio::spawn(async move { serve(BufReader::new(sr), sw, host, &NoExtension).await });
            let (read, write) = tokio::io::split(client);
            Client {
                write,
                read: BufReader::new(read),
            }
        }
        async fn send_raw(&mut self, line: &[u8]) {
            self.write.write_all(line).await.expect("write");
            self.write.write_all(b"\n").await.expect("write");
        }
        async fn next(&mut self) -> Value {
            let mut line = String::new();
            self.read.read_line(&mut line).await.expect("read");
            serde_json::from_str(&line).expect("a JSON line")
        }
        async fn call(&mut self, method: &str, params: Value) -> Value {
            self.write
                .write_all(&request(7, method, params))
                .await
                .expect("write");
            self.next().await
        }
    }

    fn code(v: &Value) -> i64 {
        v["error"]["code"]
            .as_i64()
            .unwrap_or_else(|| panic!("an error: {v}"))
    }

    #[tokio::test]
    async fn malformed_unknown_oversized_and_refused_requests_are_typed_errors_and_serving_goes_on()
    {
        let dir = tempfile::tempdir().expect("tempdir");
        let net = SimNetwork::new(1);
        let alice = host(&net, dir.path(), "alice");
        let mut c = Client::connect(&alice);

        c.send_raw(b"not json").await;
        assert_eq!(code(&c.next().await), codes::PARSE_ERROR);
        c.send_raw(br#"{"jsonrpc":"2.0","id":1}"#).await;
        let v = c.next().await;
        assert_eq!(code(&v), codes::INVALID_REQUEST);
        assert_eq!(v["id"], 1, "the id is answered when it could be read");
        c.send_raw(br#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#)
            .await;
        assert_eq!(code(&c.next().await), codes::INVALID_REQUEST);
        assert_eq!(
            code(&c.call("launch", json!({})).await),
            codes::METHOD_NOT_FOUND
        );
        assert_eq!(
            code(&c.call("send", json!({"conv": "zz"})).await),
            codes::INVALID_PARAMS
        );
        assert_eq!(
            code(&c.call("ping", json!([1, 2])).await),
            codes::INVALID_PARAMS
        );
        assert_eq!(
            code(
                &c.call(
                    "vote",
                    json!({"conv": "ab".repeat(20), "target": "ab".repeat(20),
                                        "action": "crown"})
                )
                .await
            ),
            codes::INVALID_PARAMS
        );

        // A 10 MiB line: refused, skipped to its end, and the connection still answers.
        let big = vec![b'x'; 10 << 20];
        let (mut w, mut r) = (c.write, c.read);
        let writer = tokio::spawn(async move {
            w.write_all(&big).await.expect("write");
            w.write_all(b"\n").await.expect("write");
            w
        });
        let mut line = String::new();
        r.read_line(&mut line).await.expect("read");
        let v: Value = serde_json::from_str(&line).expect("JSON");
        assert_eq!(code(&v), codes::PARSE_ERROR);
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("longer"),
            "{v}"
        );
        let mut c = Client {
            write: writer.await.expect("writer"),
            read: r,
        };
        let pong = c.call("ping", Value::Null).await;
        assert_eq!(pong["result"]["device"], json!(alice.peer().device));

        // The host's errors: unknown conversation, a rule's refusal with its name.
        let unknown = "ab".repeat(20);
        let v = c.call("send", json!({"conv": unknown, "text": "x"})).await;
        assert_eq!(code(&v), codes::NOT_FOUND, "{v}");
        let conv = c.call("create", json!({"mode": "invites-only"})).await["result"]
            ["conversation"]
            .clone();
        let head = c.call("info", json!({"conv": conv})).await["result"]["head"].clone();
        let bad = json!({"type": "text/plain", "body": "x", "reply-to": head, "react-to": head});
        let v = c
            .call("send_body", json!({"conv": conv, "body": bad}))
            .await;
        assert_eq!(code(&v), codes::REFUSED, "{v}");
        assert_eq!(v["error"]["data"]["rule"], "text-shape");
        let log = c.call("log", json!({"conv": conv})).await;
        assert_eq!(
            log["result"]["messages"].as_array().map(Vec::len),
            Some(1),
            "nothing stored"
        );
        // A notification (no id) gets no answer: the next line answers the next request.
        c.send_raw(br#"{"jsonrpc":"2.0","method":"ping"}"#).await;
        let v = c.call("send", json!({"conv": conv, "text": "hello"})).await;
        assert!(v["result"]["commit"].is_string(), "{v}");
        let t = c.call("timeline", json!({"conv": conv})).await;
        assert_eq!(t["result"]["messages"][1]["text"], "hello");
    }

    #[tokio::test]
    async fn a_subscriber_receives_events_as_they_happen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let net = SimNetwork::new(2);
        let (alice, bob) = (
            host(&net, dir.path(), "alice"),
            host(&net, dir.path(), "bob"),
        );
        let mut sub = Client::connect(&alice);
        let v = sub.call("subscribe", json!({})).await;
        assert_eq!(v["result"]["subscribed"], true);
        let conv = bob.create(Mode::InvitesOnly, None).await.expect("create");
        bob.invite(conv, alice.peer().account)
            .await
            .expect("invite");
        let note = loop {
            let n = sub.next().await;
            if n["params"]["event"] == "invitation_received" {
                break n;
            }
        };
        assert_eq!(note["method"], "event");
        assert_eq!(note["params"]["conv"], json!(conv));
        assert_eq!(note["params"]["from"], json!(bob.peer().account));
        // A subscribed connection answers requests with an error, and keeps streaming.
        let v = sub.call("ping", json!({})).await;
        assert_eq!(code(&v), codes::INVALID_REQUEST);
    }
}
