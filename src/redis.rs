//! The one module that talks to Redis: it owns the bb8 pool, the key prefix and the scripts, and
//! nobody else builds commands. Besides generic calls it offers the device-token deny-list and the
//! admin-session operations (their keys and Lua scripts are at the end of this file). Every key it writes has a TTL. Every call has a deadline
//! (`redis.timeout_ms`); a caller that must fail closed treats an error as "unknown".

use std::sync::LazyLock;
use std::time::Duration;

use bb8_redis::bb8::Pool;
use bb8_redis::RedisConnectionManager;
use redis::AsyncCommands;

use crate::config::RedisSettings;

mod presence;
use crate::domain::ratelimit::{Algorithm, Decision, Rule};
pub use presence::node_channel;

/// A Redis failure: unreachable, timed out, or an unexpected reply.
#[derive(Debug, thiserror::Error)]
#[error("redis: {0}")]
pub struct RedisError(pub String);

/// A pooled Redis client with this relay's key prefix.
#[derive(Clone)]
pub struct Redis {
    pool: Pool<RedisConnectionManager>,
    /// For the subscriber's own connection (a pooled one cannot subscribe).
    client: std::sync::Arc<redis::Client>,
    prefix: String,
    timeout: Duration,
}

impl Redis {
    /// Builds the pool; connections are made lazily, so a Redis that is down at start-up only
    /// fails the calls that need it.
    pub async fn connect(settings: &RedisSettings) -> Result<Self, RedisError> {
        let manager = RedisConnectionManager::new(settings.url.as_str())
            .map_err(|e| RedisError(e.to_string()))?;
        let timeout = Duration::from_millis(settings.timeout_ms);
        let pool = Pool::builder()
            .max_size(settings.pool_max_size)
            .connection_timeout(timeout)
            .build_unchecked(manager);
        let client =
            redis::Client::open(settings.url.as_str()).map_err(|e| RedisError(e.to_string()))?;
        Ok(Self {
            pool,
            client: std::sync::Arc::new(client),
            prefix: settings.key_prefix.clone(),
            timeout,
        })
    }

    /// The full key for `name`.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    async fn conn(
        &self,
    ) -> Result<bb8_redis::bb8::PooledConnection<'_, RedisConnectionManager>, RedisError> {
        self.pool.get().await.map_err(|e| RedisError(e.to_string()))
    }

    async fn deadline<T>(
        &self,
        fut: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, RedisError> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(result) => result.map_err(|e| RedisError(e.to_string())),
            Err(_) => Err(RedisError("timed out".into())),
        }
    }

    /// `SET key value PX ttl`.
    pub async fn set_px(&self, name: &str, value: &[u8], ttl_ms: u64) -> Result<(), RedisError> {
        let key = self.key(name);
        let mut conn = self.conn().await?;
        self.deadline(
            redis::cmd("SET")
                .arg(&key)
                .arg(value)
                .arg("PX")
                .arg(ttl_ms.max(1))
                .query_async::<()>(&mut *conn),
        )
        .await
    }

    /// `GET key`.
    pub async fn get(&self, name: &str) -> Result<Option<Vec<u8>>, RedisError> {
        let key = self.key(name);
        let mut conn = self.conn().await?;
        self.deadline(conn.get::<_, Option<Vec<u8>>>(&key)).await
    }

    /// `EXISTS key`.
    pub async fn exists(&self, name: &str) -> Result<bool, RedisError> {
        let key = self.key(name);
        let mut conn = self.conn().await?;
        self.deadline(conn.exists::<_, bool>(&key)).await
    }

    /// `DEL key`.
    pub async fn del(&self, name: &str) -> Result<(), RedisError> {
        let key = self.key(name);
        let mut conn = self.conn().await?;
        self.deadline(conn.del::<_, ()>(&key)).await
    }

    /// `PUBLISH channel message` on the prefixed channel `name`.
    pub async fn publish(&self, name: &str, message: &[u8]) -> Result<(), RedisError> {
        let channel = self.key(name);
        let mut conn = self.conn().await?;
        self.deadline(conn.publish::<_, _, ()>(&channel, message))
            .await
    }

    /// A connection of its own subscribed to the prefixed channels `names`: their messages'
    /// payloads, until the connection drops (the stream ends; subscribe again).
    pub async fn subscribe(
        &self,
        names: &[&str],
    ) -> Result<impl futures_util::Stream<Item = Vec<u8>> + use<>, RedisError> {
        use futures_util::StreamExt;
        let mut pubsub = self.deadline(self.client.get_async_pubsub()).await?;
        let channels: Vec<String> = names.iter().map(|name| self.key(name)).collect();
        self.deadline(pubsub.subscribe(channels)).await?;
        Ok(pubsub
            .into_on_message()
            .map(|msg| msg.get_payload_bytes().to_vec()))
    }

    /// `PING`, for health checks.
    pub async fn ping(&self) -> Result<(), RedisError> {
        let mut conn = self.conn().await?;
        self.deadline(redis::cmd("PING").query_async::<String>(&mut *conn))
            .await
            .map(|_| ())
    }

    /// Runs a Lua script with keys (prefixed here) and arguments.
    pub async fn eval<T: redis::FromRedisValue>(
        &self,
        script: &redis::Script,
        keys: &[&str],
        args: &[&[u8]],
    ) -> Result<T, RedisError> {
        let mut invocation = script.prepare_invoke();
        for k in keys {
            invocation.key(self.key(k));
        }
        for a in args {
            invocation.arg(*a);
        }
        let mut conn = self.conn().await?;
        self.deadline(invocation.invoke_async::<T>(&mut *conn))
            .await
    }
}

