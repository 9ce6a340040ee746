//! The agent's outbox, sans I/O: the bounded, acknowledged event buffer
//! between ESL and the controller.
//!
//! Events get a sequence number and stay until the controller acknowledges
//! them, so nothing is lost while the controller restarts. When full,
//! periodic noise (HEARTBEAT, RE_SCHEDULE, API …) goes first; a channel
//! event goes only when nothing else is left, and every drop is counted
//! (the caller logs it). The agent wraps this in a lock and a wake-up.

use crate::wire::{WireError, WireEvent, encode_event_batch_into};
use std::collections::VecDeque;

/// Events that only report liveness or housekeeping.
pub fn is_noise(name: &str) -> bool {
    matches!(
        name,
        "HEARTBEAT"
            | "RE_SCHEDULE"
            | "API"
            | "RELOADXML"
            | "MODULE_LOAD"
            | "MODULE_UNLOAD"
            | "LOG"
            | "PRESENCE_IN"
            | "PRESENCE_PROBE"
            | "MESSAGE_QUERY"
            | "SESSION_HEARTBEAT"
    )
}

/// One held event. A noise event dropped to make room becomes a tombstone
/// (payload freed, skipped when sending, removed when it reaches the front),
/// so dropping from the middle of a full buffer costs O(log n), not a scan
/// and a shift of the whole queue.
#[derive(Debug)]
struct Slot {
    noise: bool,
    alive: bool,
    event: WireEvent,
}

/// What making room for a new event cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dropped {
    /// A noise event (the oldest held, or the new one).
    Noise,
    /// The oldest channel event (nothing else was left).
    Channel,
}

/// The result of [`OutboxCore::push`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pushed {
    /// The new event's sequence, None when it was the one dropped.
    pub seq: Option<u64>,
    /// What was dropped to make room, if anything.
    pub dropped: Option<Dropped>,
}

/// The buffer's state.
#[derive(Debug)]
pub struct OutboxCore {
    max: usize,
    max_bytes: usize,
    /// Header and body bytes of the live events.
    bytes: usize,
    events: VecDeque<Slot>,
    /// Sequences of the live noise events, oldest first.
    noise: VecDeque<u64>,
    /// Live (not tombstoned) events.
    live: usize,
    next_seq: u64,
    acked: u64,
    /// Highest sequence handed to the current controller connection, or
    /// None while there is none.
    sent: Option<u64>,
    dropped_noise: u64,
    dropped_channel: u64,
}

impl OutboxCore {
    /// A buffer holding at most `max` live events.
    pub fn new(max: usize) -> Self {
        Self::with_bytes(max, usize::MAX)
    }

    /// A buffer holding at most `max` live events and `max_bytes` of their
    /// headers and bodies.
    pub fn with_bytes(max: usize, max_bytes: usize) -> Self {
        OutboxCore {
            max: max.max(1),
            max_bytes: max_bytes.max(1),
            bytes: 0,
            events: VecDeque::new(),
            noise: VecDeque::new(),
            live: 0,
            next_seq: 0,
            acked: 0,
            sent: None,
            dropped_noise: 0,
            dropped_channel: 0,
        }
    }

    /// Index of the first held slot with a sequence above `after`
    /// (sequences only grow along the queue, so a binary search finds it).
    fn first_after(&self, after: u64) -> usize {
        self.events.partition_point(|s| s.event.seq <= after)
    }

    /// Tombstones the oldest live noise event; false when there is none.
    fn drop_oldest_noise(&mut self) -> bool {
        let Some(seq) = self.noise.pop_front() else {
            return false;
        };
        let i = self.first_after(seq - 1);
        if let Some(slot) = self.events.get_mut(i).filter(|s| s.event.seq == seq) {
            slot.alive = false;
            self.bytes -= size(&slot.event);
            slot.event.headers = Vec::new();
            slot.event.body = None;
            self.live -= 1;
        }
        true
    }

    /// Removes the front slot, keeping the counters right.
    fn pop_front(&mut self) -> Option<Slot> {
        let slot = self.events.pop_front()?;
        if slot.alive {
            self.live -= 1;
            self.bytes -= size(&slot.event);
            if slot.noise && self.noise.front() == Some(&slot.event.seq) {
                self.noise.pop_front();
            }
        }
        Some(slot)
    }

    /// Live events above `after`, in order.
    fn live_after(&self, after: u64) -> impl Iterator<Item = &WireEvent> {
        self.events
            .range(self.first_after(after)..)
            .filter(|s| s.alive)
            .map(|s| &s.event)
    }

