//! The replay guard of received signals: which sealed signals were already delivered, kept
//! on disk so that a restart does not make them new again.
//!
//! A sealed signal carries its sender's clock (`sent`) and a random id, both under the
//! sender's signature. A signal is delivered once: it is accepted when
//!
//! 1. it is not dated more than [`MAX_CLOCK_SKEW`] in the future (the sender's clock may run
//!    a little ahead; a signal dated further would stay "fresh" for as long as its date
//!    says);
//! 2. it was sent within the acceptance window (`DhtConfig::max_signal_age`);
//! 3. it was sent after the *floor*: when the set is full ([`MAX_SEEN`]), the signals sent
//!    the longest ago are forgotten and the floor rises to their date, so a forgotten signal
//!    can never come back as new;
//! 4. its id is not in the set.
//!
//! Entries older than the window are pruned (rule 2 refuses them anyway), so the set holds
//! at most the signals of one window, and never more than [`MAX_SEEN`].
//!
//! Apart from the file, the guard does no I/O and reads no clock: `now` is an argument.
//! The file is an append-only log of `<id hex> <sent>` lines (and `floor <sent>` lines),
//! compacted when it is opened and when it grows past twice the live set.

use std::collections::{BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

const LOG: &str = "transport_dht";

/// How far in the future (sender's clock ahead of ours) a signal may be dated.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(300);

/// The most signal ids remembered at once; past it the oldest are forgotten (and the floor
/// rises, see the module documentation).
pub const MAX_SEEN: usize = 65_536;

/// The file name of the replay set in the service's state directory.
pub const FILE_NAME: &str = "signals-seen";

/// Why a received signal is not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refused {
    /// Dated more than the allowed skew in the future.
    #[error("dated {ahead} s in the future (more than the allowed clock skew of {skew} s)")]
    Future {
        /// Seconds ahead of our clock.
        ahead: u64,
        /// The allowed skew.
        skew: u64,
    },
    /// Sent longer ago than the acceptance window.
    #[error("sent {age} s ago, older than the acceptance window of {window} s")]
    Stale {
        /// Seconds since it was sent.
        age: u64,
        /// The window.
        window: u64,
    },
    /// Sent no later than the floor (the set was full and forgot signals that old).
    #[error("sent at {sent}, not after {floor}: signals that old are no longer remembered")]
    Forgotten {
        /// When it was sent.
        sent: u64,
        /// The floor.
        floor: u64,
    },
    /// Already delivered.
    #[error("already received (a replay)")]
    Replayed,
}

/// The replay guard could not read or write its file.
#[derive(Debug, thiserror::Error)]
#[error("replay set {path}: {source}")]
pub struct ReplayFileError {
    /// The file.
    pub path: PathBuf,
    /// The I/O error.
    #[source]
    pub source: std::io::Error,
}

/// The set of signals already delivered (see the module documentation).
#[derive(Debug)]
pub struct ReplayGuard {
    window: u64,
    skew: u64,
    cap: usize,
    /// id → sent.
    seen: HashMap<[u8; 16], u64>,
    /// The same entries by date, oldest first (pruning and eviction).
    by_date: BTreeSet<(u64, [u8; 16])>,
    /// Signals sent at or before this are refused.
    floor: u64,
    file: Option<PathBuf>,
    /// Lines in the file (compaction when it is twice the live set).
    lines: usize,
}

impl ReplayGuard {
    /// An empty guard in memory only, accepting signals sent within `window`.
    pub fn in_memory(window: Duration) -> Self {
        Self {
            window: window.as_secs(),
            skew: MAX_CLOCK_SKEW.as_secs(),
            cap: MAX_SEEN,
            seen: HashMap::new(),
            by_date: BTreeSet::new(),
            floor: 0,
            file: None,
            lines: 0,
        }
    }

