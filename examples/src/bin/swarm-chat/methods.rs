//! The control API of `swarm-chat`: the library's JSON-RPC methods ([`swarm_api::host::rpc`])
//! plus this app's own, which work on storage alone (no identity needed):
//!
//! - `export {conv, dir}`: the conversation as a bare Git repository in `dir` (absolute);
//! - `import {dir}`: a conversation from a Git repository, validated whole first;
//! - `repo {conv}`: where the backend keeps the conversation's Git repository;
//! - `allowed_signers {conv}`: the `allowed_signers` lines of its devices, for `git log
//!   --show-signature`.
//!
//! The same methods run in a server ([`rpc::Extension`]) and, without one, in this process
//! (over a host with no transport), so every command answers the same either way.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{json, Value};
use swarm_api::commit::allowed_signers_line;
use swarm_api::host::rpc::{self, codes, params, Conv, RpcError};
use swarm_api::repo::{Repo, RepoError};
use swarm_api::storage::Storage;
use swarm_api::traits::BoxFuture;
use swarm_api::validate::Engine;
use swarm_api::ConversationId;

use crate::transfer;

/// This app's methods over one storage.
#[derive(Clone)]
pub struct Methods {
    pub storage: Arc<dyn Storage>,
    pub engine: Arc<Engine>,
}

fn failed(e: anyhow::Error) -> RpcError {
    RpcError::new(codes::FAILED, crate::one_line(&e))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Dir {
    #[serde(default)]
    conv: Option<ConversationId>,
    dir: PathBuf,
}

impl Methods {
    /// Whether `method` is one of these.
    pub fn has(method: &str) -> bool {
        matches!(method, "export" | "import" | "repo" | "allowed_signers")
    }

    fn repo(&self, conv: ConversationId) -> Result<Repo<'_>, RpcError> {
        Repo::open(&*self.storage, conv).map_err(|e| match e {
            RepoError::UnknownConversation(id) => RpcError::new(
                codes::NOT_FOUND,
                format!("unknown conversation {id} (see `swarm-chat conv list`)"),
            ),
            e => RpcError::new(codes::FAILED, e.to_string()),
        })
    }

    /// Runs one of these methods (blocking: storage work).
    pub fn call(&self, method: &str, p: Value) -> Result<Value, RpcError> {
        match method {
            "export" => {
                let p: Dir = params(p)?;
                let conv = p
                    .conv
                    .ok_or_else(|| RpcError::new(codes::INVALID_PARAMS, "missing field `conv`"))?;
                let dir = absolute(p.dir)?;
                let objects = transfer::export(&*self.storage, conv, &dir).map_err(failed)?;
                let head = self.storage.head(&conv).map_err(|e| failed(e.into()))?;
                Ok(json!({"conversation": conv, "head": head, "path": dir, "objects": objects}))
            }
            "import" => {
                let p: Dir = params(p)?;
                let dir = absolute(p.dir)?;
                let backend = self.storage.backend_name();
                Ok(
                    match transfer::import(&*self.storage, &self.engine, &dir).map_err(failed)? {
                        transfer::Imported::New {
                            conv,
                            head,
                            commits,
                            objects,
                        } => json!({"conversation": conv, "head": head, "commits": commits,
                                    "objects": objects, "backend": backend}),
                        transfer::Imported::AlreadyThere { conv, head } => {
                            json!({"conversation": conv, "head": head, "already_stored": true,
                                   "backend": backend})
                        }
                    },
                )
            }
            "repo" => {
                let Conv { conv } = params(p)?;
                self.repo(conv)?;
                let path = self.storage.location(&conv).ok_or_else(|| {
                    RpcError::new(
                        codes::FAILED,
                        format!(
                            "conversation {conv} has no Git repository in the {} backend \
                             (write one with `swarm-chat conv export {conv} DIR`)",
                            self.storage.backend_name()
                        ),
                    )
                })?;
                Ok(json!({"path": path}))
            }
            "allowed_signers" => {
                let Conv { conv } = params(p)?;
                let repo = self.repo(conv)?;
                let lines: Vec<String> = repo
                    .head()
                    .and_then(|h| repo.device_certs(&h))
                    .map_err(|e| RpcError::new(codes::FAILED, e.to_string()))?
                    .iter()
                    .map(|(id, cert)| allowed_signers_line(id, cert.public_key()))
                    .collect();
                Ok(json!({"allowed_signers": lines}))
            }
            other => Err(RpcError::new(
                codes::METHOD_NOT_FOUND,
                format!("unknown method {other:?}"),
            )),
        }
    }
}

/// Paths come from the client, already absolute: a server never resolves a path against its
/// own working directory.
fn absolute(dir: PathBuf) -> Result<PathBuf, RpcError> {
    if dir.is_absolute() {
        Ok(dir)
    } else {
        Err(RpcError::new(
            codes::INVALID_PARAMS,
            format!("{} is not an absolute path", dir.display()),
        ))
    }
}

impl rpc::Extension for Methods {
    fn call<'a>(
        &'a self,
        method: &'a str,
        params: Value,
    ) -> BoxFuture<'a, Option<Result<Value, RpcError>>> {
        Box::pin(async move {
            if !Methods::has(method) {
                return None;
            }
            let this = self.clone();
            let method = method.to_owned();
            Some(
                tokio::task::spawn_blocking(move || Methods::call(&this, &method, params))
                    .await
                    .unwrap_or_else(|e| Err(RpcError::new(codes::INTERNAL_ERROR, e.to_string()))),
            )
        })
    }
}
