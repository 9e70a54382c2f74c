//! The jami rule profile, one adaptation at a time, on histories in jamid's format built
//! with test RSA identities (`swarm_api::jami::testing`): what jamid legitimately writes is
//! accepted, and each forged variant is refused by the rule named, storing nothing.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use rand_core::OsRng;
use swarm_api::id::{CommitId, ConversationId};
use swarm_api::jami::testing::JamiTestDevice;
use swarm_api::object::{build_tree, Object};
use swarm_api::repo::{Repo, RepoError};
use swarm_api::storage::{HeadUpdate, MemoryStorage, Storage};
use swarm_api::validate::{Engine, Limits, Profile, Violation};

/// The fixtures' clock: certificates valid for ten years from 2026-11-26.
const NOW: i64 = 1_795_694_771;
const NOT_AFTER: i64 = NOW + 10 * 365 * 86_400;

struct People {
    alice: JamiTestDevice,
    bob: JamiTestDevice,
}

/// RSA key generation is slow: the identities are made once for the whole file.
fn people() -> &'static People {
    static P: OnceLock<People> = OnceLock::new();
    P.get_or_init(|| {
        let gen = |n| JamiTestDevice::generate(n, 1024, NOW - 60, NOT_AFTER, &mut OsRng).unwrap();
        People {
            alice: gen("alice"),
            bob: gen("bob"),
        }
    })
}

type Changes<'a> = &'a [(&'a str, Option<&'a [u8]>)];

struct Conv {
    st: MemoryStorage,
    conv: ConversationId,
    engine: Arc<Engine>,
}

fn jami_engine() -> Arc<Engine> {
    Arc::new(Engine::with_profile(Profile::Jami, Limits::default()))
}

/// Builds a commit on `parent`'s files (none for the initial commit), signed by `dev`.
fn build(
    st: &MemoryStorage,
    conv: Option<ConversationId>,
    parent: Option<CommitId>,
    dev: &JamiTestDevice,
    changes: Changes<'_>,
    message: &str,
    time: i64,
) -> (Vec<Object>, CommitId) {
    let mut files = match (conv, parent) {
        (Some(conv), Some(p)) => Repo::open(st, conv).unwrap().files(&p).unwrap(),
        _ => Default::default(),
    };
    let mut objects = Vec::new();
    for (path, data) in changes {
        match data {
            Some(d) => {
                let blob = Object::blob(d.to_vec());
                files.insert(path.to_string(), blob.id());
                objects.push(blob);
            }
            None => {
                files.remove(*path);
            }
        }
    }
    let (tree, trees) = build_tree(&files);
    objects.extend(trees);
    let parents: Vec<CommitId> = parent.into_iter().collect();
    let commit = dev.sign_commit(tree, &parents, message, time).unwrap();
    let id = CommitId::from_object_id(&commit.id()).unwrap();
    objects.push(commit);
    (objects, id)
}

impl Conv {
    /// alice's group conversation (mode 2), as `startConversation` writes it.
    fn new() -> Self {
        let p = people();
        let st = MemoryStorage::new();
        let (objects, id) = build(
            &st,
            None,
            None,
            &p.alice,
            &[
                (
                    &format!("admins/{}.crt", p.alice.uri),
                    Some(p.alice.account_pem.as_bytes()),
                ),
                (
                    &format!("devices/{}.crt", p.alice.device),
                    Some(p.alice.device_pem.as_bytes()),
                ),
            ],
            r#"{"mode":2,"type":"initial"}"#,
            NOW,
        );
        let conv = ConversationId(id);
        let all: BTreeMap<_, _> = objects.iter().map(|o| (o.id(), o.clone())).collect();
        jami_engine()
            .verify(conv, &all, id)
            .expect("initial commit");
        st.write(
            &conv,
            &objects,
            HeadUpdate {
                expected: None,
                new: id,
            },
        )
        .unwrap();
        Conv {
            st,
            conv,
            engine: jami_engine(),
        }
    }

