//! The audit log, for admins: `GET /audit`, newest first, filtered by action, actor, subject
//! and time, cursor-paginated like every list. Sealed parts (source IP, details) are opened for
//! the answer. `POST /audit/verify` checks the whole log as `beepmyphone audit verify` does, with
//! the relay's own key, and `GET /audit/verify` gives the last such result (kept in memory).

use actix_web::{web, HttpResponse};

use crate::api::auth::Principal;
use crate::api::schemas::{check, AuditListQuery, Page};
use crate::api::{page_limit, parse_time};
use crate::audit::record::{view, RecordView};
use crate::audit::verify::{self, Sources, Verification};
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::audit::{self as rows, AuditFilter};

/// This module's operations in the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(list_audit, verify_log, last_verification),
    components(schemas(RecordView, Verification))
)]
pub struct Api;

/// Registers the routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/audit", web::get().to(list_audit))
        .route("/audit/verify", web::post().to(verify_log))
        .route("/audit/verify", web::get().to(last_verification));
}

#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditListQuery),
    responses((status = 200, description = "Audit records, newest first", body = Page<RecordView>)))]
async fn list_audit(
    state: web::Data<AppState>,
    principal: Principal,
    query: web::Query<AuditListQuery>,
) -> Result<HttpResponse, ApiError> {
    principal.require_admin()?;
    Ok(HttpResponse::Ok().json(records(&state, query.into_inner()).await?))
}

/// A page of records (for an admin; the caller checks).
pub(crate) async fn records(
    state: &AppState,
    query: AuditListQuery,
) -> Result<Page<RecordView>, ApiError> {
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
    Ok(Page { items, next_cursor })
}

#[utoipa::path(post, path = "/api/v1/audit/verify", tag = "audit",
    responses((status = 200, description = "The result (also when the log does not hold: `intact` is false)", body = Verification),
        (status = 409, description = "A verification is running already", body = crate::error::Problem, content_type = "application/problem+json")))]
async fn verify_log(
    state: web::Data<AppState>,
    principal: Principal,
) -> Result<HttpResponse, ApiError> {
    principal.require_admin()?;
    Ok(HttpResponse::Ok().json(run_verification(&state).await?))
}

/// Verifies the whole log with the relay's checkpoint key and keeps the result as the last.
pub(crate) async fn run_verification(state: &AppState) -> Result<Verification, ApiError> {
    let _running = state.verification.start().ok_or_else(|| {
        ApiError::Conflict(
            "a verification of the audit log is running; try again when it ends".into(),
        )
    })?;
    let verifier = crate::audit::signing::verifier(&state.settings.keys_dir(), None)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let sources = Sources::of(&state.settings);
    let outcome = state
        .store
        .run(move |conn| Ok(verify::verify(conn, &verifier, &sources)))
        .await?;
    let at = beepmyphone_actors::model::rfc3339(state.clock.now_ms());
    let verification = match outcome {
        Ok(report) => Verification {
            at,
            intact: true,
            report: Some(report),
            failure: None,
        },
        Err(failure) => Verification {
            at,
            intact: false,
            report: None,
            failure: Some(failure.to_string()),
        },
    };
    state.verification.set(verification.clone());
    Ok(verification)
}

#[utoipa::path(get, path = "/api/v1/audit/verify", tag = "audit",
    responses((status = 200, description = "The last verification since the relay started", body = Verification),
              (status = 404, description = "None ran yet")))]
async fn last_verification(
    state: web::Data<AppState>,
    principal: Principal,
) -> Result<HttpResponse, ApiError> {
    principal.require_admin()?;
    let last = state.verification.get().ok_or_else(|| {
        ApiError::NotFound("no verification ran since the relay started; POST to run one".into())
    })?;
    Ok(HttpResponse::Ok().json(last))
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
