//! The sync state machines fed hostile frame sequences (issue #15, "Fuzzing").
//!
//! - [`Client`]: whatever a server sends, it returns a typed error or a step, never panics,
//!   never yields an object outside an announced bundle, never more objects or bytes than
//!   announced, never a bundle over its [`BundleLimits`], and ends for good after an error.
//! - [`Server`] (over a small real conversation in a [`MemoryStorage`]): whatever a client
//!   sends, it refuses strangers with nothing but `Refused`, probes only ids of its own
//!   history in at most [`MAX_PROBE_ROUNDS`] rounds, sends bundles whose announcement matches
//!   what follows and that hold only objects of the conversation, and ends for good after an
//!   error. An honest client driven against it over the wire always ends with the whole
//!   history, in a bounded number of round trips.

use std::collections::{BTreeSet, HashSet};
use std::sync::OnceLock;

use proptest::prelude::*;
use swarm_api::body::{Body, Mode};
use swarm_api::graph::Graph;
use swarm_api::id::{AccountUri, CommitId, ConversationId, DeviceId};
use swarm_api::object::{Kind, Object};
use swarm_api::ops;
use swarm_api::repo::{create_conversation, Repo};
use swarm_api::storage::{ConversationObjects, MemoryStorage, Storage};
use swarm_api::sync::wire::{Decoder, MAX_FRAME, MAX_PROBE, VERSION};
use swarm_api::sync::{
    BundleLimits, Client, ClientStep, Frame, Outcome, Peer, Server, SyncError, MAX_PROBE_ROUNDS,
    SMALL_GAP,
};
use swarm_api::testing::{reachable_objects, Person, T};
use swarm_api::validate::Engine;

fn id() -> impl Strategy<Value = CommitId> {
    any::<[u8; 20]>().prop_map(CommitId::from_bytes)
}

fn object() -> impl Strategy<Value = Object> {
    (
        prop_oneof![Just(Kind::Blob), Just(Kind::Tree), Just(Kind::Commit)],
        proptest::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(|(kind, data)| Object { kind, data })
}

/// What a hostile server may send: bundle frames are frequent, counts mostly small (so that
/// they can match what follows) and sometimes huge.
fn server_frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        1 => (any::<u16>(), id(), proptest::option::of(id())).prop_map(|(version, c, head)| {
            Frame::Hello { version, conv: ConversationId(c), head }
        }),
        1 => ".{0,20}".prop_map(Frame::Refused),
        2 => Just(Frame::UpToDate),
        2 => proptest::collection::vec(id(), 0..20).prop_map(Frame::Probe),
        1 => proptest::collection::vec(any::<bool>(), 0..16).prop_map(Frame::Known),
        3 => (
            id(),
            prop_oneof![3 => 0u32..6, 1 => any::<u32>()],
            prop_oneof![3 => 0u64..1500, 1 => any::<u64>()],
        )
            .prop_map(|(head, objects, bytes)| Frame::BundleStart { head, objects, bytes }),
        6 => object().prop_map(Frame::Object),
        3 => Just(Frame::BundleEnd),
    ]
}

/// The client's (deterministic) answer to "is this commit stored here?".
fn has(id: &CommitId) -> bool {
    id.as_bytes()[0].is_multiple_of(2)
}

fn typed_client_error(e: &SyncError) -> bool {
    matches!(
        e,
        SyncError::Protocol(_) | SyncError::Refused(_) | SyncError::Limit(_)
    )
}

