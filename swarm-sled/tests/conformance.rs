//! The storage conformance suite on `SledStorage` (one sled database for all conversations).

use swarm_api::storage::StorageError;
use swarm_api::testing::factory;
use swarm_sled::SledStorage;

fn sled() -> impl swarm_api::testing::StorageFactory<Storage = SledStorage> {
    factory(
        || tempfile::tempdir().expect("a temporary directory"),
        |dir: &tempfile::TempDir| -> Result<SledStorage, StorageError> {
            SledStorage::open(dir.path().join("db"))
        },
    )
}

swarm_api::storage_conformance!(sled());
