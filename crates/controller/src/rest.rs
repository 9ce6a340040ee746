//! The REST API (axum): nodes, sessions, calls, jobs, originate, session
//! actions, api fan-out, health, Prometheus metrics, OpenAPI document.
//! Bearer-token auth on everything but `/health`.

use crate::action::SessionAction;
use crate::cluster::{Cluster, CommandError, LATENCY_BUCKETS};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// REST state.
#[derive(Clone)]
pub struct Api {
    /// The cluster.
    pub cluster: Cluster,
    /// The bearer token.
    pub token: Arc<String>,
    /// Loaded apps.
    pub apps: crate::apps::AppManager,
    /// The router, if routes are in use.
    pub router: Arc<std::sync::RwLock<Option<crate::router::Router>>>,
    /// The Originator, if one is set.
    pub originator: Arc<std::sync::RwLock<Option<crate::originator::Originator>>>,
}

/// A JSON error with a status code and a message saying what to fix.
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1}))).into_response()
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        let code = match &e {
            CommandError::NodeDown(_) => StatusCode::SERVICE_UNAVAILABLE,
            CommandError::Invalid(_) => StatusCode::BAD_REQUEST,
            CommandError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            CommandError::Agent { .. } | CommandError::Transport { .. } => StatusCode::BAD_GATEWAY,
        };
        ApiError(code, e.to_string())
    }
}

type JsonBody<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;

fn body<T>(b: JsonBody<T>, example: &str) -> Result<T, ApiError> {
    b.map(|Json(v)| v).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("{e}; expected a JSON body like {example}"),
        )
    })
}

async fn auth(State(api): State<Api>, headers: HeaderMap, req: Request, next: Next) -> Response {
    let ok = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| constant_eq(t.as_bytes(), api.token.as_bytes()));
    if !ok {
        return ApiError(StatusCode::UNAUTHORIZED, "missing or wrong bearer token: send 'Authorization: Bearer <token>' (the controller's --token / SWITCHY_API_TOKEN)".into()).into_response();
    }
    next.run(req).await
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The router.
pub fn router(api: Api) -> Router {
    let protected = Router::new()
        .route("/metrics", get(metrics))
        .route("/api/v1/nodes", get(nodes))
        .route("/api/v1/nodes/{id}", get(node))
        .route("/api/v1/nodes/{id}/originate", post(originate))
        .route("/api/v1/sessions", get(sessions))
        .route("/api/v1/sessions/{uuid}", get(session))
        .route("/api/v1/sessions/{uuid}/{action}", post(session_action))
        .route("/api/v1/calls", get(calls))
        .route("/api/v1/calls/{id}", get(call))
        .route("/api/v1/jobs", get(jobs))
        .route("/api/v1/api", post(api_fanout))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/routes", get(routes))
        .route("/api/v1/routes/reload", post(routes_reload))
        .route("/api/v1/apps", get(apps))
        .route(
            "/api/v1/originator",
            get(originator_get)
                .patch(originator_patch)
                .post(originator_patch),
        )
        .route("/api/v1/originator/{action}", post(originator_action))
        .layer(middleware::from_fn_with_state(api.clone(), auth));
    Router::new()
        .route("/health", get(health))
        .merge(protected)
        .with_state(api)
}

/// The value in a shared slot, or 404 saying how to get one.
fn current<T: Clone>(slot: &std::sync::RwLock<Option<T>>, missing: &str) -> Result<T, ApiError> {
    slot.read()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, missing.into()))
}

fn current_router(api: &Api) -> Result<crate::router::Router, ApiError> {
    current(
        &api.router,
        "no routes in use: start serve with --routes FILE",
    )
}

async fn routes(State(api): State<Api>) -> Result<Json<Value>, ApiError> {
    Ok(Json(current_router(&api)?.table().to_json()))
}

async fn routes_reload(State(api): State<Api>) -> Result<Json<Value>, ApiError> {
    let r = current_router(&api)?;
    match r.reload() {
        Ok(n) => Ok(Json(json!({"reloaded": true, "routes": n}))),
        Err(e) => Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("routes file refused, the previous routes keep serving: {e}"),
        )),
    }
}

fn current_originator(api: &Api) -> Result<crate::originator::Originator, ApiError> {
    current(
        &api.originator,
        "no originator: it runs under `switchy-controller run`",
    )
}

async fn originator_get(State(api): State<Api>) -> Result<Json<Value>, ApiError> {
    let o = current_originator(&api)?;
    Ok(Json(serde_json::to_value(o.status()).unwrap_or_default()))
}