/// Key of a deny-listed access token.
fn revoked_key(jti: &str) -> String {
    format!("revoked:{jti}")
}

/// Key of a session record.
const SESSION_KEY: &str = "session:";

/// Key of an admin's session index: a sorted set of session id hashes scored by creation time.
fn admin_index_key(admin_id: &str) -> String {
    format!("admin-sessions:{admin_id}")
}

/// Stores a new session, prunes index members whose session expired, and ends the oldest sessions
/// beyond the cap; returns the id hashes it ended. KEYS: session, index. ARGV: sealed record,
/// TTL ms, id hash, created ms, cap, index TTL ms, session key prefix.
const CREATE_SESSION: &str = r"
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
for _, m in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  if redis.call('EXISTS', ARGV[7] .. m) == 0 then redis.call('ZREM', KEYS[2], m) end
end
local ended = {}
local n = redis.call('ZCARD', KEYS[2])
while n > tonumber(ARGV[5]) do
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
  redis.call('ZREM', KEYS[2], oldest)
  redis.call('DEL', ARGV[7] .. oldest)
  table.insert(ended, oldest)
  n = n - 1
end
local ttl = redis.call('PTTL', KEYS[2])
if ttl < tonumber(ARGV[6]) then redis.call('PEXPIRE', KEYS[2], ARGV[6]) end
return ended
";

/// An admin's live sessions as `[hash, record, hash, record, …]`, oldest first; prunes members
/// whose record expired. KEYS: index. ARGV: session key prefix.
const LIST_SESSIONS: &str = r"
local out = {}
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local record = redis.call('GET', ARGV[1] .. m)
  if record then
    table.insert(out, m)
    table.insert(out, record)
  else
    redis.call('ZREM', KEYS[1], m)
  end
end
return out
";

/// Ends one session. KEYS: session, index. ARGV: id hash. Returns 1 if it existed.
const DELETE_SESSION: &str = r"
redis.call('ZREM', KEYS[2], ARGV[1])
return redis.call('DEL', KEYS[1])
";

/// Ends every session of an admin; returns how many. KEYS: index. ARGV: session key prefix.
const DELETE_ADMIN_SESSIONS: &str = r"
local n = 0
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  n = n + redis.call('DEL', ARGV[1] .. m)
end
redis.call('DEL', KEYS[1])
return n
";

// Scripts are hashed once; `invoke` runs EVALSHA and falls back to EVAL after a Redis restart.
static CREATE_SESSION_SCRIPT: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(CREATE_SESSION));
static LIST_SESSIONS_SCRIPT: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(LIST_SESSIONS));
static DELETE_SESSION_SCRIPT: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(DELETE_SESSION));
static DELETE_ADMIN_SESSIONS_SCRIPT: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(DELETE_ADMIN_SESSIONS));

