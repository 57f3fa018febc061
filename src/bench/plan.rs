//! The plan of a run: per-scenario defaults, the open-loop schedule, which device each
//! notification goes to, which relay each device and each publisher talks to (with several
//! `--server`s), which source address each socket uses, and the stamp every notification carries
//! in its title.

use std::net::Ipv4Addr;
use std::ops::Range;
use std::time::Duration;

use super::{BenchArgs, BenchError, Scenario};

/// Sockets per source address before the next 127.0.0.x is used (the ephemeral port range holds
/// about 28,000 ports per address pair).
pub const SOCKETS_PER_ADDRESS: usize = 25_000;

/// How publishers pace themselves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pacing {
    /// Open loop: `rate` notifications per second in total, each request at its scheduled time
    /// whether or not earlier ones were answered (at most `max_in_flight` per publisher).
    Open {
        /// Notifications per second, all publishers together.
        rate: f64,
        /// Most unanswered requests per publisher.
        max_in_flight: usize,
    },
    /// Closed loop: each publisher keeps `concurrency` requests outstanding.
    Closed {
        /// Requests in flight per publisher.
        concurrency: usize,
    },
}

/// Everything a run does, with the scenario's defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The scenario.
    pub scenario: Scenario,
    /// Base URLs of the relays, without a trailing slash; at least one. Pairing and clean-up go
    /// through the first; devices and publishers are spread over all ([`device_server`],
    /// [`publisher_server`]).
    pub servers: Vec<String>,
    /// The admin token.
    pub token: String,
    /// Devices to pair and connect.
    pub devices: usize,
    /// Publisher tasks.
    pub publishers: usize,
    /// Open or closed loop.
    pub pacing: Pacing,
    /// Notifications per request (1: `POST /notifications`, more: `/notifications/batch`).
    pub batch: usize,
    /// Consecutive notifications sent to the same device.
    pub burst: u64,
    /// How long to publish (or, for `connections`, to hold the sockets).
    pub duration: Option<Duration>,
    /// How many notifications to publish at most.
    pub count: Option<u64>,
    /// How long to wait for outstanding deliveries after publishing.
    pub drain: Duration,
    /// OS threads running the load.
    pub threads: usize,
    /// Socket connects in flight at once, all threads together.
    pub connect_concurrency: usize,
    /// Socket connects started per second, all threads together (`None`: as fast as they go).
    pub connect_rate: Option<f64>,
    /// The relay's pid, for its RSS.
    pub pid: Option<u32>,
    /// Backlog: a shell command that restarts the relay after publishing.
    pub restart_cmd: Option<String>,
    /// Delete the paired devices at the end.
    pub cleanup: bool,
    /// How the relay's certificate is checked (https).
    pub trust: crate::tls::client::Trust,
}

