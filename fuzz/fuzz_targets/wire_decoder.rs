//! Feeds arbitrary bytes, in chunks, to the link's frame decoder as both
//! sides read it (agent → controller and controller → agent messages), and
//! turns every decoded event batch into events (what a hostile or broken
//! peer on the QUIC link could send).
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchy_protocol::wire::{AgentMsg, ControllerMsg, FrameDecoder};

fuzz_target!(|data: &[u8]| {
    let mut a = FrameDecoder::new(1 << 16);
    let mut c = FrameDecoder::new(1 << 16);
    for chunk in data.chunks(11) {
        a.feed(chunk);
        c.feed(chunk);
        while let Ok(Some(m)) = a.next_msg::<AgentMsg>() {
            if let AgentMsg::Events(batch) = m {
                for e in batch {
                    let _ = e.into_event();
                }
            }
        }
        while let Ok(Some(_)) = c.next_msg::<ControllerMsg>() {}
    }
});
