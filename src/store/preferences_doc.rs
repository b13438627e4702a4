//! The stored form of preferences: the API document with its contact fields
//! encrypted, so the database file never holds an address in clear.

use crate::crypto::PiiCipher;
use crate::domain::NotificationPreferences;
use crate::store::StoreError;
use serde_json::Value;

const CONTACT_FIELDS: [&str; 2] = ["email_address", "sms_phone_number"];

/// What a contact field is bound to: its owner and its name, so that a sealed value
/// copied into another user's document, or into the other field, does not decrypt.
fn context(user: &str, field: &str) -> String {
    format!("{user}:{field}")
}

/// Preferences → stored JSON (contact fields encrypted).
pub fn encode(prefs: &NotificationPreferences, cipher: &PiiCipher) -> Value {
    let mut doc = serde_json::to_value(prefs).unwrap_or(Value::Null);
    let user = prefs.user_id.to_string();
    if let Some(obj) = doc.as_object_mut() {
        for field in CONTACT_FIELDS {
            if let Some(Value::String(plain)) = obj.get(field) {
                let sealed = cipher.encrypt(plain, &context(&user, field));
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
    let user = doc.get("user_id").and_then(Value::as_str).unwrap_or_default().to_string();
    if let Some(obj) = doc.as_object_mut() {
        for field in CONTACT_FIELDS {
            if let Some(Value::String(sealed)) = obj.get(field) {
                let plain = cipher
                    .decrypt(sealed, &context(&user, field))
                    .map_err(|e| StoreError::Corrupt(format!("{field}: {e}")))?;
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
        assert_eq!(decode(doc.clone(), &cipher).unwrap(), prefs);
        // Someone with write access to the database copies Alice's sealed address into
        // Bob's document: it does not decrypt there.
        let mut bob = encode(&NotificationPreferences::defaults(Uuid::new_v4()), &cipher);
        bob["email_address"] = doc["email_address"].clone();
        assert!(matches!(decode(bob, &cipher), Err(StoreError::Corrupt(_))));
        // Nor in the other field of the same document.
        let mut swapped = doc.clone();
        swapped["sms_phone_number"] = doc["email_address"].clone();
        assert!(matches!(decode(swapped, &cipher), Err(StoreError::Corrupt(_))));
    }
}
