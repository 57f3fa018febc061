//! Structured logging with slog: key-value fields, JSON when stdout is not a terminal, text on a
//! terminal. Secrets never go into a log line: tokens, codes and passwords are not fields anywhere.
//!
//! Code below the API (sessions, rate limits) that logs about a request but only holds a
//! component's logger tags its lines with the request's id through [`request_scoped`], which reads
//! the task-local of [`crate::request_id`]; neither depends on the API layer.

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
        Box::new(json_drain(std::io::stdout()).fuse())
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

/// The JSON lines format: `ts`, `level`, `msg`, then the line's and its loggers' keys.
fn json_drain<W: std::io::Write>(writer: W) -> slog_json::Json<W> {
    slog_json::Json::new(writer)
        .add_key_value(slog::o!(
            "ts" => slog::PushFnValue(|_, ser| ser.emit(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true))),
            "level" => slog::FnValue(|record| record.level().as_short_str()),
            "msg" => slog::PushFnValue(|record, ser| ser.emit(record.msg())),
        ))
        .build()
}

/// A synchronous logger writing the JSON format into `writer` at `level` and above: each line is
/// written before the logging call returns (tests capture the log with it).
pub fn json_to<W: std::io::Write + Send + 'static>(writer: W, level: Level) -> Logger {
    let drain = std::sync::Mutex::new(json_drain(writer)).fuse();
    Logger::root(drain.filter_level(level).fuse(), slog::o!())
}

/// A logger that drops everything (tests that do not look at logs).
pub fn discard() -> Logger {
    Logger::root(slog::Discard, slog::o!())
}

/// `log` with the `request_id` of the request this task is serving, if it serves one. Code that
/// logs about a request but only holds a component's logger calls this; it is cheap enough for
/// the rare lines it is used for (each call builds a child logger).
pub fn request_scoped(log: &Logger) -> Logger {
    match crate::request_id::current_request_id() {
        Some(id) => log.new(slog::o!("request_id" => id)),
        None => log.clone(),
    }
}
