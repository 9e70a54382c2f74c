//! # transport-quic
//!
//! A swarm [`Transport`] over QUIC (quinn + rustls, ring provider).
//!
//! - **TLS 1.3 only**, ALPN [`ALPN`] (`swarm/1`), **mutual authentication** with the device
//!   certificates of DESIGN §2: each side presents `[device cert, account cert]` and signs the
//!   handshake with its Ed25519 device key. A peer is accepted only if
//!   [`swarm_api::identity::verify_device`] passes at connection time (expiry checked, CRLs
//!   from [`QuicConfig::crls`] and our own account's CRL applied). The [`Peer`] reported for
//!   a connection is derived from the verified certificates, never from what the peer claims.
//! - **Channels**: one bidirectional QUIC stream per [`Transport::open_channel`], starting
//!   with a length-prefixed name ([`frame`]).
//! - **Signals**: one unidirectional stream per signal, `kind` + payload, at most
//!   [`frame::MAX_SIGNAL_PAYLOAD`] bytes; malformed frames are refused with a
//!   [`frame::FrameError`] and logged, never a panic.
//! - **Addressing**: an address book ([`QuicTransport::add_peer`]) plus the remote address
//!   of every authenticated connection. One connection per peer device is kept and reused;
//!   idle ones are closed by QUIC's idle timeout.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod frame;
pub mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use swarm_api::id::{AccountUri, DeviceId};
use swarm_api::node::LocalIdentity;
use swarm_api::traits::{
    BoxFuture, Channel, Destination, Incoming, Peer, Signal, Transport, TransportError,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, watch};

pub use frame::FrameError;
pub use tls::{CrlLookup, ALPN};

const LOG: &str = "transport_quic";
/// The name the client puts in its ClientHello (unused by the verifiers: peers are
/// identified by their certificates).
const SERVER_NAME: &str = "swarm";
/// Application error code for refused streams.
const REFUSED: u32 = 1;

/// Errors of this transport's own API (the [`Transport`] methods map them to
/// [`TransportError`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuicError {
    /// The identity material could not be turned into TLS credentials.
    #[error("identity: {0}")]
    Identity(String),
    /// The TLS configuration could not be built.
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// The UDP socket could not be bound.
    #[error("bind: {0}")]
    Bind(#[from] std::io::Error),
    /// No address is known for the peer.
    #[error("no address known for device {0}")]
    NoAddress(DeviceId),
    /// Connecting failed (handshake refused, unreachable, timed out).
    #[error("connecting to {addr} failed: {reason}")]
    Connect {
        /// The address tried.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The peer authenticated as someone else than expected.
    #[error("expected device {expected}, the peer at {addr} is {actual}")]
    WrongPeer {
        /// The device we wanted.
        expected: DeviceId,
        /// The device that answered.
        actual: DeviceId,
        /// Its address.
        addr: SocketAddr,
    },
    /// Bytes to send or received were refused.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A stream failed.
    #[error("stream: {0}")]
    Stream(String),
    /// The transport was closed.
    #[error("transport closed")]
    Closed,
}

/// Tuning and policy of a [`QuicTransport`].
#[derive(Clone)]
pub struct QuicConfig {
    /// Giving up on a connection attempt after this long.
    pub connect_timeout: Duration,
    /// Connections without traffic are closed after this long. With [`keep_alive`] below
    /// it, a live connection always has traffic, so this is how long a peer that vanished
    /// (killed, unplugged: no close ever arrives) keeps its connection, and how long a stream
    /// to it waits before failing with "connection lost".
    ///
    /// [`keep_alive`]: QuicConfig::keep_alive
    pub idle_timeout: Duration,
    /// A PING is sent after this long without traffic, so idle but live connections stay
    /// open and a dead one is noticed after [`idle_timeout`](QuicConfig::idle_timeout).
    /// `None`: no keep-alive (idle connections close).
    pub keep_alive: Option<Duration>,
    /// An incoming stream must deliver its header (or signal) within this long.
    pub header_timeout: Duration,
    /// CRLs of accounts, consulted at every handshake (our own account's CRL from the
    /// [`LocalIdentity`] is always applied).
    pub crls: Option<CrlLookup>,
}

impl Default for QuicConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(15),
            keep_alive: Some(Duration::from_secs(4)),
            header_timeout: Duration::from_secs(10),
            crls: None,
        }
    }
}

