//! The storage conformance suite on `GitStorage` (one Git repository per conversation).

use swarm_api::storage::StorageError;
use swarm_api::testing::factory;
use swarm_git::GitStorage;

fn git() -> impl swarm_api::testing::StorageFactory<Storage = GitStorage> {
    factory(
        || tempfile::tempdir().expect("a temporary directory"),
        |dir: &tempfile::TempDir| -> Result<GitStorage, StorageError> {
            GitStorage::open(dir.path())
        },
    )
}

swarm_api::storage_conformance!(git());

/// The same suite with every quarantined object spilled to disk (a memory budget of 0).
mod spilled {
    use super::*;

    fn git_spilled() -> impl swarm_api::testing::StorageFactory<Storage = GitStorage> {
        factory(
            || tempfile::tempdir().expect("a temporary directory"),
            |dir: &tempfile::TempDir| -> Result<GitStorage, StorageError> {
                GitStorage::open(dir.path()).map(|s| s.with_quarantine_memory(0))
            },
        )
    }

    swarm_api::storage_conformance!(git_spilled());
}
