//! Audit records of requests: [`AuditContext`] (an extractor: the request's source IP, request id
//! and trace id) builds events by the caller's [`Principal`]; a log that cannot be written is a
//! 503 for the operations that wait for it (`crate::audit::Audit::record_now`).

use beepmyphone_actors::ports::{Action, ActorKind, AuditError, AuditEvent, Outcome};

use crate::api::auth::Principal;
use crate::error::ApiError;

impl From<AuditError> for ApiError {
    fn from(e: AuditError) -> Self {
        ApiError::Unavailable(format!(
            "not done: the audit log cannot record it right now ({e}); try again"
        ))
    }
}

/// Where an event came from: the request's source IP, request id and trace id (an extractor).
#[derive(Debug, Clone, Default)]
pub struct AuditContext {
    /// The client's IP (through trusted proxies).
    pub ip: Option<String>,
    /// `X-Request-Id`.
    pub request_id: Option<String>,
    /// The W3C trace id.
    pub trace_id: Option<String>,
}

impl AuditContext {
    /// The relay itself as the actor.
    pub fn system() -> (ActorKind, Option<String>) {
        (ActorKind::System, None)
    }

    /// An event of `action` by `actor` (kind and id) from this request.
    pub fn event(
        &self,
        action: Action,
        (actor, actor_id): (ActorKind, Option<String>),
        outcome: Outcome,
    ) -> AuditEvent {
        AuditEvent {
            actor_id,
            ip: self.ip.clone(),
            request_id: self.request_id.clone(),
            trace_id: self.trace_id.clone(),
            ..AuditEvent::new(action, actor, outcome)
        }
    }

    /// An event by whoever `principal` is.
    pub fn by(&self, principal: &Principal, action: Action, outcome: Outcome) -> AuditEvent {
        self.event(action, actor_of(principal), outcome)
    }
}

/// The audit actor of a caller.
pub fn actor_of(principal: &Principal) -> (ActorKind, Option<String>) {
    match principal {
        Principal::Token { id, .. } => (ActorKind::Token, Some(id.to_string())),
        Principal::Device { device, .. } => (ActorKind::Device, Some(device.to_string())),
        Principal::Session { admin_id, .. } => (ActorKind::Admin, Some(admin_id.to_string())),
    }
}

/// Nobody known.
pub fn anonymous() -> (ActorKind, Option<String>) {
    (ActorKind::Anonymous, None)
}

impl actix_web::FromRequest for AuditContext {
    type Error = actix_web::Error;
    type Future = std::future::Ready<Result<Self, actix_web::Error>>;

    fn from_request(req: &actix_web::HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let ip = req
            .app_data::<actix_web::web::Data<crate::state::AppState>>()
            .and_then(|state| state.limits.client_ip(req))
            .map(|ip| ip.to_string());
        std::future::ready(Ok(Self {
            ip,
            request_id: crate::request_id::current_request_id(),
            trace_id: crate::request_id::current_trace_id().map(|t| t.to_string()),
        }))
    }
}
