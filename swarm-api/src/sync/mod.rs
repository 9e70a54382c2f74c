//! Sync (DESIGN §5): the sans-IO protocol that brings a peer's commits into this device.
//!
//! A sync fetches one conversation from one peer over any reliable byte stream:
//!
//! 1. the client says which conversation and which head it has ([`Frame::Hello`]);
//! 2. the server checks that the peer may read it (devices of current members and invited
//!    accounts; anyone for PUBLIC), then either knows the client's head — and sends exactly
//!    what is missing, one round trip — or probes its own history at exponentially spaced
//!    first-parent distances ([`Frame::Probe`]), refining the gap for at most
//!    [`MAX_PROBE_ROUNDS`] rounds, so long divergent histories cost a bounded number of round
//!    trips and no commit the client has is sent beyond a small gap;
//! 3. the missing objects arrive in a streamed bundle whose announced and actual size are
//!    bounded ([`BundleLimits`]); the client puts them in a storage quarantine;
//! 4. [`integrate`] validates the quarantined branch with the validation engine and promotes it
//!    atomically — fast-forward, adoption of an equivalent head, or a merge commit signed by
//!    this device — or drops everything and reports the rule the peer broke.
//!
//! **Stored is not integrated.** Storage holds every validated commit that arrived, including
//! a branch kept beside the head when this device left the merge to another
//! ([`Integrated::unmerged`]). Such a commit is valid but not displayed; every decision of the
//! form "do I have it?" that leads to fetching, merging or reporting asks whether the head
//! *reaches* it ([`crate::node::Node::is_integrated`], `Graph::is_ancestor`), never whether it
//! is stored. Only two questions may use "stored": which objects need not be sent again (the
//! probe answers and the server's knowledge of the client's head), and which commits need not
//! be validated again (the validated closure of a promoted branch).
//!
//! [`Client`] and [`Server`] are state machines fed frames (decoded by [`wire::Decoder`]);
//! [`fetch`] and [`serve`] drive them over an async stream.

pub mod wire;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use gix_hash::ObjectId;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub use wire::{Decoder, Frame, WireError};

use crate::graph::Graph;
use crate::id::{CommitId, ConversationId, DeviceId};
use crate::merge::merge_files;
use crate::object::{
    build_tree, dir_entries, read_tree, Kind, Object, ObjectError, ObjectSource, TreeLimits,
};
use crate::repo::Signer;
use crate::storage::{
    ConversationObjects, HeadUpdate, Promotion, QuarantineId, Storage, StorageError,
};
use crate::validate::{Engine, MemberRole, Rejection, Validated};

/// A fetch puts received objects in quarantine in batches of at most this many objects...
pub const BATCH_OBJECTS: usize = 256;
/// ...and at most this many bytes (or one object, if a single one is larger): what a fetch
/// holds in memory besides the frame being decoded.
pub const BATCH_BYTES: u64 = 8 << 20;

/// Probe rounds before the server sends what it has (over-sending at most a small gap).
pub const MAX_PROBE_ROUNDS: u32 = 4;
/// A gap (in first-parent commits) small enough to send without refining further.
pub const SMALL_GAP: usize = 8;

pub use crate::traits::Peer;

/// Sync failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// Malformed bytes.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// A frame that makes no sense at this point.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The server refused us.
    #[error("refused by the peer: {0}")]
    Refused(String),
    /// The bundle is over the limits.
    #[error("bundle over the limit: {0}")]
    Limit(String),
    /// The fetched branch broke a rule; nothing of it was kept.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// An object is missing or malformed.
    #[error(transparent)]
    Object(#[from] ObjectError),
    /// The stream failed or closed early.
    #[error("stream: {0}")]
    Io(String),
}

/// Limits on one received bundle (git-bomb defence).
#[derive(Debug, Clone, Copy)]
pub struct BundleLimits {
    /// Maximum objects.
    pub max_objects: u32,
    /// Maximum total bytes.
    pub max_bytes: u64,
}

impl Default for BundleLimits {
    fn default() -> Self {
        Self {
            max_objects: 4_000_000,
            max_bytes: 4 << 30,
        }
    }
}

// ------------------------------------------------------------------------------------ server

enum ServerPhase {
    AwaitHello,
    AwaitKnown,
    /// BundleStart was sent; the objects follow ([`Server::next_object`]).
    Sending,
    Done,
}

/// The serving side of one sync.
pub struct Server {
    conv: Option<ConversationId>,
    peer: Peer,
    phase: ServerPhase,
    head: Option<CommitId>,
    /// First-parent chain from our head (fetched as far as needed).
    chain: Vec<CommitId>,
    /// The ids probed last, with their first-parent distance.
    probes: Vec<(usize, CommitId)>,
    known: Vec<CommitId>,
    round: u32,
    /// The objects of the bundle still to send, by id and kind (never their data).
    sending: std::collections::VecDeque<(ObjectId, Kind)>,
}

/// Per-round statistics a server can report (for benchmarks).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ServerStats {
    /// Probe rounds used.
    pub rounds: u32,
}

impl Server {
    /// A server for one incoming sync from `peer`.
    pub fn new(peer: Peer) -> Self {
        Self {
            conv: None,
            peer,
            phase: ServerPhase::AwaitHello,
            head: None,
            chain: Vec::new(),
            probes: Vec::new(),
            known: Vec::new(),
            round: 0,
            sending: Default::default(),
        }
    }

    /// Whether the session is over.
    pub fn is_done(&self) -> bool {
        matches!(self.phase, ServerPhase::Done)
    }

    /// Statistics so far.
    pub fn stats(&self) -> ServerStats {
        ServerStats { rounds: self.round }
    }

    /// Handles one frame from the client; returns the frames to send, the whole bundle
    /// included (in memory: for tests and benchmarks; [`serve`] streams it with
    /// [`Server::respond`] and [`Server::next_object`]).
    pub fn handle(
        &mut self,
        frame: Frame,
        storage: &dyn Storage,
        engine: &Engine,
        graph: &mut Graph,
    ) -> Result<Vec<Frame>, SyncError> {
        let mut out = self.respond(frame, storage, engine, graph)?;
        while let Some(f) = self.next_object(storage)? {
            out.push(f);
        }
        Ok(out)
    }

