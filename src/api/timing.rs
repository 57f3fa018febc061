//! The timing middleware: every request is counted and timed in
//! `beepmyphone_http_requests_total{route, method, status}` and
//! `beepmyphone_http_request_duration_seconds{route, method}`. The route is the pattern the
//! request matched (`/api/v1/devices/{id}`), never the raw path, and `unmatched` for a path no
//! route knows; methods outside the standard set are `other`. So a client cannot grow the label
//! sets. It runs outermost, so rate-limited, unauthenticated and failed requests count too; its
//! own cost is two clock reads and two label lookups (measured in docs/benchmarks.md).

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, Error};

use beepmyphone_actors::metrics::Metrics;

use crate::state::AppState;

pub use crate::monitoring::metrics::UNMATCHED_ROUTE as UNMATCHED;

/// Counts and times the request (`actix_web::middleware::from_fn`).
pub async fn record_request(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let started = Instant::now();
    let metrics = req
        .app_data::<web::Data<AppState>>()
        .map(|state| state.graph.metrics.clone());
    let method = method_label(req.method());
    let result = next.call(req).await;
    if let Some(metrics) = metrics {
        let (route, status) = match &result {
            Ok(res) => (res.request().match_pattern(), res.status()),
            Err(e) => (None, e.as_response_error().status_code()),
        };
        record(
            &metrics,
            route.as_deref().unwrap_or(UNMATCHED),
            method,
            status.as_str(),
            started.elapsed().as_secs_f64(),
        );
    }
    result
}

/// Records one answered request.
pub fn record(metrics: &Metrics, route: &str, method: &str, status: &str, seconds: f64) {
    metrics
        .http_requests
        .with_label_values(&[route, method, status])
        .inc();
    metrics
        .http_duration
        .with_label_values(&[route, method])
        .observe(seconds);
}

/// The `method` label of a request: the standard methods by name, any other as `other`.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_methods_share_one_label() {
        assert_eq!(method_label(&Method::GET), "GET");
        let odd = Method::from_bytes(b"BREW").unwrap();
        assert_eq!(method_label(&odd), "other");
    }

    #[test]
    fn records_by_route_method_and_status() {
        let metrics = Metrics::new("0", "x");
        record(&metrics, "/api/v1/devices/{id}", "GET", "404", 0.000_3);
        record(&metrics, "/api/v1/devices/{id}", "GET", "404", 0.000_2);
        let counter =
            metrics
                .http_requests
                .with_label_values(&["/api/v1/devices/{id}", "GET", "404"]);
        assert_eq!(counter.get(), 2);
        let histogram = metrics
            .http_duration
            .with_label_values(&["/api/v1/devices/{id}", "GET"]);
        assert_eq!(histogram.get_sample_count(), 2);
    }
}
