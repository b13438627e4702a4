//! `notifyhub-loadgen`: drives notifyhub — or the reference peer nchan, with
//! `--target nchan` — with real WebSocket clients and HTTP publishers, and reports
//! throughput, event→delivery latency (from a timestamp inside each message) and the
//! server's CPU per message and RSS per socket, read from /proc/PID.
//!
//! Scenarios: `idle` (C sockets; RSS per socket), `user` (M messages to single users,
//! P in flight), `broadcast` (B messages to all C users), `rate` (R messages/s for D s;
//! latency percentiles), `ingest` (POST throughput, no sockets). `idle` with
//! `--hold-seconds` then keeps the sockets open, counting the toasts they get, until each
//! has one or the time is up, and reports how many are still open (`scripts/hold.sh`
//! holds 50,000 across several nodes that way).

use clap::{Parser, ValueEnum};
use futures_util::{SinkExt, StreamExt};
use notifyhub::auth::{JwtKeys, Role};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Target {
    Notifyhub,
    Nchan,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Idle,
    User,
    Broadcast,
    Rate,
    Ingest,
}

#[derive(Parser, Debug, Clone)]
#[command(name = "notifyhub-loadgen", about = "Load generator for notifyhub and the nchan reference peer")]
struct Args {
    /// What to drive: notifyhub's API, or nchan's publish/subscribe URLs.
    #[arg(long, value_enum, default_value = "notifyhub")]
    target: Target,
    /// Server base URL; repeat it for several nodes (clients and publishes go round-robin).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: Vec<String>,
    #[arg(long, value_enum)]
    scenario: Scenario,
    /// WebSocket clients.
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Messages to send (user, broadcast, ingest).
    #[arg(long, default_value_t = 20_000)]
    messages: usize,
    /// Publish requests in flight.
    #[arg(long, default_value_t = 32)]
    in_flight: usize,
    /// Messages per second (rate).
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Seconds (rate).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Approximate message size in bytes.
    #[arg(long, default_value_t = 500)]
    size: usize,
    /// The server's PID, for CPU and RSS from /proc; repeat it for several nodes (their
    /// CPU and RSS are added up).
    #[arg(long)]
    server_pid: Vec<u32>,
    /// The database server's PID (PostgreSQL's postmaster), for the CPU it and its
    /// children (a backend per connection) spend, reported beside the server's.
    #[arg(long)]
    database_pid: Option<u32>,
    /// notifyhub: the JWT secret (to sign the clients' tokens).
    #[arg(long, env = "NOTIFYHUB_JWT_SECRET", default_value = "")]
    jwt_secret: String,
    /// notifyhub: a bridge token.
    #[arg(long, env = "NOTIFYHUB_SERVICE_TOKEN", default_value = "")]
    service_token: String,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// idle: once connected, hold the sockets up to this long, until each got a toast.
    #[arg(long, default_value_t = 0)]
    hold_seconds: u64,
    /// idle with --hold-seconds: write the number of sockets connected here once they are
    /// (for a script that then sends the toasts).
    #[arg(long)]
    ready_file: Option<std::path::PathBuf>,
}

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// utime+stime (ticks) and VmRSS (KiB) of a process.
fn proc_stats(pid: u32) -> Option<(u64, u64)> {
    let ticks = stat_fields(pid)?.get(11..13)?.iter().sum();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some((ticks, rss))
}

/// [`proc_stats`] added up over the servers (`None` without any, or when one is gone).
fn servers_stats(pids: &[u32]) -> Option<(u64, u64)> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().try_fold((0, 0), |(t, r), pid| proc_stats(*pid).map(|(t1, r1)| (t + t1, r + r1)))
}

/// User and system CPU ticks of the servers' threads, added up by thread name (one worker
/// thread, the SQLite writer, the checkpoints, tokio's pool…), so a run shows which thread
/// its CPU went to and whether to the kernel.
fn thread_ticks(pids: &[u32]) -> std::collections::BTreeMap<String, (u64, u64)> {
    let mut out = std::collections::BTreeMap::new();
    for pid in pids {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { continue };
        for task in tasks.flatten() {
            let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else { continue };
            let Some((name, fields)) = parse_stat(&stat) else { continue };
            let (Some(user), Some(sys)) = (fields.get(11), fields.get(12)) else { continue };
            let entry = out.entry(name.to_string()).or_insert((0, 0));
            entry.0 += user;
            entry.1 += sys;
        }
    }
    out
}

