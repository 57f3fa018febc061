//! The session bus side of `capture`: a monitor connection that sees every
//! `org.freedesktop.Notifications.Notify` call on the bus, beside the desktop's notification
//! daemon (which goes on owning `org.freedesktop.Notifications` and showing them), and the
//! decoding of such a call into a [`Captured`].
//!
//! A monitor (`org.freedesktop.DBus.Monitoring.BecomeMonitor`) only receives: it cannot send or
//! answer anything, owns no name, and the daemon delivers it copies of the calls its match rule
//! names. The calls go on to their destination whether or not anyone monitors them.

use std::collections::HashMap;

use futures_util::StreamExt;
use zbus::message::Type as MessageType;
use zbus::{Connection, MatchRule, Message, MessageStream, Variant};

use super::rules::Captured;

/// The interface of desktop notifications.
pub const INTERFACE: &str = "org.freedesktop.Notifications";
/// The method that shows one.
pub const MEMBER: &str = "Notify";
/// The match rule handed to `BecomeMonitor`.
pub const MATCH_RULE: &str =
    "type='method_call',interface='org.freedesktop.Notifications',member='Notify'";

/// The body of `Notify`: app_name, replaces_id, app_icon, summary, body, actions, hints,
/// expire_timeout (signature `susssasa{sv}i`).
type NotifyBody<'m> = (
    &'m str,
    u32,
    &'m str,
    &'m str,
    &'m str,
    Vec<&'m str>,
    HashMap<&'m str, Variant<'m>>,
    i32,
);

/// What can go wrong on the bus.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The session bus could not be reached (no `DBUS_SESSION_BUS_ADDRESS`, no daemon, …).
    #[error("cannot connect to the session bus: {0}")]
    Connect(zbus::Error),
    /// The bus refused to make this connection a monitor.
    #[error("the session bus refused BecomeMonitor: {0}")]
    Monitor(zbus::Error),
    /// A `Notify` call whose body is not `susssasa{sv}i`.
    #[error("a Notify call with an unexpected body ({signature}): {source}")]
    Body {
        /// The body's signature.
        signature: String,
        /// Why it did not decode.
        #[source]
        source: zbus::Error,
    },
    /// The connection failed while reading.
    #[error("reading from the session bus: {0}")]
    Read(zbus::Error),
}

/// A monitor connection to the session bus.
#[derive(Debug)]
pub struct Monitor {
    stream: MessageStream,
}

impl Monitor {
    /// Connects to the session bus (`DBUS_SESSION_BUS_ADDRESS`) and becomes a monitor of
    /// `Notify` calls.
    pub async fn connect() -> Result<Self, BusError> {
        let conn = Connection::session().await.map_err(BusError::Connect)?;
        Self::become_monitor(conn).await
    }

    /// Turns `conn` into a monitor of `Notify` calls.
    pub async fn become_monitor(conn: Connection) -> Result<Self, BusError> {
        // The stream exists before the call, so nothing the bus sends right after it is lost.
        let stream = MessageStream::from(&conn);
        let rule = MatchRule::try_from(MATCH_RULE).map_err(BusError::Monitor)?;
        let monitoring = zbus::fdo::MonitoringProxy::new(&conn)
            .await
            .map_err(BusError::Monitor)?;
        monitoring
            .become_monitor(&[rule], 0)
            .await
            .map_err(|e| BusError::Monitor(e.into()))?;
        Ok(Self { stream })
    }

    /// The next `Notify` call; `None` once the bus connection has closed. Other messages (the
    /// bus's own signals to a new monitor) are passed over; a call whose body does not decode is
    /// an error, after which reading may go on.
    pub async fn next(&mut self) -> Option<Result<Captured, BusError>> {
        loop {
            let message = match self.stream.next().await? {
                Ok(message) => message,
                Err(e) => return Some(Err(BusError::Read(e))),
            };
            if let Some(captured) = decode(&message).transpose() {
                return Some(captured);
            }
        }
    }
}

