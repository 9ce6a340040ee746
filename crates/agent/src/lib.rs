//! switchy-agent: one FreeSWITCH's Event Socket relayed to the controller
//! over QUIC with mutual TLS. It makes no call-control decisions: it
//! forwards events in order, runs the commands it is sent, reconnects both
//! sides with capped exponential backoff and jitter, buffers events while the
//! controller is away, and re-syncs live channels after any reconnect.
#![forbid(unsafe_code)]

pub mod config;
pub mod esl;
pub mod outbox;
pub mod tls;

pub use config::AgentConfig;

use outbox::{Outbox, now_us};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use switchy_protocol::esl::{Command, EventFormat, SendMsg};
use switchy_protocol::wire::{
    self, AgentMsg, CommandKind, CommandRequest, CommandResponse, ControllerMsg, EslState, Hello,
    Profile, Snapshot, WIRE_VERSION,
};
use tokio::sync::{Mutex, Notify};
use tokio::task::JoinHandle;

/// Shared state of a running agent.
pub struct AgentState {
    /// The configuration.
    pub config: AgentConfig,
    /// Buffered, unacknowledged events.
    pub outbox: Outbox,
    esl: Mutex<Option<esl::EslHandle>>,
    status: std::sync::Mutex<EslState>,
    /// Woken when the ESL status changes.
    pub status_changed: Notify,
    snapshot_needed: AtomicBool,
    core_uuid: std::sync::Mutex<String>,
    /// Events subscribed on ESL: the configured ones plus what the
    /// controller asked for.
    subscribed: std::sync::Mutex<Vec<String>>,
    instance: String,
    /// Wire version announced in Hello (tests use another to check refusal).
    pub wire_version: u32,
}

impl AgentState {
    /// The current ESL state.
    pub fn status(&self) -> EslState {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_status(&self, s: EslState) {
        *self.status.lock().unwrap_or_else(|p| p.into_inner()) = s;
        self.status_changed.notify_waiters();
    }
}

/// A running agent; dropping it stops it.
pub struct Agent {
    /// Its shared state.
    pub state: Arc<AgentState>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Agent {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Agent {
    /// Starts both connection loops.
    pub fn start(config: AgentConfig) -> anyhow::Result<Agent> {
        Self::start_with_version(config, WIRE_VERSION)
    }

    /// Starts with a given wire version (for testing the handshake).
    pub fn start_with_version(config: AgentConfig, wire_version: u32) -> anyhow::Result<Agent> {
        let client = tls::client_config(&config.ca_pem, &config.cert_pem, &config.key_pem)?;
        let events = config.events.clone();
        let state = Arc::new(AgentState {
            outbox: Outbox::new(config.max_events, config.read_ahead),
            config,
            esl: Mutex::new(None),
            status: std::sync::Mutex::new(EslState::Down("not connected yet".into())),
            status_changed: Notify::new(),
            snapshot_needed: AtomicBool::new(true),
            core_uuid: std::sync::Mutex::new(String::new()),
            subscribed: std::sync::Mutex::new(events),
            instance: uuid::Uuid::new_v4().to_string(),
            wire_version,
        });
        let tasks = vec![
            tokio::spawn(esl_loop(state.clone())),
            tokio::spawn(controller_loop(state.clone(), client)),
        ];
        Ok(Agent { state, tasks })
    }

    /// Stops both loops.
    pub fn stop(self) {}
}

/// Capped exponential backoff with full jitter.
struct Backoff {
    min: Duration,
    max: Duration,
    cur: Duration,
    rng: u64,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max,
            cur: min,
            rng: now_us() | 1,
        }
    }

    fn next(&mut self) -> Duration {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let cap = self.cur.as_millis().max(1) as u64;
        let d = Duration::from_millis(cap / 2 + self.rng % (cap / 2 + 1));
        self.cur = (self.cur * 2).min(self.max);
        d
    }

