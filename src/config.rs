//! Settings from the environment (and an optional `notifyhub.toml`), validated once at
//! start. A wrong value is reported as one line naming the variable; the binary exits
//! with code 2. Secrets left unset for a first run are generated once and kept in the
//! data dir with 0600 permissions.

use crate::domain::validation::{E164Phone, EmailAddress};
use base64::Engine;
use rand::RngCore;
use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// A configuration problem: which variable, and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{var}: {message}")]
pub struct ConfigError {
    /// The variable (or file) at fault.
    pub var: String,
    /// What is wrong, and what is expected.
    pub message: String,
}

impl ConfigError {
    fn new(var: &str, message: impl Into<String>) -> Self {
        Self { var: var.to_string(), message: message.into() }
    }
}

/// Which database the hub runs on.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// Embedded SQLite file (single node).
    Sqlite(PathBuf),
    /// PostgreSQL server (production, several nodes).
    Postgres(String),
}

impl DatabaseUrl {
    /// Parses `sqlite://PATH` or `postgres://…`/`postgresql://…`; anything else is refused
    /// rather than guessed, so a typo never creates an empty database somewhere.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        if let Some(path) = raw.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err("sqlite:// needs a file path, e.g. sqlite://./data/notifyhub.db".into());
            }
            return Ok(Self::Sqlite(PathBuf::from(path)));
        }
        if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
            return Ok(Self::Postgres(raw.to_string()));
        }
        Err("must start with sqlite:// or postgres:// (e.g. sqlite://./data/notifyhub.db)".into())
    }

    /// A printable form without the password.
    pub fn redacted(&self) -> String {
        match self {
            Self::Sqlite(p) => format!("sqlite://{}", p.display()),
            Self::Postgres(url) => redact_password(url),
        }
    }
}

fn redact_password(url: &str) -> String {
    // postgres://user:password@host/db → postgres://user:***@host/db
    let url = match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((creds, host)) => match creds.split_once(':') {
                Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
                None => url.to_string(),
            },
            None => url.to_string(),
        },
        None => url.to_string(),
    };
    // …and a password given as a parameter (`?password=…`, `sslpassword=…`).
    match url.split_once('?') {
        Some((base, query)) => {
            let params: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _))
                        if key.eq_ignore_ascii_case("password") || key.eq_ignore_ascii_case("sslpassword") =>
                    {
                        format!("{key}=***")
                    }
                    _ => pair.to_string(),
                })
                .collect();
            format!("{base}?{}", params.join("&"))
        }
        None => url,
    }
}

/// How SMTP connections are secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS (port 587).
    StartTls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No TLS (local relays, tests).
    None,
}

/// SMTP settings; absent means sandbox mode for email.
#[derive(Clone)]
pub struct SmtpSettings {
    /// Server host.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// Login, when the server needs one.
    pub user: Option<String>,
    /// Password for `user`.
    pub password: Option<String>,
    /// Sender address.
    pub from: EmailAddress,
    /// Transport security.
    pub tls: SmtpTls,
}

/// Twilio settings; absent means sandbox mode for SMS.
#[derive(Clone)]
pub struct TwilioSettings {
    /// Account SID.
    pub account_sid: String,
    /// Auth token.
    pub auth_token: String,
    /// Sender number (E.164).
    pub from_number: E164Phone,
    /// API base URL (a stand-in in tests).
    pub api_base: String,
}

