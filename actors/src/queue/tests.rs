//! The queue actor's tests, on an in-memory store and the manual clock.

use super::*;
use crate::metrics::Metrics;
use crate::model::Priority;

use std::sync::Mutex;

use tokio::sync::mpsc;

use crate::clock::{Clock, ManualClock};
use crate::ports::{CommitBatch, InsertOutcome, PendingDelivery, StoreError};

/// An in-memory store: remembers what was committed and serves it back on load.
#[derive(Default)]
struct MemoryStore {
    devices: Mutex<Vec<(DeviceId, DevicePolicy)>>,
    rows: Mutex<Vec<(QueuedNotification, Vec<DeviceId>)>>,
    acked: Mutex<Vec<(i64, DeviceId)>>,
    sent: Mutex<Vec<(i64, DeviceId)>>,
    fail: std::sync::atomic::AtomicBool,
}

impl QueueStore for MemoryStore {
    fn commit(&self, batch: &CommitBatch) -> Result<Vec<InsertOutcome>, StoreError> {
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError("disk full".into()));
        }
        let mut rows = self.rows.lock().unwrap();
        let mut out = Vec::new();
        for op in &batch.inserts {
            let seq = rows.len() as i64 + 1;
            rows.push((
                QueuedNotification {
                    id: op.record.id.clone(),
                    seq,
                    priority: op.record.priority,
                    expires_at: op.record.expires_at,
                    created_at: op.record.created_at,
                    payload: op.record.device_json(),
                    trace_id: op.record.trace_id,
                },
                op.devices.clone(),
            ));
            out.push(InsertOutcome::Inserted { seq });
        }
        self.acked
            .lock()
            .unwrap()
            .extend(batch.acked.iter().map(|c| (c.seq, c.device.clone())));
        self.sent
            .lock()
            .unwrap()
            .extend(batch.sent.iter().map(|c| (c.seq, c.device.clone())));
        Ok(out)
    }

    fn load(&self, now_ms: i64) -> Result<QueueSnapshot, StoreError> {
        Ok(QueueSnapshot {
            devices: self.devices.lock().unwrap().clone(),
            ..self.pending(&[], None, now_ms)?
        })
    }

    fn pending(
        &self,
        only: &[DeviceId],
        seqs: Option<&[i64]>,
        _now_ms: i64,
    ) -> Result<QueueSnapshot, StoreError> {
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError("disk full".into()));
        }
        let rows = self.rows.lock().unwrap();
        let acked = self.acked.lock().unwrap();
        let mut snapshot = QueueSnapshot::default();
        for (note, devices) in rows.iter() {
            if seqs.is_some_and(|seqs| !seqs.contains(&note.seq)) {
                continue;
            }
            let i = snapshot.notifications.len();
            snapshot.notifications.push(QueuedNotification {
                id: note.id.clone(),
                seq: note.seq,
                priority: note.priority,
                expires_at: note.expires_at,
                created_at: note.created_at,
                payload: note.payload.clone(),
                trace_id: note.trace_id,
            });
            for device in devices {
                if (only.is_empty() || only.contains(device))
                    && !acked.contains(&(note.seq, device.clone()))
                {
                    snapshot.pending.push(PendingDelivery {
                        device: device.clone(),
                        notification: i,
                        sent_before: self
                            .sent
                            .lock()
                            .unwrap()
                            .contains(&(note.seq, device.clone())),
                    });
                }
            }
        }
        Ok(snapshot)
    }
}

/// Forwards every `Deliver` to a channel.
struct Recorder(mpsc::UnboundedSender<Deliver>);

impl Actor for Recorder {
    type Context = Context<Self>;
}

impl Handler<Deliver> for Recorder {
    type Result = ();
    fn handle(&mut self, msg: Deliver, _ctx: &mut Self::Context) {
        let _ = self.0.send(msg);
    }
}

/// Answered in mailbox order, after every `Deliver` sent before it.
#[derive(Message, Debug)]
#[rtype(result = "()")]
struct Ping;

