//! Call-flow apps: named sets of event callbacks, loaded under app ids by
//! the [`AppManager`], which dispatches every session's events to the app
//! its `switchy_app` variable names (else the default app).
//!
//! Guarantees:
//! - one session's events reach its callbacks in arrival order, one
//!   callback at a time, so the commands a flow issues go out in the order
//!   issued;
//! - [`Ctx::execute`] waits for the application's CHANNEL_EXECUTE_COMPLETE
//!   (matched by `Event-UUID`), so "ring_ready, wait, answer" is race-free;
//! - a callback that errors or panics is logged with node/session context
//!   and counted; the event loop and every other app go on;
//! - loading is atomic: when a setup fails, the apps already set up are torn
//!   down and nothing is registered;
//! - every event an app listens to is subscribed on every agent, and every
//!   wait has an end (the channel's hangup/destroy, or a timeout).

pub mod builtin;

use crate::cluster::{Cluster, ClusterEvent, CommandError, Session};
use serde::Serialize;
use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use switchy_protocol::esl::Event;
use tokio::sync::{mpsc, oneshot};

/// What a callback returns.
pub type BoxFut = Pin<Box<dyn Future<Output = Result<(), crate::AppError>> + Send>>;
type Callback = Arc<dyn Fn(Ctx) -> BoxFut + Send + Sync>;
type Hook = Arc<dyn Fn(Cluster) -> BoxFut + Send + Sync>;

/// An app: a name, its documentation, callbacks by event name, and
/// optional setup/teardown.
#[derive(Clone)]
pub struct App {
    name: String,
    doc: String,
    callbacks: Vec<(String, Callback)>,
    /// Events the app waits for without a callback (see [`App::needs`]).
    needs: Vec<String>,
    setup: Option<Hook>,
    teardown: Option<Hook>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("name", &self.name)
            .field("events", &self.events())
            .finish()
    }
}

impl App {
    /// An app with no callbacks yet.
    pub fn new(name: &str, doc: &str) -> App {
        App {
            name: name.to_owned(),
            doc: doc.to_owned(),
            callbacks: Vec::new(),
            needs: Vec::new(),
            setup: None,
            teardown: None,
        }
    }

    /// Declares events the app awaits without a callback: with
    /// [`Ctx::execute`] (CHANNEL_EXECUTE_COMPLETE) or [`Ctx::expect`]. They
    /// are subscribed while the app is loaded (a wait on an event nobody
    /// declared subscribes it when it starts, one round trip late).
    pub fn needs(mut self, events: &[&str]) -> App {
        self.needs.extend(events.iter().map(|e| (*e).to_owned()));
        self
    }

    /// Calls `f` on every `event` (an Event-Name such as `CHANNEL_PARK`, or
    /// `CUSTOM sub::class`) of the sessions dispatched to this app.
    pub fn on<F, Fut>(mut self, event: &str, f: F) -> App
    where
        F: Fn(Ctx) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), crate::AppError>> + Send + 'static,
    {
        self.callbacks
            .push((event.to_owned(), Arc::new(move |c| Box::pin(f(c)))));
        self
    }

    /// Runs `f` when the app is loaded; an error refuses the load.
    pub fn setup<F, Fut>(mut self, f: F) -> App
    where
        F: Fn(Cluster) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), crate::AppError>> + Send + 'static,
    {
        self.setup = Some(Arc::new(move |c| Box::pin(f(c))));
        self
    }

    /// Runs `f` when the app is unloaded.
    pub fn teardown<F, Fut>(mut self, f: F) -> App
    where
        F: Fn(Cluster) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), crate::AppError>> + Send + 'static,
    {
        self.teardown = Some(Arc::new(move |c| Box::pin(f(c))));
        self
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its documentation.
    pub fn doc(&self) -> &str {
        &self.doc
    }

    /// The events it listens to or awaits.
    pub fn events(&self) -> Vec<String> {
        let s: BTreeSet<String> = self
            .callbacks
            .iter()
            .map(|(e, _)| e.clone())
            .chain(self.needs.iter().cloned())
            .collect();
        s.into_iter().collect()
    }
}

