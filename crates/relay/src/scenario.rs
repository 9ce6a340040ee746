//! Scripted events: a test arms the server with the events that follow the
//! next call of a method (FIFO, consumed once), or with the whole dance of
//! a `calling.dial` matched by its tag.

use crate::rpc;
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, VecDeque};

/// A frame to send `delay_ms` after the one before it.
#[derive(Clone, Debug, PartialEq)]
pub struct Scheduled {
    /// Wait this long first.
    pub delay_ms: u64,
    /// Then send this.
    pub frame: Value,
}

/// One scripted event.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ScriptedEvent {
    /// The event's params.
    pub payload: Map<String, Value>,
    /// Its type [default: derived from the method].
    pub event_type: Option<String>,
    /// Wait before it.
    pub delay_ms: u64,
}

/// The events after one call of a method.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct MethodScenario {
    /// In order.
    pub events: Vec<ScriptedEvent>,
}

/// One leg of a dial.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DialLeg {
    /// Its call id.
    pub call_id: String,
    /// Its states, in order.
    pub states: Vec<String>,
    /// Its device.
    pub device: Option<Value>,
    /// Wait before each state.
    pub delay_ms: u64,
}

/// A dial's dance: the winner's states, the losers', then `calling.call.dial`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DialScenario {
    /// The dial's tag.
    pub tag: String,
    /// The winner's call id.
    pub winner_call_id: String,
    /// The winner's states.
    pub states: Vec<String>,
    /// The losing legs.
    pub losers: Vec<DialLeg>,
    /// Node id in the events.
    pub node_id: String,
    /// The winner's device.
    pub device: Option<Value>,
    /// Wait before each winner state and the dial event.
    pub delay_ms: u64,
}

/// Why a scenario body was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScenarioError {
    /// Not the shape asked for.
    #[error("{0}")]
    Shape(&'static str),
}

fn delay(v: Option<&Value>, default: u64) -> Result<u64, ScenarioError> {
    match v {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_u64()
            .or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
            .ok_or(ScenarioError::Shape(
                "delay_ms must be a non-negative number",
            )),
    }
}

/// Parses `[{"emit": {...}, "event_type": "...", "delay_ms": 10}, ...]`.
pub fn parse_method(body: &Value) -> Result<MethodScenario, ScenarioError> {
    let Value::Array(items) = body else {
        return Err(ScenarioError::Shape(
            "method scenario body must be a JSON array",
        ));
    };
    let mut events = Vec::with_capacity(items.len());
    for item in items {
        let Value::Object(o) = item else {
            return Err(ScenarioError::Shape("each scenario item must be an object"));
        };
        let Some(Value::Object(emit)) = o.get("emit") else {
            return Err(ScenarioError::Shape(
                "each scenario item needs an 'emit' object",
            ));
        };
        let event_type = match o.get("event_type") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(ScenarioError::Shape("event_type must be a string")),
        };
        events.push(ScriptedEvent {
            payload: emit.clone(),
            event_type,
            delay_ms: delay(o.get("delay_ms"), 10)?,
        });
    }
    Ok(MethodScenario { events })
}

fn states(v: Option<&Value>, default: &[&str]) -> Vec<String> {
    match v {
        Some(Value::Array(a)) => a
            .iter()
            .map(|s| s.as_str().map_or_else(|| s.to_string(), str::to_owned))
            .collect(),
        _ => default.iter().map(|s| (*s).to_owned()).collect(),
    }
}

/// Parses a dial scenario: `tag` and `winner_call_id` required.
pub fn parse_dial(body: &Value) -> Result<DialScenario, ScenarioError> {
    let Value::Object(o) = body else {
        return Err(ScenarioError::Shape("dial scenario body must be an object"));
    };
    let tag = match o.get("tag") {
        Some(Value::String(t)) if !t.is_empty() => t.clone(),
        _ => {
            return Err(ScenarioError::Shape(
                "dial scenario requires a non-empty 'tag' string",
            ));
        }
    };
    let winner_call_id = match o.get("winner_call_id") {
        Some(Value::String(t)) if !t.is_empty() => t.clone(),
        _ => {
            return Err(ScenarioError::Shape(
                "dial scenario requires 'winner_call_id'",
            ));
        }
    };
    let mut losers = Vec::new();
    if let Some(Value::Array(ls)) = o.get("losers") {
        for l in ls {
            let Value::Object(l) = l else { continue };
            losers.push(DialLeg {
                call_id: l
                    .get("call_id")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
                states: states(l.get("states"), &["created", "ended"]),
                device: l.get("device").cloned(),
                delay_ms: delay(l.get("delay_ms"), 10)?,
            });
        }
    }
    Ok(DialScenario {
        tag,
        winner_call_id,
        states: states(o.get("states"), &["created", "ringing", "answered"]),
        losers,
        node_id: o
            .get("node_id")
            .and_then(Value::as_str)
            .unwrap_or("node-mock-1")
            .to_owned(),
        device: o.get("device").cloned(),
        delay_ms: delay(o.get("delay_ms"), 10)?,
    })
}

