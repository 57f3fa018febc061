//! The one module that talks to Redis: it owns the bb8 pool, the key prefix and the scripts, and
//! nobody else builds commands. Every key it writes has a TTL. Every call has a deadline
//! (`redis.timeout_ms`); a caller that must fail closed treats an error as "unknown".

use std::time::Duration;

use bb8_redis::bb8::Pool;
use bb8_redis::RedisConnectionManager;
use redis::AsyncCommands;

use crate::config::RedisSettings;

/// A Redis failure: unreachable, timed out, or an unexpected reply.
#[derive(Debug, thiserror::Error)]
#[error("redis: {0}")]
pub struct RedisError(pub String);

/// A pooled Redis client with this relay's key prefix.
#[derive(Clone)]
pub struct Redis {
    pool: Pool<RedisConnectionManager>,
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
        Ok(Self {
            pool,
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
