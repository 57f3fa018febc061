//! Device access tokens as the socket and the auth extractor check them: the signature and
//! expiry (the key snapshot), then that the device still accepts the token (the deny-list and
//! the device's revocation time). [`DeviceTokens`] holds the two handles this needs, so a device
//! socket can check tokens without the whole application state.

use std::sync::Arc;

use arc_swap::ArcSwap;
use beepmyphone_actors::clock::SharedClock;
use beepmyphone_actors::metrics::{Metrics, Verification};
use beepmyphone_actors::model::DeviceId;

use crate::domain::Jti;
use crate::security::jwt::{JwtKeys, TokenRejection};
use crate::security::revocation::{RevocationError, Revocations, TokenStatus};
use crate::store::StoreError;

/// Why a device token was refused.
#[derive(Debug)]
pub enum DeviceAuthError {
    /// Malformed, forged, expired or revoked: WebSocket close 4001.
    Invalid(&'static str),
    /// The device was deleted: WebSocket close 4003.
    Gone,
    /// The store failed.
    Store(StoreError),
    /// The deny-list (Redis) cannot answer: refused, since the token might be revoked. HTTP 503,
    /// WebSocket close 1013 (try again later).
    Unavailable(String),
}

/// The handles a device-token check needs: the published key snapshot and the revocations.
#[derive(Clone)]
pub struct DeviceTokens {
    /// The access-token keys (swapped by the key manager on every change).
    pub keys: Arc<ArcSwap<JwtKeys>>,
    /// The deny-list and device revocation times.
    pub revocations: Revocations,
    /// Where each verification's result is counted.
    pub metrics: Arc<Metrics>,
    /// The relay's clock, which dates tokens and judges their expiry.
    pub clock: SharedClock,
}

impl DeviceTokens {
    /// Verifies a device access token (see [`verify_device_token`]) and counts the result in
    /// `beepmyphone_token_verifications_total`.
    pub async fn authenticate(&self, token: &str) -> Result<(DeviceId, Jti, i64), DeviceAuthError> {
        let now = self.clock.now_ms() / 1_000;
        let result = verify_device_token(&self.keys, &self.revocations, token, now).await;
        count_verification(&self.metrics, &result);
        result
    }
}

/// Counts a verification's result in `beepmyphone_token_verifications_total`.
pub fn count_verification(
    metrics: &Metrics,
    result: &Result<(DeviceId, Jti, i64), DeviceAuthError>,
) {
    let outcome = match result {
        Ok(_) => Verification::Ok,
        Err(DeviceAuthError::Invalid(EXPIRED)) => Verification::Expired,
        Err(DeviceAuthError::Invalid(REVOKED) | DeviceAuthError::Gone) => Verification::Revoked,
        Err(DeviceAuthError::Invalid(_)) => Verification::Invalid,
        // Not a verdict on the token: the store or the deny-list could not answer.
        Err(DeviceAuthError::Store(_) | DeviceAuthError::Unavailable(_)) => return,
    };
    metrics.verification(outcome).inc();
}

const EXPIRED: &str = "the token has expired";
const REVOKED: &str = "the token has been revoked";

/// Verifies a device access token at `now` (seconds since the epoch, on the relay's clock) and
/// that its device still accepts it. Returns the device, the token id and the token's expiry
/// (seconds since the epoch).
pub async fn verify_device_token(
    keys: &ArcSwap<JwtKeys>,
    revocations: &Revocations,
    token: &str,
    now: i64,
) -> Result<(DeviceId, Jti, i64), DeviceAuthError> {
    let verified = keys
        .load()
        .verify_access_at(token, now)
        .map_err(|e| match e {
            TokenRejection::Expired => DeviceAuthError::Invalid(EXPIRED),
            TokenRejection::Invalid => DeviceAuthError::Invalid("the token is invalid"),
        })?;
    let status = revocations
        .check(&verified.device, &verified.jti, verified.iat)
        .await
        .map_err(|e| match e {
            RevocationError::Unavailable(why) => DeviceAuthError::Unavailable(why),
            RevocationError::Store(e) => DeviceAuthError::Store(e),
        })?;
    match status {
        TokenStatus::Valid => Ok((
            verified.device,
            Jti::from_trusted(verified.jti),
            verified.exp,
        )),
        TokenStatus::Revoked => Err(DeviceAuthError::Invalid(REVOKED)),
        TokenStatus::DeviceGone => Err(DeviceAuthError::Gone),
    }
}
