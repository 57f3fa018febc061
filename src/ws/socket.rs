//! One actor per device WebSocket.
//!
//! The actor reads frames from the aggregated actix-ws stream, answers pings, parses `auth` and
//! `ack` frames, and counts bad ones (an `error` frame each; the tenth closes with 1008). Every
//! inbound frame takes a token of the frame limit (4008 when none is left) except an ack of a
//! notification this socket sent and that is not acked yet ([`Outstanding`]). Outbound
//! frames wait in a bounded [`Outbox`] and are written in order by a writer task that runs only
//! while something waits: a device that stops reading fills the outbox and is dropped (its
//! deliveries stay pending in the queue and are sent again when it comes back). An idle socket
//! therefore holds no channel and no task of its own beyond the actor (memory per idle connection
//! is a target of `docs/benchmarks.md`). Heartbeats run on the injected clock, so tests can advance
//! time instead of sleeping. The socket registers with the session registry once authenticated and
//! unregisters in `stopped`, whatever ended it. It sees only the [`SocketHandles`] it needs.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_ws::{AggregatedMessage, CloseCode, CloseReason, ProtocolError, Session};
use bytes::Bytes;
use bytestring::ByteString;

use beepmyphone_actors::clock::SharedClock;
use beepmyphone_actors::metrics::Metrics;
use beepmyphone_actors::model::{rfc3339, DeviceId, NotificationId};
use beepmyphone_actors::queue::{Ack, NotificationQueue};
use beepmyphone_actors::registry::{Register, SessionRegistry, Unregister};
use beepmyphone_actors::socket::{CloseSocket, FrameItem, SendFrame};
use beepmyphone_actors::trace::TraceId;

use super::protocol::{close, ErrorFrame, Hello, Inbound, MAX_ACK_IDS};
use crate::config::WebSocketSettings;
use crate::domain::Jti;
use crate::security::device_auth::{DeviceAuthError, DeviceTokens};
use crate::security::limits::Limits;

static NEXT_SOCKET: AtomicU64 = AtomicU64::new(1);

/// A process-unique id for a socket or an event stream (the registry tells them apart by it).
pub(crate) fn next_socket_id() -> u64 {
    NEXT_SOCKET.fetch_add(1, Ordering::Relaxed)
}

/// Most notification ids a socket remembers as sent and not yet acked (the oldest are forgotten
/// first; an ack of a forgotten id merely counts against the frame limit again).
const MAX_OUTSTANDING: usize = 8_192;

/// The notifications sent on one socket and not yet acked on it. An ack frame that acks at least
/// one of them costs no inbound-frame token: such acks are bounded by what the relay itself sent,
/// so a device that acks every frame it gets is never closed for it.
#[derive(Default)]
struct Outstanding {
    /// Each with the trace of the request that published it, for the ack's log line.
    ids: HashMap<NotificationId, Option<TraceId>>,
    /// The ids in the order they were sent (may still hold acked ones), for forgetting the oldest.
    order: VecDeque<NotificationId>,
    /// The traces of the ids of the last [`Outstanding::acked`] call, in its order (`None` for
    /// one that was not outstanding); reused from ack to ack.
    acked_traces: Vec<Option<TraceId>>,
}

impl Outstanding {
    /// Remembers notifications just sent.
    fn sent(&mut self, items: &[FrameItem]) {
        for item in items {
            if self.ids.insert(item.id.clone(), item.trace_id).is_none() {
                self.order.push_back(item.id.clone());
            }
        }
        while self.ids.len() > MAX_OUTSTANDING || self.order.len() > 2 * MAX_OUTSTANDING {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            self.ids.remove(&old);
        }
        if self.ids.is_empty() {
            self.order.clear();
        }
    }

    /// Forgets acked ids, keeping their traces in `acked_traces`; `true` if at least one of them
    /// was outstanding.
    fn acked(&mut self, ids: &[NotificationId]) -> bool {
        let mut any = false;
        self.acked_traces.clear();
        for id in ids {
            let removed = self.ids.remove(id);
            any |= removed.is_some();
            self.acked_traces.push(removed.flatten());
        }
        if self.ids.is_empty() {
            self.order.clear();
        }
        any
    }
}

