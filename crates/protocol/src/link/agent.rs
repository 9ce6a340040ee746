//! The agent's side of the link, sans I/O: what to send the controller
//! next and what its messages mean, given the time and what arrived.
//!
//! The agent's driver owns the socket: it opens a connection, writes the
//! [`AgentLink::hello`], feeds the first reply to [`AgentLink::welcome`] and
//! later ones to [`AgentLink::receive`], and writes what
//! [`AgentLink::poll_transmit`] returns until nothing is due (then it waits
//! for new events, a status change or [`AgentLink::poll_timeout`]). When the
//! connection ends it asks [`AgentLink::closed`] how long to wait before the
//! next. Everything here is deterministic: time is a [`Duration`] since any
//! origin the driver picks, so tests run on simulated time.

use super::Backoff;
use super::outbox::OutboxCore;
use crate::wire::{ControllerMsg, EslState, Hello, WireError};
use std::time::Duration;

/// Where the link is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkState {
    /// No connection.
    Disconnected,
    /// Hello written, waiting for Welcome (or Refused).
    AwaitingWelcome,
    /// Welcomed: events flow.
    Streaming,
}

/// Which channels the next snapshot describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SnapshotScope {
    /// Only channels older than the ESL event connection (the rest are
    /// known from their own events): FreeSWITCH's channel list lags, so a
    /// second snapshot a few seconds after a reconnect settles them.
    OlderThanEsl,
    /// Every channel (the controller may know none of them).
    All,
}

/// What the driver should write (or do) next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transmit {
    /// The ESL state changed: send `AgentMsg::Status`.
    Status(EslState),
    /// One `Events` frame was encoded into the buffer given to
    /// [`AgentLink::poll_transmit`], up to this sequence: write it.
    Events(u64),
    /// Take a channel snapshot and send it (on failure, call
    /// [`AgentLink::snapshot_failed`]).
    Snapshot(SnapshotScope),
    /// Send `AgentMsg::Heartbeat`.
    Heartbeat,
}

/// Why a connection cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The controller refused this agent.
    #[error("the controller refused this agent: {0}")]
    Refused(String),
    /// The controller speaks another wire version.
    #[error(
        "wire protocol version mismatch: controller speaks {controller}, this agent {agent}; upgrade the older side"
    )]
    Version {
        /// The controller's.
        controller: u32,
        /// The agent's.
        agent: u32,
    },
    /// The first reply was not a Welcome.
    #[error("unexpected first controller message {0}")]
    Unexpected(String),
    /// An event batch could not be encoded.
    #[error(transparent)]
    Wire(#[from] WireError),
}

/// The agent's link state.
#[derive(Debug)]
pub struct AgentLink {
    /// The event buffer.
    pub outbox: OutboxCore,
    state: LinkState,
    backoff: Backoff,
    /// The current (or last) connection was welcomed.
    welcomed: bool,
    snapshot: Option<SnapshotScope>,
    last_status: Option<EslState>,
    heartbeat: Duration,
    next_heartbeat: Option<Duration>,
}

impl AgentLink {
    /// A link buffering up to `max_events`, reconnecting per `backoff`,
    /// sending a heartbeat every `heartbeat` while connected.
    pub fn new(max_events: usize, backoff: Backoff, heartbeat: Duration) -> Self {
        Self::with_outbox(OutboxCore::new(max_events), backoff, heartbeat)
    }

    /// As [`AgentLink::new`] with a given buffer (bounded in bytes too).
    pub fn with_outbox(outbox: OutboxCore, backoff: Backoff, heartbeat: Duration) -> Self {
        AgentLink {
            outbox,
            state: LinkState::Disconnected,
            backoff,
            welcomed: false,
            // A new process: the controller may know none of its channels.
            snapshot: Some(SnapshotScope::All),
            last_status: None,
            heartbeat: heartbeat.max(Duration::from_millis(1)),
            next_heartbeat: None,
        }
    }

    /// Where the link is.
    pub fn state(&self) -> LinkState {
        self.state
    }

    /// The Hello for a new connection: `hello` with the sequence to resend
    /// after (the last acknowledged one).
    pub fn hello(&mut self, mut hello: Hello) -> Hello {
        hello.resend_from = self.outbox.acked();
        self.state = LinkState::AwaitingWelcome;
        self.welcomed = false;
        hello
    }

