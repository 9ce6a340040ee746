//! The HTTP control plane (`/__mock__/…`), after the SignalWire mock-RELAY
//! design: health, journal, connections, channels, raw event push, inbound
//! calls, scripted scenarios, timelines and fault injection.

use crate::node::{Cluster, Control, Invite, NodeMsg, new_uuid};
use crate::scenario::Scenario;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use switchy_protocol::esl::Event;
use tokio::sync::oneshot;

type Shared = Arc<Cluster>;

fn err(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, Json(json!({"error": msg.into()}))).into_response()
}

type Body<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;

/// The request body, or the message of a 400 saying what was expected.
fn parse<T>(body: Body<T>, expected: &str) -> Result<T, String> {
    body.map(|Json(v)| v)
        .map_err(|e| format!("{e}: {expected}"))
}

/// The control-plane router.
pub fn router(cluster: Shared) -> Router {
    Router::new()
        .route("/__mock__/health", get(health))
        .route("/__mock__/journal", get(journal))
        .route("/__mock__/journal/reset", post(journal_reset))
        .route("/__mock__/connections", get(connections))
        .route("/__mock__/channels", get(channels))
        .route("/__mock__/cost", get(cost))
        .route("/__mock__/push", post(push))
        .route("/__mock__/inbound_call", post(inbound_call))
        .route("/__mock__/scenarios", get(scenarios_list))
        .route("/__mock__/scenarios/reset", post(scenarios_reset))
        .route("/__mock__/scenarios/{command}", post(scenario_add))
        .route("/__mock__/scenario_play", post(scenario_play))
        .route("/__mock__/faults", post(faults))
        .route("/__mock__/nodes/{n}/knobs", get(knobs_get).post(knobs_set))
        .layer(axum::middleware::map_request(json_whatever_the_type))
        .with_state(cluster)
}

/// Every body is read as JSON whatever its Content-Type says: `curl -d`
/// sends `application/x-www-form-urlencoded`, and a control plane that
/// answered 400 to that would fail every example as written.
async fn json_whatever_the_type(mut req: axum::extract::Request) -> axum::extract::Request {
    let json = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    // An empty body stays without a type: handlers that take an optional
    // body see none.
    let empty = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes() == b"0")
        || (req
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .is_none()
            && req
                .headers()
                .get(axum::http::header::TRANSFER_ENCODING)
                .is_none());
    if !json && !empty {
        req.headers_mut().insert(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json"),
        );
    }
    req
}

async fn health(State(c): State<Shared>) -> Json<Value> {
    let mut nodes = Vec::new();
    for (i, info) in c.infos.iter().enumerate() {
        let snap = snapshot(&c, i).await;
        nodes.push(json!({
            "index": i,
            "hostname": info.hostname,
            "ip": info.ip,
            "esl": info.esl_addr.to_string(),
            "core_uuid": snap.get("core_uuid"),
            "channels": snap.get("channels").and_then(Value::as_array).map_or(0, Vec::len),
            "connections": snap.get("connections").and_then(Value::as_array).map_or(0, Vec::len),
            "profiles": info.profiles.iter().map(|(n, p)| json!({"name": n, "url": format!("sip:mod_sofia@{}:{p}", info.ip)})).collect::<Vec<_>>(),
        }));
    }
    Json(json!({
        "status": "ok",
        "nodes": nodes,
        "schemas_loaded": c.schemas.loaded(),
        "schema_dir": c.schemas.dir,
        "schema_errors": c.schemas.errors,
        "events_sent": c.events_sent.load(Ordering::Relaxed),
    }))
}

async fn snapshot(c: &Cluster, node: usize) -> Value {
    let (tx, rx) = oneshot::channel();
    if c.senders[node]
        .send(NodeMsg::Control(Control::Snapshot(tx)))
        .is_err()
    {
        return json!({});
    }
    rx.await.unwrap_or(json!({}))
}

#[derive(Deserialize, Default)]
struct JournalQuery {
    node: Option<usize>,
    conn: Option<u64>,
    dir: Option<String>,
    kind: Option<String>,
    contains: Option<String>,
    since: Option<u64>,
    limit: Option<usize>,
}

async fn journal(State(c): State<Shared>, Query(q): Query<JournalQuery>) -> Json<Value> {
    let mut entries = c.journal.select(|e| {
        q.node.is_none_or(|n| n == e.node)
            && q.conn.is_none_or(|n| n == e.conn)
            && q.dir.as_deref().is_none_or(|d| d == e.dir)
            && q.kind.as_deref().is_none_or(|k| k == e.kind)
            && q.since.is_none_or(|s| e.n > s)
            && q.contains
                .as_deref()
                .is_none_or(|t| e.text.contains(t) || e.detail.contains(t))
    });
    if let Some(l) = q.limit
        && entries.len() > l
    {
        entries.drain(..entries.len() - l);
    }
    Json(json!({"last": c.journal.last_n(), "entries": entries}))
}

