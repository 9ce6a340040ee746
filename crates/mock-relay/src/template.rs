//! Event templates taken from real FreeSWITCH captures
//! (`templates/events.tmpl`, made by `templates/extract.py`).
//!
//! A template is FreeSWITCH's exact header list for one kind of event, with
//! values in FreeSWITCH's plain encoding and `${name}` placeholders where a
//! value depends on the node, the channel or the moment. Rendering a plain
//! event copies the pre-encoded pieces and encodes only the placeholders.

use std::collections::HashMap;
use switchy_protocol::esl::percent;

/// The template file compiled into the binary.
pub const EVENTS_TMPL: &str = include_str!("../templates/events.tmpl");

/// Placeholders the renderer resolves without a lookup by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Ph {
    CoreUuid,
    Hostname,
    Ipv4,
    DateLocal,
    DateGmt,
    Ts,
    Seq,
    Uuid,
    PeerUuid,
    State,
    StateNumber,
    CallState,
    OrigCallState,
    CallStateNumber,
    AnswerState,
    HangupCause,
    HangupQ850,
    LastApp,
    LastAppData,
    Direction,
    ChannelName,
    Dest,
    CidName,
    CidNum,
    Context,
    NetworkAddr,
    CreatedUs,
    AnsweredUs,
    ProgressUs,
    ProgressMediaUs,
    HangupUs,
    BridgedUs,
    App,
    AppData,
    AppUuid,
    SipCallId,
    ReqUri,
    Profile,
    /// Event-specific: looked up by name among the values passed to render.
    Named,
}

impl Ph {
    /// The placeholder of a `${name}`.
    pub fn of(name: &str) -> Ph {
        match name {
            "core_uuid" => Ph::CoreUuid,
            "hostname" => Ph::Hostname,
            "ipv4" => Ph::Ipv4,
            "date_local" => Ph::DateLocal,
            "date_gmt" => Ph::DateGmt,
            "ts" => Ph::Ts,
            "seq" => Ph::Seq,
            "uuid" => Ph::Uuid,
            "peer_uuid" => Ph::PeerUuid,
            "state" => Ph::State,
            "state_number" => Ph::StateNumber,
            "call_state" => Ph::CallState,
            "orig_call_state" => Ph::OrigCallState,
            "call_state_number" => Ph::CallStateNumber,
            "answer_state" => Ph::AnswerState,
            "hangup_cause" => Ph::HangupCause,
            "hangup_q850" => Ph::HangupQ850,
            "last_app" => Ph::LastApp,
            "last_app_data" => Ph::LastAppData,
            "direction" => Ph::Direction,
            "channel_name" => Ph::ChannelName,
            "dest" => Ph::Dest,
            "cid_name" => Ph::CidName,
            "cid_num" => Ph::CidNum,
            "context" => Ph::Context,
            "network_addr" => Ph::NetworkAddr,
            "created_us" => Ph::CreatedUs,
            "answered_us" => Ph::AnsweredUs,
            "progress_us" => Ph::ProgressUs,
            "progress_media_us" => Ph::ProgressMediaUs,
            "hangup_us" => Ph::HangupUs,
            "bridged_us" => Ph::BridgedUs,
            "app" => Ph::App,
            "app_data" => Ph::AppData,
            "app_uuid" => Ph::AppUuid,
            "sip_call_id" => Ph::SipCallId,
            "req_uri" => Ph::ReqUri,
            "profile" => Ph::Profile,
            _ => Ph::Named,
        }
    }
}

/// One piece of a header value.
#[derive(Clone, Debug)]
pub enum Seg {
    /// Literal text: (plain-encoded, decoded).
    Lit(Vec<u8>, Vec<u8>),
    /// A placeholder, resolved when rendering.
    Var(String, Ph),
}

/// One header of a template.
#[derive(Clone, Debug)]
pub struct THeader {
    /// Header name.
    pub name: String,
    /// Value pieces.
    pub segs: Vec<Seg>,
}

/// A template: FreeSWITCH's header list for one kind of event.
#[derive(Clone, Debug)]
pub struct Template {
    /// `Event-Name`.
    pub event: String,
    /// Headers in order.
    pub headers: Vec<THeader>,
}

impl Template {
    /// Index of the first header whose name starts with `variable_`.
    pub fn first_variable(&self) -> Option<usize> {
        self.headers
            .iter()
            .position(|h| h.name.starts_with("variable_"))
    }

    /// Index just past the last `variable_*` header.
    pub fn after_variables(&self) -> Option<usize> {
        self.headers
            .iter()
            .rposition(|h| h.name.starts_with("variable_"))
            .map(|i| i + 1)
    }

