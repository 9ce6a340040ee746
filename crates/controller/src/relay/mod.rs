//! RELAY, SignalWire's call-control protocol, served by the controller
//! (`serve --relay-listen`): SignalWire SDK apps control calls on your own
//! FreeSWITCH nodes. A route action `relay = "CONTEXT"` hands a parked
//! inbound call to the clients subscribed to that context; their commands
//! run on FreeSWITCH through the agents, and FreeSWITCH's events come back
//! as RELAY events. The protocol's envelope is `switchy-relay`'s sans-IO
//! session; [`hub`] owns the calls, [`conn`] the sockets.

pub mod conn;
pub mod hub;
pub mod media;

use crate::cluster::Cluster;
use crate::pipeline::Feed;
use hub::{Hub, HubConfig, HubMsg, OfferOutcome};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchy_relay::auth::{Credentials, ct_eq};
use tokio::sync::{mpsc, oneshot};

/// What a connection's writer is told.
#[derive(Debug)]
pub enum Out {
    /// Write this frame.
    Frame(Value),
    /// Close the socket.
    Close,
}

/// Projects and SHA-256 digests (hex) of their tokens, as the config holds
/// them; a presented token is hashed and compared in constant time.
#[derive(Clone, Debug, Default)]
pub struct Projects(pub Vec<(String, String)>);

/// SHA-256 (hex) of a token, as `[[relay.projects]] token_sha256` holds it.
pub fn token_digest(token: &str) -> String {
    switchy_link::tls::fingerprint(token.as_bytes())
}

impl Credentials for Projects {
    fn accepts(&self, project: &str, token: &str) -> bool {
        let digest = token_digest(token);
        self.0.iter().fold(false, |ok, (p, d)| {
            ok | (ct_eq(p.as_bytes(), project.as_bytes()) & ct_eq(d.as_bytes(), digest.as_bytes()))
        })
    }
}

/// RELAY settings.
#[derive(Clone)]
pub struct RelayConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// TLS (wss); `None` serves plain ws (a development option).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Who may connect.
    pub projects: Projects,
    /// The hub's settings.
    pub hub: HubConfig,
    /// Sessions at once at most.
    pub max_sessions: usize,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct RelayStats {
    /// Sessions connected now.
    pub sessions: AtomicU64,
    /// Requests answered.
    pub requests: AtomicU64,
    /// Events sent.
    pub events: AtomicU64,
    /// Connections refused (handshake, credentials, limit).
    pub refused: AtomicU64,
    /// Per context: offered, taken, answered, actions, ended.
    pub per_context: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// Requests answered with an error, per method.
    pub errors: Mutex<BTreeMap<String, u64>>,
    /// Sessions connected now per context they receive.
    pub sessions_by_context: Mutex<BTreeMap<String, u64>>,
}

impl RelayStats {
    /// Counts `what` for `context`.
    pub fn count(&self, context: &str, what: &'static str) {
        *self
            .per_context
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((context.to_owned(), what))
            .or_insert(0) += 1;
    }

    /// Counts an error answer to `method`.
    pub fn count_err(&self, method: &str) {
        *self
            .errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(method.to_owned())
            .or_insert(0) += 1;
    }