async fn journal_reset(State(c): State<Shared>) -> Json<Value> {
    c.journal.reset();
    Json(json!({"reset": true}))
}

async fn connections(State(c): State<Shared>) -> Json<Value> {
    per_node(&c, "connections").await
}

/// `{"nodes": [{"node": i, key: …}]}` from every node's snapshot.
async fn per_node(c: &Shared, key: &str) -> Json<Value> {
    let mut all = Vec::new();
    for i in 0..c.infos.len() {
        let s = snapshot(c, i).await;
        all.push(json!({"node": i, key: s.get(key)}));
    }
    Json(json!({"nodes": all}))
}

async fn channels(State(c): State<Shared>) -> Json<Value> {
    let mut all = Vec::new();
    for i in 0..c.infos.len() {
        let s = snapshot(&c, i).await;
        all.push(
            json!({"node": i, "core_uuid": s.get("core_uuid"), "channels": s.get("channels")}),
        );
    }
    Json(json!({"nodes": all}))
}

/// Per node: what its work would cost a FreeSWITCH (events and bytes
/// serialized, commands, legs, CPU charged), per call, and the call rate
/// its cores would sustain under the cost model.
async fn cost(State(c): State<Shared>) -> Json<Value> {
    per_node(&c, "cost").await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PushReq {
    node: Option<usize>,
    conn: Option<u64>,
    event: BTreeMap<String, Value>,
    body: Option<String>,
    /// Push the event this many times (a flood), with `{n}` in header
    /// values replaced by 0, 1, 2, …
    count: Option<u32>,
}

/// Events one push may repeat at most.
const MAX_PUSH_COUNT: u32 = 1_000_000;

fn to_event(headers: &BTreeMap<String, Value>, body: Option<String>) -> Event {
    let mut e = Event::default();
    // Event-Name first, as in every FreeSWITCH event.
    if let Some(n) = headers.get("Event-Name") {
        e.headers.push(
            "Event-Name",
            n.as_str().map_or_else(|| n.to_string(), str::to_owned),
        );
    }
    for (k, v) in headers {
        if k == "Event-Name" {
            continue;
        }
        e.headers
            .push(k, v.as_str().map_or_else(|| v.to_string(), str::to_owned));
    }
    e.body = body.map(String::into_bytes);
    e
}

async fn push_event(c: &Cluster, node: usize, conn: Option<u64>, event: Event) -> usize {
    let (tx, rx) = oneshot::channel();
    let msg = NodeMsg::Control(Control::Push {
        conn,
        event,
        done: tx,
    });
    if c.senders[node].send(msg).is_err() {
        return 0;
    }
    rx.await.unwrap_or(0)
}

async fn push(State(c): State<Shared>, body: Body<PushReq>) -> Response {
    let req = match parse(
        body,
        "send {\"node\": 0, \"event\": {\"Event-Name\": \"CUSTOM\", ...}}",
    ) {
        Ok(v) => v,
        Err(m) => return err(StatusCode::BAD_REQUEST, m),
    };
    if !req.event.contains_key("Event-Name") {
        return err(
            StatusCode::BAD_REQUEST,
            "event needs an \"Event-Name\" header",
        );
    }
    let nodes: Vec<usize> = match req.node {
        Some(n) if n >= c.infos.len() => {
            return err(
                StatusCode::NOT_FOUND,
                format!("no node {n}: the cluster has {}", c.infos.len()),
            );
        }
        Some(n) => vec![n],
        None => (0..c.infos.len()).collect(),
    };
    let count = req.count.unwrap_or(1);
    if count == 0 || count > MAX_PUSH_COUNT {
        return err(
            StatusCode::BAD_REQUEST,
            format!("count must be 1 to {MAX_PUSH_COUNT}"),
        );
    }
    let event = to_event(&req.event, req.body.clone());
    let mut delivered = 0;
    for i in 0..count {
        let event = if req.count.is_some() {
            let n = i.to_string();
            let headers: BTreeMap<String, Value> = req
                .event
                .iter()
                .map(|(k, v)| match v.as_str() {
                    Some(t) if t.contains("{n}") => (k.clone(), Value::from(t.replace("{n}", &n))),
                    _ => (k.clone(), v.clone()),
                })
                .collect();
            to_event(&headers, req.body.clone())
        } else {
            event.clone()
        };
        for &node in &nodes {
            delivered += push_event(&c, node, req.conn, event.clone()).await;
        }
    }
    Json(json!({"delivered": delivered})).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InboundReq {
    #[serde(default)]
    node: usize,
    from: String,
    to: String,
    #[serde(default)]
    from_name: Option<String>,
    #[serde(default)]
    profile: Option<String>,
    #[serde(default)]
    context: Option<String>,
    #[serde(default)]
    variables: BTreeMap<String, String>,
    #[serde(default)]
    delay_ms: u64,
    #[serde(default)]
    hangup_after_ms: Option<u64>,
    #[serde(default)]
    network_addr: Option<String>,
}

async fn inbound_call(State(c): State<Shared>, body: Body<InboundReq>) -> Response {
    let req = match parse(
        body,
        "send {\"node\": 0, \"from\": \"1000\", \"to\": \"2000\"}",
    ) {
        Ok(v) => v,
        Err(m) => return err(StatusCode::BAD_REQUEST, m),
    };
    let Some(info) = c.infos.get(req.node) else {
        return err(
            StatusCode::NOT_FOUND,
            format!("no node {}: the cluster has {}", req.node, c.infos.len()),
        );
    };
    let profile = req.profile.unwrap_or_else(|| "external".into());
    let Some((_, port)) = info.profiles.iter().find(|(p, _)| *p == profile) else {
        return err(
            StatusCode::BAD_REQUEST,
            format!(
                "node {} has no profile {profile:?} (external, internal)",
                req.node
            ),
        );
    };
    let call_id = new_uuid();
    let inv = Invite {
        call_id: call_id.clone(),
        from_node: None,
        user: req.to.clone(),
        req_uri: format!("{}@{}:{port}", req.to, info.ip),
        profile,
        cid_name: req.from_name.unwrap_or_default(),
        cid_num: req.from,
        vars: req.variables.into_iter().collect(),
        network_addr: req.network_addr.unwrap_or_else(|| "192.0.2.10".into()),
        context: req.context.unwrap_or_else(|| "public".into()),
        hangup_after_ms: req.hangup_after_ms,
    };
    let (tx, rx) = oneshot::channel::<String>();
    let node = req.node;
    let delay = req.delay_ms;
    let _ = c.senders[node].send(NodeMsg::Control(Control::Inbound(Box::new(inv), delay, tx)));
    match rx.await {
        Ok(id) => Json(json!({"call_id": id, "node": node})).into_response(),
        Err(_) => err(StatusCode::SERVICE_UNAVAILABLE, "node is not running"),
    }
}

async fn scenarios_list(State(c): State<Shared>) -> Json<Value> {
    let list: Vec<Value> = c
        .scenarios
        .list()
        .into_iter()
        .map(|(cmd, s)| json!({"command": cmd, "scenario": s}))
        .collect();
    Json(json!({"scenarios": list}))
}

async fn scenarios_reset(State(c): State<Shared>) -> Json<Value> {
    c.scenarios.reset();
    Json(json!({"reset": true}))
}

async fn scenario_add(
    State(c): State<Shared>,
    Path(command): Path<String>,
    body: Body<Scenario>,
) -> Response {
    let s = match parse(
        body,
        "fields are node, reply, hangup_cause, answer_after_ms, dtmf, events",
    ) {
        Ok(v) => v,
        Err(m) => return err(StatusCode::BAD_REQUEST, m),
    };
    if command.is_empty()
        || !command
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
    {
        return err(
            StatusCode::BAD_REQUEST,
            "command must be an API command name such as originate",
        );
    }
    c.scenarios.add(&command, s);
    Json(json!({"queued": c.scenarios.list().len()})).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlayReq {
    steps: Vec<Step>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Step {
    sleep_ms: Option<u64>,
    push: Option<PushReq>,
    expect_recv: Option<Expect>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    /// Text the received command line (or its headers) must contain.
    contains: String,
    node: Option<usize>,
    #[serde(default = "default_timeout")]
    timeout_ms: u64,
}

fn default_timeout() -> u64 {
    5000
}

async fn scenario_play(State(c): State<Shared>, body: Body<PlayReq>) -> Response {
    let req = match parse(
        body,
        "steps are {sleep_ms}, {push} or {expect_recv: {contains, node, timeout_ms}}",
    ) {
        Ok(v) => v,
        Err(m) => return err(StatusCode::BAD_REQUEST, m),
    };
    let mut since = c.journal.last_n();
    for (i, step) in req.steps.into_iter().enumerate() {
        if let Some(ms) = step.sleep_ms {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if let Some(p) = step.push {
            let ev = to_event(&p.event, p.body);
            let nodes: Vec<usize> = match p.node {
                Some(n) if n < c.infos.len() => vec![n],
                Some(n) => return err(StatusCode::NOT_FOUND, format!("step {i}: no node {n}")),
                None => (0..c.infos.len()).collect(),
            };
            for n in nodes {
                push_event(&c, n, p.conn, ev.clone()).await;
            }
        }
        if let Some(x) = step.expect_recv {
            let deadline = tokio::time::Instant::now() + Duration::from_millis(x.timeout_ms);
            loop {
                let notified = c.journal.notify.notified();
                let hit = c.journal.select(|e| {
                    e.n > since
                        && e.dir == "in"
                        && x.node.is_none_or(|n| n == e.node)
                        && (e.text.contains(&x.contains) || e.detail.contains(&x.contains))
                });
                if let Some(h) = hit.first() {
                    since = h.n;
                    break;
                }
                if tokio::time::timeout_at(deadline, notified).await.is_err() {
                    return Json(json!({"status": "timeout", "step": i, "expected": x.contains}))
                        .into_response();
                }
            }
        }
    }
    Json(json!({"status": "completed"})).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultReq {
    node: usize,
    action: String,
    #[serde(default)]
    ms: u64,
}

async fn faults(State(c): State<Shared>, body: Body<FaultReq>) -> Response {
    let f = match parse(
        body,
        "send {\"node\": 0, \"action\": \"drop_connections|refuse_connections|restart|delay_replies\", \"ms\": 1000}",
    ) {
        Ok(v) => v,
        Err(m) => return err(StatusCode::BAD_REQUEST, m),
    };
    let Some(info) = c.infos.get(f.node) else {
        return err(
            StatusCode::NOT_FOUND,
            format!("no node {}: the cluster has {}", f.node, c.infos.len()),
        );
    };
    match f.action.as_str() {
        "drop_connections" => {
            let (tx, rx) = oneshot::channel();
            let _ = c.senders[f.node].send(NodeMsg::Control(Control::DropConnections(tx)));
            Json(json!({"dropped": rx.await.unwrap_or(0)})).into_response()
        }
        "refuse_connections" => {
            info.refuse_until_ms
                .store(crate::util::now_us() / 1000 + f.ms, Ordering::Relaxed);
            Json(json!({"refusing_ms": f.ms})).into_response()
        }
        "delay_replies" => {
            info.reply_delay_ms.store(f.ms, Ordering::Relaxed);
            Json(json!({"reply_delay_ms": f.ms})).into_response()
        }
        "restart" => {
            let (tx, rx) = oneshot::channel();
            let _ = c.senders[f.node].send(NodeMsg::Control(Control::Restart(tx)));
            match rx.await {
                Ok(core) => Json(json!({"core_uuid": core})).into_response(),
                Err(_) => err(StatusCode::SERVICE_UNAVAILABLE, "node is not running"),
            }
        }
        other => err(
            StatusCode::BAD_REQUEST,
            format!(
                "unknown fault {other:?}: use drop_connections, refuse_connections, restart or delay_replies"
            ),
        ),
    }
}

async fn knobs_get(State(c): State<Shared>, Path(n): Path<usize>) -> Response {
    if n >= c.infos.len() {
        return err(StatusCode::NOT_FOUND, format!("no node {n}"));
    }
    let (tx, rx) = oneshot::channel();
    let _ = c.senders[n].send(NodeMsg::Control(Control::GetKnobs(tx)));
    match rx.await {
        Ok(k) => Json(serde_json::to_value(k).unwrap_or_default()).into_response(),
        Err(_) => err(StatusCode::SERVICE_UNAVAILABLE, "node is not running"),
    }
}

async fn knobs_set(
    State(c): State<Shared>,
    Path(n): Path<usize>,
    body: Body<crate::config::Knobs>,
) -> Response {
    if n >= c.infos.len() {
        return err(StatusCode::NOT_FOUND, format!("no node {n}"));
    }
    let k = match parse(body, "fields are those of GET /__mock__/nodes/{n}/knobs") {
        Ok(v) => v,
        Err(m) => return err(StatusCode::BAD_REQUEST, m),
    };
    if !(0.0..=1.0).contains(&k.failure_ratio) {
        return err(
            StatusCode::BAD_REQUEST,
            "failure_ratio must be between 0 and 1",
        );
    }
    let (tx, rx) = oneshot::channel();
    let _ = c.senders[n].send(NodeMsg::Control(Control::SetKnobs(Box::new(k), tx)));
    let _ = rx.await;
    Json(json!({"ok": true})).into_response()
}
