//! The stored form of preferences: the API document with its contact fields
//! encrypted, so the database file never holds an address in clear.

use crate::crypto::PiiCipher;
use crate::domain::NotificationPreferences;
use crate::store::StoreError;
use serde_json::Value;

const CONTACT_FIELDS: [&str; 2] = ["email_address", "sms_phone_number"];

/// Preferences → stored JSON (contact fields encrypted).
pub fn encode(prefs: &NotificationPreferences, cipher: &PiiCipher) -> Value {
    let mut doc = serde_json::to_value(prefs).unwrap_or(Value::Null);
    if let Some(obj) = doc.as_object_mut() {
        for field in CONTACT_FIELDS {
            if let Some(Value::String(plain)) = obj.get(field) {
                let sealed = cipher.encrypt(plain);
                obj.insert(field.to_string(), Value::String(sealed));
            }
        }
    }
    doc
}

/// A user's preferences from their stored document, or the defaults when they never
/// saved any.
pub fn decode_or_default(
    doc: Option<Value>,
    user: uuid::Uuid,
    cipher: &PiiCipher,
) -> Result<NotificationPreferences, StoreError> {
    match doc {
        Some(doc) => decode(doc, cipher),
        None => Ok(NotificationPreferences::defaults(user)),
    }
}

/// Stored JSON → preferences (contact fields decrypted).
pub fn decode(mut doc: Value, cipher: &PiiCipher) -> Result<NotificationPreferences, StoreError> {
    if let Some(obj) = doc.as_object_mut() {
        for field in CONTACT_FIELDS {
            if let Some(Value::String(sealed)) = obj.get(field) {
                let plain = cipher.decrypt(sealed).map_err(|e| StoreError::Corrupt(format!("{field}: {e}")))?;
                obj.insert(field.to_string(), Value::String(plain));
            }
        }
    }
    serde_json::from_value(doc).map_err(|e| StoreError::Corrupt(format!("preferences: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::PreferencesPatch;
    use uuid::Uuid;

    #[test]
    fn contact_fields_are_sealed_and_restored() {
        let cipher = PiiCipher::new(&[1u8; 32]);
        let patch: PreferencesPatch = serde_json::from_value(
            serde_json::json!({"email_address": "trader@example.com", "sms_phone_number": "+12345678901"}),
        )
        .unwrap();
        let prefs = NotificationPreferences::defaults(Uuid::nil()).apply(patch, chrono::Utc::now()).unwrap();
        let doc = encode(&prefs, &cipher);
        let text = doc.to_string();
        assert!(!text.contains("trader@example.com") && !text.contains("12345678901"), "{text}");
        assert_eq!(decode(doc, &cipher).unwrap(), prefs);
    }
}
