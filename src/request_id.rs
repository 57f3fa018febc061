//! The id of the request being handled on this task: set by the request middleware
//! (`crate::api::middleware`) around each request, read by the problem documents of
//! [`crate::error`] and by [`crate::logging::request_scoped`] (so that sessions and rate limits can
//! tag their lines with it). It lives below all of them so that none imports the middleware.

use std::future::Future;

tokio::task_local! {
    static CURRENT_REQUEST_ID: String;
}

/// The id of the request being handled on this task, if any.
pub fn current_request_id() -> Option<String> {
    CURRENT_REQUEST_ID.try_with(Clone::clone).ok()
}

/// Runs `fut` with `id` as the current request id.
pub fn scoped<F: Future>(id: String, fut: F) -> impl Future<Output = F::Output> {
    CURRENT_REQUEST_ID.scope(id, fut)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_rt::test]
    async fn the_id_is_current_only_inside_the_scope() {
        assert_eq!(current_request_id(), None);
        let inside = scoped("req_1".to_owned(), async { current_request_id() }).await;
        assert_eq!(inside.as_deref(), Some("req_1"));
        assert_eq!(current_request_id(), None);
    }
}
