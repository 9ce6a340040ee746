//! Incremental decoder for frames a FreeSWITCH server sends to a client.
//!
//! Feed it bytes split anywhere (one at a time included) and take whole
//! frames out. A frame is a header block ending in an empty line, then,
//! when there is a `Content-Length`, exactly that many body bytes.

use super::event::{Event, EventError, EventFormat};
use super::headers::Headers;
use super::reply::{ApiResponse, CommandReply};

/// Default maximum frame body (FreeSWITCH's own client refuses more than 16 MiB).
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;
/// Default maximum size of one frame's header block.
pub const DEFAULT_MAX_HEADER_BLOCK: usize = 64 * 1024;

/// Limits of a [`Decoder`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecoderConfig {
    /// Largest accepted `Content-Length`.
    pub max_frame: usize,
    /// Largest header block (bytes before the empty line).
    pub max_header_block: usize,
}

impl Default for DecoderConfig {
    fn default() -> Self {
        DecoderConfig {
            max_frame: DEFAULT_MAX_FRAME,
            max_header_block: DEFAULT_MAX_HEADER_BLOCK,
        }
    }
}

/// Why the byte stream cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// `Content-Length` is larger than the configured maximum. Fatal.
    #[error(
        "frame body of {declared} bytes exceeds the {max}-byte limit; raise max_frame if the peer is trusted, else drop the connection"
    )]
    FrameTooLarge {
        /// The declared length.
        declared: u64,
        /// The limit in force.
        max: usize,
    },
    /// A header block longer than the configured maximum. Fatal.
    #[error("header block exceeds {max} bytes without an empty line: the peer is not speaking ESL")]
    HeaderBlockTooLarge {
        /// The limit in force.
        max: usize,
    },
    /// `Content-Length` is not a decimal number. Fatal: framing is lost.
    #[error("invalid Content-Length {value:?}: the peer is not speaking ESL")]
    BadContentLength {
        /// The value as received (lossy).
        value: String,
    },
    /// A header line without `:`. Fatal.
    #[error("frame header line {line:?} has no ':' separator: the peer is not speaking ESL")]
    MalformedHeader {
        /// The line as received (lossy, truncated).
        line: String,
    },
    /// An event frame whose body could not be decoded. Not fatal: the frame
    /// was skipped and the stream goes on.
    #[error("undecodable {format:?} event skipped: {source}")]
    Event {
        /// The event format of the frame.
        format: EventFormat,
        /// What was wrong.
        #[source]
        source: EventError,
        /// The raw body, so nothing is lost.
        raw: Vec<u8>,
    },
}

impl DecodeError {
    /// True when the stream is unusable after this error (drop the connection).
    pub fn is_fatal(&self) -> bool {
        !matches!(self, DecodeError::Event { .. })
    }
}

/// One raw frame: its (un-decoded) header block and optional body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Outer headers, values as sent (not percent-decoded).
    pub headers: Headers,
    /// The `Content-Length` body, if any.
    pub body: Option<Vec<u8>>,
}

impl Frame {
    /// The `Content-Type` header.
    pub fn content_type(&self) -> Option<&str> {
        self.headers.get("Content-Type")
    }
}

/// A decoded server frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// `auth/request`: the greeting.
    AuthRequest,
    /// `command/reply`: the reply to every command but `api`.
    CommandReply(CommandReply),
    /// `api/response`: the reply to `api`.
    ApiResponse(ApiResponse),
    /// `text/event-*`: an event, in the format it arrived in.
    Event(EventFormat, Event),
    /// `text/disconnect-notice`: the server is closing the connection.
    DisconnectNotice(Frame),
    /// `log/data`: a log line (`Log-Level` etc. in the headers).
    LogData(Frame),
    /// `text/rude-rejection`: refused by the server's ACL.
    RudeRejection(Frame),
    /// Any other content type, kept raw.
    Unknown(Frame),
}

