//! `swarm-chat peer …`: peers' addresses remembered in the home (`<home>/peers.json`): the
//! ones given with `swarm-chat peer add DEVICE_OR_URI ADDR` and every address a running
//! `swarm-chat serve` learns from an authenticated connection; and the devices this node
//! refuses (`swarm-chat peer block DEVICE`). The book itself is the library's
//! ([`swarm_api::host::PeerBook`]).

use std::net::SocketAddr;

use anyhow::Result;
use serde_json::json;
use swarm_api::host::{PeerBook, Source};
use swarm_api::id::{DeviceId, Target};

use crate::App;

impl App {
    /// `swarm-chat peer add DEVICE_OR_URI ADDR`.
    pub(crate) fn peer_add(&self, who: &str, addr: &str) -> Result<()> {
        let who: Target = who.parse().map_err(|e| {
            anyhow::anyhow!("invalid device id or account URI {who:?}: {e} (64 or 40 hex chars)")
        })?;
        let addr: SocketAddr = addr
            .parse()
            .map_err(|e| anyhow::anyhow!("invalid address {addr:?}: {e} (e.g. 127.0.0.1:4433)"))?;
        let changed = PeerBook::update(&self.home.lib(), |b| {
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
        let book = PeerBook::load(&self.home.lib())?;
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
        let changed = PeerBook::update(&self.home.lib(), |b| {
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
