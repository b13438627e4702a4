//! Masks contact details for logs: `+1234***8901`, `use***@example.com`.

/// Masks a phone number, keeping the first five and last four characters.
pub fn mask_phone(phone: &str) -> String {
    let chars: Vec<char> = phone.chars().collect();
    // The story's shape (`+1234***8901`) for numbers of 11 digits or more; shorter ones
    // show less, so that at least half of a number's digits stay hidden.
    let (head, tail) = match chars.len() {
        12.. => (5, 4),
        9..=11 => (3, 2),
        _ => (2, 0),
    };
    let head: String = chars[..head.min(chars.len())].iter().collect();
    let tail: String = chars[chars.len().saturating_sub(tail)..].iter().collect();
    format!("{head}***{tail}")
}

/// Replaces every occurrence of `secret` in `text` by `masked`: a provider's error
/// message may quote the address it refused, and mail servers often quote it in another
/// case (`<User@Example.COM>`), so ASCII letters match in any case.
pub fn scrub(text: &str, secret: &str, masked: &str) -> String {
    let (hay, needle) = (text.as_bytes(), secret.as_bytes());
    if needle.is_empty() || hay.len() < needle.len() {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let (mut copied, mut i) = (0, 0);
    while i + needle.len() <= hay.len() {
        // Non-ASCII bytes match only exactly and ASCII bytes are never inside a
        // multi-byte character, so a match starts and ends on character boundaries.
        if hay[i..i + needle.len()].eq_ignore_ascii_case(needle) {
            out.push_str(&text[copied..i]);
            out.push_str(masked);
            i += needle.len();
            copied = i;
        } else {
            i += 1;
        }
    }
    out.push_str(&text[copied..]);
    out
}

/// Masks an email address, keeping the first three characters of the local part
/// and the whole domain.
pub fn mask_email(email: &str) -> String {
    match email.rsplit_once('@') {
        Some((local, domain)) => {
            let head: String = local.chars().take(3.min(local.chars().count().saturating_sub(1)).max(1)).collect();
            format!("{head}***@{domain}")
        }
        None => "***".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_masked_as_in_the_story() {
        assert_eq!(mask_phone("+12345678901"), "+1234***8901");
        assert_eq!(mask_phone("+1234567"), "+1***");
        assert!(!mask_phone("+447911123456").contains("79111"));
    }

    #[test]
    fn short_numbers_keep_at_least_half_their_digits_hidden() {
        for (number, masked) in
            [("+123456789", "+12***89"), ("+12345678901", "+1234***8901"), ("+1234567890", "+12***90")]
        {
            assert_eq!(mask_phone(number), masked);
            let shown = masked.chars().filter(char::is_ascii_digit).count();
            let digits = number.chars().filter(char::is_ascii_digit).count();
            assert!(shown * 2 <= digits || digits >= 11, "{number} → {masked}");
        }
    }

    #[test]
    fn scrub_masks_every_occurrence_of_an_address() {
        let text = "The 'To' number +14155552671 is not valid (+14155552671)";
        assert_eq!(
            scrub(text, "+14155552671", "+1415***2671"),
            "The 'To' number +1415***2671 is not valid (+1415***2671)"
        );
        assert_eq!(scrub("550 <a@b.c>: rejected", "", "x"), "550 <a@b.c>: rejected");
    }

    #[test]
    fn scrub_masks_an_address_quoted_in_another_case() {
        assert_eq!(
            scrub(
                "550 5.1.1 <Trader@Example.COM>: unknown user trader@example.com",
                "trader@example.com",
                "tra***@example.com"
            ),
            "550 5.1.1 <tra***@example.com>: unknown user tra***@example.com"
        );
        // Non-ASCII letters match only as written; the text around them is kept whole.
        assert_eq!(scrub("é ÜSER@b.c ü", "üser@b.c", "x"), "é ÜSER@b.c ü");
        assert_eq!(scrub("é üSER@B.c ü", "üser@b.c", "x"), "é x ü");
        assert_eq!(scrub("ab", "abc", "x"), "ab");
    }

    #[test]
    fn email_masked_as_in_the_story() {
        assert_eq!(mask_email("user@example.com"), "use***@example.com");
        assert_eq!(mask_email("ab@example.com"), "a***@example.com");
        assert_eq!(mask_email("a@example.com"), "a***@example.com");
        assert_eq!(mask_email("garbage"), "***");
    }
}
