//! The live stream and test sends: `GET /dashboard/live` (the page; its script reads
//! `GET /api/v1/events`), `GET|POST /dashboard/send` (a notification through the API's
//! `POST /notifications` operation, to every device or to the ones ticked).

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use askama::Template;
use serde::Deserialize;

use crate::api::middleware::RequestLog;
use crate::api::routes::devices::{self, DeviceView};
use crate::api::schemas::{DeviceListQuery, PublishRequest, PublishResponse, TargetsBody};
use crate::dashboard::guard::{Admin, Submitted};
use crate::dashboard::view::{self, Flash, Layout};
use crate::state::AppState;

/// The live page.
#[derive(Template)]
#[template(path = "live.html", config = "src/dashboard/askama.toml")]
struct Live {
    layout: Layout,
}

/// `GET /dashboard/live`.
pub async fn live(admin: Admin) -> HttpResponse {
    view::ok(&Live {
        layout: Layout::new(&admin, "live"),
    })
}

/// The send page.
#[derive(Template)]
#[template(path = "send.html", config = "src/dashboard/askama.toml")]
struct Send {
    layout: Layout,
    devices: Vec<DeviceView>,
    priorities: &'static [&'static str],
    sent: Option<PublishResponse>,
    form: SendForm,
}

/// The send form. Device checkboxes are named `to:<device id>`.
#[derive(Deserialize, Default)]
pub struct SendForm {
    #[serde(default)]
    title: String,
    #[serde(default)]
    body: String,
    #[serde(default)]
    priority: String,
    /// `all` or `some`.
    #[serde(default)]
    targets: String,
    #[serde(flatten)]
    rest: HashMap<String, String>,
}

impl SendForm {
    fn chosen(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .rest
            .keys()
            .filter_map(|k| k.strip_prefix("to:"))
            .map(str::to_owned)
            .collect();
        ids.sort();
        ids
    }

    fn is_chosen(&self, id: &str) -> bool {
        self.rest.contains_key(&format!("to:{id}"))
    }

    fn to_request(&self) -> PublishRequest {
        let targets = if self.targets == "some" {
            TargetsBody::devices(self.chosen())
        } else {
            TargetsBody::Keyword("all".into())
        };
        PublishRequest {
            title: Some(self.title.trim().to_owned()),
            body: self.body.replace("\r\n", "\n"),
            app: Some("dashboard".into()),
            priority: Some(if self.priority.is_empty() {
                "normal".into()
            } else {
                self.priority.clone()
            }),
            targets: Some(targets),
            tags: Vec::new(),
            click_url: None,
            ttl_seconds: None,
            idempotency_key: None,
            encrypted: None,
        }
    }
}

async fn send_page(
    state: &AppState,
    admin: &Admin,
    status: StatusCode,
    flash: Option<Flash>,
    sent: Option<PublishResponse>,
    form: SendForm,
) -> HttpResponse {
    let (devices, flash) = match devices::list(
        state,
        &admin.principal,
        DeviceListQuery {
            status: None,
            platform: None,
            limit: Some(500),
            cursor: None,
        },
    )
    .await
    {
        Ok(page) => (page.items, flash),
        Err(e) => (Vec::new(), Some(view::failure(&e).1)),
    };
    view::page(
        status,
        &Send {
            layout: Layout::new(admin, "send").with(flash),
            devices,
            priorities: &crate::api::schemas::PRIORITIES,
            sent,
            form,
        },
    )
}

/// `GET /dashboard/send`.
pub async fn form(state: web::Data<AppState>, admin: Admin) -> HttpResponse {
    let form = SendForm {
        title: "Test from the dashboard".into(),
        priority: "normal".into(),
        targets: "all".into(),
        ..SendForm::default()
    };
    send_page(&state, &admin, StatusCode::OK, None, None, form).await
}

/// `POST /dashboard/send`.
pub async fn send(
    state: web::Data<AppState>,
    log: RequestLog,
    posted: Submitted<SendForm>,
) -> HttpResponse {
    let Submitted { admin, form } = posted;
    if form.targets == "some" && form.chosen().is_empty() {
        let flash = Flash::error("Tick at least one device, or send to every device.");
        return send_page(
            &state,
            &admin,
            StatusCode::BAD_REQUEST,
            Some(flash),
            None,
            form,
        )
        .await;
    }
    let request = form.to_request();
    match crate::api::routes::notifications::publish_one(&state, &log, &admin.principal, request)
        .await
    {
        Ok(sent) => {
            let flash = Flash::ok(format!(
                "Queued {} for {} device{}.",
                sent.id,
                sent.targets,
                if sent.targets == 1 { "" } else { "s" }
            ));
            send_page(
                &state,
                &admin,
                StatusCode::OK,
                Some(flash),
                Some(sent),
                form,
            )
            .await
        }
        Err(e) => {
            let (status, flash) = view::failure(&e);
            send_page(&state, &admin, status, Some(flash), None, form).await
        }
    }
}
