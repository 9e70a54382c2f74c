//! The app's home directory: identity files and the conversation storage.
//!
//! ```text
//! <home>/identity/account.key   PKCS#8 PEM, mode 0600
//! <home>/identity/account.crt   account CA certificate
//! <home>/identity/device.key    PKCS#8 PEM, mode 0600
//! <home>/identity/device.crt    device certificate issued by the account
//! <home>/identity/account.crl   the account's current CRL
//! <home>/conversations/<id>/    one bare Git repository per conversation
//! ```
//! Private keys never enter a repository.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use swarm_api::identity::{Account, Crl, Device};
use swarm_api::repo::Signer;
use time::OffsetDateTime;

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
