//! Queries on `notifications` and `deliveries` for the HTTP API (listing and reading). The queue's
//! own writes are in [`super::queue_store`].

use diesel::prelude::*;
use diesel::SqliteConnection;

use beepmyphone_actors::model::{NotificationId, NotificationRecord, Priority};
use beepmyphone_actors::trace::TraceId;

use super::schema::{deliveries, notifications};
use super::StoreError;
use crate::domain::DeliveryStatus;

/// A notification row.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = notifications)]
pub struct NotificationRow {
    /// Store sequence (age order).
    pub seq: i64,
    /// `ntf_…`
    pub id: String,
    /// Title.
    pub title: String,
    /// Body.
    pub body: String,
    /// Source app.
    pub app: String,
    /// Priority as [`Priority::as_i16`].
    pub priority: i16,
    /// JSON array of tags.
    pub tags: String,
    /// Click URL.
    pub click_url: Option<String>,
    /// Created at, epoch ms.
    pub created_at: i64,
    /// Expires at, epoch ms.
    pub expires_at: i64,
    /// Who published it.
    pub publisher: String,
    /// Its idempotency key.
    pub idempotency_key: Option<String>,
    /// The publish request's W3C trace id (16 bytes).
    pub trace_id: Option<Vec<u8>>,
}

impl NotificationRow {
    /// The domain record; [`StoreError::Corrupt`] if the priority or the tags are not what the
    /// store writes.
    pub fn record(&self) -> Result<NotificationRecord, StoreError> {
        let priority = Priority::from_i16(self.priority).ok_or_else(|| {
            StoreError::corrupt(
                "notifications",
                "priority",
                &self.id,
                format_args!("unknown priority {}", self.priority),
            )
        })?;
        let tags = serde_json::from_str(&self.tags).map_err(|e| {
            StoreError::corrupt(
                "notifications",
                "tags",
                &self.id,
                format_args!("not a JSON array of strings: {e}"),
            )
        })?;
        Ok(NotificationRecord {
            id: NotificationId::from_trusted(self.id.as_str()),
            title: self.title.clone(),
            body: self.body.clone(),
            app: self.app.clone(),
            priority,
            tags,
            click_url: self.click_url.clone(),
            created_at: self.created_at,
            expires_at: self.expires_at,
            // Only for the log: a value of another length is ignored rather than refused.
            trace_id: self.trace_id.as_deref().and_then(TraceId::from_slice),
        })
    }
}

/// A delivery row.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = deliveries)]
pub struct DeliveryRow {
    /// Which notification.
    pub notification_seq: i64,
    /// Which device.
    pub device_id: String,
    /// Where it is.
    pub status: DeliveryStatus,
    /// Times sent.
    pub attempts: i32,
    /// Last sent at, epoch ms.
    pub sent_at: Option<i64>,
    /// Acknowledged at, epoch ms.
    pub acked_at: Option<i64>,
}

/// Filters of `GET /notifications`.
#[derive(Debug, Default, Clone)]
pub struct ListFilter {
    /// Only notifications with a delivery to this device.
    pub device: Option<String>,
    /// Only those with a delivery in this status (to `device`, if given).
    pub status: Option<DeliveryStatus>,
    /// Only this priority.
    pub priority: Option<i16>,
    /// Only from this app.
    pub app: Option<String>,
    /// Created at or after (epoch ms).
    pub since: Option<i64>,
    /// Created before (epoch ms).
    pub until: Option<i64>,
    /// Only older than this sequence (the cursor).
    pub before_seq: Option<i64>,
}

