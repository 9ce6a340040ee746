//! RELAY mode over real sockets: the handshake, hostile frames, the
//! control plane's errors and timelines, the journal, and the events the
//! mock writes itself checked against their schemas.

mod common;

use common::http;
use futures_util::{SinkExt, StreamExt};
use mock_relay::relay::{RelayConfig, RelayMock};
use serde_json::{Value, json};
use std::time::Duration;
use switchy_relay::schema::{Kind, SchemaIndex};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn mock() -> RelayMock {
    RelayMock::start(RelayConfig::ephemeral())
        .await
        .expect("start")
}

async fn open(m: &RelayMock) -> Ws {
    tokio_tungstenite::connect_async(m.ws_url())
        .await
        .expect("connect")
        .0
}

async fn recv(ws: &mut Ws) -> Value {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a frame within 5 s")
            .expect("open")
            .expect("frame");
        if let Message::Text(t) = m {
            return serde_json::from_str(t.as_str()).expect("JSON");
        }
    }
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.expect("send");
}

/// Connects and returns (ws, session id).
async fn session(m: &RelayMock) -> (Ws, String) {
    let mut ws = open(m).await;
    send(
        &mut ws,
        json!({"jsonrpc":"2.0","id":"c","method":"signalwire.connect","params":{
        "authentication":{"project":"p","token":"t"},"contexts":["default"]}}),
    )
    .await;
    let r = recv(&mut ws).await;
    let sid = r["result"]["sessionid"]
        .as_str()
        .expect("sessionid")
        .to_owned();
    (ws, sid)
}

#[tokio::test]
async fn only_slash_is_relay() {
    let m = mock().await;
    let err = tokio_tungstenite::connect_async(format!("{}/elsewhere", m.ws_url()))
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("404"), "{err}");
    let (s, h) = http(m.http_addr(), "GET", "/__mock__/health", None).await;
    assert_eq!(s, 200);
    assert_eq!(h["handshake_failures"], 1);
    assert!(h["schemas_loaded"].as_u64().unwrap_or(0) > 100);
    assert_eq!(h["schema_load_errors"], json!([]));
}

#[tokio::test]
async fn hostile_frames_get_errors_and_an_oversized_one_closes_only_its_session() {
    let m = mock().await;
    let (mut ws, _) = session(&m).await;
    ws.send(Message::binary(vec![1u8, 2, 3]))
        .await
        .expect("send");
    assert_eq!(recv(&mut ws).await["error"]["code"], -32600);
    ws.send(Message::text("{\"jsonrpc\":")).await.expect("send");
    assert_eq!(recv(&mut ws).await["error"]["code"], -32700);
    send(&mut ws, json!([1, 2])).await;
    assert_eq!(recv(&mut ws).await["error"]["code"], -32600);
    send(&mut ws, json!({"id": 1, "method": 7})).await;
    let r = recv(&mut ws).await;
    assert_eq!(
        (r["id"].clone(), r["error"]["code"].clone()),
        (json!(1), json!(-32600))
    );
    // A header-injection attempt is just a string to RELAY: validated, echoed, harmless.
    send(
        &mut ws,
        json!({"jsonrpc":"2.0","id":"x","method":"calling.answer",
        "params":{"call_id":"a\r\nEvent-Name: CHANNEL_HANGUP","node_id":"n"}}),
    )
    .await;
    assert_eq!(recv(&mut ws).await["result"]["code"], "200");

    let (mut other, _) = session(&m).await;
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(11 * 1024 * 1024));
    let _ = other.send(Message::text(big)).await;
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match other.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "an 11 MiB frame closes its session");
    // The first session and the mock live on.
    send(
        &mut ws,
        json!({"jsonrpc":"2.0","id":"p","method":"signalwire.ping"}),
    )
    .await;
    assert!(
        recv(&mut ws).await["result"]["timestamp"]
            .as_f64()
            .is_some()
    );
    let (s, sess) = http(m.http_addr(), "GET", "/__mock__/sessions", None).await;
    assert_eq!(s, 200);
    assert_eq!(sess["sessions"].as_array().map(Vec::len), Some(1), "{sess}");
}

