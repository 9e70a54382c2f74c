//! [`Host`]: a whole swarm node for an app — storage, transports, discovery, the node's own
//! state in a home directory, typed async methods and a live event stream.
//!
//! Where [`Node`] is the sync engine of one device, a host is what an app runs:
//!
//! - **Composition.** One [`Storage`], one or more [`Transport`]s tried in order, an optional
//!   [`Discovery`] service asked where a device is when no transport reaches it, and an
//!   [`Engine`] (built-in rules plus registered message types and a [`PluginLoader`]).
//! - **Connections.** Every tick the host looks at who is connected: a new device is
//!   reported ([`Event::PeerConnected`]), its address remembered (`peers.json`), the
//!   invitations its account waits for are sent again, and the conversations shared with it
//!   are fetched (a healed partition converges without a new message). Connected devices are
//!   asked again every [`HostConfig::resync`]; remembered and configured addresses nobody is
//!   connected from are dialled with exponential backoff.
//! - **Invitations.** Received invitations are kept as [`Request`]s (bounded per sender and in
//!   total) and reported ([`Event::InvitationReceived`]); [`Host::join`] clones the
//!   conversation from the inviter and joins, [`Host::decline`] forgets it for good.
//! - **Operations.** Every method that writes validates before storing (the rules' error comes
//!   back typed), runs storage work off the async worker threads (`spawn_blocking`), rebuilds
//!   the commit on the new head when a fetch moved it meanwhile, and announces the result.
//!
//! Unlike the rest of this crate, a host does I/O: it reads and writes its home directory,
//! reads the wall clock for commit timestamps (display only: no rule trusts them) and spawns
//! tokio tasks. Call it from inside a tokio runtime.
//!
//! ```no_run
//! # async fn app(storage: std::sync::Arc<dyn swarm_api::Storage>,
//! #              quic: std::sync::Arc<dyn swarm_api::Transport>) -> Result<(), Box<dyn std::error::Error>> {
//! use swarm_api::host::{Home, Host};
//! use swarm_api::node::Event;
//!
//! let home = Home::new("/var/lib/my-app");
//! let me = home.identity()?.into_local();
//! let host = Host::builder(home, me).storage(storage).transport(quic).build()?;
//! host.start();
//! let mut events = host.events();
//! while let Ok(event) = events.recv().await {
//!     if let Event::MessageReceived { conv, body, .. } = event {
//!         println!("{conv}: {}", body.kind());
//!     }
//! }
//! # Ok(()) }
//! ```

mod books;
mod crls;
mod home;
mod mux;
pub mod rpc;

pub use books::{
    destination, invitation_rate, Invitation, InvitationRate, PeerBook, PeerEntry, Request,
    Requests, Source, INVITATION_BURST, INVITATION_EVERY, INVITE, MAX_ANNOUNCED, MAX_LEARNED,
    MAX_PENDING, MAX_PENDING_PER_SENDER, MAX_RATED_SENDERS,
};
pub use crls::KnownCrls;
pub use home::{Home, HomeError, Identity};

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::body::{Body, Mode, VoteAction};
use crate::id::{AccountUri, CommitId, ConversationId, DeviceId, Target};
use crate::layout;
use crate::node::{unix_now, Event, LocalIdentity, Node, NodeConfig, NodeError};
use crate::ops::{self, OpError};
use crate::repo::{create_conversation, FileChange, Repo, RepoError};
use crate::storage::{Storage, StorageError};
use crate::traits::{
    Destination, Discovery, Peer, PluginLoader, Signal, Transport, TransportError,
};
use crate::validate::{Engine, Limits, MemberRole, State};
use crate::view::{self, Authored, Entry};
use mux::Mux;

const LOG: &str = "swarm_api::host";

/// Tuning of a [`Host`].
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// The sync engine's tuning.
    pub node: NodeConfig,
    /// How often connections are looked at (new ones synced, missing ones dialled).
    pub tick: Duration,
    /// Connected devices are asked for what they have this often, whatever was announced (an
    /// announcement can be lost: refused during a partition, or while the peer was backed off).
    pub resync: Duration,
    /// First and longest wait before dialling an unreachable address again.
    pub dial_backoff: (Duration, Duration),
    /// A dial that takes longer is given up (and backed off).
    pub connect_timeout: Duration,
    /// Addresses dialled at start and again whenever nobody is connected from them.
    pub dial: Vec<SocketAddr>,
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            node: NodeConfig {
                backoff_initial: Duration::from_millis(500),
                backoff_max: Duration::from_secs(30),
                ..NodeConfig::default()
            },
            tick: Duration::from_millis(250),
            resync: Duration::from_secs(5),
            dial_backoff: (Duration::from_millis(500), Duration::from_secs(30)),
            connect_timeout: Duration::from_secs(10),
            dial: Vec::new(),
        }
    }
}

