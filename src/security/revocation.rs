//! Revocation of device credentials, and the check every device-authenticated request makes.
//!
//! A device access token is a self-contained JWT, so revoking one means remembering it until it
//! would have expired anyway. Four mechanisms exist:
//!
//! - **Logout** ([`Revocations::logout`]): the token's `jti` goes on the deny-list until its `exp`
//!   (plus the verification leeway), and the device's refresh-token family is revoked in the store.
//! - **Refresh-token reuse** (`POST /auth/refresh`): revokes the family and, through the device's
//!   "not before" time, every access token issued so far.
//! - **Device deletion**: the device row goes, its refresh tokens cascade, and a token whose device
//!   does not exist is refused.
//! - **"Not before"** (`devices.tokens_valid_after`): access tokens issued before it are refused.
//!
//! The deny-list lives in Redis when `redis.url` is set (`revoked:<jti>` with a TTL, so Redis drops
//! it when it no longer matters) and in SQLite (`revoked_tokens`, swept by the cleanup task)
//! otherwise; both survive a relay restart. If Redis cannot answer, the check fails closed with
//! [`RevocationError::Unavailable`]: a token that might be revoked is never accepted.

use crate::store::WriteTransaction;
use beepmyphone_actors::clock::SharedClock;
use beepmyphone_actors::model::DeviceId;

use crate::redis::Redis;
use crate::security::jwt::LEEWAY_SECONDS;
use crate::store::{devices, revoked, tokens, Store, StoreError};

/// Why a revocation or a revocation check could not be done.
#[derive(Debug, thiserror::Error)]
pub enum RevocationError {
    /// Redis is unreachable or timed out: the answer is unknown, so the caller must refuse.
    #[error("the revocation list is unavailable: {0}")]
    Unavailable(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the check of a verified access token found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenStatus {
    /// The device exists and nothing revoked the token.
    Valid,
    /// On the deny-list, or issued before the device's "not before" time.
    Revoked,
    /// The device was deleted.
    DeviceGone,
}

/// Where the deny-list lives.
#[derive(Clone)]
enum Backend {
    Sqlite,
    Redis(Redis),
}

/// The deny-list of device access tokens and the revocation operations.
#[derive(Clone)]
pub struct Revocations {
    backend: Backend,
    store: Store,
    clock: SharedClock,
}

/// Epoch ms until which a token with this `exp` (seconds) may still be accepted.
fn accepted_until_ms(exp_s: i64) -> i64 {
    exp_s
        .saturating_add(i64::try_from(LEEWAY_SECONDS).unwrap_or(30))
        .saturating_mul(1_000)
}

impl Revocations {
    /// The deny-list in Redis when one is given, else in the store.
    pub fn new(store: Store, redis: Option<Redis>, clock: SharedClock) -> Self {
        Self {
            backend: redis.map_or(Backend::Sqlite, Backend::Redis),
            store,
            clock,
        }
    }

    /// `redis` or `sqlite`, for logs.
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "sqlite",
            Backend::Redis(_) => "redis",
        }
    }

    /// Checks a verified access token (`jti`, issued at `iat` seconds) of `device` against the
    /// device row and the deny-list. With Redis, the store and Redis are asked concurrently; with
    /// SQLite, both lookups share one blocking task.
    pub async fn check(
        &self,
        device: &DeviceId,
        jti: &str,
        iat_s: i64,
    ) -> Result<TokenStatus, RevocationError> {
        let (id, token) = (device.to_string(), jti.to_owned());
        let embedded = matches!(self.backend, Backend::Sqlite);
        let lookup = self.store.run(move |conn| {
            let row = devices::tokens_valid_after(conn, &id)?;
            let listed = embedded && row.is_some() && revoked::contains(conn, &token)?;
            Ok((row, listed))
        });
        let ((row, listed), in_redis) = match &self.backend {
            Backend::Sqlite => (lookup.await?, false),
            Backend::Redis(redis) => {
                let (stored, listed) =
                    futures_util::future::join(lookup, redis.is_token_revoked(jti)).await;
                let listed = listed.map_err(|e| RevocationError::Unavailable(e.to_string()))?;
                (stored?, listed)
            }
        };
        Ok(match row {
            None => TokenStatus::DeviceGone,
            Some(_) if listed || in_redis => TokenStatus::Revoked,
            Some(valid_after) if iat_s.saturating_mul(1_000) < valid_after => TokenStatus::Revoked,
            Some(_) => TokenStatus::Valid,
        })
    }

