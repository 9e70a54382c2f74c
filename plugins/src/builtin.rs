//! The plugins of this repository (`plugins/guests/`), built from source by `build.rs` and
//! embedded as components.

use std::sync::Arc;

use crate::{Host, LoadError, Plugin};

/// `application/reaction+json`: a reaction to an earlier message.
pub const REACTIONS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/reactions.wasm"));
/// `application/edited-message`: only the author edits, only an earlier text message.
pub const EDITS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/edits.wasm"));
/// `application/call-history+json`: the two shapes of the seed.
pub const CALL_HISTORY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/call-history.wasm"));
/// `application/poll+json`: open, vote once while open, close by the author or an admin.
pub const POLLS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/polls.wasm"));

/// Every built-in plugin with its name.
pub const ALL: &[(&str, &[u8])] = &[
    ("reactions", REACTIONS),
    ("edits", EDITS),
    ("call-history", CALL_HISTORY),
    ("polls", POLLS),
];

/// Loads every built-in plugin, ready for
/// [`Engine::register`](swarm_api::validate::Engine::register).
pub fn load_all(host: &Host) -> Result<Vec<Arc<Plugin>>, LoadError> {
    ALL.iter()
        .map(|(name, wasm)| host.load(name, wasm).map(Arc::new))
        .collect()
}
