//! notifyhub: a real-time notification hub for trading dashboards.
//!
//! Internal services post events over HTTP; the hub applies each user's rules, stores
//! the notification, pushes it live to every open tab and delivers it by email, SMS and
//! browser push according to priority. See `README.md` and `DESIGN.md`.

#![deny(clippy::unwrap_used)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod actors;
pub mod api;
pub mod auth;
pub mod channels;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod crypto;
pub mod domain;
pub mod error;
pub mod id_maps;
pub mod metrics;
pub mod startup;
pub mod state;
pub mod store;
pub mod sys;
pub mod telemetry;
pub mod ui;
pub mod vapid;