/// What a device socket uses of the relay, built once at start-up and shared by every socket
/// (instead of the whole application state).
pub struct SocketHandles {
    /// `[websocket]`: heartbeat, auth timeout, outbound buffer and bad-frame limits.
    pub websocket: WebSocketSettings,
    /// The clock heartbeats and token expiry run on.
    pub clock: SharedClock,
    /// The logger.
    pub log: slog::Logger,
    /// Where an authenticated socket registers (and unregisters in `stopped`).
    pub registry: Addr<SessionRegistry>,
    /// Where acks go.
    pub queue: Addr<NotificationQueue>,
    /// Checks the device tokens of `auth` frames.
    pub devices: DeviceTokens,
    /// The inbound-frame rule and the open-socket count a socket releases when it stops.
    pub limits: Arc<Limits>,
    /// Frames, bytes and close codes are counted here.
    pub metrics: Arc<Metrics>,
}

/// What waits to be written.
enum Outbound {
    Text(Bytes),
    Ping,
}

/// Where the socket is in its life.
#[derive(Debug, Clone, PartialEq)]
enum Phase {
    /// Waiting for an auth frame.
    Unauthenticated,
    /// Authenticated as this device.
    Authenticated(DeviceId),
    /// Closing; frames are ignored.
    Closing,
}

/// A socket's outbound side, shared by the actor and its writer task (both run on the arbiter
/// thread of the connection, hence `Rc<RefCell<…>>`).
struct Outbox {
    /// Messages waiting, oldest first; at most `websocket.outbound_buffer_frames` frames.
    frames: VecDeque<Outbound>,
    /// The write half while no writer task runs; the task takes it and gives it back.
    idle_writer: Option<Session>,
    /// Set when the socket closes: the writer sends this close frame after what waits, and ends.
    close: Option<CloseReason>,
    /// Where written frames are counted.
    metrics: Arc<Metrics>,
}

/// The writer task: writes what waits in `outbox`, in order, then returns the write half to it
/// (or sends the close frame, if the socket is closing). Writes wait while actix-ws's own small
/// channel is full, i.e. while the device does not read. A failed write closes the socket.
async fn write_out(outbox: Rc<RefCell<Outbox>>, mut writer: Session, socket: Addr<DeviceSocket>) {
    let metrics = outbox.borrow().metrics.clone();
    loop {
        let next = outbox.borrow_mut().frames.pop_front();
        let Some(message) = next else { break };
        let sent = match message {
            // The frames are JSON built from UTF-8 strings.
            Outbound::Text(bytes) => match ByteString::try_from(bytes) {
                Ok(text) => {
                    let len = text.len() as u64;
                    let sent = writer.text(text).await;
                    if sent.is_ok() {
                        metrics.ws_frames_sent.inc();
                        metrics.ws_bytes_sent.inc_by(len);
                    }
                    sent
                }
                Err(_) => Ok(()),
            },
            Outbound::Ping => writer.ping(b"").await,
        };
        if sent.is_err() {
            socket.do_send(CloseSocket {
                code: close::GOING_AWAY,
                reason: "connection lost".into(),
            });
            return;
        }
    }
    let close = {
        let mut state = outbox.borrow_mut();
        match state.close.take() {
            Some(reason) => Some(reason),
            None => {
                // A burst may have grown the queue; an idle socket keeps no large buffer.
                if state.frames.capacity() > 16 {
                    state.frames = VecDeque::new();
                }
                state.idle_writer = Some(writer);
                return;
            }
        }
    };
    let _ = writer.close(close).await; // the peer may be gone already
}

