//! The RELAY WebSocket: accept (plain or TLS), the handshake at `/`, then
//! per connection a reader that drives the sans-IO session and a writer
//! that owns the socket's sending half and journals each frame it writes.

use super::journal::Direction;
use super::state::{Out, SessionEntry, SessionInfo, Shared, lock};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use switchy_relay::rpc::{self, MAX_FRAME_BYTES};
use switchy_relay::scenario::{self, Scheduled};
use switchy_relay::session::{Action, Session};
use switchy_relay::synth;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

/// How long a client has to finish the TLS and WebSocket handshakes.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Frames queued for one session's writer.
const OUT_QUEUE: usize = 1024;

/// Accept-loop settings.
#[derive(Clone)]
pub struct Accept {
    /// TLS, for wss.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Most sessions at once.
    pub max_sessions: usize,
    /// Ping every session this often (None: never).
    pub ping_every: Option<Duration>,
}

/// Accepts until the listener fails or the task is aborted.
pub async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, cfg: Accept) {
    let slots = Arc::new(Semaphore::new(cfg.max_sessions.max(1)));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and the like: back off instead of spinning.
                tracing::warn!("RELAY accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            shared.stats.refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                "RELAY: refusing {peer}: --max-sessions {} reached",
                cfg.max_sessions
            );
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let shared = shared.clone();
        let cfg = cfg.clone();
        tokio::spawn(async move {
            let _permit = permit;
            shared.stats.connections.fetch_add(1, Ordering::Relaxed);
            match cfg.tls.clone() {
                None => serve(tcp, peer, shared, cfg.ping_every).await,
                Some(acc) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, acc.accept(tcp)).await {
                    Ok(Ok(tls)) => serve(tls, peer, shared, cfg.ping_every).await,
                    Ok(Err(e)) => {
                        shared
                            .stats
                            .handshake_failures
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::info!("RELAY TLS handshake from {peer} failed: {e}");
                    }
                    Err(_) => {
                        shared
                            .stats
                            .handshake_failures
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::info!("RELAY TLS handshake from {peer} timed out");
                    }
                },
            }
        });
    }
}

/// Frames up to the SDKs' 10 MiB; small socket buffers, because RELAY
/// frames are small and a mock holds thousands of sessions (tungstenite's
/// 128 KiB defaults cost ~145 KiB per idle session).
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES))
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0)
}

/// Only `/` is RELAY.
#[allow(clippy::result_large_err)]
fn check_path(req: &Request, resp: Response) -> Result<Response, ErrorResponse> {
    if req.uri().path() == "/" {
        return Ok(resp);
    }
    let mut e = ErrorResponse::new(Some(format!(
        "RELAY is served at /, not {}\n",
        req.uri().path()
    )));
    *e.status_mut() = tungstenite::http::StatusCode::NOT_FOUND;
    Err(e)
}

async fn serve<S>(stream: S, peer: SocketAddr, shared: Arc<Shared>, ping_every: Option<Duration>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let hs = tokio_tungstenite::accept_hdr_async_with_config(stream, check_path, Some(ws_config()));
    let ws = match tokio::time::timeout(HANDSHAKE_TIMEOUT, hs).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            shared
                .stats
                .handshake_failures
                .fetch_add(1, Ordering::Relaxed);
            tracing::info!("RELAY WebSocket handshake from {peer} failed: {e}");
            return;
        }
        Err(_) => {
            shared
                .stats
                .handshake_failures
                .fetch_add(1, Ordering::Relaxed);
            tracing::info!("RELAY WebSocket handshake from {peer} timed out");
            return;
        }
    };
    let id = uuid::Uuid::new_v4().simple().to_string();
    let connection_id = format!("conn-{}", &id[..12]);
    let (tx, rx) = mpsc::channel(OUT_QUEUE);
    let entry = Arc::new(SessionEntry {
        info: std::sync::Mutex::new(SessionInfo {
            id: id.clone(),
            connection_id: connection_id.clone(),
            connected_at: switchy_relay::now_secs(),
            peer_addr: peer.to_string(),
            protocol_string: None,
            session_restored: false,
            contexts: Vec::new(),
            unacked: 0,
        }),
        tx: tx.clone(),
        requests_sent: Default::default(),
        responses_received: Default::default(),
    });
    lock(&shared.sessions).insert(id.clone(), entry.clone());
    tracing::debug!("RELAY session {id} ({connection_id}) from {peer}");

    let (sink, stream) = ws.split();
    let writer = tokio::spawn(write_loop(sink, rx, shared.clone(), entry.clone()));
    let pinger = ping_every.map(|every| {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut t = tokio::time::interval(every);
            t.tick().await;
            loop {
                t.tick().await;
                if tx
                    .send(Out::Frame(rpc::request("signalwire.ping", json!({})), None))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        })
    });
    read_loop(stream, tx, &shared, &entry, Session::new(id.clone())).await;
    lock(&shared.sessions).remove(&id);
    if let Some(p) = pinger {
        p.abort();
    }
    let _ = writer.await;
    tracing::debug!("RELAY session {id} closed");
}