    /// The controller's first reply. A Welcome starts streaming (everything
    /// unacknowledged is sent again, then a full snapshot) and returns the
    /// events the controller wants subscribed.
    pub fn welcome(
        &mut self,
        now: Duration,
        msg: ControllerMsg,
        wire_version: u32,
    ) -> Result<Vec<String>, LinkError> {
        match msg {
            ControllerMsg::Welcome {
                wire_version: theirs,
                events,
                ..
            } => {
                if theirs != wire_version {
                    return Err(LinkError::Version {
                        controller: theirs,
                        agent: wire_version,
                    });
                }
                self.state = LinkState::Streaming;
                self.welcomed = true;
                self.outbox.connect(Some(self.outbox.acked()));
                self.request_snapshot(SnapshotScope::All);
                self.last_status = None;
                self.next_heartbeat = Some(now + self.heartbeat);
                Ok(events)
            }
            ControllerMsg::Refused { reason } => Err(LinkError::Refused(reason)),
            other => Err(LinkError::Unexpected(format!("{other:?}"))),
        }
    }

    /// A later controller message: an Ack releases events; a resync
    /// request asks for a full snapshot.
    pub fn receive(&mut self, msg: ControllerMsg) {
        match msg {
            ControllerMsg::Ack { upto } => self.outbox.ack(upto),
            ControllerMsg::ResyncRequest => self.request_snapshot(SnapshotScope::All),
            _ => {}
        }
    }

    /// Asks for a snapshot (a wider request wins over a narrower one).
    pub fn request_snapshot(&mut self, scope: SnapshotScope) {
        self.snapshot = Some(self.snapshot.map_or(scope, |s| s.max(scope)));
    }

    /// The snapshot [`Transmit::Snapshot`] asked for could not be taken:
    /// ask again.
    pub fn snapshot_failed(&mut self, scope: SnapshotScope) {
        self.request_snapshot(scope);
    }

    /// What to send next while streaming, at `now` with the ESL state
    /// `status`: a status change first, then buffered events in order (one
    /// frame of up to `max_events` / about `max_bytes`, encoded into
    /// `out`), then a snapshot, then a due heartbeat. None: nothing is due.
    pub fn poll_transmit(
        &mut self,
        now: Duration,
        status: &EslState,
        max_events: usize,
        max_bytes: usize,
        out: &mut Vec<u8>,
    ) -> Result<Option<Transmit>, LinkError> {
        if self.state != LinkState::Streaming {
            return Ok(None);
        }
        if self.last_status.as_ref() != Some(status) {
            self.last_status = Some(status.clone());
            return Ok(Some(Transmit::Status(status.clone())));
        }
        if let Some(last) = self.outbox.encode_unsent(max_events, max_bytes, out)? {
            return Ok(Some(Transmit::Events(last)));
        }
        if let Some(scope) = self.snapshot.take() {
            return Ok(Some(Transmit::Snapshot(scope)));
        }
        if self.next_heartbeat.is_some_and(|t| now >= t) {
            self.next_heartbeat = Some(now + self.heartbeat);
            return Ok(Some(Transmit::Heartbeat));
        }
        Ok(None)
    }

    /// When [`AgentLink::poll_transmit`] has something due without new
    /// input (the next heartbeat).
    pub fn poll_timeout(&self) -> Option<Duration> {
        match self.state {
            LinkState::Streaming => self.next_heartbeat,
            _ => None,
        }
    }

