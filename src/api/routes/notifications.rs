//! Notifications: `POST /notifications`, `POST /notifications/batch`, `GET /notifications`,
//! `GET /notifications/{id}`.
//!
//! A publish is validated here, serialised once into the device view, and handed to the queue,
//! which answers after the group commit that stores it: a 202 means durable.

use std::collections::HashMap;

use actix_web::{web, HttpResponse};
use serde::Serialize;

use beepmyphone_actors::model::{rfc3339, DeviceId, NotificationRecord, Priority};
use beepmyphone_actors::queue::{Enqueue, EnqueueOutcome, NewNotification, QueueError};

use crate::api::auth::Principal;
use crate::api::body::Json;
use crate::api::middleware::RequestLog;
use crate::api::schemas::{
    check, BatchRequest, BatchResponse, NotificationListQuery, Page, PublishRequest,
    PublishResponse, ValidPublish,
};
use crate::api::{page_limit, parse_time};
use crate::domain::DeliveryStatus;
use crate::error::{ApiError, FieldError};
use crate::state::AppState;
use crate::store::notifications::{self, DeliveryRow, ListFilter, NotificationRow};

/// This module's operations in the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(publish, publish_batch, list_notifications, get_notification))]
pub struct Api;

/// Registers the routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/notifications", web::post().to(publish))
        .route("/notifications", web::get().to(list_notifications))
        .route("/notifications/batch", web::post().to(publish_batch))
        .route("/notifications/{id}", web::get().to(get_notification));
}

async fn enqueue(
    state: &AppState,
    principal: &Principal,
    items: Vec<ValidPublish>,
    batch: bool,
) -> Result<Vec<EnqueueOutcome>, ApiError> {
    // The request's trace goes with each notification, to its commit, delivery and ack lines.
    let trace_id = crate::request_id::current_trace_id();
    let items = items
        .into_iter()
        .map(|v| NewNotification {
            payload: v.record.device_json(),
            record: NotificationRecord {
                trace_id,
                ..v.record
            },
            targets: v.targets,
            idempotency_key: v.idempotency_key,
        })
        .collect::<Vec<_>>();
    let send = |items| {
        let queue = state.graph.queue.clone();
        let publisher = principal.key();
        async move {
            queue
                .send(Enqueue { items, publisher })
                .await
                .map_err(|_| ApiError::Unavailable("the queue is restarting; try again".into()))
        }
    };
    // A device paired or changed through another relay of a cluster reaches this relay's queue
    // by a message that may not be here yet: before calling a target unknown, read it.
    let again = state.cluster.is_clustered().then(|| items.clone());
    let result = match (send(items).await?, again) {
        (Err(QueueError::UnknownTargets(unknown)), Some(items))
            if refresh_unknown(state, &unknown).await? =>
        {
            send(items).await?
        }
        (result, _) => result,
    };
    result.map_err(|e| match e {
        QueueError::UnknownTargets(unknown) => {
            let errors = unknown
                .into_iter()
                .flat_map(|(index, ids)| {
                    ids.into_iter().map(move |id| {
                        let field = if batch {
                            format!("items[{index}].targets")
                        } else {
                            "targets".to_owned()
                        };
                        let reason = match id.strip_prefix(crate::api::targets::GROUP_PREFIX) {
                            Some(group) => format!("no device is in group {group}"),
                            None => format!("unknown device {id}"),
                        };
                        FieldError::new(field, reason)
                    })
                })
                .collect();
            ApiError::Unprocessable {
                detail: "some targets are no device or no group; nothing was queued".into(),
                errors,
            }
        }
        // The cause was logged by the queue; the client only learns to retry.
        QueueError::Store(_) => {
            ApiError::Unavailable("the notification could not be stored; try again".into())
        }
        QueueError::Unavailable => {
            ApiError::Unavailable("the queue is restarting; try again".into())
        }
    })
}

