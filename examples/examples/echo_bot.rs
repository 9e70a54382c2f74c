//! An app built only on the swarm library: it accepts every invitation it receives and answers
//! each text message with `echo: <text>`.
//!
//! ```text
//! cargo run -p swarm-examples --example echo_bot -- --home DIR --listen ADDR [--peer ADDR]...
//!     [--dht-bootstrap HOST:PORT]...
//! ```
//! It prints one JSON line `{"uri", "device", "listen"}` once it runs (invite the `uri`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use clap::Parser;
use swarm_api::body::Body;
use swarm_api::host::{Home, Host, HostConfig, KnownCrls};
use swarm_api::node::Event;
use swarm_api::validate::Limits;
use tokio::sync::broadcast::error::RecvError;
use transport_dht::{Dht, DhtConfig};
use transport_quic::{QuicConfig, QuicTransport};

#[derive(Parser)]
struct Args {
    /// Where the bot keeps its identity, conversations and state.
    #[arg(long)]
    home: PathBuf,
    /// The UDP address QUIC listens on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Peers to dial (again while unreachable).
    #[arg(long)]
    peer: Vec<SocketAddr>,
    /// DHT bootstrap nodes (`HOST:PORT`); without any, no DHT runs.
    #[arg(long)]
    dht_bootstrap: Vec<String>,
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("SWARM_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let home = Home::new(&args.home);
    let id = match home.has_identity() {
        true => home.identity()?,
        false => home.create_identity("echo bot")?,
    };
    let me = id.into_local();
    let storage = Arc::new(swarm_git::GitStorage::open(
        args.home.join("conversations"),
    )?);
    let plugins = Arc::new(swarm_plugins::Host::new()?);
    let engine = Arc::new(swarm_plugins::engine(
        plugins,
        Limits::default(),
        Vec::new(),
    )?);
    // Devices revoked by their account (in any of our conversations) are refused by both
    // transports.
    let crls = Arc::new(
        KnownCrls::new(storage.clone(), engine.clone()).with(me.account.uri(), me.crl.clone()),
    )
    .lookup();
    let quic_config = QuicConfig {
        crls: Some(crls.clone()),
        ..QuicConfig::default()
    };
    let (quic, listen) = QuicTransport::bind(args.listen, &me, quic_config)
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let dht = match args.dht_bootstrap.is_empty() {
        true => None,
        false => Some(Arc::new(Dht::start(
            (&me).into(),
            DhtConfig {
                bootstrap: args.dht_bootstrap,
                crls: Some(crls),
                ..DhtConfig::default()
            },
        )?)),
    };
    let peer = me.peer();
    let config = HostConfig {
        dial: args.peer,
        ..HostConfig::default()
    };
    let mut builder = Host::builder(home, me)
        .storage(storage)
        .engine(engine)
        .transport(Arc::new(quic))
        .config(config);
    if let Some(dht) = dht {
        builder = builder.transport(dht.clone()).discovery(dht);
    }
    let host = builder.build()?;
    let mut events = host.events();
    host.start();
    println!(
        "{}",
        serde_json::json!({"uri": peer.account, "device": peer.device, "listen": listen})
    );
    // Invitations that arrived while the bot was not running.
    for request in host.requests()? {
        tokio::spawn(join(host.clone(), request.id));
    }
    loop {
        match events.recv().await {
            Ok(Event::InvitationReceived { conv, .. }) => {
                tokio::spawn(join(host.clone(), conv));
            }
            Ok(Event::MessageReceived {
                conv,
                body: Body::Text(t),
                ..
            }) if !t.body.starts_with("echo: ") => {
                let host = host.clone();
                tokio::spawn(async move {
                    if let Err(e) = host.send(conv, &format!("echo: {}", t.body)).await {
                        tracing::warn!(%conv, error = %e, "cannot answer");
                    }
                });
            }
            Ok(_) | Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => return Ok(()),
        }
    }
}

async fn join(host: Host, conv: swarm_api::ConversationId) {
    match host.join(conv, None).await {
        Ok(_) => tracing::info!(%conv, "joined"),
        Err(e) => tracing::warn!(%conv, error = %e, "cannot join"),
    }
}
