//! `swarm-chat serve`: this home's node as a library [`Host`] (QUIC, and the DHT as a second
//! transport and as discovery), and the control socket through which the other commands reach
//! it while it runs.
//!
//! What the node does (sync, merges, invitations kept as requests, addresses remembered and
//! redialled, refused devices) is the host's: see [`swarm_api::host`]. Here: composing it from
//! the home and the flags, and serving the control socket. Commands on the socket run the
//! same code as without a server, on the server's storage; afterwards every conversation whose
//! head moved is announced, an invitation is sent, or `peers.json` is taken again.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Parser as _;
use serde_json::json;
use swarm_api::host::{Host, HostConfig};
use swarm_api::id::CommitId;
use swarm_api::storage::Storage;
use swarm_api::traits::Destination;
use swarm_api::ConversationId;
use transport_quic::{QuicConfig, QuicTransport};

use crate::control::{self, ControlError, Request, Response};
use crate::home::Home;
use crate::info;
use crate::{App, Cli, Command, ConvCommand, PeerCommand};

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

struct Server {
    home: Home,
    host: Host,
    listen: SocketAddr,
}

async fn serve(app: &App, options: Options) -> Result<()> {
    let id = app.home.identity()?;
    let backend = app.home.backend(app.backend)?;
    // The control socket first: a second server for this home stops here.
    let listener = control::bind(&app.home.dir)?;
    let storage: Arc<dyn Storage> = Arc::from(app.home.open_storage(backend)?);
    let me = id.into_local();
    let config = QuicConfig {
        connect_timeout: options.connect_timeout,
        ..QuicConfig::default()
    };
    let (quic, listen) = QuicTransport::bind(options.listen, &me, config)
        .with_context(|| format!("cannot listen on {}", options.listen))?;
    let dht = match options.dht {
        // Without bootstrap nodes the DHT is optional: a runner that cannot start (no UDP
        // socket for it) only costs discovery, so the server runs on.
        Some(o) if o.bootstrap.is_empty() => crate::dht::start(&me, listen, o, &app.home.dir)
            .inspect_err(|e| tracing::warn!(target: LOG, error = %crate::one_line(e), "no DHT"))
            .ok(),
        Some(o) => Some(crate::dht::start(&me, listen, o, &app.home.dir)?),
        None => None,
    };
    let (uri, device) = (me.account.uri(), me.device.id());
    let mut builder = Host::builder(app.home.lib(), me)
        .storage(storage)
        .engine(app.engine()?)
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
    let server = Arc::new(Server {
        home: app.home.clone(),
        host,
        listen,
    });
    let socket = control::socket_path(&app.home.dir);
    app.out(
        json!({"listen": listen, "device": device, "uri": uri, "control": socket}),
        || format!("listening {listen} device {device}"),
    );
    tracing::info!(target: LOG, %listen, %device, backend = backend.name(), "serving");
    server.host.start();
    loop {
        let (stream, _) = listener
            .accept()
            .await
            .context("the control socket failed")?;
        let server = server.clone();
        tokio::spawn(async move {
            control::serve_client(stream, |request| server.clone().handle(request)).await;
        });
    }
}

fn failed(e: anyhow::Error) -> ControlError {
    ControlError::Failed(crate::one_line(&e))
}

impl Server {
    async fn handle(self: Arc<Self>, request: Request) -> Response {
        match request {
            Request::Ping => Response::Pong {
                device: self.host.peer().device,
                listen: self.listen,
            },
            Request::Run { args, json, cwd } => match self.run_line(args, json, cwd).await {
                Ok((stdout, notes)) => Response::Ok { stdout, notes },
                Err(error) => Response::Error { error },
            },
        }
    }

