//! Shared by the integration tests: identities and a local DHT of real `dhtnode` processes.
#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use rand_core::OsRng;
use swarm_api::identity::{forge_device_cert, Account};
use time::OffsetDateTime;
use transport_dht::testnet::{Testnet, TestnetError};
use transport_dht::Identity;

/// A fresh account with one device, valid now.
pub fn identity(name: &str) -> Identity {
    let now = OffsetDateTime::now_utc();
    let account = Account::generate(name, now, &mut OsRng).expect("account");
    let device = account.new_device(now, &mut OsRng).expect("device");
    Identity {
        account: account.cert().clone(),
        device_cert: device.cert().clone(),
        key: device.signing_key().clone(),
    }
}

/// A device that claims `victim`'s account, with a certificate signed by someone else's key.
pub fn forger_of(victim: &Identity) -> Identity {
    let now = OffsetDateTime::now_utc();
    let forger_key = SigningKey::generate(&mut OsRng);
    let key = SigningKey::generate(&mut OsRng);
    let cert =
        forge_device_cert(&victim.account, &forger_key, &key.verifying_key(), now).expect("forge");
    Identity {
        account: victim.account.clone(),
        device_cert: cert,
        key,
    }
}

/// `n` real dhtnode processes, or `None` (with the reason printed) where dhtnode is not
/// installed.
pub async fn testnet(n: usize) -> Option<Testnet> {
    match Testnet::start(n, Duration::from_secs(20)).await {
        Ok(t) => Some(t),
        Err(TestnetError::Missing) => {
            eprintln!("SKIPPED: dhtnode is not installed (run scripts/deps.sh)");
            None
        }
        Err(e) => panic!("cannot start the local DHT: {e}"),
    }
}

/// Polls `f` until it returns `Some`, or panics with `what` after `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A fresh identity and a CRL of its account revoking its device.
pub fn revoked_identity(name: &str) -> (Identity, swarm_api::identity::Crl) {
    let now = OffsetDateTime::now_utc();
    let account = Account::generate(name, now, &mut OsRng).expect("account");
    let device = account.new_device(now, &mut OsRng).expect("device");
    let crl = account.crl(&[device.cert()], 2, now).expect("crl");
    let id = Identity {
        account: account.cert().clone(),
        device_cert: device.cert().clone(),
        key: device.signing_key().clone(),
    };
    (id, crl)
}
