//! RELAY mode (`mock-relay --relay`): a schema-driven mock of SignalWire's
//! RELAY call-control WebSocket (JSON-RPC 2.0), the test backend SignalWire's
//! SDKs run their real client code against. WebSocket at `/` on
//! `--ws-port` (ws, or wss with `--tls-cert/--tls-key`), HTTP control plane
//! on `--http-port` (default: the WebSocket port + 1000).

pub mod control;
pub mod journal;
pub mod state;
pub mod ws;

use state::Shared;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use switchy_relay::auth::{Allowed, AnyNonEmpty, Credentials};
use switchy_relay::schema::SchemaIndex;
use switchy_relay::session::Gate;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// RELAY mode's settings.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// Address to bind.
    pub bind: IpAddr,
    /// WebSocket port (0: any).
    pub ws_port: u16,
    /// Control plane port [default: ws_port + 1000; with ws_port 0, any].
    pub http_port: Option<u16>,
    /// A `relay-protocol` directory holding `relay/*.json` [default: built in].
    pub schema_root: Option<PathBuf>,
    /// Certificate and key (PEM) for wss.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Journal ring size.
    pub journal_capacity: usize,
    /// Most sessions at once.
    pub max_sessions: usize,
    /// Ping every session this often.
    pub ping_every: Option<Duration>,
    /// Accept only these project/token pairs [default: any non-empty pair].
    pub accept: Vec<(String, String)>,
}

impl RelayConfig {
    /// Any free ports on loopback, built-in schemas, plain ws.
    pub fn ephemeral() -> RelayConfig {
        RelayConfig {
            bind: IpAddr::from([127, 0, 0, 1]),
            ws_port: 0,
            http_port: None,
            schema_root: None,
            tls: None,
            journal_capacity: 1000,
            max_sessions: 10_000,
            ping_every: None,
            accept: Vec::new(),
        }
    }
}

/// Why RELAY mode could not start.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// A port is taken.
    #[error("binding the RELAY {what} on {addr}: {source} (choose a free port with {flag})")]
    Bind {
        /// WebSocket or control plane.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Its flag.
        flag: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// The control plane port would overflow.
    #[error("--ws-port {0} + 1000 is past 65535: give --http-port")]
    HttpPortOverflow(u16),
    /// A TLS file cannot be read.
    #[error(
        "reading {path}: {source} (--tls-cert and --tls-key name PEM files, e.g. from `switchy-controller ca issue`)"
    )]
    TlsFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The certificate or key is unusable.
    #[error("TLS: {0}")]
    Tls(#[from] switchy_link::TlsError),
}

/// A running RELAY mock.
#[derive(Debug)]
pub struct RelayMock {
    shared: Arc<Shared>,
    ws_addr: SocketAddr,
    http_addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl RelayMock {
    /// Binds both ports and starts serving.
    pub async fn start(cfg: RelayConfig) -> Result<RelayMock, RelayError> {
        let schemas = match &cfg.schema_root {
            Some(root) => SchemaIndex::from_root(root),
            None => SchemaIndex::embedded(),
        };
        for e in &schemas.load_errors {
            tracing::warn!("RELAY schema not loaded: {e}");
        }
        let tls = match &cfg.tls {
            None => None,
            Some((cert, key)) => {
                let read = |p: &PathBuf| {
                    std::fs::read(p).map_err(|source| RelayError::TlsFile {
                        path: p.clone(),
                        source,
                    })
                };
                let c = switchy_link::tls::tcp_server_config(
                    &read(cert)?,
                    &read(key)?,
                    "RELAY",
                    "--tls-cert",
                    &[b"http/1.1"],
                )?;
                Some(tokio_rustls::TlsAcceptor::from(c))
            }
        };
        let ws_addr = SocketAddr::new(cfg.bind, cfg.ws_port);
        let ws = TcpListener::bind(ws_addr)
            .await
            .map_err(|source| RelayError::Bind {
                what: "WebSocket",
                addr: ws_addr,
                flag: "--ws-port",
                source,
            })?;
        let ws_addr = ws.local_addr().unwrap_or(ws_addr);
        let http_port = match (cfg.http_port, cfg.ws_port) {
            (Some(p), _) => p,
            (None, 0) => 0,
            (None, p) => p.checked_add(1000).ok_or(RelayError::HttpPortOverflow(p))?,
        };
        let http_addr = SocketAddr::new(cfg.bind, http_port);
        let http = TcpListener::bind(http_addr)
            .await
            .map_err(|source| RelayError::Bind {
                what: "control plane",
                addr: http_addr,
                flag: "--http-port",
                source,
            })?;
        let http_addr = http.local_addr().unwrap_or(http_addr);
        let shared = Arc::new(Shared {
            schemas,
            gate: Gate::new(if cfg.accept.is_empty() {
                Box::new(AnyNonEmpty) as Box<dyn Credentials>
            } else {
                Box::new(Allowed(cfg.accept.clone()))
            }),
            scenarios: Default::default(),
            journal: journal::Journal::new(cfg.journal_capacity),
            sessions: Default::default(),
            stats: Default::default(),
            ws_port: ws_addr.port(),
            scheme: if tls.is_some() { "wss" } else { "ws" },
        });
        let accept = ws::Accept {
            tls,
            max_sessions: cfg.max_sessions,
            ping_every: cfg.ping_every,
        };
        let router = control::router(shared.clone());
        let tasks = vec![
            tokio::spawn(ws::accept_loop(ws, shared.clone(), accept)),
            tokio::spawn(async move {
                if let Err(e) = axum::serve(http, router).await {
                    tracing::error!("RELAY control plane stopped: {e}");
                }
            }),
        ];
        Ok(RelayMock {
            shared,
            ws_addr,
            http_addr,
            tasks,
        })
    }

    /// Where the WebSocket listens.
    pub fn ws_addr(&self) -> SocketAddr {
        self.ws_addr
    }

    /// Where the control plane listens.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// `ws://…` or `wss://…`.
    pub fn ws_url(&self) -> String {
        format!("{}://{}", self.shared.scheme, self.ws_addr)
    }

    /// The loaded schemas.
    pub fn schemas(&self) -> &SchemaIndex {
        &self.shared.schemas
    }

    /// Stops listening (live sessions end with the process).
    pub fn stop(self) {
        for t in self.tasks {
            t.abort();
        }
    }
}
