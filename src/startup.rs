//! Builds the application: migrations, the persistence actor, the HTTP server bound to
//! its listener (port 0 gives a free port, which tests use).

use crate::actors::channel::{ChannelActor, ChannelDeps, Channels, SetRaiser};
use crate::actors::dispatcher::{DispatchCore, Dispatcher, ProfileCache};
use crate::actors::persistence::{Hooks, StoreHandle};
use crate::actors::session::Sessions;
use crate::actors::ws::Heartbeat;
use crate::api;
use crate::auth::JwtKeys;
use crate::channels::email::SmtpSender;
use crate::channels::push::PushSender;
use crate::channels::sandbox::{SandboxOutbox, SandboxSender};
use crate::channels::sms::TwilioSender;
use crate::channels::ChannelSender;
use crate::clock::{Clock, SystemClock};
use crate::config::Settings;
use crate::crypto::PiiCipher;
use crate::domain::Channel;
use crate::metrics::Metrics;
use crate::state::{AppState, KnownUsers};
use crate::store::{self, StoreError};
use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpServer};
use std::net::TcpListener;
use std::sync::Arc;
use uuid::Uuid;

/// Why the hub could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The database could not be opened or migrated.
    #[error("database {url}: {source}")]
    Database {
        /// Redacted URL.
        url: String,
        /// Cause.
        source: StoreError,
    },
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Bad settings discovered late (a host name lettre refuses, the VAPID key): the
    /// binary answers them as it does the settings it checks first (exit code 2).
    #[error("{0}")]
    Config(String),
    /// Anything else that stops the start: the SQLite file held by another hub, the
    /// signal handlers, the server.
    #[error("{0}")]
    Failed(String),
}

/// Starts the email, SMS and push actors on one arbiter, with SMTP/Twilio or the sandbox;
/// the arbiter is returned so the hub can stop it.
fn start_channels(
    settings: &Settings,
    store: &StoreHandle,
    clock: &Arc<dyn Clock>,
    pii: &PiiCipher,
    metrics: &Arc<Metrics>,
) -> Result<(Channels, actix::ArbiterHandle), StartError> {
    let sandbox = SandboxOutbox::new(&settings.data_dir);
    // The SMTP library judges the host for TLS (a setting); an HTTP client that cannot be
    // built is not a setting.
    fn http_client(channel: &'static str) -> impl Fn(String) -> StartError {
        move |e| StartError::Failed(format!("{channel}: {e}"))
    }
    let email: Arc<dyn ChannelSender> = match &settings.smtp {
        Some(smtp) => Arc::new(SmtpSender::new(smtp).map_err(|e| StartError::Config(format!("SMTP_HOST: {e}")))?),
        None => {
            tracing::info!(outbox = %settings.data_dir.join("sandbox/outbox.jsonl").display(), "email: SMTP_HOST unset, sandbox mode (messages go to the sandbox outbox)");
            Arc::new(SandboxSender::new(Channel::Email, sandbox.clone()))
        }
    };
    let sms: Arc<dyn ChannelSender> = match &settings.twilio {
        Some(t) => Arc::new(TwilioSender::new(t.clone()).map_err(http_client("twilio client"))?),
        None => {
            tracing::info!(outbox = %settings.data_dir.join("sandbox/outbox.jsonl").display(), "sms: Twilio unset, sandbox mode (messages go to the sandbox outbox)");
            Arc::new(SandboxSender::new(Channel::Sms, sandbox))
        }
    };
    let push: Arc<dyn ChannelSender> = Arc::new(
        PushSender::new(
            settings.vapid_private_key.clone(),
            settings.vapid_subject.clone(),
            settings.push_allowed_hosts.clone(),
            store.clone(),
        )
        .map_err(http_client("push client"))?,
    );
    let arbiter = actix::Arbiter::new();
    let deps =
        || ChannelDeps { store: store.clone(), clock: clock.clone(), pii: pii.clone(), metrics: metrics.clone() };
    let channels = Channels {
        email: ChannelActor::start(email, deps(), &arbiter.handle()),
        sms: ChannelActor::start(sms, deps(), &arbiter.handle()),
        push: ChannelActor::start(push, deps(), &arbiter.handle()),
    };
    Ok((channels, arbiter.handle()))
}

