//! The fetching side of a sync fed whatever frames a hostile server sends: typed errors only,
//! never more objects or bytes than announced and allowed, at most MAX_PROBE_ROUNDS probes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use swarm_api::id::{CommitId, ConversationId};
use swarm_api::sync::wire::Decoder;
use swarm_api::sync::{BundleLimits, Client, ClientStep, MAX_PROBE_ROUNDS};

fuzz_target!(|data: &[u8]| {
    let limits = BundleLimits {
        max_objects: 64,
        max_bytes: 1 << 16,
    };
    let conv = ConversationId(CommitId::from_bytes([1; 20]));
    let mut client = Client::new(conv, Some(CommitId::from_bytes([2; 20])), limits);
    let mut d = Decoder::new();
    d.push(data);
    let (mut objects, mut bytes) = (0u64, 0u64);
    while let Ok(Some(frame)) = d.next_frame() {
        match client.handle(frame, &|id| id.as_bytes()[0] % 2 == 0) {
            Ok(steps) => {
                for s in steps {
                    if let ClientStep::Objects(o) = s {
                        objects += o.len() as u64;
                        bytes += o.iter().map(|o| o.data.len() as u64).sum::<u64>();
                    }
                }
            }
            Err(_) => {
                assert!(client.is_done());
                break;
            }
        }
        assert!(objects <= u64::from(limits.max_objects) && bytes <= limits.max_bytes);
        assert!(client.round_trips <= MAX_PROBE_ROUNDS + 1);
    }
});
