//! Percent-encoding of plain-event header values, exactly as FreeSWITCH's
//! `switch_url_encode` writes them, and the matching decoder.

/// True for bytes FreeSWITCH writes as `%XX` in a plain event value.
#[inline]
const fn must_encode(b: u8) -> bool {
    // Below 0x20 or above 0x7E, plus the reserved set.
    b < 0x20
        || b > 0x7e
        || matches!(
            b,
            b' ' | b'"'
                | b'#'
                | b'%'
                | b'&'
                | b'+'
                | b':'
                | b';'
                | b'<'
                | b'='
                | b'>'
                | b'?'
                | b'@'
                | b'['
                | b'\\'
                | b']'
                | b'^'
                | b'`'
                | b'{'
                | b'|'
                | b'}'
        )
}

#[inline]
fn is_upper_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'A'..=b'F').contains(&b)
}

#[inline]
fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// `must_encode` as a table, for the encoder's hot loop.
const ENCODE: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = must_encode(b as u8);
        b += 1;
    }
    t
};

/// Appends `value` percent-encoded as FreeSWITCH does, including its quirk:
/// a `%` already followed by two uppercase hex digits is copied, not
/// re-encoded (so such a value does not survive a round trip).
pub fn encode_into(value: &[u8], out: &mut Vec<u8>) {
    // Most values need no escape at all: copy runs of plain bytes at once.
    let mut i = 0;
    while i < value.len() {
        let run = value[i..]
            .iter()
            .position(|&b| ENCODE[b as usize])
            .unwrap_or(value.len() - i);
        out.extend_from_slice(&value[i..i + run]);
        i += run;
        if i >= value.len() {
            break;
        }
        let b = value[i];
        if b == b'%'
            && i + 2 < value.len()
            && is_upper_hex(value[i + 1])
            && is_upper_hex(value[i + 2])
        {
            out.push(b'%');
        } else if must_encode(b) {
            out.extend_from_slice(&[b'%', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
        } else {
            out.push(b);
        }
        i += 1;
    }
}

/// `value` percent-encoded as FreeSWITCH does (see [`encode_into`]).
pub fn encode(value: &[u8]) -> String {
    let mut out = Vec::with_capacity(value.len() + value.len() / 4);
    encode_into(value, &mut out);
    // Only ASCII is ever written.
    String::from_utf8(out).unwrap_or_default()
}

/// Appends the percent-decoding of `value`: `%XX` (either hex case) becomes
/// the byte; a `%` not followed by two hex digits is kept literally; `+` is
/// never a space.
#[inline]
pub fn decode_into(value: &[u8], out: &mut Vec<u8>) {
    decode_with(
        value,
        memchr::memchr(b'%', value),
        |i| memchr::memchr(b'%', &value[i..]).map(|p| i + p),
        out,
    );
}

/// The decoding loop of [`decode_into`] for callers that already know
/// where the `%` are: `first` is the first one in `value`, and
/// `next_percent(i)` finds the next at or after `i` (the header parser
/// answers both from its structural scan).
#[inline]
pub(crate) fn decode_with(
    value: &[u8],
    first: Option<usize>,
    mut next_percent: impl FnMut(usize) -> Option<usize>,
    out: &mut Vec<u8>,
) {
    let mut i = 0;
    let mut next = first;
    while let Some(p) = next {
        out.extend_from_slice(&value[i..p]);
        let byte = if p + 2 < value.len() {
            hex_val(value[p + 1])
                .zip(hex_val(value[p + 2]))
                .map(|(h, l)| h << 4 | l)
        } else {
            None
        };
        match byte {
            Some(b) => {
                out.push(b);
                i = p + 3;
            }
            None => {
                out.push(b'%');
                i = p + 1;
            }
        }
        next = next_percent(i);
    }
    out.extend_from_slice(&value[i..]);
}

/// The percent-decoding of `value` (see [`decode_into`]).
pub fn decode(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    decode_into(value, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_like_freeswitch() {
        assert_eq!(encode(b"2024-05-01 12:00:00"), "2024-05-01%2012%3A00%3A00");
        assert_eq!(encode(b"::1"), "%3A%3A1");
        assert_eq!(
            encode(b"{origination_uuid=x,sip_h_X-Call-Ref=abc}sofia/external/park@127.0.0.1:5080 &park()"),
            "%7Borigination_uuid%3Dx,sip_h_X-Call-Ref%3Dabc%7Dsofia/external/park%40127.0.0.1%3A5080%20%26park()"
        );
        assert_eq!(encode("ö".as_bytes()), "%C3%B6");
        assert_eq!(encode(b"a+b"), "a%2Bb");
        assert_eq!(encode(b"!$'()*,-./_~"), "!$'()*,-./_~");
        assert_eq!(encode(b"\r\n"), "%0D%0A");
    }

    #[test]
    fn existing_uppercase_escape_is_passed_through() {
        assert_eq!(encode(b"100%41"), "100%41");
        assert_eq!(encode(b"100%4a"), "100%254a");
        assert_eq!(encode(b"50%"), "50%25");
        assert_eq!(encode(b"5%4"), "5%254");
    }

    #[test]
    fn decodes_plus_literally_and_keeps_stray_percent() {
        assert_eq!(decode(b"a+b%20c"), b"a+b c");
        assert_eq!(decode(b"100%"), b"100%");
        assert_eq!(decode(b"%zz%4"), b"%zz%4");
        assert_eq!(decode(b"%c3%B6"), "ö".as_bytes());
        assert_eq!(decode(b"%FF"), b"\xff");
    }
}
