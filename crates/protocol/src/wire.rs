//! The agent ⇄ controller wire protocol, sans-IO: serde messages encoded
//! with bincode 2 (standard config, size-limited), carried in frames of a
//! 4-byte big-endian length followed by the payload. Documented in
//! `relay-protocol/wire.md`.
//!
//! Streams (QUIC, ALPN [`ALPN`]):
//! - one bidirectional **event stream** per agent connection, opened by the
//!   agent: [`AgentMsg`] up (Hello first), [`ControllerMsg`] down (Welcome or
//!   Refused first, then acks);
//! - one bidirectional **command stream** per command, opened by the
//!   controller: one [`CommandRequest`] down, one [`CommandResponse`] up.

use serde::{Deserialize, Serialize};

/// Protocol version; both sides refuse a peer with another one.
pub const WIRE_VERSION: u32 = 3;
/// QUIC ALPN of this protocol version.
pub const ALPN: &[u8] = b"switchy/1";

/// Largest UDP payload switchy's QUIC endpoints accept and probe for
/// (Ethernet's 1,500 minus IP and UDP headers). Larger datagrams relay
/// multi-kilobyte events with less per-packet work (+12 % events/s on
/// loopback with 8,952), but on loopback quinn then saw early losses,
/// declared a black hole, fell back to 1,200 bytes and the latency p99
/// went from 9 ms to 130-230 ms, so the cap stays at Ethernet size.
pub const QUIC_MAX_UDP_PAYLOAD: u16 = 1_472;
/// Largest frame payload accepted (16 MiB).
pub const MAX_FRAME: usize = 16 * 1024 * 1024;

/// One FreeSWITCH event as relayed: either its headers exactly as
/// FreeSWITCH wrote them in a `text/event-plain` frame (decoded once, by the
/// controller) or its decoded headers packed (see [`pack_headers`]), and
/// its body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireEvent {
    /// Agent-assigned sequence number (per agent process, from 1), used for
    /// acknowledgements and de-duplication after a reconnect.
    pub seq: u64,
    /// Microseconds since the epoch when the agent received it.
    pub received_us: u64,
    /// When `plain`: the body of the `text/event-plain` frame as received
    /// (percent-encoded `Name: value` lines, an empty line, then the
    /// event's own body if it has a `Content-Length`). Otherwise headers in
    /// order, duplicates kept: for each, a u32 little-endian name length,
    /// the name, a u32 little-endian value length, the value (decoded
    /// bytes, no percent-encoding).
    #[serde(with = "serde_bytes")]
    pub headers: Vec<u8>,
    /// Body, if any (always None when `plain`: the body is in `headers`).
    pub body: Option<serde_bytes::ByteBuf>,
    /// `headers` is the plain ESL event text.
    pub plain: bool,
}

impl WireEvent {
    /// The event: the plain text decoded or the packed headers unpacked.
    pub fn into_event(self) -> Result<crate::esl::Event, String> {
        if self.plain {
            crate::esl::Event::decode_plain_owned(self.headers).map_err(|(e, _)| e.to_string())
        } else {
            let headers = crate::esl::Headers::from_packed(self.headers)
                .ok_or_else(|| "bad packed header lengths".to_string())?;
            Ok(crate::esl::Event {
                headers,
                body: self.body.map(serde_bytes::ByteBuf::into_vec),
            })
        }
    }
}

/// The `Event-Name` of a plain event body, read from its first lines
/// without decoding the rest (FreeSWITCH writes it first).
pub fn plain_event_name(plain: &[u8]) -> Option<&str> {
    for line in plain.split(|&b| b == b'\n').take(8) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if let Some(v) = line.strip_prefix(b"Event-Name:") {
            return std::str::from_utf8(v).ok().map(str::trim);
        }
    }
    None
}

/// Packs header pairs for [`WireEvent::headers`].
pub fn pack_headers<'a>(pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> Vec<u8> {
    let mut out = Vec::with_capacity(4096);
    for (k, v) in pairs {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(k);
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        out.extend_from_slice(v);
    }
    out
}

/// One unpacked header: (name, value).
pub type HeaderPair<'a> = (&'a [u8], &'a [u8]);

