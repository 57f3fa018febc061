//! Devices: `GET /dashboard/devices` (the list, with presence and delivery counts),
//! `GET|POST /dashboard/devices/{id}` (a device, its settings and recent deliveries; the form
//! saves through the API's `PATCH /devices/{id}` operation), `GET|POST
//! /dashboard/devices/{id}/revoke` (confirmation, then the API's `DELETE /devices/{id}`, which
//! closes the device's sockets at once).

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use askama::Template;
use serde::Deserialize;

use crate::api::audited::AuditContext;
use crate::api::middleware::RequestLog;
use crate::api::routes::devices::{self, DeviceView};
use crate::api::routes::notifications::{self, NotificationView};
use crate::api::schemas::{
    DeviceListQuery, NotificationListQuery, PatchDeviceRequest, QuietHoursBody, SettingsBody,
};
use crate::dashboard::guard::{Admin, NoFields, Submitted};
use crate::dashboard::view::{self, Confirm, Flash, Layout};
use crate::error::ApiError;
use crate::state::AppState;

/// The list page.
#[derive(Template)]
#[template(path = "devices.html", config = "src/dashboard/askama.toml")]
struct DeviceList {
    layout: Layout,
    devices: Vec<DeviceView>,
    next: Option<String>,
}

/// A device's page.
#[derive(Template)]
#[template(path = "device.html", config = "src/dashboard/askama.toml")]
struct DevicePage {
    layout: Layout,
    device: DeviceView,
    deliveries: Vec<NotificationView>,
    priorities: &'static [&'static str],
    timezones: &'static [chrono_tz::Tz],
}

impl DevicePage {
    fn quiet(&self) -> Option<&QuietHoursBody> {
        self.device.settings.quiet_hours.as_ref()
    }

    fn quiet_start(&self) -> &str {
        self.quiet().map_or("22:00", |q| q.start.as_str())
    }

    fn quiet_end(&self) -> &str {
        self.quiet().map_or("07:00", |q| q.end.as_str())
    }

    fn timezone(&self) -> &str {
        self.quiet().map_or("", |q| q.timezone.as_str())
    }
}

/// `?cursor=&status=&done=` of the list.
#[derive(Deserialize)]
pub struct ListQuery {
    cursor: Option<String>,
    done: Option<String>,
}

/// `GET /dashboard/devices`.
pub async fn list(
    state: web::Data<AppState>,
    admin: Admin,
    query: web::Query<ListQuery>,
) -> HttpResponse {
    let layout = Layout::new(&admin, "devices").with(view::done(query.done.as_deref()));
    let request = DeviceListQuery {
        status: None,
        platform: None,
        limit: Some(100),
        cursor: query.cursor.clone(),
    };
    match devices::list(&state, &admin.principal, request).await {
        Ok(page) => view::ok(&DeviceList {
            layout,
            devices: page.items,
            next: page.next_cursor,
        }),
        Err(e) => {
            let (status, flash) = view::failure(&e);
            view::page(
                status,
                &DeviceList {
                    layout: layout.with(Some(flash)),
                    devices: Vec::new(),
                    next: None,
                },
            )
        }
    }
}

/// The device's page with `flash`, or the error page if the device cannot be shown.
async fn device_page(
    state: &AppState,
    admin: &Admin,
    id: &str,
    status: StatusCode,
    flash: Option<Flash>,
) -> Result<HttpResponse, ApiError> {
    let device = devices::get(state, &admin.principal, id).await?;
    let deliveries = notifications::list(
        state,
        &admin.principal,
        NotificationListQuery {
            device_id: Some(device.id.clone()),
            status: None,
            priority: None,
            app: None,
            tag: None,
            since: None,
            until: None,
            limit: Some(20),
            cursor: None,
        },
    )
    .await?
    .items;
    Ok(view::page(
        status,
        &DevicePage {
            layout: Layout::new(admin, "devices").with(flash),
            device,
            deliveries,
            priorities: &crate::api::schemas::PRIORITIES,
            timezones: &chrono_tz::TZ_VARIANTS,
        },
    ))
}