impl std::fmt::Debug for QuicConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicConfig")
            .field("connect_timeout", &self.connect_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("keep_alive", &self.keep_alive)
            .field("header_timeout", &self.header_timeout)
            .field("crls", &self.crls.is_some())
            .finish()
    }
}

/// A channel: one bidirectional QUIC stream.
pub struct QuicStream {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
}

impl AsyncRead for QuicStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.recv).poll_read(cx, buf)
    }
}

impl AsyncWrite for QuicStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        AsyncWrite::poll_write(Pin::new(&mut self.send), cx, buf).map_err(std::io::Error::from)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        AsyncWrite::poll_flush(Pin::new(&mut self.send), cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        AsyncWrite::poll_shutdown(Pin::new(&mut self.send), cx)
    }
}

#[derive(Default)]
struct Book {
    devices: HashMap<DeviceId, SocketAddr>,
    accounts: HashMap<AccountUri, Vec<SocketAddr>>,
    /// The account of each device seen on an authenticated connection.
    account_of: HashMap<DeviceId, AccountUri>,
}

struct Inner {
    endpoint: quinn::Endpoint,
    client: quinn::ClientConfig,
    me: Peer,
    /// Our account and its CRL (applied to our own account's devices), for
    /// [`still_trusted`].
    own: (AccountUri, swarm_api::identity::Crl),
    config: QuicConfig,
    book: Mutex<Book>,
    conns: Mutex<HashMap<DeviceId, quinn::Connection>>,
    /// One lock per device: concurrent opens to one peer share a connection, while a slow
    /// peer never delays connections to the others.
    connecting: Mutex<HashMap<DeviceId, Arc<tokio::sync::Mutex<()>>>>,
    tx: mpsc::Sender<Incoming>,
    rx: tokio::sync::Mutex<mpsc::Receiver<Incoming>>,
    closed: watch::Sender<bool>,
}

