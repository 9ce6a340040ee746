//! The cluster: the QUIC server agents connect to, the node registry, the
//! state task that owns the tracker, jobs, and the Rust API (`Node`,
//! `Session`, `Job`).

use crate::pipeline::{Feed, Observer, Pipeline};
use crate::tracker::{Finished, Tracker, TrackerView};
use serde::Serialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use switchy_protocol::esl::{Event, api_result, args};
use switchy_protocol::link::NodeLink;
use switchy_protocol::wire::{
    self, AgentMsg, CommandKind, CommandRequest, CommandResponse, ControllerMsg, EslState, Profile,
    WIRE_VERSION,
};
use tokio::sync::{mpsc, oneshot, watch};

/// The close reason of an agent that stops on purpose (`Agent::stop`).
pub const AGENT_STOPPING: &[u8] = b"agent stopping";

pub use switchy_protocol::wire::{CORE_EVENTS, NodeLoad, TRACKER_LIVE, TRACKER_MINIMAL};

/// How much of each channel's life the tracker follows, which decides the
/// events every node's FreeSWITCH must serialize on every call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tracking {
    /// Each leg's end only (CHANNEL_HANGUP_COMPLETE carries its times,
    /// cause and variables), plus jobs and heartbeats: what CDRs and the
    /// Originator need, at the least FreeSWITCH CPU (`run`'s default).
    Minimal,
    /// Also creation, answer and bridges, for live session and call views
    /// (`serve`'s default).
    #[default]
    Live,
    /// Every channel event the tracker understands (switchy's default
    /// before).
    Full,
}

impl Tracking {
    /// The events this level subscribes.
    pub fn events(self) -> &'static [&'static str] {
        match self {
            Tracking::Minimal => TRACKER_MINIMAL,
            Tracking::Live => TRACKER_LIVE,
            Tracking::Full => CORE_EVENTS,
        }
    }
}

/// Controller settings.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// Variable that carries the call id (stamped on every originate).
    pub tracking_var: String,
    /// Channels older than this are reaped.
    pub max_channel_age: Duration,
    /// How long a bgapi job may run.
    pub job_timeout: Duration,
    /// How long an api command may take.
    pub command_timeout: Duration,
    /// What the tracker follows (and so subscribes on every node).
    pub tracking: Tracking,
    /// Live sessions tracked per node at most (a bound on what a broken or
    /// hostile node can make the controller hold).
    pub max_sessions_per_node: usize,
    /// Live sessions tracked in all at most.
    pub max_sessions: usize,
    /// A node whose agent has been gone this long has its sessions closed
    /// out (`SWITCHY_NODE_GONE`); a reconnect within it keeps them.
    pub node_gone_grace: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            tracking_var: "sip_h_X-switchy-orig-uuid".into(),
            max_channel_age: Duration::from_secs(4 * 3600),
            job_timeout: Duration::from_secs(60),
            command_timeout: Duration::from_secs(30),
            tracking: Tracking::Live,
            max_sessions_per_node: 100_000,
            max_sessions: 1_000_000,
            node_gone_grace: Duration::from_secs(120),
        }
    }
}

/// The agent's link to this controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AgentLink {
    /// Its QUIC connection is up.
    Connected,
    /// It is gone (and its node's commands fail until it is back).
    Disconnected,
}

/// The agent's Event Socket connection to its FreeSWITCH, as it reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum EslLink {
    /// Connected and answering.
    Up,
    /// Not connected (see `reason`).
    Down,
    /// Connected but not answering its probes in time.
    Degraded,
}

impl std::fmt::Display for EslLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EslLink::Up => "up",
            EslLink::Down => "down",
            EslLink::Degraded => "degraded",
        })
    }
}

/// A node as the registry sees it.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct NodeInfo {
    /// Node id (from the agent certificate).
    pub id: String,
    /// The agent's link (`connected`, `disconnected` in JSON).
    pub agent: AgentLink,
    /// The agent's ESL connection (`up`, `down`, `degraded` in JSON).
    pub esl: EslLink,
    /// Why ESL is down or degraded.
    pub reason: Option<String>,
    /// FreeSWITCH hostname.
    pub hostname: Option<String>,
    /// Core-UUID of the current FreeSWITCH process.
    pub core_uuid: Option<String>,
    /// SIP profiles.
    pub profiles: Vec<Profile>,
    /// Events received from this node.
    pub events: u64,
    /// Events the agent dropped (buffer full), as last reported.
    pub agent_dropped: u64,
    /// Events buffered at the agent, as last reported.
    pub agent_buffered: u64,
    /// Number of agent (re)connections.
    pub connects: u64,
    /// FreeSWITCH's max-sessions, from its latest HEARTBEAT.
    pub max_sessions: Option<u64>,
    /// FreeSWITCH's load, from the agent's latest `status` probe.
    pub load: Option<NodeLoad>,
    /// FreeSWITCH's idle CPU (%) in its latest HEARTBEAT.
    pub heartbeat_idle_cpu: Option<f64>,
}

impl NodeInfo {
    /// Its agent is connected and its FreeSWITCH answers: it takes calls.
    pub fn ready(&self) -> bool {
        self.agent == AgentLink::Connected && self.esl == EslLink::Up
    }
}

struct NodeEntry {
    info: NodeInfo,
    conn: Option<quinn::Connection>,
    /// The link's protocol state (dedup of re-sent events).
    link: NodeLink,
    /// Since when its agent is disconnected (None while connected).
    gone_since: Option<std::time::Instant>,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    /// Events received.
    pub events: AtomicU64,
    /// Commands sent.
    pub commands: AtomicU64,
    /// Commands that failed.
    pub command_errors: AtomicU64,
    /// Agent sessions refused (all reasons).
    pub refused: AtomicU64,
    /// Agent sessions refused, by [`Refusal`] reason.
    pub refused_by: [AtomicU64; RefusalKind::ALL.len()],
    /// Duplicate events ignored after a reconnect.
    pub duplicates: AtomicU64,
    /// Sum of relay latencies (FreeSWITCH event time → applied), µs.
    pub latency_sum_us: AtomicU64,
    /// Latency histogram buckets (µs upper bounds in [`LATENCY_BUCKETS`]).
    pub latency_buckets: [AtomicU64; 12],
    /// Sum of the agent → controller part (agent received the event →
    /// applied), µs: with `latency_*`, tells FreeSWITCH/ESL delays from
    /// switchy's own.
    pub agent_latency_sum_us: AtomicU64,
    /// Histogram of the agent → controller part (bounds [`LATENCY_BUCKETS`]).
    pub agent_latency_buckets: [AtomicU64; 12],
}

/// Why an agent connection was refused (for `/metrics`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalKind {
    /// The TLS handshake failed (unknown CA, no certificate, expired).
    Tls,
    /// The certificate names no node.
    NoName,
    /// Another wire version.
    Version,
    /// The Hello names another node than the certificate.
    Identity,
    /// Another agent process is connected with this identity.
    DuplicateIdentity,
    /// The certificate is on the revocation list.
    Revoked,
}

impl RefusalKind {
    /// Every kind, in `/metrics` order.
    pub const ALL: [RefusalKind; 6] = [
        RefusalKind::Tls,
        RefusalKind::NoName,
        RefusalKind::Version,
        RefusalKind::Identity,
        RefusalKind::DuplicateIdentity,
        RefusalKind::Revoked,
    ];

    /// Its `/metrics` label.
    pub fn label(self) -> &'static str {
        match self {
            RefusalKind::Tls => "tls",
            RefusalKind::NoName => "no_name",
            RefusalKind::Version => "version",
            RefusalKind::Identity => "identity",
            RefusalKind::DuplicateIdentity => "duplicate_identity",
            RefusalKind::Revoked => "revoked",
        }
    }
}

/// The [`LATENCY_BUCKETS`] bucket of a latency in µs.
pub fn latency_bucket(us: u64) -> usize {
    LATENCY_BUCKETS
        .iter()
        .position(|&ub| us <= ub)
        .unwrap_or(LATENCY_BUCKETS.len() - 1)
}

/// Upper bounds of the relay-latency histogram, µs.
pub const LATENCY_BUCKETS: [u64; 12] = [
    100,
    250,
    500,
    1000,
    2000,
    5000,
    10_000,
    25_000,
    50_000,
    100_000,
    1_000_000,
    u64::MAX,
];

/// The result of a bgapi job.
pub type JobResult = Result<String, String>;

/// A job's result and when its BACKGROUND_JOB reached the agent (agent
/// clock, µs since the epoch).
type JobDone = (JobResult, u64);