/// Per-session scratch space shared by the callbacks of one session; freed
/// with the session.
pub type SessionData = Arc<Mutex<HashMap<String, String>>>;

/// What a callback gets: the event, its session, and ways to act and wait.
#[derive(Clone)]
pub struct Ctx {
    /// The cluster.
    pub cluster: Cluster,
    /// Node the event came from.
    pub node: String,
    /// The session's UUID (empty for events without a Unique-ID).
    pub uuid: String,
    /// The event.
    pub event: Arc<Event>,
    /// The app id the session was dispatched to.
    pub app_id: String,
    /// Per-session scratch space.
    pub data: SessionData,
    mgr: Arc<MgrInner>,
}

/// Why a wait ended without its event.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    /// The command could not be sent.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// The channel ended first.
    #[error("session {0} ended before the awaited event")]
    Ended(String),
    /// Timed out.
    #[error(
        "no {what} for session {uuid} within {after:?}: is the event subscribed, and did the application run?"
    )]
    Timeout {
        /// What was awaited.
        what: String,
        /// Session.
        uuid: String,
        /// After how long.
        after: Duration,
    },
}

/// A registered wait; await it with [`Expect::wait`].
pub struct Expect {
    rx: oneshot::Receiver<Result<Arc<Event>, String>>,
    what: String,
    uuid: String,
}

impl Expect {
    /// The awaited event, or why it will not come.
    pub async fn wait(self, timeout: Duration) -> Result<Arc<Event>, WaitError> {
        match tokio::time::timeout(timeout, self.rx).await {
            Ok(Ok(Ok(e))) => Ok(e),
            Ok(Ok(Err(_))) | Ok(Err(_)) => Err(WaitError::Ended(self.uuid)),
            Err(_) => Err(WaitError::Timeout {
                what: self.what,
                uuid: self.uuid,
                after: timeout,
            }),
        }
    }
}

impl Ctx {
    /// The event's name.
    pub fn event_name(&self) -> &str {
        self.event.event_name().unwrap_or("")
    }

