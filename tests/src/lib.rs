//! Harness for end-to-end tests and benchmarks: a simulated cluster
//! (mock-relay), one real agent per node, a real controller, a cluster CA,
//! all on loopback with ephemeral ports.

pub mod fidelity;

use mock_relay::{MockCluster, MockConfig};
use std::net::SocketAddr;
use std::time::Duration;
use switchy_agent::{Agent, AgentConfig};
use switchy_controller::ca::{self, Pem};
use switchy_controller::{ClusterConfig, Controller};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The REST token used by the harness.
pub const TOKEN: &str = "test-token-0123456789";

/// A whole system on loopback.
pub struct Harness {
    /// The simulated FreeSWITCH nodes.
    pub mock: MockCluster,
    /// The controller (None while "restarting").
    pub controller: Option<Controller>,
    /// One agent per node.
    pub agents: Vec<Agent>,
    /// The cluster CA.
    pub ca: Pem,
    /// The controller's certificate.
    pub controller_pem: Pem,
    /// Where agents connect.
    pub quic_addr: SocketAddr,
}

/// Node id of mock node `i`.
pub fn node_id(i: usize) -> String {
    format!("fs{}", i + 1)
}

/// An agent config for node `i` of the mock with certificate `pem`.
pub fn agent_config(
    mock: &MockCluster,
    i: usize,
    quic: SocketAddr,
    ca: &Pem,
    pem: &Pem,
) -> AgentConfig {
    let mut c = AgentConfig::new(
        &node_id(i),
        &quic.to_string(),
        ca.cert.clone().into_bytes(),
        pem.cert.clone().into_bytes(),
        pem.key.clone().into_bytes(),
    );
    let esl = mock.esl_addr(i);
    c.esl_host = esl.ip().to_string();
    c.esl_port = esl.port();
    c.backoff_min = Duration::from_millis(50);
    c.backoff_max = Duration::from_millis(400);
    c.heartbeat = Duration::from_millis(500);
    c.status_probe = Duration::from_millis(500);
    c
}

/// Starts a controller on `quic` (port 0: any) with the harness' CA.
pub async fn start_controller(
    ca: &Pem,
    controller: &Pem,
    quic: SocketAddr,
) -> anyhow::Result<Controller> {
    start_controller_with(ca, controller, quic, harness_cluster_config()).await
}

/// The harness' cluster settings (`live` tracking, like `serve`).
pub fn harness_cluster_config() -> ClusterConfig {
    ClusterConfig {
        max_channel_age: Duration::from_secs(3600),
        ..ClusterConfig::default()
    }
}

/// A controller on `quic` that takes no agent until
/// [`Controller::accept_agents`] (attach consumers first), retrying while
/// the previous controller's UDP port is released.
pub async fn prepare_controller(
    ca: &Pem,
    controller: &Pem,
    quic: SocketAddr,
) -> anyhow::Result<Controller> {
    prepare_controller_with(ca, controller, quic, harness_cluster_config()).await
}

/// As [`prepare_controller`] with other cluster settings.
pub async fn prepare_controller_with(
    ca: &Pem,
    controller: &Pem,
    quic: SocketAddr,
    config: ClusterConfig,
) -> anyhow::Result<Controller> {
    let mut last = None;
    // The previous controller's UDP port may take a moment to be released.
    for _ in 0..40 {
        match Controller::prepare(
            config.clone(),
            quic,
            "127.0.0.1:0".parse()?,
            TOKEN.into(),
            ca.cert.as_bytes(),
            controller.cert.as_bytes(),
            controller.key.as_bytes(),
        )
        .await
        {
            Ok(c) => return Ok(c),
            Err(e) => last = Some(anyhow::Error::from(e)),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("controller did not start")))
}

/// As [`start_controller`] with other cluster settings.
pub async fn start_controller_with(
    ca: &Pem,
    controller: &Pem,
    quic: SocketAddr,
    config: ClusterConfig,
) -> anyhow::Result<Controller> {
    let mut c = prepare_controller_with(ca, controller, quic, config).await?;
    c.accept_agents().await?;
    Ok(c)
}

