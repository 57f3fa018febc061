//! Gotify publishing (`api::compat::gotify`): `POST /compat/gotify/message` with JSON, a
//! URL-encoded form or multipart form data, read through the relay's own body extractor
//! (`RawBody`, with its size limit) and then as the handler reads it (`body_request`); and the
//! credentials Gotify clients send (`compat::credential`: `X-Gotify-Key`, a token in the URL).
//!
//! The input is a request: the query string on the first line, the headers (`Name: value`, among
//! them `Content-Type`) up to an empty line, and the body.
//!
//! Checks: a refused request is a 400 (or a 415 for another content type) naming a field; a
//! credential that is read is not empty; and the publish request the layer makes fits the
//! relay's rules in every field but `clickUrl` (passed on from `extras` as sent) and `body`
//! (whose length the relay's rule judges: cutting it would lose what was said), so it then
//! becomes a record.

#![no_main]

#[path = "common/mod.rs"]
mod common;

use std::sync::LazyLock;

use actix_web::FromRequest;
use libfuzzer_sys::fuzz_target;

use beepmyphone::api::body::RawBody;
use beepmyphone::api::compat::{self, gotify};
use beepmyphone::config::Settings;
use beepmyphone::error::ApiError;

use common::{fits_but, refused, RawRequest};

/// The runtime the extractor's body timeout needs.
static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime")
});

fuzz_target!(|data: &[u8]| {
    let Some(raw) = RawRequest::parse(data) else {
        return;
    };
    let Some(request) = raw.to_test_request("/compat/gotify/message") else {
        return;
    };
    let (req, mut payload) = request.set_payload(raw.body.to_vec()).to_http_parts();

    match compat::credential(&req, false) {
        Ok(Some(token)) => assert!(!token.is_empty()),
        Ok(None) => {}
        Err(ApiError::Unauthorized(_)) => {}
        Err(e) => panic!("a credential answered {e:?}"),
    }

    let max_depth = Settings::default().server.max_json_depth;
    let answer = RUNTIME.block_on(async {
        let body = RawBody::from_request(&req, &mut payload).await?;
        gotify::body_request(body, max_depth).await
    });
    match answer {
        Ok(request) => fits_but(request, &["clickUrl", "body"]),
        Err(ApiError::UnsupportedMediaType | ApiError::PayloadTooLarge { .. }) => {}
        Err(e) => refused(&e),
    }
});