    /// Adds an event named `name` (packed headers or plain text, body),
    /// received at `received_us`; makes room first when full.
    pub fn push(
        &mut self,
        name: &str,
        headers: Vec<u8>,
        body: Option<Vec<u8>>,
        plain: bool,
        received_us: u64,
    ) -> Pushed {
        let noise = is_noise(name);
        let new = headers.len() + body.as_ref().map_or(0, Vec::len);
        let mut dropped = None;
        if new > self.max_bytes {
            // Larger than the whole buffer: it cannot be kept.
            let kind = if noise {
                Dropped::Noise
            } else {
                Dropped::Channel
            };
            self.count(kind);
            return Pushed {
                seq: None,
                dropped: Some(kind),
            };
        }
        while self.live >= self.max || self.bytes + new > self.max_bytes {
            if self.drop_oldest_noise() {
                self.dropped_noise += 1;
                dropped = Some(Dropped::Noise);
            } else if noise {
                self.dropped_noise += 1;
                return Pushed {
                    seq: None,
                    dropped: Some(Dropped::Noise),
                };
            } else {
                // Only channel events left: the oldest goes.
                while let Some(slot) = self.pop_front() {
                    if slot.alive {
                        break;
                    }
                }
                self.dropped_channel += 1;
                dropped = Some(Dropped::Channel);
            }
        }
        // Tombstones are reclaimed at the front; if noise keeps the front
        // alive while the middle fills with them, compact now and then.
        if self.events.len() >= 2 * self.max + 1024 {
            self.events.retain(|s| s.alive);
        }
        self.next_seq += 1;
        let seq = self.next_seq;
        self.events.push_back(Slot {
            noise,
            alive: true,
            event: WireEvent {
                seq,
                received_us,
                headers,
                body: body.map(serde_bytes::ByteBuf::from),
                plain,
            },
        });
        self.live += 1;
        self.bytes += new;
        if noise {
            self.noise.push_back(seq);
        }
        Pushed {
            seq: Some(seq),
            dropped,
        }
    }

    /// The controller acknowledged everything up to `upto`.
    pub fn ack(&mut self, upto: u64) {
        while self.events.front().is_some_and(|s| s.event.seq <= upto) {
            self.pop_front();
        }
        self.acked = self.acked.max(upto);
    }

    /// A controller connection starts, resuming after `Some(sequence)`, or
    /// ends (`None`).
    pub fn connect(&mut self, resume_after: Option<u64>) {
        self.sent = resume_after;
    }

    /// Events up to `seq` were handed to the connection.
    pub fn mark_sent(&mut self, seq: u64) {
        if let Some(s) = &mut self.sent {
            *s = (*s).max(seq);
        }
    }

    /// True while a controller is connected and `read_ahead` or more
    /// events wait to be sent to it (ESL reading should pause).
    pub fn behind(&self, read_ahead: usize) -> bool {
        self.sent
            .is_some_and(|s| self.next_seq.saturating_sub(s) >= read_ahead.max(1) as u64)
    }

    /// Up to `max` events with a sequence above `after` (copies).
    pub fn after(&self, after: u64, max: usize) -> Vec<WireEvent> {
        self.live_after(after).take(max).cloned().collect()
    }

    /// Encodes into `out` one `Events` frame of the events above `after`:
    /// up to `max` events and about `max_bytes` of headers and bodies (at
    /// least one event), without cloning. Returns the last sequence in it,
    /// or None when nothing is above `after`.
    pub fn encode_after(
        &self,
        after: u64,
        max: usize,
        max_bytes: usize,
        out: &mut Vec<u8>,
    ) -> Result<Option<u64>, WireError> {
        let mut bytes = 0;
        let batch: Vec<&WireEvent> = self
            .live_after(after)
            .take(max)
            .take_while(|e| {
                let fits = bytes == 0 || bytes < max_bytes;
                bytes += e.headers.len() + e.body.as_ref().map_or(0, |b| b.len());
                fits
            })
            .collect();
        let Some(last) = batch.last().map(|e| e.seq) else {
            return Ok(None);
        };
        encode_event_batch_into(&batch, out)?;
        Ok(Some(last))
    }

    /// [`OutboxCore::encode_after`] the connection's send position, and
    /// advances it; None while no controller is connected or all is sent.
    pub fn encode_unsent(
        &mut self,
        max: usize,
        max_bytes: usize,
        out: &mut Vec<u8>,
    ) -> Result<Option<u64>, WireError> {
        let Some(after) = self.sent else {
            return Ok(None);
        };
        let last = self.encode_after(after, max, max_bytes, out)?;
        if let Some(l) = last {
            self.mark_sent(l);
        }
        Ok(last)
    }

