//! The capture config: a TOML file, by default `$XDG_CONFIG_HOME/beepmyphone/capture.toml` (else
//! `~/.config/beepmyphone/capture.toml`), annotated in `docs/capture.example.toml`.
//!
//! A missing default file means the defaults; a missing `--config FILE`, an unknown key or a bad
//! value is an error (exit 2). `BEEP_SERVER` overrides `server` and `BEEP_TOKEN` overrides
//! `token_file`; the token is never taken from the command line.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Format, Toml};
use figment::Figment;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::rules::{Rules, Urgency};
use crate::api::schemas::{is_device_id, MAX_TARGETS};
use crate::cli::client::DEFAULT_SERVER;
use crate::config::describe;
use crate::tls::client::{Trust, TrustArgs};

/// The default `max_backoff_seconds`.
pub const DEFAULT_MAX_BACKOFF_SECONDS: u64 = 60;
/// The largest `max_backoff_seconds`.
pub const MAX_MAX_BACKOFF_SECONDS: u64 = 3_600;
/// The default `max_spooled`.
pub const DEFAULT_MAX_SPOOLED: usize = 10_000;
/// The largest `max_spooled`.
pub const MAX_MAX_SPOOLED: usize = 10_000_000;

/// A config that cannot be used; the message names the file and the key.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// The file as written (every key optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    server: Option<String>,
    token_file: Option<PathBuf>,
    spool_dir: Option<PathBuf>,
    #[serde(default)]
    skip_apps: Vec<String>,
    #[serde(default)]
    only_apps: Vec<String>,
    #[serde(default)]
    min_urgency: Urgency,
    targets: Option<Vec<String>>,
    max_backoff_seconds: Option<u64>,
    max_spooled: Option<usize>,
    ca_fingerprint: Option<String>,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    e2e: bool,
}

/// The environment the config reads (a value, so that tests need not change the process's).
#[derive(Debug, Clone, Default)]
pub struct Env {
    /// `BEEP_SERVER`.
    pub server: Option<String>,
    /// `BEEP_TOKEN`.
    pub token: Option<SecretString>,
    /// `HOME`.
    pub home: Option<PathBuf>,
    /// `XDG_CONFIG_HOME`.
    pub xdg_config_home: Option<PathBuf>,
    /// `XDG_STATE_HOME`.
    pub xdg_state_home: Option<PathBuf>,
}

impl Env {
    /// This process's environment (empty values count as unset).
    pub fn from_process() -> Self {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        Self {
            server: var("BEEP_SERVER").map(|v| v.to_string_lossy().into_owned()),
            token: var("BEEP_TOKEN").map(|v| SecretString::from(v.to_string_lossy().into_owned())),
            home: var("HOME").map(PathBuf::from),
            xdg_config_home: var("XDG_CONFIG_HOME").map(PathBuf::from),
            xdg_state_home: var("XDG_STATE_HOME").map(PathBuf::from),
        }
    }

    /// An XDG base directory: the variable if it is absolute (the specification ignores a
    /// relative one), else `$HOME/<fallback>`.
    fn xdg(&self, var: Option<&PathBuf>, fallback: &str) -> Option<PathBuf> {
        var.filter(|p| p.is_absolute())
            .cloned()
            .or_else(|| self.home.as_ref().map(|home| home.join(fallback)))
    }

    /// The default config file.
    pub fn default_config_path(&self) -> Option<PathBuf> {
        self.xdg(self.xdg_config_home.as_ref(), ".config")
            .map(|dir| dir.join("beepmyphone").join("capture.toml"))
    }

    /// The default spool directory.
    pub fn default_spool_dir(&self) -> Option<PathBuf> {
        self.xdg(self.xdg_state_home.as_ref(), ".local/state")
            .map(|dir| dir.join("beepmyphone").join("capture"))
    }
}

