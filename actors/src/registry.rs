//! The session registry: which device has which live sockets.
//!
//! Sockets [`Register`] when they authenticate and [`Unregister`] when they stop. The first socket
//! of a device makes it online for the queue, the last one offline. Frames from the batcher
//! ([`Dispatch`]) go to every socket of their device; [`Kick`] closes them all (device deleted,
//! tokens revoked). What a socket accepts is declared beside its contract, in [`crate::socket`].

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use actix::prelude::*;
use bytes::Bytes;

use crate::guard::guarded;
use crate::model::DeviceId;
use crate::queue::{DeviceOffline, DeviceOnline};
use crate::socket::{CloseSocket, FrameItem, SendFrame};

/// A socket authenticated as `device`.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Register {
    /// The device.
    pub device: DeviceId,
    /// The socket's process-unique id.
    pub socket: u64,
    /// Where its frames go.
    pub send: Recipient<SendFrame>,
    /// How to close it.
    pub close: Recipient<CloseSocket>,
}

/// A socket stopped.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Unregister {
    /// The device.
    pub device: DeviceId,
    /// The socket's id.
    pub socket: u64,
}

/// A frame for every socket of a device.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Dispatch {
    /// The device.
    pub device: DeviceId,
    /// The frame.
    pub frame: Bytes,
    /// How many notifications it carries.
    pub items: usize,
    /// The notifications it carries, in order.
    pub ids: Arc<[FrameItem]>,
}

/// Closes every socket of a device.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Kick {
    /// The device.
    pub device: DeviceId,
    /// The close code.
    pub code: u16,
    /// The close reason.
    pub reason: String,
}

/// Closes every socket (server shutting down).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct CloseAll {
    /// The close code.
    pub code: u16,
    /// The close reason.
    pub reason: String,
}

/// Which of all devices are online now.
#[derive(Message, Debug)]
#[rtype(result = "HashSet<DeviceId>")]
pub struct OnlineDevices;

/// Counts for health and metrics.
#[derive(Message, Debug)]
#[rtype(result = "RegistryStats")]
pub struct GetRegistryStats;

/// The registry's counts.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistryStats {
    /// Devices with at least one socket.
    pub devices: usize,
    /// Open sockets.
    pub sockets: usize,
    /// Frames handed to sockets since start.
    pub frames: u64,
    /// Notifications carried by those frames.
    pub items: u64,
}

struct SocketEntry {
    id: u64,
    send: Recipient<SendFrame>,
    close: Recipient<CloseSocket>,
}

/// The registry actor.
pub struct SessionRegistry {
    sockets: HashMap<DeviceId, Vec<SocketEntry>>,
    online: Recipient<DeviceOnline>,
    offline: Recipient<DeviceOffline>,
    frames: u64,
    items: u64,
    log: slog::Logger,
    /// Counts restarts, when set ([`SessionRegistry::with_restarts`]).
    restarts: Option<prometheus::IntCounter>,
}

impl SessionRegistry {
    /// A registry that reports presence to the queue.
    pub fn new(
        online: Recipient<DeviceOnline>,
        offline: Recipient<DeviceOffline>,
        log: slog::Logger,
    ) -> Self {
        Self {
            sockets: HashMap::new(),
            online,
            offline,
            frames: 0,
            items: 0,
            log,
            restarts: None,
        }
    }

    /// Counts this actor's restarts into `counter` (`beepmyphone_actor_restarts_total{actor}`).
    pub fn with_restarts(mut self, counter: prometheus::IntCounter) -> Self {
        self.restarts = Some(counter);
        self
    }
}

impl Actor for SessionRegistry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(crate::MAILBOX_CAPACITY);
    }
}

impl Supervised for SessionRegistry {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        if let Some(counter) = &self.restarts {
            counter.inc();
        }
        // The socket table is plain data that each socket keeps true through Register and
        // Unregister; drop entries whose socket is already gone and keep the rest.
        self.sockets.retain(|_, entries| {
            entries.retain(|e| e.send.connected());
            !entries.is_empty()
        });
        for device in self.sockets.keys() {
            self.online.do_send(DeviceOnline {
                device: device.clone(),
            });
        }
    }
}

impl Handler<Register> for SessionRegistry {
    type Result = ();

    fn handle(&mut self, msg: Register, ctx: &mut Self::Context) {
        let log = self.log.clone();
        guarded("registry", &log, ctx, |_| {
            let entries = self.sockets.entry(msg.device.clone()).or_default();
            let first = entries.is_empty();
            entries.push(SocketEntry {
                id: msg.socket,
                send: msg.send,
                close: msg.close,
            });
            if first {
                self.online.do_send(DeviceOnline { device: msg.device });
            }
        });
    }
}

impl Handler<Unregister> for SessionRegistry {
    type Result = ();

    fn handle(&mut self, msg: Unregister, ctx: &mut Self::Context) {
        let log = self.log.clone();
        guarded("registry", &log, ctx, |_| {
            if let Some(entries) = self.sockets.get_mut(&msg.device) {
                entries.retain(|e| e.id != msg.socket);
                if entries.is_empty() {
                    self.sockets.remove(&msg.device);
                    self.offline.do_send(DeviceOffline { device: msg.device });
                }
            }
        });
    }
}

impl Handler<Dispatch> for SessionRegistry {
    type Result = ();

    fn handle(&mut self, msg: Dispatch, _ctx: &mut Self::Context) {
        if let Some(entries) = self.sockets.get(&msg.device) {
            for entry in entries {
                entry.send.do_send(SendFrame {
                    frame: msg.frame.clone(),
                    ids: msg.ids.clone(),
                });
            }
            self.frames += 1;
            self.items += msg.items as u64;
        }
        // No socket: the device went offline meanwhile; the queue requeues its in-flight items.
    }
}

impl Handler<Kick> for SessionRegistry {
    type Result = ();

    fn handle(&mut self, msg: Kick, _ctx: &mut Self::Context) {
        if let Some(entries) = self.sockets.get(&msg.device) {
            for entry in entries {
                entry.close.do_send(CloseSocket {
                    code: msg.code,
                    reason: msg.reason.clone(),
                });
            }
        }
    }
}

impl Handler<CloseAll> for SessionRegistry {
    type Result = ();

    fn handle(&mut self, msg: CloseAll, _ctx: &mut Self::Context) {
        for entry in self.sockets.values().flatten() {
            entry.close.do_send(CloseSocket {
                code: msg.code,
                reason: msg.reason.clone(),
            });
        }
    }
}

impl Handler<OnlineDevices> for SessionRegistry {
    type Result = MessageResult<OnlineDevices>;

    fn handle(&mut self, _msg: OnlineDevices, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.sockets.keys().cloned().collect())
    }
}

impl Handler<GetRegistryStats> for SessionRegistry {
    type Result = MessageResult<GetRegistryStats>;

    fn handle(&mut self, _msg: GetRegistryStats, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(RegistryStats {
            devices: self.sockets.len(),
            sockets: self.sockets.values().map(Vec::len).sum(),
            frames: self.frames,
            items: self.items,
        })
    }
}
