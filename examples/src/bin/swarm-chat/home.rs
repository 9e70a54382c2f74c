//! The app's home directory: identity files and the conversation storage.
//!
//! ```text
//! <home>/identity/account.key   PKCS#8 PEM (RFC 8410 v1, as openssl reads), mode 0600
//! <home>/identity/account.crt   account CA certificate
//! <home>/identity/device.key    PKCS#8 PEM (RFC 8410 v1, as openssl reads), mode 0600
//! <home>/identity/device.crt    device certificate issued by the account
//! <home>/identity/account.crl   the account's current CRL
//! <home>/storage.json           {"backend":"git"} or {"backend":"sled"}: chosen once
//! <home>/conversations/<id>/    git backend: one bare Git repository per conversation
//! <home>/sled/                  sled backend: one database for all conversations
//! <home>/peers.json             remembered peer addresses and refused devices (peers.rs)
//! <home>/requests.json          received invitations (requests.rs)
//! <home>/control.sock           the running `swarm-chat serve`'s control socket (control.rs)
//! ```
//! Private keys never enter a repository.

use std::fs;
use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use swarm_api::storage::Storage;
use swarm_git::GitStorage;
use swarm_sled::SledStorage;

/// Where a home keeps its conversations.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// One bare Git repository per conversation (stock git reads them).
    Git,
    /// One sled database for all conversations.
    Sled,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Git => "git",
            Backend::Sled => "sled",
        }
    }
}

/// The remembered choice (`<home>/storage.json`).
#[derive(serde::Serialize, serde::Deserialize)]
struct StorageConfig {
    backend: Backend,
}

const CONFIG: &str = "storage.json";

/// A loaded identity (the library's: account and device with their keys, and the CRL).
pub use swarm_api::host::Identity;

/// The app's home: the library's [`swarm_api::host::Home`] (identity, `0700`, the JSON state
/// files) plus where this app keeps conversations.
#[derive(Clone)]
pub struct Home {
    pub dir: PathBuf,
}

impl Home {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// The library's view of this home.
    pub fn lib(&self) -> swarm_api::host::Home {
        swarm_api::host::Home::new(&self.dir)
    }

    pub fn conversations_dir(&self) -> PathBuf {
        self.dir.join("conversations")
    }

    fn sled_dir(&self) -> PathBuf {
        self.dir.join("sled")
    }

    fn remembered_backend(&self) -> Result<Option<Backend>> {
        Ok(self
            .read_json::<Option<StorageConfig>>(CONFIG)?
            .map(|c| c.backend))
    }

    /// The backend of this home: the remembered one, else `requested` (default git), which is
    /// then remembered. Asking for another backend than the remembered one is refused: the
    /// conversations would seem to vanish.
    pub fn backend(&self, requested: Option<Backend>) -> Result<Backend> {
        let remembered = match self.remembered_backend()? {
            Some(b) => Some(b),
            // A home made before backends were remembered keeps Git repositories.
            None if fs::read_dir(self.conversations_dir())
                .map(|mut d| d.next().is_some())
                .unwrap_or(false) =>
            {
                Some(Backend::Git)
            }
            None => None,
        };
        match (remembered, requested) {
            (Some(r), Some(q)) if r != q => bail!(
                "this home keeps its conversations in the {} backend; refusing to switch it to {} \
                 (to move conversations, `swarm-chat conv export CONV DIR` them here and \
                 `swarm-chat --backend {} conv import DIR` them in another home)",
                r.name(),
                q.name(),
                q.name()
            ),
            (Some(r), _) => {
                if self.remembered_backend()?.is_none() {
                    self.remember(r)?;
                }
                Ok(r)
            }
            (None, q) => {
                let b = q.unwrap_or(Backend::Git);
                self.remember(b)?;
                Ok(b)
            }
        }
    }

    fn remember(&self, backend: Backend) -> Result<()> {
        self.write_json(CONFIG, &StorageConfig { backend })
    }

    /// Writes `<home>/<name>` as JSON atomically (a temporary file renamed over it).
    pub fn write_json<T: serde::Serialize>(&self, name: &str, value: &T) -> Result<()> {
        Ok(self.lib().write_json(name, value)?)
    }

    /// Reads `<home>/<name>` as JSON; the default when the file does not exist.
    pub fn read_json<T: serde::de::DeserializeOwned + Default>(&self, name: &str) -> Result<T> {
        Ok(self.lib().read_json(name)?)
    }

    /// Opens the conversation storage of `backend`.
    pub fn open_storage(&self, backend: Backend) -> Result<Box<dyn Storage>> {
        Ok(match backend {
            Backend::Git => Box::new(GitStorage::open(self.conversations_dir())?),
            Backend::Sled => Box::new(SledStorage::open(self.sled_dir()).with_context(|| {
                "cannot open the sled database (is another swarm-chat using this home?)"
            })?),
        })
    }

    pub fn has_identity(&self) -> bool {
        self.lib().has_identity()
    }

    /// Creates the account and this device (never over an existing one).
    pub fn create_identity(&self, name: &str) -> Result<Identity> {
        if self.has_identity() {
            bail!(
                "an identity already exists in {} (use `swarm-chat id show`)",
                self.dir.display()
            );
        }
        Ok(self.lib().create_identity(name)?)
    }

    /// Loads the identity.
    pub fn identity(&self) -> Result<Identity> {
        if !self.has_identity() {
            bail!(
                "no identity in {}: create one with `swarm-chat id new --name NAME`",
                self.dir.display()
            );
        }
        Ok(self.lib().identity()?)
    }
}
