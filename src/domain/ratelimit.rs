//! Rate-limit rules and decisions: what a rule allows and what one check answered. The algorithms
//! and the embedded backend are in [`crate::security::ratelimit`], the Redis scripts in
//! [`crate::redis`]; both read these types.

/// How a rule counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// Two fixed windows, the previous one weighted by how much of it still overlaps.
    SlidingWindow,
    /// The generic cell rate algorithm: a token bucket of `burst` tokens refilled at `limit` per
    /// window.
    Gcra,
}

/// One rate-limit rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The policy name in the `RateLimit-Policy` header (`ip`, `principal`, `auth`, …).
    pub name: &'static str,
    /// The algorithm.
    pub algorithm: Algorithm,
    /// Requests per window.
    pub limit: u32,
    /// The window, in milliseconds.
    pub window_ms: u64,
    /// GCRA only: the bucket size (requests allowed at once).
    pub burst: u32,
}

impl Rule {
    /// A sliding-window rule.
    pub fn window(name: &'static str, limit: u32, window_ms: u64) -> Self {
        Self {
            name,
            algorithm: Algorithm::SlidingWindow,
            limit: limit.max(1),
            window_ms: window_ms.max(1),
            burst: 0,
        }
    }

    /// A GCRA rule.
    pub fn gcra(name: &'static str, limit: u32, window_ms: u64, burst: u32) -> Self {
        Self {
            name,
            algorithm: Algorithm::Gcra,
            limit: limit.max(1),
            window_ms: window_ms.max(1),
            burst: burst.max(1),
        }
    }

    /// Microseconds between two requests at the sustained rate (GCRA).
    pub fn interval_us(&self) -> i64 {
        ((self.window_ms as i64) * 1_000 / i64::from(self.limit)).max(1)
    }

    /// The `RateLimit-Policy` item: `"ip";q=100;w=60`.
    pub fn policy_header(&self) -> String {
        format!(
            "\"{}\";q={};w={}",
            self.name,
            self.limit,
            self.window_ms.div_ceil(1_000)
        )
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may go on.
    pub allowed: bool,
    /// Requests left.
    pub remaining: u32,
    /// Milliseconds until the quota is fully available again (`t` in the `RateLimit` header).
    pub reset_ms: u64,
    /// Denied only: milliseconds until a request would be allowed.
    pub retry_after_ms: u64,
}

impl Decision {
    /// The `RateLimit` item: `"ip";r=42;t=17`.
    pub fn header(&self, rule: &Rule) -> String {
        format!(
            "\"{}\";r={};t={}",
            rule.name,
            self.remaining,
            self.reset_ms.div_ceil(1_000)
        )
    }

    /// Whole seconds for `Retry-After` (at least 1).
    pub fn retry_after_secs(&self) -> u64 {
        self.retry_after_ms.div_ceil(1_000).max(1)
    }
}
