//! The two small books a host keeps in its home: received invitations (`requests.json`) and
//! peers' addresses with refused devices (`peers.json`). Both are bounded, whatever peers send.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::home::{Home, HomeError};

use crate::id::{AccountUri, ConversationId, DeviceId, Target};
use crate::rate::PerSender;
use crate::traits::Destination;

/// The signal kind of invitations.
pub const INVITE: &str = "application/invite+json";
/// At most this many invitations are pending at once.
pub const MAX_PENDING: usize = 256;
/// At most this many pending invitations come from one account: a flood from one sender
/// replaces its own oldest ones, never the others'.
pub const MAX_PENDING_PER_SENDER: usize = 16;
/// An account's invitations are taken at most this many at once...
pub const INVITATION_BURST: u32 = 20;
/// ...and then one per this much time (a token bucket per account): a sender flooding
/// invitations costs a file write per [`INVITATION_EVERY`], not one per signal.
pub const INVITATION_EVERY: std::time::Duration = std::time::Duration::from_secs(6);
/// At most this many accounts' buckets are remembered (full ones are forgotten first).
pub const MAX_RATED_SENDERS: usize = 4096;
/// At most this many addresses learned from connections are remembered (the oldest go first);
/// addresses the user added are always kept.
pub const MAX_LEARNED: usize = 1024;
/// Titles and modes announced by inviters are cut to this many characters.
pub const MAX_ANNOUNCED: usize = 200;

/// How many invitations each account may still send now: [`INVITATION_BURST`], then one
/// every [`INVITATION_EVERY`], for at most [`MAX_RATED_SENDERS`] accounts (see
/// [`PerSender`]).
pub type InvitationRate = PerSender<AccountUri>;

/// The invitations' [`InvitationRate`].
pub fn invitation_rate() -> InvitationRate {
    PerSender::new(INVITATION_BURST, INVITATION_EVERY, MAX_RATED_SENDERS)
}

/// The payload of an [`INVITE`] signal: what the inviter says about the conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invitation {
    /// The conversation.
    #[serde(rename = "conversationId")]
    pub conversation: ConversationId,
    /// Its title, as the inviter sees it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Its mode, as the inviter sees it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

/// A received invitation, kept until joined or declined. Nothing in it is trusted: joining
/// clones the conversation and validates every commit, the `join` included.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The conversation.
    pub id: ConversationId,
    /// The inviting account (as the transport authenticated it).
    pub from: AccountUri,
    /// The inviting device (a first source to clone from).
    pub device: DeviceId,
    /// When it arrived (Unix seconds, this device's clock).
    pub received: i64,
    /// The announced title.
    #[serde(default)]
    pub title: Option<String>,
    /// The announced mode.
    #[serde(default)]
    pub mode: Option<String>,
}

/// Pending invitations and declined conversations.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Requests {
    /// Pending, oldest first.
    #[serde(default)]
    pub requests: Vec<Request>,
    /// Conversations declined (their invitations are not listed again).
    #[serde(default)]
    pub declined: BTreeSet<ConversationId>,
}

impl Requests {
    /// The file in the home.
    pub const FILE: &'static str = "requests.json";

    /// The requests kept in `home` (none if the file does not exist yet).
    pub fn load(home: &Home) -> Result<Self, HomeError> {
        home.read_json(Self::FILE)
    }

    /// Reads, changes and writes the requests of `home` (one writer at a time in a process).
    pub fn update<R>(home: &Home, f: impl FnOnce(&mut Self) -> R) -> Result<R, HomeError> {
        static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
        home.update_json(Self::FILE, &LOCK, f)
    }

