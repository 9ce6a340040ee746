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

#[derive(Debug, Default)]
struct Inner {
    events: VecDeque<(bool, WireEvent)>,
    next_seq: u64,
    acked: u64,
    dropped_noise: u64,
    dropped_channel: u64,
}

/// The buffer.
#[derive(Debug)]
pub struct Outbox {
    inner: Mutex<Inner>,
    max: usize,
    /// Woken when events arrive.
    pub notify: Notify,
}

impl Outbox {
    /// A buffer holding at most `max` events.
    pub fn new(max: usize) -> Self {
        Outbox {
            inner: Mutex::new(Inner::default()),
            max: max.max(1),
            notify: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds an event (received now).
    pub fn push(&self, e: RelayEvent) {
        let noise = is_noise(&e.name);
        let mut g = self.lock();
        if g.events.len() >= self.max {
            if let Some(p) = g.events.iter().position(|(n, _)| *n) {
                g.events.remove(p);
                g.dropped_noise += 1;
            } else if noise {
                g.dropped_noise += 1;
                return;
            } else {
                g.events.pop_front();
                g.dropped_channel += 1;
                tracing::error!(
                    dropped = g.dropped_channel,
                    "event buffer full of channel events: the oldest was dropped; raise [buffer] max_events or bring the controller back"
                );
            }
        }
        g.next_seq += 1;
        let seq = g.next_seq;
        let headers = e.packed;
        let body = e.body.map(serde_bytes::ByteBuf::from);
        g.events.push_back((
            noise,
            WireEvent {
                seq,
                received_us: now_us(),
                headers,
                body,
            },
        ));
        drop(g);
        self.notify.notify_one();
    }

    /// The controller applied everything up to `upto`.
    pub fn ack(&self, upto: u64) {
        let mut g = self.lock();
        while g.events.front().is_some_and(|(_, e)| e.seq <= upto) {
            g.events.pop_front();
        }
        g.acked = g.acked.max(upto);
    }

    /// Up to `max` events with a sequence above `after`.
    pub fn after(&self, after: u64, max: usize) -> Vec<WireEvent> {
        let g = self.lock();
        g.events
            .iter()
            .filter(|(_, e)| e.seq > after)
            .take(max)
            .map(|(_, e)| e.clone())
            .collect()
    }

    /// One encoded `Events` frame of up to `max` events above `after`, and
    /// the last sequence in it (encoded under the lock, without cloning).
    pub fn encode_after(&self, after: u64, max: usize) -> Option<(Vec<u8>, u64)> {
        let g = self.lock();
        let batch: Vec<&WireEvent> = g
            .events
            .iter()
            .map(|(_, e)| e)
            .filter(|e| e.seq > after)
            .take(max)
            .collect();
        let last = batch.last()?.seq;
        match switchy_protocol::wire::encode_event_batch(&batch) {
            Ok(bytes) => Some((bytes, last)),
            Err(e) => {
                tracing::error!(error = %e, "cannot encode an event batch");
                None
            }
        }
    }

    /// Highest acknowledged sequence.
    pub fn acked(&self) -> u64 {
        self.lock().acked
    }

    /// Events held.
    pub fn len(&self) -> usize {
        self.lock().events.len()
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
        let o = Outbox::new(3);
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
        let o = Outbox::new(10);
        for _ in 0..5 {
            o.push(ev("CHANNEL_CREATE"));
        }
        o.ack(3);
        assert_eq!(o.len(), 2);
        let seqs: Vec<u64> = o.after(o.acked(), 10).iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![4, 5]);
    }
}
