//! The Originator: switchy's load generator. It launches calls across the
//! cluster's nodes at a set rate (evenly paced or Poisson arrivals), keeps
//! at most `limit` calls up, holds each answered call for a fixed or
//! exponential time, mixes apps by weight, counts failures by cause, and
//! says when it — not the system under test — is the bottleneck.

use crate::Invalid;
use crate::cdr::{Cdr, CdrSink, Launch, Launches};
use crate::cluster::{Cluster, ClusterEvent, CommandError};
use crate::pipeline::Feed;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Arrival process.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    clap::ValueEnum,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Arrivals {
    /// Evenly spaced launches (1/rate apart).
    #[default]
    Even,
    /// A Poisson process: exponential gaps with mean 1/rate.
    Poisson,
}

/// Call holding time distribution.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    clap::ValueEnum,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Holding {
    /// Every answered call lasts `duration`.
    #[default]
    Fixed,
    /// Exponential with mean `duration`.
    Exponential,
}

/// An app and its weight in the mix.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Weighted {
    /// App id (as loaded in the AppManager).
    pub app: String,
    /// Relative weight.
    pub weight: u32,
}

/// Everything the Originator does; every field can change while running.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct OriginatorConfig {
    /// Calls per second.
    pub rate: f64,
    /// Maximum concurrent calls.
    pub limit: u64,
    /// Stop after this many calls (0: no end).
    pub max_offered: u64,
    /// Mean call holding time, s; `None`: 95 % of limit / rate.
    pub duration: Option<f64>,
    /// Arrival process.
    pub arrivals: Arrivals,
    /// Holding time distribution.
    pub holding: Holding,
    /// App mix.
    pub apps: Vec<Weighted>,
    /// Nodes to originate from (empty: every node up).
    pub nodes: Vec<String>,
    /// Destination `user@host[:port]` for every node.
    pub dest_url: Option<String>,
    /// Destination per node (overrides `dest_url`).
    pub dest_by_node: BTreeMap<String, String>,
    /// SIP profile.
    pub profile: String,
    /// Gateway (instead of profile).
    pub gateway: Option<String>,
    /// Outbound proxy (`fs_path`), host[:port].
    pub proxy: Option<String>,
    /// Application run on the answered caller leg.
    pub app_name: String,
    /// Its argument.
    pub app_args: String,
    /// Dialplan extension instead of an application.
    pub extension: Option<String>,
    /// Dialplan context for `extension`.
    pub context: String,
    /// Caller id name (unset: FreeSWITCH's default).
    pub caller_id_name: Option<String>,
    /// Caller id number (unset: FreeSWITCH's default).
    pub caller_id_number: Option<String>,
    /// Codec preference (`codec_string`).
    pub codec: Option<String>,
    /// Absolute codec (`absolute_codec_string`).
    pub abs_codec: Option<String>,
    /// Originate timeout, s.
    pub timeout_s: u64,
    /// Extra SIP X-headers (name without `X-`… prefix is added if missing).
    pub headers: BTreeMap<String, String>,
    /// Maximum calls launched by this Originator per node.
    pub node_capacity: Option<u64>,
}

impl Default for OriginatorConfig {
    fn default() -> Self {
        OriginatorConfig {
            rate: 30.0,
            limit: 1,
            max_offered: 0,
            duration: None,
            arrivals: Arrivals::Even,
            holding: Holding::Fixed,
            apps: Vec::new(),
            nodes: Vec::new(),
            dest_url: None,
            dest_by_node: BTreeMap::new(),
            profile: "external".into(),
            gateway: None,
            proxy: None,
            app_name: "park".into(),
            app_args: String::new(),
            extension: None,
            context: "default".into(),
            caller_id_name: None,
            caller_id_number: None,
            codec: None,
            abs_codec: None,
            timeout_s: 60,
            headers: BTreeMap::new(),
            node_capacity: None,
        }
    }
}

fn token(field: &str, v: &str, extra_bad: &[char]) -> Result<(), Invalid> {
    if v.chars().any(|c| {
        c.is_whitespace()
            || c.is_control()
            || matches!(c, ',' | '{' | '}' | '[' | ']')
            || extra_bad.contains(&c)
    }) {
        return Err(Invalid(format!(
            "{field} {v:?} must not contain spaces, control characters or , {{ }} [ ]"
        )));
    }
    Ok(())
}

impl OriginatorConfig {
    /// The holding time, s: `duration`, else 95 % of limit / rate — the
    /// 5 % leaves room for call setup and teardown, so that the limit
    /// bounds concurrency without throttling the rate.
    pub fn hold_secs(&self) -> f64 {
        self.duration.unwrap_or(if self.rate > 0.0 {
            0.95 * self.limit as f64 / self.rate
        } else {
            0.0
        })
    }

    /// True when FreeSWITCH can hold an answered call by itself (the
    /// caller leg would only park): see [`build_originate_args`].
    pub fn freeswitch_can_hold(&self) -> bool {
        self.extension.is_none()
            && self.app_name.eq_ignore_ascii_case("park")
            && self.app_args.is_empty()
    }

    /// Checks every value that goes into an originate command.
    pub fn validate(&self) -> Result<(), Invalid> {
        if !(0.0..=100_000.0).contains(&self.rate) {
            return Err(Invalid(format!(
                "rate {} must be between 0 and 100000 calls/s",
                self.rate
            )));
        }
        if self.limit == 0 {
            return Err(Invalid("limit must be at least 1 concurrent call".into()));
        }
        if let Some(d) = self.duration
            && !(0.0..1e7).contains(&d)
        {
            return Err(Invalid(format!(
                "duration {d} must be a number of seconds ≥ 0"
            )));
        }
        for w in &self.apps {
            token("app", &w.app, &[])?;
        }
        if !self.apps.is_empty() && self.apps.iter().all(|w| w.weight == 0) {
            return Err(Invalid("at least one app needs a weight above 0".into()));
        }
        for (k, v) in self.dest_by_node.iter() {
            token("node", k, &[])?;
            token("destination", v, &[])?;
        }
        if let Some(d) = &self.dest_url {
            token("dest_url", d, &[])?;
        }
        token("profile", &self.profile, &[])?;
        for v in [
            &self.gateway,
            &self.proxy,
            &self.codec,
            &self.abs_codec,
            &self.extension,
        ]
        .into_iter()
        .flatten()
        {
            token("originate option", v, &[])?;
        }
        token("app_name", &self.app_name, &['(', ')'])?;
        token("context", &self.context, &[])?;
        if let Some(n) = &self.caller_id_number {
            token("caller_id_number", n, &[])?;
        }
        if self
            .caller_id_name
            .as_deref()
            .unwrap_or_default()
            .chars()
            .any(|c| c.is_control() || matches!(c, ',' | '{' | '}' | '\'' | '[' | ']'))
        {
            return Err(Invalid(
                "caller_id_name must not contain control characters or , { } ' [ ]".into(),
            ));
        }
        if self.app_args.chars().any(|c| c.is_control() || c == ')') {
            return Err(Invalid(
                "app_args must not contain control characters or ')'".into(),
            ));
        }
        for (k, v) in &self.headers {
            token("header name", k, &['='])?;
            token("header value", v, &[])?;
        }
        Ok(())
    }
}