/// The per-connection actor.
pub struct DeviceSocket {
    id: u64,
    handles: Arc<SocketHandles>,
    session: Session,
    outbox: Rc<RefCell<Outbox>>,
    pending_auth: Option<Result<(DeviceId, Jti, i64), DeviceAuthError>>,
    phase: Phase,
    /// Token expiry, seconds since the epoch.
    token_exp: i64,
    /// Last frame from the device, clock milliseconds.
    last_seen: i64,
    bad_frames: u32,
    /// The device this socket registered for; unregistered in `stopped`.
    registered: Option<DeviceId>,
    /// The client IP whose open-socket count this socket holds; released in `stopped`.
    peer: Option<std::net::IpAddr>,
    /// The inbound-frame rate limit's state (GCRA theoretical arrival time, µs).
    frames_tat_us: i64,
    /// Notifications sent on this socket and not yet acked (their acks are free of the frame limit).
    outstanding: Outstanding,
    /// When the socket started: the frame rate runs on real time (a frozen test clock would make
    /// every frame of a long test one burst).
    started: std::time::Instant,
}

impl DeviceSocket {
    /// A socket over `session`; `pre_auth` is the result of a header token, if one was sent.
    pub fn new(
        handles: Arc<SocketHandles>,
        session: Session,
        pre_auth: Option<Result<(DeviceId, Jti, i64), DeviceAuthError>>,
    ) -> Self {
        let metrics = handles.metrics.clone();
        Self {
            id: next_socket_id(),
            last_seen: handles.clock.now_ms(),
            handles,
            outbox: Rc::new(RefCell::new(Outbox {
                frames: VecDeque::new(),
                idle_writer: Some(session.clone()),
                close: None,
                metrics,
            })),
            session,
            pending_auth: pre_auth,
            phase: Phase::Unauthenticated,
            token_exp: 0,
            bad_frames: 0,
            registered: None,
            peer: None,
            frames_tat_us: 0,
            outstanding: Outstanding::default(),
            started: std::time::Instant::now(),
        }
    }

    /// Makes the socket release `ip`'s open-socket count when it stops.
    pub fn holding_socket_of(mut self, ip: std::net::IpAddr) -> Self {
        self.peer = Some(ip);
        self
    }

