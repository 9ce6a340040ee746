//! Serving REST so that abuse costs the controller little: a bound on open
//! connections (the excess is closed at once, not queued), a timeout for a
//! request's headers (also the idle time between keep-alive requests), a
//! bound on header bytes, optional TLS, and the client's address on every
//! request (for the failed-authentication throttle).

use axum::Router;
use axum::extract::ConnectInfo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tower::ServiceExt;

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// GET only: nodes, sessions, calls, metrics, routes.
    Read,
    /// Call control: originate, session actions, the Originator, apps.
    Control,
    /// Everything, including raw API commands (`POST /api/v1/api`) and
    /// route reloads.
    Admin,
}

impl Scope {
    /// The scope a request needs.
    pub fn needed(method: &axum::http::Method, path: &str) -> Scope {
        if method == axum::http::Method::GET {
            Scope::Read
        } else if path == "/api/v1/api" || path == "/api/v1/routes/reload" {
            Scope::Admin
        } else {
            Scope::Control
        }
    }
}

/// API commands `POST /api/v1/api` runs by default (`--api-allow` sets
/// another list; `*` allows any, which on FreeSWITCH includes `system`, a
/// shell).
pub const DEFAULT_API_ALLOW: &[&str] = &[
    "status",
    "show",
    "sofia",
    "version",
    "uptime",
    "global_getvar",
    "uuid_dump",
    "uuid_exists",
    "uuid_getvar",
    "hupall",
    "reloadxml",
    "sofia_contact",
];

/// How REST is served and who may do what.
#[derive(Clone)]
pub struct RestLimits {
    /// Open connections at most; more are closed as they arrive.
    pub max_connections: usize,
    /// A request's headers (or, between keep-alive requests, the next
    /// request) must arrive within this.
    pub header_timeout: Duration,
    /// Bytes of a request's head at most (larger: 431).
    pub max_header_bytes: usize,
    /// TLS, if set (`--http-tls-cert`, `--http-tls-key`).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Tokens besides the admin token, with their scopes.
    pub tokens: Vec<(Scope, String)>,
    /// Commands `POST /api/v1/api` may run (None: any).
    pub api_allow: Option<std::collections::BTreeSet<String>>,
}

impl Default for RestLimits {
    fn default() -> Self {
        RestLimits {
            max_connections: 512,
            header_timeout: Duration::from_secs(10),
            max_header_bytes: 16 << 10,
            tls: None,
            tokens: Vec::new(),
            api_allow: Some(DEFAULT_API_ALLOW.iter().map(|c| (*c).to_owned()).collect()),
        }
    }
}

impl std::fmt::Debug for RestLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestLimits")
            .field("max_connections", &self.max_connections)
            .field("header_timeout", &self.header_timeout)
            .field("max_header_bytes", &self.max_header_bytes)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// A rustls server config for REST from PEM files' contents.
pub fn tls_config(
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<Arc<rustls::ServerConfig>, switchy_link::TlsError> {
    switchy_link::tls::tcp_server_config(
        cert_pem,
        key_pem,
        "REST",
        "--http-tls-cert",
        &[b"http/1.1"],
    )
}

/// Connection counters, for `/metrics`.
#[derive(Debug, Default)]
pub struct RestStats {
    /// Connections open now.
    pub open: AtomicU64,
    /// Connections closed at once because `max_connections` were open.
    pub rejected: AtomicU64,
    /// Requests refused for a wrong or missing token.
    pub auth_failures: AtomicU64,
    /// Requests refused because their client failed to authenticate too
    /// often.
    pub auth_throttled: AtomicU64,
}

/// Serves `app` on `listener` until the task is aborted.
pub async fn serve(listener: TcpListener, app: Router, limits: RestLimits, stats: Arc<RestStats>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let acceptor = limits.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors, say: wait, do not spin.
                tracing::warn!(error = %e, "REST accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            stats.rejected.fetch_add(1, Ordering::Relaxed);
            drop(tcp);
            continue;
        };
        let (app, limits, stats, acceptor) =
            (app.clone(), limits.clone(), stats.clone(), acceptor.clone());
        tokio::spawn(async move {
            let _permit = permit;
            stats.open.fetch_add(1, Ordering::Relaxed);
            let svc = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(ConnectInfo(peer));
                    app.clone().oneshot(req)
                },
            );
            let mut b = hyper::server::conn::http1::Builder::new();
            b.timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_buf_size(limits.max_header_bytes.max(8192));
            match acceptor {
                None => {
                    let _ = b
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                        .await;
                }
                Some(a) => {
                    if let Ok(Ok(s)) =
                        tokio::time::timeout(limits.header_timeout, a.accept(tcp)).await
                    {
                        let _ = b
                            .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                            .await;
                    }
                }
            }
            stats.open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Failed authentications per client address: after [`THROTTLE_AFTER`]
/// failures within [`THROTTLE_WINDOW`], the client's requests get 429 for
/// [`THROTTLE_FOR`] (bounded memory: the table is cleared when huge).
#[derive(Debug, Default)]
pub struct AuthThrottle {
    clients:
        std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, (u32, std::time::Instant)>>,
}

/// Failures that start throttling.
pub const THROTTLE_AFTER: u32 = 20;
/// The window they are counted in.
pub const THROTTLE_WINDOW: Duration = Duration::from_secs(10);
/// How long a throttled client waits.
pub const THROTTLE_FOR: Duration = Duration::from_secs(30);

impl AuthThrottle {
    /// How long `ip` must still wait, if it is throttled.
    pub fn blocked(&self, ip: std::net::IpAddr) -> Option<Duration> {
        let g = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        let (n, since) = g.get(&ip)?;
        let age = since.elapsed();
        (*n >= THROTTLE_AFTER && age < THROTTLE_FOR).then(|| THROTTLE_FOR - age)
    }

    /// Counts a failure of `ip`.
    pub fn failed(&self, ip: std::net::IpAddr) {
        let mut g = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if g.len() > 100_000 {
            g.clear();
        }
        let now = std::time::Instant::now();
        let e = g.entry(ip).or_insert((0, now));
        let limit = if e.0 >= THROTTLE_AFTER {
            THROTTLE_FOR
        } else {
            THROTTLE_WINDOW
        };
        if now.duration_since(e.1) > limit {
            *e = (0, now);
        }
        e.0 += 1;
        if e.0 == THROTTLE_AFTER {
            // The block runs from the failure that started it.
            e.1 = now;
            tracing::warn!(client = %ip, "REST: {THROTTLE_AFTER} failed authentications in {}s; refusing this client for {}s", THROTTLE_WINDOW.as_secs(), THROTTLE_FOR.as_secs());
        }
    }
}

/// The client address of a request (set by [`serve`]).
pub fn peer(req: &axum::extract::Request) -> Option<SocketAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
}
