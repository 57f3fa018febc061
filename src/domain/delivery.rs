//! The state of one delivery (a notification to one device): [`DeliveryStatus`]. Stored as a
//! small integer in `deliveries.status` (the mapping is [`DeliveryStatus::as_i16`] and
//! [`DeliveryStatus::from_i16`], and nowhere else), shown on the wire by its name.

use diesel::backend::Backend;
use diesel::deserialize::{self, FromSql, FromSqlRow};
use diesel::expression::AsExpression;
use diesel::serialize::{self, Output, ToSql};
use diesel::sql_types::SmallInt;

/// Where a delivery is. Ordered as a delivery moves: a status below [`DeliveryStatus::Acked`] is
/// still pending (the store's queries compare on that order).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    AsExpression,
    FromSqlRow,
)]
#[diesel(sql_type = SmallInt)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Waiting to be sent.
    Queued,
    /// Handed to a socket, not acknowledged.
    Sent,
    /// Acknowledged by the device.
    Acked,
    /// Expired before it was acknowledged.
    Expired,
}

impl DeliveryStatus {
    /// Every status, in order.
    pub const ALL: [DeliveryStatus; 4] = [
        DeliveryStatus::Queued,
        DeliveryStatus::Sent,
        DeliveryStatus::Acked,
        DeliveryStatus::Expired,
    ];

    /// The stored integer.
    pub const fn as_i16(self) -> i16 {
        match self {
            DeliveryStatus::Queued => 0,
            DeliveryStatus::Sent => 1,
            DeliveryStatus::Acked => 2,
            DeliveryStatus::Expired => 3,
        }
    }

    /// The status a stored integer stands for; `None` for one no status has.
    pub const fn from_i16(stored: i16) -> Option<Self> {
        match stored {
            0 => Some(DeliveryStatus::Queued),
            1 => Some(DeliveryStatus::Sent),
            2 => Some(DeliveryStatus::Acked),
            3 => Some(DeliveryStatus::Expired),
            _ => None,
        }
    }

    /// The wire name (`queued`, `sent`, `acked`, `expired`).
    pub const fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Queued => "queued",
            DeliveryStatus::Sent => "sent",
            DeliveryStatus::Acked => "acked",
            DeliveryStatus::Expired => "expired",
        }
    }

    /// Parses a wire name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// The stored codes, by [`DeliveryStatus::as_i16`]: a static, so a bind can borrow one.
static CODES: [i16; 4] = [0, 1, 2, 3];

impl<DB: Backend> ToSql<SmallInt, DB> for DeliveryStatus
where
    i16: ToSql<SmallInt, DB>,
{
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, DB>) -> serialize::Result {
        CODES[self.as_i16() as usize].to_sql(out)
    }
}

impl<DB: Backend> FromSql<SmallInt, DB> for DeliveryStatus
where
    i16: FromSql<SmallInt, DB>,
{
    fn from_sql(value: DB::RawValue<'_>) -> deserialize::Result<Self> {
        let stored = <i16 as FromSql<SmallInt, DB>>::from_sql(value)?;
        Self::from_i16(stored).ok_or_else(|| format!("unknown delivery status {stored}").into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_integers_and_names_round_trip() {
        for status in DeliveryStatus::ALL {
            assert_eq!(DeliveryStatus::from_i16(status.as_i16()), Some(status));
            assert_eq!(DeliveryStatus::parse(status.as_str()), Some(status));
            assert_eq!(
                serde_json::to_string(&status).unwrap(),
                format!("\"{}\"", status.as_str())
            );
        }
        assert_eq!(DeliveryStatus::from_i16(4), None);
        assert_eq!(DeliveryStatus::from_i16(-1), None);
        assert_eq!(DeliveryStatus::parse("delivered"), None);
    }

    #[test]
    fn the_stored_values_and_order_are_the_schema_s() {
        // Existing databases hold these integers; pending means below Acked.
        let stored: Vec<i16> = DeliveryStatus::ALL.iter().map(|s| s.as_i16()).collect();
        assert_eq!(stored, [0, 1, 2, 3]);
        assert!(DeliveryStatus::Queued < DeliveryStatus::Acked);
        assert!(DeliveryStatus::Sent < DeliveryStatus::Acked);
        assert!(DeliveryStatus::Expired > DeliveryStatus::Acked);
    }
}