/// What happened, for apps and observers.
#[derive(Clone, Debug)]
pub enum ClusterEvent {
    /// An event from a node.
    Event(String, Arc<Event>),
    /// A session ended (also synthetic ends: restart, resync, reaper).
    Finished(Arc<Finished>),
    /// Everything before this was published (only to the durable
    /// consumer: see [`Pipeline::subscribe_durable`]).
    Mark(u64),
}

/// A change of the tracker that returns the sessions it ended.
type TrackerChange = Box<dyn FnOnce(&mut Tracker) -> Vec<Finished> + Send>;

/// A change of the cluster's state, for its one owner (the state task).
enum StateCmd {
    /// Apply a batch of a node's events; answers with the pipeline mark
    /// after which they are published.
    Apply {
        node: String,
        batch: Vec<wire::WireEvent>,
        done: oneshot::Sender<u64>,
    },
    /// Change the tracker (an announced leg, a resync, a close-out …) and
    /// publish the sessions it ends; answers with how many.
    Change {
        f: TrackerChange,
        done: oneshot::Sender<usize>,
    },
}

/// Changes queued for the state task at most (each session's reads wait
/// beyond it: backpressure up to the agents).
const STATE_QUEUE: usize = 64;

/// Batches each session may have queued for the state task whose Ack it
/// coalesces into one.
const ACK_COALESCE: usize = 64;

pub(crate) struct Inner {
    pub(crate) config: ClusterConfig,
    nodes: std::sync::RwLock<HashMap<String, NodeEntry>>,
    /// The state task's queue: the one way to change the tracker.
    state: mpsc::Sender<StateCmd>,
    /// The tracker as of the last change the state task applied.
    view: watch::Sender<Arc<TrackerView>>,
    jobs: std::sync::Mutex<HashMap<String, oneshot::Sender<JobDone>>>,
    next_cmd: AtomicU64,
    pub(crate) counters: Counters,
    pub(crate) instance: String,
    /// Where events and ends go, in tracker order.
    pub(crate) pipeline: Pipeline,
    /// Events each part of the controller needs (the tracker, the apps,
    /// …), by part; every agent subscribes their union.
    demand: std::sync::Mutex<std::collections::BTreeMap<String, Vec<String>>>,
    /// Serializes subscription pushes, so agents get them in order.
    demand_push: tokio::sync::Mutex<()>,
    /// App verdicts of live calls, by call id (with the app), until their
    /// CDR takes them.
    verdicts: std::sync::Mutex<HashMap<String, (String, Verdict)>>,
    /// Final verdicts (taken by CDRs) by (app, passed).
    verdict_counts: std::sync::Mutex<std::collections::BTreeMap<(String, bool), u64>>,
    /// The CDR writer's counters, while one runs (for `/metrics`).
    cdr_counters: std::sync::Mutex<Option<Arc<crate::cdr::CdrCounters>>>,
    /// SHA-256 fingerprints of revoked agent certificates.
    revoked: std::sync::RwLock<std::collections::HashSet<String>>,
}

/// What an app concluded about a call it checks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Verdict {
    /// Everything checked matched.
    Passed,
    /// Why not (a mismatch, or the call ended before the check finished).
    Failed(String),
}

impl Verdict {
    /// True for [`Verdict::Passed`].
    pub fn passed(&self) -> bool {
        matches!(self, Verdict::Passed)
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Passed => f.write_str("passed"),
            Verdict::Failed(why) => write!(f, "failed: {why}"),
        }
    }
}

/// The cluster handle (cheap to clone).
#[derive(Clone)]
pub struct Cluster {
    pub(crate) inner: Arc<Inner>,
}

/// Batches read from one agent and not yet acknowledged, before its
/// session stops reading (the agent's outbox holds them meanwhile).
const ACKS_IN_FLIGHT: usize = 4096;

/// Sends an agent the acknowledgement of each batch once it is durable,
/// one Ack for all the batches read while the last commit was waited for.
async fn ack_loop(
    cluster: Cluster,
    mut send: quinn::SendStream,
    mut rx: mpsc::Receiver<(oneshot::Receiver<u64>, u64)>,
) {
    while let Some((applied, mut upto)) = rx.recv().await {
        let Ok(mut mark) = applied.await else {
            return;
        };
        // Batches read meanwhile ride along (marks only grow; the state
        // task applies them in order, so each is soon done).
        for _ in 0..ACK_COALESCE {
            let Ok((applied, u)) = rx.try_recv() else {
                break;
            };
            let Ok(m) = applied.await else {
                return;
            };
            (mark, upto) = (m, u);
        }
        cluster.inner.pipeline.wait_durable(mark).await;
        let Ok(b) = wire::encode(&ControllerMsg::Ack { upto }) else {
            continue;
        };
        if send.write_all(&b).await.is_err() {
            return;
        }
    }
}

/// The one owner of the tracker: applies batches and changes in the order
/// they come, publishes a [`TrackerView`] after each, then their events and
/// ends. Ends when the cluster is dropped.
async fn state_task(
    inner: std::sync::Weak<Inner>,
    mut tracker: Tracker,
    mut rx: mpsc::Receiver<StateCmd>,
) {
    while let Some(cmd) = rx.recv().await {
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let cluster = Cluster { inner };
        match cmd {
            StateCmd::Apply { node, batch, done } => {
                let mark = cluster.apply_batch(&mut tracker, &node, batch).await;
                let _ = done.send(mark);
            }
            StateCmd::Change { f, done } => {
                let n = cluster.change(&mut tracker, f).await;
                let _ = done.send(n);
            }
        }
    }
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// No such node, or its agent is not connected.
    #[error("node {0} is not connected: check its switchy-agent (GET /api/v1/nodes)")]
    NodeDown(String),
    /// The agent could not run it (ESL down …).
    #[error("node {node}: {reason}")]
    Agent {
        /// Node.
        node: String,
        /// Why.
        reason: String,
    },
    /// No answer in time.
    #[error("node {0}: no reply within the command timeout")]
    Timeout(String),
    /// The QUIC stream failed.
    #[error("node {node}: transport error: {reason}")]
    Transport {
        /// Node.
        node: String,
        /// Why.
        reason: String,
    },
    /// Invalid argument (injection attempt …).
    #[error("invalid command argument: {0}")]
    Invalid(String),
    /// A command for every node failed on some.
    #[error("{0}")]
    Nodes(String),
}

impl Cluster {
    /// A cluster with no nodes yet; starts its state task (call it inside
    /// a tokio runtime).
    pub fn new(config: ClusterConfig) -> Cluster {
        let tracking = config.tracking;
        let mut tracker = Tracker::new(&config.tracking_var);
        tracker.set_limits(config.max_sessions_per_node, config.max_sessions);
        let (view, _) = watch::channel(Arc::new(tracker.view()));
        let (state, rx) = mpsc::channel(STATE_QUEUE);
        Cluster {
            inner: Arc::new_cyclic(|me| {
                tokio::spawn(state_task(me.clone(), tracker, rx));
                Inner {
                    state,
                    view,
                    config,
                    nodes: std::sync::RwLock::new(HashMap::new()),
                    jobs: std::sync::Mutex::new(HashMap::new()),
                    next_cmd: AtomicU64::new(1),
                    counters: Counters::default(),
                    instance: uuid::Uuid::new_v4().to_string(),
                    pipeline: Pipeline::default(),
                    demand: std::sync::Mutex::new(
                        [(
                            "tracker".to_owned(),
                            tracking.events().iter().map(|e| (*e).to_owned()).collect(),
                        )]
                        .into(),
                    ),
                    demand_push: tokio::sync::Mutex::new(()),
                    verdicts: std::sync::Mutex::new(HashMap::new()),
                    verdict_counts: std::sync::Mutex::new(Default::default()),
                    cdr_counters: std::sync::Mutex::new(None),
                    revoked: Default::default(),
                }
            }),
        }
    }

    /// A lossless consumer of cluster events (see [`Pipeline::subscribe`]):
    /// while its queue of `capacity` is full the cluster waits for it, and
    /// the agents' acknowledgements with it.
    pub fn subscribe(
        &self,
        name: &str,
        feed: Feed,
        capacity: usize,
    ) -> mpsc::Receiver<ClusterEvent> {
        self.inner.pipeline.subscribe(name, feed, capacity)
    }

    /// The durable consumer (the CDR writer): as [`Cluster::subscribe`],
    /// and the agents' batches are acknowledged only once it reports them
    /// committed (see [`Pipeline::subscribe_durable`]).
    pub fn subscribe_durable(
        &self,
        name: &str,
        feed: Feed,
        capacity: usize,
    ) -> (mpsc::Receiver<ClusterEvent>, crate::pipeline::Durability) {
        self.inner.pipeline.subscribe_durable(name, feed, capacity)
    }