    /// Handles one frame from the client; returns the frames to send, up to a
    /// [`Frame::BundleStart`]: the bundle's objects then come one at a time from
    /// [`Server::next_object`], so a server holds the ids and sizes of what it sends, and
    /// one object's data at a time.
    pub fn respond(
        &mut self,
        frame: Frame,
        storage: &dyn Storage,
        engine: &Engine,
        graph: &mut Graph,
    ) -> Result<Vec<Frame>, SyncError> {
        match (&self.phase, frame) {
            (
                ServerPhase::AwaitHello,
                Frame::Hello {
                    version,
                    conv,
                    head,
                },
            ) => {
                self.conv = Some(conv);
                if version != wire::VERSION {
                    self.phase = ServerPhase::Done;
                    return Ok(vec![Frame::Refused(format!(
                        "unsupported protocol version {version} (this peer speaks {})",
                        wire::VERSION
                    ))]);
                }
                let Some(our) = storage.head(&conv)? else {
                    self.phase = ServerPhase::Done;
                    return Ok(vec![Frame::Refused("unknown conversation".into())]);
                };
                self.head = Some(our);
                if let Err(reason) = self.allowed(storage, engine, conv, our) {
                    self.phase = ServerPhase::Done;
                    tracing::info!(target: "swarm_api::sync", peer = %self.peer.device, %conv, %reason, "refused sync");
                    return Ok(vec![Frame::Refused(reason)]);
                }
                let src = ConversationObjects { storage, conv };
                match head {
                    Some(h) if h == our => {
                        self.phase = ServerPhase::Done;
                        Ok(vec![Frame::UpToDate])
                    }
                    Some(h) if src.object(&h.object_id())?.is_some() => {
                        self.known = vec![h];
                        self.finish(storage, graph)
                    }
                    None => self.finish(storage, graph),
                    Some(_) => self.probe(storage, graph, 0, usize::MAX),
                }
            }
            (ServerPhase::AwaitKnown, Frame::Known(bits)) => {
                let probes = std::mem::take(&mut self.probes);
                let known = |i: usize| bits.get(i).copied().unwrap_or(false);
                for (i, (_, id)) in probes.iter().enumerate() {
                    if known(i) {
                        self.known.push(*id);
                    }
                }
                // The nearest known distance, and the farthest unknown one before it.
                let first_known = probes
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| known(*i))
                    .map(|(_, (d, _))| *d)
                    .min();
                let last_unknown = first_known.and_then(|k| {
                    probes
                        .iter()
                        .enumerate()
                        .filter(|(i, (d, _))| *d < k && !known(*i))
                        .map(|(_, (d, _))| *d)
                        .max()
                });
                match (first_known, last_unknown) {
                    (Some(k), Some(u)) if k - u > SMALL_GAP && self.round < MAX_PROBE_ROUNDS => {
                        self.probe(storage, graph, u + 1, k)
                    }
                    _ => self.finish(storage, graph),
                }
            }
            (_, other) => {
                self.phase = ServerPhase::Done;
                Err(SyncError::Protocol(format!(
                    "unexpected frame {}",
                    frame_name(&other)
                )))
            }
        }
    }

    /// Access control: devices of current members and invited accounts; anyone for PUBLIC.
    fn allowed(
        &self,
        storage: &dyn Storage,
        engine: &Engine,
        conv: ConversationId,
        head: CommitId,
    ) -> Result<(), String> {
        let src = ConversationObjects { storage, conv };
        let state = engine
            .state_at(conv, &src, &head)
            .map_err(|e| format!("cannot read the conversation: {e}"))?;
        if state.is_banned_device(&self.peer.device) {
            return Err("this device is banned".into());
        }
        if engine
            .is_revoked(conv, &src, &state, &self.peer.device)
            .unwrap_or(true)
        {
            return Err("this device is revoked by its account".into());
        }
        match state.role(&self.peer.account) {
            Some(MemberRole::Admin | MemberRole::Member | MemberRole::Invited) => Ok(()),
            Some(MemberRole::Banned) => Err("this account is banned".into()),
            None if state.mode == crate::body::Mode::Public => Ok(()),
            None => Err("not a member of this conversation".into()),
        }
    }

    fn extend_chain(
        &mut self,
        storage: &dyn Storage,
        graph: &mut Graph,
        upto: usize,
    ) -> Result<(), SyncError> {
        let (Some(conv), Some(head)) = (self.conv, self.head) else {
            return Ok(());
        };
        if self.chain.len() > upto {
            return Ok(());
        }
        let src = ConversationObjects { storage, conv };
        let start = self.chain.last().copied();
        if start.is_none() {
            self.chain.push(head);
        }
        while self.chain.len() <= upto {
            let last = *self.chain.last().unwrap_or(&head);
            match graph.parents(&src, &last)?.first() {
                Some(p) => self.chain.push(*p),
                None => break,
            }
        }
        Ok(())
    }

    /// Probes distances in `[from, to)` of our first-parent chain: exponentially spaced
    /// (plus the root) when the range is open, evenly spaced inside a known gap.
    fn probe(
        &mut self,
        storage: &dyn Storage,
        graph: &mut Graph,
        from: usize,
        to: usize,
    ) -> Result<Vec<Frame>, SyncError> {
        self.round += 1;
        let mut distances = Vec::new();
        if to == usize::MAX {
            let mut d = from;
            let mut step = 1usize;
            loop {
                self.extend_chain(storage, graph, d)?;
                if d >= self.chain.len() {
                    break;
                }
                distances.push(d);
                d += step;
                step = step.saturating_mul(2);
            }
            let last = self.chain.len().saturating_sub(1);
            if distances.last() != Some(&last) {
                distances.push(last);
            }
        } else {
            self.extend_chain(storage, graph, to)?;
            let span = to - from;
            let n = span.clamp(1, wire::MAX_PROBE / 8);
            for i in 0..n {
                let d = from + i * span / n;
                if d < self.chain.len() && distances.last() != Some(&d) {
                    distances.push(d);
                }
            }
        }
        distances.truncate(wire::MAX_PROBE);
        self.probes = distances.iter().map(|d| (*d, self.chain[*d])).collect();
        self.phase = ServerPhase::AwaitKnown;
        Ok(vec![Frame::Probe(
            self.probes.iter().map(|(_, id)| *id).collect(),
        )])
    }

    /// Sends everything reachable from our head that is not reachable from `known`.
    fn finish(
        &mut self,
        storage: &dyn Storage,
        graph: &mut Graph,
    ) -> Result<Vec<Frame>, SyncError> {
        self.phase = ServerPhase::Done;
        let (Some(conv), Some(head)) = (self.conv, self.head) else {
            return Err(SyncError::Protocol("no conversation".into()));
        };
        let src = ConversationObjects { storage, conv };
        let size_of = |id: &ObjectId| -> Result<Option<u64>, ObjectError> {
            Ok(storage.object_size(&conv, id)?)
        };
        let plan = bundle_plan(&src, graph, head, &self.known, &size_of)?;
        if plan.is_empty() {
            return Ok(vec![Frame::UpToDate]);
        }
        let objects = u32::try_from(plan.len())
            .map_err(|_| SyncError::Limit(format!("{} objects to send", plan.len())))?;
        let bytes = plan.iter().map(|p| p.size).sum();
        self.sending = plan.into_iter().map(|p| (p.id, p.kind)).collect();
        self.phase = ServerPhase::Sending;
        Ok(vec![Frame::BundleStart {
            head,
            objects,
            bytes,
        }])
    }

    /// The next frame of the bundle being sent: an object read now, then
    /// [`Frame::BundleEnd`]; `None` when no bundle is being sent.
    pub fn next_object(&mut self, storage: &dyn Storage) -> Result<Option<Frame>, SyncError> {
        let (ServerPhase::Sending, Some(conv)) = (&self.phase, self.conv) else {
            return Ok(None);
        };
        match self.sending.pop_front() {
            Some((id, kind)) => {
                let src = ConversationObjects { storage, conv };
                Ok(Some(Frame::Object(src.expect(&id, kind)?)))
            }
            None => {
                self.phase = ServerPhase::Done;
                Ok(Some(Frame::BundleEnd))
            }
        }
    }
}

