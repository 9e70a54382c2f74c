//! An in-memory network for deterministic simulation (feature `sim`): many nodes, seeded
//! message loss, latency and partitions that a test scripts. Run it on a current-thread
//! tokio runtime with paused time (`#[tokio::test(start_paused = true)]`): latency is
//! virtual, so hundreds of peers and minutes of simulated time run in milliseconds and the
//! same seed gives the same run.
//!
//! This is an addition to the real transports (QUIC, DHT), never a replacement for their tests.

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::id::DeviceId;
use crate::traits::{
    BoxFuture, Channel, Destination, Incoming, Peer, Signal, Transport, TransportError,
};

/// How long a signal or channel to a [vanished](SimNetwork::set_vanished) device waits
/// before it fails (QUIC's default connect timeout).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// SplitMix64: a tiny seeded generator (no dependency, same sequence everywhere).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() as f64 / u64::MAX as f64) < p
    }
}

struct Net {
    inboxes: HashMap<DeviceId, (Peer, mpsc::UnboundedSender<Incoming>)>,
    /// Partition group of each device; devices talk only within a group.
    group: HashMap<DeviceId, u32>,
    /// Devices that answer nothing (a stalled peer).
    silent: HashMap<DeviceId, bool>,
    /// Devices that vanished without closing anything (see [`SimNetwork::set_vanished`]).
    vanished: HashSet<DeviceId>,
    /// Signals sent to one device, per (from, to), delivered or not.
    signal_attempts: HashMap<(DeviceId, DeviceId), u64>,
    latency: Duration,
    loss: f64,
    rng: Rng,
}

/// The simulated network.
#[derive(Clone)]
pub struct SimNetwork {
    net: Arc<Mutex<Net>>,
}

