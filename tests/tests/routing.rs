//! Central routing and call-flow apps, end to end: mock-relay nodes, real
//! agents over QUIC/mTLS, a real controller; assertions on what the mock's
//! journal received.

use std::time::Duration;
use switchy_controller::apps::builtin::{self, Params};
use switchy_controller::cluster::Verdict;
use switchy_controller::{Flow, Router};
use switchy_e2e::*;

/// `(channel uuid, app, arg)` of every `sendmsg … execute` the mock received.
fn executes(h: &Harness) -> Vec<(String, String, String)> {
    h.mock
        .cluster()
        .journal
        .select(|e| e.kind == "command" && e.text.starts_with("sendmsg "))
        .into_iter()
        .map(|e| {
            let get = |k: &str| {
                e.detail
                    .lines()
                    .find_map(|l| l.strip_prefix(k))
                    .unwrap_or("")
                    .to_owned()
            };
            (
                e.text.trim_start_matches("sendmsg ").trim().to_owned(),
                get("execute-app-name: "),
                get("execute-app-arg: "),
            )
        })
        .collect()
}

async fn wait_execute(h: &Harness, app: &str, arg: &str) -> String {
    let mut found = None;
    let r = wait_for(Duration::from_secs(10), || {
        found = executes(h)
            .into_iter()
            .find(|(_, a, g)| a == app && g == arg)
            .map(|(u, _, _)| u);
        found.is_some()
    })
    .await;
    if r.is_err() {
        panic!(
            "no `{app} {arg}` reached the mock; it got {:?}",
            executes(h)
        );
    }
    found.unwrap_or_default()
}

