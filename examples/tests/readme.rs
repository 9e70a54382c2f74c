//! README.md's examples are tests, so that they cannot rot (Radicle's `radicle-cli/examples/
//! *.md` habit; outputs compared by snapbox).
//!
//! - Every ```` ```console ```` block of the README is a transcript: `$ COMMAND` lines, each
//!   followed by the output it must print (stdout and stderr together). The blocks of one `##`
//!   section run in order in one shell session ([`run_section`]): variables set by a command
//!   (`CONV=$(swarm-chat … conv create …)`) and the working directory (`cd`) carry over to the
//!   next, `swarm-chat` is the binary under test (first on `PATH`), `TMPDIR` is the test's own.
//! - In an expected output, `[..]` matches any text in a line and `...` any lines; `[NAME]`
//!   stands for the value of the transcript variable `NAME`, and when no such variable exists
//!   yet, the text in its place is taken as the value of `NAME` (`listening [ALICE_ADDR] …`,
//!   then `--peer $ALICE_ADDR`). Ids, ports, times and paths are written so.
//! - `? failed` as the first output line: the command must fail. A command ending in `&` runs
//!   in the background (killed when the section ends); the one line shown after it is the
//!   first line it prints. A command with a `# wait …` comment shows something that arrives
//!   over the network: it is run again until its output matches, within [`DEADLINE`].
//! - Every section with a transcript has a test below; [`every_transcript_is_run`] fails when
//!   one is added without it. The ```` ```sh ```` blocks (command lists, benchmarks) are not
//!   run, but [`listed_commands_exist`] checks that each `swarm-chat` command, option and
//!   `cargo -p/--bench/--bin/--example` target they name exists.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use regex::Regex;
use snapbox::{Data, Redactions};

#[path = "support/serve.rs"]
mod support;
use support::KillOnDrop;

#[path = "../examples/third_party_plugin.rs"]
mod example;

/// The README, as of this build.
const README: &str = include_str!("../../README.md");

/// How long a command may take, and how long a `# wait` command is retried.
const DEADLINE: Duration = Duration::from_secs(90);

/// One `$ COMMAND` of a transcript and what it must print.
#[derive(Debug)]
struct Step {
    /// The README line of the command (for failure messages).
    line: usize,
    /// The command, as bash runs it (continuation lines included).
    command: String,
    /// The expected output (`? failed` removed).
    expected: String,
    /// `? failed`: the command must exit non-zero.
    fails: bool,
    /// Ends with `&`: started in the background.
    background: bool,
    /// Has a `# wait` comment: retried until its output matches.
    wait: bool,
}

/// A fenced block of the README.
struct Block {
    /// The `##` section it is in.
    section: String,
    /// The info string (`console`, `sh`, ...).
    lang: String,
    /// The README line number of its first line.
    first_line: usize,
    lines: Vec<String>,
}

fn blocks(markdown: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut section = String::new();
    let mut open: Option<Block> = None;
    for (i, line) in markdown.lines().enumerate() {
        match open.as_mut() {
            Some(_) if line.trim_start().starts_with("```") => out.extend(open.take()),
            Some(block) => block.lines.push(line.to_owned()),
            None if line.trim_start().starts_with("```") => {
                open = Some(Block {
                    section: section.clone(),
                    lang: line.trim_start().trim_start_matches('`').trim().to_owned(),
                    first_line: i + 2,
                    lines: Vec::new(),
                });
            }
            None => {
                if let Some(title) = line.strip_prefix("## ") {
                    section = title.trim().to_owned();
                }
            }
        }
    }
    out
}

/// The steps of a `console` block.
fn steps(block: &Block) -> Vec<Step> {
    let wait = Regex::new(r"\s#\s*wait\b").expect("a regex");
    let mut steps: Vec<Step> = Vec::new();
    let mut continued = false;
    for (i, line) in block.lines.iter().enumerate() {
        let line_no = block.first_line + i;
        if continued {
            let step = steps.last_mut().expect("continued a command");
            step.command.push('\n');
            step.command.push_str(line);
            continued = line.ends_with('\\');
        } else if let Some(command) = line.strip_prefix("$ ") {
            continued = command.ends_with('\\');
            steps.push(Step {
                line: line_no,
                command: command.to_owned(),
                expected: String::new(),
                fails: false,
                background: false,
                wait: false,
            });
        } else {
            let step = steps
                .last_mut()
                .unwrap_or_else(|| panic!("README.md:{line_no}: output before any `$ ` command"));
            if step.expected.is_empty() && !step.fails && line == "? failed" {
                step.fails = true;
            } else {
                step.expected.push_str(line);
                step.expected.push('\n');
            }
        }
    }
    for step in &mut steps {
        step.wait = wait.is_match(&step.command);
        let code = step
            .command
            .split(" #")
            .next()
            .unwrap_or_default()
            .trim_end();
        step.background = code.ends_with('&') && !code.ends_with("&&");
    }
    steps
}

