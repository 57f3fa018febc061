//! `beepmyphone bench`: the load generator of the targets in `docs/benchmarks.md`.
//!
//! It pairs N devices through the public API with an admin token, holds their WebSockets (acking
//! like a real device), publishes open-loop at a fixed rate or closed-loop as fast as possible,
//! single or batched, from several publisher tasks, and reports throughput, publish → receive
//! latency (HDR histograms), socket set-up time, frames and bytes per notification, lost and
//! duplicated notifications, errors, and the relay's RSS.
//!
//! Against a cluster it takes several relays (`--server` repeated): pairing goes through the
//! first, device i holds its socket on relay i mod n and publisher j publishes on relay
//! (j + 1) mod n, so that most notifications cross relays; the report splits their latency into
//! same-relay and cross-relay deliveries (`scripts/bench-cluster`).
//!
//! Every notification's title is `bench RUN SEQ INTENDED_US SENT_US`: the run id, a sequence
//! number, and the intended and actual send times in µs since the bench's own start `Instant`
//! (the receiving device is in the same process, so the clocks agree). Latency is measured from the
//! intended send time, so a relay that slows the publishers down cannot hide its latency
//! (coordinated omission); `latency_from_send_us` leaves out the bench's own scheduling delay.
//!
//! The load runs on [`plan::Plan::threads`] OS threads, each with its own `actix_rt` system and
//! awc clients ([`worker`]); the pure parts ([`plan`], [`stats`], [`report`]) have unit tests.

pub mod plan;
pub mod report;
pub mod stats;
pub mod worker;

use std::path::PathBuf;
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;

use self::plan::{new_run_id, Pacing, Plan};
use self::report::{
    ratio, read_rss_kb, Backlog, Connections, Counts, Frames, Relays, Report, Rss, RunSettings,
    Schedule, Second, Throughput,
};
use self::stats::{reconcile, Percentiles, SeqSet};
use self::worker::{Config, ConnectPace, Device, Histograms, Job, PublishJob, Shared, Worker};

/// The benchmark scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Hold N idle sockets for D seconds: connect time, RSS before/after, KiB per connection.
    Connections,
    /// Publish as fast as possible (`--batch B` for batches; `--rate` for a fixed rate).
    Throughput,
    /// Publish at a fixed `--rate` for `--duration` with N devices online.
    Latency,
    /// Bursts of `--burst K` notifications to one device back to back (frames per notification).
    Burst,
    /// Publish `--count` to offline devices, optionally restart the relay, then connect and time
    /// the backlog's flow.
    Backlog,
}

impl Scenario {
    /// The scenario's name.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Connections => "connections",
            Scenario::Throughput => "throughput",
            Scenario::Latency => "latency",
            Scenario::Burst => "burst",
            Scenario::Backlog => "backlog",
        }
    }
}

