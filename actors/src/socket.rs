//! The device socket's contract: the messages a device's WebSocket actor accepts.
//!
//! The socket actor itself lives in the binary (`src/ws/socket.rs`), which implements a handler
//! for each message here; the [`crate::registry::SessionRegistry`] holds one `Recipient` per
//! message for every registered socket and is the usual sender.

use std::sync::Arc;

use actix::prelude::*;
use bytes::Bytes;

use crate::model::NotificationId;

/// A frame for one socket to write.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct SendFrame {
    /// A complete JSON text frame.
    pub frame: Bytes,
    /// The notifications it carries (the socket expects their acks).
    pub ids: Arc<[NotificationId]>,
}

/// Asks one socket to close with a WebSocket close code.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct CloseSocket {
    /// The close code (4003 revoked, 1001 shutting down, ...).
    pub code: u16,
    /// A short reason for the close frame.
    pub reason: String,
}
