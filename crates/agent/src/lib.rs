//! switchy-agent: one FreeSWITCH's Event Socket relayed to the controller
//! over QUIC with mutual TLS. It makes no call-control decisions: it
//! forwards events in order, runs the commands it is sent, reconnects both
//! sides with capped exponential backoff and jitter, buffers events while the
//! controller is away, and re-syncs live channels after any reconnect.
#![forbid(unsafe_code)]

pub mod config;
pub mod error;
pub mod esl;
pub mod fallback;
pub mod outbox;
pub use switchy_link::{cpu, tls};

pub use config::AgentConfig;
pub use error::AgentError;
use error::SessionError;

use outbox::{Outbox, now_us};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use switchy_protocol::esl::{Command, SendMsg};
use switchy_protocol::link::Backoff;
use switchy_protocol::link::agent::{SnapshotScope, Transmit};
use switchy_protocol::wire::{
    self, AgentMsg, CommandKind, CommandRequest, CommandResponse, ControllerMsg, EslState, Hello,
    NodeLoad, Profile, Snapshot, WIRE_VERSION,
};
use tokio::sync::{Mutex, Notify};
use tokio::task::JoinHandle;

/// Shared state of a running agent.
pub struct AgentState {
    /// The configuration.
    pub config: AgentConfig,
    /// Buffered, unacknowledged events.
    pub outbox: Outbox,
    /// The event connection (its commands: the subscription only).
    esl: Mutex<Option<esl::EslHandle>>,
    /// The command connections (no events subscribed on them).
    cmds: Vec<std::sync::Mutex<Option<esl::EslHandle>>>,
    status: std::sync::Mutex<EslState>,
    last_up: std::sync::Mutex<Option<EslState>>,
    /// Woken when the ESL status changes.
    pub status_changed: Notify,
    /// Set by [`Agent::stop`]: stop reading ESL, drain the outbox.
    stopping: tokio::sync::watch::Sender<bool>,
    /// When the event connection came up (s since the epoch).
    esl_up_s: AtomicU64,
    /// When the event connection was last lost (µs; 0: never).
    esl_down_us: AtomicU64,
    /// The last ESL outage (from, to; µs) whose parked calls nobody heard
    /// of yet: the next snapshot replays them.
    outage: std::sync::Mutex<Option<(u64, u64)>>,
    core_uuid: std::sync::Mutex<String>,
    /// What the controller asked to subscribe (kept across reconnects).
    wanted: std::sync::Mutex<Vec<String>>,
    /// What the event connection has subscribed now (empty while down).
    subscribed: Mutex<Vec<String>>,
    /// Parked calls waiting for a controller that is away (None: off).
    fallback: std::sync::Mutex<Option<fallback::Fallback>>,
    /// A controller session is up (welcomed).
    controller_up: std::sync::atomic::AtomicBool,
    /// FreeSWITCH's load from the latest `status` probe.
    load: std::sync::Mutex<Option<NodeLoad>>,
    instance: String,
    /// The origin of the link's clock (see `switchy_protocol::link::agent`).
    started: std::time::Instant,
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
        if matches!(s, EslState::Up { .. }) {
            *self.last_up.lock().unwrap_or_else(|p| p.into_inner()) = Some(s.clone());
        }
        *self.status.lock().unwrap_or_else(|p| p.into_inner()) = s;
        self.status_changed.notify_waiters();
    }

    /// Events the event connection should have subscribed: the
    /// configured ones and the controller's (just `ALL` when either has it).
    pub fn target_events(&self) -> Vec<String> {
        let wanted = self
            .wanted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut own = self.config.events.clone();
        // The fallback needs to see calls park.
        if self.config.fallback.is_some() {
            own.push("CHANNEL_PARK".into());
        }
        merge_events(&own, &wanted)
    }

    /// Feeds an event read from FreeSWITCH to the fallback.
    fn fallback_observe(&self, e: &esl::RelayEvent) {
        let mut g = self.fallback.lock().unwrap_or_else(|p| p.into_inner());
        let Some(f) = g.as_mut() else { return };
        if !fallback::watches(&e.name) {
            return;
        }
        let h = |k: &str| relay_header(e, k);
        let Some(uuid) = h("Unique-ID") else { return };
        let dir = h("Call-Direction");
        let ans = h("Answer-State");
        if let Some(seen) = fallback::classify(&e.name, dir.as_deref(), ans.as_deref()) {
            let up = self.controller_up.load(Ordering::SeqCst);
            f.observe(&uuid, seen, up, self.started.elapsed());
        }
    }

    /// The latest load figures of FreeSWITCH.
    pub fn load(&self) -> Option<NodeLoad> {
        self.load.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The command connection with the fewest commands in flight.
    fn command_handle(&self) -> Option<esl::EslHandle> {
        self.cmds
            .iter()
            .filter_map(|m| m.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .filter(esl::EslHandle::is_open)
            .min_by_key(esl::EslHandle::in_flight)
    }
}

/// A header of a relayed event (plain text or packed), decoded.
fn relay_header(e: &esl::RelayEvent, key: &str) -> Option<String> {
    if e.plain {
        let text = std::str::from_utf8(&e.packed).ok()?;
        return text
            .lines()
            .take_while(|l| !l.is_empty())
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(": "))
            .map(|v| percent_decode(v.trim_end_matches('\r')));
    }
    switchy_protocol::wire::unpack_headers(&e.packed)
        .ok()?
        .into_iter()
        .find(|(k, _)| *k == key.as_bytes())
        .and_then(|(_, v)| std::str::from_utf8(v).ok().map(str::to_owned))
}

