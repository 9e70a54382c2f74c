//! Helpers shared by swarm-git's integration tests.

use std::path::Path;
use std::process::Command;

/// Runs stock `git -C dir args…`, asserts it succeeded, and returns its standard output.
pub fn git(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