impl SimNetwork {
    /// A network with no latency, no loss, no partition.
    pub fn new(seed: u64) -> Self {
        Self {
            net: Arc::new(Mutex::new(Net {
                inboxes: HashMap::new(),
                group: HashMap::new(),
                silent: HashMap::new(),
                vanished: HashSet::new(),
                signal_attempts: HashMap::new(),
                latency: Duration::ZERO,
                loss: 0.0,
                rng: Rng::new(seed),
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Net> {
        self.net.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Attaches a device; returns its transport.
    pub fn join(&self, peer: Peer) -> SimTransport {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut n = self.lock();
        n.inboxes.insert(peer.device, (peer, tx));
        n.group.insert(peer.device, 0);
        SimTransport {
            net: self.clone(),
            me: peer,
            rx: tokio::sync::Mutex::new(rx),
        }
    }

    /// Latency of every signal and channel opening.
    pub fn set_latency(&self, d: Duration) {
        self.lock().latency = d;
    }

    /// Probability that a signal is lost.
    pub fn set_loss(&self, p: f64) {
        self.lock().loss = p;
    }

    /// Splits the network: devices in different groups cannot reach each other. Devices not
    /// listed stay in group 0.
    pub fn partition(&self, groups: &[Vec<DeviceId>]) {
        let mut n = self.lock();
        for g in n.group.values_mut() {
            *g = 0;
        }
        for (i, devices) in groups.iter().enumerate() {
            for d in devices {
                n.group.insert(*d, i as u32 + 1);
            }
        }
    }

    /// Heals every partition.
    pub fn heal(&self) {
        let mut n = self.lock();
        for g in n.group.values_mut() {
            *g = 0;
        }
    }

    /// Makes a device accept channels but never answer on them (or answer again).
    pub fn set_silent(&self, device: DeviceId, silent: bool) {
        self.lock().silent.insert(device, silent);
    }

    /// Makes a device vanish as a killed process behind a silent network does: a signal or
    /// a channel to it waits [`CONNECT_TIMEOUT`], then fails as unreachable (a real
    /// transport's connect timeout). `false` brings it back.
    pub fn set_vanished(&self, device: DeviceId, vanished: bool) {
        let mut n = self.lock();
        if vanished {
            n.vanished.insert(device);
        } else {
            n.vanished.remove(&device);
        }
    }

    /// How many signals `from` sent to the device `to` (delivered, lost or failed).
    pub fn signal_attempts(&self, from: DeviceId, to: DeviceId) -> u64 {
        self.lock()
            .signal_attempts
            .get(&(from, to))
            .copied()
            .unwrap_or(0)
    }

    /// A seeded random number from the network's generator.
    pub fn random(&self, n: u64) -> u64 {
        self.lock().rng.below(n)
    }

    fn reachable(n: &Net, a: &DeviceId, b: &DeviceId) -> bool {
        n.inboxes.contains_key(b) && n.group.get(a) == n.group.get(b)
    }
}

/// One end of a simulated connection: reads and writes fail once a partition separates its
/// two devices (a cut link), as an established connection would, instead of carrying bytes
/// across the partition.
struct Link {
    net: SimNetwork,
    ends: (DeviceId, DeviceId),
    inner: tokio::io::DuplexStream,
}

impl Link {
    fn cut(&self) -> Option<std::io::Error> {
        let n = self.net.lock();
        (!SimNetwork::reachable(&n, &self.ends.0, &self.ends.1))
            .then(|| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "partitioned"))
    }
}

impl tokio::io::AsyncRead for Link {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if let Some(e) = self.cut() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Link {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if let Some(e) = self.cut() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// One device's end of the simulated network.
pub struct SimTransport {
    net: SimNetwork,
    me: Peer,
    rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<Incoming>>,
}

impl Transport for SimTransport {
    fn open_channel<'a>(
        &'a self,
        device: DeviceId,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Box<dyn Channel>, TransportError>> {
        Box::pin(async move {
            if self.net.lock().vanished.contains(&device) {
                tokio::time::sleep(CONNECT_TIMEOUT).await;
                return Err(TransportError::Unreachable(device));
            }
            let (latency, tx, silent) = {
                let n = self.net.lock();
                if !SimNetwork::reachable(&n, &self.me.device, &device) {
                    return Err(TransportError::Unreachable(device));
                }
                let tx = n.inboxes.get(&device).map(|(_, tx)| tx.clone());
                (
                    n.latency,
                    tx,
                    n.silent.get(&device).copied().unwrap_or(false),
                )
            };
            let tx = tx.ok_or(TransportError::Unreachable(device))?;
            tokio::time::sleep(latency).await;
            // A partition made while the connection was on its way cuts it too.
            if !SimNetwork::reachable(&self.net.lock(), &self.me.device, &device) {
                return Err(TransportError::Unreachable(device));
            }
            let (ours, theirs) = tokio::io::duplex(256 * 1024);
            let link = |inner| Link {
                net: self.net.clone(),
                ends: (self.me.device, device),
                inner,
            };
            let (ours, theirs) = (link(ours), link(theirs));
            if silent {
                // Accept the connection and never answer: keep the other end alive forever.
                std::mem::forget(theirs);
            } else {
                tx.send(Incoming::Channel {
                    from: self.me,
                    name: name.to_owned(),
                    stream: Box::new(theirs),
                })
                .map_err(|_| TransportError::Unreachable(device))?;
            }
            Ok(Box::new(ours) as Box<dyn Channel>)
        })
    }

    fn send_signal<'a>(
        &'a self,
        to: Destination,
        signal: Signal,
    ) -> BoxFuture<'a, Result<(), TransportError>> {
        Box::pin(async move {
            if let Destination::Device(d) = to {
                let vanished = {
                    let mut n = self.net.lock();
                    *n.signal_attempts.entry((self.me.device, d)).or_default() += 1;
                    n.vanished.contains(&d)
                };
                if vanished {
                    tokio::time::sleep(CONNECT_TIMEOUT).await;
                    return Err(TransportError::Unreachable(d));
                }
            }
            let targets: Vec<(DeviceId, mpsc::UnboundedSender<Incoming>)>;
            let latency;
            {
                let mut n = self.net.lock();
                latency = n.latency;
                let candidates: Vec<DeviceId> = match to {
                    Destination::Device(d) => vec![d],
                    Destination::Account(a) => n
                        .inboxes
                        .values()
                        .filter(|(p, _)| p.account == a)
                        .map(|(p, _)| p.device)
                        .collect(),
                };
                let mut t = Vec::new();
                for d in candidates {
                    if d == self.me.device
                        || n.vanished.contains(&d)
                        || !SimNetwork::reachable(&n, &self.me.device, &d)
                    {
                        continue;
                    }
                    let loss = n.loss;
                    if n.rng.chance(loss) {
                        continue;
                    }
                    if let Some((_, tx)) = n.inboxes.get(&d) {
                        t.push((d, tx.clone()));
                    }
                }
                targets = t;
            }
            let from = self.me;
            for (_, tx) in targets {
                let signal = signal.clone();
                if latency.is_zero() {
                    let _ = tx.send(Incoming::Signal { from, signal });
                } else {
                    tokio::spawn(async move {
                        tokio::time::sleep(latency).await;
                        let _ = tx.send(Incoming::Signal { from, signal });
                    });
                }
            }
            Ok(())
        })
    }

    fn next_incoming(&self) -> BoxFuture<'_, Option<Incoming>> {
        Box::pin(async move { self.rx.lock().await.recv().await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::AccountUri;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn peer(n: u8) -> Peer {
        Peer {
            device: DeviceId::from_bytes([n; 32]),
            account: AccountUri::from_bytes([n; 20]),
        }
    }

    /// A partition cuts a connection opened before it: neither end carries another byte
    /// (before, an in-flight fetch crossed the partition and made a scenario test flaky).
    #[tokio::test(start_paused = true)]
    async fn a_partition_cuts_established_connections() {
        let net = SimNetwork::new(1);
        let (a, b) = (peer(1), peer(2));
        let (ta, tb) = (net.join(a), net.join(b));
        let mut ours = ta.open_channel(b.device, "x").await.unwrap();
        let Some(Incoming::Channel { mut stream, .. }) = tb.next_incoming().await else {
            panic!("no channel");
        };
        ours.write_all(b"before").await.unwrap();
        let mut buf = [0u8; 6];
        stream.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"before");

        net.partition(&[vec![a.device], vec![b.device]]);
        let e = ours.write_all(b"after").await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe);
        let e = stream.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe);
        assert!(matches!(
            ta.open_channel(b.device, "x").await,
            Err(TransportError::Unreachable(_))
        ));

        net.heal();
        assert!(ta.open_channel(b.device, "x").await.is_ok());
    }
}
