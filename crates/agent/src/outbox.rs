//! The bounded, acknowledged event buffer between ESL and the controller.
//!
//! Events get a sequence number and stay here until the controller
//! acknowledges them, so nothing is lost while the controller restarts.
//! When full, periodic noise (HEARTBEAT, RE_SCHEDULE, API …) is dropped
//! first; a channel event is dropped only when nothing else is left, and
//! every drop is counted and logged.

use crate::esl::RelayEvent;
use std::collections::VecDeque;
use std::sync::Mutex;
use switchy_protocol::wire::WireEvent;
use tokio::sync::Notify;

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

#[derive(Debug, Default)]
struct Inner {
    events: VecDeque<Slot>,
    /// Sequences of the live noise events, oldest first.
    noise: VecDeque<u64>,
    /// Live (not tombstoned) events.
    live: usize,
    next_seq: u64,
    acked: u64,
    /// Highest sequence written to the current controller connection, or
    /// None while there is none.
    sent: Option<u64>,
    dropped_noise: u64,
    dropped_channel: u64,
}

impl Inner {
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
}

/// The buffer.
#[derive(Debug)]
pub struct Outbox {
    inner: Mutex<Inner>,
    max: usize,
    read_ahead: usize,
    /// Woken when events arrive.
    pub notify: Notify,
    /// Woken when events were sent or the connection went away.
    drained: Notify,
}

impl Outbox {
    /// A buffer holding at most `max` events, which asks ESL reading to
    /// wait while `read_ahead` events are unsent to a connected controller.
    pub fn new(max: usize, read_ahead: usize) -> Self {
        Outbox {
            inner: Mutex::new(Inner::default()),
            max: max.max(1),
            read_ahead: read_ahead.max(1),
            notify: Notify::new(),
            drained: Notify::new(),
        }
    }

    /// A controller connection starts (`Some(sequence it resumes after)`)
    /// or ends (`None`).
    pub fn set_connected(&self, resume_after: Option<u64>) {
        self.lock().sent = resume_after;
        self.drained.notify_waiters();
    }

    /// Events up to `seq` were written to the controller.
    pub fn mark_sent(&self, seq: u64) {
        let mut g = self.lock();
        if let Some(s) = &mut g.sent {
            *s = (*s).max(seq);
        }
        drop(g);
        self.drained.notify_waiters();
    }

    /// True while a controller is connected and `read_ahead` or more
    /// events wait to be sent to it.
    pub fn behind(&self) -> bool {
        let g = self.lock();
        g.sent
            .is_some_and(|s| g.next_seq.saturating_sub(s) >= self.read_ahead as u64)
    }

