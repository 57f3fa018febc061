//! The notification queue's per-device structure: a `BinaryHeap` of ready deliveries (priority,
//! then store sequence) beside a slot per delivery (`actors/src/queue/device.rs`, [`DeviceQueue`]).
//!
//! - `push_pop/N`: N notifications of mixed priorities added, then all taken in priority order and
//!   marked in flight (what the queue does when a device with a backlog comes online);
//! - `push_pop_ack/N`: the same, then each acknowledged (a delivery's whole life in the queue);
//! - `steady/64`: one add, one send and one ack against a device already holding 64 deliveries
//!   (a connected device under a steady stream).
//!
//! Figures are per notification (criterion's `Throughput::Elements`).
//!
//! Run with `cargo bench --bench queue`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};

use beepmyphone_actors::model::{DevicePolicy, NotificationId, Priority, QueuedNotification};
use beepmyphone_actors::queue::DeviceQueue;

/// `n` notifications, priorities spread by a fixed pseudo-random sequence, in sequence order.
fn notes(n: usize) -> Vec<Arc<QueuedNotification>> {
    let mut x: u32 = 0x9E37_79B9;
    (0..n)
        .map(|seq| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            Arc::new(QueuedNotification {
                id: NotificationId::generate(),
                seq: seq as i64,
                priority: Priority::ALL[(x % 4) as usize],
                expires_at: i64::MAX,
                created_at: 0,
                payload: Bytes::from_static(b"{}"),
                trace_id: None,
            })
        })
        .collect()
}

fn drain(queue: &mut DeviceQueue) -> usize {
    let mut sent = 0;
    while queue.peek_ready().is_some() {
        black_box(queue.send_next(0, 1));
        sent += 1;
    }
    sent
}

fn queue(c: &mut Criterion) {
    let mut group = c.benchmark_group("device_queue");
    for n in [64usize, 1_024, 16_384] {
        let batch = notes(n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("push_pop", n), &batch, |b, batch| {
            b.iter_batched_ref(
                || DeviceQueue::new(DevicePolicy::default()),
                |queue| {
                    for note in batch {
                        queue.add(note);
                    }
                    assert_eq!(drain(queue), batch.len());
                },
                BatchSize::SmallInput,
            )
        });
        group.bench_with_input(BenchmarkId::new("push_pop_ack", n), &batch, |b, batch| {
            b.iter_batched_ref(
                || DeviceQueue::new(DevicePolicy::default()),
                |queue| {
                    for note in batch {
                        queue.add(note);
                    }
                    drain(queue);
                    for note in batch {
                        black_box(queue.ack(&note.id));
                    }
                    assert!(queue.is_empty());
                },
                BatchSize::SmallInput,
            )
        });
    }

    // A device holding 64 low-priority deliveries gets a normal one, which goes out at once and
    // is acknowledged: the backlog stays the same size.
    let with = |priority| {
        move |mut n: Arc<QueuedNotification>| {
            Arc::get_mut(&mut n).unwrap().priority = priority;
            n
        }
    };
    let held: Vec<_> = notes(64).into_iter().map(with(Priority::Low)).collect();
    let stream: Vec<_> = notes(4_096)
        .into_iter()
        .map(with(Priority::Normal))
        .collect();
    group.throughput(Throughput::Elements(1));
    group.bench_function("steady/64", |b| {
        let mut queue = DeviceQueue::new(DevicePolicy::default());
        for note in &held {
            queue.add(note);
        }
        let mut next = stream.iter().cycle();
        b.iter(|| {
            let note = next.next().unwrap();
            queue.add(note);
            queue.peek_ready().unwrap();
            let (sent, _) = queue.send_next(0, 1).unwrap();
            queue.ack(&sent.id).unwrap()
        });
        assert_eq!(queue.len(), 64);
    });
    group.finish();
}

criterion_group!(benches, queue);
criterion_main!(benches);
