//! Shared fixtures of the plugin tests: a conversation in memory whose engine runs plugins, and
//! hostile plugins written by hand in WAT.
#![allow(dead_code)]

use std::sync::Arc;

use swarm_api::body::{Body, Mode};
use swarm_api::id::CommitId;
use swarm_api::repo::{create_conversation, Draft, Repo, RepoError};
use swarm_api::storage::{MemoryStorage, Storage};
use swarm_api::testing::Person;
use swarm_api::traits::MessageType;
use swarm_api::validate::{Engine, Limits, Violation};
use swarm_plugins::{builtin, Host};

pub const T: i64 = 1_800_000_000;

/// A conversation in memory validated by `engine`.
pub struct W {
    pub st: MemoryStorage,
    pub conv: swarm_api::id::ConversationId,
    pub engine: Arc<Engine>,
}

/// An engine with these message types registered.
pub fn engine_with(types: Vec<Arc<dyn MessageType>>) -> Arc<Engine> {
    let mut e = Engine::new(Limits::default());
    for t in types {
        e.register(t);
    }
    Arc::new(e)
}

/// An engine running every built-in plugin.
pub fn plugin_engine(host: &Host) -> Arc<Engine> {
    let plugins = builtin::load_all(host).expect("the built-in plugins load");
    engine_with(
        plugins
            .into_iter()
            .map(|p| p as Arc<dyn MessageType>)
            .collect(),
    )
}

impl W {
    pub fn new(admin: &Person, mode: Mode, engine: Arc<Engine>) -> Self {
        let st = MemoryStorage::new();
        let conv = create_conversation(&st, &admin.signer(), mode, None, T).expect("created");
        Self { st, conv, engine }
    }
    pub fn repo(&self) -> Repo<'_> {
        Repo::open(&self.st, self.conv)
            .expect("open")
            .with_engine(self.engine.clone())
    }
    pub fn head(&self) -> CommitId {
        self.st.head(&self.conv).expect("head").expect("a head")
    }
    /// Appends a commit with this JSON message, validated.
    pub fn send(&self, who: &Person, json: &str) -> Result<CommitId, RepoError> {
        let body = Body::parse(json).expect("a JSON body");
        self.repo().append(&who.signer(), &body, &[], T)
    }
    /// A signed commit on the head with this message, not validated.
    pub fn draft(&self, who: &Person, msg: &str) -> Draft {
        self.repo()
            .draft(&who.signer(), &[self.head()], msg, &[], false, T)
            .expect("draft")
    }
    /// Receives `d`; on refusal checks that nothing was stored and returns the violation.
    pub fn receive(&self, d: Draft) -> Result<CommitId, Violation> {
        let before = self.head();
        match self.repo().receive(d.objects.clone(), d.id) {
            Ok(_) => Ok(d.id),
            Err(RepoError::Rejected(r)) => {
                assert_eq!(self.head(), before, "the head moved after a refusal");
                let stored = self.st.object(&self.conv, &d.id.object_id()).expect("read");
                assert!(stored.is_none(), "a refused commit was stored");
                Err(r.violation)
            }
            Err(e) => panic!("not a validation refusal: {e}"),
        }
    }
    /// Makes `who` a member (invite by `by`, then join).
    pub fn add_member(&self, by: &Person, who: &Person) {
        let repo = self.repo();
        let (b, ch) = swarm_api::ops::invite(who.account.uri());
        repo.append(&by.signer(), &b, &ch, T).expect("invite");
        let st = repo.state(&self.head()).expect("state");
        let (b, ch) = swarm_api::ops::join(&st, who.account.cert());
        repo.append(&who.signer(), &b, &ch, T).expect("join");
    }
}

/// Little-endian bytes of `n` as a WAT data string.
fn le(n: u32) -> String {
    n.to_le_bytes()
        .iter()
        .map(|b| format!("\\{b:02x}"))
        .collect()
}

/// The type the hostile plugins own.
pub const HOSTILE: &str = "application/x-hostile";

