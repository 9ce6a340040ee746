//! Issue 17's scenario against a real FreeSWITCH (opt-in): set
//! `SWITCHY_TEST_FREESWITCH=127.0.0.1:8021` to the ESL address of one built
//! and started with `../shared/tools/freeswitch/build.sh` (its `external`
//! profile on 127.0.0.1:5080 parks every inbound call). Without it the test
//! prints one "skipped" line. The Python SDK (unmodified, wss with the
//! cluster CA) drives `tests/relay_sdk/cluster` through the controller's
//! RELAY server and a real agent: a self-call to 4000 is routed to RELAY
//! context "office"; the far ends of the SDK's dial and connect are
//! self-calls to 1555… that a route answers and parks.

use std::time::Duration;
use switchy_agent::{Agent, AgentConfig};
use switchy_controller::ca;
use switchy_controller::cluster::Tracking;
use switchy_controller::{ClusterConfig, Controller};
use switchy_e2e::{TOKEN, wait_for};

const ROUTES: &str = r#"
start = "default"

[[routes]]
name = "office"
pattern = '^4\d{3}$'
guards = { "Call-Direction" = "inbound" }
actions = [{ relay = "office" }, { hangup = "NO_ANSWER" }]

[[routes]]
name = "far-end"
pattern = '^1555\d+$'
guards = { "Call-Direction" = "inbound" }
actions = ["answer", "park"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_sdk_against_a_real_freeswitch() {
    let Ok(esl) = std::env::var("SWITCHY_TEST_FREESWITCH") else {
        // Straight to stderr, past the test harness' capture, so CI shows it.
        let _ = std::io::Write::write_fmt(
            &mut std::io::stderr(),
            format_args!(
                "real-FreeSWITCH RELAY test skipped: set SWITCHY_TEST_FREESWITCH=127.0.0.1:8021 (build one with ../shared/tools/freeswitch/build.sh)\n"
            ),
        );
        return;
    };
    let py = std::env::var("SWITCHY_RELAY_PYTHON").unwrap_or_else(|_| "python3".into());
    let esl: std::net::SocketAddr = esl.parse().expect("SWITCHY_TEST_FREESWITCH is host:port");
    let ca = ca::new_ca().expect("CA");
    let cpem = ca::issue(&ca, "controller", &[]).expect("cert");
    let ctl = Controller::start(
        ClusterConfig {
            tracking: Tracking::Live,
            ..ClusterConfig::default()
        },
        "127.0.0.1:0".parse().expect("addr"),
        "127.0.0.1:0".parse().expect("addr"),
        TOKEN.into(),
        ca.cert.as_bytes(),
        cpem.cert.as_bytes(),
        cpem.key.as_bytes(),
    )
    .await
    .expect("controller");
    let pem = ca::issue(&ca, "fs1", &[]).expect("cert");
    let mut c = AgentConfig::new(
        "fs1",
        &ctl.quic_addr.to_string(),
        ca.cert.clone().into_bytes(),
        pem.cert.clone().into_bytes(),
        pem.key.clone().into_bytes(),
    );
    c.esl_host = esl.ip().to_string();
    c.esl_port = esl.port();
    let _agent = Agent::start(c).expect("agent");
    let cluster = ctl.cluster.clone();
    wait_for(Duration::from_secs(30), || {
        cluster.nodes().iter().any(|n| n.ready())
    })
    .await
    .expect("fs1 up");

    // This FreeSWITCH is the test's: start from no channels.
    let _ = cluster.node("fs1").api("hupall", "MANAGER_REQUEST").await;
    let dir = switchy_e2e::own_dir("relay-fs");
    std::fs::write(dir.join("ca.pem"), &ca.cert).expect("write");
    let cfg = switchy_e2e::relay_config(
        Some(&ca),
        ("test_proj", "test_tok"),
        "sofia/external/{to}@127.0.0.1:5080",
        Duration::from_secs(10),
    );
    let relay = ctl.use_relay(cfg).await.expect("relay");
    ctl.use_router(switchy_e2e::routes(&dir, ROUTES))
        .await
        .expect("router");

    let (ok, text) = switchy_e2e::run_cluster_suite(
        &py,
        vec![
            ("RELAY_HOST", relay.addr.to_string()),
            (
                "SIGNALWIRE_RELAY_CA_FILE",
                dir.join("ca.pem").display().to_string(),
            ),
            ("REST_HTTP", format!("http://{}", ctl.http_addr)),
            ("REST_TOKEN", TOKEN.into()),
            ("RELAY_CONTEXT", "office".into()),
        ],
    )
    .await;
    assert!(ok, "the SDK scenario failed on FreeSWITCH:\n{text}");
    // Every leg ended on FreeSWITCH too.
    let node = ctl.cluster.node("fs1");
    let mut last = String::new();
    for _ in 0..100 {
        last = match node.api("show", "channels count").await {
            Ok(s) => s,
            Err(e) => e.to_string(),
        };
        if last.contains("0 total") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        last.contains("0 total"),
        "channels left on FreeSWITCH: {last}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