/// A [`Transport`] over QUIC. Cheap to clone (shared state).
#[derive(Clone)]
pub struct QuicTransport {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl QuicTransport {
    /// Binds a UDP socket at `addr` and starts accepting connections (needs a tokio
    /// runtime). Returns the transport and the bound address (useful with port 0).
    pub fn bind(
        addr: SocketAddr,
        identity: &LocalIdentity,
        config: QuicConfig,
    ) -> Result<(Self, SocketAddr), QuicError> {
        let server_tls = tls::server_config(identity, config.crls.clone())?;
        let client_tls = tls::client_config(identity, config.crls.clone())?;
        let mut transport = quinn::TransportConfig::default();
        transport.max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(config.idle_timeout)
                .map_err(|e| QuicError::Tls(format!("idle timeout: {e}")))?,
        ));
        transport.keep_alive_interval(config.keep_alive);
        let transport = Arc::new(transport);
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(
            QuicServerConfig::try_from(server_tls).map_err(|e| QuicError::Tls(e.to_string()))?,
        ));
        server.transport_config(transport.clone());
        let mut client = quinn::ClientConfig::new(Arc::new(
            QuicClientConfig::try_from(client_tls).map_err(|e| QuicError::Tls(e.to_string()))?,
        ));
        client.transport_config(transport);
        let endpoint = quinn::Endpoint::server(server, addr)?;
        let local = endpoint.local_addr()?;
        let (tx, rx) = mpsc::channel(1024);
        let (closed, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            endpoint,
            client,
            me: identity.peer(),
            own: (identity.account.uri(), identity.crl.clone()),
            config,
            book: Mutex::default(),
            conns: Mutex::default(),
            connecting: Mutex::default(),
            tx,
            rx: tokio::sync::Mutex::new(rx),
            closed,
        });
        tokio::spawn(accept_loop(Arc::downgrade(&inner), inner.endpoint.clone()));
        tracing::info!(target: LOG, %local, device = %inner.me.device, "listening");
        Ok((Self { inner }, local))
    }

    /// This device.
    pub fn peer(&self) -> Peer {
        self.inner.me
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<SocketAddr, QuicError> {
        Ok(self.inner.endpoint.local_addr()?)
    }

    /// Records where a device (or any device of an account) can be reached.
    pub fn add_peer(&self, who: Destination, addr: SocketAddr) {
        let mut b = lock(&self.inner.book);
        match who {
            Destination::Device(d) => {
                b.devices.insert(d, addr);
            }
            Destination::Account(a) => {
                let list = b.accounts.entry(a).or_default();
                if !list.contains(&addr) {
                    list.push(addr);
                }
            }
        }
    }

    /// The address known for a device, if any.
    pub fn address_of(&self, device: &DeviceId) -> Option<SocketAddr> {
        lock(&self.inner.book).devices.get(device).copied()
    }

    /// Devices with a live connection.
    pub fn connected(&self) -> Vec<Peer> {
        let conns = lock(&self.inner.conns);
        let book = lock(&self.inner.book);
        conns
            .iter()
            .filter(|(_, c)| c.close_reason().is_none())
            .filter_map(|(d, _)| {
                book.account_of.get(d).map(|a| Peer {
                    device: *d,
                    account: *a,
                })
            })
            .collect()
    }

    /// Connects to `addr` (whoever answers, once authenticated) and returns the peer and the
    /// underlying QUIC connection (reused by later calls for that device).
    pub async fn connect_addr(
        &self,
        addr: SocketAddr,
    ) -> Result<(Peer, quinn::Connection), QuicError> {
        connect(&self.inner, addr).await
    }

    /// A live connection to `device`: the cached one, or a new one to its known address.
    pub async fn connection(&self, device: DeviceId) -> Result<quinn::Connection, QuicError> {
        if *self.inner.closed.borrow() {
            return Err(QuicError::Closed);
        }
        if let Some(c) = live(&self.inner, &device) {
            return Ok(c);
        }
        let attempt = lock(&self.inner.connecting)
            .entry(device)
            .or_default()
            .clone();
        let _guard = attempt.lock().await;
        if let Some(c) = live(&self.inner, &device) {
            return Ok(c);
        }
        let addr = self
            .address_of(&device)
            .ok_or(QuicError::NoAddress(device))?;
        let (peer, conn) = connect(&self.inner, addr).await?;
        if peer.device != device {
            conn.close(REFUSED.into(), b"unexpected device");
            return Err(QuicError::WrongPeer {
                expected: device,
                actual: peer.device,
                addr,
            });
        }
        Ok(conn)
    }

    /// Closes every connection and stops accepting; [`Transport::next_incoming`] then
    /// returns `None`.
    pub fn close(&self) {
        self.inner.closed.send_replace(true);
        self.inner.endpoint.close(0u32.into(), b"closed");
        lock(&self.inner.conns).clear();
        tracing::info!(target: LOG, device = %self.inner.me.device, "closed");
    }

    async fn open(&self, device: DeviceId, name: &str) -> Result<QuicStream, QuicError> {
        let header = frame::encode_channel_header(name)?;
        let conn = self.connection(device).await?;
        let (mut send, recv) = conn
            .open_bi()
            .await
            .map_err(|e| QuicError::Stream(e.to_string()))?;
        send.write_all(&header)
            .await
            .map_err(|e| QuicError::Stream(e.to_string()))?;
        tracing::debug!(target: LOG, %device, %name, "channel opened");
        Ok(QuicStream { send, recv })
    }

    async fn signal_to(&self, conn: &quinn::Connection, frame: &[u8]) -> Result<(), QuicError> {
        let mut s = conn
            .open_uni()
            .await
            .map_err(|e| QuicError::Stream(e.to_string()))?;
        s.write_all(frame)
            .await
            .map_err(|e| QuicError::Stream(e.to_string()))?;
        s.finish().map_err(|e| QuicError::Stream(e.to_string()))?;
        Ok(())
    }

    async fn signal(&self, to: Destination, signal: Signal) -> Result<(), QuicError> {
        let frame = frame::encode_signal(&signal.kind, &signal.payload)?;
        match to {
            Destination::Device(d) => {
                let conn = self.connection(d).await?;
                self.signal_to(&conn, &frame).await
            }
            Destination::Account(a) => {
                // Every connected device of the account, and every address listed for it.
                let mut sent = 0usize;
                let mut last = None;
                let devices: Vec<DeviceId> = {
                    let b = lock(&self.inner.book);
                    b.account_of
                        .iter()
                        .filter(|(_, acc)| **acc == a)
                        .map(|(d, _)| *d)
                        .collect()
                };
                let mut done = Vec::new();
                for d in devices {
                    if let Some(conn) = live(&self.inner, &d) {
                        match self.signal_to(&conn, &frame).await {
                            Ok(()) => sent += 1,
                            Err(e) => last = Some(e),
                        }
                        done.push(d);
                    }
                }
                let addrs = lock(&self.inner.book)
                    .accounts
                    .get(&a)
                    .cloned()
                    .unwrap_or_default();
                for addr in addrs {
                    let known = lock(&self.inner.book)
                        .devices
                        .iter()
                        .find(|(_, a)| **a == addr)
                        .map(|(d, _)| *d);
                    if known.is_some_and(|d| done.contains(&d)) {
                        continue;
                    }
                    match connect(&self.inner, addr).await {
                        Ok((peer, _)) if peer.account != a => {
                            tracing::debug!(target: LOG, %addr, "address of account {a} answered as another account");
                        }
                        Ok((peer, _)) if done.contains(&peer.device) => {}
                        Ok((peer, conn)) => {
                            done.push(peer.device);
                            match self.signal_to(&conn, &frame).await {
                                Ok(()) => sent += 1,
                                Err(e) => last = Some(e),
                            }
                        }
                        Err(e) => last = Some(e),
                    }
                }
                match (sent, last) {
                    (0, Some(e)) => Err(e),
                    (0, None) => Err(QuicError::Stream(format!(
                        "no device of account {a} is reachable"
                    ))),
                    _ => Ok(()),
                }
            }
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.endpoint.close(0u32.into(), b"dropped");
    }
}

fn live(inner: &Inner, device: &DeviceId) -> Option<quinn::Connection> {
    let mut conns = lock(&inner.conns);
    match conns.get(device) {
        Some(c) if c.close_reason().is_none() && still_trusted(inner, c) => Some(c.clone()),
        Some(_) => {
            conns.remove(device);
            None
        }
        None => None,
    }
}

/// Whether the peer of an established connection is still trusted: its chain checked again
/// against the CRLs known now ([`QuicConfig::crls`], our own account's). If not, the
/// connection is closed: a device revoked after it connected loses the connection at its
/// next stream (either way), not only at its next handshake.
fn still_trusted(inner: &Inner, conn: &quinn::Connection) -> bool {
    let chain = conn.peer_identity().and_then(|i| {
        i.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
            .ok()
    });
    let verdict = match chain {
        Some(chain) => tls::recheck_chain(&chain, &inner.config.crls, &inner.own),
        None => Err("no certificate".into()),
    };
    match verdict {
        Ok(()) => true,
        Err(reason) => {
            tracing::info!(target: LOG, %reason, "closing a connection whose peer is no longer trusted");
            conn.close(REFUSED.into(), b"revoked");
            false
        }
    }
}

/// The authenticated peer of an established connection.
fn peer_of(conn: &quinn::Connection) -> Option<Peer> {
    let alpn_ok = conn
        .handshake_data()
        .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|d| d.protocol)
        .is_some_and(|p| p == ALPN);
    if !alpn_ok {
        return None;
    }
    let chain = conn
        .peer_identity()?
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .ok()?;
    tls::peer_of_chain(&chain)
}