/// `?done=` on a device page.
#[derive(Deserialize)]
pub struct DoneQuery {
    done: Option<String>,
}

/// `GET /dashboard/devices/{id}`.
pub async fn show(
    state: web::Data<AppState>,
    admin: Admin,
    id: web::Path<String>,
    query: web::Query<DoneQuery>,
) -> Result<HttpResponse, ApiError> {
    device_page(
        &state,
        &admin,
        &id,
        StatusCode::OK,
        view::done(query.done.as_deref()),
    )
    .await
}

/// The settings form.
#[derive(Deserialize)]
pub struct SettingsForm {
    #[serde(default)]
    name: String,
    /// A checkbox: present when ticked.
    enabled: Option<String>,
    #[serde(default)]
    min_priority: String,
    /// A checkbox: quiet hours on.
    quiet: Option<String>,
    #[serde(default)]
    quiet_start: String,
    #[serde(default)]
    quiet_end: String,
    #[serde(default)]
    timezone: String,
    /// Group names separated by spaces or commas.
    #[serde(default)]
    groups: String,
}

impl SettingsForm {
    fn into_patch(self) -> PatchDeviceRequest {
        PatchDeviceRequest {
            name: Some(self.name.trim().to_owned()),
            settings: Some(SettingsBody {
                enabled: Some(self.enabled.is_some()),
                min_priority: Some(self.min_priority),
                quiet_hours: Some(self.quiet.map(|_| QuietHoursBody {
                    start: self.quiet_start,
                    end: self.quiet_end,
                    timezone: self.timezone,
                })),
            }),
            groups: Some(
                self.groups
                    .split(|c: char| c == ',' || c.is_whitespace())
                    .filter(|g| !g.is_empty())
                    .map(str::to_owned)
                    .collect(),
            ),
            // The form never changes the key (the device registers it).
            e2e_key: None,
        }
    }
}

/// `POST /dashboard/devices/{id}`: saves the form through the API's device update.
pub async fn save(
    state: web::Data<AppState>,
    id: web::Path<String>,
    posted: Submitted<SettingsForm>,
) -> Result<HttpResponse, ApiError> {
    let Submitted { admin, form } = posted;
    match devices::update(&state, &admin.principal, &id, form.into_patch()).await {
        Ok(device) => Ok(view::see_other(&format!(
            "/dashboard/devices/{}?done=saved",
            device.id
        ))),
        Err(e) => {
            let (status, flash) = view::failure(&e);
            device_page(&state, &admin, &id, status, Some(flash)).await
        }
    }
}

/// `GET /dashboard/devices/{id}/revoke`: are you sure?
pub async fn confirm_revoke(
    state: web::Data<AppState>,
    admin: Admin,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let device = devices::get(&state, &admin.principal, &id).await?;
    Ok(view::ok(&Confirm {
        layout: Layout::new(&admin, "devices"),
        title: format!("Revoke {}", device.name),
        question: format!(
            "Revoke “{}” ({}, {})?",
            device.name, device.platform, device.id
        ),
        consequence: "Its tokens stop working and its open sockets close now; what is pending for it is dropped. To use it again, pair it again.",
        action: format!("/dashboard/devices/{}/revoke", device.id),
        fields: Vec::new(),
        confirm: "Revoke the device",
        cancel: format!("/dashboard/devices/{}", device.id),
    }))
}

/// `POST /dashboard/devices/{id}/revoke`.
pub async fn revoke(
    state: web::Data<AppState>,
    log: RequestLog,
    source: AuditContext,
    id: web::Path<String>,
    posted: Submitted<NoFields>,
) -> Result<HttpResponse, ApiError> {
    devices::revoke(&state, &log, &source, &posted.admin.principal, &id).await?;
    Ok(view::see_other("/dashboard/devices?done=revoked"))
}
