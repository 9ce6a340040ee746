//! The mock-fidelity harness (issue 14): a call flow is a script of ESL
//! commands with waits and pauses; run against a real FreeSWITCH it gives a
//! [`Trace`] (per leg, the events in order with their key values; the
//! header names of each kind of event; the normalised reply to each
//! command). Traces of several real runs make a [`Recording`], the fixture:
//! every variant real FreeSWITCH showed is allowed (some events race). The
//! same script run against mock-relay gives a trace that [`compare`] holds
//! against the recording.
//!
//! Legs are named by role, never by UUID: a `${A}` in a command is a UUID
//! the harness makes up (for `origination_uuid`), and an inbound leg whose
//! `sip_h_X-Fid` variable carries role A's UUID takes the name the flow's
//! `inbound` map gives it. Other legs are `leg1`, `leg2`, … in order of
//! appearance. Inside `repeat`, roles are suffixed `#0`, `#1`, …; a role's
//! class (its name without the suffix) is what is compared.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;
use switchy_protocol::esl::{Command, Decoder, Event, Message, SendMsg};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// The events every flow subscribes (all a call's channel events and the
/// few others these flows produce).
pub const EVENTS: &[&str] = &[
    "CHANNEL_CREATE",
    "CHANNEL_DESTROY",
    "CHANNEL_STATE",
    "CHANNEL_CALLSTATE",
    "CHANNEL_ANSWER",
    "CHANNEL_HANGUP",
    "CHANNEL_HANGUP_COMPLETE",
    "CHANNEL_EXECUTE",
    "CHANNEL_EXECUTE_COMPLETE",
    "CHANNEL_BRIDGE",
    "CHANNEL_UNBRIDGE",
    "CHANNEL_PROGRESS",
    "CHANNEL_PROGRESS_MEDIA",
    "CHANNEL_OUTGOING",
    "CHANNEL_PARK",
    "CHANNEL_UNPARK",
    "CHANNEL_ORIGINATE",
    "CHANNEL_HOLD",
    "CHANNEL_UNHOLD",
    "CALL_UPDATE",
    "DTMF",
    "PLAYBACK_START",
    "PLAYBACK_STOP",
    "RECORD_START",
    "RECORD_STOP",
    "ADD_SCHEDULE",
    "DEL_SCHEDULE",
    "RECV_INFO",
    "BACKGROUND_JOB",
];

/// A call flow.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Flow {
    /// What it shows.
    #[serde(default)]
    pub about: String,
    /// Inbound roles: name → the role whose UUID its `sip_h_X-Fid` carries.
    #[serde(default)]
    pub inbound: BTreeMap<String, String>,
    /// The script.
    pub steps: Vec<Step>,
    /// How long events are still collected after the last step, ms.
    #[serde(default = "default_settle")]
    pub settle_ms: u64,
}

fn default_settle() -> u64 {
    1500
}

/// One step of a flow.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    /// `api <command>`; the reply is compared.
    Api(String),
    /// `bgapi <command>`; the reply is compared (the job's result comes as
    /// a BACKGROUND_JOB event).
    Bgapi(String),
    /// `sendmsg <uuid>` with `call-command: execute`.
    Execute {
        /// The leg (`${B}`).
        uuid: String,
        /// Application.
        app: String,
        /// Its argument.
        #[serde(default)]
        arg: Option<String>,
    },
    /// Wait until `count` events named `event` of the role (or of every
    /// role of that class, inside or after a `repeat`) were seen.
    Wait {
        /// Role or role class.
        leg: String,
        /// Event name.
        event: String,
        /// How many (default 1).
        #[serde(default)]
        count: Option<usize>,
        /// Give up after, ms (default 10,000).
        #[serde(default)]
        timeout_ms: Option<u64>,
    },
    /// Pause, reading events meanwhile.
    SleepMs(u64),
    /// The steps `count` times, roles suffixed `#i`, `pace_ms` apart.
    Repeat {
        /// How many times.
        count: usize,
        /// Pause between rounds, ms.
        #[serde(default)]
        pace_ms: u64,
        /// The steps.
        steps: Vec<Step>,
    },
}

