//! One-pass structural scan of a header block.
//!
//! Parsing `Name: value` lines with a `memchr` per line end, per colon and
//! per `%` calls into the search routine three times for lines that are
//! ~40 bytes long, where the call overhead dominates. Instead the block is
//! scanned once, 64 bytes at a time, into bit masks of the bytes that give
//! it structure (`\n`, `:`, `%`) plus whether any byte is non-ASCII; line
//! splitting then only counts trailing zeros. The per-block loop is plain
//! SSE2 (the x86_64 baseline: the only `unsafe` in this crate, for the
//! loads), with a portable byte loop elsewhere.

/// Index of the masks inside one block's entry.
const NL: usize = 0;
const COLON: usize = 1;
const PCT: usize = 2;

/// Bit masks over a byte slice: bit `i % 64` of `blocks[i / 64][k]` is set
/// when byte `i` is the structural byte `k`.
pub(crate) struct Structure {
    blocks: Vec<[u64; 3]>,
    /// True when every byte is below 0x80.
    pub(crate) ascii: bool,
}

/// Masks of one 64-byte block: `([newline, colon, percent], non-ASCII)`.
#[cfg(target_arch = "x86_64")]
#[inline]
#[allow(unsafe_code)]
fn block_masks(chunk: &[u8; 64]) -> ([u64; 3], u64) {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8,
    };
    // SAFETY: SSE2 is part of the x86_64 baseline, so these intrinsics are
    // always available; each load reads 16 bytes at offset 0, 16, 32 or 48
    // of a 64-byte array (in bounds), unaligned loads being explicitly
    // allowed by `_mm_loadu_si128`.
    unsafe {
        let (nl, colon, pct) = (
            _mm_set1_epi8(b'\n' as i8),
            _mm_set1_epi8(b':' as i8),
            _mm_set1_epi8(b'%' as i8),
        );
        let mut m = [0u64; 3];
        let mut high = 0u64;
        for i in 0..4 {
            let v = _mm_loadu_si128(chunk.as_ptr().add(i * 16).cast::<__m128i>());
            let shift = i * 16;
            m[NL] |= u64::from(_mm_movemask_epi8(_mm_cmpeq_epi8(v, nl)) as u16) << shift;
            m[COLON] |= u64::from(_mm_movemask_epi8(_mm_cmpeq_epi8(v, colon)) as u16) << shift;
            m[PCT] |= u64::from(_mm_movemask_epi8(_mm_cmpeq_epi8(v, pct)) as u16) << shift;
            high |= u64::from(_mm_movemask_epi8(v) as u16) << shift;
        }
        (m, high)
    }
}

/// Masks of one 64-byte block (portable fallback).
#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn block_masks(chunk: &[u8; 64]) -> ([u64; 3], u64) {
    let (mut nl, mut colon, mut pct, mut high) = (0u64, 0u64, 0u64, 0u64);
    for (i, &b) in chunk.iter().enumerate() {
        nl |= u64::from(b == b'\n') << i;
        colon |= u64::from(b == b':') << i;
        pct |= u64::from(b == b'%') << i;
        high |= u64::from(b >= 0x80) << i;
    }
    ([nl, colon, pct], high)
}

impl Structure {
    /// Scans `src`.
    pub(crate) fn new(src: &[u8]) -> Structure {
        let mut blocks = Vec::with_capacity(src.len() / 64 + 1);
        let mut high = 0u64;
        let mut chunks = src.chunks_exact(64);
        for c in &mut chunks {
            let arr: &[u8; 64] = c.try_into().unwrap_or(&[0; 64]);
            let (m, h) = block_masks(arr);
            blocks.push(m);
            high |= h;
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 64];
            last[..rest.len()].copy_from_slice(rest);
            let (m, h) = block_masks(&last);
            blocks.push(m);
            high |= h;
        }
        Structure {
            blocks,
            ascii: high == 0,
        }
    }

    /// Position of the first byte of kind `k` at or after `from`.
    #[inline]
    fn next(&self, k: usize, from: usize) -> Option<usize> {
        let mut bi = from / 64;
        let first = self.blocks.get(bi)?;
        let mut w = first[k] & (u64::MAX << (from % 64));
        loop {
            if w != 0 {
                return Some(bi * 64 + w.trailing_zeros() as usize);
            }
            bi += 1;
            w = self.blocks.get(bi)?[k];
        }
    }

    /// Position of the first `\n` at or after `from`.
    #[inline]
    pub(crate) fn next_newline(&self, from: usize) -> Option<usize> {
        self.next(NL, from)
    }

    /// Position of the first `:` in `from..end`.
    #[inline]
    pub(crate) fn colon_before(&self, from: usize, end: usize) -> Option<usize> {
        self.next(COLON, from).filter(|&p| p < end)
    }

    /// Position of the first `%` in `from..end`.
    #[inline]
    pub(crate) fn percent_before(&self, from: usize, end: usize) -> Option<usize> {
        self.next(PCT, from).filter(|&p| p < end)
    }
}