/// Reads the devices behind unknown targets from the store (a named device, or every device for
/// a named group) and hands those it finds to the queue; whether it found any. For clustered
/// relays, whose queues learn of another relay's pairings by message.
async fn refresh_unknown(
    state: &AppState,
    unknown: &[(usize, Vec<String>)],
) -> Result<bool, ApiError> {
    let mut ids = Vec::new();
    let mut groups = Vec::new();
    for name in unknown.iter().flat_map(|(_, names)| names) {
        match name.strip_prefix(crate::api::targets::GROUP_PREFIX) {
            Some(group) => groups.push(group.to_owned()),
            None => ids.push(name.clone()),
        }
    }
    let cipher = state.store.cipher()?.clone();
    let found = state
        .store
        .run(move |conn| {
            let mut found = Vec::new();
            for id in &ids {
                found.extend(crate::store::devices::get(conn, &cipher, id)?);
            }
            if !groups.is_empty() {
                for row in crate::store::devices::all(conn, &cipher)? {
                    let row = row?;
                    if groups.iter().any(|g| row.groups.contains(g)) {
                        found.push(row);
                    }
                }
            }
            found
                .into_iter()
                .map(|row| Ok((row.device_id(), row.policy()?)))
                .collect::<Result<Vec<_>, crate::store::StoreError>>()
        })
        .await?;
    for (device, policy) in &found {
        state
            .graph
            .queue
            .do_send(beepmyphone_actors::queue::UpsertDevice {
                device: device.clone(),
                policy: policy.clone(),
            });
    }
    Ok(!found.is_empty())
}

#[utoipa::path(post, path = "/api/v1/notifications", tag = "notifications", request_body = PublishRequest,
    responses((status = 202, description = "Stored durably and queued", body = PublishResponse),
        (status = 422, description = "Unknown target devices or groups; nothing was queued", body = crate::error::Problem, content_type = "application/problem+json")))]
async fn publish(
    state: web::Data<AppState>,
    log: RequestLog,
    principal: Principal,
    Json(request): Json<PublishRequest>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Accepted().json(publish_one(&state, &log, &principal, request).await?))
}

/// Publishes one notification (what `POST /notifications` does, for the dashboard too).
pub(crate) async fn publish_one(
    state: &AppState,
    log: &RequestLog,
    principal: &Principal,
    request: PublishRequest,
) -> Result<PublishResponse, ApiError> {
    let published = publish_request(state, log, principal, request).await?;
    Ok(PublishResponse {
        id: published.outcome.id.to_string(),
        status: "queued".into(),
        targets: published.outcome.targets,
    })
}

/// A stored notification: the queue's answer and the times the relay gave it.
pub(crate) struct Published {
    pub(crate) outcome: EnqueueOutcome,
    /// Epoch ms.
    pub(crate) created_at: i64,
    /// Epoch ms.
    pub(crate) expires_at: i64,
}

/// Validates and publishes one notification (the ntfy and Gotify endpoints too).
pub(crate) async fn publish_request(
    state: &AppState,
    log: &RequestLog,
    principal: &Principal,
    request: PublishRequest,
) -> Result<Published, ApiError> {
    principal.require_publisher()?;
    let valid = request.validate_into_record(
        state.clock.now_ms(),
        state.settings.delivery.default_ttl_seconds,
    )?;
    let (created_at, expires_at) = (valid.record.created_at, valid.record.expires_at);
    let outcome = enqueue(state, principal, vec![valid], false).await?;
    let outcome = outcome
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::Internal("the queue answered nothing".into()))?;
    slog::info!(log, "notification published"; "notification_id" => %outcome.id, "targets" => outcome.targets, "duplicate" => outcome.duplicate);
    Ok(Published {
        outcome,
        created_at,
        expires_at,
    })
}

#[utoipa::path(post, path = "/api/v1/notifications/batch", tag = "notifications", request_body = BatchRequest,
    responses((status = 202, description = "All stored durably and queued", body = BatchResponse),
        (status = 422, description = "Unknown target devices or groups; nothing was queued", body = crate::error::Problem, content_type = "application/problem+json")))]
