//! What the agent and the controller share on their link, so that neither
//! depends on the other: QUIC endpoints with switchy's transport settings
//! (keep-alives, idle timeout, datagram size, socket buffers), both sides of
//! mutual TLS, the cluster CA (`switchy-controller ca`), length-prefixed
//! stream framing, and a process CPU sampler.

pub mod ca;
pub mod cpu;
pub mod error;
pub mod frame;

pub use error::{CaError, FrameError, TlsError};
mod tls_client;
mod tls_server;

/// Mutual TLS and QUIC set-up for both ends of the link.
pub mod tls {
    pub use crate::tls_client::*;
    pub use crate::tls_server::*;
}
