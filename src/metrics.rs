//! Prometheus text metrics (`notifyhub_` prefix), kept in atomics: no registry crate,
//! no locks on the request path beyond a sharded map lookup.

use dashmap::DashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};
use std::time::Duration;

/// Upper bounds of the latency histogram, in seconds.
const BUCKETS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (i, upper) in BUCKETS.iter().enumerate() {
            if secs <= *upper {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }
}

/// One route's requests: found by the route's text without building a key, so that a
/// request costs no allocation here once its route, method and status have been seen.
#[derive(Default)]
struct RouteStats {
    latency: Histogram,
    /// By method and status: a handful per route, scanned.
    requests: RwLock<Vec<(String, u16, AtomicU64)>>,
}

impl RouteStats {
    fn count(&self, method: &str, status: u16) {
        let same = |(m, s, _): &&(String, u16, AtomicU64)| m == method && *s == status;
        if let Some((_, _, n)) = self.requests.read().unwrap_or_else(PoisonError::into_inner).iter().find(same) {
            n.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut requests = self.requests.write().unwrap_or_else(PoisonError::into_inner);
        match requests.iter().find(same) {
            Some((_, _, n)) => {
                n.fetch_add(1, Ordering::Relaxed);
            }
            None => requests.push((method.to_string(), status, AtomicU64::new(1))),
        }
    }
}

/// The hub's counters.
#[derive(Default)]
pub struct Metrics {
    routes: DashMap<String, RouteStats>,
    notifications_stored: AtomicU64,
    database_down: std::sync::atomic::AtomicBool,
    /// Circuit state per channel (email, sms, push): 0 closed, 1 open, 2 half-open.
    breakers: [std::sync::atomic::AtomicU8; 3],
    slow_consumers: AtomicU64,
    store_batches: AtomicU64,
    replay_reads: AtomicU64,
    profile_reads: AtomicU64,
    users_elsewhere: AtomicU64,
    cluster_alone: std::sync::atomic::AtomicBool,
}

fn breaker_slot(channel: crate::domain::Channel) -> Option<usize> {
    match channel {
        crate::domain::Channel::Email => Some(0),
        crate::domain::Channel::Sms => Some(1),
        crate::domain::Channel::Push => Some(2),
        crate::domain::Channel::Toast => None,
    }
}

impl Metrics {
    /// Counts one HTTP request.
    pub fn observe_request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        if !self.routes.contains_key(route) {
            self.routes.entry(route.to_string()).or_default();
        }
        if let Some(stats) = self.routes.get(route) {
            stats.count(method, status);
            stats.latency.observe(elapsed);
        }
    }

    /// Counts a committed batch of `n` stored notifications.
    pub fn add_notifications_stored(&self, n: u64) {
        self.notifications_stored.fetch_add(n, Ordering::Relaxed);
        self.store_batches.fetch_add(1, Ordering::Relaxed);
    }

    /// Records whether the database answers (the dispatcher's watch).
    pub fn set_database_up(&self, up: bool) {
        self.database_down.store(!up, Ordering::Relaxed);
    }

