//! The result of a run: one [`Report`], printed as a human summary and written as JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::stats::{PerSecond, Percentiles, SecondStats};

/// The settings a run used (after the scenario's defaults).
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunSettings {
    /// Devices paired and connected.
    pub devices: usize,
    /// Publisher tasks.
    pub publishers: usize,
    /// `open` (fixed rate) or `closed` (as fast as possible).
    pub pacing: &'static str,
    /// Target rate of an open-loop run, notifications per second.
    pub rate: Option<f64>,
    /// Requests in flight per publisher (closed loop) or their cap (open loop).
    pub concurrency: usize,
    /// Notifications per request.
    pub batch: usize,
    /// Consecutive notifications per device.
    pub burst: u64,
    /// Seconds of publishing (or of holding sockets), if bounded by time.
    pub duration_seconds: Option<f64>,
    /// Notifications to publish, if bounded by count.
    pub count: Option<u64>,
    /// Seconds allowed for deliveries after publishing.
    pub drain_seconds: f64,
    /// OS threads of the load generator.
    pub threads: usize,
}

/// Counts of notifications.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    /// Notifications sent in publish requests.
    pub published: u64,
    /// Of those, answered 202.
    pub accepted: u64,
    /// Distinct notifications of this run received by the devices.
    pub delivered: u64,
    /// Receptions of a notification already received.
    pub duplicates: u64,
    /// Accepted but not received within the drain timeout (must be 0).
    pub lost: u64,
    /// The first lost sequence numbers.
    pub lost_sample: Vec<u64>,
    /// Received although their publish got no 202 (timed out, for instance).
    pub unconfirmed: u64,
    /// Notifications received that were not this run's (left over from an earlier one).
    pub foreign: u64,
}

/// Rates.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Throughput {
    /// Seconds from the first publish request to the last answer.
    pub publish_seconds: f64,
    /// Accepted notifications per second of publishing.
    pub accepted_per_second: f64,
    /// Seconds from the first publish request to the last notification received.
    pub delivery_seconds: f64,
    /// Distinct notifications received per second of `delivery_seconds`.
    pub delivered_per_second: f64,
}

/// Device sockets.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Connections {
    /// Connects tried.
    pub attempted: u64,
    /// Connects that reached `hello`.
    pub established: u64,
    /// Connects that failed.
    pub failed: u64,
    /// Sockets the relay closed during the run.
    pub closed_by_server: u64,
    /// Seconds to establish them all.
    pub setup_seconds: f64,
    /// Connects per second.
    pub per_second: f64,
}

/// Frames on the device sockets.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Frames {
    /// `notifications` frames received.
    pub notification_frames: u64,
    /// Their payload bytes.
    pub notification_bytes: u64,
    /// Notifications in them (duplicates included).
    pub notifications: u64,
    /// Frames per notification (1 when unbatched).
    pub frames_per_notification: f64,
    /// Payload bytes per notification.
    pub bytes_per_notification: f64,
}

/// The relay's resident memory, in KiB (from `/proc/PID/status`, with `--pid`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Rss {
    /// After pairing, before any socket was opened.
    pub before_connect_kb: Option<u64>,
    /// With every socket open.
    pub after_connect_kb: Option<u64>,
    /// At the end of the run (sockets still open).
    pub end_kb: Option<u64>,
    /// RSS growth while connecting ÷ sockets.
    pub kb_per_connection: Option<f64>,
}

/// The backlog scenario: how fast stored notifications flow once the devices connect.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Backlog {
    /// Seconds the restart command took (and the relay to be ready), if one was given.
    pub restart_seconds: Option<f64>,
    /// Milliseconds from starting the connects to the first notification received.
    pub first_received_ms: Option<f64>,
    /// Milliseconds from starting the connects to the last notification received.
    pub last_received_ms: Option<f64>,
    /// Notifications per second between the first and the last.
    pub flow_per_second: Option<f64>,
}

/// How well an open-loop publisher kept to its schedule.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Schedule {
    /// Requests that left more than 1 ms after their intended time.
    pub late_sends: u64,
    /// Actual minus intended send time, µs.
    pub send_lag_us: Percentiles,
}

/// Several relays: latency split by whether a notification was published on the relay holding
/// its device's socket or on another (which commits it, then wakes the holder over Redis).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Relays {
    /// Publish (intended send time) → receive, published on the device's own relay, µs.
    pub same_relay_latency_us: Percentiles,
    /// Publish (intended send time) → receive, published on another relay, µs.
    pub cross_relay_latency_us: Percentiles,
}

