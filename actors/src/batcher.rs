//! The batcher: coalesces what goes to one device within a short window, or up to a number of
//! items, into one `notifications` frame, and hands frames to the session registry.
//!
//! A device that has had nothing for a window gets the next notification at once; what arrives for
//! it during the following window is gathered and sent as one frame when the window closes, and so
//! on while notifications keep coming. Bursts are batched; a lone notification is never delayed.
//!
//! Items arrive as pre-serialised JSON objects, so a frame is built by concatenation: no
//! notification is serialised twice, whatever the number of devices it goes to.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bytes::{BufMut, Bytes, BytesMut};

use crate::guard::guarded;
use crate::model::{DeviceId, QueuedNotification};
use crate::registry::Dispatch;
use crate::socket::FrameItem;

/// Notifications for one device, in the order they should arrive.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Deliver {
    /// The device.
    pub device: DeviceId,
    /// The notifications, highest priority first.
    pub items: Vec<Arc<QueuedNotification>>,
}

/// The batcher's tunables.
#[derive(Debug, Clone)]
pub struct BatcherConfig {
    /// How long the first pending item of a device waits for company; zero sends at once.
    pub window: Duration,
    /// Items per frame at most; a device reaching it is flushed at once.
    pub max_items: usize,
    /// Bytes of items per frame at most.
    pub max_bytes: usize,
}

impl Default for BatcherConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_millis(2),
            max_items: 64,
            max_bytes: 256 * 1024,
        }
    }
}

const FRAME_HEAD: &[u8] = br#"{"type":"notifications","items":["#;
const FRAME_TAIL: &[u8] = b"]}";

/// Builds a `notifications` frame from pre-serialised items.
pub fn encode_frame<'a>(items: impl IntoIterator<Item = &'a Bytes>, size_hint: usize) -> Bytes {
    let mut frame = BytesMut::with_capacity(FRAME_HEAD.len() + size_hint + FRAME_TAIL.len() + 64);
    frame.put_slice(FRAME_HEAD);
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            frame.put_u8(b',');
        }
        frame.put_slice(item);
    }
    frame.put_slice(FRAME_TAIL);
    frame.freeze()
}

#[derive(Default)]
struct Pending {
    items: Vec<Arc<QueuedNotification>>,
    bytes: usize,
}

/// A device that was just sent a frame: what arrived since, waiting for the window to close.
#[derive(Default)]
struct Cooling {
    pending: Pending,
}

/// The batcher actor.
pub struct Batcher {
    config: BatcherConfig,
    dispatch: Recipient<Dispatch>,
    /// Devices inside their batching window.
    cooling: HashMap<DeviceId, Cooling>,
    log: slog::Logger,
    /// Counts restarts, when set ([`Batcher::with_restarts`]).
    restarts: Option<prometheus::IntCounter>,
}

impl Batcher {
    /// A batcher that hands frames to `dispatch`.
    pub fn new(config: BatcherConfig, dispatch: Recipient<Dispatch>, log: slog::Logger) -> Self {
        Self {
            config,
            dispatch,
            cooling: HashMap::new(),
            log,
            restarts: None,
        }
    }

    /// Counts this actor's restarts into `counter` (`beepmyphone_actor_restarts_total{actor}`).
    pub fn with_restarts(mut self, counter: prometheus::IntCounter) -> Self {
        self.restarts = Some(counter);
        self
    }

    fn send(&self, device: &DeviceId, items: &[Arc<QueuedNotification>], bytes: usize) {
        let frame = encode_frame(items.iter().map(|n| &n.payload), bytes + items.len());
        self.dispatch.do_send(Dispatch {
            device: device.clone(),
            frame,
            items: items.len(),
            ids: items
                .iter()
                .map(|n| FrameItem {
                    id: n.id.clone(),
                    trace_id: n.trace_id,
                })
                .collect(),
        });
    }

    /// Sends `items` now, cut into frames by the item and byte limits.
    fn send_chunked(
        &self,
        device: &DeviceId,
        items: impl IntoIterator<Item = Arc<QueuedNotification>>,
    ) {
        let (max_items, max_bytes) = (self.config.max_items.max(1), self.config.max_bytes);
        let mut frame = Pending::default();
        for item in items {
            if !frame.items.is_empty()
                && (frame.items.len() >= max_items || frame.bytes + item.payload.len() > max_bytes)
            {
                self.send(device, &frame.items, frame.bytes);
                frame = Pending::default();
            }
            frame.bytes += item.payload.len();
            frame.items.push(item);
        }
        if !frame.items.is_empty() {
            self.send(device, &frame.items, frame.bytes);
        }
    }

    /// The window of a device closed: send what gathered and keep cooling, or end the window.
    fn window_closed(&mut self, device: DeviceId, ctx: &mut Context<Self>) {
        let gathered = match self.cooling.get_mut(&device) {
            Some(cooling) if !cooling.pending.items.is_empty() => {
                std::mem::take(&mut cooling.pending.items)
            }
            _ => {
                self.cooling.remove(&device);
                return;
            }
        };
        if let Some(cooling) = self.cooling.get_mut(&device) {
            cooling.pending.bytes = 0;
        }
        self.send_chunked(&device, gathered);
        ctx.run_later(self.config.window, move |act, ctx| {
            act.window_closed(device, ctx)
        });
    }
}

impl Actor for Batcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(crate::MAILBOX_CAPACITY);
    }
}

