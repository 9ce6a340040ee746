//! Read-only views of the cluster: nodes, sessions, calls, jobs.

use super::*;

pub(super) async fn nodes(State(api): State<Api>) -> Json<Value> {
    Json(json!({"nodes": api.cluster.nodes()}))
}

pub(super) async fn node(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
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
pub(super) struct SessionFilter {
    node: Option<String>,
    direction: Option<String>,
    call: Option<String>,
    answered: Option<bool>,
}

pub(super) async fn sessions(
    State(api): State<Api>,
    Query(f): Query<SessionFilter>,
) -> Json<Value> {
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

pub(super) async fn session(
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

pub(super) async fn calls(State(api): State<Api>) -> Json<Value> {
    let list: Vec<Value> = api
        .cluster
        .with_tracker(|t| t.calls().map(|c| json!(c)).collect());
    Json(json!({"count": list.len(), "calls": list}))
}

pub(super) async fn call(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    api.cluster
        .with_tracker(|t| t.call(&id).map(|c| json!(c)))
        .map(Json)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no live call {id}")))
}

pub(super) async fn jobs(State(api): State<Api>) -> Json<Value> {
    Json(json!({"jobs": api.cluster.jobs()}))
}
