//! RELAY mode's HTTP control plane (`/__mock__/…`), with the paths, bodies
//! and responses of SignalWire's own RELAY mock so its test harnesses run
//! unchanged: health, specs, journal, sessions, push, inbound calls,
//! timelines and scripted scenarios; plus `/__mock__/disconnect`.

use super::journal::Direction;
use super::state::{Shared, lock};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use switchy_relay::rpc;
use switchy_relay::scenario;

type S = State<Arc<Shared>>;

fn reply(code: StatusCode, v: Value) -> Response {
    (code, axum::Json(v)).into_response()
}

fn ok(v: Value) -> Response {
    reply(StatusCode::OK, v)
}

fn bad(msg: impl Into<String>) -> Response {
    reply(StatusCode::BAD_REQUEST, json!({"error": msg.into()}))
}

/// A refusal: status and JSON body (small, unlike a built `Response`).
struct Refusal(StatusCode, Value);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        reply(self.0, self.1)
    }
}

fn body_json(b: &Bytes) -> Result<Value, Refusal> {
    serde_json::from_slice(b)
        .map_err(|_| Refusal(StatusCode::BAD_REQUEST, json!({"error": "invalid_json"})))
}

/// `?session_id=`.
#[derive(Debug, Deserialize)]
pub struct Target {
    session_id: Option<String>,
}

/// The control-plane router.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/__mock__/health", get(health))
        .route("/__mock__/specs", get(specs))
        .route("/__mock__/journal", get(journal))
        .route("/__mock__/journal/reset", post(journal_reset))
        .route("/__mock__/sessions", get(sessions))
        .route("/__mock__/push", post(push))
        .route("/__mock__/inbound_call", post(inbound_call))
        .route("/__mock__/scenario_play", post(scenario_play))
        .route("/__mock__/scenarios", get(scenarios))
        .route("/__mock__/scenarios/reset", post(scenarios_reset))
        .route("/__mock__/scenarios/dial", post(scenario_dial))
        .route("/__mock__/scenarios/_unconditional", post(unconditional))
        .route("/__mock__/scenarios/{*method}", post(scenario_method))
        .route("/__mock__/disconnect", post(disconnect))
        .with_state(shared)
}

async fn health(State(s): S) -> Response {
    ok(json!({
        "status": "ok",
        "ws_port": s.ws_port,
        "ws_scheme": s.scheme,
        "schemas_loaded": s.schemas.total(),
        "schemas_by_source": s.schemas.by_source(),
        "schema_load_errors": s.schemas.load_errors,
        "schema_origin": s.schemas.origin,
        "journal_entries": s.journal.len(),
        "sessions": lock(&s.sessions).len(),
        "connections": s.stats.connections.load(Ordering::Relaxed),
        "handshake_failures": s.stats.handshake_failures.load(Ordering::Relaxed),
        "refused": s.stats.refused.load(Ordering::Relaxed),
        "requests": s.stats.requests.load(Ordering::Relaxed),
        "errors": s.stats.errors.load(Ordering::Relaxed),
    }))
}

async fn specs(State(s): S) -> Response {
    ok(json!({"total": s.schemas.total(), "specs": s.schemas.list()}))
}

/// `GET /__mock__/journal[?session_id=…]`: one session's frames, or all.
async fn journal(State(s): S, Query(q): Query<Target>) -> Response {
    let all = s.journal.all();
    match q.session_id.filter(|i| !i.is_empty()) {
        None => ok(json!(all)),
        Some(id) => ok(json!(
            all.into_iter()
                .filter(|e| e.session_id == id)
                .collect::<Vec<_>>()
        )),
    }
}

async fn journal_reset(State(s): S) -> Response {
    s.journal.reset();
    ok(json!({"status": "ok"}))
}

async fn sessions(State(s): S) -> Response {
    let list: Vec<_> = s.all_sessions().iter().map(|e| e.snapshot()).collect();
    ok(json!({"sessions": list}))
}

/// The sessions a request targets: one by id (404 if gone) or all.
fn targets(s: &Shared, id: Option<&str>) -> Result<Vec<Arc<super::state::SessionEntry>>, Refusal> {
    match id.filter(|i| !i.is_empty()) {
        Some(id) => s.session(id).map(|e| vec![e]).ok_or_else(|| {
            Refusal(
                StatusCode::NOT_FOUND,
                json!({"sent_to": [], "count": 0, "error": "no such session"}),
            )
        }),
        None => Ok(s.all_sessions()),
    }
}

fn session_of(e: &super::state::SessionEntry) -> String {
    lock(&e.info).id.clone()
}