/// What one run of a flow showed.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Trace {
    /// Per role: the event tokens in order.
    pub legs: BTreeMap<String, Vec<String>>,
    /// Events of no leg (jobs, schedules), as tokens.
    pub global: Vec<String>,
    /// Per command step (its path, e.g. `3` or `5.2`): the normalised reply.
    pub replies: BTreeMap<String, String>,
    /// Per event name: header names present in every such event.
    pub headers: BTreeMap<String, BTreeSet<String>>,
    /// What went wrong while running (a wait that timed out …).
    pub errors: Vec<String>,
}

/// A flow's fixture: what real FreeSWITCH showed over several runs.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Recording {
    /// Where it was recorded (FreeSWITCH's version line).
    pub source: String,
    /// Runs merged.
    pub runs: usize,
    /// Per role class: the event sequences its legs showed.
    pub legs: BTreeMap<String, BTreeSet<Vec<String>>>,
    /// Per role class: how many legs of it a run had.
    pub leg_counts: BTreeMap<String, BTreeSet<usize>>,
    /// The events of no leg, sorted (their order races), per run.
    pub global: BTreeSet<Vec<String>>,
    /// Per command step: the replies seen.
    pub replies: BTreeMap<String, BTreeSet<String>>,
    /// Per event name: header names every such event had in every run.
    pub headers: BTreeMap<String, BTreeSet<String>>,
}

/// The class of a role (`A#3` → `A`).
pub fn class(role: &str) -> &str {
    role.split('#').next().unwrap_or(role)
}

impl Recording {
    /// Adds one run.
    pub fn merge(&mut self, t: &Trace) {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for (role, seq) in &t.legs {
            let c = class(role).to_owned();
            *counts.entry(c.clone()).or_default() += 1;
            self.legs.entry(c).or_default().insert(seq.clone());
        }
        for (c, n) in counts {
            self.leg_counts.entry(c).or_default().insert(n);
        }
        let mut g = t.global.clone();
        g.sort();
        self.global.insert(g);
        for (step, r) in &t.replies {
            self.replies
                .entry(step.clone())
                .or_default()
                .insert(r.clone());
        }
        for (name, hs) in &t.headers {
            match self.headers.get_mut(name) {
                Some(have) => have.retain(|h| hs.contains(h)),
                None => {
                    self.headers.insert(name.clone(), hs.clone());
                }
            }
        }
        self.runs += 1;
    }
}

/// Header names that differ between machines, builds or runs of the same
/// FreeSWITCH and so are not compared (the rest of every event kind is).
pub fn ignored_header(name: &str) -> bool {
    let v = name.strip_prefix("variable_");
    // Media details (codecs, RTP, SDP): the mock has no media.
    const MEDIA: &[&str] = &[
        "rtp_",
        "sip_local_sdp",
        "sip_remote_sdp",
        "switch_r_sdp",
        "switch_m_sdp",
        "ep_codec",
        "local_media",
        "remote_media",
        "remote_audio",
        "remote_video",
        "remote_text",
        "read_codec",
        "write_codec",
        "read_rate",
        "write_rate",
        "original_read",
        "audio_media_flow",
        "video_media_flow",
        "text_media_flow",
        "rtcp_",
    ];
    match v {
        Some(v) => MEDIA.iter().any(|p| v.starts_with(p)),
        // Core headers that name this machine or build.
        None => matches!(
            name,
            "FreeSWITCH-Hostname"
                | "FreeSWITCH-Switchname"
                | "FreeSWITCH-IPv4"
                | "FreeSWITCH-IPv6"
                | "Event-Calling-File"
                | "Event-Calling-Function"
                | "Event-Calling-Line-Number"
                | "Event-Date-Local"
                | "Event-Date-GMT"
                | "Event-Date-Timestamp"
                | "Event-Sequence"
                | "Core-UUID"
                | "Content-Length"
        ),
    }
}

/// A comparison's outcome.
#[derive(Debug, Default)]
pub struct Report {
    /// Checks made.
    pub checks: usize,
    /// Checks failed, each with what differed.
    pub failures: Vec<String>,
}

impl Report {
    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        self.checks += 1;
        if !ok {
            self.failures.push(what());
        }
    }
}

