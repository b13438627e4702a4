//! JSON logs through `tracing`. The sink is a parameter so tests stay quiet unless
//! `TEST_LOG` is set. Every line logged while serving a request carries its
//! `request_id` (from the request span).

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber (JSON lines, level from `RUST_LOG`, default `info`).
/// Returns false when one was already installed.
pub fn init<W>(default_level: &str, sink: W) -> bool
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(true)
        .with_span_list(false)
        .with_target(true)
        .with_writer(sink)
        .try_init()
        .is_ok()
}
