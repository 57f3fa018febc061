//! The relay's HTTP API as the client commands reach it (`send`, `listen`, `capture`, the end-to-end
//! publish): [`Relay`], a base URL and an HTTP/1.1 client that checks the relay's certificate, and
//! [`ClientError`], what can go wrong, with the relay's [`Problem`] documents. No error ever holds
//! a token.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use crate::tls::client::{self as trust, Trust};

/// Time allowed for one HTTP exchange or WebSocket handshake.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest response body read from the relay.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Errors

/// What can go wrong in a client command. No variant ever holds a token.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Bad usage or configuration (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The relay refused the request; carries its problem document.
    #[error("{0}")]
    Rejected(Problem),
    /// The relay could not be reached, or the exchange broke off.
    #[error("{0}")]
    Transport(String),
    /// The credentials file could not be read or written.
    #[error("credentials file {path}: {reason}")]
    Credentials {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The relay revoked this device (close 4003).
    #[error("the relay revoked device {device}; pair again with `beepmyphone listen --code CODE`")]
    Revoked {
        /// The device id.
        device: String,
    },
    /// The relay no longer accepts the stored credentials.
    #[error(
        "the relay no longer accepts the credentials of device {device} ({why}); \
         pair again with `beepmyphone listen --code CODE`"
    )]
    CredentialsRejected {
        /// The device id.
        device: String,
        /// Why, as the relay put it.
        why: String,
    },
    /// Standard output could not be written.
    #[error("cannot write to standard output: {0}")]
    Output(std::io::Error),
}

impl ClientError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            ClientError::Usage(_) => 2,
            _ => 1,
        }
    }

    /// Whether trying again later may succeed (network trouble, 408, 429, 5xx).
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Transport(_) => true,
            ClientError::Rejected(problem) => {
                matches!(problem.status, 408 | 429) || problem.status >= 500
            }
            _ => false,
        }
    }

    pub(crate) fn credentials(path: &Path, reason: impl fmt::Display) -> Self {
        ClientError::Credentials {
            path: path.display().to_string(),
            reason: reason.to_string(),
        }
    }
}

/// An RFC 9457 problem document from the relay (only the parts a client shows).
#[derive(Debug, Default, Deserialize)]
pub struct Problem {
    /// The HTTP status (taken from the response line).
    #[serde(skip)]
    pub status: u16,
    /// A short summary of the problem type.
    pub title: Option<String>,
    /// A one-line explanation of this occurrence.
    pub detail: Option<String>,
    /// The stable machine-readable code.
    pub code: Option<String>,
    /// The invalid fields, if any.
    #[serde(default)]
    pub errors: Vec<FieldProblem>,
}

/// One entry of a problem document's `errors`.
#[derive(Debug, Deserialize)]
pub struct FieldProblem {
    /// The field's path in the request.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl Problem {
    pub(crate) fn from_body(status: u16, body: &[u8]) -> Self {
        let mut problem = serde_json::from_slice::<Problem>(body).unwrap_or_default();
        problem.status = status;
        problem
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.detail, &self.title) {
            (Some(detail), _) => write!(f, "{detail}")?,
            (None, Some(title)) => write!(f, "{title}")?,
            (None, None) => write!(f, "the relay answered HTTP {}", self.status)?,
        }
        for error in &self.errors {
            write!(f, "\n  {}: {}", error.field, error.reason)?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The relay's HTTP API

/// A relay's base URL and an HTTP client for it (also the publisher of `beepmyphone capture`).
#[derive(Clone)]
pub(crate) struct Relay {
    /// The HTTP client (also for the device socket's handshake).
    pub(crate) client: awc::Client,
    /// The normalized base URL (no trailing slash).
    pub(crate) base: String,
}

impl Relay {
    /// A client for the relay at `server` that checks its certificate as `trust` says.
    pub(crate) fn new(server: &str, trust: &Trust) -> Result<Self, ClientError> {
        let base = normalize_server(server)?;
        if *trust == Trust::Insecure {
            eprintln!("beepmyphone: warning: --insecure: the relay's certificate is not checked");
        }
        let tls = trust::connector(trust)
            .map_err(|e| ClientError::Transport(format!("cannot set up TLS: {e}")))?;
        let client = awc::Client::builder()
            // HTTP/1.1 only, so the client never speaks HTTP/2 even against a TLS server that
            // offers it (the h2 crate is in the tree only through awc; see deny.toml).
            .connector(
                awc::Connector::new()
                    .max_http_version(awc::http::Version::HTTP_11)
                    .openssl(tls),
            )
            .timeout(REQUEST_TIMEOUT)
            .add_default_header((
                awc::http::header::USER_AGENT,
                concat!("beepmyphone/", env!("CARGO_PKG_VERSION")),
            ))
            .finish();
        Ok(Self { client, base })
    }

    fn api_url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base)
    }

    /// POSTs `body` as JSON; parses a 2xx answer as `T`, anything else as a problem document.
    pub(crate) async fn post_json<T: DeserializeOwned>(
        &self,
        path: &str,
        token: Option<&str>,
        body: &Value,
    ) -> Result<T, ClientError> {
        let mut request = self.client.post(self.api_url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let mut response = request
            .send_json(body)
            .await
            .map_err(|e| connect_error(&self.base, &e))?;
        let status = response.status();
        let bytes = response
            .body()
            .limit(MAX_RESPONSE_BYTES)
            .await
            .map_err(|e| ClientError::Transport(format!("reading the relay's answer: {e}")))?;
        if !status.is_success() {
            return Err(ClientError::Rejected(Problem::from_body(
                status.as_u16(),
                &bytes,
            )));
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            ClientError::Transport(format!(
                "unexpected answer from the relay (HTTP {status}): {e}"
            ))
        })
    }
}

/// A failed connection, with what to do when the relay's certificate was not trusted.
pub(crate) fn connect_error(base: &str, error: &dyn fmt::Display) -> ClientError {
    let error = error.to_string();
    let hint = if error.contains("certificate verify failed") {
        "; the relay's certificate is not trusted: pass the CA fingerprint that \
         `beepmyphone pairing-code` shows with --ca-fingerprint, or install the relay's CA \
         (`beepmyphone cert export-ca`)"
    } else {
        ""
    };
    ClientError::Transport(format!("cannot reach {base}: {error}{hint}"))
}

/// Checks a relay URL (http or https, a host, no user info) and drops trailing slashes.
pub(crate) fn normalize_server(server: &str) -> Result<String, ClientError> {
    let bad = |why: &str| ClientError::Usage(format!("invalid server URL: {why}"));
    let url = url::Url::parse(server.trim()).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("the scheme must be http or https"));
    }
    if url.host().is_none() {
        return Err(bad("it has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("it must not carry credentials"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("it must not have a query or fragment"));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}