impl Message {
    /// Classifies a raw frame, decoding event bodies.
    pub fn from_frame(frame: Frame) -> Result<Message, DecodeError> {
        let format = match frame.content_type() {
            Some("auth/request") => return Ok(Message::AuthRequest),
            Some("command/reply") => {
                return Ok(Message::CommandReply(CommandReply {
                    headers: frame.headers,
                }));
            }
            Some("api/response") => {
                return Ok(Message::ApiResponse(ApiResponse {
                    body: frame.body.unwrap_or_default(),
                }));
            }
            Some("text/event-plain") => EventFormat::Plain,
            Some("text/event-json") => EventFormat::Json,
            Some("text/event-xml") => EventFormat::Xml,
            Some("text/disconnect-notice") => return Ok(Message::DisconnectNotice(frame)),
            Some("log/data") => return Ok(Message::LogData(frame)),
            Some("text/rude-rejection") => return Ok(Message::RudeRejection(frame)),
            _ => return Ok(Message::Unknown(frame)),
        };
        let body = frame.body.unwrap_or_default();
        match Event::decode_owned(format, body) {
            Ok(e) => Ok(Message::Event(format, e)),
            Err((source, raw)) => Err(DecodeError::Event {
                format,
                source,
                raw,
            }),
        }
    }
}

#[derive(Debug)]
enum State {
    /// Looking for the end of a header block; `scan` is where to resume.
    Headers { scan: usize },
    /// Header block parsed; waiting for `len` body bytes. `headers` is
    /// None for FreeSWITCH's own event block (`Content-Length`, then
    /// `Content-Type: text/event-*`), recognised without building a map.
    Body {
        headers: Option<Headers>,
        event: Option<EventFormat>,
        len: usize,
    },
}

/// A frame, or an event frame recognised on the fast path.
enum Raw {
    Frame(Frame),
    Event(EventFormat, Vec<u8>),
}

/// `Content-Length: N\nContent-Type: text/event-FMT`, exactly as FreeSWITCH
/// writes an event's outer header block.
fn fast_event_block(block: &[u8]) -> Option<(u64, EventFormat)> {
    let rest = block.strip_prefix(b"Content-Length: ")?;
    let nl = memchr::memchr(b'\n', rest)?;
    let digits = &rest[..nl];
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits
        .iter()
        .fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'));
    let format = match rest[nl + 1..].strip_prefix(b"Content-Type: text/event-")? {
        b"plain" => EventFormat::Plain,
        b"json" => EventFormat::Json,
        b"xml" => EventFormat::Xml,
        _ => return None,
    };
    Some((n, format))
}