    /// The `/metrics` lines.
    pub fn prometheus(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# HELP switchy_relay_sessions RELAY sessions connected now.\n# TYPE switchy_relay_sessions gauge\nswitchy_relay_sessions {}",
            self.sessions.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            s,
            "# HELP switchy_relay_requests_total RELAY requests answered.\n# TYPE switchy_relay_requests_total counter\nswitchy_relay_requests_total {}",
            self.requests.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            s,
            "# HELP switchy_relay_events_total RELAY events sent.\n# TYPE switchy_relay_events_total counter\nswitchy_relay_events_total {}",
            self.events.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            s,
            "# HELP switchy_relay_refused_total RELAY connections refused.\n# TYPE switchy_relay_refused_total counter\nswitchy_relay_refused_total {}",
            self.refused.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            s,
            "# HELP switchy_relay_calls_total RELAY calls by context and what happened: offered, taken (by a client), answered, actions (requests on them), ended.\n# TYPE switchy_relay_calls_total counter"
        );
        for ((ctx, what), n) in self
            .per_context
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                s,
                "switchy_relay_calls_total{{context=\"{}\",what=\"{what}\"}} {n}",
                crate::rest::metrics::esc(ctx)
            );
        }
        let _ = writeln!(
            s,
            "# HELP switchy_relay_context_sessions RELAY sessions connected now, by context they receive.\n# TYPE switchy_relay_context_sessions gauge"
        );
        for (c, n) in self
            .sessions_by_context
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                s,
                "switchy_relay_context_sessions{{context=\"{}\"}} {n}",
                crate::rest::metrics::esc(c)
            );
        }
        let _ = writeln!(
            s,
            "# HELP switchy_relay_errors_total RELAY requests answered with an error, by method.\n# TYPE switchy_relay_errors_total counter"
        );
        for (m, n) in self.errors.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(
                s,
                "switchy_relay_errors_total{{method=\"{}\"}} {n}",
                crate::rest::metrics::esc(m)
            );
        }
        s
    }
}

/// A running RELAY server.
#[derive(Clone)]
pub struct Relay {
    tx: mpsc::Sender<HubMsg>,
    /// Its counters.
    pub stats: Arc<RelayStats>,
    /// Where it listens.
    pub addr: SocketAddr,
    offer_timeout: Duration,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay").field("addr", &self.addr).finish()
    }
}

impl Relay {
    /// Binds `cfg.listen` and starts the hub.
    pub async fn start(cluster: &Cluster, cfg: RelayConfig) -> Result<Relay, std::io::Error> {
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!(
                        "binding RELAY on {}: {e} (choose another --relay-listen)",
                        cfg.listen
                    ),
                )
            })?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(RelayStats::default());
        let (tx, rx) = mpsc::channel(1024);
        let events = cluster.subscribe("relay", Feed::Everything, 4096);
        let wanted: Vec<String> = hub::EVENTS.iter().map(|e| (*e).to_owned()).collect();
        cluster.set_demand("relay", &wanted).await;
        let offer_timeout = cfg.hub.offer_timeout;
        let hub = Hub::new(cluster.clone(), cfg.hub.clone(), stats.clone(), tx.clone());
        tokio::spawn(hub.run(rx, events));
        let gate = Arc::new(switchy_relay::session::Gate::new(Box::new(
            cfg.projects.clone(),
        )));
        tokio::spawn(conn::accept_loop(
            listener,
            conn::Accept {
                tls: cfg.tls.clone().map(tokio_rustls::TlsAcceptor::from),
                gate,
                schemas: Arc::new(switchy_relay::schema::SchemaIndex::embedded()),
                hub: tx.clone(),
                stats: stats.clone(),
                max_sessions: cfg.max_sessions,
            },
        ));
        tracing::info!(%addr, tls = cfg.tls.is_some(), "RELAY listening");
        Ok(Relay {
            tx,
            stats,
            addr,
            offer_timeout,
        })
    }

    /// Offers a parked inbound call to `context`'s clients and waits (up to
    /// the offer timeout) for one to take it.
    pub async fn offer(
        &self,
        uuid: &str,
        node: &str,
        context: &str,
        from: &str,
        to: &str,
    ) -> OfferOutcome {
        let (done, rx) = oneshot::channel();
        let msg = HubMsg::Offer {
            uuid: uuid.to_owned(),
            node: node.to_owned(),
            context: context.to_owned(),
            from: from.to_owned(),
            to: to.to_owned(),
            done,
        };
        if self.tx.send(msg).await.is_err() {
            return OfferOutcome::Declined;
        }
        match tokio::time::timeout(self.offer_timeout, rx).await {
            Ok(Ok(o)) => o,
            Ok(Err(_)) => OfferOutcome::Declined,
            // The client holds the call without acting on it yet: it is its.
            Err(_) => OfferOutcome::Taken,
        }
    }

    /// Sends `signalwire.disconnect` to every client and closes them.
    pub async fn shutdown(&self) {
        let (done, rx) = oneshot::channel();
        if self.tx.send(HubMsg::Shutdown(done)).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), rx).await;
        }
    }
}
