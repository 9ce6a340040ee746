//! RELAY-controlled calls per second against mock-relay, and the latency a
//! RELAY command adds: a client (WebSocket, JSON-RPC by hand, like an SDK)
//! answers every call the route hands it, plays 100 ms of silence, and
//! hangs up when the play finishes. The added latency is the time from the
//! client sending `calling.answer` to the mock receiving `uuid_answer`
//! (both on this machine's clock).
//!
//!     cargo bench -p switchy-e2e --bench relay_calls [-- RATE SECS]
//!
//! Defaults: 100 calls/s for 20 s, on 2 simulated nodes. Everything (mock,
//! agents, controller, client) runs in this one process on this machine.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use switchy_e2e::{Harness, http};
use tokio_tungstenite::tungstenite::Message;

const ROUTES: &str = r#"
start = "default"
[[routes]]
name = "office"
pattern = '^4\d{3}$'
guards = { "Call-Direction" = "inbound" }
actions = [{ relay = "office" }, { hangup = "NO_ANSWER" }]
"#;

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn pct(v: &[u64], p: f64) -> u64 {
    v.get(((v.len() as f64 - 1.0) * p).round() as usize)
        .copied()
        .unwrap_or(0)
}

/// The client: returns (calls ended, answer send times by call id).
async fn client(
    url: String,
    stop: tokio::sync::watch::Receiver<bool>,
) -> (u64, HashMap<String, u64>) {
    // TCP_NODELAY, as the SDKs' sockets have it (asyncio and Node set it):
    // without it Nagle holds the answer behind the ack until the next event.
    let (ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
        .await
        .expect("connect");
    let (mut tx, mut rx) = ws.split();
    let c = json!({"jsonrpc":"2.0","id":"c","method":"signalwire.connect","params":{
        "authentication":{"project":"bench","token":"t"},"contexts":["office"]}});
    tx.send(Message::text(c.to_string())).await.expect("send");
    let mut sent = HashMap::new();
    let mut ended = 0u64;
    let mut n = 0u64;
    let mut send = |m: &str, p: Value| {
        n += 1;
        json!({"jsonrpc":"2.0","id": format!("r{n}"),"method": m,"params": p}).to_string()
    };
    loop {
        let m = tokio::select! {
            m = rx.next() => m,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                if *stop.borrow() { break; }
                continue;
            }
        };
        let Some(Ok(Message::Text(t))) = m else { break };
        let f: Value = serde_json::from_str(t.as_str()).expect("JSON");
        if f["method"] != "signalwire.event" {
            continue;
        }
        let ack = json!({"jsonrpc":"2.0","id": f["id"],"result":{}});
        tx.send(Message::text(ack.to_string())).await.expect("ack");
        let (et, p) = (
            f["params"]["event_type"].as_str().unwrap_or(""),
            &f["params"]["params"],
        );
        let ids = json!({"call_id": p["call_id"], "node_id": p["node_id"]});
        match et {
            "calling.call.receive" => {
                sent.insert(p["call_id"].as_str().unwrap_or("").to_owned(), now_us());
                tx.send(Message::text(send("calling.answer", ids)))
                    .await
                    .expect("send");
            }
            "calling.call.state" if p["call_state"] == "answered" => {
                let mut q = ids.clone();
                q["control_id"] = json!(format!("play-{}", p["call_id"].as_str().unwrap_or("")));
                q["play"] = json!([{"type": "silence", "params": {"duration": 0.1}}]);
                tx.send(Message::text(send("calling.play", q)))
                    .await
                    .expect("send");
            }
            "calling.call.play" if p["state"] == "finished" => {
                let mut q = ids.clone();
                q["reason"] = json!("hangup");
                tx.send(Message::text(send("calling.end", q)))
                    .await
                    .expect("send");
            }
            "calling.call.state" if p["call_state"] == "ended" => ended += 1,
            _ => {}
        }
    }
    (ended, sent)
}

fn main() {
    let args: Vec<f64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let rate = args.first().copied().unwrap_or(100.0).max(1.0);
    let secs = args.get(1).copied().unwrap_or(20.0).max(1.0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async move {
        let h = Harness::start(2).await.expect("harness");
        h.wait_nodes_up().await.expect("up");
        let cfg = switchy_e2e::relay_config(
            None,
            ("bench", "t"),
            "sofia/external/{to}@198.51.100.7:5060",
            Duration::from_secs(10),
        );
        let relay = h.ctl().use_relay(cfg).await.expect("relay");
        let dir = switchy_e2e::own_dir("relay-bench");
        h.ctl()
            .use_router(switchy_e2e::routes(&dir, ROUTES))
            .await
            .expect("router");
        switchy_e2e::wait_subscribed(&h, &["CHANNEL_PARK", "CHANNEL_EXECUTE_COMPLETE"]).await.expect("subscribed");
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let cl = tokio::spawn(client(format!("ws://{}", relay.addr), stop_rx));
        tokio::time::sleep(Duration::from_millis(300)).await;

        let total = (rate * secs) as u64;
        let t0 = Instant::now();
        let mock = h.mock.http_addr();
        let mut offered = 0u64;
        let mut late = 0u64;
        for i in 0..total {
            let due = t0 + Duration::from_secs_f64(i as f64 / rate);
            let now = Instant::now();
            if due > now {
                tokio::time::sleep(due - now).await;
            } else if now - due > Duration::from_millis(100) {
                late += 1;
            }
            let body = format!(r#"{{"node": {}, "from": "5551000", "to": "4000"}}"#, i % 2);
            tokio::spawn(async move {
                let _ = http(mock, "POST", "/__mock__/inbound_call", None, Some(&body)).await;
            });
            offered += 1;
        }
        let offer_wall = t0.elapsed().as_secs_f64();
        // Let the last calls finish.
        let cluster = h.ctl().cluster.clone();
        let deadline = Instant::now() + Duration::from_secs(30);
        while cluster.with_tracker(|t| !t.is_empty()) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let wall = t0.elapsed().as_secs_f64();
        let _ = stop_tx.send(true);
        let (ended, sent) = cl.await.expect("client");
        let left = cluster.with_tracker(|t| t.len());
        let answers: HashMap<String, u64> = h
            .mock
            .cluster()
            .journal
            .select(|e| e.kind == "command" && e.text.contains("uuid_answer"))
            .into_iter()
            .filter_map(|e| {
                let uuid = e.text.split_whitespace().last()?.to_owned();
                Some((uuid, e.ts_us))
            })
            .collect();
        let mut lat: Vec<u64> = sent
            .iter()
            .filter_map(|(call, t)| answers.get(call).map(|a| a.saturating_sub(*t)))
            .collect();
        lat.sort_unstable();
        let drain = wall - offer_wall;
        println!(
            "relay calls: {offered} offered at {rate}/s over {offer_wall:.1} s ({late} late), {ended} answered-played-ended by the RELAY client, {drain:.1} s to drain; \
             {:.1} calls/s end to end; {left} sessions left",
            ended as f64 / wall
        );
        println!(
            "added latency (client sends calling.answer -> mock receives uuid_answer): p50 {} us, p90 {} us, p99 {} us, max {} us ({} samples)",
            pct(&lat, 0.5),
            pct(&lat, 0.9),
            pct(&lat, 0.99),
            lat.last().copied().unwrap_or(0),
            lat.len()
        );
    });
}