    /// The connection ended (or never came up): returns how long to wait
    /// before the next attempt (the minimum after a welcomed session).
    pub fn closed(&mut self) -> Duration {
        self.state = LinkState::Disconnected;
        self.outbox.connect(None);
        self.next_heartbeat = None;
        self.backoff.after_session(self.welcomed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::NodeLink;
    use crate::wire::{AgentMsg, WIRE_VERSION, decode, frame_len};

    const MS: Duration = Duration::from_millis(1);

    fn link() -> AgentLink {
        AgentLink::new(
            1000,
            Backoff::new(100 * MS, 5000 * MS, 7),
            Duration::from_secs(1),
        )
    }

    fn hello() -> Hello {
        Hello {
            wire_version: WIRE_VERSION,
            node_id: "fs1".into(),
            agent_version: "test".into(),
            agent_instance: "agent-1".into(),
            hostname: None,
            core_uuid: None,
            fs_version: None,
            profiles: Vec::new(),
            resend_from: 0,
        }
    }

    fn welcome() -> ControllerMsg {
        ControllerMsg::Welcome {
            wire_version: WIRE_VERSION,
            controller_id: "c1".into(),
            events: vec!["CHANNEL_CREATE".into()],
        }
    }

    fn push(l: &mut AgentLink, name: &str, n: usize) {
        for _ in 0..n {
            l.outbox.push(name, name.as_bytes().to_vec(), None, true, 0);
        }
    }

    fn events(out: &[u8]) -> Vec<crate::wire::WireEvent> {
        let n = frame_len([out[0], out[1], out[2], out[3]], usize::MAX).unwrap();
        assert_eq!(n, out.len() - 4);
        match decode::<AgentMsg>(&out[4..]).unwrap() {
            AgentMsg::Events(e) => e,
            other => panic!("not an Events frame: {other:?}"),
        }
    }

    /// Drains what is due at `now`; Events frames are decoded.
    fn drain(
        l: &mut AgentLink,
        now: Duration,
        status: &EslState,
    ) -> Vec<Result<Transmit, Vec<u64>>> {
        let mut got = Vec::new();
        let mut out = Vec::new();
        while let Some(t) = l
            .poll_transmit(now, status, 3, usize::MAX, &mut out)
            .unwrap()
        {
            match t {
                Transmit::Events(_) => got.push(Err(events(&out).iter().map(|e| e.seq).collect())),
                t => got.push(Ok(t)),
            }
        }
        got
    }

    fn up() -> EslState {
        EslState::Up {
            core_uuid: "core".into(),
            hostname: "h".into(),
            profiles: Vec::new(),
        }
    }

    #[test]
    fn a_session_sends_status_events_in_frames_a_snapshot_then_heartbeats() {
        let mut l = link();
        push(&mut l, "CHANNEL_CREATE", 5);
        assert_eq!(
            l.poll_transmit(MS, &up(), 3, usize::MAX, &mut Vec::new())
                .unwrap(),
            None,
            "nothing before Welcome"
        );
        let h = l.hello(hello());
        assert_eq!((h.resend_from, l.state()), (0, LinkState::AwaitingWelcome));
        assert_eq!(
            l.welcome(MS, welcome(), WIRE_VERSION).unwrap(),
            vec!["CHANNEL_CREATE".to_string()]
        );
        assert_eq!(
            drain(&mut l, MS, &up()),
            vec![
                Ok(Transmit::Status(up())),
                Err(vec![1, 2, 3]),
                Err(vec![4, 5]),
                Ok(Transmit::Snapshot(SnapshotScope::All)),
            ]
        );
        assert_eq!(l.poll_timeout(), Some(1001 * MS));
        assert!(
            drain(&mut l, 1000 * MS, &up()).is_empty(),
            "the heartbeat is not due yet"
        );
        assert_eq!(
            drain(&mut l, 1001 * MS, &up()),
            vec![Ok(Transmit::Heartbeat)]
        );
        assert_eq!(l.poll_timeout(), Some(2001 * MS));
        // New events and a status change go out at once, status first.
        push(&mut l, "CHANNEL_ANSWER", 1);
        let down = EslState::Down("gone".into());
        assert_eq!(
            drain(&mut l, 1002 * MS, &down),
            vec![Ok(Transmit::Status(down)), Err(vec![6])]
        );
    }

    /// Reconnect and resend, on simulated time: what the controller did not
    /// acknowledge is sent again after the next Welcome, the controller's
    /// NodeLink drops what it had applied, and a welcomed session makes the
    /// next attempt come at the minimum delay.
    #[test]
    fn unacknowledged_events_are_resent_and_deduplicated_after_a_reconnect() {
        let mut l = link();
        let mut ctl = NodeLink::default();
        push(&mut l, "CHANNEL_CREATE", 6);
        let h = l.hello(hello());
        assert!(!ctl.hello(&h, "fs1").unwrap(), "a new agent process");
        l.welcome(MS, welcome(), WIRE_VERSION).unwrap();
        let mut out = Vec::new();
        let mut applied = Vec::new();
        // Two frames reach the controller and are applied; only the first
        // is acknowledged before the connection drops.
        for ack in [true, false] {
            loop {
                match l.poll_transmit(MS, &up(), 3, usize::MAX, &mut out).unwrap() {
                    Some(Transmit::Events(last)) => {
                        let a = ctl.accept(events(&out));
                        applied.extend(a.fresh.iter().map(|e| e.seq));
                        ctl.applied(last);
                        if ack {
                            l.receive(ControllerMsg::Ack { upto: last });
                        }
                        break;
                    }
                    Some(_) => continue,
                    None => panic!("no events to send"),
                }
            }
        }
        assert_eq!(applied, vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(l.outbox.len(), 3, "the unacknowledged frame is kept");
        let delay = l.closed();
        assert!(
            delay <= 100 * MS,
            "a welcomed session: the minimum delay, got {delay:?}"
        );
        assert_eq!(l.state(), LinkState::Disconnected);
        // Failed attempts back off (never past the cap); a welcomed one resets.
        l.hello(hello());
        let d1 = l.closed();
        l.hello(hello());
        let d2 = l.closed();
        assert!(
            d1 <= 200 * MS && d2 <= 400 * MS && d2 >= 100 * MS,
            "{d1:?} {d2:?}"
        );
        // Reconnected: the same process resends after what was acknowledged.
        let h = l.hello(hello());
        assert_eq!(h.resend_from, 3);
        assert!(ctl.hello(&h, "fs1").unwrap(), "the same agent process");
        l.welcome(10 * MS, welcome(), WIRE_VERSION).unwrap();
        push(&mut l, "CHANNEL_HANGUP", 1);
        let mut fresh = Vec::new();
        let mut dups = 0;
        while let Some(t) = l
            .poll_transmit(10 * MS, &up(), 3, usize::MAX, &mut out)
            .unwrap()
        {
            if let Transmit::Events(last) = t {
                let a = ctl.accept(events(&out));
                dups += a.duplicates;
                fresh.extend(a.fresh.iter().map(|e| e.seq));
                ctl.applied(last);
                l.receive(ControllerMsg::Ack { upto: last });
            }
        }
        assert_eq!(
            (fresh, dups),
            (vec![7], 3),
            "4-6 re-sent and skipped, 7 new"
        );
        assert!(l.outbox.is_empty());
        assert!(l.closed() <= 100 * MS);
    }

    #[test]
    fn refusals_and_version_mismatches_end_the_attempt() {
        let mut l = link();
        l.hello(hello());
        let r = l.welcome(
            MS,
            ControllerMsg::Refused {
                reason: "no".into(),
            },
            WIRE_VERSION,
        );
        assert!(
            matches!(r, Err(LinkError::Refused(ref m)) if m == "no"),
            "{r:?}"
        );
        let d = l.closed();
        l.hello(hello());
        let other = ControllerMsg::Welcome {
            wire_version: WIRE_VERSION + 1,
            controller_id: "c".into(),
            events: Vec::new(),
        };
        assert!(matches!(
            l.welcome(MS, other, WIRE_VERSION),
            Err(LinkError::Version { .. })
        ));
        assert!(
            l.closed() >= d / 2,
            "a refused session does not reset the backoff"
        );
        l.hello(hello());
        assert!(matches!(
            l.welcome(MS, ControllerMsg::Ack { upto: 1 }, WIRE_VERSION),
            Err(LinkError::Unexpected(_))
        ));
    }

    #[test]
    fn snapshot_requests_merge_and_a_failed_one_is_asked_again() {
        let mut l = link();
        l.hello(hello());
        l.welcome(MS, welcome(), WIRE_VERSION).unwrap();
        assert_eq!(
            drain(&mut l, MS, &up()),
            vec![
                Ok(Transmit::Status(up())),
                Ok(Transmit::Snapshot(SnapshotScope::All))
            ]
        );
        // The second snapshot after an ESL reconnect, then a resync request:
        // one full snapshot.
        l.request_snapshot(SnapshotScope::OlderThanEsl);
        l.receive(ControllerMsg::ResyncRequest);
        l.request_snapshot(SnapshotScope::OlderThanEsl);
        assert_eq!(
            drain(&mut l, MS, &up()),
            vec![Ok(Transmit::Snapshot(SnapshotScope::All))]
        );
        l.request_snapshot(SnapshotScope::OlderThanEsl);
        assert_eq!(
            drain(&mut l, MS, &up()),
            vec![Ok(Transmit::Snapshot(SnapshotScope::OlderThanEsl))]
        );
        l.snapshot_failed(SnapshotScope::OlderThanEsl);
        assert_eq!(
            drain(&mut l, MS, &up()),
            vec![Ok(Transmit::Snapshot(SnapshotScope::OlderThanEsl))]
        );
    }
}
