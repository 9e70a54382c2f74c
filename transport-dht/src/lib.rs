//! # transport-dht
//!
//! Discovery and signals over OpenDHT (DESIGN §6), against Debian's `libopendht-c` 2.4:
//!
//! - [`ffi`]: the safe wrapper over the C API (runner lifecycle, bootstrap, put / get /
//!   listen / cancel, shutdown; callbacks bridged into tokio channels). All `unsafe` of the
//!   crate lives there.
//! - [`record`]: discovery records (a device's QUIC addresses, signed by the device key, short
//!   lifetime); forged or stale ones are ignored.
//! - [`replay`]: the signals already delivered, kept on disk and pruned; future-dated ones
//!   are refused.
//! - [`seal`]: signals signed by the sender device and encrypted to the recipient device
//!   (HPKE, RFC 9180), so a DHT node on the path learns nothing and can forge nothing.
//! - [`Dht`]: the service a node runs (publish with refresh, resolve as a stream, send and
//!   receive signals on its account URI and device id); a [`swarm_api::traits::Transport`]
//!   with the signal role.
//! - [`testnet`]: real `dhtnode` processes on 127.0.0.1 for tests and benchmarks.
#![deny(missing_docs)]
#![deny(unsafe_code)]

#[allow(unsafe_code)]
pub mod ffi;
pub mod record;
pub mod replay;
pub mod seal;
mod service;
pub mod testnet;

use ed25519_dalek::SigningKey;
use swarm_api::identity::{AccountCert, DeviceCert};
use swarm_api::node::LocalIdentity;

pub use ffi::{FfiError, GetEvent, InfoHash, Listen, Runner};
pub use record::AddressRecord;
pub use service::{signal_key, unix_now, Dht, DhtConfig, DhtError, Status};

/// The identity the DHT service signs and decrypts with: this device's key and certificate
/// chain.
#[derive(Clone)]
pub struct Identity {
    /// The account certificate.
    pub account: AccountCert,
    /// This device's certificate.
    pub device_cert: DeviceCert,
    /// This device's Ed25519 key.
    pub key: SigningKey,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("device", &self.device_cert.id())
            .finish_non_exhaustive()
    }
}

impl From<&LocalIdentity> for Identity {
    fn from(me: &LocalIdentity) -> Self {
        Identity {
            account: me.account.clone(),
            device_cert: me.device.cert().clone(),
            key: me.device.signing_key().clone(),
        }
    }
}
