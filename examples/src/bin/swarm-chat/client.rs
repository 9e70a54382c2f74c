//! The commands that act on conversations, requests and peers: each becomes one control-API
//! method call ([`request`]), answered by the running server of the home if there is one, else
//! in this process over the home's storage ([`App::local`]: the same methods, a host with no
//! transport), and printed from the answer ([`App::render`]). So a command answers the same
//! with or without a server, and the only code that knows what a command does is the
//! library's (and [`crate::methods`] for this app's own).

use anyhow::{anyhow, Context as _, Result};
use serde_json::{json, Value};
use swarm_api::body::VoteAction;
use swarm_api::host::rpc::{self, codes, RpcError};
use swarm_api::host::{Host, Reader};
use swarm_api::id::{DeviceId, Target};

use crate::control::{self, CallError};
use crate::methods::Methods;
use crate::{
    parse_conv, parse_uri, plugins, reader, App, Command, ConvCommand, DhtCommand, PeerCommand,
};
use swarm_api::view::Entry;

fn absolute(p: &std::path::Path) -> Result<std::path::PathBuf> {
    std::path::absolute(p).with_context(|| format!("cannot resolve {}", p.display()))
}

fn device(s: &str) -> Result<DeviceId> {
    s.parse()
        .map_err(|e| anyhow!("invalid device id {s:?}: {e}"))
}

fn vote(conv: &str, target: Target, action: &str) -> Result<(&'static str, Value)> {
    Ok((
        "vote",
        json!({"conv": parse_conv(conv)?, "target": target, "action": action}),
    ))
}

/// The method and parameters of a served command (ids checked here, with the usual
/// messages; paths made absolute).
pub fn request(command: &Command, json_out: bool) -> Result<(&'static str, Value)> {
    Ok(match command {
        Command::Conv(c) => match c {
            ConvCommand::Create { mode, invite } => {
                let invite = invite.as_deref().map(parse_uri).transpose()?;
                ("create", json!({"mode": mode.name(), "invite": invite}))
            }
            ConvCommand::List => ("conversations", json!({})),
            ConvCommand::Export { conv, dir } => (
                "export",
                json!({"conv": parse_conv(conv)?, "dir": absolute(dir)?}),
            ),
            ConvCommand::Import { dir } => ("import", json!({"dir": absolute(dir)?})),
            ConvCommand::Repo { conv } => ("repo", json!({"conv": parse_conv(conv)?})),
            ConvCommand::AllowedSigners { conv } => {
                ("allowed_signers", json!({"conv": parse_conv(conv)?}))
            }
            ConvCommand::Members { conv } => ("members", json!({"conv": parse_conv(conv)?})),
            ConvCommand::Invite { conv, uri } => (
                "invite",
                json!({"conv": parse_conv(conv)?, "uri": parse_uri(uri)?}),
            ),
            ConvCommand::Ban { conv, uri } => vote(conv, parse_uri(uri)?.into(), "ban")?,
            ConvCommand::Unban { conv, uri } => vote(conv, parse_uri(uri)?.into(), "unban")?,
            ConvCommand::Promote { conv, uri } => vote(conv, parse_uri(uri)?.into(), "promote")?,
            ConvCommand::BanDevice { conv, device: d } => {
                vote(conv, Target::Device(device(d)?), "ban")?
            }
            ConvCommand::Join { conv, peer } => {
                ("join", json!({"conv": parse_conv(conv)?, "peer": peer}))
            }
            ConvCommand::Decline { conv } => ("decline", json!({"conv": parse_conv(conv)?})),
            ConvCommand::Info { conv } => ("info", json!({"conv": parse_conv(conv)?})),
            ConvCommand::Leave { conv } => ("leave", json!({"conv": parse_conv(conv)?})),
            ConvCommand::Profile {
                conv,
                title,
                description,
            } => {
                if title.is_none() && description.is_none() {
                    return Err(anyhow!(
                        "nothing to change: pass --title and/or --description"
                    ));
                }
                (
                    "profile",
                    json!({"conv": parse_conv(conv)?, "title": title, "description": description}),
                )
            }
        },
        Command::Send { conv, text, kind } => match kind {
            None => ("send", json!({"conv": parse_conv(conv)?, "text": text})),
            Some(kind) => (
                "send_body",
                json!({"conv": parse_conv(conv)?,
                       "body": plugins::custom_body(kind, text)?.to_object()}),
            ),
        },
        // The machine form for `--json`, the chat as it reads otherwise.
        Command::Log {
            conv: Some(conv),
            limit,
            ..
        } => (
            if json_out { "log" } else { "timeline" },
            json!({"conv": parse_conv(conv)?, "limit": limit}),
        ),
        Command::Requests => ("requests", json!({})),
        Command::Peer(p) => match p {
            PeerCommand::Add { who, addr } => {
                let who: Target = who.parse().map_err(|e| {
                    anyhow!("invalid device id or account URI {who:?}: {e} (64 or 40 hex chars)")
                })?;
                let addr: std::net::SocketAddr = addr
                    .parse()
                    .map_err(|e| anyhow!("invalid address {addr:?}: {e} (e.g. 127.0.0.1:4433)"))?;
                ("add_peer", json!({"who": who, "addr": addr}))
            }
            PeerCommand::List => ("peers", json!({})),
            PeerCommand::Block { device: d } => {
                ("block", json!({"device": device(d)?, "blocked": true}))
            }
            PeerCommand::Unblock { device: d } => {
                ("block", json!({"device": device(d)?, "blocked": false}))
            }
        },
        Command::Dht(DhtCommand::Status) => ("discovery_status", json!({})),
        _ => return Err(anyhow!("this command does not go through the control API")),
    })
}

