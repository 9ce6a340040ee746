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
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Number of simulated nodes (node i listens on --esl-port + i).
    #[arg(long, default_value_t = 1, env = "MOCK_RELAY_NODES")]
    nodes: usize,
    /// ESL port of node 0 (not FreeSWITCH's 8021, so the mock and a real
    /// FreeSWITCH can run on one host).
    #[arg(long, default_value_t = 18021, env = "MOCK_RELAY_ESL_PORT")]
    esl_port: u16,
    /// Control plane port [default: --esl-port + 1000].
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
    /// Journal ring buffer size (entries).
    #[arg(long, default_value_t = 100_000)]
    journal_capacity: usize,
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
        journal_capacity: a.journal_capacity,
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