    /// A header of the event.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.event.get(name)
    }

    /// A channel variable (`variable_<name>`) from the event.
    pub fn var(&self, name: &str) -> Option<&str> {
        self.event.variable(name)
    }

    /// A channel variable from the event, else from the latest event of
    /// the session that carried variables (DTMF and a few other events
    /// carry none).
    pub fn channel_var(&self, name: &str) -> Option<String> {
        if let Some(v) = self.var(name) {
            return Some(v.to_owned());
        }
        self.cluster.with_tracker(|t| {
            t.session(&self.uuid)
                .and_then(|s| s.variable(name))
                .map(str::to_owned)
        })
    }

    /// `Call-Direction` of the session.
    pub fn direction(&self) -> &str {
        self.header("Call-Direction").unwrap_or("")
    }

    /// The session handle (every `Session` command).
    pub fn session(&self) -> Session {
        Session {
            node: self.cluster.node(&self.node),
            uuid: self.uuid.clone(),
        }
    }

    /// A session handle for another channel on the same node.
    pub fn other(&self, uuid: &str) -> Session {
        Session {
            node: self.cluster.node(&self.node),
            uuid: uuid.to_owned(),
        }
    }

    /// Registers a wait for the next `event` of this session; register
    /// before sending the command that causes it, then [`Expect::wait`].
    pub fn expect(&self, event: &str) -> Expect {
        self.expect_on(&self.uuid, event)
    }

    /// As [`Ctx::expect`] for another session (e.g. the peer leg).
    pub fn expect_on(&self, uuid: &str, event: &str) -> Expect {
        self.mgr.ensure_subscribed(event);
        let (tx, rx) = oneshot::channel();
        self.mgr.add_waiter(
            uuid,
            Waiter {
                on: WaitOn::Event(event.to_owned()),
                tx,
            },
        );
        Expect {
            rx,
            what: event.to_owned(),
            uuid: uuid.to_owned(),
        }
    }

    /// Executes a dialplan application on this session (`sendmsg` with an
    /// `Event-UUID`) and waits for its CHANNEL_EXECUTE_COMPLETE; fails when
    /// the channel hangs up first or after `timeout`.
    pub async fn execute(
        &self,
        app: &str,
        arg: &str,
        timeout: Duration,
    ) -> Result<Arc<Event>, WaitError> {
        self.mgr.ensure_subscribed("CHANNEL_EXECUTE_COMPLETE");
        let id = uuid::Uuid::new_v4().to_string();
        let (tx, rx) = oneshot::channel();
        self.mgr.add_waiter(
            &self.uuid,
            Waiter {
                on: WaitOn::AppDone(id.clone()),
                tx,
            },
        );
        self.send_execute(app, arg, Some(&id)).await?;
        Expect {
            rx,
            what: format!("CHANNEL_EXECUTE_COMPLETE of {app}"),
            uuid: self.uuid.clone(),
        }
        .wait(timeout)
        .await
    }

    /// Executes an application without waiting for it to finish (`park`,
    /// `echo`, a `bridge` that ends the flow).
    pub async fn execute_nowait(&self, app: &str, arg: &str) -> Result<(), CommandError> {
        self.send_execute(app, arg, None).await
    }

    async fn send_execute(
        &self,
        app: &str,
        arg: &str,
        event_uuid: Option<&str>,
    ) -> Result<(), CommandError> {
        let r = self
            .cluster
            .node(&self.node)
            .execute_tagged(&self.uuid, app, arg, event_uuid)
            .await?;
        if r.starts_with("-ERR") {
            return Err(CommandError::Agent {
                node: self.node.clone(),
                reason: r.trim_end().to_owned(),
            });
        }
        Ok(())
    }

    /// Per-app counters (see [`AppManager::counter`]).
    pub fn count(&self, name: &str) {
        self.mgr.bump(&format!("{}.{name}", self.app_id));
    }

    /// True once the session is over: its event says it is hanging up (a
    /// PLAYBACK_STOP that a hangup interrupted, say), or the tracker has
    /// closed it. Apps check it before they act, so they never send a
    /// command to a channel that is gone.
    pub fn ended(&self) -> bool {
        let hanging_up = self
            .header("Channel-State")
            .is_some_and(|s| matches!(s, "CS_HANGUP" | "CS_REPORTING" | "CS_DESTROY"))
            || self.header("Answer-State") == Some("hangup");
        hanging_up
            || !self
                .cluster
                .with_tracker(|t| t.session(&self.uuid).is_some())
    }

    /// The call this session belongs to (the tracking variable, else the
    /// tracker's grouping, else the session itself).
    pub fn call_id(&self) -> String {
        let var = self.cluster.config().tracking_var.clone();
        self.channel_var(&var)
            .filter(|v| !v.is_empty() && v != "_undef_")
            .or_else(|| {
                self.cluster.with_tracker(|t| {
                    t.session(&self.uuid)
                        .map(|s| s.call.clone())
                        .filter(|c| !c.is_empty())
                })
            })
            .unwrap_or_else(|| self.uuid.clone())
    }

    /// Records this app's verdict on the session's call (its CDR and the
    /// summary show the latest; see [`Cluster::set_verdict`]).
    pub fn verdict(&self, v: crate::cluster::Verdict) {
        self.cluster.set_verdict(&self.call_id(), &self.app_id, v);
    }
}

enum WaitOn {
    AppDone(String),
    Event(String),
}

struct Waiter {
    on: WaitOn,
    tx: oneshot::Sender<Result<Arc<Event>, String>>,
}

enum Item {
    Event(Arc<Event>),
    End,
}

/// App manager settings.
#[derive(Clone, Debug)]
pub struct AppConfig {
    /// Headers naming a session's app id, first found wins.
    pub app_headers: Vec<String>,
}

impl Default for AppConfig {
    fn default() -> Self {
        AppConfig {
            app_headers: vec![
                "variable_switchy_app".into(),
                "variable_sip_h_X-switchy-app".into(),
            ],
        }
    }
}

