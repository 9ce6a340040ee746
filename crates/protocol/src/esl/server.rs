//! The server side of ESL, for speaking as FreeSWITCH does (mock-relay):
//! an incremental decoder of client commands, a parser of their keywords,
//! and encoders of every server frame with FreeSWITCH's exact layout.

use super::event::{Event, EventFormat};
use super::headers::Headers;

/// The text of the normal disconnect notice.
pub const GOODBYE: &str = "Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n";
/// The disconnect notice on shutdown.
pub const SHUTDOWN_NOTICE: &str = "The system is being shut down.\n";
/// The ACL rejection text.
pub const RUDE_REJECTION: &str = "Access Denied, go away.\n";

/// Largest client command body FreeSWITCH accepts.
pub const MAX_CLIENT_BODY: usize = 16 * 1024 * 1024;
/// Default cap on a client command header block.
pub const DEFAULT_MAX_CLIENT_BLOCK: usize = 1024 * 1024;

/// A client command as received: the command line, the header lines (raw
/// values) and the optional body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCommand {
    /// The first line (CR removed; lossy UTF-8).
    pub line: String,
    /// Header lines after the command line.
    pub headers: Headers,
    /// The `Content-Length` body.
    pub body: Option<Vec<u8>>,
}

/// Why the client's byte stream cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientDecodeError {
    /// `Content-Length` negative, not a number, or above 16 MiB. FreeSWITCH
    /// drops the connection.
    #[error("invalid command Content-Length {value:?} (0..=16 MiB)")]
    BadContentLength {
        /// The value as received.
        value: String,
    },
    /// Header block larger than the configured maximum.
    #[error("command header block exceeds {max} bytes")]
    BlockTooLarge {
        /// The limit.
        max: usize,
    },
}

/// Incremental decoder of client commands (the server's reader).
///
/// Lines end in LF; CR is ignored, as FreeSWITCH does; empty lines before a
/// command are skipped.
#[derive(Debug)]
pub struct CommandDecoder {
    buf: Vec<u8>,
    start: usize,
    max_block: usize,
    pending: Option<(ClientCommand, usize)>,
    failed: Option<ClientDecodeError>,
}

impl Default for CommandDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl CommandDecoder {
    /// A decoder with the default header-block limit.
    pub fn new() -> Self {
        Self::with_max_block(DEFAULT_MAX_CLIENT_BLOCK)
    }

    /// A decoder with the given header-block limit.
    pub fn with_max_block(max_block: usize) -> Self {
        CommandDecoder {
            buf: Vec::with_capacity(1024),
            start: 0,
            max_block,
            pending: None,
            failed: None,
        }
    }

    /// Appends received bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.start > 0 && (self.start == self.buf.len() || self.start > 64 * 1024) {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet returned as commands.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next complete command, `Ok(None)` when more bytes are needed.
    pub fn next_command(&mut self) -> Result<Option<ClientCommand>, ClientDecodeError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if let Some((_, len)) = &self.pending {
            let len = *len;
            if self.buf.len() - self.start < len {
                return Ok(None);
            }
            let body = self.buf[self.start..self.start + len].to_vec();
            self.start += len;
            let Some((mut cmd, _)) = self.pending.take() else {
                return Ok(None);
            };
            cmd.body = Some(body);
            return Ok(Some(cmd));
        }
        // Skip leading empty lines (LF, with CRs ignored).
        while self.start < self.buf.len() && matches!(self.buf[self.start], b'\n' | b'\r') {
            self.start += 1;
        }
        // Find a blank line: LF, any CRs, LF.
        let data = &self.buf[self.start..];
        let mut end = None;
        let mut search = 0;
        while let Some(p) = memchr::memchr(b'\n', &data[search..]) {
            let nl = search + p;
            let mut q = nl + 1;
            while q < data.len() && data[q] == b'\r' {
                q += 1;
            }
            if q < data.len() && data[q] == b'\n' {
                end = Some((nl, q + 1));
                break;
            }
            search = nl + 1;
        }
        let Some((block_end, next)) = end else {
            if data.len() > self.max_block {
                let e = ClientDecodeError::BlockTooLarge {
                    max: self.max_block,
                };
                self.failed = Some(e.clone());
                return Err(e);
            }
            return Ok(None);
        };
        let block = &data[..block_end];
        let mut lines = block.split(|&b| b == b'\n').map(|l| {
            let l: &[u8] = l;
            let mut l = l;
            while let [rest @ .., b'\r'] = l {
                l = rest;
            }
            l
        });
        let first = lines.next().unwrap_or_default();
        // The command ends at the first CR as well.
        let first = match memchr::memchr(b'\r', first) {
            Some(p) => &first[..p],
            None => first,
        };
        let line = String::from_utf8_lossy(first).into_owned();
        let mut headers = Headers::new();
        for l in lines {
            // Lines without a colon are ignored, as FreeSWITCH does.
            if let Some(c) = memchr::memchr(b':', l) {
                let mut v = &l[c + 1..];
                while let [b' ', rest @ ..] = v {
                    v = rest;
                }
                headers.push_raw(&l[..c], v);
            }
        }
        self.start += next;
        let cmd = ClientCommand {
            line,
            headers,
            body: None,
        };
        match cmd.headers.get("Content-Length") {
            None => Ok(Some(cmd)),
            Some(v) => {
                let n = v
                    .trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|&n| n <= MAX_CLIENT_BODY);
                match n {
                    None => {
                        let e = ClientDecodeError::BadContentLength {
                            value: v.chars().take(64).collect(),
                        };
                        self.failed = Some(e.clone());
                        Err(e)
                    }
                    Some(n) => {
                        self.pending = Some((cmd, n));
                        self.next_command()
                    }
                }
            }
        }
    }
}

