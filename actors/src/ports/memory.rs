//! The process's memory figures as a port: [`MemorySampler`] answers with a [`MemorySample`]. The
//! [`crate::memory::MemoryMonitor`] calls it on its clock; the binary implements it (RSS from
//! `/proc/self/statm`, jemalloc statistics), tests inject a scripted one.

/// One reading of the process's memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemorySample {
    /// Resident set size, bytes.
    pub rss_bytes: u64,
    /// Bytes the allocator handed out and the program has not freed (`stats.allocated`), when
    /// the allocator reports it.
    pub allocated_bytes: Option<u64>,
    /// Bytes in physically resident pages the allocator maps (`stats.resident`), when it reports it.
    pub resident_bytes: Option<u64>,
}

/// Reads the process's memory figures; cheap (a procfs read and a few allocator counters), so the
/// monitor calls it inline.
pub trait MemorySampler: Send + Sync + 'static {
    /// A reading now, or why none could be made.
    fn sample(&self) -> Result<MemorySample, String>;
}
