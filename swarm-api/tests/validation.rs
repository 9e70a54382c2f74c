//! One test (at least) per rule of `VALIDATION.md`: a validly signed commit, made with real
//! device keys, that breaks only that rule, is refused with that rule's error and leaves
//! storage unchanged. Tests named `jami_gap_*` show that we refuse what jami-daemon 13.7
//! accepts (DESIGN §4).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::*;
use rand_core::OsRng;
use swarm_api::body::{Body, Mode, VoteAction};
use swarm_api::commit::merge_message;
use swarm_api::id::Target;
use swarm_api::identity::{forge_device_cert, Device};
use swarm_api::layout::{self, Kind, VoteDir};
use swarm_api::merge::merge_files;
use swarm_api::object::{build_tree, Object};
use swarm_api::ops;
use swarm_api::repo::{FileChange, RepoError};
use swarm_api::traits::{CommitView, MessageType};
use swarm_api::validate::{Engine, Limits, MemberRole, Violation};

fn member_json(uri: &str, action: &str) -> String {
    format!(r#"{{"action":"{action}","type":"member","uri":"{uri}"}}"#)
}

/// Alice (admin) and Bob (member) in an INVITES_ONLY conversation.
fn alice_bob() -> (P, P, W) {
    let (a, b) = (P::new("Alice"), P::new("Bob"));
    let w = W::new(&a, Mode::InvitesOnly);
    w.invite_and_join(&a, &b);
    (a, b, w)
}

#[test]
fn a_history_with_every_kind_of_commit_verifies() {
    let (a, b, w) = alice_bob();
    let c = P::new("Carol");
    let m1 = w.text(&a, "hello");
    w.ok(
        &b,
        (
            Body::parse(&format!(
                r#"{{"body":"hi","reply-to":"{m1}","type":"text/plain"}}"#
            ))
            .unwrap(),
            vec![],
        ),
    );
    w.ok(
        &b,
        (
            Body::parse(&format!(
                r#"{{"body":"👍","react-to":"{m1}","type":"text/plain"}}"#
            ))
            .unwrap(),
            vec![],
        ),
    );
    w.ok(
        &a,
        (
            Body::parse(&format!(
                r#"{{"body":"hello!","edit":"{m1}","type":"application/edited-message"}}"#
            ))
            .unwrap(),
            vec![],
        ),
    );
    let sha = "ab".repeat(64);
    w.ok(&b, (Body::parse(&format!(r#"{{"displayName":"a.png","sha3sum":"{sha}","tid":"7","totalSize":"12","type":"application/data-transfer+json"}}"#)).unwrap(), vec![]));
    w.ok(
        &a,
        (
            Body::parse(r#"{"duration":"1200","to":"x","type":"application/call-history+json"}"#)
                .unwrap(),
            vec![],
        ),
    );
    w.ok(
        &a,
        (
            Body::parse(
                r#"{"confId":"c","device":"d","type":"application/call-history+json","uri":"u"}"#,
            )
            .unwrap(),
            vec![],
        ),
    );
    w.ok(&a, ops::profile(Some("Team"), Some("Our room")));
    w.invite_and_join(&b, &c);
    // Promote Bob; then ban and unban Carol with both admins' votes.
    w.decide(&[&a], Target::Account(b.uri()), VoteAction::Promote);
    assert_eq!(w.state().role(&b.uri()), Some(MemberRole::Admin));
    w.decide(&[&a, &b], Target::Account(c.uri()), VoteAction::Ban);
    assert_eq!(w.state().role(&c.uri()), Some(MemberRole::Banned));
    assert!(
        w.state().is_banned_device(&c.device.id()),
        "a ban moves the devices too"
    );
    w.decide(&[&a, &b], Target::Account(c.uri()), VoteAction::Unban);
    assert_eq!(w.state().role(&c.uri()), Some(MemberRole::Member));
    w.text(&c, "back");
    // Bob's second device adds its own certificate with its first message.
    let b2 = b.other_device();
    w.text(&b2, "from my phone");
    w.ok(&c, ops::leave(&w.repo(), &w.head(), c.uri()).unwrap());
    assert_eq!(w.state().role(&c.uri()), None);
    let n = w.verify();
    assert_eq!(n, w.repo().history().unwrap().len());
}

// ---------------------------------------------------------------- signatures and devices

#[test]
fn signature_refuses_a_tampered_message() {
    let (a, _b, w) = alice_bob();
    let d = w.draft(&a, &Body::text("hello").to_message(), &[], false);
    w.refuse(rewrite(&d, |t| t.replace("hello", "hellO")), "signature");
}

#[test]
fn signature_refuses_a_commit_signed_by_another_device() {
    let (a, b, w) = alice_bob();
    // Bob signs, then claims to be Alice's device.
    let d = w.draft(&b, &Body::text("hello").to_message(), &[], false);
    let forged = rewrite(&d, |t| {
        t.replace(&b.device.id().to_string(), &a.device.id().to_string())
    });
    w.refuse(forged, "signature");
}

#[test]
fn signature_refuses_an_unsigned_commit() {
    let (a, _b, w) = alice_bob();
    let d = w.draft(&a, &Body::text("hello").to_message(), &[], false);
    w.refuse(rewrite(&d, unsign), "signature");
}

#[test]
fn device_known_refuses_a_device_without_certificate() {
    let (_a, b, w) = alice_bob();
    let b2 = b.other_device();
    // Without adding its certificate, the new device is unknown.
    w.refuse(
        w.draft(&b2, &Body::text("x").to_message(), &[], false),
        "device-known",
    );
}

#[test]
fn device_of_member_refuses_a_stranger() {
    let (_a, _b, w) = alice_bob();
    let m = P::new("Mallory");
    w.refuse(
        w.draft(&m, &Body::text("spam").to_message(), &[], true),
        "device-of-member",
    );
}

#[test]
fn device_chain_refuses_a_device_certificate_not_signed_by_its_account() {
    let (a, _b, w) = alice_bob();
    let forger = ed25519_dalek::SigningKey::generate(&mut OsRng);
    let key = ed25519_dalek::SigningKey::generate(&mut OsRng);
    let cert = forge_device_cert(a.account.cert(), &forger, &key.verifying_key(), now()).unwrap();
    let fake = P {
        account: a.account.clone(),
        device: Device::from_parts(key, cert).unwrap(),
        crl: a.crl.clone(),
    };
    w.refuse(
        w.draft(&fake, &Body::text("I am Alice").to_message(), &[], true),
        "device-chain",
    );
}

#[test]
fn device_not_revoked_refuses_a_revoked_device_even_backdated() {
    let (a, _b, w) = alice_bob();
    let a2 = a.other_device();
    w.text(&a2, "phone");
    // Alice publishes a CRL revoking her phone (added like her own credential).
    let crl = a.account.crl(&[a2.device.cert()], 2, now()).unwrap();
    w.ok(
        &a,
        (
            Body::text("revoking my phone"),
            vec![FileChange::Write(
                layout::crl(&a.uri(), &crl.id()),
                crl.pem().as_bytes().to_vec(),
            )],
        ),
    );
    w.refuse(
        w.draft(&a2, &Body::text("still here").to_message(), &[], false),
        "device-not-revoked",
    );
    // A forged, earlier commit date changes nothing (jamid trusts it for expiry).
    let d = w.draft(&a2, &Body::text("from the past").to_message(), &[], false);
    let backdated = rewrite(&d, |t| t.replace(&format!("{T} +0000"), "1000000000 +0000"));
    w.refuse(backdated, "device-not-revoked");
}

#[test]
fn an_expired_device_cannot_commit_whatever_date_it_writes() {
    let (a, _b, w) = alice_bob();
    let key = ed25519_dalek::SigningKey::generate(&mut OsRng);
    let cert = a
        .account
        .issue_device_cert(&key.verifying_key(), now(), now() + time::Duration::days(1))
        .unwrap();
    let old = P {
        account: a.account.clone(),
        device: Device::from_parts(key, cert).unwrap(),
        crl: a.crl.clone(),
    };
    let later = T + 3 * 86_400;
    let err = w
        .repo()
        .append(&old.s(), &Body::text("late"), &[], later)
        .unwrap_err();
    assert!(
        matches!(
            err,
            RepoError::Chain(swarm_api::identity::ChainError::Expired { .. })
        ),
        "{err}"
    );
}

#[test]
fn device_not_banned_refuses_a_banned_device_that_re_adds_its_certificate() {
    let (a, b, w) = alice_bob();
    w.decide(&[&a], Target::Device(b.device.id()), VoteAction::Ban);
    assert!(w.state().is_banned_device(&b.device.id()));
    w.refuse(
        w.draft(&b, &Body::text("let me in").to_message(), &[], true),
        "device-not-banned",
    );
}

#[test]
fn account_not_banned_refuses_a_new_device_of_a_banned_account() {
    let (a, b, w) = alice_bob();
    w.decide(&[&a], Target::Account(b.uri()), VoteAction::Ban);
    let b2 = b.other_device();
    w.refuse(
        w.draft(&b2, &Body::text("new phone").to_message(), &[], true),
        "account-not-banned",
    );
}

#[test]
fn certificate_wellformed_refuses_garbage_in_devices() {
    let (_a, b, w) = alice_bob();
    let b2 = b.other_device();
    let d = w.draft(
        &b2,
        &Body::text("x").to_message(),
        &[FileChange::Write(
            layout::device_cert(&b2.device.id()),
            b"garbage".to_vec(),
        )],
        false,
    );
    w.refuse(d, "certificate-wellformed");
}

#[test]
fn own_crl_refuses_a_crl_signed_by_someone_else() {
    let (a, _b, w) = alice_bob();
    let m = swarm_api::identity::Account::generate("Mallory", now(), &mut OsRng).unwrap();
    let crl = m.crl(&[], 9, now()).unwrap();
    let d = w.draft(
        &a,
        &Body::text("x").to_message(),
        &[FileChange::Write(
            layout::crl(&a.uri(), &crl.id()),
            crl.pem().as_bytes().to_vec(),
        )],
        false,
    );
    w.refuse(d, "own-crl");
}

// ---------------------------------------------------------------- structure

#[test]
fn single_root_refuses_a_second_initial_commit() {
    let (a, _b, w) = alice_bob();
    let files = w.files();
    let d = w.raw(&a, &[], r#"{"mode":2,"type":"initial"}"#, files, vec![]);
    w.refuse(d, "single-root");
}

#[test]
fn at_most_two_parents() {
    let (a, _b, w) = alice_bob();
    let h = w.head();
    let m = w.text(&a, "x");
    let d = w.draft_on(&a, &[m, h, w.conv.initial_commit()], "Merge", &[], false);
    w.refuse(d, "at-most-two-parents");
}

#[test]
fn layout_path_refuses_files_outside_the_layout() {
    let (a, _b, w) = alice_bob();
    let mut files = w.files();
    let blob = Object::blob(b"payload".to_vec());
    files.insert("evil/run.sh".into(), blob.id());
    w.refuse(
        w.raw(
            &a,
            &[w.head()],
            &Body::text("x").to_message(),
            files,
            vec![blob],
        ),
        "layout-path",
    );
}

#[test]
fn no_unexpected_files_in_a_text_commit() {
    let (a, _b, w) = alice_bob();
    let x = P::new("X");
    let d = w.draft(
        &a,
        &Body::text("sneaky").to_message(),
        &[FileChange::Write(layout::invited(&x.uri()), vec![])],
        false,
    );
    w.refuse(d, "no-unexpected-files");
}

#[test]
fn jami_gap_edit_commit_that_also_adds_a_file() {
    let (a, _b, w) = alice_bob();
    let m = w.text(&a, "typo");
    let x = P::new("X");
    let msg = format!(r#"{{"body":"fixed","edit":"{m}","type":"application/edited-message"}}"#);
    w.refuse(
        w.draft(
            &a,
            &msg,
            &[FileChange::Write(layout::invited(&x.uri()), vec![])],
            false,
        ),
        "no-unexpected-files",
    );
}

#[test]
fn merge_tree_accepts_the_deterministic_merge_and_refuses_a_smuggled_file() {
    let (a, b, w) = alice_bob();
    let base = w.head();
    // Two branches from the same base.
    let da = w.draft_on(&a, &[base], &Body::text("left").to_message(), &[], false);
    w.accept(da.clone());
    let db = w.draft_on(&b, &[base], &Body::text("right").to_message(), &[], false);
    let files = w.files();
    let merged = merge_files(&files, &files, &da.id, &files, &db.id);
    // A smuggled invitation in the merge tree.
    let x = P::new("X");
    let mut bad = merged.clone();
    let empty = Object::blob(Vec::new());
    bad.insert(layout::invited(&x.uri()), empty.id());
    let mut bad_merge = w.raw(
        &a,
        &[da.id, db.id],
        &merge_message(&db.id),
        bad,
        vec![empty],
    );
    bad_merge.objects.extend(db.objects.clone());
    w.refuse(bad_merge, "merge-tree");
    let mut good = w.raw(&a, &[da.id, db.id], &merge_message(&db.id), merged, vec![]);
    good.objects.extend(db.objects);
    w.accept(good);
    w.verify();
}

// ---------------------------------------------------------------- initial commit

fn verify_map(
    objects: &[Object],
    id: swarm_api::CommitId,
) -> Result<(), swarm_api::validate::Rejection> {
    let map: BTreeMap<_, _> = objects.iter().map(|o| (o.id(), o.clone())).collect();
    Engine::default()
        .verify(swarm_api::ConversationId(id), &map, id)
        .map(|_| ())
}

fn initial(a: &P, msg: &str, extra: &[(&str, &[u8])], skip_device: bool) -> swarm_api::repo::Draft {
    let mut files = swarm_api::object::Files::new();
    let mut blobs = vec![];
    let mut put = |p: String, data: &[u8]| {
        let b = Object::blob(data.to_vec());
        files.insert(p, b.id());
        blobs.push(b);
    };
    put(
        layout::admin_cert(&a.uri()),
        a.account.cert().pem().as_bytes(),
    );
    if !skip_device {
        put(
            layout::device_cert(&a.device.id()),
            a.device.cert().pem().as_bytes(),
        );
    }
    put(layout::crl(&a.uri(), &a.crl.id()), a.crl.pem().as_bytes());
    for (p, d) in extra {
        put((*p).to_owned(), d);
    }
    let (tree, mut objects) = build_tree(&files);
    objects.extend(blobs);
    let c = swarm_api::commit::sign_commit(&a.device, a.account.name(), tree, &[], msg, T).unwrap();
    let id = swarm_api::CommitId::from_object_id(&c.id()).unwrap();
    objects.push(c);
    swarm_api::repo::Draft { id, objects }
}

fn initial_rule(d: &swarm_api::repo::Draft) -> &'static str {
    verify_map(&d.objects, d.id).unwrap_err().violation.rule()
}

#[test]
fn initial_commit_rules() {
    let a = P::new("Alice");
    let bob = P::new("Bob");
    let good = initial(&a, r#"{"mode":2,"type":"initial"}"#, &[], false);
    verify_map(&good.objects, good.id).unwrap();
    let inv = layout::invited(&bob.uri());
    let one = initial(
        &a,
        &format!(r#"{{"invited":"{}","mode":0,"type":"initial"}}"#, bob.uri()),
        &[(&inv, b"")],
        false,
    );
    verify_map(&one.objects, one.id).unwrap();

    assert_eq!(
        initial_rule(&initial(
            &a,
            r#"{"body":"x","type":"text/plain"}"#,
            &[],
            false
        )),
        "initial-body"
    );
    assert_eq!(
        initial_rule(&initial(&a, r#"{"mode":0,"type":"initial"}"#, &[], false)),
        "initial-body"
    );
    assert_eq!(
        initial_rule(&initial(
            &a,
            &format!(r#"{{"invited":"{}","mode":2,"type":"initial"}}"#, bob.uri()),
            &[(&inv, b"")],
            false
        )),
        "initial-body"
    );
    assert_eq!(
        initial_rule(&initial(
            &a,
            r#"{"mode":2,"type":"initial"}"#,
            &[("profile.vcf", b"BEGIN:VCARD\nVERSION:2.1\nEND:VCARD")],
            false
        )),
        "initial-files"
    );
    assert_eq!(
        initial_rule(&initial(
            &a,
            r#"{"mode":2,"type":"initial"}"#,
            &[(&inv, b"")],
            false
        )),
        "initial-files"
    );
    assert_eq!(
        initial_rule(&initial(
            &a,
            &format!(r#"{{"invited":"{}","mode":0,"type":"initial"}}"#, bob.uri()),
            &[(&inv, b"not empty")],
            false
        )),
        "initial-files"
    );
    assert_eq!(
        initial_rule(&initial(&a, r#"{"mode":2,"type":"initial"}"#, &[], true)),
        "device-known"
    );
    let bm = layout::member_cert(&bob.uri());
    assert_eq!(
        initial_rule(&initial(
            &a,
            r#"{"mode":2,"type":"initial"}"#,
            &[(&bm, bob.account.cert().pem().as_bytes())],
            false
        )),
        "initial-files"
    );
}

#[test]
fn jami_gap_unsigned_or_badly_signed_initial_commit() {
    let a = P::new("Alice");
    let good = initial(&a, r#"{"mode":2,"type":"initial"}"#, &[], false);
    let unsigned = rewrite(&good, unsign);
    assert_eq!(initial_rule(&unsigned), "signature");
    let tampered = rewrite(&good, |t| t.replace(r#""mode":2"#, r#""mode":3"#));
    assert_eq!(initial_rule(&tampered), "signature");
}

// ---------------------------------------------------------------- votes

#[test]
fn vote_by_admin_refuses_a_member_vote() {
    let (a, b, w) = alice_bob();
    let (body, changes) = ops::vote(
        &w.state(),
        &b.uri(),
        Target::Account(a.uri()),
        VoteAction::Ban,
    )
    .unwrap();
    w.refuse(
        w.draft(&b, &body.to_message(), &changes, false),
        "vote-by-admin",
    );
}

#[test]
fn vote_files_must_be_the_voters_own() {
    let (a, b, w) = alice_bob();
    let c = P::new("Carol");
    w.invite_and_join(&a, &c);
    // Alice files the vote under Bob's name.
    let (body, _) = ops::vote(
        &w.state(),
        &a.uri(),
        Target::Account(c.uri()),
        VoteAction::Ban,
    )
    .unwrap();
    let path = layout::vote(VoteDir::Ban, Kind::Members, &c.uri().to_string(), &b.uri());
    w.refuse(
        w.draft(
            &a,
            &body.to_message(),
            &[FileChange::Write(path, vec![])],
            false,
        ),
        "vote-files",
    );
}

#[test]
fn vote_target_must_be_present() {
    let (a, _b, w) = alice_bob();
    let x = P::new("X");
    let msg = format!(r#"{{"action":"ban","type":"vote","uri":"{}"}}"#, x.uri());
    let path = layout::vote(VoteDir::Ban, Kind::Members, &x.uri().to_string(), &a.uri());
    w.refuse(
        w.draft(&a, &msg, &[FileChange::Write(path, vec![])], false),
        "vote-target",
    );
}

// ---------------------------------------------------------------- member add / join / remove

#[test]
fn jami_gap_non_admin_add_in_admin_invites_only() {
    let (a, b) = (P::new("Alice"), P::new("Bob"));
    let w = W::new(&a, Mode::AdminInvitesOnly);
    w.invite_and_join(&a, &b);
    let c = P::new("Carol");
    let (body, changes) = ops::invite(c.uri());
    w.refuse(w.draft(&b, &body.to_message(), &changes, false), "add-mode");
}

#[test]
fn add_mode_one_to_one_has_no_further_invites() {
    let (a, b) = (P::new("Alice"), P::new("Bob"));
    let w = W::one_to_one(&a, &b);
    let st = w.state();
    w.ok(&b, ops::join(&st, b.account.cert()));
    let c = P::new("Carol");
    let (body, changes) = ops::invite(c.uri());
    w.refuse(w.draft(&a, &body.to_message(), &changes, false), "add-mode");
    w.verify();
}

#[test]
fn add_files_exactly_the_invitation() {
    let (a, _b, w) = alice_bob();
    let c = P::new("Carol");
    let (body, mut changes) = ops::invite(c.uri());
    changes.push(FileChange::Write(
        layout::PROFILE.into(),
        b"BEGIN:VCARD\nVERSION:2.1\nEND:VCARD".to_vec(),
    ));
    w.refuse(
        w.draft(&a, &body.to_message(), &changes, false),
        "add-files",
    );
}

#[test]
fn add_target_refuses_an_existing_member() {
    let (a, b, w) = alice_bob();
    let (body, changes) = ops::invite(b.uri());
    w.refuse(
        w.draft(&a, &body.to_message(), &changes, false),
        "add-target",
    );
}

#[test]
fn join_signer_must_be_the_joining_account() {
    let (a, b, w) = alice_bob();
    let c = P::new("Carol");
    w.ok(&a, ops::invite(c.uri()));
    let (body, changes) = ops::join(&w.state(), c.account.cert());
    w.refuse(
        w.draft(&b, &body.to_message(), &changes, true),
        "join-signer",
    );
}

#[test]
fn jami_gap_self_join_in_invites_only() {
    let (_a, _b, w) = alice_bob();
    let c = P::new("Carol");
    let (body, changes) = ops::join(&w.state(), c.account.cert());
    w.refuse(
        w.draft(&c, &body.to_message(), &changes, true),
        "join-invited",
    );
}

#[test]
fn public_join_needs_no_invitation() {
    let a = P::new("Alice");
    let w = W::new(&a, Mode::Public);
    let c = P::new("Carol");
    let st = w.state();
    w.ok(&c, ops::join(&st, c.account.cert()));
    w.text(&c, "hi all");
    w.verify();
}

#[test]
fn join_files_must_add_the_joiners_certificate() {
    let (a, b, w) = alice_bob();
    let c = P::new("Carol");
    w.ok(&a, ops::invite(c.uri()));
    // Carol puts Bob's certificate under her name.
    let changes = vec![
        FileChange::Write(
            layout::member_cert(&c.uri()),
            b.account.cert().pem().as_bytes().to_vec(),
        ),
        FileChange::Delete(layout::invited(&c.uri())),
    ];
    let msg = member_json(&c.uri().to_string(), "join");
    w.refuse(w.draft(&c, &msg, &changes, true), "certificate-wellformed");
    // Carol forgets to remove her invitation.
    let changes = vec![FileChange::Write(
        layout::member_cert(&c.uri()),
        c.account.cert().pem().as_bytes().to_vec(),
    )];
    w.refuse(w.draft(&c, &msg, &changes, true), "join-files");
}

#[test]
fn jami_gap_remove_of_someone_else() {
    let (a, b, w) = alice_bob();
    let c = P::new("Carol");
    w.invite_and_join(&a, &c);
    let (_, changes) = ops::leave(&w.repo(), &w.head(), c.uri()).unwrap();
    let msg = member_json(&c.uri().to_string(), "remove");
    w.refuse(w.draft(&b, &msg, &changes, false), "remove-self");
}

#[test]
fn remove_files_only_the_leavers_own() {
    let (a, b, w) = alice_bob();
    let (body, mut changes) = ops::leave(&w.repo(), &w.head(), b.uri()).unwrap();
    changes.push(FileChange::Delete(layout::admin_cert(&a.uri())));
    w.refuse(
        w.draft(&b, &body.to_message(), &changes, false),
        "remove-files",
    );
}

// ---------------------------------------------------------------- ban / unban / promote

/// Alice, Bob (both admins) and Carol (member).
fn two_admins() -> (P, P, P, W) {
    let (a, b, w) = alice_bob();
    w.decide(&[&a], Target::Account(b.uri()), VoteAction::Promote);
    let c = P::new("Carol");
    w.invite_and_join(&a, &c);
    (a, b, c, w)
}

#[test]
fn ban_by_admin_refuses_a_member_applying_a_ban() {
    let (a, b, w) = alice_bob();
    let c = P::new("Carol");
    w.invite_and_join(&a, &c);
    let st = w.state();
    w.ok(
        &a,
        ops::vote(&st, &a.uri(), Target::Account(c.uri()), VoteAction::Ban).unwrap(),
    );
    let (body, changes) = ops::apply_vote(
        &w.repo(),
        &w.state(),
        Target::Account(c.uri()),
        VoteAction::Ban,
    )
    .unwrap();
    w.refuse(
        w.draft(&b, &body.to_message(), &changes, false),
        "ban-by-admin",
    );
}

#[test]
fn jami_gap_ban_with_exactly_half_of_the_admins() {
    let (a, _b, c, w) = two_admins();
    let st = w.state();
    w.ok(
        &a,
        ops::vote(&st, &a.uri(), Target::Account(c.uri()), VoteAction::Ban).unwrap(),
    );
    let st = w.state();
    assert_eq!(st.admin_count(), 2);
    let (body, changes) =
        ops::apply_vote(&w.repo(), &st, Target::Account(c.uri()), VoteAction::Ban).unwrap();
    w.refuse(
        w.draft(&a, &body.to_message(), &changes, false),
        "ban-majority",
    );
}

#[test]
fn jami_gap_ban_counted_against_the_parent_admins_not_a_later_set() {
    // Alice, Bob, Dave admins; Alice and Bob vote to ban Carol (2 of 3: passes). But the ban
    // commit is placed on a parent where a 4th admin exists (2 of 4: does not pass), even
    // though at the head (after Eve left) it would.
    let (a, b, c, w) = two_admins();
    let (d, e) = (P::new("Dave"), P::new("Eve"));
    w.invite_and_join(&a, &d);
    w.invite_and_join(&a, &e);
    w.decide(&[&a, &b], Target::Account(d.uri()), VoteAction::Promote);
    w.decide(&[&a, &b, &d], Target::Account(e.uri()), VoteAction::Promote);
    assert_eq!(w.state().admin_count(), 4);
    for v in [&a, &b] {
        let st = w.state();
        w.ok(
            v,
            ops::vote(&st, &v.uri(), Target::Account(c.uri()), VoteAction::Ban).unwrap(),
        );
    }
    let parent = w.head();
    let st4 = w.state();
    let (body, changes) =
        ops::apply_vote(&w.repo(), &st4, Target::Account(c.uri()), VoteAction::Ban).unwrap();
    let d_on_parent = w.draft_on(&a, &[parent], &body.to_message(), &changes, false);
    // Eve leaves: now 2 of 3 admins have voted.
    w.ok(&e, ops::leave(&w.repo(), &w.head(), e.uri()).unwrap());
    assert!(w
        .state()
        .vote_passed(VoteDir::Ban, &Target::Account(c.uri())));
    // Receiving the ban made on the 4-admin parent: refused as it does not descend from
    // the head... so validate it on its own against storage.
    let objects: BTreeMap<_, _> = d_on_parent
        .objects
        .iter()
        .map(|o| (o.id(), o.clone()))
        .collect();
    struct Both<'a>(&'a BTreeMap<gix_hash::ObjectId, Object>, &'a W);
    impl swarm_api::object::ObjectSource for Both<'_> {
        fn object(
            &self,
            id: &gix_hash::ObjectId,
        ) -> Result<Option<Object>, swarm_api::object::ObjectError> {
            if let Some(o) = self.0.get(id) {
                return Ok(Some(o.clone()));
            }
            Ok(swarm_api::storage::Storage::object(
                &self.1.st,
                &self.1.conv,
                id,
            )?)
        }
    }
    let src = Both(&objects, &w);
    let known = |id: &swarm_api::CommitId| *id != d_on_parent.id;
    let err = Engine::default()
        .validate_branch(w.conv, &src, &known, &[d_on_parent.id])
        .unwrap_err();
    assert_eq!(err.violation.rule(), "ban-majority", "{err}");
    assert!(matches!(
        err.violation,
        Violation::VoteNotPassed {
            votes: 2,
            admins: 4
        }
    ));
    // The same ban on the head passes.
    let st3 = w.state();
    w.ok(
        &a,
        ops::apply_vote(&w.repo(), &st3, Target::Account(c.uri()), VoteAction::Ban).unwrap(),
    );
    w.verify();
}

#[test]
fn ban_files_must_move_the_devices_too() {
    let (a, b, w) = alice_bob();
    let st = w.state();
    w.ok(
        &a,
        ops::vote(&st, &a.uri(), Target::Account(b.uri()), VoteAction::Ban).unwrap(),
    );
    let (body, changes) = ops::apply_vote(
        &w.repo(),
        &w.state(),
        Target::Account(b.uri()),
        VoteAction::Ban,
    )
    .unwrap();
    let dev = layout::device_cert(&b.device.id());
    let banned_dev = layout::banned(Kind::Devices, &b.device.id().to_string());
    let partial: Vec<FileChange> = changes
        .into_iter()
        .filter(|c| {
            !matches!(c, FileChange::Delete(p) if *p == dev)
                && !matches!(c, FileChange::Write(p, _) if *p == banned_dev)
        })
        .collect();
    w.refuse(
        w.draft(&a, &body.to_message(), &partial, false),
        "ban-files",
    );
}

#[test]
fn ban_target_must_be_present() {
    let (a, _b, w) = alice_bob();
    let x = P::new("X");
    w.refuse(
        w.draft(&a, &member_json(&x.uri().to_string(), "ban"), &[], false),
        "ban-target",
    );
}

// ---------------------------------------------------------------- profile

#[test]
fn profile_by_admin() {
    let (_a, b, w) = alice_bob();
    let (body, changes) = ops::profile(Some("mine now"), None);
    w.refuse(
        w.draft(&b, &body.to_message(), &changes, false),
        "profile-by-admin",
    );
}

#[test]
fn profile_files_only_profile_vcf() {
    let (a, _b, w) = alice_bob();
    let x = P::new("X");
    let (body, mut changes) = ops::profile(Some("t"), None);
    changes.push(FileChange::Write(layout::invited(&x.uri()), vec![]));
    w.refuse(
        w.draft(&a, &body.to_message(), &changes, false),
        "profile-files",
    );
}

#[test]
fn profile_vcard_must_parse() {
    let (a, _b, w) = alice_bob();
    let changes = vec![FileChange::Write(
        layout::PROFILE.into(),
        b"<html>not a vcard</html>".to_vec(),
    )];
    w.refuse(
        w.draft(
            &a,
            r#"{"type":"application/update-profile"}"#,
            &changes,
            false,
        ),
        "profile-vcard",
    );
}

// ---------------------------------------------------------------- message types

#[test]
fn edit_target_only_the_authors_own_earlier_message() {
    let (a, b, w) = alice_bob();
    let mine = w.text(&a, "alice's");
    let edit = |target: &str| {
        format!(r#"{{"body":"x","edit":"{target}","type":"application/edited-message"}}"#)
    };
    // Someone else's message.
    w.refuse(
        w.draft(&b, &edit(&mine.to_string()), &[], false),
        "edit-target",
    );
    // A commit that does not exist.
    w.refuse(
        w.draft(&a, &edit(&"ab".repeat(20)), &[], false),
        "edit-target",
    );
    // A commit on another branch (not an ancestor).
    let side = w.draft_on(
        &a,
        &[w.conv.initial_commit()],
        &Body::text("side").to_message(),
        &[],
        false,
    );
    let mut d = w.draft(&a, &edit(&side.id.to_string()), &[], false);
    d.objects.extend(side.objects);
    w.refuse(d, "edit-target");
    // Its own: fine.
    w.accept(w.draft(&a, &edit(&mine.to_string()), &[], false));
}

#[test]
fn data_transfer_fields_are_checked() {
    let (a, _b, w) = alice_bob();
    let msg = r#"{"displayName":"../../etc/passwd","sha3sum":"zz","tid":"1","totalSize":"x","type":"application/data-transfer+json"}"#;
    w.refuse(w.draft(&a, msg, &[], false), "data-transfer-fields");
    // A missing field is a malformed body.
    w.refuse(
        w.draft(
            &a,
            r#"{"tid":"1","type":"application/data-transfer+json"}"#,
            &[],
            false,
        ),
        "body-wellformed",
    );
}

#[test]
fn call_history_shape_is_checked() {
    let (a, _b, w) = alice_bob();
    w.refuse(
        w.draft(
            &a,
            r#"{"to":"x","type":"application/call-history+json"}"#,
            &[],
            false,
        ),
        "call-history-shape",
    );
    w.refuse(
        w.draft(
            &a,
            r#"{"confId":"c","duration":"5","to":"x","type":"application/call-history+json"}"#,
            &[],
            false,
        ),
        "call-history-shape",
    );
}

#[test]
fn text_shape_reply_or_react_not_both() {
    let (a, _b, w) = alice_bob();
    let m = w.text(&a, "x");
    let msg = format!(r#"{{"body":"x","react-to":"{m}","reply-to":"{m}","type":"text/plain"}}"#);
    w.refuse(w.draft(&a, &msg, &[], false), "text-shape");
}

#[test]
fn body_wellformed_refuses_non_json() {
    let (a, _b, w) = alice_bob();
    w.refuse(
        w.draft(&a, "hello, not json", &[], false),
        "body-wellformed",
    );
}

#[test]
fn unknown_type_is_refused_with_a_hint() {
    let (a, _b, w) = alice_bob();
    let d = w.draft(&a, r#"{"type":"application/poll+json"}"#, &[], false);
    let err = w
        .repo()
        .receive(d.objects.clone(), d.id)
        .unwrap_err()
        .to_string();
    assert!(err.contains("newer version"), "{err}");
    w.refuse(d, "unknown-type");
}

struct Polls;
impl MessageType for Polls {
    fn types(&self) -> Vec<String> {
        vec!["application/poll+json".into()]
    }
    fn validate(&self, view: &CommitView<'_>) -> Result<(), Violation> {
        match view.body {
            Body::Other { object, .. } if object.get("question").is_some_and(|q| q.is_string()) => {
                Ok(())
            }
            _ => Err(Violation::Plugin {
                plugin: "polls".into(),
                reason: "a poll needs a question".into(),
            }),
        }
    }
}

#[test]
fn registered_message_types_validate_their_commits() {
    let (a, _b, w) = alice_bob();
    let mut engine = Engine::default();
    engine.register(Arc::new(Polls));
    let engine = Arc::new(engine);
    let repo = w.repo().with_engine(engine.clone());
    let good = w.draft(
        &a,
        r#"{"question":"lunch?","type":"application/poll+json"}"#,
        &[],
        false,
    );
    repo.receive(good.objects, good.id).unwrap();
    let bad = w.draft(&a, r#"{"type":"application/poll+json"}"#, &[], false);
    let err = repo.receive(bad.objects, bad.id).unwrap_err();
    assert!(
        matches!(err, RepoError::Rejected(ref r) if r.violation.rule() == "plugin"),
        "{err}"
    );
    // A plugin type still may not change files.
    let x = P::new("X");
    let sneaky = w.draft(
        &a,
        r#"{"question":"q","type":"application/poll+json"}"#,
        &[FileChange::Write(layout::invited(&x.uri()), vec![])],
        false,
    );
    let err = repo.receive(sneaky.objects, sneaky.id).unwrap_err();
    assert!(
        matches!(err, RepoError::Rejected(ref r) if r.violation.rule() == "no-unexpected-files"),
        "{err}"
    );
}

/// An app's moderation policy: no text containing "spam", and only admins may post links.
struct Moderation;
impl swarm_api::traits::Validator for Moderation {
    fn validate(&self, view: &CommitView<'_>) -> Result<(), Violation> {
        let Body::Text(t) = view.body else {
            return Ok(());
        };
        let refuse = |reason: &str| {
            Err(Violation::Policy {
                policy: "moderation".into(),
                reason: reason.into(),
            })
        };
        if t.body.to_lowercase().contains("spam") {
            return refuse("no spam");
        }
        if t.body.contains("http") && view.role != Some(MemberRole::Admin) {
            return refuse("only admins post links");
        }
        Ok(())
    }
}

#[test]
fn policy_an_apps_validator_refuses_what_it_forbids_and_leaves_storage_unchanged() {
    let (a, b, w) = alice_bob();
    let mut engine = Engine::default();
    engine.add_validator(Arc::new(Moderation));
    let engine = Arc::new(engine);
    let repo = w.repo().with_engine(engine.clone());
    // Allowed: plain text by anyone, a link by the admin.
    let fine = w.draft(&b, r#"{"body":"hello","type":"text/plain"}"#, &[], false);
    repo.receive(fine.objects, fine.id).unwrap();
    let link = w.draft(
        &a,
        r#"{"body":"see http://x","type":"text/plain"}"#,
        &[],
        false,
    );
    repo.receive(link.objects, link.id).unwrap();
    // Refused with the policy's reason; nothing stored.
    for (who, text, reason) in [
        (&b, "buy SPAM now", "no spam"),
        (&b, "see http://y", "only admins post links"),
    ] {
        let before = w.head();
        let d = w.draft(
            who,
            &format!(r#"{{"body":"{text}","type":"text/plain"}}"#),
            &[],
            false,
        );
        let err = repo.receive(d.objects.clone(), d.id).unwrap_err();
        match &err {
            RepoError::Rejected(r) => {
                assert_eq!(r.violation.rule(), "policy", "{err}");
                assert!(err.to_string().contains(reason), "{err}");
                assert!(err.to_string().contains("moderation"), "{err}");
            }
            other => panic!("expected the policy to refuse, got {other}"),
        }
        assert_eq!(w.head(), before, "head moved after a refusal");
        assert!(
            swarm_api::Storage::object(&w.st, &w.conv, &d.id.object_id())
                .unwrap()
                .is_none()
        );
        // A local append is refused the same way, before anything is stored.
        let err = repo
            .append(&who.s(), &Body::text(text), &[], T)
            .unwrap_err();
        assert!(
            matches!(err, RepoError::Rejected(ref r) if r.violation.rule() == "policy"),
            "{err}"
        );
        assert_eq!(w.head(), before);
    }
    // The built-in rules still run first: a forged signature is refused by its own rule
    // even when the policy would accept the text.
    let d = w.draft(&b, r#"{"body":"fine","type":"text/plain"}"#, &[], false);
    let forged = rewrite(&d, |t| t.replace("fine", "fin3"));
    let err = repo.receive(forged.objects, forged.id).unwrap_err();
    assert!(
        matches!(err, RepoError::Rejected(ref r) if r.violation.rule() == "signature"),
        "{err}"
    );
    // Without the validator (another app), the same spam is accepted: a validator is the
    // app's policy, not a protocol rule.
    let d = w.draft(
        &b,
        r#"{"body":"buy SPAM now","type":"text/plain"}"#,
        &[],
        false,
    );
    w.accept(d);
}

// ---------------------------------------------------------------- limits

fn small_limits() -> Limits {
    Limits {
        max_commit_bytes: 2048 + 1024,
        max_changed_paths: 3,
        max_blob_bytes: 4096,
        max_commits: 5,
        ..Limits::default()
    }
}

fn limited(w: &W) -> swarm_api::repo::Repo<'_> {
    w.repo().with_engine(Arc::new(Engine::new(small_limits())))
}

fn refused_by_limit(w: &W, d: swarm_api::repo::Draft) {
    let before = w.head();
    let err = limited(w).receive(d.objects, d.id).unwrap_err();
    assert!(
        matches!(&err, RepoError::Rejected(r) if r.violation.rule() == "limits"),
        "{err}"
    );
    assert_eq!(w.head(), before);
}

#[test]
fn limits_refuse_oversized_commits_blobs_changes_and_branches() {
    let (a, _b, w) = alice_bob();
    refused_by_limit(
        &w,
        w.draft(&a, &Body::text("x".repeat(4000)).to_message(), &[], false),
    );
    let (body, changes) = ops::profile(Some(&"y".repeat(5000)), None);
    refused_by_limit(&w, w.draft(&a, &body.to_message(), &changes, false));
    let people: Vec<P> = (0..4).map(|i| P::new(&format!("P{i}"))).collect();
    let changes: Vec<FileChange> = people
        .iter()
        .map(|p| FileChange::Write(layout::invited(&p.uri()), vec![]))
        .collect();
    refused_by_limit(
        &w,
        w.draft(
            &a,
            &member_json(&people[0].uri().to_string(), "add"),
            &changes,
            false,
        ),
    );
    // A branch of 6 new commits.
    let mut objects = vec![];
    let mut tip = w.head();
    let files = w.files();
    for i in 0..6 {
        let d = w.raw(
            &a,
            &[tip],
            &Body::text(format!("m{i}")).to_message(),
            files.clone(),
            vec![],
        );
        tip = d.id;
        objects.extend(d.objects);
    }
    refused_by_limit(&w, swarm_api::repo::Draft { id: tip, objects });
}

/// A tree object of `entries` (name, is a tree, id), as a peer would forge it.
fn tree_object(entries: &[(String, bool, gix_hash::ObjectId)]) -> Object {
    let mut tree = gix_object::Tree {
        entries: entries
            .iter()
            .map(|(name, is_tree, oid)| gix_object::tree::Entry {
                mode: if *is_tree {
                    gix_object::tree::EntryKind::Tree
                } else {
                    gix_object::tree::EntryKind::Blob
                }
                .into(),
                filename: name.as_str().into(),
                oid: *oid,
            })
            .collect(),
    };
    tree.entries.sort();
    let mut data = vec![];
    gix_object::WriteTo::write_to(&tree, &mut data).unwrap();
    Object {
        kind: swarm_api::object::Kind::Tree,
        data,
    }
}

/// A tree bomb made of subtrees only: `levels` trees of `width` entries, each entry of a
/// level pointing at the one tree of the level below, down to `leaf`. `levels + 1` objects
/// (the top tree last) for `width^levels` paths.
fn subtree_bomb(width: usize, levels: usize, leaf: Object) -> Vec<Object> {
    let mut objects = vec![leaf];
    for _ in 0..levels {
        let below = objects.last().unwrap().id();
        let entries: Vec<_> = (0..width).map(|i| (format!("d{i}"), true, below)).collect();
        objects.push(tree_object(&entries));
    }
    objects
}

/// A text commit by `who` on the head whose tree is the head's with the directory `name`
/// pointing at the last tree of `objects` (which the draft carries).
fn graft(w: &W, who: &P, name: &str, objects: Vec<Object>) -> swarm_api::repo::Draft {
    graft_on(
        w,
        who,
        w.head(),
        name,
        objects,
        &Body::text("bomb").to_message(),
    )
}

/// [`graft`] on `parent` (whose tree is the head's) with the message `msg`.
fn graft_on(
    w: &W,
    who: &P,
    parent: swarm_api::CommitId,
    name: &str,
    mut objects: Vec<Object>,
    msg: &str,
) -> swarm_api::repo::Draft {
    let sub = objects.last().unwrap().id();
    let base_tree = w.repo().commit(&w.head()).unwrap().tree;
    let src = swarm_api::storage::ConversationObjects {
        storage: &w.st,
        conv: w.conv,
    };
    let mut entries: Vec<_> = swarm_api::object::dir_entries(&src, &base_tree)
        .unwrap()
        .into_iter()
        .map(|(n, (is_tree, id))| (n, is_tree, id))
        .collect();
    entries.push((name.to_owned(), true, sub));
    let root = tree_object(&entries);
    let c =
        swarm_api::commit::sign_commit(&who.device, "Alice", root.id(), &[parent], msg, T).unwrap();
    let id = swarm_api::CommitId::from_object_id(&c.id()).unwrap();
    objects.push(root);
    objects.push(c);
    swarm_api::repo::Draft { id, objects }
}

/// The stored objects of `w` under a branch's objects, counting reads: a walk that reads
/// more than `budget` objects panics, so a bomb fails the test quickly instead of hanging it.
struct CountingReads<'a> {
    new: BTreeMap<gix_hash::ObjectId, Object>,
    base: swarm_api::storage::ConversationObjects<'a, swarm_api::storage::MemoryStorage>,
    reads: std::cell::Cell<usize>,
    /// Every id read.
    read: std::cell::RefCell<std::collections::HashSet<gix_hash::ObjectId>>,
    budget: usize,
}

impl<'a> CountingReads<'a> {
    fn new(w: &'a W, d: &swarm_api::repo::Draft, budget: usize) -> Self {
        Self {
            new: d.objects.iter().map(|o| (o.id(), o.clone())).collect(),
            base: swarm_api::storage::ConversationObjects {
                storage: &w.st,
                conv: w.conv,
            },
            reads: Default::default(),
            read: Default::default(),
            budget,
        }
    }
}

impl swarm_api::object::ObjectSource for CountingReads<'_> {
    fn object(
        &self,
        id: &gix_hash::ObjectId,
    ) -> Result<Option<Object>, swarm_api::object::ObjectError> {
        self.reads.set(self.reads.get() + 1);
        self.read.borrow_mut().insert(*id);
        assert!(
            self.reads.get() <= self.budget,
            "the validator read more than {} objects",
            self.budget
        );
        match self.new.get(id) {
            Some(o) => Ok(Some(o.clone())),
            None => self.base.object(id),
        }
    }
}

/// Validates `d` with `engine` over a [`CountingReads`]; returns the violation and the
/// number of objects read.
fn refused_counting(w: &W, engine: &Engine, d: &swarm_api::repo::Draft) -> (Violation, usize) {
    let src = CountingReads::new(w, d, 2_000);
    let stored = |c: &swarm_api::CommitId| !src.new.contains_key(&c.object_id());
    let err = engine
        .validate_branch(w.conv, &src, &stored, &[d.id])
        .expect_err("the bomb was accepted");
    (err.violation, src.reads.get())
}

#[test]
fn limits_refuse_deep_trees() {
    let (a, _b, w) = alice_bob();
    // 20 nested directories: a tree bomb's shape.
    let blob = Object::blob(b"x".to_vec());
    let mut objects = vec![tree_object(&[("x".into(), false, blob.id())]), blob];
    objects.reverse();
    for depth in 0..20 {
        let below = objects.last().unwrap().id();
        objects.push(tree_object(&[(format!("d{depth}"), true, below)]));
    }
    // Grafted under "votes" in the current root tree.
    refused_by_limit(&w, graft(&w, &a, "votes", objects));
}

/// The bomb of issue #15: 24 entries per level, 6 levels, ending in the empty tree (seven
/// objects, 24⁶ ≈ 191 million paths, no file). Before memoised, counted walks, `verify` did
/// not finish. It is refused after a few object reads, naming the empty directory.
#[test]
fn limits_refuse_a_tree_bomb_of_subtrees_ending_in_the_empty_tree() {
    let (a, _b, w) = alice_bob();
    let bomb = subtree_bomb(24, 6, tree_object(&[]));
    assert_eq!(bomb.len(), 7);
    let d = graft(&w, &a, "votes", bomb);
    let (v, reads) = refused_counting(&w, &Engine::default(), &d);
    assert_eq!(
        v,
        Violation::LayoutPath("votes/d0/d0/d0/d0/d0/d0/".into()),
        "{v}"
    );
    assert!(reads <= 32, "{reads} objects read (19 measured)");
    w.refuse(d.clone(), "layout-path");

    // A repository holding it (written without validation, as a hostile peer's copy would
    // be) fails `Repo::verify`, what `swarm-chat verify` runs, at that commit.
    use swarm_api::storage::Storage as _;
    let head = w.head();
    w.st.write(
        &w.conv,
        &d.objects,
        swarm_api::storage::HeadUpdate {
            expected: Some(head),
            new: d.id,
        },
    )
    .unwrap();
    match w.repo().verify() {
        Err(RepoError::Rejected(r)) => {
            assert_eq!((r.commit, r.violation.rule()), (d.id, "layout-path"), "{r}")
        }
        other => panic!(
            "verify accepted the bomb: {:?}",
            other.map(|v| v.commits().len())
        ),
    }
}

/// The same bomb ending in a file: every one of its 24⁶ paths is a changed file. The walk
/// stops at the first changed path over `max_changed_paths`, each tree object read once.
#[test]
fn limits_refuse_a_tree_bomb_of_subtrees_ending_in_a_file() {
    let (a, _b, w) = alice_bob();
    let blob = Object::blob(b"x".to_vec());
    let leaf = tree_object(&[("f".into(), false, blob.id())]);
    let mut bomb = subtree_bomb(24, 6, leaf);
    bomb.insert(0, blob);
    let d = graft(&w, &a, "votes", bomb);
    let (v, reads) = refused_counting(&w, &Engine::default(), &d);
    assert_eq!(v.rule(), "limits", "{v}");
    assert!(v.to_string().contains("1025 changed files"), "{v}");
    assert!(reads <= 32, "{reads} objects read (19 measured)");
    w.refuse(d.clone(), "limits");

    // Every tree visit and every entry counts, revisits of the same tree id included.
    let tree_limits = |max_visits, max_entries| {
        Engine::new(Limits {
            tree: swarm_api::object::TreeLimits {
                max_visits,
                max_entries,
                ..Default::default()
            },
            ..Limits::default()
        })
    };
    let (v, reads) = refused_counting(&w, &tree_limits(100, usize::MAX), &d);
    assert!(v.to_string().contains("more than 100 tree visits"), "{v}");
    assert!(reads <= 32, "{reads} objects read (19 measured)");
    let (v, _) = refused_counting(&w, &tree_limits(usize::MAX, 200), &d);
    assert!(v.to_string().contains("more than 200 tree entries"), "{v}");

    // The same counts bound reading a whole tree (`read_tree`: states, initial commits).
    let src = CountingReads::new(&w, &d, 2_000);
    let top = d.objects[d.objects.len() - 3].id();
    let limits = swarm_api::object::TreeLimits {
        max_visits: 1_000,
        ..Default::default()
    };
    let err = swarm_api::object::read_tree(&src, &top, limits).unwrap_err();
    assert!(
        matches!(
            err,
            swarm_api::object::ObjectError::TooLarge {
                limit: swarm_api::object::TreeLimit::Visits(1_000),
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(src.reads.get(), 7, "each of the 7 trees read once");
}

/// A tree is a change: an empty directory added by a text commit is refused (a text commit
/// changes no file, and the layout holds no empty directory).
#[test]
fn layout_path_refuses_an_empty_directory() {
    let (a, _b, w) = alice_bob();
    w.refuse(graft(&w, &a, "junk", vec![tree_object(&[])]), "layout-path");
    w.refuse(
        graft(&w, &a, "votes", vec![tree_object(&[])]),
        "layout-path",
    );
}

#[test]
fn commit_wellformed_refuses_a_committer_that_is_not_a_device() {
    let (a, _b, w) = alice_bob();
    let d = w.draft(&a, &Body::text("x").to_message(), &[], false);
    let dev = a.device.id().to_string();
    // Only the committer line changes: author and committer now differ.
    let forged = rewrite(&d, |t| {
        let (head, rest) = t.split_once("committer ").unwrap();
        format!(
            "{head}committer {}",
            rest.replacen(&dev, "someone@example.org", 1)
        )
    });
    w.refuse(forged, "commit-wellformed");
}

#[test]
fn objects_present_refuses_a_branch_with_a_missing_tree() {
    let (a, _b, w) = alice_bob();
    let x = P::new("X");
    let (body, changes) = ops::invite(x.uri());
    let mut d = w.draft(&a, &body.to_message(), &changes, false);
    d.objects
        .retain(|o| o.kind != swarm_api::object::Kind::Tree);
    w.refuse(d, "objects-present");
}

#[test]
fn certificate_wellformed_a_crl_is_stored_under_its_own_id() {
    let (a, _b, w) = alice_bob();
    let crl = a.account.crl(&[], 2, now()).unwrap();
    let d = w.draft(
        &a,
        &Body::text("x").to_message(),
        &[FileChange::Write(
            layout::crl(&a.uri(), "somename"),
            crl.pem().as_bytes().to_vec(),
        )],
        false,
    );
    w.refuse(d, "certificate-wellformed");
}

// ------------------------------------------- large branches: signatures verified in parallel

/// A branch of `n` text commits on the head, alternately by Alice and Bob; commit `bad_sig`
/// has its message changed after signing, commit `bad_rule` has an unknown type.
fn long_branch(
    w: &W,
    a: &P,
    b: &P,
    n: usize,
    bad_sig: Option<usize>,
    bad_rule: Option<usize>,
) -> (Vec<Object>, Vec<swarm_api::id::CommitId>) {
    let files = w.files();
    let mut head = w.head();
    let (mut objects, mut ids) = (Vec::new(), Vec::new());
    for i in 0..n {
        let who = if i % 2 == 0 { a } else { b };
        let msg = if Some(i) == bad_rule {
            r#"{"body":"x","type":"application/x-unknown"}"#.to_owned()
        } else {
            Body::text(format!("message {i}")).to_message()
        };
        let mut d = w.raw(who, &[head], &msg, files.clone(), vec![]);
        if Some(i) == bad_sig {
            d = rewrite(&d, |t| {
                t.replace("\"x\"", "\"y\"")
                    .replace(&format!("message {i}"), "forged")
            });
        }
        head = d.id;
        ids.push(d.id);
        objects.extend(d.objects);
    }
    (objects, ids)
}

fn refused_at(
    w: &W,
    objects: Vec<Object>,
    tip: swarm_api::id::CommitId,
) -> (swarm_api::id::CommitId, &'static str) {
    let before = w.head();
    match w.repo().receive(objects, tip) {
        Err(RepoError::Rejected(r)) => {
            assert_eq!(w.head(), before, "nothing stored");
            (r.commit, r.violation.rule())
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn large_branches_report_the_first_failing_commit_as_a_commit_by_commit_check_does() {
    let (a, b, w) = alice_bob();
    let n = 700; // above the parallel-signature threshold
                 // A signature failure before a rule failure: the signature is reported.
    let (objs, ids) = long_branch(&w, &a, &b, n, Some(300), Some(400));
    assert_eq!(refused_at(&w, objs, ids[n - 1]), (ids[300], "signature"));
    // A rule failure before a signature failure: the rule is reported.
    let (objs, ids) = long_branch(&w, &a, &b, n, Some(400), Some(300));
    assert_eq!(refused_at(&w, objs, ids[n - 1]), (ids[300], "unknown-type"));
    // Both on the same commit: the signature is checked first.
    let (objs, ids) = long_branch(&w, &a, &b, n, Some(300), Some(300));
    assert_eq!(refused_at(&w, objs, ids[n - 1]), (ids[300], "signature"));
    // The last commit's signature.
    let (objs, ids) = long_branch(&w, &a, &b, n, Some(n - 1), None);
    assert_eq!(refused_at(&w, objs, ids[n - 1]), (ids[n - 1], "signature"));
    // The same verdicts below the threshold (signatures verified one by one).
    let (objs, ids) = long_branch(&w, &a, &b, 50, Some(30), Some(40));
    assert_eq!(refused_at(&w, objs, ids[49]), (ids[30], "signature"));
    // And a valid long branch is accepted whole.
    let (objs, ids) = long_branch(&w, &a, &b, n, None, None);
    w.repo().receive(objs, ids[n - 1]).expect("valid branch");
    assert_eq!(w.head(), ids[n - 1]);
}

// ------------------------------------------------------------------ cheapest check first

/// The bomb of issue #15, signed by Alice and then altered (its signature no longer
/// verifies), is refused for its signature before any of its trees is read: the signer is
/// checked from the parent state and a path lookup, the tree diff comes after. (Before, the
/// diff ran first and the commit was refused as `layout-path`, after walking the bomb.)
#[test]
fn cheapest_check_first_a_forged_bomb_is_refused_for_its_signature_unread() {
    let (a, _b, w) = alice_bob();
    let bomb = subtree_bomb(24, 6, tree_object(&[]));
    let bomb_ids: Vec<_> = bomb.iter().map(Object::id).collect();
    let forged = rewrite(&graft(&w, &a, "votes", bomb), |t| t.replace("bomb", "bomB"));
    let (v, reads) = refused_counting(&w, &Engine::default(), &forged);
    assert_eq!(v.rule(), "signature", "{v}");
    let src = CountingReads::new(&w, &forged, 2_000);
    let stored = |c: &swarm_api::CommitId| !src.new.contains_key(&c.object_id());
    Engine::default()
        .validate_branch(w.conv, &src, &stored, &[forged.id])
        .unwrap_err();
    let read = src.read.borrow();
    assert!(
        bomb_ids.iter().all(|id| !read.contains(id)),
        "a tree of the bomb was read ({reads} reads)"
    );
    w.refuse(forged, "signature");
}

/// A device the conversation does not know (validly signed by a stranger) is refused before
/// the bomb its commit carries is walked.
#[test]
fn cheapest_check_first_an_unknown_devices_bomb_is_refused_unread() {
    let (_a, _b, w) = alice_bob();
    let m = P::new("Mallory");
    let bomb = subtree_bomb(24, 6, tree_object(&[]));
    let bomb_ids: Vec<_> = bomb.iter().map(Object::id).collect();
    let d = graft(&w, &m, "votes", bomb);
    let src = CountingReads::new(&w, &d, 2_000);
    let stored = |c: &swarm_api::CommitId| !src.new.contains_key(&c.object_id());
    let err = Engine::default()
        .validate_branch(w.conv, &src, &stored, &[d.id])
        .unwrap_err();
    assert_eq!(err.violation.rule(), "device-known", "{err}");
    assert!(bomb_ids.iter().all(|id| !src.read.borrow().contains(id)));
}

/// A long branch (its signatures verified together, in parallel) with a forged commit in
/// its middle, made by `forge` on the given parent: refused for that commit's signature.
fn long_branch_with_forged<'w>(
    w: &'w W,
    a: &P,
    engine: &Engine,
    forge: impl FnOnce(swarm_api::CommitId) -> swarm_api::repo::Draft,
) -> (CountingReads<'w>, swarm_api::repo::Draft) {
    let tree = w.repo().commit(&w.head()).unwrap().tree;
    let mut objects: Vec<Object> = Vec::new();
    let mut prev = w.head();
    let chain = |prev: &mut swarm_api::CommitId, objects: &mut Vec<Object>| {
        for i in 0..300 {
            let msg = Body::text(format!("m{i}")).to_message();
            let c = swarm_api::commit::sign_commit(&a.device, "Alice", tree, &[*prev], &msg, T)
                .unwrap();
            *prev = swarm_api::CommitId::from_object_id(&c.id()).unwrap();
            objects.push(c);
        }
    };
    chain(&mut prev, &mut objects);
    let forged = forge(prev);
    prev = forged.id;
    objects.extend(forged.objects.iter().cloned());
    chain(&mut prev, &mut objects);
    let branch = swarm_api::repo::Draft { id: prev, objects };
    let src = CountingReads::new(w, &branch, 10_000);
    let stored = |c: &swarm_api::CommitId| !src.new.contains_key(&c.object_id());
    let err = engine
        .validate_branch(w.conv, &src, &stored, &[branch.id])
        .unwrap_err();
    assert_eq!(
        (err.commit, err.violation.rule()),
        (forged.id, "signature"),
        "{err}"
    );
    w.refuse(branch.clone(), "signature");
    (src, forged)
}

/// In a long branch, a forged commit carrying the bomb is refused for its signature and its
/// trees are never read. (Before, a long branch's signatures were verified after every
/// commit's trees: the bomb was walked, then the signature reported.)
#[test]
fn cheapest_check_first_a_long_branch_with_a_forged_bomb_reads_none_of_it() {
    let (a, _b, w) = alice_bob();
    let bomb = subtree_bomb(24, 6, tree_object(&[]));
    let bomb_ids: Vec<_> = bomb.iter().map(Object::id).collect();
    let (src, _) = long_branch_with_forged(&w, &a, &Engine::default(), |parent| {
        let msg = Body::text("bomb").to_message();
        rewrite(&graft_on(&w, &a, parent, "votes", bomb, &msg), |t| {
            t.replace("bomb", "bomB")
        })
    });
    assert!(bomb_ids.iter().all(|id| !src.read.borrow().contains(id)));
}

/// A message type that counts the commits it is asked about.
struct Counted(std::sync::atomic::AtomicUsize);
impl MessageType for Counted {
    fn types(&self) -> Vec<String> {
        vec!["application/counted+json".into()]
    }
    fn validate(&self, _view: &CommitView<'_>) -> Result<(), Violation> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}

/// In a long branch, a forged commit of a plugin's type never reaches the plugin. (Before,
/// the plugin validated it, then the signature was reported.)
#[test]
fn cheapest_check_first_a_long_branch_with_a_forged_plugin_commit_never_reaches_the_plugin() {
    let (a, _b, w) = alice_bob();
    let counted = Arc::new(Counted(Default::default()));
    let mut engine = Engine::default();
    engine.register(counted.clone());
    let tree = w.repo().commit(&w.head()).unwrap().tree;
    long_branch_with_forged(&w, &a, &engine, |parent| {
        let msg = r#"{"n":"1","type":"application/counted+json"}"#;
        let c =
            swarm_api::commit::sign_commit(&a.device, "Alice", tree, &[parent], msg, T).unwrap();
        let id = swarm_api::CommitId::from_object_id(&c.id()).unwrap();
        let d = swarm_api::repo::Draft {
            id,
            objects: vec![c],
        };
        rewrite(&d, |t| t.replace(r#""n":"1""#, r#""n":"2""#))
    });
    assert_eq!(
        counted.0.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "the plugin was asked about the forged commit"
    );
}
