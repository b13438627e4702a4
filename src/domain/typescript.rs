//! TypeScript declarations for the frontend, generated from the Rust models (ts-rs),
//! so the UI never keeps hand-written copies. `frontend/src/types/` is committed; a
//! test fails when it is stale, and `UPDATE_TS_TYPES=1 cargo test` rewrites it.

use super::notification::{Channel, Notification, NotificationToast, NotificationType, Priority, ServerMessage};
use super::preferences::{
    ChannelPreferences, ChannelPreferencesPatch, NotificationPreferences, PreferencesPatch, QuietHours, QuietHoursPatch,
};
use std::path::PathBuf;
use ts_rs::{Config, TS};

/// The ts-rs settings: sequence numbers and counts are plain `number`s in the browser.
pub fn config() -> Config {
    Config::new().with_large_int("number")
}

fn render<T: TS + 'static>(cfg: &Config) -> (PathBuf, String) {
    let path = T::output_path().unwrap_or_else(|| PathBuf::from(format!("{}.ts", T::name(cfg))));
    let text = T::export_to_string(cfg).unwrap_or_else(|e| format!("// export failed: {e}\n"));
    (path, text)
}

/// Every generated file: relative path and contents.
pub fn generated_files() -> Vec<(PathBuf, String)> {
    let cfg = config();
    vec![
        render::<Notification>(&cfg),
        render::<NotificationType>(&cfg),
        render::<Priority>(&cfg),
        render::<Channel>(&cfg),
        render::<NotificationToast>(&cfg),
        render::<ServerMessage>(&cfg),
        render::<NotificationPreferences>(&cfg),
        render::<QuietHours>(&cfg),
        render::<ChannelPreferences>(&cfg),
        render::<PreferencesPatch>(&cfg),
        render::<QuietHoursPatch>(&cfg),
        render::<ChannelPreferencesPatch>(&cfg),
        render::<serde_json::Value>(&cfg),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fails when `frontend/src/types` differs from what the Rust models generate.
    #[test]
    fn committed_typescript_types_are_current() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("frontend/src/types");
        let update = std::env::var("UPDATE_TS_TYPES").is_ok_and(|v| v == "1");
        let mut stale = Vec::new();
        for (rel, text) in generated_files() {
            let path = dir.join(&rel);
            if update {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, &text).unwrap();
            } else if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                stale.push(rel.display().to_string());
            }
        }
        assert!(
            stale.is_empty(),
            "frontend/src/types is stale for {stale:?}: run `UPDATE_TS_TYPES=1 cargo test --lib typescript` and commit"
        );
    }

    #[test]
    fn sequence_numbers_are_numbers_not_bigints() {
        let (_, text) = render::<NotificationToast>(&config());
        assert!(text.contains("sequence_number: number"), "{text}");
    }
}
