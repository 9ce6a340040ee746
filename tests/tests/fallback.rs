//! The agent's fallback for parked calls: with the controller unreachable,
//! an inbound call that parked is refused (uuid_kill SERVICE_UNAVAILABLE,
//! a SIP 503) after the configured wait instead of waiting in silence;
//! with the controller up, the agent leaves parked calls to it.

use mock_relay::{MockCluster, MockConfig};
use std::collections::HashMap;
use std::time::Duration;
use switchy_agent::fallback::FallbackAction;
use switchy_controller::ca;
use switchy_e2e::*;

/// Live channels: call id → channel UUID.
async fn channels(mock: &MockCluster) -> HashMap<String, String> {
    let (_, v) = http(mock.http_addr(), "GET", "/__mock__/channels", None, None).await;
    v["nodes"][0]["channels"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| {
                    Some((
                        c["call_id"].as_str()?.to_owned(),
                        c["uuid"].as_str()?.to_owned(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn call(mock: &MockCluster, to: &str) -> String {
    let body = format!(r#"{{"node":0,"from":"1000","to":"{to}"}}"#);
    let (st, v) = http(
        mock.http_addr(),
        "POST",
        "/__mock__/inbound_call",
        None,
        Some(&body),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    v["call_id"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no call_id in {v}"))
}

async fn journal_has(mock: &MockCluster, needle: &str) -> bool {
    let (_, v) = http(
        mock.http_addr(),
        "GET",
        "/__mock__/journal?dir=in&limit=1000",
        None,
        None,
    )
    .await;
    v.to_string().contains(needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_calls_get_a_503_while_the_controller_is_away_and_are_left_to_it_otherwise() {
    let mock = MockCluster::start(MockConfig::ephemeral(1))
        .await
        .expect("mock");
    let cap = ca::new_ca().expect("ca");
    let agent_pem = ca::issue(&cap, "fs1", &[]).expect("cert");
    let ctl_pem = ca::issue(&cap, "controller", &[]).expect("cert");
    // A controller address with nothing listening yet.
    let quic = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free port");
    let mut cfg = agent_config(&mock, 0, quic, &cap, &agent_pem);
    cfg.fallback = Some((
        Duration::from_secs(1),
        FallbackAction::parse("hangup").expect("action"),
    ));
    let _agent = switchy_agent::Agent::start(cfg).expect("agent");
    // The agent subscribes CHANNEL_PARK for the fallback by itself.
    let t0 = std::time::Instant::now();
    while !journal_has(&mock, "CHANNEL_PARK").await {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the agent never subscribed CHANNEL_PARK"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let id = call(&mock, "5000").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let uuid = channels(&mock)
        .await
        .get(&id)
        .cloned()
        .expect("the call should be parked");
    let t0 = std::time::Instant::now();
    while channels(&mock).await.contains_key(&id) {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the parked call was not refused with no controller"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // It parked at ~0.3 s and waited its second before the refusal.
    assert!(
        t0.elapsed() >= Duration::from_millis(400),
        "refused too early"
    );
    assert!(journal_has(&mock, &format!("uuid_kill {uuid} SERVICE_UNAVAILABLE")).await);
    // Now a controller: the agent connects, and parked calls are its.
    let ctl = start_controller(&cap, &ctl_pem, quic)
        .await
        .expect("controller");
    let t0 = std::time::Instant::now();
    while !ctl.cluster.nodes().iter().any(|n| n.ready()) {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the agent did not connect"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let kept = call(&mock, "5001").await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let kept_uuid = channels(&mock)
        .await
        .get(&kept)
        .cloned()
        .expect("the fallback acted on a call while the controller was up");
    assert!(!journal_has(&mock, &format!("uuid_kill {kept_uuid}")).await);
}
