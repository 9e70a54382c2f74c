//! Builds the example plugins of `guests/` from source for `wasm32-unknown-unknown` and turns
//! each core module into a component of the `swarm:plugin/message-type` world (wit-component),
//! so that `swarm_plugins::builtin` embeds exactly the code in this repository.

use std::path::{Path, PathBuf};
use std::process::Command;

const GUESTS: &[(&str, &str)] = &[
    ("reactions", "reactions"),
    ("edits", "edits"),
    ("call-history", "call_history"),
    ("polls", "polls"),
    // Not built in: the host's file access is tested with it (tests/files.rs).
    ("file-probe", "file_probe"),
];

fn main() {
    let manifest =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let guests = manifest.join("guests");
    println!(
        "cargo:rerun-if-changed={}",
        guests.join("Cargo.toml").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        guests.join("Cargo.lock").display()
    );
    println!("cargo:rerun-if-changed={}", manifest.join("wit").display());
    for dir in [
        "guest",
        "reactions",
        "edits",
        "call-history",
        "polls",
        "file-probe",
    ] {
        println!("cargo:rerun-if-changed={}", guests.join(dir).display());
    }
    // <target>/<profile>/build/<pkg>-<hash>/out → <target>/guests, shared by every profile.
    let target_dir = out
        .ancestors()
        .nth(4)
        .map(|t| t.join("guests"))
        .unwrap_or_else(|| out.join("guests"));
    build_guests(&guests, &target_dir);
    for (name, artifact) in GUESTS {
        let core = target_dir
            .join("wasm32-unknown-unknown/release")
            .join(format!("{artifact}.wasm"));
        let module =
            std::fs::read(&core).unwrap_or_else(|e| panic!("reading {}: {e}", core.display()));
        let component = wit_component::ComponentEncoder::default()
            .module(&module)
            .and_then(|e| e.validate(true).encode())
            .unwrap_or_else(|e| panic!("making a component of {}: {e:#}", core.display()));
        let dest = out.join(format!("{name}.wasm"));
        std::fs::write(&dest, component)
            .unwrap_or_else(|e| panic!("writing {}: {e}", dest.display()));
    }
}

fn build_guests(guests: &Path, target_dir: &Path) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(guests).args([
        "build",
        "--release",
        "--locked",
        "--target",
        "wasm32-unknown-unknown",
        "--target-dir",
    ]);
    cmd.arg(target_dir);
    // The outer build's settings are for the host, not for the guests.
    for (k, _) in std::env::vars_os() {
        let Some(k) = k.to_str() else { continue };
        let keep = k == "CARGO_HOME"
            || k.starts_with("CARGO_NET_")
            || k.starts_with("CARGO_HTTP_")
            || k.starts_with("CARGO_REGISTRIES_");
        if (k.starts_with("CARGO_") && !keep) || k.starts_with("RUSTC") || k.contains("RUSTFLAGS") {
            cmd.env_remove(k);
        }
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("running cargo for the guest plugins: {e}"));
    if !status.success() {
        panic!(
            "building the guest plugins failed ({status}); is the target installed? \
             `rustup target add wasm32-unknown-unknown` (scripts/deps.sh does it)"
        );
    }
}