async fn originator_patch(
    State(api): State<Api>,
    b: JsonBody<Value>,
) -> Result<Json<Value>, ApiError> {
    let o = current_originator(&api)?;
    let patch = body(b, r#"{"rate": 50, "limit": 200}"#)?;
    o.update_json(&patch)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("{e:#}")))?;
    Ok(Json(serde_json::to_value(o.status()).unwrap_or_default()))
}

async fn originator_action(
    State(api): State<Api>,
    Path(action): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let o = current_originator(&api)?;
    let r = match action.as_str() {
        "start" => {
            o.start();
            Ok(())
        }
        "stop" => {
            o.stop();
            Ok(())
        }
        "hupall" => o.hupall().await,
        "hard_hupall" => o.hard_hupall().await,
        "shutdown" => o.shutdown().await,
        other => {
            return Err(ApiError(
                StatusCode::NOT_FOUND,
                format!(
                    "no originator action {other:?}: start, stop, hupall, hard_hupall, shutdown"
                ),
            ));
        }
    };
    r.map_err(|e| ApiError(StatusCode::BAD_GATEWAY, format!("{e:#}")))?;
    Ok(Json(serde_json::to_value(o.status()).unwrap_or_default()))
}

async fn apps(State(api): State<Api>) -> Json<Value> {
    let (loaded, default) = api.apps.loaded();
    let loaded: Vec<Value> = loaded
        .into_iter()
        .map(|(id, names)| json!({"id": id, "apps": names}))
        .collect();
    Json(json!({
        "loaded": loaded,
        "default": default,
        "stats": api.apps.stats(),
        "builtin": crate::apps::builtin::CATALOG.iter().map(|b| json!({"name": b.name, "doc": b.doc})).collect::<Vec<_>>(),
    }))
}

async fn health(State(api): State<Api>) -> Json<Value> {
    let nodes = api.cluster.nodes();
    let up = nodes.iter().filter(|n| n.ready()).count();
    Json(json!({"status": "ok", "nodes": nodes.len(), "nodes_up": up}))
}

