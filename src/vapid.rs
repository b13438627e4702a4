//! VAPID key handling (RFC 8292): the hub's P-256 key pair in the base64url forms
//! browsers and `web-push` expect.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p256::elliptic_curve::sec1::ToEncodedPoint;

/// The public key (uncompressed SEC1 point, base64url) for a private key.
pub fn public_key_from_private(private_b64: &str) -> Result<String, String> {
    let raw =
        URL_SAFE_NO_PAD.decode(private_b64.trim().trim_end_matches('=')).map_err(|_| "is not base64url".to_string())?;
    let key = p256::SecretKey::from_slice(&raw).map_err(|_| "is not a P-256 private key (32 bytes)".to_string())?;
    Ok(URL_SAFE_NO_PAD.encode(key.public_key().to_encoded_point(false).as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_a_65_byte_public_point() {
        let private = crate::config::generate_vapid_private_key();
        let public = public_key_from_private(&private).unwrap();
        assert_eq!(URL_SAFE_NO_PAD.decode(public).unwrap().len(), 65);
        assert!(public_key_from_private("AAAA").is_err());
        assert!(public_key_from_private("!!").is_err());
    }
}