/// A `/metrics` value (summed over its label sets).
pub async fn metric(h: &Harness, name: &str) -> u64 {
    let (_, body) = http(h.http(), "GET", "/metrics", Some(TOKEN), None).await;
    let text = body.as_str().map(str::to_owned).unwrap_or_default();
    text.lines()
        .filter(|l| {
            l.starts_with(name) && matches!(l.as_bytes().get(name.len()), Some(b' ' | b'{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

impl Harness {
    /// `nodes` simulated nodes, their agents and a controller.
    pub async fn start(nodes: usize) -> anyhow::Result<Harness> {
        Self::start_with(MockConfig::ephemeral(nodes)).await
    }

    /// As [`Harness::start`] with a mock configuration.
    pub async fn start_with(mock_config: MockConfig) -> anyhow::Result<Harness> {
        Self::start_with_events(mock_config, None).await
    }

    /// As [`Harness::start_with`], the agents subscribing `events` instead
    /// of their default (`wire::CORE_EVENTS`) when given.
    pub async fn start_with_events(
        mock_config: MockConfig,
        events: Option<Vec<String>>,
    ) -> anyhow::Result<Harness> {
        Self::start_configured(mock_config, events, harness_cluster_config()).await
    }

    /// As [`Harness::start_with_events`] with cluster settings (the
    /// tracking level, say).
    pub async fn start_configured(
        mock_config: MockConfig,
        events: Option<Vec<String>>,
        cluster: ClusterConfig,
    ) -> anyhow::Result<Harness> {
        let mock = MockCluster::start(mock_config).await?;
        let ca = ca::new_ca()?;
        let controller_pem = ca::issue(&ca, "controller", &[])?;
        let controller =
            start_controller_with(&ca, &controller_pem, "127.0.0.1:0".parse()?, cluster).await?;
        let quic_addr = controller.quic_addr;
        let mut agents = Vec::new();
        for i in 0..mock.nodes() {
            let pem = ca::issue(&ca, &node_id(i), &[])?;
            let mut c = agent_config(&mock, i, quic_addr, &ca, &pem);
            if let Some(ev) = &events {
                c.events = ev.clone();
            }
            agents.push(Agent::start(c)?);
        }
        Ok(Harness {
            mock,
            controller: Some(controller),
            agents,
            ca,
            controller_pem,
            quic_addr,
        })
    }

    /// The REST address.
    pub fn http(&self) -> SocketAddr {
        self.controller
            .as_ref()
            .expect("controller running")
            .http_addr
    }

    /// The running controller.
    pub fn ctl(&self) -> &Controller {
        self.controller.as_ref().expect("controller running")
    }

    /// Waits until every node's agent is connected with ESL up.
    pub async fn wait_nodes_up(&self) -> anyhow::Result<()> {
        let want = self.mock.nodes();
        wait_for(Duration::from_secs(15), || {
            let n = self.ctl().cluster.nodes();
            n.iter().filter(|n| n.ready()).count() == want
        })
        .await
        .map_err(|_| anyhow::anyhow!("nodes did not come up: {:?}", self.ctl().cluster.nodes()))
    }
}

/// Polls `f` every 20 ms until true or `timeout`.
pub async fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> Result<(), ()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if f() {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A tiny HTTP/1.1 client: (status, JSON).
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect REST");
    let body = body.unwrap_or("");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut resp = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut resp))
        .await
        .expect("REST answered")
        .expect("read");
    let text = String::from_utf8_lossy(&resp).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let json = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut r = rest;
        while let Some((len, tail)) = r.split_once("\r\n") {
            let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
            if n == 0 || tail.len() < n {
                break;
            }
            out.push_str(&tail[..n]);
            r = tail.get(n + 2..).unwrap_or("");
        }
        out
    } else {
        rest.to_owned()
    };
    (
        status,
        serde_json::from_str(&json).unwrap_or(serde_json::Value::String(json)),
    )
}

/// Destinations for an Originator on the harness' mock: node `fs{i+1}`
/// calls the next node's external profile, so both legs live in the mock.
pub fn mock_destinations(mock: &MockCluster) -> std::collections::BTreeMap<String, String> {
    (0..mock.nodes())
        .map(|i| {
            let peer = mock.node((i + 1) % mock.nodes());
            let port = peer
                .profiles
                .iter()
                .find(|(p, _)| p == "external")
                .map_or(5080, |p| p.1);
            (node_id(i), format!("{}@{}:{port}", 2000 + i, peer.ip))
        })
        .collect()
}

/// The PostgreSQL URL for tests: `SWITCHY_TEST_POSTGRES` (set by `.ci/run`,
/// which installs and starts PostgreSQL). `None` when unset, unless
/// `SWITCHY_REQUIRE_POSTGRES=1`, which turns a missing database into a
/// failure.
pub fn postgres_url() -> Option<String> {
    match std::env::var("SWITCHY_TEST_POSTGRES") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            assert!(
                std::env::var("SWITCHY_REQUIRE_POSTGRES").as_deref() != Ok("1"),
                "SWITCHY_REQUIRE_POSTGRES=1 but SWITCHY_TEST_POSTGRES is unset"
            );
            eprintln!(
                "PostgreSQL test skipped: set SWITCHY_TEST_POSTGRES=postgres://… (.ci/run does)"
            );
            None
        }
    }
}