/// The device-token deny-list and the admin sessions, as Redis keys:
///
/// - `revoked:<jti>` → device id, expiring when the token would have;
/// - `session:<id hash>` → the sealed session record, expiring when the session would end unused;
/// - `admin-sessions:<admin id>` → sorted set of that admin's session id hashes by creation time,
///   expiring after the longest session could end.
///
/// The session scripts touch keys they compute from the index (a single Redis, not a cluster).
impl Redis {
    /// Puts an access token on the deny-list for `ttl_ms`.
    pub async fn revoke_token(
        &self,
        jti: &str,
        device_id: &str,
        ttl_ms: u64,
    ) -> Result<(), RedisError> {
        self.set_px(&revoked_key(jti), device_id.as_bytes(), ttl_ms)
            .await
    }

    /// Whether an access token is on the deny-list.
    pub async fn is_token_revoked(&self, jti: &str) -> Result<bool, RedisError> {
        self.exists(&revoked_key(jti)).await
    }

    /// Stores a new session and applies the per-admin cap atomically; returns the id hashes of the
    /// sessions it ended.
    #[allow(clippy::too_many_arguments)]
    pub async fn create_session(
        &self,
        id_hash: &str,
        admin_id: &str,
        sealed: &[u8],
        ttl_ms: u64,
        created_ms: i64,
        max_per_admin: usize,
        index_ttl_ms: u64,
    ) -> Result<Vec<String>, RedisError> {
        let session = format!("{SESSION_KEY}{id_hash}");
        let index = admin_index_key(admin_id);
        let prefix = self.key(SESSION_KEY);
        self.eval(
            &CREATE_SESSION_SCRIPT,
            &[&session, &index],
            &[
                sealed,
                ttl_ms.max(1).to_string().as_bytes(),
                id_hash.as_bytes(),
                created_ms.to_string().as_bytes(),
                max_per_admin.to_string().as_bytes(),
                index_ttl_ms.max(1).to_string().as_bytes(),
                prefix.as_bytes(),
            ],
        )
        .await
    }

    /// The sealed record of a session.
    pub async fn session(&self, id_hash: &str) -> Result<Option<Vec<u8>>, RedisError> {
        self.get(&format!("{SESSION_KEY}{id_hash}")).await
    }

    /// Replaces a session's record and TTL if it still exists (`SET … PX … XX`, so a session ended
    /// meanwhile is not brought back); whether it did.
    pub async fn replace_session(
        &self,
        id_hash: &str,
        sealed: &[u8],
        ttl_ms: u64,
    ) -> Result<bool, RedisError> {
        let key = self.key(&format!("{SESSION_KEY}{id_hash}"));
        let mut conn = self.conn().await?;
        self.deadline(
            redis::cmd("SET")
                .arg(&key)
                .arg(sealed)
                .arg("PX")
                .arg(ttl_ms.max(1))
                .arg("XX")
                .query_async::<Option<String>>(&mut *conn),
        )
        .await
        .map(|reply| reply.is_some())
    }

    /// An admin's live sessions: `(id hash, sealed record)`, oldest first.
    pub async fn sessions_of(&self, admin_id: &str) -> Result<Vec<(String, Vec<u8>)>, RedisError> {
        let prefix = self.key(SESSION_KEY);
        let flat: Vec<Vec<u8>> = self
            .eval(
                &LIST_SESSIONS_SCRIPT,
                &[&admin_index_key(admin_id)],
                &[prefix.as_bytes()],
            )
            .await?;
        let mut out = Vec::with_capacity(flat.len() / 2);
        let mut items = flat.into_iter();
        while let (Some(hash), Some(record)) = (items.next(), items.next()) {
            let hash = String::from_utf8(hash)
                .map_err(|_| RedisError("a session index holds a non-UTF-8 member".into()))?;
            out.push((hash, record));
        }
        Ok(out)
    }

    /// Ends one session; whether it existed.
    pub async fn delete_session(&self, id_hash: &str, admin_id: &str) -> Result<bool, RedisError> {
        let session = format!("{SESSION_KEY}{id_hash}");
        let n: i64 = self
            .eval(
                &DELETE_SESSION_SCRIPT,
                &[&session, &admin_index_key(admin_id)],
                &[id_hash.as_bytes()],
            )
            .await?;
        Ok(n > 0)
    }

