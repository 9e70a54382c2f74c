//! # transport-quic
//!
//! A swarm Transport over QUIC (quinn + rustls, TLS 1.3 only, mutual authentication with device certificates).
//!
//! **Status: not implemented yet.** This crate is a placeholder that fixes its place in the
//! workspace (DESIGN §1); it exports nothing and pretends nothing. It is built by the
//! "transport-quic" issue.
#![deny(missing_docs)]
