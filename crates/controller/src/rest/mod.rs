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

mod commands;
mod control;
pub(crate) mod metrics;
pub mod serve;
mod views;

use commands::*;
use control::*;
use metrics::*;
use views::*;

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
    /// Connection and authentication counters.
    pub stats: Arc<serve::RestStats>,
    /// Failed authentications by client.
    pub throttle: Arc<serve::AuthThrottle>,
    /// Tokens besides the admin `token`, with their scopes.
    pub tokens: Arc<Vec<(serve::Scope, String)>>,
    /// Commands `POST /api/v1/api` may run (None: any).
    pub api_allow: Option<Arc<std::collections::BTreeSet<String>>>,
    /// The RELAY server, if one runs (its counters go into `/metrics`).
    pub relay: Arc<std::sync::RwLock<Option<crate::relay::Relay>>>,
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
            CommandError::Agent { .. }
            | CommandError::Transport { .. }
            | CommandError::Nodes(_) => StatusCode::BAD_GATEWAY,
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
    let ip = serve::peer(&req).map(|a| a.ip());
    if let Some(wait) = ip.and_then(|ip| api.throttle.blocked(ip)) {
        api.stats.auth_throttled.fetch_add(1, Ordering::Relaxed);
        return ApiError(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "too many failed authentications from this address: retry in {} s with the right token",
                wait.as_secs() + 1
            ),
        )
        .into_response();
    }
    let presented = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    // Every token is compared (in constant time), whichever matches.
    let scope = presented.and_then(|t| {
        let mut found = None;
        if constant_eq(t.as_bytes(), api.token.as_bytes()) {
            found = Some(serve::Scope::Admin);
        }
        for (s, tok) in api.tokens.iter() {
            if constant_eq(t.as_bytes(), tok.as_bytes()) {
                found = found.max(Some(*s));
            }
        }
        found
    });
    let ok = scope.is_some();
    if let Some(have) = scope {
        let need = serve::Scope::needed(req.method(), req.uri().path());
        if have < need {
            return ApiError(
                StatusCode::FORBIDDEN,
                format!("this token's scope is {have:?}; {} {} needs {need:?}: use a token with that scope", req.method(), req.uri().path()),
            )
            .into_response();
        }
    }
    if !ok {
        api.stats.auth_failures.fetch_add(1, Ordering::Relaxed);
        if let Some(ip) = ip {
            api.throttle.failed(ip);
        }
        return ApiError(StatusCode::UNAUTHORIZED, "missing or wrong bearer token: send 'Authorization: Bearer <token>' (the controller's SWITCHY_API_TOKEN, --token-file or token_file; SWITCHY_CONTROL_TOKEN / SWITCHY_READ_TOKEN for scoped ones)".into()).into_response();
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
        .layer(middleware::map_request(json_whatever_the_type))
        .with_state(api)
}

/// Request bodies are JSON whatever their Content-Type says (`curl -d`
/// sends a form type); a non-JSON body still gets a 400 that shows the
/// expected JSON.
async fn json_whatever_the_type(mut req: Request) -> Request {
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

/// The value in a shared slot, or 404 saying how to get one.
fn current<T: Clone>(slot: &std::sync::RwLock<Option<T>>, missing: &str) -> Result<T, ApiError> {
    slot.read()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, missing.into()))
}

async fn health(State(api): State<Api>) -> Json<Value> {
    let nodes = api.cluster.nodes();
    let up = nodes.iter().filter(|n| n.ready()).count();
    Json(json!({"status": "ok", "nodes": nodes.len(), "nodes_up": up}))
}

async fn openapi() -> Json<Value> {
    Json(crate::openapi::document())
}