    /// Takes an inbound-frame token; closes the socket (4008) and returns `false` when none is left.
    fn charge_frame(&mut self, ctx: &mut Context<Self>) -> bool {
        let limits = &self.handles.limits;
        if limits.enabled
            && !crate::security::ratelimit::gcra_local(
                &limits.rules.frames,
                &mut self.frames_tat_us,
                i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX),
            )
        {
            self.handles
                .metrics
                .ratelimit_rejections
                .with_label_values(&[self.handles.limits.rules.frames.name])
                .inc();
            self.close(ctx, close::RATE_LIMITED, "too many frames");
            return false;
        }
        true
    }

    fn send_json(&mut self, ctx: &mut Context<Self>, value: &impl serde::Serialize) {
        match serde_json::to_vec(value) {
            Ok(bytes) => self.send_frame(ctx, Bytes::from(bytes)),
            Err(e) => slog::error!(self.handles.log, "could not encode a frame"; "error" => %e),
        }
    }

    fn send_frame(&mut self, ctx: &mut Context<Self>, frame: Bytes) {
        if self.phase == Phase::Closing {
            return;
        }
        let limit = self.handles.websocket.outbound_buffer_frames;
        if self.outbox.borrow().frames.len() >= limit {
            slog::warn!(self.handles.log, "device is not reading; dropping its socket"; "socket" => self.id);
            return self.close(ctx, close::POLICY, "outbound buffer full");
        }
        self.push(ctx, Outbound::Text(frame));
    }

    /// Queues a message and starts the writer task unless it runs.
    fn push(&mut self, ctx: &mut Context<Self>, message: Outbound) {
        let idle = {
            let mut outbox = self.outbox.borrow_mut();
            outbox.frames.push_back(message);
            outbox.idle_writer.take()
        };
        if let Some(writer) = idle {
            actix_rt::spawn(write_out(self.outbox.clone(), writer, ctx.address()));
        }
    }

    fn error_frame(&mut self, ctx: &mut Context<Self>, code: &str, message: &str) {
        self.send_json(
            ctx,
            &ErrorFrame {
                kind: "error",
                code,
                message,
            },
        );
        self.bad_frames += 1;
        if self.bad_frames >= self.handles.websocket.max_bad_frames {
            self.close(ctx, close::POLICY, "too many bad frames");
        }
    }

    /// The connection ended without a close frame: logged and counted as 1006 (which is never
    /// sent, only reported), then the actor stops.
    fn dropped(&mut self, ctx: &mut Context<Self>) {
        if self.phase != Phase::Closing {
            self.phase = Phase::Closing;
            self.handles.metrics.ws_closed(1006);
            slog::info!(self.handles.log, "socket closed"; "socket" => self.id, "device_id" => self.registered.as_ref().map(DeviceId::as_str), "code" => 1006, "reason" => "connection dropped");
        }
        ctx.stop();
    }

    /// Sends a close frame (best effort) and stops.
    fn close(&mut self, ctx: &mut Context<Self>, code: u16, reason: &str) {
        if self.phase == Phase::Closing {
            return;
        }
        self.phase = Phase::Closing;
        self.handles.metrics.ws_closed(code);
        slog::info!(self.handles.log, "socket closed"; "socket" => self.id, "device_id" => self.registered.as_ref().map(DeviceId::as_str), "code" => code, "reason" => reason);
        let reason = CloseReason {
            code: CloseCode::from(code),
            description: Some(reason.to_owned()),
        };
        // The close frame goes out after what already waits (e.g. the error frame that caused it),
        // from the writer task, which outlives the actor.
        let idle = {
            let mut outbox = self.outbox.borrow_mut();
            outbox.close = Some(reason);
            outbox.idle_writer.take()
        };
        if let Some(writer) = idle {
            actix_rt::spawn(write_out(self.outbox.clone(), writer, ctx.address()));
        }
        ctx.stop();
    }

    fn on_auth_result(
        &mut self,
        ctx: &mut Context<Self>,
        result: Result<(DeviceId, Jti, i64), DeviceAuthError>,
    ) {
        match (result, &self.phase) {
            (Ok((device, _jti, exp)), Phase::Unauthenticated) => {
                self.token_exp = exp;
                self.phase = Phase::Authenticated(device.clone());
                slog::info!(self.handles.log, "socket opened"; "socket" => self.id, "device_id" => device.as_str());
                let settings = &self.handles.websocket;
                let hello = Hello {
                    kind: "hello",
                    device_id: device.as_str(),
                    heartbeat_seconds: settings.heartbeat_seconds,
                    server_time: rfc3339(self.handles.clock.now_ms()),
                };
                self.send_json(ctx, &hello);
                self.handles.registry.do_send(Register {
                    device: device.clone(),
                    socket: self.id,
                    send: ctx.address().recipient(),
                    close: ctx.address().recipient(),
                });
                self.registered = Some(device);
            }
            (Ok((device, _jti, exp)), Phase::Authenticated(current)) => {
                if &device == current {
                    self.token_exp = exp; // in-band renewal
                } else {
                    self.close(ctx, close::UNAUTHORIZED, "token is for another device");
                }
            }
            (Ok(_), Phase::Closing) => {}
            (Err(DeviceAuthError::Gone), _) => self.close(ctx, close::REVOKED, "device revoked"),
            (Err(DeviceAuthError::Invalid(why)), _) => self.close(ctx, close::UNAUTHORIZED, why),
            (Err(DeviceAuthError::Store(_)), _) => {
                self.close(ctx, close::GOING_AWAY, "try again later")
            }
            // Fail closed: a token that might be revoked is not accepted, not even in-band.
            (Err(DeviceAuthError::Unavailable(_)), _) => self.close(
                ctx,
                close::TRY_AGAIN_LATER,
                "revocation cannot be checked; try again later",
            ),
        }
    }

    fn authenticate(&mut self, ctx: &mut Context<Self>, token: String) {
        let devices = self.handles.devices.clone();
        let check = async move { devices.authenticate(&token).await };
        ctx.wait(
            check
                .into_actor(self)
                .map(|result, act, ctx| act.on_auth_result(ctx, result)),
        );
    }

    fn on_text(&mut self, ctx: &mut Context<Self>, text: &str) {
        let frame = serde_json::from_str::<Inbound>(text);
        if !matches!(frame, Ok(Inbound::Ack { .. })) && !self.charge_frame(ctx) {
            return;
        }
        let frame = match frame {
            Ok(frame) => frame,
            Err(e) => {
                if self.phase == Phase::Unauthenticated {
                    return self.close(ctx, close::UNAUTHORIZED, "the first frame must be auth");
                }
                let message = e.to_string();
                return self.error_frame(
                    ctx,
                    "BAD_FRAME",
                    message.split(" at line ").next().unwrap_or("bad frame"),
                );
            }
        };
        match (frame, self.phase.clone()) {
            (Inbound::Auth { token }, Phase::Unauthenticated | Phase::Authenticated(_)) => {
                self.authenticate(ctx, token)
            }
            (Inbound::Ack { .. }, Phase::Unauthenticated) => {
                if self.charge_frame(ctx) {
                    self.close(ctx, close::UNAUTHORIZED, "the first frame must be auth")
                }
            }
            (Inbound::Ack { ids }, Phase::Authenticated(device)) => {
                let parsed: Option<Vec<NotificationId>> = if ids.len() <= MAX_ACK_IDS {
                    ids.iter().map(|id| NotificationId::parse(id)).collect()
                } else {
                    None
                };
                // Only a well-formed ack of something outstanding is free; other acks (of nothing
                // outstanding, or bad ones) count against the frame limit like any other frame.
                let free = parsed
                    .as_deref()
                    .is_some_and(|parsed| self.outstanding.acked(parsed));
                if !free && !self.charge_frame(ctx) {
                    return;
                }
                if ids.is_empty() || ids.len() > MAX_ACK_IDS {
                    return self.error_frame(ctx, "BAD_FRAME", "ack must carry 1 to 1000 ids");
                }
                let Some(parsed) = parsed else {
                    return self.error_frame(
                        ctx,
                        "BAD_FRAME",
                        "ack ids must be notification ids (ntf_…)",
                    );
                };
                // `acked` above saw these very ids and kept their traces, in order.
                let traces = &self.outstanding.acked_traces;
                for (i, id) in parsed.iter().enumerate() {
                    slog::debug!(self.handles.log, "ack received"; "notification_id" => %id, "trace_id" => traces.get(i).copied().flatten(), "device_id" => device.as_str(), "socket" => self.id);
                }
                self.handles.queue.do_send(Ack {
                    device,
                    ids: parsed,
                });
            }
            (_, Phase::Closing) => {}
        }
    }
}

