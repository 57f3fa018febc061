//! Identifier newtypes of the root crate: API tokens (`tok_…`), admins (`adm_…`), admin sessions
//! (their public id, `ses_…`) and device access-token ids (`jti`, a ULID). Devices and
//! notifications have theirs in `beepmyphone_actors::model`. Each wraps an `Arc<str>`, prints as
//! itself and serializes as a plain string.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

macro_rules! issued_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Arc<str>);

        impl $name {
            /// The prefix every id of this kind starts with (empty for a `jti`).
            pub const PREFIX: &'static str = $prefix;

            /// A fresh id: the prefix and a ULID.
            pub fn generate() -> Self {
                Self(format!("{}{}", $prefix, ulid::Ulid::new()).into())
            }

            /// Parses an id, checking its prefix and ULID body; `None` if it is not one.
            pub fn parse(raw: &str) -> Option<Self> {
                let body = raw.strip_prefix($prefix)?;
                ulid::Ulid::from_string(body).ok()?;
                Some(Self(raw.into()))
            }

            /// Wraps a value this relay issued itself, read back from the store or from a token
            /// it signed (checked when it was made).
            pub fn from_trusted(raw: impl Into<Arc<str>>) -> Self {
                Self(raw.into())
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

issued_id!(
    /// An API token: `tok_` and a ULID.
    ApiTokenId,
    "tok_"
);
issued_id!(
    /// An admin account: `adm_` and a ULID.
    AdminId,
    "adm_"
);
issued_id!(
    /// An admin session's public id: `ses_` and a ULID (not a credential).
    SessionId,
    "ses_"
);
issued_id!(
    /// A device access token's id (`jti`): a ULID.
    Jti,
    ""
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_and_round_trip() {
        let token = ApiTokenId::generate();
        assert!(token.as_str().starts_with("tok_"));
        assert_eq!(ApiTokenId::parse(token.as_str()), Some(token.clone()));
        let json = serde_json::to_string(&token).unwrap();
        assert_eq!(json, format!("\"{token}\""));
        assert_eq!(serde_json::from_str::<ApiTokenId>(&json).unwrap(), token);
        let admin = AdminId::generate();
        assert_eq!(AdminId::parse(admin.as_str()), Some(admin.clone()));
        let session = SessionId::generate();
        assert_eq!(SessionId::parse(session.as_str()), Some(session.clone()));
        let jti = Jti::generate();
        assert_eq!(Jti::parse(jti.as_str()), Some(jti.clone()));
        assert_eq!(format!("{jti:?}"), jti.to_string());
    }

    #[test]
    fn wrong_prefixes_and_bodies_are_refused() {
        let admin = AdminId::generate();
        assert!(ApiTokenId::parse(admin.as_str()).is_none());
        assert!(SessionId::parse(&admin.as_str().replace("adm_", "ses")).is_none());
        assert!(ApiTokenId::parse("tok_../../etc").is_none());
        assert!(ApiTokenId::parse("tok_").is_none());
        assert!(Jti::parse("").is_none());
        assert!(Jti::parse("tok_01J00000000000000000000000").is_none());
    }
}