impl Handler<Ping> for Recorder {
    type Result = ();
    fn handle(&mut self, _msg: Ping, _ctx: &mut Self::Context) {}
}

struct Harness {
    queue: Addr<NotificationQueue>,
    recorder: Addr<Recorder>,
    delivered: mpsc::UnboundedReceiver<Deliver>,
    clock: ManualClock,
    store: Arc<MemoryStore>,
    device: DeviceId,
    metrics: Arc<Metrics>,
}

fn harness_with(policy: DevicePolicy) -> Harness {
    harness_in(policy, None)
}

/// A harness whose queue shares its store with other relays through `cluster`, if given.
fn harness_in(policy: DevicePolicy, cluster: Option<Arc<dyn ClusterPort>>) -> Harness {
    let device = DeviceId::generate();
    let store = Arc::new(MemoryStore::default());
    store.devices.lock().unwrap().push((device.clone(), policy));
    let clock = ManualClock::new(1_000_000);
    let (tx, delivered) = mpsc::unbounded_channel();
    let recorder = Recorder(tx).start();
    let deliver = recorder.clone().recipient();
    let config = QueueConfig {
        commit_window: Duration::ZERO,
        ..QueueConfig::default()
    };
    let (s, c) = (store.clone(), clock.clone());
    let metrics = Arc::new(Metrics::new("test", "test"));
    let m = metrics.clone();
    let queue = actix::Supervisor::start(move |_| {
        NotificationQueue::new(
            config,
            s,
            Arc::new(c),
            deliver.clone(),
            m,
            slog::Logger::root(slog::Discard, slog::o!()),
        )
        .with_cluster(cluster.clone())
    });
    Harness {
        queue,
        recorder,
        delivered,
        clock,
        store,
        metrics,
        device,
    }
}

fn harness() -> Harness {
    harness_with(DevicePolicy::default())
}

fn note(title: &str, priority: Priority, now: i64) -> NewNotification {
    let record = NotificationRecord {
        id: NotificationId::generate(),
        title: title.into(),
        body: String::new(),
        app: "test".into(),
        priority,
        tags: vec![],
        click_url: None,
        created_at: now,
        expires_at: now + 3_600_000,
        trace_id: None,
        encrypted: None,
    };
    NewNotification {
        payload: record.device_json(),
        record,
        targets: Targets::All,
        idempotency_key: None,
    }
}