/// The capture config, checked and with its defaults filled in.
pub struct CaptureConfig {
    /// Where it came from (`None`: built-in defaults).
    pub source: Option<PathBuf>,
    /// The relay's URL.
    pub server: String,
    /// The publish token.
    pub token: SecretString,
    /// The spool directory.
    pub spool_dir: PathBuf,
    /// The filters.
    pub rules: Rules,
    /// The publish's `targets`; `None`: every device.
    pub targets: Option<Vec<String>>,
    /// The longest wait between two tries of the head of the spool.
    pub max_backoff: Duration,
    /// Most items the spool keeps.
    pub max_spooled: usize,
    /// How the relay's certificate is checked (https only).
    pub trust: Trust,
    /// Encrypt end to end for each target device (`e2e = true`).
    pub e2e: bool,
}

impl fmt::Debug for CaptureConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaptureConfig")
            .field("source", &self.source)
            .field("server", &self.server)
            .field("token", &"<redacted>")
            .field("spool_dir", &self.spool_dir)
            .field("rules", &self.rules)
            .field("targets", &self.targets)
            .field("max_backoff", &self.max_backoff)
            .field("max_spooled", &self.max_spooled)
            .field("trust", &self.trust)
            .field("e2e", &self.e2e)
            .finish()
    }
}

impl CaptureConfig {
    /// Loads `path` (else the default file, if it exists) under `env`.
    pub fn load(path: Option<&Path>, env: &Env) -> Result<Self, ConfigError> {
        let (source, file) = match path {
            Some(path) => {
                if !path.is_file() {
                    return Err(ConfigError(format!(
                        "capture config {} does not exist",
                        path.display()
                    )));
                }
                (Some(path.to_path_buf()), read(path)?)
            }
            None => match env.default_config_path() {
                Some(path) if path.is_file() => {
                    let file = read(&path)?;
                    (Some(path), file)
                }
                _ => (None, File::default()),
            },
        };
        let bad = |key: &str, why: &str| {
            let at = source
                .as_ref()
                .map_or_else(|| "capture config".to_owned(), |p| p.display().to_string());
            ConfigError(format!("{at}: {key}: {why}"))
        };
        // Relative paths in the file are relative to the file's directory.
        let base = source
            .as_ref()
            .and_then(|p| p.parent())
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let resolve = |p: &Path| expand(p, env.home.as_deref(), &base);

        let server = env
            .server
            .clone()
            .or(file.server)
            .unwrap_or_else(|| DEFAULT_SERVER.to_owned());
        let server = crate::cli::client::normalize_server(&server)
            .map_err(|e| bad("server", &e.to_string()))?;

        let token = match (&env.token, &file.token_file) {
            (Some(token), _) => token.clone(),
            (None, Some(token_file)) => {
                read_token(&resolve(token_file)).map_err(|why| bad("token_file", &why))?
            }
            (None, None) => {
                return Err(bad(
                    "token_file",
                    "a publish token is needed: set token_file (a file holding the token) or \
                     BEEP_TOKEN; mint one with `beepmyphone token create --scope publish --name \
                     desktop`",
                ))
            }
        };
        if token.expose_secret().trim().is_empty() {
            return Err(bad("token_file", "the token is empty"));
        }

        let spool_dir = match &file.spool_dir {
            Some(dir) => resolve(dir),
            None => env.default_spool_dir().ok_or_else(|| {
                bad(
                    "spool_dir",
                    "no default (neither XDG_STATE_HOME nor HOME is set): set spool_dir",
                )
            })?,
        };

        let targets = match file.targets {
            None => None,
            Some(targets) => Some(check_targets(targets).map_err(|why| bad("targets", &why))?),
        };

        let max_backoff_seconds = file
            .max_backoff_seconds
            .unwrap_or(DEFAULT_MAX_BACKOFF_SECONDS);
        if !(1..=MAX_MAX_BACKOFF_SECONDS).contains(&max_backoff_seconds) {
            return Err(bad(
                "max_backoff_seconds",
                &format!("must be between 1 and {MAX_MAX_BACKOFF_SECONDS}"),
            ));
        }
        let max_spooled = file.max_spooled.unwrap_or(DEFAULT_MAX_SPOOLED);
        if !(1..=MAX_MAX_SPOOLED).contains(&max_spooled) {
            return Err(bad(
                "max_spooled",
                &format!("must be between 1 and {MAX_MAX_SPOOLED}"),
            ));
        }

        let trust = TrustArgs {
            ca_fingerprint: file.ca_fingerprint,
            insecure: file.insecure,
        };
        if trust.insecure && trust.ca_fingerprint.is_some() {
            return Err(bad("insecure", "cannot be combined with ca_fingerprint"));
        }
        let trust = trust
            .trust()
            .map_err(|why| bad("ca_fingerprint", &why.replace("--ca-fingerprint", "it")))?
            .unwrap_or_default();

        Ok(Self {
            source,
            server,
            token,
            spool_dir,
            rules: Rules::new(&file.skip_apps, &file.only_apps, file.min_urgency),
            targets,
            max_backoff: Duration::from_secs(max_backoff_seconds),
            max_spooled,
            trust,
            e2e: file.e2e,
        })
    }
}

