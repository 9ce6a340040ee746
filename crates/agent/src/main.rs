//! `switchy-agent`: runs beside one FreeSWITCH (systemd: deploy/switchy-agent.service).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use std::path::PathBuf;
use std::time::Duration;
use switchy_agent::config::AgentFile;
use switchy_agent::{Agent, AgentConfig};

/// Relays one FreeSWITCH's Event Socket to the switchy controller over QUIC
/// with mutual TLS. Settings: flags > SWITCHY_* environment > --config file >
/// defaults.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// TOML config file (see deploy/agent.toml).
    #[arg(long, env = "SWITCHY_AGENT_CONFIG")]
    config: Option<PathBuf>,
    /// Node id; must equal the name in this agent's certificate.
    #[arg(long, env = "SWITCHY_NODE_ID")]
    node_id: Option<String>,
    /// Controller address host:port (QUIC).
    #[arg(long, env = "SWITCHY_CONTROLLER")]
    controller: Option<String>,
    /// Name in the controller's certificate [default: controller].
    #[arg(long, env = "SWITCHY_CONTROLLER_NAME")]
    controller_name: Option<String>,
    /// Cluster CA certificate (PEM).
    #[arg(long, env = "SWITCHY_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// This agent's certificate (PEM).
    #[arg(long, env = "SWITCHY_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// This agent's private key (PEM).
    #[arg(long, env = "SWITCHY_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// FreeSWITCH ESL host [default: 127.0.0.1].
    #[arg(long, env = "SWITCHY_ESL_HOST")]
    esl_host: Option<String>,
    /// FreeSWITCH ESL port [default: 8021].
    #[arg(long, env = "SWITCHY_ESL_PORT")]
    esl_port: Option<u16>,
    /// File with the ESL password (SWITCHY_ESL_PASSWORD also works) [default password: ClueCon].
    #[arg(long, env = "SWITCHY_ESL_PASSWORD_FILE")]
    esl_password_file: Option<PathBuf>,
    /// Events always subscribed, comma-separated [default: CHANNEL_HANGUP_COMPLETE,BACKGROUND_JOB,HEARTBEAT; the controller adds what its tracker, apps, routes and Originator need and removes it again; ALL works too, at a high FreeSWITCH CPU cost].
    #[arg(long, env = "SWITCHY_ESL_EVENTS", value_delimiter = ',')]
    events: Option<Vec<String>>,
    /// ESL connections for commands only (no events), beside the event connection [default: 2].
    #[arg(long, env = "SWITCHY_ESL_COMMAND_CONNECTIONS")]
    command_connections: Option<usize>,
    /// Wake FreeSWITCH's event thread with an empty line this often, ms (0: never); it otherwise sends queued events only every 20 ms [default: 5].
    #[arg(long, env = "SWITCHY_ESL_EVENT_POKE_MS")]
    event_poke_ms: Option<u64>,
    /// Event format asked of FreeSWITCH: plain or json [default: plain, the cheaper one for FreeSWITCH, see docs/benchmarks.md].
    #[arg(long, env = "SWITCHY_ESL_EVENT_FORMAT")]
    event_format: Option<String>,
    /// Events buffered while the controller is unreachable [default: 200000].
    #[arg(long, env = "SWITCHY_BUFFER_MAX_EVENTS")]
    max_events: Option<usize>,
    /// Header and body bytes buffered, MiB (a bound on memory whatever the events' sizes) [default: 256].
    #[arg(long, env = "SWITCHY_BUFFER_MAX_MIB")]
    max_buffer_mib: Option<usize>,
    /// While the controller is connected, pause reading ESL when this many events wait to be sent [default: 20000].
    #[arg(long, env = "SWITCHY_BUFFER_READ_AHEAD")]
    read_ahead: Option<usize>,
    /// Heartbeat to the controller, seconds [default: 5].
    #[arg(long)]
    heartbeat_secs: Option<u64>,
    /// Periodic `status` probe of FreeSWITCH (liveness and load), seconds [default: 2].
    #[arg(long)]
    status_probe_secs: Option<u64>,
    /// Probe timeout before the node is marked degraded, ms [default: 2000].
    #[arg(long)]
    status_timeout_ms: Option<u64>,
    /// Reconnect backoff floor, ms [default: 200].
    #[arg(long)]
    backoff_min_ms: Option<u64>,
    /// Reconnect backoff cap, ms [default: 10000].
    #[arg(long)]
    backoff_max_ms: Option<u64>,
    /// While the controller is unreachable, an inbound call that parked waits this many seconds, then gets --fallback-action (0: it waits for the controller however long) [default: 10].
    #[arg(long, env = "SWITCHY_FALLBACK_AFTER_SECS")]
    fallback_after_secs: Option<u64>,
    /// What happens to it: `hangup [CAUSE]` (FreeSWITCH refuses the INVITE with the cause's SIP code) or `transfer EXTENSION XML CONTEXT` (a local dialplan) [default: hangup SERVICE_UNAVAILABLE, a SIP 503].
    #[arg(long, env = "SWITCHY_FALLBACK_ACTION")]
    fallback_action: Option<String>,
}

/// `[fallback]` defaults: a caller hears a 503 within 10 s instead of
/// silence when the controller is down.
const FALLBACK_AFTER_SECS: u64 = 10;

