//! Scripted, consume-once replies and effects for the next matching
//! command (`POST /__mock__/scenarios/{command}`).

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::Mutex;

/// What happens on the next matching command.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Scenario {
    /// Only on this node (default: any).
    pub node: Option<usize>,
    /// Reply with this output instead of running the command.
    pub reply: Option<String>,
    /// originate: fail with this hangup cause.
    pub hangup_cause: Option<String>,
    /// originate: the callee answers after this many ms.
    pub answer_after_ms: Option<u64>,
    /// uuid_send_dtmf: the digits the peer actually receives.
    pub dtmf: Option<String>,
    /// Events pushed to subscribers after the command (header → value).
    pub events: Vec<serde_json::Map<String, serde_json::Value>>,
}

/// The FIFO of scripted scenarios, per command name.
#[derive(Debug, Default)]
pub struct Scenarios {
    queue: Mutex<VecDeque<(String, Scenario)>>,
}

impl Scenarios {
    /// Queues a scenario for the next `command`.
    pub fn add(&self, command: &str, s: Scenario) {
        self.lock().push_back((command.to_ascii_lowercase(), s));
    }

    /// Takes the first scenario for `command` on `node`.
    pub fn take(&self, command: &str, node: usize) -> Option<Scenario> {
        let mut q = self.lock();
        let pos = q
            .iter()
            .position(|(c, s)| c == command && s.node.is_none_or(|n| n == node))?;
        q.remove(pos).map(|(_, s)| s)
    }

    /// Everything queued.
    pub fn list(&self) -> Vec<(String, Scenario)> {
        self.lock().iter().cloned().collect()
    }

    /// Drops everything queued.
    pub fn reset(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(String, Scenario)>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}
