//! A text frame from a device on `GET /api/v1/ws`, read as `DeviceSocket::on_text` reads it:
//! `serde_json::from_str::<Inbound>`, then for `ack` the ids through `NotificationId::parse` (at
//! most `MAX_ACK_IDS`), for `auth` the token through `JwtKeys::verify_access`, and for anything
//! else the `BAD_FRAME` error frame's message.
//!
//! Checks: an accepted frame is a JSON object with exactly the fields of its type (serde's
//! internally tagged enum with `deny_unknown_fields`, compared with a plain `serde_json::Value`);
//! a parsed ack id is the text it came from; a token from the device never verifies (the key is
//! made here, so no corpus entry can hold a token it signed); the error frame is JSON.

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;

use beepmyphone::security::jwt::JwtKeys;
use beepmyphone::ws::protocol::{ErrorFrame, Inbound, MAX_ACK_IDS};
use beepmyphone_actors::model::NotificationId;

/// A real signing key, made once per process.
static KEYS: LazyLock<JwtKeys> = LazyLock::new(|| {
    let pem = openssl::rsa::Rsa::generate(2048)
        .and_then(|rsa| rsa.private_key_to_pem())
        .expect("an RSA key");
    JwtKeys::from_private_pem(&pem, "beepmyphone", "beepmyphone-devices").expect("the key ring")
});

fuzz_target!(|frame: &[u8]| {
    // actix-ws hands the actor text frames as UTF-8 (a `ByteString`); others are binary frames.
    let Ok(text) = std::str::from_utf8(frame) else {
        return;
    };
    match serde_json::from_str::<Inbound>(text) {
        Ok(inbound) => {
            let value: Value = serde_json::from_str(text).expect("an accepted frame is JSON");
            let object = value.as_object().expect("an accepted frame is an object");
            let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
            keys.sort_unstable();
            match inbound {
                Inbound::Auth { token } => {
                    assert_eq!(keys, ["token", "type"], "{text}");
                    assert_eq!(object["type"], "auth");
                    assert_eq!(object["token"], token.as_str());
                    assert!(
                        KEYS.verify_access(&token).is_err(),
                        "a token from the device verified: {token:?}"
                    );
                }
                Inbound::Ack { ids } => {
                    assert_eq!(keys, ["ids", "type"], "{text}");
                    assert_eq!(object["type"], "ack");
                    let listed = object["ids"].as_array().expect("ids is an array");
                    assert_eq!(listed.len(), ids.len());
                    for (raw, listed) in ids.iter().zip(listed) {
                        assert_eq!(listed.as_str(), Some(raw.as_str()));
                    }
                    if ids.len() <= MAX_ACK_IDS {
                        for raw in &ids {
                            if let Some(id) = NotificationId::parse(raw) {
                                assert_eq!(id.as_str(), raw);
                                assert!(raw.starts_with(NotificationId::PREFIX));
                            }
                        }
                    }
                }
            }
        }
        Err(e) => {
            // What the socket answers (on_text's `BAD_FRAME`).
            let message = e.to_string();
            let message = message.split(" at line ").next().unwrap_or("bad frame");
            let frame = ErrorFrame {
                kind: "error",
                code: "BAD_FRAME",
                message,
            };
            let json = serde_json::to_string(&frame).expect("the error frame serialises");
            let back: Value = serde_json::from_str(&json).expect("the error frame is JSON");
            assert_eq!(back["message"], message);
        }
    }
});
