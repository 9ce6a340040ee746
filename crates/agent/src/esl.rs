//! An async ESL client on top of switchy-protocol's codec: one task owns the
//! socket, replies are matched to a FIFO of pending commands, everything
//! else goes to the event channel.

use std::collections::VecDeque;
use std::time::Duration;
use switchy_protocol::esl::{Command, Decoder, Event, EventFormat, Message};

/// An event ready to relay: its name and its decoded headers in the packed
/// wire layout (no index is built on the agent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayEvent {
    /// `Event-Name`.
    pub name: String,
    /// Packed headers (`wire::pack_headers` layout), or when `plain` the
    /// plain event text as FreeSWITCH sent it.
    pub packed: Vec<u8>,
    /// Body (None when `plain`).
    pub body: Option<Vec<u8>>,
    /// `packed` holds the plain event text (see `wire::WireEvent::plain`).
    pub plain: bool,
}

impl RelayEvent {
    /// From a decoded event.
    pub fn from_event(e: &Event) -> Self {
        RelayEvent {
            name: e.event_name().unwrap_or("").to_owned(),
            packed: e.headers.to_packed(),
            body: e.body.clone(),
            plain: false,
        }
    }
}
use crate::outbox::now_us;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

/// Why ESL is unusable.
#[derive(Debug, thiserror::Error)]
pub enum EslError {
    /// TCP connect failed.
    #[error(
        "cannot connect to FreeSWITCH ESL at {addr}: {source} (is FreeSWITCH running with mod_event_socket?)"
    )]
    Connect {
        /// Address.
        addr: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The password was refused.
    #[error("FreeSWITCH refused the ESL password: fix [esl] password_file / SWITCHY_ESL_PASSWORD")]
    Auth,
    /// The connection broke.
    #[error("ESL connection lost: {0}")]
    Lost(String),
    /// A frame could not be decoded.
    #[error("ESL protocol error: {0}")]
    Protocol(String),
}

/// A reply and the agent clock (µs since the epoch) when its command was
/// written to the socket.
type Reply = (Result<String, String>, u64);
type Pending = oneshot::Sender<Reply>;

/// A handle to send commands over the connection.
#[derive(Clone)]
pub struct EslHandle {
    tx: mpsc::Sender<(Command, Pending)>,
    in_flight: Arc<AtomicUsize>,
}

impl EslHandle {
    /// Sends a command; returns FreeSWITCH's reply text (`api/response` body or
    /// `Reply-Text`), or an error when the connection is gone.
    pub async fn send(&self, cmd: Command, timeout: Duration) -> Result<String, String> {
        self.send_timed(cmd, timeout).await.0
    }

    /// As [`EslHandle::send`], with the agent clock (µs) when the command
    /// was written to FreeSWITCH (0 when it was not).
    pub async fn send_timed(&self, cmd: Command, timeout: Duration) -> Reply {
        let (tx, rx) = oneshot::channel();
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let _done = InFlight(&self.in_flight);
        if self.tx.send((cmd, tx)).await.is_err() {
            return (Err("ESL connection is down".to_string()), 0);
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => (Err("ESL connection lost before the reply".into()), 0),
            Err(_) => (
                Err(format!("no reply from FreeSWITCH within {timeout:?}")),
                0,
            ),
        }
    }

    /// Commands sent on this connection and not answered yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// `api <command> <args>`.
    pub async fn api(
        &self,
        command: &str,
        args: &str,
        timeout: Duration,
    ) -> Result<String, String> {
        let c = Command::api(command, args).map_err(|e| e.to_string())?;
        self.send(c, timeout).await
    }

    /// True while the connection task runs.
    pub fn is_open(&self) -> bool {
        !self.tx.is_closed()
    }
}

struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Connects, authenticates and subscribes `events` (none: a command-only
/// connection, on which FreeSWITCH serializes no events); returns the
/// command handle and the event stream (closed when the connection ends).
///
/// `poke`: write a lone LF this often. FreeSWITCH's listener thread sends
/// queued events only when it wakes, and it sleeps up to 20 ms in a poll
/// of the socket unless input arrives; an empty line wakes it (FreeSWITCH
/// discards it unread), so events reach the agent within `poke` instead of
/// up to 20 ms late on a connection that carries no commands.
pub async fn connect(
    host: &str,
    port: u16,
    password: &str,
    events: &[String],
    format: EventFormat,
    poke: Option<Duration>,
) -> Result<(EslHandle, mpsc::Receiver<RelayEvent>), EslError> {
    let addr = format!("{host}:{port}");
    let mut stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(&addr))
        .await
        .map_err(|_| EslError::Connect {
            addr: addr.clone(),
            source: std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"),
        })?
        .map_err(|source| EslError::Connect {
            addr: addr.clone(),
            source,
        })?;
    stream.set_nodelay(true).ok();
    let mut dec = Decoder::new();
    let mut buf = vec![0u8; 64 * 1024];
    // Greeting, then auth.
    let mut read_one =
        async |stream: &mut TcpStream, dec: &mut Decoder| -> Result<Message, EslError> {
            loop {
                if let Some(m) = dec
                    .next_message()
                    .map_err(|e| EslError::Protocol(e.to_string()))?
                {
                    return Ok(m);
                }
                let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
                    .await
                    .map_err(|_| EslError::Lost("no greeting/reply within 10 s".into()))?
                    .map_err(|e| EslError::Lost(e.to_string()))?;
                if n == 0 {
                    return Err(EslError::Lost("closed by FreeSWITCH".into()));
                }
                dec.feed(&buf[..n]);
            }
        };
    match read_one(&mut stream, &mut dec).await? {
        Message::AuthRequest => {}
        Message::RudeRejection(_) => {
            return Err(EslError::Lost(
                "FreeSWITCH's ACL rejected this address (apply-inbound-acl)".into(),
            ));
        }
        other => {
            return Err(EslError::Protocol(format!(
                "expected auth/request, got {other:?}"
            )));
        }
    }
    let auth = Command::auth(password).map_err(|_| EslError::Auth)?;
    stream
        .write_all(&auth.to_bytes())
        .await
        .map_err(|e| EslError::Lost(e.to_string()))?;
    match read_one(&mut stream, &mut dec).await? {
        Message::CommandReply(r) if r.result().is_ok() => {}
        _ => return Err(EslError::Auth),
    }
    let (names, subclasses) = split_custom(events);
    let sub = if names.is_empty() && subclasses.is_empty() {
        None
    } else {
        Some(
            Command::event(format, &names, &subclasses)
                .map_err(|e| EslError::Protocol(e.to_string()))?,
        )
    };
    if let Some(sub) = sub {
        stream
            .write_all(&sub.to_bytes())
            .await
            .map_err(|e| EslError::Lost(e.to_string()))?;
    }
    while !events.is_empty() {
        match read_one(&mut stream, &mut dec).await? {
            Message::CommandReply(r) => {
                if let Err(e) = r.result() {
                    return Err(EslError::Protocol(format!(
                        "event subscription refused: {}",
                        e.text
                    )));
                }
                break;
            }
            Message::Event(..) => continue,
            other => return Err(EslError::Protocol(format!("unexpected {other:?}"))),
        }
    }
    let (cmd_tx, cmd_rx) = mpsc::channel(1024);
    let (ev_tx, ev_rx) = mpsc::channel(16 * 1024);
    tokio::spawn(run(stream, dec, cmd_rx, ev_tx, poke));
    Ok((
        EslHandle {
            tx: cmd_tx,
            in_flight: Arc::default(),
        },
        ev_rx,
    ))
}

