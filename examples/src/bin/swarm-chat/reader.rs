//! Reading any conversation repository on disk, native or written by jamid, without a home:
//! `swarm-chat verify PATH` and `swarm-chat log --repo PATH`.

use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, Context as _, Result};
use swarm_api::commit::Scheme;
use swarm_api::object::ObjectSource as _;
use swarm_api::validate::{Engine, Limits, Profile, Rejection};
use swarm_api::view::{read_history, transcript, Entry};
use swarm_api::ConversationId;
use swarm_git::GitRepoReader;
use swarm_plugins::Host;

/// The most commits `verify`/`log --repo` read.
const MAX_COMMITS: usize = 10_000_000;

/// `--format` of `verify` and `log --repo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Detect it from the initial commit's signature header.
    Auto,
    /// Ours (DESIGN §3): sshsig Ed25519 in `gpgsig`.
    Native,
    /// jamid's: RSA in a `signature` header, X.509 chains as jamid writes them.
    Jami,
}

/// An opened repository with its conversation id and format.
pub struct Opened {
    pub reader: GitRepoReader,
    pub conv: ConversationId,
    pub head: swarm_api::CommitId,
    pub scheme: Scheme,
}

pub fn open(path: &Path, format: Format) -> Result<Opened> {
    let reader = GitRepoReader::open(path)
        .with_context(|| format!("cannot open a Git repository at {}", path.display()))?;
    let head = reader.head()?;
    let root = reader.root(MAX_COMMITS)?;
    let scheme = match format {
        Format::Native => Scheme::Native,
        Format::Jami => Scheme::Jami,
        Format::Auto => {
            let obj = reader
                .expect(&root.object_id(), swarm_api::object::Kind::Commit)
                .with_context(|| format!("cannot read the initial commit {root}"))?;
            Scheme::detect(&obj.data).ok_or_else(|| {
                anyhow!(
                    "the initial commit {root} has neither a `gpgsig` nor a `signature` header: \
                     not a swarm or Jami conversation (or unsigned)"
                )
            })?
        }
    };
    Ok(Opened {
        reader,
        conv: ConversationId(root),
        head,
        scheme,
    })
}

impl Opened {
    /// The engine this repository is checked with: the rule profile of its scheme and the
    /// built-in plugins (edits, reactions, call history, polls), as every home runs them.
    pub fn engine(&self) -> Result<Engine> {
        let mut engine = Engine::with_profile(Profile::of(self.scheme), Limits::default());
        swarm_plugins::install(&mut engine, Arc::new(Host::new()?), Vec::new())?;
        Ok(engine)
    }

    /// Validates the whole history with `engine` (see [`Opened::engine`]).
    pub fn verify(&self, engine: &Engine) -> Result<usize, Rejection> {
        engine
            .verify(self.conv, &self.reader, self.head)
            .map(|v| v.commits().len())
    }

    /// The transcript, in display order.
    pub fn transcript(&self) -> Result<Vec<Entry>> {
        let history = read_history(
            &self.reader,
            self.head,
            self.scheme,
            MAX_COMMITS,
            Limits::default().tree,
        )?;
        Ok(transcript(&history))
    }
}

/// The text line of a transcript entry: short id, name, text (events marked `*`, replies
/// indented under their message with `↳`), then edits and reactions.
pub fn entry_line(e: &Entry) -> String {
    let id: String = e.id.to_string().chars().take(8).collect();
    entry_line_with(e, &id)
}

/// An entry after `prefix` (the id, or the local time in `log CONV`).
pub fn entry_line_with(e: &Entry, prefix: &str) -> String {
    let thread = if e.depth > 0 {
        format!("{}↳ ", "  ".repeat(e.depth - 1))
    } else {
        String::new()
    };
    let event = if e.kind == swarm_api::body::types::TEXT {
        ""
    } else {
        "* "
    };
    let mut line = format!("{prefix}  {thread}{:<8} {event}{}", e.name, e.text);
    if e.deleted {
        line.push_str(" [deleted]");
    } else if !e.edits.is_empty() {
        line.push_str(" [edited]");
    }
    if !e.reactions.is_empty() {
        let r: Vec<String> = e
            .reactions
            .iter()
            .map(|r| format!("{} {}", r.body, r.name))
            .collect();
        line.push_str(&format!("  [{}]", r.join(", ")));
    }
    line
}
