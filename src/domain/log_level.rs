//! Log level names as `config.toml` spells them (`log.level`): validated by the settings, applied
//! by [`crate::logging`].

use slog::Level;

/// Parses a level name as `config.toml` spells it.
pub fn parse_level(name: &str) -> Option<Level> {
    match name {
        "trace" => Some(Level::Trace),
        "debug" => Some(Level::Debug),
        "info" => Some(Level::Info),
        "warning" | "warn" => Some(Level::Warning),
        "error" => Some(Level::Error),
        "critical" => Some(Level::Critical),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_name_parses_and_nothing_else() {
        for (name, level) in [
            ("trace", Level::Trace),
            ("debug", Level::Debug),
            ("info", Level::Info),
            ("warning", Level::Warning),
            ("warn", Level::Warning),
            ("error", Level::Error),
            ("critical", Level::Critical),
        ] {
            assert_eq!(parse_level(name), Some(level));
        }
        assert_eq!(parse_level("INFO"), None);
        assert_eq!(parse_level("verbose"), None);
    }
}
