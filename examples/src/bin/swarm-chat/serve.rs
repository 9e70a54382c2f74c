//! `swarm-chat serve`: this home's [`Node`] over QUIC, and the control socket through which
//! the other commands reach it while it runs.
//!
//! - The node syncs conversations with their other devices: announcements of new commits,
//!   fetches (validated, quarantined, merged) and serving fetches with access control.
//! - Addresses: the home's `peers.json` is loaded into the transport; every address learned
//!   from an authenticated connection is written back. Remembered addresses and `--peer`s
//!   that are not connected are dialled again with exponential backoff (per address, capped).
//!   Every new connection triggers a fetch of the conversations shared with that device, so
//!   a healed partition or a restarted node converges without waiting for the next message.
//! - Invitations: `conv invite` sends an [`INVITE`] signal to the invitee's account; and
//!   whenever a device of an account that is invited (and has not joined) connects, it is
//!   sent again. Received invitations go to `requests.json` (`swarm-chat requests`).
//! - Refused devices (`peer block`) see nothing: their channels and signals are dropped and
//!   none are sent to them. That is how the partition tests cut links without a firewall.
//! - Commands on the control socket run the same code as without a server, on the server's
//!   storage; afterwards every conversation whose head moved is announced.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use clap::Parser as _;
use serde_json::json;
use swarm_api::id::{CommitId, DeviceId, Target};
use swarm_api::node::{LocalIdentity, Node, NodeConfig};
use swarm_api::repo::Repo;
use swarm_api::storage::Storage;
use swarm_api::traits::{
    BoxFuture, Channel, Destination, Incoming, Peer, Signal, Transport, TransportError,
};
use swarm_api::validate::{Engine, MemberRole};
use swarm_api::ConversationId;
use tokio::sync::mpsc;
use tokio::time::Instant;
use transport_dht::Dht;
use transport_quic::{QuicConfig, QuicTransport};

use crate::control::{self, ControlError, Request, Response};
use crate::home::Home;
use crate::info;
use crate::peers::{destination, PeerBook, Source};
use crate::requests::{Invitation, Requests, INVITE};
use crate::{App, Cli, Command, ConvCommand, PeerCommand};

const LOG: &str = "swarm_chat::serve";
/// How often connections are checked (new ones synced, missing ones dialled).
const TICK: Duration = Duration::from_millis(250);
/// Connected devices are asked for what they have this often, whatever was announced (an
/// announcement can be lost: refused during a partition, or while the peer was backed off).
const RESYNC: Duration = Duration::from_secs(5);
/// First and longest wait before dialling an unreachable address again.
const DIAL_BACKOFF: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(30));
/// Titles and modes announced by inviters are cut to this many characters.
const MAX_ANNOUNCED: usize = 200;

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

/// The transport the node sees: QUIC (devices located through the DHT when needed) and the
/// DHT's signals, minus refused devices, with invitations taken out.
struct Gate {
    quic: QuicTransport,
    dht: Option<Dht>,
    blocked: Mutex<HashSet<DeviceId>>,
    invites: mpsc::UnboundedSender<(Peer, Signal)>,
}

impl Gate {
    fn is_blocked(&self, device: &DeviceId) -> bool {
        lock(&self.blocked).contains(device)
    }