/// Unpacks [`WireEvent::headers`]; a truncated or lying length is an error.
pub fn unpack_headers(packed: &[u8]) -> Result<Vec<HeaderPair<'_>>, WireError> {
    let mut out = Vec::with_capacity(packed.len() / 40);
    let mut i = 0;
    let take = |i: &mut usize| -> Result<&[u8], WireError> {
        let len_bytes = packed
            .get(*i..*i + 4)
            .ok_or_else(|| WireError::Decode("truncated header length".into()))?;
        let n =
            u32::from_le_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]) as usize;
        let v = packed
            .get(*i + 4..*i + 4 + n)
            .ok_or_else(|| WireError::Decode("header length beyond the event".into()))?;
        *i += 4 + n;
        Ok(v)
    };
    while i < packed.len() {
        let k = take(&mut i)?;
        let v = take(&mut i)?;
        out.push((k, v));
    }
    Ok(out)
}

/// A SIP profile of a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Profile {
    /// Profile name (`external`).
    pub name: String,
    /// Its URL (`sip:mod_sofia@10.0.0.5:5080`).
    pub url: String,
}

/// First message of an agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// [`WIRE_VERSION`] of the agent.
    pub wire_version: u32,
    /// Node id (the agent certificate's name).
    pub node_id: String,
    /// Agent software version.
    pub agent_version: String,
    /// Agent process id (a restarted agent restarts its event numbering).
    pub agent_instance: String,
    /// FreeSWITCH hostname, if ESL is up.
    pub hostname: Option<String>,
    /// FreeSWITCH Core-UUID, if ESL is up.
    pub core_uuid: Option<String>,
    /// FreeSWITCH version line.
    pub fs_version: Option<String>,
    /// SIP profiles.
    pub profiles: Vec<Profile>,
    /// Highest event sequence a controller acknowledged so far (0: none);
    /// buffered events after it are re-sent on this connection.
    pub resend_from: u64,
}

/// ESL connection state of a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EslState {
    /// Connected and authenticated.
    Up {
        /// Core-UUID of the FreeSWITCH process.
        core_uuid: String,
        /// Its hostname.
        hostname: String,
        /// Its SIP profiles.
        profiles: Vec<Profile>,
    },
    /// Not connected; why.
    Down(String),
    /// Connected but not answering the periodic `status` in time.
    Degraded(String),
}

/// The live channels of a node (from `show channels as json`), sent after
/// any reconnect so the controller's view matches FreeSWITCH again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Core-UUID the snapshot belongs to.
    pub core_uuid: String,
    /// One entry per channel: column name → value.
    pub channels: Vec<Vec<(String, String)>>,
}

/// Agent → controller, on the event stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AgentMsg {
    /// First message.
    Hello(Hello),
    /// Events in order.
    Events(Vec<WireEvent>),
    /// Live channels after a reconnect.
    Snapshot(Snapshot),
    /// ESL state changed.
    Status(EslState),
    /// Liveness; also carries counters.
    Heartbeat {
        /// Microseconds since the epoch at the agent.
        sent_us: u64,
        /// Events dropped so far because the buffer was full.
        dropped: u64,
        /// Events buffered, waiting for acknowledgement.
        buffered: u64,
        /// FreeSWITCH's load, from the agent's latest `status` probe.
        load: Option<NodeLoad>,
    },
}

/// What a node's FreeSWITCH said about its own load (`api status`, read by
/// the agent on a command connection), and how long it took to say it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct NodeLoad {
    /// Idle CPU in hundredths of a percent, as FreeSWITCH measures it (the
    /// second number of `min idle cpu 0.00/97.00` is 9700).
    pub idle_cpu_hundredths: u32,
    /// Live sessions (`N session(s) - peak …`).
    pub sessions: u64,
    /// Sessions created in the last second (`N session(s) per Sec …`).
    pub sessions_per_sec: u64,
    /// `N session(s) max`.
    pub max_sessions: u64,
    /// Microseconds `status` took to answer (agent clock): a FreeSWITCH
    /// that is short of CPU answers late.
    pub status_us: u64,
    /// Agent clock when the probe was answered, µs since the epoch.
    pub at_us: u64,
    /// CPU the FreeSWITCH process used since the previous probe, in
    /// hundredths of a percent of one core (read by the agent from
    /// `/proc/<pid>/stat`; None when the agent cannot see the process).
    pub fs_cpu_hundredths: Option<u32>,
    /// CPU cores of the node's host.
    pub cores: u32,
}