/// Feeds `frames` to a fresh client and checks every step against the announcement.
fn run_client(
    frames: Vec<Frame>,
    head: Option<CommitId>,
    limits: BundleLimits,
) -> Result<(Option<Outcome>, usize), TestCaseError> {
    let conv = ConversationId(CommitId::from_bytes([9; 20]));
    let mut c = Client::new(conv, head, limits);
    prop_assert_eq!(
        c.hello(),
        Frame::Hello {
            version: VERSION,
            conv,
            head
        }
    );
    // (head, objects, bytes) of the accepted announcement, and what arrived since.
    let mut announced: Option<(CommitId, u32, u64)> = None;
    let (mut got, mut got_bytes) = (0u64, 0u64);
    let mut outcome = None;
    let mut ended = false;
    for f in frames {
        let was_done = c.is_done();
        prop_assert_eq!(was_done, ended);
        let sent = f.clone();
        match c.handle(f, &has) {
            Err(e) => {
                prop_assert!(typed_client_error(&e), "untyped error {e:?}");
                prop_assert!(c.is_done(), "an error leaves the client running");
                if was_done {
                    prop_assert!(matches!(e, SyncError::Protocol(_)), "{e:?}");
                }
                if let SyncError::Refused(r) = &e {
                    prop_assert_eq!(&sent, &Frame::Refused(r.clone()));
                }
                ended = true;
            }
            Ok(steps) => {
                prop_assert!(!was_done, "a finished client accepted {sent:?}");
                if let Frame::BundleStart {
                    head,
                    objects,
                    bytes,
                } = &sent
                {
                    prop_assert!(announced.is_none());
                    prop_assert!(*objects <= limits.max_objects && *bytes <= limits.max_bytes);
                    announced = Some((*head, *objects, *bytes));
                }
                for s in steps {
                    match s {
                        ClientStep::Send(Frame::Known(bits)) => {
                            let Frame::Probe(ids) = &sent else {
                                return Err(TestCaseError::fail(format!(
                                    "Known sent in answer to {sent:?}"
                                )));
                            };
                            let want: Vec<bool> = ids.iter().map(has).collect();
                            prop_assert_eq!(bits, want);
                        }
                        ClientStep::Send(other) => {
                            return Err(TestCaseError::fail(format!("client sent {other:?}")));
                        }
                        ClientStep::Objects(objs) => {
                            let Some((_, n, b)) = announced else {
                                return Err(TestCaseError::fail("objects outside a bundle"));
                            };
                            prop_assert_eq!(objs.len(), 1);
                            prop_assert_eq!(&sent, &Frame::Object(objs[0].clone()));
                            got += objs.len() as u64;
                            got_bytes += objs.iter().map(|o| o.data.len() as u64).sum::<u64>();
                            prop_assert!(got <= u64::from(n), "{got} objects of {n} announced");
                            prop_assert!(got_bytes <= b, "{got_bytes} bytes of {b} announced");
                            prop_assert!(got <= u64::from(limits.max_objects));
                            prop_assert!(got_bytes <= limits.max_bytes);
                        }
                        ClientStep::Done(o) => {
                            match &o {
                                Outcome::UpToDate => {
                                    prop_assert_eq!(&sent, &Frame::UpToDate);
                                    prop_assert!(announced.is_none());
                                }
                                Outcome::Received { head } => {
                                    prop_assert_eq!(&sent, &Frame::BundleEnd);
                                    let Some((h, n, _)) = announced else {
                                        return Err(TestCaseError::fail(
                                            "bundle end without start",
                                        ));
                                    };
                                    prop_assert_eq!(*head, h);
                                    prop_assert_eq!(got, u64::from(n));
                                }
                            }
                            prop_assert!(c.is_done());
                            outcome = Some(o);
                            ended = true;
                        }
                    }
                }
            }
        }
    }
    Ok((outcome, got as usize))
}

// -------------------------------------------------------------------------- the conversation

struct Fixture {
    st: MemoryStorage,
    conv: ConversationId,
    /// First-parent chain, head first.
    chain: Vec<CommitId>,
    /// Every object id of the conversation.
    objects: BTreeSet<gix_hash::ObjectId>,
    admin: AccountUri,
    engine: Engine,
}

const MESSAGES: usize = 40;

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let admin = Person::new("admin");
        let bob = Person::new("bob");
        let st = MemoryStorage::new();
        let conv =
            create_conversation(&st, &admin.signer(), Mode::InvitesOnly, None, T).expect("create");
        let repo = Repo::open(&st, conv).expect("open");
        let (body, files) = ops::invite(bob.account.uri());
        repo.append(&admin.signer(), &body, &files, T)
            .expect("invite");
        for i in 0..MESSAGES {
            repo.append(
                &admin.signer(),
                &Body::text(format!("message {i}")),
                &[],
                T + 1,
            )
            .expect("text");
        }
        let head = st.head(&conv).expect("head").expect("a head");
        let src = ConversationObjects { storage: &st, conv };
        let mut chain = vec![head];
        let mut graph = Graph::new();
        while let Some(p) = graph
            .parents(&src, chain.last().expect("non-empty"))
            .expect("parents")
            .first()
        {
            chain.push(*p);
        }
        let objects = reachable_objects(&src, head)
            .expect("objects")
            .iter()
            .map(Object::id)
            .collect();
        Fixture {
            conv,
            chain,
            objects,
            admin: admin.account.uri(),
            engine: Engine::default(),
            st,
        }
    })
}

