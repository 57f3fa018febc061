//! The ids the relay issues, as rules: below both the request schemas ([`super::schemas`]) and
//! the publish targets ([`super::targets`]), which both check device ids.

use beepmyphone_actors::model::DeviceId;

/// Schema pattern of a device id as the relay issues them (`dev_` and an upper-case ULID).
pub const DEVICE_ID: &str = "^dev_[0-7][0-9A-HJKMNP-TV-Z]{25}$";

/// An id exactly as the relay issues them: a four-character prefix (`dev_`, `tok_`) and an
/// upper-case ULID (see [`DEVICE_ID`]).
pub fn is_issued_id(raw: &str, prefix: &str) -> bool {
    raw.len() == 30
        && raw.starts_with(prefix)
        && prefix.len() == 4
        && matches!(raw.as_bytes()[4], b'0'..=b'7')
        && raw[4..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b.is_ascii_uppercase() && !b"ILOU".contains(&b)))
}

/// A device id exactly as the relay issues them (see [`DEVICE_ID`]).
pub fn is_device_id(raw: &str) -> bool {
    is_issued_id(raw, "dev_") && DeviceId::parse(raw).is_some()
}