/// Incremental, sans-IO decoder of server frames.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Start of unconsumed bytes in `buf`.
    start: usize,
    state: State,
    config: DecoderConfig,
    failed: Option<DecodeError>,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    /// A decoder with default limits.
    pub fn new() -> Self {
        Self::with_config(DecoderConfig::default())
    }

    /// A decoder with the given limits.
    pub fn with_config(config: DecoderConfig) -> Self {
        Decoder {
            buf: Vec::with_capacity(8192),
            start: 0,
            state: State::Headers { scan: 0 },
            config,
            failed: None,
        }
    }

    /// Appends received bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            if let State::Headers { scan } = &mut self.state {
                *scan = 0;
            }
            self.start = 0;
        } else if self.start > 64 * 1024 && self.start * 2 > self.buf.len() {
            self.buf.drain(..self.start);
            if let State::Headers { scan } = &mut self.state {
                *scan -= self.start;
            }
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    fn fail(&mut self, e: DecodeError) -> DecodeError {
        self.failed = Some(e.clone());
        e
    }

    /// The next whole frame, `Ok(None)` when more bytes are needed. After a
    /// fatal error every call returns that error again.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, DecodeError> {
        Ok(match self.next_raw()? {
            None => None,
            Some(Raw::Frame(f)) => Some(f),
            Some(Raw::Event(format, body)) => {
                let mut headers = Headers::with_capacity(2, 48);
                headers.push("Content-Length", body.len().to_string());
                headers.push("Content-Type", format.content_type());
                Some(Frame {
                    headers,
                    body: Some(body),
                })
            }
        })
    }

    fn next_raw(&mut self) -> Result<Option<Raw>, DecodeError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        loop {
            match &mut self.state {
                State::Headers { scan } => {
                    // Skip stray blank lines before a header block.
                    while self.start < self.buf.len() && self.buf[self.start] == b'\n' {
                        self.start += 1;
                    }
                    let from = (*scan).max(self.start);
                    let Some(p) = memchr::memmem::find(&self.buf[from..], b"\n\n") else {
                        let pending = self.buf.len() - self.start;
                        if pending > self.config.max_header_block {
                            let e = DecodeError::HeaderBlockTooLarge {
                                max: self.config.max_header_block,
                            };
                            return Err(self.fail(e));
                        }
                        // Resume one byte early: the "\n\n" may straddle feeds.
                        *scan = self.buf.len().saturating_sub(1).max(self.start);
                        return Ok(None);
                    };
                    let end = from + p;
                    if end - self.start > self.config.max_header_block {
                        let e = DecodeError::HeaderBlockTooLarge {
                            max: self.config.max_header_block,
                        };
                        return Err(self.fail(e));
                    }
                    if let Some((n, format)) = fast_event_block(&self.buf[self.start..end]) {
                        if n > self.config.max_frame as u64 {
                            let e = DecodeError::FrameTooLarge {
                                declared: n,
                                max: self.config.max_frame,
                            };
                            return Err(self.fail(e));
                        }
                        self.start = end + 2;
                        self.state = State::Body {
                            headers: None,
                            event: Some(format),
                            len: n as usize,
                        };
                        continue;
                    }
                    let headers = match parse_header_block(&self.buf[self.start..end]) {
                        Ok(h) => h,
                        Err(e) => return Err(self.fail(e)),
                    };
                    self.start = end + 2;
                    let len = match headers.get("Content-Length") {
                        None => {
                            self.state = State::Headers { scan: self.start };
                            return Ok(Some(Raw::Frame(Frame {
                                headers,
                                body: None,
                            })));
                        }
                        Some(v) => match parse_length(v) {
                            Some(n) if n > self.config.max_frame as u64 => {
                                let e = DecodeError::FrameTooLarge {
                                    declared: n,
                                    max: self.config.max_frame,
                                };
                                return Err(self.fail(e));
                            }
                            Some(n) => n as usize,
                            None => {
                                let e = DecodeError::BadContentLength {
                                    value: v.chars().take(64).collect(),
                                };
                                return Err(self.fail(e));
                            }
                        },
                    };
                    self.state = State::Body {
                        headers: Some(headers),
                        event: None,
                        len,
                    };
                }
                State::Body { len, .. } => {
                    let len = *len;
                    if self.buf.len() - self.start < len {
                        return Ok(None);
                    }
                    let body = self.buf[self.start..self.start + len].to_vec();
                    self.start += len;
                    let State::Body { headers, event, .. } =
                        std::mem::replace(&mut self.state, State::Headers { scan: self.start })
                    else {
                        unreachable!("state was just matched as Body")
                    };
                    return Ok(Some(match (headers, event) {
                        (Some(headers), _) => Raw::Frame(Frame {
                            headers,
                            body: Some(body),
                        }),
                        (None, Some(format)) => Raw::Event(format, body),
                        (None, None) => Raw::Frame(Frame {
                            headers: Headers::new(),
                            body: Some(body),
                        }),
                    }));
                }
            }
        }
    }

    /// The next whole frame, classified and with its event decoded.
    pub fn next_message(&mut self) -> Result<Option<Message>, DecodeError> {
        match self.next_raw()? {
            Some(Raw::Frame(f)) => Message::from_frame(f).map(Some),
            Some(Raw::Event(format, body)) => match Event::decode_owned(format, body) {
                Ok(e) => Ok(Some(Message::Event(format, e))),
                Err((source, raw)) => Err(DecodeError::Event {
                    format,
                    source,
                    raw,
                }),
            },
            None => Ok(None),
        }
    }
}

