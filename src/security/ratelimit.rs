//! Rate limiting: the two algorithms (a sliding-window counter and GCRA, a token bucket), the
//! embedded backend (a capped map; expired and then oldest keys are evicted), the Redis backend
//! (atomic Lua scripts in [`crate::redis`], a TTL on every key) with fallback to the embedded one,
//! and the list of blocked IPs (ten consecutive violations block an IP for `limits.block_seconds`).
//!
//! Keys are client IPs or principal ids (`tok_…`, `dev_…`, `adm_…`), never secrets. Times come from
//! the injected clock, in milliseconds, so tests advance time instead of sleeping.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::config::LimitSettings;
pub use crate::domain::ratelimit::{Algorithm, Decision, Rule};
use crate::redis::Redis;

#[derive(Debug, Clone, Copy)]
enum State {
    Window { index: i64, prev: u32, curr: u32 },
    Gcra { tat_us: i64 },
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    state: State,
    /// When the entry no longer matters (epoch ms).
    expires_ms: i64,
}

fn sliding_window(
    rule: &Rule,
    entry: Option<State>,
    now_ms: i64,
    consume: bool,
) -> (State, Decision) {
    let w = rule.window_ms as i64;
    let index = now_ms.div_euclid(w);
    let (prev, curr) = match entry {
        Some(State::Window {
            index: i,
            prev,
            curr,
        }) if i == index => (prev, curr),
        Some(State::Window { index: i, curr, .. }) if i + 1 == index => (curr, 0),
        _ => (0, 0),
    };
    let into = now_ms - index * w;
    let weight = (w - into) as f64 / w as f64;
    let estimate = f64::from(prev) * weight + f64::from(curr);
    let limit = f64::from(rule.limit);
    let allowed = estimate + 1.0 <= limit;
    let curr = if allowed && consume {
        curr.saturating_add(1)
    } else {
        curr
    };
    let used = f64::from(prev) * weight + f64::from(curr);
    let remaining = (limit - used).floor().max(0.0) as u32;
    let to_window_end = (w - into) as u64;
    let retry_after_ms = if allowed {
        0
    } else if f64::from(curr) + 1.0 > limit {
        // This window alone is full: wait for it to end (the next one starts with it as `prev`,
        // whose weight then falls).
        to_window_end
    } else {
        // The previous window's weight must fall far enough.
        let need = (estimate + 1.0 - limit) / f64::from(prev.max(1));
        ((need * w as f64).ceil() as u64).clamp(1, to_window_end)
    };
    (
        State::Window { index, prev, curr },
        Decision {
            allowed,
            remaining,
            reset_ms: to_window_end,
            retry_after_ms,
        },
    )
}

fn gcra(rule: &Rule, entry: Option<State>, now_ms: i64, consume: bool) -> (State, Decision) {
    let now = now_ms * 1_000;
    let t = rule.interval_us();
    let capacity = t * i64::from(rule.burst);
    let tat = match entry {
        Some(State::Gcra { tat_us }) => tat_us.max(now),
        _ => now,
    };
    let new_tat = tat + t;
    let allowed = new_tat - now <= capacity;
    let tat = if allowed && consume { new_tat } else { tat };
    let used = tat - now;
    let remaining = ((capacity - used) / t).max(0) as u32;
    let retry_after_ms = if allowed {
        0
    } else {
        ((new_tat - now - capacity) as u64).div_ceil(1_000).max(1)
    };
    (
        State::Gcra { tat_us: tat },
        Decision {
            allowed,
            remaining,
            reset_ms: (used.max(0) as u64).div_ceil(1_000),
            retry_after_ms,
        },
    )
}

fn decide(rule: &Rule, entry: Option<State>, now_ms: i64, consume: bool) -> (State, Decision) {
    match rule.algorithm {
        Algorithm::SlidingWindow => sliding_window(rule, entry, now_ms, consume),
        Algorithm::Gcra => gcra(rule, entry, now_ms, consume),
    }
}

/// Checks one event against a GCRA rule whose only state, the theoretical arrival time in µs, the
/// caller keeps (a socket's inbound frames); counts it when allowed.
pub fn gcra_local(rule: &Rule, tat_us: &mut i64, now_ms: i64) -> bool {
    let (state, decision) = gcra(rule, Some(State::Gcra { tat_us: *tat_us }), now_ms, true);
    if let State::Gcra { tat_us: tat } = state {
        *tat_us = tat;
    }
    decision.allowed
}

/// The embedded backend: per-process counters in a map of at most `max_keys` keys per rule.
#[derive(Debug)]
pub struct EmbeddedLimiter {
    rules: Mutex<HashMap<&'static str, Map>>,
    max_keys: usize,
}

type Map = HashMap<Box<str>, Entry>;

