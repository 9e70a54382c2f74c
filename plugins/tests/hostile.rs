//! Hostile plugins, written by hand in WAT: each is refused with a clear error naming the
//! plugin, within its limit; the node keeps running and nothing is stored.

mod common;

use std::sync::Arc;

use common::{engine_with, hostile, HOSTILE, W};
use swarm_api::body::Mode;
use swarm_api::testing::Person;
use swarm_api::traits::MessageType;
use swarm_api::validate::Violation;
use swarm_plugins::{Host, LoadError};

/// `validate` answers `ok` (the answer area at 1024 is zeroed memory).
const OK: &str = "i32.const 1024";

/// Sends a commit of the hostile type to a conversation whose engine runs `wasm`; returns
/// the refusal (after checking nothing was stored and the conversation still works).
fn refusal(name: &str, wasm: &[u8]) -> Violation {
    let host = Host::new().expect("host");
    let plugin = host.load(name, wasm).expect("the hostile plugin loads");
    let alice = Person::new("alice");
    let w = W::new(
        &alice,
        Mode::InvitesOnly,
        engine_with(vec![Arc::new(plugin) as Arc<dyn MessageType>]),
    );
    let v = w
        .receive(w.draft(&alice, &format!(r#"{{"type":"{HOSTILE}"}}"#)))
        .expect_err("the hostile plugin's commit is refused");
    // The node keeps running: the same conversation still takes ordinary messages.
    w.send(&alice, r#"{"body":"still here","type":"text/plain"}"#)
        .expect("a text after the refusal");
    v
}

fn assert_refused(v: &Violation, name: &str, cause: &str) {
    match v {
        Violation::Plugin { plugin, reason } => {
            assert!(plugin.contains(name), "the refusal names the plugin: {v}");
            assert!(reason.contains(cause), "the refusal says {cause:?}: {v}");
        }
        other => panic!("expected a plugin refusal, got {other}"),
    }
}

#[test]
fn a_well_behaved_hand_written_plugin_accepts() {
    let host = Host::new().expect("host");
    let plugin = host.load("polite", &hostile(HOSTILE, OK)).expect("loads");
    assert_eq!(plugin.owned_types(), [HOSTILE.to_string()]);
    let alice = Person::new("alice");
    let w = W::new(
        &alice,
        Mode::InvitesOnly,
        engine_with(vec![Arc::new(plugin) as Arc<dyn MessageType>]),
    );
    w.receive(w.draft(&alice, &format!(r#"{{"type":"{HOSTILE}"}}"#)))
        .expect("accepted");
}

#[test]
fn an_infinite_loop_runs_out_of_fuel() {
    // Stopped by the fuel budget (a count of instructions, the same on every peer), not by
    // a clock.
    let v = refusal(
        "looper",
        &hostile(HOSTILE, "(loop $l (br $l)) i32.const 1024"),
    );
    assert_refused(&v, "looper", "ran out of fuel");
}

#[test]
fn a_memory_grow_bomb_hits_the_memory_limit() {
    let v = refusal(
        "bomber",
        &hostile(
            HOSTILE,
            "(loop $l (drop (memory.grow (i32.const 16))) (br $l)) i32.const 1024",
        ),
    );
    assert_refused(&v, "bomber", "memory");
}

#[test]
fn a_trap_refuses_the_commit() {
    let v = refusal("trapper", &hostile(HOSTILE, "unreachable"));
    assert_refused(&v, "trapper", "trapped");
}

#[test]
fn a_huge_answer_is_refused() {
    // Grows memory to 9 MiB and answers `err` with an 8 MiB reason (zero bytes are valid UTF-8).
    let body = "(drop (memory.grow (i32.const 143))) \
                (i32.store8 (i32.const 1536) (i32.const 1)) \
                (i32.store (i32.const 1540) (i32.const 65536)) \
                (i32.store (i32.const 1544) (i32.const 8388608)) \
                i32.const 1536";
    let v = refusal("shouter", &hostile(HOSTILE, body));
    assert_refused(&v, "shouter", "over the limit");
}

#[test]
fn a_malformed_answer_is_refused() {
    // `err` with a string far outside memory.
    let body = "(i32.store8 (i32.const 1536) (i32.const 1)) \
                (i32.store (i32.const 1540) (i32.const 2147483000)) \
                (i32.store (i32.const 1544) (i32.const 100)) \
                i32.const 1536";
    let v = refusal("liar", &hostile(HOSTILE, body));
    assert_refused(&v, "liar", "out of bounds");
    // A result discriminant that is neither ok nor err.
    let v = refusal(
        "mumbler",
        &hostile(
            HOSTILE,
            "(i32.store8 (i32.const 1536) (i32.const 7)) i32.const 1536",
        ),
    );
    assert_refused(&v, "mumbler", "discriminant");
}

#[test]
fn claiming_a_built_in_type_is_refused_at_load() {
    let host = Host::new().expect("host");
    for kind in ["member", "text/plain", "vote", "application/plugin-install"] {
        match host.load("usurper", &hostile(kind, OK)) {
            Err(LoadError::ReservedType { plugin, kind: k }) => {
                assert!(plugin.contains("usurper"));
                assert_eq!(k, kind);
            }
            other => panic!("claiming {kind} must be refused, got {other:?}"),
        }
    }
}

#[test]
fn something_that_is_not_a_component_is_refused_at_load() {
    let host = Host::new().expect("host");
    let core = common::hostile_module(HOSTILE, OK);
    for (what, bytes) in [
        ("garbage", &b"\0asm garbage"[..]),
        ("a core module", &core[..]),
    ] {
        match host.load(what, bytes) {
            Err(e @ LoadError::NotAPlugin { .. }) => assert!(e.to_string().contains(what), "{e}"),
            other => panic!("{what} must be refused, got {other:?}"),
        }
    }
}

#[test]
fn a_component_importing_anything_is_refused_at_load() {
    // A component importing a function (as a WASI plugin would): nothing is linked.
    let wasm = wat::parse_str(
        r#"(component
             (import "wasi:cli/environment@0.2.0" (instance (export "get-arguments" (func))))
           )"#,
    )
    .expect("component WAT");
    match Host::new().expect("host").load("wasi-user", &wasm) {
        Err(e @ LoadError::NotAPlugin { .. }) => {
            assert!(e.to_string().contains("wasi-user"), "{e}")
        }
        other => panic!("expected NotAPlugin, got {other:?}"),
    }
}

#[test]
fn an_oversized_component_is_refused_at_load() {
    let host = Host::new().expect("host");
    let big = vec![0u8; host.limits().max_component_bytes + 1];
    assert!(matches!(
        host.load("fat", &big),
        Err(LoadError::TooLarge { .. })
    ));
}