    fn reset(&mut self) {
        self.cur = self.min;
    }
}

async fn esl_loop(st: Arc<AgentState>) {
    let c = &st.config;
    let mut backoff = Backoff::new(c.backoff_min, c.backoff_max);
    loop {
        let events = st
            .subscribed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let (handle, mut events) =
            match esl::connect(&c.esl_host, c.esl_port, &c.esl_password, &events).await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(node = %c.node_id, error = %e, "ESL connect failed; retrying");
                    st.set_status(EslState::Down(e.to_string()));
                    if matches!(e, esl::EslError::Auth) {
                        // Do not hot-loop on a wrong password.
                        tokio::time::sleep(c.backoff_max).await;
                    } else {
                        tokio::time::sleep(backoff.next()).await;
                    }
                    continue;
                }
            };
        backoff.reset();
        let t = Duration::from_secs(5);
        let core_uuid = handle
            .api("global_getvar", "core_uuid", t)
            .await
            .unwrap_or_default()
            .trim()
            .to_owned();
        let hostname = handle
            .api("global_getvar", "hostname", t)
            .await
            .unwrap_or_default()
            .trim()
            .to_owned();
        let profiles =
            parse_sofia_status(&handle.api("sofia", "status", t).await.unwrap_or_default());
        tracing::info!(node = %c.node_id, core_uuid = %core_uuid, hostname = %hostname, "ESL connected");
        *st.core_uuid.lock().unwrap_or_else(|p| p.into_inner()) = core_uuid.clone();
        *st.esl.lock().await = Some(handle.clone());
        st.snapshot_needed.store(true, Ordering::SeqCst);
        let up = EslState::Up {
            core_uuid,
            hostname,
            profiles,
        };
        st.set_status(up.clone());
        // Liveness probe: a FreeSWITCH that stops answering is degraded.
        let probe = {
            let st = st.clone();
            let handle = handle.clone();
            let up = up.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(st.config.status_probe).await;
                    match handle.api("status", "", st.config.status_timeout).await {
                        Ok(_) => {
                            if matches!(st.status(), EslState::Degraded(_)) {
                                st.set_status(up.clone());
                            }
                        }
                        Err(e) if handle.is_open() => {
                            if !matches!(st.status(), EslState::Degraded(_)) {
                                tracing::warn!(error = %e, "FreeSWITCH did not answer `status`: node degraded");
                                st.set_status(EslState::Degraded(e));
                            }
                        }
                        Err(_) => break,
                    }
                }
            })
        };
        while let Some(e) = events.recv().await {
            st.outbox.wait_not_behind().await;
            st.outbox.push(e);
        }
        probe.abort();
        *st.esl.lock().await = None;
        st.set_status(EslState::Down("ESL connection lost".into()));
        tracing::warn!(node = %c.node_id, "ESL connection lost; reconnecting");
        tokio::time::sleep(backoff.next()).await;
    }
}

/// Parses `sofia status` into profiles.
pub fn parse_sofia_status(text: &str) -> Vec<Profile> {
    text.lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split('\t').map(str::trim).collect();
            (cols.len() >= 3 && cols[1] == "profile").then(|| Profile {
                name: cols[0].to_owned(),
                url: cols[2].to_owned(),
            })
        })
        .collect()
}

async fn write_msg(send: &mut quinn::SendStream, msg: &AgentMsg) -> anyhow::Result<()> {
    let bytes = wire::encode(msg)?;
    send.write_all(&bytes).await?;
    Ok(())
}

/// Reads one length-prefixed message.
pub async fn read_frame<T: for<'de> serde::Deserialize<'de>>(
    recv: &mut quinn::RecvStream,
) -> anyhow::Result<T> {
    let mut len = [0u8; 4];
    recv.read_exact(&mut len).await?;
    let n = wire::frame_len(len, wire::MAX_FRAME)?;
    let mut payload = vec![0u8; n];
    recv.read_exact(&mut payload).await?;
    Ok(wire::decode(&payload)?)
}

