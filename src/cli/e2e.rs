//! The client side of end-to-end encryption (`crate::crypto::e2e`): `send --e2e` and the capture
//! agent fetch the targets' public keys and publish one envelope per device; `listen` opens the
//! envelopes addressed to its device.
//!
//! Publishing: `POST /e2e/keys` with the targets, then one `POST /notifications/batch` (500 items
//! at most per request) with an item per device: `{"encrypted", "targets": [device], "priority",
//! "app"}`. The relay sees those fields, never the title, body, tags or click URL.

use serde::Deserialize;
use serde_json::{json, Value};

use super::relay::{ClientError, Relay};
use crate::crypto::e2e::{self, Content, SecretKey};

/// Items in one batch request (the relay's `MAX_BATCH`).
const BATCH: usize = 500;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeviceKey {
    device_id: String,
    public_key: String,
}

#[derive(Deserialize)]
struct Keys {
    keys: Vec<DeviceKey>,
}

#[derive(Deserialize)]
struct Published {
    id: String,
}

#[derive(Deserialize)]
struct Batch {
    items: Vec<Published>,
}

/// What an end-to-end publish sends in clear besides the envelope.
#[derive(Debug, Clone, Default)]
pub(crate) struct Visible {
    /// The `targets` of the keys request (`None`: all devices).
    pub(crate) targets: Option<Value>,
    /// The priority name.
    pub(crate) priority: Option<String>,
    /// The app name, if it may be shown to the relay.
    pub(crate) app: Option<String>,
    /// An idempotency key for the whole publish: each device's item gets `KEY:DEVICE`, so a
    /// resend (with new envelopes) queues nothing twice.
    pub(crate) idempotency_key: Option<String>,
}

/// Seals `content` for every device the targets reach and publishes it; returns the new
/// notification ids, one per device. A target without a key fails the whole publish (the relay's
/// 422 names it) before anything is sent.
pub(crate) async fn publish(
    relay: &Relay,
    token: &str,
    visible: &Visible,
    content: &Content,
) -> Result<Vec<String>, ClientError> {
    let mut request = json!({});
    if let Some(targets) = &visible.targets {
        request["targets"] = targets.clone();
    }
    let keys: Keys = relay.post_json("/e2e/keys", Some(token), &request).await?;
    let mut items = Vec::with_capacity(keys.keys.len());
    for key in &keys.keys {
        let public = e2e::decode_key(&key.public_key).map_err(|e| {
            ClientError::Transport(format!(
                "the relay sent a bad key for {}: {e}",
                key.device_id
            ))
        })?;
        let envelope = e2e::seal(&key.device_id, &public, content)
            .map_err(|e| ClientError::Transport(format!("device {}: {e}", key.device_id)))?;
        let mut item = json!({"encrypted": envelope, "targets": [key.device_id]});
        if let Some(priority) = &visible.priority {
            item["priority"] = json!(priority);
        }
        if let Some(app) = &visible.app {
            item["app"] = json!(app);
        }
        if let Some(idempotency) = &visible.idempotency_key {
            item["idempotencyKey"] = json!(format!("{idempotency}:{}", key.device_id));
        }
        items.push(item);
    }
    let mut ids = Vec::with_capacity(items.len());
    for chunk in items.chunks(BATCH) {
        let batch: Batch = relay
            .post_json(
                "/notifications/batch",
                Some(token),
                &json!({"items": chunk}),
            )
            .await?;
        ids.extend(batch.items.into_iter().map(|p| p.id));
    }
    Ok(ids)
}

/// A delivered item as `listen` shows it: an envelope is opened with the device's secret and its
/// fields merged in (with `"e2e": true`, without `encrypted`); one that does not open keeps its
/// envelope and gets an `"e2eError"` (with a warning on stderr), so that it is still acknowledged
/// rather than delivered again forever. Plain items are returned as they are.
pub(crate) fn reveal(item: &Value, device_id: &str, secret: Option<&str>) -> Value {
    let Some(envelope) = item["encrypted"].as_str() else {
        return item.clone();
    };
    let opened = match secret {
        None => Err("this device has no end-to-end key (its credentials predate it)".to_owned()),
        Some(secret) => SecretKey::from_base64(secret)
            .and_then(|secret| e2e::open(device_id, &secret, envelope))
            .map_err(|e| e.to_string()),
    };
    let mut shown = item.clone();
    match opened {
        Ok(content) => {
            if let Some(object) = shown.as_object_mut() {
                object.remove("encrypted");
            }
            shown["title"] = json!(content.title);
            shown["body"] = json!(content.body);
            if let Some(app) = content.app {
                shown["app"] = json!(app);
            }
            shown["tags"] = json!(content.tags);
            shown["clickUrl"] = json!(content.click_url);
            shown["e2e"] = json!(true);
        }
        Err(why) => {
            eprintln!(
                "beepmyphone: warning: notification {} does not open: {why}",
                item["id"].as_str().unwrap_or("?")
            );
            shown["e2eError"] = json!(why);
        }
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEVICE: &str = "dev_01HZZZZZZZZZZZZZZZZZZZZZZZ";

    #[test]
    fn listen_shows_the_opened_fields_or_the_error() {
        let (secret, public) = e2e::generate_keypair();
        let content = Content {
            title: "t".into(),
            body: "b".into(),
            ..Content::default()
        };
        let item = json!({
            "id": "ntf_1",
            "title": "Encrypted notification",
            "body": "",
            "priority": "high",
            "encrypted": e2e::seal(DEVICE, &public, &content).unwrap(),
        });
        let shown = reveal(&item, DEVICE, Some(&secret.to_base64()));
        assert_eq!(shown["title"], "t");
        assert_eq!(shown["body"], "b");
        assert_eq!(shown["priority"], "high");
        assert_eq!(shown["e2e"], true);
        assert!(shown.get("encrypted").is_none());
        let (other, _) = e2e::generate_keypair();
        let refused = reveal(&item, DEVICE, Some(&other.to_base64()));
        assert_eq!(refused["title"], "Encrypted notification");
        assert!(refused["e2eError"]
            .as_str()
            .unwrap()
            .contains("does not open"));
        assert!(reveal(&item, DEVICE, None)["e2eError"].is_string());
        let plain = json!({"id": "ntf_2", "title": "x"});
        assert_eq!(reveal(&plain, DEVICE, None), plain);
    }
}
