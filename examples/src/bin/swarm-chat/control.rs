//! The control socket of a running `swarm-chat serve`: `<home>/control.sock`, a Unix socket
//! speaking line-delimited JSON, one [`Request`] per line answered by one [`Response`] line.
//!
//! ```text
//! → {"op":"run","args":["send","<conv>","hello"],"json":true,"cwd":"/home/me"}
//! ← {"status":"ok","stdout":"{\"commit\":\"…\"}","notes":[]}
//! → {"op":"ping"}
//! ← {"status":"pong","device":"…","listen":"127.0.0.1:4433"}
//! → not json
//! ← {"status":"error","error":{"kind":"bad_request","message":"…"}}
//! ```
//!
//! `run` carries a command line exactly as the user typed it: the server parses it with the
//! same parser and runs the same code on its own storage, so every command gives the same
//! answer with or without a server, and the server announces what it commits. A request line
//! is at most [`MAX_LINE`] bytes; anything malformed is answered with a typed error, never a
//! panic. A socket file left by a server that died is detected (nobody accepts on it): the
//! client then works on storage directly, and the next server replaces the file.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use serde::{Deserialize, Serialize};
use swarm_api::id::DeviceId;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};

/// The socket's file name in the home.
pub const SOCKET: &str = "control.sock";
/// The longest request line accepted.
pub const MAX_LINE: usize = 1 << 20;
/// How long a client waits for an answer (a join may clone a long history).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(600);

/// A request to the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Run a command line (the arguments after the program name).
    Run {
        /// The arguments.
        args: Vec<String>,
        /// Whether the client wants JSON output.
        json: bool,
        /// The client's working directory (relative paths in the command are relative to it).
        cwd: PathBuf,
    },
    /// Is a server there, and who is it?
    Ping,
}

/// The server's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Response {
    /// The command succeeded.
    Ok {
        /// What it printed on stdout.
        stdout: String,
        /// Remarks for stderr (e.g. "invitation sent").
        #[serde(default)]
        notes: Vec<String>,
    },
    /// The answer to [`Request::Ping`].
    Pong {
        /// The server's device.
        device: DeviceId,
        /// Where it listens.
        listen: SocketAddr,
    },
    /// The request failed.
    Error {
        /// Why.
        error: ControlError,
    },
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "kind", content = "message", rename_all = "snake_case")]
pub enum ControlError {
    /// The line is not a request (not JSON, unknown op, too long).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The command line does not parse.
    #[error("{0}")]
    Usage(String),
    /// The command is not run by a server (e.g. `serve`, `id new`): run it without one.
    #[error("not run through the server: {0}")]
    NotServed(String),
    /// The command ran and failed (the same message as without a server).
    #[error("{0}")]
    Failed(String),
}

/// Parses one request line; every failure is a [`ControlError::BadRequest`].
pub fn parse_request(line: &[u8]) -> Result<Request, ControlError> {
    if line.len() > MAX_LINE {
        return Err(ControlError::BadRequest(format!(
            "request longer than {MAX_LINE} bytes"
        )));
    }
    serde_json::from_slice(line).map_err(|e| ControlError::BadRequest(e.to_string()))
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising these plain enums cannot fail; an empty line would be answered as a bad
    // request rather than lost.
    let mut line = serde_json::to_vec(value).unwrap_or_default();
    line.push(b'\n');
    line
}

/// The socket path of `home`.
pub fn socket_path(home: &Path) -> PathBuf {
    home.join(SOCKET)
}

