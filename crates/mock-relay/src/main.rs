//! `mock-relay`: run simulated FreeSWITCH nodes speaking real ESL.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use mock_relay::{ExternalOutcome, Knobs, MockCluster, MockConfig};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Simulated FreeSWITCH nodes speaking real ESL (inbound method), with an
/// HTTP control plane at /__mock__/… for scripting, journal and faults.
/// With --relay: a mock of SignalWire's RELAY WebSocket instead, for the
/// SignalWire SDKs (ws://127.0.0.1:8773, control plane on port 9773).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Serve SignalWire RELAY (JSON-RPC over WebSocket at /) instead of ESL nodes.
    #[arg(long)]
    relay: bool,
    /// RELAY mode: WebSocket port.
    #[arg(long, default_value_t = 8773, env = "MOCK_RELAY_PORT")]
    ws_port: u16,
    /// RELAY mode: a relay-protocol directory holding relay/*.json [default: the schemas built in].
    #[arg(long)]
    schema_root: Option<PathBuf>,
    /// RELAY mode: serve wss with this certificate (PEM; e.g. `switchy-controller ca issue --name relay`).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// RELAY mode: the certificate's key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// RELAY mode: send signalwire.ping to every session this often, seconds (0: never; the SDKs expect one at least every 15 s once they have seen one).
    #[arg(long, default_value_t = 0)]
    ping_secs: u64,
    /// RELAY mode: accept only this PROJECT:TOKEN (repeat for more) [default: any non-empty pair].
    #[arg(long, value_parser = switchy_relay::auth::Allowed::parse_pair)]
    accept: Vec<(String, String)>,
    /// RELAY mode: most sessions at once.
    #[arg(long, default_value_t = 10_000)]
    relay_max_sessions: usize,
    /// Number of simulated nodes (node i listens on --esl-port + i).
    #[arg(long, default_value_t = 1, env = "MOCK_RELAY_NODES")]
    nodes: usize,
    /// ESL port of node 0 (not FreeSWITCH's 8021, so the mock and a real
    /// FreeSWITCH can run on one host).
    #[arg(long, default_value_t = 18021, env = "MOCK_RELAY_ESL_PORT")]
    esl_port: u16,
    /// Control plane port [default: --esl-port + 1000; with --relay, --ws-port + 1000].
    #[arg(long, env = "MOCK_RELAY_HTTP_PORT")]
    http_port: Option<u16>,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1", env = "MOCK_RELAY_BIND")]
    bind: IpAddr,
    /// ESL password of every node.
    #[arg(long, default_value = "ClueCon", env = "MOCK_RELAY_PASSWORD")]
    password: String,
    /// HEARTBEAT interval in seconds.
    #[arg(long, default_value_t = 20)]
    heartbeat_secs: u64,
    /// Inbound legs answer by themselves after this many ms [default: never, they park].
    #[arg(long)]
    answer_delay_ms: Option<u64>,
    /// Ring time of destinations outside the mock, ms.
    #[arg(long, default_value_t = 0)]
    ring_ms: u64,
    /// Outcome of calls to destinations outside the mock: answer, busy, noanswer or fail:<CAUSE>.
    #[arg(long, default_value = "answer")]
    external: String,
    /// Fraction (0..1) of inbound calls refused with --failure-cause.
    #[arg(long, default_value_t = 0.0)]
    failure_ratio: f64,
    /// Hangup cause of refused calls.
    #[arg(long, default_value = "NORMAL_TEMPORARY_FAILURE")]
    failure_cause: String,
    /// max-sessions of each node.
    #[arg(long, default_value_t = 100_000)]
    max_sessions: usize,
    /// sessions-per-second of each node.
    #[arg(long, default_value_t = 100_000)]
    sessions_per_second: u32,
    /// Simulated length of played files, ms.
    #[arg(long, default_value_t = 1000)]
    playback_ms: u64,
    /// Journal ring buffer size, entries [default: 100000; with --relay, 1000].
    #[arg(long)]
    journal_capacity: Option<usize>,
    /// Directory of the JSON Schemas [default: relay-protocol/esl of the source tree].
    #[arg(long)]
    schemas: Option<PathBuf>,
    /// Write each frame on its own, as FreeSWITCH does [default: coalesce queued frames into one write].
    #[arg(long)]
    frame_per_write: bool,
}

