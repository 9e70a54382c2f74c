//! Per-sender rates: how much of something (invitations, announcements) each sender may still
//! send now. Peers are identified by what they authenticated as (an account), so a flood costs
//! its sender's quota, never another's.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// A token bucket per sender: `burst` tokens, one more every `every`. Bounded: past `cap`
/// senders, those whose bucket is full (as good as unknown) are forgotten, then, if that is
/// not enough, everyone (bounded memory over strictness: a swarm of fresh senders gets at most
/// one burst each).
#[derive(Debug)]
pub struct PerSender<K> {
    burst: u32,
    every: Duration,
    cap: usize,
    buckets: HashMap<K, (u32, Instant)>,
}

impl<K: Hash + Eq + Copy> PerSender<K> {
    /// `burst` at once, then one per `every`, for at most `cap` senders.
    pub fn new(burst: u32, every: Duration, cap: usize) -> Self {
        Self {
            burst,
            every,
            cap,
            buckets: HashMap::new(),
        }
    }

    /// Takes one token of `from` at `now`: whether what it sent is taken.
    pub fn allow(&mut self, from: K, now: Instant) -> bool {
        let (burst, every) = (self.burst, self.every);
        let refill = |(tokens, since): (u32, Instant)| {
            let gained = now.saturating_duration_since(since).as_nanos() / every.as_nanos().max(1);
            let gained = u32::try_from(gained).unwrap_or(u32::MAX);
            if tokens.saturating_add(gained) >= burst {
                (burst, now)
            } else {
                // Keep the remainder: the next token comes `every` after the last.
                (tokens + gained, since + every * gained)
            }
        };
        if !self.buckets.contains_key(&from) && self.buckets.len() >= self.cap {
            self.buckets.retain(|_, b| refill(*b).0 < burst);
            if self.buckets.len() >= self.cap {
                self.buckets.clear();
            }
        }
        let bucket = self
            .buckets
            .get(&from)
            .copied()
            .map_or((burst, now), refill);
        let (allowed, bucket) = match bucket.0 {
            0 => (false, bucket),
            n => (true, (n - 1, bucket.1)),
        };
        self.buckets.insert(from, bucket);
        allowed
    }

    /// How many senders' buckets are remembered.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no bucket is remembered.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}
