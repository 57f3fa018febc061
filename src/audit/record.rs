//! One audit record: how an [`AuditEvent`] becomes a stored row (its personal part sealed with
//! the audit data key), the canonical encoding its leaf hash covers, and the view that exports and
//! the API show (opened).
//!
//! The encoding is `BMPAUDIT1` ‖ seq (u64) ‖ at_ms (i64) ‖ actor kind ‖ actor id? ‖ action ‖
//! subject? ‖ outcome ‖ request id? ‖ trace id? ‖ key id? ‖ sealed?, integers big-endian, every
//! string or byte field as a u32 length and its bytes, and every optional field behind a 0 (absent)
//! or 1 (present) byte. So every column is covered, no two records encode alike, and the leaf hash
//! covers the sealed bytes as stored: verifying needs no key.

use serde::Serialize;

use beepmyphone_actors::model::rfc3339;
use beepmyphone_actors::ports::AuditEvent;

use super::merkle::{leaf_hash, Hash};
use crate::crypto::{fields, Cipher, CryptoError, Purpose};
use crate::store::audit::AuditRow;

const MAGIC: &[u8] = b"BMPAUDIT1";

fn put(out: &mut Vec<u8>, bytes: &[u8]) {
    // Fields are bounded far below 4 GiB (events are built by the relay).
    out.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn put_opt(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => out.push(0),
        Some(bytes) => {
            out.push(1);
            put(out, bytes);
        }
    }
}

/// The canonical encoding of a stored row (everything but its leaf hash).
pub fn encode(row: &AuditRow) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + row.sealed.as_ref().map_or(0, Vec::len));
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&row.seq.to_be_bytes());
    out.extend_from_slice(&row.at_ms.to_be_bytes());
    put(&mut out, row.actor_kind.as_bytes());
    put_opt(&mut out, row.actor_id.as_deref().map(str::as_bytes));
    put(&mut out, row.action.as_bytes());
    put_opt(&mut out, row.subject.as_deref().map(str::as_bytes));
    put(&mut out, row.outcome.as_bytes());
    put_opt(&mut out, row.request_id.as_deref().map(str::as_bytes));
    put_opt(&mut out, row.trace_id.as_deref().map(str::as_bytes));
    let key = row.key_id.map(i64::to_be_bytes);
    put_opt(&mut out, key.as_ref().map(|k| &k[..]));
    put_opt(&mut out, row.sealed.as_deref());
    out
}

/// The leaf hash of a stored row, recomputed from its fields.
pub fn leaf_of(row: &AuditRow) -> Hash {
    leaf_hash(&encode(row))
}

/// The personal part of an event, as sealed.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, Serialize)]
pub struct Personal {
    /// The source IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// The details.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub details: serde_json::Value,
}

/// The row of `event` at position `seq`, its personal part (if any) sealed with the current audit
/// key, leaf hash set. Without data keys only events with nothing personal can be stored.
pub fn seal(
    event: &AuditEvent,
    seq: i64,
    cipher: Option<&Cipher>,
) -> Result<AuditRow, CryptoError> {
    let personal = Personal {
        ip: event.ip.clone(),
        details: event.details.clone(),
    };
    let (key_id, sealed) = if personal.ip.is_none() && personal.details.is_null() {
        (None, None)
    } else {
        let sealer = cipher
            .ok_or(CryptoError::NoKey(Purpose::Audit))?
            .sealer(Purpose::Audit)?;
        let plain = serde_json::to_vec(&personal)
            .map_err(|e| CryptoError::Keys(format!("audit details: {e}")))?;
        let sealed = sealer.seal(fields::AUDIT_SEALED, &seq.to_string(), &plain)?;
        (Some(sealer.key_id()), Some(sealed))
    };
    let mut row = AuditRow {
        seq,
        at_ms: event.at_ms,
        actor_kind: event.actor.as_str().to_owned(),
        actor_id: event.actor_id.clone(),
        action: event.action.as_str().to_owned(),
        subject: event.subject.clone(),
        outcome: event.outcome.as_str().to_owned(),
        request_id: event.request_id.clone(),
        trace_id: event.trace_id.clone(),
        key_id,
        sealed,
        leaf_hash: Vec::new(),
    };
    row.leaf_hash = leaf_of(&row).to_vec();
    Ok(row)
}

/// Opens the personal part of a row (`None` when it has none).
pub fn open(row: &AuditRow, cipher: &Cipher) -> Result<Option<Personal>, CryptoError> {
    let Some(sealed) = &row.sealed else {
        return Ok(None);
    };
    let plain = cipher.open(fields::AUDIT_SEALED, &row.seq.to_string(), sealed)?;
    serde_json::from_slice(&plain)
        .map(Some)
        .map_err(|_| CryptoError::NotText)
}