/// Pairs of events whose order real FreeSWITCH itself varied: seen in both
/// orders among a class's variants (each event once in its sequence).
fn racy_pairs(variants: &BTreeSet<Vec<String>>) -> BTreeSet<(String, String)> {
    let mut seen = BTreeSet::new();
    for v in variants {
        let once: Vec<&String> = v
            .iter()
            .filter(|t| v.iter().filter(|x| x == t).count() == 1)
            .collect();
        for (i, a) in once.iter().enumerate() {
            for b in &once[i + 1..] {
                seen.insert(((*a).clone(), (*b).clone()));
            }
        }
    }
    seen.iter()
        .filter(|(a, b)| seen.contains(&(b.clone(), a.clone())))
        .cloned()
        .collect()
}

/// How real FreeSWITCH varies between runs of the same flow, learned from
/// every recording: events whose order races, and events it sometimes
/// skips (a state the state thread passes through before it reports it).
#[derive(Clone, Debug, Default)]
pub struct Variation {
    racy: BTreeSet<(String, String)>,
    optional: BTreeSet<String>,
}

impl Variation {
    /// Learned from `recs` (all the flows' recordings).
    pub fn learn<'a>(recs: impl IntoIterator<Item = &'a Recording>) -> Variation {
        let mut every = BTreeSet::new();
        let mut optional = BTreeSet::new();
        for rec in recs {
            for variants in rec.legs.values() {
                let all: BTreeSet<&String> = variants.iter().flatten().collect();
                for t in all {
                    if variants.iter().any(|v| !v.contains(t)) {
                        optional.insert(t.clone());
                    }
                }
                every.extend(variants.iter().cloned());
            }
        }
        Variation {
            racy: racy_pairs(&every),
            optional,
        }
    }

    /// The form two sequences are compared in: optional events dropped,
    /// racing events in one order.
    fn canonical(&self, seq: &[String]) -> Vec<String> {
        let kept: Vec<String> = seq
            .iter()
            .filter(|t| !self.optional.contains(*t))
            .cloned()
            .collect();
        canonical(&kept, &self.racy)
    }
}

/// `seq` with every run of racing events in one (sorted) order.
fn canonical(seq: &[String], racy: &BTreeSet<(String, String)>) -> Vec<String> {
    let mut v = seq.to_vec();
    let mut changed = true;
    while changed {
        changed = false;
        for i in 1..v.len() {
            if v[i - 1] > v[i] && racy.contains(&(v[i - 1].clone(), v[i].clone())) {
                v.swap(i - 1, i);
                changed = true;
            }
        }
    }
    v
}

/// The closest of `variants` to `got` (fewest differing positions).
fn closest<'a>(variants: &'a BTreeSet<Vec<String>>, got: &[String]) -> Option<&'a Vec<String>> {
    variants.iter().min_by_key(|v| {
        let common = v.iter().zip(got).take_while(|(a, b)| a == b).count();
        (v.len().max(got.len()) - common, v.len().abs_diff(got.len()))
    })
}

fn show_diff(want: &[String], got: &[String]) -> String {
    let at = want.iter().zip(got).take_while(|(a, b)| a == b).count();
    let from = at.saturating_sub(2);
    format!(
        "differs at event {at}: real …{}… ; this run …{}…",
        want[from..want.len().min(at + 6)].join(" "),
        got[from.min(got.len())..got.len().min(at + 6)].join(" ")
    )
}