#[derive(Default)]
struct Loaded {
    /// App id → apps in load order.
    by_id: HashMap<String, Vec<Arc<App>>>,
    order: Vec<String>,
    default: Option<String>,
}

impl Loaded {
    /// True when some loaded app has a callback for events named `name`
    /// (any `CUSTOM …` callback for `CUSTOM`).
    fn wants(&self, name: &str) -> bool {
        self.by_id.values().flatten().any(|a| {
            a.callbacks
                .iter()
                .any(|(ev, _)| ev == name || name == "CUSTOM" && ev.starts_with("CUSTOM"))
        })
    }

    /// Every event some loaded app listens to.
    fn events(&self) -> Vec<String> {
        self.by_id
            .values()
            .flatten()
            .flat_map(|a| a.events())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }
}

/// Counters of the dispatcher.
#[derive(Debug, Default, Serialize)]
pub struct AppStats {
    /// Callbacks run.
    pub callbacks: u64,
    /// Callbacks that returned an error.
    pub errors: u64,
    /// Callbacks that panicked.
    pub panics: u64,
    /// App-defined counters (`app_id.name`).
    pub counters: std::collections::BTreeMap<String, u64>,
}

struct MgrInner {
    cluster: Cluster,
    config: AppConfig,
    loaded: RwLock<Arc<Loaded>>,
    load_lock: tokio::sync::Mutex<()>,
    waits: Mutex<HashMap<String, Vec<Waiter>>>,
    sessions: Mutex<HashMap<String, mpsc::UnboundedSender<Item>>>,
    callbacks: AtomicU64,
    errors: AtomicU64,
    panics: AtomicU64,
    counters: Mutex<std::collections::BTreeMap<String, u64>>,
    /// Events waited for that no app declared.
    waited: Mutex<BTreeSet<String>>,
}

/// Loads apps and dispatches events to them (cheap to clone).
#[derive(Clone)]
pub struct AppManager {
    inner: Arc<MgrInner>,
    _task: Arc<AbortOnDrop>,
}

/// Dropped with the last `AppManager` clone: stops the dispatcher and ends
/// every session worker (they hold the manager, the manager holds their
/// senders: without this the pair would keep each other, and the cluster,
/// alive).
struct AbortOnDrop(tokio::task::JoinHandle<()>, Arc<MgrInner>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
        self.1
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.1
            .waits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

/// Why a load failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The id is taken.
    #[error("app id {0:?} is already loaded: unload it first or choose another id")]
    Taken(String),
    /// No apps given.
    #[error("nothing to load under {0:?}")]
    Empty(String),
    /// A setup failed; nothing was registered.
    #[error("setup of app {app:?} failed, nothing was loaded: {reason}")]
    Setup {
        /// The app.
        app: String,
        /// Why.
        reason: String,
    },
}

impl AppManager {
    /// Starts dispatching the cluster's events.
    pub fn start(cluster: Cluster, config: AppConfig) -> AppManager {
        let inner = Arc::new(MgrInner {
            cluster: cluster.clone(),
            config,
            loaded: RwLock::new(Arc::new(Loaded::default())),
            load_lock: tokio::sync::Mutex::new(()),
            waits: Mutex::new(HashMap::new()),
            sessions: Mutex::new(HashMap::new()),
            callbacks: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            panics: AtomicU64::new(0),
            counters: Mutex::new(Default::default()),
            waited: Mutex::new(Default::default()),
        });
        let rx = cluster.subscribe("apps", crate::pipeline::Feed::Everything, 8192);
        let task = tokio::spawn(dispatch(inner.clone(), rx));
        let stop = Arc::new(AbortOnDrop(task, inner.clone()));
        AppManager { inner, _task: stop }
    }

