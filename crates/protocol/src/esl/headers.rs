//! An ordered header multimap with O(1) case-insensitive lookup.
//!
//! ESL headers are an ordered list in which a name may repeat
//! (`CHANNEL_HANGUP_COMPLETE` carries `Hangup-Cause` twice). All names and
//! values of one header block live in a single byte arena; each header is a
//! set of offsets into it, and a small open-addressing table maps the
//! ASCII-case-folded name to the first occurrence, with a per-header link to
//! the next occurrence of the same name.
//!
//! Values are bytes that are usually UTF-8. [`Headers::get`] returns `&str`:
//! a value that is not valid UTF-8 is shown with U+FFFD replacement
//! characters, and its exact bytes stay available through
//! [`Headers::get_bytes`], so nothing is lost.

use std::fmt;

const NONE: u32 = u32::MAX;
/// Set on a span's start when it points into `src` rather than `arena`.
const IN_SRC: u32 = 1 << 31;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span {
    start: u32,
    end: u32,
}

impl Span {
    fn arena(start: usize, end: usize) -> Span {
        Span {
            start: start as u32,
            end: end as u32,
        }
    }

    fn src(start: usize, end: usize) -> Span {
        Span {
            start: start as u32 | IN_SRC,
            end: end as u32,
        }
    }
}

#[derive(Clone, Debug)]
struct Entry {
    name: Span,
    /// Exact value bytes.
    raw: Span,
    /// UTF-8 view of the value: equal to `raw` when the bytes are valid UTF-8,
    /// else a lossy copy in the arena.
    text: Span,
    /// Hash of the case-folded name.
    hash: u32,
    /// Index of the next header with the same (case-folded) name, or NONE.
    next_same: u32,
    /// For the first header of a name: the last header of that name (so a
    /// duplicate is appended in O(1)); NONE for later ones.
    last_same: u32,
}

/// An ordered multimap of header names to byte values.
///
/// Decoders hand over the received bytes as `src`; names and values that
/// need no decoding are spans of it (no copy), decoded values live in
/// `arena`.
#[derive(Clone, Default)]
pub struct Headers {
    src: Vec<u8>,
    arena: Vec<u8>,
    entries: Vec<Entry>,
    /// Open-addressing table of entry indices (first occurrence per name).
    table: Vec<u32>,
}

/// Hash of a header name, insensitive to ASCII case: every byte gets the
/// 0x20 bit set (which maps `A`-`Z` onto `a`-`z`; other bytes may collide,
/// which only costs a comparison), eight bytes at a time.
#[inline]
fn fold_hash(name: &[u8]) -> u32 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h: u64 = name.len() as u64;
    let mut chunks = name.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        let v = u64::from_le_bytes(w) | 0x2020_2020_2020_2020;
        h = (h ^ v).wrapping_mul(K).rotate_left(29);
    }
    // The last 1-7 bytes without a byte-wise copy (which costs a call and a
    // store-forwarding stall): overlapping reads, as wyhash does.
    let rest = chunks.remainder();
    let n = rest.len();
    if n > 0 {
        let tail = if n >= 4 {
            let lo = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
            let hi = u32::from_le_bytes([rest[n - 4], rest[n - 3], rest[n - 2], rest[n - 1]]);
            u64::from(lo) | u64::from(hi) << 32
        } else {
            u64::from(rest[0]) | u64::from(rest[n / 2]) << 8 | u64::from(rest[n - 1]) << 16
        };
        h = (h ^ (tail | 0x2020_2020_2020_2020))
            .wrapping_mul(K)
            .rotate_left(29);
    }
    let h = h.wrapping_mul(K);
    (h >> 32) as u32
}

#[inline]
fn slice<'a>(src: &'a [u8], arena: &'a [u8], s: Span) -> &'a [u8] {
    if s.start & IN_SRC != 0 {
        &src[(s.start & !IN_SRC) as usize..s.end as usize]
    } else {
        &arena[s.start as usize..s.end as usize]
    }
}

