//! Byte-string mutations for the decoder harnesses (shared by `swarm-api/tests/decoders.rs`
//! and `transport-dht/tests/decoders.rs` through `#[path]`).

use proptest::prelude::*;

/// One edit of a byte string (positions taken modulo its length).
#[derive(Debug, Clone)]
pub enum Mutation {
    Flip(usize, u8),
    Set(usize, u8),
    Insert(usize, u8),
    Delete(usize),
    Truncate(usize),
}

pub fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), 0u8..8).prop_map(|(i, b)| Mutation::Flip(i, b)),
        2 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        1 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        1 => any::<usize>().prop_map(Mutation::Delete),
        1 => any::<usize>().prop_map(Mutation::Truncate),
    ]
}

pub fn mutate(data: &[u8], edits: &[Mutation]) -> Vec<u8> {
    let mut d = data.to_vec();
    for m in edits {
        let n = d.len().max(1);
        match *m {
            Mutation::Flip(i, b) if !d.is_empty() => d[i % n] ^= 1 << b,
            Mutation::Set(i, v) if !d.is_empty() => d[i % n] = v,
            Mutation::Insert(i, v) => d.insert(i % (d.len() + 1), v),
            Mutation::Delete(i) if !d.is_empty() => {
                d.remove(i % n);
            }
            Mutation::Truncate(i) => d.truncate(i % n),
            _ => {}
        }
    }
    d
}
