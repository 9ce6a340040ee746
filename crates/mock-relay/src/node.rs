//! One simulated FreeSWITCH node: an actor task that owns the node's
//! channels, connections, subscriptions and filters, answers ESL commands
//! exactly as FreeSWITCH does, and emits events in FreeSWITCH's order.

use crate::config::Knobs;
use crate::journal::Journal;
use crate::templates::Templates;
use crate::util::{self, Rng};
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use switchy_protocol::esl::{ClientCommand, Event, EventFormat, ParsedCommand, server};
use tokio::sync::{mpsc, oneshot};

/// Every event name `event`/`nixevent` accept (Appendix A), `ALL` aside.
pub const EVENT_NAMES: &[&str] = &[
    "CUSTOM",
    "CLONE",
    "CHANNEL_CREATE",
    "CHANNEL_DESTROY",
    "CHANNEL_STATE",
    "CHANNEL_CALLSTATE",
    "CHANNEL_ANSWER",
    "CHANNEL_HANGUP",
    "CHANNEL_HANGUP_COMPLETE",
    "CHANNEL_EXECUTE",
    "CHANNEL_EXECUTE_COMPLETE",
    "CHANNEL_HOLD",
    "CHANNEL_UNHOLD",
    "CHANNEL_BRIDGE",
    "CHANNEL_UNBRIDGE",
    "CHANNEL_PROGRESS",
    "CHANNEL_PROGRESS_MEDIA",
    "CHANNEL_OUTGOING",
    "CHANNEL_PARK",
    "CHANNEL_UNPARK",
    "CHANNEL_APPLICATION",
    "CHANNEL_ORIGINATE",
    "CHANNEL_UUID",
    "API",
    "LOG",
    "INBOUND_CHAN",
    "OUTBOUND_CHAN",
    "STARTUP",
    "SHUTDOWN",
    "PUBLISH",
    "UNPUBLISH",
    "TALK",
    "NOTALK",
    "SESSION_CRASH",
    "MODULE_LOAD",
    "MODULE_UNLOAD",
    "DTMF",
    "MESSAGE",
    "PRESENCE_IN",
    "NOTIFY_IN",
    "PRESENCE_OUT",
    "PRESENCE_PROBE",
    "MESSAGE_WAITING",
    "MESSAGE_QUERY",
    "ROSTER",
    "CODEC",
    "BACKGROUND_JOB",
    "DETECTED_SPEECH",
    "DETECTED_TONE",
    "PRIVATE_COMMAND",
    "HEARTBEAT",
    "TRAP",
    "ADD_SCHEDULE",
    "DEL_SCHEDULE",
    "EXE_SCHEDULE",
    "RE_SCHEDULE",
    "RELOADXML",
    "NOTIFY",
    "PHONE_FEATURE",
    "PHONE_FEATURE_SUBSCRIBE",
    "SEND_MESSAGE",
    "RECV_MESSAGE",
    "REQUEST_PARAMS",
    "CHANNEL_DATA",
    "GENERAL",
    "COMMAND",
    "SESSION_HEARTBEAT",
    "CLIENT_DISCONNECTED",
    "SERVER_DISCONNECTED",
    "SEND_INFO",
    "RECV_INFO",
    "RECV_RTCP_MESSAGE",
    "SEND_RTCP_MESSAGE",
    "CALL_SECURE",
    "NAT",
    "RECORD_START",
    "RECORD_STOP",
    "PLAYBACK_START",
    "PLAYBACK_STOP",
    "CALL_UPDATE",
    "FAILURE",
    "SOCKET_DATA",
    "MEDIA_BUG_START",
    "MEDIA_BUG_STOP",
    "CONFERENCE_DATA_QUERY",
    "CONFERENCE_DATA",
    "CALL_SETUP_REQ",
    "CALL_SETUP_RESULT",
    "CALL_DETAIL",
    "DEVICE_STATE",
    "TEXT",
    "SHUTDOWN_REQUESTED",
    "CERT_RELOAD",
];

const MYEVENTS_SET: &[&str] = &[
    "CHANNEL_ANSWER",
    "CHANNEL_APPLICATION",
    "CHANNEL_BRIDGE",
    "CHANNEL_CREATE",
    "CHANNEL_DATA",
    "CHANNEL_DESTROY",
    "CHANNEL_EXECUTE",
    "CHANNEL_EXECUTE_COMPLETE",
    "CHANNEL_HANGUP",
    "CHANNEL_HANGUP_COMPLETE",
    "CHANNEL_ORIGINATE",
    "CHANNEL_UUID",
    "CHANNEL_OUTGOING",
    "CHANNEL_PARK",
    "CHANNEL_PROGRESS",
    "CHANNEL_PROGRESS_MEDIA",
    "CHANNEL_STATE",
    "CHANNEL_UNBRIDGE",
    "CHANNEL_UNPARK",
    "DETECTED_SPEECH",
    "DTMF",
    "NOTALK",
    "TALK",
];

/// Static identity of a node.
#[derive(Debug)]
pub struct NodeInfo {
    /// Index in the cluster.
    pub index: usize,
    /// `FreeSWITCH-Hostname`.
    pub hostname: String,
    /// `FreeSWITCH-IPv4`, also the host part of its SIP profiles.
    pub ip: String,
    /// Where its ESL listener is bound.
    pub esl_addr: SocketAddr,
    /// SIP profiles: (name, port).
    pub profiles: Vec<(String, u16)>,
    /// ESL password.
    pub password: String,
    /// Write each frame on its own (see [`crate::Knobs::frame_per_write`]).
    pub frame_per_write: std::sync::atomic::AtomicBool,
    /// Fault: refuse new connections until this time (ms since the epoch).
    pub refuse_until_ms: AtomicU64,
    /// Fault: delay every reply by this many ms.
    pub reply_delay_ms: AtomicU64,
}

/// Frames going to a connection's writer.
#[derive(Debug)]
pub enum Out {
    /// Bytes of one or more frames.
    Frame(Vec<u8>),
    /// A range of a shared buffer (replayed frames, written without a copy
    /// per connection).
    Shared(Arc<[u8]>, std::ops::Range<usize>),
    /// Close the socket after what was queued.
    Close,
}

impl Out {
    /// Appends the bytes to write to `buf`; true for [`Out::Close`].
    pub(crate) fn append_to(self, buf: &mut Vec<u8>) -> bool {
        match self {
            Out::Frame(f) => buf.extend_from_slice(&f),
            Out::Shared(b, r) => buf.extend_from_slice(&b[r]),
            Out::Close => return true,
        }
        false
    }
}

/// A message to a node actor.
#[derive(Debug)]
pub enum NodeMsg {
    /// A client connected.
    Connect {
        /// Connection id.
        id: u64,
        /// Peer address.
        addr: SocketAddr,
        /// Its writer.
        tx: mpsc::UnboundedSender<Out>,
    },
    /// A client command; `done` gets `true` when the connection must close.
    Command {
        /// Connection id.
        id: u64,
        /// The command.
        cmd: ClientCommand,
        /// Completion (after the reply was queued).
        done: oneshot::Sender<bool>,
    },
    /// A client went away.
    Disconnect {
        /// Connection id.
        id: u64,
    },
    /// A timer fired.
    Timer(Timer),
    /// Signalling from another node (or this one) about a SIP dialog.
    Peer(PeerMsg),
    /// The HTTP control plane.
    Control(Control),
}