#[tokio::test]
async fn control_plane_refuses_bad_bodies_clearly() {
    let m = mock().await;
    let a = m.http_addr();
    let (s, b) = http(
        a,
        "POST",
        "/__mock__/push?session_id=nope",
        Some(json!({"frame": {}})),
    )
    .await;
    assert_eq!((s, b["error"].as_str()), (404, Some("no such session")));
    let (s, b) = http(a, "POST", "/__mock__/push", Some(json!({"frame": 3}))).await;
    assert_eq!(s, 400, "{b}");
    let (s, b) = http(
        a,
        "POST",
        "/__mock__/scenarios/calling.play",
        Some(json!({"emit": 1})),
    )
    .await;
    assert_eq!(
        (s, b["error"].as_str()),
        (400, Some("method scenario body must be a JSON array"))
    );
    let (s, _) = http(
        a,
        "POST",
        "/__mock__/scenarios/dial",
        Some(json!({"tag": ""})),
    )
    .await;
    assert_eq!(s, 400);
    let (s, _) = http(
        a,
        "POST",
        "/__mock__/inbound_call",
        Some(json!({"auto_states": "created"})),
    )
    .await;
    assert_eq!(s, 400);
    let (s, b) = http(
        a,
        "POST",
        "/__mock__/scenario_play",
        Some(json!([{"dance": 1}])),
    )
    .await;
    assert_eq!(s, 400);
    assert!(
        b["error"]
            .as_str()
            .unwrap_or("")
            .contains("unknown operation"),
        "{b}"
    );
    let (s, b) = http(a, "GET", "/__mock__/specs", None).await;
    assert_eq!(s, 200);
    assert_eq!(b["total"], b["specs"].as_array().map_or(0, Vec::len));
    assert!(
        b["specs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| !x["source"].as_str().unwrap_or("").is_empty())
    );
}

#[tokio::test]
async fn timelines_wait_for_what_the_client_sends() {
    let m = mock().await;
    let (mut ws, sid) = session(&m).await;
    let a = m.http_addr();
    let (_, r) = http(
        a,
        "POST",
        "/__mock__/scenario_play",
        Some(json!([
            {"expect_recv": {"method": "calling.answer", "timeout_ms": 100}}
        ])),
    )
    .await;
    assert_eq!(
        r,
        json!({"status":"timeout","at_step":0,"expected_method":"calling.answer","steps_completed":0})
    );

    let play = tokio::spawn(async move {
        http(a, "POST", "/__mock__/scenario_play", Some(json!([
            {"push": {"frame": {"jsonrpc":"2.0","id":"e1","method":"signalwire.event",
                "params":{"event_type":"calling.call.state","params":{"call_id":"c"}}}}},
            {"expect_recv": {"method": "calling.answer", "timeout_ms": 5000, "session_id": sid}},
            {"sleep_ms": 10}
        ])))
        .await
    });
    let ev = recv(&mut ws).await;
    assert_eq!(ev["params"]["event_type"], "calling.call.state");
    send(&mut ws, json!({"jsonrpc":"2.0","id":"e1","result":{}})).await;
    send(
        &mut ws,
        json!({"jsonrpc":"2.0","id":"a","method":"calling.answer",
        "params":{"call_id":"c","node_id":"n"}}),
    )
    .await;
    let (_, r) = play.await.expect("timeline");
    assert_eq!(r, json!({"status":"completed","steps":3}));
    let (_, sess) = http(a, "GET", "/__mock__/sessions", None).await;
    assert_eq!(sess["sessions"][0]["unacked"], 0, "{sess}");
}

#[tokio::test]
async fn the_events_the_mock_writes_match_their_schemas() {
    let m = mock().await;
    let schemas = SchemaIndex::embedded();
    let (mut ws, sid) = session(&m).await;
    let a = m.http_addr();
    let (s, r) = http(
        a,
        "POST",
        "/__mock__/inbound_call",
        Some(json!({
        "call_id": "in-1", "from_number": "+1555", "to_number": "+1666",
        "auto_states": ["created", "ringing"], "delay_ms": 0, "session_id": sid})),
    )
    .await;
    assert_eq!((s, r["count"].clone()), (200, json!(1)), "{r}");
    let (s, _) = http(
        a,
        "POST",
        &format!("/__mock__/scenarios/dial?session_id={sid}"),
        Some(json!({
        "tag": "t1", "winner_call_id": "w", "losers": [{"call_id": "l"}], "delay_ms": 0})),
    )
    .await;
    assert_eq!(s, 200);
    send(
        &mut ws,
        json!({"jsonrpc":"2.0","id":"d","method":"calling.dial",
        "params":{"tag":"t1","devices":[[{"type":"phone","params":{"to_number":"+1"}}]]}}),
    )
    .await;
    let mut seen = Vec::new();
    while seen.len() < 8 {
        let f = recv(&mut ws).await;
        if f["method"] == "signalwire.event" {
            let (et, p) = (
                f["params"]["event_type"].as_str().unwrap_or(""),
                &f["params"]["params"],
            );
            schemas
                .validate(et, Kind::Event, p)
                .unwrap_or_else(|e| panic!("{e}: {f}"));
            seen.push(format!(
                "{et}:{}",
                p["call_state"]
                    .as_str()
                    .or(p["dial_state"].as_str())
                    .unwrap_or("")
            ));
        } else {
            assert!(f["result"].is_object(), "{f}");
            assert!(
                f["result"].get("call_id").is_none(),
                "a dial's result has no call id"
            );
            seen.push("result".into());
        }
    }
    assert_eq!(
        seen,
        [
            "calling.call.receive:created",
            "calling.call.state:ringing",
            "result",
            "calling.call.state:created",
            "calling.call.state:ringing",
            "calling.call.state:answered",
            "calling.call.state:created",
            "calling.call.state:ended",
        ]
    );
    assert_eq!(
        recv(&mut ws).await["params"]["event_type"],
        "calling.call.dial"
    );
    // The journal keeps this session's frames apart from others'.
    let (_other, _) = session(&m).await;
    let (_, j) = http(
        a,
        "GET",
        &format!("/__mock__/journal?session_id={sid}"),
        None,
    )
    .await;
    let j = j.as_array().expect("array").clone();
    assert!(j.iter().all(|e| e["session_id"] == sid.as_str()));
    assert!(
        j.iter()
            .any(|e| e["direction"] == "recv" && e["method"] == "calling.dial")
    );
}

#[tokio::test]
async fn the_journal_is_a_bounded_ring() {
    let m = RelayMock::start(RelayConfig {
        journal_capacity: 5,
        ..RelayConfig::ephemeral()
    })
    .await
    .expect("start");
    let (mut ws, _) = session(&m).await;
    for i in 0..10 {
        send(
            &mut ws,
            json!({"jsonrpc":"2.0","id": i,"method":"signalwire.ping"}),
        )
        .await;
        recv(&mut ws).await;
    }
    let (_, j) = http(m.http_addr(), "GET", "/__mock__/journal", None).await;
    let j = j.as_array().expect("array");
    assert_eq!(j.len(), 5);
    assert_eq!(j[4]["request_id"], "9");
    assert!(j[0]["seq"].as_u64() < j[4]["seq"].as_u64());
}