    /// The DHT, when it has a network to ask (a node without bootstrap nodes does not wait on
    /// lookups that cannot succeed).
    fn dht_network(&self) -> Option<&Dht> {
        self.dht
            .as_ref()
            .filter(|d| !d.config().bootstrap.is_empty())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Transport for Gate {
    fn open_channel<'a>(
        &'a self,
        device: DeviceId,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Box<dyn Channel>, TransportError>> {
        if self.is_blocked(&device) {
            return Box::pin(async move { Err(TransportError::Unreachable(device)) });
        }
        Box::pin(async move {
            let first = self.quic.open_channel(device, name).await;
            match (self.dht_network(), first) {
                (Some(dht), Err(TransportError::Unreachable(_) | TransportError::Other(_))) => {
                    if !crate::dht::locate(dht, &self.quic, device).await {
                        return Err(TransportError::Unreachable(device));
                    }
                    self.quic.open_channel(device, name).await
                }
                (_, result) => result,
            }
        })
    }

    fn send_signal<'a>(
        &'a self,
        to: Destination,
        signal: Signal,
    ) -> BoxFuture<'a, Result<(), TransportError>> {
        if let Destination::Device(d) = to {
            if self.is_blocked(&d) {
                return Box::pin(async move { Err(TransportError::Unreachable(d)) });
            }
        }
        Box::pin(async move {
            let Some(dht) = self.dht_network() else {
                return self.quic.send_signal(to, signal).await;
            };
            // Invitations always also go through the DHT (other devices of the account may
            // not be connected); other signals only when QUIC cannot deliver them.
            let invite = signal.kind == INVITE;
            let quic = self.quic.send_signal(to, signal.clone()).await;
            if quic.is_ok() && !invite {
                return quic;
            }
            match (dht.send_signal(to, signal).await, quic) {
                (Ok(()), _) | (_, Ok(())) => Ok(()),
                (Err(e), Err(_)) => Err(e),
            }
        })
    }

    fn next_incoming(&self) -> BoxFuture<'_, Option<Incoming>> {
        Box::pin(async move {
            loop {
                let incoming = match &self.dht {
                    None => self.quic.next_incoming().await?,
                    Some(dht) => tokio::select! {
                        i = self.quic.next_incoming() => i?,
                        Some(i) = dht.next_incoming() => i,
                    },
                };
                let from = match &incoming {
                    Incoming::Channel { from, .. } | Incoming::Signal { from, .. } => *from,
                };
                if self.is_blocked(&from.device) {
                    tracing::debug!(target: LOG, device = %from.device, "refused: blocked device");
                    continue;
                }
                match incoming {
                    Incoming::Signal { from, signal } if signal.kind == INVITE => {
                        let _ = self.invites.send((from, signal));
                    }
                    other => return Some(other),
                }
            }
        })
    }
}

#[derive(Clone, Copy)]
/// The dialling state of one address: exponential backoff between failed attempts.
struct Dial {
    next: Instant,
    delay: Duration,
    busy: bool,
}

impl Dial {
    fn new(now: Instant) -> Self {
        Dial {
            next: now,
            delay: DIAL_BACKOFF.0,
            busy: false,
        }
    }

    /// Starts an attempt if none runs and the backoff has passed.
    fn start(&mut self, now: Instant) -> bool {
        if self.busy || now < self.next {
            return false;
        }
        self.busy = true;
        true
    }

    /// The attempt failed: wait the current delay, then twice as long next time (capped).
    fn failed(&mut self, now: Instant) {
        self.next = now + self.delay;
        self.delay = (self.delay * 2).min(DIAL_BACKOFF.1);
        self.busy = false;
    }
}

struct Server {
    home: Home,
    storage: Arc<dyn Storage>,
    /// The validation engine of the node and of every command run through the server.
    engine: Arc<Engine>,
    node: Node,
    quic: QuicTransport,
    gate: Arc<Gate>,
    listen: SocketAddr,
    bootstrap: Vec<SocketAddr>,
    connect_timeout: Duration,
    /// Conversations being cloned (`conv info` says `syncing: true`).
    syncing: Mutex<HashSet<ConversationId>>,
    dials: Mutex<HashMap<SocketAddr, Dial>>,
}

/// Marks a conversation as syncing while alive.
struct Syncing<'a>(&'a Server, ConversationId);

impl Drop for Syncing<'_> {
    fn drop(&mut self) {
        lock(&self.0.syncing).remove(&self.1);
    }
}