/// One second of publishing: what was meant to be sent in it, and how it arrived.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Second {
    /// Seconds since publishing started.
    pub at: u64,
    /// Receptions, those later than 5 ms, the worst latency.
    #[serde(flatten)]
    pub stats: SecondStats,
}

impl Second {
    /// The seconds of `per_second` from `from_us` (µs since the bench's start) on.
    pub fn all(per_second: &PerSecond, from_us: u64) -> Vec<Second> {
        per_second
            .since(from_us)
            .into_iter()
            .map(|(at, stats)| Second { at, stats })
            .collect()
    }
}

/// The summary's line on the seconds: how many had late receptions, and the worst three.
fn seconds_line(seconds: &[Second]) -> Option<String> {
    if seconds.len() < 2 {
        return None;
    }
    let late = seconds.iter().filter(|s| s.stats.late > 0).count();
    let mut worst: Vec<&Second> = seconds.iter().collect();
    worst.sort_by(|a, b| b.stats.max_us.cmp(&a.stats.max_us).then(a.at.cmp(&b.at)));
    let worst: Vec<String> = worst
        .iter()
        .take(3)
        .map(|s| {
            format!(
                "+{} s max {} ms ({} of {} late)",
                s.at,
                ms(s.stats.max_us),
                s.stats.late,
                s.stats.received
            )
        })
        .collect();
    Some(format!(
        "  seconds with receptions over 5 ms: {late} of {}; worst: {}\n",
        seconds.len(),
        worst.join(", ")
    ))
}

/// Everything a run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// `connections`, `throughput`, `latency`, `burst` or `backlog`.
    pub scenario: &'static str,
    /// This run's id (in every notification's title).
    pub run_id: String,
    /// The relays' URLs, in `--server` order: pairing went through the first, device i held its
    /// socket on server i mod n, publisher j published on server (j + 1) mod n.
    pub servers: Vec<String>,
    /// When the run started, RFC 3339.
    pub started_at: String,
    /// The settings used.
    pub settings: RunSettings,
    /// True when nothing was lost and every socket connected.
    pub ok: bool,
    /// Notification counts.
    pub counts: Counts,
    /// Rates.
    pub throughput: Throughput,
    /// Publish (intended send time) → device receive, µs.
    pub latency_us: Percentiles,
    /// Publish (actual send time) → device receive, µs: without the load generator's own
    /// scheduling delay.
    pub latency_from_send_us: Percentiles,
    /// With several relays: the latency of same-relay and cross-relay deliveries.
    pub relays: Option<Relays>,
    /// Time to the publish response, µs.
    pub publish_response_us: Percentiles,
    /// Socket set-up, TCP connect to `hello`, µs.
    pub connect_us: Percentiles,
    /// Sockets.
    pub connections: Connections,
    /// Frames.
    pub frames: Frames,
    /// Failures by kind (`HTTP 503`, `send: …`, `ws connect: …`).
    pub errors: BTreeMap<String, u64>,
    /// The relay's memory.
    pub rss: Rss,
    /// Open-loop schedule keeping, if open loop.
    pub schedule: Option<Schedule>,
    /// Backlog flow, for the backlog scenario.
    pub backlog: Option<Backlog>,
    /// Receptions by the second of their intended send, from the start of publishing.
    pub seconds: Vec<Second>,
    /// The file-descriptor limit the bench ran with.
    pub nofile_limit: Option<u64>,
}

/// `part / whole`, or 0 when `whole` is 0; rounded to 3 decimals.
pub fn ratio(part: f64, whole: f64) -> f64 {
    if whole > 0.0 {
        (part / whole * 1_000.0).round() / 1_000.0
    } else {
        0.0
    }
}

/// `VmRSS` of a `/proc/PID/status` text, in KiB.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse().ok())
}

/// The relay's RSS in KiB, if `pid` is given and readable.
pub fn read_rss_kb(pid: Option<u32>) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    parse_vm_rss(&status)
}

fn ms(us: u64) -> String {
    format!("{:.3}", us as f64 / 1_000.0)
}

fn percentile_line(name: &str, p: &Percentiles) -> String {
    if p.count == 0 {
        return format!("  {name:<22} (none)\n");
    }
    format!(
        "  {name:<22} p50 {} p90 {} p99 {} p99.9 {} max {} ms  (n={})\n",
        ms(p.p50),
        ms(p.p90),
        ms(p.p99),
        ms(p.p999),
        ms(p.max),
        p.count
    )
}

fn kb(value: Option<u64>) -> String {
    value.map_or_else(
        || "-".to_owned(),
        |v| format!("{:.1} MiB", v as f64 / 1_024.0),
    )
}

