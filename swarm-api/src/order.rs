//! Display order: a deterministic linearisation of the commit DAG.
//!
//! A commit's **generation** is 0 for the initial commit and 1 + the largest generation of its
//! parents. Commits are displayed by (generation, commit id): parents always come before
//! children, concurrent commits of equal depth are ordered by id, and timestamps (which
//! authors control) play no part. Every peer holding the same DAG computes the same order, and
//! the order is incremental: a new commit is inserted at its (generation, id) position
//! without re-sorting anything ([`Timeline`]); a commit on top of the head lands at the end.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::id::CommitId;

/// Orders the given commits (id and parents); parents outside the set are ignored (a
/// shallow view starts at its oldest commits, with generation 0).
pub fn display_order<'a>(
    commits: impl IntoIterator<Item = (CommitId, &'a [CommitId])>,
) -> Vec<CommitId> {
    let commits: BTreeMap<CommitId, &[CommitId]> = commits.into_iter().collect();
    let mut gens: HashMap<CommitId, u64> = HashMap::with_capacity(commits.len());
    for start in commits.keys() {
        let mut stack = vec![*start];
        while let Some(top) = stack.last().copied() {
            if gens.contains_key(&top) {
                stack.pop();
                continue;
            }
            let parents: Vec<CommitId> = commits[&top]
                .iter()
                .filter(|p| commits.contains_key(p))
                .copied()
                .collect();
            let missing: Vec<CommitId> = parents
                .iter()
                .filter(|p| !gens.contains_key(p))
                .copied()
                .collect();
            if missing.is_empty() {
                let g = parents.iter().map(|p| gens[p] + 1).max().unwrap_or(0);
                gens.insert(top, g);
                stack.pop();
            } else {
                stack.extend(missing);
            }
        }
    }
    let mut order: Vec<(u64, CommitId)> = gens.into_iter().map(|(id, g)| (g, id)).collect();
    order.sort();
    order.into_iter().map(|(_, id)| id).collect()
}

/// The display order of a growing DAG, maintained incrementally.
#[derive(Debug, Default, Clone)]
pub struct Timeline {
    order: BTreeSet<(u64, CommitId)>,
    generation: HashMap<CommitId, u64>,
}

/// Why a commit cannot be added to a [`Timeline`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("commit {commit}: parent {parent} is not in the timeline yet")]
pub struct MissingParent {
    /// The commit.
    pub commit: CommitId,
    /// Its absent parent.
    pub parent: CommitId,
}

impl Timeline {
    /// An empty timeline.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a commit whose parents are all present (a no-op if it is already there).
    /// Returns its generation.
    pub fn insert(&mut self, id: CommitId, parents: &[CommitId]) -> Result<u64, MissingParent> {
        if let Some(g) = self.generation.get(&id) {
            return Ok(*g);
        }
        let mut g = 0;
        for p in parents {
            let pg = self.generation.get(p).ok_or(MissingParent {
                commit: id,
                parent: *p,
            })?;
            g = g.max(pg + 1);
        }
        self.generation.insert(id, g);
        self.order.insert((g, id));
        Ok(g)
    }

    /// The generation of a commit in the timeline.
    pub fn generation(&self, id: &CommitId) -> Option<u64> {
        self.generation.get(id).copied()
    }

    /// Whether the commit is in the timeline.
    pub fn contains(&self, id: &CommitId) -> bool {
        self.generation.contains_key(id)
    }

    /// Number of commits.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// All commits in display order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = CommitId> + '_ {
        self.order.iter().map(|(_, id)| *id)
    }
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

    #[test]
    fn timeline_is_incremental_and_agrees_with_display_order() {
        let dag = [
            (c(9), vec![]),
            (c(5), vec![c(9)]),
            (c(3), vec![c(9)]),
            (c(1), vec![c(3)]),
            (c(7), vec![c(5), c(1)]),
            (c(2), vec![c(7)]),
        ];
        let mut t = Timeline::new();
        for (id, parents) in &dag {
            t.insert(*id, parents).unwrap();
        }
        let full = display_order(dag.iter().map(|(i, p)| (*i, p.as_slice())));
        assert_eq!(t.iter().collect::<Vec<_>>(), full);
        // A commit on the head goes last.
        t.insert(c(0), &[c(2)]).unwrap();
        assert_eq!(t.iter().last(), Some(c(0)));
        assert!(t.insert(c(4), &[c(8)]).is_err());
    }
}
