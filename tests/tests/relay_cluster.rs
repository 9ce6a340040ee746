//! Issue 17's scenario: SignalWire's Python SDK (unmodified, wss with the
//! cluster CA) controls a call on a mock-relay cluster through `serve`'s
//! RELAY server and real agents. The route hands the call to a RELAY
//! context; the SDK answers, plays, records, collects digits, sends digits,
//! dials out with a tag, connects two legs and hangs up; the mock's journal
//! shows the FreeSWITCH commands and no channel is left.
//! CI installs the SDK (`.ci/run`); elsewhere a missing SDK prints one
//! "skipped" line, unless SWITCHY_REQUIRE_RELAY_SDKS=1.

use std::process::Command;
use std::time::Duration;
use switchy_e2e::{Harness, http, wait_for};

const ROUTES: &str = r#"
start = "default"

[[routes]]
name = "office"
pattern = '^4\d{3}$'
guards = { "Call-Direction" = "inbound" }
actions = [{ relay = "office" }, { hangup = "NO_ANSWER" }]
"#;

fn python() -> Option<String> {
    let py = std::env::var("SWITCHY_RELAY_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&py)
        .args([
            "-c",
            "import signalwire.relay.client, pytest, pytest_asyncio",
        ])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(py);
    }
    let why = format!(
        "the Python SDK is not installed for {py} (pip install -r tests/relay_sdk/python/requirements.txt, or set SWITCHY_RELAY_PYTHON)"
    );
    let required = std::env::var("SWITCHY_REQUIRE_RELAY_SDKS").is_ok_and(|v| v == "1");
    assert!(!required, "SWITCHY_REQUIRE_RELAY_SDKS=1 but {why}");
    // Straight to stderr, past the test harness' capture, so CI shows it.
    let _ = std::io::Write::write_fmt(&mut std::io::stderr(), format_args!("skipped: {why}\n"));
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_controls_a_routed_call_on_the_cluster() {
    let Some(py) = python() else { return };
    let h = Harness::start(2).await.expect("harness");
    h.wait_nodes_up().await.expect("nodes up");
    let dir = switchy_e2e::own_dir("relay-cluster");
    std::fs::write(dir.join("ca.pem"), &h.ca.cert).expect("write");
    // Phone devices go outside the mock: its far ends answer.
    let cfg = switchy_e2e::relay_config(
        Some(&h.ca),
        ("test_proj", "test_tok"),
        "sofia/external/{to}@198.51.100.7:5060",
        Duration::from_secs(10),
    );
    let relay = h.ctl().use_relay(cfg).await.expect("relay");
    h.ctl()
        .use_router(switchy_e2e::routes(&dir, ROUTES))
        .await
        .expect("router");
    switchy_e2e::wait_subscribed(&h, &["CHANNEL_PARK", "DTMF", "RECORD_STOP"])
        .await
        .expect("subscribed");

    let (ok, text) = switchy_e2e::run_cluster_suite(
        &py,
        vec![
            ("RELAY_HOST", relay.addr.to_string()),
            (
                "SIGNALWIRE_RELAY_CA_FILE",
                dir.join("ca.pem").display().to_string(),
            ),
            ("MOCK_HTTP", format!("http://{}", h.mock.http_addr())),
            ("RELAY_CONTEXT", "office".into()),
        ],
    )
    .await;
    assert!(ok, "the SDK scenario failed:\n{text}");

    // The FreeSWITCH commands the SDK's requests became.
    let commands: Vec<String> = h
        .mock
        .cluster()
        .journal
        .select(|e| e.kind == "command")
        .into_iter()
        .map(|e| format!("{} {}", e.text, e.detail.replace('\n', " ")))
        .collect();
    for want in [
        "uuid_answer",
        "execute-app-name: playback",
        "silence_stream://200",
        "tone_stream://",
        "uuid_record",
        "uuid_send_dtmf",
        "originate",
        "execute-app-name: bridge",
        "uuid_kill",
    ] {
        assert!(
            commands.iter().any(|c| c.contains(want)),
            "no {want:?} among the mock's commands:\n{}",
            commands.join("\n")
        );
    }
    // No channel is left on any node.
    let mock = h.mock.http_addr();
    let mut last = serde_json::Value::Null;
    let left = wait_for(Duration::from_secs(10), || {
        let v = futures_lite_block(http(mock, "GET", "/__mock__/channels", None, None));
        let n: usize = v.1["nodes"]
            .as_array()
            .map(|ns| {
                ns.iter()
                    .map(|n| n["channels"].as_array().map_or(0, Vec::len))
                    .sum()
            })
            .unwrap_or(usize::MAX);
        last = v.1;
        n == 0
    })
    .await;
    assert!(left.is_ok(), "channels left on the mock: {last}");
    assert_eq!(
        switchy_e2e::metric(
            &h,
            "switchy_relay_calls_total{context=\"office\",what=\"taken\"}"
        )
        .await,
        1
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs a future to completion from inside a sync closure on a runtime thread.
fn futures_lite_block<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}
