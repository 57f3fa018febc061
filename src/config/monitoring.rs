//! The monitoring sections of the settings: `[metrics]`, `[health]`, `[alerts]` and `[memory]`,
//! with their checks and their conversion into the actors' tunables.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use beepmyphone_actors::alerts::AlertConfig;
use beepmyphone_actors::memory::{LeakRule, MemoryConfig};
use beepmyphone_actors::model::DeviceId;

use super::ConfigError;

/// `[metrics]`: Prometheus metrics (docs/operations.md lists them).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSettings {
    /// Whether requests are counted and timed and `GET /metrics` answers (404 when off).
    pub enabled: bool,
    /// A second address serving `GET /metrics` without a token, for a scraper on the same host
    /// (e.g. `127.0.0.1:9464`); empty: none.
    pub listen: String,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: String::new(),
        }
    }
}

/// `[health]`: what `GET /health` probes, how often, and when a component counts as degraded or
/// unhealthy (docs/operations.md explains each component).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthSettings {
    /// Seconds between two probe rounds; a report is reused for as long.
    pub interval_seconds: u64,
    /// Milliseconds one probe may take before its component counts as unhealthy.
    pub probe_timeout_ms: u64,
    /// Free space of the data directory's file system, in percent, below which it is degraded.
    pub disk_degraded_percent: u8,
    /// Free space, in MiB, below which it is degraded (whichever of the two is reached first).
    pub disk_degraded_mib: u64,
    /// Free space, in percent, below which it is unhealthy.
    pub disk_unhealthy_percent: u8,
    /// Free space, in MiB, below which it is unhealthy.
    pub disk_unhealthy_mib: u64,
    /// Seconds the oldest delivery for an online device may wait before the queue is degraded.
    pub queue_lag_degraded_seconds: u64,
    /// Seconds it may wait before the queue is unhealthy.
    pub queue_lag_unhealthy_seconds: u64,
    /// Hours past `auth.key_rotation_days` after which a newest signing key not yet replaced
    /// makes the keys degraded.
    pub key_age_grace_hours: u64,
}

impl Default for HealthSettings {
    fn default() -> Self {
        Self {
            interval_seconds: 30,
            probe_timeout_ms: 5_000,
            disk_degraded_percent: 10,
            disk_degraded_mib: 1_024,
            disk_unhealthy_percent: 1,
            disk_unhealthy_mib: 100,
            queue_lag_degraded_seconds: 30,
            queue_lag_unhealthy_seconds: 300,
            key_age_grace_hours: 24,
        }
    }
}

impl HealthSettings {
    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let h = self;
        let bad = |key: &str, why: &str| Err(ConfigError(format!("health.{key}: {why}")));
        if !(1..=3_600).contains(&h.interval_seconds) {
            return bad("interval_seconds", "must be between 1 and 3600");
        }
        if !(100..=60_000).contains(&h.probe_timeout_ms) {
            return bad("probe_timeout_ms", "must be between 100 and 60000");
        }
        if h.disk_degraded_percent > 100 || h.disk_unhealthy_percent > h.disk_degraded_percent {
            return bad(
                "disk_unhealthy_percent",
                "must not exceed disk_degraded_percent, which must not exceed 100",
            );
        }
        if h.disk_unhealthy_mib > h.disk_degraded_mib {
            return bad("disk_unhealthy_mib", "must not exceed disk_degraded_mib");
        }
        if h.queue_lag_degraded_seconds == 0
            || h.queue_lag_unhealthy_seconds < h.queue_lag_degraded_seconds
        {
            return bad(
                "queue_lag_unhealthy_seconds",
                "must be at least queue_lag_degraded_seconds, which must be at least 1",
            );
        }
        Ok(())
    }

    /// The health supervisor's tunables.
    pub fn config(&self) -> beepmyphone_actors::health::HealthConfig {
        let h = self;
        beepmyphone_actors::health::HealthConfig {
            every: Duration::from_secs(h.interval_seconds),
            probe_timeout: Duration::from_millis(h.probe_timeout_ms),
            queue_lag_degraded: Duration::from_secs(h.queue_lag_degraded_seconds),
            queue_lag_unhealthy: Duration::from_secs(h.queue_lag_unhealthy_seconds),
        }
    }
}

