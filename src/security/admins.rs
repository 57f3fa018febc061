//! Admin accounts for the dashboard: names, and password changes through a [`PasswordHasher`].
//!
//! These functions are blocking (bcrypt, SQLite): the CLI calls them directly, the server on a
//! blocking thread. Ending an account's sessions is the caller's job ([`crate::security::sessions`]),
//! because sessions may live in Redis.

use crate::store::Db;

use crate::crypto::secrets::SecretString;
use crate::security::passwords::{PasswordError, PasswordHasher};
use crate::store::admins::{self, AdminRow};
use crate::store::StoreError;

/// Prefix of admin ids.
pub const ADMIN_ID_PREFIX: &str = "adm_";
/// Longest admin name, in characters.
pub const MAX_NAME_LEN: usize = 64;

/// Why an account operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The name breaks the rules.
    #[error("the admin name must be 1 to {MAX_NAME_LEN} characters of letters, digits, '.', '_', '-' and '@'")]
    BadName,
    /// The password breaks the rules.
    #[error(transparent)]
    Password(#[from] PasswordError),
    /// The name is taken.
    #[error("an admin named {0} already exists")]
    Exists(String),
    /// No such admin.
    #[error("there is no admin named {0}")]
    NotFound(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<diesel::result::Error> for AdminError {
    fn from(e: diesel::result::Error) -> Self {
        AdminError::Store(e.into())
    }
}

/// Checks an admin name: 1–64 characters from `A-Z a-z 0-9 . _ - @`.
pub fn check_name(name: &str) -> Result<(), AdminError> {
    let ok = (1..=MAX_NAME_LEN).contains(&name.chars().count())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok {
        Ok(())
    } else {
        Err(AdminError::BadName)
    }
}

/// Creates an admin with a new password (hashed here: blocking).
pub fn add(
    conn: &mut Db,
    hasher: &dyn PasswordHasher,
    name: &str,
    password: &SecretString,
    now: i64,
) -> Result<AdminRow, AdminError> {
    check_name(name)?;
    if admins::by_username(conn, name)?.is_some() {
        return Err(AdminError::Exists(name.to_owned()));
    }
    let row = AdminRow {
        id: format!("{ADMIN_ID_PREFIX}{}", ulid::Ulid::new()),
        username: name.to_owned(),
        password_hash: hasher.hash(password)?,
        created_at: now,
        updated_at: now,
    };
    match admins::insert(conn, &row) {
        Ok(()) => Ok(row),
        Err(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            _,
        )) => Err(AdminError::Exists(name.to_owned())),
        Err(e) => Err(e.into()),
    }
}

/// Sets a new password (hashed here: blocking); returns the admin.
pub fn set_password(
    conn: &mut Db,
    hasher: &dyn PasswordHasher,
    name: &str,
    password: &SecretString,
    now: i64,
) -> Result<AdminRow, AdminError> {
    let row = admins::by_username(conn, name)?.ok_or_else(|| AdminError::NotFound(name.into()))?;
    let hash = hasher.hash(password)?;
    if !admins::set_password(conn, &row.id, &hash, now)? {
        return Err(AdminError::NotFound(name.into()));
    }
    Ok(row)
}

/// Deletes an admin (its SQLite sessions cascade); returns the deleted row.
pub fn remove(conn: &mut Db, name: &str) -> Result<AdminRow, AdminError> {
    let row = admins::by_username(conn, name)?.ok_or_else(|| AdminError::NotFound(name.into()))?;
    if !admins::delete(conn, &row.id)? {
        return Err(AdminError::NotFound(name.into()));
    }
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StorageSettings;
    use crate::crypto::secrets::secret_string;
    use crate::security::passwords::Bcrypt;
    use crate::store::Store;

    #[test]
    fn names_are_checked() {
        assert!(check_name("alice").is_ok());
        assert!(check_name("ops.team-1@home").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("has space").is_err());
        assert!(check_name("tab\t").is_err());
        assert!(check_name(&"a".repeat(65)).is_err());
    }

    #[test]
    fn add_passwd_remove() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StorageSettings::default()).unwrap();
        let mut conn = store.conn().unwrap();
        let bcrypt = Bcrypt::new(4, true).unwrap();
        let pw = secret_string("a long enough password".into());
        let row = add(&mut conn, &bcrypt, "alice", &pw, 1).unwrap();
        assert!(row.id.starts_with(ADMIN_ID_PREFIX));
        assert!(bcrypt.verify(&pw, &row.password_hash).unwrap());
        assert!(matches!(
            add(&mut conn, &bcrypt, "alice", &pw, 2),
            Err(AdminError::Exists(_))
        ));
        assert!(matches!(
            add(&mut conn, &bcrypt, "bob", &secret_string("short".into()), 2),
            Err(AdminError::Password(PasswordError::TooShort))
        ));
        assert!(matches!(
            add(&mut conn, &bcrypt, "bob", &secret_string("x".repeat(73)), 2),
            Err(AdminError::Password(PasswordError::TooLong))
        ));
        let new_pw = secret_string("another long password".into());
        set_password(&mut conn, &bcrypt, "alice", &new_pw, 3).unwrap();
        let stored = admins::by_username(&mut conn, "alice").unwrap().unwrap();
        assert!(bcrypt.verify(&new_pw, &stored.password_hash).unwrap());
        assert_eq!(stored.updated_at, 3);
        assert!(matches!(
            set_password(&mut conn, &bcrypt, "nobody", &new_pw, 3),
            Err(AdminError::NotFound(_))
        ));
        remove(&mut conn, "alice").unwrap();
        assert!(admins::list(&mut conn).unwrap().is_empty());
        assert!(matches!(
            remove(&mut conn, "alice"),
            Err(AdminError::NotFound(_))
        ));
    }
}
