//! `GET /dashboard/`: the relay at a glance (health, devices online, sockets, queue) and the
//! last hour drawn as charts from `GET /api/v1/metrics/history`'s samples.

use actix_web::{web, HttpResponse};
use askama::Template;
use serde::Deserialize;

use crate::api::routes::{health, metrics};
use crate::dashboard::charts::{self, Chart};
use crate::dashboard::guard::Admin;
use crate::dashboard::view::{self, Flash, Layout};
use crate::state::AppState;

/// The overview.
#[derive(Template)]
#[template(path = "overview.html", config = "src/dashboard/askama.toml")]
struct Overview {
    layout: Layout,
    status: &'static str,
    devices_online: String,
    sockets: String,
    waiting: String,
    in_flight: String,
    charts: Vec<Chart>,
    width: f64,
    height: f64,
}

/// `?done=`.
#[derive(Deserialize)]
pub struct Query {
    done: Option<String>,
}

fn count(value: Option<&serde_json::Value>, key: &str) -> String {
    value
        .and_then(|v| v.get(key))
        .and_then(serde_json::Value::as_u64)
        .map_or_else(|| "–".to_owned(), |n| n.to_string())
}

/// `GET /dashboard/`.
pub async fn overview(
    state: web::Data<AppState>,
    admin: Admin,
    query: web::Query<Query>,
) -> HttpResponse {
    let layout = Layout::new(&admin, "overview").with(view::done(query.done.as_deref()));
    let (health, samples) = (
        health::health(&state, true).await,
        metrics::samples(&state).await,
    );
    let mut flash: Option<Flash> = None;
    let health = match health {
        Ok(h) => Some(h),
        Err(e) => {
            flash = Some(view::failure(&e).1);
            None
        }
    };
    let samples = samples.unwrap_or_else(|e| {
        flash = Some(view::failure(&e).1);
        Vec::new()
    });
    let layout = match flash {
        Some(f) => layout.with(Some(f)),
        None => layout,
    };
    let sockets = health.as_ref().and_then(|h| h.sockets.as_ref());
    let queue = health.as_ref().and_then(|h| h.queue.as_ref());
    view::ok(&Overview {
        layout,
        status: health.as_ref().map_or("unknown", |h| h.status.as_str()),
        devices_online: count(sockets, "devices"),
        sockets: count(sockets, "sockets"),
        waiting: count(queue, "ready"),
        in_flight: count(queue, "inFlight"),
        charts: charts::overview(&samples, state.clock.now_ms()),
        width: charts::WIDTH,
        height: charts::HEIGHT,
    })
}
