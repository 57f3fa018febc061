DROP INDEX deliveries_device;
CREATE INDEX deliveries_device ON deliveries(device_id, status, notification_seq);
DROP INDEX deliveries_pending;
CREATE INDEX deliveries_pending ON deliveries(status, notification_seq) WHERE status < 2;
