//! Real peers on loopback: an SMTP server (aiosmtpd), and HTTP stand-ins for Twilio and
//! for a browser vendor's push service that check what the real ones check.

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use p256::ecdsa::signature::Verifier;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

/// The Python that has aiosmtpd: the one first on `PATH` when pip could install it there,
/// else Debian's, where `scripts/install-deps.sh` falls back to `python3-aiosmtpd`.
fn smtp_python() -> &'static str {
    static PYTHON: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();
    PYTHON.get_or_init(|| {
        let has_aiosmtpd = |python: &str| {
            Command::new(python)
                .args(["-c", "import aiosmtpd"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        ["python3", "/usr/bin/python3"].into_iter().find(|p| has_aiosmtpd(p)).unwrap_or("python3")
    })
}

/// aiosmtpd on a free port; messages land in a temp dir.
pub struct SmtpSink {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Child,
    stdout: BufReader<std::process::ChildStdout>,
}

impl SmtpSink {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// The hub's settings for sending through this sink, in plain SMTP.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![("SMTP_HOST", "127.0.0.1".into()), ("SMTP_PORT", self.port.to_string()), ("SMTP_TLS", "none".into())]
    }

    /// Answers every message with 421 (unwell) until [`Self::come_up`].
    pub fn start_down() -> Self {
        Self::start_with(&["--start-down"])
    }

    /// Takes mail from now on; returns once the server says so.
    pub fn come_up(&mut self) {
        let stdin = self.child.stdin.as_mut().expect("the sink's stdin");
        stdin.write_all(b"up\n").and_then(|()| stdin.flush()).expect("tell the sink");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("the sink answers");
        assert_eq!(line.trim(), "up");
    }

    /// Offers AUTH and refuses every login (535).
    pub fn start_refusing_logins() -> Self {
        Self::start_with(&["--refuse-logins"])
    }

    fn start_with(args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/smtp_sink.py");
        let mut child = Command::new(smtp_python())
            .arg(script)
            .arg("--dir")
            .arg(dir.path())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect(
                "python3 runs tests/support/smtp_sink.py (scripts/install-deps.sh --with-postgres installs aiosmtpd)",
            );
        let mut line = String::new();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        stdout.read_line(&mut line).unwrap();
        let port = line.trim().parse().expect("the SMTP sink prints its port");
        Self { port, dir, child, stdout }
    }

    /// Waits for the `n`-th message (raw RFC 5322 text).
    pub async fn messages(&self, n: usize) -> Vec<String> {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let mut found: Vec<String> = std::fs::read_dir(self.dir.path())
                .unwrap()
                .filter_map(|e| e.ok())
                .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
                .map(|e| std::fs::read_to_string(e.path()).unwrap())
                .collect();
            if found.len() >= n {
                found.sort();
                return found;
            }
            assert!(std::time::Instant::now() < deadline, "expected {n} email(s), got {}", found.len());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Serves the routes `configure` adds on `listener` (one worker) while the test runs.
fn serve(listener: std::net::TcpListener, configure: impl Fn(&mut web::ServiceConfig) + Send + Clone + 'static) {
    let server = HttpServer::new(move || App::new().configure(configure.clone()))
        .workers(1)
        .disable_signals()
        .listen(listener)
        .expect("stand-in listens")
        .run();
    actix_web::rt::spawn(server);
}

/// One request the Twilio stand-in accepted for checking.
#[derive(Debug, Clone)]
pub struct TwilioRequest {
    pub to: String,
    pub from: String,
    pub body: String,
}

#[derive(Clone)]
struct TwilioState {
    script: Arc<Mutex<VecDeque<(u16, Value)>>>,
    tx: UnboundedSender<TwilioRequest>,
    hold: Arc<Mutex<Option<tokio::sync::watch::Receiver<bool>>>>,
}

pub const TWILIO_SID: &str = "AC0123456789abcdef0123456789abcdef";
pub const TWILIO_TOKEN: &str = "twilio-auth-token-for-tests";
pub const TWILIO_FROM: &str = "+15005550006";

/// A Twilio Messages API stand-in: checks the path, basic auth and form fields like
/// Twilio does, and answers from a script (then 201).
pub struct TwilioStandIn {
    pub base: String,
    pub requests: UnboundedReceiver<TwilioRequest>,
    script: Arc<Mutex<VecDeque<(u16, Value)>>>,
    hold: Arc<Mutex<Option<tokio::sync::watch::Receiver<bool>>>>,
}

async fn twilio_messages(
    req: HttpRequest,
    path: web::Path<String>,
    form: web::Form<Vec<(String, String)>>,
    state: web::Data<TwilioState>,
) -> HttpResponse {
    if path.as_str() != TWILIO_SID {
        return HttpResponse::NotFound()
            .json(json!({"code": 20404, "message": "The requested resource was not found"}));
    }
    let expected = format!("Basic {}", STANDARD.encode(format!("{TWILIO_SID}:{TWILIO_TOKEN}")));
    if req.headers().get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return HttpResponse::Unauthorized().json(json!({"code": 20003, "message": "Authenticate"}));
    }
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let (Some(to), Some(from), Some(body)) = (field("To"), field("From"), field("Body")) else {
        return HttpResponse::BadRequest()
            .json(json!({"code": 21604, "message": "A 'To', 'From' and 'Body' are required"}));
    };
    if body.is_empty() || notifyhub::domain::sms::segments(&body) > 2 {
        return HttpResponse::BadRequest()
            .json(json!({"code": 21617, "message": "The concatenated message body exceeds the test limit"}));
    }
    if from != TWILIO_FROM || !to.starts_with('+') {
        return HttpResponse::BadRequest().json(json!({"code": 21211, "message": "Invalid 'To' Phone Number"}));
    }
    let _ = state.tx.send(TwilioRequest { to: to.clone(), from, body });
    let hold = state.hold.lock().unwrap().clone();
    if let Some(mut release) = hold {
        while !*release.borrow() {
            if release.changed().await.is_err() {
                break;
            }
        }
    }
    let (status, mut reply) =
        state.script.lock().unwrap().pop_front().unwrap_or((201, json!({"sid": "SM_ok", "status": "queued"})));
    if let Some(message) = reply["message"].as_str() {
        reply["message"] = json!(message.replace("{to}", &to));
    }
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap()).json(reply)
}

impl TwilioStandIn {
    pub async fn start() -> Self {
        let (tx, requests) = unbounded_channel();
        let script: Arc<Mutex<VecDeque<(u16, Value)>>> = Arc::default();
        let hold: Arc<Mutex<Option<tokio::sync::watch::Receiver<bool>>>> = Arc::default();
        let state = TwilioState { script: script.clone(), tx, hold: hold.clone() };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        serve(listener, move |cfg| {
            cfg.app_data(web::Data::new(state.clone()))
                .route("/2010-04-01/Accounts/{sid}/Messages.json", web::post().to(twilio_messages));
        });
        Self { base: format!("http://127.0.0.1:{port}"), requests, script, hold }
    }

    /// Answers the next requests with these statuses (Twilio-shaped bodies).
    pub fn script(&self, statuses: &[u16]) {
        let mut s = self.script.lock().unwrap();
        for &status in statuses {
            let body = match status {
                201 => json!({"sid": "SM_scripted", "status": "queued"}),
                // As Twilio words it, quoting the number (`{to}` is filled in).
                400 => {
                    json!({"code": 21211, "message": "The 'To' number {to} is not a valid phone number.", "status": 400})
                }
                429 => json!({"code": 20429, "message": "Too Many Requests", "status": 429}),
                _ => json!({"code": 20500, "message": "Internal Server Error", "status": status}),
            };
            s.push_back((status, body));
        }
    }

    /// Holds every answer until the returned sender sends `true`.
    pub fn hold(&self) -> tokio::sync::watch::Sender<bool> {
        let (tx, rx) = tokio::sync::watch::channel(false);
        *self.hold.lock().unwrap() = Some(rx);
        tx
    }

    pub async fn next(&mut self) -> TwilioRequest {
        tokio::time::timeout(Duration::from_secs(20), self.requests.recv())
            .await
            .expect("a Twilio request within 20 s")
            .unwrap()
    }

    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("TWILIO_ACCOUNT_SID", TWILIO_SID.to_string()),
            ("TWILIO_AUTH_TOKEN", TWILIO_TOKEN.to_string()),
            ("TWILIO_PHONE_NUMBER", TWILIO_FROM.to_string()),
            ("TWILIO_API_BASE", self.base.clone()),
        ]
    }
}

