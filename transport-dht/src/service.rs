//! [`Dht`]: what a node runs: one OpenDHT runner bootstrapped to the network, publishing this
//! device's address records (refreshed before they expire), resolving devices and accounts,
//! and sending / receiving sealed signals. It is a [`Transport`] with the signal role only
//! (channels go over QUIC).

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use swarm_api::id::AccountUri;
use swarm_api::identity::{verify_device, AccountCert, Crl, DeviceCert};
use swarm_api::traits::CrlLookup;
use swarm_api::traits::{
    BoxFuture, Channel, Destination, Discovery, Incoming, Peer, Signal, Transport, TransportError,
};
use swarm_api::DeviceId;
use tokio::sync::{mpsc, watch};

use crate::ffi::{GetEvent, InfoHash, Runner};
use crate::record::{self, address_key, AddressRecord};
use crate::replay::{ReplayFileError, ReplayGuard};
use crate::seal;
use crate::Identity;

const LOG: &str = "transport_dht";

/// How the DHT service runs.
#[derive(Clone)]
pub struct DhtConfig {
    /// UDP port of the runner (0: any).
    pub port: u16,
    /// Nodes to bootstrap from (`HOST:PORT`).
    pub bootstrap: Vec<String>,
    /// Lifetime of published address records.
    pub record_lifetime: Duration,
    /// Records are re-published this often (well before they expire).
    pub refresh: Duration,
    /// Signals sent longer ago than this (sender's clock) are ignored; signals dated more
    /// than [`crate::replay::MAX_CLOCK_SKEW`] in the future too.
    pub max_signal_age: Duration,
    /// How long a resolve waits at most.
    pub resolve_timeout: Duration,
    /// Where the service keeps its state: the ids of the signals it delivered
    /// ([`crate::replay`], file [`crate::replay::FILE_NAME`]), so that a signal still in
    /// the DHT is not delivered again after a restart. `None`: in memory only (a restart
    /// forgets them, and every signal of the last `max_signal_age` is delivered again).
    pub state_dir: Option<PathBuf>,
    /// The CRLs an account published, applied to every address record, sealed signal and
    /// learned certificate: a device revoked by its account is neither resolved, nor heard,
    /// nor sealed to. A node passes [`swarm_api::host::KnownCrls::lookup`] (every CRL of its
    /// conversations); `None` applies none (only our own account's CRL, which
    /// [`crate::Identity`] does not carry, is then unknown too).
    pub crls: Option<CrlLookup>,
}

impl std::fmt::Debug for DhtConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DhtConfig")
            .field("port", &self.port)
            .field("bootstrap", &self.bootstrap)
            .field("record_lifetime", &self.record_lifetime)
            .field("refresh", &self.refresh)
            .field("max_signal_age", &self.max_signal_age)
            .field("resolve_timeout", &self.resolve_timeout)
            .field("state_dir", &self.state_dir)
            .field("crls", &self.crls.is_some())
            .finish()
    }
}

impl Default for DhtConfig {
    fn default() -> Self {
        DhtConfig {
            port: 0,
            bootstrap: Vec::new(),
            record_lifetime: Duration::from_secs(120),
            refresh: Duration::from_secs(40),
            max_signal_age: Duration::from_secs(24 * 3600),
            resolve_timeout: Duration::from_secs(5),
            state_dir: None,
            crls: None,
        }
    }
}

