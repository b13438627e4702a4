//! The `notifyhub` command: `serve` (default), `migrate`, `token`, `vapid-keys`.

use clap::{Parser, Subcommand};
use notifyhub::auth::Role;
use notifyhub::config::{ConfigError, Settings, Source};
use std::process::ExitCode;
use uuid::Uuid;

/// jemalloc: its per-thread caches serve the hub's hand-offs between threads (a request
/// thread builds a batch, the writer frees it) and its 1–4 KiB buffers, which glibc's
/// malloc took through its slow path with a consolidation each time: 12 % fewer
/// instructions per user-targeted message, ~15 % more ingest (docs/performance.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(name = "notifyhub", version, about = "Real-time notification hub for trading dashboards")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the hub (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print a signed JWT for a user, admin or service.
    Token {
        /// The user's UUID (a fresh one when omitted).
        #[arg(long)]
        user: Option<Uuid>,
        /// user, admin or service.
        #[arg(long, default_value = "user", value_parser = parse_role)]
        role: Role,
        /// Lifetime, e.g. 30m, 1h, 7d.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
    },
    /// Print a fresh VAPID key pair (for VAPID_PRIVATE_KEY).
    VapidKeys,
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse()
}

fn config_failure(e: ConfigError) -> ExitCode {
    eprintln!("notifyhub: configuration error: {e}");
    ExitCode::from(2)
}

fn load_settings() -> Result<Settings, ConfigError> {
    Settings::load(&Source::from_process()?)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::VapidKeys => {
            let private = notifyhub::config::generate_vapid_private_key();
            match notifyhub::vapid::public_key_from_private(&private) {
                Ok(public) => {
                    println!("VAPID_PRIVATE_KEY={private}");
                    println!("# public key (served at /api/v1/push/vapid-public-key): {public}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("notifyhub: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Token { user, role, ttl } => match load_settings() {
            Err(e) => config_failure(e),
            Ok(settings) => {
                let keys = notifyhub::auth::JwtKeys::new(&settings.jwt_secret);
                println!("{}", keys.issue(user.unwrap_or_else(Uuid::new_v4), role, ttl));
                ExitCode::SUCCESS
            }
        },
        Command::Migrate => match load_settings() {
            Err(e) => config_failure(e),
            Ok(settings) => match notifyhub::store::run_migrations_blocking(&settings.database_url) {
                Ok(applied) => {
                    println!(
                        "{}: {} migration(s) applied{}",
                        settings.database_url.redacted(),
                        applied.len(),
                        if applied.is_empty() { String::new() } else { format!(" ({})", applied.join(", ")) }
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("notifyhub: {e}");
                    ExitCode::FAILURE
                }
            },
        },
        Command::Serve => serve(),
    }
}

/// SIGTERM or SIGINT: stop accepting, finish in-flight requests, then return from
/// `run_until_stopped` (which flushes the persistence batch).
fn stop_on_signals(handle: actix_web::dev::ServerHandle) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    actix_web::rt::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("shutdown signal: finishing in-flight requests");
        handle.stop(true).await;
    });
    Ok(())
}

fn serve() -> ExitCode {
    let settings = match load_settings() {
        Ok(s) => s,
        Err(e) => return config_failure(e),
    };
    notifyhub::telemetry::init("info", std::io::stdout);
    let fd_limit = notifyhub::sys::raise_fd_limit();
    tracing::info!(fd_limit, "open-file limit (each socket takes one)");
    for weak in settings.weak_secrets() {
        tracing::warn!("{weak}");
    }
    let system = actix_web::rt::System::new();
    let result = system.block_on(async move {
        let bind = settings.bind;
        let app = notifyhub::startup::Application::build(settings).await?;
        stop_on_signals(app.handle()).map_err(|e| notifyhub::startup::StartError::Failed(format!("signals: {e}")))?;
        eprintln!("notifyhub: listening on http://{}:{}/", bind.ip(), app.port());
        app.run_until_stopped().await.map_err(|e| notifyhub::startup::StartError::Failed(format!("server error: {e}")))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(notifyhub::startup::StartError::Config(e)) => {
            tracing::error!(error = %e, "notifyhub failed: configuration error");
            eprintln!("notifyhub: configuration error: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            tracing::error!(error = %e, "notifyhub failed");
            eprintln!("notifyhub: {e}");
            ExitCode::FAILURE
        }
    }
}
