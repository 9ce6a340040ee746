//! The central routing "dialplan": routes match a regex against a header of
//! a parked channel (default `Caller-Destination-Number`) when all guards
//! hold, in order, and run a handler — built-in actions from a TOML routes
//! file, or Rust closures. A handler breaks routing (the default) or lets
//! it continue. The table is swapped atomically on reload: calls already
//! routed are untouched, new calls see the new table.

use crate::apps::{App, Ctx, WaitError};
use crate::route_template::{can_hold_syntax, capture_refs, expand_checked, group_pattern};
use regex::Regex;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use switchy_protocol::esl::args::{self, Class, Context, Refused};

/// What a handler says about the routes after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Stop routing ("break on true").
    Break,
    /// Try the next routes too.
    Continue,
}

/// What a Rust handler gets.
#[derive(Clone)]
pub struct RouteCtx {
    /// The event context (session, headers, commands).
    pub ctx: Ctx,
    /// Capture groups (`captures[0]` is the whole match).
    pub captures: Vec<Option<String>>,
    /// The route's parameters.
    pub params: BTreeMap<String, String>,
    /// The route's name.
    pub route: String,
}

type HandlerFut = Pin<Box<dyn Future<Output = Result<Flow, crate::AppError>> + Send>>;
/// A Rust route handler.
pub type Handler = Arc<dyn Fn(RouteCtx) -> HandlerFut + Send + Sync>;

/// One built-in action of a routes file. Strings are templates: `$1` is a
/// capture group, `${name}` a channel variable (or header).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Bridge: `sofia/gateway/<gateway>/<dest>` or
    /// `sofia/<profile>/<dest>[;fs_path=sip:<proxy>]`, or a raw `dial` string.
    Bridge(BridgeSpec),
    /// Reply with a SIP code (`respond`).
    Respond(u16),
    /// Hang up with a cause.
    Hangup(String),
    /// Answer.
    Answer,
    /// Ring (180) without media.
    RingReady,
    /// Early media (183).
    PreAnswer,
    /// Play a file or stream and wait for it to end.
    Playback(String),
    /// Park the channel.
    Park,
    /// Continue in another route table (like a dialplan context).
    Transfer(String),
    /// Set one channel variable.
    Setvar {
        /// Variable.
        name: String,
        /// Value.
        value: String,
    },
    /// Set several channel variables.
    Setvars(BTreeMap<String, String>),
    /// Start recording to a path (`uuid_record start`).
    Record(String),
    /// Send a SIP REFER to a URI.
    Deflect(String),
    /// Echo media back.
    Echo,
    /// Hand the call to the RELAY clients of this context (`serve
    /// --relay-listen`); when none is connected, or every one passes, the
    /// next action runs.
    Relay(String),
}

/// Where to bridge.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BridgeSpec {
    /// Destination (user@host, or the number for a gateway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dest: Option<String>,
    /// SIP profile (default `external`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// Gateway name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Outbound proxy (`fs_path`), host[:port].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
    /// A raw dial string instead of dest/profile/gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dial: Option<String>,
    /// Channel variables for the B leg (`{k=v}`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vars: BTreeMap<String, String>,
}

/// One route of a routes file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// Name (for logs and `GET /api/v1/routes`).
    pub name: String,
    /// Route table (default `default`).
    #[serde(default = "default_table")]
    pub table: String,
    /// Header matched (default `Caller-Destination-Number`).
    #[serde(default = "default_field")]
    pub field: String,
    /// Regex.
    pub pattern: toml::Spanned<String>,
    /// Header → exact value; all must hold.
    #[serde(default)]
    pub guards: BTreeMap<String, String>,
    /// Only between these times, `HH:MM-HH:MM` (wraps past midnight).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hours: Option<String>,
    /// Only on these days (`mon` … `sun`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub days: Vec<String>,
    /// Only for this fraction of calls (0.0–1.0), drawn per call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample: Option<f64>,
    /// Let the routes after this one run too (default false: break).
    #[serde(default, rename = "continue")]
    pub cont: bool,
    /// What each capture may contain, by number: `digits`, `dialable`,
    /// `user`, `uri` or `any` (`captures = { 1 = "digits" }`). A capture
    /// used in a dial string whose pattern could hold dial-string syntax
    /// must have one.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub captures: BTreeMap<String, Class>,
    /// What to do.
    pub actions: Vec<Action>,
}

fn default_table() -> String {
    "default".into()
}

fn default_field() -> String {
    "Caller-Destination-Number".into()
}

/// A routes file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoutesFile {
    /// The table parked calls start in.
    #[serde(default = "default_table")]
    start: String,
    /// Offset of local time from UTC for `hours`/`days`, `+HH:MM`.
    #[serde(default)]
    utc_offset: Option<String>,
    #[serde(default)]
    routes: Vec<toml::Spanned<RouteSpec>>,
}