/// Parses the TOML file.
fn read(path: &Path) -> Result<File, ConfigError> {
    Figment::from(Toml::file_exact(path))
        .extract()
        .map_err(|e| ConfigError(format!("{}: {}", path.display(), describe(e))))
}

/// `~/x` under `home`, a relative path under `base`, an absolute one as it is.
fn expand(path: &Path, home: Option<&Path>, base: &Path) -> PathBuf {
    if let (Ok(rest), Some(home)) = (path.strip_prefix("~"), home) {
        return home.join(rest);
    }
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

/// The token in `path` (surrounding blanks and the final newline dropped).
fn read_token(path: &Path) -> Result<SecretString, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    crate::cli::client::warn_if_exposed(path);
    Ok(SecretString::from(text.trim().to_owned()))
}

/// `targets`: 1 to [`MAX_TARGETS`] device ids or `group:NAME`s.
fn check_targets(targets: Vec<String>) -> Result<Vec<String>, String> {
    if targets.is_empty() {
        return Err("must name at least one device (leave it out for every device)".into());
    }
    if targets.len() > MAX_TARGETS {
        return Err(format!("must name at most {MAX_TARGETS} devices"));
    }
    let targets: Vec<String> = targets.into_iter().map(|t| t.trim().to_owned()).collect();
    for target in &targets {
        let group = target
            .strip_prefix(crate::api::targets::GROUP_PREFIX)
            .is_some_and(crate::api::targets::is_group_name);
        if !group && !is_device_id(target) {
            return Err(format!(
                "{target:?} is neither a device id (dev_…) nor group:NAME"
            ));
        }
    }
    Ok(targets)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEVICE: &str = "dev_01J0000000000000000000000A";

    fn env(home: &Path) -> Env {
        Env {
            home: Some(home.to_path_buf()),
            ..Env::default()
        }
    }

    fn write(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("capture.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn error(dir: &Path, text: &str) -> String {
        let path = write(dir, text);
        CaptureConfig::load(Some(&path), &env(dir))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_full_file_loads() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "tok_secret\n").unwrap();
        let path = write(
            dir.path(),
            &format!(
                r#"
server = "https://relay.example/"
token_file = "token"
spool_dir = "~/spool"
skip_apps = ["Spammy"]
only_apps = []
min_urgency = "normal"
targets = ["{DEVICE}", "group:phones"]
max_backoff_seconds = 30
max_spooled = 50
ca_fingerprint = "{}"
"#,
                "ab".repeat(32)
            ),
        );
        let config = CaptureConfig::load(Some(&path), &env(dir.path())).unwrap();
        assert_eq!(config.server, "https://relay.example");
        assert_eq!(config.token.expose_secret(), "tok_secret");
        assert_eq!(config.spool_dir, dir.path().join("spool"));
        assert_eq!(
            config.rules,
            Rules::new(&["spammy".into()], &[], Urgency::Normal)
        );
        assert_eq!(
            config.targets,
            Some(vec![DEVICE.to_owned(), "group:phones".to_owned()])
        );
        assert_eq!(config.max_backoff, Duration::from_secs(30));
        assert_eq!(config.max_spooled, 50);
        assert!(matches!(config.trust, Trust::Pinned(_)));
        let debug = format!("{config:?}");
        assert!(!debug.contains("tok_secret"), "{debug}");
    }

    #[test]
    fn defaults_and_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let mut env = env(dir.path());
        env.token = Some(SecretString::from("from-env".to_owned()));
        // No file at the default path: the defaults.
        let config = CaptureConfig::load(None, &env).unwrap();
        assert_eq!(config.source, None);
        assert_eq!(config.server, DEFAULT_SERVER);
        assert_eq!(
            config.spool_dir,
            dir.path().join(".local/state/beepmyphone/capture")
        );
        assert_eq!(config.max_backoff, Duration::from_secs(60));
        assert_eq!(config.max_spooled, DEFAULT_MAX_SPOOLED);
        assert_eq!(config.targets, None);
        assert_eq!(config.trust, Trust::System);

        // The default path, under XDG_CONFIG_HOME; BEEP_SERVER and BEEP_TOKEN win over the file.
        let xdg = dir.path().join("xdg");
        std::fs::create_dir_all(xdg.join("beepmyphone")).unwrap();
        std::fs::write(
            xdg.join("beepmyphone/capture.toml"),
            "server = \"http://file.example\"\ntoken_file = \"/nonexistent\"\n",
        )
        .unwrap();
        env.xdg_config_home = Some(xdg.clone());
        env.xdg_state_home = Some(dir.path().join("state"));
        env.server = Some("http://env.example:9".into());
        let config = CaptureConfig::load(None, &env).unwrap();
        assert_eq!(config.source, Some(xdg.join("beepmyphone/capture.toml")));
        assert_eq!(config.server, "http://env.example:9");
        assert_eq!(config.token.expose_secret(), "from-env");
        assert_eq!(
            config.spool_dir,
            dir.path().join("state/beepmyphone/capture")
        );

        // A relative XDG variable is ignored, as the specification says.
        env.xdg_config_home = Some(PathBuf::from("relative"));
        assert_eq!(
            env.default_config_path(),
            Some(dir.path().join(".config/beepmyphone/capture.toml"))
        );
    }

    #[test]
    fn the_shipped_example_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), include_str!("../../docs/capture.example.toml"));
        let mut env = env(dir.path());
        env.token = Some(SecretString::from("t".to_owned()));
        let config = CaptureConfig::load(Some(&path), &env).unwrap();
        assert_eq!(config.server, DEFAULT_SERVER);
        assert_eq!(config.max_spooled, DEFAULT_MAX_SPOOLED);
        assert_eq!(
            config.max_backoff,
            Duration::from_secs(DEFAULT_MAX_BACKOFF_SECONDS)
        );
    }

    #[test]
    fn bad_files_are_refused_with_the_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "t").unwrap();
        let t = "token_file = \"token\"\n";
        assert!(error(dir.path(), &format!("{t}colour = 1")).contains("colour"));
        assert!(error(dir.path(), &format!("{t}min_urgency = \"high\"")).contains("min_urgency"));
        assert!(error(dir.path(), &format!("{t}server = \"ftp://x\"")).contains("server"));
        assert!(error(dir.path(), &format!("{t}targets = []")).contains("targets"));
        assert!(error(dir.path(), &format!("{t}targets = [\"phone\"]")).contains("phone"));
        assert!(error(dir.path(), &format!("{t}max_backoff_seconds = 0"))
            .contains("max_backoff_seconds"));
        assert!(error(dir.path(), &format!("{t}max_spooled = 0")).contains("max_spooled"));
        assert!(
            error(dir.path(), &format!("{t}ca_fingerprint = \"nope\"")).contains("ca_fingerprint")
        );
        assert!(error(
            dir.path(),
            &format!(
                "{t}insecure = true\nca_fingerprint = \"{}\"",
                "ab".repeat(32)
            )
        )
        .contains("insecure"));
        assert!(error(dir.path(), "server = [").contains("capture.toml"));
        assert!(error(dir.path(), "token_file = \"missing\"").contains("token_file"));
        std::fs::write(dir.path().join("empty"), "\n").unwrap();
        assert!(error(dir.path(), "token_file = \"empty\"").contains("empty"));
        assert!(error(dir.path(), "skip_apps = []").contains("BEEP_TOKEN"));
        let missing = dir.path().join("nope.toml");
        let e = CaptureConfig::load(Some(&missing), &env(dir.path())).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
    }
}
