//! FreeSWITCH events: one type whatever format (plain, json, xml) they were
//! received in, with decoders and FreeSWITCH-exact encoders for all three.

use super::headers::{Headers, split_array};
use super::percent;
use std::borrow::Cow;

/// The serialization an ESL connection receives events in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum EventFormat {
    /// `text/event-plain`: header lines with percent-encoded values.
    #[default]
    Plain,
    /// `text/event-json`: one flat JSON object of strings.
    Json,
    /// `text/event-xml`: an `<event>` document.
    Xml,
}

impl EventFormat {
    /// The keyword used in `event <format> …`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventFormat::Plain => "plain",
            EventFormat::Json => "json",
            EventFormat::Xml => "xml",
        }
    }

    /// The `Content-Type` of frames carrying events in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            EventFormat::Plain => "text/event-plain",
            EventFormat::Json => "text/event-json",
            EventFormat::Xml => "text/event-xml",
        }
    }

    /// Parses a format keyword (case-insensitive).
    pub fn from_keyword(s: &str) -> Option<Self> {
        if s.eq_ignore_ascii_case("plain") {
            Some(EventFormat::Plain)
        } else if s.eq_ignore_ascii_case("json") {
            Some(EventFormat::Json)
        } else if s.eq_ignore_ascii_case("xml") {
            Some(EventFormat::Xml)
        } else {
            None
        }
    }
}

/// Why an event body could not be decoded. The frame around it was intact,
/// so the stream stays usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// A header line without a `:`.
    #[error("event header line {line} has no ':' separator")]
    MalformedHeader {
        /// 1-based line number inside the event body.
        line: usize,
    },
    /// The inner body is shorter or longer than its `Content-Length`.
    #[error("event body is {actual} bytes but its Content-Length says {declared}")]
    BodyLength {
        /// What the inner `Content-Length` said.
        declared: usize,
        /// What the frame held.
        actual: usize,
    },
    /// The JSON event is not a flat object of strings.
    #[error("invalid JSON event at byte {offset}: {reason}")]
    Json {
        /// Byte offset of the problem.
        offset: usize,
        /// What was expected.
        reason: &'static str,
    },
    /// The XML event is not FreeSWITCH's `<event><headers>…` shape.
    #[error("invalid XML event at byte {offset}: {reason}")]
    Xml {
        /// Byte offset of the problem.
        offset: usize,
        /// What was expected.
        reason: &'static str,
    },
}

/// One FreeSWITCH event: ordered headers (values decoded to their real bytes)
/// and an optional body.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Event {
    /// Headers in arrival order, duplicates kept. Values are decoded (no
    /// `%XX` left from the plain format); array values are in FreeSWITCH's
    /// `ARRAY::a|:b` form whatever the wire format was.
    pub headers: Headers,
    /// The event body (e.g. a BACKGROUND_JOB's command output).
    pub body: Option<Vec<u8>>,
}

impl Event {
    /// A new event with just an `Event-Name` header.
    pub fn new(name: &str) -> Self {
        let mut headers = Headers::with_capacity(32, 1024);
        headers.push("Event-Name", name);
        Event {
            headers,
            body: None,
        }
    }

    /// The first value of a header.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }

    /// `Event-Name`.
    pub fn event_name(&self) -> Option<&str> {
        self.get("Event-Name")
    }

    /// `Event-Subclass` (custom events).
    pub fn subclass(&self) -> Option<&str> {
        self.get("Event-Subclass")
    }

    /// `Unique-ID`: the channel the event is about.
    pub fn unique_id(&self) -> Option<&str> {
        self.get("Unique-ID")
    }

    /// `Job-UUID` (BACKGROUND_JOB).
    pub fn job_uuid(&self) -> Option<&str> {
        self.get("Job-UUID")
    }

    /// `Core-UUID`: the FreeSWITCH process that fired the event.
    pub fn core_uuid(&self) -> Option<&str> {
        self.get("Core-UUID")
    }

