//! Request bodies: the [`Json`] extractor reads at most `server.max_body_bytes` (413 beyond), within
//! `server.body_timeout_seconds` of the handler asking for it (408 after, so a slow upload cannot
//! hold a connection and a worker slot),
//! insists on a JSON content type (415), and turns every parse failure into a 400 problem document
//! that names the field (`priority: unknown variant …`, `items[3].title: invalid type …`).

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, FieldError};
use crate::state::AppState;

/// A JSON body parsed into `T`.
#[derive(Debug)]
pub struct Json<T>(pub T);

/// Whether arrays and objects in `bytes` nest deeper than `max` (strings are skipped; one pass, no
/// allocation). Malformed JSON is left to the parser.
pub fn too_deep(bytes: &[u8], max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in bytes {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// JSON objects only where a struct is expected.
///
/// serde's derived structs also accept a JSON array of their fields in order (`["Hi", "…"]` as a
/// publish request); the API does not, so request bodies and the structs nested in them are read
/// through these (`#[serde(deserialize_with = …)]`), which insist on an object and keep
/// `serde_path_to_error`'s field paths.
pub mod objects {
    use std::fmt;
    use std::marker::PhantomData;

    use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
    use serde::Deserialize;

    struct Object<T>(PhantomData<T>);

    impl<'de, T: Deserialize<'de>> Visitor<'de> for Object<T> {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON object")
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
        }
    }

    impl<'de, T: Deserialize<'de>> DeserializeSeed<'de> for Object<T> {
        type Value = T;

        fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<T, D::Error> {
            de.deserialize_map(self)
        }
    }

    /// A struct, from a JSON object only.
    pub fn object<'de, D: Deserializer<'de>, T: Deserialize<'de>>(de: D) -> Result<T, D::Error> {
        de.deserialize_map(Object(PhantomData))
    }

    struct Optional<T>(PhantomData<T>);

    impl<'de, T: Deserialize<'de>> Visitor<'de> for Optional<T> {
        type Value = Option<T>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON object or null")
        }

        fn visit_none<E: serde::de::Error>(self) -> Result<Option<T>, E> {
            Ok(None)
        }

        fn visit_unit<E: serde::de::Error>(self) -> Result<Option<T>, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, de: D) -> Result<Option<T>, D::Error> {
            object(de).map(Some)
        }
    }

    /// An optional struct, from a JSON object or `null` (use with `#[serde(default)]`).
    pub fn optional_object<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        de: D,
    ) -> Result<Option<T>, D::Error> {
        de.deserialize_option(Optional(PhantomData))
    }

    /// A field that may be absent (outer `None`), `null` (`Some(None)`) or an object.
    pub fn nullable_object<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        de: D,
    ) -> Result<Option<Option<T>>, D::Error> {
        optional_object(de).map(Some)
    }

    struct Objects<T>(PhantomData<T>);

    impl<'de, T: Deserialize<'de>> Visitor<'de> for Objects<T> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON array of objects")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1_024));
            while let Some(item) = seq.next_element_seed(Object(PhantomData))? {
                out.push(item);
            }
            Ok(out)
        }
    }

    /// A list of structs, each from a JSON object only.
    pub fn objects<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        de: D,
    ) -> Result<Vec<T>, D::Error> {
        de.deserialize_seq(Objects(PhantomData))
    }
}

/// Parses JSON bytes into `T`, naming the failing field.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let mut track = serde_path_to_error::Track::new();
    let value = objects::object(serde_path_to_error::Deserializer::new(&mut *de, &mut track))
        .map_err(|inner| serde_path_to_error::Error::new(track.path(), inner));
    let value = value.map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = inner.to_string();
        let message = message
            .split(" at line ")
            .next()
            .unwrap_or(&message)
            .to_owned();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::Validation {
                detail: "the body is not valid JSON".into(),
                errors: vec![FieldError::new("body", message)],
            };
        }
        // serde reports a missing field at its parent's path; name the field itself.
        let field = match message
            .strip_prefix("missing field `")
            .and_then(|m| m.strip_suffix('`'))
        {
            Some(name) if path == "." => name.to_owned(),
            Some(name) => format!("{path}.{name}"),
            None if path == "." => "body".to_owned(),
            None => path,
        };
        let reason = if message.starts_with("missing field") {
            "is required".to_owned()
        } else {
            message
        };
        ApiError::field(field, reason)
    })?;
    // Nothing but whitespace may follow the value (`{"title":"a"}}` is not JSON).
    de.end().map_err(|e| {
        let message = e.to_string();
        ApiError::Validation {
            detail: "the body is not valid JSON".into(),
            errors: vec![FieldError::new(
                "body",
                message.split(" at line ").next().unwrap_or(&message),
            )],
        }
    })?;
    Ok(value)
}

