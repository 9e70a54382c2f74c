//! Sealed DHT signals from arbitrary bytes, addressed to a fixed device: a typed error, never a
//! panic (the header is taken from the input so the decryption path is reached).
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use swarm_api::identity::Account;
use transport_dht::Identity;

fn me() -> &'static Identity {
    static ME: OnceLock<Identity> = OnceLock::new();
    ME.get_or_init(|| {
        let now = time::OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("time");
        let account = Account::generate("Fuzz", now, &mut rand_core::OsRng).expect("account");
        let device = account
            .new_device(now, &mut rand_core::OsRng)
            .expect("device");
        Identity {
            account: account.cert().clone(),
            device_cert: device.cert().clone(),
            key: device.signing_key().clone(),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let me = me();
    let _ = transport_dht::seal::recipient(data);
    // Addressed to us, so `open` goes past the recipient check.
    let mut sealed = data.to_vec();
    if sealed.len() >= 36 {
        // The wire magic (transport-dht/src/seal.rs) and our device id.
        sealed[..4].copy_from_slice(b"SWS1");
        sealed[4..36].copy_from_slice(me.device_cert.id().as_bytes());
    }
    let _ = transport_dht::seal::open(me, &sealed, 1_800_000_000, &|_| Vec::new());
});
