//! Feeds arbitrary bytes, split at fuzzer-chosen points, to the ESL frame
//! decoder and the event decoders: nothing may panic, and memory stays
//! bounded by the configured limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchy_protocol::esl::{Decoder, DecoderConfig, Event, EventFormat, Message};

fuzz_target!(|data: &[u8]| {
    let Some((&split_seed, bytes)) = data.split_first() else {
        return;
    };
    let config = DecoderConfig {
        max_frame: 1 << 20,
        max_header_block: 1 << 14,
    };
    let mut d = Decoder::with_config(config);
    let step = usize::from(split_seed).max(1);
    for chunk in bytes.chunks(step) {
        d.feed(chunk);
        loop {
            match d.next_message() {
                Ok(Some(Message::Event(f, e))) => {
                    // Re-encoding a decoded event must decode again.
                    let again = e.encode(f);
                    let _ = Event::decode(f, &again);
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) if e.is_fatal() => return,
                Err(_) => {}
            }
        }
        assert!(d.buffered() <= config.max_frame + config.max_header_block + step);
    }
    for f in [EventFormat::Plain, EventFormat::Json, EventFormat::Xml] {
        let _ = Event::decode(f, bytes);
    }
});