/// A client command recognised by its keyword (prefix, case-insensitive,
/// in FreeSWITCH's order).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParsedCommand {
    /// `auth <password>`.
    Auth(String),
    /// `userauth <user>@<domain>:<password>`.
    UserAuth(String),
    /// `exit` (or `...`).
    Exit,
    /// `api <command> [<args>]`: command name and argument string.
    Api(String, String),
    /// `bgapi <command> [<args>]`.
    BgApi(String, String),
    /// `event [format] <tokens…>`: format if given, then the remaining tokens.
    Event(Option<String>, Vec<String>),
    /// `nixevent <tokens…>`.
    NixEvent(Vec<String>),
    /// `noevents`.
    NoEvents,
    /// `filter …`: the argument text.
    Filter(String),
    /// `myevents [uuid] [format]`.
    MyEvents(Vec<String>),
    /// `divert_events …`.
    DivertEvents(String),
    /// `sendevent <name>`.
    SendEvent(String),
    /// `sendmsg [uuid]`.
    SendMsg(Option<String>),
    /// `log [level]`.
    Log(Option<String>),
    /// `nolog`.
    NoLog,
    /// `linger [secs]`.
    Linger(Option<String>),
    /// `nolinger`.
    NoLinger,
    /// Session-only commands (`resume`, `getvar`, `connect`).
    SessionOnly(String),
    /// Anything else.
    Unknown(String),
}

fn strip_kw<'a>(line: &'a str, kw: &str) -> Option<&'a str> {
    let head = line.get(..kw.len())?;
    if !head.eq_ignore_ascii_case(kw) {
        return None;
    }
    // Prefix match: `events` is `event`; the argument starts after the
    // first space.
    let rest = &line[kw.len()..];
    Some(match rest.find(' ') {
        Some(p) => rest[p + 1..].trim_start_matches(' '),
        None => "",
    })
}