/// A record as `GET /audit` and `audit export` show it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecordView {
    /// Position in the log (what `audit prove` takes).
    pub seq: i64,
    /// When it happened (RFC 3339).
    pub at: String,
    /// `admin`, `token`, `device`, `system` or `anonymous`.
    pub actor: String,
    /// The actor's id (`adm_…`, `tok_…`, `dev_…`).
    pub actor_id: Option<String>,
    /// What was done (`admin.login`, `device.deleted`, …).
    pub action: String,
    /// What it was done to.
    pub subject: Option<String>,
    /// `ok`, `denied`, `failed` or `requested`.
    pub outcome: String,
    /// The source IP.
    pub ip: Option<String>,
    /// The request's `X-Request-Id`.
    pub request_id: Option<String>,
    /// The request's trace id.
    pub trace_id: Option<String>,
    /// Anything else recorded (an empty object when nothing).
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
    /// The record's leaf hash (hex).
    pub leaf_hash: String,
}

/// The view of a row, its personal part opened. A part that does not open is shown as such (the
/// record is still listed: the log's integrity does not depend on the key).
pub fn view(row: AuditRow, cipher: &Cipher) -> RecordView {
    let (ip, details) = match open(&row, cipher) {
        Ok(Some(personal)) if personal.details.is_null() => (personal.ip, serde_json::json!({})),
        Ok(Some(personal)) => (personal.ip, personal.details),
        Ok(None) => (None, serde_json::json!({})),
        Err(_) => (
            None,
            serde_json::json!({ "sealed": "does not open with the audit keys in this ring" }),
        ),
    };
    RecordView {
        seq: row.seq,
        at: rfc3339(row.at_ms),
        actor: row.actor_kind,
        actor_id: row.actor_id,
        action: row.action,
        subject: row.subject,
        outcome: row.outcome,
        ip,
        request_id: row.request_id,
        trace_id: row.trace_id,
        details,
        leaf_hash: hex::encode(&row.leaf_hash),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use beepmyphone_actors::ports::{Action, ActorKind, Outcome};

    fn row() -> AuditRow {
        AuditRow {
            seq: 7,
            at_ms: 1_700_000_000_000,
            actor_kind: "admin".into(),
            actor_id: Some("adm_1".into()),
            action: "device.deleted".into(),
            subject: Some("dev_1".into()),
            outcome: "ok".into(),
            request_id: Some("r1".into()),
            trace_id: None,
            key_id: Some(3),
            sealed: Some(vec![1, 2, 3]),
            leaf_hash: Vec::new(),
        }
    }

    #[test]
    fn every_field_changes_the_leaf() {
        let base = leaf_of(&row());
        let edits: Vec<fn(&mut AuditRow)> = vec![
            |r| r.seq += 1,
            |r| r.at_ms += 1,
            |r| r.actor_kind = "token".into(),
            |r| r.actor_id = None,
            |r| r.action = "device.paired".into(),
            |r| r.subject = Some("dev_2".into()),
            |r| r.outcome = "denied".into(),
            |r| r.request_id = Some("r2".into()),
            |r| r.trace_id = Some(String::new()),
            |r| r.key_id = Some(4),
            |r| r.sealed = Some(vec![1, 2, 4]),
            |r| r.sealed = None,
        ];
        for (i, edit) in edits.into_iter().enumerate() {
            let mut changed = row();
            edit(&mut changed);
            assert_ne!(leaf_of(&changed), base, "edit {i}");
        }
        // The stored hash is not part of what is hashed.
        let mut with_hash = row();
        with_hash.leaf_hash = vec![9; 32];
        assert_eq!(leaf_of(&with_hash), base);
    }

    #[test]
    fn moving_bytes_between_fields_changes_the_leaf() {
        let mut a = row();
        a.actor_id = Some("adm_1x".into());
        a.subject = Some("dev_1".into());
        let mut b = row();
        b.actor_id = Some("adm_1".into());
        b.subject = Some("xdev_1".into());
        assert_ne!(leaf_of(&a), leaf_of(&b));
        let (mut none, mut empty) = (row(), row());
        none.subject = None;
        empty.subject = Some(String::new());
        assert_ne!(leaf_of(&none), leaf_of(&empty));
    }

    #[test]
    fn sealed_parts_open_only_at_their_seq() {
        let cipher = crate::crypto::ring::tests::test_cipher();
        let mut event = AuditEvent::new(Action::AdminLogin, ActorKind::Anonymous, Outcome::Denied)
            .with_details(serde_json::json!({"username": "root"}));
        event.ip = Some("192.0.2.1".into());
        event.at_ms = 5;
        let row = seal(&event, 11, Some(&cipher)).unwrap();
        assert!(seal(&event, 11, None).is_err());
        assert_eq!(row.leaf_hash, leaf_of(&row).to_vec());
        let personal = open(&row, &cipher).unwrap().unwrap();
        assert_eq!(personal.ip.as_deref(), Some("192.0.2.1"));
        assert_eq!(personal.details["username"], "root");
        let mut moved = row.clone();
        moved.seq = 12;
        assert!(open(&moved, &cipher).is_err());
        let shown = view(moved, &cipher);
        assert!(shown.ip.is_none() && shown.details["sealed"].is_string());
        // Nothing personal: nothing sealed.
        let bare = seal(
            &AuditEvent::system(Action::ConfigLoaded, Outcome::Ok),
            1,
            None,
        )
        .unwrap();
        assert!(bare.sealed.is_none() && bare.key_id.is_none());
        assert!(open(&bare, &cipher).unwrap().is_none());
    }
}