async fn connect(
    inner: &Arc<Inner>,
    addr: SocketAddr,
) -> Result<(Peer, quinn::Connection), QuicError> {
    let fail = |reason: String| QuicError::Connect { addr, reason };
    let connecting = inner
        .endpoint
        .connect_with(inner.client.clone(), addr, SERVER_NAME)
        .map_err(|e| fail(e.to_string()))?;
    let conn = tokio::time::timeout(inner.config.connect_timeout, connecting)
        .await
        .map_err(|_| fail("timed out".into()))?
        .map_err(|e| fail(e.to_string()))?;
    let Some(peer) = peer_of(&conn) else {
        conn.close(REFUSED.into(), b"unauthenticated");
        return Err(fail("no authenticated peer".into()));
    };
    tracing::debug!(target: LOG, %addr, device = %peer.device, "connected");
    register(inner, peer, conn.clone(), addr);
    Ok((peer, conn))
}

/// Records an authenticated connection and serves the streams the peer opens on it.
fn register(inner: &Arc<Inner>, peer: Peer, conn: quinn::Connection, addr: SocketAddr) {
    {
        let mut b = lock(&inner.book);
        b.devices.insert(peer.device, addr);
        b.account_of.insert(peer.device, peer.account);
    }
    lock(&inner.conns).insert(peer.device, conn.clone());
    tokio::spawn(serve_connection(Arc::downgrade(inner), peer, conn));
}