impl ParsedCommand {
    /// Recognises a command line.
    pub fn parse(line: &str) -> ParsedCommand {
        let words = |s: &str| -> Vec<String> {
            s.split(' ')
                .filter(|w| !w.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        if let Some(a) = strip_kw(line, "auth") {
            return ParsedCommand::Auth(a.to_owned());
        }
        if let Some(a) = strip_kw(line, "userauth") {
            return ParsedCommand::UserAuth(a.to_owned());
        }
        if strip_kw(line, "exit").is_some() || strip_kw(line, "...").is_some() {
            return ParsedCommand::Exit;
        }
        let split_api = |a: &str| match a.split_once(' ') {
            Some((c, args)) => (c.to_owned(), args.to_owned()),
            None => (a.to_owned(), String::new()),
        };
        if let Some(a) = strip_kw(line, "bgapi") {
            let (c, args) = split_api(a);
            return ParsedCommand::BgApi(c, args);
        }
        if let Some(a) = strip_kw(line, "api") {
            let (c, args) = split_api(a);
            return ParsedCommand::Api(c, args);
        }
        if let Some(a) = strip_kw(line, "divert_events") {
            return ParsedCommand::DivertEvents(a.to_owned());
        }
        if let Some(a) = strip_kw(line, "filter") {
            return ParsedCommand::Filter(a.to_owned());
        }
        if let Some(a) = strip_kw(line, "nixevent") {
            return ParsedCommand::NixEvent(words(a));
        }
        if strip_kw(line, "noevents").is_some() {
            return ParsedCommand::NoEvents;
        }
        if let Some(a) = strip_kw(line, "sendevent") {
            return ParsedCommand::SendEvent(a.trim().to_owned());
        }
        if let Some(a) = strip_kw(line, "sendmsg") {
            return ParsedCommand::SendMsg(opt(a.trim()));
        }
        if let Some(a) = strip_kw(line, "myevents") {
            return ParsedCommand::MyEvents(words(a));
        }
        if let Some(a) = strip_kw(line, "event") {
            let mut w = words(a);
            let format = match w.first() {
                Some(f)
                    if ["plain", "json", "xml"]
                        .iter()
                        .any(|k| f.eq_ignore_ascii_case(k)) =>
                {
                    Some(w.remove(0))
                }
                _ => None,
            };
            return ParsedCommand::Event(format, w);
        }
        if let Some(a) = strip_kw(line, "nolog") {
            let _ = a;
            return ParsedCommand::NoLog;
        }
        if let Some(a) = strip_kw(line, "log") {
            return ParsedCommand::Log(opt(a.trim()));
        }
        if strip_kw(line, "nolinger").is_some() {
            return ParsedCommand::NoLinger;
        }
        if let Some(a) = strip_kw(line, "linger") {
            return ParsedCommand::Linger(opt(a.trim()));
        }
        for kw in ["resume", "getvar", "connect"] {
            if strip_kw(line, kw).is_some() {
                return ParsedCommand::SessionOnly(kw.to_owned());
            }
        }
        ParsedCommand::Unknown(line.to_owned())
    }
}

/// Appends the greeting `auth/request`.
pub fn encode_auth_request(out: &mut Vec<u8>) {
    out.extend_from_slice(b"Content-Type: auth/request\n\n");
}

/// Appends a `command/reply` with `Reply-Text` and extra headers.
pub fn encode_command_reply(reply_text: &str, extra: &[(&str, &str)], out: &mut Vec<u8>) {
    out.extend_from_slice(b"Content-Type: command/reply\nReply-Text: ");
    out.extend_from_slice(reply_text.as_bytes());
    out.push(b'\n');
    for (k, v) in extra {
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
}

/// Appends an `api/response`; empty output becomes `-ERR no reply\n` as in
/// FreeSWITCH.
pub fn encode_api_response(body: &[u8], out: &mut Vec<u8>) {
    let body: &[u8] = if body.is_empty() {
        b"-ERR no reply\n"
    } else {
        body
    };
    out.extend_from_slice(b"Content-Type: api/response\nContent-Length: ");
    out.extend_from_slice(body.len().to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
    out.extend_from_slice(body);
}

/// Appends an event frame in `format` (outer `Content-Length` first).
pub fn encode_event(event: &Event, format: EventFormat, out: &mut Vec<u8>) {
    let body = event.encode(format);
    encode_event_body(&body, format, out);
}

/// Appends an event frame around an already serialized body.
pub fn encode_event_body(body: &[u8], format: EventFormat, out: &mut Vec<u8>) {
    out.extend_from_slice(b"Content-Length: ");
    out.extend_from_slice(body.len().to_string().as_bytes());
    out.extend_from_slice(b"\nContent-Type: ");
    out.extend_from_slice(format.content_type().as_bytes());
    out.extend_from_slice(b"\n\n");
    out.extend_from_slice(body);
}

/// Appends a `text/disconnect-notice` with `text` (e.g. [`GOODBYE`]).
pub fn encode_disconnect_notice(text: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(b"Content-Type: text/disconnect-notice\nContent-Length: ");
    out.extend_from_slice(text.len().to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
    out.extend_from_slice(text.as_bytes());
}

/// Appends a `text/rude-rejection` (ACL refusal).
pub fn encode_rude_rejection(out: &mut Vec<u8>) {
    out.extend_from_slice(b"Content-Type: text/rude-rejection\nContent-Length: ");
    out.extend_from_slice(RUDE_REJECTION.len().to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
    out.extend_from_slice(RUDE_REJECTION.as_bytes());
}

/// A `log/data` frame's fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine<'a> {
    /// 0 (console) … 7 (debug).
    pub level: u8,
    /// Internal log channel id.
    pub text_channel: u8,
    /// Source file.
    pub file: &'a str,
    /// Source function.
    pub func: &'a str,
    /// Source line.
    pub line: u32,
    /// Session UUID or empty.
    pub user_data: &'a str,
    /// The formatted log text, ending in LF.
    pub text: &'a str,
}

/// Appends a `log/data` frame in FreeSWITCH's header order.
pub fn encode_log_data(l: &LogLine<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(
        format!(
            "Content-Type: log/data\nContent-Length: {}\nLog-Level: {}\nText-Channel: {}\nLog-File: {}\nLog-Func: {}\nLog-Line: {}\nUser-Data: {}\n\n",
            l.text.len(),
            l.level,
            l.text_channel,
            l.file,
            l.func,
            l.line,
            l.user_data
        )
        .as_bytes(),
    );
    out.extend_from_slice(l.text.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(bytes: &[u8]) -> Vec<ClientCommand> {
        let mut d = CommandDecoder::new();
        d.feed(bytes);
        let mut v = Vec::new();
        while let Some(c) = d.next_command().unwrap() {
            v.push(c);
        }
        v
    }

    #[test]
    fn decodes_commands_with_headers_bodies_crlf_and_blank_lines() {
        let cmds = all(b"\n\nauth ClueCon\r\n\r\nbgapi status\nJob-UUID: j1\n\nsendmsg u1\ncall-command: execute\ncontent-length: 3\n\na\nbexit\n\n");
        assert_eq!(cmds.len(), 4);
        assert_eq!(cmds[0].line, "auth ClueCon");
        assert_eq!(cmds[1].headers.get("job-uuid"), Some("j1"));
        assert_eq!(cmds[2].body.as_deref(), Some(&b"a\nb"[..]));
        assert_eq!(ParsedCommand::parse(&cmds[3].line), ParsedCommand::Exit);
    }

    #[test]
    fn single_lf_is_not_enough() {
        let mut d = CommandDecoder::new();
        d.feed(b"api status\n");
        assert_eq!(d.next_command().unwrap(), None);
        d.feed(b"\n");
        assert_eq!(d.next_command().unwrap().unwrap().line, "api status");
    }

    #[test]
    fn bad_body_length_is_an_error() {
        for bad in [
            &b"sendevent X\nContent-Length: -1\n\n"[..],
            b"sendevent X\nContent-Length: 99999999999\n\n",
        ] {
            let mut d = CommandDecoder::new();
            d.feed(bad);
            assert!(d.next_command().is_err());
        }
    }

    #[test]
    fn keywords_match_by_prefix_like_freeswitch() {
        assert_eq!(
            ParsedCommand::parse("events plain ALL"),
            ParsedCommand::Event(Some("plain".into()), vec!["ALL".into()])
        );
        assert_eq!(ParsedCommand::parse("exitnow"), ParsedCommand::Exit);
        assert_eq!(ParsedCommand::parse("logfoo"), ParsedCommand::Log(None));
        assert_eq!(ParsedCommand::parse("nolog"), ParsedCommand::NoLog);
        assert_eq!(ParsedCommand::parse("nolinger"), ParsedCommand::NoLinger);
        assert_eq!(ParsedCommand::parse("noevents"), ParsedCommand::NoEvents);
        assert_eq!(
            ParsedCommand::parse("API uuid_kill x y"),
            ParsedCommand::Api("uuid_kill".into(), "x y".into())
        );
        assert_eq!(
            ParsedCommand::parse("bgapi status"),
            ParsedCommand::BgApi("status".into(), String::new())
        );
        assert_eq!(
            ParsedCommand::parse("filter Unique-ID a b"),
            ParsedCommand::Filter("Unique-ID a b".into())
        );
        assert_eq!(
            ParsedCommand::parse("nosuchcommand"),
            ParsedCommand::Unknown("nosuchcommand".into())
        );
    }

    #[test]
    fn server_frames_are_byte_exact() {
        let mut out = Vec::new();
        encode_command_reply("+OK Job-UUID: j1", &[("Job-UUID", "j1")], &mut out);
        assert_eq!(
            out,
            b"Content-Type: command/reply\nReply-Text: +OK Job-UUID: j1\nJob-UUID: j1\n\n"
        );
        out.clear();
        encode_api_response(b"", &mut out);
        assert_eq!(
            out,
            b"Content-Type: api/response\nContent-Length: 14\n\n-ERR no reply\n"
        );
        out.clear();
        encode_disconnect_notice(GOODBYE, &mut out);
        assert_eq!(out.len(), 124);
        out.clear();
        encode_rude_rejection(&mut out);
        assert_eq!(
            out,
            b"Content-Type: text/rude-rejection\nContent-Length: 24\n\nAccess Denied, go away.\n"
        );
    }
}
