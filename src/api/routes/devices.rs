//! Devices: `GET /devices`, `GET|PATCH|DELETE /devices/{id}`.
//!
//! Settings changes reach the queue at once (minimum priority, quiet hours, enabled, groups); deleting a
//! device cascades its tokens and deliveries in the store and closes its sockets with 4003.

use actix_web::{web, HttpResponse};
use serde::Serialize;

use beepmyphone_actors::feed::Activity;
use beepmyphone_actors::model::{rfc3339, DeviceId, Priority};
use beepmyphone_actors::queue::{RemoveDevice, UpsertDevice};
use beepmyphone_actors::registry::OnlineDevices;

use beepmyphone_actors::ports::{Action, Outcome};

use crate::api::audited::AuditContext;
use crate::api::auth::Principal;
use crate::api::body::Json;
use crate::api::middleware::RequestLog;
use crate::api::page_limit;
use crate::api::schemas::{check, DeviceListQuery, Page, PatchDeviceRequest, QuietHoursBody};
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::devices::{self, DeliveryCounts, DeviceChanges, DeviceRow};
use crate::store::StoreError;

/// WebSocket close code for a revoked device.
pub const CLOSE_REVOKED: u16 = 4003;

/// This module's operations in the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(list_devices, get_device, patch_device, delete_device))]
pub struct Api;

/// Registers the routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/devices", web::get().to(list_devices))
        .route("/devices/{id}", web::get().to(get_device))
        .route("/devices/{id}", web::patch().to(patch_device))
        .route("/devices/{id}", web::delete().to(delete_device));
}

/// A device as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceView {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) platform: String,
    pub(crate) app_version: Option<String>,
    /// `online` or `offline`.
    pub(crate) status: &'static str,
    pub(crate) created_at: String,
    pub(crate) last_seen_at: Option<String>,
    pub(crate) settings: SettingsView,
    /// The groups it belongs to, sorted: a publish to `group:NAME` reaches it.
    pub(crate) groups: Vec<String>,
    /// Its end-to-end public key (base64url), or null if it registered none.
    pub(crate) e2e_key: Option<String>,
    pub(crate) deliveries: DeliveryCounts,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SettingsView {
    pub(crate) enabled: bool,
    #[schema(value_type = crate::api::schemas::PriorityName)]
    pub(crate) min_priority: Priority,
    pub(crate) quiet_hours: Option<QuietHoursBody>,
}

/// The device as the API shows it; [`StoreError::Corrupt`] if its stored settings are (shown as
/// they are stored once they parse, never replaced by defaults).
fn view(
    row: DeviceRow,
    online: bool,
    deliveries: DeliveryCounts,
) -> Result<DeviceView, StoreError> {
    let min_priority = row.min_priority()?;
    let quiet_hours = match (
        row.quiet_hours()?,
        &row.quiet_start,
        &row.quiet_end,
        &row.quiet_tz,
    ) {
        (Some(_), Some(start), Some(end), Some(timezone)) => Some(QuietHoursBody {
            start: start.clone(),
            end: end.clone(),
            timezone: timezone.clone(),
        }),
        _ => None,
    };
    Ok(DeviceView {
        status: if online { "online" } else { "offline" },
        created_at: rfc3339(row.created_at),
        last_seen_at: row.last_seen_at.map(rfc3339),
        settings: SettingsView {
            enabled: row.enabled,
            min_priority,
            quiet_hours,
        },
        deliveries,
        groups: row.groups,
        e2e_key: row
            .e2e_public_key
            .as_ref()
            .map(crate::crypto::e2e::encode_key),
        id: row.id,
        name: row.name,
        platform: row.platform,
        app_version: row.app_version,
    })
}

async fn online_devices(state: &AppState) -> Result<std::collections::HashSet<DeviceId>, ApiError> {
    state
        .graph
        .registry
        .send(OnlineDevices)
        .await
        .map_err(|_| ApiError::Unavailable("the session registry is restarting; try again".into()))
}

fn parse_device_id(raw: &str) -> Result<DeviceId, ApiError> {
    DeviceId::parse(raw).ok_or_else(|| ApiError::NotFound(format!("no device {raw}")))
}

#[utoipa::path(get, path = "/api/v1/devices", tag = "devices", params(DeviceListQuery),
    responses((status = 200, description = "Devices, oldest first", body = Page<DeviceView>)))]