impl Actor for DeviceSocket {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let settings = &self.handles.websocket;
        let auth_timeout = Duration::from_secs(settings.auth_timeout_seconds);
        let heartbeat = Duration::from_secs(settings.heartbeat_seconds);
        let first = if settings.heartbeat_spread {
            spread_offset(self.id, heartbeat)
        } else {
            heartbeat
        };
        ctx.add_stream(self.handles.clock.interval_from(first, heartbeat));
        match self.pending_auth.take() {
            Some(result) => self.on_auth_result(ctx, result),
            None => {
                ctx.run_later(auth_timeout, |act, ctx| {
                    if act.phase == Phase::Unauthenticated {
                        act.close(ctx, close::UNAUTHORIZED, "authentication timed out");
                    }
                });
            }
        }
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        if let Some(ip) = self.peer.take() {
            self.handles.limits.close_socket(ip);
        }
        if let Some(device) = self.registered.take() {
            self.handles.registry.do_send(Unregister {
                device: device.clone(),
                socket: self.id,
            });
        }
    }
}

/// When socket `id`'s first heartbeat comes: a point of `(0, period]` spread by the id (Fibonacci
/// hashing: consecutive ids land far apart), so that sockets opened together ping at different
/// times. Later heartbeats follow one period apart.
fn spread_offset(id: u64, period: Duration) -> Duration {
    let fraction = (id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) as f64 / (1u64 << 53) as f64;
    period.mul_f64(1.0 - fraction).max(Duration::from_millis(1))
}