/// Per thread name, the user and system CPU µs per message between two readings of
/// [`thread_ticks`] (threads that used none left out).
fn threads_per_message(
    before: &std::collections::BTreeMap<String, (u64, u64)>,
    after: &std::collections::BTreeMap<String, (u64, u64)>,
    per: u64,
) -> Value {
    let us = |ticks: u64| (ticks as f64 / TICKS_PER_SEC * 1e6 / per.max(1) as f64 * 10.0).round() / 10.0;
    let mut out = serde_json::Map::new();
    for (name, (user, sys)) in after {
        let (user0, sys0) = before.get(name).copied().unwrap_or((0, 0));
        let (user, sys) = (user.saturating_sub(user0), sys.saturating_sub(sys0));
        if user + sys > 0 {
            out.insert(name.clone(), json!({"user_us_per_message": us(user), "system_us_per_message": us(sys)}));
        }
    }
    Value::Object(out)
}

/// The fields of /proc/PID/stat after the command name (state is 0, ppid 1, utime 11).
fn stat_fields(pid: u32) -> Option<Vec<u64>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat).map(|(_, fields)| fields)
}

/// A stat line's command name (between the first '(' and the last ')', as it may hold
/// either) and the fields after it.
fn parse_stat(stat: &str) -> Option<(&str, Vec<u64>)> {
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    // The state letter parses as 0; only numeric fields are read.
    let fields = stat.get(close + 1..)?.split_whitespace().map(|f| f.parse().unwrap_or(0)).collect();
    Some((stat.get(open + 1..close)?, fields))
}

/// CPU ticks of a process and of all its children: the live ones' own time, the reaped
/// ones' through the parent's cutime/cstime, so a backend that exits mid-run still counts.
fn tree_ticks(pid: u32) -> Option<u64> {
    let own = stat_fields(pid)?;
    Some(own.get(11..13)?.iter().sum::<u64>() + children_ticks(pid, &own)?)
}

/// The children's share of [`tree_ticks`], from the parent's stat fields `own`: the reaped
/// ones' cutime/cstime and the live ones' own time.
fn children_ticks(pid: u32, own: &[u64]) -> Option<u64> {
    let mut ticks = own.get(13..15)?.iter().sum::<u64>();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        if let Some(f) = stat_fields(child).filter(|f| f.get(1) == Some(&u64::from(pid))) {
            ticks += f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
        }
    }
    Some(ticks)
}

const TICKS_PER_SEC: f64 = 100.0;

/// How long the deliveries of a run may take to arrive after its last publish.
const DELIVERY_WAIT: Duration = Duration::from_secs(60);

struct Recorder {
    latencies_us: Mutex<Vec<u64>>,
    received: AtomicU64,
    /// Connected sockets whose stream ended (closed by the server, or failed).
    ended: AtomicU64,
}

