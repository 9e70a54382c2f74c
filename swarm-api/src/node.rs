//! `Node`: the generic driver of one device over any [`Storage`] and [`Transport`].
//!
//! - A local commit ([`Node::send`], [`Node::commit`]) is validated and stored at once, then
//!   announced to every other device of the conversation as an
//!   `application/im-gitmessage-id` signal `{deviceId, conversationId, commit}`.
//! - An announcement makes the node fetch from the announcing peer (authenticated by the
//!   transport, never taken from the payload) if that peer's account is a member or invited in
//!   our state of the conversation ([`Node::is_member`]; announcements of others are ignored),
//!   unless the commit is already *integrated*:
//!   reachable from this node's head. A commit that is merely stored (a branch kept beside the
//!   head after a divergence) does not count, so the announcement of a branch we hold but have
//!   not merged still brings the exchange that merges it.
//! - A divergence ends in one merge: of the two devices that meet, the
//!   [`sync::designated_merger`] merges at once; the other stores the branch, asks the peer to
//!   fetch back, merges anyway on a second exchange with the same peer, and merges on its own
//!   after [`NodeConfig::merge_delay`] if the branch is still beside its head by then.
//! - Incoming `sync/<conversation>` channels are served with access control.
//! - What happens is reported as [`Event`]s on a broadcast stream ([`Node::events`]).
//!
//! A fetch never blocks local commits (no lock is held while bytes move; the final promotion
//! is a compare-and-swap that is simply recomputed if a local commit won, and a local commit
//! whose head moved meanwhile is rebuilt on the new head). Validation and writes (fsync) run on
//! the blocking pool of a multi-thread runtime, not on the async workers; on a current-thread
//! runtime (the simulation) they run inline, which keeps a seeded run deterministic. A peer whose
//! branches fail (refused, timed out, broken) is retried with exponential backoff up to a cap,
//! so a peer that keeps sending an invalid branch cannot cause a retry storm; the backoff
//! holds back the peer's whole account when it is known (device ids are free to mint).

use std::collections::{HashMap, HashSet};
use std::future::Future as _;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;
use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::body::{Body, MemberAction};
use crate::graph::Graph;
use crate::id::{AccountUri, CommitId, ConversationId, DeviceId, Target};
use crate::identity::{AccountCert, Crl, Device};
use crate::repo::{FileChange, Repo, RepoError, Signer};
use crate::storage::{ConversationObjects, Storage};
use crate::sync::{self, BundleLimits, Integrated, SyncError};
use crate::traits::{Destination, Incoming, Peer, Signal, Transport};
use crate::validate::Engine;

/// The signal kind of commit announcements.
pub const ANNOUNCE: &str = "application/im-gitmessage-id";

/// While a fetch of a conversation runs, at most this many announcements of it wait: one per
/// device (its newest replaces its older one), the rest dropped. A flood costs at most this
/// many later fetches, not one per signal.
pub const MAX_QUEUED_ANNOUNCEMENTS: usize = 64;

/// A fetch that the announcement queue of a conversation has waited on for
/// [`NodeConfig::sync_timeout`] goes on by itself and the queue moves on, at most this many
/// per conversation at once (then the queue waits again): a slow or trickling member holds
/// its own fetch, not every other member's.
pub const MAX_DETACHED_FETCHES: usize = 4;

/// An account's announcements are taken at most this many at once...
pub const ANNOUNCE_BURST: u32 = 64;
/// ...then one per this much time (20 a second): beyond it they are dropped before they are
/// even parsed (a member announces each commit it makes; a missed one is caught up by the
/// next announcement or resync).
pub const ANNOUNCE_EVERY: Duration = Duration::from_millis(50);

/// The owned identity a node signs with.
pub struct LocalIdentity {
    /// The account certificate.
    pub account: AccountCert,
    /// This device.
    pub device: Device,
    /// The account's current CRL.
    pub crl: Crl,
}

impl LocalIdentity {
    /// A signer borrowing this identity.
    pub fn signer(&self) -> Signer<'_> {
        Signer {
            account: &self.account,
            device: &self.device,
            crl: &self.crl,
        }
    }
    /// This device as a peer.
    pub fn peer(&self) -> Peer {
        Peer {
            device: self.device.id(),
            account: self.account.uri(),
        }
    }
}

/// Tuning of a node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Idle timeout of a fetch: one during which no byte arrives from the peer for this long
    /// is abandoned (and the peer backed off), however long it has run. A large clone on a slow
    /// link finishes as long as bytes keep flowing; a peer that goes silent costs this long.
    pub sync_timeout: Duration,
    /// Safety cap on a whole fetch, however steadily its bytes flow: bounds how long a peer
    /// trickling bytes just often enough to beat [`NodeConfig::sync_timeout`] holds a fetch
    /// (and the announcements of that conversation queued behind it). Large: the default
    /// (2 h) carries the default bundle limit (4 GiB) at 600 kB/s.
    pub sync_max_duration: Duration,
    /// First backoff after a failed fetch from a peer.
    pub backoff_initial: Duration,
    /// Backoff cap for a peer that misbehaved (a branch that broke a rule, malformed frames,
    /// a bundle over the limits). A fetch that merely failed (a timeout, a lost connection,
    /// `busy`) backs off to at most [`NodeConfig::sync_timeout`]: a member that was slow under
    /// load is heard again soon, and a silent one costs one idle timeout per try.
    pub backoff_max: Duration,
    /// Limits on received bundles.
    pub bundle_limits: BundleLimits,
    /// How long a device that deferred a merge to another device waits before merging the
    /// stored branch itself (the other device may be offline, or not allowed to sign).
    pub merge_delay: Duration,
    /// Announcements each account may send: this many at once, then one per this long
    /// (default [`ANNOUNCE_BURST`], [`ANNOUNCE_EVERY`]); beyond, they are dropped unread.
    pub announce_rate: (u32, Duration),
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            sync_timeout: Duration::from_secs(30),
            sync_max_duration: Duration::from_secs(2 * 3600),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            bundle_limits: BundleLimits::default(),
            merge_delay: Duration::from_secs(5),
            announce_rate: (ANNOUNCE_BURST, ANNOUNCE_EVERY),
        }
    }
}

