//! Nothing counted or billed is lost: every call gets exactly one CDR and
//! the Originator's counters equal the CDR table, when ends come in a burst
//! and when the CDR store is slow (backpressure instead of loss).

use std::collections::HashSet;
use std::time::{Duration, Instant};
use switchy_controller::cdr::CdrStore;
use switchy_controller::originator::OriginatorConfig;
use switchy_e2e::*;

/// Heavy runs: one at a time on this 2-core machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn sqlite(name: &str) -> String {
    let p = std::env::temp_dir().join(format!("switchy-{name}-{}.db", std::process::id()));
    let _ = std::fs::remove_file(&p);
    format!("sqlite://{}", p.display())
}

type Rig = OriginatorRig;

/// `nodes` simulated nodes, Park answering the inbound legs and keeping
/// them up.
async fn rig(nodes: usize, store: CdrStore, queue: usize, cfg: OriginatorConfig) -> Rig {
    originator_rig(
        mock_relay::MockConfig::ephemeral(nodes),
        store,
        queue,
        cfg,
        &["Park"],
    )
    .await
}

/// Waits until the tracker holds no channel, then closes the writer (it
/// drains); the CDR rows.
async fn finish(r: &mut Rig, within: Duration) -> Vec<switchy_controller::cdr::Cdr> {
    let c = r.h.ctl().cluster.clone();
    wait_for(within, || c.with_tracker(|t| t.is_empty()))
        .await
        .unwrap_or_else(|()| panic!("channels still tracked: {}", c.with_tracker(|t| t.len())));
    r.orig.set_cdr_sink(None);
    if let Some(w) = r.writer.take() {
        w.close().await;
    }
    r.store.all().await.unwrap()
}

