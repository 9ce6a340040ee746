//! The controller's RELAY server over real sockets, with a plain WebSocket
//! client speaking the protocol by hand: offers (round robin, pass, no
//! client), a client that comes back with its protocol string and gets the
//! events it missed, a node restart ending its calls with a cause, and a
//! controller shutdown saying `signalwire.disconnect` first.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::time::Duration;
use switchy_controller::relay::Relay;
use switchy_e2e::{Harness, http, wait_for};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const ROUTES: &str = r#"
start = "default"

[[routes]]
name = "office"
pattern = '^4\d{3}$'
guards = { "Call-Direction" = "inbound" }
actions = [{ relay = "office" }, { hangup = "NO_ANSWER" }]
"#;

async fn rig() -> (Harness, Relay) {
    let h = Harness::start(1).await.expect("harness");
    h.wait_nodes_up().await.expect("up");
    let cfg = switchy_e2e::relay_config(
        None,
        ("p", "t"),
        "sofia/external/{to}@198.51.100.7:5060",
        Duration::from_secs(3),
    );
    let relay = h.ctl().use_relay(cfg).await.expect("relay");
    let dir = switchy_e2e::own_dir("relay-res");
    h.ctl()
        .use_router(switchy_e2e::routes(&dir, ROUTES))
        .await
        .expect("router");
    switchy_e2e::wait_subscribed(&h, &["CHANNEL_PARK", "DTMF", "RECORD_STOP"])
        .await
        .expect("subscribed");
    (h, relay)
}

struct Client {
    ws: Ws,
    protocol: String,
    n: u64,
}

impl Client {
    async fn connect(relay: &Relay, protocol: Option<&str>) -> (Client, Value) {
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}", relay.addr))
            .await
            .expect("connect");
        let mut params = json!({"version": {"major": 2, "minor": 0, "revision": 0},
            "authentication": {"project": "p", "token": "t"}, "contexts": ["office"]});
        if let Some(p) = protocol {
            params["protocol"] = json!(p);
        }
        let f =
            json!({"jsonrpc": "2.0", "id": "c", "method": "signalwire.connect", "params": params});
        ws.send(Message::text(f.to_string())).await.expect("send");
        let mut c = Client {
            ws,
            protocol: String::new(),
            n: 0,
        };
        let r = c.until(|f| f["id"] == "c").await;
        c.protocol = r["result"]["protocol"]
            .as_str()
            .expect("protocol")
            .to_owned();
        (c, r)
    }

    /// The next frame `want` accepts (events are acked on the way).
    async fn until(&mut self, want: impl Fn(&Value) -> bool) -> Value {
        loop {
            let m = tokio::time::timeout(Duration::from_secs(10), self.ws.next())
                .await
                .expect("a frame within 10 s")
                .expect("open")
                .expect("frame");
            let Message::Text(t) = m else { continue };
            let f: Value = serde_json::from_str(t.as_str()).expect("JSON");
            if f["method"] == "signalwire.event" {
                let ack = json!({"jsonrpc": "2.0", "id": f["id"], "result": {}});
                self.ws
                    .send(Message::text(ack.to_string()))
                    .await
                    .expect("ack");
            }
            if want(&f) {
                return f;
            }
        }
    }

    async fn event(&mut self, event_type: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.until(|f| f["params"]["event_type"] == event_type && pred(&f["params"]["params"]))
            .await["params"]["params"]
            .clone()
    }

    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.n += 1;
        let id = format!("r{}", self.n);
        let f = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        self.ws
            .send(Message::text(f.to_string()))
            .await
            .expect("send");
        self.until(|f| f["id"] == id.as_str()).await
    }
}