impl Report {
    /// The human summary.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let s = &self.settings;
        let against = match self.servers.as_slice() {
            [one] => one.clone(),
            many => format!(
                "{} relays: {} (pairing through the first)",
                many.len(),
                many.join(", ")
            ),
        };
        let _ = writeln!(
            out,
            "beepmyphone bench {} (run {}) against {against}",
            self.scenario, self.run_id
        );
        if self.scenario == "connections" {
            let _ = writeln!(out, "  {} devices, {} threads", s.devices, s.threads);
        } else {
            let pacing = match s.rate {
                Some(rate) => format!("open loop at {rate}/s"),
                None => format!("closed loop, {} in flight per publisher", s.concurrency),
            };
            let _ = writeln!(
                out,
                "  {} devices, {} publishers, {pacing}, batch {}, burst {}, {} threads",
                s.devices, s.publishers, s.batch, s.burst, s.threads
            );
        }
        let c = &self.connections;
        let _ = writeln!(
            out,
            "  sockets: {} established, {} failed, {} closed by the relay; set up in {:.2} s ({:.0}/s)",
            c.established, c.failed, c.closed_by_server, c.setup_seconds, c.per_second
        );
        out.push_str(&percentile_line("connect (to hello)", &self.connect_us));
        let n = &self.counts;
        if n.published > 0 || n.delivered > 0 {
            let t = &self.throughput;
            let _ = writeln!(
                out,
                "  published {} ({} accepted) in {:.2} s: {:.0}/s accepted; delivered {} in {:.2} s: {:.0}/s",
                n.published,
                n.accepted,
                t.publish_seconds,
                t.accepted_per_second,
                n.delivered,
                t.delivery_seconds,
                t.delivered_per_second
            );
            let _ = writeln!(
                out,
                "  lost {}  duplicates {}  unconfirmed {}  foreign {}",
                n.lost, n.duplicates, n.unconfirmed, n.foreign
            );
            if !n.lost_sample.is_empty() {
                let _ = writeln!(out, "  first lost: {:?}", n.lost_sample);
            }
            out.push_str(&percentile_line("latency", &self.latency_us));
            if let Some(relays) = &self.relays {
                // Published on the relay holding the device's socket, or on another one.
                out.push_str(&percentile_line(
                    "  same relay",
                    &relays.same_relay_latency_us,
                ));
                out.push_str(&percentile_line(
                    "  across relays",
                    &relays.cross_relay_latency_us,
                ));
            }
            if let Some(line) = seconds_line(&self.seconds) {
                out.push_str(&line);
            }
            out.push_str(&percentile_line(
                "latency from send",
                &self.latency_from_send_us,
            ));

            out.push_str(&percentile_line(
                "publish response",
                &self.publish_response_us,
            ));
            let f = &self.frames;
            let _ = writeln!(
                out,
                "  frames/notification {:.3}  bytes/notification {:.1}  ({} frames, {} bytes)",
                f.frames_per_notification,
                f.bytes_per_notification,
                f.notification_frames,
                f.notification_bytes
            );
        }
        if let Some(schedule) = &self.schedule {
            let _ = writeln!(
                out,
                "  schedule: {} sends more than 1 ms late",
                schedule.late_sends
            );
            out.push_str(&percentile_line("send lag", &schedule.send_lag_us));
        }
        if let Some(b) = &self.backlog {
            let f = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
            let _ = writeln!(
                out,
                "  backlog: restart {} s; first received {} ms, last {} ms after connecting; {} /s",
                f(b.restart_seconds),
                f(b.first_received_ms),
                f(b.last_received_ms),
                f(b.flow_per_second)
            );
        }
        let r = &self.rss;
        if r.before_connect_kb.is_some() || r.end_kb.is_some() {
            let per = r
                .kb_per_connection
                .map_or_else(|| "-".to_owned(), |v| format!("{v:.2} KiB"));
            let _ = writeln!(
                out,
                "  relay RSS: before sockets {}, with sockets {}, end {}; per connection {per}",
                kb(r.before_connect_kb),
                kb(r.after_connect_kb),
                kb(r.end_kb)
            );
        }
        if !self.errors.is_empty() {
            let _ = writeln!(out, "  errors:");
            for (kind, count) in &self.errors {
                let _ = writeln!(out, "    {count:>8}  {kind}");
            }
        }
        let _ = writeln!(out, "  {}", if self.ok { "OK" } else { "FAILED" });
        out
    }

    /// The JSON document.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_is_read_from_proc_status() {
        let status = "Name:\tbeepmyphone\nVmPeak:\t  99999 kB\nVmRSS:\t   12345 kB\nThreads:\t4\n";
        assert_eq!(parse_vm_rss(status), Some(12_345));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
        assert!(read_rss_kb(Some(std::process::id())).is_some_and(|kb| kb > 0));
        assert_eq!(read_rss_kb(None), None);
    }

    #[test]
    fn ratios_round_and_survive_zero() {
        assert_eq!(ratio(1.0, 3.0), 0.333);
        assert_eq!(ratio(5.0, 0.0), 0.0);
    }

    #[test]
    fn json_has_every_section_and_summary_reads() {
        let mut report = Report {
            scenario: "throughput",
            run_id: "abcd1234".into(),
            servers: vec!["http://127.0.0.1:8080".into()],
            ok: true,
            ..Report::default()
        };
        report.counts.published = 10;
        report.counts.accepted = 10;
        report.counts.delivered = 10;
        report.latency_us = Percentiles {
            count: 10,
            p50: 1_500,
            p99: 4_000,
            max: 5_000,
            ..Percentiles::default()
        };
        report.errors.insert("HTTP 503".into(), 2);
        report.schedule = Some(Schedule::default());
        let second = |at, late, max_us| Second {
            at,
            stats: SecondStats {
                received: 5,
                late,
                max_us,
            },
        };
        report.seconds = vec![second(0, 0, 900), second(1, 2, 70_000), second(2, 1, 6_000)];
        let json: serde_json::Value = serde_json::from_str(&report.to_json().unwrap()).unwrap();
        for key in [
            "scenario",
            "run_id",
            "settings",
            "ok",
            "counts",
            "throughput",
            "latency_us",
            "latency_from_send_us",
            "publish_response_us",
            "connect_us",
            "connections",
            "frames",
            "errors",
            "rss",
            "schedule",
            "backlog",
            "seconds",
        ] {
            assert!(json.get(key).is_some(), "missing {key}: {json}");
        }
        for key in ["p50", "p90", "p99", "p999", "max", "count"] {
            assert!(json["latency_us"].get(key).is_some(), "missing {key}");
        }
        assert_eq!(json["counts"]["lost"], 0);
        assert_eq!(json["errors"]["HTTP 503"], 2);
        let summary = report.summary();
        assert!(summary.contains("p50 1.500"), "{summary}");
        assert!(summary.contains("HTTP 503"), "{summary}");
        assert!(
            summary.contains("over 5 ms: 2 of 3; worst: +1 s max 70.000 ms (2 of 5 late), +2 s"),
            "{summary}"
        );
        assert_eq!(json["seconds"][1]["late"], 2);
        assert_eq!(json["seconds"][1]["max_us"], 70_000);
        assert!(summary.trim_end().ends_with("OK"), "{summary}");
        assert!(
            summary.contains("against http://127.0.0.1:8080\n"),
            "{summary}"
        );
        assert_eq!(json["servers"][0], "http://127.0.0.1:8080");
        assert!(json["relays"].is_null(), "one relay: no split");
        assert!(!summary.contains("across relays"), "{summary}");
    }

    #[test]
    fn several_relays_are_listed_and_their_latency_split() {
        let p = |p50, p99| Percentiles {
            count: 4,
            p50,
            p99,
            ..Percentiles::default()
        };
        let report = Report {
            scenario: "latency",
            servers: vec!["http://127.0.0.1:1".into(), "http://127.0.0.1:2".into()],
            relays: Some(Relays {
                same_relay_latency_us: p(1_000, 2_000),
                cross_relay_latency_us: p(3_000, 9_000),
            }),
            counts: Counts {
                published: 8,
                accepted: 8,
                delivered: 8,
                ..Counts::default()
            },
            ..Report::default()
        };
        let summary = report.summary();
        assert!(
            summary.contains(
                "against 2 relays: http://127.0.0.1:1, http://127.0.0.1:2 (pairing through the first)"
            ),
            "{summary}"
        );
        assert!(
            summary.contains("    same relay           p50 1.000 p90 0.000 p99 2.000"),
            "{summary}"
        );
        assert!(
            summary.contains("    across relays        p50 3.000 p90 0.000 p99 9.000"),
            "{summary}"
        );
        let json: serde_json::Value = serde_json::from_str(&report.to_json().unwrap()).unwrap();
        assert_eq!(json["servers"][1], "http://127.0.0.1:2");
        assert_eq!(json["relays"]["cross_relay_latency_us"]["p99"], 9_000);
        assert_eq!(json["relays"]["same_relay_latency_us"]["p50"], 1_000);
    }
}
