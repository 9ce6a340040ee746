//! mock-relay's cost model against the real FreeSWITCH figures: the
//! raw-socket baseline's call flow (one ESL connection, `bgapi originate`
//! of a self-call, `uuid_answer` on the callee's CHANNEL_PARK, `uuid_kill`)
//! with its own 3-event subscription and with switchy's old 13-event one.
//! The rates the model's cores sustain must keep the ratio the real
//! FreeSWITCH showed (docs/benchmarks.md, "mock-relay's cost model"),
//! within 20 %; and an overloaded node must slow down, then refuse calls.

mod common;

use common::*;
use std::time::Duration;
use switchy_protocol::esl::{Command, EventFormat, Message};

/// The baseline script's default subscription.
const THREE: &[&str] = &["CHANNEL_PARK", "BACKGROUND_JOB", "CHANNEL_HANGUP_COMPLETE"];
/// The 12 channel events of switchy's CORE_EVENTS plus BACKGROUND_JOB
/// (its old default subscription, HEARTBEAT aside).
fn thirteen() -> Vec<&'static str> {
    switchy_protocol::wire::CORE_EVENTS
        .iter()
        .copied()
        .filter(|e| *e != "HEARTBEAT")
        .collect()
}

/// Highest rate the real baseline sustained for 30 s on a 2-core machine,
/// FreeSWITCH 1.11.3, calls held 2 s (docs/benchmarks.md): with THREE …
const REAL_CEILING_THREE: f64 = 125.0;
/// … and with [`thirteen`].
const REAL_CEILING_THIRTEEN: f64 = 110.0;
/// The hold the real ceilings were measured with, s.
const HOLD_S: f64 = 2.0;

/// Runs `calls` baseline calls on node 0 (a self-call into its own
/// external profile) with subscription `events`; returns the node's cost
/// report.
async fn baseline_calls(events: &[&str], calls: usize) -> serde_json::Value {
    let mut cfg = mock_relay::MockConfig::ephemeral(1);
    cfg.knobs.cost = Some(mock_relay::cost::CostModel::default());
    let m = mock_relay::MockCluster::start(cfg).await.expect("mock");
    let n = m.node(0);
    let mut c = Esl::connect(m.esl_addr(0)).await;
    c.subscribe(EventFormat::Plain, events).await;
    for i in 0..calls {
        let a = format!("00000000-0000-4000-8000-{i:012}");
        let arg = format!(
            "{{origination_uuid={a},sip_h_X-fsbase=tag,originate_timeout=30}}sofia/external/doggy@{}:5080 &park()",
            n.ip
        );
        let r = c
            .cmd(Command::bgapi("originate", &arg, None).unwrap())
            .await;
        assert!(reply_text(&r).starts_with("+OK"), "{r:?}");
        let park = c
            .wait_event(|e| {
                e.event_name() == Some("CHANNEL_PARK") && e.get("Call-Direction") == Some("inbound")
            })
            .await;
        let b = park.unique_id().unwrap_or_default().to_owned();
        c.events.clear();
        assert!(c.api("uuid_answer", &b).await.starts_with("+OK"));
        c.wait_event(is("BACKGROUND_JOB")).await;
        assert!(c.api("uuid_kill", &a).await.starts_with("+OK"));
        c.wait_event(|e| {
            e.event_name() == Some("CHANNEL_HANGUP_COMPLETE") && e.unique_id() == Some(&b)
        })
        .await;
        c.events.clear();
    }
    let (_, r) = http(m.http_addr(), "GET", "/__mock__/cost", None).await;
    r["nodes"][0]["cost"].clone()
}

/// µs of CPU one call costs at `HOLD_S` of media per leg.
fn per_call_at_hold(cost: &serde_json::Value, calls: usize) -> f64 {
    let model = mock_relay::cost::CostModel::default();
    let m = &cost["meter"];
    let charged = m["charged_us"].as_f64().unwrap();
    let media = m["leg_seconds"].as_f64().unwrap() * model.per_leg_second_us;
    let legs = m["legs"].as_f64().unwrap();
    assert_eq!(legs as usize, 2 * calls, "two legs per self-call");
    (charged - media + legs * HOLD_S * model.per_leg_second_us) / calls as f64
}