/// `beepmyphone bench SCENARIO [flags]`.
#[derive(Debug, Clone, Parser)]
pub struct BenchArgs {
    /// What to measure.
    #[arg(value_enum)]
    pub scenario: Scenario,
    /// The relay's URL (http, or https with the certificate check of --ca-fingerprint or
    /// --insecure, else the system's trust store). Repeat it, or separate URLs with commas (so
    /// in BEEP_SERVER too), for relays of one cluster: pairing and clean-up go through the first,
    /// device i connects to relay i mod n, publisher j publishes on relay (j + 1) mod n.
    #[arg(
        long = "server",
        value_name = "URL",
        env = "BEEP_SERVER",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:8080"
    )]
    pub servers: Vec<String>,
    /// How the relay's certificate is checked (https only).
    #[command(flatten)]
    pub trust: crate::tls::client::TrustArgs,
    /// An admin API token (pairs the devices, publishes).
    #[arg(long, env = "BEEP_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Devices to pair and connect (default: connections/latency 1000, throughput 100, else 10).
    #[arg(long, value_name = "N")]
    pub devices: Option<usize>,
    /// Notifications per second in total: publish open loop at this rate (latency: 5000).
    #[arg(long, value_name = "R")]
    pub rate: Option<f64>,
    /// Seconds to publish, or to hold the sockets (default 10 unless --count is given).
    #[arg(long, value_name = "S")]
    pub duration: Option<f64>,
    /// Notifications to publish at most (backlog: 10000).
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Publisher tasks (default 4).
    #[arg(long, value_name = "P")]
    pub publishers: Option<usize>,
    /// Requests in flight per publisher: closed loop (default 16), or the cap of an open loop
    /// (default 1024).
    #[arg(long, value_name = "C")]
    pub concurrency: Option<usize>,
    /// Notifications per request, through POST /notifications/batch when above 1 (max 500).
    #[arg(long, value_name = "B")]
    pub batch: Option<usize>,
    /// Consecutive notifications to the same device (burst: 100, else 1).
    #[arg(long, value_name = "K")]
    pub burst: Option<u64>,
    /// The relay's process id, to report its RSS.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Also write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Seconds to wait for outstanding deliveries after publishing.
    #[arg(long, value_name = "S", default_value_t = 10.0)]
    pub drain_seconds: f64,
    /// OS threads of the load generator (default: one per CPU core).
    #[arg(long, value_name = "T")]
    pub threads: Option<usize>,
    /// Socket connects in flight at once.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub connect_concurrency: usize,
    /// Socket connects started per second, all threads together: device i starts connecting
    /// i / R seconds after the first (default: as fast as --connect-concurrency allows).
    #[arg(long, value_name = "R")]
    pub connect_rate: Option<f64>,
    /// Backlog: a shell command run after publishing that restarts the relay (the bench then
    /// waits for /health/ready).
    #[arg(long, value_name = "CMD")]
    pub restart_cmd: Option<String>,
    /// Leave the paired devices in the relay (default: delete them at the end).
    #[arg(long)]
    pub keep_devices: bool,
}

/// Why a run could not be done.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Bad flags.
    #[error("{0}")]
    Usage(String),
    /// A worker thread could not start.
    #[error("could not start a worker thread: {0}")]
    Thread(String),
    /// A worker thread died.
    #[error("a worker thread stopped unexpectedly")]
    WorkerGone,
    /// A device could not be paired.
    #[error("pairing failed: {0}")]
    Pairing(String),
    /// The relay did not come back after the restart command.
    #[error("the relay did not become ready: {0}")]
    NotReady(String),
    /// The restart command failed.
    #[error("the restart command failed: {0}")]
    Restart(String),
    /// Histograms could not be made or merged.
    #[error("histogram: {0}")]
    Histogram(String),
    /// The JSON report could not be written.
    #[error("could not write {path}: {error}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        error: String,
    },
}

/// Runs `beepmyphone bench`: the summary on stdout, the JSON file if asked; returns the exit
/// code (0 ok, 1 failed or something was lost, 2 bad flags).
pub fn main(args: BenchArgs) -> i32 {
    match run(&args) {
        Ok(report) => {
            print!("{}", report.summary());
            if let Some(path) = &args.json {
                if let Err(e) = write_json(&report, path) {
                    eprintln!("beepmyphone bench: {e}");
                    return 1;
                }
            }
            i32::from(!report.ok)
        }
        Err(e) => {
            eprintln!("beepmyphone bench: {e}");
            match e {
                BenchError::Usage(_) => 2,
                _ => 1,
            }
        }
    }
}

/// Writes the report as JSON.
pub fn write_json(report: &Report, path: &std::path::Path) -> Result<(), BenchError> {
    let write_error = |error: String| BenchError::Write {
        path: path.to_path_buf(),
        error,
    };
    let json = report.to_json().map_err(|e| write_error(e.to_string()))?;
    std::fs::write(path, json + "\n").map_err(|e| write_error(e.to_string()))
}

/// Raises this process's open-file limit to its hard limit; returns the limit in force.
pub fn raise_nofile_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct we pass, which lives on this stack frame.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    Some(limit.rlim_cur)
}

fn progress(message: &str) {
    eprintln!("bench: {message}");
}