impl Recorder {
    fn record(&self, sent_us: u64) {
        let lat = now_us().saturating_sub(sent_us);
        self.received.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut l) = self.latencies_us.lock() {
            l.push(lat);
        }
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// The node for the `i`-th client or publish.
fn node(args: &Args, i: usize) -> &str {
    &args.url[i % args.url.len()]
}

fn ws_url(args: &Args, user: &str, keys: &JwtKeys, i: usize) -> String {
    let base = node(args, i).replacen("http", "ws", 1);
    match args.target {
        Target::Notifyhub => {
            let id = Uuid::parse_str(user).unwrap_or_default();
            format!("{base}/ws?token={}", keys.issue(id, Role::User, Duration::from_secs(3600)))
        }
        Target::Nchan => format!("{base}/ws?user={user}"),
    }
}

/// The timestamp a delivered message carries.
fn sent_at(target: Target, text: &str) -> Option<u64> {
    let v: Value = serde_json::from_str(text).ok()?;
    match target {
        Target::Notifyhub => {
            if v["type"] != "notification_toast" {
                return None;
            }
            v["notification"]["metadata"]["sent_at_us"].as_u64()
        }
        Target::Nchan => v["sent_at_us"].as_u64(),
    }
}

/// Sockets per loopback source address: one address has ~28k ephemeral ports.
const SOCKETS_PER_SOURCE: usize = 25_000;

/// Sets `IP_BIND_ADDRESS_NO_PORT` (Linux): a later `bind` to port 0 takes the address only.
fn bind_address_no_port(socket: &tokio::net::TcpSocket) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let on: libc::c_int = 1;
        // SAFETY: setsockopt reads `on` (an int, its size given) for a socket this process owns.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}

/// A client socket from 127.0.0.x, x chosen by the socket's index (past ~28k sockets
/// one source address runs out of ports), with small buffers (tungstenite's defaults
/// cost over 100 KiB a socket).
async fn open_socket(
    url: String,
    index: usize,
) -> Result<tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>, String> {
    let parsed = reqwest::Url::parse(&url).map_err(|e| format!("bad URL: {e}"))?;
    let (host, port) = (parsed.host_str().unwrap_or_default().to_string(), parsed.port_or_known_default());
    let server: std::net::SocketAddr = format!("{host}:{}", port.unwrap_or(0))
        .parse()
        .map_err(|_| format!("{host}: give the server as an IPv4 address and port"))?;
    let socket = tokio::net::TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    if server.ip().is_loopback() {
        let source = std::net::Ipv4Addr::new(127, 0, 0, 1 + (index / SOCKETS_PER_SOURCE) as u8);
        // The port is then chosen at connect, for this server: bound at once, it would have
        // to be free towards every server, and load generators run side by side (one per
        // node, scripts/hold.sh) would share one range of ports per source address.
        bind_address_no_port(&socket);
        socket.bind((source, 0).into()).map_err(|e| format!("bind {source}: {e}"))?;
    }
    let stream = socket.connect(server).await.map_err(|e| format!("connect to {server}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_write_buffer_size(1 << 20);
    match tokio_tungstenite::client_async_with_config(url, stream, Some(config)).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(answer)) => {
            let body = answer.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default();
            Err(format!("the upgrade was refused: HTTP {} {}", answer.status(), snippet(&body)))
        }
        Err(e) => Err(format!("WebSocket handshake: {e}")),
    }
}

/// The start of a server's answer, on one line, for an error message.
fn snippet(text: &str) -> String {
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(200) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line,
    }
}

/// What went wrong first, and how often: connects or publishes that failed.
#[derive(Default)]
struct Failures {
    count: AtomicU64,
    first: Mutex<Option<String>>,
}

impl Failures {
    fn record(&self, why: String) {
        self.count.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut first) = self.first.lock() {
            first.get_or_insert(why);
        }
    }

    fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn first(&self) -> String {
        self.first.lock().ok().and_then(|f| f.clone()).unwrap_or_default()
    }
}

/// Sends a publish; true when the server took it, else the reason goes to `failures`.
async fn publish(request: reqwest::RequestBuilder, failures: &Failures) -> bool {
    match request.send().await {
        Ok(r) if r.status().is_success() => true,
        Ok(r) => {
            let status = r.status();
            let body = r.text().await.unwrap_or_default();
            failures.record(format!("HTTP {status} {}", snippet(&body)));
            false
        }
        Err(e) => {
            // reqwest's own text names the URL only; its causes say what happened.
            let mut why = e.to_string();
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                why.push_str(": ");
                why.push_str(&c.to_string());
                cause = c.source();
            }
            failures.record(why);
            false
        }
    }
}

/// Connects a socket for each user; returns the users whose socket is ready, in order.
async fn connect_all(
    args: &Args,
    users: &[String],
    keys: &JwtKeys,
    rec: Arc<Recorder>,
    failures: Arc<Failures>,
) -> Vec<String> {
    let mut connected = Vec::new();
    for (c, chunk) in users.chunks(200).enumerate() {
        let mut tasks = Vec::new();
        for (k, user) in chunk.iter().enumerate() {
            let index = c * 200 + k;
            let url = ws_url(args, user, keys, index);
            let (rec, target, failures) = (rec.clone(), args.target, failures.clone());
            tasks.push(tokio::task::spawn_local(async move {
                let ws = match open_socket(url, index).await {
                    Ok(ws) => ws,
                    Err(why) => {
                        failures.record(why);
                        return false;
                    }
                };
                let (mut tx, mut rx) = ws.split();
                let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
                let mut ready_tx = Some(ready_tx);
                if target == Target::Nchan {
                    let _ = ready_tx.take().map(|t| t.send(()));
                }
                tokio::task::spawn_local(async move {
                    while let Some(Ok(msg)) = rx.next().await {
                        match msg {
                            Message::Text(t) => {
                                if t.as_str().contains("\"ready\"") {
                                    if let Some(r) = ready_tx.take() {
                                        let _ = r.send(());
                                    }
                                } else if let Some(ts) = sent_at(target, t.as_str()) {
                                    rec.record(ts);
                                }
                            }
                            Message::Ping(p) => {
                                let _ = tx.send(Message::Pong(p)).await;
                            }
                            Message::Close(_) => break,
                            _ => {}
                        }
                    }
                    if ready_tx.is_none() {
                        // It was counted as connected.
                        rec.ended.fetch_add(1, Ordering::Relaxed);
                    }
                });
                let ready = ready_rx.await.is_ok();
                if !ready {
                    failures.record("the socket closed before its ready message".into());
                }
                ready
            }));
        }
        for (t, user) in tasks.into_iter().zip(chunk) {
            if t.await.unwrap_or(false) {
                connected.push(user.clone());
            }
        }
    }
    connected
}

