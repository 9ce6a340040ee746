//! mock-relay: simulated FreeSWITCH nodes that speak real ESL, scriptable
//! over HTTP, so every part of switchy is tested without telephony hardware.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let cluster = mock_relay::MockCluster::start(mock_relay::MockConfig::ephemeral(2)).await?;
//! println!("node 0 ESL at {}, control plane at {}", cluster.esl_addr(0), cluster.http_addr());
//! cluster.stop().await;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod api;
pub mod calls;
pub mod config;
pub mod conn;
pub mod cost;
pub mod dial;
pub mod http;
pub mod journal;
pub mod node;
pub mod relay;
pub mod scenario;
pub mod schema;
pub mod template;
pub mod templates;
pub mod util;

pub use config::{ExternalOutcome, Knobs, MockConfig};

use node::{Cluster, Control, Node, NodeInfo, NodeMsg};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Why the simulated cluster could not start.
#[derive(Debug, thiserror::Error)]
pub enum MockError {
    /// Zero nodes asked for.
    #[error("--nodes must be at least 1")]
    NoNodes,
    /// The compiled-in event templates do not parse (a build defect).
    #[error("loading the compiled-in event templates: {0}")]
    Templates(#[from] template::TemplateError),
    /// A node's ESL port is taken.
    #[error("binding node {node}'s ESL port {addr}: {source} (choose a free port with --esl-port)")]
    EslPort {
        /// Node index.
        node: usize,
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The control plane's port is taken.
    #[error(
        "binding the control plane on port {port}: {source} (choose a free port with --http-port)"
    )]
    HttpPort {
        /// The port.
        port: u16,
        /// Why.
        source: std::io::Error,
    },
}

/// A running simulated cluster. Dropping it (or [`MockCluster::stop`])
/// shuts every node down.
pub struct MockCluster {
    cluster: Arc<Cluster>,
    http_addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl MockCluster {
    /// Binds every node's ESL port and the control plane, and starts them.
    pub async fn start(config: MockConfig) -> Result<MockCluster, MockError> {
        if config.nodes == 0 {
            return Err(MockError::NoNodes);
        }
        let templates = templates::Templates::load()?;
        let schemas = match &config.schema_dir {
            Some(dir) => schema::Schemas::load(dir),
            None => schema::Schemas::embedded(),
        };
        for e in &schemas.errors {
            tracing::warn!(error = %e, "schema not loaded (reported in /__mock__/health)");
        }
        let mut listeners = Vec::new();
        let mut infos = Vec::new();
        for i in 0..config.nodes {
            let port = if config.esl_port == 0 {
                0
            } else {
                config.esl_port + i as u16
            };
            let addr = SocketAddr::new(config.bind, port);
            let bind = |source| MockError::EslPort {
                node: i,
                addr,
                source,
            };
            let l = TcpListener::bind(addr).await.map_err(bind)?;
            let esl_addr = l.local_addr().map_err(bind)?;
            infos.push(Arc::new(NodeInfo {
                index: i,
                hostname: format!("mock-fs{}", i + 1),
                ip: format!("127.0.0.{}", i + 1),
                esl_addr,
                profiles: vec![("external".into(), 5080), ("internal".into(), 5060)],
                password: config.password.clone(),
                refuse_until_ms: AtomicU64::new(0),
                reply_delay_ms: AtomicU64::new(0),
                frame_per_write: std::sync::atomic::AtomicBool::new(config.knobs.frame_per_write),
            }));
            listeners.push(l);
        }
        let http_port = match (config.http_port, config.esl_port) {
            (Some(p), _) => p,
            (None, 0) => 0,
            (None, p) => p.saturating_add(1000),
        };
        let http = |source| MockError::HttpPort {
            port: http_port,
            source,
        };
        let http_listener = TcpListener::bind(SocketAddr::new(config.bind, http_port))
            .await
            .map_err(http)?;
        let http_addr = http_listener.local_addr().map_err(http)?;
        let mut senders = Vec::new();
        let mut receivers = Vec::new();
        for _ in 0..config.nodes {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<NodeMsg>();
            senders.push(tx);
            receivers.push(rx);
        }
        let cluster = Arc::new(Cluster {
            infos: infos.clone(),
            senders: senders.clone(),
            journal: journal::Journal::new(config.journal_capacity),
            templates,
            scenarios: scenario::Scenarios::default(),
            schemas,
            next_conn: AtomicU64::new(1),
            events_sent: AtomicU64::new(0),
        });
        let mut tasks = Vec::new();
        for ((info, rx), l) in infos.iter().zip(receivers).zip(listeners) {
            let node = Node::new(
                info.clone(),
                cluster.clone(),
                config.knobs.clone(),
                config.heartbeat,
            );
            tasks.push(tokio::spawn(node.run(rx)));
            tasks.push(tokio::spawn(conn::accept_loop(
                l,
                info.clone(),
                cluster.clone(),
            )));
            tracing::info!(node = info.index, esl = %info.esl_addr, hostname = %info.hostname, "simulated node up");
        }
        let app = http::router(cluster.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = axum::serve(http_listener, app).await {
                tracing::error!(error = %e, "control plane stopped");
            }
        }));
        tracing::info!(http = %http_addr, "control plane up");
        Ok(MockCluster {
            cluster,
            http_addr,
            tasks,
        })
    }

    /// Number of nodes.
    pub fn nodes(&self) -> usize {
        self.cluster.infos.len()
    }

    /// ESL address of node `i`.
    pub fn esl_addr(&self, i: usize) -> SocketAddr {
        self.cluster.infos[i].esl_addr
    }

    /// Control plane address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Identity of node `i`.
    pub fn node(&self, i: usize) -> &NodeInfo {
        &self.cluster.infos[i]
    }

    /// Events delivered to connections so far (all nodes).
    pub fn events_sent(&self) -> u64 {
        self.cluster
            .events_sent
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Writes already framed plain events to every connection of node `i`
    /// subscribed to plain channel events, as fast as each reads (see
    /// [`node::Control::Replay`]); returns how many connections get them.
    /// `range` selects whole frames of `frames` (so a caller can pace them).
    pub async fn replay(
        &self,
        i: usize,
        frames: Arc<[u8]>,
        range: std::ops::Range<usize>,
        events: u64,
    ) -> usize {
        let (done, rx) = tokio::sync::oneshot::channel();
        let Some(tx) = self.cluster.senders.get(i) else {
            return 0;
        };
        let msg = NodeMsg::Control(node::Control::Replay {
            frames,
            range,
            events,
            done,
        });
        if tx.send(msg).is_err() {
            return 0;
        }
        rx.await.unwrap_or(0)
    }

    /// The shared cluster state (journal, schemas, templates).
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// Shuts every node down (connections closed) and waits for it.
    pub async fn stop(mut self) {
        for tx in &self.cluster.senders {
            let _ = tx.send(NodeMsg::Control(Control::Shutdown));
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

impl Drop for MockCluster {
    fn drop(&mut self) {
        for tx in &self.cluster.senders {
            let _ = tx.send(NodeMsg::Control(Control::Shutdown));
        }
        for t in &self.tasks {
            t.abort();
        }
    }
}
