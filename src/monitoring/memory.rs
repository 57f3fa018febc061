//! The memory monitor's settings (`[memory]`), the process's [`ProcSampler`] (RSS from
//! `/proc/self/statm`, jemalloc's `stats.allocated` and `stats.resident` after an `epoch`
//! advance) and [`start`], which starts the [`MemoryMonitor`] actor.

use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr, Recipient};
use serde::{Deserialize, Serialize};

use beepmyphone_actors::clock::SharedClock;
use beepmyphone_actors::memory::{LeakRule, MemoryConfig, MemoryMonitor, MemoryTrend};
use beepmyphone_actors::metrics::Metrics;
use beepmyphone_actors::ports::{MemorySample, MemorySampler};

use crate::config::ConfigError;

/// `[memory]`: the memory monitor.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemorySettings {
    /// Sample and export the process's memory.
    pub enabled: bool,
    /// Seconds between samples.
    pub sample_interval_seconds: u64,
    /// Samples in the sliding window that judges growth.
    pub window_samples: usize,
    /// Least growth over the window, MiB.
    pub min_growth_mib: u64,
    /// Least growth over the window, percent of its first sample.
    pub min_growth_percent: f64,
    /// Least steps of the window that went up.
    pub min_rising_steps: usize,
    /// Largest share of the growth one step may carry, percent (a one-off step is not a leak).
    pub max_step_share_percent: f64,
}

impl Default for MemorySettings {
    fn default() -> Self {
        let rule = LeakRule::default();
        Self {
            enabled: true,
            sample_interval_seconds: 5,
            window_samples: rule.window_samples,
            min_growth_mib: rule.min_growth_bytes >> 20,
            min_growth_percent: rule.min_growth_percent,
            min_rising_steps: rule.min_rising_steps,
            max_step_share_percent: rule.max_step_share_percent,
        }
    }
}

impl MemorySettings {
    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError(format!("memory.{key}: {why}")));
        if self.sample_interval_seconds == 0 {
            return bad("sample_interval_seconds", "must be at least 1");
        }
        if !(3..=1_000).contains(&self.window_samples) {
            return bad("window_samples", "must be between 3 and 1000");
        }
        if self.min_rising_steps == 0 || self.min_rising_steps >= self.window_samples {
            return bad(
                "min_rising_steps",
                "must be at least 1 and below memory.window_samples",
            );
        }
        if !(self.min_growth_percent >= 0.0 && self.min_growth_percent.is_finite()) {
            return bad("min_growth_percent", "must be 0 or more");
        }
        if !(self.max_step_share_percent > 0.0 && self.max_step_share_percent <= 100.0) {
            return bad("max_step_share_percent", "must be above 0 and at most 100");
        }
        Ok(())
    }

    /// The actor's tunables.
    pub fn config(&self) -> MemoryConfig {
        MemoryConfig {
            interval: Duration::from_secs(self.sample_interval_seconds),
            rule: LeakRule {
                window_samples: self.window_samples,
                min_growth_bytes: self.min_growth_mib << 20,
                min_growth_percent: self.min_growth_percent,
                min_rising_steps: self.min_rising_steps,
                max_step_share_percent: self.max_step_share_percent,
            },
        }
    }
}

/// This process's memory: RSS from procfs, allocator figures from jemalloc.
///
/// The jemalloc figures describe the global allocator only in the `beepmyphone` binary (which
/// installs `tikv_jemallocator`); in tests, which use the system allocator, they are jemalloc's
/// own nearly empty arenas.
#[derive(Debug, Clone, Copy)]
pub struct ProcSampler {
    page_size: u64,
}

impl Default for ProcSampler {
    fn default() -> Self {
        // SAFETY: sysconf only reads a system constant.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        Self {
            page_size: u64::try_from(page).ok().filter(|p| *p > 0).unwrap_or(4_096),
        }
    }
}

impl ProcSampler {
    /// Resident pages from `/proc/self/statm` (its second field), in bytes. A procfs read is
    /// answered from kernel memory: it never waits on a disk.
    fn rss_bytes(&self) -> Result<u64, String> {
        let statm = std::fs::read_to_string("/proc/self/statm").map_err(|e| e.to_string())?;
        let pages: u64 = statm
            .split_whitespace()
            .nth(1)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| format!("unexpected /proc/self/statm: {statm:?}"))?;
        Ok(pages * self.page_size)
    }
}

impl MemorySampler for ProcSampler {
    fn sample(&self) -> Result<MemorySample, String> {
        let rss_bytes = self.rss_bytes()?;
        // jemalloc caches its statistics; advancing the epoch refreshes them.
        let (allocated_bytes, resident_bytes) = match tikv_jemalloc_ctl::epoch::advance() {
            Ok(_) => (
                tikv_jemalloc_ctl::stats::allocated::read()
                    .ok()
                    .and_then(|b| u64::try_from(b).ok()),
                tikv_jemalloc_ctl::stats::resident::read()
                    .ok()
                    .and_then(|b| u64::try_from(b).ok()),
            ),
            Err(_) => (None, None),
        };
        Ok(MemorySample {
            rss_bytes,
            allocated_bytes,
            resident_bytes,
        })
    }
}

/// Starts the memory monitor (when enabled) on the current arbiter, reporting to `alerts`.
pub fn start(
    settings: &MemorySettings,
    metrics: &Metrics,
    clock: &SharedClock,
    alerts: Option<Recipient<MemoryTrend>>,
    log: &slog::Logger,
) -> Option<Addr<MemoryMonitor>> {
    settings.enabled.then(|| {
        MemoryMonitor::new(
            settings.config(),
            Arc::new(ProcSampler::default()),
            clock.clone(),
            metrics,
            alerts,
            log.new(slog::o!("actor" => "memory")),
        )
        .start()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_proc_sampler_reads_this_process() {
        let sample = ProcSampler::default().sample().unwrap();
        // A test binary is resident for at least a megabyte and far less than a terabyte.
        assert!((1 << 20..1 << 40).contains(&sample.rss_bytes), "{sample:?}");
        assert!(sample.allocated_bytes.is_some() && sample.resident_bytes.is_some());
    }

    #[test]
    fn defaults_are_the_actor_defaults_and_validate() {
        let settings = MemorySettings::default();
        settings.validate().unwrap();
        assert_eq!(settings.config(), MemoryConfig::default());
        let bad = MemorySettings {
            min_rising_steps: 6,
            ..MemorySettings::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("memory.min_rising_steps"));
    }
}
