//! The link crate's typed errors; each message says what to fix.

use std::path::PathBuf;

/// Setting up mutual TLS or QUIC failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file's content could not be parsed.
    #[error("{what} unreadable: {detail}")]
    Unreadable {
        /// What was being read (`CA certificate`, `agent key` …).
        what: String,
        /// The parser's complaint.
        detail: String,
    },
    /// A PEM file held no certificate.
    #[error("no {what} found in {file}")]
    Missing {
        /// What was looked for.
        what: &'static str,
        /// The file (as configured).
        file: String,
    },
    /// rustls refused the configuration (a key that does not match its
    /// certificate, an unsupported key type …).
    #[error("TLS set-up failed: {0} (check that the key belongs to the certificate)")]
    Rustls(#[from] rustls::Error),
    /// The client-certificate verifier could not be built from the CA.
    #[error("TLS client verifier: {0} (check the CA file)")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// QUIC could not use the TLS configuration.
    #[error("QUIC TLS configuration: {0}")]
    Quic(String),
}

/// The cluster CA could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// A certificate name with characters a node id cannot have.
    #[error("certificate name {0:?}: use letters, digits, '-', '_' and '.' only")]
    BadName(String),
    /// The CA key file does not hold a key.
    #[error("CA key unreadable: {0}")]
    Key(rcgen::Error),
    /// Generating or signing a certificate failed.
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// A file could not be read or written.
    #[error("cannot {action} {}: {source}{hint}", path.display())]
    Io {
        /// `read`, `write`, `create`.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
        /// What to do about it (may be empty).
        hint: String,
    },
    /// `ca issue` would replace an issued certificate or key.
    #[error("{} exists: renew it with `ca issue … --force` (the old key stops working once the agent restarts with the new one)", .0.display())]
    Issued(PathBuf),
    /// `ca init` into a directory that has a CA.
    #[error("{} already holds a CA (ca.pem); remove it first or use another --dir", .0.display())]
    Exists(PathBuf),
}

/// Reading or writing one framed message on a QUIC stream failed.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The stream ended or the connection was lost.
    #[error("stream read failed: {0}")]
    Read(#[from] quinn::ReadExactError),
    /// The stream could not be written (connection lost or stopped).
    #[error("stream write failed: {0}")]
    Write(#[from] quinn::WriteError),
    /// The bytes were not a valid message (or too large).
    #[error(transparent)]
    Wire(#[from] switchy_protocol::wire::WireError),
}