#[inline]
fn valid_utf8(b: &[u8]) -> bool {
    b.is_ascii() || std::str::from_utf8(b).is_ok()
}

impl Headers {
    /// An empty header list.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty header list with room for `n` headers and `bytes` bytes.
    pub fn with_capacity(n: usize, bytes: usize) -> Self {
        Self::with_source(Vec::new(), n, bytes)
    }

    fn with_source(src: Vec<u8>, n: usize, arena_bytes: usize) -> Self {
        let slots = if n == 0 {
            0
        } else {
            (n * 2).next_power_of_two().max(16)
        };
        Headers {
            src,
            arena: Vec::with_capacity(arena_bytes),
            entries: Vec::with_capacity(n),
            table: vec![NONE; slots],
        }
    }

    /// Number of headers (duplicates counted).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there is no header.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    #[inline]
    fn bytes(&self, s: Span) -> &[u8] {
        slice(&self.src, &self.arena, s)
    }

    fn grow_table(&mut self) {
        let new_len = (self.entries.len().max(8) * 2).next_power_of_two();
        self.table.clear();
        self.table.resize(new_len, NONE);
        let mask = new_len - 1;
        for (i, e) in self.entries.iter().enumerate() {
            if e.last_same == NONE {
                // Not the first of its name.
                continue;
            }
            let mut slot = e.hash as usize & mask;
            while self.table[slot] != NONE {
                slot = (slot + 1) & mask;
            }
            self.table[slot] = i as u32;
        }
    }

    fn find_first(&self, name: &[u8], hash: u32) -> Option<usize> {
        self.probe(name, hash).ok()
    }

    /// `Ok(index of the first header named name)`, or `Err(free slot)`
    /// (`Err(usize::MAX)` when there is no table yet).
    #[inline]
    fn probe(&self, name: &[u8], hash: u32) -> Result<usize, usize> {
        if self.table.is_empty() {
            return Err(usize::MAX);
        }
        let mask = self.table.len() - 1;
        let mut slot = hash as usize & mask;
        loop {
            let idx = self.table[slot];
            if idx == NONE {
                return Err(slot);
            }
            let e = &self.entries[idx as usize];
            if e.hash == hash && self.bytes(e.name).eq_ignore_ascii_case(name) {
                return Ok(idx as usize);
            }
            slot = (slot + 1) & mask;
        }
    }

    /// Adds an entry whose name and raw value spans are already in place.
    /// `src_ascii`: the whole source is known to be ASCII, so spans into it
    /// need no UTF-8 check.
    #[inline]
    fn link_checked(&mut self, name: Span, raw: Span, src_ascii: bool) {
        let value = self.bytes(raw);
        let text = if (src_ascii && raw.start & IN_SRC != 0) || valid_utf8(value) {
            raw
        } else {
            let lossy = String::from_utf8_lossy(value).into_owned();
            let start = self.arena.len();
            self.arena.extend_from_slice(lossy.as_bytes());
            Span::arena(start, self.arena.len())
        };
        let name = if (src_ascii && name.start & IN_SRC != 0) || valid_utf8(self.bytes(name)) {
            name
        } else {
            let lossy = String::from_utf8_lossy(self.bytes(name)).into_owned();
            let start = self.arena.len();
            self.arena.extend_from_slice(lossy.as_bytes());
            Span::arena(start, self.arena.len())
        };
        let name_bytes = slice(&self.src, &self.arena, name);
        let hash = fold_hash(name_bytes);
        let found = self.probe(name_bytes, hash);
        let idx = self.entries.len() as u32;
        self.entries.push(Entry {
            name,
            raw,
            text,
            hash,
            next_same: NONE,
            last_same: idx,
        });
        match found {
            Ok(first) => {
                let last = self.entries[first].last_same as usize;
                self.entries[last].next_same = idx;
                self.entries[first].last_same = idx;
                self.entries[idx as usize].last_same = NONE;
            }
            Err(slot) => {
                if slot == usize::MAX || self.entries.len() * 4 > self.table.len() * 3 {
                    self.grow_table();
                } else {
                    self.table[slot] = idx;
                }
            }
        }
    }

