//! The frames of the device protocol.

use serde::{Deserialize, Serialize};

/// Most ids in one ack frame.
pub const MAX_ACK_IDS: usize = 1_000;

/// A frame from the device.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Inbound {
    /// Authenticate, or extend the session with a fresh access token.
    Auth {
        /// An access token.
        token: String,
    },
    /// Acknowledge notifications.
    Ack {
        /// Notification ids.
        ids: Vec<String>,
    },
}

/// `hello`, sent once authenticated.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Hello<'a> {
    /// Always `hello`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The authenticated device.
    pub device_id: &'a str,
    /// Seconds between pings.
    pub heartbeat_seconds: u64,
    /// The server's time, RFC 3339.
    pub server_time: String,
}

/// `error`, for a bad frame.
#[derive(Debug, Serialize)]
pub struct ErrorFrame<'a> {
    /// Always `error`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Stable code: `BAD_FRAME`, `UNSUPPORTED`, `UNAUTHORIZED`.
    pub code: &'a str,
    /// What was wrong.
    pub message: &'a str,
}

/// Close codes of the protocol.
pub mod close {
    /// Token missing, invalid or expired.
    pub const UNAUTHORIZED: u16 = 4001;
    /// Device revoked or deleted.
    pub const REVOKED: u16 = 4003;
    /// Rate limited.
    pub const RATE_LIMITED: u16 = 4008;
    /// Protocol violation (too many bad frames, outbound buffer overrun).
    pub const POLICY: u16 = 1008;
    /// Frame too large.
    pub const TOO_BIG: u16 = 1009;
    /// Server shutting down, or heartbeat lost.
    pub const GOING_AWAY: u16 = 1001;
    /// The token's revocation status cannot be checked (Redis unreachable): reconnect later.
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbound_frames_parse_strictly() {
        assert_eq!(
            serde_json::from_str::<Inbound>(r#"{"type":"ack","ids":["ntf_1"]}"#).unwrap(),
            Inbound::Ack {
                ids: vec!["ntf_1".into()]
            }
        );
        assert!(matches!(
            serde_json::from_str::<Inbound>(r#"{"type":"auth","token":"t"}"#).unwrap(),
            Inbound::Auth { .. }
        ));
        assert!(serde_json::from_str::<Inbound>(r#"{"type":"dance"}"#).is_err());
        assert!(serde_json::from_str::<Inbound>(r#"{"type":"ack","ids":["a"],"x":1}"#).is_err());
        assert!(serde_json::from_str::<Inbound>("[1,2]").is_err());
    }
}