async fn metrics(State(api): State<Api>) -> Response {
    let c = api.cluster.counters();
    let nodes = api.cluster.nodes();
    let (sessions, calls) = api.cluster.with_tracker(|t| (t.len(), t.calls().count()));
    let mut s = String::new();
    let mut put = |name: &str, help: &str, kind: &str, lines: Vec<(String, u64)>| {
        s.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, v) in lines {
            s.push_str(&format!("{name}{labels} {v}\n"));
        }
    };
    put(
        "switchy_nodes",
        "Nodes known to the controller.",
        "gauge",
        vec![(String::new(), nodes.len() as u64)],
    );
    put(
        "switchy_node_up",
        "1 when the node's agent is connected and its ESL is up.",
        "gauge",
        nodes
            .iter()
            .map(|n| (format!("{{node=\"{}\"}}", n.id), (n.ready()) as u64))
            .collect(),
    );
    put(
        "switchy_node_events_total",
        "Events received per node.",
        "counter",
        nodes
            .iter()
            .map(|n| (format!("{{node=\"{}\"}}", n.id), n.events))
            .collect(),
    );
    put(
        "switchy_agent_dropped_events_total",
        "Events the agent dropped with a full buffer.",
        "counter",
        nodes
            .iter()
            .map(|n| (format!("{{node=\"{}\"}}", n.id), n.agent_dropped))
            .collect(),
    );
    put(
        "switchy_events_total",
        "Events received.",
        "counter",
        vec![(String::new(), c.events.load(Ordering::Relaxed))],
    );
    put(
        "switchy_duplicate_events_total",
        "Re-sent events ignored after a reconnect.",
        "counter",
        vec![(String::new(), c.duplicates.load(Ordering::Relaxed))],
    );
    let corrections = api.cluster.with_tracker(|t| t.corrections.clone());
    put(
        "switchy_tracker_corrections_total",
        "Legs the tracker corrected without a hangup event: resync_closed (FreeSWITCH no longer has it), resync_added and resync_linked (learned from a snapshot, linked to its call), node_restarted, reaped.",
        "counter",
        [
            "resync_closed",
            "resync_added",
            "resync_linked",
            "node_restarted",
            "reaped",
        ]
        .iter()
        .map(|k| {
            (
                format!("{{kind=\"{k}\"}}"),
                corrections.get(k).copied().unwrap_or(0),
            )
        })
        .collect(),
    );
    let consumers = api.cluster.pipeline().consumers();
    put(
        "switchy_pipeline_queued_events",
        "Events queued for each lossless consumer (CDRs, the Originator, apps).",
        "gauge",
        consumers
            .iter()
            .map(|c| (format!("{{consumer=\"{}\"}}", c.name), c.queued as u64))
            .collect(),
    );
    put(
        "switchy_pipeline_delivered_events_total",
        "Events handed to each lossless consumer.",
        "counter",
        consumers
            .iter()
            .map(|c| {
                (
                    format!("{{consumer=\"{}\"}}", c.name),
                    c.stats.delivered.load(Ordering::Relaxed),
                )
            })
            .collect(),
    );
    put(
        "switchy_pipeline_backpressure_waits_total",
        "Times the event pipeline waited for a full consumer (backpressure: nothing is dropped).",
        "counter",
        consumers
            .iter()
            .map(|c| {
                (
                    format!("{{consumer=\"{}\"}}", c.name),
                    c.stats.waits.load(Ordering::Relaxed),
                )
            })
            .collect(),
    );
    put(
        "switchy_pipeline_backpressure_wait_ms_total",
        "Time the event pipeline spent waiting for each consumer, ms.",
        "counter",
        consumers
            .iter()
            .map(|c| {
                (
                    format!("{{consumer=\"{}\"}}", c.name),
                    c.stats.waited_us.load(Ordering::Relaxed) / 1000,
                )
            })
            .collect(),
    );
    put(
        "switchy_observer_lagged_events_total",
        "Events best-effort observers (live views) missed.",
        "counter",
        vec![(String::new(), api.cluster.pipeline().observer_lagged())],
    );
    put(
        "switchy_sessions",
        "Live sessions.",
        "gauge",
        vec![(String::new(), sessions as u64)],
    );
    put(
        "switchy_calls",
        "Live calls.",
        "gauge",
        vec![(String::new(), calls as u64)],
    );
    put(
        "switchy_commands_total",
        "Commands sent to nodes.",
        "counter",
        vec![(String::new(), c.commands.load(Ordering::Relaxed))],
    );
    put(
        "switchy_command_errors_total",
        "Commands that failed.",
        "counter",
        vec![(String::new(), c.command_errors.load(Ordering::Relaxed))],
    );
    put(
        "switchy_agents_refused_total",
        "Agent connections refused.",
        "counter",
        vec![(String::new(), c.refused.load(Ordering::Relaxed))],
    );
    s.push_str("# HELP switchy_node_idle_cpu_percent Host idle CPU as the node's FreeSWITCH reports it (api status).\n# TYPE switchy_node_idle_cpu_percent gauge\n");
    for n in &nodes {
        if let Some(l) = &n.load {
            s.push_str(&format!(
                "switchy_node_idle_cpu_percent{{node=\"{}\"}} {}\n",
                n.id,
                l.idle_cpu_pct()
            ));
        }
    }
    s.push_str("# HELP switchy_node_freeswitch_cpu_percent CPU of the node's FreeSWITCH process, % of one core (read by its agent).\n# TYPE switchy_node_freeswitch_cpu_percent gauge\n");
    for n in &nodes {
        if let Some(c) = n.load.as_ref().and_then(|l| l.fs_cpu_pct()) {
            s.push_str(&format!(
                "switchy_node_freeswitch_cpu_percent{{node=\"{}\"}} {c}\n",
                n.id
            ));
        }
    }
    s.push_str("# HELP switchy_app_verdicts_total Calls an app checked, by its final verdict (a call cut short before its check finished fails).\n# TYPE switchy_app_verdicts_total counter\n");
    for ((app, passed), v) in api.cluster.verdict_counts() {
        s.push_str(&format!(
            "switchy_app_verdicts_total{{app=\"{app}\",verdict=\"{}\"}} {v}\n",
            if passed { "passed" } else { "failed" }
        ));
    }
    for (metric, help, buckets, sum) in [
        (
            "switchy_relay_latency_seconds",
            "FreeSWITCH event time to tracker update.",
            &c.latency_buckets,
            &c.latency_sum_us,
        ),
        (
            "switchy_relay_agent_latency_seconds",
            "Agent receipt of an event to tracker update (switchy's own part of the relay latency).",
            &c.agent_latency_buckets,
            &c.agent_latency_sum_us,
        ),
    ] {
        s.push_str(&format!(
            "# HELP {metric} {help}\n# TYPE {metric} histogram\n"
        ));
        let mut cum = 0;
        for (i, ub) in LATENCY_BUCKETS.iter().enumerate() {
            cum += buckets[i].load(Ordering::Relaxed);
            let le = if *ub == u64::MAX {
                "+Inf".to_string()
            } else {
                format!("{}", *ub as f64 / 1e6)
            };
            s.push_str(&format!("{metric}_bucket{{le=\"{le}\"}} {cum}\n"));
        }
        s.push_str(&format!(
            "{metric}_sum {}\n",
            sum.load(Ordering::Relaxed) as f64 / 1e6
        ));
        s.push_str(&format!("{metric}_count {cum}\n"));
    }
    let o = api
        .originator
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    if let Some(o) = o {
        let st = o.status();
        for (name, help, kind, v) in [
            (
                "switchy_originator_offered_total",
                "Calls launched.",
                "counter",
                st.offered as f64,
            ),
            (
                "switchy_originator_answered_total",
                "Calls answered.",
                "counter",
                st.answered as f64,
            ),
            (
                "switchy_originator_failed_total",
                "Calls failed.",
                "counter",
                st.failed as f64,
            ),
            (
                "switchy_originator_jobs_recovered_total",
                "Originates whose BACKGROUND_JOB was lost (an ESL outage) and whose answer a resync showed.",
                "counter",
                st.jobs_recovered as f64,
            ),
            (
                "switchy_originator_active_calls",
                "Calls up now.",
                "gauge",
                st.active as f64,
            ),
            (
                "switchy_originator_rate_target",
                "Requested calls/s.",
                "gauge",
                st.config.rate,
            ),
            (
                "switchy_originator_rate_current",
                "Calls launched in the last second.",
                "gauge",
                st.current_cps,
            ),
            (
                "switchy_originator_late_launches_total",
                "Launches more than 50 ms behind schedule.",
                "counter",
                st.late_launches as f64,
            ),
        ] {
            s.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"
            ));
        }
        s.push_str("# HELP switchy_originator_bottleneck_seconds_total Seconds the requested rate was not met, by the party diagnosed.\n# TYPE switchy_originator_bottleneck_seconds_total counter\n");
        for (party, (n, _)) in &st.bottleneck_secs {
            let party = party.replace('"', "'");
            s.push_str(&format!(
                "switchy_originator_bottleneck_seconds_total{{party=\"{party}\"}} {n}\n"
            ));
        }
        s.push_str("# HELP switchy_originator_failures_total Failed calls by hangup cause.\n# TYPE switchy_originator_failures_total counter\n");
        for (cause, n) in &st.failures {
            s.push_str(&format!(
                "switchy_originator_failures_total{{cause=\"{cause}\"}} {n}\n"
            ));
        }
    }
    ([("content-type", "text/plain; version=0.0.4")], s).into_response()
}

