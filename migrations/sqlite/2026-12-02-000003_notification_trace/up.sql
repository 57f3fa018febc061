-- The W3C trace id (16 bytes) of the request that published a notification, so that redelivery
-- after a restart still logs it. NULL for notifications stored before this column existed.
ALTER TABLE notifications ADD COLUMN trace_id BLOB;