/// The notification in a `Notify` method call; `None` for any other message.
pub fn decode(message: &Message) -> Result<Option<Captured>, BusError> {
    let header = message.header();
    let is_notify = header.message_type() == MessageType::MethodCall
        && header.interface().is_some_and(|i| i.as_str() == INTERFACE)
        && header.member().is_some_and(|m| m.as_str() == MEMBER);
    if !is_notify {
        return Ok(None);
    }
    let body = message.body();
    let fields: NotifyBody<'_> = body.deserialize().map_err(|source| BusError::Body {
        signature: body.signature().to_string(),
        source,
    })?;
    let (app_name, _replaces, app_icon, summary, text, _actions, hints, _expire) = fields;
    Ok(Some(Captured {
        app_name: app_name.to_owned(),
        app_icon: app_icon.to_owned(),
        summary: summary.to_owned(),
        body: text.to_owned(),
        urgency: hints.get("urgency").and_then(urgency),
    }))
}

/// The `urgency` hint: a byte by the specification; other integer types are read too, as some
/// senders use them.
fn urgency(value: &Variant<'_>) -> Option<u8> {
    match value {
        Variant::U8(b) => Some(*b),
        Variant::I16(n) => u8::try_from(*n).ok(),
        Variant::U16(n) => u8::try_from(*n).ok(),
        Variant::I32(n) => u8::try_from(*n).ok(),
        Variant::U32(n) => u8::try_from(*n).ok(),
        Variant::I64(n) => u8::try_from(*n).ok(),
        Variant::U64(n) => u8::try_from(*n).ok(),
        Variant::Variant(inner) => urgency(inner),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notify(hints: HashMap<&str, Variant<'_>>) -> Message {
        let body: NotifyBody<'_> = (
            "Chat",
            0,
            "im-message",
            "Ann",
            "<b>hi</b>",
            vec!["default", "Open"],
            hints,
            -1,
        );
        Message::method_call("/org/freedesktop/Notifications", MEMBER)
            .interface(INTERFACE)
            .destination(INTERFACE)
            .build(&body)
            .unwrap()
    }

    #[test]
    fn a_notify_call_decodes() {
        let mut hints = HashMap::new();
        hints.insert("urgency", Variant::U8(2));
        hints.insert("desktop-entry", Variant::from("chat"));
        let captured = decode(&notify(hints)).unwrap().unwrap();
        assert_eq!(
            captured,
            Captured {
                app_name: "Chat".into(),
                app_icon: "im-message".into(),
                summary: "Ann".into(),
                body: "<b>hi</b>".into(),
                urgency: Some(2),
            }
        );
    }

    #[test]
    fn urgency_is_read_from_other_integer_types_and_may_be_absent() {
        assert_eq!(
            decode(&notify(HashMap::new())).unwrap().unwrap().urgency,
            None
        );
        let mut hints = HashMap::new();
        hints.insert("urgency", Variant::I32(0));
        assert_eq!(decode(&notify(hints)).unwrap().unwrap().urgency, Some(0));
        let mut hints = HashMap::new();
        hints.insert("urgency", Variant::from("high"));
        assert_eq!(decode(&notify(hints)).unwrap().unwrap().urgency, None);
        let mut hints = HashMap::new();
        hints.insert("urgency", Variant::I32(-1));
        assert_eq!(decode(&notify(hints)).unwrap().unwrap().urgency, None);
    }

    #[test]
    fn other_messages_are_not_notifications() {
        let close = Message::method_call("/org/freedesktop/Notifications", "CloseNotification")
            .interface(INTERFACE)
            .build(&(7u32,))
            .unwrap();
        assert!(decode(&close).unwrap().is_none());
        let other = Message::method_call("/x", MEMBER)
            .interface("org.example.Other")
            .build(&())
            .unwrap();
        assert!(decode(&other).unwrap().is_none());
    }

    #[test]
    fn a_notify_call_with_another_body_is_an_error() {
        let odd = Message::method_call("/org/freedesktop/Notifications", MEMBER)
            .interface(INTERFACE)
            .build(&("only a string",))
            .unwrap();
        match decode(&odd) {
            Err(BusError::Body { signature, .. }) => assert_eq!(signature, "s"),
            other => panic!("expected a body error, got {other:?}"),
        }
    }

    #[test]
    fn the_match_rule_parses() {
        let rule = MatchRule::try_from(MATCH_RULE).unwrap();
        assert_eq!(rule.to_string(), MATCH_RULE);
    }
}