impl NodeLoad {
    /// Idle CPU of the host as FreeSWITCH sees it, percent.
    pub fn idle_cpu_pct(&self) -> f64 {
        f64::from(self.idle_cpu_hundredths) / 100.0
    }

    /// FreeSWITCH's own CPU, percent of one core.
    pub fn fs_cpu_pct(&self) -> Option<f64> {
        self.fs_cpu_hundredths.map(|v| f64::from(v) / 100.0)
    }
}

/// Parses FreeSWITCH's `api status` text (unknown lines are ignored; a
/// missing figure stays 0).
pub fn parse_status(text: &str) -> NodeLoad {
    let mut l = NodeLoad::default();
    let first_num = |s: &str| -> u64 {
        s.split_whitespace()
            .next()
            .and_then(|w| w.parse().ok())
            .unwrap_or(0)
    };
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("min idle cpu ") {
            if let Some(v) = rest
                .split('/')
                .nth(1)
                .and_then(|v| v.trim().parse::<f64>().ok())
            {
                l.idle_cpu_hundredths = (v.clamp(0.0, 100.0) * 100.0).round() as u32;
            }
        } else if line.contains("session(s) per Sec") {
            l.sessions_per_sec = first_num(line);
        } else if line.contains("session(s) - peak") {
            l.sessions = first_num(line);
        } else if line.ends_with("session(s) max") {
            l.max_sessions = first_num(line);
        }
    }
    l
}

/// Controller → agent, on the event stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControllerMsg {
    /// Hello accepted.
    Welcome {
        /// [`WIRE_VERSION`] of the controller.
        wire_version: u32,
        /// Controller instance id (changes on restart).
        controller_id: String,
        /// The events the controller needs now (as [`CommandKind::Subscription`]);
        /// the agent subscribes them before it reports its ESL state.
        events: Vec<String>,
    },
    /// Hello refused (version mismatch, unknown node …); the connection is
    /// closed after this.
    Refused {
        /// What to fix.
        reason: String,
    },
    /// Every event up to this sequence is applied; the agent may drop them.
    Ack {
        /// Highest applied event sequence.
        upto: u64,
    },
    /// Send a fresh snapshot.
    ResyncRequest,
}

/// A command for FreeSWITCH.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandKind {
    /// `api <command> <args>`.
    Api {
        /// Command name.
        command: String,
        /// Argument string.
        args: String,
    },
    /// `bgapi <command> <args>` with a controller-chosen Job-UUID.
    BgApi {
        /// Command name.
        command: String,
        /// Argument string.
        args: String,
        /// Job-UUID.
        job_uuid: String,
    },
    /// `sendmsg <uuid>` with headers (and body).
    SendMsg {
        /// Channel.
        uuid: String,
        /// Message headers.
        headers: Vec<(String, String)>,
        /// Body (for multi-line arguments).
        body: Option<Vec<u8>>,
    },
    /// The events the controller needs now, in full: the agent subscribes
    /// these plus its own configured ones and unsubscribes (`nixevent`) the
    /// rest, and keeps the set for later ESL connections. `CUSTOM a::b`
    /// names a subclass.
    Subscription {
        /// Event names.
        events: Vec<String>,
    },
}

/// What the controller's tracker needs from every node whatever else runs:
/// each channel's end (CHANNEL_HANGUP_COMPLETE carries every timestamp of
/// the leg, its cause and its variables), job results, and FreeSWITCH's
/// heartbeat. Each event type subscribed costs FreeSWITCH CPU on every call
/// (mod_event_socket copies and serializes it, with every channel
/// variable, for each subscriber), so this is all an agent subscribes
/// until its controller asks for more.
pub const TRACKER_MINIMAL: &[&str] = &["CHANNEL_HANGUP_COMPLETE", "BACKGROUND_JOB", "HEARTBEAT"];

