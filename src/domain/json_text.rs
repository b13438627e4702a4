//! JSON text written by hand where the hub writes the same shapes at every message: a
//! notification's metadata (stored, and carried by its toast) and its strings.
//!
//! serde_json escapes a string byte by byte through a table, ~8 instructions a byte, and
//! a toast's metadata and texts are most of its bytes: escaping was ~10 % of the SQLite
//! writer's instructions per user-targeted message (callgrind). Here a string is scanned
//! eight bytes at a time for the few bytes JSON escapes, and runs without them are copied
//! whole. The output is byte for byte serde_json's (compact) output, which the tests
//! check.

use serde_json::Value;

/// Writes `s` as a JSON string, quotes included, escaped exactly as serde_json does.
pub fn push_str(out: &mut String, s: &str) {
    out.push('"');
    push_str_contents(out, s);
    out.push('"');
}

/// Writes `s` escaped as serde_json does, without the quotes.
pub fn push_str_contents(out: &mut String, s: &str) {
    let bytes = s.as_bytes();
    let mut clean_from = 0;
    let mut i = 0;
    while i < bytes.len() {
        match next_to_escape(bytes, i) {
            None => break,
            Some(at) => {
                out.push_str(&s[clean_from..at]);
                push_escape(out, bytes[at]);
                i = at + 1;
                clean_from = i;
            }
        }
    }
    out.push_str(&s[clean_from..]);
}

/// Where the first byte from `from` on that JSON must escape is: `"`, `\` or a control
/// character below 0x20. Those are ASCII, so they never sit inside a multi-byte
/// character and the slices around them stay on character boundaries.
fn next_to_escape(bytes: &[u8], from: usize) -> Option<usize> {
    first_flagged(
        bytes,
        from,
        |x| below(x, 0x20) | below(x ^ (ONES * b'"' as u64), 1) | below(x ^ (ONES * b'\\' as u64), 1),
        needs_escape,
    )
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte of `x` below `n` (≤ 0x80), as the classic "has a byte below
/// n" test flags it: a borrow runs upwards, so a byte may be flagged falsely only above one
/// flagged truly, and bytes of 0x80 and up are never flagged.
pub(crate) fn below(x: u64, n: u8) -> u64 {
    x.wrapping_sub(ONES * n as u64) & !x & HIGHS
}

/// Where the first byte from `from` on that `is` is: eight bytes at a time, through
/// `flags` (a word's flagged bytes, as [`below`] flags them, the lowest one true), then
/// byte by byte for the tail.
pub(crate) fn first_flagged(
    bytes: &[u8],
    from: usize,
    flags: impl Fn(u64) -> u64,
    is: impl Fn(u8) -> bool,
) -> Option<usize> {
    let mut i = from;
    while i + 8 <= bytes.len() {
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[i..i + 8]);
        let hits = flags(u64::from_le_bytes(word));
        if hits != 0 {
            let at = i + (hits.trailing_zeros() / 8) as usize;
            debug_assert!(is(bytes[at]));
            return Some(at);
        }
        i += 8;
    }
    bytes[i..].iter().position(|&b| is(b)).map(|p| i + p)
}

fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

fn push_escape(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    match b {
        b'"' => out.push_str("\\\""),
        b'\\' => out.push_str("\\\\"),
        b'\n' => out.push_str("\\n"),
        b'\r' => out.push_str("\\r"),
        b'\t' => out.push_str("\\t"),
        0x08 => out.push_str("\\b"),
        0x0c => out.push_str("\\f"),
        _ => {
            out.push_str("\\u00");
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 0xf) as usize] as char);
        }
    }
}

/// Writes `value` as compact JSON, as `serde_json::to_string` does.
pub fn push_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.push_str(itoa::Buffer::new().format(i));
            } else if let Some(u) = n.as_u64() {
                out.push_str(itoa::Buffer::new().format(u));
            } else {
                // Floats (finite: a Value holds no other), as serde_json writes them.
                out.push_str(&n.to_string());
            }
        }
        Value::String(s) => push_str(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_str(out, key);
                out.push(':');
                push_value(out, item);
            }
            out.push('}');
        }
    }
}

/// `value` as compact JSON in a buffer of `capacity` bytes to start with.
pub fn value_to_string(value: &Value, capacity: usize) -> String {
    let mut out = String::with_capacity(capacity);
    push_value(&mut out, value);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn escaped(s: &str) -> String {
        let mut out = String::new();
        push_str(&mut out, s);
        out
    }

    #[test]
    fn every_byte_below_0x80_escapes_as_serde_json_escapes_it() {
        for b in 0u8..0x80 {
            let s = (b as char).to_string();
            assert_eq!(escaped(&s), serde_json::to_string(&s).unwrap(), "byte {b:#04x}");
        }
    }

    #[test]
    fn escapes_land_at_every_offset_of_a_word() {
        // Each byte to escape at each of the eight places of a word, and past the words,
        // among multi-byte characters and bytes just around the ones that escape.
        let specials = ['"', '\\', '\n', '\u{1}', '\u{1f}', '\u{7f}', ' ', '!', '#', '[', ']', 'é', '€', '\u{1F6A8}'];
        for len in 0..24 {
            for at in 0..len {
                for c in specials {
                    let s: String = (0..len).map(|i| if i == at { c } else { 'a' }).collect();
                    assert_eq!(escaped(&s), serde_json::to_string(&s).unwrap(), "{s:?}");
                }
            }
        }
        let mixed = "tab\there, \"quoted\", back\\slash, control \u{1}\u{8}\u{c}\r, ünïcode \u{1F6A8} end";
        assert_eq!(escaped(mixed), serde_json::to_string(mixed).unwrap());
        assert_eq!(escaped(&"x".repeat(500)), serde_json::to_string(&"x".repeat(500)).unwrap());
    }

    #[test]
    fn values_are_written_as_serde_json_writes_them() {
        let values = [
            json!(null),
            json!(true),
            json!({}),
            json!([]),
            json!({"b": 1, "a": [1, -2, 2.5, 1e300, -0.0, 18446744073709551615u64, -9223372036854775808i64],
                   "nested": {"é": "ü", "q": "\"", "list": [null, false, {"x": "\u{1}"}]}, "": ""}),
            json!({"symbol": "EURUSD", "confidence": 0.93, "pad": "y".repeat(450)}),
            json!(0.1),
            json!(1.0),
            json!(123456789.12345679),
        ];
        for v in values {
            assert_eq!(value_to_string(&v, 0), serde_json::to_string(&v).unwrap());
        }
    }
}
