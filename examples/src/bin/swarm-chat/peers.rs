//! Peers' addresses remembered in the home (`<home>/peers.json`): the ones given with
//! `swarm-chat peer add DEVICE_OR_URI ADDR` and every address a running `swarm-chat serve`
//! learns from an authenticated connection; and the devices this node refuses
//! (`swarm-chat peer block DEVICE`).
//!
//! Writers in one process serialise on a lock; while a server runs, the other commands go
//! through it, so it is the only writer.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Mutex;

use anyhow::Result;
use serde::{Deserialize, Serialize};
use serde_json::json;
use swarm_api::id::{DeviceId, Target};
use swarm_api::traits::Destination;

use crate::home::Home;
use crate::App;

const FILE: &str = "peers.json";
static LOCK: Mutex<()> = Mutex::new(());

/// How an address became known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// `swarm-chat peer add`.
    Manual,
    /// An authenticated connection.
    Learned,
}

/// One remembered address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerEntry {
    /// A device (64 hex) or an account (40 hex).
    pub who: Target,
    /// Where it listens.
    pub addr: SocketAddr,
    /// How it became known.
    pub source: Source,
    /// When (Unix seconds).
    pub updated: i64,
}

/// The contents of `peers.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct PeerBook {
    /// Remembered addresses (one per device or account and address).
    #[serde(default)]
    pub peers: Vec<PeerEntry>,
    /// Devices whose connections, channels and signals are refused.
    #[serde(default)]
    pub blocked: BTreeSet<DeviceId>,
}

/// Where a signal to `who` goes.
pub fn destination(who: Target) -> Destination {
    match who {
        Target::Account(a) => Destination::Account(a),
        Target::Device(d) => Destination::Device(d),
    }
}

impl PeerBook {
    /// Loads the book of `home`.
    pub fn load(home: &Home) -> Result<Self> {
        home.read_json(FILE)
    }

    /// Loads, changes and saves the book under the process-wide lock; returns what `f`
    /// returned.
    pub fn update<R>(home: &Home, f: impl FnOnce(&mut PeerBook) -> R) -> Result<R> {
        home.update_json(FILE, &LOCK, f)
    }

    /// Records `addr` for `who`. A device has one address (the newest wins); an account
    /// may have several. A learned address never demotes a manual entry. Returns whether
    /// anything changed.
    pub fn remember(&mut self, who: Target, addr: SocketAddr, source: Source, now: i64) -> bool {
        if let Some(e) = self
            .peers
            .iter_mut()
            .find(|e| e.who == who && (e.addr == addr || matches!(who, Target::Device(_))))
        {
            if e.addr == addr && (e.source == source || e.source == Source::Manual) {
                return false;
            }
            e.addr = addr;
            if source == Source::Manual {
                e.source = Source::Manual;
            }
            e.updated = now;
            return true;
        }
        self.peers.push(PeerEntry {
            who,
            addr,
            source,
            updated: now,
        });
        true
    }
}

impl App {
    /// `swarm-chat peer add DEVICE_OR_URI ADDR`.
    pub(crate) fn peer_add(&self, who: &str, addr: &str) -> Result<()> {
        let who: Target = who.parse().map_err(|e| {
            anyhow::anyhow!("invalid device id or account URI {who:?}: {e} (64 or 40 hex chars)")
        })?;
        let addr: SocketAddr = addr
            .parse()
            .map_err(|e| anyhow::anyhow!("invalid address {addr:?}: {e} (e.g. 127.0.0.1:4433)"))?;
        let changed = PeerBook::update(&self.home, |b| {
            b.remember(who, addr, Source::Manual, crate::now_secs())
        })?;
        self.out(
            json!({"peer": who, "addr": addr, "changed": changed}),
            || format!("{who} {addr}"),
        );
        Ok(())
    }

    /// `swarm-chat peer list`.
    pub(crate) fn peer_list(&self) -> Result<()> {
        let book = PeerBook::load(&self.home)?;
        self.out(
            json!({"peers": book.peers, "blocked": book.blocked}),
            || {
                let mut lines: Vec<String> = book
                    .peers
                    .iter()
                    .map(|e| {
                        let kind = match e.who {
                            Target::Account(_) => "account",
                            Target::Device(_) => "device",
                        };
                        let source = match e.source {
                            Source::Manual => "manual",
                            Source::Learned => "learned",
                        };
                        format!("{kind} {} {} {source}", e.who, e.addr)
                    })
                    .collect();
                lines.extend(book.blocked.iter().map(|d| format!("blocked {d}")));
                lines.join("\n")
            },
        );
        Ok(())
    }

    /// `swarm-chat peer block|unblock DEVICE`.
    pub(crate) fn peer_block(&self, device: &str, block: bool) -> Result<()> {
        let device: DeviceId = device
            .parse()
            .map_err(|e| anyhow::anyhow!("invalid device id {device:?}: {e}"))?;
        let changed = PeerBook::update(&self.home, |b| {
            if block {
                b.blocked.insert(device)
            } else {
                b.blocked.remove(&device)
            }
        })?;
        self.out(
            json!({"device": device, "blocked": block, "changed": changed}),
            || format!("{} {device}", if block { "blocked" } else { "unblocked" }),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(n: u8) -> Target {
        Target::Device(format!("{:064x}", n).parse().expect("device id"))
    }

    #[test]
    fn a_device_keeps_its_newest_address_and_manual_entries_stay_manual() {
        let mut b = PeerBook::default();
        let (a1, a2): (SocketAddr, SocketAddr) = (
            "127.0.0.1:1".parse().expect("addr"),
            "127.0.0.1:2".parse().expect("addr"),
        );
        assert!(b.remember(dev(1), a1, Source::Manual, 1));
        assert!(!b.remember(dev(1), a1, Source::Learned, 2), "nothing new");
        assert_eq!(b.peers[0].source, Source::Manual);
        assert!(b.remember(dev(1), a2, Source::Learned, 3));
        assert_eq!(b.peers.len(), 1);
        assert_eq!(b.peers[0].addr, a2);
        let acc = Target::Account(
            "0123456789abcdef0123456789abcdef01234567"
                .parse()
                .expect("uri"),
        );
        assert!(b.remember(acc, a1, Source::Manual, 4));
        assert!(b.remember(acc, a2, Source::Manual, 5));
        assert_eq!(b.peers.len(), 3, "an account may list several addresses");
    }

    #[test]
    fn the_book_survives_a_round_trip_and_a_missing_file_is_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = Home::new(dir.path().to_path_buf());
        assert!(PeerBook::load(&home).expect("load").peers.is_empty());
        PeerBook::update(&home, |b| {
            b.remember(
                dev(7),
                "127.0.0.1:9".parse().expect("addr"),
                Source::Learned,
                1,
            );
            b.blocked.insert(match dev(8) {
                Target::Device(d) => d,
                Target::Account(_) => unreachable!("a device"),
            });
        })
        .expect("update");
        let b = PeerBook::load(&home).expect("load");
        assert_eq!(b.peers.len(), 1);
        assert_eq!(b.blocked.len(), 1);
        std::fs::write(dir.path().join(FILE), "{not json").expect("write");
        assert!(
            PeerBook::load(&home).is_err(),
            "a damaged file is an error, not a panic"
        );
    }
}
