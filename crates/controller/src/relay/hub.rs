//! The RELAY hub: the one owner of RELAY's state in the controller (the
//! sessions by protocol string, the calls they control, each call's
//! actions). Connections send it their clients' commands; it acknowledges
//! each at once, runs it on FreeSWITCH through the cluster, and turns the
//! cluster's events into RELAY events for the call's owner, every action's
//! terminal event before its call's `ended`.

use super::media::{self, Step, Tts};
use super::{Out, RelayStats};
use crate::cluster::{Cluster, ClusterEvent};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use switchy_protocol::esl::Event;
use switchy_relay::rpc;
use switchy_relay::session::Command;
use tokio::sync::{mpsc, oneshot};

/// Events kept for a disconnected session, awaiting its resume; beyond, its
/// calls are hung up and the session forgotten (never a silent drop).
const PENDING_MAX: usize = 10_000;
/// A client whose socket takes no frame for this long is closed.
const STALLED: Duration = Duration::from_secs(5);
/// A disconnected session is kept this long for a resume.
pub const RESUME_GRACE: Duration = Duration::from_secs(60);

/// How the route that offered a call goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OfferOutcome {
    /// A RELAY client took the call.
    Taken,
    /// No client of the context is connected, or every one passed: the
    /// route's next action runs.
    Declined,
}

/// What the hub is told.
pub enum HubMsg {
    /// A session authenticated (or resumed).
    Attach {
        /// Protocol string.
        protocol: String,
        /// Its project.
        project: String,
        /// Its contexts.
        contexts: Vec<String>,
        /// Its writer.
        out: mpsc::Sender<Out>,
        /// Connection id (several connections may present one protocol).
        conn: u64,
    },
    /// A connection closed.
    Detach {
        /// Protocol string.
        protocol: String,
        /// Connection id.
        conn: u64,
    },
    /// The contexts a session receives changed.
    Contexts {
        /// Protocol string.
        protocol: String,
        /// Now these.
        contexts: Vec<String>,
    },
    /// A call-control request; the hub answers with its result.
    Command {
        /// Who sent it.
        protocol: String,
        /// It.
        cmd: Command,
        /// The result (code, message, ids).
        /// Told once the response (and the events it led to) are queued.
        reply: oneshot::Sender<()>,
    },
    /// A route offers a parked inbound call to a context.
    Offer {
        /// The channel's UUID.
        uuid: String,
        /// Its node.
        node: String,
        /// Context.
        context: String,
        /// Caller and callee numbers.
        from: String,
        /// Callee.
        to: String,
        /// The outcome.
        done: oneshot::Sender<OfferOutcome>,
    },
    /// A command the hub started on FreeSWITCH finished.
    Ran {
        /// The call.
        call: String,
        /// The action (control id), if any.
        control: Option<String>,
        /// `Err(reason)` when FreeSWITCH refused it.
        result: Result<String, String>,
    },
    /// A dial's originate job ended.
    Dialed {
        /// The dial's group id.
        call: String,
        /// The job's result.
        result: Result<String, String>,
    },
    /// A collect's timer fired.
    Timer {
        /// The call.
        call: String,
        /// The collect.
        control: String,
        /// Which timer (so a reset timer's old firing is ignored).
        generation: u64,
    },
    /// A disconnected session's grace ran out.
    Expire {
        /// Protocol string.
        protocol: String,
        /// Which disconnection.
        generation: u64,
    },
    /// The controller stops: disconnect every client.
    Shutdown(oneshot::Sender<()>),
}

/// Hub settings.
#[derive(Clone, Debug)]
pub struct HubConfig {
    /// Text-to-speech.
    pub tts: Option<Tts>,
    /// Dial string of a phone device (`{to}` is the number).
    pub phone: String,
    /// How long a route waits for the client it offered a call to.
    pub offer_timeout: Duration,
    /// Where recordings go (a directory on the FreeSWITCH host).
    pub record_dir: String,
}

struct SessionState {
    project: String,
    contexts: BTreeSet<String>,
    out: Option<(mpsc::Sender<Out>, u64)>,
    pending: VecDeque<Value>,
    generation: u64,
}

impl SessionState {
    /// Its client is gone (for now): a new generation, and the grace timer
    /// that expires the session unless its client resumes first.
    fn went_away(&mut self, tx: &mpsc::Sender<HubMsg>, protocol: String) {
        self.out = None;
        self.generation += 1;
        send_later(
            tx,
            RESUME_GRACE,
            HubMsg::Expire {
                protocol,
                generation: self.generation,
            },
        );
    }
}

/// Tells the hub `msg` after `wait` (timers: a collect's, a resume's grace).
fn send_later(tx: &mpsc::Sender<HubMsg>, wait: Duration, msg: HubMsg) {
    let tx = tx.clone();
    tokio::spawn(async move {
        tokio::time::sleep(wait).await;
        let _ = tx.send(msg).await;
    });
}

#[derive(Debug)]
enum Act {
    Play {
        steps: VecDeque<Step>,
        current: String,
        collect: Option<Collect>,
        paused: bool,
    },
    Record {
        path: String,
    },
    Collect(Collect),
}

#[derive(Debug, Clone)]
struct Collect {
    max: usize,
    terminators: String,
    digits: String,
    initial_timeout: Duration,
    digit_timeout: Duration,
    generation: u64,
    /// Timers run (after a play, they start when it ends).
    armed: bool,
}

struct CallState {
    node: String,
    owner: Option<String>,
    context: String,
    direction: &'static str,
    device: Value,
    tag: String,
    state: &'static str,
    actions: BTreeMap<String, Act>,
    /// Protocols it was offered to; the route's wait.
    offer: Option<(Vec<String>, Option<oneshot::Sender<OfferOutcome>>)>,
    /// The dial this leg is one of (its group id).
    dial_group: Option<String>,
    /// The leg it is bridged to.
    peer: Option<String>,
    /// A connect in progress (its devices, for the events).
    connecting: bool,
}

/// One `calling.dial`: its legs (each its own UUID) and whether one won.
struct DialGroup {
    legs: Vec<String>,
    answered: bool,
}

