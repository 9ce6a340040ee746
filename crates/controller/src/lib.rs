//! switchy-controller: the cluster registry, session/call/job tracker, the
//! Rust API (`Cluster`, `Node`, `Session`, `Job`), the QUIC server agents
//! connect to, and the REST API.
#![forbid(unsafe_code)]

pub mod ca;
pub mod cluster;
pub mod openapi;
pub mod rest;
pub mod tls;
pub mod tracker;

pub use cluster::{Cluster, ClusterConfig, ClusterEvent, CommandError, Job, Node, Session};

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

/// A running controller: QUIC for agents plus the REST API.
pub struct Controller {
    /// The cluster.
    pub cluster: Cluster,
    /// Where agents connect.
    pub quic_addr: SocketAddr,
    /// Where the REST API listens.
    pub http_addr: SocketAddr,
    listener: Option<cluster::Listener>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Controller {
    fn drop(&mut self) {
        drop(self.listener.take());
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Controller {
    /// Starts from PEMs (CA, controller certificate and key).
    pub async fn start(
        config: ClusterConfig,
        listen: SocketAddr,
        http: SocketAddr,
        token: String,
        ca_pem: &[u8],
        cert_pem: &[u8],
        key_pem: &[u8],
    ) -> anyhow::Result<Controller> {
        if token.trim().is_empty() {
            anyhow::bail!("an API token is required: set --token-file or SWITCHY_API_TOKEN");
        }
        let server = tls::server_config(ca_pem, cert_pem, key_pem)?;
        let cluster = Cluster::new(config);
        let listener = cluster.listen(listen, server).await?;
        let quic_addr = listener.addr;
        let l = tokio::net::TcpListener::bind(http).await.map_err(|e| {
            anyhow::anyhow!("cannot listen for REST on {http}: {e} (choose another --http)")
        })?;
        let http_addr = l.local_addr()?;
        let app = rest::router(rest::Api {
            cluster: cluster.clone(),
            token: Arc::new(token),
        });
        let http_task = tokio::spawn(async move {
            if let Err(e) = axum::serve(l, app).await {
                tracing::error!(error = %e, "REST server stopped");
            }
        });
        tracing::info!(quic = %quic_addr, http = %http_addr, "controller up");
        Ok(Controller {
            cluster,
            quic_addr,
            http_addr,
            listener: Some(listener),
            tasks: vec![http_task],
        })
    }

    /// Starts from a TLS directory holding `ca.pem`, `controller.pem`, `controller.key`.
    pub async fn start_from_dir(
        config: ClusterConfig,
        listen: SocketAddr,
        http: SocketAddr,
        token: String,
        dir: &Path,
    ) -> anyhow::Result<Controller> {
        let read = |f: &str| {
            std::fs::read(dir.join(f)).map_err(|e| anyhow::anyhow!("cannot read {}: {e} (create it with `switchy-controller ca init/issue --dir {}`)", dir.join(f).display(), dir.display()))
        };
        Self::start(
            config,
            listen,
            http,
            token,
            &read("ca.pem")?,
            &read("controller.pem")?,
            &read("controller.key")?,
        )
        .await
    }
}