impl Supervised for Batcher {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        if let Some(counter) = &self.restarts {
            counter.inc();
        }
        // Anything gathered here is in flight for the queue, which resends it on ack timeout.
        self.cooling.clear();
    }
}

impl Handler<Deliver> for Batcher {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Self::Context) {
        let log = self.log.clone();
        guarded("batcher", &log, ctx, |ctx| {
            for n in &msg.items {
                slog::debug!(log, "delivering"; "notification_id" => %n.id, "trace_id" => n.trace_id, "device_id" => msg.device.as_str());
            }
            let items = msg.items.iter().cloned();
            if self.config.window.is_zero() {
                return self.send_chunked(&msg.device, items);
            }
            let max_items = self.config.max_items.max(1);
            match self.cooling.get_mut(&msg.device) {
                // Inside the window: gather, and send early only what fills a frame.
                Some(cooling) => {
                    for item in items {
                        cooling.pending.bytes += item.payload.len();
                        cooling.pending.items.push(item);
                    }
                    if cooling.pending.items.len() >= max_items
                        || cooling.pending.bytes >= self.config.max_bytes
                    {
                        let gathered = std::mem::take(&mut cooling.pending);
                        self.send_chunked(&msg.device, gathered.items);
                    }
                }
                // An idle device gets this at once (no added latency); what follows within the
                // window shares frames.
                None => {
                    self.send_chunked(&msg.device, items);
                    self.cooling.insert(msg.device.clone(), Cooling::default());
                    let device = msg.device;
                    ctx.run_later(self.config.window, move |act, ctx| {
                        act.window_closed(device, ctx)
                    });
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_valid_json_with_items_in_order() {
        let items = [
            Bytes::from_static(br#"{"id":"a"}"#),
            Bytes::from_static(br#"{"id":"b"}"#),
        ];
        let frame = encode_frame(items.iter(), 20);
        let v: serde_json::Value = serde_json::from_slice(&frame).unwrap();
        assert_eq!(v["type"], "notifications");
        assert_eq!(v["items"][0]["id"], "a");
        assert_eq!(v["items"][1]["id"], "b");
        let empty = encode_frame(std::iter::empty(), 0);
        assert_eq!(&empty[..], br#"{"type":"notifications","items":[]}"#);
    }

    use std::time::Duration;

    use tokio::sync::mpsc;

    use crate::model::{NotificationId, Priority};

    struct Recorder(mpsc::UnboundedSender<Dispatch>);
    impl Actor for Recorder {
        type Context = Context<Self>;
    }
    impl Handler<Dispatch> for Recorder {
        type Result = ();
        fn handle(&mut self, msg: Dispatch, _ctx: &mut Self::Context) {
            let _ = self.0.send(msg);
        }
    }

    fn note(i: usize) -> Arc<QueuedNotification> {
        Arc::new(QueuedNotification {
            id: NotificationId::generate(),
            seq: i as i64,
            priority: Priority::Normal,
            expires_at: i64::MAX,
            created_at: 0,
            payload: Bytes::from(format!(r#"{{"n":{i}}}"#)),
            trace_id: None,
        })
    }

    fn start(
        window: Duration,
        max_items: usize,
    ) -> (Addr<Batcher>, mpsc::UnboundedReceiver<Dispatch>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let recorder = Recorder(tx).start();
        let config = BatcherConfig {
            window,
            max_items,
            ..BatcherConfig::default()
        };
        let batcher = Batcher::new(
            config,
            recorder.recipient(),
            slog::Logger::root(slog::Discard, slog::o!()),
        )
        .start();
        (batcher, rx)
    }

    /// The next frame; the timeout only turns a hang into a failure.
    async fn frame(rx: &mut mpsc::UnboundedReceiver<Dispatch>) -> Dispatch {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap()
    }

    #[actix::test]
    async fn a_lone_notification_goes_at_once_and_a_burst_shares_a_frame() {
        // Paused time: the 50 ms window closes only once everything else is idle, so the burst
        // cannot be split by a slow machine.
        tokio::time::pause();
        let (batcher, mut rx) = start(Duration::from_millis(50), 64);
        let device = DeviceId::generate();
        batcher
            .send(Deliver {
                device: device.clone(),
                items: vec![note(0)],
            })
            .await
            .unwrap();
        assert_eq!(
            frame(&mut rx).await.items,
            1,
            "the first one is not held back"
        );
        for i in 1..=5 {
            batcher
                .send(Deliver {
                    device: device.clone(),
                    items: vec![note(i)],
                })
                .await
                .unwrap();
        }
        assert!(rx.try_recv().is_err(), "the burst waits for the window");
        let burst = frame(&mut rx).await;
        assert_eq!(burst.items, 5);
        let v: serde_json::Value = serde_json::from_slice(&burst.frame).unwrap();
        assert_eq!(v["items"][0]["n"], 1);
        assert_eq!(v["items"][4]["n"], 5);
    }

    #[actix::test]
    async fn frames_are_cut_at_the_item_limit_and_a_zero_window_never_waits() {
        let (batcher, mut rx) = start(Duration::ZERO, 2);
        let device = DeviceId::generate();
        batcher
            .send(Deliver {
                device: device.clone(),
                items: (0..5).map(note).collect(),
            })
            .await
            .unwrap();
        let sizes: Vec<usize> = vec![
            frame(&mut rx).await.items,
            frame(&mut rx).await.items,
            frame(&mut rx).await.items,
        ];
        assert_eq!(sizes, vec![2, 2, 1]);
    }
}