fn assert_one_cdr_per_call(rows: &[switchy_controller::cdr::Cdr], calls: usize) {
    let ids: HashSet<&str> = rows.iter().map(|c| c.call_id.as_str()).collect();
    assert_eq!(ids.len(), rows.len(), "a call has two CDRs");
    assert_eq!(rows.len(), calls, "CDRs written for {calls} calls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hupall_of_20000_parked_calls_yields_exactly_20000_cdrs() {
    let _serial = SERIAL.lock().await;
    const CALLS: u64 = 20_000;
    let cfg = OriginatorConfig {
        rate: 2_500.0,
        limit: CALLS,
        max_offered: CALLS,
        // Held far longer than the test: they stay up until the hupall.
        duration: Some(600.0),
        ..OriginatorConfig::default()
    };
    let store = CdrStore::connect(&sqlite("hupall20k")).await.unwrap();
    let mut r = rig(2, store, switchy_controller::cdr::WRITER_QUEUE, cfg).await;
    r.orig.start();
    let t0 = Instant::now();
    while r.orig.status().answered < CALLS {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "only {:?} answered",
            r.orig.status()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(r.orig.status().failed, 0, "{:?}", r.orig.status().failures);
    // Every call is up: 40,000 legs, then all of them end at once.
    let (st, s) = http(
        r.h.http(),
        "POST",
        "/api/v1/originator/hupall",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(st, 200, "{s}");
    let rows = finish(&mut r, Duration::from_secs(120)).await;
    assert_one_cdr_per_call(&rows, CALLS as usize);
    let st = r.orig.status();
    assert_eq!(
        (st.offered, st.answered, st.ended),
        (CALLS, CALLS, CALLS),
        "the Originator's counters equal the CDR table"
    );
    let answered = rows.iter().filter(|c| !c.failed).count() as u64;
    assert_eq!(answered, st.answered);
    assert!(rows.iter().all(|c| c.hangup_cause == "NORMAL_CLEARING"));
    assert_eq!(metric(&r.h, "switchy_agent_dropped_events_total").await, 0);
    r.store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_cdr_store_slows_the_cluster_down_and_loses_nothing() {
    let _serial = SERIAL.lock().await;
    const CALLS: u64 = 3_000;
    let cfg = OriginatorConfig {
        rate: 1_000.0,
        limit: CALLS,
        max_offered: CALLS,
        duration: Some(0.2),
        ..OriginatorConfig::default()
    };
    // Each row takes 2 ms to store (500 rows/s for 1,000 calls/s): the
    // writer's and the builder's queues (256 each) fill within the run,
    // and then the cluster waits.
    let store = CdrStore::connect(&sqlite("slowstore"))
        .await
        .unwrap()
        .with_insert_delay(Duration::from_millis(2));
    let mut r = rig(2, store, 256, cfg).await;
    r.orig.start();
    tokio::time::timeout(Duration::from_secs(120), r.orig.wait_done())
        .await
        .expect("the run finished");
    let waits = metric(
        &r.h,
        "switchy_pipeline_backpressure_waits_total{consumer=\"cdr\"}",
    )
    .await;
    let rows = finish(&mut r, Duration::from_secs(120)).await;
    assert!(
        waits > 0,
        "the slow store never made the pipeline wait: the test proves nothing"
    );
    assert_one_cdr_per_call(&rows, CALLS as usize);
    let st = r.orig.status();
    assert_eq!((st.offered, st.answered, st.failed), (CALLS, CALLS, 0));
    assert!(rows.iter().all(|c| !c.failed));
    assert_eq!(metric(&r.h, "switchy_agent_dropped_events_total").await, 0);
    r.store.close().await;
}

/// `/metrics` counter of one tracker correction kind.
async fn correction(h: &Harness, kind: &str) -> u64 {
    metric(
        h,
        &format!("switchy_tracker_corrections_total{{kind=\"{kind}\"}}"),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_during_a_load_leave_one_whole_cdr_per_call() {
    let _serial = SERIAL.lock().await;
    const CALLS: u64 = 400;
    let cfg = OriginatorConfig {
        rate: 50.0,
        limit: CALLS,
        max_offered: CALLS,
        // Longer than the outages: each call is seen before or after one.
        duration: Some(6.0),
        // An inbound leg no app hears of fails as NO_ANSWER after 10 s
        // instead of 60.
        timeout_s: 10,
        ..OriginatorConfig::default()
    };
    let store = CdrStore::connect(&sqlite("faults")).await.unwrap();
    let mut r = rig(2, store, switchy_controller::cdr::WRITER_QUEUE, cfg).await;
    r.orig.start();
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Node fs1: its ESL connections drop and reconnects are refused for 5 s.
    let mock = r.h.mock.http_addr();
    let fault = |action: &str, ms: u64| format!(r#"{{"node":0,"action":"{action}","ms":{ms}}}"#);
    let (st, _) = http(
        mock,
        "POST",
        "/__mock__/faults",
        None,
        Some(&fault("refuse_connections", 5000)),
    )
    .await;
    assert_eq!(st, 200);
    let (st, _) = http(
        mock,
        "POST",
        "/__mock__/faults",
        None,
        Some(&fault("drop_connections", 0)),
    )
    .await;
    assert_eq!(st, 200);
    // Node fs2: its agent is killed (its unacknowledged buffer with it)
    // and a new one starts a second later.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let quic = r.h.quic_addr;
    let pem = switchy_controller::ca::issue(&r.h.ca, &node_id(1), &[]).unwrap();
    let cfg2 = agent_config(&r.h.mock, 1, quic, &r.h.ca, &pem);
    let killed = std::mem::replace(
        &mut r.h.agents[1],
        switchy_agent::Agent::start(cfg2).unwrap(),
    );
    drop(killed);
    if tokio::time::timeout(Duration::from_secs(40), r.orig.wait_done())
        .await
        .is_err()
    {
        let stuck = r.h.ctl().cluster.with_tracker(|t| {
            t.sessions()
                .filter(|s| s.direction != "inbound")
                .take(6)
                .map(|s| {
                    format!(
                        "{} call {} on {} pending={} answered_us={} state={}",
                        s.uuid, s.call, s.node, s.pending, s.answered_us, s.call_state
                    )
                })
                .collect::<Vec<_>>()
        });
        panic!(
            "the run did not finish: {:?}\nsome outbound legs: {stuck:#?}",
            r.orig.status()
        );
    }
    r.h.wait_nodes_up().await.unwrap();
    let st = r.orig.status();
    let rows = finish(&mut r, Duration::from_secs(60)).await;
    assert_one_cdr_per_call(&rows, CALLS as usize);
    let answered = rows.iter().filter(|c| !c.failed).count() as u64;
    assert_eq!(
        (answered, rows.len() as u64 - answered),
        (st.answered, st.failed),
        "the CDR table and the Originator agree: {st:?}"
    );
    // Inbound legs that parked on fs1 while its ESL was down are replayed
    // to the apps after the reconnect (a CHANNEL_PARK rebuilt from
    // uuid_dump) and answered: without that ~250 of these calls failed as
    // NO_ANSWER. A leg parked on fs2 in the second its agent was away may
    // still fail so (a new agent process knows of no outage).
    assert!(
        st.failed <= CALLS / 20 && st.failures.keys().all(|c| c == "NO_ANSWER"),
        "{st:?}"
    );
    // Every answered call's CDR has its answer time (none written as failed
    // for want of it) and both legs (no call split).
    for c in rows.iter().filter(|c| !c.failed) {
        assert!(
            c.caller_answer.is_some() && c.callee_uuid.is_some(),
            "{c:?}"
        );
    }
    // The snapshot after the reconnects taught the tracker live legs; each
    // correction is counted.
    let learned = correction(&r.h, "resync_added").await + correction(&r.h, "resync_linked").await;
    assert!(learned > 0, "no correction counted");
    r.store.close().await;
}

/// The unique ids of the mock's events named `name` (from its journal of
/// everything it sent).
async fn journal_uuids(h: &Harness, name: &str) -> HashSet<String> {
    let (st, body) = http(
        h.mock.http_addr(),
        "GET",
        &format!("/__mock__/journal?dir=out&kind=event&contains={name}"),
        None,
        None,
    )
    .await;
    assert_eq!(st, 200);
    body["entries"]
        .as_array()
        .expect("journal entries")
        .iter()
        .filter(|e| e["text"] == name)
        .filter_map(|e| e["unique_id"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_killed_mid_load_loses_no_cdr_and_splits_no_call() {
    use switchy_controller::cdr::CdrWriter;
    let _serial = SERIAL.lock().await;
    let cfg = OriginatorConfig {
        rate: 50.0,
        limit: 1000,
        max_offered: 1000,
        // FreeSWITCH holds each call (`&sleep`), so calls up at the kill
        // end while no controller runs, or after the next one is up.
        duration: Some(1.5),
        timeout_s: 10,
        ..OriginatorConfig::default()
    };
    let url = sqlite("crash");
    // A slow store: at the kill, the CDRs of the last ~half second are
    // queued or in an uncommitted transaction.
    let store = CdrStore::connect(&url)
        .await
        .unwrap()
        .with_insert_delay(Duration::from_millis(15));
    let mut mock = mock_relay::MockConfig::ephemeral(2);
    mock.journal_capacity = 1_000_000;
    let r = originator_rig(
        mock,
        store,
        switchy_controller::cdr::WRITER_QUEUE,
        cfg,
        &["Park"],
    )
    .await;
    let OriginatorRig {
        mut h,
        orig,
        store,
        writer,
    } = r;
    orig.hold_in_freeswitch([String::new()]);
    orig.start();
    tokio::time::sleep(Duration::from_secs(3)).await;
    // kill -9: the connections go first (nothing more is acknowledged),
    // then everything the process held in memory (queued CDRs, ended legs
    // of calls still up, the Originator).
    let quic = h.quic_addr;
    drop(h.controller.take());
    writer.expect("writer").crash();
    drop(orig);
    let before = store.count().await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut c2 = prepare_controller(&h.ca, &h.controller_pem, quic)
        .await
        .unwrap();
    c2.apps
        .load(
            "Park",
            vec![
                switchy_controller::apps::builtin::build(
                    "Park",
                    &switchy_controller::apps::builtin::Params::new(),
                )
                .unwrap(),
            ],
        )
        .await
        .unwrap();
    let w2 = CdrWriter::start(
        &c2.cluster,
        CdrStore::connect(&url).await.unwrap(),
        Default::default(),
    );
    c2.accept_agents().await.unwrap();
    h.controller = Some(c2);
    h.wait_nodes_up().await.unwrap();
    // Calls end on their own: at their holding time, or (an inbound leg
    // that parked when no app could answer it) at the originate timeout.
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let (_, body) = http(h.mock.http_addr(), "GET", "/__mock__/channels", None, None).await;
        let live: usize = body["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .map(|n| n["channels"].as_array().map_or(0, Vec::len))
            .sum();
        if live == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{live} channels still up on the nodes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let c = h.ctl().cluster.clone();
    wait_for(Duration::from_secs(20), || c.with_tracker(|t| t.is_empty()))
        .await
        .unwrap_or_else(|()| panic!("channels still tracked: {}", c.with_tracker(|t| t.len())));
    let after_restart = w2
        .counters
        .written
        .load(std::sync::atomic::Ordering::Relaxed);
    w2.close().await;
    let rows = store.all().await.unwrap();
    // Every leg the nodes created is in exactly one CDR.
    let created = journal_uuids(&h, "CHANNEL_CREATE").await;
    let mut legs = HashSet::new();
    for r in &rows {
        for u in [&r.caller_uuid, &r.callee_uuid].into_iter().flatten() {
            assert!(legs.insert(u.clone()), "leg {u} in two CDRs");
        }
    }
    let lost: Vec<_> = created.difference(&legs).collect();
    assert!(
        lost.is_empty(),
        "{} legs without a CDR: {lost:?}",
        lost.len()
    );
    assert_one_cdr_per_call(&rows, rows.len());
    assert!(
        rows.len() > 100 && before > 0 && after_restart > 0,
        "calls ended on both sides of the kill: {before} CDRs before, {after_restart} after, {} in all",
        rows.len()
    );
    // No answered call is written as failed, and none is split.
    let answered = journal_uuids(&h, "CHANNEL_ANSWER").await;
    for r in &rows {
        let was_answered = [&r.caller_uuid, &r.callee_uuid]
            .into_iter()
            .flatten()
            .any(|u| answered.contains(u));
        assert_eq!(!r.failed, was_answered, "{r:?}");
        if was_answered {
            assert!(
                r.callee_uuid.is_some() && r.caller_answer.is_some(),
                "{r:?}"
            );
        }
    }
    assert!(
        store.pending_legs().await.unwrap().is_empty(),
        "ended legs left behind in cdr_leg"
    );
    store.close().await;
}

/// A CDR built twice for one call (events re-sent after a controller
/// restart) is stored once, in SQLite and in PostgreSQL.
async fn one_row_per_call(url: &str) {
    let store = CdrStore::connect(url).await.unwrap();
    store.clear().await.unwrap();
    let cdr = |call: &str, cause: &str| switchy_controller::cdr::Cdr {
        call_id: call.into(),
        node: "fs1".into(),
        hangup_cause: cause.into(),
        ..Default::default()
    };
    let first = store
        .insert(&[cdr("a", "NORMAL_CLEARING"), cdr("b", "NORMAL_CLEARING")])
        .await
        .unwrap();
    assert_eq!(first, 2);
    // Re-built (another cause from a resync) and a new call in one batch.
    let again = store
        .insert(&[cdr("a", "SWITCHY_RESYNC_GONE"), cdr("c", "USER_BUSY")])
        .await
        .unwrap();
    assert_eq!(again, 1, "only the new call is inserted");
    let rows = store.all().await.unwrap();
    assert_one_cdr_per_call(&rows, 3);
    let a = rows.iter().find(|r| r.call_id == "a").unwrap();
    assert_eq!(a.hangup_cause, "NORMAL_CLEARING", "the first row stays");
    // Call d's inbound leg came back first after a restart (a row of its
    // own), then its originated leg: one row with both, the originated leg
    // as caller, answered.
    let inbound = switchy_controller::cdr::Cdr {
        caller_uuid: Some("B".into()),
        node: "fs2".into(),
        caller_create: Some(200),
        caller_answer: Some(210),
        caller_hangup: Some(900),
        failed: false,
        ..cdr("d", "NORMAL_CLEARING")
    };
    let outbound = switchy_controller::cdr::Cdr {
        caller_uuid: Some("A".into()),
        caller_create: Some(100),
        caller_originate: Some(150),
        caller_hangup: Some(950),
        failed: true,
        ..cdr("d", "USER_BUSY")
    };
    // An ended leg of call e, still up.
    let leg = switchy_controller::cdr::Leg {
        uuid: "E1".into(),
        call: "e".into(),
        node: "fs1".into(),
        direction: "outbound".into(),
        cause: "NORMAL_CLEARING".into(),
        created_us: 5,
        hangup_us: 9,
        ..Default::default()
    };
    let done = store
        .commit(std::slice::from_ref(&inbound), std::slice::from_ref(&leg))
        .await
        .unwrap();
    assert_eq!((done.inserted, done.merged), (1, 0));
    let done = store.commit(&[outbound], &[]).await.unwrap();
    assert_eq!(
        (done.inserted, done.merged),
        (0, 1),
        "the leg completes the row"
    );
    let done = store.commit(&[inbound], &[]).await.unwrap();
    assert_eq!(
        (done.inserted, done.merged),
        (0, 0),
        "nothing new: a duplicate"
    );
    let rows = store.all().await.unwrap();
    assert_one_cdr_per_call(&rows, 4);
    let d = rows.iter().find(|r| r.call_id == "d").unwrap();
    assert_eq!(
        (
            d.caller_uuid.as_deref(),
            d.callee_uuid.as_deref(),
            d.node.as_str(),
            d.callee_node.as_deref(),
            d.hangup_cause.as_str(),
            d.failed,
            d.callee_answer,
        ),
        (
            Some("A"),
            Some("B"),
            "fs1",
            Some("fs2"),
            "USER_BUSY",
            false,
            Some(210)
        ),
        "{d:?}"
    );
    assert_eq!(store.pending_legs().await.unwrap(), vec![leg.clone()]);
    // Its call's CDR takes the stored leg away.
    store
        .commit(&[cdr("e", "NORMAL_CLEARING")], &[])
        .await
        .unwrap();
    assert!(store.pending_legs().await.unwrap().is_empty());
    store.close().await;
}

#[tokio::test]
async fn a_cdr_built_twice_is_stored_once_in_sqlite() {
    one_row_per_call(&sqlite("once")).await;
}

#[tokio::test]
async fn a_cdr_built_twice_is_stored_once_in_postgresql() {
    if let Some(url) = postgres_url() {
        one_row_per_call(&url).await;
    }
}
