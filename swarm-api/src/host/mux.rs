//! [`Mux`]: the one [`Transport`] the node sees, made of the host's transports and its
//! discovery service.
//!
//! - Channels: each transport in order; when none reaches the device, discovery is asked
//!   where it is, the addresses are handed to every transport, and each is tried again.
//! - Signals: each transport in order until one takes it; invitations go through all of them
//!   (other devices of the account may be reachable only one way).
//! - Incoming: every transport's channels and signals, merged; invitations are taken out for
//!   the host (a bounded queue: a flood past it is dropped, not buffered).
//! - Refused devices (`block`) see nothing: their channels and signals are dropped and none
//!   are sent to them.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::books::INVITE;
use crate::id::DeviceId;
use crate::traits::{
    BoxFuture, Channel, Destination, Discovery, Incoming, Peer, Signal, Transport, TransportError,
};

const LOG: &str = "swarm_api::host";
/// Invitations waiting for the host; more are dropped until it catches up.
pub(crate) const INVITE_QUEUE: usize = 256;

pub(crate) struct Mux {
    transports: Vec<Arc<dyn Transport>>,
    discovery: Option<Arc<dyn Discovery>>,
    blocked: Mutex<HashSet<DeviceId>>,
    invites: mpsc::Sender<(Peer, Signal)>,
    incoming_tx: mpsc::Sender<Incoming>,
    incoming: tokio::sync::Mutex<mpsc::Receiver<Incoming>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Mux {
    pub(crate) fn new(
        transports: Vec<Arc<dyn Transport>>,
        discovery: Option<Arc<dyn Discovery>>,
        blocked: HashSet<DeviceId>,
        invites: mpsc::Sender<(Peer, Signal)>,
    ) -> Self {
        let (incoming_tx, rx) = mpsc::channel(64);
        Self {
            transports,
            discovery,
            blocked: Mutex::new(blocked),
            invites,
            incoming_tx,
            incoming: tokio::sync::Mutex::new(rx),
        }
    }

    /// Starts one task per transport moving what it receives into the merged queue.
    pub(crate) fn pump(&self) -> Vec<tokio::task::JoinHandle<()>> {
        self.transports
            .iter()
            .map(|t| {
                let t = t.clone();
                let tx = self.incoming_tx.clone();
                tokio::spawn(async move {
                    while let Some(i) = t.next_incoming().await {
                        if tx.send(i).await.is_err() {
                            return;
                        }
                    }
                })
            })
            .collect()
    }

    pub(crate) fn transports(&self) -> &[Arc<dyn Transport>] {
        &self.transports
    }

    pub(crate) fn discovery(&self) -> Option<&Arc<dyn Discovery>> {
        self.discovery.as_ref()
    }

    pub(crate) fn is_blocked(&self, device: &DeviceId) -> bool {
        lock(&self.blocked).contains(device)
    }

    pub(crate) fn blocked(&self) -> HashSet<DeviceId> {
        lock(&self.blocked).clone()
    }

    pub(crate) fn set_blocked(&self, device: DeviceId, blocked: bool) {
        let mut b = lock(&self.blocked);
        if blocked {
            b.insert(device);
        } else {
            b.remove(&device);
        }
    }

    /// Devices connected through any transport, minus refused ones.
    pub(crate) fn connected(&self) -> Vec<Peer> {
        let mut seen = HashSet::new();
        self.transports
            .iter()
            .flat_map(|t| t.connected())
            .filter(|p| !self.is_blocked(&p.device) && seen.insert(p.device))
            .collect()
    }

    pub(crate) fn address_of(&self, device: &DeviceId) -> Option<std::net::SocketAddr> {
        self.transports.iter().find_map(|t| t.address_of(device))
    }

    pub(crate) fn add_address(&self, to: Destination, addr: std::net::SocketAddr) {
        for t in &self.transports {
            t.add_address(to, addr);
        }
    }

    /// Dials `addr` with the first transport that dials addresses.
    pub(crate) async fn dial(&self, addr: std::net::SocketAddr) -> Result<Peer, TransportError> {
        let mut last = TransportError::Unsupported("dialling an address");
        for t in &self.transports {
            match t.dial(addr).await {
                Ok(p) => return Ok(p),
                Err(TransportError::Unsupported(_)) => {}
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    async fn try_open(
        &self,
        device: DeviceId,
        name: &str,
    ) -> Result<Box<dyn Channel>, TransportError> {
        let mut last = TransportError::Unreachable(device);
        for t in &self.transports {
            match t.open_channel(device, name).await {
                Ok(c) => return Ok(c),
                Err(e @ (TransportError::Unreachable(_) | TransportError::Other(_))) => last = e,
                Err(TransportError::Unsupported(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }
}

impl Transport for Mux {
    fn open_channel<'a>(
        &'a self,
        device: DeviceId,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Box<dyn Channel>, TransportError>> {
        Box::pin(async move {
            if self.is_blocked(&device) {
                return Err(TransportError::Unreachable(device));
            }
            let first = self.try_open(device, name).await;
            let Some(discovery) = &self.discovery else {
                return first;
            };
            match first {
                Err(TransportError::Unreachable(_) | TransportError::Other(_)) => {
                    let addrs = discovery.resolve(Destination::Device(device)).await;
                    if addrs.is_empty() {
                        return Err(TransportError::Unreachable(device));
                    }
                    for addr in addrs {
                        tracing::debug!(target: LOG, %device, %addr, "located");
                        self.add_address(Destination::Device(device), addr);
                    }
                    self.try_open(device, name).await
                }
                other => other,
            }
        })
    }

    fn send_signal<'a>(
        &'a self,
        to: Destination,
        signal: Signal,
    ) -> BoxFuture<'a, Result<(), TransportError>> {
        Box::pin(async move {
            if let Destination::Device(d) = to {
                if self.is_blocked(&d) {
                    return Err(TransportError::Unreachable(d));
                }
            }
            let every = signal.kind == INVITE;
            let mut result = Err(TransportError::Closed);
            for t in &self.transports {
                match t.send_signal(to, signal.clone()).await {
                    Ok(()) if !every => return Ok(()),
                    Ok(()) => result = Ok(()),
                    Err(e) => {
                        if result.is_err() {
                            result = Err(e)
                        }
                    }
                }
            }
            result
        })
    }

    fn next_incoming(&self) -> BoxFuture<'_, Option<Incoming>> {
        Box::pin(async move {
            let mut rx = self.incoming.lock().await;
            loop {
                let incoming = rx.recv().await?;
                let from = match &incoming {
                    Incoming::Channel { from, .. } | Incoming::Signal { from, .. } => *from,
                };
                if self.is_blocked(&from.device) {
                    tracing::debug!(target: LOG, device = %from.device, "refused: blocked device");
                    continue;
                }
                match incoming {
                    Incoming::Signal { from, signal } if signal.kind == INVITE => {
                        if self.invites.try_send((from, signal)).is_err() {
                            tracing::info!(target: LOG, device = %from.device, "invitation dropped: too many waiting");
                        }
                    }
                    other => return Some(other),
                }
            }
        })
    }

    fn add_address(&self, to: Destination, addr: std::net::SocketAddr) -> bool {
        Mux::add_address(self, to, addr);
        true
    }

    fn connected(&self) -> Vec<Peer> {
        Mux::connected(self)
    }

    fn address_of(&self, device: &DeviceId) -> Option<std::net::SocketAddr> {
        Mux::address_of(self, device)
    }
}