/// Timers a node sets for itself.
#[derive(Debug)]
pub enum Timer {
    /// Periodic HEARTBEAT.
    Heartbeat,
    /// Originate timed out.
    OriginateTimeout(u64),
    /// An inbound leg answers by itself.
    AutoAnswer(String),
    /// A destination outside the mock gives its outcome.
    External(String),
    /// A playback finished (uuid, generation).
    PlaybackDone(String, u64),
    /// `sched_hangup`: uuid, cause, task id, when (epoch s).
    Hangup(String, String, u64, u64),
    /// `sched_api`.
    Api(String),
    /// A `sleep` application finished (uuid, generation).
    AppDone(String, u64),
    /// An inbound call from the control plane arrives now.
    InboundCall(Box<InboundCall>),
    /// The remote caller of an inbound call hangs up.
    RemoteHangup(String),
    /// A scripted answer of a callee (scenario `answer_after_ms`).
    ScenarioAnswer(String),
    /// Signalling that waited out the node's CPU backlog.
    Peer(PeerMsg),
}

/// SIP signalling between legs, keyed by the dialog's Call-ID.
#[derive(Debug, Clone)]
pub enum PeerMsg {
    /// INVITE: create an inbound leg here.
    Invite(Box<Invite>),
    /// 200 OK: the callee answered.
    Answered {
        /// Dialog.
        call_id: String,
    },
    /// 18x: the callee is ringing (early media when `media`).
    Progress {
        /// Dialog.
        call_id: String,
        /// Early media.
        media: bool,
    },
    /// Scripted: make the inbound leg of this dialog answer.
    AnswerCallee {
        /// Dialog.
        call_id: String,
    },
    /// The callee refused before answering.
    Rejected {
        /// Dialog.
        call_id: String,
        /// Cause.
        cause: String,
    },
    /// BYE / CANCEL to the leg of `dir` in this dialog.
    Bye {
        /// Dialog.
        call_id: String,
        /// Direction of the leg to hang up.
        dir: Dir,
        /// Cause.
        cause: String,
    },
    /// RFC 2833 digits to the leg of `dir`.
    Dtmf {
        /// Dialog.
        call_id: String,
        /// Direction of the receiving leg.
        dir: Dir,
        /// Digits.
        digits: String,
    },
}

/// An INVITE.
#[derive(Debug, Clone)]
pub struct Invite {
    /// Dialog.
    pub call_id: String,
    /// Node of the caller, if inside the mock.
    pub from_node: Option<usize>,
    /// Request-URI user.
    pub user: String,
    /// `user@host:port`.
    pub req_uri: String,
    /// Receiving profile.
    pub profile: String,
    /// Caller id name.
    pub cid_name: String,
    /// Caller id number.
    pub cid_num: String,
    /// Variables from received headers (`sip_h_X-*` …).
    pub vars: Vec<(String, String)>,
    /// Network address of the caller.
    pub network_addr: String,
    /// Dialplan context.
    pub context: String,
    /// Remote hangup after this many ms (control plane).
    pub hangup_after_ms: Option<u64>,
}

/// An inbound call pushed by the control plane.
pub type InboundCall = Invite;

/// Requests from the control plane.
#[derive(Debug)]
pub enum Control {
    /// A JSON view of channels and connections.
    Snapshot(oneshot::Sender<serde_json::Value>),
    /// Push a raw event to one connection or to all subscribers.
    Push {
        /// Target connection (None: every subscriber).
        conn: Option<u64>,
        /// The event.
        event: Event,
        /// How many connections received it.
        done: oneshot::Sender<usize>,
    },
    /// Write already framed plain events (`frames`, holding `events`
    /// events) to every connection subscribed to plain channel events, as
    /// fast as each reads: a load source that costs the node no rendering.
    Replay {
        /// Framed `text/event-plain` events, back to back.
        frames: Arc<[u8]>,
        /// The part of `frames` to write (whole frames).
        range: std::ops::Range<usize>,
        /// How many events `range` holds (for the sent counters).
        events: u64,
        /// How many connections get them.
        done: oneshot::Sender<usize>,
    },
    /// Drop every ESL connection.
    DropConnections(oneshot::Sender<usize>),
    /// Restart: drop connections, forget channels, new Core-UUID.
    Restart(oneshot::Sender<String>),
    /// Replace the behaviour knobs.
    SetKnobs(Box<Knobs>, oneshot::Sender<()>),
    /// Read the knobs.
    GetKnobs(oneshot::Sender<Knobs>),
    /// An inbound call arrives after a delay (ms); replies with its Call-ID.
    Inbound(Box<Invite>, u64, oneshot::Sender<String>),
    /// Stop the actor.
    Shutdown,
}

/// Call direction of a leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dir {
    /// Created by a received INVITE.
    Inbound,
    /// Created by originate.
    Outbound,
}

impl Dir {
    /// `inbound` / `outbound`.
    pub fn as_str(self) -> &'static str {
        match self {
            Dir::Inbound => "inbound",
            Dir::Outbound => "outbound",
        }
    }

    /// The other direction.
    pub fn other(self) -> Dir {
        match self {
            Dir::Inbound => Dir::Outbound,
            Dir::Outbound => Dir::Inbound,
        }
    }
}

/// A simulated channel.
#[derive(Debug, Clone)]
pub struct Channel {
    pub(crate) uuid: String,
    pub(crate) dir: Dir,
    pub(crate) name: String,
    pub(crate) state: &'static str,
    pub(crate) call_state: &'static str,
    pub(crate) orig_call_state: &'static str,
    pub(crate) answer_state: &'static str,
    pub(crate) hangup_cause: Option<&'static str>,
    pub(crate) dest: String,
    pub(crate) cid_name: String,
    pub(crate) cid_num: String,
    pub(crate) context: String,
    pub(crate) profile: String,
    pub(crate) req_uri: String,
    pub(crate) call_id: String,
    pub(crate) network_addr: String,
    pub(crate) created_us: u64,
    pub(crate) answered_us: u64,
    pub(crate) progress_us: u64,
    pub(crate) progress_media_us: u64,
    pub(crate) hangup_us: u64,
    pub(crate) bridged_us: u64,
    pub(crate) app: Option<String>,
    pub(crate) app_data: Option<String>,
    pub(crate) app_uuid: Option<String>,
    /// The last application run (`variable_current_application`).
    pub(crate) last_app: Option<String>,
    pub(crate) last_app_data: Option<String>,
    pub(crate) vars: Vec<(String, String)>,
    /// Node of the SIP peer leg (same dialog), if inside the mock.
    pub(crate) peer_node: Option<usize>,
    /// Whether the dialog reaches outside the mock (external destination).
    pub(crate) external: bool,
    /// Nobody listens at the destination: the call fails with this cause.
    pub(crate) unreachable: Option<&'static str>,
    /// Leg bridged to inside this node.
    pub(crate) bridged: Option<String>,
    /// Bridged by `uuid_bridge` as its first leg: it alone reports the
    /// bridge (CHANNEL_BRIDGE, then CHANNEL_UNBRIDGE when it ends).
    pub(crate) bridge_owner: bool,
    /// The other leg's caller profile as FreeSWITCH copies it at a bridge
    /// (`Other-Type`, `Other-Leg-*`): on every event with variables from
    /// then on, the bridge's end included.
    pub(crate) other_leg: Option<Vec<(&'static str, String)>>,
    /// This outbound leg's originate succeeded on early media (183 with
    /// SDP): FreeSWITCH reports no CHANNEL_ANSWER for it afterwards.
    pub(crate) early_won: bool,
    /// When the current playback started, µs.
    pub(crate) playback_started_us: u64,
    /// The originate waiting on this outbound leg.
    pub(crate) originate: Option<u64>,
    pub(crate) parked: bool,
    pub(crate) recordings: Vec<String>,
    pub(crate) playback: Option<String>,
    pub(crate) generation: u64,
    pub(crate) created_seq: u64,
    /// The running app is the channel's whole dialplan (an originate's
    /// `&app()`): when it finishes by itself FreeSWITCH hangs the channel
    /// up (NORMAL_CLEARING), as after `&sleep(2000)`.
    pub(crate) dialplan_app: Option<u64>,
}

impl Channel {
    pub(crate) fn var(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn set_var(&mut self, name: &str, value: &str) {
        if let Some(slot) = self.vars.iter_mut().find(|(k, _)| k == name) {
            slot.1 = value.to_owned();
        } else {
            self.vars.push((name.to_owned(), value.to_owned()));
        }
    }

    pub(crate) fn answered(&self) -> bool {
        self.answered_us != 0
    }
}

/// Per-connection state.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) id: u64,
    pub(crate) addr: SocketAddr,
    pub(crate) tx: mpsc::UnboundedSender<Out>,
    pub(crate) authed: bool,
    pub(crate) format: EventFormat,
    pub(crate) events_on: bool,
    pub(crate) all: bool,
    pub(crate) names: HashSet<String>,
    pub(crate) subclasses: HashSet<String>,
    pub(crate) filters: Vec<(String, String)>,
    pub(crate) log_level: Option<u8>,
    pub(crate) myevents: Option<String>,
    /// While a command runs, frames for this connection wait here so its
    /// reply goes first (and `api` blocks event delivery, as FreeSWITCH does).
    pub(crate) held: Option<Vec<u8>>,
    pub(crate) sent_events: u64,
}

impl Conn {
    fn wants(&self, name: &str, subclass: Option<&str>) -> bool {
        if !self.events_on {
            return false;
        }
        if self.all {
            return true;
        }
        if name == "CUSTOM" {
            return subclass.is_some_and(|s| self.subclasses.contains(s));
        }
        self.names.contains(name)
    }

