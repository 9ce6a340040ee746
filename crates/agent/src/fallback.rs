//! What a node does with its parked inbound calls while the controller is
//! unreachable. FreeSWITCH parks every inbound call in the `switchy`
//! context and waits for the controller; with no controller the caller
//! would sit in silence. After `after`, a call that parked while the
//! controller was away (and is still parked, unanswered) gets the
//! configured action: hang up with a cause (SERVICE_UNAVAILABLE: FreeSWITCH
//! answers the INVITE with 503) or transfer to a local dialplan context.
//! Sans-IO: fed events and the time, it says which commands to send.

use std::collections::BTreeMap;
use std::time::Duration;

/// What to do with such a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FallbackAction {
    /// `uuid_kill UUID CAUSE` (before answer, the SIP response FreeSWITCH
    /// maps the cause to: SERVICE_UNAVAILABLE is 503).
    Hangup(String),
    /// `uuid_transfer UUID DEST` with DEST as `EXTENSION XML CONTEXT`.
    Transfer(String),
}

impl FallbackAction {
    /// Parses `hangup CAUSE` or `transfer EXTENSION XML CONTEXT`.
    pub fn parse(s: &str) -> Result<FallbackAction, String> {
        let s = s.trim();
        let (verb, rest) = s.split_once(' ').unwrap_or((s, ""));
        let rest = rest.trim();
        let ok = |v: &str| {
            !v.is_empty()
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || " _-+.@".contains(c))
        };
        match verb {
            "hangup" if rest.is_empty() => Ok(FallbackAction::Hangup("SERVICE_UNAVAILABLE".into())),
            "hangup" if ok(rest) && !rest.contains(' ') => Ok(FallbackAction::Hangup(rest.into())),
            "transfer" if ok(rest) => Ok(FallbackAction::Transfer(rest.into())),
            _ => Err(format!(
                "fallback action {s:?}: use `hangup [CAUSE]` (default SERVICE_UNAVAILABLE, SIP 503) or `transfer EXTENSION XML CONTEXT`"
            )),
        }
    }

    /// The API command and its arguments for `uuid`.
    pub fn command(&self, uuid: &str) -> (&'static str, String) {
        match self {
            FallbackAction::Hangup(cause) => ("uuid_kill", format!("{uuid} {cause}")),
            FallbackAction::Transfer(dest) => ("uuid_transfer", format!("{uuid} {dest}")),
        }
    }
}

/// The fallback's state: calls parked while the controller was away.
#[derive(Debug)]
pub struct Fallback {
    after: Duration,
    action: FallbackAction,
    /// Unique-ID → when it parked.
    parked: BTreeMap<String, Duration>,
}

/// What an event says about a channel, as far as the fallback cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// CHANNEL_PARK of an inbound call not answered yet.
    ParkedUnanswered,
    /// Anything else of that channel (executed something, answered,
    /// hung up): it is no longer waiting in park.
    Moved,
}

impl Fallback {
    /// Acts `after` a call parked with no controller.
    pub fn new(after: Duration, action: FallbackAction) -> Fallback {
        Fallback {
            after,
            action,
            parked: BTreeMap::new(),
        }
    }

    /// The action.
    pub fn action(&self) -> &FallbackAction {
        &self.action
    }

    /// An event of channel `uuid` at `now`; `controller_up` is whether the
    /// controller is connected now.
    pub fn observe(&mut self, uuid: &str, seen: Seen, controller_up: bool, now: Duration) {
        match seen {
            Seen::ParkedUnanswered if !controller_up => {
                self.parked.entry(uuid.to_owned()).or_insert(now);
            }
            Seen::ParkedUnanswered => {}
            Seen::Moved => {
                self.parked.remove(uuid);
            }
        }
    }

    /// The controller is back: it gets the buffered CHANNEL_PARKs and
    /// routes those calls itself.
    pub fn controller_up(&mut self) {
        self.parked.clear();
    }

    /// Calls whose wait is over at `now` (each returned once).
    pub fn due(&mut self, now: Duration) -> Vec<String> {
        let due: Vec<String> = self
            .parked
            .iter()
            .filter(|(_, t)| now.saturating_sub(**t) >= self.after)
            .map(|(u, _)| u.clone())
            .collect();
        for u in &due {
            self.parked.remove(u);
        }
        due
    }