async fn accept_loop(inner: std::sync::Weak<Inner>, endpoint: quinn::Endpoint) {
    while let Some(incoming) = endpoint.accept().await {
        let inner = inner.clone();
        tokio::spawn(async move {
            let addr = incoming.remote_address();
            let conn = match incoming.await {
                Ok(c) => c,
                Err(e) => {
                    tracing::info!(target: LOG, %addr, error = %e, "incoming handshake failed");
                    return;
                }
            };
            let Some(peer) = peer_of(&conn) else {
                conn.close(REFUSED.into(), b"unauthenticated");
                return;
            };
            let Some(inner) = inner.upgrade() else { return };
            tracing::debug!(target: LOG, %addr, device = %peer.device, account = %peer.account, "accepted connection");
            register(&inner, peer, conn, addr);
        });
    }
}

enum Stream {
    Bi(quinn::SendStream, quinn::RecvStream),
    Uni(quinn::RecvStream),
}

async fn serve_connection(inner: std::sync::Weak<Inner>, peer: Peer, conn: quinn::Connection) {
    loop {
        let next = tokio::select! {
            bi = conn.accept_bi() => bi.map(|(s, r)| Stream::Bi(s, r)),
            uni = conn.accept_uni() => uni.map(Stream::Uni),
        };
        let stream = match next {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(target: LOG, device = %peer.device, reason = %e, "connection ended");
                break;
            }
        };
        let Some(inner) = inner.upgrade() else { break };
        if !still_trusted(&inner, &conn) {
            break;
        }
        tokio::spawn(async move {
            let timeout = inner.config.header_timeout;
            let result = match stream {
                Stream::Bi(send, recv) => {
                    tokio::time::timeout(timeout, incoming_channel(peer, send, recv)).await
                }
                Stream::Uni(recv) => {
                    tokio::time::timeout(timeout, incoming_signal(peer, recv)).await
                }
            };
            match result {
                Ok(Ok(incoming)) => {
                    let _ = inner.tx.send(incoming).await;
                }
                Ok(Err(e)) => {
                    tracing::info!(target: LOG, device = %peer.device, error = %e, "refused an incoming stream");
                }
                Err(_) => {
                    tracing::info!(target: LOG, device = %peer.device, "incoming stream timed out");
                }
            }
        });
    }
    if let Some(inner) = inner.upgrade() {
        let mut conns = lock(&inner.conns);
        if conns
            .get(&peer.device)
            .is_some_and(|c| c.stable_id() == conn.stable_id())
        {
            conns.remove(&peer.device);
        }
    }
}