/// Every setting the hub runs with.
#[derive(Clone)]
pub struct Settings {
    /// Listen address.
    pub bind: SocketAddr,
    /// HTTP worker threads.
    pub workers: usize,
    /// Database.
    pub database_url: DatabaseUrl,
    /// Connections in the pool.
    pub db_pool_size: u32,
    /// Where the SQLite file, generated secrets and the sandbox outbox live.
    pub data_dir: PathBuf,
    /// HS256 secret for user JWTs (raw UTF-8 bytes).
    pub jwt_secret: String,
    /// Bearer tokens accepted by the HTTP bridge.
    pub service_tokens: Vec<String>,
    /// AES-256-GCM key for contact fields at rest.
    pub pii_key: [u8; 32],
    /// SMTP, or sandbox when `None`.
    pub smtp: Option<SmtpSettings>,
    /// Twilio, or sandbox when `None`.
    pub twilio: Option<TwilioSettings>,
    /// VAPID private key (raw P-256 scalar, base64url).
    pub vapid_private_key: String,
    /// VAPID subject (`mailto:` or `https:`).
    pub vapid_subject: String,
    /// Hosts push endpoints may point at.
    pub push_allowed_hosts: Vec<String>,
    /// WebSocket ping interval.
    pub ws_heartbeat: std::time::Duration,
    /// WebSocket silence after which a socket is closed.
    pub ws_timeout: std::time::Duration,
}

/// Shortest JWT secret not warned about: HS256 wants a key as long as its hash (32 bytes).
pub const STRONG_JWT_SECRET: usize = 32;
/// Shortest service token not warned about.
pub const STRONG_SERVICE_TOKEN: usize = 16;

impl Settings {
    /// Secrets short enough to be guessed, for a warning at start. They are not refused:
    /// the contract sets no length, and a test harness or a first try may use a short one.
    pub fn weak_secrets(&self) -> Vec<String> {
        let mut weak = Vec::new();
        if self.jwt_secret.len() < STRONG_JWT_SECRET {
            weak.push(format!(
                "NOTIFYHUB_JWT_SECRET has {} bytes: anyone who guesses it can sign tokens; use {STRONG_JWT_SECRET} or more (or unset it to have one generated)",
                self.jwt_secret.len()
            ));
        }
        let short = self.service_tokens.iter().filter(|t| t.len() < STRONG_SERVICE_TOKEN).count();
        if short > 0 {
            weak.push(format!(
                "NOTIFYHUB_SERVICE_TOKENS: {short} token(s) shorter than {STRONG_SERVICE_TOKEN} bytes can be guessed; use long random tokens"
            ));
        }
        weak
    }
}

// Written by hand so that a `{:?}` (a log line, a panic message) never prints a secret:
// passwords, tokens and keys show as `***`, a database URL without its password.
const HIDDEN: &str = "***";

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| HIDDEN))
            .field("from", &self.from)
            .field("tls", &self.tls)
            .finish()
    }
}

impl fmt::Debug for TwilioSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TwilioSettings")
            .field("account_sid", &self.account_sid)
            .field("auth_token", &HIDDEN)
            .field("from_number", &self.from_number)
            .field("api_base", &self.api_base)
            .finish()
    }
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("bind", &self.bind)
            .field("workers", &self.workers)
            .field("database_url", &self.database_url)
            .field("db_pool_size", &self.db_pool_size)
            .field("data_dir", &self.data_dir)
            .field("jwt_secret", &HIDDEN)
            .field("service_tokens", &format!("{} token(s)", self.service_tokens.len()))
            .field("pii_key", &HIDDEN)
            .field("smtp", &self.smtp)
            .field("twilio", &self.twilio)
            .field("vapid_private_key", &HIDDEN)
            .field("vapid_subject", &self.vapid_subject)
            .field("push_allowed_hosts", &self.push_allowed_hosts)
            .field("ws_heartbeat", &self.ws_heartbeat)
            .field("ws_timeout", &self.ws_timeout)
            .finish()
    }
}

/// The push services of the browser vendors, contacted by default.
pub const DEFAULT_PUSH_HOSTS: &[&str] = &[
    "fcm.googleapis.com",
    "updates.push.services.mozilla.com",
    "*.push.services.mozilla.com",
    "web.push.apple.com",
    "*.push.apple.com",
    "*.notify.windows.com",
];

/// Where setting values come from: the process environment first, then the file.
pub struct Source {
    env: HashMap<String, String>,
    file: HashMap<String, String>,
}

