//! The memory monitor's settings (`[memory]`), the process's [`ProcSampler`] (RSS from
//! `/proc/self/statm`, jemalloc's `stats.allocated` and `stats.resident` after an `epoch`
//! advance) and [`start`], which starts the [`MemoryMonitor`] actor.

use std::sync::Arc;

use actix::{Actor, Addr, Recipient};

use beepmyphone_actors::clock::SharedClock;
use beepmyphone_actors::memory::{MemoryMonitor, MemoryTrend};
use beepmyphone_actors::metrics::Metrics;
use beepmyphone_actors::ports::{MemorySample, MemorySampler};

use crate::config::MemorySettings;

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
        assert_eq!(
            settings.config(),
            beepmyphone_actors::memory::MemoryConfig::default()
        );
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
