//! The web dashboard: server-rendered pages for an admin session, at `/dashboard/…` (login at
//! `/dashboard/login`; `/` redirects to it).
//!
//! Every page calls the same operation the HTTP API's handler calls (`crate::api::routes::…`),
//! with the admin's session as the principal, so it can do nothing the API cannot, and every
//! check, limit and audit record is the API's. Pages are askama templates
//! (`src/dashboard/templates/`, HTML-escaped); the stylesheet, a small script and the icon are
//! compiled in ([`assets`]). Everything works without JavaScript except the live parts (the event
//! stream, the pairing watch, the countdown), which read `GET /api/v1/events`.
//!
//! - [`guard`]: the session and CSRF checks of pages and forms;
//! - [`view`]: the layout, messages and rendering; [`errors`]: refusals as pages;
//! - [`charts`]: the overview's SVG charts; [`pages`]: one module per section.
//!
//! Every dashboard response carries a fixed Content-Security-Policy
//! ([`crate::api::headers::DASHBOARD_CSP`]: this origin's scripts and styles only, nothing
//! inline, no framing) and `Cache-Control: no-store`.

pub mod assets;
pub mod charts;
pub mod errors;
pub mod guard;
pub mod pages;
pub mod view;

use actix_web::web;

use pages::{audit, devices, keys, live, overview, pairing, session, system, tokens};

/// Registers the dashboard's routes and the `/` redirect.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/",
        web::get().to(|| async { view::see_other("/dashboard/") }),
    )
    .route(
        "/dashboard",
        web::get().to(|| async { view::see_other("/dashboard/") }),
    )
    .service(
        web::scope("/dashboard")
            .route("/", web::get().to(overview::overview))
            .route("/assets/{name}", web::get().to(assets::asset))
            .route("/login", web::get().to(session::login_page))
            .route("/login", web::post().to(session::login))
            .route("/logout", web::post().to(session::logout))
            .route("/devices", web::get().to(devices::list))
            .route("/devices/{id}", web::get().to(devices::show))
            .route("/devices/{id}", web::post().to(devices::save))
            .route(
                "/devices/{id}/revoke",
                web::get().to(devices::confirm_revoke),
            )
            .route("/devices/{id}/revoke", web::post().to(devices::revoke))
            .route("/pairing", web::get().to(pairing::form))
            .route("/pairing", web::post().to(pairing::mint))
            .route("/live", web::get().to(live::live))
            .route("/send", web::get().to(live::form))
            .route("/send", web::post().to(live::send))
            .route("/health", web::get().to(system::health))
            .route("/keys", web::get().to(keys::list))
            .route("/keys/rotate", web::get().to(keys::confirm))
            .route("/keys/rotate", web::post().to(keys::rotate))
            .route("/certificates", web::get().to(system::certificates))
            .route("/certificates/renew", web::post().to(system::renew))
            .route("/blocks", web::get().to(system::blocks))
            .route("/blocks/unblock", web::post().to(system::unblock))
            .route("/tokens", web::get().to(tokens::list))
            .route("/tokens", web::post().to(tokens::create))
            .route("/tokens/{id}/revoke", web::get().to(tokens::confirm_revoke))
            .route("/tokens/{id}/revoke", web::post().to(tokens::revoke))
            .route("/audit", web::get().to(audit::list))
            .route("/audit/verify", web::post().to(audit::verify)),
    );
}
