//! A notification's metadata, kept as the compact JSON text of an object.
//!
//! The store writes this text and every toast carries it, so it is made once, where the
//! event comes in. The bridge takes the object as posted: serde_json checks it while
//! reading the body (without building a `Value` of it), and whitespace outside its
//! strings is dropped. Building a `Value` of each event's metadata on the request thread
//! and serialising it again on the SQLite writer was ~5 % of a user-targeted message's
//! instructions (callgrind). Keys keep the order they were posted in; readers that want
//! fields parse the text ([`Metadata::value`]): the API and the emails read stored rows
//! anyway, and only the throttle of a generic risk warning or system error looks inside
//! an event's metadata.

use super::validation::{limits, FieldError};
use serde_json::value::RawValue;
use serde_json::Value;

/// The compact JSON text of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata(Box<str>);

impl Default for Metadata {
    /// `{}`.
    fn default() -> Self {
        Metadata("{}".into())
    }
}

impl Metadata {
    /// The metadata the hub builds itself (typed events, tests): `value` must be an
    /// object; it is written as serde_json writes it (keys sorted).
    pub fn from_value(value: &Value) -> Self {
        debug_assert!(value.is_object(), "metadata is an object");
        let capacity = super::validation::serialised_len_estimate(value);
        Metadata(super::json_text::value_to_string(value, capacity).into_boxed_str())
    }

    /// Posted metadata, which serde_json has read as valid JSON: it must be an object of at
    /// most [`limits::METADATA_MAX_BYTES`] once compact.
    pub fn from_posted(raw: Box<RawValue>) -> Result<Self, FieldError> {
        let text: Box<str> = raw.into();
        let text = match compact(&text) {
            Some(compacted) => compacted.into_boxed_str(),
            None => text,
        };
        if !text.starts_with('{') {
            return Err(FieldError::new("metadata", "must be a JSON object"));
        }
        if text.len() > limits::METADATA_MAX_BYTES {
            return Err(FieldError::new(
                "metadata",
                format!("must be at most {} bytes serialised (got {})", limits::METADATA_MAX_BYTES, text.len()),
            ));
        }
        Ok(Metadata(text))
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The object, parsed.
    pub fn value(&self) -> Value {
        // The text was read or written as JSON by this module: it parses.
        serde_json::from_str(&self.0).unwrap_or_else(|_| Value::Object(Default::default()))
    }

    /// A string field, if the object has one named `name`.
    pub fn string(&self, name: &str) -> Option<String> {
        match self.value() {
            Value::Object(mut map) => match map.remove(name) {
                Some(Value::String(s)) => Some(s),
                _ => None,
            },
            _ => None,
        }
    }
}

/// `json` (valid JSON) without the whitespace outside its strings; `None` when it has none.
fn compact(json: &str) -> Option<String> {
    let bytes = json.as_bytes();
    // In valid JSON a byte up to 0x20 is whitespace: between tokens, or a space inside a
    // string (control characters in strings must be escaped). Most bodies come compact
    // and have no such byte outside strings; a first look eight bytes at a time finds
    // the first candidate, if any.
    first_space_or_below(bytes)?;
    let mut out: Option<String> = None;
    let (mut in_string, mut escaped) = (false, false);
    let mut kept_from = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
        } else if matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            let out = out.get_or_insert_with(|| String::with_capacity(json.len()));
            out.push_str(&json[kept_from..i]);
            kept_from = i + 1;
        }
    }
    let mut out = out?;
    out.push_str(&json[kept_from..]);
    Some(out)
}

