//! The id and the trace of the request being handled on this task: set by the request middleware
//! (`crate::api::middleware`) around each request, read by the problem documents of
//! [`crate::error`], by [`crate::logging::request_scoped`] (so that sessions and rate limits can
//! tag their lines with them) and by the publish handlers (which give the trace id to the queue).
//! It lives below all of them so that none imports the middleware.
//!
//! The trace is W3C Trace Context: [`TraceContext::parse`] reads a `traceparent` header, and
//! [`TraceContext::generate`] starts a new trace when there is none (or it is invalid).

use std::future::Future;

use beepmyphone_actors::trace::{parse_lower_hex, TraceId};
use rand::Rng;

tokio::task_local! {
    static CURRENT_REQUEST_ID: String;
    static CURRENT_TRACE_ID: TraceId;
}

/// The id of the request being handled on this task, if any.
pub fn current_request_id() -> Option<String> {
    CURRENT_REQUEST_ID.try_with(Clone::clone).ok()
}

/// Runs `fut` with `id` as the current request id.
pub fn scoped<F: Future>(id: String, fut: F) -> impl Future<Output = F::Output> {
    CURRENT_REQUEST_ID.scope(id, fut)
}

/// The trace id of the request being handled on this task, if any.
pub fn current_trace_id() -> Option<TraceId> {
    CURRENT_TRACE_ID.try_with(|id| *id).ok()
}

/// Runs `fut` with `trace_id` as the current trace id.
pub fn trace_scoped<F: Future>(trace_id: TraceId, fut: F) -> impl Future<Output = F::Output> {
    CURRENT_TRACE_ID.scope(trace_id, fut)
}

/// A request's W3C trace context: its trace id, the caller's span (none when the relay started
/// the trace) and the trace flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace id, kept with every notification the request publishes.
    pub trace_id: TraceId,
    /// The caller's span id (`parent-id`), if the trace came with the request.
    pub parent_id: Option<[u8; 8]>,
    /// `trace-flags`; only the sampled bit (`01`) is defined.
    pub flags: u8,
}

impl TraceContext {
    /// Parses a `traceparent` value: `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`, in
    /// lower case, with neither id all zeros. A later version (not `ff`) is read for the same
    /// four fields when they are followed by nothing or by `-` (W3C Trace Context §3.2.4).
    /// `None` for anything else: the caller then starts a new trace.
    pub fn parse(header: &str) -> Option<Self> {
        let header = header.trim_matches([' ', '\t']);
        let mut version = [0u8; 1];
        parse_lower_hex(header.get(..2)?, &mut version)?;
        match version[0] {
            0 if header.len() == 55 => {}
            0 | 0xff => return None,
            _ if header.len() == 55 || header.as_bytes().get(55) == Some(&b'-') => {}
            _ => return None,
        }
        let fields = header.get(..55)?.as_bytes();
        if fields[2] != b'-' || fields[35] != b'-' || fields[52] != b'-' {
            return None;
        }
        let trace_id = TraceId::parse_hex(header.get(3..35)?)?;
        let mut parent = [0u8; 8];
        parse_lower_hex(header.get(36..52)?, &mut parent)?;
        if parent == [0; 8] {
            return None;
        }
        let mut flags = [0u8; 1];
        parse_lower_hex(header.get(53..55)?, &mut flags)?;
        Some(Self {
            trace_id,
            parent_id: Some(parent),
            flags: flags[0],
        })
    }

    /// A new trace: a random trace id, no parent, not sampled.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 16];
        // All zeros (one chance in 2^128) is not a trace id: draw again.
        let trace_id = loop {
            rand::rng().fill_bytes(&mut bytes);
            if let Some(id) = TraceId::from_bytes(bytes) {
                break id;
            }
        };
        Self {
            trace_id,
            parent_id: None,
            flags: 0,
        }
    }

    /// The `traceparent` of the relay's answer: version `00`, the same trace id, `span_id` (the
    /// relay's own span for this request) and the sampled flag as it came.
    pub fn child(&self, span_id: [u8; 8]) -> String {
        format!(
            "00-{}-{}-{:02x}",
            self.trace_id,
            hex::encode(span_id),
            self.flags & 0x01
        )
    }
}

/// A random span id, never all zeros.
pub fn new_span_id() -> [u8; 8] {
    let mut bytes = [0u8; 8];
    rand::rng().fill_bytes(&mut bytes);
    bytes[7] |= (bytes == [0; 8]) as u8;
    bytes
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
        let trace = TraceContext::generate().trace_id;
        assert_eq!(
            trace_scoped(trace, async { current_trace_id() }).await,
            Some(trace)
        );
        assert_eq!(current_trace_id(), None);
    }

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    #[test]
    fn a_valid_traceparent_is_read() {
        let parsed = TraceContext::parse(&format!("00-{TRACE}-00f067aa0ba902b7-01")).unwrap();
        assert_eq!(parsed.trace_id.to_string(), TRACE);
        assert_eq!(
            parsed.parent_id,
            Some([0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7])
        );
        assert_eq!(parsed.flags, 1);
        // A later version with more fields: the known four are read.
        let later = TraceContext::parse(&format!("cc-{TRACE}-00f067aa0ba902b7-00-what-not"));
        assert_eq!(later.map(|t| t.trace_id.to_string()), Some(TRACE.into()));
    }

    #[test]
    fn an_invalid_traceparent_is_ignored() {
        for bad in [
            String::new(),
            "garbage".into(),
            format!("00-{}-00f067aa0ba902b7-01", "0".repeat(32)),
            format!("00-{TRACE}-0000000000000000-01"),
            format!("00-{}-00f067aa0ba902b7-01", TRACE.to_uppercase()),
            format!("01-{TRACE}-00f067aa0ba902b7"),
            format!("00-{TRACE}-00f067aa0ba902b7-01-extra"),
            format!("ff-{TRACE}-00f067aa0ba902b7-01"),
            format!("00_{TRACE}_00f067aa0ba902b7_01"),
            format!("00-{TRACE}-00f067aa0ba902b7-x1"),
            format!("cc-{TRACE}-00f067aa0ba902b7-01x"),
            format!("0-{TRACE}-00f067aa0ba902b7-01"),
        ] {
            assert_eq!(TraceContext::parse(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_answer_carries_the_trace_and_a_new_span() {
        let parsed = TraceContext::parse(&format!("00-{TRACE}-00f067aa0ba902b7-03")).unwrap();
        let child = parsed.child([0xab; 8]);
        assert_eq!(child, format!("00-{TRACE}-abababababababab-01"));
        let again = TraceContext::parse(&child).unwrap();
        assert_eq!(again.trace_id, parsed.trace_id);
        let fresh = TraceContext::generate();
        assert_ne!(fresh.trace_id, TraceContext::generate().trace_id);
        assert!(TraceContext::parse(&fresh.child(new_span_id())).is_some());
    }
}
