//! A third party writes, builds and loads a swarm plugin.
//!
//! The plugin is `examples/plugins/dice/` (Rust, wit-bindgen, swarm's WIT package). This
//! example builds it for `wasm32-unknown-unknown`, turns the core module into a component
//! with wit-component, loads it in the plugin host, and validates dice rolls with it in a
//! conversation: a fair roll is stored, a loaded one is refused by the plugin.
//!
//! `cargo run -p swarm-examples --example third_party_plugin` (it leaves the component in
//! `target/third-party-plugin/dice.wasm`, for `swarm-chat plugin add`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use anyhow::{anyhow, Context as _, Result};
use swarm_api::body::{Body, Mode};
use swarm_api::repo::{create_conversation, Repo, RepoError};
use swarm_api::storage::MemoryStorage;
use swarm_api::testing::Person;
use swarm_api::traits::MessageType as _;
use swarm_api::validate::{Engine, Limits};
use swarm_plugins::Host;

/// Step 1: build the plugin from source, as its author would (`cargo build --target
/// wasm32-unknown-unknown`), and make a component of it, also written to
/// `TARGET_DIR/dice.wasm` (what `swarm-chat plugin add` takes: the README's plugin example).
pub fn build_dice(target_dir: &Path) -> Result<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins/dice");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(&dir)
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            "wasm32-unknown-unknown",
            "--target-dir",
        ])
        .arg(target_dir)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .status()
        .context("running cargo")?;
    if !status.success() {
        return Err(anyhow!("building {} failed: {status}", dir.display()));
    }
    let core = std::fs::read(target_dir.join("wasm32-unknown-unknown/release/dice.wasm"))?;
    let component = wit_component::ComponentEncoder::default()
        .module(&core)?
        .validate(true)
        .encode()
        .context("making a component")?;
    // Renamed into place: a concurrent build never shows a half-written file.
    let out = target_dir.join("dice.wasm");
    let tmp = target_dir.join(format!("dice.wasm.{}.tmp", std::process::id()));
    std::fs::write(&tmp, &component).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &out).with_context(|| format!("writing {}", out.display()))?;
    Ok(component)
}

/// Steps 2 and 3: load the component and validate rolls with it. Returns the verdicts on a
/// fair and a loaded roll.
pub fn demo(component: &[u8]) -> Result<(bool, String)> {
    let host = Host::new()?;
    let dice = host.load("dice", component)?;
    println!("loaded {} for {:?}", dice.name(), dice.owned_types());
    let mut engine = Engine::new(Limits::default());
    engine.register(Arc::new(dice));
    let engine = Arc::new(engine);

    let alice = Person::new("alice");
    let storage = MemoryStorage::new();
    let conv = create_conversation(
        &storage,
        &alice.signer(),
        Mode::InvitesOnly,
        None,
        1_800_000_000,
    )?;
    let repo = Repo::open(&storage, conv)?.with_engine(engine);
    let roll = |sides: u32, result: u32| -> Result<Result<(), RepoError>> {
        let body = Body::parse(&format!(
            r#"{{"result":{result},"sides":{sides},"type":"application/x-dice+json"}}"#
        ))?;
        Ok(repo
            .append(&alice.signer(), &body, &[], 1_800_000_000)
            .map(|_| ()))
    };
    let fair = roll(6, 4)?;
    println!(
        "a 4 on a d6: {}",
        if fair.is_ok() { "stored" } else { "refused" }
    );
    let loaded = match roll(6, 7)? {
        Ok(()) => return Err(anyhow!("a 7 on a d6 was accepted")),
        Err(e) => e.to_string(),
    };
    println!("a 7 on a d6: {loaded}");
    let summary = host.load("dice", component)?.summary(&Body::parse(
        r#"{"result":4,"sides":6,"type":"application/x-dice+json"}"#,
    )?);
    println!("what a client that does not know the type shows: {summary:?}");
    Ok((fair.is_ok(), loaded))
}

/// Where the plugin is built (kept between runs, like any target directory).
pub fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/third-party-plugin")
}

#[allow(dead_code)]
fn main() -> Result<()> {
    let component = build_dice(&target_dir())?;
    println!(
        "built the dice plugin: {} bytes, written to {}",
        component.len(),
        target_dir().join("dice.wasm").display()
    );
    demo(&component)?;
    Ok(())
}
