//! The FreeSWITCH Event Socket (ESL) protocol, sans-IO.
//!
//! - [`Decoder`] turns bytes from a FreeSWITCH server into [`Message`]s
//!   (client side); [`Command`] builds injection-proof client commands.
//! - [`CommandDecoder`], [`ParsedCommand`] and the `encode_*` functions of
//!   [`server`] speak as FreeSWITCH does (for mock-relay).
//! - [`Event`] is one type for plain, json and xml events.

pub mod args;
pub mod command;
pub mod event;
pub mod frame;
pub mod headers;
pub mod percent;
pub mod reply;
mod scan;
pub mod server;

pub use command::{CallCommand, Command, CommandError, SendMsg};
pub use event::{Event, EventError, EventFormat};
pub use frame::{DecodeError, Decoder, DecoderConfig, Frame, Message};
pub use headers::Headers;
pub use reply::{ApiResponse, CommandReply, ReplyError, api_result};
pub use server::{ClientCommand, ClientDecodeError, CommandDecoder, ParsedCommand};