/// A routes file that cannot be used: where and why.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {field}: {message}")]
pub struct RoutesError {
    /// The file.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// The field at fault.
    pub field: String,
    /// What is wrong and what to do.
    pub message: String,
}

enum RouteHandler {
    Actions(Vec<Action>),
    Rust(Handler),
}

struct Route {
    name: String,
    table: String,
    field: String,
    pattern: Regex,
    guards: Vec<(String, String)>,
    hours: Option<(u32, u32)>,
    days: u8,
    sample: Option<f64>,
    cont: bool,
    params: BTreeMap<String, String>,
    /// Declared capture classes, by capture number.
    classes: BTreeMap<usize, Class>,
    handler: RouteHandler,
    spec: Option<RouteSpec>,
}

/// A validated, immutable route table.
pub struct RouteTable {
    routes: Vec<Route>,
    start: String,
    utc_offset_min: i32,
    /// The file it came from.
    pub source: Option<PathBuf>,
}

impl RouteTable {
    /// Number of routes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// No routes.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The RELAY contexts its `relay` actions hand calls to.
    pub fn relay_contexts(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .routes
            .iter()
            .filter_map(|r| match &r.handler {
                RouteHandler::Actions(a) => Some(a),
                RouteHandler::Rust(_) => None,
            })
            .flatten()
            .filter_map(|a| match a {
                Action::Relay(c) => Some(c.clone()),
                _ => None,
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The table as JSON (for `GET /api/v1/routes`).
    pub fn to_json(&self) -> serde_json::Value {
        let routes: Vec<serde_json::Value> = self
            .routes
            .iter()
            .map(|r| match &r.spec {
                Some(s) => {
                    let mut v = serde_json::to_value(s).unwrap_or_default();
                    v["pattern"] = serde_json::Value::String(s.pattern.get_ref().clone());
                    v
                }
                None => serde_json::json!({
                    "name": r.name, "table": r.table, "field": r.field,
                    "pattern": r.pattern.as_str(), "guards": r.guards.iter().cloned().collect::<BTreeMap<_, _>>(),
                    "continue": r.cont, "params": r.params, "handler": "rust",
                }),
            })
            .collect();
        serde_json::json!({
            "source": self.source.as_ref().map(|p| p.display().to_string()),
            "start": self.start,
            "utc_offset_minutes": self.utc_offset_min,
            "routes": routes,
        })
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

fn parse_hhmm(s: &str) -> Option<u32> {
    let (h, m) = s.trim().split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

fn parse_offset(s: &str) -> Option<i32> {
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => (1, s),
    };
    Some(sign * parse_hhmm(rest)? as i32)
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// Largest `$N` referenced in the action strings.
fn max_capture_ref(actions: &[Action]) -> usize {
    let s = serde_json::to_string(actions).unwrap_or_default();
    capture_refs(&s).into_iter().max().unwrap_or(0)
}

impl RouteTable {
    /// Parses and validates a routes file; every error names the file,
    /// line and field.
    pub fn from_toml(text: &str, file: &str) -> Result<RouteTable, RoutesError> {
        let err = |line: usize, field: &str, message: String| RoutesError {
            file: file.to_owned(),
            line,
            field: field.to_owned(),
            message,
        };
        let f: RoutesFile = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(0, |s| line_of(text, s.start));
            err(line, "syntax", e.message().to_owned())
        })?;
        let utc_offset_min = match &f.utc_offset {
            None => 0,
            Some(s) => parse_offset(s).ok_or_else(|| {
                err(
                    1,
                    "utc_offset",
                    format!("{s:?} is not an offset like \"+02:00\""),
                )
            })?,
        };
        // An empty file (or one half written when it is read) would route
        // nothing: every parked call would fail with NO_ROUTE_DESTINATION.
        if f.routes.is_empty() {
            return Err(err(
                1,
                "routes",
                "no [[routes]] table: give at least one route (a reload keeps the routes in use); \
                 to route nothing, run without a routes file"
                    .to_owned(),
            ));
        }
        let mut routes = Vec::new();
        let tables: std::collections::BTreeSet<String> =
            f.routes.iter().map(|r| r.get_ref().table.clone()).collect();
        let mut seen: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for sr in &f.routes {
            let line = line_of(text, sr.span().start);
            let r = sr.get_ref();
            // Counters, logs and the REST view name routes: one name, one route.
            if let Some(first) = seen.insert(r.name.as_str(), line) {
                return Err(err(
                    line,
                    "name",
                    format!(
                        "route name {:?} is already used by the route at line {first}: give each route its own name",
                        r.name
                    ),
                ));
            }
            let pattern = Regex::new(r.pattern.get_ref()).map_err(|e| {
                err(
                    line_of(text, r.pattern.span().start),
                    &format!("route {:?}: pattern", r.name),
                    e.to_string(),
                )
            })?;
            let field = |f: &str| format!("route {:?}: {f}", r.name);
            let hours = match &r.hours {
                None => None,
                Some(h) => {
                    let (a, b) = h
                        .split_once('-')
                        .and_then(|(a, b)| Some((parse_hhmm(a)?, parse_hhmm(b)?)))
                        .ok_or_else(|| {
                            err(
                                line,
                                &field("hours"),
                                format!("{h:?} is not a range like \"08:00-18:00\""),
                            )
                        })?;
                    Some((a, b))
                }
            };
            let mut days = 0u8;
            for d in &r.days {
                let i = DAYS
                    .iter()
                    .position(|x| x.eq_ignore_ascii_case(d))
                    .ok_or_else(|| {
                        err(
                            line,
                            &field("days"),
                            format!("{d:?} is not one of {}", DAYS.join(", ")),
                        )
                    })?;
                days |= 1 << i;
            }
            if let Some(s) = r.sample
                && !(0.0..=1.0).contains(&s)
            {
                return Err(err(
                    line,
                    &field("sample"),
                    format!("{s} is not a fraction between 0 and 1"),
                ));
            }
            if r.actions.is_empty() {
                return Err(err(
                    line,
                    &field("actions"),
                    "a route needs at least one action".into(),
                ));
            }
            let groups = pattern.captures_len() - 1;
            let used = max_capture_ref(&r.actions);
            if used > groups {
                return Err(err(
                    line,
                    &field("actions"),
                    format!("uses ${used} but the pattern has {groups} capture group(s)"),
                ));
            }
            for a in &r.actions {
                match a {
                    Action::Transfer(t) if !tables.contains(t) => {
                        return Err(err(
                            line,
                            &field("actions.transfer"),
                            format!(
                                "no route table {t:?} (tables: {})",
                                tables.iter().cloned().collect::<Vec<_>>().join(", ")
                            ),
                        ));
                    }
                    Action::Relay(c)
                        if c.is_empty()
                            || !c
                                .chars()
                                .all(|ch| ch.is_ascii_alphanumeric() || "_-.".contains(ch)) =>
                    {
                        return Err(err(
                            line,
                            &field("actions.relay"),
                            format!("{c:?} is not a RELAY context name (letters, digits, _ - .)"),
                        ));
                    }
                    Action::Respond(c) if !(100..700).contains(c) => {
                        return Err(err(
                            line,
                            &field("actions.respond"),
                            format!("{c} is not a SIP status code (100–699)"),
                        ));
                    }
                    Action::Bridge(b)
                        if b.dial.is_none() && b.dest.is_none()
                            || b.dial.is_some() && (b.dest.is_some() || b.gateway.is_some()) =>
                    {
                        return Err(err(
                            line,
                            &field("actions.bridge"),
                            "give either `dest` (with `profile` or `gateway`, optional `proxy`) or a raw `dial` string".into(),
                        ));
                    }
                    Action::Bridge(b) if b.gateway.is_some() && b.profile.is_some() => {
                        return Err(err(
                            line,
                            &field("actions.bridge"),
                            "`gateway` and `profile` exclude each other".into(),
                        ));
                    }
                    Action::Hangup(c)
                        if c.is_empty()
                            || !c.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') =>
                    {
                        return Err(err(
                            line,
                            &field("actions.hangup"),
                            format!("{c:?} is not a hangup cause like NORMAL_CLEARING"),
                        ));
                    }
                    _ => {}
                }
            }
            let classes = check_templates(r, &pattern).map_err(|(f, m)| err(line, &field(f), m))?;
            routes.push(Route {
                name: r.name.clone(),
                table: r.table.clone(),
                field: r.field.clone(),
                pattern,
                guards: r
                    .guards
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                hours,
                days,
                sample: r.sample,
                cont: r.cont,
                params: BTreeMap::new(),
                classes,
                handler: RouteHandler::Actions(r.actions.clone()),
                spec: Some(r.clone()),
            });
        }
        if !routes.is_empty() && !tables.contains(&f.start) {
            return Err(err(
                1,
                "start",
                format!("no route uses the start table {:?}", f.start),
            ));
        }
        Ok(RouteTable {
            routes,
            start: f.start,
            utc_offset_min,
            source: Some(PathBuf::from(file)),
        })
    }

    /// Reads and validates a routes file.
    pub fn from_file(path: &Path) -> Result<RouteTable, RoutesError> {
        let text = std::fs::read_to_string(path).map_err(|e| RoutesError {
            file: path.display().to_string(),
            line: 0,
            field: "file".into(),
            message: format!("cannot read: {e}"),
        })?;
        Self::from_toml(&text, &path.display().to_string())
    }
}

/// The router: a live route table plus builder methods for Rust routes.
#[derive(Clone)]
pub struct Router {
    table: Arc<RwLock<Arc<RouteTable>>>,
    guards: Vec<(String, String)>,
    relay: Arc<RwLock<Option<crate::relay::Relay>>>,
}

impl Default for Router {
    fn default() -> Self {
        Self::new()
    }
}

impl Router {
    /// An empty router (table `default`).
    pub fn new() -> Router {
        Router {
            table: Arc::new(RwLock::new(Arc::new(RouteTable {
                routes: Vec::new(),
                start: "default".into(),
                utc_offset_min: 0,
                source: None,
            }))),
            guards: Vec::new(),
            relay: Arc::default(),
        }
    }

    /// Where `relay` actions hand their calls.
    pub fn set_relay(&self, relay: crate::relay::Relay) {
        *self.relay.write().unwrap_or_else(|p| p.into_inner()) = Some(relay);
    }

    /// A router serving a routes file.
    pub fn from_file(path: &Path) -> Result<Router, RoutesError> {
        let r = Router::new();
        r.replace(RouteTable::from_file(path)?);
        Ok(r)
    }

    /// Adds a guard (header must equal value) to the routes added after it.
    pub fn guard(mut self, header: &str, value: &str) -> Router {
        self.guards.push((header.to_owned(), value.to_owned()));
        self
    }

    /// Adds a Rust route on `Caller-Destination-Number` in table `default`.
    pub fn route<F, Fut>(
        self,
        name: &str,
        pattern: &str,
        handler: F,
    ) -> Result<Router, regex::Error>
    where
        F: Fn(RouteCtx) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Flow, crate::AppError>> + Send + 'static,
    {
        self.route_with(
            name,
            "Caller-Destination-Number",
            pattern,
            BTreeMap::new(),
            Arc::new(move |c| Box::pin(handler(c))),
        )
    }

    /// Adds a Rust route with a field, parameters and a shared handler (so
    /// several routes can use one handler with different parameters).
    pub fn route_with(
        self,
        name: &str,
        field: &str,
        pattern: &str,
        params: BTreeMap<String, String>,
        handler: Handler,
    ) -> Result<Router, regex::Error> {
        let pattern = Regex::new(pattern)?;
        let route = Route {
            name: name.to_owned(),
            table: "default".into(),
            field: field.to_owned(),
            pattern,
            guards: self.guards.clone(),
            hours: None,
            days: 0,
            sample: None,
            cont: false,
            params,
            classes: BTreeMap::new(),
            handler: RouteHandler::Rust(handler),
            spec: None,
        };
        {
            let mut g = self.table.write().unwrap_or_else(|p| p.into_inner());
            let old = g.clone();
            // Rust routes are append-only at build time: rebuild the table.
            let mut routes: Vec<Route> = Vec::new();
            for r in &old.routes {
                routes.push(Route {
                    name: r.name.clone(),
                    table: r.table.clone(),
                    field: r.field.clone(),
                    pattern: r.pattern.clone(),
                    guards: r.guards.clone(),
                    hours: r.hours,
                    days: r.days,
                    sample: r.sample,
                    cont: r.cont,
                    params: r.params.clone(),
                    classes: r.classes.clone(),
                    handler: match &r.handler {
                        RouteHandler::Actions(a) => RouteHandler::Actions(a.clone()),
                        RouteHandler::Rust(h) => RouteHandler::Rust(h.clone()),
                    },
                    spec: r.spec.clone(),
                });
            }
            routes.push(route);
            *g = Arc::new(RouteTable {
                routes,
                start: old.start.clone(),
                utc_offset_min: old.utc_offset_min,
                source: old.source.clone(),
            });
        }
        Ok(self)
    }

    /// Swaps in a new table (new calls only).
    pub fn replace(&self, t: RouteTable) {
        *self.table.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(t);
    }

    /// Re-reads the table's file; a bad file is refused and the old table
    /// keeps serving. Returns the number of routes.
    pub fn reload(&self) -> Result<usize, RoutesError> {
        let src = self.table().source.clone().ok_or_else(|| RoutesError {
            file: "(none)".into(),
            line: 0,
            field: "file".into(),
            message: "this router was not loaded from a file; start serve with --routes FILE"
                .into(),
        })?;
        let t = RouteTable::from_file(&src)?;
        let n = t.len();
        self.replace(t);
        tracing::info!(file = %src.display(), routes = n, "routes reloaded");
        Ok(n)
    }

    /// The live table.
    pub fn table(&self) -> Arc<RouteTable> {
        self.table.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The `router` app: routes each channel on its first CHANNEL_PARK.
    pub fn app(&self) -> App {
        let me = self.clone();
        App::new(
            "router",
            "Central routing: runs the route table on each channel's first CHANNEL_PARK.",
        )
        // Route actions run one after another, each awaited.
        .needs(&["CHANNEL_EXECUTE_COMPLETE"])
        .on("CHANNEL_PARK", move |ctx| {
            let me = me.clone();
            async move {
                {
                    let mut d = ctx.data.lock().unwrap_or_else(|p| p.into_inner());
                    if d.insert("switchy.routed".into(), "1".into()).is_some() {
                        return Ok(());
                    }
                }
                let table = me.table();
                let start = table.start.clone();
                let relay = me.relay.read().unwrap_or_else(|p| p.into_inner()).clone();
                let ending = run_table(&table, &start, &ctx, 0, relay.as_ref()).await?;
                end_of_dialplan(&ctx, ending).await;
                Ok(())
            }
        })
    }
}

fn now_local(offset_min: i32) -> (u32, usize) {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
        + offset_min as i64 * 60;
    let mins = (secs.rem_euclid(86_400) / 60) as u32;
    // 1970-01-01 was a Thursday (index 3 with Monday = 0).
    let day = ((secs.div_euclid(86_400) + 3).rem_euclid(7)) as usize;
    (mins, day)
}

/// True for a fraction `p` of calls (0: never, 1: always).
fn sample_hit(p: f64) -> bool {
    crate::originator::uniform() <= p
}

fn route_applies(r: &Route, ctx: &Ctx, offset: i32) -> bool {
    if !r.guards.iter().all(|(h, v)| ctx.header(h) == Some(v)) {
        return false;
    }
    if r.hours.is_some() || r.days != 0 {
        let (mins, day) = now_local(offset);
        if r.days != 0 && r.days & (1 << day) == 0 {
            return false;
        }
        if let Some((a, b)) = r.hours {
            let inside = if a <= b {
                mins >= a && mins < b
            } else {
                mins >= a || mins < b
            };
            if !inside {
                return false;
            }
        }
    }
    true
}

/// How routing left a call, as FreeSWITCH's XML dialplan would end it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    /// The call is over, or an action keeps it for good (park, echo,
    /// deflect, a final bridge, a Rust handler that stopped routing).
    Settled,
    /// Routes matched and their actions are done with the call still
    /// waiting: the dialplan's end, hang up (NORMAL_CLEARING).
    ActionsDone,
    /// No route matched (NO_ROUTE_DESTINATION).
    NoRoute,
}

/// What the end of routing does to an inbound call (an outbound leg that
/// parked is someone's originate, not a dialplan's: left as it is).
async fn end_of_dialplan(ctx: &Ctx, ending: Ending) {
    if ctx.header("Call-Direction") != Some("inbound") {
        return;
    }
    let cause = match ending {
        Ending::Settled => return,
        Ending::ActionsDone => "NORMAL_CLEARING",
        Ending::NoRoute => "NO_ROUTE_DESTINATION",
    };
    ctx.count(if ending == Ending::NoRoute {
        "route.no_route"
    } else {
        "route.ended_after_actions"
    });
    tracing::debug!(node = %ctx.node, session = %ctx.uuid, cause, "end of the routes: hanging up");
    let _ = ctx.execute_nowait("hangup", cause).await;
}

fn run_table<'a>(
    table: &'a Arc<RouteTable>,
    name: &'a str,
    ctx: &'a Ctx,
    depth: usize,
    relay: Option<&'a crate::relay::Relay>,
) -> Pin<Box<dyn Future<Output = Result<Ending, crate::AppError>> + Send + 'a>> {
    Box::pin(async move {
        if depth > 8 {
            return Err(
                "route tables transfer to each other more than 8 times: check `transfer` actions for a loop"
                    .into(),
            );
        }
        let mut matched = false;
        for r in table.routes.iter().filter(|r| r.table == name) {
            if !route_applies(r, ctx, table.utc_offset_min) {
                continue;
            }
            let value = ctx.header(&r.field).unwrap_or("");
            let Some(caps) = r.pattern.captures(value) else {
                continue;
            };
            if let Some(p) = r.sample
                && !sample_hit(p)
            {
                continue;
            }
            let captures: Vec<Option<String>> = caps
                .iter()
                .map(|m| m.map(|m| m.as_str().to_owned()))
                .collect();
            tracing::debug!(node = %ctx.node, session = %ctx.uuid, route = %r.name, "route matched");
            ctx.count(&format!("route.{}", r.name));
            matched = true;
            match &r.handler {
                RouteHandler::Rust(h) => {
                    let flow = h(RouteCtx {
                        ctx: ctx.clone(),
                        captures,
                        params: r.params.clone(),
                        route: r.name.clone(),
                    })
                    .await?;
                    if flow == Flow::Break {
                        return Ok(Ending::Settled);
                    }
                }
                RouteHandler::Actions(actions) => {
                    let ending =
                        run_actions(table, r, actions, &captures, ctx, depth, relay).await?;
                    if ending == Ending::Settled || !r.cont {
                        return Ok(ending);
                    }
                }
            }
        }
        Ok(if matched {
            Ending::ActionsDone
        } else {
            Ending::NoRoute
        })
    })
}

/// The dial string of a bridge action; `x` fills a template for a
/// context (checking what it fills in).
pub fn dial_string(
    b: &BridgeSpec,
    x: &dyn Fn(&str, Context) -> Result<String, Refused>,
) -> Result<String, Refused> {
    let d = |t: &str| x(t, Context::Dial);
    let mut dial = match (&b.dial, &b.gateway) {
        (Some(t), _) => d(t)?,
        (None, Some(g)) => format!(
            "sofia/gateway/{}/{}",
            d(g)?,
            d(b.dest.as_deref().unwrap_or(""))?
        ),
        (None, None) => format!(
            "sofia/{}/{}",
            d(b.profile.as_deref().unwrap_or("external"))?,
            d(b.dest.as_deref().unwrap_or(""))?
        ),
    };
    if let Some(p) = &b.proxy {
        dial.push_str(&format!(";fs_path=sip:{}", d(p)?));
    }
    if !b.vars.is_empty() {
        let mut v = Vec::with_capacity(b.vars.len());
        for (k, t) in &b.vars {
            args::check(Context::VarName, k)?;
            v.push(format!("{k}={}", x(t, Context::DialVar)?));
        }
        dial = format!("{{{}}}{dial}", v.join(","));
    }
    Ok(dial)
}

const SHORT: Duration = Duration::from_secs(30);
const LONG: Duration = Duration::from_secs(4 * 3600);

/// A route action that could not run.
enum ActionError {
    Wait(WaitError),
    Refused(Refused),
}

impl From<WaitError> for ActionError {
    fn from(e: WaitError) -> Self {
        ActionError::Wait(e)
    }
}

impl From<Refused> for ActionError {
    fn from(e: Refused) -> Self {
        ActionError::Refused(e)
    }
}

impl From<crate::CommandError> for ActionError {
    fn from(e: crate::CommandError) -> Self {
        ActionError::Wait(WaitError::from(e))
    }
}

async fn run_actions(
    table: &Arc<RouteTable>,
    route: &Route,
    actions: &[Action],
    captures: &[Option<String>],
    ctx: &Ctx,
    depth: usize,
    relay: Option<&crate::relay::Relay>,
) -> Result<Ending, crate::AppError> {
    let lookup = |name: &str| {
        ctx.var(name)
            .or_else(|| ctx.header(name))
            .map(str::to_owned)
    };
    let x = |s: &str, c: Context| expand_checked(s, captures, &route.classes, c, &lookup);
    for (i, a) in actions.iter().enumerate() {
        let last = i + 1 == actions.len();
        let r: Result<Option<Ending>, ActionError> = async {
            match a {
                Action::Bridge(b) => {
                    let dial = dial_string(b, &x)?;
                    if last {
                        // The call ends with its bridge: without this a
                        // caller whose callee hangs up first goes back to
                        // its park and stays (recorded on FreeSWITCH 1.11:
                        // tests/fidelity/flows/bridge_app_callee_ends.json).
                        ctx.execute_nowait("set", "hangup_after_bridge=true")
                            .await?;
                        // A bridge that fails hangs the caller up with its
                        // cause (switch_channel_handle_cause, no
                        // continue_on_fail): the call ends either way.
                        ctx.execute_nowait("bridge", &dial).await?;
                        return Ok(Some(Ending::Settled));
                    } else {
                        ctx.execute("bridge", &dial, LONG).await?;
                    }
                }
                Action::Respond(code) => {
                    ctx.execute("respond", &code.to_string(), SHORT).await?;
                    // A final response ends the call.
                    if *code >= 300 {
                        return Ok(Some(Ending::Settled));
                    }
                }
                Action::Hangup(cause) => {
                    ctx.execute_nowait("hangup", cause).await?;
                    return Ok(Some(Ending::Settled));
                }
                Action::Answer => {
                    ctx.execute("answer", "", SHORT).await?;
                }
                Action::RingReady => {
                    ctx.execute("ring_ready", "", SHORT).await?;
                }
                Action::PreAnswer => {
                    ctx.execute("pre_answer", "", SHORT).await?;
                }
                Action::Playback(f) => {
                    ctx.execute("playback", &x(f, Context::AppArg)?, LONG)
                        .await?;
                }
                // The route says the call stays.
                Action::Park => {
                    ctx.execute_nowait("park", "").await?;
                    return Ok(Some(Ending::Settled));
                }
                Action::Setvar { name, value } => {
                    let v = x(value, Context::AppArg)?;
                    ctx.execute("set", &format!("{name}={v}"), SHORT).await?;
                }
                Action::Setvars(vars) => {
                    for (k, v) in vars {
                        let v = x(v, Context::AppArg)?;
                        ctx.execute("set", &format!("{k}={v}"), SHORT).await?;
                    }
                }
                Action::Record(path) => {
                    ctx.session()
                        .start_record(&x(path, Context::AppArg)?)
                        .await?;
                }
                Action::Deflect(uri) => {
                    ctx.execute_nowait("deflect", &x(uri, Context::Dial)?)
                        .await?;
                    return Ok(Some(Ending::Settled));
                }
                // Echo runs until the caller hangs up.
                Action::Echo => {
                    ctx.execute_nowait("echo", "").await?;
                    return Ok(Some(Ending::Settled));
                }
                Action::Relay(context) => match relay {
                    Some(relay) => {
                        let from = ctx
                            .header("Caller-Caller-ID-Number")
                            .unwrap_or("")
                            .to_owned();
                        let to = ctx
                            .header("Caller-Destination-Number")
                            .unwrap_or("")
                            .to_owned();
                        let outcome = relay.offer(&ctx.uuid, &ctx.node, context, &from, &to).await;
                        if outcome == crate::relay::hub::OfferOutcome::Taken {
                            return Ok(Some(Ending::Settled));
                        }
                        ctx.count("relay.declined");
                    }
                    None => ctx.count("relay.unavailable"),
                },
                Action::Transfer(_) => {}
            }
            Ok(None)
        }
        .await;
        match r {
            Ok(None) => {}
            Ok(Some(ending)) => return Ok(ending),
            // The caller hung up (or the action ended the call): done.
            Err(ActionError::Wait(WaitError::Ended(_))) => return Ok(Ending::Settled),
            Err(ActionError::Wait(e)) => return Err(e.into()),
            Err(ActionError::Refused(e)) => {
                // A value from the caller (or a capture) would have been
                // command syntax: the call is refused, never routed.
                tracing::warn!(node = %ctx.node, session = %ctx.uuid, route = %route.name, error = %e, "route refused a value; hanging up the call");
                ctx.count("route.refused_values");
                let _ = ctx.execute_nowait("hangup", REFUSED_CAUSE).await;
                return Ok(Ending::Settled);
            }
        }
        if let Action::Transfer(t) = a {
            return run_table(table, t, ctx, depth + 1, relay).await;
        }
    }
    Ok(Ending::ActionsDone)
}

/// The hangup cause of a call whose route refused a value.
pub const REFUSED_CAUSE: &str = "INVALID_NUMBER_FORMAT";

/// Checks a route's templates against its pattern at load time; returns
/// its capture classes, or (field, message).
fn check_templates(
    r: &RouteSpec,
    pattern: &Regex,
) -> Result<BTreeMap<usize, Class>, (&'static str, String)> {
    let groups = pattern.captures_len();
    let mut classes = BTreeMap::new();
    for (k, c) in &r.captures {
        let n: usize = k.parse().ok().filter(|n| *n < groups).ok_or_else(|| {
            (
                "captures",
                format!(
                    "{k:?} is not a capture of the pattern (it has {} groups)",
                    groups - 1
                ),
            )
        })?;
        classes.insert(n, *c);
    }
    let mut dial: Vec<(&str, Context)> = Vec::new();
    for a in &r.actions {
        match a {
            Action::Bridge(b) => {
                for t in [&b.dial, &b.dest, &b.gateway, &b.profile, &b.proxy]
                    .into_iter()
                    .flatten()
                {
                    dial.push((t, Context::Dial));
                }
                for (k, v) in &b.vars {
                    args::check(Context::VarName, k)
                        .map_err(|e| ("actions.bridge.vars", e.to_string()))?;
                    dial.push((v, Context::DialVar));
                }
            }
            Action::Deflect(t) => dial.push((t, Context::Dial)),
            Action::Setvar { name, .. } => {
                args::check(Context::VarName, name)
                    .map_err(|e| ("actions.setvar.name", e.to_string()))?;
            }
            Action::Setvars(vars) => {
                for k in vars.keys() {
                    args::check(Context::VarName, k)
                        .map_err(|e| ("actions.setvars", e.to_string()))?;
                }
            }
            _ => {}
        }
    }
    for (t, context) in dial {
        for n in capture_refs(t) {
            if classes.contains_key(&n) {
                continue;
            }
            let Some(sub) = group_pattern(pattern.as_str(), n) else {
                continue;
            };
            if can_hold_syntax(&sub, context) {
                return Err((
                    "captures",
                    format!(
                        "capture ${n} {sub} goes into {context} and can hold its syntax (`,` `|` `{{` `;` …): a caller could fork the call or pick another gateway. Narrow the pattern (e.g. (\\d+)) or declare what it holds: captures = {{ {n} = \"digits\" }} (or \"dialable\", \"user\", \"uri\"; \"any\" still refuses each call's value if it has dial-string syntax)"
                    ),
                ));
            }
        }
    }
    Ok(classes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_name_used_twice_is_refused_with_both_lines() {
        let text = "[[routes]]\nname = \"a\"\npattern = \"^1\"\nactions = [\"park\"]\n\n[[routes]]\nname = \"a\"\npattern = \"^2\"\nactions = [\"park\"]\n";
        let e = match RouteTable::from_toml(text, "r.toml") {
            Err(e) => e,
            Ok(_) => panic!("a duplicate route name was accepted"),
        };
        assert_eq!((e.line, e.field.as_str()), (6, "name"));
        assert!(e.message.contains("line 1"), "{}", e.message);
    }

    #[test]
    fn templates_fill_captures_and_variables() {
        let caps = vec![
            Some("18005551234".to_owned()),
            Some("8005551234".to_owned()),
        ];
        let look = |n: &str| (n == "domain").then(|| "example.org".to_owned());
        let none = BTreeMap::new();
        let x = |t: &str| expand_checked(t, &caps, &none, Context::AppArg, &look).unwrap();
        assert_eq!(x("$1@${domain}"), "8005551234@example.org");
        assert_eq!(x("$2-${nope}-$"), "--$");
        assert_eq!(x("cost $$5"), "cost $5");
    }

    #[test]
    fn dial_strings() {
        let id = |s: &str, _: Context| -> Result<String, Refused> { Ok(s.to_owned()) };
        let b = BridgeSpec {
            dest: Some("1234".into()),
            gateway: Some("ld".into()),
            ..Default::default()
        };
        assert_eq!(dial_string(&b, &id).unwrap(), "sofia/gateway/ld/1234");
        let b = BridgeSpec {
            dest: Some("2001@10.0.0.5".into()),
            proxy: Some("10.0.0.1:5060".into()),
            vars: [("a".to_owned(), "1".to_owned())].into(),
            ..Default::default()
        };
        assert_eq!(
            dial_string(&b, &id).unwrap(),
            "{a=1}sofia/external/2001@10.0.0.5;fs_path=sip:10.0.0.1:5060"
        );
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let bad = "[[routes]]\nname = \"x\"\npattern = \"(\"\nactions = [\"answer\"]\n";
        let e = RouteTable::from_toml(bad, "r.toml").err().expect("refused");
        assert_eq!((e.line, e.field.as_str()), (3, "route \"x\": pattern"));
        assert!(e.to_string().starts_with("r.toml:3: "), "{e}");

        let bad =
            "[[routes]]\nname = \"x\"\npattern = \"1\"\nactions = [{ transfer = \"nowhere\" }]\n";
        let e = RouteTable::from_toml(bad, "r.toml").err().expect("refused");
        assert_eq!(e.line, 1);
        assert!(e.message.contains("nowhere"), "{e}");

        let bad = "[[routes]]\nname = \"x\"\npattern = \"1\"\nactions = [{ brige = {} }]\n";
        let e = RouteTable::from_toml(bad, "r.toml").err().expect("refused");
        assert_eq!(e.field, "syntax");
        assert_eq!(e.line, 4, "{e}");

        let bad = "[[routes]]\nname = \"x\"\npattern = \"^1\"\nactions = [{ hangup = \"$1\" }]\n";
        assert!(RouteTable::from_toml(bad, "r.toml").is_err());
        let bad = "[[routes]]\nname = \"x\"\npattern = \"^1\"\nhours = \"25:00-02:00\"\nactions = [\"answer\"]\n";
        assert!(RouteTable::from_toml(bad, "r.toml").is_err());

        // Empty, or only settings: refused, saying what to give.
        for bad in ["", "\n", "utc_offset = \"+01:00\"\n"] {
            let e = RouteTable::from_toml(bad, "r.toml").err().expect("refused");
            assert_eq!(e.field, "routes");
            assert!(e.message.contains("at least one route"), "{e}");
        }
    }

    #[test]
    fn example_file_is_valid() {
        let p = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../deploy/routes.example.toml"
        );
        let t = RouteTable::from_file(Path::new(p)).expect("valid example");
        assert!(t.len() >= 6);
    }

    #[test]
    fn clock_math() {
        assert_eq!(parse_offset("+02:30"), Some(150));
        assert_eq!(parse_offset("-05:00"), Some(-300));
        assert_eq!(parse_hhmm("24:00"), None);
        let (m, d) = now_local(0);
        assert!(m < 1440 && d < 7);
    }
}
