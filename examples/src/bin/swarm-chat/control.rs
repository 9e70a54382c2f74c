//! The control socket of a running `swarm-chat serve`: `<home>/control.sock`, a Unix socket
//! (mode `0600`, in the `0700` home) speaking the library's line-delimited JSON-RPC 2.0
//! ([`swarm_api::host::rpc`]): one method per host method, `subscribe` for live events, and
//! this app's own methods ([`crate::methods`]: export, import...).
//!
//! ```text
//! → {"jsonrpc":"2.0","id":1,"method":"send","params":{"conv":"…","text":"hello"}}
//! ← {"jsonrpc":"2.0","id":1,"result":{"commit":"…","type":"text/plain"}}
//! ```
//!
//! The server checks who connects: a client whose uid (`SO_PEERCRED`) is not the owner of
//! the home is answered with an error and disconnected. Paths in parameters are absolute
//! (the client resolves them). A socket file left by a server that died is detected (nobody
//! accepts on it): the client then works on storage directly, and the next server replaces
//! the file.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use serde_json::Value;
use swarm_api::host::rpc::{self, codes, RpcError};

/// The socket's file name in the home.
pub const SOCKET: &str = "control.sock";
/// How long a client waits for an answer (a join may clone a long history).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(600);
/// The error code of a client refused for its uid.
pub const FORBIDDEN: i64 = -32010;

/// The socket path of `home`.
pub fn socket_path(home: &Path) -> PathBuf {
    home.join(SOCKET)
}

/// A connection to the server of a home.
pub struct Client {
    stream: UnixStream,
    next_id: u64,
}

/// What a call can fail with: the server's typed error, or the connection.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The server answered with an error.
    #[error(transparent)]
    Rpc(#[from] RpcError),
    /// The connection failed.
    #[error(transparent)]
    Io(#[from] anyhow::Error),
}

impl Client {
    /// Connects to the server of `home`, if one runs. `None` when there is no socket file or
    /// a stale one (nobody accepts on it).
    pub fn connect(home: &Path) -> Result<Option<Client>> {
        let path = socket_path(home);
        if !path.exists() {
            return Ok(None);
        }
        match UnixStream::connect(&path) {
            Ok(stream) => Ok(Some(Client { stream, next_id: 1 })),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e).with_context(|| format!("cannot connect to {}", path.display())),
        }
    }

    fn read_line(&mut self) -> Result<Value> {
        let mut line = Vec::new();
        BufReader::new(self.stream.try_clone()?)
            .take(rpc::MAX_LINE as u64 * 64)
            .read_until(b'\n', &mut line)
            .context("no answer on the control socket")?;
        if line.is_empty() {
            bail!("the server closed the control socket without answering");
        }
        serde_json::from_slice(&line).context("the server's answer is not JSON")
    }

    /// Calls `method` and waits for its answer.
    pub fn call(&mut self, method: &str, params: Value) -> Result<Value, CallError> {
        self.stream
            .set_read_timeout(Some(ANSWER_TIMEOUT))
            .context("control socket")?;
        let id = self.next_id;
        self.next_id += 1;
        self.stream
            .write_all(&rpc::request(id, method, params))
            .context("cannot write to the control socket")?;
        let mut answer = self.read_line()?;
        if let Some(e) = answer.get_mut("error") {
            let e: RpcError = serde_json::from_value(e.take())
                .context("the server's error is not an error object")?;
            return Err(CallError::Rpc(e));
        }
        match answer.get_mut("result") {
            Some(r) => Ok(r.take()),
            None => Err(CallError::Io(anyhow::anyhow!(
                "the server's answer has no result"
            ))),
        }
    }

    /// Subscribes to events (of `conv`, or all): the notifications follow on [`Events`].
    pub fn subscribe(mut self, conv: Option<String>) -> Result<Events, CallError> {
        let params = match conv {
            Some(c) => serde_json::json!({"conv": c}),
            None => serde_json::json!({}),
        };
        self.call("subscribe", params)?;
        self.stream
            .set_read_timeout(None)
            .context("control socket")?;
        Ok(Events {
            reader: BufReader::new(self.stream),
        })
    }
}

/// The notifications of a subscribed connection.
pub struct Events {
    reader: BufReader<UnixStream>,
}

impl Events {
    /// A handle that ends the subscription when shut down (from another thread).
    pub fn stopper(&self) -> Result<UnixStream> {
        self.reader.get_ref().try_clone().context("control socket")
    }

    /// The next notification; `None` when the server goes away.
    pub fn next(&mut self) -> Result<Option<Value>> {
        let mut line = Vec::new();
        let n = (&mut self.reader)
            .take(rpc::MAX_LINE as u64 * 64)
            .read_until(b'\n', &mut line)
            .context("the control socket failed")?;
        if n == 0 {
            return Ok(None);
        }
        Ok(Some(
            serde_json::from_slice(&line).context("an event is not JSON")?,
        ))
    }
}

