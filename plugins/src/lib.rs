//! # swarm-plugins
//!
//! The wasmtime host that turns sandboxed WebAssembly components into swarm MessageTypes and Validators.
//!
//! **Status: not implemented yet.** This crate is a placeholder that fixes its place in the
//! workspace (DESIGN §1); it exports nothing and pretends nothing. It is built by the
//! "Message-type plugins" issue.
#![deny(missing_docs)]