/// What a node reports.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A message (any non-member, non-merge commit) from another device became part of the
    /// displayed history: reachable from the head, through a fetch or a merge. A branch kept
    /// beside the head after a divergence is reported when it is merged, not when it is stored.
    MessageReceived {
        /// The conversation.
        conv: ConversationId,
        /// The commit.
        commit: CommitId,
        /// Its author's device.
        device: DeviceId,
        /// The device's account, from its certificate in the conversation.
        author: Option<AccountUri>,
        /// The author's display name (from the commit).
        name: String,
        /// The commit time (the author's clock; display only).
        time: i64,
        /// Its body.
        body: Body,
    },
    /// A conversation was cloned and is ready.
    ConversationReady {
        /// The conversation.
        conv: ConversationId,
    },
    /// A membership change became part of the displayed history (as for messages).
    MemberEvent {
        /// The conversation.
        conv: ConversationId,
        /// The commit.
        commit: CommitId,
        /// Who.
        uri: Target,
        /// What.
        action: MemberAction,
    },
    /// A fetch brought new commits; the head is now `head`.
    Synced {
        /// The conversation.
        conv: ConversationId,
        /// The peer fetched from.
        peer: DeviceId,
        /// The new head.
        head: CommitId,
        /// The merge commit this node made, if any.
        merge: Option<CommitId>,
    },
    /// A peer's branch broke a rule; nothing of it was kept and the peer is backed off.
    SyncRejected {
        /// The peer.
        peer: DeviceId,
        /// The conversation.
        conv: ConversationId,
        /// The failing commit.
        commit: CommitId,
        /// The rule.
        rule: &'static str,
        /// Why.
        reason: String,
    },
    /// A fetch failed for another reason (unreachable, timeout, protocol error).
    SyncFailed {
        /// The peer.
        peer: DeviceId,
        /// The conversation.
        conv: ConversationId,
        /// Why.
        reason: String,
    },
    /// A fetch from `peer` started (a clone when the conversation is not stored yet).
    SyncStarted {
        /// The peer.
        peer: DeviceId,
        /// The conversation.
        conv: ConversationId,
    },
    /// A running fetch received more objects (reported per batch, not per object).
    SyncProgress {
        /// The peer.
        peer: DeviceId,
        /// The conversation.
        conv: ConversationId,
        /// Objects received so far in this fetch.
        objects: usize,
    },
    /// An invitation to a conversation arrived and was kept as a request (see
    /// [`crate::host::Host::requests`]). Nothing in it is trusted: joining validates everything.
    InvitationReceived {
        /// The conversation.
        conv: ConversationId,
        /// Who sent it, as the transport authenticated it.
        from: Peer,
        /// The title the inviter announced (unverified, at most 200 characters).
        title: Option<String>,
    },
    /// A device connected (authenticated by the transport).
    PeerConnected {
        /// The device and its account.
        peer: Peer,
    },
    /// A connected device is no longer connected.
    PeerDisconnected {
        /// The device and its account.
        peer: Peer,
    },
}

/// Errors of node operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// A repository operation failed (validation, storage...).
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// A sync failed.
    #[error(transparent)]
    Sync(#[from] SyncError),
    /// The transport failed.
    #[error(transparent)]
    Transport(#[from] crate::traits::TransportError),
    /// The peer is backed off until later.
    #[error("peer {0} is backed off after failures; try later")]
    BackedOff(DeviceId),
    /// A task on the blocking pool died (a bug: please report it).
    #[error("{0}")]
    Task(String),
}

#[derive(Debug, Clone, Copy)]
struct Backoff {
    until: Instant,
    delay: Duration,
}

/// Whom a backoff holds back: the account of a device when the node knows it (device ids are
/// free to mint, an account's failures count once), else the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Source {
    Account(AccountUri),
    Device(DeviceId),
}

/// At most this many incoming syncs of one account (all its devices: device ids are free to
/// mint) are served at once; more are answered [`sync::Frame::Refused`]`("busy")` and closed.
pub const MAX_SERVES_PER_ACCOUNT: usize = 4;

/// At most this many incoming syncs are served at once, all devices together; more are
/// answered `busy` and closed. A served sync whose peer sends nothing for
/// [`NodeConfig::sync_timeout`] ends, so a silent peer holds its slots that long at most.
pub const MAX_SERVES: usize = 64;

/// Of which at most this many go to accounts that are not members (or invited) in our state
/// of the conversation: readers of a PUBLIC conversation, and strangers about to be refused
/// at their `Hello` (a slot is taken before the first frame is read). Accounts are free to
/// mint: without this pool, 16 self-issued accounts holding 4 silent channels each filled
/// every slot and the members got `busy`.
pub const MAX_STRANGER_SERVES: usize = 8;

/// Devices whose account the node remembers (for per-account backoff); past this the memory
/// starts over, and backoffs that have expired are forgotten.
const MAX_KNOWN_DEVICES: usize = 4096;