    /// The guard kept in `dir` ([`FILE_NAME`]): what it remembered, pruned at `now`. The
    /// directory is created if needed; unreadable lines (a write cut by a crash) are skipped.
    pub fn open(dir: &Path, window: Duration, now: u64) -> Result<Self, ReplayFileError> {
        let path = dir.join(FILE_NAME);
        let err = |source| ReplayFileError {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(err)?;
        let mut guard = Self::in_memory(window);
        match File::open(&path) {
            Ok(f) => {
                for line in BufReader::new(f).lines() {
                    guard.load_line(&line.map_err(err)?);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(e)),
        }
        guard.prune(now);
        guard.file = Some(path.clone());
        guard.compact().map_err(err)?;
        Ok(guard)
    }

    /// Sets the capacity (tests; [`MAX_SEEN`] by default).
    pub fn with_capacity(mut self, cap: usize) -> Self {
        self.cap = cap.max(1);
        self
    }

    /// How many signal ids are remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether no signal id is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Checks a signal (`id`, `sent`) received at `now`; if it is accepted, remembers it
    /// (and writes it to the file). Prunes what left the window.
    pub fn accept(&mut self, id: [u8; 16], sent: u64, now: u64) -> Result<(), Refused> {
        if sent > now.saturating_add(self.skew) {
            return Err(Refused::Future {
                ahead: sent - now,
                skew: self.skew,
            });
        }
        let age = now.saturating_sub(sent);
        if age > self.window {
            return Err(Refused::Stale {
                age,
                window: self.window,
            });
        }
        if sent <= self.floor {
            return Err(Refused::Forgotten {
                sent,
                floor: self.floor,
            });
        }
        if self.seen.contains_key(&id) {
            return Err(Refused::Replayed);
        }
        self.prune(now);
        self.insert(id, sent);
        let mut line = format!("{} {sent}\n", hex::encode(id));
        while self.seen.len() > self.cap {
            let Some((old, old_id)) = self.by_date.pop_first() else {
                break;
            };
            self.seen.remove(&old_id);
            self.floor = self.floor.max(old);
            line.push_str(&format!("floor {}\n", self.floor));
        }
        self.persist(&line);
        Ok(())
    }

    /// Forgets the signals sent before the window (they are refused as stale anyway).
    pub fn prune(&mut self, now: u64) {
        let oldest = now.saturating_sub(self.window);
        while let Some(&(sent, id)) = self.by_date.first() {
            if sent >= oldest {
                break;
            }
            self.by_date.pop_first();
            self.seen.remove(&id);
        }
    }

    fn insert(&mut self, id: [u8; 16], sent: u64) {
        if let Some(old) = self.seen.insert(id, sent) {
            self.by_date.remove(&(old, id));
        }
        self.by_date.insert((sent, id));
    }

    fn load_line(&mut self, line: &str) {
        let mut words = line.split(' ');
        match (words.next(), words.next(), words.next()) {
            (Some("floor"), Some(n), None) => {
                if let Ok(n) = n.parse() {
                    self.floor = self.floor.max(n);
                }
            }
            (Some(id), Some(sent), None) => {
                let id = hex::decode(id)
                    .ok()
                    .and_then(|v| <[u8; 16]>::try_from(v).ok());
                if let (Some(id), Ok(sent)) = (id, sent.parse()) {
                    self.insert(id, sent);
                }
            }
            _ => tracing::debug!(target: LOG, line, "unreadable replay-set line skipped"),
        }
        // Entries at or below the floor were evicted later in the log.
        while let Some(&(sent, id)) = self.by_date.first() {
            if sent > self.floor {
                break;
            }
            self.by_date.pop_first();
            self.seen.remove(&id);
        }
    }

    /// Appends `lines` to the file (compacting it when it grew past twice the live set).
    fn persist(&mut self, lines: &str) {
        let Some(path) = self.file.clone() else {
            return;
        };
        self.lines += lines.lines().count();
        let result = if self.lines > 2 * self.seen.len() + 64 {
            self.compact()
        } else {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .and_then(|mut f| f.write_all(lines.as_bytes()))
        };
        if let Err(e) = result {
            // The signal is still delivered: only a restart could replay it.
            tracing::warn!(target: LOG, path = %path.display(), error = %e, "cannot write the replay set");
        }
    }

    /// Rewrites the file with the live set only (written aside, then renamed over).
    fn compact(&mut self) -> std::io::Result<()> {
        let Some(path) = &self.file else {
            return Ok(());
        };
        let mut text = format!("floor {}\n", self.floor);
        for (sent, id) in &self.by_date {
            text.push_str(&format!("{} {sent}\n", hex::encode(id)));
        }
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, path)?;
        self.lines = self.seen.len() + 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);
    const NOW: u64 = 1_800_000_000;

    fn id(n: u32) -> [u8; 16] {
        let mut id = [0; 16];
        id[..4].copy_from_slice(&n.to_be_bytes());
        id
    }

    #[test]
    fn a_replay_is_refused_even_after_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut g = ReplayGuard::open(dir.path(), DAY, NOW).expect("open");
        assert_eq!(g.accept(id(1), NOW - 10, NOW), Ok(()));
        assert_eq!(g.accept(id(1), NOW - 10, NOW + 1), Err(Refused::Replayed));
        drop(g);
        // A restart: the same signal, still within the window, is still a replay.
        let mut g = ReplayGuard::open(dir.path(), DAY, NOW + 60).expect("reopen");
        assert_eq!(g.len(), 1);
        assert_eq!(g.accept(id(1), NOW - 10, NOW + 60), Err(Refused::Replayed));
        assert_eq!(g.accept(id(2), NOW - 10, NOW + 60), Ok(()));
        // In memory only, a restart forgets (what the service did before).
        let mut m = ReplayGuard::in_memory(DAY);
        assert_eq!(m.accept(id(1), NOW - 10, NOW + 60), Ok(()));
    }

