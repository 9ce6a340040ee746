//! SignalWire RELAY, the call-control protocol of SignalWire's SDKs
//! (JSON-RPC 2.0 over a WebSocket), sans-IO: frames ([`rpc`]), the JSON
//! Schemas of every method and event ([`schema`]), credentials and
//! protocol strings ([`auth`]), one connection's state ([`session`]),
//! acknowledgements ([`synth`]) and scripted events ([`scenario`]).
//! mock-relay's RELAY mode drives it over a socket; so will the controller.
#![forbid(unsafe_code)]

pub mod auth;
pub mod rpc;
pub mod scenario;
pub mod schema;
pub mod session;
pub mod synth;

/// The node id this server reports in its results and events.
pub const NODE_ID: &str = "mock-relay-node-1";

/// Seconds since the Unix epoch, as RELAY timestamps are written.
pub fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
