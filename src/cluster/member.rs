//! [`Member`]: this relay's membership of the cluster. It listens to the shared channel (kicks,
//! and when clustered device changes) and to its own (wake-ups), subscribing again after a pause
//! growing from 1 s to 30 s whenever the connection is lost; when clustered it also beats
//! (renewing its own and its devices' presence) and has the queue reconcile with the store
//! periodically and after every new subscription.

use std::time::Duration;

use actix::prelude::*;

use std::sync::Arc;

use beepmyphone_actors::clock::SharedClock;
use beepmyphone_actors::metrics::Metrics;
use beepmyphone_actors::model::DeviceId;
use beepmyphone_actors::queue::{NotificationQueue, Reconcile, RemoveDevice, UpsertDevice, Wake};
use beepmyphone_actors::registry::{Kick, OnlineDevices, SessionRegistry};

use super::{Cluster, Event, NodeView, CHANNEL};
use crate::redis::{node_channel, Redis};
use crate::store::{devices, Store};

/// The longest pause between two subscriptions.
const MAX_PAUSE: Duration = Duration::from_secs(30);

/// This relay's membership (see the module documentation).
pub struct Member {
    cluster: Cluster,
    redis: Redis,
    queue: Addr<NotificationQueue>,
    store: Store,
    clock: SharedClock,
    metrics: Arc<Metrics>,
}

impl Cluster {
    /// Starts this relay's [`Member`] (with Redis; `None` without).
    pub fn join(
        &self,
        queue: Addr<NotificationQueue>,
        store: Store,
        clock: SharedClock,
        metrics: Arc<Metrics>,
    ) -> Option<Addr<Member>> {
        if self.clustered {
            metrics
                .cluster_node_info
                .with_label_values(&[&self.node])
                .set(1);
        }
        let member = Member {
            cluster: self.clone(),
            redis: self.redis.clone()?,
            queue,
            store,
            clock,
            metrics,
        };
        Some(Supervisor::start(move |_| member))
    }
}

impl Member {
    fn registry(&self) -> &Addr<SessionRegistry> {
        &self.cluster.registry
    }

    fn log(&self) -> &slog::Logger {
        &self.cluster.log
    }

    /// Applies one message from a channel.
    fn apply(&self, payload: &[u8], ctx: &mut Context<Self>) {
        let event = match serde_json::from_slice::<Event>(payload) {
            Ok(event) if event.from() == self.cluster.node => return,
            Ok(event) => event,
            Err(e) => {
                slog::debug!(self.log(), "ignored a cluster message"; "error" => %e);
                return;
            }
        };
        let clustered = self.cluster.clustered;
        match event {
            Event::Kick {
                device,
                code,
                reason,
                ..
            } => match DeviceId::parse(&device) {
                Some(device) => self.registry().do_send(Kick {
                    device,
                    code,
                    reason,
                }),
                None => {
                    slog::warn!(self.log(), "a cluster kick names no device"; "device" => device)
                }
            },
            Event::Device { device, .. } if clustered => match DeviceId::parse(&device) {
                Some(device) => self.reread(device, ctx),
                None => {
                    slog::warn!(self.log(), "a device change names no device"; "device" => device)
                }
            },
            Event::Wake { deliveries, .. } if clustered => {
                let deliveries = deliveries
                    .into_iter()
                    .filter_map(|(device, seqs)| Some((DeviceId::parse(&device)?, seqs)))
                    .collect();
                self.metrics
                    .cluster_wakes
                    .with_label_values(&["received"])
                    .inc();
                self.queue.do_send(Wake { deliveries });
            }
            Event::Device { .. } | Event::Wake { .. } => {}
        }
    }

