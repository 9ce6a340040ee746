//! Configuration of a simulated cluster and of each node's behaviour.

use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// What a node does with a call to a destination that is not a mock node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum ExternalOutcome {
    /// The far end answers after `ring_ms`.
    Answer,
    /// The far end is busy (USER_BUSY) after `ring_ms`.
    Busy,
    /// Nobody answers: the originate times out (NO_ANSWER).
    NoAnswer,
    /// The call fails with this hangup cause after `ring_ms`.
    Fail {
        /// Hangup cause name.
        cause: String,
    },
}

/// Per-node behaviour knobs (CLI defaults, changeable through the control
/// plane at `POST /__mock__/nodes/{n}/knobs`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Knobs {
    /// Inbound legs answer by themselves after this many ms (`None`: they
    /// stay parked until answered, like FreeSWITCH's park dialplan).
    pub auto_answer_ms: Option<u64>,
    /// How long a destination outside the mock rings before its outcome.
    pub ring_ms: u64,
    /// The outcome of calls to destinations outside the mock.
    pub external: ExternalOutcome,
    /// Fraction (0..=1) of inbound calls refused with `failure_cause`.
    pub failure_ratio: f64,
    /// Cause used for `failure_ratio` refusals.
    pub failure_cause: String,
    /// Largest number of live channels (FreeSWITCH's `max-sessions`).
    pub max_sessions: usize,
    /// New channels allowed per second (FreeSWITCH's `sessions-per-second`).
    pub sessions_per_second: u32,
    /// Simulated length of a played file, ms.
    pub playback_ms: u64,
    /// Default originate timeout, s.
    pub originate_timeout_s: u64,
    /// Charge work as a real FreeSWITCH's CPU would and slow down (then
    /// refuse calls) when it exceeds the node's cores (`None`: free, as
    /// before; see [`crate::cost`]).
    pub cost: Option<crate::cost::CostModel>,
    /// The inbound leg of a self-call goes through early media when
    /// answered (CHANNEL_PROGRESS_MEDIA, CALLSTATE EARLY before
    /// CHANNEL_ANSWER) and carries the park dialplan's `DP_MATCH`, as on
    /// the FreeSWITCH tests/fidelity was recorded on; off, as in the
    /// captures of shared/fixtures (another FreeSWITCH build).
    #[serde(default)]
    pub early_media_on_answer: bool,
    /// Write each frame to the socket on its own, as FreeSWITCH does,
    /// instead of coalescing what is queued (up to 1 MiB) into one write.
    /// Clients whose parser cannot take a frame split across reads
    /// (switchio 0.1) need it; it costs a write per event.
    pub frame_per_write: bool,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            auto_answer_ms: None,
            ring_ms: 0,
            external: ExternalOutcome::Answer,
            failure_ratio: 0.0,
            failure_cause: "NORMAL_TEMPORARY_FAILURE".into(),
            max_sessions: 100_000,
            sessions_per_second: 100_000,
            playback_ms: 1000,
            originate_timeout_s: 60,
            cost: None,
            early_media_on_answer: false,
            frame_per_write: false,
        }
    }
}

/// A whole simulated cluster.
#[derive(Clone, Debug)]
pub struct MockConfig {
    /// Number of nodes.
    pub nodes: usize,
    /// Address the ESL and HTTP listeners bind.
    pub bind: IpAddr,
    /// ESL port of node 0; node i listens on `esl_port + i` (0: ephemeral
    /// ports, for tests).
    pub esl_port: u16,
    /// HTTP control plane port (`None`: `esl_port + 1000`, or ephemeral when
    /// `esl_port` is 0).
    pub http_port: Option<u16>,
    /// ESL password of every node.
    pub password: String,
    /// HEARTBEAT interval.
    pub heartbeat: Duration,
    /// Entries kept in the journal ring buffer.
    pub journal_capacity: usize,
    /// Directory of JSON Schemas (`relay-protocol/esl`); `None`: the copy
    /// compiled into the binary.
    pub schema_dir: Option<PathBuf>,
    /// Behaviour of every node.
    pub knobs: Knobs,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            nodes: 1,
            bind: IpAddr::from([127, 0, 0, 1]),
            esl_port: 8021,
            http_port: None,
            password: "ClueCon".into(),
            heartbeat: Duration::from_secs(20),
            journal_capacity: 100_000,
            schema_dir: None,
            knobs: Knobs::default(),
        }
    }
}

impl MockConfig {
    /// A config for tests: ephemeral ports, `n` nodes.
    pub fn ephemeral(n: usize) -> Self {
        MockConfig {
            nodes: n,
            esl_port: 0,
            ..Default::default()
        }
    }
}
