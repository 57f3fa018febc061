//! W3C Trace Context ids as the relay carries them: the 16-byte trace id of the request that
//! published a notification, kept with the notification through the queue, the store, the batcher
//! and the socket, so that one id shows publish → commit → deliver → ack in the log.
//!
//! A [`TraceId`] is a plain 16-byte value (`Copy`, no allocation); it becomes the 32 lowercase hex
//! digits of the `traceparent` header only when it is written (a log line that is filtered out
//! never formats it).

use std::fmt;

/// A trace id: 16 bytes, never all zero (the W3C invalid value).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId([u8; 16]);

impl TraceId {
    /// From its bytes; `None` for all zeros, which W3C Trace Context forbids.
    pub fn from_bytes(bytes: [u8; 16]) -> Option<Self> {
        (bytes != [0; 16]).then_some(Self(bytes))
    }

    /// From a stored value: exactly 16 bytes, not all zero.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        Self::from_bytes(<[u8; 16]>::try_from(bytes).ok()?)
    }

    /// From 32 lowercase hex digits (as in `traceparent`); `None` for anything else or all zeros.
    pub fn parse_hex(hex: &str) -> Option<Self> {
        let mut bytes = [0; 16];
        parse_lower_hex(hex, &mut bytes)?;
        Self::from_bytes(bytes)
    }

    /// The bytes, as stored.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

/// Fills `out` from exactly `2 * out.len()` lowercase hex digits (W3C Trace Context allows no
/// upper case); `None` otherwise.
pub fn parse_lower_hex(hex: &str, out: &mut [u8]) -> Option<()> {
    let digits = hex.as_bytes();
    if digits.len() != out.len() * 2 {
        return None;
    }
    fn nibble(d: u8) -> Option<u8> {
        match d {
            b'0'..=b'9' => Some(d - b'0'),
            b'a'..=b'f' => Some(d - b'a' + 10),
            _ => None,
        }
    }
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(())
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl slog::Value for TraceId {
    fn serialize(
        &self,
        _record: &slog::Record,
        key: slog::Key,
        serializer: &mut dyn slog::Serializer,
    ) -> slog::Result {
        serializer.emit_arguments(key, &format_args!("{self}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_invalid_ids_are_refused() {
        let hex = "4bf92f3577b34da6a3ce929d0e0e4736";
        let id = TraceId::parse_hex(hex).unwrap();
        assert_eq!(id.to_string(), hex);
        assert_eq!(TraceId::from_slice(id.as_bytes()), Some(id));
        assert_eq!(TraceId::parse_hex(&"0".repeat(32)), None, "all zeros");
        assert_eq!(TraceId::parse_hex(&hex.to_uppercase()), None, "upper case");
        assert_eq!(TraceId::parse_hex(&hex[..31]), None, "short");
        assert_eq!(TraceId::parse_hex(&format!("{}g", &hex[..31])), None);
        assert_eq!(TraceId::from_slice(&[1; 15]), None);
        assert_eq!(TraceId::from_slice(&[0; 16]), None);
    }
}
