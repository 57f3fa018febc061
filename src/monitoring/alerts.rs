//! The alert settings (`[alerts]`), the two channels the binary provides, and [`start`], which
//! starts the [`AlertManager`] actor with them.
//!
//! - [`WebhookChannel`]: a JSON POST of [`WebhookPayload`] to `alerts.webhook_url`, over HTTP/1.1
//!   with a timeout, retried with exponential backoff a bounded number of times; each delivery
//!   runs as its own task, so the manager never waits on it.
//! - [`RelayChannel`]: a notification through the relay's own queue to `alerts.notify_devices`,
//!   `critical` when an alert fires and `high` when it resolves.
//!
//! The log channel, always on, is in the actors crate (`beepmyphone_actors::alerts::LogChannel`).

use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr};
use serde::{Deserialize, Serialize};

use beepmyphone_actors::alerts::AlertManager;
use beepmyphone_actors::clock::SharedClock;
use beepmyphone_actors::model::{rfc3339, DeviceId, NotificationId, NotificationRecord, Priority};
use beepmyphone_actors::ports::{AlertChannel, AlertEvent, AlertState};
use beepmyphone_actors::queue::{Enqueue, NewNotification, NotificationQueue, Targets};
use beepmyphone_actors::supervisor::ActorGraph;

use crate::config::AlertSettings;

/// How long the relay's alert notifications stay deliverable.
const NOTIFICATION_TTL_MS: i64 = 24 * 3_600 * 1_000;

/// The body of a webhook POST.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookPayload {
    /// The rule's name.
    pub alert: String,
    /// `firing` or `resolved`.
    pub state: String,
    /// One line for a human.
    pub summary: String,
    /// The measured value, in the rule's unit.
    pub value: f64,
    /// The rule's threshold, in the same unit.
    pub threshold: f64,
    /// When it was decided, RFC 3339 UTC.
    pub at: String,
}

impl WebhookPayload {
    /// The payload of an event.
    pub fn of(event: &AlertEvent) -> Self {
        Self {
            alert: event.alert.to_owned(),
            state: event.state.as_str().to_owned(),
            summary: event.summary.clone(),
            value: event.value,
            threshold: event.threshold,
            at: rfc3339(event.at_ms),
        }
    }
}

/// POSTs alerts to a webhook.
#[derive(Debug, Clone)]
pub struct WebhookChannel {
    /// Redacted in `Debug`: the URL may carry a secret.
    url: crate::config::SecretSetting,
    timeout: Duration,
    retries: u32,
    backoff: Duration,
    log: slog::Logger,
}

impl WebhookChannel {
    /// A channel to `settings.webhook_url` (which must not be empty).
    pub fn new(settings: &AlertSettings, log: slog::Logger) -> Self {
        // The URL may carry a secret (many chat webhooks do): only its host is logged.
        let host = url::Url::parse(settings.webhook_url.expose())
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_default();
        Self {
            url: settings.webhook_url.clone(),
            timeout: Duration::from_millis(settings.webhook_timeout_ms),
            retries: settings.webhook_retries,
            backoff: Duration::from_millis(settings.webhook_backoff_ms),
            log: log.new(slog::o!("channel" => "webhook", "host" => host)),
        }
    }

    /// Sends one payload: up to `1 + retries` attempts, waiting `backoff`, then twice that, …
    /// between them. Returns whether an attempt got a 2xx.
    pub async fn deliver(&self, payload: &WebhookPayload) -> bool {
        let client = awc::Client::builder()
            // HTTP/1.1 only, like every client of the relay (see src/cli/client.rs, deny.toml).
            .connector(awc::Connector::new().max_http_version(awc::http::Version::HTTP_11))
            .timeout(self.timeout)
            .add_default_header((
                awc::http::header::USER_AGENT,
                concat!("beepmyphone/", env!("CARGO_PKG_VERSION")),
            ))
            .finish();
        let mut wait = self.backoff;
        for attempt in 0..=self.retries {
            if attempt > 0 {
                tokio::time::sleep(wait).await;
                wait = wait.saturating_mul(2);
            }
            match client.post(self.url.expose()).send_json(payload).await {
                Ok(response) if response.status().is_success() => {
                    slog::debug!(self.log, "webhook delivered"; "alert" => &payload.alert, "attempt" => attempt + 1);
                    return true;
                }
                Ok(response) => {
                    slog::warn!(self.log, "webhook refused the alert"; "alert" => &payload.alert, "status" => response.status().as_u16(), "attempt" => attempt + 1);
                }
                Err(e) => {
                    slog::warn!(self.log, "webhook unreachable"; "alert" => &payload.alert, "error" => %e, "attempt" => attempt + 1);
                }
            }
        }
        slog::error!(self.log, "webhook gave up on the alert"; "alert" => &payload.alert, "attempts" => self.retries + 1);
        false
    }
}

