//! `swarm-chat`: the reference command-line client of swarm.
//!
//! Every command takes `--home DIR` (default `$SWARM_HOME`, else the platform data dir; a
//! relative one is made absolute once, at start), `--json` (one JSON object on stdout, for
//! scripts) and `--backend git|sled` (where the home keeps its conversations; chosen once per
//! home and remembered). Errors are one line on stderr and a non-zero exit status.

mod client;
mod control;
mod dht;
mod home;
mod info;
mod methods;
mod plugins;
mod reader;
mod serve;
mod swarm_demo;
mod transfer;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use crate::home::{Backend, Home};
use anyhow::{anyhow, Context as _, Result};
use clap::{Parser, Subcommand};
use serde_json::{json, Value};
use swarm_api::body::{Body, Mode};
use swarm_api::id::CommitId;
use swarm_api::repo::FileChange;
use swarm_api::repo::{create_conversation, Repo};
use swarm_api::storage::Storage;
use swarm_api::validate::{Engine, State};
use swarm_api::{AccountUri, ConversationId};

#[derive(Parser)]
#[command(
    name = "swarm-chat",
    version,
    about = "Serverless group chat over signed Git histories"
)]
struct Cli {
    /// The app's home directory (identity and conversations).
    #[arg(long, global = true, env = "SWARM_HOME")]
    home: Option<PathBuf>,
    /// Print one JSON object on stdout instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// Where this home keeps its conversations (default git). Chosen by the first command
    /// that needs it and remembered in the home; another backend is refused afterwards.
    #[arg(long, global = true, value_enum)]
    backend: Option<Backend>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Identity: this account and this device.
    #[command(subcommand)]
    Id(IdCommand),
    /// Conversations.
    #[command(subcommand)]
    Conv(ConvCommand),
    /// Send a text message; prints the new commit id. With `--type T`, TEXT is the JSON
    /// object of a message of type T (a plugin's type), e.g.
    /// `send CONV --type application/poll+json '{"action":"open","question":"?","options":["a","b"]}'`.
    Send {
        /// The conversation id.
        conv: String,
        /// The message text (with --type: the JSON body).
        text: String,
        /// Send a message of this type; TEXT is then its JSON body.
        #[arg(long = "type", value_name = "T")]
        kind: Option<String>,
    },
    /// Message-type plugins (WebAssembly components).
    #[command(subcommand)]
    Plugin(plugins::PluginCommand),
    /// Show a conversation's messages in display order.
    ///
    /// With `--repo PATH`, reads any conversation repository on disk (ours or one written by
    /// Jami), without a home: it is validated first, then shown as a client shows it, edits
    /// applied to their message, reactions attached, replies after the message they answer.
    Log {
        /// The conversation id (in this home).
        #[arg(required_unless_present = "repo")]
        conv: Option<String>,
        /// Read this Git repository instead of a conversation of the home.
        #[arg(long, conflicts_with = "conv")]
        repo: Option<PathBuf>,
        /// The repository's format (with --repo).
        #[arg(long, value_enum, default_value = "auto", requires = "repo")]
        format: reader::Format,
        /// Show the repository even if it does not validate (with --repo).
        #[arg(long, requires = "repo")]
        no_verify: bool,
        /// Show only the last N entries.
        #[arg(long)]
        limit: Option<usize>,
        /// Show each entry's commit id (text output of `log CONV`).
        #[arg(long, short)]
        verbose: bool,
    },
    /// Validate a whole conversation repository from its initial commit (ours, or one
    /// written by Jami: the format is detected from the initial commit).
    Verify {
        /// Path of the Git repository.
        path: PathBuf,
        /// The repository's format.
        #[arg(long, value_enum, default_value = "auto")]
        format: reader::Format,
    },
    /// Run the demo: identities in a temporary home, a conversation, messages, the log.
    Demo,
    /// Run this device's node over QUIC until killed. Prints the bound address first; while
    /// it runs, the other commands go through it (`<home>/control.sock`).
    Serve {
        /// Where to listen (UDP), e.g. 127.0.0.1:0 for any free port.
        #[arg(long)]
        listen: SocketAddr,
        /// A peer to connect to at start (and again, with backoff, whenever unreachable).
        #[arg(long)]
        peer: Vec<SocketAddr>,
        /// Seconds before a connection attempt is given up.
        #[arg(long, default_value_t = 10)]
        connect_timeout: u64,
        /// An OpenDHT node to bootstrap from, HOST:PORT (repeatable). With the DHT, devices
        /// are found by device id / account URI and signals reach devices not connected.
        #[arg(long = "dht-bootstrap", value_name = "HOST:PORT")]
        dht_bootstrap: Vec<String>,
        /// UDP port of this node's DHT runner (0: any free port).
        #[arg(long, default_value_t = 0)]
        dht_port: u16,
        /// Do not run the DHT (addresses only from `peer add`, `--peer` and connections).
        #[arg(long, conflicts_with = "dht_bootstrap")]
        no_dht: bool,
    },
    /// The DHT of the running server.
    #[command(subcommand)]
    Dht(DhtCommand),
    /// Peers' addresses remembered in the home.
    #[command(subcommand)]
    Peer(PeerCommand),
    /// List received invitations (id, from, received, title).
    Requests,
    /// Print what happens live (messages, members, invitations, syncs, peers) until
    /// interrupted; needs a running `swarm-chat serve`. With --json, one event object per line.
    Watch {
        /// Only this conversation's events.
        conv: Option<String>,
    },
}

