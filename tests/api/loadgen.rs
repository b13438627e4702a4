//! `notifyhub-loadgen` against the real hub: every scenario reports what it measured, and
//! a run that cannot work says why and fails instead of printing zeros.

use crate::helpers::{HubProcess, JWT_SECRET, SERVICE_TOKEN};
use serde_json::Value;

/// Runs the load generator with `args`; its exit status, its JSON (the last stdout line)
/// and its stderr.
fn loadgen(args: &[&str]) -> (std::process::ExitStatus, Value, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_notifyhub-loadgen"))
        .args(args)
        .env("NOTIFYHUB_JWT_SECRET", JWT_SECRET)
        .env("NOTIFYHUB_SERVICE_TOKEN", SERVICE_TOKEN)
        .output()
        .expect("the load generator runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = stdout.lines().last().and_then(|l| serde_json::from_str(l).ok()).unwrap_or(Value::Null);
    (out.status, json, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A scenario against `hub`, which must succeed; its JSON.
fn scenario(hub: &HubProcess, scenario: &str, more: &[&str]) -> Value {
    let (base, pid) = (hub.base(), hub.child.id().to_string());
    let mut args = vec!["--url", &base, "--server-pid", &pid, "--scenario", scenario, "--in-flight", "4"];
    args.extend_from_slice(more);
    let (status, json, stderr) = loadgen(&args);
    assert!(status.success(), "{scenario}: {stderr}");
    assert!(!stderr.contains("warning"), "{scenario}: {stderr}");
    assert_eq!(json["scenario"], scenario, "{json}");
    json
}

fn number(json: &Value, key: &str) -> f64 {
    json[key].as_f64().unwrap_or_else(|| panic!("no {key} in {json}"))
}

#[test]
fn every_scenario_reports_its_figures_from_a_real_hub() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path(), [("RUST_LOG", "warn")]);

    let idle = scenario(&hub, "idle", &["--clients", "20"]);
    assert_eq!(idle["clients"], 20);
    assert!(number(&idle, "server_rss_kib") > 0.0, "{idle}");
    assert!(idle["rss_kib_per_socket"].is_number(), "{idle}");

    let user = scenario(&hub, "user", &["--clients", "20", "--messages", "1000"]);
    assert_eq!(
        (user["sent"].as_u64(), user["failed"].as_u64(), user["delivered"].as_u64()),
        (Some(1000), Some(0), Some(1000))
    );
    let latency = &user["latency_ms"];
    assert!(number(latency, "p50") <= number(latency, "p99") && number(latency, "p99") <= number(latency, "max"));
    // The hub's CPU over the run, in total and by thread.
    assert!(number(&user, "server_cpu_s") > 0.0, "{user}");
    assert!(number(&user, "server_cpu_us_per_message") > 0.0, "{user}");
    assert!(user["server_threads"].as_object().is_some_and(|t| !t.is_empty()), "{user}");

    let broadcast = scenario(&hub, "broadcast", &["--clients", "20", "--messages", "3"]);
    assert_eq!((broadcast["sent"].as_u64(), broadcast["delivered"].as_u64()), (Some(3), Some(60)));

    let rate = scenario(&hub, "rate", &["--clients", "10", "--rate", "50", "--seconds", "1"]);
    assert_eq!((rate["sent"].as_u64(), rate["delivered"].as_u64()), (Some(50), Some(50)));
    assert!(number(&rate["latency_ms"], "p99") > 0.0, "{rate}");

    let ingest = scenario(&hub, "ingest", &["--messages", "300"]);
    assert_eq!((ingest["sent"].as_u64(), ingest["delivered"].as_u64()), (Some(300), Some(0)));
    assert!(number(&ingest, "sent_per_s") > 0.0, "{ingest}");
    hub.terminate();
}

#[test]
fn a_run_that_cannot_work_says_why_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path(), [("RUST_LOG", "warn")]);
    let base = hub.base();

    // Tokens signed with another secret: every socket is refused at the upgrade.
    let (status, _, stderr) = loadgen(&[
        "--url",
        &base,
        "--scenario",
        "user",
        "--clients",
        "5",
        "--jwt-secret",
        "not-the-hubs-secret-0123456789",
    ]);
    assert!(!status.success());
    assert!(stderr.contains("none of the 5 clients connected") && stderr.contains("HTTP 401"), "{stderr}");

    // A bridge token the hub does not know: every publish is refused.
    let (status, _, stderr) =
        loadgen(&["--url", &base, "--scenario", "ingest", "--messages", "10", "--service-token", "not-a-bridge-token"]);
    assert!(!status.success());
    assert!(stderr.contains("every publish failed (10)") && stderr.contains("HTTP 401"), "{stderr}");

    // Nothing listening there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (status, _, stderr) =
        loadgen(&["--url", &format!("http://127.0.0.1:{closed}"), "--scenario", "idle", "--clients", "3"]);
    assert!(!status.success());
    assert!(stderr.contains("none of the 3 clients connected") && stderr.contains("refused"), "{stderr}");
    let (status, _, stderr) =
        loadgen(&["--url", &format!("http://127.0.0.1:{closed}"), "--scenario", "ingest", "--messages", "3"]);
    assert!(!status.success());
    assert!(stderr.contains("every publish failed (3)") && stderr.contains("refused"), "{stderr}");
    hub.terminate();
}