fn rpc_error(e: RpcError) -> anyhow::Error {
    match e.code {
        codes::NOT_FOUND
            if e.message.starts_with("unknown conversation")
                && !e.message.contains("conv list") =>
        {
            anyhow!("{} (see `swarm-chat conv list`)", e.message)
        }
        _ => anyhow!(control::message(&e)),
    }
}

fn lines<'a>(items: impl IntoIterator<Item = String> + 'a) -> String {
    items.into_iter().collect::<Vec<_>>().join("\n")
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

impl App {
    /// Runs a served command: through the home's server if one runs, else here.
    pub(crate) fn served(&self, command: Command) -> Result<()> {
        let (method, params) = request(&command, self.json)?;
        let (value, via_server) = match control::Client::connect(&self.home.dir)? {
            Some(mut client) => {
                // A join may clone: its progress is shown while the call runs.
                let progress = match &command {
                    Command::Conv(ConvCommand::Join { conv, .. }) => {
                        Progress::start(&self.home.dir, conv)
                    }
                    _ => None,
                };
                let answer = client.call(method, params);
                drop(progress);
                match answer {
                    Ok(v) => (v, true),
                    Err(CallError::Rpc(e)) => return Err(rpc_error(e)),
                    Err(CallError::Io(e)) => return Err(e),
                }
            }
            None => (self.local(&command, method, params)?, false),
        };
        self.render(&command, &value, via_server)
    }

    /// Runs a method in this process, on the home's storage.
    fn local(&self, command: &Command, method: &str, params: Value) -> Result<Value> {
        let storage = self.storage()?;
        let methods = Methods {
            storage: storage.clone(),
            engine: self.engine()?,
        };
        if Methods::has(method) {
            return methods.call(method, params).map_err(rpc_error);
        }
        match command {
            Command::Dht(_) => {
                return Err(anyhow!(
                    "the DHT runs inside `swarm-chat serve`: start it for this home first"
                ))
            }
            Command::Conv(ConvCommand::Join { conv, peer }) => {
                if peer.is_some() {
                    return Err(anyhow!(
                        "--peer needs a running `swarm-chat serve` for this home: it clones \
                         the conversation over the network"
                    ));
                }
                let id = parse_conv(conv)?;
                if storage.head(&id)?.is_none() {
                    return Err(anyhow!(
                        "conversation {id} is not stored here yet: start `swarm-chat serve` \
                         so that `conv join` clones it from the inviter"
                    ));
                }
            }
            _ => {}
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        let engine = self.engine()?;
        let reader = Reader::new(storage.clone(), engine.clone(), self.home.lib());
        let result = runtime.block_on(async {
            // Reading needs no identity; everything else signs.
            if let Some(r) = rpc::read(&reader, method, params.clone()).await {
                return Ok(r);
            }
            let me = self.home.identity()?.into_local();
            let host = Host::builder(self.home.lib(), me)
                .storage(storage)
                .engine(engine)
                .build()?;
            Ok::<_, anyhow::Error>(rpc::call(&host, method, params).await)
        })?;
        result.map_err(rpc_error)
    }

    /// Prints a command's answer: `--json` as it came, else the human form.
    fn render(&self, command: &Command, v: &Value, via_server: bool) -> Result<()> {
        let commit = || str_of(&v["commit"]).to_owned();
        match command {
            Command::Conv(c) => match c {
                ConvCommand::Create { .. } => {
                    self.out(v.clone(), || str_of(&v["conversation"]).to_owned())
                }
                ConvCommand::List => self.out(v.clone(), || {
                    lines(
                        v["conversations"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|c| str_of(c).to_owned()),
                    )
                }),
                ConvCommand::Export { .. } | ConvCommand::Repo { .. } => {
                    self.out(v.clone(), || str_of(&v["path"]).to_owned())
                }
                ConvCommand::Import { .. } => self.out(v.clone(), || {
                    let conv = str_of(&v["conversation"]);
                    if v["already_stored"] == json!(true) {
                        format!("{conv} (already stored)")
                    } else {
                        conv.to_owned()
                    }
                }),
                ConvCommand::AllowedSigners { .. } => self.out(v.clone(), || {
                    lines(
                        v["allowed_signers"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|l| str_of(l).to_owned()),
                    )
                }),
                ConvCommand::Members { .. } => self.out(v.clone(), || {
                    lines(
                        v["members"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|m| format!("{} {}", str_of(&m["uri"]), str_of(&m["role"]))),
                    )
                }),
                ConvCommand::Invite { uri, .. } => {
                    let mut printed = v.clone();
                    if let Some(o) = printed.as_object_mut() {
                        o.remove("sent");
                        o.remove("not_sent");
                    }
                    self.out(printed, commit);
                    if via_server {
                        match v["not_sent"].as_str() {
                            None => eprintln!("swarm-chat: invitation sent to {uri}"),
                            Some(why) => eprintln!(
                                "swarm-chat: invitation not delivered now ({why}); it is sent \
                                 when a device of {uri} connects"
                            ),
                        }
                    }
                }
                ConvCommand::Ban { .. }
                | ConvCommand::Unban { .. }
                | ConvCommand::Promote { .. }
                | ConvCommand::BanDevice { .. } => {
                    let dir = match c {
                        ConvCommand::Unban { .. } => VoteAction::Unban,
                        ConvCommand::Promote { .. } => VoteAction::Promote,
                        _ => VoteAction::Ban,
                    };
                    let dir = swarm_api::layout::VoteDir::from(dir).dir();
                    let vote = str_of(&v["vote"]);
                    self.out(v.clone(), || match v["applied"].as_str() {
                        Some(c) => format!("vote {vote}\n{dir} {c}"),
                        None => format!("vote {vote} (waiting for more admins)"),
                    })
                }
                ConvCommand::Join { .. }
                | ConvCommand::Leave { .. }
                | ConvCommand::Profile { .. } => self.out(v.clone(), commit),
                ConvCommand::Decline { .. } => {
                    self.out(v.clone(), || format!("declined {}", str_of(&v["declined"])))
                }
                ConvCommand::Info { .. } => self.out(v.clone(), || crate::info::info_text(v)),
            },
            Command::Send { .. } => self.out(v.clone(), commit),
            Command::Log { verbose, .. } => self.out(v.clone(), || {
                lines(v["messages"].as_array().into_iter().flatten().map(|e| {
                    match serde_json::from_value::<Entry>(e.clone()) {
                        Ok(e) => {
                            let time = crate::local_time(e.time);
                            let prefix = match verbose {
                                true => format!("{}  {time}", e.id),
                                false => time,
                            };
                            reader::entry_line_with(&e, &prefix)
                        }
                        Err(_) => e.to_string(),
                    }
                }))
            }),
            Command::Requests => self.out(v.clone(), || {
                lines(v["requests"].as_array().into_iter().flatten().map(|q| {
                    format!(
                        "{} from {} received {} {}",
                        str_of(&q["id"]),
                        str_of(&q["from"]),
                        q["received"]
                            .as_i64()
                            .map(crate::local_time)
                            .unwrap_or_default(),
                        str_of(&q["title"])
                    )
                    .trim_end()
                    .to_owned()
                }))
            }),
            Command::Peer(p) => match p {
                PeerCommand::Add { .. } => self.out(v.clone(), || {
                    format!("{} {}", str_of(&v["peer"]), str_of(&v["addr"]))
                }),
                PeerCommand::List => self.out(v.clone(), || {
                    let mut out: Vec<String> = v["peers"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|e| {
                            let who = str_of(&e["who"]);
                            let kind = if who.len() == 40 { "account" } else { "device" };
                            format!(
                                "{kind} {who} {} {}",
                                str_of(&e["addr"]),
                                str_of(&e["source"])
                            )
                        })
                        .collect();
                    out.extend(
                        v["blocked"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|d| format!("blocked {}", str_of(d))),
                    );
                    lines(out)
                }),
                PeerCommand::Block { .. } | PeerCommand::Unblock { .. } => {
                    self.out(v.clone(), || {
                        let verb = if v["blocked"] == json!(true) {
                            "blocked"
                        } else {
                            "unblocked"
                        };
                        format!("{verb} {}", str_of(&v["device"]))
                    })
                }
            },
            Command::Dht(_) => {
                if self.json {
                    self.out(v.clone(), String::new);
                } else {
                    print!("{}", crate::dht::status_text(v));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// `swarm-chat watch [CONV]`: the server's events, one line each, until interrupted or
    /// the server stops.
    pub(crate) fn watch(&self, conv: Option<String>) -> Result<()> {
        let conv = conv.as_deref().map(parse_conv).transpose()?;
        let Some(client) = control::Client::connect(&self.home.dir)? else {
            return Err(anyhow!(
                "`watch` shows what a running node does: start `swarm-chat serve` for this \
                 home first"
            ));
        };
        let mut events = match client.subscribe(conv.map(|c| c.to_string())) {
            Ok(e) => e,
            Err(CallError::Rpc(e)) => return Err(rpc_error(e)),
            Err(CallError::Io(e)) => return Err(e),
        };
        eprintln!("swarm-chat: watching (interrupt to stop)");
        while let Some(note) = events.next()? {
            use std::io::Write as _;
            let line = match note["method"].as_str() {
                Some("event") if self.json => note["params"].to_string(),
                Some("event") => event_line(&note["params"]),
                Some("lagged") => format!(
                    "({} events missed: this client was too slow)",
                    note["params"]["missed"]
                ),
                _ => continue,
            };
            // A closed stdout (`watch | head`) ends the watch.
            let mut out = std::io::stdout().lock();
            if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                return Ok(());
            }
        }
        Ok(())
    }
}

fn short(v: &Value) -> &str {
    let s = str_of(v);
    s.get(..8).unwrap_or(s)
}

/// One event as a line a person reads.
fn event_line(e: &Value) -> String {
    let conv = short(&e["conv"]);
    match str_of(&e["event"]) {
        "message_received" => {
            let what = match (str_of(&e["type"]), e["body"]["body"].as_str()) {
                ("text/plain", Some(text)) => text.to_owned(),
                (kind, _) => format!("[{kind}]"),
            };
            let who = e["name"]
                .as_str()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| short(&e["device"]));
            let time = e["time"]
                .as_i64()
                .map(crate::local_time)
                .unwrap_or_default();
            format!("{conv} {time}  {who}: {what}")
        }
        "member" => format!(
            "{conv} {} {}",
            str_of(&e["uri"]),
            match str_of(&e["action"]) {
                "add" => "was invited",
                "join" => "joined",
                "remove" => "left",
                "ban" => "was banned",
                "unban" => "was unbanned",
                "promote" => "was made an admin",
                other => other,
            }
        ),
        "invitation_received" => format!(
            "invitation to {} from {}{}",
            str_of(&e["conv"]),
            str_of(&e["from"]),
            e["title"]
                .as_str()
                .map(|t| format!(" ({t})"))
                .unwrap_or_default()
        ),
        "conversation_ready" => format!("{} cloned", str_of(&e["conv"])),
        "sync_started" => format!("{conv} syncing from {}", short(&e["peer"])),
        "sync_progress" => format!("{conv} {} objects received", e["objects"]),
        "sync_finished" => format!("{conv} synced from {}", short(&e["peer"])),
        "sync_failed" => format!(
            "{conv} sync from {} failed: {}",
            short(&e["peer"]),
            str_of(&e["reason"])
        ),
        "commit_refused" => format!(
            "{conv} refused commit {} from {} (rule {}): {}",
            short(&e["commit"]),
            short(&e["peer"]),
            str_of(&e["rule"]),
            str_of(&e["reason"])
        ),
        "peer_connected" => format!(
            "connected {} ({})",
            short(&e["device"]),
            str_of(&e["account"])
        ),
        "peer_disconnected" => format!("disconnected {}", short(&e["device"])),
        other => format!("{other} {e}"),
    }
}

/// A clone's progress, from the server's events of one conversation: a bar on a terminal,
/// plain lines on stderr otherwise. Ends when dropped.
struct Progress {
    stop: std::os::unix::net::UnixStream,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    /// Subscribes (before the call starts, so nothing is missed); `None` if that fails (the
    /// command runs without progress).
    fn start(home: &std::path::Path, conv: &str) -> Option<Progress> {
        let client = control::Client::connect(home).ok()??;
        let mut events = client.subscribe(Some(conv.to_owned())).ok()?;
        let stop = events.stopper().ok()?;
        let thread = std::thread::spawn(move || {
            use std::io::IsTerminal as _;
            let bar = std::io::stderr().is_terminal().then(|| {
                let bar = indicatif::ProgressBar::new_spinner();
                bar.set_style(
                    indicatif::ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
                );
                bar.enable_steady_tick(std::time::Duration::from_millis(120));
                bar
            });
            let say = |msg: String| match &bar {
                Some(b) => b.set_message(msg),
                None => eprintln!("swarm-chat: {msg}"),
            };
            while let Ok(Some(note)) = events.next() {
                let e = &note["params"];
                match str_of(&e["event"]) {
                    "sync_started" => say(format!("fetching from {}", short(&e["peer"]))),
                    "sync_progress" => say(format!("{} objects received", e["objects"])),
                    "conversation_ready" => say("cloned and validated".into()),
                    "sync_failed" => say(format!("failed: {}", str_of(&e["reason"]))),
                    "commit_refused" => say(format!(
                        "refused (rule {}): {}",
                        str_of(&e["rule"]),
                        str_of(&e["reason"])
                    )),
                    _ => {}
                }
            }
            if let Some(b) = bar {
                b.finish_and_clear();
            }
        });
        Some(Progress {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        // The server then sends what happened before and hangs up: every line is shown.
        let _ = self.stop.shutdown(std::net::Shutdown::Write);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