    /// Calls waiting.
    pub fn waiting(&self) -> usize {
        self.parked.len()
    }
}

/// Events that move a channel out of its park wait.
const MOVED: &[&str] = &[
    "CHANNEL_UNPARK",
    "CHANNEL_ANSWER",
    "CHANNEL_BRIDGE",
    "CHANNEL_EXECUTE",
    "CHANNEL_HANGUP",
    "CHANNEL_HANGUP_COMPLETE",
    "CHANNEL_DESTROY",
];

/// The fallback looks at events of this name (so their headers need
/// reading).
pub fn watches(name: &str) -> bool {
    name == "CHANNEL_PARK" || MOVED.contains(&name)
}

/// What `name` with these headers means for the fallback (None: nothing).
pub fn classify(name: &str, direction: Option<&str>, answer_state: Option<&str>) -> Option<Seen> {
    match name {
        "CHANNEL_PARK" => {
            let inbound = direction == Some("inbound");
            let answered = answer_state.is_some_and(|a| a == "answered");
            Some(if inbound && !answered {
                Seen::ParkedUnanswered
            } else {
                Seen::Moved
            })
        }
        "CHANNEL_UNPARK"
        | "CHANNEL_ANSWER"
        | "CHANNEL_BRIDGE"
        | "CHANNEL_EXECUTE"
        | "CHANNEL_HANGUP"
        | "CHANNEL_HANGUP_COMPLETE"
        | "CHANNEL_DESTROY" => Some(Seen::Moved),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn a_call_parked_with_no_controller_gets_the_action_after_the_wait() {
        let mut f = Fallback::new(
            S(5),
            FallbackAction::parse("hangup").unwrap_or_else(|e| panic!("{e}")),
        );
        f.observe("a", Seen::ParkedUnanswered, false, S(0));
        f.observe("b", Seen::ParkedUnanswered, false, S(2));
        // Parked while the controller was up: the controller routes it.
        f.observe("c", Seen::ParkedUnanswered, true, S(0));
        assert!(f.due(S(4)).is_empty());
        assert_eq!(f.due(S(5)), vec!["a".to_owned()]);
        // Hung up by the caller before its turn: nothing to do.
        f.observe("b", Seen::Moved, false, S(6));
        assert!(f.due(S(60)).is_empty());
        assert_eq!(
            f.action().command("a"),
            ("uuid_kill", "a SERVICE_UNAVAILABLE".to_owned())
        );
    }

    #[test]
    fn the_controller_coming_back_takes_the_calls_over() {
        let mut f = Fallback::new(S(5), FallbackAction::Transfer("1000 XML default".into()));
        f.observe("a", Seen::ParkedUnanswered, false, S(0));
        f.controller_up();
        assert!(f.due(S(10)).is_empty());
        assert_eq!(
            f.action().command("x"),
            ("uuid_transfer", "x 1000 XML default".to_owned())
        );
    }

    #[test]
    fn actions_parse_and_refuse_command_syntax() {
        assert_eq!(
            FallbackAction::parse("hangup NORMAL_TEMPORARY_FAILURE"),
            Ok(FallbackAction::Hangup("NORMAL_TEMPORARY_FAILURE".into()))
        );
        assert!(FallbackAction::parse("hangup A B").is_err());
        assert!(FallbackAction::parse("transfer 1000 XML default\napi hupall").is_err());
        assert!(FallbackAction::parse("reboot").is_err());
        assert_eq!(
            classify("CHANNEL_PARK", Some("inbound"), Some("ringing")),
            Some(Seen::ParkedUnanswered)
        );
        assert_eq!(
            classify("CHANNEL_PARK", Some("inbound"), Some("answered")),
            Some(Seen::Moved)
        );
        assert_eq!(
            classify("CHANNEL_PARK", Some("outbound"), Some("early")),
            Some(Seen::Moved)
        );
        assert_eq!(classify("HEARTBEAT", None, None), None);
    }
}
