//! # swarm-sled
//!
//! A swarm Storage backend over one sled database holding many conversations, with the same Git objects and ids as swarm-git.
//!
//! **Status: not implemented yet.** This crate is a placeholder that fixes its place in the
//! workspace (DESIGN §1); it exports nothing and pretends nothing. It is built by the
//! "swarm-sled" issue.
#![deny(missing_docs)]