    /// Loads `apps` under `id` (called in this order for each event). The
    /// first id loaded becomes the default unless one is set.
    pub async fn load(&self, id: &str, apps: Vec<App>) -> Result<(), LoadError> {
        let _g = self.inner.load_lock.lock().await;
        if apps.is_empty() {
            return Err(LoadError::Empty(id.to_owned()));
        }
        if self.inner.snapshot().by_id.contains_key(id) {
            return Err(LoadError::Taken(id.to_owned()));
        }
        let mut done: Vec<&App> = Vec::new();
        for app in &apps {
            if let Some(setup) = &app.setup {
                let f = setup.clone();
                let c = self.inner.cluster.clone();
                let r = tokio::spawn(async move { f(c).await }).await;
                let reason = match r {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(format!("{e:#}")),
                    Err(e) => Some(format!("setup panicked: {e}")),
                };
                if let Some(reason) = reason {
                    for d in done.iter().rev() {
                        if let Some(t) = &d.teardown {
                            let _ = t(self.inner.cluster.clone()).await;
                        }
                    }
                    return Err(LoadError::Setup {
                        app: app.name.clone(),
                        reason,
                    });
                }
            }
            done.push(app);
        }
        let events: Vec<String> = apps
            .iter()
            .flat_map(App::events)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        {
            let mut g = self.inner.loaded.write().unwrap_or_else(|p| p.into_inner());
            let mut next = Loaded {
                by_id: g.by_id.clone(),
                order: g.order.clone(),
                default: g.default.clone(),
            };
            next.by_id
                .insert(id.to_owned(), apps.into_iter().map(Arc::new).collect());
            next.order.push(id.to_owned());
            if next.default.is_none() {
                next.default = Some(id.to_owned());
            }
            *g = Arc::new(next);
        }
        self.inner
            .cluster
            .set_demand("apps", &self.inner.snapshot().events())
            .await;
        tracing::info!(app_id = %id, events = ?events, "apps loaded");
        Ok(())
    }

    /// Unloads `id` (teardown runs); false if it was not loaded.
    pub async fn unload(&self, id: &str) -> bool {
        let _g = self.inner.load_lock.lock().await;
        let removed = {
            let mut g = self.inner.loaded.write().unwrap_or_else(|p| p.into_inner());
            let mut next = Loaded {
                by_id: g.by_id.clone(),
                order: g.order.iter().filter(|x| *x != id).cloned().collect(),
                default: g.default.clone().filter(|d| d != id),
            };
            let removed = next.by_id.remove(id);
            *g = Arc::new(next);
            removed
        };
        let Some(apps) = removed else { return false };
        // Events no loaded app listens to any more are unsubscribed.
        self.inner
            .cluster
            .set_demand("apps", &self.inner.snapshot().events())
            .await;
        for a in apps.iter().rev() {
            if let Some(t) = &a.teardown
                && let Err(e) = t(self.inner.cluster.clone()).await
            {
                tracing::warn!(app = %a.name, error = %e, "teardown failed");
            }
        }
        true
    }

    /// Sessions that name no app go to `id`.
    pub fn set_default(&self, id: &str) {
        let mut g = self.inner.loaded.write().unwrap_or_else(|p| p.into_inner());
        let next = Loaded {
            by_id: g.by_id.clone(),
            order: g.order.clone(),
            default: Some(id.to_owned()),
        };
        *g = Arc::new(next);
    }

    /// Loaded ids with their apps' names, in load order, and the default.
    pub fn loaded(&self) -> (Vec<(String, Vec<String>)>, Option<String>) {
        let s = self.inner.snapshot();
        (
            s.order
                .iter()
                .map(|id| {
                    (
                        id.clone(),
                        s.by_id
                            .get(id)
                            .map(|v| v.iter().map(|a| a.name.clone()).collect())
                            .unwrap_or_default(),
                    )
                })
                .collect(),
            s.default.clone(),
        )
    }

    /// Dispatcher counters.
    pub fn stats(&self) -> AppStats {
        let i = &self.inner;
        AppStats {
            callbacks: i.callbacks.load(Ordering::Relaxed),
            errors: i.errors.load(Ordering::Relaxed),
            panics: i.panics.load(Ordering::Relaxed),
            counters: i.counters.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        }
    }