async fn publish_batch(
    state: web::Data<AppState>,
    log: RequestLog,
    principal: Principal,
    Json(request): Json<BatchRequest>,
) -> Result<HttpResponse, ApiError> {
    principal.require_publisher()?;
    check(&request)?;
    let now = state.clock.now_ms();
    let ttl = state.settings.delivery.default_ttl_seconds;
    let valid = request.into_valid(now, ttl)?;
    let outcomes = enqueue(&state, &principal, valid, true).await?;
    for o in &outcomes {
        slog::info!(log, "notification published"; "notification_id" => %o.id, "targets" => o.targets, "duplicate" => o.duplicate, "batch" => true);
    }
    let items = outcomes
        .into_iter()
        .map(|o| PublishResponse {
            id: o.id.to_string(),
            status: "queued".into(),
            targets: o.targets,
        })
        .collect();
    Ok(HttpResponse::Accepted().json(BatchResponse { items }))
}

/// One device's delivery of a notification.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryView {
    pub(crate) device_id: String,
    #[schema(value_type = String)]
    pub(crate) status: DeliveryStatus,
    pub(crate) attempts: i32,
    pub(crate) sent_at: Option<String>,
    pub(crate) acked_at: Option<String>,
}

#[derive(Debug, Serialize, Default, utoipa::ToSchema)]
pub struct Counts {
    pub(crate) queued: usize,
    pub(crate) sent: usize,
    pub(crate) acked: usize,
    pub(crate) expired: usize,
}

/// A notification as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationView {
    pub(crate) id: String,
    pub(crate) title: String,
    pub(crate) body: String,
    pub(crate) app: String,
    #[schema(value_type = crate::api::schemas::PriorityName)]
    pub(crate) priority: Priority,
    pub(crate) tags: Vec<String>,
    pub(crate) click_url: Option<String>,
    pub(crate) created_at: String,
    pub(crate) expires_at: String,
    pub(crate) status: &'static str,
    pub(crate) targets: usize,
    pub(crate) counts: Counts,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) deliveries: Option<Vec<DeliveryView>>,
}

/// The overall state: queued while any delivery waits, delivered while any is unacknowledged,
/// expired if any expired, else acked.
fn overall(counts: &Counts) -> &'static str {
    if counts.queued > 0 {
        "queued"
    } else if counts.sent > 0 {
        "delivered"
    } else if counts.expired > 0 {
        "expired"
    } else {
        "acked"
    }
}

fn notification_view(
    row: NotificationRow,
    record: NotificationRecord,
    deliveries: &[DeliveryRow],
    detail: bool,
) -> NotificationView {
    let mut counts = Counts::default();
    for d in deliveries {
        match d.status {
            DeliveryStatus::Queued => counts.queued += 1,
            DeliveryStatus::Sent => counts.sent += 1,
            DeliveryStatus::Acked => counts.acked += 1,
            DeliveryStatus::Expired => counts.expired += 1,
        }
    }
    NotificationView {
        id: row.id,
        title: record.title,
        body: record.body,
        app: record.app,
        priority: record.priority,
        tags: record.tags,
        click_url: record.click_url,
        created_at: rfc3339(row.created_at),
        expires_at: rfc3339(row.expires_at),
        status: overall(&counts),
        targets: deliveries.len(),
        counts,
        deliveries: detail.then(|| {
            deliveries
                .iter()
                .map(|d| DeliveryView {
                    device_id: d.device_id.clone(),
                    status: d.status,
                    attempts: d.attempts,
                    sent_at: d.sent_at.map(rfc3339),
                    acked_at: d.acked_at.map(rfc3339),
                })
                .collect()
        }),
    }
}

#[utoipa::path(get, path = "/api/v1/notifications", tag = "notifications", params(NotificationListQuery),
    responses((status = 200, description = "Notifications, newest first", body = Page<NotificationView>)))]
async fn list_notifications(
    state: web::Data<AppState>,
    principal: Principal,
    query: web::Query<NotificationListQuery>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(list(&state, &principal, query.into_inner()).await?))
}