async fn serve(app: &App, options: Options) -> Result<()> {
    let id = app.home.identity()?;
    let backend = app.home.backend(app.backend)?;
    // The control socket first: a second server for this home stops here.
    let listener = control::bind(&app.home.dir)?;
    let storage: Arc<dyn Storage> = Arc::from(app.home.open_storage(backend)?);
    let me = LocalIdentity {
        account: id.account.cert().clone(),
        device: id.device,
        crl: id.crl,
    };
    let config = QuicConfig {
        connect_timeout: options.connect_timeout,
        ..QuicConfig::default()
    };
    let (quic, listen) = QuicTransport::bind(options.listen, &me, config)
        .with_context(|| format!("cannot listen on {}", options.listen))?;
    let book = PeerBook::load(&app.home)?;
    for e in &book.peers {
        quic.add_peer(destination(e.who), e.addr);
    }
    let dht = match options.dht {
        // Without bootstrap nodes the DHT is optional: a runner that cannot start (no UDP
        // socket for it) only costs discovery, so the server runs on.
        Some(o) if o.bootstrap.is_empty() => crate::dht::start(&me, listen, o, &app.home.dir)
            .inspect_err(|e| tracing::warn!(target: LOG, error = %crate::one_line(e), "no DHT"))
            .ok(),
        Some(o) => Some(crate::dht::start(&me, listen, o, &app.home.dir)?),
        None => None,
    };
    let (invites, invites_rx) = mpsc::unbounded_channel();
    let gate = Arc::new(Gate {
        quic: quic.clone(),
        dht,
        blocked: Mutex::new(book.blocked.iter().copied().collect()),
        invites,
    });
    let (uri, device) = (me.account.uri(), me.device.id());
    let engine = app.engine()?;
    let node = Node::new(
        me,
        storage.clone(),
        gate.clone(),
        engine.clone(),
        NodeConfig {
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            ..NodeConfig::default()
        },
    );
    let server = Arc::new(Server {
        home: app.home.clone(),
        storage,
        engine,
        node: node.clone(),
        quic,
        gate,
        listen,
        bootstrap: options.peers,
        connect_timeout: options.connect_timeout,
        syncing: Mutex::default(),
        dials: Mutex::default(),
    });
    let socket = control::socket_path(&app.home.dir);
    app.out(
        json!({"listen": listen, "device": device, "uri": uri, "control": socket}),
        || format!("listening {listen} device {device}"),
    );
    tracing::info!(target: LOG, %listen, %device, backend = backend.name(), "serving");
    tokio::spawn(async move { node.run().await });
    tokio::spawn(server.clone().receive_invitations(invites_rx));
    tokio::spawn(server.clone().maintain());
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

fn cut(s: Option<String>) -> Option<String> {
    s.map(|s| s.chars().take(MAX_ANNOUNCED).collect())
}

impl Server {
    async fn handle(self: Arc<Self>, request: Request) -> Response {
        match request {
            Request::Ping => Response::Pong {
                device: self.node.peer().device,
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
                let v = crate::dht::status_json(self.gate.dht.as_ref()).await;
                let text = if json {
                    v.to_string() + "\n"
                } else {
                    crate::dht::status_text(&v)
                };
                return Ok((text, notes));
            }
            Command::Conv(ConvCommand::Info { conv }) => {
                let conv = crate::parse_conv(conv).map_err(failed)?;
                if lock(&self.syncing).contains(&conv) {
                    let v = info::syncing_json(conv);
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
                self.clone_for_join(conv, peer.take())
                    .await
                    .map_err(failed)?;
            }
            _ => {}
        }
        let after = After::of(&command);
        let before = self.heads();
        let server = self.clone();
        let backend = cli.backend;
        let stdout = tokio::task::spawn_blocking(move || {
            let mut app = App::new(server.home.clone(), json, backend);
            app.shared = Some(server.storage.clone());
            app.engine = server.engine.clone().into();
            app.capture = Some(Default::default());
            app.run(command)?;
            Ok(app.capture.map(|c| c.into_inner()).unwrap_or_default())
        })
        .await
        .map_err(|e| ControlError::Failed(format!("the command crashed: {e}")))?
        .map_err(failed)?;
        for (conv, head) in self.heads() {
            if before.get(&conv) != Some(&head) {
                self.node.announce(conv, head).await;
            }
        }
        self.after(after, &mut notes).await;
        Ok((stdout, notes))
    }

    /// The head of every stored conversation.
    fn heads(&self) -> HashMap<ConversationId, CommitId> {
        self.storage
            .conversations()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|c| Some((c, self.storage.head(&c).ok()??)))
            .collect()
    }

    /// Clones `conv` (unless stored) from the device at `peer`, else from the inviter.
    async fn clone_for_join(&self, conv: ConversationId, peer: Option<SocketAddr>) -> Result<()> {
        if self.storage.head(&conv)?.is_some() {
            return Ok(());
        }
        lock(&self.syncing).insert(conv);
        let _syncing = Syncing(self, conv);
        let sources: Vec<DeviceId> = match peer {
            Some(addr) => {
                let (p, _) = self
                    .quic
                    .connect_addr(addr)
                    .await
                    .map_err(|e| anyhow!("cannot reach a peer at {addr}: {e}"))?;
                vec![p.device]
            }
            None => {
                let req = Requests::load(&self.home)?
                    .get(&conv)
                    .cloned()
                    .ok_or_else(|| {
                        anyhow!(
                            "no invitation to {conv} (see `swarm-chat requests`) and no \
                             --peer ADDR: nobody to clone it from"
                        )
                    })?;
                let mut v = vec![req.device];
                v.extend(
                    self.quic
                        .connected()
                        .iter()
                        .filter(|p| p.account == req.from && p.device != req.device)
                        .map(|p| p.device),
                );
                v
            }
        };
        let mut why = String::from("no source");
        for device in sources {
            match self.node.sync_from(conv, device).await {
                Ok(_) if self.storage.head(&conv)?.is_some() => {
                    tracing::info!(target: LOG, %conv, %device, "cloned");
                    return Ok(());
                }
                Ok(_) => why = format!("device {device} sent nothing"),
                Err(e) => why = format!("device {device}: {e}"),
            }
        }
        bail!("cannot clone {conv}: {why}")
    }

    async fn after(&self, after: After, notes: &mut Vec<String>) {
        match after {
            After::Nothing => {}
            After::Invited(conv, uri) => {
                match self.send_invitation(conv, Destination::Account(uri)).await {
                    Ok(()) => notes.push(format!("invitation sent to {uri}")),
                    Err(e) => notes.push(format!(
                        "invitation not delivered now ({e}); it is sent when a device of \
                         {uri} connects"
                    )),
                }
            }
            After::PeerAdded => {
                if let Ok(book) = PeerBook::load(&self.home) {
                    for e in &book.peers {
                        self.quic.add_peer(destination(e.who), e.addr);
                    }
                }
                lock(&self.dials).clear();
            }
            After::Blocked(device, blocked) => {
                if blocked {
                    lock(&self.gate.blocked).insert(device);
                } else {
                    lock(&self.gate.blocked).remove(&device);
                    if let Some(p) = self
                        .quic
                        .connected()
                        .into_iter()
                        .find(|p| p.device == device)
                    {
                        self.on_connected(p).await;
                    }
                }
            }
        }
    }

    async fn send_invitation(&self, conv: ConversationId, to: Destination) -> Result<()> {
        let (title, mode) = {
            let repo = Repo::open(&*self.storage, conv)?;
            let head = repo.head()?;
            (
                info::title_of(&repo, &head),
                Some(repo.state(&head)?.mode.name().to_owned()),
            )
        };
        let payload = serde_json::to_vec(&Invitation {
            conversation: conv,
            title,
            mode,
        })?;
        self.gate
            .send_signal(
                to,
                Signal {
                    kind: INVITE.into(),
                    payload,
                },
            )
            .await?;
        Ok(())
    }

    /// Stores invitations as requests (unless this account is already in the conversation).
    async fn receive_invitations(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<(Peer, Signal)>) {
        let me = self.node.peer().account;
        while let Some((from, signal)) = rx.recv().await {
            let Ok(inv) = serde_json::from_slice::<Invitation>(&signal.payload) else {
                tracing::info!(target: LOG, device = %from.device, "malformed invitation ignored");
                continue;
            };
            let conv = inv.conversation;
            let joined = Repo::open(&*self.storage, conv)
                .and_then(|r| r.state(&r.head()?))
                .is_ok_and(|st| {
                    matches!(st.role(&me), Some(MemberRole::Admin | MemberRole::Member))
                });
            if joined {
                continue;
            }
            let request = crate::requests::Request {
                id: conv,
                from: from.account,
                device: from.device,
                received: crate::now_secs(),
                title: cut(inv.title),
                mode: cut(inv.mode),
            };
            match Requests::update(&self.home, |r| r.add(request)) {
                Ok(true) => {
                    tracing::info!(target: LOG, %conv, from = %from.account, "invitation received")
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(target: LOG, %conv, error = %crate::one_line(&e), "cannot store an invitation")
                }
            }
        }
    }

    /// Every tick: sync with newly connected devices, dial missing ones.
    async fn maintain(self: Arc<Self>) {
        let mut known: HashSet<DeviceId> = HashSet::new();
        let mut tick = tokio::time::interval(TICK);
        let mut last_resync = Instant::now();
        loop {
            tick.tick().await;
            let connected = self.quic.connected();
            let resync = last_resync.elapsed() >= RESYNC;
            if resync {
                last_resync = Instant::now();
            }
            for p in &connected {
                let new = !known.contains(&p.device);
                if new || resync {
                    let server = self.clone();
                    let p = *p;
                    tokio::spawn(async move {
                        if new {
                            server.on_connected(p).await
                        } else {
                            server.sync_with(p).await
                        }
                    });
                }
            }
            known = connected.iter().map(|p| p.device).collect();
            self.dial_missing(&connected);
        }
    }

    /// A device connected (or was unblocked): remember its address, fetch what it has of
    /// the conversations we share, and send it the invitations its account is waiting for.
    async fn on_connected(&self, peer: Peer) {
        if self.gate.is_blocked(&peer.device) {
            return;
        }
        tracing::info!(target: LOG, device = %peer.device, account = %peer.account, "connected");
        if let Some(addr) = self.quic.address_of(&peer.device) {
            lock(&self.dials).remove(&addr);
            let learned = PeerBook::update(&self.home, |b| {
                b.remember(
                    Target::Device(peer.device),
                    addr,
                    Source::Learned,
                    crate::now_secs(),
                )
            });
            if let Err(e) = learned {
                tracing::warn!(target: LOG, error = %crate::one_line(&e), "cannot remember an address");
            }
        }
        let me = self.node.peer().account;
        for (conv, st) in self.states() {
            let member = matches!(st.role(&me), Some(MemberRole::Admin | MemberRole::Member));
            if member && st.invited.contains(&peer.account) {
                if let Err(e) = self
                    .send_invitation(conv, Destination::Device(peer.device))
                    .await
                {
                    tracing::debug!(target: LOG, %conv, error = %e, "invitation not sent");
                }
            }
        }
        self.sync_with(peer).await;
    }

    /// The membership state at the head of every stored conversation.
    fn states(&self) -> Vec<(ConversationId, Arc<swarm_api::validate::State>)> {
        self.storage
            .conversations()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|c| {
                let st = Repo::open(&*self.storage, c)
                    .and_then(|r| r.state(&r.head()?))
                    .ok()?;
                Some((c, st))
            })
            .collect()
    }

    /// Fetches from `peer` every conversation it has a device in.
    async fn sync_with(&self, peer: Peer) {
        if self.gate.is_blocked(&peer.device) {
            return;
        }
        for (conv, st) in self.states() {
            if st.devices.contains_key(&peer.device) {
                if let Err(e) = self.node.sync_from(conv, peer.device).await {
                    tracing::debug!(target: LOG, %conv, device = %peer.device, error = %e, "sync failed");
                }
            }
        }
    }

    /// Dials remembered and `--peer` addresses nobody is connected from, with backoff.
    fn dial_missing(self: &Arc<Self>, connected: &[Peer]) {
        let book = PeerBook::load(&self.home).unwrap_or_default();
        let live: HashSet<SocketAddr> = connected
            .iter()
            .filter_map(|p| self.quic.address_of(&p.device))
            .collect();
        let satisfied = |who: &Target| match who {
            Target::Device(d) => {
                connected.iter().any(|p| p.device == *d) || book.blocked.contains(d)
            }
            Target::Account(a) => connected.iter().any(|p| p.account == *a),
        };
        let mut targets: Vec<SocketAddr> = book
            .peers
            .iter()
            .filter(|e| !satisfied(&e.who))
            .map(|e| e.addr)
            .collect();
        targets.extend(&self.bootstrap);
        let now = Instant::now();
        for addr in targets {
            if live.contains(&addr) || addr == self.listen {
                continue;
            }
            {
                let mut dials = lock(&self.dials);
                if !dials
                    .entry(addr)
                    .or_insert_with(|| Dial::new(now))
                    .start(now)
                {
                    continue;
                }
            }
            let server = self.clone();
            tokio::spawn(async move {
                let result =
                    tokio::time::timeout(server.connect_timeout, server.quic.connect_addr(addr))
                        .await;
                let mut dials = lock(&server.dials);
                match result {
                    Ok(Ok((peer, _))) => {
                        tracing::debug!(target: LOG, %addr, device = %peer.device, "dialled");
                        dials.remove(&addr);
                    }
                    Ok(Err(_)) | Err(_) => {
                        if let Some(d) = dials.get_mut(&addr) {
                            tracing::debug!(target: LOG, %addr, retry_in = ?d.delay, "unreachable");
                            d.failed(Instant::now());
                        }
                    }
                }
            });
        }
    }
}