    pub(crate) fn send(&mut self, bytes: &[u8]) {
        match &mut self.held {
            Some(buf) => buf.extend_from_slice(bytes),
            None => {
                let _ = self.tx.send(Out::Frame(bytes.to_vec()));
            }
        }
    }

    /// Sends a reply ahead of anything held, then releases the hold.
    pub(crate) fn reply_and_release(&mut self, reply: &[u8]) {
        let held = self.held.take().unwrap_or_default();
        let mut all = Vec::with_capacity(reply.len() + held.len());
        all.extend_from_slice(reply);
        all.extend_from_slice(&held);
        let _ = self.tx.send(Out::Frame(all));
    }
}

/// An originate in progress.
#[derive(Debug)]
pub(crate) struct Originate {
    pub(crate) conn: Option<u64>,
    pub(crate) done: Option<oneshot::Sender<bool>>,
    pub(crate) job: Option<String>,
    pub(crate) api_arg: String,
    pub(crate) groups: VecDeque<Vec<crate::dial::Leg>>,
    pub(crate) globals: Vec<(String, String)>,
    pub(crate) dest: Option<crate::dial::Destination>,
    /// For the `bridge` application: the channel to bridge the winner to.
    pub(crate) bridge_from: Option<String>,
    pub(crate) cid_name: Option<String>,
    pub(crate) cid_num: Option<String>,
    pub(crate) legs: Vec<String>,
    pub(crate) last_cause: String,
    pub(crate) answer_after_ms: Option<u64>,
    pub(crate) forced_cause: Option<String>,
}

/// Shared cluster facts a node needs.
#[derive(Debug)]
pub struct Cluster {
    /// Every node's identity, by index.
    pub infos: Vec<Arc<NodeInfo>>,
    /// Every node's actor.
    pub senders: Vec<mpsc::UnboundedSender<NodeMsg>>,
    /// The journal.
    pub journal: Journal,
    /// Event templates.
    pub templates: Templates,
    /// Scripted scenarios.
    pub scenarios: crate::scenario::Scenarios,
    /// Loaded JSON Schemas.
    pub schemas: crate::schema::Schemas,
    /// Next connection id.
    pub next_conn: AtomicU64,
    /// Channel events sent to connections, all nodes (for benchmarks).
    pub events_sent: AtomicU64,
}

impl Cluster {
    /// The node whose SIP profile listens on `host:port`.
    pub fn node_by_sip(&self, host: &str, port: u16) -> Option<(usize, String)> {
        self.infos.iter().find_map(|n| {
            let host_ok =
                n.ip == host || n.hostname == host || (host == "localhost" && n.ip == "127.0.0.1");
            if !host_ok {
                return None;
            }
            n.profiles
                .iter()
                .find(|(_, p)| *p == port)
                .map(|(name, _)| (n.index, name.clone()))
        })
    }
}

/// The node actor.
pub struct Node {
    pub(crate) info: Arc<NodeInfo>,
    pub(crate) cluster: Arc<Cluster>,
    pub(crate) core_uuid: String,
    pub(crate) seq: u64,
    pub(crate) started: Instant,
    pub(crate) since_startup: u64,
    pub(crate) peak: usize,
    pub(crate) channels: HashMap<String, Channel>,
    pub(crate) dialogs: HashMap<(String, Dir), String>,
    pub(crate) conns: HashMap<u64, Conn>,
    pub(crate) knobs: Knobs,
    pub(crate) rng: Rng,
    pub(crate) originates: HashMap<u64, Originate>,
    pub(crate) next_id: u64,
    pub(crate) sps_window: (u64, u32),
    pub(crate) heartbeat: Duration,
    /// Template variant for the next rendered event (`#2`: the second CODEC).
    pub(crate) variant: Option<&'static str>,
    /// Event-Date-Local / -GMT of the current second.
    pub(crate) dates: std::cell::RefCell<(u64, String, String)>,
    /// Timers, earliest first (no task per timer).
    pub(crate) timers: std::collections::BinaryHeap<std::cmp::Reverse<(tokio::time::Instant, u64)>>,
    pub(crate) timer_payloads: HashMap<u64, Timer>,
    pub(crate) timer_seq: u64,
    /// What this node's work would cost a FreeSWITCH (see [`crate::cost`]).
    pub(crate) meter: crate::cost::Meter,
    /// `console loglevel` (a FreeSWITCH log level number).
    pub(crate) console_level: u8,
    /// `fsctl verbose_events`.
    pub(crate) verbose_events: bool,
}

pub(crate) fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

impl Node {
    /// A node actor; run it with [`Node::run`].
    pub fn new(
        info: Arc<NodeInfo>,
        cluster: Arc<Cluster>,
        knobs: Knobs,
        heartbeat: Duration,
    ) -> Self {
        let seed = info.index as u64 * 7919 + 17;
        Node {
            info,
            cluster,
            core_uuid: new_uuid(),
            seq: 0,
            started: Instant::now(),
            since_startup: 0,
            peak: 0,
            channels: HashMap::new(),
            dialogs: HashMap::new(),
            conns: HashMap::new(),
            knobs,
            rng: Rng::new(seed),
            originates: HashMap::new(),
            next_id: 1,
            sps_window: (0, 0),
            heartbeat,
            variant: None,
            dates: std::cell::RefCell::new((u64::MAX, String::new(), String::new())),
            timers: std::collections::BinaryHeap::new(),
            timer_payloads: HashMap::new(),
            timer_seq: 0,
            meter: crate::cost::Meter::default(),
            console_level: 4,
            verbose_events: false,
        }
    }

    /// Processes messages until shut down.
    pub async fn run(mut self, mut rx: mpsc::UnboundedReceiver<NodeMsg>) {
        self.schedule(self.heartbeat, Timer::Heartbeat);
        loop {
            let next = self.timers.peek().map(|r| r.0.0);
            let msg = match next {
                Some(at) => tokio::select! {
                    m = rx.recv() => m,
                    _ = tokio::time::sleep_until(at) => {
                        self.fire_due_timers();
                        continue;
                    }
                },
                None => rx.recv().await,
            };
            let Some(msg) = msg else { break };
            if matches!(msg, NodeMsg::Control(Control::Shutdown)) {
                for c in self.conns.values() {
                    let _ = c.tx.send(Out::Close);
                }
                break;
            }
            self.handle(msg);
            // Timers that fell due while busy run before the next message.
            if self
                .timers
                .peek()
                .is_some_and(|r| r.0.0 <= tokio::time::Instant::now())
            {
                self.fire_due_timers();
            }
        }
    }

