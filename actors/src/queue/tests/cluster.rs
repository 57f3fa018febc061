//! A clustered queue: deliveries only for the devices connected here, backlogs read from the
//! store, wake-ups for the others.

use super::*;

use tokio::sync::oneshot;

use crate::ports::{ClusterFuture, ClusterPort, Deliveries};

/// Records what the queue tells the other relays; `online` waits for `gate` when one is set.
#[derive(Default)]
struct FakeCluster {
    online: Mutex<Vec<DeviceId>>,
    offline: Mutex<Vec<DeviceId>>,
    published: Mutex<Deliveries>,
    gate: Mutex<Option<oneshot::Receiver<()>>>,
}

impl ClusterPort for FakeCluster {
    fn online(&self, device: &DeviceId) -> ClusterFuture {
        self.online.lock().unwrap().push(device.clone());
        let gate = self.gate.lock().unwrap().take();
        Box::pin(async move {
            if let Some(gate) = gate {
                let _ = gate.await;
            }
        })
    }

    fn offline(&self, device: &DeviceId) {
        self.offline.lock().unwrap().push(device.clone());
    }

    fn published(&self, deliveries: Deliveries) {
        self.published.lock().unwrap().extend(deliveries);
    }
}

fn clustered() -> (Harness, Arc<FakeCluster>) {
    let cluster = Arc::new(FakeCluster::default());
    let port: Arc<dyn ClusterPort> = cluster.clone();
    (harness_in(DevicePolicy::default(), Some(port)), cluster)
}

/// A notification committed by another relay: a row in the shared store the queue never saw.
fn committed_elsewhere(h: &Harness, title: &str, priority: Priority) -> (NotificationId, i64) {
    let record = note(title, priority, h.clock.now_ms()).record;
    let mut rows = h.store.rows.lock().unwrap();
    let seq = rows.len() as i64 + 1;
    let queued = QueuedNotification {
        id: record.id.clone(),
        seq,
        priority,
        expires_at: record.expires_at,
        created_at: record.created_at,
        payload: record.device_json(),
        trace_id: None,
    };
    rows.push((queued, vec![h.device.clone()]));
    (record.id, seq)
}

async fn online(h: &Harness) {
    h.queue
        .send(DeviceOnline {
            device: h.device.clone(),
        })
        .await
        .unwrap();
}

async fn ack(h: &Harness, ids: Vec<NotificationId>) {
    h.queue
        .send(Ack {
            device: h.device.clone(),
            ids,
        })
        .await
        .unwrap();
}

#[actix::test]
async fn a_device_not_connected_here_is_woken_elsewhere_and_read_back_when_it_connects() {
    let (mut h, cluster) = clustered();
    let low = publish(&h, "low", Priority::Low).await;
    let high = publish(&h, "high", Priority::High).await;
    assert_eq!(
        *cluster.published.lock().unwrap(),
        vec![(h.device.clone(), vec![1]), (h.device.clone(), vec![2])],
        "each commit hands its deliveries for absent devices to the cluster"
    );
    let stats = h.queue.send(GetQueueStats).await.unwrap();
    assert_eq!(
        stats.ready, 0,
        "nothing is held for a device connected elsewhere"
    );
    online(&h).await;
    assert_eq!(*cluster.online.lock().unwrap(), vec![h.device.clone()]);
    assert_eq!(
        next(&mut h).await,
        vec![high, low],
        "its backlog, read from the store, in order"
    );
}

#[actix::test]
async fn the_backlog_is_read_only_once_the_cluster_routes_the_device_here() {
    let (mut h, cluster) = clustered();
    let (open, gate) = oneshot::channel();
    *cluster.gate.lock().unwrap() = Some(gate);
    let (before, _) = committed_elsewhere(&h, "before", Priority::Normal);
    online(&h).await;
    settle(&h).await;
    assert!(
        h.delivered.try_recv().is_err(),
        "nothing before presence is known"
    );
    // Published here while the device is connecting: held until its backlog is in.
    let mine = publish(&h, "mine", Priority::High).await;
    settle(&h).await;
    assert!(h.delivered.try_recv().is_err());
    open.send(()).unwrap();
    assert_eq!(next(&mut h).await, vec![mine, before]);
}