fn frame_name(f: &Frame) -> &'static str {
    match f {
        Frame::Hello { .. } => "Hello",
        Frame::Refused(_) => "Refused",
        Frame::UpToDate => "UpToDate",
        Frame::Probe(_) => "Probe",
        Frame::Known(_) => "Known",
        Frame::BundleStart { .. } => "BundleStart",
        Frame::Object(_) => "Object",
        Frame::BundleEnd => "BundleEnd",
    }
}

/// Collects the ids of every tree and blob under `root` into `have`.
fn tree_ids(
    src: &dyn ObjectSource,
    root: &ObjectId,
    have: &mut HashSet<ObjectId>,
) -> Result<(), ObjectError> {
    if !have.insert(*root) {
        return Ok(());
    }
    for (is_tree, id) in dir_entries(src, root)?.into_values() {
        if is_tree {
            tree_ids(src, &id, have)?;
        } else {
            have.insert(id);
        }
    }
    Ok(())
}

/// The size of an object, if stored (a backend may tell it without reading the data).
type SizeOf<'a> = dyn Fn(&ObjectId) -> Result<Option<u64>, ObjectError> + 'a;

/// Plans every tree and blob under `root` not in `have` (and marks them had).
fn push_tree(
    src: &dyn ObjectSource,
    size_of: &SizeOf<'_>,
    root: &ObjectId,
    have: &mut HashSet<ObjectId>,
    out: &mut Vec<Planned>,
) -> Result<(), ObjectError> {
    if !have.insert(*root) {
        return Ok(());
    }
    let entries = dir_entries(src, root)?;
    out.push(Planned {
        id: *root,
        kind: Kind::Tree,
        size: src.expect(root, Kind::Tree)?.data.len() as u64,
    });
    for (is_tree, id) in entries.into_values() {
        if is_tree {
            push_tree(src, size_of, &id, have, out)?;
        } else if have.insert(id) {
            let size = match size_of(&id)? {
                Some(n) => n,
                None => src.expect(&id, Kind::Blob)?.data.len() as u64,
            };
            out.push(Planned {
                id,
                kind: Kind::Blob,
                size,
            });
        }
    }
    Ok(())
}

fn commit_tree(src: &dyn ObjectSource, id: &CommitId) -> Result<ObjectId, ObjectError> {
    let obj = src.expect(&id.object_id(), Kind::Commit)?;
    tree_of(id, &obj)
}

fn tree_of(id: &CommitId, obj: &Object) -> Result<ObjectId, ObjectError> {
    gix_object::CommitRefIter::from_bytes(&obj.data, gix_hash::Kind::Sha1)
        .tree_id()
        .map_err(|e| ObjectError::Malformed {
            id: id.object_id(),
            reason: e.to_string(),
        })
}

/// The objects a peer that has `known` (and all their ancestors) lacks to have `head`:
/// the missing commits, oldest first, each followed by the trees and blobs it introduces.
/// All in memory: a server streams [`bundle_plan`] instead.
pub fn bundle(
    src: &dyn ObjectSource,
    graph: &mut Graph,
    head: CommitId,
    known: &[CommitId],
) -> Result<Vec<Object>, ObjectError> {
    let size_of = |id: &ObjectId| Ok(src.object(id)?.map(|o| o.data.len() as u64));
    bundle_plan(src, graph, head, known, &size_of)?
        .into_iter()
        .map(|p| src.expect(&p.id, p.kind))
        .collect()
}

/// One object of a bundle, planned: what is sent, never its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Planned {
    /// The object.
    pub id: ObjectId,
    /// Its kind.
    pub kind: Kind,
    /// Its size in bytes.
    pub size: u64,
}

