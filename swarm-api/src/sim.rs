//! An in-memory network for deterministic simulation (feature `sim`): many nodes, seeded
//! message loss, latency and partitions that a test scripts. Run it on a current-thread
//! tokio runtime with paused time (`#[tokio::test(start_paused = true)]`): latency is
//! virtual, so hundreds of peers and minutes of simulated time run in milliseconds and the
//! same seed gives the same run.
//!
//! This is an addition to the real transports (QUIC, DHT), never a replacement for their tests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::id::DeviceId;
use crate::traits::{
    BoxFuture, Channel, Destination, Incoming, Peer, Signal, Transport, TransportError,
};

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

    /// A seeded random number from the network's generator.
    pub fn random(&self, n: u64) -> u64 {
        self.lock().rng.below(n)
    }

    fn reachable(n: &Net, a: &DeviceId, b: &DeviceId) -> bool {
        n.inboxes.contains_key(b) && n.group.get(a) == n.group.get(b)
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
            let (ours, theirs) = tokio::io::duplex(256 * 1024);
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
                    if d == self.me.device || !SimNetwork::reachable(&n, &self.me.device, &d) {
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
