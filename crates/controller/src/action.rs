//! The session actions of `POST /api/v1/sessions/{uuid}/{action}`: one
//! list, from which the route, its error text and the OpenAPI document all
//! derive.

/// An action on a live session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionAction {
    /// `uuid_kill` with `cause` (NORMAL_CLEARING).
    Hangup,
    /// `uuid_answer`.
    Answer,
    /// `uuid_park`.
    Park,
    /// Play `path` on `leg` (aleg).
    Playback,
    /// `uuid_broadcast` of `path` on `leg`.
    Broadcast,
    /// Bridge to `dest_url` (`profile`, `gateway`, `proxy`, `vars`).
    Bridge,
    /// Set `name` to `value`.
    Setvar,
    /// Set every pair of `vars`.
    Setvars,
    /// Unset `name`.
    Unsetvar,
    /// `uuid_record` `action` (start) of `path`.
    Record,
    /// Send `digits`.
    SendDtmf,
    /// Hang up in `secs` with `cause` (ALLOTTED_TIMEOUT).
    SchedHangup,
    /// Deflect to `uri`.
    Deflect,
    /// Respond with SIP `code` (486).
    Respond,
    /// Echo the caller's media back.
    Echo,
    /// Stop what is playing.
    Breakmedia,
}

impl SessionAction {
    /// Every action, in the order documented.
    pub const ALL: [SessionAction; 16] = [
        SessionAction::Hangup,
        SessionAction::Answer,
        SessionAction::Park,
        SessionAction::Playback,
        SessionAction::Broadcast,
        SessionAction::Bridge,
        SessionAction::Setvar,
        SessionAction::Setvars,
        SessionAction::Unsetvar,
        SessionAction::Record,
        SessionAction::SendDtmf,
        SessionAction::SchedHangup,
        SessionAction::Deflect,
        SessionAction::Respond,
        SessionAction::Echo,
        SessionAction::Breakmedia,
    ];

    /// Its name in the URL.
    pub fn name(self) -> &'static str {
        match self {
            SessionAction::Hangup => "hangup",
            SessionAction::Answer => "answer",
            SessionAction::Park => "park",
            SessionAction::Playback => "playback",
            SessionAction::Broadcast => "broadcast",
            SessionAction::Bridge => "bridge",
            SessionAction::Setvar => "setvar",
            SessionAction::Setvars => "setvars",
            SessionAction::Unsetvar => "unsetvar",
            SessionAction::Record => "record",
            SessionAction::SendDtmf => "send_dtmf",
            SessionAction::SchedHangup => "sched_hangup",
            SessionAction::Deflect => "deflect",
            SessionAction::Respond => "respond",
            SessionAction::Echo => "echo",
            SessionAction::Breakmedia => "breakmedia",
        }
    }

    /// The action named `s`.
    pub fn parse(s: &str) -> Option<SessionAction> {
        Self::ALL.into_iter().find(|a| a.name() == s)
    }

    /// Every name, comma-separated (for error texts and docs).
    pub fn names() -> String {
        Self::ALL.map(SessionAction::name).join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_back_and_nothing_else_does() {
        for a in SessionAction::ALL {
            assert_eq!(SessionAction::parse(a.name()), Some(a));
        }
        assert_eq!(SessionAction::parse("Hangup"), None);
        assert_eq!(SessionAction::parse("hangup "), None);
        assert_eq!(SessionAction::names().split(", ").count(), 16);
    }
}