/// A page of notifications, newest first.
pub fn list(
    conn: &mut SqliteConnection,
    filter: &ListFilter,
    limit: i64,
) -> QueryResult<Vec<NotificationRow>> {
    let mut query = notifications::table
        .select(NotificationRow::as_select())
        .order(notifications::seq.desc())
        .limit(limit)
        .into_boxed();
    if let Some(before) = filter.before_seq {
        query = query.filter(notifications::seq.lt(before));
    }
    if let Some(priority) = filter.priority {
        query = query.filter(notifications::priority.eq(priority));
    }
    if let Some(app) = &filter.app {
        query = query.filter(notifications::app.eq(app.clone()));
    }
    if let Some(since) = filter.since {
        query = query.filter(notifications::created_at.ge(since));
    }
    if let Some(until) = filter.until {
        query = query.filter(notifications::created_at.lt(until));
    }
    match (&filter.device, filter.status) {
        (Some(device), Some(status)) => {
            query = query.filter(
                notifications::seq.eq_any(
                    deliveries::table
                        .filter(deliveries::device_id.eq(device.clone()))
                        .filter(deliveries::status.eq(status))
                        .select(deliveries::notification_seq),
                ),
            );
        }
        (Some(device), None) => {
            query = query.filter(
                notifications::seq.eq_any(
                    deliveries::table
                        .filter(deliveries::device_id.eq(device.clone()))
                        .select(deliveries::notification_seq),
                ),
            );
        }
        (None, Some(status)) => {
            query = query.filter(
                notifications::seq.eq_any(
                    deliveries::table
                        .filter(deliveries::status.eq(status))
                        .select(deliveries::notification_seq),
                ),
            );
        }
        (None, None) => {}
    }
    query.load(conn)
}

/// One notification by id.
pub fn get(conn: &mut SqliteConnection, id: &str) -> QueryResult<Option<NotificationRow>> {
    notifications::table
        .filter(notifications::id.eq(id))
        .select(NotificationRow::as_select())
        .first(conn)
        .optional()
}

/// Deliveries of these notifications (optionally to one device), in device order.
pub fn deliveries_of(
    conn: &mut SqliteConnection,
    seqs: &[i64],
    device: Option<&str>,
) -> QueryResult<Vec<DeliveryRow>> {
    let mut query = deliveries::table
        .filter(deliveries::notification_seq.eq_any(seqs))
        .select(DeliveryRow::as_select())
        .order((deliveries::notification_seq, deliveries::device_id))
        .into_boxed();
    if let Some(device) = device {
        query = query.filter(deliveries::device_id.eq(device.to_owned()));
    }
    query.load(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> NotificationRow {
        NotificationRow {
            seq: 1,
            id: "ntf_corrupt".into(),
            title: "t".into(),
            body: String::new(),
            app: "a".into(),
            priority: Priority::Critical.as_i16(),
            tags: r#"["x","y"]"#.into(),
            click_url: None,
            created_at: 1,
            expires_at: 2,
            publisher: "tok_1".into(),
            idempotency_key: None,
            trace_id: None,
        }
    }

    fn corrupt_message(row: &NotificationRow) -> String {
        match row.record() {
            Err(StoreError::Corrupt(message)) => message,
            other => panic!("expected a corrupt-row error, got {other:?}"),
        }
    }

    #[test]
    fn a_valid_row_gives_its_record() {
        let record = row().record().unwrap();
        assert_eq!(record.priority, Priority::Critical);
        assert_eq!(record.tags, vec!["x".to_owned(), "y".to_owned()]);
    }

    #[test]
    fn an_unknown_priority_is_an_error_not_normal() {
        let message = corrupt_message(&NotificationRow {
            priority: 9,
            ..row()
        });
        assert!(message.contains("notifications.priority"), "{message}");
        assert!(message.contains("ntf_corrupt"), "{message}");
    }

    #[test]
    fn tags_that_are_not_a_json_array_of_strings_are_an_error_not_empty() {
        for tags in ["not json", "{\"a\":1}", "[1,2]", ""] {
            let message = corrupt_message(&NotificationRow {
                tags: tags.into(),
                ..row()
            });
            assert!(message.contains("notifications.tags"), "{tags}: {message}");
            assert!(message.contains("ntf_corrupt"), "{tags}: {message}");
        }
    }
}