/// A scenario armed for one session (`?session_id=`) or for any (`None`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Armed<T> {
    /// The session it is for.
    pub session_id: Option<String>,
    /// The scenario.
    #[serde(flatten)]
    pub scenario: T,
}

fn take<T>(q: &mut VecDeque<Armed<T>>, fits: impl Fn(&Armed<T>) -> bool) -> Option<T> {
    let i = q.iter().position(fits)?;
    q.remove(i).map(|a| a.scenario)
}

fn for_session<T>(session: &str) -> impl Fn(&Armed<T>) -> bool + '_ {
    move |a| a.session_id.as_deref().is_none_or(|s| s == session)
}

/// The armed scenarios.
#[derive(Debug, Default)]
pub struct ScenarioStore {
    methods: BTreeMap<String, VecDeque<Armed<MethodScenario>>>,
    dials: VecDeque<Armed<DialScenario>>,
}

impl ScenarioStore {
    /// Queues events for the next call of `method` (by `session_id`, or by any session).
    pub fn push_method(&mut self, method: &str, session_id: Option<String>, s: MethodScenario) {
        self.methods
            .entry(method.to_owned())
            .or_default()
            .push_back(Armed {
                session_id,
                scenario: s,
            });
    }

    /// Takes the oldest scenario of `method` that `session` may consume.
    pub fn pop_method(&mut self, method: &str, session: &str) -> Option<MethodScenario> {
        let q = self.methods.get_mut(method)?;
        let s = take(q, for_session(session));
        if q.is_empty() {
            self.methods.remove(method);
        }
        s
    }

    /// Queues a dial scenario.
    pub fn push_dial(&mut self, session_id: Option<String>, s: DialScenario) {
        self.dials.push_back(Armed {
            session_id,
            scenario: s,
        });
    }

    /// Takes the oldest dial scenario `session` may consume with this tag,
    /// else the oldest it may consume.
    pub fn pop_dial(&mut self, tag: Option<&str>, session: &str) -> Option<DialScenario> {
        let fits = for_session(session);
        if let Some(t) = tag
            && let Some(d) = take(&mut self.dials, |a| fits(a) && a.scenario.tag == t)
        {
            return Some(d);
        }
        take(&mut self.dials, fits)
    }

    /// Forgets every scenario.
    pub fn reset(&mut self) {
        self.methods.clear();
        self.dials.clear();
    }

    /// What is armed, for `GET /__mock__/scenarios`.
    pub fn list(&self) -> Value {
        json!({"methods": self.methods, "dial": self.dials})
    }
}

/// The frames of a method scenario, with the request's `call_id`,
/// `node_id` and `control_id` filled in where the script left them out (the
/// Node SDK replaces a call's whole state with each state event, so an
/// event without `node_id` leaves it unable to hang up).
pub fn method_frames(method: &str, s: &MethodScenario, request: &Value) -> Vec<Scheduled> {
    s.events
        .iter()
        .map(|e| {
            let mut p = e.payload.clone();
            for key in ["call_id", "node_id", "control_id"] {
                if !p.contains_key(key)
                    && let Some(Value::String(v)) = request.get(key)
                {
                    p.insert(key.to_owned(), json!(v));
                }
            }
            let et = e
                .event_type
                .clone()
                .unwrap_or_else(|| crate::synth::default_event_type(method));
            Scheduled {
                delay_ms: e.delay_ms,
                frame: rpc::event(&et, p),
            }
        })
        .collect()
}

/// The frames of `_unconditional`: each event as given, the type
/// defaulting to `signalwire.event`.
pub fn unconditional_frames(s: &MethodScenario) -> Vec<Scheduled> {
    s.events
        .iter()
        .map(|e| Scheduled {
            delay_ms: e.delay_ms,
            frame: rpc::event(
                e.event_type.as_deref().unwrap_or("signalwire.event"),
                e.payload.clone(),
            ),
        })
        .collect()
}

fn leg_state(
    call_id: &str,
    node_id: &str,
    tag: &str,
    state: &str,
    device: &Option<Value>,
) -> Value {
    let mut p = Map::new();
    p.insert("call_id".into(), json!(call_id));
    p.insert("node_id".into(), json!(node_id));
    p.insert("tag".into(), json!(tag));
    p.insert("call_state".into(), json!(state));
    p.insert("direction".into(), json!("outbound"));
    p.insert("device".into(), device.clone().unwrap_or_else(|| json!({})));
    rpc::event("calling.call.state", p)
}

