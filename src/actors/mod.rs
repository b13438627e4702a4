//! The actors of the hub. Actors turn failures into state or `ctx.stop()`, never panics:
//! a panic inside a handler takes its arbiter down.

pub mod channel;
pub mod dispatcher;
pub mod persistence;
pub mod profiles;
pub mod session;
mod sqlite_writer;
pub mod ws;
