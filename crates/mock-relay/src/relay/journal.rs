//! RELAY mode's journal: every frame in and out of every session, in a
//! bounded ring (1,000 frames by default), as `/__mock__/journal` shows it.

use serde::Serialize;
use serde_json::Value;
use std::collections::VecDeque;
use std::sync::Mutex;
use tokio::sync::Notify;

/// recv (client → mock) or send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// From the client.
    Recv,
    /// To the client.
    Send,
}

/// One journaled frame.
#[derive(Clone, Debug, Serialize)]
pub struct Entry {
    /// Monotonic number (survives the ring's wrap; reset restarts nothing).
    pub seq: u64,
    /// Seconds since the Unix epoch.
    pub timestamp: f64,
    /// recv or send.
    pub direction: Direction,
    /// The frame's method ("" for responses).
    pub method: String,
    /// The frame's id as text ("" when none).
    pub request_id: String,
    /// The frame (a frame that was not JSON is kept as a string).
    pub frame: Value,
    /// `conn-<12 hex>`.
    pub connection_id: String,
    /// The session id.
    pub session_id: String,
}

/// The ring.
#[derive(Debug)]
pub struct Journal {
    inner: Mutex<(u64, VecDeque<Entry>)>,
    capacity: usize,
    /// Woken on every entry.
    pub notify: Notify,
}

impl Journal {
    /// A ring of `capacity` entries (at least 1).
    pub fn new(capacity: usize) -> Journal {
        Journal {
            inner: Mutex::new((0, VecDeque::new())),
            capacity: capacity.max(1),
            notify: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (u64, VecDeque<Entry>)> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Appends a frame.
    pub fn record(
        &self,
        direction: Direction,
        frame: &Value,
        connection_id: &str,
        session_id: &str,
    ) {
        let entry_frame = frame.clone();
        {
            let mut g = self.lock();
            g.0 += 1;
            let e = Entry {
                seq: g.0,
                timestamp: switchy_relay::now_secs(),
                direction,
                method: switchy_relay::rpc::method_of(frame).to_owned(),
                request_id: switchy_relay::rpc::id_text(frame),
                frame: entry_frame,
                connection_id: connection_id.to_owned(),
                session_id: session_id.to_owned(),
            };
            if g.1.len() == self.capacity {
                g.1.pop_front();
            }
            g.1.push_back(e);
        }
        self.notify.notify_waiters();
    }

    /// Every entry, oldest first.
    pub fn all(&self) -> Vec<Entry> {
        self.lock().1.iter().cloned().collect()
    }

    /// Entries after `seq`.
    pub fn since(&self, seq: u64) -> Vec<Entry> {
        self.lock()
            .1
            .iter()
            .filter(|e| e.seq > seq)
            .cloned()
            .collect()
    }

    /// The last sequence number given out.
    pub fn last_seq(&self) -> u64 {
        self.lock().0
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.lock().1.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every entry.
    pub fn reset(&self) {
        self.lock().1.clear();
    }

    /// Waits up to `timeout` for an entry after `after` that `want` accepts.
    pub async fn wait_for(
        &self,
        after: u64,
        timeout: std::time::Duration,
        want: impl Fn(&Entry) -> bool,
    ) -> Option<Entry> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut seen = after;
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            for e in self.since(seen) {
                seen = e.seq;
                if want(&e) {
                    return Some(e);
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_ring_keeps_the_newest_and_numbers_on() {
        let j = Journal::new(2);
        for i in 0..3 {
            j.record(Direction::Recv, &json!({"id": i, "method": "m"}), "c", "s");
        }
        let all = j.all();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].seq, 2);
        assert_eq!(all[1].request_id, "2");
        assert_eq!(all[1].method, "m");
        j.reset();
        assert!(j.is_empty());
        assert_eq!(j.last_seq(), 3);
    }

    #[tokio::test]
    async fn waits_see_only_later_entries() {
        let j = std::sync::Arc::new(Journal::new(10));
        j.record(Direction::Recv, &json!({"method": "a"}), "c", "s");
        let after = j.last_seq();
        let j2 = j.clone();
        let w = tokio::spawn(async move {
            j2.wait_for(after, std::time::Duration::from_secs(5), |e| {
                e.method == "a"
            })
            .await
        });
        tokio::task::yield_now().await;
        j.record(Direction::Send, &json!({"method": "a"}), "c", "s");
        let got = w.await.unwrap().expect("seen");
        assert_eq!(got.seq, 2);
        assert!(
            j.wait_for(2, std::time::Duration::from_millis(20), |_| true)
                .await
                .is_none()
        );
    }
}