impl AlertChannel for WebhookChannel {
    fn name(&self) -> &str {
        "webhook"
    }

    fn send(&self, event: &AlertEvent) {
        let (channel, payload) = (self.clone(), WebhookPayload::of(event));
        actix_rt::spawn(async move {
            channel.deliver(&payload).await;
        });
    }
}

/// Sends alerts as notifications through the relay's own queue.
pub struct RelayChannel {
    queue: Addr<NotificationQueue>,
    devices: Vec<DeviceId>,
    log: slog::Logger,
}

impl RelayChannel {
    /// A channel to `devices` through `queue`.
    pub fn new(queue: Addr<NotificationQueue>, devices: Vec<DeviceId>, log: slog::Logger) -> Self {
        Self {
            queue,
            devices,
            log: log.new(slog::o!("channel" => "relay")),
        }
    }

    /// The notification an event becomes.
    pub fn notification(event: &AlertEvent) -> NotificationRecord {
        let (title, priority) = match event.state {
            AlertState::Firing => (format!("Alert: {}", event.alert), Priority::Critical),
            AlertState::Resolved => (format!("Resolved: {}", event.alert), Priority::High),
        };
        NotificationRecord {
            id: NotificationId::generate(),
            title,
            body: event.summary.chars().take(4_096).collect(),
            app: "beepmyphone".to_owned(),
            priority,
            tags: vec!["alert".to_owned(), event.state.as_str().to_owned()],
            click_url: None,
            created_at: event.at_ms,
            expires_at: event.at_ms + NOTIFICATION_TTL_MS,
            trace_id: None,
            encrypted: None,
        }
    }
}

impl AlertChannel for RelayChannel {
    fn name(&self) -> &str {
        "relay"
    }

    fn send(&self, event: &AlertEvent) {
        let record = Self::notification(event);
        let enqueue = Enqueue {
            items: vec![NewNotification {
                payload: record.device_json(),
                record,
                targets: Targets::devices(self.devices.clone()),
                idempotency_key: None,
            }],
            publisher: "alerts".to_owned(),
        };
        let (queue, log, alert) = (self.queue.clone(), self.log.clone(), event.alert);
        actix_rt::spawn(async move {
            match queue.send(enqueue).await {
                Ok(Ok(_)) => {
                    slog::debug!(log, "alert queued for the operator's devices"; "alert" => alert)
                }
                Ok(Err(e)) => {
                    slog::error!(log, "alert notification refused"; "alert" => alert, "error" => %e)
                }
                Err(e) => {
                    slog::error!(log, "alert notification not queued"; "alert" => alert, "error" => %e)
                }
            }
        });
    }
}