struct Inner {
    me: LocalIdentity,
    storage: Arc<dyn Storage>,
    transport: Arc<dyn Transport>,
    engine: Arc<Engine>,
    config: NodeConfig,
    graphs: std::sync::Mutex<HashMap<ConversationId, Arc<tokio::sync::Mutex<Graph>>>>,
    backoff: std::sync::Mutex<HashMap<Source, Backoff>>,
    /// The account of each device that announced to us as a member (authenticated by the
    /// transport).
    accounts: std::sync::Mutex<HashMap<DeviceId, AccountUri>>,
    /// Announcements ignored because their sender is not a member (or invited).
    ignored_announcements: std::sync::atomic::AtomicU64,
    /// What each account may still announce ([`NodeConfig::announce_rate`]).
    announce_rate: std::sync::Mutex<crate::rate::PerSender<AccountUri>>,
    /// Announcements dropped unread because their sender's account was over its rate.
    rated_announcements: std::sync::atomic::AtomicU64,
    running: std::sync::Mutex<HashSet<(ConversationId, DeviceId)>>,
    queued: std::sync::Mutex<HashMap<ConversationId, Vec<(DeviceId, CommitId)>>>,
    /// Fetches per conversation that outlasted the queue's patience and go on by themselves
    /// ([`MAX_DETACHED_FETCHES`]).
    detached: Arc<std::sync::Mutex<HashMap<ConversationId, usize>>>,
    /// Announcements being sent, one sender per (conversation, device).
    outbox: Outbox,
    /// Our head when we last left a divergence with this peer to it (a second exchange from
    /// the same head merges anyway; a head that moved since is a new situation).
    deferred: std::sync::Mutex<HashMap<(ConversationId, DeviceId), CommitId>>,
    /// Stored tips beside the head with a local merge scheduled.
    pending_merges: std::sync::Mutex<HashSet<(ConversationId, CommitId)>>,
    fetch_attempts: std::sync::atomic::AtomicU64,
    /// Incoming syncs being served: in all, and per account (bounded by [`MAX_SERVES`]).
    serving: std::sync::Mutex<Serving>,
    /// Incoming syncs refused as `busy`.
    refused_busy: std::sync::atomic::AtomicU64,
    events: broadcast::Sender<Event>,
}

/// The announcements on their way out: at most one send in flight per (conversation,
/// device), and behind it only the newest head (a newer head carries the older one, so the
/// older one is never worth a send of its own). Without it, a fetch that moved the head
/// waited for its announcement to reach every device, so one dead device (its connect
/// timeout) stalled every fetch queued behind it, and a head that moved ten times was
/// announced ten times to each device, each announcement a fetch on the other side.
///
/// The senders hold the transport, not the node; dropping the node aborts them.
#[derive(Default)]
struct Outbox {
    senders: Arc<std::sync::Mutex<HashMap<(ConversationId, DeviceId), OutboxEntry>>>,
}

struct OutboxEntry {
    /// The newest head announced while a send was in flight.
    next: Option<CommitId>,
    task: tokio::task::AbortHandle,
}

impl Outbox {
    fn send(
        &self,
        transport: &Arc<dyn Transport>,
        me: DeviceId,
        conv: ConversationId,
        commit: CommitId,
        device: DeviceId,
    ) {
        let mut senders = self.senders.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = senders.get_mut(&(conv, device)) {
            entry.next = Some(commit);
            return;
        }
        let (transport, table) = (transport.clone(), self.senders.clone());
        let task = tokio::spawn(async move {
            let mut commit = commit;
            loop {
                let payload = serde_json::to_vec(&Announce {
                    device_id: me,
                    conversation_id: conv,
                    commit,
                })
                .unwrap_or_default();
                let signal = Signal {
                    kind: ANNOUNCE.into(),
                    payload,
                };
                if let Err(e) = transport
                    .send_signal(Destination::Device(device), signal)
                    .await
                {
                    tracing::debug!(target: "swarm_api::node", %device, error = %e, "announcement not sent");
                }
                let mut senders = table.lock().unwrap_or_else(|e| e.into_inner());
                match senders.get_mut(&(conv, device)).and_then(|e| e.next.take()) {
                    Some(next) => commit = next,
                    None => {
                        senders.remove(&(conv, device));
                        return;
                    }
                }
            }
        });
        // Inserted under the same lock the task takes before it looks at its entry.
        senders.insert(
            (conv, device),
            OutboxEntry {
                next: None,
                task: task.abort_handle(),
            },
        );
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        let senders = self.senders.lock().unwrap_or_else(|e| e.into_inner());
        for entry in senders.values() {
            entry.task.abort();
        }
    }
}

/// A stream that fails with [`std::io::ErrorKind::TimedOut`] once no byte has been received
/// for `idle` while it is waited on (a read, or a write the peer does not drain): the idle
/// timeout of a fetch. Every byte received restarts it, so a slow but steady transfer runs
/// as long as it needs.
struct IdleStream<S> {
    inner: S,
    idle: Duration,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl<S> IdleStream<S> {
    fn new(inner: S, idle: Duration) -> Self {
        Self {
            inner,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
        }
    }

    /// `Pending`, or the timeout error if the deadline passed.
    fn idle<T>(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<T>> {
        match self.deadline.as_mut().poll(cx) {
            std::task::Poll::Ready(()) => std::task::Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no byte received for {:?}", self.idle),
            ))),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for IdleStream<S> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match std::pin::Pin::new(&mut this.inner).poll_read(cx, buf) {
            std::task::Poll::Pending => this.idle(cx),
            ready => {
                if buf.filled().len() > before {
                    let next = Instant::now() + this.idle;
                    this.deadline.as_mut().reset(next);
                }
                ready
            }
        }
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for IdleStream<S> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        match std::pin::Pin::new(&mut this.inner).poll_write(cx, buf) {
            std::task::Poll::Pending => this.idle(cx),
            ready => ready,
        }
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        match std::pin::Pin::new(&mut this.inner).poll_flush(cx) {
            std::task::Poll::Pending => this.idle(cx),
            ready => ready,
        }
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The incoming syncs being served: in all, of them for strangers, and per account.
#[derive(Default)]
struct Serving {
    total: usize,
    strangers: usize,
    per: HashMap<AccountUri, usize>,
}

/// One incoming sync being served, counted in [`Inner::serving`] while this lives.
struct ServeSlot<'a> {
    inner: &'a Inner,
    account: AccountUri,
    stranger: bool,
}

impl<'a> ServeSlot<'a> {
    /// A slot for `account`, or `None` if it has [`MAX_SERVES_PER_ACCOUNT`] already, the node
    /// serves [`MAX_SERVES`], or (for a `stranger`, an account that is not a member of the
    /// conversation) [`MAX_STRANGER_SERVES`] strangers.
    fn take(inner: &'a Inner, account: AccountUri, stranger: bool) -> Option<Self> {
        let mut serving = inner.serving.lock().unwrap_or_else(|e| e.into_inner());
        let Serving {
            total,
            strangers,
            per,
        } = &mut *serving;
        let mine = per.entry(account).or_default();
        if *total >= MAX_SERVES
            || *mine >= MAX_SERVES_PER_ACCOUNT
            || (stranger && *strangers >= MAX_STRANGER_SERVES)
        {
            if *mine == 0 {
                per.remove(&account);
            }
            return None;
        }
        *total += 1;
        *mine += 1;
        if stranger {
            *strangers += 1;
        }
        drop(serving);
        Some(Self {
            inner,
            account,
            stranger,
        })
    }
}

impl Drop for ServeSlot<'_> {
    fn drop(&mut self) {
        let mut serving = self.inner.serving.lock().unwrap_or_else(|e| e.into_inner());
        let Serving {
            total,
            strangers,
            per,
        } = &mut *serving;
        *total = total.saturating_sub(1);
        if self.stranger {
            *strangers = strangers.saturating_sub(1);
        }
        if let Some(n) = per.get_mut(&self.account) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                per.remove(&self.account);
            }
        }
    }
}