/// A browser's push subscription, with the private half a real browser keeps.
pub struct BrowserKeys {
    secret: p256::SecretKey,
    pub auth: [u8; 16],
}

impl BrowserKeys {
    pub fn new() -> Self {
        let mut auth = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut auth);
        Self { secret: p256::SecretKey::random(&mut rand::rngs::OsRng), auth }
    }

    fn public(&self) -> Vec<u8> {
        self.secret.public_key().to_encoded_point(false).as_bytes().to_vec()
    }

    /// The JSON `PushSubscription.toJSON()` would give for `endpoint`.
    pub fn subscription(&self, endpoint: &str) -> Value {
        json!({"endpoint": endpoint, "expirationTime": null,
               "keys": {"p256dh": URL_SAFE_NO_PAD.encode(self.public()), "auth": URL_SAFE_NO_PAD.encode(self.auth)}})
    }

    fn decrypt(&self, body: &[u8]) -> Result<Vec<u8>, String> {
        let components = ece::EcKeyComponents::new(self.secret.to_bytes().to_vec(), self.public());
        ece::decrypt(&components, &self.auth, body).map_err(|e| e.to_string())
    }
}

/// A push message the stand-in verified and decrypted.
#[derive(Debug, Clone)]
pub struct PushDelivery {
    /// The endpoint id it was posted to (`/push/{id}`).
    pub endpoint: String,
    pub payload: Value,
    pub urgency: String,
    pub ttl: String,
}

