//! # swarm-api: the core of swarm
//!
//! A *swarm* is a conversation no server owns: every member's device stores the whole
//! history as a Merkle DAG of signed Git commits, validates every commit it receives and
//! merges branches.
//!
//! ## Walkthrough: two nodes create, invite, join and chat
//!
//! An app runs a [`host::Host`]: storage, transports, an optional discovery service and a
//! home directory for the node's own state, with typed async methods and an event stream.
//! Here both nodes live in one process, over the in-memory [`sim`] network and
//! [`storage::MemoryStorage`]; a real app gives `swarm_git::GitStorage` and
//! `transport_quic::QuicTransport` instead (see `examples/examples/echo_bot.rs`).
//!
//! ```
//! # #[cfg(feature = "sim")]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use swarm_api::body::{Body, Mode};
//! use swarm_api::host::{Home, Host};
//! use swarm_api::node::Event;
//! use swarm_api::sim::SimNetwork;
//! use swarm_api::storage::MemoryStorage;
//!
//! let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
//! rt.block_on(async {
//!     let dirs = tempfile::tempdir()?;
//!     let net = SimNetwork::new(7);
//!     let node = |name: &str| -> Result<Host, Box<dyn std::error::Error>> {
//!         let home = Home::new(dirs.path().join(name));
//!         let me = home.create_identity(name)?.into_local();
//!         let transport = Arc::new(net.join(me.peer()));
//!         let host = Host::builder(home, me)
//!             .storage(Arc::new(MemoryStorage::new()))
//!             .transport(transport)
//!             .build()?;
//!         host.start();
//!         Ok(host)
//!     };
//!     let (alice, bob) = (node("alice")?, node("bob")?);
//!     let mut bob_events = bob.events();
//!
//!     // Alice creates a conversation and invites Bob's account.
//!     let conv = alice.create(Mode::InvitesOnly, None).await?;
//!     alice.invite(conv, bob.peer().account).await?;
//!
//!     // Bob is told, clones the conversation from Alice (validating every commit) and joins.
//!     loop {
//!         if let Event::InvitationReceived { conv: c, .. } = bob_events.recv().await? {
//!             assert_eq!(c, conv);
//!             break;
//!         }
//!     }
//!     bob.join(conv, None).await?;
//!
//!     // Alice says hello; Bob's node fetches it and reports it.
//!     let mut alice_events = alice.events();
//!     alice.send(conv, "hello Bob").await?;
//!     let text = loop {
//!         if let Event::MessageReceived { body: Body::Text(t), .. } = bob_events.recv().await? {
//!             break t.body;
//!         }
//!     };
//!     assert_eq!(text, "hello Bob");
//!     bob.send(conv, "hi Alice").await?;
//!     loop {
//!         if let Event::MessageReceived { body: Body::Text(t), .. } = alice_events.recv().await? {
//!             assert_eq!(t.body, "hi Alice");
//!             break;
//!         }
//!     }
//!
//!     // The timeline is in display form, in an order every member agrees on (Bob's reply
//!     // comes after what he answered; Bob's join may come before or after "hello Bob").
//!     let lines: Vec<String> = bob.timeline(conv, None).await?.into_iter().map(|e| e.text).collect();
//!     let at = |text: &str| lines.iter().position(|l| l == text);
//!     assert!(at("hello Bob") < at("hi Alice") && at("hello Bob").is_some(), "{lines:?}");
//!     Ok::<_, Box<dyn std::error::Error>>(())
//! })
//! # }
//! # #[cfg(not(feature = "sim"))]
//! # fn main() {}
//! ```
//!
//! ## The parts
//!
//! This crate holds ids, identity, the commit model and its signatures, the repository
//! layout, the rules, sync and merge (DESIGN §1), the [`host`] that composes a node, and the
//! four traits that make the framework pluggable:
//!
//! - [`Storage`](storage::Storage): where conversations are kept (`swarm-git`, `swarm-sled`);
//! - [`Transport`](traits::Transport): how bytes move between devices (`transport-quic`,
//!   `transport-dht`), with [`Discovery`](traits::Discovery) to find where a device is;
//! - [`Validator`](traits::Validator): whether a commit is allowed;
//! - [`MessageType`](traits::MessageType): a commit `type` and its rules (built-in or plugin).
//!
//! The protocol, the rules and the merge are sans-IO and deterministic: validation reads no
//! clock and opens no file or socket, storage and transport are traits, randomness comes from
//! a caller-supplied RNG. Two layers above them do drive real time: [`node::Node`] (the sync
//! engine: it spawns tokio tasks, applies timeouts and dates its commits with the wall clock,
//! display-only) and [`host::Host`] (a whole node for an app: it also keeps its own small
//! state in a home directory). The simulation drives both on tokio's paused clock.
//!
//! ```
//! use swarm_api::{body::Body, id::AccountUri};
//! let body = Body::parse(r#"{"body":"hello","type":"text/plain"}"#).unwrap();
//! assert_eq!(body.kind(), "text/plain");
//! assert!("not-a-uri".parse::<AccountUri>().is_err());
//! ```
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod body;
pub mod commit;
pub mod graph;
pub mod host;
pub mod id;
pub mod identity;
pub mod jami;
pub mod layout;
pub mod merge;
pub mod node;
pub mod object;
pub mod ops;
pub mod order;
pub mod rate;
pub mod repo;
#[cfg(feature = "sim")]
pub mod sim;
pub mod storage;
pub mod sync;
#[cfg(feature = "testing")]
pub mod testing;
pub mod traits;
pub mod validate;
pub mod view;

pub use id::{AccountUri, CommitId, ConversationId, DeviceId};
pub use storage::Storage;
pub use traits::{MessageType, Transport, Validator};
