//! The OpenAPI 3.1 document served at `/api/v1/openapi.json`. The
//! response and request schemas come from the Rust types the handlers
//! serialize (schemars, honouring their serde attributes), so they follow
//! the code; `rest::tests` checks that every route the router serves is
//! here with its methods, and nothing else.

use serde_json::{Value, json};

/// A schema reference (or inline schema) for a response body.
enum Body {
    /// `application/json` with this schema.
    Json(Value),
    /// `text/plain` (Prometheus' exposition format).
    Text,
}

fn op(summary: &str, params: &[Value], body: Option<Value>, response: Body) -> Value {
    let ok = match response {
        Body::Json(schema) => {
            json!({"description": "OK", "content": {"application/json": {"schema": schema}}})
        }
        Body::Text => {
            json!({"description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}})
        }
    };
    let mut o = json!({
        "summary": summary,
        "security": [{"bearer": []}],
        "responses": {
            "200": ok,
            "400": {"$ref": "#/components/responses/Error"},
            "401": {"$ref": "#/components/responses/Error"},
            "403": {"$ref": "#/components/responses/Error"},
            "404": {"$ref": "#/components/responses/Error"},
            "429": {"$ref": "#/components/responses/Error"},
            "502": {"$ref": "#/components/responses/Error"},
            "503": {"$ref": "#/components/responses/Error"}
        }
    });
    if !params.is_empty() {
        o["parameters"] = Value::Array(params.to_vec());
    }
    if let Some(b) = body {
        o["requestBody"] =
            json!({"required": true, "content": {"application/json": {"schema": b}}});
    }
    o
}

fn path_param(name: &str, schema: Value) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": schema})
}

fn query(name: &str, t: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "required": false, "description": description, "schema": {"type": t}})
}

