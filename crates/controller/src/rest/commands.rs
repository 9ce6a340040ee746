//! Commands to FreeSWITCH: originate, session actions, api fan-out.

use super::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct OriginateReq {
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

pub(super) async fn originate(
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
pub(super) struct ActionReq {
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
pub(super) async fn session_action(
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
pub(super) struct ApiReq {
    command: String,
    #[serde(default)]
    args: String,
    /// Nodes to run it on (default: all).
    nodes: Option<Vec<String>>,
}

pub(super) async fn api_fanout(
    State(api): State<Api>,
    b: JsonBody<ApiReq>,
) -> Result<Json<Value>, ApiError> {
    let r = body(b, r#"{"command": "status", "args": "", "nodes": ["fs1"]}"#)?;
    if r.command.is_empty()
        || r.command
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!(
                "invalid command argument: command {:?} must be one word without spaces or control characters",
                r.command
            ),
        ));
    }
    if let Some(allow) = &api.api_allow
        && !allow.contains(&r.command)
    {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            format!(
                "API command {:?} is not allowed here (allowed: {}); add it with serve --api-allow, or use the session actions",
                r.command,
                allow.iter().cloned().collect::<Vec<_>>().join(", ")
            ),
        ));
    }
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
