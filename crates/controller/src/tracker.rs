//! Sessions (channels) and calls (legs that belong together), kept from the
//! events of every node. Bounded: finished sessions leave the tracker (their
//! summary goes to the `finished` ring for CDRs), and a reaper ends channels
//! that never received CHANNEL_DESTROY.

use serde::Serialize;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::Arc;
use switchy_protocol::esl::Event;

/// How recent a session's last event must be for a snapshot that lacks it
/// not to close it (FreeSWITCH's `show channels` lags), µs.
pub const RESYNC_GRACE_US: u64 = 2_000_000;

/// Events kept per session.
const HISTORY: usize = 64;
/// Finished sessions kept for inspection and CDRs.
const FINISHED: usize = 2_000;

/// One channel.
#[derive(Clone, Debug, Default, Serialize, schemars::JsonSchema)]
pub struct Session {
    /// `Unique-ID`.
    pub uuid: String,
    /// Node id.
    pub node: String,
    /// `inbound` / `outbound`.
    pub direction: String,
    /// `Channel-State`.
    pub state: String,
    /// `Channel-Call-State`.
    pub call_state: String,
    /// `Answer-State`.
    pub answer_state: String,
    /// The call this leg belongs to.
    pub call: String,
    /// `Caller-Destination-Number`.
    pub dest: String,
    /// `Caller-Caller-ID-Number`.
    pub cid_num: String,
    /// Time of CHANNEL_CREATE (µs since the epoch, FreeSWITCH's clock).
    pub created_us: u64,
    /// Time of CHANNEL_ORIGINATE, if any.
    pub originate_us: u64,
    /// Time of CHANNEL_ANSWER, if any.
    pub answered_us: u64,
    /// Time of CHANNEL_HANGUP, if any.
    pub hangup_us: u64,
    /// Hangup cause, once known.
    pub hangup_cause: Option<String>,
    /// The latest event that carried channel variables.
    #[serde(skip)]
    pub var_event: Option<Arc<Event>>,
    /// The latest event.
    #[serde(skip)]
    pub last_event: Option<Arc<Event>>,
    /// Recent events: (name, timestamp µs).
    pub history: VecDeque<(String, u64)>,
    /// Core-UUID of the FreeSWITCH process.
    pub core_uuid: String,
    /// Announced by its originator ([`Tracker::expect_leg`]) and no event
    /// of it seen yet.
    pub pending: bool,
    /// Controller clock of the latest event (or announcement), µs.
    #[serde(skip)]
    pub seen_us: u64,
}

impl Session {
    /// A new session record.
    pub fn new(
        uuid: &str,
        node: &str,
        direction: &str,
        created_us: u64,
        core_uuid: &str,
    ) -> Session {
        Session {
            uuid: uuid.to_owned(),
            node: node.to_owned(),
            direction: direction.to_owned(),
            state: String::new(),
            call_state: String::new(),
            answer_state: String::new(),
            call: String::new(),
            dest: String::new(),
            cid_num: String::new(),
            created_us,
            originate_us: 0,
            answered_us: 0,
            hangup_us: 0,
            hangup_cause: None,
            var_event: None,
            last_event: None,
            history: VecDeque::new(),
            core_uuid: core_uuid.to_owned(),
            pending: false,
            seen_us: now_us(),
        }
    }

    /// A channel variable, from the latest event that carried variables.
    pub fn variable(&self, name: &str) -> Option<&str> {
        self.var_event.as_ref()?.variable(name)
    }

