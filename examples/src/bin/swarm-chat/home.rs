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
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use swarm_api::identity::{Account, Crl, Device};
use swarm_api::repo::Signer;
use swarm_api::storage::Storage;
use swarm_git::GitStorage;
use swarm_sled::SledStorage;
use time::OffsetDateTime;

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

/// A loaded identity.
pub struct Identity {
    pub account: Account,
    pub device: Device,
    pub crl: Crl,
}

impl Identity {
    pub fn signer(&self) -> Signer<'_> {
        Signer {
            account: self.account.cert(),
            device: &self.device,
            crl: &self.crl,
        }
    }
}

#[derive(Clone)]
pub struct Home {
    pub dir: PathBuf,
}

impl Home {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    fn id_dir(&self) -> PathBuf {
        self.dir.join("identity")
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
        fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!("{name}.tmp"));
        fs::write(&tmp, serde_json::to_string_pretty(value)?)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    }

    /// Loads `<home>/<name>`, lets `f` change it and saves it, holding `lock` (the
    /// process-wide lock of that file) throughout; returns what `f` returned.
    pub fn update_json<T, R>(
        &self,
        name: &str,
        lock: &std::sync::Mutex<()>,
        f: impl FnOnce(&mut T) -> R,
    ) -> Result<R>
    where
        T: serde::Serialize + serde::de::DeserializeOwned + Default,
    {
        let _guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut value = self.read_json(name)?;
        let r = f(&mut value);
        self.write_json(name, &value)?;
        Ok(r)
    }

    /// Reads `<home>/<name>` as JSON; the default when the file does not exist.
    pub fn read_json<T: serde::de::DeserializeOwned + Default>(&self, name: &str) -> Result<T> {
        let path = self.dir.join(name);
        match fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .with_context(|| format!("{} is damaged", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
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
        self.id_dir().join("account.crt").exists()
    }

    /// Creates the account and this device.
    pub fn create_identity(&self, name: &str) -> Result<Identity> {
        if self.has_identity() {
            bail!(
                "an identity already exists in {} (use `swarm-chat id show`)",
                self.dir.display()
            );
        }
        let now = OffsetDateTime::now_utc();
        let mut rng = rand_core::OsRng;
        let account = Account::generate(name, now, &mut rng)?;
        let device = account.new_device(now, &mut rng)?;
        let crl = account.crl(&[], 1, now)?;
        let dir = self.id_dir();
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let (akey, acrt) = account.to_pem()?;
        let (dkey, dcrt) = device.to_pem()?;
        write_private(&dir.join("account.key"), &akey)?;
        write_private(&dir.join("device.key"), &dkey)?;
        fs::write(dir.join("account.crt"), acrt)?;
        fs::write(dir.join("device.crt"), dcrt)?;
        fs::write(dir.join("account.crl"), crl.pem())?;
        Ok(Identity {
            account,
            device,
            crl,
        })
    }

    /// Loads the identity, with a clear error when there is none.
    pub fn identity(&self) -> Result<Identity> {
        if !self.has_identity() {
            bail!(
                "no identity in {}: create one with `swarm-chat id new --name NAME`",
                self.dir.display()
            );
        }
        let dir = self.id_dir();
        let read = |f: &str| {
            fs::read_to_string(dir.join(f))
                .with_context(|| format!("cannot read {}", dir.join(f).display()))
        };
        let account = Account::from_pem(&read("account.key")?, &read("account.crt")?)
            .context("the account files are damaged")?;
        let device = Device::from_pem(&read("device.key")?, &read("device.crt")?)
            .context("the device files are damaged")?;
        let crl = Crl::from_pem(&read("account.crl")?).context("the CRL is damaged")?;
        Ok(Identity {
            account,
            device,
            crl,
        })
    }
}

/// Writes a private key readable by the owner only (created with mode 0600, never wider).
fn write_private(path: &Path, content: &str) -> Result<()> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(content.as_bytes())?;
    f.sync_all()?;
    Ok(())
}