/// The document.
pub fn document() -> Value {
    let mut generator = schemars::generate::SchemaSettings::draft2020_12()
        .with(|s| s.definitions_path = "/components/schemas".into())
        .into_generator();
    let r = |schema: schemars::Schema| schema.to_value();
    let node = r(generator.subschema_for::<crate::cluster::NodeInfo>());
    let session = r(generator.subschema_for::<crate::tracker::Session>());
    let call = r(generator.subschema_for::<crate::tracker::Call>());
    let status = r(generator.subschema_for::<crate::originator::Status>());
    let config = r(generator.subschema_for::<crate::originator::OriginatorConfig>());
    let schemas: serde_json::Map<String, Value> =
        generator.take_definitions(true).into_iter().collect();
    let s = |t: &str| json!({"type": t});
    let obj = |props: Value| json!({"type": "object", "properties": props});
    let page = |key: &str, item: &Value| {
        json!({"type": "object", "required": ["count", "total", "next", key],
            "properties": {"count": s("integer"), "total": s("integer"),
                "next": {"type": ["string", "null"], "description": "Pass as `after` for the next page; null on the last."},
                key: {"type": "array", "items": item}}})
    };
    let paging = [
        query(
            "limit",
            "integer",
            "Page size (default 1000, at most 10000).",
        ),
        query("after", "string", "The previous page's `next`."),
    ];
    let actions: Vec<&str> = crate::action::SessionAction::ALL
        .iter()
        .map(|a| a.name())
        .collect();
    let originator_actions = ["start", "stop", "hupall", "hard_hupall", "shutdown"];
    let with_vars = json!({"allOf": [session, {"type": "object", "properties": {
        "variables": {"type": "object", "additionalProperties": s("string")}}}]});
    json!({
        "openapi": "3.1.0",
        "info": {"title": "switchy controller", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Control a FreeSWITCH cluster: nodes, sessions, calls, jobs, commands, routes, apps and the Originator (load generator). Every route but /health needs `Authorization: Bearer <token>`; request bodies are JSON whatever their Content-Type says."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": {"Error": {"description": "An error saying what to fix",
                "content": {"application/json": {"schema": {"type": "object", "properties": {"error": s("string")}, "required": ["error"]}}}}},
            "schemas": schemas
        },
        "paths": {
            "/health": {"get": {"summary": "Liveness (no auth)", "responses": {"200": {"description": "OK",
                "content": {"application/json": {"schema": obj(json!({"status": s("string"), "nodes": s("integer"), "nodes_up": s("integer")}))}}}}}},
            "/metrics": {"get": op("Prometheus metrics (text exposition format 0.0.4)", &[], None, Body::Text)},
            "/api/v1/nodes": {"get": op("List nodes", &[], None, Body::Json(json!({"type": "object", "properties": {"nodes": {"type": "array", "items": node}}})))},
            "/api/v1/nodes/{id}": {"get": op("One node", &[path_param("id", s("string"))], None, Body::Json(node.clone()))},
            "/api/v1/nodes/{id}/originate": {"post": op("Originate a call from a node", &[path_param("id", s("string"))], Some(obj(json!({
                "endpoint": s("string"), "dest_url": s("string"), "profile": s("string"), "gateway": s("string"),
                "proxy": s("string"), "app": s("string"), "app_args": s("string"),
                "vars": {"type": "object", "additionalProperties": s("string")}, "wait": s("boolean")}))),
                Body::Json(obj(json!({"uuid": s("string"), "call": s("string"), "job": {"type": ["string", "null"]}}))))},
            "/api/v1/sessions": {"get": op("List live sessions (paged)", &[
                query("node", "string", "Only this node's."), query("direction", "string", "inbound or outbound."),
                query("call", "string", "Only this call's legs."), query("answered", "boolean", "Only answered (true) or unanswered (false) legs."),
                paging[0].clone(), paging[1].clone()], None, Body::Json(page("sessions", &session)))},
            "/api/v1/sessions/{uuid}": {"get": op("One session with its channel variables", &[path_param("uuid", s("string"))], None, Body::Json(with_vars))},
            "/api/v1/sessions/{uuid}/{action}": {"post": op(
                "Act on a session",
                &[path_param("uuid", s("string")), path_param("action", json!({"type": "string", "enum": actions}))],
                Some(obj(json!({"cause": s("string"), "path": s("string"), "leg": s("string"),
                    "dest_url": s("string"), "profile": s("string"), "gateway": s("string"), "proxy": s("string"),
                    "name": s("string"), "value": s("string"), "vars": {"type": "object"}, "digits": s("string"),
                    "secs": s("integer"), "code": s("integer"), "uri": s("string"), "action": s("string")}))),
                Body::Json(json!({"type": "object"})))},
            "/api/v1/calls": {"get": op("List live calls (paged)", &paging, None, Body::Json(page("calls", &call)))},
            "/api/v1/calls/{id}": {"get": op("One call", &[path_param("id", s("string"))], None, Body::Json(call.clone()))},
            "/api/v1/jobs": {"get": op("Background jobs in flight", &[], None, Body::Json(obj(json!({"jobs": {"type": "array", "items": s("string")}}))))},
            "/api/v1/api": {"post": op("Run an API command on all or some nodes (admin; --api-allow)", &[], Some(json!({
                "type": "object", "required": ["command"],
                "properties": {"command": s("string"), "args": s("string"), "nodes": {"type": "array", "items": s("string")}}
            })), Body::Json(obj(json!({"results": {"type": "array", "items": {"type": "object"}}}))))},
            "/api/v1/openapi.json": {"get": op("This document", &[], None, Body::Json(json!({"type": "object"})))},
            "/api/v1/routes": {"get": op("The live routing table", &[], None, Body::Json(json!({"type": "object"})))},
            "/api/v1/routes/reload": {"post": op("Re-read the routes file (a bad file is refused; the old routes keep serving)", &[], None,
                Body::Json(obj(json!({"reloaded": s("boolean"), "routes": s("integer")}))))},
            "/api/v1/apps": {"get": op("Loaded and built-in apps with their counters", &[], None, Body::Json(obj(json!({
                "loaded": {"type": "array", "items": obj(json!({"id": s("string"), "apps": {"type": "array", "items": s("string")}}))},
                "default": {"type": ["string", "null"]}, "stats": {"type": "object"},
                "builtin": {"type": "array", "items": obj(json!({"name": s("string"), "doc": s("string")}))}}))))},
            "/api/v1/originator": {
                "get": op("The Originator's status and parameters", &[], None, Body::Json(status.clone())),
                "patch": op("Change the Originator's parameters while it runs (any subset)", &[], Some(config.clone()), Body::Json(status.clone())),
                "post": op("Same as PATCH", &[], Some(config), Body::Json(status.clone()))
            },
            "/api/v1/originator/{action}": {"post": op("Start (or resume), stop (pause), hang up the run's calls, hang up every call, or shut the run down",
                &[path_param("action", json!({"type": "string", "enum": originator_actions}))], None, Body::Json(status))}
        }
    })
}
