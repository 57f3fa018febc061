-- End-to-end encryption (docs/api.md, "End-to-end encryption").
-- A device's X25519 public key, 32 raw bytes (NULL: the device has none). It is stored as it is,
-- not sealed under the devices key: it is public by design (publishers fetch it from
-- POST /e2e/keys), and sealing it would protect nothing while hiding it from the reader that
-- serves it.
ALTER TABLE devices ADD COLUMN e2e_public_key BLOB;
-- An end-to-end envelope (base64url) the relay cannot open, sealed under the content key like the
-- body (the at-rest encryption still applies on top). NULL: a plain notification.
ALTER TABLE notifications ADD COLUMN encrypted BLOB;