    /// A channel variable: the header `variable_<name>`.
    pub fn variable(&self, name: &str) -> Option<&str> {
        let mut key = String::with_capacity(9 + name.len());
        key.push_str("variable_");
        key.push_str(name);
        self.get(&key)
    }

    /// `Event-Date-Timestamp`: microseconds since the Unix epoch.
    pub fn timestamp(&self) -> Option<u64> {
        self.get("Event-Date-Timestamp")?.parse().ok()
    }

    /// `Event-Sequence`.
    pub fn sequence(&self) -> Option<u64> {
        self.get("Event-Sequence")?.parse().ok()
    }

    /// The values of an array header (a plain value is one item).
    pub fn get_array(&self, name: &str) -> Option<Vec<&str>> {
        self.headers.get(name).map(split_array)
    }

    /// The body as text (lossy for invalid UTF-8).
    pub fn body_text(&self) -> Option<Cow<'_, str>> {
        self.body.as_deref().map(String::from_utf8_lossy)
    }

    /// Appends a header (builder style).
    pub fn with(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers.push(name, value);
        self
    }

    /// Decodes an event body in the given format, taking ownership of the
    /// bytes; on error they are handed back.
    pub fn decode_owned(
        format: EventFormat,
        bytes: Vec<u8>,
    ) -> Result<Event, (EventError, Vec<u8>)> {
        match format {
            EventFormat::Plain => Self::decode_plain_owned(bytes),
            EventFormat::Json => Self::decode_json(&bytes).map_err(|e| (e, bytes)),
            EventFormat::Xml => Self::decode_xml(&bytes).map_err(|e| (e, bytes)),
        }
    }

    /// Decodes an event body in the given format.
    pub fn decode(format: EventFormat, bytes: &[u8]) -> Result<Event, EventError> {
        match format {
            EventFormat::Plain => Self::decode_plain(bytes),
            EventFormat::Json => Self::decode_json(bytes),
            EventFormat::Xml => Self::decode_xml(bytes),
        }
    }

    /// Decodes a `text/event-plain` body.
    pub fn decode_plain(bytes: &[u8]) -> Result<Event, EventError> {
        Self::decode_plain_owned(bytes.to_vec()).map_err(|(e, _)| e)
    }

    /// Decodes a `text/event-plain` body it takes ownership of (names and
    /// values without `%` escapes are not copied). On error the bytes are
    /// handed back.
    pub fn decode_plain_owned(bytes: Vec<u8>) -> Result<Event, (EventError, Vec<u8>)> {
        let (mut headers, pos) = match Headers::parse_lines(bytes, true) {
            Ok(v) => v,
            Err((line, src)) => return Err((EventError::MalformedHeader { line }, src)),
        };
        let rest = headers.source()[pos..].to_vec();
        match take_body(&mut headers, &rest) {
            Ok(body) => Ok(Event { headers, body }),
            Err(e) => Err((e, headers.source().to_vec())),
        }
    }

    /// Decodes a `text/event-plain` body straight into the packed header
    /// layout of [`Headers::from_packed`] (values percent-decoded), without
    /// building an index: what a relay needs. Returns (packed headers,
    /// body).
    pub fn plain_to_packed(bytes: &[u8]) -> Result<(Vec<u8>, Option<Vec<u8>>), EventError> {
        let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 8);
        let mut lines = super::scan::Lines::new(bytes);
        // Start of the last header in `out`, and its value, for the body's
        // Content-Length.
        let mut last: Option<(usize, bool, usize, usize)> = None;
        loop {
            let line = match lines.next_line(bytes) {
                Ok(Some(l)) => l,
                Ok(None) => break,
                Err(line) => return Err(EventError::MalformedHeader { line }),
            };
            let name = &bytes[line.name.clone()];
            let start = out.len();
            out.extend_from_slice(&(name.len() as u32).to_le_bytes());
            out.extend_from_slice(name);
            let len_at = out.len();
            out.extend_from_slice(&[0; 4]);
            lines.decode_value(bytes, &line, &mut out);
            let vlen = out.len() - len_at - 4;
            out[len_at..len_at + 4].copy_from_slice(&(vlen as u32).to_le_bytes());
            last = Some((
                start,
                name.eq_ignore_ascii_case(b"Content-Length"),
                len_at + 4,
                out.len(),
            ));
        }
        let pos = lines.pos();
        let rest = &bytes[pos.min(bytes.len())..];
        let declared = last
            .filter(|(_, is_cl, _, _)| *is_cl)
            .and_then(|(_, _, vs, ve)| {
                std::str::from_utf8(&out[vs..ve])
                    .ok()?
                    .trim()
                    .parse::<usize>()
                    .ok()
            });
        let body = match declared {
            Some(n) if rest.len() == n => {
                if let Some((start, ..)) = last {
                    out.truncate(start);
                }
                Some(rest.to_vec())
            }
            Some(_) if rest.is_empty() => None,
            Some(n) => {
                return Err(EventError::BodyLength {
                    declared: n,
                    actual: rest.len(),
                });
            }
            None if rest.is_empty() => None,
            None => Some(rest.to_vec()),
        };
        Ok((out, body))
    }

    /// Decodes a `text/event-json` body: one flat object whose values are
    /// strings or arrays of strings (other scalars are kept as their text).
    /// Duplicate keys are kept; invalid UTF-8 is kept as bytes.
    pub fn decode_json(bytes: &[u8]) -> Result<Event, EventError> {
        JsonParser {
            b: bytes,
            pos: 0,
            scratch: Vec::new(),
        }
        .parse()
    }

    /// Decodes a `text/event-xml` body.
    pub fn decode_xml(bytes: &[u8]) -> Result<Event, EventError> {
        XmlParser { b: bytes, pos: 0 }.parse()
    }

    /// Appends this event serialized as a `text/event-plain` body, exactly as
    /// FreeSWITCH writes it.
    pub fn encode_plain_into(&self, out: &mut Vec<u8>) {
        for (name, value) in self.headers.iter_bytes() {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            let before = out.len();
            percent::encode_into(value, out);
            if out.len() == before {
                out.extend_from_slice(b"_undef_");
            }
            out.push(b'\n');
        }
        match &self.body {
            Some(body) if !body.is_empty() => {
                out.extend_from_slice(b"Content-Length: ");
                out.extend_from_slice(body.len().to_string().as_bytes());
                out.extend_from_slice(b"\n\n");
                out.extend_from_slice(body);
            }
            _ => out.push(b'\n'),
        }
    }

    /// Appends this event serialized as a `text/event-json` body.
    pub fn encode_json_into(&self, out: &mut Vec<u8>) {
        out.push(b'{');
        let mut first = true;
        for (name, value) in self.headers.iter_bytes() {
            if !first {
                out.push(b',');
            }
            first = false;
            json_string(name.as_bytes(), out);
            out.push(b':');
            match value.strip_prefix(b"ARRAY::") {
                Some(items) => {
                    out.push(b'[');
                    for (i, item) in split_bytes(items, b"|:").enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        json_string(item, out);
                    }
                    out.push(b']');
                }
                None => json_string(value, out),
            }
        }
        if let Some(body) = &self.body {
            if !first {
                out.push(b',');
            }
            out.extend_from_slice(b"\"Content-Length\":\"");
            out.extend_from_slice(body.len().to_string().as_bytes());
            out.extend_from_slice(b"\",\"_body\":");
            json_string(body, out);
        }
        out.push(b'}');
    }

    /// Appends this event serialized as a `text/event-xml` body.
    pub fn encode_xml_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"<event>\n  <headers>\n");
        let mut enc = Vec::new();
        for (name, value) in self.headers.iter_bytes() {
            let items: Vec<&[u8]> = match value.strip_prefix(b"ARRAY::") {
                Some(items) => split_bytes(items, b"|:").collect(),
                None => vec![value],
            };
            for item in items {
                enc.clear();
                percent::encode_into(item, &mut enc);
                out.extend_from_slice(b"    <");
                out.extend_from_slice(name.as_bytes());
                out.push(b'>');
                xml_escape(&enc, out);
                out.extend_from_slice(b"</");
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(b">\n");
            }
        }
        out.extend_from_slice(b"  </headers>\n");
        if let Some(body) = self.body.as_ref().filter(|b| !b.is_empty()) {
            out.extend_from_slice(b"  <Content-Length>");
            out.extend_from_slice(body.len().to_string().as_bytes());
            out.extend_from_slice(b"</Content-Length>\n  <body>");
            xml_escape(body, out);
            out.extend_from_slice(b"  </body>\n");
        }
        out.extend_from_slice(b"</event>\n");
    }

    /// Serializes the event body in `format`.
    pub fn encode(&self, format: EventFormat) -> Vec<u8> {
        let mut out = Vec::with_capacity(2048);
        match format {
            EventFormat::Plain => self.encode_plain_into(&mut out),
            EventFormat::Json => self.encode_json_into(&mut out),
            EventFormat::Xml => self.encode_xml_into(&mut out),
        }
        out
    }
}

