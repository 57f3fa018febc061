//! The health supervisor: starts the actor graph under actix supervision and answers health checks.
//!
//! [`start_graph`] builds the queue, batcher and registry once, each under an actix `Supervisor`
//! (a panicking handler stops its actor through [`crate::guard::guarded`], and the supervisor
//! restarts it with the same address). The [`HealthSupervisor`] actor probes each actor and every
//! external [`Probe`] (the store, Redis; the port is declared in [`crate::ports`]) and caches the report for a while.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use serde::Serialize;

use crate::batcher::{Batcher, BatcherConfig};
use crate::clock::SharedClock;
use crate::guard::RESTARTS;
use crate::metrics::Metrics;
use crate::ports::QueueStore;
pub use crate::ports::{Probe, Status};
use crate::queue::{GetQueueStats, NotificationQueue, QueueConfig, QueueStats};
use crate::registry::{GetRegistryStats, RegistryStats, SessionRegistry};

/// One component's health.
#[derive(Debug, Clone, Serialize)]
pub struct ComponentHealth {
    /// The component's name.
    pub name: String,
    /// Its state.
    pub status: Status,
    /// What was seen, for operators.
    pub detail: String,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthReport {
    /// The worst component status.
    pub status: Status,
    /// Per component.
    pub components: Vec<ComponentHealth>,
    /// Actor restarts since start.
    pub restarts: u64,
    /// When this report was made, epoch milliseconds.
    pub checked_at: i64,
    /// Queue counts, when the queue answered.
    pub queue: Option<QueueStats>,
    /// Socket counts, when the registry answered.
    pub sockets: Option<RegistryStats>,
}

/// Asks for the health report (cached for `cache_for`).
#[derive(Message, Debug)]
#[rtype(result = "HealthReport")]
pub struct Check {
    /// Ignore the cache.
    pub fresh: bool,
}

/// The health supervisor actor.
pub struct HealthSupervisor {
    queue: Addr<NotificationQueue>,
    registry: Addr<SessionRegistry>,
    batcher: Addr<Batcher>,
    probes: Vec<Arc<dyn Probe>>,
    clock: SharedClock,
    cache_for: Duration,
    cached: Option<HealthReport>,
    metrics: Arc<Metrics>,
}

impl Actor for HealthSupervisor {
    type Context = Context<Self>;
}

impl Handler<Check> for HealthSupervisor {
    type Result = ResponseActFuture<Self, HealthReport>;

    fn handle(&mut self, msg: Check, _ctx: &mut Self::Context) -> Self::Result {
        let now = self.clock.now_ms();
        if let Some(cached) = &self.cached {
            let age = now - cached.checked_at;
            if !msg.fresh
                && age >= 0
                && age < i64::try_from(self.cache_for.as_millis()).unwrap_or(i64::MAX)
            {
                return Box::pin(fut::ready(cached.clone()));
            }
        }
        let queue = self.queue.clone();
        let registry = self.registry.clone();
        let batcher_up = self.batcher.connected();
        let probes = self.probes.clone();
        let timeout = Duration::from_secs(5);
        let work = async move {
            let queue_stats = queue.send(GetQueueStats).timeout(timeout).await.ok();
            let registry_stats = registry.send(GetRegistryStats).timeout(timeout).await.ok();
            let mut components = vec![
                actor_health("queue", queue_stats.is_some()),
                actor_health("registry", registry_stats.is_some()),
                actor_health("batcher", batcher_up),
            ];
            for probe in probes {
                let name = probe.name().to_owned();
                let checked = tokio::time::timeout(
                    timeout,
                    tokio::task::spawn_blocking(move || probe.check()),
                )
                .await;
                let (status, detail) = match checked {
                    Ok(Ok(result)) => result,
                    Ok(Err(e)) => (Status::Unhealthy, format!("probe failed: {e}")),
                    Err(_) => (Status::Unhealthy, "probe timed out".to_owned()),
                };
                components.push(ComponentHealth {
                    name,
                    status,
                    detail,
                });
            }
            (components, queue_stats, registry_stats)
        };
        Box::pin(
            work.into_actor(self)
                .map(move |(components, queue, sockets), act, _| {
                    let status = components
                        .iter()
                        .map(|c| c.status)
                        .max_by_key(|s| *s as u8)
                        .unwrap_or(Status::Healthy);
                    let report = HealthReport {
                        status,
                        components,
                        restarts: RESTARTS.load(Ordering::Relaxed),
                        checked_at: now,
                        queue,
                        sockets,
                    };
                    for component in &report.components {
                        act.metrics
                            .component_healthy
                            .with_label_values(&[&component.name])
                            .set(i64::from(component.status == Status::Healthy));
                    }
                    act.cached = Some(report.clone());
                    report
                }),
        )
    }
}

fn actor_health(name: &str, answered: bool) -> ComponentHealth {
    let (status, detail) = if answered {
        (Status::Healthy, "answering".to_owned())
    } else {
        (Status::Unhealthy, "not answering".to_owned())
    };
    ComponentHealth {
        name: name.to_owned(),
        status,
        detail,
    }
}

/// Everything [`start_graph`] needs.
pub struct GraphSettings {
    /// Queue tunables.
    pub queue: QueueConfig,
    /// Batcher tunables.
    pub batcher: BatcherConfig,
    /// How long a health report is reused.
    pub health_cache: Duration,
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
    let others = Rc::new(RefCell::new(None));
    let slot = others.clone();
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
            });
            let batcher_registry = registry.clone().recipient();
            let batcher_log = log.new(slog::o!("actor" => "batcher"));
            let batcher = Supervisor::start(move |_| {
                Batcher::new(settings.batcher, batcher_registry, batcher_log)
            });
            let queue = NotificationQueue::new(
                settings.queue,
                store,
                clock,
                batcher.clone().recipient(),
                queue_metrics,
                log.new(slog::o!("actor" => "queue")),
            );
            *slot.borrow_mut() = Some((registry, batcher));
            queue
        })
    };
    // expect: Supervisor::start runs its factory before returning.
    #[allow(clippy::expect_used)]
    let (registry, batcher) = others.borrow_mut().take().expect("the queue factory ran");
    let health = HealthSupervisor {
        queue: queue.clone(),
        registry: registry.clone(),
        batcher: batcher.clone(),
        probes,
        clock,
        cache_for: settings.health_cache,
        cached: None,
        metrics: metrics.clone(),
    }
    .start();
    ActorGraph {
        queue,
        registry,
        batcher,
        health,
        metrics,
    }
}
