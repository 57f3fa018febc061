//! The device transports. The WebSocket: the per-connection actor ([`socket::DeviceSocket`]) and the frames it
//! speaks ([`protocol`]). The upgrade handler, `GET /api/v1/ws`, is
//! `crate::api::routes::socket::connect`; it starts one actor per connection with the shared
//! [`SocketHandles`].
//!
//! A token in the `Authorization` header is checked before the upgrade completes; without one the
//! socket must send `{"type":"auth","token":…}` within `websocket.auth_timeout_seconds`. A bad
//! token still upgrades, then closes with 4001 (4003 for a deleted device), so that clients see the
//! close codes of the protocol.

//!
//! Clients that cannot hold a WebSocket read the same frames as Server-Sent Events ([`sse`],
//! `GET /api/v1/stream`) and acknowledge over HTTP (`POST /api/v1/acks`).

pub mod protocol;
pub mod socket;
pub mod sse;

pub use socket::{DeviceSocket, SocketHandles};
