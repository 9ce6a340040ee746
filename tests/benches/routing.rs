//! Routing latency: time from the mock emitting CHANNEL_PARK for a new
//! inbound call to the mock receiving the routed command (`sendmsg …
//! execute hangup`), through the real agent, QUIC/mTLS, the controller's
//! tracker, app dispatcher and router, and back. Both timestamps come from
//! the mock's journal (same clock). Everything runs in this process on
//! 2 tokio workers, on loopback.
//!
//!     cargo bench -p switchy-e2e --bench routing [-- SECONDS_PER_RATE] [--all-events]

// The binaries' allocator (switchy-agent, switchy-controller, mock-relay).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use mock_relay::MockConfig;
use mock_relay::node::{Control, Invite, NodeMsg};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use switchy_controller::Router;
use switchy_controller::router::RouteTable;
use switchy_e2e::*;

fn pct(v: &[u64], p: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

const ROUTES: &str = r#"
[[routes]]
name = "international"
pattern = '^(00|011)\d+$'
guards = { "Call-Direction" = "inbound" }
actions = [{ respond = 407 }]

[[routes]]
name = "all"
pattern = '^(\d+)$'
guards = { "Call-Direction" = "inbound" }
actions = [{ hangup = "NORMAL_CLEARING" }]
"#;

fn main() -> anyhow::Result<()> {
    let secs: u64 = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(5);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(secs))
}

async fn run(secs: u64) -> anyhow::Result<()> {
    let mut cfg = MockConfig::ephemeral(2);
    cfg.journal_capacity = 4_000_000;
    // `--all-events`: agents subscribe ALL instead of the events switchy needs.
    let all = std::env::args().any(|a| a == "--all-events");
    // Otherwise the agents' default, `CORE_EVENTS`.
    let events = all.then(|| vec!["ALL".to_owned()]);
    let h = Harness::start_with_events(cfg, events).await?;
    h.wait_nodes_up().await?;
    let table =
        RouteTable::from_toml(ROUTES, "bench-routes.toml").map_err(|e| anyhow::anyhow!("{e}"))?;
    let router = Router::new();
    router.replace(table);
    h.ctl().use_router(router).await?;
    println!(
        "routing latency: CHANNEL_PARK emitted → routed command received (mock journal), {secs} s per rate, 2 nodes, agents subscribe {}",
        if all { "ALL" } else { "CORE_EVENTS" }
    );
    println!(
        "{:>8} {:>8} {:>8} {:>9} {:>9} {:>9}",
        "calls/s", "offered", "routed", "p50 µs", "p99 µs", "max µs"
    );
    for rate in [100u64, 1000, 2000] {
        let journal = &h.mock.cluster().journal;
        journal.reset();
        let total = rate * secs;
        let start = Instant::now();
        for i in 0..total {
            let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
            tokio::time::sleep_until(due.into()).await;
            let node = (i % 2) as usize;
            let info = h.mock.node(node);
            let port = info.profiles.first().map_or(5080, |p| p.1);
            let user = format!("2{:06}", i % 1_000_000);
            let inv = Invite {
                call_id: format!("bench-{rate}-{i}"),
                from_node: None,
                req_uri: format!("{user}@{}:{port}", info.ip),
                user,
                profile: "external".into(),
                cid_name: String::new(),
                cid_num: "5551000".into(),
                vars: Vec::new(),
                network_addr: "192.0.2.10".into(),
                context: "public".into(),
                hangup_after_ms: None,
            };
            let (tx, _rx) = tokio::sync::oneshot::channel();
            let _ = h.mock.cluster().senders[node].send(NodeMsg::Control(Control::Inbound(
                Box::new(inv),
                0,
                tx,
            )));
        }
        let cluster = h.ctl().cluster.clone();
        let _ = wait_for(Duration::from_secs(20), || {
            cluster.with_tracker(|t| t.is_empty())
        })
        .await;
        let mut parked: HashMap<String, u64> = HashMap::new();
        let mut lat = Vec::new();
        for e in journal.select(|e| {
            (e.kind == "event" && e.text == "CHANNEL_PARK")
                || (e.kind == "command" && e.text.starts_with("sendmsg "))
        }) {
            if e.kind == "event" {
                if let Some(u) = e.unique_id {
                    parked.entry(u).or_insert(e.ts_us);
                }
            } else if let Some(t0) = parked.remove(e.text.trim_start_matches("sendmsg ").trim()) {
                lat.push(e.ts_us.saturating_sub(t0));
            }
        }
        lat.sort_unstable();
        println!(
            "{:>8} {:>8} {:>8} {:>9} {:>9} {:>9}",
            rate,
            total,
            lat.len(),
            pct(&lat, 0.5),
            pct(&lat, 0.99),
            lat.last().copied().unwrap_or(0)
        );
    }
    Ok(())
}
