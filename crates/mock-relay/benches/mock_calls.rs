//! mock-relay throughput: complete calls per second (originate, loop back
//! into the node, answer, hang up) with every event delivered to one
//! subscribed client, and how many live channels one process holds.
//!
//!     cargo bench -p mock-relay --bench mock_calls [-- CALLS LIVE_CALLS RATE]
//!
//! Defaults: 30000 calls offered at 3000 calls/s (RATE 0: unpaced), then
//! 15000 parked calls (30000 live channels).
//!
//! Runs the mock in this process (its own runtime threads) and drives it over
//! real TCP with switchy-protocol's codec, like any ESL client.

use mock_relay::{Knobs, MockCluster, MockConfig};
use std::time::{Duration, Instant};
use switchy_protocol::esl::{Command, Decoder, EventFormat, Message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn connect(addr: std::net::SocketAddr) -> (TcpStream, Decoder) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.set_nodelay(true).ok();
    s.write_all(&Command::auth("ClueCon").unwrap().to_bytes())
        .await
        .unwrap();
    (s, Decoder::new())
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).map(|l| {
                l.split_whitespace()
                    .nth(1)
                    .unwrap_or("0")
                    .parse()
                    .unwrap_or(0)
            })
        })
        .unwrap_or(0)
}

/// Frames (not decodes) events until `n` CHANNEL_DESTROY have arrived, as
/// a cheap subscriber; returns (events, bytes).
async fn count_until_destroys(s: &mut TcpStream, d: &mut Decoder, n: usize) -> (u64, u64) {
    let mut buf = vec![0u8; 256 * 1024];
    let (mut events, mut bytes, mut destroys) = (0, 0, 0);
    loop {
        while let Some(f) = d.next_frame().expect("valid ESL") {
            if f.content_type() == Some("text/event-plain") {
                events += 1;
                if f.body
                    .as_deref()
                    .is_some_and(|b| b.starts_with(b"Event-Name: CHANNEL_DESTROY\n"))
                {
                    destroys += 1;
                    if destroys == n {
                        return (events, bytes);
                    }
                }
            }
        }
        let r = tokio::time::timeout(Duration::from_secs(60), s.read(&mut buf))
            .await
            .expect("progress")
            .unwrap();
        assert!(r > 0, "connection closed");
        bytes += r as u64;
        d.feed(&buf[..r]);
    }
}

