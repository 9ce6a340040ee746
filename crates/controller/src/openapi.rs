//! The OpenAPI 3.1 document served at `/api/v1/openapi.json`.

use serde_json::{Value, json};

fn op(summary: &str, params: &[(&str, &str)], body: Option<Value>) -> Value {
    let mut o = json!({
        "summary": summary,
        "security": [{"bearer": []}],
        "responses": {
            "200": {"description": "OK", "content": {"application/json": {}}},
            "400": {"$ref": "#/components/responses/Error"},
            "401": {"$ref": "#/components/responses/Error"},
            "404": {"$ref": "#/components/responses/Error"},
            "502": {"$ref": "#/components/responses/Error"},
            "503": {"$ref": "#/components/responses/Error"}
        }
    });
    if !params.is_empty() {
        o["parameters"] = Value::Array(
            params
                .iter()
                .map(|(n, loc)| json!({"name": n, "in": loc, "required": *loc == "path", "schema": {"type": "string"}}))
                .collect(),
        );
    }
    if let Some(b) = body {
        o["requestBody"] =
            json!({"required": true, "content": {"application/json": {"schema": b}}});
    }
    o
}

/// The document.
pub fn document() -> Value {
    let s = |t: &str| json!({"type": t});
    json!({
        "openapi": "3.1.0",
        "info": {"title": "switchy controller", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Control a FreeSWITCH cluster: nodes, sessions, calls, jobs and commands."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": {"Error": {"description": "An error saying what to fix",
                "content": {"application/json": {"schema": {"type": "object", "properties": {"error": s("string")}, "required": ["error"]}}}}}
        },
        "paths": {
            "/health": {"get": {"summary": "Liveness (no auth)", "responses": {"200": {"description": "OK"}}}},
            "/metrics": {"get": op("Prometheus metrics", &[], None)},
            "/api/v1/nodes": {"get": op("List nodes", &[], None)},
            "/api/v1/nodes/{id}": {"get": op("One node", &[("id", "path")], None)},
            "/api/v1/nodes/{id}/originate": {"post": op("Originate a call from a node", &[("id", "path")], Some(json!({
                "type": "object",
                "properties": {"endpoint": s("string"), "dest_url": s("string"), "profile": s("string"), "gateway": s("string"),
                    "proxy": s("string"), "app": s("string"), "app_args": s("string"),
                    "vars": {"type": "object", "additionalProperties": s("string")}, "wait": s("boolean")}
            })))},
            "/api/v1/sessions": {"get": op("List live sessions", &[("node", "query"), ("direction", "query"), ("call", "query"), ("answered", "query")], None)},
            "/api/v1/sessions/{uuid}": {"get": op("One session", &[("uuid", "path")], None)},
            "/api/v1/sessions/{uuid}/{action}": {"post": op(
                &format!("Act on a session: {}", crate::action::SessionAction::names()),
                &[("uuid", "path"), ("action", "path")],
                Some(json!({"type": "object", "properties": {"cause": s("string"), "path": s("string"), "leg": s("string"),
                    "dest_url": s("string"), "profile": s("string"), "gateway": s("string"), "proxy": s("string"),
                    "name": s("string"), "value": s("string"), "vars": {"type": "object"}, "digits": s("string"),
                    "secs": s("integer"), "code": s("integer"), "uri": s("string"), "action": s("string")}})))},
            "/api/v1/calls": {"get": op("List live calls", &[], None)},
            "/api/v1/calls/{id}": {"get": op("One call", &[("id", "path")], None)},
            "/api/v1/jobs": {"get": op("Jobs in flight", &[], None)},
            "/api/v1/api": {"post": op("Run an API command on all or some nodes", &[], Some(json!({
                "type": "object", "required": ["command"],
                "properties": {"command": s("string"), "args": s("string"), "nodes": {"type": "array", "items": s("string")}}
            })))},
            "/api/v1/openapi.json": {"get": op("This document", &[], None)}
        }
    })
}