    fn fire_due_timers(&mut self) {
        let now = tokio::time::Instant::now();
        while let Some(std::cmp::Reverse((at, id))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            if let Some(t) = self.timer_payloads.remove(&id) {
                self.timer(t);
            }
        }
    }

    pub(crate) fn journal(
        &self,
        conn: u64,
        dir: &'static str,
        kind: &'static str,
        text: String,
        uid: Option<String>,
        detail: String,
    ) {
        self.cluster
            .journal
            .push(self.info.index, conn, dir, kind, text, uid, detail);
    }

    pub(crate) fn schedule(&mut self, after: Duration, t: Timer) {
        self.timer_seq += 1;
        let id = self.timer_seq;
        self.timers
            .push(std::cmp::Reverse((tokio::time::Instant::now() + after, id)));
        self.timer_payloads.insert(id, t);
    }

    pub(crate) fn send_peer(&self, node: usize, msg: PeerMsg) {
        if let Some(tx) = self.cluster.senders.get(node) {
            let _ = tx.send(NodeMsg::Peer(msg));
        }
    }

    fn handle(&mut self, msg: NodeMsg) {
        match msg {
            NodeMsg::Connect { id, addr, tx } => {
                let mut greeting = Vec::new();
                server::encode_auth_request(&mut greeting);
                let _ = tx.send(Out::Frame(greeting));
                self.journal(
                    id,
                    "out",
                    "notice",
                    "auth/request".into(),
                    None,
                    String::new(),
                );
                self.conns.insert(
                    id,
                    Conn {
                        id,
                        addr,
                        tx,
                        authed: false,
                        format: EventFormat::Plain,
                        events_on: false,
                        all: false,
                        names: HashSet::new(),
                        subclasses: HashSet::new(),
                        filters: Vec::new(),
                        log_level: None,
                        myevents: None,
                        held: None,
                        sent_events: 0,
                    },
                );
            }
            NodeMsg::Disconnect { id } => {
                self.conns.remove(&id);
            }
            NodeMsg::Command { id, cmd, done } => self.command(id, cmd, done),
            NodeMsg::Timer(t) => self.timer(t),
            NodeMsg::Peer(p) => {
                // An overloaded FreeSWITCH handles SIP late.
                let wait = self.meter.backlog(self.knobs.cost.as_ref());
                if wait > Duration::from_millis(1) {
                    self.schedule(wait, Timer::Peer(p));
                } else {
                    self.peer(p);
                }
            }
            NodeMsg::Control(c) => self.control(c),
        }
    }

    fn control(&mut self, c: Control) {
        match c {
            Control::Snapshot(tx) => {
                let _ = tx.send(self.snapshot());
            }
            Control::Push { conn, event, done } => {
                let body = event.encode(EventFormat::Plain);
                let name = event.event_name().unwrap_or("CUSTOM").to_owned();
                let n = self.deliver(
                    &name,
                    event.subclass(),
                    event.unique_id(),
                    &body,
                    conn,
                    true,
                );
                let _ = done.send(n);
            }
            Control::Replay {
                frames,
                range,
                events,
                done,
            } => {
                let range = range.start.min(frames.len())..range.end.min(frames.len());
                const CHUNK: usize = 64 * 1024;
                let mut n = 0;
                for c in self.conns.values_mut() {
                    if c.format != EventFormat::Plain || !c.wants("CHANNEL_CREATE", None) {
                        continue;
                    }
                    let mut at = range.start;
                    while at < range.end {
                        let end = (at + CHUNK).min(range.end);
                        let _ = c.tx.send(Out::Shared(frames.clone(), at..end));
                        at = end;
                    }
                    c.sent_events += events;
                    n += 1;
                }
                self.cluster
                    .events_sent
                    .fetch_add(events * n as u64, Ordering::Relaxed);
                let _ = done.send(n);
            }
            Control::DropConnections(tx) => {
                let n = self.conns.len();
                for c in self.conns.values() {
                    let _ = c.tx.send(Out::Close);
                }
                self.conns.clear();
                let _ = tx.send(n);
            }
            Control::Restart(tx) => {
                let mut notice = Vec::new();
                server::encode_disconnect_notice(server::SHUTDOWN_NOTICE, &mut notice);
                for c in self.conns.values() {
                    let _ = c.tx.send(Out::Frame(notice.clone()));
                    let _ = c.tx.send(Out::Close);
                }
                self.conns.clear();
                self.channels.clear();
                self.dialogs.clear();
                for (_, o) in self.originates.drain() {
                    if let Some(d) = o.done {
                        let _ = d.send(true);
                    }
                }
                self.core_uuid = new_uuid();
                self.seq = 0;
                self.since_startup = 0;
                self.peak = 0;
                self.started = Instant::now();
                let _ = tx.send(self.core_uuid.clone());
            }
            Control::SetKnobs(k, tx) => {
                self.knobs = *k;
                let _ = tx.send(());
            }
            Control::GetKnobs(tx) => {
                let _ = tx.send(self.knobs.clone());
            }
            Control::Inbound(inv, delay, tx) => {
                let id = self.schedule_inbound(*inv, delay);
                let _ = tx.send(id);
            }
            Control::Shutdown => {}
        }
    }

    fn snapshot(&self) -> serde_json::Value {
        let mut chans: Vec<&Channel> = self.channels.values().collect();
        chans.sort_by_key(|c| c.created_seq);
        serde_json::json!({
            "node": self.info.index,
            "hostname": self.info.hostname,
            "core_uuid": self.core_uuid,
            "channels": chans.iter().map(|c| serde_json::json!({
                "uuid": c.uuid,
                "direction": c.dir.as_str(),
                "state": c.state,
                "call_state": c.call_state,
                "answer_state": c.answer_state,
                "dest": c.dest,
                "cid_num": c.cid_num,
                "profile": c.profile,
                "call_id": c.call_id,
                "application": c.app,
                "bridged": c.bridged,
                "variables": c.vars.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect::<serde_json::Map<_, _>>(),
            })).collect::<Vec<_>>(),
            "connections": self.conns.values().map(|c| serde_json::json!({
                "id": c.id,
                "peer": c.addr.to_string(),
                "authenticated": c.authed,
                "format": c.format.as_str(),
                "events": if c.all { vec!["ALL".to_string()] } else { let mut v: Vec<_> = c.names.iter().cloned().collect(); v.sort(); v },
                "subclasses": c.subclasses.iter().cloned().collect::<Vec<_>>(),
                "filters": c.filters.iter().map(|(h, v)| format!("{h} {v}")).collect::<Vec<_>>(),
                "events_sent": c.sent_events,
            })).collect::<Vec<_>>(),
            "cost": self.cost_report(),
        })
    }