/// Splits off the event body after the header block: the serializer's own
/// `Content-Length` is the last header when a body follows.
fn take_body(headers: &mut Headers, rest: &[u8]) -> Result<Option<Vec<u8>>, EventError> {
    let declared = headers
        .get("Content-Length")
        .filter(|_| {
            headers
                .iter()
                .last()
                .is_some_and(|(n, _)| n.eq_ignore_ascii_case("Content-Length"))
        })
        .and_then(|v| v.trim().parse::<usize>().ok());
    // `get` returns the first Content-Length; the last one is what counts.
    let declared = match declared {
        Some(_) => headers
            .iter()
            .last()
            .and_then(|(_, v)| v.trim().parse::<usize>().ok()),
        None => None,
    };
    match declared {
        Some(n) if rest.len() == n => {
            headers.pop_if_last("Content-Length");
            Ok(Some(rest.to_vec()))
        }
        Some(_) if rest.is_empty() => Ok(None),
        Some(n) => Err(EventError::BodyLength {
            declared: n,
            actual: rest.len(),
        }),
        None if rest.is_empty() => Ok(None),
        None => Ok(Some(rest.to_vec())),
    }
}

fn split_bytes<'a>(hay: &'a [u8], sep: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut rest = Some(hay);
    std::iter::from_fn(move || {
        let r = rest?;
        match memchr::memmem::find(r, sep) {
            Some(p) => {
                rest = Some(&r[p + sep.len()..]);
                Some(&r[..p])
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
}

/// Writes a JSON string the way cJSON prints one: `"` `\` and control
/// characters escaped, bytes >= 0x80 copied raw.
fn json_string(s: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    for &b in s {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            0..0x20 => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(b >> 4) as usize]);
                out.push(HEX[(b & 15) as usize]);
            }
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

fn xml_escape(s: &[u8], out: &mut Vec<u8>) {
    for &b in s {
        match b {
            b'&' => out.extend_from_slice(b"&amp;"),
            b'<' => out.extend_from_slice(b"&lt;"),
            b'>' => out.extend_from_slice(b"&gt;"),
            b'"' => out.extend_from_slice(b"&quot;"),
            _ => out.push(b),
        }
    }
}

struct JsonParser<'a> {
    b: &'a [u8],
    pos: usize,
    scratch: Vec<u8>,
}

impl JsonParser<'_> {
    fn err(&self, reason: &'static str) -> EventError {
        EventError::Json {
            offset: self.pos,
            reason,
        }
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.b.get(self.pos) {
            self.pos += 1;
        }
    }

    fn expect(&mut self, c: u8, reason: &'static str) -> Result<(), EventError> {
        self.ws();
        if self.b.get(self.pos) == Some(&c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.err(reason))
        }
    }

    fn hex4(&mut self) -> Result<u32, EventError> {
        let digits = self
            .b
            .get(self.pos..self.pos + 4)
            .ok_or_else(|| self.err("truncated \\u escape"))?;
        let mut v = 0u32;
        for &d in digits {
            let h = (d as char)
                .to_digit(16)
                .ok_or_else(|| self.err("bad \\u escape"))?;
            v = v << 4 | h;
        }
        self.pos += 4;
        Ok(v)
    }

    /// Parses a string (the opening quote already consumed) into `out`.
    fn string_into(&mut self, out: &mut Vec<u8>) -> Result<(), EventError> {
        loop {
            let rest = &self.b[self.pos..];
            let Some(p) = memchr::memchr2(b'"', b'\\', rest) else {
                return Err(self.err("unterminated string"));
            };
            out.extend_from_slice(&rest[..p]);
            self.pos += p + 1;
            if rest[p] == b'"' {
                return Ok(());
            }
            let esc = *self
                .b
                .get(self.pos)
                .ok_or_else(|| self.err("unterminated escape"))?;
            self.pos += 1;
            match esc {
                b'"' => out.push(b'"'),
                b'\\' => out.push(b'\\'),
                b'/' => out.push(b'/'),
                b'b' => out.push(0x08),
                b'f' => out.push(0x0c),
                b'n' => out.push(b'\n'),
                b'r' => out.push(b'\r'),
                b't' => out.push(b'\t'),
                b'u' => {
                    let mut cp = self.hex4()?;
                    if (0xd800..0xdc00).contains(&cp)
                        && self.b.get(self.pos..self.pos + 2) == Some(b"\\u")
                    {
                        let save = self.pos;
                        self.pos += 2;
                        let lo = self.hex4()?;
                        if (0xdc00..0xe000).contains(&lo) {
                            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                        } else {
                            self.pos = save;
                        }
                    }
                    let c = char::from_u32(cp).unwrap_or('\u{FFFD}');
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
                _ => return Err(self.err("unknown escape")),
            }
        }
    }

    /// A scalar that is not a string (number, true, false, null): its text.
    fn bare_into(&mut self, out: &mut Vec<u8>) -> Result<(), EventError> {
        let start = self.pos;
        while let Some(&c) = self.b.get(self.pos) {
            if matches!(c, b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t') {
                break;
            }
            self.pos += 1;
        }
        if self.pos == start {
            return Err(self.err("expected a value"));
        }
        out.extend_from_slice(&self.b[start..self.pos]);
        Ok(())
    }

    fn value_into(&mut self, out: &mut Vec<u8>) -> Result<(), EventError> {
        self.ws();
        match self.b.get(self.pos) {
            Some(b'"') => {
                self.pos += 1;
                self.string_into(out)
            }
            Some(b'[') => {
                self.pos += 1;
                out.extend_from_slice(b"ARRAY::");
                self.ws();
                if self.b.get(self.pos) == Some(&b']') {
                    self.pos += 1;
                    return Ok(());
                }
                let mut first = true;
                loop {
                    if !first {
                        out.extend_from_slice(b"|:");
                    }
                    first = false;
                    self.ws();
                    match self.b.get(self.pos) {
                        Some(b'"') => {
                            self.pos += 1;
                            self.string_into(out)?;
                        }
                        Some(b'{' | b'[') => return Err(self.err("nested value in array")),
                        _ => self.bare_into(out)?,
                    }
                    self.ws();
                    match self.b.get(self.pos) {
                        Some(b',') => self.pos += 1,
                        Some(b']') => {
                            self.pos += 1;
                            return Ok(());
                        }
                        _ => return Err(self.err("expected ',' or ']'")),
                    }
                }
            }
            Some(b'{') => Err(self.err("nested objects are not event headers")),
            _ => self.bare_into(out),
        }
    }

    fn parse(mut self) -> Result<Event, EventError> {
        let mut headers = Headers::with_capacity(self.b.len() / 32 + 4, self.b.len() + 64);
        let mut body = None;
        self.expect(b'{', "expected '{'")?;
        self.ws();
        if self.b.get(self.pos) == Some(&b'}') {
            self.pos += 1;
        } else {
            loop {
                self.expect(b'"', "expected a key")?;
                let mut name = std::mem::take(&mut self.scratch);
                name.clear();
                self.string_into(&mut name)?;
                self.expect(b':', "expected ':'")?;
                if name == b"_body" {
                    let mut v = Vec::new();
                    self.value_into(&mut v)?;
                    body = Some(v);
                } else {
                    let start = headers.arena_mut().len();
                    self.value_into(headers.arena_mut())?;
                    headers.push_with_value_at(&name, start);
                }
                self.scratch = name;
                self.ws();
                match self.b.get(self.pos) {
                    Some(b',') => self.pos += 1,
                    Some(b'}') => {
                        self.pos += 1;
                        break;
                    }
                    _ => return Err(self.err("expected ',' or '}'")),
                }
            }
        }
        self.ws();
        if self.pos != self.b.len() {
            return Err(self.err("trailing bytes after the object"));
        }
        if body.is_some() {
            // The serializer's own Content-Length precedes `_body`.
            headers.pop_if_last("Content-Length");
        }
        Ok(Event { headers, body })
    }
}

