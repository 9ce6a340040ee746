//! deploy/grafana's dashboard and deploy/prometheus's alert rules name only
//! metrics the controller exports: every `switchy_*`/`process_*` name in
//! their expressions is one `/metrics` writes (its source, checked against
//! a live scrape).

use std::collections::BTreeSet;
use switchy_e2e::*;

const METRICS_SOURCE: &str = include_str!("../../crates/controller/src/rest/metrics.rs");
const DASHBOARD: &str = include_str!("../../deploy/grafana/switchy-dashboard.json");
const ALERTS: &str = include_str!("../../deploy/prometheus/switchy-alerts.yml");

fn names(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
        .filter(|t| t.starts_with("switchy_") || t.starts_with("process_"))
        .map(str::to_owned)
        .collect()
}

/// What /metrics can write: the names in its source, and a histogram's
/// series.
fn exported() -> BTreeSet<String> {
    let base = names(METRICS_SOURCE);
    let mut all = base.clone();
    for n in &base {
        for suffix in ["_bucket", "_sum", "_count"] {
            all.insert(format!("{n}{suffix}"));
        }
    }
    all
}

fn exprs() -> Vec<String> {
    let dash: serde_json::Value = serde_json::from_str(DASHBOARD).expect("dashboard JSON");
    let mut out: Vec<String> = dash["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_owned))
        .collect();
    assert!(out.len() >= 20, "{} dashboard expressions", out.len());
    let alerts: Vec<String> = ALERTS
        .lines()
        .filter_map(|l| l.trim().strip_prefix("expr:").map(|e| e.trim().to_owned()))
        .collect();
    assert!(alerts.len() >= 7, "{} alert expressions", alerts.len());
    out.extend(alerts);
    out
}

#[test]
fn the_dashboard_and_the_alerts_name_only_exported_metrics() {
    let have = exported();
    for e in exprs() {
        for n in names(&e) {
            assert!(
                have.contains(&n),
                "{n} (in `{e}`) is not a metric the controller exports"
            );
        }
    }
    // The alerts the issue asks for are there.
    for a in [
        "SwitchyNodeDown",
        "SwitchyAgentBuffering",
        "SwitchyFreeswitchSaturated",
        "SwitchyCdrWriterBehind",
        "SwitchyCallFailureRatio",
    ] {
        assert!(ALERTS.contains(&format!("alert: {a}")), "{a}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_scrape_has_only_names_the_source_writes() {
    let h = Harness::start(1).await.expect("harness");
    h.wait_nodes_up().await.expect("node up");
    let (st, body) = http(h.http(), "GET", "/metrics", Some(TOKEN), None).await;
    assert_eq!(st, 200);
    let text = body.as_str().unwrap_or_default().to_owned();
    let have = exported();
    let live: BTreeSet<String> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next().map(str::to_owned))
        .collect();
    assert!(live.contains("switchy_build_info"), "{text}");
    assert!(live.contains("process_resident_memory_bytes"), "{text}");
    assert!(
        live.contains("switchy_node_agent_buffered_events"),
        "{text}"
    );
    for n in &live {
        assert!(
            have.contains(n),
            "{n} is exported but not found in the source"
        );
    }
}
