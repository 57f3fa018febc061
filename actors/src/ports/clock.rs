//! Time as a port: [`Clock`] gives "now" and periodic ticks to every time-dependent behaviour.
//!
//! The implementations ([`crate::clock::SystemClock`], [`crate::clock::ManualClock`]) live in
//! [`crate::clock`].

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;

/// A stream of ticks, one per elapsed period.
pub type Ticks = Pin<Box<dyn Stream<Item = ()> + Send>>;

/// The source of "now" and of periodic ticks for every time-dependent behaviour.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
    /// A stream that yields once per `period` of this clock's time.
    fn interval(&self, period: Duration) -> Ticks {
        self.interval_from(period, period)
    }
    /// A stream that yields `first` from now, then once per `period`.
    fn interval_from(&self, first: Duration, period: Duration) -> Ticks;
}

/// A shared clock handle.
pub type SharedClock = Arc<dyn Clock>;