/// A (conversation, peer) fetch in progress, marked in [`Inner::running`] while this lives.
struct Running<'a> {
    inner: &'a Inner,
    key: (ConversationId, DeviceId),
}

impl<'a> Running<'a> {
    /// Marks `key` running, or `None` if a fetch of it runs already.
    fn start(inner: &'a Inner, key: (ConversationId, DeviceId)) -> Option<Self> {
        let fresh = inner
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key);
        // (Not `then_some`: a guard made and dropped here would unmark the running fetch.)
        fresh.then(|| Self { inner, key })
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.inner
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
    }
}

/// One device: storage, transport, identity and the sync logic between them.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

/// The announcement payload.
#[derive(serde::Serialize, serde::Deserialize)]
struct Announce {
    #[serde(rename = "deviceId")]
    device_id: DeviceId,
    #[serde(rename = "conversationId")]
    conversation_id: ConversationId,
    commit: CommitId,
}

/// Wall-clock seconds for commit timestamps (display only; the core never trusts them).
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Runs storage and validation work (fsync, whole-branch validation) off the async workers: on
/// the blocking pool of a multi-thread runtime. On a current-thread runtime (the simulation)
/// it runs inline, so that a seeded run stays deterministic.
async fn off_workers<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, NodeError> {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| NodeError::Task(format!("a storage task failed: {e}"))),
        _ => Ok(f()),
    }
}

impl Node {
    /// A node for `me` over `storage` and `transport`.
    pub fn new(
        me: LocalIdentity,
        storage: Arc<dyn Storage>,
        transport: Arc<dyn Transport>,
        engine: Arc<Engine>,
        config: NodeConfig,
    ) -> Self {
        let (events, _) = broadcast::channel(4096);
        let (burst, every) = config.announce_rate;
        Self {
            inner: Arc::new(Inner {
                me,
                storage,
                transport,
                engine,
                config,
                graphs: Default::default(),
                backoff: Default::default(),
                accounts: Default::default(),
                ignored_announcements: Default::default(),
                announce_rate: std::sync::Mutex::new(crate::rate::PerSender::new(
                    burst,
                    every,
                    MAX_KNOWN_DEVICES,
                )),
                rated_announcements: Default::default(),
                running: Default::default(),
                queued: Default::default(),
                detached: Default::default(),
                outbox: Outbox::default(),
                deferred: Default::default(),
                pending_merges: Default::default(),
                fetch_attempts: Default::default(),
                serving: Default::default(),
                refused_busy: Default::default(),
                events,
            }),
        }
    }

    /// This device.
    pub fn peer(&self) -> Peer {
        self.inner.me.peer()
    }

    /// The identity.
    pub fn identity(&self) -> &LocalIdentity {
        &self.inner.me
    }

    /// The storage.
    pub fn storage(&self) -> &dyn Storage {
        &*self.inner.storage
    }

    /// The event stream (each subscriber gets every event from now on).
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// How many announcements of `conv` wait for its running fetch (at most
    /// [`MAX_QUEUED_ANNOUNCEMENTS`]).
    pub fn queued_announcements(&self, conv: &ConversationId) -> usize {
        self.inner
            .queued
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(conv)
            .map_or(0, Vec::len)
    }

    /// How many incoming syncs this node serves now (at most [`MAX_SERVES`],
    /// [`MAX_SERVES_PER_ACCOUNT`] per account, [`MAX_STRANGER_SERVES`] to non-members).
    pub fn serving(&self) -> usize {
        self.inner
            .serving
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .total
    }