/// A harness with the Originator set up: built-in `apps` loaded, CDRs from
/// the cluster written to `store` (cleared first) through a writer with a
/// `queue`-row queue, the Originator's failed calls to the same writer.
pub struct OriginatorRig {
    /// The system.
    pub h: Harness,
    /// The Originator (also in the controller's REST slot).
    pub orig: switchy_controller::originator::Originator,
    /// The CDR store.
    pub store: switchy_controller::cdr::CdrStore,
    /// The CDR writer (taken to close it).
    pub writer: Option<switchy_controller::cdr::CdrWriter>,
}

/// Starts an [`OriginatorRig`] on `mock`'s nodes with `cfg` (its
/// destinations set to the mock's nodes).
pub async fn originator_rig(
    mock: MockConfig,
    store: switchy_controller::cdr::CdrStore,
    queue: usize,
    cfg: switchy_controller::originator::OriginatorConfig,
    apps: &[&str],
) -> OriginatorRig {
    use switchy_controller::apps::builtin;
    use switchy_controller::cdr::{CdrWriter, Launches};
    use switchy_controller::originator::{Originator, OriginatorConfig};
    let h = Harness::start_with(mock).await.unwrap();
    h.wait_nodes_up().await.unwrap();
    for a in apps {
        h.ctl()
            .apps
            .load(a, vec![builtin::build(a, &builtin::Params::new()).unwrap()])
            .await
            .unwrap();
    }
    store.clear().await.unwrap();
    let launches: Launches = Default::default();
    let writer =
        CdrWriter::start_with_queue(&h.ctl().cluster, store.clone(), launches.clone(), queue);
    let cfg = OriginatorConfig {
        dest_by_node: mock_destinations(&h.mock),
        ..cfg
    };
    let orig = Originator::new(h.ctl().cluster.clone(), cfg, launches).unwrap();
    orig.set_cdr_sink(writer.sink());
    *h.ctl().originator.write().unwrap() = Some(orig.clone());
    OriginatorRig {
        h,
        orig,
        store,
        writer: Some(writer),
    }
}

/// Waits until every mock node's ESL clients subscribe all of `events`
/// (a part of the controller that starts asking for events has its agents
/// subscribe them one round trip later).
pub async fn wait_subscribed(h: &Harness, events: &[&str]) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (_, v) = http(
            h.mock.http_addr(),
            "GET",
            "/__mock__/connections",
            None,
            None,
        )
        .await;
        let nodes = v["nodes"].as_array().cloned().unwrap_or_default();
        let ok = !nodes.is_empty()
            && nodes.iter().all(|n| {
                let text = n["connections"].to_string();
                events.iter().all(|e| text.contains(e))
            });
        if ok {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            anyhow::bail!("the agents never subscribed {events:?}: {v}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A RELAY server config for tests, on any loopback port: `project` with
/// `token`, phone devices dialled through `phone`, wss with a `relay`
/// certificate from `ca` when given (plain ws otherwise).
pub fn relay_config(
    ca: Option<&Pem>,
    (project, token): (&str, &str),
    phone: &str,
    offer_timeout: Duration,
) -> switchy_controller::relay::RelayConfig {
    use switchy_controller::relay::{Projects, RelayConfig, hub::HubConfig, token_digest};
    let tls = ca.map(|ca| {
        let leaf = ca::issue(ca, "relay", &[]).expect("relay certificate");
        switchy_controller::tls::tcp_server_config(
            leaf.cert.as_bytes(),
            leaf.key.as_bytes(),
            "RELAY",
            "--relay-tls-cert",
            &[b"http/1.1"],
        )
        .expect("relay TLS")
    });
    RelayConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        tls,
        projects: Projects(vec![(project.into(), token_digest(token))]),
        hub: HubConfig {
            tts: None,
            phone: phone.into(),
            offer_timeout,
            record_dir: "/tmp".into(),
        },
        max_sessions: 100,
    }
}

/// A fresh temporary directory of its own (tests in one process must not
/// share files: one test read another's routes file half-written).
pub fn own_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("switchy-{name}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// Writes `text` as a routes file in `dir` and parses it.
pub fn routes(dir: &std::path::Path, text: &str) -> switchy_controller::Router {
    let p = dir.join("routes.toml");
    std::fs::write(&p, text).expect("write routes");
    switchy_controller::Router::from_file(&p).expect("routes parse")
}

/// Runs the SDK scenario of tests/relay_sdk/cluster with Python `py` and
/// `env`, off the runtime; prints its output and returns (passed, output).
pub async fn run_cluster_suite(py: &str, env: Vec<(&'static str, String)>) -> (bool, String) {
    let suite = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/relay_sdk/cluster");
    let py = py.to_owned();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&py)
            .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA", "-s"])
            .arg(&suite)
            .current_dir(&suite)
            .envs(env)
            .output()
            .expect("pytest")
    })
    .await
    .expect("pytest task");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    (out.status.success(), text)
}
