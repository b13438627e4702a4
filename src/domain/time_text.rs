//! UTC times as text, written digit by digit: exactly what chrono writes (its serde
//! form, and diesel's SQLite `TIMESTAMP` text), without its formatting machinery. Every
//! toast carries two times and every stored notification one; through chrono's
//! `Display` (and serde_json's escaping of each piece it writes) they were ~7,000
//! instructions of each toast's ~15,000.
//!
//! Both forms write the fraction as chrono's "auto" does: none when it is zero, else
//! 3, 6 or 9 digits, the fewest that hold it. Times chrono would write otherwise (a
//! leap second, a year outside 0–9999) are left to chrono: [`write()`] declines them.

use chrono::{DateTime, Datelike, NaiveDateTime, Timelike, Utc};

/// Longest text written: `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`.
pub const MAX_LEN: usize = 30;

/// How the date meets the time, and whether a `Z` ends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// `2026-11-28T19:40:00.123456Z`: chrono's serde form of a `DateTime<Utc>`.
    Rfc3339,
    /// `2026-11-28 19:40:00.123456`: diesel's SQLite text of a `NaiveDateTime`.
    Sqlite,
}

fn digits(out: &mut [u8], at: usize, value: u32, width: usize) {
    let mut v = value;
    for i in (0..width).rev() {
        out[at + i] = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// Writes `t` into `out` and returns the length, or `None` for a time whose text
/// chrono writes differently (leap second, year outside 0–9999).
pub fn write(t: &NaiveDateTime, style: Style, out: &mut [u8; MAX_LEN]) -> Option<usize> {
    let year = t.year();
    let nanos = t.nanosecond();
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        return None;
    }
    digits(out, 0, year as u32, 4);
    out[4] = b'-';
    digits(out, 5, t.month(), 2);
    out[7] = b'-';
    digits(out, 8, t.day(), 2);
    out[10] = if style == Style::Rfc3339 { b'T' } else { b' ' };
    digits(out, 11, t.hour(), 2);
    out[13] = b':';
    digits(out, 14, t.minute(), 2);
    out[16] = b':';
    digits(out, 17, t.second(), 2);
    let mut len = 19;
    let (fraction, width) = match nanos {
        0 => (0, 0),
        n if n % 1_000_000 == 0 => (n / 1_000_000, 3),
        n if n % 1_000 == 0 => (n / 1_000, 6),
        n => (n, 9),
    };
    if width > 0 {
        out[len] = b'.';
        digits(out, len + 1, fraction, width);
        len += 1 + width;
    }
    if style == Style::Rfc3339 {
        out[len] = b'Z';
        len += 1;
    }
    Some(len)
}

/// Writes `t` as a JSON string, quotes included, as chrono's serde writes it.
pub fn push_json(out: &mut String, t: &DateTime<Utc>) {
    let mut buf = [0u8; MAX_LEN];
    match write(&t.naive_utc(), Style::Rfc3339, &mut buf) {
        Some(n) => {
            out.push('"');
            // Only ASCII digits and separators were written.
            out.push_str(std::str::from_utf8(&buf[..n]).unwrap_or_default());
            out.push('"');
        }
        None => out.push_str(&serde_json::to_string(t).unwrap_or_default()),
    }
}

/// `t` as diesel writes a SQLite `TIMESTAMP`.
pub fn sqlite(t: &NaiveDateTime) -> String {
    let mut buf = [0u8; MAX_LEN];
    match write(t, Style::Sqlite, &mut buf) {
        Some(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        None => t.format("%F %T%.f").to_string(),
    }
}

/// For `#[serde(serialize_with = "…")]` on a `DateTime<Utc>`: the same text as chrono's
/// own `Serialize`.
pub fn serialize<S: serde::Serializer>(t: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    let mut buf = [0u8; MAX_LEN];
    match write(&t.naive_utc(), Style::Rfc3339, &mut buf) {
        Some(n) => serializer.serialize_str(std::str::from_utf8(&buf[..n]).map_err(serde::ser::Error::custom)?),
        None => serde::Serialize::serialize(t, serializer),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{NaiveDate, TimeZone};

    fn chrono_rfc3339(t: &DateTime<Utc>) -> String {
        serde_json::to_value(t).unwrap().as_str().unwrap().to_string()
    }

    fn times() -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        // A spread of instants, each with a fraction of every width.
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..2_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let secs = (seed % 253_402_300_799) as i64; // 1970 … 9999
            let nanos = (seed >> 20) as u32 % 1_000_000_000;
            for n in [0, nanos / 1_000_000 * 1_000_000, nanos / 1_000 * 1_000, nanos, 1, 999_999_999, 5_000_000, 7_000]
            {
                out.push(Utc.timestamp_opt(secs, n).unwrap());
            }
        }
        for (y, mo, d) in [(0, 1, 1), (1, 2, 3), (999, 12, 31), (2024, 2, 29), (9999, 12, 31)] {
            let t = NaiveDate::from_ymd_opt(y, mo, d).unwrap().and_hms_nano_opt(23, 59, 59, 120_000).unwrap();
            out.push(Utc.from_utc_datetime(&t));
        }
        out
    }

    #[test]
    fn json_text_is_chronos() {
        for t in times() {
            let via_serde = serde_json::to_string(&Wrapped(t)).unwrap();
            assert_eq!(via_serde, format!("\"{}\"", chrono_rfc3339(&t)));
            let mut pushed = String::new();
            push_json(&mut pushed, &t);
            assert_eq!(pushed, via_serde);
        }
    }

    #[test]
    fn sqlite_text_is_diesels() {
        for t in times() {
            let naive = t.naive_utc();
            assert_eq!(sqlite(&naive), naive.format("%F %T%.f").to_string(), "{naive:?}");
        }
    }

    #[test]
    fn what_chrono_writes_otherwise_is_left_to_chrono() {
        let leap = NaiveDate::from_ymd_opt(2016, 12, 31).unwrap().and_hms_nano_opt(23, 59, 59, 1_500_000_000).unwrap();
        let far = NaiveDate::from_ymd_opt(12_345, 1, 1).unwrap().and_hms_opt(0, 0, 0).unwrap();
        let before = NaiveDate::from_ymd_opt(-44, 3, 15).unwrap().and_hms_opt(12, 0, 0).unwrap();
        for naive in [leap, far, before] {
            let mut buf = [0u8; MAX_LEN];
            assert_eq!(write(&naive, Style::Rfc3339, &mut buf), None, "{naive:?}");
            let t = Utc.from_utc_datetime(&naive);
            assert_eq!(sqlite(&naive), naive.format("%F %T%.f").to_string());
            assert_eq!(serde_json::to_string(&Wrapped(t)).unwrap(), format!("\"{}\"", chrono_rfc3339(&t)));
            let mut pushed = String::new();
            push_json(&mut pushed, &t);
            assert_eq!(pushed, format!("\"{}\"", chrono_rfc3339(&t)));
        }
    }

    #[derive(serde::Serialize)]
    struct Wrapped(#[serde(serialize_with = "serialize")] DateTime<Utc>);
}
