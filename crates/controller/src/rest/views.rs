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
    /// Page size (default 1,000, at most 10,000).
    limit: Option<usize>,
    /// The `next` of the previous page: sessions after this UUID.
    after: Option<String>,
}

/// The fields a session list shows (copied from a tracker view).
struct Row {
    uuid: String,
    node: String,
    direction: String,
    state: String,
    call_state: String,
    answer_state: String,
    call: String,
    dest: String,
    cid_num: String,
    created_us: u64,
    answered_us: u64,
}

pub(super) async fn sessions(
    State(api): State<Api>,
    Query(f): Query<SessionFilter>,
) -> Json<Value> {
    // One page in UUID order, read from the tracker's latest view (the
    // event path goes on meanwhile); JSON is made after the page is copied.
    let limit = f.limit.unwrap_or(1000).clamp(1, 10_000);
    let after = f.after.clone().unwrap_or_default();
    let keep = |s: &&crate::tracker::Session| {
        f.node.as_deref().is_none_or(|n| n == s.node)
            && f.direction.as_deref().is_none_or(|d| d == s.direction)
            && f.call.as_deref().is_none_or(|c| c == s.call)
            && f.answered.is_none_or(|a| a == (s.answered_us > 0))
    };
    let view = api.cluster.view();
    let unfiltered =
        f.node.is_none() && f.direction.is_none() && f.call.is_none() && f.answered.is_none();
    let total = if unfiltered {
        view.len()
    } else {
        view.sessions().filter(keep).count()
    };
    let mut m: Vec<&crate::tracker::Session> = view
        .sessions_after(&after)
        .filter(keep)
        .take(limit + 1)
        .collect();
    let more = m.len() > limit;
    m.truncate(limit);
    let rows: Vec<Row> = m
        .iter()
        .map(|s| Row {
            uuid: s.uuid.clone(),
            node: s.node.clone(),
            direction: s.direction.clone(),
            state: s.state.clone(),
            call_state: s.call_state.clone(),
            answer_state: s.answer_state.clone(),
            call: s.call.clone(),
            dest: s.dest.clone(),
            cid_num: s.cid_num.clone(),
            created_us: s.created_us,
            answered_us: s.answered_us,
        })
        .collect();
    let next = more.then(|| rows.last().map(|r| r.uuid.clone())).flatten();
    let list: Vec<Value> = rows
        .into_iter()
        .map(|s| json!({"uuid": s.uuid, "node": s.node, "direction": s.direction, "state": s.state, "call_state": s.call_state, "answer_state": s.answer_state, "call": s.call, "dest": s.dest, "cid_num": s.cid_num, "created_us": s.created_us, "answered_us": s.answered_us}))
        .collect();
    Json(json!({"count": list.len(), "total": total, "next": next, "sessions": list}))
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

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct Page {
    /// Page size (default 1,000, at most 10,000).
    limit: Option<usize>,
    /// The `next` of the previous page.
    after: Option<String>,
}

pub(super) async fn calls(State(api): State<Api>, Query(p): Query<Page>) -> Json<Value> {
    // One page in call-id order, from the tracker's latest view.
    let limit = p.limit.unwrap_or(1000).clamp(1, 10_000);
    let after = p.after.unwrap_or_default();
    let view = api.cluster.view();
    let total = view.len_calls();
    let mut page: Vec<&crate::tracker::Call> = view.calls_after(&after).take(limit + 1).collect();
    let more = page.len() > limit;
    page.truncate(limit);
    let next = more.then(|| page.last().map(|c| c.id.clone())).flatten();
    let list: Vec<Value> = page.iter().map(|c| json!(c)).collect();
    Json(json!({"count": list.len(), "total": total, "next": next, "calls": list}))
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
