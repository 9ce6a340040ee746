//! The journal: every ESL frame in and out, per node and connection, with
//! timestamps, in a bounded ring buffer.

use serde::Serialize;
use std::collections::VecDeque;
use std::sync::Mutex;
use tokio::sync::Notify;

/// One journal entry.
#[derive(Clone, Debug, Serialize)]
pub struct Entry {
    /// Monotonic entry number.
    pub n: u64,
    /// Microseconds since the Unix epoch.
    pub ts_us: u64,
    /// Node index.
    pub node: usize,
    /// Connection id (0: not tied to a connection).
    pub conn: u64,
    /// `in` (client → mock) or `out`.
    pub dir: &'static str,
    /// `command`, `reply`, `api_response`, `event`, `notice`, `log`.
    pub kind: &'static str,
    /// The command line, the reply text, or the event name.
    pub text: String,
    /// `Unique-ID` of an event, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unique_id: Option<String>,
    /// Header lines of a command (raw) or the api body.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// The journal ring buffer.
#[derive(Debug)]
pub struct Journal {
    inner: Mutex<(u64, VecDeque<Entry>)>,
    capacity: usize,
    /// Woken on every new entry (for `expect_recv` waits).
    pub notify: Notify,
}

impl Journal {
    /// A journal keeping the last `capacity` entries.
    pub fn new(capacity: usize) -> Self {
        Journal {
            inner: Mutex::new((0, VecDeque::with_capacity(capacity.min(1 << 16)))),
            capacity: capacity.max(1),
            notify: Notify::new(),
        }
    }

    /// Appends an entry (its number and timestamp are filled in).
    #[allow(clippy::too_many_arguments)]
    pub fn push(
        &self,
        node: usize,
        conn: u64,
        dir: &'static str,
        kind: &'static str,
        text: String,
        unique_id: Option<String>,
        detail: String,
    ) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.0 += 1;
        let n = g.0;
        if g.1.len() >= self.capacity {
            g.1.pop_front();
        }
        g.1.push_back(Entry {
            n,
            ts_us: crate::util::now_us(),
            node,
            conn,
            dir,
            kind,
            text,
            unique_id,
            detail,
        });
        drop(g);
        self.notify.notify_waiters();
    }

    /// Entries matching the predicate, oldest first.
    pub fn select(&self, mut f: impl FnMut(&Entry) -> bool) -> Vec<Entry> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.1.iter().filter(|e| f(e)).cloned().collect()
    }

    /// Number of the newest entry (0 when empty).
    pub fn last_n(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).0
    }

    /// Empties the journal.
    pub fn reset(&self) {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .clear();
    }
}