impl Plan {
    /// Applies the scenario's defaults to the flags and checks them.
    pub fn resolve(args: &BenchArgs) -> Result<Self, BenchError> {
        let usage = |m: &str| Err(BenchError::Usage(m.to_owned()));
        let scenario = args.scenario;
        let servers: Vec<String> = args
            .servers
            .iter()
            .map(|s| s.trim().trim_end_matches('/').to_owned())
            .collect();
        if servers.is_empty() {
            return usage("--server: give at least one relay");
        }
        if let Some(bad) = servers
            .iter()
            .find(|s| !s.starts_with("http://") && !s.starts_with("https://"))
        {
            return usage(&format!(
                "--server must be an http:// or https:// URL (not {bad:?})"
            ));
        }
        if let Some(twice) = servers
            .iter()
            .enumerate()
            .find_map(|(i, s)| servers[..i].contains(s).then_some(s))
        {
            return usage(&format!("--server {twice} is given twice"));
        }
        let trust = match args.trust.trust() {
            Ok(trust) => trust.unwrap_or_default(),
            Err(why) => return usage(&why),
        };
        let Some(token) = args.token.clone().filter(|t| !t.is_empty()) else {
            return usage("an admin token is needed: --token or BEEP_TOKEN");
        };
        let default_devices = match scenario {
            Scenario::Connections | Scenario::Latency => 1_000,
            Scenario::Throughput => 100,
            Scenario::Burst | Scenario::Backlog => 10,
        };
        let devices = args.devices.unwrap_or(default_devices);
        if devices == 0 {
            return usage("--devices must be at least 1");
        }
        let batch = args.batch.unwrap_or(1);
        if !(1..=500).contains(&batch) {
            return usage("--batch must be between 1 and 500 (the relay's batch limit)");
        }
        let burst = match scenario {
            Scenario::Burst => args.burst.unwrap_or(100),
            _ => args.burst.unwrap_or(1),
        };
        if burst == 0 {
            return usage("--burst must be at least 1");
        }
        let rate = match (scenario, args.rate) {
            (_, Some(rate)) if !(rate.is_finite() && rate > 0.0) => {
                return usage("--rate must be a positive number of notifications per second")
            }
            (Scenario::Latency, None) => Some(5_000.0),
            (_, rate) => rate,
        };
        if args
            .connect_rate
            .is_some_and(|r| !(r.is_finite() && r > 0.0))
        {
            return usage("--connect-rate must be a positive number of connects per second");
        }
        let pacing = match rate {
            Some(rate) => Pacing::Open {
                rate,
                max_in_flight: args.concurrency.unwrap_or(1_024).max(1),
            },
            None => Pacing::Closed {
                concurrency: args.concurrency.unwrap_or(16).max(1),
            },
        };
        let count = match scenario {
            Scenario::Backlog => Some(args.count.unwrap_or(10_000)),
            _ => args.count,
        };
        let duration = match (scenario, args.duration) {
            (Scenario::Backlog, _) => None,
            (_, Some(seconds)) => Some(Duration::from_secs_f64(seconds.max(0.0))),
            (_, None) if count.is_some() && scenario != Scenario::Connections => None,
            (_, None) => Some(Duration::from_secs(10)),
        };
        if scenario == Scenario::Connections && args.rate.is_some() {
            return usage("connections publishes nothing: --rate does not apply");
        }
        if args.restart_cmd.is_some() && scenario != Scenario::Backlog {
            return usage("--restart-cmd applies to the backlog scenario only");
        }
        let threads = args
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, usize::from))
            .clamp(1, 64);
        Ok(Self {
            scenario,
            servers,
            token,
            devices,
            publishers: args.publishers.unwrap_or(4).max(1),
            pacing,
            batch,
            burst,
            duration,
            count,
            drain: Duration::from_secs_f64(args.drain_seconds.max(0.0)),
            threads,
            connect_concurrency: args.connect_concurrency.max(1),
            connect_rate: args.connect_rate,
            pid: args.pid,
            restart_cmd: args.restart_cmd.clone(),
            cleanup: !args.keep_devices,
            trust,
        })
    }

    /// The WebSocket URL of each relay, in the order of [`Plan::servers`].
    pub fn ws_urls(&self) -> Vec<String> {
        self.servers.iter().map(|s| ws_url(s)).collect()
    }

    /// Whether every relay is on this machine's loopback, so sockets may come from 127.0.0.x.
    pub fn servers_are_loopback(&self) -> bool {
        self.servers.iter().all(|s| is_loopback(s))
    }
}

/// The WebSocket URL of the relay at `server` (http → ws, https → wss).
pub fn ws_url(server: &str) -> String {
    format!("ws{}/api/v1/ws", server.trim_start_matches("http"))
}

fn is_loopback(server: &str) -> bool {
    url::Url::parse(server)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .is_some_and(|host| {
            host == "localhost"
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        })
}

/// The relay (index into the servers) that device `device` holds its socket on: round-robin,
/// device i on server i mod `servers`.
pub fn device_server(device: usize, servers: usize) -> usize {
    device % servers.max(1)
}

/// The relay (index into the servers) that publisher `publisher` publishes to: round-robin, one
/// ahead of the devices (publisher j on server (j + 1) mod `servers`). All publishers draw their
/// sequence numbers, and so their targets, from one counter, so with `n` relays about
/// (n − 1) / n of the notifications are published on a relay other than the one holding their
/// device; `--publishers` a multiple of `n` loads every relay alike.
pub fn publisher_server(publisher: u64, servers: usize) -> usize {
    let servers = servers.max(1) as u64;
    usize::try_from(publisher.wrapping_add(1) % servers).unwrap_or(0)
}

/// Microseconds after the publishing start at which publisher `publisher` (of `publishers`) sends
/// its `k`-th request of `batch` notifications, for `rate` notifications per second in total.
/// Publishers interleave: together they send one request every `batch / rate` seconds.
pub fn intended_offset_us(k: u64, publisher: u64, publishers: u64, rate: f64, batch: u64) -> u64 {
    let slot = k
        .saturating_mul(publishers.max(1))
        .saturating_add(publisher);
    // f64 holds every slot of a realistic run exactly (below 2^53).
    (slot as f64 * batch.max(1) as f64 * 1e6 / rate) as u64
}

