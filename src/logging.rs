//! Structured logging with slog: key-value fields, JSON when stdout is not a terminal, text on a
//! terminal. Secrets never go into a log line: tokens, codes and passwords are not fields anywhere.

use std::io::IsTerminal;

use slog::{Drain, Level, Logger};

use crate::config::LogSettings;
use crate::domain::log_level::parse_level;

/// Builds the root logger. Output goes to stdout through an async drain.
pub fn build(settings: &LogSettings) -> Logger {
    let level = parse_level(&settings.level).unwrap_or(Level::Info);
    let json = match settings.format.as_str() {
        "json" => true,
        "text" => false,
        _ => !std::io::stdout().is_terminal(),
    };
    let drain: Box<dyn Drain<Ok = (), Err = slog::Never> + Send> = if json {
        let drain = slog_json::Json::new(std::io::stdout())
            .add_key_value(slog::o!(
                "ts" => slog::PushFnValue(|_, ser| ser.emit(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true))),
                "level" => slog::FnValue(|record| record.level().as_short_str()),
                "msg" => slog::PushFnValue(|record, ser| ser.emit(record.msg())),
            ))
            .build()
            .fuse();
        Box::new(drain)
    } else {
        let decorator = slog_term::TermDecorator::new().stdout().build();
        Box::new(slog_term::FullFormat::new(decorator).build().fuse())
    };
    let drain = slog_async::Async::new(drain)
        .chan_size(8_192)
        .build()
        .fuse();
    Logger::root(drain.filter_level(level).fuse(), slog::o!())
}

/// A logger that drops everything (tests that do not look at logs).
pub fn discard() -> Logger {
    Logger::root(slog::Discard, slog::o!())
}