impl EmbeddedLimiter {
    /// A limiter holding at most `max_keys` keys per rule.
    pub fn new(max_keys: usize) -> Self {
        Self {
            rules: Mutex::new(HashMap::new()),
            max_keys: max_keys.max(16),
        }
    }

    /// Checks (and, when `consume`, counts) one request of `key` under `rule`.
    pub fn check(&self, rule: &Rule, key: &str, now_ms: i64, consume: bool) -> Decision {
        let Ok(mut rules) = self.rules.lock() else {
            // A poisoned lock: fail open rather than fail every request.
            return Decision {
                allowed: true,
                remaining: rule.limit,
                reset_ms: 0,
                retry_after_ms: 0,
            };
        };
        let map = rules.entry(rule.name).or_default();
        let expires_ms = now_ms + 2 * rule.window_ms as i64;
        if let Some(entry) = map.get_mut(key) {
            let current = (entry.expires_ms > now_ms).then_some(entry.state);
            let (state, decision) = decide(rule, current, now_ms, consume);
            *entry = Entry { state, expires_ms };
            return decision;
        }
        let (state, decision) = decide(rule, None, now_ms, consume);
        if map.len() >= self.max_keys {
            evict(map, now_ms);
        }
        map.insert(key.into(), Entry { state, expires_ms });
        decision
    }

    /// Keys held, over all rules.
    pub fn len(&self) -> usize {
        self.rules
            .lock()
            .map(|m| m.values().map(HashMap::len).sum())
            .unwrap_or(0)
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Drops expired entries; if none were, the eighth that expires soonest (the oldest).
fn evict(map: &mut Map, now_ms: i64) {
    let before = map.len();
    map.retain(|_, e| e.expires_ms > now_ms);
    if map.len() < before {
        return;
    }
    let mut expiries: Vec<i64> = map.values().map(|e| e.expires_ms).collect();
    let cut = (expiries.len() / 8).max(1);
    expiries.select_nth_unstable(cut - 1);
    let threshold = expiries.get(cut - 1).copied().unwrap_or(i64::MAX);
    let mut dropped = 0;
    map.retain(|_, e| {
        if dropped < cut && e.expires_ms <= threshold {
            dropped += 1;
            false
        } else {
            true
        }
    });
}

/// How often a relay reads the IP blocks shared through Redis.
pub const BLOCK_SYNC_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// A blocked IP, as the admin API shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Block {
    /// The IP.
    pub ip: String,
    /// When the block ends (epoch ms).
    pub until_ms: i64,
}

#[derive(Debug, Default)]
struct Offender {
    violations: u32,
    blocked_until_ms: i64,
    /// The block is in Redis: lifted there (by any relay), it is lifted here at the next sync.
    shared: bool,
}

/// The limiter every request goes through: the rules' backend and the block list.
///
/// Violations are counted per process. A block is kept here and, with the Redis backend, shared
/// through a sorted set in Redis: every relay on that Redis reads the shared blocks into
/// `shared` every [`BLOCK_SYNC_INTERVAL`] ([`RateLimiter::sync_blocks`]), so a request is never
/// slowed by a Redis call for the block check, and a block reaches the other relays within that
/// interval. Lifting a block lifts it in Redis too.
pub struct RateLimiter {
    embedded: EmbeddedLimiter,
    redis: Option<Redis>,
    degraded: Arc<AtomicBool>,
    offenders: Mutex<HashMap<IpAddr, Offender>>,
    shared: Mutex<HashMap<IpAddr, i64>>,
    block_after: u32,
    block_ms: i64,
    log: slog::Logger,
}

impl RateLimiter {
    /// A limiter with the given settings; Redis-backed when `redis` is given.
    pub fn new(settings: &LimitSettings, redis: Option<Redis>, log: slog::Logger) -> Self {
        Self {
            embedded: EmbeddedLimiter::new(settings.max_keys),
            redis,
            degraded: Arc::new(AtomicBool::new(false)),
            offenders: Mutex::new(HashMap::new()),
            shared: Mutex::new(HashMap::new()),
            block_after: settings.block_after_violations.max(1),
            block_ms: (settings.block_seconds as i64) * 1_000,
            log,
        }
    }

    /// `redis` or `embedded`.
    pub fn backend_name(&self) -> &'static str {
        if self.redis.is_some() {
            "redis"
        } else {
            "embedded"
        }
    }