/// The hub's task.
pub struct Hub {
    cluster: Cluster,
    cfg: HubConfig,
    stats: Arc<RelayStats>,
    tx: mpsc::Sender<HubMsg>,
    sessions: HashMap<String, SessionState>,
    calls: HashMap<String, CallState>,
    /// Round-robin position per context.
    rr: HashMap<String, usize>,
    /// Dials in progress by group id.
    dials: HashMap<String, DialGroup>,
    /// While a request is handled: the events it leads to, sent after its response.
    deferred: Option<Vec<(String, Value)>>,
    timer_gen: u64,
}

/// The events the hub needs FreeSWITCH to send.
pub const EVENTS: &[&str] = &[
    "CHANNEL_ANSWER",
    "CHANNEL_PROGRESS",
    "CHANNEL_PROGRESS_MEDIA",
    "CHANNEL_HANGUP",
    "CHANNEL_EXECUTE_COMPLETE",
    "CHANNEL_BRIDGE",
    "CHANNEL_UNBRIDGE",
    "RECORD_START",
    "RECORD_STOP",
    "DTMF",
];

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn code(code: &str, message: &str) -> Map<String, Value> {
    obj(json!({"code": code, "message": message}))
}

fn secs(v: Option<&Value>, default: f64) -> Duration {
    Duration::from_secs_f64(
        v.and_then(Value::as_f64)
            .unwrap_or(default)
            .clamp(0.0, 3600.0),
    )
}

fn collect_of(p: &Value) -> Option<Collect> {
    let d = p.get("digits")?;
    Some(Collect {
        max: d
            .get("max")
            .and_then(Value::as_u64)
            .unwrap_or(1)
            .clamp(1, 128) as usize,
        terminators: d
            .get("terminators")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned(),
        digits: String::new(),
        initial_timeout: secs(p.get("initial_timeout"), 5.0),
        digit_timeout: secs(d.get("digit_timeout"), 5.0),
        generation: 0,
        armed: false,
    })
}

impl Hub {
    /// The hub for `cluster`; run it with [`Hub::run`].
    pub fn new(
        cluster: Cluster,
        cfg: HubConfig,
        stats: Arc<RelayStats>,
        tx: mpsc::Sender<HubMsg>,
    ) -> Hub {
        Hub {
            cluster,
            cfg,
            stats,
            tx,
            sessions: HashMap::new(),
            calls: HashMap::new(),
            rr: HashMap::new(),
            dials: HashMap::new(),
            deferred: None,
            timer_gen: 0,
        }
    }

    /// Serves messages and cluster events until shut down.
    pub async fn run(
        mut self,
        mut rx: mpsc::Receiver<HubMsg>,
        mut events: mpsc::Receiver<ClusterEvent>,
    ) {
        loop {
            tokio::select! {
                m = rx.recv() => match m {
                    Some(HubMsg::Shutdown(done)) => {
                        self.shutdown().await;
                        let _ = done.send(());
                        return;
                    }
                    Some(m) => self.on_msg(m).await,
                    None => return,
                },
                e = events.recv() => match e {
                    Some(ClusterEvent::Event(node, ev)) => self.on_event(&node, &ev).await,
                    Some(ClusterEvent::Finished(f)) => {
                        self.on_ended(&f.session.uuid, &f.cause).await;
                    }
                    Some(ClusterEvent::Mark(_)) => {}
                    None => return,
                },
            }
        }
    }

    async fn shutdown(&mut self) {
        for (_, s) in self.sessions.iter_mut() {
            if let Some((out, _)) = s.out.take() {
                let _ = out
                    .send(Out::Frame(rpc::request(
                        "signalwire.disconnect",
                        json!({"restart": false}),
                    )))
                    .await;
                let _ = out.send(Out::Close).await;
            }
        }
    }

    /// Sends `frame` to the session owning `protocol` (or queues it while
    /// it is away). Waits when its socket is slow: backpressure, not loss.
    async fn deliver(&mut self, protocol: &str, frame: Value) {
        let Some(s) = self.sessions.get_mut(protocol) else {
            return;
        };
        if let Some((out, _)) = &s.out {
            let out = out.clone();
            // A slow client slows the hub (backpressure) up to a point; one
            // that stops reading is treated as gone: its events wait for
            // its resume, none is lost, and the other sessions go on.
            match out.send_timeout(Out::Frame(frame.clone()), STALLED).await {
                Ok(()) => {
                    self.stats.events.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                    tracing::warn!(%protocol, "RELAY client not reading for {STALLED:?}: closing it; its events wait for its resume");
                    let _ = out.try_send(Out::Close);
                }
                Err(mpsc::error::SendTimeoutError::Closed(_)) => {}
            }
            s.went_away(&self.tx, protocol.to_owned());
        }
        s.pending.push_back(frame);
        if s.pending.len() > PENDING_MAX {
            tracing::warn!(%protocol, "RELAY session away with {PENDING_MAX} events pending: hanging up its calls");
            self.drop_session(protocol).await;
        }
    }

    async fn event(&mut self, call: &str, event_type: &str, params: Map<String, Value>) {
        let Some(owner) = self.calls.get(call).and_then(|c| c.owner.clone()) else {
            return;
        };
        let frame = rpc::event(event_type, params);
        match self.deferred.as_mut() {
            Some(d) => d.push((owner, frame)),
            None => self.deliver(&owner, frame).await,
        }
    }

    fn base(&self, call: &str) -> Map<String, Value> {
        let Some(c) = self.calls.get(call) else {
            return Map::new();
        };
        obj(json!({
            "call_id": call,
            "node_id": c.node,
            "tag": c.tag,
            "direction": c.direction,
            "device": c.device,
            "context": c.context,
        }))
    }

    async fn state(&mut self, call: &str, state: &'static str, end_reason: Option<&str>) {
        let Some(c) = self.calls.get_mut(call) else {
            return;
        };
        if c.state == state {
            return;
        }
        c.state = state;
        let mut p = self.base(call);
        p.insert("call_state".into(), json!(state));
        if let Some(r) = end_reason {
            p.insert("end_reason".into(), json!(r));
        }
        self.event(call, "calling.call.state", p).await;
    }