fn payload(size: usize) -> String {
    "x".repeat(size.saturating_sub(200))
}

fn publish_request(
    client: &reqwest::Client,
    args: &Args,
    users: &[String],
    broadcast: bool,
    pad: &str,
) -> reqwest::RequestBuilder {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let base = node(args, NEXT.fetch_add(1, Ordering::Relaxed) as usize);
    let sent = now_us();
    match args.target {
        Target::Notifyhub => {
            let body = if broadcast {
                json!({"type": "notification", "user_ids": users, "notification_type": "signal_generated", "priority": "info",
                       "title": "load", "message": "load test", "metadata": {"sent_at_us": sent, "pad": pad}})
            } else {
                json!({"type": "notification", "user_id": users[0], "notification_type": "signal_generated", "priority": "info",
                       "title": "load", "message": "load test", "metadata": {"sent_at_us": sent, "pad": pad}})
            };
            client.post(format!("{base}/api/v1/events")).bearer_auth(&args.service_token).json(&body)
        }
        Target::Nchan => {
            let url = if broadcast {
                format!("{base}/publish/broadcast")
            } else {
                format!("{base}/publish/user/{}", users[0])
            };
            client.post(url).body(json!({"sent_at_us": sent, "pad": pad}).to_string())
        }
    }
}

