//! Integration tests: the real hub on a random port, driven over HTTP, on SQLite and
//! on PostgreSQL.

mod helpers;

mod auth;
mod bridge;
mod channels;
mod cli;
mod cluster;
mod crash;
mod loadgen;
mod notifications;
mod ops;
mod outage;
mod preferences;
mod realtime;
mod standins;
mod storage;
