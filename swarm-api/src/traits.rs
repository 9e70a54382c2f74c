//! The pluggable parts besides [`crate::storage::Storage`]: [`Transport`], [`Discovery`],
//! [`Validator`] and [`MessageType`].
//!
//! Implementations live in their own crates (`transport-quic`, `transport-dht`,
//! `swarm-plugins`); the core only sees these traits.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use crate::body::{Body, Mode};
use crate::commit::Commit;
use crate::id::{AccountUri, ConversationId, DeviceId};
use crate::object::Delta;
use crate::validate::{CommitLookup, MemberRole, State, Violation};

/// A boxed future, for dyn-compatible async traits.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Looks up the CRLs an account published, for a transport that authenticates devices (called
/// at every handshake or signature check, so it must be cheap). A node's is
/// [`crate::host::KnownCrls::lookup`]: every CRL in its conversations.
pub type CrlLookup = std::sync::Arc<dyn Fn(&AccountUri) -> Vec<crate::identity::Crl> + Send + Sync>;

/// A reliable, ordered, bidirectional byte stream to one authenticated device.
pub trait Channel: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Channel for T {}

/// Where a signal goes: one device, or every device of an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Destination {
    /// One device.
    Device(DeviceId),
    /// All devices of an account.
    Account(AccountUri),
}

/// A small message to a device or account that may be offline (DESIGN §6): an
/// invitation, a trust request, a commit announcement, presence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signal {
    /// The MIME-like kind, e.g. `application/im-gitmessage-id` or `application/invite+json`.
    pub kind: String,
    /// The payload (JSON for the built-in kinds).
    pub payload: Vec<u8>,
}

/// An authenticated peer: what the transport proved from its certificate chain (never what
/// the peer claims).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    /// The peer's device.
    pub device: DeviceId,
    /// The account that issued the device certificate.
    pub account: AccountUri,
}

/// Something the transport received.
pub enum Incoming {
    /// A peer opened a channel; `name` says what for (e.g. `sync://<conv>`,
    /// `data-transfer://<conv>/<dev>/<fileId>`).
    Channel {
        /// The authenticated peer.
        from: Peer,
        /// The channel name the peer asked for.
        name: String,
        /// The stream.
        stream: Box<dyn Channel>,
    },
    /// A signal arrived.
    Signal {
        /// The sender, as authenticated by the transport.
        from: Peer,
        /// The signal.
        signal: Signal,
    },
}

/// Errors a transport reports.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The peer cannot be reached now (offline, unknown address, partition).
    #[error("device {0} is unreachable")]
    Unreachable(DeviceId),
    /// The peer's identity could not be authenticated.
    #[error("authentication failed: {0}")]
    Authentication(String),
    /// The transport was shut down.
    #[error("transport closed")]
    Closed,
    /// The transport cannot do this (e.g. dial an address).
    #[error("this transport does not support {0}")]
    Unsupported(&'static str),
    /// Any other failure.
    #[error("transport failed: {0}")]
    Other(String),
}

/// Moves bytes between devices. Two roles (DESIGN §6): *channels* (reliable streams to a
/// connected device: sync, file transfer) and *signals* (small messages that may be relayed or
/// stored for an offline device). A transport authenticates the peer device itself; every
/// `DeviceId` it reports comes from a verified certificate.
pub trait Transport: Send + Sync {
    /// Opens a channel named `name` to `device`. Fails with
    /// [`TransportError::Unreachable`] when no connection can be made now; never blocks
    /// forever (implementations apply a connect timeout).
    fn open_channel<'a>(
        &'a self,
        device: DeviceId,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Box<dyn Channel>, TransportError>>;