#[derive(Subcommand)]
enum DhtCommand {
    /// The DHT node id, bootstrap nodes (answering or not) and the published addresses.
    Status,
}

#[derive(Subcommand)]
enum PeerCommand {
    /// Remember where a device or account (any of its devices) listens.
    Add {
        /// A device id (64 hex) or an account URI (40 hex).
        who: String,
        /// Its address, e.g. 127.0.0.1:4433.
        addr: String,
    },
    /// List remembered addresses (manual and learned) and refused devices.
    List,
    /// Refuse a device: its channels and signals are dropped, none are sent to it.
    Block {
        /// The device id.
        device: String,
    },
    /// Stop refusing a device (a running server syncs with it at once).
    Unblock {
        /// The device id.
        device: String,
    },
}

#[derive(Subcommand)]
enum IdCommand {
    /// Create the account and this device.
    New {
        /// Display name.
        #[arg(long)]
        name: String,
    },
    /// Show the account URI, display name and device id.
    Show,
}

#[derive(Subcommand)]
enum ConvCommand {
    /// Create a conversation; prints its id.
    Create {
        /// one-to-one, admin-invites-only, invites-only or public.
        #[arg(long)]
        mode: Mode,
        /// The other party (required for one-to-one).
        #[arg(long)]
        invite: Option<String>,
    },
    /// List conversations.
    List,
    /// Write a conversation as a bare Git repository at DIR (same ids; stock git reads it).
    Export {
        /// The conversation id.
        conv: String,
        /// The new repository (must not exist, or be empty).
        dir: PathBuf,
    },
    /// Validate the Git repository at DIR from its initial commit and store the conversation
    /// in this home's backend.
    Import {
        /// The Git repository.
        dir: PathBuf,
    },
    /// Print the path of a conversation's Git repository.
    Repo {
        /// The conversation id.
        conv: String,
    },
    /// Print lines for git's gpg.ssh.allowedSignersFile, one per device certificate.
    AllowedSigners {
        /// The conversation id.
        conv: String,
    },
    /// List the members and their roles.
    Members {
        /// The conversation id.
        conv: String,
    },
    /// Invite an account.
    Invite {
        /// The conversation id.
        conv: String,
        /// The account URI.
        uri: String,
    },
    /// Vote to ban an account; commits the ban when the vote passes.
    Ban {
        /// The conversation id.
        conv: String,
        /// The account URI.
        uri: String,
    },
    /// Vote to unban an account; commits the unban when the vote passes.
    Unban {
        /// The conversation id.
        conv: String,
        /// The account URI.
        uri: String,
    },
    /// Vote to ban a device; commits the ban when the vote passes.
    BanDevice {
        /// The conversation id.
        conv: String,
        /// The device id.
        device: String,
    },
    /// Vote to make a member an admin; commits the promotion when the vote passes.
    Promote {
        /// The conversation id.
        conv: String,
        /// The account URI.
        uri: String,
    },
    /// Accept an invitation: with a running server, clone the conversation from a member
    /// (the inviter, or the device at --peer), validate it, commit `join` and announce it;
    /// without one, the conversation must already be stored here.
    Join {
        /// The conversation id.
        conv: String,
        /// Clone from the device listening there.
        #[arg(long)]
        peer: Option<SocketAddr>,
    },
    /// Decline an invitation (it is not listed again).
    Decline {
        /// The conversation id.
        conv: String,
    },
    /// Mode, head, size, title, membership counts and `syncing` (a clone is running).
    Info {
        /// The conversation id.
        conv: String,
    },
    /// Leave the conversation.
    Leave {
        /// The conversation id.
        conv: String,
    },
    /// Update the conversation profile (admins only).
    Profile {
        /// The conversation id.
        conv: String,
        /// Title.
        #[arg(long)]
        title: Option<String>,
        /// Description.
        #[arg(long)]
        description: Option<String>,
    },
}