    /// Reads `device` from the store and hands the queue its settings, or its removal.
    fn reread(&self, device: DeviceId, ctx: &mut Context<Self>) {
        let store = self.store.clone();
        let id = device.to_string();
        let read = async move {
            let cipher = store.cipher()?.clone();
            store
                .run(move |conn| {
                    devices::get(conn, &cipher, &id)?
                        .map(|row| row.policy())
                        .transpose()
                })
                .await
        };
        ctx.spawn(read.into_actor(self).map(move |found, act, _| match found {
            Ok(Some(policy)) => act.queue.do_send(UpsertDevice { device, policy }),
            Ok(None) => act.queue.do_send(RemoveDevice { device }),
            Err(e) => slog::warn!(act.log(), "could not read a changed device; it applies here after a restart";
                "device" => %device, "error" => %e),
        }));
    }

    /// Renews this relay's presence and its devices'.
    fn beat(&self, ctx: &mut Context<Self>) {
        let (registry, redis) = (self.registry().clone(), self.redis.clone());
        let node = self.cluster.node.clone();
        let ttl =
            u64::try_from(self.cluster.settings.presence_ttl().as_millis()).unwrap_or(u64::MAX);
        let now = self.clock.now_ms();
        let log = self.log().clone();
        let nodes = self.metrics.cluster_nodes.clone();
        ctx.spawn(
            async move {
                let Ok(online) = registry.send(OnlineDevices).await else {
                    return;
                };
                let devices: Vec<String> = online.iter().map(ToString::to_string).collect();
                let summary = NodeView {
                    id: String::new(),
                    devices: devices.len(),
                    heartbeat_at: now,
                };
                let summary = serde_json::to_vec(&summary).unwrap_or_default();
                if let Err(e) = redis.heartbeat(&node, &devices, &summary, now, ttl).await {
                    slog::warn!(log, "cluster heartbeat failed"; "error" => %e);
                    return;
                }
                if let Ok(seen) = redis.nodes(now, ttl).await {
                    nodes.set(i64::try_from(seen.len()).unwrap_or(i64::MAX));
                }
            }
            .into_actor(self),
        );
    }
}

impl Actor for Member {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let redis = self.redis.clone();
        let log = self.log().clone();
        let me = ctx.address();
        let mut channels = vec![CHANNEL.to_owned()];
        if self.cluster.clustered {
            channels.push(node_channel(&self.cluster.node));
            self.beat(ctx);
            ctx.run_interval(self.cluster.settings.heartbeat(), |act, ctx| act.beat(ctx));
            if let Some(every) = self.cluster.settings.reconcile() {
                ctx.run_interval(every, |act, _| act.queue.do_send(Reconcile));
            }
        }
        ctx.spawn(
            async move {
                let names: Vec<&str> = channels.iter().map(String::as_str).collect();
                let mut pause = Duration::from_secs(1);
                loop {
                    match redis.subscribe(&names).await {
                        Ok(messages) => {
                            slog::info!(log, "listening to the other relays");
                            me.do_send(Subscribed);
                            pause = Duration::from_secs(1);
                            let mut messages = std::pin::pin!(messages);
                            while let Some(payload) =
                                futures_util::StreamExt::next(&mut messages).await
                            {
                                me.do_send(Payload(payload));
                            }
                            slog::warn!(log, "lost the cluster channel; subscribing again");
                        }
                        Err(e) => {
                            slog::warn!(log, "cannot subscribe to the cluster channel";
                                "error" => %e, "retry_in_ms" => pause.as_millis() as u64);
                        }
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_PAUSE);
                }
            }
            .into_actor(self),
        );
    }
}

impl Supervised for Member {}

/// A payload from a channel.
#[derive(actix::Message)]
#[rtype(result = "()")]
struct Payload(Vec<u8>);

impl Handler<Payload> for Member {
    type Result = ();

    fn handle(&mut self, msg: Payload, ctx: &mut Self::Context) {
        self.apply(&msg.0, ctx);
    }
}

/// The subscription is (again) in place: what was published while it was not may be missing.
#[derive(actix::Message)]
#[rtype(result = "()")]
struct Subscribed;

impl Handler<Subscribed> for Member {
    type Result = ();

    fn handle(&mut self, _msg: Subscribed, ctx: &mut Self::Context) {
        if self.cluster.clustered {
            self.queue.do_send(Reconcile);
            // The presence may have been lost with Redis: renew it now, not at the next beat.
            self.beat(ctx);
        }
    }
}