async fn list_devices(
    state: web::Data<AppState>,
    principal: Principal,
    query: web::Query<DeviceListQuery>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(list(&state, &principal, query.into_inner()).await?))
}

/// A page of devices, oldest first (for an admin).
pub(crate) async fn list(
    state: &AppState,
    principal: &Principal,
    query: DeviceListQuery,
) -> Result<Page<DeviceView>, ApiError> {
    principal.require_admin()?;
    check(&query)?;
    let limit = page_limit(query.limit)?;
    let want_online = query.status.as_deref().map(|s| s == "online");
    let online = online_devices(state).await?;
    let mut after = query.cursor.clone();
    let platform = query.platform;
    // Pages of the store, filtered by presence, until the page is full or the store is exhausted.
    let limit_items = usize::try_from(limit).unwrap_or(50);
    let mut items = Vec::new();
    let cipher = state.store.cipher()?.clone();
    'pages: loop {
        let (platform, from, cipher) = (platform.clone(), after.clone(), cipher.clone());
        let rows = state
            .store
            .run(move |conn| {
                devices::list(conn, &cipher, platform.as_deref(), from.as_deref(), limit)
            })
            .await?;
        let exhausted = rows.len() < limit_items;
        for row in rows {
            after = Some(row.id.clone());
            let is_online = online.contains(&row.device_id());
            if want_online.is_none_or(|w| w == is_online) {
                items.push((row, is_online));
                if items.len() == limit_items {
                    break 'pages;
                }
            }
        }
        if exhausted {
            after = None;
            break;
        }
    }
    let ids: Vec<String> = items.iter().map(|(row, _)| row.id.clone()).collect();
    let counts = state
        .store
        .run(move |conn| Ok(devices::delivery_counts(conn, &ids)?))
        .await?;
    let next_cursor = after;
    let items: Vec<DeviceView> = items
        .into_iter()
        .map(|(row, online)| {
            let counts = counts.get(&row.id).copied().unwrap_or_default();
            view(row, online, counts)
        })
        .collect::<Result<_, _>>()?;
    Ok(Page { items, next_cursor })
}

/// One device, for an admin or the device itself.
pub(crate) async fn get(
    state: &AppState,
    principal: &Principal,
    raw_id: &str,
) -> Result<DeviceView, ApiError> {
    let device = parse_device_id(raw_id)?;
    principal.require_admin_or_device(&device)?;
    load_view(state, &device).await
}

async fn load_view(state: &AppState, device: &DeviceId) -> Result<DeviceView, ApiError> {
    let id = device.to_string();
    let cipher = state.store.cipher()?.clone();
    let (row, counts) = state
        .store
        .run(move |conn| {
            let row = devices::get(conn, &cipher, &id)?;
            let counts = devices::delivery_counts(conn, std::slice::from_ref(&id))?;
            Ok((row, counts))
        })
        .await?;
    let row = row.ok_or_else(|| ApiError::NotFound(format!("no device {device}")))?;
    let online = online_devices(state).await?.contains(device);
    let counts = counts.get(&row.id).copied().unwrap_or_default();
    Ok(view(row, online, counts)?)
}

#[utoipa::path(get, path = "/api/v1/devices/{id}", tag = "devices", params(("id" = String, Path, description = "a device id (dev_…)")),
    responses((status = 200, description = "The device", body = DeviceView)))]
async fn get_device(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(get(&state, &principal, &path).await?))
}

/// The store changes of a patch that passed [`check`] (a value the rules refuse is an error here
/// too, never a default).
fn changes_from(request: PatchDeviceRequest) -> Result<DeviceChanges, ApiError> {
    let e2e_public_key = request
        .e2e_key
        .map(|key| {
            key.map(|raw| {
                crate::crypto::e2e::decode_key(&raw).map_err(|_| {
                    ApiError::field(
                        "e2eKey",
                        "must be an X25519 public key: 32 bytes as base64url",
                    )
                })
            })
            .transpose()
        })
        .transpose()?;
    let mut changes = DeviceChanges {
        name: request.name,
        groups: request.groups,
        e2e_public_key,
        ..DeviceChanges::default()
    };
    if let Some(settings) = request.settings {
        changes.enabled = settings.enabled;
        // The rules refused anything else already; never read a bad name as "no change".
        changes.min_priority = settings
            .min_priority
            .as_deref()
            .map(|raw| {
                Priority::parse(raw).map(Priority::as_i16).ok_or_else(|| {
                    ApiError::field(
                        "settings.minPriority",
                        "must be one of low, normal, high, critical",
                    )
                })
            })
            .transpose()?;
        match settings.quiet_hours {
            None => {}
            Some(None) => {
                changes.quiet_start = Some(None);
                changes.quiet_end = Some(None);
                changes.quiet_tz = Some(None);
            }
            Some(Some(q)) => {
                changes.quiet_start = Some(Some(q.start));
                changes.quiet_end = Some(Some(q.end));
                changes.quiet_tz = Some(Some(q.timezone));
            }
        }
    }
    Ok(changes)
}

