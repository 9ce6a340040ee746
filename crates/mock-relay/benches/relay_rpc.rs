//! RELAY mode throughput: requests answered per second (calling.play,
//! checked against its schema and acknowledged with its echoed ids) and
//! live sessions held, by the mock-relay binary in its own process (its
//! CPU and memory read from /proc), driven over real WebSockets.
//!
//!     cargo bench -p mock-relay --bench relay_rpc [-- SECS CONNS IN_FLIGHT SESSIONS]
//!
//! Defaults: 10 s on 4 connections with 64 requests in flight each, then
//! 5000 sessions connected (signalwire.connect each) and held.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

struct Mock {
    child: Child,
    ws: String,
}

impl Drop for Mock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn start() -> Mock {
    let (ws, http) = (free_port(), free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_mock-relay"))
        .args([
            "--relay",
            "--ws-port",
            &ws.to_string(),
            "--http-port",
            &http.to_string(),
        ])
        .args(["--relay-max-sessions", "20000"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mock-relay");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", ws)).is_err() {
        assert!(Instant::now() < deadline, "mock-relay did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    Mock {
        child,
        ws: format!("ws://127.0.0.1:{ws}"),
    }
}

/// (utime + stime in seconds, RSS KiB) of a process.
fn usage(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|u| u.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0);
    (ticks / 100.0, rss)
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn session(url: &str) -> Ws {
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connect");
    let c = json!({"jsonrpc":"2.0","id":"c","method":"signalwire.connect","params":{
        "version":{"major":2,"minor":0,"revision":0},
        "authentication":{"project":"bench","token":"t"},"contexts":["default"]}});
    ws.send(Message::text(c.to_string())).await.expect("send");
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) if t.contains("\"protocol\"") => return ws,
            Some(Ok(_)) => {}
            other => panic!("connect failed: {other:?}"),
        }
    }
}

fn play(n: u64) -> String {
    json!({"jsonrpc":"2.0","id": n.to_string(),"method":"calling.play","params":{
        "node_id":"mock-relay-node-1","call_id":"bench-call","control_id": format!("ctl-{n}"),
        "play":[{"type":"audio","params":{"url":"https://example.invalid/a.wav"}}]}})
    .to_string()
}

/// One connection keeping `in_flight` requests outstanding until `until`;
/// returns (answered, latencies µs).
async fn drive(url: String, in_flight: u64, until: Instant) -> (u64, Vec<u64>) {
    let ws = session(&url).await;
    let (mut tx, mut rx) = ws.split();
    let mut sent_at = std::collections::HashMap::new();
    let mut next = 0u64;
    for _ in 0..in_flight {
        sent_at.insert(next, Instant::now());
        tx.send(Message::text(play(next))).await.expect("send");
        next += 1;
    }
    let (mut answered, mut lat) = (0u64, Vec::new());
    while let Some(Ok(m)) = rx.next().await {
        let Message::Text(t) = m else { continue };
        let v: Value = serde_json::from_str(t.as_str()).expect("JSON");
        assert_eq!(v["result"]["code"], "200", "{v}");
        let id: u64 = v["id"].as_str().and_then(|s| s.parse().ok()).expect("id");
        if let Some(t0) = sent_at.remove(&id) {
            lat.push(t0.elapsed().as_micros() as u64);
        }
        answered += 1;
        if Instant::now() >= until {
            if sent_at.is_empty() {
                break;
            }
            continue;
        }
        sent_at.insert(next, Instant::now());
        tx.send(Message::text(play(next))).await.expect("send");
        next += 1;
    }
    (answered, lat)
}

fn pct(v: &[u64], p: f64) -> u64 {
    v.get(((v.len() as f64 - 1.0) * p).round() as usize)
        .copied()
        .unwrap_or(0)
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let secs = args.first().copied().unwrap_or(10);
    let conns = args.get(1).copied().unwrap_or(4);
    let in_flight = args.get(2).copied().unwrap_or(64);
    let sessions = args.get(3).copied().unwrap_or(5000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let mock = start();
    let pid = mock.child.id();

    let (cpu0, _) = usage(pid);
    let t0 = Instant::now();
    let until = t0 + Duration::from_secs(secs);
    let results = rt.block_on(async {
        let tasks: Vec<_> = (0..conns)
            .map(|_| tokio::spawn(drive(mock.ws.clone(), in_flight, until)))
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.expect("driver"));
        }
        out
    });
    let wall = t0.elapsed().as_secs_f64();
    let (cpu1, rss_busy) = usage(pid);
    let answered: u64 = results.iter().map(|r| r.0).sum();
    let mut lat: Vec<u64> = results.into_iter().flat_map(|r| r.1).collect();
    lat.sort_unstable();
    println!(
        "requests: {answered} calling.play answered in {wall:.2} s = {:.0}/s on {conns} connections x {in_flight} in flight; \
         latency p50 {} us p99 {} us; mock CPU {:.2} s = {:.1} us per request; RSS {} MiB",
        answered as f64 / wall,
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        cpu1 - cpu0,
        (cpu1 - cpu0) * 1e6 / answered.max(1) as f64,
        rss_busy / 1024
    );

    let (_, rss0) = usage(pid);
    let t1 = Instant::now();
    let held = rt.block_on(async {
        let mut held = Vec::with_capacity(sessions as usize);
        let mut pending = Vec::new();
        for _ in 0..sessions {
            let url = mock.ws.clone();
            pending.push(tokio::spawn(async move { session(&url).await }));
            if pending.len() == 256 {
                for p in pending.drain(..) {
                    held.push(p.await.expect("session"));
                }
            }
        }
        for p in pending {
            held.push(p.await.expect("session"));
        }
        held
    });
    let took = t1.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(300));
    let (_, rss1) = usage(pid);
    println!(
        "sessions: {} connected and authenticated in {took:.2} s ({:.0}/s); mock RSS {} -> {} MiB ({:.1} KiB per session)",
        held.len(),
        held.len() as f64 / took,
        rss0 / 1024,
        rss1 / 1024,
        (rss1.saturating_sub(rss0)) as f64 / held.len().max(1) as f64
    );
    drop(held);
}