    /// Parses and runs one command line for a control client.
    async fn run_line(
        self: &Arc<Self>,
        args: Vec<String>,
        json: bool,
        cwd: PathBuf,
    ) -> Result<(String, Vec<String>), ControlError> {
        let cli = Cli::try_parse_from(std::iter::once("swarm-chat".to_owned()).chain(args))
            .map_err(|e| ControlError::Usage(e.render().to_string()))?;
        let mut command = cli.command;
        if !command.served() {
            return Err(ControlError::NotServed(
                "identity, demo, verify and serve commands run without the server".into(),
            ));
        }
        if let Command::Conv(ConvCommand::Export { dir, .. } | ConvCommand::Import { dir }) =
            &mut command
        {
            *dir = cwd.join(&*dir);
        }
        let mut notes = Vec::new();
        match &mut command {
            Command::Dht(crate::DhtCommand::Status) => {
                let v = self
                    .host
                    .discovery_status()
                    .await
                    .unwrap_or_else(|| json!({"enabled": false}));
                let text = if json {
                    v.to_string() + "\n"
                } else {
                    crate::dht::status_text(&v)
                };
                return Ok((text, notes));
            }
            Command::Conv(ConvCommand::Info { conv }) => {
                let conv = crate::parse_conv(conv).map_err(failed)?;
                if let Some(i) = self.host.info(conv).await.ok().filter(|i| i.syncing) {
                    let v = serde_json::to_value(i).map_err(|e| failed(e.into()))?;
                    let text = if json {
                        v.to_string()
                    } else {
                        info::info_text(&v)
                    };
                    return Ok((text + "\n", notes));
                }
            }
            Command::Conv(ConvCommand::Join { conv, peer }) => {
                let conv = crate::parse_conv(conv).map_err(failed)?;
                self.host
                    .clone_conversation(conv, peer.take())
                    .await
                    .map_err(|e| failed(e.into()))?;
            }
            _ => {}
        }
        let after = After::of(&command);
        let before = self.heads();
        let server = self.clone();
        let backend = cli.backend;
        let stdout = tokio::task::spawn_blocking(move || {
            let mut app = App::new(server.home.clone(), json, backend);
            app.shared = Some(server.host.storage().clone());
            app.engine = server.host.engine().clone().into();
            app.capture = Some(Default::default());
            app.run(command)?;
            Ok(app.capture.map(|c| c.into_inner()).unwrap_or_default())
        })
        .await
        .map_err(|e| ControlError::Failed(format!("the command crashed: {e}")))?
        .map_err(failed)?;
        for (conv, head) in self.heads() {
            if before.get(&conv) != Some(&head) {
                self.host.node().announce(conv, head).await;
            }
        }
        self.after(after, &mut notes).await;
        Ok((stdout, notes))
    }

    /// The head of every stored conversation.
    fn heads(&self) -> HashMap<ConversationId, CommitId> {
        let storage = self.host.storage();
        storage
            .conversations()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|c| Some((c, storage.head(&c).ok()??)))
            .collect()
    }

    async fn after(&self, after: After, notes: &mut Vec<String>) {
        match after {
            After::Nothing => {}
            After::Invited(conv, uri) => {
                match self
                    .host
                    .send_invitation(conv, Destination::Account(uri))
                    .await
                {
                    Ok(()) => notes.push(format!("invitation sent to {uri}")),
                    Err(e) => notes.push(format!(
                        "invitation not delivered now ({e}); it is sent when a device of \
                         {uri} connects"
                    )),
                }
            }
            // The command changed `peers.json`: the host takes it again.
            After::Peers => {
                if let Err(e) = self.host.reload_peers().await {
                    notes.push(format!("peers not reloaded: {e}"));
                }
            }
        }
    }
}

/// What a command needs from the network after it ran.
enum After {
    Nothing,
    Invited(ConversationId, swarm_api::AccountUri),
    Peers,
}

impl After {
    fn of(command: &Command) -> Self {
        match command {
            Command::Conv(ConvCommand::Invite { conv, uri }) => {
                match (crate::parse_conv(conv), crate::parse_uri(uri)) {
                    (Ok(c), Ok(u)) => After::Invited(c, u),
                    _ => After::Nothing,
                }
            }
            Command::Peer(
                PeerCommand::Add { .. } | PeerCommand::Block { .. } | PeerCommand::Unblock { .. },
            ) => After::Peers,
            _ => After::Nothing,
        }
    }
}
