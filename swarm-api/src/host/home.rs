//! A node's home directory: its identity files and its own small state files.
//!
//! ```text
//! <home>/                       mode 0700
//! <home>/identity/account.key   PKCS#8 PEM (RFC 8410 v1, as openssl reads), mode 0600
//! <home>/identity/account.crt   account CA certificate
//! <home>/identity/device.key    PKCS#8 PEM (RFC 8410 v1, as openssl reads), mode 0600
//! <home>/identity/device.crt    device certificate issued by the account
//! <home>/identity/account.crl   the account's current CRL
//! <home>/peers.json             remembered addresses and refused devices ([`super::PeerBook`])
//! <home>/requests.json          received invitations ([`super::Requests`])
//! ```
//! Where the conversations are kept is the [`crate::storage::Storage`]'s business (an app
//! usually puts them in the home too). Private keys never enter a repository.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::identity::{Account, Crl, Device, IdentityError};
use crate::node::LocalIdentity;
use crate::repo::Signer;

/// Errors of the home directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HomeError {
    /// A file or directory could not be read or written.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was tried ("read", "write", "create").
        action: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file exists but does not parse.
    #[error("{path} is damaged: {reason}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// Why it does not parse.
        reason: String,
    },
    /// There is no identity in this home yet.
    #[error("no identity in {0}: create one first")]
    NoIdentity(PathBuf),
    /// An identity exists already; it is never overwritten.
    #[error("an identity already exists in {0}")]
    IdentityExists(PathBuf),
    /// Generating keys or certificates failed.
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

/// The owned identity of a device: the account (with its key), this device (with its key)
/// and the account's CRL.
pub struct Identity {
    /// The account, with its private key.
    pub account: Account,
    /// This device, with its private key.
    pub device: Device,
    /// The account's current CRL.
    pub crl: Crl,
}

impl Identity {
    /// A signer borrowing this identity.
    pub fn signer(&self) -> Signer<'_> {
        Signer {
            account: self.account.cert(),
            device: &self.device,
            crl: &self.crl,
        }
    }

    /// What a [`crate::node::Node`] signs with (the account key is not needed there).
    pub fn into_local(self) -> LocalIdentity {
        LocalIdentity {
            account: self.account.cert().clone(),
            device: self.device,
            crl: self.crl,
        }
    }
}

/// A home directory (see the module docs for its layout).
#[derive(Debug, Clone)]
pub struct Home {
    dir: PathBuf,
}