/// Holds a trace (of the mock, or of a fresh real run) against a flow's
/// recording.
pub fn compare(rec: &Recording, var: &Variation, t: &Trace) -> Report {
    let mut r = Report::default();
    r.check(t.errors.is_empty(), || {
        format!("run: {}", t.errors.join("; "))
    });
    let mut by_class: BTreeMap<&str, Vec<(&String, &Vec<String>)>> = BTreeMap::new();
    for (role, seq) in &t.legs {
        by_class.entry(class(role)).or_default().push((role, seq));
    }
    let classes: BTreeSet<&str> = rec
        .legs
        .keys()
        .map(String::as_str)
        .chain(by_class.keys().copied())
        .collect();
    let empty = BTreeSet::new();
    let no_seqs = BTreeSet::new();
    for c in classes {
        let legs = by_class.get(c).map(Vec::as_slice).unwrap_or_default();
        let counts = rec.leg_counts.get(c).unwrap_or(&empty);
        r.check(counts.contains(&legs.len()), || {
            format!("legs {c}: {} (real: {counts:?})", legs.len())
        });
        let variants = rec.legs.get(c).unwrap_or(&no_seqs);
        let allowed: BTreeSet<Vec<String>> = variants.iter().map(|v| var.canonical(v)).collect();
        let bad = legs
            .iter()
            .find(|(_, s)| !allowed.contains(&var.canonical(s)));
        r.check(bad.is_none(), || {
            let Some((role, got)) = bad.copied() else {
                return String::new();
            };
            match closest(variants, got) {
                Some(want) => format!("leg {role}: {}", show_diff(want, got)),
                None => format!("leg {role}: not in the recording: {}", got.join(" ")),
            }
        });
    }
    let mut g = t.global.clone();
    g.sort();
    r.check(rec.global.contains(&g), || {
        let want = rec.global.iter().next().cloned().unwrap_or_default();
        format!("events of no leg: {}", show_diff(&want, &g))
    });
    for (step, want) in &rec.replies {
        let got = t.replies.get(step);
        r.check(got.is_some_and(|g| want.contains(g)), || {
            format!(
                "reply to step {step}: real {:?}, this run {:?}",
                want.iter().next().map(String::as_str).unwrap_or(""),
                got.map(String::as_str).unwrap_or("(none)")
            )
        });
    }
    for (name, want) in &rec.headers {
        let Some(got) = t.headers.get(name) else {
            continue;
        };
        let missing: Vec<&String> = want
            .iter()
            .filter(|h| !ignored_header(h) && !got.contains(*h))
            .collect();
        r.check(missing.is_empty(), || {
            format!("{name} lacks headers real FreeSWITCH sends: {missing:?}")
        });
    }
    r
}

/// mock-relay set up as the FreeSWITCH the recordings were made on (one
/// node; max-sessions 2000 and 500 sessions per second, as
/// `../shared/tools/freeswitch/build.sh` configures it; early media when a
/// self-call's inbound leg is answered, which the FreeSWITCH of
/// shared/fixtures' captures does not show).
pub fn mock_config() -> mock_relay::MockConfig {
    let mut c = mock_relay::MockConfig::ephemeral(1);
    c.knobs.max_sessions = 2000;
    c.knobs.sessions_per_second = 500;
    c.knobs.early_media_on_answer = true;
    c
}

/// Where flows and recordings live.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fidelity")
}

/// Every flow, by name (file stem).
pub fn flows() -> anyhow::Result<BTreeMap<String, Flow>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir().join("flows"))? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "json") {
            let name = p
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_owned();
            let f: Flow = serde_json::from_slice(&std::fs::read(&p)?)
                .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
            out.insert(name, f);
        }
    }
    Ok(out)
}

/// A flow's recording, if one was made.
pub fn recording(name: &str) -> anyhow::Result<Option<Recording>> {
    let p = dir().join("recorded").join(format!("{name}.json"));
    if !p.exists() {
        return Ok(None);
    }
    Ok(Some(serde_json::from_slice(&std::fs::read(&p)?)?))
}

/// Every stored recording, by flow name.
pub fn recordings() -> anyhow::Result<BTreeMap<String, Recording>> {
    let mut out = BTreeMap::new();
    for name in flows()?.keys() {
        if let Some(r) = recording(name)? {
            out.insert(name.clone(), r);
        }
    }
    Ok(out)
}

/// Stores a flow's recording.
pub fn save_recording(name: &str, rec: &Recording) -> anyhow::Result<()> {
    let d = dir().join("recorded");
    std::fs::create_dir_all(&d)?;
    let mut text = serde_json::to_string_pretty(rec)?;
    text.push('\n');
    std::fs::write(d.join(format!("{name}.json")), text)?;
    Ok(())
}

/// An ESL connection that both sends the flow's commands and reads its
/// events.
struct Esl {
    stream: TcpStream,
    dec: Decoder,
    buf: Vec<u8>,
}