async fn push(State(s): S, Query(q): Query<Target>, body: Bytes) -> Response {
    let b = match body_json(&body) {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    let Value::Object(o) = &b else {
        return bad("body must be an object");
    };
    let Some(frame @ Value::Object(_)) = o.get("frame") else {
        return bad("missing or non-object 'frame' field");
    };
    let target = q.session_id.or_else(|| {
        o.get("session_id")
            .and_then(Value::as_str)
            .map(str::to_owned)
    });
    let one = target.is_some();
    let to = match targets(&s, target.as_deref()) {
        Ok(t) => t,
        Err(r) => return r.into_response(),
    };
    let mut sent = Vec::new();
    for e in to {
        if e.send(frame.clone()).await {
            sent.push(session_of(&e));
        }
    }
    if one && sent.is_empty() {
        return reply(
            StatusCode::BAD_GATEWAY,
            json!({"sent_to": [], "count": 0, "error": "send failed"}),
        );
    }
    ok(json!({"count": sent.len(), "sent_to": sent}))
}

fn inbound_params(
    call_id: &str,
    from: &str,
    to: &str,
    context: &str,
    state: &str,
) -> Map<String, Value> {
    let v = json!({
        "call_id": call_id,
        "node_id": switchy_relay::NODE_ID,
        "tag": "",
        "call_state": state,
        "direction": "inbound",
        "device": {"type": "phone", "params": {"from_number": from, "to_number": to}},
        "context": context,
    });
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn text_or(o: &Map<String, Value>, key: &str, default: &str) -> String {
    match o.get(key) {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Null) | None => default.to_owned(),
        Some(Value::String(_)) => default.to_owned(),
        Some(v) => v.to_string(),
    }
}

async fn inbound_call(State(s): S, Query(q): Query<Target>, body: Bytes) -> Response {
    let b = match body_json(&body) {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    let Value::Object(o) = &b else {
        return bad("body must be an object");
    };
    let call_id = text_or(
        o,
        "call_id",
        &format!(
            "inbound-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        ),
    );
    let from = text_or(o, "from_number", "");
    let to = text_or(o, "to_number", "");
    let context = text_or(o, "context", "default");
    let states: Vec<String> = match o.get("auto_states") {
        None | Some(Value::Null) => vec!["created".into()],
        Some(Value::Array(a)) if a.is_empty() => vec!["created".into()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
            .collect(),
        Some(_) => return bad("auto_states must be an array of strings"),
    };
    let delay_ms = match o.get("delay_ms") {
        None | Some(Value::Null) => 50,
        Some(v) => match v
            .as_u64()
            .or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
        {
            Some(d) => d.min(60_000),
            None => return bad("delay_ms must be a non-negative number"),
        },
    };
    let target = q.session_id.or_else(|| {
        o.get("session_id")
            .and_then(Value::as_str)
            .map(str::to_owned)
    });
    let to_sessions = match targets(&s, target.as_deref()) {
        Ok(t) => t,
        Err(r) => return r.into_response(),
    };
    let mut delivered = BTreeSet::new();
    for (i, state) in states.iter().enumerate() {
        if i > 0 && delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        }
        let et = if i == 0 {
            "calling.call.receive"
        } else {
            "calling.call.state"
        };
        let frame = rpc::event(et, inbound_params(&call_id, &from, &to, &context, state));
        for e in &to_sessions {
            if e.send(frame.clone()).await {
                delivered.insert(session_of(e));
            }
        }
    }
    ok(json!({
        "sent_to": delivered,
        "count": delivered.len(),
        "call_id": call_id,
        "states_emitted": states,
    }))
}

async fn scenario_play(State(s): S, body: Bytes) -> Response {
    let b = match body_json(&body) {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    let Value::Array(ops) = b else {
        return bad("scenario body must be an array of operations");
    };
    let mut done = 0usize;
    for (idx, op) in ops.iter().enumerate() {
        let Value::Object(op) = op else {
            return bad(format!("step {idx} must be an object"));
        };
        if let Some(ms) = op.get("sleep_ms") {
            let Some(ms) = ms.as_f64().filter(|m| *m >= 0.0) else {
                return bad(format!("step {idx}: sleep_ms must be a number"));
            };
            tokio::time::sleep(Duration::from_secs_f64(ms.min(600_000.0) / 1000.0)).await;
        } else if let Some(p) = op.get("push") {
            let Value::Object(p) = p else {
                return bad(format!("step {idx}: push must be an object"));
            };
            let Some(frame @ Value::Object(_)) = p.get("frame") else {
                return bad(format!("step {idx}: push needs a 'frame' object"));
            };
            let sid = p.get("session_id").and_then(Value::as_str);
            let to = match targets(&s, sid) {
                Ok(t) => t,
                Err(_) => {
                    return reply(
                        StatusCode::NOT_FOUND,
                        json!({"status": "error", "at_step": idx,
                               "error": format!("no such session: {}", sid.unwrap_or(""))}),
                    );
                }
            };
            for e in to {
                e.send(frame.clone()).await;
            }
        } else if let Some(x) = op.get("expect_recv") {
            let Value::Object(x) = x else {
                return bad(format!("step {idx}: expect_recv must be an object"));
            };
            let method = match x.get("method") {
                Some(Value::String(m)) if !m.is_empty() => m.clone(),
                _ => {
                    return bad(format!(
                        "step {idx}: expect_recv requires a non-empty 'method'"
                    ));
                }
            };
            let timeout_ms = x
                .get("timeout_ms")
                .and_then(Value::as_f64)
                .unwrap_or(5000.0);
            let sid = x
                .get("session_id")
                .and_then(Value::as_str)
                .map(str::to_owned);
            let after = s.journal.last_seq();
            let hit = s
                .journal
                .wait_for(
                    after,
                    Duration::from_secs_f64(timeout_ms.clamp(0.0, 600_000.0) / 1000.0),
                    |e| {
                        e.direction == Direction::Recv
                            && e.method == method
                            && sid.as_deref().is_none_or(|id| e.session_id == id)
                    },
                )
                .await;
            if hit.is_none() {
                return ok(json!({
                    "status": "timeout", "at_step": idx,
                    "expected_method": method, "steps_completed": done,
                }));
            }
        } else {
            return bad(format!(
                "step {idx}: unknown operation; expected one of 'sleep_ms' | 'push' | 'expect_recv'"
            ));
        }
        done += 1;
    }
    ok(json!({"status": "completed", "steps": done}))
}

async fn scenarios(State(s): S) -> Response {
    ok(lock(&s.scenarios).list())
}

async fn scenarios_reset(State(s): S) -> Response {
    lock(&s.scenarios).reset();
    ok(json!({"status": "ok"}))
}

async fn scenario_dial(State(s): S, Query(q): Query<Target>, body: Bytes) -> Response {
    let b = match body_json(&body) {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    match scenario::parse_dial(&b) {
        Ok(d) => {
            let tag = d.tag.clone();
            lock(&s.scenarios).push_dial(q.session_id.filter(|i| !i.is_empty()), d);
            ok(json!({"status": "ok", "tag": tag}))
        }
        Err(e) => bad(e.to_string()),
    }
}

async fn unconditional(State(s): S, Query(q): Query<Target>, body: Bytes) -> Response {
    let b = match body_json(&body) {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    let sc = match scenario::parse_method(&b) {
        Ok(sc) => sc,
        Err(e) => return bad(e.to_string()),
    };
    let to = match targets(&s, q.session_id.as_deref()) {
        Ok(t) => t,
        Err(r) => return r.into_response(),
    };
    let mut delivered = BTreeSet::new();
    for f in scenario::unconditional_frames(&sc) {
        if f.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(f.delay_ms.min(600_000))).await;
        }
        for e in &to {
            if e.send(f.frame.clone()).await {
                delivered.insert(session_of(e));
            }
        }
    }
    ok(json!({"sent_to": delivered, "count": delivered.len(), "frames": sc.events.len()}))
}

async fn scenario_method(
    State(s): S,
    Path(method): Path<String>,
    Query(q): Query<Target>,
    body: Bytes,
) -> Response {
    if method.is_empty() {
        return bad("missing method");
    }
    let b = match body_json(&body) {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    match scenario::parse_method(&b) {
        Ok(sc) => {
            let n = sc.events.len();
            lock(&s.scenarios).push_method(&method, q.session_id.filter(|i| !i.is_empty()), sc);
            ok(json!({"status": "ok", "method": method, "events_queued": n}))
        }
        Err(e) => bad(e.to_string()),
    }
}

/// `POST /__mock__/disconnect` `{"session_id"?, "restart"?: false}`: as
/// RELAY does before a restart, send `signalwire.disconnect`, wait for the
/// client's answer (2 s at most), then close the socket. The client
/// reconnects with its protocol string and gets `session_restored: true`
/// (with `restart: true` the SDKs start afresh instead).
async fn disconnect(State(s): S, Query(q): Query<Target>, body: Bytes) -> Response {
    let b = if body.is_empty() {
        json!({})
    } else {
        match body_json(&body) {
            Ok(b) => b,
            Err(r) => return r.into_response(),
        }
    };
    let restart = b.get("restart").and_then(Value::as_bool).unwrap_or(false);
    let target = q.session_id.or_else(|| {
        b.get("session_id")
            .and_then(Value::as_str)
            .map(str::to_owned)
    });
    let to = match targets(&s, target.as_deref()) {
        Ok(t) => t,
        Err(r) => return r.into_response(),
    };
    let mut closed = Vec::new();
    for e in to {
        let frame = rpc::request("signalwire.disconnect", json!({"restart": restart}));
        let fid = rpc::id_text(&frame);
        let sid = session_of(&e);
        let after = s.journal.last_seq();
        if !e.send(frame).await {
            continue;
        }
        let acked = s
            .journal
            .wait_for(after, super::state::PUSH_TIMEOUT, |j| {
                j.direction == Direction::Recv && j.session_id == sid && j.request_id == fid
            })
            .await
            .is_some();
        let _ = e.tx.send(super::state::Out::Close).await;
        closed.push(json!({"session_id": sid, "acked": acked}));
    }
    ok(json!({"count": closed.len(), "closed": closed}))
}
