//! `swarm-chat plugin list|add|pin|unpin` and the engine every command validates with: the
//! built-in plugins (reactions, edits, call history, polls), the plugins added to this home
//! (`<home>/plugins/<sha256>.wasm`) and the plugins pinned in each conversation.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, Context as _, Result};
use clap::Subcommand;
use serde_json::{json, Value};
use swarm_api::body::{types, Body};
use swarm_api::layout;
use swarm_api::repo::{FileChange, Repo};
use swarm_api::validate::{Engine, Limits};
use swarm_plugins::{builtin, Host, HostConfig, Plugin};

#[derive(Subcommand)]
pub enum PluginCommand {
    /// List the plugins this home runs (built-in and added), and with `--conv` those pinned
    /// in a conversation.
    List {
        /// Also list the plugins pinned in this conversation.
        #[arg(long)]
        conv: Option<String>,
    },
    /// Add a plugin (a component of the swarm:plugin/message-type world) to this home: its
    /// types are then validated by it in every conversation that pins no other plugin for
    /// them.
    Add {
        /// The `.wasm` component.
        file: PathBuf,
    },
    /// Pin a plugin in a conversation (an admin's `application/plugin-install` commit): every
    /// member then validates its types with it, whatever app it runs.
    Pin {
        /// The conversation id.
        conv: String,
        /// The `.wasm` component.
        file: PathBuf,
    },
    /// Unpin a plugin (`application/plugin-remove`), by its SHA-256.
    Unpin {
        /// The conversation id.
        conv: String,
        /// The plugin's SHA-256 (as `plugin list --conv` shows it).
        sha256: String,
    },
}

fn plugins_dir(home: &Path) -> PathBuf {
    home.join("plugins")
}

/// The plugin host of a home: compiled components are cached on disk in the home.
pub fn host(home: &Path) -> Result<Arc<Host>> {
    let config = HostConfig {
        cache_dir: Some(home.join("plugin-cache")),
        ..HostConfig::default()
    };
    Ok(Arc::new(Host::with_config(config)?))
}

/// The plugins added to this home, loaded.
fn added(host: &Host, home: &Path) -> Result<Vec<Plugin>> {
    let dir = plugins_dir(home);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
    };
    let mut out = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("wasm") {
            continue;
        }
        let wasm =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("plugin");
        out.push(host.load(name, &wasm)?);
    }
    Ok(out)
}

/// The engine every command of this home validates with.
pub fn engine(home: &Path) -> Result<Arc<Engine>> {
    let host = host(home)?;
    let extra = added(&host, home)?;
    Ok(Arc::new(swarm_plugins::engine(
        host,
        Limits::default(),
        extra,
    )?))
}

fn describe(p: &Plugin, origin: &str) -> Value {
    json!({"name": p.name(), "sha256": p.sha256(), "types": p.owned_types(), "origin": origin})
}

/// Lists the plugins; `pinned` are those of a conversation's head, if asked.
pub fn list(
    home: &Path,
    pinned: Option<(&Repo<'_>, swarm_api::id::CommitId)>,
) -> Result<Vec<Value>> {
    let host = host(home)?;
    let mut out: Vec<Value> = builtin::load_all(&host)?
        .iter()
        .map(|p| describe(p, "built-in"))
        .collect();
    out.extend(added(&host, home)?.iter().map(|p| describe(p, "added")));
    if let Some((repo, head)) = pinned {
        for (path, blob) in repo
            .files(&head)?
            .range::<String, _>("plugins/".to_owned().."plugins0".to_owned())
        {
            let wasm = repo.blob(blob)?;
            let p = host.load(path, &wasm)?;
            out.push(describe(&p, "pinned"));
        }
    }
    Ok(out)
}

/// Checks and copies a plugin into the home; returns its description.
pub fn add(home: &Path, file: &Path) -> Result<Value> {
    let wasm = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let host = host(home)?;
    let name = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("plugin");
    let p = host.load(name, &wasm)?;
    let dir = plugins_dir(home);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let dest = dir.join(format!("{name}.wasm"));
    std::fs::write(&dest, &wasm).with_context(|| format!("cannot write {}", dest.display()))?;
    Ok(describe(&p, "added"))
}

/// The commit pinning `file` in a conversation.
pub fn pin(file: &Path) -> Result<(Body, Vec<FileChange>)> {
    let wasm = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let sha = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(&wasm))
    };
    let body = Body::parse(&json!({"type": types::PLUGIN_INSTALL}).to_string())?;
    Ok((body, vec![FileChange::Write(layout::plugin(&sha), wasm)]))
}

/// The commit unpinning the plugin `sha256`.
pub fn unpin(sha256: &str) -> Result<(Body, Vec<FileChange>)> {
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(anyhow!("{sha256:?} is not a SHA-256 (64 hex digits)"));
    }
    let body = Body::parse(&json!({"type": types::PLUGIN_REMOVE}).to_string())?;
    Ok((
        body,
        vec![FileChange::Delete(layout::plugin(
            &sha256.to_ascii_lowercase(),
        ))],
    ))
}

/// The body of `send --type T BODY`: the JSON object `json` with `type` set to `kind`.
pub fn custom_body(kind: &str, json: &str) -> Result<Body> {
    let mut v: Value =
        serde_json::from_str(json).with_context(|| format!("the body is not JSON: {json}"))?;
    let Some(o) = v.as_object_mut() else {
        return Err(anyhow!("the body must be a JSON object, not {json}"));
    };
    o.insert("type".into(), json!(kind));
    Ok(Body::parse(&v.to_string())?)
}
