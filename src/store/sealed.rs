//! Opening sealed columns: the helpers every table with sealed columns shares. A row whose
//! `key_id` is NULL is from before encryption and holds plaintext until the re-encryption job
//! seals it.

use crate::crypto::{Cipher, CryptoError, Field};

use super::StoreError;

impl StoreError {
    /// A crypto failure outside a row (no key to seal or index with).
    pub fn crypto(e: CryptoError) -> Self {
        StoreError::Other(e.to_string())
    }
}

/// Opens a text column of `row` (plaintext when `key_id` is `None`); a value that does not open
/// is a [`StoreError::Corrupt`] naming the table, column and row.
pub fn open_text(
    cipher: &Cipher,
    field: Field,
    row: &str,
    key_id: Option<i64>,
    bytes: &[u8],
) -> Result<String, StoreError> {
    match key_id {
        Some(_) => cipher
            .open_string(field, row, bytes)
            .map_err(|e| StoreError::corrupt(field.table, field.column, row, e)),
        None => String::from_utf8(bytes.to_vec()).map_err(|_| {
            StoreError::corrupt(
                field.table,
                field.column,
                row,
                "plaintext that is not UTF-8",
            )
        }),
    }
}

/// [`open_text`] for a nullable column.
pub fn open_opt(
    cipher: &Cipher,
    field: Field,
    row: &str,
    key_id: Option<i64>,
    bytes: Option<&[u8]>,
) -> Result<Option<String>, StoreError> {
    bytes
        .map(|b| open_text(cipher, field, row, key_id, b))
        .transpose()
}