/// The sections that have transcripts, with their steps in order.
fn transcripts() -> BTreeMap<String, Vec<Step>> {
    transcripts_of(README)
}

fn transcripts_of(markdown: &str) -> BTreeMap<String, Vec<Step>> {
    let mut out: BTreeMap<String, Vec<Step>> = BTreeMap::new();
    for block in blocks(markdown).iter().filter(|b| b.lang == "console") {
        out.entry(block.section.clone())
            .or_default()
            .extend(steps(block));
    }
    out
}

/// A placeholder name (snapbox allows `A-Z` and `_`).
fn is_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_uppercase() || c == '_')
}

/// The `[NAME]`s and `[..]`s of an expected line, and the literal text between them.
enum Piece<'a> {
    Text(&'a str),
    Any,
    Var(&'a str),
}

fn pieces(line: &str) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(open) = rest.find('[') {
        let Some(len) = rest[open..].find(']') else {
            break;
        };
        let inner = &rest[open + 1..open + len];
        let piece = if inner == ".." {
            Piece::Any
        } else if is_name(inner) {
            Piece::Var(inner)
        } else {
            out.push(Piece::Text(&rest[..open + 1]));
            rest = &rest[open + 1..];
            continue;
        };
        out.push(Piece::Text(&rest[..open]));
        out.push(piece);
        rest = &rest[open + len + 1..];
    }
    out.push(Piece::Text(rest));
    out
}

/// The values of the placeholders of `expected` that are not variables yet, read from the
/// first line of `actual` that each expected line matches.
fn bind(expected: &str, actual: &str, vars: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut bound = BTreeMap::new();
    for line in expected.lines() {
        let pieces = pieces(line);
        let unknown = |p: &Piece<'_>| matches!(p, Piece::Var(n) if !vars.contains_key(*n));
        if !pieces.iter().any(unknown) {
            continue;
        }
        let mut pattern = String::from("^");
        let mut named = BTreeSet::new();
        for piece in &pieces {
            match piece {
                Piece::Text(t) => pattern.push_str(&regex::escape(t)),
                Piece::Any => pattern.push_str(".*?"),
                Piece::Var(n) => match vars.get(*n) {
                    Some(v) => pattern.push_str(&regex::escape(v)),
                    None if named.insert(*n) => pattern.push_str(&format!(r"(?P<{n}>\S+?)")),
                    None => pattern.push_str(r"\S+?"),
                },
            }
        }
        pattern.push('$');
        let re = Regex::new(&pattern).expect("a regex from an expected line");
        if let Some(caps) = actual.lines().find_map(|l| re.captures(l.trim_end())) {
            for n in named {
                if let Some(m) = caps.name(n) {
                    bound.insert(n.to_owned(), m.as_str().to_owned());
                }
            }
        }
    }
    bound
}

/// Trailing blanks removed, one final newline.
fn tidy(text: &str) -> String {
    let mut out: String = text
        .lines()
        .map(|l| format!("{}\n", l.trim_end()))
        .collect();
    while out.ends_with("\n\n") {
        out.pop();
    }
    out
}

/// Variables the shell sets that are not the transcript's.
const SHELL_OWN: &[&str] = &["_", "PWD", "OLDPWD", "SHLVL", STATE];
/// The variable naming the file where each command leaves its environment.
const STATE: &str = "SWARM_TRANSCRIPT_STATE";

/// One shell session: a transcript's variables, working directory and background processes.
struct Session {
    root: tempfile::TempDir,
    cwd: PathBuf,
    base: BTreeMap<String, String>,
    vars: BTreeMap<String, String>,
    background: Vec<KillOnDrop>,
}

impl Session {
    fn new() -> Session {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(root.path().join("tmp")).expect("TMPDIR");
        let bin_dir = Path::new(env!("CARGO_BIN_EXE_swarm-chat"))
            .parent()
            .expect("the binary's directory")
            .to_path_buf();
        let mut base: BTreeMap<String, String> = std::env::vars()
            .filter(|(k, _)| !k.starts_with("SWARM_"))
            .collect();
        let path = std::env::var("PATH").unwrap_or_default();
        base.insert("PATH".into(), format!("{}:{path}", bin_dir.display()));
        base.insert(
            "TMPDIR".into(),
            root.path().join("tmp").display().to_string(),
        );
        base.insert(STATE.into(), root.path().join("env").display().to_string());
        Session {
            cwd: Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .expect("the workspace")
                .to_path_buf(),
            root,
            base,
            vars: BTreeMap::new(),
            background: Vec::new(),
        }
    }

