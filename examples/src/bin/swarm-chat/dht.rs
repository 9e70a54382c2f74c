//! The DHT in `swarm-chat serve` (transport-dht): this device publishes where it listens,
//! devices are found by device id or account URI, and signals (invitations, commit
//! notifications) reach devices that are not connected, sealed to them.
//!
//! The host ([`swarm_api::host`]) uses it as a second transport (signals that QUIC cannot
//! deliver, invitations always) and as its discovery service (a device no transport reaches
//! is resolved, its addresses handed to QUIC, and the open retried).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

use anyhow::{Context as _, Result};
use serde_json::json;
use swarm_api::node::LocalIdentity;
use swarm_api::traits::CrlLookup;
use transport_dht::{Dht, DhtConfig, Identity};

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
    crls: CrlLookup,
) -> Result<Dht> {
    let dht = Dht::start(
        Identity::from(me),
        DhtConfig {
            port: options.port,
            bootstrap: options.bootstrap,
            state_dir: Some(home.join("dht")),
            crls: Some(crls),
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

/// The text form of the DHT's status (`Discovery::status` of transport-dht).
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