/// [`TRACKER_MINIMAL`] plus what live session and call views need (a
/// channel from its creation, answer and bridge state): `serve`'s default.
pub const TRACKER_LIVE: &[&str] = &[
    "CHANNEL_CREATE",
    "CHANNEL_ANSWER",
    "CHANNEL_BRIDGE",
    "CHANNEL_UNBRIDGE",
    "CHANNEL_HANGUP_COMPLETE",
    "BACKGROUND_JOB",
    "HEARTBEAT",
];

/// Every channel event the tracker understands plus jobs and heartbeats
/// (switchy's default before wire version 3; `--tracking full`).
pub const CORE_EVENTS: &[&str] = &[
    "CHANNEL_CREATE",
    "CHANNEL_ORIGINATE",
    "CHANNEL_PROGRESS",
    "CHANNEL_PROGRESS_MEDIA",
    "CHANNEL_ANSWER",
    "CHANNEL_PARK",
    "CHANNEL_EXECUTE_COMPLETE",
    "CHANNEL_BRIDGE",
    "CHANNEL_UNBRIDGE",
    "CHANNEL_HANGUP",
    "CHANNEL_HANGUP_COMPLETE",
    "CHANNEL_DESTROY",
    "BACKGROUND_JOB",
    "HEARTBEAT",
];

/// Controller → agent, alone on a command stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandRequest {
    /// Controller-assigned id.
    pub id: u64,
    /// What to run.
    pub kind: CommandKind,
}

/// Agent → controller, the answer on the same command stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandResponse {
    /// Id of the request.
    pub id: u64,
    /// FreeSWITCH's reply (`api/response` body or `Reply-Text`), or why the
    /// command could not be run.
    pub result: Result<String, String>,
    /// Agent clock when the command was written to FreeSWITCH, µs since
    /// the epoch (0: it was not sent). With the BACKGROUND_JOB's
    /// `received_us` this times a bgapi on one clock.
    pub sent_us: u64,
}

/// Why a frame could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The length prefix exceeds [`MAX_FRAME`] (or the configured limit).
    #[error("wire frame of {0} bytes exceeds the {1}-byte limit: the peer is broken or hostile")]
    TooLarge(usize, usize),
    /// The payload is not a valid message.
    #[error("undecodable wire message: {0} (is the peer running the same wire version?)")]
    Decode(String),
    /// The message could not be encoded.
    #[error("cannot encode wire message: {0}")]
    Encode(String),
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<{ MAX_FRAME }>()
}

/// Encodes a message as one frame (length prefix + payload).
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, WireError> {
    let mut out = Vec::new();
    encode_into(msg, &mut out)?;
    Ok(out)
}

/// Encodes a message as one frame into `out` (cleared first), so a sender
/// can keep one buffer instead of allocating (and growing) one per frame.
pub fn encode_into<T: Serialize>(msg: &T, out: &mut Vec<u8>) -> Result<(), WireError> {
    out.clear();
    out.extend_from_slice(&[0; 4]);
    bincode::serde::encode_into_std_write(msg, out, config())
        .map_err(|e| WireError::Encode(e.to_string()))?;
    let n = out.len() - 4;
    if n > MAX_FRAME {
        out.clear();
        return Err(WireError::TooLarge(n, MAX_FRAME));
    }
    out[..4].copy_from_slice(&(n as u32).to_be_bytes());
    Ok(())
}

/// Encodes `AgentMsg::Events` from borrowed events (same bytes as encoding
/// an owned `AgentMsg::Events`), so a sender need not clone what it keeps
/// buffered until acknowledged.
pub fn encode_event_batch(events: &[&WireEvent]) -> Result<Vec<u8>, WireError> {
    let mut out = Vec::new();
    encode_event_batch_into(events, &mut out)?;
    Ok(out)
}

/// [`encode_event_batch`] into a reused buffer (cleared first).
pub fn encode_event_batch_into(events: &[&WireEvent], out: &mut Vec<u8>) -> Result<(), WireError> {
    // Variant order must match `AgentMsg`: Hello = 0, Events = 1.
    #[derive(Serialize)]
    enum Borrowed<'a> {
        #[allow(dead_code)]
        Hello(()),
        Events(&'a [&'a WireEvent]),
    }
    encode_into(&Borrowed::Events(events), out)
}

