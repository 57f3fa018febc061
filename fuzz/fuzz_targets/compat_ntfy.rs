//! ntfy publishing (`api::compat::ntfy`): `POST|PUT /compat/ntfy/{topic}` with the message as the
//! body and the rest in headers or the query string, and `POST /compat/ntfy` with JSON; and the
//! credentials ntfy clients send (`compat::credential`: Basic auth, a token in the URL).
//!
//! The input is a request: the topic on the first line, then the query string, the headers
//! (`Name: value`) up to an empty line, and the body. It goes through the topic route as the
//! handler takes it (`topic_request`), and its body through the JSON route (`json_request`).
//!
//! Checks: a refused request is a 400 naming a field; a credential that is read is not empty;
//! and the publish request the layer makes fits the relay's rules in every field but `clickUrl`,
//! which it passes on as sent (the relay's rule judges it), so it then becomes a record.

#![no_main]

#[path = "common/mod.rs"]
mod common;

use libfuzzer_sys::fuzz_target;

use beepmyphone::api::compat::{self, ntfy};
use beepmyphone::api::targets::is_group_name;
use beepmyphone::config::Settings;
use beepmyphone::error::ApiError;

use common::{fits_but, refused, RawRequest};

fuzz_target!(|data: &[u8]| {
    let (topic, rest) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    let Ok(topic) = std::str::from_utf8(topic) else {
        return;
    };
    let Some(raw) = RawRequest::parse(rest) else {
        return;
    };
    // The path as the router matched it: a topic that is no path segment never gets here.
    if topic.contains(['/', '?', '#']) {
        return;
    }
    let path = format!("/compat/ntfy/{topic}");
    let Some(request) = raw.to_test_request(&path) else {
        return;
    };
    let req = request.to_http_request();

    match compat::credential(&req, false) {
        Ok(Some(token)) => assert!(!token.is_empty()),
        Ok(None) => {}
        Err(ApiError::Unauthorized(_)) => {}
        Err(e) => panic!("a credential answered {e:?}"),
    }

    // The handler answers 404 for a topic that is no group name, before reading anything.
    if is_group_name(topic) {
        match ntfy::topic_request(&req, topic.to_owned(), raw.body) {
            Ok(request) => fits_but(request, &["clickUrl"]),
            Err(e) => refused(&e),
        }
    }

    let max_depth = Settings::default().server.max_json_depth;
    match ntfy::json_request(raw.body, max_depth) {
        Ok(request) => fits_but(request, &["clickUrl"]),
        Err(e) => refused(&e),
    }
});