/// The ids, kinds and sizes of [`bundle`]'s objects, in the same order, without holding
/// their data: commits and trees are read (and dropped) to walk the history, blobs are sized
/// with `size_of` (a backend may answer from a header; `None` reads the blob).
pub fn bundle_plan(
    src: &dyn ObjectSource,
    graph: &mut Graph,
    head: CommitId,
    known: &[CommitId],
    size_of: &SizeOf<'_>,
) -> Result<Vec<Planned>, ObjectError> {
    let mut commits = graph.missing(src, &[head], known)?;
    commits.reverse();
    let sent: HashSet<CommitId> = commits.iter().copied().collect();
    // Trees the peer has: those of the boundary commits (known ones adjacent to what we send).
    let mut have: HashSet<ObjectId> = HashSet::new();
    let mut boundary: Vec<CommitId> = Vec::new();
    for c in &commits {
        for p in graph.parents(src, c)? {
            if !sent.contains(&p) {
                boundary.push(p);
            }
        }
    }
    boundary.sort();
    boundary.dedup();
    for b in &boundary {
        tree_ids(src, &commit_tree(src, b)?, &mut have)?;
    }
    let mut out = Vec::new();
    for c in &commits {
        let obj = src.expect(&c.object_id(), Kind::Commit)?;
        push_tree(src, size_of, &tree_of(c, &obj)?, &mut have, &mut out)?;
        out.push(Planned {
            id: c.object_id(),
            kind: Kind::Commit,
            size: obj.data.len() as u64,
        });
    }
    Ok(out)
}

// ------------------------------------------------------------------------------------ client

enum ClientPhase {
    AwaitAnswer,
    Receiving {
        head: CommitId,
        objects: u32,
        bytes: u64,
        got: u32,
        got_bytes: u64,
    },
    Done,
}

/// What a client step produced.
#[derive(Debug)]
pub enum ClientStep {
    /// Send this frame to the server.
    Send(Frame),
    /// Received objects: put them in the quarantine.
    Objects(Vec<Object>),
    /// The session ended.
    Done(Outcome),
}

/// How a fetch ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The server had nothing new.
    UpToDate,
    /// A bundle was received (now in quarantine) with this tip.
    Received {
        /// The server's head.
        head: CommitId,
    },
}

/// The fetching side of one sync.
pub struct Client {
    conv: ConversationId,
    head: Option<CommitId>,
    phase: ClientPhase,
    probe: Vec<CommitId>,
    limits: BundleLimits,
    /// Round trips so far (for benchmarks).
    pub round_trips: u32,
}

impl Client {
    /// A client fetching `conv`, having `head` (`None`: nothing yet).
    pub fn new(conv: ConversationId, head: Option<CommitId>, limits: BundleLimits) -> Self {
        Self {
            conv,
            head,
            phase: ClientPhase::AwaitAnswer,
            probe: Vec::new(),
            limits,
            round_trips: 1,
        }
    }

    /// The opening frame.
    pub fn hello(&self) -> Frame {
        Frame::Hello {
            version: wire::VERSION,
            conv: self.conv,
            head: self.head,
        }
    }

    /// Whether the session is over.
    pub fn is_done(&self) -> bool {
        matches!(self.phase, ClientPhase::Done)
    }

    /// Handles one frame from the server. `has` answers whether a commit is stored here.
    pub fn handle(
        &mut self,
        frame: Frame,
        has: &dyn Fn(&CommitId) -> bool,
    ) -> Result<Vec<ClientStep>, SyncError> {
        match (&mut self.phase, frame) {
            (ClientPhase::AwaitAnswer, Frame::UpToDate) => {
                self.phase = ClientPhase::Done;
                Ok(vec![ClientStep::Done(Outcome::UpToDate)])
            }
            (ClientPhase::AwaitAnswer, Frame::Refused(r)) => {
                self.phase = ClientPhase::Done;
                Err(SyncError::Refused(r))
            }
            (ClientPhase::AwaitAnswer, Frame::Probe(ids)) => {
                self.round_trips += 1;
                // An honest server probes at most MAX_PROBE_ROUNDS times; more would keep
                // this side answering (a storage lookup per id) for as long as it likes.
                if self.round_trips > MAX_PROBE_ROUNDS + 1 {
                    self.phase = ClientPhase::Done;
                    return Err(SyncError::Protocol(format!(
                        "more than {MAX_PROBE_ROUNDS} probe rounds"
                    )));
                }
                let bits = ids.iter().map(has).collect();
                self.probe = ids;
                Ok(vec![ClientStep::Send(Frame::Known(bits))])
            }
            (
                ClientPhase::AwaitAnswer,
                Frame::BundleStart {
                    head,
                    objects,
                    bytes,
                },
            ) => {
                if objects > self.limits.max_objects || bytes > self.limits.max_bytes {
                    self.phase = ClientPhase::Done;
                    return Err(SyncError::Limit(format!(
                        "announced {objects} objects / {bytes} bytes (limits {} / {})",
                        self.limits.max_objects, self.limits.max_bytes
                    )));
                }
                self.phase = ClientPhase::Receiving {
                    head,
                    objects,
                    bytes,
                    got: 0,
                    got_bytes: 0,
                };
                Ok(vec![])
            }
            (
                ClientPhase::Receiving {
                    objects,
                    bytes,
                    got,
                    got_bytes,
                    ..
                },
                Frame::Object(o),
            ) => {
                *got += 1;
                *got_bytes += o.data.len() as u64;
                if *got > *objects || *got_bytes > *bytes {
                    let msg = format!(
                        "the peer sent more than it announced ({objects} objects, {bytes} bytes)"
                    );
                    self.phase = ClientPhase::Done;
                    return Err(SyncError::Limit(msg));
                }
                Ok(vec![ClientStep::Objects(vec![o])])
            }
            (
                ClientPhase::Receiving {
                    head, objects, got, ..
                },
                Frame::BundleEnd,
            ) => {
                let (head, objects, got) = (*head, *objects, *got);
                self.phase = ClientPhase::Done;
                if got != objects {
                    return Err(SyncError::Protocol(format!(
                        "bundle ended after {got} of {objects} objects"
                    )));
                }
                Ok(vec![ClientStep::Done(Outcome::Received { head })])
            }
            (_, other) => {
                self.phase = ClientPhase::Done;
                Err(SyncError::Protocol(format!(
                    "unexpected frame {}",
                    frame_name(&other)
                )))
            }
        }
    }
}

