//! Membership state: who is admin, member, invited, banned; which devices are authorized;
//! which votes are open; the mode. A pure function of a commit's tree (and the mode fixed by
//! the initial commit), so it is the same on every peer.
//!
//! States are shared (`Arc`) between a commit and its parent when the commit changes no
//! file, which is the common case (messages): validating a long history does not copy or
//! re-walk anything per message.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use gix_hash::ObjectId;

use crate::body::Mode;
use crate::id::{AccountUri, DeviceId, Target};
use crate::identity::Crl;
use crate::layout::{Kind, Path, VoteDir};
use crate::object::Files;

/// The role of an account at a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberRole {
    /// `admins/<uri>.crt`
    Admin,
    /// `members/<uri>.crt`
    Member,
    /// `invited/<uri>`
    Invited,
    /// `banned/{admins,members,invited}/<uri>`
    Banned,
}

/// Parsed certificates and CRLs, shared by every state that holds the same blob.
#[derive(Debug, Clone)]
pub enum Parsed {
    /// An account certificate.
    Account(super::keys::AccountKey),
    /// A device certificate.
    Device(super::keys::DeviceKey),
    /// A CRL.
    Crl(Arc<Crl>),
}

/// The membership state at one commit.
#[derive(Debug, Clone)]
pub struct State {
    /// The conversation mode.
    pub mode: Mode,
    /// Every file of the tree (path → blob id).
    pub files: Files,
    /// Accounts in `admins/`.
    pub admins: BTreeSet<AccountUri>,
    /// Accounts in `members/`.
    pub members: BTreeSet<AccountUri>,
    /// Accounts in `invited/`.
    pub invited: BTreeSet<AccountUri>,
    /// Everything under `banned/`: (kind, target) → blob.
    pub banned: BTreeMap<(Kind, String), ObjectId>,
    /// Devices in `devices/` → their blob.
    pub devices: BTreeMap<DeviceId, ObjectId>,
    /// CRL blobs per account.
    pub crls: BTreeMap<AccountUri, Vec<ObjectId>>,
    /// Open votes: (action, kind, target) → voters.
    pub votes: BTreeMap<(VoteDir, Kind, String), BTreeSet<AccountUri>>,
}

impl State {
    /// Derives the state from a tree's files. Paths outside the layout are ignored here
    /// (validation refuses commits that add them).
    pub fn from_files(mode: Mode, files: Files) -> Self {
        let mut s = State {
            mode,
            files: Files::new(),
            admins: BTreeSet::new(),
            members: BTreeSet::new(),
            invited: BTreeSet::new(),
            banned: BTreeMap::new(),
            devices: BTreeMap::new(),
            crls: BTreeMap::new(),
            votes: BTreeMap::new(),
        };
        for (path, blob) in &files {
            match Path::parse(path) {
                Some(Path::Admin(u)) => {
                    s.admins.insert(u);
                }
                Some(Path::Member(u)) => {
                    s.members.insert(u);
                }
                Some(Path::Invited(u)) => {
                    s.invited.insert(u);
                }
                Some(Path::Device(d)) => {
                    s.devices.insert(d, *blob);
                }
                Some(Path::Crl(u, _)) => s.crls.entry(u).or_default().push(*blob),
                Some(Path::Banned(k, t)) => {
                    s.banned.insert((k, t), *blob);
                }
                Some(Path::Vote {
                    action,
                    kind,
                    target,
                    voter,
                }) => {
                    s.votes
                        .entry((action, kind, target))
                        .or_default()
                        .insert(voter);
                }
                Some(Path::Profile) | None => {}
            }
        }
        s.files = files;
        s
    }

    /// The role of `uri`. A ban wins over everything (a tree merged from both sides of a
    /// partition may hold both `banned/…/<uri>` and `members/<uri>.crt`); then admin wins
    /// over member, member over invited.
    pub fn role(&self, uri: &AccountUri) -> Option<MemberRole> {
        if self.is_banned_account(uri) {
            Some(MemberRole::Banned)
        } else if self.admins.contains(uri) {
            Some(MemberRole::Admin)
        } else if self.members.contains(uri) {
            Some(MemberRole::Member)
        } else if self.invited.contains(uri) {
            Some(MemberRole::Invited)
        } else {
            None
        }
    }

    /// Whether `uri` is under `banned/`.
    pub fn is_banned_account(&self, uri: &AccountUri) -> bool {
        let t = uri.to_string();
        [Kind::Admins, Kind::Members, Kind::Invited]
            .iter()
            .any(|k| self.banned.contains_key(&(*k, t.clone())))
    }

    /// Whether the device is under `banned/devices/`.
    pub fn is_banned_device(&self, dev: &DeviceId) -> bool {
        self.banned.contains_key(&(Kind::Devices, dev.to_string()))
    }

    /// Where a ban/vote target sits now, as a layout kind (`None`: absent or banned).
    pub fn target_kind(&self, t: &Target) -> Option<Kind> {
        match t {
            Target::Account(a) => match self.role(a)? {
                MemberRole::Admin => Some(Kind::Admins),
                MemberRole::Member => Some(Kind::Members),
                MemberRole::Invited => Some(Kind::Invited),
                MemberRole::Banned => None,
            },
            Target::Device(d) => self.devices.contains_key(d).then_some(Kind::Devices),
        }
    }

    /// Under which `banned/<kind>/` a target is (`None`: not banned).
    pub fn banned_kind(&self, t: &Target) -> Option<Kind> {
        let s = t.to_string();
        [Kind::Admins, Kind::Members, Kind::Invited, Kind::Devices]
            .into_iter()
            .find(|k| self.banned.contains_key(&(*k, s.clone())))
    }

    /// The kind (role directory) a vote of `action` about `target` is filed under, or `None`
    /// if the target is not in a state that action applies to.
    pub fn vote_kind(&self, action: VoteDir, target: &Target) -> Option<Kind> {
        match action {
            VoteDir::Ban => self.target_kind(target),
            VoteDir::Unban => self.banned_kind(target),
            VoteDir::Promote => match target {
                Target::Account(a) if self.members.contains(a) && !self.admins.contains(a) => {
                    Some(Kind::Members)
                }
                _ => None,
            },
        }
    }

    /// Whether the vote of `action` about `target` passed: strictly more than half of the
    /// admins at this state have a vote file.
    pub fn vote_passed(&self, action: VoteDir, target: &Target) -> bool {
        self.vote_kind(action, target).is_some_and(|k| {
            2 * self.admin_votes(action, k, &target.to_string()) > self.admin_count()
        })
    }

    /// Number of admins (banned ones excluded).
    pub fn admin_count(&self) -> usize {
        self.admins.iter().filter(|u| self.is_admin(u)).count()
    }

    /// Whether `uri` is an admin now (in `admins/` and not banned).
    pub fn is_admin(&self, uri: &AccountUri) -> bool {
        self.admins.contains(uri) && !self.is_banned_account(uri)
    }

    /// Voters for (action, kind, target) who are admins now.
    pub fn admin_votes(&self, action: VoteDir, kind: Kind, target: &str) -> usize {
        self.votes
            .get(&(action, kind, target.to_owned()))
            .map(|v| v.iter().filter(|u| self.is_admin(u)).count())
            .unwrap_or(0)
    }
}