fn member_peer() -> impl Strategy<Value = Peer> {
    any::<[u8; 32]>().prop_map(|d| Peer {
        device: DeviceId::from_bytes(d),
        account: fixture().admin,
    })
}

fn stranger_peer() -> impl Strategy<Value = Peer> {
    (any::<[u8; 32]>(), any::<[u8; 20]>()).prop_map(|(d, a)| Peer {
        device: DeviceId::from_bytes(d),
        account: AccountUri::from_bytes(a),
    })
}

/// A commit of the fixture's history or an arbitrary id.
fn some_commit() -> impl Strategy<Value = CommitId> {
    prop_oneof![
        3 => (0..MESSAGES + 2).prop_map(|i| fixture().chain[i]),
        1 => id(),
    ]
}

fn client_frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        6 => (
            prop_oneof![4 => Just(VERSION), 1 => any::<u16>()],
            prop_oneof![4 => Just(fixture().conv.0), 1 => id()],
            proptest::option::of(some_commit()),
        )
            .prop_map(|(version, c, head)| Frame::Hello { version, conv: ConversationId(c), head }),
        6 => proptest::collection::vec(any::<bool>(), 0..80).prop_map(Frame::Known),
        1 => Just(Frame::UpToDate),
        1 => ".{0,10}".prop_map(Frame::Refused),
        1 => proptest::collection::vec(some_commit(), 0..4).prop_map(Frame::Probe),
        1 => (some_commit(), any::<u32>(), any::<u64>())
            .prop_map(|(head, objects, bytes)| Frame::BundleStart { head, objects, bytes }),
        1 => object().prop_map(Frame::Object),
        1 => Just(Frame::BundleEnd),
    ]
}