fn is_json(req: &HttpRequest) -> bool {
    let Some(value) = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mime = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    is_json_media(&mime)
}

/// Whether a media type (lower case, no parameters) is JSON: `application/json` or
/// `application/…+json`.
fn is_json_media(mime: &str) -> bool {
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// A JSON body that may be absent: an empty body (or JSON `null`) reads as `T::default()`.
#[derive(Debug)]
pub struct OptionalJson<T>(pub T);

/// Reads the whole body within `server.max_body_bytes` (413 beyond) and
/// `server.body_timeout_seconds` (408 after).
fn receive(
    req: &HttpRequest,
    payload: &mut Payload,
) -> impl Future<Output = Result<web::BytesMut, ApiError>> + 'static {
    let (limit, timeout) = req
        .app_data::<web::Data<AppState>>()
        .map(|s| {
            (
                s.settings.server.max_body_bytes,
                s.settings.server.body_timeout_seconds,
            )
        })
        .unwrap_or((64 * 1024, 10));
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let mut payload = payload.take();
    async move {
        if declared.is_some_and(|n| n > limit) {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        let mut body = web::BytesMut::with_capacity(declared.unwrap_or(1024).min(limit));
        let receive = async {
            while let Some(chunk) = payload.next().await {
                let chunk = chunk
                    .map_err(|e| ApiError::field("body", format!("could not be read: {e}")))?;
                if body.len() + chunk.len() > limit {
                    return Err(ApiError::PayloadTooLarge { limit });
                }
                body.extend_from_slice(&chunk);
            }
            Ok(())
        };
        // One deadline for the whole body, not per chunk: a byte every few seconds still ends.
        actix_rt::time::timeout(std::time::Duration::from_secs(timeout), receive)
            .await
            .map_err(|_| ApiError::RequestTimeout { seconds: timeout })??;
        Ok(body)
    }
}

fn read<T: DeserializeOwned + 'static>(
    req: &HttpRequest,
    payload: &mut Payload,
    empty: Option<fn() -> T>,
) -> Pin<Box<dyn Future<Output = Result<T, ApiError>>>> {
    let max_depth = req
        .app_data::<web::Data<AppState>>()
        .map_or(32, |s| s.settings.server.max_json_depth);
    let json = is_json(req);
    let body = receive(req, payload);
    Box::pin(async move {
        let body = body.await?;
        if let Some(empty) = empty {
            // No body, or a JSON `null`, means "nothing to say": the defaults.
            if body.iter().all(u8::is_ascii_whitespace) || (json && body.trim_ascii() == b"null") {
                return Ok(empty());
            }
        }
        if !json {
            return Err(ApiError::UnsupportedMediaType);
        }
        parse_json(&body, max_depth)
    })
}

/// Parses a JSON body no deeper than `max_depth`, naming the failing field.
pub fn parse_json<T: DeserializeOwned>(body: &[u8], max_depth: usize) -> Result<T, ApiError> {
    if too_deep(body, max_depth) {
        return Err(ApiError::field(
            "body",
            format!("nests arrays and objects deeper than {max_depth} levels"),
        ));
    }
    parse(body)
}

/// A body of any content type, read within the same size and time limits as [`Json`], with the
/// request's media type (lower case, without parameters) for the handler to choose a parser.
#[derive(Debug)]
pub struct RawBody {
    /// The bytes.
    pub bytes: web::Bytes,
    /// `application/json`, `text/plain`, …; empty when the request named none.
    pub media_type: String,
    /// The whole `Content-Type` value (a multipart boundary is a parameter of it).
    pub content_type: String,
}