impl Source {
    /// Reads the real environment and `NOTIFYHUB_CONFIG` (default `./notifyhub.toml` when present).
    pub fn from_process() -> Result<Self, ConfigError> {
        let env: HashMap<String, String> = std::env::vars().collect();
        Self::new(env)
    }

    /// Builds a source from explicit variables (tests), reading the file they point at.
    pub fn new(env: HashMap<String, String>) -> Result<Self, ConfigError> {
        let (path, explicit) = match env.get("NOTIFYHUB_CONFIG") {
            Some(p) => (PathBuf::from(p), true),
            None => (PathBuf::from("notifyhub.toml"), false),
        };
        let file = if path.exists() {
            read_toml(&path)?
        } else if explicit {
            return Err(ConfigError::new("NOTIFYHUB_CONFIG", format!("{} does not exist", path.display())));
        } else {
            HashMap::new()
        };
        Ok(Self { env, file })
    }

    fn get(&self, var: &str) -> Option<String> {
        let from_env = self.env.get(var).filter(|v| !v.trim().is_empty()).cloned();
        from_env.or_else(|| self.file.get(&file_key(var)).cloned())
    }
}

/// `NOTIFYHUB_BIND` → `bind`, `SMTP_HOST` → `smtp_host`.
fn file_key(var: &str) -> String {
    var.strip_prefix("NOTIFYHUB_").unwrap_or(var).to_ascii_lowercase()
}

fn read_toml(path: &Path) -> Result<HashMap<String, String>, ConfigError> {
    let var = "NOTIFYHUB_CONFIG";
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(var, format!("cannot read {}: {e}", path.display())))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::new(var, format!("{}: {}", path.display(), e.message())))?;
    let mut out = HashMap::new();
    for (k, v) in table {
        let s = match v {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Array(items) => items
                .iter()
                .map(|i| i.as_str().map(str::to_string).unwrap_or_else(|| i.to_string()))
                .collect::<Vec<_>>()
                .join(","),
            other => {
                return Err(ConfigError::new(
                    var,
                    format!("{}: key '{k}' has unsupported value {other}", path.display()),
                ))
            }
        };
        out.insert(k.to_ascii_lowercase(), s);
    }
    Ok(out)
}

impl Settings {
    /// Loads and validates everything, generating first-run secrets in the data dir.
    pub fn load(src: &Source) -> Result<Self, ConfigError> {
        let bind_raw = src.get("NOTIFYHUB_BIND").unwrap_or_else(|| "127.0.0.1:8080".into());
        let bind: SocketAddr = bind_raw.trim().parse().map_err(|_| {
            ConfigError::new("NOTIFYHUB_BIND", format!("'{bind_raw}' is not an address like 127.0.0.1:8080"))
        })?;
        let workers = match src.get("NOTIFYHUB_WORKERS") {
            None => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            Some(raw) => parse_range("NOTIFYHUB_WORKERS", &raw, 1, 256)? as usize,
        };
        let data_dir = PathBuf::from(src.get("NOTIFYHUB_DATA_DIR").unwrap_or_else(|| "./data".into()));
        // Made for the hub's user alone (the database holds push keys, the sandbox outbox
        // addresses); a directory the operator made is left as it is.
        let mut data_dir_builder = std::fs::DirBuilder::new();
        data_dir_builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut data_dir_builder, 0o700);
        data_dir_builder.create(&data_dir).map_err(|e| {
            ConfigError::new("NOTIFYHUB_DATA_DIR", format!("cannot create {}: {e}", data_dir.display()))
        })?;
        let database_url = match src.get("DATABASE_URL") {
            None => DatabaseUrl::Sqlite(data_dir.join("notifyhub.db")),
            Some(raw) => DatabaseUrl::parse(&raw).map_err(|m| ConfigError::new("DATABASE_URL", m))?,
        };
        let default_pool = match database_url {
            DatabaseUrl::Sqlite(_) => 4,
            DatabaseUrl::Postgres(_) => 16,
        };
        let db_pool_size = match src.get("NOTIFYHUB_DB_POOL_SIZE") {
            None => default_pool,
            Some(raw) => parse_range("NOTIFYHUB_DB_POOL_SIZE", &raw, 1, 512)? as u32,
        };