    /// Counts a page of notifications read back for a socket (joining, catching up).
    pub fn add_replay_read(&self) {
        self.replay_reads.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a read of recipients' profiles the cache lacked.
    pub fn add_profile_read(&self) {
        self.profile_reads.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a socket cut off for not reading.
    pub fn add_slow_consumer(&self) {
        self.slow_consumers.fetch_add(1, Ordering::Relaxed);
    }

    /// Records how many users have a tab on another node, as this node knows.
    pub fn set_users_elsewhere(&self, n: u64) {
        self.users_elsewhere.store(n, Ordering::Relaxed);
    }

    /// Records whether this node believes no other node listens.
    pub fn set_cluster_alone(&self, alone: bool) {
        self.cluster_alone.store(alone, Ordering::Relaxed);
    }

    /// Records a channel's circuit state (0 closed, 1 open, 2 half-open).
    pub fn set_breaker(&self, channel: crate::domain::Channel, state: u8) {
        if let Some(i) = breaker_slot(channel) {
            self.breakers[i].store(state, Ordering::Relaxed);
        }
    }

    /// A channel's circuit state (0 closed, 1 open, 2 half-open).
    pub fn breaker(&self, channel: crate::domain::Channel) -> u8 {
        breaker_slot(channel).map(|i| self.breakers[i].load(Ordering::Relaxed)).unwrap_or(0)
    }

    /// Renders the Prometheus text exposition format.
    pub fn render(&self, backend: &str) -> String {
        let mut out = String::with_capacity(4096);
        let _ = writeln!(out, "# HELP notifyhub_info Build and backend information.");
        let _ = writeln!(out, "# TYPE notifyhub_info gauge");
        let _ = writeln!(out, "notifyhub_info{{version=\"{}\",backend=\"{}\"}} 1", env!("CARGO_PKG_VERSION"), backend);
        let _ = writeln!(out, "# HELP notifyhub_http_requests_total HTTP requests by method, route and status.");
        let _ = writeln!(out, "# TYPE notifyhub_http_requests_total counter");
        let mut rows: Vec<_> = Vec::new();
        for e in self.routes.iter() {
            let requests = e.value().requests.read().unwrap_or_else(PoisonError::into_inner);
            for (method, status, n) in requests.iter() {
                rows.push(((method.clone(), e.key().clone(), *status), n.load(Ordering::Relaxed)));
            }
        }
        rows.sort();
        for ((method, route, status), n) in rows {
            let _ = writeln!(
                out,
                "notifyhub_http_requests_total{{method=\"{method}\",route=\"{}\",status=\"{status}\"}} {n}",
                escape(&route)
            );
        }
        let _ = writeln!(out, "# HELP notifyhub_http_request_duration_seconds HTTP request latency by route.");
        let _ = writeln!(out, "# TYPE notifyhub_http_request_duration_seconds histogram");
        let mut routes: Vec<String> = self.routes.iter().map(|e| e.key().clone()).collect();
        routes.sort();
        for route in routes {
            if let Some(stats) = self.routes.get(&route) {
                let h = &stats.latency;
                let r = escape(&route);
                for (i, upper) in BUCKETS.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "notifyhub_http_request_duration_seconds_bucket{{route=\"{r}\",le=\"{upper}\"}} {}",
                        h.buckets[i].load(Ordering::Relaxed)
                    );
                }
                let count = h.count.load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "notifyhub_http_request_duration_seconds_bucket{{route=\"{r}\",le=\"+Inf\"}} {count}"
                );
                let _ = writeln!(
                    out,
                    "notifyhub_http_request_duration_seconds_sum{{route=\"{r}\"}} {}",
                    h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
                );
                let _ = writeln!(out, "notifyhub_http_request_duration_seconds_count{{route=\"{r}\"}} {count}");
            }
        }
        let _ = writeln!(out, "# HELP notifyhub_database_up Whether the database answered the last check.");
        let _ = writeln!(out, "# TYPE notifyhub_database_up gauge");
        let _ = writeln!(out, "notifyhub_database_up {}", u8::from(!self.database_down.load(Ordering::Relaxed)));
        let _ = writeln!(
            out,
            "# HELP notifyhub_channel_circuit_state Circuit breaker per channel: 0 closed, 1 open, 2 half-open."
        );
        let _ = writeln!(out, "# TYPE notifyhub_channel_circuit_state gauge");
        for c in [crate::domain::Channel::Email, crate::domain::Channel::Sms, crate::domain::Channel::Push] {
            let _ = writeln!(out, "notifyhub_channel_circuit_state{{channel=\"{}\"}} {}", c.as_str(), self.breaker(c));
        }
        let _ = writeln!(
            out,
            "# HELP notifyhub_store_batches_total Group-commit transactions (stored / batches = batch size)."
        );
        let _ = writeln!(out, "# TYPE notifyhub_store_batches_total counter");
        let _ = writeln!(out, "notifyhub_store_batches_total {}", self.store_batches.load(Ordering::Relaxed));
        let _ = writeln!(
            out,
            "# HELP notifyhub_ws_slow_consumer_disconnects_total Sockets closed because the client stopped reading."
        );
        let _ = writeln!(out, "# TYPE notifyhub_ws_slow_consumer_disconnects_total counter");
        let _ = writeln!(
            out,
            "notifyhub_ws_slow_consumer_disconnects_total {}",
            self.slow_consumers.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP notifyhub_ws_replay_reads_total Database reads for sockets joining or catching up (not live toasts)."
        );
        let _ = writeln!(out, "# TYPE notifyhub_ws_replay_reads_total counter");
        let _ = writeln!(out, "notifyhub_ws_replay_reads_total {}", self.replay_reads.load(Ordering::Relaxed));
        let _ = writeln!(
            out,
            "# HELP notifyhub_profile_reads_total Database reads of recipients' profiles the cache lacked (one read serves the events that waited for it)."
        );
        let _ = writeln!(out, "# TYPE notifyhub_profile_reads_total counter");
        let _ = writeln!(out, "notifyhub_profile_reads_total {}", self.profile_reads.load(Ordering::Relaxed));
        let _ = writeln!(
            out,
            "# HELP notifyhub_cluster_users_elsewhere Users with a tab on another node (their toasts' frames go in the NOTIFY)."
        );
        let _ = writeln!(out, "# TYPE notifyhub_cluster_users_elsewhere gauge");
        let _ = writeln!(out, "notifyhub_cluster_users_elsewhere {}", self.users_elsewhere.load(Ordering::Relaxed));
        if backend == "postgres" {
            let _ = writeln!(
                out,
                "# HELP notifyhub_cluster_alone 1 while this node sees no other node, and so announces nothing it stores."
            );
            let _ = writeln!(out, "# TYPE notifyhub_cluster_alone gauge");
            let _ = writeln!(out, "notifyhub_cluster_alone {}", u8::from(self.cluster_alone.load(Ordering::Relaxed)));
        }
        let _ = writeln!(out, "# HELP notifyhub_notifications_stored_total Notifications stored by this node.");
        let _ = writeln!(out, "# TYPE notifyhub_notifications_stored_total counter");
        let _ =
            writeln!(out, "notifyhub_notifications_stored_total {}", self.notifications_stored.load(Ordering::Relaxed));
        out
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_buckets() {
        let m = Metrics::default();
        m.observe_request("GET", "/api/v1/notifications", 200, Duration::from_micros(700));
        m.observe_request("GET", "/api/v1/notifications", 200, Duration::from_millis(30));
        m.observe_request("POST", "/api/v1/notifications", 422, Duration::from_millis(1));
        m.observe_request("GET", "/api/v1/notifications", 404, Duration::from_millis(1));
        m.add_notifications_stored(3);
        let text = m.render("sqlite");
        assert!(text.contains(
            "notifyhub_http_requests_total{method=\"GET\",route=\"/api/v1/notifications\",status=\"200\"} 2"
        ));
        assert!(text.contains(
            "notifyhub_http_requests_total{method=\"GET\",route=\"/api/v1/notifications\",status=\"404\"} 1"
        ));
        assert!(text.contains(
            "notifyhub_http_requests_total{method=\"POST\",route=\"/api/v1/notifications\",status=\"422\"} 1"
        ));
        assert!(text.contains("le=\"0.001\"} 3"));
        assert!(text.contains("le=\"0.05\"} 4"));
        assert!(text.contains("le=\"+Inf\"} 4"));
        assert!(text.contains("notifyhub_notifications_stored_total 3"));
        assert!(text.contains("backend=\"sqlite\""));
    }
}
