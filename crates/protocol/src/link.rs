//! The agent ⇄ controller link's protocol state, sans I/O: what each side
//! decides, given what arrived, with no sockets, clocks or tasks (the
//! agent and the controller drive these from their QUIC loops).
//!
//! - [`NodeLink`], the controller's per-node state: the Hello checks, the
//!   de-duplication of events an agent re-sends after a reconnect
//!   (`agent_instance`, the highest sequence applied), and the Ack to send.
//! - [`Backoff`] and [`Backoff::after_session`], the agent's reconnect
//!   policy: capped exponential backoff with full jitter, reset by a
//!   session the controller welcomed.
//!
//! - [`agent::AgentLink`], the agent's side: Hello, Welcome, what to send
//!   next (status, event frames, snapshots, heartbeats), Acks and resend,
//!   and the reconnect delay.
//! - [`outbox::OutboxCore`], the agent's bounded, acknowledged event buffer
//!   (sequence numbers, resend after the acknowledged sequence, bounded
//!   reading).

pub mod agent;
pub mod outbox;

use crate::wire::{Hello, WIRE_VERSION, WireEvent};
use std::time::Duration;

/// Why a controller refuses an agent's Hello.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The two sides speak different wire versions.
    #[error(
        "wire protocol version mismatch: agent speaks {agent}, controller speaks {controller}; upgrade the older side"
    )]
    Version {
        /// The agent's.
        agent: u32,
        /// The controller's.
        controller: u32,
    },
    /// The Hello names another node than the certificate.
    #[error("agent says it is {said:?} but its certificate names {cert:?}; fix node_id")]
    Identity {
        /// What the Hello says.
        said: String,
        /// What the certificate says.
        cert: String,
    },
}

/// What the controller knows of one node's event stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeLink {
    /// The agent process whose sequence numbers `applied` counts.
    pub instance: String,
    /// Highest sequence applied from that process.
    pub applied: u64,
}

/// A batch split into what to apply and what was seen before.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Accepted {
    /// Events not applied yet, in order.
    pub fresh: Vec<WireEvent>,
    /// Re-sent events already applied (skipped).
    pub duplicates: u64,
    /// The Ack to send once `fresh` is applied: the batch's last sequence.
    pub ack: Option<u64>,
}

impl NodeLink {
    /// Checks a Hello that came with a certificate naming `cert_node`. A new
    /// agent process (another `agent_instance`) numbers its events from 1
    /// again: what was applied from the old one no longer de-duplicates.
    /// Returns true when the agent is the same process as before (its
    /// re-sent events will overlap what was applied).
    pub fn hello(&mut self, hello: &Hello, cert_node: &str) -> Result<bool, Refusal> {
        Self::check(hello, cert_node)?;
        if self.instance == hello.agent_instance {
            return Ok(true);
        }
        self.instance = hello.agent_instance.clone();
        self.applied = 0;
        Ok(false)
    }

    /// The checks of [`NodeLink::hello`] that need no state: the wire
    /// version and the identity.
    pub fn check(hello: &Hello, cert_node: &str) -> Result<(), Refusal> {
        if hello.wire_version != WIRE_VERSION {
            return Err(Refusal::Version {
                agent: hello.wire_version,
                controller: WIRE_VERSION,
            });
        }
        if hello.node_id != cert_node {
            return Err(Refusal::Identity {
                said: hello.node_id.clone(),
                cert: cert_node.to_owned(),
            });
        }
        Ok(())
    }

    /// Splits a batch into events to apply and duplicates. Sequences only
    /// grow within a process, so anything at or below the last applied (or
    /// an earlier event of this batch) was seen.
    pub fn accept(&self, batch: Vec<WireEvent>) -> Accepted {
        let ack = batch.last().map(|e| e.seq);
        let mut last = self.applied;
        let mut out = Accepted {
            ack,
            ..Accepted::default()
        };
        for e in batch {
            if e.seq <= last {
                out.duplicates += 1;
                continue;
            }
            last = e.seq;
            out.fresh.push(e);
        }
        out
    }

    /// Records that events up to `seq` were applied.
    pub fn applied(&mut self, seq: u64) {
        self.applied = self.applied.max(seq);
    }
}

/// Capped exponential backoff with full jitter (xorshift from a seed, so
/// a test sees the same delays every time).
#[derive(Clone, Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    cur: Duration,
    rng: u64,
}

impl Backoff {
    /// Delays from about `min` doubling up to `max`; `seed` picks the
    /// jitter (any value; the agent uses its clock).
    pub fn new(min: Duration, max: Duration, seed: u64) -> Self {
        Backoff {
            min,
            max: max.max(min),
            cur: min,
            rng: seed | 1,
        }
    }

    /// The next delay: between half and all of the current cap, which then
    /// doubles (up to `max`).
    pub fn next_delay(&mut self) -> Duration {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let cap = self.cur.as_millis().max(1) as u64;
        let d = Duration::from_millis(cap / 2 + self.rng % (cap / 2 + 1));
        self.cur = (self.cur * 2).min(self.max);
        d
    }