/// Takes the sequence numbers of one request from the run's counter: `first` is what the counter
/// held, `batch` how many are wanted, `count` the run's total if it has one. `None` once the
/// total is used up.
pub fn claim_range(first: u64, batch: u64, count: Option<u64>) -> Option<Range<u64>> {
    let end = first.saturating_add(batch.max(1));
    match count {
        Some(count) if first >= count => None,
        Some(count) => Some(first..end.min(count)),
        None => Some(first..end),
    }
}

/// The device (index) that notification `seq` goes to: round-robin, `burst` at a time.
pub fn target_index(seq: u64, devices: usize, burst: u64) -> usize {
    let devices = devices.max(1) as u64;
    usize::try_from((seq / burst.max(1)) % devices).unwrap_or(0)
}

/// The source address of socket `index` of `total`: none (the kernel's choice) up to
/// [`SOCKETS_PER_ADDRESS`], else spread round-robin over 127.0.0.2, 127.0.0.3, …
pub fn source_address(index: usize, total: usize) -> Option<Ipv4Addr> {
    if total <= SOCKETS_PER_ADDRESS {
        return None;
    }
    let addresses = total.div_ceil(SOCKETS_PER_ADDRESS).min(250);
    let host = u8::try_from(2 + index % addresses).unwrap_or(u8::MAX);
    Some(Ipv4Addr::new(127, 0, 0, host))
}

/// The stamp a bench notification carries in its title.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Sequence number within the run.
    pub seq: u64,
    /// When it was meant to be sent: µs since the bench's start.
    pub intended_us: u64,
    /// When it was actually sent: µs since the bench's start.
    pub sent_us: u64,
    /// The relay it was published on (index into the servers).
    pub via: usize,
}

/// What a received title turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// One of this run's.
    Ours(Stamp),
    /// Another run's, or not from a bench at all.
    Foreign,
}

/// The title of a bench notification: `bench RUN SEQ INTENDED_US SENT_US VIA` (VIA: the index of
/// the relay it was published on).
pub fn encode_title(run: &str, stamp: Stamp) -> String {
    format!(
        "bench {run} {} {} {} {}",
        stamp.seq, stamp.intended_us, stamp.sent_us, stamp.via
    )
}

/// Reads a title written by [`encode_title`] for run `run`.
pub fn parse_title(title: &str, run: &str) -> Parsed {
    let mut parts = title.split(' ');
    if parts.next() != Some("bench") || parts.next() != Some(run) {
        return Parsed::Foreign;
    }
    let mut number = || parts.next().and_then(|p| p.parse::<u64>().ok());
    match (number(), number(), number(), number()) {
        (Some(seq), Some(intended_us), Some(sent_us), Some(via)) => Parsed::Ours(Stamp {
            seq,
            intended_us,
            sent_us,
            via: usize::try_from(via).unwrap_or(usize::MAX),
        }),
        _ => Parsed::Foreign,
    }
}

