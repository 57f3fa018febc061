//! The `beepmyphone` command line: `serve`, the local admin commands that work on the data
//! directory (`pairing-code`, `token create|list|revoke`, `device list|revoke`,
//! `keys rotate|status`, `admin add|passwd|list|remove`, `audit verify|prove|export`,
//! `cert status|renew|export-ca`), the client commands (`send`, `listen`), and `capture` (a
//! desktop's notifications to the relay; its work is in the `capture` module, which uses this
//! module's relay client, so only its arguments are here).
//!
//! Exit codes: 0 success, 1 runtime failure, 2 bad usage or configuration.

pub mod admin;
pub mod audit;
pub mod cert;
pub mod client;
pub mod credentials;
pub mod datakeys;
pub mod e2e;
pub mod exec;
pub mod keys;
pub mod local;
pub mod relay;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Self-hosted notification relay: publish over HTTP, deliver over WebSocket.
#[derive(Debug, Parser)]
#[command(name = "beepmyphone", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Where the settings and the data directory come from (shared by server and local commands).
#[derive(Debug, Args, Clone, Default)]
pub struct ConfigArgs {
    /// Settings file (default: ./config.toml if present, else built-in defaults).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory (overrides storage.data_dir).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a completion script for SHELL (bash, zsh, fish, elvish or powershell), e.g.
    /// `beepmyphone completions bash > /etc/bash_completion.d/beepmyphone`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), e.g. `beepmyphone man > beepmyphone.1`.
    Man,
    /// Run the relay.
    Serve {
        /// Settings and data directory.
        #[command(flatten)]
        config: ConfigArgs,
        /// Address and port to listen on (overrides server.listen).
        #[arg(long, value_name = "ADDR:PORT")]
        listen: Option<String>,
    },
    /// Publish a notification.
    Send(client::SendArgs),
    /// Act as a device: pair once, then print notifications and acknowledge them.
    Listen(client::ListenArgs),
    /// Forward this desktop's notifications (seen on the session D-Bus, beside the notification
    /// daemon) to the relay, through a disk queue that survives the relay being down.
    Capture(CaptureArgs),
    /// Load generator: pair devices, hold their sockets, publish, and measure (targets and results: docs/benchmarks.md).
    Bench(crate::bench::BenchArgs),
    /// Mint a pairing code (prints it and a QR code).
    PairingCode {
        /// Settings and data directory.
        #[command(flatten)]
        config: ConfigArgs,
        /// Seconds the code stays valid (60..3600; default auth.pairing_code_ttl_seconds).
        #[arg(long)]
        ttl: Option<u64>,
        /// Do not print the QR code.
        #[arg(long)]
        no_qr: bool,
        /// The URL devices use to reach the relay, for the printed hint and the QR code
        /// (default: server.public_url, else derived from server.listen).
        #[arg(long, value_name = "URL")]
        server: Option<String>,
    },
    /// API tokens.
    Token {
        /// What to do with tokens.
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Paired devices.
    Device {
        /// What to do with devices.
        #[command(subcommand)]
        command: DeviceCommand,
    },
    /// Signing and data-encryption keys.
    Keys {
        /// What to do with keys.
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Print the OpenAPI document of the HTTP API (as served at /api/v1/openapi.json).
    Openapi,
    /// The tamper-evident audit log: verify it, prove a record is in it, export it.
    Audit {
        /// What to do with the audit log.
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
    /// The TLS certificate: its status, a renewal now, the local CA for installing on devices.
    Cert {
        /// What to do with the certificate.
        #[command(subcommand)]
        command: cert::CertCommand,
    },
    /// Admin accounts for the dashboard.
    Admin {
        /// What to do with admin accounts.
        #[command(subcommand)]
        command: admin::AdminCommand,
    },
}

/// `beepmyphone capture` (the arguments; the agent is `beepmyphone::capture::run`).
#[derive(Debug, Args)]
pub struct CaptureArgs {
    /// The capture config (default: $XDG_CONFIG_HOME/beepmyphone/capture.toml, else
    /// ~/.config/beepmyphone/capture.toml; built-in defaults if that does not exist).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// `beepmyphone token …`
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create an API token and print it (shown once).
    Create {
        /// Settings and data directory.
        #[command(flatten)]
        config: ConfigArgs,
        /// `publish` (send notifications) or `admin` (everything).
        #[arg(long, value_parser = ["publish", "admin", "metrics"])]
        scope: String,
        /// A name to recognise it by.
        #[arg(long)]
        name: String,
    },
    /// List the API tokens (id, scope, name, created, last used; never a secret).
    List {
        /// Settings and data directory.
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Delete an API token; a running relay refuses it within a minute.
    Revoke {
        /// Settings and data directory.
        #[command(flatten)]
        config: ConfigArgs,
        /// The token's id (`tok_…`, as `token list` shows).
        id: String,
    },
}

/// `beepmyphone device …`
#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// List the paired devices (id, name, platform, enabled, groups, paired, last seen).
    List {
        /// Settings and data directory.
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Refuse every token of a device and disable it (DELETE /api/v1/devices/{id} deletes it).
    Revoke {
        /// Settings and data directory.
        #[command(flatten)]
        config: ConfigArgs,
        /// The device's id (`dev_…`, as `device list` shows).
        id: String,
    },
}

/// `beepmyphone keys …`
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Add a new token-signing key (it signs from now on; a running relay picks it up within
    /// seconds); with --data, new data-encryption keys instead (new rows are sealed under them at
    /// once, older rows are re-encrypted in the background). Prints the new key ids.
    Rotate {
        /// Rotate the data-encryption keys instead of the signing key.
        #[arg(long)]
        data: bool,
        /// Settings and data directory.
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// List the signing keys (current, verifying, retiring) and the data keys with the rows each
    /// covers.
    Status {
        /// Settings and data directory.
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Re-wrap the data keys under a new passphrase (BEEP_MASTER_PASSPHRASE or
    /// encryption.passphrase_file gives the current one, if any); rows are not touched. Restart the
    /// relay with the new passphrase afterwards.
    Passphrase {
        /// Go back to a key file in the keys directory instead of a passphrase.
        #[arg(long, conflicts_with = "passphrase_stdin")]
        remove: bool,
        /// Read the new passphrase from one line of stdin instead of the terminal.
        #[arg(long)]
        passphrase_stdin: bool,
        /// Settings and data directory.
        #[command(flatten)]
        config: ConfigArgs,
    },
}