// ------------------------------------------------------------------------------ quarantine

/// How a [`QuarantineGuard`] reaches its storage: borrowed (a caller holding `&dyn Storage`)
/// or shared (a guard that must outlive the borrow, e.g. moved to a blocking thread).
#[derive(Clone)]
enum StorageRef<'s> {
    Borrowed(&'s dyn Storage),
    Shared(Arc<dyn Storage>),
}

impl StorageRef<'_> {
    fn get(&self) -> &dyn Storage {
        match self {
            StorageRef::Borrowed(s) => *s,
            StorageRef::Shared(s) => &**s,
        }
    }
}

/// An open quarantine area that is released on every path: dropping the guard (an error
/// returned with `?`, a fetch future dropped mid-bundle, a panic) deletes the area with
/// [`Storage::quarantine_drop`], unless it was promoted ([`integrate`]) or handed over with
/// [`QuarantineGuard::into_id`].
pub struct QuarantineGuard<'s> {
    storage: StorageRef<'s>,
    id: QuarantineId,
    armed: bool,
}

impl std::fmt::Debug for QuarantineGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuarantineGuard")
            .field("id", &self.id)
            .field("armed", &self.armed)
            .finish()
    }
}

impl<'s> QuarantineGuard<'s> {
    /// Opens a new area of `storage` for `conv`.
    pub fn open(storage: &'s dyn Storage, conv: &ConversationId) -> Result<Self, StorageError> {
        Self::open_in(StorageRef::Borrowed(storage), conv)
    }

    /// Takes charge of the open area `id` of `storage`.
    pub fn adopt(storage: &'s dyn Storage, id: QuarantineId) -> Self {
        Self {
            storage: StorageRef::Borrowed(storage),
            id,
            armed: true,
        }
    }

    fn open_in(storage: StorageRef<'s>, conv: &ConversationId) -> Result<Self, StorageError> {
        let id = storage.get().quarantine_open(conv)?;
        Ok(Self {
            storage,
            id,
            armed: true,
        })
    }

    /// The area.
    pub fn id(&self) -> &QuarantineId {
        &self.id
    }

    /// The storage the area belongs to.
    pub fn storage(&self) -> &dyn Storage {
        self.storage.get()
    }

    /// Adds objects to the area.
    pub fn put(&self, objects: &[Object]) -> Result<(), StorageError> {
        self.storage.get().quarantine_put(&self.id, objects)
    }

    /// Hands the area over to the caller, who must promote or drop it.
    pub fn into_id(mut self) -> QuarantineId {
        self.armed = false;
        self.id.clone_id()
    }
}

impl QuarantineGuard<'static> {
    /// Opens a new area of a shared `storage` (the guard may move to another thread).
    pub fn open_shared(
        storage: Arc<dyn Storage>,
        conv: &ConversationId,
    ) -> Result<Self, StorageError> {
        Self::open_in(StorageRef::Shared(storage), conv)
    }
}

impl Drop for QuarantineGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.armed = false;
            if let Err(e) = self.storage.get().quarantine_drop(self.id.clone_id()) {
                tracing::warn!(target: "swarm_api::sync", conv = %self.id.conv, area = self.id.id, error = %e, "cannot drop a quarantine area");
            }
        }
    }
}

// ------------------------------------------------------------------------------ integration

/// What [`integrate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Integrated {
    /// The new commits, parents first (all validated).
    pub new_commits: Vec<CommitId>,
    /// The head before.
    pub old_head: Option<CommitId>,
    /// The head after.
    pub head: CommitId,
    /// The merge commit this device made, if any.
    pub merge: Option<CommitId>,
    /// The histories diverged and this device kept its head without merging (policy, or not
    /// allowed to sign the merge): the fetched tip, stored and validated but **not** reachable
    /// from the head, so not displayed. Someone has to merge it; [`crate::node::Node`] asks the
    /// peer to and merges it itself after [`crate::node::NodeConfig::merge_delay`].
    pub unmerged: Option<CommitId>,
}

/// Quarantined objects over stored ones.
pub(crate) struct QuarantineView<'a> {
    storage: &'a dyn Storage,
    q: &'a QuarantineId,
    extra: &'a BTreeMap<ObjectId, Object>,
}

static NO_EXTRA: BTreeMap<ObjectId, Object> = BTreeMap::new();

impl<'a> QuarantineView<'a> {
    /// The objects of area `q` over those of its conversation.
    pub(crate) fn new(storage: &'a dyn Storage, q: &'a QuarantineId) -> Self {
        Self {
            storage,
            q,
            extra: &NO_EXTRA,
        }
    }
}

impl ObjectSource for QuarantineView<'_> {
    fn object(&self, id: &ObjectId) -> Result<Option<Object>, ObjectError> {
        if let Some(o) = self.extra.get(id) {
            return Ok(Some(o.clone()));
        }
        if let Some(o) = self.storage.quarantine_object(self.q, id)? {
            if self.storage.reads_need_hash_check() && o.id() != *id {
                return Err(ObjectError::Malformed {
                    id: *id,
                    reason: "content does not hash to its id".into(),
                });
            }
            return Ok(Some(o));
        }
        if self.storage.head(&self.q.conv)?.is_none() {
            return Ok(None);
        }
        ConversationObjects {
            storage: self.storage,
            conv: self.q.conv,
        }
        .object(id)
    }
}