async fn nodes(State(api): State<Api>) -> Json<Value> {
    Json(json!({"nodes": api.cluster.nodes()}))
}

async fn node(State(api): State<Api>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    api.cluster
        .node_info(&id)
        .map(|n| Json(json!(n)))
        .ok_or_else(|| {
            ApiError(
                StatusCode::NOT_FOUND,
                format!("no node {id:?}: GET /api/v1/nodes lists them"),
            )
        })
}

#[derive(Deserialize, Default)]
struct SessionFilter {
    node: Option<String>,
    direction: Option<String>,
    call: Option<String>,
    answered: Option<bool>,
}

async fn sessions(State(api): State<Api>, Query(f): Query<SessionFilter>) -> Json<Value> {
    let list: Vec<Value> = api.cluster.with_tracker(|t| {
        let mut v: Vec<_> = t
            .sessions()
            .filter(|s| f.node.as_deref().is_none_or(|n| n == s.node))
            .filter(|s| f.direction.as_deref().is_none_or(|d| d == s.direction))
            .filter(|s| f.call.as_deref().is_none_or(|c| c == s.call))
            .filter(|s| f.answered.is_none_or(|a| a == (s.answered_us > 0)))
            .map(|s| json!({"uuid": s.uuid, "node": s.node, "direction": s.direction, "state": s.state, "call_state": s.call_state, "answer_state": s.answer_state, "call": s.call, "dest": s.dest, "cid_num": s.cid_num, "created_us": s.created_us, "answered_us": s.answered_us}))
            .collect();
        v.sort_by(|a, b| a["created_us"].as_u64().cmp(&b["created_us"].as_u64()));
        v
    });
    Json(json!({"count": list.len(), "sessions": list}))
}

