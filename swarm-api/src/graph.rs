//! The commit graph of one conversation: parents and generation numbers, loaded on demand and
//! memoised, so that ancestry questions cost what the divergent part of the DAG costs, not
//! the length of the history (after the first walk).

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};

use gix_object::CommitRefIter;

use crate::id::CommitId;
use crate::object::{Kind, ObjectError, ObjectSource};

/// Parents and generations of the commits seen so far.
#[derive(Debug, Default, Clone)]
pub struct Graph {
    parents: HashMap<CommitId, Vec<CommitId>>,
    generation: HashMap<CommitId, u64>,
}

fn parse_parents(src: &dyn ObjectSource, id: &CommitId) -> Result<Vec<CommitId>, ObjectError> {
    let obj = src.expect(&id.object_id(), Kind::Commit)?;
    let parents = CommitRefIter::from_bytes(&obj.data, gix_hash::Kind::Sha1)
        .parent_ids()
        .filter_map(|p| CommitId::from_object_id(&p))
        .collect();
    Ok(parents)
}

impl Graph {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a commit whose parents are known to the caller (avoids a read).
    pub fn record(&mut self, id: CommitId, parents: Vec<CommitId>) {
        self.parents.entry(id).or_insert(parents);
    }

    /// The parents of `id`.
    pub fn parents(
        &mut self,
        src: &dyn ObjectSource,
        id: &CommitId,
    ) -> Result<Vec<CommitId>, ObjectError> {
        if let Some(p) = self.parents.get(id) {
            return Ok(p.clone());
        }
        let p = parse_parents(src, id)?;
        self.parents.insert(*id, p.clone());
        Ok(p)
    }

    /// The generation of `id` (0 for the root; 1 + max over parents).
    pub fn generation(
        &mut self,
        src: &dyn ObjectSource,
        id: &CommitId,
    ) -> Result<u64, ObjectError> {
        if let Some(g) = self.generation.get(id) {
            return Ok(*g);
        }
        let mut stack = vec![*id];
        while let Some(top) = stack.last().copied() {
            if self.generation.contains_key(&top) {
                stack.pop();
                continue;
            }
            let parents = self.parents(src, &top)?;
            let missing: Vec<CommitId> = parents
                .iter()
                .filter(|p| !self.generation.contains_key(p))
                .copied()
                .collect();
            if missing.is_empty() {
                let g = parents
                    .iter()
                    .filter_map(|p| self.generation.get(p))
                    .map(|g| g + 1)
                    .max()
                    .unwrap_or(0);
                self.generation.insert(top, g);
                stack.pop();
            } else {
                stack.extend(missing);
            }
        }
        Ok(self.generation.get(id).copied().unwrap_or(0))
    }

    /// Commits reachable from `wanted` but not from any of `known`, newest first. Walks only
    /// the part of the DAG that differs (plus its frontier).
    pub fn missing(
        &mut self,
        src: &dyn ObjectSource,
        wanted: &[CommitId],
        known: &[CommitId],
    ) -> Result<Vec<CommitId>, ObjectError> {
        const WANT: u8 = 1;
        const HAVE: u8 = 2;
        let mut flags: HashMap<CommitId, u8> = HashMap::new();
        let mut heap: BinaryHeap<(u64, CommitId)> = BinaryHeap::new();
        let mut pending_wanted = 0usize;
        for (ids, f) in [(wanted, WANT), (known, HAVE)] {
            for id in ids {
                let e = flags.entry(*id).or_default();
                if *e == 0 {
                    heap.push((self.generation(src, id)?, *id));
                }
                *e |= f;
            }
        }
        for f in flags.values() {
            if *f == WANT {
                pending_wanted += 1;
            }
        }
        let mut out = Vec::new();
        let mut done = BTreeSet::new();
        while pending_wanted > 0 {
            let Some((_, id)) = heap.pop() else { break };
            if !done.insert(id) {
                continue;
            }
            let f = flags.get(&id).copied().unwrap_or(0);
            if f == WANT {
                pending_wanted -= 1;
                out.push(id);
            }
            for p in self.parents(src, &id)? {
                let pf = flags.entry(p).or_default();
                let before = *pf;
                *pf |= f;
                if before == 0 {
                    heap.push((self.generation(src, &p)?, p));
                }
                if before != WANT && *pf == WANT {
                    pending_wanted += 1;
                } else if before == WANT && *pf != WANT {
                    pending_wanted -= 1;
                }
            }
        }
        Ok(out)
    }

