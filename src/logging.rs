//! Structured logging with slog: key-value fields, JSON when stdout is not a terminal, text on a
//! terminal. Secrets never go into a log line: tokens, codes and passwords are not fields anywhere.
//!
//! [`build`] makes the root logger from `[log]`: a threshold per module ([`ModuleLevels`], the
//! longest matching prefix of the line's module path wins), then an async drain writing to stdout
//! and, if `log.file` is set, in JSON to a file that `file-rotate` rotates by size and the
//! [`RotatingFile`] writer here by UTC hour or day, naming rotated files by the UTC time, keeping the newest `file_keep` rotated files
//! and none older than `file_max_age_days`.
//!
//! Code below the API (sessions, rate limits) that logs about a request but only holds a
//! component's logger tags its lines with the request's id through [`request_scoped`], which reads
//! the task-local of [`crate::request_id`]; neither depends on the API layer.

use std::fs::OpenOptions;
use std::io::{IsTerminal, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use file_rotate::suffix::{
    AppendTimestamp, FileLimit, Representation, SuffixScheme, TimestampSuffix,
};
use file_rotate::{compression::Compression, ContentLimit, FileRotate};
use slog::{Drain, Level, Logger};

use crate::config::LogSettings;
use crate::domain::log_level::parse_level;

type BoxedDrain = Box<dyn Drain<Ok = (), Err = slog::Never> + Send>;

/// Builds the root logger from `[log]` (checked by the settings). Output goes through an async
/// drain to stdout and/or the log file; the error names a log file that cannot be opened.
pub fn build(settings: &LogSettings) -> Result<Logger, String> {
    let stdout: Option<BoxedDrain> = settings.stdout.then(|| {
        let json = match settings.format.as_str() {
            "json" => true,
            "text" => false,
            _ => !std::io::stdout().is_terminal(),
        };
        if json {
            Box::new(json_drain(std::io::stdout()).fuse()) as BoxedDrain
        } else {
            let decorator = slog_term::TermDecorator::new().stdout().build();
            Box::new(slog_term::FullFormat::new(decorator).build().fuse())
        }
    });
    let file: Option<BoxedDrain> = if settings.file.is_empty() {
        None
    } else {
        let writer = RotatingFile::open(settings, Box::new(Utc::now))
            .map_err(|e| format!("log.file {}: {e}", settings.file))?;
        // A full disk must not take the relay down: a line that cannot be written is dropped.
        Some(Box::new(json_drain(writer).ignore_res()))
    };
    let drain: BoxedDrain = match (stdout, file) {
        (Some(stdout), Some(file)) => Box::new(slog::Duplicate::new(stdout, file).ignore_res()),
        (Some(only), None) | (None, Some(only)) => only,
        (None, None) => Box::new(slog::Discard),
    };
    let drain = slog_async::Async::new(drain)
        .chan_size(8_192)
        .build()
        .fuse();
    Ok(Logger::root(ModuleLevels::new(drain, settings), slog::o!()))
}

/// Passes a line when its level reaches the threshold of its module: the level of the longest
/// `log.modules` prefix of the line's module path (`beepmyphone_actors::queue::actor`), matched
/// at a `::` boundary, else `log.level`. Lines below it are dropped before they are formatted.
pub struct ModuleLevels<D> {
    drain: D,
    default: Level,
    /// Longest prefix first.
    rules: Vec<(String, Level)>,
    /// The most verbose of all the thresholds.
    most_verbose: Level,
}

impl<D> ModuleLevels<D> {
    /// Filters `drain` by the levels of `settings` (unknown names count as `info`; the settings
    /// reject them).
    pub fn new(drain: D, settings: &LogSettings) -> Self {
        let default = parse_level(&settings.level).unwrap_or(Level::Info);
        let mut rules: Vec<(String, Level)> = settings
            .modules
            .iter()
            .map(|(module, level)| {
                (
                    module.trim_end_matches(':').to_owned(),
                    parse_level(level).unwrap_or(Level::Info),
                )
            })
            .collect();
        rules.sort_by_key(|rule| std::cmp::Reverse(rule.0.len()));
        let most_verbose = rules.iter().map(|(_, level)| *level).fold(default, |a, b| {
            if b.is_at_least(a) {
                a
            } else {
                b
            }
        });
        Self {
            drain,
            default,
            rules,
            most_verbose,
        }
    }

    /// The threshold for lines from `module`.
    fn threshold(&self, module: &str) -> Level {
        self.rules
            .iter()
            .find(|(prefix, _)| {
                module
                    .strip_prefix(prefix.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
            })
            .map_or(self.default, |(_, level)| *level)
    }
}

impl<D: Drain<Ok = ()>> Drain for ModuleLevels<D> {
    type Ok = ();
    type Err = D::Err;

    fn log(&self, record: &slog::Record, values: &slog::OwnedKVList) -> Result<(), D::Err> {
        if record.level().is_at_least(self.threshold(record.module())) {
            self.drain.log(record, values)
        } else {
            Ok(())
        }
    }

    fn is_enabled(&self, level: Level) -> bool {
        level.is_at_least(self.most_verbose) && self.drain.is_enabled(level)
    }
}

/// The rotated files' suffix: the UTC time of the rotation, a `.N` counter after it when the name
/// is taken (several rotations in one second, or a clock set back).
const SUFFIX_FORMAT: &str = "%Y%m%dT%H%M%S";

/// file-rotate's timestamp suffixes, named in UTC (file-rotate's own use local time, which repeats
/// an hour when daylight saving time ends) and retained by count and by age together.
struct Retention {
    /// Parses the suffixes of existing files.
    timestamps: AppendTimestamp,
    keep: usize,
    max_age: Option<chrono::Duration>,
}

impl SuffixScheme for Retention {
    type Repr = TimestampSuffix;

    fn rotate_file(
        &mut self,
        basepath: &Path,
        newest_suffix: Option<&TimestampSuffix>,
        suffix: &Option<TimestampSuffix>,
    ) -> std::io::Result<TimestampSuffix> {
        if suffix.is_some() {
            // file-rotate asks this only to move a file out of the way of a taken name, and the
            // names below are never taken.
            return Err(std::io::Error::other("a rotated log file's name is taken"));
        }
        let timestamp = Utc::now().format(SUFFIX_FORMAT).to_string();
        let number = newest_suffix
            .filter(|newest| newest.timestamp == timestamp)
            .map(|newest| newest.number.unwrap_or(0) + 1);
        let mut next = TimestampSuffix { timestamp, number };
        let taken = |s: &TimestampSuffix| {
            let path = s.to_path(basepath);
            path.exists() || PathBuf::from(format!("{}.gz", path.display())).exists()
        };
        while taken(&next) {
            next.number = Some(next.number.map_or(1, |n| n + 1));
        }
        Ok(next)
    }

    fn parse(&self, suffix: &str) -> Option<TimestampSuffix> {
        self.timestamps.parse(suffix)
    }

    fn too_old(&self, suffix: &TimestampSuffix, file_number: usize) -> bool {
        file_number >= self.keep
            || self.max_age.is_some_and(|age| {
                suffix.timestamp < (Utc::now() - age).format(SUFFIX_FORMAT).to_string()
            })
    }
}

/// How often the log file rotates by time.
#[derive(Clone, Copy)]
enum Every {
    Hour,
    Day,
}

impl Every {
    /// The number of the UTC hour or day `at` falls in.
    fn period(self, at: DateTime<Utc>) -> i64 {
        let length = match self {
            Every::Hour => 3_600,
            Every::Day => 86_400,
        };
        at.timestamp().div_euclid(length)
    }
}

/// The log file: whole lines only (a line is never split across two files), rotated by
/// file-rotate when it exceeds `file_max_bytes` and here when the UTC hour or day changes.
pub struct RotatingFile {
    file: FileRotate<Retention>,
    every: Option<Every>,
    /// The hour or day of the lines in the current file.
    period: i64,
    clock: Box<dyn Fn() -> DateTime<Utc> + Send>,
    /// The start of a line not yet complete.
    pending: Vec<u8>,
}

impl RotatingFile {
    /// Opens (creating it and its directory, owner-only) the file `settings.file`; `clock` tells
    /// the time for rotation by hour or day.
    pub fn open(
        settings: &LogSettings,
        clock: Box<dyn Fn() -> DateTime<Utc> + Send>,
    ) -> std::io::Result<Self> {
        let path = std::path::absolute(PathBuf::from(&settings.file))?;
        if path.file_name().is_none() {
            return Err(std::io::Error::other("not a file name"));
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut options = OpenOptions::new();
        options.read(true).create(true).append(true).mode(0o600);
        // file-rotate does not report a file it cannot open (nor panics on it): check here.
        let existing = options.open(&path)?;
        let every = match settings.file_rotate_every.as_str() {
            "hourly" => Some(Every::Hour),
            "daily" => Some(Every::Day),
            _ => None,
        };
        // A file left by an earlier run belongs to the period it was last written in.
        let written = existing
            .metadata()
            .and_then(|m| m.modified())
            .map(DateTime::<Utc>::from)
            .unwrap_or_else(|_| clock());
        let period = every.map_or(0, |e| e.period(written.min(clock())));
        let limit = match settings.file_max_bytes {
            0 => ContentLimit::None,
            bytes => ContentLimit::BytesSurpassed(usize::try_from(bytes).unwrap_or(usize::MAX)),
        };
        let retention = Retention {
            timestamps: AppendTimestamp::with_format(
                SUFFIX_FORMAT,
                FileLimit::Unlimited,
                file_rotate::suffix::DateFrom::Now,
            ),
            keep: settings.file_keep,
            max_age: (settings.file_max_age_days > 0)
                .then(|| chrono::Duration::days(i64::from(settings.file_max_age_days))),
        };
        let file = FileRotate::new(&path, retention, limit, Compression::None, Some(options));
        Ok(Self {
            file,
            every,
            period,
            clock,
            pending: Vec::with_capacity(512),
        })
    }
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(buf);
        if let Some(end) = self.pending.iter().rposition(|&b| b == b'\n') {
            if let Some(every) = self.every {
                let now = every.period((self.clock)());
                if now != self.period {
                    self.period = now;
                    self.file.rotate()?;
                }
            }
            // One write per batch of whole lines: file-rotate checks the size before each write,
            // so it never rotates inside a line.
            let result = self.file.write_all(&self.pending[..=end]);
            self.pending.drain(..=end);
            result?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
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

/// [`json_to`] with the thresholds of `settings` (`level` and `modules`) instead of one level.
pub fn json_filtered_to<W: std::io::Write + Send + 'static>(
    writer: W,
    settings: &LogSettings,
) -> Logger {
    let drain = std::sync::Mutex::new(json_drain(writer)).fuse();
    Logger::root(ModuleLevels::new(drain, settings), slog::o!())
}

/// A logger that drops everything (tests that do not look at logs).
pub fn discard() -> Logger {
    Logger::root(slog::Discard, slog::o!())
}

/// `log` with the `request_id` and `trace_id` of the request this task is serving, if it serves
/// one. Code that logs about a request but only holds a component's logger calls this; it is cheap
/// enough for the rare lines it is used for (each call builds a child logger).
pub fn request_scoped(log: &Logger) -> Logger {
    match crate::request_id::current_request_id() {
        Some(id) => log.new(slog::o!(
            "request_id" => id,
            "trace_id" => crate::request_id::current_trace_id(),
        )),
        None => log.clone(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Capture {
        fn messages(&self) -> Vec<String> {
            String::from_utf8(self.0.lock().unwrap().clone())
                .unwrap()
                .lines()
                .map(|l| {
                    serde_json::from_str::<serde_json::Value>(l).unwrap()["msg"]
                        .as_str()
                        .unwrap()
                        .to_owned()
                })
                .collect()
        }
    }

    /// Logs `msg` at `level` as if from code in `module`.
    fn log_from(log: &Logger, module: &'static str, level: Level, msg: &str) {
        let location = slog::RecordLocation {
            file: file!(),
            line: line!(),
            column: 0,
            function: "",
            module,
        };
        let stat = slog::RecordStatic {
            location: &location,
            tag: "",
            level,
        };
        log.log(&slog::Record::new(
            &stat,
            &format_args!("{msg}"),
            slog::b!(),
        ));
    }

    #[test]
    fn each_module_takes_the_level_of_its_longest_matching_prefix() {
        let settings = LogSettings {
            level: "info".into(),
            modules: [
                ("beepmyphone_actors::queue", "debug"),
                ("beepmyphone::api", "warning"),
                ("beepmyphone::api::routes::notifications", "trace"),
            ]
            .into_iter()
            .map(|(m, l)| (m.to_owned(), l.to_owned()))
            .collect(),
            ..LogSettings::default()
        };
        let out = Capture::default();
        let log = json_filtered_to(out.clone(), &settings);
        assert!(log.is_enabled(Level::Trace), "the most verbose rule counts");

        let queue = "beepmyphone_actors::queue::actor";
        log_from(&log, queue, Level::Debug, "queue debug kept");
        log_from(&log, queue, Level::Trace, "queue trace dropped");
        log_from(
            &log,
            "beepmyphone::api::middleware",
            Level::Info,
            "api info dropped",
        );
        log_from(
            &log,
            "beepmyphone::api::middleware",
            Level::Warning,
            "api warning kept",
        );
        log_from(&log, "beepmyphone::api", Level::Error, "api itself kept");
        let publish = "beepmyphone::api::routes::notifications";
        log_from(&log, publish, Level::Trace, "longest prefix wins");
        // A prefix matches whole path segments only: `beepmyphone::apiary` is not under `api`.
        log_from(
            &log,
            "beepmyphone::apiary",
            Level::Info,
            "other module at default",
        );
        log_from(
            &log,
            "beepmyphone_actors::batcher",
            Level::Debug,
            "default drops debug",
        );
        assert_eq!(
            out.messages(),
            [
                "queue debug kept",
                "api warning kept",
                "api itself kept",
                "longest prefix wins",
                "other module at default",
            ]
        );
    }

    #[test]
    fn without_rules_the_level_applies_everywhere() {
        let settings = LogSettings {
            level: "warning".into(),
            ..LogSettings::default()
        };
        let out = Capture::default();
        let log = json_filtered_to(out.clone(), &settings);
        assert!(!log.is_enabled(Level::Info));
        slog::info!(log, "dropped");
        slog::warn!(log, "kept");
        assert_eq!(out.messages(), ["kept"]);
    }

    fn file_settings(dir: &Path) -> LogSettings {
        LogSettings {
            file: dir.join("logs/relay.log").to_string_lossy().into_owned(),
            file_max_bytes: 0,
            file_rotate_every: "never".into(),
            file_keep: 3,
            file_max_age_days: 0,
            ..LogSettings::default()
        }
    }

    /// The log files in `dir/logs`, oldest rotated first and the live file last, with their lines.
    fn files(dir: &Path) -> Vec<(String, Vec<serde_json::Value>)> {
        let mut names: Vec<String> = std::fs::read_dir(dir.join("logs"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        // Same-second suffixes get a `.N` counter: sort by (timestamp, N), the live file last.
        names.sort_by_key(|n| {
            let suffix = n.strip_prefix("relay.log").unwrap().trim_start_matches('.');
            let (stamp, n) = suffix.split_once('.').unwrap_or((suffix, "0"));
            (
                suffix.is_empty(),
                stamp.to_owned(),
                n.parse::<u32>().unwrap(),
            )
        });
        names
            .into_iter()
            .map(|name| {
                let text = std::fs::read_to_string(dir.join("logs").join(&name)).unwrap();
                assert!(
                    text.is_empty() || text.ends_with('\n'),
                    "{name}: whole lines"
                );
                let lines = text
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{name}: {e}: {l}")))
                    .collect();
                (name, lines)
            })
            .collect()
    }

    #[test]
    fn the_file_rotates_by_size_and_keeps_the_newest_files() {
        let dir = tempfile::tempdir().unwrap();
        let settings = LogSettings {
            file_max_bytes: 300,
            ..file_settings(dir.path())
        };
        let file = RotatingFile::open(&settings, Box::new(Utc::now)).unwrap();
        let log = Logger::root(Mutex::new(json_drain(file)).fuse(), slog::o!());
        for n in 0..40 {
            slog::info!(log, "line"; "n" => n, "padding" => "x".repeat(40));
        }
        let files = files(dir.path());
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            files.len(),
            4,
            "the live file and 3 rotated ones: {names:?}"
        );
        assert_eq!(names[3], "relay.log");
        let numbers: Vec<i64> = files
            .iter()
            .flat_map(|(_, lines)| lines.iter().map(|l| l["n"].as_i64().unwrap()))
            .collect();
        // Rotated files hold more than the limit by at most a line; the oldest lines are gone,
        // the rest are all there, in order.
        for (name, lines) in &files[..3] {
            let bytes = std::fs::metadata(dir.path().join("logs").join(name))
                .unwrap()
                .len();
            assert!(bytes > 300 && bytes < 300 + 200, "{name}: {bytes} bytes");
            assert!(!lines.is_empty());
        }
        assert_eq!(*numbers.last().unwrap(), 39);
        assert!(numbers[0] > 0, "the oldest files were deleted: {numbers:?}");
        assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{numbers:?}");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join("logs/relay.log"))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o077, 0, "owner-only: {mode:o}");
    }

    #[test]
    fn the_file_rotates_when_the_day_changes_and_old_files_age_out() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("logs")).unwrap();
        // A rotated file from long ago, and one from an hour ago.
        let old = dir.path().join("logs/relay.log.20200101T000000");
        std::fs::write(&old, "{\"msg\":\"old\"}\n").unwrap();
        let recent = format!(
            "relay.log.{}",
            (Utc::now() - chrono::Duration::hours(1)).format(SUFFIX_FORMAT)
        );
        std::fs::write(
            dir.path().join("logs").join(&recent),
            "{\"msg\":\"recent\"}\n",
        )
        .unwrap();
        let settings = LogSettings {
            file_rotate_every: "daily".into(),
            file_keep: 10,
            file_max_age_days: 30,
            ..file_settings(dir.path())
        };
        let now = Arc::new(AtomicI64::new(Utc::now().timestamp()));
        let clock = {
            let now = now.clone();
            Box::new(move || DateTime::from_timestamp(now.load(Ordering::SeqCst), 0).unwrap())
        };
        let file = RotatingFile::open(&settings, clock).unwrap();
        let log = Logger::root(Mutex::new(json_drain(file)).fuse(), slog::o!());
        slog::info!(log, "today");
        slog::info!(log, "still today");
        assert_eq!(files(dir.path()).len(), 3, "no rotation within the day");
        now.fetch_add(86_400, Ordering::SeqCst);
        slog::info!(log, "tomorrow");

        let files = files(dir.path());
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert!(
            !old.exists(),
            "older than 30 days: deleted at the rotation: {names:?}"
        );
        assert_eq!(names.len(), 3, "{names:?}");
        assert_eq!(names[0], recent, "younger than 30 days: kept");
        let msgs = |i: usize| -> Vec<&str> {
            files[i]
                .1
                .iter()
                .map(|l| l["msg"].as_str().unwrap())
                .collect()
        };
        assert_eq!(msgs(1), ["today", "still today"]);
        assert_eq!(msgs(2), ["tomorrow"]);
    }

    #[test]
    fn a_rotated_name_that_is_taken_is_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("relay.log");
        let mut retention = Retention {
            timestamps: AppendTimestamp::with_format(
                SUFFIX_FORMAT,
                FileLimit::Unlimited,
                file_rotate::suffix::DateFrom::Now,
            ),
            keep: 10,
            max_age: None,
        };
        let stamp = Utc::now().format(SUFFIX_FORMAT).to_string();
        // Files of this second that file-rotate does not know as the newest (a clock set back).
        for name in [format!("relay.log.{stamp}"), format!("relay.log.{stamp}.1")] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        let next = retention.rotate_file(&base, None, &None).unwrap();
        if next.timestamp == stamp {
            assert_eq!(next.number, Some(2), "{next}");
        } else {
            assert_eq!(next.number, None, "the second ticked: {next}");
        }
        assert!(!next.to_path(&base).exists());
        // A request to move a file out of the way is refused, not a panic.
        assert!(retention.rotate_file(&base, None, &Some(next)).is_err());
    }

    #[test]
    fn a_file_that_cannot_be_opened_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("not-a-dir");
        std::fs::write(&blocker, "").unwrap();
        let settings = LogSettings {
            file: blocker.join("relay.log").to_string_lossy().into_owned(),
            ..LogSettings::default()
        };
        let error = build(&settings).expect_err("an error");
        assert!(error.starts_with("log.file "), "{error}");
    }
}
