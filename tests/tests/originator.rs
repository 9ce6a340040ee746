//! The Originator against mock-relay through real agents and the
//! controller, with CDRs in a real SQLite file and (in CI) PostgreSQL.

use std::time::Duration;
use switchy_controller::apps::builtin;
use switchy_controller::cdr::{CdrStore, Launches};
use switchy_controller::cdr_stats;
use switchy_controller::originator::{Originator, OriginatorConfig, State, Weighted};
use switchy_e2e::*;

/// The runs measure rates: one at a time on this 2-core machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

type Rig = OriginatorRig;

async fn rig(nodes: usize, db: &str, cfg: OriginatorConfig, apps: &[&str]) -> Rig {
    rig_with(mock_relay::MockConfig::ephemeral(nodes), db, cfg, apps).await
}

async fn rig_with(
    mock: mock_relay::MockConfig,
    db: &str,
    cfg: OriginatorConfig,
    apps: &[&str],
) -> Rig {
    let store = CdrStore::connect(db).await.unwrap();
    originator_rig(
        mock,
        store,
        switchy_controller::cdr::WRITER_QUEUE,
        cfg,
        apps,
    )
    .await
}

fn sqlite(name: &str) -> String {
    let p = std::env::temp_dir().join(format!("switchy-{name}-{}.db", std::process::id()));
    let _ = std::fs::remove_file(&p);
    format!("sqlite://{}", p.display())
}

async fn live_channels(h: &Harness) -> usize {
    let (_, r) = http(h.mock.http_addr(), "GET", "/__mock__/channels", None, None).await;
    r["nodes"]
        .as_array()
        .map(|n| {
            n.iter()
                .map(|x| x["channels"].as_array().map_or(0, Vec::len))
                .sum()
        })
        .unwrap_or(usize::MAX)
}

