//! The scrape: sets the gauges that describe other components' state (sockets, the store's pool,
//! IP blocks) from their own figures (the queue's gauges are kept by the device queues), then encodes every metric in the Prometheus
//! text format. `GET /metrics` serves it with a token ([`crate::api::routes::metrics`]);
//! `metrics.listen` serves it without one on a second address for a local scraper ([`listen`]).

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{web, App, HttpResponse, HttpServer};

use beepmyphone_actors::clock::SharedClock;
use beepmyphone_actors::registry::GetRegistryStats;
use beepmyphone_actors::supervisor::ActorGraph;

use crate::security::limits::Limits;
use crate::store::Store;

/// The content type of the Prometheus text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The `route` label of a request the router matched to no route.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// How long a scrape waits for the registry; a busy actor leaves its gauges at their last values
/// rather than holding the scraper.
const ACTOR_TIMEOUT: Duration = Duration::from_secs(2);

/// What a scrape reads besides the metrics themselves.
#[derive(Clone)]
pub struct Scrape {
    /// The actor graph (its metrics, the queue and the registry).
    pub graph: ActorGraph,
    /// The store, for the pool gauges.
    pub store: Store,
    /// The limits, for the active IP blocks.
    pub limits: Arc<Limits>,
    /// The clock blocks are judged on.
    pub clock: SharedClock,
    /// The re-encryption job's progress.
    pub reencrypt: Arc<beepmyphone_actors::reencrypt::Progress>,
}

impl Scrape {
    /// Refreshes the state gauges and encodes everything.
    pub async fn encode(&self) -> Vec<u8> {
        self.refresh().await;
        self.graph.metrics.encode()
    }

    /// Sets the gauges that describe other components' state from their figures.
    pub async fn refresh(&self) {
        let metrics = &self.graph.metrics;
        // The queue gauges are kept by the device queues themselves: nothing to ask for.
        if let Ok(Ok(stats)) =
            tokio::time::timeout(ACTOR_TIMEOUT, self.graph.registry.send(GetRegistryStats)).await
        {
            metrics.sockets_open.set(gauge(stats.sockets));
            metrics.devices_online.set(gauge(stats.devices));
        }
        let pool = self.store.stats();
        let pool_gauge = &metrics.db_pool_connections;
        pool_gauge
            .with_label_values(&["idle"])
            .set(gauge(pool.idle as usize));
        pool_gauge
            .with_label_values(&["in_use"])
            .set(gauge(pool.in_use as usize));
        metrics.ip_blocks_active.set(gauge(
            self.limits.limiter.active_blocks(self.clock.now_ms()),
        ));
        let progress = self.reencrypt.snapshot();
        let rows = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        metrics
            .reencrypt_rows_remaining
            .set(rows(progress.remaining));
        metrics.reencrypt_rows_moved.set(rows(progress.moved));
        metrics.reencrypt_rows_failed.set(rows(progress.failed));
    }

    /// Refreshes the state gauges every `every` of the clock, for exports that read the
    /// registry without scraping (OTLP). Runs until aborted.
    pub fn refresh_every(self, every: Duration) -> actix_rt::task::JoinHandle<()> {
        actix_rt::spawn(async move {
            let mut ticks = self.clock.interval(every);
            while futures_util::StreamExt::next(&mut ticks).await.is_some() {
                self.refresh().await;
            }
        })
    }

    /// The response to a scrape.
    pub async fn response(&self) -> HttpResponse {
        HttpResponse::Ok()
            .content_type(CONTENT_TYPE)
            .body(self.encode().await)
    }
}

fn gauge(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

async fn plain(scrape: web::Data<Scrape>) -> HttpResponse {
    scrape.response().await
}

/// Serves `GET /metrics` (and nothing else) without a token on `listener`: for a scraper on the
/// same host, bound to a loopback address by the operator (`metrics.listen`). One worker; it
/// stops with the relay.
pub fn listen(listener: TcpListener, scrape: Scrape) -> std::io::Result<Server> {
    let scrape = web::Data::new(scrape);
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(scrape.clone())
            .route("/metrics", web::get().to(plain))
            .default_service(web::to(HttpResponse::NotFound))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)?
    .run())
}
