//! Supervision: starts the actor graph under actix supervision.
//!
//! [`start_graph`] builds the queue, batcher, registry and the [`HealthSupervisor`] once, each
//! under an actix `Supervisor` (a panicking handler stops its actor through
//! [`crate::guard::guarded`], and the supervisor restarts it with the same address; each restart
//! counts into `beepmyphone_actor_restarts_total{actor}`). The health supervisor itself, its
//! messages and its report are in [`crate::health`] (re-exported here).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use actix::prelude::*;

use crate::batcher::{Batcher, BatcherConfig};
use crate::clock::SharedClock;
use crate::feed::Feed;
pub use crate::health::{
    Check, ComponentHealth, HealthConfig, HealthReport, HealthSupervisor, Watched,
};
use crate::metrics::Metrics;
use crate::ports::{ClusterPort, QueueStore};
pub use crate::ports::{Finding, Probe, Status};
use crate::queue::{NotificationQueue, QueueConfig};
use crate::registry::SessionRegistry;

/// Everything [`start_graph`] needs.
pub struct GraphSettings {
    /// Queue tunables.
    pub queue: QueueConfig,
    /// Batcher tunables.
    pub batcher: BatcherConfig,
    /// Health probing: period (and cache), timeout, queue-lag thresholds.
    pub health: HealthConfig,
    /// The other relays sharing the store, if any (see [`crate::queue`]).
    pub cluster: Option<Arc<dyn ClusterPort>>,
}

/// The started actor graph: every address is built once here and handed to whoever needs it.
#[derive(Clone)]
pub struct ActorGraph {
    /// The notification queue.
    pub queue: Addr<NotificationQueue>,
    /// The session registry.
    pub registry: Addr<SessionRegistry>,
    /// The batcher.
    pub batcher: Addr<Batcher>,
    /// The health supervisor.
    pub health: Addr<HealthSupervisor>,
    /// The metrics every actor records into.
    pub metrics: Arc<Metrics>,
    /// The activity feed the queue reports into (handlers add pairings and revocations).
    pub feed: Feed,
}

/// Starts the graph on the current arbiter, each actor under supervision.
pub fn start_graph(
    settings: GraphSettings,
    store: Arc<dyn QueueStore>,
    probes: Vec<Arc<dyn Probe>>,
    clock: SharedClock,
    metrics: Arc<Metrics>,
    log: &slog::Logger,
) -> ActorGraph {
    // The queue, batcher and registry form a cycle (queue → batcher → registry → queue); the
    // queue's context exists before the queue itself, which lets the other two take its address.
    let feed = Feed::default();
    let queue_feed = feed.clone();
    let others = Rc::new(RefCell::new(None));
    let slot = others.clone();
    let restarts = |actor: &str| metrics.actor_restarts.with_label_values(&[actor]);
    let (registry_restarts, batcher_restarts) = (restarts("registry"), restarts("batcher"));
    let queue = {
        let (clock, log, queue_metrics) = (clock.clone(), log.clone(), metrics.clone());
        Supervisor::start(move |ctx: &mut Context<NotificationQueue>| {
            let queue_addr = ctx.address();
            let registry_log = log.new(slog::o!("actor" => "registry"));
            let registry = Supervisor::start(move |_| {
                SessionRegistry::new(
                    queue_addr.clone().recipient(),
                    queue_addr.recipient(),
                    registry_log,
                )
                .with_restarts(registry_restarts)
            });
            let batcher_registry = registry.clone().recipient();
            let batcher_log = log.new(slog::o!("actor" => "batcher"));
            let batcher = Supervisor::start(move |_| {
                Batcher::new(settings.batcher, batcher_registry, batcher_log)
                    .with_restarts(batcher_restarts)
            });
            let queue = NotificationQueue::new(
                settings.queue,
                store,
                clock,
                batcher.clone().recipient(),
                queue_metrics,
                log.new(slog::o!("actor" => "queue")),
            )
            .with_feed(queue_feed.clone())
            .with_cluster(settings.cluster.clone());
            *slot.borrow_mut() = Some((registry, batcher));
            queue
        })
    };
    // expect: Supervisor::start runs its factory before returning.
    #[allow(clippy::expect_used)]
    let (registry, batcher) = others.borrow_mut().take().expect("the queue factory ran");
    let health = HealthSupervisor::new(
        Watched {
            queue: queue.clone(),
            registry: registry.clone(),
            batcher: batcher.clone(),
        },
        probes,
        clock,
        settings.health,
        metrics.clone(),
        log.new(slog::o!("actor" => "health")),
    )
    .start_supervised();
    ActorGraph {
        queue,
        registry,
        batcher,
        health,
        metrics,
        feed,
    }
}
