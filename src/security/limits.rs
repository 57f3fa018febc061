//! The limits in force: the rules built from `[limits]`, the limiter (backend and block list), the
//! trusted proxies and the count of open sockets per IP. The HTTP layers that apply them are in
//! `crate::api::ratelimit`; the device socket reads the frame rule and releases its socket count.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use crate::config::Settings;
use crate::domain::net::{client_ip, Cidr};
use crate::domain::ratelimit::Rule;
use crate::redis::Redis;
use crate::security::ratelimit::RateLimiter;

/// Live event streams (`GET /api/v1/events`) a caller may hold open at once.
pub const MAX_STREAMS_PER_CALLER: usize = 4;

/// Open live event streams per caller; a stream holds its [`StreamSlot`] while it is open.
#[derive(Debug, Default)]
pub struct StreamSlots(std::sync::Arc<Mutex<HashMap<String, usize>>>);

impl StreamSlots {
    /// A slot for `caller`, or `None` when it already holds [`MAX_STREAMS_PER_CALLER`].
    pub fn take(&self, caller: &str) -> Option<StreamSlot> {
        let mut open = self.0.lock().ok()?;
        let count = open.entry(caller.to_owned()).or_default();
        if *count >= MAX_STREAMS_PER_CALLER {
            return None;
        }
        *count += 1;
        Some(StreamSlot {
            slots: self.0.clone(),
            caller: caller.to_owned(),
        })
    }
}

/// One open stream; dropping it frees the slot.
#[derive(Debug)]
pub struct StreamSlot {
    slots: std::sync::Arc<Mutex<HashMap<String, usize>>>,
    caller: String,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        if let Ok(mut open) = self.slots.lock() {
            if let Some(count) = open.get_mut(&self.caller) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    open.remove(&self.caller);
                }
            }
        }
    }
}

/// The rules in force.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Requests without credentials, per IP.
    pub ip: Rule,
    /// Authenticated requests, per caller.
    pub principal: Rule,
    /// Admin requests, per admin token or admin.
    pub admin: Rule,
    /// Failed login, pairing and refresh attempts, per IP.
    pub auth: Rule,
    /// Publish requests, per token.
    pub publish: Rule,
    /// WebSocket connection attempts, per IP.
    pub ws: Rule,
    /// Inbound WebSocket frames, per socket (checked by the socket itself).
    pub frames: Rule,
}

impl Rules {
    /// The rules of these settings.
    pub fn from_settings(settings: &Settings) -> Self {
        let l = &settings.limits;
        Self {
            ip: Rule::window("ip", l.ip_per_minute, 60_000),
            principal: Rule::window("principal", l.principal_per_minute, 60_000),
            admin: Rule::window("admin", l.admin_per_minute, 60_000),
            auth: Rule::window("auth", l.auth_per_minute, 60_000),
            publish: Rule::gcra("publish", l.publish_per_minute, 60_000, l.publish_burst),
            ws: Rule::window("ws", l.ws_connects_per_minute, 60_000),
            frames: Rule::gcra("frames", l.ws_frames_per_second, 1_000, l.ws_frame_burst),
        }
    }
}

/// Everything the limit middleware and the device sockets need: the rules, the limiter (backend
/// and block list), the trusted proxies and the open sockets per IP. Held in `AppState`.
pub struct Limits {
    /// Whether limits apply.
    pub enabled: bool,
    /// The backend and the block list.
    pub limiter: RateLimiter,
    /// The rules.
    pub rules: Rules,
    trusted: Vec<Cidr>,
    sockets: Mutex<HashMap<IpAddr, usize>>,
    max_sockets_per_ip: usize,
}

impl Limits {
    /// Limits from the settings; Redis-backed when `redis` is given.
    pub fn new(settings: &Settings, redis: Option<Redis>, log: slog::Logger) -> Self {
        Self {
            enabled: settings.limits.enabled,
            limiter: RateLimiter::new(&settings.limits, redis, log),
            rules: Rules::from_settings(settings),
            trusted: settings
                .limits
                .trusted_proxies
                .iter()
                .filter_map(|p| Cidr::parse(p))
                .collect(),
            sockets: Mutex::new(HashMap::new()),
            max_sockets_per_ip: settings.limits.max_sockets_per_ip,
        }
    }

    /// The client IP of a request (see [`client_ip`]); `None` without a peer address.
    pub fn client_ip(&self, req: &actix_web::HttpRequest) -> Option<IpAddr> {
        let peer = req.peer_addr()?.ip();
        let forwarded = req
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok());
        Some(client_ip(peer, forwarded, &self.trusted))
    }

    /// Counts an opening socket of `ip`; `false` (nothing counted) when the IP has too many.
    pub fn open_socket(&self, ip: IpAddr) -> bool {
        let Ok(mut map) = self.sockets.lock() else {
            return true;
        };
        let open = map.entry(ip).or_insert(0);
        if self.enabled && self.max_sockets_per_ip > 0 && *open >= self.max_sockets_per_ip {
            return false;
        }
        *open += 1;
        true
    }

    /// Counts a closed socket of `ip`.
    pub fn close_socket(&self, ip: IpAddr) {
        if let Ok(mut map) = self.sockets.lock() {
            if let Some(open) = map.get_mut(&ip) {
                *open = open.saturating_sub(1);
                if *open == 0 {
                    map.remove(&ip);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_slots_are_capped_per_caller_and_freed_on_drop() {
        let slots = StreamSlots::default();
        let held: Vec<StreamSlot> = (0..MAX_STREAMS_PER_CALLER)
            .map(|_| slots.take("adm_1").expect("a free slot"))
            .collect();
        assert!(slots.take("adm_1").is_none());
        assert!(slots.take("adm_2").is_some(), "another caller has its own");
        drop(held);
        assert!(slots.take("adm_1").is_some());
    }

    #[test]
    fn every_rule_has_a_rejection_label() {
        let rules = Rules::from_settings(&Settings::default());
        for rule in [
            &rules.ip,
            &rules.principal,
            &rules.admin,
            &rules.auth,
            &rules.publish,
            &rules.ws,
            &rules.frames,
        ] {
            assert!(
                beepmyphone_actors::metrics::RATE_LIMIT_RULES.contains(&rule.name),
                "{} has no pre-created rejection counter",
                rule.name
            );
        }
    }
}