struct XmlParser<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> XmlParser<'a> {
    fn err(&self, reason: &'static str) -> EventError {
        EventError::Xml {
            offset: self.pos,
            reason,
        }
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.b.get(self.pos) {
            self.pos += 1;
        }
    }

    fn literal(&mut self, s: &[u8], reason: &'static str) -> Result<(), EventError> {
        self.ws();
        if self.b[self.pos..].starts_with(s) {
            self.pos += s.len();
            Ok(())
        } else {
            Err(self.err(reason))
        }
    }

    /// Reads `<name>` and returns the name, or None when it is a closing tag.
    fn open_tag(&mut self) -> Result<Option<&'a [u8]>, EventError> {
        self.ws();
        if self.b.get(self.pos) != Some(&b'<') {
            return Err(self.err("expected a tag"));
        }
        if self.b.get(self.pos + 1) == Some(&b'/') {
            return Ok(None);
        }
        let start = self.pos + 1;
        let end = memchr::memchr(b'>', &self.b[start..])
            .map(|p| start + p)
            .ok_or_else(|| self.err("unterminated tag"))?;
        self.pos = end + 1;
        Ok(Some(&self.b[start..end]))
    }

    /// Reads text up to `</name>` and consumes the closing tag.
    fn text_until_close(&mut self, name: &[u8]) -> Result<&'a [u8], EventError> {
        let start = self.pos;
        let mut close = Vec::with_capacity(name.len() + 3);
        close.extend_from_slice(b"</");
        close.extend_from_slice(name);
        close.push(b'>');
        let p = memchr::memmem::find(&self.b[start..], &close)
            .ok_or_else(|| self.err("missing closing tag"))?;
        self.pos = start + p + close.len();
        Ok(&self.b[start..start + p])
    }

    fn parse(mut self) -> Result<Event, EventError> {
        self.literal(b"<event>", "expected <event>")?;
        self.literal(b"<headers>", "expected <headers>")?;
        let mut pairs: Vec<(&[u8], Vec<u8>)> = Vec::new();
        while let Some(name) = self.open_tag()? {
            let text = self.text_until_close(name)?;
            let mut value = Vec::with_capacity(text.len());
            percent::decode_into(&xml_unescape(text), &mut value);
            pairs.push((name, value));
        }
        self.literal(b"</headers>", "expected </headers>")?;
        let mut headers = Headers::with_capacity(pairs.len(), self.b.len());
        // Consecutive elements of one name are the items of an array header.
        let mut i = 0;
        while i < pairs.len() {
            let mut j = i + 1;
            while j < pairs.len() && pairs[j].0 == pairs[i].0 {
                j += 1;
            }
            if j - i == 1 {
                headers.push_raw(pairs[i].0, &pairs[i].1);
            } else {
                let mut v = b"ARRAY::".to_vec();
                for (k, (_, item)) in pairs[i..j].iter().enumerate() {
                    if k > 0 {
                        v.extend_from_slice(b"|:");
                    }
                    v.extend_from_slice(item);
                }
                headers.push_raw(pairs[i].0, &v);
            }
            i = j;
        }
        let mut body = None;
        let mut declared = None;
        while let Some(name) = self.open_tag()? {
            let text = self.text_until_close(name)?;
            match name {
                b"Content-Length" => {
                    declared = std::str::from_utf8(text)
                        .ok()
                        .and_then(|t| t.trim().parse::<usize>().ok());
                }
                b"body" => {
                    let mut b = xml_unescape(text).into_owned();
                    if let Some(n) = declared {
                        if b.len() < n {
                            return Err(EventError::BodyLength {
                                declared: n,
                                actual: b.len(),
                            });
                        }
                        // The serializer indents the closing tag.
                        b.truncate(n);
                    }
                    body = Some(b);
                }
                _ => return Err(self.err("unexpected element after </headers>")),
            }
        }
        self.literal(b"</event>", "expected </event>")?;
        Ok(Event { headers, body })
    }
}