/// `[alerts]`: the alert rules and where alerts go.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertSettings {
    /// Evaluate the rules at all.
    pub enabled: bool,
    /// Seconds between evaluations.
    pub evaluation_interval_seconds: u64,
    /// Minutes between two notices of one alert while it holds.
    pub repeat_interval_minutes: u64,
    /// Seconds the HTTP rules look back over.
    pub window_seconds: u64,
    /// p99 response time above which `http_p99_latency` fires, ms; 0 turns the rule off.
    pub p99_threshold_ms: u64,
    /// Share of 5xx answers (0–1) above which `http_error_rate` fires; 0 turns the rule off.
    pub error_rate_threshold: f64,
    /// Least requests in the window before the HTTP rules judge.
    pub min_requests: u64,
    /// Seconds the oldest delivery an online device waits for may be old before `queue_lag`
    /// fires; 0 turns the rule off.
    pub queue_lag_seconds: u64,
    /// Alert on sustained memory growth (the `[memory]` monitor's verdict).
    pub memory_growth: bool,
    /// Alert when a component reports unhealthy.
    pub component_unhealthy: bool,
    /// An http(s) URL that receives each alert as a JSON POST; empty turns the webhook off.
    pub webhook_url: SecretSetting,
    /// Milliseconds one webhook attempt may take.
    pub webhook_timeout_ms: u64,
    /// Attempts after the first failed one, at most.
    pub webhook_retries: u32,
    /// Milliseconds before the first retry; doubled for each further one.
    pub webhook_backoff_ms: u64,
    /// Devices (`dev_…`) that receive each alert as a notification; empty: none.
    pub notify_devices: Vec<String>,
}

impl Default for AlertSettings {
    fn default() -> Self {
        let rules = AlertConfig::default();
        Self {
            enabled: true,
            evaluation_interval_seconds: rules.evaluation_interval.as_secs(),
            repeat_interval_minutes: rules.repeat_interval.as_secs() / 60,
            window_seconds: rules.window.as_secs(),
            p99_threshold_ms: 500,
            error_rate_threshold: rules.error_rate_threshold,
            min_requests: rules.min_requests,
            queue_lag_seconds: rules.queue_lag_threshold.as_secs(),
            memory_growth: rules.memory_growth,
            component_unhealthy: rules.component_unhealthy,
            webhook_url: SecretSetting::default(),
            webhook_timeout_ms: 5_000,
            webhook_retries: 3,
            webhook_backoff_ms: 1_000,
            notify_devices: Vec::new(),
        }
    }
}

impl AlertSettings {
    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError(format!("alerts.{key}: {why}")));
        if self.evaluation_interval_seconds == 0 {
            return bad("evaluation_interval_seconds", "must be at least 1");
        }
        if !(1..=10_080).contains(&self.repeat_interval_minutes) {
            return bad(
                "repeat_interval_minutes",
                "must be between 1 and 10080 (a week)",
            );
        }
        if self.window_seconds < self.evaluation_interval_seconds {
            return bad(
                "window_seconds",
                "must not be shorter than alerts.evaluation_interval_seconds",
            );
        }
        if !(0.0..=1.0).contains(&self.error_rate_threshold) {
            return bad("error_rate_threshold", "must be between 0 and 1");
        }
        if !self.webhook_url.expose().is_empty()
            && !url::Url::parse(self.webhook_url.expose())
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
        {
            return bad("webhook_url", "must be empty or an http(s) URL");
        }
        if self.webhook_timeout_ms == 0 {
            return bad("webhook_timeout_ms", "must be at least 1");
        }
        if self.webhook_retries > 10 {
            return bad("webhook_retries", "must be at most 10");
        }
        if let Some(device) = self
            .notify_devices
            .iter()
            .find(|d| DeviceId::parse(d).is_none())
        {
            return Err(ConfigError(format!(
                "alerts.notify_devices: {device:?} is not a device id (dev_…)"
            )));
        }
        Ok(())
    }

    /// The rules, for the actor.
    pub fn rules(&self) -> AlertConfig {
        AlertConfig {
            evaluation_interval: Duration::from_secs(self.evaluation_interval_seconds),
            repeat_interval: Duration::from_secs(self.repeat_interval_minutes * 60),
            window: Duration::from_secs(self.window_seconds),
            p99_threshold: Duration::from_millis(self.p99_threshold_ms),
            min_requests: self.min_requests,
            error_rate_threshold: self.error_rate_threshold,
            queue_lag_threshold: Duration::from_secs(self.queue_lag_seconds),
            memory_growth: self.memory_growth,
            component_unhealthy: self.component_unhealthy,
        }
    }
}