/// Binds the control socket of `home` (mode `0600`), replacing a stale socket file; refuses if
/// another server answers on it.
pub fn bind(home: &Path) -> Result<tokio::net::UnixListener> {
    let path = socket_path(home);
    if path.exists() {
        match UnixStream::connect(&path) {
            Ok(_) => bail!(
                "a server already runs for this home (it answers on {})",
                path.display()
            ),
            Err(_) => {
                tracing::info!(target: "swarm_chat::control", path = %path.display(), "removing a stale control socket");
                std::fs::remove_file(&path)
                    .with_context(|| format!("cannot remove the stale {}", path.display()))?;
            }
        }
    }
    let listener = tokio::net::UnixListener::bind(&path)
        .with_context(|| format!("cannot listen on {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict {}", path.display()))?;
    Ok(listener)
}

/// The uid allowed to control `home`: its owner.
pub fn owner(home: &Path) -> Result<u32> {
    Ok(std::fs::metadata(home)
        .with_context(|| format!("cannot read {}", home.display()))?
        .uid())
}

/// Serves one client: refused (with a [`FORBIDDEN`] error) unless its uid is `owner`, else
/// JSON-RPC until it hangs up.
pub async fn serve_client(
    stream: tokio::net::UnixStream,
    owner: u32,
    host: swarm_api::host::Host,
    extension: &dyn rpc::Extension,
) {
    use tokio::io::AsyncWriteExt as _;
    let uid = stream.peer_cred().map(|c| c.uid());
    let (read, mut write) = stream.into_split();
    if uid.as_ref().ok() != Some(&owner) {
        tracing::warn!(target: "swarm_chat::control", ?uid, owner, "refused a control client of another user");
        let e = RpcError::new(
            FORBIDDEN,
            format!("this server is controlled by uid {owner} only (the owner of its home)"),
        );
        let _ = write.write_all(&rpc::response(&Value::Null, Err(e))).await;
        return;
    }
    rpc::serve(tokio::io::BufReader::new(read), write, host, extension).await;
}

/// The one-line message of a server error, as the command would have said it.
pub fn message(e: &RpcError) -> String {
    match e.code {
        codes::PARSE_ERROR | codes::INVALID_REQUEST | codes::METHOD_NOT_FOUND => {
            format!("the server does not understand this client ({})", e.message)
        }
        _ => e.message.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use swarm_api::host::{rpc::NoExtension, Home, Host};

    fn host(dir: &Path) -> Host {
        let home = Home::new(dir.join("home"));
        let id = match home.has_identity() {
            true => home.identity(),
            false => home.create_identity("Ann"),
        };
        let me = id.expect("identity").into_local();
        Host::builder(home, me)
            .storage(Arc::new(swarm_api::storage::MemoryStorage::new()))
            .build()
            .expect("host")
    }

    /// Serves the socket of `dir` with `owner` as the allowed uid; answers one ping.
    async fn ping_as(dir: &Path, owner: u32) -> Result<Value, CallError> {
        let listener = bind(dir).expect("bind");
        let mode = std::fs::metadata(socket_path(dir))
            .expect("socket")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "only the owner may connect");
        let h = host(dir);
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let h = h.clone();
                tokio::spawn(async move { serve_client(stream, owner, h, &NoExtension).await });
            }
        });
        let path = dir.to_path_buf();
        let answer = tokio::task::spawn_blocking(move || {
            let mut c = Client::connect(&path).expect("connect").expect("a server");
            let first = c.call("ping", serde_json::json!({}));
            let second = c.call("nope", serde_json::json!({}));
            (first, second)
        })
        .await
        .expect("client");
        server.abort();
        std::fs::remove_file(socket_path(dir)).expect("socket removed");
        if answer.0.is_ok() {
            // The same connection keeps serving: an unknown method is a typed error.
            assert!(
                matches!(&answer.1, Err(CallError::Rpc(e)) if e.code == codes::METHOD_NOT_FOUND)
            );
        }
        answer.0
    }

    #[tokio::test]
    async fn only_the_homes_owner_controls_the_server_and_the_socket_is_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let me = owner(dir.path()).expect("owner");
        let pong = ping_as(dir.path(), me).await.expect("the owner is served");
        assert!(pong["device"].is_string());
        match ping_as(dir.path(), me.wrapping_add(1)).await {
            Err(CallError::Rpc(e)) => {
                assert_eq!(e.code, FORBIDDEN);
                assert!(e.message.contains("controlled by uid"), "{e}");
            }
            other => panic!("a client of another uid must be refused, got {other:?}"),
        }
    }

    #[test]
    fn a_stale_socket_is_replaced_and_a_live_one_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        drop(std::os::unix::net::UnixListener::bind(socket_path(dir.path())).expect("bind"));
        assert!(
            Client::connect(dir.path()).expect("connect").is_none(),
            "stale"
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let _guard = rt.enter();
        let _live = bind(dir.path()).expect("bind over the stale file");
        assert!(bind(dir.path()).is_err(), "a second server is refused");
    }
}