/// A page of notifications, newest first (a device's own, or any for an admin).
pub(crate) async fn list(
    state: &AppState,
    principal: &Principal,
    query: NotificationListQuery,
) -> Result<Page<NotificationView>, ApiError> {
    check(&query)?;
    let limit = page_limit(query.limit)?;
    let mut filter = ListFilter::default();
    // A device sees only its own; a publish token sees nothing here.
    match principal.device() {
        Some(own) => {
            if query
                .device_id
                .as_deref()
                .is_some_and(|d| d != own.as_str())
            {
                return Err(ApiError::Forbidden(
                    "a device may only list its own notifications".into(),
                ));
            }
            filter.device = Some(own.to_string());
        }
        None => {
            principal.require_admin()?;
            if let Some(device) = &query.device_id {
                let device = DeviceId::parse(device)
                    .ok_or_else(|| ApiError::field("deviceId", "must be a device id (dev_…)"))?;
                filter.device = Some(device.to_string());
            }
        }
    }
    filter.status = match query.status.as_deref() {
        None => None,
        // `delivered` is the overall status's name for a sent delivery.
        Some("delivered") => Some(DeliveryStatus::Sent),
        Some(raw) => match DeliveryStatus::parse(raw) {
            Some(status) => Some(status),
            None => {
                return Err(ApiError::field(
                    "status",
                    "must be one of queued, delivered, acked, expired",
                ))
            }
        },
    };
    filter.priority = match query.priority.as_deref() {
        None => None,
        Some(raw) => Some(
            Priority::parse(raw)
                .ok_or_else(|| {
                    ApiError::field("priority", "must be one of low, normal, high, critical")
                })?
                .as_i16(),
        ),
    };
    filter.app = query.app;
    filter.tag = query.tag;
    filter.since = parse_time("since", query.since.as_deref())?;
    filter.until = parse_time("until", query.until.as_deref())?;
    // Checked as 1 to 18 digits, so it parses.
    filter.before_seq = query.cursor.as_deref().and_then(|c| c.parse::<i64>().ok());
    let only_device = filter.device.clone();
    let cipher = state.store.cipher()?.clone();
    let (rows, deliveries) = state
        .store
        .run(move |conn| {
            let rows = notifications::list(conn, &cipher, &filter, limit)?;
            let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
            let deliveries = notifications::deliveries_of(conn, &seqs, only_device.as_deref())?;
            let rows = rows
                .into_iter()
                .map(|row| row.record(&cipher).map(|record| (row, record)))
                .collect::<Result<Vec<_>, _>>()?;
            Ok((rows, deliveries))
        })
        .await?;
    let mut by_seq: HashMap<i64, Vec<DeliveryRow>> = HashMap::new();
    for d in deliveries {
        by_seq.entry(d.notification_seq).or_default().push(d);
    }
    let next_cursor = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|(r, _)| r.seq.to_string()))
        .flatten();
    let items: Vec<NotificationView> = rows
        .into_iter()
        .map(|(row, record)| {
            let deliveries = by_seq.remove(&row.seq).unwrap_or_default();
            notification_view(row, record, &deliveries, false)
        })
        .collect();
    Ok(Page { items, next_cursor })
}

#[utoipa::path(get, path = "/api/v1/notifications/{id}", tag = "notifications",
    params(("id" = String, Path, description = "A notification id (ntf_…)")),
    responses((status = 200, description = "The notification with its deliveries", body = NotificationView)))]
async fn get_notification(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let own = principal.device().map(ToString::to_string);
    if own.is_none() {
        principal.require_admin()?;
    }
    let lookup = id.clone();
    let cipher = state.store.cipher()?.clone();
    let found = state
        .store
        .run(move |conn| {
            let Some(row) = notifications::get(conn, &lookup)? else {
                return Ok(None);
            };
            let deliveries = notifications::deliveries_of(conn, &[row.seq], own.as_deref())?;
            // A device that was not a target learns nothing, not even whether it opens.
            if own.is_some() && deliveries.is_empty() {
                return Ok(None);
            }
            let record = row.record(&cipher)?;
            Ok(Some((row, record, deliveries)))
        })
        .await?;
    let not_found = || ApiError::NotFound(format!("no notification {id}"));
    let (row, record, deliveries) = found.ok_or_else(not_found)?;
    Ok(HttpResponse::Ok().json(notification_view(row, record, &deliveries, true)))
}