    /// Replaces the revocation list (certificate SHA-256 fingerprints, hex)
    /// and closes the connections of agents now on it; returns how many.
    pub fn set_revoked(&self, fingerprints: impl IntoIterator<Item = String>) -> usize {
        let set: std::collections::HashSet<String> = fingerprints
            .into_iter()
            .map(|f| f.trim().to_ascii_lowercase().replace(':', ""))
            .filter(|f| !f.is_empty())
            .collect();
        *self
            .inner
            .revoked
            .write()
            .unwrap_or_else(|p| p.into_inner()) = set.clone();
        let mut closed = 0;
        let g = self.inner.nodes.read().unwrap_or_else(|p| p.into_inner());
        for e in g.values() {
            if let Some(c) = &e.conn
                && switchy_link::tls::peer_fingerprint(c).is_some_and(|f| set.contains(&f))
            {
                c.close(5u32.into(), b"revoked");
                closed += 1;
            }
        }
        closed
    }

    /// Shows a CDR writer's counters in `/metrics`.
    pub fn set_cdr_counters(&self, c: Arc<crate::cdr::CdrCounters>) {
        *self
            .inner
            .cdr_counters
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(c);
    }

    /// The CDR writer's counters, if one runs.
    pub fn cdr_counters(&self) -> Option<Arc<crate::cdr::CdrCounters>> {
        self.inner
            .cdr_counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A best-effort observer of cluster events (never slows the cluster;
    /// what it misses is counted in `/metrics`).
    pub fn observe(&self) -> Observer {
        self.inner.pipeline.observe()
    }

    /// The event fan-out (for its counters).
    pub fn pipeline(&self) -> &Pipeline {
        &self.inner.pipeline
    }

    /// Counters.
    pub fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    /// The configuration.
    pub fn config(&self) -> &ClusterConfig {
        &self.inner.config
    }

    /// The tracker as of the last change applied (no lock on the live
    /// state: events go on being applied meanwhile). Every consumer of an
    /// event finds the event's session in it.
    pub fn view(&self) -> Arc<TrackerView> {
        self.inner.view.borrow().clone()
    }

    /// Runs `f` on [`Cluster::view`].
    pub fn with_tracker<R>(&self, f: impl FnOnce(&TrackerView) -> R) -> R {
        f(&self.view())
    }

    /// All nodes, sorted by id.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        let g = self.inner.nodes.read().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<NodeInfo> = g.values().map(|n| n.info.clone()).collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// One node's registry entry.
    pub fn node_info(&self, id: &str) -> Option<NodeInfo> {
        let g = self.inner.nodes.read().unwrap_or_else(|p| p.into_inner());
        g.get(id).map(|n| n.info.clone())
    }

    /// A handle to send commands to a node.
    pub fn node(&self, id: &str) -> Node {
        Node {
            cluster: self.clone(),
            id: id.to_owned(),
        }
    }

    /// A handle to act on a session (found on whichever node holds it).
    pub fn session(&self, uuid: &str) -> Option<Session> {
        let node = self.with_tracker(|t| t.session(uuid).map(|s| s.node.clone()))?;
        Some(Session {
            node: self.node(&node),
            uuid: uuid.to_owned(),
        })
    }

    /// Records (or replaces) an app's verdict on a call; its CDR takes the
    /// latest one. An app that checks something sets a failing verdict
    /// ("cut short") first and replaces it once the check is done, so a
    /// call that ends early is never counted as passed.
    pub fn set_verdict(&self, call: &str, app: &str, v: Verdict) {
        let mut g = self
            .inner
            .verdicts
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // Calls whose CDR is never built (no writer) must not grow it
        // without bound: the oldest are not tracked, so clear when huge.
        if g.len() >= 1_000_000 && !g.contains_key(call) {
            tracing::warn!("over a million app verdicts without a CDR writer: forgetting them");
            g.clear();
        }
        g.insert(call.to_owned(), (app.to_owned(), v));
    }

    /// A live call's latest verdict.
    pub fn verdict(&self, call: &str) -> Option<Verdict> {
        self.inner
            .verdicts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(call)
            .map(|(_, v)| v.clone())
    }

    /// Takes a call's final verdict (for its CDR) and counts it.
    pub fn take_verdict(&self, call: &str) -> Option<Verdict> {
        let (app, v) = self
            .inner
            .verdicts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(call)?;
        *self
            .inner
            .verdict_counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((app, v.passed()))
            .or_default() += 1;
        Some(v)
    }

    /// Final verdicts so far: (app, passed) → calls.
    pub fn verdict_counts(&self) -> std::collections::BTreeMap<(String, bool), u64> {
        self.inner
            .verdict_counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Announces a leg about to be originated (see [`Tracker::expect_leg`]);
    /// done once the tracker has it.
    pub async fn expect_leg(&self, uuid: &str, node: &str, call: &str) {
        let (uuid, node, call) = (uuid.to_owned(), node.to_owned(), call.to_owned());
        self.close_out(move |t| {
            t.expect_leg(&uuid, &node, &call);
            Vec::new()
        })
        .await;
    }

    /// Drops an announced leg FreeSWITCH never reported; true if it was
    /// still pending.
    pub async fn forget_pending(&self, uuid: &str) -> bool {
        let (tx, rx) = oneshot::channel();
        let uuid = uuid.to_owned();
        self.close_out(move |t| {
            let _ = tx.send(t.forget_pending(&uuid));
            Vec::new()
        })
        .await;
        rx.await.unwrap_or(false)
    }

    /// The events every node must subscribe now: the union of what each
    /// part of the controller asked for.
    pub fn wanted_events(&self) -> Vec<String> {
        let g = self.inner.demand.lock().unwrap_or_else(|p| p.into_inner());
        let set: std::collections::BTreeSet<String> = g.values().flatten().cloned().collect();
        if set.iter().any(|e| e.eq_ignore_ascii_case("ALL")) {
            return vec!["ALL".into()];
        }
        set.into_iter().collect()
    }

    /// True when some part of the controller asks for `event` (or `ALL`),
    /// without building the whole set (a check on a hot path).
    pub fn demands(&self, event: &str) -> bool {
        self.inner
            .demand
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .flatten()
            .any(|e| e == event || e.eq_ignore_ascii_case("ALL"))
    }

    /// Sets what `part` (the tracker, the apps, the router …) needs; when
    /// the union changes every connected agent subscribes the new set and
    /// unsubscribes what nobody needs any more (each agent that connects
    /// later gets it in its Welcome), so a callback on an event is never
    /// left waiting and FreeSWITCH serializes nothing nobody reads.
    pub async fn set_demand(&self, part: &str, events: &[String]) {
        let _push = self.inner.demand_push.lock().await;
        let before = self.wanted_events();
        {
            let mut g = self.inner.demand.lock().unwrap_or_else(|p| p.into_inner());
            if events.is_empty() {
                g.remove(part);
            } else {
                g.insert(part.to_owned(), events.to_vec());
            }
        }
        let after = self.wanted_events();
        if after == before {
            return;
        }
        let nodes: Vec<String> = self
            .nodes()
            .into_iter()
            .filter(|n| n.agent == AgentLink::Connected)
            .map(|n| n.id)
            .collect();
        for n in nodes {
            if let Err(e) = self
                .command(
                    &n,
                    CommandKind::Subscription {
                        events: after.clone(),
                    },
                )
                .await
            {
                tracing::warn!(node = %n, error = %e, "could not change the node's event subscription; it gets it when its agent reconnects");
            }
        }
    }

    /// Has the state task change the tracker with `f` and publish the
    /// ends it returns (synthetic ends: restart, resync, reaper), in order
    /// with the events it applies; returns how many.
    pub(crate) async fn close_out(
        &self,
        f: impl FnOnce(&mut Tracker) -> Vec<Finished> + Send + 'static,
    ) -> usize {
        let (done, rx) = oneshot::channel();
        let cmd = StateCmd::Change {
            f: Box::new(f),
            done,
        };
        if self.inner.state.send(cmd).await.is_err() {
            return 0;
        }
        rx.await.unwrap_or(0)
    }

    /// The state task's side of [`Cluster::close_out`].
    async fn change(&self, t: &mut Tracker, f: TrackerChange) -> usize {
        let fs = f(t);
        self.inner.view.send_replace(Arc::new(t.view()));
        let n = fs.len();
        let evs = fs
            .into_iter()
            .map(|f| {
                tracing::info!(node = %f.session.node, session = %f.session.uuid, cause = %f.cause, "session closed out");
                ClusterEvent::Finished(Arc::new(f))
            })
            .collect();
        self.inner.pipeline.publish(evs).await;
        n
    }

    /// Starts the QUIC listener for agents; returns its bound address.
    pub async fn listen(
        &self,
        addr: SocketAddr,
        server: quinn::ServerConfig,
    ) -> Result<Listener, crate::StartError> {
        let endpoint = Self::bind(addr, server)?;
        self.serve(endpoint)
    }

    /// Binds the agents' QUIC endpoint without taking connections yet
    /// (agents that reach it wait in their handshake until
    /// [`Cluster::serve`]).
    pub fn bind(
        addr: SocketAddr,
        server: quinn::ServerConfig,
    ) -> Result<quinn::Endpoint, crate::StartError> {
        switchy_link::tls::quic_endpoint(addr, Some(server))
            .map_err(|source| crate::StartError::ListenAgents { addr, source })
    }

    /// Takes agents' connections on `endpoint` (and starts the reaper).
    pub fn serve(&self, endpoint: quinn::Endpoint) -> Result<Listener, crate::StartError> {
        let local = endpoint
            .local_addr()
            .map_err(|source| crate::StartError::ListenAgents {
                addr: SocketAddr::from(([0, 0, 0, 0], 0)),
                source,
            })?;
        let me = self.clone();
        let ep = endpoint.clone();
        let task = tokio::spawn(async move {
            while let Some(incoming) = endpoint.accept().await {
                let me = me.clone();
                tokio::spawn(async move {
                    match incoming.await {
                        Ok(conn) => me.agent_session(conn).await,
                        Err(e) => {
                            me.count_refusal(RefusalKind::Tls);
                            tracing::warn!(error = %e, "agent connection refused (TLS: unknown, expired or missing certificate?)");
                        }
                    }
                });
            }
        });
        // The reaper.
        let me = self.clone();
        let reaper = tokio::spawn(async move {
            let cfg = &me.inner.config;
            let every = (cfg.max_channel_age / 10)
                .min(cfg.node_gone_grace / 4)
                .clamp(Duration::from_millis(100), Duration::from_secs(60));
            loop {
                tokio::time::sleep(every).await;
                let gone: Vec<String> = me
                    .inner
                    .nodes
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .values()
                    .filter(|e| {
                        e.gone_since
                            .is_some_and(|t| t.elapsed() >= cfg.node_gone_grace)
                    })
                    .map(|e| e.info.id.clone())
                    .collect();
                for node in gone {
                    let id = node.clone();
                    let n = me.close_out(move |t| t.node_gone(&id)).await;
                    if n > 0 {
                        tracing::warn!(node = %node, sessions = n, grace_s = cfg.node_gone_grace.as_secs(), "agent gone past the grace period: its sessions are closed out");
                    }
                }
                let age = me.inner.config.max_channel_age.as_micros() as u64;
                let reaped = me.close_out(move |t| t.reap(age)).await;
                if reaped > 0 {
                    tracing::warn!(
                        count = reaped,
                        "reaped channels that never received CHANNEL_DESTROY"
                    );
                }
            }
        });
        Ok(Listener {
            addr: local,
            endpoint: ep,
            tasks: vec![task, reaper],
        })
    }

    async fn agent_session(&self, conn: quinn::Connection) {
        if let Some(f) = switchy_link::tls::peer_fingerprint(&conn)
            && self
                .inner
                .revoked
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&f)
        {
            tracing::warn!(remote = %conn.remote_address(), fingerprint = %f, "agent certificate is revoked; closing");
            self.count_refusal(RefusalKind::Revoked);
            conn.close(
                5u32.into(),
                b"certificate revoked: issue a new one with `ca issue --force`",
            );
            return;
        }
        let Some(node_id) = crate::tls::peer_node_id(&conn) else {
            tracing::warn!(remote = %conn.remote_address(), "agent certificate has no name; closing");
            self.count_refusal(RefusalKind::NoName);
            conn.close(
                1u32.into(),
                b"certificate without a node name: issue one with `switchy-controller ca issue --name <node id>`",
            );
            return;
        };
        let span = tracing::info_span!("node", node = %node_id, remote = %conn.remote_address());
        tracing::Instrument::instrument(self.node_session(conn, node_id), span).await
    }

    async fn node_session(&self, conn: quinn::Connection, node_id: String) {
        let (mut send, mut recv) = match conn.accept_bi().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(node = %node_id, error = %e, "agent opened no event stream");
                return;
            }
        };
        let hello = match read_frame::<AgentMsg>(&mut recv).await {
            Ok(AgentMsg::Hello(h)) => h,
            Ok(other) => {
                tracing::warn!(node = %node_id, "first message was not Hello: {other:?}");
                return;
            }
            Err(e) => {
                tracing::warn!(node = %node_id, error = %e, "no Hello from agent");
                return;
            }
        };
        if let Err(refusal) = NodeLink::check(&hello, &node_id) {
            let kind = match refusal {
                switchy_protocol::link::Refusal::Version { .. } => RefusalKind::Version,
                switchy_protocol::link::Refusal::Identity { .. } => RefusalKind::Identity,
            };
            self.refuse(&node_id, &conn, &mut send, kind, refusal.to_string())
                .await;
            return;
        }
        let duplicate = {
            let mut g = self.inner.nodes.write().unwrap_or_else(|p| p.into_inner());
            let e = g.entry(node_id.clone()).or_insert_with(|| NodeEntry {
                info: NodeInfo {
                    id: node_id.clone(),
                    agent: AgentLink::Connected,
                    esl: EslLink::Down,
                    reason: None,
                    hostname: None,
                    core_uuid: None,
                    profiles: Vec::new(),
                    events: 0,
                    agent_dropped: 0,
                    agent_buffered: 0,
                    connects: 0,
                    max_sessions: None,
                    load: None,
                    heartbeat_idle_cpu: None,
                },
                conn: None,
                link: NodeLink::default(),
                gone_since: None,
            });
            // One live connection per identity: while the connection of
            // another agent process is healthy (keep-alives answered), a
            // second process with the same certificate is refused; the
            // same process reconnecting replaces its own old connection.
            match e.conn.as_ref() {
                Some(old)
                    if old.close_reason().is_none()
                        && !e.link.instance.is_empty()
                        && e.link.instance != hello.agent_instance =>
                {
                    Some(old.remote_address())
                }
                _ => {
                    if let Some(old) = e.conn.replace(conn.clone()) {
                        old.close(3u32.into(), b"replaced by a new connection");
                    }
                    // Checked above: only the instance can change here.
                    let _same_process = e.link.hello(&hello, &node_id).unwrap_or(false);
                    e.info.agent = AgentLink::Connected;
                    e.gone_since = None;
                    e.info.connects += 1;
                    if hello.hostname.is_some() {
                        e.info.hostname = hello.hostname.clone();
                    }
                    if !hello.profiles.is_empty() {
                        e.info.profiles = hello.profiles.clone();
                    }
                    None
                }
            }
        };
        if let Some(holder) = duplicate {
            let reason = format!(
                "node {node_id} is already connected from {holder} by another agent process: two agents share this identity. Stop one, or give each its own node id and certificate (`switchy-controller ca issue --name <id>`); this agent is accepted once the other has been gone ~2 s"
            );
            self.refuse(
                &node_id,
                &conn,
                &mut send,
                RefusalKind::DuplicateIdentity,
                reason,
            )
            .await;
            return;
        }
        if let Some(core) = &hello.core_uuid {
            self.core_seen(&node_id, core).await;
        }
        let welcome = ControllerMsg::Welcome {
            wire_version: WIRE_VERSION,
            controller_id: self.inner.instance.clone(),
            events: self.wanted_events(),
        };
        match wire::encode(&welcome) {
            Ok(b) => {
                if send.write_all(&b).await.is_err() {
                    return;
                }
            }
            Err(_) => return,
        }
        tracing::info!(node = %node_id, "agent connected");
        // Acknowledgements go out from their own task, each once the batch
        // it covers is durable, so reading the next batch never waits for
        // a commit.
        let (ack_tx, ack_rx) = mpsc::channel::<(oneshot::Receiver<u64>, u64)>(ACKS_IN_FLIGHT);
        let acker = tokio::spawn(ack_loop(self.clone(), send, ack_rx));
        let mut buf = Vec::with_capacity(1 << 20);
        loop {
            let msg = match read_frame_into::<AgentMsg>(&mut recv, &mut buf).await {
                Ok(m) => m,
                Err(e) => {
                    // An agent that stops says so in its close frame.
                    let stopping = matches!(
                        conn.close_reason(),
                        Some(quinn::ConnectionError::ApplicationClosed(c)) if &c.reason[..] == AGENT_STOPPING
                    );
                    if stopping {
                        tracing::info!(node = %node_id, "agent stopped");
                    } else {
                        tracing::warn!(node = %node_id, error = %e, "agent event stream ended");
                    }
                    break;
                }
            };
            match msg {
                AgentMsg::Events(batch) => {
                    // The state task applies it; this session reads on
                    // (the state queue bounds how far ahead).
                    let upto = batch.last().map(|e| e.seq).unwrap_or(0);
                    let (done, applied) = oneshot::channel();
                    let cmd = StateCmd::Apply {
                        node: node_id.clone(),
                        batch,
                        done,
                    };
                    if self.inner.state.send(cmd).await.is_err()
                        || ack_tx.send((applied, upto)).await.is_err()
                    {
                        break;
                    }
                }
                AgentMsg::Snapshot(s) => {
                    self.core_seen(&node_id, &s.core_uuid).await;
                    let channels = s.channels.len();
                    let (node, core) = (node_id.clone(), s.core_uuid.clone());
                    let closed = self
                        .close_out(move |t| t.resync(&node, &core, &s.channels))
                        .await;
                    tracing::info!(node = %node_id, channels, closed, "resynced from snapshot");
                }
                AgentMsg::Status(st) => self.status(&node_id, st).await,
                AgentMsg::Heartbeat {
                    dropped,
                    buffered,
                    load,
                    ..
                } => {
                    let mut g = self.inner.nodes.write().unwrap_or_else(|p| p.into_inner());
                    if let Some(e) = g.get_mut(&node_id) {
                        e.info.agent_dropped = dropped;
                        e.info.agent_buffered = buffered;
                        if load.is_some() {
                            e.info.load = load;
                        }
                    }
                }
                AgentMsg::Hello(_) => {}
            }
        }
        // Batches already durable are still acknowledged; the rest the
        // agent re-sends to whichever controller it reaches next.
        drop(ack_tx);
        let _ = tokio::time::timeout(Duration::from_secs(1), acker).await;
        let mut g = self.inner.nodes.write().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = g.get_mut(&node_id)
            && e.conn
                .as_ref()
                .is_some_and(|c| c.stable_id() == conn.stable_id())
        {
            e.conn = None;
            e.info.agent = AgentLink::Disconnected;
            e.gone_since = Some(std::time::Instant::now());
        }
    }

