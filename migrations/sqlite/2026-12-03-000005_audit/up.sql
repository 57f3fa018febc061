-- The tamper-evident audit log (src/audit). Each row is a leaf of an RFC 6962 Merkle tree:
-- `leaf_hash` is SHA-256(0x00 || the record's canonical encoding), which covers every column
-- below, the sealed bytes as stored. `seq` is the leaf's index + 1, with no gaps.
CREATE TABLE audit_log (
    seq INTEGER PRIMARY KEY NOT NULL,
    at_ms BIGINT NOT NULL,
    actor_kind TEXT NOT NULL,
    actor_id TEXT,
    action TEXT NOT NULL,
    subject TEXT,
    outcome TEXT NOT NULL,
    request_id TEXT,
    trace_id TEXT,
    -- The data key (purpose `audit`) that sealed `sealed`; NULL when there is nothing sealed.
    key_id BIGINT,
    -- The source IP and the details, as one sealed JSON object.
    sealed BLOB,
    leaf_hash BLOB NOT NULL
);
CREATE INDEX audit_log_at ON audit_log (at_ms);
CREATE INDEX audit_log_action ON audit_log (action, seq);
CREATE INDEX audit_log_actor ON audit_log (actor_id, seq);
CREATE INDEX audit_log_subject ON audit_log (subject, seq);

-- Nothing edits a record in place. (A guard against mistakes, not against an attacker with
-- the file: the checkpoints are what detect that.)
CREATE TRIGGER audit_log_append_only BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;

-- Signed checkpoints (C2SP tlog-checkpoint notes). `frontier` holds the roots of the perfect
-- subtrees of the tree of `size` leaves, so the writer resumes without reading every leaf and
-- an archive can be verified on its own.
CREATE TABLE audit_checkpoints (
    size BIGINT PRIMARY KEY NOT NULL,
    at_ms BIGINT NOT NULL,
    note TEXT NOT NULL,
    frontier BLOB NOT NULL
);
