//! The JSON-RPC control socket fed hostile lines (issue #15, "Fuzzing").
//!
//! - [`rpc::parse`]: any bytes give a call or a typed JSON-RPC error (parse error, invalid
//!   request, invalid params), never a panic; what [`rpc::request`] writes parses back to the
//!   same call; every error becomes one well-formed response line.
//! - [`rpc::serve`] over an in-memory pipe to a running host: any sequence of lines is
//!   answered line by line (one response per request with an id or per malformed line, in
//!   order, with that id), errors are typed, and the connection still answers afterwards.

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use serde_json::{json, Map, Value};
use swarm_api::host::rpc::{self, codes, NoExtension};
use swarm_api::host::{Home, Host};
use swarm_api::sim::SimNetwork;
use swarm_api::storage::MemoryStorage;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};

const KNOWN_CODES: &[i64] = &[
    codes::PARSE_ERROR,
    codes::INVALID_REQUEST,
    codes::METHOD_NOT_FOUND,
    codes::INVALID_PARAMS,
    codes::INTERNAL_ERROR,
    codes::FAILED,
    codes::REFUSED,
    codes::NOT_FOUND,
    codes::UNREACHABLE,
];

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        (-1e6f64..1e6).prop_map(|f| json!(f)),
        ".{0,10}".prop_map(Value::String),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(key(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "jsonrpc", "id", "method", "params", "conv", "text", "limit", "mode", "body",
            "target", "action", "uri", "addr",
        ])
        .prop_map(str::to_owned),
        1 => "[a-z]{1,6}",
    ]
}

/// Method names: every known one but `subscribe` (which turns the connection into an event
/// stream), and unknown ones.
fn method() -> impl Strategy<Value = String> {
    let known: Vec<&'static str> = rpc::METHODS
        .iter()
        .copied()
        .filter(|m| *m != "subscribe")
        .collect();
    prop_oneof![
        3 => prop::sample::select(known).prop_map(str::to_owned),
        1 => "[a-z_]{0,12}",
    ]
}

/// Parameters that never name a real conversation or peer (hex ids are not generated): a
/// call fails on their shape or on "not found", and never reaches the network.
fn params() -> impl Strategy<Value = Value> {
    prop_oneof![
        2 => Just(Value::Null),
        3 => proptest::collection::btree_map(key(), json_value(), 0..4)
            .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        1 => json_value(),
    ]
}

fn id() -> impl Strategy<Value = Option<Value>> {
    proptest::option::of(prop_oneof![
        any::<u32>().prop_map(|n| json!(n)),
        "[a-z0-9]{0,8}".prop_map(Value::String),
        Just(Value::Null),
        json_value(),
    ])
}

/// A request-shaped object, sometimes with a wrong `jsonrpc`, a field missing or one extra.
fn request_like() -> impl Strategy<Value = Value> {
    (
        prop_oneof![4 => Just(json!("2.0")), 1 => json_leaf()],
        id(),
        method(),
        params(),
        0u8..8,
        key(),
        json_leaf(),
    )
        .prop_map(|(version, id, method, params, shape, extra, extra_value)| {
            let mut m = Map::new();
            if shape != 1 {
                m.insert("jsonrpc".into(), version);
            }
            if let Some(id) = id {
                m.insert("id".into(), id);
            }
            if shape != 2 {
                m.insert("method".into(), Value::String(method));
            }
            if shape != 3 && !params.is_null() {
                m.insert("params".into(), params);
            }
            if shape == 4 {
                m.insert(extra, extra_value);
            }
            Value::Object(m)
        })
}

/// One line (no newline inside): request-shaped JSON, any JSON, text, or raw bytes.
fn line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => request_like().prop_map(|v| v.to_string().into_bytes()),
        1 => json_value().prop_map(|v| v.to_string().into_bytes()),
        1 => (request_like(), 0usize..64).prop_map(|(v, cut)| {
            let s = v.to_string().into_bytes();
            let n = s.len().saturating_sub(cut);
            s[..n].to_vec()
        }),
        1 => ".{0,40}".prop_map(String::into_bytes),
        1 => proptest::collection::vec(any::<u8>(), 0..80),
    ]
    .prop_map(|mut l| {
        for b in &mut l {
            if *b == b'\n' {
                *b = b' ';
            }
        }
        l
    })
}

