//! # swarm-api: the core of swarm
//!
//! A *swarm* is a conversation no server owns: every member's device stores the whole
//! history as a Merkle DAG of signed Git commits, validates every commit it receives and
//! merges branches. This crate is the sans-IO core (DESIGN §1): ids, identity, the commit
//! model and its signatures, the repository layout, and the four traits that make the
//! framework pluggable:
//!
//! - [`Storage`](storage::Storage): where conversations are kept (`swarm-git`, `swarm-sled`);
//! - [`Transport`](traits::Transport): how bytes move between devices (`transport-quic`,
//!   `transport-dht`);
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