/// What a command needs from the network after it ran.
enum After {
    Nothing,
    Invited(ConversationId, swarm_api::AccountUri),
    PeerAdded,
    Blocked(DeviceId, bool),
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
            Command::Peer(PeerCommand::Add { .. }) => After::PeerAdded,
            Command::Peer(PeerCommand::Block { device } | PeerCommand::Unblock { device }) => {
                match device.parse() {
                    Ok(d) => After::Blocked(
                        d,
                        matches!(command, Command::Peer(PeerCommand::Block { .. })),
                    ),
                    Err(_) => After::Nothing,
                }
            }
            _ => After::Nothing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dialling_backs_off_exponentially_up_to_the_cap_one_attempt_at_a_time() {
        let t0 = Instant::now();
        let mut d = Dial::new(t0);
        assert!(d.start(t0), "the first attempt is at once");
        assert!(!d.start(t0), "one attempt at a time");
        let mut now = t0;
        let mut waits = Vec::new();
        for _ in 0..10 {
            d.failed(now);
            assert!(!d.start(now), "not before the backoff has passed");
            waits.push(d.next - now);
            now = d.next;
            assert!(d.start(now));
        }
        assert_eq!(waits[0], DIAL_BACKOFF.0);
        assert_eq!(waits[1], DIAL_BACKOFF.0 * 2);
        assert_eq!(waits[2], DIAL_BACKOFF.0 * 4);
        assert_eq!(*waits.last().expect("waits"), DIAL_BACKOFF.1, "capped");
        assert!(waits.windows(2).all(|w| w[0] <= w[1]));
    }
}