        let jwt_secret = match src.get("NOTIFYHUB_JWT_SECRET") {
            // An empty key would let anyone sign tokens (only the file can give one: an
            // empty variable counts as unset).
            Some(s) if s.trim().is_empty() => {
                return Err(ConfigError::new(
                    "NOTIFYHUB_JWT_SECRET",
                    "must not be empty (unset it to have one generated)",
                ))
            }
            Some(s) => s,
            None => stored_secret(&data_dir, "jwt_secret", "NOTIFYHUB_JWT_SECRET", || {
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<48>())
            })?,
        };
        let service_tokens: Vec<String> = src
            .get("NOTIFYHUB_SERVICE_TOKENS")
            .map(|s| s.split(',').map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).collect())
            .unwrap_or_default();
        let pii_raw = match src.get("NOTIFYHUB_PII_KEY") {
            Some(s) => s,
            None => stored_secret(&data_dir, "pii_key", "NOTIFYHUB_PII_KEY", || {
                base64::engine::general_purpose::STANDARD.encode(random_bytes::<32>())
            })?,
        };
        let pii_key = decode_key(&pii_raw).ok_or_else(|| {
            ConfigError::new("NOTIFYHUB_PII_KEY", "must be 32 bytes in base64 (e.g. `openssl rand -base64 32`)")
        })?;

        let smtp = load_smtp(src)?;
        let twilio = load_twilio(src)?;

        let vapid_private_key = match src.get("VAPID_PRIVATE_KEY") {
            Some(s) => s.trim().to_string(),
            None => stored_secret(&data_dir, "vapid_private_key", "VAPID_PRIVATE_KEY", generate_vapid_private_key)?,
        };
        crate::vapid::public_key_from_private(&vapid_private_key).map_err(|e| {
            ConfigError::new("VAPID_PRIVATE_KEY", format!("{e} (generate one with `notifyhub vapid-keys`)"))
        })?;
        let vapid_subject = src.get("VAPID_SUBJECT").unwrap_or_else(|| "mailto:admin@notifyhub.local".into());
        if !(vapid_subject.starts_with("mailto:") || vapid_subject.starts_with("https://")) {
            return Err(ConfigError::new("VAPID_SUBJECT", "must start with mailto: or https://"));
        }
        let push_allowed_hosts = match src.get("NOTIFYHUB_PUSH_ALLOWED_HOSTS") {
            None => DEFAULT_PUSH_HOSTS.iter().map(|s| s.to_string()).collect(),
            Some(raw) => {
                let hosts: Vec<String> =
                    raw.split(',').map(|h| h.trim().to_ascii_lowercase()).filter(|h| !h.is_empty()).collect();
                if let Some(bad) = hosts.iter().find(|h| h.contains('/') || h.contains(' ')) {
                    return Err(ConfigError::new(
                        "NOTIFYHUB_PUSH_ALLOWED_HOSTS",
                        format!("'{bad}' is not a host name (write hosts, not URLs, comma-separated)"),
                    ));
                }
                hosts
            }
        };

        let ws_heartbeat = match src.get("NOTIFYHUB_WS_HEARTBEAT_MS") {
            None => 5_000,
            Some(raw) => parse_range("NOTIFYHUB_WS_HEARTBEAT_MS", &raw, 10, 600_000)?,
        };
        let ws_timeout = match src.get("NOTIFYHUB_WS_TIMEOUT_MS") {
            None => 10_000,
            Some(raw) => parse_range("NOTIFYHUB_WS_TIMEOUT_MS", &raw, 20, 3_600_000)?,
        };
        if ws_timeout <= ws_heartbeat {
            return Err(ConfigError::new("NOTIFYHUB_WS_TIMEOUT_MS", "must be longer than NOTIFYHUB_WS_HEARTBEAT_MS"));
        }

        Ok(Self {
            ws_heartbeat: std::time::Duration::from_millis(ws_heartbeat as u64),
            ws_timeout: std::time::Duration::from_millis(ws_timeout as u64),
            bind,
            workers,
            database_url,
            db_pool_size,
            data_dir,
            jwt_secret,
            service_tokens,
            pii_key,
            smtp,
            twilio,
            vapid_private_key,
            vapid_subject,
            push_allowed_hosts,
        })
    }
}

