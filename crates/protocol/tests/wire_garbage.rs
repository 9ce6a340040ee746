//! The link's frame decoder on stable (the `wire_decoder` fuzz target's
//! ground): any bytes, split anywhere, give messages or errors, never a
//! panic; valid frames survive any split and garbage after them.

use proptest::prelude::*;
use switchy_protocol::wire::{self, AgentMsg, ControllerMsg, FrameDecoder, WireEvent};

fn drain(bytes: &[u8], chunk: usize) -> (Vec<AgentMsg>, bool) {
    let mut d = FrameDecoder::new(1 << 16);
    let mut c = FrameDecoder::new(1 << 16);
    let mut out = Vec::new();
    let mut failed = false;
    for part in bytes.chunks(chunk.max(1)) {
        d.feed(part);
        c.feed(part);
        loop {
            match d.next_msg::<AgentMsg>() {
                Ok(Some(m)) => {
                    if let AgentMsg::Events(batch) = &m {
                        for e in batch.clone() {
                            let _ = e.into_event();
                        }
                    }
                    out.push(m);
                }
                Ok(None) => break,
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        while let Ok(Some(_)) = c.next_msg::<ControllerMsg>() {}
        if failed {
            break;
        }
    }
    (out, failed)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600), chunk in 1usize..40) {
        let _ = drain(&bytes, chunk);
    }

    #[test]
    fn a_garbage_length_prefix_is_bounded(len in any::<u32>(), tail in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut bytes = len.to_be_bytes().to_vec();
        bytes.extend_from_slice(&tail);
        // A length above the limit is an error at once, not a wait for
        // gigabytes that never come.
        let (_, failed) = drain(&bytes, 5);
        if len as usize > 1 << 16 {
            prop_assert!(failed);
        }
    }

    #[test]
    fn valid_frames_survive_any_split(seqs in proptest::collection::vec(1u64..1_000_000, 1..6), chunk in 1usize..64, junk in proptest::collection::vec(any::<u8>(), 0..40)) {
        let mut bytes = Vec::new();
        for s in &seqs {
            let e = WireEvent { seq: *s, received_us: 7, headers: b"Event-Name: HEARTBEAT\n\n".to_vec(), body: None, plain: true };
            bytes.extend(wire::encode(&AgentMsg::Events(vec![e])).unwrap());
        }
        bytes.extend(&junk);
        let (msgs, _) = drain(&bytes, chunk);
        prop_assert!(msgs.len() >= seqs.len());
        for (m, s) in msgs.iter().zip(&seqs) {
            match m {
                AgentMsg::Events(b) => prop_assert_eq!(b[0].seq, *s),
                other => prop_assert!(false, "{:?}", other),
            }
        }
    }
}