/// Validates the quarantined branch ending at `tip` and promotes it atomically, or drops the
/// quarantine and returns the rejection. Chooses how the head moves:
/// - `tip` already contained in our head: nothing;
/// - our head's non-merge commits all contained in `tip` (fast-forward, or `tip` is an
///   equivalent merge — the smaller id wins so that peers converge): head = `tip`;
/// - `tip` contained in ours the same way: keep our head;
/// - otherwise a merge commit signed by `signer` with the deterministic merge tree.
///   If no signer is given, or this device may not sign in the merged tree, the branch is
///   still stored but the head stays; another member will merge.
pub fn integrate(
    storage: &dyn Storage,
    engine: &Engine,
    graph: &mut Graph,
    q: QuarantineId,
    tip: CommitId,
    merge: MergePolicy<'_>,
    time: i64,
) -> Result<Integrated, SyncError> {
    integrate_guarded(
        QuarantineGuard::adopt(storage, q),
        engine,
        graph,
        tip,
        merge,
        time,
    )
}

/// [`integrate`] of the area a guard holds: the area is promoted, or dropped on every other
/// path (an error, a panic).
fn integrate_guarded(
    mut guard: QuarantineGuard<'_>,
    engine: &Engine,
    graph: &mut Graph,
    tip: CommitId,
    merge: MergePolicy<'_>,
    time: i64,
) -> Result<Integrated, SyncError> {
    let handle = guard.storage.clone();
    let storage = handle.get();
    let q = guard.id.clone_id();
    let conv = q.conv;
    // A local commit may move the head while we decide: then decide again (the quarantine
    // is still there); a local commit is never blocked by a fetch.
    for _ in 0..8 {
        match integrate_inner(storage, engine, graph, &q, tip, merge, time) {
            Ok(Plan {
                update,
                merge_objects,
                validated,
                merged,
                unmerged,
            }) => {
                if !merge_objects.is_empty() {
                    guard.put(&merge_objects)?;
                }
                let old_head = update.expected;
                let promotion =
                    Promotion::of(&validated.iter().collect::<Vec<_>>(), storage, &q, update)?;
                let new_commits = validated
                    .first()
                    .map(|v| v.commits().to_vec())
                    .unwrap_or_default();
                match storage.quarantine_promote(q.clone_id(), &promotion) {
                    Ok(()) => {
                        // The area is gone with the promotion.
                        guard.armed = false;
                        return Ok(Integrated {
                            new_commits,
                            old_head,
                            head: update.new,
                            merge: merged,
                            unmerged: unmerged.then_some(tip),
                        });
                    }
                    Err(StorageError::HeadMoved { .. }) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) => {
                if let SyncError::Rejected(r) = &e {
                    tracing::warn!(target: "swarm_api::sync", %conv, commit = %r.commit, rule = r.violation.rule(), "refused a branch");
                }
                return Err(e);
            }
        }
    }
    Err(SyncError::Io("the head kept moving; try again".into()))
}

/// The device that made commit `id` (its author email), if it reads as a commit.
fn author_device(src: &dyn ObjectSource, id: &CommitId) -> Option<DeviceId> {
    src.expect(&id.object_id(), Kind::Commit)
        .ok()
        .and_then(|o| crate::commit::Commit::parse(*id, &o.data).ok())
        .map(|c| c.device)
}

/// What [`integrate_inner`] decided.
struct Plan {
    update: HeadUpdate,
    /// The merge commit and its new trees, to add to the quarantine.
    merge_objects: Vec<Object>,
    /// The fetched branch, then the merge if one was made.
    validated: Vec<Validated>,
    merged: Option<CommitId>,
    unmerged: bool,
}

/// Whether and how [`integrate`] may make a merge commit.
#[derive(Clone, Copy)]
pub enum MergePolicy<'a> {
    /// Never merge (keep our head when the histories diverged).
    Never,
    /// Merge, signed by this device.
    Always(&'a Signer<'a>),
    /// Merge only if this device is the [`designated_merger`] of the divergence between our
    /// head and the tip fetched from `peer`; otherwise keep our head (storing the branch) and
    /// report it [`Integrated::unmerged`]. Two devices that meet over a divergence agree on
    /// which of them merges, so one merge results, not one per device that sees it.
    Designated {
        /// Signs the merge when this device is the one.
        signer: &'a Signer<'a>,
        /// The device the tip was fetched from.
        peer: DeviceId,
    },
}

/// Which of two devices that meet over a divergence makes the merge commit; both compute the
/// same answer from the same four facts, whichever side fetches.
///
/// `(head, author)` pairs are each side's head and the device that made it. The author of the
/// higher head merges if it is one of the two (the rule that keeps a swarm from making one
/// merge per device: every other device holding that head defers to it). If it is neither —
/// offline, gone, or just not part of this exchange — the device *holding* the higher head
/// merges, so a divergence never waits for a device that may not come back.
pub fn designated_merger(
    me: DeviceId,
    ours: (CommitId, Option<DeviceId>),
    peer: DeviceId,
    theirs: (CommitId, Option<DeviceId>),
) -> DeviceId {
    let (higher, holder) = if ours.0 > theirs.0 {
        (ours, me)
    } else {
        (theirs, peer)
    };
    match higher.1 {
        Some(author) if author == me || author == peer => author,
        _ => holder,
    }
}

