//! The wasmtime host: compiling, limiting and calling plugins.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use swarm_api::body::{types as builtin_types, Body, Mode};
use swarm_api::id::CommitId;
use swarm_api::object::ChangeKind;
use swarm_api::order::display_order;
use swarm_api::traits::{CommitView, MessageType};
use swarm_api::validate::{MemberRole, Violation};
use wasmtime::component::{Component, Linker};
use wasmtime::{Store, StoreLimits, StoreLimitsBuilder, Trap};

mod bindings {
    wasmtime::component::bindgen!({ path: "wit", world: "message-type" });
}

use bindings::swarm::plugin::types as wit;

/// The WIT world every plugin implements, with its version.
pub const WORLD: &str = "swarm:plugin/message-type@0.1.0";

/// What one call of a plugin may use. The same limits on every peer give the same verdicts:
/// fuel counts WebAssembly instructions, not time.
#[derive(Debug, Clone, Copy)]
pub struct PluginLimits {
    /// Fuel for one validation (`needs` + `validate`, instantiation included).
    pub fuel: u64,
    /// Bytes of linear memory, all memories together.
    pub memory_bytes: usize,
    /// Elements of one table.
    pub table_elements: usize,
    /// Core instances, memories and tables of one component instance.
    pub instances: usize,
    /// Largest component accepted.
    pub max_component_bytes: usize,
    /// Largest text answer (a refusal reason, a summary, a type name).
    pub max_text_bytes: usize,
    /// Most items a plugin may ask for in `needs` (commits, files) and most `types`.
    pub max_items: usize,
    /// Most commits one `since` request may return; asking for more refuses the commit.
    pub max_since: usize,
    /// Largest file of the parent tree whose bytes a plugin gets (`file-info.content`).
    pub max_file_bytes: usize,
}

impl Default for PluginLimits {
    fn default() -> Self {
        Self {
            fuel: 50_000_000,
            memory_bytes: 16 * 1024 * 1024,
            table_elements: 10_000,
            instances: 16,
            max_component_bytes: 2 * 1024 * 1024,
            max_text_bytes: 4096,
            max_items: 64,
            max_since: 10_000,
            max_file_bytes: 64 * 1024,
        }
    }
}

/// How a [`Host`] is set up.
#[derive(Debug, Clone, Default)]
pub struct HostConfig {
    /// Limits of every call.
    pub limits: PluginLimits,
    /// Where wasmtime keeps compiled components between runs (`None`: compile on every
    /// first load in a process).
    pub cache_dir: Option<PathBuf>,
}

/// Why a component is not a usable plugin.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The wasmtime engine could not be set up (bad cache directory...).
    #[error("plugin host: {0}")]
    Host(String),
    /// Larger than [`PluginLimits::max_component_bytes`].
    #[error("plugin {plugin}: {size} bytes, over the limit of {limit}")]
    TooLarge {
        /// The plugin.
        plugin: String,
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Not a valid component of the world [`WORLD`].
    #[error("plugin {plugin} is not a component of the world {WORLD}: {reason}")]
    NotAPlugin {
        /// The plugin.
        plugin: String,
        /// What wasmtime said.
        reason: String,
    },
    /// `types()` trapped, ran out of fuel or answered something malformed.
    #[error("plugin {plugin} failed to declare its types: {reason}")]
    Types {
        /// The plugin.
        plugin: String,
        /// Why.
        reason: String,
    },
    /// The plugin claims a type that only swarm itself may define.
    #[error("plugin {plugin} claims the built-in type {kind:?}, which no plugin may own")]
    ReservedType {
        /// The plugin.
        plugin: String,
        /// The type.
        kind: String,
    },
}

/// Per-store data: the resource limiter.
struct Data {
    limits: StoreLimits,
}

/// The plugin host: one wasmtime engine, compiled components shared by SHA-256.
pub struct Host {
    engine: wasmtime::Engine,
    linker: Arc<Linker<Data>>,
    limits: PluginLimits,
    compiled: Mutex<HashMap<[u8; 32], Component>>,
    /// Components compiled (or taken from the on-disk cache) by this host, for tests.
    compilations: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("limits", &self.limits)
            .finish()
    }
}