/// Starts the alert manager (when enabled) on the current arbiter with the log, the webhook (when
/// configured) and the relay channel (when devices are listed).
pub fn start(
    settings: &AlertSettings,
    graph: &ActorGraph,
    clock: &SharedClock,
    audit: beepmyphone_actors::audit::AuditAlerts,
    log: &slog::Logger,
) -> Option<Addr<AlertManager>> {
    if !settings.enabled {
        return None;
    }
    let log = log.new(slog::o!("actor" => "alerts"));
    // Every transition is also an audit record.
    let mut channels: Vec<Arc<dyn AlertChannel>> = vec![Arc::new(audit)];
    if !settings.webhook_url.expose().is_empty() {
        channels.push(Arc::new(WebhookChannel::new(settings, log.clone())));
    }
    // Checked by validate(); an id that does not parse is skipped rather than trusted.
    let devices: Vec<DeviceId> = settings
        .notify_devices
        .iter()
        .filter_map(|d| DeviceId::parse(d))
        .collect();
    if !devices.is_empty() {
        channels.push(Arc::new(RelayChannel::new(
            graph.queue.clone(),
            devices,
            log.clone(),
        )));
    }
    Some(
        AlertManager::new(
            settings.rules(),
            graph.metrics.clone(),
            Some(graph.health.clone().recipient()),
            clock.clone(),
            channels,
            log,
        )
        .start(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use actix_web::{web, App, HttpResponse, HttpServer};

    /// A webhook receiver on port 0 that answers `status` and keeps every body.
    async fn receiver(
        status: u16,
    ) -> (
        String,
        Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
        Arc<AtomicUsize>,
    ) {
        let bodies = Arc::new(std::sync::Mutex::new(Vec::new()));
        let hits = Arc::new(AtomicUsize::new(0));
        let (b, h) = (bodies.clone(), hits.clone());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = HttpServer::new(move || {
            let (b, h) = (b.clone(), h.clone());
            App::new().route(
                "/hook",
                web::post().to(move |body: web::Json<serde_json::Value>| {
                    let (b, h) = (b.clone(), h.clone());
                    async move {
                        h.fetch_add(1, Ordering::SeqCst);
                        b.lock().unwrap().push(body.into_inner());
                        HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
                            .finish()
                    }
                }),
            )
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        actix_rt::spawn(server);
        (format!("http://127.0.0.1:{port}/hook"), bodies, hits)
    }

    fn event() -> AlertEvent {
        AlertEvent {
            alert: "queue_lag",
            state: AlertState::Firing,
            summary: "12000 deliveries waiting".into(),
            value: 12_000.0,
            threshold: 10_000.0,
            at_ms: 1_767_225_600_000,
            repeat: false,
        }
    }

    fn channel(url: &str, retries: u32) -> WebhookChannel {
        WebhookChannel::new(
            &AlertSettings {
                webhook_url: url.to_owned().into(),
                webhook_retries: retries,
                webhook_backoff_ms: 1,
                webhook_timeout_ms: 2_000,
                ..AlertSettings::default()
            },
            crate::logging::discard(),
        )
    }

    #[actix_rt::test]
    async fn the_webhook_posts_the_payload() {
        let (url, bodies, hits) = receiver(204).await;
        assert!(
            channel(&url, 3)
                .deliver(&WebhookPayload::of(&event()))
                .await
        );
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        assert_eq!(
            bodies.lock().unwrap()[0],
            serde_json::json!({
                "alert": "queue_lag",
                "state": "firing",
                "summary": "12000 deliveries waiting",
                "value": 12000.0,
                "threshold": 10000.0,
                "at": "2026-01-01T00:00:00.000Z",
            })
        );
    }

    #[actix_rt::test]
    async fn a_failing_webhook_is_retried_then_given_up() {
        let (url, _bodies, hits) = receiver(500).await;
        assert!(
            !channel(&url, 2)
                .deliver(&WebhookPayload::of(&event()))
                .await
        );
        // The first attempt and two retries, no more.
        assert_eq!(hits.load(Ordering::SeqCst), 3);
        // Nobody listening: also bounded, and reported as a failure.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead = format!("http://{}/hook", closed.local_addr().unwrap());
        drop(closed);
        assert!(
            !channel(&dead, 1)
                .deliver(&WebhookPayload::of(&event()))
                .await
        );
    }

    #[test]
    fn settings_validate_and_map_to_the_rules() {
        let settings = AlertSettings::default();
        settings.validate().unwrap();
        assert_eq!(
            settings.rules(),
            beepmyphone_actors::alerts::AlertConfig::default()
        );
        for (tweak, key) in [
            (
                Box::new(|s: &mut AlertSettings| s.webhook_url = "ftp://x".to_owned().into())
                    as Box<dyn Fn(&mut AlertSettings)>,
                "alerts.webhook_url",
            ),
            (
                Box::new(|s: &mut AlertSettings| s.notify_devices = vec!["phone".into()]),
                "alerts.notify_devices",
            ),
            (
                Box::new(|s: &mut AlertSettings| s.error_rate_threshold = 5.0),
                "alerts.error_rate_threshold",
            ),
            (
                Box::new(|s: &mut AlertSettings| s.repeat_interval_minutes = u64::MAX / 30),
                "alerts.repeat_interval_minutes",
            ),
        ] {
            let mut s = AlertSettings::default();
            tweak(&mut s);
            assert!(s.validate().unwrap_err().to_string().contains(key));
        }
    }

    #[test]
    fn alerts_become_critical_notifications_and_resolutions_high() {
        let mut e = event();
        let firing = RelayChannel::notification(&e);
        assert_eq!(firing.priority, Priority::Critical);
        assert_eq!(firing.title, "Alert: queue_lag");
        e.state = AlertState::Resolved;
        let resolved = RelayChannel::notification(&e);
        assert_eq!(resolved.priority, Priority::High);
        assert_eq!(resolved.title, "Resolved: queue_lag");
    }
}