    /// How many incoming syncs were refused as `busy` (over [`MAX_SERVES_PER_ACCOUNT`] or
    /// [`MAX_SERVES`]).
    pub fn busy_refusals(&self) -> u64 {
        self.inner
            .refused_busy
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many fetches this node started (for tests of backoff).
    pub fn fetch_attempts(&self) -> u64 {
        self.inner
            .fetch_attempts
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn graph(&self, conv: &ConversationId) -> Arc<tokio::sync::Mutex<Graph>> {
        let mut g = self.inner.graphs.lock().unwrap_or_else(|e| e.into_inner());
        g.entry(*conv).or_default().clone()
    }

    pub(crate) fn emit(&self, e: Event) {
        let _ = self.inner.events.send(e);
    }

    /// Sends a text message; returns its commit id.
    pub async fn send(&self, conv: ConversationId, text: &str) -> Result<CommitId, NodeError> {
        self.commit(conv, &Body::text(text), &[]).await
    }

    /// Makes a local commit (validated, stored at once) and announces it.
    pub async fn commit(
        &self,
        conv: ConversationId,
        body: &Body,
        changes: &[FileChange],
    ) -> Result<CommitId, NodeError> {
        Box::pin(self.commit_inner(conv, body, changes)).await
    }

    async fn commit_inner(
        &self,
        conv: ConversationId,
        body: &Body,
        changes: &[FileChange],
    ) -> Result<CommitId, NodeError> {
        // Validation and the write (fsync) run off the async workers. A fetch that moved the
        // head meanwhile makes the commit be rebuilt on the new head (and validated again).
        let (node, body, changes) = (self.clone(), body.clone(), changes.to_vec());
        let id = off_workers(move || {
            let repo =
                Repo::open(&*node.inner.storage, conv)?.with_engine(node.inner.engine.clone());
            let mut tries = 0;
            loop {
                match repo.append(&node.inner.me.signer(), &body, &changes, unix_now()) {
                    Err(
                        RepoError::NotFastForward(_)
                        | RepoError::Storage(crate::storage::StorageError::HeadMoved { .. }),
                    ) if tries < 8 => tries += 1,
                    r => return r,
                }
            }
        })
        .await??;
        self.announce(conv, id).await;
        Ok(id)
    }

    /// Announces `commit` to every other device of the conversation.
    ///
    /// Returns once the announcements are queued, not sent: each device has its own sender
    /// (see [`Outbox`]), so a device that vanished costs its connect timeout to nobody else,
    /// and a head that moves again while a send is in flight is sent once, newest only.
    pub async fn announce(&self, conv: ConversationId, commit: CommitId) {
        let devices: Vec<DeviceId> = match Repo::open(&*self.inner.storage, conv)
            .and_then(|r| r.state(&r.head()?))
        {
            Ok(st) => st.devices.keys().copied().collect(),
            Err(e) => {
                tracing::warn!(target: "swarm_api::node", %conv, error = %e, "cannot list devices to announce to");
                return;
            }
        };
        for dev in devices {
            if dev != self.inner.me.device.id() {
                self.announce_to(conv, commit, dev);
            }
        }
    }

    /// Serves incoming channels and signals until the transport closes.
    pub async fn run(&self) {
        while let Some(incoming) = self.inner.transport.next_incoming().await {
            let node = self.clone();
            tokio::spawn(async move { node.handle(incoming).await });
        }
    }

    async fn handle(&self, incoming: Incoming) {
        match incoming {
            Incoming::Channel {
                from,
                name,
                mut stream,
            } => {
                let Some(conv) = name
                    .strip_prefix("sync/")
                    .and_then(|c| c.parse::<ConversationId>().ok())
                else {
                    tracing::debug!(target: "swarm_api::node", %name, "unknown channel");
                    return;
                };
                let idle = self.inner.config.sync_timeout;
                // Members first: strangers share a small pool of their own.
                let stranger = !self.is_member(&conv, &from);
                let Some(_slot) = ServeSlot::take(&self.inner, from.account, stranger) else {
                    self.inner
                        .refused_busy
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::debug!(target: "swarm_api::node", peer = %from.device, "sync refused: busy");
                    let refused = sync::Frame::Refused("busy".into()).encode();
                    let _ = tokio::time::timeout(idle, async {
                        stream.write_all(&refused).await?;
                        stream.shutdown().await
                    })
                    .await;
                    return;
                };
                // A peer that sends nothing for the idle timeout frees its slot.
                let mut stream = IdleStream::new(stream, idle);
                let graph = self.graph(&conv);
                if let Err(e) = sync::serve(
                    &mut stream,
                    from,
                    &*self.inner.storage,
                    &self.inner.engine,
                    &graph,
                )
                .await
                {
                    tracing::debug!(target: "swarm_api::node", peer = %from.device, error = %e, "serving a sync failed");
                }
            }
            Incoming::Signal { from, signal } if signal.kind == ANNOUNCE => {
                // Cheapest first: past its account's rate, a signal is not even parsed.
                let allowed = self
                    .inner
                    .announce_rate
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .allow(from.account, Instant::now().into_std());
                if !allowed {
                    self.inner
                        .rated_announcements
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return;
                }
                let Ok(a) = serde_json::from_slice::<Announce>(&signal.payload) else {
                    tracing::debug!(target: "swarm_api::node", peer = %from.device, "malformed announcement");
                    return;
                };
                // Only members (and invited accounts) make us fetch, in every mode: a
                // stranger's announcement costs a state lookup, never a connection.
                if !self.is_member(&a.conversation_id, &from) {
                    self.inner
                        .ignored_announcements
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::debug!(target: "swarm_api::node", peer = %from.device, account = %from.account, conv = %a.conversation_id, "announcement from a non-member ignored");
                    return;
                }
                self.learn(from);
                self.on_announce(a.conversation_id, from.device, a.commit)
                    .await;
            }
            Incoming::Signal { .. } => {}
        }
    }

    /// Whether `peer` may make this node fetch `conv`: its account is an admin, member or
    /// invited in our state of the conversation (its head), neither it nor the device is
    /// banned, and the device is not revoked by its account there. False for a conversation
    /// not stored here.
    pub fn is_member(&self, conv: &ConversationId, peer: &Peer) -> bool {
        let Ok(Some(head)) = self.inner.storage.head(conv) else {
            return false;
        };
        let src = ConversationObjects {
            storage: &*self.inner.storage,
            conv: *conv,
        };
        match self.inner.engine.state_at(*conv, &src, &head) {
            Ok(st) => {
                !st.is_banned_device(&peer.device)
                    && !self
                        .inner
                        .engine
                        .is_revoked(*conv, &src, &st, &peer.device)
                        .unwrap_or(true)
                    && matches!(
                        st.role(&peer.account),
                        Some(
                            crate::validate::MemberRole::Admin
                                | crate::validate::MemberRole::Member
                                | crate::validate::MemberRole::Invited
                        )
                    )
            }
            Err(e) => {
                tracing::warn!(target: "swarm_api::node", %conv, error = %e, "cannot read the membership");
                false
            }
        }
    }

    /// How many announcements were dropped unread because their sender's account was over
    /// its rate ([`NodeConfig::announce_rate`]).
    pub fn rate_limited_announcements(&self) -> u64 {
        self.inner
            .rated_announcements
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many announcements were ignored because their sender is not a member.
    pub fn ignored_announcements(&self) -> u64 {
        self.inner
            .ignored_announcements
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Remembers the account of a device (bounded by [`MAX_KNOWN_DEVICES`]).
    fn learn(&self, peer: Peer) {
        let mut m = self
            .inner
            .accounts
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if m.len() >= MAX_KNOWN_DEVICES && !m.contains_key(&peer.device) {
            m.clear();
        }
        m.insert(peer.device, peer.account);
    }

    /// Whom a backoff for `device` holds back.
    fn source(&self, device: DeviceId) -> Source {
        match self
            .inner
            .accounts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&device)
        {
            Some(a) => Source::Account(*a),
            None => Source::Device(device),
        }
    }

    /// Whether `commit` is integrated here: reachable from the head of `conv`. A stored commit
    /// that the head does not reach (a branch kept after a divergence) is *not* integrated:
    /// this is the question every "do I have it?" decision asks.
    pub async fn is_integrated(&self, conv: &ConversationId, commit: &CommitId) -> bool {
        let Ok(Some(head)) = self.inner.storage.head(conv) else {
            return false;
        };
        if !matches!(
            self.inner.storage.object(conv, &commit.object_id()),
            Ok(Some(_))
        ) {
            return false;
        }
        let src = ConversationObjects {
            storage: &*self.inner.storage,
            conv: *conv,
        };
        let graph = self.graph(conv);
        let mut g = graph.lock().await;
        g.is_ancestor(&src, commit, &head).unwrap_or(false)
    }

    /// Announcements are handled one fetch at a time per conversation: while a fetch runs,
    /// further announcements queue, and those whose commit was integrated meanwhile are dropped
    /// (so N announcements of one commit cause one fetch, not N).
    async fn on_announce(&self, conv: ConversationId, peer: DeviceId, commit: CommitId) {
        // Only conversations we hold (clones are explicit: `sync_from`).
        if !matches!(self.inner.storage.head(&conv), Ok(Some(_)))
            || self.is_integrated(&conv, &commit).await
        {
            return;
        }
        {
            let mut q = self.inner.queued.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(pending) = q.get_mut(&conv) {
                if let Some(entry) = pending.iter_mut().find(|(d, _)| *d == peer) {
                    entry.1 = commit;
                } else if pending.len() < MAX_QUEUED_ANNOUNCEMENTS {
                    pending.push((peer, commit));
                } else {
                    tracing::debug!(target: "swarm_api::node", %conv, %peer, "announcement dropped: too many waiting");
                }
                return;
            }
            q.insert(conv, Vec::new());
        }
        let mut next = Some((peer, commit));
        while let Some((peer, commit)) = next.take() {
            if !self.is_integrated(&conv, &commit).await {
                self.fetch_for_queue(conv, peer).await;
            }
            loop {
                let candidate = {
                    let mut q = self.inner.queued.lock().unwrap_or_else(|e| e.into_inner());
                    match q.entry(conv).or_default().pop() {
                        Some(c) => c,
                        None => {
                            // Under the same lock as the pop: a new announcement either
                            // queued before (and was popped) or finds no fetch running.
                            q.remove(&conv);
                            break;
                        }
                    }
                };
                if !self.is_integrated(&conv, &candidate.1).await {
                    next = Some(candidate);
                    break;
                }
            }
        }
    }

    /// Runs the announcement queue's fetch of `conv` from `peer`, waiting for it at most
    /// [`NodeConfig::sync_timeout`]: a fetch still running then (a large history on a slow
    /// link, or a member trickling bytes just under the idle timeout for up to
    /// [`NodeConfig::sync_max_duration`]) goes on by itself, and the queue moves to the next
    /// announcement. At most [`MAX_DETACHED_FETCHES`] per conversation go on so; beyond, the
    /// queue waits for this one.
    async fn fetch_for_queue(&self, conv: ConversationId, peer: DeviceId) {
        let node = self.clone();
        let mut task = tokio::spawn(async move {
            let _ = node.sync_from(conv, peer).await;
        });
        if tokio::time::timeout(self.inner.config.sync_timeout, &mut task)
            .await
            .is_ok()
        {
            return;
        }
        let detached = self.inner.detached.clone();
        let slot = {
            let mut d = detached.lock().unwrap_or_else(|e| e.into_inner());
            let n = d.entry(conv).or_default();
            (*n < MAX_DETACHED_FETCHES).then(|| *n += 1).is_some()
        };
        if !slot {
            let _ = task.await;
            return;
        }
        tracing::debug!(target: "swarm_api::node", %conv, %peer, "a slow fetch goes on by itself; the queue moves on");
        tokio::spawn(async move {
            let _ = task.await;
            let mut d = detached.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = d.get_mut(&conv) {
                *n -= 1;
                if *n == 0 {
                    d.remove(&conv);
                }
            }
        });
    }

    /// Fetches `conv` from `peer` now (or clones it if it is not stored here), respecting the
    /// peer's backoff. Concurrent requests for the same (conversation, peer) run once.
    pub async fn sync_from(
        &self,
        conv: ConversationId,
        peer: DeviceId,
    ) -> Result<Option<Integrated>, NodeError> {
        // Boxed: the fetch's state machine is large; keep callers' futures small.
        Box::pin(self.sync_from_inner(conv, peer)).await
    }

    async fn sync_from_inner(
        &self,
        conv: ConversationId,
        peer: DeviceId,
    ) -> Result<Option<Integrated>, NodeError> {
        let now = Instant::now();
        {
            let source = self.source(peer);
            let b = self.inner.backoff.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(b) = b.get(&source) {
                if now < b.until {
                    return Err(NodeError::BackedOff(peer));
                }
            }
        }
        // Released however this future ends (dropped too): a cancelled fetch must not leave
        // the peer marked as being fetched from forever.
        let Some(running) = Running::start(&self.inner, (conv, peer)) else {
            return Ok(None);
        };
        self.inner
            .fetch_attempts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.emit(Event::SyncStarted { peer, conv });
        // The idle timeout is on the stream (see `fetch`); this is the safety cap.
        let result =
            tokio::time::timeout(self.inner.config.sync_max_duration, self.fetch(conv, peer)).await;
        drop(running);
        let result = match result {
            Ok(r) => r,
            Err(_) => Err(NodeError::Sync(SyncError::Io(format!(
                "not done within {:?}",
                self.inner.config.sync_max_duration
            )))),
        };
        match &result {
            Ok(Some(i)) => {
                self.reset_backoff(peer);
                self.report(conv, peer, i).await;
            }
            Ok(None) => self.reset_backoff(peer),
            Err(NodeError::Sync(SyncError::Rejected(r))) => {
                self.back_off(peer, true);
                self.emit(Event::SyncRejected {
                    peer,
                    conv,
                    commit: r.commit,
                    rule: r.violation.rule(),
                    reason: r.violation.to_string(),
                });
            }
            Err(NodeError::Transport(crate::traits::TransportError::Unreachable(_))) => {
                // Not the peer's fault, and failing costs nothing: no backoff.
                self.emit(Event::SyncFailed {
                    peer,
                    conv,
                    reason: "unreachable".into(),
                });
            }
            Err(e) => {
                let misbehaved = matches!(
                    e,
                    NodeError::Sync(
                        SyncError::Wire(_)
                            | SyncError::Protocol(_)
                            | SyncError::Limit(_)
                            | SyncError::Object(_)
                    )
                );
                self.back_off(peer, misbehaved);
                self.emit(Event::SyncFailed {
                    peer,
                    conv,
                    reason: e.to_string(),
                });
            }
        }
        if let Ok(Some(i)) = &result {
            if i.old_head != Some(i.head) {
                // Tell the others (they may lack what we merged).
                self.announce(conv, i.head).await;
            } else if !i.new_commits.is_empty() && i.unmerged.is_none() {
                // The peer's branch is new here but our head already covers it (an equivalent
                // merge with the smaller id, or more): tell the peer, which adopts our head
                // when it fetches it. Otherwise equivalent merges collapse only when each side
                // happens to fetch the smaller one.
                self.announce_to(conv, i.head, peer);
            }
        }
        result
    }

    /// Announces `commit` to one device, through its [`Outbox`] sender.
    fn announce_to(&self, conv: ConversationId, commit: CommitId, device: DeviceId) {
        self.inner.outbox.send(
            &self.inner.transport,
            self.inner.me.device.id(),
            conv,
            commit,
            device,
        );
    }

    async fn fetch(
        &self,
        conv: ConversationId,
        peer: DeviceId,
    ) -> Result<Option<Integrated>, NodeError> {
        let idle = self.inner.config.sync_timeout;
        let stream = tokio::time::timeout(
            idle,
            self.inner
                .transport
                .open_channel(peer, &format!("sync/{conv}")),
        )
        .await
        .map_err(|_| SyncError::Io(format!("cannot connect within {idle:?}")))??;
        let mut stream = IdleStream::new(stream, idle);
        // The first time a divergence with this peer is seen, only the designated one of the
        // two merges (one merge instead of one per device); if it comes back unmerged while our
        // head is still the one we deferred from, we merge ourselves (the other side may not be
        // allowed to).
        let head = self.inner.storage.head(&conv).map_err(SyncError::from)?;
        let deferred_before = {
            let d = self
                .inner
                .deferred
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            head.is_some() && d.get(&(conv, peer)) == head.as_ref()
        };
        let events = self.inner.events.clone();
        // The received branch holds its quarantine area in a guard: dropped with it on every
        // path (an error, this future dropped by a timeout or a shutdown).
        let (received, _) = sync::receive_shared(
            &mut stream,
            conv,
            self.inner.storage.clone(),
            self.inner.config.bundle_limits,
            &mut |objects| {
                let _ = events.send(Event::SyncProgress {
                    peer,
                    conv,
                    objects,
                });
            },
        )
        .await?;
        // Validation and the write (fsync) run on the blocking pool, not on the async workers
        // (they may take long, under the conversation's graph lock).
        let integrated = match received {
            None => None,
            Some(r) => {
                let node = self.clone();
                // Taken here, asynchronously: waiting for it holds no thread.
                let asked = std::time::Instant::now();
                let mut g = self.graph(&conv).lock_owned().await;
                let task = off_workers(move || {
                    let signer = node.inner.me.signer();
                    let policy = if deferred_before {
                        sync::MergePolicy::Always(&signer)
                    } else {
                        sync::MergePolicy::Designated {
                            signer: &signer,
                            peer,
                        }
                    };
                    r.integrate(&node.inner.engine, &mut g, policy, unix_now())
                });
                let integrated = task.await??;
                let took = asked.elapsed();
                if took > Duration::from_secs(1) {
                    tracing::debug!(target: "swarm_api::node", %conv, %peer, ?took, "a slow integration (waiting for the graph included)");
                }
                Some(integrated)
            }
        };
        {
            let mut d = self
                .inner
                .deferred
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(i) = integrated.as_ref().filter(|i| i.unmerged.is_some()) {
                d.insert((conv, peer), i.head);
            } else {
                d.remove(&(conv, peer));
            }
        }
        if let Some(i) = &integrated {
            if let Some(tip) = i.unmerged {
                self.schedule_merge(conv, peer, tip);
                // Ask the peer to fetch from us: it is the one that merges.
                self.announce_to(conv, i.head, peer);
            }
        }
        Ok(integrated)
    }

    /// After [`NodeConfig::merge_delay`], merges `tip` (stored beside the head) unless someone
    /// else's merge brought it into the head meanwhile. One timer per (conversation, tip).
    fn schedule_merge(&self, conv: ConversationId, peer: DeviceId, tip: CommitId) {
        {
            let mut p = self
                .inner
                .pending_merges
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if !p.insert((conv, tip)) {
                return;
            }
        }
        let node = self.clone();
        let delay = self.inner.config.merge_delay;
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            node.inner
                .pending_merges
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&(conv, tip));
            match node.merge_stored(conv, peer, tip).await {
                Ok(Some(i)) => {
                    tracing::debug!(target: "swarm_api::node", %conv, %tip, head = %i.head, "merged a branch nobody else merged")
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::info!(target: "swarm_api::node", %conv, %tip, error = %e, "cannot merge a stored branch")
                }
            }
        });
    }