    /// Whether Redis failed and the embedded backend stands in.
    pub fn degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }

    /// A health probe reporting the degraded state.
    pub fn probe(&self) -> LimiterProbe {
        LimiterProbe {
            degraded: self.degraded.clone(),
            redis: self.redis.is_some(),
        }
    }

    /// Checks (and, when `consume`, counts) one request of `key` under `rule`. Never fails:
    /// when Redis cannot answer, the embedded backend decides.
    pub async fn check(&self, rule: &Rule, key: &str, now_ms: i64, consume: bool) -> Decision {
        if let Some(redis) = &self.redis {
            match redis.rate_limit(rule, key, now_ms, consume).await {
                Ok(decision) => {
                    if self.degraded.swap(false, Ordering::Relaxed) {
                        slog::info!(self.log, "rate limiting is back on Redis");
                    }
                    return decision;
                }
                Err(e) => {
                    if !self.degraded.swap(true, Ordering::Relaxed) {
                        slog::warn!(self.log, "Redis failed; rate limits are per process until it is back (degraded)"; "error" => %e);
                    }
                }
            }
        }
        self.embedded.check(rule, key, now_ms, consume)
    }

    /// Until when `ip` is blocked, if it is (here or, with Redis, by any relay).
    pub fn blocked_until(&self, ip: IpAddr, now_ms: i64) -> Option<i64> {
        let local = self
            .offenders
            .lock()
            .ok()
            .and_then(|map| map.get(&ip).map(|o| o.blocked_until_ms));
        let shared = self
            .shared
            .lock()
            .ok()
            .and_then(|map| map.get(&ip).copied());
        local.max(shared).filter(|until| *until > now_ms)
    }

    /// Records a denied request of `ip`; returns whether it is now blocked. A new block is shared
    /// through Redis when that is the backend (a failure to share is logged; the block holds here).
    pub async fn violation(&self, ip: IpAddr, now_ms: i64) -> bool {
        let until = {
            let Ok(mut map) = self.offenders.lock() else {
                return false;
            };
            if map.len() >= self.embedded.max_keys {
                map.retain(|_, o| o.blocked_until_ms > now_ms);
            }
            let offender = map.entry(ip).or_default();
            offender.violations += 1;
            if offender.violations < self.block_after {
                return false;
            }
            offender.violations = 0;
            offender.blocked_until_ms = now_ms + self.block_ms;
            offender.blocked_until_ms
        };
        slog::warn!(crate::logging::request_scoped(&self.log), "blocked an IP after repeated rate-limit violations"; "ip" => %ip, "seconds" => self.block_ms / 1_000);
        if let Some(redis) = &self.redis {
            match redis.add_block(&ip.to_string(), until, now_ms).await {
                Ok(()) => {
                    if let Some(o) = self
                        .offenders
                        .lock()
                        .ok()
                        .as_mut()
                        .and_then(|m| m.get_mut(&ip))
                    {
                        o.shared = true;
                    }
                }
                Err(e) => {
                    slog::warn!(self.log, "could not share an IP block through Redis; it holds on this relay"; "ip" => %ip, "error" => %e);
                }
            }
        }
        true
    }

    /// Records an allowed request of `ip`: the violations are no longer consecutive.
    pub fn allowed(&self, ip: IpAddr, now_ms: i64) {
        let Ok(mut map) = self.offenders.lock() else {
            return;
        };
        if let Some(o) = map.get(&ip) {
            if o.blocked_until_ms <= now_ms {
                map.remove(&ip);
            }
        }
    }

    /// Reads the blocks shared through Redis (no-op on the embedded backend). Called every
    /// [`BLOCK_SYNC_INTERVAL`]; on failure the last known shared blocks stay in force.
    pub async fn sync_blocks(&self, now_ms: i64) -> Result<(), crate::redis::RedisError> {
        let Some(redis) = &self.redis else {
            return Ok(());
        };
        let fresh: HashMap<IpAddr, i64> = redis
            .blocks(now_ms)
            .await?
            .into_iter()
            .filter_map(|(ip, until)| ip.parse().ok().map(|ip| (ip, until)))
            .collect();
        // A shared block that is gone from Redis was lifted by an admin on some relay.
        if let Ok(mut map) = self.offenders.lock() {
            map.retain(|ip, o| !o.shared || fresh.contains_key(ip));
        }
        if let Ok(mut shared) = self.shared.lock() {
            *shared = fresh;
        }
        Ok(())
    }

    /// How many IPs this relay knows to be blocked at `now_ms` (its own blocks and the shared
    /// ones of its last sync; no Redis round trip, for metrics).
    pub fn active_blocks(&self, now_ms: i64) -> usize {
        let mut ips: HashSet<IpAddr> = HashSet::new();
        if let Ok(map) = self.offenders.lock() {
            ips.extend(
                map.iter()
                    .filter(|(_, o)| o.blocked_until_ms > now_ms)
                    .map(|(ip, _)| *ip),
            );
        }
        if let Ok(map) = self.shared.lock() {
            ips.extend(
                map.iter()
                    .filter(|(_, until)| **until > now_ms)
                    .map(|(ip, _)| *ip),
            );
        }
        ips.len()
    }

    /// The IPs blocked now: this relay's blocks and, with Redis, every relay's.
    pub async fn blocks(&self, now_ms: i64) -> Vec<Block> {
        if let Err(e) = self.sync_blocks(now_ms).await {
            slog::warn!(self.log, "could not read the shared IP blocks from Redis"; "error" => %e);
        }
        let mut all: HashMap<IpAddr, i64> = HashMap::new();
        if let Ok(map) = self.offenders.lock() {
            for (ip, o) in map.iter() {
                all.insert(*ip, o.blocked_until_ms);
            }
        }
        if let Ok(map) = self.shared.lock() {
            for (ip, until) in map.iter() {
                let entry = all.entry(*ip).or_insert(*until);
                *entry = (*entry).max(*until);
            }
        }
        let mut blocks: Vec<Block> = all
            .into_iter()
            .filter(|(_, until)| *until > now_ms)
            .map(|(ip, until)| Block {
                ip: ip.to_string(),
                until_ms: until,
            })
            .collect();
        blocks.sort_by(|a, b| a.ip.cmp(&b.ip));
        blocks
    }

    /// Lifts the block of `ip`, here and in Redis; returns whether there was one. Other relays
    /// drop it at their next sync.
    pub async fn unblock(&self, ip: IpAddr, now_ms: i64) -> Result<bool, crate::redis::RedisError> {
        let local = self
            .offenders
            .lock()
            .ok()
            .and_then(|mut map| map.remove(&ip))
            .is_some_and(|o| o.blocked_until_ms > now_ms);
        let cached = self
            .shared
            .lock()
            .ok()
            .and_then(|mut map| map.remove(&ip))
            .is_some_and(|until| until > now_ms);
        let remote = match &self.redis {
            Some(redis) => redis.remove_block(&ip.to_string()).await?,
            None => false,
        };
        Ok(local || cached || remote)
    }

    /// The embedded backend (for inspection in tests).
    pub fn embedded(&self) -> &EmbeddedLimiter {
        &self.embedded
    }
}