    /// One app-defined counter (`app_id.name`).
    pub fn counter(&self, name: &str) -> u64 {
        self.inner
            .counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .copied()
            .unwrap_or(0)
    }

    /// True when the app loaded under `id` listens to `event` (an
    /// Originator holds a call in FreeSWITCH itself only when its app does
    /// not act on the answered caller leg).
    pub fn listens(&self, id: &str, event: &str) -> bool {
        self.inner
            .snapshot()
            .by_id
            .get(id)
            .is_some_and(|apps| apps.iter().any(|a| a.events().iter().any(|e| e == event)))
    }

    /// Sessions with a live dispatch worker.
    pub fn live_sessions(&self) -> usize {
        self.inner
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }
}

impl MgrInner {
    fn snapshot(&self) -> Arc<Loaded> {
        self.loaded
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn bump(&self, name: &str) {
        *self
            .counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.to_owned())
            .or_default() += 1;
    }

    /// A wait on an event no loaded app declared: subscribe it from now on
    /// (the wait itself may time out if the event comes first).
    fn ensure_subscribed(&self, event: &str) {
        if self.cluster.demands(event) {
            return;
        }
        tracing::warn!(
            event,
            "an app waits for an event it did not declare (App::needs): subscribing it now"
        );
        let cluster = self.cluster.clone();
        let mut waited = self.waited.lock().unwrap_or_else(|p| p.into_inner());
        waited.insert(event.to_owned());
        let all: Vec<String> = waited.iter().cloned().collect();
        drop(waited);
        tokio::spawn(async move { cluster.set_demand("waits", &all).await });
    }

    fn add_waiter(&self, uuid: &str, w: Waiter) {
        self.waits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(uuid.to_owned())
            .or_default()
            .push(w);
    }

    /// Completes the waits this event satisfies; fails the ones it ends.
    fn resolve(&self, uuid: &str, e: &Arc<Event>) {
        let mut g = self.waits.lock().unwrap_or_else(|p| p.into_inner());
        let Some(list) = g.get_mut(uuid) else { return };
        let name = e.event_name().unwrap_or("");
        let app_uuid = if name == "CHANNEL_EXECUTE_COMPLETE" {
            e.get("Application-UUID")
        } else {
            None
        };
        let hangup = name == "CHANNEL_HANGUP" || name == "CHANNEL_HANGUP_COMPLETE";
        let destroy = name == "CHANNEL_DESTROY";
        let mut keep = Vec::with_capacity(list.len());
        for w in list.drain(..) {
            let hit = match &w.on {
                WaitOn::AppDone(id) => app_uuid == Some(id.as_str()),
                WaitOn::Event(n) => {
                    n == name
                        || (n.starts_with("CUSTOM ")
                            && e.subclass() == n.strip_prefix("CUSTOM ").map(str::trim))
                }
            };
            if hit {
                let _ = w.tx.send(Ok(e.clone()));
            } else if destroy || (hangup && matches!(w.on, WaitOn::AppDone(_))) {
                let _ = w.tx.send(Err(format!("{name} first")));
            } else if !w.tx.is_closed() {
                keep.push(w);
            }
        }
        if keep.is_empty() {
            g.remove(uuid);
        } else {
            *list = keep;
        }
    }

    fn end_waits(&self, uuid: &str) {
        let list = self
            .waits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(uuid);
        for w in list.into_iter().flatten() {
            let _ = w.tx.send(Err("session ended".into()));
        }
    }
}

