//! Publishing the way ntfy and Gotify clients do, so tools written for either send to this relay by
//! changing only the server address and the token.
//!
//! - [`ntfy`]: `POST|PUT /compat/ntfy/{topic}` (the message as the body, the rest in headers) and
//!   `POST /compat/ntfy` (JSON); the topic is a device group.
//! - [`gotify`]: `POST /compat/gotify/message`, authenticated by `X-Gotify-Key`.
//!
//! Both turn the request into a [`PublishRequest`](crate::api::schemas::PublishRequest) and publish it
//! through the same validation, limits, durability and audit as `POST /api/v1/notifications`; they
//! answer in the shape their clients expect. With `compat.mount_at_root` they are also served at
//! `/{topic}`, `/` and `/message`.
//!
//! Credentials: besides `Authorization: Bearer`, the API token may come as the password of Basic
//! auth (ntfy clients) or in `X-Gotify-Key` (Gotify clients), which [`credential`] reads for the
//! authentication middleware. A token in the URL (`?auth=`, `?token=`) is refused, never used.

pub mod gotify;
pub mod ntfy;

use actix_web::http::header;
use actix_web::{web, HttpRequest};
use base64::Engine;

use crate::error::ApiError;

/// Where the compatibility endpoints live without `compat.mount_at_root`.
pub const PREFIX: &str = "/compat";

/// Registers the endpoints under [`PREFIX`], and at the root too when `mount_at_root`. Called
/// after every route of the relay's own, so that `/{topic}` takes only what nothing else serves.
pub fn configure(cfg: &mut web::ServiceConfig, mount_at_root: bool) {
    cfg.service(
        web::scope(PREFIX)
            .configure(ntfy::configure)
            .configure(gotify::configure),
    );
    if mount_at_root {
        gotify::configure_root(cfg);
        ntfy::configure_root(cfg);
    }
}

/// Which compatibility API a path belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ntfy,
    Gotify,
}

fn kind(path: &str, mount_at_root: bool) -> Option<Kind> {
    if let Some(rest) = path.strip_prefix(PREFIX) {
        return match rest {
            "/gotify/message" => Some(Kind::Gotify),
            _ if rest == "/ntfy" || rest.starts_with("/ntfy/") => Some(Kind::Ntfy),
            _ => None,
        };
    }
    if !mount_at_root {
        return None;
    }
    match path {
        "/message" => Some(Kind::Gotify),
        // `/` and one segment: where the root ntfy routes are (the relay's own routes match first).
        _ if path.len() > 1 && path[1..].contains('/') => None,
        _ => Some(Kind::Ntfy),
    }
}

/// The API token of a request to a compatibility endpoint, in the forms its clients send it:
/// Basic auth with the token as the password (or as the user name with no password) for ntfy,
/// `X-Gotify-Key` for Gotify. `Ok(None)` for other paths and when there is none (a bearer token
/// is read by the caller). A token in the query string is an error: it has already been exposed to
/// every log and proxy on the way, and using it would teach clients to keep doing it.
pub fn credential(req: &HttpRequest, mount_at_root: bool) -> Result<Option<String>, ApiError> {
    let Some(kind) = kind(req.path(), mount_at_root) else {
        return Ok(None);
    };
    let (names, send): (&[&str], &str) = match kind {
        Kind::Ntfy => (
            &["auth"],
            "an Authorization header (Bearer, or Basic with the token as password)",
        ),
        Kind::Gotify => (&["token"], "the X-Gotify-Key header"),
    };
    let in_url = req
        .query_string()
        .split('&')
        .filter_map(|pair| pair.split('=').next())
        .any(|name| names.iter().any(|n| n.eq_ignore_ascii_case(name)));
    if in_url {
        return Err(ApiError::Unauthorized(format!(
            "tokens are not accepted in URLs (?{}=); send the token in {send}, and revoke the one \
             that was sent",
            names[0]
        )));
    }
    match kind {
        Kind::Ntfy => basic_password(req),
        Kind::Gotify => gotify_key(req),
    }
}

/// The token of an `X-Gotify-Key` header, `Ok(None)` without one. A header that is there must
/// hold a token: an empty one is refused, never passed over for another credential.
fn gotify_key(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(value) = req.headers().get("x-gotify-key") else {
        return Ok(None);
    };
    match value.to_str().map(str::trim) {
        Ok(key) if !key.is_empty() => Ok(Some(key.to_owned())),
        _ => Err(ApiError::Unauthorized(
            "the X-Gotify-Key header must hold a publish token".into(),
        )),
    }
}

/// The token of `Authorization: Basic base64(user:token)`: the password, or the user name when the
/// password is empty. `Ok(None)` without a Basic header.
fn basic_password(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let Some((scheme, encoded)) = value.to_str().ok().and_then(|v| v.split_once(' ')) else {
        return Ok(None);
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Ok(None);
    }
    let invalid = || {
        ApiError::Unauthorized("the Basic credentials are not valid base64 of user:token".into())
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| invalid())?;
    let decoded = String::from_utf8(decoded).map_err(|_| invalid())?;
    let (user, password) = decoded.split_once(':').ok_or_else(invalid)?;
    let token = if password.is_empty() { user } else { password };
    if token.is_empty() {
        return Err(ApiError::Unauthorized(
            "the Basic credentials hold no token".into(),
        ));
    }
    Ok(Some(token.to_owned()))
}

