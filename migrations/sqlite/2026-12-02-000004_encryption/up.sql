-- Encryption at rest (docs/security.md). The sealed columns keep their declared types: SQLite
-- stores the envelopes (BLOBs) in them as they are. `key_id` is the data key that sealed a row's
-- columns, NULL for a row written before encryption; the re-encryption job seals those on start.

-- notifications: title, body, app, tags and click_url are sealed under the content key. The app
-- filter compares a blind index; the idempotency key is replaced by its blind index.
ALTER TABLE notifications ADD COLUMN key_id BIGINT;
ALTER TABLE notifications ADD COLUMN app_index BLOB;
DROP INDEX notifications_app;
CREATE INDEX notifications_app_index ON notifications(app_index);
CREATE INDEX notifications_key ON notifications(key_id);

-- One row per tag of a notification: its blind index, for the tag filter.
CREATE TABLE notification_tags (
    tag_index BLOB NOT NULL,
    notification_seq BIGINT NOT NULL REFERENCES notifications(seq) ON DELETE CASCADE,
    PRIMARY KEY (tag_index, notification_seq)
) WITHOUT ROWID;
CREATE INDEX notification_tags_seq ON notification_tags(notification_seq);

-- devices: name, platform, app_version and quiet hours are sealed under the devices key; the
-- platform filter compares a blind index.
ALTER TABLE devices ADD COLUMN key_id BIGINT;
ALTER TABLE devices ADD COLUMN platform_index BLOB;
DROP INDEX devices_platform;
CREATE INDEX devices_platform_index ON devices(platform_index);
CREATE INDEX devices_key ON devices(key_id);

-- Session records were sealed in an earlier format, under keys that are no longer kept: the
-- sessions end (admins sign in again once).
DELETE FROM admin_sessions;