    /// Ends every session of an admin; how many.
    pub async fn delete_sessions_of(&self, admin_id: &str) -> Result<usize, RedisError> {
        let prefix = self.key(SESSION_KEY);
        let n: i64 = self
            .eval(
                &DELETE_ADMIN_SESSIONS_SCRIPT,
                &[&admin_index_key(admin_id)],
                &[prefix.as_bytes()],
            )
            .await?;
        Ok(usize::try_from(n).unwrap_or(0))
    }
}

// Rate limiting (the rules are [`crate::domain::ratelimit`]'s): one script per algorithm, each a single atomic
// read-decide-write with a TTL on every key it writes. Times are the relay's clock, passed in.

/// Sliding window. KEYS[1] the rule's key; ARGV now_ms, window_ms, limit, consume (1/0). Two keys,
/// `<key>:<window index>` for this window and the previous one. Returns {allowed, remaining,
/// reset_ms, retry_after_ms}.
const RATE_WINDOW: &str = r"
local now = tonumber(ARGV[1]); local w = tonumber(ARGV[2]); local q = tonumber(ARGV[3])
local idx = math.floor(now / w)
local ck = KEYS[1] .. ':' .. idx
local curr = tonumber(redis.call('GET', ck) or '0')
local prev = tonumber(redis.call('GET', KEYS[1] .. ':' .. (idx - 1)) or '0')
local into = now - idx * w
local weight = (w - into) / w
local est = prev * weight + curr
local allowed = 0
local retry = 0
if est + 1 <= q then
  allowed = 1
  if ARGV[4] == '1' then
    curr = redis.call('INCR', ck)
    redis.call('PEXPIRE', ck, 2 * w)
  end
elseif curr + 1 > q then
  retry = w - into
else
  retry = math.min(w - into, math.max(1, math.ceil((est + 1 - q) / math.max(prev, 1) * w)))
end
local remaining = math.max(0, math.floor(q - (prev * weight + curr)))
return {allowed, remaining, w - into, retry}
";

/// GCRA. KEYS[1] the rule's key (its theoretical arrival time, µs); ARGV now_us, interval_us,
/// burst, consume (1/0). Returns {allowed, remaining, reset_ms, retry_after_ms}.
const RATE_GCRA: &str = r"
local now = tonumber(ARGV[1]); local t = tonumber(ARGV[2]); local cap = t * tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new = tat + t
local allowed = 0
local retry = 0
if new - now <= cap then
  allowed = 1
  if ARGV[4] == '1' then
    tat = new
    redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
  end
else
  retry = math.max(1, math.ceil((new - now - cap) / 1000))
end
local remaining = math.max(0, math.floor((cap - (tat - now)) / t))
return {allowed, remaining, math.ceil((tat - now) / 1000), retry}
";

static RATE_WINDOW_SCRIPT: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(RATE_WINDOW));
static RATE_GCRA_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(RATE_GCRA));

impl Redis {
    /// Checks (and, when `consume`, counts) one request of `key` under `rule`, atomically.
    pub async fn rate_limit(
        &self,
        rule: &Rule,
        key: &str,
        now_ms: i64,
        consume: bool,
    ) -> Result<Decision, RedisError> {
        let name = format!("rl:{}:{key}", rule.name);
        let consume: &[u8] = if consume { b"1" } else { b"0" };
        let reply: Vec<i64> = match rule.algorithm {
            Algorithm::SlidingWindow => {
                let (now, w, q) = (
                    now_ms.to_string(),
                    rule.window_ms.to_string(),
                    rule.limit.to_string(),
                );
                self.eval(
                    &RATE_WINDOW_SCRIPT,
                    &[&name],
                    &[now.as_bytes(), w.as_bytes(), q.as_bytes(), consume],
                )
                .await?
            }
            Algorithm::Gcra => {
                let interval = rule.interval_us();
                let (now, t, b) = (
                    (now_ms * 1_000).to_string(),
                    interval.to_string(),
                    rule.burst.to_string(),
                );
                self.eval(
                    &RATE_GCRA_SCRIPT,
                    &[&name],
                    &[now.as_bytes(), t.as_bytes(), b.as_bytes(), consume],
                )
                .await?
            }
        };
        match reply.as_slice() {
            [allowed, remaining, reset, retry] => Ok(Decision {
                allowed: *allowed == 1,
                remaining: (*remaining).clamp(0, i64::from(u32::MAX)) as u32,
                reset_ms: (*reset).max(0) as u64,
                retry_after_ms: (*retry).max(0) as u64,
            }),
            other => Err(RedisError(format!("unexpected rate-limit reply {other:?}"))),
        }
    }
}