fn seconds_between(from_us: u64, to_us: u64) -> f64 {
    to_us.saturating_sub(from_us) as f64 / 1e6
}

/// The worker threads of a run.
struct Pool {
    workers: Vec<Worker>,
    shared: Arc<Shared>,
}

impl Pool {
    fn ask<T>(
        &self,
        make: impl Fn(usize, std_mpsc::Sender<T>) -> Option<Job>,
    ) -> Result<Vec<T>, BenchError> {
        let mut replies = Vec::new();
        for (i, worker) in self.workers.iter().enumerate() {
            let (tx, rx) = std_mpsc::channel();
            if let Some(job) = make(i, tx) {
                worker.send(job)?;
                replies.push(rx);
            }
        }
        replies
            .into_iter()
            .map(|rx| rx.recv().map_err(|_| BenchError::WorkerGone))
            .collect()
    }

    fn share(&self, n: usize) -> usize {
        n.div_ceil(self.workers.len().max(1)).max(1)
    }

    fn pair(&self, n: usize) -> Result<Vec<Device>, BenchError> {
        let t = self.workers.len();
        let concurrency = self.share(32);
        let results = self.ask(|w, reply| {
            Some(Job::Pair {
                indices: (w..n).step_by(t).collect(),
                concurrency,
                reply,
            })
        })?;
        let mut devices: Vec<Option<Device>> = vec![None; n];
        for result in results {
            for (i, device) in result? {
                if let Some(slot) = devices.get_mut(i) {
                    *slot = Some(device);
                }
            }
        }
        devices
            .into_iter()
            .map(|d| d.ok_or_else(|| BenchError::Pairing("a device is missing".into())))
            .collect()
    }

    fn connect(
        &self,
        devices: &[Device],
        concurrency: usize,
        pace: Option<ConnectPace>,
    ) -> Result<(), BenchError> {
        let t = self.workers.len();
        let concurrency = self.share(concurrency);
        self.ask(|w, reply| {
            Some(Job::Connect {
                devices: devices
                    .iter()
                    .enumerate()
                    .skip(w)
                    .step_by(t)
                    .map(|(i, d)| (i, d.clone()))
                    .collect(),
                total: devices.len(),
                concurrency,
                pace,
                reply,
            })
        })?;
        Ok(())
    }

    fn publish(&self, job: PublishJob) -> Result<(), BenchError> {
        let t = self.workers.len();
        let publishers = job.publishers;
        let job = Arc::new(job);
        self.ask(|w, reply| {
            let mine: Vec<u64> = (0..publishers).filter(|p| *p as usize % t == w).collect();
            (!mine.is_empty()).then(|| Job::Publish {
                job: job.clone(),
                publishers: mine,
                reply,
            })
        })?;
        Ok(())
    }

    fn ready(&self, timeout: Duration) -> Result<(), BenchError> {
        let results = self.ask(|w, reply| (w == 0).then_some(Job::Ready { timeout, reply }))?;
        results.into_iter().collect()
    }

    fn delete(&self, ids: &[String]) -> Result<u64, BenchError> {
        let t = self.workers.len();
        let failures = self.ask(|w, reply| {
            Some(Job::Delete {
                ids: ids.iter().skip(w).step_by(t).cloned().collect(),
                reply,
            })
        })?;
        Ok(failures.into_iter().sum())
    }

    fn disconnect(&self) -> Result<(), BenchError> {
        self.ask(|_, reply| Some(Job::Disconnect { reply }))?;
        Ok(())
    }