async fn write_loop<S>(
    mut sink: S,
    mut rx: mpsc::Receiver<Out>,
    shared: Arc<Shared>,
    entry: Arc<SessionEntry>,
) where
    S: futures_util::Sink<Message, Error = tungstenite::Error> + Unpin,
{
    let (cid, sid) = {
        let i = lock(&entry.info);
        (i.connection_id.clone(), i.id.clone())
    };
    while let Some(out) = rx.recv().await {
        match out {
            Out::Frame(frame, done) => {
                if frame.get("method").is_some() && frame.get("id").is_some() {
                    entry.requests_sent.fetch_add(1, Ordering::Relaxed);
                }
                shared.journal_send(&frame, &cid, &sid);
                let ok = sink.send(Message::text(frame.to_string())).await.is_ok();
                if let Some(d) = done {
                    let _ = d.send(ok);
                }
                if !ok {
                    break;
                }
            }
            Out::Close => {
                let _ = sink.close().await;
                break;
            }
        }
    }
}

async fn read_loop<S>(
    mut stream: S,
    tx: mpsc::Sender<Out>,
    shared: &Arc<Shared>,
    entry: &Arc<SessionEntry>,
    mut session: Session,
) where
    S: futures_util::Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    let (cid, sid) = (lock(&entry.info).connection_id.clone(), session.id.clone());
    while let Some(msg) = stream.next().await {
        let text = match msg {
            Ok(Message::Text(t)) => t,
            Ok(Message::Binary(_)) => {
                let e = rpc::error(
                    &Value::Null,
                    rpc::ErrorCode::InvalidRequest,
                    "binary frames are not RELAY: send JSON-RPC as text",
                );
                if tx.send(Out::Frame(e, None)).await.is_err() {
                    return;
                }
                continue;
            }
            Ok(Message::Close(_)) => break,
            Ok(_) => continue,
            Err(e) => {
                tracing::info!("RELAY session {sid}: {e}");
                break;
            }
        };
        let frame: Value = match serde_json::from_str(text.as_str()) {
            Ok(v) => v,
            Err(e) => {
                shared.journal.record(
                    Direction::Recv,
                    &Value::String(text.to_string()),
                    &cid,
                    &sid,
                );
                shared.stats.errors.fetch_add(1, Ordering::Relaxed);
                if tx
                    .send(Out::Frame(Session::unparsable(&e.to_string()), None))
                    .await
                    .is_err()
                {
                    return;
                }
                continue;
            }
        };
        shared.journal.record(Direction::Recv, &frame, &cid, &sid);
        for action in session.handle(&frame, &shared.schemas, &shared.gate) {
            let out = match action {
                Action::Send(v) => {
                    shared.stats.requests.fetch_add(1, Ordering::Relaxed);
                    if v.get("error").is_some() {
                        shared.stats.errors.fetch_add(1, Ordering::Relaxed);
                    }
                    v
                }
                Action::Execute(cmd) => {
                    shared.stats.requests.fetch_add(1, Ordering::Relaxed);
                    let result = synth::synthesize(&cmd.method, &cmd.params, &shared.schemas);
                    let follow = scripted(shared, &cmd.method, &cmd.params, &sid);
                    if let Some(r) = cmd.ack(result)
                        && tx.send(Out::Frame(r, None)).await.is_err()
                    {
                        return;
                    }
                    for frames in follow {
                        tokio::spawn(play(tx.clone(), frames));
                    }
                    continue;
                }
                Action::Connected { protocol, restored } => {
                    let mut i = lock(&entry.info);
                    i.protocol_string = Some(protocol);
                    i.session_restored = restored;
                    i.contexts = session.contexts.iter().cloned().collect();
                    continue;
                }
                Action::Acked { .. } => {
                    entry.responses_received.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                Action::Close => {
                    let _ = tx.send(Out::Close).await;
                    return;
                }
            };
            if tx.send(Out::Frame(out, None)).await.is_err() {
                return;
            }
        }
        // signalwire.receive changes the contexts.
        let mut i = lock(&entry.info);
        if i.contexts.len() != session.contexts.len() {
            i.contexts = session.contexts.iter().cloned().collect();
        }
    }
    let _ = tx.send(Out::Close).await;
}

/// The scripted events that follow `method`: its armed scenario, and for
/// a dial the dance armed for its tag.
fn scripted(shared: &Shared, method: &str, params: &Value, session: &str) -> Vec<Vec<Scheduled>> {
    let mut store = lock(&shared.scenarios);
    let mut out = Vec::new();
    if method == "calling.dial" {
        let tag = params.get("tag").and_then(Value::as_str);
        if let Some(d) = store.pop_dial(tag, session) {
            out.push(scenario::dial_frames(&d, tag));
        }
    }
    if let Some(s) = store.pop_method(method, session) {
        out.push(scenario::method_frames(method, &s, params));
    }
    out
}

/// Sends scheduled frames in order, each after its delay; stops when the
/// session closes.
pub async fn play(tx: mpsc::Sender<Out>, frames: Vec<Scheduled>) {
    for s in frames {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(s.delay_ms)) => {}
            () = tx.closed() => return,
        }
        if tx.send(Out::Frame(s.frame, None)).await.is_err() {
            return;
        }
    }
}
