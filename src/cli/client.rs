//! Client commands: `send` publishes, `listen` acts as a device.

use clap::Args;

/// `beepmyphone send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// The relay's URL.
    #[arg(long, env = "BEEP_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// A publish or admin API token.
    #[arg(long, env = "BEEP_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// low, normal, high or critical.
    #[arg(long, default_value = "normal")]
    pub priority: String,
    /// Target device ids (default: all devices).
    #[arg(long = "to", value_name = "DEVICE")]
    pub to: Vec<String>,
    /// The title.
    pub title: String,
    /// The body.
    pub body: Option<String>,
}

/// `beepmyphone listen`.
#[derive(Debug, Args)]
pub struct ListenArgs {
    /// The relay's URL.
    #[arg(long, env = "BEEP_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// A pairing code (needed the first time only).
    #[arg(long)]
    pub code: Option<String>,
}

/// Runs `send`; returns the process exit code.
pub async fn send(_args: SendArgs) -> i32 {
    eprintln!("not yet implemented");
    1
}

/// Runs `listen`; returns the process exit code.
pub async fn listen(_args: ListenArgs) -> i32 {
    eprintln!("not yet implemented");
    1
}
