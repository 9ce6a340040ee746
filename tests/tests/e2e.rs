//! End to end: mock-relay nodes, real agents, a real controller, over real
//! QUIC (mutual TLS) and TCP.

use mock_relay::util::now_us;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchy_controller::{ClusterEvent, ca};
use switchy_e2e::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn originate_through_rest_tracks_one_call_across_nodes_and_hangup_ends_it() {
    let h = Harness::start(2).await.unwrap();
    h.wait_nodes_up().await.unwrap();
    let (st, r) = http(
        h.http(),
        "POST",
        "/api/v1/nodes/fs1/originate",
        Some(TOKEN),
        Some(r#"{"dest_url": "2000@127.0.0.2:5080", "profile": "external", "app": "park"}"#),
    )
    .await;
    assert_eq!(st, 200, "{r}");
    let uuid = r["uuid"].as_str().unwrap().to_owned();
    let cluster = h.ctl().cluster.clone();
    // Both legs, on two nodes, become one call keyed by the originating UUID.
    wait_for(Duration::from_secs(10), || {
        cluster.with_tracker(|t| t.call(&uuid).is_some_and(|c| c.legs.len() == 2))
    })
    .await
    .unwrap();
    let (_, call) = http(
        h.http(),
        "GET",
        &format!("/api/v1/calls/{uuid}"),
        Some(TOKEN),
        None,
    )
    .await;
    let legs = call["legs"].as_array().unwrap();
    assert_eq!(legs[0], serde_json::json!(["fs1", uuid]));
    assert_eq!(legs[1][0], "fs2");
    let b = legs[1][1].as_str().unwrap().to_owned();
    let (_, s) = http(
        h.http(),
        "GET",
        &format!("/api/v1/sessions/{b}"),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(s["direction"], "inbound");
    assert_eq!(s["variables"]["sip_h_X-switchy-orig-uuid"], uuid.as_str());
    // Answer the far leg through REST; the originate completes.
    let (st, r) = http(
        h.http(),
        "POST",
        &format!("/api/v1/sessions/{b}/answer"),
        Some(TOKEN),
        Some("{}"),
    )
    .await;
    assert_eq!(st, 200, "{r}");
    wait_for(Duration::from_secs(10), || {
        cluster.with_tracker(|t| t.session(&uuid).is_some_and(|s| s.answered_us > 0))
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "A never answered: {:?}",
            cluster.with_tracker(|t| t.session(&uuid).map(|s| s.history.clone()))
        )
    });
    // Hang up through REST: the whole call leaves the tracker.
    let (st, r) = http(
        h.http(),
        "POST",
        &format!("/api/v1/sessions/{uuid}/hangup"),
        Some(TOKEN),
        Some(r#"{"cause": "NORMAL_CLEARING"}"#),
    )
    .await;
    assert_eq!(st, 200, "{r}");
    wait_for(Duration::from_secs(10), || {
        cluster.with_tracker(|t| t.call(&uuid).is_none() && t.is_empty())
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "still tracked: {:?}",
            cluster.with_tracker(|t| t
                .sessions()
                .map(|s| (
                    s.uuid.clone(),
                    s.node.clone(),
                    s.history.iter().map(|h| h.0.clone()).collect::<Vec<_>>()
                ))
                .collect::<Vec<_>>())
        )
    });
    let (_, calls) = http(h.http(), "GET", "/api/v1/calls", Some(TOKEN), None).await;
    assert_eq!(calls["count"], 0);
    // The finished legs carry their causes.
    let causes: Vec<String> =
        cluster.with_tracker(|t| t.finished().iter().map(|f| f.cause.clone()).collect());
    assert_eq!(causes, vec!["NORMAL_CLEARING", "NORMAL_CLEARING"]);
    // Both relay-latency histograms counted the call's events.
    let (_, m) = http(h.http(), "GET", "/metrics", Some(TOKEN), None).await;
    let m = m.as_str().unwrap_or_default().to_owned();
    let count = |name: &str| -> u64 {
        m.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}_count ")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name}_count missing in {m}"))
    };
    // At least CHANNEL_CREATE, CHANNEL_ANSWER and CHANNEL_HANGUP_COMPLETE
    // of each leg (the `live` tracking level).
    assert!(count("switchy_relay_agent_latency_seconds") >= 6, "{m}");
    assert!(count("switchy_relay_latency_seconds") >= 6, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_and_self_signed_certificates_are_rejected() {
    let h = Harness::start(1).await.unwrap();
    h.wait_nodes_up().await.unwrap();
    // A certificate from another CA, for a node name the cluster does not know.
    let other_ca = ca::new_ca().unwrap();
    let foreign = ca::issue(&other_ca, "intruder", &[]).unwrap();
    let mut c = agent_config(&h.mock, 0, h.quic_addr, &h.ca, &foreign);
    c.node_id = "intruder".into();
    let _a = switchy_agent::Agent::start(c).unwrap();
    // A self-signed one.
    let selfsigned = ca::new_ca().unwrap();
    let mut c = agent_config(&h.mock, 0, h.quic_addr, &h.ca, &selfsigned);
    c.node_id = "selfie".into();
    let _b = switchy_agent::Agent::start(c).unwrap();
    let cluster = h.ctl().cluster.clone();
    wait_for(Duration::from_secs(10), || {
        cluster
            .counters()
            .refused
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 2
    })
    .await
    .unwrap();
    let ids: Vec<String> = cluster.nodes().into_iter().map(|n| n.id).collect();
    assert_eq!(ids, vec!["fs1"]);
    // An agent that trusts another CA refuses the controller as well.
    let mut c = agent_config(
        &h.mock,
        0,
        h.quic_addr,
        &other_ca,
        &ca::issue(&other_ca, "fs9", &[]).unwrap(),
    );
    c.node_id = "fs9".into();
    let _c = switchy_agent::Agent::start(c).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(cluster.node_info("fs9").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wire_version_mismatch_is_refused() {
    let h = Harness::start(1).await.unwrap();
    h.wait_nodes_up().await.unwrap();
    let pem = ca::issue(&h.ca, "fs-old", &[]).unwrap();
    let mut c = agent_config(&h.mock, 0, h.quic_addr, &h.ca, &pem);
    c.node_id = "fs-old".into();
    let refused_before = h
        .ctl()
        .cluster
        .counters()
        .refused
        .load(std::sync::atomic::Ordering::Relaxed);
    let _a = switchy_agent::Agent::start_with_version(c, 99).unwrap();
    let cluster = h.ctl().cluster.clone();
    wait_for(Duration::from_secs(10), || {
        cluster
            .counters()
            .refused
            .load(std::sync::atomic::Ordering::Relaxed)
            > refused_before
    })
    .await
    .unwrap();
    assert!(
        cluster.node_info("fs-old").is_none(),
        "a refused agent is not registered"
    );
}

async fn mock_channels(h: &Harness, node: usize) -> HashSet<String> {
    let (_, chans) = mock_http(h, "GET", "/__mock__/channels", None).await;
    chans["nodes"][node]["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["uuid"].as_str().unwrap().to_owned())
        .collect()
}

async fn mock_http(
    h: &Harness,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, serde_json::Value) {
    http(h.mock.http_addr(), method, path, None, body).await
}

fn tracked(h: &Harness, node: &str) -> HashSet<String> {
    h.ctl().cluster.with_tracker(|t| {
        t.sessions()
            .filter(|s| s.node == node)
            .map(|s| s.uuid.clone())
            .collect()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn esl_drop_reconnects_and_resyncs_the_tracker() {
    let h = Harness::start(1).await.unwrap();
    h.wait_nodes_up().await.unwrap();
    // A call that stays, and one that ends while the agent is cut off.
    mock_http(
        &h,
        "POST",
        "/__mock__/inbound_call",
        Some(r#"{"node":0,"from":"1","to":"stays"}"#),
    )
    .await;
    mock_http(
        &h,
        "POST",
        "/__mock__/inbound_call",
        Some(r#"{"node":0,"from":"2","to":"ends","hangup_after_ms":400}"#),
    )
    .await;
    wait_for(Duration::from_secs(5), || tracked(&h, "fs1").len() == 2)
        .await
        .unwrap();
    // Cut ESL and refuse reconnects for 1.2 s; meanwhile one call ends and
    // a new one arrives, unseen by the agent.
    mock_http(
        &h,
        "POST",
        "/__mock__/faults",
        Some(r#"{"node":0,"action":"refuse_connections","ms":1200}"#),
    )
    .await;
    mock_http(
        &h,
        "POST",
        "/__mock__/faults",
        Some(r#"{"node":0,"action":"drop_connections"}"#),
    )
    .await;
    mock_http(
        &h,
        "POST",
        "/__mock__/inbound_call",
        Some(r#"{"node":0,"from":"3","to":"new","delay_ms":200}"#),
    )
    .await;
    let cluster = h.ctl().cluster.clone();
    wait_for(Duration::from_secs(5), || {
        cluster
            .node_info("fs1")
            .is_some_and(|n| n.esl == switchy_controller::cluster::EslLink::Down)
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1300)).await;
    h.wait_nodes_up().await.unwrap();
    let want = mock_channels(&h, 0).await;
    assert_eq!(want.len(), 2, "the mock holds 'stays' and 'new'");
    wait_for(Duration::from_secs(5), || tracked(&h, "fs1") == want)
        .await
        .unwrap_or_else(|_| panic!("tracker {:?} != mock {want:?}", tracked(&h, "fs1")));
    let causes: Vec<String> =
        cluster.with_tracker(|t| t.finished().iter().map(|f| f.cause.clone()).collect());
    assert!(
        causes.contains(&"SWITCHY_RESYNC_GONE".to_string()),
        "{causes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_restart_loses_no_channel_event_and_no_cdr() {
    let mut h = Harness::start(2).await.unwrap();
    h.wait_nodes_up().await.unwrap();
    mock_http(&h, "POST", "/__mock__/journal/reset", None).await;
    // Every channel event any controller instance receives, by (Core-UUID, Event-Sequence).
    let seen: Arc<Mutex<HashSet<(String, String)>>> = Arc::default();
    let watch = |c: &switchy_controller::Controller,
                 seen: Arc<Mutex<HashSet<(String, String)>>>| {
        let mut rx =
            c.cluster
                .subscribe("test", switchy_controller::pipeline::Feed::Everything, 1024);
        tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                if let ClusterEvent::Event(_, e) = ev
                    && e.event_name().is_some_and(|n| n.starts_with("CHANNEL_"))
                {
                    seen.lock().unwrap().insert((
                        e.core_uuid().unwrap_or("").to_owned(),
                        e.get("Event-Sequence").unwrap_or("").to_owned(),
                    ));
                }
            }
        })
    };
    let w1 = watch(h.ctl(), seen.clone());
    // Calls start and end for 3 s on both nodes; the controller is down from 1 s to 2 s.
    let mock_http_addr = h.mock.http_addr();
    let load = tokio::spawn(async move {
        for i in 0..60u64 {
            let body = format!(
                r#"{{"node":{},"from":"{i}","to":"load","hangup_after_ms":{}}}"#,
                i % 2,
                100 + (i * 37) % 500
            );
            http(
                mock_http_addr,
                "POST",
                "/__mock__/inbound_call",
                None,
                Some(&body),
            )
            .await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let quic = h.quic_addr;
    let down_us = now_us();
    drop(h.controller.take());
    w1.abort();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let c2 = start_controller(&h.ca, &h.controller_pem, quic)
        .await
        .unwrap();
    let w2 = watch(&c2, seen.clone());
    // The new controller writes CDRs: every call that ends from the
    // restart on (the old one is gone) must get one.
    let db = std::env::temp_dir().join(format!("switchy-restart-{}.db", std::process::id()));
    let _ = std::fs::remove_file(&db);
    let store = switchy_controller::cdr::CdrStore::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let writer =
        switchy_controller::cdr::CdrWriter::start(&c2.cluster, store.clone(), Default::default());
    h.controller = Some(c2);
    load.await.unwrap();
    h.wait_nodes_up().await.unwrap();
    // Let the last calls end.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (_, j) = mock_http(&h, "GET", "/__mock__/journal?kind=event", None).await;
    let sent: usize = j["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["text"]
                .as_str()
                .is_some_and(|t| t.starts_with("CHANNEL_"))
        })
        .count();
    assert!(sent > 100, "the load produced channel events ({sent})");
    wait_for(Duration::from_secs(10), || {
        seen.lock().unwrap().len() == sent
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "received {} unique channel events, the mock sent {sent}",
            seen.lock().unwrap().len()
        )
    });
    for n in 0..2 {
        let want = mock_channels(&h, n).await;
        let id = node_id(n);
        wait_for(Duration::from_secs(5), || tracked(&h, &id) == want)
            .await
            .unwrap_or_else(|_| panic!("node {id}: tracker != mock"));
    }
    w2.abort();
    // Calls whose last event FreeSWITCH sent after the old controller went
    // down (the agents held and re-sent those of the outage).
    let ended_after: HashSet<String> = j["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["text"] == "CHANNEL_HANGUP_COMPLETE"
                && e["ts_us"].as_u64().is_some_and(|t| t >= down_us)
        })
        .filter_map(|e| e["unique_id"].as_str().map(str::to_owned))
        .collect();
    assert!(
        ended_after.len() > 10,
        "calls ended after the restart ({})",
        ended_after.len()
    );
    wait_for(Duration::from_secs(10), || {
        h.ctl().cluster.with_tracker(|t| t.is_empty())
    })
    .await
    .expect("every call over");
    writer.close().await;
    let rows = store.all().await.unwrap();
    let with_cdr: HashSet<String> = rows.iter().filter_map(|c| c.caller_uuid.clone()).collect();
    let missing: Vec<&String> = ended_after.difference(&with_cdr).collect();
    assert!(
        missing.is_empty(),
        "{} calls without a CDR: {missing:?}",
        missing.len()
    );
    assert_eq!(with_cdr.len(), rows.len(), "one CDR per call");
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rest_input_and_wrong_tokens_get_clear_4xx() {
    let h = Harness::start(1).await.unwrap();
    h.wait_nodes_up().await.unwrap();
    let a = h.http();
    let (st, _) = http(a, "GET", "/health", None, None).await;
    assert_eq!(st, 200);
    let (st, r) = http(a, "GET", "/api/v1/nodes", None, None).await;
    assert_eq!(st, 401);
    assert!(r["error"].as_str().unwrap().contains("Bearer"));
    let (st, _) = http(a, "GET", "/api/v1/nodes", Some("wrong"), None).await;
    assert_eq!(st, 401);
    let (st, r) = http(
        a,
        "POST",
        "/api/v1/nodes/fs1/originate",
        Some(TOKEN),
        Some("{not json"),
    )
    .await;
    assert_eq!(st, 400);
    assert!(r["error"].as_str().unwrap().contains("dest_url"), "{r}");
    let (st, _) = http(
        a,
        "POST",
        "/api/v1/nodes/nope/originate",
        Some(TOKEN),
        Some(r#"{"dest_url":"1@2"}"#),
    )
    .await;
    assert_eq!(st, 404);
    let (st, r) = http(
        a,
        "POST",
        "/api/v1/nodes/fs1/originate",
        Some(TOKEN),
        Some(r#"{"dest_url":"1@2 &hupall()"}"#),
    )
    .await;
    assert_eq!(st, 400, "{r}");
    let (st, _) = http(
        a,
        "POST",
        "/api/v1/sessions/nope/hangup",
        Some(TOKEN),
        Some("{}"),
    )
    .await;
    assert_eq!(st, 404);
    let (st, r) = http(
        a,
        "POST",
        "/api/v1/api",
        Some(TOKEN),
        Some(r#"{"command":"status\nhupall"}"#),
    )
    .await;
    assert_eq!(st, 400, "{r}");
    let (st, r) = http(
        a,
        "POST",
        "/api/v1/api",
        Some(TOKEN),
        Some(r#"{"command":"status"}"#),
    )
    .await;
    assert_eq!(st, 200);
    assert!(
        r["results"]["fs1"]["output"]
            .as_str()
            .unwrap()
            .starts_with("UP ")
    );
    let (st, m) = http(a, "GET", "/metrics", Some(TOKEN), None).await;
    assert_eq!(st, 200);
    assert!(
        m.as_str()
            .unwrap()
            .contains("switchy_node_up{node=\"fs1\"} 1"),
        "{m}"
    );
    let (st, doc) = http(a, "GET", "/api/v1/openapi.json", Some(TOKEN), None).await;
    assert_eq!(st, 200);
    assert_eq!(doc["openapi"], "3.1.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_agent_delivers_everything_it_read() {
    let mut h = Harness::start(1).await.unwrap();
    h.wait_nodes_up().await.unwrap();
    mock_http(&h, "POST", "/__mock__/journal/reset", None).await;
    let mock = h.mock.http_addr();
    for i in 0..40u64 {
        let body = format!(
            r#"{{"node":0,"from":"{i}","to":"stop","hangup_after_ms":{}}}"#,
            20 + i * 5
        );
        http(mock, "POST", "/__mock__/inbound_call", None, Some(&body)).await;
    }
    // Stop while calls are still ending.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let agent = h.agents.remove(0);
    let state = agent.state.clone();
    let left = agent.stop(Duration::from_secs(10)).await;
    assert_eq!(left, 0, "events left unacknowledged");
    let (_, j) = mock_http(&h, "GET", "/__mock__/journal?kind=event", None).await;
    let sent = j["entries"].as_array().unwrap().len() as u64;
    assert!(sent > 40, "the calls produced events ({sent})");
    // Everything the agent read from FreeSWITCH before it stopped reached
    // the controller (events sent after it stopped reading are
    // FreeSWITCH's to drop, as for any listener that leaves).
    let read = state.outbox.last_seq();
    let got = h.ctl().cluster.nodes()[0].events;
    assert_eq!(
        got, read,
        "controller applied {got} of the {read} events the agent read"
    );
    assert_eq!(state.outbox.acked(), read);
    assert!(
        read > 0 && read <= sent,
        "agent read {read}, mock sent {sent}"
    );
    let closed = h.ctl().cluster.nodes()[0].esl;
    wait_for(Duration::from_secs(5), || {
        h.ctl().cluster.nodes()[0].agent == switchy_controller::cluster::AgentLink::Disconnected
    })
    .await
    .unwrap_or_else(|()| panic!("the stopped agent is still connected (esl {closed})"));
}
