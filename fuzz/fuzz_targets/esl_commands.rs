//! Feeds arbitrary bytes to the server-side client-command decoder and
//! keyword parser (what mock-relay reads from clients).
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchy_protocol::esl::{CommandDecoder, ParsedCommand};

fuzz_target!(|data: &[u8]| {
    let mut d = CommandDecoder::with_max_block(1 << 14);
    for chunk in data.chunks(7) {
        d.feed(chunk);
        while let Ok(Some(c)) = d.next_command() {
            let _ = ParsedCommand::parse(&c.line);
        }
    }
});
