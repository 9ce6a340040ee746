//! Decode throughput on real FreeSWITCH captures (`shared/fixtures/esl`).
//!
//! `cargo bench -p switchy-protocol` reports MB/s (criterion's "thrpt" with
//! bytes) and events/s (a second group with element throughput). The peer
//! comparison script `benches/peers/compare.sh` runs this and the Python
//! parser in one go and prints the ratio.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::path::PathBuf;
use switchy_protocol::esl::{Decoder, Message};

fn capture(name: &str) -> Vec<u8> {
    let dir = std::env::var_os("SWITCHY_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/esl")
        });
    let path = dir.join(format!("{name}.bin"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Decodes a whole capture; returns (frames, events).
fn decode_all(bytes: &[u8]) -> (usize, usize) {
    let mut d = Decoder::new();
    d.feed(bytes);
    let (mut frames, mut events) = (0, 0);
    while let Ok(Some(m)) = d.next_message() {
        frames += 1;
        if let Message::Event(_, e) = &m {
            events += 1;
            black_box(e.unique_id());
        }
        black_box(&m);
    }
    (frames, events)
}

/// Decodes a capture as a socket would deliver it: 16 KiB reads.
fn decode_chunked(bytes: &[u8]) -> usize {
    let mut d = Decoder::new();
    let mut events = 0;
    for chunk in bytes.chunks(16 * 1024) {
        d.feed(chunk);
        while let Ok(Some(m)) = d.next_message() {
            if matches!(m, Message::Event(..)) {
                events += 1;
            }
        }
    }
    events
}

fn bench(c: &mut Criterion) {
    for name in ["esl-session-plain", "esl-session-json"] {
        let bytes = capture(name);
        let (_, events) = decode_all(&bytes);
        let mut g = c.benchmark_group(format!("decode-bytes/{name}"));
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_function("whole", |b| b.iter(|| decode_all(black_box(&bytes))));
        g.bench_function("16KiB-reads", |b| {
            b.iter(|| decode_chunked(black_box(&bytes)))
        });
        g.finish();
        let mut g = c.benchmark_group(format!("decode-events/{name}"));
        g.throughput(Throughput::Elements(events as u64));
        g.bench_function("whole", |b| b.iter(|| decode_all(black_box(&bytes))));
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