    fn link(&mut self, name: Span, raw: Span) {
        self.link_checked(name, raw, false);
    }

    /// Appends a header. Names are kept as given; lookups ignore ASCII case.
    pub fn push(&mut self, name: &str, value: impl AsRef<[u8]>) {
        self.push_raw(name.as_bytes(), value.as_ref());
    }

    /// Appends a header from raw name and value bytes.
    pub fn push_raw(&mut self, name: &[u8], value: &[u8]) {
        let v0 = self.arena.len();
        self.arena.extend_from_slice(value);
        let n0 = self.arena.len();
        self.arena.extend_from_slice(name);
        let (raw, name) = (Span::arena(v0, n0), Span::arena(n0, self.arena.len()));
        self.link(name, raw);
    }

    /// Direct access to the arena, for decoders that decode a value in place
    /// before [`Headers::push_with_value_at`].
    pub(crate) fn arena_mut(&mut self) -> &mut Vec<u8> {
        &mut self.arena
    }

    /// Appends a header whose value was written at the end of the arena
    /// from `value_start`; `name` is copied.
    pub(crate) fn push_with_value_at(&mut self, name: &[u8], value_start: usize) {
        let n0 = self.arena.len();
        self.arena.extend_from_slice(name);
        self.link(
            Span::arena(n0, self.arena.len()),
            Span::arena(value_start, n0),
        );
    }

    /// Parses `Name: value` lines from `src` (owned, so names and plain
    /// values are not copied) up to the first empty line. Values are
    /// percent-decoded when `percent_decode`. Returns the headers and the
    /// offset just past the empty line (or the end), or the 1-based number
    /// of a line without `:`.
    pub(crate) fn parse_lines(
        src: Vec<u8>,
        percent_decode: bool,
    ) -> Result<(Headers, usize), (usize, Vec<u8>)> {
        let len = src.len();
        let mut lines = super::scan::Lines::new(&src);
        let mut h = Headers::with_source(src, len / 32 + 4, 256);
        let src_ascii = lines.ascii();
        loop {
            let line = match lines.next_line(&h.src) {
                Ok(Some(l)) => l,
                Ok(None) => break,
                Err(line_no) => return Err((line_no, h.src)),
            };
            let name = Span::src(line.name.start, line.name.end);
            let raw = if percent_decode && line.percent.is_some() {
                let a0 = h.arena.len();
                lines.decode_value(&h.src, &line, &mut h.arena);
                Span::arena(a0, h.arena.len())
            } else {
                Span::src(line.value.start, line.value.end)
            };
            h.link_checked(name, raw, src_ascii);
        }
        Ok((h, lines.pos()))
    }

    /// Headers over a packed buffer (for each header: u32 little-endian
    /// name length, name, u32 little-endian value length, value — the
    /// layout of `wire::pack_headers`) without copying names or values.
    /// `None` when a length runs past the buffer.
    pub fn from_packed(packed: Vec<u8>) -> Option<Headers> {
        let len = packed.len();
        let mut h = Headers::with_source(packed, len / 48 + 4, 64);
        let src_ascii = h.src.is_ascii();
        let mut i = 0;
        let field = |src: &[u8], i: &mut usize| -> Option<(usize, usize)> {
            let l = src.get(*i..*i + 4)?;
            let n = u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize;
            let start = *i + 4;
            let end = start.checked_add(n).filter(|&e| e <= src.len())?;
            *i = end;
            Some((start, end))
        };
        while i < len {
            let (ns, ne) = field(&h.src, &mut i)?;
            let (vs, ve) = field(&h.src, &mut i)?;
            h.link_checked(Span::src(ns, ne), Span::src(vs, ve), src_ascii);
        }
        Some(h)
    }

    /// Writes the headers in the packed layout of [`Headers::from_packed`].
    pub fn to_packed(&self) -> Vec<u8> {
        crate::wire::pack_headers(self.iter_bytes().map(|(k, v)| (k.as_bytes(), v)))
    }