/// A fresh run id: 8 hex digits.
pub fn new_run_id() -> String {
    format!("{:08x}", rand::random::<u32>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(line: &[&str]) -> BenchArgs {
        let mut full = vec!["bench"];
        full.extend_from_slice(line);
        BenchArgs::try_parse_from(full).unwrap()
    }

    #[test]
    fn open_loop_schedule_is_even_and_interleaved() {
        // 4 publishers at 1,000/s: one request per millisecond in total, publisher p in slot p.
        let offsets: Vec<u64> = (0..3)
            .flat_map(|k| (0..4).map(move |p| intended_offset_us(k, p, 4, 1_000.0, 1)))
            .collect();
        assert_eq!(
            offsets,
            (0..12).map(|i| i * 1_000).collect::<Vec<u64>>(),
            "{offsets:?}"
        );
        // Batches of 10 at 1,000/s: one request per 10 ms.
        assert_eq!(intended_offset_us(1, 0, 1, 1_000.0, 10), 10_000);
        // Requests due within the first second at 5,000/s from 3 publishers: 5,000 in all.
        let due = (0..3u64)
            .map(|p| {
                (0..10_000u64)
                    .take_while(|k| intended_offset_us(*k, p, 3, 5_000.0, 1) < 1_000_000)
                    .count()
            })
            .sum::<usize>();
        assert_eq!(due, 5_000);
    }

    #[test]
    fn claims_respect_the_total() {
        assert_eq!(claim_range(0, 1, None), Some(0..1));
        assert_eq!(claim_range(10, 5, Some(100)), Some(10..15));
        assert_eq!(claim_range(98, 5, Some(100)), Some(98..100));
        assert_eq!(claim_range(100, 5, Some(100)), None);
        assert_eq!(
            claim_range(7, 0, None),
            Some(7..8),
            "a batch is at least one"
        );
    }

    #[test]
    fn targets_rotate_in_bursts() {
        let plain: Vec<usize> = (0..6).map(|s| target_index(s, 3, 1)).collect();
        assert_eq!(plain, [0, 1, 2, 0, 1, 2]);
        let bursts: Vec<usize> = (0..8).map(|s| target_index(s, 3, 3)).collect();
        assert_eq!(bursts, [0, 0, 0, 1, 1, 1, 2, 2]);
        assert_eq!(target_index(5, 0, 0), 0);
    }

    #[test]
    fn sources_spread_only_past_the_port_range() {
        assert_eq!(source_address(0, 1_000), None);
        assert_eq!(source_address(24_999, SOCKETS_PER_ADDRESS), None);
        let total = 60_000; // three addresses
        assert_eq!(source_address(0, total), Some(Ipv4Addr::new(127, 0, 0, 2)));
        assert_eq!(source_address(1, total), Some(Ipv4Addr::new(127, 0, 0, 3)));
        assert_eq!(source_address(2, total), Some(Ipv4Addr::new(127, 0, 0, 4)));
        assert_eq!(source_address(3, total), Some(Ipv4Addr::new(127, 0, 0, 2)));
        let per = (0..total)
            .filter(|i| source_address(*i, total) == Some(Ipv4Addr::new(127, 0, 0, 4)))
            .count();
        assert!(per <= SOCKETS_PER_ADDRESS);
    }

    #[test]
    fn titles_round_trip_and_other_runs_are_foreign() {
        let stamp = Stamp {
            seq: 42,
            intended_us: 1_000,
            sent_us: 1_250,
            via: 2,
        };
        let title = encode_title("abcd1234", stamp);
        assert!(title.len() <= 256);
        assert_eq!(parse_title(&title, "abcd1234"), Parsed::Ours(stamp));
        assert_eq!(parse_title(&title, "ffff0000"), Parsed::Foreign);
        assert_eq!(parse_title("Build finished", "abcd1234"), Parsed::Foreign);
        assert_eq!(
            parse_title("bench abcd1234 1 x 3 0", "abcd1234"),
            Parsed::Foreign
        );
        assert_eq!(
            parse_title("bench abcd1234 1 2 3", "abcd1234"),
            Parsed::Foreign,
            "a title without the relay is not this run's"
        );
        assert_eq!(new_run_id().len(), 8);
    }

    #[test]
    fn scenario_defaults() {
        let latency = Plan::resolve(&args(&["latency", "--token", "t"])).unwrap();
        assert_eq!(latency.devices, 1_000);
        assert!(matches!(latency.pacing, Pacing::Open { rate, .. } if rate == 5_000.0));
        assert_eq!(latency.duration, Some(Duration::from_secs(10)));

        let throughput =
            Plan::resolve(&args(&["throughput", "--token", "t", "--batch", "100"])).unwrap();
        assert_eq!(throughput.devices, 100);
        assert_eq!(throughput.batch, 100);
        assert!(matches!(
            throughput.pacing,
            Pacing::Closed { concurrency: 16 }
        ));

        let backlog = Plan::resolve(&args(&["backlog", "--token", "t"])).unwrap();
        assert_eq!(backlog.count, Some(10_000));
        assert_eq!(backlog.duration, None);

        let burst = Plan::resolve(&args(&["burst", "--token", "t"])).unwrap();
        assert_eq!(burst.burst, 100);

        let counted = Plan::resolve(&args(&["throughput", "--token", "t", "--count", "50"]));
        assert_eq!(
            counted.unwrap().duration,
            None,
            "a count alone ends the run"
        );

        let plan = Plan::resolve(&args(&[
            "connections",
            "--token",
            "t",
            "--server",
            "http://127.0.0.1:9000/",
        ]))
        .unwrap();
        assert_eq!(plan.servers, ["http://127.0.0.1:9000"]);
        assert_eq!(plan.ws_urls(), ["ws://127.0.0.1:9000/api/v1/ws"]);
        assert!(plan.servers_are_loopback());
    }

    #[test]
    fn several_servers_are_kept_in_order_repeated_or_comma_separated() {
        let repeated = Plan::resolve(&args(&[
            "throughput",
            "--token",
            "t",
            "--server",
            "http://127.0.0.1:9001/",
            "--server",
            "http://localhost:9002",
        ]))
        .unwrap();
        assert_eq!(
            repeated.servers,
            ["http://127.0.0.1:9001", "http://localhost:9002"]
        );
        assert_eq!(
            repeated.ws_urls(),
            [
                "ws://127.0.0.1:9001/api/v1/ws",
                "ws://localhost:9002/api/v1/ws"
            ]
        );
        assert!(repeated.servers_are_loopback());
        // The form BEEP_SERVER takes too (the same delimiter applies to the environment).
        let listed = Plan::resolve(&args(&[
            "throughput",
            "--token",
            "t",
            "--server",
            "http://127.0.0.1:9001,https://relay.example.org:8443",
        ]))
        .unwrap();
        assert_eq!(
            listed.servers,
            ["http://127.0.0.1:9001", "https://relay.example.org:8443"]
        );
        assert_eq!(
            listed.ws_urls()[1],
            "wss://relay.example.org:8443/api/v1/ws"
        );
        assert!(
            !listed.servers_are_loopback(),
            "sources spread only when every relay is local"
        );
        let default = Plan::resolve(&args(&["throughput", "--token", "t"])).unwrap();
        assert_eq!(default.servers.len(), 1);
    }

    #[test]
    fn devices_and_publishers_are_spread_round_robin_one_apart() {
        // One relay: everything on it.
        assert!((0..10).all(|i| device_server(i, 1) == 0));
        assert!((0..10).all(|p| publisher_server(p, 1) == 0));
        // Three relays: device i on i mod 3, publisher j on (j + 1) mod 3.
        let devices: Vec<usize> = (0..7).map(|i| device_server(i, 3)).collect();
        assert_eq!(devices, [0, 1, 2, 0, 1, 2, 0]);
        let publishers: Vec<usize> = (0..7).map(|p| publisher_server(p, 3)).collect();
        assert_eq!(publishers, [1, 2, 0, 1, 2, 0, 1]);
        assert_eq!(
            (0..4).map(|p| publisher_server(p, 2)).collect::<Vec<_>>(),
            [1, 0, 1, 0]
        );
        // Six publishers on three relays: two each.
        for relay in 0..3 {
            assert_eq!(
                (0..6).filter(|p| publisher_server(*p, 3) == relay).count(),
                2
            );
        }
        // The notifications of a run: round-robin targets from one counter, publishers in turn.
        // With 3 relays two thirds are published on a relay other than their device's.
        let (devices, publishers, relays) = (100, 6, 3);
        let crossing = (0..6_000u64)
            .filter(|seq| {
                let device = target_index(*seq, devices, 1);
                device_server(device, relays) != publisher_server(seq % publishers, relays)
            })
            .count();
        assert!((3_900..=4_100).contains(&crossing), "{crossing}");
        // Degenerate counts never panic.
        assert_eq!(device_server(5, 0), 0);
        assert_eq!(publisher_server(u64::MAX, 0), 0);
    }

    #[test]
    fn bad_flags_are_usage_errors() {
        for line in [
            vec!["latency", "--token", ""],
            vec!["latency", "--token", "t", "--rate", "0"],
            vec!["connections", "--token", "t", "--connect-rate", "0"],
            vec!["connections", "--token", "t", "--connect-rate", "NaN"],
            vec!["throughput", "--token", "t", "--batch", "501"],
            vec!["throughput", "--token", "t", "--devices", "0"],
            vec!["throughput", "--token", "t", "--server", "ws://x"],
            vec![
                "throughput",
                "--token",
                "t",
                "--server",
                "http://a:1",
                "--server",
                "ws://b:2",
            ],
            vec![
                "throughput",
                "--token",
                "t",
                "--server",
                "http://a:1,http://a:1/",
            ],
            vec![
                "throughput",
                "--token",
                "t",
                "--server",
                "https://x",
                "--ca-fingerprint",
                "abc",
            ],
            vec!["latency", "--token", "t", "--restart-cmd", "true"],
        ] {
            let err = Plan::resolve(&args(&line)).unwrap_err();
            assert!(matches!(err, BenchError::Usage(_)), "{line:?}: {err}");
        }
    }

    #[test]
    fn an_https_relay_is_reached_over_wss_with_the_check_asked_for() {
        let pin = format!("sha256:{}", "ab".repeat(32));
        let plan = Plan::resolve(&args(&[
            "throughput",
            "--token",
            "t",
            "--server",
            "https://127.0.0.1:8443",
            "--ca-fingerprint",
            &pin,
        ]))
        .unwrap();
        assert_eq!(plan.ws_urls(), ["wss://127.0.0.1:8443/api/v1/ws"]);
        assert_eq!(plan.trust, crate::tls::client::Trust::Pinned(pin));
        let plain = Plan::resolve(&args(&["throughput", "--token", "t"])).unwrap();
        assert_eq!(plain.trust, crate::tls::client::Trust::System);
    }
}
