//! What the relays of a cluster tell each other, over Redis (docs/operations.md, "Several
//! relays").
//!
//! Every relay with Redis closes sockets cluster-wide: a device's sockets are held by whichever
//! relay it connected to, so closing them (its tokens revoked, the device deleted, a refresh
//! token reused) goes to every relay: [`Cluster::kick`] closes this relay's sockets and publishes
//! the kick on the channel `{prefix}cluster`; each relay's [`member::Member`] closes its own.
//!
//! A relay that also stores in PostgreSQL is *clustered*: it shares its devices and deliveries
//! with the other relays on that database. Then
//!
//! - [`port::Presence`] is the queue's [`ClusterPort`](beepmyphone_actors::ports::ClusterPort):
//!   it records in Redis which relay holds each connected device (`presence:<device>`, renewed by
//!   heartbeats, gone three heartbeats after its relay dies) and wakes the holder of a device on
//!   its own channel (`{prefix}node:<node>`) when a notification for it is committed elsewhere;
//! - a pairing, a change or a deletion of a device is published ([`Cluster::device_changed`]) and
//!   every relay reads that device again from the store;
//! - the member beats (its devices' presence and its own, `node:<node>` in the sorted set
//!   `nodes`), reads every connected device's backlog again every `cluster.reconcile_seconds` and
//!   whenever its subscription comes back (what a missed wake-up left behind), and answers
//!   [`Cluster::view`] for `/health`.
//!
//! Without Redis there is one relay, and a kick is only local. Messages are JSON objects with the
//! sending node (`from`, this relay's id, made at start) and a `kind`; a relay ignores its own and
//! kinds it does not know.

use actix::prelude::*;
use serde::{Deserialize, Serialize};

use beepmyphone_actors::model::DeviceId;
use beepmyphone_actors::registry::{Kick, SessionRegistry};

use crate::config::ClusterSettings;
use crate::redis::Redis;

pub mod member;
pub mod port;

/// The channel every relay listens to, under the Redis key prefix.
pub const CHANNEL: &str = "cluster";

/// A message between relays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Event {
    /// Close every socket of `device` (on the shared channel).
    Kick {
        /// The sending relay.
        from: String,
        /// The device.
        device: String,
        /// The close code.
        code: u16,
        /// The close reason.
        reason: String,
    },
    /// `device` was paired, changed or deleted: read it again from the store (clustered relays,
    /// on the shared channel).
    Device {
        /// The sending relay.
        from: String,
        /// The device.
        device: String,
    },
    /// Notifications were committed for devices this relay holds: read them from the store (on
    /// the receiving relay's own channel).
    Wake {
        /// The sending relay.
        from: String,
        /// Device ids and the store sequence numbers of their new notifications.
        deliveries: Vec<(String, Vec<i64>)>,
    },
}

impl Event {
    fn from(&self) -> &str {
        match self {
            Event::Kick { from, .. } | Event::Device { from, .. } | Event::Wake { from, .. } => {
                from
            }
        }
    }
}

/// One relay of the cluster, as `/health` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeView {
    /// Its node id.
    pub id: String,
    /// Devices connected to it at its last heartbeat.
    pub devices: usize,
    /// Its last heartbeat, epoch milliseconds.
    pub heartbeat_at: i64,
}

/// This relay's side of the cluster: its node id, and Redis when there is one.
#[derive(Clone)]
pub struct Cluster {
    node: String,
    redis: Option<Redis>,
    clustered: bool,
    settings: ClusterSettings,
    registry: Addr<SessionRegistry>,
    log: slog::Logger,
}

/// A new node id: `node_<ulid>`.
pub fn new_node_id() -> String {
    format!("node_{}", ulid::Ulid::new())
}

impl Cluster {
    /// This relay (node id `node`) over `redis`, closing sockets through `registry`; `clustered`
    /// when it shares its store with the other relays.
    pub fn new(
        node: String,
        redis: Option<Redis>,
        clustered: bool,
        settings: ClusterSettings,
        registry: Addr<SessionRegistry>,
        log: slog::Logger,
    ) -> Self {
        Self {
            node,
            clustered: clustered && redis.is_some(),
            redis,
            settings,
            registry,
            log,
        }
    }

    /// This relay's node id.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Whether this relay shares its store with others.
    pub fn is_clustered(&self) -> bool {
        self.clustered
    }

    /// Closes every socket of `device`, here and (with Redis) on every other relay. A failed
    /// publish is logged: the other relays' sockets of the device then stay open until their
    /// tokens are next checked (a revoked token is refused on every relay regardless).
    pub fn kick(&self, device: &DeviceId, code: u16, reason: &str) {
        self.registry.do_send(Kick {
            device: device.clone(),
            code,
            reason: reason.to_owned(),
        });
        self.publish(
            Event::Kick {
                from: self.node.clone(),
                device: device.to_string(),
                code,
                reason: reason.to_owned(),
            },
            "could not tell the other relays to close a device's sockets",
        );
    }

    /// Tells the other relays of a cluster that `device` was paired, changed or deleted (after
    /// the store has it). A failed publish is logged: they then learn of it when they restart.
    pub fn device_changed(&self, device: &DeviceId) {
        if self.clustered {
            self.publish(
                Event::Device {
                    from: self.node.clone(),
                    device: device.to_string(),
                },
                "could not tell the other relays of a device change",
            );
        }
    }

    fn publish(&self, event: Event, failure: &'static str) {
        let Some(redis) = self.redis.clone() else {
            return;
        };
        let log = self.log.clone();
        actix_rt::spawn(async move {
            let payload = serde_json::to_vec(&event).unwrap_or_default();
            if let Err(e) = redis.publish(CHANNEL, &payload).await {
                slog::warn!(log, "{}", failure; "error" => %e);
            }
        });
    }

    /// The relays whose heartbeat is recent, when clustered (`None` otherwise).
    pub async fn view(
        &self,
        now_ms: i64,
    ) -> Option<Result<Vec<NodeView>, crate::redis::RedisError>> {
        let redis = self.redis.as_ref().filter(|_| self.clustered)?;
        let ttl = u64::try_from(self.settings.presence_ttl().as_millis()).unwrap_or(u64::MAX);
        Some(redis.nodes(now_ms, ttl).await.map(|nodes| {
            nodes
                .into_iter()
                .filter_map(|(id, summary)| {
                    let mut view: NodeView = serde_json::from_slice(&summary).ok()?;
                    view.id = id;
                    Some(view)
                })
                .collect()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_json_with_their_kind_and_sender() {
        let kick = Event::Kick {
            from: "node_1".into(),
            device: "dev_1".into(),
            code: 4003,
            reason: "device revoked".into(),
        };
        let json = serde_json::to_value(&kick).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"kind": "kick", "from": "node_1", "device": "dev_1",
                "code": 4003, "reason": "device revoked"})
        );
        assert_eq!(serde_json::from_value::<Event>(json).unwrap(), kick);
        let wake = Event::Wake {
            from: "node_2".into(),
            deliveries: vec![("dev_1".into(), vec![3, 4])],
        };
        let json = serde_json::to_value(&wake).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"kind": "wake", "from": "node_2", "deliveries": [["dev_1", [3, 4]]]})
        );
        assert_eq!(wake.from(), "node_2");
        let device: Event =
            serde_json::from_str(r#"{"kind":"device","from":"node_3","device":"dev_9"}"#).unwrap();
        assert_eq!(device.from(), "node_3");
        assert!(serde_json::from_str::<Event>(r#"{"kind":"other"}"#).is_err());
    }
}