    /// Sends a signal, best effort: `Ok` means handed to the network, not delivered.
    fn send_signal<'a>(
        &'a self,
        to: Destination,
        signal: Signal,
    ) -> BoxFuture<'a, Result<(), TransportError>>;

    /// Waits for the next incoming channel or signal; `None` once the transport is closed.
    fn next_incoming(&self) -> BoxFuture<'_, Option<Incoming>>;

    /// Records that `to` can be reached at `addr` (from a [`Discovery`] service, the user or a
    /// remembered connection). Returns `false` if this transport does not dial addresses (the
    /// default).
    fn add_address(&self, to: Destination, addr: SocketAddr) -> bool {
        let _ = (to, addr);
        false
    }

    /// Connects to whoever listens at `addr` and returns the peer, once authenticated. The
    /// default: [`TransportError::Unsupported`].
    fn dial(&self, addr: SocketAddr) -> BoxFuture<'_, Result<Peer, TransportError>> {
        let _ = addr;
        Box::pin(async { Err(TransportError::Unsupported("dialling an address")) })
    }

    /// The devices with a live connection now (empty for a transport without connections).
    fn connected(&self) -> Vec<Peer> {
        Vec::new()
    }

    /// The address `device` is reached at, if this transport knows one.
    fn address_of(&self, device: &DeviceId) -> Option<SocketAddr> {
        let _ = device;
        None
    }

    /// Where this transport listens, if it listens on a socket address.
    fn local_addr(&self) -> Option<SocketAddr> {
        None
    }
}

/// Finds where a device or an account can be reached, and tells others where this device
/// listens (DESIGN §6: the DHT is one implementation; a rendezvous server or mDNS could be
/// others). The node asks it when no transport can reach a device, hands the addresses to the
/// transports ([`Transport::add_address`]) and tries again.
pub trait Discovery: Send + Sync {
    /// The addresses found for `who` (empty if none, after a bounded search).
    fn resolve(&self, who: Destination) -> BoxFuture<'_, Vec<SocketAddr>>;

    /// Publishes the addresses this device listens on (replacing what was published).
    fn publish(&self, addrs: Vec<SocketAddr>);

    /// A description of the service's state for clients (e.g. `swarm-chat dht status`).
    fn status(&self) -> BoxFuture<'_, serde_json::Value> {
        Box::pin(async { serde_json::json!({}) })
    }
}

/// What a [`Validator`] or [`MessageType`] sees of one commit. Everything is taken from the
/// commit and its parent's tree, never from the local checkout.
pub struct CommitView<'a> {
    /// The conversation.
    pub conversation: ConversationId,
    /// The conversation's mode.
    pub mode: Mode,
    /// The decoded commit.
    pub commit: &'a Commit,
    /// Its parsed body.
    pub body: &'a Body,
    /// The signer's account.
    pub signer: AccountUri,
    /// The signing device.
    pub device: DeviceId,
    /// The signer's role at the parent.
    pub role: Option<MemberRole>,
    /// Paths changed relative to the parent, except the author's own credentials.
    pub changes: &'a [Delta],
    /// The membership state at the parent.
    pub parent: &'a State,
    /// The history the commit sits on.
    pub lookup: &'a dyn CommitLookup,
}

/// An app's own rule over single commits (e.g. a moderation policy), stacked on the built-in
/// rules with [`crate::validate::Engine::add_validator`]; it refuses with
/// [`Violation::Policy`] (or any other violation). Validators are pure: the same view gives
/// the same answer on every peer at any time (no clock, no local state).
pub trait Validator: Send + Sync {
    /// `Ok` if the commit is allowed, else the rule it breaks.
    fn validate(&self, view: &CommitView<'_>) -> Result<(), Violation>;
}

/// A commit `type` brought by a plugin or an application. The engine
/// ([`crate::validate::Engine::register`]) asks the message type owning a commit's `type` to
/// validate it, in addition to the generic rules (signer authorized, signature, "no
/// unexpected files").
pub trait MessageType: Send + Sync {
    /// The `type` strings this message type owns.
    fn types(&self) -> Vec<String>;

    /// `Ok` if the commit is allowed, else (typically) [`Violation::Plugin`]. Must be
    /// deterministic; must not panic on any body.
    fn validate(&self, view: &CommitView<'_>) -> Result<(), Violation>;

    /// A one-line text for clients that do not know this type, if there is one.
    fn summary(&self, body: &Body) -> Option<String> {
        let _ = body;
        None
    }
}

/// Turns a plugin pinned in a conversation (`plugins/<sha256>.wasm`, DESIGN §7) into a
/// [`MessageType`]. The core cannot run WebAssembly; an app that can registers a loader
/// ([`crate::validate::Engine::set_plugin_loader`], e.g. `swarm-plugins`' host). Loading
/// must be deterministic: the same bytes load (or fail) everywhere.
pub trait PluginLoader: Send + Sync {
    /// Checks and loads a component; `Err` says why it is not a usable plugin.
    fn load(&self, wasm: &[u8]) -> Result<std::sync::Arc<dyn MessageType>, String>;
}