/// Checks one answer of the server; returns whether it ended the session.
fn check_server_answer(
    f: &Fixture,
    out: &[Frame],
    member: bool,
    hello: &Frame,
) -> Result<(), TestCaseError> {
    for frame in out {
        let bytes = frame.encode();
        prop_assert!(bytes.len() <= MAX_FRAME + 4);
        let mut d = Decoder::new();
        d.push(&bytes);
        let back = d.next_frame().ok().flatten();
        prop_assert_eq!(back.as_ref(), Some(frame));
    }
    let Some(first) = out.first() else {
        return Err(TestCaseError::fail("the server answered nothing"));
    };
    let proper = matches!(hello, Frame::Hello { version, conv, .. } if *version == VERSION && *conv == f.conv);
    match first {
        Frame::Refused(_) => {
            prop_assert_eq!(out.len(), 1);
            prop_assert!(!(member && proper), "a member's proper hello was refused");
        }
        _ if !(member && proper) => {
            return Err(TestCaseError::fail(format!(
                "answered {first:?} to a stranger or an improper hello {hello:?}"
            )));
        }
        Frame::UpToDate => prop_assert_eq!(out.len(), 1),
        Frame::Probe(ids) => {
            prop_assert_eq!(out.len(), 1);
            prop_assert!(!ids.is_empty() && ids.len() <= MAX_PROBE);
            for i in ids {
                prop_assert!(f.chain.contains(i), "probed {i}, not in the history");
            }
        }
        Frame::BundleStart {
            head,
            objects,
            bytes,
        } => {
            prop_assert_eq!(*head, f.chain[0]);
            prop_assert_eq!(out.len(), *objects as usize + 2);
            prop_assert_eq!(out.last(), Some(&Frame::BundleEnd));
            let mut total = 0u64;
            let mut seen = HashSet::new();
            for o in &out[1..out.len() - 1] {
                let Frame::Object(o) = o else {
                    return Err(TestCaseError::fail(format!("{o:?} inside a bundle")));
                };
                prop_assert!(f.objects.contains(&o.id()), "a foreign object was sent");
                prop_assert!(seen.insert(o.id()), "an object was sent twice");
                total += o.data.len() as u64;
            }
            prop_assert_eq!(total, *bytes);
        }
        other => return Err(TestCaseError::fail(format!("server sent {other:?}"))),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    /// Arbitrary server frames: typed errors, nothing beyond the announcement or the limits.
    #[test]
    fn the_client_never_accepts_more_than_announced_or_allowed(
        frames in proptest::collection::vec(server_frame(), 0..24),
        head in proptest::option::of(id()),
        max_objects in prop_oneof![0u32..8, Just(u32::MAX)],
        max_bytes in prop_oneof![0u64..1500, Just(u64::MAX)],
    ) {
        run_client(frames, head, BundleLimits { max_objects, max_bytes })?;
    }

    /// An honest bundle is accepted whole; one whose announcement is off is refused.
    #[test]
    fn a_bundle_is_accepted_only_as_announced(
        objects in proptest::collection::vec(object(), 0..6),
        head in id(),
        probes in proptest::collection::vec(proptest::collection::vec(id(), 0..8), 0..3),
        d_objects in -1i64..=1,
        d_bytes in -1i64..=1,
        slack_objects in 0u32..3,
        slack_bytes in 0u64..3,
        under_limit in any::<bool>(),
    ) {
        let n = objects.len() as u32;
        let b: u64 = objects.iter().map(|o| o.data.len() as u64).sum();
        let an = (i64::from(n) + d_objects).max(0) as u32;
        let ab = (b as i64 + d_bytes).max(0) as u64;
        let limits = if under_limit {
            BundleLimits { max_objects: an + slack_objects, max_bytes: ab + slack_bytes }
        } else {
            BundleLimits { max_objects: an.saturating_sub(slack_objects), max_bytes: ab.saturating_sub(slack_bytes) }
        };
        let mut frames: Vec<Frame> = probes.into_iter().map(Frame::Probe).collect();
        frames.push(Frame::BundleStart { head, objects: an, bytes: ab });
        frames.extend(objects.into_iter().map(Frame::Object));
        frames.push(Frame::BundleEnd);
        let (outcome, got) = run_client(frames, None, limits)?;
        let within = an <= limits.max_objects && ab <= limits.max_bytes;
        if an == n && ab == b && within {
            prop_assert_eq!(outcome.clone(), Some(Outcome::Received { head }));
            prop_assert_eq!(got, n as usize);
        }
        if outcome.is_some() {
            prop_assert!(an == n && ab >= b && within);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    /// Arbitrary client frames against a real conversation.
    #[test]
    fn the_server_answers_any_client_with_typed_errors_and_well_formed_frames(
        member in any::<bool>(),
        member_peer in member_peer(),
        stranger in stranger_peer(),
        frames in proptest::collection::vec(client_frame(), 1..8),
    ) {
        let f = fixture();
        let peer = if member { member_peer } else { stranger };
        let mut server = Server::new(peer);
        let mut graph = Graph::new();
        let mut hello: Option<Frame> = None;
        let mut ended = false;
        for frame in frames {
            prop_assert_eq!(server.is_done(), ended);
            let is_hello = matches!(frame, Frame::Hello { .. });
            let expects_hello = hello.is_none();
            let sent = frame.clone();
            match server.handle(frame, &f.st, &f.engine, &mut graph) {
                Err(e) => {
                    prop_assert!(matches!(e, SyncError::Protocol(_)), "untyped error {e:?}");
                    prop_assert!(server.is_done());
                    // Only a frame out of turn is an error.
                    prop_assert!(ended || expects_hello != is_hello || !matches!(sent, Frame::Known(_) | Frame::Hello { .. }),
                        "{sent:?} in turn refused: {e}");
                    ended = true;
                }
                Ok(out) => {
                    prop_assert!(!ended, "a finished server answered {sent:?}");
                    if expects_hello {
                        prop_assert!(is_hello);
                        hello = Some(sent.clone());
                    } else {
                        prop_assert!(matches!(sent, Frame::Known(_)));
                    }
                    let h = hello.clone().unwrap_or(Frame::UpToDate);
                    check_server_answer(f, &out, member, &h)?;
                    prop_assert!(server.stats().rounds <= MAX_PROBE_ROUNDS);
                    let probing = matches!(out.first(), Some(Frame::Probe(_)));
                    prop_assert_eq!(server.is_done(), !probing);
                    ended = !probing;
                }
            }
        }
    }

    /// An honest client holding a prefix of the history (and maybe commits of its own) gets
    /// all it lacks, in a bounded number of round trips, over the wire encoding.
    #[test]
    fn an_honest_client_gets_the_whole_history_in_bounded_round_trips(
        prefix in proptest::option::of(0..MESSAGES + 2),
        diverged in any::<bool>(),
        own in id(),
        chunk in 1usize..4096,
    ) {
        let f = fixture();
        let src = ConversationObjects { storage: &f.st, conv: f.conv };
        // What the client has: everything reachable from chain[k].
        let (mine, have): (HashSet<CommitId>, HashSet<gix_hash::ObjectId>) = match prefix {
            Some(k) => (
                f.chain[k..].iter().copied().collect(),
                reachable_objects(&src, f.chain[k]).expect("objects").iter().map(Object::id).collect(),
            ),
            None => (HashSet::new(), HashSet::new()),
        };
        // A diverged client's head is a commit of its own the server never saw.
        let head = match prefix {
            Some(k) if !diverged => Some(f.chain[k]),
            Some(_) => Some(own),
            None => None,
        };
        let known = |id: &CommitId| mine.contains(id);
        let mut client = Client::new(f.conv, head, BundleLimits::default());
        let mut server = Server::new(Peer { device: DeviceId::from_bytes([1; 32]), account: f.admin });
        let mut graph = Graph::new();
        let mut to_server = client.hello().encode();
        let mut received: Vec<Object> = Vec::new();
        let outcome = 'session: loop {
            prop_assert!(client.round_trips <= MAX_PROBE_ROUNDS + 1);
            let mut d = Decoder::new();
            let mut to_client = Vec::new();
            for c in to_server.chunks(chunk) {
                d.push(c);
                while let Some(frame) = d.next_frame().expect("decodes") {
                    for out in server.handle(frame, &f.st, &f.engine, &mut graph).expect("serves") {
                        to_client.extend(out.encode());
                    }
                }
            }
            to_server = Vec::new();
            let mut d = Decoder::new();
            for c in to_client.chunks(chunk) {
                d.push(c);
                while let Some(frame) = d.next_frame().expect("decodes") {
                    for step in client.handle(frame, &known).expect("fetches") {
                        match step {
                            ClientStep::Send(frame) => to_server.extend(frame.encode()),
                            ClientStep::Objects(o) => received.extend(o),
                            ClientStep::Done(o) => break 'session o,
                        }
                    }
                }
            }
            prop_assert!(!to_server.is_empty(), "the session stalled");
        };
        prop_assert!(server.is_done() && client.is_done());
        // A client with the server's head is up to date (a diverged one learns it by probing).
        let up_to_date = prefix == Some(0);
        prop_assert_eq!(outcome == Outcome::UpToDate, up_to_date);
        // Everything of the server's head is now here...
        let now: HashSet<gix_hash::ObjectId> =
            have.iter().copied().chain(received.iter().map(Object::id)).collect();
        for o in &f.objects {
            prop_assert!(now.contains(o), "missing {o} after the sync");
        }
        // ...with few of the client's own commits sent again.
        let resent = received
            .iter()
            .filter(|o| o.kind == Kind::Commit)
            .filter(|o| CommitId::from_object_id(&o.id()).is_some_and(|c| mine.contains(&c)))
            .count();
        if diverged {
            prop_assert!(resent <= SMALL_GAP, "{resent} known commits sent again");
        } else {
            prop_assert_eq!(resent, 0);
        }
    }
}

/// A server can keep the client answering probes forever: each `Probe` costs the client one
/// storage lookup per id (up to 512) and the client never ends the session itself; only the
/// node's `sync_timeout` (60 s by default) stops it. An honest server needs at most
/// `MAX_PROBE_ROUNDS` probes. Ignored until the client bounds the rounds it answers.
#[test]
fn a_hostile_server_cannot_keep_the_client_probing_forever() {
    let mut c = Client::new(
        ConversationId(CommitId::from_bytes([9; 20])),
        Some(CommitId::from_bytes([1; 20])),
        BundleLimits::default(),
    );
    let ids: Vec<CommitId> = (0..MAX_PROBE)
        .map(|i| CommitId::from_bytes([(i % 251) as u8; 20]))
        .collect();
    let mut answered = 0u32;
    for _ in 0..1000 {
        match c.handle(Frame::Probe(ids.clone()), &|_| false) {
            Ok(_) => answered += 1,
            Err(_) => break,
        }
    }
    assert!(
        answered <= MAX_PROBE_ROUNDS + 1,
        "the client answered {answered} probe rounds"
    );
}