fn io<'p>(action: &'static str, path: &'p Path) -> impl FnOnce(std::io::Error) -> HomeError + 'p {
    move |source| HomeError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

impl Home {
    /// The home at `dir` (nothing is created until something is written).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn id_dir(&self) -> PathBuf {
        self.dir.join("identity")
    }

    /// Creates the home directory if needed, readable by its owner only (0700).
    pub fn ensure(&self) -> Result<(), HomeError> {
        if self.dir.is_dir() {
            return Ok(());
        }
        let mut b = fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt as _;
            b.mode(0o700);
        }
        b.create(&self.dir).map_err(io("create", &self.dir))
    }

    /// Whether an identity was created here.
    pub fn has_identity(&self) -> bool {
        self.id_dir().join("account.crt").exists()
    }

    /// Creates a new account and its first device here. Refuses to overwrite one.
    pub fn create_identity(&self, name: &str) -> Result<Identity, HomeError> {
        if self.has_identity() {
            return Err(HomeError::IdentityExists(self.dir.clone()));
        }
        let now = time::OffsetDateTime::now_utc();
        let mut rng = rand_core::OsRng;
        let account = Account::generate(name, now, &mut rng)?;
        let device = account.new_device(now, &mut rng)?;
        let crl = account.crl(&[], 1, now)?;
        self.ensure()?;
        let dir = self.id_dir();
        fs::create_dir_all(&dir).map_err(io("create", &dir))?;
        let (akey, acrt) = account.to_pem()?;
        let (dkey, dcrt) = device.to_pem()?;
        write_private(&dir.join("account.key"), &akey)?;
        write_private(&dir.join("device.key"), &dkey)?;
        for (file, text) in [
            ("account.crt", acrt),
            ("device.crt", dcrt),
            ("account.crl", crl.pem().to_owned()),
        ] {
            let path = dir.join(file);
            fs::write(&path, text).map_err(io("write", &path))?;
        }
        Ok(Identity {
            account,
            device,
            crl,
        })
    }

    /// Loads the identity created here.
    pub fn identity(&self) -> Result<Identity, HomeError> {
        if !self.has_identity() {
            return Err(HomeError::NoIdentity(self.dir.clone()));
        }
        let dir = self.id_dir();
        let read = |f: &str| {
            let path = dir.join(f);
            fs::read_to_string(&path).map_err(io("read", &path))
        };
        let damaged = |f: &str| {
            let path = dir.join(f);
            move |e: IdentityError| HomeError::Damaged {
                path,
                reason: e.to_string(),
            }
        };
        let account = Account::from_pem(&read("account.key")?, &read("account.crt")?)
            .map_err(damaged("account.key"))?;
        let device = Device::from_pem(&read("device.key")?, &read("device.crt")?)
            .map_err(damaged("device.key"))?;
        let crl = Crl::from_pem(&read("account.crl")?).map_err(damaged("account.crl"))?;
        Ok(Identity {
            account,
            device,
            crl,
        })
    }

    /// Reads `<home>/<name>` as JSON; a missing file is `T::default()`.
    pub fn read_json<T: serde::de::DeserializeOwned + Default>(
        &self,
        name: &str,
    ) -> Result<T, HomeError> {
        let path = self.dir.join(name);
        match fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| HomeError::Damaged {
                path,
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
            Err(e) => Err(io("read", &path)(e)),
        }
    }

    /// Writes `<home>/<name>` as JSON, atomically (a temporary file renamed over it).
    pub fn write_json<T: serde::Serialize>(&self, name: &str, value: &T) -> Result<(), HomeError> {
        self.ensure()?;
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!("{name}.tmp"));
        let text = serde_json::to_string_pretty(value).map_err(|e| HomeError::Damaged {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        fs::write(&tmp, text).map_err(io("write", &tmp))?;
        fs::rename(&tmp, &path).map_err(io("write", &path))
    }

    /// Reads, changes and writes `<home>/<name>` under `lock` (one writer per process).
    pub fn update_json<T, R>(
        &self,
        name: &str,
        lock: &std::sync::Mutex<()>,
        f: impl FnOnce(&mut T) -> R,
    ) -> Result<R, HomeError>
    where
        T: serde::Serialize + serde::de::DeserializeOwned + Default,
    {
        let _guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut value = self.read_json(name)?;
        let r = f(&mut value);
        self.write_json(name, &value)?;
        Ok(r)
    }
}

fn write_private(path: &Path, content: &str) -> Result<(), HomeError> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(io("create", path))?;
    f.write_all(content.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io("write", path))
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn a_new_home_is_private_and_its_identity_loads_back() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let home = Home::new(tmp.path().join("h"));
        let id = home.create_identity("Ann").expect("create");
        let mode = fs::metadata(home.dir()).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let key = fs::metadata(home.dir().join("identity/device.key")).expect("meta");
        assert_eq!(key.permissions().mode() & 0o777, 0o600);
        let back = home.identity().expect("load");
        assert_eq!(back.device.id(), id.device.id());
        assert_eq!(back.account.uri(), id.account.uri());
        assert!(matches!(
            home.create_identity("Ann"),
            Err(HomeError::IdentityExists(_))
        ));
    }

    #[test]
    fn a_damaged_file_is_a_typed_error_not_a_default() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let home = Home::new(tmp.path());
        fs::write(tmp.path().join("x.json"), b"{not json").expect("write");
        assert!(matches!(
            home.read_json::<Vec<u8>>("x.json"),
            Err(HomeError::Damaged { .. })
        ));
        assert_eq!(
            home.read_json::<Vec<u8>>("missing.json").expect("ok"),
            Vec::<u8>::new()
        );
        assert!(matches!(home.identity(), Err(HomeError::NoIdentity(_))));
    }
}
