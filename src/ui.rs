//! Serves the web UI at `/`: the built frontend (`frontend/dist`, or
//! `NOTIFYHUB_UI_DIR`) when present, otherwise a small built-in page so the hub is
//! usable before the frontend is built.

use actix_web::{web, HttpResponse};
use std::path::PathBuf;

const FALLBACK_PAGE: &str = include_str!("ui_fallback.html");

/// Where the built UI is looked for.
pub fn ui_dir() -> PathBuf {
    std::env::var("NOTIFYHUB_UI_DIR").map(PathBuf::from).unwrap_or_else(|_| PathBuf::from("frontend/dist"))
}

/// Registers the UI routes (after the API, so API paths win).
pub fn configure(cfg: &mut web::ServiceConfig) {
    let dir = ui_dir();
    if dir.join("index.html").is_file() {
        let index = dir.join("index.html");
        cfg.service(actix_files::Files::new("/", dir).index_file("index.html").default_handler(web::to(
            move |req: actix_web::HttpRequest| {
                let index = index.clone();
                async move {
                    if req.path().starts_with("/api/") || req.path() == "/ws" {
                        return crate::api::not_found(req)
                            .await
                            .unwrap_or_else(|e| actix_web::ResponseError::error_response(&e));
                    }
                    // Client-side routes (/preferences, /outbox…) get the app shell.
                    match std::fs::read_to_string(&index) {
                        Ok(html) => HttpResponse::Ok().content_type("text/html; charset=utf-8").body(html),
                        Err(_) => HttpResponse::NotFound().finish(),
                    }
                }
            },
        )));
    } else {
        cfg.route(
            "/",
            web::get().to(|| async { HttpResponse::Ok().content_type("text/html; charset=utf-8").body(FALLBACK_PAGE) }),
        );
    }
}