/// Reads frames until `pred` says stop; returns (events, bytes).
async fn read_until(
    s: &mut TcpStream,
    d: &mut Decoder,
    mut f: impl FnMut(&Message) -> bool,
) -> (u64, u64) {
    let mut buf = vec![0u8; 256 * 1024];
    let (mut events, mut bytes) = (0, 0);
    loop {
        while let Some(m) = d.next_message().expect("valid ESL") {
            if matches!(m, Message::Event(..)) {
                events += 1;
            }
            if f(&m) {
                return (events, bytes);
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(60), s.read(&mut buf))
            .await
            .expect("progress")
            .unwrap();
        assert!(n > 0, "connection closed");
        bytes += n as u64;
        d.feed(&buf[..n]);
    }
}

async fn calls_per_second(calls: usize, rate: usize) {
    let knobs = Knobs {
        auto_answer_ms: Some(0),
        ..Knobs::default()
    };
    let m = MockCluster::start(MockConfig {
        knobs,
        journal_capacity: 10_000,
        ..MockConfig::ephemeral(1)
    })
    .await
    .unwrap();
    let addr = m.esl_addr(0);
    let (mut sub, mut sd) = connect(addr).await;
    sub.write_all(
        &Command::event(EventFormat::Plain, &["ALL"], &[])
            .unwrap()
            .to_bytes(),
    )
    .await
    .unwrap();
    let mut replies = 0;
    read_until(&mut sub, &mut sd, |m| {
        if matches!(m, Message::CommandReply(_)) {
            replies += 1;
        }
        replies == 2
    })
    .await;
    let (mut drv, mut dd) = connect(addr).await;
    read_until(&mut drv, &mut dd, |m| matches!(m, Message::CommandReply(_))).await;
    let started = Instant::now();
    // The driver pipelines the originates; the A leg runs `hangup` once answered.
    let driver = tokio::spawn(async move {
        // rate 0: as fast as possible; else paced in 10 ms ticks.
        let mut batch = Vec::new();
        let t0 = Instant::now();
        let mut sent = 0;
        while sent < calls {
            let due = if rate == 0 {
                calls
            } else {
                ((t0.elapsed().as_secs_f64() * rate as f64) as usize + 1).min(calls)
            };
            while sent < due {
                Command::bgapi(
                    "originate",
                    &format!("sofia/external/{sent}@127.0.0.1:5080 &hangup()"),
                    None,
                )
                .unwrap()
                .encode_into(&mut batch);
                sent += 1;
                if batch.len() > 64 * 1024 {
                    drv.write_all(&batch).await.unwrap();
                    batch.clear();
                }
            }
            drv.write_all(&batch).await.unwrap();
            batch.clear();
            if rate != 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        let mut n = 0;
        read_until(&mut drv, &mut dd, |m| {
            if matches!(m, Message::CommandReply(_)) {
                n += 1;
            }
            n == calls
        })
        .await;
    });
    // Each call ends with two CHANNEL_DESTROY events (one per leg).
    let (events, bytes) = count_until_destroys(&mut sub, &mut sd, 2 * calls).await;
    let secs = started.elapsed().as_secs_f64();
    driver.await.unwrap();
    let offered = if rate == 0 {
        "unpaced".to_string()
    } else {
        format!("offered at {rate} calls/s")
    };
    println!(
        "calls: {calls} complete calls (originate, loop back, answer, hangup; {offered}) in {secs:.2} s = {:.0} calls/s; \
         {events} events delivered to the subscriber ({:.0} events/s, {:.1} MB/s of ESL)",
        calls as f64 / secs,
        events as f64 / secs,
        bytes as f64 / secs / 1e6
    );
    m.stop().await;
}

async fn live_channels(calls: usize) {
    let m = MockCluster::start(MockConfig {
        journal_capacity: 10_000,
        ..MockConfig::ephemeral(1)
    })
    .await
    .unwrap();
    let addr = m.esl_addr(0);
    let (mut drv, mut dd) = connect(addr).await;
    read_until(&mut drv, &mut dd, |m| matches!(m, Message::CommandReply(_))).await;
    let rss0 = rss_kib();
    let started = Instant::now();
    let mut batch = Vec::new();
    for i in 0..calls {
        Command::bgapi(
            "originate",
            &format!("sofia/external/{i}@127.0.0.1:5080 &park()"),
            None,
        )
        .unwrap()
        .encode_into(&mut batch);
    }
    drv.write_all(&batch).await.unwrap();
    let mut n = 0;
    read_until(&mut drv, &mut dd, |m| {
        if matches!(m, Message::CommandReply(_)) {
            n += 1;
        }
        n == calls
    })
    .await;
    // Wait until every inbound leg exists.
    let want = 2 * calls;
    loop {
        drv.write_all(&Command::api("show", "channels count").unwrap().to_bytes())
            .await
            .unwrap();
        let mut text = String::new();
        read_until(&mut drv, &mut dd, |m| {
            if let Message::ApiResponse(a) = m {
                text = a.text().into_owned();
                true
            } else {
                false
            }
        })
        .await;
        let have: usize = text
            .trim()
            .split(' ')
            .next()
            .unwrap_or("0")
            .parse()
            .unwrap_or(0);
        if have >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let rss1 = rss_kib();
    println!(
        "live: {want} live channels ({calls} ringing calls, both legs) held after {secs:.2} s; RSS {} MiB -> {} MiB ({:.1} KiB per channel)",
        rss0 / 1024,
        rss1 / 1024,
        (rss1.saturating_sub(rss0)) as f64 / want as f64
    );
    let t = Instant::now();
    drv.write_all(&Command::api("hupall", "").unwrap().to_bytes())
        .await
        .unwrap();
    read_until(&mut drv, &mut dd, |m| matches!(m, Message::ApiResponse(_))).await;
    println!(
        "live: hupall of {want} channels took {:.2} s",
        t.elapsed().as_secs_f64()
    );
    m.stop().await;
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let calls = args.first().copied().unwrap_or(30_000);
    let live = args.get(1).copied().unwrap_or(15_000);
    let rate = args.get(2).copied().unwrap_or(3_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        calls_per_second(calls, rate).await;
        live_channels(live).await;
    });
}