/// Errors of host operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// Reading or writing the conversation failed, or a rule refused the commit.
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// The operation does not apply (e.g. banning someone already banned).
    #[error(transparent)]
    Op(#[from] OpError),
    /// The sync engine failed.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The home directory failed.
    #[error(transparent)]
    Home(#[from] HomeError),
    /// The transports failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// Joining a conversation that is not stored, without an invitation or an address to
    /// clone it from.
    #[error("no invitation to {0} and no address to clone it from: nobody to clone it from")]
    NoInvitation(ConversationId),
    /// Nobody could be reached at an address given to clone from.
    #[error("cannot reach a peer at {addr}: {source}")]
    Dial {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: TransportError,
    },
    /// Cloning failed from every source.
    #[error("cannot clone {conv}: {reason}")]
    CloneFailed {
        /// The conversation.
        conv: ConversationId,
        /// What the last source answered.
        reason: String,
    },
    /// The builder lacks a part.
    #[error("a host needs {0}")]
    Missing(&'static str),
    /// The arguments ask for nothing or for something contradictory.
    #[error("{0}")]
    Invalid(String),
    /// A background task died (a bug: please report it).
    #[error("a background task failed: {0}")]
    Task(String),
}

impl From<StorageError> for HostError {
    fn from(e: StorageError) -> Self {
        HostError::Repo(RepoError::from(e))
    }
}

/// Builds a [`Host`]: [`Host::builder`].
pub struct HostBuilder {
    home: Home,
    me: LocalIdentity,
    storage: Option<Arc<dyn Storage>>,
    transports: Vec<Arc<dyn Transport>>,
    discovery: Option<Arc<dyn Discovery>>,
    engine: Option<Arc<Engine>>,
    loader: Option<Arc<dyn PluginLoader>>,
    config: HostConfig,
}

impl HostBuilder {
    /// Where conversations are kept (required).
    pub fn storage(mut self, storage: Arc<dyn Storage>) -> Self {
        self.storage = Some(storage);
        self
    }

    /// A transport; several are tried in the order added. A host without any works on its
    /// storage only (commits are stored, nothing is sent or received): what a client does
    /// when no node of its home is running.
    pub fn transport(mut self, transport: Arc<dyn Transport>) -> Self {
        self.transports.push(transport);
        self
    }

    /// A discovery service, asked where a device is when no transport reaches it, and told
    /// where this device listens.
    pub fn discovery(mut self, discovery: Arc<dyn Discovery>) -> Self {
        self.discovery = Some(discovery);
        self
    }

    /// The validation engine (default: the built-in rules with default limits). Register
    /// message types ([`Engine::register`]) and the app's own policies
    /// ([`Engine::add_validator`]) on it before.
    pub fn engine(mut self, engine: Arc<Engine>) -> Self {
        self.engine = Some(engine);
        self
    }

    /// Loads plugins pinned in conversations (e.g. `swarm-plugins`' wasmtime host) into the
    /// default engine. Not with [`HostBuilder::engine`]: set the loader on that engine.
    pub fn plugin_loader(mut self, loader: Arc<dyn PluginLoader>) -> Self {
        self.loader = Some(loader);
        self
    }

    /// The tuning.
    pub fn config(mut self, config: HostConfig) -> Self {
        self.config = config;
        self
    }

    /// The host, not started yet ([`Host::start`]).
    pub fn build(self) -> Result<Host, HostError> {
        let storage = self.storage.ok_or(HostError::Missing("a storage"))?;
        let engine = match (self.engine, self.loader) {
            (Some(_), Some(_)) => {
                return Err(HostError::Invalid(
                    "a plugin loader goes on the engine given to the builder".into(),
                ))
            }
            (Some(e), None) => e,
            (None, loader) => {
                let mut e = Engine::new(Limits::default());
                if let Some(l) = loader {
                    e.set_plugin_loader(l);
                }
                Arc::new(e)
            }
        };
        self.home.ensure()?;
        let book = PeerBook::load(&self.home)?;
        for t in &self.transports {
            for e in &book.peers {
                t.add_address(destination(e.who), e.addr);
            }
        }
        let (invites, invites_rx) = mpsc::channel(mux::INVITE_QUEUE);
        let mux = Arc::new(Mux::new(
            self.transports,
            self.discovery,
            book.blocked.iter().copied().collect(),
            invites,
        ));
        let node = Node::new(
            self.me,
            storage.clone(),
            mux.clone(),
            engine.clone(),
            self.config.node.clone(),
        );
        Ok(Host {
            inner: Arc::new(Inner {
                home: self.home,
                storage,
                engine,
                node,
                mux,
                config: self.config,
                syncing: Mutex::default(),
                dials: Mutex::default(),
                peer_book: Mutex::default(),
                invites_rx: Mutex::new(Some(invites_rx)),
                started: AtomicBool::new(false),
                tasks: Mutex::default(),
                rated_invitations: Default::default(),
            }),
        })
    }
}

/// The dialling state of one address: exponential backoff between failed attempts.
#[derive(Debug, Clone, Copy)]
struct Dial {
    next: Instant,
    delay: Duration,
    busy: bool,
}

impl Dial {
    fn new(now: Instant, first: Duration) -> Self {
        Dial {
            next: now,
            delay: first,
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
    fn failed(&mut self, now: Instant, cap: Duration) {
        self.next = now + self.delay;
        self.delay = (self.delay * 2).min(cap);
        self.busy = false;
    }
}

struct Inner {
    home: Home,
    storage: Arc<dyn Storage>,
    engine: Arc<Engine>,
    node: Node,
    mux: Arc<Mux>,
    config: HostConfig,
    /// Conversations being cloned.
    syncing: Mutex<HashSet<ConversationId>>,
    dials: Mutex<HashMap<SocketAddr, Dial>>,
    /// `peers.json`, read again only when it changed.
    peer_book: Mutex<books::BookCache>,
    invites_rx: Mutex<Option<mpsc::Receiver<(Peer, Signal)>>>,
    started: AtomicBool,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Invitations dropped because their sender was over its rate.
    rated_invitations: std::sync::atomic::AtomicU64,
}

/// A running swarm node for an app. Cheap to clone (all clones are the same host).
#[derive(Clone)]
pub struct Host {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Builds a commit's body and file changes from the state at the head.
type MakeCommit<'f> = dyn Fn(&Repo<'_>, &State) -> Result<(Body, Vec<FileChange>), HostError> + 'f;

/// A role in a conversation, as [`Host::members`] lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// In `admins/`.
    Admin,
    /// In `members/`.
    Member,
    /// In `invited/`.
    Invited,
    /// In `banned/`.
    Banned,
}

/// One row of [`Host::members`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    /// The account (or, for a banned entry, what was banned).
    pub uri: String,
    /// The role.
    pub role: Role,
}

/// What [`Host::info`] says about a conversation. While it is being cloned only
/// `conversation` and `syncing` are known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Info {
    /// The conversation.
    pub conversation: ConversationId,
    /// Whether a clone of it is running.
    pub syncing: bool,
    /// The mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// The head.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head: Option<CommitId>,
    /// Commits reachable from the head.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commits: Option<usize>,
    /// The title (`FN` of `profile.vcf`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Admins.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admins: Option<usize>,
    /// Members.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub members: Option<usize>,
    /// Invited accounts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invited: Option<usize>,
    /// Devices.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub devices: Option<usize>,
}

impl Info {
    /// The info of a stored conversation at its head.
    pub fn of(repo: &Repo<'_>) -> Result<Info, RepoError> {
        let head = repo.head()?;
        let st = repo.state(&head)?;
        Ok(Info {
            conversation: repo.id(),
            syncing: false,
            mode: Some(st.mode.name().to_owned()),
            head: Some(head),
            commits: Some(repo.history()?.len()),
            title: repo.title(&head),
            admins: Some(st.admins.len()),
            members: Some(st.members.len()),
            invited: Some(st.invited.len()),
            devices: Some(st.devices.len()),
        })
    }

    /// The info of a conversation being cloned.
    pub fn syncing(conv: ConversationId) -> Info {
        Info {
            conversation: conv,
            syncing: true,
            mode: None,
            head: None,
            commits: None,
            title: None,
            admins: None,
            members: None,
            invited: None,
            devices: None,
        }
    }
}

/// One commit of [`Host::log`]: the machine form of a conversation (every commit in display
/// order, bodies raw; a plugin's type carries the plugin's summary).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogEntry {
    /// The commit.
    pub id: CommitId,
    /// The signer's account, when its device certificate is known at the head.
    pub author: Option<AccountUri>,
    /// The author's display name (from the commit).
    pub name: String,
    /// The signing device.
    pub device: DeviceId,
    /// The `type` (`merge` for merge commits).
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a text message, else the whole commit message.
    pub body: String,
    /// The commit time (the author's clock).
    pub time: i64,
    /// A registered message type's one-line summary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
}