impl RawBody {
    /// Whether the body is JSON (`application/json` or `application/…+json`).
    pub fn is_json(&self) -> bool {
        is_json_media(&self.media_type)
    }
}

impl FromRequest for RawBody {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let media_type = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let body = receive(req, payload);
        Box::pin(async move {
            Ok(RawBody {
                bytes: body.await?.freeze(),
                media_type,
                content_type,
            })
        })
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let fut = read::<T>(req, payload, None);
        Box::pin(async move { fut.await.map(Json) })
    }
}

impl<T: DeserializeOwned + Default + 'static> FromRequest for OptionalJson<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let fut = read::<T>(req, payload, Some(T::default));
        Box::pin(async move { fut.await.map(OptionalJson) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    #[allow(dead_code)]
    struct Demo {
        title: String,
        count: Option<u32>,
        items: Option<Vec<Inner>>,
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        name: String,
    }

    fn field_of(e: ApiError) -> (String, String) {
        match e {
            ApiError::Validation { errors, .. } => {
                (errors[0].field.clone(), errors[0].reason.clone())
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn deep_nesting_is_detected_outside_strings() {
        let deep = format!("{}{}", "[".repeat(33), "]".repeat(33));
        assert!(too_deep(deep.as_bytes(), 32));
        assert!(!too_deep(b"{\"a\":[[1]],\"s\":\"[[[[[[\\\"[[[[\"}", 3));
    }

    #[test]
    fn parse_errors_name_the_field() {
        assert_eq!(
            field_of(parse::<Demo>(b"{}").unwrap_err()),
            ("title".into(), "is required".into())
        );
        let (field, reason) =
            field_of(parse::<Demo>(br#"{"title":"x","count":"three"}"#).unwrap_err());
        assert_eq!(field, "count");
        assert!(reason.contains("invalid type"), "{reason}");
        let (field, _) =
            field_of(parse::<Demo>(br#"{"title":"x","items":[{"name":"a"},{}]}"#).unwrap_err());
        assert_eq!(field, "items[1].name");
        let (field, reason) = field_of(parse::<Demo>(br#"{"title":"x","colour":1}"#).unwrap_err());
        assert_eq!(field, "colour");
        assert!(reason.contains("unknown field `colour`"), "{reason}");
        let (field, _) = field_of(parse::<Demo>(br#"{"title": "#).unwrap_err());
        assert_eq!(field, "body");
    }

    #[test]
    fn structs_come_from_objects_only() {
        use crate::api::schemas::{BatchRequest, PatchDeviceRequest};
        let (field, reason) = field_of(parse::<Demo>(br#"["x"]"#).unwrap_err());
        assert_eq!(field, "body");
        assert!(reason.contains("expected a JSON object"), "{reason}");
        let (field, reason) = field_of(parse::<BatchRequest>(br#"{"items":[["t"]]}"#).unwrap_err());
        assert_eq!(field, "items[0]");
        assert!(reason.contains("expected a JSON object"), "{reason}");
        let (field, _) = field_of(
            parse::<BatchRequest>(br#"{"items":[{"title":"t","tags":[1]}]}"#).unwrap_err(),
        );
        assert_eq!(field, "items[0].tags[0]");
        let (field, _) = field_of(parse::<PatchDeviceRequest>(br#"{"settings":[]}"#).unwrap_err());
        assert_eq!(field, "settings");
        let (field, _) = field_of(
            parse::<PatchDeviceRequest>(br#"{"settings":{"quietHours":["22:00"]}}"#).unwrap_err(),
        );
        assert_eq!(field, "settings.quietHours");
        let patch = parse::<PatchDeviceRequest>(br#"{"settings":{"quietHours":null}}"#).unwrap();
        assert!(matches!(
            patch.settings.and_then(|s| s.quiet_hours),
            Some(None)
        ));
        let patch = parse::<PatchDeviceRequest>(br#"{"settings":null}"#).unwrap();
        assert!(patch.settings.is_none());
    }
}
