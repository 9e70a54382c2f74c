//! The DHT in `swarm-chat serve` (transport-dht): this device publishes where it listens,
//! devices are found by device id or account URI, and signals (invitations, commit
//! notifications) reach devices that are not connected, sealed to them.
//!
//! - Channels: when QUIC knows no address for a device (or cannot reach the known one), the
//!   device is resolved in the DHT, its addresses are handed to QUIC, and the open is retried.
//! - Signals: sent over QUIC when connected; otherwise (and for invitations, always also)
//!   through the DHT. Signals received from the DHT go the same way as QUIC ones.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

use anyhow::{Context as _, Result};
use serde_json::json;
use swarm_api::node::LocalIdentity;
use swarm_api::traits::Destination;
use swarm_api::DeviceId;
use transport_dht::{Dht, DhtConfig, Identity};
use transport_quic::QuicTransport;

const LOG: &str = "swarm_chat::dht";

/// `serve`'s DHT options.
pub struct DhtOptions {
    /// `--dht-bootstrap HOST:PORT`s.
    pub bootstrap: Vec<String>,
    /// `--dht-port`.
    pub port: u16,
}

/// Starts the DHT and publishes `listen` (an unspecified IP is published as loopback:
/// without a public address to announce, only local peers could use it anyway). The DHT
/// keeps its state (the signals already received) under `home/dht`.
pub fn start(
    me: &LocalIdentity,
    listen: SocketAddr,
    options: DhtOptions,
    home: &Path,
) -> Result<Dht> {
    let dht = Dht::start(
        Identity::from(me),
        DhtConfig {
            port: options.port,
            bootstrap: options.bootstrap,
            state_dir: Some(home.join("dht")),
            ..DhtConfig::default()
        },
    )
    .context("cannot start the DHT")?;
    let mut published = listen;
    if published.ip().is_unspecified() {
        published.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    dht.publish(vec![published]);
    Ok(dht)
}

/// Looks `device` up in the DHT and tells QUIC where it listens; whether any address was found.
pub async fn locate(dht: &Dht, quic: &QuicTransport, device: DeviceId) -> bool {
    let records = dht.resolve_all(Destination::Device(device)).await;
    let mut found = false;
    for rec in records {
        for addr in rec.addrs {
            tracing::debug!(target: LOG, %device, %addr, "located through the DHT");
            quic.add_peer(Destination::Device(device), addr);
            found = true;
        }
    }
    found
}

/// `swarm-chat dht status` as JSON.
pub async fn status_json(dht: Option<&Dht>) -> serde_json::Value {
    match dht {
        None => json!({"enabled": false}),
        Some(dht) => {
            let s = dht.status().await;
            json!({
                "enabled": true,
                "node_id": s.node_id,
                "port": s.port,
                "running": s.running,
                "bootstrap": s.bootstrap.iter().map(|(a, ok)| json!({"addr": a, "answering": ok})).collect::<Vec<_>>(),
                "published": s.published,
            })
        }
    }
}

/// The text form of [`status_json`].
pub fn status_text(v: &serde_json::Value) -> String {
    if v["enabled"] != json!(true) {
        return "DHT disabled (--no-dht)\n".into();
    }
    let mut out = format!(
        "node id {}\nport {}\nrunning {}\n",
        v["node_id"].as_str().unwrap_or(""),
        v["port"],
        v["running"]
    );
    for b in v["bootstrap"].as_array().into_iter().flatten() {
        let state = if b["answering"] == json!(true) {
            "answering"
        } else {
            "not answering"
        };
        out += &format!("bootstrap {} {state}\n", b["addr"].as_str().unwrap_or(""));
    }
    for a in v["published"].as_array().into_iter().flatten() {
        out += &format!("published {}\n", a.as_str().unwrap_or(""));
    }
    out
}
