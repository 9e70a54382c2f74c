//! The storage conformance suite on the reference backend, `MemoryStorage`.

swarm_api::storage_conformance!(swarm_api::testing::memory_factory());
