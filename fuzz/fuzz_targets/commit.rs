//! Commit parsing, native and jamid: never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;
use swarm_api::commit::{Commit, Scheme};
use swarm_api::id::CommitId;
use swarm_api::jami::JamiCommit;

fuzz_target!(|data: &[u8]| {
    let id = CommitId::from_bytes([0; 20]);
    let _ = Commit::parse(id, data);
    let _ = Commit::parse_with(id, data, Scheme::Jami);
    let _ = JamiCommit::parse(data);
});