    /// Sends an encoded plain event body to every subscribed connection
    /// (or to `only`), converting format and applying filters per
    /// connection. Returns how many connections got it.
    pub(crate) fn deliver(
        &mut self,
        name: &str,
        subclass: Option<&str>,
        unique_id: Option<&str>,
        plain: &[u8],
        only: Option<u64>,
        force: bool,
    ) -> usize {
        let mut decoded: Option<Event> = None;
        let mut frame_plain: Option<Vec<u8>> = None;
        let mut delivered = 0;
        let mut journal: Vec<u64> = Vec::new();
        for conn in self.conns.values_mut() {
            if only.is_some_and(|o| o != conn.id) {
                continue;
            }
            if !(conn.wants(name, subclass) || force && only.is_some()) {
                continue;
            }
            if conn.myevents.is_some() && conn.myevents.as_deref() != unique_id {
                continue;
            }
            let needs_event = !conn.filters.is_empty() || conn.format != EventFormat::Plain;
            if needs_event && decoded.is_none() {
                match Event::decode_plain(plain) {
                    Ok(e) => decoded = Some(e),
                    Err(_) => continue,
                }
            }
            if !conn.filters.is_empty()
                && let Some(ev) = &decoded
                && !filters_pass(&conn.filters, ev)
            {
                continue;
            }
            match conn.format {
                EventFormat::Plain => {
                    let f = frame_plain.get_or_insert_with(|| {
                        let mut f = Vec::with_capacity(plain.len() + 64);
                        server::encode_event_body(plain, EventFormat::Plain, &mut f);
                        f
                    });
                    conn.send(f);
                }
                fmt => {
                    let mut f = Vec::new();
                    if let Some(ev) = &decoded {
                        server::encode_event(ev, fmt, &mut f);
                    }
                    conn.send(&f);
                }
            }
            conn.sent_events += 1;
            self.meter.event(self.knobs.cost.as_ref(), plain.len());
            delivered += 1;
            journal.push(conn.id);
        }
        for id in journal {
            self.journal(
                id,
                "out",
                "event",
                name.to_owned(),
                unique_id.map(str::to_owned),
                String::new(),
            );
        }
        if delivered > 0 {
            self.cluster
                .events_sent
                .fetch_add(delivered as u64, Ordering::Relaxed);
        }
        delivered
    }

    /// True when some connection may want this event (so it is worth
    /// rendering).
    pub(crate) fn anyone_wants(&self, name: &str) -> bool {
        self.conns
            .values()
            .any(|c| c.wants(name, None) || (c.events_on && name == "CUSTOM"))
    }

    pub(crate) fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Renders and delivers an event from a template. `uuid`: the channel
    /// the event is about (None for node events); `extra` resolves
    /// event-specific placeholders; `tail` adds headers after the template.
    pub(crate) fn emit(
        &mut self,
        name: &str,
        uuid: Option<&str>,
        extra: &[(&str, String)],
        tail: &[(String, String)],
        body: Option<&[u8]>,
    ) {
        let seq = self.next_seq();
        if !self.anyone_wants(name) {
            return;
        }
        let Some(out) = self.render(name, uuid, extra, tail, body, seq) else {
            return;
        };
        let uid = uuid
            .filter(|u| self.channels.contains_key(*u))
            .map(str::to_owned);
        self.deliver(name, None, uid.as_deref(), &out, None, false);
    }

    /// Renders an event as a plain body from its template.
    pub(crate) fn render(
        &self,
        name: &str,
        uuid: Option<&str>,
        extra: &[(&str, String)],
        tail: &[(String, String)],
        body: Option<&[u8]>,
        seq: u64,
    ) -> Option<Vec<u8>> {
        let ts = util::now_us();
        let chan = uuid.and_then(|u| self.channels.get(u));
        let (dir, state) = match chan {
            Some(c) => (c.dir.as_str(), c.state),
            None => ("-", "-"),
        };
        let keyed_state = match self.variant {
            Some(v) => format!("{state}{v}"),
            None => state.to_owned(),
        };
        // Legs hung up before answer have their own captured header lists.
        let unanswered = chan.is_some_and(|c| c.hangup_cause.is_some() && !c.answered());
        let noanswer = unanswered
            .then(|| {
                self.cluster
                    .templates
                    .get_exact(name, dir, &format!("{keyed_state}!noanswer"))
            })
            .flatten();
        let Some(t) = noanswer
            .or_else(|| self.cluster.templates.get(name, dir, &keyed_state))
            .cloned()
        else {
            tracing::warn!(event = name, "no template for event; not emitted");
            return None;
        };
        let (date_local, date_gmt) = {
            let mut d = self.dates.borrow_mut();
            if d.0 != ts / 1_000_000 {
                *d = (ts / 1_000_000, util::date_local(ts), util::date_gmt(ts));
            }
            (d.1.clone(), d.2.clone())
        };
        use crate::template::Ph;
        use std::io::Write;
        let enc = |out: &mut Vec<u8>, v: &str| {
            switchy_protocol::esl::percent::encode_into(v.as_bytes(), out)
        };
        // Writes a placeholder's value, percent-encoded; false: leave the
        // header out.
        let resolve = |ph: Ph, name: &str, out: &mut Vec<u8>| -> bool {
            let num = |out: &mut Vec<u8>, n: u64| {
                let _ = write!(out, "{n}");
                true
            };
            match ph {
                Ph::CoreUuid => {
                    return {
                        enc(out, &self.core_uuid);
                        true
                    };
                }
                Ph::Hostname => {
                    return {
                        enc(out, &self.info.hostname);
                        true
                    };
                }
                Ph::Ipv4 => {
                    return {
                        enc(out, &self.info.ip);
                        true
                    };
                }
                Ph::DateLocal => {
                    return {
                        enc(out, &date_local);
                        true
                    };
                }
                Ph::DateGmt => {
                    return {
                        enc(out, &date_gmt);
                        true
                    };
                }
                Ph::Ts => return num(out, ts),
                Ph::Seq => return num(out, seq),
                Ph::Named => {
                    return match extra.iter().find(|(k, _)| *k == name) {
                        Some((_, x)) => {
                            enc(out, x);
                            true
                        }
                        None => false,
                    };
                }
                _ => {}
            }
            let Some(c) = chan else { return false };
            let s: Option<&str> = match ph {
                Ph::Uuid => Some(&c.uuid),
                Ph::PeerUuid => c.bridged.as_deref(),
                Ph::State => Some(c.state),
                Ph::StateNumber => return num(out, state_number(c.state) as u64),
                Ph::CallState => Some(c.call_state),
                Ph::OrigCallState => Some(c.orig_call_state),
                Ph::CallStateNumber => return num(out, call_state_number(c.call_state) as u64),
                Ph::AnswerState => Some(c.answer_state),
                Ph::HangupCause => c.hangup_cause,
                Ph::HangupQ850 => {
                    return c
                        .hangup_cause
                        .is_some_and(|h| num(out, util::cause_q850(h) as u64));
                }
                Ph::LastApp => c.last_app.as_deref(),
                Ph::LastAppData => c.last_app_data.as_deref(),
                Ph::Direction => Some(c.dir.as_str()),
                Ph::ChannelName => Some(&c.name),
                Ph::Dest => Some(&c.dest),
                Ph::CidName => Some(&c.cid_name),
                Ph::CidNum => Some(&c.cid_num),
                Ph::Context => Some(&c.context),
                Ph::NetworkAddr => Some(&c.network_addr),
                Ph::CreatedUs => return num(out, c.created_us),
                Ph::AnsweredUs => return num(out, c.answered_us),
                Ph::ProgressUs => return num(out, c.progress_us),
                Ph::ProgressMediaUs => return num(out, c.progress_media_us),
                Ph::HangupUs => return num(out, c.hangup_us),
                Ph::BridgedUs => return num(out, c.bridged_us),
                Ph::App => c.app.as_deref(),
                Ph::AppData => c.app_data.as_deref(),
                Ph::AppUuid => {
                    match &c.app_uuid {
                        Some(u) => enc(out, u),
                        None => enc(out, &new_uuid()),
                    }
                    return true;
                }
                Ph::SipCallId => Some(&c.call_id),
                Ph::ReqUri => Some(&c.req_uri),
                Ph::Profile => Some(&c.profile),
                _ => None,
            };
            match s {
                Some(v) => {
                    enc(out, v);
                    true
                }
                None => false,
            }
        };
        // Channel variables override the template's captured values; those
        // not in the template go after its variables.
        let mut extra_vars: Vec<(String, String)> = Vec::new();
        let carries_vars = t.first_variable().is_some();
        if let Some(c) = chan
            && carries_vars
        {
            for (k, v) in &c.vars {
                let name = format!("variable_{k}");
                if !t.headers.iter().any(|h| h.name == name) {
                    extra_vars.push((name, v.clone()));
                }
            }
        }
        let split = t.after_variables().unwrap_or(t.headers.len());
        // The other leg's profile goes before the variables, as in FreeSWITCH.
        let other_at = chan.and_then(|c| c.other_leg.as_ref()).and_then(|o| {
            t.first_variable()
                .or_else(|| {
                    t.headers
                        .iter()
                        .rposition(|h| h.name.starts_with("Caller-"))
                        .map(|i| i + 1)
                })
                .map(|at| (at, o))
        });
        // A bridged leg's own profile gains its callee and transfer source.
        let bridged_profile = chan.filter(|c| c.other_leg.is_some()).map(|c| {
            let has = |n: &str| t.headers.iter().any(|h| h.name == n);
            (
                c,
                !has("Caller-Callee-ID-Name"),
                !has("Caller-Transfer-Source"),
            )
        });
        let mut out = Vec::with_capacity(8192);
        let mut value = Vec::with_capacity(128);
        for (i, h) in t.headers.iter().enumerate() {
            if let Some((c, callee, transfer)) = bridged_profile {
                if callee && h.name == "Caller-Network-Addr" {
                    let v = c.var("last_sent_callee_id_number").unwrap_or(&c.cid_num);
                    write_header(&mut out, "Caller-Callee-ID-Name", v.as_bytes());
                    write_header(&mut out, "Caller-Callee-ID-Number", v.as_bytes());
                }
                if transfer && h.name == "Caller-Context" {
                    let v = c.var("transfer_source").unwrap_or("");
                    write_header(&mut out, "Caller-Transfer-Source", v.as_bytes());
                }
            }
            if let Some((at, other)) = other_at
                && i == at
            {
                for (k, v) in other {
                    write_header(&mut out, k, v.as_bytes());
                }
            }
            if i == split {
                for (k, v) in &extra_vars {
                    write_header(&mut out, k, v.as_bytes());
                }
            }
            value.clear();
            let over = match (chan, h.name.strip_prefix("variable_")) {
                (Some(c), Some(var)) => c.var(var),
                _ => None,
            };
            if let Some(v) = over {
                switchy_protocol::esl::percent::encode_into(v.as_bytes(), &mut value);
            } else {
                let mut skip = false;
                for seg in &h.segs {
                    match seg {
                        crate::template::Seg::Lit(enc, _) => value.extend_from_slice(enc),
                        crate::template::Seg::Var(name, ph) => {
                            if !resolve(*ph, name, &mut value) {
                                skip = true;
                            }
                        }
                    }
                }
                if skip {
                    continue;
                }
            }
            out.extend_from_slice(h.name.as_bytes());
            out.extend_from_slice(b": ");
            if value.is_empty() {
                out.extend_from_slice(b"_undef_");
            } else {
                out.extend_from_slice(&value);
            }
            out.push(b'\n');
        }
        if let Some((at, other)) = other_at
            && at >= t.headers.len()
        {
            for (k, v) in other {
                write_header(&mut out, k, v.as_bytes());
            }
        }
        if split >= t.headers.len() {
            for (k, v) in &extra_vars {
                write_header(&mut out, k, v.as_bytes());
            }
        }
        for (k, v) in tail {
            write_header(&mut out, k, v.as_bytes());
        }
        match body {
            Some(b) if !b.is_empty() => {
                out.extend_from_slice(format!("Content-Length: {}\n\n", b.len()).as_bytes());
                out.extend_from_slice(b);
            }
            _ => out.push(b'\n'),
        }
        Some(out)
    }
}

fn write_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    let before = out.len();
    switchy_protocol::esl::percent::encode_into(value, out);
    if out.len() == before {
        out.extend_from_slice(b"_undef_");
    }
    out.push(b'\n');
}