/// Where the first byte of at most 0x20 (a space, or below) is.
fn first_space_or_below(bytes: &[u8]) -> Option<usize> {
    use super::json_text::{below, first_flagged};
    first_flagged(bytes, 0, |x| below(x, 0x21), |b| b <= 0x20)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn posted(text: &str) -> Result<Metadata, FieldError> {
        Metadata::from_posted(RawValue::from_string(text.to_string()).expect("valid JSON"))
    }

    #[test]
    fn compact_metadata_is_kept_as_posted() {
        let text = r#"{"z":1,"a":"x y","n":{"k":[1,2.5,null,true]}}"#;
        assert_eq!(posted(text).unwrap().as_str(), text);
        assert_eq!(compact(text), None);
    }

    #[test]
    fn whitespace_outside_strings_goes_and_inside_strings_stays() {
        let text = "{\n  \"a\" : [ 1 ,\t2 ],\r\n  \"b\": \"two  words\\t\\\" \\\\ \" ,\"c\":{ } }";
        assert_eq!(posted(text).unwrap().as_str(), r#"{"a":[1,2],"b":"two  words\t\" \\ ","c":{}}"#);
    }

    #[test]
    fn an_escaped_backslash_ends_before_the_quote_that_closes_the_string() {
        // `"a\\"` ends at its last quote: the space after it is outside the string.
        assert_eq!(posted(r#"{"k": "a\\" , "l": "\\\" x"}"#).unwrap().as_str(), r#"{"k":"a\\","l":"\\\" x"}"#);
    }

    #[test]
    fn pretty_printed_values_compact_to_what_serde_json_writes() {
        // Values of many shapes (keys sorted, as serde_json's maps write them), pretty
        // printed and compacted again.
        let mut values = vec![
            json!({}),
            json!({"a": []}),
            json!({"s": " lead and trail ", "e": "tab\there \"q\" back\\slash", "u": "é ü 😀"}),
            json!({"n": -1.5e-7, "big": u64::MAX, "neg": i64::MIN, "f": 0.1, "t": true, "z": null}),
        ];
        for depth in 0..4 {
            let mut v = json!({"leaf": "x y", "list": [1, " a ", {"k": "v w"}]});
            for d in 0..depth {
                v = json!({ format!("level {d}"): v, "sibling": [d, "s p a c e"] });
            }
            values.push(v);
        }
        for value in values {
            let pretty = serde_json::to_string_pretty(&value).unwrap();
            let compacted = posted(&pretty).unwrap();
            assert_eq!(compacted.as_str(), serde_json::to_string(&value).unwrap(), "{pretty}");
            assert_eq!(compacted.value(), value);
        }
    }

    #[test]
    fn the_first_low_byte_is_found_in_every_position() {
        for len in 0..20 {
            for at in 0..len {
                let mut bytes = vec![b'x'; len];
                bytes[at] = b' ';
                assert_eq!(first_space_or_below(&bytes), Some(at), "len {len} at {at}");
                bytes[at] = b'\n';
                assert_eq!(first_space_or_below(&bytes), Some(at));
                // 0x21 and high bytes are not whitespace.
                bytes[at] = 0x21;
                assert_eq!(first_space_or_below(&bytes), None);
                bytes[at] = 0xa0;
                assert_eq!(first_space_or_below(&bytes), None);
            }
        }
        // A high byte before a space does not hide it.
        assert_eq!(first_space_or_below("ééé é".as_bytes()), Some(6));
    }

    #[test]
    fn anything_but_an_object_is_refused() {
        for text in ["[1]", "\"s\"", "1", "null", "true"] {
            let e = posted(text).unwrap_err();
            assert_eq!((e.field.as_str(), e.reason.as_str()), ("metadata", "must be a JSON object"), "{text}");
        }
    }

    #[test]
    fn the_size_limit_counts_the_compact_text() {
        let fits = format!(r#"{{"s":"{}"}}"#, "a".repeat(limits::METADATA_MAX_BYTES - 8));
        assert_eq!(fits.len(), limits::METADATA_MAX_BYTES);
        assert!(posted(&fits).is_ok());
        // Whitespace does not count against the limit.
        let padded = format!("{{ \"s\" :\n \"{}\" }}", "a".repeat(limits::METADATA_MAX_BYTES - 8));
        assert_eq!(posted(&padded).unwrap().as_str(), fits);
        let over = format!(r#"{{"s":"{}"}}"#, "a".repeat(limits::METADATA_MAX_BYTES - 7));
        let e = posted(&over).unwrap_err();
        assert_eq!(e.field, "metadata");
        assert_eq!(
            e.reason,
            format!("must be at most 16384 bytes serialised (got {})", limits::METADATA_MAX_BYTES + 1)
        );
    }

    #[test]
    fn built_metadata_is_serde_jsons_text_and_reads_back() {
        let value = json!({"symbol": "AAPL", "confidence": 87, "entry": "152.35"});
        let m = Metadata::from_value(&value);
        assert_eq!(m.as_str(), serde_json::to_string(&value).unwrap());
        assert_eq!(m.value(), value);
        assert_eq!(m.string("symbol").as_deref(), Some("AAPL"));
        assert_eq!(m.string("confidence"), None);
        assert_eq!(m.string("missing"), None);
        assert_eq!(Metadata::default().as_str(), "{}");
    }
}