/// Errors of the DHT service.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DhtError {
    /// The runner failed.
    #[error(transparent)]
    Ffi(#[from] crate::ffi::FfiError),
    /// A bootstrap address is not `HOST:PORT`.
    #[error("bad bootstrap address {0:?} (expected HOST:PORT)")]
    Bootstrap(String),
    /// No device key is known for the destination (not found in the DHT either).
    #[error("no device of {0:?} found in the DHT")]
    Unknown(Destination),
    /// Sealing failed.
    #[error(transparent)]
    Seal(#[from] seal::SealError),
    /// The replay set in [`DhtConfig::state_dir`] cannot be read or written.
    #[error(transparent)]
    ReplaySet(#[from] ReplayFileError),
}

/// What `swarm-chat dht status` shows.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    /// The runner's node id.
    pub node_id: String,
    /// Its UDP port.
    pub port: u16,
    /// Whether it runs.
    pub running: bool,
    /// Each bootstrap node and whether it answered a ping just now.
    pub bootstrap: Vec<(String, bool)>,
    /// The addresses this device publishes.
    pub published: Vec<SocketAddr>,
}

struct Shared {
    me: Identity,
    config: DhtConfig,
    /// Device certificates learned (verified chains), for sealing.
    certs: Mutex<HashMap<DeviceId, (DeviceCert, AccountCert)>>,
    /// Signals already delivered (replays, stale and future-dated signals are dropped).
    seen: Mutex<ReplayGuard>,
    published: watch::Sender<Vec<SocketAddr>>,
    /// Set once by [`Dht::shutdown`]: the background tasks end.
    stop: watch::Sender<bool>,
    incoming: tokio::sync::Mutex<mpsc::UnboundedReceiver<(Peer, Signal)>>,
}

/// The DHT service of one device. Cheap to clone.
#[derive(Clone)]
pub struct Dht {
    runner: Runner,
    shared: Arc<Shared>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Now, in Unix seconds.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The DHT key where signals for a device or an account are put.
pub fn signal_key(to: Destination) -> InfoHash {
    match to {
        Destination::Device(d) => InfoHash::of(format!("swarm/signal/device/{d}").as_bytes()),
        Destination::Account(u) => InfoHash::of(format!("swarm/signal/account/{u}").as_bytes()),
    }
}

fn parse_host_port(s: &str) -> Result<(String, u16), DhtError> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| DhtError::Bootstrap(s.to_owned()))?;
    let port = port
        .parse()
        .map_err(|_| DhtError::Bootstrap(s.to_owned()))?;
    Ok((host.trim_matches(['[', ']']).to_owned(), port))
}

impl Dht {
    /// Starts the runner, bootstraps, and listens for signals to this device and account.
    /// Must be called within a tokio runtime.
    pub fn start(me: Identity, config: DhtConfig) -> Result<Dht, DhtError> {
        let bootstrap = config
            .bootstrap
            .iter()
            .map(|b| parse_host_port(b))
            .collect::<Result<Vec<_>, _>>()?;
        let seen = match &config.state_dir {
            Some(dir) => ReplayGuard::open(dir, config.max_signal_age, unix_now())?,
            None => ReplayGuard::in_memory(config.max_signal_age),
        };
        let runner = Runner::start(config.port)?;
        for (host, port) in &bootstrap {
            runner.bootstrap(host, *port)?;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let dht = Dht {
            runner,
            shared: Arc::new(Shared {
                certs: Mutex::default(),
                seen: Mutex::new(seen),
                published: watch::channel(Vec::new()).0,
                stop: watch::channel(false).0,
                incoming: tokio::sync::Mutex::new(rx),
                config,
                me,
            }),
        };
        let device = Destination::Device(dht.shared.me.device_cert.id());
        let account = Destination::Account(dht.shared.me.account.uri());
        for to in [device, account] {
            tokio::spawn(dht.clone().receive(to, tx.clone()));
        }
        tokio::spawn(dht.clone().publisher());
        tracing::info!(target: LOG, node = %dht.runner.node_id(), port = dht.runner.port(), "DHT started");
        Ok(dht)
    }

    /// How it was configured.
    pub fn config(&self) -> &DhtConfig {
        &self.shared.config
    }

    /// The runner (for its node id and port).
    pub fn runner(&self) -> &Runner {
        &self.runner
    }

    /// Publishes this device's addresses (fire and forget; refreshed until changed).
    pub fn publish(&self, addrs: Vec<SocketAddr>) {
        self.shared.published.send_replace(addrs);
    }

    async fn publisher(self) {
        let mut rx = self.shared.published.subscribe();
        loop {
            let addrs = rx.borrow_and_update().clone();
            if !addrs.is_empty() {
                let lifetime = self.shared.config.record_lifetime.as_secs().max(1);
                let rec = record::sign(&self.shared.me, &addrs, unix_now(), lifetime);
                for of in [
                    Destination::Device(self.shared.me.device_cert.id()),
                    Destination::Account(self.shared.me.account.uri()),
                ] {
                    let done = self.runner.put(address_key(of), &rec);
                    tokio::spawn(async move {
                        let ok = done.await.unwrap_or(false);
                        tracing::debug!(target: LOG, ?of, ok, "address record put");
                    });
                }
            }
            let refresh = tokio::time::sleep(self.shared.config.refresh);
            tokio::select! {
                _ = refresh => {}
                changed = rx.changed() => if changed.is_err() { return },
                _ = self.stopped() => return,
            }
        }
    }

    /// Resolves a device or an account: a stream of verified, fresh records as they arrive
    /// (forged and stale ones are dropped), ending when the search ends.
    pub fn resolve(&self, of: Destination) -> mpsc::UnboundedReceiver<AddressRecord> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut found = self.runner.get(address_key(of));
        let shared = self.shared.clone();
        tokio::spawn(async move {
            while let Some(GetEvent::Value(bytes)) = found.recv().await {
                match record::verify(&bytes, unix_now(), &|a| shared.crls_of(a)) {
                    Ok(rec) if matches_destination(&rec.peer, of) => {
                        shared.learn(&rec.device_cert, &rec.account_cert);
                        if tx.send(rec).is_err() {
                            return;
                        }
                    }
                    Ok(rec) => {
                        tracing::debug!(target: LOG, device = %rec.peer.device, ?of, "record under the wrong key ignored")
                    }
                    Err(e) => tracing::debug!(target: LOG, ?of, error = %e, "record ignored"),
                }
            }
        });
        rx
    }