impl Host {
    /// A host with default limits and no on-disk cache.
    pub fn new() -> Result<Self, LoadError> {
        Self::with_config(HostConfig::default())
    }

    /// A host set up by `config`.
    pub fn with_config(config: HostConfig) -> Result<Self, LoadError> {
        let mut c = wasmtime::Config::new();
        c.consume_fuel(true);
        c.wasm_component_model(true);
        if let Some(dir) = &config.cache_dir {
            let mut cc = wasmtime::CacheConfig::new();
            cc.with_directory(dir);
            let cache = wasmtime::Cache::new(cc).map_err(|e| LoadError::Host(format!("{e:#}")))?;
            c.cache(Some(cache));
        }
        let engine = wasmtime::Engine::new(&c).map_err(|e| LoadError::Host(format!("{e:#}")))?;
        // Nothing is linked: a plugin importing anything (WASI included) fails to instantiate.
        let linker = Arc::new(Linker::new(&engine));
        Ok(Self {
            engine,
            linker,
            limits: config.limits,
            compiled: Mutex::new(HashMap::new()),
            compilations: Default::default(),
        })
    }

    /// The limits of every call.
    pub fn limits(&self) -> &PluginLimits {
        &self.limits
    }

    /// How many components this host has compiled (or read from the on-disk cache): a
    /// plugin loaded again is taken from memory and not counted.
    pub fn compilations(&self) -> usize {
        self.compilations.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Compiles (or takes from the cache) and checks a plugin: a component of [`WORLD`] whose
    /// `types()` answers within the limits and claims no reserved built-in type. `name` is
    /// for messages only.
    pub fn load(&self, name: &str, wasm: &[u8]) -> Result<Plugin, LoadError> {
        let digest: [u8; 32] = Sha256::digest(wasm).into();
        let label = format!("{name} (sha256 {})", &hex::encode(digest)[..12]);
        if wasm.len() > self.limits.max_component_bytes {
            return Err(LoadError::TooLarge {
                plugin: label,
                size: wasm.len(),
                limit: self.limits.max_component_bytes,
            });
        }
        let not_a_plugin = |e: wasmtime::Error| LoadError::NotAPlugin {
            plugin: label.clone(),
            reason: root_cause(&e),
        };
        let cached = self
            .compiled
            .lock()
            .ok()
            .and_then(|m| m.get(&digest).cloned());
        let component = match cached {
            Some(c) => c,
            None => {
                let c = Component::from_binary(&self.engine, wasm).map_err(not_a_plugin)?;
                self.compilations
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if let Ok(mut m) = self.compiled.lock() {
                    m.insert(digest, c.clone());
                }
                c
            }
        };
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(not_a_plugin)?;
        let pre = bindings::MessageTypePre::new(pre).map_err(not_a_plugin)?;
        let mut plugin = Plugin {
            name: label.clone(),
            digest,
            types: Vec::new(),
            pre,
            engine: self.engine.clone(),
            limits: self.limits,
        };
        let types = plugin
            .call(|store, p| p.call_types(store))
            .map_err(|reason| LoadError::Types {
                plugin: label.clone(),
                reason,
            })?;
        if types.is_empty() || types.len() > self.limits.max_items {
            return Err(LoadError::Types {
                plugin: label,
                reason: format!(
                    "it declares {} types (1 to {} allowed)",
                    types.len(),
                    self.limits.max_items
                ),
            });
        }
        for t in &types {
            if t.is_empty() || t.len() > 128 || t.chars().any(char::is_control) {
                return Err(LoadError::Types {
                    plugin: label,
                    reason: format!("malformed type {t:?}"),
                });
            }
            if builtin_types::RESERVED.contains(&t.as_str()) {
                return Err(LoadError::ReservedType {
                    plugin: label,
                    kind: t.clone(),
                });
            }
        }
        tracing::debug!(target: "swarm_plugins", plugin = %label, ?types, "plugin loaded");
        plugin.types = types;
        Ok(plugin)
    }
}

/// A loaded plugin: a [`MessageType`] for the types it declared.
pub struct Plugin {
    name: String,
    digest: [u8; 32],
    types: Vec<String>,
    pre: bindings::MessageTypePre<Data>,
    engine: wasmtime::Engine,
    limits: PluginLimits,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("types", &self.types)
            .finish()
    }
}