    #[test]
    fn future_dated_signals_are_refused_beyond_the_skew() {
        let mut g = ReplayGuard::in_memory(DAY);
        let skew = MAX_CLOCK_SKEW.as_secs();
        assert_eq!(g.accept(id(1), NOW + skew, NOW), Ok(()));
        assert_eq!(
            g.accept(id(2), NOW + skew + 1, NOW),
            Err(Refused::Future {
                ahead: skew + 1,
                skew
            })
        );
        assert_eq!(
            g.accept(id(3), u64::MAX, NOW),
            Err(Refused::Future {
                ahead: u64::MAX - NOW,
                skew
            })
        );
        assert_eq!(
            g.accept(id(4), NOW - DAY.as_secs() - 1, NOW),
            Err(Refused::Stale {
                age: DAY.as_secs() + 1,
                window: DAY.as_secs()
            })
        );
        assert_eq!(g.len(), 1);
    }

    #[test]
    fn pruning_keeps_the_set_to_one_window_and_the_file_compact() {
        let dir = tempfile::tempdir().expect("tempdir");
        let window = Duration::from_secs(100);
        let mut g = ReplayGuard::open(dir.path(), window, NOW).expect("open");
        // One signal a second for ten windows: the set never holds more than one window.
        for i in 0..1_000u32 {
            let now = NOW + u64::from(i);
            assert_eq!(g.accept(id(i), now, now), Ok(()));
            assert!(g.len() <= 101, "{} entries at {i}", g.len());
        }
        let lines = std::fs::read_to_string(dir.path().join(FILE_NAME))
            .expect("file")
            .lines()
            .count();
        assert!(lines <= 2 * 101 + 64 + 1, "{lines} lines in the file");
        // Reopened later, everything has left the window.
        let g = ReplayGuard::open(dir.path(), window, NOW + 2_000).expect("reopen");
        assert!(g.is_empty());
    }

    #[test]
    fn a_full_set_forgets_the_oldest_and_refuses_signals_that_old() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut g = ReplayGuard::open(dir.path(), DAY, NOW)
            .expect("open")
            .with_capacity(3);
        for i in 0..5u32 {
            assert_eq!(g.accept(id(i), NOW + u64::from(i), NOW + 10), Ok(()));
        }
        assert_eq!(g.len(), 3);
        // id(1) was forgotten: it cannot come back as new.
        let forgotten = Err(Refused::Forgotten {
            sent: NOW + 1,
            floor: NOW + 1,
        });
        assert_eq!(g.accept(id(1), NOW + 1, NOW + 10), forgotten);
        drop(g);
        let mut g = ReplayGuard::open(dir.path(), DAY, NOW + 10).expect("reopen");
        assert_eq!(g.len(), 3);
        assert_eq!(g.accept(id(1), NOW + 1, NOW + 10), forgotten);
        assert_eq!(g.accept(id(4), NOW + 4, NOW + 10), Err(Refused::Replayed));
    }

    #[test]
    fn a_damaged_file_loses_only_its_damaged_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join(FILE_NAME),
            format!(
                "{} {}\nnot a line\nzz {NOW}\n{}",
                hex::encode(id(1)),
                NOW - 5,
                &hex::encode(id(2))[..7]
            ),
        )
        .expect("write");
        let mut g = ReplayGuard::open(dir.path(), DAY, NOW).expect("open");
        assert_eq!(g.len(), 1);
        assert_eq!(g.accept(id(1), NOW - 5, NOW), Err(Refused::Replayed));
    }
}
