//! The controller's side of mutual TLS: accept only agents whose certificate
//! the cluster CA signed, and read the node id from it.

use rustls::pki_types::CertificateDer;
use std::sync::Arc;

/// A QUIC server config requiring a CA-signed client certificate.
pub fn server_config(
    ca_pem: &[u8],
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<quinn::ServerConfig, crate::TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = crate::tls_client::ca_roots(ca_pem, "ca.pem")?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()?;
    let (chain, key) =
        crate::tls_client::identity(cert_pem, key_pem, "controller", "controller.pem")?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    tls.alpn_protocols = vec![switchy_protocol::wire::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| crate::TlsError::Quic(e.to_string()))?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = crate::tls_client::transport_config();
    transport.max_concurrent_bidi_streams(4096u32.into());
    cfg.transport_config(Arc::new(transport));
    Ok(cfg)
}

/// The node id in a peer certificate: its first DNS subject alternative
/// name (issued by `ca issue --name`).
pub fn peer_node_id(conn: &quinn::Connection) -> Option<String> {
    let id = conn.peer_identity()?;
    let certs = id.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    let leaf = certs.first()?;
    first_dns_name(leaf.as_ref())
}

/// The SHA-256 fingerprint (lowercase hex) of the peer's leaf certificate.
pub fn peer_fingerprint(conn: &quinn::Connection) -> Option<String> {
    let id = conn.peer_identity()?;
    let certs = id.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    Some(fingerprint(certs.first()?.as_ref()))
}

/// The SHA-256 fingerprint (lowercase hex) of a DER certificate: what a
/// revocation file lists (`switchy-controller ca fingerprint FILE.pem`).
pub fn fingerprint(der: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, der);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The fingerprints of every certificate in a PEM text.
pub fn pem_fingerprints(pem: &[u8]) -> Vec<String> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .map(|c| fingerprint(c.as_ref()))
        .collect()
}

/// Extracts the first dNSName SAN from a DER certificate with a minimal
/// scan (the SAN extension OID 2.5.29.17, then context tag [2] entries).
fn first_dns_name(der: &[u8]) -> Option<String> {
    const SAN_OID: &[u8] = &[0x06, 0x03, 0x55, 0x1d, 0x11];
    let pos = der.windows(SAN_OID.len()).position(|w| w == SAN_OID)? + SAN_OID.len();
    let mut i = pos;
    // Skip an optional critical BOOLEAN, then the OCTET STRING header,
    // then the SEQUENCE header.
    if der.get(i) == Some(&0x01) {
        i += 3;
    }
    let (_, after_octet) = header(der, i, 0x04)?;
    let (_, mut j) = header(der, after_octet, 0x30)?;
    while j < der.len() {
        let tag = der[j];
        let (len, start) = len_at(der, j + 1)?;
        if tag == 0x82 {
            return std::str::from_utf8(der.get(start..start + len)?)
                .ok()
                .map(str::to_owned);
        }
        j = start + len;
    }
    None
}

fn len_at(der: &[u8], i: usize) -> Option<(usize, usize)> {
    let b = *der.get(i)?;
    if b < 0x80 {
        return Some((b as usize, i + 1));
    }
    let n = (b & 0x7f) as usize;
    if n == 0 || n > 4 {
        return None;
    }
    let mut len = 0usize;
    for k in 0..n {
        len = (len << 8) | *der.get(i + 1 + k)? as usize;
    }
    Some((len, i + 1 + n))
}

fn header(der: &[u8], i: usize, tag: u8) -> Option<(usize, usize)> {
    if *der.get(i)? != tag {
        return None;
    }
    len_at(der, i + 1)
}

/// A TLS server config for a TCP listener (REST, RELAY's wss) from PEM
/// contents: no client certificate, TLS 1.2 and 1.3, these ALPN protocols.
pub fn tcp_server_config(
    cert_pem: &[u8],
    key_pem: &[u8],
    who: &str,
    flag: &str,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ServerConfig>, crate::TlsError> {
    let (chain, key) = crate::tls_client::identity(cert_pem, key_pem, who, flag)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;

    #[test]
    fn reads_the_node_name_from_an_issued_certificate() {
        let ca = crate::ca::new_ca().unwrap();
        let pem = crate::ca::issue(&ca, "fs-7", &[]).unwrap();
        let der = CertificateDer::pem_slice_iter(pem.cert.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(first_dns_name(der.as_ref()).as_deref(), Some("fs-7"));
        assert!(crate::ca::issue(&ca, "bad name", &[]).is_err());
    }
}