    async fn on_msg(&mut self, m: HubMsg) {
        match m {
            HubMsg::Attach {
                protocol,
                project,
                contexts,
                out,
                conn,
            } => {
                let s = self
                    .sessions
                    .entry(protocol.clone())
                    .or_insert_with(|| SessionState {
                        project: project.clone(),
                        contexts: BTreeSet::new(),
                        out: None,
                        pending: VecDeque::new(),
                        generation: 0,
                    });
                s.contexts.extend(contexts);
                s.out = Some((out.clone(), conn));
                s.generation += 1;
                let pending: Vec<Value> = s.pending.drain(..).collect();
                self.stats
                    .sessions
                    .store(self.connected(), Ordering::Relaxed);
                for f in pending {
                    if out.send(Out::Frame(f)).await.is_err() {
                        break;
                    }
                    self.stats.events.fetch_add(1, Ordering::Relaxed);
                }
            }
            HubMsg::Detach { protocol, conn } => {
                if let Some(s) = self.sessions.get_mut(&protocol)
                    && s.out.as_ref().is_some_and(|(_, c)| *c == conn)
                {
                    s.went_away(&self.tx, protocol);
                }
                self.stats
                    .sessions
                    .store(self.connected(), Ordering::Relaxed);
            }
            HubMsg::Expire {
                protocol,
                generation,
            } => {
                if self
                    .sessions
                    .get(&protocol)
                    .is_some_and(|s| s.out.is_none() && s.generation == generation)
                {
                    tracing::info!(%protocol, "RELAY session did not come back: hanging up its calls");
                    self.drop_session(&protocol).await;
                }
            }
            HubMsg::Contexts { protocol, contexts } => {
                if let Some(s) = self.sessions.get_mut(&protocol) {
                    s.contexts = contexts.into_iter().collect();
                }
                self.stats
                    .sessions
                    .store(self.connected(), Ordering::Relaxed);
            }
            HubMsg::Offer {
                uuid,
                node,
                context,
                from,
                to,
                done,
            } => {
                self.stats.count(&context, "offered");
                let device =
                    json!({"type": "phone", "params": {"from_number": from, "to_number": to}});
                self.calls.insert(
                    uuid.clone(),
                    CallState {
                        node,
                        owner: None,
                        context: context.clone(),
                        direction: "inbound",
                        device,
                        tag: String::new(),
                        state: "created",
                        actions: BTreeMap::new(),
                        offer: Some((Vec::new(), Some(done))),
                        dial_group: None,
                        peer: None,
                        connecting: false,
                    },
                );
                self.offer_next(&uuid).await;
            }
            HubMsg::Command {
                protocol,
                cmd,
                reply,
            } => {
                use tracing::Instrument;
                // A trace span per RELAY request (exported with OTLP when on).
                let span = tracing::info_span!(
                    "relay_request",
                    method = %cmd.method,
                    call_id = cmd.params.get("call_id").and_then(|v| v.as_str()).unwrap_or(""),
                );
                // The response goes first, then the events the request led
                // to (a dial's created, a play's playing): both through the
                // session's one queue, so a client never sees an outcome
                // before the answer to its request.
                self.deferred = Some(Vec::new());
                let r = self.command(&protocol, &cmd).instrument(span).await;
                let deferred = self.deferred.take().unwrap_or_default();
                if r.get("code")
                    .and_then(Value::as_str)
                    .is_some_and(|c| !c.starts_with('2'))
                {
                    self.stats.count_err(&cmd.method);
                }
                if let Some(ack) = cmd.ack(r) {
                    self.deliver(&protocol, ack).await;
                }
                for (owner, frame) in deferred {
                    self.deliver(&owner, frame).await;
                }
                let _ = reply.send(());
            }
            HubMsg::Ran {
                call,
                control,
                result,
            } => self.ran(&call, control, result).await,
            HubMsg::Dialed { call, result } => match result {
                // originate's job names the leg that won ("+OK <uuid>"):
                // when several legs answer at once, the first answer seen
                // is not always the one FreeSWITCH keeps.
                Ok(r) => {
                    // (Job::wait gives the text after "+OK": the UUID.)
                    let winner = r.split_whitespace().last().unwrap_or("").to_owned();
                    let ours = self
                        .dials
                        .get(&call)
                        .is_some_and(|g| g.legs.contains(&winner));
                    if ours && self.calls.contains_key(&winner) {
                        self.dial_event(&winner, "answered").await;
                    } else {
                        tracing::info!(dial = %call, reply = %r.trim(), "RELAY dial: the winner is not one of its legs");
                        self.dial_failed(&call).await;
                    }
                }
                Err(why) => {
                    tracing::info!(dial = %call, %why, "RELAY dial failed");
                    self.dial_failed(&call).await;
                }
            },
            HubMsg::Timer {
                call,
                control,
                generation,
            } => {
                let fire = self
                    .calls
                    .get(&call)
                    .and_then(|c| c.actions.get(&control))
                    .is_some_and(
                        |a| matches!(a, Act::Collect(c) if c.generation == generation && c.armed),
                    );
                if fire {
                    self.finish_collect(&call, &control).await;
                }
            }
            HubMsg::Shutdown(_) => {}
        }
    }

    fn connected(&self) -> u64 {
        let mut by_context = BTreeMap::new();
        for s in self.sessions.values().filter(|s| s.out.is_some()) {
            for c in &s.contexts {
                *by_context.entry(c.clone()).or_insert(0u64) += 1;
            }
        }
        *self
            .stats
            .sessions_by_context
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = by_context;
        self.sessions.values().filter(|s| s.out.is_some()).count() as u64
    }

    async fn drop_session(&mut self, protocol: &str) {
        self.sessions.remove(protocol);
        self.stats
            .sessions
            .store(self.connected(), Ordering::Relaxed);
        let owned: Vec<String> = self
            .calls
            .iter()
            .filter(|(_, c)| c.owner.as_deref() == Some(protocol))
            .map(|(id, _)| id.clone())
            .collect();
        for id in owned {
            if let Some(s) = self.cluster.session(&id) {
                tokio::spawn(async move {
                    let _ = s.hangup("NORMAL_TEMPORARY_FAILURE").await;
                });
            }
        }
    }