async fn incoming_channel(
    from: Peer,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) -> Result<Incoming, QuicError> {
    let refuse = |send: &mut quinn::SendStream, recv: &mut quinn::RecvStream| {
        let _ = send.reset(REFUSED.into());
        let _ = recv.stop(REFUSED.into());
    };
    let len = match recv.read_u16().await {
        Ok(l) => l,
        Err(e) => {
            refuse(&mut send, &mut recv);
            return Err(QuicError::Stream(e.to_string()));
        }
    };
    let len = match frame::check_channel_name_length(len) {
        Ok(l) => l,
        Err(e) => {
            refuse(&mut send, &mut recv);
            return Err(e.into());
        }
    };
    let mut name = vec![0u8; len];
    if let Err(e) = recv.read_exact(&mut name).await {
        refuse(&mut send, &mut recv);
        return Err(QuicError::Stream(e.to_string()));
    }
    let Ok(name) = String::from_utf8(name) else {
        refuse(&mut send, &mut recv);
        return Err(FrameError::NotUtf8.into());
    };
    tracing::debug!(target: LOG, device = %from.device, %name, "incoming channel");
    Ok(Incoming::Channel {
        from,
        name,
        stream: Box::new(QuicStream { send, recv }) as Box<dyn Channel>,
    })
}

async fn incoming_signal(from: Peer, mut recv: quinn::RecvStream) -> Result<Incoming, QuicError> {
    let bytes = match recv.read_to_end(frame::MAX_SIGNAL_FRAME).await {
        Ok(b) => b,
        Err(quinn::ReadToEndError::TooLong) => {
            let _ = recv.stop(REFUSED.into());
            return Err(FrameError::PayloadTooLarge(frame::MAX_SIGNAL_FRAME + 1).into());
        }
        Err(e) => return Err(QuicError::Stream(e.to_string())),
    };
    let (kind, payload) = frame::decode_signal(&bytes)?;
    tracing::debug!(target: LOG, device = %from.device, %kind, "incoming signal");
    Ok(Incoming::Signal {
        from,
        signal: Signal { kind, payload },
    })
}

fn transport_error(device: Option<DeviceId>, e: QuicError) -> TransportError {
    match (e, device) {
        (QuicError::Closed, _) => TransportError::Closed,
        (e @ QuicError::WrongPeer { .. }, _) => TransportError::Authentication(e.to_string()),
        (QuicError::NoAddress(d), _) => TransportError::Unreachable(d),
        (e @ QuicError::Connect { .. }, Some(d)) => {
            tracing::debug!(target: LOG, device = %d, error = %e, "unreachable");
            TransportError::Unreachable(d)
        }
        (e, _) => TransportError::Other(e.to_string()),
    }
}

impl Transport for QuicTransport {
    fn open_channel<'a>(
        &'a self,
        device: DeviceId,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Box<dyn Channel>, TransportError>> {
        Box::pin(async move {
            self.open(device, name)
                .await
                .map(|s| Box::new(s) as Box<dyn Channel>)
                .map_err(|e| transport_error(Some(device), e))
        })
    }

    fn send_signal<'a>(
        &'a self,
        to: Destination,
        signal: Signal,
    ) -> BoxFuture<'a, Result<(), TransportError>> {
        Box::pin(async move {
            let device = match to {
                Destination::Device(d) => Some(d),
                Destination::Account(_) => None,
            };
            self.signal(to, signal)
                .await
                .map_err(|e| transport_error(device, e))
        })
    }

    fn next_incoming(&self) -> BoxFuture<'_, Option<Incoming>> {
        Box::pin(async move {
            let mut closed = self.inner.closed.subscribe();
            if *closed.borrow() {
                return None;
            }
            let mut rx = self.inner.rx.lock().await;
            tokio::select! {
                next = rx.recv() => next,
                _ = closed.wait_for(|c| *c) => None,
            }
        })
    }

    fn add_address(&self, to: Destination, addr: SocketAddr) -> bool {
        self.add_peer(to, addr);
        true
    }

    fn dial(&self, addr: SocketAddr) -> BoxFuture<'_, Result<Peer, TransportError>> {
        Box::pin(async move {
            self.connect_addr(addr)
                .await
                .map(|(peer, _)| peer)
                .map_err(|e| transport_error(None, e))
        })
    }

    fn connected(&self) -> Vec<Peer> {
        QuicTransport::connected(self)
    }

    fn address_of(&self, device: &DeviceId) -> Option<SocketAddr> {
        QuicTransport::address_of(self, device)
    }

    fn local_addr(&self) -> Option<SocketAddr> {
        QuicTransport::local_addr(self).ok()
    }
}