fn default_home() -> Result<PathBuf> {
    dirs::data_dir()
        .map(|d| d.join("swarm"))
        .ok_or_else(|| anyhow!("no home directory: pass --home DIR or set SWARM_HOME"))
}

fn now_secs() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn parse_conv(s: &str) -> Result<ConversationId> {
    s.parse()
        .map_err(|e| anyhow!("invalid conversation id {s:?}: {e}"))
}

struct App {
    home: Home,
    json: bool,
    backend: Option<Backend>,
    /// The validation engine (built-in and added plugins), made on first use or given by a
    /// running server.
    engine: std::cell::OnceCell<Arc<Engine>>,
}

impl App {
    fn new(home: Home, json: bool, backend: Option<Backend>) -> Self {
        Self {
            home,
            json,
            backend,
            engine: std::cell::OnceCell::new(),
        }
    }

    /// The engine every command of this home validates with (DESIGN §7: edits, reactions,
    /// call history and polls by the built-in plugins, plus the plugins added to the home).
    fn engine(&self) -> Result<Arc<Engine>> {
        if let Some(e) = self.engine.get() {
            return Ok(e.clone());
        }
        let e = plugins::engine(&self.home.dir)?;
        Ok(self.engine.get_or_init(|| e).clone())
    }

    fn storage(&self) -> Result<Arc<dyn Storage>> {
        let backend = self.home.backend(self.backend)?;
        Ok(Arc::from(self.home.open_storage(backend)?))
    }

