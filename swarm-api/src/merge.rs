//! The deterministic tree merge (DESIGN §5): what a merge commit's tree must be.
//!
//! Three-way, file by file, against the merge base: a side that did not change a file takes
//! the other side's version (including deletion); when both changed it differently, the side
//! whose commit id is higher wins. Certificates and votes are set-like (additions on either
//! side survive, a deletion on one side wins over "unchanged" on the other), `profile.vcf`
//! follows the higher commit id on conflict. The result does not depend on which side is
//! "ours": every peer computes the same tree, and the validator checks merge commits against
//! it, so nothing can be smuggled in through a merge.

use std::collections::BTreeSet;

use crate::id::CommitId;
use crate::object::Files;

/// Merges `a` (at commit `a_id`) and `b` (at `b_id`) against their merge base `base`.
pub fn merge_files(base: &Files, a: &Files, a_id: &CommitId, b: &Files, b_id: &CommitId) -> Files {
    let mut out = Files::new();
    let paths: BTreeSet<&String> = base.keys().chain(a.keys()).chain(b.keys()).collect();
    for path in paths {
        let (o, x, y) = (base.get(path), a.get(path), b.get(path));
        let chosen = if x == y {
            x
        } else if x == o {
            y
        } else if y == o || a_id > b_id {
            // Only `a` changed it, or both did and `a` has the higher commit id.
            x
        } else {
            y
        };
        if let Some(id) = chosen {
            out.insert(path.clone(), *id);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::Object;

    #[test]
    fn symmetric_set_like_and_higher_id_wins() {
        let v = |s: &str| Object::blob(s.as_bytes().to_vec()).id();
        let base: Files = [
            ("p".into(), v("0")),
            ("del".into(), v("d")),
            ("keep".into(), v("k")),
        ]
        .into();
        let a: Files = [
            ("p".into(), v("A")),
            ("keep".into(), v("k")),
            ("add-a".into(), v("1")),
        ]
        .into();
        let b: Files = [
            ("p".into(), v("B")),
            ("del".into(), v("d")),
            ("keep".into(), v("k")),
            ("add-b".into(), v("2")),
        ]
        .into();
        let (ia, ib) = (CommitId::from_bytes([1; 20]), CommitId::from_bytes([2; 20]));
        let m = merge_files(&base, &a, &ia, &b, &ib);
        assert_eq!(
            m,
            merge_files(&base, &b, &ib, &a, &ia),
            "order of sides does not matter"
        );
        assert_eq!(
            m.get("p"),
            Some(&v("B")),
            "higher commit id wins a conflict"
        );
        assert!(
            !m.contains_key("del"),
            "a deletion on one side wins over unchanged"
        );
        assert!(
            m.contains_key("add-a") && m.contains_key("add-b"),
            "additions are set-like"
        );
        assert_eq!(m.get("keep"), Some(&v("k")));
    }
}