async fn inbound(h: &Harness, node: usize, to: &str, vars: &str) {
    let body =
        format!(r#"{{"node": {node}, "from": "5551000", "to": "{to}", "variables": {vars}}}"#);
    let (st, r) = http(
        h.mock.http_addr(),
        "POST",
        "/__mock__/inbound_call",
        None,
        Some(&body),
    )
    .await;
    assert_eq!(st, 200, "{r}");
}

fn write_routes(dir: &std::path::Path, text: &str) -> std::path::PathBuf {
    let p = dir.join("routes.toml");
    std::fs::write(&p, text).expect("write routes");
    p
}

const ROUTES: &str = r#"
start = "default"

[[routes]]
name = "reject-international"
pattern = '^(00|011)\d+$'
guards = { "Call-Direction" = "inbound" }
actions = [{ respond = 403 }, { hangup = "CALL_REJECTED" }]

[[routes]]
name = "long-distance"
pattern = '^1(\d{10})$'
guards = { "Call-Direction" = "inbound" }
actions = [{ bridge = { dest = "1$1", gateway = "longdistance" } }]

[[routes]]
name = "sales"
pattern = '^(2\d{3})$'
guards = { "Call-Direction" = "inbound" }
actions = [{ setvar = { name = "switchy_dept", value = "sales" } }, { bridge = { dest = "$1@sales-pbx.example.net", profile = "external", proxy = "10.0.20.10:5060" } }]

[[routes]]
name = "support"
pattern = '^(4\d{3})$'
guards = { "Call-Direction" = "inbound" }
actions = [{ bridge = { dest = "$1@support-pbx.example.net", profile = "external", proxy = "10.0.40.10:5060" } }]
"#;

fn tmpdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("switchy-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("tmp dir");
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_file_refuses_bridges_and_proxies_and_guards_keep_outbound_legs_out() {
    let h = Harness::start(2).await.unwrap();
    h.wait_nodes_up().await.unwrap();
    let dir = tmpdir("routes");
    let path = write_routes(&dir, ROUTES);
    h.ctl()
        .use_router(Router::from_file(&path).unwrap())
        .await
        .unwrap();

    // International: refused with 403, and the channel is gone.
    inbound(&h, 0, "011441234567", "{}").await;
    let a = wait_execute(&h, "respond", "403").await;
    let cluster = h.ctl().cluster.clone();
    wait_for(Duration::from_secs(10), || {
        cluster.with_tracker(|t| t.session(&a).is_none())
    })
    .await
    .expect("the refused call ended");
    let fin = cluster.with_tracker(|t| {
        t.finished()
            .iter()
            .find(|f| f.session.uuid == a)
            .map(|f| f.cause.clone())
    });
    assert_eq!(fin.as_deref(), Some("CALL_REJECTED"));

    // 1 + 10 digits: the long-distance gateway.
    inbound(&h, 1, "18005551234", "{}").await;
    wait_execute(&h, "bridge", "sofia/gateway/longdistance/18005551234").await;

    // 2xxx and 4xxx: their PBXs through their proxies; sales sets a var first.
    inbound(&h, 0, "2001", "{}").await;
    let s = wait_execute(
        &h,
        "bridge",
        "sofia/external/2001@sales-pbx.example.net;fs_path=sip:10.0.20.10:5060",
    )
    .await;
    assert!(
        executes(&h)
            .iter()
            .any(|(u, a, g)| *u == s && a == "set" && g == "switchy_dept=sales")
    );
    inbound(&h, 1, "4321", "{}").await;
    wait_execute(
        &h,
        "bridge",
        "sofia/external/4321@support-pbx.example.net;fs_path=sip:10.0.40.10:5060",
    )
    .await;

    // An outbound leg parked with a long-distance number is not routed.
    let node = cluster.node("fs1");
    let (out, job) = node
        .originate("sofia/external/18005559999@203.0.113.9", "&park()", &[])
        .await
        .unwrap();
    job.wait().await.expect("external callee answers");
    wait_for(Duration::from_secs(10), || {
        cluster.with_tracker(|t| {
            t.session(&out)
                .is_some_and(|s| s.history.iter().any(|(name, _)| name == "CHANNEL_PARK"))
        })
    })
    .await
    .expect("outbound leg parked");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !executes(&h).iter().any(|(u, _, _)| *u == out),
        "the outbound leg was routed: {:?}",
        executes(&h)
    );
    // GET /api/v1/routes shows the live table.
    let (st, r) = http(h.http(), "GET", "/api/v1/routes", Some(TOKEN), None).await;
    assert_eq!(st, 200);
    assert_eq!(r["routes"].as_array().map(Vec::len), Some(4));
    assert_eq!(r["routes"][0]["pattern"], r"^(00|011)\d+$");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_switches_new_calls_only_and_a_broken_file_keeps_the_old_routes() {
    let h = Harness::start(1).await.unwrap();
    h.wait_nodes_up().await.unwrap();
    let dir = tmpdir("reload");
    let path = write_routes(&dir, ROUTES);
    h.ctl()
        .use_router(Router::from_file(&path).unwrap())
        .await
        .unwrap();
    inbound(&h, 0, "2001", "{}").await;
    let first = wait_execute(
        &h,
        "bridge",
        "sofia/external/2001@sales-pbx.example.net;fs_path=sip:10.0.20.10:5060",
    )
    .await;
    let before = executes(&h).len();

    // New table: sales is closed.
    write_routes(
        &dir,
        "[[routes]]\nname = \"closed\"\npattern = '^2'\nactions = [{ respond = 480 }]\n",
    );
    let (st, r) = http(h.http(), "POST", "/api/v1/routes/reload", Some(TOKEN), None).await;
    assert_eq!((st, &r["routes"]), (200, &serde_json::json!(1)), "{r}");
    inbound(&h, 0, "2002", "{}").await;
    wait_execute(&h, "respond", "480").await;
    // The call routed before the reload got nothing new.
    assert!(
        !executes(&h)[before..].iter().any(|(u, _, _)| *u == first),
        "reload touched a call in progress"
    );
    assert!(
        h.ctl()
            .cluster
            .with_tracker(|t| t.session(&first).is_some()),
        "the first call is still up"
    );

    // A broken file is refused with file:line: field, the old table serves on.
    write_routes(
        &dir,
        "[[routes]]\nname = \"bad\"\npattern = '^(2'\nactions = [{ respond = 404 }]\n",
    );
    let (st, r) = http(h.http(), "POST", "/api/v1/routes/reload", Some(TOKEN), None).await;
    assert_eq!(st, 422, "{r}");
    let msg = r["error"].as_str().unwrap_or("");
    assert!(
        msg.contains("routes.toml:3: route \"bad\": pattern"),
        "error does not point at the line and field: {msg}"
    );
    assert!(h.ctl().reload_routes().is_err());
    let (_, live) = http(h.http(), "GET", "/api/v1/routes", Some(TOKEN), None).await;
    assert_eq!(live["routes"][0]["name"], "closed");
    h.mock.cluster().journal.reset();
    inbound(&h, 0, "2003", "{}").await;
    wait_execute(&h, "respond", "480").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_routes_share_a_handler_and_a_panicking_handler_leaves_the_next_calls_routed() {
    let h = Harness::start(1).await.unwrap();
    h.wait_nodes_up().await.unwrap();
    let respond: switchy_controller::router::Handler = std::sync::Arc::new(|rc| {
        Box::pin(async move {
            let code = rc.params.get("code").cloned().unwrap_or_default();
            let who = rc.captures.get(1).cloned().flatten().unwrap_or_default();
            rc.ctx.session().setvar("switchy_who", &who).await?;
            rc.ctx.execute_nowait("respond", &code).await?;
            Ok(Flow::Break)
        })
    });
    let router = Router::new()
        .guard("Call-Direction", "inbound")
        .route("boom", "^666$", |_rc| async move {
            panic!("handler bug");
            #[allow(unreachable_code)]
            Ok(Flow::Break)
        })
        .unwrap()
        .route_with(
            "busy",
            "Caller-Destination-Number",
            "^7(\\d+)$",
            [("code".to_owned(), "486".to_owned())].into(),
            respond.clone(),
        )
        .unwrap()
        .route_with(
            "gone",
            "Caller-Destination-Number",
            "^8(\\d+)$",
            [("code".to_owned(), "410".to_owned())].into(),
            respond,
        )
        .unwrap();
    h.ctl().use_router(router).await.unwrap();
    inbound(&h, 0, "666", "{}").await;
    let apps = h.ctl().apps.clone();
    wait_for(Duration::from_secs(10), || apps.stats().panics == 1)
        .await
        .expect("the panic was caught and counted");
    inbound(&h, 0, "7123", "{}").await;
    wait_execute(&h, "respond", "486").await;
    inbound(&h, 0, "8123", "{}").await;
    wait_execute(&h, "respond", "410").await;
    let setvars =
        h.mock.cluster().journal.select(|e| {
            e.text.starts_with("api uuid_setvar") && e.text.ends_with("switchy_who 123")
        });
    assert_eq!(setvars.len(), 2, "captures reach the handler");
    assert_eq!(apps.stats().panics, 1);
}

/// Originates fs1 → fs2 with both legs dispatched to app `id`.
async fn call_with_app(h: &Harness, id: &str) -> (String, switchy_controller::Job) {
    let ext = h.mock.node(1);
    let port = ext
        .profiles
        .iter()
        .find(|(p, _)| p == "external")
        .map(|(_, p)| *p)
        .unwrap();
    let vars = vec![
        ("switchy_app".to_owned(), id.to_owned()),
        ("sip_h_X-switchy-app".to_owned(), id.to_owned()),
    ];
    h.ctl()
        .cluster
        .node("fs1")
        .originate(
            &format!("sofia/external/2000@{}:{port}", ext.ip),
            "&park()",
            &vars,
        )
        .await
        .unwrap()
}

async fn load(h: &Harness, id: &str, name: &str, params: &[(&str, &str)]) {
    let p: Params = params
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    h.ctl()
        .apps
        .load(id, vec![builtin::build(name, &p).unwrap()])
        .await
        .unwrap();
}

async fn counter(h: &Harness, name: &str, want: u64) {
    let apps = h.ctl().apps.clone();
    if wait_for(Duration::from_secs(15), || apps.counter(name) >= want)
        .await
        .is_err()
    {
        panic!(
            "{name} stayed at {} (want {want}): {:?}",
            apps.counter(name),
            apps.stats()
        );
    }
    assert_eq!(apps.counter(name), want, "{name}");
}

async fn no_sessions(h: &Harness) {
    let c = h.ctl().cluster.clone();
    wait_for(Duration::from_secs(15), || c.with_tracker(|t| t.is_empty()))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "sessions left: {:?}",
                c.with_tracker(|t| t.sessions().map(|s| s.uuid.clone()).collect::<Vec<_>>())
            )
        });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dtmf_checker_passes_then_fails_when_the_mock_corrupts_a_digit() {
    let h = Harness::start(2).await.unwrap();
    h.wait_nodes_up().await.unwrap();
    load(&h, "park", "Park", &[]).await;
    load(
        &h,
        "dtmf",
        "DtmfChecker",
        &[("digits", "1234#"), ("timeout_ms", "3000")],
    )
    .await;
    let (a, job) = call_with_app(&h, "dtmf").await;
    job.wait().await.expect("answered");
    counter(&h, "dtmf.passed", 1).await;
    no_sessions(&h).await;
    assert_eq!(h.ctl().cluster.verdict(&a), Some(Verdict::Passed));
    // The digits went out with their tone length.
    assert!(
        !h.mock
            .cluster()
            .journal
            .select(|e| e.text.starts_with("api uuid_send_dtmf") && e.text.ends_with(" 1234#@100"))
            .is_empty(),
        "uuid_send_dtmf <uuid> 1234#@100"
    );

    let (st, _) = http(
        h.mock.http_addr(),
        "POST",
        "/__mock__/scenarios/uuid_send_dtmf",
        None,
        Some(r#"{"dtmf": "1235#"}"#),
    )
    .await;
    assert_eq!(st, 200);
    let (a, job) = call_with_app(&h, "dtmf").await;
    job.wait().await.expect("answered");
    counter(&h, "dtmf.failed", 1).await;
    assert_eq!(h.ctl().apps.counter("dtmf.passed"), 1);
    no_sessions(&h).await;
    assert_eq!(
        h.ctl().cluster.verdict(&a),
        Some(Verdict::Failed("sent=1234# received=1235#".into()))
    );
}

/// A call that ends before its app's check is done fails its verdict, and
/// the app sends nothing to the channel once it is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_cut_short_fails_its_verdict_and_the_app_stops_acting() {
    let mut cfg = mock_relay::MockConfig::ephemeral(2);
    cfg.knobs.playback_ms = 50;
    let h = Harness::start_with(cfg).await.unwrap();
    h.wait_nodes_up().await.unwrap();
    load(&h, "park", "Park", &[]).await;
    load(
        &h,
        "playrec",
        "PlayRec",
        &[("silence_ms", "30"), ("iterations", "1000")],
    )
    .await;
    let (a, job) = call_with_app(&h, "playrec").await;
    job.wait().await.expect("answered");
    counter(&h, "playrec.cycles", 2).await;
    h.ctl()
        .cluster
        .session(&a)
        .expect("A leg")
        .hangup("NORMAL_CLEARING")
        .await
        .unwrap();
    no_sessions(&h).await;
    // Give a late callback the time to act wrongly.
    tokio::time::sleep(Duration::from_millis(300)).await;
    match h.ctl().cluster.verdict(&a) {
        Some(Verdict::Failed(why)) => assert!(why.starts_with("cut short at cycle "), "{why}"),
        other => panic!("verdict {other:?}"),
    }
    assert_eq!(h.ctl().apps.stats().errors, 0, "{:?}", h.ctl().apps.stats());
    let after_hangup = h.mock.cluster().journal.select(|e| {
        e.text.contains(&a) && (e.text.starts_with("sendmsg") || e.text.starts_with("api uuid_"))
    });
    assert!(
        after_hangup
            .iter()
            .rev()
            .take_while(|e| !e.text.starts_with("api uuid_kill"))
            .count()
            == 0,
        "commands after the hangup: {after_hangup:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callee_apps_block_ring_and_bridge() {
    let h = Harness::start(2).await.unwrap();
    h.wait_nodes_up().await.unwrap();
    load(&h, "park", "Park", &[]).await;
    load(&h, "block", "CalleeBlockOnInvite", &[("code", "486")]).await;
    load(&h, "ring", "CalleeRingback", &[("ring_secs", "0.2")]).await;
    let fs2 = h.mock.node(1);
    let port = fs2.profiles[0].1;
    load(
        &h,
        "proxier",
        "Proxier",
        &[("proxy", &format!("{}:{port}", fs2.ip))],
    )
    .await;
    load(&h, "bridger", "Bridger", &[]).await;

    // Block: the originate fails with the cause of 486.
    let (_, job) = call_with_app(&h, "block").await;
    let err = job.wait().await.expect_err("blocked");
    assert!(err.contains("USER_BUSY"), "{err}");
    counter(&h, "block.blocked", 1).await;

    // Ringback: B rings, A hangs up after ring_secs.
    let (_, job) = call_with_app(&h, "ring").await;
    let started = std::time::Instant::now();
    let r = job.wait().await;
    assert!(r.is_err(), "never answered: {r:?}");
    assert!(started.elapsed() >= Duration::from_millis(200));
    counter(&h, "ring.rang", 1).await;
    assert!(
        executes(&h).iter().any(|(_, a, _)| a == "ring_ready"),
        "callee rang back"
    );
    no_sessions(&h).await;

    // Bridger: an inbound call on fs1 is bridged to its own request URI.
    inbound(&h, 0, "3000", r#"{"switchy_app": "bridger"}"#).await;
    let fs1 = h.mock.node(0);
    let want = format!("sofia/external/3000@{}:{}", fs1.ip, fs1.profiles[0].1);
    wait_execute(&h, "bridge", &want).await;
    counter(&h, "bridger.bridged", 1).await;
    // Proxier: the same through fs2 as the proxy.
    inbound(&h, 0, "3001", r#"{"switchy_app": "proxier"}"#).await;
    let want = format!(
        "sofia/external/3001@{}:{};fs_path=sip:{}:{port}",
        fs1.ip, fs1.profiles[0].1, fs2.ip
    );
    wait_execute(&h, "bridge", &want).await;
    counter(&h, "proxier.bridged", 1).await;
    // The bridged legs arrive parked in the default app.
    counter(&h, "park.parked", 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_apps_run_their_flows_to_the_end() {
    let mut cfg = mock_relay::MockConfig::ephemeral(2);
    cfg.knobs.playback_ms = 50;
    let h = Harness::start_with(cfg).await.unwrap();
    h.wait_nodes_up().await.unwrap();
    load(&h, "park", "Park", &[]).await;
    load(
        &h,
        "playrec",
        "PlayRec",
        &[
            ("silence_ms", "30"),
            ("iterations", "4"),
            ("rec_period", "2"),
        ],
    )
    .await;
    load(&h, "bert", "Bert", &[("duration_s", "1")]).await;
    load(&h, "tone", "TonePlay", &[]).await;

    let (_, job) = call_with_app(&h, "playrec").await;
    job.wait().await.expect("answered");
    counter(&h, "playrec.cycles", 4).await;
    no_sessions(&h).await;
    assert_eq!(h.ctl().apps.counter("playrec.recordings"), 1);
    let recs = h
        .mock
        .cluster()
        .journal
        .select(|e| e.text.starts_with("api uuid_record"));
    assert_eq!(recs.len(), 2, "one start, one stop: {recs:?}");

    let (_, job) = call_with_app(&h, "bert").await;
    job.wait().await.expect("answered");
    counter(&h, "bert.checked", 2).await;
    assert_eq!(h.ctl().apps.counter("bert.sync_lost"), 0);
    no_sessions(&h).await;

    let (a, job) = call_with_app(&h, "tone").await;
    job.wait().await.expect("answered");
    wait_execute(&h, "playback", "tone_stream://%(251,0,1004);loops=-1").await;
    wait_execute(&h, "echo", "").await;
    h.ctl()
        .cluster
        .session(&a)
        .expect("A leg")
        .hangup("NORMAL_CLEARING")
        .await
        .unwrap();
    no_sessions(&h).await;
    assert_eq!(h.ctl().apps.stats().errors, 0, "{:?}", h.ctl().apps.stats());
}

/// A route's final bridge ends the call when the callee hangs up first:
/// FreeSWITCH (recorded in tests/fidelity/flows/bridge_app_callee_ends.json)
/// would put the caller back in its park, so the router sets
/// hangup_after_bridge=true before it bridges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_final_bridge_ends_the_caller_when_the_callee_hangs_up_first() {
    let h = Harness::start(1).await.unwrap();
    h.wait_nodes_up().await.unwrap();
    let dir = tmpdir("callee-first");
    let path = write_routes(&dir, ROUTES);
    h.ctl()
        .use_router(Router::from_file(&path).unwrap())
        .await
        .unwrap();
    inbound(&h, 0, "4321", "{}").await;
    let caller = wait_execute(
        &h,
        "bridge",
        "sofia/external/4321@support-pbx.example.net;fs_path=sip:10.0.40.10:5060",
    )
    .await;
    assert!(
        executes(&h)
            .iter()
            .any(|(u, a, g)| *u == caller && a == "set" && g == "hangup_after_bridge=true"),
        "{:?}",
        executes(&h)
    );
    let cluster = h.ctl().cluster.clone();
    let mut callee = None;
    wait_for(Duration::from_secs(10), || {
        callee = cluster.with_tracker(|t| {
            t.sessions()
                .find(|s| s.uuid != caller && s.direction == "outbound" && s.answered_us > 0)
                .map(|s| s.uuid.clone())
        });
        callee.is_some()
    })
    .await
    .expect("the callee answered");
    let callee = callee.unwrap_or_default();
    // The callee hangs up first.
    cluster
        .node("fs1")
        .api("uuid_kill", &callee)
        .await
        .expect("uuid_kill");
    wait_for(Duration::from_secs(10), || {
        cluster.with_tracker(|t| t.session(&caller).is_none())
    })
    .await
    .expect("the caller ended with its callee (not left in its park)");
}

/// How a routed inbound call ended (its cause), once it has.
async fn ended_cause(h: &Harness, uuid: &str) -> String {
    let cluster = h.ctl().cluster.clone();
    wait_for(Duration::from_secs(10), || {
        cluster.with_tracker(|t| t.session(uuid).is_none())
    })
    .await
    .unwrap_or_else(|_| panic!("{uuid} is still up"));
    cluster
        .with_tracker(|t| {
            t.finished()
                .iter()
                .find(|f| f.session.uuid == uuid)
                .map(|f| f.cause.clone())
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routes_end_hangs_the_call_up_as_the_dialplan_would_unless_it_parks() {
    let h = Harness::start(1).await.unwrap();
    h.wait_nodes_up().await.unwrap();
    let dir = tmpdir("dialplan-end");
    let path = write_routes(
        &dir,
        r#"
[[routes]]
name = "announce"
pattern = '^100$'
guards = { "Call-Direction" = "inbound" }
actions = ["answer", { setvar = { name = "x", value = "1" } }]

[[routes]]
name = "hold"
pattern = '^200$'
guards = { "Call-Direction" = "inbound" }
actions = ["answer", "park"]

[[routes]]
name = "tag"
pattern = '^3\d\d$'
continue = true
actions = [{ setvar = { name = "tagged", value = "yes" } }]
"#,
    );
    h.ctl()
        .use_router(Router::from_file(&path).unwrap())
        .await
        .unwrap();
    // Its actions done, the call is hung up (XML would at the extension's end).
    inbound(&h, 0, "100", "{}").await;
    let a = wait_execute(&h, "set", "x=1").await;
    assert_eq!(ended_cause(&h, &a).await, "NORMAL_CLEARING");
    // `park` keeps it.
    inbound(&h, 0, "200", "{}").await;
    let b = wait_execute(&h, "park", "").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        h.ctl().cluster.with_tracker(|t| t.session(&b).is_some()),
        "a parked call was hung up"
    );
    // A `continue` route and nothing after it: the end of the table.
    inbound(&h, 0, "300", "{}").await;
    let c = wait_execute(&h, "set", "tagged=yes").await;
    assert_eq!(ended_cause(&h, &c).await, "NORMAL_CLEARING");
    // No route at all: NO_ROUTE_DESTINATION, as FreeSWITCH says it.
    inbound(&h, 0, "999", "{}").await;
    let d = wait_execute(&h, "hangup", "NO_ROUTE_DESTINATION").await;
    assert_eq!(ended_cause(&h, &d).await, "NO_ROUTE_DESTINATION");
}
