//! switchy-controller: the cluster registry, session/call/job tracker, the
//! Rust API (`Cluster`, `Node`, `Session`, `Job`), the QUIC server agents
//! connect to, and the REST API.
#![forbid(unsafe_code)]

pub mod action;
pub mod apps;
pub mod bottleneck;
pub use switchy_link::{ca, tls};
pub mod cdr;
pub mod cdr_export;
pub mod cdr_stats;
pub mod cluster;
pub mod error;
pub mod openapi;
pub mod originator;
pub mod pipeline;
pub mod plot;
pub mod relay;
pub mod rest;
pub mod route_template;
pub mod router;
pub mod tracker;

pub use apps::{App, AppConfig, AppManager, Ctx};
pub use cluster::{Cluster, ClusterConfig, ClusterEvent, CommandError, Job, Node, Session};
pub use error::{AppError, CdrError, Invalid, PlotError, StartError};
pub use router::{Flow, RouteCtx, RouteTable, Router};

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
    /// The app manager (dispatches events to loaded apps).
    pub apps: AppManager,
    /// The router, once one is in use (shared with the REST API).
    pub router: Arc<std::sync::RwLock<Option<Router>>>,
    /// The Originator, once one is set (shared with the REST API).
    pub originator: Arc<std::sync::RwLock<Option<originator::Originator>>>,
    /// The RELAY server, once started (shared with the REST API's metrics).
    pub relay: Arc<std::sync::RwLock<Option<relay::Relay>>>,
    listener: Option<cluster::Listener>,
    /// The agents' endpoint, bound, until [`Controller::accept_agents`].
    pending_listen: Option<quinn::Endpoint>,
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
    /// Stops taking events from agents: closes their connections, so what
    /// they have not had acknowledged stays in their buffers for the next
    /// controller. Everything acknowledged so far is already in the
    /// pipeline (a batch is acknowledged only once published): drain the
    /// CDR writer after this, not before.
    pub fn stop_agents(&mut self) {
        drop(self.listener.take());
    }

    /// Starts from PEMs (CA, controller certificate and key) and accepts
    /// agents at once: [`Controller::prepare`], then
    /// [`Controller::accept_agents`].
    pub async fn start(
        config: ClusterConfig,
        listen: SocketAddr,
        http: SocketAddr,
        token: String,
        ca_pem: &[u8],
        cert_pem: &[u8],
        key_pem: &[u8],
    ) -> Result<Controller, StartError> {
        let mut c = Self::prepare(config, listen, http, token, ca_pem, cert_pem, key_pem).await?;
        c.accept_agents().await?;
        Ok(c)
    }

    /// Listens for agents (on the address given to
    /// [`Controller::prepare`]); returns where. Attach what must see every
    /// event (the CDR writer, the routes) before: an agent's events are
    /// acknowledged as soon as the consumers present have them.
    pub async fn accept_agents(&mut self) -> Result<SocketAddr, StartError> {
        if let Some(endpoint) = self.pending_listen.take() {
            let listener = self.cluster.serve(endpoint)?;
            self.quic_addr = listener.addr;
            self.listener = Some(listener);
            tracing::info!(quic = %self.quic_addr, "accepting agents");
        }
        Ok(self.quic_addr)
    }

    /// Sets everything up, binds the agents' port ([`Controller::quic_addr`]
    /// is known) and serves REST, but takes no agent yet (see
    /// [`Controller::accept_agents`]); the TLS files are checked here.
    pub async fn prepare(
        config: ClusterConfig,
        listen: SocketAddr,
        http: SocketAddr,
        token: String,
        ca_pem: &[u8],
        cert_pem: &[u8],
        key_pem: &[u8],
    ) -> Result<Controller, StartError> {
        Self::prepare_with(
            config,
            rest::serve::RestLimits::default(),
            listen,
            http,
            token,
            ca_pem,
            cert_pem,
            key_pem,
        )
        .await
    }

    /// As [`Controller::prepare`], serving REST with `limits`.
    #[allow(clippy::too_many_arguments)]
    pub async fn prepare_with(
        config: ClusterConfig,
        limits: rest::serve::RestLimits,
        listen: SocketAddr,
        http: SocketAddr,
        token: String,
        ca_pem: &[u8],
        cert_pem: &[u8],
        key_pem: &[u8],
    ) -> Result<Controller, StartError> {
        if token.trim().is_empty() {
            return Err(StartError::NoToken);
        }
        let server = tls::server_config(ca_pem, cert_pem, key_pem)?;
        let cluster = Cluster::new(config);
        let endpoint = Cluster::bind(listen, server)?;
        let quic_addr = endpoint
            .local_addr()
            .map_err(|source| StartError::ListenAgents {
                addr: listen,
                source,
            })?;
        let rest = |source| StartError::ListenRest { addr: http, source };
        let l = tokio::net::TcpListener::bind(http).await.map_err(rest)?;
        let http_addr = l.local_addr().map_err(rest)?;
        let apps = AppManager::start(cluster.clone(), AppConfig::default());
        let stats: Arc<rest::serve::RestStats> = Arc::default();
        let router: Arc<std::sync::RwLock<Option<Router>>> = Arc::default();
        let originator: Arc<std::sync::RwLock<Option<originator::Originator>>> = Arc::default();
        let relay: Arc<std::sync::RwLock<Option<relay::Relay>>> = Arc::default();
        let app = rest::router(rest::Api {
            relay: relay.clone(),
            cluster: cluster.clone(),
            token: Arc::new(token),
            apps: apps.clone(),
            router: router.clone(),
            originator: originator.clone(),
            stats: stats.clone(),
            throttle: Arc::default(),
            tokens: Arc::new(limits.tokens.clone()),
            api_allow: limits.api_allow.clone().map(Arc::new),
        });
        if !http_addr.ip().is_loopback() && limits.tls.is_none() {
            tracing::warn!(http = %http_addr, "REST listens beyond loopback without TLS: the bearer token crosses the network in clear. Give --http-tls-cert and --http-tls-key, or bind 127.0.0.1 behind a TLS proxy");
        }
        let scheme = if limits.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let http_task = tokio::spawn(rest::serve::serve(l, app, limits, stats));
        tracing::info!(http = %http_addr, scheme, "controller REST up");
        Ok(Controller {
            cluster,
            quic_addr,
            http_addr,
            apps,
            router,
            originator,
            relay,
            listener: None,
            pending_listen: Some(endpoint),
            tasks: vec![http_task],
        })
    }

    /// Routes parked channels with `router`: loads it as app `router` and
    /// makes it the default app (sessions that name no app).
    pub async fn use_router(&self, router: Router) -> Result<(), apps::LoadError> {
        if let Some(r) = self
            .relay
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            router.set_relay(r.clone());
        }
        self.apps.unload("router").await;
        self.apps.load("router", vec![router.app()]).await?;
        self.apps.set_default("router");
        *self.router.write().unwrap_or_else(|p| p.into_inner()) = Some(router);
        Ok(())
    }

    /// Starts the RELAY server (`serve --relay-listen`): SignalWire SDK
    /// apps control the calls that `relay` route actions hand them. Start it
    /// before [`Controller::use_router`] so the routes find it.
    pub async fn use_relay(&self, cfg: relay::RelayConfig) -> Result<relay::Relay, std::io::Error> {
        let r = relay::Relay::start(&self.cluster, cfg).await?;
        *self.relay.write().unwrap_or_else(|p| p.into_inner()) = Some(r.clone());
        if let Some(router) = self
            .router
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            router.set_relay(r.clone());
        }
        Ok(r)
    }

    /// Re-reads the routes file (SIGHUP); a bad file keeps the old routes.
    pub fn reload_routes(&self) -> Result<usize, router::RoutesError> {
        let r = self
            .router
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        match r {
            Some(r) => r.reload(),
            None => Err(router::RoutesError {
                file: "(none)".into(),
                line: 0,
                field: "file".into(),
                message: "no routes file in use: start serve with --routes FILE".into(),
            }),
        }
    }

    /// Starts from a TLS directory holding `ca.pem`, `controller.pem`,
    /// `controller.key`, accepting agents at once.
    pub async fn start_from_dir(
        config: ClusterConfig,
        listen: SocketAddr,
        http: SocketAddr,
        token: String,
        dir: &Path,
    ) -> Result<Controller, StartError> {
        let mut c = Self::prepare_from_dir(
            config,
            rest::serve::RestLimits::default(),
            listen,
            http,
            token,
            dir,
        )
        .await?;
        c.accept_agents().await?;
        Ok(c)
    }

    /// As [`Controller::prepare_with`], from a TLS directory.
    pub async fn prepare_from_dir(
        config: ClusterConfig,
        limits: rest::serve::RestLimits,
        listen: SocketAddr,
        http: SocketAddr,
        token: String,
        dir: &Path,
    ) -> Result<Controller, StartError> {
        let read = |f: &str| {
            std::fs::read(dir.join(f)).map_err(|source| StartError::TlsFile {
                path: dir.join(f),
                dir: dir.to_owned(),
                source,
            })
        };
        Self::prepare_with(
            config,
            limits,
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
