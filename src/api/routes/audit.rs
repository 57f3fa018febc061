//! The audit log, for admins: `GET /audit`, newest first, filtered by action, actor, subject
//! and time, cursor-paginated like every list. Sealed parts (source IP, details) are opened for
//! the answer; verification is the CLI's (`beepmyphone audit verify`).

use actix_web::{web, HttpResponse};

use crate::api::auth::Principal;
use crate::api::schemas::{check, AuditListQuery, Page};
use crate::api::{page_limit, parse_time};
use crate::audit::record::{view, RecordView};
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::audit::{self as rows, AuditFilter};

/// This module's operations in the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(list_audit), components(schemas(RecordView)))]
pub struct Api;

/// Registers the routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/audit", web::get().to(list_audit));
}

#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditListQuery),
    responses((status = 200, description = "Audit records, newest first", body = Page<RecordView>)))]
async fn list_audit(
    state: web::Data<AppState>,
    principal: Principal,
    query: web::Query<AuditListQuery>,
) -> Result<HttpResponse, ApiError> {
    principal.require_admin()?;
    let query = query.into_inner();
    check(&query)?;
    let limit = page_limit(query.limit)?;
    let filter = AuditFilter {
        action: query.action,
        actor: query.actor,
        subject: query.subject,
        since: parse_time("since", query.since.as_deref())?,
        until: parse_time("until", query.until.as_deref())?,
        // Checked as 1 to 18 digits, so it parses.
        before_seq: query.cursor.as_deref().and_then(|c| c.parse::<i64>().ok()),
        after_seq: None,
    };
    let cipher = state.store.cipher()?.clone();
    let rows = state
        .store
        .run(move |conn| rows::list(conn, &filter, limit))
        .await?;
    let next_cursor = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| r.seq.to_string()))
        .flatten();
    let items: Vec<RecordView> = rows.into_iter().map(|row| view(row, &cipher)).collect();
    Ok(HttpResponse::Ok().json(Page { items, next_cursor }))
}

#[cfg(test)]
mod tests {
    use beepmyphone_actors::ports::Action;

    use crate::api::schemas::AUDIT_ACTIONS;

    #[test]
    fn the_filter_knows_every_action() {
        let names: Vec<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
        assert_eq!(names, AUDIT_ACTIONS.to_vec());
        for name in AUDIT_ACTIONS {
            assert_eq!(Action::parse(name).map(|a| a.as_str()), Some(name));
        }
    }
}