fn integrate_inner(
    storage: &dyn Storage,
    engine: &Engine,
    graph: &mut Graph,
    q: &QuarantineId,
    tip: CommitId,
    policy: MergePolicy<'_>,
    time: i64,
) -> Result<Plan, SyncError> {
    let conv = q.conv;
    let view = QuarantineView::new(storage, q);
    let head = storage.head(&conv)?;
    let stored = |id: &CommitId| -> bool {
        head.is_some() && matches!(storage.object(&conv, &id.object_id()), Ok(Some(_)))
    };
    let validated = engine.validate_branch(conv, &view, &stored, &[tip])?;
    let new_commits = validated.commits().to_vec();
    let plan = |update, unmerged| Plan {
        update,
        merge_objects: vec![],
        validated: vec![validated.clone()],
        merged: None,
        unmerged,
    };
    let Some(head) = head else {
        // A clone: the branch must start at the conversation's initial commit.
        return Ok(plan(
            HeadUpdate {
                expected: None,
                new: tip,
            },
            false,
        ));
    };
    let keep = HeadUpdate {
        expected: Some(head),
        new: head,
    };
    if graph.is_ancestor(&view, &tip, &head)? {
        return Ok(plan(keep, false));
    }
    let tip_covers = graph.covers(&view, &tip, &head)?;
    let head_covers = graph.covers(&view, &head, &tip)?;
    if tip_covers && (!head_covers || tip < head) {
        return Ok(plan(
            HeadUpdate {
                expected: Some(head),
                new: tip,
            },
            false,
        ));
    }
    if head_covers {
        return Ok(plan(keep, false));
    }
    let signer = match policy {
        MergePolicy::Always(s) => s,
        MergePolicy::Designated { signer, peer }
            if designated_merger(
                signer.device.id(),
                (head, author_device(&view, &head)),
                peer,
                (tip, author_device(&view, &tip)),
            ) == signer.device.id() =>
        {
            signer
        }
        MergePolicy::Never | MergePolicy::Designated { .. } => return Ok(plan(keep, true)),
    };
    // A merge commit with the deterministic tree.
    let limits = TreeLimits::default();
    let files_of = |graph: &mut Graph, c: &CommitId| -> Result<crate::object::Files, SyncError> {
        let _ = graph;
        Ok(read_tree(&view, &commit_tree(&view, c)?, limits)?)
    };
    let base = match graph.merge_base(&view, &head, &tip)? {
        Some(b) => files_of(graph, &b)?,
        None => Default::default(),
    };
    let ours = files_of(graph, &head)?;
    let theirs = files_of(graph, &tip)?;
    let merged = merge_files(&base, &ours, &head, &theirs, &tip);
    let (tree, mut objects) = build_tree(&merged);
    let commit = crate::commit::sign_commit(
        signer.device,
        signer.account.name(),
        tree,
        &[head, tip],
        &crate::commit::merge_message(&tip),
        time,
    )
    .map_err(|e| SyncError::Protocol(e.to_string()))?;
    let merge_id = CommitId::from_object_id(&commit.id())
        .ok_or_else(|| SyncError::Protocol("merge id".into()))?;
    objects.push(commit);
    // The merge goes through the same rules.
    let extra: BTreeMap<ObjectId, Object> = objects.iter().map(|o| (o.id(), o.clone())).collect();
    let view2 = QuarantineView {
        storage,
        q,
        extra: &extra,
    };
    let known = |id: &CommitId| *id != merge_id && (stored(id) || new_commits.contains(id));
    match engine.validate_branch(conv, &view2, &known, &[merge_id]) {
        Ok(merge) => {
            graph.record(merge_id, vec![head, tip]);
            Ok(Plan {
                update: HeadUpdate {
                    expected: Some(head),
                    new: merge_id,
                },
                merge_objects: objects,
                validated: vec![validated, merge],
                merged: Some(merge_id),
                unmerged: false,
            })
        }
        Err(r) => {
            tracing::info!(target: "swarm_api::sync", %conv, reason = %r, "cannot sign a merge here; keeping our head");
            Ok(plan(keep, true))
        }
    }
}

// ------------------------------------------------------------------------------------ drivers

async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    dec: &mut Decoder,
) -> Result<Frame, SyncError> {
    let mut buf = [0u8; 64 * 1024];
    loop {
        if let Some(f) = dec.next_frame()? {
            return Ok(f);
        }
        let n = r
            .read(&mut buf)
            .await
            .map_err(|e| SyncError::Io(e.to_string()))?;
        if n == 0 {
            return Err(SyncError::Io("the peer closed the stream".into()));
        }
        dec.push(&buf[..n]);
    }
}

async fn write_frames<W: AsyncWrite + Unpin>(
    w: &mut W,
    frames: &[Frame],
) -> Result<usize, SyncError> {
    let mut n = 0;
    for f in frames {
        let bytes = f.encode();
        n += bytes.len();
        w.write_all(&bytes)
            .await
            .map_err(|e| SyncError::Io(e.to_string()))?;
    }
    w.flush().await.map_err(|e| SyncError::Io(e.to_string()))?;
    Ok(n)
}

/// Serves one sync on `stream` to the authenticated `peer`. Storage and graph are accessed
/// through `with` so the caller controls locking.
pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    peer: Peer,
    storage: &dyn Storage,
    engine: &Engine,
    graph: &tokio::sync::Mutex<Graph>,
) -> Result<ServerStats, SyncError> {
    let mut server = Server::new(peer);
    let mut dec = Decoder::new();
    while !server.is_done() {
        let frame = read_frame(stream, &mut dec).await?;
        let out = {
            // An async lock: while an integration holds the graph (on the blocking pool), a
            // serve waits without holding a runtime worker.
            let asked = std::time::Instant::now();
            let mut g = graph.lock().await;
            let waited = asked.elapsed();
            if waited > std::time::Duration::from_secs(1) {
                tracing::debug!(target: "swarm_api::sync", peer = %peer.device, ?waited, "a serve waited for the conversation graph");
            }
            server.respond(frame, storage, engine, &mut g)?
        };
        write_frames(stream, &out).await?;
        // The bundle, one object read and written at a time.
        while let Some(f) = server.next_object(storage)? {
            write_frames(stream, &[f]).await?;
        }
    }
    Ok(server.stats())
}

/// Statistics of one fetch.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FetchStats {
    /// Round trips (Hello counts as one).
    pub round_trips: u32,
    /// Bytes sent by this side (the negotiation).
    pub bytes_sent: usize,
    /// Objects received.
    pub objects: usize,
}

/// Fetches `conv` from the peer on `stream` into a quarantine of `storage`, then
/// [`integrate`]s it. Returns `None` if the peer had nothing new.
#[allow(clippy::too_many_arguments)]
pub async fn fetch<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    conv: ConversationId,
    storage: &dyn Storage,
    engine: &Engine,
    graph: &tokio::sync::Mutex<Graph>,
    merge: MergePolicy<'_>,
    time: i64,
    limits: BundleLimits,
) -> Result<(Option<Integrated>, FetchStats), SyncError> {
    fetch_with_progress(
        stream,
        conv,
        storage,
        engine,
        graph,
        merge,
        time,
        limits,
        &mut |_| {},
    )
    .await
}

