//! Wire formats of switchy, as pure data and codecs with no I/O.
//!
//! - [`esl`]: the FreeSWITCH Event Socket protocol (client and server side).
//! - [`wire`]: the agent ⇄ controller protocol (bincode frames).
// `unsafe` only for the SSE2 loads of `esl::scan`.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod esl;
pub mod link;
pub mod wire;