#[actix::test]
async fn a_wake_reads_what_another_relay_committed() {
    let (mut h, _cluster) = clustered();
    let (first, _) = committed_elsewhere(&h, "first", Priority::Normal);
    online(&h).await;
    assert_eq!(next(&mut h).await, vec![first], "the backlog is in");
    let (id, seq) = committed_elsewhere(&h, "elsewhere", Priority::Normal);
    let (ignored, other) = committed_elsewhere(&h, "other", Priority::Normal);
    h.queue
        .send(Wake {
            deliveries: vec![
                (h.device.clone(), vec![seq]),
                (DeviceId::generate(), vec![other]),
            ],
        })
        .await
        .unwrap();
    assert_eq!(next(&mut h).await, vec![id], "only the woken notification");
    // A reconcile reads every pending delivery of connected devices: the other one too.
    h.queue.send(Reconcile).await.unwrap();
    assert_eq!(next(&mut h).await, vec![ignored]);
}

#[actix::test]
async fn acks_made_while_connecting_apply_and_an_acked_delivery_is_not_read_back() {
    let (mut h, cluster) = clustered();
    let (first, _) = committed_elsewhere(&h, "first", Priority::Normal);
    let (second, _) = committed_elsewhere(&h, "second", Priority::Normal);
    let (open, gate) = oneshot::channel();
    *cluster.gate.lock().unwrap() = Some(gate);
    online(&h).await;
    // The device acks `first` (delivered by the relay it was on before) while connecting.
    ack(&h, vec![first.clone()]).await;
    open.send(()).unwrap();
    assert_eq!(
        next(&mut h).await,
        vec![second.clone()],
        "the buffered ack ended `first` once it was read, before anything was sent"
    );
    settle(&h).await;
    let stats = h.queue.send(GetQueueStats).await.unwrap();
    assert_eq!((stats.ready, stats.in_flight), (0, 1));
    ack(&h, vec![second]).await;
    h.queue.send(Drain).await.unwrap();
    h.queue.send(Reconcile).await.unwrap();
    h.queue.send(Drain).await.unwrap();
    settle(&h).await;
    assert!(
        h.delivered.try_recv().is_err(),
        "acked deliveries are in the store as acked: a reconcile finds nothing"
    );
    assert_eq!(h.store.acked.lock().unwrap().len(), 2);
}

#[actix::test]
async fn a_device_that_leaves_is_forgotten_and_its_in_flight_deliveries_read_back_next_time() {
    let (mut h, cluster) = clustered();
    online(&h).await;
    let id = publish(&h, "n", Priority::Normal).await;
    assert_eq!(next(&mut h).await, vec![id.clone()]);
    h.queue
        .send(DeviceOffline {
            device: h.device.clone(),
        })
        .await
        .unwrap();
    assert_eq!(*cluster.offline.lock().unwrap(), vec![h.device.clone()]);
    let stats = h.queue.send(GetQueueStats).await.unwrap();
    assert_eq!((stats.ready, stats.in_flight), (0, 0));
    online(&h).await;
    assert_eq!(
        next(&mut h).await,
        vec![id],
        "unacked: still pending in the store"
    );
    assert_eq!(h.metrics.redelivered.of(Priority::Normal).get(), 1);
}

#[actix::test]
async fn a_failed_read_is_tried_again() {
    let (mut h, _cluster) = clustered();
    let (id, _) = committed_elsewhere(&h, "n", Priority::Normal);
    h.store
        .fail
        .store(true, std::sync::atomic::Ordering::SeqCst);
    online(&h).await;
    settle(&h).await;
    assert!(h.delivered.try_recv().is_err());
    h.store
        .fail
        .store(false, std::sync::atomic::Ordering::SeqCst);
    settle(&h).await;
    assert!(h.delivered.try_recv().is_err(), "not before the next tick");
    h.clock.advance(Duration::from_secs(1));
    assert_eq!(
        next(&mut h).await,
        vec![id],
        "asked again on the clock's tick"
    );
}