fn read(path: &PathBuf, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read {what} {}: {e}", path.display()))
}

fn resolve(a: Args) -> anyhow::Result<AgentConfig> {
    // A flag that is wrong whatever the rest says is refused first.
    if let Some(act) = &a.fallback_action {
        switchy_agent::fallback::FallbackAction::parse(act).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let f = match &a.config {
        Some(p) => AgentFile::load(p)?,
        None => AgentFile::default(),
    };
    let node_id = a.node_id.or(f.node_id).ok_or_else(|| {
        anyhow::anyhow!("no node id: set --node-id, SWITCHY_NODE_ID or node_id in the config")
    })?;
    let controller = a
        .controller
        .or(f.controller)
        .ok_or_else(|| anyhow::anyhow!("no controller address: set --controller host:port"))?;
    let need = |v: Option<PathBuf>, what: &str| {
        v.ok_or_else(|| anyhow::anyhow!("no {what}: set --tls-{what} or [tls] {what}"))
    };
    let ca = read(&need(a.tls_ca.or(f.tls.ca), "ca")?, "CA certificate")?;
    let cert = read(
        &need(a.tls_cert.or(f.tls.cert), "cert")?,
        "agent certificate",
    )?;
    let key = read(&need(a.tls_key.or(f.tls.key), "key")?, "agent key")?;
    let mut c = AgentConfig::new(&node_id, &controller, ca, cert, key);
    if let Some(n) = a.controller_name.or(f.controller_name) {
        c.controller_name = n;
    }
    if let Some(h) = a.esl_host.or(f.esl.host) {
        c.esl_host = h;
    }
    if let Some(p) = a.esl_port.or(f.esl.port) {
        c.esl_port = p;
    }
    if let Ok(pw) = std::env::var("SWITCHY_ESL_PASSWORD") {
        c.esl_password = pw;
    } else if let Some(p) = a.esl_password_file.or(f.esl.password_file) {
        c.esl_password = String::from_utf8(read(&p, "ESL password file")?)?
            .trim_end_matches(['\n', '\r'])
            .to_owned();
    }
    if let Some(e) = a.events.or(f.esl.events) {
        c.events = e;
    }
    if let Some(n) = a.command_connections.or(f.esl.command_connections) {
        if n == 0 {
            anyhow::bail!("command_connections must be at least 1");
        }
        c.command_connections = n;
    }
    if let Some(ms) = a.event_poke_ms.or(f.esl.event_poke_ms) {
        c.event_poke = Duration::from_millis(ms);
    }
    if let Some(fmt) = a.event_format.or(f.esl.event_format) {
        c.event_format = switchy_protocol::esl::EventFormat::from_keyword(&fmt)
            .filter(|f| *f != switchy_protocol::esl::EventFormat::Xml)
            .ok_or_else(|| anyhow::anyhow!("event_format {fmt:?} must be plain or json"))?;
    }
    if let Some(m) = a.read_ahead.or(f.buffer.read_ahead) {
        c.read_ahead = m;
    }
    if let Some(m) = a.max_events.or(f.buffer.max_events) {
        c.max_events = m;
    }
    if let Some(m) = a.max_buffer_mib.or(f.buffer.max_mib) {
        c.max_bytes = m.max(1) << 20;
    }
    let t = &f.timing;
    if let Some(s) = a.heartbeat_secs.or(t.heartbeat_secs) {
        c.heartbeat = Duration::from_secs(s.max(1));
    }
    if let Some(s) = a.status_probe_secs.or(t.status_probe_secs) {
        c.status_probe = Duration::from_secs(s.max(1));
    }
    if let Some(s) = a.status_timeout_ms.or(t.status_timeout_ms) {
        c.status_timeout = Duration::from_millis(s.max(1));
    }
    if let Some(s) = a.backoff_min_ms.or(t.backoff_min_ms) {
        c.backoff_min = Duration::from_millis(s.max(1));
    }
    if let Some(s) = a.backoff_max_ms.or(t.backoff_max_ms) {
        c.backoff_max = Duration::from_millis(s.max(1));
    }
    let after = a
        .fallback_after_secs
        .or(f.fallback.after_secs)
        .unwrap_or(FALLBACK_AFTER_SECS);
    let action = a
        .fallback_action
        .or(f.fallback.action.clone())
        .unwrap_or_else(|| "hangup SERVICE_UNAVAILABLE".into());
    let action = switchy_agent::fallback::FallbackAction::parse(&action)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    c.fallback = (after > 0).then(|| (Duration::from_secs(after), action));
    Ok(c)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let telemetry = switchy_telemetry::init("switchy-agent");
    let config = resolve(Args::parse())?;
    tracing::info!(config = ?config, "starting");
    let agent = Agent::start(config)?;
    switchy_telemetry::shutdown_signal().await;
    tracing::info!(
        "stopping: no more events read; waiting up to 10 s for the controller to acknowledge the buffered ones"
    );
    let left = agent.stop(std::time::Duration::from_secs(10)).await;
    if left > 0 {
        tracing::warn!(
            events = left,
            "stopped with events the controller never acknowledged (was it reachable?)"
        );
    }
    telemetry.shutdown().await;
    Ok(())
}
