//! The CRLs a node knows: every CRL published in the conversations it stores. Fed to the
//! transports (the QUIC handshake, DHT records and signals) so that a device revoked by its
//! account is refused everywhere, not only when it commits.

use std::sync::Arc;

use crate::id::AccountUri;
use crate::identity::Crl;
use crate::storage::{ConversationObjects, Storage};
use crate::traits::CrlLookup;
use crate::validate::Engine;

/// The CRLs published in the conversations of a storage, read at their current heads.
pub struct KnownCrls {
    storage: Arc<dyn Storage>,
    engine: Arc<Engine>,
    /// CRLs known besides the conversations' (this device's own account's current one).
    extra: Vec<(AccountUri, Crl)>,
}

impl KnownCrls {
    /// The CRLs of `storage`'s conversations (states are read through `engine`'s cache).
    pub fn new(storage: Arc<dyn Storage>, engine: Arc<Engine>) -> Self {
        Self {
            storage,
            engine,
            extra: Vec::new(),
        }
    }

    /// Also knows `crl`, issued by `account` (a node adds its own account's current CRL,
    /// which may revoke a device before any conversation holds it).
    pub fn with(mut self, account: AccountUri, crl: Crl) -> Self {
        self.extra.push((account, crl));
        self
    }

    /// Every CRL `account` published in a stored conversation (each once). Conversations that
    /// cannot be read are skipped (and logged).
    pub fn of(&self, account: &AccountUri) -> Vec<Crl> {
        let convs = match self.storage.conversations() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(target: "swarm_api::host", error = %e, "cannot list conversations for CRLs");
                return Vec::new();
            }
        };
        let mut out: Vec<Crl> = self
            .extra
            .iter()
            .filter(|(a, _)| a == account)
            .map(|(_, c)| c.clone())
            .collect();
        for conv in convs {
            let Ok(Some(head)) = self.storage.head(&conv) else {
                continue;
            };
            let src = ConversationObjects {
                storage: &*self.storage,
                conv,
            };
            match self.engine.state_at(conv, &src, &head) {
                Ok(state) => {
                    for crl in self.engine.crls_of(conv, &src, &state, account) {
                        if !out.iter().any(|c| c.id() == crl.id()) {
                            out.push(Crl::clone(&crl));
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(target: "swarm_api::host", %conv, error = %e, "cannot read a conversation's CRLs");
                }
            }
        }
        out
    }

    /// A [`CrlLookup`] for a transport's config (`QuicConfig::crls`, `DhtConfig::crls`): reads
    /// the storage at each call, so a CRL that arrives later applies to the next handshake.
    pub fn lookup(self: Arc<Self>) -> CrlLookup {
        Arc::new(move |account| self.of(account))
    }
}