impl LogEntry {
    /// The log of `repo`, the last `limit` commits if given.
    pub fn of(
        repo: &Repo<'_>,
        engine: &Engine,
        limit: Option<usize>,
    ) -> Result<Vec<LogEntry>, RepoError> {
        let history = repo.history()?;
        let devices = repo.device_certs(&repo.head()?)?;
        let skip = limit.map_or(0, |n| history.len().saturating_sub(n));
        Ok(history
            .into_iter()
            .skip(skip)
            .map(|c| {
                let author = devices.get(&c.device).and_then(|d| d.claimed_account());
                let (kind, body, summary) = match Body::parse(&c.message) {
                    Ok(Body::Text(t)) => (crate::body::types::TEXT.to_owned(), t.body, None),
                    Ok(b) => (b.kind().to_owned(), c.message.clone(), engine.summary(&b)),
                    Err(_) => ("merge".to_owned(), c.message.clone(), None),
                };
                LogEntry {
                    id: c.id,
                    author,
                    name: c.author_name,
                    device: c.device,
                    kind,
                    body,
                    time: c.time,
                    summary,
                }
            })
            .collect())
    }
}

/// Reads stored conversations and the home's books: needs no identity (a client of a home
/// without one, a viewer). Blocking: call it off async worker threads ([`Host`]'s methods do).
#[derive(Clone)]
pub struct Reader {
    storage: Arc<dyn Storage>,
    engine: Arc<Engine>,
    home: Home,
}

impl Reader {
    /// A reader of `storage` (validated with `engine`) and `home`.
    pub fn new(storage: Arc<dyn Storage>, engine: Arc<Engine>, home: Home) -> Self {
        Self {
            storage,
            engine,
            home,
        }
    }

