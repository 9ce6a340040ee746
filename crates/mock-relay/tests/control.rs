//! The HTTP control plane: every endpoint, scenarios, timelines and faults,
//! over real sockets.

mod common;
use common::*;
use serde_json::json;
use std::time::{Duration, Instant};
use switchy_protocol::esl::{Command, EventFormat, Message};

#[tokio::test]
async fn health_connections_channels_and_journal() {
    let m = cluster(2).await;
    let h = m.http_addr();
    let (st, health) = http(h, "GET", "/__mock__/health", None).await;
    assert_eq!(st, 200);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["nodes"].as_array().unwrap().len(), 2);
    assert_eq!(
        health["nodes"][1]["profiles"][0]["url"],
        "sip:mod_sofia@127.0.0.2:5080"
    );
    assert!(health["schemas_loaded"].as_u64().unwrap() >= 70, "{health}");
    assert_eq!(
        health["schema_errors"].as_array().unwrap().len(),
        0,
        "{health}"
    );

    let mut c = Esl::connect(m.esl_addr(0)).await;
    c.subscribe(EventFormat::Plain, &["CHANNEL_PARK"]).await;
    c.cmd(Command::filter("Call-Direction", "inbound").unwrap())
        .await;
    let (_, conns) = http(h, "GET", "/__mock__/connections", None).await;
    let mine = &conns["nodes"][0]["connections"][0];
    assert_eq!(mine["authenticated"], true);
    assert_eq!(mine["events"], json!(["CHANNEL_PARK"]));
    assert_eq!(mine["filters"], json!(["Call-Direction inbound"]));

    c.cmd(
        Command::bgapi(
            "originate",
            "sofia/external/555@127.0.0.1:5080 &park()",
            None,
        )
        .unwrap(),
    )
    .await;
    c.wait_event(is("CHANNEL_PARK")).await;
    let (_, chans) = http(h, "GET", "/__mock__/channels", None).await;
    let list = chans["nodes"][0]["channels"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["direction"], "outbound");
    assert_eq!(list[1]["direction"], "inbound");
    assert_eq!(list[1]["dest"], "555");

    let (_, j) = http(
        h,
        "GET",
        "/__mock__/journal?node=0&dir=in&contains=originate",
        None,
    )
    .await;
    let entries = j["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["kind"], "command");
    assert!(
        entries[0]["text"]
            .as_str()
            .unwrap()
            .starts_with("bgapi originate sofia/external/555@")
    );
    let (_, j) = http(h, "GET", "/__mock__/journal?kind=event", None).await;
    assert!(
        j["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["text"] == "CHANNEL_PARK")
    );
    http(h, "POST", "/__mock__/journal/reset", None).await;
    let (_, j) = http(h, "GET", "/__mock__/journal", None).await;
    assert_eq!(j["entries"].as_array().unwrap().len(), 0);
    m.stop().await;
}

#[tokio::test]
async fn push_to_all_or_one_connection() {
    let m = cluster(1).await;
    let mut a = Esl::connect(m.esl_addr(0)).await;
    let mut b = Esl::connect(m.esl_addr(0)).await;
    a.cmd(Command::event(EventFormat::Plain, &[], &["switchy::test"]).unwrap())
        .await;
    b.cmd(Command::event(EventFormat::Json, &["ALL"], &[]).unwrap())
        .await;
    let ev = json!({"Event-Name": "CUSTOM", "Event-Subclass": "switchy::test", "X-Seq": "1"});
    let (st, r) = http(
        m.http_addr(),
        "POST",
        "/__mock__/push",
        Some(json!({"node": 0, "event": ev, "body": "hello"})),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(r["delivered"], 2);
    for c in [&mut a, &mut b] {
        let e = c.wait_event(|e| e.get("X-Seq") == Some("1")).await;
        assert_eq!(e.subclass(), Some("switchy::test"));
        assert_eq!(e.body_text().unwrap(), "hello");
    }
    // To one connection only: the connection ids are in /connections.
    let (_, conns) = http(m.http_addr(), "GET", "/__mock__/connections", None).await;
    let id_b = conns["nodes"][0]["connections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["format"] == "json")
        .unwrap()["id"]
        .clone();
    let ev = json!({"Event-Name": "CUSTOM", "Event-Subclass": "switchy::test", "X-Seq": "2"});
    let (_, r) = http(
        m.http_addr(),
        "POST",
        "/__mock__/push",
        Some(json!({"node": 0, "conn": id_b, "event": ev})),
    )
    .await;
    assert_eq!(r["delivered"], 1);
    b.wait_event(|e| e.get("X-Seq") == Some("2")).await;
    // Bad input: clear 4xx errors.
    let (st, r) = http(
        m.http_addr(),
        "POST",
        "/__mock__/push",
        Some(json!({"node": 0, "event": {"X": "y"}})),
    )
    .await;
    assert_eq!(st, 400);
    assert!(r["error"].as_str().unwrap().contains("Event-Name"));
    let (st, _) = http(
        m.http_addr(),
        "POST",
        "/__mock__/push",
        Some(json!({"node": 9, "event": {"Event-Name": "CUSTOM"}})),
    )
    .await;
    assert_eq!(st, 404);
    let (st, r) = http(
        m.http_addr(),
        "POST",
        "/__mock__/push",
        Some(json!("not an object")),
    )
    .await;
    assert_eq!(st, 400, "{r}");
    m.stop().await;
}

#[tokio::test]
async fn inbound_call_parks_with_its_variables_and_remote_hangup() {
    let m = cluster(2).await;
    let mut c = Esl::connect(m.esl_addr(1)).await;
    c.subscribe(
        EventFormat::Plain,
        &["CHANNEL_PARK", "CHANNEL_HANGUP_COMPLETE"],
    )
    .await;
    let body = json!({"node": 1, "from": "15551230000", "to": "0114477001", "variables": {"sip_h_X-Trace": "t1"}, "hangup_after_ms": 300});
    let (st, r) = http(m.http_addr(), "POST", "/__mock__/inbound_call", Some(body)).await;
    assert_eq!(st, 200, "{r}");
    let park = c.wait_event(is("CHANNEL_PARK")).await;
    assert_eq!(park.get("Caller-Destination-Number"), Some("0114477001"));
    assert_eq!(park.get("Caller-Caller-ID-Number"), Some("15551230000"));
    assert_eq!(park.get("Call-Direction"), Some("inbound"));
    assert_eq!(park.variable("sip_h_X-Trace"), Some("t1"));
    assert_eq!(park.variable("sip_call_id"), r["call_id"].as_str());
    let hc = c.wait_event(is("CHANNEL_HANGUP_COMPLETE")).await;
    assert_eq!(hc.get("Hangup-Cause"), Some("NORMAL_CLEARING"));
    let (st, _) = http(
        m.http_addr(),
        "POST",
        "/__mock__/inbound_call",
        Some(json!({"node": 1, "from": "1", "to": "2", "profile": "nope"})),
    )
    .await;
    assert_eq!(st, 400);
    let (st, _) = http(
        m.http_addr(),
        "POST",
        "/__mock__/inbound_call",
        Some(json!({"node": 1})),
    )
    .await;
    assert_eq!(st, 400);
    m.stop().await;
}

#[tokio::test]
async fn scenarios_script_the_next_matching_command() {
    let m = cluster(1).await;
    let h = m.http_addr();
    let mut c = Esl::connect(m.esl_addr(0)).await;
    c.subscribe(
        EventFormat::Plain,
        &["BACKGROUND_JOB", "CHANNEL_PARK", "DTMF"],
    )
    .await;
    http(
        h,
        "POST",
        "/__mock__/scenarios/originate",
        Some(json!({"hangup_cause": "USER_BUSY"})),
    )
    .await;
    http(
        h,
        "POST",
        "/__mock__/scenarios/originate",
        Some(json!({"answer_after_ms": 200})),
    )
    .await;
    http(
        h,
        "POST",
        "/__mock__/scenarios/status",
        Some(json!({"reply": "+OK scripted\n"})),
    )
    .await;
    let (_, list) = http(h, "GET", "/__mock__/scenarios", None).await;
    assert_eq!(list["scenarios"].as_array().unwrap().len(), 3);
    // 1: fails with the scripted cause.
    c.cmd(
        Command::bgapi(
            "originate",
            "sofia/external/1@127.0.0.1:5080 &park()",
            Some("j1"),
        )
        .unwrap(),
    )
    .await;
    let j1 = c.wait_event(|e| e.job_uuid() == Some("j1")).await;
    assert_eq!(j1.body_text().unwrap(), "-ERR USER_BUSY\n");
    // 2: the callee answers by itself after 200 ms.
    c.cmd(
        Command::bgapi(
            "originate",
            "sofia/external/2@127.0.0.1:5080 &park()",
            Some("j2"),
        )
        .unwrap(),
    )
    .await;
    let j2 = c.wait_event(|e| e.job_uuid() == Some("j2")).await;
    assert!(
        j2.body_text().unwrap().starts_with("+OK "),
        "{:?}",
        j2.body_text()
    );
    // 3: a scripted reply, consumed once.
    assert_eq!(c.api("status", "").await, "+OK scripted\n");
    assert!(c.api("status", "").await.starts_with("UP "));
    // DTMF corruption: the peer receives other digits than were sent.
    let a = j2
        .body_text()
        .unwrap()
        .trim()
        .strip_prefix("+OK ")
        .unwrap()
        .to_owned();
    http(
        h,
        "POST",
        "/__mock__/scenarios/uuid_send_dtmf",
        Some(json!({"dtmf": "129"})),
    )
    .await;
    assert_eq!(
        c.api("uuid_send_dtmf", &format!("{a} 123")).await,
        format!("+OK {a} sent DTMF 123.\n")
    );
    let mut got = String::new();
    while got.len() < 3 {
        let d = c.wait_event(is("DTMF")).await;
        got.push_str(d.get("DTMF-Digit").unwrap());
        c.events.retain(|e| e.event_name() != Some("DTMF"));
    }
    assert_eq!(got, "129");
    http(
        h,
        "POST",
        "/__mock__/scenarios/originate",
        Some(json!({"hangup_cause": "USER_BUSY"})),
    )
    .await;
    http(h, "POST", "/__mock__/scenarios/reset", None).await;
    let (_, list) = http(h, "GET", "/__mock__/scenarios", None).await;
    assert_eq!(list["scenarios"].as_array().unwrap().len(), 0);
    let (st, _) = http(
        h,
        "POST",
        "/__mock__/scenarios/originate",
        Some(json!({"bogus_field": 1})),
    )
    .await;
    assert_eq!(st, 400);
    m.stop().await;
}

#[tokio::test]
async fn scenario_play_runs_a_timeline() {
    let m = cluster(1).await;
    let h = m.http_addr();
    let mut c = Esl::connect(m.esl_addr(0)).await;
    c.subscribe(EventFormat::Plain, &["CUSTOM"]).await;
    c.cmd(Command::event(EventFormat::Plain, &[], &["switchy::ping"]).unwrap())
        .await;
    let addr = m.esl_addr(0);
    let _ = addr;
    // The client answers the pushed ping with an api command; the timeline
    // expects to receive it.
    let play = tokio::spawn(async move {
        http(h, "POST", "/__mock__/scenario_play", Some(json!({"steps": [
            {"sleep_ms": 50},
            {"push": {"node": 0, "event": {"Event-Name": "CUSTOM", "Event-Subclass": "switchy::ping"}}},
            {"expect_recv": {"contains": "pong-42", "timeout_ms": 3000}}
        ]}))).await
    });
    c.wait_event(|e| e.subclass() == Some("switchy::ping"))
        .await;
    c.api("echo", "pong-42").await;
    let (st, r) = play.await.unwrap();
    assert_eq!(st, 200);
    assert_eq!(r["status"], "completed");
    let (_, r) = http(
        h,
        "POST",
        "/__mock__/scenario_play",
        Some(json!({"steps": [
            {"expect_recv": {"contains": "never-sent", "timeout_ms": 100}}
        ]})),
    )
    .await;
    assert_eq!(r["status"], "timeout");
    assert_eq!(r["step"], 0);
    m.stop().await;
}

#[tokio::test]
async fn faults_drop_refuse_delay_and_restart() {
    let m = cluster(1).await;
    let h = m.http_addr();
    // drop_connections: the client sees EOF.
    let mut c = Esl::connect(m.esl_addr(0)).await;
    let (_, r) = http(
        h,
        "POST",
        "/__mock__/faults",
        Some(json!({"node": 0, "action": "drop_connections"})),
    )
    .await;
    assert_eq!(r["dropped"], 1);
    assert_eq!(c.next().await, None);
    // refuse_connections: new connections are closed at once, then accepted again.
    http(
        h,
        "POST",
        "/__mock__/faults",
        Some(json!({"node": 0, "action": "refuse_connections", "ms": 300})),
    )
    .await;
    let mut refused = Esl::raw(m.esl_addr(0)).await;
    assert_eq!(
        refused.next().await,
        None,
        "refused connection gets no greeting"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut c = Esl::connect(m.esl_addr(0)).await;
    // delay_replies.
    http(
        h,
        "POST",
        "/__mock__/faults",
        Some(json!({"node": 0, "action": "delay_replies", "ms": 200})),
    )
    .await;
    let t0 = Instant::now();
    c.api("status", "").await;
    assert!(
        t0.elapsed() >= Duration::from_millis(200),
        "reply was not delayed"
    );
    http(
        h,
        "POST",
        "/__mock__/faults",
        Some(json!({"node": 0, "action": "delay_replies", "ms": 0})),
    )
    .await;
    // restart: shutdown notice, channels gone, new Core-UUID.
    let core_before = c.api("global_getvar", "core_uuid").await;
    c.cmd(Command::bgapi("originate", "sofia/external/9@127.0.0.1:5080 &park()", None).unwrap())
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_, r) = http(
        h,
        "POST",
        "/__mock__/faults",
        Some(json!({"node": 0, "action": "restart"})),
    )
    .await;
    let core_after = r["core_uuid"].as_str().unwrap().to_owned();
    assert_ne!(core_before, core_after);
    loop {
        match c.next().await {
            Some(Message::DisconnectNotice(f)) => {
                assert_eq!(
                    f.body.as_deref(),
                    Some(&b"The system is being shut down.\n"[..])
                );
            }
            Some(_) => continue,
            None => break,
        }
    }
    let mut c = Esl::connect(m.esl_addr(0)).await;
    assert_eq!(c.api("global_getvar", "core_uuid").await, core_after);
    assert_eq!(c.api("show", "channels count").await, "\n0 total.\n");
    let (st, r) = http(
        h,
        "POST",
        "/__mock__/faults",
        Some(json!({"node": 0, "action": "explode"})),
    )
    .await;
    assert_eq!(st, 400);
    assert!(r["error"].as_str().unwrap().contains("drop_connections"));
    m.stop().await;
}

#[tokio::test]
async fn knobs_auto_answer_failures_and_limits() {
    let m = cluster(1).await;
    let h = m.http_addr();
    let (_, mut k) = http(h, "GET", "/__mock__/nodes/0/knobs", None).await;
    k["auto_answer_ms"] = json!(50);
    let (st, _) = http(h, "POST", "/__mock__/nodes/0/knobs", Some(k.clone())).await;
    assert_eq!(st, 200);
    let mut c = Esl::connect(m.esl_addr(0)).await;
    c.subscribe(EventFormat::Plain, &["BACKGROUND_JOB"]).await;
    c.cmd(
        Command::bgapi(
            "originate",
            "sofia/external/1@127.0.0.1:5080 &park()",
            Some("a1"),
        )
        .unwrap(),
    )
    .await;
    assert!(
        c.wait_event(|e| e.job_uuid() == Some("a1"))
            .await
            .body_text()
            .unwrap()
            .starts_with("+OK ")
    );
    k["failure_ratio"] = json!(1.0);
    k["failure_cause"] = json!("CALL_REJECTED");
    http(h, "POST", "/__mock__/nodes/0/knobs", Some(k.clone())).await;
    c.cmd(
        Command::bgapi(
            "originate",
            "sofia/external/1@127.0.0.1:5080 &park()",
            Some("a2"),
        )
        .unwrap(),
    )
    .await;
    assert_eq!(
        c.wait_event(|e| e.job_uuid() == Some("a2"))
            .await
            .body_text()
            .unwrap(),
        "-ERR CALL_REJECTED\n"
    );
    k["failure_ratio"] = json!(0.0);
    k["max_sessions"] = json!(2);
    http(h, "POST", "/__mock__/nodes/0/knobs", Some(k.clone())).await;
    // Two channels are live (the answered call): a third cannot be created.
    c.cmd(
        Command::bgapi(
            "originate",
            "sofia/external/1@127.0.0.1:5080 &park()",
            Some("a3"),
        )
        .unwrap(),
    )
    .await;
    assert_eq!(
        c.wait_event(|e| e.job_uuid() == Some("a3"))
            .await
            .body_text()
            .unwrap(),
        "-ERR SWITCH_CONGESTION\n"
    );
    k["failure_ratio"] = json!(3.0);
    let (st, _) = http(h, "POST", "/__mock__/nodes/0/knobs", Some(k)).await;
    assert_eq!(st, 400);
    m.stop().await;
}

#[tokio::test]
async fn replay_writes_framed_events_to_plain_subscribers_only() {
    use switchy_protocol::esl::server;
    let m = cluster(1).await;
    let mut plain = Esl::connect(m.esl_addr(0)).await;
    let mut json = Esl::connect(m.esl_addr(0)).await;
    let mut none = Esl::connect(m.esl_addr(0)).await;
    plain.subscribe(EventFormat::Plain, &["ALL"]).await;
    json.subscribe(EventFormat::Json, &["ALL"]).await;
    // 3 events framed back to back, ~100 KB in all (several 64 KB chunks).
    let mut frames = Vec::new();
    for i in 0..3 {
        let mut body = format!("Event-Name: CHANNEL_CREATE\nUnique-ID: u{i}\n").into_bytes();
        body.extend_from_slice(format!("Big: {}\n\n", "x".repeat(35_000)).as_bytes());
        server::encode_event_body(&body, EventFormat::Plain, &mut frames);
    }
    let before = m.events_sent();
    let len = frames.len();
    assert_eq!(m.replay(0, frames.into(), 0..len, 3).await, 1);
    assert_eq!(m.events_sent() - before, 3);
    plain.wait_event(|e| e.unique_id() == Some("u2")).await;
    let got: Vec<_> = plain
        .events
        .iter()
        .map(|e| {
            (
                e.unique_id().unwrap_or("").to_owned(),
                e.get("Big").map(str::len),
            )
        })
        .collect();
    let want: Vec<_> = (0..3).map(|i| (format!("u{i}"), Some(35_000))).collect();
    assert_eq!(got, want);
    // The others got nothing: their next message is the reply to this.
    for c in [&mut json, &mut none] {
        assert!(c.api("status", "").await.contains("UP"));
    }
    assert_eq!(m.replay(7, Vec::new().into(), 0..0, 0).await, 0);
    m.stop().await;
}