    /// Whether `ancestor` is `of` or one of its ancestors.
    pub fn is_ancestor(
        &mut self,
        src: &dyn ObjectSource,
        ancestor: &CommitId,
        of: &CommitId,
    ) -> Result<bool, ObjectError> {
        if ancestor == of {
            return Ok(true);
        }
        let target = self.generation(src, ancestor)?;
        let mut seen = BTreeSet::from([*of]);
        let mut stack = vec![*of];
        while let Some(id) = stack.pop() {
            if id == *ancestor {
                return Ok(true);
            }
            if self.generation(src, &id)? <= target {
                continue;
            }
            for p in self.parents(src, &id)? {
                if seen.insert(p) {
                    stack.push(p);
                }
            }
        }
        Ok(false)
    }

    /// The merge base of `a` and `b`: the common ancestor with the highest generation, ties
    /// broken by the smallest id (the same on every peer).
    pub fn merge_base(
        &mut self,
        src: &dyn ObjectSource,
        a: &CommitId,
        b: &CommitId,
    ) -> Result<Option<CommitId>, ObjectError> {
        let mut flags: HashMap<CommitId, u8> = HashMap::new();
        let mut heap: BinaryHeap<(u64, Reverse<CommitId>)> = BinaryHeap::new();
        for (id, f) in [(a, 1u8), (b, 2u8)] {
            *flags.entry(*id).or_default() |= f;
            heap.push((self.generation(src, id)?, Reverse(*id)));
        }
        let mut best: Option<(u64, CommitId)> = None;
        let mut popped = BTreeSet::new();
        while let Some((gen, Reverse(id))) = heap.pop() {
            if !popped.insert(id) {
                continue;
            }
            if best.is_some_and(|(bg, _)| gen < bg) {
                break;
            }
            let f = flags.get(&id).copied().unwrap_or(0);
            if f == 3 {
                if best.is_none() {
                    best = Some((gen, id));
                }
                continue;
            }
            for p in self.parents(src, &id)? {
                *flags.entry(p).or_default() |= f;
                heap.push((self.generation(src, &p)?, Reverse(p)));
            }
        }
        Ok(best.map(|(_, id)| id))
    }

    /// The non-merge commits a head carries on top of what its merges join: `head` itself if
    /// it is not a merge, else (recursively) the frontier of its parents.
    pub fn frontier(
        &mut self,
        src: &dyn ObjectSource,
        head: &CommitId,
    ) -> Result<Vec<CommitId>, ObjectError> {
        let mut out = BTreeSet::new();
        let mut stack = vec![*head];
        let mut seen = BTreeSet::new();
        while let Some(id) = stack.pop() {
            if !seen.insert(id) {
                continue;
            }
            let parents = self.parents(src, &id)?;
            if parents.len() > 1 {
                stack.extend(parents);
            } else {
                out.insert(id);
            }
        }
        Ok(out.into_iter().collect())
    }

    /// Whether `over` carries everything `head` carries: every frontier commit of `head` is an
    /// ancestor of `over`. Then `head` can be replaced by `over` without losing a message.
    pub fn covers(
        &mut self,
        src: &dyn ObjectSource,
        over: &CommitId,
        head: &CommitId,
    ) -> Result<bool, ObjectError> {
        for f in self.frontier(src, head)? {
            if !self.is_ancestor(src, &f, over)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The first-parent chain from `head`, at most `limit` commits (head first).
    pub fn first_parents(
        &mut self,
        src: &dyn ObjectSource,
        head: &CommitId,
        limit: usize,
    ) -> Result<Vec<CommitId>, ObjectError> {
        let mut out = Vec::new();
        let mut cur = Some(*head);
        while let Some(id) = cur {
            if out.len() >= limit {
                break;
            }
            out.push(id);
            cur = self.parents(src, &id)?.first().copied();
        }
        Ok(out)
    }
}