    /// The received bytes the headers were parsed from.
    pub(crate) fn source(&self) -> &[u8] {
        &self.src
    }

    /// The first value of `name` (ASCII case-insensitive), as text.
    pub fn get(&self, name: &str) -> Option<&str> {
        let idx = self.find_first(name.as_bytes(), fold_hash(name.as_bytes()))?;
        Some(self.text_at(idx))
    }

    /// The exact bytes of the first value of `name`.
    pub fn get_bytes(&self, name: &str) -> Option<&[u8]> {
        let idx = self.find_first(name.as_bytes(), fold_hash(name.as_bytes()))?;
        Some(self.bytes(self.entries[idx].raw))
    }

    /// Every value of `name`, in arrival order.
    pub fn get_all<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> + 'a {
        let mut next = self
            .find_first(name.as_bytes(), fold_hash(name.as_bytes()))
            .map_or(NONE, |i| i as u32);
        std::iter::from_fn(move || {
            if next == NONE {
                return None;
            }
            let i = next as usize;
            next = self.entries[i].next_same;
            Some(self.text_at(i))
        })
    }

    /// True when `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.find_first(name.as_bytes(), fold_hash(name.as_bytes()))
            .is_some()
    }

    /// The values of an array header (`ARRAY::a|:b|:c`, as FreeSWITCH writes
    /// a variable pushed several times); a plain value is a one-item array.
    pub fn get_array<'a>(&'a self, name: &str) -> Option<Vec<&'a str>> {
        self.get(name).map(split_array)
    }

    fn text_at(&self, idx: usize) -> &str {
        // Every text span was checked (or made) valid UTF-8 when linked.
        std::str::from_utf8(self.bytes(self.entries[idx].text)).unwrap_or_default()
    }

    fn name_at(&self, idx: usize) -> &str {
        std::str::from_utf8(self.bytes(self.entries[idx].name)).unwrap_or_default()
    }

    /// True when some header name starts with `prefix` (exact bytes).
    /// Looks from the last header back: FreeSWITCH writes `variable_*` last.
    pub fn has_name_prefix(&self, prefix: &str) -> bool {
        self.entries
            .iter()
            .rev()
            .any(|e| self.bytes(e.name).starts_with(prefix.as_bytes()))
    }

    /// Iterates `(name, value)` pairs in arrival order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + '_ {
        (0..self.entries.len()).map(|i| (self.name_at(i), self.text_at(i)))
    }

    /// Iterates `(name, exact value bytes)` pairs in arrival order.
    pub fn iter_bytes(&self) -> impl ExactSizeIterator<Item = (&str, &[u8])> + '_ {
        (0..self.entries.len()).map(|i| (self.name_at(i), self.bytes(self.entries[i].raw)))
    }

    /// Removes the last header if it has the given name, returning its exact
    /// bytes. Used by decoders to strip the serializer's own
    /// `Content-Length` line.
    pub(crate) fn pop_if_last(&mut self, name: &str) -> Option<Vec<u8>> {
        let last = self.entries.len().checked_sub(1)?;
        if !self.name_at(last).eq_ignore_ascii_case(name) {
            return None;
        }
        let value = self.bytes(self.entries[last].raw).to_vec();
        let e = self.entries.pop()?;
        if e.last_same == NONE {
            // A duplicate: unlink it from the chain of its first occurrence.
            let first = self.find_first(self.bytes(e.name), e.hash)?;
            let mut i = first;
            while self.entries[i].next_same != last as u32 {
                i = self.entries[i].next_same as usize;
            }
            self.entries[i].next_same = NONE;
            self.entries[first].last_same = i as u32;
        } else {
            // The only one of its name: clear its slot and re-seat the
            // probe chain after it.
            self.grow_table();
        }
        Some(value)
    }
}

/// Splits an `ARRAY::a|:b` value into its items; any other value is one item.
pub fn split_array(value: &str) -> Vec<&str> {
    match value.strip_prefix("ARRAY::") {
        Some(rest) => rest.split("|:").collect(),
        None => vec![value],
    }
}

