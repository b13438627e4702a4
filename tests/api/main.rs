//! Integration tests: the real hub on a random port, driven over HTTP, on SQLite and
//! on PostgreSQL.

mod helpers;

mod auth;
mod bridge;
mod cli;
mod notifications;
mod ops;
mod outage;
mod preferences;
mod realtime;
mod storage;
