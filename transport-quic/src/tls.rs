//! TLS 1.3 configuration and the certificate verifiers: a peer is accepted only if it
//! presents the chain `[device certificate, account certificate]`, the device certificate is
//! issued by that account ([`verify_device`], expiry checked now, CRLs applied), and it signs
//! the handshake with the device key.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, SubjectPublicKeyInfoDer,
    UnixTime,
};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use swarm_api::identity::{ed25519_spki_der, verify_device, AccountCert, Crl, DeviceCert};
use swarm_api::node::LocalIdentity;
use swarm_api::traits::Peer;
use swarm_api::AccountUri;
use time::OffsetDateTime;

use crate::QuicError;

/// The ALPN protocol id of the swarm protocol.
pub const ALPN: &[u8] = b"swarm/1";

pub use swarm_api::traits::CrlLookup;

/// The crypto provider: ring, TLS 1.3 cipher suites only.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites.retain(|s| s.tls13().is_some());
    Arc::new(p)
}

fn der_of(what: &'static str, pem_text: &str) -> Result<CertificateDer<'static>, QuicError> {
    let block = pem::parse(pem_text).map_err(|e| QuicError::Identity(format!("{what}: {e}")))?;
    Ok(CertificateDer::from(block.into_contents()))
}

fn pem_of(der: &CertificateDer<'_>) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der.as_ref().to_vec()))
}

/// Our chain `[device, account]` and the device key, as rustls wants them.
fn credentials(
    me: &LocalIdentity,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), QuicError> {
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    let chain = vec![
        der_of("device certificate", me.device.cert().pem())?,
        der_of("account certificate", me.account.pem())?,
    ];
    let key = me
        .device
        .signing_key()
        .to_pkcs8_der()
        .map_err(|e| QuicError::Identity(format!("device key: {e}")))?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.as_bytes().to_vec()));
    Ok((chain, key))
}

/// Why a presented chain was refused (before it is turned into a rustls error).
fn check_chain(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    crls: &Option<CrlLookup>,
    own: &(AccountUri, Crl),
    now: UnixTime,
) -> Result<Peer, String> {
    let [account] = intermediates else {
        return Err(format!(
            "expected the chain [device, account], got {} certificates",
            intermediates.len() + 1
        ));
    };
    let device = DeviceCert::from_pem(&pem_of(end_entity)).map_err(|e| e.to_string())?;
    let account = AccountCert::from_pem(&pem_of(account)).map_err(|e| e.to_string())?;
    let mut list = crls.as_ref().map(|f| f(&account.uri())).unwrap_or_default();
    if own.0 == account.uri() {
        list.push(own.1.clone());
    }
    let now = i64::try_from(now.as_secs())
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .ok_or_else(|| "clock out of range".to_string())?;
    verify_device(&account, &device, &list, Some(now)).map_err(|e| e.to_string())?;
    Ok(Peer {
        device: device.id(),
        account: account.uri(),
    })
}

/// Checks again the chain a peer presented at the handshake, against the CRLs known *now*
/// (and the clock now): a device revoked after its connection was made is refused on that
/// connection too, not only at its next handshake.
pub(crate) fn recheck_chain(
    chain: &[CertificateDer<'_>],
    crls: &Option<CrlLookup>,
    own: &(AccountUri, Crl),
) -> Result<(), String> {
    let [end_entity, intermediates @ ..] = chain else {
        return Err("no certificate".into());
    };
    check_chain(end_entity, intermediates, crls, own, UnixTime::now()).map(|_| ())
}

/// The authenticated peer of a completed handshake, derived from its certificates (already
/// verified by the verifiers during the handshake).
pub(crate) fn peer_of_chain(chain: &[CertificateDer<'_>]) -> Option<Peer> {
    let [device, account] = chain else {
        return None;
    };
    let device = DeviceCert::from_pem(&pem_of(device)).ok()?;
    let account = AccountCert::from_pem(&pem_of(account)).ok()?;
    Some(Peer {
        device: device.id(),
        account: account.uri(),
    })
}

/// Verifies both peers' certificates (used as client and as server verifier).
#[derive(Clone)]
pub(crate) struct SwarmVerifier {
    crls: Option<CrlLookup>,
    own: (AccountUri, Crl),
    algorithms: WebPkiSupportedAlgorithms,
}

impl std::fmt::Debug for SwarmVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SwarmVerifier")
    }
}

impl SwarmVerifier {
    fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), rustls::Error> {
        match check_chain(end_entity, intermediates, &self.crls, &self.own, now) {
            Ok(peer) => {
                tracing::debug!(target: "transport_quic", device = %peer.device, account = %peer.account, "peer certificate chain verified");
                Ok(())
            }
            Err(reason) => {
                tracing::info!(target: "transport_quic", %reason, "peer certificate chain refused");
                Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::Other(rustls::OtherError(Arc::new(ChainRefused(
                        reason,
                    )))),
                ))
            }
        }
    }

    /// The handshake signature must be Ed25519 by the key of the (verified) device cert.
    fn verify_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        if dss.scheme != SignatureScheme::ED25519 {
            return Err(rustls::Error::PeerMisbehaved(
                rustls::PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme,
            ));
        }
        let device = DeviceCert::from_pem(&pem_of(cert)).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        let spki = SubjectPublicKeyInfoDer::from(ed25519_spki_der(device.public_key()));
        rustls::crypto::verify_tls13_signature_with_raw_key(message, &spki, dss, &self.algorithms)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct ChainRefused(String);

impl ServerCertVerifier for SwarmVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verify(end_entity, intermediates, now)
            .map(|_| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

impl ClientCertVerifier for SwarmVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.verify(end_entity, intermediates, now)
            .map(|_| ClientCertVerified::assertion())
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// TLS 1.2 is never accepted (QUIC requires 1.3; only its key exchange is forward-secret).
fn tls12_refused() -> rustls::Error {
    rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls13RequiredForQuic)
}

fn verifier(me: &LocalIdentity, crls: Option<CrlLookup>) -> Arc<SwarmVerifier> {
    Arc::new(SwarmVerifier {
        crls,
        own: (me.account.uri(), me.crl.clone()),
        algorithms: provider().signature_verification_algorithms,
    })
}

/// The rustls server configuration of a device: TLS 1.3 only, ALPN `swarm/1`, client
/// certificates mandatory and verified as device chains.
pub fn server_config(
    me: &LocalIdentity,
    crls: Option<CrlLookup>,
) -> Result<rustls::ServerConfig, QuicError> {
    let (chain, key) = credentials(me)?;
    let mut c = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| QuicError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier(me, crls))
        .with_single_cert(chain, key)
        .map_err(|e| QuicError::Tls(e.to_string()))?;
    c.alpn_protocols = vec![ALPN.to_vec()];
    c.max_early_data_size = 0;
    Ok(c)
}

/// The rustls client configuration of a device: TLS 1.3 only, ALPN `swarm/1`, presents the
/// device chain, verifies the server's chain as a device chain.
pub fn client_config(
    me: &LocalIdentity,
    crls: Option<CrlLookup>,
) -> Result<rustls::ClientConfig, QuicError> {
    let (chain, key) = credentials(me)?;
    let mut c = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| QuicError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier(me, crls))
        .with_client_auth_cert(chain, key)
        .map_err(|e| QuicError::Tls(e.to_string()))?;
    c.alpn_protocols = vec![ALPN.to_vec()];
    c.enable_early_data = false;
    Ok(c)
}