    fn repo(&self) -> Repo<'_> {
        Repo::open(&self.st, self.conv)
            .unwrap()
            .with_engine(self.engine.clone())
    }

    fn head(&self) -> CommitId {
        self.repo().head().unwrap()
    }

    /// Receives one commit on the head; on refusal, checks nothing was stored.
    fn try_commit_at(
        &self,
        dev: &JamiTestDevice,
        changes: Changes<'_>,
        message: &str,
        time: i64,
    ) -> Result<CommitId, Violation> {
        let head = self.head();
        let (objects, id) = build(
            &self.st,
            Some(self.conv),
            Some(head),
            dev,
            changes,
            message,
            time,
        );
        match self.repo().receive(objects, id) {
            Ok(_) => {
                assert_eq!(self.head(), id);
                Ok(id)
            }
            Err(RepoError::Rejected(r)) => {
                assert_eq!(r.commit, id, "the new commit is the one refused");
                assert_eq!(self.head(), head, "head unchanged");
                assert!(
                    self.st
                        .object(&self.conv, &id.object_id())
                        .unwrap()
                        .is_none(),
                    "nothing stored"
                );
                Err(r.violation)
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }

    fn try_commit(
        &self,
        dev: &JamiTestDevice,
        changes: Changes<'_>,
        message: &str,
    ) -> Result<CommitId, Violation> {
        self.try_commit_at(dev, changes, message, NOW)
    }

    fn commit(&self, dev: &JamiTestDevice, changes: Changes<'_>, message: &str) -> CommitId {
        self.try_commit(dev, changes, message)
            .unwrap_or_else(|v| panic!("{message}: refused by {}: {v}", v.rule()))
    }

    fn refused(&self, dev: &JamiTestDevice, changes: Changes<'_>, message: &str, rule: &str) {
        match self.try_commit(dev, changes, message) {
            Ok(id) => panic!("{message}: accepted as {id}, expected rule {rule}"),
            Err(v) => assert_eq!(v.rule(), rule, "{message}: {v}"),
        }
    }

    /// alice adds bob, bob joins (as jamid writes both).
    fn with_bob(self) -> Self {
        let p = people();
        let bob = p.bob.uri;
        self.commit(
            &p.alice,
            &[(&format!("invited/{bob}"), Some(b""))],
            &format!(r#"{{"action":"add","type":"member","uri":"{bob}"}}"#),
        );
        self.commit(
            &p.bob,
            &[
                (&format!("invited/{bob}"), None),
                (
                    &format!("members/{bob}.crt"),
                    Some(p.bob.account_pem.as_bytes()),
                ),
                (
                    &format!("devices/{}.crt", p.bob.device),
                    Some(p.bob.device_pem.as_bytes()),
                ),
            ],
            &format!(r#"{{"action":"join","type":"member","uri":"{bob}"}}"#),
        );
        self
    }
}

fn text(body: &str) -> String {
    format!(r#"{{"body":"{body}","type":"text/plain"}}"#)
}

#[test]
fn a_jamid_style_history_is_accepted_and_verifies_whole() {
    let p = people();
    let c = Conv::new().with_bob();
    c.commit(&p.bob, &[], &text("Hi, this is bob"));
    let bob = p.bob.uri;
    // The vote has no "action": the path says ban.
    let vote = format!("votes/ban/members/{bob}/{}", p.alice.uri);
    c.commit(
        &p.alice,
        &[(&vote, Some(b""))],
        &format!(r#"{{"type":"vote","uri":"{bob}"}}"#),
    );
    // The ban renames the member file and deletes the vote; bob's device cert stays.
    let member = format!("members/{bob}.crt");
    c.commit(
        &p.alice,
        &[
            (&member, None),
            (
                &format!("banned/members/{bob}.crt"),
                Some(p.bob.account_pem.as_bytes()),
            ),
            (&vote, None),
        ],
        &format!(r#"{{"action":"ban","type":"member","uri":"{bob}"}}"#),
    );
    let head = c.head();
    let files = c.repo().files(&head).unwrap();
    assert!(files.contains_key(&format!("devices/{}.crt", p.bob.device)));
    // The whole history verifies from its initial commit, and not under the native rules.
    let v = jami_engine()
        .verify(
            c.conv,
            &swarm_api::storage::ConversationObjects {
                storage: &c.st,
                conv: c.conv,
            },
            head,
        )
        .unwrap();
    assert_eq!(v.commits().len(), 6);
    assert!(Engine::default()
        .verify(
            c.conv,
            &swarm_api::storage::ConversationObjects {
                storage: &c.st,
                conv: c.conv
            },
            head
        )
        .is_err());
}

#[test]
fn a_vote_without_action_adds_exactly_one_vote_file_of_its_author() {
    let p = people();
    let c = Conv::new().with_bob();
    let bob = p.bob.uri;
    let body = format!(r#"{{"type":"vote","uri":"{bob}"}}"#);
    let ban = format!("votes/ban/members/{bob}/{}", p.alice.uri);
    let unban = format!("votes/unban/members/{bob}/{}", p.alice.uri);
    c.refused(&p.alice, &[], &body, "vote-files");
    c.refused(
        &p.alice,
        &[(&ban, Some(b"")), (&unban, Some(b""))],
        &body,
        "vote-files",
    );
    c.refused(
        &p.alice,
        &[("profile.vcf", Some(b"x"))],
        &body,
        "vote-files",
    );
    // A vote file in someone else's name.
    c.refused(
        &p.alice,
        &[(&format!("votes/ban/members/{bob}/{bob}"), Some(b""))],
        &body,
        "vote-files",
    );
    // An unban of someone not banned: the path's action is checked like an explicit one.
    c.refused(&p.alice, &[(&unban, Some(b""))], &body, "vote-target");
    // Non-admins do not vote, with or without action.
    c.refused(
        &p.bob,
        &[(&format!("votes/ban/members/{bob}/{bob}"), Some(b""))],
        &body,
        "vote-by-admin",
    );
    c.commit(&p.alice, &[(&ban, Some(b""))], &body);
}

#[test]
fn a_jami_ban_keeps_device_certificates_and_the_banned_device_cannot_sign() {
    let p = people();
    let c = Conv::new().with_bob();
    let bob = p.bob.uri;
    let vote = format!("votes/ban/members/{bob}/{}", p.alice.uri);
    c.commit(
        &p.alice,
        &[(&vote, Some(b""))],
        &format!(r#"{{"type":"vote","uri":"{bob}"}}"#),
    );
    let member = format!("members/{bob}.crt");
    let banned = format!("banned/members/{bob}.crt");
    let device = format!("devices/{}.crt", p.bob.device);
    let body = format!(r#"{{"action":"ban","type":"member","uri":"{bob}"}}"#);
    // Our native ban also moves the devices: jamid does not, and neither may a jami ban.
    c.refused(
        &p.alice,
        &[
            (&member, None),
            (&banned, Some(p.bob.account_pem.as_bytes())),
            (&vote, None),
            (&device, None),
            (
                &format!("banned/devices/{}.crt", p.bob.device),
                Some(p.bob.device_pem.as_bytes()),
            ),
        ],
        &body,
        "ban-files",
    );
    // Nor may it skip deleting the vote.
    c.refused(
        &p.alice,
        &[
            (&member, None),
            (&banned, Some(p.bob.account_pem.as_bytes())),
        ],
        &body,
        "ban-files",
    );
    c.commit(
        &p.alice,
        &[
            (&member, None),
            (&banned, Some(p.bob.account_pem.as_bytes())),
            (&vote, None),
        ],
        &body,
    );
    // bob's device certificate is still in devices/, but his account is banned.
    c.refused(&p.bob, &[], &text("still here"), "account-not-banned");
}

#[test]
fn certificates_must_be_valid_at_the_commit_time() {
    let p = people();
    let c = Conv::new();
    for t in [NOW - 3600, NOT_AFTER + 1] {
        match c.try_commit_at(&p.alice, &[], &text("time travel"), t) {
            Err(v) => {
                assert_eq!(v.rule(), "device-chain", "{v}");
                assert!(v.to_string().contains("not valid at"), "{v}");
            }
            Ok(id) => panic!("commit at {t} accepted as {id}"),
        }
    }
    c.try_commit_at(&p.alice, &[], &text("on time"), NOW + 60)
        .expect("valid time");
}

#[test]
fn malformed_jami_certificates_are_refused() {
    let p = people();
    let c = Conv::new();
    let bob = p.bob.uri;
    c.commit(
        &p.alice,
        &[(&format!("invited/{bob}"), Some(b""))],
        &format!(r#"{{"action":"add","type":"member","uri":"{bob}"}}"#),
    );
    let join = format!(r#"{{"action":"join","type":"member","uri":"{bob}"}}"#);
    let invited = format!("invited/{bob}");
    let member = format!("members/{bob}.crt");
    let device = format!("devices/{}.crt", p.bob.device);
    // A device file holding the whole chain.
    let two = format!("{}{}", p.bob.device_pem, p.bob.account_pem);
    c.refused(
        &p.bob,
        &[
            (&invited, None),
            (&member, Some(p.bob.account_pem.as_bytes())),
            (&device, Some(two.as_bytes())),
        ],
        &join,
        "certificate-wellformed",
    );
    // The member file holding the device's certificate instead of the account's.
    c.refused(
        &p.bob,
        &[
            (&invited, None),
            (&member, Some(p.bob.device_pem.as_bytes())),
            (&device, Some(p.bob.device_pem.as_bytes())),
        ],
        &join,
        "certificate-wellformed",
    );
    // bob's device presented as issued by alice's account.
    c.refused(
        &p.bob,
        &[
            (&invited, None),
            (&member, Some(p.alice.account_pem.as_bytes())),
            (&device, Some(p.bob.device_pem.as_bytes())),
        ],
        &join,
        "certificate-wellformed",
    );
    // Not PEM at all.
    c.refused(
        &p.bob,
        &[
            (&invited, None),
            (&member, Some(p.bob.account_pem.as_bytes())),
            (&device, Some(b"garbage")),
        ],
        &join,
        "certificate-wellformed",
    );
    c.commit(
        &p.bob,
        &[
            (&invited, None),
            (&member, Some(p.bob.account_pem.as_bytes())),
            (&device, Some(p.bob.device_pem.as_bytes())),
        ],
        &join,
    );
}

#[test]
fn a_device_chain_that_does_not_verify_is_refused() {
    let p = people();
    let c = Conv::new();
    let bob = p.bob.uri;
    c.commit(
        &p.alice,
        &[(&format!("invited/{bob}"), Some(b""))],
        &format!(r#"{{"action":"add","type":"member","uri":"{bob}"}}"#),
    );
    // bob's account file with his CA certificate replaced by alice's: the account cert's
    // issuer no longer matches.
    let bob_account = p
        .bob
        .account_pem
        .split_inclusive("-----END CERTIFICATE-----\n")
        .next()
        .unwrap();
    let alice_ca = p
        .alice
        .account_pem
        .split_inclusive("-----END CERTIFICATE-----\n")
        .nth(1)
        .unwrap();
    let forged = format!("{bob_account}{alice_ca}");
    match c.try_commit(
        &p.bob,
        &[
            (&format!("invited/{bob}"), None),
            (&format!("members/{bob}.crt"), Some(forged.as_bytes())),
            (
                &format!("devices/{}.crt", p.bob.device),
                Some(p.bob.device_pem.as_bytes()),
            ),
        ],
        &format!(r#"{{"action":"join","type":"member","uri":"{bob}"}}"#),
    ) {
        Err(v) => assert_eq!(v.rule(), "device-chain", "{v}"),
        Ok(id) => panic!("forged chain accepted as {id}"),
    }
}

#[test]
fn jamid_profiles_with_an_empty_photo_are_vcards_in_the_jami_profile_only() {
    let p = people();
    let c = Conv::new();
    let body = r#"{"type":"application/update-profile"}"#;
    let jamid = b"BEGIN:VCARD\nVERSION:2.1\nFN:Fixture swarm\nPHOTO;ENCODING=BASE64\n\n\nEND:VCARD";
    c.refused(
        &p.alice,
        &[(
            "profile.vcf",
            Some(b"BEGIN:VCARD\nVERSION:2.1\nPH OTO\nEND:VCARD"),
        )],
        body,
        "profile-vcard",
    );
    c.refused(
        &p.alice,
        &[(
            "profile.vcf",
            Some(b"VERSION:2.1\nPHOTO;ENCODING=BASE64\nEND:VCARD"),
        )],
        body,
        "profile-vcard",
    );
    c.commit(&p.alice, &[("profile.vcf", Some(jamid))], body);
    // The same vCard in a native conversation is refused (a property line needs ':').
    let err = swarm_api::validate::check_vcard(jamid, false).unwrap_err();
    assert_eq!(err.rule(), "profile-vcard");
}

/// The checks jamid 13.7 lacks (DESIGN §4, `VALIDATION.md`) stay on in the jami profile.
#[test]
fn the_checks_jamid_lacks_stay_on_in_the_jami_profile() {
    let p = people();
    let bob = p.bob.uri;
    // A self-join without invitation in an invites-only conversation.
    let c = Conv::new();
    c.refused(
        &p.bob,
        &[
            (
                &format!("members/{bob}.crt"),
                Some(p.bob.account_pem.as_bytes()),
            ),
            (
                &format!("devices/{}.crt", p.bob.device),
                Some(p.bob.device_pem.as_bytes()),
            ),
        ],
        &format!(r#"{{"action":"join","type":"member","uri":"{bob}"}}"#),
        "join-invited",
    );
    let c = c.with_bob();
    let first = c.commit(&p.alice, &[], &text("first"));
    // An edit that also adds a file.
    c.refused(
        &p.alice,
        &[("profile.vcf", Some(b"BEGIN:VCARD\nVERSION:2.1\nEND:VCARD"))],
        &format!(r#"{{"body":"edited","edit":"{first}","type":"application/edited-message"}}"#),
        "no-unexpected-files",
    );
    // An edit of someone else's message.
    c.refused(
        &p.bob,
        &[],
        &format!(r#"{{"body":"edited","edit":"{first}","type":"application/edited-message"}}"#),
        "edit-target",
    );
    // A `remove` of someone else, signed by another member.
    c.refused(
        &p.bob,
        &[(&format!("admins/{}.crt", p.alice.uri), None)],
        &format!(
            r#"{{"action":"remove","type":"member","uri":"{}"}}"#,
            p.alice.uri
        ),
        "remove-self",
    );
    // A ban by a non-admin.
    c.refused(
        &p.bob,
        &[],
        &format!(
            r#"{{"action":"ban","type":"member","uri":"{}"}}"#,
            p.alice.uri
        ),
        "ban-by-admin",
    );
    // A leave deleting only the member certificate is what jamid writes, and is accepted.
    c.commit(
        &p.bob,
        &[(&format!("members/{bob}.crt"), None)],
        &format!(r#"{{"action":"remove","type":"member","uri":"{bob}"}}"#),
    );
}
