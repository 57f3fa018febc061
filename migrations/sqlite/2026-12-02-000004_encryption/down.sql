-- Sealed values cannot be turned back into plaintext by SQL; this only restores the shape.
DROP INDEX devices_key;
DROP INDEX devices_platform_index;
ALTER TABLE devices DROP COLUMN platform_index;
ALTER TABLE devices DROP COLUMN key_id;
CREATE INDEX devices_platform ON devices(platform);
DROP TABLE notification_tags;
DROP INDEX notifications_key;
DROP INDEX notifications_app_index;
ALTER TABLE notifications DROP COLUMN app_index;
ALTER TABLE notifications DROP COLUMN key_id;
CREATE INDEX notifications_app ON notifications(app);