    fn repo(&self, conv: ConversationId) -> Result<Repo<'_>, HostError> {
        Ok(Repo::open(&*self.storage, conv)?.with_engine(self.engine.clone()))
    }

    /// The stored conversations.
    pub fn conversations(&self) -> Result<Vec<ConversationId>, HostError> {
        Ok(self.storage.conversations()?)
    }

    /// The conversation as a client shows it: display order, edits applied, reactions
    /// attached, replies under their target; the last `limit` entries if given.
    pub fn timeline(
        &self,
        conv: ConversationId,
        limit: Option<usize>,
    ) -> Result<Vec<Entry>, HostError> {
        let repo = self.repo(conv)?;
        let devices = repo.device_certs(&repo.head()?)?;
        let authored: Vec<Authored> = repo
            .history()?
            .into_iter()
            .map(|commit| Authored {
                author: devices
                    .get(&commit.device)
                    .and_then(|d| d.claimed_account()),
                commit,
            })
            .collect();
        // A message type's own one-line summary (a plugin's) replaces the generic one.
        let summaries: std::collections::HashMap<CommitId, String> = authored
            .iter()
            .filter_map(|a| {
                let body = Body::parse(&a.commit.message).ok()?;
                Some((a.commit.id, self.engine.summary(&body)?))
            })
            .collect();
        let mut entries = view::transcript(&authored);
        for e in &mut entries {
            if let Some(s) = summaries.get(&e.id) {
                e.text = s.clone();
            }
        }
        if let Some(n) = limit {
            entries.drain(..entries.len().saturating_sub(n));
        }
        Ok(entries)
    }

    /// Every commit in display order, bodies raw (the machine form; [`Reader::timeline`] is
    /// what a client shows).
    pub fn log(
        &self,
        conv: ConversationId,
        limit: Option<usize>,
    ) -> Result<Vec<LogEntry>, HostError> {
        Ok(LogEntry::of(&self.repo(conv)?, &self.engine, limit)?)
    }

    /// Who is in the conversation, by role (banned accounts and invitations included).
    pub fn members(&self, conv: ConversationId) -> Result<Vec<Member>, HostError> {
        let repo = self.repo(conv)?;
        let st = repo.state(&repo.head()?)?;
        let mut rows = Vec::new();
        for (set, role) in [
            (&st.admins, Role::Admin),
            (&st.members, Role::Member),
            (&st.invited, Role::Invited),
        ] {
            rows.extend(set.iter().map(|u| Member {
                uri: u.to_string(),
                role,
            }));
        }
        for (kind, t) in st.banned.keys() {
            if *kind != layout::Kind::Devices {
                rows.push(Member {
                    uri: t.clone(),
                    role: Role::Banned,
                });
            }
        }
        Ok(rows)
    }

    /// Mode, head, size, title and membership counts of a stored conversation.
    pub fn info(&self, conv: ConversationId) -> Result<Info, HostError> {
        Ok(Info::of(&self.repo(conv)?)?)
    }

    /// The pending invitations, oldest first.
    pub fn requests(&self) -> Result<Vec<Request>, HostError> {
        Ok(Requests::load(&self.home)?.requests)
    }

    /// The remembered addresses and refused devices.
    pub fn peers(&self) -> Result<PeerBook, HostError> {
        Ok(PeerBook::load(&self.home)?)
    }
}

/// What [`Host::invite`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invited {
    /// The `member` `add` commit.
    pub commit: CommitId,
    /// Why the invitation could not be handed to any transport now, if it could not (it is
    /// sent again whenever a device of the invitee connects).
    pub not_sent: Option<String>,
}

/// What [`Host::vote`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Voted {
    /// This admin's vote.
    pub vote: CommitId,
    /// The commit applying the decision, when this vote made it pass.
    pub applied: Option<CommitId>,
}

impl Host {
    /// A builder for the node whose state is in `home`, signing as `me` (usually
    /// `home.identity()?.into_local()`).
    pub fn builder(home: Home, me: LocalIdentity) -> HostBuilder {
        HostBuilder {
            home,
            me,
            storage: None,
            transports: Vec::new(),
            discovery: None,
            engine: None,
            loader: None,
            config: HostConfig::default(),
        }
    }

    /// Starts serving: incoming channels and signals, invitations, connections, dialling,
    /// publishing this device's addresses. Idempotent. Needs a tokio runtime.
    pub fn start(&self) {
        if self.inner.started.swap(true, Ordering::SeqCst) {
            return;
        }
        let mut tasks = self.inner.mux.pump();
        let node = self.inner.node.clone();
        tasks.push(tokio::spawn(async move { node.run().await }));
        if let Some(rx) = lock(&self.inner.invites_rx).take() {
            tasks.push(tokio::spawn(self.clone().receive_invitations(rx)));
        }
        tasks.push(tokio::spawn(self.clone().maintain()));
        if let Some(d) = self.inner.mux.discovery() {
            let addrs: Vec<SocketAddr> = self
                .inner
                .mux
                .transports()
                .iter()
                .filter_map(|t| t.local_addr())
                .map(|mut a| {
                    if a.ip().is_unspecified() {
                        a.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
                    }
                    a
                })
                .collect();
            if !addrs.is_empty() {
                d.publish(addrs);
            }
        }
        lock(&self.inner.tasks).extend(tasks);
    }

    /// Stops the host's tasks (the transports stay open until dropped).
    pub fn shutdown(&self) {
        for t in lock(&self.inner.tasks).drain(..) {
            t.abort();
        }
    }