async fn session(
    State(api): State<Api>,
    Path(uuid): Path<String>,
) -> Result<Json<Value>, ApiError> {
    api.cluster
        .with_tracker(|t| {
            t.session(&uuid).map(|s| {
                let mut v = json!(s);
                v["variables"] = json!(s.variables());
                v
            })
        })
        .map(Json)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no live session {uuid}")))
}

async fn calls(State(api): State<Api>) -> Json<Value> {
    let list: Vec<Value> = api
        .cluster
        .with_tracker(|t| t.calls().map(|c| json!(c)).collect());
    Json(json!({"count": list.len(), "calls": list}))
}

async fn call(State(api): State<Api>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    api.cluster
        .with_tracker(|t| t.call(&id).map(|c| json!(c)))
        .map(Json)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no live call {id}")))
}

async fn jobs(State(api): State<Api>) -> Json<Value> {
    Json(json!({"jobs": api.cluster.jobs()}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OriginateReq {
    /// Full endpoint, e.g. `sofia/external/1000@10.0.0.2:5080`.
    endpoint: Option<String>,
    /// Or: `dest_url` + `profile` (+ `proxy`) / `gateway`.
    dest_url: Option<String>,
    profile: Option<String>,
    gateway: Option<String>,
    proxy: Option<String>,
    /// `&app(args)` destination (default `park`).
    app: Option<String>,
    app_args: Option<String>,
    #[serde(default)]
    vars: std::collections::BTreeMap<String, String>,
    /// Wait for the originate to finish.
    #[serde(default)]
    wait: bool,
}

async fn originate(
    State(api): State<Api>,
    Path(id): Path<String>,
    b: JsonBody<OriginateReq>,
) -> Result<Json<Value>, ApiError> {
    let r = body(
        b,
        r#"{"dest_url": "1000@10.0.0.2:5080", "profile": "external", "app": "park"}"#,
    )?;
    if api.cluster.node_info(&id).is_none() {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no node {id:?}: GET /api/v1/nodes lists them"),
        ));
    }
    let endpoint = match (r.endpoint, r.dest_url) {
        (Some(e), _) => e,
        (None, Some(d)) => {
            let mut e = match r.gateway {
                Some(g) => format!("sofia/gateway/{g}/{d}"),
                None => format!(
                    "sofia/{}/{d}",
                    r.profile.unwrap_or_else(|| "external".into())
                ),
            };
            if let Some(p) = r.proxy {
                e.push_str(&format!(";fs_path=sip:{p}"));
            }
            e
        }
        (None, None) => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                "give \"endpoint\" or \"dest_url\" (with \"profile\" or \"gateway\")".into(),
            ));
        }
    };
    let app = r.app.unwrap_or_else(|| "park".into());
    let dest = format!("&{app}({})", r.app_args.unwrap_or_default());
    let vars: Vec<(String, String)> = r.vars.into_iter().collect();
    let (uuid, job) = api
        .cluster
        .node(&id)
        .originate(&endpoint, &dest, &vars)
        .await?;
    let job_uuid = job.uuid.clone();
    if r.wait {
        let result = job.wait().await;
        return match result {
            Ok(_) => Ok(Json(
                json!({"uuid": uuid, "call": uuid, "job": job_uuid, "result": "answered"}),
            )),
            Err(e) => Err(ApiError(
                StatusCode::BAD_GATEWAY,
                format!("originate failed: {e}"),
            )),
        };
    }
    let ju = job_uuid.clone();
    tokio::spawn(async move {
        if let Err(e) = job.wait().await {
            tracing::info!(job = %ju, error = %e, "originate failed");
        }
    });
    Ok(Json(json!({"uuid": uuid, "call": uuid, "job": job_uuid})))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct ActionReq {
    cause: Option<String>,
    path: Option<String>,
    leg: Option<String>,
    dest_url: Option<String>,
    profile: Option<String>,
    gateway: Option<String>,
    proxy: Option<String>,
    name: Option<String>,
    value: Option<String>,
    vars: std::collections::BTreeMap<String, String>,
    digits: Option<String>,
    secs: Option<u64>,
    code: Option<u16>,
    uri: Option<String>,
    action: Option<String>,
}

