//! End-to-end encryption: `POST /e2e/keys` (publish or admin token), the public keys of the
//! devices a publish would reach, so that a publisher can seal one envelope per device
//! (`crate::crypto::e2e`; docs/api.md, "End-to-end encryption").
//!
//! The targets are resolved from the store as a publish resolves them (`"all"`, `group:NAME`,
//! device ids): an unknown device or an empty group is a 422, and so is a device without a key,
//! named, because a publisher that asked for encryption must not fall back to plaintext.

use std::collections::BTreeMap;

use actix_web::{web, HttpResponse};
use garde::Validate;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use beepmyphone_actors::queue::Targets;

use crate::api::auth::Principal;
use crate::api::body::Json;
use crate::api::schemas::{check, TargetsBody};
use crate::crypto::e2e::encode_key;
use crate::error::{ApiError, FieldError};
use crate::state::AppState;
use crate::store::devices::{self, DeviceRow};

/// This module's operations in the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(device_keys))]
pub struct Api;

/// Registers the routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/e2e/keys", web::post().to(device_keys));
}

/// `POST /e2e/keys`.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeysRequest {
    /// Who the notification is for, as in a publish (`"all"` when absent).
    #[garde(dive)]
    pub targets: Option<TargetsBody>,
}

/// One device's public key.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceKey {
    /// The device (the envelope's associated data).
    pub device_id: String,
    /// Its X25519 public key, 32 bytes as base64url without padding.
    pub public_key: String,
}

/// `200` body of `POST /e2e/keys`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct KeysResponse {
    /// One key per enabled device the targets reach, in device id order.
    pub keys: Vec<DeviceKey>,
}

/// The enabled devices `targets` reaches, or the problems: unknown devices and groups without a
/// device (as a publish reports them), then devices without a key.
fn resolve(rows: &[DeviceRow], targets: &Targets) -> Result<Vec<DeviceKey>, ApiError> {
    let mut reached: BTreeMap<&str, &DeviceRow> = BTreeMap::new();
    let mut unknown = Vec::new();
    match targets {
        Targets::All => reached.extend(rows.iter().map(|r| (r.id.as_str(), r))),
        Targets::Listed { devices, groups } => {
            for device in devices {
                match rows.iter().find(|r| r.id == device.as_str()) {
                    Some(row) => {
                        reached.insert(row.id.as_str(), row);
                    }
                    None => unknown.push(FieldError::new(
                        "targets",
                        format!("unknown device {device}"),
                    )),
                }
            }
            for group in groups {
                let members: Vec<&DeviceRow> = rows
                    .iter()
                    .filter(|r| r.groups.binary_search(group).is_ok())
                    .collect();
                if members.is_empty() {
                    unknown.push(FieldError::new(
                        "targets",
                        format!("no device is in group {group}"),
                    ));
                }
                reached.extend(members.into_iter().map(|r| (r.id.as_str(), r)));
            }
        }
    }
    if !unknown.is_empty() {
        return Err(ApiError::Unprocessable {
            detail: "some targets are no device or no group".into(),
            errors: unknown,
        });
    }
    reached.retain(|_, row| row.enabled);
    let missing: Vec<FieldError> = reached
        .values()
        .filter(|row| row.e2e_public_key.is_none())
        .map(|row| {
            FieldError::new(
                "targets",
                format!(
                    "device {} has no end-to-end key; pair it with one or publish without --e2e",
                    row.id
                ),
            )
        })
        .collect();
    if !missing.is_empty() {
        let detail = missing
            .iter()
            .map(|e| e.reason.clone())
            .collect::<Vec<_>>()
            .join("; ");
        return Err(ApiError::Unprocessable {
            detail,
            errors: missing,
        });
    }
    if reached.is_empty() {
        return Err(ApiError::Unprocessable {
            detail: "the targets reach no enabled device".into(),
            errors: vec![FieldError::new("targets", "reach no enabled device")],
        });
    }
    Ok(reached
        .values()
        .filter_map(|row| {
            row.e2e_public_key.as_ref().map(|key| DeviceKey {
                device_id: row.id.clone(),
                public_key: encode_key(key),
            })
        })
        .collect())
}

#[utoipa::path(post, path = "/api/v1/e2e/keys", tag = "notifications", request_body = KeysRequest,
    responses((status = 200, description = "The public key of every enabled device the targets reach", body = KeysResponse),
        (status = 422, description = "Unknown target devices or groups, or a device without an end-to-end key", body = crate::error::Problem, content_type = "application/problem+json")))]
async fn device_keys(
    state: web::Data<AppState>,
    principal: Principal,
    Json(request): Json<KeysRequest>,
) -> Result<HttpResponse, ApiError> {
    principal.require_publisher()?;
    check(&request)?;
    let targets = request
        .targets
        .map_or(Targets::All, TargetsBody::into_targets);
    let cipher = state.store.cipher()?.clone();
    let rows: Vec<DeviceRow> = state
        .store
        .run(move |conn| devices::all(conn, &cipher)?.into_iter().collect())
        .await?;
    let keys = resolve(&rows, &targets)?;
    Ok(HttpResponse::Ok().json(KeysResponse { keys }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use beepmyphone_actors::model::DeviceId;

    fn device(id: &str, groups: &[&str], key: Option<[u8; 32]>) -> DeviceRow {
        DeviceRow {
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            e2e_public_key: key,
            ..DeviceRow::for_tests(id, "d", "linux")
        }
    }

    fn listed(devices: &[&str], groups: &[&str]) -> Targets {
        Targets::Listed {
            devices: devices.iter().map(|d| DeviceId::from_trusted(*d)).collect(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        }
    }

    fn reasons(result: Result<Vec<DeviceKey>, ApiError>) -> Vec<String> {
        match result {
            Err(ApiError::Unprocessable { errors, .. }) => {
                errors.into_iter().map(|e| e.reason).collect()
            }
            other => panic!("expected a 422, got {other:?}"),
        }
    }

    #[test]
    fn groups_and_ids_resolve_to_the_enabled_devices_keys() {
        let mut off = device("dev_c", &["ops"], None);
        off.enabled = false;
        let rows = vec![
            device("dev_a", &["ops"], Some([1; 32])),
            device("dev_b", &[], Some([2; 32])),
            off,
        ];
        let keys = resolve(&rows, &listed(&["dev_b"], &["ops"])).unwrap();
        let ids: Vec<&str> = keys.iter().map(|k| k.device_id.as_str()).collect();
        assert_eq!(ids, ["dev_a", "dev_b"]);
        assert_eq!(keys[1].public_key, encode_key(&[2; 32]));
        assert_eq!(resolve(&rows, &Targets::All).unwrap().len(), 2);
    }

    #[test]
    fn unknown_targets_and_missing_keys_are_named() {
        let rows = vec![device("dev_a", &["ops"], None)];
        assert_eq!(
            reasons(resolve(&rows, &listed(&["dev_x"], &["nobody"]))),
            ["unknown device dev_x", "no device is in group nobody"]
        );
        let missing = reasons(resolve(&rows, &listed(&[], &["ops"])));
        assert_eq!(
            missing,
            ["device dev_a has no end-to-end key; pair it with one or publish without --e2e"]
        );
        assert_eq!(
            reasons(resolve(&[], &Targets::All)),
            ["reach no enabled device"]
        );
    }
}