/// The seed's `build_originate_cmd`: the `originate` arguments for one
/// call.
/// FreeSWITCH's own originate timeout, s (the variable is left out then).
const FREESWITCH_ORIGINATE_TIMEOUT_S: u64 = 60;

/// `hold_ms`: FreeSWITCH holds the answered call itself, for that long,
/// by running `&sleep(hold_ms)` instead of `&park()` (the channel hangs up
/// with NORMAL_CLEARING when it returns): no hangup command and no event
/// per call. Only for `app_name` park without arguments or extension.
pub fn build_originate_args(
    cfg: &OriginatorConfig,
    node: &str,
    call_uuid: &str,
    app: Option<&str>,
    tracking_var: &str,
    run_id: &str,
    hold_ms: Option<u64>,
) -> Result<String, Invalid> {
    let dest = cfg
        .dest_by_node
        .get(node)
        .or(cfg.dest_url.as_ref())
        .ok_or_else(|| Invalid(format!("no destination for node {node}: set dest_url")))?;
    // FreeSWITCH reads a command one byte at a time and serializes every
    // variable into every event of the call, so only what is needed goes
    // in: the app travels once, as the X-header both legs carry.
    let mut vars = vec![
        format!("origination_uuid={call_uuid}"),
        format!("{tracking_var}={call_uuid}"),
        format!("switchy_originator={run_id}"),
    ];
    if let Some(n) = &cfg.caller_id_name {
        vars.push(format!("origination_caller_id_name='{n}'"));
    }
    if let Some(n) = &cfg.caller_id_number {
        vars.push(format!("origination_caller_id_number={n}"));
    }
    if cfg.timeout_s != FREESWITCH_ORIGINATE_TIMEOUT_S {
        vars.push(format!("originate_timeout={}", cfg.timeout_s));
    }
    if let Some(a) = app {
        vars.push(format!("sip_h_X-switchy-app={a}"));
    }
    if let Some(c) = &cfg.codec {
        vars.push(format!("codec_string={c}"));
    }
    if let Some(c) = &cfg.abs_codec {
        vars.push(format!("absolute_codec_string={c}"));
    }
    for (k, v) in &cfg.headers {
        let name = if k.starts_with("X-") || k.starts_with("x-") {
            k.clone()
        } else {
            format!("X-{k}")
        };
        vars.push(format!("sip_h_{name}={v}"));
    }
    let mut dial = match &cfg.gateway {
        Some(g) => format!("sofia/gateway/{g}/{dest}"),
        None => format!("sofia/{}/{dest}", cfg.profile),
    };
    if let Some(p) = &cfg.proxy {
        dial.push_str(&format!(";fs_path=sip:{p}"));
    }
    let target = match (&cfg.extension, hold_ms) {
        (Some(x), _) => format!("{x} XML {}", cfg.context),
        (None, Some(ms)) if cfg.freeswitch_can_hold() => format!("&sleep({ms})"),
        (None, _) => format!("&{}({})", cfg.app_name, cfg.app_args),
    };
    Ok(format!("{{{}}}{dial} {target}", vars.join(",")))
}

/// Originator state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum State {
    /// Not started.
    #[default]
    Initial,
    /// Launching calls.
    Originating,
    /// Not launching; calls up finish on their own.
    Stopped,
}

#[derive(Default)]
struct Live {
    calls: HashMap<String, String>,
    per_node: HashMap<String, u64>,
    /// Calls whose answer was handled (hangup scheduled).
    answered: std::collections::HashSet<String>,
    /// Calls whose originate job completed with +OK (their channel exists
    /// or existed).
    originated: std::collections::HashSet<String>,
}

/// Live counters and what the Originator saw.
#[derive(Default)]
struct Stats {
    offered: AtomicU64,
    answered: AtomicU64,
    failed: AtomicU64,
    ended: AtomicU64,
    max_active: AtomicU64,
    late: AtomicU64,
    blocked_limit: AtomicU64,
    blocked_capacity: AtomicU64,
    failures: Mutex<BTreeMap<String, u64>>,
    launches: Mutex<VecDeque<Instant>>,
    job_ms: Mutex<VecDeque<f64>>,
    /// Setup latencies with when they were measured, for the last
    /// [`RECENT_WINDOW`] (at most [`RECENT_CAP`]).
    job_recent: Mutex<VecDeque<(Instant, f64)>>,
    apps: Mutex<BTreeMap<String, u64>>,
}

struct Inner {
    cluster: Cluster,
    cfg: Mutex<OriginatorConfig>,
    state: watch::Sender<State>,
    live: Mutex<Live>,
    stats: Stats,
    launches: Launches,
    run_id: String,
    started: Mutex<Option<Instant>>,
    stopped: Mutex<Option<Instant>>,
    bottleneck: Mutex<Option<String>>,
    /// Parameters changed.
    changed: tokio::sync::Notify,
    /// A call ended (a slot under the limit may be free).
    freed: tokio::sync::Notify,
    /// Originates sent and not yet answered by the agent.
    in_flight: AtomicU64,
    /// Originates accepted whose BACKGROUND_JOB has not come yet.
    jobs_outstanding: AtomicU64,
    /// Originates whose BACKGROUND_JOB was lost and whose answer the
    /// tracker learned instead (from a resync).
    jobs_recovered: AtomicU64,
    /// Apps (ids; "" for calls without one) whose calls FreeSWITCH may hold
    /// by itself: they do not act on the answered caller leg.
    fs_hold: Mutex<std::collections::HashSet<String>>,
    /// Seconds each diagnosed party was the bottleneck, with its latest
    /// diagnosis.
    bottleneck_secs: Mutex<BTreeMap<String, (u64, String)>>,
    /// Launches fell more than 500 ms behind since the monitor last looked.
    late_recent: std::sync::atomic::AtomicBool,
    /// CDRs of calls that never got a channel.
    sink: Mutex<Option<CdrSink>>,
    /// The run is over once its calls end: max_offered was reached, or a
    /// shutdown was asked for (a plain stop is a pause).
    finished: std::sync::atomic::AtomicBool,
}

