//! # swarm-plugins
//!
//! The wasmtime host that turns sandboxed WebAssembly components into swarm
//! [`MessageType`](swarm_api::traits::MessageType)s (DESIGN §7).
//!
//! A plugin is a component of the world `swarm:plugin/message-type@0.1.0` (`plugins/wit/`): it
//! declares the commit `type` strings it owns and validates a view of each commit of those types.
//! The [`Host`] compiles it once (an in-memory cache by SHA-256, and wasmtime's on-disk cache
//! when [`HostConfig::cache_dir`] is set) and runs every call in a fresh store with no WASI and
//! nothing imported, a fuel budget, and memory, table and instance limits. A trap, an exhausted
//! budget, a limit hit or a malformed or oversized answer refuses the commit with
//! [`Violation::Plugin`](swarm_api::validate::Violation::Plugin) naming the plugin; it never
//! panics or hangs the node.
//!
//! [`builtin`] holds the plugins of this repository (`plugins/guests/`: reactions, edits, call
//! history, polls), built from source by `build.rs`.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod builtin;
mod host;

pub use host::{Host, HostConfig, LoadError, Plugin, PluginLimits, WORLD};

use std::sync::Arc;

use swarm_api::traits::{MessageType, PluginLoader};
use swarm_api::validate::{Engine, Limits};

/// Pinned plugins (`plugins/<sha256>.wasm` in a conversation) are loaded by the host.
impl PluginLoader for Host {
    fn load(&self, wasm: &[u8]) -> Result<Arc<dyn MessageType>, String> {
        Host::load(self, "pinned", wasm)
            .map(|p| Arc::new(p) as Arc<dyn MessageType>)
            .map_err(|e| e.to_string())
    }
}

/// A validation engine as an app runs it: the built-in plugins validate reactions, edits,
/// call history and polls, `extra` plugins their types, and plugins pinned in a conversation
/// are loaded by `host`.
pub fn engine(host: Arc<Host>, limits: Limits, extra: Vec<Plugin>) -> Result<Engine, LoadError> {
    let mut e = Engine::new(limits);
    install(&mut e, host, extra)?;
    Ok(e)
}

/// Equips an existing engine (any rule profile) as [`engine`] does: the built-in plugins,
/// then `extra` (registered later, so an extra plugin owning a built-in plugin's type takes
/// it over), and `host` as the loader of pinned plugins.
pub fn install(e: &mut Engine, host: Arc<Host>, extra: Vec<Plugin>) -> Result<(), LoadError> {
    for p in builtin::load_all(&host)? {
        e.register(p);
    }
    for p in extra {
        e.register(Arc::new(p));
    }
    e.set_plugin_loader(host);
    Ok(())
}
