//! The OpenAPI document against the router that serves it: it parses as
//! OpenAPI 3.1 (oas3), every `$ref` resolves, it lists exactly the paths
//! the router registers, and for each path exactly the methods the router
//! answers (probed over HTTP on a running controller: an undocumented
//! method gets 405, a documented one never does).

use serde_json::Value;
use switchy_e2e::*;

const REST_SOURCE: &str = include_str!("../../crates/controller/src/rest/mod.rs");
const METHODS: [&str; 5] = ["GET", "POST", "PATCH", "PUT", "DELETE"];

/// The paths `rest::router` registers, read from its source.
fn router_paths() -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for chunk in REST_SOURCE.split(".route(").skip(1) {
        let rest = chunk.trim_start();
        if let Some(rest) = rest.strip_prefix('"')
            && let Some(end) = rest.find('"')
        {
            out.insert(rest[..end].to_owned());
        }
    }
    out
}

fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "$ref" {
                    if let Some(r) = x.as_str() {
                        out.push(r);
                    }
                } else {
                    refs(x, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_validates_and_lists_every_route_with_its_methods() {
    let h = Harness::start(1).await.expect("harness");
    let (st, doc) = http(h.http(), "GET", "/api/v1/openapi.json", Some(TOKEN), None).await;
    assert_eq!(st, 200);
    let text = doc.to_string();
    oas3::from_json(&text).expect("the document is not OpenAPI 3.1");
    assert_eq!(doc["openapi"], "3.1.0");
    let mut rs = Vec::new();
    refs(&doc, &mut rs);
    assert!(rs.len() > 20, "{} refs", rs.len());
    for r in rs {
        let ptr = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("external ref {r}"));
        assert!(doc.pointer(ptr).is_some(), "unresolved $ref {r}");
    }
    // The response schemas come from the types: a field of the Originator's
    // status and of a session are there.
    assert!(
        doc.pointer("/components/schemas/Status/properties/setup_recent")
            .is_some()
    );
    assert!(
        doc.pointer("/components/schemas/Session/properties/answer_state")
            .is_some()
    );
    let paths = doc["paths"].as_object().expect("paths");
    let documented: std::collections::BTreeSet<String> = paths.keys().cloned().collect();
    assert_eq!(documented, router_paths(), "document paths vs the router's");
    for (path, item) in paths {
        // Path parameters: a value that exists nowhere (404 from the
        // handler, with a JSON error, not the router's empty 404).
        let concrete = path
            .split('/')
            .map(|seg| {
                if seg.starts_with('{') {
                    match seg {
                        "{action}" if path.contains("sessions") => "hangup",
                        "{action}" => "no-such-action",
                        _ => "no-such-id",
                    }
                } else {
                    seg
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        for m in METHODS {
            let lower = m.to_ascii_lowercase();
            let listed = item.get(&lower).is_some();
            // Nothing that would change state for real: bodies are empty
            // objects, ids do not exist, and no Originator is loaded.
            let (st, body) = http(h.http(), m, &concrete, Some(TOKEN), Some("{}")).await;
            if listed {
                assert_ne!(
                    st, 405,
                    "{m} {path} is documented but the router refuses the method"
                );
                assert!(
                    st != 404 || body.is_object(),
                    "{m} {path}: the router has no such route ({st} {body})"
                );
            } else {
                assert_eq!(st, 405, "{m} {path} is served ({st}) but not documented");
            }
        }
    }
}
