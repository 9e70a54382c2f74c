//! `swarm-chat serve`: this home's node as a library [`Host`] (QUIC, and the DHT as a second
//! transport and as discovery), and the control socket through which the other commands reach
//! it while it runs.
//!
//! What the node does (sync, merges, invitations kept as requests, addresses remembered and
//! redialled, refused devices) is the host's: see [`swarm_api::host`]. Here: composing it from
//! the home and the flags, and serving the control socket ([`crate::control`]): the library's
//! JSON-RPC methods and this app's own ([`crate::methods`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use serde_json::json;
use swarm_api::host::{Host, HostConfig, KnownCrls};
use swarm_api::storage::Storage;
use transport_quic::{QuicConfig, QuicTransport};

use crate::control;
use crate::methods::Methods;
use crate::App;

const LOG: &str = "swarm_chat::serve";

/// What `serve` was asked.
pub struct Options {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Peers to dial at start (and again while unreachable).
    pub peers: Vec<SocketAddr>,
    /// Connection attempts are given up after this long.
    pub connect_timeout: Duration,
    /// The DHT (`None`: `--no-dht`).
    pub dht: Option<crate::dht::DhtOptions>,
}

/// Runs the server until the process is killed.
pub fn run(app: &App, options: Options) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(app, options))
}

async fn serve(app: &App, options: Options) -> Result<()> {
    let id = app.home.identity()?;
    let backend = app.home.backend(app.backend)?;
    // The control socket first: a second server for this home stops here.
    let listener = control::bind(&app.home.dir)?;
    let storage: Arc<dyn Storage> = Arc::from(app.home.open_storage(backend)?);
    let me = id.into_local();
    let engine = app.engine()?;
    // Every CRL of our conversations (and our account's own) applies to every handshake,
    // address record and sealed signal: a device revoked by its account is refused there.
    let crls = Arc::new(
        KnownCrls::new(storage.clone(), engine.clone()).with(me.account.uri(), me.crl.clone()),
    )
    .lookup();
    let config = QuicConfig {
        connect_timeout: options.connect_timeout,
        crls: Some(crls.clone()),
        ..QuicConfig::default()
    };
    let (quic, listen) = QuicTransport::bind(options.listen, &me, config)
        .with_context(|| format!("cannot listen on {}", options.listen))?;
    let dht = match options.dht {
        // Without bootstrap nodes the DHT is optional: a runner that cannot start (no UDP
        // socket for it) only costs discovery, so the server runs on.
        Some(o) if o.bootstrap.is_empty() => crate::dht::start(&me, listen, o, &app.home.dir, crls)
            .inspect_err(|e| tracing::warn!(target: LOG, error = %crate::one_line(e), "no DHT"))
            .ok(),
        Some(o) => Some(crate::dht::start(&me, listen, o, &app.home.dir, crls)?),
        None => None,
    };
    let (uri, device) = (me.account.uri(), me.device.id());
    let mut builder = Host::builder(app.home.lib(), me)
        .storage(storage)
        .engine(engine)
        .transport(Arc::new(quic))
        .config(HostConfig {
            connect_timeout: options.connect_timeout,
            dial: options.peers,
            ..HostConfig::default()
        });
    if let Some(dht) = dht {
        let dht = Arc::new(dht);
        builder = builder.transport(dht.clone()).discovery(dht);
    }
    let host = builder.build()?;
    let methods = Arc::new(Methods {
        storage: host.storage().clone(),
        engine: host.engine().clone(),
    });
    let owner = control::owner(&app.home.dir)?;
    let socket = control::socket_path(&app.home.dir);
    app.out(
        json!({"listen": listen, "device": device, "uri": uri, "control": socket}),
        || format!("listening {listen} device {device}"),
    );
    tracing::info!(target: LOG, %listen, %device, backend = backend.name(), "serving");
    host.start();
    loop {
        let (stream, _) = listener
            .accept()
            .await
            .context("the control socket failed")?;
        let (host, methods) = (host.clone(), methods.clone());
        tokio::spawn(async move {
            control::serve_client(stream, owner, host, &*methods).await;
        });
    }
}