/// The limiter's health: degraded while Redis is failing.
pub struct LimiterProbe {
    degraded: Arc<AtomicBool>,
    redis: bool,
}

impl beepmyphone_actors::health::Probe for LimiterProbe {
    fn name(&self) -> &str {
        "ratelimit"
    }

    fn check(&self) -> beepmyphone_actors::ports::ProbeFuture {
        use beepmyphone_actors::health::{Finding, Status};
        let finding = if self.degraded.load(Ordering::Relaxed) {
            Finding::new(Status::Degraded, "Redis is failing; limits are per process")
        } else if self.redis {
            Finding::new(Status::Healthy, "redis")
        } else {
            Finding::new(Status::Healthy, "embedded")
        };
        Box::pin(std::future::ready(finding))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliding_window_counts_and_slides() {
        let limiter = EmbeddedLimiter::new(100);
        let rule = Rule::window("ip", 3, 60_000);
        let t0 = 6_000_000;
        for _ in 0..3 {
            assert!(limiter.check(&rule, "a", t0, true).allowed);
        }
        let denied = limiter.check(&rule, "a", t0, true);
        assert!(!denied.allowed);
        assert_eq!(denied.remaining, 0);
        assert!(denied.retry_after_secs() >= 1);
        assert!(limiter.check(&rule, "b", t0, true).allowed);
        // Half into the next window, half of the previous three still count.
        let later = limiter.check(&rule, "a", t0 + 90_000, true);
        assert!(later.allowed);
        // Two windows on, nothing counts.
        assert_eq!(limiter.check(&rule, "a", t0 + 180_000, false).remaining, 3);
    }

    #[test]
    fn gcra_allows_a_burst_then_the_rate() {
        let limiter = EmbeddedLimiter::new(100);
        let rule = Rule::gcra("publish", 60, 60_000, 5);
        let t0 = 1_000_000;
        for _ in 0..5 {
            assert!(limiter.check(&rule, "tok", t0, true).allowed);
        }
        let denied = limiter.check(&rule, "tok", t0, true);
        assert!(!denied.allowed);
        assert_eq!(denied.retry_after_ms, 1_000);
        assert!(limiter.check(&rule, "tok", t0 + 1_000, true).allowed);
        assert!(!limiter.check(&rule, "tok", t0 + 1_000, true).allowed);
    }

    #[test]
    fn the_map_is_bounded() {
        let limiter = EmbeddedLimiter::new(16);
        let rule = Rule::window("ip", 3, 60_000);
        for i in 0..1_000 {
            limiter.check(&rule, &format!("k{i}"), 1_000 + i, true);
        }
        assert!(limiter.len() <= 16);
    }
}
