//! What a plugin reads of the parent tree (`needs.files` → `file-info`): presence, blob id and
//! bytes up to the host's per-file limit, taken from the commit's parent, never the checkout.
//! The `file-probe` test plugin (`guests/file-probe`) allows a commit only if the file it
//! names contains the text it names.

mod common;

use std::sync::Arc;

use common::{engine_with, W};
use swarm_api::body::Mode;
use swarm_api::testing::Person;
use swarm_api::traits::MessageType;
use swarm_api::validate::Violation;
use swarm_plugins::{Host, HostConfig, PluginLimits};

const FILE_PROBE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/file-probe.wasm"));

fn probe(path: &str, contains: &str) -> String {
    serde_json::json!({"type": "application/x-file-probe+json", "path": path, "contains": contains})
        .to_string()
}

fn world(host: &Host) -> (Person, W) {
    let plugin = host.load("file-probe", FILE_PROBE).expect("loads");
    let alice = Person::new("alice");
    let w = W::new(
        &alice,
        Mode::InvitesOnly,
        engine_with(vec![Arc::new(plugin) as Arc<dyn MessageType>]),
    );
    // The conversation's profile: profile.vcf with the title.
    let (body, changes) = swarm_api::ops::profile(Some("Lunch on Friday"), None);
    w.repo()
        .append(&alice.signer(), &body, &changes, common::T)
        .expect("profile");
    (alice, w)
}

fn refused(v: Result<swarm_api::id::CommitId, Violation>, reason: &str) {
    match v {
        Err(Violation::Plugin { plugin, reason: r }) => {
            assert!(plugin.contains("file-probe"), "{plugin}");
            assert!(r.contains(reason), "{r}");
        }
        other => panic!("expected a refusal by file-probe saying {reason:?}, got {other:?}"),
    }
}

#[test]
fn a_plugin_reads_the_files_it_asks_for_in_the_parent_tree() {
    let host = Host::new().expect("host");
    let (alice, w) = world(&host);
    // The bytes of profile.vcf and of alice's admin certificate reach the plugin.
    w.receive(w.draft(&alice, &probe("profile.vcf", "Lunch on Friday")))
        .expect("the title is in profile.vcf");
    let cert = swarm_api::layout::admin_cert(&alice.account.uri());
    w.receive(w.draft(&alice, &probe(&cert, "BEGIN CERTIFICATE")))
        .expect("the admin certificate is a PEM file");
    // What is not there is refused, with the plugin's reason; nothing is stored.
    refused(
        w.receive(w.draft(&alice, &probe("profile.vcf", "Dinner"))),
        "does not contain \"Dinner\"",
    );
    refused(
        w.receive(w.draft(&alice, &probe("members/nobody.crt", "x"))),
        "is not in the parent tree",
    );
}

#[test]
fn files_over_the_hosts_limit_are_named_but_not_read() {
    let host = Host::with_config(HostConfig {
        limits: PluginLimits {
            max_file_bytes: 16,
            ..PluginLimits::default()
        },
        ..HostConfig::default()
    })
    .expect("host");
    let (alice, w) = world(&host);
    refused(
        w.receive(w.draft(&alice, &probe("profile.vcf", "Lunch"))),
        "larger than the host lets a plugin read",
    );
}