#[derive(Clone)]
struct PushState {
    keys: Arc<BrowserKeys>,
    vapid_public_key: String,
    origin: String,
    status: Arc<Mutex<u16>>,
    /// Statuses scripted for one endpoint id, used before `status`.
    scripted: Arc<Mutex<std::collections::HashMap<String, VecDeque<u16>>>>,
    tx: UnboundedSender<Result<PushDelivery, String>>,
}

fn verify_vapid(req: &HttpRequest, vapid_public_key: &str, origin: &str) -> Result<(), String> {
    let header = req.headers().get("authorization").and_then(|v| v.to_str().ok()).ok_or("no Authorization")?;
    let rest = header.strip_prefix("vapid ").ok_or("Authorization is not vapid")?;
    let mut t = None;
    let mut k = None;
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("t=") {
            t = Some(v);
        } else if let Some(v) = part.strip_prefix("k=") {
            k = Some(v);
        }
    }
    let (t, k) = (t.ok_or("no t=")?, k.ok_or("no k=")?);
    if k != vapid_public_key {
        return Err(format!("k= is not the hub's VAPID key: {k}"));
    }
    let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(&URL_SAFE_NO_PAD.decode(k).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let parts: Vec<&str> = t.split('.').collect();
    if parts.len() != 3 {
        return Err("JWT is not three parts".into());
    }
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    if header["alg"] != "ES256" {
        return Err(format!("alg {}", header["alg"]));
    }
    let sig = p256::ecdsa::Signature::from_slice(&URL_SAFE_NO_PAD.decode(parts[2]).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    key.verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
        .map_err(|_| "VAPID signature does not verify".to_string())?;
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    if claims["aud"] != origin {
        return Err(format!("aud {} is not {origin}", claims["aud"]));
    }
    if claims["exp"].as_i64().unwrap_or(0) <= chrono::Utc::now().timestamp() {
        return Err("exp is in the past".into());
    }
    if !claims["sub"].as_str().is_some_and(|s| s.starts_with("mailto:") || s.starts_with("https:")) {
        return Err("no sub claim".into());
    }
    Ok(())
}

async fn push_endpoint(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<PushState>,
) -> HttpResponse {
    let endpoint = path.into_inner();
    let check = || -> Result<PushDelivery, String> {
        verify_vapid(&req, &state.vapid_public_key, &state.origin)?;
        let h = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
        if h("content-encoding").as_deref() != Some("aes128gcm") {
            return Err("Content-Encoding is not aes128gcm".into());
        }
        if body.len() > 4096 {
            return Err(format!("payload is {} bytes, over 4 KiB", body.len()));
        }
        let plain = state.keys.decrypt(&body)?;
        Ok(PushDelivery {
            endpoint: endpoint.clone(),
            payload: serde_json::from_slice(&plain).map_err(|e| e.to_string())?,
            urgency: h("urgency").unwrap_or_default(),
            ttl: h("ttl").ok_or("no TTL")?,
        })
    };
    let result = check();
    let ok = result.is_ok();
    let _ = state.tx.send(result);
    if !ok {
        return HttpResponse::BadRequest().finish();
    }
    let scripted = state.scripted.lock().unwrap().get_mut(&endpoint).and_then(VecDeque::pop_front);
    let status = scripted.unwrap_or(*state.status.lock().unwrap());
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap()).finish()
}

/// A push service stand-in: verifies the VAPID JWT (signature, audience, expiry) and
/// decrypts the payload with the subscription's private key.
pub struct PushStandIn {
    pub port: u16,
    pub keys: Arc<BrowserKeys>,
    status: Arc<Mutex<u16>>,
    scripted: Arc<Mutex<std::collections::HashMap<String, VecDeque<u16>>>>,
    deliveries: UnboundedReceiver<Result<PushDelivery, String>>,
}

impl PushStandIn {
    pub async fn start(vapid_public_key: String) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, deliveries) = unbounded_channel();
        let keys = Arc::new(BrowserKeys::new());
        let status = Arc::new(Mutex::new(201));
        let scripted = Arc::default();
        let state = PushState {
            keys: keys.clone(),
            vapid_public_key,
            origin: format!("http://127.0.0.1:{port}"),
            status: status.clone(),
            scripted: Arc::clone(&scripted),
            tx,
        };
        serve(listener, move |cfg| {
            cfg.app_data(web::Data::new(state.clone())).route("/push/{id}", web::post().to(push_endpoint));
        });
        Self { port, keys, status, scripted, deliveries }
    }

    /// Answers the next pushes to endpoint `id` with these statuses, then as `answer` says.
    pub fn script(&self, id: &str, statuses: &[u16]) {
        self.scripted.lock().unwrap().entry(id.to_string()).or_default().extend(statuses);
    }

    pub fn endpoint(&self, id: &str) -> String {
        format!("http://127.0.0.1:{}/push/{id}", self.port)
    }

    pub fn answer(&self, status: u16) {
        *self.status.lock().unwrap() = status;
    }

    pub async fn next(&mut self) -> PushDelivery {
        tokio::time::timeout(Duration::from_secs(20), self.deliveries.recv())
            .await
            .expect("a push within 20 s")
            .unwrap()
            .unwrap_or_else(|e| panic!("the push service refused the message: {e}"))
    }
}
