//! The scrape: sets the gauges that describe other components' state (queue depth, sockets, the
//! store's pool, IP blocks) from their own figures, then encodes every metric in the Prometheus
//! text format. `GET /metrics` serves it with a token ([`crate::api::routes::metrics`]);
//! `metrics.listen` serves it without one on a second address for a local scraper ([`listen`]).

use std::net::TcpListener;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{web, App, HttpResponse, HttpServer};

use beepmyphone_actors::queue::GetQueueStats;
use beepmyphone_actors::registry::GetRegistryStats;

use crate::state::AppState;

/// The content type of the Prometheus text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How long a scrape waits for the queue and the registry; a busy actor leaves its gauges at
/// their last values rather than holding the scraper.
const ACTOR_TIMEOUT: Duration = Duration::from_secs(2);

/// Refreshes the state gauges and encodes everything.
pub async fn scrape(state: &AppState) -> Vec<u8> {
    let metrics = &state.graph.metrics;
    if let Ok(Ok(stats)) =
        tokio::time::timeout(ACTOR_TIMEOUT, state.graph.queue.send(GetQueueStats)).await
    {
        metrics.set_queue(stats.ready_by_priority, stats.in_flight);
    }
    if let Ok(Ok(stats)) =
        tokio::time::timeout(ACTOR_TIMEOUT, state.graph.registry.send(GetRegistryStats)).await
    {
        metrics.sockets_open.set(gauge(stats.sockets));
        metrics.devices_online.set(gauge(stats.devices));
    }
    let pool = state.store.stats();
    let pool_gauge = &metrics.db_pool_connections;
    pool_gauge
        .with_label_values(&["idle"])
        .set(gauge(pool.idle as usize));
    pool_gauge
        .with_label_values(&["in_use"])
        .set(gauge(pool.in_use as usize));
    metrics.ip_blocks_active.set(gauge(
        state.limits.limiter.active_blocks(state.clock.now_ms()),
    ));
    metrics.encode()
}

fn gauge(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// The response to a scrape.
pub async fn response(state: &AppState) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(CONTENT_TYPE)
        .body(scrape(state).await)
}

async fn plain(state: web::Data<AppState>) -> HttpResponse {
    response(&state).await
}

/// Serves `GET /metrics` (and nothing else) without a token on `listener`: for a scraper on the
/// same host, bound to a loopback address by the operator (`metrics.listen`). One worker; it
/// stops with the relay.
pub fn listen(listener: TcpListener, state: web::Data<AppState>) -> std::io::Result<Server> {
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .route("/metrics", web::get().to(plain))
            .default_service(web::to(HttpResponse::NotFound))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)?
    .run())
}