/// A one-line text as the relay's rules take it, from a client that does not know them: control
/// characters dropped, cut to at most `max` characters on a character boundary.
fn one_line(text: &str, max: usize) -> String {
    text.chars().filter(|c| !c.is_control()).take(max).collect()
}

/// A message text with the control characters the relay refuses dropped (tab, newline and
/// carriage return stay). Its length is left to the relay's rule: cutting a message would lose
/// what the publisher said.
fn message_text(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control() || matches!(c, '\t' | '\n' | '\r'))
        .collect()
}

/// Tags as the relay's rules take them: trimmed, empty ones dropped, each cut to 32 characters,
/// at most 10.
fn tags(raw: impl IntoIterator<Item = String>) -> Vec<String> {
    raw.into_iter()
        .map(|t| one_line(t.trim(), 32))
        .filter(|t| !t.trim().is_empty())
        .take(10)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn paths_belong_to_their_api_and_the_root_only_when_mounted() {
        assert_eq!(kind("/compat/ntfy/alerts", false), Some(Kind::Ntfy));
        assert_eq!(kind("/compat/ntfy", false), Some(Kind::Ntfy));
        assert_eq!(kind("/compat/gotify/message", false), Some(Kind::Gotify));
        assert_eq!(kind("/compat/other", false), None);
        assert_eq!(kind("/alerts", false), None);
        assert_eq!(kind("/alerts", true), Some(Kind::Ntfy));
        assert_eq!(kind("/", true), Some(Kind::Ntfy));
        assert_eq!(kind("/message", true), Some(Kind::Gotify));
        assert_eq!(kind("/api/v1/notifications", true), None);
    }

    #[test]
    fn basic_auth_carries_the_token_as_password_or_user() {
        let basic = |raw: &str| {
            let encoded = base64::engine::general_purpose::STANDARD.encode(raw);
            TestRequest::post()
                .uri("/compat/ntfy/t")
                .insert_header((header::AUTHORIZATION, format!("Basic {encoded}")))
                .to_http_request()
        };
        let token = |raw| credential(&basic(raw), false);
        assert_eq!(token(":bmp_x").unwrap().as_deref(), Some("bmp_x"));
        assert_eq!(token("anyone:bmp_x").unwrap().as_deref(), Some("bmp_x"));
        assert_eq!(token("bmp_x:").unwrap().as_deref(), Some("bmp_x"));
        assert!(token(":").is_err());
        assert!(token("no colon").is_err());
        let garbled = TestRequest::post()
            .uri("/compat/ntfy/t")
            .insert_header((header::AUTHORIZATION, "Basic !!!"))
            .to_http_request();
        assert!(credential(&garbled, false).is_err());
        let bearer = TestRequest::post()
            .uri("/compat/ntfy/t")
            .insert_header((header::AUTHORIZATION, "Bearer bmp_x"))
            .to_http_request();
        assert_eq!(
            credential(&bearer, false).unwrap(),
            None,
            "read by the caller"
        );
    }

    #[test]
    fn tokens_in_urls_are_refused_and_gotify_reads_its_header() {
        for uri in [
            "/compat/gotify/message?token=abc",
            "/compat/gotify/message?x=1&TOKEN",
            "/compat/ntfy/t?auth=abc",
        ] {
            let req = TestRequest::post().uri(uri).to_http_request();
            let err = credential(&req, false).unwrap_err();
            assert!(
                err.to_string().contains("not accepted in URLs"),
                "{uri}: {err}"
            );
        }
        let keyed = TestRequest::post()
            .uri("/compat/gotify/message")
            .insert_header(("X-Gotify-Key", " bmp_k "))
            .to_http_request();
        assert_eq!(credential(&keyed, false).unwrap().as_deref(), Some("bmp_k"));
        let elsewhere = TestRequest::get()
            .uri("/api/v1/devices?token=x")
            .to_http_request();
        assert_eq!(credential(&elsewhere, false).unwrap(), None);
    }

    #[test]
    fn texts_are_made_to_fit_the_relays_rules() {
        assert_eq!(one_line("héllo", 2), "hé");
        assert_eq!(one_line("a\u{7}b\nc", 10), "abc");
        assert_eq!(message_text("a\u{0}\tb\nc\u{85}"), "a\tb\nc");
        let many = (0..12).map(|i| format!("t{i}"));
        assert_eq!(tags(many).len(), 10);
        assert_eq!(
            tags(["  ".to_owned(), "x".repeat(40), " ok ".to_owned()]),
            ["x".repeat(32), "ok".to_owned()]
        );
    }
}