/// Joins items into FreeSWITCH's `ARRAY::a|:b` form.
pub fn join_array<S: AsRef<str>>(items: &[S]) -> String {
    let mut out = String::from("ARRAY::");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str("|:");
        }
        out.push_str(item.as_ref());
    }
    out
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl PartialEq for Headers {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter_bytes().eq(other.iter_bytes())
    }
}

impl Eq for Headers {}

impl<N: AsRef<str>, V: AsRef<[u8]>> FromIterator<(N, V)> for Headers {
    fn from_iter<T: IntoIterator<Item = (N, V)>>(iter: T) -> Self {
        let mut h = Headers::new();
        for (n, v) in iter {
            h.push(n.as_ref(), v);
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_is_case_insensitive_and_keeps_duplicates_in_order() {
        let mut h = Headers::new();
        h.push("Hangup-Cause", "NORMAL_CLEARING");
        h.push("Unique-ID", "abc");
        h.push("hangup-cause", "MANAGER_REQUEST");
        assert_eq!(h.get("HANGUP-CAUSE"), Some("NORMAL_CLEARING"));
        assert_eq!(
            h.get_all("Hangup-Cause").collect::<Vec<_>>(),
            vec!["NORMAL_CLEARING", "MANAGER_REQUEST"]
        );
        assert_eq!(h.len(), 3);
        assert_eq!(h.get("missing"), None);
        let names: Vec<_> = h.iter().map(|(n, _)| n).collect();
        assert_eq!(names, vec!["Hangup-Cause", "Unique-ID", "hangup-cause"]);
    }

    #[test]
    fn many_headers_grow_the_table() {
        let mut h = Headers::new();
        for i in 0..1000 {
            h.push(&format!("H-{i}"), format!("v{i}"));
        }
        for i in 0..1000 {
            assert_eq!(h.get(&format!("h-{i}")), Some(format!("v{i}").as_str()));
        }
    }

    #[test]
    fn invalid_utf8_value_is_lossy_as_text_and_exact_as_bytes() {
        let mut h = Headers::new();
        h.push_raw(b"Caller-Caller-ID-Name", b"J\xf6rg");
        assert_eq!(h.get("Caller-Caller-ID-Name"), Some("J\u{FFFD}rg"));
        assert_eq!(h.get_bytes("Caller-Caller-ID-Name"), Some(&b"J\xf6rg"[..]));
    }

    #[test]
    fn pop_if_last_only_pops_the_named_last_header() {
        let mut h: Headers = [("A", "1"), ("Content-Length", "5"), ("B", "2")]
            .into_iter()
            .collect();
        assert_eq!(h.pop_if_last("Content-Length"), None);
        let mut h2: Headers = [("A", "1"), ("A", "x"), ("Content-Length", "5")]
            .into_iter()
            .collect();
        assert_eq!(h2.pop_if_last("content-length"), Some(b"5".to_vec()));
        assert_eq!(h2.len(), 2);
        assert_eq!(h2.get_all("A").collect::<Vec<_>>(), vec!["1", "x"]);
        h.push("C", "3");
        assert_eq!(h.get("C"), Some("3"));
    }

    #[test]
    fn name_prefix_is_found_anywhere() {
        let h: Headers = [("Event-Name", "X"), ("variable_a", "1"), ("B", "2")]
            .into_iter()
            .collect();
        assert!(h.has_name_prefix("variable_"));
        assert!(h.has_name_prefix("Event-"));
        assert!(!h.has_name_prefix("variable_b"));
        assert!(!Headers::new().has_name_prefix(""));
    }

    #[test]
    fn arrays_split_and_join() {
        assert_eq!(split_array("ARRAY::a|:b|:c"), vec!["a", "b", "c"]);
        assert_eq!(split_array("plain"), vec!["plain"]);
        assert_eq!(join_array(&["x", "y"]), "ARRAY::x|:y");
    }
}