/// `%XX` decoding of a plain event's header value.
fn percent_decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(x) = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(x);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Runs the fallback's due actions (every 500 ms while it is on).
async fn fallback_loop(st: Arc<AgentState>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let (due, action) = {
            let mut g = st.fallback.lock().unwrap_or_else(|p| p.into_inner());
            let Some(f) = g.as_mut() else { return };
            if st.controller_up.load(Ordering::SeqCst) {
                f.controller_up();
                continue;
            }
            (f.due(st.started.elapsed()), f.action().clone())
        };
        for uuid in due {
            let Some(h) = st.command_handle() else {
                tracing::warn!(node = %st.config.node_id, %uuid, "fallback: no ESL connection to act on a parked call");
                continue;
            };
            let (cmd, args) = action.command(&uuid);
            match h.api(cmd, &args, Duration::from_secs(5)).await {
                Ok(r) => {
                    tracing::warn!(node = %st.config.node_id, %uuid, command = %format!("{cmd} {args}"), reply = %r.trim(), "controller unreachable: fallback applied to a parked call")
                }
                Err(e) => {
                    tracing::warn!(node = %st.config.node_id, %uuid, error = %e, "fallback command failed")
                }
            }
        }
    }
}

/// The union of two subscriptions, without duplicates (case-insensitive),
/// in order; just `ALL` when either names it.
pub fn merge_events(a: &[String], b: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for e in a.iter().chain(b) {
        if e.eq_ignore_ascii_case("ALL") {
            return vec!["ALL".into()];
        }
        if !out.iter().any(|x| x.eq_ignore_ascii_case(e)) {
            out.push(e.clone());
        }
    }
    out
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
    pub fn start(config: AgentConfig) -> Result<Agent, AgentError> {
        Self::start_with_version(config, WIRE_VERSION)
    }

    /// Starts with a given wire version (for testing the handshake).
    pub fn start_with_version(config: AgentConfig, wire_version: u32) -> Result<Agent, AgentError> {
        let client = tls::client_config(&config.ca_pem, &config.cert_pem, &config.key_pem)?;
        let pool = config.command_connections.max(1);
        let fallback = config
            .fallback
            .clone()
            .map(|(after, action)| fallback::Fallback::new(after, action));
        let state = Arc::new(AgentState {
            outbox: Outbox::new(
                config.max_events,
                config.max_bytes,
                config.read_ahead,
                backoff(config.backoff_min, config.backoff_max),
                config.heartbeat,
            ),
            config,
            esl: Mutex::new(None),
            cmds: (0..pool).map(|_| std::sync::Mutex::new(None)).collect(),
            status: std::sync::Mutex::new(EslState::Down("not connected yet".into())),
            last_up: std::sync::Mutex::new(None),
            status_changed: Notify::new(),
            stopping: tokio::sync::watch::Sender::new(false),
            esl_up_s: AtomicU64::new(0),
            esl_down_us: AtomicU64::new(0),
            outage: std::sync::Mutex::new(None),
            core_uuid: std::sync::Mutex::new(String::new()),
            wanted: std::sync::Mutex::new(Vec::new()),
            subscribed: Mutex::new(Vec::new()),
            fallback: std::sync::Mutex::new(fallback),
            controller_up: std::sync::atomic::AtomicBool::new(false),
            load: std::sync::Mutex::new(None),
            instance: uuid::Uuid::new_v4().to_string(),
            started: std::time::Instant::now(),
            wire_version,
        });
        let mut tasks = vec![
            tokio::spawn(esl_loop(state.clone())),
            tokio::spawn(controller_loop(state.clone(), client)),
            tokio::spawn(probe_loop(state.clone())),
        ];
        for i in 0..state.cmds.len() {
            tasks.push(tokio::spawn(command_conn_loop(state.clone(), i)));
        }
        if state.config.fallback.is_some() {
            tasks.push(tokio::spawn(fallback_loop(state.clone())));
        }
        Ok(Agent { state, tasks })
    }

    /// Stops gracefully: reads no more events from FreeSWITCH, waits up to
    /// `within` until the controller has acknowledged every event already
    /// read (the outbox is empty), then stops every loop. Returns the
    /// events left unacknowledged (0 unless the controller was away).
    pub async fn stop(self, within: Duration) -> usize {
        self.state.stopping.send_replace(true);
        let deadline = tokio::time::Instant::now() + within;
        while !self.state.outbox.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The send loop sees the empty outbox and closes the connection
        // with "agent stopping"; give it a moment.
        self.state.outbox.notify.notify_one();
        self.state.status_changed.notify_waiters();
        let close_by = tokio::time::Instant::now() + Duration::from_millis(500);
        while self.tasks.get(1).is_some_and(|t| !t.is_finished())
            && tokio::time::Instant::now() < close_by
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.state.outbox.len()
    }
}

