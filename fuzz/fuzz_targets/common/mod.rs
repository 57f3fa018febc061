//! What the compatibility targets share: the framing of a fuzzed HTTP request, and the checks on
//! the publish request the compatibility layer makes of it.

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::Uri;
use actix_web::test::TestRequest;

use beepmyphone::api::schemas::{check, PublishRequest};
use beepmyphone::error::ApiError;

/// The clock of every publish here (2025-12-02).
pub const NOW_MS: i64 = 1_764_670_000_000;

/// A request as the fuzzer writes it: the query string on the first line, then `Name: value`
/// header lines up to an empty line, then the body (all of it, bytes as they are).
pub struct RawRequest<'a> {
    pub query: &'a str,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: &'a [u8],
}

impl<'a> RawRequest<'a> {
    /// `None` for what no HTTP client could send (a query or header the HTTP layer refuses).
    pub fn parse(data: &'a [u8]) -> Option<Self> {
        let (query, mut rest) = split_line(data);
        let query = std::str::from_utf8(query).ok()?;
        let mut headers = Vec::new();
        loop {
            let (line, after) = split_line(rest);
            rest = after;
            if line.is_empty() {
                break;
            }
            let colon = line.iter().position(|b| *b == b':')?;
            let name = HeaderName::from_bytes(line[..colon].trim_ascii()).ok()?;
            let value = HeaderValue::from_bytes(line[colon + 1..].trim_ascii()).ok()?;
            headers.push((name, value));
        }
        Some(Self {
            query,
            headers,
            body: rest,
        })
    }

    /// A test request for `path` with this query and these headers (`None` if the URI is not
    /// one).
    pub fn to_test_request(&self, path: &str) -> Option<TestRequest> {
        let uri = match self.query.is_empty() {
            true => path.to_owned(),
            false => format!("{path}?{}", self.query),
        };
        Uri::try_from(uri.as_str()).ok()?;
        let mut request = TestRequest::post().uri(&uri);
        for (name, value) in &self.headers {
            request = request.append_header((name.clone(), value.clone()));
        }
        Some(request)
    }
}

fn split_line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

/// A refusal of a bad request: a 400 that names what is wrong, never another error.
pub fn refused(error: &ApiError) {
    match error {
        ApiError::Validation { errors, .. } => {
            assert!(!errors.is_empty(), "a 400 naming no field");
            // The field may be empty: an unknown key `""` is named as it is.
            for e in errors {
                assert!(!e.reason.is_empty(), "{e:?}");
            }
        }
        other => panic!("a bad request answered {other:?}, not a 400"),
    }
}

/// The compatibility layer's promise: it makes what its clients send fit the relay's rules, all
/// but the fields in `passed_on` (which it forwards as sent, for the relay's rule to judge). So the
/// publish request passes `check` but for those, and then becomes a record.
pub fn fits_but(request: PublishRequest, passed_on: &[&str]) {
    if let Err(e) = check(&request) {
        let ApiError::Validation { errors, .. } = &e else {
            panic!("check answered {e:?}");
        };
        for error in errors {
            assert!(
                passed_on.contains(&error.field.as_str()),
                "the compatibility layer made an invalid {}: {} ({request:?})",
                error.field,
                error.reason
            );
        }
        return;
    }
    request
        .validate_into_record(NOW_MS, 7 * 24 * 3_600)
        .expect("a request that passed check becomes a record");
}