/// `[memory]`: the memory monitor.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemorySettings {
    /// Sample and export the process's memory.
    pub enabled: bool,
    /// Seconds between samples.
    pub sample_interval_seconds: u64,
    /// Samples in the sliding window that judges growth.
    pub window_samples: usize,
    /// Least growth over the window, MiB.
    pub min_growth_mib: u64,
    /// Least growth over the window, percent of its first sample.
    pub min_growth_percent: f64,
    /// Least steps of the window that went up.
    pub min_rising_steps: usize,
    /// Largest share of the growth one step may carry, percent (a one-off step is not a leak).
    pub max_step_share_percent: f64,
}

impl Default for MemorySettings {
    fn default() -> Self {
        let rule = LeakRule::default();
        Self {
            enabled: true,
            sample_interval_seconds: 5,
            window_samples: rule.window_samples,
            min_growth_mib: rule.min_growth_bytes >> 20,
            min_growth_percent: rule.min_growth_percent,
            min_rising_steps: rule.min_rising_steps,
            max_step_share_percent: rule.max_step_share_percent,
        }
    }
}

impl MemorySettings {
    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError(format!("memory.{key}: {why}")));
        if self.sample_interval_seconds == 0 {
            return bad("sample_interval_seconds", "must be at least 1");
        }
        if !(3..=1_000).contains(&self.window_samples) {
            return bad("window_samples", "must be between 3 and 1000");
        }
        if self.min_rising_steps == 0 || self.min_rising_steps >= self.window_samples {
            return bad(
                "min_rising_steps",
                "must be at least 1 and below memory.window_samples",
            );
        }
        if !(self.min_growth_percent >= 0.0 && self.min_growth_percent.is_finite()) {
            return bad("min_growth_percent", "must be 0 or more");
        }
        if !(self.max_step_share_percent > 0.0 && self.max_step_share_percent <= 100.0) {
            return bad("max_step_share_percent", "must be above 0 and at most 100");
        }
        Ok(())
    }

    /// The actor's tunables.
    pub fn config(&self) -> MemoryConfig {
        MemoryConfig {
            interval: Duration::from_secs(self.sample_interval_seconds),
            rule: LeakRule {
                window_samples: self.window_samples,
                min_growth_bytes: self.min_growth_mib << 20,
                min_growth_percent: self.min_growth_percent,
                min_rising_steps: self.min_rising_steps,
                max_step_share_percent: self.max_step_share_percent,
            },
        }
    }
}

/// `[otlp]`: optional export of request spans and the Prometheus figures over OTLP/HTTP
/// (protobuf) to a collector, DataDog or New Relic (docs/operations.md, "OTLP export").
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OtlpSettings {
    /// The collector's base URL (`http://127.0.0.1:4318`); `/v1/traces` and `/v1/metrics` are
    /// appended. Empty: no export at all.
    pub endpoint: String,
    /// The `service.name` resource attribute.
    pub service_name: String,
    /// Milliseconds between two exports (queued spans, and a snapshot of every metric).
    pub export_interval_ms: u64,
    /// Milliseconds one export request may take.
    pub timeout_ms: u64,
    /// Extra request headers, `name=value,name2=value2` (an API key); never logged. Also from
    /// the environment as `BEEP__OTLP__HEADERS`.
    pub headers: OtlpHeaders,
    /// Spans held for the next export; beyond it new spans are dropped (and counted).
    pub max_queued_spans: usize,
}

impl Default for OtlpSettings {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            service_name: "beepmyphone".into(),
            export_interval_ms: 10_000,
            timeout_ms: 5_000,
            headers: OtlpHeaders::default(),
            max_queued_spans: 2_048,
        }
    }
}

/// `otlp.headers`: held as a secret (it usually carries an API key), `[REDACTED]` in `Debug`
/// and when the settings are serialized.
#[derive(Clone)]
pub struct OtlpHeaders(pub secrecy::SecretString);

impl Default for OtlpHeaders {
    fn default() -> Self {
        Self("".into())
    }
}