fn parse_external(s: &str) -> anyhow::Result<ExternalOutcome> {
    Ok(match s {
        "answer" => ExternalOutcome::Answer,
        "busy" => ExternalOutcome::Busy,
        "noanswer" | "no_answer" => ExternalOutcome::NoAnswer,
        other => match other.strip_prefix("fail:") {
            Some(cause) if !cause.is_empty() => ExternalOutcome::Fail {
                cause: cause.to_owned(),
            },
            _ => anyhow::bail!("--external {other:?}: use answer, busy, noanswer or fail:<CAUSE>"),
        },
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let telemetry = switchy_telemetry::init("mock-relay");
    let a = Args::parse();
    if a.relay {
        return relay_mode(a, telemetry).await;
    }
    if a.tls_cert.is_some() || a.schema_root.is_some() {
        anyhow::bail!("--tls-cert and --schema-root belong to RELAY mode: add --relay");
    }
    if !(0.0..=1.0).contains(&a.failure_ratio) {
        anyhow::bail!("--failure-ratio must be between 0 and 1");
    }
    let config = MockConfig {
        nodes: a.nodes,
        bind: a.bind,
        esl_port: a.esl_port,
        http_port: a.http_port,
        password: a.password,
        heartbeat: Duration::from_secs(a.heartbeat_secs.max(1)),
        journal_capacity: a.journal_capacity.unwrap_or(100_000),
        schema_dir: a.schemas,
        knobs: Knobs {
            auto_answer_ms: a.answer_delay_ms,
            ring_ms: a.ring_ms,
            external: parse_external(&a.external)?,
            failure_ratio: a.failure_ratio,
            failure_cause: a.failure_cause,
            max_sessions: a.max_sessions,
            sessions_per_second: a.sessions_per_second,
            playback_ms: a.playback_ms,
            frame_per_write: a.frame_per_write,
            ..Knobs::default()
        },
    };
    let cluster = MockCluster::start(config).await?;
    for i in 0..cluster.nodes() {
        let n = cluster.node(i);
        tracing::info!(
            "node {i}: {} ESL {} SIP sip:mod_sofia@{}:5080 (external), :5060 (internal)",
            n.hostname,
            n.esl_addr,
            n.ip
        );
    }
    tracing::info!(
        "control plane: http://{}/__mock__/health",
        cluster.http_addr()
    );
    switchy_telemetry::shutdown_signal().await;
    cluster.stop().await;
    telemetry.shutdown().await;
    Ok(())
}

async fn relay_mode(a: Args, telemetry: switchy_telemetry::Telemetry) -> anyhow::Result<()> {
    let cfg = mock_relay::relay::RelayConfig {
        bind: a.bind,
        ws_port: a.ws_port,
        http_port: a.http_port,
        schema_root: a.schema_root,
        tls: a.tls_cert.zip(a.tls_key),
        journal_capacity: a.journal_capacity.unwrap_or(1000),
        max_sessions: a.relay_max_sessions,
        ping_every: (a.ping_secs > 0).then(|| Duration::from_secs(a.ping_secs)),
        accept: a.accept,
    };
    let mock = mock_relay::relay::RelayMock::start(cfg).await?;
    tracing::info!(
        "RELAY: {} ({} schemas from {}), control plane http://{}/__mock__/health",
        mock.ws_url(),
        mock.schemas().total(),
        mock.schemas().origin,
        mock.http_addr()
    );
    switchy_telemetry::shutdown_signal().await;
    mock.stop();
    telemetry.shutdown().await;
    Ok(())
}