    /// Waits until every accepted notification arrived, or `drain` passed.
    fn drain(&self, drain: Duration) {
        let deadline = Instant::now() + drain;
        let s = &self.shared;
        while Instant::now() < deadline && Shared::get(&s.delivered) < Shared::get(&s.accepted) {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn finish(self) -> Result<(Histograms, SeqSet, SeqSet), BenchError> {
        let mut histograms = Histograms::new().map_err(|e| BenchError::Histogram(e.to_string()))?;
        let mut received = SeqSet::new();
        let mut accepted = SeqSet::new();
        for worker in self.workers {
            let result = worker.finish()?;
            histograms
                .merge(&result.histograms)
                .map_err(|e| BenchError::Histogram(e.to_string()))?;
            // A device lives on one thread, so receptions never overlap across threads.
            received.union_with(&result.received);
            accepted.union_with(&result.accepted);
        }
        Ok((histograms, received, accepted))
    }
}

/// Phase timings of a run, µs since start.
#[derive(Default)]
struct Timeline {
    publish_start_us: u64,
    publish_end_us: u64,
    connect_start_us: u64,
    connect_end_us: u64,
    restart_seconds: Option<f64>,
}

/// Runs a benchmark and returns its report (printing progress on stderr).
pub fn run(args: &BenchArgs) -> Result<Report, BenchError> {
    let plan = Plan::resolve(args)?;
    let nofile = raise_nofile_limit();
    if let Some(limit) = nofile {
        if limit < plan.devices as u64 + 512 {
            progress(&format!(
                "warning: the open-file limit is {limit}; {} sockets need more",
                plan.devices
            ));
        }
    }
    let started_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let run_id = new_run_id();
    let config = Arc::new(Config {
        servers: plan.servers.clone(),
        ws_urls: plan.ws_urls(),
        token: plan.token.clone(),
        run_id: run_id.clone(),
        start: Instant::now(),
        spread_sources: plan.servers_are_loopback(),
        trust: plan.trust.clone(),
    });
    let shared = Arc::new(Shared::default());
    let mut workers = Vec::with_capacity(plan.threads);
    for i in 0..plan.threads {
        let histograms = Histograms::new().map_err(|e| BenchError::Histogram(e.to_string()))?;
        workers.push(Worker::spawn(
            i,
            config.clone(),
            shared.clone(),
            histograms,
        )?);
    }
    let pool = Pool {
        workers,
        shared: shared.clone(),
    };

    let against = match plan.servers.as_slice() {
        [one] => one.clone(),
        many => format!("{} relays ({})", many.len(), many.join(", ")),
    };
    progress(&format!(
        "run {run_id}: {} against {against}; pairing {} devices{}",
        plan.scenario.name(),
        plan.devices,
        if plan.servers.len() > 1 {
            " through the first"
        } else {
            ""
        }
    ));
    let devices = pool.pair(plan.devices)?;
    let ids: Arc<Vec<String>> = Arc::new(devices.iter().map(|d| d.id.clone()).collect());
    let mut rss = Rss {
        before_connect_kb: read_rss_kb(plan.pid),
        ..Rss::default()
    };
    let mut timeline = Timeline::default();
    let connect = |timeline: &mut Timeline| -> Result<(), BenchError> {
        progress(&format!("connecting {} sockets", devices.len()));
        timeline.connect_start_us = config.now_us();
        let pace = plan.connect_rate.map(|rate| ConnectPace {
            start_us: timeline.connect_start_us,
            rate,
        });
        pool.connect(&devices, plan.connect_concurrency, pace)?;
        timeline.connect_end_us = config.now_us();
        Ok(())
    };
    let publish = |timeline: &mut Timeline| -> Result<(), BenchError> {
        let start_us = config.now_us() + 20_000; // let every publisher start on the same tick
        let what = match (plan.duration, plan.count) {
            (Some(d), _) => format!("for {:.1} s", d.as_secs_f64()),
            (None, Some(n)) => format!("{n} notifications"),
            (None, None) => String::new(),
        };
        progress(&format!("publishing {what}"));
        timeline.publish_start_us = start_us;
        pool.publish(PublishJob {
            pacing: plan.pacing,
            batch: plan.batch as u64,
            burst: plan.burst,
            publishers: plan.publishers as u64,
            count: plan.count,
            start_us,
            end_us: plan
                .duration
                .map(|d| start_us + u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
            targets: ids.clone(),
        })?;
        timeline.publish_end_us = config.now_us();
        Ok(())
    };
    let drain = || {
        progress(&format!(
            "waiting up to {:.0} s for deliveries",
            plan.drain.as_secs_f64()
        ));
        pool.drain(plan.drain);
    };

    match plan.scenario {
        Scenario::Connections => {
            connect(&mut timeline)?;
            rss.after_connect_kb = read_rss_kb(plan.pid);
            let hold = plan.duration.unwrap_or_default();
            progress(&format!("holding them for {:.1} s", hold.as_secs_f64()));
            std::thread::sleep(hold);
        }
        Scenario::Backlog => {
            publish(&mut timeline)?;
            if let Some(cmd) = &plan.restart_cmd {
                progress(&format!("restarting the relay: {cmd}"));
                let began = Instant::now();
                let status = std::process::Command::new("sh")
                    .arg("-c")
                    .arg(cmd)
                    .status()
                    .map_err(|e| BenchError::Restart(e.to_string()))?;
                if !status.success() {
                    return Err(BenchError::Restart(status.to_string()));
                }
                pool.ready(Duration::from_secs(120))?;
                timeline.restart_seconds = Some(began.elapsed().as_secs_f64());
                rss.before_connect_kb = read_rss_kb(plan.pid);
            }
            connect(&mut timeline)?;
            rss.after_connect_kb = read_rss_kb(plan.pid);
            drain();
        }
        Scenario::Throughput | Scenario::Latency | Scenario::Burst => {
            connect(&mut timeline)?;
            rss.after_connect_kb = read_rss_kb(plan.pid);
            publish(&mut timeline)?;
            drain();
        }
    }
    rss.end_kb = read_rss_kb(plan.pid);
    let errors_before_cleanup = shared.errors();
    pool.disconnect()?;
    if plan.cleanup {
        progress("deleting the bench devices");
        let failed = pool.delete(&ids)?;
        if failed > 0 {
            progress(&format!("warning: {failed} devices could not be deleted"));
        }
    }
    let (histograms, received, accepted) = pool.finish()?;
    Ok(build_report(
        &plan,
        ReportInputs {
            run_id,
            started_at,
            nofile,
            shared: &shared,
            errors: errors_before_cleanup,
            histograms: &histograms,
            received: &received,
            accepted: &accepted,
            timeline: &timeline,
            rss,
        },
    ))
}

struct ReportInputs<'a> {
    run_id: String,
    started_at: String,
    nofile: Option<u64>,
    shared: &'a Shared,
    errors: std::collections::BTreeMap<String, u64>,
    histograms: &'a Histograms,
    received: &'a SeqSet,
    accepted: &'a SeqSet,
    timeline: &'a Timeline,
    rss: Rss,
}

fn build_report(plan: &Plan, input: ReportInputs<'_>) -> Report {
    let s = input.shared;
    let t = input.timeline;
    let reconciled = reconcile(input.accepted, input.received);
    let first_rx = Shared::get(&s.first_rx_us);
    let last_rx = Shared::get(&s.last_rx_us);
    let received_any = first_rx != u64::MAX;
    let (rate, concurrency) = match plan.pacing {
        Pacing::Open {
            rate,
            max_in_flight,
        } => (Some(rate), max_in_flight),
        Pacing::Closed { concurrency } => (None, concurrency),
    };
    let publishes = plan.scenario != Scenario::Connections;
    let publish_seconds = seconds_between(t.publish_start_us, t.publish_end_us);
    let delivery_seconds = if received_any {
        seconds_between(t.publish_start_us, last_rx)
    } else {
        0.0
    };
    let counts = Counts {
        published: Shared::get(&s.published),
        accepted: input.accepted.len(),
        delivered: input.received.len(),
        duplicates: Shared::get(&s.duplicates),
        lost: reconciled.lost,
        lost_sample: reconciled.lost_sample,
        unconfirmed: reconciled.unconfirmed,
        foreign: Shared::get(&s.foreign),
    };
    let connect_seconds = seconds_between(t.connect_start_us, t.connect_end_us);
    let connections = Connections {
        attempted: Shared::get(&s.connect_attempts),
        established: Shared::get(&s.connected),
        failed: Shared::get(&s.connect_failed),
        closed_by_server: Shared::get(&s.closed_by_server),
        setup_seconds: (connect_seconds * 1_000.0).round() / 1_000.0,
        per_second: ratio(Shared::get(&s.connected) as f64, connect_seconds).round(),
    };
    let items = Shared::get(&s.items);
    let frames = Frames {
        notification_frames: Shared::get(&s.frames),
        notification_bytes: Shared::get(&s.frame_bytes),
        notifications: items,
        frames_per_notification: ratio(Shared::get(&s.frames) as f64, items as f64),
        bytes_per_notification: ratio(Shared::get(&s.frame_bytes) as f64, items as f64),
    };
    let mut rss = input.rss;
    if let (Some(before), Some(after)) = (rss.before_connect_kb, rss.after_connect_kb) {
        if connections.established > 0 {
            rss.kb_per_connection = Some(ratio(
                after.saturating_sub(before) as f64,
                connections.established as f64,
            ));
        }
    }
    let backlog = (plan.scenario == Scenario::Backlog).then(|| {
        let since_connect = |us: u64| (us.saturating_sub(t.connect_start_us) as f64) / 1_000.0;
        Backlog {
            restart_seconds: t.restart_seconds,
            first_received_ms: received_any.then(|| since_connect(first_rx)),
            last_received_ms: received_any.then(|| since_connect(last_rx)),
            flow_per_second: received_any
                .then(|| ratio(counts.delivered as f64, seconds_between(first_rx, last_rx)))
                .filter(|v| *v > 0.0),
        }
    });
    let schedule = rate.is_some().then(|| Schedule {
        late_sends: Shared::get(&s.late_sends),
        send_lag_us: Percentiles::of(&input.histograms.lag),
    });
    let ok = counts.lost == 0 && connections.failed == 0 && (!publishes || counts.accepted > 0);
    Report {
        scenario: plan.scenario.name(),
        run_id: input.run_id,
        servers: plan.servers.clone(),
        started_at: input.started_at,
        settings: RunSettings {
            devices: plan.devices,
            publishers: plan.publishers,
            pacing: if rate.is_some() { "open" } else { "closed" },
            rate,
            concurrency,
            batch: plan.batch,
            burst: plan.burst,
            duration_seconds: plan.duration.map(|d| d.as_secs_f64()),
            count: plan.count,
            drain_seconds: plan.drain.as_secs_f64(),
            threads: plan.threads,
        },
        ok,
        throughput: Throughput {
            publish_seconds: (publish_seconds * 1_000.0).round() / 1_000.0,
            accepted_per_second: ratio(counts.accepted as f64, publish_seconds).round(),
            delivery_seconds: (delivery_seconds * 1_000.0).round() / 1_000.0,
            delivered_per_second: ratio(counts.delivered as f64, delivery_seconds).round(),
        },
        counts,
        latency_us: Percentiles::of(&input.histograms.latency),
        latency_from_send_us: Percentiles::of(&input.histograms.latency_from_send),
        relays: (plan.servers.len() > 1).then(|| Relays {
            same_relay_latency_us: Percentiles::of(&input.histograms.latency_same_relay),
            cross_relay_latency_us: Percentiles::of(&input.histograms.latency_cross_relay),
        }),
        publish_response_us: Percentiles::of(&input.histograms.publish),
        connect_us: Percentiles::of(&input.histograms.connect),
        connections,
        frames,
        errors: input.errors,
        rss,
        schedule,
        backlog,
        seconds: Second::all(&input.histograms.per_second, t.publish_start_us),
        nofile_limit: input.nofile,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nofile_limit_is_raised_to_the_hard_limit() {
        let limit = raise_nofile_limit().unwrap();
        let mut now = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut now) }, 0);
        assert_eq!(limit, now.rlim_cur);
        assert_eq!(now.rlim_cur, now.rlim_max);
    }