#[tokio::test]
async fn the_cost_model_keeps_the_real_ratio_of_sustainable_rates() {
    let calls = 30;
    let three = baseline_calls(THREE, calls).await;
    let thirteen = baseline_calls(&thirteen(), calls).await;
    // The meter counts what FreeSWITCH would have serialized.
    let ev = |c: &serde_json::Value| c["per_call"]["events"].as_f64().unwrap();
    assert!(
        ev(&three) >= 5.0 && ev(&three) < 6.0,
        "3-event run: {three}"
    );
    assert!(ev(&thirteen) > 2.0 * ev(&three), "13-event run: {thirteen}");
    eprintln!("3 events: {three}\n13 events: {thirteen}");
    let cores = mock_relay::cost::CostModel::default().cores;
    let rate = |c: &serde_json::Value| cores * 1e6 / per_call_at_hold(c, calls);
    let (r3, r13) = (rate(&three), rate(&thirteen));
    let model_ratio = r13 / r3;
    let real_ratio = REAL_CEILING_THIRTEEN / REAL_CEILING_THREE;
    assert!(
        (model_ratio / real_ratio - 1.0).abs() <= 0.20,
        "model sustains {r3:.0} and {r13:.0} calls/s (ratio {model_ratio:.3}), the real FreeSWITCH {REAL_CEILING_THREE} and {REAL_CEILING_THIRTEEN} (ratio {real_ratio:.3})"
    );
    // The model's absolute ceiling with the baseline's subscription is the
    // real one within 20 % too.
    assert!(
        (r3 / REAL_CEILING_THREE - 1.0).abs() <= 0.20,
        "model ceiling {r3:.0} calls/s, real {REAL_CEILING_THREE}"
    );
}

#[tokio::test]
async fn an_overloaded_node_slows_down_then_refuses_calls() {
    let mut cfg = mock_relay::MockConfig::ephemeral(1);
    // One slow core: each leg costs 60 ms, so ten self-calls are 1.2 s of
    // work.
    cfg.knobs.cost = Some(mock_relay::cost::CostModel {
        cores: 1.0,
        per_leg_us: 60_000.0,
        max_backlog_ms: 300,
        ..mock_relay::cost::CostModel::default()
    });
    let m = mock_relay::MockCluster::start(cfg).await.expect("mock");
    let n = m.node(0);
    let mut c = Esl::connect(m.esl_addr(0)).await;
    c.subscribe(EventFormat::Plain, &["BACKGROUND_JOB", "CHANNEL_PARK"])
        .await;
    let t0 = std::time::Instant::now();
    for i in 0..10 {
        let arg = format!(
            "{{origination_uuid=00000000-0000-4000-8000-{i:012}}}sofia/external/x@{}:5080 &park()",
            n.ip
        );
        c.cmd(Command::bgapi("originate", &arg, None).unwrap())
            .await;
    }
    // Callees that get through are answered; count the jobs' outcomes.
    let (mut ok, mut refused, mut first) = (0, 0, None);
    while ok + refused < 10 {
        match c.next().await {
            Some(Message::Event(_, e)) if e.event_name() == Some("CHANNEL_PARK") => {
                if e.get("Call-Direction") == Some("inbound") {
                    let b = e.unique_id().unwrap_or_default().to_owned();
                    c.send_raw(&Command::bgapi("uuid_answer", &b, None).unwrap().to_bytes())
                        .await;
                }
            }
            Some(Message::Event(_, e)) if e.event_name() == Some("BACKGROUND_JOB") => {
                if e.get("Job-Command") != Some("originate") {
                    continue;
                }
                first.get_or_insert_with(|| t0.elapsed());
                if e.body.as_deref().is_some_and(|b| b.starts_with(b"-ERR")) {
                    refused += 1;
                } else {
                    ok += 1;
                }
            }
            Some(_) => {}
            None => panic!("connection closed"),
        }
    }
    let first = first.unwrap_or_default();
    assert!(
        first >= Duration::from_millis(200),
        "a node behind on CPU answers late (first job after {first:?})"
    );
    assert!(
        refused > 0 && ok > 0,
        "some calls refused, some through: {ok} ok, {refused} refused"
    );
    let (_, r) = http(m.http_addr(), "GET", "/__mock__/cost", None).await;
    assert_eq!(
        r["nodes"][0]["cost"]["meter"]["refused"].as_u64(),
        Some(refused),
        "{r}"
    );
}