    /// Resolves and collects: the newest record of each device found before the search ends
    /// or [`DhtConfig::resolve_timeout`].
    pub async fn resolve_all(&self, of: Destination) -> Vec<AddressRecord> {
        let mut rx = self.resolve(of);
        let mut newest: HashMap<DeviceId, AddressRecord> = HashMap::new();
        let deadline = tokio::time::sleep(self.shared.config.resolve_timeout);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => break,
                rec = rx.recv() => match rec {
                    None => break,
                    Some(rec) => {
                        let keep = newest.get(&rec.peer.device).is_none_or(|old| old.issued <= rec.issued);
                        if keep {
                            newest.insert(rec.peer.device, rec);
                        }
                    }
                },
            }
        }
        newest.into_values().collect()
    }

    /// Remembers a device's certificates (if they chain), so signals can be sealed to it
    /// without a lookup.
    pub fn learn(&self, device: &DeviceCert, account: &AccountCert) {
        self.shared.learn(device, account)
    }

    /// Signs and seals `signal` to every known device of `to` (looked up in the DHT if none is
    /// known) and puts it under `to`'s signal key. Returns how many devices it was sealed to.
    pub async fn send(&self, to: Destination, signal: Signal) -> Result<usize, DhtError> {
        let mut targets = self.shared.known(to);
        // A device that just started may not be resolvable yet (its first record is put
        // about a second after start): look it up a few times, backing off, before giving up.
        let mut pause = std::time::Duration::from_millis(250);
        for attempt in 0..5 {
            if !targets.is_empty() {
                break;
            }
            if attempt > 0 {
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            self.resolve_all(to).await;
            targets = self.shared.known(to);
        }
        if targets.is_empty() {
            return Err(DhtError::Unknown(to));
        }
        let key = signal_key(to);
        let mut puts = Vec::new();
        for cert in &targets {
            let mut id = [0u8; 16];
            rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut id);
            let sealed = seal::seal(&self.shared.me, cert, &signal, unix_now(), id)?;
            puts.push(self.runner.put(key, &sealed));
        }
        for put in puts {
            let ok = put.await.unwrap_or(false);
            tracing::debug!(target: LOG, ?to, kind = %signal.kind, ok, "signal put");
        }
        Ok(targets.len())
    }

    async fn receive(self, to: Destination, tx: mpsc::UnboundedSender<(Peer, Signal)>) {
        let mut listen = self.runner.listen(signal_key(to));
        let me = self.shared.me.device_cert.id();
        loop {
            let next = tokio::select! {
                next = listen.next() => next,
                _ = self.stopped() => return,
            };
            let Some((bytes, expired)) = next else { return };
            if expired || seal::recipient(&bytes) != Some(me) {
                continue;
            }
            let opened = match seal::open(&self.shared.me, &bytes, unix_now(), &|a| {
                self.shared.crls_of(a)
            }) {
                Ok(o) => o,
                Err(e) => {
                    tracing::info!(target: LOG, ?to, error = %e, "signal refused");
                    continue;
                }
            };
            let fresh = lock(&self.shared.seen).accept(opened.id, opened.sent, unix_now());
            if let Err(e) = fresh {
                tracing::debug!(target: LOG, from = %opened.from.device, reason = %e, "signal ignored");
                continue;
            }
            self.shared.learn(&opened.device_cert, &opened.account_cert);
            tracing::debug!(target: LOG, from = %opened.from.device, kind = %opened.signal.kind, "signal received");
            if tx.send((opened.from, opened.signal)).is_err() {
                return;
            }
        }
    }

    /// Resolves once [`Dht::shutdown`] was called.
    async fn stopped(&self) {
        let mut rx = self.shared.stop.subscribe();
        let _ = rx.wait_for(|stop| *stop).await;
    }

    /// Stops publishing and listening, and shuts the runner down; it is deleted once the
    /// background tasks have let go of it.
    pub async fn shutdown(self) {
        self.shared.stop.send_replace(true);
        let _ = tokio::time::timeout(Duration::from_secs(2), self.runner.shutdown()).await;
    }

    /// The node id, bootstrap reachability (pinged now) and published addresses.
    pub async fn status(&self) -> Status {
        let mut bootstrap = Vec::new();
        for b in &self.shared.config.bootstrap {
            let addr = b.to_socket_addrs().ok().and_then(|mut a| a.next());
            let ok = match addr {
                Some(addr) => tokio::time::timeout(Duration::from_secs(2), self.runner.ping(addr))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or(false),
                None => false,
            };
            bootstrap.push((b.clone(), ok));
        }
        Status {
            node_id: self.runner.node_id().to_string(),
            port: self.runner.port(),
            running: self.runner.is_running(),
            bootstrap,
            published: self.shared.published.borrow().clone(),
        }
    }
}

