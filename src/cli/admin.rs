//! `beepmyphone admin add|passwd|list|remove`: dashboard accounts, managed locally on the data
//! directory like `token create` (safe while the server runs).
//!
//! Passwords are read from the terminal without echo (asked twice), or as one line from standard
//! input with `--password-stdin`; without that flag and without a terminal on stdin the command
//! refuses (exit 2) rather than wait. They are hashed with bcrypt at `auth.bcrypt_cost`. `passwd` and
//! `remove` end the admin's sessions, in SQLite and, when `redis.url` is set, in Redis.

use std::io::{BufRead, IsTerminal, Write};

use clap::Subcommand;

use beepmyphone_actors::model::rfc3339;

use crate::config::Settings;
use crate::crypto::secrets::{
    constant_time_eq, secret_string, ExposeSecret, SecretString, Zeroizing,
};
use crate::redis::Redis;
use crate::security::admins::{self, AdminError};
use crate::security::passwords::{Bcrypt, PasswordError, MAX_PASSWORD_BYTES, MIN_PASSWORD_LEN};
use crate::security::sessions::{RedisSessions, SessionWriter};
use crate::store::{admins as admin_rows, Store};

use super::local::{settings, LocalError};
use super::ConfigArgs;

/// `beepmyphone admin …`
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create an admin account for the dashboard.
    Add {
        /// Settings and data directory.
        #[command(flatten)]
        config: ConfigArgs,
        /// Login name: 1 to 64 of letters, digits, '.', '_', '-', '@'.
        name: String,
        /// Read the password as one line from standard input instead of prompting.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Change an admin's password (ends the admin's sessions).
    Passwd {
        /// Settings and data directory.
        #[command(flatten)]
        config: ConfigArgs,
        /// Login name.
        name: String,
        /// Read the password as one line from standard input instead of prompting.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List the admin accounts.
    List {
        /// Settings and data directory.
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Delete an admin account and end its sessions.
    Remove {
        /// Settings and data directory.
        #[command(flatten)]
        config: ConfigArgs,
        /// Login name.
        name: String,
    },
}

/// Runs an `admin` subcommand; results go to `out`, notes to stderr.
pub fn run(command: AdminCommand, out: &mut impl Write) -> Result<(), LocalError> {
    let io = |e: std::io::Error| LocalError::Failed(e.to_string());
    match command {
        AdminCommand::Add {
            config,
            name,
            password_stdin,
        } => {
            let settings = settings(&config)?;
            admins::check_name(&name).map_err(usage)?;
            let store = open(&settings)?;
            let mut conn = store
                .conn()
                .map_err(|e| LocalError::Failed(e.to_string()))?;
            if admin_rows::by_username(&mut conn, &name)
                .map_err(|e| LocalError::Failed(e.to_string()))?
                .is_some()
            {
                return Err(failed(AdminError::Exists(name)));
            }
            let password = read_password(password_stdin)?;
            let row = admins::add(&mut conn, &bcrypt(&settings)?, &name, &password, now())
                .map_err(classify)?;
            writeln!(out, "created admin {} ({})", row.username, row.id).map_err(io)?;
        }
        AdminCommand::Passwd {
            config,
            name,
            password_stdin,
        } => {
            let settings = settings(&config)?;
            let store = open(&settings)?;
            let mut conn = store
                .conn()
                .map_err(|e| LocalError::Failed(e.to_string()))?;
            if admin_rows::by_username(&mut conn, &name)
                .map_err(|e| LocalError::Failed(e.to_string()))?
                .is_none()
            {
                return Err(failed(AdminError::NotFound(name)));
            }
            let password = read_password(password_stdin)?;
            let row = admins::set_password(&mut conn, &bcrypt(&settings)?, &name, &password, now())
                .map_err(classify)?;
            let ended = end_sessions(&settings, &store, &row.id)?;
            writeln!(
                out,
                "changed the password of {}; ended {ended} session(s)",
                row.username
            )
            .map_err(io)?;
        }
        AdminCommand::List { config } => {
            let settings = settings(&config)?;
            let store = open(&settings)?;
            let mut conn = store
                .conn()
                .map_err(|e| LocalError::Failed(e.to_string()))?;
            let rows =
                admin_rows::list(&mut conn).map_err(|e| LocalError::Failed(e.to_string()))?;
            if rows.is_empty() {
                eprintln!("no admin accounts; create one with `beepmyphone admin add NAME`");
            }
            for row in rows {
                writeln!(
                    out,
                    "{}\t{}\tcreated {}\tpassword changed {}",
                    row.username,
                    row.id,
                    rfc3339(row.created_at),
                    rfc3339(row.updated_at)
                )
                .map_err(io)?;
            }
        }
        AdminCommand::Remove { config, name } => {
            let settings = settings(&config)?;
            let store = open(&settings)?;
            let mut conn = store
                .conn()
                .map_err(|e| LocalError::Failed(e.to_string()))?;
            let row = admin_rows::by_username(&mut conn, &name)
                .map_err(|e| LocalError::Failed(e.to_string()))?
                .ok_or_else(|| failed(AdminError::NotFound(name.clone())))?;
            // Sessions first: if Redis cannot be reached the account stays, and the command can
            // simply be run again.
            let ended = end_sessions(&settings, &store, &row.id)?;
            admins::remove(&mut conn, &name).map_err(classify)?;
            writeln!(
                out,
                "removed admin {}; ended {ended} session(s)",
                row.username
            )
            .map_err(io)?;
        }
    }
    Ok(())
}

fn now() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn usage(e: impl std::fmt::Display) -> LocalError {
    LocalError::Usage(e.to_string())
}

fn failed(e: impl std::fmt::Display) -> LocalError {
    LocalError::Failed(e.to_string())
}

/// Bad names and passwords are usage errors (exit 2); the rest are failures (exit 1).
fn classify(e: AdminError) -> LocalError {
    match e {
        AdminError::BadName
        | AdminError::Password(PasswordError::TooShort)
        | AdminError::Password(PasswordError::TooLong) => usage(e),
        other => failed(other),
    }
}

fn open(settings: &Settings) -> Result<Store, LocalError> {
    let mut storage = settings.storage.clone();
    storage.pool_min_idle = 0;
    storage.pool_max_size = 2;
    Store::open(&settings.storage.data_dir, &storage).map_err(failed)
}

fn bcrypt(settings: &Settings) -> Result<Bcrypt, LocalError> {
    Bcrypt::new(settings.auth.bcrypt_cost, false).map_err(usage)
}

/// Reads a new password: one line of stdin, or twice from the terminal without echo. Checks the
/// length rules before any hashing.
fn read_password(from_stdin: bool) -> Result<SecretString, LocalError> {
    check_password(read_new_secret(from_stdin, "password")?)
}

/// Reads a new secret (`what`: password, passphrase): one line of stdin, or twice from the
/// terminal without echo.
pub(super) fn read_new_secret(from_stdin: bool, what: &str) -> Result<SecretString, LocalError> {
    if from_stdin {
        // The line buffer holds the password too: wiped when it goes.
        let mut line = Zeroizing::new(String::new());
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| failed(format!("cannot read the {what} from stdin: {e}")))?;
        let trimmed = line.strip_suffix('\n').unwrap_or(&line);
        let trimmed = trimmed.strip_suffix('\r').unwrap_or(trimmed);
        Ok(SecretString::from(trimmed))
    } else {
        if !std::io::stdin().is_terminal() {
            return Err(usage(format!(
                "stdin is not a terminal: pass --{what}-stdin and write the {what} to stdin"
            )));
        }
        // rpassword hands back plain `String`s: wrapped at once.
        let first = rpassword::prompt_password(format!("New {what}: "))
            .map(secret_string)
            .map_err(|e| failed(format!("cannot read the {what}: {e}")))?;
        let second = rpassword::prompt_password(format!("Repeat the {what}: "))
            .map(secret_string)
            .map_err(|e| failed(format!("cannot read the {what}: {e}")))?;
        if !constant_time_eq(first.expose_secret(), second.expose_secret()) {
            return Err(usage(format!("the {what}s do not match")));
        }
        Ok(first)
    }
}

/// Checks a new password's length rules.
fn check_password(password: SecretString) -> Result<SecretString, LocalError> {
    let length = password.expose_secret().chars().count();
    if password.expose_secret().len() > MAX_PASSWORD_BYTES {
        return Err(usage(format!(
            "the password is {} bytes long; bcrypt uses at most {MAX_PASSWORD_BYTES}, and a longer one \
             would be silently cut, so it is refused",
            password.expose_secret().len()
        )));
    }
    if length < MIN_PASSWORD_LEN {
        return Err(usage(PasswordError::TooShort));
    }
    Ok(password)
}

/// Ends an admin's sessions in SQLite and, when configured, in Redis; how many.
fn end_sessions(settings: &Settings, store: &Store, admin_id: &str) -> Result<usize, LocalError> {
    let mut conn = store.conn().map_err(failed)?;
    let mut ended = admin_rows::delete_sessions_of(&mut conn, admin_id).map_err(failed)?;
    if !settings.redis.url.is_empty() {
        let redis_settings = settings.redis.clone();
        let admin = admin_id.to_owned();
        let in_redis = actix_rt::System::new().block_on(async move {
            let redis = Redis::connect(&redis_settings).await.map_err(failed)?;
            RedisSessions::new(redis)
                .delete_admin(&admin)
                .await
                .map_err(|e| failed(format!("cannot end the admin's sessions in Redis: {e}")))
        })?;
        ended += in_redis;
    }
    Ok(ended)
}
