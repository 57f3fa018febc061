//! `[cluster]`: several relays sharing one PostgreSQL and one Redis (docs/operations.md,
//! "Several relays").

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// How the relays of a cluster keep track of each other. A relay is clustered when
/// `storage.url` names PostgreSQL and `redis.url` is set.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSettings {
    /// Seconds between two presence heartbeats; a relay (and its devices) that misses three is
    /// gone for the others.
    pub heartbeat_seconds: u64,
    /// Seconds between two reads of every connected device's backlog from PostgreSQL, which
    /// catch what a missed wake-up left behind; 0: only when the cluster channel comes back.
    pub reconcile_seconds: u64,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            heartbeat_seconds: 5,
            reconcile_seconds: 30,
        }
    }
}

impl ClusterSettings {
    /// Between two heartbeats.
    pub fn heartbeat(&self) -> Duration {
        Duration::from_secs(self.heartbeat_seconds)
    }

    /// How long a relay's presence (its own and its devices') lasts without a heartbeat.
    pub fn presence_ttl(&self) -> Duration {
        self.heartbeat() * 3
    }

    /// Between two reconciling reads, if any.
    pub fn reconcile(&self) -> Option<Duration> {
        (self.reconcile_seconds > 0).then(|| Duration::from_secs(self.reconcile_seconds))
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=3_600).contains(&self.heartbeat_seconds) {
            return Err(ConfigError(
                "cluster.heartbeat_seconds: must be between 1 and 3600".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_outlives_two_missed_heartbeats_and_bad_values_are_refused() {
        let settings = ClusterSettings::default();
        assert_eq!(settings.presence_ttl(), Duration::from_secs(15));
        assert_eq!(settings.reconcile(), Some(Duration::from_secs(30)));
        assert!(settings.validate().is_ok());
        let off = ClusterSettings {
            reconcile_seconds: 0,
            ..settings.clone()
        };
        assert_eq!(off.reconcile(), None);
        for heartbeat_seconds in [0, 3_601] {
            let bad = ClusterSettings {
                heartbeat_seconds,
                ..settings.clone()
            };
            assert!(bad
                .validate()
                .unwrap_err()
                .to_string()
                .contains("cluster.heartbeat_seconds"));
        }
    }
}