/// A built, listening hub.
pub struct Application {
    port: u16,
    server: Server,
    state: AppState,
    /// Held while the hub runs: a second process on the same SQLite file is refused.
    _single_node_lock: Option<std::fs::File>,
    /// Runs the cluster listener (PostgreSQL), stopped last so the others see it go.
    cluster_listener: Option<actix::ArbiterHandle>,
    /// Run the dispatcher and the channel actors, which act on timers of their own: a
    /// stopped hub stops them, or a hub started again in the same process (the tests do)
    /// would find the old channel actors claiming its outbox with the old settings.
    actor_arbiters: [actix::ArbiterHandle; 2],
}

/// The file next to SQLite database `path` whose lock a running hub holds.
pub fn sqlite_lock_path(path: &std::path::Path) -> std::path::PathBuf {
    path.with_extension("db.lock")
}

/// SQLite is single-node: takes an exclusive lock next to the database file.
fn lock_sqlite(path: &std::path::Path) -> Result<std::fs::File, StartError> {
    let lock_path = sqlite_lock_path(path);
    if let Some(dir) = lock_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::create_dir_all(dir);
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| StartError::Failed(format!("cannot open {}: {e}", lock_path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StartError::Failed(format!(
            "another notifyhub process is using {}: SQLite is single-node. Run one hub per database file, \
             or point every node at PostgreSQL (DATABASE_URL=postgres://…) to run several",
            path.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(StartError::Failed(format!("cannot lock {}: {e}", lock_path.display())))
        }
    }
}

impl Application {
    /// Migrates the database, starts the actors and binds the listener.
    pub async fn build(settings: Settings) -> Result<Self, StartError> {
        Self::build_with_clock(settings, Arc::new(SystemClock)).await
    }

    /// As [`build`](Self::build), with the given clock (tests move time).
    pub async fn build_with_clock(settings: Settings, clock: Arc<dyn Clock>) -> Result<Self, StartError> {
        let db_err = |source| StartError::Database { url: settings.database_url.redacted(), source };
        let single_node_lock = match &settings.database_url {
            crate::config::DatabaseUrl::Sqlite(path) => Some(lock_sqlite(path)?),
            crate::config::DatabaseUrl::Postgres(_) => None,
        };
        let applied = store::run_migrations(&settings.database_url).await.map_err(db_err)?;
        if !applied.is_empty() {
            tracing::info!(versions = ?applied, "migrations applied");
        }
        let metrics = Arc::new(Metrics::default());
        // One id per running hub, so a node ignores its own NOTIFYs.
        let node_id = Uuid::new_v4().simple().to_string()[..12].to_string();
        let cluster = matches!(settings.database_url, crate::config::DatabaseUrl::Postgres(_));
        let remote_tabs = cluster.then(|| Arc::new(crate::cluster::presence::RemoteTabs::new(metrics.clone())));
        let hooks = Hooks {
            metrics: metrics.clone(),
            fanout: None,
            node_id: node_id.clone(),
            remote_tabs: remote_tabs.clone(),
        };
        let store =
            StoreHandle::start(settings.database_url.clone(), settings.db_pool_size, hooks).await.map_err(db_err)?;
        let sessions = Sessions::new(store.clone(), metrics.clone(), cluster.then(|| node_id.clone()));
        store.set_fanout(sessions.clone()).await;
        let pii = PiiCipher::new(&settings.pii_key);
        let profiles = ProfileCache::new(pii.clone(), metrics.clone());
        let mut cluster_listener = None;
        if let (crate::config::DatabaseUrl::Postgres(url), Some(remote)) = (&settings.database_url, &remote_tabs) {
            let listener = crate::cluster::Listener {
                url: url.clone(),
                node: node_id.clone(),
                sessions: sessions.clone(),
                profiles: profiles.clone(),
                remote: remote.clone(),
                store: store.clone(),
            };
            let (joined, joined_rx) = tokio::sync::oneshot::channel();
            let arbiter = actix::Arbiter::new();
            arbiter.spawn(crate::cluster::listen(listener, joined));
            cluster_listener = Some(arbiter.handle());
            // A tab served before the other nodes answered could miss what they store
            // meanwhile (see `cluster::membership`). The listener gives up on them after 5 s.
            if tokio::time::timeout(std::time::Duration::from_secs(10), joined_rx).await.is_err() {
                tracing::warn!(
                    "cluster: the listener is not connected yet; serving, and announcing everything meanwhile"
                );
            }
        }
        if matches!(settings.database_url, crate::config::DatabaseUrl::Sqlite(_)) {
            // One node per SQLite file: whoever claimed unfinished deliveries is gone.
            let now = clock.now();
            let released = store
                .call(move |db| async move { crate::store::outbox::release_all_claims(&db, now).await })
                .await
                .map_err(db_err)?;
            if released > 0 {
                tracing::warn!(released, "resuming deliveries interrupted by the last stop");
            }
        }
        let (channels, channel_arbiter) = start_channels(&settings, &store, &clock, &pii, &metrics)?;
        let dispatch = Arc::new(DispatchCore {
            store: store.clone(),
            profiles: profiles.clone(),
            clock: clock.clone(),
            metrics: metrics.clone(),
            channels: Some(channels.clone()),
        });
        let (dispatcher, dispatcher_arbiter) = Dispatcher::start_on_own_arbiter(dispatch.clone());
        for addr in [&channels.email, &channels.sms, &channels.push] {
            addr.do_send(SetRaiser(dispatcher.clone().recipient()));
        }
        let vapid_public_key =
            crate::vapid::public_key_from_private(&settings.vapid_private_key).map_err(StartError::Config)?;
        let state = AppState {
            jwt: JwtKeys::new(&settings.jwt_secret),
            pii,
            store,
            sessions,
            profiles,
            dispatcher,
            dispatch,
            channels,
            sandbox: SandboxOutbox::new(&settings.data_dir),
            node_id,
            clock,
            heartbeat: Heartbeat { interval: settings.ws_heartbeat, timeout: settings.ws_timeout },
            users: Arc::new(KnownUsers::default()),
            metrics,
            vapid_public_key,
            settings: Arc::new(settings),
        };
        let listener = TcpListener::bind(state.settings.bind)
            .map_err(|source| StartError::Bind { addr: state.settings.bind.to_string(), source })?;
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        let data = web::Data::new(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .wrap(from_fn(api::middleware::observe))
                .configure(api::configure)
                .configure(crate::ui::configure)
                .default_service(web::to(api::not_found))
        })
        .workers(state.settings.workers)
        .shutdown_timeout(10)
        // Signals are handled by the binary (see `main.rs`): its handlers are in place
        // before it reports that it listens, so an early SIGTERM is never lost.
        .disable_signals()
        .listen(listener)
        .map_err(|source| StartError::Bind { addr: state.settings.bind.to_string(), source })?
        .run();
        tracing::info!(
            port,
            database = %state.settings.database_url.redacted(),
            workers = state.settings.workers,
            "notifyhub listening"
        );
        Ok(Self {
            port,
            server,
            state,
            _single_node_lock: single_node_lock,
            cluster_listener,
            actor_arbiters: [dispatcher_arbiter, channel_arbiter],
        })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Shared state (tests use it to reach the store).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// A handle to stop the server.
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until stopped (SIGTERM/SIGINT or [`ServerHandle::stop`]): stops accepting,
    /// finishes in-flight requests, then flushes the persistence batch and stops the
    /// dispatcher, the channel actors and, last, the persistence actor. A send cut short stays claimed in the outbox:
    /// the next start on SQLite, or any node once the claim's lease ends, sends it.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let result = self.server.await;
        self.state.store.flush().await;
        for arbiter in &self.actor_arbiters {
            arbiter.stop();
        }
        self.state.leave_cluster().await;
        if let Some(listener) = &self.cluster_listener {
            // Its connection closes: the other nodes no longer count this one.
            listener.stop();
        }
        // Last: the goodbye above goes through it.
        self.state.store.stop();
        tracing::info!("notifyhub stopped");
        result
    }
}