fn parse_range(var: &str, raw: &str, min: i64, max: i64) -> Result<i64, ConfigError> {
    let n: i64 = raw.trim().parse().map_err(|_| ConfigError::new(var, format!("'{raw}' is not a whole number")))?;
    if !(min..=max).contains(&n) {
        return Err(ConfigError::new(var, format!("must be between {min} and {max} (got {n})")));
    }
    Ok(n)
}

/// A DNS name (labels of letters, digits, `-` and `_`, up to 63 characters each, 253 in
/// all) or an IP address: what the SMTP library can connect to and check a certificate for.
fn is_host_name(host: &str) -> bool {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn load_smtp(src: &Source) -> Result<Option<SmtpSettings>, ConfigError> {
    let Some(host) = src.get("SMTP_HOST") else {
        return Ok(None);
    };
    let host = host.trim().to_string();
    if !is_host_name(&host) {
        return Err(ConfigError::new(
            "SMTP_HOST",
            format!("'{host}' is not a host name or IP address (e.g. smtp.example.com, 127.0.0.1)"),
        ));
    }
    let tls = match src.get("SMTP_TLS").as_deref().map(str::trim) {
        None | Some("starttls") => SmtpTls::StartTls,
        Some("tls") => SmtpTls::Tls,
        Some("none") => SmtpTls::None,
        Some(other) => {
            return Err(ConfigError::new("SMTP_TLS", format!("'{other}' is not one of starttls, tls, none")))
        }
    };
    let default_port = match tls {
        SmtpTls::StartTls => 587,
        SmtpTls::Tls => 465,
        SmtpTls::None => 25,
    };
    let port = match src.get("SMTP_PORT") {
        None => default_port,
        Some(raw) => parse_range("SMTP_PORT", &raw, 1, 65535)? as u16,
    };
    let from_raw = src.get("SMTP_FROM_EMAIL").unwrap_or_else(|| "notifyhub@notifyhub.local".into());
    let from = EmailAddress::parse_deliverable(&from_raw).map_err(|m| ConfigError::new("SMTP_FROM_EMAIL", m))?;
    let user = src.get("SMTP_USER");
    let password = src.get("SMTP_PASSWORD");
    if user.is_some() != password.is_some() {
        let missing = if user.is_some() { "SMTP_PASSWORD" } else { "SMTP_USER" };
        return Err(ConfigError::new(missing, "SMTP_USER and SMTP_PASSWORD must be set together"));
    }
    let host = host.trim().to_string();
    if tls == SmtpTls::None && user.is_some() && !is_loopback_host(&host) {
        return Err(ConfigError::new(
            "SMTP_TLS",
            format!("'none' would send SMTP_PASSWORD to {host} in clear; use starttls or tls (none is for a relay on this machine)"),
        ));
    }
    Ok(Some(SmtpSettings { host, port, user, password, from, tls }))
}

/// `localhost`, `127.x.x.x` or `::1`: a host on this machine.
fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn load_twilio(src: &Source) -> Result<Option<TwilioSettings>, ConfigError> {
    let names = ["TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_PHONE_NUMBER"];
    let values: Vec<Option<String>> = names.iter().map(|n| src.get(n)).collect();
    if values.iter().all(Option::is_none) {
        return Ok(None);
    }
    if let Some(i) = values.iter().position(Option::is_none) {
        return Err(ConfigError::new(
            names[i],
            "is missing: TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN and TWILIO_PHONE_NUMBER go together",
        ));
    }
    let [sid, token, phone] = [values[0].clone(), values[1].clone(), values[2].clone()].map(Option::unwrap_or_default);
    let from_number = E164Phone::parse(&phone).map_err(|m| ConfigError::new("TWILIO_PHONE_NUMBER", m))?;
    let api_base =
        src.get("TWILIO_API_BASE").unwrap_or_else(|| "https://api.twilio.com".into()).trim_end_matches('/').to_string();
    if !(api_base.starts_with("https://") || api_base.starts_with("http://")) {
        return Err(ConfigError::new("TWILIO_API_BASE", "must be an http(s) URL"));
    }
    Ok(Some(TwilioSettings {
        account_sid: sid.trim().to_string(),
        auth_token: token.trim().to_string(),
        from_number,
        api_base,
    }))
}

fn decode_key(raw: &str) -> Option<[u8; 32]> {
    let raw = raw.trim();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(raw)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(raw))
        .ok()?;
    bytes.try_into().ok()
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b
}

