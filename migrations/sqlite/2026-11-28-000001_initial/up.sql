-- Paired devices and their delivery settings.
CREATE TABLE devices (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    platform TEXT NOT NULL,
    app_version TEXT,
    enabled BOOLEAN NOT NULL DEFAULT 1,
    min_priority SMALLINT NOT NULL DEFAULT 0,
    quiet_start TEXT,
    quiet_end TEXT,
    quiet_tz TEXT,
    created_at BIGINT NOT NULL,
    last_seen_at BIGINT,
    -- Access tokens issued before this instant (ms) are no longer accepted.
    tokens_valid_after BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX devices_platform ON devices(platform);

-- Device refresh tokens: only a SHA-256 hash is stored; one family per pairing, single use.
CREATE TABLE device_tokens (
    id TEXT PRIMARY KEY NOT NULL,
    device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    family_id TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT,
    revoked_at BIGINT
);
CREATE INDEX device_tokens_family ON device_tokens(family_id);
CREATE INDEX device_tokens_device ON device_tokens(device_id);

-- API tokens (bmp_...): only a SHA-256 hash is stored.
CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    scope TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT
);

-- Pairing codes: single use, short-lived; only a hash is stored.
CREATE TABLE pairing_codes (
    code_hash TEXT PRIMARY KEY NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);

CREATE TABLE notifications (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    app TEXT NOT NULL,
    priority SMALLINT NOT NULL,
    tags TEXT NOT NULL,
    click_url TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    publisher TEXT NOT NULL,
    idempotency_key TEXT
);
CREATE INDEX notifications_idempotency ON notifications(publisher, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX notifications_app ON notifications(app);

-- One row per notification and target device. status: 0 queued, 1 sent, 2 acked, 3 expired.
CREATE TABLE deliveries (
    notification_seq BIGINT NOT NULL REFERENCES notifications(seq) ON DELETE CASCADE,
    device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    status SMALLINT NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    sent_at BIGINT,
    acked_at BIGINT,
    PRIMARY KEY (notification_seq, device_id)
) WITHOUT ROWID;
CREATE INDEX deliveries_device ON deliveries(device_id, status, notification_seq);
CREATE INDEX deliveries_pending ON deliveries(status, notification_seq) WHERE status < 2;