/// Checks a response line: one JSON object, `jsonrpc` 2.0, the given id, a result or a
/// typed error. Returns the error code, if an error.
fn check_response(line: &str, id: &Value) -> Result<Option<i64>, TestCaseError> {
    prop_assert!(line.ends_with('\n'), "{line:?}");
    prop_assert!(!line[..line.len() - 1].contains('\n'));
    let v: Value = serde_json::from_str(line)
        .map_err(|e| TestCaseError::fail(format!("not JSON ({e}): {line:?}")))?;
    prop_assert_eq!(&v["jsonrpc"], &json!("2.0"));
    prop_assert_eq!(&v["id"], id);
    let has_result = v.get("result").is_some();
    let error = v.get("error");
    prop_assert!(has_result != error.is_some(), "{v}");
    let Some(e) = error else { return Ok(None) };
    let code = e["code"]
        .as_i64()
        .ok_or_else(|| TestCaseError::fail(format!("untyped error {v}")))?;
    prop_assert!(KNOWN_CODES.contains(&code), "unknown code {code}");
    prop_assert!(e["message"].is_string(), "{v}");
    Ok(Some(code))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    /// Any line: a call or a typed error, answered in one well-formed line.
    #[test]
    fn any_line_parses_to_a_call_or_a_typed_error(l in line()) {
        match rpc::parse(&l) {
            Ok(call) => {
                prop_assert!(matches!(call.params, Value::Null | Value::Object(_)));
                // Only a JSON object with "jsonrpc": "2.0" and a string method is a call.
                let v: Value = serde_json::from_slice(&l).expect("a call is JSON");
                prop_assert_eq!(&v["jsonrpc"], &json!("2.0"));
                prop_assert_eq!(v["method"].as_str(), Some(call.method.as_str()));
            }
            Err((id, e)) => {
                prop_assert!(
                    [codes::PARSE_ERROR, codes::INVALID_REQUEST, codes::INVALID_PARAMS].contains(&e.code),
                    "{e:?}"
                );
                let line = String::from_utf8(rpc::response(&id, Err(e.clone()))).expect("UTF-8");
                prop_assert_eq!(check_response(&line, &id)?, Some(e.code));
            }
        }
    }

    /// What `rpc::request` writes parses back to the same call.
    #[test]
    fn requests_round_trip(n in any::<u64>(), m in method(), p in proptest::collection::btree_map(key(), json_value(), 0..4)) {
        let params = Value::Object(p.into_iter().collect());
        let line = rpc::request(n, &m, params.clone());
        prop_assert_eq!(line.last(), Some(&b'\n'));
        let call = rpc::parse(line.trim_ascii()).map_err(|(_, e)| TestCaseError::fail(format!("{e:?}")))?;
        prop_assert_eq!(call.id, Some(json!(n)));
        prop_assert_eq!(call.method, m);
        // (As JSON text means it: serde_json's parser may round a float's last digit.)
        let meant: Value = serde_json::from_str(&params.to_string()).expect("JSON");
        prop_assert_eq!(call.params, meant);
    }
}

/// A running host on a simulated network, and a runtime that drives it.
fn host(rt: &tokio::runtime::Runtime, dir: &std::path::Path) -> Host {
    rt.block_on(async {
        let net = SimNetwork::new(1);
        let home = Home::new(dir.join("alice"));
        let me = home
            .create_identity("alice")
            .expect("identity")
            .into_local();
        let t = Arc::new(net.join(me.peer()));
        let h = Host::builder(home, me)
            .storage(Arc::new(MemoryStorage::new()))
            .transport(t)
            .build()
            .expect("host");
        h.start();
        h
    })
}

/// Sends `lines` on one connection to `serve`, then a ping; checks every answer.
async fn serve_lines(host: &Host, lines: &[Vec<u8>]) -> Result<(), TestCaseError> {
    let (client, server) = tokio::io::duplex(1 << 16);
    let (sr, sw) = tokio::io::split(server);
    let h = host.clone();
    let task =
        tokio::spawn(async move { rpc::serve(BufReader::new(sr), sw, h, &NoExtension).await });
    let (read, mut write) = tokio::io::split(client);
    let mut read = BufReader::new(read);
    // What each line must be answered with: (id, the code of a malformed line).
    let mut expected: Vec<(Value, Option<i64>, Option<String>)> = Vec::new();
    for l in lines {
        match rpc::parse(l.trim_ascii()) {
            Err((id, e)) => expected.push((id, Some(e.code), None)),
            Ok(call) => {
                if let Some(id) = call.id {
                    expected.push((id, None, Some(call.method)));
                }
            }
        }
    }
    let writer = {
        let mut all: Vec<u8> = Vec::new();
        for l in lines {
            all.extend(l);
            all.push(b'\n');
        }
        all.extend(rpc::request(424242, "ping", Value::Null));
        tokio::spawn(async move { write.write_all(&all).await.map(|_| write) })
    };
    for (id, code, method) in &expected {
        let mut line = String::new();
        tokio::time::timeout(Duration::from_secs(20), read.read_line(&mut line))
            .await
            .map_err(|_| TestCaseError::fail(format!("no answer for id {id} ({method:?})")))?
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let got = check_response(&line, id)?;
        if let Some(code) = code {
            prop_assert_eq!(got, Some(*code), "{}", line);
        }
        if let Some(m) = method {
            if !rpc::METHODS.contains(&m.as_str()) {
                prop_assert_eq!(got, Some(codes::METHOD_NOT_FOUND), "{}", line);
            }
        }
    }
    // The connection is still served: the ping after all that is answered.
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(20), read.read_line(&mut line))
        .await
        .map_err(|_| TestCaseError::fail("the final ping got no answer"))?
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(check_response(&line, &json!(424242))?, None, "{}", line);
    let v: Value = serde_json::from_str(&line).expect("JSON");
    prop_assert_eq!(&v["result"]["device"], &json!(host.peer().device));
    let mut write = writer
        .await
        .map_err(|e| TestCaseError::fail(e.to_string()))?
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    write
        .shutdown()
        .await
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    drop(write);
    drop(read);
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .map_err(|_| TestCaseError::fail("serve did not end when the client hung up"))?
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    Ok(())
}

/// Any sequence of lines on one connection: answered in order, typed, connection kept.
#[test]
fn serve_answers_any_lines_in_order_and_keeps_the_connection() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let host = host(&rt, dir.path());
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 512,
        ..ProptestConfig::default()
    });
    let result = runner.run(&proptest::collection::vec(line(), 0..12), |lines| {
        rt.block_on(serve_lines(&host, &lines))
    });
    rt.block_on(async { host.shutdown() });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// JSON-RPC 2.0 (§4.1): a notification is a request *without* an `id` member; `"id": null`
/// is a request (discouraged, but it must be answered). `rpc::parse` reads `"id": null` as
/// no id (serde's `Option<Value>` maps null to `None`), so such a request goes unanswered.
#[test]
fn a_request_with_a_null_id_is_answered() {
    let call = rpc::parse(br#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#).expect("a call");
    assert_eq!(call.id, Some(Value::Null));
}
