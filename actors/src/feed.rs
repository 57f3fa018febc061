//! The activity feed: what happens to notifications and devices, as it happens, for whoever
//! watches (the dashboard's live stream, `GET /api/v1/events`).
//!
//! A [`Feed`] is a bounded broadcast channel. The queue reports commits, deliveries, acks and
//! presence; the HTTP handlers report pairings and revocations. Nothing is built or sent while
//! nobody subscribes, so the notification path pays one atomic load per event when no one
//! watches. A subscriber that falls more than the capacity behind loses the oldest events and is
//! told how many (tokio's `Lagged`); the feed never slows the queue down.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::broadcast;

use crate::model::{DeviceId, NotificationId, Priority};

/// Events kept for a subscriber that is behind.
pub const FEED_CAPACITY: usize = 1_024;

/// One thing that happened, at `at` (epoch milliseconds).
#[derive(Debug, Clone, PartialEq)]
pub enum Activity {
    /// A notification was committed for `devices` devices.
    Published {
        /// The notification.
        id: NotificationId,
        /// Its priority.
        priority: Priority,
        /// How many devices it is pending for.
        devices: usize,
        /// Its device view (the JSON object devices receive).
        payload: Bytes,
        /// When.
        at: i64,
    },
    /// A notification went out to a device's socket.
    Delivered {
        /// The notification.
        id: NotificationId,
        /// The device.
        device: DeviceId,
        /// When.
        at: i64,
    },
    /// A device acknowledged a notification.
    Acked {
        /// The notification.
        id: NotificationId,
        /// The device.
        device: DeviceId,
        /// When.
        at: i64,
    },
    /// A device's first socket opened.
    Online {
        /// The device.
        device: DeviceId,
        /// When.
        at: i64,
    },
    /// A device's last socket closed.
    Offline {
        /// The device.
        device: DeviceId,
        /// When.
        at: i64,
    },
    /// A device paired.
    Paired {
        /// The device.
        device: DeviceId,
        /// Its name.
        name: String,
        /// Its platform.
        platform: String,
        /// When.
        at: i64,
    },
    /// A device was revoked (deleted).
    Revoked {
        /// The device.
        device: DeviceId,
        /// When.
        at: i64,
    },
}

/// The feed's sending side; clones share one channel.
#[derive(Debug, Clone)]
pub struct Feed {
    sender: broadcast::Sender<Activity>,
    watchers: Arc<AtomicUsize>,
}

impl Default for Feed {
    fn default() -> Self {
        Self::new(FEED_CAPACITY)
    }
}

impl Feed {
    /// A feed keeping up to `capacity` events for a subscriber that is behind.
    pub fn new(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity.max(1));
        Self {
            sender,
            watchers: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Whether anyone subscribes (events are built only then).
    pub fn watched(&self) -> bool {
        self.watchers.load(Ordering::Relaxed) > 0
    }

    /// Sends the event `make` builds, if anyone subscribes.
    pub fn emit(&self, make: impl FnOnce() -> Activity) {
        if self.watched() {
            // No receiver left between the check and the send: nothing to deliver to.
            let _ = self.sender.send(make());
        }
    }

    /// A new subscription; it sees events emitted from now on.
    pub fn subscribe(&self) -> Subscription {
        self.watchers.fetch_add(1, Ordering::Relaxed);
        Subscription {
            receiver: self.sender.subscribe(),
            watchers: self.watchers.clone(),
        }
    }
}

/// What one subscriber receives.
#[derive(Debug, PartialEq)]
pub enum Received {
    /// The next event.
    Event(Activity),
    /// This many events were dropped because the subscriber was behind.
    Missed(u64),
}

/// A subscription to the feed; dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    receiver: broadcast::Receiver<Activity>,
    watchers: Arc<AtomicUsize>,
}

impl Subscription {
    /// The next event, or how many were missed; `None` once the feed is gone.
    pub async fn next(&mut self) -> Option<Received> {
        match self.receiver.recv().await {
            Ok(event) => Some(Received::Event(event)),
            Err(broadcast::error::RecvError::Lagged(n)) => Some(Received::Missed(n)),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.watchers.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn online(n: i64) -> Activity {
        Activity::Online {
            device: DeviceId::generate(),
            at: n,
        }
    }

    #[actix_rt::test]
    async fn nothing_is_built_without_a_subscriber_and_subscribers_see_what_follows() {
        let feed = Feed::new(4);
        let mut built = false;
        feed.emit(|| {
            built = true;
            online(0)
        });
        assert!(!built && !feed.watched());
        let mut sub = feed.subscribe();
        assert!(feed.watched());
        let event = online(1);
        feed.emit(|| event.clone());
        assert_eq!(sub.next().await, Some(Received::Event(event)));
        drop(sub);
        assert!(!feed.watched());
    }

    #[actix_rt::test]
    async fn a_subscriber_that_falls_behind_is_told_how_much_it_missed() {
        let feed = Feed::new(2);
        let mut sub = feed.subscribe();
        for n in 0..5 {
            feed.emit(|| online(n));
        }
        assert_eq!(sub.next().await, Some(Received::Missed(3)));
        assert!(matches!(
            sub.next().await,
            Some(Received::Event(Activity::Online { at: 3, .. }))
        ));
    }
}
