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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span {
    start: u32,
    end: u32,
}

impl Span {
    fn range(self) -> std::ops::Range<usize> {
        self.start as usize..self.end as usize
    }
}

#[derive(Clone, Debug)]
struct Entry {
    name: Span,
    /// Exact value bytes.
    raw: Span,
    /// UTF-8 view of the value: equal to `raw` when the bytes are valid UTF-8,
    /// else a lossy copy further on in the arena.
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
#[derive(Clone, Default)]
pub struct Headers {
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
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        let v = u64::from_le_bytes(w) | 0x2020_2020_2020_2020;
        h = (h ^ v).wrapping_mul(K).rotate_left(29);
    }
    let h = h.wrapping_mul(K);
    (h >> 32) as u32
}

impl Headers {
    /// An empty header list.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty header list with room for `n` headers and `bytes` bytes.
    pub fn with_capacity(n: usize, bytes: usize) -> Self {
        let slots = if n == 0 {
            0
        } else {
            (n * 2).next_power_of_two().max(16)
        };
        Headers {
            arena: Vec::with_capacity(bytes),
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

    fn slot_mask(&self) -> usize {
        self.table.len() - 1
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
        if self.table.is_empty() {
            return None;
        }
        let mask = self.slot_mask();
        let mut slot = hash as usize & mask;
        loop {
            let idx = self.table[slot];
            if idx == NONE {
                return None;
            }
            let e = &self.entries[idx as usize];
            if e.hash == hash && self.arena[e.name.range()].eq_ignore_ascii_case(name) {
                return Some(idx as usize);
            }
            slot = (slot + 1) & mask;
        }
    }

    fn push_bytes(&mut self, bytes: &[u8]) -> Span {
        let start = self.arena.len() as u32;
        self.arena.extend_from_slice(bytes);
        Span {
            start,
            end: self.arena.len() as u32,
        }
    }

    /// Appends a header whose value bytes were already written at the end of
    /// the arena starting at `value_start` (used by decoders that decode in
    /// place). `name` is copied.
    pub(crate) fn push_with_value_at(&mut self, name: &[u8], value_start: usize) {
        let raw = Span {
            start: value_start as u32,
            end: self.arena.len() as u32,
        };
        self.finish_push(name, raw);
    }

    /// Direct access to the arena for in-place value decoding.
    pub(crate) fn arena_mut(&mut self) -> &mut Vec<u8> {
        &mut self.arena
    }

    fn finish_push(&mut self, name: &[u8], raw: Span) {
        // The UTF-8 view of the value.
        let value = &self.arena[raw.range()];
        let text = match value.is_ascii() || std::str::from_utf8(value).is_ok() {
            true => raw,
            false => {
                let lossy = String::from_utf8_lossy(&self.arena[raw.range()]).into_owned();
                self.push_bytes(lossy.as_bytes())
            }
        };
        let name_span = match name.is_ascii() || std::str::from_utf8(name).is_ok() {
            true => self.push_bytes(name),
            false => {
                let lossy = String::from_utf8_lossy(name).into_owned();
                self.push_bytes(lossy.as_bytes())
            }
        };
        let hash = fold_hash(name);
        let idx = self.entries.len() as u32;
        let first = self.find_first(name, hash);
        self.entries.push(Entry {
            name: name_span,
            raw,
            text,
            hash,
            next_same: NONE,
            last_same: idx,
        });
        match first {
            Some(first) => {
                let last = self.entries[first].last_same as usize;
                self.entries[last].next_same = idx;
                self.entries[first].last_same = idx;
                self.entries[idx as usize].last_same = NONE;
            }
            None => {
                if self.entries.len() * 4 > self.table.len() * 3 {
                    self.grow_table();
                } else {
                    let mask = self.slot_mask();
                    let mut slot = hash as usize & mask;
                    while self.table[slot] != NONE {
                        slot = (slot + 1) & mask;
                    }
                    self.table[slot] = idx;
                }
            }
        }
    }

    /// Appends a header. Names are kept as given; lookups ignore ASCII case.
    pub fn push(&mut self, name: &str, value: impl AsRef<[u8]>) {
        self.push_raw(name.as_bytes(), value.as_ref());
    }

    /// Appends a header from raw name and value bytes.
    pub fn push_raw(&mut self, name: &[u8], value: &[u8]) {
        let raw = self.push_bytes(value);
        self.finish_push(name, raw);
    }

    /// The first value of `name` (ASCII case-insensitive), as text.
    pub fn get(&self, name: &str) -> Option<&str> {
        let idx = self.find_first(name.as_bytes(), fold_hash(name.as_bytes()))?;
        Some(self.text_at(idx))
    }

    /// The exact bytes of the first value of `name`.
    pub fn get_bytes(&self, name: &str) -> Option<&[u8]> {
        let idx = self.find_first(name.as_bytes(), fold_hash(name.as_bytes()))?;
        Some(&self.arena[self.entries[idx].raw.range()])
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
        let bytes = &self.arena[self.entries[idx].text.range()];
        // Every text span was checked (or made) valid UTF-8 when pushed.
        std::str::from_utf8(bytes).unwrap_or_default()
    }

    fn name_at(&self, idx: usize) -> &str {
        std::str::from_utf8(&self.arena[self.entries[idx].name.range()]).unwrap_or_default()
    }

    /// Iterates `(name, value)` pairs in arrival order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + '_ {
        (0..self.entries.len()).map(|i| (self.name_at(i), self.text_at(i)))
    }

    /// Iterates `(name, exact value bytes)` pairs in arrival order.
    pub fn iter_bytes(&self) -> impl ExactSizeIterator<Item = (&str, &[u8])> + '_ {
        (0..self.entries.len()).map(|i| (self.name_at(i), &self.arena[self.entries[i].raw.range()]))
    }

    /// Removes the last header if it has the given name, returning its exact
    /// bytes. Used by decoders to strip the serializer's own
    /// `Content-Length` line.
    pub(crate) fn pop_if_last(&mut self, name: &str) -> Option<Vec<u8>> {
        let last = self.entries.len().checked_sub(1)?;
        if !self.name_at(last).eq_ignore_ascii_case(name) {
            return None;
        }
        let value = self.arena[self.entries[last].raw.range()].to_vec();
        // Rebuild: removing the last entry is rare (once per event with a
        // body), and rebuilding links is simpler than unlinking.
        let entries = std::mem::take(&mut self.entries);
        let arena = std::mem::take(&mut self.arena);
        *self = Headers::with_capacity(entries.len(), arena.len());
        for e in &entries[..last] {
            let name = &arena[e.name.range()];
            let raw = &arena[e.raw.range()];
            self.push_raw(name, raw);
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
    fn arrays_split_and_join() {
        assert_eq!(split_array("ARRAY::a|:b|:c"), vec!["a", "b", "c"]);
        assert_eq!(split_array("plain"), vec!["plain"]);
        assert_eq!(join_array(&["x", "y"]), "ARRAY::x|:y");
    }
}