impl OtlpHeaders {
    /// The `(name, value)` pairs, or why the value does not parse.
    pub fn pairs(&self) -> Result<Vec<(String, String)>, String> {
        use secrecy::ExposeSecret;
        let raw = self.0.expose_secret();
        let mut pairs = Vec::new();
        for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((name, value)) = part.split_once('=') else {
                return Err("each header must be name=value".into());
            };
            let (name, value) = (name.trim(), value.trim());
            if actix_web::http::header::HeaderName::from_bytes(name.as_bytes()).is_err()
                || actix_web::http::header::HeaderValue::from_str(value).is_err()
            {
                // The value is not repeated: it is usually a key.
                return Err(format!("header {name:?} is not a valid HTTP header"));
            }
            pairs.push((name.to_ascii_lowercase(), value.to_owned()));
        }
        Ok(pairs)
    }
}

impl std::fmt::Debug for OtlpHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[REDACTED]")
    }
}

impl Serialize for OtlpHeaders {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use secrecy::ExposeSecret;
        s.serialize_str(if self.0.expose_secret().is_empty() {
            ""
        } else {
            "[REDACTED]"
        })
    }
}

impl<'de> Deserialize<'de> for OtlpHeaders {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Ok(Self(secrecy::SecretString::from(raw)))
    }
}

impl OtlpSettings {
    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let o = self;
        let bad = |key: &str, why: &str| Err(ConfigError(format!("otlp.{key}: {why}")));
        if !o.endpoint.is_empty() {
            match url::Url::parse(&o.endpoint) {
                Ok(url)
                    if matches!(url.scheme(), "http" | "https")
                        && url.host().is_some()
                        && url.username().is_empty()
                        && url.password().is_none()
                        && url.query().is_none() => {}
                _ => {
                    return bad(
                        "endpoint",
                        "must be an http(s) URL such as http://127.0.0.1:4318 (no credentials or \
                         query: put keys in otlp.headers), or empty",
                    )
                }
            }
        }
        if o.service_name.is_empty() {
            return bad("service_name", "must not be empty");
        }
        if !(100..=3_600_000).contains(&o.export_interval_ms) {
            return bad("export_interval_ms", "must be between 100 and 3600000");
        }
        if !(100..=60_000).contains(&o.timeout_ms) {
            return bad("timeout_ms", "must be between 100 and 60000");
        }
        if !(1..=1_000_000).contains(&o.max_queued_spans) {
            return bad("max_queued_spans", "must be between 1 and 1000000");
        }
        if let Err(why) = o.headers.pairs() {
            return bad("headers", &why);
        }
        Ok(())
    }
}

/// A setting that may carry a secret (a chat webhook's URL holds its key in the path): kept in
/// a `SecretString`, `[REDACTED]` in `Debug` and when the settings are serialized.
#[derive(Clone, Default)]
pub struct SecretSetting(secrecy::SecretString);

impl SecretSetting {
    /// The value.
    pub fn expose(&self) -> &str {
        secrecy::ExposeSecret::expose_secret(&self.0)
    }
}

impl From<String> for SecretSetting {
    fn from(value: String) -> Self {
        Self(secrecy::SecretString::from(value))
    }
}

impl std::fmt::Debug for SecretSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[REDACTED]")
    }
}

impl Serialize for SecretSetting {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if self.expose().is_empty() {
            ""
        } else {
            "[REDACTED]"
        })
    }
}

impl<'de> Deserialize<'de> for SecretSetting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Self::from(String::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_webhook_url_is_never_printed_nor_serialized() {
        let settings = AlertSettings {
            webhook_url: "https://hooks.example.com/services/T0/B0/s3cr3tpath"
                .to_owned()
                .into(),
            ..AlertSettings::default()
        };
        assert!(settings.validate().is_ok());
        assert_eq!(
            settings.webhook_url.expose(),
            "https://hooks.example.com/services/T0/B0/s3cr3tpath"
        );
        let printed = format!("{settings:?}");
        let serialized = serde_json::to_string(&settings).unwrap();
        for shown in [printed, serialized] {
            assert!(!shown.contains("s3cr3tpath"), "{shown}");
            assert!(shown.contains("[REDACTED]"), "{shown}");
        }
        let empty = serde_json::to_string(&AlertSettings::default()).unwrap();
        assert!(empty.contains(r#""webhook_url":"""#), "{empty}");
    }
}