/// Splits event names into plain names and `CUSTOM a::b` subclasses
/// (`CUSTOM` itself is named when any subclass is).
pub fn split_custom(events: &[String]) -> (Vec<&str>, Vec<&str>) {
    let subclasses: Vec<&str> = events
        .iter()
        .filter_map(|e| e.strip_prefix("CUSTOM "))
        .map(str::trim)
        .collect();
    let names = events
        .iter()
        .filter(|e| !e.starts_with("CUSTOM "))
        .map(String::as_str)
        .collect();
    (names, subclasses)
}

async fn run(
    stream: TcpStream,
    mut dec: Decoder,
    mut cmds: mpsc::Receiver<(Command, Pending)>,
    events: mpsc::Sender<RelayEvent>,
    poke: Option<Duration>,
) {
    let (mut rd, mut wr) = stream.into_split();
    let mut poker = poke.map(|p| {
        let mut i = tokio::time::interval(p);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    let mut pending: VecDeque<(Pending, u64)> = VecDeque::new();
    let mut buf = vec![0u8; 256 * 1024];
    let reason = 'conn: loop {
        // Drain whole frames first.
        loop {
            // Plain events go straight to the packed relay form.
            let frame = match dec.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => break 'conn e.to_string(),
            };
            if frame.content_type() == Some("text/event-plain") {
                // Relayed as received: the controller decodes it, once.
                let text = frame.body.unwrap_or_default();
                let name = switchy_protocol::wire::plain_event_name(&text)
                    .unwrap_or_default()
                    .to_owned();
                let ev = RelayEvent {
                    name,
                    packed: text,
                    body: None,
                    plain: true,
                };
                if events.send(ev).await.is_err() {
                    break 'conn "event consumer gone".to_string();
                }
                continue;
            }
            match Message::from_frame(frame) {
                Ok(Message::Event(_, e)) => {
                    if events.send(RelayEvent::from_event(&e)).await.is_err() {
                        break 'conn "event consumer gone".to_string();
                    }
                }
                Ok(Message::CommandReply(r)) => {
                    let text = r.reply_text().unwrap_or("").to_owned();
                    if let Some((p, sent)) = pending.pop_front() {
                        let _ = p.send((Ok(text), sent));
                    }
                }
                Ok(Message::ApiResponse(a)) => {
                    if let Some((p, sent)) = pending.pop_front() {
                        let _ = p.send((Ok(a.text().into_owned()), sent));
                    }
                }
                Ok(Message::DisconnectNotice(f)) => {
                    break 'conn format!(
                        "FreeSWITCH disconnected: {}",
                        String::from_utf8_lossy(f.body.as_deref().unwrap_or_default()).trim()
                    );
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "undecodable event skipped"),
            }
        }
        tokio::select! {
            r = rd.read(&mut buf) => match r {
                Ok(0) => break 'conn "closed by FreeSWITCH".to_string(),
                Ok(n) => dec.feed(&buf[..n]),
                Err(e) => break 'conn e.to_string(),
            },
            c = cmds.recv() => match c {
                Some((cmd, reply)) => {
                    let sent = now_us();
                    if let Err(e) = wr.write_all(&cmd.to_bytes()).await {
                        let _ = reply.send((Err(format!("ESL write failed: {e}")), 0));
                        break 'conn e.to_string();
                    }
                    pending.push_back((reply, sent));
                }
                None => break 'conn "agent stopped".to_string(),
            },
            _ = async {
                match poker.as_mut() {
                    Some(p) => { p.tick().await; }
                    None => std::future::pending::<()>().await,
                }
            } => {
                if let Err(e) = wr.write_all(b"\n").await {
                    break 'conn e.to_string();
                }
            }
        }
    };
    tracing::info!(reason = %reason, "ESL connection ended");
    for (p, sent) in pending {
        let _ = p.send((Err(format!("ESL connection lost: {reason}")), sent));
    }
}