async fn wait_received(rec: &Recorder, expected: u64, limit: Duration) {
    let deadline = Instant::now() + limit;
    while rec.received.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn main() {
    let args = Args::parse();
    notifyhub::sys::raise_fd_limit();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let local = tokio::task::LocalSet::new();
    let result = local.block_on(&rt, run(args));
    if let Err(e) = result {
        eprintln!("notifyhub-loadgen: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), String> {
    if args.target == Target::Notifyhub
        && (args.jwt_secret.is_empty() || args.service_token.is_empty())
        && args.scenario != Scenario::Ingest
    {
        return Err(
            "notifyhub needs --jwt-secret and --service-token (or NOTIFYHUB_JWT_SECRET / NOTIFYHUB_SERVICE_TOKEN)"
                .into(),
        );
    }
    let keys = JwtKeys::new(if args.jwt_secret.is_empty() { "unused-secret-unused" } else { &args.jwt_secret });
    let users: Vec<String> = (0..args.clients)
        .map(|i| match args.target {
            Target::Notifyhub => Uuid::new_v4().to_string(),
            Target::Nchan => format!("u{i}"),
        })
        .collect();
    let rec = Arc::new(Recorder {
        latencies_us: Mutex::new(Vec::new()),
        received: AtomicU64::new(0),
        ended: AtomicU64::new(0),
    });
    let client =
        reqwest::Client::builder().pool_max_idle_per_host(args.in_flight).build().map_err(|e| e.to_string())?;
    let pad = payload(args.size);
    let before_connect = servers_stats(&args.server_pid);
    let connect_failures = Arc::new(Failures::default());
    let (users, connected) = if args.scenario == Scenario::Ingest {
        (users, 0)
    } else {
        let ready = connect_all(&args, &users, &keys, rec.clone(), connect_failures.clone()).await;
        let n = ready.len();
        if n == 0 && args.clients > 0 {
            return Err(format!(
                "none of the {} clients connected; the first: {}",
                args.clients,
                connect_failures.first()
            ));
        }
        if n < args.clients {
            eprintln!(
                "warning: {n} of {} clients connected; the first failure: {}",
                args.clients,
                connect_failures.first()
            );
        }
        // Messages go to the users whose socket is open, so that each one is awaited.
        (ready, n)
    };
    let failures = Arc::new(Failures::default());
    let after_connect = servers_stats(&args.server_pid);
    let mut out = json!({"target": format!("{:?}", args.target).to_lowercase(), "scenario": format!("{:?}", args.scenario).to_lowercase(),
                         "clients": connected, "message_bytes": args.size});
    if let (Some((_, r0)), Some((_, r1))) = (before_connect, after_connect) {
        if connected > 0 {
            out["rss_kib_per_socket"] = json!(((r1 as f64 - r0 as f64) / connected as f64 * 100.0).round() / 100.0);
        }
        out["server_rss_kib"] = json!(r1);
    }
    let start_stats = servers_stats(&args.server_pid);
    let start_threads = thread_ticks(&args.server_pid);
    let start_db = args.database_pid.and_then(tree_ticks);
    let started = Instant::now();
    let (sent, expected) = match args.scenario {
        Scenario::Idle if args.hold_seconds > 0 => {
            if let Some(path) = &args.ready_file {
                std::fs::write(path, format!("{connected}\n")).map_err(|e| e.to_string())?;
            }
            eprintln!("holding {connected} sockets up to {} s, until each has a toast", args.hold_seconds);
            wait_received(&rec, connected as u64, Duration::from_secs(args.hold_seconds)).await;
            out["held"] = json!((connected as u64).saturating_sub(rec.ended.load(Ordering::Relaxed)));
            (0, 0)
        }
        Scenario::Idle => (0u64, 0u64),
        Scenario::User | Scenario::Ingest => {
            let next = Arc::new(AtomicU64::new(0));
            let mut workers = Vec::new();
            for _ in 0..args.in_flight {
                let (client, next, users, pad, failures) =
                    (client.clone(), next.clone(), users.clone(), pad.clone(), failures.clone());
                let args2 = args.clone();
                workers.push(tokio::task::spawn_local(async move {
                    let mut ok = 0u64;
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                        if i >= args2.messages {
                            break;
                        }
                        let to =
                            if users.is_empty() { Uuid::new_v4().to_string() } else { users[i % users.len()].clone() };
                        if publish(publish_request(&client, &args2, &[to], false, &pad), &failures).await {
                            ok += 1;
                        }
                    }
                    ok
                }));
            }
            let mut ok = 0;
            for w in workers {
                ok += w.await.unwrap_or(0);
            }
            (ok, if args.scenario == Scenario::User { ok } else { 0 })
        }
        Scenario::Broadcast => {
            let mut ok = 0u64;
            let mut i = 0;
            while i < args.messages {
                let batch: Vec<_> = (0..4.min(args.messages - i))
                    .map(|_| publish(publish_request(&client, &args, &users, true, &pad), &failures))
                    .collect();
                ok += futures_util::future::join_all(batch).await.into_iter().filter(|&took| took).count() as u64;
                i += 4;
            }
            (ok, ok * connected as u64)
        }
        Scenario::Rate => {
            let total = args.rate * args.seconds;
            let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let ok = Arc::new(AtomicU64::new(0));
            let mut pending = Vec::with_capacity(total as usize);
            for i in 0..total as usize {
                tick.tick().await;
                let req = publish_request(&client, &args, &[users[i % users.len()].clone()], false, &pad);
                let (ok, failures) = (ok.clone(), failures.clone());
                pending.push(tokio::task::spawn_local(async move {
                    if publish(req, &failures).await {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                }));
            }
            for p in pending {
                let _ = p.await;
            }
            let n = ok.load(Ordering::Relaxed);
            (n, n)
        }
    };
    let failed = failures.count();
    if sent == 0 && failed > 0 {
        return Err(format!("every publish failed ({failed}); the first: {}", failures.first()));
    }
    if failed > 0 {
        eprintln!("warning: {failed} publishes failed; the first: {}", failures.first());
    }
    wait_received(&rec, expected, DELIVERY_WAIT).await;
    let elapsed = started.elapsed().as_secs_f64();
    let end_stats = servers_stats(&args.server_pid);
    let end_threads = thread_ticks(&args.server_pid);
    let end_db = args.database_pid.and_then(tree_ticks);
    let received = rec.received.load(Ordering::Relaxed);
    if received < expected {
        eprintln!(
            "warning: {} of {expected} deliveries did not arrive within {} s of the last publish",
            expected - received,
            DELIVERY_WAIT.as_secs()
        );
    }
    out["sent"] = json!(sent);
    out["failed"] = json!(failed);
    out["delivered"] = json!(received);
    out["seconds"] = json!((elapsed * 1000.0).round() / 1000.0);
    if sent > 0 {
        out["sent_per_s"] = json!((sent as f64 / elapsed).round());
        out["delivered_per_s"] = json!((received as f64 / elapsed).round());
    }
    let per = if args.scenario == Scenario::Broadcast { received.max(1) } else { sent.max(1) };
    let mut cpu = |name: &str, t0: u64, t1: u64| {
        let ticks = t1.saturating_sub(t0) as f64;
        out[format!("{name}_cpu_s")] = json!((ticks / TICKS_PER_SEC * 1000.0).round() / 1000.0);
        out[format!("{name}_cpu_us_per_message")] =
            json!((ticks / TICKS_PER_SEC * 1e6 / per as f64 * 10.0).round() / 10.0);
    };
    if let (Some((t0, _)), Some((t1, _))) = (start_stats, end_stats) {
        cpu("server", t0, t1);
    }
    if let (Some(t0), Some(t1)) = (start_db, end_db) {
        cpu("database", t0, t1);
    }
    if start_stats.is_some() && end_stats.is_some() {
        out["server_threads"] = threads_per_message(&start_threads, &end_threads, per);
    }
    let mut lat = rec.latencies_us.lock().map(|l| l.clone()).unwrap_or_default();
    lat.sort_unstable();
    if !lat.is_empty() {
        out["latency_ms"] = json!({"p50": percentile(&lat, 0.5), "p90": percentile(&lat, 0.9), "p99": percentile(&lat, 0.99), "max": percentile(&lat, 1.0)});
    }
    println!("{}", serde_json::to_string(&out).unwrap_or_default());
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&out).unwrap_or_default()).map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own_ticks(pid: u32) -> u64 {
        stat_fields(pid).map(|f| f[11] + f[12]).unwrap_or(0)
    }

    #[test]
    fn a_process_tree_counts_its_children_live_and_reaped() {
        let me = std::process::id();
        // The children's share, from one reading of this process's stat: the tree less
        // an own time read a moment later ran short whenever a test thread used the CPU
        // in between.
        let children = || children_ticks(me, &stat_fields(me).expect("own stat")).expect("children");
        let before = children();
        let mut child = std::process::Command::new("sh").args(["-c", "while :; do :; done"]).spawn().unwrap();
        // Polled until the busy child shows a few ticks of its own in /proc.
        while own_ticks(child.id()) < 5 {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let burnt = own_ticks(child.id());
        assert!(children() >= before + burnt, "a live child's CPU counts");
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(children() >= before + burnt, "a reaped child's CPU still counts");
        assert_eq!(tree_ticks(u32::MAX), None, "no such process");
    }

    #[test]
    fn a_busy_thread_shows_under_its_own_name() {
        let me = std::process::id();
        let mine = |t: &std::collections::BTreeMap<String, (u64, u64)>| t.get("loadgen-busy").map_or(0, |(u, s)| u + s);
        let before = thread_ticks(&[me]);
        let (spun, read) = (std::sync::mpsc::channel(), std::sync::mpsc::channel::<()>());
        let busy = std::thread::Builder::new()
            .name("loadgen-busy".into())
            .spawn(move || {
                // Spins until /proc shows a few ticks of its own, then stays alive (an
                // ended thread leaves /proc) until the reading is taken.
                while mine(&thread_ticks(&[std::process::id()])) < 3 {
                    std::hint::spin_loop();
                }
                spun.0.send(()).unwrap();
                read.1.recv().unwrap();
            })
            .unwrap();
        spun.1.recv().unwrap();
        let after = thread_ticks(&[me]);
        read.0.send(()).unwrap();
        busy.join().unwrap();
        assert_eq!(mine(&before), 0);
        let split = threads_per_message(&before, &after, 1);
        let busy = &split["loadgen-busy"];
        let us = busy["user_us_per_message"].as_f64().unwrap() + busy["system_us_per_message"].as_f64().unwrap();
        assert!(us >= 30_000.0, "three ticks or more, for one message: {split}");
    }

    #[test]
    fn several_servers_add_up() {
        let me = std::process::id();
        let (t, r) = proc_stats(me).unwrap();
        let (t2, r2) = servers_stats(&[me, me]).unwrap();
        // Read again after the first: the ticks may have moved on, never back.
        assert!(t2 >= 2 * t && r2 >= r, "{t2} {r2} against {t} {r}");
        assert_eq!(servers_stats(&[]), None);
        assert_eq!(servers_stats(&[me, u32::MAX]), None, "a server gone spoils the sum");
    }
}