/// A fresh VAPID private key (raw P-256 scalar, base64url without padding).
pub fn generate_vapid_private_key() -> String {
    let key = p256::SecretKey::random(&mut rand::rngs::OsRng);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.to_bytes())
}

/// Reads `data_dir/secrets/name`, creating it (0600) with `generate()` on first run.
/// Tightens a kept secret that others may read (copied in, or restored from a backup with
/// the umask's mode) back to its owner alone. Best effort: a file the hub cannot change
/// is still read.
fn keep_private(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
            }
        }
    }
}

fn stored_secret(
    data_dir: &Path,
    name: &str,
    var: &str,
    generate: impl FnOnce() -> String,
) -> Result<String, ConfigError> {
    let dir = data_dir.join("secrets");
    let path = dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => {
            keep_private(&path);
            return Ok(s.trim().to_string());
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(ConfigError::new(var, format!("cannot read {}: {e}", path.display()))),
    }
    let value = generate();
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(&dir)?;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
            opts.mode(0o600);
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        }
        let mut f = opts.open(&path)?;
        f.write_all(value.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()
    };
    write().map_err(|e| {
        ConfigError::new(var, format!("unset, and cannot keep a generated one in {}: {e}", path.display()))
    })?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(pairs: &[(&str, &str)], dir: &Path) -> Source {
        let mut env: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        env.insert("NOTIFYHUB_DATA_DIR".into(), dir.display().to_string());
        env.entry("NOTIFYHUB_CONFIG".into()).or_insert_with(|| dir.join("absent.toml").display().to_string());
        Source { env, file: HashMap::new() }
    }

    #[test]
    fn defaults_work_and_secrets_are_generated_once_with_0600() {
        let parent = tempfile::tempdir().unwrap();
        // A data directory that does not exist yet: the hub makes it.
        let dir = parent.path().join("data");
        let s = Settings::load(&src(&[], &dir)).unwrap();
        assert_eq!(s.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(s.database_url, DatabaseUrl::Sqlite(dir.join("notifyhub.db")));
        assert!(s.smtp.is_none() && s.twilio.is_none());
        let again = Settings::load(&src(&[], &dir)).unwrap();
        assert_eq!(s.jwt_secret, again.jwt_secret);
        assert_eq!(s.pii_key, again.pii_key);
        assert_eq!(s.vapid_private_key, again.vapid_private_key);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&dir), 0o700, "the data directory is the hub's user's alone");
            let secret = dir.join("secrets/jwt_secret");
            assert_eq!(mode(&secret), 0o600);
            // A kept secret others may read (restored from a backup, say) is made private.
            std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
            let reread = Settings::load(&src(&[], &dir)).unwrap();
            assert_eq!(reread.jwt_secret, s.jwt_secret);
            assert_eq!(mode(&secret), 0o600);
        }
    }

    #[test]
    fn each_bad_value_names_its_variable() {
        let dir = tempfile::tempdir().unwrap();
        let cases: &[(&str, &str)] = &[
            ("NOTIFYHUB_BIND", "localhost"),
            ("NOTIFYHUB_WORKERS", "0"),
            ("NOTIFYHUB_WORKERS", "many"),
            ("DATABASE_URL", "mysql://x"),
            ("DATABASE_URL", "notifyhub.db"),
            ("NOTIFYHUB_PII_KEY", "not-base64!"),
            ("VAPID_PRIVATE_KEY", "AAAA"),
            ("VAPID_SUBJECT", "admin@example.com"),
            ("NOTIFYHUB_PUSH_ALLOWED_HOSTS", "https://fcm.googleapis.com/x"),
        ];
        for (var, value) in cases {
            let err = Settings::load(&src(&[(var, value)], dir.path())).unwrap_err();
            assert_eq!(&err.var, var, "{value}: {err}");
        }
    }

    #[test]
    fn short_secrets_are_taken_with_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let weak = Settings::load(&src(
            &[("NOTIFYHUB_JWT_SECRET", "secret"), ("NOTIFYHUB_SERVICE_TOKENS", "tiny,x")],
            dir.path(),
        ))
        .unwrap();
        assert_eq!(weak.jwt_secret, "secret");
        let warnings = weak.weak_secrets();
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].starts_with("NOTIFYHUB_JWT_SECRET has 6 bytes"), "{warnings:?}");
        assert!(warnings[1].contains("2 token(s)"), "{warnings:?}");
        assert!(warnings.iter().all(|w| !w.contains("secret\"") && !w.contains("tiny")), "no secret in a warning");
        let long = "s".repeat(STRONG_JWT_SECRET);
        let strong = Settings::load(&src(
            &[("NOTIFYHUB_JWT_SECRET", long.as_str()), ("NOTIFYHUB_SERVICE_TOKENS", "service-token-0123456789")],
            dir.path(),
        ))
        .unwrap();
        assert!(strong.weak_secrets().is_empty());
        // A generated secret is long enough.
        assert!(Settings::load(&src(&[], dir.path())).unwrap().weak_secrets().is_empty());
    }

    #[test]
    fn partial_twilio_and_smtp_settings_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = Settings::load(&src(&[("TWILIO_ACCOUNT_SID", "AC1")], dir.path())).unwrap_err();
        assert_eq!(err.var, "TWILIO_AUTH_TOKEN");
        let err = Settings::load(&src(&[("SMTP_HOST", "h"), ("SMTP_TLS", "ssl")], dir.path())).unwrap_err();
        assert_eq!(err.var, "SMTP_TLS");
        let err = Settings::load(&src(&[("SMTP_HOST", "h"), ("SMTP_PORT", "70000")], dir.path())).unwrap_err();
        assert_eq!(err.var, "SMTP_PORT");
        let err = Settings::load(&src(&[("SMTP_HOST", "h"), ("SMTP_USER", "u")], dir.path())).unwrap_err();
        assert_eq!(err.var, "SMTP_PASSWORD");
        for host in ["not a host", "smtp..example.com", "-smtp.example.com", "smtp.example.com:587"] {
            let err = Settings::load(&src(&[("SMTP_HOST", host)], dir.path())).unwrap_err();
            assert_eq!(err.var, "SMTP_HOST", "{host}");
        }
        for host in ["smtp.example.com", "smtp.example.com.", "mail_relay", "10.0.0.7", "::1"] {
            assert!(Settings::load(&src(&[("SMTP_HOST", host)], dir.path())).is_ok(), "{host}");
        }
        let ok = Settings::load(&src(&[("SMTP_HOST", "h"), ("SMTP_TLS", "none")], dir.path())).unwrap();
        assert_eq!(ok.smtp.unwrap().port, 25);
        // A password in clear over the network is refused; to a relay on this machine it is fine.
        let login = [("SMTP_TLS", "none"), ("SMTP_USER", "u"), ("SMTP_PASSWORD", "p")];
        let err =
            Settings::load(&src(&[&[("SMTP_HOST", "mail.example.com")][..], &login].concat(), dir.path())).unwrap_err();
        assert_eq!(err.var, "SMTP_TLS");
        for host in ["127.0.0.1", "localhost", "::1"] {
            assert!(Settings::load(&src(&[&[("SMTP_HOST", host)][..], &login].concat(), dir.path())).is_ok(), "{host}");
        }
    }

    #[test]
    fn toml_file_is_read_and_env_wins() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("notifyhub.toml");
        std::fs::write(
            &file,
            "bind = \"127.0.0.1:9999\"\nworkers = 3\nservice_tokens = [\"aaaaaaaaaaaaaaaa\", \"bbbbbbbbbbbbbbbb\"]\n",
        )
        .unwrap();
        let mut env = HashMap::new();
        env.insert("NOTIFYHUB_CONFIG".to_string(), file.display().to_string());
        env.insert("NOTIFYHUB_DATA_DIR".to_string(), dir.path().display().to_string());
        env.insert("NOTIFYHUB_WORKERS".to_string(), "5".to_string());
        let s = Settings::load(&Source::new(env).unwrap()).unwrap();
        assert_eq!(s.bind.port(), 9999);
        assert_eq!(s.workers, 5);
        assert_eq!(s.service_tokens.len(), 2);
        // An empty secret in the file is refused: it would let anyone sign tokens.
        std::fs::write(&file, "jwt_secret = \"  \"\n").unwrap();
        let mut env = HashMap::new();
        env.insert("NOTIFYHUB_CONFIG".to_string(), file.display().to_string());
        env.insert("NOTIFYHUB_DATA_DIR".to_string(), dir.path().display().to_string());
        let err = Settings::load(&Source::new(env).unwrap()).unwrap_err();
        assert_eq!(err.var, "NOTIFYHUB_JWT_SECRET");
    }

    #[test]
    fn database_urls() {
        assert_eq!(DatabaseUrl::parse("sqlite://./x.db").unwrap(), DatabaseUrl::Sqlite("./x.db".into()));
        assert_eq!(DatabaseUrl::parse("sqlite:///abs/x.db").unwrap(), DatabaseUrl::Sqlite("/abs/x.db".into()));
        assert!(matches!(DatabaseUrl::parse("postgresql://u@h/d").unwrap(), DatabaseUrl::Postgres(_)));
        assert!(DatabaseUrl::parse("sqlite://").is_err());
        assert_eq!(DatabaseUrl::Postgres("postgres://u:pw@h/d".into()).redacted(), "postgres://u:***@h/d");
        assert_eq!(
            DatabaseUrl::Postgres("postgres://u@h/d?sslmode=require&password=pw&sslpassword=k".into()).redacted(),
            "postgres://u@h/d?sslmode=require&password=***&sslpassword=***"
        );
    }

    #[test]
    fn debug_output_never_shows_a_secret() {
        let dir = tempfile::tempdir().unwrap();
        let secrets = [
            ("NOTIFYHUB_JWT_SECRET", "jwt-secret-0123456789abcdef"),
            ("NOTIFYHUB_SERVICE_TOKENS", "service-token-0123456789abcdef"),
            ("DATABASE_URL", "postgres://hub:db-password-42@db.internal/hub"),
            ("SMTP_HOST", "mail.example.com"),
            ("SMTP_USER", "hub"),
            ("SMTP_PASSWORD", "smtp-password-42"),
            ("TWILIO_ACCOUNT_SID", "AC0123456789"),
            ("TWILIO_AUTH_TOKEN", "twilio-token-42"),
            ("TWILIO_PHONE_NUMBER", "+15005550006"),
        ];
        let settings = Settings::load(&src(&secrets, dir.path())).unwrap();
        let shown = format!("{settings:?}");
        for secret in ["jwt-secret", "service-token", "db-password", "smtp-password", "twilio-token"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("mail.example.com") && shown.contains("hub:***@db.internal"), "{shown}");
        let key = settings.vapid_private_key.clone();
        assert!(!shown.contains(&key), "the VAPID key in {shown}");
    }
}