/// Hands each event to its session's worker. A lossless consumer: it
/// must never wait here (a worker waits for command results, which come
/// through this same pipeline).
async fn dispatch(mgr: Arc<MgrInner>, mut rx: mpsc::Receiver<ClusterEvent>) {
    while let Some(ev) = rx.recv().await {
        match ev {
            ClusterEvent::Event(node, e) => {
                let uuid = e.unique_id().unwrap_or("").to_owned();
                if !uuid.is_empty() {
                    mgr.resolve(&uuid, &e);
                }
                let destroy = e.event_name() == Some("CHANNEL_DESTROY");
                let key = if uuid.is_empty() {
                    format!("node:{node}")
                } else {
                    uuid.clone()
                };
                let mut g = mgr.sessions.lock().unwrap_or_else(|p| p.into_inner());
                // An event no app listens to needs no session worker (most
                // events, in a load test): only its end matters.
                if mgr.snapshot().wants(e.event_name().unwrap_or("")) {
                    let tx = g.entry(key.clone()).or_insert_with(|| {
                        let (tx, rx) = mpsc::unbounded_channel();
                        tokio::spawn(session_worker(mgr.clone(), node.clone(), uuid.clone(), rx));
                        tx
                    });
                    let _ = tx.send(Item::Event(e));
                }
                if destroy {
                    if let Some(tx) = g.remove(&key) {
                        let _ = tx.send(Item::End);
                    }
                    drop(g);
                    mgr.end_waits(&uuid);
                }
            }
            ClusterEvent::Finished(f) => {
                let uuid = &f.session.uuid;
                let tx = mgr
                    .sessions
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(uuid);
                if let Some(tx) = tx {
                    let _ = tx.send(Item::End);
                }
                mgr.end_waits(uuid);
            }
            ClusterEvent::Mark(_) => {}
        }
    }
}

/// The app id an event names, if any.
fn named_app(mgr: &MgrInner, e: &Event) -> Option<String> {
    mgr.config
        .app_headers
        .iter()
        .find_map(|h| e.get(h).filter(|v| !v.is_empty()).map(str::to_owned))
}

async fn session_worker(
    mgr: Arc<MgrInner>,
    node: String,
    uuid: String,
    mut rx: mpsc::UnboundedReceiver<Item>,
) {
    let data: SessionData = Arc::default();
    let mut named: Option<String> = None;
    while let Some(item) = rx.recv().await {
        let e = match item {
            Item::Event(e) => e,
            Item::End => break,
        };
        if named.is_none() {
            named = named_app(&mgr, &e);
        }
        let loaded = mgr.snapshot();
        let name = e.event_name().unwrap_or("").to_owned();
        let sub = e.subclass().unwrap_or("");
        let targets: Vec<(String, Arc<App>)> = if uuid.is_empty() {
            // Node-level events go to every app listening.
            loaded
                .order
                .iter()
                .flat_map(|id| {
                    loaded
                        .by_id
                        .get(id)
                        .into_iter()
                        .flatten()
                        .map(move |a| (id.clone(), a.clone()))
                })
                .collect()
        } else {
            let id = named.clone().or_else(|| loaded.default.clone());
            match id
                .as_ref()
                .and_then(|id| loaded.by_id.get(id).map(|a| (id, a)))
            {
                Some((id, apps)) => apps.iter().map(|a| (id.clone(), a.clone())).collect(),
                None => Vec::new(),
            }
        };
        for (app_id, app) in targets {
            for (ev, cb) in &app.callbacks {
                let hit = *ev == name
                    || (name == "CUSTOM" && ev.strip_prefix("CUSTOM ").map(str::trim) == Some(sub));
                if !hit {
                    continue;
                }
                let ctx = Ctx {
                    cluster: mgr.cluster.clone(),
                    node: node.clone(),
                    uuid: uuid.clone(),
                    event: e.clone(),
                    app_id: app_id.clone(),
                    data: data.clone(),
                    mgr: mgr.clone(),
                };
                mgr.callbacks.fetch_add(1, Ordering::Relaxed);
                let cb = cb.clone();
                match tokio::spawn(async move { cb(ctx).await }).await {
                    Ok(Ok(())) => {}
                    Ok(Err(err)) => {
                        mgr.errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(node = %node, session = %uuid, app = %app.name, event = %name, error = %format!("{err:#}"), "app callback failed");
                    }
                    Err(join) => {
                        mgr.panics.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(node = %node, session = %uuid, app = %app.name, event = %name, error = %join, "app callback panicked; the app keeps running for other sessions");
                    }
                }
            }
        }
    }
}