    /// Back to the minimum.
    pub fn reset(&mut self) {
        self.cur = self.min;
    }

    /// The wait before reconnecting after a session. One the controller
    /// welcomed was healthy: whatever ended it, reconnect at the minimum
    /// delay (a restarted controller gets its agents back at once); back
    /// off only while attempts fail.
    pub fn after_session(&mut self, welcomed: bool) -> Duration {
        if welcomed {
            self.reset();
        }
        self.next_delay()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(node: &str, instance: &str) -> Hello {
        Hello {
            wire_version: WIRE_VERSION,
            node_id: node.into(),
            agent_version: "t".into(),
            agent_instance: instance.into(),
            hostname: None,
            core_uuid: None,
            fs_version: None,
            profiles: Vec::new(),
            resend_from: 0,
        }
    }

    fn ev(seq: u64) -> WireEvent {
        WireEvent {
            seq,
            received_us: seq,
            headers: Vec::new(),
            body: None,
            plain: true,
        }
    }

    fn seqs(a: &Accepted) -> Vec<u64> {
        a.fresh.iter().map(|e| e.seq).collect()
    }

    #[test]
    fn a_reconnect_resends_and_only_the_unseen_events_apply() {
        let mut n = NodeLink::default();
        assert_eq!(n.hello(&hello("fs1", "p1"), "fs1"), Ok(false));
        let a = n.accept((1..=5).map(ev).collect());
        assert_eq!(
            (seqs(&a), a.duplicates, a.ack),
            (vec![1, 2, 3, 4, 5], 0, Some(5))
        );
        n.applied(5);
        // The connection drops before the Ack of 4..=5 reached the agent
        // (it had acknowledged 3): it re-sends 4.. after reconnecting.
        assert_eq!(n.hello(&hello("fs1", "p1"), "fs1"), Ok(true));
        let a = n.accept((4..=8).map(ev).collect());
        assert_eq!((seqs(&a), a.duplicates, a.ack), (vec![6, 7, 8], 2, Some(8)));
        n.applied(8);
        // A batch entirely seen is still acknowledged (the agent frees it).
        let a = n.accept((7..=8).map(ev).collect());
        assert_eq!((a.fresh.len(), a.duplicates, a.ack), (0, 2, Some(8)));
    }

    #[test]
    fn a_restarted_agent_numbers_from_one_again() {
        let mut n = NodeLink::default();
        n.hello(&hello("fs1", "p1"), "fs1").unwrap();
        n.applied(1000);
        assert_eq!(n.hello(&hello("fs1", "p2"), "fs1"), Ok(false));
        let a = n.accept((1..=3).map(ev).collect());
        assert_eq!((seqs(&a), a.duplicates), (vec![1, 2, 3], 0));
    }

    #[test]
    fn duplicates_inside_a_batch_are_skipped() {
        let n = NodeLink::default();
        let a = n.accept([1, 2, 2, 3, 1].into_iter().map(ev).collect());
        assert_eq!((seqs(&a), a.duplicates, a.ack), (vec![1, 2, 3], 2, Some(1)));
    }

    #[test]
    fn wrong_version_or_identity_is_refused_and_changes_nothing() {
        let mut n = NodeLink::default();
        n.hello(&hello("fs1", "p1"), "fs1").unwrap();
        n.applied(9);
        let mut old = hello("fs1", "p2");
        old.wire_version = WIRE_VERSION - 1;
        let e = n.hello(&old, "fs1").unwrap_err();
        assert!(e.to_string().contains("upgrade the older side"), "{e}");
        let e = n.hello(&hello("fs2", "p2"), "fs1").unwrap_err();
        assert!(matches!(e, Refusal::Identity { .. }), "{e}");
        assert_eq!((n.instance.as_str(), n.applied), ("p1", 9));
    }

    /// The reconnect policy on simulated time: each failed attempt waits
    /// longer (up to the cap); a welcomed session that is then lost (its
    /// send loop always ends in an error) reconnects at the minimum.
    #[test]
    fn backoff_grows_while_failing_and_resets_after_a_welcome() {
        let (min, max) = (Duration::from_millis(200), Duration::from_secs(10));
        let mut b = Backoff::new(min, max, 42);
        let mut now = Duration::ZERO;
        let mut waits = Vec::new();
        for _ in 0..10 {
            let d = b.after_session(false);
            now += d;
            waits.push(d);
        }
        assert!(waits[0] >= min / 2 && waits[0] <= min, "{waits:?}");
        assert!(
            waits.windows(2).take(5).all(|w| w[1] >= w[0] / 2),
            "{waits:?}"
        );
        assert!(waits[9] >= max / 2 && waits[9] <= max, "{waits:?}");
        assert!(now > Duration::from_secs(20), "ten failures took {now:?}");
        for _ in 0..50 {
            let d = b.after_session(true);
            assert!(d >= min / 2 && d <= min, "{d:?}");
        }
        // The same seed, the same delays.
        let mut c = Backoff::new(min, max, 42);
        assert_eq!(c.after_session(false), waits[0]);
    }
}