    /// Logout: revokes the access token `jti` (expiring at `exp_s`) and every refresh-token family
    /// of `device`. The store is written first, so a Redis failure leaves more revoked, not less;
    /// the caller reports it (503) and the client may retry.
    pub async fn logout(
        &self,
        device: &DeviceId,
        jti: &str,
        exp_s: i64,
    ) -> Result<(), RevocationError> {
        let now = self.clock.now_ms();
        let until = accepted_until_ms(exp_s);
        let (id, token) = (device.to_string(), jti.to_owned());
        let embedded = matches!(self.backend, Backend::Sqlite);
        self.store
            .write(move |conn| {
                conn.immediate_transaction(|conn| {
                    tokens::revoke_families_of_device(conn, &id, now)?;
                    if embedded {
                        revoked::insert(conn, &token, &id, until)?;
                    }
                    Ok::<(), diesel::result::Error>(())
                })?;
                Ok(())
            })
            .await?;
        match self.backend {
            Backend::Sqlite => Ok(()), // the entry went in with the family, in one transaction
            Backend::Redis(_) => self.deny(device, jti, exp_s).await,
        }
    }

    /// Puts one access token on the deny-list until it would have expired.
    pub async fn deny(
        &self,
        device: &DeviceId,
        jti: &str,
        exp_s: i64,
    ) -> Result<(), RevocationError> {
        let until = accepted_until_ms(exp_s);
        let remaining = until - self.clock.now_ms();
        if remaining <= 0 {
            return Ok(()); // expired already: nothing would accept it
        }
        match &self.backend {
            Backend::Sqlite => {
                let (id, token) = (device.to_string(), jti.to_owned());
                self.store
                    .write(move |conn| Ok(revoked::insert(conn, &token, &id, until)?))
                    .await?;
                Ok(())
            }
            Backend::Redis(redis) => redis
                .revoke_token(jti, device.as_str(), u64::try_from(remaining).unwrap_or(1))
                .await
                .map_err(|e| RevocationError::Unavailable(e.to_string())),
        }
    }

    /// Whether a token is on the deny-list (fails closed like [`Revocations::check`]).
    pub async fn is_denied(&self, jti: &str) -> Result<bool, RevocationError> {
        match &self.backend {
            Backend::Sqlite => {
                let token = jti.to_owned();
                Ok(self
                    .store
                    .run(move |conn| Ok(revoked::contains(conn, &token)?))
                    .await?)
            }
            Backend::Redis(redis) => redis
                .is_token_revoked(jti)
                .await
                .map_err(|e| RevocationError::Unavailable(e.to_string())),
        }
    }