    /// Keeps `req`; `true` if it is new. A declined conversation stays declined; an invitation
    /// already pending is refreshed only by the same account (another sender never rewrites
    /// it); past the caps the oldest invitation of the sender with the most pending ones goes.
    pub fn add(&mut self, req: Request) -> bool {
        if self.declined.contains(&req.id) {
            return false;
        }
        if let Some(old) = self.requests.iter_mut().find(|r| r.id == req.id) {
            if old.from == req.from {
                old.device = req.device;
            }
            return false;
        }
        let from_sender = self.requests.iter().filter(|r| r.from == req.from).count();
        if from_sender >= MAX_PENDING_PER_SENDER {
            self.evict_oldest_of(&req.from);
        } else if self.requests.len() >= MAX_PENDING {
            if let Some(top) = self.busiest_sender() {
                self.evict_oldest_of(&top);
            }
        }
        self.requests.push(req);
        true
    }

    fn evict_oldest_of(&mut self, from: &AccountUri) {
        if let Some(i) = self.requests.iter().position(|r| r.from == *from) {
            let gone = self.requests.remove(i);
            tracing::debug!(target: "swarm_api::host", conv = %gone.id, from = %gone.from, "too many pending invitations: the sender's oldest dropped");
        }
    }

    fn busiest_sender(&self) -> Option<AccountUri> {
        let mut counts: std::collections::HashMap<AccountUri, usize> = Default::default();
        for r in &self.requests {
            *counts.entry(r.from).or_default() += 1;
        }
        // Ties go to the sender of the oldest request (the first met in order).
        let max = counts.values().copied().max()?;
        self.requests
            .iter()
            .find(|r| counts.get(&r.from) == Some(&max))
            .map(|r| r.from)
    }

    /// The pending invitation to `conv`.
    pub fn get(&self, conv: &ConversationId) -> Option<&Request> {
        self.requests.iter().find(|r| r.id == *conv)
    }

    /// Removes the pending invitation to `conv`.
    pub fn remove(&mut self, conv: &ConversationId) -> Option<Request> {
        let i = self.requests.iter().position(|r| r.id == *conv)?;
        Some(self.requests.remove(i))
    }
}

/// How an address came to be known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The user added it.
    Manual,
    /// An authenticated connection came from it.
    Learned,
}

/// One remembered address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerEntry {
    /// A device, or any device of an account.
    pub who: Target,
    /// Where it listens.
    pub addr: SocketAddr,
    /// How it is known.
    pub source: Source,
    /// When it was last confirmed (Unix seconds).
    pub updated: i64,
}

/// Remembered addresses and refused devices.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct PeerBook {
    /// Addresses.
    #[serde(default)]
    pub peers: Vec<PeerEntry>,
    /// Devices refused: their channels and signals are dropped, none are sent to them.
    #[serde(default)]
    pub blocked: BTreeSet<DeviceId>,
}

/// A book entry's target as a transport destination.
pub fn destination(who: Target) -> Destination {
    match who {
        Target::Account(a) => Destination::Account(a),
        Target::Device(d) => Destination::Device(d),
    }
}

impl PeerBook {
    /// The file in the home.
    pub const FILE: &'static str = "peers.json";

    /// The book kept in `home` (empty if the file does not exist yet).
    pub fn load(home: &Home) -> Result<Self, HomeError> {
        home.read_json(Self::FILE)
    }

    /// Reads, changes and writes the book of `home` (one writer at a time in a process).
    pub fn update<R>(home: &Home, f: impl FnOnce(&mut Self) -> R) -> Result<R, HomeError> {
        static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
        home.update_json(Self::FILE, &LOCK, f)
    }

    /// Remembers that `who` listens at `addr`; `true` if the book changed. A device has one
    /// address (the newest); an account may have several. A learned address never demotes a
    /// manual one; past [`MAX_LEARNED`] learned entries the oldest learned one goes.
    pub fn remember(&mut self, who: Target, addr: SocketAddr, source: Source, now: i64) -> bool {
        if let Some(e) = self
            .peers
            .iter_mut()
            .find(|e| e.who == who && (e.addr == addr || matches!(who, Target::Device(_))))
        {
            if e.addr == addr && (e.source == source || e.source == Source::Manual) {
                return false;
            }
            e.addr = addr;
            if source == Source::Manual {
                e.source = Source::Manual;
            }
            e.updated = now;
            return true;
        }
        if source == Source::Learned {
            let learned = self
                .peers
                .iter()
                .filter(|e| e.source == Source::Learned)
                .count();
            if learned >= MAX_LEARNED {
                if let Some(i) = self
                    .peers
                    .iter()
                    .enumerate()
                    .filter(|(_, e)| e.source == Source::Learned)
                    .min_by_key(|(_, e)| e.updated)
                    .map(|(i, _)| i)
                {
                    self.peers.remove(i);
                }
            }
        }
        self.peers.push(PeerEntry {
            who,
            addr,
            source,
            updated: now,
        });
        true
    }
}