fn parse_length(v: &str) -> Option<u64> {
    let v = v.trim();
    if v.is_empty() || v.len() > 19 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

/// Parses `Name: value` lines (values raw). Lines end in LF; a trailing CR
/// is dropped.
pub(crate) fn parse_header_block(block: &[u8]) -> Result<Headers, DecodeError> {
    match Headers::parse_lines(block.to_vec(), false) {
        Ok((h, _)) => Ok(h),
        Err((line, src)) => {
            let text = src.split(|&b| b == b'\n').nth(line - 1).unwrap_or_default();
            Err(DecodeError::MalformedHeader {
                line: String::from_utf8_lossy(&text[..text.len().min(80)]).into_owned(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_anywhere() {
        let stream = b"Content-Type: auth/request\n\nContent-Type: api/response\nContent-Length: 4\n\ntrueContent-Type: command/reply\nReply-Text: +OK accepted\n\n";
        for split in 0..stream.len() {
            let mut d = Decoder::new();
            d.feed(&stream[..split]);
            let mut got = Vec::new();
            while let Some(m) = d.next_message().unwrap() {
                got.push(m);
            }
            d.feed(&stream[split..]);
            while let Some(m) = d.next_message().unwrap() {
                got.push(m);
            }
            assert_eq!(got.len(), 3, "split at {split}");
            assert_eq!(got[0], Message::AuthRequest);
            assert!(matches!(&got[1], Message::ApiResponse(a) if a.body == b"true"));
            assert!(
                matches!(&got[2], Message::CommandReply(r) if r.reply_text() == Some("+OK accepted"))
            );
            assert_eq!(d.buffered(), 0);
        }
    }

    #[test]
    fn oversized_content_length_fails_before_allocating() {
        let mut d = Decoder::with_config(DecoderConfig {
            max_frame: 1024,
            ..Default::default()
        });
        d.feed(b"Content-Type: api/response\nContent-Length: 99999999999999\n\n");
        assert_eq!(
            d.next_frame(),
            Err(DecodeError::FrameTooLarge {
                declared: 99_999_999_999_999,
                max: 1024
            })
        );
        // Poisoned: stays failed.
        d.feed(b"Content-Type: auth/request\n\n");
        assert!(d.next_frame().unwrap_err().is_fatal());
    }

    #[test]
    fn bad_lengths_and_lines_are_fatal_errors() {
        for bad in [
            &b"Content-Length: -1\n\n"[..],
            b"Content-Length: 12abc\n\n",
            b"Content-Length: 99999999999999999999999\n\n",
            b"garbage without colon\n\n",
        ] {
            let mut d = Decoder::new();
            d.feed(bad);
            assert!(d.next_frame().unwrap_err().is_fatal(), "{bad:?}");
        }
    }

    #[test]
    fn endless_header_block_is_bounded() {
        let mut d = Decoder::with_config(DecoderConfig {
            max_header_block: 100,
            ..Default::default()
        });
        for _ in 0..20 {
            d.feed(b"X-Header: aaaaaaaa\n");
            if let Err(e) = d.next_frame() {
                assert_eq!(e, DecodeError::HeaderBlockTooLarge { max: 100 });
                return;
            }
        }
        panic!("header block limit never hit");
    }

    #[test]
    fn bad_event_body_is_skipped_not_fatal() {
        let mut d = Decoder::new();
        d.feed(b"Content-Length: 5\nContent-Type: text/event-json\n\n{bad}Content-Type: auth/request\n\n");
        let e = d.next_message().unwrap_err();
        assert!(!e.is_fatal());
        assert!(matches!(&e, DecodeError::Event { raw, .. } if raw == b"{bad}"));
        assert_eq!(d.next_message().unwrap(), Some(Message::AuthRequest));
    }

    #[test]
    fn unknown_content_type_is_kept_raw() {
        let mut d = Decoder::new();
        d.feed(b"Content-Type: text/x-new\nContent-Length: 2\nX: y\n\nhi");
        match d.next_message().unwrap() {
            Some(Message::Unknown(f)) => {
                assert_eq!(f.body.as_deref(), Some(&b"hi"[..]));
                assert_eq!(f.headers.get("X"), Some("y"));
            }
            other => panic!("{other:?}"),
        }
    }
}