fn xml_unescape(s: &[u8]) -> Cow<'_, [u8]> {
    if memchr::memchr(b'&', s).is_none() {
        return Cow::Borrowed(s);
    }
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'&'
            && let Some(semi) = memchr::memchr(b';', &s[i..(i + 12).min(s.len())])
        {
            let ent = &s[i + 1..i + semi];
            let decoded: Option<char> = match ent {
                b"lt" => Some('<'),
                b"gt" => Some('>'),
                b"amp" => Some('&'),
                b"quot" => Some('"'),
                b"apos" => Some('\''),
                [b'#', b'x' | b'X', hex @ ..] => std::str::from_utf8(hex)
                    .ok()
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .and_then(char::from_u32),
                [b'#', dec @ ..] => std::str::from_utf8(dec)
                    .ok()
                    .and_then(|d| d.parse().ok())
                    .and_then(char::from_u32),
                _ => None,
            };
            if let Some(c) = decoded {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                i += semi + 1;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Event {
        Event::new("BACKGROUND_JOB")
            .with("Core-UUID", "6b0e2e4a")
            .with("Job-UUID", "1f3c")
            .with(
                "Job-Command-Arg",
                "{a=1}sofia/external/park@127.0.0.1:5080 &park()",
            )
    }

    #[test]
    fn plain_matches_the_reference_layout() {
        let mut e = sample();
        e.body = Some(b"+OK 7d5a\n".to_vec());
        let out = String::from_utf8(e.encode(EventFormat::Plain)).unwrap();
        assert_eq!(
            out,
            "Event-Name: BACKGROUND_JOB\nCore-UUID: 6b0e2e4a\nJob-UUID: 1f3c\n\
             Job-Command-Arg: %7Ba%3D1%7Dsofia/external/park%40127.0.0.1%3A5080%20%26park()\n\
             Content-Length: 9\n\n+OK 7d5a\n"
        );
        assert_eq!(Event::decode_plain(out.as_bytes()).unwrap(), e);
    }

    #[test]
    fn empty_value_is_undef_and_array_is_encoded() {
        let e = Event::new("CUSTOM")
            .with("Empty", "")
            .with("variable_arr", "ARRAY::a|:b c");
        let out = String::from_utf8(e.encode(EventFormat::Plain)).unwrap();
        assert!(out.contains("Empty: _undef_\n"), "{out}");
        assert!(
            out.contains("variable_arr: ARRAY%3A%3Aa%7C%3Ab%20c\n"),
            "{out}"
        );
        let back = Event::decode_plain(out.as_bytes()).unwrap();
        assert_eq!(back.get("Empty"), Some("_undef_"));
        assert_eq!(back.get_array("variable_arr"), Some(vec!["a", "b c"]));
    }

    #[test]
    fn json_round_trip_with_arrays_and_body() {
        let mut e = sample().with("variable_arr", "ARRAY::x|:y");
        e.body = Some(b"line1\n\"q\"\\".to_vec());
        let out = e.encode(EventFormat::Json);
        let s = String::from_utf8(out.clone()).unwrap();
        assert!(s.contains(r#""variable_arr":["x","y"]"#), "{s}");
        assert!(
            s.ends_with(r#""Content-Length":"10","_body":"line1\n\"q\"\\"}"#),
            "{s}"
        );
        assert_eq!(Event::decode_json(&out).unwrap(), e);
    }

    #[test]
    fn json_duplicate_keys_invalid_utf8_and_escapes() {
        let raw = b"{\"Event-Name\":\"X\",\"Hangup-Cause\":\"A\",\"Name\":\"J\xf6rg \\u00e9\\ud83d\\ude00\",\"Hangup-Cause\":\"B\",\"N\":42}";
        let e = Event::decode_json(raw).unwrap();
        assert_eq!(
            e.headers.get_all("Hangup-Cause").collect::<Vec<_>>(),
            vec!["A", "B"]
        );
        assert_eq!(
            e.headers.get_bytes("Name"),
            Some("J\u{f6}rg é😀".as_bytes()).map(|_| &b"J\xf6rg \xc3\xa9\xf0\x9f\x98\x80"[..])
        );
        assert_eq!(e.get("Name"), Some("J\u{FFFD}rg é😀"));
        assert_eq!(e.get("N"), Some("42"));
    }

    #[test]
    fn json_garbage_is_an_error() {
        for bad in [
            &b""[..],
            b"{",
            b"{\"a\"",
            b"{\"a\":}",
            b"[1]",
            b"{\"a\":\"b\"} x",
            b"{\"a\":{\"b\":\"c\"}}",
            b"{\"a\":\"\\q\"}",
        ] {
            assert!(
                Event::decode_json(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn xml_round_trip() {
        let mut e = sample().with("variable_arr", "ARRAY::x|:y");
        e.body = Some(b"<ok> & done\n".to_vec());
        let out = e.encode(EventFormat::Xml);
        let back = Event::decode_xml(&out).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn plain_body_length_mismatch_is_an_error() {
        let bad = b"Event-Name: X\nContent-Length: 10\n\nshort";
        assert_eq!(
            Event::decode_plain(bad),
            Err(EventError::BodyLength {
                declared: 10,
                actual: 5
            })
        );
        assert!(matches!(
            Event::decode_plain(b"no colon here\n\n"),
            Err(EventError::MalformedHeader { line: 1 })
        ));
    }

    #[test]
    fn packed_decoding_matches_the_event_decoder() {
        let mut e = sample().with("Empty", "").with("Weird", "a%zz b\u{e9}");
        e.body = Some(b"+OK 1\n".to_vec());
        let plain = e.encode(EventFormat::Plain);
        let (packed, body) = Event::plain_to_packed(&plain).unwrap();
        let rebuilt = Event {
            headers: Headers::from_packed(packed).unwrap(),
            body,
        };
        assert_eq!(rebuilt, Event::decode_plain(&plain).unwrap());
        assert!(Headers::from_packed(vec![9, 0, 0, 0, b'a']).is_none());
        assert!(Event::plain_to_packed(b"bad line\n\n").is_err());
    }

    #[test]
    fn sendevent_double_content_length_keeps_the_client_header() {
        let raw = b"Command: sendevent%20CUSTOM\nContent-Length: 3\nEvent-Name: CUSTOM\nContent-Length: 3\n\nabc";
        let e = Event::decode_plain(raw).unwrap();
        assert_eq!(e.body.as_deref(), Some(&b"abc"[..]));
        assert_eq!(e.headers.get_all("Content-Length").count(), 1);
        assert_eq!(e.encode(EventFormat::Plain), raw.to_vec());
    }
}