#[utoipa::path(patch, path = "/api/v1/devices/{id}", tag = "devices", params(("id" = String, Path, description = "a device id (dev_…)")),
    request_body = PatchDeviceRequest,
    responses((status = 200, description = "The device after the change", body = DeviceView)))]
async fn patch_device(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<String>,
    Json(request): Json<PatchDeviceRequest>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(update(&state, &principal, &path, request).await?))
}

/// Changes a device's name or settings (an admin's or its own), effective at once.
pub(crate) async fn update(
    state: &AppState,
    principal: &Principal,
    raw_id: &str,
    request: PatchDeviceRequest,
) -> Result<DeviceView, ApiError> {
    let device = parse_device_id(raw_id)?;
    principal.require_admin_or_device(&device)?;
    check(&request)?;
    let changes = changes_from(request)?;
    let id = device.to_string();
    let cipher = state.store.cipher()?.clone();
    let row = state
        .store
        .write(move |conn| devices::update(conn, &cipher, &id, changes))
        .await?;
    let row = row.ok_or_else(|| ApiError::NotFound(format!("no device {device}")))?;
    let policy = row.policy()?;
    // Queued before the answer goes out, so a publish that follows it finds the device; a
    // restarting queue processes it after reloading (the store has the device either way).
    state.graph.queue.do_send(UpsertDevice {
        device: device.clone(),
        policy,
    });
    state.cluster.device_changed(&device);
    load_view(state, &device).await
}

#[utoipa::path(delete, path = "/api/v1/devices/{id}", tag = "devices", params(("id" = String, Path, description = "a device id (dev_…)")),
    responses((status = 204, description = "Deleted; its tokens are revoked and its sockets closed")))]
async fn delete_device(
    state: web::Data<AppState>,
    log: RequestLog,
    source: AuditContext,
    principal: Principal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    revoke(&state, &log, &source, &principal, &path).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Deletes a device (admin): its tokens and deliveries go, its sockets close with 4003.
pub(crate) async fn revoke(
    state: &AppState,
    log: &RequestLog,
    source: &AuditContext,
    principal: &Principal,
    raw_id: &str,
) -> Result<(), ApiError> {
    principal.require_admin()?;
    let device = parse_device_id(raw_id)?;
    let id = device.to_string();
    let event = |outcome| {
        source
            .by(principal, Action::DeviceDeleted, outcome)
            .on(device.to_string())
    };
    // Written before the device goes: a deletion is never unrecorded.
    state.audit.record_now(event(Outcome::Requested)).await?;
    let existed = state
        .store
        .write(move |conn| Ok(devices::delete(conn, &id)?))
        .await;
    let result = match &existed {
        Ok(true) => event(Outcome::Ok),
        Ok(false) => {
            event(Outcome::Failed).with_details(serde_json::json!({ "reason": "no such device" }))
        }
        Err(e) => {
            event(Outcome::Failed).with_details(serde_json::json!({ "reason": e.to_string() }))
        }
    };
    state.audit.record_result(result, log).await;
    if !existed? {
        return Err(ApiError::NotFound(format!("no device {device}")));
    }
    state.graph.queue.do_send(RemoveDevice {
        device: device.clone(),
    });
    state.cluster.device_changed(&device);
    state.cluster.kick(&device, CLOSE_REVOKED, "device revoked");
    state.graph.feed.emit(|| Activity::Revoked {
        device: device.clone(),
        at: state.clock.now_ms(),
    });
    slog::info!(log, "device deleted"; "device" => %device);
    Ok(())
}