/// A dial's dance: the winner's states, each loser's, then the dial event
/// naming the winner.
pub fn dial_frames(s: &DialScenario, request_tag: Option<&str>) -> Vec<Scheduled> {
    let tag = if s.tag.is_empty() {
        request_tag.unwrap_or("")
    } else {
        &s.tag
    };
    let mut out = Vec::new();
    for st in &s.states {
        out.push(Scheduled {
            delay_ms: s.delay_ms,
            frame: leg_state(&s.winner_call_id, &s.node_id, tag, st, &s.device),
        });
    }
    for l in &s.losers {
        for st in &l.states {
            out.push(Scheduled {
                delay_ms: l.delay_ms,
                frame: leg_state(&l.call_id, &s.node_id, tag, st, &l.device),
            });
        }
    }
    let mut p = Map::new();
    p.insert("tag".into(), json!(tag));
    p.insert("node_id".into(), json!(s.node_id));
    p.insert("dial_state".into(), json!("answered"));
    p.insert(
        "call".into(),
        json!({
            "call_id": s.winner_call_id,
            "node_id": s.node_id,
            "tag": tag,
            "device": s.device.clone().unwrap_or_else(|| json!({})),
            "dial_winner": true,
        }),
    );
    out.push(Scheduled {
        delay_ms: s.delay_ms,
        frame: rpc::event("calling.call.dial", p),
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_scenarios_are_fifo_and_consumed_once() {
        let mut st = ScenarioStore::default();
        let a = parse_method(&json!([{"emit": {"state": "playing"}}])).unwrap();
        let b = parse_method(&json!([{"emit": {"state": "finished"}, "delay_ms": 0}])).unwrap();
        st.push_method("calling.play", None, a.clone());
        st.push_method("calling.play", None, b.clone());
        assert_eq!(st.pop_method("calling.play", "s1"), Some(a));
        assert_eq!(st.pop_method("calling.play", "s2"), Some(b));
        assert_eq!(st.pop_method("calling.play", "s1"), None);
        assert_eq!(st.list()["methods"], json!({}));
        // A scenario armed for one session is not another's.
        let c = parse_method(&json!([{"emit": {"x": 1}}])).unwrap();
        st.push_method("calling.play", Some("s1".into()), c.clone());
        assert_eq!(st.pop_method("calling.play", "s2"), None);
        assert_eq!(st.list()["methods"]["calling.play"][0]["session_id"], "s1");
        assert_eq!(st.pop_method("calling.play", "s1"), Some(c));
    }

    #[test]
    fn method_frames_fill_in_identifiers_and_types() {
        let s = parse_method(&json!([
            {"emit": {"state": "playing"}},
            {"emit": {"state": "finished", "call_id": "other"}, "delay_ms": 5, "event_type": "x.y"}
        ]))
        .unwrap();
        let f = method_frames(
            "calling.play",
            &s,
            &json!({"call_id": "c1", "control_id": "k1"}),
        );
        assert_eq!(f[0].delay_ms, 10);
        assert_eq!(f[0].frame["params"]["event_type"], "calling.call.play");
        assert_eq!(f[0].frame["params"]["params"]["control_id"], "k1");
        assert_eq!(f[1].frame["params"]["event_type"], "x.y");
        assert_eq!(f[1].frame["params"]["params"]["call_id"], "other");
    }

    #[test]
    fn bad_bodies_are_refused_with_a_reason() {
        assert!(parse_method(&json!({})).is_err());
        assert!(parse_method(&json!([1])).is_err());
        assert!(parse_method(&json!([{"emit": 1}])).is_err());
        assert!(parse_method(&json!([{"emit": {}, "delay_ms": -1}])).is_err());
        assert!(parse_dial(&json!({"winner_call_id": "w"})).is_err());
        assert!(parse_dial(&json!({"tag": "t"})).is_err());
    }

    #[test]
    fn dials_match_by_tag_then_fifo_and_dance_in_order() {
        let mut st = ScenarioStore::default();
        let d1 = parse_dial(&json!({"tag": "a", "winner_call_id": "w1"})).unwrap();
        let d2 = parse_dial(&json!({
            "tag": "b", "winner_call_id": "w2", "states": ["created", "answered"],
            "losers": [{"call_id": "l1"}]
        }))
        .unwrap();
        st.push_dial(None, d1.clone());
        st.push_dial(Some("s9".into()), d2.clone());
        assert_eq!(st.pop_dial(Some("b"), "s1"), Some(d1.clone()), "b is s9's");
        st.push_dial(None, d1.clone());
        assert_eq!(st.pop_dial(Some("b"), "s9"), Some(d2.clone()));
        assert_eq!(st.pop_dial(Some("zzz"), "s1"), Some(d1));
        assert_eq!(st.pop_dial(None, "s1"), None);
        let f = dial_frames(&d2, Some("ignored"));
        let kinds: Vec<_> = f
            .iter()
            .map(|s| {
                let p = &s.frame["params"]["params"];
                format!(
                    "{}:{}",
                    p["call_id"].as_str().unwrap_or("dial"),
                    p["call_state"].as_str().unwrap_or("")
                )
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "w2:created",
                "w2:answered",
                "l1:created",
                "l1:ended",
                "dial:"
            ]
        );
        let last = &f[4].frame["params"];
        assert_eq!(last["event_type"], "calling.call.dial");
        assert_eq!(last["params"]["dial_state"], "answered");
        assert_eq!(last["params"]["call"]["call_id"], "w2");
        assert_eq!(last["params"]["tag"], "b");
    }
}