    /// Highest sequence given out (events taken in by this agent process).
    pub fn last_seq(&self) -> u64 {
        self.next_seq
    }

    /// Highest acknowledged sequence.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// Events held.
    pub fn len(&self) -> usize {
        self.live
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// (noise dropped, channel events dropped).
    pub fn dropped(&self) -> (u64, u64) {
        (self.dropped_noise, self.dropped_channel)
    }

    /// Header and body bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    fn count(&mut self, kind: Dropped) {
        match kind {
            Dropped::Noise => self.dropped_noise += 1,
            Dropped::Channel => self.dropped_channel += 1,
        }
    }
}

/// What an event holds in memory (headers and body).
fn size(e: &WireEvent) -> usize {
    e.headers.len() + e.body.as_ref().map_or(0, |b| b.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{AgentMsg, decode, frame_len};

    fn push(o: &mut OutboxCore, name: &str) -> Pushed {
        o.push(name, name.as_bytes().to_vec(), None, true, 0)
    }

    fn names(o: &OutboxCore) -> Vec<String> {
        o.after(0, usize::MAX)
            .iter()
            .map(|e| String::from_utf8_lossy(&e.headers).into_owned())
            .collect()
    }

    #[test]
    fn noise_goes_first_and_channel_drops_are_counted() {
        let mut o = OutboxCore::new(3);
        push(&mut o, "CHANNEL_CREATE");
        push(&mut o, "HEARTBEAT");
        push(&mut o, "CHANNEL_ANSWER");
        let p = push(&mut o, "CHANNEL_HANGUP");
        assert_eq!(
            p,
            Pushed {
                seq: Some(4),
                dropped: Some(Dropped::Noise)
            }
        );
        assert_eq!(
            names(&o),
            ["CHANNEL_CREATE", "CHANNEL_ANSWER", "CHANNEL_HANGUP"]
        );
        assert_eq!(o.dropped(), (1, 0));
        // Full of channel events: a new noise event is the one dropped.
        assert_eq!(
            push(&mut o, "API"),
            Pushed {
                seq: None,
                dropped: Some(Dropped::Noise)
            }
        );
        let p = push(&mut o, "CHANNEL_DESTROY");
        assert_eq!(p.dropped, Some(Dropped::Channel));
        assert_eq!(o.dropped(), (2, 1));
        assert_eq!(
            names(&o),
            ["CHANNEL_ANSWER", "CHANNEL_HANGUP", "CHANNEL_DESTROY"]
        );
        assert_eq!(o.len(), 3);
    }

    #[test]
    fn the_byte_bound_holds_under_a_flood_of_large_events() {
        const MB: usize = 1 << 20;
        let mut o = OutboxCore::with_bytes(200_000, 64 * MB);
        let big = vec![b'x'; MB];
        for i in 0..1_500 {
            let name = if i % 10 == 0 {
                "HEARTBEAT"
            } else {
                "CHANNEL_CREATE"
            };
            o.push(name, big.clone(), Some(vec![0; 100]), true, 0);
            assert!(o.bytes() <= 64 * MB, "{} bytes held after {i}", o.bytes());
        }
        assert_eq!(o.len(), 64 * MB / (MB + 100));
        let (noise, channel) = o.dropped();
        assert_eq!(
            noise + channel + o.len() as u64,
            1_500,
            "every event kept or counted"
        );
        // Acks and drops give the bytes back.
        o.ack(o.last_seq());
        assert_eq!((o.len(), o.bytes()), (0, 0));
        // One event larger than the whole buffer is refused and counted.
        let mut small = OutboxCore::with_bytes(10, 100);
        let p = small.push("CHANNEL_CREATE", vec![0; 101], None, true, 0);
        assert_eq!(
            p,
            Pushed {
                seq: None,
                dropped: Some(Dropped::Channel)
            }
        );
        assert_eq!((small.len(), small.dropped()), (0, (0, 1)));
    }

    #[test]
    fn acks_release_and_resend_starts_after_them() {
        let mut o = OutboxCore::new(10);
        for _ in 0..5 {
            push(&mut o, "CHANNEL_CREATE");
        }
        o.ack(3);
        assert_eq!(o.len(), 2);
        let seqs: Vec<u64> = o.after(o.acked(), 10).iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![4, 5]);
    }

    #[test]
    fn encoded_batches_follow_gaps_and_the_byte_cap() {
        let mut o = OutboxCore::new(6);
        for name in [
            "CHANNEL_CREATE",
            "HEARTBEAT",
            "CHANNEL_ANSWER",
            "CHANNEL_PARK",
        ] {
            push(&mut o, name);
        }
        for _ in 0..3 {
            // Full: the HEARTBEAT (seq 2) goes, leaving a gap in the sequence.
            push(&mut o, "CHANNEL_HANGUP");
        }
        let seqs_of = |out: &[u8]| -> Vec<u64> {
            let n = frame_len([out[0], out[1], out[2], out[3]], usize::MAX).unwrap();
            assert_eq!(n, out.len() - 4);
            match decode::<AgentMsg>(&out[4..]).unwrap() {
                AgentMsg::Events(evs) => evs.iter().map(|e| e.seq).collect(),
                other => panic!("not an Events frame: {other:?}"),
            }
        };
        let mut out = Vec::new();
        assert_eq!(
            o.encode_after(1, 10, usize::MAX, &mut out).unwrap(),
            Some(7)
        );
        assert_eq!(seqs_of(&out), vec![3, 4, 5, 6, 7]);
        // A byte cap smaller than one event still sends one.
        assert_eq!(o.encode_after(3, 10, 1, &mut out).unwrap(), Some(4));
        assert_eq!(seqs_of(&out), vec![4]);
        assert_eq!(o.encode_after(5, 2, usize::MAX, &mut out).unwrap(), Some(7));
        assert_eq!(seqs_of(&out), vec![6, 7]);
        assert_eq!(o.encode_after(7, 10, usize::MAX, &mut out).unwrap(), None);
    }

    #[test]
    fn the_send_position_follows_the_connection() {
        let mut o = OutboxCore::new(100);
        for _ in 0..5 {
            push(&mut o, "CHANNEL_CREATE");
        }
        // Unreachable controller: buffer up to max, never pause reading.
        assert!(!o.behind(3));
        let mut out = Vec::new();
        assert_eq!(
            o.encode_unsent(10, usize::MAX, &mut out).unwrap(),
            None,
            "not connected"
        );
        o.connect(Some(0));
        assert!(o.behind(3));
        assert_eq!(o.encode_unsent(2, usize::MAX, &mut out).unwrap(), Some(2));
        assert!(o.behind(3), "3 still unsent");
        assert_eq!(o.encode_unsent(2, usize::MAX, &mut out).unwrap(), Some(4));
        assert!(!o.behind(3));
        o.mark_sent(1);
        assert!(!o.behind(3), "sent never goes back");
        assert_eq!(o.encode_unsent(10, usize::MAX, &mut out).unwrap(), Some(5));
        assert_eq!(o.encode_unsent(10, usize::MAX, &mut out).unwrap(), None);
        // A new connection resends from what was acknowledged.
        o.ack(2);
        o.connect(Some(o.acked()));
        assert_eq!(o.encode_unsent(10, usize::MAX, &mut out).unwrap(), Some(5));
        o.connect(None);
        assert!(!o.behind(1));
    }

    /// The tombstone bookkeeping against a plain model of the policy (drop
    /// the oldest noise; else a new noise event; else the oldest event).
    #[test]
    fn matches_a_simple_model_under_random_pushes_and_acks() {
        let names = ["CHANNEL_CREATE", "HEARTBEAT", "CHANNEL_ANSWER", "API"];
        let mut o = OutboxCore::new(50);
        let mut model: VecDeque<(u64, bool)> = VecDeque::new();
        let (mut next, mut acked) = (0u64, 0u64);
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            if rng.is_multiple_of(7) {
                let upto = acked + rng % 20;
                o.ack(upto);
                while model.front().is_some_and(|(s, _)| *s <= upto) {
                    model.pop_front();
                }
                acked = acked.max(upto);
                continue;
            }
            let name = names[(rng >> 8) as usize % names.len()];
            let noise = is_noise(name);
            push(&mut o, name);
            if model.len() >= 50 {
                if let Some(p) = model.iter().position(|(_, n)| *n) {
                    model.remove(p);
                } else if noise {
                    continue;
                } else {
                    model.pop_front();
                }
            }
            next += 1;
            model.push_back((next, noise));
        }
        let held: Vec<u64> = o.after(0, usize::MAX).iter().map(|e| e.seq).collect();
        let want: Vec<u64> = model.iter().map(|(s, _)| *s).collect();
        assert_eq!(held, want);
        assert_eq!(o.len(), want.len());
    }
}
