//! Certificates and CRLs, native (PEM text, and arbitrary DER wrapped in PEM) and jamid chains:
//! never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use swarm_api::identity::{AccountCert, Crl, DeviceCert};

fn pem(tag: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {tag}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {tag}-----\n"));
    out
}

fuzz_target!(|data: &[u8]| {
    let cert = pem("CERTIFICATE", data);
    let _ = AccountCert::from_pem(&cert);
    let _ = DeviceCert::from_pem(&cert);
    let _ = Crl::from_pem(&pem("X509 CRL", data));
    let _ = swarm_api::jami::parse_pem_chain(cert.as_bytes());
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = AccountCert::from_pem(text);
        let _ = DeviceCert::from_pem(text);
        let _ = Crl::from_pem(text);
    }
});