impl Plugin {
    /// The name used in messages: the given name and the start of the SHA-256.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The SHA-256 of the component, hex (the name it has under `plugins/` when pinned).
    pub fn sha256(&self) -> String {
        hex::encode(self.digest)
    }

    /// The types it owns.
    pub fn owned_types(&self) -> &[String] {
        &self.types
    }

    /// Runs `f` on a fresh instance in a fresh store under the limits. Any failure (trap,
    /// fuel, limit, malformed answer) becomes a one-line reason.
    fn call<R>(
        &self,
        f: impl FnOnce(&mut Store<Data>, &bindings::MessageType) -> wasmtime::Result<R>,
    ) -> Result<R, String> {
        let l = &self.limits;
        let limits = StoreLimitsBuilder::new()
            .memory_size(l.memory_bytes)
            .table_elements(l.table_elements)
            .instances(l.instances)
            .memories(l.instances)
            .tables(l.instances)
            .trap_on_grow_failure(true)
            .build();
        let mut store = Store::new(&self.engine, Data { limits });
        store.limiter(|d| &mut d.limits);
        store.set_fuel(l.fuel).map_err(|e| root_cause(&e))?;
        let run = self
            .pre
            .instantiate(&mut store)
            .and_then(|p| f(&mut store, &p));
        run.map_err(|e| match e.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => format!("it ran out of fuel (limit {} units)", l.fuel),
            Some(t) => format!("it trapped: {t}"),
            None => root_cause(&e),
        })
    }

    fn refuse(&self, reason: String) -> Violation {
        tracing::debug!(target: "swarm_plugins", plugin = %self.name, %reason, "commit refused");
        Violation::Plugin {
            plugin: format!("plugin {}", self.name),
            reason,
        }
    }

    /// A text answer, refused if over the limit.
    fn bounded(&self, what: &str, s: String) -> Result<String, String> {
        if s.len() > self.limits.max_text_bytes {
            Err(format!(
                "its {what} is {} bytes, over the limit of {}",
                s.len(),
                self.limits.max_text_bytes
            ))
        } else {
            Ok(s)
        }
    }

    fn check_needs(&self, n: &wit::Needs) -> Result<(), String> {
        let max = self.limits.max_items;
        if n.commits.len() > max || n.files.len() > max || n.since.len() > max {
            return Err(format!(
                "it asked for {} commits, {} histories and {} files (at most {max} each)",
                n.commits.len(),
                n.since.len(),
                n.files.len()
            ));
        }
        Ok(())
    }
}

impl MessageType for Plugin {
    fn types(&self) -> Vec<String> {
        self.types.clone()
    }

    fn validate(&self, view: &CommitView<'_>) -> Result<(), Violation> {
        let wv = wit_view(view);
        let verdict = self.call(|store, p| {
            let needs = p.call_needs(&mut *store, &wv)?;
            let context = match self
                .check_needs(&needs)
                .and_then(|()| context(view, &needs, &self.limits))
            {
                Ok(c) => c,
                Err(reason) => return Ok(Err(reason)),
            };
            p.call_validate(&mut *store, &wv, &context)
                .map(|r| r.map_err(|reason| self.bounded("reason", reason).unwrap_or_else(|e| e)))
        });
        match verdict {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) | Err(reason) => Err(self.refuse(reason)),
        }
    }

    fn summary(&self, body: &Body) -> Option<String> {
        let message = body.to_message();
        match self.call(|store, p| p.call_summary(store, &message)) {
            Ok(Some(s)) => self.bounded("summary", s).ok(),
            Ok(None) => None,
            Err(reason) => {
                tracing::debug!(target: "swarm_plugins", plugin = %self.name, %reason, "summary failed");
                None
            }
        }
    }
}