    /// Offers a call to the next client of its context it was not offered
    /// to (round robin); none left: the route goes on.
    async fn offer_next(&mut self, call: &str) {
        let Some(c) = self.calls.get(call) else {
            return;
        };
        let context = c.context.clone();
        let tried = c.offer.as_ref().map(|o| o.0.clone()).unwrap_or_default();
        let mut candidates: Vec<&String> = self
            .sessions
            .iter()
            .filter(|(p, s)| s.out.is_some() && s.contexts.contains(&context) && !tried.contains(p))
            .map(|(p, _)| p)
            .collect();
        candidates.sort();
        if candidates.is_empty() {
            if let Some(mut c) = self.calls.remove(call)
                && let Some((_, Some(done))) = c.offer.take()
            {
                let _ = done.send(OfferOutcome::Declined);
            }
            return;
        }
        let i = self.rr.entry(context.clone()).or_insert(0);
        let pick = candidates[*i % candidates.len()].clone();
        *i = i.wrapping_add(1);
        if let Some(c) = self.calls.get_mut(call) {
            c.owner = Some(pick.clone());
            if let Some(o) = c.offer.as_mut() {
                o.0.push(pick.clone());
            }
        }
        let mut p = self.base(call);
        p.insert("call_state".into(), json!("created"));
        if let Some(s) = self.sessions.get(&pick) {
            p.insert("project_id".into(), json!(s.project));
        }
        self.deliver(&pick, rpc::event("calling.call.receive", p))
            .await;
    }

    /// The owner acted on the call: the route that offered it is done.
    fn taken(&mut self, call: &str) {
        if let Some(c) = self.calls.get_mut(call)
            && let Some((_, done)) = c.offer.as_mut()
            && let Some(done) = done.take()
        {
            let _ = done.send(OfferOutcome::Taken);
            let ctx = c.context.clone();
            self.stats.count(&ctx, "taken");
        }
    }

    fn spawn_cmd<F>(&self, call: &str, control: Option<String>, f: F)
    where
        F: std::future::Future<Output = Result<String, crate::CommandError>> + Send + 'static,
    {
        let (tx, call) = (self.tx.clone(), call.to_owned());
        tokio::spawn(async move {
            let result = match f.await {
                Ok(r) if r.starts_with("-ERR") => Err(r.trim().to_owned()),
                Ok(r) => Ok(r),
                Err(e) => Err(e.to_string()),
            };
            let _ = tx
                .send(HubMsg::Ran {
                    call,
                    control,
                    result,
                })
                .await;
        });
    }

