//! What the WebSocket side and the control plane share: schemas, the
//! credential gate, the armed scenarios, the journal and the live sessions.

use super::journal::{Direction, Journal};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use switchy_relay::scenario::ScenarioStore;
use switchy_relay::schema::SchemaIndex;
use switchy_relay::session::Gate;
use tokio::sync::{mpsc, oneshot};

/// How long a control-plane push waits for a session's socket.
pub const PUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// What a connection's writer is told.
#[derive(Debug)]
pub enum Out {
    /// Write this frame; say whether it went out.
    Frame(Value, Option<oneshot::Sender<bool>>),
    /// Close the socket.
    Close,
}

/// A live session, as `/__mock__/sessions` lists it.
#[derive(Clone, Debug, Serialize)]
pub struct SessionInfo {
    /// Session id (`sessionid` in the connect result).
    pub id: String,
    /// `conn-<12 hex>`.
    pub connection_id: String,
    /// Seconds since the Unix epoch.
    pub connected_at: f64,
    /// Peer address.
    pub peer_addr: String,
    /// Issued at connect (null before).
    pub protocol_string: Option<String>,
    /// Whether it resumed an earlier session.
    pub session_restored: bool,
    /// Contexts it receives calls for.
    pub contexts: Vec<String>,
    /// Frames the mock sent it that expect an answer, not yet answered.
    pub unacked: u64,
}

/// One live session's handle.
#[derive(Debug)]
pub struct SessionEntry {
    /// What the listing shows.
    pub info: Mutex<SessionInfo>,
    /// Its writer.
    pub tx: mpsc::Sender<Out>,
    /// Requests and events sent to it.
    pub requests_sent: AtomicU64,
    /// Responses it sent back.
    pub responses_received: AtomicU64,
}

impl SessionEntry {
    /// A snapshot for the listing.
    pub fn snapshot(&self) -> SessionInfo {
        let mut i = lock(&self.info).clone();
        i.unacked = self
            .requests_sent
            .load(Ordering::Relaxed)
            .saturating_sub(self.responses_received.load(Ordering::Relaxed));
        i
    }

    /// Queues `frame` and waits until it is written (or [`PUSH_TIMEOUT`]).
    pub async fn send(&self, frame: Value) -> bool {
        let (tx, rx) = oneshot::channel();
        if self
            .tx
            .send_timeout(Out::Frame(frame, Some(tx)), PUSH_TIMEOUT)
            .await
            .is_err()
        {
            return false;
        }
        matches!(tokio::time::timeout(PUSH_TIMEOUT, rx).await, Ok(Ok(true)))
    }
}

/// Locks, ignoring poisoning (state stays usable after a panicked task).
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Counters for `/__mock__/health`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Handshakes (TLS or WebSocket) that failed.
    pub handshake_failures: AtomicU64,
    /// Connections refused at --max-sessions.
    pub refused: AtomicU64,
    /// Requests answered.
    pub requests: AtomicU64,
    /// Requests answered with an error.
    pub errors: AtomicU64,
}

/// Shared state.
#[derive(Debug)]
pub struct Shared {
    /// The schemas.
    pub schemas: SchemaIndex,
    /// Credentials and protocol strings.
    pub gate: Gate,
    /// Armed scenarios.
    pub scenarios: Mutex<ScenarioStore>,
    /// The journal.
    pub journal: Journal,
    /// Live sessions by id.
    pub sessions: Mutex<BTreeMap<String, std::sync::Arc<SessionEntry>>>,
    /// Counters.
    pub stats: Stats,
    /// The WebSocket port.
    pub ws_port: u16,
    /// `ws` or `wss`.
    pub scheme: &'static str,
}

impl Shared {
    /// The session with this id.
    pub fn session(&self, id: &str) -> Option<std::sync::Arc<SessionEntry>> {
        lock(&self.sessions).get(id).cloned()
    }

    /// Every live session.
    pub fn all_sessions(&self) -> Vec<std::sync::Arc<SessionEntry>> {
        lock(&self.sessions).values().cloned().collect()
    }

    /// Journals a frame sent to `entry` (the writer calls it as it writes).
    pub fn journal_send(&self, frame: &Value, connection_id: &str, session_id: &str) {
        self.journal
            .record(Direction::Send, frame, connection_id, session_id);
    }
}
