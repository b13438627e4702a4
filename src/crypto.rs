//! Encryption of contact fields at rest (AES-256-GCM under `NOTIFYHUB_PII_KEY`), so
//! the raw database file never holds an email address or phone number in clear.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::RngCore;

/// Written before the values were bound to their owner and field; still read.
const PREFIX_V1: &str = "enc:v1:";
/// Bound to a context (the owner and the field) as associated data: a value copied into
/// another user's document, or into another field, does not decrypt there.
const PREFIX_V2: &str = "enc:v2:";

/// Encrypts and decrypts short strings; output is `enc:v2:` + base64(nonce ‖ ciphertext),
/// authenticated together with a context the caller names (e.g. `user-id:email_address`).
#[derive(Clone)]
pub struct PiiCipher {
    cipher: Aes256Gcm,
}

/// Decryption failed: wrong key, or the value was tampered with or moved.
#[derive(Debug, thiserror::Error)]
#[error("encrypted contact field cannot be decrypted (was NOTIFYHUB_PII_KEY changed?)")]
pub struct DecryptError;

impl PiiCipher {
    /// A cipher for the given 32-byte key.
    pub fn new(key: &[u8; 32]) -> Self {
        Self { cipher: Aes256Gcm::new(key.into()) }
    }

    /// Encrypts with a fresh random nonce, bound to `context`.
    pub fn encrypt(&self, plain: &str, context: &str) -> String {
        self.seal(plain, Some(context), PREFIX_V2)
    }

    fn seal(&self, plain: &str, context: Option<&str>, prefix: &str) -> String {
        let mut nonce = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let payload = Payload { msg: plain.as_bytes(), aad: context.unwrap_or_default().as_bytes() };
        // Encryption with a valid key and nonce cannot fail for inputs of this size.
        let ct = self.cipher.encrypt(&Nonce::from(nonce), payload).unwrap_or_default();
        let mut out = Vec::with_capacity(12 + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        format!("{prefix}{}", STANDARD.encode(out))
    }

    /// Decrypts a value written by [`encrypt`](Self::encrypt) with the same `context`
    /// (or an older `enc:v1:` value, which has none).
    pub fn decrypt(&self, stored: &str, context: &str) -> Result<String, DecryptError> {
        let (b64, aad) = match (stored.strip_prefix(PREFIX_V2), stored.strip_prefix(PREFIX_V1)) {
            (Some(b64), _) => (b64, context.as_bytes()),
            (None, Some(b64)) => (b64, &b""[..]),
            (None, None) => return Err(DecryptError),
        };
        let raw = STANDARD.decode(b64).map_err(|_| DecryptError)?;
        if raw.len() < 12 {
            return Err(DecryptError);
        }
        let (nonce, ct) = raw.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().map_err(|_| DecryptError)?;
        let plain = self.cipher.decrypt(&Nonce::from(nonce), Payload { msg: ct, aad }).map_err(|_| DecryptError)?;
        String::from_utf8(plain).map_err(|_| DecryptError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE_EMAIL: &str = "0190a0b1-0000-7000-8000-00000000000a:email_address";

    #[test]
    fn round_trip_and_no_clear_text() {
        let c = PiiCipher::new(&[7u8; 32]);
        let e = c.encrypt("trader@example.com", ALICE_EMAIL);
        assert!(e.starts_with("enc:v2:") && !e.contains("trader"));
        assert_ne!(e, c.encrypt("trader@example.com", ALICE_EMAIL), "nonce must differ");
        assert_eq!(c.decrypt(&e, ALICE_EMAIL).unwrap(), "trader@example.com");
    }

    #[test]
    fn wrong_key_or_tampering_is_refused() {
        let e = PiiCipher::new(&[7u8; 32]).encrypt("+12345678901", ALICE_EMAIL);
        assert!(PiiCipher::new(&[8u8; 32]).decrypt(&e, ALICE_EMAIL).is_err());
        let mut t = e.clone();
        t.pop();
        t.push('A');
        assert!(PiiCipher::new(&[7u8; 32]).decrypt(&t, ALICE_EMAIL).is_err() || t == e);
        assert!(PiiCipher::new(&[7u8; 32]).decrypt("+12345678901", ALICE_EMAIL).is_err());
    }

    #[test]
    fn a_value_moved_to_another_owner_or_field_does_not_decrypt() {
        let c = PiiCipher::new(&[7u8; 32]);
        let e = c.encrypt("trader@example.com", ALICE_EMAIL);
        assert!(c.decrypt(&e, "0190a0b1-0000-7000-8000-00000000000b:email_address").is_err());
        assert!(c.decrypt(&e, "0190a0b1-0000-7000-8000-00000000000a:sms_phone_number").is_err());
    }

    #[test]
    fn values_written_before_binding_are_still_read() {
        let c = PiiCipher::new(&[7u8; 32]);
        let old = c.seal("trader@example.com", None, PREFIX_V1);
        assert!(old.starts_with("enc:v1:"));
        assert_eq!(c.decrypt(&old, ALICE_EMAIL).unwrap(), "trader@example.com");
    }
}
