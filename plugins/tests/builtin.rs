//! The plugins of this repository, through the real validation engine.

mod common;

use common::{plugin_engine, W};
use swarm_api::body::Mode;
use swarm_api::id::CommitId;
use swarm_api::testing::Person;
use swarm_api::traits::MessageType;
use swarm_api::validate::Violation;
use swarm_plugins::{builtin, Host};

fn setup() -> (Person, Person, Person, W) {
    let (alice, bob, carol) = (
        Person::new("alice"),
        Person::new("bob"),
        Person::new("carol"),
    );
    let host = Host::new().expect("host");
    let w = W::new(&alice, Mode::InvitesOnly, plugin_engine(&host));
    w.add_member(&alice, &bob);
    w.add_member(&alice, &carol);
    (alice, bob, carol, w)
}

fn refused_by(r: Result<CommitId, swarm_api::repo::RepoError>, plugin: &str, why: &str) {
    match r {
        Err(swarm_api::repo::RepoError::Rejected(rej)) => match &rej.violation {
            Violation::Plugin { plugin: p, reason } => {
                assert!(p.contains(plugin), "{rej}");
                assert!(reason.contains(why), "{rej}");
            }
            other => panic!("expected a refusal by {plugin}, got {other}"),
        },
        other => panic!("expected a refusal by {plugin}, got {other:?}"),
    }
}

