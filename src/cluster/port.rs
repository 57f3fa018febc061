//! [`Presence`]: the queue's [`ClusterPort`] over Redis. A device connecting here is announced
//! (`presence:<device>` → this node) before its backlog is read; a delivery committed here for a
//! device held by another relay wakes that relay on its own channel.

use std::collections::HashMap;

use std::sync::Arc;

use beepmyphone_actors::metrics::Metrics;
use beepmyphone_actors::model::DeviceId;
use beepmyphone_actors::ports::{ClusterFuture, ClusterPort, Deliveries};

use super::Event;
use crate::redis::{node_channel, Redis};

/// The queue's port onto the cluster (see the module documentation).
pub struct Presence {
    node: String,
    redis: Redis,
    ttl_ms: u64,
    metrics: Arc<Metrics>,
    log: slog::Logger,
}

impl Presence {
    /// This relay (`node`) over `redis`; an announcement lasts `ttl_ms` unless a heartbeat renews
    /// it. Counts the wake-ups it sends in `metrics`.
    pub fn new(
        node: String,
        redis: Redis,
        ttl_ms: u64,
        metrics: Arc<Metrics>,
        log: slog::Logger,
    ) -> Self {
        Self {
            node,
            redis,
            ttl_ms,
            metrics,
            log,
        }
    }
}

impl ClusterPort for Presence {
    /// Announces the device. If Redis fails, the device is served here all the same; the other
    /// relays find it at the next heartbeat, and what they published meanwhile arrives with the
    /// next reconcile.
    fn online(&self, device: &DeviceId) -> ClusterFuture {
        let (redis, node, ttl, log) = (
            self.redis.clone(),
            self.node.clone(),
            self.ttl_ms,
            self.log.clone(),
        );
        let device = device.clone();
        Box::pin(async move {
            if let Err(e) = redis.announce(device.as_str(), &node, ttl).await {
                slog::warn!(log, "could not announce a device to the other relays";
                    "device" => %device, "error" => %e);
            }
        })
    }

    fn offline(&self, device: &DeviceId) {
        let (redis, node, log) = (self.redis.clone(), self.node.clone(), self.log.clone());
        let device = device.clone();
        actix_rt::spawn(async move {
            if let Err(e) = redis.withdraw(device.as_str(), &node).await {
                slog::debug!(log, "could not withdraw a device's presence (it expires)";
                    "device" => %device, "error" => %e);
            }
        });
    }

    /// Wakes the relays holding these devices. A failure is logged: those relays get the
    /// notifications at their next reconcile, or when the device reconnects.
    fn published(&self, deliveries: Deliveries) {
        let (redis, node, log) = (self.redis.clone(), self.node.clone(), self.log.clone());
        let sent = self.metrics.cluster_wakes.with_label_values(&["sent"]);
        actix_rt::spawn(async move {
            if let Err(e) = wake(&redis, &node, deliveries, &sent).await {
                slog::warn!(log, "could not wake the relays holding a notification's devices";
                    "error" => %e);
            }
        });
    }
}

/// Looks up who holds each device and publishes one wake-up per holding relay.
async fn wake(
    redis: &Redis,
    node: &str,
    deliveries: Deliveries,
    sent: &prometheus::IntCounter,
) -> Result<(), crate::redis::RedisError> {
    let devices: Vec<&str> = deliveries.iter().map(|(d, _)| d.as_str()).collect();
    let holders = redis.holders(&devices).await?;
    let mut by_node: HashMap<String, Vec<(String, Vec<i64>)>> = HashMap::new();
    for ((device, seqs), holder) in deliveries.iter().zip(holders) {
        match holder {
            Some(holder) if holder != node => by_node
                .entry(holder)
                .or_default()
                .push((device.to_string(), seqs.clone())),
            _ => {}
        }
    }
    for (holder, deliveries) in by_node {
        let event = Event::Wake {
            from: node.to_owned(),
            deliveries,
        };
        let payload = serde_json::to_vec(&event).unwrap_or_default();
        redis.publish(&node_channel(&holder), &payload).await?;
        sent.inc();
    }
    Ok(())
}
