//! The audit log: `GET /dashboard/audit` (records, newest first, filtered by action, actor,
//! subject and time, through the API's `GET /audit` operation, with the last verification) and
//! `POST /dashboard/audit/verify` (the API's verification of the whole log).

use actix_web::{web, HttpResponse};
use askama::Template;
use serde::Deserialize;

use crate::api::routes::audit;
use crate::api::schemas::{AuditListQuery, AUDIT_ACTIONS};
use crate::audit::record::RecordView;
use crate::audit::verify::Verification;
use crate::dashboard::guard::{Admin, NoFields, Submitted};
use crate::dashboard::view::{self, Layout};
use crate::state::AppState;

/// The filters as the form sends them (empty means none; times as `datetime-local`, in UTC).
#[derive(Deserialize, Default, Clone)]
pub struct Filters {
    #[serde(default)]
    action: String,
    #[serde(default)]
    actor: String,
    #[serde(default)]
    subject: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    cursor: String,
    done: Option<String>,
}

fn given(value: &str) -> Option<String> {
    let value = value.trim();
    (!value.is_empty()).then(|| value.to_owned())
}

/// A time from the form: RFC 3339 as is, or a `datetime-local` value taken as UTC.
fn time(value: &str) -> Option<String> {
    let value = given(value)?;
    if chrono::DateTime::parse_from_rfc3339(&value).is_ok() {
        return Some(value);
    }
    let seconds = if value.len() == 16 { ":00" } else { "" };
    Some(format!("{value}{seconds}Z"))
}

impl Filters {
    fn query(&self) -> AuditListQuery {
        AuditListQuery {
            action: given(&self.action),
            actor: given(&self.actor),
            subject: given(&self.subject),
            since: time(&self.since),
            until: time(&self.until),
            limit: Some(100),
            cursor: given(&self.cursor),
        }
    }

    /// The query string of the next page.
    fn next_page(&self, cursor: &str) -> String {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in [
            ("action", &self.action),
            ("actor", &self.actor),
            ("subject", &self.subject),
            ("since", &self.since),
            ("until", &self.until),
        ] {
            if !value.is_empty() {
                query.append_pair(name, value);
            }
        }
        query.append_pair("cursor", cursor);
        query.finish()
    }
}

/// The audit page.
#[derive(Template)]
#[template(path = "audit.html", config = "src/dashboard/askama.toml")]
struct Audit {
    layout: Layout,
    filters: Filters,
    actions: &'static [&'static str],
    records: Vec<RecordView>,
    next: Option<String>,
    verification: Option<Verification>,
}

impl Audit {
    fn details(record: &RecordView) -> String {
        match &record.details {
            serde_json::Value::Null => String::new(),
            other => other.to_string(),
        }
    }
}

/// `GET /dashboard/audit`.
pub async fn list(
    state: web::Data<AppState>,
    admin: Admin,
    filters: web::Query<Filters>,
) -> HttpResponse {
    let filters = filters.into_inner();
    let layout = Layout::new(&admin, "audit").with(view::done(filters.done.as_deref()));
    let verification = state.verification.get();
    match audit::records(&state, filters.query()).await {
        Ok(page) => view::ok(&Audit {
            layout,
            next: page.next_cursor.map(|c| filters.next_page(&c)),
            filters,
            actions: &AUDIT_ACTIONS,
            records: page.items,
            verification,
        }),
        Err(e) => {
            let (status, flash) = view::failure(&e);
            view::page(
                status,
                &Audit {
                    layout: layout.with(Some(flash)),
                    filters,
                    actions: &AUDIT_ACTIONS,
                    records: Vec::new(),
                    next: None,
                    verification,
                },
            )
        }
    }
}

/// `POST /dashboard/audit/verify`.
pub async fn verify(state: web::Data<AppState>, posted: Submitted<NoFields>) -> HttpResponse {
    let _ = &posted.admin;
    match audit::run_verification(&state).await {
        Ok(_) => view::see_other("/dashboard/audit?done=verified"),
        Err(e) => {
            let (status, flash) = view::failure(&e);
            view::page(
                status,
                &Audit {
                    layout: Layout::new(&posted.admin, "audit").with(Some(flash)),
                    filters: Filters::default(),
                    actions: &AUDIT_ACTIONS,
                    records: Vec::new(),
                    next: None,
                    verification: state.verification.get(),
                },
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_times_are_taken_as_utc_and_empty_filters_as_none() {
        assert_eq!(
            time("2026-12-02T18:00").as_deref(),
            Some("2026-12-02T18:00:00Z")
        );
        assert_eq!(
            time("2026-12-02T18:00:05").as_deref(),
            Some("2026-12-02T18:00:05Z")
        );
        assert_eq!(
            time("2026-12-02T18:00:00+01:00").as_deref(),
            Some("2026-12-02T18:00:00+01:00")
        );
        assert_eq!(time("  "), None);
        let filters = Filters {
            action: "admin.login".into(),
            ..Filters::default()
        };
        let query = filters.query();
        assert_eq!(query.action.as_deref(), Some("admin.login"));
        assert!(query.actor.is_none() && query.since.is_none());
        assert_eq!(filters.next_page("42"), "action=admin.login&cursor=42");
    }
}