/// One `Name: value` line: byte ranges into the scanned block, and the
/// first `%` of the value if any.
pub(crate) struct HeaderLine {
    pub(crate) name: std::ops::Range<usize>,
    pub(crate) value: std::ops::Range<usize>,
    pub(crate) percent: Option<usize>,
}

/// Header lines of a block up to the first empty line, from its scan. The
/// block itself is passed to each call (so a caller may own it elsewhere).
pub(crate) struct Lines {
    scan: Structure,
    len: usize,
    pos: usize,
    line_no: usize,
}

impl Lines {
    /// Scans `src`.
    pub(crate) fn new(src: &[u8]) -> Lines {
        Lines {
            scan: Structure::new(src),
            len: src.len(),
            pos: 0,
            line_no: 0,
        }
    }

    /// True when every byte of the block is ASCII.
    pub(crate) fn ascii(&self) -> bool {
        self.scan.ascii
    }

    /// Offset just past the empty line that ended the headers (or the end).
    pub(crate) fn pos(&self) -> usize {
        self.pos.min(self.len)
    }

    /// The next header line; `Ok(None)` at an empty line or the end;
    /// `Err(1-based line number)` for a line without `:`.
    #[inline]
    pub(crate) fn next_line(&mut self, src: &[u8]) -> Result<Option<HeaderLine>, usize> {
        if self.pos >= self.len {
            return Ok(None);
        }
        self.line_no += 1;
        let line_start = self.pos;
        let (mut end, next) = match self.scan.next_newline(line_start) {
            Some(p) => (p, p + 1),
            None => (self.len, self.len),
        };
        self.pos = next;
        if end > line_start && src[end - 1] == b'\r' {
            end -= 1;
        }
        if end == line_start {
            return Ok(None);
        }
        let Some(colon) = self.scan.colon_before(line_start, end) else {
            return Err(self.line_no);
        };
        let mut v = colon + 1;
        while v < end && matches!(src[v], b' ' | b'\t') {
            v += 1;
        }
        Ok(Some(HeaderLine {
            name: line_start..colon,
            value: v..end,
            percent: self.scan.percent_before(v, end),
        }))
    }

    /// Appends the percent-decoded value of `line` to `out`, jumping from
    /// `%` to `%` with the scan (`percent::decode_into`'s rules).
    #[inline]
    pub(crate) fn decode_value(&self, src: &[u8], line: &HeaderLine, out: &mut Vec<u8>) {
        let (start, end) = (line.value.start, line.value.end);
        super::percent::decode_with(
            &src[start..end],
            line.percent.map(|p| p - start),
            |i| self.scan.percent_before(start + i, end).map(|p| p - start),
            out,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(src: &[u8], byte: u8, from: usize) -> Option<usize> {
        src.iter()
            .enumerate()
            .skip(from)
            .find(|&(_, &b)| b == byte)
            .map(|(i, _)| i)
    }

    #[test]
    fn finds_the_same_positions_as_a_byte_loop() {
        let mut src = Vec::new();
        for i in 0..300u32 {
            src.extend_from_slice(format!("Name-{i}: v%20{i}:x\n").as_bytes());
            if i % 7 == 0 {
                src.extend_from_slice("é\n".as_bytes());
            }
        }
        let s = Structure::new(&src);
        assert!(!s.ascii);
        for from in 0..src.len() + 2 {
            assert_eq!(s.next_newline(from), naive(&src, b'\n', from), "nl {from}");
            assert_eq!(
                s.colon_before(from, src.len()),
                naive(&src, b':', from),
                "colon {from}"
            );
            assert_eq!(
                s.percent_before(from, src.len()),
                naive(&src, b'%', from),
                "pct {from}"
            );
        }
        assert!(Structure::new(b"A: b\n").ascii);
        assert_eq!(Structure::new(b"").next_newline(0), None);
    }
}