/// [`fetch`], calling `progress` with the number of objects received so far each time a batch
/// of them is put in quarantine (every [`BATCH_OBJECTS`] objects or [`BATCH_BYTES`] bytes,
/// whichever comes first, and once more before validation).
#[allow(clippy::too_many_arguments)]
pub async fn fetch_with_progress<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    conv: ConversationId,
    storage: &dyn Storage,
    engine: &Engine,
    graph: &tokio::sync::Mutex<Graph>,
    merge: MergePolicy<'_>,
    time: i64,
    limits: BundleLimits,
    progress: &mut (dyn FnMut(usize) + Send),
) -> Result<(Option<Integrated>, FetchStats), SyncError> {
    let (received, stats) = receive(stream, conv, storage, limits, progress).await?;
    let Some(received) = received else {
        return Ok((None, stats));
    };
    let mut g = graph.lock().await;
    let integrated = received.integrate(engine, &mut g, merge, time)?;
    Ok((Some(integrated), stats))
}

/// What [`receive`] brought: a branch in quarantine, not validated yet ([`Received::integrate`]
/// it, or drop it: dropping the guard drops the area).
#[derive(Debug)]
pub struct Received<'s> {
    /// The quarantine holding the objects.
    pub quarantine: QuarantineGuard<'s>,
    /// The tip the peer sent.
    pub tip: CommitId,
}

impl Received<'_> {
    /// [`integrate`]s the received branch: promoted, or the area dropped.
    pub fn integrate(
        self,
        engine: &Engine,
        graph: &mut Graph,
        merge: MergePolicy<'_>,
        time: i64,
    ) -> Result<Integrated, SyncError> {
        integrate_guarded(self.quarantine, engine, graph, self.tip, merge, time)
    }
}

/// The network half of [`fetch`]: the exchange, the objects put in quarantine (bounded by
/// `limits`), nothing validated. `None` when the peer has nothing new. The area is held by a
/// [`QuarantineGuard`]: on error, or if this future is dropped before it completes, the area
/// is dropped. A caller that validates on another thread (a node does, off the async workers)
/// uses [`receive_shared`], then [`Received::integrate`].
pub async fn receive<'s, S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    conv: ConversationId,
    storage: &'s dyn Storage,
    limits: BundleLimits,
    progress: &mut (dyn FnMut(usize) + Send),
) -> Result<(Option<Received<'s>>, FetchStats), SyncError> {
    receive_in(
        stream,
        conv,
        StorageRef::Borrowed(storage),
        limits,
        progress,
    )
    .await
}

/// [`receive`] into a shared storage: the [`Received`] branch may move to another thread.
pub async fn receive_shared<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    conv: ConversationId,
    storage: Arc<dyn Storage>,
    limits: BundleLimits,
    progress: &mut (dyn FnMut(usize) + Send),
) -> Result<(Option<Received<'static>>, FetchStats), SyncError> {
    receive_in(stream, conv, StorageRef::Shared(storage), limits, progress).await
}

async fn receive_in<'s, S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    conv: ConversationId,
    handle: StorageRef<'s>,
    limits: BundleLimits,
    progress: &mut (dyn FnMut(usize) + Send),
) -> Result<(Option<Received<'s>>, FetchStats), SyncError> {
    let storage = handle.get();
    let head = storage.head(&conv)?;
    let mut client = Client::new(conv, head, limits);
    let mut stats = FetchStats::default();
    stats.bytes_sent += write_frames(stream, &[client.hello()]).await?;
    let mut dec = Decoder::new();
    // Every `?` below (and dropping this future) drops the area with its guard.
    let mut quarantine: Option<QuarantineGuard<'s>> = None;
    let mut batch: Vec<Object> = Vec::new();
    let mut batch_bytes = 0u64;
    let has = |id: &CommitId| {
        head.is_some() && matches!(storage.object(&conv, &id.object_id()), Ok(Some(_)))
    };
    let outcome = loop {
        let frame = read_frame(stream, &mut dec).await?;
        let steps = client.handle(frame, &has)?;
        let mut done = None;
        for step in steps {
            match step {
                ClientStep::Send(f) => stats.bytes_sent += write_frames(stream, &[f]).await?,
                ClientStep::Objects(objs) => {
                    for o in objs {
                        let len = o.data.len() as u64;
                        // Flush first if this object would take the batch over its bytes.
                        if !batch.is_empty() && batch_bytes + len > BATCH_BYTES {
                            flush(&handle, &conv, &mut quarantine, &mut batch)?;
                            batch_bytes = 0;
                            progress(stats.objects);
                        }
                        stats.objects += 1;
                        batch_bytes += len;
                        batch.push(o);
                        if batch.len() >= BATCH_OBJECTS || batch_bytes >= BATCH_BYTES {
                            flush(&handle, &conv, &mut quarantine, &mut batch)?;
                            batch_bytes = 0;
                            progress(stats.objects);
                        }
                    }
                }
                ClientStep::Done(o) => done = Some(o),
            }
        }
        if let Some(o) = done {
            break o;
        }
    };
    stats.round_trips = client.round_trips;
    match outcome {
        Outcome::UpToDate => Ok((None, stats)),
        Outcome::Received { head: tip } => {
            let q = match quarantine.take() {
                Some(q) => q,
                None => QuarantineGuard::open_in(handle.clone(), &conv)?,
            };
            if !batch.is_empty() {
                q.put(&batch)?;
            }
            progress(stats.objects);
            Ok((Some(Received { quarantine: q, tip }), stats))
        }
    }
}

/// Puts `batch` in the quarantine (opened on first use) and empties it.
fn flush<'s>(
    handle: &StorageRef<'s>,
    conv: &ConversationId,
    quarantine: &mut Option<QuarantineGuard<'s>>,
    batch: &mut Vec<Object>,
) -> Result<(), SyncError> {
    let q = match quarantine {
        Some(q) => q,
        None => quarantine.insert(QuarantineGuard::open_in(handle.clone(), conv)?),
    };
    q.put(batch)?;
    batch.clear();
    Ok(())
}
