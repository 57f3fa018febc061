//! Queries on `notifications` and `deliveries` for the HTTP API (listing and reading). The queue's
//! own writes are in [`super::queue_store`].

use super::Db;
use diesel::prelude::*;

use beepmyphone_actors::model::{NotificationId, NotificationRecord, Priority};
use beepmyphone_actors::trace::TraceId;

use super::schema::{deliveries, notification_tags, notifications};
use super::sealed::{open_opt, open_text};
use super::StoreError;
use crate::crypto::{fields, Cipher};
use crate::domain::DeliveryStatus;

/// A notification row as stored: title, body, app, tags and click URL sealed (see
/// [`crate::crypto`]); [`NotificationRow::record`] opens them.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = notifications)]
pub struct NotificationRow {
    /// Store sequence (age order).
    pub seq: i64,
    /// `ntf_…`
    pub id: String,
    /// Title, sealed.
    pub title: Vec<u8>,
    /// Body, sealed.
    pub body: Vec<u8>,
    /// Source app, sealed.
    pub app: Vec<u8>,
    /// Priority as [`Priority::as_i16`].
    pub priority: i16,
    /// JSON array of tags, sealed.
    pub tags: Vec<u8>,
    /// Click URL, sealed.
    pub click_url: Option<Vec<u8>>,
    /// Created at, epoch ms.
    pub created_at: i64,
    /// Expires at, epoch ms.
    pub expires_at: i64,
    /// Who published it.
    pub publisher: String,
    /// The blind index of its idempotency key (the key itself before encryption).
    pub idempotency_key: Option<Vec<u8>>,
    /// The publish request's W3C trace id (16 bytes).
    pub trace_id: Option<Vec<u8>>,
    /// The data key that sealed it; `None`: plaintext from before encryption.
    pub key_id: Option<i64>,
    /// The blind index of the app.
    pub app_index: Option<Vec<u8>>,
    /// The end-to-end envelope, sealed; `None` for a plain notification.
    pub encrypted: Option<Vec<u8>>,
}