    fn count_refusal(&self, kind: RefusalKind) {
        let c = &self.inner.counters;
        c.refused.fetch_add(1, Ordering::Relaxed);
        if let Some(i) = RefusalKind::ALL.iter().position(|k| *k == kind) {
            c.refused_by[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Tells the agent why (a Refused message, then a close), counts it.
    async fn refuse(
        &self,
        node: &str,
        conn: &quinn::Connection,
        send: &mut quinn::SendStream,
        kind: RefusalKind,
        reason: String,
    ) {
        tracing::error!(node = %node, remote = %conn.remote_address(), kind = kind.label(), %reason, "agent refused");
        self.count_refusal(kind);
        if let Ok(b) = wire::encode(&ControllerMsg::Refused { reason }) {
            let _ = send.write_all(&b).await;
            let _ = send.finish();
            let _ = tokio::time::timeout(Duration::from_secs(1), send.stopped()).await;
        }
        conn.close(2u32.into(), kind.label().as_bytes());
    }

    async fn core_seen(&self, node: &str, core: &str) {
        if core.is_empty() {
            return;
        }
        let changed = {
            let mut g = self.inner.nodes.write().unwrap_or_else(|p| p.into_inner());
            match g.get_mut(node) {
                Some(e) => {
                    let changed = e.info.core_uuid.as_deref().is_some_and(|c| c != core);
                    e.info.core_uuid = Some(core.to_owned());
                    changed
                }
                None => false,
            }
        };
        if changed {
            tracing::warn!(node = %node, core_uuid = %core, "FreeSWITCH restarted (new Core-UUID): closing out its old channels");
            let (node, core) = (node.to_owned(), core.to_owned());
            self.close_out(move |t| t.node_restarted(&node, &core))
                .await;
        }
    }

    async fn status(&self, node: &str, st: EslState) {
        if let EslState::Up { core_uuid, .. } = &st {
            self.core_seen(node, core_uuid).await;
        }
        let mut g = self.inner.nodes.write().unwrap_or_else(|p| p.into_inner());
        let Some(e) = g.get_mut(node) else { return };
        match st {
            EslState::Up {
                hostname, profiles, ..
            } => {
                e.info.esl = EslLink::Up;
                e.info.reason = None;
                e.info.hostname = Some(hostname);
                e.info.profiles = profiles;
            }
            EslState::Down(r) => {
                e.info.esl = EslLink::Down;
                e.info.reason = Some(r);
            }
            EslState::Degraded(r) => {
                e.info.esl = EslLink::Degraded;
                e.info.reason = Some(r);
            }
        }
        tracing::info!(node = %node, esl = %e.info.esl, "node status");
    }

    /// Applies a batch to the tracker and publishes it; returns, once every
    /// lossless consumer has taken it, the mark to acknowledge it after
    /// (see [`Pipeline::wait_durable`]).
    async fn apply_batch(&self, t: &mut Tracker, node: &str, batch: Vec<wire::WireEvent>) -> u64 {
        let mut out = Vec::with_capacity(batch.len() + 4);
        let mut jobs = Vec::new();
        let accepted = {
            let g = self.inner.nodes.read().unwrap_or_else(|p| p.into_inner());
            match g.get(node) {
                Some(e) => e.link.accept(batch),
                None => NodeLink::default().accept(batch),
            }
        };
        self.inner
            .counters
            .duplicates
            .fetch_add(accepted.duplicates, Ordering::Relaxed);
        let last = accepted.fresh.last().map_or(0, |e| e.seq);
        let count = accepted.fresh.len() as u64;
        for we in accepted.fresh {
            let rx_us = we.received_us;
            let e = match we.into_event() {
                Ok(e) => Arc::new(e),
                Err(error) => {
                    tracing::warn!(node = %node, %error, "undecodable event from agent skipped");
                    continue;
                }
            };
            let finished = t.apply(node, &e);
            out.push(ClusterEvent::Event(node.to_owned(), e.clone()));
            if let Some(f) = finished {
                out.push(ClusterEvent::Finished(Arc::new(f)));
            }
            let now = now_us();
            let c = &self.inner.counters;
            if let Some(ts) = e.timestamp() {
                let lat = now.saturating_sub(ts);
                c.latency_sum_us.fetch_add(lat, Ordering::Relaxed);
                c.latency_buckets[latency_bucket(lat)].fetch_add(1, Ordering::Relaxed);
            }
            let lat = now.saturating_sub(rx_us);
            c.agent_latency_sum_us.fetch_add(lat, Ordering::Relaxed);
            c.agent_latency_buckets[latency_bucket(lat)].fetch_add(1, Ordering::Relaxed);
            if e.event_name() == Some("HEARTBEAT") {
                let max = e.get("Max-Sessions").and_then(|v| v.parse::<u64>().ok());
                let idle = e.get("Idle-CPU").and_then(|v| v.parse::<f64>().ok());
                let mut g = self.inner.nodes.write().unwrap_or_else(|p| p.into_inner());
                if let Some(n) = g.get_mut(node) {
                    n.info.max_sessions = max.or(n.info.max_sessions);
                    n.info.heartbeat_idle_cpu = idle.or(n.info.heartbeat_idle_cpu);
                }
            }
            if e.event_name() == Some("BACKGROUND_JOB") && e.job_uuid().is_some() {
                jobs.push((e.clone(), rx_us));
            }
        }
        // Readers of the view see the batch's sessions before any consumer
        // gets its events; consumers see the batch (a job's channel events
        // included) before anyone waiting for a job of it learns the result.
        self.inner.view.send_replace(Arc::new(t.view()));
        let mark = self.inner.pipeline.publish(out).await;
        self.inner
            .counters
            .events
            .fetch_add(count, Ordering::Relaxed);
        {
            let mut g = self.inner.nodes.write().unwrap_or_else(|p| p.into_inner());
            if let Some(e) = g.get_mut(node) {
                e.link.applied(last);
                e.info.events += count;
            }
        }
        for (e, rx_us) in jobs {
            if let Some(job) = e.job_uuid() {
                let tx = self
                    .inner
                    .jobs
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(job);
                if let Some(tx) = tx {
                    let body = e.body.as_deref().unwrap_or_default();
                    let r = match api_result(body) {
                        Ok(t) => Ok(t.into_owned()),
                        Err(err) => Err(err.text),
                    };
                    let _ = tx.send((r, rx_us));
                }
            }
        }
        mark
    }

    /// Sends one command to a node on its own QUIC stream.
    pub async fn command(&self, node: &str, kind: CommandKind) -> Result<String, CommandError> {
        self.command_timed(node, kind).await.map(|(r, _)| r)
    }

    /// As [`Cluster::command`], with the agent clock (µs) when the agent
    /// wrote the command to FreeSWITCH.
    pub async fn command_timed(
        &self,
        node: &str,
        kind: CommandKind,
    ) -> Result<(String, u64), CommandError> {
        let conn = {
            let g = self.inner.nodes.read().unwrap_or_else(|p| p.into_inner());
            g.get(node).and_then(|e| e.conn.clone())
        }
        .ok_or_else(|| CommandError::NodeDown(node.to_owned()))?;
        let id = self.inner.next_cmd.fetch_add(1, Ordering::Relaxed);
        self.inner.counters.commands.fetch_add(1, Ordering::Relaxed);
        let t = |reason: String| CommandError::Transport {
            node: node.to_owned(),
            reason,
        };
        let fut = async {
            let (mut send, mut recv) = conn.open_bi().await.map_err(|e| t(e.to_string()))?;
            let bytes = wire::encode(&CommandRequest { id, kind }).map_err(|e| t(e.to_string()))?;
            send.write_all(&bytes).await.map_err(|e| t(e.to_string()))?;
            send.finish().map_err(|e| t(e.to_string()))?;
            let resp: CommandResponse =
                read_frame(&mut recv).await.map_err(|e| t(e.to_string()))?;
            let sent = resp.sent_us;
            resp.result
                .map(|r| (r, sent))
                .map_err(|reason| CommandError::Agent {
                    node: node.to_owned(),
                    reason,
                })
        };
        let r = match tokio::time::timeout(self.inner.config.command_timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(CommandError::Timeout(node.to_owned())),
        };
        if r.is_err() {
            self.inner
                .counters
                .command_errors
                .fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    /// Registers a job before its bgapi is sent.
    fn register_job(&self, job: &str) -> oneshot::Receiver<JobDone> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(job.to_owned(), tx);
        rx
    }

    /// Jobs in flight.
    pub fn jobs(&self) -> Vec<String> {
        self.inner
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    fn forget_job(&self, job: &str) {
        self.inner
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(job);
    }
}

/// The QUIC listener; dropping it closes every agent connection and frees
/// the port.
pub struct Listener {
    /// Bound address.
    pub addr: SocketAddr,
    endpoint: quinn::Endpoint,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.endpoint
            .close(0u32.into(), b"controller shutting down");
        for t in &self.tasks {
            t.abort();
        }
    }
}

pub use switchy_link::frame::{read_frame, read_frame_into};

/// A node of the cluster.
#[derive(Clone)]
pub struct Node {
    cluster: Cluster,
    /// Node id.
    pub id: String,
}

/// A fresh Job-UUID: 64 random bits in base 36 (at most 13 characters).
///
/// FreeSWITCH takes any word as a Job-UUID and only echoes it in the
/// BACKGROUND_JOB, and it reads a command one byte per `recv`: on a
/// generator node every byte of the per-call originate costs it about 2 µs
/// of CPU (docs/benchmarks.md), so this is at least 23 bytes shorter than a
/// formatted UUID (36). 64 bits keep ids unique among the jobs in flight and
/// across controller restarts.
pub fn job_id() -> String {
    let u = uuid::Uuid::new_v4().as_u128();
    // v4 fixes 6 of its 128 bits: folding the halves leaves 64 random ones.
    let mut n = (u >> 64) as u64 ^ u as u64;
    let mut out = Vec::with_capacity(13);
    loop {
        out.push(b"0123456789abcdefghijklmnopqrstuvwxyz"[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

/// A `bgapi` in flight; await [`Job::wait`] for its result.
pub struct Job {
    /// Job-UUID.
    pub uuid: String,
    /// Agent clock when the agent wrote the bgapi to FreeSWITCH, µs.
    pub sent_us: u64,
    rx: oneshot::Receiver<JobDone>,
    cluster: Cluster,
    timeout: Duration,
}

/// A finished job, timed on the agent's clock.
#[derive(Clone, Debug)]
pub struct JobOutcome {
    /// `Ok(text after +OK)` or `Err(-ERR text)`.
    pub result: JobResult,
    /// When the agent wrote the bgapi, µs since the epoch (agent clock).
    pub sent_us: u64,
    /// When the agent received the BACKGROUND_JOB, µs (agent clock; 0 if
    /// the job never finished).
    pub done_us: u64,
}

impl JobOutcome {
    /// Send → BACKGROUND_JOB on the agent's clock, µs (None if untimed).
    pub fn elapsed_us(&self) -> Option<u64> {
        (self.sent_us > 0 && self.done_us >= self.sent_us).then(|| self.done_us - self.sent_us)
    }
}

impl Job {
    /// The BACKGROUND_JOB result: `Ok(text after +OK)` or `Err(-ERR text)`.
    pub async fn wait(self) -> Result<String, String> {
        self.wait_timed().await.result
    }

    /// The result with the agent's send and receive times.
    pub async fn wait_timed(self) -> JobOutcome {
        let sent_us = self.sent_us;
        let (result, done_us) = match tokio::time::timeout(self.timeout, self.rx).await {
            Ok(Ok((r, at))) => (r, at),
            Ok(Err(_)) => (Err("job dropped".into()), 0),
            Err(_) => {
                self.cluster.forget_job(&self.uuid);
                (
                    Err(format!(
                        "job {} did not finish within {:?}",
                        self.uuid, self.timeout
                    )),
                    0,
                )
            }
        };
        JobOutcome {
            result,
            sent_us,
            done_us,
        }
    }
}

fn word(field: &str, v: &str) -> Result<(), CommandError> {
    if v.is_empty() || v.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(CommandError::Invalid(format!(
            "{field} {v:?} must be one word without spaces or control characters"
        )));
    }
    Ok(())
}

/// `v` must be safe as `context` (see `switchy_protocol::esl::args`).
fn arg(field: &str, context: args::Context, v: &str) -> Result<(), CommandError> {
    args::check(context, v).map_err(|e| CommandError::Invalid(format!("{field}: {e}")))
}

/// Variables switchy sets itself on an originate: a caller's copy would
/// hijack the call's tracking.
fn reserved_var(cluster: &Cluster, k: &str) -> bool {
    k.eq_ignore_ascii_case("origination_uuid")
        || k.eq_ignore_ascii_case(&cluster.inner.config.tracking_var)
}

/// An originate destination: an extension (one word), or `&app(args)` with
/// an application name and arguments that cannot start another application
/// or expand variables.
fn destination(dest: &str) -> Result<(), CommandError> {
    word("destination", dest)?;
    let Some(inline) = dest.strip_prefix('&') else {
        if dest.contains(['&', '(', ')', ',']) {
            return Err(CommandError::Invalid(format!(
                "destination {dest:?}: an extension has no `& ( ) ,`"
            )));
        }
        return Ok(());
    };
    let (name, rest) = inline.split_once('(').unwrap_or((inline, ""));
    let args = match rest.strip_suffix(')') {
        Some(a) => a,
        None if rest.is_empty() && !inline.contains('(') => "",
        None => {
            return Err(CommandError::Invalid(format!(
                "destination {dest:?}: `&app(args)` must end with `)`"
            )));
        }
    };
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(CommandError::Invalid(format!(
            "destination {dest:?}: the application name is letters, digits and `_`"
        )));
    }
    if args.contains(['(', ')', '&']) {
        return Err(CommandError::Invalid(format!(
            "destination {dest:?}: the arguments of `&{name}(…)` must not contain `( ) &`"
        )));
    }
    arg("destination arguments", args::Context::AppArg, args)
}

/// A `uuid_broadcast` path plays a file or stream; `app::args` would run
/// any dialplan application (`system::…` is a shell), so only playback
/// applications may be named.
fn broadcast_path(path: &str) -> Result<(), CommandError> {
    if let Some((app, _)) = path.split_once("::") {
        let app = app.split('!').next().unwrap_or(app);
        if !matches!(
            app,
            "playback" | "speak" | "say" | "gentones" | "endless_playback"
        ) {
            return Err(CommandError::Invalid(format!(
                "broadcast path {path:?}: `{app}::` would run an application; only playback, speak, say, gentones and endless_playback may"
            )));
        }
    }
    arg("broadcast path", args::Context::AppArg, path)
}

fn line(field: &str, v: &str) -> Result<(), CommandError> {
    if v.chars().any(|c| c == '\r' || c == '\n' || c == '\0') {
        return Err(CommandError::Invalid(format!(
            "{field} contains a line break"
        )));
    }
    Ok(())
}

impl Node {
    /// `api <command> <args>`: FreeSWITCH's output.
    pub async fn api(&self, command: &str, args: &str) -> Result<String, CommandError> {
        word("command", command)?;
        line("arguments", args)?;
        self.cluster
            .command(
                &self.id,
                CommandKind::Api {
                    command: command.into(),
                    args: args.into(),
                },
            )
            .await
    }

    /// `bgapi <command> <args>` with a controller-chosen Job-UUID (see
    /// [`job_id`]).
    pub async fn bgapi(&self, command: &str, args: &str) -> Result<Job, CommandError> {
        word("command", command)?;
        line("arguments", args)?;
        let uuid = job_id();
        let rx = self.cluster.register_job(&uuid);
        let kind = CommandKind::BgApi {
            command: command.into(),
            args: args.into(),
            job_uuid: uuid.clone(),
        };
        match self.cluster.command_timed(&self.id, kind).await {
            Ok((reply, sent_us)) if reply.starts_with("+OK") => Ok(Job {
                uuid,
                sent_us,
                rx,
                cluster: self.cluster.clone(),
                timeout: self.cluster.inner.config.job_timeout,
            }),
            Ok((reply, _)) => {
                self.cluster.forget_job(&uuid);
                Err(CommandError::Agent {
                    node: self.id.clone(),
                    reason: reply,
                })
            }
            Err(e) => {
                self.cluster.forget_job(&uuid);
                Err(e)
            }
        }
    }

    /// `sendmsg <uuid>` executing an application.
    pub async fn execute(&self, uuid: &str, app: &str, arg: &str) -> Result<String, CommandError> {
        self.execute_tagged(uuid, app, arg, None).await
    }

    /// As [`Node::execute`], with an `Event-UUID` that FreeSWITCH copies
    /// into the application's CHANNEL_EXECUTE_COMPLETE (`Application-UUID`).
    pub async fn execute_tagged(
        &self,
        uuid: &str,
        app: &str,
        arg: &str,
        event_uuid: Option<&str>,
    ) -> Result<String, CommandError> {
        word("uuid", uuid)?;
        word("application", app)?;
        if !app.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(CommandError::Invalid(format!(
                "application {app:?}: letters, digits and `_`"
            )));
        }
        let mut headers = vec![
            ("call-command".to_owned(), "execute".to_owned()),
            ("execute-app-name".to_owned(), app.to_owned()),
        ];
        let mut body = None;
        if arg.contains(['\r', '\n']) {
            body = Some(arg.as_bytes().to_vec());
        } else if !arg.is_empty() {
            headers.push(("execute-app-arg".to_owned(), arg.to_owned()));
        }
        if let Some(id) = event_uuid {
            headers.push(("Event-UUID".to_owned(), id.to_owned()));
        }
        self.cluster
            .command(
                &self.id,
                CommandKind::SendMsg {
                    uuid: uuid.into(),
                    headers,
                    body,
                },
            )
            .await
    }

    /// Originates a call: `dial` is the dial string (variables allowed),
    /// `dest` the destination (`&park()` …). The tracking variable is
    /// stamped automatically with the new leg's UUID, which is returned with
    /// the job.
    pub async fn originate(
        &self,
        dial: &str,
        dest: &str,
        vars: &[(String, String)],
    ) -> Result<(String, Job), CommandError> {
        destination(dest)?;
        word("dial string", dial)?;
        arg("dial string", args::Context::AppArg, dial)?;
        let uuid = uuid::Uuid::new_v4().to_string();
        let mut v = vec![
            format!("origination_uuid={uuid}"),
            format!("{}={uuid}", self.cluster.inner.config.tracking_var),
        ];
        for (k, val) in vars {
            arg("variable name", args::Context::VarName, k)?;
            if reserved_var(&self.cluster, k) {
                return Err(CommandError::Invalid(format!(
                    "variable {k} is set by switchy itself (it tracks the call)"
                )));
            }
            arg(&format!("variable {k}"), args::Context::DialVar, val)?;
            if val.contains(' ') {
                return Err(CommandError::Invalid(format!(
                    "variable {k} value {val:?} must not contain spaces"
                )));
            }
            v.push(format!("{k}={val}"));
        }
        let args = format!("{{{}}}{dial} {dest}", v.join(","));
        let job = self.bgapi("originate", &args).await?;
        Ok((uuid, job))
    }
}

/// A channel on a node; methods mirror switchy's Session API and build the
/// ESL command for it.
#[derive(Clone)]
pub struct Session {
    /// The node holding it.
    pub node: Node,
    /// Its UUID.
    pub uuid: String,
}

fn ok_or_err(r: String) -> Result<String, CommandError> {
    if r.starts_with('-') {
        Err(CommandError::Agent {
            node: String::new(),
            reason: r.trim_end().to_owned(),
        })
    } else {
        Ok(r)
    }
}

impl Session {
    async fn api(&self, command: &str, args: String) -> Result<String, CommandError> {
        ok_or_err(self.node.api(command, &args).await?)
    }

    /// `uuid_answer`.
    pub async fn answer(&self) -> Result<String, CommandError> {
        self.api("uuid_answer", self.uuid.clone()).await
    }

    /// `uuid_kill <uuid> <cause>`.
    pub async fn hangup(&self, cause: &str) -> Result<String, CommandError> {
        word("cause", cause)?;
        self.api("uuid_kill", format!("{} {cause}", self.uuid))
            .await
    }

    /// `uuid_park`.
    pub async fn park(&self) -> Result<String, CommandError> {
        self.api("uuid_park", self.uuid.clone()).await
    }

    /// Bridges to a destination: `sofia/<profile>/<dest_url>` or
    /// `sofia/gateway/<gateway>/<dest_url>`, through `proxy` (`fs_path`),
    /// with `{params}` variables.
    pub async fn bridge(
        &self,
        dest_url: &str,
        profile: &str,
        gateway: Option<&str>,
        proxy: Option<&str>,
        params: &[(String, String)],
    ) -> Result<String, CommandError> {
        word("destination", dest_url)?;
        arg("destination", args::Context::Dial, dest_url)?;
        let mut dial = match gateway {
            Some(g) => {
                word("gateway", g)?;
                arg("gateway", args::Context::Dial, g)?;
                format!("sofia/gateway/{g}/{dest_url}")
            }
            None => {
                word("profile", profile)?;
                arg("profile", args::Context::Dial, profile)?;
                format!("sofia/{profile}/{dest_url}")
            }
        };
        if let Some(p) = proxy {
            word("proxy", p)?;
            arg("proxy", args::Context::Dial, p)?;
            dial.push_str(&format!(";fs_path=sip:{p}"));
        }
        if !params.is_empty() {
            let mut vars = Vec::with_capacity(params.len());
            for (k, v) in params {
                arg("variable name", args::Context::VarName, k)?;
                arg(&format!("variable {k}"), args::Context::DialVar, v)?;
                vars.push(format!("{k}={v}"));
            }
            dial = format!("{{{}}}{dial}", vars.join(","));
        }
        line("bridge", &dial)?;
        ok_or_err(self.node.execute(&self.uuid, "bridge", &dial).await?)
    }

    /// `uuid_broadcast <uuid> <args> <leg>` (playback of a file or stream).
    pub async fn playback(
        &self,
        args: &str,
        leg: &str,
        params: &[(String, String)],
    ) -> Result<String, CommandError> {
        word("playback", args)?;
        broadcast_path(args)?;
        word("leg", leg)?;
        for (k, v) in params {
            arg("variable name", args::Context::VarName, k)?;
            arg(&format!("variable {k}"), args::Context::DialVar, v)?;
        }
        let path = if params.is_empty() {
            args.to_owned()
        } else {
            format!(
                "{{{}}}{args}",
                params
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            )
        };
        self.api("uuid_broadcast", format!("{} {path} {leg}", self.uuid))
            .await
    }

    /// `uuid_broadcast <uuid> <path>[!cause] <leg>`.
    pub async fn broadcast(
        &self,
        path: &str,
        leg: &str,
        hangup_cause: Option<&str>,
    ) -> Result<String, CommandError> {
        word("path", path)?;
        broadcast_path(path)?;
        word("leg", leg)?;
        let p = match hangup_cause {
            Some(c) => {
                word("cause", c)?;
                format!("{path}!{c}")
            }
            None => path.to_owned(),
        };
        self.api("uuid_broadcast", format!("{} {p} {leg}", self.uuid))
            .await
    }

    /// `uuid_record <uuid> <action> <path>`.
    pub async fn record(&self, action: &str, path: &str) -> Result<String, CommandError> {
        word("action", action)?;
        word("path", path)?;
        self.api("uuid_record", format!("{} {action} {path}", self.uuid))
            .await
    }

    /// `uuid_record <uuid> start <path>`.
    pub async fn start_record(&self, path: &str) -> Result<String, CommandError> {
        self.record("start", path).await
    }

    /// `uuid_record <uuid> stop <path>`.
    pub async fn stop_record(&self, path: &str) -> Result<String, CommandError> {
        self.record("stop", path).await
    }

    /// `sched_hangup +<secs> <uuid> <cause>`.
    pub async fn sched_hangup(&self, secs: u64, cause: &str) -> Result<String, CommandError> {
        word("cause", cause)?;
        self.api("sched_hangup", format!("+{secs} {} {cause}", self.uuid))
            .await
    }

    /// DTMF after `secs` (`sched_api … uuid_send_dtmf`).
    pub async fn sched_dtmf(&self, secs: u64, digits: &str) -> Result<String, CommandError> {
        word("digits", digits)?;
        self.api(
            "sched_api",
            format!(
                "+{secs} {} uuid_send_dtmf {} {digits}",
                self.uuid, self.uuid
            ),
        )
        .await
    }

    /// `uuid_send_dtmf <uuid> <digits>`.
    pub async fn send_dtmf(&self, digits: &str) -> Result<String, CommandError> {
        word("digits", digits)?;
        self.api("uuid_send_dtmf", format!("{} {digits}", self.uuid))
            .await
    }

    /// `uuid_setvar <uuid> <var> <value>`.
    pub async fn setvar(&self, var: &str, value: &str) -> Result<String, CommandError> {
        arg("variable", args::Context::VarName, var)?;
        line("value", value)?;
        arg("value", args::Context::AppArg, value)?;
        self.api("uuid_setvar", format!("{} {var} {value}", self.uuid))
            .await
    }

    /// `uuid_setvar_multi <uuid> a=1;b=2`.
    pub async fn setvars(&self, vars: &[(String, String)]) -> Result<String, CommandError> {
        for (k, v) in vars {
            arg("variable", args::Context::VarName, k)?;
            arg(&format!("value of {k}"), args::Context::VarList, v)?;
            if v.contains(' ') {
                return Err(CommandError::Invalid(format!(
                    "value of {k} must not contain spaces"
                )));
            }
        }
        let list: Vec<String> = vars.iter().map(|(k, v)| format!("{k}={v}")).collect();
        self.api(
            "uuid_setvar_multi",
            format!("{} {}", self.uuid, list.join(";")),
        )
        .await
    }

    /// `uuid_setvar <uuid> <var>` (unset).
    pub async fn unsetvar(&self, var: &str) -> Result<String, CommandError> {
        word("variable", var)?;
        self.api("uuid_setvar", format!("{} {var}", self.uuid))
            .await
    }

    /// `uuid_audio <uuid> start <read|write> mute`.
    pub async fn mute(&self, direction: &str) -> Result<String, CommandError> {
        word("direction", direction)?;
        self.api(
            "uuid_audio",
            format!("{} start {direction} mute 1", self.uuid),
        )
        .await
    }

    /// `uuid_audio <uuid> stop`.
    pub async fn unmute(&self) -> Result<String, CommandError> {
        self.api("uuid_audio", format!("{} stop", self.uuid)).await
    }

    /// `uuid_deflect <uuid> <uri>` (SIP REFER).
    pub async fn deflect(&self, uri: &str) -> Result<String, CommandError> {
        word("uri", uri)?;
        self.api("uuid_deflect", format!("{} {uri}", self.uuid))
            .await
    }

    /// The `respond` application (`respond 407`).
    pub async fn respond(&self, code: u16) -> Result<String, CommandError> {
        ok_or_err(
            self.node
                .execute(&self.uuid, "respond", &code.to_string())
                .await?,
        )
    }

    /// The `echo` application.
    pub async fn echo(&self) -> Result<String, CommandError> {
        ok_or_err(self.node.execute(&self.uuid, "echo", "").await?)
    }

    /// `uuid_break <uuid> all`.
    pub async fn breakmedia(&self) -> Result<String, CommandError> {
        self.api("uuid_break", format!("{} all", self.uuid)).await
    }

    /// `uuid_media [off] <uuid>`: take media out of (true) or into the path.
    pub async fn bypass_media(&self, bypass: bool) -> Result<String, CommandError> {
        self.api(
            "uuid_media",
            if bypass {
                format!("off {}", self.uuid)
            } else {
                self.uuid.clone()
            },
        )
        .await
    }

    /// `sched_del <uuid>`: drop the session's scheduled tasks.
    pub async fn clear_tasks(&self) -> Result<String, CommandError> {
        self.api("sched_del", self.uuid.clone()).await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn job_ids_are_short_distinct_words() {
        let ids: std::collections::HashSet<String> = (0..20_000).map(|_| super::job_id()).collect();
        assert_eq!(ids.len(), 20_000);
        for id in &ids {
            assert!((1..=13).contains(&id.len()), "{id}");
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase()),
                "{id}"
            );
        }
        // Most are 12 or 13 characters: the ids use their 64 bits.
        assert!(ids.iter().filter(|i| i.len() >= 12).count() > 19_000);
    }

    use super::*;

    fn plain(seq: u64, name: &str, uuid: &str) -> wire::WireEvent {
        wire::WireEvent {
            seq,
            received_us: now_us(),
            headers: format!("Event-Name: {name}\nUnique-ID: {uuid}\nCall-Direction: inbound\n\n")
                .into_bytes(),
            body: None,
            plain: true,
        }
    }

    async fn apply(c: &Cluster, node: &str, batch: Vec<wire::WireEvent>) -> u64 {
        let (done, rx) = oneshot::channel();
        let cmd = StateCmd::Apply {
            node: node.to_owned(),
            batch,
            done,
        };
        c.inner.state.send(cmd).await.unwrap();
        rx.await.unwrap()
    }

    /// A consumer that gets an event finds its session in the cluster's
    /// view (the state task publishes the view first); a view taken
    /// earlier stays as it was while the state task goes on; a stalled
    /// consumer holds the state task up, never a reader of the view.
    #[tokio::test]
    async fn views_are_snapshots_published_before_the_events() {
        let c = Cluster::new(ClusterConfig::default());
        let mut rx = c.subscribe("probe", Feed::Everything, 1);
        let before = c.view();
        let checker = {
            let c = c.clone();
            tokio::spawn(async move {
                let mut seen = 0;
                while let Some(ev) = rx.recv().await {
                    if let ClusterEvent::Event(_, e) = ev {
                        let uuid = e.unique_id().unwrap_or_default().to_owned();
                        assert!(
                            c.view().session(&uuid).is_some(),
                            "{uuid} not in the view when its event arrived"
                        );
                        seen += 1;
                        if seen == 200 {
                            return seen;
                        }
                    }
                }
                seen
            })
        };
        let events: Vec<_> = (1..=200)
            .map(|i| plain(i, "CHANNEL_CREATE", &format!("u{i:03}")))
            .collect();
        for chunk in events.chunks(10) {
            apply(&c, "n1", chunk.to_vec()).await;
        }
        assert_eq!(checker.await.unwrap(), 200);
        assert!(before.is_empty(), "an old view changed");
        let now = c.view();
        assert_eq!(now.len(), 200);
        assert_eq!(now.node_sessions("n1"), 200);
        let page: Vec<&str> = now
            .sessions_after("u100")
            .take(3)
            .map(|s| s.uuid.as_str())
            .collect();
        assert_eq!(page, ["u101", "u102", "u103"]);

        // A consumer that stops reading stalls the state task (lossless),
        // while the view stays readable and current.
        let _stalled = c.subscribe("stalled", Feed::Everything, 1);
        let c2 = c.clone();
        let pushing = tokio::spawn(async move {
            for i in 201..=210u64 {
                apply(
                    &c2,
                    "n1",
                    vec![plain(i, "CHANNEL_CREATE", &format!("u{i:03}"))],
                )
                .await;
            }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!pushing.is_finished(), "a stalled consumer lost events");
        let v = c.view();
        assert!(v.len() > 200 && v.len() < 210, "{}", v.len());
        pushing.abort();
    }
}