/// Discovery through the DHT: a device's (or account's) fresh, verified address records, and
/// this device's signed record kept published. Without bootstrap nodes there is no network to
/// ask, and `resolve` answers at once with nothing.
impl Discovery for Dht {
    fn resolve(&self, who: Destination) -> BoxFuture<'_, Vec<SocketAddr>> {
        Box::pin(async move {
            if self.shared.config.bootstrap.is_empty() {
                return Vec::new();
            }
            let mut addrs: Vec<SocketAddr> = Vec::new();
            for rec in self.resolve_all(who).await {
                for addr in rec.addrs {
                    tracing::debug!(target: LOG, device = %rec.peer.device, %addr, "located");
                    if !addrs.contains(&addr) {
                        addrs.push(addr);
                    }
                }
            }
            addrs
        })
    }

    fn publish(&self, addrs: Vec<SocketAddr>) {
        Dht::publish(self, addrs)
    }

    fn status(&self) -> BoxFuture<'_, serde_json::Value> {
        Box::pin(async move {
            let s = Dht::status(self).await;
            serde_json::json!({
                "enabled": true,
                "node_id": s.node_id,
                "port": s.port,
                "running": s.running,
                "bootstrap": s.bootstrap.iter()
                    .map(|(a, ok)| serde_json::json!({"addr": a, "answering": ok}))
                    .collect::<Vec<_>>(),
                "published": s.published,
            })
        })
    }
}

fn matches_destination(peer: &Peer, of: Destination) -> bool {
    match of {
        Destination::Device(d) => peer.device == d,
        Destination::Account(u) => peer.account == u,
    }
}

impl Shared {
    /// The CRLs of `account` the node knows ([`DhtConfig::crls`]).
    fn crls_of(&self, account: &AccountUri) -> Vec<Crl> {
        self.config
            .crls
            .as_ref()
            .map(|f| f(account))
            .unwrap_or_default()
    }

    fn learn(&self, device: &DeviceCert, account: &AccountCert) {
        if verify_device(account, device, &self.crls_of(&account.uri()), None).is_ok() {
            lock(&self.certs).insert(device.id(), (device.clone(), account.clone()));
        }
    }

    fn known(&self, to: Destination) -> Vec<DeviceCert> {
        lock(&self.certs)
            .iter()
            .filter(|(d, (_, a))| match to {
                Destination::Device(want) => **d == want,
                Destination::Account(u) => a.uri() == u,
            })
            .map(|(_, (d, _))| d.clone())
            .collect()
    }
}

impl Transport for Dht {
    fn open_channel<'a>(
        &'a self,
        device: DeviceId,
        _name: &'a str,
    ) -> BoxFuture<'a, Result<Box<dyn Channel>, TransportError>> {
        // The DHT carries signals only; channels go over QUIC (after a resolve).
        Box::pin(async move { Err(TransportError::Unreachable(device)) })
    }

    fn send_signal<'a>(
        &'a self,
        to: Destination,
        signal: Signal,
    ) -> BoxFuture<'a, Result<(), TransportError>> {
        Box::pin(async move {
            // Without bootstrap nodes there is no network to put the signal on: say so at once
            // rather than after a search that cannot succeed.
            if self.shared.config.bootstrap.is_empty() {
                return Err(TransportError::Other(
                    "the DHT has no bootstrap nodes: no network to send signals through".into(),
                ));
            }
            match self.send(to, signal).await {
                Ok(_) => Ok(()),
                Err(DhtError::Unknown(Destination::Device(d))) => {
                    Err(TransportError::Unreachable(d))
                }
                Err(e) => Err(TransportError::Other(e.to_string())),
            }
        })
    }

    fn next_incoming(&self) -> BoxFuture<'_, Option<Incoming>> {
        Box::pin(async move {
            let (from, signal) = self.shared.incoming.lock().await.recv().await?;
            Some(Incoming::Signal { from, signal })
        })
    }
}