/// Decodes one payload (without its length prefix).
pub fn decode<T: for<'de> Deserialize<'de>>(payload: &[u8]) -> Result<T, WireError> {
    let (v, used) = bincode::serde::decode_from_slice(payload, config())
        .map_err(|e| WireError::Decode(e.to_string()))?;
    if used != payload.len() {
        return Err(WireError::Decode(format!(
            "{} trailing bytes",
            payload.len() - used
        )));
    }
    Ok(v)
}

/// Checks a frame's length prefix against the limit.
pub fn frame_len(prefix: [u8; 4], limit: usize) -> Result<usize, WireError> {
    let n = u32::from_be_bytes(prefix) as usize;
    if n > limit {
        return Err(WireError::TooLarge(n, limit));
    }
    Ok(n)
}

/// Incremental frame decoder: feed bytes, take messages.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    limit: usize,
}

impl FrameDecoder {
    /// A decoder accepting frames up to `limit` bytes (0: [`MAX_FRAME`]).
    pub fn new(limit: usize) -> Self {
        FrameDecoder {
            buf: Vec::new(),
            limit: if limit == 0 {
                MAX_FRAME
            } else {
                limit.min(MAX_FRAME)
            },
        }
    }

    /// Appends received bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next message, `Ok(None)` when more bytes are needed.
    pub fn next_msg<T: for<'de> Deserialize<'de>>(&mut self) -> Result<Option<T>, WireError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let n = frame_len(
            [self.buf[0], self.buf[1], self.buf[2], self.buf[3]],
            self.limit,
        )?;
        if self.buf.len() < 4 + n {
            return Ok(None);
        }
        let v = decode(&self.buf[4..4 + n]);
        self.buf.drain(..4 + n);
        v.map(Some)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn status_of_a_real_freeswitch() {
        // `api status` of FreeSWITCH 1.11.3-dev, recorded here.
        let t = "UP 0 years, 0 days, 0 hours, 2 minutes, 4 seconds, 238 milliseconds, 177 microseconds\nFreeSWITCH (Version 1.11.3-dev git cc93a68 2026-08-21 14:10:14Z 64bit) is ready\n6002 session(s) since startup\n12 session(s) - peak 415, last 5min 415 \n3 session(s) per Sec out of max 500, peak 9656, last 5min 9656 \n2000 session(s) max\nmin idle cpu 0.00/1.73\nCurrent Stack Size/Max 240K/8192K\n";
        let l = super::parse_status(t);
        assert_eq!(l.idle_cpu_hundredths, 173);
        assert_eq!(l.sessions, 12);
        assert_eq!(l.sessions_per_sec, 3);
        assert_eq!(l.max_sessions, 2000);
        let garbage = super::parse_status("min idle cpu x/y\n-ERR\n");
        assert_eq!(garbage, super::NodeLoad::default());
    }

    use super::*;

    fn hello() -> AgentMsg {
        AgentMsg::Hello(Hello {
            wire_version: WIRE_VERSION,
            node_id: "fs1".into(),
            agent_version: "0.1.0".into(),
            agent_instance: "i1".into(),
            hostname: Some("fs1".into()),
            core_uuid: Some("c1".into()),
            fs_version: None,
            profiles: vec![Profile {
                name: "external".into(),
                url: "sip:mod_sofia@1.2.3.4:5080".into(),
            }],
            resend_from: 0,
        })
    }

    #[test]
    fn frames_round_trip_split_anywhere() {
        let msgs = vec![
            hello(),
            AgentMsg::Events(vec![WireEvent {
                seq: 1,
                received_us: 5,
                headers: pack_headers([
                    (&b"Event-Name"[..], &b"CHANNEL_CREATE"[..]),
                    (b"X", &[0xff, 0]),
                ]),
                body: Some(serde_bytes::ByteBuf::from(b"body".to_vec())),
                plain: false,
            }]),
            AgentMsg::Status(EslState::Down("refused".into())),
        ];
        let mut bytes = Vec::new();
        for m in &msgs {
            bytes.extend(encode(m).unwrap());
        }
        for cut in 0..bytes.len() {
            let mut d = FrameDecoder::new(0);
            let mut got = Vec::new();
            d.feed(&bytes[..cut]);
            while let Some(m) = d.next_msg::<AgentMsg>().unwrap() {
                got.push(m);
            }
            d.feed(&bytes[cut..]);
            while let Some(m) = d.next_msg::<AgentMsg>().unwrap() {
                got.push(m);
            }
            assert_eq!(got, msgs);
        }
    }

