//! Masks contact details for logs: `+1234***8901`, `use***@example.com`.

/// Masks a phone number, keeping the first five and last four characters.
pub fn mask_phone(phone: &str) -> String {
    let chars: Vec<char> = phone.chars().collect();
    if chars.len() <= 9 {
        let head: String = chars.iter().take(2).collect();
        return format!("{head}***");
    }
    let head: String = chars[..5].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}***{tail}")
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
    fn email_masked_as_in_the_story() {
        assert_eq!(mask_email("user@example.com"), "use***@example.com");
        assert_eq!(mask_email("ab@example.com"), "a***@example.com");
        assert_eq!(mask_email("a@example.com"), "a***@example.com");
        assert_eq!(mask_email("garbage"), "***");
    }
}
