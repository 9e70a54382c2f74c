//! Display order: a deterministic linearisation of the commit DAG.
//!
//! Parents always come before children. Among commits whose parents are all placed, the one
//! with the smallest commit id goes first: every peer holding the same DAG computes the same
//! order, and timestamps (which authors control) play no part.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use crate::id::CommitId;

/// Orders the given commits (id and parents); parents outside the set are ignored (a
/// shallow view starts at its oldest commits).
pub fn display_order<'a>(
    commits: impl IntoIterator<Item = (CommitId, &'a [CommitId])>,
) -> Vec<CommitId> {
    let commits: BTreeMap<CommitId, &[CommitId]> = commits.into_iter().collect();
    let mut pending: BTreeMap<CommitId, usize> = BTreeMap::new();
    let mut children: BTreeMap<CommitId, Vec<CommitId>> = BTreeMap::new();
    for (id, parents) in &commits {
        let known: Vec<&CommitId> = parents.iter().filter(|p| commits.contains_key(p)).collect();
        pending.insert(*id, known.len());
        for p in known {
            children.entry(*p).or_default().push(*id);
        }
    }
    let mut ready: BinaryHeap<Reverse<CommitId>> = pending
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(id, _)| Reverse(*id))
        .collect();
    let mut out = Vec::with_capacity(commits.len());
    while let Some(Reverse(id)) = ready.pop() {
        out.push(id);
        for child in children.get(&id).into_iter().flatten() {
            if let Some(n) = pending.get_mut(child) {
                *n -= 1;
                if *n == 0 {
                    ready.push(Reverse(*child));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(n: u8) -> CommitId {
        CommitId::from_bytes([n; 20])
    }

    #[test]
    fn parents_first_ties_by_id_whatever_the_input_order() {
        // 9 is the root; 5 and 3 are concurrent children; 7 merges them.
        let dag = [
            (c(9), vec![]),
            (c(5), vec![c(9)]),
            (c(3), vec![c(9)]),
            (c(7), vec![c(5), c(3)]),
        ];
        let mut a: Vec<(CommitId, &[CommitId])> =
            dag.iter().map(|(i, p)| (*i, p.as_slice())).collect();
        let first = display_order(a.clone());
        assert_eq!(first, vec![c(9), c(3), c(5), c(7)]);
        a.reverse();
        assert_eq!(display_order(a), first);
    }
}