    fn bash(&self, script: &str) -> Command {
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg(script)
            .current_dir(&self.cwd)
            .env_clear()
            .envs(&self.base)
            .envs(&self.vars);
        cmd
    }

    /// Runs a foreground command; its exit status and output (stderr in stdout). The
    /// variables it set and the directory it moved to are kept.
    fn run(&mut self, command: &str) -> (bool, String) {
        let script = format!(
            "set -a\ntrap 'export PWD; env -0 > \"${STATE}\"' EXIT\nexec 2>&1\n{command}\n"
        );
        let mut child = KillOnDrop(
            self.bash(&script)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .spawn()
                .expect("bash runs"),
        );
        let mut stdout = child.0.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut out = Vec::new();
            let _ = std::io::Read::read_to_end(&mut stdout, &mut out);
            let _ = tx.send(out);
        });
        let Ok(output) = rx.recv_timeout(DEADLINE) else {
            self.fail(&format!("`{command}` did not finish within {DEADLINE:?}"));
        };
        let status = child.0.wait().expect("bash ends");
        let state = std::fs::read(&self.base[STATE]).unwrap_or_default();
        for entry in state.split(|b| *b == 0) {
            let entry = String::from_utf8_lossy(entry);
            let Some((k, v)) = entry.split_once('=') else {
                continue;
            };
            if k == "PWD" {
                self.cwd = PathBuf::from(v);
            } else if !SHELL_OWN.contains(&k) && self.base.get(k).map(String::as_str) != Some(v) {
                self.vars.insert(k.to_owned(), v.to_owned());
            }
        }
        (
            status.success(),
            String::from_utf8_lossy(&output).into_owned(),
        )
    }

    /// Starts a background command (`exec`ed by bash, so that killing it kills the command);
    /// the first line it prints if `first_line`, else nothing.
    fn spawn(&mut self, command: &str, first_line: bool) -> String {
        let code = command.split(" #").next().unwrap_or_default().trim_end();
        let code = code.strip_suffix('&').unwrap_or(code);
        let log = std::fs::File::create(
            self.root
                .path()
                .join(format!("background-{}.log", self.background.len())),
        )
        .expect("log file");
        let child = self
            .bash(&format!("exec {code}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("bash runs");
        self.background.push(KillOnDrop(child));
        if !first_line {
            return String::new();
        }
        let child = &mut self.background.last_mut().expect("just pushed").0;
        support::first_line_text(child, DEADLINE)
    }

    /// The transcript's variables as snapbox redactions (`[NAME]` for their values).
    fn redactions(&self, extra: &BTreeMap<String, String>) -> Redactions {
        let mut r = Redactions::new();
        for (k, v) in self.vars.iter().chain(extra) {
            // Short values would be found everywhere: they are not redacted.
            if is_name(k) && v.trim().len() >= 6 {
                // Placeholders are `&'static str`: one small string per variable and test.
                let placeholder: &'static str = Box::leak(format!("[{k}]").into_boxed_str());
                r.insert(placeholder, v.clone())
                    .expect("a valid placeholder");
            }
        }
        r
    }

    /// Compares `actual` with the step's expected output; the variables it binds if equal.
    fn check(
        &self,
        step: &Step,
        ok: bool,
        actual: &str,
    ) -> Result<BTreeMap<String, String>, String> {
        let actual = tidy(actual);
        let expected = tidy(&step.expected);
        let bound = bind(&expected, &actual, &self.vars);
        let name = format!("README.md:{}: $ {}", step.line, step.command);
        snapbox::Assert::new()
            .redact_with(self.redactions(&bound))
            .try_eq(Some(&name), Data::text(actual), Data::text(expected))
            .map_err(|e| e.to_string())?;
        if step.background || ok != step.fails {
            Ok(bound)
        } else {
            Err(format!(
                "{name}: expected to {}, it did not",
                if step.fails { "fail" } else { "succeed" }
            ))
        }
    }

    /// Runs one step, retrying a `# wait` step until it matches or [`DEADLINE`] passes.
    fn step(&mut self, step: &Step) {
        let start = Instant::now();
        loop {
            let (ok, actual) = if step.background {
                let first_line = !step.expected.trim().is_empty();
                (true, self.spawn(&step.command, first_line))
            } else {
                self.run(&step.command)
            };
            match self.check(step, ok, &actual) {
                Ok(bound) => {
                    self.vars.extend(bound);
                    return;
                }
                Err(e) if !step.wait || start.elapsed() > DEADLINE => self.fail(&e),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// Panics with `why` and the logs the transcript's processes wrote.
    fn fail(&self, why: &str) -> ! {
        let mut logs = String::new();
        let dirs = [self.root.path().to_path_buf(), self.cwd.clone()];
        for dir in dirs.iter().filter(|d| d.starts_with(self.root.path())) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.extension().is_some_and(|e| e == "log") {
                    let text = std::fs::read_to_string(&path).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(30).collect();
                    logs += &format!("--- last lines of {} ---\n", path.display());
                    for l in tail.into_iter().rev() {
                        logs += l;
                        logs.push('\n');
                    }
                }
            }
        }
        panic!("{why}\n{logs}variables: {:?}", self.vars);
    }
}

/// Runs the transcript of the README section `title`.
fn run_section(title: &str) {
    let all = transcripts();
    let steps = all
        .get(title)
        .unwrap_or_else(|| panic!("README.md has no section {title:?} with a console block"));
    let mut session = Session::new();
    for step in steps {
        session.step(step);
    }
}

/// The README sections whose transcripts run below.
const SECTIONS: &[&str] = &[
    "Two-node chat on one machine",
    "Finding each other through OpenDHT",
    "Reading a Jami conversation",
    "Plugins",
];

#[test]
fn every_transcript_is_run() {
    let run: BTreeSet<&str> = SECTIONS.iter().copied().collect();
    let all = transcripts();
    let found: BTreeSet<&str> = all.keys().map(String::as_str).collect();
    assert_eq!(
        found, run,
        "every README section with a console block has a test in examples/tests/readme.rs"
    );
    for steps in all.values() {
        assert!(!steps.is_empty());
    }
}

#[test]
fn two_node_chat_on_one_machine() {
    run_section(SECTIONS[0]);
}

#[test]
fn finding_each_other_through_opendht() {
    run_section(SECTIONS[1]);
}

#[test]
fn reading_a_jami_conversation() {
    run_section(SECTIONS[2]);
}

#[test]
fn plugins() {
    // The transcript adds the example plugin that `cargo run -p swarm-examples --example
    // third_party_plugin` builds: build it the same way first.
    example::build_dice(&example::target_dir()).expect("the dice plugin builds");
    run_section(SECTIONS[3]);
}

#[test]
fn the_transcript_syntax_is_read_as_documented() {
    let md = "## S\n```console\n$ a=$(echo x) \\\n  && true\n$ serve &  # note\nline [A]\n\
              $ b # wait: it comes\n? failed\nout\n```\n";
    let all = transcripts_of(md);
    let steps = &all["S"];
    assert_eq!(steps.len(), 3);
    assert_eq!(steps[0].command, "a=$(echo x) \\\n  && true");
    assert!(steps[1].background && !steps[1].wait);
    assert_eq!(steps[1].expected, "line [A]\n");
    assert!(steps[2].wait && steps[2].fails && !steps[2].background);
    let mut vars = BTreeMap::new();
    vars.insert("KNOWN".to_owned(), "k1".to_owned());
    let bound = bind(
        "listening [ADDR] device [..] of [KNOWN]\n",
        "noise\nlistening 127.0.0.1:4000 device abc of k1\n",
        &vars,
    );
    assert_eq!(
        bound.get("ADDR").map(String::as_str),
        Some("127.0.0.1:4000")
    );
    assert!(bind("x [ADDR]\n", "y 1\n", &vars).is_empty());
}

/// The lines of a block, `\`-continued lines joined, comments (` # …`) removed, with their
/// README line numbers.
fn code_lines(block: &Block) -> Vec<(usize, String)> {
    let mut out: Vec<(usize, String)> = Vec::new();
    let mut continued = false;
    for (i, line) in block.lines.iter().enumerate() {
        let code = match line.find(" #") {
            Some(at) => &line[..at],
            None if line.trim_start().starts_with('#') => "",
            None => line,
        };
        let code = code.trim();
        match out.last_mut() {
            Some((_, prev)) if continued => {
                prev.push(' ');
                prev.push_str(code.trim_end_matches('\\'));
            }
            _ if !code.is_empty() => {
                out.push((block.first_line + i, code.trim_end_matches('\\').to_owned()))
            }
            _ => {}
        }
        continued = code.ends_with('\\');
    }
    out
}

/// The subcommand paths (`conv ban|unban` gives two) and the options a `swarm-chat …` line
/// of a command list names.
fn chat_usage(line: &str) -> (Vec<Vec<String>>, Vec<String>) {
    let words: Vec<&str> = line.split_whitespace().skip(1).collect();
    let mut paths = vec![Vec::new()];
    let mut options = Vec::new();
    let mut in_path = true;
    let mut i = 0;
    while i < words.len() {
        let w = words[i].trim_matches(|c| c == '[' || c == ']');
        if let Some(global) = ["--home", "--backend"].iter().find(|g| **g == w) {
            options.push(global.to_string());
            i += 2;
            continue;
        }
        if w.starts_with("--") {
            options.push(w.split('=').next().unwrap_or(w).to_owned());
            in_path = false;
        } else if in_path
            && !w.is_empty()
            && w.chars()
                .all(|c| c.is_ascii_lowercase() || c == '-' || c == '|')
        {
            paths = paths
                .iter()
                .flat_map(|p| {
                    w.split('|').map(move |alt| {
                        let mut p = p.clone();
                        p.push(alt.to_owned());
                        p
                    })
                })
                .collect();
        } else {
            in_path = false;
        }
        i += 1;
    }
    (paths, options)
}

/// The README's command lists (```` ```sh ```` blocks, not run) name commands that exist:
/// every `swarm-chat` subcommand and option, every `cargo … -p P --bench/--bin/--example/--test
/// T` package and target, every `./scripts/…` file.
#[test]
fn listed_commands_exist() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace");
    let metadata = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(root)
        .output()
        .expect("cargo metadata runs");
    assert!(metadata.status.success(), "cargo metadata failed");
    let metadata: serde_json::Value =
        serde_json::from_slice(&metadata.stdout).expect("cargo metadata's JSON");
    let targets = |package: &str| -> Option<Vec<(String, String)>> {
        let p = metadata["packages"]
            .as_array()?
            .iter()
            .find(|p| p["name"] == package)?;
        Some(
            p["targets"]
                .as_array()?
                .iter()
                .flat_map(|t| {
                    let name = t["name"].as_str().unwrap_or_default().to_owned();
                    t["kind"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|k| k.as_str())
                        .map(move |k| (k.to_owned(), name.clone()))
                })
                .collect(),
        )
    };
    let mut checked = 0;
    for block in blocks(README).iter().filter(|b| b.lang == "sh") {
        for (line_no, line) in code_lines(block) {
            let at = format!("README.md:{line_no}: {line}");
            let words: Vec<&str> = line
                .split_whitespace()
                .skip_while(|w| w.contains('=') && !w.starts_with('-'))
                .collect();
            match words.first().copied() {
                Some("swarm-chat") => {
                    let (paths, options) = chat_usage(&words.join(" "));
                    for path in paths {
                        let help = Command::new(env!("CARGO_BIN_EXE_swarm-chat"))
                            .args(&path)
                            .arg("--help")
                            .output()
                            .expect("swarm-chat runs");
                        let text = String::from_utf8_lossy(&help.stdout);
                        assert!(help.status.success(), "{at}: no command {path:?}");
                        for o in &options {
                            assert!(text.contains(o.as_str()), "{at}: {path:?} has no {o}");
                        }
                        checked += 1;
                    }
                }
                Some("cargo") => {
                    let arg = |flag: &str| {
                        words
                            .iter()
                            .position(|w| *w == flag)
                            .and_then(|i| words.get(i + 1).copied())
                    };
                    let package = arg("-p").unwrap_or_else(|| panic!("{at}: no -p"));
                    let targets =
                        targets(package).unwrap_or_else(|| panic!("{at}: no package {package}"));
                    for (flag, kind) in [
                        ("--bench", "bench"),
                        ("--bin", "bin"),
                        ("--example", "example"),
                        ("--test", "test"),
                    ] {
                        if let Some(name) = arg(flag) {
                            assert!(
                                targets.iter().any(|(k, n)| k == kind && n == name),
                                "{at}: {package} has no {kind} {name}"
                            );
                        }
                    }
                    checked += 1;
                }
                Some(script) if script.starts_with("./") => {
                    assert!(root.join(script).is_file(), "{at}: no {script}");
                    checked += 1;
                }
                _ => {}
            }
        }
    }
    assert!(checked > 20, "only {checked} listed commands found");
}