/// Heartbeat ticks from the clock.
impl StreamHandler<()> for DeviceSocket {
    fn handle(&mut self, _tick: (), ctx: &mut Self::Context) {
        let now = self.handles.clock.now_ms();
        let heartbeat_ms =
            i64::try_from(self.handles.websocket.heartbeat_seconds).unwrap_or(30) * 1_000;
        if now - self.last_seen > 2 * heartbeat_ms {
            return self.close(ctx, close::GOING_AWAY, "heartbeat timeout");
        }
        if matches!(self.phase, Phase::Authenticated(_)) && now / 1_000 > self.token_exp {
            return self.close(ctx, close::UNAUTHORIZED, "the token has expired");
        }
        // A full outbox is dealt with by data frames; a ping is not worth closing for.
        if self.outbox.borrow().frames.len() < self.handles.websocket.outbound_buffer_frames {
            self.push(ctx, Outbound::Ping);
        }
    }

    fn finished(&mut self, _ctx: &mut Self::Context) {}
}

/// Frames from the device.
impl StreamHandler<Result<AggregatedMessage, ProtocolError>> for DeviceSocket {
    fn handle(&mut self, item: Result<AggregatedMessage, ProtocolError>, ctx: &mut Self::Context) {
        self.last_seen = self.handles.clock.now_ms();
        if self.phase == Phase::Closing {
            return;
        }
        // A text frame is charged once parsed: an ack of outstanding notifications is free.
        if !matches!(item, Ok(AggregatedMessage::Text(_))) && !self.charge_frame(ctx) {
            return;
        }
        match item {
            Ok(AggregatedMessage::Text(text)) => self.on_text(ctx, &text),
            Ok(AggregatedMessage::Binary(_)) => {
                if self.phase == Phase::Unauthenticated {
                    return self.close(ctx, close::UNAUTHORIZED, "the first frame must be auth");
                }
                self.error_frame(ctx, "UNSUPPORTED", "binary frames are not supported");
            }
            Ok(AggregatedMessage::Ping(bytes)) => {
                let mut session = self.session.clone();
                actix_rt::spawn(async move {
                    let _ = session.pong(&bytes).await; // the peer may be gone already
                });
            }
            Ok(AggregatedMessage::Pong(_)) => {}
            Ok(AggregatedMessage::Close(_)) => self.close(ctx, 1000, "bye"),
            Err(ProtocolError::Overflow) => self.close(ctx, close::TOO_BIG, "frame too large"),
            // A fragmented message over the limit: actix-ws reports it only as this I/O error.
            Err(ProtocolError::Io(e)) if e.to_string().contains("maximum continuation size") => {
                self.close(ctx, close::TOO_BIG, "message too large")
            }
            // The transport failed (e.g. EOF inside a frame): the connection is gone, there is
            // nobody to send a close frame to.
            Err(ProtocolError::Io(e)) => {
                slog::debug!(self.handles.log, "socket read failed"; "socket" => self.id, "error" => %e);
                self.dropped(ctx);
            }
            Err(e) => {
                slog::debug!(self.handles.log, "socket protocol error"; "socket" => self.id, "error" => %e);
                self.close(ctx, close::POLICY, "protocol error");
            }
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        self.dropped(ctx);
    }
}

impl Handler<SendFrame> for DeviceSocket {
    type Result = ();

    fn handle(&mut self, msg: SendFrame, ctx: &mut Self::Context) {
        if self.phase != Phase::Closing {
            self.outstanding.sent(&msg.ids);
        }
        self.send_frame(ctx, msg.frame);
    }
}

impl Handler<CloseSocket> for DeviceSocket {
    type Result = ();

    fn handle(&mut self, msg: CloseSocket, ctx: &mut Self::Context) {
        self.close(ctx, msg.code, &msg.reason);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_offsets_fall_within_the_period_and_cover_it() {
        let period = Duration::from_secs(30);
        let mut tenths = [0u32; 10];
        for id in 0..100 {
            let offset = spread_offset(id, period);
            assert!(
                offset > Duration::ZERO && offset <= period,
                "{id}: {offset:?}"
            );
            let tenth = (offset.as_secs_f64() / 3.0).floor().min(9.0) as usize;
            tenths[tenth] += 1;
        }
        // 100 consecutive sockets: every tenth of the interval has between 5 and 15 of them.
        assert!(tenths.iter().all(|n| (5..=15).contains(n)), "{tenths:?}");
    }
}