/// Connects to the server of `home`, if one runs. `None` when there is no socket file or a
/// stale one (nobody accepts on it).
pub fn connect(home: &Path) -> Result<Option<UnixStream>> {
    let path = socket_path(home);
    if !path.exists() {
        return Ok(None);
    }
    match UnixStream::connect(&path) {
        Ok(s) => Ok(Some(s)),
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

/// Sends one request and reads its answer.
pub fn call(stream: &mut UnixStream, request: &Request) -> Result<Response> {
    stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    stream
        .write_all(&encode(request))
        .context("cannot write to the control socket")?;
    let mut line = Vec::new();
    BufReader::new(stream.try_clone()?)
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut line)
        .context("no answer on the control socket")?;
    if line.is_empty() {
        bail!("the server closed the control socket without answering");
    }
    serde_json::from_slice(&line).context("the server's answer is not a response")
}

/// Runs this process's command line through the server on `stream` and prints its output
/// as if the command had run here.
pub fn forward(mut stream: UnixStream, json: bool) -> Result<()> {
    let args = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let cwd = std::env::current_dir().unwrap_or_default();
    match call(&mut stream, &Request::Run { args, json, cwd })? {
        Response::Ok { stdout, notes } => {
            print!("{stdout}");
            for n in notes {
                eprintln!("swarm-chat: {n}");
            }
            Ok(())
        }
        Response::Error {
            error: ControlError::Failed(m),
        } => Err(anyhow!(m)),
        Response::Error { error } => Err(anyhow!(error)),
        Response::Pong { .. } => bail!("the server answered a command with a pong"),
    }
}

/// Binds the control socket of `home`, replacing a stale socket file; refuses if another
/// server answers on it.
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
    tokio::net::UnixListener::bind(&path)
        .with_context(|| format!("cannot listen on {}", path.display()))
}

/// Answers the requests of one client connection, one line at a time, until it hangs up.
pub async fn serve_client<F, Fut>(stream: tokio::net::UnixStream, handle: F)
where
    F: Fn(Request) -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    let (read, mut write) = stream.into_split();
    let mut read = tokio::io::BufReader::new(read);
    loop {
        let mut line = Vec::new();
        let n = match (&mut read)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .await
        {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(target: "swarm_chat::control", error = %e, "control client failed");
                return;
            }
        };
        if n == 0 {
            return;
        }
        let too_long = line.len() > MAX_LINE;
        let response = match parse_request(line.trim_ascii()) {
            Ok(request) => handle(request).await,
            Err(error) => Response::Error { error },
        };
        if write.write_all(&encode(&response)).await.is_err() || too_long {
            // The rest of an over-long line is not read: the connection is closed.
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_lines_are_typed_errors() {
        for bad in [
            &b"not json"[..],
            b"{}",
            b"{\"op\":\"launch\"}",
            b"{\"op\":\"run\",\"args\":\"send\"}",
            b"\xff\xfe",
            b"[1,2]",
        ] {
            assert!(
                matches!(parse_request(bad), Err(ControlError::BadRequest(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = vec![b' '; MAX_LINE + 1];
        assert!(matches!(
            parse_request(&long),
            Err(ControlError::BadRequest(m)) if m.contains("longer")
        ));
        assert_eq!(parse_request(b"{\"op\":\"ping\"}"), Ok(Request::Ping));
    }

    #[test]
    fn responses_round_trip() {
        for r in [
            Response::Ok {
                stdout: "x".into(),
                notes: vec!["n".into()],
            },
            Response::Error {
                error: ControlError::Failed("nope".into()),
            },
        ] {
            let line = encode(&r);
            assert_eq!(line.last(), Some(&b'\n'));
            assert_eq!(
                serde_json::from_slice::<Response>(&line).expect("decode"),
                r
            );
        }
    }

    #[tokio::test]
    async fn a_server_answers_garbage_with_an_error_and_keeps_serving() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A stale socket file (its listener is gone) is replaced.
        drop(std::os::unix::net::UnixListener::bind(socket_path(dir.path())).expect("bind"));
        assert!(connect(dir.path()).expect("connect").is_none(), "stale");
        let listener = bind(dir.path()).expect("bind over the stale file");
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve_client(stream, |_| async {
                    Response::Ok {
                        stdout: "pong".into(),
                        notes: vec![],
                    }
                }));
            }
        });
        let path = dir.path().to_path_buf();
        let answers = tokio::task::spawn_blocking(move || {
            let mut s = connect(&path).expect("connect").expect("a server");
            let mut raw = s.try_clone().expect("clone");
            raw.write_all(b"garbage\n").expect("write");
            let mut reader = BufReader::new(s.try_clone().expect("clone"));
            let mut line = String::new();
            reader.read_line(&mut line).expect("read");
            let first: Response = serde_json::from_str(&line).expect("a response");
            let second = call(&mut s, &Request::Ping).expect("still serving");
            (first, second)
        })
        .await
        .expect("client");
        assert!(matches!(
            answers.0,
            Response::Error {
                error: ControlError::BadRequest(_)
            }
        ));
        assert!(matches!(answers.1, Response::Ok { .. }));
        assert!(
            bind(dir.path()).is_err(),
            "a second server on a live socket is refused"
        );
        server.abort();
    }
}