    /// Deletes embedded deny-list entries whose token has expired; how many. (Redis entries expire
    /// by themselves.)
    pub async fn purge_expired(&self) -> Result<usize, RevocationError> {
        let now = self.clock.now_ms();
        Ok(self
            .store
            .write(move |conn| Ok(revoked::purge(conn, now)?))
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use beepmyphone_actors::clock::{Clock, ManualClock};

    use super::*;
    use crate::config::{RedisSettings, StorageSettings};
    use crate::store::devices::DeviceRow;
    use crate::store::tokens::RefreshTokenRow;

    struct Fixture {
        _dir: tempfile::TempDir,
        store: Store,
        clock: ManualClock,
        device: DeviceId,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StorageSettings::default()).unwrap();
        let clock = ManualClock::starting_now();
        let device = DeviceId::generate();
        let now = clock.now_ms();
        let mut conn = store.conn().unwrap();
        devices::insert(
            &mut conn,
            &crate::crypto::ring::tests::test_cipher(),
            &DeviceRow {
                created_at: now,
                ..DeviceRow::for_tests(device.as_str(), "phone", "android")
            },
        )
        .unwrap();
        tokens::insert_refresh(
            &mut conn,
            &RefreshTokenRow {
                id: "rt1".into(),
                device_id: device.to_string(),
                family_id: "fam1".into(),
                token_hash: "hash1".into(),
                created_at: now,
                expires_at: now + 1_000_000,
                used_at: None,
                revoked_at: None,
            },
        )
        .unwrap();
        Fixture {
            _dir: dir,
            store,
            clock,
            device,
        }
    }

    async fn redis() -> Redis {
        crate::redis::test_redis().await
    }

    async fn logout_revokes_the_token_and_the_family(redis: Option<Redis>) {
        let f = fixture();
        let revocations = Revocations::new(f.store.clone(), redis, Arc::new(f.clock.clone()));
        let now_s = f.clock.now_ms() / 1_000;
        let exp = now_s + 3_600;
        assert_eq!(
            revocations.check(&f.device, "jti-1", now_s).await.unwrap(),
            TokenStatus::Valid
        );
        revocations.logout(&f.device, "jti-1", exp).await.unwrap();
        assert_eq!(
            revocations.check(&f.device, "jti-1", now_s).await.unwrap(),
            TokenStatus::Revoked
        );
        assert!(revocations.is_denied("jti-1").await.unwrap());
        assert_eq!(
            revocations.check(&f.device, "jti-2", now_s).await.unwrap(),
            TokenStatus::Valid,
            "other tokens are untouched"
        );
        let row = {
            let mut conn = f.store.conn().unwrap();
            tokens::refresh_by_hash(&mut conn, "hash1")
                .unwrap()
                .unwrap()
        };
        assert!(row.revoked_at.is_some(), "the refresh family is revoked");
        // Logging out again (a retry) is harmless.
        revocations.logout(&f.device, "jti-1", exp).await.unwrap();
        // An unknown device is gone whatever the token.
        assert_eq!(
            revocations
                .check(&DeviceId::generate(), "jti-1", now_s)
                .await
                .unwrap(),
            TokenStatus::DeviceGone
        );
    }

    #[actix_rt::test]
    async fn revocation_logout_sqlite() {
        logout_revokes_the_token_and_the_family(None).await;
    }

    #[actix_rt::test]
    async fn revocation_logout_redis() {
        logout_revokes_the_token_and_the_family(Some(redis().await)).await;
    }

    #[actix_rt::test]
    async fn revocation_entries_expire_with_their_token() {
        let f = fixture();
        let revocations = Revocations::new(f.store.clone(), None, Arc::new(f.clock.clone()));
        let now_s = f.clock.now_ms() / 1_000;
        revocations
            .deny(&f.device, "old", now_s - 3_600)
            .await
            .unwrap();
        assert!(
            !revocations.is_denied("old").await.unwrap(),
            "an expired token needs no entry"
        );
        revocations
            .deny(&f.device, "live", now_s + 60)
            .await
            .unwrap();
        assert_eq!(revocations.purge_expired().await.unwrap(), 0);
        f.clock
            .advance(Duration::from_secs(60 + LEEWAY_SECONDS + 1));
        assert_eq!(revocations.purge_expired().await.unwrap(), 1);
        assert!(!revocations.is_denied("live").await.unwrap());

        let redis = redis().await;
        let revocations = Revocations::new(
            f.store.clone(),
            Some(redis.clone()),
            Arc::new(f.clock.clone()),
        );
        let now_s = f.clock.now_ms() / 1_000;
        revocations
            .deny(&f.device, "short", now_s + 1)
            .await
            .unwrap();
        let ttl: i64 = redis
            .eval(
                &redis::Script::new("return redis.call('PTTL', KEYS[1])"),
                &["revoked:short"],
                &[],
            )
            .await
            .unwrap();
        assert!(
            ttl > 0 && ttl <= (1 + 30) * 1_000,
            "kept until the token would have expired: {ttl}"
        );
    }

    #[actix_rt::test]
    async fn revocation_not_before_revokes_older_tokens() {
        let f = fixture();
        let revocations = Revocations::new(f.store.clone(), None, Arc::new(f.clock.clone()));
        let now = f.clock.now_ms();
        {
            let mut conn = f.store.conn().unwrap();
            devices::revoke_tokens(&mut conn, f.device.as_str(), now).unwrap();
        }
        assert_eq!(
            revocations
                .check(&f.device, "a", now / 1_000 - 10)
                .await
                .unwrap(),
            TokenStatus::Revoked
        );
        assert_eq!(
            revocations
                .check(&f.device, "b", now / 1_000 + 1)
                .await
                .unwrap(),
            TokenStatus::Valid
        );
    }

    #[actix_rt::test]
    async fn revocation_fails_closed_without_redis() {
        let f = fixture();
        let down = Redis::connect(&RedisSettings {
            url: "redis://127.0.0.1:1".into(),
            timeout_ms: 200,
            ..RedisSettings::default()
        })
        .await
        .unwrap();
        let revocations = Revocations::new(f.store.clone(), Some(down), Arc::new(f.clock.clone()));
        let now_s = f.clock.now_ms() / 1_000;
        assert!(matches!(
            revocations.check(&f.device, "x", now_s).await,
            Err(RevocationError::Unavailable(_))
        ));
        assert!(matches!(
            revocations.logout(&f.device, "x", now_s + 60).await,
            Err(RevocationError::Unavailable(_))
        ));
    }
}