    /// Waits until [`Outbox::behind`] is false (ESL reading stops meanwhile,
    /// which FreeSWITCH sees as TCP backpressure).
    pub async fn wait_not_behind(&self) {
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if !self.behind() {
                return;
            }
            drained.await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds an event (received now).
    pub fn push(&self, e: RelayEvent) {
        let noise = is_noise(&e.name);
        let mut g = self.lock();
        if g.live >= self.max {
            if g.drop_oldest_noise() {
                g.dropped_noise += 1;
            } else if noise {
                g.dropped_noise += 1;
                return;
            } else {
                // Only channel events left: the oldest goes.
                while let Some(slot) = g.pop_front() {
                    if slot.alive {
                        break;
                    }
                }
                g.dropped_channel += 1;
                tracing::error!(
                    dropped = g.dropped_channel,
                    "event buffer full of channel events: the oldest was dropped; raise [buffer] max_events or bring the controller back"
                );
            }
        }
        // Tombstones are reclaimed at the front; if noise keeps the front
        // alive while the middle fills with them, compact now and then.
        if g.events.len() >= 2 * self.max + 1024 {
            g.events.retain(|s| s.alive);
        }
        g.next_seq += 1;
        let seq = g.next_seq;
        let (headers, plain) = (e.packed, e.plain);
        let body = e.body.map(serde_bytes::ByteBuf::from);
        g.events.push_back(Slot {
            noise,
            alive: true,
            event: WireEvent {
                seq,
                received_us: now_us(),
                headers,
                body,
                plain,
            },
        });
        g.live += 1;
        if noise {
            g.noise.push_back(seq);
        }
        drop(g);
        self.notify.notify_one();
    }

    /// The controller applied everything up to `upto`.
    pub fn ack(&self, upto: u64) {
        let mut g = self.lock();
        while g.events.front().is_some_and(|s| s.event.seq <= upto) {
            g.pop_front();
        }
        g.acked = g.acked.max(upto);
    }

    /// Up to `max` events with a sequence above `after`.
    pub fn after(&self, after: u64, max: usize) -> Vec<WireEvent> {
        let g = self.lock();
        g.live_after(after).take(max).cloned().collect()
    }

    /// Encodes into `out` one `Events` frame of the events above `after`:
    /// up to `max` events and about `max_bytes` of headers and bodies (at
    /// least one event). Encoded under the lock, without cloning. Returns
    /// the last sequence in it, or None when nothing is above `after`.
    pub fn encode_after(
        &self,
        after: u64,
        max: usize,
        max_bytes: usize,
        out: &mut Vec<u8>,
    ) -> Option<u64> {
        Self::encode(&self.lock(), after, max, max_bytes, out)
    }

    /// [`Outbox::encode_after`] the connection's send position (the
    /// acknowledged sequence given to [`Outbox::set_connected`], then what
    /// [`Outbox::mark_sent`] reported); None while no controller is
    /// connected.
    pub fn encode_unsent(&self, max: usize, max_bytes: usize, out: &mut Vec<u8>) -> Option<u64> {
        let g = self.lock();
        Self::encode(&g, g.sent?, max, max_bytes, out)
    }

    fn encode(
        g: &Inner,
        after: u64,
        max: usize,
        max_bytes: usize,
        out: &mut Vec<u8>,
    ) -> Option<u64> {
        let mut bytes = 0;
        let batch: Vec<&WireEvent> = g
            .live_after(after)
            .take(max)
            .take_while(|e| {
                let fits = bytes == 0 || bytes < max_bytes;
                bytes += e.headers.len() + e.body.as_ref().map_or(0, |b| b.len());
                fits
            })
            .collect();
        let last = batch.last()?.seq;
        match switchy_protocol::wire::encode_event_batch_into(&batch, out) {
            Ok(()) => Some(last),
            Err(e) => {
                tracing::error!(error = %e, "cannot encode an event batch");
                None
            }
        }
    }

    /// Highest sequence given out (events taken in by this agent process).
    pub fn last_seq(&self) -> u64 {
        self.lock().next_seq
    }

    /// Highest acknowledged sequence.
    pub fn acked(&self) -> u64 {
        self.lock().acked
    }

    /// Events held.
    pub fn len(&self) -> usize {
        self.lock().live
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// (noise dropped, channel events dropped).
    pub fn dropped(&self) -> (u64, u64) {
        let g = self.lock();
        (g.dropped_noise, g.dropped_channel)
    }
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchy_protocol::esl::Event;

    fn ev(name: &str) -> RelayEvent {
        RelayEvent::from_event(&Event::new(name))
    }

    #[test]
    fn noise_goes_first_and_channel_drops_are_counted() {
        let o = Outbox::new(3, 100);
        o.push(ev("CHANNEL_CREATE"));
        o.push(ev("HEARTBEAT"));
        o.push(ev("CHANNEL_ANSWER"));
        o.push(ev("CHANNEL_HANGUP"));
        let names: Vec<Vec<u8>> = o
            .after(0, 10)
            .into_iter()
            .map(|e| {
                switchy_protocol::wire::unpack_headers(&e.headers).unwrap()[0]
                    .1
                    .to_vec()
            })
            .collect();
        assert_eq!(
            names,
            vec![
                b"CHANNEL_CREATE".to_vec(),
                b"CHANNEL_ANSWER".to_vec(),
                b"CHANNEL_HANGUP".to_vec()
            ]
        );
        assert_eq!(o.dropped(), (1, 0));
        o.push(ev("CHANNEL_DESTROY"));
        assert_eq!(o.dropped(), (1, 1));
        assert_eq!(o.len(), 3);
    }

    #[test]
    fn acks_release_and_resend_starts_after_them() {
        let o = Outbox::new(10, 100);
        for _ in 0..5 {
            o.push(ev("CHANNEL_CREATE"));
        }
        o.ack(3);
        assert_eq!(o.len(), 2);
        let seqs: Vec<u64> = o.after(o.acked(), 10).iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![4, 5]);
    }

    #[test]
    fn encoded_batches_follow_gaps_and_the_byte_cap() {
        use switchy_protocol::wire::{AgentMsg, decode, frame_len};
        let o = Outbox::new(6, 100);
        for name in [
            "CHANNEL_CREATE",
            "HEARTBEAT",
            "CHANNEL_ANSWER",
            "CHANNEL_PARK",
        ] {
            o.push(ev(name));
        }
        for _ in 0..3 {
            // Full: the HEARTBEAT (seq 2) goes, leaving a gap in the sequence.
            o.push(ev("CHANNEL_HANGUP"));
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
        assert_eq!(o.encode_after(1, 10, usize::MAX, &mut out), Some(7));
        assert_eq!(seqs_of(&out), vec![3, 4, 5, 6, 7]);
        // A byte cap smaller than one event still sends one.
        assert_eq!(o.encode_after(3, 10, 1, &mut out), Some(4));
        assert_eq!(seqs_of(&out), vec![4]);
        assert_eq!(o.encode_after(5, 2, usize::MAX, &mut out), Some(7));
        assert_eq!(seqs_of(&out), vec![6, 7]);
        assert_eq!(o.encode_after(7, 10, usize::MAX, &mut out), None);
    }

    /// The tombstone bookkeeping against a plain model of the policy (drop
    /// the oldest noise; else a new noise event; else the oldest event).
    #[test]
    fn matches_a_simple_model_under_random_pushes_and_acks() {
        let names = ["CHANNEL_CREATE", "HEARTBEAT", "CHANNEL_ANSWER", "API"];
        let o = Outbox::new(50, 100);
        let mut model: VecDeque<(u64, bool)> = VecDeque::new();
        let (mut next, mut acked) = (0u64, 0u64);
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            if rng.is_multiple_of(7) {
                // Ack some of what is held.
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
            o.push(ev(name));
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
            // The outbox numbers every accepted event; the model follows.
            model.push_back((next, noise));
        }
        let held: Vec<u64> = o.after(0, usize::MAX).iter().map(|e| e.seq).collect();
        let want: Vec<u64> = model.iter().map(|(s, _)| *s).collect();
        assert_eq!(held, want);
        assert_eq!(o.len(), want.len());
    }

    #[tokio::test]
    async fn reading_waits_only_while_connected_and_behind() {
        let o = std::sync::Arc::new(Outbox::new(100, 3));
        for _ in 0..5 {
            o.push(ev("CHANNEL_CREATE"));
        }
        // Unreachable controller: buffer up to max, never pause.
        assert!(!o.behind());
        o.set_connected(Some(0));
        assert!(o.behind());
        let waiter = tokio::spawn({
            let o = o.clone();
            async move { o.wait_not_behind().await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        o.mark_sent(4);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("reading resumes once the sender caught up")
            .unwrap();
        o.mark_sent(1);
        assert!(!o.behind(), "sent never goes back");
        let mut out = Vec::new();
        assert_eq!(o.encode_unsent(10, usize::MAX, &mut out), Some(5));
        o.mark_sent(5);
        assert_eq!(o.encode_unsent(10, usize::MAX, &mut out), None);
        o.set_connected(Some(0));
        assert!(o.behind());
        o.set_connected(None);
        assert!(!o.behind());
        assert_eq!(
            o.encode_unsent(10, usize::MAX, &mut out),
            None,
            "not connected"
        );
    }
}