impl Esl {
    async fn connect(addr: &str, password: &str) -> anyhow::Result<Esl> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let mut c = Esl {
            stream,
            dec: Decoder::new(),
            buf: vec![0; 64 * 1024],
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        match c.next(deadline).await? {
            Some(Message::AuthRequest) => {}
            other => anyhow::bail!("no auth/request from {addr}: {other:?}"),
        }
        c.send(&Command::auth(password)?).await?;
        match c.next(deadline).await? {
            Some(Message::CommandReply(r)) if r.result().is_ok() => {}
            other => anyhow::bail!("auth refused by {addr}: {other:?}"),
        }
        let names: Vec<&str> = EVENTS.to_vec();
        c.send(&Command::event(
            switchy_protocol::esl::EventFormat::Plain,
            &names,
            &[],
        )?)
        .await?;
        loop {
            match c.next(deadline).await? {
                Some(Message::CommandReply(_)) => break,
                Some(_) => continue,
                None => anyhow::bail!("no reply to the event subscription"),
            }
        }
        Ok(c)
    }

    async fn send(&mut self, c: &Command) -> anyhow::Result<()> {
        self.stream.write_all(&c.to_bytes()).await?;
        Ok(())
    }

    /// The next message, or None at `deadline`.
    async fn next(&mut self, deadline: Instant) -> anyhow::Result<Option<Message>> {
        loop {
            if let Some(m) = self.dec.next_message()? {
                return Ok(Some(m));
            }
            let n = match tokio::time::timeout_at(deadline, self.stream.read(&mut self.buf)).await {
                Ok(r) => r?,
                Err(_) => return Ok(None),
            };
            if n == 0 {
                anyhow::bail!("the connection closed");
            }
            self.dec.feed(&self.buf[..n]);
        }
    }
}

/// The run's state: roles, and what was seen.
#[derive(Default)]
struct Run {
    inbound: BTreeMap<String, String>,
    /// Role → UUID.
    uuids: HashMap<String, String>,
    /// UUID → role.
    roles: HashMap<String, String>,
    /// Legs seen but not named by the flow.
    unnamed: usize,
    /// Events in arrival order: (uuid or "", event).
    events: Vec<Event>,
    trace: Trace,
}

impl Run {
    fn role_of(&mut self, e: &Event) -> Option<String> {
        let uuid = e.unique_id()?.to_owned();
        if let Some(r) = self.roles.get(&uuid)
            && !r.starts_with("leg")
        {
            return Some(r.clone());
        }
        // An inbound leg whose X-Fid names a known role.
        if let Some(fid) = e.variable("sip_h_X-Fid")
            && let Some(owner) = self.roles.get(fid).cloned()
        {
            let suffix = owner.find('#').map(|i| &owner[i..]).unwrap_or("");
            let name = self
                .inbound
                .iter()
                .find(|(_, of)| of.as_str() == class(&owner))
                .map(|(n, _)| format!("{n}{suffix}"));
            if let Some(name) = name
                && !self.uuids.contains_key(&name)
            {
                self.uuids.insert(name.clone(), uuid.clone());
                self.roles.insert(uuid, name.clone());
                return Some(name);
            }
        }
        if let Some(r) = self.roles.get(&uuid) {
            return Some(r.clone());
        }
        self.unnamed += 1;
        let name = format!("leg{}", self.unnamed);
        self.roles.insert(uuid.clone(), name.clone());
        self.uuids.insert(name.clone(), uuid);
        Some(name)
    }

    fn on_event(&mut self, e: Event) {
        self.role_of(&e);
        self.events.push(e);
    }