    /// All channel variables of the latest event that carried them.
    pub fn variables(&self) -> BTreeMap<String, String> {
        self.var_event
            .as_ref()
            .map(|e| {
                e.headers
                    .iter()
                    .filter_map(|(k, v)| {
                        k.strip_prefix("variable_")
                            .map(|k| (k.to_owned(), v.to_owned()))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Latest value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.last_event.as_ref()?.get(name)
    }
}

/// Legs grouped by the call-tracking header (or bridge partner).
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct Call {
    /// Call id: the tracking header's value (the originating leg's UUID).
    pub id: String,
    /// Legs as (node, uuid), first leg first.
    pub legs: Vec<(String, String)>,
    /// Creation time of the first leg.
    pub created_us: u64,
}

/// A session that ended, for CDRs.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Finished {
    /// The session at its end.
    pub session: Session,
    /// How it ended: the hangup cause, or a switchy cause
    /// (`SWITCHY_NODE_RESTARTED`, `SWITCHY_RESYNC_GONE`, `SWITCHY_STALE_CHANNEL`).
    pub cause: String,
    /// This was the call's last live leg: the call is over.
    pub call_ended: bool,
}

/// What the tracker knows at one moment, for readers (REST, apps, the
/// Originator): cheap to clone, since its maps are persistent and share
/// every node the tracker has not changed since. The cluster's state task
/// publishes one after each batch it applies, before the batch's events
/// reach any consumer, so a consumer of an event finds its session here.
#[derive(Clone, Debug, Default)]
pub struct TrackerView {
    sessions: imbl::OrdMap<Arc<str>, Arc<Session>>,
    calls: imbl::OrdMap<Arc<str>, Arc<Call>>,
    per_node: Arc<HashMap<String, usize>>,
    /// Channel events applied.
    pub applied: u64,
    /// Corrections of what the events said, by kind (`/metrics`):
    /// `resync_closed` (a leg FreeSWITCH no longer has), `resync_added` (a
    /// live leg learned from a snapshot), `resync_linked` (such a leg linked
    /// to its call by the tracking variable), `node_restarted`,
    /// `node_gone`, `reaped`.
    pub corrections: Arc<BTreeMap<&'static str, u64>>,
    /// Channels not tracked because a limit was reached, per node.
    pub untracked: Arc<BTreeMap<String, u64>>,
    /// Recently finished sessions, oldest first (without their last raw
    /// event).
    finished: imbl::Vector<Arc<Finished>>,
}

impl TrackerView {
    /// Calls with a live leg.
    pub fn len_calls(&self) -> usize {
        self.calls.len()
    }

    /// Live sessions, in UUID order.
    pub fn sessions(&self) -> impl Iterator<Item = &Session> {
        self.sessions.values().map(|s| &**s)
    }

    /// Live sessions with a UUID after `after`, in UUID order (a page's
    /// start, without a scan of what comes before).
    pub fn sessions_after<'a>(&'a self, after: &str) -> impl Iterator<Item = &'a Session> + 'a {
        self.sessions
            .range::<_, str>((Bound::Excluded(after), Bound::Unbounded))
            .map(|(_, s)| &**s)
    }

    /// One session.
    pub fn session(&self, uuid: &str) -> Option<&Session> {
        self.sessions.get(uuid).map(|s| &**s)
    }

    /// Live calls, in id order.
    pub fn calls(&self) -> impl Iterator<Item = &Call> {
        self.calls.values().map(|c| &**c)
    }

    /// Live calls with an id after `after`, in id order.
    pub fn calls_after<'a>(&'a self, after: &str) -> impl Iterator<Item = &'a Call> + 'a {
        self.calls
            .range::<_, str>((Bound::Excluded(after), Bound::Unbounded))
            .map(|(_, c)| &**c)
    }

    /// One call.
    pub fn call(&self, id: &str) -> Option<&Call> {
        self.calls.get(id).map(|c| &**c)
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// True when no session is live.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Live sessions on `node`.
    pub fn node_sessions(&self, node: &str) -> usize {
        self.per_node.get(node).copied().unwrap_or(0)
    }

    /// Recently finished sessions, oldest first.
    pub fn finished(&self) -> &imbl::Vector<Arc<Finished>> {
        &self.finished
    }
}

/// The tracker: owned by one task (the cluster's state task), read by
/// everyone else through [`TrackerView`]s.
#[derive(Debug)]
pub struct Tracker {
    /// Variable carrying the call id (without `variable_`).
    pub tracking_var: String,
    live: TrackerView,
    /// Recently ended UUIDs: late events (the CS_DESTROY state after
    /// CHANNEL_DESTROY) must not bring them back.
    dead: std::collections::HashSet<String>,
    dead_order: VecDeque<String>,
    /// Live sessions at most, per node and in all.
    limits: (usize, usize),
}

impl std::ops::Deref for Tracker {
    type Target = TrackerView;

    fn deref(&self) -> &TrackerView {
        &self.live
    }
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

impl Tracker {
    /// An empty tracker grouping legs by `tracking_var`.
    pub fn new(tracking_var: &str) -> Self {
        Tracker {
            tracking_var: tracking_var.trim_start_matches("variable_").to_owned(),
            live: TrackerView::default(),
            dead: std::collections::HashSet::new(),
            dead_order: VecDeque::new(),
            limits: (usize::MAX, usize::MAX),
        }
    }

    /// What the tracker knows now (shares its maps: O(1)).
    pub fn view(&self) -> TrackerView {
        self.live.clone()
    }

    /// A live session, to change (copied first if a view shares it).
    pub(crate) fn session_mut(&mut self, uuid: &str) -> Option<&mut Session> {
        self.live.sessions.get_mut(uuid).map(Arc::make_mut)
    }

    fn insert_session(&mut self, s: Session) {
        *Arc::make_mut(&mut self.live.per_node)
            .entry(s.node.clone())
            .or_default() += 1;
        self.live
            .sessions
            .insert(Arc::from(s.uuid.as_str()), Arc::new(s));
    }

    /// Removes a session from the live maps (not from its call).
    fn remove_session(&mut self, uuid: &str) -> Option<Session> {
        let s = Arc::unwrap_or_clone(self.live.sessions.remove(uuid)?);
        if let Some(n) = Arc::make_mut(&mut self.live.per_node).get_mut(&s.node) {
            *n = n.saturating_sub(1);
        }
        Some(s)
    }

    /// Takes `uuid` out of its call's legs; true if the call has legs left.
    fn leave_call(&mut self, call: &str, uuid: &str) -> bool {
        let Some(c) = self.live.calls.get_mut(call).map(Arc::make_mut) else {
            return false;
        };
        c.legs.retain(|(_, u)| u != uuid);
        if c.legs.is_empty() {
            self.live.calls.remove(call);
            return false;
        }
        true
    }

    /// Tracks at most `per_node` live sessions per node and `total` in all:
    /// a new channel beyond them is counted in [`TrackerView::untracked`],
    /// not tracked (its hangup still yields its CDR).
    pub fn set_limits(&mut self, per_node: usize, total: usize) {
        self.limits = (per_node.max(1), total.max(1));
    }

    /// Closes out every session of `node` (its agent has been gone longer
    /// than the grace period).
    pub fn node_gone(&mut self, node: &str) -> Vec<Finished> {
        let gone: Vec<String> = self
            .live
            .sessions
            .values()
            .filter(|s| s.node == node)
            .map(|s| s.uuid.clone())
            .collect();
        let out: Vec<Finished> = gone
            .iter()
            .filter_map(|u| self.finish(u, "SWITCHY_NODE_GONE"))
            .collect();
        self.count("node_gone", out.len());
        out
    }

    fn call_key(&self, e: &Event) -> Option<String> {
        if let Some(v) = e
            .variable(&self.tracking_var)
            .filter(|v| !v.is_empty() && *v != "_undef_")
        {
            return Some(v.to_owned());
        }
        let other = e.get("Other-Leg-Unique-ID")?;
        self.live.sessions.get(other).map(|s| s.call.clone())
    }

    fn join_call(&mut self, uuid: &str, node: &str, key: String, created_us: u64) {
        let Some(s) = self.session_mut(uuid) else {
            return;
        };
        if s.call == key {
            return;
        }
        let old = std::mem::replace(&mut s.call, key.clone());
        self.leave_call(&old, uuid);
        if !self.live.calls.contains_key(key.as_str()) {
            self.live.calls.insert(
                Arc::from(key.as_str()),
                Arc::new(Call {
                    id: key.clone(),
                    legs: Vec::new(),
                    created_us,
                }),
            );
        }
        let Some(call) = self.live.calls.get_mut(key.as_str()).map(Arc::make_mut) else {
            return;
        };
        if !call.legs.iter().any(|(_, u)| u == uuid) {
            // Legs in creation order (events of two nodes arrive in any order).
            let sessions = &self.live.sessions;
            let at = call
                .legs
                .iter()
                .position(|(_, u)| {
                    sessions
                        .get(u.as_str())
                        .is_some_and(|s| s.created_us > created_us)
                })
                .unwrap_or(call.legs.len());
            call.legs.insert(at, (node.to_owned(), uuid.to_owned()));
            call.created_us = call.created_us.min(created_us);
        }
    }

    /// Applies one event of `node`. Returns the finished session when the
    /// event ended one (CHANNEL_DESTROY).
    pub fn apply(&mut self, node: &str, e: &Arc<Event>) -> Option<Finished> {
        let name = e.event_name()?;
        let uuid = e.unique_id()?;
        if !name.starts_with("CHANNEL_")
            && !matches!(
                name,
                "CODEC"
                    | "CALL_UPDATE"
                    | "DTMF"
                    | "PLAYBACK_START"
                    | "PLAYBACK_STOP"
                    | "RECORD_START"
                    | "RECORD_STOP"
                    | "MEDIA_BUG_START"
                    | "MEDIA_BUG_STOP"
            )
        {
            return None;
        }
        self.live.applied += 1;
        let ts = e.timestamp().unwrap_or_else(now_us);
        if !self.live.sessions.contains_key(uuid) {
            if name == "CHANNEL_DESTROY" || self.dead.contains(uuid) {
                return None;
            }
            // A bound on memory whatever a node sends. A hangup still
            // builds its leg (it ends at once): nothing billed is lost.
            let on_node = self.node_sessions(node);
            if (on_node >= self.limits.0 || self.live.sessions.len() >= self.limits.1)
                && name != "CHANNEL_HANGUP_COMPLETE"
            {
                let n = Arc::make_mut(&mut self.live.untracked)
                    .entry(node.to_owned())
                    .or_default();
                *n += 1;
                if n.is_power_of_two() {
                    tracing::warn!(node = %node, untracked = *n, live = on_node, "session limit reached: new channels of this node are not tracked (raise --max-sessions-per-node if the node is real)");
                }
                return None;
            }
            let s = Session::new(
                uuid,
                node,
                e.get("Call-Direction").unwrap_or(""),
                ts,
                e.core_uuid().unwrap_or(""),
            );
            self.insert_session(s);
            self.join_call(uuid, node, uuid.to_owned(), ts);
        }
        let key = self.call_key(e);
        let s = self.session_mut(uuid)?;
        s.seen_us = now_us();
        if s.pending {
            s.pending = false;
            if let Some(c) = e.core_uuid() {
                s.core_uuid = c.to_owned();
            }
        }
        let set = |field: &mut String, v: Option<&str>| {
            if let Some(v) = v
                && field != v
            {
                *field = v.to_owned();
            }
        };
        set(&mut s.state, e.get("Channel-State"));
        set(&mut s.call_state, e.get("Channel-Call-State"));
        set(&mut s.answer_state, e.get("Answer-State"));
        set(&mut s.dest, e.get("Caller-Destination-Number"));
        set(&mut s.cid_num, e.get("Caller-Caller-ID-Number"));
        if let Some(c) = e.get("Hangup-Cause") {
            s.hangup_cause = Some(c.to_owned());
        }
        if e.headers.has_name_prefix("variable_") {
            s.var_event = Some(e.clone());
        }
        s.last_event = Some(e.clone());
        match name {
            "CHANNEL_CREATE" => s.created_us = s.created_us.min(ts),
            "CHANNEL_ORIGINATE" => s.originate_us = ts,
            "CHANNEL_ANSWER" => s.answered_us = ts,
            "CHANNEL_HANGUP" => s.hangup_us = ts,
            _ => {}
        }
        // Every channel event carries the leg's own times as FreeSWITCH
        // keeps them (µs, 0 until they happen), so one event, the
        // CHANNEL_HANGUP_COMPLETE, is enough for the whole leg.
        let time = |h: &str| {
            e.get(h)
                .and_then(|v| v.parse::<u64>().ok())
                .filter(|&v| v > 0)
        };
        if let Some(v) = time("Caller-Channel-Created-Time") {
            s.created_us = v;
        }
        if let Some(v) = time("Caller-Channel-Answered-Time") {
            s.answered_us = v;
        }
        if let Some(v) = time("Caller-Channel-Hangup-Time") {
            s.hangup_us = v;
        }
        if s.history.len() >= HISTORY {
            s.history.pop_front();
        }
        s.history.push_back((name.to_owned(), ts));
        let created = s.created_us;
        if let Some(k) = key {
            self.join_call(uuid, node, k, created);
        }
        // The leg's last report is CHANNEL_HANGUP_COMPLETE (with every
        // variable and time); CHANNEL_DESTROY, when subscribed, comes after
        // it and finds the session gone.
        if name == "CHANNEL_HANGUP_COMPLETE" || name == "CHANNEL_DESTROY" {
            let cause = self
                .live
                .sessions
                .get(uuid)
                .and_then(|s| s.hangup_cause.clone())
                .unwrap_or_else(|| "NORMAL_CLEARING".into());
            return self.finish(uuid, &cause);
        }
        None
    }

    /// A leg about to be originated with this UUID (`origination_uuid`)
    /// as part of `call`: known before FreeSWITCH reports it, so that a
    /// call whose other leg ends first is not taken as over, however few
    /// events are subscribed.
    pub fn expect_leg(&mut self, uuid: &str, node: &str, call: &str) {
        if self.live.sessions.contains_key(uuid) || self.dead.contains(uuid) {
            return;
        }
        let now = now_us();
        let mut s = Session::new(uuid, node, "outbound", now, "");
        s.pending = true;
        self.insert_session(s);
        self.join_call(uuid, node, call.to_owned(), now);
    }

    /// Drops an expected leg FreeSWITCH never reported (its originate
    /// failed before a channel existed); true if it was still pending.
    /// Late events of it are ignored.
    pub fn forget_pending(&mut self, uuid: &str) -> bool {
        if !self.live.sessions.get(uuid).is_some_and(|s| s.pending) {
            return false;
        }
        if let Some(s) = self.remove_session(uuid) {
            self.leave_call(&s.call, uuid);
            self.mark_dead(uuid);
        }
        true
    }

    fn mark_dead(&mut self, uuid: &str) {
        if self.dead_order.len() >= FINISHED
            && let Some(old) = self.dead_order.pop_front()
        {
            self.dead.remove(&old);
        }
        self.dead.insert(uuid.to_owned());
        self.dead_order.push_back(uuid.to_owned());
    }

    /// Ends a session (removing it and, with its last leg, its call).
    pub fn finish(&mut self, uuid: &str, cause: &str) -> Option<Finished> {
        let mut s = self.remove_session(uuid)?;
        // Closed out by switchy (resync, restart, reaper), not by a hangup
        // event: the best known end is when the leg was last known alive
        // (its last event or snapshot, controller clock), which never
        // bills more than it lasted; the cause says it was closed out.
        if s.hangup_us == 0 && cause.starts_with("SWITCHY_") {
            s.hangup_us = s.seen_us.max(s.answered_us).max(s.created_us);
        }
        self.mark_dead(uuid);
        let call_ended = !self.leave_call(&s.call.clone(), uuid);
        let f = Finished {
            session: s,
            cause: cause.to_owned(),
            call_ended,
        };
        if self.live.finished.len() >= FINISHED {
            self.live.finished.pop_front();
        }
        // The kept copy drops the latest raw event (its variables stay).
        let mut kept = f.clone();
        kept.session.last_event = None;
        self.live.finished.push_back(Arc::new(kept));
        Some(f)
    }

    /// A node's FreeSWITCH restarted (new Core-UUID): its old channels are
    /// closed out.
    pub fn node_restarted(&mut self, node: &str, new_core: &str) -> Vec<Finished> {
        let old: Vec<String> = self
            .live
            .sessions
            .values()
            .filter(|s| s.node == node && s.core_uuid != new_core)
            .map(|s| s.uuid.clone())
            .collect();
        let out: Vec<Finished> = old
            .iter()
            .filter_map(|u| self.finish(u, "SWITCHY_NODE_RESTARTED"))
            .collect();
        self.count("node_restarted", out.len());
        out
    }

    fn count(&mut self, kind: &'static str, n: usize) {
        if n > 0 {
            *Arc::make_mut(&mut self.live.corrections)
                .entry(kind)
                .or_default() += n as u64;
        }
    }

    /// Makes the node's sessions match a snapshot of its live channels:
    /// sessions FreeSWITCH no longer has are closed out, unknown live
    /// channels are added.
    ///
    /// `show channels` reads FreeSWITCH's core database, which its SQL
    /// thread updates in batches, seconds late under load: a channel a
    /// moment old may be missing and one just gone still listed. So a
    /// session with an event in the last [`RESYNC_GRACE_US`] is not closed
    /// (the agent sends a second snapshot later), and a channel the
    /// tracker saw end is not brought back.
    pub fn resync(
        &mut self,
        node: &str,
        core_uuid: &str,
        channels: &[Vec<(String, String)>],
    ) -> Vec<Finished> {
        let get = |row: &Vec<(String, String)>, k: &str| {
            row.iter()
                .find(|(c, _)| c == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let live: std::collections::HashSet<String> =
            channels.iter().map(|r| get(r, "uuid")).collect();
        let gone: Vec<String> = self
            .live
            .sessions
            .values()
            .filter(|s| {
                s.node == node
                    && !s.pending
                    && !live.contains(&s.uuid)
                    && now_us().saturating_sub(s.seen_us) > RESYNC_GRACE_US
            })
            .map(|s| s.uuid.clone())
            .collect();
        let finished: Vec<Finished> = gone
            .iter()
            .filter_map(|u| self.finish(u, "SWITCHY_RESYNC_GONE"))
            .collect();
        self.count("resync_closed", finished.len());
        let tracking = format!("variable_{}", self.tracking_var);
        let (mut added, mut linked) = (0, 0);
        for row in channels {
            let uuid = get(row, "uuid");
            if uuid.is_empty() || self.dead.contains(&uuid) {
                continue;
            }
            // The agent adds the leg's own times and linking variables
            // (uuid_dump) to `show channels`' columns.
            let us = |k: &str| get(row, k).parse::<u64>().ok().filter(|&v| v > 0);
            let key = Some(get(row, &tracking)).filter(|v| !v.is_empty() && v != "_undef_");
            if let Some(s) = self.session_mut(&uuid) {
                // Known: only fill in what its events did not say (an
                // announced leg is now confirmed by FreeSWITCH).
                s.seen_us = now_us();
                if s.pending {
                    s.pending = false;
                    s.core_uuid = core_uuid.to_owned();
                }
                if s.answered_us == 0
                    && let Some(a) = us("Caller-Channel-Answered-Time")
                {
                    s.answered_us = a;
                }
                if let Some(k) = key
                    && s.call == uuid
                    && k != uuid
                {
                    let created = s.created_us;
                    self.join_call(&uuid, node, k, created);
                    linked += 1;
                }
                continue;
            }
            let created_us = us("Caller-Channel-Created-Time").unwrap_or_else(|| {
                get(row, "created_epoch").parse::<u64>().unwrap_or(0) * 1_000_000
            });
            let answered_us = us("Caller-Channel-Answered-Time").unwrap_or(0);
            let answered = answered_us > 0 || get(row, "callstate") == "ACTIVE";
            let mut s = Session::new(&uuid, node, &get(row, "direction"), created_us, core_uuid);
            s.state = get(row, "state");
            s.call_state = get(row, "callstate");
            s.answer_state = if answered { "answered" } else { "ringing" }.to_owned();
            s.answered_us = answered_us;
            s.dest = get(row, "dest");
            s.cid_num = get(row, "cid_num");
            s.seen_us = now_us();
            self.insert_session(s);
            added += 1;
            match key {
                Some(k) => {
                    self.join_call(&uuid, node, k, created_us);
                    linked += 1;
                }
                None => self.join_call(&uuid, node, uuid.clone(), created_us),
            }
        }
        self.count("resync_added", added);
        self.count("resync_linked", linked);
        finished
    }

    /// Ends sessions older than `max_age_us` (channels FreeSWITCH never
    /// reported destroyed).
    pub fn reap(&mut self, max_age_us: u64) -> Vec<Finished> {
        let now = now_us();
        let stale: Vec<String> = self
            .live
            .sessions
            .values()
            .filter(|s| s.created_us > 0 && now.saturating_sub(s.created_us) > max_age_us)
            .map(|s| s.uuid.clone())
            .collect();
        let out: Vec<Finished> = stale
            .iter()
            .filter_map(|u| self.finish(u, "SWITCHY_STALE_CHANNEL"))
            .collect();
        self.count("reaped", out.len());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(name: &str, uuid: &str, extra: &[(&str, &str)]) -> Arc<Event> {
        let mut e = Event::new(name)
            .with("Unique-ID", uuid)
            .with("Call-Direction", "outbound");
        for (k, v) in extra {
            e = e.with(k, v);
        }
        Arc::new(e)
    }

    #[test]
    fn legs_group_by_tracking_header_across_nodes_and_leave_when_destroyed() {
        let mut t = Tracker::new("sip_h_X-switchy-orig-uuid");
        t.apply(
            "n1",
            &ev(
                "CHANNEL_CREATE",
                "a",
                &[("variable_sip_h_X-switchy-orig-uuid", "a")],
            ),
        );
        t.apply(
            "n2",
            &ev(
                "CHANNEL_CREATE",
                "b",
                &[("variable_sip_h_X-switchy-orig-uuid", "a")],
            ),
        );
        let c = t.call("a").unwrap();
        assert_eq!(
            c.legs,
            vec![("n1".into(), "a".into()), ("n2".into(), "b".into())]
        );
        t.apply(
            "n1",
            &ev(
                "CHANNEL_HANGUP",
                "a",
                &[("Hangup-Cause", "NORMAL_CLEARING")],
            ),
        );
        let f = t.apply("n1", &ev("CHANNEL_DESTROY", "a", &[])).unwrap();
        assert_eq!(f.cause, "NORMAL_CLEARING");
        assert_eq!(t.call("a").unwrap().legs.len(), 1);
        t.apply("n2", &ev("CHANNEL_DESTROY", "b", &[]));
        assert!(t.call("a").is_none());
        assert!(t.is_empty());
        assert_eq!(t.finished().len(), 2);
    }

    #[test]
    fn resync_restart_and_reaper_close_out_channels() {
        let mut t = Tracker::new("x");
        t.apply("n1", &ev("CHANNEL_CREATE", "a", &[("Core-UUID", "c1")]));
        t.apply("n1", &ev("CHANNEL_CREATE", "b", &[("Core-UUID", "c1")]));
        let row = |u: &str| {
            vec![
                ("uuid".to_string(), u.to_string()),
                ("direction".to_string(), "inbound".to_string()),
            ]
        };
        // A just-seen session the snapshot lacks is kept: FreeSWITCH's
        // `show channels` lags.
        assert!(t.resync("n1", "c1", &[row("b")]).is_empty());
        t.session_mut("a").unwrap().seen_us = 0;
        let gone = t.resync("n1", "c1", &[row("b"), row("z")]);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].cause, "SWITCHY_RESYNC_GONE");
        assert!(t.session("z").is_some());
        // A channel seen ending is not brought back by a stale snapshot.
        let again = t.resync("n1", "c1", &[row("a"), row("b"), row("z")]);
        assert!(again.is_empty() && t.session("a").is_none());
        let restarted = t.node_restarted("n1", "c2");
        assert_eq!(restarted.len(), 2);
        t.apply(
            "n1",
            &ev("CHANNEL_CREATE", "old", &[("Event-Date-Timestamp", "1")]),
        );
        let reaped = t.reap(1_000_000);
        assert_eq!(reaped[0].cause, "SWITCHY_STALE_CHANNEL");
    }

    /// A controller restarted mid-call (empty tracker): the snapshot's rows,
    /// with what the agent took from uuid_dump, link both legs to their
    /// call again and keep the real answer time, so the call ends once,
    /// answered; a leg closed out by a resync gets its best known end and
    /// every correction is counted.
    #[test]
    fn a_resync_keeps_a_live_call_whole() {
        let mut t = Tracker::new("sip_h_X-switchy-orig-uuid");
        let row = |u: &str, dir: &str| {
            vec![
                ("uuid".to_string(), u.to_string()),
                ("direction".to_string(), dir.to_string()),
                ("callstate".to_string(), "ACTIVE".to_string()),
                ("created_epoch".to_string(), "1".to_string()),
                (
                    "Caller-Channel-Created-Time".to_string(),
                    "1000123".to_string(),
                ),
                (
                    "Caller-Channel-Answered-Time".to_string(),
                    "1500456".to_string(),
                ),
                (
                    "variable_sip_h_X-switchy-orig-uuid".to_string(),
                    "call-a".to_string(),
                ),
            ]
        };
        assert!(
            t.resync(
                "n1",
                "c1",
                &[row("call-a", "outbound"), row("b", "inbound")]
            )
            .is_empty()
        );
        let call = t.call("call-a").expect("the legs are linked to their call");
        assert_eq!(call.legs.len(), 2);
        let b = t.session("b").unwrap();
        assert_eq!((b.created_us, b.answered_us), (1_000_123, 1_500_456));
        assert_eq!(t.corrections.get("resync_added"), Some(&2));
        assert_eq!(t.corrections.get("resync_linked"), Some(&2));
        // The legs end as usual (the inbound one first): one call end.
        let hc = |u: &str| {
            Arc::new(
                Event::new("CHANNEL_HANGUP_COMPLETE")
                    .with("Unique-ID", u)
                    .with("Hangup-Cause", "NORMAL_CLEARING")
                    .with("Caller-Channel-Hangup-Time", "9000000"),
            )
        };
        let fb = t.apply("n1", &hc("b")).unwrap();
        assert!(!fb.call_ended);
        assert_eq!(fb.session.call, "call-a");
        let fa = t.apply("n1", &hc("call-a")).unwrap();
        assert!(fa.call_ended);
        assert_eq!(fa.session.answered_us, 1_500_456);
        // A known leg the next snapshot lacks is closed out, with the time
        // it was last seen as its end.
        t.apply("n1", &ev("CHANNEL_CREATE", "x", &[("Core-UUID", "c1")]));
        t.session_mut("x").unwrap().seen_us = 42;
        let gone = t.resync("n1", "c1", &[]);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].cause, "SWITCHY_RESYNC_GONE");
        assert!(gone[0].session.hangup_us >= 42);
        assert_eq!(t.corrections.get("resync_closed"), Some(&1));
    }

    /// With only CHANNEL_HANGUP_COMPLETE subscribed: the leg's times come
    /// from its Caller-Channel-*-Time headers, an expected leg keeps the
    /// call open when the other leg ends first, and one call ends once.
    #[test]
    fn hangup_complete_alone_tracks_a_call() {
        let mut t = Tracker::new("sip_h_X-switchy-orig-uuid");
        t.expect_leg("a", "n1", "a");
        assert!(t.session("a").is_some_and(|s| s.pending));
        // The callee leg ends first.
        let b = Event::new("CHANNEL_HANGUP_COMPLETE")
            .with("Unique-ID", "b")
            .with("Call-Direction", "inbound")
            .with("variable_sip_h_X-switchy-orig-uuid", "a")
            .with("Hangup-Cause", "NORMAL_CLEARING")
            .with("Caller-Channel-Created-Time", "1000")
            .with("Caller-Channel-Answered-Time", "2000")
            .with("Caller-Channel-Hangup-Time", "5000");
        let fb = t.apply("n1", &Arc::new(b)).unwrap();
        assert!(!fb.call_ended, "the expected caller leg is still up");
        assert_eq!(
            (
                fb.session.created_us,
                fb.session.answered_us,
                fb.session.hangup_us
            ),
            (1000, 2000, 5000)
        );
        let fa = t
            .apply(
                "n1",
                &ev(
                    "CHANNEL_HANGUP_COMPLETE",
                    "a",
                    &[
                        ("Hangup-Cause", "NORMAL_CLEARING"),
                        ("Caller-Channel-Created-Time", "900"),
                        ("Caller-Channel-Answered-Time", "2010"),
                    ],
                ),
            )
            .unwrap();
        assert!(fa.call_ended);
        assert!(!fa.session.pending);
        assert_eq!(fa.session.created_us, 900);
        // A CHANNEL_DESTROY after it changes nothing.
        assert!(t.apply("n1", &ev("CHANNEL_DESTROY", "a", &[])).is_none());
        assert!(t.is_empty());
        // An expected leg that never appears is forgotten, and its late
        // events are ignored.
        t.expect_leg("c", "n1", "c");
        assert!(t.forget_pending("c"));
        assert!(t.call("c").is_none() && t.node_sessions("n1") == 0);
        assert!(
            t.apply("n1", &ev("CHANNEL_HANGUP_COMPLETE", "c", &[]))
                .is_none()
        );
        assert!(!t.forget_pending("c"));
    }
}
