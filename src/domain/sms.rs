//! SMS bodies that fit in one or two segments: 306 GSM-7 characters (153 per part of a
//! concatenated message), or 134 when a character outside GSM-7 forces UCS-2.

/// Longest body in two GSM-7 segments.
pub const GSM7_TWO_SEGMENTS: usize = 2 * 153;
/// Longest body in two UCS-2 segments.
pub const UCS2_TWO_SEGMENTS: usize = 2 * 67;

const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
const GSM7_EXTENDED: &str = "^{}\\[~]|€";

fn gsm7_units(c: char) -> Option<usize> {
    if GSM7_BASIC.contains(c) {
        Some(1)
    } else if GSM7_EXTENDED.contains(c) {
        Some(2)
    } else {
        None
    }
}

/// Whether the text can be sent in the GSM-7 alphabet.
pub fn is_gsm7(text: &str) -> bool {
    text.chars().all(|c| gsm7_units(c).is_some())
}

/// Length in encoding units (GSM-7 septets, or UTF-16 units for UCS-2).
pub fn units(text: &str) -> usize {
    if is_gsm7(text) {
        text.chars().map(|c| gsm7_units(c).unwrap_or(1)).sum()
    } else {
        text.encode_utf16().count()
    }
}

/// Segments a message of this text takes.
pub fn segments(text: &str) -> usize {
    let (single, multi) = if is_gsm7(text) { (160, 153) } else { (70, 67) };
    let n = units(text);
    if n <= single {
        1
    } else {
        n.div_ceil(multi)
    }
}

/// `notifyhub: TITLE — MESSAGE`, cut with an ellipsis to fit two segments.
pub fn body(title: &str, message: &str) -> String {
    let full = if message.trim().is_empty() {
        format!("notifyhub: {}", title.trim())
    } else {
        format!("notifyhub: {} - {}", title.trim(), message.trim())
    };
    let full: String = full.chars().map(|c| if c == '\n' || c == '\r' { ' ' } else { c }).collect();
    if segments(&full) <= 2 {
        return full;
    }
    let mut out = String::new();
    for c in full.chars() {
        let candidate = format!("{out}{c}...");
        if segments(&candidate) > 2 {
            break;
        }
        out.push(c);
    }
    out.push_str("...");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_messages_are_kept_whole() {
        assert_eq!(body("Emergency exit: TSLA", "creek breached"), "notifyhub: Emergency exit: TSLA - creek breached");
        assert_eq!(segments("hello"), 1);
    }

    #[test]
    fn long_gsm_messages_fit_two_segments() {
        let b = body("Risk warning", &"x".repeat(1000));
        assert!(b.ends_with("..."));
        assert_eq!(segments(&b), 2);
        assert!(units(&b) <= GSM7_TWO_SEGMENTS);
        assert!(units(&b) > GSM7_TWO_SEGMENTS - 5, "uses the room it has");
    }

    #[test]
    fn unicode_switches_to_ucs2_limits() {
        let b = body("Signal ✓", &"é—".repeat(200));
        assert!(!is_gsm7(&b));
        assert_eq!(segments(&b), 2);
        assert!(units(&b) <= UCS2_TWO_SEGMENTS);
    }

    #[test]
    fn extended_characters_count_double() {
        assert_eq!(units("€"), 2);
        assert_eq!(units("a{b"), 4);
        assert_eq!(segments(&"€".repeat(80)), 1);
        assert_eq!(segments(&"€".repeat(81)), 2);
    }
}
