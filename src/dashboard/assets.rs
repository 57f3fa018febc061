//! The dashboard's stylesheet, script and icon, compiled into the binary (no build step, nothing
//! fetched from elsewhere).

use actix_web::http::header;
use actix_web::{web, HttpResponse};

/// `(name, content type, bytes)` of every asset.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("assets/app.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/app.js"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_str!("assets/favicon.svg"),
    ),
];

/// `GET /dashboard/assets/{name}`.
pub async fn asset(name: web::Path<String>) -> HttpResponse {
    match ASSETS.iter().find(|(n, _, _)| *n == name.as_str()) {
        Some((_, content_type, body)) => HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, *content_type))
            .body(*body),
        None => HttpResponse::from_error(actix_web::Error::from(crate::error::ApiError::NotFound(
            format!("no asset {name}"),
        ))),
    }
}