#[tracing::instrument(name = "session", skip(api, b), fields(session = %uuid, action = %action))]
async fn session_action(
    State(api): State<Api>,
    Path((uuid, action)): Path<(String, String)>,
    b: Result<Json<ActionReq>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let r = match b {
        Ok(Json(r)) => r,
        Err(axum::extract::rejection::JsonRejection::MissingJsonContentType(_)) => {
            ActionReq::default()
        }
        Err(e) => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                format!("{e}; send a JSON object, e.g. {{\"cause\": \"NORMAL_CLEARING\"}}"),
            ));
        }
    };
    let Some(act) = SessionAction::parse(&action) else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("unknown action {action:?}: use {}", SessionAction::names()),
        ));
    };
    let s = api.cluster.session(&uuid).ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            format!("no live session {uuid}: GET /api/v1/sessions lists them"),
        )
    })?;
    let need = |v: Option<String>, f: &str| {
        v.ok_or_else(|| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!("action {action} needs \"{f}\""),
            )
        })
    };
    let out = match act {
        SessionAction::Hangup => {
            s.hangup(r.cause.as_deref().unwrap_or("NORMAL_CLEARING"))
                .await?
        }
        SessionAction::Answer => s.answer().await?,
        SessionAction::Park => s.park().await?,
        SessionAction::Playback => {
            s.playback(
                &need(r.path, "path")?,
                r.leg.as_deref().unwrap_or("aleg"),
                &[],
            )
            .await?
        }
        SessionAction::Broadcast => {
            s.broadcast(
                &need(r.path, "path")?,
                r.leg.as_deref().unwrap_or("aleg"),
                r.cause.as_deref(),
            )
            .await?
        }
        SessionAction::Bridge => {
            let vars: Vec<(String, String)> = r.vars.into_iter().collect();
            s.bridge(
                &need(r.dest_url, "dest_url")?,
                r.profile.as_deref().unwrap_or("external"),
                r.gateway.as_deref(),
                r.proxy.as_deref(),
                &vars,
            )
            .await?
        }
        SessionAction::Setvar => {
            s.setvar(&need(r.name, "name")?, r.value.as_deref().unwrap_or(""))
                .await?
        }
        SessionAction::Setvars => s.setvars(&r.vars.into_iter().collect::<Vec<_>>()).await?,
        SessionAction::Unsetvar => s.unsetvar(&need(r.name, "name")?).await?,
        SessionAction::Record => {
            s.record(
                r.action.as_deref().unwrap_or("start"),
                &need(r.path, "path")?,
            )
            .await?
        }
        SessionAction::SendDtmf => s.send_dtmf(&need(r.digits, "digits")?).await?,
        SessionAction::SchedHangup => {
            s.sched_hangup(
                r.secs.unwrap_or(0),
                r.cause.as_deref().unwrap_or("ALLOTTED_TIMEOUT"),
            )
            .await?
        }
        SessionAction::Deflect => s.deflect(&need(r.uri, "uri")?).await?,
        SessionAction::Respond => s.respond(r.code.unwrap_or(486)).await?,
        SessionAction::Echo => s.echo().await?,
        SessionAction::Breakmedia => s.breakmedia().await?,
    };
    Ok(Json(
        json!({"uuid": uuid, "action": action, "reply": out.trim_end()}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiReq {
    command: String,
    #[serde(default)]
    args: String,
    /// Nodes to run it on (default: all).
    nodes: Option<Vec<String>>,
}

async fn api_fanout(State(api): State<Api>, b: JsonBody<ApiReq>) -> Result<Json<Value>, ApiError> {
    let r = body(b, r#"{"command": "status", "args": "", "nodes": ["fs1"]}"#)?;
    let targets: Vec<String> = match r.nodes {
        Some(n) if !n.is_empty() => n,
        _ => api.cluster.nodes().into_iter().map(|n| n.id).collect(),
    };
    let mut futs = Vec::new();
    for n in targets {
        let node = api.cluster.node(&n);
        let (c, a) = (r.command.clone(), r.args.clone());
        futs.push(tokio::spawn(async move { (n, node.api(&c, &a).await) }));
    }
    let mut results = serde_json::Map::new();
    for f in futs {
        if let Ok((n, res)) = f.await {
            results.insert(
                n,
                match res {
                    Ok(out) => json!({"ok": !out.starts_with('-'), "output": out}),
                    Err(CommandError::Invalid(m)) => {
                        return Err(ApiError(StatusCode::BAD_REQUEST, m));
                    }
                    Err(e) => json!({"ok": false, "error": e.to_string()}),
                },
            );
        }
    }
    Ok(Json(json!({"results": results})))
}

async fn openapi() -> Json<Value> {
    Json(crate::openapi::document())
}
