//! The device socket's contract: the messages a device's WebSocket actor accepts.
//!
//! The socket actor itself lives in the binary (`src/ws/socket.rs`), which implements a handler
//! for each message here; the [`crate::registry::SessionRegistry`] holds one `Recipient` per
//! message for every registered socket and is the usual sender.

use std::sync::Arc;

use actix::prelude::*;
use bytes::Bytes;

use crate::model::NotificationId;
use crate::trace::TraceId;

/// A frame for one socket to write.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct SendFrame {
    /// A complete JSON text frame.
    pub frame: Bytes,
    /// The notifications it carries (the socket expects their acks).
    pub ids: Arc<[FrameItem]>,
}

/// A notification in a frame, as the socket remembers it until the device acks it.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameItem {
    /// Its id.
    pub id: NotificationId,
    /// The trace of the request that published it, for the ack's log line.
    pub trace_id: Option<TraceId>,
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
