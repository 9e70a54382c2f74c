//! Plugins vs native rules: the cost of validating one commit (the same commit, the same
//! engine path, only the rule differs), and the first load of a plugin in a process with and
//! without wasmtime's on-disk compile cache (and a second load from the host's memory).
//!
//! `cargo bench -p swarm-plugins`

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;

use common::{plugin_engine, W};
use criterion::{criterion_group, criterion_main, Criterion};
use swarm_api::body::Mode;
use swarm_api::testing::Person;
use swarm_api::validate::{Engine, Limits};
use swarm_plugins::{builtin, Host, HostConfig};

fn per_commit(c: &mut Criterion) {
    let alice = Person::new("alice");
    let host = Host::new().expect("host");
    let plugins = plugin_engine(&host);
    let native = Arc::new(Engine::new(Limits::default()));
    let w = W::new(&alice, Mode::InvitesOnly, native.clone());
    let text = w
        .send(&alice, r#"{"body":"helo","type":"text/plain"}"#)
        .expect("text");
    let cases = [
        (
            "call-history",
            r#"{"duration":"1200","to":"x","type":"application/call-history+json"}"#.to_string(),
        ),
        (
            "edit",
            format!(r#"{{"body":"hello","edit":"{text}","type":"application/edited-message"}}"#),
        ),
    ];
    let mut g = c.benchmark_group("validate-one-commit");
    for (name, msg) in &cases {
        let d = w.draft(&alice, msg);
        assert!(w.verdict(&native, &d).is_ok() && w.verdict(&plugins, &d).is_ok());
        g.bench_function(format!("{name}/native"), |b| {
            b.iter(|| w.verdict(&native, &d))
        });
        g.bench_function(format!("{name}/plugin"), |b| {
            b.iter(|| w.verdict(&plugins, &d))
        });
    }
    g.finish();
}

fn first_load(c: &mut Criterion) {
    let mut g = c.benchmark_group("first-load-polls");
    g.sample_size(10);
    g.bench_function("no-cache", |b| {
        b.iter(|| {
            Host::new()
                .expect("host")
                .load("polls", builtin::POLLS)
                .expect("load")
        })
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let config = HostConfig {
        cache_dir: Some(dir.path().to_path_buf()),
        ..HostConfig::default()
    };
    Host::with_config(config.clone())
        .expect("host")
        .load("polls", builtin::POLLS)
        .expect("warm the cache");
    g.bench_function("disk-cache", |b| {
        b.iter(|| {
            Host::with_config(config.clone())
                .expect("host")
                .load("polls", builtin::POLLS)
                .expect("load")
        })
    });
    let host = Host::new().expect("host");
    host.load("polls", builtin::POLLS).expect("load");
    g.bench_function("same-host", |b| {
        b.iter(|| host.load("polls", builtin::POLLS).expect("load"))
    });
    g.finish();
}

criterion_group!(benches, per_commit, first_load);
criterion_main!(benches);