/// Adds `ARGV[1]` (an IP) blocked until `ARGV[2]` (epoch ms) to the sorted set of blocks, drops
/// the blocks that ended before `ARGV[3]` (now), and keeps the set alive until its last block ends.
const ADD_BLOCK: &str = r"
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if last[2] then
  redis.call('PEXPIREAT', KEYS[1], tonumber(last[2]))
end
return 1
";

static ADD_BLOCK_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(ADD_BLOCK));

/// The sorted set of IP blocks shared by relays on one Redis (member: IP, score: end in epoch ms).
const BLOCKS_KEY: &str = "blocks";

impl Redis {
    /// Shares a block of `ip` until `until_ms` with every relay on this Redis.
    pub async fn add_block(&self, ip: &str, until_ms: i64, now_ms: i64) -> Result<(), RedisError> {
        let (until, now) = (until_ms.to_string(), now_ms.to_string());
        self.eval::<i64>(
            &ADD_BLOCK_SCRIPT,
            &[BLOCKS_KEY],
            &[ip.as_bytes(), until.as_bytes(), now.as_bytes()],
        )
        .await
        .map(|_| ())
    }

    /// Lifts the shared block of `ip`; returns whether there was one.
    pub async fn remove_block(&self, ip: &str) -> Result<bool, RedisError> {
        let key = self.key(BLOCKS_KEY);
        let mut conn = self.conn().await?;
        self.deadline(conn.zrem::<_, _, i64>(&key, ip))
            .await
            .map(|n| n > 0)
    }

    /// The shared blocks that end after `now_ms`, as (IP, end in epoch ms).
    pub async fn blocks(&self, now_ms: i64) -> Result<Vec<(String, i64)>, RedisError> {
        let key = self.key(BLOCKS_KEY);
        let mut conn = self.conn().await?;
        self.deadline(
            conn.zrangebyscore_withscores::<_, _, _, Vec<(String, i64)>>(
                &key,
                format!("({now_ms}"),
                "+inf",
            ),
        )
        .await
    }
}

/// A client on the test Redis (`BEEP_TEST_REDIS`, default 127.0.0.1:6379) with a fresh key
/// prefix; panics (the test fails loudly) when that Redis does not answer.
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) async fn test_redis() -> Redis {
    let redis = Redis::connect(&RedisSettings {
        url: std::env::var("BEEP_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
        key_prefix: format!("beeptest:{}:", ulid::Ulid::new()),
        ..RedisSettings::default()
    })
    .await
    .unwrap();
    redis
        .ping()
        .await
        .expect("the test Redis on 127.0.0.1:6379 must be running");
    redis
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> RedisSettings {
        RedisSettings {
            url: std::env::var("BEEP_TEST_REDIS")
                .unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
            key_prefix: format!("beeptest:{}:", ulid::Ulid::new()),
            ..RedisSettings::default()
        }
    }

    #[actix_rt::test]
    async fn set_get_exists_del_with_ttl_and_prefix() {
        let redis = Redis::connect(&settings()).await.unwrap();
        redis
            .ping()
            .await
            .expect("the test Redis on 127.0.0.1:6379 must be running");
        redis.set_px("a", b"1", 60_000).await.unwrap();
        assert_eq!(redis.get("a").await.unwrap().as_deref(), Some(&b"1"[..]));
        assert!(redis.exists("a").await.unwrap());
        let ttl: i64 = redis
            .eval(
                &redis::Script::new("return redis.call('PTTL', KEYS[1])"),
                &["a"],
                &[],
            )
            .await
            .unwrap();
        assert!(ttl > 0 && ttl <= 60_000, "every key has a TTL: {ttl}");
        redis.del("a").await.unwrap();
        assert!(!redis.exists("a").await.unwrap());
    }

    #[actix_rt::test]
    async fn an_unreachable_redis_fails_fast() {
        let redis = Redis::connect(&RedisSettings {
            url: "redis://127.0.0.1:1".into(),
            timeout_ms: 200,
            ..settings()
        })
        .await
        .unwrap();
        let started = std::time::Instant::now();
        assert!(redis.exists("x").await.is_err());
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