/// When the second snapshot after an ESL (re)connect is taken.
const SECOND_SNAPSHOT: Duration = Duration::from_secs(3);

/// The reconnect policy (sans-IO, in switchy-protocol), seeded from the
/// clock so that agents started together do not retry in step.
fn backoff(min: Duration, max: Duration) -> Backoff {
    Backoff::new(min, max, now_us())
}

async fn esl_loop(st: Arc<AgentState>) {
    let c = &st.config;
    let mut backoff = backoff(c.backoff_min, c.backoff_max);
    loop {
        let mut subscribed = st.subscribed.lock().await;
        let events = st.target_events();
        let (handle, mut events_rx) = match esl::connect(
            &c.esl_host,
            c.esl_port,
            &c.esl_password,
            &events,
            c.event_format,
            (!c.event_poke.is_zero()).then_some(c.event_poke),
        )
        .await
        {
            Ok(x) => x,
            Err(e) => {
                drop(subscribed);
                tracing::warn!(node = %c.node_id, error = %e, "ESL connect failed; retrying");
                st.set_status(EslState::Down(e.to_string()));
                if matches!(e, esl::EslError::Auth) {
                    // Do not hot-loop on a wrong password.
                    tokio::time::sleep(c.backoff_max).await;
                } else {
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                continue;
            }
        };
        *subscribed = events.clone();
        *st.esl.lock().await = Some(handle.clone());
        drop(subscribed);
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
        tracing::info!(node = %c.node_id, core_uuid = %core_uuid, hostname = %hostname, events = ?events, "ESL connected");
        *st.core_uuid.lock().unwrap_or_else(|p| p.into_inner()) = core_uuid.clone();
        st.esl_up_s.store(now_us() / 1_000_000, Ordering::SeqCst);
        let down = st.esl_down_us.load(Ordering::SeqCst);
        if down > 0 {
            *st.outage.lock().unwrap_or_else(|p| p.into_inner()) = Some((down, now_us()));
        }
        st.outbox.with(|l| l.request_snapshot(SnapshotScope::All));
        st.outbox.notify.notify_one();
        // FreeSWITCH's `show channels` lags its channels by seconds (its
        // core database is written in batches): a second snapshot once it
        // has caught up settles what the first could not.
        let again = {
            let st = st.clone();
            tokio::spawn(async move {
                tokio::time::sleep(SECOND_SNAPSHOT).await;
                st.outbox
                    .with(|l| l.request_snapshot(SnapshotScope::OlderThanEsl));
                st.outbox.notify.notify_one();
            })
        };
        st.set_status(EslState::Up {
            core_uuid,
            hostname,
            profiles,
        });
        let mut stop = st.stopping.subscribe();
        loop {
            tokio::select! {
                e = events_rx.recv() => match e {
                    Some(e) => {
                        st.fallback_observe(&e);
                        st.outbox.wait_not_behind().await;
                        st.outbox.push(e);
                    }
                    None => break,
                },
                _ = async { drop(stop.wait_for(|s| *s).await) } => {
                    // Stopping: read no more from FreeSWITCH, but keep
                    // what was already read (the outbox sends it on).
                    again.abort();
                    *st.esl.lock().await = None;
                    drop(handle);
                    while let Ok(e) = events_rx.try_recv() {
                        st.outbox.push(e);
                    }
                    st.set_status(EslState::Down("the agent is stopping".into()));
                    return;
                }
            }
        }
        again.abort();
        *st.esl.lock().await = None;
        st.subscribed.lock().await.clear();
        st.esl_down_us.store(now_us(), Ordering::SeqCst);
        st.set_status(EslState::Down("ESL connection lost".into()));
        tracing::warn!(node = %c.node_id, "ESL connection lost; reconnecting");
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// Keeps command connection `i` up (no events are subscribed on it).
async fn command_conn_loop(st: Arc<AgentState>, i: usize) {
    let c = &st.config;
    let mut backoff = backoff(c.backoff_min, c.backoff_max);
    loop {
        match esl::connect(
            &c.esl_host,
            c.esl_port,
            &c.esl_password,
            &[],
            c.event_format,
            None,
        )
        .await
        {
            Ok((handle, mut rx)) => {
                backoff.reset();
                tracing::debug!(node = %c.node_id, connection = i, "ESL command connection up");
                *st.cmds[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
                // Closed when the connection ends (no events come on it).
                while rx.recv().await.is_some() {}
                *st.cmds[i].lock().unwrap_or_else(|p| p.into_inner()) = None;
                tracing::debug!(node = %c.node_id, connection = i, "ESL command connection lost");
            }
            Err(e) => {
                tracing::debug!(node = %c.node_id, connection = i, error = %e, "ESL command connection failed");
                if matches!(e, esl::EslError::Auth) {
                    tokio::time::sleep(c.backoff_max).await;
                    continue;
                }
            }
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// Every `status_probe`: `api status` on a command connection. No answer
/// within `status_timeout` marks the node degraded; the answer gives
/// FreeSWITCH's idle CPU and sessions, and the agent adds FreeSWITCH's own
/// process CPU when it can see the process.
async fn probe_loop(st: Arc<AgentState>) {
    // FreeSWITCH's own CPU (the agent runs beside it).
    let mut cpu = cpu::ProcessCpu::named("freeswitch");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    loop {
        tokio::time::sleep(st.config.status_probe).await;
        let up = matches!(st.status(), EslState::Up { .. } | EslState::Degraded(_));
        let Some(h) = st.command_handle().filter(|_| up) else {
            continue;
        };
        let t0 = now_us();
        let cmd = match Command::api("status", "") {
            Ok(c) => c,
            Err(_) => continue,
        };
        let (r, _) = h.send_timed(cmd, st.config.status_timeout).await;
        match r {
            Ok(text) => {
                let mut l = wire::parse_status(&text);
                l.at_us = now_us();
                l.status_us = l.at_us.saturating_sub(t0);
                l.cores = cores;
                l.fs_cpu_hundredths = cpu.sample().map(|pct| (pct * 100.0).round() as u32);
                *st.load.lock().unwrap_or_else(|p| p.into_inner()) = Some(l);
                if let EslState::Degraded(_) = st.status() {
                    st.set_status(st.up_state());
                }
            }
            Err(e) if h.is_open() => {
                if !matches!(st.status(), EslState::Degraded(_)) {
                    tracing::warn!(error = %e, "FreeSWITCH did not answer `status`: node degraded");
                    st.set_status(EslState::Degraded(e));
                }
            }
            Err(_) => {}
        }
    }
}

impl AgentState {
    /// The Up state with what was learnt at connect.
    fn up_state(&self) -> EslState {
        match self.status() {
            s @ EslState::Up { .. } => s,
            _ => self
                .last_up
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
                .unwrap_or(EslState::Down("not connected".into())),
        }
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

async fn write_msg(send: &mut quinn::SendStream, msg: &AgentMsg) -> Result<(), SessionError> {
    Ok(switchy_link::frame::write_frame(send, msg).await?)
}

pub use switchy_link::frame::read_frame;

async fn controller_loop(st: Arc<AgentState>, client: quinn::ClientConfig) {
    let c = &st.config;
    loop {
        let r = session(&st, &client).await;
        if *st.stopping.borrow() {
            return;
        }
        // The link decides the delay: the minimum after a welcomed session.
        let delay = st.outbox.with(|l| l.closed());
        match r {
            Ok(()) => {
                tracing::warn!(node = %c.node_id, "controller connection closed; reconnecting")
            }
            Err(e) => {
                tracing::warn!(node = %c.node_id, error = %e, "controller session failed; retrying")
            }
        }
        tokio::time::sleep(delay).await;
    }
}

async fn session(st: &Arc<AgentState>, client: &quinn::ClientConfig) -> Result<(), SessionError> {
    let c = &st.config;
    let addr = tokio::net::lookup_host(&c.controller)
        .await?
        .next()
        .ok_or_else(|| SessionError::Resolve(c.controller.clone()))?;
    let bind = if addr.is_ipv4() {
        std::net::SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        std::net::SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0))
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
        resend_from: 0,
    };
    let hello = st.outbox.with(|l| l.hello(hello));
    write_msg(&mut send, &AgentMsg::Hello(hello)).await?;
    let first = read_frame::<ControllerMsg>(&mut recv).await?;
    let controller = match &first {
        ControllerMsg::Welcome { controller_id, .. } => controller_id.clone(),
        _ => String::new(),
    };
    let events = st
        .outbox
        .with(|l| l.welcome(st.started.elapsed(), first, st.wire_version))?;
    tracing::info!(node = %c.node_id, %controller, "connected to the controller");
    st.controller_up.store(true, Ordering::SeqCst);
    // Subscribed before the ESL state is reported, so nothing the
    // controller needs is missed once it sees the node up.
    if let Err(e) = set_wanted(st, events).await {
        tracing::warn!(node = %c.node_id, error = %e, "could not apply the controller's event subscription");
    }
    // Acks (and resync requests) from the controller.
    let acks = {
        let st = st.clone();
        tokio::spawn(async move {
            while let Ok(msg) = read_frame::<ControllerMsg>(&mut recv).await {
                st.outbox.with(|l| l.receive(msg));
                st.outbox.notify.notify_one();
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
    st.controller_up.store(false, Ordering::SeqCst);
    acks.abort();
    commands.abort();
    let reason: &[u8] = if *st.stopping.borrow() {
        b"agent stopping"
    } else {
        b"agent reconnecting"
    };
    conn.close(0u32.into(), reason);
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
) -> Result<(), SessionError> {
    // One frame buffer for the session: batches of ~128 KiB stay in the
    // allocator's reused size classes instead of fresh pages each time.
    let mut frame = Vec::with_capacity(BATCH_BYTES * 2);
    loop {
        if let Some(reason) = conn.close_reason() {
            return Err(SessionError::Gone(format!("connection closed: {reason}")));
        }
        // Stopping, and the controller has every event: close cleanly.
        if *st.stopping.borrow() && st.outbox.is_empty() {
            return Ok(());
        }
        // Armed before polling, so a push between the poll and the wait
        // still wakes us.
        let pushed = st.outbox.notify.notified();
        let status_changed = st.status_changed.notified();
        tokio::pin!(pushed, status_changed);
        pushed.as_mut().enable();
        status_changed.as_mut().enable();
        let status = st.status();
        let next = st.outbox.with(|l| {
            l.poll_transmit(
                st.started.elapsed(),
                &status,
                BATCH_EVENTS,
                BATCH_BYTES,
                &mut frame,
            )
        })?;
        match next {
            Some(Transmit::Status(s)) => write_msg(send, &AgentMsg::Status(s)).await?,
            Some(Transmit::Events(_)) => send.write_all(&frame).await?,
            Some(Transmit::Snapshot(scope)) => {
                if !send_snapshot(st, send, scope).await? {
                    st.outbox.with(|l| l.snapshot_failed(scope));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            Some(Transmit::Heartbeat) => {
                let (n, ch) = st.outbox.dropped();
                let buffered = st.outbox.len() as u64;
                write_msg(
                    send,
                    &AgentMsg::Heartbeat {
                        sent_us: now_us(),
                        dropped: n + ch,
                        buffered,
                        load: st.load(),
                    },
                )
                .await?;
            }
            None => {
                let wake = st.outbox.with(|l| l.poll_timeout());
                let sleep = wake.map_or(Duration::from_secs(1), |t| {
                    t.saturating_sub(st.started.elapsed())
                });
                tokio::select! {
                    _ = pushed => {}
                    _ = status_changed => {}
                    _ = tokio::time::sleep(sleep) => {}
                    _ = conn.closed() => return Err(SessionError::Gone("controller closed the connection".into())),
                }
            }
        }
    }
}

/// Takes a channel snapshot (`scope`: every channel, or only those older
/// than the event connection), writes it, and queues the CHANNEL_PARK
/// replays it found; false when FreeSWITCH could not be asked (retried).
async fn send_snapshot(
    st: &Arc<AgentState>,
    send: &mut quinn::SendStream,
    scope: SnapshotScope,
) -> Result<bool, SessionError> {
    let handle = match st.command_handle() {
        Some(h) => Some(h),
        None => st.esl.lock().await.clone(),
    };
    let Some(h) = handle else {
        // No ESL connection: its reconnect asks for a snapshot again.
        return Ok(true);
    };
    let text = match h
        .api("show", "channels as json", Duration::from_secs(10))
        .await
    {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "could not take a channel snapshot; retrying");
            return Ok(false);
        }
    };
    let core_uuid = st
        .core_uuid
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let mut channels = parse_channels_json(&text);
    // Channels created since the event connection came up are linked by
    // their own events; the second snapshot dumps only the older ones.
    let before = (scope == SnapshotScope::OlderThanEsl).then(|| st.esl_up_s.load(Ordering::SeqCst));
    let outage = st.outage.lock().unwrap_or_else(|p| p.into_inner()).take();
    let replay = enrich_snapshot(st, &mut channels, before, outage).await;
    let snap = Snapshot {
        core_uuid,
        channels,
    };
    write_msg(send, &AgentMsg::Snapshot(snap)).await?;
    if !replay.is_empty() {
        tracing::warn!(node = %st.config.node_id, calls = replay.len(), "replaying CHANNEL_PARK of inbound calls that parked while ESL was down");
    }
    // Events that arrived meanwhile go after it.
    for e in replay {
        st.outbox.push(esl::RelayEvent::from_event(&e));
    }
    Ok(true)
}

/// Headers of `uuid_dump` a snapshot row gets, besides the variables of
/// [`is_snapshot_variable`]: the leg's own times (µs) and states, which
/// `show channels` lacks (it has `created_epoch`, in seconds).
pub const SNAPSHOT_HEADERS: [&str; 6] = [
    "Caller-Channel-Created-Time",
    "Caller-Channel-Answered-Time",
    "Caller-Channel-Hangup-Time",
    "Answer-State",
    "Channel-Call-State",
    "Other-Leg-Unique-ID",
];

/// Channel variables a snapshot row carries: the ones calls are linked by
/// (custom SIP headers such as the tracking `sip_h_X-switchy-orig-uuid`,
/// on both legs of a self-call, and switchy's own `switchy_*`).
pub fn is_snapshot_variable(header: &str) -> bool {
    header
        .strip_prefix("variable_")
        .is_some_and(|v| v.starts_with("sip_h_X-") || v.starts_with("switchy_"))
}

/// Adds to each row what `uuid_dump` says of its channel
/// ([`SNAPSHOT_HEADERS`], [`is_snapshot_variable`]), so that a resync links
/// a live call's legs again and keeps their real times. One `uuid_dump`
/// per channel on the command connections (at most two at once): it costs
/// FreeSWITCH about what one event with every variable does, and only at a
/// (re)connect. A channel gone meanwhile keeps its bare row.
///
/// With `created_before` (s since the epoch) only channels created at or
/// before it are dumped.
///
/// Inbound legs that parked during `outage` (from, to; µs) and are still
/// unanswered were never seen by anyone (FreeSWITCH sends events only to
/// connected listeners): their dump comes back as a CHANNEL_PARK, marked
/// `variable_switchy_replayed: resync`, so the router and apps handle them
/// as if the event had arrived.
async fn enrich_snapshot(
    st: &Arc<AgentState>,
    rows: &mut [Vec<(String, String)>],
    created_before: Option<u64>,
    outage: Option<(u64, u64)>,
) -> Vec<switchy_protocol::esl::Event> {
    let mut replay = Vec::new();
    use futures_util::StreamExt;
    // The command connections, or the event connection while they are
    // still reconnecting.
    let first = match st.command_handle() {
        Some(h) => h,
        None => match st.esl.lock().await.clone() {
            Some(h) => h,
            None => return replay,
        },
    };
    let t = Duration::from_secs(5);
    let uuids: Vec<(usize, String)> = rows
        .iter()
        .enumerate()
        .filter(|(_, r)| {
            created_before.is_none_or(|t| {
                r.iter()
                    .find(|(k, _)| k == "created_epoch")
                    .and_then(|(_, v)| v.parse::<u64>().ok())
                    .is_none_or(|c| c <= t)
            })
        })
        .filter_map(|(i, r)| {
            r.iter()
                .find(|(k, _)| k == "uuid")
                .map(|(_, v)| (i, v.clone()))
        })
        .collect();
    let dumps: Vec<(usize, Result<String, String>)> = futures_util::stream::iter(uuids)
        .map(|(i, uuid)| {
            let h = st.command_handle().unwrap_or_else(|| first.clone());
            async move { (i, h.api("uuid_dump", &format!("{uuid} json"), t).await) }
        })
        .buffer_unordered(2)
        .collect()
        .await;
    for (i, dump) in dumps {
        let Ok(text) = dump else { continue };
        let Ok(serde_json::Value::Object(o)) = serde_json::from_str::<serde_json::Value>(&text)
        else {
            continue;
        };
        if let Some(e) = outage.and_then(|w| parked_during(&rows[i], &o, w)) {
            replay.push(e);
        }
        for (k, v) in o {
            if (SNAPSHOT_HEADERS.contains(&k.as_str()) || is_snapshot_variable(&k))
                && let Some(v) = v.as_str()
            {
                rows[i].push((k, v.to_owned()));
            }
        }
    }
    replay
}

/// A CHANNEL_PARK rebuilt from `dump` when the row is an inbound leg that
/// parked within `outage` (µs) and is not answered.
fn parked_during(
    row: &[(String, String)],
    dump: &serde_json::Map<String, serde_json::Value>,
    (from, to): (u64, u64),
) -> Option<switchy_protocol::esl::Event> {
    let col = |k: &str| row.iter().find(|(c, _)| c == k).map(|(_, v)| v.as_str());
    let hdr = |k: &str| dump.get(k).and_then(|v| v.as_str());
    let created: u64 = hdr("Caller-Channel-Created-Time")?.parse().ok()?;
    if col("direction") != Some("inbound")
        || col("application") != Some("park")
        || hdr("Answer-State") == Some("answered")
        || !(from..=to).contains(&created)
    {
        return None;
    }
    let mut e = switchy_protocol::esl::Event::new("CHANNEL_PARK");
    for (k, v) in dump {
        if k != "Event-Name"
            && let Some(v) = v.as_str()
        {
            e = e.with(k, v);
        }
    }
    Some(e.with("variable_switchy_replayed", "resync"))
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
) -> Result<(), SessionError> {
    let req: CommandRequest = read_frame(&mut recv).await?;
    let (result, sent_us) = match req.kind {
        CommandKind::Subscription { events } => (set_wanted(st, events).await, 0),
        kind => run_command(st, &kind).await,
    };
    let bytes = wire::encode(&CommandResponse {
        id: req.id,
        result,
        sent_us,
    })?;
    send.write_all(&bytes).await?;
    send.finish()?;
    // Let the stream's data reach the peer before dropping it.
    let _ = send.stopped().await;
    Ok(())
}

/// Runs a command on the least busy command connection (the event
/// connection only when none is up).
async fn run_command(st: &AgentState, kind: &CommandKind) -> (Result<String, String>, u64) {
    let handle = match st.command_handle() {
        Some(h) => Some(h),
        None => st.esl.lock().await.clone(),
    };
    let Some(h) = handle else {
        return (
            Err(format!(
                "FreeSWITCH ESL on node {} is down",
                st.config.node_id
            )),
            0,
        );
    };
    let timeout = Duration::from_secs(120);
    let cmd = match kind {
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
        CommandKind::Subscription { .. } => Err(switchy_protocol::esl::CommandError::Empty {
            field: "subscription (not a FreeSWITCH command)",
        }),
    };
    match cmd {
        Ok(c) => h.send_timed(c, timeout).await,
        Err(e) => (Err(format!("refused before sending: {e}")), 0),
    }
}

/// Records the controller's events and brings the event connection's
/// subscription to the target set.
async fn set_wanted(st: &AgentState, events: Vec<String>) -> Result<String, String> {
    *st.wanted.lock().unwrap_or_else(|p| p.into_inner()) = events;
    apply_subscription(st).await
}

/// Subscribes what the target set adds (`event`) and unsubscribes what it
/// drops (`nixevent`) on the live event connection; without one, the next
/// connect subscribes the target set.
async fn apply_subscription(st: &AgentState) -> Result<String, String> {
    let mut cur = st.subscribed.lock().await;
    let Some(h) = st.esl.lock().await.clone() else {
        return Ok("+OK subscribed on the next ESL connect".into());
    };
    let target = st.target_events();
    let has = |set: &[String], e: &str| set.iter().any(|x| x.eq_ignore_ascii_case(e));
    let added: Vec<String> = target.iter().filter(|e| !has(&cur, e)).cloned().collect();
    let removed: Vec<String> = cur.iter().filter(|e| !has(&target, e)).cloned().collect();
    let t = Duration::from_secs(10);
    let fmt = st.config.event_format;
    let refused = |e: switchy_protocol::esl::CommandError| format!("refused before sending: {e}");
    let mut steps = Vec::new();
    // Leaving ALL: FreeSWITCH's `nixevent ALL` clears everything, so it
    // goes first and the target is subscribed after it.
    let leaving_all = has(&removed, "ALL");
    if leaving_all {
        steps.push(Command::nixevent(&["ALL"], &[]).map_err(refused)?);
    }
    if !added.is_empty() || leaving_all {
        let list = if leaving_all { &target } else { &added };
        let (n, c) = esl::split_custom(list);
        if !n.is_empty() || !c.is_empty() {
            steps.push(Command::event(fmt, &n, &c).map_err(refused)?);
        }
    }
    let rest: Vec<String> = removed
        .iter()
        .filter(|e| !e.eq_ignore_ascii_case("ALL"))
        .cloned()
        .collect();
    if !rest.is_empty() && !has(&target, "ALL") {
        let (n, c) = esl::split_custom(&rest);
        steps.push(Command::nixevent(&n, &c).map_err(refused)?);
    }
    for cmd in steps {
        let r = h.send(cmd, t).await?;
        if r.starts_with("-ERR") {
            return Err(format!("FreeSWITCH refused the subscription change: {r}"));
        }
    }
    tracing::info!(node = %st.config.node_id, events = ?target, added = ?added, removed = ?removed, "ESL subscription");
    *cur = target;
    Ok(format!("+OK subscribed {}", cur.join(" ")))
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
    fn only_inbound_legs_parked_during_the_outage_are_replayed() {
        let row = |dir: &str, app: &str| {
            vec![
                ("direction".to_string(), dir.to_string()),
                ("application".to_string(), app.to_string()),
            ]
        };
        let dump = |created: u64, answer: &str| {
            let v = serde_json::json!({
                "Event-Name": "CHANNEL_DATA",
                "Unique-ID": "u1",
                "Caller-Channel-Created-Time": created.to_string(),
                "Answer-State": answer,
                "Caller-Destination-Number": "2000",
            });
            v.as_object().cloned().unwrap_or_default()
        };
        let w = (1_000, 2_000);
        let e = parked_during(&row("inbound", "park"), &dump(1_500, "ringing"), w)
            .expect("parked during the outage");
        assert_eq!(e.event_name(), Some("CHANNEL_PARK"));
        assert_eq!(e.get("Caller-Destination-Number"), Some("2000"));
        assert_eq!(e.get("variable_switchy_replayed"), Some("resync"));
        assert!(parked_during(&row("inbound", "park"), &dump(999, "ringing"), w).is_none());
        assert!(parked_during(&row("inbound", "park"), &dump(1_500, "answered"), w).is_none());
        assert!(parked_during(&row("outbound", "park"), &dump(1_500, "ringing"), w).is_none());
        assert!(parked_during(&row("inbound", "bridge"), &dump(1_500, "ringing"), w).is_none());
    }

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