/// The Originator (cheap to clone).
#[derive(Clone)]
pub struct Originator {
    inner: Arc<Inner>,
    _tasks: Arc<Vec<AbortOnDrop>>,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A snapshot for the progress line, `/api/v1/originator` and the summary.
#[derive(Clone, Debug, Default, Serialize, schemars::JsonSchema)]
pub struct Status {
    /// State.
    pub state: State,
    /// Parameters.
    pub config: OriginatorConfig,
    /// Holding time in use, s.
    pub hold_secs: f64,
    /// Calls launched.
    pub offered: u64,
    /// Calls answered.
    pub answered: u64,
    /// Calls that failed (by cause in `failures`).
    pub failed: u64,
    /// Calls over.
    pub ended: u64,
    /// Calls up now.
    pub active: u64,
    /// Most calls up at once.
    pub max_active: u64,
    /// Launches in the last second.
    pub current_cps: f64,
    /// offered / time originating.
    pub average_cps: f64,
    /// Seconds originating.
    pub elapsed_s: f64,
    /// Seconds to max_offered at the current rate.
    pub eta_s: Option<f64>,
    /// Failures by hangup cause.
    pub failures: BTreeMap<String, u64>,
    /// Calls launched per app.
    pub apps: BTreeMap<String, u64>,
    /// Launches more than 50 ms behind schedule.
    pub late_launches: u64,
    /// Launch slots that waited for the concurrency limit.
    pub blocked_by_limit: u64,
    /// Launch slots that found no node with capacity.
    pub blocked_by_capacity: u64,
    /// Originate send → BACKGROUND_JOB p99, ms, on the agent's clock (last
    /// 1,000 calls).
    pub originate_reply_p99_ms: f64,
    /// Setup latency (originate → answer, agent clock) over the last
    /// seconds.
    pub setup_recent: Recent,
    /// Calls up now per node.
    pub active_per_node: BTreeMap<String, u64>,
    /// When the requested rate is not being met, who holds it back (the
    /// latest diagnosis).
    pub bottleneck: Option<String>,
    /// Seconds each party was diagnosed as the bottleneck while
    /// originating, with its latest diagnosis.
    pub bottleneck_secs: BTreeMap<String, (u64, String)>,
    /// Originates waiting for their job (the caller's answer) now.
    pub jobs_outstanding: u64,
    /// Originates whose BACKGROUND_JOB never came (FreeSWITCH sends events
    /// only to connected listeners: an ESL outage, an agent killed with it
    /// unsent) and whose answer a resync showed instead.
    pub jobs_recovered: u64,
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// A uniform sample in (0, 1] (splitmix64; not for cryptography).
pub(crate) fn uniform() -> f64 {
    static STATE: AtomicU64 = AtomicU64::new(0x2545_F491_4F6C_DD1D);
    let mut x = STATE.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    ((x >> 11) as f64 + 1.0) / (1u64 << 53) as f64
}

fn exp_sample(mean: f64) -> f64 {
    -mean * uniform().ln()
}

/// Smooth weighted round robin: picks interleave by weight (33/33/34 gives
/// a, b, c, a, b, c … not runs).
#[derive(Default)]
struct Mixer {
    current: Vec<i64>,
}

impl Mixer {
    fn pick<'a>(&mut self, apps: &'a [Weighted]) -> Option<&'a str> {
        if apps.is_empty() {
            return None;
        }
        if self.current.len() != apps.len() {
            self.current = vec![0; apps.len()];
        }
        let total: i64 = apps.iter().map(|w| w.weight as i64).sum();
        let mut best = 0;
        for (i, w) in apps.iter().enumerate() {
            self.current[i] += w.weight as i64;
            if self.current[i] > self.current[best] {
                best = i;
            }
        }
        self.current[best] -= total;
        Some(apps[best].app.as_str())
    }
}

impl Originator {
    /// An Originator in state INITIAL.
    pub fn new(
        cluster: Cluster,
        cfg: OriginatorConfig,
        launches: Launches,
    ) -> Result<Originator, Invalid> {
        cfg.validate()?;
        let (state, _) = watch::channel(State::Initial);
        let inner = Arc::new(Inner {
            cluster,
            cfg: Mutex::new(cfg),
            state,
            live: Mutex::default(),
            stats: Stats::default(),
            launches,
            // 64 random bits: unique enough for `hupall … switchy_originator`.
            run_id: uuid::Uuid::new_v4().simple().to_string()[..16].to_owned(),
            started: Mutex::new(None),
            stopped: Mutex::new(None),
            bottleneck: Mutex::new(None),
            changed: tokio::sync::Notify::new(),
            freed: tokio::sync::Notify::new(),
            in_flight: AtomicU64::new(0),
            jobs_outstanding: AtomicU64::new(0),
            jobs_recovered: AtomicU64::new(0),
            fs_hold: Mutex::default(),
            bottleneck_secs: Mutex::default(),
            late_recent: std::sync::atomic::AtomicBool::new(false),
            sink: Mutex::new(None),
            finished: Default::default(),
        });
        let tasks = vec![
            AbortOnDrop(tokio::spawn(pace(inner.clone()))),
            AbortOnDrop(tokio::spawn(watch_calls(inner.clone()))),
            AbortOnDrop(tokio::spawn(monitor(inner.clone()))),
        ];
        Ok(Originator {
            inner,
            _tasks: Arc::new(tasks),
        })
    }

    /// Lets FreeSWITCH hold the calls of these apps by itself (`&sleep`
    /// instead of `&park()` and a later hangup command): give the apps that
    /// do not act on the answered caller leg (no CHANNEL_ANSWER callback);
    /// "" stands for calls without an app.
    pub fn hold_in_freeswitch(&self, apps: impl IntoIterator<Item = String>) {
        *self.inner.fs_hold.lock().unwrap_or_else(|p| p.into_inner()) = apps.into_iter().collect();
    }

