//! Agent configuration: flags > `SWITCHY_*` environment > TOML file >
//! defaults (see `deploy/agent.toml`).

use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// TLS files.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsFiles {
    /// Cluster CA certificate (PEM).
    pub ca: Option<PathBuf>,
    /// This agent's certificate (PEM).
    pub cert: Option<PathBuf>,
    /// This agent's private key (PEM).
    pub key: Option<PathBuf>,
}

/// The ESL side.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EslFile {
    /// FreeSWITCH host.
    pub host: Option<String>,
    /// ESL port.
    pub port: Option<u16>,
    /// File holding the ESL password.
    pub password_file: Option<PathBuf>,
    /// Events to subscribe.
    pub events: Option<Vec<String>>,
    /// ESL connections for commands, apart from the event connection.
    pub command_connections: Option<usize>,
    /// `plain` or `json`.
    pub event_format: Option<String>,
    /// Wake FreeSWITCH's event thread this often, ms (0: never).
    pub event_poke_ms: Option<u64>,
}

/// Buffer limits.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BufferFile {
    /// Events kept while the controller is unreachable.
    pub max_events: Option<usize>,
    /// Header and body bytes kept (MiB).
    pub max_mib: Option<usize>,
    /// Events waiting to be sent above which, while the controller is
    /// connected, ESL reading pauses.
    pub read_ahead: Option<usize>,
}

/// Timings.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimingFile {
    /// Heartbeat to the controller, s.
    pub heartbeat_secs: Option<u64>,
    /// Periodic `api status` probe, s.
    pub status_probe_secs: Option<u64>,
    /// Probe timeout, ms.
    pub status_timeout_ms: Option<u64>,
    /// Reconnect backoff floor, ms.
    pub backoff_min_ms: Option<u64>,
    /// Reconnect backoff cap, ms.
    pub backoff_max_ms: Option<u64>,
}

/// `[fallback]`: parked calls while the controller is unreachable.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FallbackFile {
    /// Seconds a call parked while the controller is away waits (0: off).
    pub after_secs: Option<u64>,
    /// `hangup [CAUSE]` or `transfer EXTENSION XML CONTEXT`.
    pub action: Option<String>,
}

/// The TOML file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentFile {
    /// Node id.
    pub node_id: Option<String>,
    /// Controller `host:port`.
    pub controller: Option<String>,
    /// Name in the controller's certificate.
    pub controller_name: Option<String>,
    /// TLS files.
    pub tls: TlsFiles,
    /// ESL.
    pub esl: EslFile,
    /// Buffer.
    pub buffer: BufferFile,
    /// Timings.
    pub timing: TimingFile,
    /// `[fallback]`.
    pub fallback: FallbackFile,
}

impl AgentFile {
    /// Reads and validates a TOML file.
    pub fn load(path: &Path) -> Result<AgentFile, crate::AgentError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| crate::AgentError::ConfigRead {
                path: path.to_owned(),
                source,
            })?;
        toml::from_str(&text).map_err(|source| crate::AgentError::ConfigParse {
            path: path.to_owned(),
            source,
        })
    }
}