    #[test]
    fn flags_parse() {
        let args = BenchArgs::try_parse_from([
            "bench",
            "throughput",
            "--token",
            "bmp_x",
            "--batch",
            "50",
            "--devices",
            "7",
            "--json",
            "/tmp/r.json",
            "--drain-seconds",
            "3",
        ])
        .unwrap();
        assert_eq!(args.scenario, Scenario::Throughput);
        assert_eq!(args.batch, Some(50));
        assert_eq!(args.devices, Some(7));
        assert_eq!(args.drain_seconds, 3.0);
        assert!(BenchArgs::try_parse_from(["bench", "dance"]).is_err());
        let cluster = BenchArgs::try_parse_from([
            "bench",
            "latency",
            "--server",
            "http://127.0.0.1:18281",
            "--server",
            "http://127.0.0.1:18282,http://127.0.0.1:18283",
        ])
        .unwrap();
        assert_eq!(
            cluster.servers,
            [
                "http://127.0.0.1:18281",
                "http://127.0.0.1:18282",
                "http://127.0.0.1:18283"
            ]
        );
    }

    #[test]
    fn a_report_from_counts() {
        let plan = Plan::resolve(
            &BenchArgs::try_parse_from(["bench", "burst", "--token", "t", "--count", "4"]).unwrap(),
        )
        .unwrap();
        let shared = Shared::default();
        shared.frames.store(1, std::sync::atomic::Ordering::Relaxed);
        shared.items.store(4, std::sync::atomic::Ordering::Relaxed);
        shared
            .frame_bytes
            .store(400, std::sync::atomic::Ordering::Relaxed);
        shared
            .first_rx_us
            .store(2_000, std::sync::atomic::Ordering::Relaxed);
        shared
            .last_rx_us
            .store(3_000, std::sync::atomic::Ordering::Relaxed);
        let mut accepted = SeqSet::new();
        accepted.insert_range(0..4);
        let mut received = SeqSet::new();
        received.insert_range(0..3);
        let histograms = Histograms::new().unwrap();
        let timeline = Timeline {
            publish_start_us: 1_000,
            publish_end_us: 2_000,
            ..Timeline::default()
        };
        let report = build_report(
            &plan,
            ReportInputs {
                run_id: "r".into(),
                started_at: "now".into(),
                nofile: Some(1024),
                shared: &shared,
                errors: Default::default(),
                histograms: &histograms,
                received: &received,
                accepted: &accepted,
                timeline: &timeline,
                rss: Rss::default(),
            },
        );
        assert_eq!(report.counts.lost, 1);
        assert_eq!(report.counts.lost_sample, vec![3]);
        assert!(!report.ok, "a lost notification fails the run");
        assert_eq!(report.frames.frames_per_notification, 0.25);
        assert_eq!(report.frames.bytes_per_notification, 100.0);
        assert_eq!(report.throughput.accepted_per_second, 4_000.0);
        assert_eq!(report.throughput.delivered_per_second, 1_500.0);
        assert_eq!(report.servers, ["http://127.0.0.1:8080"]);
        assert!(report.relays.is_none(), "one relay: no same/cross split");

        let two = Plan::resolve(
            &BenchArgs::try_parse_from([
                "bench",
                "latency",
                "--token",
                "t",
                "--server",
                "http://127.0.0.1:1,http://127.0.0.1:2",
            ])
            .unwrap(),
        )
        .unwrap();
        let mut histograms = Histograms::new().unwrap();
        histograms.latency_same_relay.record(1_000).unwrap();
        histograms.latency_cross_relay.record(3_000).unwrap();
        histograms.latency_cross_relay.record(3_000).unwrap();
        let report = build_report(
            &two,
            ReportInputs {
                run_id: "r".into(),
                started_at: "now".into(),
                nofile: None,
                shared: &shared,
                errors: Default::default(),
                histograms: &histograms,
                received: &received,
                accepted: &accepted,
                timeline: &timeline,
                rss: Rss::default(),
            },
        );
        assert_eq!(report.servers, ["http://127.0.0.1:1", "http://127.0.0.1:2"]);
        let relays = report.relays.expect("two relays: the split");
        assert_eq!(relays.same_relay_latency_us.count, 1);
        assert_eq!(relays.cross_relay_latency_us.count, 2);
    }
}