fn poll(action: &str, rest: &str) -> String {
    format!(r#"{{"action":"{action}",{rest}"type":"application/poll+json"}}"#)
}

#[test]
fn polls_open_vote_once_while_open_and_close_by_author_or_admin() {
    let (alice, bob, carol, w) = setup();
    let open = w
        .send(
            &bob,
            &poll("open", r#""options":["tea","coffee"],"question":"drink?","#),
        )
        .expect("any member opens");
    refused_by(
        w.send(
            &bob,
            &poll("open", r#""options":["only one"],"question":"q","#),
        ),
        "polls",
        "2 to 32 options",
    );
    refused_by(
        w.send(
            &bob,
            &poll("open", r#""options":["a","b"],"question":" ","#),
        ),
        "polls",
        "question is empty",
    );
    let vote = |who: &Person, n: i64| {
        w.send(
            who,
            &poll("vote", &format!(r#""option":{n},"poll":"{open}","#)),
        )
    };
    vote(&carol, 1).expect("carol votes");
    refused_by(vote(&carol, 0), "polls", "already voted");
    refused_by(vote(&alice, 2), "polls", "out of range");
    vote(&alice, 0).expect("alice votes");
    let text = w
        .send(&alice, r#"{"body":"hi","type":"text/plain"}"#)
        .expect("text");
    refused_by(
        w.send(
            &alice,
            &poll("vote", &format!(r#""option":0,"poll":"{text}","#)),
        ),
        "polls",
        "not the opening of a poll",
    );
    let close = |who: &Person| w.send(who, &poll("close", &format!(r#""poll":"{open}","#)));
    refused_by(close(&carol), "polls", "only the poll's author or an admin");
    close(&bob).expect("the author closes");
    refused_by(close(&alice), "polls", "already closed");
    refused_by(vote(&bob, 0), "polls", "is closed");
    // An admin closes someone else's poll.
    let open2 = w
        .send(
            &carol,
            &poll("open", r#""options":["x","y","z"],"question":"?","#),
        )
        .expect("open");
    w.send(&alice, &poll("close", &format!(r#""poll":"{open2}","#)))
        .expect("an admin closes");
    refused_by(
        w.send(&alice, &poll("reopen", r#""poll":"x","#)),
        "polls",
        "unknown poll action",
    );
}

#[test]
fn edits_only_by_the_author_of_an_earlier_text() {
    let (alice, bob, _, w) = setup();
    let text = w
        .send(&alice, r#"{"body":"helo","type":"text/plain"}"#)
        .expect("text");
    let edit = |who: &Person, target: &str| {
        w.send(
            who,
            &format!(r#"{{"body":"hello","edit":"{target}","type":"application/edited-message"}}"#),
        )
    };
    edit(&alice, &text.to_string()).expect("the author edits");
    refused_by(edit(&bob, &text.to_string()), "edits", "was not written by");
    refused_by(
        edit(&alice, "0123456789abcdef0123456789abcdef01234567"),
        "edits",
        "not an earlier commit",
    );
}

#[test]
fn reactions_go_to_earlier_messages() {
    let (alice, bob, _, w) = setup();
    let text = w
        .send(&alice, r#"{"body":"news","type":"text/plain"}"#)
        .expect("text");
    let react = |body: &str, target: &str| {
        w.send(
            &bob,
            &format!(
                r#"{{"body":"{body}","react-to":"{target}","type":"application/reaction+json"}}"#
            ),
        )
    };
    react("👍", &text.to_string()).expect("a reaction");
    refused_by(
        react("", &text.to_string()),
        "reactions",
        "1 to 32 characters",
    );
    refused_by(
        react("👍", "0123456789abcdef0123456789abcdef01234567"),
        "reactions",
        "not an earlier commit",
    );
}

#[test]
fn call_history_takes_both_shapes_of_the_seed() {
    let (alice, _, _, w) = setup();
    w.send(
        &alice,
        r#"{"duration":"1200","to":"x","type":"application/call-history+json"}"#,
    )
    .expect("1:1");
    w.send(
        &alice,
        r#"{"confId":"c","device":"d","type":"application/call-history+json","uri":"u"}"#,
    )
    .expect("conference");
    refused_by(
        w.send(
            &alice,
            r#"{"to":"x","type":"application/call-history+json"}"#,
        ),
        "call-history",
        "expected",
    );
}

#[test]
fn summaries_for_clients_that_do_not_know_the_type() {
    let host = Host::new().expect("host");
    let polls = host.load("polls", builtin::POLLS).expect("loads");
    let body = swarm_api::body::Body::parse(r#"{"action":"open","options":["a","b"],"question":"lunch?","type":"application/poll+json"}"#).expect("body");
    assert_eq!(polls.summary(&body).as_deref(), Some("poll: lunch?"));
}

#[test]
fn a_plugin_is_compiled_once_per_host() {
    let host = Host::new().expect("host");
    assert_eq!(host.compilations(), 0);
    let first = host.load("polls", builtin::POLLS).expect("loads");
    assert_eq!(host.compilations(), 1);
    let again = host.load("polls again", builtin::POLLS).expect("loads");
    assert_eq!(
        host.compilations(),
        1,
        "the second load is served from memory"
    );
    assert_eq!(again.sha256(), first.sha256());
    host.load("edits", builtin::EDITS).expect("loads");
    assert_eq!(host.compilations(), 2, "another component is compiled");
}

#[test]
fn the_on_disk_cache_keeps_compiled_components_for_the_next_process() {
    /// The compiled artifacts in the cache, named by a base64url hash (wasmtime's worker
    /// also writes `.stats` files, `.wip-*` temporaries and cleanup markers in the
    /// background; those are not artifacts).
    fn artifacts(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if p.is_dir() {
                out.extend(artifacts(&p));
            } else if !name.contains('.') {
                out.push(p);
            }
        }
        out.sort();
        out
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let config = swarm_plugins::HostConfig {
        cache_dir: Some(dir.path().join("cache")),
        ..Default::default()
    };
    let first = Host::with_config(config.clone()).expect("host");
    first.load("polls", builtin::POLLS).expect("loads");
    // wasmtime writes the compiled artifact to the cache directory as it compiles.
    let after_first = artifacts(dir.path());
    assert_eq!(
        after_first.len(),
        1,
        "one component, one artifact: {after_first:?}"
    );
    // A second host (as a second process would) loads it from there: the plugin works and
    // no second artifact is written.
    let second = Host::with_config(config).expect("host");
    let polls = second
        .load("polls", builtin::POLLS)
        .expect("loads from the cache");
    assert_eq!(polls.owned_types(), ["application/poll+json".to_string()]);
    assert_eq!(artifacts(dir.path()), after_first);
}
