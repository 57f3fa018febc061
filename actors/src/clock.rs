//! The two implementations of the [`Clock`] port (declared in [`crate::ports`] and re-exported
//! here), so that heartbeats, ack timeouts and expiry can be tested without sleeping.
//!
//! [`SystemClock`] reads the wall clock and ticks on tokio timers; [`ManualClock`] only moves when a
//! test calls [`ManualClock::advance`], and its interval streams tick when it does.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

pub use crate::ports::{Clock, SharedClock, Ticks};

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        chrono::Utc::now().timestamp_millis()
    }

    fn interval_from(&self, first: Duration, period: Duration) -> Ticks {
        let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + first, period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Box::pin(futures_util::stream::unfold(
            interval,
            |mut interval| async move {
                interval.tick().await;
                Some(((), interval))
            },
        ))
    }
}

/// A clock that moves only when told to; its interval streams tick as it crosses their periods.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<AtomicI64>,
    changed: watch::Sender<i64>,
}

impl ManualClock {
    /// A manual clock starting at `start_ms`.
    pub fn new(start_ms: i64) -> Self {
        let (changed, _) = watch::channel(start_ms);
        Self {
            now: Arc::new(AtomicI64::new(start_ms)),
            changed,
        }
    }

    /// A manual clock starting at the current wall-clock time.
    pub fn starting_now() -> Self {
        Self::new(SystemClock.now_ms())
    }

    /// Moves the clock forward and wakes every interval whose period has elapsed.
    pub fn advance(&self, by: Duration) {
        let by_ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        let now = self.now.fetch_add(by_ms, Ordering::SeqCst) + by_ms;
        self.changed.send_replace(now);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.now.load(Ordering::SeqCst)
    }

    fn interval_from(&self, first: Duration, period: Duration) -> Ticks {
        let period_ms = i64::try_from(period.as_millis()).unwrap_or(i64::MAX).max(1);
        let first_ms = i64::try_from(first.as_millis()).unwrap_or(i64::MAX);
        let rx = self.changed.subscribe();
        let next = self.now_ms().saturating_add(first_ms);
        Box::pin(futures_util::stream::unfold(
            (rx, next),
            move |(mut rx, mut next)| async move {
                loop {
                    let now = *rx.borrow_and_update();
                    if now >= next {
                        // One tick per call; several elapsed periods collapse into one, as with
                        // MissedTickBehavior::Delay on the real clock.
                        next = now + period_ms;
                        return Some(((), (rx, next)));
                    }
                    if rx.changed().await.is_err() {
                        return None;
                    }
                }
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{FutureExt, StreamExt};

    #[actix_rt::test]
    async fn manual_clock_ticks_only_when_advanced_past_the_period() {
        let clock = ManualClock::new(1_000);
        let mut ticks = clock.interval(Duration::from_secs(30));
        clock.advance(Duration::from_secs(10));
        // The stream reads the clock when polled: one poll is conclusive, no waiting needed.
        assert!(
            ticks.next().now_or_never().is_none(),
            "ticked before the period elapsed"
        );
        clock.advance(Duration::from_secs(25));
        assert_eq!(ticks.next().await, Some(()));
        assert_eq!(clock.now_ms(), 36_000);
    }

    #[actix_rt::test]
    async fn a_manual_interval_from_ticks_first_after_its_offset_then_each_period() {
        let clock = ManualClock::new(0);
        let mut ticks = clock.interval_from(Duration::from_secs(5), Duration::from_secs(30));
        clock.advance(Duration::from_secs(4));
        assert!(ticks.next().now_or_never().is_none(), "before the offset");
        clock.advance(Duration::from_secs(1));
        assert_eq!(ticks.next().await, Some(()));
        clock.advance(Duration::from_secs(29));
        assert!(
            ticks.next().now_or_never().is_none(),
            "before a period since"
        );
        clock.advance(Duration::from_secs(1));
        assert_eq!(ticks.next().await, Some(()));
    }
}
