//! # transport-dht
//!
//! A swarm Transport over OpenDHT (discovery, invitations, trust requests and commit notifications).
//!
//! **Status: not implemented yet.** This crate is a placeholder that fixes its place in the
//! workspace (DESIGN §1); it exports nothing and pretends nothing. It is built by the
//! "transport-dht" issue.
#![deny(missing_docs)]