async fn publish(h: &Harness, title: &str, priority: Priority) -> NotificationId {
    let outcome = h
        .queue
        .send(Enqueue {
            items: vec![note(title, priority, h.clock.now_ms())],
            publisher: "t".into(),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcome[0].targets, 1);
    outcome[0].id.clone()
}

/// Returns once the queue has handled its clock tick and the recorder what the queue sent.
///
/// An actor handles its mailbox and then its streams within one poll, so a round trip to the
/// queue after `advance` returns after the tick; the recorder's round trip then comes after any
/// `Deliver` the tick produced. No time passes.
async fn settle(h: &Harness) {
    h.queue.send(GetQueueStats).await.unwrap();
    h.recorder.send(Ping).await.unwrap();
}

/// The next frame's ids; the timeout only turns a hang into a failure (the queue runs on the
/// manual clock and answers at once).
async fn next(h: &mut Harness) -> Vec<NotificationId> {
    let msg = tokio::time::timeout(Duration::from_secs(5), h.delivered.recv())
        .await
        .unwrap()
        .unwrap();
    msg.items.iter().map(|n| n.id.clone()).collect()
}

#[actix::test]
async fn delivers_in_priority_order_once_online_and_not_before() {
    let mut h = harness();
    let low = publish(&h, "low", Priority::Low).await;
    let high = publish(&h, "high", Priority::High).await;
    assert!(
        h.delivered.try_recv().is_err(),
        "nothing goes to an offline device"
    );
    h.queue
        .send(DeviceOnline {
            device: h.device.clone(),
        })
        .await
        .unwrap();
    assert_eq!(next(&mut h).await, vec![high, low]);
}

#[actix::test]
async fn unknown_targets_reject_the_whole_request() {
    let h = harness();
    let mut bad = note("x", Priority::Normal, 0);
    bad.targets = Targets::devices(vec![h.device.clone(), DeviceId::generate()]);
    let err = h
        .queue
        .send(Enqueue {
            items: vec![note("ok", Priority::Normal, 0), bad],
            publisher: "t".into(),
        })
        .await
        .unwrap();
    assert!(matches!(err, Err(QueueError::UnknownTargets(ref u)) if u.len() == 1 && u[0].0 == 1));
    assert!(h.store.rows.lock().unwrap().is_empty());
}

#[actix::test]
async fn group_targets_reach_their_members_once_and_an_empty_group_is_unknown() {
    let group = |names: &[&str]| DevicePolicy {
        groups: names.iter().map(|n| (*n).to_owned()).collect(),
        ..DevicePolicy::default()
    };
    let h = harness_with(group(&["alerts", "ops"]));
    let other = DeviceId::generate();
    h.queue
        .send(UpsertDevice {
            device: other.clone(),
            policy: group(&["ops"]),
        })
        .await
        .unwrap();
    let quiet = DeviceId::generate();
    h.queue
        .send(UpsertDevice {
            device: quiet.clone(),
            policy: DevicePolicy {
                min_priority: Priority::High,
                ..group(&["alerts"])
            },
        })
        .await
        .unwrap();
    let targeted = |devices: Vec<DeviceId>, groups: &[&str]| {
        let mut n = note("g", Priority::Normal, 0);
        n.targets = Targets::Listed {
            devices,
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        };
        n
    };
    let send = |items| {
        h.queue.send(Enqueue {
            items,
            publisher: "t".into(),
        })
    };
    // alerts: the first device, and the quiet one only for what meets its minimum priority.
    let one = send(vec![targeted(vec![], &["alerts"])])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(one[0].targets, 1);
    // Both groups and an explicit member: each device once.
    let both = send(vec![targeted(vec![other.clone()], &["alerts", "ops"])])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(both[0].targets, 2);
    // A group no device is in rejects the request, named as the client wrote it.
    let err = send(vec![targeted(vec![], &["ops", "nobody"])])
        .await
        .unwrap();
    assert_eq!(
        err,
        Err(QueueError::UnknownTargets(vec![(
            0,
            vec!["group:nobody".to_owned()]
        )]))
    );
}

#[actix::test]
async fn a_failed_commit_is_reported_to_the_publisher() {
    let h = harness();
    h.store
        .fail
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let result = h
        .queue
        .send(Enqueue {
            items: vec![note("x", Priority::Normal, 0)],
            publisher: "t".into(),
        })
        .await
        .unwrap();
    assert!(matches!(result, Err(QueueError::Store(_))));
}

#[actix::test]
async fn ack_timeouts_and_disconnects_send_again() {
    let mut h = harness();
    h.queue
        .send(DeviceOnline {
            device: h.device.clone(),
        })
        .await
        .unwrap();
    let id = publish(&h, "n", Priority::Normal).await;
    assert_eq!(next(&mut h).await, vec![id.clone()]);
    h.clock.advance(Duration::from_secs(31));
    assert_eq!(
        next(&mut h).await,
        vec![id.clone()],
        "resent after the ack timeout"
    );
    h.queue
        .send(DeviceOffline {
            device: h.device.clone(),
        })
        .await
        .unwrap();
    h.queue
        .send(DeviceOnline {
            device: h.device.clone(),
        })
        .await
        .unwrap();
    assert_eq!(next(&mut h).await, vec![id.clone()], "resent on reconnect");
    h.queue
        .send(Ack {
            device: h.device.clone(),
            ids: vec![id],
        })
        .await
        .unwrap();
    h.clock.advance(Duration::from_secs(31));
    let stats = h.queue.send(GetQueueStats).await.unwrap();
    assert_eq!((stats.ready, stats.in_flight), (0, 0));
    // One notification, sent three times: one delivery, two redeliveries, one ack.
    let m = &h.metrics;
    assert_eq!(m.published.of(Priority::Normal).get(), 1);
    assert_eq!(m.delivered.of(Priority::Normal).get(), 1);
    assert_eq!(m.redelivered.of(Priority::Normal).get(), 2);
    assert_eq!(m.acked.of(Priority::Normal).get(), 1);
    assert_eq!(m.publish_to_deliver.get_sample_count(), 1);
    assert_eq!(m.deliver_to_ack.get_sample_count(), 1);
    assert!(m.group_commit_rows.get_sample_count() >= 1);
}

#[actix::test]
async fn stats_count_ready_deliveries_by_priority_and_latency_on_the_clock() {
    let mut h = harness();
    publish(&h, "low", Priority::Low).await;
    publish(&h, "crit", Priority::Critical).await;
    publish(&h, "crit2", Priority::Critical).await;
    let stats = h.queue.send(GetQueueStats).await.unwrap();
    assert_eq!(stats.ready_by_priority, [1, 0, 0, 2]);
    assert_eq!(stats.ready, 3);
    // Published at t0, delivered 2.5 s of clock later.
    h.clock.advance(Duration::from_millis(2_500));
    h.queue
        .send(DeviceOnline {
            device: h.device.clone(),
        })
        .await
        .unwrap();
    assert_eq!(next(&mut h).await.len(), 3);
    let stats = h.queue.send(GetQueueStats).await.unwrap();
    assert_eq!((stats.ready_by_priority, stats.in_flight), ([0; 4], 3));
    let latency = &h.metrics.publish_to_deliver;
    assert_eq!(latency.get_sample_count(), 3);
    assert!((latency.get_sample_sum() - 7.5).abs() < 1e-9);
    assert_eq!(h.metrics.delivered.of(Priority::Critical).get(), 2);
    assert_eq!(h.metrics.redelivered.of(Priority::Critical).get(), 0);
}

#[actix::test]
async fn the_in_flight_window_waits_for_acks() {
    let device = DeviceId::generate();
    let mut h = harness();
    h.device = device.clone();
    h.queue
        .send(UpsertDevice {
            device: device.clone(),
            policy: DevicePolicy::default(),
        })
        .await
        .unwrap();
    // Two devices now; target only the new one with more than the window.
    let window = QueueConfig::default().max_in_flight;
    let items: Vec<_> = (0..window + 5)
        .map(|i| {
            let mut n = note(&format!("n{i}"), Priority::Normal, 0);
            n.targets = Targets::devices(vec![device.clone()]);
            n
        })
        .collect();
    h.queue
        .send(Enqueue {
            items,
            publisher: "t".into(),
        })
        .await
        .unwrap()
        .unwrap();
    h.queue
        .send(DeviceOnline {
            device: device.clone(),
        })
        .await
        .unwrap();
    let first = next(&mut h).await;
    assert_eq!(first.len(), window);
    assert!(h.delivered.try_recv().is_err());
    h.queue
        .send(Ack {
            device,
            ids: first[..5].to_vec(),
        })
        .await
        .unwrap();
    assert_eq!(next(&mut h).await.len(), 5);
}

#[actix::test]
async fn quiet_hours_hold_back_all_but_critical() {
    let quiet = crate::model::QuietHours {
        start: chrono::NaiveTime::MIN,
        end: chrono::NaiveTime::from_hms_opt(23, 59, 59).unwrap(),
        timezone: chrono_tz::UTC,
    };
    let mut h = harness_with(DevicePolicy {
        quiet_hours: Some(quiet),
        ..DevicePolicy::default()
    });
    h.queue
        .send(DeviceOnline {
            device: h.device.clone(),
        })
        .await
        .unwrap();
    let _normal = publish(&h, "normal", Priority::Normal).await;
    let critical = publish(&h, "critical", Priority::Critical).await;
    let mut got = next(&mut h).await;
    if got.is_empty() {
        got = next(&mut h).await;
    }
    assert_eq!(got, vec![critical]);
    h.clock.advance(Duration::from_secs(2));
    settle(&h).await;
    assert!(h.delivered.try_recv().is_err(), "normal is held");
}

#[actix::test]
async fn drain_commits_pending_acks_at_once() {
    let mut h = harness();
    h.queue
        .send(DeviceOnline {
            device: h.device.clone(),
        })
        .await
        .unwrap();
    let id = publish(&h, "n", Priority::Normal).await;
    assert_eq!(next(&mut h).await, vec![id.clone()]);
    h.queue
        .send(Ack {
            device: h.device.clone(),
            ids: vec![id],
        })
        .await
        .unwrap();
    h.queue.send(Drain).await.unwrap();
    assert_eq!(h.store.acked.lock().unwrap().len(), 1);
    h.queue.send(Drain).await.unwrap(); // nothing pending: answers at once
}

#[actix::test]
async fn min_priority_filters_at_enqueue() {
    let h = harness_with(DevicePolicy {
        min_priority: Priority::High,
        ..DevicePolicy::default()
    });
    let outcome = h
        .queue
        .send(Enqueue {
            items: vec![note("n", Priority::Normal, 0)],
            publisher: "t".into(),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcome[0].targets, 0);
}

#[actix::test]
async fn a_panic_restarts_the_queue_which_reloads_from_the_store() {
    let mut h = harness();
    let id = publish(&h, "kept", Priority::Normal).await;
    let before = crate::guard::RESTARTS.load(std::sync::atomic::Ordering::Relaxed);
    h.queue.do_send(InjectFault);
    h.queue
        .send(DeviceOnline {
            device: h.device.clone(),
        })
        .await
        .unwrap();
    assert_eq!(next(&mut h).await, vec![id]);
    assert!(crate::guard::RESTARTS.load(std::sync::atomic::Ordering::Relaxed) > before);
}

#[actix::test]
async fn queue_lag_counts_from_when_the_device_came_online() {
    let mut h = harness_with(DevicePolicy::default());
    // More than the in-flight window, so that part of the backlog stays ready once online.
    let window = QueueConfig::default().max_in_flight;
    for i in 0..window + 2 {
        publish(&h, &format!("n{i}"), Priority::Normal).await;
    }
    let stats = h.queue.send(GetQueueStats).await.unwrap();
    assert_eq!(
        stats.oldest_ready_ms, None,
        "nothing waits for an offline device"
    );
    // The device was away for ten minutes.
    h.clock.advance(Duration::from_secs(600));
    let online_at = h.clock.now_ms();
    h.queue
        .send(DeviceOnline {
            device: h.device.clone(),
        })
        .await
        .unwrap();
    assert_eq!(next(&mut h).await.len(), window);
    let stats = h.queue.send(GetQueueStats).await.unwrap();
    assert_eq!(stats.ready, 2);
    assert_eq!(
        stats.oldest_ready_ms,
        Some(online_at),
        "the lag counts from the device's coming online, not from the notifications' creation"
    );
}

#[actix::test]
async fn a_delivery_sent_before_a_restart_is_a_redelivery_after_it() {
    let mut h = harness();
    h.queue
        .send(DeviceOnline {
            device: h.device.clone(),
        })
        .await
        .unwrap();
    let id = publish(&h, "sent once", Priority::High).await;
    assert_eq!(next(&mut h).await, vec![id.clone()]);
    // The sent mark reaches the store, then the queue restarts and reloads.
    h.queue.send(Drain).await.unwrap();
    h.queue.do_send(InjectFault);
    settle(&h).await;
    assert_eq!(next(&mut h).await, vec![id], "sent again after the reload");
    assert_eq!(h.metrics.delivered.of(Priority::High).get(), 1);
    assert_eq!(h.metrics.redelivered.of(Priority::High).get(), 1);
    assert_eq!(
        h.metrics.publish_to_deliver.get_sample_count(),
        1,
        "a redelivery is not a publish-to-deliver sample"
    );
}

mod cluster;
