//! The agent library's typed errors; each says what to fix.

use std::path::PathBuf;

/// The agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The TLS files are unusable.
    #[error(transparent)]
    Tls(#[from] switchy_link::TlsError),
    /// The config file could not be read.
    #[error("cannot read config {}: {source}", path.display())]
    ConfigRead {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not valid TOML for the agent.
    #[error("invalid config {}: {source}", path.display())]
    ConfigParse {
        /// The file.
        path: PathBuf,
        /// Where and why.
        source: toml::de::Error,
    },
}

/// Why one controller session ended (logged; the agent reconnects).
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    /// The controller's address does not resolve.
    #[error("controller address {0} does not resolve")]
    Resolve(String),
    /// A socket could not be opened.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    /// The QUIC connection could not start.
    #[error("cannot connect: {0}")]
    Connect(#[from] quinn::ConnectError),
    /// The QUIC connection failed or was closed.
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// A message could not be read or written.
    #[error(transparent)]
    Frame(#[from] switchy_link::FrameError),
    /// A stream could not be written.
    #[error("stream write failed: {0}")]
    Write(#[from] quinn::WriteError),
    /// The stream was already finished.
    #[error("stream closed: {0}")]
    Closed(#[from] quinn::ClosedStream),
    /// A message could not be encoded.
    #[error(transparent)]
    Wire(#[from] switchy_protocol::wire::WireError),
    /// The link refused to go on (refused, version mismatch …).
    #[error(transparent)]
    Link(#[from] switchy_protocol::link::agent::LinkError),
    /// The controller went away.
    #[error("{0}")]
    Gone(String),
}
