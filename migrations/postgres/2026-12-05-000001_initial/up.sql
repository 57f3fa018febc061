-- The PostgreSQL schema: the same tables, columns and indexes as the SQLite migrations in
-- migrations/sqlite/ leave behind (src/store/schema.rs), as one migration. Sealed columns are
-- BYTEA (SQLite keeps their declared types and stores the envelopes as BLOBs). Times are
-- milliseconds since the epoch, as in SQLite.

CREATE TABLE devices (
    id TEXT PRIMARY KEY,
    name BYTEA NOT NULL,
    platform BYTEA NOT NULL,
    app_version BYTEA,
    enabled BOOLEAN NOT NULL DEFAULT TRUE,
    min_priority SMALLINT NOT NULL DEFAULT 0,
    quiet_start BYTEA,
    quiet_end BYTEA,
    quiet_tz BYTEA,
    created_at BIGINT NOT NULL,
    last_seen_at BIGINT,
    -- Access tokens issued before this instant (ms) are no longer accepted.
    tokens_valid_after BIGINT NOT NULL DEFAULT 0,
    key_id BIGINT,
    platform_index BYTEA,
    groups BYTEA,
    e2e_public_key BYTEA
);
CREATE INDEX devices_platform_index ON devices (platform_index);
CREATE INDEX devices_key ON devices (key_id);

CREATE TABLE device_tokens (
    id TEXT PRIMARY KEY,
    device_id TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    family_id TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT,
    revoked_at BIGINT
);
CREATE INDEX device_tokens_family ON device_tokens (family_id);
CREATE INDEX device_tokens_device ON device_tokens (device_id);

CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    scope TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT
);

CREATE TABLE pairing_codes (
    code_hash TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);

-- `seq` is assigned by the writer inside its write transaction (src/store/queue_store.rs), as in
-- SQLite: no sequence.
CREATE TABLE notifications (
    seq BIGINT PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    title BYTEA NOT NULL,
    body BYTEA NOT NULL,
    app BYTEA NOT NULL,
    priority SMALLINT NOT NULL,
    tags BYTEA NOT NULL,
    click_url BYTEA,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    publisher TEXT NOT NULL,
    idempotency_key BYTEA,
    trace_id BYTEA,
    key_id BIGINT,
    app_index BYTEA,
    encrypted BYTEA
);
CREATE INDEX notifications_idempotency ON notifications (publisher, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX notifications_app_index ON notifications (app_index);
CREATE INDEX notifications_key ON notifications (key_id);

-- status: 0 queued, 1 sent, 2 acked, 3 expired.
CREATE TABLE deliveries (
    notification_seq BIGINT NOT NULL REFERENCES notifications (seq) ON DELETE CASCADE,
    device_id TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    status SMALLINT NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    sent_at BIGINT,
    acked_at BIGINT,
    PRIMARY KEY (notification_seq, device_id)
);
CREATE INDEX deliveries_device ON deliveries (device_id, notification_seq);
CREATE INDEX deliveries_pending ON deliveries (notification_seq) WHERE status < 2;

CREATE TABLE notification_tags (
    tag_index BYTEA NOT NULL,
    notification_seq BIGINT NOT NULL REFERENCES notifications (seq) ON DELETE CASCADE,
    PRIMARY KEY (tag_index, notification_seq)
);
CREATE INDEX notification_tags_seq ON notification_tags (notification_seq);

CREATE TABLE admins (
    id TEXT PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- `inserted` is the insertion order (SQLite's rowid), which breaks ties between logins of one ms
-- when the cap ends the oldest sessions; diesel's schema leaves it out, so it is always the
-- default.
CREATE TABLE admin_sessions (
    id_hash TEXT PRIMARY KEY,
    admin_id TEXT NOT NULL REFERENCES admins (id) ON DELETE CASCADE,
    data BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    inserted BIGSERIAL NOT NULL
);
CREATE INDEX admin_sessions_admin ON admin_sessions (admin_id, created_at);
CREATE INDEX admin_sessions_expiry ON admin_sessions (expires_at);

CREATE TABLE revoked_tokens (
    jti TEXT PRIMARY KEY,
    device_id TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX revoked_tokens_expiry ON revoked_tokens (expires_at);

-- The tamper-evident audit log (src/audit); see the SQLite migration 2026-12-03-000005_audit.
CREATE TABLE audit_log (
    seq BIGINT PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    actor_kind TEXT NOT NULL,
    actor_id TEXT,
    action TEXT NOT NULL,
    subject TEXT,
    outcome TEXT NOT NULL,
    request_id TEXT,
    trace_id TEXT,
    key_id BIGINT,
    sealed BYTEA,
    leaf_hash BYTEA NOT NULL
);
CREATE INDEX audit_log_at ON audit_log (at_ms);
CREATE INDEX audit_log_action ON audit_log (action, seq);
CREATE INDEX audit_log_actor ON audit_log (actor_id, seq);
CREATE INDEX audit_log_subject ON audit_log (subject, seq);

-- Nothing edits a record in place (a guard against mistakes; the checkpoints detect tampering).
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only';
END;
$$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();

CREATE TABLE audit_checkpoints (
    size BIGINT PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    note TEXT NOT NULL,
    frontier BYTEA NOT NULL
);