/// A core module implementing the world by hand: it owns `kind`; `validate` runs
/// `validate_body` (WAT instructions leaving the address of a `result<_, string>` on the
/// stack). Memory: data at 64..1024, answers at 1024+, a bump allocator from 4096.
pub fn hostile_module(kind: &str, validate_body: &str) -> Vec<u8> {
    let wat = format!(
        r#"(module
  (memory (export "memory") 1)
  (global $bump (mut i32) (i32.const 4096))
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
    (local $p i32)
    (local.set $p (i32.and (i32.add (global.get $bump) (i32.const 7)) (i32.const -8)))
    (global.set $bump (i32.add (local.get $p) (local.get 3)))
    (block $ok
      (br_if $ok (i32.le_u (global.get $bump) (i32.mul (memory.size) (i32.const 65536))))
      (br_if $ok (i32.ge_s (memory.grow (i32.add (i32.div_u (global.get $bump) (i32.const 65536)) (i32.const 1))) (i32.const 0)))
      unreachable)
    (local.get $p))
  (data (i32.const 64) "{kind}")
  (data (i32.const 128) "{p64}{klen}")
  (data (i32.const 256) "{p128}{one}")
  (func (export "types") (result i32) i32.const 256)
  (data (i32.const 512) "{p8}{zero}{p8}{zero}{p8}{zero}")
  (func (export "needs") (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
    i32.const 512)
  (func (export "validate") (param i32) (result i32)
    {validate_body})
  (func (export "summary") (param i32 i32) (result i32) i32.const 768)
)"#,
        p64 = le(64),
        klen = le(kind.len() as u32),
        p128 = le(128),
        one = le(1),
        p8 = le(8),
        zero = le(0),
    );
    wat::parse_str(&wat).expect("valid WAT")
}

/// Turns a core module into a component of the plugin world.
pub fn componentize(mut module: Vec<u8>) -> Vec<u8> {
    let mut resolve = wit_parser::Resolve::default();
    let (pkg, _) = resolve
        .push_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/wit"))
        .expect("the WIT package parses");
    let world = resolve
        .select_world(&[pkg], Some("message-type"))
        .expect("the world");
    wit_component::embed_component_metadata(
        &mut module,
        &resolve,
        world,
        wit_component::StringEncoding::UTF8,
    )
    .expect("metadata");
    wit_component::ComponentEncoder::default()
        .module(&module)
        .and_then(|e| e.validate(true).encode())
        .expect("a component")
}

/// A hand-written plugin owning `kind` whose `validate` runs `validate_body`.
pub fn hostile(kind: &str, validate_body: &str) -> Vec<u8> {
    componentize(hostile_module(kind, validate_body))
}

/// A draft's objects over a conversation's stored objects, nothing written.
pub struct Overlay<'a> {
    pub new: std::collections::HashMap<gix_hash::ObjectId, swarm_api::object::Object>,
    pub base: swarm_api::storage::ConversationObjects<'a, MemoryStorage>,
}

impl swarm_api::object::ObjectSource for Overlay<'_> {
    fn object(
        &self,
        id: &gix_hash::ObjectId,
    ) -> Result<Option<swarm_api::object::Object>, swarm_api::object::ObjectError> {
        match self.new.get(id) {
            Some(o) => Ok(Some(o.clone())),
            None => self.base.object(id),
        }
    }
}

impl W {
    /// `engine`'s verdict on `d` (a commit on the head), without storing anything.
    pub fn verdict(&self, engine: &Engine, d: &Draft) -> Result<(), Violation> {
        let src = Overlay {
            new: d.objects.iter().map(|o| (o.id(), o.clone())).collect(),
            base: swarm_api::storage::ConversationObjects {
                storage: &self.st,
                conv: self.conv,
            },
        };
        let known = |id: &CommitId| !src.new.contains_key(&id.object_id());
        engine
            .validate_branch(self.conv, &src, &known, &[d.id])
            .map(|_| ())
            .map_err(|r| r.violation)
    }
}