    /// Merges `tip`, a validated commit stored here but not reachable from the head (a branch
    /// kept after a divergence, fetched from `peer`), into the head with a merge commit signed by
    /// this device, then announces it. `Ok(None)` if the head already reaches `tip`.
    pub async fn merge_stored(
        &self,
        conv: ConversationId,
        peer: DeviceId,
        tip: CommitId,
    ) -> Result<Option<Integrated>, NodeError> {
        if self.is_integrated(&conv, &tip).await {
            return Ok(None);
        }
        let node = self.clone();
        let mut g = self.graph(&conv).lock_owned().await;
        let integrated = off_workers(move || {
            let q = node
                .inner
                .storage
                .quarantine_open(&conv)
                .map_err(SyncError::from)?;
            sync::integrate(
                &*node.inner.storage,
                &node.inner.engine,
                &mut g,
                q,
                tip,
                sync::MergePolicy::Always(&node.inner.me.signer()),
                unix_now(),
            )
        })
        .await??;
        if integrated.old_head == Some(integrated.head) {
            return Ok(None);
        }
        self.report(conv, peer, &integrated).await;
        self.announce(conv, integrated.head).await;
        Ok(Some(integrated))
    }

    /// Backs off `peer` (its account) after a failed fetch: doubling from
    /// [`NodeConfig::backoff_initial`] up to [`NodeConfig::backoff_max`] if it `misbehaved`,
    /// else up to [`NodeConfig::sync_timeout`]; a failure never shortens a longer backoff
    /// already running.
    fn back_off(&self, peer: DeviceId, misbehaved: bool) {
        let config = &self.inner.config;
        let cap = if misbehaved {
            config.backoff_max
        } else {
            config.backoff_max.min(config.sync_timeout)
        };
        let source = self.source(peer);
        let now = Instant::now();
        let mut map = self.inner.backoff.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_KNOWN_DEVICES {
            map.retain(|_, b| b.until > now);
        }
        let (delay, until) = match map.get(&source) {
            Some(b) => {
                let delay = (b.delay * 2).min(cap).max(config.backoff_initial);
                (delay, b.until.max(now + delay))
            }
            None => (config.backoff_initial, now + config.backoff_initial),
        };
        map.insert(source, Backoff { until, delay });
    }

