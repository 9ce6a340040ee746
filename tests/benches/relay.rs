//! Relay benchmarks: mock-relay → switchy-agent → switchy-controller, all on
//! loopback in this process (2 tokio workers), over real TCP and QUIC.
//!
//!     cargo bench -p switchy-e2e --bench relay
//!     cargo bench -p switchy-e2e --bench relay -- [CALLS] [throughput|replay|latency|rest]…
//!
//! 1. throughput: complete calls (44 channel events each, real FreeSWITCH
//!    header lists) originated unpaced; events/s applied by the controller;
//!    then the same calls' events rendered beforehand and replayed by the
//!    mock as fast as the agent reads (switchy's relay capacity without the
//!    simulated FreeSWITCH's own rendering on the same 2 cores);
//! 2. latency at ~10,000 events/s (from a fresh connection, then after a
//!    2 s warm-up at the same rate): event creation in the mock
//!    (Event-Date-Timestamp) to the controller's tracker update, p50/p99;
//! 3. REST → FreeSWITCH → reply: `POST /api/v1/api {"command":"status"}`
//!    round trips, p50/p99 (a new TCP connection per request).

// The binaries' allocator (switchy-agent, switchy-controller, mock-relay).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use mock_relay::{Knobs, MockConfig};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use switchy_controller::ClusterEvent;
use switchy_e2e::*;
use switchy_protocol::esl::{Command, Decoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The relay figures are per event, with every event subscribed (the
/// agents' default is the smaller `CORE_EVENTS`).
fn all_events() -> Option<Vec<String>> {
    Some(vec!["ALL".into()])
}

/// One mock node whose calls answer at once (a small journal).
fn answering_mock() -> MockConfig {
    MockConfig {
        knobs: Knobs {
            auto_answer_ms: Some(0),
            ..Knobs::default()
        },
        journal_capacity: 1000,
        ..MockConfig::ephemeral(1)
    }
}

/// An [`answering_mock`] node, its agent (ALL events) and a controller.
async fn answering_node() -> Harness {
    Harness::start_with_events(answering_mock(), all_events())
        .await
        .unwrap()
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn pct(v: &mut [u64], p: f64) -> u64 {
    v.sort_unstable();
    if v.is_empty() {
        return 0;
    }
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// Sends `calls` originates (each loops back, answers at once and hangs up)
/// at `rate` calls/s (0: unpaced) through a raw ESL connection.
async fn drive(esl: std::net::SocketAddr, calls: usize, rate: usize) {
    let mut s = tokio::net::TcpStream::connect(esl).await.unwrap();
    s.write_all(&Command::auth("ClueCon").unwrap().to_bytes())
        .await
        .unwrap();
    // Drain replies in the background until every command is answered
    // (the mock serves a connection's commands one by one).
    let (mut rd, mut wr) = s.into_split();
    let drain = tokio::spawn(async move {
        let mut d = Decoder::new();
        let mut buf = vec![0u8; 65536];
        let mut replies = 0;
        while let Ok(n) = rd.read(&mut buf).await {
            if n == 0 {
                break;
            }
            d.feed(&buf[..n]);
            while let Ok(Some(f)) = d.next_frame() {
                if f.content_type() == Some("command/reply") {
                    replies += 1;
                }
            }
            if replies > calls {
                break;
            }
        }
    });
    let t0 = Instant::now();
    let mut sent = 0;
    let mut batch = Vec::new();
    while sent < calls {
        let due = if rate == 0 {
            calls
        } else {
            ((t0.elapsed().as_secs_f64() * rate as f64) as usize + 1).min(calls)
        };
        while sent < due {
            Command::bgapi("originate", &format!("{{sip_h_X-switchy-orig-uuid=c{sent}}}sofia/external/{sent}@127.0.0.1:5080 &hangup()"), None)
                .unwrap()
                .encode_into(&mut batch);
            sent += 1;
        }
        wr.write_all(&batch).await.unwrap();
        batch.clear();
        if rate != 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let _ = drain.await;
}

/// Polls `progress` every `step` until it says done; `progress` returns
/// (done, events sent by the mock, events applied by the controller), shown
/// every 5 s so a stuck run says where it is.
async fn wait_applied(label: &str, step: Duration, mut progress: impl FnMut() -> (bool, u64, u64)) {
    let mut last_report = Instant::now();
    loop {
        let (done, sent, got) = progress();
        if done {
            return;
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            eprintln!(
                "{label}: waiting: the mock sent {sent} events, the controller applied {got}"
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(step).await;
    }
}

async fn throughput(calls: usize) {
    let h = answering_node().await;
    h.wait_nodes_up().await.unwrap();
    let c = h.ctl().cluster.clone();
    let before = c.counters().events.load(Ordering::Relaxed);
    let sent_before = h.mock.events_sent();
    let t0 = Instant::now();
    drive(h.mock.esl_addr(0), calls, 0).await;
    // Until the controller has applied everything the mock sent the agent.
    wait_applied("throughput", Duration::from_millis(5), || {
        let sent = h.mock.events_sent() - sent_before;
        let got = c.counters().events.load(Ordering::Relaxed) - before;
        (got >= sent && sent >= (calls as u64) * 40, sent, got)
    })
    .await;
    let secs = t0.elapsed().as_secs_f64();
    let events = c.counters().events.load(Ordering::Relaxed) - before;
    println!(
        "throughput: {events} events ({calls} calls) relayed mock -> agent -> controller in {secs:.2} s = {:.0} events/s applied",
        events as f64 / secs
    );
}

/// The plain event frames a mock node writes for `calls` complete calls
/// (captured on a separate mock through an `event plain ALL` connection),
/// and how many events they are.
async fn capture(calls: usize) -> (Vec<u8>, Vec<usize>) {
    let m = mock_relay::MockCluster::start(answering_mock())
        .await
        .unwrap();
    let mut s = tokio::net::TcpStream::connect(m.esl_addr(0)).await.unwrap();
    let mut sub = Vec::new();
    Command::auth("ClueCon").unwrap().encode_into(&mut sub);
    Command::event(switchy_protocol::esl::EventFormat::Plain, &["ALL"], &[])
        .unwrap()
        .encode_into(&mut sub);
    s.write_all(&sub).await.unwrap();
    let reader = tokio::spawn(async move {
        let (mut frames, mut starts, mut destroyed, mut replies) = (Vec::new(), Vec::new(), 0, 0);
        let mut d = Decoder::new();
        let mut buf = vec![0u8; 256 * 1024];
        while destroyed < 2 * calls {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "capture connection closed");
            d.feed(&buf[..n]);
            while let Ok(Some(f)) = d.next_frame() {
                match f.content_type() {
                    Some("command/reply") => replies += 1,
                    Some("text/event-plain") => {
                        let body = f.body.unwrap_or_default();
                        if body.starts_with(b"Event-Name: CHANNEL_DESTROY\n") {
                            destroyed += 1;
                        }
                        starts.push(frames.len());
                        switchy_protocol::esl::server::encode_event_body(
                            &body,
                            switchy_protocol::esl::EventFormat::Plain,
                            &mut frames,
                        );
                    }
                    _ => {}
                }
            }
        }
        assert!(replies >= 2, "capture subscription not acknowledged");
        (frames, starts)
    });
    // Let the subscription land before the calls start.
    tokio::time::sleep(Duration::from_millis(100)).await;
    drive(m.esl_addr(0), calls, 0).await;
    let got = reader.await.unwrap();
    m.stop().await;
    got
}

/// Relay capacity: the frames of `calls` complete calls, rendered
/// beforehand, replayed by the mock node as fast as the agent reads them;
/// events/s applied by the controller.
async fn replay_throughput(calls: usize) {
    let (frames, starts) = capture(calls).await;
    let events = starts.len() as u64;
    let bytes = frames.len();
    let h = answering_node().await;
    h.wait_nodes_up().await.unwrap();
    let c = h.ctl().cluster.clone();
    let before = c.counters().events.load(Ordering::Relaxed);
    let t0 = Instant::now();
    assert_eq!(h.mock.replay(0, frames.into(), 0..bytes, events).await, 1);
    wait_applied("replay", Duration::from_millis(1), || {
        let got = c.counters().events.load(Ordering::Relaxed) - before;
        (got >= events, events, got)
    })
    .await;
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "replay: {events} events ({calls} calls, {:.1} MB of plain ESL, pre-rendered) relayed mock -> agent -> controller in {secs:.2} s = {:.0} events/s applied ({:.0} MB/s)",
        bytes as f64 / 1e6,
        events as f64 / secs,
        bytes as f64 / 1e6 / secs
    );
}

/// Sustained relay rate: pre-rendered frames (complete calls, replayed in a
/// loop) written by the mock at `rate` events/s for `secs` seconds, evenly
/// paced in 2 ms steps; prints the controller's applied rate per second and
/// how far behind it is when the mock stops.
async fn sustained(rate: u64, secs: u64) {
    let (frames, starts) = capture(3000).await;
    let n = starts.len() as u64;
    let frames: std::sync::Arc<[u8]> = frames.into();
    let h = answering_node().await;
    h.wait_nodes_up().await.unwrap();
    let c = h.ctl().cluster.clone();
    let applied = || c.counters().events.load(Ordering::Relaxed);
    let before = applied();
    let total = rate * secs;
    let (mut sent, mut last_second, mut at_second) = (0u64, 0u64, before);
    let t0 = Instant::now();
    while sent < total {
        let due = ((t0.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
        while sent < due {
            // Up to the end of the capture, then wrap around.
            let i = (sent % n) as usize;
            let take = (due - sent).min(n - i as u64);
            let end = starts
                .get(i + take as usize)
                .copied()
                .unwrap_or(frames.len());
            h.mock.replay(0, frames.clone(), starts[i]..end, take).await;
            sent += take;
        }
        let s = t0.elapsed().as_secs();
        if s > last_second {
            let now = applied();
            println!("sustained: second {s}: {} events applied", now - at_second);
            (last_second, at_second) = (s, now);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let offered_secs = t0.elapsed().as_secs_f64();
    let behind = total.saturating_sub(applied() - before);
    wait_applied("sustained", Duration::from_millis(1), || {
        let got = applied() - before;
        (got >= total, total, got)
    })
    .await;
    let drain = t0.elapsed().as_secs_f64() - offered_secs;
    println!(
        "sustained: {total} events offered at {rate}/s for {offered_secs:.2} s; {behind} not yet applied when the mock stopped, all applied {:.0} ms later: {:.0} events/s applied overall",
        drain * 1e3,
        total as f64 / (offered_secs + drain)
    );
}

async fn latency(seconds: u64, events_per_s: usize, warmup_s: u64) {
    let h = answering_node().await;
    h.wait_nodes_up().await.unwrap();
    // Each call produces 44 channel events plus API/BACKGROUND_JOB.
    let rate = (events_per_s / 46).max(1);
    if warmup_s > 0 {
        // The same load on the fresh connection first (QUIC slow start,
        // first allocations), not measured.
        drive(h.mock.esl_addr(0), rate * warmup_s as usize, rate).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut rx = h.ctl().cluster.subscribe(
        "bench",
        switchy_controller::pipeline::Feed::Everything,
        65_536,
    );
    let collect = tokio::spawn(async move {
        let mut lat = Vec::new();
        while let Some(ev) = rx.recv().await {
            if let ClusterEvent::Event(_, e) = ev
                && let Some(ts) = e.timestamp()
            {
                lat.push(now_us().saturating_sub(ts));
            }
        }
        lat
    });
    let calls = rate * seconds as usize;
    let buckets = |h: &Harness| -> Vec<u64> {
        h.ctl()
            .cluster
            .counters()
            .latency_buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect()
    };
    let before = buckets(&h);
    let agent_before: Vec<u64> = h
        .ctl()
        .cluster
        .counters()
        .agent_latency_buckets
        .iter()
        .map(|b| b.load(Ordering::Relaxed))
        .collect();
    let t0 = Instant::now();
    drive(h.mock.esl_addr(0), calls, rate).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let secs = t0.elapsed().as_secs_f64();
    let after = buckets(&h);
    let agent_part: Vec<u64> = h
        .ctl()
        .cluster
        .counters()
        .agent_latency_buckets
        .iter()
        .zip(&agent_before)
        .map(|(a, b)| a.load(Ordering::Relaxed) - b)
        .collect();
    drop(h);
    let mut lat = collect.await.unwrap_or_default();
    let n = lat.len();
    let (p50, p99, max) = (pct(&mut lat, 0.5), pct(&mut lat, 0.99), pct(&mut lat, 1.0));
    // The controller's own histogram, taken at the tracker update.
    let counts: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    // Upper bound of the bucket holding quantile q.
    let bound = |counts: &[u64], q: f64| {
        let total: u64 = counts.iter().sum();
        let want = (total as f64 * q).ceil() as u64;
        let mut cum = 0;
        for (i, c) in counts.iter().enumerate() {
            cum += c;
            if cum >= want {
                return switchy_controller::cluster::LATENCY_BUCKETS[i];
            }
        }
        u64::MAX
    };
    println!(
        "latency{}: {n} events at {:.0} events/s ({rate} calls/s): mock event time -> controller tracker update: \
         histogram p50 <= {:.2} ms, p99 <= {:.2} ms (of which agent receipt -> tracker update p50 <= {:.2} ms, p99 <= {:.2} ms); \
         seen by an event subscriber p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        if warmup_s > 0 {
            format!(" (after a {warmup_s} s warm-up)")
        } else {
            " (from a fresh connection)".to_string()
        },
        n as f64 / secs,
        bound(&counts, 0.5) as f64 / 1e3,
        bound(&counts, 0.99) as f64 / 1e3,
        bound(&agent_part, 0.5) as f64 / 1e3,
        bound(&agent_part, 0.99) as f64 / 1e3,
        p50 as f64 / 1e3,
        p99 as f64 / 1e3,
        max as f64 / 1e3
    );
}

async fn rest_round_trip(n: usize) {
    let h = Harness::start_with_events(MockConfig::ephemeral(1), all_events())
        .await
        .unwrap();
    h.wait_nodes_up().await.unwrap();
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let (st, _) = http(
            h.http(),
            "POST",
            "/api/v1/api",
            Some(TOKEN),
            Some(r#"{"command":"status","nodes":["fs1"]}"#),
        )
        .await;
        assert_eq!(st, 200);
        lat.push(t.elapsed().as_micros() as u64);
    }
    println!(
        "rest: {n} x POST /api/v1/api status -> agent -> FreeSWITCH (mock) -> reply: p50 {:.3} ms, p99 {:.3} ms",
        pct(&mut lat, 0.5) as f64 / 1e3,
        pct(&mut lat, 0.99) as f64 / 1e3
    );
}

fn main() {
    // `relay [CALLS] [PHASE…]`: phases throughput, replay, latency, rest
    // (default: all).
    let args: Vec<String> = std::env::args().skip(1).collect();
    let calls = args.iter().find_map(|a| a.parse().ok()).unwrap_or(10_000);
    let phases: Vec<&str> = args
        .iter()
        .filter(|a| a.parse::<usize>().is_err() && !a.starts_with('-'))
        .map(String::as_str)
        .collect();
    let run = |p: &str| phases.is_empty() || phases.contains(&p) && !phases.contains(&"sustained");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        if run("throughput") {
            throughput(calls).await;
        }
        if run("replay") {
            replay_throughput(calls).await;
        }
        if run("latency") {
            latency(10, 10_000, 0).await;
            latency(10, 10_000, 2).await;
        }
        if let Some(p) = phases.iter().position(|p| *p == "sustained") {
            // `sustained RATE SECS`
            let num = |k: usize, d: u64| {
                args.iter()
                    .filter(|a| a.parse::<u64>().is_ok())
                    .nth(k)
                    .and_then(|a| a.parse().ok())
                    .unwrap_or(d)
            };
            let _ = p;
            sustained(num(0, 100_000), num(1, 10)).await;
            return;
        }
        if run("rest") {
            rest_round_trip(2000).await;
        }
    });
}