    /// Replaces the flow's placeholders: `${SELF}`, and `${X}` by role X's
    /// UUID (made up for an outbound role not seen yet).
    fn fill(&mut self, text: &str, suffix: &str, self_addr: &str) -> anyhow::Result<String> {
        let mut out = String::new();
        let mut rest = text;
        while let Some(i) = rest.find("${") {
            out.push_str(&rest[..i]);
            let Some(j) = rest[i..].find('}') else {
                anyhow::bail!("unclosed ${{ in {text}");
            };
            let name = &rest[i + 2..i + j];
            if name == "SELF" {
                out.push_str(self_addr);
            } else {
                let role = format!("{name}{suffix}");
                let uuid = match self.uuids.get(&role) {
                    Some(u) => u.clone(),
                    None if self.inbound.contains_key(name) => {
                        anyhow::bail!("{role} is not known yet in {text:?}: wait for it first")
                    }
                    None => {
                        let u = uuid::Uuid::new_v4().to_string();
                        self.uuids.insert(role.clone(), u.clone());
                        self.roles.insert(u.clone(), role);
                        u
                    }
                };
                out.push_str(&uuid);
            }
            rest = &rest[i + j + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    fn seen(&self, leg: &str, event: &str) -> usize {
        self.events
            .iter()
            .filter(|e| e.event_name() == Some(event))
            .filter(|e| {
                e.unique_id()
                    .and_then(|u| self.roles.get(u))
                    .is_some_and(|r| r == leg || (!leg.contains('#') && class(r) == leg))
            })
            .count()
    }

    /// UUIDs and job ids replaced by role names.
    fn normalise(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let b = text.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if i + 36 <= b.len() && looks_like_uuid(&text[i..i + 36]) {
                let u = &text[i..i + 36];
                match self.roles.get(u) {
                    Some(r) => {
                        out.push_str("${");
                        out.push_str(r);
                        out.push('}');
                    }
                    None => out.push_str("<uuid>"),
                }
                i += 36;
                continue;
            }
            let ch = text[i..].chars().next().unwrap_or(' ');
            out.push(ch);
            i += ch.len_utf8();
        }
        out.trim_end().to_owned()
    }

    fn token(&self, e: &Event) -> String {
        let name = e.event_name().unwrap_or("?");
        let key = match name {
            "CHANNEL_STATE" => e.get("Channel-State").map(str::to_owned),
            "CHANNEL_CALLSTATE" => e.get("Channel-Call-State").map(str::to_owned),
            "CHANNEL_EXECUTE" | "CHANNEL_EXECUTE_COMPLETE" => {
                e.get("Application").map(str::to_owned)
            }
            "CHANNEL_HANGUP" | "CHANNEL_HANGUP_COMPLETE" => {
                e.get("Hangup-Cause").map(str::to_owned)
            }
            "DTMF" => e.get("DTMF-Digit").map(str::to_owned),
            "CHANNEL_BRIDGE" | "CHANNEL_UNBRIDGE" => {
                e.get("Other-Leg-Unique-ID").map(|u| self.normalise(u))
            }
            "ADD_SCHEDULE" | "DEL_SCHEDULE" => Some(format!(
                "{}:{}",
                e.get("Task-Desc").unwrap_or(""),
                self.normalise(e.get("Task-Group").unwrap_or(""))
            )),
            "BACKGROUND_JOB" => e
                .body_text()
                .map(|b| self.normalise(b.lines().next().unwrap_or(""))),
            _ => None,
        };
        match key {
            Some(k) => format!("{name}:{k}"),
            None => name.to_owned(),
        }
    }

    /// The trace of what was seen.
    fn finish(mut self) -> Trace {
        let mut kinds: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for e in &self.events {
            let token = self.token(e);
            match e.unique_id().and_then(|u| self.roles.get(u)) {
                Some(role) => self.trace.legs.entry(role.clone()).or_default().push(token),
                None => self.trace.global.push(token),
            }
            let names: BTreeSet<String> = e.headers.iter().map(|(k, _)| k.to_owned()).collect();
            let name = e.event_name().unwrap_or("?").to_owned();
            match kinds.get_mut(&name) {
                Some(have) => have.retain(|h| names.contains(h)),
                None => {
                    kinds.insert(name, names);
                }
            }
        }
        self.trace.headers = kinds;
        self.trace
    }
}

fn looks_like_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Runs `flow` against the ESL server at `addr`; `self_addr` is the SIP
/// address a self-call loops back to (`127.0.0.1:5080`).
pub async fn run(
    flow: &Flow,
    addr: &str,
    password: &str,
    self_addr: &str,
) -> anyhow::Result<Trace> {
    let mut esl = Esl::connect(addr, password).await?;
    let mut run = Run {
        inbound: flow.inbound.clone(),
        ..Default::default()
    };
    let result = steps(&mut esl, &mut run, &flow.steps, "", "", self_addr).await;
    if let Err(e) = result {
        run.trace.errors.push(e.to_string());
    }
    // Collect what follows the last step.
    let until = Instant::now() + Duration::from_millis(flow.settle_ms);
    while let Some(m) = esl.next(until).await? {
        if let Message::Event(_, e) = m {
            run.on_event(e);
        }
    }
    // Leave nothing behind for the next flow (not part of the trace).
    let _ = esl.send(&Command::api("hupall", "NORMAL_CLEARING")?).await;
    let _ = esl.next(Instant::now() + Duration::from_secs(2)).await;
    Ok(run.finish())
}

/// Sends a command and waits for its reply, reading events meanwhile.
async fn command(esl: &mut Esl, run: &mut Run, c: Command) -> anyhow::Result<String> {
    esl.send(&c).await?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match esl.next(deadline).await? {
            Some(Message::Event(_, e)) => run.on_event(e),
            Some(Message::ApiResponse(r)) => return Ok(r.text().into_owned()),
            Some(Message::CommandReply(r)) => {
                let mut t = r.reply_text().unwrap_or("").to_owned();
                if t.starts_with("+OK Job-UUID") {
                    t = "+OK Job-UUID: <job>".into();
                }
                return Ok(t);
            }
            Some(_) => continue,
            None => anyhow::bail!("no reply to {:?} within 15 s", c.line()),
        }
    }
}

fn split(cmd: &str) -> (&str, &str) {
    match cmd.split_once(' ') {
        Some((c, a)) => (c, a),
        None => (cmd, ""),
    }
}

async fn steps(
    esl: &mut Esl,
    run: &mut Run,
    steps: &[Step],
    path: &str,
    suffix: &str,
    self_addr: &str,
) -> anyhow::Result<()> {
    for (i, step) in steps.iter().enumerate() {
        let here = if path.is_empty() {
            i.to_string()
        } else {
            format!("{path}.{i}")
        };
        match step {
            Step::Api(cmd) | Step::Bgapi(cmd) => {
                let text = run.fill(cmd, suffix, self_addr)?;
                let (c, a) = split(&text);
                let c = match step {
                    Step::Api(_) => Command::api(c, a)?,
                    _ => Command::bgapi(c, a, None)?,
                };
                let reply = command(esl, run, c).await?;
                let reply = run.normalise(&reply);
                run.trace.replies.insert(here, reply);
            }
            Step::Execute { uuid, app, arg } => {
                let uuid = run.fill(uuid, suffix, self_addr)?;
                let arg = match arg {
                    Some(a) => Some(run.fill(a, suffix, self_addr)?),
                    None => None,
                };
                let c = Command::sendmsg(&uuid, &SendMsg::execute(app, arg.as_deref()))?;
                let reply = command(esl, run, c).await?;
                let reply = run.normalise(&reply);
                run.trace.replies.insert(here, reply);
            }
            Step::Wait {
                leg,
                event,
                count,
                timeout_ms,
            } => {
                let leg = if leg.contains('#') || suffix.is_empty() {
                    leg.clone()
                } else {
                    format!("{leg}{suffix}")
                };
                let want = count.unwrap_or(1);
                let deadline = Instant::now() + Duration::from_millis(timeout_ms.unwrap_or(10_000));
                while run.seen(&leg, event) < want {
                    match esl.next(deadline).await? {
                        Some(Message::Event(_, e)) => run.on_event(e),
                        Some(_) => {}
                        None => anyhow::bail!(
                            "step {here}: {} of {want} {event} of {leg} within the timeout",
                            run.seen(&leg, event)
                        ),
                    }
                }
            }
            Step::SleepMs(ms) => {
                let until = Instant::now() + Duration::from_millis(*ms);
                while let Some(m) = esl.next(until).await? {
                    if let Message::Event(_, e) = m {
                        run.on_event(e);
                    }
                }
            }
            Step::Repeat {
                count,
                pace_ms,
                steps: inner,
            } => {
                for k in 0..*count {
                    Box::pin(self::steps(
                        esl,
                        run,
                        inner,
                        &format!("{here}#{k}"),
                        &format!("#{k}"),
                        self_addr,
                    ))
                    .await?;
                    if *pace_ms > 0 {
                        let until = Instant::now() + Duration::from_millis(*pace_ms);
                        while let Some(m) = esl.next(until).await? {
                            if let Message::Event(_, e) = m {
                                run.on_event(e);
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(())
}