    fn reset_backoff(&self, peer: DeviceId) {
        let source = self.source(peer);
        self.inner
            .backoff
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&source);
    }

    /// The current backoff delay of a peer (of its account, if known), if it is backed off.
    pub fn backoff_of(&self, peer: &DeviceId) -> Option<Duration> {
        let source = self.source(*peer);
        self.inner
            .backoff
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&source)
            .map(|b| b.delay)
    }

    /// Reports what an integration made visible: every commit the new head reaches and the old
    /// one did not (so a branch stored beside the head is reported when it is merged).
    async fn report(&self, conv: ConversationId, peer: DeviceId, i: &Integrated) {
        if i.old_head.is_none() {
            self.emit(Event::ConversationReady { conv });
        }
        let shown = if i.old_head == Some(i.head) {
            Vec::new()
        } else {
            let src = ConversationObjects {
                storage: &*self.inner.storage,
                conv,
            };
            let graph = self.graph(&conv);
            let mut g = graph.lock().await;
            let known: Vec<CommitId> = i.old_head.into_iter().collect();
            match g.missing(&src, &[i.head], &known) {
                Ok(mut ids) => {
                    ids.reverse();
                    ids
                }
                Err(e) => {
                    tracing::warn!(target: "swarm_api::node", %conv, error = %e, "cannot list the new commits");
                    Vec::new()
                }
            }
        };
        if let Ok(repo) = Repo::open(&*self.inner.storage, conv) {
            let devices = repo.device_certs(&i.head).unwrap_or_default();
            for id in &shown {
                let Ok(c) = repo.commit(id) else { continue };
                if c.parents.len() > 1 || c.device == self.inner.me.device.id() {
                    continue;
                }
                match Body::parse(&c.message) {
                    Ok(Body::Member(m)) => self.emit(Event::MemberEvent {
                        conv,
                        commit: *id,
                        uri: m.uri,
                        action: m.action,
                    }),
                    Ok(Body::Initial(_)) | Err(_) => {}
                    Ok(body) => self.emit(Event::MessageReceived {
                        conv,
                        commit: *id,
                        device: c.device,
                        author: devices.get(&c.device).and_then(|d| d.claimed_account()),
                        name: c.author_name.clone(),
                        time: c.time,
                        body,
                    }),
                }
            }
        }
        self.emit(Event::Synced {
            conv,
            peer,
            head: i.head,
            merge: i.merge,
        });
    }

    /// Fetches `conv` from every other device of the conversation that is not backed off (what
    /// a node does when connectivity returns). Returns how many fetches brought something.
    pub async fn sync_all(&self, conv: ConversationId) -> usize {
        let devices: Vec<DeviceId> =
            match Repo::open(&*self.inner.storage, conv).and_then(|r| r.state(&r.head()?)) {
                Ok(st) => st.devices.keys().copied().collect(),
                Err(_) => return 0,
            };
        let mut n = 0;
        for d in devices {
            if d == self.inner.me.device.id() {
                continue;
            }
            if let Ok(Some(_)) = self.sync_from(conv, d).await {
                n += 1;
            }
        }
        n
    }

    /// The account of a device, if its certificate is in the conversation.
    pub fn account_of(&self, conv: ConversationId, device: &DeviceId) -> Option<AccountUri> {
        let repo = Repo::open(&*self.inner.storage, conv).ok()?;
        let head = repo.head().ok()?;
        repo.device_certs(&head)
            .ok()?
            .get(device)?
            .claimed_account()
    }
}
