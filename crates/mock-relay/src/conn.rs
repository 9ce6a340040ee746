//! ESL connections: one reader and one writer task per client; commands go
//! to the node actor one at a time, as FreeSWITCH serves them.

use crate::node::{Cluster, NodeInfo, NodeMsg, Out};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use switchy_protocol::esl::{CommandDecoder, server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

/// Accepts ESL clients for one node until the task is aborted.
pub async fn accept_loop(listener: TcpListener, info: Arc<NodeInfo>, cluster: Arc<Cluster>) {
    loop {
        let (stream, addr) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(node = info.index, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let refuse_until = info.refuse_until_ms.load(Ordering::Relaxed);
        if refuse_until > crate::util::now_us() / 1000 {
            // Fault: refuse new connections (closed at once).
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let id = cluster.next_conn.fetch_add(1, Ordering::Relaxed);
        let node_tx = cluster.senders[info.index].clone();
        let info = info.clone();
        tokio::spawn(async move {
            serve(stream, addr, id, info, node_tx).await;
        });
    }
}

async fn serve(
    stream: TcpStream,
    addr: std::net::SocketAddr,
    id: u64,
    info: Arc<NodeInfo>,
    node: mpsc::UnboundedSender<NodeMsg>,
) {
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Out>();
    if node
        .send(NodeMsg::Connect {
            id,
            addr,
            tx: tx.clone(),
        })
        .is_err()
    {
        return;
    }
    let per_frame = info.frame_per_write.load(Ordering::Relaxed);
    let writer = tokio::spawn(async move {
        let mut buf = Vec::with_capacity(64 * 1024);
        while let Some(first) = rx.recv().await {
            let mut close = first.append_to(&mut buf);
            // Coalesce whatever else is queued into one write (unless each
            // frame goes on its own, as FreeSWITCH writes them).
            while !close && !per_frame && buf.len() < 1 << 20 {
                match rx.try_recv() {
                    Ok(out) => close = out.append_to(&mut buf),
                    Err(_) => break,
                }
            }
            if !buf.is_empty() && wr.write_all(&buf).await.is_err() {
                break;
            }
            buf.clear();
            if close {
                let _ = wr.shutdown().await;
                break;
            }
        }
    });
    let mut dec = CommandDecoder::new();
    let mut chunk = vec![0u8; 16 * 1024];
    'outer: loop {
        let n = tokio::select! {
            r = rd.read(&mut chunk) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            _ = tx.closed() => break,
        };
        dec.feed(&chunk[..n]);
        loop {
            match dec.next_command() {
                Ok(Some(cmd)) => {
                    let delay = info.reply_delay_ms.load(Ordering::Relaxed);
                    if delay > 0 {
                        tokio::time::sleep(Duration::from_millis(delay)).await;
                    }
                    let (done_tx, done_rx) = oneshot::channel();
                    if node
                        .send(NodeMsg::Command {
                            id,
                            cmd,
                            done: done_tx,
                        })
                        .is_err()
                    {
                        break 'outer;
                    }
                    match done_rx.await {
                        Ok(false) => {}
                        _ => break 'outer,
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    // FreeSWITCH drops such a connection with the goodbye notice.
                    tracing::debug!(node = info.index, conn = id, error = %e, "bad command framing; closing");
                    let mut f = Vec::new();
                    server::encode_disconnect_notice(server::GOODBYE, &mut f);
                    let _ = tx.send(Out::Frame(f));
                    let _ = tx.send(Out::Close);
                    break 'outer;
                }
            }
        }
    }
    let _ = node.send(NodeMsg::Disconnect { id });
    let _ = tx.send(Out::Close);
    let _ = writer.await;
}