    #[test]
    fn borrowed_batches_encode_like_owned_ones() {
        let e = WireEvent {
            seq: 7,
            received_us: 1,
            headers: pack_headers([(&b"A"[..], &b"b"[..])]),
            body: None,
            plain: false,
        };
        let owned = encode(&AgentMsg::Events(vec![e.clone(), e.clone()])).unwrap();
        assert_eq!(encode_event_batch(&[&e, &e]).unwrap(), owned);
    }

    #[test]
    fn plain_and_packed_events_decode_to_the_same_event() {
        let text = b"Event-Name: BACKGROUND_JOB\nJob-UUID: j1\nX-Enc: a%20b%3Ac\nContent-Length: 4\n\n+OK\n".to_vec();
        assert_eq!(plain_event_name(&text), Some("BACKGROUND_JOB"));
        assert_eq!(plain_event_name(b"A: b\n\nEvent-Name: X\n"), None);
        let plain = WireEvent {
            seq: 1,
            received_us: 0,
            headers: text.clone(),
            body: None,
            plain: true,
        };
        let (packed, body) = crate::esl::Event::plain_to_packed(&text).unwrap();
        let packed = WireEvent {
            seq: 1,
            received_us: 0,
            headers: packed,
            body: body.map(serde_bytes::ByteBuf::from),
            plain: false,
        };
        let a = plain.into_event().unwrap();
        let b = packed.into_event().unwrap();
        assert_eq!(a.headers, b.headers);
        assert_eq!(a.body, b.body);
        assert_eq!(a.get("X-Enc"), Some("a b:c"));
        assert_eq!(a.body.as_deref(), Some(&b"+OK\n"[..]));
        let bad = WireEvent {
            seq: 2,
            received_us: 0,
            headers: b"no colon here\n\n".to_vec(),
            body: None,
            plain: true,
        };
        assert!(bad.into_event().is_err());
    }

    #[test]
    fn hostile_length_is_refused_before_allocating() {
        let mut d = FrameDecoder::new(1024);
        d.feed(&u32::MAX.to_be_bytes());
        assert!(matches!(
            d.next_msg::<AgentMsg>(),
            Err(WireError::TooLarge(_, 1024))
        ));
        // A length that fits but lies about a vector's size inside.
        let mut evil = vec![];
        let payload = [2u8, 0xfc, 0xff, 0xff, 0xff, 0x7f];
        evil.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        evil.extend_from_slice(&payload);
        let mut d = FrameDecoder::new(0);
        d.feed(&evil);
        assert!(d.next_msg::<AgentMsg>().is_err());
    }

    #[test]
    fn packed_headers_round_trip_and_lies_are_errors() {
        let p = pack_headers([(&b"A"[..], &b"1"[..]), (b"B", b"")]);
        assert_eq!(
            unpack_headers(&p).unwrap(),
            vec![(&b"A"[..], &b"1"[..]), (&b"B"[..], &b""[..])]
        );
        for cut in 0..p.len() {
            let r = unpack_headers(&p[..cut]);
            assert!(r.is_err() || cut == 0 || cut == 10, "cut {cut}: {r:?}");
        }
        assert!(unpack_headers(&[255, 255, 255, 255, 1]).is_err());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for g in [
            &[0u8, 0, 0, 3, 9, 9, 9][..],
            &[0, 0, 0, 1, 200],
            &[0, 0, 0, 0],
        ] {
            let mut d = FrameDecoder::new(0);
            d.feed(g);
            assert!(d.next_msg::<AgentMsg>().is_err() || d.next_msg::<ControllerMsg>().is_err());
        }
    }
}