    fn repo<'s>(&self, storage: &'s dyn Storage, conv: &str) -> Result<Repo<'s>> {
        let id = parse_conv(conv)?;
        let repo = Repo::open(storage, id).map_err(|e| match e {
            swarm_api::repo::RepoError::UnknownConversation(id) => {
                anyhow!("unknown conversation {id} (see `swarm-chat conv list`)")
            }
            e => anyhow::Error::from(e),
        })?;
        Ok(repo.with_engine(self.engine()?))
    }

    fn plugin(&self, cmd: plugins::PluginCommand) -> Result<()> {
        use plugins::PluginCommand as P;
        match cmd {
            P::List { conv } => {
                let storage = match conv {
                    Some(_) => Some(self.storage()?),
                    None => None,
                };
                let repo = match (&storage, &conv) {
                    (Some(st), Some(c)) => Some(self.repo(st.as_ref(), c)?),
                    _ => None,
                };
                let pinned = match &repo {
                    Some(r) => Some((r, r.head()?)),
                    None => None,
                };
                let list = plugins::list(&self.home.dir, pinned)?;
                self.out(json!({"plugins": list}), || {
                    list.iter()
                        .map(|p| {
                            format!(
                                "{} {} {} {}",
                                p["origin"].as_str().unwrap_or_default(),
                                p["sha256"].as_str().unwrap_or_default(),
                                p["name"].as_str().unwrap_or_default(),
                                p["types"]
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("\n")
                });
            }
            P::Add { file } => {
                let p = plugins::add(&self.home.dir, &file)?;
                self.out(p.clone(), || {
                    format!(
                        "added {} {}",
                        p["sha256"].as_str().unwrap_or_default(),
                        p["types"]
                    )
                });
            }
            P::Pin { conv, file } => {
                self.commit_op(&conv, |_, _, _| plugins::pin(&file))?;
            }
            P::Unpin { conv, sha256 } => {
                self.commit_op(&conv, |_, _, _| plugins::unpin(&sha256))?;
            }
        }
        Ok(())
    }

    /// Prints `value` as JSON, or `text` otherwise.
    /// (A closed stdout, as in `swarm-chat log | head`, is not an error.)
    fn out(&self, value: Value, text: impl FnOnce() -> String) {
        use std::io::Write as _;
        let line = if self.json { value.to_string() } else { text() };
        if line.is_empty() && !self.json {
            return;
        }
        let _ = writeln!(std::io::stdout().lock(), "{line}");
    }

    fn run(&self, command: Command) -> Result<()> {
        match command {
            Command::Id(IdCommand::New { name }) => {
                let id = self.home.create_identity(&name)?;
                self.home.backend(self.backend)?;
                let (uri, dev) = (id.account.uri(), id.device.id());
                self.out(json!({"uri": uri, "device": dev, "name": name}), || {
                    format!("uri {uri}\ndevice {dev}")
                });
            }
            Command::Id(IdCommand::Show) => {
                let id = self.home.identity()?;
                let (uri, dev, name) = (id.account.uri(), id.device.id(), id.account.name());
                self.out(json!({"uri": uri, "device": dev, "name": name}), || {
                    format!("uri {uri}\nname {name}\ndevice {dev}")
                });
            }
            Command::Plugin(cmd) => self.plugin(cmd)?,
            Command::Log {
                repo: Some(path),
                format,
                no_verify,
                limit,
                ..
            } => self.log_repo(&path, format, no_verify, limit)?,
            Command::Serve {
                listen,
                peer,
                connect_timeout,
                dht_bootstrap,
                dht_port,
                no_dht,
            } => serve::run(
                self,
                serve::Options {
                    listen,
                    peers: peer,
                    connect_timeout: std::time::Duration::from_secs(connect_timeout.max(1)),
                    dht: (!no_dht).then_some(dht::DhtOptions {
                        bootstrap: dht_bootstrap,
                        port: dht_port,
                    }),
                },
            )?,
            Command::Verify { path, format } => {
                let opened = reader::open(&path, format)?;
                let (conv, format) = (opened.conv, opened.scheme.name());
                match opened.verify(&opened.engine()?) {
                    Ok(n) => {
                        self.out(
                            json!({"ok": true, "commits": n, "conversation": conv, "format": format}),
                            || format!("ok {n} commits ({format})"),
                        );
                    }
                    Err(r) => return Err(self.refused(&r, format)),
                }
            }
            Command::Demo => demo(self.json, self.backend)?,
            Command::Watch { conv } => self.watch(conv)?,
            served => self.served(served)?,
        }
        Ok(())
    }
}

/// Appends a commit; when a fetch moved the head meanwhile (a running server integrates
/// peers' commits while commands run), the commit is rebuilt on the new head and validated
/// again. The race shows as either error: the head moved between drafting and checking
/// (`NotFastForward`) or between checking and the compare-and-swap write (`HeadMoved`).
fn append(
    repo: &Repo<'_>,
    id: &home::Identity,
    body: &Body,
    changes: &[FileChange],
) -> Result<CommitId> {
    let mut tries = 0;
    loop {
        match repo.append(&id.signer(), body, changes, now_secs()) {
            Err(
                swarm_api::repo::RepoError::NotFastForward(_)
                | swarm_api::repo::RepoError::Storage(swarm_api::storage::StorageError::HeadMoved {
                    ..
                }),
            ) if tries < 8 => tries += 1,
            r => return Ok(r?),
        }
    }
}

impl App {
    /// A refused history: the JSON verdict on stdout (with `--json`), the error to return.
    fn refused(&self, r: &swarm_api::validate::Rejection, format: &str) -> anyhow::Error {
        if self.json {
            println!(
                "{}",
                json!({"ok": false, "format": format, "commit": r.commit,
                       "rule": r.violation.rule(), "reason": r.violation.to_string()})
            );
        }
        anyhow!(
            "commit {} refused by rule {}: {}",
            r.commit,
            r.violation.rule(),
            r.violation
        )
    }

    /// `log --repo PATH`: any repository, validated, as a client shows it.
    fn log_repo(
        &self,
        path: &std::path::Path,
        format: reader::Format,
        no_verify: bool,
        limit: Option<usize>,
    ) -> Result<()> {
        let opened = reader::open(path, format)?;
        let scheme = opened.scheme.name();
        let verified = match opened.verify(&opened.engine()?) {
            Ok(_) => true,
            Err(r) if no_verify => {
                eprintln!(
                    "swarm-chat: warning: not valid (commit {} refused by rule {}: {}); shown anyway",
                    r.commit,
                    r.violation.rule(),
                    r.violation
                );
                false
            }
            Err(r) => {
                return Err(self
                    .refused(&r, scheme)
                    .context("use --no-verify to show it anyway"))
            }
        };
        let mut entries = opened.transcript()?;
        if let Some(n) = limit {
            entries.drain(..entries.len().saturating_sub(n));
        }
        self.out(
            json!({"conversation": opened.conv, "format": scheme, "verified": verified,
                   "messages": entries}),
            || {
                entries
                    .iter()
                    .map(reader::entry_line)
                    .collect::<Vec<_>>()
                    .join("\n")
            },
        );
        Ok(())
    }
}

fn parse_uri(s: &str) -> Result<AccountUri> {
    s.parse().map_err(|e| anyhow!("invalid URI {s:?}: {e}"))
}

impl App {
    /// Appends the commit `op` builds (validated before it is stored); prints its id.
    fn commit_op(
        &self,
        conv: &str,
        op: impl FnOnce(&Repo<'_>, &home::Identity, &State) -> Result<(Body, Vec<FileChange>)>,
    ) -> Result<CommitId> {
        let id = self.home.identity()?;
        let storage = self.storage()?;
        let repo = self.repo(storage.as_ref(), conv)?;
        let st = repo.state(&repo.head()?)?;
        let (body, changes) = op(&repo, &id, &st)?;
        let commit = append(&repo, &id, &body, &changes)?;
        self.out(json!({"commit": commit, "type": body.kind()}), || {
            commit.to_string()
        });
        Ok(commit)
    }
}

fn demo(json_out: bool, backend: Option<Backend>) -> Result<()> {
    let dir = tempfile::tempdir().context("cannot create a temporary home")?;
    let app = App::new(Home::new(dir.path().join("alice")), false, backend);
    let alice = app.home.create_identity("Alice")?;
    let storage = app.storage()?;
    let conv = create_conversation(
        storage.as_ref(),
        &alice.signer(),
        Mode::InvitesOnly,
        None,
        now_secs(),
    )?;
    let repo = Repo::open(storage.as_ref(), conv)?;
    for text in [
        "Hello, swarm!",
        "Every message is a signed Git commit.",
        "No server owns this conversation.",
    ] {
        repo.append(&alice.signer(), &Body::text(text), &[], now_secs())?;
    }
    let entries = swarm_api::host::LogEntry::of(&repo, &Engine::default(), None)?;
    // Check every signature with the device certificates in the repository itself.
    let devices = repo.device_certs(&repo.head()?)?;
    let mut verified = 0;
    for c in repo.history()? {
        let cert = devices
            .get(&c.device)
            .ok_or_else(|| anyhow!("no certificate for device {}", c.device))?;
        c.verify_signature(cert.public_key())?;
        verified += 1;
    }
    let path = storage.location(&conv);
    if !json_out {
        println!("account      {} (Alice)", alice.account.uri());
        println!("device       {}", alice.device.id());
        println!("conversation {conv}");
        if let Some(p) = &path {
            println!(
                "repository   {} (try: git -C {} log)",
                p.display(),
                p.display()
            );
        }
        println!();
        for e in &entries {
            println!("{}  {:<18} {}", &e.id.to_string()[..8], e.kind, e.body);
        }
        println!(
            "\n{verified} commits, every signature verified against devices/ in the repository"
        );
    }
    // Part two: five peers on the simulated network split, chat, heal and agree.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let swarm = runtime.block_on(swarm_demo::run(&dir.path().join("swarm"), json_out))?;
    if json_out {
        println!(
            "{}",
            json!({"account": alice.account.uri(), "device": alice.device.id(),
                   "conversation": conv, "repository": path, "messages": entries,
                   "signatures_verified": verified, "swarm": swarm})
        );
    }
    Ok(())
}

/// An error and its causes on one line.
fn one_line(e: &anyhow::Error) -> String {
    e.chain()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
        .replace('\n', " ")
}

/// This machine's UTC offset, read once at start (while the process has one thread, as
/// reading it requires).
static LOCAL_OFFSET: std::sync::OnceLock<time::UtcOffset> = std::sync::OnceLock::new();

/// `unix` seconds as local `HH:MM` (today) or `YYYY-MM-DD HH:MM`.
fn local_time(unix: i64) -> String {
    let offset = *LOCAL_OFFSET.get_or_init(|| time::UtcOffset::UTC);
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp(unix) else {
        return unix.to_string();
    };
    let t = t.to_offset(offset);
    let today = time::OffsetDateTime::now_utc().to_offset(offset).date();
    let hm = format!("{:02}:{:02}", t.hour(), t.minute());
    if t.date() == today {
        hm
    } else {
        format!("{} {hm}", t.date())
    }
}

fn main() -> ExitCode {
    let _ =
        LOCAL_OFFSET.set(time::UtcOffset::current_local_offset().unwrap_or(time::UtcOffset::UTC));
    let cli = Cli::parse();
    // A server logs its connections and syncs by default; other commands only problems.
    let default_log = if matches!(cli.command, Command::Serve { .. }) {
        "info"
    } else {
        "warn"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SWARM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_log)),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = (|| {
        let dir = match cli.home {
            Some(d) => d,
            None => default_home()?,
        };
        // Once, for everything: the plugin host's cache, the control socket, the paths
        // printed and a server's clients all need the same absolute home (`--home relhome`).
        let dir = std::path::absolute(&dir)
            .with_context(|| format!("cannot resolve the home {}", dir.display()))?;
        App::new(Home::new(dir), cli.json, cli.backend).run(cli.command)
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("swarm-chat: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}
