//! Issue 13's attacks, end to end (mock-relay nodes, real agents, a real
//! controller): what a hostile caller or REST client sends must reach
//! FreeSWITCH as data, never as command syntax. Assertions are on what the
//! mock's journal received.

use std::time::Duration;
use switchy_controller::{RouteTable, Router};
use switchy_e2e::*;

/// Every `execute-app-arg` (with its app) and every api/bgapi line the
/// mock received.
fn commands(h: &Harness) -> Vec<String> {
    h.mock
        .cluster()
        .journal
        .select(|e| e.kind == "command")
        .into_iter()
        .map(|e| format!("{} {}", e.text, e.detail))
        .collect()
}

async fn inbound(h: &Harness, to: &str, from_name: &str, vars: &str) {
    let body = serde_json::json!({
        "node": 0, "from": "5551000", "from_name": from_name, "to": to,
        "variables": serde_json::from_str::<serde_json::Value>(vars).unwrap(),
    })
    .to_string();
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

#[test]
fn a_capture_that_can_hold_dial_syntax_is_refused_at_load_time() {
    let routes = r#"
[[routes]]
name = "anything"
pattern = '^(.+)$'
actions = [{ bridge = { dest = "$1@pbx.example.net", profile = "external" } }]
"#;
    let e = RouteTable::from_toml(routes, "r.toml")
        .err()
        .expect("refused");
    let text = e.to_string();
    assert_eq!(e.field, "route \"anything\": captures", "{text}");
    assert!(
        text.contains("$1 (.+)") && text.contains("captures = { 1 = \"digits\" }"),
        "says how to allow it: {text}"
    );
    // The same into a variable block, and a narrowed pattern is fine.
    let vars = r#"
[[routes]]
name = "tagged"
pattern = '^(\d+)-(.*)$'
actions = [{ bridge = { dest = "$1@pbx", vars = { x = "$2" } } }]
"#;
    let e = RouteTable::from_toml(vars, "r.toml")
        .err()
        .expect("refused");
    assert!(e.to_string().contains("$2 (.*)"), "{e}");
    let narrow = r#"
[[routes]]
name = "digits"
pattern = '^(\d+)$'
actions = [{ bridge = { dest = "$1@pbx" } }]
"#;
    assert!(RouteTable::from_toml(narrow, "r.toml").is_ok());
    // A declared class must name a real group; a variable name in an
    // action must be a variable name.
    let bad_class = r#"
[[routes]]
name = "c"
pattern = '^(\d+)$'
captures = { 3 = "digits" }
actions = [{ bridge = { dest = "$1@pbx" } }]
"#;
    assert!(RouteTable::from_toml(bad_class, "r.toml").is_err());
    let bad_name = r#"
[[routes]]
name = "n"
pattern = '^(\d+)$'
actions = [{ setvar = { name = "a=1,b", value = "x" } }]
"#;
    assert!(RouteTable::from_toml(bad_name, "r.toml").is_err());
}

const ROUTES: &str = r#"
[[routes]]
name = "open"
pattern = '^(.+)$'
guards = { "Call-Direction" = "inbound" }
captures = { 1 = "any" }
actions = [
  { setvar = { name = "cid", value = "${Caller-Caller-ID-Name}" } },
  { bridge = { dest = "$1@pbx.example.net", profile = "external", vars = { trace = "${sip_h_X-Trace}" } } },
]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_callers_reach_freeswitch_as_data_never_as_syntax() {
    let h = Harness::start(1).await.unwrap();
    h.wait_nodes_up().await.unwrap();
    let dir = std::env::temp_dir().join(format!("switchy-sec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("routes.toml");
    std::fs::write(&path, ROUTES).unwrap();
    h.ctl()
        .use_router(Router::from_file(&path).unwrap())
        .await
        .unwrap();
    let cluster = h.ctl().cluster.clone();
    let ended = |cause: &'static str| {
        let cluster = cluster.clone();
        move || {
            cluster.with_tracker(|t| t.is_empty() && t.finished().iter().any(|f| f.cause == cause))
        }
    };

    // 1. A destination that would fork the bridge to a premium gateway.
    inbound(
        &h,
        "5551234@h,sofia/gateway/premium/19005550100",
        "Alice",
        r#"{"sip_h_X-Trace": "t1"}"#,
    )
    .await;
    wait_for(Duration::from_secs(10), ended("INVALID_NUMBER_FORMAT"))
        .await
        .expect("the call was refused and hung up");
    // 2. A SIP header that would add channel variables to the B leg.
    inbound(
        &h,
        "5551234",
        "Alice",
        r#"{"sip_h_X-Trace": "x,execute_on_answer=hangup"}"#,
    )
    .await;
    // 3. A caller-id name that would run a shell command when `set` runs.
    inbound(
        &h,
        "5551235",
        "Eve ${system(touch pwn)}",
        r#"{"sip_h_X-Trace": "t3"}"#,
    )
    .await;
    // 4. A clean call goes through.
    inbound(&h, "5551236", "Bob", r#"{"sip_h_X-Trace": "t4"}"#).await;
    let want = "{trace=t4}sofia/external/5551236@pbx.example.net";
    let r = wait_for(Duration::from_secs(10), || {
        commands(&h).iter().any(|c| c.contains(want))
    })
    .await;
    assert!(
        r.is_ok(),
        "the clean call was not bridged: {:#?}",
        commands(&h)
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let all = commands(&h);
    for bad in [
        "premium",
        "execute_on_answer",
        "${system",
        "5551234@pbx",
        "5551235@pbx",
    ] {
        assert!(
            !all.iter().any(|c| c.contains(bad)),
            "{bad:?} reached FreeSWITCH: {all:#?}"
        );
    }
    let apps = h.ctl().apps.clone();
    wait_for(Duration::from_secs(10), || {
        apps.counter("router.route.refused_values") >= 3
    })
    .await
    .ok();
    assert_eq!(
        apps.counter("router.route.refused_values"),
        3,
        "each refusal is counted: {:?}",
        apps.stats()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_fields_cannot_carry_command_syntax() {
    let h = Harness::start(1).await.unwrap();
    h.wait_nodes_up().await.unwrap();
    // A live parked call to act on.
    inbound(&h, "7000", "Alice", "{}").await;
    let cluster = h.ctl().cluster.clone();
    wait_for(Duration::from_secs(10), || {
        cluster.with_tracker(|t| t.len() == 1)
    })
    .await
    .expect("the call is tracked");
    let uuid = cluster.with_tracker(|t| t.sessions().next().map(|s| s.uuid.clone()).unwrap());
    h.mock.cluster().journal.reset();
    let post = |path: String, body: &'static str| {
        let addr = h.http();
        async move { http(addr, "POST", &path, Some(TOKEN), Some(body)).await }
    };
    let originate = format!("/api/v1/nodes/{}/originate", node_id(0));
    let act = |a: &str| format!("/api/v1/sessions/{uuid}/{a}");
    let cases: Vec<(String, &'static str)> = vec![
        // Overwrites the tracking header: the call would be someone else's.
        (
            originate.clone(),
            r#"{"endpoint": "sofia/external/1@h", "vars": {"sip_h_X-switchy-orig-uuid": "HIJACK"}}"#,
        ),
        (
            originate.clone(),
            r#"{"endpoint": "sofia/external/1@h", "vars": {"origination_uuid": "HIJACK"}}"#,
        ),
        // Ends the variable block: forks the call to another endpoint.
        (
            originate.clone(),
            r#"{"endpoint": "sofia/external/1@h", "vars": {"a": "1}sofia/gateway/premium/1900"}}"#,
        ),
        (
            originate.clone(),
            r#"{"endpoint": "sofia/external/1@h", "vars": {"a,execute_on_answer": "hangup"}}"#,
        ),
        // A second application after the first.
        (
            originate.clone(),
            r#"{"endpoint": "sofia/external/1@h", "app": "park", "app_args": ")&hangup("}"#,
        ),
        (
            originate.clone(),
            r#"{"endpoint": "sofia/external/1@h", "app": "park", "app_args": "${system(id)}"}"#,
        ),
        (
            act("setvars"),
            r#"{"vars": {"a": "1;hangup_after_bridge=true"}}"#,
        ),
        (act("setvars"), r#"{"vars": {"a=1;b": "2"}}"#),
        (act("setvar"), r#"{"name": "x", "value": "${system(id)}"}"#),
        (
            act("bridge"),
            r#"{"dest_url": "1@h", "vars": {"t": "x,execute_on_answer=hangup"}}"#,
        ),
        (
            act("bridge"),
            r#"{"dest_url": "1@h,sofia/gateway/premium/1900"}"#,
        ),
        (act("broadcast"), r#"{"path": "system::id"}"#),
        (act("playback"), r#"{"path": "${system(id)}"}"#),
    ];
    for (path, body) in &cases {
        let (st, r) = post(path.clone(), body).await;
        assert_eq!(st, 400, "{path} {body} was not refused: {r}");
        assert!(
            r["error"]
                .as_str()
                .is_some_and(|e| e.contains("invalid command argument")),
            "{path} {body}: {r}"
        );
    }
    // Nothing of it reached the node.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let all = commands(&h);
    for bad in [
        "HIJACK",
        "premium",
        "execute_on_answer",
        "hangup_after_bridge",
        "system",
        "hangup(",
    ] {
        assert!(
            !all.iter().any(|c| c.contains(bad)),
            "{bad:?} reached FreeSWITCH: {all:#?}"
        );
    }
    // The honest forms still work.
    let (st, r) = post(act("setvars"), r#"{"vars": {"a": "1", "b": "two"}}"#).await;
    assert_eq!(st, 200, "{r}");
    let (st, r) = post(
        originate.clone(),
        r#"{"endpoint": "sofia/external/1000@127.0.0.2:5080", "vars": {"origination_caller_id_name": "Alice"}, "app": "park"}"#,
    )
    .await;
    assert_eq!(st, 200, "{r}");
}