/// The resolved configuration.
#[derive(Clone)]
pub struct AgentConfig {
    /// Node id (must equal the certificate's name).
    pub node_id: String,
    /// Controller address.
    pub controller: String,
    /// Name in the controller's certificate.
    pub controller_name: String,
    /// CA certificate PEM.
    pub ca_pem: Vec<u8>,
    /// Agent certificate PEM.
    pub cert_pem: Vec<u8>,
    /// Agent key PEM.
    pub key_pem: Vec<u8>,
    /// ESL host.
    pub esl_host: String,
    /// ESL port.
    pub esl_port: u16,
    /// ESL password (never logged).
    pub esl_password: String,
    /// Events always subscribed, whatever the controller asks for (it adds
    /// what its tracker, apps, routes and Originator need and takes it
    /// away again when they no longer do).
    pub events: Vec<String>,
    /// ESL connections that carry only commands (no events), so that an
    /// `api` never waits behind the events FreeSWITCH queued for the event
    /// connection; commands go to the one with the fewest in flight.
    pub command_connections: usize,
    /// Event format asked of FreeSWITCH (`event plain` or `event json`).
    pub event_format: switchy_protocol::esl::EventFormat,
    /// How often an empty line wakes FreeSWITCH's listener thread on the
    /// event connection (zero: never). It sends queued events only when
    /// woken and otherwise sleeps up to 20 ms, so this bounds how late an
    /// event leaves FreeSWITCH; each poke costs it one wake-up.
    pub event_poke: Duration,
    /// Buffer size in events.
    pub max_events: usize,
    /// Buffer size in header and body bytes (events of up to FreeSWITCH's
    /// 16 MB each would otherwise make `max_events` a memory bound of GBs).
    pub max_bytes: usize,
    /// While the controller is connected, ESL reading pauses when this many
    /// events wait to be sent (TCP backpressure to FreeSWITCH instead of
    /// unbounded growth); while it is unreachable, up to `max_events` are
    /// buffered.
    pub read_ahead: usize,
    /// Heartbeat period.
    pub heartbeat: Duration,
    /// Status probe period.
    pub status_probe: Duration,
    /// Status probe timeout.
    pub status_timeout: Duration,
    /// Backoff floor.
    pub backoff_min: Duration,
    /// Backoff cap.
    pub backoff_max: Duration,
    /// While the controller is unreachable: how long an inbound call may
    /// wait in park, and what then happens to it (None: it waits).
    pub fallback: Option<(Duration, crate::fallback::FallbackAction)>,
}

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConfig")
            .field("node_id", &self.node_id)
            .field("controller", &self.controller)
            .field("controller_name", &self.controller_name)
            .field("esl", &format!("{}:{}", self.esl_host, self.esl_port))
            .field("esl_password", &"<hidden>")
            .field("events", &self.events)
            .field("command_connections", &self.command_connections)
            .field("max_events", &self.max_events)
            .field("read_ahead", &self.read_ahead)
            .finish()
    }
}

impl AgentConfig {
    /// Defaults for everything but identity, controller and TLS.
    pub fn new(
        node_id: &str,
        controller: &str,
        ca_pem: Vec<u8>,
        cert_pem: Vec<u8>,
        key_pem: Vec<u8>,
    ) -> Self {
        AgentConfig {
            node_id: node_id.to_owned(),
            controller: controller.to_owned(),
            controller_name: "controller".into(),
            ca_pem,
            cert_pem,
            key_pem,
            esl_host: "127.0.0.1".into(),
            esl_port: 8021,
            esl_password: "ClueCon".into(),
            events: switchy_protocol::wire::TRACKER_MINIMAL
                .iter()
                .map(|e| (*e).to_owned())
                .collect(),
            command_connections: 2,
            event_format: switchy_protocol::esl::EventFormat::Plain,
            event_poke: Duration::from_millis(5),
            max_events: 200_000,
            max_bytes: 256 << 20,
            read_ahead: 20_000,
            heartbeat: Duration::from_secs(5),
            status_probe: Duration::from_secs(2),
            status_timeout: Duration::from_millis(2000),
            backoff_min: Duration::from_millis(200),
            backoff_max: Duration::from_secs(10),
            fallback: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped example stays loadable (unknown keys are an error) and
    /// shows the built-in defaults it claims to show.
    #[test]
    fn the_deploy_example_loads_and_shows_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/agent.toml");
        let f = AgentFile::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let d = AgentConfig::new("fs1", "c:1", Vec::new(), Vec::new(), Vec::new());
        assert_eq!(f.node_id.as_deref(), Some("fs1"));
        assert_eq!(f.buffer.max_events, Some(d.max_events));
        assert_eq!(f.buffer.max_mib.map(|m| m << 20), Some(d.max_bytes));
        assert_eq!(f.buffer.read_ahead, Some(d.read_ahead));
        assert_eq!(f.esl.events.as_ref(), Some(&d.events));
        assert_eq!(f.esl.command_connections, Some(d.command_connections));
        assert_eq!(f.esl.event_poke_ms, Some(d.event_poke.as_millis() as u64));
        assert_eq!(f.timing.status_probe_secs, Some(d.status_probe.as_secs()));
        assert!(AgentFile::load(Path::new("/nonexistent/agent.toml")).is_err());
    }
}
