//! API token scopes: what a token may do. Stored in the store, sent on the wire, checked by the
//! auth extractor and the rate limits.

/// What an API token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Everything.
    Admin,
    /// Publish notifications only.
    Publish,
    /// Read `/metrics` only (for a Prometheus scraper).
    Metrics,
}

impl Scope {
    /// The stored and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::Publish => "publish",
            Scope::Metrics => "metrics",
        }
    }

    /// Parses a stored or wire name.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "admin" => Some(Scope::Admin),
            "publish" => Some(Scope::Publish),
            "metrics" => Some(Scope::Metrics),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for scope in [Scope::Admin, Scope::Publish, Scope::Metrics] {
            assert_eq!(Scope::parse(scope.as_str()), Some(scope));
            let json = serde_json::to_string(&scope).unwrap();
            assert_eq!(json, format!("\"{}\"", scope.as_str()));
        }
        assert_eq!(Scope::parse("Admin"), None);
        assert_eq!(Scope::parse(""), None);
    }
}