/// `peers.json` as last read, read again only when the file changed (its length or
/// modification time): the host consults the book on every tick (250 ms by default), and
/// parsing up to [`MAX_LEARNED`] entries each time would cost for nothing.
#[derive(Debug, Default)]
pub(crate) struct BookCache {
    /// `None`: never read; `Some(None)`: the file did not exist.
    stamp: Option<Option<(std::time::SystemTime, u64)>>,
    book: PeerBook,
    reads: u64,
}

impl BookCache {
    /// The book of `home`, read again if the file changed since the last call. A book that
    /// cannot be read is logged and taken as empty (the next change is read again).
    pub(crate) fn get(&mut self, home: &Home) -> &PeerBook {
        let stamp = std::fs::metadata(home.dir().join(PeerBook::FILE))
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())));
        if self.stamp != Some(stamp) {
            self.reads += 1;
            self.book = PeerBook::load(home).unwrap_or_else(|e| {
                tracing::warn!(target: "swarm_api::host", error = %e, "cannot read the peers book");
                PeerBook::default()
            });
            self.stamp = Some(stamp);
        }
        &self.book
    }

    /// How many times the file was read.
    #[cfg(test)]
    pub(crate) fn reads(&self) -> u64 {
        self.reads
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The book is read once while `peers.json` does not change, and again when it does
    /// (#15 item 8: it was read and parsed on every 250 ms tick).
    #[test]
    fn the_peers_book_is_read_again_only_when_it_changed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = Home::new(dir.path());
        let mut cache = BookCache::default();
        for _ in 0..100 {
            assert!(cache.get(&home).peers.is_empty());
        }
        assert_eq!(
            cache.reads(),
            1,
            "a missing file is looked at, not read again"
        );
        let who = Target::Device(format!("{:064x}", 7).parse().expect("device"));
        let addr: SocketAddr = "127.0.0.1:4433".parse().expect("addr");
        PeerBook::update(&home, |b| b.remember(who, addr, Source::Manual, 1)).expect("update");
        for _ in 0..100 {
            assert_eq!(cache.get(&home).peers.len(), 1);
        }
        assert_eq!(cache.reads(), 2);
        PeerBook::update(&home, |b| {
            b.remember(
                who,
                "127.0.0.1:4434".parse().expect("addr"),
                Source::Manual,
                2,
            )
        })
        .expect("update");
        assert_eq!(cache.get(&home).peers[0].addr.port(), 4434);
        assert_eq!(cache.reads(), 3);
    }

    fn req(conv: usize, from: usize) -> Request {
        Request {
            id: format!("{conv:040x}").parse().expect("conversation id"),
            from: format!("{from:040x}").parse().expect("uri"),
            device: format!("{:064x}", 2).parse().expect("device"),
            received: 10,
            title: Some("t".into()),
            mode: None,
        }
    }

    #[test]
    fn a_request_is_listed_once_and_a_declined_one_never_again() {
        let mut r = Requests::default();
        assert!(r.add(req(1, 1)));
        assert!(!r.add(req(1, 1)), "listed once");
        assert_eq!(r.requests.len(), 1);
        r.declined.insert(req(1, 1).id);
        r.remove(&req(1, 1).id);
        assert!(!r.add(req(1, 1)), "declined stays declined");
        assert!(r.requests.is_empty());
    }

    #[test]
    fn another_sender_never_rewrites_a_pending_request() {
        let mut r = Requests::default();
        r.add(req(1, 1));
        let mut forged = req(1, 9);
        forged.device = format!("{:064x}", 9).parse().expect("device");
        assert!(!r.add(forged));
        let kept = r.get(&req(1, 1).id).expect("kept");
        assert_eq!(kept.from, req(1, 1).from);
        assert_eq!(kept.device, req(1, 1).device);
    }

    #[test]
    fn a_flood_from_one_sender_keeps_the_others_invitations() {
        let mut r = Requests::default();
        for i in 0..10 {
            assert!(r.add(req(1000 + i, 100 + i)), "honest invitation {i}");
        }
        for i in 0..10_000 {
            r.add(req(i + 1, 1));
        }
        assert!(r.requests.len() <= MAX_PENDING);
        let flooder = r
            .requests
            .iter()
            .filter(|q| q.from == req(0, 1).from)
            .count();
        assert_eq!(flooder, MAX_PENDING_PER_SENDER);
        for i in 0..10 {
            assert!(r.get(&req(1000 + i, 0).id).is_some(), "honest {i} kept");
        }
        // The flooder's newest are the ones kept.
        assert!(r.get(&req(10_000, 1).id).is_some());
    }

    #[test]
    fn a_flooding_sender_gets_its_burst_then_one_invitation_per_interval() {
        let mut rate = invitation_rate();
        let (flooder, honest) = (req(0, 1).from, req(0, 2).from);
        let t0 = std::time::Instant::now();
        let taken = (0..10_000).filter(|_| rate.allow(flooder, t0)).count();
        assert_eq!(taken, INVITATION_BURST as usize, "one burst, then nothing");
        assert!(rate.allow(honest, t0), "another account is not affected");
        let almost = t0 + INVITATION_EVERY - std::time::Duration::from_millis(1);
        assert!(!rate.allow(flooder, almost), "no token before the interval");
        let later = t0 + INVITATION_EVERY;
        assert!(rate.allow(flooder, later), "one token per interval");
        assert!(!rate.allow(flooder, later));
        let much_later = t0 + INVITATION_EVERY * 1000;
        let taken = (0..10_000)
            .filter(|_| rate.allow(flooder, much_later))
            .count();
        assert_eq!(
            taken, INVITATION_BURST as usize,
            "refilled to one burst, no more"
        );
    }

    #[test]
    fn invitation_buckets_stay_bounded_and_busy_senders_are_remembered_first() {
        let mut rate = invitation_rate();
        let uri =
            |i: u64| -> AccountUri { format!("{:040x}", 1_000_000 + i).parse().expect("uri") };
        let t0 = std::time::Instant::now();
        for i in 0..MAX_RATED_SENDERS as u64 - 1 {
            assert!(rate.allow(uri(i), t0), "one invitation each");
        }
        // Later, their buckets are full again (as good as unknown); the flooder drains its own.
        let later = t0 + INVITATION_EVERY * INVITATION_BURST;
        let flooder = req(0, 1).from;
        while rate.allow(flooder, later) {}
        assert_eq!(rate.len(), MAX_RATED_SENDERS);
        // One more account: the full buckets are forgotten, the flooder's empty one is not.
        assert!(rate.allow(uri(u64::MAX / 2), later));
        assert_eq!(rate.len(), 2, "the flooder and the newcomer");
        assert!(!rate.allow(flooder, later), "the flooder is still refused");
        // A swarm of fresh accounts, each draining its burst: the cap holds.
        for i in 0..2 * MAX_RATED_SENDERS as u64 {
            while rate.allow(uri(10_000_000 + i), later) {}
            assert!(rate.len() <= MAX_RATED_SENDERS);
        }
    }

    #[test]
    fn many_senders_are_capped_and_the_busiest_loses_first() {
        let mut r = Requests::default();
        for i in 0..MAX_PENDING_PER_SENDER {
            r.add(req(5000 + i, 7));
        }
        for i in 0..MAX_PENDING * 4 {
            r.add(req(i + 1, 10_000 + i));
        }
        assert_eq!(r.requests.len(), MAX_PENDING);
        assert!(
            r.requests
                .iter()
                .filter(|q| q.from == req(0, 7).from)
                .count()
                <= 1
        );
    }

    #[test]
    fn the_invitation_payload_is_strict_json() {
        let inv = Invitation {
            conversation: req(3, 1).id,
            title: None,
            mode: Some("invites-only".into()),
        };
        let bytes = serde_json::to_vec(&inv).expect("encode");
        assert_eq!(
            serde_json::from_slice::<Invitation>(&bytes).expect("decode"),
            inv
        );
        assert!(serde_json::from_slice::<Invitation>(b"{\"conversationId\":\"zz\"}").is_err());
        assert!(serde_json::from_slice::<Invitation>(b"\xff").is_err());
    }

    #[test]
    fn learned_addresses_are_capped_and_manual_ones_kept() {
        let mut b = PeerBook::default();
        let manual: Target = Target::Device(format!("{:064x}", 1).parse().expect("device"));
        b.remember(
            manual,
            "127.0.0.1:1".parse().expect("addr"),
            Source::Manual,
            0,
        );
        for i in 0..(MAX_LEARNED + 50) {
            let who = Target::Device(format!("{:064x}", i + 2).parse().expect("device"));
            let addr = SocketAddr::from(([127, 0, 0, 1], (i % 60000) as u16 + 2));
            b.remember(who, addr, Source::Learned, i as i64 + 1);
        }
        let learned = b
            .peers
            .iter()
            .filter(|e| e.source == Source::Learned)
            .count();
        assert_eq!(learned, MAX_LEARNED);
        assert!(b.peers.iter().any(|e| e.who == manual), "manual kept");
        assert!(
            b.peers.iter().all(|e| e.updated == 0 || e.updated > 50),
            "oldest went"
        );
    }

    fn dev(n: u8) -> Target {
        Target::Device(format!("{:064x}", n).parse().expect("device id"))
    }

    #[test]
    fn a_device_keeps_its_newest_address_and_manual_entries_stay_manual() {
        let mut b = PeerBook::default();
        let (a1, a2): (SocketAddr, SocketAddr) = (
            "127.0.0.1:1".parse().expect("addr"),
            "127.0.0.1:2".parse().expect("addr"),
        );
        assert!(b.remember(dev(1), a1, Source::Manual, 1));
        assert!(!b.remember(dev(1), a1, Source::Learned, 2), "nothing new");
        assert_eq!(b.peers[0].source, Source::Manual);
        assert!(b.remember(dev(1), a2, Source::Learned, 3));
        assert_eq!(b.peers.len(), 1);
        assert_eq!(b.peers[0].addr, a2);
        let acc = Target::Account(
            "0123456789abcdef0123456789abcdef01234567"
                .parse()
                .expect("uri"),
        );
        assert!(b.remember(acc, a1, Source::Manual, 4));
        assert!(b.remember(acc, a2, Source::Manual, 5));
        assert_eq!(b.peers.len(), 3, "an account may list several addresses");
    }

    #[test]
    fn the_book_survives_a_round_trip_and_a_missing_file_is_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = Home::new(dir.path());
        assert!(PeerBook::load(&home).expect("load").peers.is_empty());
        PeerBook::update(&home, |b| {
            b.remember(
                dev(7),
                "127.0.0.1:9".parse().expect("addr"),
                Source::Learned,
                1,
            );
            b.blocked.insert(match dev(8) {
                Target::Device(d) => d,
                Target::Account(_) => unreachable!("a device"),
            });
        })
        .expect("update");
        let b = PeerBook::load(&home).expect("load");
        assert_eq!(b.peers.len(), 1);
        assert_eq!(b.blocked.len(), 1);
        std::fs::write(dir.path().join(PeerBook::FILE), "{not json").expect("write");
        assert!(
            PeerBook::load(&home).is_err(),
            "a damaged file is an error, not a panic"
        );
    }
}