impl NotificationRow {
    /// The domain record, opened; [`StoreError::Corrupt`] if a sealed field does not open (the
    /// failure is also counted by `cipher`) or the priority or the tags are not what the store
    /// writes.
    pub fn record(&self, cipher: &Cipher) -> Result<NotificationRecord, StoreError> {
        let open = |field, bytes: &[u8]| open_text(cipher, field, &self.id, self.key_id, bytes);
        let title = open(fields::NOTIFICATION_TITLE, &self.title)?;
        let body = open(fields::NOTIFICATION_BODY, &self.body)?;
        let app = open(fields::NOTIFICATION_APP, &self.app)?;
        let tags = open(fields::NOTIFICATION_TAGS, &self.tags)?;
        let click_url = open_opt(
            cipher,
            fields::NOTIFICATION_CLICK_URL,
            &self.id,
            self.key_id,
            self.click_url.as_deref(),
        )?;
        let encrypted = open_opt(
            cipher,
            fields::NOTIFICATION_ENCRYPTED,
            &self.id,
            self.key_id,
            self.encrypted.as_deref(),
        )?;
        let priority = Priority::from_i16(self.priority).ok_or_else(|| {
            StoreError::corrupt(
                "notifications",
                "priority",
                &self.id,
                format_args!("unknown priority {}", self.priority),
            )
        })?;
        let tags = serde_json::from_str(&tags).map_err(|e| {
            StoreError::corrupt(
                "notifications",
                "tags",
                &self.id,
                format_args!("not a JSON array of strings: {e}"),
            )
        })?;
        Ok(NotificationRecord {
            id: NotificationId::from_trusted(self.id.as_str()),
            title,
            body,
            app,
            priority,
            tags,
            click_url,
            created_at: self.created_at,
            expires_at: self.expires_at,
            // Only for the log: a value of another length is ignored rather than refused.
            trace_id: self.trace_id.as_deref().and_then(TraceId::from_slice),
            encrypted,
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
    /// Only with this tag.
    pub tag: Option<String>,
    /// Created at or after (epoch ms).
    pub since: Option<i64>,
    /// Created before (epoch ms).
    pub until: Option<i64>,
    /// Only older than this sequence (the cursor).
    pub before_seq: Option<i64>,
}

/// A page of notifications, newest first. The app and tag filters compare blind indexes.
pub fn list(
    conn: &mut Db,
    cipher: &Cipher,
    filter: &ListFilter,
    limit: i64,
) -> Result<Vec<NotificationRow>, StoreError> {
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
        let index = cipher
            .blind_index(fields::INDEX_APP, app)
            .map_err(StoreError::crypto)?;
        query = query.filter(notifications::app_index.eq(index));
    }
    if let Some(tag) = &filter.tag {
        let index = cipher
            .blind_index(fields::INDEX_TAG, tag)
            .map_err(StoreError::crypto)?;
        query = query.filter(
            notifications::seq.eq_any(
                notification_tags::table
                    .filter(notification_tags::tag_index.eq(index))
                    .select(notification_tags::notification_seq),
            ),
        );
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
    Ok(query.load(conn)?)
}

/// One notification by id.
pub fn get(conn: &mut Db, id: &str) -> QueryResult<Option<NotificationRow>> {
    notifications::table
        .filter(notifications::id.eq(id))
        .select(NotificationRow::as_select())
        .first(conn)
        .optional()
}

/// Deliveries of these notifications (optionally to one device), in device order.
pub fn deliveries_of(
    conn: &mut Db,
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
    use crate::crypto::ring::tests::test_cipher;

    /// A row from before encryption: plaintext, no key id.
    fn row() -> NotificationRow {
        NotificationRow {
            seq: 1,
            id: "ntf_corrupt".into(),
            title: b"t".to_vec(),
            body: Vec::new(),
            app: b"a".to_vec(),
            priority: Priority::Critical.as_i16(),
            tags: br#"["x","y"]"#.to_vec(),
            click_url: None,
            created_at: 1,
            expires_at: 2,
            publisher: "tok_1".into(),
            idempotency_key: None,
            trace_id: None,
            key_id: None,
            app_index: None,
            encrypted: None,
        }
    }

    fn corrupt_message(row: &NotificationRow) -> String {
        match row.record(&test_cipher()) {
            Err(StoreError::Corrupt(message)) => message,
            other => panic!("expected a corrupt-row error, got {other:?}"),
        }
    }

    #[test]
    fn a_valid_row_gives_its_record() {
        let record = row().record(&test_cipher()).unwrap();
        assert_eq!(record.priority, Priority::Critical);
        assert_eq!(record.tags, vec!["x".to_owned(), "y".to_owned()]);
    }

    #[test]
    fn a_sealed_row_opens_and_a_moved_field_is_a_corrupt_row() {
        let cipher = test_cipher();
        let sealer = cipher.sealer(crate::crypto::Purpose::Content).unwrap();
        let seal =
            |field, value: &str| sealer.seal(field, "ntf_corrupt", value.as_bytes()).unwrap();
        let sealed = NotificationRow {
            title: seal(fields::NOTIFICATION_TITLE, "on /var"),
            body: seal(fields::NOTIFICATION_BODY, "disk full"),
            app: seal(fields::NOTIFICATION_APP, "df"),
            tags: seal(fields::NOTIFICATION_TAGS, r#"["disk"]"#),
            click_url: Some(seal(fields::NOTIFICATION_CLICK_URL, "https://x.example/")),
            key_id: Some(sealer.key_id()),
            ..row()
        };
        let record = sealed.record(&cipher).unwrap();
        assert_eq!(
            (record.title.as_str(), record.body.as_str()),
            ("on /var", "disk full")
        );
        assert_eq!(record.click_url.as_deref(), Some("https://x.example/"));
        let swapped = NotificationRow {
            title: sealed.body.clone(),
            ..sealed.clone()
        };
        let message = match swapped.record(&cipher) {
            Err(StoreError::Corrupt(message)) => message,
            other => panic!("{other:?}"),
        };
        assert!(
            message.contains("notifications.title of row ntf_corrupt"),
            "{message}"
        );
        assert!(message.contains("does not open"), "{message}");
        assert_eq!(cipher.failures().count(), 1);
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
                tags: tags.as_bytes().to_vec(),
                ..row()
            });
            assert!(message.contains("notifications.tags"), "{tags}: {message}");
            assert!(message.contains("ntf_corrupt"), "{tags}: {message}");
        }
    }
}