    async fn command(&mut self, protocol: &str, cmd: &Command) -> Map<String, Value> {
        let p = &cmd.params;
        let method = cmd.method.as_str();
        let call_id = p
            .get("call_id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let control = match p.get("control_id").and_then(Value::as_str) {
            None => uuid::Uuid::new_v4().to_string(),
            // It names files and goes into ESL headers: a plain word only.
            Some(c)
                if !c.is_empty()
                    && c.len() <= 64
                    && c.chars()
                        .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_') =>
            {
                c.to_owned()
            }
            Some(c) => {
                return code(
                    "400",
                    &format!(
                        "{method}: control_id {:?} must be 1-64 letters, digits, - or _",
                        c.chars().take(64).collect::<String>()
                    ),
                );
            }
        };
        let mut ok = code("200", switchy_relay::synth::default_message(method));
        ok.insert("call_id".into(), json!(call_id));
        if method == "calling.dial" {
            return self.dial(protocol, p).await;
        }
        // Every other method acts on a call this session owns.
        let owned = self
            .calls
            .get(&call_id)
            .is_some_and(|c| c.owner.as_deref() == Some(protocol));
        if !owned {
            return code(
                "404",
                &format!("{method}: no call {call_id:?} is controlled by this session"),
            );
        }
        if method != "calling.pass" {
            self.taken(&call_id);
        }
        if let Some(c) = self.calls.get(&call_id) {
            self.stats.count(&c.context, "actions");
        }
        let Some(session) = self.cluster.session(&call_id) else {
            return code("404", &format!("{method}: call {call_id} is gone"));
        };
        match method {
            "calling.answer" => {
                self.spawn_cmd(&call_id, None, async move { session.answer().await });
            }
            "calling.end" => {
                let cause = media::hangup_cause(
                    p.get("reason").and_then(Value::as_str).unwrap_or("hangup"),
                );
                self.state(&call_id, "ending", None).await;
                self.spawn_cmd(&call_id, None, async move { session.hangup(cause).await });
            }
            "calling.pass" => {
                if let Some(c) = self.calls.get_mut(&call_id) {
                    c.owner = None;
                }
                self.offer_next(&call_id).await;
            }
            "calling.play" | "calling.play_and_collect" => {
                let steps = match media::play_steps(
                    p.get("play").unwrap_or(&Value::Null),
                    self.cfg.tts.as_ref(),
                ) {
                    Ok(s) => s,
                    Err(e) => return code("400", &e),
                };
                let collect = if method == "calling.play_and_collect" {
                    match p.get("collect").and_then(collect_of) {
                        Some(c) => Some(c),
                        None => {
                            return code(
                                "400",
                                "play_and_collect: collect.digits is required (speech is not supported)",
                            );
                        }
                    }
                } else {
                    None
                };
                let mut steps: VecDeque<Step> = steps.into();
                let first = steps.pop_front().expect("play_steps returns at least one");
                let current = uuid::Uuid::new_v4().to_string();
                let act = Act::Play {
                    steps,
                    current: current.clone(),
                    collect,
                    paused: false,
                };
                self.calls
                    .get_mut(&call_id)
                    .map(|c| c.actions.insert(control.clone(), act));
                let mut ev = self.base(&call_id);
                ev.insert("control_id".into(), json!(control));
                ev.insert("state".into(), json!("playing"));
                self.event(&call_id, "calling.call.play", ev).await;
                let node = session.node.clone();
                let uuid = call_id.clone();
                self.spawn_cmd(&call_id, Some(control.clone()), async move {
                    node.execute_tagged(&uuid, first.app, &first.arg, Some(&current))
                        .await
                });
                ok.insert("control_id".into(), json!(control));
            }
            "calling.play.stop" | "calling.play_and_collect.stop" => {
                self.spawn_cmd(&call_id, None, async move {
                    session
                        .node
                        .api("uuid_break", &format!("{} all", session.uuid))
                        .await
                });
                ok.insert("control_id".into(), json!(control));
            }
            "calling.play.pause" | "calling.play.resume" => {
                let pause = method == "calling.play.pause";
                match self
                    .calls
                    .get_mut(&call_id)
                    .and_then(|c| c.actions.get_mut(&control))
                {
                    // FreeSWITCH's pause toggles: send it only on a change.
                    Some(Act::Play { paused, .. }) => {
                        if *paused != pause {
                            *paused = pause;
                            let u = session.uuid.clone();
                            self.spawn_cmd(&call_id, None, async move {
                                session
                                    .node
                                    .api("uuid_fileman", &format!("{u} pause"))
                                    .await
                            });
                            let mut ev = self.base(&call_id);
                            ev.insert("control_id".into(), json!(control));
                            ev.insert(
                                "state".into(),
                                json!(if pause { "paused" } else { "playing" }),
                            );
                            self.event(&call_id, "calling.call.play", ev).await;
                        }
                    }
                    _ => {
                        return code(
                            "404",
                            &format!("{method}: no play {control:?} on this call"),
                        );
                    }
                }
                ok.insert("control_id".into(), json!(control));
            }
            "calling.play.volume" | "calling.play_and_collect.volume" => {
                if !matches!(
                    self.calls
                        .get(&call_id)
                        .and_then(|c| c.actions.get(&control)),
                    Some(Act::Play { .. })
                ) {
                    return code(
                        "404",
                        &format!("{method}: no play {control:?} on this call"),
                    );
                }
                // RELAY's volume is in dB (-40..40); FreeSWITCH's steps are -4..4.
                let db = p.get("volume").and_then(Value::as_f64).unwrap_or(0.0);
                let step = (db / 10.0).round().clamp(-4.0, 4.0) as i64;
                let u = session.uuid.clone();
                self.spawn_cmd(&call_id, None, async move {
                    session
                        .node
                        .api("uuid_fileman", &format!("{u} volume:{step}"))
                        .await
                });
                ok.insert("control_id".into(), json!(control));
            }
            "calling.record" => {
                let format = p
                    .pointer("/record/audio/format")
                    .and_then(Value::as_str)
                    .unwrap_or("wav");
                if !matches!(format, "wav" | "mp3") {
                    return code("400", "record.audio.format: wav or mp3");
                }
                let path = format!(
                    "{}/{}.{format}",
                    self.cfg.record_dir.trim_end_matches('/'),
                    control
                );
                self.calls.get_mut(&call_id).map(|c| {
                    c.actions
                        .insert(control.clone(), Act::Record { path: path.clone() })
                });
                self.spawn_cmd(&call_id, Some(control.clone()), async move {
                    session.start_record(&path).await
                });
                ok.insert("control_id".into(), json!(control));
            }
            "calling.record.stop" => {
                let path = match self
                    .calls
                    .get(&call_id)
                    .and_then(|c| c.actions.get(&control))
                {
                    Some(Act::Record { path }) => path.clone(),
                    _ => return code("404", "record.stop: no such recording"),
                };
                self.spawn_cmd(
                    &call_id,
                    None,
                    async move { session.stop_record(&path).await },
                );
                ok.insert("control_id".into(), json!(control));
            }
            "calling.collect" => {
                let Some(mut c) = collect_of(p) else {
                    return code(
                        "400",
                        "collect: digits is required (speech is not supported)",
                    );
                };
                c.armed = true;
                self.calls
                    .get_mut(&call_id)
                    .map(|cs| cs.actions.insert(control.clone(), Act::Collect(c)));
                self.arm_timer(&call_id, &control, true);
                ok.insert("control_id".into(), json!(control));
            }
            "calling.collect.stop" => {
                self.finish_collect(&call_id, &control).await;
            }
            "calling.send_digits" => {
                let digits = p
                    .get("digits")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                if digits.is_empty()
                    || !digits
                        .chars()
                        .all(|c| c.is_ascii_digit() || "*#ABCDabcdwW".contains(c))
                {
                    return code(
                        "400",
                        "send_digits: digits are 0-9, *, #, A-D, and w/W pauses",
                    );
                }
                let (tx, call, ctl) = (self.tx.clone(), call_id.clone(), control.clone());
                tokio::spawn(async move {
                    let result = session.send_dtmf(&digits).await.map_err(|e| e.to_string());
                    let _ = tx
                        .send(HubMsg::Ran {
                            call,
                            control: Some(ctl),
                            result: result.map(|_| "send_digits".into()),
                        })
                        .await;
                });
                ok.insert("control_id".into(), json!(control));
            }
            "calling.connect" => {
                let dial = match media::devices_dial(
                    p.get("devices").unwrap_or(&Value::Null),
                    &self.cfg.phone,
                ) {
                    Ok(d) => d,
                    Err(e) => return code("400", &e),
                };
                if let Some(c) = self.calls.get_mut(&call_id) {
                    c.connecting = true;
                }
                let mut ev = self.base(&call_id);
                ev.insert("connect_state".into(), json!("connecting"));
                self.event(&call_id, "calling.call.connect", ev).await;
                let node = session.node.clone();
                let uuid = call_id.clone();
                let bridge_id = format!("connect-{control}");
                self.spawn_cmd(&call_id, Some(bridge_id.clone()), async move {
                    node.execute_tagged(&uuid, "bridge", &dial, Some(&bridge_id))
                        .await
                });
            }
            "calling.disconnect" => {
                let Some(peer) = self.calls.get(&call_id).and_then(|c| c.peer.clone()) else {
                    return code("400", "disconnect: the call is not connected");
                };
                self.spawn_cmd(&call_id, None, async move {
                    session
                        .node
                        .api("uuid_kill", &format!("{peer} NORMAL_CLEARING"))
                        .await
                });
            }
            other => {
                return code(
                    "501",
                    &format!(
                        "{other} is not supported by switchy's RELAY (supported: answer, end, pass, play with pause, resume, volume and stop, play_and_collect, record and its stop, collect and its stop, send_digits, connect, disconnect, dial)"
                    ),
                );
            }
        }
        ok
    }

