-- Delivery state changes (sent, acked) no longer move index entries: `status` leaves the keys of
-- both delivery indexes. Every notification's delivery row is marked up to twice, and with
-- `status` in a key each mark deleted and re-inserted an entry of `deliveries_device` at a random
-- place (one page per device) and moved one of `deliveries_pending` between two ranges.
DROP INDEX deliveries_device;
CREATE INDEX deliveries_device ON deliveries(device_id, notification_seq);
DROP INDEX deliveries_pending;
CREATE INDEX deliveries_pending ON deliveries(notification_seq) WHERE status < 2;
