//! The agent's side of mutual TLS: trust only the cluster CA, present the
//! agent certificate.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;
use std::time::Duration;

use crate::TlsError;

/// The cluster CA's certificates in `ca_pem` (read from `file`).
pub(crate) fn ca_roots(ca_pem: &[u8], file: &str) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem) {
        let c = c.map_err(|e| TlsError::Unreadable {
            what: "CA certificate".into(),
            detail: e.to_string(),
        })?;
        roots.add(c)?;
    }
    if roots.is_empty() {
        return Err(TlsError::Missing {
            what: "CA certificate",
            file: file.to_owned(),
        });
    }
    Ok(roots)
}

/// `who`'s certificate chain (from `file`) and key.
pub fn identity(
    cert_pem: &[u8],
    key_pem: &[u8],
    who: &str,
    file: &str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Unreadable {
            what: format!("{who} certificate"),
            detail: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Missing {
            what: "certificate",
            file: file.to_owned(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Unreadable {
        what: format!("{who} key"),
        detail: e.to_string(),
    })?;
    Ok((chain, key))
}

/// A QUIC client config for the controller.
pub fn client_config(
    ca_pem: &[u8],
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<quinn::ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = ca_roots(ca_pem, "the [tls] ca file")?;
    let (chain, key) = identity(cert_pem, key_pem, "agent", "the [tls] cert file")?;
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    tls.alpn_protocols = vec![switchy_protocol::wire::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    cfg.transport_config(Arc::new(transport_config()));
    Ok(cfg)
}

/// Socket buffer size asked for on QUIC sockets (the kernel caps it at
/// `net.core.rmem_max` / `wmem_max`): the default ~200 KB overflows, and a
/// dropped datagram costs a retransmission timeout, under bursts of
/// multi-kilobyte events.
pub const QUIC_SOCKET_BUFFER: usize = 4 << 20;

/// A QUIC endpoint on a UDP socket bound to `addr`, with switchy's limits:
/// datagrams up to `wire::QUIC_MAX_UDP_PAYLOAD` (path MTU discovery
/// climbs to what the path allows) and large socket buffers. `server` makes
/// it accept connections.
pub fn quic_endpoint(
    addr: std::net::SocketAddr,
    server: Option<quinn::ServerConfig>,
) -> std::io::Result<quinn::Endpoint> {
    let socket = std::net::UdpSocket::bind(addr)?;
    match quinn::udp::UdpSocketState::new((&socket).into()) {
        Ok(state) => {
            for (what, r) in [
                (
                    "receive",
                    state.set_recv_buffer_size((&socket).into(), QUIC_SOCKET_BUFFER),
                ),
                (
                    "send",
                    state.set_send_buffer_size((&socket).into(), QUIC_SOCKET_BUFFER),
                ),
            ] {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "cannot enlarge the QUIC socket's {what} buffer");
                }
            }
        }
        Err(e) => tracing::debug!(error = %e, "cannot inspect the QUIC socket"),
    }
    let mut cfg = quinn::EndpointConfig::default();
    cfg.max_udp_payload_size(switchy_protocol::wire::QUIC_MAX_UDP_PAYLOAD)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    quinn::Endpoint::new(cfg, server, socket, Arc::new(quinn::TokioRuntime))
}

/// Keep-alive interval on an agent's link.
pub const KEEP_ALIVE: Duration = Duration::from_millis(300);
/// A link silent this long is dead (about four missed keep-alives).
pub const IDLE_TIMEOUT: Duration = Duration::from_millis(1500);

/// Transport settings shared by agents and the controller.
pub fn transport_config() -> quinn::TransportConfig {
    let mut transport = quinn::TransportConfig::default();
    // A dead peer (kill -9, a pulled cable) is noticed within
    // IDLE_TIMEOUT; keep-alives keep a quiet link from looking dead.
    transport.keep_alive_interval(Some(KEEP_ALIVE));
    // 1.5 s is far inside QUIC's idle-timeout range (2^62 ms).
    transport.max_idle_timeout(quinn::IdleTimeout::try_from(IDLE_TIMEOUT).ok());
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(switchy_protocol::wire::QUIC_MAX_UDP_PAYLOAD);
    transport.mtu_discovery_config(Some(mtu));
    transport
}