/// FreeSWITCH filter semantics (section 8.2).
pub(crate) fn filters_pass(filters: &[(String, String)], ev: &Event) -> bool {
    let mut accepted = false;
    for (h, v) in filters {
        let Some(actual) = ev.get(h) else { continue };
        let mut val = v.as_str();
        let mut negative = false;
        while let Some(c) = val.chars().next() {
            match c {
                '-' => negative = true,
                '+' | ' ' => {}
                _ => break,
            }
            val = &val[1..];
        }
        let matched = if let Some(re) = val.strip_prefix('/') {
            let (pat, flags) = re.rsplit_once('/').unwrap_or((re, ""));
            let mut b = regex::RegexBuilder::new(pat);
            b.case_insensitive(flags.contains('i'))
                .dot_matches_new_line(flags.contains('s'));
            b.build().is_ok_and(|r| r.is_match(actual))
        } else {
            actual.eq_ignore_ascii_case(val)
        };
        if matched {
            if negative {
                return false;
            }
            accepted = true;
        }
    }
    accepted
}

pub(crate) fn state_number(s: &str) -> u32 {
    match s {
        "CS_NEW" => 0,
        "CS_INIT" => 1,
        "CS_ROUTING" => 2,
        "CS_SOFT_EXECUTE" => 3,
        "CS_EXECUTE" => 4,
        "CS_EXCHANGE_MEDIA" => 5,
        "CS_PARK" => 6,
        "CS_CONSUME_MEDIA" => 7,
        "CS_HIBERNATE" => 8,
        "CS_RESET" => 9,
        "CS_HANGUP" => 10,
        "CS_REPORTING" => 11,
        "CS_DESTROY" => 12,
        _ => 13,
    }
}

pub(crate) fn call_state_number(s: &str) -> u32 {
    match s {
        "DOWN" => 0,
        "DIALING" => 1,
        "RINGING" => 2,
        "EARLY" => 3,
        "ACTIVE" => 4,
        "HELD" => 5,
        "RING_WAIT" => 6,
        "HANGUP" => 7,
        _ => 8,
    }
}