    /// Calls that fail before any channel exists get their CDR through
    /// `sink` (the others come from the tracker).
    pub fn set_cdr_sink(&self, sink: Option<CdrSink>) {
        *self.inner.sink.lock().unwrap_or_else(|p| p.into_inner()) = sink;
    }

    /// Starts (or resumes) originating.
    pub fn start(&self) {
        let mut s = self.inner.started.lock().unwrap_or_else(|p| p.into_inner());
        if s.is_none() {
            *s = Some(Instant::now());
        }
        *self.inner.stopped.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.inner.state.send_replace(State::Originating);
        tracing::info!("originator: ORIGINATING");
    }

    /// Stops launching; calls up end at their holding time.
    pub fn stop(&self) {
        if *self.inner.state.borrow() == State::Originating {
            *self.inner.stopped.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        }
        self.inner.state.send_replace(State::Stopped);
        tracing::info!("originator: STOPPED");
    }

    /// Stops and hangs up every call this Originator launched, on every node.
    pub async fn hupall(&self) -> Result<(), CommandError> {
        self.stop();
        self.settle().await;
        let args = format!("NORMAL_CLEARING switchy_originator {}", self.inner.run_id);
        let r = self.on_every_node(&args).await;
        self.sweep().await;
        r
    }

    /// Waits (up to 2 s) for originates already sent to be accepted, so
    /// their channels exist before a hupall.
    async fn settle(&self) {
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.inner.in_flight.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    /// Kills, one by one, calls still up shortly after a hupall (channels
    /// created while it ran).
    async fn sweep(&self) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let left: Vec<(String, String)> = self
            .inner
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .calls
            .iter()
            .map(|(c, n)| (c.clone(), n.clone()))
            .collect();
        for (call, node) in left {
            let s = crate::Session {
                node: self.inner.cluster.node(&node),
                uuid: call,
            };
            let _ = s.hangup("NORMAL_CLEARING").await;
        }
    }

    /// Stops and hangs up every channel on every node.
    pub async fn hard_hupall(&self) -> Result<(), CommandError> {
        self.stop();
        self.settle().await;
        let r = self.on_every_node("NORMAL_CLEARING").await;
        self.sweep().await;
        r
    }

    /// hupall, then the Originator stays STOPPED and its run is over
    /// ([`Originator::wait_finished`]).
    pub async fn shutdown(&self) -> Result<(), CommandError> {
        let r = self.hupall().await;
        self.inner.finished.store(true, Ordering::Relaxed);
        self.inner.state.send_replace(State::Stopped);
        r
    }

    /// Stops launching for good: the run is over once the calls up have
    /// ended at their holding time ([`Originator::wait_finished`]).
    pub fn finish(&self) {
        self.stop();
        self.inner.finished.store(true, Ordering::Relaxed);
        self.inner.state.send_modify(|_| {});
    }

    /// The run is over: max_offered was reached or a shutdown asked for
    /// (calls may still be up; see [`Originator::wait_finished`]).
    pub fn finished(&self) -> bool {
        self.inner.finished.load(Ordering::Relaxed)
    }

