//! Encryption of contact fields at rest (AES-256-GCM under `NOTIFYHUB_PII_KEY`), so
//! the raw database file never holds an email address or phone number in clear.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::RngCore;

const PREFIX: &str = "enc:v1:";

/// Encrypts and decrypts short strings; output is `enc:v1:` + base64(nonce ‖ ciphertext).
#[derive(Clone)]
pub struct PiiCipher {
    cipher: Aes256Gcm,
}

/// Decryption failed: wrong key, or the value was tampered with.
#[derive(Debug, thiserror::Error)]
#[error("encrypted contact field cannot be decrypted (was NOTIFYHUB_PII_KEY changed?)")]
pub struct DecryptError;

impl PiiCipher {
    /// A cipher for the given 32-byte key.
    pub fn new(key: &[u8; 32]) -> Self {
        Self { cipher: Aes256Gcm::new(key.into()) }
    }

    /// Encrypts with a fresh random nonce.
    pub fn encrypt(&self, plain: &str) -> String {
        let mut nonce = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        // Encryption with a valid key and nonce cannot fail for inputs of this size.
        let ct = self.cipher.encrypt(&Nonce::from(nonce), plain.as_bytes()).unwrap_or_default();
        let mut out = Vec::with_capacity(12 + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        format!("{PREFIX}{}", STANDARD.encode(out))
    }

    /// Decrypts a value written by [`encrypt`](Self::encrypt).
    pub fn decrypt(&self, stored: &str) -> Result<String, DecryptError> {
        let b64 = stored.strip_prefix(PREFIX).ok_or(DecryptError)?;
        let raw = STANDARD.decode(b64).map_err(|_| DecryptError)?;
        if raw.len() < 12 {
            return Err(DecryptError);
        }
        let (nonce, ct) = raw.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().map_err(|_| DecryptError)?;
        let plain = self.cipher.decrypt(&Nonce::from(nonce), ct).map_err(|_| DecryptError)?;
        String::from_utf8(plain).map_err(|_| DecryptError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_no_clear_text() {
        let c = PiiCipher::new(&[7u8; 32]);
        let e = c.encrypt("trader@example.com");
        assert!(!e.contains("trader"));
        assert_ne!(e, c.encrypt("trader@example.com"), "nonce must differ");
        assert_eq!(c.decrypt(&e).unwrap(), "trader@example.com");
    }

    #[test]
    fn wrong_key_or_tampering_is_refused() {
        let e = PiiCipher::new(&[7u8; 32]).encrypt("+12345678901");
        assert!(PiiCipher::new(&[8u8; 32]).decrypt(&e).is_err());
        let mut t = e.clone();
        t.pop();
        t.push('A');
        assert!(PiiCipher::new(&[7u8; 32]).decrypt(&t).is_err() || t == e);
        assert!(PiiCipher::new(&[7u8; 32]).decrypt("+12345678901").is_err());
    }
}