async fn inbound(h: &Harness) {
    let (st, r) = http(
        h.mock.http_addr(),
        "POST",
        "/__mock__/inbound_call",
        None,
        Some(r#"{"node": 0, "from": "5551000", "to": "4000"}"#),
    )
    .await;
    assert_eq!(st, 200, "{r}");
}

/// Places an inbound call and waits for its offer (saying what happened
/// when none comes).
async fn offered(h: &Harness, a: &mut Client) -> Value {
    inbound(h).await;
    match tokio::time::timeout(
        Duration::from_secs(8),
        a.event("calling.call.receive", |_| true),
    )
    .await
    {
        Ok(rx) => rx,
        Err(_) => {
            let (_, m) = http(h.http(), "GET", "/metrics", Some(switchy_e2e::TOKEN), None).await;
            let m: Vec<&str> = m
                .as_str()
                .unwrap_or("")
                .lines()
                .filter(|l| l.contains("relay") && !l.starts_with('#'))
                .collect();
            let seen: Vec<String> = h
                .mock
                .cluster()
                .journal
                .select(|e| e.kind == "command" || e.kind == "event")
                .into_iter()
                .map(|e| format!("{} {} {}", e.dir, e.kind, e.text))
                .collect();
            panic!(
                "no offer within 8 s: {m:?}\napps {:?}\n{}",
                h.ctl().apps.stats(),
                seen.join("\n")
            );
        }
    }
}

fn hangups(h: &Harness, cause: &str) -> usize {
    h.mock
        .cluster()
        .journal
        .select(|e| {
            e.kind == "command"
                && e.detail.contains("execute-app-name: hangup")
                && e.detail.contains(cause)
        })
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offers_go_round_robin_pass_on_and_fall_back_to_the_route() {
    let (h, relay) = rig().await;
    // No client: the route's next action hangs the call up at once.
    inbound(&h).await;
    wait_for(Duration::from_secs(10), || hangups(&h, "NO_ANSWER") == 1)
        .await
        .expect("the fallback action ran");

    let (mut a, _) = Client::connect(&relay, None).await;
    let (mut b, _) = Client::connect(&relay, None).await;
    // Two calls: one each.
    inbound(&h).await;
    inbound(&h).await;
    let (ra, rb) = tokio::join!(
        a.event("calling.call.receive", |_| true),
        b.event("calling.call.receive", |_| true)
    );
    assert_ne!(ra["call_id"], rb["call_id"]);
    // a passes its call: it goes to b; b passes too: none left, the route hangs it up.
    let r = a
        .call(
            "calling.pass",
            json!({"call_id": ra["call_id"], "node_id": ra["node_id"]}),
        )
        .await;
    assert_eq!(r["result"]["code"], "200", "{r}");
    let again = b
        .event("calling.call.receive", |p| p["call_id"] == ra["call_id"])
        .await;
    let r = b
        .call(
            "calling.pass",
            json!({"call_id": again["call_id"], "node_id": again["node_id"]}),
        )
        .await;
    assert_eq!(r["result"]["code"], "200");
    wait_for(Duration::from_secs(10), || hangups(&h, "NO_ANSWER") == 2)
        .await
        .expect("passed by all: the route's next action");
    // a no longer controls the call it passed.
    let r = a
        .call(
            "calling.answer",
            json!({"call_id": ra["call_id"], "node_id": ra["node_id"]}),
        )
        .await;
    assert_eq!(r["result"]["code"], "404", "{r}");
    assert_eq!(
        switchy_e2e::metric(
            &h,
            "switchy_relay_calls_total{context=\"office\",what=\"offered\"}"
        )
        .await,
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_comes_back_gets_the_events_it_missed() {
    let (h, relay) = rig().await;
    let (mut a, _) = Client::connect(&relay, None).await;
    let rx = offered(&h, &mut a).await;
    let call = rx["call_id"].as_str().expect("call id").to_owned();
    let r = a
        .call(
            "calling.answer",
            json!({"call_id": call, "node_id": rx["node_id"]}),
        )
        .await;
    assert_eq!(r["result"]["code"], "200");
    a.event("calling.call.state", |p| p["call_state"] == "answered")
        .await;
    let protocol = a.protocol.clone();
    drop(a); // the socket drops, no goodbye

    // While it is away the call ends.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let s = h.ctl().cluster.session(&call).expect("tracked");
    s.hangup("NORMAL_CLEARING").await.expect("hangup");
    let c = h.ctl().cluster.clone();
    wait_for(Duration::from_secs(10), || {
        c.with_tracker(|t| t.session(&call).is_none())
    })
    .await
    .expect("ended");

    let (mut back, r) = Client::connect(&relay, Some(&protocol)).await;
    assert_eq!(r["result"]["session_restored"], true, "{r}");
    assert_eq!(back.protocol, protocol);
    let ended = back
        .event("calling.call.state", |p| p["call_state"] == "ended")
        .await;
    assert_eq!(ended["call_id"], call.as_str());
    assert_eq!(ended["end_reason"], "hangup");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restart_ends_its_calls_and_a_shutdown_says_goodbye() {
    let (h, relay) = rig().await;
    let (mut a, _) = Client::connect(&relay, None).await;
    let rx = offered(&h, &mut a).await;
    let r = a
        .call(
            "calling.answer",
            json!({"call_id": rx["call_id"], "node_id": rx["node_id"]}),
        )
        .await;
    assert_eq!(r["result"]["code"], "200");
    // A play in progress when the node goes: its terminal event first.
    let r = a
        .call(
            "calling.play",
            json!({"call_id": rx["call_id"], "node_id": rx["node_id"], "control_id": "k1",
                   "play": [{"type": "ringtone", "params": {"name": "us"}}]}),
        )
        .await;
    assert_eq!(r["result"]["code"], "200");
    let (st, body) = http(
        h.mock.http_addr(),
        "POST",
        "/__mock__/faults",
        None,
        Some(r#"{"node": 0, "action": "restart"}"#),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let mut order = Vec::new();
    loop {
        let f = a.until(|f| f["method"] == "signalwire.event").await;
        let (et, p) = (
            f["params"]["event_type"].clone(),
            f["params"]["params"].clone(),
        );
        order.push(format!(
            "{}:{}",
            et.as_str().unwrap_or(""),
            p["state"]
                .as_str()
                .or(p["call_state"].as_str())
                .unwrap_or("")
        ));
        if p["call_state"] == "ended" {
            assert_eq!(
                p["end_reason"], "error",
                "a restart is not a normal hangup: {p}"
            );
            break;
        }
    }
    // Finished, or error when the node went before it started: a terminal
    // event either way, and before the call's ended.
    let play = order
        .iter()
        .position(|e| e == "calling.call.play:finished" || e == "calling.call.play:error");
    let ended = order.iter().position(|e| e == "calling.call.state:ended");
    assert!(play.is_some() && play < ended, "{order:?}");

    relay.shutdown().await;
    let bye = a.until(|f| f["method"] == "signalwire.disconnect").await;
    assert!(bye["id"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parallel_dial_reports_its_winner_and_ends_the_losing_leg() {
    let (h, relay) = rig().await;
    let (mut a, _) = Client::connect(&relay, None).await;
    assert_eq!(
        switchy_e2e::metric(&h, "switchy_relay_context_sessions{context=\"office\"}").await,
        1
    );
    let dev =
        |n: &str| json!({"type": "phone", "params": {"to_number": n, "from_number": "5551000"}});
    let r = a
        .call(
            "calling.dial",
            json!({"tag": "par-1", "devices": [[dev("15550001"), dev("15550002")]]}),
        )
        .await;
    assert_eq!(r["result"]["code"], "200", "{r}");
    let mut created = Vec::new();
    let mut ended = Vec::new();
    let dial = loop {
        let f = a.until(|f| f["method"] == "signalwire.event").await;
        let (et, p) = (
            f["params"]["event_type"].clone(),
            f["params"]["params"].clone(),
        );
        assert_eq!(p["tag"], "par-1", "{f}");
        if et == "calling.call.dial" {
            break p;
        }
        match p["call_state"].as_str() {
            Some("created") => created.push(p["call_id"].clone()),
            Some("ended") => ended.push(p["call_id"].clone()),
            _ => {}
        }
    };
    assert_eq!(created.len(), 2, "one created per leg");
    assert_eq!(dial["dial_state"], "answered", "{dial}");
    let winner = dial["call"]["call_id"].clone();
    assert!(
        created.contains(&winner),
        "the winner is one of the legs: {dial}"
    );
    // The other leg ends (FreeSWITCH hangs the losers up).
    let loser = created
        .iter()
        .find(|c| **c != winner)
        .cloned()
        .expect("a loser");
    if !ended.contains(&loser) {
        let p = a
            .event("calling.call.state", |p| {
                p["call_id"] == loser && p["call_state"] == "ended"
            })
            .await;
        assert_ne!(p["end_reason"], "hangup", "a loser is cancelled: {p}");
    }
    let r = a
        .call(
            "calling.end",
            json!({"call_id": winner, "node_id": dial["node_id"]}),
        )
        .await;
    assert_eq!(r["result"]["code"], "200", "{r}");
    a.event("calling.call.state", |p| {
        p["call_id"] == winner && p["call_state"] == "ended"
    })
    .await;
}