async fn controller_loop(st: Arc<AgentState>, client: quinn::ClientConfig) {
    let c = &st.config;
    let mut backoff = Backoff::new(c.backoff_min, c.backoff_max);
    loop {
        match session(&st, &client).await {
            Ok(()) => {
                backoff.reset();
                tracing::warn!(node = %c.node_id, "controller connection closed; reconnecting");
            }
            Err(e) => {
                tracing::warn!(node = %c.node_id, error = %e, "controller session failed; retrying")
            }
        }
        tokio::time::sleep(backoff.next()).await;
    }
}

async fn session(st: &Arc<AgentState>, client: &quinn::ClientConfig) -> anyhow::Result<()> {
    let c = &st.config;
    let addr = tokio::net::lookup_host(&c.controller)
        .await?
        .next()
        .ok_or_else(|| anyhow::anyhow!("controller address {} does not resolve", c.controller))?;
    let bind: std::net::SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let mut endpoint = tls::quic_endpoint(bind, None)?;
    endpoint.set_default_client_config(client.clone());
    let conn = endpoint.connect(addr, &c.controller_name)?.await?;
    let (mut send, mut recv) = conn.open_bi().await?;
    let (core_uuid, hostname, profiles) = match st.status() {
        EslState::Up {
            core_uuid,
            hostname,
            profiles,
        } => (Some(core_uuid), Some(hostname), profiles),
        _ => (None, None, Vec::new()),
    };
    let hello = Hello {
        wire_version: st.wire_version,
        node_id: c.node_id.clone(),
        agent_version: env!("CARGO_PKG_VERSION").into(),
        agent_instance: st.instance.clone(),
        hostname,
        core_uuid,
        fs_version: None,
        profiles,
        resend_from: st.outbox.acked(),
    };
    write_msg(&mut send, &AgentMsg::Hello(hello)).await?;
    match read_frame::<ControllerMsg>(&mut recv).await? {
        ControllerMsg::Welcome {
            controller_id,
            wire_version,
        } => {
            if wire_version != st.wire_version {
                anyhow::bail!(
                    "wire protocol version mismatch: controller speaks {wire_version}, this agent {}; upgrade the older side",
                    st.wire_version
                );
            }
            tracing::info!(node = %c.node_id, controller = %controller_id, "connected to the controller");
        }
        ControllerMsg::Refused { reason } => {
            anyhow::bail!("the controller refused this agent: {reason}");
        }
        other => anyhow::bail!("unexpected first controller message {other:?}"),
    }
    st.snapshot_needed.store(true, Ordering::SeqCst);
    // Acks (and resync requests) from the controller.
    let acks = {
        let st = st.clone();
        tokio::spawn(async move {
            loop {
                match read_frame::<ControllerMsg>(&mut recv).await {
                    Ok(ControllerMsg::Ack { upto }) => st.outbox.ack(upto),
                    Ok(ControllerMsg::ResyncRequest) => {
                        st.snapshot_needed.store(true, Ordering::SeqCst);
                        st.outbox.notify.notify_one();
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        })
    };
    // Commands: one stream each.
    let commands = {
        let st = st.clone();
        let conn = conn.clone();
        tokio::spawn(async move {
            while let Ok((send, recv)) = conn.accept_bi().await {
                let st = st.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve_command(&st, send, recv).await {
                        tracing::debug!(error = %e, "command stream failed");
                    }
                });
            }
        })
    };
    let result = send_loop(st, &mut send, &conn).await;
    st.outbox.set_connected(None);
    acks.abort();
    commands.abort();
    conn.close(0u32.into(), b"agent reconnecting");
    endpoint.wait_idle().await;
    result
}

/// Most events in one `Events` frame.
const BATCH_EVENTS: usize = 128;
/// About the most header and body bytes in one `Events` frame.
const BATCH_BYTES: usize = 128 * 1024;

async fn send_loop(
    st: &Arc<AgentState>,
    send: &mut quinn::SendStream,
    conn: &quinn::Connection,
) -> anyhow::Result<()> {
    st.outbox.set_connected(Some(st.outbox.acked()));
    let mut last_status = None;
    // One frame buffer for the session: batches of ~128 KiB stay in the
    // allocator's reused size classes instead of fresh pages each time.
    let mut frame = Vec::with_capacity(BATCH_BYTES * 2);
    let mut heartbeat = tokio::time::interval(st.config.heartbeat);
    loop {
        if let Some(reason) = conn.close_reason() {
            anyhow::bail!("connection closed: {reason}");
        }
        let status = st.status();
        if last_status.as_ref() != Some(&status) {
            write_msg(send, &AgentMsg::Status(status.clone())).await?;
            last_status = Some(status);
        }
        // Everything buffered, in order.
        while let Some(last) = st
            .outbox
            .encode_unsent(BATCH_EVENTS, BATCH_BYTES, &mut frame)
        {
            send.write_all(&frame).await?;
            st.outbox.mark_sent(last);
        }
        if st.snapshot_needed.swap(false, Ordering::SeqCst) {
            let handle = st.esl.lock().await.clone();
            if let Some(h) = handle {
                match h
                    .api("show", "channels as json", Duration::from_secs(10))
                    .await
                {
                    Ok(text) => {
                        let core_uuid = st
                            .core_uuid
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .clone();
                        let snap = Snapshot {
                            core_uuid,
                            channels: parse_channels_json(&text),
                        };
                        write_msg(send, &AgentMsg::Snapshot(snap)).await?;
                        // Events that arrived meanwhile go after it.
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not take a channel snapshot; retrying");
                        st.snapshot_needed.store(true, Ordering::SeqCst);
                    }
                }
            }
        }
        tokio::select! {
            _ = st.outbox.notify.notified() => {}
            _ = st.status_changed.notified() => {}
            _ = heartbeat.tick() => {
                let (n, ch) = st.outbox.dropped();
                write_msg(send, &AgentMsg::Heartbeat { sent_us: now_us(), dropped: n + ch, buffered: st.outbox.len() as u64 }).await?;
            }
            _ = conn.closed() => anyhow::bail!("controller closed the connection"),
        }
    }
}

/// Rows of `show channels as json` as column/value pairs.
pub fn parse_channels_json(text: &str) -> Vec<Vec<(String, String)>> {
    let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap_or_default();
    v.get("rows")
        .and_then(|r| r.as_array())
        .map(|rows| {
            rows.iter()
                .filter_map(|r| r.as_object())
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                        .collect()
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn serve_command(
    st: &AgentState,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) -> anyhow::Result<()> {
    let req: CommandRequest = read_frame(&mut recv).await?;
    if let CommandKind::Subscribe { events } = &req.kind {
        let result = subscribe(st, events).await;
        let bytes = wire::encode(&CommandResponse { id: req.id, result })?;
        send.write_all(&bytes).await?;
        send.finish()?;
        let _ = send.stopped().await;
        return Ok(());
    }
    let handle = st.esl.lock().await.clone();
    let result = match handle {
        None => Err(format!(
            "FreeSWITCH ESL on node {} is down",
            st.config.node_id
        )),
        Some(h) => {
            let timeout = Duration::from_secs(120);
            let cmd = match &req.kind {
                CommandKind::Api { command, args } => Command::api(command, args),
                CommandKind::BgApi {
                    command,
                    args,
                    job_uuid,
                } => Command::bgapi(command, args, Some(job_uuid)),
                CommandKind::SendMsg {
                    uuid,
                    headers,
                    body,
                } => build_sendmsg(uuid, headers, body.as_deref()),
                CommandKind::Subscribe { .. } => Err(switchy_protocol::esl::CommandError::Empty {
                    field: "subscribe (handled above)",
                }),
            };
            match cmd {
                Ok(c) => h.send(c, timeout).await,
                Err(e) => Err(format!("refused before sending: {e}")),
            }
        }
    };
    let bytes = wire::encode(&CommandResponse { id: req.id, result })?;
    send.write_all(&bytes).await?;
    send.finish()?;
    // Let the stream's data reach the peer before dropping it.
    let _ = send.stopped().await;
    Ok(())
}

/// Adds events to the subscription: remembered for ESL reconnects, and
/// sent now if ESL is up. Nothing to do when `ALL` is subscribed.
async fn subscribe(st: &AgentState, events: &[String]) -> Result<String, String> {
    let new: Vec<String> = {
        let mut g = st.subscribed.lock().unwrap_or_else(|p| p.into_inner());
        if g.iter().any(|e| e.eq_ignore_ascii_case("ALL")) {
            return Ok("+OK already subscribed to ALL".into());
        }
        let new: Vec<String> = events
            .iter()
            .filter(|e| !g.iter().any(|x| x.eq_ignore_ascii_case(e)))
            .cloned()
            .collect();
        g.extend(new.iter().cloned());
        new
    };
    if new.is_empty() {
        return Ok("+OK nothing new".into());
    }
    let (names, subs): (Vec<&str>, Vec<&str>) = (
        new.iter()
            .filter(|e| !e.starts_with("CUSTOM "))
            .map(String::as_str)
            .collect(),
        new.iter()
            .filter_map(|e| e.strip_prefix("CUSTOM "))
            .collect(),
    );
    let cmd = Command::event(EventFormat::Plain, &names, &subs)
        .map_err(|e| format!("refused before sending: {e}"))?;
    let handle = st.esl.lock().await.clone();
    match handle {
        // Subscribed on the next ESL connect.
        None => Ok("+OK subscribed on the next ESL connect".into()),
        Some(h) => h.send(cmd, Duration::from_secs(10)).await,
    }
}

fn build_sendmsg(
    uuid: &str,
    headers: &[(String, String)],
    body: Option<&[u8]>,
) -> Result<Command, switchy_protocol::esl::CommandError> {
    let get = |k: &str| {
        headers
            .iter()
            .find(|(h, _)| h.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.as_str())
    };
    let mut msg = match get("call-command").unwrap_or("execute") {
        "hangup" => SendMsg::hangup(get("hangup-cause")),
        _ => {
            let arg = get("execute-app-arg")
                .map(str::to_owned)
                .or_else(|| body.map(|b| String::from_utf8_lossy(b).into_owned()));
            SendMsg::execute(get("execute-app-name").unwrap_or(""), arg.as_deref())
        }
    };
    msg.event_lock = get("event-lock") == Some("true");
    msg.event_uuid = get("Event-UUID").map(str::to_owned);
    if let Some(l) = get("loops").and_then(|l| l.parse().ok()) {
        msg = msg.with_loops(l);
    }
    Command::sendmsg(uuid, &msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sofia_status_profiles() {
        let t = "                     Name\t   Type\t                                      Data\tState\n=====\n                 external\tprofile\t             sip:mod_sofia@127.0.0.2:5080\tRUNNING (0)\n=====\n1 profiles 0 aliases\n";
        assert_eq!(
            parse_sofia_status(t),
            vec![Profile {
                name: "external".into(),
                url: "sip:mod_sofia@127.0.0.2:5080".into()
            }]
        );
    }

    #[test]
    fn channels_json() {
        assert!(parse_channels_json("{\"row_count\": 0}\n").is_empty());
        let rows =
            parse_channels_json(r#"{"row_count":1,"rows":[{"uuid":"u1","direction":"inbound"}]}"#);
        assert_eq!(
            rows[0],
            vec![
                ("direction".to_string(), "inbound".to_string()),
                ("uuid".to_string(), "u1".to_string())
            ]
        );
    }
}
