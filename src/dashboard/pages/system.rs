//! Health, certificates and rate-limit blocks: `GET /dashboard/health` (every component with its
//! reason), `GET /dashboard/certificates` and `POST /dashboard/certificates/renew`,
//! `GET /dashboard/blocks` and `POST /dashboard/blocks/unblock`, each through the API's own
//! operation.

use actix_web::{web, HttpResponse};
use askama::Template;
use serde::Deserialize;

use crate::api::audited::AuditContext;
use crate::api::routes::blocks::{self, BlockView};
use crate::api::routes::health::{self, HealthBody};
use crate::api::routes::tls::{self, TlsView};
use crate::dashboard::guard::{Admin, NoFields, Submitted};
use crate::dashboard::view::{self, Layout};
use crate::error::ApiError;
use crate::state::AppState;

/// `?done=`.
#[derive(Deserialize)]
pub struct Done {
    done: Option<String>,
}

/// The health page.
#[derive(Template)]
#[template(path = "health.html", config = "src/dashboard/askama.toml")]
struct Health {
    layout: Layout,
    health: HealthBody,
}

/// `GET /dashboard/health`.
pub async fn health(state: web::Data<AppState>, admin: Admin) -> Result<HttpResponse, ApiError> {
    let health = health::health(&state, true).await?;
    Ok(view::ok(&Health {
        layout: Layout::new(&admin, "health"),
        health,
    }))
}

/// The certificates page.
#[derive(Template)]
#[template(path = "certificates.html", config = "src/dashboard/askama.toml")]
struct Certificates {
    layout: Layout,
    tls: TlsView,
}

/// `GET /dashboard/certificates`.
pub async fn certificates(
    state: web::Data<AppState>,
    admin: Admin,
    query: web::Query<Done>,
) -> HttpResponse {
    view::ok(&Certificates {
        layout: Layout::new(&admin, "certificates").with(view::done(query.done.as_deref())),
        tls: tls::status(&state),
    })
}

/// `POST /dashboard/certificates/renew`.
pub async fn renew(
    state: web::Data<AppState>,
    source: AuditContext,
    posted: Submitted<NoFields>,
) -> HttpResponse {
    match tls::renew(&state, &source, &posted.admin.principal).await {
        Ok(_) => view::see_other("/dashboard/certificates?done=renewed"),
        Err(e) => {
            let (status, flash) = view::failure(&e);
            view::page(
                status,
                &Certificates {
                    layout: Layout::new(&posted.admin, "certificates").with(Some(flash)),
                    tls: tls::status(&state),
                },
            )
        }
    }
}

/// The blocks page.
#[derive(Template)]
#[template(path = "blocks.html", config = "src/dashboard/askama.toml")]
struct Blocks {
    layout: Layout,
    blocks: Vec<BlockView>,
}

/// `GET /dashboard/blocks`.
pub async fn blocks(
    state: web::Data<AppState>,
    admin: Admin,
    query: web::Query<Done>,
) -> HttpResponse {
    view::ok(&Blocks {
        layout: Layout::new(&admin, "blocks").with(view::done(query.done.as_deref())),
        blocks: blocks::blocks(&state).await,
    })
}

/// The unblock form.
#[derive(Deserialize)]
pub struct Unblock {
    #[serde(default)]
    ip: String,
}

/// `POST /dashboard/blocks/unblock`.
pub async fn unblock(
    state: web::Data<AppState>,
    source: AuditContext,
    posted: Submitted<Unblock>,
) -> HttpResponse {
    let Submitted { admin, form } = posted;
    match blocks::unblock(&state, &source, &admin.principal, form.ip.trim()).await {
        Ok(()) => view::see_other("/dashboard/blocks?done=unblocked"),
        Err(e) => {
            let (status, flash) = view::failure(&e);
            view::page(
                status,
                &Blocks {
                    layout: Layout::new(&admin, "blocks").with(Some(flash)),
                    blocks: blocks::blocks(&state).await,
                },
            )
        }
    }
}