    /// A copy with another event name and without the headers in `drop`.
    pub fn derive(&self, event: &str, drop: &[&str], drop_variables: bool) -> Template {
        let mut t = self.clone();
        t.event = event.to_owned();
        t.headers.retain(|h| {
            !(drop.contains(&h.name.as_str()) || drop_variables && h.name.starts_with("variable_"))
        });
        if let Some(h) = t.headers.iter_mut().find(|h| h.name == "Event-Name") {
            h.segs = vec![Seg::Lit(
                event.as_bytes().to_vec(),
                event.as_bytes().to_vec(),
            )];
        }
        t
    }

    /// Inserts a header with a placeholder or literal value at `at`.
    pub fn insert(&mut self, at: usize, name: &str, value: TValue) {
        let segs = match value {
            TValue::Var(v) => vec![Seg::Var(v.to_owned(), Ph::of(v))],
            TValue::Lit(l) => {
                let mut enc = Vec::new();
                percent::encode_into(l.as_bytes(), &mut enc);
                vec![Seg::Lit(enc, l.as_bytes().to_vec())]
            }
        };
        let at = at.min(self.headers.len());
        self.headers.insert(
            at,
            THeader {
                name: name.to_owned(),
                segs,
            },
        );
    }

    /// Appends a header.
    pub fn push(&mut self, name: &str, value: TValue) {
        let n = self.headers.len();
        self.insert(n, name, value);
    }
}

/// A value for [`Template::insert`].
pub enum TValue<'a> {
    /// A `${name}` placeholder.
    Var(&'a str),
    /// Literal text.
    Lit(&'a str),
}

/// Why the template file is unusable.
#[derive(Debug, thiserror::Error)]
#[error("events.tmpl line {line}: {reason}")]
pub struct TemplateError {
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

/// Parses a template file into templates keyed by `(event, direction, state)`.
pub fn parse(text: &str) -> Result<HashMap<(String, String, String), Template>, TemplateError> {
    let mut out = HashMap::new();
    let mut cur: Option<((String, String, String), Template)> = None;
    for (i, line) in text.lines().enumerate() {
        let err = |reason: &str| TemplateError {
            line: i + 1,
            reason: reason.to_owned(),
        };
        if line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix("== ") {
            if let Some((k, t)) = cur.take() {
                out.insert(k, t);
            }
            let mut parts = rest.split(' ');
            let (Some(e), Some(d), Some(s)) = (parts.next(), parts.next(), parts.next()) else {
                return Err(err("expected '== EVENT DIRECTION STATE'"));
            };
            cur = Some((
                (e.to_owned(), d.to_owned(), s.to_owned()),
                Template {
                    event: e.to_owned(),
                    headers: Vec::new(),
                },
            ));
            continue;
        }
        if line.is_empty() {
            continue;
        }
        let Some((_, t)) = cur.as_mut() else {
            return Err(err("header line before any '==' line"));
        };
        let Some((name, value)) = line.split_once(": ") else {
            return Err(err("expected 'Name: value'"));
        };
        let mut segs = Vec::new();
        let mut rest = value;
        while let Some(p) = rest.find("${") {
            if p > 0 {
                let lit = &rest[..p];
                segs.push(Seg::Lit(
                    lit.as_bytes().to_vec(),
                    percent::decode(lit.as_bytes()),
                ));
            }
            let Some(end) = rest[p..].find('}') else {
                return Err(err("unterminated ${"));
            };
            let name = &rest[p + 2..p + end];
            segs.push(Seg::Var(name.to_owned(), Ph::of(name)));
            rest = &rest[p + end + 1..];
        }
        if !rest.is_empty() {
            segs.push(Seg::Lit(
                rest.as_bytes().to_vec(),
                percent::decode(rest.as_bytes()),
            ));
        }
        t.headers.push(THeader {
            name: name.to_owned(),
            segs,
        });
    }
    if let Some((k, t)) = cur.take() {
        out.insert(k, t);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_templates_parse_and_cover_the_call_flow() {
        let t = parse(EVENTS_TMPL).unwrap();
        for key in [
            ("CHANNEL_CREATE", "outbound", "CS_INIT"),
            ("CHANNEL_CREATE", "inbound", "CS_INIT"),
            ("CHANNEL_PARK", "inbound", "CS_EXECUTE"),
            ("CHANNEL_HANGUP_COMPLETE", "outbound", "CS_REPORTING"),
            ("BACKGROUND_JOB", "-", "-"),
        ] {
            let k = (key.0.to_owned(), key.1.to_owned(), key.2.to_owned());
            assert!(t.contains_key(&k), "{key:?}");
        }
    }
}