    /// Waits until the run is over ([`Originator::finished`]) with no call
    /// up. A plain stop (a pause) does not end it.
    pub async fn wait_finished(&self) {
        let mut rx = self.inner.state.subscribe();
        loop {
            rx.borrow_and_update();
            if self.finished() && self.active() == 0 {
                return;
            }
            tokio::select! {
                _ = rx.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    }

    async fn on_every_node(&self, args: &str) -> Result<(), CommandError> {
        let mut errs = Vec::new();
        for n in self.inner.cluster.nodes() {
            if n.agent != crate::cluster::AgentLink::Connected {
                continue;
            }
            if let Err(e) = self.inner.cluster.node(&n.id).api("hupall", args).await {
                errs.push(format!("{}: {e}", n.id));
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(CommandError::Nodes(format!(
                "hupall failed on {}",
                errs.join("; ")
            )))
        }
    }

    /// Changes parameters while running (validated first).
    pub fn update(&self, f: impl FnOnce(&mut OriginatorConfig)) -> Result<(), Invalid> {
        let mut g = self.inner.cfg.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = g.clone();
        f(&mut next);
        next.validate()?;
        *g = next;
        drop(g);
        self.inner.changed.notify_waiters();
        Ok(())
    }

    /// Applies a JSON object of parameters (REST).
    pub fn update_json(&self, patch: &serde_json::Value) -> Result<(), Invalid> {
        let cur = serde_json::to_value(self.config())
            .map_err(|e| Invalid(format!("cannot read the current parameters: {e}")))?;
        let mut merged = cur;
        if let (Some(m), Some(p)) = (merged.as_object_mut(), patch.as_object()) {
            for (k, v) in p {
                m.insert(k.clone(), v.clone());
            }
        } else {
            return Err(Invalid(
                "send a JSON object of originator parameters".into(),
            ));
        }
        let next: OriginatorConfig = serde_json::from_value(merged)
            .map_err(|e| Invalid(format!("invalid originator parameters: {e}")))?;
        self.update(|c| *c = next)
    }

    /// Current parameters.
    pub fn config(&self) -> OriginatorConfig {
        self.inner
            .cfg
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Current state.
    pub fn state(&self) -> State {
        *self.inner.state.borrow()
    }

    /// The run id stamped on every call (`switchy_originator`).
    pub fn run_id(&self) -> &str {
        &self.inner.run_id
    }

    /// Calls up now.
    pub fn active(&self) -> u64 {
        self.inner
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .calls
            .len() as u64
    }

    /// A status snapshot.
    pub fn status(&self) -> Status {
        let i = &self.inner;
        let s = &i.stats;
        let cfg = self.config();
        let now = Instant::now();
        let recent = {
            let mut q = s.launches.lock().unwrap_or_else(|p| p.into_inner());
            while q
                .front()
                .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(1))
            {
                q.pop_front();
            }
            q.len() as f64
        };
        let elapsed = match *i.started.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(t0) => {
                let end = i
                    .stopped
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .unwrap_or(now);
                end.duration_since(t0).as_secs_f64()
            }
            None => 0.0,
        };
        let offered = s.offered.load(Ordering::Relaxed);
        let p99 = job_p99(s);
        let eta = (cfg.max_offered > 0 && cfg.rate > 0.0)
            .then(|| cfg.max_offered.saturating_sub(offered) as f64 / cfg.rate);
        Status {
            state: self.state(),
            hold_secs: cfg.hold_secs(),
            offered,
            answered: s.answered.load(Ordering::Relaxed),
            failed: s.failed.load(Ordering::Relaxed),
            ended: s.ended.load(Ordering::Relaxed),
            active: self.active(),
            max_active: s.max_active.load(Ordering::Relaxed),
            current_cps: recent,
            average_cps: if elapsed > 0.0 {
                offered as f64 / elapsed
            } else {
                0.0
            },
            elapsed_s: elapsed,
            eta_s: eta,
            failures: s.failures.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            apps: s.apps.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            late_launches: s.late.load(Ordering::Relaxed),
            blocked_by_limit: s.blocked_limit.load(Ordering::Relaxed),
            blocked_by_capacity: s.blocked_capacity.load(Ordering::Relaxed),
            originate_reply_p99_ms: p99,
            setup_recent: job_recent(s, now),
            active_per_node: self
                .inner
                .live
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .per_node
                .iter()
                .map(|(n, c)| (n.clone(), *c))
                .collect(),
            bottleneck: i
                .bottleneck
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            bottleneck_secs: i
                .bottleneck_secs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            jobs_outstanding: i.jobs_outstanding.load(Ordering::Relaxed),
            jobs_recovered: i.jobs_recovered.load(Ordering::Relaxed),
            config: cfg,
        }
    }

    /// Waits until STOPPED with no call up.
    pub async fn wait_done(&self) {
        let mut rx = self.inner.state.subscribe();
        loop {
            if *rx.borrow_and_update() == State::Stopped && self.active() == 0 {
                return;
            }
            tokio::select! {
                _ = rx.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    }
}

fn note_bottleneck(i: &Inner, why: Option<String>) {
    let mut g = i.bottleneck.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(w) = &why
        && g.as_deref() != Some(w)
    {
        tracing::warn!(reason = %w, "BOTTLENECK: the requested rate is not being met");
    }
    if why.is_some() {
        *g = why;
    }
}

/// Once a second while originating: when the requested rate is not being
/// met, diagnose who holds it back (see [`crate::bottleneck`]) and count
/// the seconds each party was to blame.
async fn monitor(i: Arc<Inner>) {
    use crate::bottleneck::{NodeSignal, Signals, diagnose};
    let mut cpu = switchy_link::cpu::ProcessCpu::own();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let switchy_cpu_pct = cpu.sample();
        if *i.state.borrow() != State::Originating {
            i.late_recent.store(false, Ordering::Relaxed);
            continue;
        }
        let cfg = i.cfg.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let nodes = i
            .cluster
            .nodes()
            .into_iter()
            .filter(|n| cfg.nodes.is_empty() || cfg.nodes.contains(&n.id))
            .map(|n| NodeSignal {
                idle_cpu_pct: n
                    .load
                    .as_ref()
                    .map(|l| l.idle_cpu_pct())
                    .or(n.heartbeat_idle_cpu),
                fs_cpu_pct: n.load.as_ref().and_then(|l| l.fs_cpu_pct()),
                cores: n.load.as_ref().map_or(0, |l| l.cores),
                agent_buffered: n.agent_buffered,
                id: n.id,
            })
            .collect();
        let signals = Signals {
            rate: cfg.rate,
            late: i.late_recent.swap(false, Ordering::Relaxed),
            jobs_outstanding: i.jobs_outstanding.load(Ordering::Relaxed),
            job_p99_ms: job_p99(&i.stats),
            switchy_cpu_pct,
            switchy_cores: cores,
            nodes,
        };
        if let Some(d) = diagnose(&signals) {
            let text = d.to_string();
            {
                let mut g = i.bottleneck_secs.lock().unwrap_or_else(|p| p.into_inner());
                let e = g.entry(d.party()).or_default();
                e.0 += 1;
                e.1 = text.clone();
            }
            note_bottleneck(&i, Some(text));
        }
    }
}

/// The window of [`Status::setup_recent`].
pub const RECENT_WINDOW: Duration = Duration::from_secs(10);
/// Most samples kept for it.
const RECENT_CAP: usize = 50_000;

/// Setup latency over the last seconds (agent clock).
#[derive(Clone, Debug, Default, Serialize, schemars::JsonSchema)]
pub struct Recent {
    /// Window, s.
    pub window_s: f64,
    /// Calls answered in it.
    pub n: u64,
    /// Median, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
}

fn job_recent(s: &Stats, now: Instant) -> Recent {
    let mut q = s.job_recent.lock().unwrap_or_else(|p| p.into_inner());
    while q
        .front()
        .is_some_and(|(t, _)| now.duration_since(*t) > RECENT_WINDOW)
    {
        q.pop_front();
    }
    let mut v: Vec<f64> = q.iter().map(|(_, ms)| *ms).collect();
    drop(q);
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |p: f64| {
        v.get(((v.len() as f64 - 1.0) * p).round().max(0.0) as usize)
            .copied()
            .unwrap_or(0.0)
    };
    Recent {
        window_s: RECENT_WINDOW.as_secs_f64(),
        n: v.len() as u64,
        p50_ms: at(0.5),
        p99_ms: at(0.99),
    }
}

fn job_p99(s: &Stats) -> f64 {
    let q = s.job_ms.lock().unwrap_or_else(|p| p.into_inner());
    let mut v: Vec<f64> = q.iter().copied().collect();
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(((v.len() as f64 - 1.0) * 0.99).round().max(0.0) as usize)
        .copied()
        .unwrap_or(0.0)
}

/// The launch loop.
async fn pace(i: Arc<Inner>) {
    let mut state = i.state.subscribe();
    let mut mixer = Mixer::default();
    let mut rr = 0usize;
    loop {
        // Wait for ORIGINATING.
        while *state.borrow_and_update() != State::Originating {
            if state.changed().await.is_err() {
                return;
            }
        }
        let mut next = tokio::time::Instant::now();
        loop {
            if *state.borrow() != State::Originating {
                break;
            }
            let cfg = i.cfg.lock().unwrap_or_else(|p| p.into_inner()).clone();
            if cfg.max_offered > 0 && i.stats.offered.load(Ordering::Relaxed) >= cfg.max_offered {
                *i.stopped.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
                i.finished.store(true, Ordering::Relaxed);
                i.state.send_replace(State::Stopped);
                tracing::info!("originator: max_offered reached, STOPPED");
                break;
            }
            if cfg.rate <= 0.0 {
                tokio::select! {
                    _ = i.changed.notified() => {}
                    _ = state.changed() => {}
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
                next = tokio::time::Instant::now();
                continue;
            }
            let gap = match cfg.arrivals {
                Arrivals::Even => 1.0 / cfg.rate,
                Arrivals::Poisson => exp_sample(1.0 / cfg.rate),
            };
            next += Duration::from_secs_f64(gap);
            let now = tokio::time::Instant::now();
            if next > now {
                tokio::select! {
                    _ = tokio::time::sleep_until(next) => {}
                    // A rate change re-plans from now.
                    _ = i.changed.notified() => { next = tokio::time::Instant::now(); continue; }
                    _ = state.changed() => { continue; }
                }
            } else if now.duration_since(next) > Duration::from_millis(50) {
                i.stats.late.fetch_add(1, Ordering::Relaxed);
                if now.duration_since(next) > Duration::from_millis(500) {
                    // The monitor names who is to blame.
                    i.late_recent.store(true, Ordering::Relaxed);
                }
                next = catch_up(next, now);
            }
            // Concurrency limit: wait for a call to end.
            let mut waited = false;
            loop {
                let active = i.live.lock().unwrap_or_else(|p| p.into_inner()).calls.len() as u64;
                let limit = i.cfg.lock().unwrap_or_else(|p| p.into_inner()).limit;
                if active < limit || *state.borrow() != State::Originating {
                    break;
                }
                if !waited {
                    i.stats.blocked_limit.fetch_add(1, Ordering::Relaxed);
                    waited = true;
                }
                tokio::select! {
                    _ = i.freed.notified() => {}
                    _ = i.changed.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(5)) => {}
                }
            }
            // A short wait (calls ending a few ms late) keeps the schedule,
            // so the average rate holds; a long one re-plans from now
            // rather than bursting.
            if waited && tokio::time::Instant::now().duration_since(next) > Duration::from_secs(1) {
                next = tokio::time::Instant::now();
            }
            if *state.borrow() != State::Originating {
                break;
            }
            // A node with capacity, round robin.
            // Nodes up, and under their own max-sessions (from HEARTBEAT;
            // one call may add a leg on the node and one on its peer).
            let infos: Vec<_> = i
                .cluster
                .nodes()
                .into_iter()
                .filter(|n| n.ready())
                .filter(|n| cfg.nodes.is_empty() || cfg.nodes.contains(&n.id))
                .collect();
            let full: Vec<bool> = i.cluster.with_tracker(|t| {
                infos
                    .iter()
                    .map(|n| {
                        n.max_sessions
                            .is_some_and(|m| t.node_sessions(&n.id) as u64 + 2 > m)
                    })
                    .collect()
            });
            let any_up = !infos.is_empty();
            let nodes: Vec<String> = infos
                .into_iter()
                .zip(full)
                .filter(|(_, f)| !f)
                .map(|(n, _)| n.id)
                .collect();
            let node = {
                let live = i.live.lock().unwrap_or_else(|p| p.into_inner());
                (0..nodes.len())
                    .map(|k| &nodes[(rr + k) % nodes.len()])
                    .find(|n| {
                        cfg.node_capacity
                            .is_none_or(|cap| live.per_node.get(*n).copied().unwrap_or(0) < cap)
                    })
                    .cloned()
            };
            rr = rr.wrapping_add(1);
            let Some(node) = node else {
                i.stats.blocked_capacity.fetch_add(1, Ordering::Relaxed);
                note_bottleneck(
                    &i,
                    Some(if !any_up {
                        "no node is up (agent connected, ESL up, not degraded)".into()
                    } else {
                        "every node is at its capacity (its max-sessions or node_capacity)".into()
                    }),
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
                next = tokio::time::Instant::now();
                continue;
            };
            if *state.borrow() != State::Originating {
                break;
            }
            let app = mixer.pick(&cfg.apps).map(str::to_owned);
            launch(&i, &cfg, node, app);
        }
    }
}

/// How far behind its schedule the launcher catches up (see [`catch_up`]).
const MAX_LAUNCH_DEBT: Duration = Duration::from_secs(1);

/// The due time the launcher keeps when it wakes at `now`, late for a launch
/// due at `next`. Launches a stall of this process delayed go out at once,
/// back to back, so that the offered rate holds: on a saturated node
/// FreeSWITCH's realtime threads can keep this process off both cores for
/// most of a second. At most [`MAX_LAUNCH_DEBT`] is owed, so a longer stall
/// re-plans instead of bursting more than a second of calls at once.
fn catch_up(next: tokio::time::Instant, now: tokio::time::Instant) -> tokio::time::Instant {
    match now.checked_sub(MAX_LAUNCH_DEBT) {
        Some(floor) if next < floor => floor,
        _ => next,
    }
}

fn launch(i: &Arc<Inner>, cfg: &OriginatorConfig, node: String, app: Option<String>) {
    let call = uuid::Uuid::new_v4().to_string();
    let tracking = i.cluster.config().tracking_var.clone();
    let hold = match cfg.holding {
        Holding::Fixed => cfg.hold_secs(),
        Holding::Exponential => exp_sample(cfg.hold_secs()),
    }
    .max(0.0);
    let fs_holds = cfg.freeswitch_can_hold()
        && i.fs_hold
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(app.as_deref().unwrap_or(""));
    let hold_ms = fs_holds.then(|| (hold * 1000.0).round() as u64);
    let args = match build_originate_args(
        cfg,
        &node,
        &call,
        app.as_deref(),
        &tracking,
        &i.run_id,
        hold_ms,
    ) {
        Ok(a) => a,
        Err(e) => {
            note_bottleneck(i, Some(format!("cannot build originate: {e}")));
            return;
        }
    };
    let active = {
        let mut live = i.live.lock().unwrap_or_else(|p| p.into_inner());
        live.calls.insert(call.clone(), node.clone());
        *live.per_node.entry(node.clone()).or_default() += 1;
        live.calls.len() as u64
    };
    i.stats.max_active.fetch_max(active, Ordering::Relaxed);
    i.stats.offered.fetch_add(1, Ordering::Relaxed);
    {
        let mut q = i.stats.launches.lock().unwrap_or_else(|p| p.into_inner());
        q.push_back(Instant::now());
        if q.len() > 200_000 {
            q.pop_front();
        }
    }
    if let Some(a) = &app {
        *i.stats
            .apps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(a.clone())
            .or_default() += 1;
    }
    let req_us = now_us();
    let sessions = i.cluster.with_tracker(|t| t.len()) as i64;
    i.launches.lock().unwrap_or_else(|p| p.into_inner()).insert(
        call.clone(),
        Launch {
            app,
            req_us,
            job_us: None,
            active_sessions: sessions,
            erlangs: active as f64,
            sent_agent_us: None,
            done_agent_us: None,
        },
    );
    // The caller leg is known before FreeSWITCH reports it, however few
    // events are subscribed.
    let i = i.clone();
    i.in_flight.fetch_add(1, Ordering::Relaxed);
    tokio::spawn(async move {
        i.cluster.expect_leg(&call, &node, &call).await;
        let t0 = Instant::now();
        let job = i.cluster.node(&node).bgapi("originate", &args).await;
        i.in_flight.fetch_sub(1, Ordering::Relaxed);
        match job {
            Ok(job) => {
                if let Some(l) = i
                    .launches
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_mut(&call)
                {
                    l.job_us = Some(now_us());
                }
                i.jobs_outstanding.fetch_add(1, Ordering::Relaxed);
                let out = job_or_answered_leg(&i, job, &call).await;
                i.jobs_outstanding.fetch_sub(1, Ordering::Relaxed);
                // Send → BACKGROUND_JOB on the agent's clock (the
                // controller's only when the agent gave no times).
                let ms = out.elapsed_us().map_or_else(
                    || t0.elapsed().as_secs_f64() * 1000.0,
                    |us| us as f64 / 1000.0,
                );
                {
                    let mut q = i.stats.job_ms.lock().unwrap_or_else(|p| p.into_inner());
                    q.push_back(ms);
                    if q.len() > 1000 {
                        q.pop_front();
                    }
                }
                {
                    let mut q = i.stats.job_recent.lock().unwrap_or_else(|p| p.into_inner());
                    q.push_back((Instant::now(), ms));
                    if q.len() > RECENT_CAP {
                        q.pop_front();
                    }
                }
                if let Some(l) = i
                    .launches
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_mut(&call)
                {
                    l.sent_agent_us = (out.sent_us > 0).then_some(out.sent_us as i64);
                    l.done_agent_us = (out.done_us > 0).then_some(out.done_us as i64);
                }
                match out.result {
                    Ok(_) => {
                        {
                            let mut live = i.live.lock().unwrap_or_else(|p| p.into_inner());
                            if live.calls.contains_key(&call) {
                                live.originated.insert(call.clone());
                            }
                        }
                        // `originate` answers +OK once the caller leg is
                        // answered: no CHANNEL_ANSWER needed.
                        on_answer(&i, &node, &call, (!fs_holds).then_some(hold));
                    }
                    Err(text) => {
                        // FreeSWITCH's `-ERR CAUSE`, or switchy's own when
                        // the job never came back.
                        let cause = if out.done_us == 0 {
                            "SWITCHY_JOB_TIMEOUT".to_owned()
                        } else {
                            text.trim()
                                .trim_start_matches("-ERR")
                                .split_whitespace()
                                .next()
                                .unwrap_or("UNKNOWN")
                                .to_owned()
                        };
                        fail(&i, &call, &cause);
                        // If no leg ever appeared, nothing else ends the
                        // call or writes its CDR (the CDR builder takes the
                        // launch entry when it writes one).
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        if i.cluster.forget_pending(&call).await {
                            no_channel_cdr(&i, &call, &node, &cause).await;
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(node = %node, error = %e, "originate not sent");
                fail(&i, &call, "SWITCHY_COMMAND_FAILED");
                i.cluster.forget_pending(&call).await;
                no_channel_cdr(&i, &call, &node, "SWITCHY_COMMAND_FAILED").await;
            }
        }
    });
}

/// How long a caller leg must have been answered, with its job still
/// out, before the job counts as lost (`originate` returns as soon as the
/// caller answers, so its BACKGROUND_JOB follows the answer at once).
const JOB_LOST_AFTER_ANSWER_US: u64 = 3_000_000;

/// The originate's job result; or, when its BACKGROUND_JOB was lost, what
/// the tracker learned of the caller leg from a resync: answered a while
/// ago means the originate succeeded.
async fn job_or_answered_leg(
    i: &Inner,
    job: crate::cluster::Job,
    call: &str,
) -> crate::cluster::JobOutcome {
    let sent_us = job.sent_us;
    let wait = job.wait_timed();
    tokio::pin!(wait);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            out = &mut wait => return out,
            _ = tick.tick() => {
                let now = now_us() as u64;
                let answered = i.cluster.with_tracker(|t| {
                    t.session(call).is_some_and(|s| {
                        !s.pending
                            && s.answered_us > 0
                            && now.saturating_sub(s.answered_us) > JOB_LOST_AFTER_ANSWER_US
                    })
                });
                if answered {
                    i.jobs_recovered.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(call = %call, "originate's BACKGROUND_JOB lost (ESL outage?): its caller leg is answered, counted as answered");
                    return crate::cluster::JobOutcome {
                        result: Ok(call.to_owned()),
                        sent_us,
                        done_us: 0,
                    };
                }
            }
        }
    }
}

/// A call that failed before any channel existed: ends it and writes its
/// CDR from what the Originator knows.
async fn no_channel_cdr(i: &Inner, call: &str, node: &str, cause: &str) {
    let launch = i
        .launches
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(call);
    end_call(i, call);
    let Some(l) = launch else { return };
    let sink = i.sink.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if let Some(sink) = sink {
        sink.push(Cdr {
            call_id: call.to_owned(),
            node: node.to_owned(),
            app: l.app,
            hangup_cause: cause.to_owned(),
            failed: true,
            run_id: Some(i.run_id.clone()),
            q850: crate::cdr::q850_of(cause).map(i64::from),
            caller_req_originate: Some(l.req_us),
            job_launch: l.job_us,
            active_sessions: l.active_sessions,
            erlangs: l.erlangs,
            ..Cdr::default()
        })
        .await;
    }
}

fn fail(i: &Inner, _call: &str, cause: &str) {
    i.stats.failed.fetch_add(1, Ordering::Relaxed);
    *i.stats
        .failures
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(cause.to_owned())
        .or_default() += 1;
}

fn end_call(i: &Inner, call: &str) {
    let mut live = i.live.lock().unwrap_or_else(|p| p.into_inner());
    live.answered.remove(call);
    live.originated.remove(call);
    if let Some(node) = live.calls.remove(call) {
        if let Some(n) = live.per_node.get_mut(&node) {
            *n = n.saturating_sub(1);
        }
        i.stats.ended.fetch_add(1, Ordering::Relaxed);
        drop(live);
        i.freed.notify_waiters();
    }
}

/// One of our calls answered: count it and, unless FreeSWITCH holds it
/// (`hold` None), hang it up after `hold` seconds (once).
fn on_answer(i: &Arc<Inner>, node: &str, uuid: &str, hold: Option<f64>) {
    {
        let mut live = i.live.lock().unwrap_or_else(|p| p.into_inner());
        if !live.calls.contains_key(uuid) || !live.answered.insert(uuid.to_owned()) {
            return;
        }
    }
    i.stats.answered.fetch_add(1, Ordering::Relaxed);
    let Some(hold) = hold else { return };
    let s = crate::Session {
        node: i.cluster.node(node),
        uuid: uuid.to_owned(),
    };
    let i = i.clone();
    let call = uuid.to_owned();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs_f64(hold.max(0.0))).await;
        // A call that already ended needs no hangup (FreeSWITCH would
        // answer "-ERR No such channel!"). One that cannot be hung up now
        // (its node's ESL or agent is down) is tried again until it ends:
        // a call left up would hold a channel and its count forever.
        let live = |i: &Inner| {
            i.live
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .calls
                .contains_key(&call)
        };
        let mut tries = 0u32;
        while live(&i) {
            match s.hangup("NORMAL_CLEARING").await {
                Ok(_) => break,
                Err(e) => {
                    tries += 1;
                    if tries == 1 || tries.is_multiple_of(20) {
                        tracing::warn!(call = %call, error = %e, tries, "hangup failed; retrying while the call is up");
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    });
}

/// Follows our calls: last leg gone → the call is over (answers come with
/// the originate's job). A lossless consumer: no end is ever missed.
async fn watch_calls(i: Arc<Inner>) {
    let mut rx = i.cluster.subscribe("originator", Feed::Ends, 8192);
    while let Some(ev) = rx.recv().await {
        if let ClusterEvent::Finished(f) = ev
            && f.call_ended
        {
            let call = &f.session.call;
            let was_ours = i
                .live
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .calls
                .contains_key(call);
            if was_ours {
                end_call(&i, call);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_launcher_catches_up_at_most_a_second() {
        let now = tokio::time::Instant::now() + Duration::from_secs(10);
        // 300 ms behind (a stall): every owed launch goes out now.
        let due = now - Duration::from_millis(300);
        assert_eq!(super::catch_up(due, now), due);
        // 3 s behind: only the last second is owed.
        let due = now - Duration::from_secs(3);
        assert_eq!(super::catch_up(due, now), now - MAX_LAUNCH_DEBT);
        // On time or early: unchanged.
        assert_eq!(super::catch_up(now, now), now);
    }

    #[test]
    fn weighted_mix_interleaves() {
        let apps = vec![
            Weighted {
                app: "a".into(),
                weight: 33,
            },
            Weighted {
                app: "b".into(),
                weight: 33,
            },
            Weighted {
                app: "c".into(),
                weight: 34,
            },
        ];
        let mut m = Mixer::default();
        let picks: Vec<String> = (0..100)
            .map(|_| m.pick(&apps).unwrap_or("").to_owned())
            .collect();
        let count = |x: &str| picks.iter().filter(|p| *p == x).count();
        assert_eq!((count("a"), count("b"), count("c")), (33, 33, 34));
        assert_ne!(picks[0], picks[1], "interleaved, not runs");
    }

    #[test]
    fn originate_args_like_the_seed() {
        let cfg = OriginatorConfig {
            dest_url: Some("2000@10.0.0.2:5080".into()),
            proxy: Some("10.0.0.9:5060".into()),
            headers: [("Test".to_owned(), "1".to_owned())].into(),
            codec: Some("PCMU".into()),
            ..Default::default()
        };
        let a = build_originate_args(
            &cfg,
            "fs1",
            "u1",
            Some("bert"),
            "sip_h_X-switchy-orig-uuid",
            "r1",
            None,
        )
        .unwrap();
        assert_eq!(
            a,
            "{origination_uuid=u1,sip_h_X-switchy-orig-uuid=u1,switchy_originator=r1,sip_h_X-switchy-app=bert,codec_string=PCMU,sip_h_X-Test=1}sofia/external/2000@10.0.0.2:5080;fs_path=sip:10.0.0.9:5060 &park()"
        );
        // FreeSWITCH holds the call itself: sleep instead of park.
        let held = build_originate_args(&cfg, "fs1", "u1", None, "v", "r1", Some(2500)).unwrap();
        assert!(
            held.ends_with(";fs_path=sip:10.0.0.9:5060 &sleep(2500)"),
            "{held}"
        );
        let echo = OriginatorConfig {
            app_name: "echo".into(),
            ..cfg.clone()
        };
        let not_held =
            build_originate_args(&echo, "fs1", "u1", None, "v", "r1", Some(2500)).unwrap();
        assert!(not_held.ends_with(" &echo()"), "{not_held}");
        let bad = OriginatorConfig {
            dest_url: Some("2000@x y".into()),
            ..Default::default()
        };
        assert!(bad.validate().is_err());
        let named = OriginatorConfig {
            caller_id_name: Some("Load Test".into()),
            caller_id_number: Some("5551000".into()),
            timeout_s: 30,
            ..cfg.clone()
        };
        let a = build_originate_args(&named, "fs1", "u1", None, "v", "r1", None).unwrap();
        assert!(
            a.contains(",origination_caller_id_name='Load Test',origination_caller_id_number=5551000,originate_timeout=30,"),
            "{a}"
        );
        let bad = OriginatorConfig {
            caller_id_name: Some("a}b".into()),
            ..Default::default()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn exponential_mean() {
        let n = 20_000;
        let m: f64 = (0..n).map(|_| exp_sample(2.0)).sum::<f64>() / n as f64;
        assert!((m - 2.0).abs() < 0.1, "{m}");
    }
}
