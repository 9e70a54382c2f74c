//! Differential test: the `edits` and `call-history` plugins and the native rules they
//! replace (`edit-target`, `call-history-shape`) agree on thousands of generated commits.

mod common;

use std::sync::Arc;

use common::{plugin_engine, W};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Map, Value};
use swarm_api::body::Mode;
use swarm_api::testing::Person;
use swarm_api::validate::{Engine, Limits};
use swarm_plugins::Host;

/// A field: absent, or one of these values.
fn field(values: Vec<Value>) -> impl Strategy<Value = Option<Value>> {
    prop_oneof![Just(None), proptest::sample::select(values).prop_map(Some)]
}

fn object(kind: &str, fields: Vec<(&'static str, Option<Value>)>) -> String {
    let mut o = Map::new();
    o.insert("type".into(), json!(kind));
    for (k, v) in fields {
        if let Some(v) = v {
            o.insert(k.into(), v);
        }
    }
    serde_json::to_string(&Value::Object(o)).unwrap_or_default()
}

#[test]
fn native_and_plugin_validators_agree() {
    let alice = Person::new("alice");
    let bob = Person::new("bob");
    let host = Host::new().expect("host");
    let plugins = plugin_engine(&host);
    let native = Arc::new(Engine::new(Limits::default()));
    // A history to point at: texts by both, an edit, a member commit, the initial commit.
    let w = W::new(&alice, Mode::InvitesOnly, native.clone());
    let initial = w.head();
    w.add_member(&alice, &bob);
    let member_commit = w.head();
    let text_a = w
        .send(&alice, r#"{"body":"a","type":"text/plain"}"#)
        .expect("text");
    let text_b = w
        .send(&bob, r#"{"body":"b","type":"text/plain"}"#)
        .expect("text");
    let edit_a = w
        .send(
            &alice,
            &format!(r#"{{"body":"a2","edit":"{text_a}","type":"application/edited-message"}}"#),
        )
        .expect("edit");
    let targets: Vec<Value> = [initial, member_commit, text_a, text_b, edit_a]
        .iter()
        .map(|c| json!(c.to_string()))
        .chain([
            json!("0123456789abcdef0123456789abcdef01234567"),
            json!("nope"),
            json!(7),
        ])
        .collect();
    let strings = vec![
        json!("1200"),
        json!("0"),
        json!(""),
        json!("12a"),
        json!("123456789012345678901"),
        json!("x"),
        json!(3),
    ];
    let edit = (
        field(vec![json!("new text"), json!(""), json!(1)]),
        field(targets),
    )
        .prop_map(|(body, edit)| {
            object(
                "application/edited-message",
                vec![("body", body), ("edit", edit)],
            )
        });
    let s = || field(strings.clone());
    let call = (s(), s(), s(), s(), s()).prop_map(|(to, duration, uri, device, conf)| {
        object(
            "application/call-history+json",
            vec![
                ("to", to),
                ("duration", duration),
                ("uri", uri),
                ("device", device),
                ("confId", conf),
            ],
        )
    });
    // Near-valid shapes too, so that both verdicts are frequent: an edit of one of alice's
    // texts (valid from alice only), each call-history shape with one field drawn freely.
    let own = proptest::sample::select(vec![json!(text_a.to_string()), json!(edit_a.to_string())])
        .prop_map(|t| {
            object(
                "application/edited-message",
                vec![("body", Some(json!("x"))), ("edit", Some(t))],
            )
        });
    let v = |x: &str| Some(json!(x));
    let one_to_one = s().prop_map(move |d| {
        object(
            "application/call-history+json",
            vec![("to", v("x")), ("duration", d)],
        )
    });
    let conference = (s(), s()).prop_map(move |(d, c)| {
        object(
            "application/call-history+json",
            vec![
                ("uri", v("u")),
                ("device", v("d")),
                ("confId", c),
                ("duration", d),
            ],
        )
    });
    let strategy = (
        any::<bool>(),
        prop_oneof![edit, call, own, one_to_one, conference],
    );
    let (accepted, refused) = (std::cell::Cell::new(0u32), std::cell::Cell::new(0u32));
    let mut runner = TestRunner::new(Config {
        cases: 3000,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&strategy, |(by_alice, msg)| {
            let who = if by_alice { &alice } else { &bob };
            let d = w.draft(who, &msg);
            let n = w.verdict(&native, &d);
            let p = w.verdict(&plugins, &d);
            prop_assert_eq!(
                n.is_ok(),
                p.is_ok(),
                "{}: native {:?}, plugin {:?}",
                msg,
                n,
                p
            );
            let counter = if n.is_ok() { &accepted } else { &refused };
            counter.set(counter.get() + 1);
            Ok(())
        })
        .expect("the validators agree");
    // Both verdicts are well represented, so agreement is not trivial.
    let (accepted, refused) = (accepted.get(), refused.get());
    assert!(
        accepted > 300 && refused > 300,
        "accepted {accepted}, refused {refused}"
    );
}
