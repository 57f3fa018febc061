//! The batcher: coalesces what goes to one device within a short window, or up to a number of
//! items, into one `notifications` frame, and hands frames to the session registry.
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
    items: Vec<Bytes>,
    bytes: usize,
}

/// The batcher actor.
pub struct Batcher {
    config: BatcherConfig,
    dispatch: Recipient<Dispatch>,
    pending: HashMap<DeviceId, Pending>,
    log: slog::Logger,
}

impl Batcher {
    /// A batcher that hands frames to `dispatch`.
    pub fn new(config: BatcherConfig, dispatch: Recipient<Dispatch>, log: slog::Logger) -> Self {
        Self {
            config,
            dispatch,
            pending: HashMap::new(),
            log,
        }
    }

    fn send(&self, device: &DeviceId, items: &[Bytes], bytes: usize) {
        let frame = encode_frame(items, bytes + items.len());
        self.dispatch.do_send(Dispatch {
            device: device.clone(),
            frame,
            items: items.len(),
        });
    }

    fn flush(&mut self, device: &DeviceId) {
        if let Some(pending) = self.pending.remove(device) {
            if !pending.items.is_empty() {
                self.send(device, &pending.items, pending.bytes);
            }
        }
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
        // Anything pending here is in flight for the queue, which resends it on ack timeout.
        self.pending.clear();
    }
}

impl Handler<Deliver> for Batcher {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Self::Context) {
        let log = self.log.clone();
        guarded("batcher", &log, ctx, |ctx| {
            let window = self.config.window;
            let (max_items, max_bytes) = (self.config.max_items.max(1), self.config.max_bytes);
            let pending = self.pending.entry(msg.device.clone()).or_default();
            let was_empty = pending.items.is_empty();
            let mut full = Vec::new();
            for note in msg.items {
                if !pending.items.is_empty() && pending.bytes + note.payload.len() > max_bytes {
                    full.push(std::mem::take(pending));
                }
                pending.bytes += note.payload.len();
                pending.items.push(note.payload.clone());
                if pending.items.len() >= max_items {
                    full.push(std::mem::take(pending));
                }
            }
            let rest_empty = pending.items.is_empty();
            for batch in full {
                self.send(&msg.device, &batch.items, batch.bytes);
            }
            if rest_empty {
                self.pending.remove(&msg.device);
            } else if window.is_zero() {
                self.flush(&msg.device);
            } else if was_empty {
                // The first item of a device starts its window; later ones ride along.
                let device = msg.device;
                ctx.run_later(window, move |act, _| act.flush(&device));
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
}
