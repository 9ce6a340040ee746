//! Changing what the cluster runs: routes (list, reload), the Originator
//! (status, settings, start/stop/hupall), loaded apps.

use super::*;

pub(super) fn current_router(api: &Api) -> Result<crate::router::Router, ApiError> {
    current(
        &api.router,
        "no routes in use: start serve with --routes FILE",
    )
}

pub(super) async fn routes(State(api): State<Api>) -> Result<Json<Value>, ApiError> {
    Ok(Json(current_router(&api)?.table().to_json()))
}

pub(super) async fn routes_reload(State(api): State<Api>) -> Result<Json<Value>, ApiError> {
    let r = current_router(&api)?;
    match r.reload() {
        Ok(n) => Ok(Json(json!({"reloaded": true, "routes": n}))),
        Err(e) => Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("routes file refused, the previous routes keep serving: {e}"),
        )),
    }
}

pub(super) fn current_originator(api: &Api) -> Result<crate::originator::Originator, ApiError> {
    current(
        &api.originator,
        "no originator: it runs under `switchy-controller run`",
    )
}

pub(super) async fn originator_get(State(api): State<Api>) -> Result<Json<Value>, ApiError> {
    let o = current_originator(&api)?;
    Ok(Json(serde_json::to_value(o.status()).unwrap_or_default()))
}

pub(super) async fn originator_patch(
    State(api): State<Api>,
    b: JsonBody<Value>,
) -> Result<Json<Value>, ApiError> {
    let o = current_originator(&api)?;
    let patch = body(b, r#"{"rate": 50, "limit": 200}"#)?;
    o.update_json(&patch)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("{e:#}")))?;
    Ok(Json(serde_json::to_value(o.status()).unwrap_or_default()))
}

pub(super) async fn originator_action(
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

pub(super) async fn apps(State(api): State<Api>) -> Json<Value> {
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
