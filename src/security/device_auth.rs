//! Device access tokens as the socket and the auth extractor check them: the signature and
//! expiry (the key snapshot), then that the device still accepts the token (the deny-list and
//! the device's revocation time). [`DeviceTokens`] holds the two handles this needs, so a device
//! socket can check tokens without the whole application state.

use std::sync::Arc;

use arc_swap::ArcSwap;
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
}

impl DeviceTokens {
    /// Verifies a device access token (see [`verify_device_token`]).
    pub async fn authenticate(&self, token: &str) -> Result<(DeviceId, Jti, i64), DeviceAuthError> {
        verify_device_token(&self.keys, &self.revocations, token).await
    }
}

/// Verifies a device access token and that its device still accepts it. Returns the device, the
/// token id and the token's expiry (seconds since the epoch).
pub async fn verify_device_token(
    keys: &ArcSwap<JwtKeys>,
    revocations: &Revocations,
    token: &str,
) -> Result<(DeviceId, Jti, i64), DeviceAuthError> {
    let verified = keys.load().verify_access(token).map_err(|e| match e {
        TokenRejection::Expired => DeviceAuthError::Invalid("the token has expired"),
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
        TokenStatus::Revoked => Err(DeviceAuthError::Invalid("the token has been revoked")),
        TokenStatus::DeviceGone => Err(DeviceAuthError::Gone),
    }
}