    async fn dial(&mut self, protocol: &str, p: &Value) -> Map<String, Value> {
        let tag = p
            .get("tag")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let devices = p.get("devices").unwrap_or(&Value::Null);
        // A chosen node, else the least loaded of the ready ones.
        let wanted = p
            .get("node_id")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty());
        let nodes: Vec<String> = self
            .cluster
            .nodes()
            .into_iter()
            .filter(|n| n.ready())
            .map(|n| n.id)
            .collect();
        let node = match wanted {
            Some(n) if nodes.iter().any(|x| x == n) => n.to_owned(),
            Some(n) => return code("404", &format!("dial: node {n} is not connected")),
            None => {
                let view = self.cluster.view();
                match nodes.iter().min_by_key(|n| view.node_sessions(n)) {
                    Some(n) => n.clone(),
                    None => return code("503", "dial: no FreeSWITCH node is connected"),
                }
            }
        };
        let legs = match media::devices_legs(devices, &self.cfg.phone) {
            Ok(l) => l,
            Err(e) => return code("400", &e),
        };
        let n = self.cluster.node(&node);
        let context = self
            .sessions
            .get(protocol)
            .and_then(|s| s.contexts.iter().next().cloned())
            .unwrap_or_default();
        // Every leg gets its own UUID, known before FreeSWITCH has it, so
        // each leg's events find it, whichever wins: `[origination_uuid=U]`
        // per leg (FreeSWITCH gives a `{}` one to its first leg only).
        let track = self.cluster.config().tracking_var.clone();
        let group = uuid::Uuid::new_v4().to_string();
        let mut ids = Vec::new();
        let mut serial = Vec::new();
        for par in &legs {
            let mut out = Vec::new();
            for (dial, device) in par {
                let u = uuid::Uuid::new_v4().to_string();
                out.push(format!("[origination_uuid={u},{track}={u}]{dial}"));
                ids.push((u, device.clone()));
            }
            serial.push(out.join(","));
        }
        let job = match n
            .bgapi("originate", &format!("{} &park()", serial.join("|")))
            .await
        {
            Ok(j) => j,
            Err(e) => return code("400", &format!("dial: {e}")),
        };
        self.dials.insert(
            group.clone(),
            DialGroup {
                legs: ids.iter().map(|(u, _)| u.clone()).collect(),
                answered: false,
            },
        );
        for (u, device) in ids {
            self.calls.insert(
                u.clone(),
                CallState {
                    node: node.clone(),
                    owner: Some(protocol.to_owned()),
                    context: context.clone(),
                    direction: "outbound",
                    device,
                    tag: tag.clone(),
                    state: "created",
                    actions: BTreeMap::new(),
                    offer: None,
                    dial_group: Some(group.clone()),
                    peer: None,
                    connecting: false,
                },
            );
            let mut ev = self.base(&u);
            ev.insert("call_state".into(), json!("created"));
            self.event(&u, "calling.call.state", ev).await;
        }
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let result = job.wait().await;
            let _ = tx
                .send(HubMsg::Dialed {
                    call: group,
                    result,
                })
                .await;
        });
        code("200", "Dialing")
    }

    /// The dial's one `calling.call.dial`: answered (by `call`) or failed.
    async fn dial_event(&mut self, call: &str, dial_state: &str) {
        let Some(group) = self.calls.get(call).and_then(|c| c.dial_group.clone()) else {
            return;
        };
        match self.dials.get_mut(&group) {
            Some(g) if !g.answered => g.answered = true,
            _ => return,
        }
        if dial_state == "failed" {
            self.dials.remove(&group);
        }
        let base = self.base(call);
        let mut p = Map::new();
        p.insert("tag".into(), base.get("tag").cloned().unwrap_or(json!("")));
        p.insert(
            "node_id".into(),
            base.get("node_id").cloned().unwrap_or(json!("")),
        );
        p.insert("dial_state".into(), json!(dial_state));
        if dial_state == "answered" {
            let mut callv = base.clone();
            callv.insert("dial_winner".into(), json!(true));
            callv.insert("call_state".into(), json!("answered"));
            p.insert("call".into(), Value::Object(callv));
        }
        self.event(call, "calling.call.dial", p).await;
    }

    /// The originate failed: the legs left end, then the dial fails.
    async fn dial_failed(&mut self, group: &str) {
        let Some(g) = self.dials.get(group) else {
            return;
        };
        let legs: Vec<String> = g
            .legs
            .iter()
            .filter(|l| self.calls.contains_key(*l))
            .cloned()
            .collect();
        let Some(last) = legs.last().cloned() else {
            self.dials.remove(group);
            return;
        };
        for l in &legs {
            self.state(l, "ended", Some("error")).await;
        }
        self.dial_event(&last, "failed").await;
        for l in legs {
            self.calls.remove(&l);
        }
        self.dials.remove(group);
    }

    fn arm_timer(&mut self, call: &str, control: &str, initial: bool) {
        self.timer_gen += 1;
        let generation = self.timer_gen;
        let Some(Act::Collect(c)) = self
            .calls
            .get_mut(call)
            .and_then(|c| c.actions.get_mut(control))
        else {
            return;
        };
        c.generation = generation;
        let wait = if initial {
            c.initial_timeout
        } else {
            c.digit_timeout
        };
        let (call, control) = (call.to_owned(), control.to_owned());
        send_later(
            &self.tx,
            wait,
            HubMsg::Timer {
                call,
                control,
                generation,
            },
        );
    }

    async fn finish_collect(&mut self, call: &str, control: &str) {
        let Some(cs) = self.calls.get_mut(call) else {
            return;
        };
        let collect = match cs.actions.remove(control) {
            Some(Act::Collect(c)) => c,
            Some(Act::Play {
                collect: Some(c), ..
            }) => c,
            Some(other) => {
                cs.actions.insert(control.to_owned(), other);
                return;
            }
            None => return,
        };
        let mut p = self.base(call);
        p.insert("control_id".into(), json!(control));
        if collect.digits.is_empty() {
            p.insert("result".into(), json!({"type": "no_input"}));
            p.insert("state".into(), json!("no_input"));
        } else {
            let (digits, terminator) = match collect.digits.chars().last() {
                Some(t) if collect.terminators.contains(t) => (
                    collect.digits[..collect.digits.len() - 1].to_owned(),
                    t.to_string(),
                ),
                _ => (collect.digits.clone(), String::new()),
            };
            p.insert(
                "result".into(),
                json!({"type": "digit", "params": {"digits": digits, "terminator": terminator}}),
            );
            p.insert("state".into(), json!("finished"));
        }
        self.event(call, "calling.call.collect", p).await;
    }

    async fn ran(&mut self, call: &str, control: Option<String>, result: Result<String, String>) {
        let Some(control) = control else {
            if let Err(why) = result {
                tracing::info!(%call, %why, "RELAY command refused by FreeSWITCH");
            }
            return;
        };
        if let Some(ctl) = control.strip_prefix("connect-") {
            let _ = ctl;
            if result.is_err() {
                self.connect_failed(call).await;
            }
            return;
        }
        let kind = self
            .calls
            .get(call)
            .and_then(|c| c.actions.get(&control))
            .map(|a| match a {
                Act::Play { .. } => "calling.call.play",
                Act::Record { .. } => "calling.call.record",
                Act::Collect(_) => "calling.call.collect",
            });
        match (kind, result) {
            // The digits went out.
            (None, Ok(r)) if r == "send_digits" => {
                let mut p = self.base(call);
                p.insert("control_id".into(), json!(control));
                p.insert("state".into(), json!("finished"));
                self.event(call, "calling.call.send_digits", p).await;
            }
            (None, Err(_)) => {
                let mut p = self.base(call);
                p.insert("control_id".into(), json!(control));
                p.insert("state".into(), json!("error"));
                self.event(call, "calling.call.send_digits", p).await;
            }
            (Some(et), Err(why)) => {
                tracing::info!(%call, %why, "RELAY action refused by FreeSWITCH");
                self.calls.get_mut(call).map(|c| c.actions.remove(&control));
                let mut p = self.base(call);
                p.insert("control_id".into(), json!(control));
                p.insert("state".into(), json!("error"));
                self.event(call, et, p).await;
            }
            _ => {}
        }
    }

    async fn connect_failed(&mut self, call: &str) {
        if let Some(c) = self.calls.get_mut(call)
            && c.connecting
        {
            c.connecting = false;
            let mut p = self.base(call);
            p.insert("connect_state".into(), json!("failed"));
            self.event(call, "calling.call.connect", p).await;
        }
    }

    async fn on_event(&mut self, _node: &str, ev: &Arc<Event>) {
        let Some(uuid) = ev.unique_id() else { return };
        if !self.calls.contains_key(uuid) {
            return;
        }
        let uuid = uuid.to_owned();
        match ev.event_name().unwrap_or("") {
            "CHANNEL_PROGRESS" | "CHANNEL_PROGRESS_MEDIA"
                if self
                    .calls
                    .get(&uuid)
                    .is_some_and(|c| c.direction == "outbound") =>
            {
                self.state(&uuid, "ringing", None).await;
            }
            "CHANNEL_ANSWER" => {
                if let Some(c) = self.calls.get(&uuid) {
                    self.stats.count(&c.context, "answered");
                }
                self.state(&uuid, "answered", None).await;
            }
            "CHANNEL_HANGUP" => {
                self.end_actions(&uuid).await;
                self.state(&uuid, "ending", None).await;
            }
            "CHANNEL_EXECUTE_COMPLETE" => {
                let app_uuid = ev.get("Application-UUID").unwrap_or("");
                if let Some(ctl) = app_uuid.strip_prefix("connect-") {
                    let _ = ctl;
                    let ok = ev.variable("bridge_hangup_cause").is_none()
                        && ev
                            .variable("originate_disposition")
                            .is_none_or(|d| d == "SUCCESS" || d == "ANSWER");
                    if !ok {
                        self.connect_failed(&uuid).await;
                    }
                    return;
                }
                self.play_step_done(&uuid, app_uuid).await;
            }
            "CHANNEL_BRIDGE" => {
                let peer = ev.get("Other-Leg-Unique-ID").unwrap_or("").to_owned();
                let node = self
                    .calls
                    .get(&uuid)
                    .map(|c| c.node.clone())
                    .unwrap_or_default();
                if let Some(c) = self.calls.get_mut(&uuid) {
                    c.peer = Some(peer.clone());
                    c.connecting = false;
                }
                let mut p = self.base(&uuid);
                p.insert("connect_state".into(), json!("connected"));
                p.insert("peer".into(), json!({"call_id": peer, "node_id": node}));
                self.event(&uuid, "calling.call.connect", p).await;
            }
            "CHANNEL_UNBRIDGE" => {
                if let Some(c) = self.calls.get_mut(&uuid) {
                    c.peer = None;
                }
                let mut p = self.base(&uuid);
                p.insert("connect_state".into(), json!("disconnected"));
                self.event(&uuid, "calling.call.connect", p).await;
            }
            "RECORD_START" | "RECORD_STOP" => {
                let path = ev.get("Record-File-Path").unwrap_or("");
                let control = self.calls.get(&uuid).and_then(|c| {
                    c.actions.iter().find_map(|(k, a)| match a {
                        Act::Record { path: p } if p == path => Some(k.clone()),
                        _ => None,
                    })
                });
                let Some(control) = control else { return };
                let stop = ev.event_name() == Some("RECORD_STOP");
                if stop {
                    self.calls
                        .get_mut(&uuid)
                        .map(|c| c.actions.remove(&control));
                }
                let mut p = self.base(&uuid);
                p.insert("control_id".into(), json!(control));
                p.insert(
                    "state".into(),
                    json!(if stop { "finished" } else { "recording" }),
                );
                p.insert("url".into(), json!(format!("file://{path}")));
                if stop {
                    let ms = ev
                        .variable("record_ms")
                        .and_then(|v| v.parse::<f64>().ok())
                        .unwrap_or(0.0);
                    p.insert("record".into(), json!({"url": format!("file://{path}"), "duration": ms / 1000.0, "size": 0}));
                }
                self.event(&uuid, "calling.call.record", p).await;
            }
            "DTMF" => {
                let digit = ev.get("DTMF-Digit").unwrap_or("").to_owned();
                self.on_digit(&uuid, &digit).await;
            }
            _ => {}
        }
    }

    async fn on_digit(&mut self, call: &str, digit: &str) {
        let Some(ch) = digit.chars().next() else {
            return;
        };
        let Some(cs) = self.calls.get_mut(call) else {
            return;
        };
        // The oldest collect listening (a play-and-collect stops its play).
        let target = cs.actions.iter_mut().find_map(|(k, a)| match a {
            Act::Collect(c) => Some((k.clone(), c, false)),
            Act::Play {
                collect: Some(c), ..
            } => Some((k.clone(), c, true)),
            _ => None,
        });
        let Some((control, c, playing)) = target else {
            return;
        };
        c.digits.push(ch);
        c.armed = true;
        let done = c.terminators.contains(ch) || c.digits.len() >= c.max;
        if playing && let Some(s) = self.cluster.session(call) {
            tokio::spawn(async move {
                let _ = s.node.api("uuid_break", &s.uuid).await;
            });
        }
        if done {
            self.finish_collect(call, &control).await;
        } else {
            self.arm_timer(call, &control, false);
        }
    }

    async fn play_step_done(&mut self, call: &str, app_uuid: &str) {
        let base = self.base(call);
        let session = self.cluster.session(call);
        let Some(cs) = self.calls.get_mut(call) else {
            return;
        };
        let found = cs.actions.iter().find_map(|(k, a)| match a {
            Act::Play { current, .. } if current == app_uuid => Some(k.clone()),
            _ => None,
        });
        let Some(control) = found else { return };
        let Some(Act::Play {
            steps,
            current,
            collect,
            ..
        }) = cs.actions.get_mut(&control)
        else {
            return;
        };
        // Digits during a play-and-collect end the play.
        let interrupted = collect.as_ref().is_some_and(|c| !c.digits.is_empty());
        if let Some(next) = steps.pop_front().filter(|_| !interrupted) {
            let id = uuid::Uuid::new_v4().to_string();
            *current = id.clone();
            if let Some(s) = session {
                self.spawn_cmd(call, Some(control.clone()), async move {
                    s.node
                        .execute_tagged(&s.uuid, next.app, &next.arg, Some(&id))
                        .await
                });
            }
            return;
        }
        let collect = collect.take();
        let mut p = base;
        p.insert("control_id".into(), json!(control));
        p.insert("state".into(), json!("finished"));
        match collect {
            None => {
                cs.actions.remove(&control);
                self.event(call, "calling.call.play", p).await;
            }
            Some(mut c) => {
                // Now the collect's timers start.
                let done = !c.digits.is_empty()
                    && (c.digits.len() >= c.max
                        || c.digits
                            .chars()
                            .last()
                            .is_some_and(|d| c.terminators.contains(d)));
                c.armed = true;
                cs.actions.insert(control.clone(), Act::Collect(c));
                if done {
                    self.finish_collect(call, &control).await;
                } else {
                    self.arm_timer(call, &control, true);
                }
            }
        }
    }

    /// Every action of an ending call gets its terminal event.
    async fn end_actions(&mut self, call: &str) {
        let Some(cs) = self.calls.get_mut(call) else {
            return;
        };
        let actions: Vec<(String, Act)> = std::mem::take(&mut cs.actions).into_iter().collect();
        let connecting = std::mem::replace(&mut cs.connecting, false);
        for (control, a) in actions {
            let mut p = self.base(call);
            p.insert("control_id".into(), json!(control));
            let et = match a {
                Act::Play { collect: None, .. } => {
                    p.insert("state".into(), json!("finished"));
                    "calling.call.play"
                }
                Act::Play {
                    collect: Some(_), ..
                }
                | Act::Collect(_) => {
                    p.insert("state".into(), json!("error"));
                    p.insert("result".into(), json!({"type": "error"}));
                    "calling.call.collect"
                }
                Act::Record { path } => {
                    p.insert("state".into(), json!("finished"));
                    p.insert("url".into(), json!(format!("file://{path}")));
                    p.insert("record".into(), json!({"url": format!("file://{path}")}));
                    "calling.call.record"
                }
            };
            self.event(call, et, p).await;
        }
        if connecting {
            let mut p = self.base(call);
            p.insert("connect_state".into(), json!("failed"));
            self.event(call, "calling.call.connect", p).await;
        }
    }

    async fn on_ended(&mut self, call: &str, cause: &str) {
        if !self.calls.contains_key(call) {
            return;
        }
        self.end_actions(call).await;
        self.state(call, "ended", Some(media::end_reason(cause)))
            .await;
        // The last leg of a dial nobody answered: the dial failed.
        if let Some(group) = self.calls.get(call).and_then(|c| c.dial_group.clone()) {
            let others_live = self.dials.get(&group).is_some_and(|g| {
                g.legs
                    .iter()
                    .any(|l| l != call && self.calls.contains_key(l))
            });
            let answered = self.dials.get(&group).is_none_or(|g| g.answered);
            if !answered && !others_live {
                self.dial_event(call, "failed").await;
            }
            if !others_live {
                self.dials.remove(&group);
            }
        }
        if let Some(mut c) = self.calls.remove(call) {
            if let Some((_, Some(done))) = c.offer.take() {
                let _ = done.send(OfferOutcome::Taken);
            }
            self.stats.count(&c.context, "ended");
        }
    }
}
