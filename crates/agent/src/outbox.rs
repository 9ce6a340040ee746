//! The agent's link to the controller, shared by its tasks: the sans-IO
//! [`AgentLink`] (its event buffer, what to send next, Acks, resend,
//! reconnect delays: `switchy_protocol::link`) behind one lock, with the
//! wake-ups the I/O tasks wait on. ESL reading pushes events here and
//! pauses while the controller connection is `read_ahead` events behind,
//! which FreeSWITCH sees as TCP backpressure.

use crate::esl::RelayEvent;
use std::sync::Mutex;
use std::time::Duration;
use switchy_protocol::link::Backoff;
use switchy_protocol::link::agent::AgentLink;
use switchy_protocol::link::outbox::{Dropped, OutboxCore};
use tokio::sync::Notify;

pub use switchy_protocol::link::outbox::is_noise;

/// The link and its wake-ups.
#[derive(Debug)]
pub struct Outbox {
    link: Mutex<AgentLink>,
    read_ahead: usize,
    /// When drops were last logged, and the channel drops counted then.
    drop_log: Mutex<(Option<std::time::Instant>, u64)>,
    /// Woken when events arrive (or a snapshot is asked for).
    pub notify: Notify,
    /// Woken when events were sent or the connection went away.
    drained: Notify,
}

impl Outbox {
    /// A buffer holding at most `max` events and `max_bytes` of them,
    /// which asks ESL reading to wait while `read_ahead` events are unsent
    /// to a connected controller; reconnects per `backoff`, heartbeats
    /// every `heartbeat`.
    pub fn new(
        max: usize,
        max_bytes: usize,
        read_ahead: usize,
        backoff: Backoff,
        heartbeat: Duration,
    ) -> Self {
        Outbox {
            link: Mutex::new(AgentLink::with_outbox(
                OutboxCore::with_bytes(max, max_bytes),
                backoff,
                heartbeat,
            )),
            read_ahead: read_ahead.max(1),
            drop_log: Mutex::new((None, 0)),
            notify: Notify::new(),
            drained: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AgentLink> {
        self.link.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the link (briefly: every task shares this lock). Wakes
    /// ESL reading afterwards, as `f` may have sent events or closed.
    pub fn with<R>(&self, f: impl FnOnce(&mut AgentLink) -> R) -> R {
        let r = f(&mut self.lock());
        self.drained.notify_waiters();
        r
    }

    /// True while a controller is connected and `read_ahead` or more
    /// events wait to be sent to it.
    pub fn behind(&self) -> bool {
        self.lock().outbox.behind(self.read_ahead)
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

    /// Adds an event (received now).
    pub fn push(&self, e: RelayEvent) {
        let pushed = self
            .lock()
            .outbox
            .push(&e.name, e.packed, e.body, e.plain, now_us());
        if pushed.dropped == Some(Dropped::Channel) {
            self.log_drops();
        }
        self.notify.notify_one();
    }

    /// Logs channel-event drops at most once a second, with how many since
    /// the last line (a flood of drops is one line a second, not one each).
    fn log_drops(&self) {
        let now = std::time::Instant::now();
        let mut g = self.drop_log.lock().unwrap_or_else(|p| p.into_inner());
        if g.0
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            return;
        }
        let (_, total) = self.dropped();
        let (bytes, held) = {
            let l = self.lock();
            (l.outbox.bytes(), l.outbox.len())
        };
        tracing::error!(
            dropped = total - g.1,
            total,
            held,
            held_bytes = bytes,
            "event buffer full of channel events: the oldest were dropped; raise [buffer] max_events / max_mib or bring the controller back"
        );
        *g = (Some(now), total);
    }

    /// Highest sequence given out (events taken in by this agent process).
    pub fn last_seq(&self) -> u64 {
        self.lock().outbox.last_seq()
    }

    /// Highest acknowledged sequence.
    pub fn acked(&self) -> u64 {
        self.lock().outbox.acked()
    }

    /// Events held.
    pub fn len(&self) -> usize {
        self.lock().outbox.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// (noise dropped, channel events dropped).
    pub fn dropped(&self) -> (u64, u64) {
        self.lock().outbox.dropped()
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

    #[tokio::test]
    async fn reading_waits_only_while_connected_and_behind() {
        let backoff = Backoff::new(Duration::from_millis(1), Duration::from_millis(2), 1);
        let o = std::sync::Arc::new(Outbox::new(
            100,
            usize::MAX,
            3,
            backoff,
            Duration::from_secs(1),
        ));
        for _ in 0..5 {
            o.push(ev("CHANNEL_CREATE"));
        }
        // Unreachable controller: buffer up to max, never pause.
        assert!(!o.behind());
        o.with(|l| l.outbox.connect(Some(0)));
        assert!(o.behind());
        let waiter = tokio::spawn({
            let o = o.clone();
            async move { o.wait_not_behind().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        o.with(|l| l.outbox.mark_sent(4));
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("reading resumes once the sender caught up")
            .unwrap();
        o.with(|l| l.closed());
        assert!(!o.behind(), "not connected: never behind");
    }
}