impl Node {
    fn command(&mut self, id: u64, cmd: ClientCommand, done: oneshot::Sender<bool>) {
        let bytes = cmd.line.len()
            + cmd
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len() + 3)
                .sum::<usize>()
            + cmd.body.as_ref().map_or(0, |b| b.len())
            + 2;
        self.meter.command(self.knobs.cost.as_ref(), bytes);
        let Some(conn) = self.conns.get_mut(&id) else {
            let _ = done.send(true);
            return;
        };
        conn.held = Some(Vec::new());
        let authed = conn.authed;
        let mut detail = String::new();
        for (k, v) in cmd.headers.iter() {
            detail.push_str(k);
            detail.push_str(": ");
            detail.push_str(v);
            detail.push('\n');
        }
        self.journal(id, "in", "command", cmd.line.clone(), None, detail);
        let parsed = ParsedCommand::parse(&cmd.line);
        if !authed {
            let (text, close) = match &parsed {
                ParsedCommand::Auth(pw) if *pw == self.info.password => ("+OK accepted", false),
                ParsedCommand::Auth(_) | ParsedCommand::UserAuth(_) => ("-ERR invalid", true),
                ParsedCommand::Exit => ("+OK bye", true),
                _ => ("-ERR command not found", false),
            };
            if text == "+OK accepted"
                && let Some(c) = self.conns.get_mut(&id)
            {
                c.authed = true;
            }
            self.reply(id, text, &[]);
            if close {
                self.goodbye(id);
            }
            let _ = done.send(close);
            return;
        }
        match parsed {
            ParsedCommand::Auth(_) | ParsedCommand::UserAuth(_) => {
                self.reply(id, "-ERR command not found", &[])
            }
            ParsedCommand::Exit => {
                self.reply(id, "+OK bye", &[]);
                self.goodbye(id);
                let _ = done.send(true);
                return;
            }
            ParsedCommand::Api(c, args) => {
                let c = c.to_ascii_lowercase();
                if c == "originate" {
                    // Blocks this connection until the originate ends.
                    self.api_originate(Some(id), None, &args, Some(done));
                    return;
                }
                let out = self.api(&c, &args, Some(id));
                self.journal(
                    id,
                    "out",
                    "api_response",
                    out.lines().next().unwrap_or("").to_owned(),
                    None,
                    out.clone(),
                );
                let mut f = Vec::new();
                server::encode_api_response(out.as_bytes(), &mut f);
                if let Some(conn) = self.conns.get_mut(&id) {
                    conn.reply_and_release(&f);
                }
            }
            ParsedCommand::BgApi(c, args) => {
                let job = cmd
                    .headers
                    .get("Job-UUID")
                    .map(str::to_owned)
                    .unwrap_or_else(new_uuid);
                let text = format!("+OK Job-UUID: {job}");
                self.reply(id, &text, &[("Job-UUID", &job)]);
                let c = c.to_ascii_lowercase();
                if c == "originate" {
                    self.api_originate(None, Some(job), &args, None);
                } else {
                    let out = self.api(&c, &args, None);
                    self.background_job(&job, &c, &args, &out);
                }
            }
            ParsedCommand::Event(format, tokens) => self.cmd_event(id, format, tokens),
            ParsedCommand::NixEvent(tokens) => self.cmd_nixevent(id, tokens),
            ParsedCommand::NoEvents => {
                let on = self.conns.get(&id).is_some_and(|c| c.events_on);
                if let Some(c) = self.conns.get_mut(&id) {
                    c.events_on = false;
                    c.all = false;
                    c.names.clear();
                    c.subclasses.clear();
                    if let Some(h) = &mut c.held {
                        h.clear();
                    }
                }
                let text = if on {
                    "+OK no longer listening for events"
                } else {
                    "-ERR not listening for events"
                };
                self.reply(id, text, &[]);
            }
            ParsedCommand::Filter(args) => self.cmd_filter(id, &args),
            ParsedCommand::MyEvents(words) => {
                let text = match words.first() {
                    None => "-ERR command not found".to_owned(),
                    Some(u) if self.conns.get(&id).is_some_and(|c| c.myevents.is_some()) => {
                        let _ = u;
                        "-ERR aready enabled.".to_owned()
                    }
                    Some(u) if self.channels.contains_key(u.as_str()) => {
                        if let Some(c) = self.conns.get_mut(&id) {
                            c.myevents = Some(u.clone());
                            c.events_on = true;
                            c.names.extend(MYEVENTS_SET.iter().map(|s| s.to_string()));
                        }
                        "+OK Events Enabled".to_owned()
                    }
                    Some(_) => "-ERR invalid uuid".to_owned(),
                };
                self.reply(id, &text, &[]);
            }
            ParsedCommand::DivertEvents(_) => {
                self.reply(id, "-ERR not controlling a session.", &[])
            }
            ParsedCommand::Linger(_) | ParsedCommand::NoLinger => {
                self.reply(id, "-ERR not controlling a session", &[])
            }
            ParsedCommand::Log(level) => {
                let lvl = level.as_deref().unwrap_or("");
                let n = if lvl.is_empty() {
                    Some(7)
                } else if let Ok(n) = lvl.parse::<u8>() {
                    (n <= 7).then_some(n)
                } else {
                    switchy_protocol::esl::command::LOG_LEVELS
                        .iter()
                        .position(|l| l.eq_ignore_ascii_case(lvl))
                        .map(|p| p as u8)
                };
                match n {
                    Some(n) => {
                        if let Some(c) = self.conns.get_mut(&id) {
                            c.log_level = Some(n);
                        }
                        self.reply(id, &format!("+OK log level {lvl} [{n}]"), &[]);
                    }
                    None => self.reply(id, "-ERR invalid log level", &[]),
                }
            }
            ParsedCommand::NoLog => {
                let was = self.conns.get_mut(&id).and_then(|c| c.log_level.take());
                self.reply(
                    id,
                    if was.is_some() {
                        "+OK no longer logging"
                    } else {
                        "-ERR not loging"
                    },
                    &[],
                );
            }
            ParsedCommand::SendEvent(name) => self.cmd_sendevent(id, &name, &cmd),
            ParsedCommand::SendMsg(uuid) => {
                let uuid = uuid
                    .or_else(|| cmd.headers.get("session-id").map(str::to_owned))
                    .unwrap_or_default();
                if self.channels.contains_key(&uuid) {
                    self.reply(id, "+OK", &[]);
                    self.sendmsg(&uuid, &cmd);
                } else {
                    self.reply(id, &format!("-ERR invalid session id [{uuid}]"), &[]);
                }
            }
            ParsedCommand::SessionOnly(_) | ParsedCommand::Unknown(_) => {
                self.reply(id, "-ERR command not found", &[])
            }
        }
        let _ = done.send(false);
    }

    /// Queues a `command/reply` ahead of frames held for the connection.
    pub(crate) fn reply(&mut self, id: u64, text: &str, extra: &[(&str, &str)]) {
        let mut f = Vec::new();
        server::encode_command_reply(text, extra, &mut f);
        self.journal(id, "out", "reply", text.to_owned(), None, String::new());
        if let Some(c) = self.conns.get_mut(&id) {
            c.reply_and_release(&f);
        }
    }

    fn goodbye(&mut self, id: u64) {
        if let Some(c) = self.conns.remove(&id) {
            let mut f = Vec::new();
            server::encode_disconnect_notice(server::GOODBYE, &mut f);
            let _ = c.tx.send(Out::Frame(f));
            let _ = c.tx.send(Out::Close);
            self.journal(
                id,
                "out",
                "notice",
                "text/disconnect-notice".into(),
                None,
                String::new(),
            );
        }
    }

    fn cmd_event(&mut self, id: u64, format: Option<String>, tokens: Vec<String>) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if let Some(f) = format.as_deref().and_then(EventFormat::from_keyword) {
            c.format = f;
        }
        let mut any = false;
        let mut custom = false;
        for t in &tokens {
            if custom {
                c.subclasses.insert(t.clone());
                any = true;
                continue;
            }
            let up = t.to_ascii_uppercase();
            if up == "ALL" {
                c.all = true;
                any = true;
            } else if up == "CUSTOM" {
                custom = true;
                c.names.insert(up);
                any = true;
            } else if EVENT_NAMES.contains(&up.as_str()) {
                c.names.insert(up);
                any = true;
            }
        }
        if any {
            c.events_on = true;
            let text = format!("+OK event listener enabled {}", c.format.as_str());
            self.reply(id, &text, &[]);
        } else {
            self.reply(id, "-ERR no keywords supplied", &[]);
        }
    }

    fn cmd_nixevent(&mut self, id: u64, tokens: Vec<String>) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let mut any = false;
        let mut custom = false;
        for t in &tokens {
            if custom {
                c.subclasses.remove(t);
                any = true;
                continue;
            }
            let up = t.to_ascii_uppercase();
            if up == "ALL" {
                c.all = false;
                c.names.clear();
                c.subclasses.clear();
                any = true;
            } else if up == "CUSTOM" {
                custom = true;
                any = true;
            } else if EVENT_NAMES.contains(&up.as_str()) {
                if c.all {
                    c.all = false;
                    c.names = EVENT_NAMES.iter().map(|s| s.to_string()).collect();
                }
                c.names.remove(&up);
                any = true;
            }
        }
        self.reply(
            id,
            if any {
                "+OK events nixed"
            } else {
                "-ERR no keywords supplied"
            },
            &[],
        );
    }

    fn cmd_filter(&mut self, id: u64, args: &str) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let args = args.trim_end();
        if args.is_empty() {
            self.reply(id, "-ERR command not found", &[]);
            return;
        }
        let (first, rest) = args.split_once(' ').unwrap_or((args, ""));
        let text = if first.eq_ignore_ascii_case("delete") {
            let (h, v) = rest.split_once(' ').unwrap_or((rest, ""));
            if h.is_empty() {
                "-ERR invalid syntax".to_owned()
            } else if h.eq_ignore_ascii_case("all") {
                c.filters.clear();
                "+OK filter deleted. [all][]".to_owned()
            } else {
                if v.is_empty() {
                    c.filters.retain(|(fh, _)| !fh.eq_ignore_ascii_case(h));
                } else if let Some(p) = c
                    .filters
                    .iter()
                    .position(|(fh, fv)| fh.eq_ignore_ascii_case(h) && fv == v)
                {
                    c.filters.remove(p);
                }
                format!("+OK filter deleted. [{h}][{v}]")
            }
        } else {
            let (h, v) = if first.eq_ignore_ascii_case("add") {
                rest.split_once(' ').unwrap_or((rest, ""))
            } else {
                (first, rest)
            };
            if h.is_empty() || v.is_empty() {
                "-ERR invalid syntax".to_owned()
            } else {
                c.filters.push((h.to_owned(), v.to_owned()));
                format!("+OK filter added. [{h}]=[{v}]")
            }
        };
        self.reply(id, &text, &[]);
    }

    fn cmd_sendevent(&mut self, id: u64, name: &str, cmd: &ClientCommand) {
        let up = name.trim().to_ascii_uppercase();
        let up = if up.is_empty() {
            "CUSTOM".to_owned()
        } else {
            up
        };
        let ev_uuid = new_uuid();
        let mut ev = Event::default();
        ev.headers.push("Command", format!("sendevent {name}"));
        let mut subclass = None;
        for (k, v) in cmd.headers.iter() {
            if k.eq_ignore_ascii_case("Event-Subclass") {
                subclass = Some(v.to_owned());
                continue;
            }
            ev.headers.push(k, v);
        }
        ev.headers.push("Event-UUID", &ev_uuid);
        if let Some(s) = &subclass {
            ev.headers.push("Event-Subclass", s);
        }
        let ts = util::now_us();
        let seq = self.next_seq();
        let event_name = if EVENT_NAMES.contains(&up.as_str()) {
            up.clone()
        } else {
            "CLONE".into()
        };
        for (k, v) in [
            ("Event-Name", event_name.clone()),
            ("Core-UUID", self.core_uuid.clone()),
            ("FreeSWITCH-Hostname", self.info.hostname.clone()),
            ("FreeSWITCH-Switchname", self.info.hostname.clone()),
            ("FreeSWITCH-IPv4", self.info.ip.clone()),
            ("FreeSWITCH-IPv6", "::1".into()),
            ("Event-Date-Local", util::date_local(ts)),
            ("Event-Date-GMT", util::date_gmt(ts)),
            ("Event-Date-Timestamp", ts.to_string()),
            ("Event-Calling-File", "mod_event_socket.c".into()),
            ("Event-Calling-Function", "parse_command".into()),
            ("Event-Calling-Line-Number", "2020".into()),
            ("Event-Sequence", seq.to_string()),
        ] {
            ev.headers.push(k, v);
        }
        ev.body = cmd.body.clone();
        self.reply(id, &format!("+OK {ev_uuid}"), &[]);
        if let Some(u) = ev.unique_id()
            && self.channels.contains_key(u)
        {
            // Queued to the channel, not broadcast (as FreeSWITCH does).
            return;
        }
        let body = ev.encode(EventFormat::Plain);
        self.deliver(&event_name, subclass.as_deref(), None, &body, None, false);
    }

    /// Fires BACKGROUND_JOB (after the API event) for a finished bgapi.
    pub(crate) fn background_job(&mut self, job: &str, cmd: &str, args: &str, out: &str) {
        let mut extra = vec![
            ("job_uuid", job.to_owned()),
            ("job_command", cmd.to_owned()),
        ];
        let tail: Vec<(String, String)> = Vec::new();
        if !args.is_empty() {
            extra.push(("job_arg", args.to_owned()));
        }
        self.emit("BACKGROUND_JOB", None, &extra, &tail, Some(out.as_bytes()));
    }

    /// Fires the API event of an executed API command.
    pub(crate) fn api_event(&mut self, cmd: &str, args: &str) {
        let extra = [
            ("api_command", cmd.to_owned()),
            ("api_arg", args.to_owned()),
        ];
        if args.is_empty() {
            // FreeSWITCH leaves API-Command-Argument out when there is none.
            self.emit("API", None, &[("api_command", cmd.to_owned())], &[], None);
        } else {
            self.emit("API", None, &extra, &[], None);
        }
    }

    /// Sends a log line to connections logging at `level` or more.
    pub(crate) fn log_line(&mut self, level: u8, text: &str) {
        let ts = util::now_us();
        let names = [
            "CONSOLE", "ALERT", "CRIT", "ERR", "WARNING", "NOTICE", "INFO", "DEBUG",
        ];
        let line = format!(
            "{}.{:06} 99.00% [{}] mod_commands.c:7247 {text}\n",
            util::date_local(ts),
            ts % 1_000_000,
            names[level.min(7) as usize]
        );
        let mut f = Vec::new();
        server::encode_log_data(
            &server::LogLine {
                level,
                text_channel: 3,
                file: "mod_commands.c",
                func: "log_function",
                line: 7247,
                user_data: "",
                text: &line,
            },
            &mut f,
        );
        let mut ids = Vec::new();
        for c in self.conns.values_mut() {
            if c.log_level.is_some_and(|l| l >= level) {
                c.send(&f);
                ids.push(c.id);
            }
        }
        for id in ids {
            self.journal(
                id,
                "out",
                "log",
                line.trim_end().to_owned(),
                None,
                String::new(),
            );
        }
    }

    /// The meter per call: events and bytes serialized, commands, CPU
    /// charged, and the call rate the node's cores would sustain. A call
    /// is two legs (a self-call: caller and callee on this node).
    fn cost_report(&self) -> serde_json::Value {
        let m = &self.meter;
        let calls = m.legs as f64 / 2.0;
        let per = |v: f64| if calls > 0.0 { v / calls } else { 0.0 };
        let cores = self.knobs.cost.as_ref().map(|c| c.cores);
        let us = per(m.charged_us);
        serde_json::json!({
            "meter": m,
            "model": self.knobs.cost,
            "per_call": {
                "events": per(m.events as f64),
                "event_bytes": per(m.event_bytes as f64),
                "commands": per(m.commands as f64),
                "command_bytes": per(m.command_bytes as f64),
                "cpu_us": us,
            },
            "sustainable_calls_per_s": cores.filter(|_| us > 0.0).map(|c| c * 1e6 / us),
        })
    }

    pub(crate) fn sps_allow(&mut self) -> bool {
        let sec = util::now_us() / 1_000_000;
        if self.sps_window.0 != sec {
            self.sps_window = (sec, 0);
        }
        if self.sps_window.1 >= self.knobs.sessions_per_second {
            return false;
        }
        self.sps_window.1 += 1;
        true
    }
}