/// rate 200, limit 400, max-offered 2,000, apps 33/33/34.
async fn full_run(db: &str) {
    let _serial = SERIAL.lock().await;
    let cfg = OriginatorConfig {
        rate: 200.0,
        limit: 400,
        max_offered: 2000,
        apps: vec![
            Weighted {
                app: "Park".into(),
                weight: 33,
            },
            Weighted {
                app: "TonePlay".into(),
                weight: 33,
            },
            Weighted {
                app: "Bert".into(),
                weight: 34,
            },
        ],
        ..OriginatorConfig::default()
    };
    let mut r = rig(2, db, cfg, &["Park", "TonePlay", "Bert"]).await;
    r.orig.start();
    tokio::time::timeout(Duration::from_secs(60), r.orig.wait_done())
        .await
        .expect("run finished");
    let st = r.orig.status();
    assert_eq!(st.offered, 2000);
    assert!(
        st.max_active <= 400,
        "concurrency {} above the limit",
        st.max_active
    );
    assert_eq!(st.failed, 0, "{:?}", st.failures);
    // Every finished call has its CDR.
    let c = r.h.ctl().cluster.clone();
    wait_for(Duration::from_secs(10), || c.with_tracker(|t| t.is_empty()))
        .await
        .expect("all channels gone");
    r.orig.set_cdr_sink(None);
    let written = r.writer.take().expect("writer").close().await;
    assert_eq!(written, 2000);
    assert_eq!(r.store.count().await.unwrap(), 2000);
    let cdrs = r.store.all().await.unwrap();
    let m = cdr_stats::summarize(&cdrs);
    assert_eq!((m.calls, m.answered), (2000, 2000));
    let err = (m.achieved_rate - 200.0).abs() / 200.0;
    assert!(
        err < 0.03,
        "achieved {:.2} calls/s, target 200: {:?}",
        m.achieved_rate,
        st
    );
    assert!(m.max_erlangs <= 400.0, "CDR concurrency {}", m.max_erlangs);
    for (app, want) in [("Park", 33.0), ("TonePlay", 33.0), ("Bert", 34.0)] {
        let got = *m.apps.get(app).unwrap_or(&0) as f64 / 20.0;
        assert!((got - want).abs() <= 3.0, "{app}: {got}% (want {want} ± 3)");
    }
    let partial: Vec<_> = cdrs
        .iter()
        .filter(|c| c.callee_uuid.is_none() || c.caller_answer.is_none())
        .collect();
    assert!(
        partial.is_empty(),
        "{} partial CDRs: {:?}",
        partial.len(),
        partial.first()
    );
    assert!(m.call_setup_latency_ms.n == 2000 && m.call_setup_latency_ms.p50 > 0.0);
    r.store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2000_call_run_leaves_exactly_2000_cdrs_in_sqlite_at_the_rate_and_mix_asked() {
    full_run(&sqlite("full")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_run_leaves_exactly_2000_cdrs_in_postgresql() {
    if let Some(url) = postgres_url() {
        full_run(&url).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_failures_are_counted_by_cause_and_never_stop_the_run() {
    let _serial = SERIAL.lock().await;
    let cfg = OriginatorConfig {
        rate: 50.0,
        limit: 100,
        max_offered: 40,
        duration: Some(0.2),
        ..OriginatorConfig::default()
    };
    let mut r = rig(2, &sqlite("fail"), cfg, &["Park"]).await;
    for cause in [
        "USER_BUSY",
        "USER_BUSY",
        "USER_BUSY",
        "CALL_REJECTED",
        "NO_ANSWER",
        "NO_ROUTE_DESTINATION",
    ] {
        let body = format!(r#"{{"hangup_cause": "{cause}"}}"#);
        let (st, _) = http(
            r.h.mock.http_addr(),
            "POST",
            "/__mock__/scenarios/originate",
            None,
            Some(&body),
        )
        .await;
        assert_eq!(st, 200);
    }
    r.orig.start();
    tokio::time::timeout(Duration::from_secs(30), r.orig.wait_done())
        .await
        .expect("run finished");
    let st = r.orig.status();
    assert_eq!(st.offered, 40);
    assert_eq!(st.failed, 6);
    assert_eq!(st.failures.get("USER_BUSY"), Some(&3));
    assert_eq!(st.failures.get("CALL_REJECTED"), Some(&1));
    assert_eq!(st.failures.get("NO_ANSWER"), Some(&1));
    let c = r.h.ctl().cluster.clone();
    wait_for(Duration::from_secs(10), || c.with_tracker(|t| t.is_empty()))
        .await
        .unwrap();
    r.orig.set_cdr_sink(None);
    r.writer.take().expect("writer").close().await;
    let cdrs = r.store.all().await.unwrap();
    let m = cdr_stats::summarize(&cdrs);
    assert_eq!((m.calls, m.failed), (40, 6));
    assert_eq!(m.failures.get("USER_BUSY"), Some(&3));
    // The KPIs: 34 of 40 answered; the user's busy, reject and no answer
    // are the network's success, the missing route is not.
    assert_eq!(m.kpis.asr_pct, Some(85.0));
    assert_eq!(m.kpis.ner_pct, Some(97.5));
    assert_eq!(m.kpis.sip_status.get("200"), Some(&34));
    assert_eq!(m.kpis.q850.get("17 USER_BUSY"), Some(&3));
    assert_eq!(m.kpis.q850.get("3 NO_ROUTE_DESTINATION"), Some(&1));
    let acd = m.kpis.acd_s.expect("ACD");
    assert!((0.15..0.35).contains(&acd), "ACD {acd} s for 0.2 s holds");
    for c in &cdrs {
        assert_eq!(c.run_id.as_deref(), Some(r.orig.run_id()), "{c:?}");
        if c.failed {
            assert_eq!(c.billsec_s.unwrap_or(0.0), 0.0, "{c:?}");
            assert_eq!(
                c.q850,
                switchy_controller::cdr::q850_of(&c.hangup_cause).map(i64::from),
                "{c:?}"
            );
        } else {
            assert_eq!(c.sip_status, Some(200), "{c:?}");
            assert_eq!(c.q850, Some(16), "{c:?}");
            assert!(c.sip_call_id.is_some() && c.codec.is_some(), "{c:?}");
            assert!(
                c.duration_s >= c.billsec_s && c.billsec_s > Some(0.1),
                "{c:?}"
            );
        }
    }
    // Failures reach /metrics by cause.
    let (_, text) = http(r.h.http(), "GET", "/metrics", Some(TOKEN), None).await;
    let text = text.as_str().unwrap_or("").to_owned();
    assert!(
        text.contains("switchy_originator_failures_total{cause=\"USER_BUSY\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("switchy_originator_asr_ratio 0.850000"),
        "{text}"
    );
    assert!(
        text.contains("switchy_originator_ner_ratio 0.975000"),
        "{text}"
    );
    let answered: u64 = text
        .lines()
        .filter(|l| {
            l.starts_with("switchy_cdr_answered_total{") && l.contains("sip_status=\"200\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(answered, 34, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_lets_calls_finish_and_hupall_ends_everything_at_once() {
    let _serial = SERIAL.lock().await;
    let cfg = OriginatorConfig {
        rate: 100.0,
        limit: 1000,
        duration: Some(1.0),
        ..OriginatorConfig::default()
    };
    let r = rig(2, &sqlite("stop"), cfg, &["Park"]).await;
    r.orig.start();
    tokio::time::sleep(Duration::from_millis(800)).await;
    r.orig.stop();
    tokio::time::sleep(Duration::from_millis(30)).await;
    let offered = r.orig.status().offered;
    assert!(offered > 40, "{offered}");
    assert!(
        live_channels(&r.h).await > 0,
        "calls are still up right after stop"
    );
    // Once the holding time has passed, no live channel on any node.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let h = &r.h;
    let mut left = usize::MAX;
    for _ in 0..50 {
        left = live_channels(h).await;
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(left, 0);
    assert_eq!(
        r.orig.status().offered,
        offered,
        "nothing launched after stop"
    );

    // hupall: long calls, all gone at once.
    r.orig.update(|c| c.duration = Some(120.0)).unwrap();
    r.orig.start();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(live_channels(&r.h).await > 20);
    let (st, s) = http(
        r.h.http(),
        "POST",
        "/api/v1/originator/hupall",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(st, 200, "{s}");
    assert_eq!(s["state"], "STOPPED");
    let mut left = usize::MAX;
    for _ in 0..40 {
        left = live_channels(&r.h).await;
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(left, 0, "hupall left channels up");
    assert_eq!(r.orig.state(), State::Stopped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_the_rate_over_rest_takes_effect_while_running() {
    let _serial = SERIAL.lock().await;
    let cfg = OriginatorConfig {
        rate: 40.0,
        limit: 2000,
        duration: Some(0.5),
        ..OriginatorConfig::default()
    };
    let r = rig(2, &sqlite("rate"), cfg, &["Park"]).await;
    r.orig.start();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let a = r.orig.status().offered;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let b = r.orig.status().offered;
    let (st, s) = http(
        r.h.http(),
        "PATCH",
        "/api/v1/originator",
        Some(TOKEN),
        Some(r#"{"rate": 160}"#),
    )
    .await;
    assert_eq!(st, 200, "{s}");
    assert_eq!(s["config"]["rate"], 160.0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let c = r.orig.status().offered;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let d = r.orig.status().offered;
    let slow = (b - a) as f64 / 2.0;
    let fast = (d - c) as f64 / 2.0;
    assert!((slow - 40.0).abs() < 6.0, "before: {slow} calls/s");
    assert!((fast - 160.0).abs() < 16.0, "after: {fast} calls/s");
    // A bad value is refused and changes nothing.
    let (st, _) = http(
        r.h.http(),
        "PATCH",
        "/api/v1/originator",
        Some(TOKEN),
        Some(r#"{"limit": 0}"#),
    )
    .await;
    assert_eq!(st, 400);
    assert_eq!(r.orig.config().limit, 2000);
    r.orig.hupall().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_node_is_driven_past_its_own_max_sessions() {
    let _serial = SERIAL.lock().await;
    let mut mock = mock_relay::MockConfig::ephemeral(2);
    mock.knobs.max_sessions = 12;
    mock.heartbeat = Duration::from_millis(100);
    let cfg = OriginatorConfig {
        rate: 100.0,
        limit: 1000,
        duration: Some(1.0),
        ..OriginatorConfig::default()
    };
    let r = rig_with(mock, &sqlite("cap"), cfg, &["Park"]).await;
    let c = r.h.ctl().cluster.clone();
    wait_for(Duration::from_secs(5), || {
        c.nodes().iter().all(|n| n.max_sessions == Some(12))
    })
    .await
    .expect("max-sessions learnt from HEARTBEAT");
    r.orig.start();
    let mut peak = 0;
    for _ in 0..100 {
        peak = peak.max(c.with_tracker(|t| t.node_sessions("fs1").max(t.node_sessions("fs2"))));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    r.orig.hupall().await.unwrap();
    let st = r.orig.status();
    assert!(peak <= 12, "a node carried {peak} sessions (max 12)");
    assert!(peak >= 8, "the nodes were not loaded: {peak}");
    assert_eq!(st.failed, 0, "{:?}", st.failures);
    assert!(st.blocked_by_capacity > 0);
    assert!(
        st.bottleneck.as_deref().unwrap_or("").contains("capacity"),
        "{:?}",
        st.bottleneck
    );
}

/// What switchy costs a FreeSWITCH per call, counted by mock-relay's
/// meter: with the Park app and `minimal` tracking, four events per call
/// (the callee's CHANNEL_PARK, both legs' CHANNEL_HANGUP_COMPLETE, the
/// originate's BACKGROUND_JOB) and two commands (the originate and the
/// callee's uuid_answer; FreeSWITCH hangs the call up by itself). This
/// fails when switchy's events or commands per call grow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_and_commands_per_call_stay_within_budget() {
    let _serial = SERIAL.lock().await;
    let cluster = switchy_controller::ClusterConfig {
        tracking: switchy_controller::cluster::Tracking::Minimal,
        ..harness_cluster_config()
    };
    let h = Harness::start_configured(mock_relay::MockConfig::ephemeral(2), None, cluster)
        .await
        .unwrap();
    h.wait_nodes_up().await.unwrap();
    h.ctl()
        .apps
        .load(
            "Park",
            vec![builtin::build("Park", &builtin::Params::new()).unwrap()],
        )
        .await
        .unwrap();
    let launches: Launches = Default::default();
    let cfg = OriginatorConfig {
        rate: 100.0,
        limit: 200,
        max_offered: 300,
        duration: Some(0.3),
        apps: vec![Weighted {
            app: "Park".into(),
            weight: 1,
        }],
        dest_by_node: mock_destinations(&h.mock),
        ..OriginatorConfig::default()
    };
    let orig = Originator::new(h.ctl().cluster.clone(), cfg, launches).unwrap();
    orig.hold_in_freeswitch(["Park".to_owned()]);
    orig.start();
    tokio::time::timeout(Duration::from_secs(60), orig.wait_done())
        .await
        .expect("run finished");
    let st = orig.status();
    assert_eq!((st.answered, st.failed), (300, 0), "{:?}", st.failures);
    assert_eq!(live_channels(&h).await, 0, "FreeSWITCH hung every call up");
    let (_, r) = http(h.mock.http_addr(), "GET", "/__mock__/cost", None, None).await;
    let sum = |k: &str| -> f64 {
        r["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["cost"]["meter"][k].as_f64().unwrap_or(0.0))
            .sum()
    };
    let calls = sum("legs") / 2.0;
    assert_eq!(calls, 300.0, "{r}");
    let events = sum("events") / calls;
    let commands = sum("commands") / calls;
    // Heartbeats and the agents' status probes add a little.
    assert!(
        (4.0..4.2).contains(&events),
        "events per call {events:.2} (budget 4): {r}"
    );
    assert!(
        (2.0..2.3).contains(&commands),
        "commands per call {commands:.2} (budget 2): {r}"
    );
}

/// The agents' subscription follows the loaded apps: an app's events are
/// subscribed while it is loaded and unsubscribed (nixevent) after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_follow_the_loaded_apps() {
    let h = Harness::start(1).await.unwrap();
    h.wait_nodes_up().await.unwrap();
    let subscribed = |h: &Harness| {
        let h = h.mock.http_addr();
        async move {
            let (_, r) = http(h, "GET", "/__mock__/connections", None, None).await;
            r["nodes"][0]["connections"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|c| c["events"].as_array().cloned().unwrap_or_default())
                .filter_map(|e| e.as_str().map(str::to_owned))
                .collect::<Vec<String>>()
        }
    };
    let before = subscribed(&h).await;
    assert!(
        before.contains(&"CHANNEL_HANGUP_COMPLETE".to_owned()),
        "{before:?}"
    );
    assert!(!before.contains(&"DTMF".to_owned()), "{before:?}");
    h.ctl()
        .apps
        .load(
            "dtmf",
            vec![builtin::build("DtmfChecker", &builtin::Params::new()).unwrap()],
        )
        .await
        .unwrap();
    let with = subscribed(&h).await;
    assert!(with.contains(&"DTMF".to_owned()), "{with:?}");
    assert!(h.ctl().apps.unload("dtmf").await);
    let after = subscribed(&h).await;
    assert!(
        !after.contains(&"DTMF".to_owned()),
        "unsubscribed: {after:?}"
    );
    assert_eq!(after, before);
}
