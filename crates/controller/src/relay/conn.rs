//! RELAY connections: accept (wss, or ws as a development option), the
//! WebSocket handshake at `/`, then a reader that drives `switchy-relay`'s
//! session and hands call-control requests to the hub, and a writer that
//! owns the socket's sending half.

use super::hub::HubMsg;
use super::{Out, RelayStats};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use switchy_relay::rpc::{self, MAX_FRAME_BYTES};
use switchy_relay::schema::SchemaIndex;
use switchy_relay::session::{Action, Gate, Session};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const OUT_QUEUE: usize = 1024;
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// Accept-loop settings.
#[derive(Clone)]
pub struct Accept {
    /// wss.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Credentials and protocol strings.
    pub gate: Arc<Gate>,
    /// Params schemas.
    pub schemas: Arc<SchemaIndex>,
    /// The hub.
    pub hub: mpsc::Sender<HubMsg>,
    /// Counters.
    pub stats: Arc<RelayStats>,
    /// Most sessions at once.
    pub max_sessions: usize,
}

/// Accepts until the task is aborted.
pub async fn accept_loop(listener: TcpListener, a: Accept) {
    let slots = Arc::new(Semaphore::new(a.max_sessions.max(1)));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("RELAY accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            a.stats.refused.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let a = a.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match a.tls.clone() {
                None => serve(tcp, a).await,
                Some(acc) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, acc.accept(tcp)).await {
                    Ok(Ok(s)) => serve(s, a).await,
                    _ => {
                        a.stats.refused.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(%peer, "RELAY TLS handshake failed or timed out");
                    }
                },
            }
        });
    }
}

#[allow(clippy::result_large_err)]
fn check_path(req: &Request, resp: Response) -> Result<Response, ErrorResponse> {
    if req.uri().path() == "/" {
        return Ok(resp);
    }
    let mut e = ErrorResponse::new(Some("RELAY is served at /\n".into()));
    *e.status_mut() = tungstenite::http::StatusCode::NOT_FOUND;
    Err(e)
}

async fn serve<S>(stream: S, a: Accept)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let cfg = WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES))
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0);
    let ws = match tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        tokio_tungstenite::accept_hdr_async_with_config(stream, check_path, Some(cfg)),
    )
    .await
    {
        Ok(Ok(ws)) => ws,
        _ => {
            a.stats.refused.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let conn = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::channel::<Out>(OUT_QUEUE);
    let writer = tokio::spawn(async move {
        while let Some(o) = rx.recv().await {
            match o {
                // A client that takes nothing for this long is gone.
                Out::Frame(f) => {
                    match tokio::time::timeout(
                        WRITE_TIMEOUT,
                        sink.send(Message::text(f.to_string())),
                    )
                    .await
                    {
                        Ok(Ok(())) => {}
                        _ => break,
                    }
                }
                Out::Close => {
                    let _ = sink.close().await;
                    break;
                }
            }
        }
    });
    let mut session = Session::new(uuid::Uuid::new_v4().simple().to_string());
    let mut protocol: Option<String> = None;
    'read: while let Some(msg) = stream.next().await {
        let text = match msg {
            Ok(Message::Text(t)) => t,
            Ok(Message::Binary(_)) => {
                let e = rpc::error(
                    &Value::Null,
                    rpc::ErrorCode::InvalidRequest,
                    "binary frames are not RELAY",
                );
                if tx.send(Out::Frame(e)).await.is_err() {
                    break;
                }
                continue;
            }
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => continue,
        };
        let frame: Value = match serde_json::from_str(text.as_str()) {
            Ok(v) => v,
            Err(e) => {
                if tx
                    .send(Out::Frame(Session::unparsable(&e.to_string())))
                    .await
                    .is_err()
                {
                    break;
                }
                continue;
            }
        };
        let before = session.contexts.clone();
        let mut actions = session.handle(&frame, &a.schemas, &a.gate);
        // The hub learns of a session before its client reads the connect
        // result: a call offered right after must find it.
        actions.sort_by_key(|x| !matches!(x, Action::Connected { .. }));
        for action in actions {
            match action {
                Action::Send(v) => {
                    a.stats.requests.fetch_add(1, Ordering::Relaxed);
                    if tx.send(Out::Frame(v)).await.is_err() {
                        break 'read;
                    }
                }
                Action::Execute(cmd) => {
                    a.stats.requests.fetch_add(1, Ordering::Relaxed);
                    let Some(p) = protocol.clone() else { continue };
                    let (reply, rx) = oneshot::channel();
                    let call_id = cmd
                        .params
                        .get("call_id")
                        .and_then(|v| v.as_str())
                        .unwrap_or("")
                        .to_owned();
                    tracing::debug!(method = %cmd.method, %call_id, "RELAY request");
                    if a.hub
                        .send(HubMsg::Command {
                            protocol: p,
                            cmd,
                            reply,
                        })
                        .await
                        .is_err()
                    {
                        break 'read;
                    }
                    // The hub writes the response itself, ahead of the events
                    // it leads to; the next frame is read once it has.
                    if rx.await.is_err() {
                        break 'read;
                    }
                }
                Action::Connected { protocol: p, .. } => {
                    protocol = Some(p.clone());
                    let msg = HubMsg::Attach {
                        protocol: p,
                        project: session.project().unwrap_or("").to_owned(),
                        contexts: session.contexts.iter().cloned().collect(),
                        out: tx.clone(),
                        conn,
                    };
                    if a.hub.send(msg).await.is_err() {
                        break 'read;
                    }
                }
                Action::Acked { .. } => {}
                Action::Close => {
                    let _ = tx.send(Out::Close).await;
                    break 'read;
                }
            }
        }
        if session.contexts != before
            && let Some(p) = &protocol
        {
            let msg = HubMsg::Contexts {
                protocol: p.clone(),
                contexts: session.contexts.iter().cloned().collect(),
            };
            if a.hub.send(msg).await.is_err() {
                break;
            }
        }
    }
    if let Some(p) = protocol {
        let _ = a.hub.send(HubMsg::Detach { protocol: p, conn }).await;
    }
    let _ = tx.send(Out::Close).await;
    drop(tx);
    let _ = writer.await;
}