    /// The event stream: every event from now on (a subscriber that falls more than 4096
    /// events behind loses the oldest and is told so by `RecvError::Lagged`).
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.inner.node.events()
    }

    /// This device and its account.
    pub fn peer(&self) -> Peer {
        self.inner.node.peer()
    }

    /// The sync engine underneath (for what the host does not wrap).
    pub fn node(&self) -> &Node {
        &self.inner.node
    }

    /// The home directory.
    pub fn home(&self) -> &Home {
        &self.inner.home
    }

    /// The storage.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.inner.storage
    }

    /// The validation engine.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.inner.engine
    }

    /// Runs `f` on the blocking pool (storage writes fsync; validation walks whole branches).
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Host) -> Result<T, HostError> + Send + 'static,
    ) -> Result<T, HostError> {
        let host = self.clone();
        tokio::task::spawn_blocking(move || f(&host))
            .await
            .map_err(|e| HostError::Task(e.to_string()))?
    }

    fn repo(&self, conv: ConversationId) -> Result<Repo<'_>, HostError> {
        Ok(Repo::open(&*self.inner.storage, conv)?.with_engine(self.inner.engine.clone()))
    }

    /// Appends the commit `make` builds from the state at the head (validated before it is
    /// stored); when a fetch moved the head meanwhile, `make` runs again on the new head.
    fn append_with(
        &self,
        conv: ConversationId,
        make: &MakeCommit<'_>,
    ) -> Result<CommitId, HostError> {
        let repo = self.repo(conv)?;
        let me = self.inner.node.identity();
        let mut tries = 0;
        loop {
            let st = repo.state(&repo.head()?)?;
            let (body, changes) = make(&repo, &st)?;
            match repo.append(&me.signer(), &body, &changes, unix_now()) {
                Err(
                    RepoError::NotFastForward(_)
                    | RepoError::Storage(StorageError::HeadMoved { .. }),
                ) if tries < 8 => tries += 1,
                r => return Ok(r?),
            }
        }
    }

    async fn commit_op(
        &self,
        conv: ConversationId,
        make: impl Fn(&Repo<'_>, &LocalIdentity, &State) -> Result<(Body, Vec<FileChange>), HostError>
            + Send
            + 'static,
    ) -> Result<CommitId, HostError> {
        let id = self
            .blocking(move |h| {
                let me = h.inner.node.identity();
                h.append_with(conv, &|repo, st| make(repo, me, st))
            })
            .await?;
        self.inner.node.announce(conv, id).await;
        Ok(id)
    }

    /// Creates a conversation with this device as its admin. A one-to-one conversation names
    /// the invitee (`invite`), who is sent the invitation; other modes take none.
    pub async fn create(
        &self,
        mode: Mode,
        invite: Option<AccountUri>,
    ) -> Result<ConversationId, HostError> {
        let conv = self
            .blocking(move |h| {
                let me = h.inner.node.identity();
                Ok(create_conversation(
                    &*h.inner.storage,
                    &me.signer(),
                    mode,
                    invite,
                    unix_now(),
                )?)
            })
            .await?;
        if let Some(uri) = invite {
            if let Err(e) = self.send_invitation(conv, Destination::Account(uri)).await {
                tracing::debug!(target: LOG, %conv, error = %e, "invitation not sent now");
            }
        }
        Ok(conv)
    }

    /// Sends a text message.
    pub async fn send(&self, conv: ConversationId, text: &str) -> Result<CommitId, HostError> {
        self.send_body(conv, Body::text(text), Vec::new()).await
    }

    /// Commits any body (a plugin's type, a reply, an edit...) with its file changes.
    pub async fn send_body(
        &self,
        conv: ConversationId,
        body: Body,
        changes: Vec<FileChange>,
    ) -> Result<CommitId, HostError> {
        self.commit_op(conv, move |_, _, _| Ok((body.clone(), changes.clone())))
            .await
    }

    /// Invites `uri`: commits it to `invited/` and sends the invitation to its devices.
    pub async fn invite(
        &self,
        conv: ConversationId,
        uri: AccountUri,
    ) -> Result<Invited, HostError> {
        let commit = self
            .commit_op(conv, move |_, _, _| Ok(ops::invite(uri)))
            .await?;
        let not_sent = self
            .send_invitation(conv, Destination::Account(uri))
            .await
            .err()
            .map(|e| e.to_string());
        Ok(Invited { commit, not_sent })
    }

    /// Joins `conv`: clones it first if it is not stored (from the device at `from`, else from
    /// the inviting device and the inviter's other connected devices), then commits the join
    /// and forgets the request.
    pub async fn join(
        &self,
        conv: ConversationId,
        from: Option<SocketAddr>,
    ) -> Result<CommitId, HostError> {
        self.clone_conversation(conv, from).await?;
        let commit = self
            .commit_op(conv, |_, me, st| Ok(ops::join(st, &me.account)))
            .await?;
        Requests::update(&self.inner.home, |r| r.remove(&conv))?;
        Ok(commit)
    }

    /// Clones `conv` unless it is stored (see [`Host::join`]).
    pub async fn clone_conversation(
        &self,
        conv: ConversationId,
        from: Option<SocketAddr>,
    ) -> Result<(), HostError> {
        if self.inner.storage.head(&conv)?.is_some() {
            return Ok(());
        }
        lock(&self.inner.syncing).insert(conv);
        struct Syncing<'a>(&'a Host, ConversationId);
        impl Drop for Syncing<'_> {
            fn drop(&mut self) {
                lock(&self.0.inner.syncing).remove(&self.1);
            }
        }
        let _syncing = Syncing(self, conv);
        let sources: Vec<DeviceId> = match from {
            Some(addr) => vec![
                self.inner
                    .mux
                    .dial(addr)
                    .await
                    .map_err(|source| HostError::Dial { addr, source })?
                    .device,
            ],
            None => {
                let req = Requests::load(&self.inner.home)?
                    .get(&conv)
                    .cloned()
                    .ok_or(HostError::NoInvitation(conv))?;
                let mut v = vec![req.device];
                v.extend(
                    self.inner
                        .mux
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
            match self.inner.node.sync_from(conv, device).await {
                Ok(_) if self.inner.storage.head(&conv)?.is_some() => {
                    tracing::info!(target: LOG, %conv, %device, "cloned");
                    return Ok(());
                }
                Ok(_) => why = format!("device {device} sent nothing"),
                Err(e) => why = format!("device {device}: {e}"),
            }
        }
        Err(HostError::CloneFailed { conv, reason: why })
    }

    /// Declines an invitation: the request goes and is never listed again.
    pub async fn decline(&self, conv: ConversationId) -> Result<(), HostError> {
        let removed = Requests::update(&self.inner.home, |r| {
            r.declined.insert(conv);
            r.remove(&conv)
        })?;
        match removed {
            Some(_) => Ok(()),
            None => Err(HostError::NoInvitation(conv)),
        }
    }

    /// The pending invitations, oldest first.
    pub fn requests(&self) -> Result<Vec<Request>, HostError> {
        self.reader().requests()
    }

    /// The stored conversations.
    pub fn conversations(&self) -> Result<Vec<ConversationId>, HostError> {
        self.reader().conversations()
    }

    /// What reads the host's storage and home, without its identity.
    pub fn reader(&self) -> Reader {
        Reader {
            storage: self.inner.storage.clone(),
            engine: self.inner.engine.clone(),
            home: self.inner.home.clone(),
        }
    }

    /// The conversation as a client shows it ([`Reader::timeline`]).
    pub async fn timeline(
        &self,
        conv: ConversationId,
        limit: Option<usize>,
    ) -> Result<Vec<Entry>, HostError> {
        self.blocking(move |h| h.reader().timeline(conv, limit))
            .await
    }

    /// Every commit in display order, bodies raw ([`Reader::log`]).
    pub async fn log(
        &self,
        conv: ConversationId,
        limit: Option<usize>,
    ) -> Result<Vec<LogEntry>, HostError> {
        self.blocking(move |h| h.reader().log(conv, limit)).await
    }

    /// Who is in the conversation, by role ([`Reader::members`]).
    pub async fn members(&self, conv: ConversationId) -> Result<Vec<Member>, HostError> {
        self.blocking(move |h| h.reader().members(conv)).await
    }

    /// Mode, head, size, title and membership counts; `syncing` while a clone runs.
    pub async fn info(&self, conv: ConversationId) -> Result<Info, HostError> {
        if self.is_syncing(&conv) {
            return Ok(Info::syncing(conv));
        }
        self.blocking(move |h| h.reader().info(conv)).await
    }

    /// Whether a clone of `conv` is running.
    pub fn is_syncing(&self, conv: &ConversationId) -> bool {
        lock(&self.inner.syncing).contains(conv)
    }

    /// Changes the conversation's title and/or description.
    pub async fn profile(
        &self,
        conv: ConversationId,
        title: Option<String>,
        description: Option<String>,
    ) -> Result<CommitId, HostError> {
        if title.is_none() && description.is_none() {
            return Err(HostError::Invalid(
                "nothing to change: give a title and/or a description".into(),
            ));
        }
        self.commit_op(conv, move |_, _, _| {
            Ok(ops::profile(title.as_deref(), description.as_deref()))
        })
        .await
    }

    /// Casts this admin's vote to ban, unban or promote `target`; applies the decision when
    /// the vote makes it pass (more than half of the admins).
    pub async fn vote(
        &self,
        conv: ConversationId,
        target: Target,
        action: VoteAction,
    ) -> Result<Voted, HostError> {
        let voted = self
            .blocking(move |h| {
                let voter = h.inner.node.identity().account.uri();
                let vote =
                    h.append_with(conv, &|_, st| Ok(ops::vote(st, &voter, target, action)?))?;
                let repo = h.repo(conv)?;
                let st = repo.state(&vote)?;
                let applied = if st.vote_passed(layout::VoteDir::from(action), &target) {
                    Some(h.append_with(conv, &|repo, st| {
                        Ok(ops::apply_vote(repo, st, target, action)?)
                    })?)
                } else {
                    None
                };
                Ok(Voted { vote, applied })
            })
            .await?;
        self.inner
            .node
            .announce(conv, voted.applied.unwrap_or(voted.vote))
            .await;
        Ok(voted)
    }

    /// Leaves the conversation (removes this account's certificates).
    pub async fn leave(&self, conv: ConversationId) -> Result<CommitId, HostError> {
        self.commit_op(conv, |repo, me, _| {
            Ok(ops::leave(repo, &repo.head()?, me.account.uri())?)
        })
        .await
    }

    /// The remembered addresses and refused devices.
    pub fn peers(&self) -> Result<PeerBook, HostError> {
        self.reader().peers()
    }

    /// Remembers that `who` listens at `addr` (kept for good, dialled while nobody of it is
    /// connected); whether the book changed.
    pub fn add_peer(&self, who: Target, addr: SocketAddr) -> Result<bool, HostError> {
        let changed = PeerBook::update(&self.inner.home, |b| {
            b.remember(who, addr, Source::Manual, unix_now())
        })?;
        self.inner.mux.add_address(destination(who), addr);
        lock(&self.inner.dials).remove(&addr);
        Ok(changed)
    }

    /// Takes `peers.json` again (after another process of this home changed it): addresses
    /// go to the transports, refused devices to the filter.
    pub async fn reload_peers(&self) -> Result<(), HostError> {
        let book = PeerBook::load(&self.inner.home)?;
        for e in &book.peers {
            self.inner.mux.add_address(destination(e.who), e.addr);
        }
        lock(&self.inner.dials).clear();
        let before = self.inner.mux.blocked();
        for d in book.blocked.iter().filter(|d| !before.contains(d)) {
            self.apply_block(*d, true);
        }
        for d in before.iter().filter(|d| !book.blocked.contains(d)) {
            self.apply_block(*d, false);
        }
        Ok(())
    }

    /// Refuses `device` (its channels and signals are dropped, none are sent to it), or
    /// takes it back (a sync with it starts at once, in the background, if it is connected);
    /// whether that changed anything.
    pub async fn block(&self, device: DeviceId, blocked: bool) -> Result<bool, HostError> {
        let changed = PeerBook::update(&self.inner.home, |b| {
            if blocked {
                b.blocked.insert(device)
            } else {
                b.blocked.remove(&device)
            }
        })?;
        self.apply_block(device, blocked);
        Ok(changed)
    }

    /// Applies a block to the transports' filter; a device taken back is synced with in the
    /// background (a sync can take up to the idle timeout: the caller, often a control
    /// request, does not wait for it).
    fn apply_block(&self, device: DeviceId, blocked: bool) {
        self.inner.mux.set_blocked(device, blocked);
        if !blocked {
            if let Some(p) = self
                .inner
                .mux
                .connected()
                .into_iter()
                .find(|p| p.device == device)
            {
                let host = self.clone();
                tokio::spawn(async move { host.on_connected(p).await });
            }
        }
    }

    /// How many invitations were dropped unread because their sender's account was over its
    /// rate ([`INVITATION_BURST`], then one per [`INVITATION_EVERY`]).
    pub fn rate_limited_invitations(&self) -> u64 {
        self.inner
            .rated_invitations
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The devices connected now (refused ones left out).
    pub fn connected(&self) -> Vec<Peer> {
        self.inner.mux.connected()
    }

    /// The discovery service's state (`{}` without one).
    pub async fn discovery_status(&self) -> Option<serde_json::Value> {
        match self.inner.mux.discovery() {
            Some(d) => Some(d.status().await),
            None => None,
        }
    }

    /// Sends the invitation to `conv` (its title and mode) to `to`, best effort (it is sent
    /// again whenever a device of an invited account connects).
    pub async fn send_invitation(
        &self,
        conv: ConversationId,
        to: Destination,
    ) -> Result<(), HostError> {
        let (title, mode) = {
            let repo = self.repo(conv)?;
            let head = repo.head()?;
            (
                repo.title(&head),
                Some(repo.state(&head)?.mode.name().to_owned()),
            )
        };
        let invitation = Invitation {
            conversation: conv,
            title,
            mode,
        };
        let payload = serde_json::to_vec(&invitation)
            .map_err(|e| HostError::Invalid(format!("cannot encode an invitation: {e}")))?;
        self.inner
            .mux
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

    /// Keeps invitations as requests (unless this account is already in the conversation)
    /// and reports them.
    async fn receive_invitations(self, mut rx: mpsc::Receiver<(Peer, Signal)>) {
        let me = self.peer().account;
        let cut = |s: Option<String>| s.map(|s| s.chars().take(MAX_ANNOUNCED).collect::<String>());
        let mut rate = invitation_rate();
        while let Some((from, signal)) = rx.recv().await {
            // Cheapest first: a sender past its rate costs no parse, lookup or file write.
            if !rate.allow(from.account, Instant::now().into_std()) {
                self.inner
                    .rated_invitations
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::debug!(target: LOG, account = %from.account, "invitation dropped: the sender is over its rate");
                continue;
            }
            let Ok(inv) = serde_json::from_slice::<Invitation>(&signal.payload) else {
                tracing::debug!(target: LOG, device = %from.device, "malformed invitation ignored");
                continue;
            };
            let conv = inv.conversation;
            let joined = Repo::open(&*self.inner.storage, conv)
                .and_then(|r| r.state(&r.head()?))
                .is_ok_and(|st| {
                    matches!(st.role(&me), Some(MemberRole::Admin | MemberRole::Member))
                });
            if joined {
                continue;
            }
            let title = cut(inv.title);
            let request = Request {
                id: conv,
                from: from.account,
                device: from.device,
                received: unix_now(),
                title: title.clone(),
                mode: cut(inv.mode),
            };
            match Requests::update(&self.inner.home, |r| r.add(request)) {
                Ok(true) => {
                    tracing::info!(target: LOG, %conv, from = %from.account, "invitation received");
                    self.inner
                        .node
                        .emit(Event::InvitationReceived { conv, from, title });
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(target: LOG, %conv, error = %e, "cannot keep an invitation")
                }
            }
        }
    }

    /// Every tick: report and sync with newly connected devices, resync, dial missing ones.
    async fn maintain(self) {
        let mut known: HashMap<DeviceId, Peer> = HashMap::new();
        let mut tick = tokio::time::interval(self.inner.config.tick);
        let mut last_resync = Instant::now();
        loop {
            tick.tick().await;
            let connected = self.inner.mux.connected();
            let resync = last_resync.elapsed() >= self.inner.config.resync;
            if resync {
                last_resync = Instant::now();
            }
            for p in &connected {
                let new = !known.contains_key(&p.device);
                if new {
                    self.inner.node.emit(Event::PeerConnected { peer: *p });
                }
                if new || resync {
                    let host = self.clone();
                    let p = *p;
                    tokio::spawn(async move {
                        if new {
                            host.on_connected(p).await
                        } else {
                            host.sync_with(p).await
                        }
                    });
                }
            }
            let now: HashMap<DeviceId, Peer> = connected.iter().map(|p| (p.device, *p)).collect();
            for (d, p) in &known {
                if !now.contains_key(d) {
                    self.inner.node.emit(Event::PeerDisconnected { peer: *p });
                }
            }
            known = now;
            self.dial_missing(&connected);
        }
    }

    /// A device connected (or was taken back): remember its address, send it the invitations
    /// its account is waiting for, fetch what it has of the conversations we share.
    async fn on_connected(&self, peer: Peer) {
        if self.inner.mux.is_blocked(&peer.device) {
            return;
        }
        tracing::info!(target: LOG, device = %peer.device, account = %peer.account, "connected");
        if let Some(addr) = self.inner.mux.address_of(&peer.device) {
            lock(&self.inner.dials).remove(&addr);
            let learned = PeerBook::update(&self.inner.home, |b| {
                b.remember(
                    Target::Device(peer.device),
                    addr,
                    Source::Learned,
                    unix_now(),
                )
            });
            if let Err(e) = learned {
                tracing::warn!(target: LOG, error = %e, "cannot remember an address");
            }
        }
        let me = self.peer().account;
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
    fn states(&self) -> Vec<(ConversationId, Arc<State>)> {
        self.inner
            .storage
            .conversations()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|c| {
                let st = Repo::open(&*self.inner.storage, c)
                    .and_then(|r| r.state(&r.head()?))
                    .ok()?;
                Some((c, st))
            })
            .collect()
    }

    /// Fetches from `peer` every conversation it has a device in.
    async fn sync_with(&self, peer: Peer) {
        if self.inner.mux.is_blocked(&peer.device) {
            return;
        }
        for (conv, st) in self.states() {
            if st.devices.contains_key(&peer.device) {
                if let Err(e) = self.inner.node.sync_from(conv, peer.device).await {
                    tracing::debug!(target: LOG, %conv, device = %peer.device, error = %e, "sync failed");
                }
            }
        }
    }

    /// Dials remembered and configured addresses nobody is connected from, with backoff.
    fn dial_missing(&self, connected: &[Peer]) {
        let mut cache = lock(&self.inner.peer_book);
        let book = cache.get(&self.inner.home);
        let live: HashSet<SocketAddr> = connected
            .iter()
            .filter_map(|p| self.inner.mux.address_of(&p.device))
            .collect();
        let own: HashSet<SocketAddr> = self
            .inner
            .mux
            .transports()
            .iter()
            .filter_map(|t| t.local_addr())
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
        targets.extend(&self.inner.config.dial);
        drop(cache);
        let now = Instant::now();
        let (first, cap) = self.inner.config.dial_backoff;
        for addr in targets {
            if live.contains(&addr) || own.contains(&addr) {
                continue;
            }
            {
                let mut dials = lock(&self.inner.dials);
                if !dials
                    .entry(addr)
                    .or_insert_with(|| Dial::new(now, first))
                    .start(now)
                {
                    continue;
                }
            }
            let host = self.clone();
            tokio::spawn(async move {
                let result = tokio::time::timeout(
                    host.inner.config.connect_timeout,
                    host.inner.mux.dial(addr),
                )
                .await;
                let mut dials = lock(&host.inner.dials);
                match result {
                    Ok(Ok(peer)) => {
                        tracing::debug!(target: LOG, %addr, device = %peer.device, "dialled");
                        dials.remove(&addr);
                    }
                    Ok(Err(_)) | Err(_) => {
                        if let Some(d) = dials.get_mut(&addr) {
                            tracing::debug!(target: LOG, %addr, retry_in = ?d.delay, "unreachable");
                            d.failed(Instant::now(), cap);
                        }
                    }
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A member flooding invitations (to conversations that do not exist) gets one burst of
    /// them kept and reported, the rest are dropped unread; another account's invitation
    /// after the flood is kept.
    #[tokio::test]
    async fn an_invitation_flood_costs_one_burst_and_others_still_get_through() {
        use crate::sim::SimNetwork;
        use crate::traits::Transport as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let net = SimNetwork::new(3);
        let identity = |name: &str| {
            Home::new(dir.path().join(name))
                .create_identity(name)
                .expect("identity")
                .into_local()
        };
        let alice_me = identity("alice");
        let alice_peer = alice_me.peer();
        let alice_device = alice_peer.device;
        let alice = Host::builder(Home::new(dir.path().join("alice")), alice_me)
            .storage(Arc::new(crate::storage::MemoryStorage::new()))
            .transport(Arc::new(net.join(alice_peer)))
            .build()
            .expect("host");
        let mut events = alice.events();
        alice.start();
        let (mallory, bob) = (identity("mallory").peer(), identity("bob").peer());
        let (mallory_net, bob_net) = (net.join(mallory), net.join(bob));
        let invite = |n: u64| Signal {
            kind: INVITE.into(),
            payload: serde_json::to_vec(&Invitation {
                conversation: format!("{n:040x}").parse().expect("id"),
                title: Some("free stuff".into()),
                mode: None,
            })
            .expect("json"),
        };
        let flood = 200;
        for n in 0..flood {
            mallory_net
                .send_signal(Destination::Device(alice_device), invite(n + 1))
                .await
                .expect("sent");
        }
        let real: ConversationId = format!("{:040x}", 0xb0b).parse().expect("id");
        bob_net
            .send_signal(Destination::Device(alice_device), invite(0xb0b))
            .await
            .expect("sent");
        let mut from_mallory = 0;
        tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                match events.recv().await {
                    Ok(Event::InvitationReceived { conv, from, .. }) => {
                        if from.account == mallory.account {
                            from_mallory += 1;
                        } else if conv == real {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => panic!("events: {e}"),
                }
            }
        })
        .await
        .expect("bob's invitation is reported");
        assert_eq!(
            from_mallory, INVITATION_BURST,
            "one burst of the flood is taken"
        );
        assert_eq!(
            alice.rate_limited_invitations(),
            flood - u64::from(INVITATION_BURST),
            "the rest is dropped unread"
        );
        let requests = alice.requests().expect("requests");
        assert!(requests
            .iter()
            .any(|r| r.id == real && r.from == bob.account));
        assert!(
            requests
                .iter()
                .filter(|r| r.from == mallory.account)
                .count()
                <= MAX_PENDING_PER_SENDER
        );
        alice.shutdown();
    }

    #[test]
    fn dialling_backs_off_exponentially_up_to_the_cap_one_attempt_at_a_time() {
        let (first, cap) = HostConfig::default().dial_backoff;
        let t0 = Instant::now();
        let mut d = Dial::new(t0, first);
        assert!(d.start(t0), "the first attempt is at once");
        assert!(!d.start(t0), "one attempt at a time");
        let mut now = t0;
        let mut waits = Vec::new();
        for _ in 0..10 {
            d.failed(now, cap);
            assert!(!d.start(now), "not before the backoff has passed");
            waits.push(d.next - now);
            now = d.next;
            assert!(d.start(now));
        }
        assert_eq!(waits[0], first);
        assert_eq!(waits[1], first * 2);
        assert_eq!(waits[2], first * 4);
        assert_eq!(*waits.last().expect("waits"), cap, "capped");
        assert!(waits.windows(2).all(|w| w[0] <= w[1]));
    }
}