/// The error's innermost cause, on one line.
fn root_cause(e: &wasmtime::Error) -> String {
    e.root_cause()
        .to_string()
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn wit_view(view: &CommitView<'_>) -> wit::CommitView {
    let c = view.commit;
    wit::CommitView {
        conversation: view.conversation.to_string(),
        id: c.id.to_string(),
        parents: c.parents.iter().map(ToString::to_string).collect(),
        body: c.message.clone(),
        signer: view.signer.to_string(),
        device: view.device.to_string(),
        role: match view.role {
            Some(MemberRole::Admin) => wit::Role::Admin,
            Some(MemberRole::Member) => wit::Role::Member,
            Some(MemberRole::Invited) => wit::Role::Invited,
            Some(MemberRole::Banned) => wit::Role::Banned,
            None => wit::Role::None,
        },
        mode: match view.mode {
            Mode::OneToOne => wit::Mode::OneToOne,
            Mode::AdminInvitesOnly => wit::Mode::AdminInvitesOnly,
            Mode::InvitesOnly => wit::Mode::InvitesOnly,
            Mode::Public => wit::Mode::Public,
        },
        changes: view
            .changes
            .iter()
            .map(|d| wit::Change {
                path: d.path.clone(),
                kind: match d.kind() {
                    ChangeKind::Added => wit::ChangeKind::Added,
                    ChangeKind::Modified => wit::ChangeKind::Modified,
                    ChangeKind::Deleted => wit::ChangeKind::Deleted,
                },
            })
            .collect(),
    }
}

/// An earlier commit as the plugin sees it.
fn info(view: &CommitView<'_>, id: &CommitId) -> Option<wit::CommitInfo> {
    let c = view.lookup.commit(id)?;
    Some(wit::CommitInfo {
        id: id.to_string(),
        author: view.lookup.author(id)?.to_string(),
        body: c.message.clone(),
        parents: c.parents.iter().map(ToString::to_string).collect(),
    })
}

/// Whether `id` is an earlier commit of the history `view` sits on.
fn is_earlier(view: &CommitView<'_>, id: &CommitId) -> bool {
    view.commit
        .parents
        .iter()
        .any(|p| view.lookup.is_ancestor(id, p))
}

/// The commits that descend from `root` and are ancestors of the commit (its parents
/// included), oldest first.
fn since(
    view: &CommitView<'_>,
    root: &CommitId,
    max: usize,
) -> Result<Vec<wit::CommitInfo>, String> {
    if !is_earlier(view, root) {
        return Ok(Vec::new());
    }
    let mut seen: HashSet<CommitId> = HashSet::new();
    let mut parents_of: Vec<(CommitId, Vec<CommitId>)> = Vec::new();
    let mut queue: VecDeque<CommitId> = view.commit.parents.iter().copied().collect();
    while let Some(id) = queue.pop_front() {
        if id == *root || !seen.insert(id) || !view.lookup.is_ancestor(root, &id) {
            continue;
        }
        if parents_of.len() >= max {
            return Err(format!(
                "it asked for the history since {root}, more than {max} commits"
            ));
        }
        let Some(c) = view.lookup.commit(&id) else {
            continue;
        };
        queue.extend(c.parents.iter().copied());
        parents_of.push((id, c.parents.clone()));
    }
    let order = display_order(parents_of.iter().map(|(id, p)| (*id, p.as_slice())));
    Ok(order.iter().filter_map(|id| info(view, id)).collect())
}

/// What the host finds for `needs`, from the commit's parent and history.
fn context(
    view: &CommitView<'_>,
    needs: &wit::Needs,
    limits: &PluginLimits,
) -> Result<wit::Context, String> {
    let commits = needs
        .commits
        .iter()
        .filter_map(|s| s.parse::<CommitId>().ok())
        .filter(|id| is_earlier(view, id))
        .filter_map(|id| info(view, &id))
        .collect();
    let since = needs
        .since
        .iter()
        .map(|s| match s.parse::<CommitId>() {
            Ok(id) => since(view, &id, limits.max_since),
            Err(_) => Ok(Vec::new()),
        })
        .collect::<Result<_, _>>()?;
    let files = needs
        .files
        .iter()
        .map(|path| {
            let blob = view.parent.files.get(path);
            wit::FileInfo {
                path: path.clone(),
                blob: blob.map(ToString::to_string),
                content: blob.and_then(|id| view.lookup.read_blob(id, limits.max_file_bytes)),
            }
        })
        .collect();
    Ok(wit::Context {
        commits,
        since,
        files,
    })
}
