//! The device stream for clients that cannot hold a WebSocket: `GET /api/v1/stream` (Server-Sent
//! Events, device token), one [`DeviceStream`] actor per connection, with acknowledgements over
//! `POST /api/v1/acks`.
//!
//! It registers with the session registry like a socket, so it gets the same backlog on connect,
//! the same frames in the same order (priority, then age) and the same in-flight window; the queue
//! cannot tell the two apart. Each frame is one event: `event: <type>` (`hello`, `notifications`,
//! `close`) and a `data:` line with the very JSON a socket would get. A comment line every
//! heartbeat keeps proxies from closing an idle stream and notices a client that went away. The
//! stream ends when its access token expires (`close` with 4001: reconnect with a fresh one), when
//! the device is revoked (4003), when the relay shuts down (1001), and when the client stops
//! reading and [`WebSocketSettings::outbound_buffer_frames`] events wait (1008); a `close` event
//! says which.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::mpsc;

use beepmyphone_actors::model::{rfc3339, DeviceId};
use beepmyphone_actors::registry::{Register, Unregister};
use beepmyphone_actors::socket::{CloseSocket, SendFrame};

use super::protocol::{close, Hello};
use super::socket::{next_socket_id, SocketHandles};

/// One event of the stream: `event: NAME` and the frame as its `data` line. A frame is compact
/// JSON, which has no raw line breaks, so one `data` line carries it whole.
pub fn event(name: &str, data: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(name.len() + data.len() + 16);
    out.put_slice(b"event: ");
    out.put_slice(name.as_bytes());
    out.put_slice(b"\ndata: ");
    out.put_slice(data);
    out.put_slice(b"\n\n");
    out.freeze()
}

/// The keep-alive comment.
const PING: &[u8] = b": ping\n\n";

/// One device's event stream.
pub struct DeviceStream {
    id: u64,
    device: DeviceId,
    /// The access token's expiry, seconds since the epoch.
    token_exp: i64,
    out: mpsc::Sender<Bytes>,
    handles: Arc<SocketHandles>,
    peer: Option<std::net::IpAddr>,
    closing: bool,
}

impl DeviceStream {
    /// A stream for `device` (authenticated by a token expiring at `token_exp`), and the body
    /// that carries it. `peer` is released from the open-socket count when the stream ends.
    pub fn open(
        handles: Arc<SocketHandles>,
        device: DeviceId,
        token_exp: i64,
        peer: Option<std::net::IpAddr>,
    ) -> (Self, mpsc::Receiver<Bytes>) {
        // One slot more than the frames allowed to wait, for the `close` event that ends it.
        let (out, body) = mpsc::channel(handles.websocket.outbound_buffer_frames.max(1) + 1);
        let stream = Self {
            id: next_socket_id(),
            device,
            token_exp,
            out,
            handles,
            peer,
            closing: false,
        };
        (stream, body)
    }

    /// Queues an event; a client that does not read is dropped.
    fn send(&mut self, ctx: &mut Context<Self>, bytes: Bytes) {
        if self.closing {
            return;
        }
        let waiting = self.out.max_capacity() - self.out.capacity();
        if waiting >= self.handles.websocket.outbound_buffer_frames {
            slog::warn!(self.handles.log, "device is not reading its stream; dropping it"; "socket" => self.id);
            return self.close(ctx, close::POLICY, "outbound buffer full");
        }
        if self.out.try_send(bytes).is_err() {
            // The client went away.
            self.closing = true;
            ctx.stop();
        }
    }

    fn close(&mut self, ctx: &mut Context<Self>, code: u16, reason: &str) {
        if self.closing {
            return;
        }
        self.closing = true;
        self.handles.metrics.ws_closed(code);
        slog::info!(self.handles.log, "stream closed"; "socket" => self.id, "device_id" => self.device.as_str(), "code" => code, "reason" => reason);
        let data = serde_json::json!({ "type": "close", "code": code, "reason": reason });
        // The reserved slot: a full stream still gets to say why it ends.
        let _ = self
            .out
            .try_send(event("close", data.to_string().as_bytes()));
        ctx.stop();
    }
}

impl Actor for DeviceStream {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let heartbeat = Duration::from_secs(self.handles.websocket.heartbeat_seconds);
        ctx.add_stream(self.handles.clock.interval(heartbeat));
        slog::info!(self.handles.log, "stream opened"; "socket" => self.id, "device_id" => self.device.as_str());
        let hello = Hello {
            kind: "hello",
            device_id: self.device.as_str(),
            heartbeat_seconds: self.handles.websocket.heartbeat_seconds,
            server_time: rfc3339(self.handles.clock.now_ms()),
        };
        match serde_json::to_vec(&hello) {
            Ok(json) => self.send(ctx, event("hello", &json)),
            Err(e) => slog::error!(self.handles.log, "could not encode a frame"; "error" => %e),
        }
        self.handles.registry.do_send(Register {
            device: self.device.clone(),
            socket: self.id,
            send: ctx.address().recipient(),
            close: ctx.address().recipient(),
        });
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        if let Some(ip) = self.peer.take() {
            self.handles.limits.close_socket(ip);
        }
        self.handles.registry.do_send(Unregister {
            device: self.device.clone(),
            socket: self.id,
        });
    }
}

impl StreamHandler<()> for DeviceStream {
    fn handle(&mut self, _tick: (), ctx: &mut Self::Context) {
        if self.handles.clock.now_ms() >= self.token_exp.saturating_mul(1_000) {
            return self.close(ctx, close::UNAUTHORIZED, "token expired");
        }
        self.send(ctx, Bytes::from_static(PING));
    }

    fn finished(&mut self, _ctx: &mut Self::Context) {}
}

impl Handler<SendFrame> for DeviceStream {
    type Result = ();

    fn handle(&mut self, msg: SendFrame, ctx: &mut Self::Context) {
        self.send(ctx, event("notifications", &msg.frame));
    }
}

impl Handler<CloseSocket> for DeviceStream {
    type Result = ();

    fn handle(&mut self, msg: CloseSocket, ctx: &mut Self::Context) {
        self.close(ctx, msg.code, &msg.reason);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_its_name_and_one_data_line() {
        assert_eq!(
            &event("hello", br#"{"type":"hello"}"#)[..],
            b"event: hello\ndata: {\"type\":\"hello\"}\n\n"
        );
    }
}
